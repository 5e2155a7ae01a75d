"""Conversions between numpy and the standard ROS 2 messages used by the graph (layouts: docs/ros.md)."""
from __future__ import annotations

import array
import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.errors import UserError
from etc_ros.nodes.graph import COMMAND_JOINT_NAMES, JOINT_STATE_NAMES


class MessageError(UserError):
    """A message does not have the expected layout (names, sizes, encoding)."""


# ---------------------------------------------------------------------------------------------------- time
def to_time(sec: float) -> Time:
    ns = int(round(float(sec) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def from_time(t: Any) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def to_duration(sec: float) -> Duration:
    ns = int(round(float(sec) * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def from_duration(d: Any) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


# ---------------------------------------------------------------------------------------------------- images
_ENC = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1),
        "mono16": (np.uint16, 1), "32FC1": (np.float32, 1)}


def image_to_msg(img: np.ndarray, stamp: float, frame_id: str, encoding: str = "rgb8") -> Image:
    a = np.ascontiguousarray(img)
    if encoding not in _ENC:
        raise MessageError(f"unsupported image encoding {encoding!r}")
    dtype, ch = _ENC[encoding]
    if a.dtype != dtype or (a.ndim == 3 and a.shape[2] != ch) or (ch == 1 and a.ndim != 2) or \
            (ch == 3 and a.ndim != 3):
        raise MessageError(f"image {a.shape} {a.dtype} does not match encoding {encoding}")
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * ch * a.dtype.itemsize)
    msg.data = array.array("B", a.tobytes())
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """-> RGB uint8 (H, W, 3) for color encodings, (H, W) arrays for mono/depth."""
    if msg.encoding not in _ENC:
        raise MessageError(f"unsupported image encoding {msg.encoding!r}")
    dtype, ch = _ENC[msg.encoding]
    item = np.dtype(dtype).itemsize
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    row = msg.width * ch * item
    if msg.step < row or buf.size < msg.step * msg.height:
        raise MessageError(f"image data too short for {msg.width}x{msg.height} {msg.encoding}")
    rows = buf[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row]
    a = np.ascontiguousarray(rows).view(dtype)
    if msg.is_bigendian and item > 1:
        a = a.byteswap()
    a = a.reshape(msg.height, msg.width, ch) if ch > 1 else a.reshape(msg.height, msg.width)
    if msg.encoding == "bgr8":
        a = np.ascontiguousarray(a[:, :, ::-1])
    return a


def camera_info_msg(intr: CameraIntrinsics, stamp: float, frame_id: str) -> CameraInfo:
    m = CameraInfo()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.width, m.height = int(intr.width), int(intr.height)
    d = list(intr.distortion)
    m.distortion_model = "plumb_bob"
    m.d = [float(x) for x in (d + [0.0] * 5)[:5]] if d else [0.0] * 5
    m.k = [float(intr.fx), 0.0, float(intr.cx), 0.0, float(intr.fy), float(intr.cy), 0.0, 0.0, 1.0]
    m.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    m.p = [float(intr.fx), 0.0, float(intr.cx), 0.0, 0.0, float(intr.fy), float(intr.cy), 0.0, 0.0, 0.0, 1.0, 0.0]
    return m


# ---------------------------------------------------------------------------------------------------- joints
def joint_state_msg(q: np.ndarray, gripper: float, stamp: float, velocity: np.ndarray | None = None) -> JointState:
    """6 arm joints + left_finger / right_finger [m] (right mirrors left), Interbotix names."""
    f = float(robot_spec.finger_from_gripper(gripper))
    m = JointState()
    m.header.stamp = to_time(stamp)
    m.name = list(JOINT_STATE_NAMES)
    m.position = [float(x) for x in np.asarray(q, dtype=float).reshape(6)] + [f, -f]
    if velocity is not None:
        m.velocity = [float(x) for x in np.asarray(velocity, dtype=float).reshape(6)] + [0.0, 0.0]
    return m


def parse_joint_state(msg: JointState) -> tuple[np.ndarray, float, float] | None:
    """-> (q (6,), gripper opening in [0, 1], stamp), or None when the arm joints are not all present.
    Extra joints (e.g. Interbotix's 'gripper' servo horn) are ignored."""
    idx = {n: i for i, n in enumerate(msg.name)}
    if any(n not in idx for n in robot_spec.JOINT_NAMES) or len(msg.position) < len(msg.name):
        return None
    q = np.array([msg.position[idx[n]] for n in robot_spec.JOINT_NAMES], dtype=float)
    g = (float(robot_spec.gripper_from_finger(msg.position[idx[robot_spec.GRIPPER_JOINT]]))
         if robot_spec.GRIPPER_JOINT in idx else 1.0)
    return q, g, from_time(msg.header.stamp)


# ---------------------------------------------------------------------------------------------------- chunks
def chunk_to_msg(actions: np.ndarray, obs_stamp: float, policy_hz: float) -> JointTrajectory:
    """(H, 7) chunk -> JointTrajectory: header.stamp = observation stamp, joint_names = ACTION_NAMES,
    point i: positions = actions[i], time_from_start = i / policy_hz."""
    a = np.asarray(actions, dtype=float)
    if a.ndim != 2 or a.shape[1] != robot_spec.ACTION_DIM:
        raise MessageError(f"action chunk must be (H, {robot_spec.ACTION_DIM}), got {a.shape}")
    if not (policy_hz > 0 and math.isfinite(policy_hz)):
        raise MessageError(f"policy_hz must be > 0, got {policy_hz}")
    m = JointTrajectory()
    m.header.stamp = to_time(obs_stamp)
    m.header.frame_id = robot_spec.BASE_FRAME
    m.joint_names = list(robot_spec.ACTION_NAMES)
    for i, row in enumerate(a):
        p = JointTrajectoryPoint()
        p.positions = [float(x) for x in row]
        p.time_from_start = to_duration(i / policy_hz)
        m.points.append(p)
    return m


def msg_to_chunk(msg: JointTrajectory) -> tuple[np.ndarray, float, float | None]:
    """-> (actions (H, 7) in ACTION_NAMES order, observation stamp, policy_hz from time_from_start or None)."""
    names = list(msg.joint_names)
    if sorted(names) != sorted(robot_spec.ACTION_NAMES):
        raise MessageError(f"action chunk joint_names {names} must be {list(robot_spec.ACTION_NAMES)}")
    if not msg.points:
        raise MessageError("action chunk has no points")
    order = [names.index(n) for n in robot_spec.ACTION_NAMES]
    rows = []
    for i, p in enumerate(msg.points):
        if len(p.positions) != len(names):
            raise MessageError(f"action chunk point {i} has {len(p.positions)} values, expected {len(names)}")
        rows.append([p.positions[j] for j in order])
    hz = None
    if len(msg.points) >= 2:
        dt = from_duration(msg.points[1].time_from_start) - from_duration(msg.points[0].time_from_start)
        hz = 1.0 / dt if dt > 0 else None
    return np.asarray(rows, dtype=float), from_time(msg.header.stamp), hz


def string_bytes_from_cdr(raw: bytes) -> bytes:
    """The `data` bytes of a serialized std_msgs/String exactly as they went over the wire (a raw subscription):
    rclpy's own deserialization replaces invalid UTF-8 by U+FFFD and stops at the first NUL, so neither can be
    detected after it. Layout: 4-byte encapsulation header (representation id: odd = little endian; plain CDR or
    XCDR2), uint32 length including the terminating NUL, the bytes, the NUL."""
    b = bytes(raw)
    if len(b) < 8:
        raise MessageError(f"serialized String too short ({len(b)} bytes)")
    rep = int.from_bytes(b[0:2], "big")
    if rep not in (0x0000, 0x0001, 0x0006, 0x0007, 0x0008, 0x0009, 0x000A, 0x000B):
        raise MessageError(f"serialized String: unknown CDR representation 0x{rep:04x}")
    n = int.from_bytes(b[4:8], "little" if rep & 1 else "big")
    if n < 1 or 8 + n > len(b):
        raise MessageError(f"serialized String: length {n} does not fit the {len(b) - 8} bytes that follow")
    data = b[8:8 + n]
    if data[-1:] != b"\0":
        raise MessageError("serialized String: not NUL-terminated")
    return data[:-1]


def command_to_msg(q: np.ndarray, gripper: float, stamp: float, dt: float = 0.0,
                   velocity: np.ndarray | None = None) -> JointTrajectory:
    """Joint command: one point, joint_names = 6 arm joints + 'gripper' (opening 0..1); header.stamp = the
    safety tick the command was computed at; time_from_start = the control period it covers (the filter's
    dt; 0 = a re-anchor at the measured joints, or unknown); velocities = the commanded joint velocities (+ 0 for
    the gripper) when given."""
    m = JointTrajectory()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = robot_spec.BASE_FRAME
    m.joint_names = list(COMMAND_JOINT_NAMES)
    p = JointTrajectoryPoint()
    p.positions = [float(x) for x in np.asarray(q, dtype=float).reshape(6)] + [float(gripper)]
    if velocity is not None:
        p.velocities = [float(x) for x in np.asarray(velocity, dtype=float).reshape(6)] + [0.0]
    p.time_from_start = to_duration(max(0.0, float(dt)))
    m.points.append(p)
    return m


def msg_to_command(msg: JointTrajectory) -> tuple[np.ndarray, float, float, float, np.ndarray | None]:
    """-> (q (6,), gripper, stamp, dt, velocity (6,) or None when the command carries no velocities)."""
    names = list(msg.joint_names)
    if sorted(names) != sorted(COMMAND_JOINT_NAMES):
        raise MessageError(f"joint command joint_names {names} must be {list(COMMAND_JOINT_NAMES)}")
    if len(msg.points) != 1:
        raise MessageError(f"joint command must have exactly one point, got {len(msg.points)}")
    pos = list(msg.points[0].positions)
    if len(pos) != len(names):
        raise MessageError(f"joint command has {len(pos)} values for {len(names)} names")
    v = {n: pos[i] for i, n in enumerate(names)}
    q = np.array([v[n] for n in robot_spec.JOINT_NAMES], dtype=float)
    vel = list(msg.points[0].velocities)
    qd = None
    if vel:
        if len(vel) != len(names):
            raise MessageError(f"joint command has {len(vel)} velocities for {len(names)} names")
        vd = {n: vel[i] for i, n in enumerate(names)}
        qd = np.array([vd[n] for n in robot_spec.JOINT_NAMES], dtype=float)
    return q, float(v["gripper"]), from_time(msg.header.stamp), from_duration(msg.points[0].time_from_start), qd


# ---------------------------------------------------------------------------------------------------- diagnostics
LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR,
          "stale": DiagnosticStatus.STALE}


def _flat(prefix: str, v: Any, out: list[KeyValue]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), x, out)
    else:
        if isinstance(v, float):
            v = f"{v:.6g}"
        out.append(KeyValue(key=prefix, value=str(v)))


def diagnostic_status(name: str, level: str, message: str, values: dict, hardware_id: str = "") -> DiagnosticStatus:
    st = DiagnosticStatus()
    st.level = LEVELS[level]
    st.name = name
    st.message = message
    st.hardware_id = hardware_id
    kv: list[KeyValue] = []
    _flat("", values, kv)
    st.values = kv
    return st


def diagnostic_array(stamp: float, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    m = DiagnosticArray()
    m.header.stamp = to_time(stamp)
    m.status = list(statuses)
    return m


def diagnostics_to_dict(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
