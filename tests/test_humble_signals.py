"""Parking on Ctrl-C under ROS 2 Humble's signal semantics (issue 14, item 3).

On Humble, a plain rclpy.init() of the default context installs rclpy's SIGINT / SIGTERM handlers, and those shut
down EVERY initialised context of the process (rclpy/src/rclpy/signal_handler.cpp -> context.cpp
shutdown_contexts()). Interbotix's API calls `if not rclpy.ok(): rclpy.init()`. If that init installed the handlers,
Ctrl-C would kill the contexts under the park move: the group commands would no longer reach xs_sdk and the arm
would stay where it was.

tests/humble_signals_driver.py runs the driver node executable (driver_node.main -> run_nodes(park=...)) with
backend interbotix in a subprocess. In that process rclpy's signal handling is replaced by an emulation of Humble's
(the source lines it reproduces are listed there), and the Interbotix stub does upstream's init and publishes
through a real node on the default context. xs_sdk runs here, in the test process: it follows the group commands
it receives and publishes the joint states. So "parked" means that the arm xs_sdk drives really reached the sleep
pose.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ros_graph_helpers import wait_until  # noqa: I100 (sets ROS_DOMAIN_ID for this process)

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = Path(__file__).resolve().parent / "humble_signals_driver.py"

pytestmark = pytest.mark.realtime  # wall-clock moves and signal timing


def _env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def test_humble_emulation_shuts_down_every_context_on_sigint():
    """The emulation itself: a plain init of the default context installs a handler that shuts down every context
    (also one initialised without handlers) and still raises KeyboardInterrupt through the Python handler it
    chained to; SignalHandlerOptions.NO installs nothing."""
    code = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as started from a terminal (a background job ignores it)
sys.path.insert(0, sys.argv[1])
from humble_signals_driver import install_humble_signal_semantics
install_humble_signal_semantics()
import rclpy
from rclpy.context import Context
from rclpy.signals import SignalHandlerOptions
own, quiet = Context(), Context()
rclpy.init(context=own)  # another context: NO by default, as on Humble
rclpy.init(context=quiet, signal_handler_options=SignalHandlerOptions.NO)
print("after NO", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
rclpy.init()  # what Interbotix does when the default context is not up: ALL
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2.0)
    print("no KeyboardInterrupt")
except KeyboardInterrupt:
    print("KeyboardInterrupt", rclpy.ok(), own.ok(), quiet.ok())
"""
    r = subprocess.run([sys.executable, "-c", code, str(WRAPPER.parent)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split("\n")
    assert "KeyboardInterrupt False False False" in lines, r.stdout + r.stderr
    assert "after NO True" in lines, r.stdout + r.stderr
    assert "signal handler shut down 3 context(s)" in r.stderr


class XsSdk:
    """xs_sdk for robot_name wx250s, in this process: the get_robot_info service (what the driver probes for), group
    commands followed with a first-order servo lag, joint states at 100 Hz stamped with this node's clock."""

    def __init__(self, tau: float = 0.05, hz: float = 100.0):
        import rclpy
        from humble_signals_driver import XS_GROUP_COMMAND, XS_JOINT_STATES, XS_ROBOT_INFO
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from std_srvs.srv import Trigger

        from etc_ros.core import spec as robot_spec
        from etc_ros.nodes import messages
        from etc_ros.nodes.common import LATCHED, SENSOR

        self.robot_spec = robot_spec
        self.q = np.array(robot_spec.SLEEP_POSE, dtype=float)
        self.goal = self.q.copy()
        self.commands: list[tuple[float, np.ndarray]] = []  # (monotonic time, goal) received
        self.driver_states: list[tuple[float, np.ndarray]] = []  # /joint_states from the driver
        self.ready: list[bool] = []
        self._lock = threading.Lock()
        self.ctx = Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = n = Node("xs_sdk_and_observer", context=self.ctx)
        self._JointState = JointState
        n.create_service(Trigger, XS_ROBOT_INFO, lambda req, res: res)
        n.create_subscription(Float64MultiArray, XS_GROUP_COMMAND, self._on_group, QoSProfile(depth=10))
        self.pub = n.create_publisher(JointState, XS_JOINT_STATES, QoSProfile(depth=10))
        n.create_subscription(JointState, "/joint_states",
                              lambda m: self.driver_states.append((time.monotonic(), messages.parse_joint_state(m)[0])),
                              SENSOR)
        n.create_subscription(Bool, "/driver/ready", lambda m: self.ready.append(bool(m.data)), LATCHED)
        self.tau, self.dt = tau, 1.0 / hz
        n.create_timer(self.dt, self._tick)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            self.ex.spin()
        except Exception:  # noqa: BLE001 - shut down at the end
            pass

    def _on_group(self, msg):
        with self._lock:
            self.goal = np.array(msg.data, dtype=float)
            self.commands.append((time.monotonic(), self.goal.copy()))

    def _tick(self):
        with self._lock:
            q0 = self.q
            self.q = self.q + (self.goal - self.q) * (1.0 - math.exp(-self.dt / self.tau))
            q, v = self.q.copy(), (self.q - q0) / self.dt
        m = self._JointState()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.name = list(self.robot_spec.JOINT_NAMES)
        m.position = [float(x) for x in q]
        m.velocity = [float(x) for x in v]
        m.effort = [0.0] * len(q)
        self.pub.publish(m)

    def pose(self) -> np.ndarray:
        with self._lock:
            return self.q.copy()

    def close(self):
        import rclpy

        self.ex.shutdown()
        self.thread.join(5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def test_ctrl_c_parks_the_arm_under_humble_signal_semantics(tmp_path):
    """Ctrl-C on the driver executable (interbotix backend): the park completes on living contexts, the arm that
    xs_sdk drives reaches the sleep pose, a second Ctrl-C during the park does not abort it, and the process exits
    0."""
    from etc_ros.nodes.bringup import process_commands

    (exe, argv), = [(e, c) for e, c in process_commands(
        {"driver_backend": "interbotix", "camera_type": "fake", "policy_bundle": "fake:circle"},
        {"driver_node": {"speed_fraction": 0.5}}) if e == "driver_node"]
    assert argv[1:3] == ["-m", "etc_ros.nodes.driver_node"]
    argv = [argv[0], str(WRAPPER), *argv[3:]]  # the same main(), with the Humble emulation and the stub installed
    xs = XsSdk()
    robot_spec = xs.robot_spec
    log_path = tmp_path / "driver_node.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)

    def text() -> str:
        return log_path.read_text()

    try:
        ok = wait_until(lambda: xs.ready and xs.ready[-1] and np.allclose(xs.pose(), robot_spec.READY_POSE, atol=0.01),
                        30.0)
        assert ok, f"driver not ready at the ready pose (xs_sdk at {xs.pose()}):\n{text()[-3000:]}"
        assert np.max(np.abs(xs.pose() - robot_spec.SLEEP_POSE)) > 0.5  # the park has somewhere to go
        n_cmd = len(xs.commands)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert wait_until(lambda: "parking: moving to the sleep pose" in text(), 10.0), text()[-3000:]
        time.sleep(0.3)
        assert proc.poll() is None, f"the driver exited during the park:\n{text()[-3000:]}"
        proc.send_signal(signal.SIGINT)  # impatient second Ctrl-C, half-way
        rc = proc.wait(timeout=30)
        out = text()
        assert rc == 0, out[-3000:]
        assert "still parking the arm" in out, out[-3000:]
        assert "could not park" not in out and "signal handler shut down" not in out, out[-3000:]
        assert "parked" in out.split("parking: moving", 1)[1], out[-3000:]
        # the commands of the park reached xs_sdk, and the arm it drives is at the sleep pose
        assert len(xs.commands) > n_cmd + 10
        assert np.allclose(xs.commands[-1][1], robot_spec.SLEEP_POSE, atol=1e-3), xs.commands[-1][1]
        assert wait_until(lambda: np.allclose(xs.pose(), robot_spec.SLEEP_POSE, atol=0.01), 2.0), xs.pose()
        # and the driver published it on /joint_states until the end
        assert np.allclose(xs.driver_states[-1][1], robot_spec.SLEEP_POSE, atol=0.02), xs.driver_states[-1][1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        xs.close()
