"""WidowX driver logic (pure: no ROS): backends, smooth start/stop moves and the command gate.

Backends (same small interface: start / read / command / update / stop):
- FakeBackend: first-order tracking of the last target (time constant `tau`), for tests.
- SimBackend: the MuJoCo world (`set_joint_targets(q6, gripper)`, `advance(dt)`, `joint_state()`), advanced in
  real time by the driver's timer; a lock shared with the simulated camera serializes physics and rendering.
- InterbotixBackend: `InterbotixManipulatorXS` from interbotix_xs_modules (ROS 2 Humble install on the robot PC),
  imported only when selected. Arm in position mode (time-based profile). Gripper per `gripper_mode`:
  'position' (default, what the policy was trained on: the simulated gripper is a position actuator tracking the
  commanded opening) puts the gripper servo in xs_sdk's linear_position mode and streams the finger separation
  the opening stands for; 'binary' keeps it in PWM mode and calls grasp()/release() when the commanded opening
  crosses 0.5. Joint states come with xs_sdk's own header stamp and the servos' measured velocities.

Every backend's measure() returns a JointMeasurement: q, gripper and, when the hardware reports them, the time of
the measurement and the measured joint velocities (the driver node republishes those instead of "now" and a finite
difference). gripper_mode 'binary' thresholds the opening at 0.5 on the fake and sim backends too.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from etc_ros.core import spec
from etc_ros.core.errors import UserError

if TYPE_CHECKING:
    from etc_ros.safety.guard import JointCommandGuard

BACKENDS = ("fake", "sim", "interbotix")
GRIPPER_MODES = ("position", "binary")  # position: continuous opening set point; binary: open/close at 0.5
POSES = {"home": spec.HOME_POSE, "ready": spec.READY_POSE, "sleep": spec.SLEEP_POSE}
N = len(spec.JOINT_NAMES)


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


class FakeBackend(DriverBackend):
    """First-order tracking: x += (target - x) (1 - exp(-dt / tau)); starts at `q0` (default: sleep pose)."""

    name = "fake"

    def __init__(self, q0=None, gripper0: float = 1.0, tau: float = 0.05, gripper_mode: str = "position"):
        if not tau > 0:
            raise DriverError(f"fake backend tau must be > 0, got {tau}")
        self.gripper_mode = check_gripper_mode(gripper_mode)
        self.q = _vec6(spec.SLEEP_POSE if q0 is None else q0, "fake backend start pose").copy()
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


class SimBackend(DriverBackend):
    """The simulated world, shared with the simulated camera through `lock`."""

    name = "sim"

    def __init__(self, env: Any, lock: Any = None, max_step: float = 0.05, moving_time: float | None = None,
                 accel_time: float | None = None, gripper_mode: str = "position"):
        """moving_time / accel_time: the servo profile written to the simulated servos, as the interbotix
        backend writes it to the real ones (None: the world's own profile). gripper_mode: 'position' = the world's
        own gripper (a position actuator, what the policies were trained on); 'binary' = open/close at 0.5, to
        try the real robot's binary gripper in simulation."""
        import threading

        self.gripper_mode = check_gripper_mode(gripper_mode)
        if env is None:
            raise DriverError("sim backend needs a simulated world")
        for m in ("set_joint_targets", "advance", "joint_state"):
            if not callable(getattr(env, m, None)):
                raise DriverError(f"sim world {type(env).__name__} lacks {m}()")
        self.env = env
        self.lock = lock if lock is not None else threading.Lock()
        self.max_step = float(max_step)
        if moving_time is not None and callable(getattr(env, "set_servo_profile", None)):
            at = 0.5 * float(moving_time) if accel_time is None else float(accel_time)
            try:
                with self.lock:
                    env.set_servo_profile(float(moving_time), at)
            except ValueError as e:  # SimError is a ValueError (UserError)
                raise DriverError(f"servo profile moving_time={moving_time} accel_time={at}: {e}") from e

    def read(self) -> tuple[np.ndarray, float]:
        with self.lock:
            q, g = self.env.joint_state()
        return np.asarray(q, dtype=float).copy(), float(g)

    def command(self, q: np.ndarray, gripper: float) -> None:
        g = binary_gripper(gripper) if self.gripper_mode == "binary" else float(gripper)
        with self.lock:
            self.env.set_joint_targets(np.asarray(q, dtype=float), g)

    def update(self, dt: float) -> None:
        # a late timer must not make the world jump: at most max_step of simulated time per call
        dt = min(float(dt), self.max_step)
        if dt > 0:
            with self.lock:
                self.env.advance(dt)


class InterbotixBackend(DriverBackend):
    """Real WidowX through the Interbotix Python API (needs the Interbotix ROS 2 Humble install and the
    xs_sdk driver running; see /docs/ros.md)."""

    name = "interbotix"

    GRIPPER = "gripper"  # the gripper servo's name in xs_sdk's motor config (and its JointSingleCommand name)
    GRIPPER_DEADBAND = 1e-3  # opening change [0, 1] below which the gripper set point is not rewritten

    def __init__(self, robot_model: str = spec.ROBOT_MODEL, moving_time: float = 0.2, accel_time: float = 0.1,
                 service_probe: Callable[[str, float], bool] | None = None, detect_timeout: float = 10.0,
                 prepare_ros: Callable[[], None] | None = None, gripper_mode: str = "position"):
        """service_probe(name, timeout) -> whether the ROS service `name` appeared within timeout s (the driver
        node passes one that reads the ROS graph): the Interbotix core would otherwise wait forever for xs_sdk
        inside its constructor. prepare_ros(): called before the Interbotix API is built (the driver node passes
        etc_ros.nodes.common.init_default_context_without_signal_handlers; this module stays free of rclpy).
        gripper_mode: 'position' (continuous, xs_sdk linear_position mode) or 'binary' (PWM grasp/release at 0.5);
        either way the gripper's operating mode is written at start (xs_sdk keeps the last mode it was given)."""
        self.gripper_mode = check_gripper_mode(gripper_mode)
        self.prepare_ros = prepare_ros
        self.robot_model = robot_model
        self.service_probe = service_probe
        self.detect_timeout = float(detect_timeout)
        self.moving_time = float(moving_time)
        self.accel_time = float(accel_time)
        self.bot = None
        self._q_cmd: np.ndarray | None = None
        self._g_cmd = 1.0
        self._gripper_open: bool | None = None
        self._g_written: float | None = None  # position mode: the last opening written to the gripper servo
        self.gripper_writes = 0
        self._shutdown: Callable[[], None] | None = None
        self.api_refusals = 0  # goals the Interbotix API itself refused (set_joint_positions returned False)

    def start(self) -> None:
        try:
            from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS  # noqa: WPS433
        except ImportError as e:
            raise DriverError("backend 'interbotix' needs interbotix_xs_modules (Interbotix ROS 2 Humble "
                              "install on the robot PC); use backend 'sim' or 'fake' elsewhere") from e
        srv = f"/{self.robot_model}/get_robot_info"  # xs_sdk's first service (robot_name = robot_model)
        if self.service_probe is not None and not self.service_probe(srv, self.detect_timeout):
            raise DriverError(f"xs_sdk is not running: service {srv} did not appear within {self.detect_timeout:g} s. "
                              f"Start it first (`ros2 launch interbotix_xsarm_control xsarm_control.launch.py "
                              f"robot_model:={self.robot_model} use_rviz:=false`), or launch with xs_sdk:=true")
        # Upstream (Humble) creates its node after `if not rclpy.ok(): rclpy.init()`, and a plain rclpy.init()
        # installs rclpy's SIGINT/SIGTERM handlers, which on Humble shut down EVERY context: the park move would
        # then run on dead contexts. Initialise the default context first, without signal handlers, so upstream
        # skips its own init; the executables' own handlers (run_nodes) turn the signal into a park.
        if self.prepare_ros is not None:
            self.prepare_ros()
        kw = dict(robot_model=self.robot_model, group_name="arm", gripper_name="gripper",
                  moving_time=self.moving_time, accel_time=self.accel_time)
        try:
            try:  # no Python FK on every command (Humble: iterative_update_fk, default True)
                self.bot = InterbotixManipulatorXS(**kw, iterative_update_fk=False)
            except TypeError:  # an API without the flag
                self.bot = InterbotixManipulatorXS(**kw)
        except Exception as e:  # driver not running, wrong model...
            raise DriverError(f"cannot connect to the Interbotix driver for {self.robot_model!r}: {e}") from e
        # Write the servo profile explicitly. Upstream stores moving_time / accel_time in the arm's __init__ before
        # its set_trajectory_time, which writes Profile_Velocity / Profile_Acceleration only when a value differs
        # from the stored one: with a constant moving_time nothing is ever written, and the servos keep the
        # startup profile xs_sdk loads from modes.yaml (time-based, 2000 ms / 300 ms), so every streamed goal
        # would start a 2 s move.
        try:
            self.bot.core.robot_set_operating_modes("group", "arm", "position", profile_type="time",
                                                    profile_velocity=int(round(1000 * self.moving_time)),
                                                    profile_acceleration=int(round(1000 * self.accel_time)))
        except Exception as e:  # service missing / refused
            raise DriverError(f"cannot write the arm's servo profile ({self.moving_time} s / {self.accel_time} s) "
                              f"through xs_sdk's set_operating_modes: {e}") from e
        # The gripper's mode, explicitly: xs_sdk keeps whatever mode it was last given, and a PWM value sent to a
        # gripper left in a position mode by an earlier run (or a position sent in PWM mode) would be nonsense.
        # position: linear_position, where a JointSingleCommand's cmd is the distance between the fingers [m]
        # and xs_sdk converts it to the servo angle with the horn radius / arm length of its motor config (the
        # geometry it also reports left_finger with); no motion profile (velocity-based, 0 = unlimited), like
        # the simulated gripper, which moves as fast as its actuator allows.
        # binary: PWM, the mode upstream's grasp()/release() drive.
        try:
            if self.gripper_mode == "position":
                self.bot.core.robot_set_operating_modes("single", self.GRIPPER, "linear_position",
                                                        profile_type="velocity", profile_velocity=0,
                                                        profile_acceleration=0)
            else:
                self.bot.core.robot_set_operating_modes("single", self.GRIPPER, "pwm")
        except Exception as e:  # service missing / refused
            raise DriverError(f"cannot set the gripper to gripper_mode {self.gripper_mode!r} through xs_sdk's "
                              f"set_operating_modes: {e}") from e
        # The ROS 2 API spins its own node: constructors with start_on_init already called robot_startup(); the
        # Humble one exposes only the module-level robot_startup. Its robot_shutdown / bot.shutdown() end with
        # rclpy.shutdown() of the shared default context, so stop() never calls them: it only destroys the
        # Interbotix node (the process ends right after).
        if not callable(getattr(self.bot, "start", None)):
            try:
                from interbotix_common_modules.common_robot.robot import robot_startup  # noqa: WPS433

                robot_startup()
            except ImportError:
                pass
        self._shutdown = self._destroy_node

    def _destroy_node(self) -> None:
        node = getattr(getattr(self.bot, "core", None), "robot_node", None) or getattr(self.bot, "get_node",
                                                                                       lambda: None)()
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - already gone at exit
                pass

    def read(self) -> tuple[np.ndarray, float]:
        m = self.measure()
        return m.q, m.gripper

    def measure(self) -> JointMeasurement:
        """The latest sensor_msgs/JointState xs_sdk published (upstream keeps it in core.joint_states, replaced
        under core.js_mutex): positions, the servos' measured velocities and xs_sdk's header stamp (its ROS
        clock when it read the servos; same machine, same clock as the driver node)."""
        core = getattr(self.bot, "core", None)
        idx = getattr(core, "js_index_map", None)
        mutex = getattr(core, "js_mutex", None)
        if mutex is not None:
            with mutex:
                js = getattr(core, "joint_states", None)
        else:
            js = getattr(core, "joint_states", None)
        if js is not None and idx:
            pos = list(js.position)
            q = np.array([pos[idx[n]] for n in spec.JOINT_NAMES], dtype=float)
            g = float(spec.gripper_from_finger(pos[idx[spec.GRIPPER_JOINT]])) if spec.GRIPPER_JOINT in idx \
                else self._g_cmd
            vel = list(getattr(js, "velocity", None) or ())
            v = None
            if all(idx[n] < len(vel) for n in spec.JOINT_NAMES):
                v = np.array([vel[idx[n]] for n in spec.JOINT_NAMES], dtype=float)
                if not np.all(np.isfinite(v)):
                    v = None
            st = getattr(getattr(js, "header", None), "stamp", None)
            stamp = None
            if st is not None:
                t = float(getattr(st, "sec", 0)) + 1e-9 * float(getattr(st, "nanosec", 0))
                stamp = t if t > 0 and math.isfinite(t) else None  # 0: never stamped
            return JointMeasurement(q, g, stamp, v)
        if self._q_cmd is None:
            self._q_cmd = np.asarray(self.bot.arm.get_joint_commands(), dtype=float)
        return JointMeasurement(self._q_cmd.copy(), self._g_cmd)

    def command(self, q: np.ndarray, gripper: float) -> None:
        ok = self.bot.arm.set_joint_positions(list(map(float, q)), moving_time=self.moving_time,
                                              accel_time=self.accel_time, blocking=False)
        if ok is False:  # upstream's own limit / velocity check failed: it published nothing
            self.api_refusals += 1
        else:
            self._q_cmd = np.asarray(q, dtype=float).copy()
        self._g_cmd = float(gripper)
        if self.gripper_mode == "position":
            g = min(1.0, max(0.0, float(gripper)))
            if self._g_written is None or abs(g - self._g_written) > self.GRIPPER_DEADBAND:
                # linear_position: distance between the fingers = 2 x left_finger (right_finger = -left_finger)
                self.bot.core.robot_write_joint_command(self.GRIPPER, 2.0 * float(spec.finger_from_gripper(g)))
                self._g_written = g
                self.gripper_writes += 1
            return
        want_open = gripper >= 0.5
        if want_open != self._gripper_open:
            (self.bot.gripper.release if want_open else self.bot.gripper.grasp)(delay=0.0)
            self._gripper_open = want_open

    def stop(self) -> None:
        if self._shutdown is not None:
            self._shutdown()


def make_backend(name: str, *, env: Any = None, lock: Any = None, robot_model: str = spec.ROBOT_MODEL,
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
        if robot_model != spec.ROBOT_MODEL:
            raise DriverError(f"robot_model {robot_model!r} is not supported; this stack is for {spec.ROBOT_MODEL!r}")
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

    def _is_measured_pose(self, q, stamp: float) -> bool:
        return self._measured_pose_time(q, stamp) is not None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def _continues(self, q: np.ndarray, dt: float, velocity, elapsed: float) -> bool:
        """Whether the command is the step right after the last accepted one. With its commanded velocity (the
        safety executor sends it): exactly when q = last + velocity * dt, the executor's own definition of a step
        (a command lost or refused in between breaks the equation). Without: a stamp gap below 1.9 dt."""
        if velocity is None:
            return elapsed < 1.9 * dt
        v = np.asarray(velocity, dtype=float)
        if v.shape != (N,) or not np.all(np.isfinite(v)) or elapsed < dt - 1e-6:
            return False
        return float(np.max(np.abs(q - (self._last_q + v * dt)))) <= STEP_MATCH_TOL

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
        if self._await_anchor:
            # after (re)becoming ready the sender must re-anchor on the joints measured now; its commands until then
            # (e.g. braking a pose from before a re-sync, sent before it saw /driver/ready toggle) are stale
            if not self._is_measured_pose(qa, stamp):
                dev = self._from_measured(qa)
                self.superseded += 1
                return False, (f"superseded: the first command after the driver became ready must start at the "
                               f"measured joints (it is {dev:.3f} rad away)")
            anchor = True
        elif dt == 0 and elapsed is not None:
            # a re-anchor: a published measurement, never one older than the last anchor's (anchors only move forward
            # in measurement time, so they cannot replay old poses); near the joints measured now, once per interval
            found = self._measured_pose_time(qa, stamp)
            anchor = found is not None and found[0] >= self._last_anchor_measured and (
                found[1] or stamp - self._last_anchor >= self.anchor_interval)
        if anchor:  # at the measured joints: no motion commanded, the velocity reference restarts there
            ok, reason = self.guard.check(qa)
            v_new = np.zeros(N) if ok else None
            if ok:
                found = self._measured_pose_time(qa, stamp)
                self._last_anchor_measured = stamp if found is None else found[0]
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


# ---------------------------------------------------------------------------------------------------- sim world
class ThreadBoundEnv:
    """Proxy that runs every call on the wrapped world in ONE dedicated thread.

    Offscreen OpenGL contexts (MuJoCo's EGL/OSMesa renderer) are bound to the thread that made them current, while
    ROS callbacks run on executor threads: reset(), render(), advance()... all go through this thread (which also
    serializes them). Attribute reads (e.g. `env.instruction`) are evaluated there too."""

    def __init__(self, env: Any = None, factory: Callable[[], Any] | None = None, name: str = "sim-world"):
        import queue
        import threading

        if (env is None) == (factory is None):
            raise DriverError("ThreadBoundEnv needs exactly one of env or factory")
        self._queue: Any = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False
        self._thread.start()
        self._env = env if env is not None else self.call(factory)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, kwargs, box, done = item
            try:
                box.append((True, fn(*args, **kwargs)))
            except BaseException as e:  # delivered to the caller
                box.append((False, e))
            done.set()

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        import threading

        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if self._closed:
            raise DriverError("the simulated world was closed")
        box: list = []
        done = threading.Event()
        self._queue.put((fn, args, kwargs, box, done))
        done.wait()
        ok, val = box[0]
        if not ok:
            raise val
        return val

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = self.call(getattr, self._env, name)
        if callable(attr):
            return lambda *a, **k: self.call(attr, *a, **k)
        return attr

    def close(self, close_env: bool = True) -> None:
        """Stop the thread; with close_env, first call the world's own close() (on that thread)."""
        if self._closed:
            return
        try:
            close = getattr(self._env, "close", None) if close_env else None
            if callable(close):
                self.call(close)
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join(5.0)
