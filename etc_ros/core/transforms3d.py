"""Rotation and rigid-transform helpers (numpy only), shared by kinematics, simulation, ETC and the robot.

Conventions used everywhere in the project:
- Euler angles are 'sxyz' (static / extrinsic axes x, then y, then z): R = Rz(yaw) @ Ry(pitch) @ Rx(roll).
  `matrix_to_euler` returns roll, yaw in (-pi, pi] and pitch in [-pi/2, pi/2]; at gimbal lock
  (|pitch| = pi/2) yaw is set to 0 and the whole rotation about z goes into roll.
- Twists / screw axes are 6-vectors ordered [w | v] (angular first), as in the Interbotix PoE description.
  The se(3) matrix of [w|v] is [[skew(w), v], [0, 0]].
- A pose vector is [x, y, z, roll, pitch, yaw] ('sxyz').
- Quaternions are [x, y, z, w] (ROS / geometry_msgs order).
Most functions accept batches with leading dimensions (..., 3) / (..., 3, 3) / (..., 4, 4).
"""
from __future__ import annotations

import math

import numpy as np

from etc_ros.core.errors import UserError

__all__ = [
    "TransformError", "wrap_angle", "skew", "unskew", "rot_x", "rot_y", "rot_z",
    "euler_to_matrix", "matrix_to_euler", "axis_angle_to_matrix", "matrix_to_axis_angle",
    "so3_exp", "so3_log", "se3_exp", "se3_log", "se3_hat", "adjoint", "make_transform", "invert_transform",
    "pose_to_xyzrpy", "xyzrpy_to_pose", "quat_to_matrix", "matrix_to_quat", "rotation_angle", "is_rotation",
    "nearest_rotation", "mean_transform",
]

_EPS = 1e-12


class TransformError(UserError):
    """Bad input to a transform helper (wrong shape, non-finite numbers, not a rotation...)."""


def _arr(x, last_shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.shape[a.ndim - len(last_shape):] != last_shape or a.ndim < len(last_shape):
        raise TransformError(f"{name} must have shape (..., {', '.join(map(str, last_shape))}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise TransformError(f"{name} contains non-finite values")
    return a


def wrap_angle(a):
    """Wrap angle(s) to [-pi, pi)."""
    a = np.asarray(a, dtype=float)
    out = (a + np.pi) % (2.0 * np.pi) - np.pi
    return float(out) if out.ndim == 0 else out


def skew(w) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrix: skew(w) @ u == cross(w, u)."""
    w = _arr(w, (3,), "w")
    z = np.zeros(w.shape[:-1])
    x, y, zz = w[..., 0], w[..., 1], w[..., 2]
    return np.stack([
        np.stack([z, -zz, y], -1),
        np.stack([zz, z, -x], -1),
        np.stack([-y, x, z], -1),
    ], -2)


def unskew(W) -> np.ndarray:
    """(..., 3, 3) skew-symmetric -> (..., 3) (uses the antisymmetric part)."""
    W = _arr(W, (3, 3), "W")
    return 0.5 * np.stack([W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]], -1)


def _rot(axis: int, a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    if axis == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def rot_x(a) -> np.ndarray:
    return _rot(0, a)


def rot_y(a) -> np.ndarray:
    return _rot(1, a)


def rot_z(a) -> np.ndarray:
    return _rot(2, a)


def euler_to_matrix(roll, pitch=None, yaw=None) -> np.ndarray:
    """'sxyz' Euler -> rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll).

    Call as euler_to_matrix(roll, pitch, yaw) with scalars/arrays, or euler_to_matrix(rpy) with (..., 3)."""
    if pitch is None and yaw is None:
        rpy = _arr(roll, (3,), "rpy")
        roll, pitch, yaw = rpy[..., 0], rpy[..., 1], rpy[..., 2]
    elif pitch is None or yaw is None:
        raise TransformError("euler_to_matrix needs either one (..., 3) array or roll, pitch and yaw")
    r, p, y = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (roll, pitch, yaw)))
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise TransformError("Euler angles contain non-finite values")
    if r.ndim == 0:  # fast path for one rotation
        cr, sr, cp, sp = math.cos(r), math.sin(r), math.cos(p), math.sin(p)
        cy, sy = math.cos(y), math.sin(y)
        return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                         [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                         [-sp, cp * sr, cp * cr]])
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return np.stack([np.stack(row, -1) for row in rows], -2)


def matrix_to_euler(R) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> 'sxyz' [roll, pitch, yaw] (..., 3); inverse of `euler_to_matrix`."""
    R = _arr(R, (3, 3), "R")
    cp = np.hypot(R[..., 0, 0], R[..., 1, 0])
    pitch = np.arctan2(-R[..., 2, 0], cp)
    regular = cp > 1e-9
    roll = np.where(regular, np.arctan2(R[..., 2, 1], R[..., 2, 2]), np.arctan2(-R[..., 1, 2], R[..., 1, 1]))
    yaw = np.where(regular, np.arctan2(R[..., 1, 0], R[..., 0, 0]), 0.0)
    return np.stack([roll, pitch, yaw], -1)


def axis_angle_to_matrix(axis, angle) -> np.ndarray:
    """Rotation of `angle` rad about `axis` (need not be unit; must be non-zero)."""
    axis = _arr(axis, (3,), "axis")
    n = np.linalg.norm(axis, axis=-1, keepdims=True)
    if np.any(n < _EPS):
        raise TransformError("rotation axis must be non-zero")
    return so3_exp(axis / n * np.asarray(angle, dtype=float)[..., None])


def matrix_to_axis_angle(R) -> tuple[np.ndarray, np.ndarray]:
    """R -> (unit axis (..., 3), angle in [0, pi]). For the identity the axis is [1, 0, 0]."""
    w = so3_log(R)
    th = np.linalg.norm(w, axis=-1)
    safe = np.where(th > _EPS, th, 1.0)[..., None]
    axis = np.where(th[..., None] > _EPS, w / safe, np.array([1.0, 0.0, 0.0]))
    return axis, th


def so3_exp(w) -> np.ndarray:
    """Rotation vector (..., 3) -> rotation matrix (Rodrigues)."""
    w = _arr(w, (3,), "w")
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = skew(w)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    a = np.where(small, 1.0 - th**2 / 6.0, np.sin(ths) / ths)
    b = np.where(small, 0.5 - th**2 / 24.0, (1.0 - np.cos(ths)) / ths**2)
    return np.eye(3) + a * K + b * (K @ K)


def so3_log(R) -> np.ndarray:
    """Rotation matrix (..., 3, 3) -> rotation vector (..., 3) with norm in [0, pi]; robust near 0 and pi."""
    R = _arr(R, (3, 3), "R")
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos_t = np.clip((tr - 1.0) / 2.0, -1.0, 1.0)
    th = np.arccos(cos_t)
    vee = unskew(R)  # = sin(th) * axis
    sin_t = np.sin(th)
    # regular case
    k = np.where(th < 1e-6, 1.0 + th**2 / 6.0, th / np.where(sin_t > _EPS, sin_t, 1.0))
    out = vee * k[..., None]
    # near pi: sin(th) is tiny and loses the axis; use the symmetric part: R + I = 2 a a^T (at th = pi)
    near_pi = th > np.pi - 1e-3
    if np.any(near_pi):
        B = (R + np.swapaxes(R, -1, -2)) / 2.0 - cos_t[..., None, None] * np.eye(3)  # = (1 - cos) a a^T
        diag = np.stack([B[..., 0, 0], B[..., 1, 1], B[..., 2, 2]], -1)
        i = np.argmax(diag, axis=-1)
        col = np.take_along_axis(B, np.broadcast_to(i[..., None, None], B.shape[:-1] + (1,)), axis=-1)[..., 0]
        axis = col / np.linalg.norm(col, axis=-1, keepdims=True).clip(min=_EPS)
        # fix the sign with the (small but exact in sign) antisymmetric part
        sgn = np.sign(np.sum(axis * vee, axis=-1))
        sgn = np.where(sgn == 0, 1.0, sgn)
        alt = axis * (sgn * th)[..., None]
        out = np.where(near_pi[..., None], alt, out)
    return out


def se3_hat(xi) -> np.ndarray:
    """[w|v] (..., 6) -> se(3) matrix (..., 4, 4)."""
    xi = _arr(xi, (6,), "twist")
    out = np.zeros(xi.shape[:-1] + (4, 4))
    out[..., :3, :3] = skew(xi[..., :3])
    out[..., :3, 3] = xi[..., 3:]
    return out


def se3_exp(xi) -> np.ndarray:
    """Twist [w|v] (..., 6) (already multiplied by the joint value) -> 4x4 transform."""
    xi = _arr(xi, (6,), "twist")
    w, v = xi[..., :3], xi[..., 3:]
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = skew(w)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    b = np.where(small, 0.5 - th**2 / 24.0, (1.0 - np.cos(ths)) / ths**2)
    c = np.where(small, 1.0 / 6.0 - th**2 / 120.0, (ths - np.sin(ths)) / ths**3)
    K2 = K @ K
    V = np.eye(3) + b * K + c * K2
    out = np.zeros(xi.shape[:-1] + (4, 4))
    out[..., :3, :3] = so3_exp(w)
    out[..., :3, 3] = (V @ v[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def se3_log(T) -> np.ndarray:
    """4x4 transform (..., 4, 4) -> twist [w|v] (..., 6) with se3_exp(se3_log(T)) == T."""
    T = _arr(T, (4, 4), "T")
    w = so3_log(T[..., :3, :3])
    p = T[..., :3, 3]
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = skew(w)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    # V^-1 = I - K/2 + d K^2, d = (1 - th sin th / (2 (1 - cos th))) / th^2
    d = np.where(small, 1.0 / 12.0 + th**2 / 720.0,
                 (1.0 - ths * np.sin(ths) / (2.0 * (1.0 - np.cos(ths)))) / ths**2)
    Vinv = np.eye(3) - 0.5 * K + d * (K @ K)
    v = (Vinv @ p[..., None])[..., 0]
    return np.concatenate([w, v], -1)


def adjoint(T) -> np.ndarray:
    """6x6 adjoint of T for [w|v] twists: Ad_T = [[R, 0], [skew(p) R, R]]."""
    T = _arr(T, (4, 4), "T")
    R, p = T[..., :3, :3], T[..., :3, 3]
    out = np.zeros(T.shape[:-2] + (6, 6))
    out[..., :3, :3] = R
    out[..., 3:, 3:] = R
    out[..., 3:, :3] = skew(p) @ R
    return out


def make_transform(R=None, p=None) -> np.ndarray:
    """Build a 4x4 (or batch) from rotation R (..., 3, 3) and translation p (..., 3); missing parts = identity/0."""
    Rm = np.eye(3) if R is None else _arr(R, (3, 3), "R")
    pv = np.zeros(3) if p is None else _arr(p, (3,), "p")
    batch = np.broadcast_shapes(Rm.shape[:-2], pv.shape[:-1])
    out = np.zeros(batch + (4, 4))
    out[..., :3, :3] = Rm
    out[..., :3, 3] = pv
    out[..., 3, 3] = 1.0
    return out


def invert_transform(T) -> np.ndarray:
    T = _arr(T, (4, 4), "T")
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3][..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def pose_to_xyzrpy(T) -> np.ndarray:
    """4x4 (..., 4, 4) -> [x, y, z, roll, pitch, yaw] (..., 6)."""
    T = _arr(T, (4, 4), "T")
    return np.concatenate([T[..., :3, 3], matrix_to_euler(T[..., :3, :3])], -1)


def xyzrpy_to_pose(v) -> np.ndarray:
    """[x, y, z, roll, pitch, yaw] (..., 6) -> 4x4 (..., 4, 4)."""
    v = _arr(v, (6,), "pose vector")
    return make_transform(euler_to_matrix(v[..., 3:]), v[..., :3])


def quat_to_matrix(q) -> np.ndarray:
    """Quaternion [x, y, z, w] (..., 4) (normalised here) -> rotation matrix."""
    q = _arr(q, (4,), "quaternion")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < _EPS):
        raise TransformError("quaternion has zero norm")
    x, y, z, w = np.moveaxis(q / n, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def matrix_to_quat(R) -> np.ndarray:
    """Rotation matrix -> unit quaternion [x, y, z, w] with w >= 0."""
    w_vec = so3_log(R)
    th = np.linalg.norm(w_vec, axis=-1, keepdims=True)
    safe = np.where(th > _EPS, th, 1.0)
    axis = np.where(th > _EPS, w_vec / safe, 0.0)
    q = np.concatenate([axis * np.sin(th / 2.0), np.cos(th / 2.0)], -1)
    return q


def rotation_angle(R) -> np.ndarray | float:
    """Angle [rad] of rotation R (geodesic distance to the identity), in [0, pi]."""
    th = np.linalg.norm(so3_log(R), axis=-1)
    return float(th) if np.ndim(th) == 0 else th


def is_rotation(R, atol: float = 1e-6) -> bool:
    R = np.asarray(R, dtype=float)
    if R.shape[-2:] != (3, 3):
        return False
    RtR = np.swapaxes(R, -1, -2) @ R
    return bool(np.allclose(RtR, np.eye(3), atol=atol) and np.all(np.linalg.det(R) > 0))


def nearest_rotation(M) -> np.ndarray:
    """The rotation closest to M (..., 3, 3) in the Frobenius norm (orthogonal Procrustes: U diag(1, 1, d) V^T from
    the SVD M = U S V^T, d = sign(det(U V^T)) so that the result is proper)."""
    M = _arr(M, (3, 3), "M")
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    D = np.zeros(M.shape[:-2] + (3, 3))
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = d
    return U @ D @ Vt


def mean_transform(Ts) -> np.ndarray:
    """Mean of 4x4 transforms (N, 4, 4): chordal mean of the rotations (the rotation nearest to their sum) and the
    arithmetic mean of the translations."""
    T = _arr(Ts, (4, 4), "transforms")
    if T.ndim != 3 or T.shape[0] == 0:
        raise TransformError(f"mean_transform needs a non-empty (N, 4, 4) stack, got shape {T.shape}")
    return make_transform(nearest_rotation(T[:, :3, :3].sum(axis=0)), T[:, :3, 3].mean(axis=0))
