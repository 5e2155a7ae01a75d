"""Policy inference benchmark: PyTorch eager vs ONNX Runtime fp32 / int8-dynamic / int8-static on this CPU.

    etc-vla bench policy [--quick] [--bundle BUNDLE]
    run(out_dir, quick=False, bundle=None) -> dict

One bundle, same inputs for every variant. Without --bundle, the newest trained token-head checkpoint under
runs/ (*/stage3/final) is exported (fp32 + int8-dynamic + int8-static); without one, the random-init tiny model.
Each variant runs in its own process (clean peak-memory figure, no shared thread pools), all with the same
thread count:
- latency of one chunk (PolicyRuntime.step: preprocessing + model + decoding + unnormalization), p50 / p99 over
  fixed observations after warm-up, and the ratio eager / variant (speedup);
- peak resident memory (VmHWM after the imports, reset through /proc/self/clear_refs: model load + inference);
- closed-loop success in the MuJoCo world on a fixed set of episodes (same seeds for every variant; first
  `exec_horizon` actions of each chunk executed, non-finite chunks hold; as `etc-vla eval`), when mujoco works.
Target (issue 6): ORT int8 >= 2x faster than eager with <= 5 points of success lost; reported, not asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8-dynamic"),
            ("onnxruntime", "int8-static")]


def _label(backend: str, variant: str) -> str:
    return "torch-eager" if backend == "torch" else f"ort-{variant}"


def find_trained_checkpoint(root: str | Path = "runs") -> Path | None:
    """Newest */stage3/final checkpoint under `root` whose head is the token head."""
    cands = []
    for p in Path(root).glob("**/stage3/final/vla.json"):
        try:
            meta = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("head") or {}).get("type", "tokens") == "tokens":
            cands.append((p.stat().st_mtime, p.parent))
    return max(cands)[1] if cands else None


def _peak_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _observations(rt: Any, n: int, seed: int) -> list[dict]:
    from etc_training.export.bundle_write import generated_observations

    return generated_observations(rt.processor, rt.cameras, n, seed)


class _RuntimePolicy:
    """A PolicyRuntime behind the rollout's predict_chunk interface; keeps the first chunk of each episode."""

    def __init__(self, rt: Any):
        self.rt, self.first_chunks, self._new_episode = rt, [], True

    def predict_chunk(self, images: Any, state: Any, instruction: str, return_valid: bool = False):
        views = images if isinstance(images, (list, tuple)) else [images]
        chunk = self.rt.step({"images": dict(zip(self.rt.cameras, views)), "state": state,
                              "instruction": instruction})
        if self._new_episode:
            self.first_chunks.append(np.asarray(chunk, dtype=np.float64).tolist())
            self._new_episode = False
        return (chunk, bool(self.rt.last_valid)) if return_valid else chunk


def closed_loop(rt: Any, episodes: int, max_steps: int, exec_horizon: int = 5, seed: int = 0,
                split: str = "train") -> dict:
    """Episodes through the project's one rollout (etc_training.recipe.evaluate.rollout)."""
    from etc_training.recipe.evaluate import rollout
    from etc_training.sim import SimConfig, SimEnv

    cfg = SimConfig()
    cfg.render.cameras = list(rt.cameras)
    if "wrist" in rt.cameras:
        cfg.camera.wrist = True
    if max_steps:
        cfg.max_steps = int(max_steps)
    env = SimEnv(cfg)
    pol = _RuntimePolicy(rt)
    eps = []
    try:
        for i in range(episodes):
            pol._new_episode = True
            r = rollout(env, pol, list(rt.cameras), seed * 100_000 + i, split, exec_horizon=exec_horizon)
            eps.append({"seed": seed * 100_000 + i, "success": r["success"], "steps": r["steps"],
                        "chunks": r["chunks"], "invalid_chunks": r["invalid_chunks"], "instruction": r["instruction"]})
    finally:
        env.close()
    k = sum(e["success"] for e in eps)
    return {"episodes": len(eps), "successes": k, "success_rate": k / max(1, len(eps)),
            "invalid_chunk_rate": sum(e["invalid_chunks"] for e in eps) / max(1, sum(e["chunks"] for e in eps)),
            "per_episode": eps, "first_chunks": pol.first_chunks}


def worker(args: dict) -> dict:
    """One variant in this process (called through `python -m etc_training.benchmarks.policy_bench --worker`)."""
    threads = int(args.get("threads", 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MUJOCO_GL", "egl")
    from etc_ros.policy.runtime import PolicyRuntime

    if args["backend"] == "torch":
        import torch  # noqa: F401 - imported before the memory baseline, like onnxruntime for the others

        from etc_training.models import vla  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    base_kb = _peak_kb()
    peak_reset = _reset_peak()
    base_rss = _peak_kb() if peak_reset else base_kb
    t0 = time.perf_counter()
    rt = PolicyRuntime.load(args["bundle"], backend=args["backend"], variant=args["variant"], threads=threads,
                            on_invalid="keep")
    load_s = time.perf_counter() - t0
    obs = _observations(rt, int(args["n_obs"]), int(args.get("seed", 0)))
    for o in obs[: int(args["warmup"])]:
        rt.step(o)
    lat, stages, chunks, tokens = [], [], [], []
    for r in range(int(args["reps"])):
        for o in obs:
            t = time.perf_counter()
            c = rt.step(o)
            lat.append(1000 * (time.perf_counter() - t))
            stages.append(dict(rt.last_timing))
            if r == 0:
                chunks.append(np.asarray(c, dtype=np.float64).tolist())
                tokens.append(None if rt.last_tokens is None else rt.last_tokens.tolist())
    peak_kb = _peak_kb()
    res: dict[str, Any] = {
        "backend": args["backend"], "variant": args["variant"], "threads": threads, "load_s": round(load_s, 3),
        "chunks_timed": len(lat), "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)), "latency_ms_mean": float(np.mean(lat)),
        "stage_ms_median": {k: float(np.median([s.get(k, 0.0) for s in stages]))
                            for k in sorted({k for s in stages for k in s})},
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_rss_over_imports_mb": round((peak_kb - base_rss) / 1024, 1),
        "peak_reset_supported": peak_reset, "chunks": chunks,
    }
    if args.get("episodes", 0) > 0:
        try:
            res["closed_loop"] = closed_loop(rt, int(args["episodes"]), int(args.get("max_steps", 0)),
                                             int(args.get("exec_horizon", 5)), int(args.get("seed", 0)))
        except Exception as e:  # noqa: BLE001 - no GL / no mujoco: reported, latency figures still valid
            res["closed_loop"] = {"skipped": f"{type(e).__name__}: {e}"}
    return res


def _run_worker(args: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "etc_training.benchmarks.policy_bench", "--worker", json.dumps(args)]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.get("threads", 1))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=str(Path(__file__).resolve().parents[2]))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-5:], "returncode": p.returncode}
    return json.loads(lines[-1])


def run(out_dir: Path, quick: bool = False, bundle: str | Path | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    res: dict[str, Any] = {"quick": quick}
    if bundle is None:
        from etc_training.export.bundle_write import export_bundle

        ck = find_trained_checkpoint()
        if ck is None:
            ck = out_dir / "tiny_random_checkpoint"
            _random_tiny(ck)
            res["checkpoint"] = {"path": str(ck), "kind": "random-init tiny (no trained checkpoint under runs/)"}
        else:
            res["checkpoint"] = {"path": str(ck), "kind": "trained (newest runs/**/stage3/final)"}
        bundle = out_dir / "bundle"
        t = time.perf_counter()
        card = export_bundle(ck, bundle, quantize=["int8-dynamic", "int8-static"], force=True, progress=False,
                             calib_frames=8 if quick else 16, parity_frames=2 if quick else 4, log=None)
        res["export_s"] = round(time.perf_counter() - t, 1)
        res["parity"] = {v: {k: p.get(k) for k in ("identical_action_ids", "max_action_diff_normalized", "outputs")}
                         for v, p in card["parity"].items()}
    else:
        from etc_ros.policy.bundle import load_bundle

        info = load_bundle(bundle)
        res["checkpoint"] = {"path": (info.manifest.get("source") or {}).get("checkpoint"), "kind": "given bundle"}
    res["bundle"] = str(bundle)
    from etc_ros.policy.bundle import load_bundle

    info = load_bundle(bundle)
    todo = [(b, v) for b, v in VARIANTS if b == "torch" and info.torch_dir is not None or v in info.variants]
    sim_ok = _sim_available()
    common = {"bundle": str(bundle), "threads": 1, "n_obs": 4 if quick else 8, "warmup": 2, "reps": 1 if quick else 3,
              "seed": 0, "episodes": (2 if quick else 10) if sim_ok else 0, "max_steps": 20 if quick else 0,
              "exec_horizon": 5}
    res["settings"] = {k: v for k, v in common.items() if k != "bundle"}
    res["settings"]["sim_available"] = sim_ok
    variants: dict[str, dict] = {}
    for b, v in todo:
        t = time.perf_counter()
        r = _run_worker({**common, "backend": b, "variant": v}, timeout=3600)
        r["wall_s"] = round(time.perf_counter() - t, 1)
        variants[_label(b, v)] = r
        print(f"[policy bench] {_label(b, v)}: p50 {r.get('latency_ms_p50', float('nan')):.1f} ms "
              f"peak {r.get('peak_rss_mb')} MB" + (f" error {r['error']}" if "error" in r else ""), flush=True)
    eager = variants.get("torch-eager", {})
    ref_chunks = eager.get("chunks")
    ref_cl = (eager.get("closed_loop") or {})
    summary = {}
    for name, r in variants.items():
        if "error" in r:
            summary[name] = {"error": r["error"]}
            continue
        s = {"latency_ms_p50": round(r["latency_ms_p50"], 2), "latency_ms_p99": round(r["latency_ms_p99"], 2),
             "peak_rss_mb": r["peak_rss_mb"], "peak_rss_over_imports_mb": r["peak_rss_over_imports_mb"]}
        if eager and "latency_ms_p50" in eager:
            s["speedup_vs_eager_p50"] = round(eager["latency_ms_p50"] / r["latency_ms_p50"], 2)
            s["speedup_vs_eager_p99"] = round(eager["latency_ms_p99"] / r["latency_ms_p99"], 2)
            s["memory_ratio_vs_eager"] = round(r["peak_rss_mb"] / max(1e-9, eager["peak_rss_mb"]), 2)
        if ref_chunks is not None and r.get("chunks") is not None:
            a, b_ = np.asarray(ref_chunks, dtype=float), np.asarray(r["chunks"], dtype=float)
            same = [bool(np.array_equal(x, y, equal_nan=True)) for x, y in zip(a, b_)]
            s["chunks_identical_to_eager"] = float(np.mean(same)) if same else None
            fin = np.isfinite(a) & np.isfinite(b_)
            s["max_abs_action_diff_vs_eager"] = float(np.max(np.abs(a - b_)[fin])) if fin.any() else None
        cl = r.get("closed_loop") or {}
        if "success_rate" in cl:
            s["success_rate"] = cl["success_rate"]
            s["invalid_chunk_rate"] = round(cl["invalid_chunk_rate"], 3)
            if "success_rate" in ref_cl:
                s["success_points_vs_eager"] = round(100 * (cl["success_rate"] - ref_cl["success_rate"]), 1)
                same_ep = [x["success"] == y["success"] and x["steps"] == y["steps"]
                           for x, y in zip(ref_cl["per_episode"], cl["per_episode"])]
                s["episodes_identical_to_eager"] = float(np.mean(same_ep)) if same_ep else None
        elif cl:
            s["closed_loop"] = cl
        summary[name] = s
    res["summary"] = summary
    target = {}
    for name in ("ort-int8-dynamic", "ort-int8-static"):
        s = summary.get(name, {})
        if "speedup_vs_eager_p50" in s:
            target[name] = {"speedup_ok(>=2x)": s["speedup_vs_eager_p50"] >= 2.0,
                            "success_ok(<=5 points lost)": (s.get("success_points_vs_eager", 0.0) >= -5.0
                                                            if "success_points_vs_eager" in s else None)}
    res["target"] = target
    res["variants"] = {k: {kk: vv for kk, vv in v.items() if kk != "chunks"} for k, v in variants.items()}
    for v in res["variants"].values():
        (v.get("closed_loop") or {}).pop("first_chunks", None)
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    from etc_ros.core.io import atomic_write_json

    atomic_write_json(out_dir / "policy_bench.json", res)
    return res


def _sim_available() -> bool:
    try:
        import mujoco  # noqa: F401

        from etc_training.sim import SimEnv  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _random_tiny(path: Path) -> Path:
    import torch

    from etc_ros.core.action_tokenizer import synthetic_smooth_chunks
    from etc_training.models.vla import VLAPolicy

    torch.manual_seed(0)
    scale = np.array([0.05] * 3 + [0.25] * 3 + [0.5])
    raw = synthetic_smooth_chunks(300, seed=0) * scale + np.array([0.0] * 6 + [0.5])
    states = np.random.default_rng(0).normal(0, 0.6, (300, 7))
    return VLAPolicy.build("tiny", action_chunks=raw, states=states, seed=0).save(path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2])), default=float))
    else:
        print("usage: etc-vla bench policy [--quick] [--bundle BUNDLE]", file=sys.stderr)
        sys.exit(2)
