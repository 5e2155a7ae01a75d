"""The demo's stages (see etc_training/commands/demo.py). Each stage returns a dict of figures and a few
Markdown lines; the report is rewritten after every stage so a person can follow a long run."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from etc_ros.core.io import atomic_write_json, atomic_write_text


@dataclass
class DemoContext:
    out: Path
    episodes: int = 24
    workers: int = 2
    seed: int = 0
    # Binning action tokens: decoding is length-constrained, so even a briefly trained policy emits well-formed
    # chunks the arm can execute (FAST tokens need a trained model to decode; config/train_tiny.yaml keeps FAST).
    train_overrides: tuple = ("model.action_tokenizer=bin",)
    ros_episodes: int = 3
    ros_max_steps: int = 40
    # the shipped policy (`make policy`): scored by the eval rollout and through the ROS graph on the same scenes
    shipped_policy: str = "policies/sim_pickup"
    shipped_family: str = "pick_up"
    shipped_episodes: int = 10
    shipped_seed: int = 7  # scenes seed * 100000 + i, the scenes `etc-vla eval --seed 7` runs
    results: dict = field(default_factory=dict)
    md: list = field(default_factory=list)


def _print_section(name: str, lines: list[str]) -> None:
    print(f"\n== {name} ==")
    for ln in lines:
        print("  " + ln)


def stage_robot(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.core import spec as robot_spec
    from etc_ros.core.kinematics import WidowXKinematics
    from etc_ros.core.paths import urdf_path

    kin = WidowXKinematics.from_urdf()
    rng = np.random.default_rng(ctx.seed)
    qs = kin.random_configurations(200, rng, margin=0.2)
    fk_err = max(float(np.abs(kin.fk(q) - kin.fk_poe(q)).max()) for q in qs)
    ok, pos_errs, t_ik = 0, [], []
    for q in qs:
        T = kin.fk(q)
        t0 = time.perf_counter()
        res = kin.ik(T, q_seed=robot_spec.READY_POSE)
        t_ik.append(time.perf_counter() - t0)
        if res.success:
            ok += 1
            pos_errs.append(float(np.linalg.norm(kin.fk(res.q)[:3, 3] - T[:3, 3])))
    zero = kin.fk(np.zeros(6))[:3, 3]
    ready = kin.fk(robot_spec.READY_POSE)[:3, 3]
    r = {
        "urdf": str(urdf_path()),
        "joints": list(kin.joint_names),
        "lower": np.round(kin.lower, 4).tolist(),
        "upper": np.round(kin.upper, 4).tolist(),
        "ee_at_zero_pose_m": np.round(zero, 6).tolist(),
        "ee_at_ready_pose_m": np.round(ready, 4).tolist(),
        "fk_urdf_vs_poe_max_abs_err": fk_err,
        "ik_round_trips": len(qs),
        "ik_success_rate": ok / len(qs),
        "ik_max_pos_err_m": max(pos_errs) if pos_errs else None,
        "ik_ms_p50": 1000 * float(np.median(t_ik)),
    }
    lines = [
        f"URDF {r['urdf']}: {len(r['joints'])} arm joints {r['joints']}",
        f"EE (ee_gripper_link) at zero pose: {r['ee_at_zero_pose_m']} m",
        f"FK (URDF chain) vs product of exponentials: max |diff| = {fk_err:.2e}",
        f"IK round trips from random poses: {ok}/{len(qs)} solved, max position error "
        f"{(r['ik_max_pos_err_m'] or 0) * 1000:.3f} mm, {r['ik_ms_p50']:.2f} ms median",
    ]
    return r, lines


# The demo's data roles (one dataset, the recipe reads the split of each episode):
#   train  = sim "train" split (in-distribution scenes)            -> Stage 1/2 actions + ETC
#   val    = more "train"-split episodes, other seeds              -> held-out metrics
#   target = sim "ood_combo" (unseen object/target combinations)   -> Stage 3 target-scene actions + ETC
#   ood    = sim "ood_color" (unseen colors), ETC only             -> Stage 3 OOD ETC
DATA_ROLES = (("train", "train", 1.0, 0), ("val", "train", 0.125, 500), ("target", "ood_combo", 0.34, 1000),
              ("ood", "ood_color", 0.25, 2000))


def stage_sim(ctx: DemoContext) -> tuple[dict, list[str]]:
    import shutil

    from etc_ros.data import DatasetReader
    from etc_training.sim.collect import collect
    from etc_training.sim.config import SimConfig
    from etc_training.sim.video import save_episode_gif

    data = ctx.out / "data"
    if data.exists():
        shutil.rmtree(data)  # the demo always starts from fresh data
    res = {}
    for label, sim_split, frac, seed_off in DATA_ROLES:
        n = max(2, int(round(ctx.episodes * frac)))
        cfg = SimConfig(split=sim_split, episodes=n, workers=ctx.workers, seed=ctx.seed + seed_off)
        res[label] = collect(cfg, data, progress=True, split_label=label)
    reader = DatasetReader(data)
    gif = ctx.out / "expert_episode.gif"
    save_episode_gif(reader.load_episode(0), gif)
    tr = res["train"]
    fams = ", ".join(f"{f} {v['success']}/{v['episodes']}" for f, v in tr["expert_success"].items())
    frames = sum(r["frames"] for r in res.values())
    wall = sum(r["wall_s"] for r in res.values())
    lines = [
        f"scripted expert, train split: {tr['expert_success_rate']:.0%} success over {tr['attempts']} attempts "
        f"({fams})",
        "collected " + ", ".join(f"{k} {v['episodes']}" for k, v in res.items())
        + f" episodes ({frames} frames, {frames / max(wall, 1e-9):.1f} frames/s with {ctx.workers} workers) -> {data}",
        "roles: train/val = in-distribution scenes, target = unseen object/target combinations (Stage 3), "
        "ood = unseen colors (OOD ETC)",
        f"expert episode video: {gif}",
    ]
    return {"collect": res, "gif": str(gif), "dataset": str(data)}, lines


def stage_data(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.data import DatasetReader, validate_dataset

    d = ctx.out / "data"
    t0 = time.perf_counter()
    errors = validate_dataset(d)
    t_val = time.perf_counter() - t0
    r = DatasetReader(d)
    t0 = time.perf_counter()
    n = 0
    for i in range(r.num_episodes):
        n += len(r.load_episode(i).action)
    t_read = time.perf_counter() - t0
    rng = np.random.default_rng(ctx.seed)
    t0 = time.perf_counter()
    idx = rng.integers(0, r.num_frames, size=min(100, r.num_frames))
    for g in idx:
        r.frame(int(g))
    t_rand = time.perf_counter() - t0
    res = {"episodes": r.num_episodes, "frames": r.num_frames, "validation_errors": errors,
           "validate_s": round(t_val, 2), "read_frames_per_s": round(n / t_read, 1),
           "random_frame_per_s": round(len(idx) / t_rand, 1)}
    lines = [
        f"dataset {d}: {r.num_episodes} episodes, {r.num_frames} frames, "
        f"{'valid' if not errors else str(len(errors)) + ' ERRORS'} (validated in {t_val:.1f} s)",
        f"read back: {res['read_frames_per_s']} frames/s sequential, "
        f"{res['random_frame_per_s']} frames/s random access",
    ]
    if errors:
        raise RuntimeError("dataset validation failed: " + "; ".join(errors[:5]))
    return res, lines


def stage_etc(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_training.etc import build_etc, validate_etc, write_overlays

    etc_dir = ctx.out / "etc"
    res = build_etc(ctx.out / "data", etc_dir, {"stride": 2}, progress=True, write_extras=True)
    v = validate_etc(etc_dir)
    overlays = write_overlays(etc_dir, ctx.out / "etc_overlays", n=8, seed=ctx.seed)
    by_split = res.get("by_split", {})
    lines = [
        f"ETC samples: {res['n_samples']} from {res.get('n_episodes', '?')} episodes, by split {dict(by_split)}, "
        f"by category {res.get('by_category', '')}; {res['samples_per_s']} samples/s",
        f"validation against ground truth: {v['n_errors']} errors",
        f"overlays (points, boxes, trajectories drawn on frames): {len(overlays)} PNGs in {ctx.out / 'etc_overlays'}",
    ]
    if v["n_errors"]:
        raise RuntimeError(f"ETC validation errors: {v.get('errors_by_check')}")
    return {"build": {k: v_ for k, v_ in res.items() if k not in ("files", "overlays", "stats")},
            "validation_errors": v["n_errors"]}, lines


def stage_train(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path
    from etc_training.recipe.config import TrainConfig
    from etc_training.recipe.stages import run_recipe

    cfg = load_config(TrainConfig, config_path("train_tiny.yaml"), [
        f"out={ctx.out / 'train'}", f"data.episodes={ctx.out / 'data'}", f"data.etc={ctx.out / 'etc'}",
        f"seed={ctx.seed}", "run.resume=never",
    ] + list(ctx.train_overrides))
    summary = run_recipe(cfg, progress=True)
    stages = summary.get("stages") or {}
    lines = [f"three-stage recipe (config/train_tiny.yaml) on the sim data: {summary.get('seconds')} s, "
             f"final policy {summary.get('final_policy')}"]
    for name, st in stages.items():
        if isinstance(st, dict):
            lines.append(f"{name}: {st.get('steps')} steps, {st.get('samples_per_s')} samples/s, "
                         f"peak RSS {st.get('peak_rss_mb')} MB, sources {st.get('sources')}")
    if summary.get("plots"):
        lines.append(f"plots (losses, CKA drift): {', '.join(summary['plots'])}")
    ctx.results["_final_policy"] = summary.get("final_policy")
    return summary, lines


def stage_export(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_training.export.bundle_write import export_bundle

    ckpt = ctx.results.get("_final_policy") or str(ctx.out / "train" / "stage3" / "final")
    bundle = ctx.out / "bundle"
    card = export_bundle(ckpt, bundle, quantize=("int8-dynamic",), calib_dataset=str(ctx.out / "data"),
                         force=True, progress=True)
    ctx.results["_bundle"] = str(bundle)
    par = card.get("parity", {})
    lines = [f"policy bundle {bundle} from {ckpt}"]
    for variant, p in (par.items() if isinstance(par, dict) else []):
        if isinstance(p, dict):
            outs = p.get("outputs", {})
            desc = ", ".join(f"{k} cos {o.get('cosine')} max|d| {o.get('max_abs')}" for k, o in outs.items()
                             if k != "actions")
            lines.append(f"parity ONNX Runtime {variant} vs PyTorch on {p.get('observations')} dataset frames: {desc}; "
                         f"identical action tokens {p.get('identical_action_ids', 0):.0%}; "
                         f"cleanly decoded chunks {p.get('valid_rate_exported', 0):.0%}")
    return {"bundle": str(bundle), "model_card": card}, lines


def _shipped_bundle(ctx: DemoContext) -> Path | None:
    p = Path(ctx.shipped_policy)
    if not p.is_absolute():
        p = Path(__file__).resolve().parent.parent / p
    return p if (p / "manifest.json").is_file() else None


def stage_policy(ctx: DemoContext) -> tuple[dict, list[str]]:
    """The shipped policy bundle on new seeded scenes through the evaluation rollout (ONNX Runtime, the robot's
    runtime, in-process): the reference the ROS stage's figure is compared with."""
    from etc_training.recipe.evaluate import EvalConfig, closed_loop

    bundle = _shipped_bundle(ctx)
    if bundle is None:  # nothing shipped (yet): the stage says so and the demo goes on
        return {"skipped": f"no shipped policy bundle at {ctx.shipped_policy}"}, [
            f"no shipped policy bundle at {ctx.shipped_policy}: `make policy` trains and exports one (see "
            "docs/results/policy/README.md for what it reaches today)"]
    # the robot's path in sim time (the ROS graph's safety executor, its settings, a 0.1 s inference latency):
    # the rollout definition the ros stage runs in real time through DDS on the same scenes
    cfg = EvalConfig(checkpoint=str(bundle), out=str(ctx.out / "policy"), splits=["train"],
                     episodes=ctx.shipped_episodes, workers=1, seed=ctx.shipped_seed, videos=2,
                     families=[ctx.shipped_family], rollout="executor", latency_s=0.1)
    res = closed_loop(cfg, progress=False)
    v = res["per_split"]["train"]
    fm = v["failure_mode"]
    ctx.results["_shipped_seeds"] = [e["seed"] for e in res["episodes"]]
    lines = [f"shipped policy {bundle} ({ctx.shipped_family}, trained by `make policy`; see "
             "docs/results/policy/README.md)",
             f"eval rollout (ONNX Runtime in-process; the ROS graph's safety executor at 50 Hz in sim time, 0.1 s "
             f"inference latency) on {v['episodes']} new seeded scenes (seed {ctx.shipped_seed}): "
             f"success {v['successes']}/{v['episodes']} = {v['success_rate']:.2f}, 95% CI "
             f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]; median miss at the first close "
             f"{'-' if fm['median_horizontal_miss_m'] is None else round(1000 * fm['median_horizontal_miss_m'], 1)} mm",
             f"videos: {ctx.out / 'policy' / 'videos'}"]
    return {"bundle": str(bundle), **v, "episode_results": res["episodes"]}, lines


def stage_ros(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.core.paths import config_path
    from etc_ros.nodes.bringup import run_closed_loop_episodes

    bundle = ctx.results.get("_bundle") or str(ctx.out / "bundle")
    res = run_closed_loop_episodes(config_path("ros_bringup.yaml"), bundle, episodes=ctx.ros_episodes,
                                   seed=ctx.seed + 5000, max_steps=ctx.ros_max_steps)
    lines = [
        f"ROS 2 graph over real DDS (sim_robot + camera + instruction + policy + safety nodes), bundle {bundle}",
        f"closed-loop episodes: {len(res.get('episodes', []))}, success rate {res.get('success_rate')}",
        f"chunks: {res.get('safety', {}).get('chunks_received')} received, "
        f"{res.get('safety_executor', {}).get('chunks_accepted')} accepted, rejections "
        f"{res.get('safety_executor', {}).get('rejections')} (a chunk that does not decode cleanly arrives as NaN "
        "and the arm holds); clamps " + str(res.get('safety_executor', {}).get('clamps')),
        f"inference latency p50/p99: {res.get('inference_latency_p50_ms')} / {res.get('inference_latency_p99_ms')} ms",
        f"control period p50/p99: {res.get('control_period_p50_ms')} / {res.get('control_period_p99_ms')} ms "
        f"(50 Hz target: 20 ms)",
        f"camera-to-command latency p50/p99: {res.get('camera_to_command_p50_ms')} / "
        f"{res.get('camera_to_command_p99_ms')} ms",
    ]
    lines[0] = ("pipeline policy (the short end-to-end training above, 240 steps: shows the pipeline, not a capable "
                "policy) " + lines[0])
    shipped = _shipped_bundle(ctx)
    if shipped is not None:
        seeds = ctx.results.get("_shipped_seeds") or [ctx.shipped_seed * 100_000 + i
                                                      for i in range(ctx.shipped_episodes)]
        sp = run_closed_loop_episodes(config_path("ros_bringup.yaml"), str(shipped), episodes=len(seeds),
                                      seed=seeds[0], seeds=seeds, family=ctx.shipped_family)
        res = {"pipeline_policy": res, "shipped_policy": sp}
        k = sum(e["success"] for e in sp["episodes"])
        ref = ctx.results.get("policy") or {}
        lines += [
            f"shipped policy {shipped} through the same ROS graph on the same {len(seeds)} scenes: success "
            f"{k}/{len(seeds)} = {sp['success_rate']:.2f} (eval rollout on these scenes: "
            f"{ref.get('successes', '-')}/{ref.get('episodes', '-')})",
            f"shipped policy: inference p50/p99 {sp.get('inference_latency_p50_ms')} / "
            f"{sp.get('inference_latency_p99_ms')} ms, control period p50/p99 {sp.get('control_period_p50_ms')} / "
            f"{sp.get('control_period_p99_ms')} ms, safety rejections "
            f"{sp.get('safety_executor', {}).get('rejections')}, driver guard refusals "
            f"{(sp.get('driver') or {}).get('refusals')}, superseded (stamped before a re-sync) "
            f"{(sp.get('driver') or {}).get('superseded_commands')}",
        ]
    return res, lines


STAGE_FUNCS: dict[str, Callable[[DemoContext], tuple[dict, list[str]]]] = {
    "robot": stage_robot,
    "sim": stage_sim,
    "data": stage_data,
    "etc": stage_etc,
    "train": stage_train,
    "export": stage_export,
    "policy": stage_policy,
    "ros": stage_ros,
}


def _write_report(ctx: DemoContext) -> None:
    atomic_write_json(ctx.out / "report.json", {k: v for k, v in ctx.results.items() if not k.startswith("_")})
    atomic_write_text(ctx.out / "report.md", "# etc-vla demo report\n\n" + "\n".join(ctx.md) + "\n")


def run_demo(out: Path, stages: list[str], episodes: int = 24, workers: int = 2, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, episodes=episodes, workers=workers, seed=seed)
    ctx.results["ok"] = True
    for name in stages:
        fn = STAGE_FUNCS.get(name)
        if fn is None:
            print(f"\n== {name} == (not part of the demo yet)")
            continue
        t0 = time.perf_counter()
        try:
            r, lines = fn(ctx)
            r["stage_s"] = round(time.perf_counter() - t0, 1)
            ctx.results[name] = r
            lines = lines + [f"({r['stage_s']} s)"]
        except Exception as e:  # a failing stage is reported, and the demo exits non-zero
            ctx.results["ok"] = False
            ctx.results[name] = {"error": f"{type(e).__name__}: {e}"}
            lines = [f"FAILED: {type(e).__name__}: {e}"]
            traceback.print_exc()
        _print_section(name, lines)
        ctx.md.append(f"## {name}\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
        _write_report(ctx)
    return ctx.results
