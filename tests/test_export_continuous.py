"""The continuous-head slot with the real exporter: a micro VLA with the diffusion head (DDIM loop unrolled into
one 'head' graph) exports, passes parity (same noise -> same chunk as PyTorch) and runs in PolicyRuntime."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_export_fixtures import observation

from etc_ros.policy.bundle import load_bundle


@pytest.fixture(scope="module")
def diffusion_bundle(tmp_path_factory):
    import torch

    from etc_ros.core.action_tokenizer import BinningActionTokenizer
    from etc_training.export.bundle_write import export_bundle
    from etc_training.models.vla import VLAPolicy

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    states = rng.normal(0, 0.6, (64, 7))
    chunks = rng.normal(0, 0.02, (64, 10, 7))
    chunks[..., 6] = rng.uniform(0, 1, (64, 10))
    pol = VLAPolicy.build(
        "tiny", seed=0, head="diffusion", head_config={"num_inference_steps": 2, "width": 32, "cond_dim": 32},
        action_tokenizer=BinningActionTokenizer(256, 7, 10), action_chunks=chunks, states=states,
        image_size=64, patch_size=32, projection_dim=64, text_vocab_size=2048, n_action_tokens=256,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=512))
    root = tmp_path_factory.mktemp("diffusion")
    ck = pol.save(root / "ckpt")
    card = export_bundle(ck, root / "bundle", parity_frames=2, progress=False, log=None, threads=1, seed=5)
    return root / "bundle", card


def test_continuous_head_exports_with_parity(diffusion_bundle):
    root, card = diffusion_bundle
    info = load_bundle(root)
    assert info.head_type == "continuous" and info.spec["head"] == "continuous"
    assert set(info.variants["fp32"]["graphs"]) == {"vision", "embed", "prefill", "head"}
    assert info.head["name"] == "diffusion" and info.head["horizon"] == 10 and info.head["noise_seed"] == 5
    io = info.manifest["graph_io"]["head"]
    assert list(io["inputs"]) == ["hidden_states", "condition_mask", "noise"] and list(io["outputs"]) == ["actions"]
    p = card["parity"]["fp32"]
    assert "identical_action_ids" not in p
    assert p["max_action_diff_normalized"] < 1e-4 and p["outputs"]["actions"]["cosine"] > 0.9999
    assert json.loads((root / "model_card.json").read_text())["head"]["type"] == "continuous"


def test_continuous_bundle_runs_in_the_runtime(diffusion_bundle):
    from etc_ros.policy.runtime import PolicyRuntime

    rt = PolicyRuntime.load(diffusion_bundle[0], threads=1)
    c = rt.step(observation(0))
    assert c.shape == (10, 7) and np.all(np.isfinite(c)) and rt.last_valid
    assert "head_ms" in rt.last_timing
    rt2 = PolicyRuntime.load(diffusion_bundle[0], threads=1)
    assert np.array_equal(rt2.step(observation(0)), c)  # the noise stream is seeded from the manifest
