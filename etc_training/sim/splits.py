"""Evaluation splits: "train" (in-distribution) and four out-of-distribution splits, disjoint by construction.

- ood_color: the task object has a colour from OOD_COLORS, never used by any object in "train" (the target and
  distractors may use any colour).
- ood_combo: (task object, target) name pairs from the held-out partition of all pairs over TRAIN_COLORS; every
  object and every target also occurs in "train", only the pairing is new. Families with a target only.
- ood_distractor: distractors of NOVEL_KINDS, which never appear in "train"; task objects and targets as in train.
- ood_phrase: instruction templates from the held-out partition (HELDOUT_TEMPLATES); scenes as in train.
Every other aspect of an OOD split follows "train", so one factor changes at a time.
"""
from __future__ import annotations

import zlib

from etc_ros.core.errors import UserError

from .language import HELDOUT_TEMPLATES, TEMPLATES
from .objects import NOVEL_KINDS

SPLITS = ("train", "ood_color", "ood_combo", "ood_distractor", "ood_phrase")

TRAIN_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
OOD_COLORS = ("pink", "cyan", "brown", "lime")

TRAIN_DISTRACTOR_KINDS = ("block", "cylinder", "ball", "bowl", "plate", "mat")
OOD_DISTRACTOR_KINDS = tuple(NOVEL_KINDS)

COMBO_MODULUS = 5  # one pair in five (by a stable hash) is held out for ood_combo


class SplitError(UserError):
    pass


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise SplitError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    return split


def combo_heldout(object_name: str, target_name: str) -> bool:
    """True when the (object, target) pair belongs to the ood_combo partition (stable across runs/platforms)."""
    return zlib.crc32(f"{object_name}|{target_name}".encode()) % COMBO_MODULUS == 0


def object_colors(split: str) -> tuple[str, ...]:
    """Colours the task object may take in `split`."""
    return OOD_COLORS if check_split(split) == "ood_color" else TRAIN_COLORS


def other_colors(split: str) -> tuple[str, ...]:
    """Colours targets and distractors may take in `split`."""
    return TRAIN_COLORS + OOD_COLORS if check_split(split) == "ood_color" else TRAIN_COLORS


def distractor_kinds(split: str) -> tuple[str, ...]:
    return OOD_DISTRACTOR_KINDS if check_split(split) == "ood_distractor" else TRAIN_DISTRACTOR_KINDS


def template_ids(family: str, split: str) -> tuple[str, ...]:
    if family not in TEMPLATES:
        raise SplitError(f"unknown task family {family!r}; choose one of {list(TEMPLATES)}")
    ids = tuple(TEMPLATES[family])
    held = set(HELDOUT_TEMPLATES[family])
    if check_split(split) == "ood_phrase":
        return tuple(i for i in ids if i in held)
    return tuple(i for i in ids if i not in held)


def pair_allowed(split: str, object_name: str, target_name: str | None) -> bool:
    """Whether an (object, target) pair may be used in `split` (pairs are only restricted over train colours)."""
    check_split(split)
    if target_name is None:
        return split != "ood_combo"
    held = combo_heldout(object_name, target_name)
    if split == "ood_combo":
        return held
    if split == "ood_color":
        return True  # the object colour is unseen anyway
    return not held
