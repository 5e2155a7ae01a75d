"""Configuration of `etc-vla distill sdm` (config/distill_sdm.yaml; every key can be overridden as key=value)."""
from __future__ import annotations

from dataclasses import dataclass, field

from etc_training.distill.sdm import DistillError, SDMConfig
from etc_training.distill.teacher import TeacherConfig


@dataclass
class DistillDataConfig:
    """Observations to distill on (only the observations are used: SDM needs no action labels; the consistency
    baseline also reads the actions)."""

    episodes: str | None = None  # etc_ros.data dataset root (e.g. `etc-vla sim collect` output)
    splits: list[str] = field(default_factory=lambda: ["train"])
    cameras: list[str] = field(default_factory=list)  # [] = the dataset's first camera(s) (n_views of the model)
    max_frames: int = 0  # 0 = every frame
    batch: int = 16  # backbone batch when caching the prefix conditions


@dataclass
class ConsistencyConfig:
    enabled: bool = False
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-5
    warmup: int = 200
    ema_decay: float = 0.95
    grad_clip: float = 1.0
    num_inference_steps: int = 10  # the teacher's DDIM grid the consistency pairs come from
    seed: int = 0
    log_every: int = 50


@dataclass
class EvalConfig:
    enabled: bool = True
    heldout: str | None = None  # held-out demonstrations (dataset root); null = skip the offline action error
    heldout_splits: list[str] = field(default_factory=lambda: ["train", "ood_color"])
    heldout_frames: int = 400  # per split, evenly spaced (0 = all)
    sim_splits: list[str] = field(default_factory=lambda: ["train", "ood_color"])
    families: list[str] = field(default_factory=list)  # task families of the closed-loop scenes ([] = the sim's
    # own draw); episode i takes families[i % len(families)] (a pick_up policy: [pick_up])
    episodes: int = 10  # closed-loop episodes per sim split and variant (0 = skip)
    seed: int = 500_000  # episode i of a split uses reset(seed=seed + i): disjoint from `sim collect` seeds
    exec_horizon: int = 5  # actions executed per predicted chunk
    max_steps: int = 0  # 0 = the sim's default (60 steps = 12 s at 5 Hz)
    reach_tolerance: float = 0.03  # m: an episode "reached" the task object when the EE came this close
    latency_runs: int = 50  # timed calls per head / policy variant (after warm-up)
    variants: list[str] = field(default_factory=lambda: ["teacher-10", "teacher-1", "sdm-1"])


@dataclass
class ExportConfig:
    enabled: bool = True  # the one-step head as a single-pass ONNX graph (+ the 10-step teacher for latency)
    opset: int = 18


@dataclass
class RunConfig:
    threads: int = 1  # torch CPU threads (<= 2 on the shared machine)
    device: str = "cpu"
    progress: bool = True


@dataclass
class DistillConfig:
    out: str = "runs/distill_sdm"
    checkpoint: str | None = None  # the trained VLA policy with a diffusion (or both) head
    seed: int = 0
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    sdm: SDMConfig = field(default_factory=SDMConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # `etc-vla distill teacher` only
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    run: RunConfig = field(default_factory=RunConfig)


KNOWN_VARIANTS = ("teacher-10", "teacher-1", "sdm-1", "cd-1")


def check_distill_config(cfg: DistillConfig) -> DistillConfig:
    cfg.sdm.check()
    if cfg.data.batch < 1 or cfg.data.max_frames < 0:
        raise DistillError("data.batch must be >= 1 and data.max_frames >= 0")
    if not cfg.data.splits:
        raise DistillError("data.splits is empty: name the dataset split(s) to distill on")
    e = cfg.eval
    if e.episodes < 0 or e.exec_horizon < 1 or e.latency_runs < 1 or e.heldout_frames < 0:
        raise DistillError("eval.episodes >= 0, eval.exec_horizon >= 1, eval.latency_runs >= 1 and "
                           "eval.heldout_frames >= 0 are required")
    bad = [v for v in e.variants if v not in KNOWN_VARIANTS]
    if bad:
        raise DistillError(f"eval.variants: unknown {bad}; known: {list(KNOWN_VARIANTS)}")
    c = cfg.consistency
    if c.enabled and (c.steps < 1 or c.batch_size < 1 or c.lr <= 0 or not 0 <= c.ema_decay < 1):
        raise DistillError("consistency: steps, batch_size >= 1, lr > 0 and 0 <= ema_decay < 1 are required")
    if cfg.run.threads < 1:
        raise DistillError(f"run.threads must be >= 1, got {cfg.run.threads}")
    return cfg


def load_distill_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> DistillConfig:
    from etc_ros.core.config import load_config

    return check_distill_config(load_config(DistillConfig, path, list(overrides)))
