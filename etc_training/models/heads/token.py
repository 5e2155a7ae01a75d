"""ActionHead "tokens" (pi0-FAST style): action tokens are ordinary next tokens of the VLM; greedy decoding
with a KV cache restricted to the action-token block and the stop token (`greedy_decode`, the rule the robot
runtime mirrors in etc_ros.policy.runtime.GraphPolicy.generate).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from etc_ros.core.errors import ModelError
from etc_ros.core.processor import VLAProcessor
from etc_training.models.heads.base import BackboneOutputs, lm_loss


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
