"""A diffusion teacher on a working regression policy: `etc-vla distill teacher`.

The policy that succeeds closed-loop (config/policy_pickup.yaml) has a one-pass regression head. SDM distils a
*diffusion* head, so to test the SDM claim at working quality this builds one on that policy's representation:

1. load the regression policy; its backbone and head condition (pooler, spatial soft-argmax, state embedding,
   grounding read-out) become a "regression_diffusion" head's frozen condition (heads/regression_diffusion.py);
2. compute every training frame's condition once (the ConditionBank SDM uses too; no augmentation);
3. fit a fresh diffusion denoiser (x0-prediction MSE, `noise_repeats` (t, eps) draws per example, AdamW,
   warm-up + cosine, EMA of the weights) on (condition, normalized demonstration chunk) pairs;
4. save OUT/teacher: the regression policy's backbone + the regression_diffusion head (EMA denoiser, DDIM with
   10 steps) — a policy checkpoint that `etc-vla eval`, `etc-vla export` and `etc-vla distill sdm` load.

Only the denoiser learns (the condition is frozen), so the teacher is cheap to fit on a CPU (minutes) and every
variant of the comparison (teacher-10, teacher-1, SDM-1, CD-1) shares the working policy's perception.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from etc_training.distill.sdm import DistillError, lr_factor


@dataclass
class TeacherConfig:
    steps: int = 20000  # denoiser updates
    batch_size: int = 256  # frames per update (x noise_repeats denoiser rows)
    noise_repeats: int = 4
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # the saved teacher uses the EMA weights
    denoiser_width: int = 256
    denoiser_depth: int = 3
    num_inference_steps: int = 10
    seed: int = 0
    log_every: int = 500

    def check(self) -> "TeacherConfig":
        if self.steps < 1 or self.batch_size < 1 or self.noise_repeats < 1 or self.lr <= 0:
            raise DistillError("teacher: steps, batch_size, noise_repeats >= 1 and lr > 0 are required")
        if not 0 <= self.ema_decay < 1 or self.denoiser_width < 8 or self.denoiser_depth < 1:
            raise DistillError("teacher: 0 <= ema_decay < 1, denoiser_width >= 8, denoiser_depth >= 1 are required")
        return self


TEACHER_DIR = "teacher"


def fit_denoiser(head, cond: torch.Tensor, actions: torch.Tensor, cfg: TeacherConfig,
                 callback: Callable[[dict], None] | None = None, progress: bool = False) -> list[dict]:
    """Fit `head.denoiser` (x0-prediction) on (cond, actions); EMA weights are loaded into it at the end."""
    g = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    den = head.denoiser
    den.requires_grad_(True)
    den.train()
    ema = copy.deepcopy(den).requires_grad_(False)
    opt = torch.optim.AdamW(den.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = int(cond.shape[0])
    hist: list[dict] = []
    run = 0.0
    try:
        from tqdm import tqdm

        bar = tqdm(range(cfg.steps), desc="teacher denoiser", unit="it", disable=not progress or None, leave=False)
    except ImportError:  # pragma: no cover
        bar = range(cfg.steps)
    t0 = time.perf_counter()
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=g)
        loss = head.denoising_loss(cond[idx], actions[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(den.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), den.parameters()):
                pe.lerp_(p, 1.0 - cfg.ema_decay)
        lv = float(loss.detach())
        run = lv if step == 0 else 0.98 * run + 0.02 * lv
        if step == 0 or (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "loss": round(lv, 6), "loss_smooth": round(run, 6),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
            hist.append(row)
            if callback is not None:
                callback(row)
    den.load_state_dict(ema.state_dict())
    den.requires_grad_(False)
    den.eval()
    return hist


def run_teacher(cfg, progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """`etc-vla distill teacher`: cfg is a DistillConfig whose `checkpoint` is a trained regression policy."""
    from etc_ros.core.io import atomic_write_json
    from etc_training.distill.policy import build_condition_bank
    from etc_training.models.heads.regression import RegressionActionHead
    from etc_training.models.heads.regression_diffusion import from_regression
    from etc_training.models.vla import VLA_FILE, VLAPolicy

    log = log or (lambda s: None)
    tc: TeacherConfig = cfg.teacher.check()
    src = Path(str(cfg.checkpoint or ""))
    if not (src / VLA_FILE).is_file():
        raise DistillError(f"--checkpoint: not an etc-vla policy checkpoint (no {VLA_FILE}): {src}")
    if not cfg.data.episodes:
        raise DistillError("no data: pass --data DIR (the episode dataset the regression policy was trained on)")
    torch.set_num_threads(max(1, int(cfg.run.threads)))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    policy = VLAPolicy.load(src, device=cfg.run.device)
    if type(policy.action_head) is not RegressionActionHead:
        raise DistillError(f"{src}: head {getattr(policy.action_head, 'name', '?')!r}; `distill teacher` builds a "
                           "diffusion teacher on a 'regression' policy (a diffusion policy is already a teacher)")
    head = from_regression(policy.action_head, policy.processor, denoiser_width=tc.denoiser_width,
                           denoiser_depth=tc.denoiser_depth, noise_repeats=tc.noise_repeats,
                           num_inference_steps=tc.num_inference_steps, noise_seed=0)
    policy.action_head = head
    policy.meta = dict(policy.meta, head={"type": head.name, "config": head.config_dict()})
    policy.eval()
    policy.requires_grad_(False)
    bank = build_condition_bank(policy, cfg.data.episodes, cfg.data.splits, cfg.data.cameras, cfg.data.max_frames,
                                cfg.data.batch, cache=out / "cache" / "teacher_cond_bank.pt", checkpoint=src,
                                progress=progress and cfg.run.progress)
    log(f"[teacher] {len(bank)} frames of {bank.splits}: conditions ({bank.cond.shape[1]}-D) cached "
        f"({bank.seconds} s)")
    metrics = out / "teacher_metrics.jsonl"
    metrics.unlink(missing_ok=True)

    def append(row: dict) -> None:
        with metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")

    t0 = time.perf_counter()
    hist = fit_denoiser(head, bank.cond, bank.actions, tc, callback=append, progress=progress and cfg.run.progress)
    fit_s = round(time.perf_counter() - t0, 2)
    log(f"[teacher] denoiser fitted: {tc.steps} updates in {fit_s} s, loss {hist[0]['loss']} -> "
        f"{hist[-1]['loss_smooth']} (smoothed)")
    policy.meta = dict(policy.meta, head={"type": head.name, "config": head.config_dict()},
                       distill_teacher={"regression_policy": str(src), "frames": len(bank), "splits": bank.splits,
                                        "config": asdict(tc)})
    tdir = policy.save(out / TEACHER_DIR)
    res = {"teacher": str(tdir), "regression_policy": str(src), "frames": len(bank), "splits": bank.splits,
           "cond_dim": int(bank.cond.shape[1]), "bank_seconds": bank.seconds, "fit_seconds": fit_s,
           "denoiser_parameters": sum(p.numel() for p in head.denoiser.parameters()), "config": asdict(tc),
           "loss_first": hist[0]["loss"], "loss_last_smooth": hist[-1]["loss_smooth"],
           "seconds": round(time.perf_counter() - t_all, 2)}
    atomic_write_json(out / "teacher_report.json", res)
    log(f"[teacher] -> {tdir}")
    return res
