"""Teacher-10 vs teacher-1 vs SDM-1 (vs CD-1): held-out action error, closed-loop success in the MuJoCo world
(ID and OOD splits), head latency and end-to-end policy latency -> report.json + report.md.

Every variant shares the frozen backbone and the prefix pooler; only the sampler / denoiser differ:
- teacher-10: the trained diffusion head, DDIM with 10 denoiser calls (grid 99, 88, ..., 11, 0);
- teacher-1:  the same teacher, DDIM with ONE call at t = 99 (what naive one-step sampling of the teacher gives);
- sdm-1:      the SDM generator, ONE call at t = 99;
- cd-1:       the consistency-distilled student, ONE call at t = 99 (optional baseline).
Noise: every variant draws the same noise sequence (head noise_seed, reset per episode / per evaluation), so
differences come from the heads alone.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from etc_training.distill.export import latency_stats
from etc_training.distill.policy import ConditionBank, use_head
from etc_training.models.heads.diffusion import DiffusionActionHead


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95 % interval of etc_training.recipe.evaluate, rounded for the report."""
    from etc_training.recipe.evaluate import wilson_interval

    lo, hi = wilson_interval(k, n, z)
    return (round(lo, 4), round(hi, 4))


class CallCounter:
    """Counts forward calls of a module (a forward hook); `with CallCounter(head.denoiser) as c: ...; c.n`."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.n = module, 0

    def _hook(self, *_):
        self.n += 1

    def __enter__(self):
        self._h = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._h.remove()
        return False


# ---------------------------------------------------------------------------------------------- offline error
@torch.no_grad()
def offline_action_error(heads: Mapping[str, DiffusionActionHead], bank: ConditionBank, processor: Any,
                         seed: int = 0, batch: int = 256) -> dict:
    """Per variant: error of the sampled chunk against the held-out demonstration chunk of the same frame.
    mse_norm / mae_norm: normalized action space (1.0 = half the q01..q99 range); xyz_mae_mm: raw delta-EE
    position error; gripper_mae: absolute gripper command error in [0, 1]; first_* : the first action only."""
    n = len(bank)
    g = torch.Generator().manual_seed(int(seed))
    any_head = next(iter(heads.values()))
    noise = torch.randn(n, any_head.horizon, any_head.action_dim, generator=g)
    gt = bank.actions.numpy().astype(np.float64)
    gt_raw = processor.unnormalize_actions(gt)
    out = {}
    for name, head in heads.items():
        head.eval()
        preds = []
        with CallCounter(head.denoiser) as cc:
            for k in range(0, n, batch):
                preds.append(head.sample(bank.cond[k:k + batch], noise[k:k + batch]).numpy())
        p = np.concatenate(preds).astype(np.float64)
        p_raw = processor.unnormalize_actions(p)
        err = p - gt
        out[name] = {
            "frames": int(n),
            "mse_norm": float(np.mean(err ** 2)),
            "mae_norm": float(np.mean(np.abs(err))),
            "first_mse_norm": float(np.mean(err[:, 0] ** 2)),
            "xyz_mae_mm": float(1000 * np.mean(np.abs(p_raw[..., :3] - gt_raw[..., :3]))),
            "rot_mae_mrad": float(1000 * np.mean(np.abs(p_raw[..., 3:6] - gt_raw[..., 3:6]))),
            "gripper_mae": float(np.mean(np.abs(p_raw[..., 6] - gt_raw[..., 6]))),
            "sample_std_norm": float(p.std(axis=0).mean()),
            "denoiser_calls_per_batch": cc.n / max(1, math.ceil(n / batch)),
        }
    # a reference point: always predicting the mean demonstration chunk
    mean_chunk = gt.mean(axis=0, keepdims=True)
    out["_mean_chunk_baseline"] = {"frames": int(n), "mse_norm": float(np.mean((gt - mean_chunk) ** 2)),
                                   "mae_norm": float(np.mean(np.abs(gt - mean_chunk)))}
    return out


def _energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row energy distance between sample sets x (F, K, n) and y (F, K, n): 2E|X-Y| - E|X-X'| - E|Y-Y'|
    (unbiased within-set terms); 0 when the two distributions agree."""
    k = x.shape[1]
    off = (1 - torch.eye(k)).unsqueeze(0)
    xy = torch.cdist(x, y).mean(dim=(1, 2))
    xx = (torch.cdist(x, x) * off).sum(dim=(1, 2)) / (k * (k - 1))
    yy = (torch.cdist(y, y) * off).sum(dim=(1, 2)) / (k * (k - 1))
    return 2 * xy - xx - yy


@torch.no_grad()
def distribution_fidelity(heads: Mapping[str, DiffusionActionHead], bank: ConditionBank, reference: str = "teacher-10",
                          k: int = 8, seed: int = 0, max_frames: int = 200) -> dict:
    """How well each variant reproduces the reference sampler's (teacher-10's) chunk DISTRIBUTION per
    observation: K samples from each per frame, energy distance in the flattened normalized chunk space,
    averaged over frames. `reference` against itself (independent noise) gives the sampling floor; a collapsed
    sampler (teacher-1 ~ the conditional mean) shows a large distance even when its MSE to demonstrations is
    low. Also the mean per-frame spread (std over the K samples)."""
    if reference not in heads:
        return {}
    n = min(len(bank), int(max_frames))
    idx = torch.from_numpy(np.linspace(0, len(bank) - 1, n).round().astype(np.int64))
    cond = bank.cond[idx].repeat_interleave(k, 0)
    ref = heads[reference]
    shape = (n * k, ref.horizon, ref.action_dim)
    g = torch.Generator().manual_seed(int(seed))
    z_ref, z_var = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    ref_s = ref.sample(cond, z_ref).reshape(n, k, -1)
    out = {}
    for name, head in heads.items():
        s = head.sample(cond, z_var).reshape(n, k, -1)
        out[name] = {"energy_distance": float(_energy_distance(s, ref_s).mean()),
                     "spread_std": float(s.std(dim=1).mean()), "frames": n, "samples_per_frame": k}
    out["_reference"] = reference
    return out


# ---------------------------------------------------------------------------------------------- closed loop
def _make_env(n_views: int, max_steps: int):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from etc_training.sim import SimConfig, SimEnv

    scfg = SimConfig()
    cams = ["primary", "wrist"][:max(1, n_views)]
    scfg.render.cameras = cams
    if "wrist" in cams:
        scfg.camera.wrist = True
    if max_steps:
        scfg.max_steps = int(max_steps)
    return SimEnv(scfg), cams


def run_episode(env, policy, cams: Sequence[str], seed: int, split: str, exec_horizon: int, reach_tol: float,
                family: str | None = None) -> dict:
    """The project's one closed-loop episode (etc_training.recipe.evaluate.rollout) plus reach / grasp tracking."""
    from etc_training.recipe.evaluate import rollout

    track = {"min_dist": float("inf"), "grasped": False}

    def on_step(e, _obs):
        obj = e.task.object
        pos, _ = e.pose(obj)
        track["min_dist"] = min(track["min_dist"], float(np.linalg.norm(e.ee_pose()[:3] - np.asarray(pos)[:3])))
        track["grasped"] = track["grasped"] or bool(e.grasped(obj))

    r = rollout(env, policy, cams, seed, split, family, exec_horizon=exec_horizon, on_step=on_step)
    min_dist = track["min_dist"]
    return {"seed": int(seed), "split": split, "instruction": r["instruction"], "family": r["family"],
            "success": r["success"], "steps": r["steps"], "chunks": r["chunks"], "invalid_chunks": r["invalid_chunks"],
            "min_ee_object_m": round(min_dist, 4), "reached": bool(min_dist <= reach_tol), "grasped": track["grasped"],
            "predict_ms_median": round(float(np.median(r["predict_ms"])), 2) if r["predict_ms"] else None}


def closed_loop(policy, heads: Mapping[str, DiffusionActionHead], splits: Sequence[str], episodes: int, seed: int,
                exec_horizon: int = 5, max_steps: int = 0, reach_tol: float = 0.03, progress: bool = True,
                families: Sequence[str] = ()) -> dict:
    """Closed-loop episodes per (variant, split): episode i of split s is reset(seed=seed + 1000*k + i) with k
    the split's index (and family families[i % len(families)] when given), the same scenes for every variant."""
    env, cams = _make_env(policy.processor.config.n_views, max_steps)
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(heads) * len(splits) * episodes, desc="closed loop", unit="ep",
                   disable=not progress or None)
    except ImportError:  # pragma: no cover
        bar = None
    res: dict[str, dict] = {}
    try:
        for name, head in heads.items():
            res[name] = {}
            for k, split in enumerate(splits):
                eps = []
                for i in range(episodes):
                    # noise seeded by the scene: independent across scenes (one noise stream shared by all of them
                    # gave every episode the same first chunk noise: teacher-10 5/50 here vs 23/50 in etc-vla eval),
                    # paired across variants
                    head.reset_noise(seed + 1000 * k + i)
                    with use_head(policy, head):
                        eps.append(run_episode(env, policy, cams, seed + 1000 * k + i, split, exec_horizon,
                                               reach_tol, families[i % len(families)] if families else None))
                    if bar is not None:
                        bar.update(1)
                n = len(eps)
                s = sum(e["success"] for e in eps)
                res[name][split] = {
                    "episodes": n, "success": s, "success_rate": round(s / n, 4) if n else None,
                    "success_ci95": wilson(s, n),
                    "reached_rate": round(sum(e["reached"] for e in eps) / n, 4) if n else None,
                    "grasped_rate": round(sum(e["grasped"] for e in eps) / n, 4) if n else None,
                    "min_ee_object_m_mean": (round(float(np.mean([e["min_ee_object_m"] for e in eps])), 4)
                                             if n else None),
                    "invalid_chunks": int(sum(e["invalid_chunks"] for e in eps)),
                    "predict_ms_median": (round(float(np.median([e["predict_ms_median"] for e in eps])), 2)
                                          if n else None),
                    "per_episode": eps,
                }
    finally:
        if bar is not None:
            bar.close()
        env.close()
    return res


# ---------------------------------------------------------------------------------------------- latency
def interleaved_timing(fns: Mapping[str, Any], runs: int, warmup: int = 3) -> dict:
    """Time zero-argument callables round-robin (run r of every variant, then run r + 1, ...), so that all
    variants see the same background load on a shared machine. {name: latency_stats (+ min_ms)}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(int(runs)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(1000 * (time.perf_counter() - t0))
    return {k: dict(latency_stats(v), min_ms=round(float(np.min(v)), 4)) for k, v in ts.items()}


@torch.no_grad()
def head_latency(heads: Mapping[str, DiffusionActionHead], cond: torch.Tensor, runs: int = 50) -> dict:
    """Torch eager latency of the head's sampler alone (condition given), batch 1, + denoiser calls per chunk."""
    calls = {}
    for name, head in heads.items():
        head.eval()
        with CallCounter(head.denoiser) as cc:
            head.sample(cond)
        calls[name] = cc.n
    fns = {name: (lambda h=head: h.sample(cond)) for name, head in heads.items()}
    out = interleaved_timing(fns, runs)
    for name in out:
        out[name]["denoiser_calls_per_chunk"] = calls[name]
    return out


@torch.no_grad()
def policy_latency(policy, heads: Mapping[str, DiffusionActionHead], observation: Mapping[str, Any],
                   runs: int = 20) -> dict:
    """Torch eager end-to-end latency of predict_chunk (preprocessing + backbone + head), batch 1."""
    def call(head):
        with use_head(policy, head):
            policy.predict_chunk(observation["images"], observation["state"], observation["instruction"])

    return interleaved_timing({name: (lambda h=head: call(h)) for name, head in heads.items()}, runs)


def onnx_head_latency(heads: Mapping[str, DiffusionActionHead], out_dir: Path, seq_len: int, runs: int = 50,
                      opset: int = 18) -> dict:
    """Export every variant's head as ONE graph (pooler + sampler) and time one ORT call, batch 1."""
    from etc_training.distill.export import (
        _example_inputs,
        check_head_graph,
        denoiser_calls,
        export_head_graph,
        ort_session,
    )

    if any(getattr(h, "name", "") == "regression_diffusion" for h in heads.values()):
        # its condition also takes the state and the image-token mask (spatial soft-argmax): the (hidden, mask,
        # noise) graph does not apply; the bundle latency times the exported head graph end to end instead
        return {"_skipped": {"reason": "regression_diffusion head: condition needs state + image mask; see "
                                       "policy_bundle (the bundle's head graph)"}}
    info, fns = {}, {}
    for name, head in heads.items():
        p = export_head_graph(head, out_dir / f"head_{name}.onnx", opset=opset)
        info[name] = dict(graph=str(p), bytes=p.stat().st_size, parity_max_abs=check_head_graph(p, head),
                          denoiser_calls_per_chunk=denoiser_calls(head))
        hid, mask, noise = _example_inputs(head, 1, seq_len, seed=2)
        feeds = {"hidden_states": hid.numpy(), "condition_mask": mask.numpy(), "noise": noise.numpy()}
        sess = ort_session(p)
        fns[name] = lambda s=sess, f=feeds: s.run(None, f)
    out = interleaved_timing(fns, runs, warmup=5)
    for name in out:
        out[name].update(info[name])
    return out


def onnx_sampler_latency(heads: Mapping[str, DiffusionActionHead], out_dir: Path, runs: int = 50,
                         opset: int = 18) -> dict:
    """The sampler alone (condition given, no pooler) as ONNX in ORT, batch 1: the part the distillation changes."""
    from etc_training.distill.export import denoiser_calls, export_sampler_graph, ort_session

    fns, calls = {}, {}
    for name, head in heads.items():
        p = export_sampler_graph(head, out_dir / f"sampler_{name}.onnx", opset=opset)
        g = torch.Generator().manual_seed(3)
        feeds = {"cond": torch.randn(1, head.denoiser.cond_dim, generator=g).numpy(),
                 "noise": torch.randn(1, head.horizon, head.action_dim, generator=g).numpy()}
        sess = ort_session(p)
        fns[name] = lambda s=sess, f=feeds: s.run(None, f)
        calls[name] = denoiser_calls(head)
    out = interleaved_timing(fns, runs, warmup=5)
    for name in out:
        out[name]["denoiser_calls_per_chunk"] = calls[name]
    return out


def interpretation_notes(res: Mapping[str, Any]) -> list[str]:
    """Plain-language reading aids generated from the figures (added to the report)."""
    notes = []
    tr = res.get("training", {})
    if "loss_G" in tr:
        notes.append("loss_G = 0.5 * mean(grad^2) is ~0 at the start because D and F are identical copies; it grows "
                     "while D learns the generator's own (initially collapsed) distribution, so it is not a descent "
                     "curve. How close the generator gets to the teacher's distribution is the fidelity table.")
    off = res.get("offline", {})
    for split, rows in off.items():
        if "teacher-1" in rows and "teacher-10" in rows and "mse_norm" in rows["teacher-1"]:
            if rows["teacher-1"]["mse_norm"] < rows["teacher-10"]["mse_norm"]:
                notes.append(f"{split}: teacher-1 has the lowest MSE to the demonstrations because one step from "
                             "pure noise returns ~the conditional mean (sample spread "
                             f"{rows['teacher-1'].get('sample_std_norm', float('nan')):.3f} vs "
                             f"{rows['teacher-10'].get('sample_std_norm', float('nan')):.3f} for teacher-10); the MSE "
                             "of one sample to one demonstration rewards the mean, not a faithful distribution.")
                break
    if res.get("fidelity"):
        notes.append("Energy distances use the unbiased within-set terms (8 samples per observation), so values near "
                     "0 can be slightly negative; teacher-10 against itself is the floor.")
    cl = res.get("closed_loop", {})
    if cl and all(r.get("success", 0) == 0 for per in cl.values() for r in per.values()):
        notes.append("No variant completes a task in closed loop: the teacher itself fails every episode at this "
                     "scale, so closed-loop success cannot separate the variants here (reach / grasp rates and the "
                     "closest EE-object distance are listed as partial progress).")
    return notes


# ---------------------------------------------------------------------------------------------- markdown
def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def report_markdown(res: Mapping[str, Any]) -> str:
    L: list[str] = ["# SDM one-step distillation report", ""]
    s = res.get("setup", {})
    L += [f"- teacher checkpoint: `{s.get('checkpoint')}`", f"- student checkpoint: `{s.get('student')}`",
          f"- distillation frames: {s.get('frames')} (splits {s.get('splits')}), condition cache "
          f"{s.get('bank_seconds')} s", f"- SDM: {s.get('sdm_steps')} iterations ({s.get('generator_updates')} "
          f"generator updates), {s.get('sdm_seconds')} s; config `{json.dumps(s.get('sdm_config', {}))}`",
          f"- machine: {s.get('machine')}", ""]
    tr = res.get("training", {})
    if tr:
        L += ["## Distillation curves (first -> last logged window)", "", "| metric | first | last |",
              "| --- | --- | --- |"]
        for k, (a, b) in tr.items():
            L.append(f"| {k} | {_f(a, 4)} | {_f(b, 4)} |")
        L.append("")
    off = res.get("offline", {})
    if off:
        L += ["## Action error against held-out demonstrations", "",
              "Normalized units (1.0 = half the q01..q99 range of a dimension); the same noise for every variant.", ""]
        for split, rows in off.items():
            L += [f"### {split}", "", "| variant | frames | MSE (norm) | MAE (norm) | first-action MSE | "
                  "xyz MAE (mm) | rot MAE (mrad) | gripper MAE | sample std |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for name, r in rows.items():
                L.append(f"| {name} | {r.get('frames')} | {_f(r.get('mse_norm'), 4)} | {_f(r.get('mae_norm'), 4)} | "
                         f"{_f(r.get('first_mse_norm'), 4)} | {_f(r.get('xyz_mae_mm'), 2)} | "
                         f"{_f(r.get('rot_mae_mrad'), 2)} | {_f(r.get('gripper_mae'), 3)} | "
                         f"{_f(r.get('sample_std_norm'), 3)} |")
            L.append("")
    fid = res.get("fidelity", {})
    if fid:
        L += ["## Fidelity to the teacher's action distribution", "",
              "Energy distance between K samples of the variant and K samples of teacher-10 per held-out observation "
              "(normalized, flattened chunks; teacher-10 against itself with independent noise = the sampling floor), "
              "and the spread of the variant's samples.", ""]
        for split, rows in fid.items():
            L += [f"### {split}", "", "| variant | energy distance to teacher-10 | sample spread (std) |",
                  "| --- | --- | --- |"]
            for name, r in rows.items():
                if isinstance(r, dict):
                    L.append(f"| {name} | {_f(r['energy_distance'], 4)} | {_f(r['spread_std'], 4)} |")
            L.append("")
    cl = res.get("closed_loop", {})
    if cl:
        L += ["## Closed-loop success in the simulated world", "",
              "| variant | split | episodes | success | 95 % CI | reached object | grasped | mean min EE-object (m) | "
              "invalid chunks |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, per in cl.items():
            for split, r in per.items():
                L.append(f"| {name} | {split} | {r['episodes']} | {_f(r['success_rate'], 2)} | "
                         f"[{r['success_ci95'][0]:.2f}, {r['success_ci95'][1]:.2f}] | {_f(r['reached_rate'], 2)} | "
                         f"{_f(r['grasped_rate'], 2)} | {_f(r['min_ee_object_m_mean'], 3)} | {r['invalid_chunks']} |")
        L.append("")
    lat = res.get("latency", {})
    if lat:
        L += ["## Latency (batch 1, median ms)", ""]
        rows = []
        for kind, per in lat.items():
            if not isinstance(per, dict) or kind.startswith("_"):
                continue
            for name, r in per.items():
                if isinstance(r, dict) and "median_ms" in r:
                    rows.append(f"| {kind} | {name} | {_f(r['median_ms'], 3)} | {_f(r.get('min_ms'), 3)} | "
                                f"{_f(r.get('p90_ms'), 3)} | {r.get('denoiser_calls_per_chunk', '-')} |")
        L += ["| measurement | variant | median ms | min ms | p90 ms | denoiser calls / chunk |",
              "| --- | --- | --- | --- | --- | --- |"]
        L += rows
        L.append("")
        sp = lat.get("_speedups", {})
        if sp:
            L += ["Speed-ups of sdm-1 over teacher-10: " + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()), ""]
        note = lat.get("_note")
        if note:
            L += [note, ""]
    notes = list(res.get("notes", [])) + interpretation_notes(res)
    if notes:
        L += ["## Notes", ""]
    for line in notes:
        L.append(f"- {line}")
    return "\n".join(L).rstrip() + "\n"
