"""Control API of the sim (the robot driver's), determinism, scripted expert incl. retries."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from etc_ros.core.errors import UserError
from etc_ros.core.spec import READY_POSE
from etc_training.sim import SimConfig, SimEnv
from etc_training.sim.collect import run_episode
from etc_training.sim.expert import ScriptedExpert


@pytest.fixture(scope="module")
def env():
    e = SimEnv(render=False)
    yield e
    e.close()


@pytest.mark.parametrize("action", [
    [0.03, 0.0, 0.0, 0, 0, 0, 1.0],
    [0.0, -0.03, 0.0, 0, 0, 0, 1.0],
    [0.0, 0.0, -0.04, 0, 0, 0, 1.0],
    [-0.02, 0.02, 0.02, 0, 0, 0, 1.0],
])
def test_step_moves_the_ee_by_the_commanded_delta(env, action):
    obs = env.reset(seed=0)
    assert np.allclose(obs["state"][:6], READY_POSE, atol=1e-3) and obs["state"][6] > 0.95
    p0 = env.ee_pose()[:3]
    R0 = env.ee_matrix()[:3, :3]
    obs = env.step(np.array(action))
    assert env.last_ik.success
    d = obs["ee_pose"][:3] - p0
    a = np.asarray(action[:3])
    # one 0.2 s period covers ~92 % of the 0.25 s servo profile
    assert np.linalg.norm(d - a) <= 0.12 * np.linalg.norm(a) + 0.002
    env.advance(0.1)  # the profile finishes
    d = env.ee_pose()[:3] - p0
    assert np.linalg.norm(d - a) < 0.002  # within 2 mm
    R1 = env.ee_matrix()[:3, :3]
    assert np.degrees(np.arccos(np.clip((np.trace(R0.T @ R1) - 1) / 2, -1, 1))) < 1.0


def test_step_rotation_and_gripper(env):
    env.reset(seed=0)
    R0 = env.ee_matrix()[:3, :3]
    env.step(np.array([0, 0, 0, 0, 0, 0.2, 0.0]))
    env.advance(0.1)
    R1 = env.ee_matrix()[:3, :3]
    from etc_ros.core.transforms3d import euler_to_matrix

    assert np.allclose(R1, euler_to_matrix(0, 0, 0.2) @ R0, atol=0.01)  # base-frame yaw delta
    env.advance(0.3)
    assert env.joint_state()[1] < 0.05  # closed on nothing


def test_driver_level_api(env):
    env.reset(seed=1)
    q0, g0 = env.joint_state()
    target = q0 + np.array([0.2, -0.1, 0.1, 0.0, 0.1, -0.2])
    env.set_joint_targets(target, 0.5)
    t0 = env.time
    for _ in range(40):  # a 100 Hz driver loop, odd dt on purpose
        env.advance(0.0101)
    assert env.time - t0 == pytest.approx(0.404, abs=0.0021)  # remainders carried over
    q, g = env.joint_state()
    assert np.allclose(q, target, atol=0.01)
    assert g == pytest.approx(0.5, abs=0.05)
    obs = env.step_joint_targets(q0, 1.0)
    assert set(obs) == {"images", "state", "ee_pose", "timestamp"}
    assert obs["state"].shape == (7,) and obs["ee_pose"].shape == (6,)
    # targets beyond the URDF limits are clipped, not obeyed
    env.set_joint_targets(np.array([0, 5.0, 0, 0, 0, 0]), 1.0)
    env.advance(0.5)
    assert env.joint_state()[0][1] <= env.world.joint_range[1, 1] + 1e-3


def _stream_ramp(env, rate_hz=50.0, seconds=1.0, speed=0.5):
    """Stream goals along a joint-0 ramp at rate_hz (as the safety node does); returns the final lag [rad]."""
    env.reset(seed=1)
    q0, _ = env.joint_state()
    n = int(round(seconds * rate_hz))
    for i in range(1, n + 1):
        goal = q0.copy()
        goal[0] += speed * i / rate_hz
        env.set_joint_targets(goal, 1.0)
        env.advance(1.0 / rate_hz)
    return float(goal[0] - env.joint_state()[0][0])


def test_servo_profile_decides_how_a_streamed_command_is_tracked():
    """Each goal restarts the time-based profile: streamed at 50 Hz, the Bridge 0.25 s profile trails a 0.5 rad/s
    ramp by a large fraction of its travel, a profile of two command periods by about a period."""
    env = SimEnv(render=False)
    try:
        assert env.servo_profile == (0.25, 0.10)
        slow = _stream_ramp(env)
        env.set_servo_profile(0.04, 0.02)
        fast = _stream_ramp(env)  # kept across the reset
        assert env.servo_profile == (0.04, 0.02)
        assert slow > 0.25 and fast < 0.04, (slow, fast)
        for bad in ((0.0, 0.0), (0.04, 0.03), (float("nan"), 0.01), (0.1, -0.01)):
            with pytest.raises(UserError, match="servo profile"):
                env.set_servo_profile(*bad)
    finally:
        env.close()


def test_sim_driver_backend_writes_its_profile_to_the_servos():
    from etc_ros.robot.base import DriverError
    from etc_ros.robot.core import make_backend

    env = SimEnv(render=False)
    try:
        make_backend("sim", env=env, moving_time=0.05, accel_time=0.02)
        assert env.servo_profile == (0.05, 0.02)
        with pytest.raises(DriverError, match="moving_time"):
            make_backend("sim", env=env, moving_time=0.05, accel_time=0.04)
    finally:
        env.close()


def test_bad_inputs_raise_clear_errors(env):
    env.reset(seed=0)
    with pytest.raises(UserError, match="action"):
        env.step(np.zeros(6))
    with pytest.raises(UserError, match="action"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 1]))
    with pytest.raises(UserError, match="joint targets"):
        env.set_joint_targets(np.zeros(5), 1.0)
    with pytest.raises(UserError, match="gripper"):
        env.set_joint_targets(np.zeros(6), float("nan"))
    with pytest.raises(UserError, match="dt"):
        env.advance(-1.0)
    with pytest.raises(UserError, match="no object"):
        env.pose("golden teapot")
    with pytest.raises(UserError):
        SimEnv(render=False).step(np.zeros(7))  # no reset yet
    with pytest.raises(UserError, match="render=False"):
        env.render()


def test_same_seed_same_episode_bit_identical():
    cfg = SimConfig(max_steps=6)
    env = SimEnv(cfg, depth=True)
    a = run_episode(env, 1234, "train")
    b = run_episode(env, 1234, "train")
    env.close()
    env2 = SimEnv(cfg, depth=True)  # a fresh env (new GL context) too
    c = run_episode(env2, 1234, "train")
    d = run_episode(env2, 1235, "train")
    env2.close()
    for x in (b, c):
        assert np.array_equal(a.action, x.action)
        assert np.array_equal(a.state, x.state)
        assert np.array_equal(a.images["primary"], x.images["primary"])
        assert a.objects == x.objects and a.metadata == x.metadata
    assert not np.array_equal(a.images["primary"], d.images["primary"])


@pytest.mark.parametrize("family", ["pick_place", "pick_up", "push", "stack"])
def test_expert_solves_each_family(env, family):
    env.reset(seed=21, family=family)
    ex = ScriptedExpert(env, 21)
    while env.steps < env.cfg.max_steps:
        a = ex.act()
        if ex.done:
            break
        assert a.shape == (7,) and np.all(np.abs(a[:3]) <= 0.05) and np.all(np.abs(a[3:6]) <= 0.25)
        env.step(a)
    assert ex.done and env.is_success()
    names = [s["name"] for s in ex.finish(env.steps).subtasks]
    assert names[0] == f"approach the {env.task.object}"
    if family != "push":
        assert f"grasp the {env.task.object}" in names
        assert [e["type"] for e in ex.trace.gripper_events][:1] == ["close"]


def test_expert_retries_a_failed_grasp(env):
    env.reset(seed=3, family="pick_up")
    ex = ScriptedExpert(env, 3)
    moved = False
    while env.steps < env.cfg.max_steps:
        a = ex.act()
        if ex.done:
            break
        label = ex._phases[0].label if ex._phases else ""
        if not moved and label.startswith("grasp"):
            # snatch the object away just before the fingers close: the grasp fails
            pos, quat = env.pose(env.task.object)
            env.set_object_pose(env.task.object, pos + np.array([0.06, 0.03, 0.0]), quat)
            moved = True
        env.step(a)
    assert moved and ex.trace.retries >= 1
    assert env.is_success()
    assert "recover from a failed grasp" in [s["name"] for s in ex.finish(env.steps).subtasks]
