"""`etc-vla analyze attention`: the regression head's spatial attention is captured without changing the head's
outputs, patch weights land on the right pixels, box masses on a hand-made case, and the command end to end on two
sim scenes with a tiny policy."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from etc_training.analysis import attention
from etc_training.models.heads.base import condition_mask

HEAD = {"grounding_weight": 1.0, "ground_to_action": True, "spatial_heads": 2, "spatial_dim": 8,
        "cond_dim": 64, "width": 128}


def _policy(**head):
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    return VLAPolicy.build(get_preset("tiny-conv", image_size=32, patch_size=8, conv_width=8), head="regression",
                           head_config={**HEAD, **head}, action_chunks=rng.normal(scale=0.02, size=(32, 10, 7)),
                           states=rng.normal(size=(32, 7)))


def _obs(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"images": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "state": rng.normal(size=7),
            "instruction": ["pick up the red block", "put the small green cube in the big blue bowl"][i % 2]}


@pytest.fixture(scope="module")
def policy():
    return _policy()


def test_captured_attention_is_a_distribution_over_the_image_patches(policy):
    obs = [_obs(0), _obs(1)]
    w, chunks = attention.capture_attention(policy, obs)
    assert w.shape == (2, 2, 4, 4)  # (B, heads, G, G): 32 px / 8 px patches
    np.testing.assert_allclose(w.sum(axis=(2, 3)), 1.0, atol=1e-6)
    assert (w >= 0).all() and chunks.shape == (2, 10, 7)
    assert not np.allclose(w[0], w[1])  # depends on the observation


def test_capture_leaves_the_head_outputs_bit_identical_and_is_what_the_head_reads(policy):
    obs = [_obs(0), _obs(1)]
    before, _ = policy.predict_chunks(obs)
    module = attention.find_spatial_attention(policy)
    with attention.record_spatial_attention(module) as calls:
        during, _ = policy.predict_chunks(obs)
    after, _ = policy.predict_chunks(obs)
    assert np.array_equal(before, during) and np.array_equal(before, after) and len(calls) == 1
    assert not module._forward_hooks  # the hook is removed
    # the captured weights are the ones the module's soft-argmax used: its (x, y) outputs are their expectation
    P = policy.processor
    prefix = policy.to_torch(P.collate([P.build_inference_prompt(o["images"], o["state"], o["instruction"])
                                        for o in obs], padding_side="left"))
    with attention.record_spatial_attention(module) as calls, torch.no_grad():
        outs = policy.run_backbone(prefix)
        head = policy.action_head
        ids = prefix["input_ids"]
        y = module(outs.hidden_states, condition_mask(outs.attention_mask, prefix["token_type_ids"]),
                   (ids == head.image_token_id).float())
    G = module.grid
    xy = (np.arange(G) * 2.0 / (G - 1) - 1.0)
    for b, w in enumerate(calls[0]):
        w = w.reshape(-1, G, G)
        exy = y[b].view(module.heads, module.dim + 2)[:, :2].double().numpy()
        np.testing.assert_allclose(exy[:, 0], (w.sum(1) * xy).sum(-1), atol=1e-5)
        np.testing.assert_allclose(exy[:, 1], (w.sum(2) * xy).sum(-1), atol=1e-5)


def test_a_head_without_spatial_attention_is_refused():
    pol = _policy(spatial_heads=0)
    with pytest.raises(attention.AttentionAnalysisError, match="no instruction-conditioned spatial attention"):
        attention.capture_attention(pol, [_obs(0)])


def test_patch_weights_land_on_their_patch_pixels():
    w = np.zeros((4, 4))
    w[1, 2] = 1.0  # row gy = 1, column gx = 2
    px = attention.patch_to_pixels(w, 40, 20)
    assert px.shape == (20, 40) and math.isclose(px.sum(), 1.0)
    assert px[5:10, 20:30].sum() == pytest.approx(1.0) and np.allclose(px[5:10, 20:30], 1 / 50)
    # a size that does not divide: the mass is kept, every patch's share stays its weight
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(36), size=3).reshape(3, 6, 6)
    px = attention.patch_to_pixels(w, 224, 224)
    np.testing.assert_allclose(px.sum(axis=(1, 2)), 1.0)
    r = attention.patch_index(224, 6)
    np.testing.assert_allclose(px[:, r == 2][:, :, attention.patch_index(224, 6) == 5].sum(axis=(1, 2)), w[:, 2, 5])


def test_box_masses_on_a_hand_made_case():
    w = np.array([[0.5, 0.25], [0.25, 0.0]])  # 2 x 2 patches on a 4 x 4 image: 2 x 2 pixels each
    m = attention.attention_measures(w, [0, 0, 1, 1], [[1, 0, 3, 1], None], 4, 4, target_point=[0.5, 0.5])
    assert m["target_area"] == 0.25 and m["distractor_area"] == 0.25  # the overlapping column goes to the target
    assert m["target_ceiling"] == 1.0
    one = m["mean"]
    assert one["target_mass"] == pytest.approx(0.5) and one["distractor_mass"] == pytest.approx(0.25)
    assert one["other_mass"] == pytest.approx(0.25) and one["peak_in_target"]
    assert one["centroid_error_px"] == pytest.approx(math.sqrt(0.5))  # centroid (1.0, 1.0)
    uniform = attention.attention_measures(np.full((2, 2), 0.25), [0, 0, 1, 1], [[2, 2, 3, 3]], 4, 4)["mean"]
    assert uniform["target_mass"] == pytest.approx(0.25) and uniform["distractor_mass"] == pytest.approx(0.25)
    sw = attention.swap_measures(w, np.array([[0.0, 0.0], [0.0, 1.0]]), [0, 0, 1, 1], [2, 2, 3, 3], 4, 4)
    assert sw["target_area"] == sw["named_area"] == 0.25
    assert sw["mean"] == pytest.approx({"target_named": 0.5, "target_other_named": 0.0, "distractor_named": 1.0,
                                        "distractor_target_named": 0.0})
    s = attention.summarize_scenes([{**m, "success": True},
                                    {**m, "mean": uniform, "heads": [uniform], "success": False}], resamples=200)
    mo = s["mean_over_heads"]
    assert mo["target_mass"]["mean"] == pytest.approx(0.375) and mo["target_ratio"]["value"] == pytest.approx(1.5)
    assert mo["distractor_ratio"]["value"] == pytest.approx(1.0) and mo["selectivity"]["value"] == pytest.approx(1.5)
    lo, hi = mo["target_ratio"]["ci95"]
    assert 1.0 <= lo <= 1.5 <= hi <= 2.0
    assert s["by_outcome"]["success"]["target_ratio"]["value"] == pytest.approx(2.0)


def test_the_command_writes_its_report_on_two_scenes(tmp_path, policy, monkeypatch):
    from etc_training import cli

    monkeypatch.setenv("MUJOCO_GL", "egl")
    policy.save(tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = cli.main(["analyze", "attention", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out), "--scenes",
                   "2", "--splits", "train,ood_combo", "--overlays", "1", "--bootstrap", "100", "--no-progress"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["grid"] == 4 and rep["heads"] == 2 and "ood_combo" in rep["skipped_splits"]
    assert rep["splits"]["train"]["summary"]["n"] == 2
    scenes = [json.loads(ln) for ln in (out / "scenes.jsonl").read_text().splitlines()]
    assert [(x["split"], x["seed"]) for x in scenes] == [("train", 0), ("train", 1)]
    sc = scenes[0]
    assert sc["target_box"] and sc["distractor_boxes"]
    sw = sc["swap"]  # the instruction-swap control: same template, a distractor named
    assert sw["named"] in sc["distractors"] and sw["named"] in sw["instruction"] and sc["object"] in sc["instruction"]
    assert np.asarray(sc["weights"]).sum(axis=(1, 2)) == pytest.approx([1.0, 1.0], abs=1e-4)
    assert 0 <= sc["mean"]["target_mass"] <= 1 and 0 < sc["target_area"] < 1
    assert rep["overlays"] == ["overlays/train_000.png"] and (out / "overlays" / "train_000.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| train | 2 |" in md and "ood_combo" in md and "Instruction-swap" in md
    pol0 = _policy(spatial_heads=0)
    pol0.save(tmp_path / "nospatial")
    assert cli.main(["analyze", "attention", "--checkpoint", str(tmp_path / "nospatial"), "--out",
                     str(tmp_path / "x"), "--scenes", "1", "--no-progress"]) == 2


def test_compare_pairs_the_same_scenes_and_reports_the_target_ratio_difference(tmp_path):
    """Two policies x two seeds: the pooled target ratio is mass over area summed over seeds and scenes; the
    difference vs the reference is paired on (seed, scene) and a scene only one policy saw is not paired."""
    from etc_training.commands import analyze

    def write(d, masses, seeds):
        d.mkdir(parents=True)
        rows = [{"split": "ood_distractor", "seed": s, "target_visible": True, "target_area": 0.01,
                 "distractor_area": 0.1, "mean": {"target_mass": m, "distractor_mass": 0.05}}
                for s, m in zip(seeds, masses)]
        (d / "scenes.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(d)

    ref = [write(tmp_path / "a0", [0.01, 0.02], [1, 2]), write(tmp_path / "a1", [0.01, 0.01], [1, 2])]
    ood = [write(tmp_path / "b0", [0.02, 0.03, 0.9], [1, 2, 3]), write(tmp_path / "b1", [0.01, 0.03], [1, 2])]
    cmp = attention.compare_attention({"s3_etc": ref, "s3_etc_ood": ood}, "s3_etc", resamples=200)
    v = cmp["splits"]["ood_distractor"]["s3_etc_ood"]
    assert v["pairs"] == 4  # scene 3 of seed 0 has no reference partner
    assert v["target_ratio"] == pytest.approx((0.02 + 0.03 + 0.01 + 0.03) / 0.04)
    assert v["target_ratio_minus_reference"]["value"] == pytest.approx((0.01 + 0.01 + 0.0 + 0.02) / 0.04)
    lo, hi = v["target_ratio_minus_reference"]["ci95"]
    assert 0 <= lo <= v["target_ratio_minus_reference"]["value"] <= hi
    assert cmp["splits"]["ood_distractor"]["s3_etc"]["target_ratio_minus_reference"]["value"] == 0
    with pytest.raises(attention.UserError, match="same number of runs"):
        attention.compare_attention({"s3_etc": ref, "s3_etc_ood": ood[:1]}, "s3_etc")
    with pytest.raises(attention.UserError, match="reference 'x'"):
        attention.compare_attention({"s3_etc": ref}, "x")
    parser = __import__("argparse").ArgumentParser()
    analyze.register(parser)
    args = parser.parse_args(["attention-compare", "--runs", "s3_etc=" + ",".join(ref), "--runs",
                              "s3_etc_ood=" + ",".join(ood), "--reference", "s3_etc", "--out", str(tmp_path / "c"),
                              "--bootstrap", "100"])
    assert args.func(args) == 0
    assert "| ood_distractor | s3_etc_ood | 4 | 2.250 | 0.500 | +1.000 [" in (tmp_path / "c" / "compare.md").read_text()
