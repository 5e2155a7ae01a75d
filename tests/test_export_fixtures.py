"""Shared fixtures of tests/test_export*.py and tests/test_runtime*.py (no tests here): a micro VLA checkpoint
(the tiny preset shrunk to one vision and one text layer, 64 px images, binning action tokens) and ONE exported
bundle per pytest process (fp32 + int8-dynamic + int8-static), built under a temporary directory."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

_ROOT = Path(tempfile.mkdtemp(prefix="etc-export-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def micro_policy(seed: int = 0):
    import torch

    from etc_ros.core.action_tokenizer import BinningActionTokenizer
    from etc_training.models.vla import VLAPolicy

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    states = rng.normal(0, 0.6, (64, 7))
    chunks = rng.normal(0, 0.02, (64, 10, 7))
    chunks[..., 6] = rng.uniform(0, 1, (64, 10))
    return VLAPolicy.build(
        "tiny", seed=seed, action_tokenizer=BinningActionTokenizer(256, 7, 10), action_chunks=chunks, states=states,
        image_size=64, patch_size=32, projection_dim=64, text_vocab_size=2048, n_action_tokens=256,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=512))


@functools.lru_cache(maxsize=None)
def micro_checkpoint() -> Path:
    return micro_policy().save(_ROOT / "ckpt")


@functools.lru_cache(maxsize=None)
def micro_bundle() -> tuple[Path, dict]:
    """(bundle dir, model card) of the micro checkpoint: fp32 + int8-dynamic + int8-static."""
    from etc_training.export.bundle_write import export_bundle

    card = export_bundle(micro_checkpoint(), _ROOT / "bundle", quantize=["int8-dynamic", "int8-static"],
                         parity_frames=2, calib_frames=4, progress=False, log=None, threads=1)
    return _ROOT / "bundle", card


def copy_bundle(dst_parent: Path, name: str = "b") -> Path:
    src, _ = micro_bundle()
    dst = Path(dst_parent) / name
    shutil.copytree(src, dst)
    return dst


def observation(seed: int = 0, instruction: str = "pick up the red cube", size=(48, 80)) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {"primary": rng.integers(0, 256, (*size, 3), dtype=np.uint8)},
            "state": rng.normal(0, 0.5, 7), "instruction": instruction}


def env_without_gpu() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
