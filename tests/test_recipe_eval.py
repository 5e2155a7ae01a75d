"""Evaluation and ablation: ETC answer scoring through the answer parser, the closed-loop episode loop in the MuJoCo
world, the `etc-vla eval` command on a real tiny checkpoint, and the ablation variants / table."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from etc_training.recipe import evaluate  # noqa: E402
from etc_training.recipe.config import RecipeError, load_train_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "config/train_tiny.yaml")


# ---------------------------------------------------------------- answer scoring
def test_point_box_trajectory_plan_scores():
    # 1023-grid locs on a 1024 x 512 image: loc 0 -> -0.5 px, loc 1023 -> 1023.5 px
    s = evaluate.score_answer("point", "[0, 0]", "[1023, 0]", 1024, 512)
    assert s["parsed"] and s["point_error_px"] == pytest.approx(1024.0)
    s = evaluate.score_answer("affordance_grasp", "[10, 20]", "[10, 20]", 640, 480)
    assert s["point_error_px"] == 0.0
    s = evaluate.score_answer("box", "[0, 0, 511, 1023]", "[0, 0, 1023, 1023]", 1023, 1023)
    assert s["box_iou"] == pytest.approx(0.5, abs=1e-3)
    s = evaluate.score_answer("trajectory", "[[0, 0, 1], [1023, 0, 0]]", "[[0, 0, 1], [0, 0, 1]]", 1023, 100)
    assert s["trajectory_ade_px"] == pytest.approx(1023 / 2, rel=1e-6)
    assert s["trajectory_fde_px"] == pytest.approx(1023.0, rel=1e-6) and s["trajectory_gripper_acc"] == 0.5
    s = evaluate.score_answer("plan", "1. reach the cube; 2. grasp it", "1. Reach the cube; 2. grasp it; 3. lift",
                              10, 10)
    assert s["plan_exact"] is False and s["plan_step_acc"] == pytest.approx(2 / 3)
    assert evaluate.score_answer("done", "yes.", "yes", 10, 10)["correct"] is True
    assert evaluate.score_answer("relation", "left of", "right of", 10, 10)["correct"] is False
    bad = evaluate.score_answer("point", "somewhere", "[1, 2]", 10, 10)
    assert bad["parsed"] is False and "point_error_px" not in bad


def test_summary_and_record_picking():
    recs = [{"subtype": st, "id": f"{st}{i}"} for st in ("point", "plan", "goal") for i in range(5)]
    picked = evaluate.pick_records(recs, 6, seed=0)
    assert sorted(r["subtype"] for r in picked) == ["goal", "goal", "plan", "plan", "point", "point"]
    assert evaluate.pick_records(recs, 6, seed=0) == picked
    summ = evaluate.summarize_etc([evaluate.score_answer("point", "[1, 1]", "[1, 1]", 100, 100),
                                   evaluate.score_answer("point", "??", "[1, 1]", 100, 100)])
    assert summ["parse_rate"] == 0.5 and summ["point_error_px"] == 0.0
    lo, hi = evaluate.wilson_interval(0, 2)
    assert lo == 0.0 and hi == pytest.approx(0.658, abs=1e-3)
    assert evaluate.wilson_interval(10, 10)[1] == 1.0


# ---------------------------------------------------------------- closed loop (stub policy, real sim)
class StubPolicy:
    """Predicts 'move down 2 cm, keep the gripper open' for every observation."""

    calls = 0

    def predict_chunk(self, images, state, instruction, return_valid=False):
        StubPolicy.calls += 1
        assert np.asarray(images).dtype == np.uint8 and len(state) == 7 and isinstance(instruction, str)
        c = np.zeros((10, 7))
        c[:, 2] = -0.02
        c[:, 6] = 1.0
        c[3] = np.nan  # a broken action is replaced by a hold, never sent to the sim
        return (c, False) if return_valid else c


def test_closed_loop_runs_episodes_and_writes_videos(tmp_path, monkeypatch):
    _fake_init(monkeypatch)
    cfg = evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), splits=["train", "ood_color"], episodes=1,
                              max_steps=4, exec_horizon=5, videos=1)
    res = evaluate.closed_loop(cfg, progress=False)
    eps = res["episodes"]
    assert [e["split"] for e in eps] == ["train", "ood_color"]
    assert all(e["steps"] == 4 and e["chunks"] == 1 and e["invalid_chunks"] == 1 for e in eps)
    assert all(Path(e["video"]).is_file() and Path(e["video"]).stat().st_size > 1000 for e in eps)
    assert res["per_split"]["train"]["episodes"] == 1 and res["per_split"]["train"]["invalid_chunk_rate"] == 1.0
    md = evaluate.eval_markdown({"checkpoint": "x", "closed_loop": res})
    assert "| ood_color | 1 |" in md
    with pytest.raises(RecipeError, match="unknown sim split"):
        evaluate.closed_loop(evaluate.EvalConfig(splits=["mars"]), progress=False)


# ---------------------------------------------------------------- the command on a real tiny checkpoint
def test_eval_command_on_tiny_checkpoint(tmp_path):
    import torch

    from etc_training.cli import main
    from etc_training.etc import EtcConfig, build_etc
    from etc_training.etc.synthetic import make_episode, write_dataset
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy

    torch.set_num_threads(1)
    eps = write_dataset(tmp_path / "eps", [make_episode(0, "pick_place", split="val")])
    build_etc(eps, tmp_path / "etc", EtcConfig(stride=10, overlays=0), progress=False, write_extras=False)
    preset = get_preset("tiny", image_size=64, patch_size=16, action_tokenizer="bin")
    VLAPolicy.build(preset, seed=0).save(tmp_path / "ckpt")
    out = tmp_path / "eval"
    rc = main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--split", "ood_phrase", "--episodes", "1",
               "--workers", "1", "--max-steps", "2", "--videos", "0", "--etc", str(tmp_path / "etc"),
               "--etc-samples", "2", "--data", str(eps), "--action-samples", "3", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["closed_loop"]["per_split"]["ood_phrase"]["episodes"] == 1
    assert res["etc"]["summary"]["samples"] == 2 and len(res["etc"]["samples"]) == 2
    a = res["actions"]
    assert a["samples"] == 3 and np.isfinite(a["action_loss"]) and 0.0 <= a["valid_chunk_rate"] <= 1.0
    assert "Offline action quality" in (out / "eval.md").read_text()
    assert main(["eval", "--checkpoint", str(tmp_path / "nope"), "--episodes", "0"]) == 2  # clear error, exit 2


# ---------------------------------------------------------------- ablation
def test_ablation_variants_share_budget():
    from etc_training.recipe.ablate import variant_config

    base = load_train_config(TINY)
    s1 = base.stages.stage1.steps
    ao = variant_config(base, "action_only")
    assert not ao.stages.stage1.enabled
    assert ao.stages.stage2.resolved_etc_batch() == 0 and ao.stages.stage3.resolved_etc_batch() == 0
    e2 = variant_config(base, "etc_stage2")
    assert not e2.stages.stage1.enabled and e2.stages.stage2.resolved_etc_batch() == 2
    full = variant_config(base, "three_stage")
    assert all(s.enabled for _, s in full.stages.items())
    dba = variant_config(base, "db_action_only")
    assert dba.stages.stage1.enabled and dba.stages.stage2.resolved_etc_batch() == 0
    for v in (ao, e2, full):  # same Stage-2/3 budget
        assert (v.stages.stage2.steps, v.stages.stage3.steps) == (base.stages.stage2.steps, base.stages.stage3.steps)
    tot = variant_config(base, "action_only", budget="total")
    assert tot.stages.stage2.steps == base.stages.stage2.steps + s1
    assert base.stages.stage1.enabled and base.stages.stage2.resolved_etc_batch() == 2  # base untouched
    with pytest.raises(RecipeError, match="unknown ablation variant"):
        variant_config(base, "magic")


def test_ablation_table_and_plots(tmp_path):
    from etc_training.recipe.ablate import AblationConfig, _write

    acfg = AblationConfig(out=str(tmp_path), seeds=[0, 1], eval_splits=["train"])
    runs = []
    for v, loss in (("action_only", 6.0), ("etc_stage2", 5.5), ("three_stage", 5.0)):
        for s in (0, 1):
            runs.append({"variant": v, "seed": s, "steps": 240, "val_action_loss": loss + 0.1 * s,
                         "val_action_accuracy": 0.1, "val_chunk_mse": 0.2, "etc_parse_rate": None,
                         "etc_point_error_px": None, "success": {"train": 0.5 * s}, "cka_final": 0.9,
                         "cka_curve": [(10, 0.99), (20, 0.9)]})
    res = _write(tmp_path, acfg, runs, 12.0)
    md = (tmp_path / "ablation.md").read_text()
    assert "| three_stage | 2 | 240 | 5.050 ± 0.071 |" in md
    assert "| action_only | 2 | 240 | 6.050 ± 0.071 |" in md and "0.25 ± 0.35" in md
    assert len(res["table"]) == 3 and "plot_error" not in res
    assert (tmp_path / "ablation.png").stat().st_size > 0 and (tmp_path / "cka_ablation.png").stat().st_size > 0


# ---------------------------------------------------------------- family filter, seeds of a dataset, failure mode
def _fake_init(monkeypatch, policy=None):
    """Rollout workers with a stub policy (default StubPolicy) in the real sim."""
    def fake_init(checkpoint, threads, cameras, max_steps):
        from etc_training.sim import SimConfig, SimEnv

        scfg = SimConfig()
        scfg.max_steps = max_steps
        evaluate._WORKER.update(policy=policy or StubPolicy(), env=SimEnv(scfg), cameras=list(cameras))

    monkeypatch.setattr(evaluate, "_worker_init", fake_init)


def test_family_filter_assigns_families_round_robin(tmp_path, monkeypatch):
    _fake_init(monkeypatch)
    cfg = evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), splits=["train"], episodes=4, max_steps=2,
                              videos=0, families=["push", "stack"])
    res = evaluate.closed_loop(cfg, progress=False)
    assert [e["family"] for e in res["episodes"]] == ["push", "stack", "push", "stack"]
    pf = res["per_split"]["train"]["per_family"]
    assert set(pf) == {"push", "stack"} and all(v["episodes"] == 2 for v in pf.values())
    one = evaluate.closed_loop(evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), episodes=3, max_steps=2,
                                                   videos=0, families=["pick_up"]), progress=False)
    assert {e["family"] for e in one["episodes"]} == {"pick_up"}
    with pytest.raises(RecipeError, match="unknown task family"):
        evaluate.episode_tasks(evaluate.EvalConfig(families=["juggle"]))


def test_seeds_from_replays_the_scenes_of_a_dataset(tmp_path, monkeypatch):
    from etc_ros.data import DatasetReader
    from etc_training.sim import SimConfig
    from etc_training.sim.collect import collect

    scfg = SimConfig()
    scfg.episodes, scfg.families = 2, ["pick_up", "push"]
    scfg.render.width = scfg.render.height = 64
    collect(scfg, tmp_path / "ds", progress=False)
    r = DatasetReader(tmp_path / "ds")
    metas = [r.episode_meta(e)["metadata"] for e in r.episodes()]
    tasks = evaluate.episode_tasks(evaluate.EvalConfig(seeds_from=str(tmp_path / "ds"), episodes=5, out=str(tmp_path)))
    assert [t["seed"] for t in tasks] == [m["seed"] for m in metas]
    assert [t["family"] for t in tasks] == [m["task"]["family"] for m in metas]
    _fake_init(monkeypatch)
    res = evaluate.closed_loop(evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path),
                                                   seeds_from=str(tmp_path / "ds"), episodes=2, max_steps=2, videos=0),
                               progress=False)
    from etc_training.sim import SimEnv

    env = SimEnv(SimConfig(), render=False)
    for e, m in zip(res["episodes"], metas):  # the very scene of the dataset episode
        env.reset(seed=m["seed"], split=m["split"], family=m["task"]["family"])
        assert e["instruction"] == env.instruction
    env.close()


def test_miss_summary_reads_the_first_close():
    eps = [{"success": False, "first_close": {"step": 3, "horizontal_miss": 0.08}},
           {"success": True, "first_close": {"step": 5, "horizontal_miss": 0.004}},
           {"success": False, "first_close": {"step": 4, "horizontal_miss": 0.06}},
           {"success": False, "first_close": None}]
    s = evaluate.miss_summary(eps)
    assert s["median_horizontal_miss_m"] == pytest.approx(0.06) and s["never_closed"] == 1
    assert s["median_miss_failures_m"] == pytest.approx(0.07) and s["median_miss_successes_m"] == 0.004
    assert s["median_first_close_step"] == 4.0


class CloseAtOnce:
    """Closes the gripper right away: the rollout records where the EE was relative to the object."""

    def predict_chunk(self, images, state, instruction, return_valid=False):
        c = np.zeros((10, 7))
        return (c, True) if return_valid else c


def test_rollout_records_the_miss_at_the_first_close(tmp_path, monkeypatch):
    _fake_init(monkeypatch, CloseAtOnce())
    res = evaluate.closed_loop(evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), episodes=2, max_steps=2,
                                                   videos=0, families=["pick_up"]), progress=False)
    for e in res["episodes"]:
        fc = e["first_close"]
        assert fc["step"] == 0 and fc["horizontal_miss"] > 0.02  # the home pose is far from any object
        assert fc["horizontal_miss"] == pytest.approx(float(np.hypot(*fc["miss_xy"])), abs=2e-4)
    assert res["per_split"]["train"]["failure_mode"]["closed_episodes"] == 2


class DownPolicy:
    """'move down 1.5 cm, keep the gripper open', chunks of 4 actions."""

    def predict_chunk(self, images, state, instruction, return_valid=False):
        c = np.zeros((4, 7))
        c[:, 2], c[:, 6] = -0.015, 1.0
        return (c, True) if return_valid else c


def test_executor_rollout_runs_the_robot_path_in_sim_time(tmp_path, monkeypatch):
    """rollout=executor: the safety executor of the ROS graph (its settings from config/ros_bringup.yaml) drives
    the servos at 50 Hz; it moves the arm as the direct rollout does, a broken chunk is rejected (the arm holds),
    and the world's own servo profile is restored afterwards."""
    from etc_ros.nodes.graph import sim_rollout_settings

    st = sim_rollout_settings()
    assert st["align"] == "arrival" and st["servo_profile"] == (0.04, 0.02)
    from etc_training.sim import SimEnv

    probe = SimEnv(render=False)
    probe.reset(seed=100, split="train", family="pick_up")
    z0 = float(probe.ee_pose()[2])  # every episode starts at the ready pose
    probe.close()
    z = {}
    for rollout in ("direct", "executor"):
        pol = DownPolicy()
        _fake_init(monkeypatch, pol)
        res = evaluate.closed_loop(evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), episodes=1,
                                                       max_steps=4, videos=0, families=["pick_up"], rollout=rollout,
                                                       latency_s=0.06, exec_horizon=1), progress=False)
        e = res["episodes"][0]
        assert e["steps"] == 4 and e["chunks"] == 4 and e["invalid_chunks"] == 0
        env = evaluate._WORKER["env"]
        z[rollout] = float(env.ee_pose()[2])
        assert env.servo_profile == (0.25, 0.10)
        if rollout == "executor":
            assert e["executor"]["rejections"] == {} and e["executor"]["ik_failures"] == 0
    # both went down 4 x 1.5 cm from the same start (the executor ramps each step over its period)
    assert abs(z["direct"] - z["executor"]) < 0.012 and z["direct"] < z0 - 0.045, (z, z0)
    _fake_init(monkeypatch, StubPolicy())  # a NaN in every chunk: rejected whole, the arm never moves
    res = evaluate.closed_loop(evaluate.EvalConfig(checkpoint="unused", out=str(tmp_path), episodes=1, max_steps=3,
                                                   videos=0, families=["pick_up"], rollout="executor"), progress=False)
    e = res["episodes"][0]
    assert e["executor"]["rejections"] == {"nonfinite": 3} and e["invalid_chunks"] == 3
    with pytest.raises(RecipeError, match="rollout"):
        evaluate.episode_tasks(evaluate.EvalConfig(rollout="async"))
    with pytest.raises(RecipeError, match="latency_s"):
        evaluate.episode_tasks(evaluate.EvalConfig(latency_s=-1.0))
