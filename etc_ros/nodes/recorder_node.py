"""Recorder node: teleoperated episodes -> the project's dataset (etc_ros.teleop.recorder.RecordingSession: the work).

Subscribes /camera/<cam>/image_raw for each recorded camera, /joint_states, /policy/action_chunk (the gripper
command the operator sent), /recorder/instruction (std_msgs/String: relabel). A timer at 4 x `fps` takes the
newest image of the first camera once it is ~1/fps newer than the last frame, the other cameras' images and the
joint state nearest to its stamp (within max_sync_error), and hands the sample to the recording session.
Services (std_srvs/Trigger): ~/start, ~/stop (success), ~/stop_failed, ~/discard, ~/capture (saves the current
image + joint state as a calibration view into `capture_dir`). Parameter `instruction` (rcl SetParameters,
`ros2 param set`) relabels like the topic. /recorder/status (std_msgs/String JSON, transient local) after every
state change; /diagnostics at 1 Hz. Parameters: the `recorder` section of config/teleop.yaml (file given by
`config`, '' = the package's) provides the defaults; every key can be overridden as a ROS parameter.
Optional raw MCAP log (recorder.mcap) of the images, joint states, chunks and joint commands per episode.

    python -m etc_ros.nodes.recorder_node --ros-args -p root:=/data/teleop -p instruction:="open the drawer"
"""
from __future__ import annotations

import dataclasses
import functools
import json
import threading
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from etc_ros.core.camera import CameraModel
from etc_ros.nodes import messages
from etc_ros.nodes.common import LATCHED, RELIABLE, SENSOR, GraphNode, run_nodes
from etc_ros.nodes.graph import TOPICS, image_topic
from etc_ros.teleop.recorder import RecorderConfig, RecorderError, RecordingSession, check_recorder_config
from etc_ros.teleop.stamped_buffer import StampedBuffer

RECORDER_TOPICS = {
    "instruction": "/recorder/instruction",  # std_msgs/String -> recorder (relabel)
    "status": "/recorder/status",  # std_msgs/String JSON (transient local), recorder -> operator tools
}
RECORDER_SERVICES = ("start", "stop", "stop_failed", "discard", "capture")  # std_srvs/Trigger, ~/<name>
RECORDER_NODE_PARAMS: dict[str, Any] = {  # declared first; then one parameter per RecorderConfig field
    "config": "",  # teleop.yaml ('' = the package's config/teleop.yaml); its `recorder` section gives the defaults
    "diagnostics_hz": 1.0,
}


def _param_value(v: Any) -> Any:
    if isinstance(v, dict):
        return json.dumps(v)
    if isinstance(v, tuple):
        return list(v)
    return v


class RecorderNode(GraphNode):
    own_params = RECORDER_NODE_PARAMS

    def __init__(self, params: dict[str, Any] | None = None, name: str = "recorder_node",
                 camera_models: dict[str, CameraModel] | None = None, metadata: dict | None = None,
                 config: RecorderConfig | None = None, **kwargs: Any):
        super().__init__(name, params, **kwargs)
        base = config
        if base is None:
            from etc_ros.teleop.config import load_teleop_file

            _, base, _ = load_teleop_file(self.p("config") or None)
        from rcl_interfaces.msg import ParameterDescriptor

        for f in dataclasses.fields(RecorderConfig):  # dynamic typing: `-p min_free_mb:=1` is fine for a float
            self.declare_parameter(f.name, _param_value(getattr(base, f.name)),
                                   ParameterDescriptor(dynamic_typing=True))
        cfg = self._config_from_params()
        self.session = RecordingSession(cfg, camera_models=camera_models, metadata=metadata)
        self.cfg = cfg
        self._lock = threading.RLock()
        self._images: dict[str, StampedBuffer] = {c: StampedBuffer(30) for c in cfg.cameras}
        self._joints = StampedBuffer(400)
        self._gripper_cmd: float | None = None
        self._last_stamp: float | None = None
        self.skips = {"no_image": 0, "stale": 0, "unsynced": 0, "no_joints": 0}
        self.samples = 0
        self.captures = 0

        group = MutuallyExclusiveCallbackGroup()
        for cam in cfg.cameras:
            self.create_subscription(Image, image_topic(cam), lambda m, c=cam: self._on_image(c, m), SENSOR,
                                     callback_group=group)
        self.create_subscription(JointState, TOPICS["joint_states"], self._on_joints, SENSOR, callback_group=group)
        self.create_subscription(JointTrajectory, TOPICS["action_chunk"], self._on_chunk, RELIABLE,
                                 callback_group=group)
        if cfg.mcap:  # raw (serialized) subscriptions: the log gets the bytes exactly as they were sent
            raw = [(image_topic(c), Image, "sensor_msgs/msg/Image", SENSOR) for c in cfg.cameras]
            raw += [(TOPICS["joint_states"], JointState, "sensor_msgs/msg/JointState", SENSOR),
                    (TOPICS["action_chunk"], JointTrajectory, "trajectory_msgs/msg/JointTrajectory", RELIABLE),
                    (TOPICS["joint_command"], JointTrajectory, "trajectory_msgs/msg/JointTrajectory", RELIABLE)]
            for topic, typ, name, qos in raw:
                self.create_subscription(typ, topic, lambda b, t=topic, n=name: self._log_raw(t, n, b), qos,
                                         callback_group=group, raw=True)
        self.create_subscription(String, RECORDER_TOPICS["instruction"], self._on_instruction, RELIABLE,
                                 callback_group=group)
        self.pub_status = self.create_publisher(String, RECORDER_TOPICS["status"], LATCHED)
        for srv in RECORDER_SERVICES:
            self.create_service(Trigger, f"~/{srv}", functools.partial(self._srv, srv), callback_group=group)
        self.add_on_set_parameters_callback(self._on_params)
        # sample at 4x the dataset rate; a frame is taken once the newest image is ~1/fps after the last one
        self._min_gap = 1.0 / cfg.fps - min(0.25 / cfg.fps, 0.05)
        self.timer = self.create_timer(0.25 / cfg.fps, self._tick, callback_group=group)
        dhz = float(self.p("diagnostics_hz"))
        if dhz > 0:
            self.create_timer(1.0 / dhz, self._diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_status()
        missing = [c for c in cfg.cameras if c not in self.session.camera_models]
        if missing:
            self.get_logger().warning(f"no camera calibration for {missing}: episodes are recorded without "
                                      "(trajectory / affordance ETC needs it: etc-vla calibrate extrinsics)"
                                      + "".join(f"; {p}" for p in self.session.calibration_problems))

    def _config_from_params(self) -> RecorderConfig:
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(RecorderConfig):
            v = self.p(f.name)
            if f.name == "task":
                try:
                    v = json.loads(v) if isinstance(v, str) and v.strip() else {}
                except ValueError as e:
                    raise RecorderError(f"parameter task must be a JSON object like "
                                        f"'{{\"family\": \"pick_place\"}}', got {v!r}: {e}") from None
            elif f.name == "cameras":
                v = [str(x) for x in v]
            kw[f.name] = v
        from etc_ros.core.config import from_dict

        return check_recorder_config(from_dict(RecorderConfig, kw))

    def _log(self, ok: bool, msg: str) -> None:
        if ok:
            self.get_logger().info(msg)
        else:
            self.get_logger().warning(msg)

    # ---- inputs
    def _log_raw(self, topic: str, type_name: str, data: bytes) -> None:
        """Raw subscription callback (exact CDR bytes as received): into the episode's MCAP log, if any."""
        log = self.session.mcap
        if log is None:
            return
        with self._lock:
            log = self.session.mcap
            if log is not None:
                log.write(topic, type_name, data, self.get_clock().now().nanoseconds)

    def _on_image(self, cam: str, msg: Image) -> None:
        stamp = messages.from_time(msg.header.stamp)
        with self._lock:
            self._images[cam].add(stamp, msg)

    def _on_joints(self, msg: JointState) -> None:
        parsed = messages.parse_joint_state(msg)
        if parsed is None:
            return
        q, g, stamp = parsed
        with self._lock:
            self._joints.add(stamp, (q, g))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        try:
            actions, stamp, _ = messages.msg_to_chunk(msg)
        except messages.MessageError:
            return
        with self._lock:
            self._gripper_cmd = float(actions[0, 6])

    def _on_instruction(self, msg: String) -> None:
        ok, text = self.relabel(msg.data)
        if not ok:
            self.get_logger().warning(text)

    def _on_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "instruction":
                ok, reason = self.relabel(prm.value if prm.value is not None else "", publish=True)
                if not ok:
                    return SetParametersResult(successful=False, reason=reason)
            elif prm.name not in ("diagnostics_hz", "capture_dir"):
                return SetParametersResult(successful=False, reason=f"{prm.name} is read at start-up only: "
                                                                   "restart the recorder to change it")
        return SetParametersResult(successful=True, reason="accepted")

    # ---- operations (also called directly by the in-process CLI)
    def relabel(self, text: Any, publish: bool = True) -> tuple[bool, str]:
        with self._lock:
            ok, msg = self.session.relabel(text)
        self._log(ok, msg)
        if publish:
            self._publish_status()
        return ok, msg

    def command(self, name: str) -> tuple[bool, str]:
        """start | stop | stop_failed | discard | capture -> (ok, message)."""
        with self._lock:
            if name == "start":
                self._last_stamp = None
                ok, msg = self.session.start()
            elif name == "stop":
                ok, msg = self.session.stop(success=True)
            elif name == "stop_failed":
                ok, msg = self.session.stop(success=False)
            elif name == "discard":
                ok, msg = self.session.discard()
            elif name == "capture":
                ok, msg = self._capture()
            else:
                ok, msg = False, f"unknown recorder command {name!r}"
        self._log(ok, msg)
        self._publish_status()
        return ok, msg

    def _srv(self, name: str, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        """Callback of the ~/<name> Trigger service."""
        try:
            res.success, res.message = self.command(name)
        except Exception as e:  # noqa: BLE001 - a failing operation must not kill the node
            res.success, res.message = False, f"{name} failed: {e}"
            self.get_logger().error(res.message)
        return res

    def _capture(self) -> tuple[bool, str]:
        from etc_ros.camera.calibration_files import save_views

        cam = self.cfg.cameras[0]
        images = self._images[cam].items()
        if not images:
            return False, f"capture: no image from camera {cam!r} yet"
        best = None  # newest image with a joint state close enough to its stamp
        for stamp, msg in reversed(images):
            js = self._joints.nearest(stamp)
            if js is not None:
                dt = abs(js[0] - stamp)
                if dt <= self.cfg.max_sync_error:
                    best = (stamp, msg, js)
                    break
        if best is None:
            return False, (f"capture: no joint state within max_sync_error ({self.cfg.max_sync_error} s) of the "
                           f"last {len(images)} images")
        stamp, msg, js = best
        d = Path(str(self.p("capture_dir")))
        start = len(list(d.glob("view_*.png"))) if d.is_dir() else 0
        img = messages.msg_to_image(msg)
        save_views(d, [img], [js[1][0]], [js[1][1]], start=start)
        self.captures += 1
        return True, f"calibration view {start} saved in {d} ({img.shape[1]}x{img.shape[0]})"

    # ---- sampling
    def _tick(self) -> None:
        with self._lock:
            if not self.session.recording:
                return
            self._sample()
            if not self.session.recording:  # stopped by itself (max_frames, low disk, bad calibration)
                self.get_logger().warning(self.session.last_message)
                self._publish_status()

    def _sample(self) -> None:
        cams = self.cfg.cameras
        now = self.now_s()
        latest = self._images[cams[0]].latest()
        if latest is None:
            self.skips["no_image"] += 1
            return
        stamp, msg0 = latest
        if self._last_stamp is not None and stamp - self._last_stamp < self._min_gap:
            return  # not yet time for the next frame
        if now - stamp > self.cfg.max_frame_age:
            self.skips["stale"] += 1
            return
        msgs = {cams[0]: msg0}
        for c in cams[1:]:
            near = self._images[c].nearest(stamp)
            if near is None or abs(near[0] - stamp) > self.cfg.max_sync_error:
                self.skips["unsynced"] += 1
                return
            msgs[c] = near[1]
        js = self._joints.nearest(stamp)
        if js is None:
            self.skips["no_joints"] += 1
            return
        if abs(js[0] - stamp) > self.cfg.max_sync_error:
            self.skips["unsynced"] += 1
            return
        q, g = js[1]
        try:
            images = {c: messages.msg_to_image(m) for c, m in msgs.items()}
        except messages.MessageError as e:
            self.get_logger().warning(f"image not recorded: {e}", throttle_duration_sec=2.0)
            return
        if self.session.add_sample(images, q, g, int(round(stamp * 1e9)), self._gripper_cmd):
            self.samples += 1
            self._last_stamp = stamp

    # ---- status
    def status(self) -> dict:
        with self._lock:
            s = self.session.status()
        s["skips"] = dict(self.skips)
        s["captures"] = self.captures
        return s

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def _diagnostics(self) -> None:
        s = self.status()
        level = "ok" if s["state"] == "recording" or s["instruction"] else "warn"
        msg = f"{s['state']}: {s['frames']} frames" if s["state"] == "recording" else \
            (f"idle, next: {s['instruction']!r}" if s["instruction"] else "idle, no instruction set")
        self.publish_diagnostics(level, msg,
                                 {k: v for k, v in s.items() if not isinstance(v, dict)} | {"skips": s["skips"]})

    def destroy_node(self) -> None:
        with self._lock:
            msg = self.session.close(keep=True)
        if msg:
            self.get_logger().info(msg)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [RecorderNode()], args, threads=2)


if __name__ == "__main__":
    main()
