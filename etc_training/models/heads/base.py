"""What every action head shares: the interface, the backbone outputs a head reads, the language-model loss and
the prefix conditioning of the continuous heads.

An action head turns the backbone's output on an action batch into a loss, and an observation prefix into a
normalized action chunk. `VLAPolicy` (etc_training/models/vla.py) owns one head; ETC batches always use the
language-model loss.

Interface (`ActionHead` protocol):
    name: str                                   registry key, stored in the checkpoint's vla.json
    action_format: str                          "tokens" (targets are action tokens in the VLM vocabulary) or
                                                "continuous" (the processor builds prompt-only sequences and
                                                the head reads batch["actions"], normalized (B, H, D))
    loss(model_outputs, batch) -> tensor        model_outputs: BackboneOutputs (last hidden states (B, L, E),
                                                attention mask, logits_fn mapping hidden states to vocab logits)
    predict(policy, prefix, ...) -> (chunks, valid)
                                                prefix: torch batch from processor.build_inference_prompt +
                                                collate(padding_side="left"); chunks: normalized (B, H, D)
                                                numpy, valid: (B,) bool
    config_dict() -> dict                       constructor arguments saved with the checkpoint

Continuous heads (diffusion, regression) condition on the prefix alone: `condition_mask` picks the positions
(attended and token type 0), `PrefixPooler` pools their hidden states into one vector, `chunk_shape` gives the
(horizon, action_dim) they predict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import ModelError
from etc_ros.core.processor import IGNORE_INDEX


@dataclass
class BackboneOutputs:
    hidden_states: torch.Tensor  # (B, L, E) last layer, after the final norm
    attention_mask: torch.Tensor  # (B, L)
    logits_fn: Callable[[torch.Tensor], torch.Tensor]  # hidden (..., E) -> logits (..., V)


@runtime_checkable
class ActionHead(Protocol):
    name: str
    action_format: str

    def loss(self, model_outputs: BackboneOutputs, batch: dict) -> torch.Tensor: ...

    def predict(self, policy: Any, prefix: dict, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def config_dict(self) -> dict: ...


def lm_loss(outputs: BackboneOutputs, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Next-token cross-entropy on positions whose label is not -100. Logits are computed only there (the
    vocabulary of a real checkpoint is 257k wide). Returns (mean loss, token accuracy, number of tokens)."""
    h = outputs.hidden_states[:, :-1]
    tgt = labels[:, 1:]
    sel = tgt != IGNORE_INDEX
    n = int(sel.sum())
    if n == 0:
        zero = outputs.hidden_states.sum() * 0.0
        return zero, zero.detach(), 0
    logits = outputs.logits_fn(h[sel]).float()
    y = tgt[sel]
    loss = F.cross_entropy(logits, y)
    acc = (logits.argmax(-1) == y).float().mean().detach()
    return loss, acc, n


def chunk_shape(processor: Any, horizon: int | None, action_dim: int | None) -> tuple[int, int]:
    """(horizon, action_dim) of a continuous head: given, else the processor's action tokenizer's, else the spec's
    (CHUNK_HORIZON, ACTION_DIM)."""
    at = getattr(processor, "action_tokenizer", None) if processor is not None else None
    h = horizon if horizon is not None else (at.horizon if at is not None else robot_spec.CHUNK_HORIZON)
    d = action_dim if action_dim is not None else (at.action_dim if at is not None else robot_spec.ACTION_DIM)
    return int(h), int(d)


def condition_mask(attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Prefix positions the head may pool over: attended and (when given) token type 0. float (B, L)."""
    m = attention_mask.to(torch.float32)
    if token_type_ids is not None:
        m = m * (token_type_ids == 0).to(torch.float32)
    return m


class PrefixPooler(nn.Module):
    """(B, L, E) prefix hidden states + (B, L) mask -> (B, cond_dim): masked mean + attention pooling."""

    def __init__(self, hidden_size: int, cond_dim: int = 256, n_queries: int = 4):
        super().__init__()
        self.hidden_size, self.cond_dim, self.n_queries = int(hidden_size), int(cond_dim), int(n_queries)
        self.norm_in = nn.LayerNorm(self.hidden_size)
        if self.n_queries > 0:
            self.queries = nn.Parameter(torch.randn(self.n_queries, self.hidden_size) * self.hidden_size ** -0.5)
            self.key = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        d_in = self.hidden_size * (1 + self.n_queries)
        self.out = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, self.cond_dim), nn.GELU(),
                                 nn.Linear(self.cond_dim, self.cond_dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(hidden.float())
        m = mask.to(h.dtype)
        denom = m.sum(1, keepdim=True).clamp(min=1.0)
        parts = [(h * m.unsqueeze(-1)).sum(1) / denom]
        if self.n_queries > 0:
            # q . (W_k h) == (W_k^T q) . h: fold the key projection into the (constant) queries, so the cost
            # is Q x L x E instead of L x E x E (same parameters, same result up to float rounding)
            qk = self.queries @ self.key.weight  # (Q, E)
            logits = torch.einsum("qe,ble->bql", qk, h) * self.hidden_size ** -0.5
            logits = logits.masked_fill(m.unsqueeze(1) <= 0, -1e9)
            w = torch.softmax(logits, dim=-1)  # (B, Q, L)
            parts.append(torch.einsum("bql,ble->bqe", w, h).flatten(1))
        return self.out(torch.cat(parts, dim=-1))


def batch_actions(batch: Mapping[str, Any], device: Any, horizon: int, action_dim: int, head: str) -> torch.Tensor:
    """batch["actions"] as a float tensor (B, horizon, action_dim) on `device`; ModelError naming the head when
    it is missing or has another shape (continuous heads train on the processor's normalized chunks)."""
    if "actions" not in batch:
        raise ModelError(f"the {head} head needs batch['actions'] (normalized (B, H, D) chunks)")
    actions = batch["actions"]
    if not isinstance(actions, torch.Tensor):
        actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
    actions = actions.to(device).float()
    if tuple(actions.shape[1:]) != (horizon, action_dim):
        raise ModelError(f"{head} head: actions must be (B, {horizon}, {action_dim}), got {tuple(actions.shape)}")
    return actions
