"""Continuous action head: a diffusion denoiser over the action chunk, conditioned on the VLM prefix features.

    head = DiffusionActionHead(processor, hidden_size)               # via VLAPolicy.build(head="diffusion")
    loss = head.loss(backbone_outputs, batch)                         # x0-prediction MSE, t ~ U{0..T-1}
    chunks, valid = head.predict(policy, prefix)                      # DDIM (10 steps) or one generator call

Pieces (all usable on their own; the SDM distillation in etc_training/distill reuses them):
- `NoiseSchedule`: discrete DDPM schedule (cosine "squaredcos_cap_v2" by default, or linear rescaled to T), 100 training
  steps; `add_noise`, `ddim_timesteps(n)` evenly spaced from 99 down to 0 ([99, 88, ..., 11, 0] for 10 steps,
  [99] for one step: the first step always starts from the pure-noise level, so a 1-step DDIM is a meaningful
  baseline, and the last one returns the x0 estimate at t = 0),
  `ddim_step` (eta = 0, x0-prediction), `score` (s(x_t) = -(x_t - alpha_t x0_hat) / sigma_t^2).
- `PrefixPooler` (base.py, shared with the regression head): prefix hidden states (B, L, E) + mask (B, L) ->
  condition vector (B, C): masked mean pooling concatenated with `n_queries` learned attention-pooling queries,
  LayerNorm, linear.
- `Denoiser`: MLP with residual blocks, FiLM-conditioned on (sinusoidal timestep embedding + condition);
  input the noisy chunk (B, H, D), output the clean chunk x0 (B, H, D).
- `DiffusionActionHead`: the ActionHead protocol (etc_training/models/heads/base.py) for "diffusion";
  `sampler="ddim"` runs `num_inference_steps` denoiser calls; `sampler="onestep"` (the SDM-distilled head)
  calls the denoiser exactly once at t = T - 1 and never enters the DDIM loop.
- `HybridActionHead` ("both", hybrid.py): action tokens (LM loss) and the diffusion head trained together on
  the same prefix; predicts with the diffusion head (or the tokens, `predict_with="tokens"`).

Condition mask: the head pools over prefix positions only, `attention_mask == 1 and token_type_ids == 0`
(`condition_mask`, base.py). With the "continuous" processor format the whole prompt (up to "Action: ") is prefix; with
the "tokens" format ("both") the target tokens never enter the condition, so training and inference pool the
same positions (prefix tokens cannot attend to target tokens in PaliGemma's prefix-LM mask).
Actions are the processor's normalized chunks (quantile-normalized, in [-1, 1]); samples are clipped to
`clip_sample` (1.0) at the end of sampling.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.core.errors import ModelError
from etc_training.models.heads.base import PrefixPooler, batch_actions, chunk_shape, condition_mask

SCHEDULES = ("cosine", "linear")
SAMPLERS = ("ddim", "onestep")


# ---------------------------------------------------------------------------------------------- noise schedule
def _betas(kind: str, n: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    if kind == "cosine":  # Nichol & Dhariwal cosine alpha-bar, betas capped at 0.999
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=np.float64)
    if kind == "linear":  # DDPM's 1000-step range, rescaled to n steps so that alpha_bar_T is ~0 as well
        scale = 1000.0 / n
        return np.linspace(beta_start * scale, min(beta_end * scale, 0.999), n, dtype=np.float64)
    raise ModelError(f"unknown noise schedule {kind!r}; use one of {list(SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """Discrete diffusion schedule with `num_train_steps` steps (t = 0 .. T-1; t = T-1 is ~pure noise).

    Buffers: alphas_cumprod (T,), sqrt_ab (T,), sqrt_1mab (T,). Timesteps are long tensors."""

    def __init__(self, num_train_steps: int = 100, kind: str = "cosine"):
        super().__init__()
        if int(num_train_steps) < 2:
            raise ModelError(f"num_train_steps must be >= 2, got {num_train_steps}")
        self.num_train_steps = int(num_train_steps)
        self.kind = kind
        ab = np.cumprod(1.0 - _betas(kind, self.num_train_steps))
        self.register_buffer("alphas_cumprod", torch.tensor(ab, dtype=torch.float32), persistent=False)
        self.register_buffer("sqrt_ab", torch.tensor(np.sqrt(ab), dtype=torch.float32), persistent=False)
        self.register_buffer("sqrt_1mab", torch.tensor(np.sqrt(1 - ab), dtype=torch.float32), persistent=False)

    def _col(self, v: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = v[t.long()]
        return out.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)

    def alpha(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """sqrt(alpha_bar_t), broadcast to `like`."""
        return self._col(self.sqrt_ab, t, like)

    def sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """sqrt(1 - alpha_bar_t), broadcast to `like`."""
        return self._col(self.sqrt_1mab, t, like)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.alpha(t, x0) * x0 + self.sigma(t, x0) * eps

    def ddim_timesteps(self, num_inference_steps: int) -> list[int]:
        """n timesteps evenly spaced from T-1 (pure noise) down to 0 (clean), both ends included:
        10 of 100 -> [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]; 1 -> [99].

        Why: starting at T-1 makes a 1-step sampler meaningful (diffusers' "leading" spacing [90, ..., 0] runs a
        single step at t=0 on pure noise and returns the noise itself). With 10 steps, leading, trailing
        ([99, ..., 9]) and this spacing give the same spread within 3 % on a known Gaussian (exact denoiser)."""
        n = int(num_inference_steps)
        T = self.num_train_steps
        if not 1 <= n <= T:
            raise ModelError(f"num_inference_steps must be in [1, {T}], got {num_inference_steps}")
        if n == 1:
            return [T - 1]
        ts = np.round(np.linspace(T - 1, 0, n)).astype(np.int64)
        return [int(t) for t in ts]

    def ddim_step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, t_prev: int | None) -> torch.Tensor:
        """Deterministic DDIM update (eta = 0) from t to t_prev (None = the clean end, alpha_bar = 1)."""
        ab = self.alphas_cumprod[t]
        eps_hat = (x_t - ab.sqrt() * x0_hat) / (1 - ab).clamp(min=1e-12).sqrt()
        if t_prev is None or t_prev < 0:
            return x0_hat
        ab_p = self.alphas_cumprod[t_prev]
        return ab_p.sqrt() * x0_hat + (1 - ab_p).sqrt() * eps_hat

    def score(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score of the noisy marginal implied by an x0 prediction: -(x_t - alpha_t x0_hat) / sigma_t^2."""
        return -(x_t - self.alpha(t, x_t) * x0_hat) / self.sigma(t, x_t).pow(2).clamp(min=1e-12)


# ---------------------------------------------------------------------------------------------- networks
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class _FiLMBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        return x + self.fc2(self.drop(F.gelu(self.fc1(h))))


class Denoiser(nn.Module):
    """x0-prediction network: (x_t (B, H, D), t (B,), cond (B, C)) -> x0_hat (B, H, D)."""

    def __init__(self, horizon: int, action_dim: int, cond_dim: int, width: int = 256, depth: int = 3,
                 time_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        self.horizon, self.action_dim, self.cond_dim = int(horizon), int(action_dim), int(cond_dim)
        self.width, self.depth, self.time_dim = int(width), int(depth), int(time_dim)
        n = self.horizon * self.action_dim
        emb = self.width
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, emb), nn.GELU(), nn.Linear(emb, emb))
        self.cond_proj = nn.Linear(self.cond_dim, emb) if self.cond_dim > 0 else None
        self.inp = nn.Linear(n, self.width)
        self.blocks = nn.ModuleList([_FiLMBlock(self.width, emb, dropout) for _ in range(self.depth)])
        self.norm_out = nn.LayerNorm(self.width)
        self.outp = nn.Linear(self.width, n)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B = x_t.shape[0]
        if t.ndim == 0:
            t = t.expand(B)
        e = self.time_mlp(timestep_embedding(t, self.time_dim))
        if self.cond_proj is not None:
            if cond is None:
                raise ModelError("this denoiser needs a condition vector")
            e = e + self.cond_proj(cond)
        e = F.gelu(e)
        h = self.inp(x_t.reshape(B, -1).float())
        for blk in self.blocks:
            h = blk(h, e)
        return self.outp(self.norm_out(h)).view(B, self.horizon, self.action_dim)


# ---------------------------------------------------------------------------------------------- sampling
def ddim_sample(denoiser: nn.Module, schedule: NoiseSchedule, noise: torch.Tensor, cond: torch.Tensor | None,
                num_inference_steps: int, clip_sample: float | None = 1.0) -> torch.Tensor:
    """DDIM (eta = 0) from x_T = noise with `num_inference_steps` denoiser calls (grid of ddim_timesteps)."""
    ts = schedule.ddim_timesteps(num_inference_steps)
    x = noise
    B = noise.shape[0]
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, dtype=torch.long, device=noise.device)
        x0 = denoiser(x, tt, cond)
        if clip_sample:
            x0 = x0.clamp(-clip_sample, clip_sample)
        x = schedule.ddim_step(x, x0, t, ts[i + 1] if i + 1 < len(ts) else None)
    return x


def one_step_sample(generator: nn.Module, schedule: NoiseSchedule, noise: torch.Tensor, cond: torch.Tensor | None,
                    clip_sample: float | None = 1.0) -> torch.Tensor:
    """ONE generator call at t = T - 1: noise -> chunk (the SDM student)."""
    t = torch.full((noise.shape[0],), schedule.num_train_steps - 1, dtype=torch.long, device=noise.device)
    x = generator(noise, t, cond)
    return x.clamp(-clip_sample, clip_sample) if clip_sample else x


# ---------------------------------------------------------------------------------------------- the head
class DiffusionSampling:
    """Training loss and samplers of a head that owns `denoiser`, `schedule`, `horizon`, `action_dim`,
    `num_inference_steps`, `sampler`, `clip_sample`, `noise_repeats`, `noise_seed` and `_rng` (the diffusion head
    and the regression_diffusion head share them), and its `condition_from(backbone outputs, batch)`."""

    denoiser: nn.Module
    schedule: NoiseSchedule
    condition_from: Callable[..., torch.Tensor]
    horizon: int
    action_dim: int
    num_inference_steps: int
    sampler: str
    clip_sample: float | None
    noise_repeats: int
    noise_seed: int | None
    _rng: torch.Generator | None

    def denoising_loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """x0-prediction MSE with `noise_repeats` (t, eps) draws per example, t ~ U{0 .. T-1}."""
        k = self.noise_repeats
        a = actions.float().repeat_interleave(k, 0)
        c = cond.repeat_interleave(k, 0)
        t = torch.randint(0, self.schedule.num_train_steps, (a.shape[0],), device=a.device)
        eps = torch.randn_like(a)
        x_t = self.schedule.add_noise(a, eps, t)
        return F.mse_loss(self.denoiser(x_t, t, c), a)

    def make_noise(self, batch: int, device: Any = "cpu") -> torch.Tensor:
        """Initial noise. With noise_seed set, draws come from a head-owned generator (reproducible runs)."""
        shape = (int(batch), self.horizon, self.action_dim)
        if self._rng is None:
            if self.noise_seed is None:
                return torch.randn(shape, device=device)
            self._rng = torch.Generator().manual_seed(int(self.noise_seed))
        return torch.randn(shape, generator=self._rng).to(device)

    def reset_noise(self, seed: int | None = None) -> None:
        """Restart the head's noise stream: from noise_seed, or from `seed` (e.g. one per evaluation scene, so
        the scenes get independent noise and every compared variant the same noise on the same scene)."""
        self._rng = None if seed is None else torch.Generator().manual_seed(int(seed))

    def sample(self, cond: torch.Tensor, noise: torch.Tensor | None = None, sampler: str | None = None,
               num_inference_steps: int | None = None) -> torch.Tensor:
        """Normalized chunks (B, H, D) from condition vectors (B, C)."""
        if noise is None:
            noise = self.make_noise(cond.shape[0], cond.device)
        mode = sampler or self.sampler
        if mode == "onestep":
            return one_step_sample(self.denoiser, self.schedule, noise, cond, self.clip_sample)
        if mode != "ddim":
            raise ModelError(f"unknown sampler {mode!r}; use one of {list(SAMPLERS)}")
        return ddim_sample(self.denoiser, self.schedule, noise, cond,
                           num_inference_steps or self.num_inference_steps, self.clip_sample)

    @torch.no_grad()
    def predict(self, policy: Any, prefix: dict, use_cache: bool | None = None, noise: torch.Tensor | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        out = policy.run_backbone(prefix)
        cond = self.condition_from(out, prefix)
        x = self.sample(cond, noise)
        arr = x.float().cpu().numpy()
        return arr, np.all(np.isfinite(arr), axis=(1, 2))


class DiffusionActionHead(DiffusionSampling, nn.Module):
    """ActionHead "diffusion" (action_format "continuous"). Weights: pooler.* and denoiser.*."""

    name = "diffusion"
    action_format = "continuous"

    def __init__(self, processor: Any, hidden_size: int, horizon: int | None = None, action_dim: int | None = None,
                 cond_dim: int = 256, n_queries: int = 4, width: int = 256, depth: int = 3, time_dim: int = 64,
                 dropout: float = 0.0, num_train_steps: int = 100, num_inference_steps: int = 10,
                 schedule: str = "cosine", sampler: str = "ddim", clip_sample: float | None = 1.0,
                 noise_repeats: int = 4, noise_seed: int | None = 0, loss_weight: float = 1.0):
        super().__init__()
        self.horizon, self.action_dim = chunk_shape(processor, horizon, action_dim)
        if sampler not in SAMPLERS:
            raise ModelError(f"diffusion head: sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        if int(noise_repeats) < 1:
            raise ModelError(f"diffusion head: noise_repeats must be >= 1, got {noise_repeats}")
        self.processor = processor
        self.hidden_size = int(hidden_size)
        self.schedule = NoiseSchedule(num_train_steps, schedule)
        if not 1 <= int(num_inference_steps) <= self.schedule.num_train_steps:
            raise ModelError(f"diffusion head: num_inference_steps must be in [1, {num_train_steps}], "
                             f"got {num_inference_steps}")
        self.pooler = PrefixPooler(self.hidden_size, cond_dim, n_queries)
        self.denoiser = Denoiser(self.horizon, self.action_dim, cond_dim, width, depth, time_dim, dropout)
        self.num_inference_steps = int(num_inference_steps)
        self.sampler = sampler
        self.clip_sample = None if clip_sample is None or clip_sample <= 0 else float(clip_sample)
        self.noise_repeats = int(noise_repeats)
        self.noise_seed = noise_seed
        self.loss_weight = float(loss_weight)
        self._cfg = dict(horizon=self.horizon, action_dim=self.action_dim, cond_dim=int(cond_dim),
                         n_queries=int(n_queries), width=int(width), depth=int(depth), time_dim=int(time_dim),
                         dropout=float(dropout), num_train_steps=int(num_train_steps),
                         num_inference_steps=self.num_inference_steps, schedule=schedule, sampler=sampler,
                         clip_sample=self.clip_sample, noise_repeats=self.noise_repeats, noise_seed=noise_seed,
                         loss_weight=self.loss_weight)
        self._rng: torch.Generator | None = None

    def config_dict(self) -> dict:
        d = dict(self._cfg)
        d.update(num_inference_steps=self.num_inference_steps, sampler=self.sampler)
        return d

    # -------------------------------------------------------------- conditioning
    def condition(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooler(hidden, mask)

    def condition_from(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        tt = batch.get("token_type_ids") if hasattr(batch, "get") else None
        return self.condition(model_outputs.hidden_states, condition_mask(model_outputs.attention_mask, tt))

    # -------------------------------------------------------------- training
    def loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        actions = batch_actions(batch, model_outputs.hidden_states.device, self.horizon, self.action_dim, self.name)
        return self.loss_weight * self.denoising_loss(self.condition_from(model_outputs, batch), actions)


def make_diffusion_head(processor: Any, hidden_size: int, **cfg: Any) -> DiffusionActionHead:
    return DiffusionActionHead(processor, hidden_size, **cfg)


