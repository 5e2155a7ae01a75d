"""Safety node: wraps etc_ros.safety.SafetyExecutor (all logic lives there).

Subscribes /policy/action_chunk (chunks), /joint_states, /camera/<camera_name>/camera_info (staleness: the
info is stamped like its image and much lighter) and /driver/ready. Ticks at servo_hz with a timer and
publishes /safety/joint_command (one point: 6 arm joints + 'gripper') only when the command says execute.
Services ~/estop and ~/reset_estop (std_srvs/Trigger), ~/dry_run (std_srvs/SetBool). /diagnostics at 1 Hz.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from etc_ros.core import spec as robot_spec
from etc_ros.nodes import messages
from etc_ros.nodes.common import LATCHED, RELIABLE, SENSOR, GraphNode, run_nodes
from etc_ros.nodes.graph import TOPICS, camera_info_topic, load_safety_limits
from etc_ros.policy.worker import percentile

if TYPE_CHECKING:
    from etc_ros.safety import SafetyExecutor


def _ms(values: Iterable[float], q: float, ndigits: int) -> float | None:
    """q-th percentile of seconds, in ms; None without values."""
    v = percentile(values, q)
    return None if v is None else round(1000 * v, ndigits)


class SafetyNode(GraphNode):
    param_set = "safety_node"

    def __init__(self, params: dict[str, Any] | None = None, executor: SafetyExecutor | None = None,
                 name: str = "safety_node", **kwargs: Any):
        super().__init__(name, params, **kwargs)
        self.servo_hz = float(self.p("servo_hz"))
        self.policy_hz = float(self.p("policy_hz")) or robot_spec.POLICY_HZ
        if executor is None:
            from etc_ros.safety import SafetyExecutor

            limits = load_safety_limits(self.p("safety_config"))
            executor = SafetyExecutor(None, limits, mode=self.p("mode"), align=self.p("align"), servo_hz=self.servo_hz,
                                      policy_hz=self.policy_hz, dry_run=bool(self.p("dry_run")))
        self.ex: SafetyExecutor = executor
        self._lock = threading.Lock()
        self._q: np.ndarray | None = None
        self._g = 1.0
        self._camera_stamp: float | None = None
        self._driver_ready = False
        self._ready_since = 0.0
        self.resets = 0
        self._initialized = False
        self._last_tick_wall: float | None = None
        self.periods: deque[float] = deque(maxlen=5000)
        self.latencies: deque[float] = deque(maxlen=5000)  # camera stamp -> first command using its chunk
        self.camera_ages: deque[float] = deque(maxlen=5000)  # age of the newest camera frame at each tick
        self._pending_obs: float | None = None
        self.commands_sent = 0
        self.chunks_received = 0
        self.chunks_rejected = 0
        self.bad_messages = 0
        self.last_rejection = ""
        self.not_ready_ticks = 0
        self.last_command = None

        sub_group = MutuallyExclusiveCallbackGroup()
        timer_group = MutuallyExclusiveCallbackGroup()
        self.pub_cmd = self.create_publisher(JointTrajectory, TOPICS["joint_command"], RELIABLE)
        self.create_subscription(JointTrajectory, TOPICS["action_chunk"], self._on_chunk, RELIABLE,
                                 callback_group=sub_group)
        self.create_subscription(JointState, TOPICS["joint_states"], self._on_joints, SENSOR,
                                 callback_group=sub_group)
        self.create_subscription(CameraInfo, camera_info_topic(self.p("camera_name")), self._on_camera, SENSOR,
                                 callback_group=sub_group)
        self.create_subscription(Bool, TOPICS["driver_ready"], self._on_ready, LATCHED, callback_group=sub_group)
        self.create_service(Trigger, "~/estop", self._srv_estop, callback_group=sub_group)
        self.create_service(Trigger, "~/reset_estop", self._srv_reset_estop, callback_group=sub_group)
        self.create_service(SetBool, "~/dry_run", self._srv_dry_run, callback_group=sub_group)
        self.timer = self.create_timer(1.0 / self.servo_hz, self._tick, callback_group=timer_group)
        hz = float(self.p("diagnostics_hz"))
        if hz > 0:
            self.create_timer(1.0 / hz, self._diagnostics, callback_group=sub_group)

    # ---- inputs
    def _on_joints(self, msg: JointState) -> None:
        parsed = messages.parse_joint_state(msg)
        if parsed is None:
            self.bad_messages += 1
            return
        with self._lock:
            self._q, self._g, stamp = parsed
            if self._driver_ready and not self._initialized and stamp >= self._ready_since:
                self._reset_locked()

    def _on_camera(self, msg: CameraInfo) -> None:
        with self._lock:
            self._camera_stamp = messages.from_time(msg.header.stamp)

    def _on_ready(self, msg: Bool) -> None:
        with self._lock:
            self._driver_ready = bool(msg.data)
            if self._driver_ready:
                # the driver publishes ready=true only when it becomes ready (start, restart, re-sync), and a new
                # driver process delivers its latched true even when no false was seen in between: re-anchor on
                # the first joint state measured after this
                self._initialized = False
                self._ready_since = self.now_s()

    def _reset_locked(self) -> None:
        self.ex.reset(self._q, self._g, self.now_s())
        self._initialized = True
        self._pending_obs = None
        self.resets += 1

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = self.now_s()
        try:
            actions, obs_stamp, hz = messages.msg_to_chunk(msg)
        except messages.MessageError as e:
            self.bad_messages += 1
            self.last_rejection = str(e)
            return
        with self._lock:
            self.chunks_received += 1
            if hz is not None and abs(hz - self.policy_hz) > 0.01 * self.policy_hz:
                ok, reason = False, f"rate: chunk at {hz:.3g} Hz, executor runs the policy at {self.policy_hz:g} Hz"
            elif not self._initialized:
                ok, reason = False, "not_initialized: waiting for the driver and joint states"
            else:
                ok, reason = self.ex.submit_chunk(actions, obs_stamp, now)
            if ok:
                self._pending_obs = obs_stamp
            else:
                self.chunks_rejected += 1
                self.last_rejection = reason

    # ---- control tick
    def _tick(self) -> None:
        now = self.now_s()
        with self._lock:
            if self._last_tick_wall is not None:
                self.periods.append(now - self._last_tick_wall)
            self._last_tick_wall = now
            if self._camera_stamp is not None:
                self.camera_ages.append(now - self._camera_stamp)
            if not (self._initialized and self._driver_ready):
                self.not_ready_ticks += 1
                return
            cmd = self.ex.tick(now, self._q, self._g, self._camera_stamp)
            self.last_command = cmd
            if not cmd.execute:
                return
            # a re-anchor (the command jumped to the measured joints) goes out with dt = 0: the driver accepts it
            # at the joints it measures instead of checking a velocity against the abandoned command
            msg = messages.command_to_msg(cmd.q, cmd.gripper, cmd.stamp, dt=0.0 if cmd.reanchored else cmd.dt,
                                          velocity=cmd.velocity)
            if self._pending_obs is not None and not cmd.holding:
                self.latencies.append(now - self._pending_obs)
                self._pending_obs = None
        self.pub_cmd.publish(msg)
        self.commands_sent += 1

    # ---- services
    def _srv_estop(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self.ex.estop("operator e-stop (~/estop)")
        self.get_logger().warning("E-STOP latched; call ~/reset_estop to resume")
        res.success, res.message = True, "e-stop latched: braking to rest and holding"
        return res

    def _srv_reset_estop(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            was = bool(getattr(self.ex, "estopped", False))
            self.ex.reset_estop()
        res.success = True
        res.message = "e-stop cleared: motion resumes with the next fresh chunk" if was else "e-stop was not latched"
        return res

    def _srv_dry_run(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        with self._lock:
            self.ex.dry_run = bool(req.data)
        res.success, res.message = True, f"dry_run = {bool(req.data)}"
        return res

    # ---- diagnostics
    def stats(self) -> dict:
        per = list(self.periods)
        lat = list(self.latencies)
        return {
            "commands_sent": self.commands_sent,
            "chunks_received": self.chunks_received,
            "chunks_rejected": self.chunks_rejected,
            "last_rejection": self.last_rejection,
            "bad_messages": self.bad_messages,
            "driver_ready": self._driver_ready,
            "resets": self.resets,
            "not_ready_ticks": self.not_ready_ticks,
            "period_p50_ms": _ms(per, 50, 3),
            "period_p99_ms": _ms(per, 99, 3),
            "camera_age_at_tick_p50_ms": _ms(self.camera_ages, 50, 2),
            "camera_age_at_tick_p99_ms": _ms(self.camera_ages, 99, 2),
            "camera_to_command_p50_ms": _ms(lat, 50, 2),
            "camera_to_command_p99_ms": _ms(lat, 99, 2),
        }

    def _diagnostics(self) -> None:
        with self._lock:
            d = dict(self.ex.diagnostics()) if self._initialized else {"initialized": False}
            s = self.stats()
        level = "ok"
        msg = "tracking"
        if d.get("estop"):
            level, msg = "error", "e-stop latched: " + str(d.get("estop_reason", ""))
        elif d.get("fault"):
            level, msg = "error", str(d["fault"])
        elif not self._initialized:
            level, msg = "warn", "waiting for the driver / joint states"
        elif d.get("holding"):
            level, msg = "warn", "holding: " + str(d.get("hold_reason", ""))
        if d.get("dry_run"):
            msg = "[dry run] " + msg
        self.publish_diagnostics(level, msg, {**d, "node": s})


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [SafetyNode()], args)


if __name__ == "__main__":
    main()
