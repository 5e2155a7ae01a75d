"""Safety is a hard invariant: whatever the policy, the network or the clock do, no command leaves the executor
outside the joint position limits (minus margin), the velocity and acceleration limits, the workspace box
(FK of the commanded joints), or the gripper range / rate. Property-based (hypothesis), deterministic."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.core.spec import READY_POSE, SafetyLimits
from etc_ros.core.transforms3d import xyzrpy_to_pose
from etc_ros.safety import MotionFilter, SafetyExecutor, reach_bounds_from_urdf

KIN = WidowXKinematics.from_urdf()
LIMITS = SafetyLimits()
LO = KIN.lower + LIMITS.joint_margin
HI = KIN.upper - LIMITS.joint_margin
BOX_LO = np.asarray(LIMITS.workspace.low)
BOX_HI = np.asarray(LIMITS.workspace.high)
TOL_V = 1e-9
PROFILE = settings(max_examples=100, deadline=None, derandomize=True, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _ee(q: np.ndarray) -> np.ndarray:
    return KIN.fk(q)[:3, 3]


def _start_poses() -> list[np.ndarray]:
    """Safe rest poses: a few near the faces of the box (gripper down) and random ones inside it."""
    poses = []
    for xyz in [(0.25, 0.0, 0.1), (0.44, 0.0, 0.05), (0.3, 0.24, 0.0), (0.3, -0.14, 0.02), (0.12, 0.0, 0.1),
                (0.3, 0.0, -0.09), (0.3, 0.05, 0.17), (0.2, 0.1, 0.15)]:
        r = KIN.ik(xyzrpy_to_pose(np.array([*xyz, 0.0, np.pi / 2, 0.0])), READY_POSE, margin=0.06)
        assert r.success, xyz
        poses.append(r.q)
    Q = KIN.random_configurations(20000, rng=7, margin=0.06)
    P = KIN.fk(Q)[:, :3, 3]
    inside = np.all((P > BOX_LO + 0.005) & (P < BOX_HI - 0.005), axis=1)
    poses.extend(Q[inside][:8])
    return poses


START = _start_poses()


class StreamChecker:
    """Checks every command of a stream against the hard limits (velocity/acceleration from the stream)."""

    def __init__(self, q0: np.ndarray, g0: float):
        self.q, self.v, self.g = np.asarray(q0, float).copy(), np.zeros(6), float(np.clip(g0, 0, 1))
        self.n = 0

    def check(self, c) -> None:
        if c.dt == 0.0:  # time did not advance: the previous command, repeated
            np.testing.assert_array_equal(c.q, self.q)
            return
        q = np.asarray(c.q, dtype=float)
        assert q.shape == (6,) and np.all(np.isfinite(q))
        assert np.all(q >= LO - 1e-9) and np.all(q <= HI + 1e-9), f"joint limit: {q}"
        p = _ee(q)
        assert np.all(p >= BOX_LO - 1e-9) and np.all(p <= BOX_HI + 1e-9), f"workspace: {p}"
        assert 0.0 <= c.gripper <= 1.0
        if c.reanchored:
            v = np.zeros(6)  # the arm is where it was measured; the command restarts from rest there
            assert c.at_rest
        else:
            v = (q - self.q) / c.dt
            assert np.max(np.abs(v)) <= LIMITS.max_joint_velocity + TOL_V, f"velocity {v}"
            acc = (v - self.v) / c.dt
            assert np.max(np.abs(acc)) <= LIMITS.max_joint_acceleration * (1 + 1e-9) + 1e-6, f"accel {acc}"
            assert abs(c.gripper - self.g) <= LIMITS.max_gripper_rate * c.dt + 1e-12
            np.testing.assert_allclose(c.velocity, v, atol=1e-6)
        self.q, self.v, self.g = q, v, float(c.gripper)
        self.n += 1


# ---- the executor under arbitrary chunk streams, timing, camera, measurements and e-stops ---------------------
# Hypothesis draws a scenario (rates of each kind of event, timing style, driving direction, seed); numpy
# turns it into a long stream, so every example exercises tracking, clipping and the limits for seconds.
BAD_KINDS = ("nan", "inf", "huge", "shape", "stale", "future", "list_bad", "empty", "out_of_order", "dtype")


def _make_chunk(rng, kind: str, drive: np.ndarray | None, h: int, now: float, last_obs: float, big: float):
    d = drive if drive is not None else rng.uniform(-1, 1, 7)
    scale = np.array([0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 0.5])
    a = (d * scale + np.array([0, 0, 0, 0, 0, 0, 0.5])) * big + rng.normal(0.0, 0.01, size=(h, 7))
    obs = now - rng.uniform(0.0, 0.45)
    if kind == "nan":
        a[rng.integers(0, h), rng.integers(0, 7)] = np.nan
    elif kind == "inf":
        a[rng.integers(0, h), rng.integers(0, 7)] = rng.choice([np.inf, -np.inf])
    elif kind == "huge":
        a = a * 1e9 + 1.0
    elif kind == "shape":
        a = [a[:, :6], a.reshape(-1), a[None], np.zeros((h, 8))][int(rng.integers(0, 4))]
    elif kind == "stale":
        obs = now - 0.51 - rng.uniform(0.0, 5.0)
    elif kind == "future":
        obs = now + 0.06 + rng.uniform(0.0, 5.0)
    elif kind == "list_bad":
        a = [[0.0] * 7, [0.0] * 6]  # ragged
    elif kind == "empty":
        a = np.zeros((0, 7))
    elif kind == "out_of_order":
        obs = last_obs - rng.uniform(0.0, 0.1)  # not newer than the last accepted chunk
    elif kind == "dtype":
        a = np.full((h, 7), "x")
    return a, obs


@PROFILE
@given(start=st.integers(0, len(START) - 1), mode=st.sampled_from(["ensemble", "receding"]),
       dry_run=st.sampled_from([False, False, False, True]), seed=st.integers(0, 2 ** 30),
       n_ticks=st.integers(60, 160), p_chunk=st.floats(0.1, 0.6), p_bad=st.floats(0.0, 0.4),
       timing=st.sampled_from(["nominal", "jitter", "wild"]), p_cam_drop=st.sampled_from([0.0, 0.02, 0.2]),
       p_far=st.sampled_from([0.0, 0.0, 0.02, 0.1]), p_estop=st.sampled_from([0.0, 0.0, 0.0, 0.003, 0.02]),
       drive=st.one_of(st.none(), st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7)),
       big=st.sampled_from([1.0, 1.0, 4.0]), p_toggle=st.sampled_from([0.0, 0.0, 0.02]),
       p_no_meas=st.sampled_from([0.0, 0.5, 1.0]))
def test_executor_commands_never_leave_the_limits(start, mode, dry_run, seed, n_ticks, p_chunk, p_bad, timing,
                                                  p_cam_drop, p_far, p_estop, drive, big, p_toggle, p_no_meas):
    rng = np.random.default_rng(seed)
    drive = None if drive is None else np.asarray(drive)
    ex = SafetyExecutor(KIN, LIMITS, mode=mode, dry_run=dry_run, receding_steps=3)
    now = 100.0
    q0 = START[start]
    g0 = float(rng.uniform(0, 1))
    ex.reset(q0, g0, now)
    chk = StreamChecker(q0, g0)
    last_obs = None
    awaiting = False
    cam_ok_until = np.inf
    for _ in range(n_ticks):
        if timing == "nominal":
            dt = 0.02
        elif timing == "jitter":
            dt = float(np.clip(rng.normal(0.02, 0.006), 0.0, None))
        else:
            dt = float(rng.choice([0.0, 1e-3, 0.02, 0.02, 0.05, 0.3, 1.5]))
        now += dt
        u = rng.random(4)
        if u[0] < p_estop:
            ex.estop("test")
        elif u[0] < 6 * p_estop + 0.01:  # e-stops are also latched by unsafe measurements
            ex.reset_estop()
        if u[1] < p_chunk:
            kind = str(rng.choice(BAD_KINDS)) if rng.random() < p_bad else "good"
            if kind == "out_of_order" and last_obs is None:
                kind = "stale"  # nothing accepted yet: nothing to be out of order with
            a, obs = _make_chunk(rng, kind, drive, int(rng.integers(1, 13)), now, last_obs, big)
            was_estopped = ex.estopped
            ok, reason = ex.submit_chunk(a, obs, now)
            if kind != "good" or was_estopped:
                assert not ok, (kind, reason)
            if ok:
                last_obs = obs
        if u[2] < p_cam_drop:
            cam_ok_until = now + rng.uniform(0.1, 1.0)  # camera silent for a while
        cam = now - 0.01 if now > cam_ok_until or cam_ok_until == np.inf else None
        if cam is not None:
            cam_ok_until = np.inf
        meas = chk.q + rng.normal(0, 0.005, 6)
        if u[3] < p_far:
            meas = chk.q + rng.normal(0, 0.5, 6) if rng.random() < 0.8 else np.full(6, np.nan)
        if rng.random() < p_toggle:  # the node's ~/dry_run service, at run time
            awaiting = awaiting or ex.dry_run
            ex.dry_run = not ex.dry_run
        c = ex.tick(now, q_measured=meas if rng.random() > p_no_meas else None, gripper_measured=0.5,
                    camera_stamp=cam)
        if ex.dry_run:
            assert not c.execute and not c.reanchored
        elif awaiting and c.dt > 0:  # left dry run: nothing executes before re-anchoring on the arm
            assert c.execute == c.reanchored
            awaiting = not c.reanchored
        elif c.dt > 0:
            assert c.execute
        chk.check(c)
        if ex.estopped and c.dt > 0:
            assert c.holding
    d = ex.diagnostics()
    assert d["ticks"] + d["repeated_ticks"] == n_ticks


# ---- the filter alone under adversarial joint targets (anywhere, jumping, beyond the limits) -------------------
FK_BATCH = lambda Q: KIN.fk(Q)[..., :3, 3]  # noqa: E731
REACH = reach_bounds_from_urdf(KIN.model)


class _Cmd:
    """The filter's output in the shape StreamChecker reads."""

    def __init__(self, res, dt: float):
        self.q, self.gripper, self.dt, self.velocity, self.reanchored = res.q, res.gripper, dt, res.v, False

    @property
    def at_rest(self) -> bool:
        return bool(np.all(self.velocity == 0))


@settings(PROFILE, max_examples=50)
@given(start=st.integers(0, len(START) - 1), seed=st.integers(0, 2 ** 30), n=st.integers(50, 200),
       weights=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda w: sum(w) > 0.05),
       p_switch=st.floats(0.01, 0.5), timing=st.sampled_from(["nominal", "jitter", "wild"]))
def test_filter_keeps_invariant_under_adversarial_targets(start, seed, n, weights, p_switch, timing):
    """Targets: any configuration (EE mostly far outside the box), nearby jumps, beyond the joint limits,
    holds; switched at random; random control periods."""
    rng = np.random.default_rng(seed)
    f = MotionFilter(KIN.lower, KIN.upper, LIMITS, FK_BATCH, REACH)
    q0 = START[start]
    f.reset(q0, 0.5)
    chk = StreamChecker(q0, 0.5)
    w = np.asarray(weights) / np.sum(weights)
    target, g = q0.copy(), 0.5
    for _ in range(n):
        if rng.random() < p_switch:
            kind = rng.choice(["far", "near", "beyond", "hold", "huge"], p=w)
            if kind == "far":
                target = KIN.random_configurations(1, rng=rng)[0]
            elif kind == "near":
                target = chk.q + rng.normal(0, 0.3, 6)
            elif kind == "beyond":
                target = np.where(rng.random(6) < 0.5, KIN.lower - 1.0, KIN.upper + 1.0)
            elif kind == "huge":
                target = rng.normal(0, 1e6, 6)
            else:
                target = None
            g = float(rng.uniform(-0.5, 1.5))
        dt = {"nominal": 0.02, "jitter": float(rng.uniform(0.005, 0.04)),
              "wild": float(rng.choice([1e-3, 0.02, 0.05, 0.2]))}[timing]
        chk.check(_Cmd(f.step(target, g, dt), dt))
    assert chk.n == n


def test_filter_property_test_can_fail():
    """The checker is not vacuous: an unfiltered jump toward an out-of-box target is caught."""
    q0 = START[0]
    chk = StreamChecker(q0, 0.5)

    f = MotionFilter(KIN.lower, KIN.upper, LIMITS, FK_BATCH, REACH)
    f.reset(q0, 0.5)
    res = f.step(q0, 0.5, 0.02)
    res.q = q0 + 0.2  # an unfiltered jump
    with pytest.raises(AssertionError):
        chk.check(_Cmd(res, 0.02))


def test_braking_from_full_speed_toward_a_box_face_stays_inside():
    """Drive one joint at max velocity toward the outside of the box, then let the filter handle it."""
    f = MotionFilter(KIN.lower, KIN.upper, LIMITS, FK_BATCH, REACH)
    q0 = START[0]
    f.reset(q0, 0.5)
    chk = StreamChecker(q0, 0.5)
    target = q0.copy()
    target[1] += 1.5  # shoulder forward/down: the EE leaves the box quickly
    braked = 0
    for _ in range(200):
        res = f.step(target, None, 0.02)
        chk.check(_Cmd(res, 0.02))
        braked += res.blend < 1.0
    assert braked > 0  # the limit was actually active
    assert np.max(np.abs(f.v)) == 0.0  # it came to rest at the boundary, not beyond
