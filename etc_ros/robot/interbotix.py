"""InterbotixBackend: `InterbotixManipulatorXS` from interbotix_xs_modules (ROS 2 Humble install on the robot PC),
imported only when selected. Arm in position mode (time-based profile). Gripper per `gripper_mode`:
'position' (default, what the policy was trained on: the simulated gripper is a position actuator tracking the
commanded opening) puts the gripper servo in xs_sdk's linear_position mode and streams the finger separation
the opening stands for; 'binary' keeps it in PWM mode and calls grasp()/release() when the commanded opening
crosses 0.5. Joint states come with xs_sdk's own header stamp and the servos' measured velocities.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.robot.base import DriverBackend, DriverError, JointMeasurement, check_gripper_mode


class InterbotixBackend(DriverBackend):
    """Real WidowX through the Interbotix Python API (needs the Interbotix ROS 2 Humble install and the
    xs_sdk driver running; see /docs/ros.md)."""

    name = "interbotix"

    GRIPPER = "gripper"  # the gripper servo's name in xs_sdk's motor config (and its JointSingleCommand name)
    GRIPPER_DEADBAND = 1e-3  # opening change [0, 1] below which the gripper set point is not rewritten

    def __init__(self, robot_model: str = robot_spec.ROBOT_MODEL, moving_time: float = 0.2, accel_time: float = 0.1,
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
        self.bot: Any = None  # InterbotixManipulatorXS after connect() (an untyped SDK, imported only then)
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
            q = np.array([pos[idx[n]] for n in robot_spec.JOINT_NAMES], dtype=float)
            g = (float(robot_spec.gripper_from_finger(pos[idx[robot_spec.GRIPPER_JOINT]]))
                 if robot_spec.GRIPPER_JOINT in idx else self._g_cmd)
            vel = list(getattr(js, "velocity", None) or ())
            v = None
            if all(idx[n] < len(vel) for n in robot_spec.JOINT_NAMES):
                v = np.array([vel[idx[n]] for n in robot_spec.JOINT_NAMES], dtype=float)
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
                self.bot.core.robot_write_joint_command(self.GRIPPER, 2.0 * float(robot_spec.finger_from_gripper(g)))
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
