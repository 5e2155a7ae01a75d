"""Model presets: the PaliGemma-architecture backbone (SigLIP vision tower + Gemma decoder) and everything the
processor needs to match it.

- "tiny": random init, CPU-sized, for tests and the offline demo (224 px images, 32 px patches -> 49 image
  tokens, SigLIP 64-wide x 2 layers, Gemma 128-wide x 3 layers, 2048 text ids + 1024 action ids).
- "paligemma-3b": the paper's backbone (PaliGemma-3B-pt-224: SigLIP So400m/14 + Gemma-2B). Configuration only:
  it must be loaded from a local checkpoint directory (`backbone_path`); its own tokenizer.json is used and the
  action tokens take the top of its vocabulary below the 128 highest ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import ModelError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    vision: dict = field(default_factory=dict)  # SiglipVisionConfig kwargs (image_size / patch_size below)
    text: dict = field(default_factory=dict)  # GemmaConfig kwargs (vocab_size comes from the tokenizer)
    image_size: int = robot_spec.IMAGE_SIZE
    patch_size: int = 32
    projection_dim: int = 128
    text_vocab_size: int = 2048  # own tokenizer: text ids (specials + BPE + fillers)
    n_action_tokens: int = 1024  # reserved block at the top of the vocabulary
    action_skip_top: int = 0  # ids left free above the action block (checkpoint tokenizers)
    action_tokenizer: str = "fast"  # "fast" | "bin"
    fast_scale: float = 10.0
    fast_vocab_size: int = 1024
    n_bins: int = 256
    horizon: int = robot_spec.CHUNK_HORIZON
    action_dim: int = robot_spec.ACTION_DIM
    n_views: int = 1
    max_length: int = 0  # 0 = no limit
    requires_checkpoint: bool = False
    dtype: str = "float32"
    use_state: bool = True  # write the robot state into the action prompt (ProcessorConfig.use_state)
    state_embedding: bool = False  # feed the normalized state vector to the action head instead (compact)
    vision_tower: str = "siglip"  # "siglip" (the checkpoint's) | "conv" (ConvVisionTower, random init only)
    conv_width: int = 32  # conv tower: channels of the first stage (doubling per stage, at most 4x)

    @property
    def image_tokens_per_view(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def with_overrides(self, **kw: Any) -> "ModelPreset":
        try:
            return replace(self, **kw)
        except TypeError as e:
            raise ModelError(f"preset {self.name}: {e}") from None

    def backbone_config(self, vocab_size: int, image_token_id: int, pad_token_id: int = 0,
                        bos_token_id: int = 2, eos_token_id: int = 1):
        """A transformers PaliGemmaConfig for random initialisation."""
        from transformers import PaliGemmaConfig

        vision = dict(model_type="siglip_vision_model", image_size=self.image_size, patch_size=self.patch_size,
                      vision_use_head=False)
        vision.update(self.vision)
        text = dict(model_type="gemma", vocab_size=vocab_size, pad_token_id=pad_token_id,
                    bos_token_id=bos_token_id, eos_token_id=eos_token_id)
        text.update(self.text)
        return PaliGemmaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=image_token_id,
            vocab_size=vocab_size,
            projection_dim=self.projection_dim,
            hidden_size=int(text.get("hidden_size", self.projection_dim)),
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
        )


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        description="random-init PaliGemma-architecture VLA for CPU tests and the offline demo",
        vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=1024),
        image_size=robot_spec.IMAGE_SIZE,
        patch_size=32,
        projection_dim=128,
        text_vocab_size=2048,
        n_action_tokens=1024,
        max_length=512,
    ),
    "tiny-conv": ModelPreset(
        name="tiny-conv",
        description="random-init VLA that learns on a CPU: conv vision tower with coordinate channels (96 px, "
                    "6x6 = 36 image tokens) + the tiny Gemma decoder; the embedded world's policy",
        vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=1024),
        image_size=96,
        patch_size=16,
        projection_dim=128,
        text_vocab_size=2048,
        n_action_tokens=1024,
        action_tokenizer="bin",
        max_length=512,
        use_state=False,  # no state digits in the prompt (~25 tokens) ...
        state_embedding=True,  # ... the 7-D state is projected inside the action head instead
        vision_tower="conv",
        conv_width=16,
    ),
    "paligemma-3b": ModelPreset(
        name="paligemma-3b",
        description="PaliGemma-3B-pt-224 (SigLIP So400m/14 + Gemma-2B); load from a local checkpoint path",
        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
        text=dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                  num_key_value_heads=1, head_dim=256),
        image_size=224,  # the checkpoint's own input size (pt-224), not the stack's default
        patch_size=14,
        projection_dim=2048,
        text_vocab_size=0,  # the checkpoint's tokenizer
        n_action_tokens=1024,
        action_skip_top=128,
        max_length=1024,
        requires_checkpoint=True,
        dtype="bfloat16",
    ),
}


VISION_TOWERS = ("siglip", "conv")


def get_preset(name: str | ModelPreset, **overrides: Any) -> ModelPreset:
    if isinstance(name, ModelPreset):
        preset = name
    else:
        if name not in PRESETS:
            raise ModelError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
        preset = PRESETS[name]
    preset = preset.with_overrides(**overrides) if overrides else preset
    if preset.vision_tower not in VISION_TOWERS:
        raise ModelError(f"preset {preset.name}: vision_tower must be one of {list(VISION_TOWERS)}, "
                         f"got {preset.vision_tower!r}")
    if preset.vision_tower == "conv" and preset.requires_checkpoint:
        raise ModelError(f"preset {preset.name}: the conv vision tower is random-init; it cannot replace a "
                         "checkpoint's pretrained tower")
    return preset
