"""A stub of the Interbotix ROS 2 Humble Python API (interbotix_xs_modules) with xs_sdk behind it, for the tests of
the interbotix driver backend: the real packages are not installed here. It reproduces the upstream semantics the
backend relies on (read in the Humble branches of interbotix_ros_toolboxes / interbotix_ros_core /
interbotix_xs_driver): profile registers written only on change, set_joint_positions returning False on its own
limit check, joint states replaced as whole messages under js_mutex with xs_sdk's header stamp and measured
velocities, single-servo commands read according to the servo's operating mode (pwm effort, position rad,
linear_position finger separation in m)."""
from __future__ import annotations

import numpy as np

from etc_ros.core import spec as robot_spec

XS_HORN_RADIUS, XS_ARM_LENGTH = 0.014, 0.024  # interbotix_xsarm_control config/wx250s.yaml, grippers.gripper


def xs_finger_from_angle(theta: float) -> float:
    """xs_sdk's left_finger [m] for a gripper servo angle [rad] (horn + arm linkage, derived here)."""
    r, L = XS_HORN_RADIUS, XS_ARM_LENGTH
    return r * np.sin(theta) + np.sqrt(L * L - (r * np.cos(theta)) ** 2)


def xs_angle_from_separation(d: float) -> float:
    """Inverse of the above for a finger separation d = 2 x left_finger (what linear_position commands take)."""
    r, L, h = XS_HORN_RADIUS, XS_ARM_LENGTH, d / 2.0
    return float(np.arcsin((h * h + r * r - L * L) / (2.0 * h * r)))


def install_interbotix_stub(monkeypatch, calls: list, inits: list):
    """A stub of the Humble Interbotix Python API (the real package is not installed here) with the semantics the
    backend relies on, including xs_sdk behind it: returns the InterbotixManipulatorXS class it installed."""
    import sys
    import types

    class Arm:
        """Upstream (Humble) semantics: __init__ stores the times BEFORE set_trajectory_time, which writes the
        profile registers only when a value changes; set_joint_positions returns False and publishes nothing
        when its own joint-limit check fails."""

        def __init__(self, core, moving_time, accel_time):
            self.core, self.moving_time, self.accel_time = core, moving_time, accel_time
            self.set_trajectory_time(moving_time, accel_time)  # writes nothing: the values are the stored ones

        def set_trajectory_time(self, moving_time=None, accel_time=None):
            if moving_time is not None and moving_time != self.moving_time:
                self.moving_time = moving_time
                self.core.registers["Profile_Velocity"] = int(moving_time * 1000)
            if accel_time is not None and accel_time != self.accel_time:
                self.accel_time = accel_time
                self.core.registers["Profile_Acceleration"] = int(accel_time * 1000)

        def set_joint_positions(self, q, moving_time=None, accel_time=None, blocking=True):
            if any(abs(v) > 3.2 for v in q):
                return False
            self.set_trajectory_time(moving_time, accel_time)
            calls.append(("arm", list(q), moving_time, accel_time, blocking))
            return True

    class Gripper:
        """Upstream grasp()/release(): publish -/+ the PWM effort (250 at the default pressure 0.5) as a
        JointSingleCommand for the gripper servo; xs_sdk reads it in whatever mode that servo is in."""

        def __init__(self, core):
            self.core = core

        def grasp(self, delay=1.0):
            calls.append(("grasp", delay))
            self.core.xs_single_command("gripper", -250.0)

        def release(self, delay=1.0):
            calls.append(("release", delay))
            self.core.xs_single_command("gripper", 250.0)

    class Core:
        """InterbotixRobotXSCore: keeps the latest sensor_msgs/JointState from xs_sdk in `joint_states` (the message
        object is replaced under js_mutex by the subscription callback); xs_sdk publishes the 7 servos (6 arm +
        'gripper' with their measured positions / velocities) then left_finger / right_finger (velocity 0), and
        stamps each message with its ROS clock when it read the servos."""

        def __init__(self):
            import threading

            names = list(robot_spec.JOINT_NAMES) + ["gripper", "left_finger", "right_finger"]
            self.js_index_map = {n: i for i, n in enumerate(names)}
            self.js_mutex = threading.Lock()
            self.joint_states = None
            self.gripper_angle = 0.0  # rad, the servo horn; the fingers follow it through the linkage
            self.xs_publish(robot_spec.SLEEP_POSE, np.zeros(6), 1000.0)
            # what xs_sdk loads from modes.yaml at startup (time-based profile, ms; gripper in PWM mode)
            self.registers = {"Profile_Velocity": 2000, "Profile_Acceleration": 300}
            self.modes = {"arm": "position", "gripper": "pwm"}
            self.gripper_goals: list[tuple[str, float]] = []  # (mode, value) xs_sdk wrote to the gripper servo

        def xs_publish(self, q, v, t):
            """xs_sdk's joint-state timer: a new message, stamped t [s]."""
            f = float(xs_finger_from_angle(self.gripper_angle))
            sec = int(t)
            msg = types.SimpleNamespace(
                header=types.SimpleNamespace(stamp=types.SimpleNamespace(sec=sec, nanosec=int(round((t - sec) * 1e9)))),
                name=list(self.js_index_map),
                position=[float(x) for x in q] + [self.gripper_angle, f, -f],
                velocity=[float(x) for x in v] + [0.0, 0.0, 0.0],
                effort=[0.0] * 9)
            with self.js_mutex:
                self.joint_states = msg

        def xs_single_command(self, name, cmd):
            """xs_sdk's joint_single subscriber: the command's meaning depends on the servo's operating mode."""
            mode = self.modes[name]
            if mode == "linear_position":  # finger separation [m] -> servo angle
                goal = xs_angle_from_separation(cmd)
                if not np.isfinite(goal):
                    raise AssertionError(f"linear_position command {cmd} outside the gripper's travel")
                self.gripper_goals.append((mode, goal))
            else:  # position: rad; pwm: effort
                self.gripper_goals.append((mode, float(cmd)))

        def robot_write_joint_command(self, joint_name, command):
            calls.append(("single", joint_name, command))
            self.xs_single_command(joint_name, command)

        def robot_set_operating_modes(self, cmd_type, name, mode, profile_type="velocity", profile_velocity=0,
                                      profile_acceleration=0):
            calls.append(("modes", cmd_type, name, mode, profile_type))
            self.modes[name] = mode
            if name == "arm":
                self.registers = {"Profile_Velocity": profile_velocity, "Profile_Acceleration": profile_acceleration}

    class Node:
        def destroy_node(self):
            calls.append(("destroy_node",))

    class Bot:
        """Humble: the node is created after `if not rclpy.ok(): rclpy.init()` (a plain init installs rclpy's
        handlers, which shut down every context on SIGINT); shutdown() ends with rclpy.shutdown()."""

        def __init__(self, robot_model, group_name, gripper_name, moving_time, accel_time, iterative_update_fk=True):
            import rclpy

            calls.append(("init", robot_model, group_name, gripper_name, moving_time, accel_time))
            inits.append((rclpy.ok(), iterative_update_fk))
            self.core = Core()
            self.core.robot_node = Node()
            self.arm, self.gripper = Arm(self.core, moving_time, accel_time), Gripper(self.core)

        def start(self):
            pass

        def shutdown(self):
            calls.append(("rclpy.shutdown",))

    for name in ("interbotix_xs_modules", "interbotix_xs_modules.xs_robot"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    mod = types.ModuleType("interbotix_xs_modules.xs_robot.arm")
    mod.InterbotixManipulatorXS = Bot
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules.xs_robot.arm", mod)
    return Bot
