"""Teleop node: operator input -> Bridge EE deltas -> action chunks on the policy's chunk topic, so the safety node
executes a person's commands through exactly the same filter as a policy's (a person can be unsafe too).

Publishes /policy/action_chunk (trajectory_msgs/JointTrajectory, messages.chunk_to_msg: joint_names =
spec.ACTION_NAMES, header.stamp = the time the input was read, chunk_length rows of the same action,
time_from_start = i / policy_hz) at teleop.rate_hz once joint states arrive (the gripper target starts at the
measured opening). Inputs (parameter `input`): keyboard (keys fed by `etc-vla teleop run` through feed_key),
joy (sensor_msgs/Joy on `joy_topic`, e.g. from the ROS joy package), spacemouse (pyspacemouse, optional),
script (a scripted event file, `script`), none. Shortcuts become calls of the recorder node's Trigger services
(~/start, ~/stop, ~/stop_failed, ~/discard, ~/capture), its `instruction` parameter (relabel, via SetParameters;
std_msgs/String on /recorder/instruction when the recorder does not answer) and the safety node's ~/estop /
~/reset_estop. Run the graph WITHOUT a policy node (or with no instruction accepted),
otherwise two sources publish chunks.

    start_teleop_session(...)   in-process: robot graph (sim / fake / interbotix, no policy node) + teleop
                                (+ recorder) nodes on one executor, used by `etc-vla teleop run` and the tests
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from etc_ros.nodes import messages
from etc_ros.nodes.common import RELIABLE, SENSOR, GraphNode, isolate_ros_env, run_nodes
from etc_ros.nodes.graph import TOPICS
from etc_ros.nodes.recorder_node import RECORDER_SERVICES, RECORDER_TOPICS, RecorderNode
from etc_ros.teleop.devices import SpaceMouseSource
from etc_ros.teleop.mapping import (
    GRIPPER_COMMANDS,
    RECORDER_COMMANDS,
    SPEED_COMMANDS,
    TeleopConfig,
    TeleopError,
    TeleopMapper,
)
from etc_ros.teleop.script import ScriptPlayer, apply_event, load_script

if TYPE_CHECKING:
    from rclpy.client import Client
    from rclpy.task import Future

INPUTS = ("none", "keyboard", "joy", "spacemouse", "script")
TELEOP_PARAMS: dict[str, Any] = {
    "config": "",  # teleop.yaml ('' = the package's config/teleop.yaml); its `teleop` section
    "input": "none",  # none | keyboard | joy | spacemouse | script
    "script": "",  # scripted input file (input: script)
    "joy_topic": "/joy",
    "recorder_node": "/recorder_node",  # its Trigger services get the recording shortcuts
    "safety_node": "/safety_node",  # ~/estop, ~/reset_estop
    "policy_hz": 5.0,  # chunk spacing; must equal the safety node's policy_hz
    "publish_idle": True,  # keep publishing zero-motion chunks (the arm holds actively) when no input moves
    "script_wait_s": 15.0,  # a script starts once joint states arrive and the recorder answers (or after this)
    "diagnostics_hz": 1.0,
}


class TeleopNode(GraphNode):
    own_params = TELEOP_PARAMS
    publishes_diagnostics = False  # its events go to the log and to on_event (the `etc-vla teleop run` terminal)

    def __init__(self, params: dict[str, Any] | None = None, name: str = "teleop_node",
                 teleop_config: TeleopConfig | None = None, script: Any = None,
                 on_event: Callable[[str, bool, str], None] | None = None, spacemouse: Any = None, **kwargs: Any):
        super().__init__(name, params, **kwargs)
        p = self.p
        if teleop_config is None:
            from etc_ros.teleop.config import load_teleop_file

            teleop_config, _, _ = load_teleop_file(p("config") or None)
        self.input = str(p("input")).strip().lower()
        if self.input not in INPUTS:
            raise TeleopError(f"teleop input {self.input!r} is not one of {list(INPUTS)}")
        self.mapper = TeleopMapper(teleop_config)
        self.cfg = self.mapper.cfg
        self.policy_hz = float(p("policy_hz"))
        if abs(self.cfg.rate_hz - self.policy_hz) > 1e-6:
            raise TeleopError(f"teleop.rate_hz ({self.cfg.rate_hz:g}) must equal the safety node's policy_hz "
                              f"({self.policy_hz:g}): each action is one policy step")
        self.publish_idle = bool(p("publish_idle"))
        self.on_event = on_event
        self.events: deque[tuple[float, str, bool, str]] = deque(maxlen=200)  # (time, command, ok, message)
        self._lock = threading.Lock()
        self._have_joints = False
        self.chunks_published = 0
        self.quit_requested = False
        self.enabled = True  # False: no more chunks (the session is shutting down)
        self.player: ScriptPlayer | None = None
        if self.input == "script":
            src = script if script is not None else (p("script") or None)
            if src is None:
                raise TeleopError("teleop input 'script' needs a script (parameter `script` or --script FILE)")
            self.player = ScriptPlayer(load_script(src))
        self.spacemouse: SpaceMouseSource | None = None
        group = MutuallyExclusiveCallbackGroup()
        self.pub_chunk = self.create_publisher(JointTrajectory, TOPICS["action_chunk"], RELIABLE)
        self.pub_instruction = self.create_publisher(String, RECORDER_TOPICS["instruction"], RELIABLE)
        self.create_subscription(JointState, TOPICS["joint_states"], self._on_joints, SENSOR, callback_group=group)
        if self.input == "joy":
            self.create_subscription(Joy, str(p("joy_topic")), self._on_joy, SENSOR, callback_group=group)
        rec = str(p("recorder_node")).rstrip("/")
        saf = str(p("safety_node")).rstrip("/")
        self._triggers: dict[str, Client[Any, Any]] = {
            s: self.create_client(Trigger, f"{rec}/{s}", callback_group=group) for s in RECORDER_SERVICES}
        self._triggers.update({s: self.create_client(Trigger, f"{saf}/{s}", callback_group=group)
                              for s in ("estop", "reset_estop")})
        # relabel = the recorder's `instruction` parameter (a verdict comes back); recorder commands sent while a
        # relabel is in flight wait for it, so "relabel then start" always records the new instruction
        self._set_params: Client[Any, Any] = self.create_client(SetParameters, f"{rec}/set_parameters",
                                                                 callback_group=group)
        self._relabel_future: Future[Any] | None = None
        if self.input == "spacemouse":
            self.spacemouse = spacemouse or SpaceMouseSource()
            self._sm_stop = threading.Event()
            self._sm_thread = threading.Thread(target=self._spacemouse_loop, args=(self.spacemouse,),
                                               name="spacemouse", daemon=True)
            self._sm_thread.start()
        self._created = self.now_s()
        self.script_wait_s = float(p("script_wait_s"))
        self.timer = self.create_timer(1.0 / self.cfg.rate_hz, self._tick, callback_group=group)

    def _log(self, ok: bool, msg: str) -> None:
        if ok:
            self.get_logger().info(msg)
        else:
            self.get_logger().warning(msg)

    # ---- inputs
    def _on_joints(self, msg: JointState) -> None:
        parsed = messages.parse_joint_state(msg)
        if parsed is None:
            return
        with self._lock:
            self.mapper.seed_gripper(parsed[1])
            self._have_joints = True

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            cmds = self.mapper.joy(list(msg.axes), list(msg.buttons), self.now_s())
        self._dispatch([(c, "") for c in cmds])

    def _spacemouse_loop(self, device: SpaceMouseSource) -> None:
        while not self._sm_stop.is_set():
            try:
                axes, buttons = device.read()
            except Exception as e:  # noqa: BLE001 - device unplugged: axes go stale and the arm stops
                self.get_logger().error(f"SpaceMouse read failed: {e}", throttle_duration_sec=2.0)
                self._sm_stop.wait(0.5)
                continue
            with self._lock:
                cmds = self.mapper.spacemouse([float(a) for a in axes], buttons, self.now_s())
            self._dispatch([(c, "") for c in cmds])
            self._sm_stop.wait(0.01)

    def feed_key(self, key: str) -> list[str]:
        """A key from the terminal (etc-vla teleop run). Returns the commands it triggered."""
        with self._lock:
            cmds = self.mapper.key_press(key, self.now_s())
        self._dispatch([(c, "") for c in cmds if c != "relabel"])
        return cmds

    def relabel(self, text: str) -> None:
        self._dispatch([("relabel", text)])

    # ---- commands
    def _note(self, cmd: str, ok: bool, msg: str) -> None:
        self.events.append((time.time(), cmd, ok, msg))
        self._log(ok, f"{cmd}: {msg}")
        if self.on_event is not None:
            try:
                self.on_event(cmd, ok, msg)
            except Exception:  # noqa: BLE001
                pass

    def _dispatch(self, cmds: list[tuple[str, str]]) -> None:
        for cmd, text in cmds:
            if cmd in GRIPPER_COMMANDS:
                self._note(cmd, True, f"gripper target {self.mapper.gripper:.0f}")
            elif cmd in SPEED_COMMANDS:
                self._note(cmd, True, f"speed level {self.mapper.speed:g}")
            elif cmd == "relabel":
                if text:
                    self._relabel(text)
            elif cmd in RECORDER_COMMANDS or cmd in ("estop", "reset_estop"):
                if cmd == "estop":
                    with self._lock:
                        self.mapper.stop_motion()
                self._call(cmd)
            elif cmd == "quit":
                self.quit_requested = True
                self._note(cmd, True, "quit requested")
            elif cmd == "help":
                from etc_ros.teleop.mapping import help_text

                self._note(cmd, True, "\n" + help_text(self.cfg))

    def _relabel(self, text: str) -> None:
        if not self._set_params.service_is_ready():  # no recorder answering: fire and forget on the topic
            self.pub_instruction.publish(String(data=text))
            self._note("relabel", True, f"sent {text!r} to the recorder ({RECORDER_TOPICS['instruction']})")
            return
        req = SetParameters.Request()
        req.parameters = [Parameter("instruction", value=str(text)).to_parameter_msg()]
        fut = self._set_params.call_async(req)
        self._relabel_future = fut

        def done(f: Future[Any]) -> None:
            r = f.result()
            if r is None or not r.results:
                self._note("relabel", False, "the recorder did not answer")
            elif r.results[0].successful:
                self._note("relabel", True, f"instruction set to {text!r}")
            else:
                self._note("relabel", False, r.results[0].reason)

        fut.add_done_callback(done)

    def _call(self, cmd: str) -> None:
        pending = self._relabel_future
        if cmd in RECORDER_SERVICES and pending is not None and not pending.done():
            def after_relabel(_: Future[Any]) -> None:  # keep the operator's order
                self._call(cmd)

            pending.add_done_callback(after_relabel)
            return
        client = self._triggers[cmd]
        if not client.service_is_ready():
            self._note(cmd, False, f"service {client.srv_name} is not available (is the "
                                   f"{'recorder' if cmd in RECORDER_SERVICES else 'safety'} node running?)")
            return
        fut = client.call_async(Trigger.Request())

        def done(f: Future[Any], c: str = cmd) -> None:
            r = f.result()
            if r is None:
                self._note(c, False, "no answer")
            else:
                self._note(c, bool(r.success), r.message)

        fut.add_done_callback(done)

    # ---- output
    def _tick(self) -> None:
        now = self.now_s()
        todo: list[tuple[str, str]] = []
        with self._lock:
            if self.player is not None and self.player.t0 is None and self._have_joints and (
                    self._triggers["start"].service_is_ready() or now - self._created > self.script_wait_s):
                self.player.start(now)
                self._note("script", True, f"{len(self.player.events)} scripted events over "
                                           f"{self.player.duration:.1f} s")
            if self.player is not None and self.player.t0 is not None:
                for ev in self.player.due(now):
                    todo += apply_event(self.mapper, ev, now)
        if todo:
            self._dispatch(todo)
        with self._lock:
            if not self._have_joints or not self.enabled:
                return
            if not self.publish_idle and not self.mapper.active:
                return
            chunk = self.mapper.chunk(now)
        self.pub_chunk.publish(messages.chunk_to_msg(chunk, now, self.policy_hz))
        self.chunks_published += 1

    @property
    def script_done(self) -> bool:
        return self.player is not None and self.player.done

    def destroy_node(self) -> None:
        device = getattr(self, "spacemouse", None)  # absent when the constructor failed early
        if device is not None:
            self._sm_stop.set()
            device.close()
        super().destroy_node()


# --------------------------------------------------------------------------------------------- session
class TeleopSession:
    """Robot graph (no policy node) + teleop node (+ recorder node) on one executor in this process.

    robot.bringup: sim | fake | interbotix start the robot graph here (etc_ros.nodes.bringup, same parameter
    files as the launch file, the policy node left out); none attaches to a graph already running (same
    ROS_DOMAIN_ID), e.g. the robot PC's launch file."""

    def __init__(self, robot: Any, teleop_cfg: TeleopConfig, recorder_cfg: Any = None, *, input: str = "none",
                 script: Any = None, camera_models: dict | None = None, recorder: bool = True,
                 on_event: Callable[[str, bool, str], None] | None = None, random_domain: bool = False,
                 teleop_params: dict | None = None):
        self.graph = None
        self.nodes: dict[str, Node] = {}
        self._thread: threading.Thread | None = None
        if robot.bringup != "none":
            from etc_ros.nodes.bringup import Graph
            from etc_ros.nodes.graph import BringupConfig

            class _NoPolicyGraph(Graph):
                def _create(self, executable: str) -> None:
                    if executable == "policy_node":
                        return  # teleop publishes the chunks
                    super()._create(executable)

            params = {k: dict(v) for k, v in (robot.params or {}).items()}
            if robot.bringup == "sim":
                # the sim defaults of config/ros_bringup.yaml (camera rate, sim safety limits), ours on top
                for node, vals in _sim_bringup_params().items():
                    params[node] = {**vals, **params.get(node, {})}
                params.setdefault("sim_world", {}).setdefault("announce_instruction", False)
                params.setdefault("camera_node", {}).setdefault("fps", 10.0)
                cfg = BringupConfig(use_sim=True, policy_bundle="fake:hold", camera_type="sim", params=params,
                                    domain_id=robot.domain_id, threads=robot.threads)
            elif robot.bringup == "fake":
                cfg = BringupConfig(use_sim=False, driver_backend="fake", camera_type="fake",
                                    policy_bundle="fake:hold", params=params, domain_id=robot.domain_id,
                                    threads=robot.threads)
            else:
                cfg = BringupConfig(use_sim=False, driver_backend="interbotix", camera_type=robot.camera_type,
                                    policy_bundle="fake:hold", params=params, domain_id=robot.domain_id,
                                    threads=robot.threads)
            self.graph = _NoPolicyGraph(cfg, random_domain=random_domain)
            self.context, self.executor = self.graph.context, self.graph.executor
            self.domain_id = self.graph.domain_id
        else:
            self.domain_id = isolate_ros_env(None if robot.domain_id < 0 else robot.domain_id, random_domain)
            self.context = Context()
            rclpy.init(args=[], context=self.context)
            self.executor = MultiThreadedExecutor(num_threads=max(2, int(robot.threads)), context=self.context)
        try:
            if recorder:
                if camera_models is None and self.graph is not None and "sim_world" in self.graph.nodes:
                    camera_models = _sim_camera_models(self.graph.nodes["sim_world"], recorder_cfg)
                rec = RecorderNode(config=recorder_cfg, camera_models=camera_models, context=self.context,
                                   metadata={"teleop": {"input": input, "robot": robot.bringup}})
                self._add("recorder_node", rec)
            tp = {"input": input, **(teleop_params or {})}
            if self.graph is not None and "safety_node" in self.graph.nodes:
                tp.setdefault("policy_hz", float(self.graph.nodes["safety_node"].policy_hz))
            tel = TeleopNode(tp, teleop_config=teleop_cfg, script=script, on_event=on_event, context=self.context)
            self._add("teleop_node", tel)
        except BaseException:
            self.stop(park=False)
            raise
        if self.graph is None:
            self._thread = threading.Thread(target=self._spin, name="teleop-executor", daemon=True)
            self._thread.start()

    def _add(self, name: str, node: Node) -> None:
        self.nodes[name] = node
        if self.graph is not None:
            self.graph._add(name, node)
        else:
            self.executor.add_node(node)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us
            pass

    @property
    def teleop(self) -> TeleopNode:
        node = self.nodes["teleop_node"]
        assert isinstance(node, TeleopNode)
        return node

    @property
    def recorder(self) -> RecorderNode | None:
        node = self.nodes.get("recorder_node")
        assert node is None or isinstance(node, RecorderNode)
        return node

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Robot graph ready (driver at its start pose, safety anchored) and joint states reach teleop."""
        from etc_ros.nodes.bringup import wait_until

        if self.graph is not None and not self.graph.wait_ready(timeout):
            return False
        return wait_until(lambda: self.teleop._have_joints, timeout)

    def stop(self, park: bool = False) -> None:
        """Teleop stops publishing (the safety node holds), then everything shuts down; the graph destroys our
        nodes (added last: destroyed first; the recorder keeps an episode in progress, outcome unknown)."""
        tel = self.nodes.get("teleop_node")
        if isinstance(tel, TeleopNode):
            tel.enabled = False
        if self.graph is not None:
            self.nodes.clear()
            self.graph.stop(park=park)
            return
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception:  # noqa: BLE001
            pass
        for n in list(self.nodes.values())[::-1]:
            try:
                n.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        self.nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> "TeleopSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(park=False)


def _sim_bringup_params() -> dict[str, dict[str, Any]]:
    """Per-node parameters of config/ros_bringup.yaml (the package's simulated bringup), {} if absent."""
    from etc_ros.core.paths import config_path
    from etc_ros.nodes.bringup import load_bringup_config

    f = config_path("ros_bringup.yaml")
    if not f.is_file():
        return {}
    return {k: dict(v) for k, v in (load_bringup_config(f).params or {}).items()}


def _sim_camera_models(world: Any, recorder_cfg: Any) -> dict | None:
    """Ground-truth calibration of the simulated cameras (the sim needs no calibration step)."""
    cams = list(getattr(recorder_cfg, "cameras", None) or ["primary"])
    out = {}
    for c in cams:
        try:
            with world.lock:
                m = world.env.camera_model(c)
        except Exception:  # noqa: BLE001 - camera not in the world
            continue
        m.name = c
        out[c] = m
    return out or None


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [TeleopNode()], args, threads=2)


if __name__ == "__main__":
    main()

