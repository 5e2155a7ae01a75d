"""The one-pass regression head of the tiny-conv policy: it memorizes, batched (left-padded) equals one at a
time, the state embedding and the image-token mask reach it, and its export matches PyTorch in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from etc_ros.core.errors import ModelError

HEAD = {"grounding_weight": 1.0, "ground_to_action": True, "spatial_heads": 2, "spatial_dim": 8,
        "cond_dim": 64, "width": 128}


def _policy(**head):
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy

    rng = np.random.default_rng(0)
    chunks = rng.normal(scale=0.02, size=(32, 10, 7))
    torch.manual_seed(0)
    return VLAPolicy.build(get_preset("tiny-conv", image_size=32, patch_size=8, conv_width=8), head="regression",
                           head_config={**HEAD, **head}, action_chunks=chunks, states=rng.normal(size=(32, 7)))


def _obs(i: int):
    rng = np.random.default_rng(i)
    return {"images": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "state": rng.normal(size=7),
            "instruction": ["pick up the red block", "put the small green cube in the big blue bowl"][i % 2]}


def test_regression_head_memorizes_a_few_examples():
    torch.set_num_threads(1)
    pol = _policy()
    P = pol.processor
    rng = np.random.default_rng(1)
    targets = rng.uniform(-0.04, 0.04, size=(4, 10, 7))
    exs = [P.build_action_example(o["images"], o["state"], o["instruction"], t)
           for o, t in zip(map(_obs, range(4)), targets)]
    batch = P.collate(exs)
    batch["grounding"] = rng.uniform(-1, 1, size=(4, 6)).astype(np.float32)
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3)
    pol.train()
    first = None
    for _ in range(150):
        out = pol(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else float(out["action_l1"])
    assert float(out["action_l1"]) < 0.25 * first and float(out["grounding_loss"]) < 0.1
    pred = np.stack([pol.predict_chunk(o["images"], o["state"], o["instruction"]) for o in map(_obs, range(4))])
    assert np.abs(pred - targets).max() < 0.02  # raw units: 2 cm / 0.02 rad


def test_batched_left_padded_equals_single_and_inputs_are_required():
    pol = _policy()
    obs = [_obs(0), _obs(1)]
    batched, valid = pol.predict_chunks(obs)
    for o, c in zip(obs, batched):
        np.testing.assert_allclose(pol.predict_chunk(o["images"], o["state"], o["instruction"]), c, atol=1e-5)
    assert valid.all()
    head = pol.action_head
    with pytest.raises(ModelError, match="state"):
        head.condition(torch.zeros(1, 5, 128), torch.ones(1, 5), None, torch.ones(1, 5))
    with pytest.raises(ModelError, match="image-token mask"):
        head.condition(torch.zeros(1, 5, 128), torch.ones(1, 5), torch.zeros(1, 7), None)
    with pytest.raises(ModelError, match="ground_to_action needs"):
        _policy(grounding_weight=0.0)


def test_export_matches_pytorch_in_onnxruntime(tmp_path):
    from etc_ros.policy.runtime import PolicyRuntime
    from etc_training.export.bundle_write import export_bundle

    pol = _policy()
    pol.save(tmp_path / "ckpt")
    export_bundle(tmp_path / "ckpt", tmp_path / "bundle", quantize=(), threads=1, parity_frames=2)
    rt = PolicyRuntime.load(tmp_path / "bundle", threads=1)
    for i in range(2):
        o = _obs(i)
        want = pol.predict_chunk(o["images"], o["state"], o["instruction"])
        got = rt.step({"images": {"primary": o["images"]}, "state": o["state"], "instruction": o["instruction"]})
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert rt.spec.uses_state is True
    with pytest.raises(ModelError, match="state"):
        rt.step({"images": {"primary": _obs(0)["images"]}, "instruction": "pick up the red block"})
