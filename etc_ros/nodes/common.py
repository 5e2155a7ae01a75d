"""Shared bits of the node adapters: the GraphNode base (parameter declaration, clock, diagnostics), QoS profiles,
the ROS environment of in-process graphs and run_nodes, the main() of every node executable."""
from __future__ import annotations

import os
import random
from typing import Any, ClassVar, Mapping

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from etc_ros.nodes import messages
from etc_ros.nodes.graph import NODE_PARAMS, TOPICS, check_renamed

LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
SENSOR = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)
RELIABLE = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
JOINT_STATES_QOS = RELIABLE  # /joint_states publisher: readable by default (reliable) and best-effort subscribers


def overrides_list(params: dict[str, Any] | None) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in (params or {}).items()]


def isolate_ros_env(domain_id: int | None = None, random_domain: bool = False) -> int:
    """Before rclpy.init() of an in-process graph or a CLI tool: localhost-only discovery (unless configured) and
    the DDS domain: `domain_id` if given, else ROS_DOMAIN_ID from the environment, else a random one
    (random_domain: tests, benchmarks, demo episodes, so runs on one machine do not cross-talk) or 0."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Jazzy and later
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
    if domain_id is not None and domain_id >= 0:
        os.environ["ROS_DOMAIN_ID"] = str(int(domain_id))
    elif "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 200) if random_domain else 0)
    return int(os.environ["ROS_DOMAIN_ID"])


class GraphNode(Node):
    """The base of every node: declares its parameters, gives their values (`p`) and the node's clock in seconds
    (`now_s`), and publishes its diagnostics.

    The robot graph's nodes declare exactly NODE_PARAMS[param_set] (graph.PARAMS, with their config/ros_*.yaml
    files); a node outside that graph (teleop, recorder: started by `etc-vla teleop` or by hand) names its own
    declarations in `own_params`. `publishes_diagnostics` = False: no /diagnostics publisher."""

    param_set = ""
    own_params: ClassVar[Mapping[str, Any] | None] = None
    publishes_diagnostics: ClassVar[bool] = True

    def __init__(self, node_name: str, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(node_name, parameter_overrides=overrides_list(params), **kwargs)
        decl = NODE_PARAMS[self.param_set or node_name] if self.own_params is None else self.own_params
        try:  # overrides from the constructor, --ros-args -p and the --params-file sections of this node
            check_renamed(self.param_set or node_name, set(getattr(self, "_parameter_overrides", {})))
        except Exception:
            self.destroy_node()
            raise
        for name, default in decl.items():
            self.declare_parameter(name, default)
        self._diag_pub = (self.create_publisher(DiagnosticArray, TOPICS["diagnostics"], RELIABLE)
                          if self.publishes_diagnostics else None)

    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def publish_diagnostics(self, level: str, message: str, values: dict, name: str | None = None) -> None:
        """One DiagnosticStatus (named etc_ros/<node> unless `name`) on /diagnostics; nothing without a publisher."""
        if self._diag_pub is None:
            return
        st = messages.diagnostic_status(name or f"etc_ros/{self.get_name()}", level, message, values)
        self._diag_pub.publish(messages.diagnostic_array(self.now_s(), [st]))


GIL_SWITCH_INTERVAL_S = 0.001  # Python's default is 5 ms


def shorten_gil_switch_interval() -> None:
    """A thread that holds the GIL (pure-Python inference, image conversion) keeps a timer thread waiting up to the
    switch interval at every switch. Measured with all nodes in one process and a policy burning 50 ms of Python
    per step (etc-vla bench ros, 2 cores): safety-tick period p99 39-42 ms at 5 ms, 26-27 ms at 1 ms."""
    import sys

    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


EXECUTOR_COST_NOTE = """rclpy's MultiThreadedExecutor costs several times the CPU of a SingleThreadedExecutor: with one
process per node (fake arm and camera, no policy) the safety process used 55 % of a core on it, 19 % on a
SingleThreadedExecutor, and the 50 Hz tick period p99 went from 42-66 ms to 23 ms on 2 cores (etc-vla bench ros)."""


def run_nodes(make_nodes, args: list[str] | None = None, threads: int = 0, park=None) -> None:
    """main() of a node executable: init, build the nodes, spin until Ctrl-C / SIGTERM / external shutdown, then
    clean up. threads = 0 (default): each node on its own SingleThreadedExecutor (the last one in the main thread,
    the others in threads; see EXECUTOR_COST_NOTE); threads >= 1: all on one MultiThreadedExecutor with that many
    threads. With `park(nodes)` (driver executables) rclpy's signal handlers are not installed, so the context
    survives the signal and the arm can still be moved to its stop pose."""
    import signal
    import threading

    import rclpy
    from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor

    shutdown_exc: type[BaseException] = RuntimeError
    try:
        from rclpy.executors import ExternalShutdownException

        shutdown_exc = ExternalShutdownException
    except ImportError:  # pragma: no cover - very old rclpy
        pass
    if park is not None:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)

        def _stop(signum, frame):  # noqa: ARG001
            raise KeyboardInterrupt

        # explicit handlers: a background job inherits SIGINT ignored, and ros2 launch escalates to SIGTERM
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    else:
        rclpy.init(args=args)
    nodes = []
    executors: list[Executor] = []
    shorten_gil_switch_interval()

    def _spin_quietly(ex) -> None:
        try:
            ex.spin()
        except shutdown_exc:
            pass
        except Exception:  # noqa: BLE001 - the context went down under the wait set (see below)
            if rclpy.ok():
                raise

    try:
        nodes = list(make_nodes())
        if threads >= 1:
            executors = [MultiThreadedExecutor(num_threads=threads)]
            for n in nodes:
                executors[0].add_node(n)
        else:
            executors = [SingleThreadedExecutor() for _ in nodes]
            for ex, n in zip(executors, nodes):
                ex.add_node(n)
            for ex in executors[:-1]:
                threading.Thread(target=_spin_quietly, args=(ex,), daemon=True).start()
        executors[-1].spin()
    except (KeyboardInterrupt, shutdown_exc):
        pass
    except Exception:  # noqa: BLE001
        # rclpy's own SIGINT handler shut the context down under the executor; when the process started with SIGINT
        # ignored (a background job), no KeyboardInterrupt comes first and the wait set fails on the dead context
        if rclpy.ok():
            raise
    finally:
        if park is not None and nodes:
            try:
                park(nodes)
            except Exception as e:  # noqa: BLE001 - report, then still clean up
                nodes[0].get_logger().error(f"could not park the arm: {e}")
        stop_producers(nodes)
        for ex in executors:
            ex.shutdown()
        for n in nodes[::-1]:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        join_spinning_threads()


def join_spinning_threads(timeout: float = 2.0) -> None:
    """After rclpy.shutdown(): give the daemon threads still spinning on the dead context (run_nodes' own, and
    libraries' like Interbotix's robot_startup thread, which only ends when the context is down) time to leave
    rclpy. A thread still inside rclpy when the interpreter exits aborts the process ('terminate called without an
    active exception', exit code -6) after an otherwise clean park."""
    import threading
    import time

    t_end = time.monotonic() + timeout
    for t in threading.enumerate():
        if t.daemon and t is not threading.current_thread():
            t.join(max(0.0, t_end - time.monotonic()))


def init_default_context_without_signal_handlers() -> None:
    """Initialise rclpy's default context without its signal handlers (Humble's would shut every context down on
    SIGINT, under a park move), unless it is up already. Interbotix's API then skips its own rclpy.init()."""
    import rclpy

    if rclpy.ok():
        return
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # pragma: no cover - pre-Humble rclpy
        rclpy.init()


def stop_producers(nodes) -> None:
    """Stop the threads that publish outside the executor (camera capture, policy inference) before the nodes are
    destroyed: a publish racing destroy_node raises 'cannot use Destroyable', and the process exits with 1."""
    for n in nodes:
        for stop in (getattr(n, "stop", None), getattr(getattr(n, "worker", None), "stop", None)):
            if callable(stop):
                try:
                    stop()
                except Exception:  # noqa: BLE001 - stopping is best effort; destruction follows anyway
                    pass
