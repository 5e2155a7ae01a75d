"""`export_bundle`: a trained checkpoint -> a validated policy bundle (layout: etc_ros/policy/bundle.py).

Steps: load the checkpoint -> export the fp32 graphs -> parity of fp32 against PyTorch (fails loudly) ->
requested variants (int8-dynamic, int8-static calibrated on the observations, fp16) each with its own parity ->
processor files, spec.json, optional torch/ copy, model card -> manifest with sha256 of every file -> the
directory is swapped in atomically (a failed export leaves no half-written bundle behind).
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import BundleError, ModelError
from etc_ros.policy.bundle import (
    MODEL_CARD_JSON,
    MODEL_CARD_MD,
    PROCESSOR_DIR,
    PROCESSOR_FILES,
    SPEC_FILE,
    TORCH_DIR,
    VARIANTS,
    build_spec,
    directory_digest,
    load_bundle,
    write_manifest,
)

INSTRUCTIONS = ("pick up the red cube", "put the green block in the blue bowl", "push the yellow can to the left",
                "stack the red cube on the green cube")


# ------------------------------------------------------------------------------------------------ observations
def generated_observations(processor: Any, cameras: Sequence[str], n: int, seed: int = 0,
                           size: tuple[int, int] = (robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE)) -> list[dict]:
    """Synthetic tabletop-like frames (gradient background, coloured boxes, sensor noise), states inside the
    state norm stats' q01..q99 range, task instructions."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    st = processor.norm_stats.get("state")
    lo = st.q01 if st is not None else -np.ones(7)
    hi = st.q99 if st is not None else np.ones(7)
    out = []
    for i in range(int(n)):
        imgs = {}
        for c in cameras:
            img = np.stack([80 + 70 * x / w, 90 + 50 * y / h, 110 + 30 * (x + y) / (w + h)], -1)
            for _ in range(rng.integers(2, 5)):
                r0, c0, s = rng.integers(0, h - 40), rng.integers(0, w - 40), rng.integers(15, 40)
                img[r0:r0 + s, c0:c0 + s] = rng.integers(0, 256, 3)
            img += rng.normal(0, 3.0, img.shape)
            imgs[c] = np.clip(img, 0, 255).astype(np.uint8)
        out.append({"images": imgs, "state": rng.uniform(lo, hi), "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)]})
    return out


def dataset_observations(root: str | Path, cameras: Sequence[str], n: int, seed: int = 0) -> list[dict]:
    """n frames spread evenly over the readable episodes of an etc_ros.data dataset."""
    from etc_ros.core.errors import DatasetError
    from etc_ros.data import DatasetReader
    from etc_ros.data.schema import STATE, image_key

    try:
        r = DatasetReader(root)
    except DatasetError as e:
        raise BundleError(f"--calib-dataset: {e}") from None
    missing = [c for c in cameras if c not in r.cameras]
    if missing:
        raise BundleError(f"--calib-dataset {root}: camera(s) {missing} are not in the dataset (it has "
                          f"{list(r.cameras)}); pass --cameras to map the model's views")
    eps = r.episodes()
    total = sum(r.episode_length(e) for e in eps)
    if total == 0:
        raise BundleError(f"--calib-dataset {root}: no readable frames")
    flat = [(e, t) for e in eps for t in range(r.episode_length(e))]
    idx = np.linspace(0, len(flat) - 1, min(int(n), len(flat))).round().astype(int)
    out = []
    for k in idx:
        e, t = flat[int(k)]
        f = r.episode_frame(e, t)
        out.append({"images": {c: f[image_key(c)] for c in cameras}, "state": np.asarray(f[STATE], dtype=np.float64),
                    "instruction": f["task"]})
    return out


# ------------------------------------------------------------------------------------------------ helpers
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "numpy", "tokenizers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def _ort_graph_policy(graph_dir: Path, graphs: Mapping[str, str], processor: Any, head: Mapping[str, Any],
                      head_type: str, threads: int | None = None):
    from etc_ros.policy.runtime import GraphPolicy, OrtGraphs

    g = OrtGraphs({r: graph_dir / f for r, f in graphs.items()}, ["CPUExecutionProvider"], threads)
    return GraphPolicy(g, processor, head, head_type)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_card_markdown(card: Mapping[str, Any]) -> str:
    s = card["source"]
    lines = [f"# Policy bundle: {s.get('name')}", "",
             f"- source checkpoint: `{s['checkpoint']}` (sha256 of its files: `{s['checkpoint_sha256'][:16]}...`)",
             f"- model: preset `{s.get('preset')}`, head `{card['head']['name']}` ({card['head']['type']}), "
             f"{s.get('num_parameters')} parameters",
             f"- spec: cameras {card['spec']['cameras']}, image {card['spec']['image_size']}, state "
             f"{card['spec']['state_dim']}-D, {card['spec']['control_hz']} Hz, chunks of {card['spec']['horizon']} x "
             f"{card['spec']['action_dim']}",
             f"- exported {card['created']} with {', '.join(f'{k} {v}' for k, v in card['versions'].items() if v)}",
             f"- parity frames: {card['parity_frames']['count']} {card['parity_frames']['source']} frames"
             + (f" from `{card['parity_frames'].get('dataset')}`" if card['parity_frames'].get('dataset') else
                " (no dataset given: synthetic images, not real camera frames)"),
             "", "## Parity against PyTorch (worst case over the frames)", "",
             "| variant | output | max abs err | rel err | cosine |", "|---|---|---|---|---|"]
    for v, p in card["parity"].items():
        if "skipped" in p:
            lines.append(f"| {v} | skipped: {p['skipped']} | | | |")
            continue
        for name, f in p["outputs"].items():
            lines.append(f"| {v} | {name} | {_fmt(f['max_abs'])} | {_fmt(f['rel'])} | {_fmt(f['cosine'])} |")
    lines += ["", "| variant | identical action ids | max action diff (normalized) | valid decodes (torch / exported) "
              "| thresholds |", "|---|---|---|---|---|"]
    for v, p in card["parity"].items():
        if "skipped" in p:
            continue
        lines.append(f"| {v} | {_fmt(p.get('identical_action_ids', '-'))} | {_fmt(p['max_action_diff_normalized'])} "
                     f"| {_fmt(p['valid_rate_reference'])} / {_fmt(p['valid_rate_exported'])} | "
                     f"{json.dumps(p.get('thresholds', {}))} |")
    lines += ["", "## Export settings", "", "```json", json.dumps(card["settings"], indent=2), "```", "",
              "## Variants", ""]
    for v, meta in card["variants"].items():
        lines.append(f"- `{v}`: {meta.get('description', '')}")
    lines += ["", "Load with `PolicyRuntime.load(BUNDLE, backend=..., variant=...)` (etc_ros/policy/runtime.py); "
              "see docs/export.md.", ""]
    return "\n".join(lines)


def _publishable(root: Path) -> None:
    """Bundles are shared read-only artefacts (mounted into the robot container): dirs 0755, files 0644."""
    root.chmod(0o755)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


# ------------------------------------------------------------------------------------------------ export
def export_bundle(checkpoint: str | Path, out: str | Path, *, quantize: Sequence[str] = (),
                  calib_dataset: str | Path | None = None, cameras: Sequence[str] | None = None,
                  control_hz: float | None = None, parity_frames: int = 4, calib_frames: int = 16,
                  include_torch: bool = True, opset: int | None = None,
                  thresholds: Mapping[str, Mapping[str, Any]] | None = None, force: bool = False,
                  threads: int | None = None, seed: int = 0, progress: bool = True,
                  log: Callable[[str], None] | None = print) -> dict:
    """Export `checkpoint` (a VLAPolicy directory) to the bundle directory `out`; returns the model card dict.
    Raises BundleError (bad arguments, export failure, parity past thresholds) and leaves `out` untouched."""
    import torch

    from etc_ros.core import spec as robot_spec
    from etc_training.export import onnx_export, parity
    from etc_training.models.vla import VLAPolicy

    t_start = time.perf_counter()
    ck = Path(checkpoint)
    out = Path(out)
    variants = [v.strip() for v in quantize if v and v.strip()]
    bad = [v for v in variants if v not in VARIANTS or v == "fp32"]
    if bad:
        raise BundleError(f"--quantize: unknown variant(s) {bad}; choose from {[v for v in VARIANTS if v != 'fp32']}")
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    if not (ck / "vla.json").is_file():
        raise BundleError(f"{ck}: not a VLA checkpoint directory (no vla.json)")
    if out.resolve() == ck.resolve() or ck.resolve() in out.resolve().parents:
        raise BundleError(f"--out {out} must not be inside the checkpoint {ck}")
    if parity_frames < 1:
        raise BundleError("parity_frames must be >= 1")
    if threads:
        torch.set_num_threads(int(threads))
    say = log or (lambda s: None)
    try:
        policy = VLAPolicy.load(ck).eval()
    except ModelError as e:
        raise BundleError(f"cannot load checkpoint {ck}: {e}") from None
    P = policy.processor
    head_type = onnx_export.check_exportable(policy)
    cams = list(cameras) if cameras else (["primary"] if P.config.n_views == 1
                                          else [f"view{i}" for i in range(P.config.n_views)])
    hz = float(control_hz if control_hz is not None else robot_spec.POLICY_HZ)
    meta = dict(policy.meta)
    head_meta = meta.get("head") or {"type": "tokens", "config": {}}
    head: dict[str, Any] = {"type": head_type, "name": head_meta.get("type"), "config": head_meta.get("config", {})}
    if head_type == "tokens":
        at = P.action_tokenizer
        head.update(max_new_tokens=int(getattr(policy.action_head, "max_new_tokens", 0) or (at.max_tokens + 1)),
                    stop_id=int(P.stop_id), action_token_offset=int(P.config.action_token_offset),
                    action_vocab=int(at.vocab_size), decoding="greedy over action-token block + stop id, KV cache")
    else:
        core = onnx_export.continuous_core(policy)
        deterministic = getattr(core, "name", "") == "regression"
        head.update(horizon=int(core.horizon), action_dim=int(core.action_dim), noise_seed=int(seed),
                    decoding=("single pass, deterministic (L1 chunk regression; the noise input is unused)"
                              if deterministic else
                              "single pass: noise (B, H, D) ~ N(0, 1) from the runtime's generator"))
    spec = build_spec(P, cameras=cams, control_hz=hz, head_type=head_type,
                      extra=None if P.action_tokenizer is not None else {"horizon": head.get("horizon"),
                                                                        "action_dim": head.get("action_dim")})

    # observations (parity + calibration)
    n_obs = max(parity_frames, calib_frames if "int8-static" in variants else 0)
    if calib_dataset:
        obs = dataset_observations(calib_dataset, cams, n_obs, seed)
        src = {"source": "dataset", "dataset": str(calib_dataset)}
    else:
        obs = generated_observations(P, cams, n_obs, seed)
        src = {"source": "generated"}
    par_obs = obs[:parity_frames] if len(obs) >= parity_frames else obs
    src["count"] = len(par_obs)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="." + out.name + ".", dir=str(out.parent)))
    from tqdm import tqdm

    stages = 3 + len(variants)
    bar = tqdm(total=stages, desc="export", disable=not (progress and sys.stderr.isatty()))
    try:
        # processor files: byte copies of the checkpoint's (the torch copy must be the same files)
        (tmp / PROCESSOR_DIR).mkdir()
        for f in PROCESSOR_FILES + ("action_tokenizer.json",):
            if (ck / f).is_file():
                shutil.copyfile(ck / f, tmp / PROCESSOR_DIR / f)
        from etc_ros.core.io import atomic_write_json

        atomic_write_json(tmp / SPEC_FILE, spec)
        # fp32 graphs
        say(f"[export] fp32 graphs ({head_type} head) ...")
        t0 = time.perf_counter()
        ex = onnx_export.export_graphs(policy, tmp / "fp32", "float32", opset,
                                       progress=lambda r: bar.set_postfix_str(f"fp32 {r}"))
        graphs = ex["graphs"]
        timings = {"export_fp32_s": round(time.perf_counter() - t0, 2),
                   **{f"fp32_{k}": v for k, v in ex["timings_s"].items()}}
        bar.update(1)
        var_meta: dict[str, dict] = {"fp32": {"graphs": {r: f"fp32/{f}" for r, f in graphs.items()},
                                              "precision": "float32",
                                              "description": "float32 graphs (CPU, CUDA, TensorRT EP)"}}
        card_parity: dict[str, dict] = {}
        th_all = {k: dict(v) for k, v in parity.DEFAULT_THRESHOLDS.items()}
        for k, v in (thresholds or {}).items():
            th_all.setdefault(k, {}).update(v)

        def run_parity(variant: str, gdir: Path) -> Any:
            t = time.perf_counter()
            gp = _ort_graph_policy(gdir, graphs, P, head, head_type, threads)
            figs = parity.measure(policy, gp, par_obs, cams, seed)
            figs["thresholds"] = th_all.get(variant, {})
            figs["seconds"] = round(time.perf_counter() - t, 2)
            card_parity[variant] = figs
            say(f"[export] parity {variant}: " + ", ".join(
                f"{k} cos {v['cosine']:.6f} max|d| {v['max_abs']:.3g}" for k, v in figs["outputs"].items())
                + (f", identical ids {figs['identical_action_ids']:.0%}" if "identical_action_ids" in figs else ""))
            parity.enforce(variant, figs, th_all.get(variant))
            return gp

        gp32 = run_parity("fp32", tmp / "fp32")
        bar.update(1)
        # variants
        quant_info: dict[str, Any] = {}
        if any(v.startswith("int8") for v in variants):
            from etc_training.export import quantize as quantization

            calib = None
            if "int8-static" in variants:
                batches = []
                for o in obs[:max(1, calib_frames)]:
                    views = [np.asarray(o["images"][c]) for c in cams]
                    batches.append(P.collate([P.build_inference_prompt(views if len(views) > 1 else views[0],
                                                                      o.get("state"), o["instruction"])],
                                             padding_side="left"))
                calib = quantization.record_feeds(gp32, batches, limit=max(16, 4 * calib_frames))
            for v in [x for x in variants if x.startswith("int8")]:
                say(f"[export] {v} ...")
                t0 = time.perf_counter()
                quant_info[v] = quantization.quantize_graphs(v, tmp / "fp32", tmp / v, graphs, calib)
                timings[f"{v}_s"] = round(time.perf_counter() - t0, 2)
                var_meta[v] = {"graphs": {r: f"{v}/{f}" for r, f in graphs.items()}, "precision": "int8",
                               "description": quant_info[v]["method"].get("prefill", ""), "quantization": quant_info[v]}
                run_parity(v, tmp / v)
                bar.update(1)
        if "fp16" in variants:
            say("[export] fp16 graphs ...")
            t0 = time.perf_counter()
            ex16 = onnx_export.export_graphs(policy, tmp / "fp16", "float16", opset)
            timings["fp16_s"] = round(time.perf_counter() - t0, 2)
            var_meta["fp16"] = {"graphs": {r: f"fp16/{f}" for r, f in ex16["graphs"].items()}, "precision": "float16",
                                "description": "float16 weights/activations, LayerNorm/RMSNorm/softmax in fp32, fp32 "
                                               "graph I/O (fp16 KV cache); for CUDA / TensorRT (strongly typed)"}
            run_parity("fp16", tmp / "fp16")
            bar.update(1)
        # torch copy
        if include_torch:
            shutil.copytree(ck, tmp / TORCH_DIR, ignore=shutil.ignore_patterns(".*"))
        bar.update(1)
        from etc_training.export.onnx_export import graph_io

        gio = {r: graph_io(tmp / "fp32" / f) for r, f in graphs.items()}
        opsets = sorted({o for g in gio.values() for o in [g["opset"].get("ai.onnx")] if o})
        versions = _versions()
        card = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": {"checkpoint": str(ck.resolve()), "checkpoint_sha256": directory_digest(ck),
                       "name": ck.name, "preset": (meta.get("preset") or {}).get("name"),
                       "num_parameters": int(policy.num_parameters())},
            "head": head, "spec": spec, "versions": versions, "parity_frames": src, "parity": card_parity,
            "settings": {"quantize": variants, "calib_dataset": str(calib_dataset) if calib_dataset else None,
                         "calib_frames": calib_frames if "int8-static" in variants else 0,
                         "parity_frames": parity_frames, "opset": opsets, "attention": "eager (exported)",
                         "include_torch": include_torch, "seed": seed, "thresholds": th_all,
                         "dynamo_exporter": True},
            "variants": {k: {kk: vv for kk, vv in v.items() if kk != "graphs"} for k, v in var_meta.items()},
            "timings_s": timings,
        }
        atomic_write_json(tmp / MODEL_CARD_JSON, card)
        from etc_ros.core.io import atomic_write_text

        atomic_write_text(tmp / MODEL_CARD_MD, model_card_markdown(card))
        for v, p in card_parity.items():
            var_meta[v]["parity"] = {k: p[k] for k in ("identical_action_ids", "max_action_diff_normalized")
                                     if k in p}
        manifest = {
            "created": card["created"], "producer": {"tool": "etc-vla export", **versions}, "opset": opsets,
            "source": card["source"], "head": head, "spec_file": SPEC_FILE, "processor_dir": PROCESSOR_DIR,
            "torch_dir": TORCH_DIR if include_torch else None, "default_variant": "fp32",
            "variants": var_meta, "graph_io": gio,
        }
        _publishable(tmp)
        write_manifest(tmp, manifest)
        (tmp / "manifest.json").chmod(0o644)
        load_bundle(tmp)  # validate what we wrote
        bar.close()
        if out.exists():
            old = out.with_name("." + out.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    card["timings_s"]["total_s"] = round(time.perf_counter() - t_start, 2)
    card["bundle"] = str(out)
    say(f"[export] wrote {out} in {card['timings_s']['total_s']} s")
    return card
