"""The graph on the simulated robot (sim_robot: MuJoCo world + simulated driver and camera in one process) and the
closed-loop episode runner the demo calls."""
from __future__ import annotations

import time

import numpy as np
from ros_graph_helpers import Recorder, wait_until  # noqa: I100 (sets ROS_DOMAIN_ID)
from test_ros_core import FakeWorld

from etc_ros.core import spec as robot_spec
from etc_ros.policy.scripted import ScriptedRuntime, circle_fn


def test_sim_graph_moves_the_mujoco_arm_and_resets_episodes():
    from std_srvs.srv import Trigger

    from etc_ros.nodes.bringup import start_graph

    g = start_graph("config/ros_bringup.yaml", ["policy_bundle=fake:circle"])
    try:
        assert g.wait_ready(30.0)
        world = g.node("sim_world")
        instr = g.node("instruction_node")
        # the episode's own instruction is announced and accepted
        assert world.instruction and wait_until(lambda: instr.current == world.instruction, 10.0)
        q0 = world.env.joint_state()[0]
        assert np.allclose(q0, robot_spec.READY_POSE, atol=0.05)
        assert wait_until(lambda: np.max(np.abs(world.env.joint_state()[0] - q0)) > 0.02, 15.0), \
            "the simulated arm did not move"
        cam = g.node("camera_node")
        assert cam.source.kind == "sim" and wait_until(lambda: cam.published > 5, 5.0)  # 10 Hz render
        assert g.node("driver_node").core.refused == 0
        # ~/reset: new episode (next seed), its instruction, the safety node re-anchors
        rec = Recorder(g)
        resets = g.node("safety_node").resets
        r = rec.call(Trigger, "/sim_world/reset", Trigger.Request(), timeout=20.0)
        assert r.success and r.message.startswith("episode seed 1:"), r.message
        assert wait_until(lambda: g.node("safety_node").resets > resets, 10.0)
        assert wait_until(lambda: instr.current == world.instruction, 10.0)
        t1 = time.time()
        assert wait_until(lambda: g.node("driver_node").core.accepted > 0 and time.time() - t1 > 0.5, 5.0)
    finally:
        g.stop(park=False)


def test_closed_loop_episodes_report_success_and_latencies():
    from etc_ros.nodes.bringup import run_closed_loop_episodes

    world = FakeWorld()
    rt = ScriptedRuntime(fn=circle_fn(radius=0.05, period_s=2.0))
    seen = []
    res = run_closed_loop_episodes("config/ros_bringup.yaml", rt, episodes=2, env=world, max_steps=25,
                                   instructions=["touch the pad"], on_episode=seen.append)
    assert [r["episode"] for r in res["episodes"]] == [0, 1] and seen == res["episodes"]
    assert [r["seed"] for r in res["episodes"]] == [0, 1]
    assert all(r["instruction"] == "touch the pad" for r in res["episodes"])
    assert set(rt.instructions) == {"touch the pad"}
    # the fake world succeeds once the arm moved 0.02 rad: both episodes succeed, well before max_steps
    assert res["success_rate"] == 1.0 and all(r["duration_s"] < 5.0 for r in res["episodes"])
    assert world.resets == 2  # built with seed 0, reset for episode 1
    for k in ("inference_latency_p50_ms", "inference_latency_p99_ms", "control_period_p50_ms",
              "control_period_p99_ms", "camera_to_command_p50_ms"):
        assert res[k] is not None and res[k] >= 0, k
    # units only (ms, not s or us): the period itself is a benchmark figure (etc-vla bench ros), never a timed
    # assertion; under CI load the 20 ms loop measured 33 ms p50 and failed a 15-30 ms window here
    assert 5.0 <= res["control_period_p50_ms"] <= 500.0
    assert res["driver"]["refusals"].get("position_limits", 0) == 0


def test_closed_loop_episodes_in_mujoco_without_success():
    from etc_ros.nodes.bringup import run_closed_loop_episodes
    from etc_ros.policy.scripted import make_fake_runtime

    res = run_closed_loop_episodes("config/ros_bringup.yaml", make_fake_runtime("hold"), episodes=1, max_steps=5)
    assert res["success_rate"] == 0.0 and res["episodes"][0]["duration_s"] >= 1.0
    assert res["inferences"] >= 3
    assert res["safety_executor"]["chunks_accepted"] >= 3
