"""WidowX 250 6DOF kinematics (FK chain vs PoE, Jacobian, IK, Bridge actions) and the transform helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etc_ros.core import spec as robot_spec
from etc_ros.core import transforms3d as tf
from etc_ros.core.errors import KinematicsError, UserError
from etc_ros.core.kinematics import IKResult, WidowXKinematics, action_between, apply_action

HYP = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def kin():
    return WidowXKinematics.from_urdf()


def _pose_errors(T, T_ref):
    return (float(np.linalg.norm(T[:3, 3] - T_ref[:3, 3])),
            float(tf.rotation_angle(T_ref[:3, :3] @ T[:3, :3].T)))


# ---------------------------------------------------------------------------------------------------------------
# transforms3d
def test_euler_sxyz_convention_and_round_trip():
    r, p, y = 0.3, -0.4, 1.2
    R = tf.euler_to_matrix(r, p, y)
    np.testing.assert_allclose(R, tf.rot_z(y) @ tf.rot_y(p) @ tf.rot_x(r), atol=1e-12)
    np.testing.assert_allclose(tf.euler_to_matrix([r, p, y]), R, atol=1e-15)
    np.testing.assert_allclose(tf.matrix_to_euler(R), [r, p, y], atol=1e-12)
    rng = np.random.default_rng(0)
    rpy = np.stack([rng.uniform(-math.pi, math.pi, 500), rng.uniform(-1.5, 1.5, 500),
                    rng.uniform(-math.pi, math.pi, 500)], -1)
    np.testing.assert_allclose(tf.matrix_to_euler(tf.euler_to_matrix(rpy)), rpy, atol=1e-9)
    # gimbal lock: the matrix is still reproduced exactly
    for pitch in (math.pi / 2, -math.pi / 2):
        R = tf.euler_to_matrix(0.7, pitch, -0.2)
        e = tf.matrix_to_euler(R)
        assert e[2] == 0.0 and abs(e[1] - pitch) < 1e-9
        np.testing.assert_allclose(tf.euler_to_matrix(e), R, atol=1e-9)


def test_so3_and_se3_exp_log_round_trip():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(300, 3))
    w *= (rng.uniform(0, math.pi - 1e-6, 300) / np.linalg.norm(w, axis=1))[:, None]
    R = tf.so3_exp(w)
    assert tf.is_rotation(R)
    np.testing.assert_allclose(tf.so3_log(R), w, atol=1e-8)
    # near and at pi, and tiny angles
    for ang in (math.pi, math.pi - 1e-7, math.pi - 1e-4, 1e-9, 0.0):
        axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
        Rk = tf.axis_angle_to_matrix(axis, ang)
        np.testing.assert_allclose(tf.so3_exp(tf.so3_log(Rk)), Rk, atol=1e-9)
        assert tf.rotation_angle(Rk) == pytest.approx(ang, abs=1e-7)
    xi = np.concatenate([w, rng.normal(size=(300, 3))], -1)
    T = tf.se3_exp(xi)
    np.testing.assert_allclose(tf.se3_log(T), xi, atol=1e-7)
    np.testing.assert_allclose(tf.se3_exp(tf.se3_log(T)), T, atol=1e-9)
    # pure translation
    np.testing.assert_allclose(tf.se3_exp([0, 0, 0, 1, 2, 3])[:3, 3], [1, 2, 3])
    # se3_exp agrees with the matrix exponential of the hat matrix
    from scipy.linalg import expm
    np.testing.assert_allclose(tf.se3_exp(xi[7]), expm(tf.se3_hat(xi[7])), atol=1e-10)


def test_adjoint_quaternion_pose_helpers():
    rng = np.random.default_rng(2)
    T = tf.xyzrpy_to_pose([0.1, -0.2, 0.3, 0.4, -0.5, 0.6])
    np.testing.assert_allclose(tf.pose_to_xyzrpy(T), [0.1, -0.2, 0.3, 0.4, -0.5, 0.6], atol=1e-12)
    xi = rng.normal(size=6)
    np.testing.assert_allclose(tf.se3_hat(tf.adjoint(T) @ xi), T @ tf.se3_hat(xi) @ tf.invert_transform(T), atol=1e-12)
    np.testing.assert_allclose(tf.invert_transform(T) @ T, np.eye(4), atol=1e-12)
    R = tf.euler_to_matrix(rng.uniform(-3, 3, size=(50, 3)))
    q = tf.matrix_to_quat(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(tf.quat_to_matrix(q), R, atol=1e-9)
    np.testing.assert_allclose(tf.quat_to_matrix([0, 0, math.sin(0.5), math.cos(0.5)]), tf.rot_z(1.0), atol=1e-12)
    np.testing.assert_allclose(tf.wrap_angle(np.array([3 * math.pi, -3.5 * math.pi, 0.1])),
                               [-math.pi, 0.5 * math.pi, 0.1])
    assert isinstance(tf.wrap_angle(7.0), float)
    with pytest.raises(tf.TransformError):
        tf.so3_exp([1.0, 2.0])
    with pytest.raises(tf.TransformError, match="non-finite"):
        tf.euler_to_matrix(float("nan"), 0.0, 0.0)
    with pytest.raises(UserError):
        tf.quat_to_matrix([0, 0, 0, 0])


def test_nearest_rotation_and_mean_transform():
    rng = np.random.default_rng(3)
    R = tf.so3_exp(rng.normal(size=(20, 3)))
    np.testing.assert_allclose(tf.nearest_rotation(R), R, atol=1e-12)  # a rotation is its own nearest rotation
    noisy = R + rng.normal(0.0, 1e-3, R.shape)
    near = tf.nearest_rotation(noisy)
    assert tf.is_rotation(near)
    assert np.all(np.asarray(tf.rotation_angle(np.swapaxes(near, -1, -2) @ R)) < 5e-3)
    # orthogonal Procrustes: no other rotation is closer to M than nearest_rotation(M)
    M = rng.normal(size=(3, 3))
    best = np.linalg.norm(tf.nearest_rotation(M) - M)
    assert all(np.linalg.norm(Rk - M) >= best - 1e-12 for Rk in tf.so3_exp(rng.normal(size=(500, 3))))
    # a reflection (det < 0) still gives a proper rotation
    assert tf.is_rotation(tf.nearest_rotation(np.diag([1.0, 1.0, -1.0])))
    # mean of transforms: rotations spread symmetrically about one rotation average to it; translations average
    R0 = tf.euler_to_matrix(0.2, -0.3, 0.4)
    Ts = np.stack([tf.make_transform(R0 @ tf.so3_exp(s * np.array([0.0, 0.0, 0.1])), [s, 2 * s, 1.0])
                   for s in (-1.0, 1.0)])
    m = tf.mean_transform(Ts)
    np.testing.assert_allclose(m[:3, :3], R0, atol=1e-12)
    np.testing.assert_allclose(m[:3, 3], [0.0, 0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(m[3], [0, 0, 0, 1])
    np.testing.assert_allclose(tf.mean_transform([Ts[0]]), Ts[0], atol=1e-12)
    with pytest.raises(tf.TransformError):
        tf.mean_transform(np.zeros((0, 4, 4)))
    with pytest.raises(tf.TransformError, match="non-finite"):
        tf.nearest_rotation(np.full((3, 3), np.nan))


# ---------------------------------------------------------------------------------------------------------------
# model read from the URDF
WIDOWX_SCREWS = np.array([  # /work/shared/facts/widowx.md
    [0, 0, 1, 0, 0, 0],
    [0, 1, 0, -0.11065, 0, 0],
    [0, 1, 0, -0.36065, 0, 0.04975],
    [1, 0, 0, 0, 0.36065, 0],
    [0, 1, 0, -0.36065, 0, 0.29975],
    [1, 0, 0, 0, 0.36065, 0],
])


def test_model_attributes_from_urdf(kin):
    assert kin.joint_names == robot_spec.JOINT_NAMES
    np.testing.assert_allclose(kin.lower, [-3.1415827, -1.8849556, -2.1467550, -3.1415827, -1.7453293, -3.1415827])
    np.testing.assert_allclose(kin.upper, [3.1415827, 1.9896753, 1.6057029, 3.1415827, 2.1467550, 3.1415827])
    np.testing.assert_allclose(kin.velocity_limits, math.pi, atol=1e-6)
    assert kin.finger_limits == pytest.approx((robot_spec.FINGER_CLOSED, robot_spec.FINGER_OPEN))


def test_zero_pose_and_screw_axes_match_facts(kin):
    T0 = kin.fk(np.zeros(6))
    np.testing.assert_allclose(T0[:3, 3], [0.458325, 0.0, 0.36065], atol=1e-9)
    np.testing.assert_allclose(T0[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(kin.M, T0, atol=1e-12)
    assert kin.screw_axes.shape == (6, 6)
    np.testing.assert_allclose(kin.screw_axes, WIDOWX_SCREWS, atol=1e-6)
    np.testing.assert_allclose(kin.fk_link(np.zeros(6), "ee_arm_link")[:3, 3], [0.40775, 0.0, 0.36065], atol=1e-9)


def test_fk_chain_matches_poe_on_random_configurations(kin):
    qs = kin.random_configurations(200, rng=3)
    assert kin.within_limits(qs).all()
    T_chain, T_poe = kin.fk(qs), kin.fk_poe(qs)
    assert T_chain.shape == (200, 4, 4)
    np.testing.assert_allclose(T_chain, T_poe, atol=1e-6)
    for q, T in zip(qs[:20], T_chain[:20]):  # the batched and single paths agree
        np.testing.assert_allclose(kin.fk(q), T, atol=1e-12)
        np.testing.assert_allclose(kin.fk_poe(q), T, atol=1e-9)
    # and both agree with composing the URDF joints one by one (independent code path)
    q = qs[0]
    T = np.eye(4)
    for j in kin.model.chain("base_link", "ee_gripper_link"):
        T = T @ j.transform(float(q[kin.joint_names.index(j.name)]) if j.name in kin.joint_names else 0.0)
    np.testing.assert_allclose(kin.fk(q), T, atol=1e-12)


def test_fk_link_and_fk_all(kin):
    q = np.array([0.3, -0.2, 0.4, 0.5, 0.6, -0.7])
    np.testing.assert_allclose(kin.fk_link(q, "ee_gripper_link"), kin.fk(q), atol=1e-12)
    np.testing.assert_allclose(kin.fk_link(q, "base_link"), np.eye(4))
    # the waist only rotates the shoulder about z
    Ts = kin.fk_link(q, "shoulder_link")
    np.testing.assert_allclose(Ts[:3, 3], [0, 0, 0.072], atol=1e-12)
    np.testing.assert_allclose(Ts[:3, :3], tf.rot_z(0.3), atol=1e-12)
    allp = kin.fk_all(q, extra={"left_finger": 0.03})
    assert set(allp) == set(kin.model.links)
    for name in ("wrist_link", "left_finger_link", "right_finger_link"):
        np.testing.assert_allclose(allp[name], kin.fk_link(q, name, extra={"left_finger": 0.03}), atol=1e-12)
    # fingers open symmetrically about ee_gripper_link's x-z plane (mimic -1), 2 x 0.03 apart
    G = tf.invert_transform(kin.fk_link(q, "fingers_link"))
    left, right = (G @ allp["left_finger_link"])[:3, 3], (G @ allp["right_finger_link"])[:3, 3]
    np.testing.assert_allclose(left, [0, 0.03, 0], atol=1e-12)
    np.testing.assert_allclose(right, [0, -0.03, 0], atol=1e-12)
    # default finger value is clipped into the limits (closed)
    assert kin.joint_values(q)["left_finger"] == pytest.approx(robot_spec.FINGER_CLOSED)
    with pytest.raises(KinematicsError, match="unknown link 'hand'"):
        kin.fk_link(q, "hand")
    with pytest.raises(KinematicsError, match="unknown joint"):
        kin.fk_all(q, extra={"thumb": 0.1})


def test_bad_joint_vectors_are_rejected(kin):
    with pytest.raises(KinematicsError, match="6 joint values"):
        kin.fk([0.0] * 5)
    with pytest.raises(KinematicsError, match="non-finite"):
        kin.fk([0, 0, float("nan"), 0, 0, 0])
    with pytest.raises(KinematicsError, match="rigid transform"):
        kin.ik(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(KinematicsError, match="4x4"):
        kin.ik(np.eye(3))


# ---------------------------------------------------------------------------------------------------------------
# Jacobians
def test_space_jacobian_matches_finite_differences(kin):
    h = 1e-6
    for q in kin.random_configurations(10, rng=4):
        J = kin.jacobian_space(q)
        assert J.shape == (6, 6)
        Tinv = tf.invert_transform(kin.fk(q))
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = h
            dT = (kin.fk(q + dq) - kin.fk(q - dq)) / (2 * h)
            xi_hat = dT @ Tinv  # spatial twist of joint i (unit rate)
            twist = np.concatenate([tf.unskew(xi_hat[:3, :3]), xi_hat[:3, 3]])
            np.testing.assert_allclose(J[:, i], twist, atol=1e-6)
        # geometric Jacobian: linear rows = derivative of the EE position
        Jg = kin.jacobian_geometric(q)
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = h
            dp = (kin.fk(q + dq)[:3, 3] - kin.fk(q - dq)[:3, 3]) / (2 * h)
            np.testing.assert_allclose(Jg[3:, i], dp, atol=1e-6)
            np.testing.assert_allclose(Jg[:3, i], J[:3, i], atol=1e-12)
    # batched Jacobian equals the single ones
    qs = kin.random_configurations(5, rng=5)
    np.testing.assert_allclose(kin.jacobian_space(qs), np.stack([kin.jacobian_space(q) for q in qs]), atol=1e-12)
    np.testing.assert_allclose(kin.jacobian_space(np.zeros(6)).T, WIDOWX_SCREWS, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# inverse kinematics
def test_ik_round_trip_success_rate_and_correctness(kin):
    qs = kin.random_configurations(150, rng=6, margin=0.1)
    n_ok = 0
    for q in qs:
        T = kin.fk(q)
        res = kin.ik(T)
        assert isinstance(res, IKResult)
        assert kin.within_limits(res.q)
        pe, re = _pose_errors(kin.fk(res.q), T)
        assert pe == pytest.approx(res.pos_error, abs=1e-12) and re == pytest.approx(res.rot_error, abs=1e-9)
        if res.success:
            n_ok += 1
            assert pe <= 1e-3 and re <= 1e-3, "success reported for a wrong pose"
        else:
            assert pe > 1e-3 or re > 1e-3
    assert n_ok / len(qs) >= 0.95


def test_ik_from_nearby_seed_stays_on_branch(kin):
    rng = np.random.default_rng(7)
    for q in kin.random_configurations(20, rng=8, margin=0.2):
        seed = q + rng.normal(scale=0.05, size=6)
        res = kin.ik(kin.fk(q), seed, seeds=(), pos_tol=1e-6, rot_tol=1e-6)
        assert res.success and res.seed_index == 0
        np.testing.assert_allclose(res.q, q, atol=1e-4)


def test_ik_unreachable_targets_fail_cleanly(kin):
    far = tf.make_transform(np.eye(3), [2.0, 0.0, 0.3])
    res = kin.ik(far)
    assert not res.success and "reach" in res.message
    assert kin.within_limits(res.q) and res.pos_error > 1.0
    # within the reach bound but below the table, behind the robot: no in-limit solution
    res = kin.ik_position_orientation([-0.05, 0.0, -0.35], [0.0, 0.0, 0.0])
    assert not res.success and "no solution" in res.message
    assert kin.within_limits(res.q)
    assert max(res.pos_error / 1e-3, res.rot_error / 1e-3) > 1.0


def test_ik_respects_margin_and_limits(kin):
    # a target whose natural solution has wrist_angle near its upper limit
    q = np.array([0.2, -0.5, 0.3, 0.0, kin.upper[4] - 0.02, 0.1])
    T = kin.fk(q)
    res = kin.ik(T, margin=0.0)
    assert res.success and kin.within_limits(res.q)
    # with a 0.1 rad margin this pose has no solution: the best attempt stays inside the shrunk limits
    res_m = kin.ik(T, q, margin=0.1)
    assert not res_m.success and kin.within_limits(res_m.q, margin=0.1)
    assert res_m.q[4] == pytest.approx(kin.upper[4] - 0.1)
    with pytest.raises(KinematicsError, match="margin"):
        kin.ik(T, margin=4.0)


@HYP
@given(x=st.floats(-0.5, 0.6), y=st.floats(-0.5, 0.5), z=st.floats(-0.3, 0.7),
       rpy=st.tuples(st.floats(-3.1, 3.1), st.floats(-1.5, 1.5), st.floats(-3.1, 3.1)))
def test_ik_never_reports_success_for_a_wrong_pose(kin, x, y, z, rpy):
    T = tf.xyzrpy_to_pose([x, y, z, *rpy])
    res = kin.ik(T, seeds=kin.default_seeds(T, n_random=2), max_iters=40)
    assert kin.within_limits(res.q)
    pe, re = _pose_errors(kin.fk(res.q), T)
    assert res.success == (pe <= 1e-3 and re <= 1e-3)


def test_ik_position_orientation_matches_ik(kin):
    q = np.array(robot_spec.READY_POSE) + 0.1
    T = kin.fk(q)
    xyzrpy = tf.pose_to_xyzrpy(T)
    res = kin.ik_position_orientation(xyzrpy[:3], xyzrpy[3:], q_seed=robot_spec.READY_POSE)
    assert res.success
    assert _pose_errors(kin.fk(res.q), T)[0] <= 1e-3
    with pytest.raises(KinematicsError):
        kin.ik_position_orientation([0.3, 0.0], [0, 0, 0])


# ---------------------------------------------------------------------------------------------------------------
# READY_POSE
def test_ready_pose(kin):
    T = kin.fk(robot_spec.READY_POSE)
    p = T[:3, 3]
    assert 0.25 <= p[0] <= 0.30 and abs(p[1]) < 1e-6 and 0.12 <= p[2] <= 0.20
    np.testing.assert_allclose(T[:3, 0], [0, 0, -1], atol=1e-3)  # gripper points straight down
    assert robot_spec.WorkspaceBox().contains(p)
    assert kin.within_limits(robot_spec.READY_POSE, margin=robot_spec.SafetyLimits().joint_margin)


# ---------------------------------------------------------------------------------------------------------------
# Bridge actions
def test_apply_action_semantics():
    T = tf.xyzrpy_to_pose([0.3, 0.05, 0.1, 0.2, 1.0, -0.4])
    a = np.array([0.01, -0.02, 0.03, 0.0, 0.0, 0.1, 1.0])
    T1 = apply_action(T, a)
    np.testing.assert_allclose(T1[:3, 3], T[:3, 3] + a[:3], atol=1e-15)
    np.testing.assert_allclose(T1[:3, :3], tf.rot_z(0.1) @ T[:3, :3], atol=1e-12)  # yaw about base z, left-multiplied
    a2 = np.array([0, 0, 0, 0.1, -0.2, 0.15])  # 6-D works, R_delta = euler_sxyz(droll, dpitch, dyaw)
    np.testing.assert_allclose(apply_action(T, a2)[:3, :3], tf.euler_to_matrix(0.1, -0.2, 0.15) @ T[:3, :3], atol=1e-12)
    np.testing.assert_allclose(apply_action(T, a2)[:3, 3], T[:3, 3])  # rotation about the EE origin
    with pytest.raises(KinematicsError, match="6 or 7"):
        apply_action(T, [0.0, 0.0])


@HYP
@given(pose=st.tuples(*[st.floats(-0.4, 0.4)] * 3, st.floats(-3.1, 3.1), st.floats(-1.5, 1.5), st.floats(-3.1, 3.1)),
       act=st.tuples(*[st.floats(-0.05, 0.05)] * 3, *[st.floats(-0.25, 0.25)] * 3, st.floats(0, 1)))
def test_action_round_trip_property(pose, act):
    T0 = tf.xyzrpy_to_pose(pose)
    a = np.array(act)
    T1 = apply_action(T0, a)
    back = action_between(T0, T1, a[6])
    np.testing.assert_allclose(back, a, atol=1e-9)
    np.testing.assert_allclose(apply_action(T0, back), T1, atol=1e-12)


def test_action_between_batched_and_exact_inverse():
    rng = np.random.default_rng(9)
    T0 = tf.xyzrpy_to_pose(rng.uniform(-1, 1, size=(30, 6)))
    T1 = tf.xyzrpy_to_pose(rng.uniform(-3, 3, size=(30, 6)))  # arbitrary (large) relative motions
    a = action_between(T0, T1, np.linspace(0, 1, 30))
    assert a.shape == (30, 7)
    np.testing.assert_allclose(apply_action(T0, a), T1, atol=1e-9)
    np.testing.assert_allclose(a[:, 6], np.linspace(0, 1, 30))


def test_action_to_joint_targets_reproduces_the_commanded_delta(kin):
    q0 = np.array(robot_spec.READY_POSE)
    T0 = kin.fk(q0)
    for a in ([0.02, -0.03, 0.01, 0.1, -0.05, 0.2, 0.3], [0.0, 0.0, -0.04, 0.0, 0.0, 0.0, 1.0],
              [-0.05, 0.05, 0.0, -0.2, 0.2, -0.25, 0.0]):
        a = np.array(a)
        q1, g, res = kin.action_to_joint_targets(q0, a)
        assert res.success and g == pytest.approx(a[6])
        assert kin.within_limits(q1)
        pe, re = _pose_errors(kin.fk(q1), apply_action(T0, a))
        assert pe <= 1e-3 and re <= 1e-3
        np.testing.assert_allclose(kin.joint_targets_to_action(q0, q1, a[6])[:3], a[:3], atol=1e-3)
        np.testing.assert_allclose(kin.joint_targets_to_action(q0, q1, a[6])[3:6], a[3:6], atol=2e-3)
        assert np.max(np.abs(q1 - q0)) < 0.6  # stays on the current branch
    # clipping to the Bridge limits
    q1, g, res = kin.action_to_joint_targets(q0, [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.7])
    assert res.success and g == 1.0
    assert kin.fk(q1)[0, 3] - T0[0, 3] == pytest.approx(robot_spec.MAX_DELTA_XYZ, abs=1e-3)
    q1, g, res = kin.action_to_joint_targets(q0, [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], clip=False)
    assert res.success and kin.fk(q1)[0, 3] - T0[0, 3] == pytest.approx(0.1, abs=1e-3)
    # workspace clip: z is held at the box floor
    box = robot_spec.WorkspaceBox()
    q_low = kin.ik_position_orientation([0.3, 0.0, box.low[2] + 0.01], [0, math.pi / 2, 0], q_seed=q0).q
    q1, _, res = kin.action_to_joint_targets(q_low, [0, 0, -0.05, 0, 0, 0, 1], workspace=box)
    assert res.success and kin.fk(q1)[2, 3] == pytest.approx(box.low[2], abs=1e-3)
    with pytest.raises(KinematicsError, match="7 entries"):
        kin.action_to_joint_targets(q0, [0.0] * 6)


def test_action_to_joint_targets_holds_on_failure(kin):
    # an unclipped 1 m step is out of reach -> hold the current joints, report why
    q = np.array(robot_spec.READY_POSE)
    q_t, _, res = kin.action_to_joint_targets(q, [1.0, 0, 0, 0, 0, 0, 1], clip=False)
    assert not res.success and "reach" in res.message
    np.testing.assert_array_equal(q_t, q)
    # stretched out along x: 5 cm further is beyond the arm's reach as well
    stretched = kin.ik_position_orientation([0.65, 0.0, 0.2], [0, 0, 0], q_seed=np.zeros(6))
    assert stretched.success
    q_t, _, res = kin.action_to_joint_targets(stretched.q, [0.05, 0, 0, 0, 0, 0, 1])
    assert not res.success
    np.testing.assert_array_equal(q_t, stretched.q)


def test_joint_targets_to_action_batched(kin):
    qs = kin.random_configurations(11, rng=10, margin=0.2)
    acts = kin.joint_targets_to_action(qs[:-1], qs[1:], np.ones(10))
    assert acts.shape == (10, 7)
    np.testing.assert_allclose(apply_action(kin.fk(qs[:-1]), acts), kin.fk(qs[1:]), atol=1e-9)


def test_limit_helpers(kin):
    q = np.array([4.0, 0.0, -3.0, 0.0, 0.0, 0.0])
    assert not kin.within_limits(q)
    c = kin.clip_to_limits(q, margin=0.05)
    assert kin.within_limits(c, margin=0.05) and not kin.within_limits(c, margin=0.06)
    assert c[0] == pytest.approx(kin.upper[0] - 0.05) and c[2] == pytest.approx(kin.lower[2] + 0.05)
    assert kin.within_limits(np.zeros(6), margin=0.5)
    assert list(kin.within_limits(np.stack([q, np.zeros(6)]))) == [False, True]
