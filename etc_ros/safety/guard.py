"""Last line of defence in the driver node: refuse any joint command outside the hard limits, whoever sent it.

    guard = JointCommandGuard(limits)                 # URDF joint limits through the shared kinematics
    ok, reason = guard.check(q_cmd, q_prev, dt)       # stateless
    ok, reason = guard.accept(q_cmd, now)             # stateful: remembers the last accepted command

Checks, in order (the first failure is the reason): shape (6,), finite values, joint position limits minus
`joint_margin`, workspace box (FK of q_cmd), velocity |q_cmd - q_prev| / dt <= vmax, and, when the previous
velocity is known, acceleration |v - v_prev| / dt <= amax. A small relative tolerance (`tol`) absorbs float
rounding of commands that the executor produced exactly at the limit. A refused command must not be sent;
the driver keeps the arm at its last accepted command.
"""
from __future__ import annotations

import math

import numpy as np

from etc_ros.core.errors import SafetyError
from etc_ros.core.spec import SafetyLimits
from etc_ros.safety.filter import N_JOINTS, validate_limits


class JointCommandGuard:
    def __init__(self, limits: SafetyLimits | None = None, kin=None, tol: float = 1e-6,
                 lower: np.ndarray | None = None, upper: np.ndarray | None = None, fk_position=None,
                 check_acceleration: bool = True, min_dt: float = 0.0, accel_slack: float = 1.0):
        """`kin` defaults to WidowXKinematics.from_urdf(); lower/upper/fk_position override it (tests).
        `min_dt`: the stateful `accept` never divides by less than this (bursts of messages).
        `accel_slack`: the acceleration check allows accel_slack x amax. With dt taken from a jittery wall
        clock a late message looks like a deceleration spike: a driver timing messages itself should use
        min_dt = the control period and accel_slack of about 3 (or check_acceleration=False); position,
        workspace and velocity stay strict."""
        self.limits = limits if limits is not None else SafetyLimits()
        validate_limits(self.limits)
        if lower is None or upper is None or fk_position is None:
            if kin is None:
                from etc_ros.core.kinematics import WidowXKinematics

                kin = WidowXKinematics.from_urdf()
            lower = kin.lower if lower is None else lower
            upper = kin.upper if upper is None else upper
            if fk_position is None:
                fk_position = lambda q: np.asarray(kin.fk(q), dtype=float)[:3, 3]  # noqa: E731
        self.lo = np.asarray(lower, dtype=float).reshape(N_JOINTS) + self.limits.joint_margin
        self.hi = np.asarray(upper, dtype=float).reshape(N_JOINTS) - self.limits.joint_margin
        self.fk_position = fk_position
        self.tol = float(tol)
        self.check_acceleration = bool(check_acceleration)
        self.min_dt = float(min_dt)
        self.accel_slack = float(accel_slack)
        if not (self.accel_slack >= 1.0 and math.isfinite(self.accel_slack)):
            raise SafetyError(f"accel_slack must be a finite number >= 1, got {accel_slack!r}")
        self.box_lo = np.asarray(self.limits.workspace.low, dtype=float)
        self.box_hi = np.asarray(self.limits.workspace.high, dtype=float)
        # stateful part
        self._q: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t: float | None = None
        self.refused: dict[str, int] = {}

    # ---- stateless ----------------------------------------------------------------------------------------
    def check(self, q_cmd, q_prev=None, dt: float | None = None, v_prev=None) -> tuple[bool, str]:
        """(True, 'ok') or (False, reason). q_prev + dt enable the velocity check, v_prev the acceleration."""
        ok, _, reason = self._check(q_cmd, q_prev, dt, v_prev)
        return ok, reason

    def _check(self, q_cmd, q_prev, dt, v_prev) -> tuple[bool, str, str]:
        try:
            q = np.asarray(q_cmd, dtype=float)
        except (TypeError, ValueError):
            return False, "shape", "command is not a numeric vector"
        if q.shape != (N_JOINTS,):
            return False, "shape", f"command must have {N_JOINTS} joint values, got shape {q.shape}"
        if not np.all(np.isfinite(q)):
            return False, "nonfinite", "command contains NaN or Inf"
        tol = self.tol
        bad = np.nonzero((q < self.lo - tol) | (q > self.hi + tol))[0]
        if bad.size:
            j = int(bad[0])
            return False, "position", (f"joint {j} command {q[j]:.4f} rad outside [{self.lo[j]:.4f}, {self.hi[j]:.4f}] "
                           f"(limits minus margin)")
        p = np.asarray(self.fk_position(q), dtype=float)
        if np.any(p < self.box_lo - tol) or np.any(p > self.box_hi + tol):
            return False, "workspace", f"end effector {np.round(p, 4).tolist()} m outside the workspace box"
        if q_prev is not None:
            qp = np.asarray(q_prev, dtype=float)
            if qp.shape != (N_JOINTS,) or not np.all(np.isfinite(qp)):
                return False, "history", "previous command is not 6 finite values"
            if dt is None or not math.isfinite(float(dt)) or float(dt) <= 0:
                return False, "dt", f"dt must be a finite number > 0 to check the velocity, got {dt!r}"
            dt = float(dt)
            vmax, amax = self.limits.max_joint_velocity, self.limits.max_joint_acceleration
            v = (q - qp) / dt
            j = int(np.argmax(np.abs(v)))
            if abs(v[j]) > vmax * (1 + tol) + tol:
                return False, "velocity", f"joint {j} velocity {v[j]:.3f} rad/s exceeds {vmax} rad/s"
            if v_prev is not None and self.check_acceleration:
                vp = np.asarray(v_prev, dtype=float)
                if vp.shape != (N_JOINTS,) or not np.all(np.isfinite(vp)):
                    return False, "history", "previous velocity is not 6 finite values"
                a = (v - vp) / dt
                j = int(np.argmax(np.abs(a)))
                if abs(a[j]) > amax * self.accel_slack * (1 + tol) + tol:
                    return False, "acceleration", f"joint {j} acceleration {a[j]:.3f} rad/s^2 exceeds {amax} rad/s^2"
        return True, "ok", "ok"

    def check_gripper(self, g) -> tuple[bool, str]:
        try:
            g = float(g)
        except (TypeError, ValueError):
            return False, "gripper command is not a number"
        if not math.isfinite(g) or g < 0.0 or g > 1.0:
            return False, f"gripper command {g!r} outside [0, 1]"
        return True, "ok"

    # ---- stateful -----------------------------------------------------------------------------------------
    def reset(self, q_measured=None, now: float | None = None) -> None:
        """Forget the history; with q_measured, the next command's velocity is checked against it (at rest)."""
        if q_measured is None:
            self._q = self._v = self._t = None
            return
        q = np.asarray(q_measured, dtype=float)
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)):
            raise SafetyError(f"guard reset needs {N_JOINTS} finite joint values, got {q_measured!r}")
        if now is None or not math.isfinite(float(now)):
            raise SafetyError(f"guard reset needs a finite time, got {now!r}")
        self._q, self._v, self._t = q.copy(), np.zeros(N_JOINTS), float(now)

    def accept(self, q_cmd, now: float, dt: float | None = None) -> tuple[bool, str]:
        """Check q_cmd against the last accepted command (dt = given, else now - last time, at least min_dt)
        and remember it when accepted. Refusals are counted by kind in `refused`. The first command after
        reset(None) has no history: only position and workspace are checked, the next one gets the velocity
        check, the one after that the acceleration check too."""
        try:
            now = float(now)
        except (TypeError, ValueError):
            now = float("nan")
        if not math.isfinite(now):
            return self._refuse("time", f"bad command time {now!r}")
        if self._q is None:
            ok, code, reason = self._check(q_cmd, None, None, None)
            v = None
        else:
            assert self._t is not None, "reset(q_measured, now) sets the time with the joints"
            d = float(dt) if dt is not None else max(now - float(self._t), self.min_dt)
            ok, code, reason = self._check(q_cmd, self._q, d, self._v)
            v = None if not ok else (np.asarray(q_cmd, dtype=float) - self._q) / d
        if not ok:
            return self._refuse(code, reason)
        self._q, self._v, self._t = np.asarray(q_cmd, dtype=float).copy(), v, now
        return True, reason

    def _refuse(self, code: str, reason: str) -> tuple[bool, str]:
        self.refused[code] = self.refused.get(code, 0) + 1
        return False, reason
