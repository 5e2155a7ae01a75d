"""`etc-vla ablate`: the paper's comparison at this scale — the same data, model initialisation and step budget,
several seeds:

    action_only     no Stage 1, no ETC anywhere (actions only in Stages 2 and 3)
    etc_stage2      no Stage 1; ETC co-training in Stage 2 (and the configured Stage-3 ETC mix)
    three_stage     the full recipe: Distribution Bridging + Objective Bridging + Retentive Adaptation
    db_action_only  (optional) Stage 1, then action-only Stages 2/3: with three_stage, the CKA-drift pair of Fig. 3a

budget "stages" (default, as in the paper): every variant makes the same Stage-2 and Stage-3 steps; Stage 1 is
extra. budget "total": variants without Stage 1 add its steps to Stage 2, so all make the same number of optimizer
steps. For each run: held-out action loss / decoded-chunk MSE (val split), ETC answer quality (val ETC),
closed-loop success in the MuJoCo world (train + OOD splits) and the last CKA to the reference model.
Writes OUT/ablation.md (table, mean ± std over seeds), OUT/ablation.json, OUT/ablation.png, OUT/cka_ablation.png.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etc_training.recipe.config import RecipeError, TrainConfig, check_config

VARIANTS = ("action_only", "etc_stage2", "three_stage", "db_action_only")
DEFAULT_VARIANTS = ("action_only", "etc_stage2", "three_stage")


@dataclass
class AblationConfig:
    out: str = "runs/ablate"
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: str = "stages"  # stages | total
    eval_episodes: int = 2  # closed-loop episodes per split and run (0 = skip)
    eval_splits: list[str] = field(default_factory=lambda: ["train", "ood_color"])
    eval_workers: int = 2
    etc_samples: int = 12
    action_samples: int = 32
    max_steps: int = 0


def variant_config(base: TrainConfig, variant: str, budget: str = "stages") -> TrainConfig:
    """The training configuration of one ablation variant (a modified deep copy of `base`)."""
    if variant not in VARIANTS:
        raise RecipeError(f"unknown ablation variant {variant!r}; choose from {list(VARIANTS)}")
    if budget not in ("stages", "total"):
        raise RecipeError(f"budget must be 'stages' or 'total', got {budget!r}")
    cfg = copy.deepcopy(base)
    s1, s2, s3 = cfg.stages.stage1, cfg.stages.stage2, cfg.stages.stage3
    if variant in ("action_only", "etc_stage2"):
        if budget == "total" and s1.enabled:
            s2.steps += s1.steps
        s1.enabled = False
    else:
        s1.enabled = True
    if variant in ("action_only", "db_action_only"):
        for s in (s2, s3):
            s.etc_batch = 0
            s.etc_ratio = 0.0
    return check_config(cfg)


def _mean_std(vals: list) -> tuple[float | None, float | None]:
    v = [float(x) for x in vals if x is not None and np.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def run_ablation(base: TrainConfig, acfg: AblationConfig, progress: bool = True,
                 log=print) -> dict:
    from etc_training.recipe.distributed import set_threads
    from etc_training.recipe.evaluate import EvalConfig, evaluate
    from etc_training.recipe.metrics import read_metrics
    from etc_training.recipe.stages import _quiet_transformers, run_recipe

    say = log or (lambda s: None)
    _quiet_transformers()
    set_threads(base.run.threads)
    out = Path(acfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not acfg.variants or not acfg.seeds:
        raise RecipeError("the ablation needs at least one variant and one seed")
    base = copy.deepcopy(base)
    # same data for every run: generate it once (or use the configured dataset)
    if base.data.episodes is None:
        from etc_training.recipe.data import make_synthetic_data

        eps, etc = make_synthetic_data(out / "data", base.data.synthetic)
        base.data.episodes, base.data.etc = str(eps), str(etc)
    t0 = time.perf_counter()
    runs: list[dict] = []
    for seed in acfg.seeds:
        # the same initial model for every variant of this seed: build it once
        init_dir = out / f"init_seed{seed}"
        seed_cfg = copy.deepcopy(base)
        seed_cfg.seed = int(seed)
        if not seed_cfg.model.init:
            seed_cfg.model.init = str(build_init_policy(seed_cfg, init_dir))
        for v in acfg.variants:
            cfg = variant_config(seed_cfg, v, acfg.budget)
            cfg.out = str(out / v / f"seed{seed}")
            say(f"[ablate] {v} seed {seed} -> {cfg.out}")
            tr = time.perf_counter()
            summ = run_recipe(cfg, progress=progress, log=None)
            if summ.get("status") != "done":
                raise RecipeError(f"{cfg.out}: training did not finish ({summ.get('status')})")
            train_s = time.perf_counter() - tr
            ecfg = EvalConfig(checkpoint=summ["final_policy"], out=str(Path(cfg.out) / "eval"),
                              splits=list(acfg.eval_splits), episodes=acfg.eval_episodes, workers=acfg.eval_workers,
                              seed=1000 + int(seed), max_steps=acfg.max_steps, etc=base.data.etc, etc_splits=["val"],
                              etc_samples=acfg.etc_samples, data=base.data.episodes,
                              data_split=base.data.val_split, action_samples=acfg.action_samples,
                              cameras=list(base.data.cameras) or ["primary"])
            ev = evaluate(ecfg, progress=progress)
            cka_rows = [r for n in ("stage2", "stage3") for r in read_metrics(Path(cfg.out) / n / "metrics.jsonl")
                        if isinstance(r.get("cka"), dict)]
            cl = (ev.get("closed_loop") or {}).get("per_split", {})
            runs.append({
                "variant": v, "seed": int(seed), "out": cfg.out, "train_s": round(train_s, 1),
                "steps": sum(s.steps for _, s in cfg.stages.items() if s.enabled),
                "val_action_loss": (ev.get("actions") or {}).get("action_loss"),
                "val_action_accuracy": (ev.get("actions") or {}).get("action_accuracy"),
                "val_chunk_mse": (ev.get("actions") or {}).get("chunk_mse_norm"),
                "etc_parse_rate": ((ev.get("etc") or {}).get("summary") or {}).get("parse_rate"),
                "etc_point_error_px": ((ev.get("etc") or {}).get("summary") or {}).get("point_error_px"),
                "success": {s: d["success_rate"] for s, d in cl.items()},
                "cka_final": cka_rows[-1]["cka_mean"] if cka_rows else None,
                "cka_reference": cka_rows[-1].get("cka_reference") if cka_rows else None,
                "cka_curve": [(r["global_step"], r["cka_mean"]) for r in cka_rows],
            })
            _write(out, acfg, runs, time.perf_counter() - t0)
    res = _write(out, acfg, runs, time.perf_counter() - t0)
    say(f"[ablate] done in {res['seconds']} s: {out / 'ablation.md'}")
    return res


def build_init_policy(cfg: TrainConfig, init_dir: Path) -> Path:
    """The starting policy of one seed (what run_recipe would build as out/init)."""
    from etc_training.recipe.distributed import DistInfo
    from etc_training.recipe.stages import RecipeContext

    if (init_dir / "vla.json").is_file():
        return init_dir
    c = copy.deepcopy(cfg)
    for _, s in c.stages.items():  # norm stats / FAST over every action split any variant uses
        s.enabled = True
    ctx = RecipeContext(c, DistInfo(), init_dir.parent / (init_dir.name + "_work"))
    ctx.prepare_data()
    built = ctx.base_policy_dir()
    import shutil

    if init_dir.exists():
        shutil.rmtree(init_dir)
    shutil.move(str(built), str(init_dir))
    shutil.rmtree(ctx.out, ignore_errors=True)
    return init_dir


def _table(acfg: AblationConfig, runs: list[dict]) -> tuple[list[str], list[dict]]:
    splits = list(acfg.eval_splits) if acfg.eval_episodes > 0 else []
    rows = []
    for v in acfg.variants:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        row: dict[str, Any] = {"variant": v, "seeds": len(rs), "steps": rs[0]["steps"]}
        for k in ("val_action_loss", "val_action_accuracy", "val_chunk_mse", "etc_parse_rate", "etc_point_error_px",
                  "cka_final"):
            row[k] = _mean_std([r.get(k) for r in rs])
        for s in splits:
            row[f"success:{s}"] = _mean_std([r["success"].get(s) for r in rs])
        rows.append(row)
    return splits, rows


def _cell(ms, nd=3) -> str:
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{nd}f} ± {s:.{nd}f}"


def _write(out: Path, acfg: AblationConfig, runs: list[dict], seconds: float) -> dict:
    from etc_ros.core.io import atomic_write_json, atomic_write_text

    splits, rows = _table(acfg, runs)
    head = ["variant", "seeds", "steps", "val action loss ↓", "val chunk MSE ↓", "val token acc ↑",
            "ETC parse rate ↑", "ETC point err px ↓", "final CKA ↑"] + [f"success {s} ↑" for s in splits]
    md = ["# ETC ablation at tiny scale", "",
          f"Same data, same initial model per seed, budget `{acfg.budget}`; mean ± std over seeds "
          f"{sorted({r['seed'] for r in runs})}. CKA: mean linear CKA over decoder layers to the reference "
          "(Stage-1 model when the variant has Stage 1, else its starting model).", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], str(r["seeds"]), str(r["steps"]), _cell(r["val_action_loss"]), _cell(r["val_chunk_mse"]),
                 _cell(r["val_action_accuracy"]), _cell(r["etc_parse_rate"]), _cell(r["etc_point_error_px"], 1),
                 _cell(r["cka_final"])] + [_cell(r[f"success:{s}"], 2) for s in splits]
        md.append("| " + " | ".join(cells) + " |")
    md += ["", f"Per run: `ablation.json`. Plots: `ablation.png`, `cka_ablation.png`. Total {seconds:.0f} s.", ""]
    atomic_write_text(out / "ablation.md", "\n".join(md))
    res = {"config": {k: getattr(acfg, k) for k in acfg.__dataclass_fields__}, "runs": runs,
           "table": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows],
           "seconds": round(seconds, 1)}
    atomic_write_json(out / "ablation.json", res)
    try:
        _plot(out, acfg, rows, runs, splits)
    except Exception as e:  # noqa: BLE001 - plots must not lose the table
        res["plot_error"] = str(e)
    return res


def _plot(out: Path, acfg: AblationConfig, rows: list[dict], runs: list[dict], splits: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("val_action_loss", "val action loss"), ("val_chunk_mse", "val chunk MSE (norm.)")] + \
              [(f"success:{s}", f"success {s}") for s in splits]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4))
    axes = np.atleast_1d(axes)
    names = [r["variant"] for r in rows]
    for ax, (k, label) in zip(axes, metrics):
        m = [r[k][0] if r[k][0] is not None else 0.0 for r in rows]
        s = [r[k][1] or 0.0 for r in rows]
        ax.bar(range(len(rows)), m, yerr=s, capsize=3, color=["#999999", "#4C72B0", "#DD8452", "#55A868"][:len(rows)])
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for v in acfg.variants:
        curves = [r["cka_curve"] for r in runs if r["variant"] == v and r["cka_curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = [c[0] for c in curves[0][:n]]
        ys = np.mean([[c[1] for c in cur[:n]] for cur in curves], axis=0)
        ax.plot(xs, ys, marker="o", ms=3, label=v)
    ax.set_xlabel("optimizer step (stages 2-3)")
    ax.set_ylabel("mean linear CKA to reference")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Representation drift (cf. paper Fig. 3a)")
    fig.tight_layout()
    fig.savefig(out / "cka_ablation.png", dpi=110)
    plt.close(fig)


def load_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
