"""MuJoCo world benchmark: render cost per frame, physics cost per 5 Hz step, and scripted-expert collection
throughput (frames/s written to a dataset) with 1 and 2 worker processes.

    etc-vla bench sim --out runs/bench [--quick]
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path


def _median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return round(1000.0 * statistics.median(ts), 2)


def run(out_dir: Path, quick: bool = False) -> dict:
    from etc_training.sim import SimConfig, SimEnv
    from etc_training.sim.collect import collect

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = 10 if quick else 40
    n_eps = 2 if quick else 12
    res: dict = {"quick": quick, "mujoco_gl": os.environ.get("MUJOCO_GL"), "cpu_count": os.cpu_count(),
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()]}

    # ---- rendering (224x224 primary camera)
    cfg = SimConfig()
    env = SimEnv(cfg)
    env.reset(seed=0)
    r = env._renderer_for()
    m, d, cam = env.model, env.data, env.world.cameras["primary"]
    r.render(m, d, cam)  # warm up
    res["render_ms_rgb"] = _median_ms(lambda: r.render(m, d, cam), n_frames)
    res["render_ms_rgb_depth"] = _median_ms(lambda: r.render(m, d, cam, depth=True), n_frames)
    env.close()
    cfg_sh = SimConfig()
    cfg_sh.render.shadows = True
    env = SimEnv(cfg_sh)
    env.reset(seed=0)
    r = env._renderer_for()
    m, d, cam = env.model, env.data, env.world.cameras["primary"]
    r.render(m, d, cam)
    res["render_ms_rgb_shadows"] = _median_ms(lambda: r.render(m, d, cam), n_frames)
    env.close()

    # ---- physics: one 0.2 s control period (100 x 2 ms steps), no rendering
    env = SimEnv(cfg, render=False)
    env.reset(seed=0)
    q, _ = env.joint_state()
    res["physics_ms_per_control_step"] = _median_ms(lambda: env.step_joint_targets(q, 1.0), n_frames)
    t0 = time.perf_counter()
    env.reset(seed=1)
    res["reset_ms"] = round(1000 * (time.perf_counter() - t0), 1)

    # ---- collection throughput (expert + render + annotations + dataset write)
    res["collect"] = {}
    for workers in (1, 2):
        ds = out_dir / f"collect_w{workers}"
        shutil.rmtree(ds, ignore_errors=True)
        c = SimConfig(episodes=n_eps, workers=workers, seed=123)
        s = collect(c, ds, progress=False)
        res["collect"][f"workers_{workers}"] = {k: s[k] for k in ("episodes", "frames", "wall_s", "frames_per_s",
                                                                     "episode_compute_s")}
        shutil.rmtree(ds, ignore_errors=True)
    w1 = res["collect"]["workers_1"]["frames_per_s"]
    w2 = res["collect"]["workers_2"]["frames_per_s"]
    res["collect_speedup_2_workers"] = round(w2 / w1, 2) if w1 else None
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["note"] = ("2-core CPU, Mesa llvmpipe rasteriser; wall times include worker start-up (spawn) and the "
                   "dataset write; the machine may be shared, see load_avg_*")
    return res
