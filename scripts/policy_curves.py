#!/usr/bin/env python3
"""Learning curves of a policy run: training loss (metrics.jsonl) and closed-loop success / first-close miss of the
checkpoints evaluated with `etc-vla eval` (eval.json files), in one PNG + a JSON summary.

    python scripts/policy_curves.py --metrics runs/policy_pickup/stage2/metrics.jsonl \
        --eval 500=runs/eval/p500 --eval 1000=runs/eval/p1000 ... --out docs/results/policy/pickup
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--eval", action="append", default=[], help="STEP=EVAL_DIR (its eval.json)")
    ap.add_argument("--out", required=True, help="output prefix (writes PREFIX_curves.png / .json)")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    rows = [json.loads(ln) for ln in Path(a.metrics).read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "step" in r and "action_loss" in r]
    evals = []
    for item in a.eval:
        step, d = item.split("=", 1)
        res = json.loads((Path(d) / "eval.json").read_text())
        v = res["closed_loop"]["per_split"]["train"]
        evals.append({"step": int(step), "success_rate": v["success_rate"], "ci95": v["ci95"],
                      "episodes": v["episodes"],
                      "median_miss_mm": (None if v["failure_mode"]["median_horizontal_miss_m"] is None
                                         else 1000 * v["failure_mode"]["median_horizontal_miss_m"])})
    evals.sort(key=lambda e: e["step"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    st = [r["step"] for r in rows]
    ax[0].plot(st, [r.get("action_l1", r["action_loss"]) for r in rows], label="action L1 (normalized)")
    if any("grounding_loss" in r for r in rows):
        ax[0].plot(st, [r.get("grounding_loss", float("nan")) for r in rows], label="grounding L1")
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("training loss")
    if evals:
        xs = [e["step"] for e in evals]
        ys = [e["success_rate"] for e in evals]
        lo = [e["success_rate"] - e["ci95"][0] for e in evals]
        hi = [e["ci95"][1] - e["success_rate"] for e in evals]
        ax[1].errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3)
        ax[1].set_ylim(0, 1)
        ax[1].set_xlabel("step")
        ax[1].set_title(f"closed-loop success ({evals[0]['episodes']} new scenes, Wilson 95%)")
        ax[2].plot(xs, [e["median_miss_mm"] for e in evals], marker="o")
        ax[2].set_xlabel("step")
        ax[2].set_title("median horizontal miss at first close [mm]")
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out) + "_curves.png", dpi=110)
    Path(str(out) + "_curves.json").write_text(json.dumps({"evals": evals, "final_loss": rows[-1] if rows else None},
                                                          indent=1) + "\n")
    print(str(out) + "_curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
