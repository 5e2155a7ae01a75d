"""GPU paths of the bundles: ORT CUDA / TensorRT execution providers (engine cache) and the native TensorRT
backend (strongly typed engines), fp32 and fp16. Marked `gpu`: tests/conftest.py skips them (reported as skipped)
where no NVIDIA GPU + CUDA-enabled onnxruntime exists, as on CI and the CPU development machines."""
from __future__ import annotations

import numpy as np
import pytest
from test_export_fixtures import micro_bundle, micro_checkpoint, observation

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    from etc_training.export.bundle_write import export_bundle

    out = tmp_path_factory.mktemp("gpu") / "bundle16"
    export_bundle(micro_checkpoint(), out, quantize=["fp16"], parity_frames=1, progress=False, log=None)
    return out


def _ids(rt, o):
    rt.step(o)
    return rt.last_tokens


def test_ort_cuda_provider_matches_cpu():
    from etc_ros.policy.runtime import PolicyRuntime

    b = micro_bundle()[0]
    cpu = PolicyRuntime.load(b, on_invalid="keep")
    gpu = PolicyRuntime.load(b, providers=["cuda", "cpu"], on_invalid="keep")
    assert gpu.spec.providers[0] == "CUDAExecutionProvider"
    for k in range(3):
        o = observation(k)
        assert np.array_equal(_ids(cpu, o), _ids(gpu, o))


def test_ort_tensorrt_provider_builds_and_caches_engines(tmp_path):
    from etc_ros.policy.runtime import PolicyRuntime

    b = micro_bundle()[0]
    rt = PolicyRuntime.load(b, providers=["tensorrt", "cuda", "cpu"], engine_cache_dir=tmp_path, on_invalid="keep")
    c = rt.step(observation(0))
    assert c.shape == (10, 7) and np.all(np.isfinite(c))
    assert any(p.suffix == ".engine" or "engine" in p.name for p in tmp_path.rglob("*") if p.is_file())


def test_native_tensorrt_backend_fp32_and_fp16(tmp_path, fp16_bundle):
    from etc_ros.policy.runtime import PolicyRuntime

    ref = PolicyRuntime.load(fp16_bundle, on_invalid="keep")
    for variant in ("fp32", "fp16"):
        rt = PolicyRuntime.load(fp16_bundle, backend="tensorrt", variant=variant, engine_cache_dir=tmp_path / variant,
                                on_invalid="keep")
        o = observation(1)
        c = rt.step(o)
        assert c.shape == (10, 7) and np.all(np.isfinite(c))
        assert list((tmp_path / variant).glob("*.engine"))
        # prefix features close to the CPU fp32 graphs
        b = rt.build_batch([o])
        h = rt.model.prefill(rt.model.inputs_embeds(b), b["attention_mask"], b["token_type_ids"])["hidden_states"]
        h0 = ref.model.prefill(ref.model.inputs_embeds(b), b["attention_mask"], b["token_type_ids"])["hidden_states"]
        cos = float(np.sum(h * h0) / (np.linalg.norm(h) * np.linalg.norm(h0)))
        assert cos > 0.999, (variant, cos)
