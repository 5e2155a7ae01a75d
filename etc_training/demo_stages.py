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


STAGE_FUNCS: dict[str, Callable[[DemoContext], tuple[dict, list[str]]]] = {
    "robot": stage_robot,
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
