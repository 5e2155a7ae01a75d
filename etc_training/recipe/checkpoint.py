"""Training checkpoints on disk: written atomically, read back exactly, the newest complete one found.

    <stage>/checkpoints/step_000050/
        model.safetensors       full model weights (tied weights stored once; aliases in the metadata)
        optimizer.safetensors   AdamW state per parameter name (+ param groups as JSON metadata)
        ema.safetensors         EMA shadow weights
        state.safetensors       torch RNG state; metadata: step, sampler state, python RNG, EMA count, config hash
    <stage>/checkpoints/latest  name of the newest complete checkpoint

A checkpoint is written to a temporary directory (.tmp-<name>-<pid>), every file and the directory fsynced, then
renamed into place; `latest` is replaced atomically after it. A crash leaves either the previous checkpoint or
the new one, never a torn one (latest_checkpoint also skips incomplete directories).

What goes into the files (gathering sharded state, which RNG) is the trainer's business; this module only
stores and loads tensors + JSON metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from etc_ros.core.io import atomic_write_text, fsync_dir
from etc_training.recipe.config import RecipeError

CKPT_FILES = ("model.safetensors", "optimizer.safetensors", "ema.safetensors", "state.safetensors")
CKPT_FORMAT = "etc-vla-train-ckpt/1"


# ---------------------------------------------------------------------------------------------- tensors <-> files
def full_cpu(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU (a DTensor shard of FSDP2 is gathered first)."""
    if hasattr(t, "full_tensor"):  # DTensor (FSDP2)
        t = t.full_tensor()
    return t.detach().cpu()


def dedupe(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors sharing storage (tied embeddings) are kept once: (unique tensors, {alias: kept name})."""
    seen: dict[tuple[int, int, tuple], str] = {}
    out, alias = {}, {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        if key is not None and key in seen:
            alias[k] = seen[key]
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.detach().clone().contiguous()
    return out, alias


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    md = {k: json.dumps(v) for k, v in (meta or {}).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=md)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise RecipeError(f"checkpoint file missing: {path}")
    out = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except Exception as e:  # noqa: BLE001
        raise RecipeError(f"{path}: unreadable checkpoint file ({e})") from None
    meta = {}
    for k, v in md.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:  # files written by other tools (e.g. {"format": "pt"})
            meta[k] = v
    return out, meta


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- python RNG
def py_rng_state() -> list:
    v, st, g = random.getstate()
    return [v, list(st), g]


def set_py_rng_state(s) -> None:
    if s:
        random.setstate((s[0], tuple(s[1]), s[2]))


# ---------------------------------------------------------------------------------------------- directory
def clean_tmp(ckpt_dir: Path) -> None:
    """Remove the temporary directories of writes a crash interrupted."""
    if ckpt_dir.is_dir():
        for p in ckpt_dir.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints."""
    steps = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    for p in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    lp = d / "latest"
    if lp.is_file():
        p = d / lp.read_text().strip()
        if p.is_dir() and all((p / f).is_file() for f in CKPT_FILES):
            return p
    steps = sorted(p for p in d.glob("step_*") if p.is_dir() and all((p / f).is_file() for f in CKPT_FILES))
    return steps[-1] if steps else None


# ---------------------------------------------------------------------------------------------- write / read
def write_checkpoint(ckpt_dir: Path, step: int, model_state: Mapping[str, torch.Tensor], optim_state: Mapping,
                     ema: Mapping[str, torch.Tensor], ema_updates: int, rng: Mapping[str, torch.Tensor],
                     meta: Mapping[str, Any], keep: int) -> Path:
    """Writes <ckpt_dir>/step_<step> atomically, points `latest` at it and prunes to the newest `keep`.

    model_state / optim_state: full (gathered, CPU-offloaded) state dicts as torch.distributed.checkpoint's
    get_state_dict returns them; ema: full EMA tensors; rng: torch RNG states; meta: state.safetensors' metadata."""
    name = f"step_{step:06d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        weights, alias = dedupe({k: full_cpu(v) for k, v in model_state.items()})
        save_tensors(tmp / "model.safetensors", weights, {"alias": alias})
        ot: dict[str, torch.Tensor] = {}
        for pname, st in optim_state["state"].items():
            for k, v in st.items():
                ot[f"{pname}::{k}"] = full_cpu(v) if isinstance(v, torch.Tensor) else torch.tensor(v)
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                  for g in optim_state["param_groups"]]
        save_tensors(tmp / "optimizer.safetensors", ot, {"param_groups": groups})
        save_tensors(tmp / "ema.safetensors", ema, {"updates": ema_updates})
        save_tensors(tmp / "state.safetensors", rng, meta)
        for f in CKPT_FILES:
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_dir)
        atomic_write_text(ckpt_dir / "latest", name + "\n")
        prune(ckpt_dir, keep)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class TrainCheckpoint:
    """What read_checkpoint loads: full tensors, ready for set_state_dict."""

    rng: dict[str, torch.Tensor]  # "torch" (+ "cuda")
    meta: dict[str, Any]  # step, stage, data (sampler state), python_rng, samples_seen, train_time, config, ...
    model: dict[str, torch.Tensor]  # tied weights under every name
    optim: dict[str, Any]  # {"state": {param name: {key: tensor}}, "param_groups": [...]}
    ema: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0


def read_checkpoint(path: Path, digest: str = "", stage: str = "", ema: bool = True) -> TrainCheckpoint:
    """Loads the checkpoint directory `path`. Refuses one written by another program, or (when both digests are
    known) with another configuration of `stage` than `digest`. ema=False skips the EMA file."""
    state, meta = load_tensors(path / "state.safetensors")
    if meta.get("format") != CKPT_FORMAT:
        raise RecipeError(f"{path}: not a training checkpoint of this recipe")
    if digest and meta.get("config") and meta["config"] != digest:
        raise RecipeError(f"{path}: the checkpoint was written with a different configuration of {stage}; "
                          "use a new output directory or run.resume=never")
    weights, mmeta = load_tensors(path / "model.safetensors")
    for a, k in (mmeta.get("alias") or {}).items():
        weights[a] = weights[k]
    ot, ometa = load_tensors(path / "optimizer.safetensors")
    ostate: dict[str, dict] = {}
    for key, v in ot.items():
        pname, k = key.rsplit("::", 1)
        ostate.setdefault(pname, {})[k] = v
    groups = []
    for g in ometa["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    ck = TrainCheckpoint(rng=state, meta=meta, model=weights, optim={"state": ostate, "param_groups": groups})
    if ema:
        ck.ema, emeta = load_tensors(path / "ema.safetensors")
        ck.ema_updates = int(emeta.get("updates", 0))
    return ck
