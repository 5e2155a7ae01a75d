"""The training loop of one recipe stage: AdamW, warm-up + cosine schedule, EMA, gradient clipping, exact
checkpoint / resume, metrics JSONL (+ TensorBoard when installed), DDP or FSDP under torchrun.

Checkpoint directory (written to a temporary directory, fsynced, renamed into place; `latest` names the newest):

    <stage>/checkpoints/step_000050/
        model.safetensors       full model weights (tied weights stored once; aliases in the metadata)
        optimizer.safetensors   AdamW state per parameter name (+ param groups as JSON metadata)
        ema.safetensors         EMA shadow weights
        state.safetensors       torch RNG state; metadata: step, sampler state, python RNG, EMA count, config hash
    <stage>/checkpoints/latest  name of the newest complete checkpoint

Resuming loads all of it, so the continuation is bit-identical to an uninterrupted run (tests check this).

One optimizer step = for each batch kind present (ETC first, then action): forward, loss x weight, backward
(gradients accumulate: the sum of both losses' gradients; under DDP the first pass runs in no_sync), then
clip, set the learning rate, AdamW step, EMA update.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from etc_ros.core.io import atomic_write_text, fsync_dir
from etc_training.recipe.config import RecipeError, RunConfig, StageConfig

CKPT_FILES = ("model.safetensors", "optimizer.safetensors", "ema.safetensors", "state.safetensors")


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = "cpu"
    initialized: bool = False
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def set_threads(n: int) -> None:
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError("run.device=cuda but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise RecipeError(f"run.device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def setup_distributed(run: RunConfig) -> DistInfo:
    """Reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); initialises the process group (gloo on CPU,
    nccl on GPU) when WORLD_SIZE > 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(run.device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, device, False, "none")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device, True, run.distributed)


def barrier(d: DistInfo) -> None:
    if d.initialized:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(d: DistInfo, obj: Any) -> Any:
    if not d.initialized:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------------------- schedule, EMA
def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up to `peak` over `warmup` steps, then a
    cosine from peak to `floor` at the last step."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup - 1)
    prog = min(1.0, max(0.0, (step - warmup) / span))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * prog))


class EMA:
    """Exponential moving average of the trainable parameters (local shards under FSDP)."""

    def __init__(self, named_params: Mapping[str, torch.nn.Parameter], decay: float, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in named_params.items()}

    def decay_now(self) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        return self.decay

    @torch.no_grad()
    def update(self, named_params: Mapping[str, torch.nn.Parameter]) -> float:
        d = self.decay_now()
        for n, p in named_params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)
        self.updates += 1
        return d


# ---------------------------------------------------------------------------------------------- tensors <-> files
def _full(t: torch.Tensor) -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------- metrics
class MetricsLog:
    """Appends one JSON object per line (rank 0 only); TensorBoard scalars when tensorboard is installed."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool, tb_dir: Path | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(tb_dir or self.path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - optional
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to work lost in a kill and will be redone)."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line
            if int(row.get("step", 0)) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in keep))

    def write(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
        if self.tb is not None:
            step = int(row.get("global_step", row.get("step", 0)))
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "global_step"):
                    self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}", v, step)
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                            self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}/{kk}", vv, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _jsonable(o: Any):
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


# ---------------------------------------------------------------------------------------------- stage trainer
Hook = Callable[[int, torch.nn.Module], dict]


class StageTrainer:
    """Trains `policy` (a VLAPolicy, already on the device) for one stage.

    hooks: [(every, fn(step, policy) -> dict of metrics)] run on rank 0 (and at the end of the stage) with the
    raw (non-EMA) weights, e.g. CKA drift and held-out action loss."""

    def __init__(self, policy: torch.nn.Module, name: str, cfg: StageConfig, data, stage_dir: str | Path,
                 run: RunConfig, dist: DistInfo | None = None, seed: int = 0, global_offset: int = 0,
                 hooks: list[tuple[int, Hook]] | None = None, init_path: str | Path | None = None,
                 config_digest: str = ""):
        self.policy = policy
        self.name = name
        self.cfg = cfg
        self.data = data
        self.dir = Path(stage_dir)
        self.run = run
        self.dist = dist or DistInfo()
        self.seed = int(seed)
        self.global_offset = int(global_offset)
        self.hooks = list(hooks or [])
        self.init_path = str(init_path) if init_path else None
        self.digest = config_digest
        self.step = 0
        self.ckpt_dir = self.dir / "checkpoints"
        self.metrics = MetricsLog(self.dir / "metrics.jsonl", self.dist.is_main, run.tensorboard)
        w = self.dist.world
        for what, n in (("action_batch", cfg.action_batch), ("ETC batch", cfg.resolved_etc_batch())):
            if n % w:
                raise RecipeError(f"{name}: the global {what} ({n}) must be divisible by the number of "
                                  f"processes ({w})")
        if cfg.freeze_vision:
            for p in self._vision_params():
                p.requires_grad_(False)
        self.model = self._wrap()
        self.named = {n: p for n, p in self._state_module().named_parameters() if p.requires_grad}
        if not self.named:
            raise RecipeError(f"{name}: no trainable parameters")
        self.opt = torch.optim.AdamW(list(self.named.values()), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                     weight_decay=cfg.weight_decay, foreach=False)
        self.ema = EMA(self.named, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.samples_seen = 0
        self.train_time = 0.0

    # -------------------------------------------------------------- model wrapping
    def _vision_params(self):
        bb = self.policy.backbone
        vt = getattr(getattr(bb, "model", bb), "vision_tower", None)
        if vt is None:
            raise RecipeError("freeze_vision: the backbone has no vision_tower")
        return list(vt.parameters())

    def _wrap(self) -> torch.nn.Module:
        d = self.dist
        if not d.initialized or d.world == 1:
            return self.policy
        if d.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            # one FSDP unit per transformer block (vision encoder and text decoder), the rest in the root unit
            layers = [m for m in self.policy.backbone.modules()
                      if m.__class__.__name__.endswith(("DecoderLayer", "EncoderLayer"))]
            for layer in layers:
                fully_shard(layer)
            fully_shard(self.policy)
            return self.policy
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = [d.device.index] if d.device.type == "cuda" else None
        return DDP(self.policy, device_ids=dev, find_unused_parameters=self.run.find_unused_parameters)

    def _state_module(self) -> torch.nn.Module:
        """The module whose parameter names / state dict are checkpointed (DDP: the inner policy)."""
        return self.policy

    @property
    def fsdp(self) -> bool:
        return self.dist.initialized and self.dist.world > 1 and self.dist.strategy == "fsdp"

    @property
    def ddp(self) -> bool:
        return self.dist.initialized and self.dist.world > 1 and self.dist.strategy != "fsdp"

    @contextlib.contextmanager
    def _no_sync(self, skip: bool):
        if not skip:
            yield
            return
        if self.ddp:
            with self.model.no_sync():
                yield
        elif self.fsdp:
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        else:
            yield

    def _autocast(self):
        if self.run.precision == "bf16":
            return torch.autocast(device_type=self.dist.device.type if hasattr(self.dist.device, "type") else "cpu",
                                  dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -------------------------------------------------------------- one step
    def train_step(self, batches: Mapping[str, Any]) -> dict:
        self.model.train()
        parts = [(k, batches.get(k), w) for k, w in (("etc", self.cfg.etc_loss_weight),
                                                   ("grounding", self.cfg.grounding_loss_weight),
                                                   ("action", self.cfg.action_loss_weight))]
        parts = [p for p in parts if p[1] is not None]
        if not parts:
            raise RecipeError(f"{self.name}: a step got no data")
        row: dict[str, float] = {}
        total = 0.0
        for j, (kind, b, w) in enumerate(parts):
            with self._no_sync(j < len(parts) - 1), self._autocast():
                out = self.model(b)
                loss = out["loss"] * w
            loss.backward()
            total += float(loss.detach())
            for k, v in out.items():
                if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1:
                    row[k] = float(v.detach())
        params = list(self.named.values())
        if self.cfg.grad_clip > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            gn = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        if hasattr(gn, "full_tensor"):
            gn = gn.full_tensor()
        lr = lr_at(self.step, self.cfg.steps, self.cfg.warmup_steps(), self.cfg.lr, self.cfg.min_lr)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            row["ema_decay"] = self.ema.update(self.named)
        row.update(loss=total, lr=lr, grad_norm=float(gn))
        return row

    # -------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Runs (or resumes) the stage. Returns {"status": "done"|"interrupted", "step", "seconds", ...}."""
        from tqdm import tqdm

        cfg, run = self.cfg, self.run
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._clean_tmp()
        barrier(self.dist)
        resumed = self.resume() if run.resume == "auto" else False
        if resumed:
            self.metrics.truncate_after(self.step)
        elif self.dist.is_main:
            self.metrics.truncate_after(-1)
        barrier(self.dist)
        done_here = 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, unit="step", dynamic_ncols=True,
                   disable=not (run.progress and self.dist.is_main and sys.stderr.isatty()))
        window_t, window_n = time.perf_counter(), 0
        status = "done"
        try:
            while self.step < cfg.steps:
                if run.stop_after and done_here >= run.stop_after:
                    status = "interrupted"
                    break
                t0 = time.perf_counter()
                batches = self.data.next(self.dist.rank, self.dist.world)
                row = self.train_step(batches)
                self.step += 1
                done_here += 1
                n = int(batches["n_action"]) + int(batches["n_etc"]) + int(batches.get("n_grounding", 0))
                self.samples_seen += n
                window_n += n
                self.train_time += time.perf_counter() - t0
                bar.update(1)
                if self.step % run.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    row.update(stage=self.name, step=self.step, global_step=self.global_offset + self.step,
                               samples_per_s=window_n / max(now - window_t, 1e-9),
                               counts=dict(self.data.counts))
                    window_t, window_n = now, 0
                    self.metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")
                for every, fn in self.hooks:
                    if every and self.step % every == 0 and self.step < cfg.steps:
                        self._run_hook(fn)
                if run.checkpoint_every and self.step % run.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                    if run.export_checkpoints:  # a loadable policy per checkpoint: learning curves in success
                        self.export(self.dir / "policies" / f"step_{self.step:06d}")
        finally:
            bar.close()
        if status == "done":
            for _, fn in self.hooks:
                self._run_hook(fn)
            self.save_checkpoint()
            if self.dist.world > 1:
                self.write_rank_digest()
        self.metrics.close()
        return {"status": status, "step": self.step, "steps": cfg.steps, "resumed": bool(resumed),
                "seconds": round(self.train_time, 3), "samples": self.samples_seen,
                "samples_per_s": round(self.samples_seen / max(self.train_time, 1e-9), 3)}

    def _run_hook(self, fn: Hook) -> None:
        if self.fsdp:
            return  # sharded weights: hooks run on the exported policy after the stage
        if self.dist.is_main:
            was = self.policy.training
            self.policy.eval()
            try:
                with torch.no_grad():
                    out = fn(self.step, self.policy) or {}
            finally:
                self.policy.train(was)
            if out:
                out = dict(out)
                out.update(stage=self.name, step=self.step, global_step=self.global_offset + self.step)
                self.metrics.write(out)
        barrier(self.dist)

    def write_rank_digest(self) -> Path:
        """<stage>/rank<r>.json: SHA-256 of this rank's parameters and EMA (DDP replicas must agree; under FSDP
        each rank hashes its own shards)."""
        h = hashlib.sha256()
        for n, p in sorted(self.named.items()):
            t = p.detach()
            t = t.to_local() if hasattr(t, "to_local") else t
            h.update(n.encode())
            h.update(t.float().cpu().contiguous().numpy().tobytes())
        he = hashlib.sha256()
        if self.ema is not None:
            for n, t in sorted(self.ema.shadow.items()):
                t = t.to_local() if hasattr(t, "to_local") else t
                he.update(n.encode())
                he.update(t.cpu().contiguous().numpy().tobytes())
        path = self.dir / f"rank{self.dist.rank}.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"rank": self.dist.rank, "world": self.dist.world, "step": self.step,
                                            "strategy": self.dist.strategy, "params_sha256": h.hexdigest(),
                                            "ema_sha256": he.hexdigest()}) + "\n")
        return path

    # -------------------------------------------------------------- checkpoints
    def _clean_tmp(self) -> None:
        if self.ckpt_dir.is_dir():
            for p in self.ckpt_dir.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)

    def _full_states(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(self._state_module(), self.opt, options=opts)
        return msd, osd

    def ema_state(self) -> dict[str, torch.Tensor]:
        """Full EMA tensors (collective under FSDP: call on every rank)."""
        if self.ema is None:
            return {}
        return {k: _full(v) for k, v in self.ema.shadow.items()}

    def save_checkpoint(self) -> Path | None:
        msd, osd = self._full_states()
        ema = self.ema_state()
        path = None
        if self.dist.is_main:
            name = f"step_{self.step:06d}"
            final = self.ckpt_dir / name
            tmp = self.ckpt_dir / f".tmp-{name}-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            try:
                weights, alias = dedupe({k: _full(v) for k, v in msd.items()})
                save_tensors(tmp / "model.safetensors", weights, {"alias": alias})
                ot: dict[str, torch.Tensor] = {}
                for pname, st in osd["state"].items():
                    for k, v in st.items():
                        ot[f"{pname}::{k}"] = _full(v) if isinstance(v, torch.Tensor) else torch.tensor(v)
                groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                          for g in osd["param_groups"]]
                save_tensors(tmp / "optimizer.safetensors", ot, {"param_groups": groups})
                save_tensors(tmp / "ema.safetensors", ema,
                             {"updates": self.ema.updates if self.ema else 0})
                rng = {"torch": torch.get_rng_state()}
                if torch.cuda.is_available() and self.dist.device.type == "cuda":
                    rng["cuda"] = torch.cuda.get_rng_state(self.dist.device)
                meta = {"step": self.step, "stage": self.name, "data": self.data.state_dict(),
                        "python_rng": _py_rng_state(), "samples_seen": self.samples_seen,
                        "train_time": self.train_time, "config": self.digest, "init": self.init_path,
                        "world": self.dist.world, "format": "etc-vla-train-ckpt/1"}
                save_tensors(tmp / "state.safetensors", rng, meta)
                for f in CKPT_FILES:
                    with open(tmp / f, "rb") as fh:
                        os.fsync(fh.fileno())
                fsync_dir(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                fsync_dir(self.ckpt_dir)
                atomic_write_text(self.ckpt_dir / "latest", name + "\n")
                self._prune()
                path = final
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        barrier(self.dist)
        return path

    def _prune(self) -> None:
        steps = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir())
        for p in steps[: max(0, len(steps) - self.run.keep_checkpoints)]:
            shutil.rmtree(p, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.ckpt_dir)

    def resume(self) -> bool:
        path = self.latest_checkpoint()
        if path is None:
            return False
        self.load_checkpoint(path)
        return True

    def load_checkpoint(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state, meta = load_tensors(path / "state.safetensors")
        if meta.get("format") != "etc-vla-train-ckpt/1":
            raise RecipeError(f"{path}: not a training checkpoint of this recipe")
        if self.digest and meta.get("config") and meta["config"] != self.digest:
            raise RecipeError(f"{path}: the checkpoint was written with a different configuration of {self.name}; "
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
        opts = StateDictOptions(full_state_dict=True, strict=True)
        set_state_dict(self._state_module(), self.opt, model_state_dict=weights,
                       optim_state_dict={"state": ostate, "param_groups": groups}, options=opts)
        if self.ema is not None:
            ema, emeta = load_tensors(path / "ema.safetensors")
            for k, sh in self.ema.shadow.items():
                if k not in ema:
                    raise RecipeError(f"{path}: EMA lacks {k}")
                src = ema[k]
                if hasattr(sh, "full_tensor"):  # FSDP: take this rank's shard
                    from torch.distributed.tensor import distribute_tensor

                    src = distribute_tensor(src.to(sh.dtype), sh.device_mesh, sh.placements)
                    sh.to_local().copy_(src.to_local())
                else:
                    sh.copy_(src.to(sh.dtype))
            self.ema.updates = int(emeta.get("updates", 0))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.dist.device)
        _set_py_rng_state(meta.get("python_rng"))
        self.data.load_state_dict(meta["data"])
        self.step = int(meta["step"])
        self.samples_seen = int(meta.get("samples_seen", 0))
        self.train_time = float(meta.get("train_time", 0.0))

    # -------------------------------------------------------------- export
    def export(self, out_dir: str | Path, policy_loader: Callable[[], torch.nn.Module] | None = None) -> Path | None:
        """Save the stage's final policy (EMA weights if cfg.export_ema) as a VLAPolicy checkpoint directory.
        Collective under FSDP (every rank must call it); rank 0 writes."""
        use_ema = self.cfg.export_ema and self.ema is not None
        if self.fsdp:
            msd, _ = self._full_states()
            ema = self.ema_state() if use_ema else {}
            path = None
            if self.dist.is_main:
                pol = policy_loader() if policy_loader else None
                if pol is None:
                    raise RecipeError("FSDP export needs a policy loader")
                sd = {k: _full(v) for k, v in msd.items()}
                sd.update(ema)
                pol.load_state_dict(sd, strict=False)
                path = pol.save(out_dir)
            barrier(self.dist)
            return path
        path = None
        if self.dist.is_main:
            backup = None
            if use_ema:
                backup = {n: p.detach().clone() for n, p in self.named.items()}
                with torch.no_grad():
                    for n, p in self.named.items():
                        p.copy_(self.ema.shadow[n].to(p.dtype))
            try:
                path = self.policy.save(out_dir)
            finally:
                if backup is not None:
                    with torch.no_grad():
                        for n, p in self.named.items():
                            p.copy_(backup[n])
        barrier(self.dist)
        return path


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


def _py_rng_state() -> list:
    v, st, g = random.getstate()
    return [v, list(st), g]


def _set_py_rng_state(s) -> None:
    if s:
        random.setstate((s[0], tuple(s[1]), s[2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident set size of this process since the last reset_peak_rss() (Linux VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
