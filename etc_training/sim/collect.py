"""Scripted-expert data collection into the project's dataset format, in parallel worker processes.

    summary = collect(cfg, out_dir)        # cfg.split / episodes / workers / seed / families / max_steps

Each worker (multiprocessing "spawn" context: a fresh interpreter with its own headless GL context) builds one
SimEnv, runs whole episodes and returns them in memory (EpisodeData); the parent writes them with DatasetWriter,
in attempt order, so the dataset does not depend on the number of workers. Episode seeds are derived from
(cfg.seed, split, attempt index); failed expert episodes are skipped unless cfg.keep_failures.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from etc_ros.core.errors import UserError

from .config import SimConfig
from .splits import SPLITS, check_split

_ENV = None  # per-process environment (worker side)
# Simulated episodes carry a synthetic, deterministic capture clock: 2024-01-01T00:00:00Z + sim time.
SIM_EPOCH_NS = 1_704_067_200 * 1_000_000_000


def episode_seed(base_seed: int, split: str, attempt: int) -> int:
    """Seed of the attempt-th episode of a collection run (stable, 31-bit)."""
    ss = np.random.SeedSequence([int(base_seed), SPLITS.index(check_split(split)), int(attempt)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] >> 1)


def run_episode(env, seed: int, split: str = "train", family: str | None = None, annotate: bool = True):
    """Reset `env` to (seed, split), run the scripted expert to completion or the time limit and return an
    EpisodeData (frame t = observation at t and the action taken from it; the final observation is dropped)."""
    from etc_ros.data import EpisodeData

    from .expert import ScriptedExpert
    from .world import WRIST, wrist_camera_T

    env.with_depth = bool(annotate)  # one render pass gives the image and the depth for visibility
    obs = env.reset(seed=seed, split=split, family=family)
    ep = env.episode
    expert = ScriptedExpert(env, seed)
    cams = list(env.cfg.render.cameras)
    imgs = {c: [] for c in cams}
    states, ees, acts, ts, objs = [], [], [], [], []
    while env.steps < env.cfg.max_steps:
        a = expert.act()
        if expert.done:
            break
        for c in cams:
            imgs[c].append(obs["images"][c])
        states.append(obs["state"])
        ees.append(obs["ee_pose"])
        ts.append(obs["timestamp"])
        objs.append(env.annotations() if annotate else [])
        acts.append(expert.last_clean)  # DART: record the intended action, execute the noisy one
        obs = env.step(a)
    T = len(acts)
    if T == 0:  # pragma: no cover - the expert always acts at least once
        raise UserError(f"episode {seed} produced no frames")
    success = bool(env.is_success())
    trace = expert.finish(T)
    task = ep.task
    meta = {
        "source": "sim",
        "seed": int(seed),
        "task": task.to_dict(),
        "gripper_events": trace.gripper_events,
        "subtasks": trace.subtasks,
        "distractors": list(ep.distractors),
        "split": split,
        "template_id": task.template_id,
        "expert": {"retries": trace.retries, "done": bool(expert.done), "steps": T,
                   "noise_xyz": env.cfg.expert.noise_xyz, "noise_rot": env.cfg.expert.noise_rot,
                   "labels": "clean"},
        "scene": {
            "objects": [dict(po.spec.to_dict(), role=po.role) for po in ep.scene.objects],
            "table_texture": ep.scene.appearance.table_texture,
            "light_dir": list(ep.scene.appearance.light_dir),
        },
        "simulator": {"engine": "mujoco", "timestep": env.cfg.physics.timestep,
                      "profile_time": env.cfg.physics.profile_time, "accel_time": env.cfg.physics.accel_time},
    }
    if WRIST in cams:
        meta["camera_mounts"] = {WRIST: {"parent": "gripper_link", "T_parent_cam": wrist_camera_T().tolist()}}
    fixed = {c: env.camera_model(c) for c in cams if c != WRIST}
    t = np.asarray(ts, dtype=np.float64)
    return EpisodeData(
        images={c: np.stack(v).astype(np.uint8) for c, v in imgs.items()},
        state=np.asarray(states, dtype=np.float32), ee_pose=np.asarray(ees, dtype=np.float32),
        action=np.asarray(acts, dtype=np.float32), timestamp=t.astype(np.float32),
        timestamp_ns=SIM_EPOCH_NS + np.round(t * 1e9).astype(np.int64), objects=objs, instruction=task.instruction,
        split=split, success=success, cameras=fixed, metadata=meta,
    )


def _worker_init(cfg_dict: dict, single_thread_gl: bool = False) -> None:
    global _ENV
    if single_thread_gl:
        # parallel workers: one rasteriser thread each (Mesa llvmpipe) instead of oversubscribing the cores
        os.environ.setdefault("LP_NUM_THREADS", "1")
    from etc_ros.core.config import from_dict

    from .env import SimEnv

    _ENV = SimEnv(from_dict(SimConfig, cfg_dict))


def _worker_run(job: tuple[int, int, str]):
    attempt, seed, split = job
    t0 = time.perf_counter()
    ep = run_episode(_ENV, seed, split)
    return attempt, ep, time.perf_counter() - t0


def _close_local_env() -> None:
    global _ENV
    if _ENV is not None:
        _ENV.close()
        _ENV = None


def collect(cfg: SimConfig, out: str | Path, *, progress: bool = True, mp_context: str = "spawn",
            split_label: str | None = None) -> dict:
    """Collect cfg.episodes episodes of cfg.split into the dataset at `out` (appending if it exists with the same
    spec). split_label: the split written into the dataset (default cfg.split) — e.g. the recipe's "target" / "ood"
    / "val" roles; the simulator's split stays in metadata["split"]. Returns a summary dict."""
    from etc_ros.core.config import to_dict
    from etc_ros.data import DatasetSpec, DatasetWriter

    check_split(cfg.split)
    if cfg.episodes < 1:
        raise UserError(f"episodes must be >= 1, got {cfg.episodes}")
    if cfg.workers < 1:
        raise UserError(f"workers must be >= 1, got {cfg.workers}")
    if cfg.seed < 0:
        raise UserError(f"seed must be >= 0, got {cfg.seed}")
    out = Path(out)
    spec = DatasetSpec(fps=5.0, cameras={c: (cfg.render.height, cfg.render.width) for c in cfg.render.cameras})
    writer = DatasetWriter.create(out, spec)
    max_attempts = int(cfg.max_attempts_factor * cfg.episodes) + 10
    t_start = time.perf_counter()
    written, attempts, frames = 0, 0, 0
    per_family: dict[str, list[bool]] = {}
    episode_time = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, desc=f"collect {cfg.split}", unit="ep", disable=None)
    pool = None
    try:
        if cfg.workers > 1:
            import multiprocessing as mp

            pool = mp.get_context(mp_context).Pool(cfg.workers, initializer=_worker_init,
                                                  initargs=(to_dict(cfg), True))
        else:
            _worker_init(to_dict(cfg))
        while written < cfg.episodes and attempts < max_attempts:
            n = min(max(cfg.episodes - written, 1) + (cfg.workers - 1 if pool else 0), max_attempts - attempts)
            jobs = [(attempts + i, episode_seed(cfg.seed, cfg.split, attempts + i), cfg.split) for i in range(n)]
            attempts += n
            results = pool.imap(_worker_run, jobs) if pool else map(_worker_run, jobs)
            for _attempt, ep, dt in results:  # in attempt order
                episode_time += dt
                fam = ep.metadata["task"]["family"]
                per_family.setdefault(fam, []).append(bool(ep.success))
                if written >= cfg.episodes or not (ep.success or cfg.keep_failures):
                    continue
                if split_label:
                    ep.split = split_label
                writer.write_episode(ep)
                written += 1
                frames += len(ep)
                if bar is not None:
                    bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
        writer.close()
        _close_local_env()
    wall = time.perf_counter() - t_start
    tried = sum(len(v) for v in per_family.values())
    summary = {
        "out": str(out), "split": cfg.split, "episodes": written, "attempts": tried, "frames": frames,
        "workers": cfg.workers, "seed": cfg.seed, "wall_s": round(wall, 2),
        "frames_per_s": round(frames / wall, 2) if wall > 0 else None,
        "episode_compute_s": round(episode_time, 2),  # sum over workers of the time spent inside episodes
        "expert_success": {f: {"success": int(sum(v)), "episodes": len(v), "rate": round(sum(v) / len(v), 4)}
                           for f, v in sorted(per_family.items())},
        "expert_success_rate": round(sum(sum(v) for v in per_family.values()) / max(tried, 1), 4),
    }
    if written < cfg.episodes:
        raise UserError(f"only {written} of {cfg.episodes} episodes succeeded after {tried} attempts "
                        f"(expert success {summary['expert_success_rate']:.0%}); raise max_attempts_factor or "
                        "set keep_failures=true")
    return summary
