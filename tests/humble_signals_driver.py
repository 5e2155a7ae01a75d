"""Subprocess entry of tests/test_humble_signals.py: the driver node executable (etc_ros.nodes.driver_node.main, i.e.
run_nodes(park=...)) with backend interbotix, in a process where

1. rclpy's signal handling is replaced by an emulation of rclpy on ROS 2 Humble (install_humble_signal_semantics),
   so the test does not depend on what the installed rclpy's handler does, and
2. the Interbotix Python API is tests/interbotix_stub.py plus what matters to parking (install_interbotix):
   upstream's `if not rclpy.ok(): rclpy.init()` before its node is created, a real rclpy node on the default
   context that publishes the arm's group commands and receives xs_sdk's joint states (so a shut-down context
   stops both, as it would on the robot). xs_sdk itself runs in the test process (another process, as on the robot).

Usage: python tests/humble_signals_driver.py --ros-args ...   (the driver's ROS arguments, as `ros2 launch` gives)
"""
from __future__ import annotations

import signal
import sys
import threading
import weakref
from pathlib import Path

import numpy as np

# Topic names of xs_sdk for robot_name wx250s; the messages stand in for interbotix_xs_msgs/JointGroupCommand (not
# installed here) and are sensor_msgs/JointState as upstream.
XS_GROUP_COMMAND = "/wx250s/commands/joint_group"
XS_JOINT_STATES = "/wx250s/joint_states"
XS_ROBOT_INFO = "/wx250s/get_robot_info"  # the service the driver probes for before building the API

# ------------------------------------------------------------------------------------------------------------------
# Humble's signal semantics, reproduced from ros2/rclpy branch humble (3.3.15):
#  * rclpy/rclpy/__init__.py init(): signal_handler_options None -> ALL when the context is the default one, NO
#    otherwise; the handlers are installed after context.init(). shutdown(): handlers are uninstalled when the
#    default context is shut down (uninstall_handlers None).
#  * rclpy/src/rclpy/context.cpp: every Context constructed (Context.init) is pushed into g_contexts and removed by
#    its own shutdown(); shutdown_contexts() calls rcl_shutdown() on EVERY context in g_contexts and clears it.
#  * rclpy/src/rclpy/signal_handler.cpp: install_signal_handlers(NO) installs nothing (it only starts the deferred
#    thread); SIGINT (SIGINT/ALL) and SIGTERM (SIGTERM/ALL) handlers are registered once (g_sigint_installed) and
#    keep the handler they replaced. rclpy_sigint_handler / rclpy_sigterm_handler first chain to that original
#    handler (unless it is SIG_DFL / SIG_IGN / null), then post a semaphore; the deferred thread then runs
#    trigger_guard_conditions() (every SignalHandlerGuardCondition, one per Executor, wakes its wait set) and
#    rclpy::shutdown_contexts(). A later Python signal.signal() replaces the handler (as CPython's sigaction does).
# In a Python process the "original" handler is CPython's, which runs the Python-level handler (e.g.
# default_int_handler -> KeyboardInterrupt) in the main thread at its next check; the deferred thread has shut the
# contexts down by then. Here the emulated handler is a Python-level one: it shuts the contexts down and wakes the
# executors first, then calls the Python handler it replaced, which gives the same order.
# ------------------------------------------------------------------------------------------------------------------
_contexts: list = []  # g_contexts
_guard_conditions: "weakref.WeakSet" = weakref.WeakSet()  # g_guard_conditions (SignalHandlerGuardCondition)
_original: dict[int, object] = {}  # signum -> the handler ours replaced (g_original_sigint/sigterm_handler)
EVENTS: list[str] = []  # what the emulation did, for the test's log


def _say(msg: str) -> None:
    EVENTS.append(msg)
    print(f"[humble-rclpy] {msg}", file=sys.stderr, flush=True)


def _shutdown_contexts() -> None:
    for gc in list(_guard_conditions):
        try:
            gc.trigger()
        except Exception:  # noqa: BLE001 - destroyed meanwhile
            pass
    n = 0
    for ctx in list(_contexts):
        if ctx.ok():
            ctx.handle.shutdown()  # rcl_shutdown only: no Python on_shutdown callbacks, as from the C++ thread
            n += 1
    _contexts.clear()
    _say(f"signal handler shut down {n} context(s)")


def _humble_handler(signum, frame):
    _say(f"rclpy signal handler: {signal.Signals(signum).name}")
    _shutdown_contexts()
    prev = _original.get(signum)
    if callable(prev):  # SIG_DFL / SIG_IGN / None are not called (call_signal_handler)
        prev(signum, frame)


def _register(signum: int) -> None:
    if signum in _original:  # g_sigint_installed / g_sigterm_installed
        return
    _original[signum] = signal.signal(signum, _humble_handler)
    _say(f"installed rclpy's {signal.Signals(signum).name} handler")


def _unregister_all() -> None:
    for signum, prev in list(_original.items()):
        if signal.getsignal(signum) is _humble_handler:  # someone chaining to us: leave it (as upstream)
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        del _original[signum]


def install_humble_signal_semantics() -> None:
    import rclpy
    import rclpy.context
    import rclpy.signals
    from rclpy.signals import SignalHandlerOptions as Opt

    real_ctx_init = rclpy.context.Context.init
    real_ctx_shutdown = rclpy.context.Context.shutdown

    def ctx_init(self, *a, **kw):
        real_ctx_init(self, *a, **kw)
        _contexts.append(self)

    def ctx_shutdown(self, *a, **kw):
        if self in _contexts:
            _contexts.remove(self)
        return real_ctx_shutdown(self, *a, **kw)

    rclpy.context.Context.init = ctx_init
    rclpy.context.Context.shutdown = ctx_shutdown

    real_gc_init = rclpy.signals.SignalHandlerGuardCondition.__init__

    def gc_init(self, *a, **kw):
        real_gc_init(self, *a, **kw)
        _guard_conditions.add(self)

    rclpy.signals.SignalHandlerGuardCondition.__init__ = gc_init

    real_init, real_shutdown = rclpy.init, rclpy.shutdown

    def init(*, args=None, context=None, domain_id=None, signal_handler_options=None):
        ctx = rclpy.get_default_context() if context is None else context
        if signal_handler_options is None:
            signal_handler_options = Opt.ALL if ctx is rclpy.get_default_context() else Opt.NO
        # the installed rclpy installs nothing; the emulation decides
        real_init(args=args, context=context, domain_id=domain_id, signal_handler_options=Opt.NO)
        _say(f"rclpy.init({'default' if ctx is rclpy.get_default_context() else 'own'} context, "
             f"{signal_handler_options.name})")
        if signal_handler_options in (Opt.SIGINT, Opt.ALL):
            _register(signal.SIGINT)
        if signal_handler_options in (Opt.SIGTERM, Opt.ALL):
            _register(signal.SIGTERM)

    def shutdown(*, context=None, uninstall_handlers=None):
        # the real one too: it has installed no handler, but its uninstall also ends its deferred signal thread
        real_shutdown(context=context, uninstall_handlers=uninstall_handlers)
        if uninstall_handlers or (uninstall_handlers is None and
                                  (context is None or context is rclpy.get_default_context())):
            _unregister_all()

    rclpy.init, rclpy.shutdown = init, shutdown


# ------------------------------------------------------------------------------------------------------------------
# The Interbotix API (stub) as far as parking is concerned
# ------------------------------------------------------------------------------------------------------------------
class _Registry:
    """The part of pytest's monkeypatch that install_interbotix_stub uses."""

    @staticmethod
    def setitem(mapping, name, value):
        mapping[name] = value


def install_interbotix():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from interbotix_stub import install_interbotix_stub

    calls: list = []
    inits: list = []
    Bot = install_interbotix_stub(_Registry(), calls, inits)

    class UpstreamBot(Bot):
        """interbotix_common_modules/common_robot/robot.py (Humble) create_interbotix_global_node(): `if not
        rclpy.ok(): rclpy.init()`, then the InterbotixRobotNode on the default context; InterbotixRobotXSCore
        subscribes to xs_sdk's joint states and publishes group commands through it; robot_startup() (start_on_init)
        spins it in a thread. set_joint_positions publishes the JointGroupCommand after its own checks."""

        def __init__(self, *a, **kw):
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
            from rclpy.node import Node
            from rclpy.qos import QoSProfile
            from sensor_msgs.msg import JointState
            from std_msgs.msg import Float64MultiArray

            if not rclpy.ok():
                rclpy.init()
            super().__init__(*a, **kw)
            core, arm = self.core, self.arm
            node = Node("interbotix_robot_manipulation")
            core.robot_node = node
            pub = node.create_publisher(Float64MultiArray, XS_GROUP_COMMAND, QoSProfile(depth=10))

            def on_states(msg):  # upstream: the whole message replaces core.joint_states
                idx = {n: i for i, n in enumerate(msg.name)}
                from etc_ros.core import spec as robot_spec

                q = [msg.position[idx[n]] for n in robot_spec.JOINT_NAMES]
                v = [msg.velocity[idx[n]] for n in robot_spec.JOINT_NAMES]
                core.xs_publish(q, v, msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)

            node.create_subscription(JointState, XS_JOINT_STATES, on_states, QoSProfile(depth=10))
            stub_set = arm.set_joint_positions

            def set_joint_positions(q, moving_time=None, accel_time=None, blocking=True):
                if not stub_set(q, moving_time, accel_time, blocking):
                    return False
                pub.publish(Float64MultiArray(data=[float(x) for x in q]))  # raises on a shut-down context
                return True

            arm.set_joint_positions = set_joint_positions
            self.executor = SingleThreadedExecutor()
            self.executor.add_node(node)

            def spin():
                try:
                    self.executor.spin()
                except Exception:  # noqa: BLE001 - context shut down
                    pass

            threading.Thread(target=spin, daemon=True, name="interbotix_execution_thread").start()

    mod = sys.modules["interbotix_xs_modules.xs_robot.arm"]
    mod.InterbotixManipulatorXS = UpstreamBot
    return calls


def main() -> None:
    install_humble_signal_semantics()
    install_interbotix()
    from etc_ros.nodes import driver_node

    driver_node.main()  # sys.argv: [this script, --ros-args, ...], as the console script reads it


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
