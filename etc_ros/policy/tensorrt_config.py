"""TensorRT settings shared by both TensorRT paths of the runtime: the ORT TensorRT execution provider
(etc_ros.policy.runtime.OrtGraphs) and the native engines (etc_ros.policy.tensorrt). Optimization profiles come from the
bundle manifest's graph I/O; engines are cached on disk outside the bundle.

No tensorrt import here (plain data), so both paths and the tests can use it on any machine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


def profile_shapes(io: Mapping[str, Any] | None, *, max_batch: int = 1, max_seq: int = 512, opt_seq: int = 128,
                   max_past: int | None = None) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """(min, opt, max) shapes of every dynamic input of a graph, from its I/O description in the manifest
    (symbolic dims: batch / n / b = batch-like, seq / l = sequence, past = KV length)."""
    max_past = int(max_past or max_seq)
    sizes = {"batch": (1, 1, max_batch), "b": (1, 1, max_batch), "n": (1, 1, max_batch * 4),
             "seq": (2, opt_seq, max_seq), "l": (1, opt_seq, max_seq), "past": (2, opt_seq + 16, max_past),
             "past + 1": (3, opt_seq + 17, max_past + 1)}
    out = {}
    for name, meta in ((io or {}).get("inputs") or {}).items():
        shape = meta.get("shape") or []
        if all(isinstance(d, int) for d in shape):
            continue
        dims = [sizes.get(d, (1, opt_seq, max_seq)) if isinstance(d, str) else (d, d, d) for d in shape]
        out[name] = ([d[0] for d in dims], [d[1] for d in dims], [d[2] for d in dims])
    return out


def tensorrt_provider_options(role: str, io: Mapping[str, Any] | None, cache_dir: str | Path, *,
                              fp16: bool = False, max_batch: int = 1, max_seq: int = 512, opt_seq: int = 128,
                              max_past: int | None = None) -> dict:
    """ORT TensorRT execution provider options for one graph: engine + timing caches on disk and explicit
    optimization profiles (min/opt/max shapes) from the graph I/O in the manifest, so the EP does not rebuild an
    engine whenever a new sequence length shows up. fp16=True lets TensorRT use FP16 kernels on an FP32 graph
    (the 'fp16' variant is FP16 already and does not need it)."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    opts = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_max_workspace_size": str(2 << 30),
    }
    prof = profile_shapes(io, max_batch=max_batch, max_seq=max_seq, opt_seq=opt_seq, max_past=max_past)
    if prof:
        def fmt(k: int) -> str:
            return ",".join(f"{n}:" + "x".join(str(d) for d in s[k]) for n, s in prof.items())

        opts.update(trt_profile_min_shapes=fmt(0), trt_profile_opt_shapes=fmt(1), trt_profile_max_shapes=fmt(2))
    return opts


def default_engine_cache(path: str | Path) -> Path:
    """Engine caches live outside the (read-only, checksummed) bundle: $ETC_VLA_ENGINE_CACHE or
    ~/.cache/etc_vla/engines/<bundle name>."""
    base = os.environ.get("ETC_VLA_ENGINE_CACHE") or str(Path.home() / ".cache" / "etc_vla" / "engines")
    p = Path(path).resolve()
    return Path(base) / (p.parent.parent.name + "-" + p.parent.name)
