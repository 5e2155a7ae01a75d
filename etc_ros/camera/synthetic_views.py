"""Synthetic calibration views with known ground truth (numpy + OpenCV, no ROS): `render_board_view` draws the
board as a camera sees it (distortion included); `synthetic_capture` poses it with the arm like a real capture
(FK -> board pose -> image). Used by the tests and `etc-vla calibrate selftest`."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from etc_ros.camera.board import (
    BoardConfig,
    board_image,
    detect_board,
    distortion_coeffs,
    make_board,
    opencv,
    project_points,
)
from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.errors import CalibrationError
from etc_ros.core.transforms3d import euler_to_matrix, invert_transform, make_transform


def render_board_view(cfg: BoardConfig, intr: CameraIntrinsics, T_cam_board: np.ndarray, *, px_per_square: int = 80,
                      background: int = 110, noise_std: float = 2.0, blur: bool = True, supersample: int = 3,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB image of the board seen by a camera (distortion included): each (sub-)pixel is undistorted,
    intersected with the board plane and looked up in the printed board image; `supersample` x `supersample`
    sub-pixels are averaged (anti-aliasing: point-sampled edges bias corner detection by ~0.2 px)."""
    cv2 = opencv()
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
            norm = cv2.undistortPoints(pix.reshape(-1, 1, 2), intr.K, distortion_coeffs(intr)).reshape(-1, 2)
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
    R = euler_to_matrix(math.radians(tilt_deg[0]), math.radians(tilt_deg[1]), math.radians(spin_deg))
    c = np.array([cfg.squares_x * cfg.square_length / 2, cfg.squares_y * cfg.square_length / 2, 0.0])
    centre = np.array([offset[0], offset[1], distance])
    return make_transform(R, centre - R @ c)


def default_board_mount(cfg: BoardConfig, reach: float = 0.07) -> np.ndarray:
    """T_ee_board of a board held by the fingers: its plane through the EE x axis (normal along EE y), its centre
    `reach` m ahead of ee_gripper_link (used by the synthetic capture; a real mount is estimated by hand-eye)."""
    R = np.stack([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], axis=1)
    c = np.array([cfg.squares_x * cfg.square_length / 2, cfg.squares_y * cfg.square_length / 2, 0.0])
    return make_transform(R, np.array([reach, 0.0, 0.0]) - R @ c)


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
            res = kin.ik(X @ board_facing_pose(d, (0.0, 0.0), (0.0, 0.0), cfg, spin) @ invert_transform(Y))
            if res.success:
                q0 = np.asarray(res.q, dtype=float)
                break
        if q0 is not None:
            break
    if q0 is None:
        raise CalibrationError("synthetic capture: the arm cannot present the board to this camera")
    spread = np.array([0.25, 0.2, 0.2, 0.4, 0.35, 0.5])
    imgs: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    qn: list[np.ndarray] = []
    detector = None
    for _ in range(max_tries):
        if len(imgs) >= n_views:
            break
        q = kin.clip_to_limits(q0 + rng.uniform(-1, 1, 6) * spread, margin=0.05)
        T_cb = invert_transform(X) @ np.asarray(kin.fk(q), dtype=float) @ Y
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
            detector = opencv().aruco.CharucoDetector(make_board(cfg))
        if detect_board(img, cfg, detector) is None:
            continue
        imgs.append(img)
        qs.append(q)
        qn.append(q + rng.normal(0.0, joint_noise, 6) if joint_noise > 0 else q.copy())
    if len(imgs) < n_views:
        raise CalibrationError(f"synthetic capture: only {len(imgs)} of {n_views} views after {max_tries} tries")
    return imgs, qs, qn
