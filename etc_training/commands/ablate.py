"""`etc-vla ablate --config FILE [--seeds 0,1,2] [--variants ...] [key=value ...]`: action-only vs ETC in
Stage 2 vs the full three-stage recipe, same data / initial model / step budget, several seeds; writes a
Markdown table (OUT/ablation.md), OUT/ablation.json and plots. See etc_training/recipe/ablate.py."""
from __future__ import annotations

import argparse


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="recipe YAML (default: config/train_tiny.yaml)")
    p.add_argument("--out", default="runs/ablate")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--variants", default="action_only,etc_stage2,three_stage",
                   help="comma-separated: action_only, etc_stage2, three_stage, db_action_only")
    p.add_argument("--budget", default="stages", choices=["stages", "total"],
                   help="stages: same Stage-2/3 steps (Stage 1 extra); total: same number of optimizer steps")
    p.add_argument("--episodes", type=int, default=2, help="closed-loop episodes per split and run (0 = skip)")
    p.add_argument("--splits", default="train,ood_color", help="sim splits for closed-loop success")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="closed-loop steps per episode (0 = sim default)")
    p.add_argument("--etc-samples", type=int, default=12)
    p.add_argument("--action-samples", type=int, default=32)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe config overrides")
    p.set_defaults(func=run)


def run(args) -> int:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    from etc_ros.core.errors import UserError
    from etc_ros.core.paths import config_path
    from etc_training.recipe.ablate import AblationConfig, run_ablation
    from etc_training.recipe.config import load_train_config

    base = load_train_config(args.config or str(config_path("train_tiny.yaml")), list(args.overrides))
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    acfg = AblationConfig(out=args.out, variants=_csv(args.variants), seeds=seeds, budget=args.budget,
                          eval_episodes=args.episodes, eval_splits=_csv(args.splits), eval_workers=args.workers,
                          etc_samples=args.etc_samples, action_samples=args.action_samples, max_steps=args.max_steps)
    from etc_training.recipe.ablate import VARIANTS

    bad = [v for v in acfg.variants if v not in VARIANTS]
    if bad:
        raise UserError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    res = run_ablation(base, acfg, progress=not args.no_progress)
    print(open(f"{args.out}/ablation.md").read())
    return 0 if res.get("runs") else 1
