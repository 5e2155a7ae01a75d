"""`etc-vla distill`: one-step distillation of the continuous (diffusion) action head.

    etc-vla distill sdm --checkpoint DIR --out DIR [--config FILE] [--data DIR] [--heldout DIR] [key=value ...]
        SDM distillation (generator G, frozen teacher F, dynamic teacher D) of a policy trained with
        model.head=diffusion (or both); writes OUT/student (the one-step policy checkpoint), OUT/report.{md,json}
        (teacher-10 / teacher-1 / SDM-1 on held-out demonstrations, closed loop, latency) and the ONNX head graphs.
    etc-vla distill report --checkpoint DIR --out DIR [--config FILE] [--heldout DIR] [key=value ...]
        re-run only the comparison for an existing OUT.
    etc-vla distill teacher --checkpoint REGRESSION_POLICY --data DIR --out DIR [teacher.steps=...]
        a diffusion teacher on a working regression policy (its backbone and condition frozen, a denoiser fitted
        on cached conditions): OUT/teacher, then `etc-vla distill sdm --checkpoint OUT/teacher ...`.
    etc-vla distill summary --runs DIR [DIR ...] --out DIR
        several seeds' reports in one table: pooled success per variant, paired differences to teacher-10, speed-ups.

Settings: config/distill_sdm.yaml (etc_training/distill/config.py), then key=value overrides
(e.g. sdm.steps=500 eval.episodes=4 consistency.enabled=true), then the flags.
"""
from __future__ import annotations

import argparse
import json


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="teacher policy checkpoint (diffusion or both head)")
    p.add_argument("--out", required=True, help="output directory (e.g. runs/distill_sdm)")
    p.add_argument("--config", default=None, help="YAML config (default: config/distill_sdm.yaml)")
    p.add_argument("--data", default=None, help="episode dataset to distill on (data.episodes)")
    p.add_argument("--heldout", default=None, help="held-out demonstrations for the action error (eval.heldout)")
    p.add_argument("--no-eval", action="store_true", help="distill only (no report)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", default=[], help="key=value config overrides")


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="distill_command", metavar="METHOD")
    s = sub.add_parser("sdm", help="SDM one-step distillation of the diffusion head + comparison report")
    _common(s)
    s.set_defaults(func=_sdm)
    r = sub.add_parser("report", help="re-run the teacher / student comparison of an existing distillation")
    _common(r)
    r.set_defaults(func=_report)
    t = sub.add_parser("teacher", help="fit a diffusion teacher on a trained regression policy's frozen condition")
    _common(t)
    t.set_defaults(func=_teacher)
    m = sub.add_parser("summary", help="several seeds' distill reports in one table (paired, pooled, verdict)")
    m.add_argument("--runs", nargs="+", required=True, help="distill output directories (each with report.json)")
    m.add_argument("--out", required=True, help="writes summary.json and summary.md here")
    m.set_defaults(func=_summary_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _load(args):
    from pathlib import Path

    from etc_ros.core.paths import config_path
    from etc_training.distill.config import check_distill_config, load_distill_config

    path = args.config
    if path is None:
        default = config_path("distill_sdm.yaml")
        path = default if Path(default).is_file() else None
    cfg = load_distill_config(path, list(args.overrides or []))
    cfg.checkpoint = args.checkpoint
    cfg.out = args.out
    if args.data is not None:
        cfg.data.episodes = args.data
    if args.heldout is not None:
        cfg.eval.heldout = args.heldout
    if args.no_eval:
        cfg.eval.enabled = False
    return check_distill_config(cfg)


def _quiet() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass


def _summary(res: dict) -> dict:
    out = {"seconds": res.get("seconds"), "student": (res.get("setup") or {}).get("student")}
    lat = res.get("latency") or {}
    if lat.get("_speedups"):
        out["speedups_vs_teacher10"] = {k: round(v, 2) for k, v in lat["_speedups"].items()}
    cl = res.get("closed_loop") or {}
    out["closed_loop_success"] = {n: {s: r["success_rate"] for s, r in per.items()} for n, per in cl.items()}
    return out


def _sdm(args) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    from etc_training.distill.pipeline import run_distill

    cfg = _load(args)
    _quiet()
    res = run_distill(cfg, progress=not args.no_progress)
    print(json.dumps(_summary(res), indent=2))
    return 0


def _report(args) -> int:
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    from etc_training.distill.pipeline import run_report

    cfg = _load(args)
    _quiet()
    res = run_report(cfg, progress=not args.no_progress)
    print(json.dumps(_summary(res), indent=2))
    return 0


def _teacher(args) -> int:
    from etc_training.distill.teacher import run_teacher

    cfg = _load(args)
    _quiet()
    res = run_teacher(cfg, progress=not args.no_progress)
    print(json.dumps({k: res[k] for k in ("teacher", "frames", "fit_seconds", "loss_first", "loss_last_smooth",
                                          "seconds")}, indent=2))
    return 0


def _summary_cmd(args) -> int:
    from etc_training.distill.summary import write_summary

    s = write_summary(args.runs, args.out)
    print(json.dumps(s.get("verdict", {}), indent=2))
    return 0
