"""WidowX driver node: a DriverCore (etc_ros.robot.core) behind ROS topics.

Publishes /joint_states (6 arm joints + left_finger/right_finger) at publish_hz and /driver/ready (latched
Bool); subscribes /safety/joint_command. A backend that reports when it measured (interbotix: xs_sdk's header
stamp) and the measured joint velocities has each of its measurements republished once with that stamp and those
velocities; otherwise (fake, sim) the stamp is the tick time and the velocity a finite difference. On start it
moves smoothly to start_pose and only then reports ready; on shutdown (shutdown_motion()) it moves to stop_pose.
Commands outside the limits are refused by the JointCommandGuard and counted in /diagnostics, whoever sent them.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from etc_ros.core import spec as robot_spec
from etc_ros.nodes import messages
from etc_ros.nodes.common import (
    JOINT_STATES_QOS,
    LATCHED,
    RELIABLE,
    GraphNode,
    init_default_context_without_signal_handlers,
    run_nodes,
)
from etc_ros.nodes.graph import TOPICS, load_safety_limits
from etc_ros.robot.base import DriverBackend
from etc_ros.robot.core import DriverCore, make_backend

if TYPE_CHECKING:
    from etc_ros.safety import JointCommandGuard


GUARD_TOL = 1e-4  # relative (and absolute) slack of the driver's guard on every limit


class DriverNode(GraphNode):
    param_set = "driver_node"

    def __init__(self, params: dict[str, Any] | None = None, backend: DriverBackend | None = None,
                 guard: JointCommandGuard | None = None, name: str = "driver_node", env: Any = None,
                 lock: Any = None, **kwargs: Any):
        super().__init__(name, params, **kwargs)
        limits = load_safety_limits(self.p("safety_config"))
        if backend is None:
            backend = make_backend(self.p("backend"), env=env, lock=lock, robot_model=self.p("robot_model"),
                                   fake_tau=float(self.p("fake_tau")), moving_time=float(self.p("moving_time")),
                                   accel_time=float(self.p("accel_time")), service_probe=self._service_appears,
                                   prepare_ros=init_default_context_without_signal_handlers,
                                   gripper_mode=str(self.p("gripper_mode")))
        if guard is None:
            from etc_ros.safety import JointCommandGuard

            # tol: the commands' dt and stamps travel as integer nanoseconds; recomputing velocity and
            # acceleration from them moves values produced exactly at a limit by ~1e-6 relative
            guard = JointCommandGuard(limits, tol=GUARD_TOL)
        lower = getattr(guard, "lo", None)
        upper = getattr(guard, "hi", None)
        self.core = DriverCore(backend, guard, start_pose=self.p("start_pose"), stop_pose=self.p("stop_pose"),
                               speed_fraction=float(self.p("speed_fraction")),
                               max_velocity=limits.max_joint_velocity, max_acceleration=limits.max_joint_acceleration,
                               lower=lower, upper=upper, margin=0.0)
        self._lock = threading.Lock()
        self._last_q: np.ndarray | None = None
        self._last_t: float | None = None
        self._ready_published: bool | None = None
        self.bad_messages = 0
        self.states_published = 0
        self.repeated_measurements = 0  # ticks without a new hardware measurement (nothing republished)
        self.future_stamps = 0  # measurement stamps after the node's clock, published at the node's time
        self.measured_stamps = False  # whether the last joint state carried the hardware's own stamp
        self._last_measure_age: float | None = None
        self._stopped = False

        group = MutuallyExclusiveCallbackGroup()
        # reliable (depth 10): matches default-QoS monitors (rqt, ros2 topic echo, robot_state_publisher) as well
        # as best-effort subscribers like the policy and safety nodes
        self.pub_js = self.create_publisher(JointState, TOPICS["joint_states"], JOINT_STATES_QOS)
        self.pub_ready = self.create_publisher(Bool, TOPICS["driver_ready"], LATCHED)
        self.create_subscription(JointTrajectory, TOPICS["joint_command"], self._on_command, RELIABLE,
                                 callback_group=group)
        self.core.start(self.now_s())
        self._publish_ready()
        hz = float(self.p("publish_hz"))
        if hz < robot_spec.SERVO_HZ:
            self.get_logger().warning(f"publish_hz {hz} < {robot_spec.SERVO_HZ:g}: the safety layer expects joint "
                                      f"states at >= its {robot_spec.SERVO_HZ:g} Hz tick")
        self.timer = self.create_timer(1.0 / hz, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        dhz = float(self.p("diagnostics_hz"))
        if dhz > 0:
            self.create_timer(1.0 / dhz, self._diagnostics, callback_group=group)

    def _service_appears(self, name: str, timeout: float) -> bool:
        """Whether service `name` shows up in the ROS graph within timeout s (DDS discovery; no spinning)."""
        import time

        t_end = time.monotonic() + float(timeout)
        while True:
            if any(n == name for n, _ in self.get_service_names_and_types()):
                return True
            if time.monotonic() >= t_end:
                return False
            time.sleep(0.1)

    def _publish_ready(self) -> None:
        r = self.core.ready
        if r != self._ready_published:
            self.pub_ready.publish(Bool(data=r))
            self._ready_published = r

    def _state_msg(self, now: float, q: np.ndarray, g: float) -> JointState | None:
        """The joint state to publish for the measurement core.update() just made (call under self._lock), or
        None when the backend reports measurement stamps and this one was already published (no new reading).
        Hardware stamps are used as they are (measurement time), only never after `now`; velocities are the
        measured ones, else a finite difference over the stamps."""
        m = self.core.measurement
        stamp, vel = now, None
        if m is not None and m.stamp is not None:
            stamp = float(m.stamp)
            if stamp > now:
                self.future_stamps += 1
                stamp = now
            if self._last_t is not None and self._last_q is not None and stamp <= self._last_t:
                self.repeated_measurements += 1
                return None
            vel = m.velocity
            self._last_measure_age = now - stamp
        self.measured_stamps = m is not None and m.stamp is not None
        if vel is None and self._last_q is not None and self._last_t is not None and stamp > self._last_t:
            vel = (q - self._last_q) / (stamp - self._last_t)
        self._last_q, self._last_t = q, stamp
        return messages.joint_state_msg(q, g, stamp, vel)

    def _tick(self) -> None:
        if self._stopped:
            return
        now = self.now_s()
        with self._lock:
            q, g = self.core.update(now)
            msg = self._state_msg(now, q, g)
            self._publish_ready()
        if msg is not None:
            self.pub_js.publish(msg)
            self.states_published += 1

    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            q, g, stamp, dt, velocity = messages.msg_to_command(msg)
        except messages.MessageError as e:
            self.bad_messages += 1
            self.get_logger().warning(f"malformed joint command refused: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            ok, reason = self.core.command(q, g, stamp, dt, velocity)
        if not ok and self.core.state == "ready" and not reason.startswith("superseded"):
            self.get_logger().warning(f"joint command refused: {reason}", throttle_duration_sec=1.0)

    def _diagnostics(self) -> None:
        with self._lock:
            d = self.core.diagnostics()
        d["bad_messages"] = self.bad_messages
        d["states_published"] = self.states_published
        d["joint_state_stamps"] = "hardware measurement time" if self.measured_stamps else "driver tick time"
        d["repeated_measurements"] = self.repeated_measurements
        d["future_stamps"] = self.future_stamps
        if self._last_measure_age is not None:
            d["measurement_age_s"] = round(self._last_measure_age, 4)
        level = "ok" if d["state"] == "ready" else "warn"
        if d["refused_commands"]:
            level = "warn"
        self.publish_diagnostics(level, f"{d['state']}, {d['refused_commands']} command(s) refused", d)

    def resync(self) -> None:
        """The world under the driver was reset (sim episodes): take the measured pose as the target and toggle
        /driver/ready so the safety node re-anchors on fresh joint states."""
        with self._lock:
            self.pub_ready.publish(Bool(data=False))
            self.core.reset_to(self.now_s())
            self._last_q = None
            self.pub_ready.publish(Bool(data=self.core.ready))
            self._ready_published = self.core.ready

    def shutdown_motion(self, timeout: float = 30.0, dt: float = 0.02) -> None:
        """Move to the stop pose (blocking, real time, joint states still published), then stop the backend.
        /driver/ready goes false first, so the safety node stops commanding."""
        import time

        if self._stopped:
            return
        self._stopped = True
        with self._lock:
            self.pub_ready.publish(Bool(data=False))
            self._ready_published = False
            t0 = self.now_s()
            self.core.begin_stop(t0)
            move = self.core.move
            if self.core.state == "stopping" and move is not None:
                self.get_logger().info(f"parking: moving to the {self.core.stop_pose} pose ({move.duration:.1f} s)")
        while self.core.state == "stopping" and self.now_s() - t0 < timeout:
            try:
                time.sleep(dt)
                now = self.now_s()
                with self._lock:
                    q, g = self.core.update(now)
                    msg = self._state_msg(now, q, g)
                try:
                    if msg is not None:
                        self.pub_js.publish(msg)
                except Exception:  # noqa: BLE001 - a context shut down by someone else: keep parking
                    pass
            except KeyboardInterrupt:  # a second Ctrl-C: the arm is half-way; finish the park (SIGKILL aborts)
                self.get_logger().warning("still parking the arm (send SIGKILL to abort)")
        with self._lock:
            parked = self.core.state == "stopped"
            self.core.state = "stopped"
            self.core.backend.stop()
        self.get_logger().info("parked" if parked else "stop move timed out: backend stopped anyway")


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [DriverNode()], args, park=lambda nodes: nodes[0].shutdown_motion())


if __name__ == "__main__":
    main()
