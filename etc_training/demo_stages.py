"""The demo's stages (see etc_training/commands/demo.py). Each stage returns a dict of figures and a few
Markdown lines; the report is rewritten after every stage so a person can follow a long run."""
from __future__ import annotations

import json
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
    results: dict = field(default_factory=dict)
    md: list = field(default_factory=list)


def _print_section(name: str, lines: list[str]) -> None:
    print(f"\n== {name} ==")
    for ln in lines:
        print("  " + ln)


def stage_robot(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.core import spec
    from etc_ros.core.kinematics import WidowXKinematics
    from etc_ros.core.paths import urdf_path

    kin = WidowXKinematics.from_urdf()
    rng = np.random.default_rng(ctx.seed)
    qs = kin.random_configurations(200, rng, margin=0.2) if "margin" in kin.random_configurations.__code__.co_varnames \
        else kin.random_configurations(200, rng)
    fk_err = max(float(np.abs(kin.fk(q) - kin.fk_poe(q)).max()) for q in qs)
    ok, pos_errs, t_ik = 0, [], []
    for q in qs:
        T = kin.fk(q)
        t0 = time.perf_counter()
        res = kin.ik(T, q_seed=spec.READY_POSE)
        t_ik.append(time.perf_counter() - t0)
        if res.success:
            ok += 1
            pos_errs.append(float(np.linalg.norm(kin.fk(res.q)[:3, 3] - T[:3, 3])))
    zero = kin.fk(np.zeros(6))[:3, 3]
    ready = kin.fk(spec.READY_POSE)[:3, 3]
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


def stage_sim(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.data import DatasetReader
    from etc_training.sim.collect import collect
    from etc_training.sim.config import SimConfig
    from etc_training.sim.video import save_episode_gif

    data = ctx.out / "data"
    res = {}
    for split, n in (("train", ctx.episodes), ("ood_color", max(4, ctx.episodes // 4))):
        d = data / split
        if d.exists():
            import shutil

            shutil.rmtree(d)  # the demo always starts from fresh data
        cfg = SimConfig(split=split, episodes=n, workers=ctx.workers, seed=ctx.seed)
        res[split] = collect(cfg, d, progress=True)
    reader = DatasetReader(data / "train")
    gif = ctx.out / "expert_episode.gif"
    save_episode_gif(reader.load_episode(0), gif)
    tr = res["train"]
    fams = ", ".join(f"{f} {v['success']}/{v['episodes']}" for f, v in tr["expert_success"].items())
    lines = [
        f"scripted expert, train split: {tr['expert_success_rate']:.0%} success over {tr['attempts']} attempts ({fams})",
        f"collected {tr['episodes']} train episodes ({tr['frames']} frames, {tr['frames_per_s']} frames/s with "
        f"{tr['workers']} workers) + {res['ood_color']['episodes']} ood_color episodes -> {data}",
        f"expert episode video: {gif}",
    ]
    return {"collect": res, "gif": str(gif), "dataset": str(data)}, lines


def stage_data(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_ros.data import DatasetReader, validate_dataset

    d = ctx.out / "data" / "train"
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
        f"read back: {res['read_frames_per_s']} frames/s sequential, {res['random_frame_per_s']} frames/s random access",
    ]
    if errors:
        raise RuntimeError("dataset validation failed: " + "; ".join(errors[:5]))
    return res, lines


def stage_etc(ctx: DemoContext) -> tuple[dict, list[str]]:
    from etc_training.etc import build_etc, validate_etc, write_overlays

    etc_root = ctx.out / "etc"
    res = {}
    for split in ("train", "ood_color"):
        res[split] = build_etc(ctx.out / "data" / split, etc_root / split, {"stride": 2}, progress=True,
                               write_extras=False)
        v = validate_etc(etc_root / split)
        res[split + "_validation_errors"] = v["n_errors"]
    overlays = write_overlays(etc_root / "train", ctx.out / "etc_overlays", n=8, seed=ctx.seed)
    tr = res["train"]
    n_train = tr.get("n_samples", tr.get("total"))
    lines = [
        f"ETC from train episodes: {n_train} samples {tr.get('by_category', tr.get('categories', ''))}, "
        f"{res['train_validation_errors']} validation errors",
        f"OOD ETC from ood_color episodes: {res['ood_color'].get('n_samples', res['ood_color'].get('total'))} samples, "
        f"{res['ood_color_validation_errors']} validation errors",
        f"overlays (points, boxes, trajectories drawn on frames): {len(overlays)} PNGs in {ctx.out / 'etc_overlays'}",
    ]
    if res["train_validation_errors"] or res["ood_color_validation_errors"]:
        raise RuntimeError("ETC validation errors")
    return res, lines


STAGE_FUNCS: dict[str, Callable[[DemoContext], tuple[dict, list[str]]]] = {
    "robot": stage_robot,
    "sim": stage_sim,
    "data": stage_data,
    "etc": stage_etc,
}


def _write_report(ctx: DemoContext) -> None:
    atomic_write_json(ctx.out / "report.json", ctx.results)
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
