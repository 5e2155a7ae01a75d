"""`etc-vla distill sdm`: the whole run.

1. load the teacher policy (diffusion or both head), freeze it;
2. cache the prefix conditions of the distillation frames once (OUT/cache/cond_bank.pt);
3. SDM: G, F, D from the teacher denoiser; metrics to OUT/sdm_metrics.jsonl;
   the student checkpoint OUT/student (the teacher with G in the head, sampler "onestep");
4. optionally the consistency-distilled baseline (OUT/cd_student);
5. the report (OUT/report.json + OUT/report.md): held-out action error, closed-loop success (ID / OOD),
   head latency (torch and ONNX single-pass graphs) and end-to-end policy latency.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from etc_ros.core import spec as robot_spec
from etc_training.distill.config import DistillConfig
from etc_training.distill.sdm import DistillError

STUDENT_DIR = "student"
CD_DIR = "cd_student"


def _machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _first_last(hist: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        vals = [r[k] for r in hist if k in r]
        if vals:
            out[k] = (vals[0], vals[-1])
    return out


def run_distill(cfg: DistillConfig, progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    from etc_ros.core.config import save_config
    from etc_training.distill.consistency import CDConfig, ConsistencyDistiller
    from etc_training.distill.policy import build_condition_bank, load_teacher, save_student, variant_head
    from etc_training.distill.sdm import SDMDistiller
    from etc_training.models.heads.hybrid import diffusion_part

    log = log or (lambda s: None)
    if not cfg.checkpoint:
        raise DistillError("no teacher checkpoint: pass --checkpoint DIR (a policy trained with model.head=diffusion)")
    if not cfg.data.episodes:
        raise DistillError("no distillation data: pass --data DIR or data.episodes=DIR (an episode dataset, e.g. "
                           "from `etc-vla sim collect`)")
    torch.set_num_threads(max(1, int(cfg.run.threads)))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t_all = time.perf_counter()
    policy = load_teacher(cfg.checkpoint, device=cfg.run.device)
    head = diffusion_part(policy.action_head)
    log(f"[distill] teacher {cfg.checkpoint}: head {policy.action_head.name}, DDIM {head.num_inference_steps} "
        f"steps of {head.schedule.num_train_steps}, denoiser {sum(p.numel() for p in head.denoiser.parameters())} "
        "parameters")
    bank = build_condition_bank(policy, cfg.data.episodes, cfg.data.splits, cfg.data.cameras, cfg.data.max_frames,
                                cfg.data.batch, cache=out / "cache" / "cond_bank.pt", checkpoint=cfg.checkpoint,
                                progress=progress and cfg.run.progress)
    log(f"[distill] {len(bank)} frames of {bank.splits}: conditions cached ({bank.seconds} s)")

    # ---------------------------------------------------------------- SDM
    metrics = out / "sdm_metrics.jsonl"
    metrics.unlink(missing_ok=True)
    sdm = SDMDistiller(head.denoiser, head.schedule, cfg.sdm, device=cfg.run.device)
    t0 = time.perf_counter()
    hist = sdm.fit(bank.cond, progress=progress and cfg.run.progress, callback=lambda r: _append_jsonl(metrics, r))
    sdm_s = round(time.perf_counter() - t0, 2)
    log(f"[distill] SDM: {sdm.iteration} iterations ({sdm.generator_updates} generator updates) in {sdm_s} s")
    torch.save(sdm.state_dict(), str(out / "sdm_state.pt"))
    student_head = variant_head(policy, "sdm-1", sdm.G.state_dict())
    meta = {"method": "sdm", "teacher": str(cfg.checkpoint), "iterations": sdm.iteration,
            "generator_updates": sdm.generator_updates, "config": asdict(cfg.sdm), "frames": len(bank),
            "splits": bank.splits}
    student_dir = save_student(policy, student_head, out / STUDENT_DIR, meta)
    log(f"[distill] student -> {student_dir}")
    cd_state = None
    cd_hist: list[dict] = []
    if cfg.consistency.enabled:
        c = cfg.consistency
        cd = ConsistencyDistiller(head.denoiser, head.schedule, CDConfig(
            steps=c.steps, batch_size=c.batch_size, lr=c.lr, warmup=c.warmup, ema_decay=c.ema_decay,
            grad_clip=c.grad_clip, num_inference_steps=c.num_inference_steps, seed=c.seed, log_every=c.log_every),
            device=cfg.run.device)
        t1 = time.perf_counter()
        cd_hist = cd.fit(bank.cond, bank.actions, progress=progress and cfg.run.progress)
        log(f"[distill] consistency baseline: {cd.iteration} iterations in {time.perf_counter() - t1:.1f} s")
        cd_state = cd.S.state_dict()
        save_student(policy, variant_head(policy, "cd-1", cd_state), out / CD_DIR,
                     {"method": "consistency", "teacher": str(cfg.checkpoint), "iterations": cd.iteration})
    res: dict[str, Any] = {
        "setup": {"checkpoint": str(cfg.checkpoint), "student": str(student_dir), "frames": len(bank),
                  "splits": bank.splits, "bank_seconds": bank.seconds, "sdm_steps": sdm.iteration,
                  "generator_updates": sdm.generator_updates, "sdm_seconds": sdm_s, "sdm_config": asdict(cfg.sdm),
                  "machine": _machine()},
        "training": _first_last(hist, ["loss_G", "dm_grad_abs", "loss_D", "sample_abs"]),
    }
    if cd_hist:
        res["training"].update({"loss_CD": (cd_hist[0]["loss_CD"], cd_hist[-1]["loss_CD"])})
    if cfg.eval.enabled:
        res.update(evaluate_variants(cfg, policy, sdm.G.state_dict(), cd_state, progress=progress, log=log))
    res["seconds"] = round(time.perf_counter() - t_all, 2)
    write_report(out, res)
    log(f"[distill] report -> {out / 'report.md'}")
    return res


def write_report(out: Path, res: dict) -> None:
    from etc_ros.core.io import atomic_write_json, atomic_write_text
    from etc_training.distill.report import report_markdown

    atomic_write_json(out / "report.json", res)
    atomic_write_text(out / "report.md", report_markdown(res))


def _first_observation(root: str, splits: list[str], n_views: int,
                       horizon: int = robot_spec.CHUNK_HORIZON) -> dict:
    """One real observation (the middle frame of the selection) for the latency measurements."""
    from etc_training.distill.policy import frame_dataset

    ds = frame_dataset(root, splits, horizon, (), n_views)
    it = ds.item(len(ds) // 2)
    return {"images": it["images"], "state": it["state"], "instruction": it["instruction"]}


def evaluate_variants(cfg: DistillConfig, policy, sdm_state: dict, cd_state: dict | None = None,
                      progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """The comparison part of the report (also `etc-vla distill report`)."""
    from etc_training.distill.policy import build_condition_bank, condition_batch, variant_head
    from etc_training.distill.report import (
        closed_loop,
        distribution_fidelity,
        head_latency,
        offline_action_error,
        onnx_head_latency,
        onnx_sampler_latency,
        policy_latency,
    )

    e = cfg.eval
    out = Path(cfg.out)
    names = [v for v in e.variants if v != "cd-1" or cd_state is not None]
    if "cd-1" in e.variants and cd_state is None:
        log("[distill] cd-1 requested but no consistency student (consistency.enabled=false): skipped")
    heads = {v: variant_head(policy, v, cd_state if v == "cd-1" else sdm_state) for v in names}
    res: dict[str, Any] = {"variants": names}
    # held-out demonstrations
    if e.heldout:
        res["offline"] = {}
        for split in e.heldout_splits:
            try:
                hb = build_condition_bank(policy, e.heldout, [split], cfg.data.cameras, e.heldout_frames,
                                          cfg.data.batch,
                                          cache=out / "cache" / f"heldout_{split}.pt", checkpoint=cfg.checkpoint,
                                          progress=progress and cfg.run.progress)
            except DistillError as err:
                res["offline"][split] = {"_skipped": {"reason": str(err)}}
                continue
            res["offline"][split] = offline_action_error(heads, hb, policy.processor, seed=cfg.seed)
            res.setdefault("fidelity", {})[split] = distribution_fidelity(heads, hb, seed=cfg.seed)
            log(f"[distill] held-out {split}: " + ", ".join(
                f"{k} mse {v['mse_norm']:.4f}" for k, v in res["offline"][split].items() if "mse_norm" in v))
    # latency
    obs_root = e.heldout or cfg.data.episodes
    obs = _first_observation(obs_root, e.heldout_splits[:1] if e.heldout else cfg.data.splits,
                             policy.processor.config.n_views, next(iter(heads.values())).horizon)
    prompt = policy.processor.build_inference_prompt(obs["images"], obs["state"], obs["instruction"])
    cond = condition_batch(policy, [prompt])
    lat: dict[str, Any] = {"head_torch": head_latency(heads, cond, e.latency_runs)}
    lat["policy_torch"] = policy_latency(policy, heads, obs, max(5, e.latency_runs // 2))
    if cfg.export.enabled:
        lat["head_onnx"] = onnx_head_latency(heads, out / "onnx", len(prompt["input_ids"]), e.latency_runs,
                                             cfg.export.opset)
        lat["sampler_onnx"] = onnx_sampler_latency(heads, out / "onnx", e.latency_runs, cfg.export.opset)
        bundle = bundle_latency(cfg, out, obs, e.latency_runs, log)
        if bundle:
            lat["policy_bundle"] = bundle
    sp = {}
    for kind in ("head_torch", "sampler_onnx", "head_onnx", "policy_torch", "policy_bundle"):
        r = lat.get(kind, {})
        if "teacher-10" in r and "sdm-1" in r and r["sdm-1"].get("median_ms"):
            sp[kind] = r["teacher-10"]["median_ms"] / r["sdm-1"]["median_ms"]
            if r["sdm-1"].get("min_ms"):
                sp[kind + " (min)"] = r["teacher-10"]["min_ms"] / r["sdm-1"]["min_ms"]
    b = lat.get("policy_bundle", {})
    if b.get("sdm-1", {}).get("head_ms_median") and b.get("teacher-10", {}).get("head_ms_median"):
        sp["policy_bundle head graph"] = b["teacher-10"]["head_ms_median"] / b["sdm-1"]["head_ms_median"]
    lat["_speedups"] = sp
    res["latency"] = lat
    log("[distill] speed-ups sdm-1 vs teacher-10: " + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()))
    # closed loop
    if e.episodes > 0:
        res["closed_loop"] = closed_loop(policy, heads, e.sim_splits, e.episodes, e.seed, e.exec_horizon, e.max_steps,
                                         e.reach_tolerance, progress=progress and cfg.run.progress,
                                         families=e.families)
        for name, per in res["closed_loop"].items():
            log(f"[distill] closed loop {name}: " + ", ".join(
                f"{s} {r['success']}/{r['episodes']} (reached {r['reached_rate']})" for s, r in per.items()))
    return res


def bundle_latency(cfg: DistillConfig, out: Path, obs: dict, runs: int, log: Callable[[str], None]) -> dict:
    """End-to-end latency through the exported policy bundle and PolicyRuntime, when the exporter
    (etc_training.export) is available: {variant: timing} for the student (and the teacher)."""
    try:
        from etc_training.export.bundle_write import export_bundle
    except ImportError as err:
        log(f"[distill] bundle latency skipped: the policy exporter is not available ({err})")
        return {}
    import logging

    from etc_ros.policy.runtime import PolicyRuntime

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    from etc_training.distill.export import latency_stats

    res: dict[str, Any] = {}
    runtimes = {}
    for name, ckpt in (("sdm-1", out / STUDENT_DIR), ("teacher-10", Path(str(cfg.checkpoint)))):
        try:
            bdir = out / "bundles" / name
            export_bundle(str(ckpt), str(bdir), include_torch=False, force=True, threads=cfg.run.threads,
                          progress=False, log=None)
            runtimes[name] = (PolicyRuntime.load(str(bdir), backend="onnxruntime", variant="fp32",
                                                 threads=cfg.run.threads), bdir)
        except Exception as err:  # noqa: BLE001 - reported, the rest of the report stands
            res[name] = {"error": f"{type(err).__name__}: {err}"}
    if not runtimes:
        return res
    step_obs = {name: {"images": {rt.cameras[0]: obs["images"]}, "state": obs["state"],
                       "instruction": obs["instruction"]} for name, (rt, _) in runtimes.items()}
    parts: dict[str, dict[str, list[float]]] = {name: {} for name in runtimes}
    n = max(10, runs)
    for _ in range(3):
        for name, (rt, _) in runtimes.items():
            rt.step(step_obs[name])
    for _ in range(n):  # round-robin, as interleaved_timing
        for name, (rt, _) in runtimes.items():
            rt.step(step_obs[name])
            for k, v in rt.last_timing.items():
                if k.endswith("_ms"):
                    parts[name].setdefault(k, []).append(float(v))
    for name, (rt, bdir) in runtimes.items():
        p = parts[name]
        res[name] = dict(latency_stats(p["total_ms"]), min_ms=round(float(np.min(p["total_ms"])), 4),
                         parts_median_ms={k: round(float(np.median(v)), 4) for k, v in p.items()},
                         head_ms_median=round(float(np.median(p.get("head_ms", [float("nan")]))), 4),
                         bundle=str(bdir))
    return res


def run_report(cfg: DistillConfig, progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Re-run the comparison of an existing distillation output (OUT/student [+ OUT/cd_student])."""
    from etc_training.distill.policy import load_teacher
    from etc_training.models.heads.hybrid import diffusion_part
    from etc_training.models.vla import VLAPolicy

    log = log or (lambda s: None)
    out = Path(cfg.out)
    if not cfg.checkpoint:
        raise DistillError("no teacher checkpoint: pass --checkpoint DIR")
    if not (out / STUDENT_DIR / "vla.json").is_file():
        raise DistillError(f"{out}: no distilled student ({STUDENT_DIR}/vla.json); run `etc-vla distill sdm` first")
    torch.set_num_threads(max(1, int(cfg.run.threads)))
    policy = load_teacher(cfg.checkpoint, device=cfg.run.device)
    student = diffusion_part(VLAPolicy.load(out / STUDENT_DIR).action_head)
    cd_state = None
    if (out / CD_DIR / "vla.json").is_file():
        cd_state = diffusion_part(VLAPolicy.load(out / CD_DIR).action_head).denoiser.state_dict()
    prev = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    res = {k: prev[k] for k in ("setup", "training") if k in prev}
    res.update(evaluate_variants(cfg, policy, student.denoiser.state_dict(), cd_state, progress, log))
    if cfg.eval.episodes == 0 and "closed_loop" in prev:  # latency / offline refresh: keep the earlier episodes
        res["closed_loop"] = prev["closed_loop"]
        res.setdefault("notes", []).append("closed-loop results kept from the previous report (eval.episodes=0)")
    write_report(out, res)
    return res
