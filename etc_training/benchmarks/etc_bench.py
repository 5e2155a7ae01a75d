"""ETC data engine benchmark: samples per second of `build_etc` (and of validation) on synthetic episodes.

    run(out_dir, quick=False) -> dict

Episodes come from etc_training.etc.synthetic (IK keyframes, projected objects), written to a real etc_ros.data
dataset under out_dir; the build reads joint states, calibration and object annotations (no pixels).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path


def run(out_dir: Path, quick: bool = False) -> dict:
    from etc_training.etc.builder import build_etc
    from etc_training.etc.config import EtcConfig
    from etc_training.etc.synthetic import make_episodes, write_dataset
    from etc_training.etc.validate import validate_etc

    out = Path(out_dir)
    n_ep = 8 if quick else 100
    ds = out / "episodes"
    if ds.exists():
        shutil.rmtree(ds)
    t0 = time.perf_counter()
    eps = make_episodes(n_ep, seed=1000)
    write_dataset(ds, eps)
    t_data = time.perf_counter() - t0
    frames = int(sum(len(e.state) for e in eps))
    res: dict = dict(episodes=n_ep, frames=frames, synthetic_data_s=round(t_data, 2))
    for workers in ((1,) if quick else (1, 2)):
        etc = out / f"etc_w{workers}"
        cfg = EtcConfig(stride=2, workers=workers, overlays=0)
        t0 = time.perf_counter()
        s = build_etc(ds, etc, cfg, progress=False, write_extras=False)
        wall = time.perf_counter() - t0
        res[f"build_w{workers}"] = dict(samples=s["n_samples"], wall_s=round(wall, 3),
                                        samples_per_s=round(s["n_samples"] / wall, 1),
                                        episodes_per_s=round(n_ep / wall, 2), by_category=s["by_category"])
    t0 = time.perf_counter()
    rep = validate_etc(out / "etc_w1")
    wall = time.perf_counter() - t0
    res["validate"] = dict(records=rep["n_samples"], errors=rep["n_errors"], wall_s=round(wall, 3),
                           records_per_s=round(rep["n_samples"] / wall, 1))
    res["etc_samples_per_s"] = res["build_w1"]["samples_per_s"]
    return res
