"""The action-head registry: a head name (stored in the checkpoint's vla.json) -> factory(processor, hidden_size,
**config) -> head.

    head = make_action_head("diffusion", processor, hidden_size, {"num_inference_steps": 10})

Adding a head (e.g. the continuous diffusion head): write a class with that interface (an nn.Module if it has
parameters: VLAPolicy registers it, trains it and saves its weights to action_head.safetensors), use
`policy.run_backbone(prefix)` to get the prefix features (last hidden states + mask), and register it:
    register_action_head("diffusion", lambda processor, hidden_size, **cfg: DiffusionHead(hidden_size, **cfg))
with action_format = "continuous" so the processor leaves the action tokens out of the sequence.
"""
from __future__ import annotations

from typing import Any, Callable

from etc_ros.core.errors import ModelError
from etc_ros.core.processor import VLAProcessor
from etc_training.models.heads.diffusion import DiffusionActionHead
from etc_training.models.heads.hybrid import HybridActionHead
from etc_training.models.heads.regression import RegressionActionHead
from etc_training.models.heads.regression_diffusion import RegressionDiffusionHead
from etc_training.models.heads.token import TokenActionHead

HeadFactory = Callable[..., Any]


ACTION_HEADS: dict[str, HeadFactory] = {
    "tokens": lambda processor, hidden_size, **cfg: TokenActionHead(processor, **cfg),
    "regression": RegressionActionHead,  # one-pass L1 chunk regression
    "diffusion": DiffusionActionHead,  # continuous head
    "both": HybridActionHead,  # tokens + diffusion
    "regression_diffusion": RegressionDiffusionHead,  # the regression head's condition + a diffusion denoiser
}
# Heads whose processor format is "tokens" (the action tokens are the LM target); every other head is continuous.
TOKEN_FORMAT_HEADS = {"tokens", "both"}


def register_action_head(name: str, factory: HeadFactory) -> None:
    """factory(processor, hidden_size, **config) -> head."""
    ACTION_HEADS[name] = factory


def make_action_head(name: str, processor: VLAProcessor, hidden_size: int, config: dict | None = None):
    if name not in ACTION_HEADS:
        raise ModelError(f"unknown action head {name!r}; known: {sorted(ACTION_HEADS)}")
    try:
        head = ACTION_HEADS[name](processor, hidden_size, **(config or {}))
    except TypeError as e:
        raise ModelError(f"action head {name!r}: bad config {config}: {e}") from None
    if head.action_format != processor.config.action_format:
        raise ModelError(
            f"action head {name!r} wants action_format {head.action_format!r} but the processor builds "
            f"{processor.config.action_format!r}"
        )
    return head
