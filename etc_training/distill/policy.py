"""The VLA side of the distillation: teacher checkpoint, cached prefix conditions, student checkpoints.

The backbone is frozen during distillation, and so is the head's prefix pooler (the "observation encoder" of
the SDM method): every distillation frame's condition vector c = pooler(backbone(prefix)) is computed ONCE and
cached (`ConditionBank`); G, D and F only see c. The distilled policy = the teacher's checkpoint with the head's
denoiser replaced by G and the head's sampler set to "onestep" (exactly one denoiser call per chunk).

    policy = load_teacher("runs/train/stage2/final")
    bank = build_condition_bank(policy, dataset_root, splits=["train"])       # (N, C) conditions + (N, H, D)
    variant_head(policy, "teacher-1")                                         # a head object per variant
    save_student(policy, G_state_dict, "runs/distill/student", meta={...})
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from etc_training.distill.sdm import DistillError
from etc_training.models.heads.diffusion import DiffusionActionHead
from etc_training.models.heads.hybrid import diffusion_part


def load_teacher(checkpoint: str | Path, device: str = "cpu"):
    """A VLAPolicy whose head is "diffusion" (or "both"); DistillError otherwise."""
    from etc_training.models.vla import VLA_FILE, VLAPolicy

    d = Path(checkpoint)
    if not (d / VLA_FILE).is_file():
        raise DistillError(f"--checkpoint: not an etc-vla policy checkpoint (no {VLA_FILE}): {d}")
    policy = VLAPolicy.load(d, device=device)
    try:
        head = diffusion_part(policy.action_head)
    except Exception as e:  # ModelError -> a distillation error naming the checkpoint
        raise DistillError(f"{d}: {e}") from None
    if head.sampler != "ddim":
        raise DistillError(f"{d}: the head is already a one-step ({head.sampler}) head; distill from the teacher")
    policy.eval()
    policy.requires_grad_(False)
    return policy


@dataclass
class ConditionBank:
    cond: torch.Tensor  # (N, C) pooled prefix conditions
    actions: torch.Tensor  # (N, H, D) normalized demonstration chunks of the same frames
    index: np.ndarray  # (N, 2) (episode, frame)
    splits: list[str]
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.cond.shape[0])

    def save(self, path: Path, key: str) -> None:
        torch.save({"cond": self.cond, "actions": self.actions, "index": torch.from_numpy(self.index),
                    "splits": self.splits, "key": key, "seconds": self.seconds}, str(path))

    @classmethod
    def load(cls, path: Path, key: str) -> "ConditionBank | None":
        if not path.is_file():
            return None
        try:
            d = torch.load(str(path), weights_only=False)
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            return None
        if d.get("key") != key:
            return None
        return cls(d["cond"], d["actions"], d["index"].numpy(), list(d["splits"]), float(d.get("seconds", 0.0)))


def _checkpoint_key(policy_dir: str | Path) -> str:
    h = hashlib.sha256()
    d = Path(policy_dir)
    for name in ("vla.json", "action_head.safetensors", "model.safetensors", "norm_stats.json"):
        p = d / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{int(st.st_mtime_ns)}".encode())
    return h.hexdigest()[:16]


def frame_dataset(root: str | Path, splits: Sequence[str], horizon: int, cameras: Sequence[str] = (),
                  n_views: int = 1):
    """An ActionChunkDataset over `splits` of a dataset (cameras: [] = the first n_views cameras)."""
    from etc_training.recipe.data import ActionChunkDataset, EpisodeStore

    root = Path(root)
    if not root.is_dir():
        raise DistillError(f"dataset not found: {root}")
    store = EpisodeStore(64)
    reader = store.reader(root)
    have = [s for s in splits if reader.episodes(s)]
    if not have:
        present = sorted({str(reader.episode_meta(i)["split"]) for i in reader.episodes()})
        raise DistillError(f"{root}: no episodes in split(s) {list(splits)} (splits present: {present})")
    cams = list(cameras) or list(reader.cameras)[:n_views]
    return ActionChunkDataset(store, root, have, horizon, cams)


def pick_frames(n: int, max_frames: int) -> np.ndarray:
    if max_frames and n > max_frames:
        return np.linspace(0, n - 1, max_frames).round().astype(int)
    return np.arange(n)


@torch.no_grad()
def condition_batch(policy, prompts: list[dict]) -> torch.Tensor:
    """Pooled conditions (B, C) of inference prompts (processor.build_inference_prompt), left-padded."""
    head = diffusion_part(policy.action_head)
    prefix = policy.to_torch(policy.processor.collate(prompts, padding_side="left"))
    out = policy.run_backbone(prefix)
    return head.condition_from(out, prefix).float().cpu()


def build_condition_bank(policy, root: str | Path, splits: Sequence[str], cameras: Sequence[str] = (),
                         max_frames: int = 0, batch: int = 16, cache: Path | None = None, checkpoint: str | Path
                         | None = None, progress: bool = False) -> ConditionBank:
    """Run the frozen backbone + pooler once over the frames of `splits` (cached under `cache`)."""
    head = diffusion_part(policy.action_head)
    proc = policy.processor
    key = None
    if cache is not None:
        key = json.dumps({"ckpt": _checkpoint_key(checkpoint) if checkpoint else None,
                          "root": str(Path(root).resolve()),
                          "splits": list(splits), "cameras": list(cameras), "max_frames": int(max_frames)},
                         sort_keys=True)
        hit = ConditionBank.load(cache, key)
        if hit is not None:
            return hit
    ds = frame_dataset(root, splits, head.horizon, cameras, proc.config.n_views)
    idx = pick_frames(len(ds), max_frames)
    t0 = time.perf_counter()
    conds, acts = [], []
    try:
        from tqdm import tqdm

        it = tqdm(range(0, len(idx), batch), desc="prefix features", unit="batch", disable=not progress or None,
                  leave=False)
    except ImportError:  # pragma: no cover
        it = range(0, len(idx), batch)
    for k in it:
        part = idx[k:k + batch]
        items = [ds.item(int(i)) for i in part]
        prompts = [proc.build_inference_prompt(it_["images"], it_["state"], it_["instruction"]) for it_ in items]
        conds.append(condition_batch(policy, prompts))
        acts.append(np.stack([proc.normalize_actions(it_["actions"]) for it_ in items]).astype(np.float32))
    bank = ConditionBank(torch.cat(conds), torch.from_numpy(np.concatenate(acts)), ds.index[idx].copy(),
                         list(ds.splits), round(time.perf_counter() - t0, 3))
    if cache is not None and key is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        bank.save(cache, key)
    return bank


# ---------------------------------------------------------------------------------------------- variants
def variant_head(policy, variant: str, student_state: dict | None = None) -> DiffusionActionHead:
    """A head object for one compared variant (shares nothing mutable with the policy's head):
    teacher-10 / teacher-N: DDIM with N steps; sdm-1 / cd-1: one call of the student denoiser."""
    base = diffusion_part(policy.action_head)
    proc = base.processor
    base.processor = None  # shared, not copied (tokenizers)
    try:
        head = copy.deepcopy(base)
    finally:
        base.processor = proc
    head.processor = proc
    head.reset_noise()
    if variant.startswith("teacher-"):
        try:
            n = int(variant.split("-", 1)[1])
        except ValueError:
            raise DistillError(f"bad variant {variant!r}: use teacher-<steps>") from None
        head.sampler = "ddim"
        head.num_inference_steps = n
        return head
    if variant in ("sdm-1", "cd-1"):
        if student_state is None:
            raise DistillError(f"variant {variant!r} needs the distilled generator weights")
        head.denoiser.load_state_dict(student_state)
        head.sampler = "onestep"
        return head
    raise DistillError(f"unknown variant {variant!r}")


class use_head:
    """Context manager: temporarily install `head` as the policy's action head (diffusion part)."""

    def __init__(self, policy, head: DiffusionActionHead):
        self.policy, self.head = policy, head

    def __enter__(self):
        from etc_training.models.heads.hybrid import HybridActionHead

        self._old = self.policy.action_head
        if isinstance(self._old, HybridActionHead):
            hyb = copy.copy(self._old)
            object.__setattr__(hyb, "_modules", dict(self._old._modules))
            hyb._modules["diffusion"] = self.head
            hyb.predict_with = "diffusion"
            self.policy.action_head = hyb
        else:
            self.policy.action_head = self.head
        return self.policy

    def __exit__(self, *exc):
        self.policy.action_head = self._old
        return False


def save_student(policy, head: DiffusionActionHead, out_dir: str | Path, meta: dict | None = None) -> Path:
    """Write the distilled policy checkpoint: the teacher's backbone + processor, the head with the student
    denoiser and sampler "onestep" (vla.json records the distillation)."""
    with use_head(policy, head):
        old_meta = policy.meta
        m = copy.deepcopy(old_meta)
        m["head"] = {"type": policy.action_head.name, "config": policy.action_head.config_dict()}
        m["distill"] = dict(meta or {})
        policy.meta = m
        try:
            return policy.save(out_dir)
        finally:
            policy.meta = old_meta
