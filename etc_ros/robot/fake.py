"""FakeBackend: first-order tracking of the last target (time constant `tau`), for tests and benchmarks."""
from __future__ import annotations

import math

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.robot.base import DriverBackend, DriverError, _vec6, binary_gripper, check_gripper_mode


class FakeBackend(DriverBackend):
    """First-order tracking: x += (target - x) (1 - exp(-dt / tau)); starts at `q0` (default: sleep pose)."""

    name = "fake"

    def __init__(self, q0=None, gripper0: float = 1.0, tau: float = 0.05, gripper_mode: str = "position"):
        if not tau > 0:
            raise DriverError(f"fake backend tau must be > 0, got {tau}")
        self.gripper_mode = check_gripper_mode(gripper_mode)
        self.q = _vec6(robot_spec.SLEEP_POSE if q0 is None else q0, "fake backend start pose").copy()
        self.g = float(gripper0)
        self.q_target = self.q.copy()
        self.g_target = self.g
        self.tau = float(tau)
        self.commands = 0

    def read(self) -> tuple[np.ndarray, float]:
        return self.q.copy(), self.g

    def command(self, q: np.ndarray, gripper: float) -> None:
        self.q_target = np.asarray(q, dtype=float).copy()
        self.g_target = binary_gripper(gripper) if self.gripper_mode == "binary" else float(gripper)
        self.commands += 1

    def update(self, dt: float) -> None:
        if dt <= 0:
            return
        a = 1.0 - math.exp(-dt / self.tau)
        self.q = self.q + (self.q_target - self.q) * a
        self.g = self.g + (self.g_target - self.g) * a
