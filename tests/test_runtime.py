"""PolicyRuntime on an exported micro bundle: the step API, spec and timings, identity with PyTorch (same ids,
same chunks, same closed loop in the MuJoCo world), the shared preprocessing, bad observations, left-padded
batches, the continuous-head slot and the robot-side import rule (no torch)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import copy_bundle, micro_bundle, micro_checkpoint, observation

from etc_ros.core.errors import ModelError
from etc_ros.policy.interface import PolicySpec
from etc_ros.policy.runtime import MASK_VALUE, PolicyRuntime, decode_mask, positions, prefill_mask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_dir():
    return micro_bundle()[0]


@pytest.fixture(scope="module")
def rt(bundle_dir):
    return PolicyRuntime.load(bundle_dir, threads=1, on_invalid="keep")


@pytest.fixture(scope="module")
def rt_torch(bundle_dir):
    return PolicyRuntime.load(bundle_dir, backend="torch", threads=1, on_invalid="keep")


def test_step_shape_spec_and_timing(rt):
    chunk = rt.step(observation(0))
    assert chunk.shape == (10, 7) and chunk.dtype == np.float32 and np.all(np.isfinite(chunk))
    s = rt.spec
    assert isinstance(s, PolicySpec)
    assert s.policy_hz == 5.0 and s.horizon == 10 and s.extra["chunk_horizon"] == 10
    assert s.cameras == ("primary",) and s.state_dim == 7 and len(s.state_names) == 7
    assert s.action_names[-1] == "gripper" and s.extra["backend"] == "onnxruntime" and s.extra["variant"] == "fp32"
    assert s.providers == ("CPUExecutionProvider",)
    d = s.to_dict()  # the spec.json view
    assert d["control_hz"] == 5.0 and d["horizon"] == 10 and d["cameras"] == ["primary"] and d["state_dim"] == 7
    t = rt.last_timing
    for k in ("preprocess_ms", "vision_ms", "embed_ms", "prefill_ms", "decode_ms", "postprocess_ms", "total_ms"):
        assert t[k] >= 0.0, k
    assert t["decode_steps"] == rt.last_tokens.shape[1] >= 1
    assert t["total_ms"] >= t["prefill_ms"] + t["decode_ms"]
    with pytest.raises(dataclasses.FrozenInstanceError):  # the runtime's spec cannot be changed from outside
        rt.spec.policy_hz = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        rt.spec.extra["control_hz"] = 1.0  # type: ignore[index]
    d["control_hz"] = 1.0  # to_dict() is a copy
    assert rt.spec.policy_hz == 5.0 and rt.spec.to_dict()["control_hz"] == 5.0


def test_actions_are_unnormalized_with_the_bundle_stats(rt):
    """The chunk is processor.unnormalize_actions of the decoded tokens (NormStats of the bundle)."""
    chunk = rt.step(observation(1))
    norm, _ = rt.processor.decode_actions(rt.last_tokens[0], unnormalize=False)
    assert np.allclose(chunk, rt.processor.norm_stats["action"].unnormalize(norm), atol=1e-6)
    st = rt.processor.norm_stats["action"]
    lo, hi = (st.min, st.max) if st.mode == "minmax" else (st.q01, st.q99)  # the token range of the stats
    assert np.all(chunk >= lo.min() - 1e-6) and np.all(chunk <= hi.max() + 1e-6)


def test_onnxruntime_matches_torch_backend(rt, rt_torch):
    for k, instr in enumerate(["pick up the red cube", "put the green block in the blue bowl", "push it"]):
        o = observation(10 + k, instr)
        a, b = rt.step(o), rt_torch.step(o)
        assert np.array_equal(a, b), (k, np.abs(a - b).max())
    assert rt_torch.last_timing["torch_ms"] > 0 and rt_torch.spec.extra["backend"] == "torch"


@pytest.mark.parametrize("variant", ["int8-dynamic", "int8-static"])
def test_int8_variants_run(bundle_dir, rt, variant):
    q = PolicyRuntime.load(bundle_dir, variant=variant, threads=1, on_invalid="keep")
    o = observation(2)
    c = q.step(o)
    assert c.shape == (10, 7) and np.all(np.isfinite(c)) and q.spec.extra["variant"] == variant
    # a different graph: the prefix features differ from fp32 (decoded ids may or may not)
    b = q.model.prefill(*_prefix(q, o))["hidden_states"]
    a = rt.model.prefill(*_prefix(rt, o))["hidden_states"]
    assert 0 < np.abs(a - b).max() < 0.5 * np.abs(a).max()


def _prefix(r, o):
    batch = r.build_batch([o])
    return r.model.inputs_embeds(batch), batch["attention_mask"], batch["token_type_ids"]


def test_preprocessing_is_the_training_code(rt):
    """Same class, same function objects, identical arrays as the training policy's own processor."""
    import torch  # noqa: F401 - training side for the comparison only

    from etc_ros.core.normalize import NormStats
    from etc_ros.core.processor import VLAProcessor
    from etc_training.models.vla import VLAPolicy

    pol = VLAPolicy.load(micro_checkpoint())
    assert type(rt.processor) is VLAProcessor and type(pol.processor) is VLAProcessor
    assert type(rt.processor).build_inference_prompt is VLAProcessor.build_inference_prompt
    assert type(rt.processor).preprocess_images is type(pol.processor).preprocess_images
    assert isinstance(rt.processor.norm_stats["state"], NormStats)
    for k in ("state", "action"):
        assert rt.processor.norm_stats[k].to_dict() == pol.processor.norm_stats[k].to_dict()
    o = observation(4, "put the cube in the bowl")
    a = rt.build_batch([o])
    b = pol.processor.collate([pol.processor.build_inference_prompt(o["images"]["primary"], o["state"],
                                                                    o["instruction"])], padding_side="left")
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    src = (REPO / "etc_ros" / "policy" / "runtime.py").read_text()
    assert "resize" not in src and "BICUBIC" not in src and "image_mean" not in src  # no copy of the code


def test_left_padded_batch_equals_single_steps(rt):
    obs = [observation(20, "pick up the red cube"), observation(21, "put the small green block in the blue bowl")]
    chunks, valid = rt.predict_chunks(obs)
    assert chunks.shape == (2, 10, 7) and valid.shape == (2,)
    for o, c in zip(obs, chunks):
        assert np.allclose(rt.step(o), c, atol=1e-5)


def test_invalid_decodes_become_nan_by_default(bundle_dir, rt):
    """The micro bundle bins its actions, so decoding is length-constrained and always well-formed. Decoded freely
    (as a variable-length FAST head decodes), the random micro model never emits the stop token: invalid.
    Default: NaN chunk (the safety layer rejects it); on_invalid='keep' returns the best-effort decode."""
    strict = PolicyRuntime.load(bundle_dir, threads=1)
    c = strict.step(observation(5))
    assert strict.last_valid is True and np.all(np.isfinite(c))  # constrained: exactly horizon x dim tokens
    strict.model.fixed_length = None  # free decoding
    c = strict.step(observation(5))
    assert strict.last_valid is False and c.shape == (10, 7) and np.all(np.isnan(c))
    keep = PolicyRuntime.load(bundle_dir, threads=1, on_invalid="keep")
    keep.model.fixed_length = None
    k = keep.step(observation(5))
    assert keep.last_valid is False and np.all(np.isfinite(k))
    with pytest.raises(Exception, match="on_invalid"):
        PolicyRuntime.load(bundle_dir, on_invalid="zero")


def test_bad_observations_are_clear_errors(rt):
    o = observation(6)
    with pytest.raises(ModelError, match=r"lacks camera\(s\) \['primary'\]"):
        rt.step({**o, "images": {"wrist": o["images"]["primary"]}})
    with pytest.raises(ModelError, match=r"must have 7 values"):
        rt.step({**o, "state": np.zeros(6)})
    with pytest.raises(ModelError, match="no 'state'"):
        rt.step({"images": o["images"], "instruction": "x"})
    with pytest.raises(ModelError, match="uint8"):
        rt.step({**o, "images": {"primary": o["images"]["primary"].astype(np.float32)}})
    with pytest.raises(ModelError, match="instruction is empty"):
        rt.step({**o, "instruction": "   "})
    with pytest.raises(ModelError, match="must be a dict"):
        rt.step([o])
    # a bare image is accepted for a one-camera policy
    assert rt.step({**o, "images": o["images"]["primary"]}).shape == (10, 7)


def test_masks_follow_the_prefix_lm_rule():
    am = np.array([[0, 1, 1, 1, 1]])
    tt = np.array([[0, 0, 0, 1, 1]])  # pad, 2 prefix tokens, 2 target tokens
    m = prefill_mask(am, tt)[0, 0] == 0.0
    expect = np.array([[0, 1, 1, 0, 0],   # the padded query: keys but itself
                       [0, 1, 1, 0, 0],   # prefix token: both prefix tokens (bidirectional), no target
                       [0, 1, 1, 0, 0],
                       [0, 1, 1, 1, 0],   # target: prefix + itself (causal)
                       [0, 1, 1, 1, 1]], dtype=bool)
    assert np.array_equal(m, expect)
    assert prefill_mask(am, tt).dtype == np.float32 and prefill_mask(am, tt).min() == MASK_VALUE
    assert np.array_equal(decode_mask(np.array([[0, 1, 1]]))[0, 0, 0] == 0.0, [False, True, True])
    assert positions(am).tolist() == [[1, 1, 2, 3, 4]]


def test_policy_worker_loads_bundles(bundle_dir):
    from etc_ros.policy.worker import load_runtime

    r = load_runtime(str(bundle_dir))
    assert isinstance(r, PolicyRuntime)
    assert r.spec.cameras == ("primary",) and r.spec.policy_hz == 5.0


def test_robot_side_never_imports_torch(bundle_dir):
    code = ("import sys, numpy as np\n"
            "from etc_ros.policy.runtime import PolicyRuntime\n"
            f"rt = PolicyRuntime.load({str(bundle_dir)!r}, threads=1)\n"
            "rng = np.random.default_rng(0)\n"
            "c = rt.step({'images': {'primary': rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)},"
            " 'state': np.zeros(7), 'instruction': 'pick up the cube'})\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'etc_training')]\n"
            "print(c.shape, bad)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "(10, 7) []"


def test_continuous_head_slot(tmp_path):
    """A bundle whose head is a single-pass continuous graph (the diffusion / SDM slot): the runtime feeds the
    prefix hidden states, the condition mask and noise, and unnormalizes the result."""
    import onnx
    from onnx import TensorProto, helper

    from etc_ros.policy.bundle import MANIFEST_FILE, write_manifest

    b = copy_bundle(tmp_path)
    # actions = tanh(noise + 0.01 * mean(hidden * mask)): depends on all three inputs
    nodes = [
        helper.make_node("Unsqueeze", ["condition_mask", "ax"], ["m3"]),
        helper.make_node("Mul", ["hidden_states", "m3"], ["hm"]),
        helper.make_node("ReduceMean", ["hm", "axes12"], ["pooled"], keepdims=1),
        helper.make_node("Mul", ["pooled", "c001"], ["pooled_s"]),
        helper.make_node("Add", ["noise", "pooled_s"], ["z"]),
        helper.make_node("Tanh", ["z"], ["actions"]),
    ]
    inits = [helper.make_tensor("ax", TensorProto.INT64, [1], [2]),
             helper.make_tensor("axes12", TensorProto.INT64, [2], [1, 2]),
             helper.make_tensor("c001", TensorProto.FLOAT, [], [0.01])]
    g = helper.make_graph(nodes, "head", [
        helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["batch", "seq", 64]),
        helper.make_tensor_value_info("condition_mask", TensorProto.FLOAT, ["batch", "seq"]),
        helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", 10, 7])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["batch", 10, 7])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=10),
              str(b / "fp32" / "head.onnx"))
    for v in ("int8-dynamic", "int8-static"):
        import shutil

        shutil.rmtree(b / v)
    man = json.loads((b / MANIFEST_FILE).read_text())
    man["head"] = {"type": "continuous", "name": "test-head", "horizon": 10, "action_dim": 7, "noise_seed": 3}
    man["variants"] = {"fp32": {"graphs": {"vision": "fp32/vision.onnx", "embed": "fp32/embed.onnx",
                                           "prefill": "fp32/prefill.onnx", "head": "fp32/head.onnx"}}}
    (b / "fp32" / "decode.onnx").unlink()
    spec = json.loads((b / "spec.json").read_text())
    spec["head"] = "continuous"
    (b / "spec.json").write_text(json.dumps(spec))
    man.pop("files")
    write_manifest(b, man)

    rt = PolicyRuntime.load(b, threads=1)
    o = observation(7)
    c1 = rt.step(o)
    assert c1.shape == (10, 7) and np.all(np.isfinite(c1)) and rt.last_valid and rt.last_tokens is None
    assert "head_ms" in rt.last_timing and "decode_ms" not in rt.last_timing
    # expected value from the same noise stream
    batch = rt.build_batch([o])
    hidden = rt.model.prefill(*_prefix(rt, o))["hidden_states"]
    cond = (batch["attention_mask"] * (batch["token_type_ids"] == 0)).astype(np.float32)
    noise = np.random.default_rng(3).standard_normal((1, 10, 7)).astype(np.float32)
    want = np.tanh(noise + 0.01 * (hidden * cond[..., None]).mean(axis=(1, 2), keepdims=True))
    assert np.allclose(c1, rt.processor.unnormalize_actions(want[0]), atol=1e-5)
    assert not np.allclose(rt.step(o), c1)  # fresh noise on the next call


def test_closed_loop_in_sim_matches_torch(rt, rt_torch):
    """The same checkpoint through ONNX Runtime and PyTorch drives the MuJoCo arm identically."""
    from etc_training.benchmarks.policy_bench import closed_loop

    a = closed_loop(rt, episodes=1, max_steps=6, exec_horizon=3)
    b = closed_loop(rt_torch, episodes=1, max_steps=6, exec_horizon=3)
    assert a["per_episode"] == b["per_episode"]
    assert a["per_episode"][0]["steps"] == 6 and a["per_episode"][0]["chunks"] == 2
    assert np.array_equal(np.asarray(a["first_chunks"]), np.asarray(b["first_chunks"]))


def _resign(b):
    """Re-write the checksum table after editing a bundle on purpose (a consistent but wrong bundle)."""
    import json

    from etc_ros.policy.bundle import MANIFEST_FILE, write_manifest

    man = json.loads((b / MANIFEST_FILE).read_text())
    (b / MANIFEST_FILE).unlink()
    write_manifest(b, man)


def test_a_tokenizer_larger_than_the_embed_graph_is_refused_at_load(tmp_path):
    """ids beyond the embedding table: one BundleError at load naming the tokenizer and the id, never an ONNX
    Runtime Gather error at the first inference."""
    from tokenizers import AddedToken, Tokenizer

    from etc_ros.core.errors import BundleError

    b = copy_bundle(tmp_path, "big_vocab")
    n0 = PolicyRuntime.load(b, threads=1).processor.vocab_size
    for d in ("processor", "torch"):
        p = b / d / "tokenizer.json"
        if p.is_file():
            tok = Tokenizer.from_file(str(p))
            tok.add_tokens([AddedToken(f"<extra_{i}>", special=True) for i in range(64)])
            tok.save(str(p))
    _resign(b)
    with pytest.raises(BundleError, match=rf"embed graph cannot take token id {n0 + 63}.*tokenizer.json has {n0 + 64}"):
        PolicyRuntime.load(b, threads=1)


def test_processor_copies_must_agree_for_every_backend(tmp_path):
    from etc_ros.core.errors import BundleError

    b = copy_bundle(tmp_path, "two_copies")
    p = b / "torch" / "processor.json"
    assert p.is_file()
    p.write_text(p.read_text().replace('"image_size"', '"image_size" ', 1))  # same meaning, different file
    _resign(b)
    with pytest.raises(BundleError, match="torch/processor.json differs from processor/processor.json"):
        PolicyRuntime.load(b, threads=1)  # onnxruntime: the check used to run only for backend torch
