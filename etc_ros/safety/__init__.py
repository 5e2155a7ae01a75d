"""Safety layer of the deployment stack (pure Python + numpy; ROS nodes only wrap these classes).

- `SafetyExecutor` (executor.py): policy chunks in, limit-respecting joint commands out.
- `ChunkScheduler` (chunking.py): ACT temporal ensembling or receding horizon, in policy-step time.
- `MotionFilter` (filter.py): braking-aware position / velocity / acceleration / workspace filter.
- `Watchdog` (watchdog.py): chunk and camera freshness.
- `JointCommandGuard` (guard.py): the driver's last line of defence.
Design and guarantees: docs/safety.md.
"""
from __future__ import annotations

from etc_ros.core.errors import SafetyError
from etc_ros.safety.chunking import ChunkScheduler, ensemble_weights
from etc_ros.safety.executor import Command, SafetyExecutor
from etc_ros.safety.filter import MotionFilter, reach_bounds_from_urdf
from etc_ros.safety.guard import JointCommandGuard
from etc_ros.safety.watchdog import Watchdog

__all__ = ["SafetyError", "ChunkScheduler", "ensemble_weights", "Command", "SafetyExecutor", "MotionFilter",
           "reach_bounds_from_urdf", "JointCommandGuard", "Watchdog"]
