"""Configuration of the ETC data engine (config/etc.yaml holds the defaults, key=value overrides on the CLI)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from etc_training.etc.mixture import GROUPS, MixtureWeights
from etc_training.etc.segment import SegmentParams

ALL_SUBTYPES: tuple[str, ...] = tuple(s for subs in GROUPS.values() for s in subs)


@dataclass
class EtcConfig:
    stride: int = 5  # sample every stride-th frame of each episode (frame 0 included)
    cameras: list[str] = field(default_factory=list)  # empty: every camera of the episode
    subtypes: list[str] = field(default_factory=lambda: list(ALL_SUBTYPES))  # which subtypes to build
    splits: list[str] = field(default_factory=list)  # empty: every split (train, val, test, ood, ...)
    waypoints: int = 5  # trajectory waypoints, the first one = the gripper's current position
    horizon: int = 20  # trajectory horizon in frames (the last waypoint is horizon frames ahead, clamped)
    objects_per_frame: int = 2  # point / box samples per frame and camera
    relation_margin_frac: float = 0.04  # left/right needs |du| > this fraction of the image width
    relation_margin_m: float = 0.03  # in front / behind needs a depth difference > this (m)
    gripper_margin_m: float = 0.03  # above / below needs a height difference > this (m)
    min_box_px: float = 3.0  # boxes narrower or lower than this (pixels) are not asked
    done_margin: int = 2  # 'done' is not asked within this many frames of the completion frame
    max_per_episode: dict[str, int] = field(default_factory=lambda: {"plan": 2, "goal": 2})  # 0 = no cap
    on_missing_calibration: Literal["error", "skip"] = "error"
    annotations: str | None = None  # operator annotation JSON (target-scene scene-grounding)
    dataset_path: Literal["absolute", "relative"] = "absolute"  # how image refs name the dataset
    event_tolerance: int = 3  # frames: detected vs recorded gripper events
    seed: int = 0
    workers: int = 1
    overlays: int = 12  # overlay PNGs written by `etc build` (0 = none)
    segment: SegmentParams = field(default_factory=SegmentParams)
    mixture: MixtureWeights = field(default_factory=MixtureWeights)
