"""TensorRT engines from a bundle's ONNX graphs (backend="tensorrt" of etc_ros.policy.runtime.PolicyRuntime).

No torch here, and `tensorrt` / cuda-python are imported only inside the functions: importing this module on a
machine without a GPU is fine, calling it is a clear error.

Precision comes from a STRONGLY TYPED network: the types in the ONNX graph decide (fp32 graphs -> fp32 engines,
the 'fp16' variant -> fp16, the QDQ 'int8-static' variant -> int8 where the Q/DQ pairs are). TensorRT 11
removed the FP16/INT8 builder flags and strongly typed networks work the same on TensorRT 10 (the robot image
pins tensorrt-cu12 >= 10.3, < 11 for the ONNX Runtime TensorRT EP, see docker/Dockerfile.robot). INT8
calibrators are deprecated: calibration happens at export (int8-static QDQ), not here.

Engines are specific to the GPU and the TensorRT version: they are built on the target machine on first load
and cached outside the bundle (`cache_dir`, default $ETC_VLA_ENGINE_CACHE or ~/.cache/etc_vla/engines/...),
keyed by the sha256 of the ONNX file and the TensorRT version; a timing cache speeds up rebuilds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from etc_ros.core.errors import BundleError, UserError
from etc_ros.policy.tensorrt_config import default_engine_cache, profile_shapes


class TensorRTError(UserError):
    pass


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTError(f"TensorRT is not installed ({e}); install tensorrt-cu12 on a GPU machine") from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise TensorRTError(f"backend 'tensorrt' needs cuda-python for device buffers ({e}); "
                                "pip install cuda-python") from None
    return cudart


def _check(res: Any, what: str) -> Any:
    err = res[0] if isinstance(res, tuple) else res
    if int(err) != 0:
        raise TensorRTError(f"CUDA error {err} in {what}")
    return res[1] if isinstance(res, tuple) and len(res) == 2 else (res[1:] if isinstance(res, tuple) else None)


def build_engine(onnx_path: str | Path, engine_path: str | Path, io: Mapping[str, Any] | None = None, *,
                 max_batch: int = 1, max_seq: int = 512, opt_seq: int = 128, workspace_gib: float = 4.0,
                 timing_cache: str | Path | None = None) -> Path:
    """Parse `onnx_path` into a strongly typed network, add one optimization profile covering the dynamic
    inputs (from the manifest's graph I/O) and serialize the engine to `engine_path`."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(f"{onnx_path}: TensorRT cannot parse the graph: {'; '.join(errs[:5])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    prof = profile_shapes(io, max_batch=max_batch, max_seq=max_seq, opt_seq=opt_seq)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if inp.name in prof:
            mn, op, mx = prof[inp.name]
        elif any(d < 0 for d in shape):
            raise BundleError(f"{onnx_path}: input {inp.name} has dynamic dims {shape} but the manifest gives no "
                              "profile for it")
        else:
            mn = op = mx = shape
        profile.set_shape(inp.name, mn, op, mx)
    config.add_optimization_profile(profile)
    cache = None
    tc = None if timing_cache is None else Path(timing_cache)
    if tc is not None:
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise BundleError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    ep = Path(engine_path)
    ep.parent.mkdir(parents=True, exist_ok=True)
    tmp = ep.with_name("." + ep.name + ".tmp")
    tmp.write_bytes(bytes(data))
    tmp.replace(ep)
    if tc is not None and cache is not None:
        tc.write_bytes(bytes(cache.serialize()))
    return ep


def engine_path_for(onnx_path: str | Path, role: str, cache_dir: str | Path) -> Path:
    from etc_ros.policy.bundle import sha256_file

    trt = _trt()
    return Path(cache_dir) / f"{role}-{sha256_file(onnx_path)[:16]}-trt{trt.__version__}.engine"


class TrtGraph:
    """One deserialized engine + execution context; buffers allocated per call (simple and correct; a
    production loop would keep the KV cache on the device)."""

    def __init__(self, engine_file: str | Path):
        trt = _trt()
        self.trt = trt
        self.cudart = _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
        if self.engine is None:
            raise BundleError(f"{engine_file}: cannot deserialize the TensorRT engine (other TensorRT version/GPU?)")
        self.ctx = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cr = self.cudart
        H2D, D2H = cr.cudaMemcpyKind.cudaMemcpyHostToDevice, cr.cudaMemcpyKind.cudaMemcpyDeviceToHost
        bufs = []
        try:
            host_in = {}
            for n in self.inputs:
                a = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
                host_in[n] = a
                self.ctx.set_input_shape(n, a.shape)
                ptr = _check(cr.cudaMalloc(max(1, a.nbytes)), "cudaMalloc")
                bufs.append(ptr)
                _check(cr.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, H2D, self.stream), "cudaMemcpyAsync H2D")
                self.ctx.set_tensor_address(n, int(ptr))
            outs = {}
            for n in self.outputs:
                shape = tuple(self.ctx.get_tensor_shape(n))
                a = np.empty(shape, dtype=self.dtypes[n])
                ptr = _check(cr.cudaMalloc(max(1, a.nbytes)), "cudaMalloc")
                bufs.append(ptr)
                self.ctx.set_tensor_address(n, int(ptr))
                outs[n] = (a, ptr)
            if not self.ctx.execute_async_v3(self.stream):
                raise TensorRTError("TensorRT execute_async_v3 failed")
            for n, (a, ptr) in outs.items():
                _check(cr.cudaMemcpyAsync(a.ctypes.data, ptr, a.nbytes, D2H, self.stream), "cudaMemcpyAsync D2H")
            _check(cr.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            return {n: a for n, (a, _) in outs.items()}
        finally:
            for p in bufs:
                cr.cudaFree(p)


class TrtGraphs:
    """Graph runner over TensorRT engines (same interface as etc_ros.policy.runtime.OrtGraphs)."""

    name = "tensorrt"

    def __init__(self, paths: Mapping[str, Path], graph_io: Mapping[str, Any], cache_dir: str | Path | None = None,
                 max_batch: int = 1, max_seq: int = 512):
        self.graphs: dict[str, TrtGraph] = {}
        self.providers = ["tensorrt"]
        for role, p in paths.items():
            cdir = Path(cache_dir) if cache_dir else default_engine_cache(p)
            ep = engine_path_for(p, role, cdir)
            if not ep.is_file():
                build_engine(p, ep, graph_io.get(role), max_batch=max_batch, max_seq=max_seq,
                             timing_cache=cdir / "timing.cache")
            self.graphs[role] = TrtGraph(ep)

    def input_names(self, role: str) -> list[str]:
        return list(self.graphs[role].inputs)

    def output_names(self, role: str) -> list[str]:
        return list(self.graphs[role].outputs)

    def run(self, role: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.graphs[role].run(feeds)


def build_bundle_engines(bundle_dir: str | Path, variant: str = "fp32", cache_dir: str | Path | None = None,
                         max_batch: int = 1, max_seq: int = 512) -> dict[str, str]:
    """Build (or find cached) engines for every graph of a bundle variant; returns role -> engine path."""
    from etc_ros.policy.bundle import load_bundle

    info = load_bundle(bundle_dir, variant=variant)
    out = {}
    for role, p in info.graph_paths(variant).items():
        cdir = Path(cache_dir) if cache_dir else default_engine_cache(p)
        ep = engine_path_for(p, role, cdir)
        if not ep.is_file():
            build_engine(p, ep, (info.manifest.get("graph_io") or {}).get(role), max_batch=max_batch,
                         max_seq=max_seq, timing_cache=cdir / "timing.cache")
        out[role] = str(ep)
    return out
