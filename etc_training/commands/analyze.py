"""`etc-vla analyze`: what a trained policy does inside, measured in the MuJoCo world.

    etc-vla analyze attention --checkpoint DIR --out DIR [--splits train,ood_color,...] [--scenes 50] [--seed S]
                              [--overlays 8] [--family pick_up] [--outcomes EVAL_JSON,...] [--no-swap]
        The regression head's instruction-conditioned spatial attention over the image patches (the attention of
        the action prediction, ETC paper Fig. 4b) on the first observation of N seeded scenes per split: its mass
        on the target object's box and on the distractors' boxes against the boxes' area (uniform attention), with
        bootstrap intervals, and the instruction-swap control (the same frame, the instruction naming a distractor);
        OUT/report.json, OUT/report.md, OUT/scenes.jsonl, OUT/overlays/*.png (etc_training/analysis/attention.py).
    etc-vla analyze attention-compare --runs LABEL=DIR,DIR,... [--runs ...] --reference LABEL --out DIR
        Several policies' analyses (one DIR per training seed, made on the same scenes) against a reference: target
        / distractor ratios pooled over seeds and the paired target-ratio difference with a bootstrap interval.
"""
from __future__ import annotations

import argparse


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="analyze_command", metavar="ANALYSIS")
    a = sub.add_parser("attention", help="spatial attention of the action prediction vs target / distractor boxes")
    a.add_argument("--checkpoint", required=True, help="policy directory (a regression head with spatial_heads > 0)")
    a.add_argument("--out", required=True, help="output directory (e.g. runs/analyze_attention)")
    a.add_argument("--splits", default="all", help="comma-separated sim splits, or 'all' (train, ood_color, "
                   "ood_combo, ood_distractor, ood_phrase; a split the family cannot make is skipped)")
    a.add_argument("--scenes", type=int, default=50, help="seeded scenes per split")
    a.add_argument("--seed", type=int, default=0, help="scene i uses reset(seed=seed*100000+i), as etc-vla eval")
    a.add_argument("--overlays", type=int, default=8, help="PNG overlays of the first K scenes per split")
    a.add_argument("--family", default="pick_up", help="task family of the scenes")
    a.add_argument("--camera", default="primary", help="camera view the policy reads")
    a.add_argument("--outcomes", default="", help="comma-separated `etc-vla eval` reports (eval.json) of the same "
                   "checkpoint and --seed: split the figures by closed-loop success")
    a.add_argument("--no-swap", action="store_true", help="skip the instruction-swap control (the same frame with "
                   "the instruction naming a distractor)")
    a.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95 %% intervals")
    a.add_argument("--threads", type=int, default=1, help="torch threads")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=_attention)
    c = sub.add_parser("attention-compare", help="several policies' attention analyses against a reference, "
                       "paired on the same scenes")
    c.add_argument("--runs", action="append", required=True, metavar="LABEL=DIR[,DIR...]",
                   help="a policy and its `analyze attention` outputs, one per training seed (repeat per policy)")
    c.add_argument("--reference", required=True, help="the LABEL the others are compared with")
    c.add_argument("--out", required=True, help="output directory: compare.json, compare.md")
    c.add_argument("--bootstrap", type=int, default=2000)
    c.set_defaults(func=_attention_compare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _attention_compare(args) -> int:
    from pathlib import Path

    from etc_ros.core.errors import UserError
    from etc_ros.core.io import atomic_write_json, atomic_write_text
    from etc_training.analysis.attention import compare_attention, compare_markdown

    groups = {}
    for spec in args.runs:
        label, sep, dirs = spec.partition("=")
        if not sep or not label or not _csv(dirs):
            raise UserError(f"--runs {spec!r}: expected LABEL=DIR[,DIR...]")
        groups[label] = _csv(dirs)
    cmp = compare_attention(groups, args.reference, resamples=args.bootstrap)
    out = Path(args.out)
    atomic_write_json(out / "compare.json", cmp)
    atomic_write_text(out / "compare.md", compare_markdown(cmp))
    print(compare_markdown(cmp))
    return 0


def _attention(args) -> int:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    import json

    import torch

    from etc_training.analysis.attention import analyze_attention
    from etc_training.sim.splits import SPLITS

    torch.set_num_threads(max(1, int(args.threads)))
    splits = _csv(args.splits)
    if splits == ["all"]:
        splits = list(SPLITS)
    rep = analyze_attention(args.checkpoint, args.out, splits, scenes=args.scenes, seed=args.seed,
                            overlays=args.overlays, family=args.family, camera=args.camera,
                            outcomes=_csv(args.outcomes), resamples=args.bootstrap, swap=not args.no_swap,
                            progress=not args.no_progress)
    brief = {"out": args.out, "seconds": rep["seconds"], "skipped_splits": rep["skipped_splits"]}
    for split, v in rep["splits"].items():
        m = v["summary"].get("mean_over_heads")
        if m:
            brief[split] = {"n": v["summary"]["n"], "target_mass": m["target_mass"], "target_ratio": m["target_ratio"],
                            "distractor_mass": m["distractor_mass"], "distractor_ratio": m["distractor_ratio"]}
    print(json.dumps(brief, indent=1))
    return 0
