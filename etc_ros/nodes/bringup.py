"""In-process bringup: the nodes of launch/widowx.launch.py, with the same parameter files, in ONE process on a
MultiThreadedExecutor (`etc-vla ros bringup --config FILE`), plus closed-loop simulated episodes for the demo.

    with start_graph(BringupConfig(use_sim=False, driver_backend="fake", camera_type="fake")) as g:
        g.say("pick up the red block")
        ...
    res = run_closed_loop_episodes("config/ros_bringup.yaml", runtime_or_bundle, episodes=3)
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor

from etc_ros.core.config import load_config
from etc_ros.core.errors import UserError
from etc_ros.nodes.camera_node import CameraNode
from etc_ros.nodes.common import isolate_ros_env, shorten_gil_switch_interval, stop_producers
from etc_ros.nodes.driver_node import DriverNode
from etc_ros.nodes.graph import BringupConfig, node_parameters, plan_graph
from etc_ros.nodes.instruction_node import InstructionNode
from etc_ros.nodes.policy_node import PolicyNode
from etc_ros.nodes.safety_node import SafetyNode
from etc_ros.policy.worker import load_runtime, percentile

if TYPE_CHECKING:
    from etc_ros.camera.sources import CameraSource
    from etc_ros.policy.interface import Policy
    from etc_ros.robot.base import DriverBackend
    from etc_ros.safety import SafetyExecutor


class BringupError(UserError):
    pass


def load_bringup_config(config: BringupConfig | str | Path | dict | None = None,
                        overrides: Sequence[str] = ()) -> BringupConfig:
    """BringupConfig from an object, a dict or a YAML file (None = defaults), then key=value overrides."""
    from etc_ros.core.config import apply_overrides, from_dict, merge_dicts, to_dict

    if isinstance(config, BringupConfig):
        data = to_dict(config)
    elif isinstance(config, dict):
        data = merge_dicts(to_dict(BringupConfig()), config)
    else:
        return load_config(BringupConfig, config, overrides)
    return from_dict(BringupConfig, apply_overrides(data, overrides))


def wait_until(pred: Callable[[], bool], timeout: float, period: float = 0.01) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(period)
    return bool(pred())


EXECUTOR_MODES = ("per_node", "shared")


class Graph:
    """The running node graph: one rclpy context; each node spins on its own executor and thread (executor:
    per_node, the default), or all on one MultiThreadedExecutor (executor: shared). Measured on 2 cores (etc-vla
    bench ros): the shared executor rebuilds one wait set of every node's entities on each of ~400 events/s and
    pins a core in Python, so the 50 Hz safety tick got p99 45-190 ms; per node, each wait set is small and the
    safety timer wakes its own thread."""

    def __init__(self, cfg: BringupConfig, *, runtime: Policy | None = None, env: Any = None,
                 safety_executor: SafetyExecutor | None = None, camera_source: CameraSource | None = None,
                 driver_backend: DriverBackend | None = None, random_domain: bool = False):
        self.cfg = cfg
        # objects used instead of building them from the parameters (None: the node builds its own)
        self.injected: dict[str, Any] = dict(runtime=runtime, env=env, safety_executor=safety_executor,
                                             camera_source=camera_source, driver_backend=driver_backend)
        self.domain_id = isolate_ros_env(None if cfg.domain_id < 0 else cfg.domain_id, random_domain)
        if cfg.xs_sdk:
            raise BringupError("xs_sdk: true needs `ros2 launch etc_ros widowx.launch.py xs_sdk:=true` (the in-process "
                               "bringup cannot include Interbotix's launch file); or start xsarm_control first")
        self.plans = plan_graph(cfg.launch_args())
        self.params: dict[str, dict[str, Any]] = {}
        for plan in self.plans:
            for node in plan.nodes:
                extra = {**plan.overrides.get(node, {}), **(cfg.params or {}).get(node, {})}
                self.params[node] = node_parameters(node, plan.param_files, extra)
        unknown = sorted(set(cfg.params or {}) - set(self.params))
        if unknown:
            raise BringupError(f"params given for node(s) {unknown} that this graph does not run: "
                               f"{sorted(self.params)}")
        shorten_gil_switch_interval()
        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.nodes: dict[str, Any] = {}
        if cfg.executor not in EXECUTOR_MODES:
            raise BringupError(f"executor {cfg.executor!r} is not one of {list(EXECUTOR_MODES)}")
        # the shared executor spins every node in 'shared' mode, and in 'per_node' mode only nodes added to it
        # from outside (monitors in tests and tools)
        self.executor = MultiThreadedExecutor(num_threads=max(2, int(cfg.threads)), context=self.context)
        self._executors: dict[str, Executor] = {}  # node name -> the executor that spins it
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.callback_errors = 0
        try:
            for plan in self.plans:
                self._create(plan.executable)
        except BaseException:
            self._teardown()
            raise
        self._start_spinning(self.executor, "ros-executor")
        for name, ex in self._executors.items():
            if ex is not self.executor:
                self._start_spinning(ex, f"ros-{name}")
        if cfg.instruction:
            self.say(cfg.instruction)

    # ---- nodes
    def _kw(self) -> dict:
        return {"context": self.context}

    def _add(self, name: str, node: Any) -> None:
        self.nodes[name] = node
        if self.cfg.executor == "shared":
            ex: Executor = self.executor
        else:
            ex = SingleThreadedExecutor(context=self.context)
            if self._threads:  # a restarted node (the initial ones start spinning after all are built)
                self._start_spinning(ex, f"ros-{name}")
        ex.add_node(node)
        self._executors[name] = ex

    def _start_spinning(self, ex: Executor, thread_name: str) -> None:
        t = threading.Thread(target=self._spin, args=(ex,), name=thread_name, daemon=True)
        self._threads.append(t)
        t.start()

    def detach(self, name: str) -> Any:
        """Stop spinning node `name` (it is not destroyed) and forget it; returns the node."""
        node = self.node(name)
        ex = self._executors.pop(name)
        ex.remove_node(node)
        if ex is not self.executor:
            ex.shutdown(timeout_sec=1.0)
        del self.nodes[name]
        return node

    def _create(self, executable: str) -> None:
        inj, p = self.injected, self.params
        if executable == "sim_robot":
            from etc_ros.nodes.sim_robot import build_sim_robot

            world, driver, camera = build_sim_robot({k: p[k] for k in ("sim_world", "driver_node", "camera_node")},
                                                    env=inj["env"], **self._kw())
            self._add("sim_world", world)
            self._add("driver_node", driver)
            self._add("camera_node", camera)
        elif executable == "camera_node":
            self._add("camera_node", CameraNode(p["camera_node"], source=inj["camera_source"], **self._kw()))
        elif executable == "driver_node":
            self._add("driver_node", DriverNode(p["driver_node"], backend=inj["driver_backend"], **self._kw()))
        elif executable == "instruction_node":
            self._add("instruction_node", InstructionNode(p["instruction_node"], **self._kw()))
        elif executable == "policy_node":
            self._add("policy_node", PolicyNode(p["policy_node"], runtime=inj["runtime"], **self._kw()))
        elif executable == "safety_node":
            self._add("safety_node", SafetyNode(p["safety_node"], executor=inj["safety_executor"], **self._kw()))
        else:  # pragma: no cover - plan_graph only names the above
            raise BringupError(f"unknown executable {executable!r}")

    def node(self, name: str) -> Any:
        if name not in self.nodes:
            raise BringupError(f"node {name!r} is not running; running: {sorted(self.nodes)}")
        return self.nodes[name]

    def restart_node(self, name: str, fresh_injection: bool = False) -> Any:
        """Destroy and recreate one node (crash/restart drill). Injected objects are reused unless
        fresh_injection (then the node builds its own from its parameters)."""
        if name not in ("camera_node", "driver_node", "instruction_node", "policy_node", "safety_node"):
            raise BringupError(f"cannot restart {name!r} on its own")
        old = self.detach(name)
        time.sleep(0.1)  # let callbacks already handed to worker threads finish
        old.destroy_node()
        if fresh_injection:
            key = {"camera_node": "camera_source", "driver_node": "driver_backend", "policy_node": "runtime",
                   "safety_node": "safety_executor"}.get(name)
            if key:
                self.injected[key] = None
        self._create(name)
        return self.nodes[name]

    # ---- conveniences
    def say(self, text: str) -> tuple[bool, str]:
        return self.node("instruction_node").submit(text)

    def _spin(self, executor: Executor) -> None:
        """Spin `executor` until shutdown. A callback that raises (e.g. one of a node destroyed while its callback
        was in flight) is reported and the graph keeps running: one failing callback must not stop the others."""
        shutdown_exc: type[BaseException] = RuntimeError
        try:
            from rclpy.executors import ExternalShutdownException

            shutdown_exc = ExternalShutdownException
        except ImportError:  # pragma: no cover
            pass
        last_report = 0.0
        while self.context.ok() and not self._stopping:
            try:
                executor.spin_once(timeout_sec=0.1)
            except shutdown_exc:
                break
            except Exception as e:  # noqa: BLE001
                if not self.context.ok() or self._stopping:
                    break
                self.callback_errors += 1
                if time.monotonic() - last_report > 1.0:
                    last_report = time.monotonic()
                    print(f"[ros] callback error (graph keeps running): {type(e).__name__}: {e}", flush=True)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Driver at its start pose and the safety executor anchored on the measured joints."""
        return wait_until(lambda: self.node("driver_node").core.ready and self.node("safety_node")._initialized,
                          timeout)

    def stop(self, park: bool = True) -> None:
        """Stop the graph; with park, the driver first moves to its stop pose (blocking)."""
        if park and "driver_node" in self.nodes:
            self.nodes["driver_node"].shutdown_motion()
        self._teardown()

    def _teardown(self) -> None:
        self._stopping = True
        # stop the producers first (capture and inference threads), then the executor, then the nodes
        stop_producers(list(self.nodes.values()))
        for name, n in list(self.nodes.items()):  # no new callbacks for nodes about to be destroyed
            try:
                self._executors.get(name, self.executor).remove_node(n)
            except Exception:
                pass
        for ex in {id(e): e for e in [self.executor, *self._executors.values()]}.values():
            try:
                ex.shutdown(timeout_sec=5.0)
            except Exception:
                pass
        for t in self._threads:
            t.join(5.0)
        self._threads.clear()
        self._executors.clear()
        for n in list(self.nodes.values())[::-1]:
            try:
                n.destroy_node()
            except Exception:
                pass
        self.nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "Graph":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(park=False)


def process_commands(launch_args: dict[str, Any], params: dict[str, dict[str, Any]] | None = None,
                     python: str | None = None) -> list[tuple[str, list[str]]]:
    """What `ros2 launch etc_ros widowx.launch.py <launch_args>` starts, as (executable, argv) pairs: one process
    per executable of plan_graph, with the same parameter files and overrides (+ `params` {node: {param: value}}).
    For machines without the ros2 launch tool (and the benchmark of the one-process-per-node layout)."""
    import sys

    out = []
    for plan in plan_graph(launch_args):
        argv = [python or sys.executable, "-m", f"etc_ros.nodes.{plan.executable}", "--ros-args"]
        for f in plan.param_files:
            argv += ["--params-file", f]
        for node in plan.nodes:
            for k, v in {**plan.overrides.get(node, {}), **(params or {}).get(node, {})}.items():
                argv += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        out.append((plan.executable, argv))
    return out


def observe_process_graph(launch_args: dict[str, Any], params: dict[str, dict[str, Any]] | None, duration: float,
                          log_dir: Path, warmup: float = 2.0, ready_timeout: float = 90.0) -> dict:
    """Start the graph as one process per node (process_commands; DDS domain as isolate_ros_env), wait for joint
    commands, let it run `warmup` s, then record for `duration` s from this process: the stamps of every
    /safety/joint_command (the safety tick times), the number of /joint_states, and the driver's diagnostics
    before and after. Ctrl-C (SIGINT) to every process at the end, as ros2 launch does. Logs in log_dir."""
    import os
    import signal
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from etc_ros.nodes import messages
    from etc_ros.nodes.common import RELIABLE, SENSOR
    from etc_ros.nodes.graph import TOPICS

    domain = isolate_ros_env(None, random_domain=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_DOMAIN_ID=str(domain))
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for exe, argv in process_commands(launch_args, params):
        with open(log_dir / f"{exe}.log", "w") as log:
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    ctx = Context()
    rclpy.init(args=[], context=ctx, domain_id=domain)
    node = Node("process_graph_observer", context=ctx)
    lock = threading.Lock()
    rec: dict[str, Any] = {"cmd": [], "js": 0, "driver": {}, "seen": 0}
    measuring = threading.Event()

    def on_cmd(m: JointTrajectory) -> None:
        with lock:
            rec["seen"] += 1
            if measuring.is_set():
                rec["cmd"].append(messages.from_time(m.header.stamp))

    def on_js(m: JointState) -> None:
        if measuring.is_set():
            with lock:
                rec["js"] += 1

    def on_diag(m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name.endswith("driver_node"):
                with lock:
                    rec["driver"] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(JointTrajectory, TOPICS["joint_command"], on_cmd, RELIABLE)
    node.create_subscription(JointState, TOPICS["joint_states"], on_js, SENSOR)
    node.create_subscription(DiagnosticArray, TOPICS["diagnostics"], on_diag, RELIABLE)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        if not wait_until(lambda: rec["seen"] > 50, ready_timeout):
            return {"error": f"no joint commands within {ready_timeout:g} s (logs in {log_dir})"}
        time.sleep(warmup)
        with lock:
            d0 = dict(rec["driver"])
        measuring.set()
        t0 = time.monotonic()
        time.sleep(duration)
        measuring.clear()
        wall = time.monotonic() - t0
        time.sleep(1.2)  # the next 1 Hz diagnostics
        with lock:
            return {"wall_s": wall, "command_stamps": list(rec["cmd"]), "joint_states": rec["js"],
                    "driver_diagnostics_start": d0, "driver_diagnostics_end": dict(rec["driver"])}
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        ex.shutdown()
        spin.join(2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def start_graph(config: BringupConfig | str | Path | dict | None = None, overrides: Sequence[str] = (),
                **inject: Any) -> Graph:
    """Start the graph of `config` (BringupConfig, YAML path or dict). inject: runtime, env, safety_executor,
    camera_source, driver_backend objects used instead of building them from the parameters;
    random_domain=True picks a random DDS domain when ROS_DOMAIN_ID is unset."""
    return Graph(load_bringup_config(config, overrides), **inject)


def run_bringup(config: BringupConfig, log: Callable[[str], None] = print) -> int:
    """Foreground bringup for the CLI: run until duration_s (or Ctrl-C), print a summary."""
    g = Graph(config)
    log(f"[ros] graph up (ROS_DOMAIN_ID={g.domain_id}): {', '.join(sorted(g.nodes))}")
    if not g.wait_ready(60.0):
        log("[ros] warning: driver/safety not ready after 60 s")
    else:
        log("[ros] driver ready, safety anchored")
    t0 = time.monotonic()
    try:
        while config.duration_s <= 0 or time.monotonic() - t0 < config.duration_s:
            time.sleep(0.2)
    except KeyboardInterrupt:
        log("[ros] interrupted: parking the arm")
    summary = graph_summary(g)
    g.stop(park=True)
    for k, v in summary.items():
        log(f"[ros] {k}: {v}")
    return 0


def graph_summary(g: Graph) -> dict:
    out: dict[str, Any] = {}
    if "safety_node" in g.nodes:
        out["safety"] = g.nodes["safety_node"].stats()
    if "policy_node" in g.nodes:
        out["policy"] = g.nodes["policy_node"].worker.stats()
    if "driver_node" in g.nodes:
        out["driver"] = g.nodes["driver_node"].core.diagnostics()
    if "camera_node" in g.nodes:
        out["camera"] = g.nodes["camera_node"].cam.diagnostics()
    return out


def _stat_ms(values, q: float) -> float | None:
    v = percentile(values, q)
    return None if v is None else round(1000.0 * v, 3)


def run_closed_loop_episodes(config: BringupConfig | str | Path | dict | None, policy: Policy | str | Path,
                             episodes: int = 3,
                             instructions: Sequence[str] | None = None, *, env: Any = None, seed: int = 0,
                             max_steps: int | None = None, overrides: Sequence[str] = (),
                             on_episode: Callable[[dict], None] | None = None, park: bool = False,
                             family: str | None = None, seeds: Sequence[int] | None = None) -> dict:
    """Closed-loop episodes in the simulated world through the whole ROS graph (sim_robot + instruction + policy +
    safety nodes, real time). `policy`: a runtime object with .step(obs) or a bundle path / fake:<name>.
    Each episode: e-stop, world reset (seeds[i] when given, else seed + i; task family `family` when given: the
    scenes `etc-vla eval --family F` runs for the same seeds), driver re-sync, safety re-anchor, e-stop cleared,
    instruction (instructions[i % len] or the episode's own), then run until the world reports success or max_steps
    policy steps (default: the world's cfg.max_steps, else 60) have elapsed at the policy rate.
    Returns success_rate, per-episode results, inference latency p50/p99 [ms], control period p50/p99 [ms],
    camera-to-command latency p50/p99 [ms] and the safety/driver counters."""
    if episodes < 1:
        raise BringupError(f"episodes must be >= 1, got {episodes}")
    cfg = load_bringup_config(config, overrides)
    if not cfg.use_sim:
        raise BringupError("closed-loop episodes need use_sim: true (the simulated world decides success)")
    cfg = replace(cfg, instruction="")
    runtime = load_runtime(str(policy)) if isinstance(policy, (str, Path)) else policy
    if not callable(getattr(runtime, "step", None)):
        raise BringupError(f"policy must be a runtime with .step(observation) or a bundle path, got {type(policy)}")
    params = {k: dict(v) for k, v in (cfg.params or {}).items()}
    params.setdefault("sim_world", {})["announce_instruction"] = False
    seed_list = [int(v) for v in seeds] if seeds is not None else [int(seed) + i for i in range(episodes)]
    if len(seed_list) < episodes:
        raise BringupError(f"{episodes} episodes need as many seeds, got {len(seed_list)}")
    params["sim_world"]["seed"] = seed_list[0]
    if family:
        params["sim_world"]["family"] = str(family)
    cfg = replace(cfg, params=params)
    g = Graph(cfg, runtime=runtime, env=env, random_domain=True)
    results: list[dict] = []
    try:
        if not g.wait_ready(60.0):
            raise BringupError("the simulated driver did not become ready within 60 s")
        world, safety = g.node("sim_world"), g.node("safety_node")
        instr_node, policy_node = g.node("instruction_node"), g.node("policy_node")
        hz = policy_node.policy_hz
        steps = int(max_steps or getattr(getattr(world.env, "cfg", None), "max_steps", 60) or 60)
        # measure only the episodes, not the start-up
        safety.periods.clear()
        safety.latencies.clear()
        policy_node.worker.latencies.clear()
        for i in range(episodes):
            with safety._lock:
                safety.ex.estop("episode reset")
            instr_node.clear()
            policy_node.worker.set_instruction(None)
            r0 = safety.resets
            if i == 0:  # the world was built with the first seed
                instr = world.instruction
                g.node("driver_node").resync()
            else:
                instr = world.reset_episode(seed=seed_list[i], announce=False)  # re-syncs the driver too
            if instructions:
                instr = instructions[i % len(instructions)]
            if not wait_until(lambda: safety.resets > r0 and safety._initialized, 10.0):
                raise BringupError("safety node did not re-anchor after the reset")
            policy_node.worker.clear_observations()
            with safety._lock:
                safety.ex.reset_estop()
            ok, reason = instr_node.submit(instr)
            if not ok:
                raise BringupError(f"episode {i}: instruction {instr!r} {reason}")
            t0 = time.monotonic()
            success = False
            while time.monotonic() - t0 < steps / hz:
                time.sleep(0.1)
                if world.is_success():
                    success = True
                    break
            r = {"episode": i, "seed": seed_list[i], "instruction": instr, "success": success,
                 "duration_s": round(time.monotonic() - t0, 2)}
            results.append(r)
            if on_episode is not None:
                on_episode(r)
        summ = graph_summary(g)
        per = list(safety.periods)
        lat = list(policy_node.worker.latencies)
        c2c = list(safety.latencies)
        out = {
            "episodes": results,
            "success_rate": float(np.mean([r["success"] for r in results])),
            "inference_latency_p50_ms": _stat_ms(lat, 50),
            "inference_latency_p99_ms": _stat_ms(lat, 99),
            "control_period_p50_ms": _stat_ms(per, 50),
            "control_period_p99_ms": _stat_ms(per, 99),
            "camera_to_command_p50_ms": _stat_ms(c2c, 50),
            "camera_to_command_p99_ms": _stat_ms(c2c, 99),
            "inferences": len(lat),
            "safety": summ.get("safety"),
            "safety_executor": safety.ex.diagnostics(),
            "driver": summ.get("driver"),
        }
    finally:
        g.stop(park=park)
    return out
