"""SafetyExecutor behaviour: rejections, tracking, watchdog holds, e-stop latch, dry run, re-anchoring, config."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from etc_ros.core.config import ConfigError, load_config
from etc_ros.core.errors import SafetyError, UserError
from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.core.paths import config_path
from etc_ros.core.spec import HOME_POSE, READY_POSE, SafetyLimits
from etc_ros.core.transforms3d import xyzrpy_to_pose
from etc_ros.safety import SafetyExecutor

KIN = WidowXKinematics.from_urdf()
LIMITS = SafetyLimits()
DT = 0.02
# gripper pointing down, EE at (0.25, 0, 0.1): well inside the workspace box
START = KIN.ik(xyzrpy_to_pose(np.array([0.25, 0.0, 0.1, 0.0, np.pi / 2, 0.0])), READY_POSE, margin=0.06).q
T0 = 1000.0


def _ee(q):
    return KIN.fk(q)[:3, 3]


def _chunk(dx=0.0, dy=0.0, dz=0.0, g=1.0, h=10):
    a = np.zeros((h, 7))
    a[:, 0], a[:, 1], a[:, 2], a[:, 6] = dx, dy, dz, g
    return a


def _new(**kw) -> SafetyExecutor:
    ex = SafetyExecutor(KIN, LIMITS, **kw)
    ex.reset(START, 1.0, T0)
    return ex


def _run(ex, t_start, seconds, chunk=None, chunk_every=10, camera=True, cmds=None, latency=0.04):
    """Tick at 50 Hz from t_start for `seconds`, submitting `chunk` every `chunk_every` ticks (policy at 5 Hz)."""
    cmds = [] if cmds is None else cmds
    n = int(round(seconds / DT))
    for i in range(1, n + 1):
        t = t_start + i * DT
        if chunk is not None and i % chunk_every == 1:
            ok, reason = ex.submit_chunk(chunk, t - latency, t)
            assert ok, reason
        cmds.append(ex.tick(t, camera_stamp=(t - 0.01) if camera else None))
    return cmds, t_start + n * DT


# ---- config -----------------------------------------------------------------------------------------------------
def test_safety_yaml_matches_spec_defaults_and_overrides():
    assert load_config(SafetyLimits, config_path("safety.yaml")) == SafetyLimits()
    ex = SafetyExecutor.from_config(overrides=["max_joint_velocity=1.0", "workspace.high=[0.4, 0.2, 0.15]"], kin=KIN)
    assert ex.limits.max_joint_velocity == 1.0 and ex.filter.vmax == 1.0
    assert tuple(ex.limits.workspace.high) == (0.4, 0.2, 0.15)
    with pytest.raises(ConfigError, match="max_joint_speed"):
        SafetyExecutor.from_config(overrides=["max_joint_speed=1.0"], kin=KIN)


@pytest.mark.parametrize("kw", [dict(mode="open_loop"), dict(servo_hz=0), dict(servo_hz=2.0),
                                dict(policy_hz=float("nan")), dict(future_tolerance=-1.0),
                                dict(limits=dataclasses.replace(LIMITS, max_joint_velocity=-1.0)),
                                dict(limits=dataclasses.replace(LIMITS, joint_margin=float("inf")))])
def test_bad_construction_is_a_clear_user_error(kw):
    kw = {"limits": LIMITS, **kw}
    with pytest.raises(UserError):
        SafetyExecutor(KIN, **kw)


def test_misuse_raises_safety_error():
    ex = SafetyExecutor(KIN, LIMITS)
    with pytest.raises(SafetyError, match="reset"):
        ex.tick(1.0)
    assert ex.submit_chunk(_chunk(), 0.0, 0.0) == (False, "not_initialized: call reset() first")
    with pytest.raises(SafetyError):
        ex.reset(np.zeros(5), 1.0, 0.0)
    with pytest.raises(SafetyError):
        ex.reset(START, 1.0, float("nan"))
    ex.reset(START, 1.0, 0.0)
    with pytest.raises(SafetyError, match="now"):
        ex.tick(float("inf"))


# ---- rejections -------------------------------------------------------------------------------------------------
def test_bad_chunks_are_rejected_and_counted_by_reason():
    ex = _new()
    t = T0 + 0.1
    good = _chunk(dx=0.01)
    nan = good.copy()
    nan[3, 2] = np.nan
    inf = good.copy()
    inf[0, 6] = np.inf
    cases = [
        (nan, t, "nonfinite"), (inf, t, "nonfinite"), (good * 1e6, t, "out_of_range"),
        (np.zeros((10, 6)), t, "shape"), (np.zeros(7), t, "shape"), (np.zeros((0, 7)), t, "shape"),
        (np.zeros((500, 7)), t, "shape"), ([[0.0] * 7, [0.0] * 6], t, "dtype"), (np.full((2, 7), "a"), t, "dtype"),
        (good, t - 0.6, "stale"), (good, t + 0.2, "future"), (good, float("nan"), "bad_stamp"),
    ]
    for actions, stamp, reason in cases:
        ok, why = ex.submit_chunk(actions, stamp, t)
        assert not ok and why.startswith(reason), (reason, why)
    assert ex.submit_chunk(good, t - 0.05, t) == (True, "accepted")
    ok, why = ex.submit_chunk(good, t - 0.05, t)
    assert not ok and why.startswith("out_of_order")
    d = ex.diagnostics()
    assert d["rejections"] == {"nonfinite": 2, "out_of_range": 1, "shape": 4, "dtype": 2, "stale": 1, "future": 1,
                               "bad_stamp": 1, "out_of_order": 1}
    assert d["rejections_total"] == 13 and d["chunks_accepted"] == 1


def test_nan_chunk_changes_nothing():
    """A NaN chunk in the middle of a run leaves the command stream exactly as without it."""
    a, b = _new(), _new()
    chunk = _chunk(dx=0.03, dz=-0.01)
    ca, t = _run(a, T0, 0.4, chunk)
    cb, _ = _run(b, T0, 0.4, chunk)
    bad = chunk.copy()
    bad[5, 1] = np.nan
    assert a.submit_chunk(bad, t, t)[0] is False
    ca, _ = _run(a, t, 0.4, chunk, cmds=ca)
    cb, _ = _run(b, t, 0.4, chunk, cmds=cb)
    np.testing.assert_array_equal(np.stack([c.q for c in ca]), np.stack([c.q for c in cb]))


def test_out_of_range_but_plausible_actions_are_clipped_not_rejected():
    ex = _new()
    ok, _ = ex.submit_chunk(_chunk(dx=0.2, g=1.4), T0, T0 + 0.01)  # 4x the Bridge clip: clipped to 0.05
    assert ok and ex.diagnostics()["clamps"]["action"] == 1


# ---- tracking ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["ensemble", "receding"])
def test_tracks_constant_delta_chunks(mode):
    ex = _new(mode=mode)
    p0 = _ee(START)
    cmds, _ = _run(ex, T0, 1.2, _chunk(dx=0.02, dz=-0.01, g=0.0))
    p1 = _ee(cmds[-1].q)
    # policy steps 0..6 start within the 1.2 s (the last one just started): 6-7 steps of +2 cm x, -1 cm z
    assert 0.115 <= p1[0] - p0[0] <= 0.141, p1 - p0
    assert -0.071 <= p1[2] - p0[2] <= -0.057, p1 - p0
    assert abs(p1[1] - p0[1]) < 0.005
    assert cmds[-1].gripper == 0.0 and cmds[-1].execute  # closed (rate limit 2/s: 0.5 s)
    g = np.array([c.gripper for c in cmds])
    assert np.max(np.abs(np.diff(g))) <= LIMITS.max_gripper_rate * DT + 1e-12
    assert sum(not c.holding for c in cmds) > 0.8 * len(cmds)
    d = ex.diagnostics()
    assert d["ik_failures"] == 0 and d["rejections_total"] == 0


@pytest.mark.parametrize("latency", [0.0, 0.04, 0.1, 0.19])
def test_first_action_of_a_chunk_runs_whatever_the_inference_latency(latency):
    """align='arrival' (default): a chunk's first action is the first one executed, at the first policy step not
    yet begun when it arrives, as in the synchronous eval rollout; 'observation' places it at the step of the
    camera stamp, so an action for a step that began during inference is never executed."""
    # one chunk: first action +3 cm x, then -3 cm x: executed from the first action, the EE moves +x first
    chunk = _chunk(dx=-0.03, h=10)
    chunk[0, 0] = 0.03
    # (the tick at the observation's step boundary has begun step 1 before any chunk arrived, even at latency 0)
    for align, first_dx in (("arrival", 0.03), ("observation", -0.03)):
        ex = _new(align=align)
        p0 = _ee(START)
        _run(ex, T0, 0.2)  # step 0 passes with no chunk (holding)
        t_obs = T0 + 0.2  # observation at the step-1 boundary, chunk back `latency` later
        cmds, t = _run(ex, t_obs, latency)
        ok, why = ex.submit_chunk(chunk, t_obs, t_obs + latency)
        assert ok, why
        cmds, _ = _run(ex, t_obs + latency, 0.45)
        x = np.array([_ee(c.q)[0] - p0[0] for c in cmds])
        moved = x[np.abs(x) > 0.004]
        assert moved.size and np.sign(moved[0]) == np.sign(first_dx), (align, latency, x)


def test_align_must_be_known():
    with pytest.raises(SafetyError, match="align"):
        SafetyExecutor(KIN, LIMITS, align="camera")


def test_ee_target_is_clipped_to_the_box():
    ex = _new()
    cmds, _ = _run(ex, T0, 3.0, _chunk(dz=0.05))  # keep pushing up through z_max = 0.18
    z = [_ee(c.q)[2] for c in cmds]
    assert max(z) <= LIMITS.workspace.high[2] + 1e-9
    assert z[-1] > LIMITS.workspace.high[2] - 0.01  # it got there (aims 5 mm inside)
    assert ex.diagnostics()["clamps"]["workspace"] > 0


def test_ik_failure_holds_and_is_counted():
    class FailingIK:
        def __init__(self, kin):
            self._kin = kin

        def __getattr__(self, name):
            return getattr(self._kin, name)

        def ik(self, T, q_seed=None, **kw):
            r = self._kin.ik(T, q_seed, **kw)
            r.success = False
            return r

    ex = SafetyExecutor(FailingIK(KIN), LIMITS)
    ex.reset(START, 1.0, T0)
    cmds, _ = _run(ex, T0, 0.6, _chunk(dx=0.03))
    assert all(c.holding for c in cmds)
    np.testing.assert_array_equal(cmds[-1].q, START)
    assert ex.diagnostics()["ik_failures"] >= 3
    assert ex.diagnostics()["holds"]["ik_failure"] > 0


# ---- watchdog ---------------------------------------------------------------------------------------------------
def test_no_chunk_means_no_motion():
    ex = _new()
    cmds, _ = _run(ex, T0, 1.0)
    assert all(c.holding and c.reason == "no_chunk_yet" for c in cmds)
    assert all(np.array_equal(c.q, START) for c in cmds)


MOVE = _chunk(dx=0.04, dy=0.03)  # 5 cm per policy step: 0.25 m/s


def _moving_executor(seconds=0.6):
    ex = _new()
    cmds, t = _run(ex, T0, seconds, MOVE)
    assert not cmds[-1].holding and np.max(np.abs(cmds[-1].velocity)) > 0.3
    return ex, t


def _until_rest(ex, t, seconds, chunk, camera):
    """-> commands, time of the first holding tick, time of the first tick at rest, max |v| when the hold began."""
    cmds, _ = _run(ex, t, seconds, chunk, camera=camera)
    hold_i = next(i for i, c in enumerate(cmds) if c.holding)
    rest_i = next(i for i, c in enumerate(cmds) if i >= hold_i and c.at_rest)
    assert all(c.holding for c in cmds[hold_i:])
    assert all(np.array_equal(c.q, cmds[rest_i].q) for c in cmds[rest_i:])  # then it holds still
    v_hold = float(np.max(np.abs(cmds[hold_i - 1].velocity))) if hold_i else float(np.max(np.abs(ex.filter.v)))
    return cmds, (hold_i + 1) * DT, (rest_i + 1) * DT, v_hold


def test_camera_stops_then_arm_holds():
    ex, t = _moving_executor()
    cmds, t_hold, t_rest, v0 = _until_rest(ex, t, 1.0, MOVE, camera=False)
    assert v0 > 0.3
    # the last camera frame was at t - 0.01: hold on the first tick past camera_timeout
    assert cmds[int(round(t_hold / DT)) - 1].reason == "camera_timeout"
    assert t_hold <= LIMITS.camera_timeout - 0.01 + DT + 1e-9
    # braking lasts at most max|v| / amax (+ one tick)
    assert t_rest - t_hold <= v0 / LIMITS.max_joint_acceleration + DT + 1e-9
    print(f"camera stop -> hold {t_hold + 0.01:.3f} s, -> at rest {t_rest + 0.01:.3f} s (|v|max {v0:.2f} rad/s)")


def test_chunks_stop_then_arm_holds():
    ex, t = _moving_executor()
    cmds, t_hold, t_rest, _ = _until_rest(ex, t, 2.0, None, camera=True)
    # no chunk since t - 0.18: the scheduled actions run out or the chunk timeout fires, whichever first
    assert t_hold <= LIMITS.chunk_timeout + DT
    assert t_rest - t_hold <= LIMITS.max_joint_velocity / LIMITS.max_joint_acceleration + DT


def test_stop_from_full_joint_speed_is_bounded():
    ex = _new()
    ex.filter.v = np.array([0.0, 0.0, 0.0, 0.0, 0.0, LIMITS.max_joint_velocity])  # wrist_rotate spinning
    assert ex.filter.state_is_safe(ex.filter.q, ex.filter.v)
    ex.estop("test")
    cmds, _ = _run(ex, T0, 1.0)
    rest_i = next(i for i, c in enumerate(cmds) if c.at_rest)
    assert (rest_i + 1) * DT <= LIMITS.max_joint_velocity / LIMITS.max_joint_acceleration + DT + 1e-9


def test_stale_camera_stamp_holds_even_with_fresh_chunks():
    ex = _new()
    t = T0
    for i in range(1, 30):
        t = T0 + i * DT
        if i % 10 == 1:
            ex.submit_chunk(_chunk(dx=0.03), t - 0.04, t)
        c = ex.tick(t, camera_stamp=t - 0.3)
        assert c.holding and c.reason == "camera_timeout"
    assert ex.diagnostics()["camera_age"] == pytest.approx(0.3)


# ---- e-stop -----------------------------------------------------------------------------------------------------
def test_estop_latches_until_explicit_reset():
    ex, t = _moving_executor()
    ex.estop("button")
    cmds, t = _run(ex, t, 1.0)
    assert all(c.holding and c.reason == "estop: button" for c in cmds)
    assert cmds[-1].at_rest
    ok, why = ex.submit_chunk(_chunk(dx=0.03), t, t)
    assert not ok and why.startswith("estop")
    cmds, t = _run(ex, t, 1.0)  # time passing does not clear it
    assert all(c.holding for c in cmds) and ex.estopped and ex.diagnostics()["estop"]
    ex.reset(START, 1.0, t)  # neither does a reset of the executor
    assert ex.estopped
    ex.reset_estop()
    assert not ex.estopped
    cmds, t = _run(ex, t, 0.6, _chunk(dx=0.03))
    assert not cmds[-1].holding  # a fresh chunk moves the arm again
    assert ex.diagnostics()["estops"] == 1


# ---- dry run ----------------------------------------------------------------------------------------------------
def test_dry_run_computes_the_same_commands_but_never_executes():
    live, dry = _new(), _new(dry_run=True)
    cl, _ = _run(live, T0, 1.0, _chunk(dx=0.03, dy=-0.02))
    cd, _ = _run(dry, T0, 1.0, _chunk(dx=0.03, dy=-0.02))
    assert all(c.execute for c in cl) and not any(c.execute for c in cd)
    np.testing.assert_array_equal(np.stack([c.q for c in cl]), np.stack([c.q for c in cd]))
    assert dry.diagnostics()["dry_run"] is True


def test_leaving_dry_run_reanchors_on_the_arm_before_executing():
    ex = _new(dry_run=True)
    cmds, t = _run(ex, T0, 0.6, MOVE)
    assert not any(c.execute for c in cmds) and np.max(np.abs(cmds[-1].q - START)) > 0.05  # virtual motion
    ex.dry_run = False
    c = ex.tick(t + DT, camera_stamp=t)  # no measured joints yet: nothing may be sent
    assert not c.execute and c.reason == "awaiting_measured_joints"
    q_arm = START + 0.01  # where the (never commanded) arm really is, within the re-anchor threshold
    c = ex.tick(t + 2 * DT, q_measured=q_arm, camera_stamp=t + DT)
    assert c.reanchored and c.execute
    np.testing.assert_array_equal(c.q, q_arm)


# ---- measured state ---------------------------------------------------------------------------------------------
def test_reanchor_on_far_measured_state():
    ex, t = _moving_executor()
    q_meas = ex.filter.q.copy()
    q_meas[0] += 0.35  # pushed by a collision: waist off by 0.35 rad, still a safe pose
    assert not ex.filter.pose_problem(q_meas)
    c = ex.tick(t + DT, q_measured=q_meas, camera_stamp=t)
    assert c.reanchored and c.at_rest and c.holding
    np.testing.assert_array_equal(c.q, q_meas)
    assert ex.diagnostics()["reanchors"] == 1
    # small tracking errors do not re-anchor
    c = ex.tick(t + 2 * DT, q_measured=q_meas + 0.05, camera_stamp=t + DT)
    assert not c.reanchored


def test_measured_state_outside_safe_set_latches_estop():
    ex, t = _moving_executor()
    q_meas = ex.filter.q.copy()
    q_meas[1] += 1.0  # shoulder far forward: EE below/outside the box
    assert ex.filter.pose_problem(q_meas)
    c = ex.tick(t + DT, q_measured=q_meas, camera_stamp=t)
    assert ex.estopped and c.holding and not c.reanchored
    assert "outside the safe set" in ex.diagnostics()["estop_reason"]


def test_start_outside_the_safe_set_never_executes():
    ex = SafetyExecutor(KIN, LIMITS)
    ex.reset(HOME_POSE, 1.0, T0)  # all zeros: EE at (0.46, 0, 0.36) m, outside the Bridge box
    assert "outside the workspace box" in ex.fault
    ok, why = ex.submit_chunk(_chunk(dz=-0.05), T0, T0)
    assert not ok and why.startswith("fault")
    cmds, _ = _run(ex, T0, 0.2)
    assert not any(c.execute for c in cmds)
    ex.reset(START, 1.0, T0 + 1.0)
    assert ex.fault == "" and ex.tick(T0 + 1.02).execute


def test_time_not_advancing_repeats_the_last_command():
    ex, t = _moving_executor()
    c1 = ex.tick(t + DT, camera_stamp=t)
    c2 = ex.tick(t + DT, camera_stamp=t)
    c3 = ex.tick(t, camera_stamp=t)
    for c in (c2, c3):
        np.testing.assert_array_equal(c.q, c1.q)
        assert c.dt == 0.0
    assert ex.diagnostics()["repeated_ticks"] == 2


def test_long_gap_is_capped_to_one_control_period():
    ex, t = _moving_executor()
    q_before = ex.filter.q.copy()
    c = ex.tick(t + 0.5, camera_stamp=t + 0.49)
    assert c.dt == pytest.approx(DT)
    assert np.max(np.abs(c.q - q_before)) <= LIMITS.max_joint_velocity * DT + 1e-12


def test_diagnostics_flat_is_strings():
    ex, t = _moving_executor()
    ex.submit_chunk(np.full((3, 7), np.nan), t, t)
    flat = ex.diagnostics_flat()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in flat.items())
    assert flat["rejections.nonfinite"] == "1" and flat["estop"] == "False"
    assert "clamps.acceleration" in flat and "last_chunk_age" in flat


def test_spec_ready_pose_is_a_valid_start():
    """The pose the stack starts from must be inside the safe set, or the executor refuses to run."""
    ex = SafetyExecutor(KIN, LIMITS)
    ex.reset(READY_POSE, 1.0, T0)
    assert ex.fault == ""


def test_first_command_after_reset_is_flagged_as_an_anchor_on_the_measured_joints():
    """The safety node sends an anchor with dt = 0, which the driver accepts when it is exactly a joint state it
    published. Without the flag, a reset on an arm that is moving (released from a contact at an episode reset)
    reached the driver as an ordinary step from its last command (measured: 'joint 5 velocity 4.437 rad/s')."""
    ex = SafetyExecutor(KIN, LIMITS)
    q_meas = START + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.05])
    ex.reset(q_meas, 1.0, 10.0)
    c = ex.tick(10.012, q_meas, 1.0)
    assert c.reanchored and c.at_rest and c.execute
    np.testing.assert_array_equal(c.q, q_meas)  # bit for bit: the driver matches it against its published states
    assert not ex.tick(10.032, q_meas, 1.0).reanchored  # only the first
