"""Evaluation of a trained policy checkpoint (`etc-vla eval`):

1. closed-loop success in the MuJoCo WidowX world on the in-distribution ("train") and OOD splits: episode i of
   split s is `SimEnv.reset(seed=seed_base + i, split=s)`; the policy predicts a chunk from (image, state,
   instruction), the first `exec_horizon` actions are executed at 5 Hz, until success or max_steps. Episodes run
   in parallel worker processes (spawn); the first `videos` episodes of each split are saved as GIFs.
2. offline ETC answer quality on ETC records (e.g. the val / ood splits): greedy answers parsed with the ETC
   answer parser -> point error (pixels), box IoU, trajectory error (mean / final waypoint distance in pixels,
   gripper-bit accuracy), plan accuracy (exact + per step), yes/no and text exact match, parse rate.
3. offline action quality on held-out episodes: token loss / accuracy and the MSE of decoded chunks in the
   normalized action space, plus the fraction of chunks that decode cleanly.

    res = evaluate(EvalConfig(checkpoint="runs/train_tiny/stage3/final", splits=["train", "ood_color"],
                              episodes=4, out="runs/eval"))
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_training.recipe.config import RecipeError


@dataclass
class EvalConfig:
    checkpoint: str = ""
    out: str = "runs/eval"
    splits: list[str] = field(default_factory=lambda: ["train"])
    episodes: int = 4  # closed-loop episodes per split (0 = skip)
    workers: int = 1
    seed: int = 0  # episode i uses reset(seed=seed * 100_000 + i)
    max_steps: int = 0  # 0 = the sim's default (60 steps = 12 s)
    exec_horizon: int = 5  # actions executed per predicted chunk (rollout direct)
    # direct: each action is one 5 Hz env.step and the world waits for inference; executor: the robot's path, the
    # safety executor at 50 Hz with the settings of the simulated ROS graph (config/ros_bringup.yaml: mode, align,
    # limits, servo profile) in simulated time, a new chunk every policy step, `latency_s` after its observation
    rollout: str = "direct"
    latency_s: float = 0.0
    videos: int = 1  # GIFs per split
    cameras: list[str] = field(default_factory=lambda: ["primary"])
    # task families (empty = the sim's mix); several are assigned round-robin: episode i gets families[i % n]
    families: list[str] = field(default_factory=list)
    # memorization check: evaluate on the (seed, sim split, family) of the first `episodes` episodes of this
    # dataset instead of new seeded scenes
    seeds_from: str | None = None
    etc: str | None = None  # ETC directory for offline answer quality
    etc_splits: list[str] = field(default_factory=lambda: ["val"])
    etc_samples: int = 24
    max_new_tokens: int = 96
    data: str | None = None  # episode dataset for offline action quality
    data_split: str = "val"
    action_samples: int = 32
    threads: int = 1


# ---------------------------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate k / n."""
    if n <= 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def paired_bootstrap(a, b, reps: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(a - b), resampling the pairs (a_i, b_i) with replacement (the same scenes run by two
    policies: paired success differences)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(reps, d.size))].mean(axis=1)
    return (round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4))


# ---------------------------------------------------------------------------------------------- closed loop
_WORKER: dict[str, Any] = {}


def _worker_init(checkpoint: str, threads: int, cameras: list[str], max_steps: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(max(1, int(threads)))
    from etc_training.sim import SimConfig, SimEnv

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    policy = load_rollout_policy(checkpoint, threads)
    scfg = SimConfig()
    scfg.render.cameras = list(cameras)
    if "wrist" in cameras:
        scfg.camera.wrist = True
    if max_steps:
        scfg.max_steps = int(max_steps)
    _WORKER.update(policy=policy, env=SimEnv(scfg), cameras=list(cameras))


class BundlePolicy:
    """A policy bundle (ONNX Runtime, the robot's runtime) behind the rollout's predict_chunk interface, so the
    same episodes can be scored with the PyTorch checkpoint and with the exported bundle."""

    def __init__(self, bundle: str | Path, threads: int = 1, variant: str | None = None):
        from etc_ros.policy.runtime import PolicyRuntime

        kw = {"variant": variant} if variant else {}
        self.runtime = PolicyRuntime.load(bundle, threads=threads, **kw)
        self.cameras = list(self.runtime.cameras)

    def predict_chunk(self, images: Any, state: Any, instruction: str, return_valid: bool = False):
        views = images if isinstance(images, (list, tuple)) else [images]
        chunks, valid = self.runtime.predict_chunks([{"images": dict(zip(self.cameras, views)), "state": state,
                                                      "instruction": instruction}])
        return (chunks[0], bool(valid[0])) if return_valid else chunks[0]


def load_rollout_policy(path: str | Path, threads: int = 1) -> Any:
    """A VLAPolicy checkpoint directory (vla.json) or a policy bundle (manifest.json)."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return BundlePolicy(p, threads)
    from etc_training.models.vla import VLAPolicy

    policy = VLAPolicy.load(p)
    policy.eval()
    return policy


def hold_action(state: np.ndarray) -> np.ndarray:
    """What a rollout executes instead of a non-finite action: no motion, the gripper as it is."""
    a = np.zeros(robot_spec.ACTION_DIM)
    a[-1] = float(state[-1])  # gripper: last in both ACTION_NAMES and STATE_NAMES
    return a


def close_geometry(env, obs: dict, step: int) -> dict:
    """Failure-mode geometry at the first gripper close: where the EE is relative to the object to grasp
    (horizontal and vertical miss, metres)."""
    obj = getattr(env.task, "object", None)
    ee = np.asarray(obs["ee_pose"][:3], dtype=float)
    out: dict = {"step": int(step), "ee_z": round(float(ee[2]), 4)}
    if obj:
        pos, _ = env.pose(obj)
        out["horizontal_miss"] = round(float(np.linalg.norm(ee[:2] - np.asarray(pos[:2]))), 4)
        out["miss_xy"] = [round(float(v), 4) for v in ee[:2] - np.asarray(pos[:2])]  # base frame: x forward
        out["vertical_offset"] = round(float(ee[2] - pos[2]), 4)
    return out


def miss_summary(episodes: Sequence[dict]) -> dict:
    """Median horizontal miss at the first close over the episodes that closed, split by outcome."""
    def med(rs):
        v = [r["first_close"]["horizontal_miss"] for r in rs
             if r.get("first_close") and r["first_close"].get("horizontal_miss") is not None]
        return (round(float(np.median(v)), 4) if v else None), len(v)

    all_m, n = med(episodes)
    fail_m, nf = med([r for r in episodes if not r["success"]])
    ok_m, ns = med([r for r in episodes if r["success"]])
    return {"median_horizontal_miss_m": all_m, "closed_episodes": n, "never_closed": len(episodes) - n,
            "median_miss_failures_m": fail_m, "median_miss_successes_m": ok_m,
            "median_first_close_step": (float(np.median([r["first_close"]["step"] for r in episodes
                                                         if r.get("first_close")])) if n else None)}


ROLLOUTS = ("direct", "executor")


@functools.lru_cache(maxsize=1)
def _executor_setup() -> tuple[dict, Any]:
    """The simulated graph's executor settings (config files) and the arm's kinematics (URDF): read once per
    process, not once per episode."""
    from etc_ros.core.kinematics import WidowXKinematics
    from etc_ros.nodes.graph import sim_rollout_settings

    return sim_rollout_settings(), WidowXKinematics.from_urdf()


def _executor_rollout(policy, env, cams: Sequence[str], instr: str, obs: dict, latency: float, frames: list | None,
                      on_step: Callable[[Any, dict], None] | None = None) -> dict:
    """The ROS graph's execution in simulated time: a chunk from each policy step's observation, offered to the
    SafetyExecutor `latency` s later; the executor ticks at servo_hz on the measured joints and its commands
    drive the servos (with the driver's servo profile). Same episode length and success test as `direct`."""
    from etc_ros.safety import SafetyExecutor

    st, kin = _executor_setup()
    ex = SafetyExecutor(kin, st["safety_limits"], mode=st["mode"], align=st["align"], servo_hz=st["servo_hz"],
                        policy_hz=st["policy_hz"])
    dt = 1.0 / st["servo_hz"]
    ticks_per_step = int(round(st["servo_hz"] / st["policy_hz"]))
    lat_ticks = int(round(max(0.0, float(latency)) / dt))
    profile = env.servo_profile
    env.set_servo_profile(*st["servo_profile"])
    q, g = env.joint_state()
    ex.reset(q, g, 0.0)
    pending: list[tuple[int, np.ndarray, float]] = []  # (tick it arrives, chunk, observation time)
    out = {"success": False, "steps": 0, "chunks": 0, "invalid_chunks": 0, "first_close": None}
    try:
        for k in range(int(env.cfg.max_steps) * ticks_per_step):
            t = k * dt
            if k % ticks_per_step == 0:
                o = obs if k == 0 else env.observation()
                imgs = [o["images"][c] for c in cams]
                chunk, ok = policy.predict_chunk(imgs if len(imgs) > 1 else imgs[0], o["state"], instr,
                                                 return_valid=True)
                out["chunks"] += 1
                out["invalid_chunks"] += int(not ok)
                pending.append((k + lat_ticks, np.asarray(chunk, dtype=float), t))
                if frames is not None and k:
                    frames.append(o["images"][cams[0]])
            while pending and pending[0][0] <= k:
                _, chunk, t_obs = pending.pop(0)
                ex.submit_chunk(chunk, t_obs, t)  # a NaN / out-of-range chunk is rejected: the arm holds
            q, g = env.joint_state()
            cmd = ex.tick(t, q, g, camera_stamp=t)
            if cmd.execute:
                if out["first_close"] is None and cmd.gripper < 0.5 <= g:
                    out["first_close"] = close_geometry(env, {"ee_pose": env.ee_pose()}, k // ticks_per_step)
                env.set_joint_targets(cmd.q, cmd.gripper)
            env.advance(dt)
            if (k + 1) % ticks_per_step == 0:
                out["steps"] += 1
                if on_step is not None:
                    on_step(env, None)
            if env.is_success():
                out["success"] = True
                out["steps"] = k // ticks_per_step + 1
                break
    finally:
        env.set_servo_profile(*profile)  # the world is reused by the next (maybe direct) episode
    out["executor"] = {key: v for key, v in ex.diagnostics().items()
                       if key in ("rejections", "clamps", "holds", "ik_failures", "reanchors")}
    return out


def rollout(env, policy, cams: Sequence[str], seed: int, split: str = "train", family: str | None = None, *,
            exec_horizon: int = 5, how: str = "direct", latency_s: float = 0.0, frames: list | None = None,
            on_step: Callable[[Any, dict], None] | None = None) -> dict:
    """THE closed-loop episode of this project (eval, SDM report, bench and demo all score with it): reset the
    scene (seed, split, family), then run `policy.predict_chunk(images, state, instruction, return_valid=True)`
    until success or the sim's step limit. how='direct': each action is one 5 Hz env.step (a non-finite action
    becomes `hold_action`), exec_horizon actions per chunk; 'executor': the ROS graph's safety executor in sim
    time (`latency_s` from observation to chunk). on_step(env, obs) after every policy step; frames collects the
    primary camera. Returns success, steps, chunks, invalid_chunks, instruction, family, first_close,
    predict_ms (per chunk)."""
    obs = env.reset(seed=int(seed), split=split, family=family)
    instr = env.instruction
    if frames is not None:
        frames.append(obs["images"][cams[0]])
    timed = _TimedPolicy(policy)
    if how == "executor":
        r = _executor_rollout(timed, env, cams, instr, obs, float(latency_s), frames, on_step=on_step)
        return {**r, "instruction": instr, "family": env.task.family, "predict_ms": timed.ms}
    if how == "direct":
        success, steps, invalid, chunks = False, 0, 0, 0
        first_close: dict | None = None
        H = max(1, int(exec_horizon))
        while not env.done and not success:
            imgs = [obs["images"][c] for c in cams]
            chunk, ok = timed.predict_chunk(imgs if len(imgs) > 1 else imgs[0], obs["state"], instr,
                                            return_valid=True)
            chunks += 1
            invalid += int(not ok)
            for a in np.asarray(chunk, dtype=float)[:H]:
                if not np.all(np.isfinite(a)):
                    a = hold_action(obs["state"])
                if first_close is None and float(a[6]) < 0.5 <= float(obs["state"][6]):
                    first_close = close_geometry(env, obs, steps)
                obs = env.step(np.asarray(a, dtype=float))
                steps += 1
                if on_step is not None:
                    on_step(env, obs)
                if frames is not None:
                    frames.append(obs["images"][cams[0]])
                if env.is_success():
                    success = True
                    break
                if env.done:
                    break
    else:
        raise RecipeError(f"rollout {how!r} is not one of {list(ROLLOUTS)}")
    return {"success": bool(success), "steps": steps, "chunks": chunks, "invalid_chunks": invalid,
            "instruction": instr, "family": env.task.family, "first_close": first_close, "predict_ms": timed.ms}


class _TimedPolicy:
    """predict_chunk with its wall time per call recorded (ms)."""

    def __init__(self, policy):
        self.policy, self.ms = policy, []

    def predict_chunk(self, images, state, instruction, return_valid=False):
        t0 = time.perf_counter()
        r = self.policy.predict_chunk(images, state, instruction, return_valid=True)
        self.ms.append(round(1000 * (time.perf_counter() - t0), 3))
        return r if return_valid else r[0]


def run_episode(task: dict) -> dict:
    """One closed-loop episode in this process's env (see _worker_init). task: {split, index, seed, video,
    exec_horizon, video_path, rollout, latency_s}."""
    policy, env, cams = _WORKER["policy"], _WORKER["env"], _WORKER["cameras"]
    t0 = time.perf_counter()
    frames: list | None = [] if task.get("video") else None
    r = rollout(env, policy, cams, int(task["seed"]), task["split"], task.get("family"),
                exec_horizon=int(task["exec_horizon"]), how=task.get("rollout", "direct"),
                latency_s=float(task.get("latency_s", 0.0)), frames=frames)
    r.pop("predict_ms")
    out = {"split": task["split"], "index": task["index"], "seed": task["seed"], **r,
           "seconds": round(time.perf_counter() - t0, 2)}
    if frames is not None and task.get("video_path"):
        out["video"] = str(write_gif(task["video_path"], frames, fps=5.0,
                                     caption=f"{r['instruction']} | success={r['success']}"))
    return out


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: float = 5.0, caption: str | None = None) -> Path:
    from PIL import Image, ImageDraw

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ims = []
    for f in frames:
        im = Image.fromarray(np.asarray(f, dtype=np.uint8))
        if caption:
            d = ImageDraw.Draw(im)
            d.rectangle([0, 0, im.width, 12], fill=(0, 0, 0))
            d.text((2, 0), caption[: max(8, im.width // 6)], fill=(255, 255, 255))
        ims.append(im.convert("P", palette=Image.ADAPTIVE))
    tmp = p.with_name("." + p.name + ".tmp")
    ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, p)
    return p


def episode_tasks(cfg: EvalConfig) -> list[dict]:
    """The closed-loop episodes of an evaluation: new seeded scenes (episode i of split s: seed * 100000 + i,
    family round-robin over cfg.families), or the scenes of a dataset's first episodes (cfg.seeds_from)."""
    from etc_training.sim.tasks import FAMILIES

    bad = [f for f in cfg.families if f not in FAMILIES]
    if bad:
        raise RecipeError(f"unknown task family(ies) {bad}; choose from {list(FAMILIES)}")
    if cfg.rollout not in ROLLOUTS:
        raise RecipeError(f"rollout {cfg.rollout!r} is not one of {list(ROLLOUTS)}")
    if not (math.isfinite(cfg.latency_s) and 0.0 <= cfg.latency_s <= 1.0):
        raise RecipeError(f"latency_s must be in [0, 1] s, got {cfg.latency_s!r}")
    tasks = []
    out = Path(cfg.out)
    how = {"rollout": cfg.rollout, "latency_s": float(cfg.latency_s)}

    def video(s: str, i: int) -> dict:
        return {"video": i < cfg.videos,
                "video_path": str(out / "videos" / f"{s}_{i:03d}.gif") if i < cfg.videos else None}

    if cfg.seeds_from:
        from etc_ros.data import DatasetReader

        reader = DatasetReader(cfg.seeds_from)
        for i, e in enumerate(reader.episodes()[: cfg.episodes]):
            meta = reader.episode_meta(e).get("metadata") or {}
            if "seed" not in meta:
                raise RecipeError(f"{cfg.seeds_from}: episode {e} has no metadata.seed (not a sim episode)")
            fam = (meta.get("task") or {}).get("family")
            if cfg.families and fam not in cfg.families:
                continue
            tasks.append({"split": str(meta.get("split", "train")), "index": i, "seed": int(meta["seed"]),
                          "family": fam, "exec_horizon": cfg.exec_horizon, "dataset_episode": int(e),
                          **how, **video("seeds", i)})
        if not tasks:
            raise RecipeError(f"{cfg.seeds_from}: no episodes to evaluate (families {cfg.families or 'all'})")
        return tasks
    for s in cfg.splits:
        for i in range(cfg.episodes):
            fam = cfg.families[i % len(cfg.families)] if cfg.families else None
            tasks.append({"split": s, "index": i, "seed": cfg.seed * 100_000 + i, "family": fam,
                          "exec_horizon": cfg.exec_horizon, **how, **video(s, i)})
    return tasks


def closed_loop(cfg: EvalConfig, progress: bool = True) -> dict:
    from etc_training.sim import SPLITS

    bad = [s for s in cfg.splits if s not in SPLITS]
    if bad:
        raise RecipeError(f"unknown sim split(s) {bad}; choose from {list(SPLITS)}")
    if cfg.episodes <= 0:
        return {}
    tasks = episode_tasks(cfg)
    import sys

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="eval episodes", disable=not (progress and sys.stderr.isatty()))
    results = []
    init_args = (cfg.checkpoint, cfg.threads, list(cfg.cameras), cfg.max_steps)
    if cfg.workers <= 1:
        _worker_init(*init_args)
        for t in tasks:
            results.append(run_episode(t))
            bar.update(1)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(cfg.workers, len(tasks)), initializer=_worker_init, initargs=init_args) as pool:
            for r in pool.imap_unordered(run_episode, tasks):
                results.append(r)
                bar.update(1)
    bar.close()
    splits = list(dict.fromkeys(t["split"] for t in tasks))
    results.sort(key=lambda r: (splits.index(r["split"]), r["index"]))
    per_split = {}
    for s in splits:
        rs = [r for r in results if r["split"] == s]
        k = sum(r["success"] for r in rs)
        lo, hi = wilson_interval(k, len(rs))
        per_split[s] = {"episodes": len(rs), "successes": k, "success_rate": k / max(1, len(rs)),
                        "ci95": [round(lo, 4), round(hi, 4)],
                        "mean_steps": float(np.mean([r["steps"] for r in rs])) if rs else 0.0,
                        "invalid_chunk_rate": float(sum(r["invalid_chunks"] for r in rs) /
                                                    max(1, sum(r["chunks"] for r in rs))),
                        "failure_mode": miss_summary(rs)}
        fams = sorted({r["family"] for r in rs})
        if len(fams) > 1:
            per_split[s]["per_family"] = {}
            for f in fams:
                fr = [r for r in rs if r["family"] == f]
                kf = sum(r["success"] for r in fr)
                per_split[s]["per_family"][f] = {"episodes": len(fr), "successes": kf,
                                                 "success_rate": kf / len(fr),
                                                 "ci95": [round(v, 4) for v in wilson_interval(kf, len(fr))]}
    return {"per_split": per_split, "episodes": results}


# ---------------------------------------------------------------------------------------------- offline ETC
def _image_size(img: Any) -> tuple[int, int]:
    a = img[0] if isinstance(img, list) else img
    return int(a.shape[1]), int(a.shape[0])  # W, H


def _norm_text(s: Any) -> str:
    return " ".join(str(s).lower().replace(".", " ").split())


def score_answer(subtype: str, pred_text: str, gt_text: str, width: int, height: int) -> dict:
    """Metrics of one generated ETC answer against the reference (both parsed with the ETC answer parser)."""
    from etc_training.etc.coords import from_loc, parse_answer

    gt = parse_answer(subtype, gt_text)
    pr = parse_answer(subtype, pred_text)
    out: dict[str, Any] = {"subtype": subtype, "parsed": pr is not None}
    if gt is None:
        out["skipped"] = "unparseable reference"
        return out
    if pr is None:
        return out

    def px(loc):
        return np.array([from_loc(loc[0], width), from_loc(loc[1], height)])

    if subtype in ("point", "affordance_grasp", "affordance_place"):
        out["point_error_px"] = float(np.linalg.norm(px(pr) - px(gt)))
    elif subtype == "box":
        a = [from_loc(pr[0], width), from_loc(pr[1], height), from_loc(pr[2], width), from_loc(pr[3], height)]
        b = [from_loc(gt[0], width), from_loc(gt[1], height), from_loc(gt[2], width), from_loc(gt[3], height)]
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        out["box_iou"] = float(inter / union) if union > 0 else 0.0
        out["box_center_error_px"] = float(np.linalg.norm(
            np.array([(a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2])))
    elif subtype == "trajectory":
        n = min(len(pr), len(gt))
        d = [float(np.linalg.norm(px(pr[i]) - px(gt[i]))) for i in range(n)]
        out["trajectory_ade_px"] = float(np.mean(d)) if d else float("nan")
        out["trajectory_fde_px"] = float(np.linalg.norm(px(pr[-1]) - px(gt[-1])))
        out["trajectory_gripper_acc"] = float(np.mean([pr[i][2] == gt[i][2] for i in range(n)])) if n else 0.0
        out["trajectory_length_match"] = len(pr) == len(gt)
    elif subtype == "plan":
        p_, g_ = [_norm_text(x) for x in pr], [_norm_text(x) for x in gt]
        out["plan_exact"] = p_ == g_
        out["plan_step_acc"] = float(np.mean([i < len(p_) and p_[i] == g for i, g in enumerate(g_)])) if g_ else 0.0
    elif subtype == "done":
        out["correct"] = bool(pr == gt)
    elif subtype in ("objects", "relation", "gripper_relation"):
        out["correct"] = sorted(map(_norm_text, pr)) == sorted(map(_norm_text, gt))
    else:  # goal, next_subtask
        out["correct"] = _norm_text(pr) == _norm_text(gt)
    return out


def pick_records(records: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """n records, round-robin over subtypes (deterministic), so every kind of answer is scored."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(str(r.get("subtype")), []).append(r)
    rng = np.random.default_rng(seed)
    for k in by:
        order = rng.permutation(len(by[k]))
        by[k] = [by[k][i] for i in order]
    out, keys, k = [], sorted(by), 0
    while len(out) < n and any(by.values()):
        key = keys[k % len(keys)]
        if by[key]:
            out.append(by[key].pop())
        k += 1
    return out


def summarize_etc(scores: Sequence[dict]) -> dict:
    def mean(key, subs=None):
        v = [s[key] for s in scores if key in s and (subs is None or s["subtype"] in subs)
             and not (isinstance(s[key], float) and math.isnan(s[key]))]
        return float(np.mean(v)) if v else None

    scored = [s for s in scores if "skipped" not in s]
    summ = {
        "samples": len(scored),
        "parse_rate": float(np.mean([s["parsed"] for s in scored])) if scored else None,
        "point_error_px": mean("point_error_px"),
        "box_iou": mean("box_iou"),
        "box_center_error_px": mean("box_center_error_px"),
        "trajectory_ade_px": mean("trajectory_ade_px"),
        "trajectory_fde_px": mean("trajectory_fde_px"),
        "trajectory_gripper_acc": mean("trajectory_gripper_acc"),
        "plan_accuracy": mean("plan_exact"),
        "plan_step_accuracy": mean("plan_step_acc"),
        "text_accuracy": mean("correct"),
    }
    per = {}
    for st in sorted({s["subtype"] for s in scored}):
        ss = [s for s in scored if s["subtype"] == st]
        per[st] = {"n": len(ss), "parse_rate": float(np.mean([s["parsed"] for s in ss]))}
    summ["per_subtype"] = per
    return summ


def offline_etc(policy, records: Sequence[dict], images, max_new_tokens: int = 96, progress: bool = True) -> dict:
    """Generate answers for `records` (already picked) and score them; images: RecordImages."""
    import sys

    from tqdm import tqdm

    scores = []
    for r in tqdm(records, desc="ETC answers", disable=not (progress and sys.stderr.isatty())):
        img = images(r)
        W, H = _image_size(img)
        pred = policy.generate_answer(img, r["prompt"], max_new_tokens=max_new_tokens)
        s = score_answer(str(r["subtype"]), pred, r["answer"], W, H)
        s.update(id=r.get("id"), prediction=pred[:300], reference=r["answer"][:300])
        scores.append(s)
    return {"summary": summarize_etc(scores), "samples": scores}


# ---------------------------------------------------------------------------------------------- offline actions
def offline_actions(policy, dataset, n: int, batch: int = 8) -> dict:
    """Token loss / accuracy and decoded-chunk MSE (normalized units) on n evenly spaced frames of `dataset`
    (an ActionChunkDataset)."""
    import torch

    if len(dataset) == 0:
        return {}
    n = min(n, len(dataset))
    idx = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    proc = policy.processor
    losses, accs, mses, valid = [], [], [], []
    policy.eval()
    with torch.no_grad():
        for k in range(0, n, batch):
            part = idx[k:k + batch]
            b = proc.collate([dataset.example(proc, int(i)) for i in part])
            out = policy(b)
            losses.append(float(out["loss"]) * len(part))
            accs.append(float(out.get("action_accuracy", 0.0)) * len(part))
            items = [dataset.item(int(i)) for i in part]
            chunks, ok = policy.predict_chunks([{"images": it["images"], "state": it["state"],
                                                 "instruction": it["instruction"]} for it in items])
            for c, it, v in zip(chunks, items, ok):
                a = proc.normalize_actions(c) if np.all(np.isfinite(c)) else None
                g = proc.normalize_actions(it["actions"])
                mses.append(float(np.mean((a - g) ** 2)) if a is not None else float("nan"))
                valid.append(bool(v))
    m = np.asarray(mses)
    return {"samples": int(n), "action_loss": float(sum(losses) / n), "action_accuracy": float(sum(accs) / n),
            "chunk_mse_norm": float(np.nanmean(m)) if np.isfinite(m).any() else None,
            "valid_chunk_rate": float(np.mean(valid))}


# ---------------------------------------------------------------------------------------------- entry point
def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    import torch

    from etc_ros.core.io import atomic_write_json, atomic_write_text

    ck = Path(cfg.checkpoint)
    is_bundle = (ck / "manifest.json").is_file()
    if not (ck / "vla.json").is_file() and not is_bundle:
        raise RecipeError(f"--checkpoint: not an etc-vla policy directory (no vla.json) or bundle (no "
                          f"manifest.json): {ck}")
    if is_bundle and (cfg.etc or cfg.data):
        raise RecipeError("--etc / --data need a PyTorch policy checkpoint, not a bundle")
    if cfg.episodes < 0 or cfg.workers < 1 or cfg.exec_horizon < 1:
        raise RecipeError("episodes must be >= 0, workers >= 1 and exec_horizon >= 1")
    torch.set_num_threads(max(1, int(cfg.threads)))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"checkpoint": str(ck), "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    if cfg.episodes > 0:
        res["closed_loop"] = closed_loop(cfg, progress)
    policy = None
    if cfg.etc or cfg.data:
        from etc_training.models.vla import VLAPolicy
        from etc_training.recipe.data import EpisodeStore, RecordImages

        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001
            pass
        policy = VLAPolicy.load(ck)
        store = EpisodeStore(64)
    if cfg.etc:
        from etc_training.recipe.config import SourceConfig
        from etc_training.recipe.data import load_language_source

        src = load_language_source(SourceConfig(name="eval", kind="etc", path=cfg.etc, splits=list(cfg.etc_splits)))
        recs = pick_records(src.records, cfg.etc_samples, cfg.seed)
        n_views = policy.processor.config.n_views
        res["etc"] = offline_etc(policy, recs, RecordImages(store, cfg.cameras, n_views), cfg.max_new_tokens,
                                 progress)
    if cfg.data:
        from etc_training.recipe.data import ActionChunkDataset

        at = policy.processor.action_tokenizer
        reader = store.reader(cfg.data)
        if reader.episodes(cfg.data_split):
            cams = [c for c in cfg.cameras if c in reader.cameras] or list(reader.cameras)[:1]
            ds = ActionChunkDataset(store, cfg.data, [cfg.data_split], at.horizon, cams)
            res["actions"] = offline_actions(policy, ds, cfg.action_samples)
        else:
            res["actions"] = {"skipped": f"no episodes in split {cfg.data_split!r}"}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "eval.json", res)
    atomic_write_text(out / "eval.md", eval_markdown(res))
    return res


def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def eval_markdown(res: dict) -> str:
    lines = [f"# Evaluation of `{res['checkpoint']}`", ""]
    cl = res.get("closed_loop") or {}
    if cl:
        lines += ["## Closed-loop success (MuJoCo WidowX)", "",
                  "| split | episodes | success rate | 95% CI | mean steps "
                  "| invalid chunks | median miss at first close (mm) | never closed |",
                  "|---|---|---|---|---|---|---|---|"]
        for s, v in cl["per_split"].items():
            fm = v.get("failure_mode") or {}
            miss = fm.get("median_horizontal_miss_m")
            lines.append(f"| {s} | {v['episodes']} | {v['success_rate']:.3f} | [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"
                         f" | {v['mean_steps']:.1f} | {v['invalid_chunk_rate']:.2f} | "
                         f"{'-' if miss is None else f'{1000 * miss:.1f}'} | {fm.get('never_closed', '-')} |")
            for f, fv in (v.get("per_family") or {}).items():
                lines.append(f"| {s} / {f} | {fv['episodes']} | {fv['success_rate']:.3f} | "
                             f"[{fv['ci95'][0]:.2f}, {fv['ci95'][1]:.2f}] | | | | |")
        vids = [e["video"] for e in cl["episodes"] if e.get("video")]
        if vids:
            lines += ["", "Videos: " + ", ".join(f"`{Path(v).name}`" for v in vids)]
        lines.append("")
    e = (res.get("etc") or {}).get("summary")
    if e:
        lines += ["## Offline ETC answer quality", "", "| metric | value |", "|---|---|"]
        for k in ("samples", "parse_rate", "point_error_px", "box_iou", "trajectory_ade_px", "trajectory_fde_px",
                  "trajectory_gripper_acc", "plan_accuracy", "plan_step_accuracy", "text_accuracy"):
            lines.append(f"| {k} | {_fmt(e.get(k))} |")
        lines.append("")
    a = res.get("actions")
    if a and "skipped" not in a:
        lines += ["## Offline action quality (held-out episodes)", "", "| metric | value |", "|---|---|"]
        for k in ("samples", "action_loss", "action_accuracy", "chunk_mse_norm", "valid_chunk_rate"):
            lines.append(f"| {k} | {_fmt(a.get(k))} |")
        lines.append("")
    lines.append(f"_{res.get('seconds', 0)} s_")
    return "\n".join(lines) + "\n"
