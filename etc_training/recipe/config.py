"""Configuration of the three-stage ETC training recipe (`etc-vla train --config FILE [key=value ...]`).

One YAML file holds the model, the data, the three stages and the run settings; config/train_tiny.yaml is the
CPU-sized default, config/train_paligemma.yaml the paper's hyperparameters. Every key can be overridden on the
command line (`stages.stage2.steps=50`, `data.synthetic.episodes=4`). See docs/recipe.md.

Stage semantics (Two Bridges, One Pathway):
- stage1 Distribution Bridging: ETC-only next-token training (answer-only loss), optionally mixed with general
  VLM data sources (e.g. the JSONL written by the mid-training selection).
- stage2 Objective Bridging: every optimizer step draws one action batch and one ETC batch
  (etc batch = round(action batch x etc_ratio), 32:8 in the paper); both losses' gradients are summed.
- stage3 Retentive Adaptation: target-scene actions + target-scene ETC + OOD ETC at configurable ratios.
Each enabled stage initialises from the previous one's final (EMA) weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from etc_ros.core.errors import UserError


class RecipeError(UserError):
    """Bad recipe configuration or data for training / evaluation / ablation."""


@dataclass
class SourceConfig:
    """One source of language (ETC or general VLM) samples inside a stage's ETC batch.

    kind "etc": an ETC directory (index.json + samples/, `etc-vla etc build`); drawn through EtcMixture with
    the group weights `groups` (empty = the paper's full-ETC weights). kind "general": JSONL file(s) or a
    directory of *.jsonl (prompt/answer or conversations records, see docs/recipe.md), drawn uniformly.
    `path` null means data.etc (kind etc) / data.general (kind general)."""

    name: str = "etc"
    kind: Literal["etc", "general"] = "etc"
    path: str | None = None
    splits: list[str] = field(default_factory=list)  # empty = every split
    categories: list[str] = field(default_factory=list)  # empty = every category
    weight: float = 1.0  # share of the ETC batch (relative to the stage's other sources)
    groups: dict[str, float] = field(default_factory=dict)  # ETC group weights (empty = paper defaults)


@dataclass
class StageConfig:
    enabled: bool = True
    steps: int = 100
    action_batch: int = 0  # global action batch per optimizer step (0 = no action data in this stage)
    etc_batch: int | None = None  # global ETC batch; null = round(action_batch * etc_ratio)
    etc_ratio: float = 0.25
    action_splits: list[str] = field(default_factory=lambda: ["train"])
    etc_sources: list[SourceConfig] = field(default_factory=list)
    lr: float = 1e-4
    min_lr: float = 1e-5  # cosine decays to this
    warmup: float = 0.05  # < 1: fraction of the stage's steps; >= 1: number of steps
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    ema_decay: float = 0.99  # 0 = no EMA
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + n) / (10 + n)) so short runs are not dominated by init
    etc_loss_weight: float = 1.0
    action_loss_weight: float = 1.0
    # continuous ETC scene grounding: questions naming any object of an action frame's scene (distractors too),
    # answered by the regression head's grounding read-out (needs data.frame_cache and a grounding head)
    grounding_batch: int = 0
    grounding_loss_weight: float = 1.0
    freeze_vision: bool = False  # the paper keeps the vision tower trainable (freezing hurt)
    export_ema: bool = True  # the stage's final policy (and the next stage's init) uses the EMA weights

    def resolved_etc_batch(self) -> int:
        if self.etc_batch is not None:
            return int(self.etc_batch)
        if self.action_batch <= 0:
            return 0
        return int(round(self.action_batch * self.etc_ratio))

    def warmup_steps(self) -> int:
        w = float(self.warmup)
        return int(round(w * self.steps)) if w < 1 else int(w)


def _stage1() -> StageConfig:
    return StageConfig(steps=60, action_batch=0, etc_batch=8, lr=2e-4, min_lr=2e-5, warmup=0.05,
                       etc_sources=[SourceConfig(name="etc", kind="etc", splits=["train"])])


def _stage2() -> StageConfig:
    return StageConfig(steps=120, action_batch=8, etc_ratio=0.25, lr=2e-4, min_lr=2e-5, warmup=0.1,
                       etc_sources=[SourceConfig(name="etc", kind="etc", splits=["train"])])


def _stage3() -> StageConfig:
    return StageConfig(steps=60, action_batch=8, etc_ratio=0.25, lr=1e-4, min_lr=1e-5, warmup=0.1,
                       action_splits=["target"],
                       etc_sources=[SourceConfig(name="target", kind="etc", splits=["target"], weight=0.9),
                                    SourceConfig(name="ood", kind="etc", splits=["ood"], weight=0.1)])


@dataclass
class StagesConfig:
    stage1: StageConfig = field(default_factory=_stage1)
    stage2: StageConfig = field(default_factory=_stage2)
    stage3: StageConfig = field(default_factory=_stage3)

    def items(self) -> list[tuple[str, StageConfig]]:
        return [("stage1", self.stage1), ("stage2", self.stage2), ("stage3", self.stage3)]


@dataclass
class ModelConfig:
    preset: str = "tiny"
    backbone_path: str | None = None  # local PaliGemma checkpoint (paligemma-3b preset)
    init: str | None = None  # start from an existing etc-vla policy checkpoint instead of building one
    head: str = "tokens"
    head_config: dict[str, Any] = field(default_factory=dict)
    action_tokenizer: Literal["fast", "bin"] = "fast"
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelPreset field overrides
    # normalization mode per key (stored in the checkpoint / bundle): actions are never clipped (minmax)
    norm: dict[str, str] = field(default_factory=lambda: {"action": "minmax", "state": "quantile"})


@dataclass
class SyntheticConfig:
    """Tiny generated data (etc_training.etc.synthetic) used when data.episodes is null: flat-colour drawings
    of the WidowX pick/place scenes with exact kinematics, so the recipe runs with no simulator or downloads."""

    episodes: int = 12  # split "train" (families pick_place, pick_up, push)
    val_episodes: int = 2  # split "val" (held-out action / ETC metrics)
    target_episodes: int = 4  # split "target" (family stack: the Stage-3 target scene)
    ood_episodes: int = 4  # split "ood" (ETC only: other colours / two distractors, no action labels used)
    width: int = 160
    height: int = 120
    seed: int = 0
    etc_stride: int = 5


@dataclass
class DataConfig:
    episodes: str | None = None  # etc_ros.data dataset root; null -> synthetic data generated under out/data
    etc: str | None = None  # ETC directory built from those episodes (null with synthetic -> built)
    general: list[str] = field(default_factory=list)  # general VLM JSONL sources (files or directories)
    cameras: list[str] = field(default_factory=list)  # camera views fed to the model (empty = first camera)
    val_split: str = "val"  # split used for held-out metrics (skipped when absent)
    cache_episodes: int = 64  # whole episodes kept decoded in memory (LRU) when the frame cache is off
    frame_cache: bool = True  # decode frames once at the model resolution into a memory map (frame_cache.py)
    augment_shift: int = 0  # random shift of action images by up to N pixels at the model resolution (0 = off)
    early_frames: int = 0  # the first N frames of every episode are sampled early_factor times as often
    early_factor: int = 1
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class CkaConfig:
    enabled: bool = True
    every: int = 20  # steps between CKA measurements in stages 2/3 (0 = only at stage ends)
    probe_size: int = 16  # fixed probe set of action prompts
    layers: Literal["text", "vision", "all"] = "text"  # which hidden states (text = decoder, the paper's 19)


@dataclass
class RunConfig:
    log_every: int = 5
    checkpoint_every: int = 50  # steps; a checkpoint is also written at the end of each stage
    keep_checkpoints: int = 2
    export_checkpoints: bool = False  # also save the (EMA) policy at each checkpoint: <stage>/policies/step_N
    resume: Literal["auto", "never"] = "auto"  # auto: continue a matching run in `out`
    stop_after: int = 0  # stop the process after this many optimizer steps in this invocation (tests, 0 = off)
    threads: int = 2  # torch CPU threads (at most 2 on the shared 2-core machine)
    device: str = "auto"  # auto | cpu | cuda
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (GPU)
    distributed: Literal["ddp", "fsdp"] = "ddp"  # strategy under torchrun
    find_unused_parameters: bool = False
    tensorboard: bool = True  # only if installed
    progress: bool = True
    val_every: int = 0  # held-out action loss every N steps (0 = at stage ends only)
    val_batches: int = 2


@dataclass
class TrainConfig:
    out: str = "runs/train"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    cka: CkaConfig = field(default_factory=CkaConfig)
    run: RunConfig = field(default_factory=RunConfig)


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Semantic checks (types are checked by the loader); raises RecipeError naming the key."""
    enabled = [(n, s) for n, s in cfg.stages.items() if s.enabled]
    if not enabled:
        raise RecipeError("all three stages are disabled: enable at least one of stages.stage1/2/3")
    from etc_ros.core.normalize import MODES
    from etc_training.etc.mixture import CATEGORIES

    for key, mode in cfg.model.norm.items():
        if key not in ("action", "state"):
            raise RecipeError(f"model.norm: unknown key {key!r}; use 'action' and/or 'state'")
        if mode not in MODES:
            raise RecipeError(f"model.norm.{key}: unknown mode {mode!r}; use one of {list(MODES)}")
    if cfg.data.early_frames < 0 or cfg.data.early_factor < 1:
        raise RecipeError("data.early_frames must be >= 0 and data.early_factor >= 1")
    if cfg.data.augment_shift < 0:
        raise RecipeError(f"data.augment_shift must be >= 0, got {cfg.data.augment_shift}")
    for name, s in cfg.stages.items():
        k = f"stages.{name}"
        if s.steps < 0:
            raise RecipeError(f"{k}.steps must be >= 0, got {s.steps}")
        if s.action_batch < 0:
            raise RecipeError(f"{k}.action_batch must be >= 0, got {s.action_batch}")
        if s.etc_batch is not None and s.etc_batch < 0:
            raise RecipeError(f"{k}.etc_batch must be >= 0, got {s.etc_batch}")
        if not 0 <= s.etc_ratio <= 64:
            raise RecipeError(f"{k}.etc_ratio must be in [0, 64], got {s.etc_ratio}")
        if not s.enabled:
            continue
        if s.steps and s.action_batch == 0 and s.resolved_etc_batch() == 0:
            raise RecipeError(f"{k}: both action_batch and the ETC batch are 0: the stage has nothing to train on")
        if s.resolved_etc_batch() > 0 and not s.etc_sources:
            raise RecipeError(f"{k}: an ETC batch of {s.resolved_etc_batch()} needs at least one etc_sources entry")
        if s.resolved_etc_batch() > 0 and sum(max(0.0, src.weight) for src in s.etc_sources) <= 0:
            raise RecipeError(f"{k}.etc_sources: all weights are 0")
        for j, src in enumerate(s.etc_sources):
            if src.weight < 0:
                raise RecipeError(f"{k}.etc_sources[{j}].weight must be >= 0, got {src.weight}")
            bad = [c for c in src.categories if c not in CATEGORIES]
            if bad:
                raise RecipeError(f"{k}.etc_sources[{j}].categories: unknown ETC categor(ies) {bad}; choose from "
                                  f"{list(CATEGORIES)}")
            if src.categories and src.kind != "etc":
                raise RecipeError(f"{k}.etc_sources[{j}].categories: only ETC sources (kind etc) have categories")
        if s.action_batch > 0 and not s.action_splits:
            raise RecipeError(f"{k}.action_splits is empty but action_batch is {s.action_batch}")
        if s.lr <= 0 or s.min_lr < 0 or s.min_lr > s.lr:
            raise RecipeError(f"{k}: need lr > 0 and 0 <= min_lr <= lr (got lr={s.lr}, min_lr={s.min_lr})")
        if s.warmup < 0:
            raise RecipeError(f"{k}.warmup must be >= 0, got {s.warmup}")
        if not (0 <= s.betas[0] < 1 and 0 <= s.betas[1] < 1):
            raise RecipeError(f"{k}.betas must be in [0, 1), got {s.betas}")
        if not 0 <= s.ema_decay < 1:
            raise RecipeError(f"{k}.ema_decay must be in [0, 1), got {s.ema_decay}")
        if s.grad_clip < 0:
            raise RecipeError(f"{k}.grad_clip must be >= 0, got {s.grad_clip}")
    r = cfg.run
    if r.threads < 1:
        raise RecipeError(f"run.threads must be >= 1, got {r.threads}")
    if r.checkpoint_every < 0 or r.log_every < 1 or r.keep_checkpoints < 1:
        raise RecipeError("run.checkpoint_every must be >= 0, run.log_every and run.keep_checkpoints >= 1")
    if cfg.cka.probe_size < 2:
        raise RecipeError(f"cka.probe_size must be >= 2 (CKA needs several samples), got {cfg.cka.probe_size}")
    syn = cfg.data.synthetic
    if cfg.data.episodes is None and syn.episodes < 1:
        raise RecipeError("data.episodes is null and data.synthetic.episodes < 1: no action data")
    return cfg


def load_train_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    from etc_ros.core.config import load_config

    return check_config(load_config(TrainConfig, path, list(overrides)))
