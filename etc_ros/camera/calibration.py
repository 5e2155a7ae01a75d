"""Camera calibration for the fixed (over-the-shoulder) camera: numpy + OpenCV only (no ROS).

- Board: a ChArUco board (`BoardConfig`; `board_image` renders it for printing). Board frame: origin at the
  board's top-left outer corner, x along the squares' columns, y along the rows, z = x cross y (into the board
  when looking at its printed face); inner corner (row r, column c) at ((c + 1) s, (r + 1) s, 0), s = square size.
- Intrinsics: from a RealSense stream profile (`intrinsics_from_realsense`, optional pyrealsense2) or from
  ChArUco views (`calibrate_intrinsics`: detect corners, cv2.calibrateCamera; k1 k2 p1 p2 k3 model).
- Extrinsics (eye-to-hand): the board is held by the gripper at several poses; FK gives T_base_ee for each view,
  PnP gives T_cam_board. Unknowns X = T_base_cam and Y = T_ee_board satisfy X T_cam_board_i = T_base_ee_i Y.
  Method "handeye": pairs of views give C X = X D with C = A_j A_i^-1, D = B_j B_i^-1 (A = T_base_ee,
  B = T_cam_board); the rotation comes from aligning the rotation vectors of C and D (SVD, orthogonal
  Procrustes), the translation from stacked (R_C - I) t_X = R_X t_D - t_C (least squares); then X and Y are refined
  together by Levenberg-Marquardt on the reprojection error of every detected corner. Method "pnp": Y is known
  (a mount of known geometry): one PnP over the corners of all views placed in base_link by FK, then the same
  refinement of X alone.
- Quality gate: the reprojection RMS over all corners must stay under a threshold, otherwise CalibrationError
  carrying the figure (a wrong joint-state / image pairing, e.g. shuffled poses, lands far above it).
- `check_calibration`: reprojection error of a saved camera model on (new) views.
- `render_board_view`: a synthetic camera image of the board (tests and self-checks with known ground truth).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_ros.core.camera import CameraIntrinsics, CameraModel
from etc_ros.core.errors import CalibrationError
from etc_ros.core.transforms3d import so3_exp, so3_log


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a robot dependency
        raise CalibrationError("camera calibration needs OpenCV (pip install opencv-python-headless)") from None
    if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, "CharucoDetector"):
        raise CalibrationError(f"OpenCV {cv2.__version__} lacks cv2.aruco.CharucoDetector (needs OpenCV >= 4.7)")
    return cv2


# --------------------------------------------------------------------------------------------- board
@dataclass
class BoardConfig:
    squares_x: int = 7  # squares along x (columns)
    squares_y: int = 5  # squares along y (rows)
    square_length: float = 0.03  # m (measure the print!)
    marker_length: float = 0.022  # m
    dictionary: str = "DICT_4X4_50"
    legacy: bool = False  # boards printed by OpenCV < 4.6 (other ChArUco layout for even row counts)

    def check(self) -> "BoardConfig":
        if self.squares_x < 2 or self.squares_y < 2:
            raise CalibrationError(f"board needs at least 2x2 squares, got {self.squares_x}x{self.squares_y}")
        if not (0 < self.marker_length < self.square_length):
            raise CalibrationError(f"board marker_length ({self.marker_length}) must be in (0, square_length "
                                   f"{self.square_length})")
        cv2 = _cv2()
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
        return self

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def to_dict(self) -> dict:
        return dict(squares_x=self.squares_x, squares_y=self.squares_y, square_length=self.square_length,
                    marker_length=self.marker_length, dictionary=self.dictionary, legacy=self.legacy)


def make_board(cfg: BoardConfig):
    cv2 = _cv2()
    cfg.check()
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, cfg.dictionary))
    b = cv2.aruco.CharucoBoard((int(cfg.squares_x), int(cfg.squares_y)), float(cfg.square_length),
                               float(cfg.marker_length), d)
    if cfg.legacy:
        b.setLegacyPattern(True)
    return b


def board_image(cfg: BoardConfig, px_per_square: int = 100, margin_px: int = 20) -> np.ndarray:
    """The board as a grayscale image (uint8): squares of px_per_square pixels plus a white margin."""
    b = make_board(cfg)
    w = cfg.squares_x * px_per_square + 2 * margin_px
    h = cfg.squares_y * px_per_square + 2 * margin_px
    return b.generateImage((w, h), marginSize=margin_px)


def board_corners(cfg: BoardConfig) -> np.ndarray:
    """(N, 3) inner corners in the board frame, index = ChArUco corner id."""
    return np.asarray(make_board(cfg).getChessboardCorners(), dtype=float).reshape(-1, 3)


@dataclass
class Detection:
    corners: np.ndarray  # (N, 2) pixel coordinates (u, v)
    ids: np.ndarray  # (N,) ChArUco corner ids

    def __len__(self) -> int:
        return int(self.ids.size)


def detect_board(image: np.ndarray, cfg: BoardConfig, detector: Any = None, min_corners: int = 6) -> Detection | None:
    """ChArUco corners in an image (RGB / BGR / gray uint8), sub-pixel; None with fewer than min_corners."""
    cv2 = _cv2()
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:
        raise CalibrationError(f"calibration images must be uint8, got {img.dtype}")
    det = detector or cv2.aruco.CharucoDetector(make_board(cfg))
    corners, ids, _, _ = det.detectBoard(img)
    if corners is None or ids is None or len(ids) < min_corners:
        return None
    return Detection(np.asarray(corners, dtype=float).reshape(-1, 2), np.asarray(ids, dtype=int).reshape(-1))


# --------------------------------------------------------------------------------------------- poses
def _T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def _inv(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return _T(R.T, -R.T @ t)


def _project_rotation(M: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (Frobenius) to M."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle [deg] of Ra Rb^T."""
    c = (np.trace(np.asarray(Ra)[:3, :3] @ np.asarray(Rb)[:3, :3].T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(rotation error [deg], translation error [mm]) between two poses."""
    return rotation_deg(T_est, T_true), float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]) * 1000.0)


def _dist(intr: CameraIntrinsics) -> np.ndarray:
    d = list(intr.distortion)
    return np.asarray((d + [0.0] * 5)[:5] if d else [0.0] * 5, dtype=float)


def project_points(intr: CameraIntrinsics, p_cam: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixels through the OpenCV model (distortion included)."""
    cv2 = _cv2()
    p = np.ascontiguousarray(np.asarray(p_cam, dtype=float).reshape(-1, 1, 3))
    uv, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), intr.K, _dist(intr))
    return uv.reshape(-1, 2)


def solve_board_pose(det: Detection, intr: CameraIntrinsics, cfg: BoardConfig,
                     corners3d: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """T_cam_board of one view by PnP (IPPE for the plane, then LM refinement) and its RMS error [px]."""
    cv2 = _cv2()
    P = (board_corners(cfg) if corners3d is None else corners3d)[det.ids]
    img = det.corners.reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(P.reshape(-1, 1, 3), img, intr.K, _dist(intr), flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError("PnP failed for a view")
    rvec, tvec = cv2.solvePnPRefineLM(P.reshape(-1, 1, 3), img, intr.K, _dist(intr), rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    T = _T(R, tvec.reshape(3))
    uv = project_points(intr, P @ R.T + T[:3, 3])
    return T, float(np.sqrt(np.mean(np.sum((uv - det.corners) ** 2, axis=1))))


# --------------------------------------------------------------------------------------------- intrinsics
@dataclass
class CalibrationReport:
    kind: str  # intrinsics | extrinsics | check
    rms_px: float
    views: int
    corners: int
    per_view_rms_px: list[float] = field(default_factory=list)
    max_rms_px: float = 0.0  # the threshold applied
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rms_px": round(self.rms_px, 4), "views": self.views, "corners": self.corners,
                "max_rms_px": self.max_rms_px, "per_view_rms_px": [round(v, 3) for v in self.per_view_rms_px],
                **self.details}


def calibrate_intrinsics(detections: Sequence[Detection | None], image_size: tuple[int, int], cfg: BoardConfig,
                         *, max_rms_px: float = 1.0, min_views: int = 5, fix_k3: bool = True,
                         zero_tangent: bool = False) -> tuple[CameraIntrinsics, CalibrationReport]:
    """Pinhole + (k1 k2 p1 p2 [k3]) from ChArUco detections. image_size = (width, height).
    Raises CalibrationError when fewer than min_views views have corners or the RMS exceeds max_rms_px."""
    cv2 = _cv2()
    W, H = int(image_size[0]), int(image_size[1])
    P = board_corners(cfg)
    views = [d for d in detections if d is not None and len(d) >= 6]
    if len(views) < min_views:
        raise CalibrationError(f"intrinsics need at least {min_views} views with the board detected, got "
                               f"{len(views)} of {len(detections)}")
    obj = [P[d.ids].reshape(-1, 1, 3).astype(np.float32) for d in views]
    img = [d.corners.reshape(-1, 1, 2).astype(np.float32) for d in views]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    if zero_tangent:
        flags |= cv2.CALIB_ZERO_TANGENT_DIST
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, (W, H), None, None, flags=flags)
    dist = np.asarray(dist, dtype=float).reshape(-1)[:5]
    intr = CameraIntrinsics(width=W, height=H, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
                            cy=float(K[1, 2]), distortion=tuple(float(x) for x in dist))
    per = []
    for d, rv, tv in zip(views, rvecs, tvecs):
        R, _ = cv2.Rodrigues(rv)
        uv = project_points(intr, P[d.ids] @ R.T + np.asarray(tv).reshape(3))
        per.append(float(np.sqrt(np.mean(np.sum((uv - d.corners) ** 2, axis=1)))))
    n = sum(len(d) for d in views)
    rep = CalibrationReport("intrinsics", float(rms), len(views), n, per, max_rms_px,
                            {"skipped_views": len(detections) - len(views), "board": cfg.to_dict()})
    if not math.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"intrinsics rejected: reprojection RMS {rms:.3f} px > {max_rms_px} px over "
                               f"{len(views)} views (blurred or mis-detected images, or a wrong board definition)")
    return intr, rep


def intrinsics_from_realsense(width: int = 640, height: int = 480, fps: int = 30, serial: str = "",
                              module: Any = None) -> CameraIntrinsics:
    """Factory intrinsics of a RealSense color stream (pyrealsense2 stream profile)."""
    if module is None:
        try:
            import pyrealsense2 as module  # noqa: WPS433 - optional on machines without a RealSense
        except ImportError:
            raise CalibrationError("RealSense intrinsics need pyrealsense2 (pip install pyrealsense2): not "
                                   "installed; use a ChArUco board instead (--views)") from None
    rs = module
    pipe = rs.pipeline()
    cfg = rs.config()
    if serial:
        cfg.enable_device(serial)
    cfg.enable_stream(rs.stream.color, int(width), int(height), rs.format.rgb8, int(fps))
    try:
        profile = pipe.start(cfg)
    except Exception as e:  # noqa: BLE001 - RuntimeError from librealsense
        raise CalibrationError(f"cannot start the RealSense color stream {width}x{height}@{fps}: {e}") from None
    try:
        vp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = vp.get_intrinsics()
    finally:
        pipe.stop()
    coeffs = [float(c) for c in list(getattr(i, "coeffs", []) or [])][:5]
    model = str(getattr(i, "model", ""))
    if any(abs(c) > 0 for c in coeffs) and "brown" not in model.lower():
        raise CalibrationError(f"RealSense distortion model {model} is not Brown-Conrady: calibrate with a board")
    return CameraIntrinsics(width=int(i.width), height=int(i.height), fx=float(i.fx), fy=float(i.fy),
                            cx=float(i.ppx), cy=float(i.ppy),
                            distortion=tuple(coeffs) if any(abs(c) > 0 for c in coeffs) else ())


# --------------------------------------------------------------------------------------------- extrinsics
@dataclass
class View:
    """One extrinsics view: the board detection and the EE pose from FK of the joint states."""

    detection: Detection
    T_base_ee: np.ndarray  # (4, 4)
    name: str = ""


def solve_ax_xb(C: Sequence[np.ndarray], D: Sequence[np.ndarray]) -> np.ndarray:
    """X with C_k X = X D_k (least squares over the pairs k). Needs rotations about >= 2 distinct axes."""
    a = np.array([so3_log(c[:3, :3]) for c in C])
    b = np.array([so3_log(d[:3, :3]) for d in D])
    keep = (np.linalg.norm(a, axis=1) > 1e-3) & (np.linalg.norm(b, axis=1) > 1e-3)
    if keep.sum() < 2:
        raise CalibrationError("hand-eye needs views that rotate the board about at least two different axes")
    # R_C = R_X R_D R_X^T  =>  a = R_X b: orthogonal Procrustes
    M = a[keep].T @ b[keep]
    RX = _project_rotation(M)
    A = np.concatenate([c[:3, :3] - np.eye(3) for c in C])
    y = np.concatenate([RX @ d[:3, 3] - c[:3, 3] for c, d in zip(C, D)])
    tX, *_ = np.linalg.lstsq(A, y, rcond=None)
    return _T(RX, tX)


def _residuals(intr, views, P_list, X, Y) -> np.ndarray:
    """Stacked pixel residuals of every corner of every view for T_base_cam = X, T_ee_board = Y."""
    Xi = _inv(X)
    pts = []
    for v, P in zip(views, P_list):
        T = Xi @ v.T_base_ee @ Y
        pts.append(P @ T[:3, :3].T + T[:3, 3])
    uv = project_points(intr, np.concatenate(pts))
    obs = np.concatenate([v.detection.corners for v in views])
    return (uv - obs).reshape(-1)


def _perturb(T: np.ndarray, d: np.ndarray) -> np.ndarray:
    return _T(T[:3, :3] @ so3_exp(d[:3]), T[:3, 3] + d[3:])


def refine_lm(intr, views, P_list, X, Y, refine_y: bool = True, iters: int = 50) -> tuple[np.ndarray, np.ndarray, float]:
    """Levenberg-Marquardt on the reprojection error; parameters: rotation vector + translation of X (and Y).
    Returns (X, Y, rms px)."""
    n = 12 if refine_y else 6

    def apply(p):
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


def _mean_pose(Ts: Sequence[np.ndarray]) -> np.ndarray:
    R = _project_rotation(sum(T[:3, :3] for T in Ts))
    t = np.mean([T[:3, 3] for T in Ts], axis=0)
    return _T(R, t)


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
    P_list = [P[v.detection.ids] for v in good]
    t0 = time.perf_counter()
    if method == "handeye":
        C, D = [], []
        for i in range(len(good)):
            for j in range(i + 1, len(good)):
                C.append(A[j] @ _inv(A[i]))
                D.append(B[j] @ _inv(B[i]))
        X0 = solve_ax_xb(C, D)
        Y0 = _mean_pose([_inv(a) @ X0 @ b for a, b in zip(A, B)])
        X, Y, rms = refine_lm(intr, good, P_list, X0, Y0, refine_y=True)
    else:
        cv2 = _cv2()
        Y0 = np.asarray(T_ee_board, dtype=float)
        pts = np.concatenate([p @ (a @ Y0)[:3, :3].T + (a @ Y0)[:3, 3] for a, p in zip(A, P_list)])
        obs = np.concatenate([v.detection.corners for v in good])
        ok, rvec, tvec = cv2.solvePnP(pts.reshape(-1, 1, 3), obs.reshape(-1, 1, 2), intr.K, _dist(intr),
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            raise CalibrationError("PnP over all views failed")
        R, _ = cv2.Rodrigues(rvec)
        X0 = _inv(_T(R, tvec.reshape(3)))
        X, Y, rms = refine_lm(intr, good, P_list, X0, Y0, refine_y=False)
    r = _residuals(intr, good, P_list, X, Y).reshape(-1, 2)
    per, k0 = [], 0
    for p in P_list:
        per.append(float(np.sqrt(np.mean(np.sum(r[k0:k0 + len(p)] ** 2, axis=1)))))
        k0 += len(p)
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
    P_list = [P[v.detection.ids] for v in usable]
    r = _residuals(model.intrinsics, usable, P_list, np.asarray(model.T_base_cam, dtype=float),
                   np.asarray(T_ee_board, dtype=float)).reshape(-1, 2)
    per, k0 = [], 0
    for p in P_list:
        per.append(float(np.sqrt(np.mean(np.sum(r[k0:k0 + len(p)] ** 2, axis=1)))))
        k0 += len(p)
    rms = float(np.sqrt(np.mean(np.sum(r ** 2, axis=1))))
    rep = CalibrationReport("check", rms, len(usable), int(r.shape[0]), per, max_rms_px,
                            {"camera": model.name, "skipped_views": len(views) - len(usable)})
    if not math.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"calibration check failed for camera {model.name!r}: reprojection RMS {rms:.2f} px "
                               f"> {max_rms_px} px over {len(usable)} views (camera moved or bumped? recalibrate)")
    return rep


# --------------------------------------------------------------------------------------------- files
def save_camera_model(model: CameraModel, path: str | Path, report: dict | None = None,
                      extra: dict | None = None) -> Path:
    """YAML with CameraModel.to_dict() keys (what the recorder and the camera node read) + the report."""
    import yaml

    from etc_ros.core.io import atomic_write_text

    d = model.to_dict()
    if extra:
        d.update(extra)
    if report is not None:
        d["calibration"] = report
    d.setdefault("calibration_time", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def save_intrinsics(intr: CameraIntrinsics, path: str | Path, name: str, report: dict | None = None) -> Path:
    """Intrinsics only (before the extrinsics exist); `calibrate extrinsics` completes the same file."""
    import yaml

    from etc_ros.core.io import atomic_write_text

    d: dict[str, Any] = {"name": name, "intrinsics": intr.to_dict()}
    if report is not None:
        d["calibration_intrinsics"] = report
    d["calibration_time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def load_calibration_file(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"calibration file {p} not found")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CalibrationError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(d, dict) or "intrinsics" not in d:
        raise CalibrationError(f"{p}: not a calibration file (no 'intrinsics')")
    return d


def save_views(directory: str | Path, images: Sequence[np.ndarray], joints: Sequence[Sequence[float]],
               gripper: Sequence[float] | None = None, start: int = 0) -> list[Path]:
    """Write a calibration capture: view_NNN.png (RGB) + view_NNN.json {"q": [6], "gripper": g}."""
    import cv2

    from etc_ros.core.io import atomic_write_bytes, atomic_write_json

    out = []
    d = Path(directory)
    for k, (img, q) in enumerate(zip(images, joints)):
        name = d / f"view_{start + k:03d}"
        a = np.asarray(img)
        ok, buf = cv2.imencode(".png", a[:, :, ::-1] if a.ndim == 3 else a)
        if not ok:
            raise CalibrationError(f"cannot encode {name}.png")
        atomic_write_bytes(name.with_suffix(".png"), buf.tobytes())
        meta = {"q": [float(x) for x in np.asarray(q, dtype=float).reshape(6)]}
        if gripper is not None:
            meta["gripper"] = float(gripper[k])
        atomic_write_json(name.with_suffix(".json"), meta)
        out.append(name.with_suffix(".png"))
    return out


def load_views(directory: str | Path, need_joints: bool = True) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """[(name, RGB image, q (6,) or None)] of a capture directory (sorted by name)."""
    import json

    import cv2

    d = Path(directory)
    if not d.is_dir():
        raise CalibrationError(f"views directory {d} not found")
    pngs = sorted(list(d.glob("*.png")) + list(d.glob("*.jpg")))
    if not pngs:
        raise CalibrationError(f"{d}: no calibration images (*.png / *.jpg)")
    out = []
    for p in pngs:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"{p}: not a readable image")
        q = None
        j = p.with_suffix(".json")
        if j.is_file():
            try:
                meta = json.loads(j.read_text())
                q = np.asarray(meta["q"], dtype=float).reshape(6)
            except (ValueError, KeyError, TypeError) as e:
                raise CalibrationError(f"{j}: needs {{\"q\": [6 joint positions in rad]}}: {e}") from None
        elif need_joints:
            raise CalibrationError(f"{p}: no joint state file {j.name} next to it (extrinsics need one per view)")
        out.append((p.stem, np.ascontiguousarray(img[:, :, ::-1]), q))
    return out


# --------------------------------------------------------------------------------------------- synthetic views
def render_board_view(cfg: BoardConfig, intr: CameraIntrinsics, T_cam_board: np.ndarray, *, px_per_square: int = 80,
                      background: int = 110, noise_std: float = 2.0, blur: bool = True, supersample: int = 3,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB image of the board seen by a camera (distortion included): each (sub-)pixel is undistorted,
    intersected with the board plane and looked up in the printed board image; `supersample` x `supersample`
    sub-pixels are averaged (anti-aliasing: point-sampled edges bias corner detection by ~0.2 px)."""
    cv2 = _cv2()
    margin = px_per_square // 4
    tex = board_image(cfg, px_per_square, margin)
    W, H = intr.width, intr.height
    scale = px_per_square / cfg.square_length
    R, t = T_cam_board[:3, :3], T_cam_board[:3, 3]
    out = np.full((H, W), float(background))
    # only the pixels the printed sheet can cover (its outline projected, plus a safety border)
    m = margin / scale
    bw, bh = cfg.squares_x * cfg.square_length + m, cfg.squares_y * cfg.square_length + m
    edge = np.linspace(0.0, 1.0, 9)
    outline = np.array([[x, y, 0.0] for x in -m + edge * (bw + m) for y in (-m, bh)]
                       + [[x, y, 0.0] for y in -m + edge * (bh + m) for x in (-m, bw)])
    pc = outline @ R.T + t
    if np.any(pc[:, 2] <= 1e-3):
        raise CalibrationError("render_board_view: the board is (partly) behind the camera")
    uv = project_points(intr, pc)
    u0, v0 = np.floor(np.clip(uv.min(axis=0) - 3, 0, [W, H])).astype(int)
    u1, v1 = np.ceil(np.clip(uv.max(axis=0) + 3, 0, [W, H])).astype(int)
    if u1 > u0 and v1 > v0:
        ss = max(1, int(supersample))
        w, h = u1 - u0, v1 - v0
        sub = (np.arange(ss, dtype=np.float64) + 0.5) / ss - 0.5  # sub-pixel centre offsets
        uu, vv = np.meshgrid(np.arange(w * ss, dtype=np.float64), np.arange(h * ss, dtype=np.float64))
        uu = u0 + np.floor(uu / ss) + sub[(uu % ss).astype(int)]
        vv = v0 + np.floor(vv / ss) + sub[(vv % ss).astype(int)]
        pix = np.stack([uu.ravel(), vv.ravel()], axis=1)
        if intr.distortion and any(abs(x) > 0 for x in intr.distortion):
            norm = cv2.undistortPoints(pix.reshape(-1, 1, 2), intr.K, _dist(intr)).reshape(-1, 2)
        else:
            norm = np.stack([(pix[:, 0] - intr.cx) / intr.fx, (pix[:, 1] - intr.cy) / intr.fy], axis=1)
        rays = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
        n = R[:, 2]  # board normal in the camera frame
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (t @ n) / (rays @ n)
        pb = (rays * s[:, None] - t) @ R  # board frame
        mx = (pb[:, 0] * scale + margin - 0.5).astype(np.float32)
        my = (pb[:, 1] * scale + margin - 0.5).astype(np.float32)
        bad = ~np.isfinite(s) | (s <= 0)
        mx[bad], my[bad] = -1e6, -1e6
        patch = cv2.remap(tex, mx.reshape(h * ss, w * ss), my.reshape(h * ss, w * ss),
                          interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=int(background)).astype(np.float64)
        out[v0:v1, u0:u1] = patch.reshape(h, ss, w, ss).mean(axis=(1, 3))
    img = out
    if blur:
        img = cv2.GaussianBlur(img, (3, 3), 0.6)
    if noise_std > 0:
        rng = rng or np.random.default_rng(0)
        img = img + rng.normal(0.0, noise_std, img.shape)
    g = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def board_facing_pose(distance: float, tilt_deg: tuple[float, float], offset: tuple[float, float],
                      cfg: BoardConfig, spin_deg: float = 0.0) -> np.ndarray:
    """T_cam_board with the board centre at (offset_x, offset_y, distance) in the camera frame, facing the
    camera (board z along the optical axis), tilted about its x / y axes and spun about its normal."""
    from etc_ros.core.transforms3d import euler_to_matrix

    R = euler_to_matrix(math.radians(tilt_deg[0]), math.radians(tilt_deg[1]), math.radians(spin_deg))
    c = np.array([cfg.squares_x * cfg.square_length / 2, cfg.squares_y * cfg.square_length / 2, 0.0])
    centre = np.array([offset[0], offset[1], distance])
    return _T(R, centre - R @ c)


def default_board_mount(cfg: BoardConfig, reach: float = 0.07) -> np.ndarray:
    """T_ee_board of a board held by the fingers: its plane through the EE x axis (normal along EE y), its centre
    `reach` m ahead of ee_gripper_link (used by the synthetic capture; a real mount is estimated by hand-eye)."""
    R = np.stack([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], axis=1)
    c = np.array([cfg.squares_x * cfg.square_length / 2, cfg.squares_y * cfg.square_length / 2, 0.0])
    return _T(R, np.array([reach, 0.0, 0.0]) - R @ c)


def synthetic_capture(kin: Any, intr: CameraIntrinsics, T_base_cam: np.ndarray, T_ee_board: np.ndarray,
                      cfg: BoardConfig, n_views: int = 12, *, seed: int = 0, joint_noise: float = 0.0,
                      distance: float = 0.45, max_tilt_deg: float = 50.0, supersample: int = 2,
                      max_tries: int = 400) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Views of the board held by the arm, as a real capture would record them: joint configurations around
    one that shows the board to the camera, FK -> board pose -> rendered image. Returns (images, q used for
    rendering, q reported = q + N(0, joint_noise)). Only views with the whole board in the image, facing the
    camera within max_tilt_deg and detectable are kept."""
    rng = np.random.default_rng(seed)
    X, Y = np.asarray(T_base_cam, dtype=float), np.asarray(T_ee_board, dtype=float)
    q0 = None
    for d in (distance, distance - 0.05, distance + 0.05, distance - 0.1, distance + 0.1):
        for spin in (0.0, 90.0, -90.0, 180.0, 45.0, -45.0, 135.0, -135.0):
            res = kin.ik(X @ board_facing_pose(d, (0.0, 0.0), (0.0, 0.0), cfg, spin) @ _inv(Y))
            if res.success:
                q0 = np.asarray(res.q, dtype=float)
                break
        if q0 is not None:
            break
    if q0 is None:
        raise CalibrationError("synthetic capture: the arm cannot present the board to this camera")
    spread = np.array([0.25, 0.2, 0.2, 0.4, 0.35, 0.5])
    imgs, qs, qn = [], [], []
    detector = None
    for _ in range(max_tries):
        if len(imgs) >= n_views:
            break
        q = kin.clip_to_limits(q0 + rng.uniform(-1, 1, 6) * spread, margin=0.05)
        T_cb = _inv(X) @ np.asarray(kin.fk(q), dtype=float) @ Y
        centre = T_cb[:3, :3] @ np.array([cfg.squares_x * cfg.square_length / 2,
                                          cfg.squares_y * cfg.square_length / 2, 0.0]) + T_cb[:3, 3]
        view_dir = centre / np.linalg.norm(centre)
        if centre[2] < 0.15 or float(T_cb[:3, 2] @ view_dir) < math.cos(math.radians(max_tilt_deg)):
            continue
        corners = np.array([[0, 0, 0], [cfg.squares_x, 0, 0], [0, cfg.squares_y, 0], [cfg.squares_x, cfg.squares_y, 0]],
                           dtype=float) * cfg.square_length
        uv = project_points(intr, corners @ T_cb[:3, :3].T + T_cb[:3, 3])
        if np.any(uv < 5) or np.any(uv[:, 0] > intr.width - 6) or np.any(uv[:, 1] > intr.height - 6):
            continue
        img = render_board_view(cfg, intr, T_cb, supersample=supersample, rng=rng)
        if detector is None:
            detector = _cv2().aruco.CharucoDetector(make_board(cfg))
        if detect_board(img, cfg, detector) is None:
            continue
        imgs.append(img)
        qs.append(q)
        qn.append(q + rng.normal(0.0, joint_noise, 6) if joint_noise > 0 else q.copy())
    if len(imgs) < n_views:
        raise CalibrationError(f"synthetic capture: only {len(imgs)} of {n_views} views after {max_tries} tries")
    return imgs, qs, qn
