"""Mid-training data engine benchmark.

    run(out_dir, quick=False) -> dict

- feature extraction: candidates/s of the frozen tiny VLM over the built-in pool (batch 16, image decode +
  preprocessing + forward + pooling + NLL + memmap write included);
- scoring: candidates/s of the proximity estimator over a cache of 1,000,000 feature vectors (100,000 with
  quick), streamed block by block, and the memory it takes: peak RSS while scoring (Linux VmHWM after a reset;
  a sampling thread otherwise) and the tracemalloc peak of Python-level allocations, next to the size of the cache
  file (what loading it whole would cost). Also top-K selection time over those scores.
The 1 GB cache file is deleted at the end.
"""
from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _PeakSampler:
    """Samples VmRSS every few ms (the fallback where VmHWM cannot be reset)."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.every)

    def __enter__(self):
        self.peak = _rss_mb()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def run(out_dir: Path, quick: bool = False) -> dict:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    import numpy as np

    from etc_training.midtrain.builtin_pool import make_builtin_pool
    from etc_training.midtrain.estimator import ProximityEstimator
    from etc_training.midtrain.features import FeatureCache, create_cache, extract_features, load_model, mark_complete
    from etc_training.midtrain.pool import pool_items, read_pool
    from etc_training.midtrain.select import top_k
    from etc_training.recipe.distributed import set_threads
    from etc_training.recipe.metrics import peak_rss_mb, reset_peak_rss

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = min(2, os.cpu_count() or 1)
    set_threads(threads)
    res: dict = {"threads": threads, "quick": quick}

    # ---- feature extraction
    n_per = 4 if quick else 32
    t0 = time.perf_counter()
    pool = read_pool(make_builtin_pool(out / "pool", n_per, seed=0, progress=False))
    res["pool_build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model = load_model(None, "tiny", seed=0)
    res["model_load_s"] = round(time.perf_counter() - t0, 2)
    items = pool_items(pool)
    import shutil

    shutil.rmtree(out / "features", ignore_errors=True)
    t0 = time.perf_counter()
    cache = extract_features(model, items, out / "features", batch_size=16, progress=False)
    wall = time.perf_counter() - t0
    res["feature_extraction"] = {"candidates": len(items), "batch_size": 16, "dim": cache.dim, "wall_s": round(wall, 3),
                                 "candidates_per_s": round(len(items) / wall, 2), "model": "tiny (random init)"}
    del model

    # ---- scoring a large cache
    n = 100_000 if quick else 1_000_000
    dim = cache.dim
    big = out / "big_cache"
    shutil.rmtree(big, ignore_errors=True)
    t0 = time.perf_counter()
    rows = [{"id": f"c{i}", "group": "g"} for i in range(n)]
    create_cache(big, rows, dim, with_nll=False)
    del rows
    mm = np.memmap(big / "features.f32", dtype=np.float32, mode="r+", shape=(n, dim))
    rng = np.random.default_rng(0)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        mm[s:s + m] = rng.standard_normal((m, dim), dtype=np.float32)
    mm.flush()
    del mm
    mark_complete(big)
    res["cache_write_s"] = round(time.perf_counter() - t0, 2)
    c = FeatureCache(big)
    est = ProximityEstimator(dim, (256,), seed=0)
    pos = rng.standard_normal((512, dim), dtype=np.float32) + 0.5
    est.fit(pos, c.load(np.arange(2048)), epochs=2, batch_size=256)
    block = 16384
    import gc

    gc.collect()
    rss_before = _rss_mb()
    hwm_ok = reset_peak_rss()
    tracemalloc.start()
    with _PeakSampler() as sampler:
        t0 = time.perf_counter()
        scores = est.score_cache(c, block=block)
        wall = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = max(peak_rss_mb(), sampler.peak) if hwm_ok else sampler.peak
    file_mb = (big / "features.f32").stat().st_size / 2**20
    t1 = time.perf_counter()
    sel = top_k(scores, max(1, n // 4))
    topk_s = time.perf_counter() - t1
    res["scoring"] = {
        "candidates": n, "dim": dim, "block_rows": block, "wall_s": round(wall, 3),
        "candidates_per_s": round(n / wall, 1), "estimator": "MLP 256 hidden",
        "cache_file_mb": round(file_mb, 1), "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(peak, 1),
        "peak_rss_increase_mb": round(peak - rss_before, 1),
        "peak_rss_method": "VmHWM reset + sampler" if hwm_ok else "sampler (5 ms)",
        "tracemalloc_peak_mb": round(tm_peak / 2**20, 1),
        "one_block_mb": round(block * dim * 4 / 2**20, 1),
        "top_k": {"k": int(len(sel)), "wall_s": round(topk_s, 3)},
    }
    shutil.rmtree(big, ignore_errors=True)
    res["feature_candidates_per_s"] = res["feature_extraction"]["candidates_per_s"]
    res["scoring_candidates_per_s"] = res["scoring"]["candidates_per_s"]
    res["scoring_peak_rss_increase_mb"] = res["scoring"]["peak_rss_increase_mb"]
    return res
