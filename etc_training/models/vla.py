"""VLAPolicy: VLM backbone (transformers PaliGemma) + VLAProcessor + action head + normalization stats.

    policy = VLAPolicy.build("tiny", action_chunks=raw_chunks, states=raw_states)   # random init, offline
    policy = VLAPolicy.build("paligemma-3b", backbone_path="/models/paligemma-3b-pt-224", action_chunks=...)
    batch = policy.processor.collate([policy.processor.build_action_example(img, s, "put ...", chunk), ...])
    out = policy(batch); out["loss"].backward()
    chunk = policy.predict_chunk(img, state, "put the cube in the bowl")        # (H, 7) raw units
    policy.save("runs/ckpt"); policy = VLAPolicy.load("runs/ckpt")

Checkpoint directory: config.json + model.safetensors (+ generation_config.json) of the backbone,
processor.json, tokenizer.json, action_tokenizer.json, norm_stats.json, vla.json, and action_head.safetensors
when the head has parameters. The processor files are all the robot runtime needs besides the exported model.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from etc_ros.core.action_tokenizer import (
    ActionTokenizer,
    BinningActionTokenizer,
    FastActionTokenizer,
)
from etc_ros.core.errors import ModelError
from etc_ros.core.normalize import NormStats
from etc_ros.core.processor import ProcessorConfig, VLAProcessor
from etc_training.models.heads.base import BackboneOutputs, lm_loss
from etc_training.models.heads.factory import TOKEN_FORMAT_HEADS, make_action_head
from etc_training.models.presets import ModelPreset, get_preset
from etc_training.models.text_tokenizer import ACTION_TOKEN_FMT, IMAGE, build_text_tokenizer

VLA_FILE = "vla.json"
HEAD_WEIGHTS_FILE = "action_head.safetensors"
FORMAT = "etc-vla-policy"
# Actions: min/max, never clipped (a quantile clip makes half the expert's own demonstrations unreproducible);
# the state keeps quantiles (outliers only shift an input).
DEFAULT_NORM_MODES = {"action": "minmax", "state": "quantile"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def _load_backbone(path: Path, dtype: torch.dtype):
    """A PaliGemma checkpoint directory (config.json + safetensors), local files only."""
    from transformers import AutoConfig, PaliGemmaForConditionalGeneration

    if not (path / "config.json").is_file():
        raise ModelError(f"not a model directory (no config.json): {path}")
    try:
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise ModelError(f"{path}: cannot read the model config: {e}") from None
    if cfg.model_type != "paligemma":
        # Other image-text-to-text VLMs differ in how images become tokens (tiling, dynamic resolution,
        # special wrappers); each needs its own processor layout before it can be plugged in here.
        raise ModelError(
            f"{path}: model_type {cfg.model_type!r} is not supported; only PaliGemma-architecture checkpoints "
            "(model_type 'paligemma') can be used as the VLA backbone"
        )
    try:
        return PaliGemmaForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except OSError as e:
        raise ModelError(f"{path}: cannot load the checkpoint weights: {e}") from None


def _load_conv_backbone(path: Path, preset: Mapping[str, Any], dtype: torch.dtype):
    """A checkpoint whose SigLIP tower was replaced by the ConvVisionTower: transformers loads the decoder and
    projector (with its own checkpoint key mapping), then the conv tower is installed and its weights loaded
    strictly from the same safetensors."""
    from safetensors.torch import load_file
    from transformers.utils import logging as hf_logging

    from etc_training.models.conv_vision import install_conv_tower

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the SigLIP tower it builds is replaced right below: its warnings are noise
    try:
        backbone = _load_backbone(path, dtype)
    finally:
        hf_logging.set_verbosity(level)
    size, patch = int(preset["image_size"]), int(preset["patch_size"])
    tower = install_conv_tower(backbone, size, size // patch, int(preset.get("conv_width", 32)))
    state: dict = {}
    for f in sorted(path.glob("model*.safetensors")):
        for k, v in load_file(str(f)).items():
            if "vision_tower." in k:
                state[k.split("vision_tower.", 1)[1]] = v
    try:
        tower.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{path}: conv vision tower weights do not match the preset: {e}") from None
    return backbone.to(dtype)


def _action_block(tokenizer: Any, preset: ModelPreset) -> tuple[int, int]:
    """(offset, size) of the reserved action-token block at the top of the vocabulary."""
    first = tokenizer.token_to_id(ACTION_TOKEN_FMT.format(0))
    if first is not None:  # our own tokenizer: <act_0> ... <act_{N-1}> are the top ids
        n = 0
        while tokenizer.token_to_id(ACTION_TOKEN_FMT.format(n)) == first + n:
            n += 1
        return int(first), n
    # A checkpoint tokenizer (PaliGemma): take the highest base-vocabulary ids below `action_skip_top`
    # reserved ones, as pi0-FAST does.
    top = tokenizer.get_vocab_size(with_added_tokens=False)
    off = top - preset.action_skip_top - preset.n_action_tokens
    if off < 0:
        raise ModelError(f"vocabulary of {top} ids is too small for {preset.n_action_tokens} action tokens")
    return int(off), int(preset.n_action_tokens)


def _make_action_tokenizer(preset: ModelPreset, action_tokenizer: ActionTokenizer | None,
                           normalized_chunks: np.ndarray | None) -> ActionTokenizer:
    if action_tokenizer is not None:
        at = action_tokenizer
    elif preset.action_tokenizer == "bin":
        at = BinningActionTokenizer(preset.n_bins, preset.action_dim, preset.horizon)
    elif preset.action_tokenizer == "fast":
        if normalized_chunks is None:
            raise ModelError(
                "the FAST action tokenizer must be fitted on action data: pass action_chunks= (raw (N, H, D) "
                "chunks) or a fitted action_tokenizer="
            )
        at = FastActionTokenizer(preset.action_dim, preset.horizon, scale=preset.fast_scale,
                                 max_vocab_size=preset.fast_vocab_size).fit(normalized_chunks)
    else:
        raise ModelError(f"unknown action tokenizer {preset.action_tokenizer!r}; use 'fast' or 'bin'")
    if (at.horizon, at.action_dim) != (preset.horizon, preset.action_dim):
        raise ModelError(
            f"action tokenizer shape ({at.horizon}, {at.action_dim}) != preset ({preset.horizon}, {preset.action_dim})"
        )
    if isinstance(at, FastActionTokenizer) and not at.fitted:
        if normalized_chunks is None:
            raise ModelError("the given FastActionTokenizer is not fitted and no action_chunks were passed")
        at.fit(normalized_chunks)
    return at


class VLAPolicy(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, processor: VLAProcessor, action_head: Any,
                 meta: Mapping[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.processor = processor
        self.action_head = action_head  # an nn.Module head is registered: trained, moved and saved with the policy
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        preset: str | ModelPreset = "tiny",
        *,
        backbone_path: str | Path | None = None,
        action_tokenizer: ActionTokenizer | None = None,
        action_chunks: Any = None,
        states: Any = None,
        norm_stats: Mapping[str, NormStats] | None = None,
        head: str = "tokens",
        head_config: Mapping[str, Any] | None = None,
        seed: int = 0,
        norm_modes: Mapping[str, str] | None = None,
        **preset_overrides: Any,
    ) -> "VLAPolicy":
        """A new policy. Random init from the preset, or the weights and tokenizer of a local PaliGemma
        checkpoint (`backbone_path`). Norm stats missing from `norm_stats` are computed from `action_chunks`
        (raw (N, H, D)) and `states` (raw (N, D)) with `norm_modes` ({"action": "minmax", "state": "quantile"} by
        default: actions are never clipped); the FAST tokenizer is fitted on the normalized chunks."""
        p = get_preset(preset, **preset_overrides)
        modes = {**DEFAULT_NORM_MODES, **dict(norm_modes or {})}
        stats = dict(norm_stats or {})
        chunks = None
        if action_chunks is not None:
            chunks = np.asarray(action_chunks, dtype=np.float64)
            if chunks.ndim != 3 or chunks.shape[1:] != (p.horizon, p.action_dim):
                raise ModelError(f"action_chunks must have shape (N, {p.horizon}, {p.action_dim}), got {chunks.shape}")
            if "action" not in stats:
                stats["action"] = NormStats.from_data(chunks, mode=modes["action"])
        if states is not None and "state" not in stats:
            stats["state"] = NormStats.from_data(np.asarray(states, dtype=np.float64), mode=modes["state"])
        normalized = stats["action"].normalize(chunks) if chunks is not None else None
        if "action" not in stats:
            stats["action"] = NormStats.identity(p.action_dim)

        dtype = _dtype(p.dtype)
        if backbone_path is not None:
            path = Path(backbone_path)
            backbone = _load_backbone(path, dtype)
            from etc_ros.core.processor import _load_tokenizer

            tokenizer = _load_tokenizer(path / "tokenizer.json")
        else:
            if p.requires_checkpoint:
                raise ModelError(f"preset {p.name!r} loads pretrained weights: "
                                 "pass backbone_path=<local checkpoint dir>")
            from transformers import PaliGemmaForConditionalGeneration

            tokenizer = build_text_tokenizer(p.text_vocab_size, p.n_action_tokens)
            vocab = tokenizer.get_vocab_size(with_added_tokens=True)
            cfg = p.backbone_config(vocab_size=vocab, image_token_id=tokenizer.token_to_id(IMAGE))
            torch.manual_seed(seed)
            backbone = PaliGemmaForConditionalGeneration(cfg).to(dtype)
            if p.vision_tower == "conv":
                from etc_training.models.conv_vision import install_conv_tower

                install_conv_tower(backbone, p.image_size, p.image_size // p.patch_size, p.conv_width)
        bcfg = backbone.config
        offset, n_act = _action_block(tokenizer, p)
        if offset + n_act > bcfg.text_config.vocab_size:
            raise ModelError(f"action block [{offset}, {offset + n_act}) exceeds the model vocabulary "
                             f"({bcfg.text_config.vocab_size})")
        at = _make_action_tokenizer(p, action_tokenizer, normalized)
        pcfg = ProcessorConfig(
            image_size=int(bcfg.vision_config.image_size),
            image_tokens_per_view=int(bcfg.text_config.num_image_tokens),
            n_views=p.n_views,
            max_length=p.max_length,
            action_token_offset=offset,
            n_action_tokens=n_act,
            action_format="tokens" if head in TOKEN_FORMAT_HEADS else "continuous",
            use_state=p.use_state,
            state_embedding=p.state_embedding,
        )
        if tokenizer.token_to_id(pcfg.image_token) != bcfg.image_token_index:
            raise ModelError(f"tokenizer's {pcfg.image_token} id {tokenizer.token_to_id(pcfg.image_token)} != "
                             f"the model's image_token_index {bcfg.image_token_index}")
        processor = VLAProcessor(tokenizer, pcfg, at, stats)
        hc = dict(head_config or {})
        if p.state_embedding and head not in ("regression", "regression_diffusion"):
            raise ModelError(f"preset {p.name}: state_embedding needs the 'regression' head (got {head!r})")
        if p.state_embedding:
            hc.setdefault("state_dim", p.action_dim)
        action_head = make_action_head(head, processor, int(bcfg.text_config.hidden_size), hc)
        meta = {
            "preset": asdict(p),
            "head": {"type": head, "config": action_head.config_dict()},
            "backbone_path": str(backbone_path) if backbone_path is not None else None,
            "seed": seed,
        }
        return cls(backbone, processor, action_head, meta)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def num_parameters(self) -> int:
        seen, n = set(), 0
        for prm in self.parameters():
            if id(prm) not in seen:
                seen.add(id(prm))
                n += prm.numel()
        return n

    # ------------------------------------------------------------------ forward
    def to_torch(self, batch: Mapping[str, Any]) -> dict:
        """numpy batch (processor.collate) -> tensors on the policy's device; pixel_values (B, V, 3, S, S) are
        flattened to (B * V, 3, S, S) in the backbone's dtype."""
        out: dict[str, Any] = {}
        for k, v in batch.items():
            if isinstance(v, np.ndarray):
                v = torch.from_numpy(v)
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if k == "pixel_values":
                    if v.ndim == 5:
                        v = v.reshape(-1, *v.shape[2:])
                    v = v.to(self.dtype)
                elif k == "actions":
                    v = v.float()
            out[k] = v
        for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values"):
            if k not in out:
                raise ModelError(f"batch is missing {k!r}")
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.backbone.lm_head(hidden)
        cap = getattr(self.backbone.config.get_text_config(), "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def run_backbone(self, batch: Mapping[str, Any]) -> BackboneOutputs:
        """Prefix-LM pass over a (right- or left-padded) batch; returns the last hidden states. token_type_ids are
        always passed: PaliGemma's Gemma runs non-causal attention when no mask is materialized."""
        b = self.to_torch(batch)  # idempotent on an already converted batch
        am = b["attention_mask"]
        pos = am.cumsum(-1).clamp(min=1)
        out = self.backbone.model(
            input_ids=b["input_ids"], pixel_values=b["pixel_values"], attention_mask=am,
            token_type_ids=b["token_type_ids"], position_ids=pos, use_cache=False,
        )
        return BackboneOutputs(hidden_states=out.last_hidden_state, attention_mask=am, logits_fn=self.logits)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Loss of one batch (one kind: "action" or "etc"): {"loss", "<kind>_loss", "<kind>_accuracy"?,
        "<kind>_tokens"}."""
        b = self.to_torch(batch)
        kind = b.get("kind", "action")
        outputs = self.run_backbone(b)
        if kind == "etc":
            if "labels" not in b:
                raise ModelError("an ETC batch needs labels")
            loss, acc, n = lm_loss(outputs, b["labels"])
            return {"loss": loss, "etc_loss": loss.detach(), "etc_accuracy": acc, "etc_tokens": torch.tensor(n)}
        if kind == "grounding":
            fn = getattr(self.action_head, "grounding_query_loss", None)
            if fn is None:
                raise ModelError(f"a grounding batch needs a head with a grounding read-out, not "
                                 f"{getattr(self.action_head, 'name', type(self.action_head).__name__)!r}")
            loss = fn(outputs, b)
            return {"loss": loss, "grounding_query_loss": loss.detach()}
        if kind != "action":
            raise ModelError(f"unknown batch kind {kind!r}; use 'action', 'etc' or 'grounding'")
        loss = self.action_head.loss(outputs, b)
        res = {"loss": loss, "action_loss": loss.detach()}
        metrics = getattr(self.action_head, "last_metrics", None)  # token heads: accuracy of the same LM pass
        if metrics:
            res["action_accuracy"] = metrics["accuracy"]
            res["action_tokens"] = torch.tensor(metrics["tokens"])
        for k, v in (getattr(self.action_head, "aux_losses", None) or {}).items():
            res[k] = v
        return res

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_chunks(self, observations: Sequence[Mapping[str, Any]], use_cache: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
        """observations: [{"images", "state", "instruction"}, ...] -> (chunks (B, H, D) raw units, valid (B,))."""
        if not observations:
            raise ModelError("predict_chunks needs at least one observation")
        was_training = self.training
        self.eval()
        try:
            exs = [self.processor.build_inference_prompt(o["images"], o.get("state"), o["instruction"])
                   for o in observations]
            prefix = self.to_torch(self.processor.collate(exs, padding_side="left"))
            norm, valid = self.action_head.predict(self, prefix, use_cache=use_cache)
        finally:
            self.train(was_training)
        chunks = self.processor.unnormalize_actions(norm)
        return chunks, valid & np.all(np.isfinite(chunks), axis=(1, 2))

    def predict_chunk(self, images: Any, state: Any, instruction: str, return_valid: bool = False):
        """One observation -> (H, D) action chunk in raw units (and whether it decoded cleanly)."""
        chunks, valid = self.predict_chunks([{"images": images, "state": state, "instruction": instruction}])
        return (chunks[0], bool(valid[0])) if return_valid else chunks[0]

    @torch.no_grad()
    def generate_answer(self, images: Any, question: str, max_new_tokens: int = 64) -> str:
        """Greedy ETC answer to a question about the image(s)."""
        from etc_training.models.heads.token import greedy_decode

        was_training = self.training
        self.eval()
        try:
            ex = self.processor.build_etc_prompt(question, images)
            prefix = self.to_torch(self.processor.collate([ex], padding_side="left"))
            gen = greedy_decode(self.backbone, prefix, stop_ids=[self.processor.eos_id],
                                max_new_tokens=max_new_tokens)
        finally:
            self.train(was_training)
        return self.processor.decode_text(gen[0].tolist())

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint directory (replaced as a whole: a crash leaves the old or the new one)."""
        d = Path(directory)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="." + d.name + ".", dir=str(d.parent)))
        try:
            self.backbone.save_pretrained(str(tmp), safe_serialization=True)
            self.processor.save(tmp)
            if isinstance(self.action_head, torch.nn.Module) and any(True for _ in self.action_head.parameters()):
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in self.action_head.state_dict().items()},
                          str(tmp / HEAD_WEIGHTS_FILE))
            meta = dict(self.meta)
            meta.update({"format": FORMAT, "version": 1, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "backbone_class": type(self.backbone).__name__,
                         "num_parameters": self.num_parameters()})
            (tmp / VLA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            old = None
            if d.exists():
                old = d.with_name(d.name + ".old-" + tmp.name.rsplit(".", 1)[-1])
                d.rename(old)
            tmp.rename(d)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> "VLAPolicy":
        d = Path(directory)
        if not (d / VLA_FILE).is_file():
            raise ModelError(f"not a VLA checkpoint (no {VLA_FILE}): {d}")
        try:
            meta = json.loads((d / VLA_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{d / VLA_FILE}: invalid JSON: {e}") from None
        if meta.get("format") != FORMAT:
            raise ModelError(f"{d / VLA_FILE}: not an etc-vla policy checkpoint")
        processor = VLAProcessor.load(d)
        preset_meta = meta.get("preset") or {}
        preset_dtype = preset_meta.get("dtype", "float32")
        if preset_meta.get("vision_tower", "siglip") == "conv":
            backbone = _load_conv_backbone(d, preset_meta, _dtype(dtype or preset_dtype))
        else:
            backbone = _load_backbone(d, _dtype(dtype or preset_dtype))
        head_meta = meta.get("head") or {"type": "tokens", "config": {}}
        head = make_action_head(head_meta["type"], processor, int(backbone.config.text_config.hidden_size),
                                head_meta.get("config") or {})
        if (d / HEAD_WEIGHTS_FILE).is_file():
            if not isinstance(head, torch.nn.Module):
                raise ModelError(f"{d}: head weights present but head {head_meta['type']!r} has no parameters")
            from safetensors.torch import load_file

            head.load_state_dict(load_file(str(d / HEAD_WEIGHTS_FILE)))
        for k in ("format", "version", "saved_at", "backbone_class", "num_parameters"):
            meta.pop(k, None)
        policy = cls(backbone, processor, head, meta)
        return policy.to(device)
