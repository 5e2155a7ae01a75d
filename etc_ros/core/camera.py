"""Pinhole camera model shared by the simulator, the ETC engine, calibration and the robot.

Conventions:
- Camera frame is OpenCV's: x right, y down, z forward (optical axis).
- `T_base_cam` (4x4) is the camera pose in base_link: p_base = T_base_cam @ p_cam.
- Pixel coordinates (u, v): u along the image width (column), v along the height (row), origin at the
  top-left corner of the top-left pixel's centre convention of OpenCV (pixel centres at integers).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from etc_ros.core.errors import CalibrationError

# Bridge / SimplerEnv over-the-shoulder camera (640x480)
BRIDGE_INTRINSICS = dict(width=640, height=480, fx=623.588, fy=623.588, cx=319.501, cy=239.545)


@dataclass
class CameraIntrinsics:
    width: int = 640
    height: int = 480
    fx: float = 623.588
    fy: float = 623.588
    cx: float = 319.501
    cy: float = 239.545
    distortion: tuple[float, ...] = ()  # OpenCV (k1, k2, p1, p2, k3); empty = none

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def resized(self, width: int, height: int) -> "CameraIntrinsics":
        """Intrinsics of the same camera after resizing the whole image to (width, height) (no crop)."""
        sx, sy = width / self.width, height / self.height
        # pixel centres: u' + 0.5 = (u + 0.5) * s
        return CameraIntrinsics(
            width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5, distortion=self.distortion,
        )

    def to_dict(self) -> dict:
        return dict(width=self.width, height=self.height, fx=self.fx, fy=self.fy, cx=self.cx, cy=self.cy,
                    distortion=list(self.distortion))

    @classmethod
    def from_dict(cls, d: dict) -> "CameraIntrinsics":
        missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in d]
        if missing:
            raise CalibrationError(f"camera intrinsics missing {missing}")
        return cls(width=int(d["width"]), height=int(d["height"]), fx=float(d["fx"]), fy=float(d["fy"]),
                   cx=float(d["cx"]), cy=float(d["cy"]), distortion=tuple(d.get("distortion", ()) or ()))


@dataclass
class CameraModel:
    intrinsics: CameraIntrinsics = field(default_factory=CameraIntrinsics)
    T_base_cam: np.ndarray = field(default_factory=lambda: np.eye(4))
    name: str = "primary"

    def to_dict(self) -> dict:
        return dict(name=self.name, intrinsics=self.intrinsics.to_dict(),
                    T_base_cam=np.asarray(self.T_base_cam, dtype=float).tolist())

    @classmethod
    def from_dict(cls, d: dict) -> "CameraModel":
        if "intrinsics" not in d:
            raise CalibrationError("camera calibration has no 'intrinsics'")
        if "T_base_cam" not in d:
            raise CalibrationError("camera calibration has no extrinsics 'T_base_cam'")
        T = np.asarray(d["T_base_cam"], dtype=float)
        if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise CalibrationError(f"T_base_cam must be a 4x4 homogeneous matrix, got shape {T.shape}")
        R = T[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise CalibrationError("T_base_cam rotation is not orthonormal")
        return cls(intrinsics=CameraIntrinsics.from_dict(d["intrinsics"]), T_base_cam=T, name=d.get("name", "primary"))

    def resized(self, width: int, height: int) -> "CameraModel":
        return CameraModel(self.intrinsics.resized(width, height), self.T_base_cam.copy(), self.name)

    def to_camera(self, p_base: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(p_base, dtype=float))
        T_cam_base = np.linalg.inv(self.T_base_cam)
        return p @ T_cam_base[:3, :3].T + T_cam_base[:3, 3]

    def project(self, p_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N,3) base-frame points -> (N,2) pixels (u, v) and (N,) depth along the optical axis.
        Points behind the camera get NaN pixels."""
        pc = self.to_camera(p_base)
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = pc[:, 0] / z, pc[:, 1] / z
        d = self.intrinsics.distortion
        if d:
            k1, k2, p1, p2, k3 = (list(d) + [0.0] * 5)[:5]
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
            x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                    y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
        K = self.intrinsics
        uv = np.stack([K.fx * x + K.cx, K.fy * y + K.cy], axis=1)
        uv[z <= 1e-9] = np.nan
        return uv, z

    def in_image(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        uv = np.atleast_2d(uv)
        W, H = self.intrinsics.width, self.intrinsics.height
        return (uv[:, 0] >= -0.5 + margin) & (uv[:, 0] <= W - 0.5 - margin) & \
               (uv[:, 1] >= -0.5 + margin) & (uv[:, 1] <= H - 0.5 - margin)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """T_base_cam for an OpenCV camera at `eye` looking at `target` (base frame)."""
    eye, target, up = (np.asarray(v, dtype=float) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
