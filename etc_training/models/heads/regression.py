"""ActionHead "regression": the whole action chunk in one forward pass, trained with an L1 loss (as OpenVLA-OFT
and ACT do). The default head for small data.

Why: the autoregressive token head needs every one of its 70 tokens right; one wrong token derails the rest of the
chunk (measured: 99.8 % token accuracy still left 14 % of chunks wrong), and it overfits within a few hundred
steps at this scale. A regression head has no exposure bias, costs one pass per chunk, and its errors are small
where the token head's are catastrophic.

It plugs into the continuous-head slot the diffusion head uses: `condition(hidden, mask)` pools the prefix hidden
states (PrefixPooler), `sample(cond, noise)` maps the condition to a normalized (B, H, D) chunk; the noise input is
accepted (and ignored) so the ONNX "head" graph and the runtime are the same for both heads.

Grounding (`grounding_weight` > 0): a linear read-out of the same condition vector predicts where the named object,
the place target and the gripper are in the image (normalized pixel coordinates from the dataset's per-frame
annotations and EE pose; the batch key "grounding" (B, 6), NaN where absent). It is ETC's scene-grounding
("where is the red block?") and action-aligned ("where is the gripper in the image") supervision in continuous
form: a dense, direct localization target on every action frame, trained on the very features the action is read
from. With `ground_to_action` the predicted points are also an input of the action MLP, so the chunk is computed
from where the model sees the object and the gripper (measured: the read-out alone localizes new scenes to ~1.3 px
at 96 px while the action MLP, reading the same features, missed by 6-10 cm).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.core.errors import ModelError
from etc_training.models.heads.base import PrefixPooler, batch_actions, chunk_shape, condition_mask

LOSSES = ("l1", "huber", "mse")


class InstructionSpatialAttention(nn.Module):
    """Instruction-conditioned spatial soft-argmax over the image tokens: queries from the instruction (mean of the
    text-token hidden states), keys from the image tokens; each head returns the expected (x, y) of its attention
    over the image-token grid and the attended value. "Find the named object" as one bilinear text-image match
    whose location comes out as coordinates (spatial softmax, as in deep visuomotor policies), rather than left
    for the MLP to decode from pooled features."""

    def __init__(self, hidden: int, grid: int, heads: int = 4, dim: int = 64):
        super().__init__()
        self.grid, self.heads, self.dim = int(grid), int(heads), int(dim)
        self.norm = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, heads * dim)
        self.k = nn.Linear(hidden, heads * dim, bias=False)
        self.v = nn.Linear(hidden, heads * dim)
        self.out_dim = heads * (dim + 2)

    def attention(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights (B, heads, L): each head's softmax over the image tokens, zero elsewhere; the image-token
        mask (B, L); the normalized hidden states (B, L, hidden)). What forward() reads its output from; also
        what `etc-vla analyze attention` records (etc_training/analysis/attention.py)."""
        h = self.norm(hidden.float())
        img = image_mask.to(h.dtype) * mask.to(h.dtype)
        txt = mask.to(h.dtype) * (1.0 - image_mask.to(h.dtype))
        t = (h * txt.unsqueeze(-1)).sum(1) / txt.sum(1, keepdim=True).clamp(min=1.0)
        B, L, _ = h.shape
        q = self.q(t).view(B, self.heads, self.dim)
        k = self.k(h).view(B, L, self.heads, self.dim)
        logits = torch.einsum("bhd,blhd->bhl", q, k) * self.dim ** -0.5
        logits = logits.masked_fill(img.unsqueeze(1) <= 0, -1e9)
        return torch.softmax(logits, dim=-1), img, h

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        w, img, h = self.attention(hidden, mask, image_mask)  # w: (B, heads, L)
        B, L, _ = h.shape
        v = self.v(h).view(B, L, self.heads, self.dim)
        idx = (torch.cumsum(img, dim=1) - 1.0).clamp(min=0.0)  # image-token index 0..G*G-1 at image positions
        gx = torch.remainder(idx, float(self.grid))
        gy = torch.div(idx - gx, float(self.grid))
        scale = 2.0 / max(1, self.grid - 1)
        xy = torch.stack([gx * scale - 1.0, gy * scale - 1.0], dim=-1)  # (B, L, 2) in [-1, 1]
        exy = torch.einsum("bhl,blc->bhc", w, xy)
        val = torch.einsum("bhl,blhd->bhd", w, v)
        return torch.cat([exy, val], dim=-1).flatten(1)


class RegressionActionHead(nn.Module):
    """Weights: pooler.* and mlp.*."""

    name = "regression"
    action_format = "continuous"

    def __init__(self, processor: Any, hidden_size: int, horizon: int | None = None, action_dim: int | None = None,
                 cond_dim: int = 256, n_queries: int = 8, width: int = 512, depth: int = 2, dropout: float = 0.0,
                 loss: str = "l1", loss_weight: float = 1.0, grounding_weight: float = 0.0,
                 grounding_points: int = 6, ground_to_action: bool = False, state_dim: int = 0,
                 state_features: int = 64, spatial_heads: int = 0, spatial_dim: int = 32):
        super().__init__()
        self.horizon, self.action_dim = chunk_shape(processor, horizon, action_dim)
        if loss not in LOSSES:
            raise ModelError(f"regression head: loss must be one of {list(LOSSES)}, got {loss!r}")
        if int(depth) < 1:
            raise ModelError(f"regression head: depth must be >= 1, got {depth}")
        self.hidden_size = int(hidden_size)
        self.pooler = PrefixPooler(self.hidden_size, cond_dim, n_queries)
        self.state_dim = int(state_dim)
        # the state embedding: normalized state (B, S) -> features appended to the pooled condition
        self.state_proj = (nn.Sequential(nn.Linear(self.state_dim, state_features), nn.GELU(),
                                         nn.Linear(state_features, state_features))
                           if self.state_dim > 0 else None)
        cond_dim = int(cond_dim) + (int(state_features) if self.state_dim > 0 else 0)
        self.spatial_heads = int(spatial_heads)
        self.spatial = None
        self.image_token_id = int(getattr(processor, "image_id", -1)) if processor is not None else -1
        if self.spatial_heads > 0:
            n_img = int(processor.config.image_tokens_per_view) if processor is not None else 36
            grid = int(round(n_img ** 0.5))
            if grid * grid != n_img or int(getattr(processor.config, "n_views", 1)) != 1:
                raise ModelError(f"regression head: spatial attention needs one square image-token grid, got "
                                 f"{n_img} tokens per view")
            self.spatial = InstructionSpatialAttention(self.hidden_size, grid, self.spatial_heads, int(spatial_dim))
            cond_dim += self.spatial.out_dim
        self.grounding_weight = float(grounding_weight)
        self.n_points = int(grounding_points)
        self.ground_to_action = bool(ground_to_action)
        if self.ground_to_action and self.grounding_weight <= 0:
            raise ModelError("regression head: ground_to_action needs grounding_weight > 0 (the points are learned)")
        self.grounding = nn.Linear(int(cond_dim), self.n_points) if self.grounding_weight > 0 else None
        layers: list[nn.Module] = []
        d = int(cond_dim) + (self.n_points if self.ground_to_action else 0)
        for _ in range(int(depth)):
            layers += [nn.Linear(d, width), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = int(width)
        layers.append(nn.Linear(d, self.horizon * self.action_dim))
        self.mlp = nn.Sequential(*layers)
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.loss_kind = loss
        self.loss_weight = float(loss_weight)
        self._cfg = dict(horizon=self.horizon, action_dim=self.action_dim, cond_dim=int(self.pooler.cond_dim),
                         n_queries=int(n_queries), width=int(width), depth=int(depth), dropout=float(dropout),
                         loss=loss, loss_weight=self.loss_weight, grounding_weight=self.grounding_weight,
                         grounding_points=self.n_points, ground_to_action=self.ground_to_action,
                         state_dim=self.state_dim, state_features=int(state_features),
                         spatial_heads=self.spatial_heads, spatial_dim=int(spatial_dim))

    def config_dict(self) -> dict:
        return dict(self._cfg)

    def condition(self, hidden: torch.Tensor, mask: torch.Tensor, state: torch.Tensor | None = None,
                  image_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.pooler(hidden, mask)
        if self.spatial is not None:
            if image_mask is None:
                raise ModelError("regression head: spatial attention needs the image-token mask")
            c = torch.cat([c, self.spatial(hidden, mask, image_mask.to(hidden.device))], dim=-1)
        if self.state_proj is None:
            return c
        if state is None:
            raise ModelError(f"regression head: this head takes the {self.state_dim}-D state (batch key 'state')")
        state = torch.as_tensor(state, dtype=c.dtype, device=c.device)
        if state.ndim != 2 or state.shape[1] != self.state_dim:
            raise ModelError(f"regression head: state must be (B, {self.state_dim}), got {tuple(state.shape)}")
        return torch.cat([c, self.state_proj(state)], dim=-1)

    def condition_from(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        tt = batch.get("token_type_ids") if hasattr(batch, "get") else None
        st = batch.get("state") if hasattr(batch, "get") else None
        if st is not None and not isinstance(st, torch.Tensor):
            st = torch.as_tensor(np.asarray(st), dtype=torch.float32)
        im = None
        if self.spatial is not None:
            ids = batch.get("input_ids")
            ids = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(np.asarray(ids))
            im = (ids == self.image_token_id).to(torch.float32)
        return self.condition(model_outputs.hidden_states, condition_mask(model_outputs.attention_mask, tt), st, im)

    def _forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(normalized chunks (B, H, D), grounding read-out (B, points) or None), the read-out computed once."""
        g = self.grounding(cond) if self.grounding is not None else None
        x = torch.cat([cond, g], dim=-1) if self.ground_to_action else cond
        return self.mlp(x).view(cond.shape[0], self.horizon, self.action_dim), g

    def sample(self, cond: torch.Tensor, noise: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """Normalized chunks (B, H, D). `noise` is ignored (one deterministic pass)."""
        return self._forward(cond)[0]

    def _grounding_l1(self, pred: torch.Tensor, target: Any) -> torch.Tensor | None:
        """L1 of the read-out against the target points (NaN slots ignored); None when nothing is labelled."""
        g = torch.as_tensor(target if isinstance(target, torch.Tensor) else np.asarray(target), dtype=torch.float32)
        g = g.to(pred.device)[:, : self.n_points]
        ok = torch.isfinite(g)
        return F.l1_loss(pred[ok], g[ok]) if bool(ok.any()) else None

    def loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        actions = batch_actions(batch, model_outputs.hidden_states.device, self.horizon, self.action_dim, self.name)
        cond = self.condition_from(model_outputs, batch)
        pred, g_pred = self._forward(cond)
        pred = pred.float()
        if self.loss_kind == "l1":
            loss = F.l1_loss(pred, actions)
        elif self.loss_kind == "huber":
            loss = F.smooth_l1_loss(pred, actions, beta=0.1)
        else:
            loss = F.mse_loss(pred, actions)
        total = self.loss_weight * loss
        self.aux_losses = {"action_l1" if self.loss_kind == "l1" else "action_regression": loss.detach()}
        if g_pred is not None and batch.get("grounding") is not None:
            gl = self._grounding_l1(g_pred, batch["grounding"])
            if gl is not None:
                total = total + self.grounding_weight * gl
                self.aux_losses["grounding_loss"] = gl.detach()
        return total

    def grounding_query_loss(self, model_outputs: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """L1 of the grounding read-out against batch["grounding"] (B, 6; NaN slots ignored): grounding questions
        that name any object of the scene (RecipeData grounding batches)."""
        if self.grounding is None:
            raise ModelError("regression head: grounding questions need grounding_weight > 0")
        g = batch.get("grounding")
        if g is None:
            raise ModelError("a grounding batch needs batch['grounding']")
        cond = self.condition_from(model_outputs, batch)
        gl = self._grounding_l1(self.grounding(cond), g)
        return cond.sum() * 0.0 if gl is None else gl

    @torch.no_grad()
    def predict(self, policy: Any, prefix: dict, use_cache: bool | None = None, noise: Any = None
                ) -> tuple[np.ndarray, np.ndarray]:
        out = policy.run_backbone(prefix)
        arr = self.sample(self.condition_from(out, prefix)).float().cpu().numpy()
        return arr, np.all(np.isfinite(arr), axis=(1, 2))
