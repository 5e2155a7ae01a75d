"""Rendered images agree with etc_ros.core.camera.CameraModel.project() (and hence with the annotations)."""
from __future__ import annotations

import copy
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from etc_ros.core.camera import CameraIntrinsics
from etc_training.sim import SimEnv
from etc_training.sim.tasks import sample_episode


def _check_projection(env, tol_px: float = 1.0) -> int:
    seg = env.render_segmentation("primary")
    cm = env.camera_model("primary")
    ann = env.annotations()
    checked = 0
    for k, a in enumerate(ann):
        mask = seg == k
        spec = env.spec(a["name"])
        c = a["cameras"]["primary"]
        if mask.sum() < 30:
            continue
        ys, xs = np.nonzero(mask)
        # the annotated box (projected geometry) contains the segmentation mask and is tight around it
        x1, y1, x2, y2 = c["box"]
        assert x1 <= xs.min() - 0.5 + tol_px and y1 <= ys.min() - 0.5 + tol_px, a["name"]
        assert x2 >= xs.max() + 0.5 - tol_px and y2 >= ys.max() + 0.5 - tol_px, a["name"]
        if spec.graspable and mask.sum() > 60 and xs.min() > 0 and ys.min() > 0:
            # unoccluded convex solid: the silhouette centre is the projection of the object's centre
            box_w = xs.max() - xs.min() + 1
            assert x2 - x1 <= box_w + 2 * tol_px + 1.0, a["name"]
            pos, _ = env.pose(a["name"])
            uv, _ = cm.project(pos[None])
            assert np.allclose(uv[0], [xs.mean(), ys.mean()], atol=1.5), (a["name"], uv[0], xs.mean(), ys.mean())
            assert np.allclose(c["point"], uv[0], atol=1e-6)
            checked += 1
        assert c["visible"]
    return checked


def test_render_matches_camera_model_projection():
    env = SimEnv(depth=True)
    n = 0
    for seed in (1, 2, 5):
        env.reset(seed=seed)
        img = env.render()
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        n += _check_projection(env)
    env.close()
    assert n >= 3


def test_off_centre_principal_point_and_non_square_pixels():
    """A strongly shifted principal point must move the image the way CameraModel says (sign convention)."""
    env = SimEnv(depth=True)
    ep = sample_episode(1, "train", env.cfg)
    ep2 = copy.deepcopy(ep)
    K = CameraIntrinsics(width=640, height=480, fx=600.0, fy=640.0, cx=360.0, cy=200.0).resized(224, 224)
    ep2.scene.primary_intrinsics = K
    env.reset(episode=ep2)
    assert env.camera_model("primary").intrinsics == K
    assert _check_projection(env) >= 1
    env.close()


def test_depth_is_metric_along_the_optical_axis():
    env = SimEnv(depth=True)
    env.reset(seed=4)
    depth = env.render_depth()
    cm = env.camera_model()
    K, T = cm.intrinsics, cm.T_base_cam
    seg = env.render_segmentation()
    ys, xs = np.nonzero(seg == -1)  # table / robot / background pixels
    # pixels below the image centre row see the table top (z = 0) in this view
    sel = [(u, v) for u, v in zip(xs, ys) if v > 180][:50:5]
    assert sel
    for u, v in sel:
        ray = T[:3, :3] @ np.array([(u - K.cx) / K.fx, (v - K.cy) / K.fy, 1.0])
        s = -T[2, 3] / ray[2]  # depth along the optical axis of the ray's hit with z = 0
        assert depth[v, u] == pytest.approx(s, abs=0.003)
    env.close()


def test_wrist_camera_follows_the_gripper():
    env = SimEnv()
    env.cfg.render.cameras = ["primary", "wrist"]
    obs = env.reset(seed=2)
    assert set(obs["images"]) == {"primary", "wrist"}
    T0 = env.camera_model("wrist").T_base_cam
    env.step(np.array([0.03, 0.0, -0.03, 0.0, 0.0, 0.0, 1.0]))
    T1 = env.camera_model("wrist").T_base_cam
    ee_move = np.linalg.norm(env.ee_matrix()[:3, 3])
    assert ee_move > 0
    assert np.linalg.norm(T1[:3, 3] - T0[:3, 3]) > 0.02  # the camera moved with the hand
    assert env.render("wrist").shape == (224, 224, 3)
    env.close()
