"""Configuration of `etc-vla midtrain report` (config/midtrain.yaml; every key can be overridden as key=value).

    cfg = load_midtrain_config("config/midtrain.yaml", ["out=runs/midtrain"])

docs/midtrain.md explains every key; etc_training.midtrain.pipeline runs the engine on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from etc_training.midtrain import MidtrainError
from etc_training.recipe.config import SyntheticConfig


@dataclass
class PoolCfg:
    path: str | None = None  # pool JSONL / dir / parquet; null -> the built-in pool under OUT/pool
    n_per_source: int = 150  # built-in pool: candidates per source
    sources: list[str] = field(default_factory=lambda: ["default"])  # built-in sources; default | all | names
    seed: int = 0
    robot_like_sources: list[str] = field(default_factory=list)  # ground truth for precision@K (empty: manifest)


@dataclass
class RobotCfg:
    etc: str | None = None  # ETC directory or JSONL (positives); null -> synthetic recipe data under OUT/robot_data
    splits: list[str] = field(default_factory=lambda: ["train"])
    max_items: int = 0  # 0 = all
    eval_split: str = "val"  # held-out robot ETC split for the recipe comparison (answer NLL)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelCfg:
    path: str | None = None  # etc-vla policy / PaliGemma checkpoint; null -> random-init preset
    preset: str = "tiny"
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 2


@dataclass
class FeaturesCfg:
    batch_size: int = 16


@dataclass
class EstimatorCfg:
    hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    val_fraction: float = 0.2
    select_by: str = "auc"  # auc: earliest epoch with the best held-out AUC (+ patience) | loss: lowest held-out BCE
    patience: int = 5
    ablation: bool = True  # also report the estimator selected by held-out loss (all epochs), as "learned_by_loss"
    max_negatives: int = 200000  # pool rows used as negatives (seeded subsample beyond that)
    block: int = 16384  # rows per block when scoring the cache (memory ~ a few blocks)


@dataclass
class AdaptCfg:
    checkpoint: str | None = None  # robot-adapted policy (e.g. a recipe Stage-1 final/); null -> adapt here
    steps: int = 40
    batch_size: int = 8
    lr: float = 2.0e-4


@dataclass
class SelectCfg:
    k: int | None = None  # absolute K (overrides fraction)
    fraction: float = 0.25
    methods: list[str] = field(default_factory=lambda: ["learned", "random"])  # selection files written


@dataclass
class GapCfg:
    max_per_set: int = 300  # MMD sub-sample per dataset
    embedding: str = "tsne"  # tsne | pca
    embed_per_set: int = 150


@dataclass
class ReportCfg:
    methods: list[str] = field(default_factory=lambda: ["learned", "random", "distance", "ppl", "delta_ppl"])
    k_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25])  # + K = #robot-like ("R")


@dataclass
class TrainCmpCfg:
    enabled: bool = False
    config: str | None = None  # recipe YAML (default config/train_tiny.yaml)
    variants: list[str] = field(default_factory=lambda: ["selected", "random"])  # + "none" (ETC only)
    stage1_steps: int = 30
    stage2_steps: int = 40
    stage3: bool = False
    etc_batch: int = 8
    general_weight: float = 0.25  # share of the Stage-1 ETC batch drawn from the mid-training subset
    threads: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])  # one run per variant and seed
    overrides: list[str] = field(default_factory=list)  # extra recipe overrides (key=value)


@dataclass
class MidtrainConfig:
    out: str = "runs/midtrain"
    seed: int = 0
    progress: bool = True
    pool: PoolCfg = field(default_factory=PoolCfg)
    robot: RobotCfg = field(default_factory=RobotCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    features: FeaturesCfg = field(default_factory=FeaturesCfg)
    estimator: EstimatorCfg = field(default_factory=EstimatorCfg)
    adapt: AdaptCfg = field(default_factory=AdaptCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    gap: GapCfg = field(default_factory=GapCfg)
    report: ReportCfg = field(default_factory=ReportCfg)
    train: TrainCmpCfg = field(default_factory=TrainCmpCfg)


def load_midtrain_config(path: str | None = None, overrides: Sequence[str] = ()) -> MidtrainConfig:
    from etc_ros.core.config import load_config
    from etc_training.midtrain.baselines import METHODS

    cfg = load_config(MidtrainConfig, path, list(overrides))
    for m in list(cfg.report.methods) + list(cfg.select.methods):
        if m not in METHODS:
            raise MidtrainError(f"unknown method {m!r}; known: {list(METHODS)}")
    if cfg.estimator.select_by not in ("auc", "loss"):
        raise MidtrainError(f"estimator.select_by must be auc or loss, got {cfg.estimator.select_by!r}")
    if cfg.gap.embedding not in ("tsne", "pca"):
        raise MidtrainError(f"gap.embedding must be tsne or pca, got {cfg.gap.embedding!r}")
    for v in cfg.train.variants:
        if v not in ("selected", "random", "none"):
            raise MidtrainError(f"train.variants: unknown variant {v!r} (selected, random, none)")
    from etc_training.midtrain.builtin_pool import source_list

    source_list(cfg.pool.sources)  # unknown names fail here, before anything runs
    if cfg.pool.n_per_source < 1 or cfg.features.batch_size < 1:
        raise MidtrainError("pool.n_per_source and features.batch_size must be >= 1")
    if not 0 < cfg.train.general_weight < 1:
        raise MidtrainError(f"train.general_weight must be in (0, 1), got {cfg.train.general_weight}")
    return cfg


__all__ = ["PoolCfg", "RobotCfg", "ModelCfg", "FeaturesCfg", "EstimatorCfg", "AdaptCfg", "SelectCfg", "GapCfg",
           "ReportCfg", "TrainCmpCfg", "MidtrainConfig", "load_midtrain_config"]
