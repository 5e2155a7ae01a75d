"""Intrinsics of a camera (numpy + OpenCV, no ROS): from ChArUco views (`calibrate_intrinsics`: detected corners,
cv2.calibrateCamera, k1 k2 p1 p2 k3 model) or from a RealSense stream profile (`intrinsics_from_realsense`,
optional pyrealsense2)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from etc_ros.camera.board import (
    BoardConfig,
    CalibrationReport,
    Detection,
    board_corners,
    opencv,
    project_points,
    reprojection_rms,
)
from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.errors import CalibrationError


def calibrate_intrinsics(detections: Sequence[Detection | None], image_size: tuple[int, int], cfg: BoardConfig,
                         *, max_rms_px: float = 1.0, min_views: int = 5, fix_k3: bool = True,
                         zero_tangent: bool = False) -> tuple[CameraIntrinsics, CalibrationReport]:
    """Pinhole + (k1 k2 p1 p2 [k3]) from ChArUco detections. image_size = (width, height).
    Raises CalibrationError when fewer than min_views views have corners or the RMS exceeds max_rms_px."""
    cv2 = opencv()
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
        per.append(reprojection_rms(uv - d.corners))
    n = sum(len(d) for d in views)
    rep = CalibrationReport("intrinsics", float(rms), len(views), n, per, max_rms_px,
                            {"skipped_views": len(detections) - len(views), "board": cfg.to_dict()})
    if not math.isfinite(rms) or rms > max_rms_px:
        raise CalibrationError(f"intrinsics rejected: reprojection RMS {rms:.3f} px > {max_rms_px} px over "
                               f"{len(views)} views (blurred or mis-detected images, or a wrong board definition)")
    return intr, rep


def _pyrealsense2() -> Any:
    try:
        import pyrealsense2  # noqa: WPS433 - optional on machines without a RealSense
    except ImportError:
        raise CalibrationError("RealSense intrinsics need pyrealsense2 (pip install pyrealsense2): not "
                               "installed; use a ChArUco board instead (--views)") from None
    return pyrealsense2


def intrinsics_from_realsense(width: int = 640, height: int = 480, fps: int = 30, serial: str = "",
                              module: Any = None) -> CameraIntrinsics:
    """Factory intrinsics of a RealSense color stream (pyrealsense2 stream profile; `module` replaces the
    pyrealsense2 module, e.g. a fake in tests)."""
    rs = _pyrealsense2() if module is None else module
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
