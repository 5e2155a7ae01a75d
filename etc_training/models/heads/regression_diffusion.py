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

import torch

from etc_ros.core.errors import ModelError
from etc_training.models.heads.base import batch_actions
from etc_training.models.heads.diffusion import SAMPLERS, Denoiser, DiffusionSampling, NoiseSchedule
from etc_training.models.heads.regression import RegressionActionHead


class RegressionDiffusionHead(DiffusionSampling, RegressionActionHead):
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
    def loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        actions = batch_actions(batch, model_outputs.hidden_states.device, self.horizon, self.action_dim, self.name)
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
