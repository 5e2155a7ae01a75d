"""ONNX Runtime INT8 variants of the exported graphs (CPU).

- "int8-dynamic": `quant_pre_process` (shape inference + graph optimisation) then `quantize_dynamic`: int8
  weights of every MatMul / Gemm with a constant weight, activations quantized on the fly per call.
- "int8-static": `quant_pre_process` then `quantize_static` in QDQ format (QuantizeLinear / DequantizeLinear
  pairs: what ORT's CPU kernels fuse and what TensorRT reads as explicit precision), int8 per-channel weights,
  uint8 activations with ranges calibrated (MinMax) on the inputs each graph really sees while the fp32 pipeline
  runs on calibration observations (dataset frames when given). Activation x activation MatMuls (attention
  scores) are left in float (MatMulConstBOnly).
The embed graph (a Gather) is copied unchanged: quantizing the lookup table gains nothing and shifts every input;
so is a continuous head graph (small; the quantizer mis-handled its Gemm layers).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from etc_ros.core.errors import BundleError

# The continuous head graph stays float: it is small next to the backbone, and ORT's quantizer produced an
# invalid MatMulInteger for its Gemm layers here (onnxruntime 1.31).
QUANTIZED_ROLES = ("vision", "prefill", "decode")
_FLOAT = 1  # onnx.TensorProto.FLOAT: element type assumed where shape inference leaves a tensor untyped
INT8_VARIANTS = ("int8-dynamic", "int8-static")


class RecordingGraphs:
    """Wraps a graph runner and keeps (copies of) the feeds of every call, per role, up to `limit` each."""

    def __init__(self, graphs: Any, limit: int = 64, every: Mapping[str, int] | None = None):
        self.graphs = graphs
        self.name = getattr(graphs, "name", "recording")
        self.providers = list(getattr(graphs, "providers", []))
        self.limit = int(limit)
        self.every = dict(every or {})
        self.calls: dict[str, int] = {}
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {}

    def input_names(self, role: str) -> list[str]:
        return self.graphs.input_names(role)

    def output_names(self, role: str) -> list[str]:
        return self.graphs.output_names(role)

    def run(self, role: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        k = self.calls.get(role, 0)
        self.calls[role] = k + 1
        lst = self.feeds.setdefault(role, [])
        if len(lst) < self.limit and k % max(1, self.every.get(role, 1)) == 0:
            lst.append({n: np.array(v, copy=True) for n, v in feeds.items()})
        return self.graphs.run(role, feeds)


def record_feeds(graph_policy: Any, batches: Iterable[Mapping[str, np.ndarray]], limit: int = 64,
                 decode_every: int = 4) -> dict[str, list[dict]]:
    """Run the pipeline on `batches` and return the feeds each graph received (calibration data)."""
    rec = RecordingGraphs(graph_policy.graphs, limit=limit, every={"decode": decode_every})
    old = graph_policy.graphs
    graph_policy.graphs = rec
    try:
        for b in batches:
            graph_policy.predict(b, {})
    finally:
        graph_policy.graphs = old
    return rec.feeds


class FeedReader:
    """onnxruntime.quantization CalibrationDataReader over recorded feeds (restricted to the graph's inputs)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]], input_names: Sequence[str]):
        self._items = [{n: f[n] for n in input_names} for f in feeds]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(FeedReader, CalibrationDataReader):
        pass

    return _Reader


def preprocess(src: Path, dst: Path) -> Path:
    """quant_pre_process (symbolic shape inference + ORT optimisation); falls back to ONNX shape inference only
    when the symbolic pass cannot handle a graph."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some dynamic graphs
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def _input_names(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in init]


def _guard(role: str, variant: str, fn) -> None:
    try:
        fn()
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer raises RuntimeError/ValueError/onnx errors
        raise BundleError(f"{variant}: quantizing the {role!r} graph failed: {type(e).__name__}: {e}") from e


def quantize_graphs(variant: str, src_dir: str | Path, dst_dir: str | Path, graphs: Mapping[str, str],
                    calibration: Mapping[str, Sequence[Mapping[str, np.ndarray]]] | None = None,
                    per_channel: bool = True) -> dict:
    """Write the `variant` copies of the fp32 graphs (role -> file name in src_dir) into dst_dir."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if variant not in INT8_VARIANTS:
        raise BundleError(f"unknown int8 variant {variant!r}; use one of {list(INT8_VARIANTS)}")
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"method": {}, "calibration_samples": {}}
    with tempfile.TemporaryDirectory(prefix="etc-quant-") as tmp:
        for role, fname in graphs.items():
            s, d = src / fname, dst / fname
            if role not in QUANTIZED_ROLES:
                shutil.copyfile(s, d)
                info["method"][role] = "copied (not quantized)"
                continue
            pre = preprocess(s, Path(tmp) / f"{role}.pre.onnx")
            if variant == "int8-dynamic":
                _guard(role, variant, lambda: quantize_dynamic(
                    str(pre), str(d), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=False, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": _FLOAT}))
                info["method"][role] = "quantize_dynamic: int8 weights (MatMul/Gemm), dynamic uint8 activations"
            else:
                feeds = (calibration or {}).get(role) or []
                if not feeds:
                    raise BundleError(f"int8-static: no calibration inputs were recorded for the {role!r} graph")
                reader = _reader_class()(feeds, _input_names(pre))
                _guard(role, variant, lambda: quantize_static(
                    str(pre), str(d), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm", "Conv"], per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"MatMulConstBOnly": True, "DefaultTensorType": _FLOAT}))
                info["method"][role] = ("quantize_static QDQ: int8 per-channel weights, uint8 activations "
                                        "(MinMax calibration)")
                info["calibration_samples"][role] = len(feeds)
    return info
