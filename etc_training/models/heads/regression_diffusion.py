"""ActionHead "regression_diffusion": a diffusion denoiser on the regression head's condition.

The working pick_up policy (config/policy_pickup.yaml) has a one-pass regression head whose condition is what
made it work: the pooled prefix, the instruction-conditioned spatial soft-argmax over the image tokens, the state
embedding and the grounding read-out (the predicted object / target / gripper image points). This head keeps that
condition module exactly (same weights, same names as RegressionActionHead: pooler.*, spatial.*, state_proj.*,
grounding.*) and samples the chunk with a diffusion denoiser (the DiffusionActionHead's Denoiser, schedule and
DDIM / one-step samplers) instead of the regression MLP:

    condition c = [regression condition, grounding read-out(regression condition)]      (B, C)
    chunk      = DDIM(denoiser, noise, c), 10 calls (sampler "ddim") or one call (sampler "onestep", SDM)

So SDM distillation (etc_training/distill), the ONNX export (ContinuousHeadGraph: condition(...) then
sample(cond, noise)) and the closed-loop evaluation treat it like the diffusion head. `etc-vla distill teacher`
builds one from a trained regression policy (its backbone and condition frozen) and fits the denoiser on cached
conditions (etc_training/distill/teacher.py). The regression MLP (mlp.*) is not part of this head.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from etc_ros.core.errors import ModelError
from etc_training.models.heads.diffusion import (
    SAMPLERS,
    Denoiser,
    NoiseSchedule,
    ddim_sample,
    one_step_sample,
)
from etc_training.models.heads.regression import RegressionActionHead


class RegressionDiffusionHead(RegressionActionHead):
    """ActionHead "regression_diffusion" (action_format "continuous"). See the module docstring."""

    name = "regression_diffusion"
    action_format = "continuous"

    def __init__(self, processor: Any, hidden_size: int, *, denoiser_width: int = 256, denoiser_depth: int = 3,
                 time_dim: int = 64, num_train_steps: int = 100, num_inference_steps: int = 10,
                 schedule: str = "cosine", sampler: str = "ddim", clip_sample: float | None = 1.0,
                 noise_repeats: int = 4, noise_seed: int | None = 0, **regression: Any):
        super().__init__(processor, hidden_size, **regression)
        if self.grounding is None:
            raise ModelError("regression_diffusion head: needs the grounding read-out (grounding_weight > 0)")
        if sampler not in SAMPLERS:
            raise ModelError(f"regression_diffusion head: sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        if int(noise_repeats) < 1:
            raise ModelError(f"regression_diffusion head: noise_repeats must be >= 1, got {noise_repeats}")
        del self.mlp  # the regression MLP is replaced by the denoiser
        self.processor = processor
        self.schedule = NoiseSchedule(num_train_steps, schedule)
        if not 1 <= int(num_inference_steps) <= self.schedule.num_train_steps:
            raise ModelError(f"regression_diffusion head: num_inference_steps must be in [1, {num_train_steps}], "
                             f"got {num_inference_steps}")
        self.cond_dim = int(self.grounding.in_features) + self.n_points
        self.denoiser = Denoiser(self.horizon, self.action_dim, self.cond_dim, denoiser_width, denoiser_depth,
                                 time_dim)
        self.num_inference_steps = int(num_inference_steps)
        self.sampler = sampler
        self.clip_sample = None if clip_sample is None or clip_sample <= 0 else float(clip_sample)
        self.noise_repeats = int(noise_repeats)
        self.noise_seed = noise_seed
        self._rng: torch.Generator | None = None
        self._cfg.update(denoiser_width=int(denoiser_width), denoiser_depth=int(denoiser_depth),
                         time_dim=int(time_dim), num_train_steps=int(num_train_steps), schedule=schedule,
                         clip_sample=self.clip_sample, noise_repeats=self.noise_repeats, noise_seed=noise_seed)

    def config_dict(self) -> dict:
        d = dict(self._cfg)
        d.update(num_inference_steps=self.num_inference_steps, sampler=self.sampler)
        return d

    # -------------------------------------------------------------- conditioning
    def condition(self, hidden: torch.Tensor, mask: torch.Tensor, state: torch.Tensor | None = None,
                  image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The regression condition with its grounding read-out appended (the last n_points columns)."""
        c = super().condition(hidden, mask, state, image_mask)
        assert self.grounding is not None
        return torch.cat([c, self.grounding(c)], dim=-1)

    def _points(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[:, -self.n_points:]

    # -------------------------------------------------------------- training
    def denoising_loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """x0-prediction MSE with `noise_repeats` (t, eps) draws per example, t ~ U{0 .. T-1}."""
        k = self.noise_repeats
        a = actions.float().repeat_interleave(k, 0)
        c = cond.repeat_interleave(k, 0)
        t = torch.randint(0, self.schedule.num_train_steps, (a.shape[0],), device=a.device)
        x_t = self.schedule.add_noise(a, torch.randn_like(a), t)
        return F.mse_loss(self.denoiser(x_t, t, c), a)

    def loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        if "actions" not in batch:
            raise ModelError("the regression_diffusion head needs batch['actions'] (normalized (B, H, D) chunks)")
        actions = batch["actions"]
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
        actions = actions.to(model_outputs.hidden_states.device).float()
        if tuple(actions.shape[1:]) != (self.horizon, self.action_dim):
            raise ModelError(f"regression_diffusion head: actions must be (B, {self.horizon}, {self.action_dim}), "
                             f"got {tuple(actions.shape)}")
        cond = self.condition_from(model_outputs, batch)
        loss = self.denoising_loss(cond, actions)
        total = self.loss_weight * loss
        self.aux_losses = {"action_denoising": loss.detach()}
        if batch.get("grounding") is not None:
            gl = self._grounding_l1(self._points(cond), batch["grounding"])
            if gl is not None:
                total = total + self.grounding_weight * gl
                self.aux_losses["grounding_loss"] = gl.detach()
        return total

    def grounding_query_loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        g = batch.get("grounding")
        if g is None:
            raise ModelError("a grounding batch needs batch['grounding']")
        cond = self.condition_from(model_outputs, batch)
        gl = self._grounding_l1(self._points(cond), g)
        return cond.sum() * 0.0 if gl is None else gl

    # -------------------------------------------------------------- sampling (as DiffusionActionHead)
    def make_noise(self, batch: int, device: Any = "cpu") -> torch.Tensor:
        shape = (int(batch), self.horizon, self.action_dim)
        if self.noise_seed is None:
            return torch.randn(shape, device=device)
        if self._rng is None:
            self._rng = torch.Generator().manual_seed(int(self.noise_seed))
        return torch.randn(shape, generator=self._rng).to(device)

    def reset_noise(self) -> None:
        self._rng = None

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
    def predict(self, policy: Any, prefix: dict, use_cache: bool | None = None, noise: Any = None
                ) -> tuple[np.ndarray, np.ndarray]:
        out = policy.run_backbone(prefix)
        arr = self.sample(self.condition_from(out, prefix), noise).float().cpu().numpy()
        return arr, np.all(np.isfinite(arr), axis=(1, 2))


def from_regression(head: RegressionActionHead, processor: Any, **diffusion: Any) -> RegressionDiffusionHead:
    """A regression_diffusion head carrying `head`'s condition weights (pooler, spatial, state, grounding) and a
    fresh denoiser (`diffusion`: denoiser_width, denoiser_depth, num_inference_steps, ...)."""
    if type(head) is not RegressionActionHead:
        raise ModelError(f"from_regression needs a 'regression' head, got {getattr(head, 'name', type(head))!r}")
    cfg = {k: v for k, v in head.config_dict().items() if k not in ("width", "depth", "dropout")}
    new = RegressionDiffusionHead(processor, head.hidden_size, **diffusion, **cfg)
    state = {k: v for k, v in head.state_dict().items() if not k.startswith("mlp.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("denoiser.") for k in missing):
        raise ModelError(f"from_regression: weights do not match (missing {missing}, unexpected {unexpected})")
    return new
