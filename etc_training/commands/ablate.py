"""`etc-vla ablate --config FILE [--seeds 0,1,2] [--variants ...] [key=value ...]`: action-only vs ETC in
Stage 2 vs the full three-stage recipe (vs the three-stage recipe with OOD ETC in Stage 3, vs each ETC category
alone), same data / initial model / step budget, several seeds; writes a Markdown table (OUT/ablation.md),
OUT/ablation.json and plots. See etc_training/recipe/ablate.py."""
from __future__ import annotations

import argparse


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="recipe YAML (default: config/train_tiny.yaml)")
    p.add_argument("--out", default="runs/ablate")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--variants", default="action_only,etc_stage2,three_stage",
                   help="comma-separated: action_only, etc_stage2, three_stage, three_stage_ood, db_action_only, "
                        "etc_scene_grounding, etc_task_oriented, etc_action_planning, s3_action_only, s3_etc, "
                        "s3_etc_ood, s3_etc_scene_grounding, s3_etc_task_oriented, s3_etc_action_planning; "
                        "shorthands: pathway (the first four), categories (the three etc_<category>), "
                        "retentive (s3_action_only, s3_etc, s3_etc_ood: Stage 3 only, from model.init), midtrain "
                        "(s3_action_only + mt_learned, mt_random, mt_distance: mid-training on a selection, then "
                        "s3_action_only's Stage 3), retentive_categories (s3_action_only, s3_etc and the three "
                        "s3_etc_<category>)")
    p.add_argument("--budget", default="stages", choices=["stages", "total"],
                   help="stages: same Stage-2/3 steps (Stage 1 extra); total: same number of optimizer steps")
    p.add_argument("--episodes", type=int, default=2, help="closed-loop episodes per split and run (0 = skip)")
    p.add_argument("--splits", default="train,ood_color",
                   help="sim splits for closed-loop success, comma-separated, or 'all' (train, ood_color, ood_combo, "
                        "ood_distractor, ood_phrase); a split the families cannot make is skipped and listed")
    p.add_argument("--family", "--families", dest="families", default="",
                   help="closed-loop task families, comma-separated (e.g. pick_up; default: the sim's mix)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="closed-loop steps per episode (0 = sim default)")
    p.add_argument("--etc-samples", type=int, default=12)
    p.add_argument("--action-samples", type=int, default=32)
    p.add_argument("--ood-etc", default=None,
                   help="three_stage_ood: ETC directory of OOD scenes whose actions no variant trains on "
                        "(default: data.etc)")
    p.add_argument("--ood-etc-splits", default="",
                   help="three_stage_ood: its splits, comma-separated (default: every split named ood*)")
    p.add_argument("--ood-etc-share", type=float, default=0.1,
                   help="three_stage_ood: share of the Stage-3 ETC batch drawn from the OOD ETC (default 0.1)")
    p.add_argument("--etc-eval", default=None, help="ETC directory for the offline ETC quality (default: data.etc)")
    p.add_argument("--etc-eval-splits", default="val", help="its splits (skipped when it has none of them)")
    p.add_argument("--val-data", default=None,
                   help="episode dataset for the held-out action metrics (default: data.episodes)")
    p.add_argument("--val-split", default=None, help="its split (default: data.val_split)")
    p.add_argument("--midtrain-selections", default=None,
                   help="mt_<method>: directory of the mid-training selections <method>.jsonl (`etc-vla midtrain "
                        "report` writes OUT/selection)")
    p.add_argument("--eval-checkpoints", default="",
                   help="success vs fine-tuning step: Stage-3 steps (comma-separated, multiples of "
                        "run.checkpoint_every) whose checkpoints are evaluated on the first split, with step 0 and "
                        "the final policy")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe config overrides")
    p.set_defaults(func=run)


def run(args) -> int:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    from etc_ros.core.errors import UserError
    from etc_ros.core.paths import config_path
    from etc_training.recipe.ablate import VARIANTS, AblationConfig, expand_variants, run_ablation
    from etc_training.recipe.config import load_train_config

    base = load_train_config(args.config or str(config_path("train_tiny.yaml")), list(args.overrides))
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    try:
        checkpoints = [int(s) for s in _csv(args.eval_checkpoints)]
    except ValueError:
        raise UserError(f"--eval-checkpoints must be comma-separated integers, got {args.eval_checkpoints!r}") from None
    acfg = AblationConfig(out=args.out, variants=expand_variants(_csv(args.variants)), seeds=seeds,
                          budget=args.budget, eval_episodes=args.episodes, eval_splits=_csv(args.splits),
                          eval_workers=args.workers, etc_samples=args.etc_samples, action_samples=args.action_samples,
                          max_steps=args.max_steps, families=_csv(args.families), ood_etc=args.ood_etc,
                          ood_etc_splits=_csv(args.ood_etc_splits), ood_etc_share=args.ood_etc_share,
                          etc_eval=args.etc_eval, etc_eval_splits=_csv(args.etc_eval_splits),
                          val_data=args.val_data, val_split=args.val_split,
                          midtrain_selections=args.midtrain_selections, eval_checkpoints=checkpoints)
    bad = [v for v in acfg.variants if v not in VARIANTS]
    if bad:
        raise UserError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)} (or pathway, categories, "
                        "retentive, midtrain)")
    res = run_ablation(base, acfg, progress=not args.no_progress)
    print(open(f"{args.out}/ablation.md").read())
    return 0 if res.get("runs") else 1
