"""Consistency distillation (CD) baseline: a one-step student trained to be self-consistent along the teacher's
DDIM trajectories on the same 10-step grid.

For a training chunk a with condition c, grid index n (t_n = grid[n], t_{n+1} the next, smaller, grid time or
the clean end):
    x_n     = add_noise(a, eps, t_n)
    x_{n+1} = DDIM step of the frozen teacher from x_n (t_n -> t_{n+1})
    target  = S_ema(x_{n+1}, t_{n+1}, c)          or, at the last step, the teacher's x0 estimate (boundary)
    loss    = MSE(S(x_n, t_n, c), stopgrad(target))
S starts as a copy of the teacher; S_ema is its exponential moving average (the target network). Inference:
ONE call of S at t = T - 1 (heads.diffusion.one_step_sample), like the SDM generator. Unlike SDM, CD needs data
(chunks), so it reads the actions of the distillation frames.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etc_training.distill.sdm import DistillError, lr_factor
from etc_training.models.heads.diffusion import NoiseSchedule, one_step_sample


@dataclass
class CDConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-5
    warmup: int = 200
    ema_decay: float = 0.95
    grad_clip: float = 1.0
    num_inference_steps: int = 10
    seed: int = 0
    log_every: int = 50


class ConsistencyDistiller:
    def __init__(self, teacher: nn.Module, schedule: NoiseSchedule, cfg: CDConfig | None = None,
                 device: str | torch.device = "cpu"):
        self.cfg = cfg or CDConfig()
        if self.cfg.steps < 1 or self.cfg.batch_size < 1 or not 0 <= self.cfg.ema_decay < 1:
            raise DistillError("consistency: steps and batch_size must be >= 1 and 0 <= ema_decay < 1")
        self.device = torch.device(device)
        self.schedule = schedule.to(self.device)
        self.teacher = copy.deepcopy(teacher).to(self.device).eval().requires_grad_(False)
        self.S = copy.deepcopy(teacher).to(self.device).train().requires_grad_(True)
        self.S_ema = copy.deepcopy(teacher).to(self.device).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.S.parameters(), lr=self.cfg.lr)
        grid = schedule.ddim_timesteps(self.cfg.num_inference_steps)
        self.t_cur = torch.tensor(grid, dtype=torch.long, device=self.device)
        self.t_next = torch.tensor(grid[1:] + [-1], dtype=torch.long, device=self.device)  # -1 = clean end
        self.rng = torch.Generator().manual_seed(int(self.cfg.seed))
        self.iteration = 0

    def _ddim_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        ab = self.schedule.alphas_cumprod
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        a_t = ab[t].view(shape)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).clamp(min=1e-12).sqrt()
        a_n = torch.where(t_next >= 0, ab[t_next.clamp(min=0)], torch.ones_like(ab[0:1]).expand_as(t_next.float()))
        a_n = a_n.view(shape)
        return a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps

    def step(self, cond: torch.Tensor | None, actions: torch.Tensor) -> dict:
        c = self.cfg
        f = lr_factor(self.iteration, c.steps, c.warmup, 0.0)
        for g in self.opt.param_groups:
            g["lr"] = c.lr * f
        B = actions.shape[0]
        n = torch.randint(0, len(self.t_cur), (B,), generator=self.rng).to(self.device)
        t, t_next = self.t_cur[n], self.t_next[n]
        eps = torch.randn(actions.shape, generator=self.rng).to(self.device)
        x_t = self.schedule.add_noise(actions, eps, t)
        with torch.no_grad():
            x0_teacher = self.teacher(x_t, t, cond)
            x_next = self._ddim_step(x_t, x0_teacher, t, t_next)
            target_ema = self.S_ema(x_next, t_next.clamp(min=0), cond)
            last = (t_next < 0).view(-1, *([1] * (actions.ndim - 1)))
            target = torch.where(last, x0_teacher, target_ema)
        loss = F.mse_loss(self.S(x_t, t, cond), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.S.parameters(), c.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for p_e, p in zip(self.S_ema.parameters(), self.S.parameters()):
                p_e.lerp_(p, 1.0 - c.ema_decay)
        self.iteration += 1
        return {"loss_CD": float(loss.detach()), "lr_factor": f}

    def fit(self, cond_bank: torch.Tensor | None, action_bank: torch.Tensor, progress: bool = False,
            callback: Callable[[dict], None] | None = None) -> list[dict]:
        c = self.cfg
        if action_bank.shape[0] < 1:
            raise DistillError("consistency distillation needs at least one action chunk")
        try:
            from tqdm import tqdm

            it = tqdm(range(c.steps), desc="consistency", unit="it", disable=not progress or None, leave=False)
        except ImportError:  # pragma: no cover
            it = range(c.steps)
        hist, acc = [], []
        for _ in it:
            idx = torch.randint(0, action_bank.shape[0], (c.batch_size,), generator=self.rng)
            cond = cond_bank[idx].to(self.device) if cond_bank is not None else None
            m = self.step(cond, action_bank[idx].to(self.device))
            acc.append(m["loss_CD"])
            if self.iteration % c.log_every == 0 or self.iteration == c.steps:
                row = {"iteration": self.iteration, "loss_CD": float(np.mean(acc)), "lr_factor": m["lr_factor"]}
                hist.append(row)
                acc = []
                if callback is not None:
                    callback(row)
        return hist

    @torch.no_grad()
    def sample(self, cond: torch.Tensor | None, noise: torch.Tensor, clip_sample: float | None = None) -> torch.Tensor:
        self.S.eval()
        try:
            return one_step_sample(self.S, self.schedule, noise.to(self.device), cond, clip_sample)
        finally:
            self.S.train()
