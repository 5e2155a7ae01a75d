"""Forward / inverse kinematics of the WidowX 250 6DOF (wx250s), numpy only, built from urdf/wx250s.urdf.

Every number comes from the URDF: the joint chain base_link -> ee_gripper_link is read at construction, and the
product-of-exponentials description (space-frame screw axes [w|v], one row per joint, and the home pose M of
ee_gripper_link) is derived from that chain, never typed in.

Frames: all poses are 4x4 transforms of a link in base_link. Joint vectors are the six arm joints in
`spec.JOINT_NAMES` order [rad].

Bridge-style 7-D actions (spec.py): a = [dx, dy, dz, droll, dpitch, dyaw, gripper].
  `apply_action`:  p_new = p + [dx, dy, dz]                      (translation added in the base frame)
                   R_new = R_delta @ R_current, R_delta = euler_to_matrix(droll, dpitch, dyaw)  ('sxyz',
                   i.e. Rz(dyaw) Ry(dpitch) Rx(droll), applied on the left = about the base-frame axes, about
                   the EE origin: the EE position is not moved by the rotation)
  `action_between` is its exact inverse: dp = p1 - p0, [droll, dpitch, dyaw] = matrix_to_euler(R1 @ R0^T).
  The gripper entry is absolute (1 = open) and passed through.

Inverse kinematics: damped least squares (Levenberg-Marquardt style Newton steps) on the geometric Jacobian
(the space Jacobian with its linear part moved to the EE point), clamp-and-continue at the URDF joint limits
(a joint sitting on a limit that the step would push further out is frozen for that step), stopped per seed when
the error stalls, tried from the caller's seed, then from a seed aimed at the target, then from the Interbotix seeds
(all joints 0, waist 0 / -120 deg / +120 deg), then from a few fixed pseudo-random seeds. A solution is only reported
as successful if forward kinematics of the returned, in-limit q meets both tolerances.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import KinematicsError, UrdfError
from etc_ros.core.transforms3d import (
    euler_to_matrix,
    matrix_to_euler,
    so3_log,
    xyzrpy_to_pose,
)
from etc_ros.core.urdf import Joint, UrdfModel, load_urdf

__all__ = ["IKResult", "WidowXKinematics", "apply_action", "action_between"]

_TWO_PI = 2.0 * math.pi


@dataclass
class IKResult:
    q: np.ndarray  # (6,) joint solution (best attempt when success is False); always inside the joint limits
    success: bool
    pos_error: float  # m, |p_target - p(q)|
    rot_error: float  # rad, angle of R_target @ R(q)^T
    iterations: int  # Newton iterations over all seeds tried
    message: str
    seed_index: int = -1  # which seed produced q (-1: none tried)


# ---------------------------------------------------------------------------------------------------------------
# Bridge action <-> EE pose (pure functions; the class exposes them as methods too)
def _check_T(T, name: str = "T") -> np.ndarray:
    T = np.asarray(T, dtype=float)
    if T.shape[-2:] != (4, 4):
        raise KinematicsError(f"{name} must be a 4x4 homogeneous transform, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise KinematicsError(f"{name} contains non-finite values")
    R = T[..., :3, :3]
    det = np.einsum("...i,...i->...", R[..., 0, :], _cross(R[..., 1, :], R[..., 2, :]))
    if (np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max() > 1e-6 or np.any(det <= 0)
            or np.abs(T[..., 3, :] - (0.0, 0.0, 0.0, 1.0)).max() > 1e-9):
        raise KinematicsError(f"{name} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return T


def _check_action(action) -> np.ndarray:
    a = np.asarray(action, dtype=float)
    if a.shape[-1:] not in ((6,), (7,)):
        raise KinematicsError(f"action must have 6 or 7 entries [dx dy dz droll dpitch dyaw (gripper)], got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise KinematicsError("action contains non-finite values")
    return a


def apply_action(T_ee, action) -> np.ndarray:
    """EE pose after a Bridge action (see module docstring). T_ee (..., 4, 4), action (..., 6|7)."""
    return _apply_action(_check_T(T_ee, "T_ee"), _check_action(action))


def _apply_action(T: np.ndarray, a: np.ndarray) -> np.ndarray:
    out = np.array(np.broadcast_to(T, np.broadcast_shapes(T.shape, a.shape[:-1] + (4, 4))))
    out[..., :3, 3] = T[..., :3, 3] + a[..., :3]
    out[..., :3, :3] = euler_to_matrix(a[..., 3:6]) @ T[..., :3, :3]
    return out


def action_between(T0, T1, gripper=1.0) -> np.ndarray:
    """The Bridge action taking EE pose T0 to T1 (exact inverse of `apply_action`); gripper passed through."""
    T0, T1 = _check_T(T0, "T0"), _check_T(T1, "T1")
    g = np.asarray(gripper, dtype=float)
    if not np.all(np.isfinite(g)):
        raise KinematicsError("gripper command is not finite")
    dp = T1[..., :3, 3] - T0[..., :3, 3]
    drpy = matrix_to_euler(T1[..., :3, :3] @ np.swapaxes(T0[..., :3, :3], -1, -2))
    g = np.broadcast_to(g, dp.shape[:-1])[..., None]
    return np.concatenate([dp, drpy, g], -1)


# ---------------------------------------------------------------------------------------------------------------

_LEVI_CIVITA = np.zeros((3, 3, 3))
_LEVI_CIVITA[0, 1, 2] = _LEVI_CIVITA[1, 2, 0] = _LEVI_CIVITA[2, 0, 1] = 1.0
_LEVI_CIVITA[0, 2, 1] = _LEVI_CIVITA[2, 1, 0] = _LEVI_CIVITA[1, 0, 2] = -1.0


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product along the last axis (np.cross is slow on small arrays)."""
    return np.einsum("ijk,...j,...k->...i", _LEVI_CIVITA, a, b)


def _rot_log(R: np.ndarray) -> np.ndarray:
    """Fast so3 log of one rotation matrix (falls back to the robust version near pi)."""
    c = (float(np.trace(R)) - 1.0) * 0.5
    if c < -0.999:
        return so3_log(R)
    c = min(c, 1.0)
    th = math.acos(c)
    k = 0.5 * (1.0 + th * th / 6.0) if th < 1e-6 else 0.5 * th / math.sin(th)
    r = R.ravel().tolist()
    return np.array([(r[7] - r[5]) * k, (r[2] - r[6]) * k, (r[3] - r[1]) * k])


def _skew(a: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])


class WidowXKinematics:
    """Kinematics of the arm chain base -> tip of a URDF (defaults: wx250s, base_link -> ee_gripper_link)."""

    def __init__(self, model: UrdfModel, base: str = robot_spec.BASE_FRAME, tip: str = robot_spec.EE_FRAME,
                 joint_names: Sequence[str] = robot_spec.JOINT_NAMES):
        self.model = model
        self.base, self.tip = base, tip
        try:
            chain = model.chain(base, tip)
        except UrdfError as exc:
            raise KinematicsError(f"cannot build the arm chain {base} -> {tip}: {exc}") from None
        movable = [j for j in chain if j.type != "fixed"]
        names = tuple(j.name for j in movable)
        if names != tuple(joint_names):
            raise KinematicsError(
                f"URDF chain {base} -> {tip} has movable joints {names}, expected {tuple(joint_names)}")
        for j in movable:
            if j.type not in ("revolute", "continuous", "prismatic"):
                raise KinematicsError(f"joint '{j.name}' has unsupported type '{j.type}'")
            if j.mimic is not None:
                raise KinematicsError(f"arm joint '{j.name}' is a mimic joint; not supported")
        self.joint_names: tuple[str, ...] = names
        self.n = len(names)
        self._joints: list[Joint] = movable
        # fixed transform before each movable joint (accumulated fixed joints + the joint's own origin), and tail
        pre, acc = [], np.eye(4)
        for j in chain:
            acc = acc @ j.origin.matrix
            if j.type != "fixed":
                pre.append(acc)
                acc = np.eye(4)
        self._pre = np.stack(pre)
        self._tail = acc
        self._types = [j.type for j in movable]
        self._axes = np.array([j.axis for j in movable], dtype=float)
        self._K = np.stack([_skew(a) for a in self._axes])
        self._K2 = self._K @ self._K
        self._revolute = np.array([t != "prismatic" for t in self._types])
        self._has_prismatic = not bool(np.all(self._revolute))
        self._Kr = self._K * self._revolute[:, None, None]
        self._K2r = self._K2 * self._revolute[:, None, None]
        self._axes_p = self._axes * ~self._revolute[:, None]
        self._eye3 = np.eye(3)
        self._mot0 = np.broadcast_to(np.eye(4), (len(movable), 4, 4)).copy()
        self.lower = np.array([j.limit.lower if j.limit is not None and j.type != "continuous" else -np.inf
                               for j in movable])
        self.upper = np.array([j.limit.upper if j.limit is not None and j.type != "continuous" else np.inf
                               for j in movable])
        self.velocity_limits = np.array([j.limit.velocity if j.limit is not None else np.inf for j in movable])
        self.effort_limits = np.array([j.limit.effort if j.limit is not None else np.inf for j in movable])
        # joints whose range spans (almost) a full turn: values are wrapped to [-pi, pi) during IK
        self._wrap = self._revolute & ((self.upper - self.lower) >= _TWO_PI - 1e-3)
        self._any_wrap = bool(np.any(self._wrap))
        gj = model.joints.get(robot_spec.GRIPPER_JOINT)
        self.finger_limits: tuple[float, float] | None = (
            (gj.limit.lower, gj.limit.upper) if gj is not None and gj.limit is not None else None)
        # PoE description derived from the chain at q = 0
        self.M = self.fk(np.zeros(self.n))
        self.screw_axes = self.jacobian_space(np.zeros(self.n)).T.copy()  # (6 joints, [w|v])
        # reach bound: the tip is never farther from the 2nd joint's origin than the sum of the segment lengths
        # between consecutive joint origins (rigid links; the 1st joint cannot move the 2nd joint's origin)
        _, P0, _ = self._chain(np.zeros(self.n))
        pts = list(P0) + [self.M[:3, 3]]
        self._reach_origin = pts[1].copy()
        self._reach = float(sum(np.linalg.norm(pts[i + 1] - pts[i]) for i in range(1, len(pts) - 1)))
        if self._has_prismatic:  # segment lengths are not fixed: no cheap reach bound
            self._reach = math.inf
        self._random_seeds = self.random_configurations(8, rng=12345, margin=0.1)

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_urdf(cls, path: str | Path | None = None, **kwargs) -> "WidowXKinematics":
        return cls(load_urdf(path), **kwargs)

    # ---- input checks -----------------------------------------------------------------------------------------
    def _q(self, q, name: str = "q") -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.ndim == 0 or q.shape[-1] != self.n:
            raise KinematicsError(f"{name} must have {self.n} joint values {self.joint_names}, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise KinematicsError(f"{name} contains non-finite values")
        return q

    # ---- forward kinematics -----------------------------------------------------------------------------------
    def _chain(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched chain walk over q (..., n): returns (A, P, T) with A (..., n, 3) the joint axes in base_link,
        P (..., n, 3) the joint frame origins (points on the axes) and T (..., 4, 4) the tip pose."""
        if q.ndim == 1:
            return self._chain1(q)
        qt = np.moveaxis(q, -1, 0)  # (n, ...)
        ex = (slice(None),) + (None,) * (qt.ndim - 1)
        s, c = np.sin(qt)[..., None, None], np.cos(qt)[..., None, None]
        mot = np.zeros(qt.shape + (4, 4))
        # Rodrigues; K is zero for prismatic joints, so their rotation is the identity
        mot[..., :3, :3] = self._eye3 + s * self._Kr[ex] + (1.0 - c) * self._K2r[ex]
        if self._has_prismatic:
            mot[..., :3, 3] = qt[..., None] * self._axes_p[ex]
        mot[..., 3, 3] = 1.0
        local = self._pre[ex] @ mot  # (n, ..., 4, 4) parent -> child of each movable joint, fixed joints folded in
        T = local[0]
        cum = [T]
        for i in range(1, self.n):
            T = T @ local[i]
            cum.append(T)
        cum = np.stack(cum, -3)  # (..., n, 4, 4)
        # a joint's axis in base_link is invariant under its own motion; so is its origin for revolute joints
        A = np.einsum("...ij,...j->...i", cum[..., :3, :3], self._axes)
        P = cum[..., :3, 3]
        if self._has_prismatic:
            P = P - A * (q * ~self._revolute)[..., None]
        return A, P, T @ self._tail

    def _chain1(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`_chain` for a single joint vector (the IK inner loop; few numpy calls)."""
        s = np.sin(q)[:, None, None]
        c = (1.0 - np.cos(q))[:, None, None]
        mot = self._mot0.copy()
        mot[:, :3, :3] += s * self._Kr + c * self._K2r
        if self._has_prismatic:
            mot[:, :3, 3] = q[:, None] * self._axes_p
        local = self._pre @ mot
        cum = np.empty_like(local)
        cum[0] = local[0]
        for i in range(1, self.n):
            np.matmul(cum[i - 1], local[i], out=cum[i])
        A = (cum[:, :3, :3] @ self._axes[:, :, None])[:, :, 0]
        P = cum[:, :3, 3]
        if self._has_prismatic:
            P = P - A * (q * ~self._revolute)[:, None]
        return A, P, cum[-1] @ self._tail

    def fk(self, q) -> np.ndarray:
        """Pose of the tip link (ee_gripper_link) in base_link by composing the URDF chain.
        q (..., 6) -> (..., 4, 4)."""
        return self._chain(self._q(q))[2]

    def fk_poe(self, q) -> np.ndarray:
        """Same pose by the product of exponentials: exp([S1] q1) ... exp([S6] q6) M."""
        q = self._q(q)
        T = np.broadcast_to(np.eye(4), q.shape[:-1] + (4, 4))
        for i in range(self.n):
            w, v = self.screw_axes[i, :3], self.screw_axes[i, 3:]
            th = q[..., i]
            E = np.zeros(th.shape + (4, 4))
            E[..., 3, 3] = 1.0
            if self._revolute[i]:  # unit w: R = I + sin K + (1-cos) K^2, p = (I th + (1-cos) K + (th-sin) K^2) v
                K = _skew(w)
                K2 = K @ K
                s, c = np.sin(th)[..., None, None], np.cos(th)[..., None, None]
                E[..., :3, :3] = np.eye(3) + s * K + (1.0 - c) * K2
                G = np.eye(3) * th[..., None, None] + (1.0 - c) * K + (th[..., None, None] - s) * K2
                E[..., :3, 3] = G @ v
            else:
                E[..., :3, :3] = np.eye(3)
                E[..., :3, 3] = th[..., None] * v
            T = T @ E
        return T @ self.M

    def joint_values(self, q, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Values of every movable joint of the URDF: arm joints from q (6,), others from `extra`
        (default: 0 clipped into the joint's limits, e.g. fingers closed), mimic joints resolved."""
        q = self._q(q)
        if q.ndim != 1:
            raise KinematicsError("joint_values takes a single joint vector")
        vals = {n: float(v) for n, v in zip(self.joint_names, q)}
        extra = dict(extra or {})
        for name in extra:
            if name not in self.model.joints:
                raise KinematicsError(f"unknown joint '{name}' in extra joint values")
        for j in self.model.joints.values():
            if j.name in vals or not j.movable or j.mimic is not None:
                continue
            v = float(extra.get(j.name, 0.0))
            if j.limit is not None and j.type != "continuous" and j.name not in extra:
                v = min(max(v, j.limit.lower), j.limit.upper)
            vals[j.name] = v
        for j in self.model.joints.values():
            if j.mimic is not None:
                vals[j.name] = j.mimic.multiplier * vals.get(j.mimic.joint, 0.0) + j.mimic.offset
        return vals

    def fk_link(self, q, link_name: str, extra: dict[str, float] | None = None) -> np.ndarray:
        """Pose in base_link of any link below base_link (arm links, fingers, camera mounts...).
        Non-arm joints take their values from `extra` (see `joint_values`). q: single (6,) vector."""
        if link_name not in self.model.links:
            raise KinematicsError(f"unknown link '{link_name}' (links: {', '.join(self.model.links)})")
        try:
            chain = self.model.chain(self.base, link_name)
        except UrdfError as exc:
            raise KinematicsError(str(exc)) from None
        vals = self.joint_values(q, extra)
        T = np.eye(4)
        for j in chain:
            T = T @ j.transform(vals.get(j.name, 0.0))
        return T

    def fk_all(self, q, extra: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Poses in base_link of every link below base_link (one tree walk)."""
        vals = self.joint_values(q, extra)
        out = {self.base: np.eye(4)}
        stack = [self.base]
        while stack:
            ln = stack.pop()
            for j in self.model.child_joints(ln):
                out[j.child] = out[ln] @ j.transform(vals.get(j.name, 0.0))
                stack.append(j.child)
        return out

    # ---- Jacobians ----------------------------------------------------------------------------------------------
    def _space_cols(self, A: np.ndarray, P: np.ndarray) -> np.ndarray:
        v = np.where(self._revolute[:, None], _cross(P, A), A)  # revolute: v = -w x p; prismatic: v = axis
        w = np.where(self._revolute[:, None], A, 0.0)
        return np.swapaxes(np.concatenate([w, v], -1), -1, -2)

    def jacobian_space(self, q) -> np.ndarray:
        """Space Jacobian (..., 6, 6): column i is joint i's screw axis [w|v] in base_link at configuration q,
        so the spatial twist of the EE is J @ qdot (v = velocity of the point at the base origin)."""
        A, P, _ = self._chain(self._q(q))
        return self._space_cols(A, P)

    def jacobian_geometric(self, q) -> np.ndarray:
        """(..., 6, 6) Jacobian mapping qdot to [angular velocity; linear velocity of the EE point] (base frame)."""
        A, P, T = self._chain(self._q(q))
        return self._geometric(A, P, T)

    def _geometric(self, A: np.ndarray, P: np.ndarray, T: np.ndarray) -> np.ndarray:
        if A.ndim == 2 and not self._has_prismatic:  # fast path used by IK
            J = np.empty((6, self.n))
            J[:3] = A.T
            J[3:] = _cross(A, T[:3, 3] - P).T
            return J
        v = np.where(self._revolute[:, None], _cross(A, T[..., None, :3, 3] - P), A)
        w = np.where(self._revolute[:, None], A, 0.0)
        return np.swapaxes(np.concatenate([w, v], -1), -1, -2)

    # ---- limits -------------------------------------------------------------------------------------------------
    def within_limits(self, q, margin: float = 0.0):
        """True if lower + margin <= q <= upper - margin for every joint (bool, or bool array for batches)."""
        q = self._q(q)
        ok = np.all((q >= self.lower + margin - 1e-12) & (q <= self.upper - margin + 1e-12), axis=-1)
        return bool(ok) if np.ndim(ok) == 0 else ok

    def clip_to_limits(self, q, margin: float = 0.0) -> np.ndarray:
        q = self._q(q)
        lo, hi = self.lower + margin, self.upper - margin
        if np.any(lo > hi):
            raise KinematicsError(f"margin {margin} is larger than half a joint range")
        return np.clip(q, lo, hi)

    def random_configurations(self, n: int, rng: np.random.Generator | int | None = 0,
                              margin: float = 0.0) -> np.ndarray:
        """n uniform samples inside the joint limits shrunk by margin, (n, 6)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        lo, hi = self.lower + margin, self.upper - margin
        lo, hi = np.where(np.isfinite(lo), lo, -math.pi), np.where(np.isfinite(hi), hi, math.pi)
        return rng.uniform(lo, hi, size=(int(n), self.n))

    # ---- inverse kinematics -----------------------------------------------------------------------------------
    def default_seeds(self, T_target: np.ndarray | None = None, n_random: int = 8) -> list[np.ndarray]:
        """Seeds tried after the caller's: one aimed at the target (waist towards it, arm in READY_POSE),
        the Interbotix ones (all zeros with waist 0, -120 deg, +120 deg), then fixed pseudo-random ones."""
        seeds = []
        if T_target is not None:
            x, y = T_target[0, 3], T_target[1, 3]
            ready = robot_spec.READY_POSE
            aimed = np.array(ready, dtype=float) if len(ready) == self.n else np.zeros(self.n)
            if math.hypot(x, y) > 1e-6:
                aimed[0] = math.atan2(y, x)
            seeds.append(self.clip_to_limits(aimed))
        for waist in (0.0, math.radians(-120.0), math.radians(120.0)):
            s = np.zeros(self.n)
            s[0] = waist
            seeds.append(self.clip_to_limits(s))
        if n_random:
            extra = self._random_seeds if n_random <= len(self._random_seeds) else \
                self.random_configurations(n_random, rng=12345, margin=0.1)
            seeds.extend(extra[:n_random])
        return seeds

    @staticmethod
    def _error(T: np.ndarray, T_target: np.ndarray) -> tuple[np.ndarray, float, float]:
        e = np.empty(6)
        e[:3] = _rot_log(T_target[:3, :3] @ T[:3, :3].T)
        e[3:] = T_target[:3, 3] - T[:3, 3]
        return e, math.sqrt(e[3:] @ e[3:]), math.sqrt(e[:3] @ e[:3])

    def _solve(self, T_target, q0, pos_tol, rot_tol, max_iters, lo, hi):
        q = np.clip(q0, lo, hi)
        A, P, T = self._chain(q)
        e, pe, re = self._error(T, T_target)
        best, stall, lam2, it = pe + re, 0, 1e-6, 0
        eye = np.eye(self.n)
        for it in range(1, max_iters + 1):
            if pe <= pos_tol and re <= rot_tol:
                return q, pe, re, it - 1, True
            J = self._geometric(A, P, T)
            JT = J.T
            dq = np.linalg.solve(JT @ J + lam2 * eye, JT @ e)
            # active set: joints sitting on a limit and pushed further out are frozen for this step
            blocked = ((q <= lo + 1e-9) & (dq < 0.0)) | ((q >= hi - 1e-9) & (dq > 0.0))
            if blocked.any():
                J = J * ~blocked
                JT = J.T
                dq = np.linalg.solve(JT @ J + lam2 * eye, JT @ e)
                dq[blocked] = 0.0
            m = np.abs(dq).max()
            if m > 0.5:  # trust region: at most 0.5 rad per iteration
                dq *= 0.5 / m
            q_new = q + dq
            if self._any_wrap:
                q_new = np.where(self._wrap, (q_new + math.pi) % _TWO_PI - math.pi, q_new)
            q_new = np.clip(q_new, lo, hi)
            A_n, P_n, T_n = self._chain(q_new)
            e_n, pe_n, re_n = self._error(T_n, T_target)
            if pe_n + re_n < pe + re:  # accept the step and relax the damping (Levenberg-Marquardt)
                q, A, P, T, e, pe, re = q_new, A_n, P_n, T_n, e_n, pe_n, re_n
                lam2 = max(lam2 * 0.3, 1e-9)
            else:  # reject, damp more
                lam2 = min(lam2 * 10.0, 1e2)
            if pe + re < 0.99 * best:  # progress = at least 1 % less error than the best so far
                best, stall = pe + re, 0
            else:
                stall += 1
                if stall >= 8:  # stuck (usually against a joint limit): give up on this seed
                    break
        return q, pe, re, it, (pe <= pos_tol and re <= rot_tol)

    def ik(self, T_target, q_seed=None, *, pos_tol: float = 1e-3, rot_tol: float = 1e-3, max_iters: int = 60,
           seeds: Iterable | None = None, margin: float = 0.0) -> IKResult:
        """Joint solution placing the tip at T_target (4x4 in base_link).

        Tries q_seed first (if given), then `seeds` (default: `default_seeds(T_target)`; pass seeds=() to use
        only q_seed). Solutions respect lower + margin <= q <= upper - margin. Returns success=False (with the
        best attempt and a message) when no seed reaches pos_tol [m] and rot_tol [rad]."""
        T_target = _check_T(T_target, "T_target")
        if T_target.ndim != 2:
            raise KinematicsError("ik takes a single 4x4 target")
        return self._ik(T_target, q_seed, pos_tol=pos_tol, rot_tol=rot_tol, max_iters=max_iters, seeds=seeds,
                        margin=margin)

    def _ik(self, T_target: np.ndarray, q_seed=None, *, pos_tol: float = 1e-3, rot_tol: float = 1e-3,
            max_iters: int = 60, seeds: Iterable | None = None, margin: float = 0.0) -> IKResult:
        if pos_tol <= 0 or rot_tol <= 0 or max_iters < 1:
            raise KinematicsError("ik needs pos_tol > 0, rot_tol > 0 and max_iters >= 1")
        lo, hi = self.lower + margin, self.upper - margin
        if np.any(lo > hi):
            raise KinematicsError(f"margin {margin} is larger than half a joint range")
        seed_list: list[np.ndarray] = []
        if q_seed is not None:
            q_seed = self._q(q_seed, "q_seed")
            if q_seed.ndim != 1:
                raise KinematicsError("q_seed must be a single joint vector")
            seed_list.append(q_seed)
        seed_list.extend(self._q(s, "seed") for s in (self.default_seeds(T_target) if seeds is None else seeds))
        if not seed_list:
            raise KinematicsError("ik needs q_seed or at least one seed")
        dist = float(np.linalg.norm(T_target[:3, 3] - self._reach_origin))
        if dist > self._reach + pos_tol:
            q = np.clip(seed_list[0], lo, hi)
            pe, re = self._error(self.fk(q), T_target)[1:]
            return IKResult(q, False, pe, re, 0,
                            f"target out of reach: {dist:.3f} m from the shoulder, arm reach {self._reach:.3f} m")
        best = None
        total = 0
        for k, s in enumerate(seed_list):
            q, pe, re, it, ok = self._solve(T_target, s, pos_tol, rot_tol, max_iters, lo, hi)
            total += it
            if ok:
                return IKResult(q, True, pe, re, total, f"converged from seed {k}", k)
            if best is None or pe + re < best[1] + best[2]:
                best = (q, pe, re, k)
        q, pe, re, k = best
        return IKResult(q, False, pe, re, total,
                        f"no solution within pos_tol={pos_tol} m / rot_tol={rot_tol} rad inside the joint limits "
                        f"from {len(seed_list)} seeds (best: pos error {pe:.4f} m, rot error {re:.4f} rad)", k)

    def ik_position_orientation(self, xyz, rpy, q_seed=None, **kwargs) -> IKResult:
        """IK for a position [m] and 'sxyz' roll/pitch/yaw [rad] in base_link."""
        xyz, rpy = np.asarray(xyz, dtype=float), np.asarray(rpy, dtype=float)
        if xyz.shape != (3,) or rpy.shape != (3,):
            raise KinematicsError(f"xyz and rpy must have 3 entries each, got {xyz.shape} and {rpy.shape}")
        if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(rpy))):
            raise KinematicsError("xyz / rpy contain non-finite values")
        return self.ik(xyzrpy_to_pose(np.concatenate([xyz, rpy])), q_seed, **kwargs)

    # ---- Bridge actions -----------------------------------------------------------------------------------------
    apply_action = staticmethod(apply_action)
    action_between = staticmethod(action_between)

    def action_to_joint_targets(self, q_current, action, clip: bool = True, *,
                                workspace: robot_spec.WorkspaceBox | None = None, fallback_seeds: bool = False,
                                **ik_kwargs) -> tuple[np.ndarray, float, IKResult]:
        """Joint targets realising a Bridge action from joint state q_current.

        clip=True clips the action to spec.ACTION_LOW/HIGH first; `workspace` (optional) clips the target EE
        position into the box. IK is seeded with q_current only (unless fallback_seeds=True), so the solution
        stays on the current branch. On IK failure q_target = q_current (hold) and result.success is False.
        Returns (q_target (6,), gripper command, IKResult)."""
        q_current = self._q(q_current, "q_current")
        if q_current.ndim != 1:
            raise KinematicsError("q_current must be a single joint vector")
        a = _check_action(action)
        if a.shape != (7,):
            raise KinematicsError(f"action must have 7 entries, got {a.shape}")
        if clip:
            a = np.clip(a, robot_spec.ACTION_LOW, robot_spec.ACTION_HIGH)
        T1 = _apply_action(self._chain1(q_current)[2], a)
        if workspace is not None:
            T1[:3, 3] = workspace.clip(T1[:3, 3])
        seeds = None if fallback_seeds else ()
        res = self._ik(T1, q_current, seeds=seeds, **ik_kwargs)
        q_target = res.q.copy() if res.success else q_current.copy()
        return q_target, float(a[6]), res

    def joint_targets_to_action(self, q0, q1, gripper=1.0) -> np.ndarray:
        """Bridge action taking fk(q0) to fk(q1) (batched over leading dims), gripper passed through."""
        return action_between(self.fk(q0), self.fk(q1), gripper)
