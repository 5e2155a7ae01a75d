"""Robot backend interface (pure: no ROS): the small start / measure / command / update / stop contract every
arm backend implements, the JointMeasurement it returns, and the smooth joint moves the driver core plans.

Backends: fake.py (first-order tracking, for tests), sim.py (the MuJoCo world), interbotix.py (the real arm).
Every backend's measure() returns a JointMeasurement: q, gripper and, when the hardware reports them, the time of
the measurement and the measured joint velocities. gripper_mode 'binary' thresholds the opening at 0.5 on the
fake and sim backends too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError

BACKENDS = ("fake", "sim", "interbotix")
GRIPPER_MODES = ("position", "binary")  # position: continuous opening set point; binary: open/close at 0.5
POSES = {"home": robot_spec.HOME_POSE, "ready": robot_spec.READY_POSE, "sleep": robot_spec.SLEEP_POSE}
N = len(robot_spec.JOINT_NAMES)


class DriverError(UserError):
    """Driver misconfiguration or a backend that cannot start (missing package, no robot on the bus...)."""


def _vec6(q: Any, what: str) -> np.ndarray:
    a = np.asarray(q, dtype=float).reshape(-1)
    if a.shape != (N,) or not np.all(np.isfinite(a)):
        raise DriverError(f"{what} must be {N} finite joint values, got {q!r}")
    return a


# ---------------------------------------------------------------------------------------------------- moves
@dataclass
class JointMove:
    """Synchronized trapezoidal move q0 -> q1: q(t) = q0 + (q1 - q0) s(t), s: 0 -> 1 with |s'| <= sv, |s''| <= sa,
    so every joint stays within vmax / amax and all joints arrive together."""

    q0: np.ndarray
    q1: np.ndarray
    g0: float
    g1: float
    duration: float
    _sv: float
    _sa: float
    _ta: float  # acceleration phase length

    def s(self, t: float) -> float:
        if self.duration <= 0 or t >= self.duration:
            return 1.0
        if t <= 0:
            return 0.0
        ta, sa, sv, T = self._ta, self._sa, self._sv, self.duration
        if t < ta:
            return 0.5 * sa * t * t
        if t <= T - ta:
            return 0.5 * sa * ta * ta + sv * (t - ta)
        r = T - t
        return 1.0 - 0.5 * sa * r * r

    def sample(self, t: float) -> tuple[np.ndarray, float]:
        s = min(1.0, max(0.0, self.s(t)))
        return self.q0 + (self.q1 - self.q0) * s, self.g0 + (self.g1 - self.g0) * s


def plan_joint_move(q0, q1, vmax: float, amax: float, g0: float = 1.0, g1: float = 1.0,
                    gripper_rate: float = 2.0) -> JointMove:
    """Time-optimal synchronized trapezoid under per-joint vmax [rad/s] and amax [rad/s^2]."""
    q0, q1 = _vec6(q0, "move start"), _vec6(q1, "move goal")
    if not (vmax > 0 and amax > 0 and math.isfinite(vmax) and math.isfinite(amax)):
        raise DriverError(f"move limits must be finite and > 0, got vmax={vmax}, amax={amax}")
    D = float(np.max(np.abs(q1 - q0)))
    # the gripper (opening fraction) moves within the same time, at most gripper_rate per second
    Dg = abs(float(g1) - float(g0))
    if D < 1e-12 and Dg < 1e-12:
        return JointMove(q0, q1, float(g0), float(g1), 0.0, 0.0, 0.0, 0.0)
    # normalized limits for s in [0, 1]
    sv = vmax / D if D > 1e-12 else math.inf
    sa = amax / D if D > 1e-12 else math.inf
    if Dg > 1e-12:
        sv = min(sv, gripper_rate / Dg)
        sa = min(sa, 4.0 * gripper_rate / Dg)  # gripper: accelerate to its rate within 0.25 s
    if sv * sv / sa >= 1.0:  # triangle: never reaches sv
        ta = math.sqrt(1.0 / sa)
        T = 2.0 * ta
        sv = sa * ta
    else:
        ta = sv / sa
        T = 1.0 / sv + ta
    return JointMove(q0, q1, float(g0), float(g1), T, sv, sa, ta)


# ---------------------------------------------------------------------------------------------------- backends
def check_gripper_mode(mode: str) -> str:
    m = str(mode or "").strip().lower()
    if m not in GRIPPER_MODES:
        raise DriverError(f"gripper_mode {mode!r} is not one of {list(GRIPPER_MODES)}")
    return m


def binary_gripper(g: float) -> float:
    """gripper_mode 'binary': fully open at a commanded opening >= 0.5, else closed."""
    return 1.0 if float(g) >= 0.5 else 0.0


@dataclass
class JointMeasurement:
    """What a backend measured: arm joints q (6,) [rad], gripper opening [0, 1], and when the hardware reports them
    the measurement time `stamp` [s, ROS time of this machine] and the arm joint velocities (6,) [rad/s]."""

    q: np.ndarray
    gripper: float
    stamp: float | None = None  # None: unknown (the reader's clock at the read is the best estimate)
    velocity: np.ndarray | None = None  # None: not measured


class DriverBackend:
    name = "base"

    def start(self) -> None:
        pass

    def read(self) -> tuple[np.ndarray, float]:
        """Measured (q (6,), gripper opening in [0, 1])."""
        raise NotImplementedError

    def measure(self) -> JointMeasurement:
        """The latest measurement with its time and velocities when the backend knows them (default: neither)."""
        q, g = self.read()
        return JointMeasurement(q, g)

    def command(self, q: np.ndarray, gripper: float) -> None:
        raise NotImplementedError

    def update(self, dt: float) -> None:
        """Advance the backend's own dynamics by dt seconds (fake/sim); hardware: nothing to do."""

    def stop(self) -> None:
        pass
