"""Helpers of the ROS graph tests: a graph on fake hardware with recording hooks, in its own DDS domain."""
from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import numpy as np

# one random DDS domain per test process (before any rclpy.init), localhost only: no crosstalk with other runs
os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid() ^ time.time_ns()).randint(1, 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")

from etc_ros.camera.sources import FakeCameraSource  # noqa: E402
from etc_ros.core import spec as robot_spec  # noqa: E402
from etc_ros.nodes.bringup import wait_until  # noqa: E402,F401  (shared with the tests)
from etc_ros.policy.scripted import ScriptedRuntime, circle_fn  # noqa: E402
from etc_ros.robot.fake import FakeBackend  # noqa: E402
from etc_ros.safety import SafetyExecutor  # noqa: E402


class RecordingBackend(FakeBackend):
    """Fake arm that logs every command that reached it (after the driver's guard)."""

    def __init__(self, **kw: Any):
        super().__init__(q0=robot_spec.READY_POSE, **kw)
        self.log: list[tuple[float, np.ndarray, float]] = []
        self._lk = threading.Lock()

    def command(self, q, gripper):
        with self._lk:
            self.log.append((time.time(), np.array(q, dtype=float), float(gripper)))
        super().command(q, gripper)


class RecordingExecutor(SafetyExecutor):
    """The real SafetyExecutor, logging each tick: (now, holding, reason, q, velocity, execute)."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.ticks: list[tuple] = []

    def tick(self, now, q_measured=None, gripper_measured=None, camera_stamp=None):
        cmd = super().tick(now, q_measured, gripper_measured, camera_stamp)
        self.ticks.append((now, cmd.holding, cmd.reason, cmd.q.copy(), cmd.velocity.copy(), cmd.execute))
        return cmd




def alternating_fn(bad_every: int = 2):
    """Good circle chunks interleaved with NaN and huge ones."""
    good = circle_fn()

    def fn(obs, k):
        if k % bad_every == 1:
            c = np.zeros((robot_spec.CHUNK_HORIZON, 7))
            c[k % robot_spec.CHUNK_HORIZON, k % 7] = np.nan if (k // bad_every) % 2 else np.inf
            return c
        if k % bad_every == 2 % bad_every and bad_every > 2:
            return np.full((robot_spec.CHUNK_HORIZON, 7), 1e6 * (-1) ** k)
        return good(obs, k)

    return fn


def start_fake_graph(runtime=None, params: dict | None = None, cfg_overrides: dict | None = None, **extra):
    from etc_ros.nodes.bringup import start_graph
    from etc_ros.nodes.graph import load_safety_limits

    backend = RecordingBackend()
    camera = FakeCameraSource("primary", width=64, height=48, fps=30.0)
    limits = load_safety_limits()
    executor = RecordingExecutor(None, limits, mode="ensemble", servo_hz=50.0, policy_hz=5.0)
    runtime = runtime or ScriptedRuntime(fn=circle_fn())
    p = {"driver_node": {"speed_fraction": 1.0}}
    for k, v in (params or {}).items():
        p.setdefault(k, {}).update(v)
    cfg = {"use_sim": False, "driver_backend": "fake", "camera_type": "fake", "policy_bundle": "fake:hold",
           "params": p, **(cfg_overrides or {})}
    g = start_graph(cfg, runtime=runtime, camera_source=camera, driver_backend=backend, safety_executor=executor,
                    **extra)
    assert g.wait_ready(20.0), "graph not ready"
    return g, backend, executor, camera


class Recorder:
    """A node in the graph's context subscribing to the topics under test."""

    def __init__(self, g):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from etc_ros.nodes.common import LATCHED, RELIABLE, SENSOR
        from etc_ros.nodes.graph import TOPICS, camera_info_topic

        self.g = g
        self.node = Node("test_recorder", context=g.context)
        self.commands: list = []
        self.chunks: list = []
        self.joint_states: list = []
        self.camera_stamps: list = []
        self.diagnostics: list = []
        self.accepted: list = []
        self.lock = threading.Lock()
        n = self.node
        n.create_subscription(JointTrajectory, TOPICS["joint_command"], lambda m: self._add(self.commands, m), RELIABLE)
        n.create_subscription(JointTrajectory, TOPICS["action_chunk"], lambda m: self._add(self.chunks, m), RELIABLE)
        n.create_subscription(JointState, TOPICS["joint_states"], lambda m: self._add(self.joint_states, m), SENSOR)
        n.create_subscription(CameraInfo, camera_info_topic("primary"), lambda m: self._add(self.camera_stamps, m),
                              SENSOR)
        n.create_subscription(DiagnosticArray, TOPICS["diagnostics"], lambda m: self._add(self.diagnostics, m),
                              RELIABLE)
        n.create_subscription(String, TOPICS["instruction_accepted"], lambda m: self._add(self.accepted, m), LATCHED)
        g.executor.add_node(n)

    def _add(self, lst, m):
        with self.lock:
            lst.append((time.time(), m))

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not found"
        fut = client.call_async(request)
        assert wait_until(fut.done, timeout), f"{name} did not answer"
        return fut.result()

    def say(self, text: str):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request()
        req.parameters = [Parameter("instruction", value=text).to_parameter_msg()]
        r = self.call(SetParameters, "/instruction_node/set_parameters", req).results[0]
        return r.successful, (r.reason or ("accepted" if r.successful else ""))
