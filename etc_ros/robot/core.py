"""WidowX driver core (pure: no ROS): the command gate between the safety node and a robot backend.

DriverCore owns a backend and:
- on start, moves from the measured pose to the start pose (ready/home/sleep/none), on stop to the stop pose,
  with a synchronized trapezoidal profile under `speed_fraction` x the velocity/acceleration limits;
- accepts external commands only when ready, and only through the JointCommandGuard (limits, workspace,
  velocity, acceleration against the last accepted command, using the command's own stamp as its time);
  refusals are counted by reason and never reach the backend (the arm keeps its last accepted target).
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.robot.base import (
    BACKENDS,
    POSES,
    DriverBackend,
    DriverError,
    JointMeasurement,
    JointMove,
    N,
    check_gripper_mode,
    plan_joint_move,
)
from etc_ros.robot.fake import FakeBackend
from etc_ros.robot.interbotix import InterbotixBackend
from etc_ros.robot.sim import SimBackend

if TYPE_CHECKING:
    from etc_ros.safety.guard import JointCommandGuard


def make_backend(name: str, *, env: Any = None, lock: Any = None, robot_model: str = robot_spec.ROBOT_MODEL,
                 fake_tau: float = 0.05, moving_time: float = 0.2, accel_time: float = 0.1,
                 service_probe: Callable[[str, float], bool] | None = None,
                 prepare_ros: Callable[[], None] | None = None, gripper_mode: str = "position") -> DriverBackend:
    name = (name or "").strip().lower()
    gripper_mode = check_gripper_mode(gripper_mode)
    if name == "fake":
        return FakeBackend(tau=fake_tau, gripper_mode=gripper_mode)
    if name == "sim":
        if env is None:
            raise DriverError("backend 'sim' runs inside the sim_robot node (use_sim:=true), which owns the world")
        return SimBackend(env, lock, moving_time=moving_time, accel_time=accel_time, gripper_mode=gripper_mode)
    if name == "interbotix":
        if robot_model != robot_spec.ROBOT_MODEL:
            raise DriverError(f"robot_model {robot_model!r} is not supported; this stack is for "
                              f"{robot_spec.ROBOT_MODEL!r}")
        return InterbotixBackend(robot_model, moving_time, accel_time, service_probe=service_probe,
                                 prepare_ros=prepare_ros, gripper_mode=gripper_mode)
    raise DriverError(f"unknown driver backend {name!r}; expected one of {list(BACKENDS)}")


# ---------------------------------------------------------------------------------------------------- core
def refusal_kind(reason: str) -> str:
    """Short counter key for a guard refusal reason."""
    r = reason.lower()
    for key, words in (("nonfinite", ("nan", "inf")), ("acceleration", ("acceleration",)),
                       ("velocity", ("velocity",)), ("workspace", ("workspace", "end effector")),
                       ("position_limits", ("outside [", "limits")), ("shape", ("shape", "values"))):
        if any(w in r for w in words):
            return key
    return "other"


MEASURED_LOG_LEN = 128  # measurements the driver core remembers for re-anchor checks (1.3 s at 100 Hz)
MEASURED_MATCH_TOL = 1e-9  # rad: a re-anchor carries a published measurement bit for bit (float64 both ways)
STEP_MATCH_TOL = 1e-7  # rad: q - (q_last + v dt); dt travels as integer ns (|v| 3.14 rad/s x 0.5 ns ~ 2e-9)


class DriverCore:
    """State machine idle -> starting -> ready -> stopping -> stopped. Time is always passed in."""

    def __init__(self, backend: DriverBackend, guard: JointCommandGuard, *, start_pose: str = "ready",
                 stop_pose: str = "sleep",
                 speed_fraction: float = 0.3, start_gripper: float = 1.0, max_velocity: float = 3.14,
                 max_acceleration: float = 5.0, lower=None, upper=None, margin: float = 0.05,
                 anchor_tolerance: float = 0.05, anchor_interval: float = 0.1, anchor_max_age: float = 0.25):
        """A command with dt = 0 (the safety executor reset or re-anchored on the measured joints) is accepted
        without the velocity / acceleration check against the previous command (it commands no motion) when it is
        exactly one of the measurements this core returned (= published on /joint_states) at most anchor_max_age [s]
        before its stamp and not older than the last anchor's: the executor anchors on the joint state it last
        received, and an arm released from a contact is already up to 0.26 rad further when the command arrives.
        Or when it is within anchor_tolerance [rad] of the joints measured now, at most once per anchor_interval
        [s]. Position and workspace are always checked."""
        for what, p in (("start_pose", start_pose), ("stop_pose", stop_pose)):
            if p not in POSES and p != "none":
                raise DriverError(f"{what} {p!r} is not one of {sorted(POSES) + ['none']}")
        if not 0 < speed_fraction <= 1:
            raise DriverError(f"speed_fraction must be in (0, 1], got {speed_fraction}")
        self.backend = backend
        self.guard = guard
        self.start_pose = start_pose
        self.stop_pose = stop_pose
        self.vmax = float(max_velocity) * float(speed_fraction)
        self.amax = float(max_acceleration) * float(speed_fraction)
        self.start_gripper = float(start_gripper)
        self.lower = None if lower is None else np.asarray(lower, float) + margin
        self.upper = None if upper is None else np.asarray(upper, float) - margin
        self.state = "idle"
        self.move: JointMove | None = None
        self.move_t0 = 0.0
        self.last_update: float | None = None
        self.q_target: np.ndarray | None = None
        self.g_target = self.start_gripper
        self.accepted = 0
        self.refused = 0
        self.refusals: dict[str, int] = {}
        self.last_refusal = ""
        self.ready_since: float | None = None
        self.settle_tol = 0.005  # rad: the start move is done when the measured joints are this close
        self.settle_timeout = 2.0  # s
        self._settle_t0 = 0.0
        self._last_q: np.ndarray | None = None  # last accepted command, its velocity and stamp (guard state)
        self._last_v: np.ndarray | None = None
        self._last_stamp: float | None = None
        self.anchor_tolerance = float(anchor_tolerance)
        self.anchor_interval = float(anchor_interval)
        self.anchor_max_age = float(anchor_max_age)
        # (time, q) of every measurement update() returned (= what the node published on /joint_states), newest
        # last: a re-anchor command carries one of these exactly, however far the arm has moved since
        self._measured_log: deque[tuple[float, np.ndarray]] = deque(maxlen=MEASURED_LOG_LEN)
        self._last_anchor = -math.inf
        self._last_anchor_measured = -math.inf  # measurement time of the last accepted anchor
        self.anchors = 0  # re-anchor commands accepted
        self.superseded = 0  # commands stamped before the driver (re)became ready: for the arm before a reset
        self._await_anchor = False
        self.measurement: JointMeasurement | None = None  # the latest, from update()

    # -- helpers
    def _pose(self, name: str) -> np.ndarray:
        q = np.asarray(POSES[name], dtype=float).copy()
        if self.lower is not None and self.upper is not None:
            q = np.clip(q, self.lower, self.upper)
        return q

    def _begin_move(self, goal: str, now: float, g_goal: float) -> None:
        q, g = self.backend.read()
        if goal == "none":
            self.move = None
            self.q_target, self.g_target = q, g
            return
        self.move = plan_joint_move(q, self._pose(goal), self.vmax, self.amax, g, g_goal)
        self.move_t0 = now

    def _refuse(self, key: str, reason: str) -> tuple[bool, str]:
        self.refused += 1
        self.refusals[key] = self.refusals.get(key, 0) + 1
        self.last_refusal = reason
        return False, reason

    # -- lifecycle
    def start(self, now: float) -> None:
        self.backend.start()
        self.last_update = now
        self._begin_move(self.start_pose, now, self.start_gripper)
        self.state = "starting"
        if self.move is None:
            self._become_ready(now)

    def _become_ready(self, now: float) -> None:
        q, g = self.backend.read()
        if self.q_target is None:
            self.q_target, self.g_target = q, g
        self._last_q, self._last_v, self._last_stamp = self.q_target.copy(), np.zeros(N), float(now)
        self.state = "ready"
        self.ready_since = now
        self._await_anchor = True  # the first accepted command starts at the measured joints (see command())

    def begin_stop(self, now: float) -> None:
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        self._begin_move(self.stop_pose, now, self.g_target if self.q_target is not None else 1.0)
        if self.move is None:
            self.state = "stopped"

    def run_stop(self, now_fn: Callable[[], float] = time.monotonic, dt: float = 0.02,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 30.0) -> None:
        """Blocking: move to the stop pose (real time), then stop the backend."""
        t0 = now_fn()
        self.begin_stop(t0)
        while self.state == "stopping" and now_fn() - t0 < timeout:
            sleep(dt)
            self.update(now_fn())
        self.state = "stopped"
        self.backend.stop()

    def reset_to(self, now: float) -> None:
        """After the world was reset externally (sim episodes): take the measured pose as the target."""
        q, g = self.backend.read()
        self.move = None
        self.q_target, self.g_target = q, g
        self.backend.command(q, g)
        if self.state in ("starting", "ready"):
            self._become_ready(now)

    # -- commands
    def _from_measured(self, q) -> float:
        """Largest joint distance [rad] of `q` from the joints the backend measures now."""
        return float(np.max(np.abs(np.asarray(q, dtype=float) - self.backend.read()[0])))

    def _measured_pose_time(self, q, stamp: float) -> tuple[float, bool] | None:
        """(time, exact) of the measurement `q` stands for: exactly (bit for bit) one published since the driver
        became ready and at most anchor_max_age before `stamp` (exact = True), or the pose measured now within
        anchor_tolerance (time = stamp, exact = False); None if neither."""
        qa = np.asarray(q, dtype=float)
        t_min = max(stamp - self.anchor_max_age, -math.inf if self.ready_since is None else self.ready_since)
        for t, qm in reversed(self._measured_log):
            if t < t_min:
                break
            if t <= stamp + 1e-3 and float(np.max(np.abs(qa - qm))) <= MEASURED_MATCH_TOL:
                return t, True
        if self._from_measured(qa) <= self.anchor_tolerance:
            return float(stamp), False
        return None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def _continues(self, q: np.ndarray, dt: float, velocity, elapsed: float) -> bool:
        """Whether the command is the step right after the last accepted one. With its commanded velocity (the
        safety executor sends it): exactly when q = last + velocity * dt, the executor's own definition of a step
        (a command lost or refused in between breaks the equation). Without: a stamp gap below 1.9 dt."""
        if velocity is None:
            return elapsed < 1.9 * dt
        last = self._last_q
        assert last is not None, "_continues is called only after an accepted command"
        v = np.asarray(velocity, dtype=float)
        if v.shape != (N,) or not np.all(np.isfinite(v)) or elapsed < dt - 1e-6:
            return False
        return float(np.max(np.abs(q - (last + v * dt)))) <= STEP_MATCH_TOL

    def command(self, q, gripper, stamp: float, dt: float = 0.0, velocity=None) -> tuple[bool, str]:
        """An external command (from the safety node). `stamp`: its header time [s]; `dt`: the control period
        it was computed for (0 = a re-anchor); `velocity`: the commanded joint velocities (None = not sent).
        The step right after the last accepted command (see _continues) is checked for velocity and acceleration
        with that dt, exactly as the safety filter produced it; after a gap (lost or refused command, first
        command) the velocity is checked over the real elapsed time and the acceleration check restarts."""
        if self.state != "ready":
            return self._refuse("not_ready", f"driver is {self.state}, not accepting commands")
        try:
            gq = float(gripper)
            stamp = float(stamp)
            dt = float(dt)
        except (TypeError, ValueError):
            return self._refuse("format", "gripper / stamp / dt are not numbers")
        if not math.isfinite(stamp) or not math.isfinite(dt) or dt < 0:
            return self._refuse("stamp", f"bad command stamp {stamp!r} or dt {dt!r}")
        if hasattr(self.guard, "check_gripper"):
            ok, reason = self.guard.check_gripper(gq)
        else:
            ok, reason = (math.isfinite(gq) and 0.0 <= gq <= 1.0), f"gripper command {gq!r} outside [0, 1]"
        if not ok:
            return self._refuse("gripper", reason)
        if self.ready_since is not None and stamp < self.ready_since:
            # computed for the arm before a (re)start or re-sync and delivered after it: dropped, not a guard
            # refusal (the safety node re-anchors on the joints measured after the driver became ready)
            self.superseded += 1
            return False, (f"superseded: command stamp {stamp:.6f} is from before the driver became ready at "
                           f"{self.ready_since:.6f}")
        elapsed = None if self._last_stamp is None else stamp - self._last_stamp
        if elapsed is not None and elapsed <= 0:
            return self._refuse("stamp", f"command stamp {stamp:.6f} not after the last accepted one")
        qa = q
        anchor = False
        found = self._measured_pose_time(qa, stamp) if self._await_anchor or dt == 0 else None
        if self._await_anchor:
            # after (re)becoming ready the sender must re-anchor on the joints measured now; its commands until then
            # (e.g. braking a pose from before a re-sync, sent before it saw /driver/ready toggle) are stale
            if found is None:
                self.superseded += 1
                return False, (f"superseded: the first command after the driver became ready must start at the "
                               f"measured joints (it is {self._from_measured(qa):.3f} rad away)")
            anchor = True
        elif dt == 0 and elapsed is not None:
            # a re-anchor: a published measurement, never one older than the last anchor's (anchors only move forward
            # in measurement time, so they cannot replay old poses); near the joints measured now, once per interval
            anchor = found is not None and found[0] >= self._last_anchor_measured and (
                found[1] or stamp - self._last_anchor >= self.anchor_interval)
        if anchor:  # at the measured joints: no motion commanded, the velocity reference restarts there
            assert found is not None
            ok, reason = self.guard.check(qa)
            v_new = np.zeros(N) if ok else None
            if ok:
                self._last_anchor_measured = found[0]
                self._last_anchor = stamp
                self.anchors += 1
                self._await_anchor = False
        elif elapsed is None or self._last_q is None:
            ok, reason = self.guard.check(qa)
            v_new = None
        elif dt > 0 and self._continues(np.asarray(qa, float), dt, velocity, elapsed):
            ok, reason = self.guard.check(qa, self._last_q, dt, self._last_v)
            v_new = (np.asarray(qa, float) - self._last_q) / dt if ok else None
        else:
            ok, reason = self.guard.check(qa, self._last_q, elapsed, None)
            v_new = None  # unknown after a gap: the next acceleration check restarts
        if not ok:
            return self._refuse(refusal_kind(reason), reason)
        self.q_target = np.asarray(qa, dtype=float).copy()
        self.g_target = gq
        self._last_q, self._last_v, self._last_stamp = self.q_target.copy(), v_new, stamp
        self.backend.command(self.q_target, gq)
        self.accepted += 1
        return True, "ok"

    # -- periodic
    def update(self, now: float) -> tuple[np.ndarray, float]:
        """Advance moves and the backend's dynamics to `now`; returns the measured (q, gripper). The whole
        measurement (with its stamp and velocities when the backend has them) is left in self.measurement."""
        dt = 0.0 if self.last_update is None else max(0.0, now - self.last_update)
        self.last_update = now
        if self.move is not None and self.state in ("starting", "stopping"):
            q, g = self.move.sample(now - self.move_t0)
            self.q_target, self.g_target = q, g
            self.backend.command(q, g)
            if now - self.move_t0 >= self.move.duration:
                self.move = None
                self._settle_t0 = now
        self.backend.update(dt)
        measure = getattr(self.backend, "measure", None)
        m = measure() if callable(measure) else JointMeasurement(*self.backend.read())
        self.measurement = m
        q, g = m.q, m.gripper
        self._measured_log.append((float(now), np.array(q, dtype=float)))
        if self.state in ("starting", "stopping") and self.move is None and self.q_target is not None:
            # the move is over once the arm is there (or after settle_timeout: slow servos, tracking offset)
            if float(np.max(np.abs(q - self.q_target))) <= self.settle_tol or \
                    now - self._settle_t0 >= self.settle_timeout:
                if self.state == "starting":
                    self._become_ready(now)
                else:
                    self.state = "stopped"
        return q, g

    def diagnostics(self) -> dict:
        return {
            "state": self.state,
            "backend": self.backend.name,
            "accepted_commands": self.accepted,
            "refused_commands": self.refused,
            "refusals": dict(self.refusals),
            "last_refusal": self.last_refusal,
            "superseded_commands": self.superseded,
            "backend_refusals": int(getattr(self.backend, "api_refusals", 0)),
            "gripper_mode": str(getattr(self.backend, "gripper_mode", "position")),
            "anchors": self.anchors,
        }
