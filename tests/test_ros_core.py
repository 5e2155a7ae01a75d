"""Pure cores of the ROS layer (no rclpy): instruction validation, camera reconnect, driver moves and command
gate, policy worker, the graph plan shared by the launch file and the bringup."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from policy_fakes import make_test_runtime

from etc_ros.camera.sources import CameraError, FakeCameraSource, ReconnectingCamera, SimCameraSource, make_source
from etc_ros.core import spec as robot_spec
from etc_ros.core.instruction import InstructionError, check_instruction, validate_instruction
from etc_ros.policy.scripted import ScriptedRuntime, make_fake_runtime
from etc_ros.policy.worker import PolicyConfigError, PolicyWorker, load_runtime
from etc_ros.robot.base import DriverError, plan_joint_move
from etc_ros.robot.core import DriverCore, make_backend, refusal_kind
from etc_ros.robot.fake import FakeBackend
from etc_ros.robot.sim import ThreadBoundEnv
from etc_ros.safety import JointCommandGuard


# ------------------------------------------------------------------------------------------------ instruction
@pytest.mark.parametrize("raw,reason", [
    ("", "empty"), ("   \n\t ", "empty"), (None, "empty"), ("x" * 201, "too long (201 characters > 200)"),
    ("pick\x00up", "control character U+0000"), ("pick\x1b[31m up", "control character U+001B"),
    ("pick\nup", "control character U+000A"), ("pick \u202eup", "invisible format character U+202E"),
    (b"pick \xff up", "not valid UTF-8"), ("pick \udcff up", "not valid UTF-8"), (42, "expected text"),
])
def test_instruction_rejections_carry_a_reason(raw, reason):
    res = check_instruction(raw)
    assert not res.ok and res.text == ""
    assert res.reason.startswith("rejected: ") and reason in res.reason, res.reason
    with pytest.raises(InstructionError):
        validate_instruction(raw)


def test_instruction_accepts_and_normalizes():
    assert check_instruction("  put the red block in the bowl \n").text == "put the red block in the bowl"
    assert validate_instruction("x" * 200) == "x" * 200
    assert validate_instruction("mets le cube rouge à gauche 🙂".encode("utf-8")) == "mets le cube rouge à gauche 🙂"
    assert not check_instruction("abcd", max_chars=3).ok


# ------------------------------------------------------------------------------------------------ camera sources
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_string_bytes_come_from_the_wire_not_from_rclpy_deserialization():
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from etc_ros.nodes.messages import MessageError, string_bytes_from_cdr

    for text in ("pick up the red cube", "", "café"):
        assert string_bytes_from_cdr(serialize_message(String(data=text))) == text.encode("utf-8")

    def wire(payload: bytes, little: bool = True) -> bytes:  # what a C++ publisher can send
        n = len(payload) + 1
        return (b"\x00\x01" if little else b"\x00\x00") + b"\x00\x00" + n.to_bytes(4, "little" if little else "big") \
            + payload + b"\x00"

    assert string_bytes_from_cdr(wire(b"stop\x00now")) == b"stop\x00now"
    assert string_bytes_from_cdr(wire(b"\xff\xfe", little=False)) == b"\xff\xfe"
    for bad in (b"", b"\x00\x01\x00\x00\x05\x00\x00\x00ab", b"\x00\x01\x00\x00\x02\x00\x00\x00ab",
                b"\x12\x34\x00\x00\x01\x00\x00\x00\x00"):
        with pytest.raises(MessageError):
            string_bytes_from_cdr(bad)
    assert not check_instruction(b"\xff\xfe").ok  # the node hands the raw bytes on: decoded strictly


def test_reconnect_backoff_doubles_and_resets_after_success():
    src = FakeCameraSource(fail_opens=3)
    clk = Clock()
    cam = ReconnectingCamera(src, backoff_initial=0.1, backoff_max=0.3, clock=clk)
    tries = []
    while clk.t < 2.0:
        if cam.poll() is not None:
            break
        tries.append(round(clk.t, 2))
        clk.t = round(clk.t + 0.01, 2)
    # opens at t=0 (fail), 0.1 (fail), 0.3 (fail), then 0.6 (backoff capped at 0.3) succeeds
    assert cam.state == "connected" and cam.frames == 1 and src.opens == 1
    assert cam.failures == 3 and cam.reconnects == 0
    assert 0.6 <= clk.t <= 0.61 + 1e-9, clk.t
    # device unplugged mid-stream: reads fail -> reconnect, counted
    src.fail_after, src.unplug_reads = src.reads + 2, 1
    frames = [cam.poll() for _ in range(3)]
    assert frames[0] is not None and frames[1] is not None and frames[2] is None
    assert cam.state == "reconnecting" and "device gone" in cam.last_error
    clk.t += 0.1  # backoff restarted at its initial value after the successful reads
    assert cam.poll() is not None and cam.reconnects == 1 and cam.consecutive_failures == 0
    d = cam.diagnostics()
    assert d["reconnects"] == 1 and d["failures"] == 4 and d["state"] == "connected"


def test_unplugged_camera_keeps_retrying_until_replugged():
    src = FakeCameraSource()
    clk = Clock()
    cam = ReconnectingCamera(src, 0.05, 0.2, clock=clk)
    assert cam.poll() is not None
    src.unplug()
    for _ in range(100):
        assert cam.poll() is None
        clk.t += 0.01
    assert cam.failures >= 5 and cam.state == "reconnecting"
    assert cam.seconds_until_retry() <= 0.2
    src.plug()
    clk.t += 0.25
    assert cam.poll() is not None and cam.reconnects == 1


def test_camera_sources_validate_input():
    with pytest.raises(CameraError, match="unknown camera_type"):
        make_source("kinect")
    with pytest.raises(CameraError, match="use_sim"):
        make_source("sim")
    with pytest.raises(CameraError, match="width/height"):
        FakeCameraSource(width=0)
    with pytest.raises(CameraError, match="not open"):
        FakeCameraSource().read()
    with pytest.raises(CameraError, match="0 < initial <= max"):
        ReconnectingCamera(FakeCameraSource(), backoff_initial=1.0, backoff_max=0.5)
    img = make_source("fake", width=32, height=24)
    img.open()
    f = img.read()
    assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8


def test_realsense_and_opencv_fail_with_a_clear_error_without_hardware():
    rs = make_source("realsense", serial="000000000000")
    with pytest.raises(CameraError) as e:
        rs.open()
    assert "RealSense" in str(e.value) or "pyrealsense2" in str(e.value)
    cv = make_source("opencv", device="/dev/video_does_not_exist")
    with pytest.raises(CameraError, match="cannot be opened"):
        cv.open()
    # behind the reconnect wrapper: no exception, retries with backoff
    cam = ReconnectingCamera(cv, 0.1, 1.0)
    assert cam.poll() is None and cam.failures == 1 and "cannot be opened" in cam.last_error


class FakeWorld:
    """Stands in for the MuJoCo world: first-order joints, a rendered gradient, success when the EE moved."""

    def __init__(self, q0=None):
        self.q = np.array(robot_spec.READY_POSE if q0 is None else q0, dtype=float)
        self.g = 1.0
        self.target = self.q.copy()
        self.gt = 1.0
        self.threads = set()
        self.resets = 0
        self.instruction = "touch the blue pad"

    def reset(self, seed=0, split="train"):
        self.threads.add(threading.get_ident())
        self.q = np.array(robot_spec.READY_POSE, dtype=float)
        self.target = self.q.copy()
        self.resets += 1
        self.instruction = f"episode {seed}: touch the blue pad"

    def set_joint_targets(self, q, g):
        self.target, self.gt = np.asarray(q, float).copy(), float(g)

    def advance(self, dt):
        self.threads.add(threading.get_ident())
        a = 1 - np.exp(-dt / 0.05)
        self.q = self.q + (self.target - self.q) * a
        self.g += (self.gt - self.g) * a

    def joint_state(self):
        return self.q.copy(), self.g

    def render(self, camera="primary"):
        self.threads.add(threading.get_ident())
        return np.full((24, 32, 3), int(100 * abs(self.q[0])) % 256, np.uint8)

    def is_success(self):
        return bool(np.max(np.abs(self.q - robot_spec.READY_POSE)) > 0.02)


def test_thread_bound_env_runs_every_call_on_one_thread():
    w = FakeWorld()
    env = ThreadBoundEnv(env=w)
    results = []

    def worker():
        env.reset(seed=3)
        env.advance(0.01)
        results.append(env.render("primary").shape)
        results.append(env.instruction)

    ts = [threading.Thread(target=worker) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(w.threads) == 1 and threading.get_ident() not in w.threads
    assert results.count((24, 32, 3)) == 3 and "episode 3: touch the blue pad" in results
    with pytest.raises(AttributeError):
        env.no_such_method()
    env.close()
    with pytest.raises(DriverError, match="closed"):
        env.render("primary")
    cam = SimCameraSource(ThreadBoundEnv(env=w), "primary", fps=10)
    cam.open()
    assert cam.read().image.shape == (24, 32, 3)


# ------------------------------------------------------------------------------------------------ driver
def test_joint_move_respects_velocity_and_acceleration_limits():
    q0, q1 = robot_spec.SLEEP_POSE, robot_spec.READY_POSE
    vmax, amax = 0.9, 1.5
    m = plan_joint_move(q0, q1, vmax, amax, 0.0, 1.0, gripper_rate=2.0)
    ts = np.linspace(0, m.duration, 2001)
    Q = np.array([m.sample(t)[0] for t in ts])
    G = np.array([m.sample(t)[1] for t in ts])
    dt = ts[1] - ts[0]
    V = np.diff(Q, axis=0) / dt
    A = np.diff(V, axis=0) / dt
    assert np.allclose(Q[0], q0) and np.allclose(Q[-1], q1) and G[0] == 0.0 and G[-1] == 1.0
    assert np.max(np.abs(V)) <= vmax * 1.001
    assert np.max(np.abs(A)) <= amax * 1.01
    assert np.max(np.abs(np.diff(G) / dt)) <= 2.0 * 1.001
    assert abs(np.max(np.abs(V)) - vmax) < 0.05  # time-optimal: reaches the cruise speed
    assert plan_joint_move(q0, q0, vmax, amax).duration == 0.0
    with pytest.raises(DriverError):
        plan_joint_move(q0, q1, 0.0, amax)
    with pytest.raises(DriverError):
        plan_joint_move([0, 0], q1, vmax, amax)


def _ready_core(**kw):
    core = DriverCore(FakeBackend(q0=robot_spec.SLEEP_POSE), JointCommandGuard(), speed_fraction=1.0, **kw)
    t = 0.0
    core.start(t)
    assert core.state == "starting"
    while not core.ready:
        t += 0.01
        core.update(t)
        assert t < 10
    return core, t


def test_driver_starts_at_ready_pose_and_parks_at_sleep():
    core, t = _ready_core()
    assert np.allclose(core.backend.read()[0], robot_spec.READY_POSE, atol=6e-3)
    assert core.command(core.q_target, 1.0, t + 0.02, 0.02) == (True, "ok")
    clock = [t]

    def now():
        clock[0] += 0.01
        return clock[0]

    core.run_stop(now_fn=now, dt=0.0, sleep=lambda s: None)
    assert core.state == "stopped"
    assert np.allclose(core.backend.read()[0], robot_spec.SLEEP_POSE, atol=5e-3)
    assert core.command(robot_spec.READY_POSE, 1.0, clock[0] + 1, 0.02)[0] is False


def test_driver_refuses_out_of_limit_commands_and_counts_them():
    core, t = _ready_core()
    q = core.q_target.copy()
    t0 = t + 0.5
    assert core.command(q, 1.0, t0, 0.02) == (True, "ok")
    n0 = core.backend.commands
    bad = {
        "velocity": (q + 0.2, 1.0),  # 10 rad/s over one 20 ms period
        "nonfinite": (np.full(6, np.nan), 1.0),
        "position_limits": (q + np.array([0, 0, 0, 0, 5.0, 0]), 1.0),
        "workspace": (robot_spec.HOME_POSE, 1.0),
        "gripper": (q, 1.5),
    }
    for i, (kind, (qc, g)) in enumerate(bad.items()):
        ok, reason = core.command(qc, g, t0 + 0.02 * (i + 1), 0.02)
        assert not ok, kind
        assert core.refusals.get(kind, 0) == 1, (kind, reason, core.refusals)
    assert core.backend.commands == n0  # nothing reached the backend
    # consecutive commands: acceleration checked with the command's own dt
    t1 = t + 10.0
    assert core.command(q, 1.0, t1, 0.02)[0]  # after a gap: velocity only
    q1 = q + 0.001
    assert core.command(q1, 1.0, t1 + 0.02, 0.02)[0]  # 0.05 rad/s from unknown velocity
    ok, reason = core.command(q1 + 0.02, 1.0, t1 + 0.04, 0.02)  # 1 rad/s after 0.05 rad/s in 20 ms: 47.5 rad/s^2
    assert not ok and refusal_kind(reason) == "acceleration"
    ok, _ = core.command(q1, 1.0, t1 + 0.01, 0.02)  # stamps must increase
    assert not ok and core.refusals["stamp"] == 1
    assert core.diagnostics()["refused_commands"] == core.refused == 7
    assert DriverCore(FakeBackend(), JointCommandGuard()).command(q, 1.0, 1.0)[1].startswith("driver is idle")


def test_driver_accepts_a_reanchor_at_the_measured_joints_only():
    """The safety executor re-anchors on the measured joints (its command jumps there, dt = 0): the driver accepts
    that jump when it lands on the joints it measures itself (no motion), at most once per anchor_interval; a
    dt = 0 command anywhere else is checked against the previous command as before."""
    core, t = _ready_core(anchor_interval=0.05)
    q = core.q_target.copy()
    # once ready, the first command must start at the measured joints (a sender's stale pose is superseded)
    ok, reason = core.command(q + 0.3, 1.0, t + 0.01, 0.02)
    assert not ok and reason.startswith("superseded") and core.refused == 0
    assert core.command(q, 1.0, t + 0.02, 0.02)[0] and core.anchors == 1
    assert core.command(q + 0.001, 1.0, t + 0.04, 0.02)[0]  # moving at 0.05 rad/s
    # the arm is held 0.3 rad away from its command (collision): the executor re-anchors there
    q_meas = q + np.array([0.0, 0.0, 0.0, 0.0, 0.3, 0.0])
    core.backend.q = q_meas.copy()
    ok, reason = core.command(q_meas, 1.0, t + 0.06, 0.02)  # as an ordinary step: 15 rad/s
    assert not ok and refusal_kind(reason) == "velocity"
    assert core.command(q_meas + 0.2, 1.0, t + 0.08, 0.0)[0] is False  # dt = 0 but not at the measured joints
    assert core.command(q_meas + 0.01, 1.0, t + 0.10, 0.0) == (True, "ok")  # the re-anchor
    assert core.anchors == 2
    assert core.command(q_meas + 0.011, 1.0, t + 0.12, 0.02)[0]  # the stream goes on from the anchor
    core.backend.q = q_meas + 0.2
    ok, _ = core.command(q_meas + 0.2, 1.0, t + 0.14, 0.0)  # a second anchor within anchor_interval: checked
    assert not ok and core.anchors == 2
    assert core.refusals == {"velocity": 3}


def test_driver_accepts_a_reanchor_on_a_joint_state_it_published_while_the_arm_moved_on():
    """The safety node re-anchors on the last /joint_states it received; when the arm springs back from a contact
    it is already ~0.2 rad further when the command arrives (measured in the ROS graph: 15 guard refusals in 20
    episodes, all such re-anchors). The driver accepts a dt = 0 command that is exactly one of its own recent
    measurements (no older than anchor_max_age), and nothing else."""
    core, t = _ready_core(anchor_interval=0.05, anchor_max_age=0.25)
    q = core.q_target.copy()
    assert core.command(q, 1.0, t + 0.02, 0.02)[0]
    # the arm was pushed 0.3 rad away; the driver measures and publishes that pose
    q_pub = q + np.array([0.0, 0.0, 0.0, 0.0, 0.3, 0.0])
    core.backend.q = q_pub.copy()
    core.backend.q_target = q_pub.copy()
    q_seen, _ = core.update(t + 0.03)
    assert np.array_equal(q_seen, q_pub)
    # ... and springs on by 0.2 rad before the re-anchor command arrives
    core.backend.q = q_pub + np.array([0.0, 0.0, 0.0, 0.0, -0.2, 0.0])
    core.backend.q_target = core.backend.q.copy()
    assert core._from_measured(q_pub) > core.anchor_tolerance  # the old check alone refused this
    assert core.command(q_pub + 1e-6, 1.0, t + 0.06, 0.0)[0] is False  # not a published measurement
    assert core.command(q_pub, 1.0, t + 0.08, 0.0) == (True, "ok")  # exactly the published one: the anchor
    assert core.anchors == 2 and core.refused == 1
    assert core.command(q_pub + 0.001, 1.0, t + 0.10, 0.02)[0]  # the stream goes on from it at 0.05 rad/s
    # a published measurement older than anchor_max_age is no anchor
    assert core._measured_pose_time(q_pub, t + 0.03 + 0.2) is not None
    assert core._measured_pose_time(q_pub, t + 0.03 + 0.3) is None


def test_anchors_on_published_joint_states_may_follow_each_other_but_never_go_back_in_time():
    """A re-anchor followed within anchor_interval by the executor's reset on a newer joint state (episode reset on
    an arm still moving: a measured guard refusal): both are published measurements, so both are anchors; an
    anchor on a measurement older than the last anchor's is not (it would replay an old pose)."""
    core, t = _ready_core(anchor_interval=0.1)
    q = core.q_target.copy()
    assert core.command(q, 1.0, t + 0.02, 0.02)[0]
    published = []
    for i in range(3):  # the arm springs along joint 5; the driver publishes each pose
        core.backend.q = q + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1 * (i + 1)])
        core.backend.q_target = core.backend.q.copy()
        published.append(core.update(t + 0.03 + 0.01 * i)[0])
    assert core.command(published[0], 1.0, t + 0.06, 0.0) == (True, "ok")
    assert core.command(published[2], 1.0, t + 0.07, 0.0) == (True, "ok")  # 10 ms later: newer measurement
    ok, reason = core.command(published[1], 1.0, t + 0.08, 0.0)  # older than the last anchor's measurement
    assert not ok and refusal_kind(reason) == "velocity"
    assert core.anchors == 3 and core.refused == 1


def test_driver_knows_a_step_from_a_gap_by_the_executors_own_step_definition():
    """A command the driver never got (timer jitter: a 13.7 ms tick between two 20 ms ones) made the next one look
    consecutive by its stamp gap (33.7 ms < 1.9 dt), so the driver checked two steps' motion over one dt and refused
    it ('acceleration 30.689 rad/s^2', measured in the ROS graph). With the commanded velocity the driver checks
    the executor's own step equation q = q_last + v dt: a lost step breaks it and the command is checked as after
    a gap."""
    def stream(velocity: bool):
        core, t = _ready_core()
        q0 = core.q_target.copy()
        e = np.eye(6)[0]
        assert core.command(q0, 1.0, t + 0.02, 0.02, np.zeros(6) if velocity else None)[0]
        qa = q0 + 0.08 * 0.02 * e
        assert core.command(qa, 1.0, t + 0.04, 0.02, 0.08 * e if velocity else None)[0]
        qb = qa + 0.135 * 0.0137 * e  # computed and sent, but lost
        qc = qb + 0.215 * 0.02 * e
        return core, core.command(qc, 1.0, t + 0.04 + 0.0137 + 0.02, 0.02, 0.215 * e if velocity else None)

    core, (ok, reason) = stream(velocity=False)  # stamp-gap heuristic (senders without velocities)
    assert not ok and refusal_kind(reason) == "acceleration"
    core, (ok, reason) = stream(velocity=True)
    assert ok, reason
    assert core._last_v is None  # after a gap the acceleration check restarts


def test_commands_from_before_a_resync_are_superseded_not_refused():
    core, t = _ready_core()
    q = core.q_target.copy()
    assert core.command(q, 1.0, t + 0.02, 0.02)[0]
    core.reset_to(t + 1.0)  # the world was reset under the driver (sim episode)
    ok, reason = core.command(q, 1.0, t + 0.98, 0.02)  # computed before the reset, delivered after it
    assert not ok and reason.startswith("superseded")
    assert core.superseded == 1 and core.refused == 0
    assert core.command(core.q_target, 1.0, t + 1.02, 0.02)[0]
    d = core.diagnostics()
    assert d["superseded_commands"] == 1 and d["refused_commands"] == 0


def test_driver_backend_factory_errors():
    with pytest.raises(DriverError, match="unknown driver backend"):
        make_backend("ur5")
    with pytest.raises(DriverError, match="sim_robot"):
        make_backend("sim")
    with pytest.raises(DriverError, match="not supported"):
        make_backend("interbotix", robot_model="px100")
    with pytest.raises(DriverError, match="interbotix_xs_modules"):
        make_backend("interbotix").start()
    with pytest.raises(DriverError, match="start_pose"):
        DriverCore(FakeBackend(), JointCommandGuard(), start_pose="upright")


# ------------------------------------------------------------------------------------------------ policy worker
def _worker(runtime, published, **kw):
    now = [100.0]
    w = PolicyWorker(runtime, ("primary",), lambda a, s: published.append((a, s)), clock=lambda: now[0], **kw)
    return w, now


def test_policy_worker_needs_instruction_image_and_state():
    published = []
    rt = ScriptedRuntime()
    w, now = _worker(rt, published)
    assert w.step_once() == "no_instruction"
    w.set_instruction("pick up the cube")
    assert w.step_once() == "no_image"
    w.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.9)
    assert w.step_once() == "no_state"
    w.set_state(np.r_[robot_spec.READY_POSE, 1.0])
    assert w.step_once() == "published" and len(published) == 1
    a, stamp = published[0]
    assert a.shape == (robot_spec.CHUNK_HORIZON, 7) and stamp == 99.9
    assert rt.last_observation["instruction"] == "pick up the cube"
    assert rt.last_observation["state"].shape == (7,)
    assert w.step_once() == "no_new_observation"  # same frame: no second inference
    w.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.0)
    now[0] = 200.0
    w.set_instruction("another task")
    assert w.step_once() == "stale_observation"
    w.set_instruction(None)
    assert w.step_once() == "no_instruction" and w.stats()["chunks"] == 1


def test_policy_worker_survives_failures_and_bad_shapes():
    published = []
    rt = ScriptedRuntime(raise_on_call=0)
    w, now = _worker(rt, published)
    w.set_instruction("x")
    w.set_state(np.r_[robot_spec.READY_POSE, 1.0])
    w.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.9)
    assert w.step_once() == "runtime_error" and "scripted failure" in w.last_error
    w.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.95)
    assert w.step_once() == "published"
    bad = ScriptedRuntime(chunk=np.zeros((4, 6)))
    w2, _ = _worker(bad, published)
    w2.set_instruction("x")
    w2.set_state(np.r_[robot_spec.READY_POSE, 1.0])
    w2.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.9)
    assert w2.step_once() == "bad_shape" and len(published) == 1
    nan = make_test_runtime("nan")
    w3, _ = _worker(nan, published)
    w3.set_instruction("x")
    w3.set_state(np.r_[robot_spec.READY_POSE, 1.0])
    w3.set_image("primary", np.zeros((8, 8, 3), np.uint8), 99.9)
    assert w3.step_once() == "published" and w3.nonfinite_chunks == 1  # the safety layer is the gate


def test_policy_worker_thread_does_not_block_callers():
    published = []
    rt = make_test_runtime("slow", latency_s=0.3)
    w = PolicyWorker(rt, ("primary",), lambda a, s: published.append(s), max_rate_hz=100.0, clock=time.time)
    w.set_instruction("x")
    w.set_state(np.r_[robot_spec.READY_POSE, 1.0])
    w.start()
    try:
        t0 = time.perf_counter()
        w.set_image("primary", np.zeros((8, 8, 3), np.uint8), time.time())
        assert wait(lambda: w.busy, 2.0)
        t1 = time.perf_counter()
        for _ in range(50):  # callbacks during inference return at once
            w.set_image("primary", np.zeros((8, 8, 3), np.uint8), time.time())
            w.set_state(np.r_[robot_spec.READY_POSE, 1.0])
        assert time.perf_counter() - t1 < 0.1
        assert wait(lambda: len(published) >= 2, 3.0)
        assert time.perf_counter() - t0 >= 0.55
    finally:
        w.stop()
    assert w.stats()["latency_p50_ms"] >= 290


def wait(pred, timeout):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def test_policy_providers_are_chosen_and_never_fall_back(tmp_path):
    from etc_ros.core.errors import UserError
    from etc_ros.nodes.graph import GraphConfigError, plan_graph
    from etc_ros.policy.worker import parse_providers

    assert parse_providers("") is None and parse_providers(None) is None
    assert parse_providers("tensorrt, cuda,cpu") == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                     "CPUExecutionProvider"]
    with pytest.raises(PolicyConfigError, match="gpu"):
        parse_providers("gpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():  # this CPU machine: refused, not CPU
        with pytest.raises(UserError, match="CUDAExecutionProvider.*not available"):
            load_runtime("policies/sim_pickup", providers="cuda")
    assert load_runtime("policies/sim_pickup", providers="cpu").model.providers == ["CPUExecutionProvider"]
    with pytest.raises(PolicyConfigError, match="onnxruntime"):
        load_runtime("policies/sim_pickup", backend="tensorrt", providers="cuda")
    plans = {p.executable: p for p in plan_graph({"use_sim": "true", "providers": "tensorrt,cuda"})}
    assert plans["policy_node"].overrides["policy_node"]["providers"] == "tensorrt,cuda"
    with pytest.raises(GraphConfigError, match="gpu"):
        plan_graph({"providers": "gpu"})


def test_in_process_bringup_refuses_xs_sdk():
    from etc_ros.nodes.bringup import BringupError, Graph
    from etc_ros.nodes.graph import BringupConfig

    with pytest.raises(BringupError, match="ros2 launch"):
        Graph(BringupConfig(use_sim=False, xs_sdk=True))


def test_load_runtime_errors_are_clear():
    with pytest.raises(PolicyConfigError, match="policy_bundle is empty"):
        load_runtime("")
    with pytest.raises(Exception, match="unknown fake runtime"):
        load_runtime("fake:telepathy")
    assert load_runtime("fake:hold").spec.cameras == ("primary",)


# ------------------------------------------------------------------------------------------------ graph plan
def test_plan_graph_maps_launch_arguments():
    from etc_ros.nodes.graph import GraphConfigError, plan_graph

    hw = {p.executable: p for p in plan_graph({"policy_bundle": "/b", "dry_run": "true"})}
    assert set(hw) == {"camera_node", "driver_node", "instruction_node", "policy_node", "safety_node"}
    assert hw["driver_node"].overrides["driver_node"]["backend"] == "interbotix"
    assert hw["camera_node"].overrides["camera_node"]["camera_type"] == "realsense"
    assert hw["safety_node"].overrides["safety_node"]["dry_run"] is True
    assert hw["policy_node"].overrides["policy_node"]["policy_bundle"] == "/b"
    sim = {p.executable: p for p in plan_graph({"use_sim": "true"})}
    assert set(sim) == {"sim_robot", "instruction_node", "policy_node", "safety_node"}
    assert sim["sim_robot"].nodes == ("sim_world", "driver_node", "camera_node")
    assert sim["safety_node"].overrides["safety_node"]["dry_run"] is False
    for bad, msg in [({"use_sim": "maybe"}, "true/false"), ({"robot_model": "px100"}, "not supported"),
                     ({"camera_type": "kinect"}, "camera_type"), ({"driver_backend": "ur"}, "driver_backend"),
                     ({"use_sim": "true", "driver_backend": "fake"}, "use_sim"),
                     ({"camera_type": "sim"}, "need use_sim"), ({"bogus": 1}, "unknown launch argument"),
                     ({"params_dir": "/nonexistent"}, "not a directory")]:
        with pytest.raises(GraphConfigError, match=msg):
            plan_graph(bad)


def test_parameter_files_are_declared_by_their_nodes(tmp_path):
    from etc_ros.core.paths import config_path
    from etc_ros.nodes.graph import NODE_PARAMS, PARAM_FILES, GraphConfigError, node_parameters, read_param_file

    for node, fname in PARAM_FILES.items():
        sections = read_param_file(config_path(fname))
        assert set(sections) == {node}, fname
        for k, v in sections[node].items():
            assert k in NODE_PARAMS[node], f"{fname}: {k} not declared by {node}"
            d = NODE_PARAMS[node][k]
            assert type(v) is type(d), f"{fname}: {k}={v!r} has type {type(v).__name__}, node declares " \
                                       f"{type(d).__name__} (ros2 launch would refuse it)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("safety_node:\n  ros__parameters:\n    servo_hz: 50.0\n    max_speed: 3\n")
    with pytest.raises(GraphConfigError, match="max_speed"):
        node_parameters("safety_node", [str(bad)])
    bad.write_text("safety_node:\n  servo_hz: 50.0\n")
    with pytest.raises(GraphConfigError, match="ros__parameters"):
        node_parameters("safety_node", [str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text("/**:\n  ros__parameters:\n    diagnostics_hz: 2\n"
                    "safety_node:\n  ros__parameters:\n    servo_hz: 100\n")
    p = node_parameters("safety_node", [str(config_path("ros_safety.yaml")), str(good)], {"dry_run": "true"})
    assert p["servo_hz"] == 100.0 and isinstance(p["servo_hz"], float)
    assert p["diagnostics_hz"] == 2.0 and p["dry_run"] is True
    bad.write_text("safety_node:\n  ros__parameters:\n    control_hz: 50.0\n")  # renamed: the new name is given
    with pytest.raises(GraphConfigError, match="'control_hz' was renamed to 'servo_hz'"):
        node_parameters("safety_node", [str(bad)])
    with pytest.raises(GraphConfigError, match="'control_hz' was renamed to 'servo_hz'"):
        node_parameters("safety_node", [], {"control_hz": 50.0})


def test_parameter_files_are_generated_from_graph_params(tmp_path, capsys):
    """config/ros_<node>.yaml are exactly what graph.param_file_text() writes from PARAMS (a hand edit fails here;
    the fix is `etc-vla ros params --write`), and they read back as NODE_PARAMS, values and types."""
    from etc_ros.core.paths import config_path
    from etc_ros.nodes.graph import (
        NODE_PARAMS,
        PARAM_FILES,
        PARAMS,
        param_file_text,
        param_files_out_of_date,
        read_param_file,
    )
    from etc_training.cli import main

    assert set(PARAM_FILES) == set(PARAMS) == set(NODE_PARAMS)
    for node, fname in PARAM_FILES.items():
        assert config_path(fname).read_text() == param_file_text(node), \
            f"config/{fname} is not generated from etc_ros/nodes/graph.py PARAMS: run etc-vla ros params --write"
        back = read_param_file(config_path(fname))[node]
        assert back == NODE_PARAMS[node] and list(back) == list(PARAMS[node])
        assert all(type(back[k]) is type(v) for k, v in NODE_PARAMS[node].items())
    assert param_files_out_of_date() == []
    (tmp_path / PARAM_FILES["safety_node"]).write_text("safety_node:\n  ros__parameters:\n    servo_hz: 40.0\n")
    assert main(["ros", "params", "--dir", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["ros", "params", "--dir", str(tmp_path), "--write"]) == 0
    assert param_files_out_of_date(tmp_path) == []
    assert main(["ros", "params", "--dir", str(tmp_path)]) == 0


def test_interbotix_backend_against_a_stub_of_its_api(monkeypatch):
    """The real package is not installed here: a stub with the documented API checks the calls we make."""
    from interbotix_stub import install_interbotix_stub, xs_finger_from_angle

    calls, inits = [], []
    install_interbotix_stub(monkeypatch, calls, inits)

    asked = []
    absent = make_backend("interbotix", service_probe=lambda name, t: asked.append((name, t)) or False)
    with pytest.raises(DriverError, match=r"xs_sdk is not running: service /wx250s/get_robot_info .*xsarm_control"):
        absent.start()  # the upstream constructor would have waited forever
    assert asked == [("/wx250s/get_robot_info", 10.0)] and not calls
    import signal

    import rclpy

    assert not rclpy.ok()
    handler = signal.getsignal(signal.SIGINT)
    from etc_ros.nodes.common import init_default_context_without_signal_handlers

    b = make_backend("interbotix", moving_time=0.04, accel_time=0.02, service_probe=lambda name, t: True,
                     prepare_ros=init_default_context_without_signal_handlers,  # what the driver node passes
                     gripper_mode="binary")
    try:
        b.start()
        # the default context was up before upstream looked (so it skipped its own init), and without rclpy's
        # signal handlers: SIGINT stays with the executable, which parks the arm on the living context
        assert inits == [(True, False)] and rclpy.ok()
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    assert calls[0] == ("init", "wx250s", "arm", "gripper", 0.04, 0.02)
    # the profile reached the servos (upstream alone would leave the 2000 / 300 ms startup profile)
    assert calls[1] == ("modes", "group", "arm", "position", "time")
    assert b.bot.core.registers == {"Profile_Velocity": 40, "Profile_Acceleration": 20}
    # binary: the gripper explicitly in PWM mode (xs_sdk keeps the mode an earlier run left)
    assert calls[2] == ("modes", "single", "gripper", "pwm", "velocity")
    q, g = b.read()
    assert np.allclose(q, robot_spec.SLEEP_POSE)
    assert abs(g - robot_spec.gripper_from_finger(xs_finger_from_angle(0.0))) < 1e-9
    b.command(robot_spec.READY_POSE, 1.0)
    b.command(robot_spec.READY_POSE, 0.9)  # still open: no second gripper call
    b.command(robot_spec.READY_POSE, 0.1)
    assert b.bot.core.registers == {"Profile_Velocity": 40, "Profile_Acceleration": 20}
    kinds = [c[0] for c in calls]
    assert kinds == ["init", "modes", "modes", "arm", "release", "arm", "arm", "grasp"]
    assert b.bot.core.gripper_goals == [("pwm", 250.0), ("pwm", -250.0)]  # efforts, read as efforts
    assert calls[3][4] is False and np.allclose(calls[3][1], robot_spec.READY_POSE)  # streamed, non-blocking
    b.command(np.array([4.0, 0, 0, 0, 0, 0]), 0.1)  # refused by the API itself: counted, not remembered
    assert b.api_refusals == 1 and np.allclose(b._q_cmd, robot_spec.READY_POSE)
    b.stop()
    assert calls[-1] == ("destroy_node",) and ("rclpy.shutdown",) not in calls  # never the shared context


def test_policy_spec_contract():
    """PolicySpec (etc_ros.policy.interface) replaces the 'dict spec or object spec' look-ups: one typed spec, read
    from a bundle's spec.json (control_hz = the policy rate), with the robot defaults for missing keys."""
    import dataclasses
    import json

    from etc_ros.policy.interface import PolicySpec, PolicySpecError

    s = PolicySpec(cameras=("primary", "wrist"), policy_hz=10.0)
    assert s.cameras == ("primary", "wrist") and s.policy_hz == 10.0 and s.horizon == robot_spec.CHUNK_HORIZON
    assert s.action_names == robot_spec.ACTION_NAMES and s.action_dim == robot_spec.ACTION_DIM
    assert s.state_dim == robot_spec.STATE_DIM
    assert s.image_size == (robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE) and s.providers == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.policy_hz = 1.0  # type: ignore[misc]
    m = PolicySpec.from_mapping({"cameras": {"primary": {}}})  # a {name: ...} mapping of cameras, no rate
    assert m.cameras == ("primary",) and m.policy_hz == robot_spec.POLICY_HZ
    for bad in ({"control_hz": 0}, {"control_hz": float("nan")}, {"control_hz": "fast"}, {"cameras": []},
                {"cameras": ["a", "a"]}, {"horizon": 0}, {"image_size": [224]},
                {"action_names": ["x"], "action_dim": 7}):
        with pytest.raises(PolicySpecError):
            PolicySpec.from_mapping(bad)
    with pytest.raises(PolicySpecError):
        PolicySpec.from_mapping(["primary"])  # type: ignore[arg-type]
    with open("policies/sim_pickup/spec.json") as f:
        raw = json.load(f)
    b = PolicySpec.from_mapping(raw)  # a shipped bundle's spec.json
    assert b.cameras == tuple(raw["cameras"]) and b.policy_hz == raw["control_hz"] and b.horizon == raw["horizon"]
    assert b.image_size == tuple(raw["image_size"]) and b.action_names == tuple(raw["action_names"])
    assert b.extra["head"] == raw["head"] and PolicySpec.from_mapping(b.to_dict()) == b
    assert {k: v for k, v in b.to_dict().items() if k in raw} == {k: v for k, v in raw.items() if k != "providers"}
    fake = make_fake_runtime("circle", cameras=("primary", "wrist"), control_hz=4.0)
    assert fake.spec.cameras == ("primary", "wrist") and fake.spec.policy_hz == 4.0 and fake.spec.horizon == 10
