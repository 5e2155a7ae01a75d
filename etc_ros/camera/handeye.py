"""Eye-to-hand extrinsics of the fixed camera and their check (numpy + OpenCV, no ROS).

The board is held by the gripper at several poses; FK gives T_base_ee for each view, PnP gives T_cam_board.
Unknowns X = T_base_cam and Y = T_ee_board satisfy X T_cam_board_i = T_base_ee_i Y.
- Method "handeye": pairs of views give C X = X D with C = A_j A_i^-1, D = B_j B_i^-1 (A = T_base_ee,
  B = T_cam_board); the rotation comes from aligning the rotation vectors of C and D (SVD, orthogonal
  Procrustes), the translation from stacked (R_C - I) t_X = R_X t_D - t_C (least squares); then X and Y are refined
  together by Levenberg-Marquardt on the reprojection error of every detected corner (`refine_lm`).
- Method "pnp": Y is known (a mount of known geometry): one PnP over the corners of all views placed in base_link
  by FK, then the same refinement of X alone.
- Quality gate: the reprojection RMS over all corners must stay under a threshold, otherwise CalibrationError
  carrying the figure (a wrong joint-state / image pairing, e.g. shuffled poses, lands far above it).
- `check_calibration`: reprojection error of a saved camera model on (new) views.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from etc_ros.camera.board import (
    BoardConfig,
    CalibrationReport,
    Detection,
    board_corners,
    distortion_coeffs,
    opencv,
    project_points,
    reprojection_rms,
    solve_board_pose,
)
from etc_ros.core.camera import CameraIntrinsics, CameraModel
from etc_ros.core.errors import CalibrationError
from etc_ros.core.transforms3d import (
    invert_transform,
    make_transform,
    mean_transform,
    nearest_rotation,
    so3_exp,
    so3_log,
)


@dataclass
class View:
    """One extrinsics view: the board detection and the EE pose from FK of the joint states."""

    detection: Detection | None  # None: the board was not detected (the view is dropped)
    T_base_ee: np.ndarray  # (4, 4)
    name: str = ""


def _detected(v: View) -> Detection:
    """The detection of a view the callers kept as usable."""
    if v.detection is None:
        raise CalibrationError(f"view {v.name!r}: the board is not detected")
    return v.detection


def rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle [deg] of Ra Rb^T."""
    c = (np.trace(np.asarray(Ra)[:3, :3] @ np.asarray(Rb)[:3, :3].T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(rotation error [deg], translation error [mm]) between two poses."""
    return rotation_deg(T_est, T_true), float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]) * 1000.0)


def solve_ax_xb(C: Sequence[np.ndarray], D: Sequence[np.ndarray]) -> np.ndarray:
    """X with C_k X = X D_k (least squares over the pairs k). Needs rotations about >= 2 distinct axes."""
    a = np.array([so3_log(c[:3, :3]) for c in C])
    b = np.array([so3_log(d[:3, :3]) for d in D])
    keep = (np.linalg.norm(a, axis=1) > 1e-3) & (np.linalg.norm(b, axis=1) > 1e-3)
    if keep.sum() < 2:
        raise CalibrationError("hand-eye needs views that rotate the board about at least two different axes")
    # R_C = R_X R_D R_X^T  =>  a = R_X b: orthogonal Procrustes
    RX = nearest_rotation(a[keep].T @ b[keep])
    A = np.concatenate([c[:3, :3] - np.eye(3) for c in C])
    y = np.concatenate([RX @ d[:3, 3] - c[:3, 3] for c, d in zip(C, D)])
    tX, *_ = np.linalg.lstsq(A, y, rcond=None)
    return make_transform(RX, tX)


def _residuals(intr: CameraIntrinsics, views: Sequence[View], P_list: Sequence[np.ndarray], X: np.ndarray,
               Y: np.ndarray) -> np.ndarray:
    """Stacked pixel residuals of every corner of every view for T_base_cam = X, T_ee_board = Y."""
    Xi = invert_transform(X)
    pts = []
    for v, P in zip(views, P_list):
        T = Xi @ v.T_base_ee @ Y
        pts.append(P @ T[:3, :3].T + T[:3, 3])
    uv = project_points(intr, np.concatenate(pts))
    obs = np.concatenate([_detected(v).corners for v in views])
    return (uv - obs).reshape(-1)


def _per_view_rms(r: np.ndarray, P_list: Sequence[np.ndarray]) -> list[float]:
    """RMS [px] of each view's block of the (N, 2) residuals (blocks in P_list order)."""
    per, k0 = [], 0
    for p in P_list:
        per.append(reprojection_rms(r[k0:k0 + len(p)]))
        k0 += len(p)
    return per


def _perturb(T: np.ndarray, d: np.ndarray) -> np.ndarray:
    """T moved by the LM step d = [rotation vector (applied on the right) | translation added]."""
    return make_transform(T[:3, :3] @ so3_exp(d[:3]), T[:3, 3] + d[3:])


def refine_lm(intr: CameraIntrinsics, views: Sequence[View], P_list: Sequence[np.ndarray], X: np.ndarray,
              Y: np.ndarray, refine_y: bool = True, iters: int = 50) -> tuple[np.ndarray, np.ndarray, float]:
    """Levenberg-Marquardt on the reprojection error; parameters: rotation vector + translation of X (and Y).
    Returns (X, Y, rms px)."""
    n = 12 if refine_y else 6

    def apply(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _perturb(X, p[:6]), (_perturb(Y, p[6:12]) if refine_y else Y)

    r = _residuals(intr, views, P_list, X, Y)
    cost = float(r @ r)
    lam = 1e-3
    steps = np.array([1e-6] * 3 + [1e-6] * 3 + [1e-6] * 3 + [1e-6] * 3)[:n]
    for _ in range(iters):
        J = np.empty((r.size, n))
        for k in range(n):
            dp = np.zeros(n)
            dp[k] = steps[k]
            Xk, Yk = apply(dp)
            J[:, k] = (_residuals(intr, views, P_list, Xk, Yk) - r) / steps[k]
        g = J.T @ r
        Hm = J.T @ J
        improved = False
        for _ in range(10):
            try:
                dp = -np.linalg.solve(Hm + lam * np.diag(np.diag(Hm) + 1e-12), g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            Xn, Yn = apply(dp)
            rn = _residuals(intr, views, P_list, Xn, Yn)
            cn = float(rn @ rn)
            if cn < cost:
                X, Y, r, lam = Xn, Yn, rn, max(lam / 10, 1e-9)
                improved = cost - cn > 1e-12 * cost
                cost = cn
                break
            lam *= 10
        if not improved:
            break
    return X, Y, float(np.sqrt(cost / (r.size / 2)))


def calibrate_extrinsics(views: Sequence[View], intr: CameraIntrinsics, cfg: BoardConfig, *, method: str = "handeye",
                         T_ee_board: np.ndarray | None = None, max_rms_px: float = 2.0, min_views: int = 5,
                         max_view_rms_px: float = 3.0) -> tuple[np.ndarray, np.ndarray, CalibrationReport]:
    """Eye-to-hand extrinsics. Returns (T_base_cam, T_ee_board, report); CalibrationError when the result does not
    explain the images (reprojection RMS > max_rms_px) or there are too few usable views."""
    if method not in ("handeye", "pnp"):
        raise CalibrationError(f"extrinsics method must be 'handeye' or 'pnp', got {method!r}")
    if method == "pnp" and T_ee_board is None:
        raise CalibrationError("method 'pnp' needs the board pose in the EE frame (T_ee_board / --board-offset)")
    P = board_corners(cfg)
    good: list[View] = []
    B: list[np.ndarray] = []
    dropped: list[str] = []
    for k, v in enumerate(views):
        T_be = np.asarray(v.T_base_ee, dtype=float)
        if T_be.shape != (4, 4) or not np.all(np.isfinite(T_be)):
            raise CalibrationError(f"view {v.name or k}: T_base_ee must be a finite 4x4 pose")
        if v.detection is None or len(v.detection) < 6:
            dropped.append(f"{v.name or k}: board not detected")
            continue
        Tcb, e = solve_board_pose(v.detection, intr, cfg, P)
        if e > max_view_rms_px:
            dropped.append(f"{v.name or k}: PnP RMS {e:.2f} px")
            continue
        good.append(v)
        B.append(Tcb)
    if len(good) < min_views:
        raise CalibrationError(f"extrinsics need at least {min_views} usable views, got {len(good)} of {len(views)}"
                               + (f" (dropped: {'; '.join(dropped)})" if dropped else ""))
    A = [np.asarray(v.T_base_ee, dtype=float) for v in good]
    P_list = [P[_detected(v).ids] for v in good]
    t0 = time.perf_counter()
    if method == "handeye":
        C, D = [], []
        for i in range(len(good)):
            for j in range(i + 1, len(good)):
                C.append(A[j] @ invert_transform(A[i]))
                D.append(B[j] @ invert_transform(B[i]))
        X0 = solve_ax_xb(C, D)
        Y0 = mean_transform([invert_transform(a) @ X0 @ b for a, b in zip(A, B)])
        X, Y, rms = refine_lm(intr, good, P_list, X0, Y0, refine_y=True)
    else:
        cv2 = opencv()
        Y0 = np.asarray(T_ee_board, dtype=float)
        pts = np.concatenate([p @ (a @ Y0)[:3, :3].T + (a @ Y0)[:3, 3] for a, p in zip(A, P_list)])
        obs = np.concatenate([_detected(v).corners for v in good])
        ok, rvec, tvec = cv2.solvePnP(pts.reshape(-1, 1, 3), obs.reshape(-1, 1, 2), intr.K, distortion_coeffs(intr),
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise CalibrationError("PnP over all views failed")
        R, _ = cv2.Rodrigues(rvec)
        X0 = invert_transform(make_transform(R, np.asarray(tvec, dtype=float).reshape(3)))
        X, Y, rms = refine_lm(intr, good, P_list, X0, Y0, refine_y=False)
    per = _per_view_rms(_residuals(intr, good, P_list, X, Y).reshape(-1, 2), P_list)
    # consistency of the two sides per view: X B_i vs A_i Y
    rot = [rotation_deg(X @ b, a @ Y) for a, b in zip(A, B)]
    trans = [float(np.linalg.norm((X @ b)[:3, 3] - (a @ Y)[:3, 3]) * 1000) for a, b in zip(A, B)]
    rep = CalibrationReport("extrinsics", rms, len(good), int(sum(len(p) for p in P_list)), per, max_rms_px, {
        "method": method, "dropped_views": dropped, "seconds": round(time.perf_counter() - t0, 3),
        "view_consistency_deg_p50": round(float(np.median(rot)), 4),
        "view_consistency_mm_p50": round(float(np.median(trans)), 3),
        "T_ee_board": Y.tolist(), "board": cfg.to_dict()})
    if not math.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"extrinsics rejected: reprojection RMS {rms:.2f} px > {max_rms_px} px over "
                               f"{len(good)} views (median pose consistency {np.median(rot):.2f} deg / "
                               f"{np.median(trans):.1f} mm): joint states and images do not belong together, "
                               "the board moved in the gripper, or the intrinsics are wrong")
    return X, Y, rep


def check_calibration(model: CameraModel, views: Sequence[View], cfg: BoardConfig, T_ee_board: np.ndarray,
                      max_rms_px: float = 2.0) -> CalibrationReport:
    """Reprojection error of a saved camera model (intrinsics + T_base_cam) on views with known board mount.
    Raises CalibrationError above max_rms_px (re-run the extrinsics: the camera was moved?)."""
    P = board_corners(cfg)
    usable = [v for v in views if v.detection is not None and len(v.detection) >= 4]
    if not usable:
        raise CalibrationError("calibration check: the board is not detected in any view")
    P_list = [P[_detected(v).ids] for v in usable]
    r = _residuals(model.intrinsics, usable, P_list, np.asarray(model.T_base_cam, dtype=float),
                   np.asarray(T_ee_board, dtype=float)).reshape(-1, 2)
    per = _per_view_rms(r, P_list)
    rms = reprojection_rms(r)
    rep = CalibrationReport("check", rms, len(usable), int(r.shape[0]), per, max_rms_px,
                            {"camera": model.name, "skipped_views": len(views) - len(usable)})
    if not math.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"calibration check failed for camera {model.name!r}: reprojection RMS {rms:.2f} px "
                               f"> {max_rms_px} px over {len(usable)} views (camera moved or bumped? recalibrate)")
    return rep
