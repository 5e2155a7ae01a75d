"""SDM (score and distribution matching) one-step distillation of a diffusion denoiser.

Three copies of the trained teacher denoiser (x0-prediction, etc_training/models/heads/diffusion.py):
- G, the generator (trainable): noise -> clean sample in ONE call at t = T - 1;
- F, the frozen teacher: the score of the data distribution;
- D, the dynamic teacher (trainable): tracks the score of the generator's own distribution.

One iteration on a batch of condition vectors c (the frozen backbone + pooler output, cached once):
    a_g = G(z, T-1, c)                                  z ~ N(0, I)
    x_t = add_noise(a_g, eps, t)                         t from the 10-step DDIM grid [99, 88, ..., 0]
    s_X = -(x_t - alpha_t X(x_t, t, c)) / sigma_t^2      X in {F, D} (no gradient)
    grad = (s_D - s_F) / mean|s_F|                       mean over each sample's elements
    L_G = 0.5 * MSE(a_g, stopgrad(a_g - grad))           every `generator_every`-th iteration
    L_D = mean((D(x_t', t', c) - stopgrad(a_g))^2)       every iteration, fresh noise on the same samples
dL_G/da_g is proportional to grad: the generator moves its samples along s_F - s_D, towards where the data is
denser than its own samples (the gradient of the reverse KL, averaged over noise levels).
Optimizers: AdamW, linear warm-up then cosine, global grad-norm clip; no gradient ever reaches F.

    dist = SDMDistiller(teacher_denoiser, schedule, SDMConfig(steps=2000))
    hist = dist.fit(cond_bank)                          # (N, C) condition vectors (or None: unconditional)
    x = dist.sample(cond, noise)                        # ONE call of G
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.core.errors import UserError
from etc_training.models.heads.diffusion import NoiseSchedule, one_step_sample


class DistillError(UserError):
    """Bad distillation configuration, checkpoint or data."""


@dataclass
class SDMConfig:
    steps: int = 4000  # iterations (D is updated every iteration, G every `generator_every`-th)
    batch_size: int = 128
    lr_generator: float = 5e-5
    lr_dynamic: float = 5e-5
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup: int = 500  # linear warm-up iterations
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # global grad-norm clip of each network (0 = off)
    generator_every: int = 5  # G update period (the public code: every 5th)
    num_inference_steps: int = 10  # the DDIM grid the re-noising t is drawn from
    t_sampling: Literal["grid", "uniform"] = "grid"  # grid: the 10-step DDIM grid; uniform: any t in [min_t, T)
    min_t: int = 20  # re-noising timesteps below this are not used (low noise amplifies D - F mismatch by 1/sigma)
    dynamic_t: Literal["same", "uniform"] = "same"  # D's t: the generator's grid t, or uniform in [0, T)
    normalize: Literal["mean_abs_score", "none"] = "mean_abs_score"
    seed: int = 0
    log_every: int = 50

    def check(self) -> "SDMConfig":
        if self.steps < 1 or self.batch_size < 1:
            raise DistillError(f"sdm.steps and sdm.batch_size must be >= 1 (got {self.steps}, {self.batch_size})")
        if self.lr_generator <= 0 or self.lr_dynamic <= 0:
            raise DistillError("sdm.lr_generator and sdm.lr_dynamic must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise DistillError(f"sdm.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup < 0 or self.grad_clip < 0:
            raise DistillError("sdm.warmup and sdm.grad_clip must be >= 0")
        if self.generator_every < 1:
            raise DistillError(f"sdm.generator_every must be >= 1, got {self.generator_every}")
        if self.min_t < 0:
            raise DistillError(f"sdm.min_t must be >= 0, got {self.min_t}")
        if self.num_inference_steps < 1:
            raise DistillError(f"sdm.num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.t_sampling not in ("grid", "uniform") or self.dynamic_t not in ("same", "uniform"):
            raise DistillError("sdm.t_sampling must be grid|uniform and sdm.dynamic_t same|uniform")
        if self.normalize not in ("mean_abs_score", "none"):
            raise DistillError(f"sdm.normalize must be mean_abs_score|none, got {self.normalize!r}")
        return self


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of the base lr at iteration `step`: linear warm-up, then cosine to `floor`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup - 1)
    prog = min(1.0, max(0.0, (step - warmup) / span))
    return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * prog))


def _clip(params, max_norm: float) -> float:
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))


class SDMDistiller:
    """Holds G, F, D and their optimizers; `step(cond)` runs one iteration, `fit(bank)` the whole schedule."""

    def __init__(self, teacher: nn.Module, schedule: NoiseSchedule, cfg: SDMConfig | None = None,
                 device: str | torch.device = "cpu"):
        self.cfg = (cfg or SDMConfig()).check()
        self.device = torch.device(device)
        self.schedule = schedule.to(self.device)
        T = schedule.num_train_steps
        if self.cfg.num_inference_steps > T:
            raise DistillError(f"sdm.num_inference_steps ({self.cfg.num_inference_steps}) > the schedule's {T} steps")
        self.F = copy.deepcopy(teacher).to(self.device).eval().requires_grad_(False)
        self.G = copy.deepcopy(teacher).to(self.device).train().requires_grad_(True)
        self.D = copy.deepcopy(teacher).to(self.device).train().requires_grad_(True)
        c = self.cfg
        self.opt_G = torch.optim.AdamW(self.G.parameters(), lr=c.lr_generator, betas=tuple(c.betas),
                                       weight_decay=c.weight_decay)
        self.opt_D = torch.optim.AdamW(self.D.parameters(), lr=c.lr_dynamic, betas=tuple(c.betas),
                                       weight_decay=c.weight_decay)
        grid = [t for t in schedule.ddim_timesteps(c.num_inference_steps) if t >= c.min_t]
        if not grid:
            raise DistillError(f"sdm.min_t={c.min_t} leaves no timestep of the {c.num_inference_steps}-step grid")
        self.grid = torch.tensor(grid, dtype=torch.long, device=self.device)
        self.rng = torch.Generator(device="cpu").manual_seed(int(c.seed))
        self.iteration = 0
        self.generator_updates = 0

    # -------------------------------------------------------------- pieces
    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.rng).to(self.device)

    def _sample_t(self, n: int, mode: str) -> torch.Tensor:
        if mode == "grid":
            idx = torch.randint(0, len(self.grid), (n,), generator=self.rng).to(self.device)
            return self.grid[idx]
        lo = min(int(self.cfg.min_t), self.schedule.num_train_steps - 1)
        return torch.randint(lo, self.schedule.num_train_steps, (n,), generator=self.rng).to(self.device)

    def generate(self, cond: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        """Training-time generator output (no clipping: clipping would cut the gradient)."""
        t = torch.full((noise.shape[0],), self.schedule.num_train_steps - 1, dtype=torch.long, device=self.device)
        return self.G(noise, t, cond)

    @torch.no_grad()
    def dm_gradient(self, a_g: torch.Tensor, cond: torch.Tensor | None, t: torch.Tensor,
                    eps: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(s_D - s_F) / mean|s_F| at x_t = add_noise(a_g, eps, t), per-sample normalization."""
        x_t = self.schedule.add_noise(a_g, eps, t)
        s_F = self.schedule.score(x_t, self.F(x_t, t, cond), t)
        s_D = self.schedule.score(x_t, self.D(x_t, t, cond), t)
        diff = s_D - s_F
        dims = tuple(range(1, diff.ndim))
        if self.cfg.normalize == "mean_abs_score":
            diff = diff / s_F.abs().mean(dim=dims, keepdim=True).clamp(min=1e-8)
        grad = torch.nan_to_num(diff, nan=0.0, posinf=0.0, neginf=0.0)
        return grad, {"dm_grad_abs": float(grad.abs().mean())}

    def _set_lr(self) -> float:
        c = self.cfg
        f = lr_factor(self.iteration, c.steps, c.warmup, c.min_lr_ratio)
        for g in self.opt_G.param_groups:
            g["lr"] = c.lr_generator * f
        for g in self.opt_D.param_groups:
            g["lr"] = c.lr_dynamic * f
        return f

    # -------------------------------------------------------------- one iteration
    def step(self, cond: torch.Tensor | None, batch_size: int | None = None) -> dict:
        """One iteration on condition vectors `cond` (B, C) (or None with `batch_size` for an unconditional
        denoiser). Returns the iteration's metrics."""
        c = self.cfg
        B = cond.shape[0] if cond is not None else int(batch_size or c.batch_size)
        shape = (B, self.G_shape[0], self.G_shape[1])
        f = self._set_lr()
        m: dict[str, Any] = {"iteration": self.iteration, "lr_factor": f}
        noise = self._randn(shape)
        update_G = self.iteration % c.generator_every == 0
        if update_G:
            a_g = self.generate(cond, noise)
            t = self._sample_t(B, "grid" if c.t_sampling == "grid" else "uniform")
            grad, info = self.dm_gradient(a_g.detach(), cond, t, self._randn(shape))
            loss_G = 0.5 * F.mse_loss(a_g, (a_g - grad).detach())
            self.opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            m["grad_norm_G"] = _clip(self.G.parameters(), c.grad_clip)
            self.opt_G.step()
            self.generator_updates += 1
            m.update(info, loss_G=float(loss_G.detach()))
            a_g = a_g.detach()
        else:
            with torch.no_grad():
                a_g = self.generate(cond, noise)
            t = None
        # dynamic teacher: denoising score matching on the generator's samples
        if c.dynamic_t == "same" and t is not None:
            t_D = t
        else:
            t_D = self._sample_t(B, "grid" if (c.dynamic_t == "same" and c.t_sampling == "grid") else "uniform")
        x_t = self.schedule.add_noise(a_g, self._randn(shape), t_D)
        loss_D = F.mse_loss(self.D(x_t, t_D, cond), a_g)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        m["grad_norm_D"] = _clip(self.D.parameters(), c.grad_clip)
        self.opt_D.step()
        m["loss_D"] = float(loss_D.detach())
        m["sample_abs"] = float(a_g.abs().mean())
        self.iteration += 1
        return m

    @property
    def G_shape(self) -> tuple[int, int]:
        return int(self.G.horizon), int(self.G.action_dim)

    # -------------------------------------------------------------- the whole schedule
    def fit(self, cond_bank: torch.Tensor | None, steps: int | None = None, progress: bool = False,
            callback: Callable[[dict], None] | None = None, desc: str = "sdm") -> list[dict]:
        """Run `steps` (default cfg.steps) iterations drawing batches from `cond_bank` (N, C) (None =
        unconditional). Returns the logged metrics (every cfg.log_every iterations, averaged)."""
        c = self.cfg
        n_steps = int(steps if steps is not None else c.steps)
        bank = None if cond_bank is None else cond_bank.to(self.device)
        if bank is not None and bank.shape[0] < 1:
            raise DistillError("the condition bank is empty: no observations to distill on")
        try:
            from tqdm import tqdm

            it = tqdm(range(n_steps), desc=desc, unit="it", disable=not progress or None, leave=False)
        except ImportError:  # pragma: no cover
            it = range(n_steps)
        hist: list[dict] = []
        acc: dict[str, list[float]] = {}
        for _ in it:
            if bank is not None:
                idx = torch.randint(0, bank.shape[0], (c.batch_size,), generator=self.rng).to(self.device)
                m = self.step(bank[idx])
            else:
                m = self.step(None, c.batch_size)
            for k, v in m.items():
                if k != "iteration":
                    acc.setdefault(k, []).append(float(v))
            if self.iteration % c.log_every == 0 or self.iteration == n_steps:
                row = {"iteration": self.iteration, **{k: float(np.mean(v)) for k, v in acc.items()}}
                hist.append(row)
                acc = {}
                if callback is not None:
                    callback(row)
        return hist

    @torch.no_grad()
    def sample(self, cond: torch.Tensor | None, noise: torch.Tensor, clip_sample: float | None = None
               ) -> torch.Tensor:
        """Inference: ONE call of G (see one_step_sample)."""
        self.G.eval()
        try:
            return one_step_sample(self.G, self.schedule, noise.to(self.device), cond, clip_sample)
        finally:
            self.G.train()

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(), "iteration": self.iteration,
                "generator_updates": self.generator_updates, "rng": self.rng.get_state(), "config": asdict(self.cfg)}


# ---------------------------------------------------------------------------------------------- teacher training
def train_denoiser(denoiser: nn.Module, schedule: NoiseSchedule, data: torch.Tensor, cond: torch.Tensor | None = None,
                   steps: int = 1000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                   log_every: int = 50, progress: bool = False) -> list[dict]:
    """Plain x0-prediction denoising training of `denoiser` on samples `data` (N, H, D) (+ conditions (N, C));
    t ~ U{0..T-1}. Used for toy problems and tests (the VLA head trains inside the recipe)."""
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(denoiser.parameters(), lr=lr)
    hist, acc = [], []
    denoiser.train()
    try:
        from tqdm import tqdm

        it = tqdm(range(int(steps)), desc="denoiser", unit="it", disable=not progress or None, leave=False)
    except ImportError:  # pragma: no cover
        it = range(int(steps))
    for k in it:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        x0 = data[idx]
        c = cond[idx] if cond is not None else None
        t = torch.randint(0, schedule.num_train_steps, (batch_size,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x_t = schedule.add_noise(x0, eps, t)
        f = lr_factor(k, int(steps), max(1, int(steps) // 20), 0.05)
        for pg in opt.param_groups:
            pg["lr"] = lr * f
        loss = F.mse_loss(denoiser(x_t, t, c), x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        acc.append(float(loss.detach()))
        if (k + 1) % log_every == 0 or k + 1 == steps:
            hist.append({"iteration": k + 1, "loss": float(np.mean(acc))})
            acc = []
    denoiser.eval()
    return hist
