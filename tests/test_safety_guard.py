"""JointCommandGuard: the driver refuses commands outside the limits even if they bypass the filter."""
from __future__ import annotations

import numpy as np
import pytest

from etc_ros.core.errors import SafetyError
from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.core.spec import READY_POSE, SafetyLimits
from etc_ros.core.transforms3d import xyzrpy_to_pose
from etc_ros.safety import JointCommandGuard, SafetyExecutor

KIN = WidowXKinematics.from_urdf()
LIMITS = SafetyLimits()
GUARD = JointCommandGuard(LIMITS, KIN)
Q = KIN.ik(xyzrpy_to_pose(np.array([0.25, 0.0, 0.1, 0.0, np.pi / 2, 0.0])), READY_POSE, margin=0.06).q
DT = 0.02


def test_accepts_a_safe_pose_and_a_small_step():
    assert GUARD.check(Q) == (True, "ok")
    q1 = Q + 0.5 * LIMITS.max_joint_velocity * DT
    assert GUARD.check(q1, Q, DT) == (True, "ok")
    assert GUARD.check(q1, Q, DT, v_prev=(q1 - Q) / DT) == (True, "ok")


@pytest.mark.parametrize("q_cmd, word", [
    (np.zeros(5), "shape"), ([0.0] * 7, "shape"), ("abc", "numeric"), ([[0.0] * 6], "shape"),
    (np.array([np.nan, 0, 0, 0, 0, 0]), "NaN"), (np.full(6, np.inf), "NaN"),
])
def test_refuses_malformed_commands(q_cmd, word):
    ok, reason = GUARD.check(q_cmd)
    assert not ok and word in reason


def test_refuses_joint_limits_with_margin():
    q = Q.copy()
    q[4] = KIN.upper[4] - LIMITS.joint_margin / 2  # inside the URDF range but inside the margin
    ok, reason = GUARD.check(q)
    assert not ok and "joint 4" in reason
    q[4] = KIN.upper[4] + 1.0
    assert not GUARD.check(q)[0]


def test_refuses_end_effector_outside_the_box():
    q = np.zeros(6)  # home pose: EE at (0.46, 0, 0.36)
    assert KIN.within_limits(q, LIMITS.joint_margin)
    ok, reason = GUARD.check(q)
    assert not ok and "workspace" in reason


def test_refuses_velocity_and_acceleration():
    step = LIMITS.max_joint_velocity * DT
    q1 = Q.copy()
    q1[2] += 1.01 * step
    ok, reason = GUARD.check(q1, Q, DT)
    assert not ok and "velocity" in reason
    q1[2] = Q[2] + 0.9 * step
    assert GUARD.check(q1, Q, DT)[0]
    ok, reason = GUARD.check(q1, Q, DT, v_prev=np.zeros(6))  # 0 -> 2.8 rad/s in one tick
    assert not ok and "acceleration" in reason
    assert not GUARD.check(q1, Q, 0.0)[0] and not GUARD.check(q1, Q, float("nan"))[0]


def test_gripper_range():
    assert GUARD.check_gripper(0.5) == (True, "ok")
    for g in (-0.1, 1.1, float("nan"), "x"):
        assert not GUARD.check_gripper(g)[0]


def test_stateful_accept_counts_and_keeps_last_good_command():
    g = JointCommandGuard(LIMITS, KIN, min_dt=DT)
    g.reset(Q, 0.0)  # at rest on the measured joints
    ok, reason = g.accept(Q + 0.01, DT)  # 0 -> 0.5 rad/s in one tick: 25 rad/s^2
    assert not ok and "acceleration" in reason
    ok, reason = g.accept(np.zeros(6), 2 * DT)
    assert not ok and "workspace" in reason
    assert g.refused == {"acceleration": 1, "workspace": 1}
    assert g.accept(Q + 0.001, 3 * DT)[0]  # checked against the last ACCEPTED command (Q at t = 0)


def test_stateful_accept_without_history_builds_it_up():
    g = JointCommandGuard(LIMITS, KIN, min_dt=DT)
    assert g.accept(Q, 0.0)[0]  # no history: position and workspace only
    assert g.accept(Q + 0.01, DT)[0]  # velocity 0.5 rad/s checked, no previous velocity yet
    ok, reason = g.accept(Q + 0.05, 2 * DT)  # 0.5 -> 2 rad/s in a tick
    assert not ok and "acceleration" in reason
    ok, reason = g.accept(Q + 0.01, float("nan"))
    assert not ok and g.refused["time"] == 1


def test_guard_accepts_every_command_the_executor_produces():
    ex = SafetyExecutor(KIN, LIMITS)
    ex.reset(Q, 1.0, 0.0)
    g = JointCommandGuard(LIMITS, KIN)
    g.reset(Q, 0.0)
    chunk = np.zeros((10, 7))
    chunk[:, 0], chunk[:, 2], chunk[:, 5], chunk[:, 6] = 0.05, 0.03, 0.1, 0.2
    t, n = 0.0, 0
    for i in range(1, 151):  # 3 s: runs into the box faces
        t = i * DT
        if i % 10 == 1:
            ex.submit_chunk(chunk, t - 0.03, t)
        c = ex.tick(t, camera_stamp=t)
        ok, reason = g.accept(c.q, t, dt=c.dt)
        assert ok, (i, reason)
        assert g.check_gripper(c.gripper)[0]
        n += not c.holding
    assert n > 100


def test_bad_construction():
    with pytest.raises(SafetyError):
        JointCommandGuard(LIMITS, KIN, accel_slack=0.5)
    with pytest.raises(SafetyError):
        JointCommandGuard(LIMITS, KIN).reset(np.zeros(3), 0.0)
