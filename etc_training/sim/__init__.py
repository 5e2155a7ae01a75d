"""MuJoCo WidowX 250 6DOF tabletop world: the embedded default robot (no torch, no rclpy here).

    from etc_training.sim import SimEnv, SimConfig
    env = SimEnv(); obs = env.reset(seed=0, split="train"); obs = env.step(action7)

Modules: world (model from urdf/wx250s.urdf + table, cameras, lights), objects (primitive library), tasks
(language, sampling, success), splits (train / OOD partitions), env (control API), expert (scripted IK-waypoint
demonstrator), collect (parallel dataset collection), video (GIF / MP4), render (headless GL).
"""
from __future__ import annotations

from .render import ensure_headless_gl

ensure_headless_gl()

from .config import FAMILIES, SimConfig  # noqa: E402
from .env import SimEnv  # noqa: E402
from .errors import SimError  # noqa: E402
from .splits import SPLITS  # noqa: E402

__all__ = ["SimEnv", "SimConfig", "SimError", "SPLITS", "FAMILIES", "ensure_headless_gl"]
