"""Several seeds of `etc-vla distill sdm` in one table: `etc-vla distill summary --runs DIR ... --out DIR`.

Each run's report.json (etc_training/distill/pipeline.py) holds the closed-loop episodes of every variant on the
same scenes (episode i of split k = reset(seed + 1000 k + i) for every variant), so the comparison is paired:
per split, the successes of each variant pooled over the seeds (Wilson 95 % interval), the per-seed rates, and the
difference of a variant to the reference (teacher-10) in points with a paired bootstrap 95 % interval over
(seed, scene) pairs. Latency: the reference's median over the variant's median per measurement and seed.

Verdict on the SDM claim ("one step within `tolerance_points` of the teacher's success at `min_speedup` x or more
lower head latency"), per split: reproduced when the pooled difference is >= -tolerance and the head speed-up is
>= min_speedup; not reproduced when the whole difference interval lies below -tolerance or the speed-up is short;
inconclusive otherwise (the interval straddles the tolerance).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.distill.sdm import DistillError
from etc_training.recipe.evaluate import paired_bootstrap

SPEEDUP_KINDS = ("head_torch", "sampler_onnx", "policy_bundle head graph", "policy_torch", "policy_bundle")


def _wilson(k: int, n: int) -> tuple[float, float]:
    from etc_training.recipe.evaluate import wilson_interval

    return wilson_interval(k, n)


def _episodes(report: dict, variant: str, split: str) -> dict[int, bool]:
    per = (report.get("closed_loop") or {}).get(variant, {}).get(split) or {}
    return {int(e["seed"]): bool(e["success"]) for e in per.get("per_episode", [])}


def summarize(runs: Sequence[str | Path], reference: str = "teacher-10", candidate: str = "sdm-1",
              tolerance_points: float = 5.0, min_speedup: float = 6.0) -> dict:
    reports = []
    for r in runs:
        p = Path(r) / "report.json" if Path(r).is_dir() else Path(r)
        if not p.is_file():
            raise DistillError(f"no report.json in {r} (run `etc-vla distill sdm` first)")
        reports.append((str(p.parent), json.loads(p.read_text())))
    variants = list(dict.fromkeys(v for _, rep in reports for v in (rep.get("closed_loop") or {})))
    splits = list(dict.fromkeys(s for _, rep in reports for per in (rep.get("closed_loop") or {}).values()
                                for s in per))
    if not variants:
        raise DistillError("none of the reports has closed-loop episodes (eval.episodes > 0)")
    out: dict[str, Any] = {"runs": [r for r, _ in reports], "reference": reference, "variants": variants,
                           "splits": splits, "success": {}, "difference_points": {}, "speedups": {}}
    for split in splits:
        out["success"][split] = {}
        for v in variants:
            per_seed = [_episodes(rep, v, split) for _, rep in reports]
            k = sum(sum(e.values()) for e in per_seed)
            n = sum(len(e) for e in per_seed)
            out["success"][split][v] = {"successes": k, "episodes": n, "rate": round(k / n, 4) if n else None,
                                        "ci95": _wilson(k, n) if n else None,
                                        "per_seed": [round(sum(e.values()) / len(e), 4) if e else None
                                                     for e in per_seed]}
        out["difference_points"][split] = {}
        for v in variants:
            if v == reference:
                continue
            a, b = [], []
            for _, rep in reports:
                ev, er = _episodes(rep, v, split), _episodes(rep, reference, split)
                common = sorted(set(ev) & set(er))
                a += [ev[s] for s in common]
                b += [er[s] for s in common]
            if not a:
                continue
            lo, hi = paired_bootstrap(np.array(a), np.array(b))
            out["difference_points"][split][v] = {"points": round(100 * float(np.mean(a) - np.mean(b)), 2),
                                                  "ci95_points": [round(100 * lo, 2), round(100 * hi, 2)],
                                                  "pairs": len(a)}
    for kind in SPEEDUP_KINDS:
        vals = [(rep.get("latency") or {}).get("_speedups", {}).get(kind) for _, rep in reports]
        vals = [float(x) for x in vals if x is not None]
        if vals:
            out["speedups"][kind] = {"median": round(float(np.median(vals)), 2),
                                     "per_seed": [round(x, 2) for x in vals]}
    head = out["speedups"].get("policy_bundle head graph") or out["speedups"].get("head_torch") or {}
    out["verdict"] = {}
    for split in splits:
        d = out["difference_points"].get(split, {}).get(candidate)
        if d is None:
            continue
        fast = head.get("median", 0.0) >= min_speedup
        if d["points"] >= -tolerance_points and fast:
            verdict = "reproduced"
        elif d["ci95_points"][1] < -tolerance_points or not fast:
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        out["verdict"][split] = {"verdict": verdict, "difference_points": d["points"],
                                 "ci95_points": d["ci95_points"], "head_speedup": head.get("median"),
                                 "rule": f"{candidate} within {tolerance_points} points of {reference} and head "
                                         f">= {min_speedup}x faster"}
    return out


def summary_markdown(s: dict) -> str:
    L = [f"# SDM one-step vs the teacher over {len(s['runs'])} seeds", "",
         "Runs: " + ", ".join(f"`{r}`" for r in s["runs"]), ""]
    for split in s["splits"]:
        L += [f"## Closed-loop success, split `{split}`", "",
              "| variant | successes | rate | 95 % CI (Wilson) | per seed | vs " + s["reference"] + " (points, paired "
              "bootstrap 95 % CI) |", "| --- | --- | --- | --- | --- | --- |"]
        for v, r in s["success"][split].items():
            d = s["difference_points"].get(split, {}).get(v)
            diff = f"{d['points']:+.1f} [{d['ci95_points'][0]:+.1f}, {d['ci95_points'][1]:+.1f}]" if d else "-"
            ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "-"
            L.append(f"| {v} | {r['successes']}/{r['episodes']} | {r['rate']} | {ci} | {r['per_seed']} | {diff} |")
        L.append("")
    if s["speedups"]:
        L += ["## Speed-ups of sdm-1 over teacher-10 (median over seeds)", "", "| measurement | median | per seed |",
              "| --- | --- | --- |"]
        L += [f"| {k} | {v['median']}x | {v['per_seed']} |" for k, v in s["speedups"].items()]
        L.append("")
    if s.get("verdict"):
        L += ["## Verdict", ""]
        L += [f"- `{split}`: **{v['verdict']}** ({v['rule']}): {v['difference_points']:+.1f} points "
              f"[{v['ci95_points'][0]:+.1f}, {v['ci95_points'][1]:+.1f}], head {v['head_speedup']}x"
              for split, v in s["verdict"].items()]
    return "\n".join(L).rstrip() + "\n"


def write_summary(runs: Sequence[str | Path], out: str | Path, **kw: Any) -> dict:
    from etc_ros.core.io import atomic_write_json, atomic_write_text

    s = summarize(runs, **kw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", s)
    atomic_write_text(out / "summary.md", summary_markdown(s))
    return s
