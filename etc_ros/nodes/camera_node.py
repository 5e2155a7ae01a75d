"""Camera node: a CameraSource (etc_ros.camera.sources) behind sensor_msgs/Image + CameraInfo.

A capture thread polls a ReconnectingCamera (open on first use, reconnect with exponential backoff when the
device disappears) and publishes /camera/<name>/image_raw (rgb8), /camera/<name>/camera_info and, for a
RealSense with depth:=true, /camera/<name>/aligned_depth_to_color/image_raw (16UC1, mm). Image and info share
the stamp: the capture time when the source knows it on the host clock (RealSense in the system_time or
global_time timestamp domain), else the time the frame was received, mapped onto the node's clock
(camera/sources.frame_stamp: never in the future). /diagnostics at 1 Hz (state, frames, reconnects, last error,
stamp source and timestamp domain).
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, Image

from etc_ros.camera.calibration_files import load_intrinsics
from etc_ros.camera.sources import CameraSource, Frame, ReconnectingCamera, frame_stamp, make_source
from etc_ros.core.camera import CameraIntrinsics
from etc_ros.nodes import messages
from etc_ros.nodes.common import SENSOR, GraphNode, run_nodes
from etc_ros.nodes.graph import camera_info_topic, depth_topic, image_topic


class CameraNode(GraphNode):
    param_set = "camera_node"

    def __init__(self, params: dict[str, Any] | None = None, source: CameraSource | None = None,
                 name: str = "camera_node", env: Any = None, lock: Any = None, autostart: bool = True,
                 **kwargs: Any):
        super().__init__(name, params, **kwargs)
        self.camera_name = str(self.p("camera_name"))
        if source is None:
            source = make_source(self.p("camera_type"), self.camera_name, env=env, lock=lock,
                                 width=self.p("width"), height=self.p("height"), fps=self.p("fps"),
                                 depth=self.p("depth"), serial=self.p("serial"), device=self.p("device"))
        self.source = source
        self.cam = ReconnectingCamera(source, float(self.p("backoff_initial")), float(self.p("backoff_max")))
        self.frame_id = str(self.p("frame_id"))
        self.period = 1.0 / float(source.fps)
        self._calib: CameraIntrinsics | None = None
        if self.p("calibration"):
            self._calib = load_intrinsics(str(self.p("calibration")))
        self.pub_img = self.create_publisher(Image, image_topic(self.camera_name), SENSOR)
        self.pub_info = self.create_publisher(CameraInfo, camera_info_topic(self.camera_name), SENSOR)
        self.pub_depth = self.create_publisher(Image, depth_topic(self.camera_name), SENSOR) \
            if getattr(source, "depth", False) is True else None
        self.published = 0
        self.last_stamp: float | None = None
        self.paused = False  # tests / benchmarks: simulate a camera that stops delivering
        self.stamp_sources: dict[str, int] = {}  # capture | receive | now -> frames
        self.stamp_fallbacks = 0  # frames with a device timestamp that could not be used (note in last_stamp_note)
        self.last_stamp_note = ""
        self.time_domain = ""
        self.capture_age: float | None = None  # s between capture and publish of the last frame (capture stamps)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_logged = ""
        dhz = float(self.p("diagnostics_hz"))
        if dhz > 0:
            self.create_timer(1.0 / dhz, self._diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        if autostart:
            self.start()

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics:
        intr = self._calib or self.source.intrinsics()
        if (intr.width, intr.height) != (width, height):
            intr = intr.resized(width, height)
        return intr

    # ---- capture thread
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"camera-{self.camera_name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if not hasattr(self, "_stop"):
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.cam.close()

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self.paused:
                self._stop.wait(self.period)
                continue
            frame = self.cam.poll()
            if frame is None:
                self._log_state()
                self._stop.wait(max(0.005, min(self.cam.seconds_until_retry(), 0.5)))
                continue
            self._log_state()
            self.publish_frame(frame.image, frame.depth, stamp=self.frame_stamp(frame))
            next_t += self.period
            wait = next_t - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            else:
                next_t = time.monotonic()

    def frame_stamp(self, frame: Frame) -> float:
        """The frame's stamp on this node's clock (capture time > receive time > now), counted by source."""
        node_now, wall_now = self.now_s(), time.time()
        stamp, source, note = frame_stamp(frame, node_now, wall_now)
        self.stamp_sources[source] = self.stamp_sources.get(source, 0) + 1
        self.capture_age = node_now - stamp if source == "capture" else None
        if frame.time_domain != self.time_domain:
            self.time_domain = frame.time_domain
            if note:
                self.get_logger().warning(f"camera {self.camera_name}: {note}: stamping frames with their "
                                          f"{source} time")
        if note:
            self.stamp_fallbacks += 1
            self.last_stamp_note = note
        return stamp

    def publish_frame(self, image: np.ndarray, depth: np.ndarray | None = None, stamp: float | None = None) -> float:
        stamp = self.now_s() if stamp is None else stamp
        h, w = image.shape[:2]
        self.pub_img.publish(messages.image_to_msg(image, stamp, self.frame_id, "rgb8"))
        self.pub_info.publish(messages.camera_info_msg(self.intrinsics(w, h), stamp, self.frame_id))
        if depth is not None and self.pub_depth is not None:
            mm = np.clip(np.nan_to_num(depth * 1000.0), 0, 65535).astype(np.uint16)
            self.pub_depth.publish(messages.image_to_msg(mm, stamp, self.frame_id, "16UC1"))
        self.published += 1
        self.last_stamp = stamp
        return stamp

    def _log_state(self) -> None:
        st = self.cam.state
        if st != self._state_logged:
            if st == "connected":
                self.get_logger().info(f"camera {self.camera_name} ({self.source.kind}) connected")
            else:
                self.get_logger().warning(f"camera {self.camera_name} {st}: {self.cam.last_error}")
            self._state_logged = st

    def _diagnostics(self) -> None:
        d = self.cam.diagnostics()
        d["published"] = self.published
        d["stamp_sources"] = dict(self.stamp_sources)
        d["timestamp_domain"] = self.time_domain or "none"
        d["stamp_fallbacks"] = self.stamp_fallbacks
        d["last_stamp_note"] = self.last_stamp_note
        if self.capture_age is not None:
            d["capture_age_ms"] = round(1000.0 * self.capture_age, 2)
        level = "ok" if d["state"] == "connected" else "error"
        msg = f"{d['state']}" + (f": {d['last_error']}" if level != "ok" else "")
        if level == "ok" and self.stamp_fallbacks:
            level = "warn"  # frames go out with their receive time: say why
            msg += f"; {self.stamp_fallbacks} frame(s) stamped at receive time: {self.last_stamp_note}"
        self.publish_diagnostics(level, msg, d, name=f"etc_ros/camera/{self.camera_name}")

    def destroy_node(self) -> None:
        if hasattr(self, "cam"):  # absent when the constructor failed
            self.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [CameraNode()], args)


if __name__ == "__main__":
    main()
