"""`etc-vla eval --checkpoint DIR --split train,ood_color --episodes N`: closed-loop success in the MuJoCo WidowX
world (parallel workers, GIF videos of the first episodes), offline ETC answer quality (--etc DIR) and offline
action quality on held-out episodes (--data DIR). Writes OUT/eval.json and OUT/eval.md."""
from __future__ import annotations

import argparse


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="policy directory (e.g. runs/train_tiny/stage3/final)")
    p.add_argument("--split", default="train", help="comma-separated sim splits, or 'all' "
                   "(train, ood_color, ood_combo, ood_distractor, ood_phrase)")
    p.add_argument("--episodes", type=int, default=4, help="closed-loop episodes per split (0 = skip)")
    p.add_argument("--workers", type=int, default=2, help="parallel episode workers (processes)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses reset(seed=seed*100000+i)")
    p.add_argument("--max-steps", type=int, default=0, help="steps per episode (0 = sim default, 60)")
    p.add_argument("--exec-horizon", type=int, default=5, help="actions executed per predicted chunk")
    p.add_argument("--videos", type=int, default=1, help="GIF videos per split")
    p.add_argument("--cameras", default="primary", help="comma-separated camera views fed to the policy")
    p.add_argument("--etc", default=None, help="ETC directory for offline answer quality")
    p.add_argument("--etc-splits", default="val", help="ETC record splits to score")
    p.add_argument("--etc-samples", type=int, default=24)
    p.add_argument("--data", default=None, help="episode dataset for offline action quality")
    p.add_argument("--data-split", default="val")
    p.add_argument("--action-samples", type=int, default=32)
    p.add_argument("--family", "--families", dest="families", default="",
                   help="comma-separated task families (pick_place, pick_up, push, stack); several are assigned "
                        "round-robin; default: the sim's mix")
    p.add_argument("--seeds-from", default=None,
                   help="memorization check: run the scenes (seed, split, family) of this dataset's first "
                        "--episodes episodes instead of new seeded scenes")
    p.add_argument("--rollout", default="direct", choices=["direct", "executor"],
                   help="direct: each action is one 5 Hz sim step (the world waits for inference); executor: the "
                        "ROS graph's safety executor at 50 Hz with config/ros_bringup.yaml's settings, in sim time")
    p.add_argument("--latency", type=float, default=0.0,
                   help="rollout executor: seconds from observation to chunk (the arm keeps moving)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--out", default="runs/eval")
    p.set_defaults(func=run)


def run(args) -> int:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    import json

    from etc_training.recipe.evaluate import EvalConfig, evaluate

    splits = _csv(args.split)
    if splits == ["all"]:
        from etc_training.sim.splits import SPLITS

        splits = list(SPLITS)
    cfg = EvalConfig(checkpoint=args.checkpoint, out=args.out, splits=splits, episodes=args.episodes,
                     workers=args.workers, seed=args.seed, max_steps=args.max_steps, exec_horizon=args.exec_horizon,
                     videos=args.videos, cameras=_csv(args.cameras), etc=args.etc, etc_splits=_csv(args.etc_splits),
                     etc_samples=args.etc_samples, data=args.data, data_split=args.data_split,
                     action_samples=args.action_samples, threads=args.threads, families=_csv(args.families),
                     seeds_from=args.seeds_from, rollout=args.rollout, latency_s=args.latency)
    res = evaluate(cfg)
    brief = {"out": args.out, "seconds": res.get("seconds")}
    if "closed_loop" in res:
        brief["success_rate"] = {s: v["success_rate"] for s, v in res["closed_loop"]["per_split"].items()}
        brief["ci95"] = {s: v["ci95"] for s, v in res["closed_loop"]["per_split"].items()}
        brief["failure_mode"] = {s: v["failure_mode"] for s, v in res["closed_loop"]["per_split"].items()}
    if "etc" in res:
        brief["etc"] = {k: v for k, v in res["etc"]["summary"].items() if k != "per_subtype"}
    if "actions" in res:
        brief["actions"] = res["actions"]
    print(json.dumps(brief, indent=1))
    return 0
