"""Pluggable action heads of the VLA.

An action head turns the backbone's output on an action batch into a loss, and an observation prefix into a
normalized action chunk. `VLAPolicy` (vla.py) owns one head; ETC batches always use the language-model loss.

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

Adding a head (e.g. the continuous diffusion head): write a class with that interface (an nn.Module if it has
parameters: VLAPolicy registers it, trains it and saves its weights to action_head.safetensors), use
`policy.run_backbone(prefix)` to get the prefix features (last hidden states + mask), and register it:
    register_action_head("diffusion", lambda processor, hidden_size, **cfg: DiffusionHead(hidden_size, **cfg))
with action_format = "continuous" so the processor leaves the action tokens out of the sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from etc_ros.core.errors import ModelError
from etc_ros.core.processor import IGNORE_INDEX, VLAProcessor


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


@torch.no_grad()
def greedy_decode(
    backbone: torch.nn.Module,
    prefix: dict,
    stop_ids: Iterable[int],
    max_new_tokens: int,
    allowed_ids: torch.Tensor | None = None,
    use_cache: bool = True,
    fixed_length: int | None = None,
) -> torch.Tensor:
    """Greedy generation after a (left-padded) prefix; returns (B, T) generated ids. Rows that emitted a stop
    id keep emitting it. `allowed_ids` restricts the choice (e.g. action tokens + the stop token).
    With use_cache=False every step recomputes the whole sequence (reference for tests).
    fixed_length: exactly that many tokens then the stop token (etc_ros.core.action_tokenizer.decode_phase, the
    same rule as the robot runtime)."""
    from etc_ros.core.action_tokenizer import decode_phase

    ids = prefix["input_ids"]
    am = prefix["attention_mask"]
    tt = prefix["token_type_ids"]
    pix = prefix["pixel_values"]
    B = ids.shape[0]
    device = ids.device
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long, device=device)
    if stops.numel() == 0:
        raise ModelError("greedy_decode needs at least one stop id")
    pos = am.cumsum(-1).clamp(min=1)  # PaliGemma positions are 1-indexed; left padding shifts nothing
    out = backbone(input_ids=ids, pixel_values=pix, attention_mask=am, token_type_ids=tt, position_ids=pos,
                   use_cache=use_cache, logits_to_keep=1)
    logits = out.logits[:, -1].float()
    vocab = logits.shape[-1]
    bias = None
    if allowed_ids is not None:
        bias = torch.full((vocab,), float("-inf"), device=device)
        bias[allowed_ids.to(device)] = 0.0
        bias[stops] = 0.0
    cache = out.past_key_values if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    gen: list[torch.Tensor] = []
    last_pos = pos[:, -1:]
    for step in range(int(max_new_tokens)):
        scores = logits if bias is None else logits + bias
        phase = decode_phase(step, fixed_length)
        if phase == "actions":
            scores = scores.clone()
            scores[:, stops] = float("-inf")
        nxt = scores.argmax(-1)
        if phase == "stop":
            nxt = stops[0].expand_as(nxt)
        nxt = torch.where(done, stops[0].expand_as(nxt), nxt)
        gen.append(nxt)
        done = done | torch.isin(nxt, stops)
        if bool(done.all()) or len(gen) == int(max_new_tokens):
            break
        am = torch.cat([am, am.new_ones(B, 1)], dim=1)
        last_pos = last_pos + 1
        if use_cache:
            out = backbone(input_ids=nxt[:, None], attention_mask=am, position_ids=last_pos,
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
        else:
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            tt = torch.cat([tt, tt.new_ones(B, 1)], dim=1)
            pos = torch.cat([pos, last_pos], dim=1)
            out = backbone(input_ids=ids, pixel_values=pix, attention_mask=am, token_type_ids=tt,
                           position_ids=pos, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1].float()
    if not gen:
        return torch.zeros(B, 0, dtype=torch.long, device=device)
    return torch.stack(gen, dim=1)


class TokenActionHead:
    """pi0-FAST-style head: action tokens are ordinary next tokens of the VLM. Loss = LM loss on the target
    ("Action: " + action tokens + "|" + <eos>); prediction = greedy decoding restricted to the action token
    block and the "|" stop token, with a KV cache."""

    name = "tokens"
    action_format = "tokens"

    def __init__(self, processor: VLAProcessor, use_cache: bool = True, max_new_tokens: int = 0):
        if processor.action_tokenizer is None:
            raise ModelError("TokenActionHead needs a processor with an action tokenizer")
        self.processor = processor
        self.use_cache = bool(use_cache)
        self.max_new_tokens = int(max_new_tokens)
        self.last_metrics: dict | None = None

    def config_dict(self) -> dict:
        return {"use_cache": self.use_cache, "max_new_tokens": self.max_new_tokens}

    def loss(self, model_outputs: BackboneOutputs, batch: dict) -> torch.Tensor:
        loss, acc, n = lm_loss(model_outputs, batch["labels"])
        # token accuracy of this very computation, for the policy's metrics (no second LM pass to report it)
        self.last_metrics = {"accuracy": acc, "tokens": n}
        return loss

    def predict(self, policy: Any, prefix: dict, use_cache: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        p = self.processor
        allowed = torch.as_tensor(p.action_ids, dtype=torch.long)
        max_new = self.max_new_tokens or (p.action_tokenizer.max_tokens + 1)
        fixed = p.action_tokenizer.fixed_length
        if fixed is not None:
            max_new = max(max_new, fixed + 1)
        gen = greedy_decode(
            policy.backbone, prefix, stop_ids=[p.stop_id], max_new_tokens=max_new, allowed_ids=allowed,
            use_cache=self.use_cache if use_cache is None else use_cache, fixed_length=fixed,
        ).cpu().numpy()
        chunks, valid = [], []
        for row in gen:
            c, ok = p.decode_actions(row, unnormalize=False)
            chunks.append(c)
            valid.append(ok)
        return np.stack(chunks).astype(np.float32), np.asarray(valid, dtype=bool)


HeadFactory = Callable[..., Any]


def _diffusion_head(processor: VLAProcessor, hidden_size: int, **cfg: Any):
    from etc_training.models.diffusion_head import DiffusionActionHead  # continuous head (diffusion_head.py)

    return DiffusionActionHead(processor, hidden_size, **cfg)


def _hybrid_head(processor: VLAProcessor, hidden_size: int, **cfg: Any):
    from etc_training.models.diffusion_head import HybridActionHead  # tokens + diffusion ("both")

    return HybridActionHead(processor, hidden_size, **cfg)


def _regression_head(processor: VLAProcessor, hidden_size: int, **cfg: Any):
    from etc_training.models.regression_head import RegressionActionHead  # one-pass L1 chunk regression

    return RegressionActionHead(processor, hidden_size, **cfg)


ACTION_HEADS: dict[str, HeadFactory] = {
    "tokens": lambda processor, hidden_size, **cfg: TokenActionHead(processor, **cfg),
    "regression": _regression_head,
    "diffusion": _diffusion_head,
    "both": _hybrid_head,
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
