"""Braking-aware joint motion filter: the last computation before a joint command leaves the executor.

State: commanded joints q (6), commanded joint velocity v (6), gripper command g in [0, 1].
Each control tick (duration dt) moves q toward a joint target under

  - position limits with margin: lower + margin <= q <= upper - margin (URDF limits),
  - velocity |v_j| <= vmax, acceleration |v_j' - v_j| / dt <= amax, with v' = (q' - q) / dt,
  - workspace: the EE position (FK of q) stays inside the workspace box.

Invariant kept by induction ("safe state"): from (q, v) the arm can brake to rest inside the limits. The
braking manoeuvre is *proportional braking*: every joint decelerates in proportion to its velocity,
v <- v * max(0, 1 - amax dt / max|v|), q <- q + v dt. All joints stop together, and the positions stay on the
joint-space segment S(q, v) = [q, q + v T / 2], T = max|v| / amax (the discrete semi-implicit steps travel
no farther than the continuous motion, whatever the dt sequence). After one braking step the new segment is
contained in the old one, so a state whose segment is certified safe stays safe while braking.

A candidate (q', v') is accepted only if S(q', v') is certified: both end points inside the joint box
(the box is convex) and every point's FK inside the workspace box. The FK certificate uses a Lipschitz bound:
|p(a) - p(b)| <= sum_j R_j |a_j - b_j|, R_j = the sum of the URDF origin offsets from joint j to the EE (an
upper bound of the EE's distance to joint j's axis). A sub-segment [a, b] is inside the box when
margin(p(a)) + margin(p(b)) >= sum_j R_j |b_j - a_j| (margin = distance to the nearest box face); otherwise
it is bisected, up to `max_depth` levels, then declared unsafe. Candidates tried: the tracking step, then
blends with the braking step (lambda = 0.5, 0.25), then the braking step itself (always safe).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from etc_ros.core.errors import SafetyError
from etc_ros.core.spec import BASE_FRAME, EE_FRAME, SafetyLimits

N_JOINTS = 6
BLENDS: tuple[float, ...] = (1.0, 0.5, 0.25)


def reach_bounds_from_urdf(model=None, base: str = BASE_FRAME, tip: str = EE_FRAME,
                           joint_names: Sequence[str] | None = None) -> np.ndarray:
    """R_j for each movable joint on the chain base -> tip: sum of |origin xyz| of all joints after j.
    The EE is at most R_j from joint j's origin, which lies on its axis, so |dp/dq_j| <= R_j."""
    if model is None:
        from etc_ros.core.urdf import load_urdf

        model = load_urdf()
    chain = model.chain(base, tip)
    out = []
    for i, j in enumerate(chain):
        if not j.movable:
            continue
        if joint_names is not None and j.name not in joint_names:
            continue
        out.append(sum(float(np.linalg.norm(k.origin.xyz)) for k in chain[i + 1:]))
    return np.asarray(out, dtype=float)


def validate_limits(limits: SafetyLimits) -> None:
    """Raise SafetyError naming the first bad field of `limits`."""
    for name in ("joint_margin", "max_joint_velocity", "max_joint_acceleration", "max_ee_step",
                 "max_gripper_rate", "max_observation_age", "chunk_timeout", "camera_timeout"):
        val = getattr(limits, name)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise SafetyError(f"safety limit {name} must be a finite number, got {val!r}")
        if name == "joint_margin" and val < 0:
            raise SafetyError(f"safety limit joint_margin must be >= 0, got {val}")
        if name != "joint_margin" and val <= 0:
            raise SafetyError(f"safety limit {name} must be > 0, got {val}")
    lo, hi = np.asarray(limits.workspace.low, float), np.asarray(limits.workspace.high, float)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise SafetyError(f"workspace box needs finite low/high triples, got {limits.workspace}")
    if np.any(lo >= hi):
        raise SafetyError(f"workspace box low {tuple(lo)} must be below high {tuple(hi)} on every axis")


@dataclass
class FilterStep:
    q: np.ndarray
    v: np.ndarray
    gripper: float
    blend: float  # 1.0 = tracking step accepted, 0.0 = braking step
    clamps: list[str] = field(default_factory=list)  # which limits shaped this step


class MotionFilter:
    """Moves the commanded joints toward a target under the limits, keeping the braking invariant."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, limits: SafetyLimits,
                 fk_positions: Callable[[np.ndarray], np.ndarray], reach: np.ndarray,
                 box_shrink: float = 1e-6, max_depth: int = 6, split: int = 4, max_samples: int = 1024,
                 blends: Sequence[float] = BLENDS):
        """fk_positions: (n, 6) joint vectors -> (n, 3) EE positions (batched FK)."""
        validate_limits(limits)
        lower = np.asarray(lower, dtype=float).reshape(-1)
        upper = np.asarray(upper, dtype=float).reshape(-1)
        reach = np.asarray(reach, dtype=float).reshape(-1)
        if not (lower.shape == upper.shape == reach.shape == (N_JOINTS,)):
            raise SafetyError(f"lower/upper/reach must have {N_JOINTS} entries, got "
                              f"{lower.shape}, {upper.shape}, {reach.shape}")
        self.limits = limits
        self.lo = lower + limits.joint_margin
        self.hi = upper - limits.joint_margin
        if np.any(self.lo > self.hi):
            raise SafetyError(f"joint_margin {limits.joint_margin} leaves no room between the URDF limits")
        self.vmax = float(limits.max_joint_velocity)
        self.amax = float(limits.max_joint_acceleration)
        self.gripper_rate = float(limits.max_gripper_rate)
        self.box_lo = np.asarray(limits.workspace.low, dtype=float) + box_shrink
        self.box_hi = np.asarray(limits.workspace.high, dtype=float) - box_shrink
        self.fk_positions = fk_positions
        self.reach = np.abs(reach)
        self.max_depth = int(max_depth)
        self.split = max(2, int(split))
        self.max_samples = int(max_samples)
        self.blends = tuple(float(b) for b in blends if 0.0 < b <= 1.0)
        self.q = np.zeros(N_JOINTS)
        self.v = np.zeros(N_JOINTS)
        self.gripper = 0.0
        self.fk_evals = 0

    # ---- state --------------------------------------------------------------------------------------------
    def reset(self, q: np.ndarray, gripper: float) -> None:
        """Anchor at rest at q (must already be known to be safe, see `pose_problem`)."""
        self.q = np.asarray(q, dtype=float).reshape(N_JOINTS).copy()
        self.v = np.zeros(N_JOINTS)
        self.gripper = float(np.clip(gripper, 0.0, 1.0))

    def margin(self, p: np.ndarray) -> float:
        """Distance from p to the nearest face of the (shrunk) workspace box; negative outside."""
        return float(min(np.min(p - self.box_lo), np.min(self.box_hi - p)))

    def pose_problem(self, q: np.ndarray) -> str:
        """'' if q is a safe rest pose, else a sentence saying which limit it violates."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)):
            return f"joint vector must be {N_JOINTS} finite numbers"
        bad = np.nonzero((q < self.lo - 1e-12) | (q > self.hi + 1e-12))[0]
        if bad.size:
            j = int(bad[0])
            return (f"joint {j} at {q[j]:.4f} rad is outside [{self.lo[j]:.4f}, {self.hi[j]:.4f}] "
                    f"(URDF limits minus margin {self.limits.joint_margin})")
        p = np.asarray(self.fk_positions(q[None]), dtype=float).reshape(3)
        self.fk_evals += 1
        if self.margin(p) < 0:
            return (f"end effector at {np.round(p, 4).tolist()} m is outside the workspace box "
                    f"{tuple(self.limits.workspace.low)}..{tuple(self.limits.workspace.high)}")
        return ""

    def stop_point(self, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        vm = float(np.max(np.abs(v)))
        if vm == 0.0:
            return q.copy()
        return q + v * (vm / self.amax) / 2.0

    def state_is_safe(self, q: np.ndarray, v: np.ndarray) -> bool:
        """True if braking from (q, v) provably stays inside the joint box and the workspace."""
        q_end = self.stop_point(q, v)
        for x in (q, q_end):
            if np.any(x < self.lo) or np.any(x > self.hi):
                return False
        if np.any(np.abs(v) > self.vmax * (1 + 1e-12)):
            return False
        return self._segment_in_box(q, q_end)

    def _margins(self, Q: np.ndarray) -> np.ndarray:
        """Box margins of the EE for a batch of joint vectors (n, 6) -> (n,), one batched FK call."""
        P = np.asarray(self.fk_positions(Q), dtype=float).reshape(-1, 3)
        self.fk_evals += P.shape[0]
        return np.minimum(np.min(P - self.box_lo, axis=1), np.min(self.box_hi - P, axis=1))

    def _segment_in_box(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Certify FK(a + t (b - a)) inside the box for all t in [0, 1] (see the module docstring).
        Intervals failing the Lipschitz test are split in `split` parts, level by level, each level one
        batched FK call; unsafe if a sample is outside, or if intervals still fail after `max_depth` levels."""
        d = b - a
        if not np.any(d):
            return bool(self._margins(a[None])[0] >= 0)
        m = self._margins(np.stack([a, b]))
        if np.any(m < 0):
            return False
        L = float(self.reach @ np.abs(d))  # Lipschitz bound over the whole segment
        t = np.array([0.0, 1.0])
        for _ in range(self.max_depth):
            # intervals [t_i, t_{i+1}] whose end-point margins do not cover their length
            bad = np.nonzero(m[:-1] + m[1:] < L * np.diff(t))[0]
            if bad.size == 0:
                return True
            if t.size + bad.size * (self.split - 1) > self.max_samples:
                return False
            frac = np.arange(1, self.split) / self.split
            t_new = (t[bad, None] + np.diff(t)[bad, None] * frac[None, :]).reshape(-1)
            m_new = self._margins(a[None, :] + t_new[:, None] * d[None, :])
            if np.any(m_new < 0):
                return False
            t_all = np.concatenate([t, t_new])
            order = np.argsort(t_all, kind="stable")
            t, m = t_all[order], np.concatenate([m, m_new])[order]
        return bool(np.all(m[:-1] + m[1:] >= L * np.diff(t)))

    # ---- one control tick ---------------------------------------------------------------------------------
    def braking_step(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        vm = float(np.max(np.abs(self.v)))
        if vm == 0.0:
            return self.q.copy(), np.zeros(N_JOINTS)
        s = max(0.0, 1.0 - self.amax * dt / vm)
        v_new = self.v * s
        return self.q + v_new * dt, v_new

    def tracking_velocity(self, q_target: np.ndarray, dt: float, clamps: list[str],
                          v_ff: np.ndarray | None = None) -> np.ndarray:
        """Per joint: feed-forward velocity of the reference plus the velocity that closes the gap to it and can
        still stop on it (sqrt(2 amax |e|), at most |e| / dt), then acceleration- and velocity-limited."""
        e = q_target - self.q
        ae = np.abs(e)
        v_des = np.sign(e) * np.minimum(np.minimum(self.vmax, np.sqrt(2.0 * self.amax * ae)), ae / dt)
        if v_ff is not None:
            v_des = v_des + v_ff
        dv = v_des - self.v
        lim = self.amax * dt
        if np.any(np.abs(dv) > lim):
            clamps.append("acceleration")
        v_new = self.v + np.clip(dv, -lim, lim)
        if np.any(np.abs(v_new) > self.vmax):
            clamps.append("velocity")
        return np.clip(v_new, -self.vmax, self.vmax)

    def step(self, q_target: np.ndarray | None, gripper_target: float | None, dt: float,
             v_ff: np.ndarray | None = None) -> FilterStep:
        """Advance one tick of length dt > 0 toward q_target (a reference moving at v_ff, if given).
        q_target None -> brake to rest and hold. Whatever the inputs, the result keeps the invariant."""
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise SafetyError(f"filter step needs a finite dt > 0, got {dt!r}")
        clamps: list[str] = []
        q_b, v_b = self.braking_step(dt)
        blend = 0.0
        q_new, v_new = q_b, v_b
        if q_target is not None:
            qt = np.asarray(q_target, dtype=float).reshape(N_JOINTS)
            if not np.all(np.isfinite(qt)):
                raise SafetyError("joint target contains NaN or Inf")
            qt_c = np.clip(qt, self.lo, self.hi)
            if np.any(qt_c != qt):
                clamps.append("joint_position")
            if v_ff is not None:
                v_ff = np.asarray(v_ff, dtype=float).reshape(N_JOINTS)
                if not np.all(np.isfinite(v_ff)):
                    raise SafetyError("feed-forward velocity contains NaN or Inf")
            v_c = self.tracking_velocity(qt_c, dt, clamps, v_ff)
            for lam in self.blends:
                v_try = lam * v_c + (1.0 - lam) * v_b
                q_try = self.q + v_try * dt
                if self.state_is_safe(q_try, v_try):
                    q_new, v_new, blend = q_try, v_try, lam
                    break
            if blend < 1.0:
                clamps.append("braking")
        self.q, self.v = q_new, v_new
        # gripper: rate limited, clipped to [0, 1]
        if gripper_target is not None and math.isfinite(float(gripper_target)):
            gt = float(np.clip(gripper_target, 0.0, 1.0))
            step = self.gripper_rate * dt
            d = gt - self.gripper
            if abs(d) > step:
                clamps.append("gripper_rate")
                d = math.copysign(step, d)
            self.gripper = float(np.clip(self.gripper + d, 0.0, 1.0))
        return FilterStep(self.q.copy(), self.v.copy(), self.gripper, blend, clamps)
