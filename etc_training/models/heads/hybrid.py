"""ActionHead "both": the token head and the diffusion head trained together on the same prefix.

`diffusion_part(head)` is the diffusion head of a "diffusion" or "both" head (what SDM distillation and the
export read).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from etc_ros.core.errors import ModelError
from etc_training.models.heads.diffusion import DiffusionActionHead
from etc_training.models.heads.token import TokenActionHead


class HybridActionHead(nn.Module):
    """ActionHead "both" (action_format "tokens"): LM loss on the action tokens + the diffusion loss on the
    same prefix, summed (token_weight, diffusion.loss_weight). Predicts with `predict_with`."""

    name = "both"
    action_format = "tokens"

    def __init__(self, processor: Any, hidden_size: int, token_weight: float = 1.0, predict_with: str = "diffusion",
                 tokens: Mapping[str, Any] | None = None, diffusion: Mapping[str, Any] | None = None):
        super().__init__()
        if predict_with not in ("diffusion", "tokens"):
            raise ModelError(f"head 'both': predict_with must be 'diffusion' or 'tokens', got {predict_with!r}")
        self.tokens = TokenActionHead(processor, **dict(tokens or {}))
        self.diffusion = DiffusionActionHead(processor, hidden_size, **dict(diffusion or {}))
        self.token_weight = float(token_weight)
        self.predict_with = predict_with

    def config_dict(self) -> dict:
        return {"token_weight": self.token_weight, "predict_with": self.predict_with,
                "tokens": self.tokens.config_dict(), "diffusion": self.diffusion.config_dict()}

    @property
    def last_metrics(self) -> dict | None:
        return self.tokens.last_metrics

    def loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.token_weight * self.tokens.loss(model_outputs, batch) + self.diffusion.loss(model_outputs, batch)

    def predict(self, policy: Any, prefix: dict, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.predict_with == "tokens":
            return self.tokens.predict(policy, prefix, use_cache=kw.get("use_cache"))
        return self.diffusion.predict(policy, prefix, noise=kw.get("noise"))


def diffusion_part(head: Any) -> DiffusionActionHead:
    """The diffusion sampler of a "diffusion", "regression_diffusion" or "both" head (ModelError otherwise): an
    object with condition_from, sample, denoiser, schedule, sampler and num_inference_steps."""
    from etc_training.models.heads.regression_diffusion import RegressionDiffusionHead

    if isinstance(head, (DiffusionActionHead, RegressionDiffusionHead)):
        return head  # type: ignore[return-value]  # same sampling interface
    if isinstance(head, HybridActionHead):
        return head.diffusion
    raise ModelError(f"the policy's action head {getattr(head, 'name', type(head).__name__)!r} is not a "
                     "diffusion head: train with model.head=diffusion (or both)")


def make_hybrid_head(processor: Any, hidden_size: int, **cfg: Any) -> HybridActionHead:
    return HybridActionHead(processor, hidden_size, **cfg)
