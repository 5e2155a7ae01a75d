"""The action-chunking safety executor: policy chunks in, safe joint commands out (pure core, no ROS, no clock).

    ex = SafetyExecutor(kin, limits, mode="ensemble", servo_hz=50, policy_hz=5, dry_run=False)
    ex.reset(q_measured, gripper, now)
    ok, reason = ex.submit_chunk(actions (H, 7), obs_stamp, now)       # whenever the policy answers
    cmd = ex.tick(now, q_measured, gripper_measured, camera_stamp)     # every control period
    if cmd.execute: send(cmd.q, cmd.gripper)

Pipeline per tick: watchdog / e-stop -> (at each new 5 Hz policy step) scheduled action -> EE target (max EE
step, workspace clip) -> IK on the current branch (joint margin) -> MotionFilter (braking-aware position /
velocity / acceleration / workspace limits, gripper rate) -> Command. See docs/safety.md for the design.
"""
from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import SafetyError
from etc_ros.core.spec import SafetyLimits
from etc_ros.safety.chunking import MODES, ChunkScheduler
from etc_ros.safety.filter import N_JOINTS, MotionFilter, reach_bounds_from_urdf, validate_limits
from etc_ros.safety.watchdog import Watchdog

GRIPPER_REJECT_RANGE = (-1.0, 2.0)  # gripper values outside this are nonsense, not just unclipped

ALIGNS = ("arrival", "observation")  # where a chunk's first action lands on the policy-step grid
REJECTION_REASONS = ("not_initialized", "estop", "fault", "bad_stamp", "dtype", "shape", "nonfinite",
                     "out_of_range", "stale", "future", "out_of_order", "expired")


@dataclass
class Command:
    """What the executor wants sent to the arm at one control tick."""

    q: np.ndarray  # (6,) joint position command [rad], JOINT_NAMES order
    gripper: float  # opening command in [0, 1] (1 = open)
    execute: bool  # False: do NOT send (dry run, or a fault where nothing may be commanded)
    holding: bool  # no target this tick: braking to rest / holding the current command
    reason: str  # 'tracking', 'braking' (limits shaped the step) or why it holds
    stamp: float = 0.0  # the `now` of the tick
    dt: float = 0.0  # control period used by the filter (<= actual elapsed time); 0 = repeated command
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(N_JOINTS))  # commanded joint velocity
    step: int = 0  # policy step index
    reanchored: bool = False  # the command starts at the measured joints: a re-anchor, or the first tick after reset()

    @property
    def at_rest(self) -> bool:
        return bool(np.all(self.velocity == 0.0))


def _finite_time(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) or not math.isfinite(float(x)):
        raise SafetyError(f"{name} must be a finite time in seconds, got {x!r}")
    return float(x)


def _locked(method):
    """Public methods run under the executor's lock: a ROS node may call submit_chunk from a subscription and
    tick from a timer on different threads."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class SafetyExecutor:
    def __init__(self, kin=None, limits: SafetyLimits | None = None, mode: str = "ensemble",
                 servo_hz: float = robot_spec.SERVO_HZ, policy_hz: float = robot_spec.POLICY_HZ,
                 dry_run: bool = False, *,
                 ensemble_k: float = 0.01, receding_steps: int = 5, future_tolerance: float = 0.05,
                 reanchor_threshold: float = 0.3, max_horizon: int = 100, reject_scale: float = 10.0,
                 max_joint_step: float | None = None, target_inset: float = 0.005, align: str = "arrival"):
        """kin: WidowXKinematics (default: from the package URDF). limits: SafetyLimits (default values of
        spec.py; see `from_config`). mode: 'ensemble' (ACT, weights exp(-k i), k = ensemble_k) or 'receding'
        (first receding_steps actions of a chunk, then the newest chunk). future_tolerance [s]: chunks
        stamped further in the future are rejected. reanchor_threshold [rad]: measured joints farther than
        this from the command -> re-anchor. reject_scale: chunks with |delta| > reject_scale x the Bridge clip
        are rejected as nonsense. max_joint_step [rad]: IK solutions farther than this from the current
        command are refused (branch flips); default max_joint_velocity / policy_hz. target_inset [m]: EE
        targets are clipped to the workspace box shrunk by this much. align: where a chunk's first action goes
        on the policy-step grid. 'arrival' (default): the first policy step not yet begun when the chunk arrives,
        so the first action is always executed, as in the synchronous rollout the policy was trained and scored
        on (`etc-vla eval`); the observation stamp then only decides staleness and order. 'observation': the
        step of the observation stamp, so actions for steps that passed during inference are skipped (right for a
        policy trained with that delay; measured on the shipped sim policy: 0/10 scenes at 40 ms or 100 ms
        latency, against 5/10 with 'arrival', docs/results/policy/)."""
        self._lock = threading.RLock()
        if kin is None:
            from etc_ros.core.kinematics import WidowXKinematics

            kin = WidowXKinematics.from_urdf()
        self.kin = kin
        self.limits = limits if limits is not None else SafetyLimits()
        validate_limits(self.limits)
        if mode not in MODES:
            raise SafetyError(f"mode {mode!r} is not one of {list(MODES)}")
        if align not in ALIGNS:
            raise SafetyError(f"align {align!r} is not one of {list(ALIGNS)}")
        self.align = align
        for name, val in (("servo_hz", servo_hz), ("policy_hz", policy_hz), ("reject_scale", reject_scale),
                          ("reanchor_threshold", reanchor_threshold)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or val <= 0:
                raise SafetyError(f"{name} must be a finite number > 0, got {val!r}")
        if not (isinstance(future_tolerance, (int, float)) and math.isfinite(future_tolerance)
                and future_tolerance >= 0):
            raise SafetyError(f"future_tolerance must be a finite number >= 0, got {future_tolerance!r}")
        if servo_hz < policy_hz:
            raise SafetyError(f"servo_hz ({servo_hz}) must be >= policy_hz ({policy_hz})")
        box_half = 0.5 * float(np.min(np.subtract(self.limits.workspace.high, self.limits.workspace.low)))
        if not (isinstance(target_inset, (int, float)) and 0.0 <= target_inset < box_half):
            raise SafetyError(f"target_inset must be >= 0 and below half the workspace box, got {target_inset!r}")
        if isinstance(max_horizon, bool) or not isinstance(max_horizon, int) or max_horizon < 1:
            raise SafetyError(f"max_horizon must be an integer >= 1, got {max_horizon!r}")
        self.mode = mode
        self.servo_hz = float(servo_hz)
        self.policy_hz = float(policy_hz)
        self.dt_nominal = 1.0 / self.servo_hz
        self._dry_run = bool(dry_run)
        self._need_anchor = False  # leaving dry run: re-anchor on the measured joints before executing
        self.future_tolerance = float(future_tolerance)
        self.reanchor_threshold = float(reanchor_threshold)
        self.max_horizon = int(max_horizon)
        self.target_inset = float(target_inset)
        self.reject_scale = float(reject_scale)
        self.max_joint_step = (float(max_joint_step) if max_joint_step is not None
                               else self.limits.max_joint_velocity / self.policy_hz)
        self.scheduler = ChunkScheduler(mode, k=ensemble_k, receding_steps=receding_steps)
        self.watchdog = Watchdog(self.limits.chunk_timeout, self.limits.camera_timeout)
        # Lipschitz bounds of the EE position per joint, from the same URDF model as the kinematics
        reach = reach_bounds_from_urdf(kin.model, kin.base, kin.tip, kin.joint_names)
        self.filter = MotionFilter(kin.lower, kin.upper, self.limits,
                                   lambda Q: np.asarray(kin.fk(Q), dtype=float)[..., :3, 3], reach)
        self._reject_abs = np.concatenate([np.full(3, robot_spec.MAX_DELTA_XYZ),
                                           np.full(3, robot_spec.MAX_DELTA_RPY)]) * self.reject_scale
        self._initialized = False
        self._estop_reason: str | None = None
        self._fault: str = ""
        self._t0 = 0.0
        self._last_tick = 0.0
        self._last_step = -(10 ** 9)
        self._last_obs: float | None = None
        self._target: np.ndarray | None = None  # joint target of the current policy step (end of the ramp)
        self._ramp_start = np.zeros(N_JOINTS)  # the step's target is approached along a ramp from here...
        self._ramp_t0 = 0.0  # ...starting at this time, over one policy period
        self._gripper_target: float | None = None
        self._last_cmd: Command | None = None
        self._anchor_next = False
        self._hold_reason = "not_initialized"
        self._step_reason = "no_chunk_yet"  # why the current policy step has no joint target
        self._reset_counters()

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @dry_run.setter
    def dry_run(self, value: bool) -> None:
        """May be switched at run time. Leaving dry run, nothing is executed until a tick brings measured
        joints: the (virtual) command is then re-anchored on them, so the arm never jumps to a dry-run pose."""
        with self._lock:
            value = bool(value)
            if self._dry_run and not value:
                self._need_anchor = True
            self._dry_run = value

    @classmethod
    def from_config(cls, path=None, overrides=(), kin=None, **kwargs) -> "SafetyExecutor":
        """Limits from config/safety.yaml (default) + key=value overrides; kwargs go to the constructor."""
        from etc_ros.core.config import load_config
        from etc_ros.core.paths import config_path

        limits = load_config(SafetyLimits, config_path("safety.yaml") if path is None else path, overrides)
        return cls(kin, limits, **kwargs)

    # ---- counters -----------------------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.rejections: dict[str, int] = {}
        self.clamps: dict[str, int] = {}
        self.holds: dict[str, int] = {}
        self.counts = dict(ticks=0, policy_steps=0, chunks_accepted=0, ik_failures=0, reanchors=0,
                           estops=0, repeated_ticks=0, measured_invalid=0, camera_stamp_invalid=0)

    @staticmethod
    def _bump(d: dict, key: str, n: int = 1) -> None:
        d[key] = d.get(key, 0) + n

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @_locked
    def reset(self, q_measured, gripper: float, now: float) -> None:
        """Anchor at rest on the measured joints. If they are outside the safe set (joint limits minus margin,
        EE in the workspace box) nothing will be executed until a reset from a safe pose (see `fault`).
        A latched e-stop stays latched."""
        now = _finite_time(now, "now")
        try:
            q = np.asarray(q_measured, dtype=float).reshape(-1)
            g = float(gripper)
        except (TypeError, ValueError):
            raise SafetyError(f"reset needs {N_JOINTS} joint values and a gripper number") from None
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)):
            raise SafetyError(f"reset needs {N_JOINTS} finite joint values, got {q_measured!r}")
        if not math.isfinite(g):
            raise SafetyError(f"reset needs a finite gripper value, got {gripper!r}")
        self.filter.reset(q, g)
        self._fault = self.filter.pose_problem(q)
        if self._fault:
            self._fault = "start pose outside the safe set: " + self._fault
        self.scheduler.clear()
        self.watchdog.reset()
        self._t0 = now
        self._last_tick = now
        self._last_step = self._step_of(now) - 1
        self._last_obs = None
        self._target = None
        self._gripper_target = None
        self._step_reason = "no_chunk_yet"
        self._initialized = True
        self._hold_reason = self._fault or "no_chunk_yet"
        self._last_cmd = self._command(now, 0.0, holding=True, reason=self._hold_reason)
        self._anchor_next = True  # the first tick's command starts at q_measured: flagged like a re-anchor

    @property
    def fault(self) -> str:
        """'' or why nothing may be executed (start pose outside the safe set). Cleared only by reset()."""
        return self._fault

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @_locked
    def estop(self, reason: str = "e-stop requested") -> None:
        """Latch the e-stop: brake to rest, hold, reject chunks until reset_estop()."""
        if self._estop_reason is None:
            self.counts["estops"] += 1
            self._estop_reason = str(reason) or "e-stop requested"
        self.scheduler.clear()
        self._target = None
        self._gripper_target = None

    @_locked
    def reset_estop(self) -> None:
        """Explicitly clear a latched e-stop. Motion resumes only with a fresh chunk."""
        self._estop_reason = None
        self.scheduler.clear()
        self._target = None

    # ---- time helpers -------------------------------------------------------------------------------------
    def _step_of(self, t: float) -> int:
        return int(math.floor((t - self._t0) * self.policy_hz + 1e-9))

    def _start_step_of(self, obs_stamp: float) -> int:
        return int(math.floor((obs_stamp - self._t0) * self.policy_hz + 0.5))

    # ---- chunks -------------------------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str = "") -> tuple[bool, str]:
        self._bump(self.rejections, reason)
        return False, reason + (f": {detail}" if detail else "")

    @_locked
    def submit_chunk(self, actions, obs_stamp: float, now: float) -> tuple[bool, str]:
        """Offer a policy chunk (H, 7) of Bridge actions computed from the observation taken at obs_stamp.
        Returns (accepted, reason); reason starts with one of REJECTION_REASONS or is 'accepted'."""
        if not self._initialized:
            return self._reject("not_initialized", "call reset() first")
        if self._estop_reason is not None:
            return self._reject("estop", self._estop_reason)
        if self._fault:
            return self._reject("fault", self._fault)
        try:
            obs_stamp, now = _finite_time(obs_stamp, "obs_stamp"), _finite_time(now, "now")
        except SafetyError as exc:
            return self._reject("bad_stamp", str(exc))
        try:
            raw = np.asarray(actions)
        except (TypeError, ValueError) as exc:  # ragged nested lists and the like
            return self._reject("dtype", f"not a numeric array ({exc})")
        if raw.dtype.kind not in "biuf":  # bool, int, unsigned, float; no complex / str / object
            return self._reject("dtype", f"expected real numbers, got dtype {raw.dtype}")
        a = raw.astype(float)
        if a.ndim != 2 or a.shape[1] != robot_spec.ACTION_DIM or not (1 <= a.shape[0] <= self.max_horizon):
            return self._reject("shape", f"expected (H, {robot_spec.ACTION_DIM}) with 1 <= H <= {self.max_horizon}, "
                                         f"got {a.shape}")
        if not np.all(np.isfinite(a)):
            return self._reject("nonfinite", "NaN or Inf in the chunk")
        if np.any(np.abs(a[:, :6]) > self._reject_abs) or np.any(a[:, 6] < GRIPPER_REJECT_RANGE[0]) \
                or np.any(a[:, 6] > GRIPPER_REJECT_RANGE[1]):
            return self._reject("out_of_range", f"|delta| above {self.reject_scale:g}x the Bridge clip "
                                                f"or gripper outside {GRIPPER_REJECT_RANGE}")
        age = now - obs_stamp
        if age > self.limits.max_observation_age:
            return self._reject("stale", f"observation {age:.3f} s old > {self.limits.max_observation_age} s")
        if -age > self.future_tolerance:
            return self._reject("future", f"observation stamped {-age:.3f} s in the future")
        if self._last_obs is not None and obs_stamp <= self._last_obs:
            return self._reject("out_of_order", "not newer than the last accepted chunk")
        if self.align == "arrival":  # the first step that has not begun yet (a tick takes it next)
            start = max(self._last_step + 1, self._step_of(now))
        else:
            start = self._start_step_of(obs_stamp)
        if start + a.shape[0] <= max(self._last_step, self._step_of(now)):
            return self._reject("expired", "every action of the chunk is for a past policy step")
        clipped = np.clip(a, robot_spec.ACTION_LOW, robot_spec.ACTION_HIGH)
        if np.any(clipped != a):
            self._bump(self.clamps, "action")
        self.scheduler.add(clipped, start)
        self.watchdog.note_chunk(now)
        self._last_obs = obs_stamp
        self.counts["chunks_accepted"] += 1
        return True, "accepted"

    # ---- targets ------------------------------------------------------------------------------------------
    def _ramp_point(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Reference joints at time t on the current step's ramp, and its feed-forward velocity."""
        target = self._target
        assert target is not None, "_ramp_point needs a current step target"
        period = 1.0 / self.policy_hz
        tau = t - self._ramp_t0
        if tau >= period:
            return target.copy(), np.zeros(N_JOINTS)
        v = (target - self._ramp_start) / period
        return self._ramp_start + v * max(tau, 0.0), v

    def _joint_target(self, action: np.ndarray, now: float) -> tuple[np.ndarray | None, str]:
        """New joint target for a policy step. The action is applied to the reference pose (where the previous
        step's ramp is now) when the command follows it within max_ee_step, else to the commanded pose."""
        q_cmd = self.filter.q
        base = q_cmd
        T_ref = np.asarray(self.kin.fk(q_cmd), dtype=float)
        if self._target is not None:
            q_ref, _ = self._ramp_point(now)
            T_base = np.asarray(self.kin.fk(q_ref), dtype=float)
            if np.linalg.norm(T_base[:3, 3] - T_ref[:3, 3]) <= self.limits.max_ee_step:
                base, T_ref = q_ref, T_base
        T_new = np.array(self.kin.apply_action(T_ref, action), dtype=float)
        p_ref = T_ref[:3, 3]
        d = T_new[:3, 3] - p_ref
        n = float(np.linalg.norm(d))
        if n > self.limits.max_ee_step:
            d *= self.limits.max_ee_step / n
            self._bump(self.clamps, "ee_step")
        p = p_ref + d
        box = self.limits.workspace
        shrink = self.target_inset  # aim a little inside the box (cheaper certificates near its faces)
        p_c = np.clip(p, np.asarray(box.low) + shrink, np.asarray(box.high) - shrink)
        if np.any(np.abs(p_c - p) > 1e-12):
            self._bump(self.clamps, "workspace")
        T_new[:3, 3] = p_c
        res = self.kin.ik(T_new, base, seeds=(), margin=self.limits.joint_margin)
        if not res.success:
            self.counts["ik_failures"] += 1
            return None, "ik_failure"
        q_t = np.asarray(res.q, dtype=float)
        if float(np.max(np.abs(q_t - base))) > self.max_joint_step:
            self.counts["ik_failures"] += 1
            return None, "ik_jump"
        self._ramp_start, self._ramp_t0 = base.copy(), now
        return q_t, ""

    # ---- control tick -------------------------------------------------------------------------------------
    def _executable(self) -> bool:
        return not self._dry_run and not self._fault and not self._need_anchor

    def _command(self, now: float, dt: float, holding: bool, reason: str, reanchored: bool = False) -> Command:
        execute = self._executable()
        return Command(self.filter.q.copy(), float(self.filter.gripper), execute, holding, reason, now, dt,
                       self.filter.v.copy(), self._last_step, reanchored)

    @_locked
    def tick(self, now: float, q_measured=None, gripper_measured=None, camera_stamp=None) -> Command:
        """One control period. `now` must come from the same clock as the stamps. Returns the Command to send
        (if cmd.execute). A `now` that does not advance returns the previous command with dt = 0."""
        if not self._initialized:
            raise SafetyError("SafetyExecutor.tick() before reset(q_measured, gripper, now)")
        now = _finite_time(now, "now")
        if camera_stamp is not None:
            try:
                self.watchdog.note_camera(camera_stamp)
            except SafetyError:
                self.counts["camera_stamp_invalid"] += 1
        elapsed = now - self._last_tick
        if elapsed <= 0.0:
            self.counts["repeated_ticks"] += 1
            last = self._last_cmd
            assert last is not None, "reset() sets the last command"
            return Command(last.q.copy(), last.gripper, last.execute and self._executable(), last.holding,
                           last.reason, last.stamp, 0.0, last.velocity.copy(), last.step, False)
        dt = min(elapsed, self.dt_nominal)
        self._last_tick = now
        self.counts["ticks"] += 1
        if self._fault:
            return self._finish(now, dt, None, self._fault)

        hold = ""
        # measured-state sanity: re-anchor on the measured joints after a collision / restart
        if q_measured is not None and not self.dry_run:
            try:
                qm = np.asarray(q_measured, dtype=float).reshape(-1)
                valid = qm.shape == (N_JOINTS,) and bool(np.all(np.isfinite(qm)))
            except (TypeError, ValueError):
                valid = False
            if not valid:
                self.counts["measured_invalid"] += 1
                hold = "measured_invalid"
            else:
                dev = float(np.max(np.abs(qm - self.filter.q)))
                if dev > self.reanchor_threshold or self._need_anchor:
                    problem = self.filter.pose_problem(qm)
                    if not problem:
                        g = self.filter.gripper
                        try:
                            if gripper_measured is not None and math.isfinite(float(gripper_measured)):
                                g = float(gripper_measured)
                        except (TypeError, ValueError):
                            pass
                        self.filter.reset(qm, g)
                        self._need_anchor = False
                        self._target = None
                        self._gripper_target = None
                        self._step_reason = "waiting_for_step"
                        self.counts["reanchors"] += 1
                        reason = f"reanchored on the measured joints (deviation {dev:.3f} rad)"
                        self._bump(self.holds, "reanchored")
                        self._last_step = max(self._last_step, self._step_of(now))
                        self._anchor_next = False
                        self._last_cmd = self._command(now, dt, True, reason, reanchored=True)
                        return self._last_cmd
                    self.estop(f"measured joints {dev:.3f} rad from the command and outside the safe set "
                               f"({problem})")
        if self._need_anchor and not self._dry_run and not hold:
            hold = "awaiting_measured_joints"  # just left dry run: anchor on the arm before executing anything
        if self._estop_reason is not None:
            hold = "estop: " + self._estop_reason
        if not hold:
            hold = self.watchdog.check(now)
        if hold:
            self._target = None
            self._gripper_target = None
            self._step_reason = "waiting_for_step"  # after a hold, motion resumes at the next policy step
        step = self._step_of(now)
        if step > self._last_step:
            self._last_step = step
            self.counts["policy_steps"] += 1
            action = self.scheduler.action_for(step)
            if not hold:
                if action is None:
                    self._target, self._gripper_target, why = None, None, "no_action"
                else:
                    self._target, why = self._joint_target(action, now)
                    self._gripper_target = float(action[6])
                self._step_reason = why
        if not hold and self._target is None:
            hold = self._step_reason or "no_action"
        return self._finish(now, dt, self._target, hold)

    def _finish(self, now: float, dt: float, target, hold: str) -> Command:
        if hold or target is None:
            res = self.filter.step(None, None, dt)
        else:  # follow the ramp: reference where it will be at the next tick, with its velocity
            q_ref, v_ff = self._ramp_point(now + self.dt_nominal)
            res = self.filter.step(q_ref, self._gripper_target, dt, v_ff)
        for c in res.clamps:
            self._bump(self.clamps, c)
        if hold:
            key = hold.split(":")[0]
            self._bump(self.holds, key)
            reason = hold
        else:
            reason = "tracking" if res.blend == 1.0 else "braking"
        self._hold_reason = hold
        # the first command after reset() is an anchor when it is still the measured pose at rest (no chunk moved it)
        anchor = self._anchor_next and not np.any(self.filter.v) and self._executable()
        self._last_cmd = self._command(now, dt, bool(hold), reason, reanchored=anchor)
        self._anchor_next = False
        return self._last_cmd

    # ---- diagnostics --------------------------------------------------------------------------------------
    def time_to_rest(self) -> float:
        """Seconds proportional braking needs to stop the current command (max |v| / amax)."""
        return float(np.max(np.abs(self.filter.v))) / self.limits.max_joint_acceleration

    @_locked
    def diagnostics(self, now: float | None = None) -> dict:
        """Counters and state for diagnostic_msgs (values are numbers, bools, strings or None)."""
        t = self._last_tick if now is None else float(now)
        chunk_age = self.watchdog.chunk_age(t)
        cam_age = self.watchdog.camera_age(t)
        return {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "initialized": self._initialized,
            "fault": self._fault,
            "estop": self._estop_reason is not None,
            "estop_reason": self._estop_reason or "",
            "holding": bool(self._hold_reason),
            "hold_reason": self._hold_reason,
            "last_chunk_age": chunk_age,
            "camera_age": cam_age,
            "time_to_rest": self.time_to_rest(),
            "chunks_live": self.scheduler.n_chunks,
            **self.counts,
            "rejections": dict(self.rejections),
            "rejections_total": int(sum(self.rejections.values())),
            "clamps": dict(self.clamps),
            "clamps_total": int(sum(self.clamps.values())),
            "holds": dict(self.holds),
            "fk_evals": self.filter.fk_evals,
        }

    def diagnostics_flat(self, now: float | None = None) -> dict[str, str]:
        """`diagnostics()` flattened to string key/values ('rejections.stale': '3'), as diagnostic_msgs wants."""
        out: dict[str, str] = {}
        for k, v in self.diagnostics(now).items():
            if isinstance(v, dict):
                for k2, v2 in sorted(v.items()):
                    out[f"{k}.{k2}"] = str(v2)
            elif isinstance(v, float):
                out[k] = f"{v:.4f}"
            else:
                out[k] = "" if v is None else str(v)
        return out
