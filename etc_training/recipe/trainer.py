"""The training loop of one recipe stage: AdamW, warm-up + cosine schedule, EMA, gradient clipping, exact
checkpoint / resume, metrics, DDP or FSDP under torchrun.

One optimizer step = for each batch kind present (ETC first, then action): forward, loss x weight, backward
(gradients accumulate: the sum of both losses' gradients; under DDP the first pass runs in no_sync), then
clip, set the learning rate, AdamW step, EMA update.

Resuming loads the whole training state (weights, optimizer, EMA, RNGs, sampler position), so the continuation
is bit-identical to an uninterrupted run (tests check this). The files: recipe/checkpoint.py; processes, DDP and
FSDP: recipe/distributed.py; metrics.jsonl: recipe/metrics.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from etc_ros.core.io import atomic_write_text
from etc_training.recipe.checkpoint import (
    CKPT_FORMAT,
    clean_tmp,
    full_cpu,
    latest_checkpoint,
    py_rng_state,
    read_checkpoint,
    set_py_rng_state,
    write_checkpoint,
)
from etc_training.recipe.config import RecipeError, RunConfig, StageConfig
from etc_training.recipe.distributed import DistInfo, barrier, no_sync, wrap_model
from etc_training.recipe.metrics import MetricsLog


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
        self.model = wrap_model(self.policy, self.dist, self.run.find_unused_parameters)
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

    def _state_module(self) -> torch.nn.Module:
        """The module whose parameter names / state dict are checkpointed (DDP: the inner policy)."""
        return self.policy

    @property
    def fsdp(self) -> bool:
        return self.dist.fsdp

    @property
    def ddp(self) -> bool:
        return self.dist.ddp

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
            with no_sync(self.model, self.dist, j < len(parts) - 1), self._autocast():
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
            clean_tmp(self.ckpt_dir)
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
    def _full_states(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(self._state_module(), self.opt, options=opts)
        return msd, osd

    def ema_state(self) -> dict[str, torch.Tensor]:
        """Full EMA tensors (collective under FSDP: call on every rank)."""
        if self.ema is None:
            return {}
        return {k: full_cpu(v) for k, v in self.ema.shadow.items()}

    def save_checkpoint(self) -> Path | None:
        """Collective (every rank gathers the full state); rank 0 writes <stage>/checkpoints/step_<step>."""
        msd, osd = self._full_states()
        ema = self.ema_state()
        path = None
        if self.dist.is_main:
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available() and self.dist.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.dist.device)
            meta = {"step": self.step, "stage": self.name, "data": self.data.state_dict(),
                    "python_rng": py_rng_state(), "samples_seen": self.samples_seen,
                    "train_time": self.train_time, "config": self.digest, "init": self.init_path,
                    "world": self.dist.world, "format": CKPT_FORMAT}
            path = write_checkpoint(self.ckpt_dir, self.step, msd, osd, ema, self.ema.updates if self.ema else 0,
                                    rng, meta, self.run.keep_checkpoints)
        barrier(self.dist)
        return path

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

        ck = read_checkpoint(path, self.digest, self.name, ema=self.ema is not None)
        opts = StateDictOptions(full_state_dict=True, strict=True)
        set_state_dict(self._state_module(), self.opt, model_state_dict=ck.model, optim_state_dict=ck.optim,
                       options=opts)
        if self.ema is not None:
            for k, sh in self.ema.shadow.items():
                if k not in ck.ema:
                    raise RecipeError(f"{path}: EMA lacks {k}")
                src = ck.ema[k]
                if hasattr(sh, "full_tensor"):  # FSDP: take this rank's shard
                    from torch.distributed.tensor import distribute_tensor

                    src = distribute_tensor(src.to(sh.dtype), sh.device_mesh, sh.placements)
                    sh.to_local().copy_(src.to_local())
                else:
                    sh.copy_(src.to(sh.dtype))
            self.ema.updates = ck.ema_updates
        torch.set_rng_state(ck.rng["torch"])
        if "cuda" in ck.rng and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(ck.rng["cuda"], self.dist.device)
        set_py_rng_state(ck.meta.get("python_rng"))
        self.data.load_state_dict(ck.meta["data"])
        self.step = int(ck.meta["step"])
        self.samples_seen = int(ck.meta.get("samples_seen", 0))
        self.train_time = float(ck.meta.get("train_time", 0.0))

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
                sd = {k: full_cpu(v) for k, v in msd.items()}
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

