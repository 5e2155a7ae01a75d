"""The ChArUco calibration board and what every calibration step measures on it (numpy + OpenCV, no ROS).

- `BoardConfig`, `make_board`, `board_image` (render it for printing), `board_corners`. Board frame: origin at the
  board's top-left outer corner, x along the squares' columns, y along the rows, z = x cross y (into the board
  when looking at its printed face); inner corner (row r, column c) at ((c + 1) s, (r + 1) s, 0), s = square size.
- `detect_board`: ChArUco corners of one image (`Detection`).
- `project_points` through the OpenCV camera model (k1 k2 p1 p2 k3 distortion) and `solve_board_pose`, the PnP
  pose of the board in one view.
- `CalibrationReport`: the reprojection figures each step (intrinsics, extrinsics, check) reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.errors import CalibrationError
from etc_ros.core.transforms3d import make_transform


def opencv() -> Any:
    """The cv2 module, checked to have the ChArUco detector (OpenCV >= 4.7); CalibrationError otherwise."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a robot dependency
        raise CalibrationError("camera calibration needs OpenCV (pip install opencv-python-headless)") from None
    if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, "CharucoDetector"):
        raise CalibrationError(f"OpenCV {cv2.__version__} lacks cv2.aruco.CharucoDetector (needs OpenCV >= 4.7)")
    return cv2


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
        cv2 = opencv()
        if not self.dictionary.startswith("DICT_") or not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
        return self

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def to_dict(self) -> dict:
        return dict(squares_x=self.squares_x, squares_y=self.squares_y, square_length=self.square_length,
                    marker_length=self.marker_length, dictionary=self.dictionary, legacy=self.legacy)


def make_board(cfg: BoardConfig) -> Any:
    """The cv2.aruco.CharucoBoard of `cfg` (checked first)."""
    cv2 = opencv()
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
    return np.asarray(b.generateImage((w, h), marginSize=margin_px))


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
    cv2 = opencv()
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


def distortion_coeffs(intr: CameraIntrinsics) -> np.ndarray:
    """OpenCV's 5-vector (k1 k2 p1 p2 k3) of the intrinsics, zero-padded."""
    d = list(intr.distortion)
    return np.asarray((d + [0.0] * 5)[:5] if d else [0.0] * 5, dtype=float)


def project_points(intr: CameraIntrinsics, p_cam: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) pixels through the OpenCV model (distortion included)."""
    cv2 = opencv()
    p = np.ascontiguousarray(np.asarray(p_cam, dtype=float).reshape(-1, 1, 3))
    uv, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), intr.K, distortion_coeffs(intr))
    return np.asarray(uv).reshape(-1, 2)


def reprojection_rms(residuals: np.ndarray) -> float:
    """Root mean square pixel distance of (N, 2) residuals."""
    return float(np.sqrt(np.mean(np.sum(residuals ** 2, axis=1))))


def solve_board_pose(det: Detection, intr: CameraIntrinsics, cfg: BoardConfig,
                     corners3d: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """T_cam_board of one view by PnP (IPPE for the plane, then LM refinement) and its RMS error [px]."""
    cv2 = opencv()
    P = (board_corners(cfg) if corners3d is None else corners3d)[det.ids]
    img = det.corners.reshape(-1, 1, 2)
    dist = distortion_coeffs(intr)
    ok, rvec, tvec = cv2.solvePnP(P.reshape(-1, 1, 3), img, intr.K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError("PnP failed for a view")
    rvec, tvec = cv2.solvePnPRefineLM(P.reshape(-1, 1, 3), img, intr.K, dist, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    T = make_transform(R, np.asarray(tvec, dtype=float).reshape(3))
    uv = project_points(intr, P @ T[:3, :3].T + T[:3, 3])
    return T, reprojection_rms(uv - det.corners)


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
