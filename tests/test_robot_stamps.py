"""Honest timestamps and the gripper mode on the robot side (issue 14, items 7 and 9): camera frames stamped with
their capture time when the device's timestamp domain is the host clock, joint states republished with xs_sdk's
header stamp and measured velocities, the gripper driven as a position set point (what the policy was trained
on) or as binary grasp/release, explicitly."""
from __future__ import annotations

import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from interbotix_stub import install_interbotix_stub, xs_angle_from_separation, xs_finger_from_angle
from ros_graph_helpers import wait_until  # noqa: I100 (sets ROS_DOMAIN_ID for this process)

from etc_ros.camera.sources import (
    HOST_CLOCK_DOMAINS,
    MAX_CAPTURE_AGE,
    Frame,
    RealSenseSource,
    frame_stamp,
    timestamp_domain_name,
)
from etc_ros.core import spec as robot_spec
from etc_ros.robot.base import DriverError
from etc_ros.robot.core import DriverCore, make_backend
from etc_ros.robot.fake import FakeBackend
from etc_ros.robot.interbotix import InterbotixBackend
from etc_ros.safety import JointCommandGuard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ros_context():
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(args=[], context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


# ---------------------------------------------------------------------------------------------------- camera
class _Domain:
    """pybind11 enum value: .name, printed as 'timestamp_domain.<name>'."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return f"timestamp_domain.{self.name}"


def install_realsense_stub(monkeypatch, domain: str, ts_ms):
    """pyrealsense2 as the RealSense source uses it: color frames whose get_timestamp() is in ms, in `domain`.
    ts_ms(): the timestamp of the next frame."""
    rs = types.ModuleType("pyrealsense2")
    rs.timestamp_domain = types.SimpleNamespace(**{n: _Domain(n) for n in ("hardware_clock", "system_time",
                                                                           "global_time")})
    rs.stream = types.SimpleNamespace(color="color", depth="depth")
    rs.format = types.SimpleNamespace(rgb8="rgb8", z16="z16")

    class Config:
        def enable_device(self, serial):
            pass

        def enable_stream(self, *a):
            pass

    class ColorFrame:
        def __init__(self):
            self.ts = float(ts_ms())

        def __bool__(self):
            return True

        def get_data(self):
            return np.zeros((48, 64, 3), np.uint8)

        def get_timestamp(self):
            return self.ts

        def get_frame_timestamp_domain(self):
            return getattr(rs.timestamp_domain, domain)

    class Frames:
        def get_color_frame(self):
            return ColorFrame()

    class Pipeline:
        def start(self, cfg):
            intr = types.SimpleNamespace(width=64, height=48, fx=50.0, fy=50.0, ppx=32.0, ppy=24.0, coeffs=[0] * 5)
            vp = types.SimpleNamespace(get_intrinsics=lambda: intr)
            return types.SimpleNamespace(get_stream=lambda s: types.SimpleNamespace(
                as_video_stream_profile=lambda: vp))

        def wait_for_frames(self, timeout_ms):
            return Frames()

        def stop(self):
            pass

    rs.config, rs.pipeline = Config, Pipeline
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    return rs


@pytest.mark.parametrize("domain", ["global_time", "system_time", "hardware_clock"])
def test_realsense_frames_carry_a_host_capture_time_only_in_host_clock_domains(monkeypatch, domain):
    wall = time.time()
    install_realsense_stub(monkeypatch, domain, lambda: (wall - 0.040) * 1000.0 if domain != "hardware_clock"
                           else 123456.789)
    src = RealSenseSource(width=64, height=48)
    src.open()
    f = src.read()
    src.close()
    assert f.time_domain == domain and f.receive_time is not None and abs(f.receive_time - time.time()) < 1.0
    if domain in HOST_CLOCK_DOMAINS:  # ms since the epoch of the host's clock -> s
        assert abs(f.capture_time - (wall - 0.040)) < 1e-6 and f.device_time == f.capture_time
    else:  # the camera's own clock: kept as device_time, never taken for host time
        assert f.capture_time is None and abs(f.device_time - 123.456789) < 1e-9


def test_timestamp_domain_names():
    assert timestamp_domain_name(_Domain("global_time")) == "global_time"
    assert timestamp_domain_name("timestamp_domain.system_time") == "system_time"


def test_frame_stamp_maps_the_capture_time_onto_the_node_clock():
    wall, node = 1.7e9, 500.0  # the node's clock is not the wall clock (offset, or simulated time)
    cap = Frame(np.zeros((2, 2, 3), np.uint8), capture_time=wall - 0.030, receive_time=wall - 0.002,
                time_domain="global_time")
    stamp, src, note = frame_stamp(cap, node, wall)
    assert src == "capture" and note == "" and abs(stamp - (node - 0.030)) < 1e-6
    # a few ms "in the future" (rounding between clocks): now, never later
    fut = Frame(cap.image, capture_time=wall + 0.002, receive_time=wall, time_domain="system_time")
    assert frame_stamp(fut, node, wall)[:2] == (node, "capture")
    # clearly in the future or implausibly old: the clocks disagree -> receive time, and say why
    for bad, why in ((wall + 0.5, "after now"), (wall - MAX_CAPTURE_AGE - 1.0, "old")):
        f = Frame(cap.image, capture_time=bad, receive_time=wall - 0.002, time_domain="global_time")
        stamp, src, note = frame_stamp(f, node, wall)
        assert src == "receive" and why in note and abs(stamp - (node - 0.002)) < 1e-6
    # hardware clock: receive time, with the reason
    hw = Frame(cap.image, device_time=123.4, receive_time=wall - 0.001, time_domain="hardware_clock")
    stamp, src, note = frame_stamp(hw, node, wall)
    assert src == "receive" and "hardware_clock" in note and abs(stamp - (node - 0.001)) < 1e-6
    # sources without any time (sim, fake, OpenCV): the node's now
    assert frame_stamp(Frame(cap.image), node, wall) == (node, "now", "")


class _TimedSource:
    """A camera source whose frames were captured `age` s before they are read (host clock), in `domain`."""

    kind = "realsense"
    depth = False

    def __init__(self, age: float, domain: str):
        from etc_ros.camera.sources import FakeCameraSource

        self.inner = FakeCameraSource(width=32, height=24, fps=30.0)
        self.age, self.domain = age, domain

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self) -> Frame:
        f = self.inner.read()
        now = time.time()
        host = self.domain in HOST_CLOCK_DOMAINS
        return Frame(f.image, None, now - self.age if host else 42.0, capture_time=now - self.age if host else None,
                     receive_time=now, time_domain=self.domain)


@pytest.mark.parametrize("domain", ["global_time", "hardware_clock"])
def test_camera_node_stamps_images_with_the_capture_time(ros_context, domain):
    from etc_ros.nodes.camera_node import CameraNode

    node = CameraNode(source=_TimedSource(0.080, domain), autostart=False, context=ros_context)
    got = []
    node.pub_img.publish = lambda m: got.append((m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec, node.now_s()))
    diags = []
    node.publish_diagnostics = lambda level, msg, d, name=None: diags.append((level, msg, d))
    try:
        node.start()
        assert wait_until(lambda: len(got) >= 3, 10.0)
        node.paused = True
        time.sleep(0.1)
        node._diagnostics()
    finally:
        node.stop()
    level, msg, d = diags[-1]
    ages = [now - stamp for stamp, now in got]
    assert all(a >= 0 for a in ages)  # never in the future
    if domain == "global_time":  # the 80 ms the frame spent before it was read are in the stamp
        assert all(0.080 <= a < 0.080 + 0.5 for a in ages), ages
        assert d["stamp_sources"] == {"capture": len(got)} and d["stamp_fallbacks"] == 0 and level == "ok"
        assert d["timestamp_domain"] == "global_time"
    else:  # the device clock is not the host's: receive time, and the diagnostics say so
        assert all(a < 0.080 for a in ages), ages
        assert d["stamp_sources"] == {"receive": len(got)} and d["stamp_fallbacks"] == len(got)
        assert level == "warn" and "hardware_clock" in msg and "hardware_clock" in d["last_stamp_note"]
    node.destroy_node()


def test_camera_timeout_in_the_docs_is_the_configured_one():
    import yaml

    cfg = yaml.safe_load((ROOT / "config/safety.yaml").read_text())["camera_timeout"]
    docs = (ROOT / "docs/ros.md").read_text()
    said = re.findall(r"`camera_timeout` \(([\d.]+) s in\s+config/safety\.yaml", docs)
    assert said and all(float(x) == float(cfg) for x in said), (said, cfg)
    assert float(cfg) == robot_spec.SafetyLimits().camera_timeout


# ---------------------------------------------------------------------------------------------------- joints
def test_interbotix_measurement_carries_the_xs_sdk_stamp_and_velocity(monkeypatch):
    calls, inits = [], []
    install_interbotix_stub(monkeypatch, calls, inits)
    b = make_backend("interbotix", service_probe=lambda name, t: True)
    core = DriverCore(b, JointCommandGuard(robot_spec.SafetyLimits()), start_pose="none")
    core.start(2000.0)  # starts the backend
    v = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])
    b.bot.core.xs_publish(robot_spec.READY_POSE, v, 1234.5678)
    m = b.measure()
    assert np.allclose(m.q, robot_spec.READY_POSE) and np.allclose(m.velocity, v) and abs(m.stamp - 1234.5678) < 1e-6
    # DriverCore keeps the whole measurement of its last update for the node
    core.update(2000.01)
    assert core.measurement.stamp == m.stamp and np.allclose(core.measurement.velocity, v)
    # backends without a hardware clock report neither (the node uses its tick time and a finite difference)
    f = FakeBackend()
    assert f.measure().stamp is None and f.measure().velocity is None


def test_binary_gripper_mode_on_the_fake_backend():
    f = make_backend("fake", fake_tau=0.01, gripper_mode="binary")
    f.command(robot_spec.SLEEP_POSE, 0.6)
    f.update(1.0)
    assert abs(f.read()[1] - 1.0) < 1e-6
    f.command(robot_spec.SLEEP_POSE, 0.4)
    f.update(1.0)
    assert abs(f.read()[1]) < 1e-6
    p = make_backend("fake", fake_tau=0.01)  # position: the opening as commanded
    p.command(robot_spec.SLEEP_POSE, 0.4)
    p.update(1.0)
    assert abs(p.read()[1] - 0.4) < 1e-6


# ---------------------------------------------------------------------------------------------------- gripper
def test_interbotix_stub_linkage_matches_the_spec_finger_range():
    # the stub's xs_sdk geometry round-trips, and the spec's finger travel lies inside the linkage's reach
    for f in (robot_spec.FINGER_CLOSED, 0.026, robot_spec.FINGER_OPEN):
        assert abs(xs_finger_from_angle(xs_angle_from_separation(2 * f)) - f) < 1e-9


def test_interbotix_gripper_position_mode_streams_the_opening_as_a_set_point(monkeypatch):
    """gripper_mode 'position' (the default): the gripper servo goes to xs_sdk's linear_position mode, each new
    opening becomes the finger separation it stands for, and the measured opening comes back as commanded;
    a continuous opening is never thresholded (the old backend turned 0.45 into a full grasp)."""
    calls, inits = [], []
    install_interbotix_stub(monkeypatch, calls, inits)
    b = make_backend("interbotix", moving_time=0.04, accel_time=0.02, service_probe=lambda name, t: True)
    assert b.gripper_mode == "position"
    try:
        b.start()
    finally:
        import rclpy

        if rclpy.ok():
            rclpy.shutdown()
    core = b.bot.core
    assert ("modes", "single", "gripper", "linear_position", "velocity") in calls
    assert core.modes["gripper"] == "linear_position"
    for g in (1.0, 0.45, 0.45 + 1e-4, 0.0, 0.7):
        b.command(robot_spec.READY_POSE, g)
    singles = [c for c in calls if c[0] == "single"]
    assert [c[1] for c in singles] == ["gripper"] * 4  # 0.45 + 1e-4 is within the deadband: not rewritten
    assert [round(c[2], 6) for c in singles] == [round(2 * float(robot_spec.finger_from_gripper(g)), 6)
                                                 for g in (1.0, 0.45, 0.0, 0.7)]
    assert not any(c[0] in ("grasp", "release") for c in calls)
    # xs_sdk moves the servo to its last goal: the measured opening is the commanded one
    mode, angle = core.gripper_goals[-1]
    assert mode == "linear_position"
    core.gripper_angle = angle
    core.xs_publish(robot_spec.READY_POSE, np.zeros(6), 1001.0)
    assert abs(b.read()[1] - 0.7) < 1e-6
    with pytest.raises(DriverError, match="gripper_mode 'pwm' is not one of"):
        make_backend("interbotix", gripper_mode="pwm")




def _stamp(m) -> float:
    return m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec


def test_driver_node_republishes_xs_sdk_measurements_with_their_stamp_and_velocity(monkeypatch, ros_context):
    """Old behaviour: every tick published the node's "now" and a finite difference of positions, whatever xs_sdk
    measured and when."""
    from etc_ros.nodes.driver_node import DriverNode

    calls, inits = [], []
    install_interbotix_stub(monkeypatch, calls, inits)
    b = InterbotixBackend(service_probe=lambda name, t: True, gripper_mode="position")
    drv = DriverNode(params={"start_pose": "none", "stop_pose": "none"}, backend=b, context=ros_context)
    got = []
    drv.pub_js.publish = got.append
    try:
        xs = b.bot.core
        now = drv.now_s()
        v = np.array([0.3, -0.1, 0.2, 0.0, -0.4, 0.05])
        xs.xs_publish(robot_spec.READY_POSE, v, now - 0.004)  # xs_sdk read the servos 4 ms ago
        drv._tick()
        assert len(got) == 1 and abs(_stamp(got[0]) - (now - 0.004)) < 1e-6
        assert np.allclose(got[0].velocity, list(v) + [0.0, 0.0])  # measured, not differenced
        drv._tick()  # no new measurement: nothing republished (it would repeat an old reading as new)
        assert len(got) == 1 and drv.repeated_measurements == 1
        q2 = robot_spec.READY_POSE + 0.01
        xs.xs_publish(q2, 0.5 * v, drv.now_s() - 0.001)
        drv._tick()
        assert len(got) == 2 and np.allclose(got[1].position[:6], q2) and np.allclose(got[1].velocity[:6], 0.5 * v)
        # a stamp after the node's clock is published at the node's time, never in the future
        xs.xs_publish(q2, v, drv.now_s() + 5.0)
        drv._tick()
        assert len(got) == 3 and _stamp(got[2]) <= drv.now_s() and drv.future_stamps == 1
        diags = []
        drv.publish_diagnostics = lambda level, msg, d, name=None: diags.append(d)
        drv._diagnostics()
        assert diags[-1]["joint_state_stamps"] == "hardware measurement time"
        assert diags[-1]["gripper_mode"] == "position" and diags[-1]["repeated_measurements"] == 1
    finally:
        drv._stopped = True
        drv.destroy_node()


def test_driver_node_without_hardware_stamps_keeps_tick_time_and_finite_difference(ros_context):
    from etc_ros.nodes.driver_node import DriverNode

    f = FakeBackend(q0=robot_spec.READY_POSE, tau=0.01)
    drv = DriverNode(params={"start_pose": "none", "stop_pose": "none", "backend": "fake"}, backend=f,
                     context=ros_context)
    got = []
    drv.pub_js.publish = got.append
    try:
        t0 = drv.now_s()
        drv._tick()
        f.q = f.q + 0.01
        f.q_target = f.q.copy()
        time.sleep(0.01)
        drv._tick()
        drv._tick()  # a tick without motion is published too (the tick is the measurement)
        assert len(got) == 3 and t0 <= _stamp(got[0]) <= _stamp(got[1]) <= drv.now_s()
        dt = _stamp(got[1]) - _stamp(got[0])
        assert np.allclose(got[1].velocity[:6], 0.01 / dt, rtol=1e-3)
    finally:
        drv._stopped = True
        drv.destroy_node()


def test_driver_node_declares_gripper_mode_and_rejects_unknown_ones(ros_context):
    from etc_ros.nodes.driver_node import DriverNode
    from etc_ros.nodes.graph import NODE_PARAMS, node_parameters

    assert NODE_PARAMS["driver_node"]["gripper_mode"] == "position"
    assert node_parameters("driver_node", [str(ROOT / "config/ros_driver.yaml")])["gripper_mode"] == "position"
    with pytest.raises(DriverError, match="gripper_mode 'half' is not one of"):
        DriverNode(params={"backend": "fake", "gripper_mode": "half"}, context=ros_context)
    docs = (ROOT / "docs/ros.md").read_text()
    assert "`gripper_mode`" in docs and "binary" in docs
