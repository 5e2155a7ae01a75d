"""`etc-vla export`: ONNX graphs + parity against PyTorch + int8 variants + bundle validation (micro model).

One bundle is exported per pytest process (tests/test_export_fixtures.py); the failure paths copy it and tamper
with the copy."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import copy_bundle, micro_bundle, micro_checkpoint

from etc_ros.core.errors import BundleError
from etc_ros.policy.bundle import (
    BUNDLE_FORMAT_VERSION,
    MANIFEST_FILE,
    directory_digest,
    list_files,
    load_bundle,
    sha256_file,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    return micro_bundle()


def _rewrite_manifest(root: Path, **changes) -> None:
    man = json.loads((root / MANIFEST_FILE).read_text())
    man.update(changes)
    man.pop("files", None)
    write_manifest(root, man)


# ------------------------------------------------------------------------------------------------ layout
def test_bundle_layout_manifest_and_model_card(bundle):
    root, card = bundle
    man = json.loads((root / MANIFEST_FILE).read_text())
    assert man["format"] == "etc-vla-bundle" and man["bundle_format_version"] == BUNDLE_FORMAT_VERSION
    assert set(man["variants"]) == {"fp32", "int8-dynamic", "int8-static"}
    for v in man["variants"].values():
        assert set(v["graphs"]) == {"vision", "embed", "prefill", "decode"}
    # every file but the manifest is in the checksum table, with its real sha256
    assert sorted(man["files"]) == list_files(root)
    for rel, meta in man["files"].items():
        assert sha256_file(root / rel) == meta["sha256"]
    for f in ("spec.json", "model_card.md", "model_card.json", "processor/tokenizer.json", "processor/norm_stats.json",
              "processor/action_tokenizer.json", "torch/model.safetensors", "fp32/decode.onnx"):
        assert f in man["files"], f
    spec = json.loads((root / "spec.json").read_text())
    assert spec["cameras"] == ["primary"] and spec["control_hz"] == 5.0 and spec["horizon"] == 10
    assert spec["image_size"] == [64, 64] and spec["state_dim"] == 7 and spec["action_dim"] == 7
    # model card: source hash, export settings, parity figures, frames said to be generated
    mc = json.loads((root / "model_card.json").read_text())
    assert mc["source"]["checkpoint_sha256"] == directory_digest(micro_checkpoint())
    assert mc["parity_frames"]["source"] == "generated"
    assert set(mc["parity"]) == {"fp32", "int8-dynamic", "int8-static"}
    assert mc["settings"]["quantize"] == ["int8-dynamic", "int8-static"]
    md = (root / "model_card.md").read_text()
    assert "generated" in md and "| fp32 | logits |" in md
    # graph I/O recorded for runtimes that need shapes (TensorRT profiles)
    assert man["graph_io"]["decode"]["inputs"]["past.0.key"]["shape"][2] == "past"
    assert man["opset"] == [20]


def test_fp32_parity_is_exact_in_decoded_actions(bundle):
    _, card = bundle
    p = card["parity"]["fp32"]
    assert p["observations"] == 2
    assert p["identical_action_ids"] == 1.0
    assert p["max_action_diff_normalized"] == 0.0
    for name in ("image_embeds", "hidden_states", "logits"):
        f = p["outputs"][name]
        assert f["cosine"] >= 0.9999 and f["rel"] <= 1e-3, (name, f)


def test_int8_variants_parity_recorded_within_thresholds(bundle):
    _, card = bundle
    for v in ("int8-dynamic", "int8-static"):
        p = card["parity"][v]
        assert p["thresholds"]["min_cosine"] == 0.95
        for name, f in p["outputs"].items():
            if name != "actions":
                assert 0.95 <= f["cosine"] <= 1.0 + 1e-9, (v, name, f)
        # quantization is lossy: the figures are non-zero (the check is not comparing fp32 with itself)
        assert p["outputs"]["hidden_states"]["max_abs"] > 1e-4
    q = card["variants"]["int8-static"]["quantization"]
    assert q["calibration_samples"]["prefill"] >= 1 and "QDQ" in q["method"]["prefill"]
    assert "copied" in q["method"]["embed"]


def test_parity_thresholds_fail_loudly():
    from etc_training.export import parity

    figs = {"observations": 3, "identical_action_ids": 2 / 3, "max_action_diff_normalized": 0.4,
            "outputs": {"logits": {"max_abs": 0.5, "rel": 0.2, "cosine": 0.9}}}
    with pytest.raises(BundleError) as e:
        parity.enforce("fp32", figs)
    msg = str(e.value)
    assert "fp32" in msg and "cosine 0.9" in msg and "relative error 0.2" in msg and "67%" in msg
    assert parity.check_thresholds("int8-dynamic", {"outputs": {"logits": {"max_abs": 0.1, "rel": 0.1,
                                                                           "cosine": 0.99}}}) == []
    assert parity.compare([1.0, 2.0], [1.0, 2.0])["cosine"] == pytest.approx(1.0)
    assert parity.compare([1.0, 0.0], [0.0, 1.0])["cosine"] == pytest.approx(0.0)


def test_export_fails_past_thresholds_and_leaves_nothing(tmp_path, monkeypatch, bundle):
    """A parity failure aborts the export with the figures; no bundle and no temporary directory remain."""
    from etc_training.export import bundle_write, onnx_export

    src, _ = bundle
    real = onnx_export.export_graphs

    def fake_export(policy, out_dir, precision="float32", opset=None, progress=None):  # reuse the graphs
        shutil.copytree(src / "fp32", out_dir)
        return {"graphs": {r: Path(f).name for r, f in json.loads((src / MANIFEST_FILE).read_text())
                           ["variants"]["fp32"]["graphs"].items()}, "timings_s": {}, "head_type": "tokens",
                "n_layers": 1}

    monkeypatch.setattr(onnx_export, "export_graphs", fake_export)
    out = tmp_path / "bad"
    with pytest.raises(BundleError, match=r"parity check of variant 'fp32' failed.*cosine"):
        bundle_write.export_bundle(micro_checkpoint(), out, parity_frames=1, progress=False, log=None,
                                   thresholds={"fp32": {"min_cosine": 1.5}})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert onnx_export.export_graphs is fake_export and real is not fake_export


def test_export_argument_errors(tmp_path, bundle):
    from etc_training.export.bundle_write import export_bundle

    with pytest.raises(BundleError, match="unknown variant"):
        export_bundle(micro_checkpoint(), tmp_path / "x", quantize=["int4"], log=None)
    with pytest.raises(BundleError, match="not a VLA checkpoint"):
        export_bundle(tmp_path, tmp_path / "y", log=None)
    with pytest.raises(BundleError, match="--force"):
        export_bundle(micro_checkpoint(), bundle[0], log=None)


# ------------------------------------------------------------------------------------------------ validation
def test_valid_bundle_loads(bundle):
    info = load_bundle(bundle[0], variant="int8-static")
    assert info.head_type == "tokens" and set(info.variants) == {"fp32", "int8-dynamic", "int8-static"}


def test_tampered_file_same_size_is_a_checksum_error(tmp_path):
    b = copy_bundle(tmp_path)
    p = b / "fp32" / "prefill.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for fp32/prefill.onnx: expected sha256 [0-9a-f]{64}, "
                                          r"found [0-9a-f]{64}"):
        load_bundle(b)


def test_wrong_checksum_in_manifest(tmp_path):
    b = copy_bundle(tmp_path)
    man = json.loads((b / MANIFEST_FILE).read_text())
    man["files"]["processor/norm_stats.json"]["sha256"] = "0" * 64
    (b / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"processor/norm_stats.json: expected sha256 0{64}"):
        load_bundle(b)


def test_truncated_file_reports_sizes(tmp_path):
    b = copy_bundle(tmp_path)
    p = b / "spec.json"
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[:10])
    with pytest.raises(BundleError, match=rf"spec.json has 10 bytes, the manifest expects {size}"):
        load_bundle(b)


def test_missing_and_extra_files(tmp_path):
    b = copy_bundle(tmp_path, "m")
    (b / "int8-dynamic" / "decode.onnx").unlink()
    with pytest.raises(BundleError, match="file int8-dynamic/decode.onnx listed in the manifest is missing"):
        load_bundle(b)
    b2 = copy_bundle(tmp_path, "e")
    (b2 / "fp32" / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"not in the manifest: \['fp32/notes.txt'\]"):
        load_bundle(b2)
    b3 = copy_bundle(tmp_path, "n")
    (b3 / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="missing bundle manifest"):
        load_bundle(b3)


def test_version_mismatch(tmp_path):
    b = copy_bundle(tmp_path)
    man = json.loads((b / MANIFEST_FILE).read_text())
    man["bundle_format_version"] = 99
    (b / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(BundleError,
                       match=r"bundle format version 99 is not supported by this runtime \(supports \[1\]\)"):
        load_bundle(b)
    man["bundle_format_version"] = 1
    man["format"] = "something-else"
    (b / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(BundleError, match="not a policy bundle"):
        load_bundle(b)


def test_spec_mismatch_with_the_model(tmp_path):
    """spec.json edited and re-checksummed (a consistent but wrong bundle): the processor disagrees."""
    from etc_ros.policy.runtime import PolicyRuntime

    b = copy_bundle(tmp_path)
    spec = json.loads((b / "spec.json").read_text())
    spec["horizon"] = 8
    (b / "spec.json").write_text(json.dumps(spec))
    _rewrite_manifest(b)
    load_bundle(b)  # checksums are fine now ...
    with pytest.raises(BundleError, match=r"spec.json: horizon is 8 but the processor/model says 10"):
        PolicyRuntime.load(b)  # ... but spec and model do not match
    spec["horizon"] = 10
    spec["cameras"] = ["primary", "wrist"]
    (b / "spec.json").write_text(json.dumps(spec))
    _rewrite_manifest(b)
    with pytest.raises(BundleError, match="number of cameras is 2 but the processor/model says 1"):
        PolicyRuntime.load(b)


def test_expected_spec_and_unknown_variant(bundle, tmp_path):
    from etc_ros.policy.runtime import PolicyRuntime, RuntimeConfigError

    root = bundle[0]
    with pytest.raises(BundleError, match=r"spec mismatch for 'control_hz': expected 10.0, the bundle has 5.0"):
        PolicyRuntime.load(root, expect={"control_hz": 10.0})
    with pytest.raises(BundleError, match=r"spec mismatch for 'cameras'"):
        PolicyRuntime.load(root, expect={"cameras": ["wrist"]})
    with pytest.raises(BundleError, match=r"variant 'fp16' is not in this bundle"):
        PolicyRuntime.load(root, variant="fp16")
    with pytest.raises(RuntimeConfigError, match="unknown variant"):
        PolicyRuntime.load(root, variant="int4")
    # a variant whose graph set lacks a graph the head needs
    b = copy_bundle(tmp_path)
    man = json.loads((b / MANIFEST_FILE).read_text())
    del man["variants"]["int8-dynamic"]["graphs"]["decode"]
    man.pop("files")
    write_manifest(b, man)
    with pytest.raises(BundleError, match=r"variant 'int8-dynamic' lacks graph\(s\) \['decode'\]"):
        load_bundle(b)


def test_torch_copy_must_match_processor_files(tmp_path):
    from etc_ros.policy.runtime import PolicyRuntime

    b = copy_bundle(tmp_path)
    p = b / "torch" / "norm_stats.json"
    stats = json.loads(p.read_text())
    stats["state"]["q99"] = [v + 1.0 for v in stats["state"]["q99"]]
    p.write_text(json.dumps(stats))
    _rewrite_manifest(b)
    with pytest.raises(BundleError, match="torch/norm_stats.json differs from processor/norm_stats.json"):
        PolicyRuntime.load(b, backend="torch")


# ------------------------------------------------------------------------------------------------ providers
def test_no_silent_fallback_to_cpu(bundle):
    import onnxruntime as ort

    from etc_ros.policy.runtime import PolicyRuntime, RuntimeConfigError

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeConfigError,
                           match=r"TensorrtExecutionProvider.*not available.*no automatic fallback"):
            PolicyRuntime.load(bundle[0], providers=["tensorrt", "cpu"])
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        with pytest.raises(RuntimeConfigError, match="needs the tensorrt package.*no CPU fallback"):
            PolicyRuntime.load(bundle[0], backend="tensorrt")
    with pytest.raises(RuntimeConfigError, match="unknown backend"):
        PolicyRuntime.load(bundle[0], backend="openvino")
    with pytest.raises(RuntimeConfigError, match="providers only apply"):
        PolicyRuntime.load(bundle[0], backend="torch", providers=["cpu"])


def test_tensorrt_provider_options_have_caches_and_profiles(tmp_path, bundle):
    from etc_ros.policy.tensorrt_config import tensorrt_provider_options

    info = load_bundle(bundle[0])
    o = tensorrt_provider_options("decode", info.manifest["graph_io"]["decode"], tmp_path / "c", max_seq=256)
    assert o["trt_engine_cache_enable"] == "True" and o["trt_engine_cache_path"] == str(tmp_path / "c")
    assert o["trt_timing_cache_enable"] == "True" and o["trt_fp16_enable"] == "False"
    assert "past.0.key:1x1x2x32" in o["trt_profile_min_shapes"]
    assert "attention_mask:1x1x1x257" in o["trt_profile_max_shapes"]
    assert (tmp_path / "c").is_dir()


# ------------------------------------------------------------------------------------------------ quantize / data
def test_int8_static_needs_calibration(tmp_path, bundle):
    from etc_training.export.quantize import quantize_graphs

    with pytest.raises(BundleError, match="no calibration inputs"):
        quantize_graphs("int8-static", bundle[0] / "fp32", tmp_path, {"prefill": "prefill.onnx"}, {})
    with pytest.raises(BundleError, match="unknown int8 variant"):
        quantize_graphs("int4", bundle[0] / "fp32", tmp_path, {})


def test_dataset_frames_for_parity_and_calibration(tmp_path):
    from etc_ros.data import DatasetSpec, DatasetWriter, EpisodeData
    from etc_training.export.bundle_write import dataset_observations

    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    with DatasetWriter.create(root, DatasetSpec(fps=5.0, cameras={"primary": (32, 40)})) as w:
        for k in range(2):
            T = 3
            state = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
            state[:, 6] = rng.uniform(0, 1, T)
            w.write_episode(EpisodeData(
                images={"primary": rng.integers(0, 256, (T, 32, 40, 3), dtype=np.uint8)},
                state=state, ee_pose=np.zeros((T, 6), np.float32),
                action=np.zeros((T, 7), np.float32), timestamp=(np.arange(T) / 5.0).astype(np.float32),
                instruction=f"task {k}"))
    obs = dataset_observations(root, ["primary"], 4)
    assert len(obs) == 4
    assert obs[0]["images"]["primary"].shape == (32, 40, 3) and obs[0]["images"]["primary"].dtype == np.uint8
    assert obs[0]["instruction"] == "task 0" and obs[-1]["instruction"] == "task 1"
    assert obs[0]["state"].shape == (7,)
    with pytest.raises(BundleError, match=r"camera\(s\) \['wrist'\] are not in the dataset"):
        dataset_observations(root, ["wrist"], 2)


# ------------------------------------------------------------------------------------------------ CLI
def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "etc_training.cli", "export", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_check_and_errors(bundle, tmp_path):
    r = _cli(bundle[0], "--check", "--variant", "int8-dynamic")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["step_shape"] == [10, 7] and out["variant"] == "int8-dynamic"
    assert out["variants"] == ["fp32", "int8-dynamic", "int8-static"]
    r = _cli(micro_checkpoint())
    assert r.returncode == 2 and "--out BUNDLE is required" in r.stderr
    r = _cli(micro_checkpoint(), "--out", tmp_path / "o", "--quantize", "int4")
    assert r.returncode == 2 and "unknown variant(s) ['int4']" in r.stderr
    r = _cli(micro_checkpoint(), "--out", tmp_path / "o", "--threshold", "fp32.min_cosine=abc")
    assert r.returncode == 2 and "is not a number" in r.stderr
    tampered = copy_bundle(tmp_path)
    (tampered / "processor" / "processor.json").write_text("{}")
    r = _cli(tampered, "--check")
    assert r.returncode == 2 and "processor/processor.json" in r.stderr

