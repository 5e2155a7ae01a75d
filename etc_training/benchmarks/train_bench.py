"""Training throughput and peak memory of each recipe stage at tiny size (`etc-vla bench train`).

`variants` (one thread, the same synthetic data, in the same run): the action-batch step of
- "baseline": config/train_tiny.yaml as it was trained before the data-path work (episode reader per frame, no
  frame cache; tiny SigLIP preset, FAST token head, state digits in the prompt);
- "frame_cache": the same model fed from the frame cache;
- "policy": config/policy_pickup.yaml's model (tiny-conv preset, regression head, no state tokens) fed from the
  frame cache with augmentation;
each with samples/s, ms per step split into data and model time, and the ratio to the baseline.

Per stage (the batch composition of config/train_tiny.yaml): samples/s and ms/step over measured steps after
warm-up, peak RSS of the process during the stage (Linux VmHWM, reset per stage through /proc/self/clear_refs),
the tracemalloc peak of Python-heap allocations over two extra steps (tensor storage is not traced there: the RSS
figure covers it; torch exposes no peak counter for its CPU allocator, and the CUDA peak is reported on GPU).
"""
from __future__ import annotations

from etc_ros.core.threads import prefer_passive_openmp

prefer_passive_openmp()  # before torch loads its OpenMP runtime

import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402


def run(out_dir, quick: bool = False, threads: int = 2) -> dict:
    import torch

    from etc_ros.core.config import to_dict
    from etc_ros.core.paths import config_path
    from etc_training.recipe.config import RunConfig, load_train_config
    from etc_training.recipe.data import make_synthetic_data
    from etc_training.recipe.distributed import DistInfo, set_threads
    from etc_training.recipe.metrics import peak_rss_mb, reset_peak_rss
    from etc_training.recipe.stages import RecipeContext, _load_policy, _stage_data
    from etc_training.recipe.trainer import StageTrainer

    threads = max(1, min(2, int(threads)))
    set_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_train_config(str(config_path("train_tiny.yaml")),
                            [f"out={out / 'run'}", "data.synthetic.episodes=6", "data.synthetic.val_episodes=0",
                             "data.synthetic.target_episodes=2", "data.synthetic.ood_episodes=2",
                             f"run.threads={threads}"])
    t0 = time.perf_counter()
    eps, etc = make_synthetic_data(out / "data", cfg.data.synthetic)
    cfg.data.episodes, cfg.data.etc = str(eps), str(etc)
    ctx = RecipeContext(cfg, DistInfo(), out / "run")
    ctx.prepare_data()
    t1 = time.perf_counter()
    init = ctx.base_policy_dir()
    build_s = time.perf_counter() - t1
    warm, steps = (1, 3) if quick else (2, 20)
    res: dict = {"threads": threads, "quick": quick, "measured_steps": steps, "data_s": round(t1 - t0, 2),
                 "build_policy_s": round(build_s, 2), "stages": {}}
    for name, scfg in cfg.stages.items():
        reset_ok = reset_peak_rss()
        rss0 = peak_rss_mb()
        policy = _load_policy(init, "cpu")
        params = policy.num_parameters()
        data = _stage_data(ctx, name, scfg, policy.processor, cfg.seed)
        run_cfg = RunConfig(progress=False, threads=threads, checkpoint_every=0, tensorboard=False)
        tr = StageTrainer(policy, name, scfg, data, out / "run" / name, run_cfg, DistInfo(), seed=cfg.seed)
        n, t_data, t_step = timed_steps(tr, data, warm, steps)
        tracemalloc.start()
        for _ in range(2):
            tr.train_step(data.next())
        _, tm_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        total = t_data + t_step
        st = {"action_batch": scfg.action_batch, "etc_batch": scfg.resolved_etc_batch(),
              "samples_per_s": round(n / total, 2), "ms_per_step": round(1000 * total / steps, 1),
              "data_ms_per_step": round(1000 * t_data / steps, 1), "params": params,
              "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(rss0, 1), "peak_reset": reset_ok,
              "tracemalloc_peak_mb": round(tm_peak / 2**20, 2)}
        if torch.cuda.is_available():
            st["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["stages"][name] = st
        del tr, policy, data
    res["config"] = {k: to_dict(v) for k, v in cfg.stages.items()}
    res["variants"] = variants(out, eps, quick=quick)
    return res


def timed_steps(tr, data, warm: int, steps: int) -> tuple[int, float, float]:
    """`warm` untimed steps, then `steps` timed ones: (samples, seconds drawing batches, seconds training)."""
    for _ in range(warm):
        tr.train_step(data.next())
    n, t_data, t_step = 0, 0.0, 0.0
    for _ in range(steps):
        a = time.perf_counter()
        b = data.next()
        t_data += time.perf_counter() - a
        a = time.perf_counter()
        tr.train_step(b)
        t_step += time.perf_counter() - a
        n += b["n_action"] + b["n_etc"] + b.get("n_grounding", 0)
    return n, t_data, t_step


def variants(out: Path, episodes: Path, quick: bool = False, batch: int = 16) -> dict:
    """Action-batch training steps of three configurations on one thread (see the module docstring)."""
    from etc_ros.core.paths import config_path
    from etc_training.recipe.config import RunConfig, load_train_config
    from etc_training.recipe.distributed import DistInfo, set_threads
    from etc_training.recipe.stages import RecipeContext, _load_policy, _stage_data
    from etc_training.recipe.trainer import StageTrainer

    set_threads(1)
    common = [f"data.episodes={episodes}", "data.etc=null", "stages.stage1.enabled=false",
              "stages.stage3.enabled=false", f"stages.stage2.action_batch={batch}", "stages.stage2.etc_ratio=0.0",
              "stages.stage2.etc_sources=[]", "cka.enabled=false", "run.threads=1"]
    runs = {
        "baseline": ("train_tiny.yaml", ["data.frame_cache=false"]),
        "frame_cache": ("train_tiny.yaml", ["data.frame_cache=true"]),
        "policy": ("policy_pickup.yaml", ["data.frame_cache=true"]),
    }
    warm, steps = (1, 3) if quick else (2, 12)
    res: dict = {"threads": 1, "action_batch": batch, "measured_steps": steps}
    for name, (file, extra) in runs.items():
        cfg = load_train_config(str(config_path(file)), common + extra + [f"out={out / ('v_' + name)}"])
        ctx = RecipeContext(cfg, DistInfo(), out / ("v_" + name))
        ctx.prepare_data()
        init = ctx.base_policy_dir()
        policy = _load_policy(init, "cpu")
        scfg = cfg.stages.stage2
        data = _stage_data(ctx, "stage2", scfg, policy.processor, cfg.seed)
        tr = StageTrainer(policy, "stage2", scfg, data, out / ("v_" + name) / "stage2",
                          RunConfig(progress=False, threads=1, checkpoint_every=0, tensorboard=False), DistInfo(),
                          seed=cfg.seed)
        n, t_data, t_step = timed_steps(tr, data, warm, steps)
        res[name] = {"preset": cfg.model.preset, "head": cfg.model.head, "frame_cache": cfg.data.frame_cache,
                     "samples_per_s": round(n / (t_data + t_step), 2),
                     "data_ms_per_step": round(1000 * t_data / steps, 1),
                     "model_ms_per_step": round(1000 * t_step / steps, 1),
                     "params": policy.num_parameters()}
        del tr, policy, data
    base = res["baseline"]["samples_per_s"]
    for name in runs:
        res[name]["speedup_vs_baseline"] = round(res[name]["samples_per_s"] / base, 2)
    set_threads(2)
    return res


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "/tmp/train_bench", quick="--quick" in sys.argv),
                     indent=1))
