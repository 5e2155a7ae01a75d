"""`etc-vla train --config FILE [key=value ...]`: the three-stage ETC recipe (Distribution Bridging, Objective
Bridging, Retentive Adaptation) in one command; each stage initialises from the previous one.

Re-running the same command resumes (finished stages are skipped, an unfinished one continues from its latest
checkpoint). Scale out with `torchrun --nproc_per_node N -m etc_training.cli train --config ...` (DDP; set
run.distributed=fsdp for models that do not fit one device). See docs/recipe.md.
"""
from __future__ import annotations

import argparse


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="recipe YAML (default: config/train_tiny.yaml)")
    p.add_argument("--out", default=None, help="output directory (same as out=DIR)")
    p.add_argument("--fresh", action="store_true", help="ignore what is in --out and start over (run.resume=never)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. stages.stage2.steps=50")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime

    import yaml

    from etc_ros.core.config import to_dict
    from etc_ros.core.paths import config_path
    from etc_training.recipe.config import load_train_config

    path = args.config or str(config_path("train_tiny.yaml"))
    ov = list(args.overrides)
    if args.out:
        ov.append(f"out={args.out}")
    if args.fresh:
        ov.append("run.resume=never")
    cfg = load_train_config(path, ov)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from etc_training.recipe.stages import run_recipe

    summary = run_recipe(cfg, progress=not args.no_progress)
    if summary.get("status") == "done":
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({k: summary[k] for k in ("final_policy", "seconds", "world") if k in summary}))
        return 0
    return 3  # interrupted on purpose (run.stop_after): run the same command again to resume
