"""ROS 2 graph benchmark (real DDS; all nodes in one process, each on its own executor thread, like `etc-vla ros
bringup`; and one process per node, like `ros2 launch`):
control-loop period and jitter of the 50 Hz safety timer, joint_states rate, age of the newest camera frame at
each control tick, and camera-to-command latency (camera stamp of the observation -> first joint command that
executes the chunk computed from it), without and with a policy running.

Scenarios (fake arm + fake 30 Hz camera unless noted):
- no_policy      : graph idle (no instruction), the safety node holds
- policy_instant : scripted runtime, ~0 ms inference
- policy_busy    : scripted runtime burning 50 ms of CPU per inference (a small model on this CPU), 5 Hz
- sim_policy     : (full run only) the MuJoCo world + simulated camera (10 Hz render), instant runtime
- processes_no_policy / processes_policy_busy: one process per node, as `ros2 launch` starts them (fake arm and
  camera; fake:hold / fake:busy bundles); period from the stamps of /safety/joint_command

    etc-vla bench ros --out runs/bench [--quick]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from etc_ros.core import spec as robot_spec


def _pct(values, q):
    v = [x for x in values if x is not None]
    return None if not v else round(float(np.percentile(np.asarray(v) * 1000.0, q)), 2)


def _scenario(name: str, duration: float, runtime, sim: bool = False) -> dict:
    from etc_ros.camera.sources import FakeCameraSource
    from etc_ros.core import spec as robot_spec
    from etc_ros.nodes.bringup import start_graph
    from etc_ros.robot.fake import FakeBackend

    if sim:
        cfg = {"policy_bundle": "fake:hold", "params": {"camera_node": {"fps": 10.0},
                                                        "sim_world": {"announce_instruction": False}}}
        g = start_graph(cfg, runtime=runtime, random_domain=True)
    else:
        cfg = {"use_sim": False, "driver_backend": "fake", "camera_type": "fake", "policy_bundle": "fake:hold",
               "params": {"driver_node": {"speed_fraction": 1.0}}}
        g = start_graph(cfg, runtime=runtime, camera_source=FakeCameraSource("primary", 64, 48, 30.0),
                        driver_backend=FakeBackend(q0=robot_spec.READY_POSE), random_domain=True)
    try:
        if not g.wait_ready(30.0):
            return {"error": "graph not ready within 30 s"}
        if runtime is not None:
            g.say("draw a small circle")
        time.sleep(1.0)  # warm-up
        saf, drv = g.node("safety_node"), g.node("driver_node")
        pol = g.node("policy_node").worker
        saf.periods.clear()
        saf.latencies.clear()
        saf.camera_ages.clear()
        pol.latencies.clear()
        n_js, n_cmd = drv.states_published, saf.commands_sent
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(duration)
        wall = time.monotonic() - t0
        per = list(saf.periods)
        nominal = 1.0 / saf.servo_hz
        jit = [abs(p - nominal) for p in per]
        return {
            "duration_s": round(wall, 2),
            "process_cpu_fraction": round((time.process_time() - c0) / wall, 3),
            "control_period_p50_ms": _pct(per, 50),
            "control_period_p99_ms": _pct(per, 99),
            "control_period_max_ms": _pct(per, 100),
            "control_jitter_p50_ms": _pct(jit, 50),
            "control_jitter_p99_ms": _pct(jit, 99),
            "ticks": len(per),
            "commands_per_s": round((saf.commands_sent - n_cmd) / wall, 1),
            "joint_states_hz": round((drv.states_published - n_js) / wall, 1),
            "camera_age_at_tick_p50_ms": _pct(saf.camera_ages, 50),
            "camera_age_at_tick_p99_ms": _pct(saf.camera_ages, 99),
            "camera_to_command_p50_ms": _pct(saf.latencies, 50),
            "camera_to_command_p99_ms": _pct(saf.latencies, 99),
            "inference_p50_ms": _pct(pol.latencies, 50),
            "inference_p99_ms": _pct(pol.latencies, 99),
            "chunks": pol.chunks,
            "driver_refusals": dict(drv.core.refusals),
        }
    finally:
        g.stop(park=False)


def _process_scenario(name: str, duration: float, bundle: str, instruction: str, log_dir: Path) -> dict:
    """The same graph as `ros2 launch etc_ros widowx.launch.py driver_backend:=fake camera_type:=fake`: one process
    per node (bringup.process_commands). The period is read from the stamps of /safety/joint_command (each is the
    `now` of the safety tick that computed it), observed from this process."""
    from etc_ros.nodes.bringup import observe_process_graph

    params = {"camera_node": {"width": 64, "height": 48, "fps": 30.0}, "driver_node": {"speed_fraction": 1.0}}
    if instruction:
        params["instruction_node"] = {"instruction": instruction}
    obs = observe_process_graph({"camera_type": "fake", "driver_backend": "fake", "policy_bundle": bundle}, params,
                                duration, Path(log_dir) / name)
    if "error" in obs:
        return obs
    per = list(np.diff(sorted(obs["command_stamps"])))
    d0, d1 = obs["driver_diagnostics_start"], obs["driver_diagnostics_end"]
    return {
        "duration_s": round(obs["wall_s"], 2),
        "control_period_p50_ms": _pct(per, 50),
        "control_period_p99_ms": _pct(per, 99),
        "control_period_max_ms": _pct(per, 100),
        "ticks": len(per),
        "joint_states_hz": round(obs["joint_states"] / obs["wall_s"], 1),
        "driver_refused_commands": int(d1.get("refused_commands", 0)) - int(d0.get("refused_commands", 0)),
        "driver_last_refusal": d1.get("last_refusal", ""),
    }


def run(out_dir: Path, quick: bool = False) -> dict:
    from etc_ros.policy.scripted import ScriptedRuntime, circle_fn, make_fake_runtime

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = 4.0 if quick else 15.0
    res: dict = {"quick": quick, "cpu_count": os.cpu_count(), "servo_hz": robot_spec.SERVO_HZ,
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()],
                 "note": "in-process graph (one executor thread per node) and one process per node, real DDS "
                         "(Fast DDS, localhost); "
                         "timings depend on the host load (load_avg_*)"}
    scenarios = {
        "no_policy": lambda: _scenario("no_policy", duration, None),
        "policy_instant": lambda: _scenario("policy_instant", duration, ScriptedRuntime(fn=circle_fn())),
        "policy_busy": lambda: _scenario("policy_busy", duration, make_fake_runtime("busy", latency_s=0.05)),
    }
    if not quick:
        scenarios["sim_policy"] = lambda: _scenario("sim_policy", duration, ScriptedRuntime(fn=circle_fn()),
                                                    sim=True)
    # one process per node, as `ros2 launch` runs them
    logs = out_dir / "ros_process_logs"
    scenarios["processes_no_policy"] = lambda: _process_scenario("no_policy", duration, "fake:hold", "", logs)
    scenarios["processes_policy_busy"] = lambda: _process_scenario("policy_busy", duration, "fake:busy",
                                                                   "draw a small circle", logs)
    for name, fn in scenarios.items():
        print(f"[bench ros] {name} ({duration:g} s) ...", flush=True)
        res[name] = fn()
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    return res
