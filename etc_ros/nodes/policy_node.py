"""Policy node: latest images + joint state + accepted instruction -> action chunks (etc_ros.policy.worker).

Subscribes /camera/<cam>/image_raw for each camera of the bundle (or the `cameras` parameter), /joint_states
and /instruction/accepted. Inference runs in the PolicyWorker's thread, never in a ROS callback, so it cannot
block anything. Publishes /policy/action_chunk (trajectory_msgs/JointTrajectory): header.stamp = stamp of the
oldest image the chunk was computed from, joint_names = spec.ACTION_NAMES, one point per step with
positions = the 7 action values and time_from_start = i / policy_hz (the bundle spec's control_hz). No
instruction or no image -> no chunk.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from etc_ros.nodes import messages
from etc_ros.nodes.common import LATCHED, RELIABLE, SENSOR, GraphNode, run_nodes
from etc_ros.nodes.graph import TOPICS, image_topic
from etc_ros.policy.worker import PolicyWorker, load_runtime

if TYPE_CHECKING:
    from etc_ros.policy.interface import Policy


class PolicyNode(GraphNode):
    param_set = "policy_node"

    def __init__(self, params: dict[str, Any] | None = None, runtime: Policy | None = None,
                 name: str = "policy_node", **kwargs: Any):
        super().__init__(name, params, **kwargs)
        cams_param = tuple(c.strip() for c in str(self.p("cameras")).split(",") if c.strip())
        if runtime is None:
            runtime = load_runtime(self.p("policy_bundle"), self.p("runtime_backend"), cams_param or ("primary",),
                                   providers=self.p("providers"))
        self.runtime: Policy = runtime
        self.active_providers = list(runtime.spec.providers)
        self.get_logger().info(f"policy runtime: backend {self.p('runtime_backend')}, execution providers "
                               f"{self.active_providers or ['(scripted)']}")
        self.cameras = cams_param or runtime.spec.cameras
        self.policy_hz = runtime.spec.policy_hz
        self.images_received = 0
        self.bad_messages = 0
        self.pub_chunk = self.create_publisher(JointTrajectory, TOPICS["action_chunk"], RELIABLE)
        self.worker = PolicyWorker(runtime, self.cameras, self._publish_chunk,
                                   max_rate_hz=float(self.p("max_rate_hz")),
                                   max_observation_age=float(self.p("max_observation_age")), clock=self.now_s,
                                   on_error=lambda e: self.get_logger().error(f"policy step failed: {e}",
                                                                              throttle_duration_sec=2.0))
        group = ReentrantCallbackGroup()
        for cam in self.cameras:
            self.create_subscription(Image, image_topic(cam), lambda m, c=cam: self._on_image(c, m), SENSOR,
                                     callback_group=group)
        self.create_subscription(JointState, TOPICS["joint_states"], self._on_joints, SENSOR, callback_group=group)
        self.create_subscription(String, TOPICS["instruction_accepted"], self._on_instruction, LATCHED,
                                 callback_group=group)
        dhz = float(self.p("diagnostics_hz"))
        if dhz > 0:
            self.create_timer(1.0 / dhz, self._diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self.worker.start()

    def _on_image(self, cam: str, msg: Image) -> None:
        try:
            img = messages.msg_to_image(msg)
        except messages.MessageError as e:
            self.bad_messages += 1
            self.get_logger().warning(f"camera {cam}: {e}", throttle_duration_sec=2.0)
            return
        if img.ndim != 3:
            self.bad_messages += 1
            return
        self.images_received += 1
        self.worker.set_image(cam, img, messages.from_time(msg.header.stamp))

    def _on_joints(self, msg: JointState) -> None:
        parsed = messages.parse_joint_state(msg)
        if parsed is None:
            self.bad_messages += 1
            return
        q, g, _ = parsed
        self.worker.set_state(np.concatenate([q, [g]]))

    def _on_instruction(self, msg: String) -> None:
        self.worker.set_instruction(msg.data or None)

    def _publish_chunk(self, actions: np.ndarray, obs_stamp: float) -> None:
        self.pub_chunk.publish(messages.chunk_to_msg(actions, obs_stamp, self.policy_hz))

    def _diagnostics(self) -> None:
        s = self.worker.stats()
        s["images_received"] = self.images_received
        s["bad_messages"] = self.bad_messages
        s["cameras"] = ",".join(self.cameras)
        s["providers"] = ",".join(self.active_providers) or "(scripted)"
        if not s["instruction"]:
            level, msg = "warn", "no instruction: no chunks"
        elif s["errors"]:
            level, msg = "warn", f"{s['errors']} failed step(s): {s['last_error']}"
        else:
            level, msg = "ok", f"{s['chunks']} chunk(s), p50 {s['latency_p50_ms']} ms"
        self.publish_diagnostics(level, msg, s)

    def destroy_node(self) -> None:
        worker = getattr(self, "worker", None)  # absent when the constructor failed
        if worker is not None:
            worker.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [PolicyNode()], args)


if __name__ == "__main__":
    main()
