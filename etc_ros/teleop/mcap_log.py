"""Raw log of the recorder's topics: serialized ROS 2 messages (CDR) in one MCAP file per episode, next to the
dataset (recorder.mcap). Needs the `mcap` package (schemas from `rosbags` when it is installed). No ROS.

    log = McapLog("runs/teleop/episodes_raw/episode_000003_20250101-120000.mcap")
    log.write("/joint_states", "sensor_msgs/msg/JointState", cdr_bytes, log_time_ns)
    log.close()                                  # or log.abort(): nothing is left behind

Written to a hidden temp file and renamed into place (after fsync) by `close()`, so a crash never leaves a torn
log under the final name.
"""
from __future__ import annotations

import os
from pathlib import Path

from etc_ros.core.errors import RecorderError


class McapLog:
    """Raw log of serialized ROS 2 messages (CDR) in an MCAP file, profile ros2, schemas as ros2msg text.
    Written to a hidden temp file and renamed into place (after fsync) by `close()`; `abort()` deletes it."""

    def __init__(self, path: str | Path, compression: str = "zstd"):
        try:
            from mcap.writer import CompressionType, Writer
        except ImportError:
            raise RecorderError("the raw MCAP log needs the `mcap` package (pip install mcap): not installed "
                                "(or set recorder.mcap: false)") from None
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name("." + self.path.name + f".{os.getpid()}.tmp")
        comp = CompressionType.NONE
        if compression == "zstd":
            try:
                import zstandard  # noqa: F401

                comp = CompressionType.ZSTD
            except ImportError:
                comp = CompressionType.NONE
        self._f = open(self._tmp, "wb")
        self._w = Writer(self._f, compression=comp)
        self._w.start(profile="ros2", library="etc_ros recorder")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.messages = 0
        self._closed = False

    @staticmethod
    def msgdef(type_name: str) -> bytes:
        """ros2msg schema text ('pkg/msg/Type'), from rosbags' type store when available (else empty)."""
        try:
            from rosbags.typesys import Stores, get_typestore

            text, _ = get_typestore(Stores.ROS2_HUMBLE).generate_msgdef(type_name, ros_version=2)
            return text.encode()
        except Exception:  # noqa: BLE001 - rosbags missing or type unknown: readers then need the type
            return b""

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None
              ) -> None:
        if self._closed:
            return
        if topic not in self._channels:
            if type_name not in self._schemas:
                self._schemas[type_name] = self._w.register_schema(type_name, "ros2msg", self.msgdef(type_name))
            self._channels[topic] = self._w.register_channel(topic, "cdr", self._schemas[type_name])
        self._w.add_message(self._channels[topic], int(log_time_ns), bytes(data),
                            int(publish_time_ns if publish_time_ns is not None else log_time_ns))
        self.messages += 1

    def close(self) -> Path:
        if not self._closed:
            self._closed = True
            self._w.finish()
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.path)
            from etc_ros.core.io import fsync_dir

            fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._f.close()
            finally:
                self._tmp.unlink(missing_ok=True)
