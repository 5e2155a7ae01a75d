"""The policy a recipe run starts from (<out>/init, unless model.init names one): a fresh VLAPolicy built from the
model preset, its normalization statistics and action tokenizer (FAST) fitted on the run's action data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from etc_training.recipe.config import ModelConfig, RecipeError


def checked_init_dir(path: str | Path) -> Path:
    """model.init: an existing etc-vla policy checkpoint directory."""
    p = Path(path)
    if not (p / "vla.json").is_file():
        raise RecipeError(f"model.init: not an etc-vla policy checkpoint: {p}")
    return p


def build_initial_policy(model: ModelConfig, seed: int, n_views: int, action_chunks: np.ndarray,
                         states: np.ndarray, out_dir: str | Path) -> Path:
    """Builds the preset's policy with norm stats / FAST fitted on (action_chunks (N, H, D), states (N, S)) and
    saves it to `out_dir`. model.overrides win over action_tokenizer and the number of camera views."""
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy

    overrides = dict(model.overrides)
    overrides.setdefault("action_tokenizer", model.action_tokenizer)
    overrides.setdefault("n_views", n_views)
    preset = get_preset(model.preset, **overrides)
    pol = VLAPolicy.build(preset, backbone_path=model.backbone_path, action_chunks=action_chunks, states=states,
                          head=model.head, head_config=dict(model.head_config), seed=seed,
                          norm_modes=dict(model.norm))
    pol.save(out_dir)
    return Path(out_dir)
