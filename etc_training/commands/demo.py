"""`etc-vla demo`: the end-to-end demo on the embedded default (MuJoCo WidowX world + tiny VLA).

Stages (each writes under OUT/<stage>/ and adds a section to OUT/report.md + OUT/report.json):
  robot   load the URDF, FK vs PoE agreement, IK round trips
  sim     scripted-expert demonstrations in the MuJoCo world (dataset + GIF), success per task
  data    dataset validation and a round trip read
  etc     ETC data built from the episodes, validated, overlays
  train   the three-stage recipe at tiny scale
  export  policy bundle (ONNX) + parity
  policy  the shipped policy bundle (policies/sim_pickup, `make policy`) on new seeded scenes (eval rollout)
  ros     the ROS 2 graph over real DDS, closed loop with the sim arm: the pipeline's bundle, then the shipped
          policy on the same scenes as the policy stage
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

STAGES = ["robot", "sim", "data", "etc", "train", "export", "policy", "ros"]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    p.add_argument("--episodes", type=int, default=24, help="expert episodes to collect")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from etc_training.demo_stages import run_demo

    out = Path(args.out)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from etc_ros.core.errors import UserError

        raise UserError(f"unknown stage(s) {unknown}; choose from {STAGES}")
    t0 = time.perf_counter()
    report = run_demo(out, stages, episodes=args.episodes, workers=args.workers, seed=args.seed)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"\n[demo] done in {report['total_s']} s — report: {out / 'report.md'}")
    return 0 if report.get("ok", True) else 1
