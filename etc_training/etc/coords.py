"""The ETC coordinate convention and the answer parser.

Coordinate convention (one for points, boxes and trajectories)
--------------------------------------------------------------
Pixels follow etc_ros.core.camera: (u, v) = (column, row), pixel *centres* at integer coordinates, so an
image of width W and height H covers the continuous range u in [-0.5, W - 0.5], v in [-0.5, H - 0.5].

A pixel coordinate is written as an integer "loc" in 0..1023 across the image:

    loc_x = clip(floor((u + 0.5) / W * 1023 + 0.5), 0, 1023)
    loc_y = clip(floor((v + 0.5) / H * 1023 + 0.5), 0, 1023)

i.e. (u + 0.5) / W is the position in [0, 1] from the left *edge* of the image (0 = left edge of the first
pixel, 1 = right edge of the last one), scaled to 1023 and rounded half up. Decoding:

    u = loc_x / 1023 * W - 0.5          v = loc_y / 1023 * H - 0.5

The round trip error is at most W / 2046 pixels (0.31 px at W = 640). Because the numbers are fractions of
the image size they do not change when the image is resized (no crop) before it reaches the model.

Written forms (plain digits, ", " between numbers):
- point       "[x, y]"                      e.g. "[512, 300]"
- box         "[x1, y1, x2, y2]"             top-left and bottom-right corners, x1 <= x2, y1 <= y2
- trajectory  "[[x, y, g], [x, y, g], ...]"  g = gripper state at that waypoint: 1 = open, 0 = closed
                                             (same sense as the state's gripper opening; opening >= 0.5 -> 1)
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import numpy as np

from etc_ros.core.errors import UserError

LOC_MAX = 1023
GRIPPER_OPEN_THRESHOLD = 0.5  # opening fraction >= this -> g = 1 (open)


class EtcParseError(UserError):
    """An ETC answer text does not have the form its subtype requires."""


# ---------------------------------------------------------------------------------------------- encoding
def to_loc(p: float, size: int) -> int:
    """Pixel coordinate p (centre convention) along an axis of `size` pixels -> integer 0..1023."""
    if size <= 0:
        raise UserError(f"image size must be positive, got {size}")
    if not math.isfinite(float(p)):
        raise UserError(f"pixel coordinate is not finite: {p}")
    return int(min(LOC_MAX, max(0, math.floor((float(p) + 0.5) / size * LOC_MAX + 0.5))))


def from_loc(loc: float, size: int) -> float:
    """Integer 0..1023 -> pixel coordinate (centre convention) along an axis of `size` pixels."""
    return float(loc) / LOC_MAX * size - 0.5


def point_to_loc(uv: Sequence[float], width: int, height: int) -> list[int]:
    return [to_loc(uv[0], width), to_loc(uv[1], height)]


def box_to_loc(box: Sequence[float], width: int, height: int) -> list[int]:
    x1, y1, x2, y2 = (float(b) for b in box)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    return [to_loc(x1, width), to_loc(y1, height), to_loc(x2, width), to_loc(y2, height)]


def loc_to_point(loc: Sequence[float], width: int, height: int) -> list[float]:
    return [from_loc(loc[0], width), from_loc(loc[1], height)]


def gripper_bit(opening: float) -> int:
    """Gripper opening fraction (1 = open) -> 1 (open) / 0 (closed)."""
    return 1 if float(opening) >= GRIPPER_OPEN_THRESHOLD else 0


def in_image(uv: Sequence[float], width: int, height: int) -> bool:
    u, v = float(uv[0]), float(uv[1])
    return bool(np.isfinite(u) and np.isfinite(v) and -0.5 <= u <= width - 0.5 and -0.5 <= v <= height - 0.5)


# ---------------------------------------------------------------------------------------------- writing
def fmt_point(p: Sequence[int]) -> str:
    return f"[{int(p[0])}, {int(p[1])}]"


def fmt_box(b: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(x)) for x in b) + "]"


def fmt_trajectory(traj: Iterable[Sequence[int]]) -> str:
    return "[" + ", ".join("[" + ", ".join(str(int(x)) for x in w) + "]" for w in traj) + "]"


RELATIONS = ("left_of", "right_of", "in_front_of", "behind", "above", "below", "holding")
_REL_TEXT = {
    "left_of": "to the left of", "right_of": "to the right of", "in_front_of": "in front of",
    "behind": "behind", "above": "above", "below": "below", "holding": "holding",
}


def fmt_relation(rels: Sequence[str]) -> str:
    """Canonical relation names -> answer text, e.g. ['left_of', 'behind'] -> 'to the left of and behind'."""
    for r in rels:
        if r not in _REL_TEXT:
            raise UserError(f"unknown relation {r!r}; known: {list(RELATIONS)}")
    words = [_REL_TEXT[r] for r in rels]
    if not words:
        raise UserError("a relation answer needs at least one relation")
    return " and ".join(words)


def fmt_list(names: Sequence[str]) -> str:
    return ", ".join(names)


def fmt_plan(steps: Sequence[str]) -> str:
    return "; ".join(f"{i + 1}. {s}" for i, s in enumerate(steps))


def fmt_done(done: bool) -> str:
    return "yes" if done else "no"


# ---------------------------------------------------------------------------------------------- parsing
_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?")
_INNER = re.compile(r"[\[\(]([^\[\]\(\)]*)[\]\)]")

NUMERIC_SUBTYPES = {"point": 2, "box": 4, "affordance_grasp": 2, "affordance_place": 2}
TEXT_SUBTYPES = ("objects", "relation", "gripper_relation", "goal", "plan", "next_subtask", "done")


def _ints(text: str, n: int | None) -> list[int] | None:
    nums = _NUM.findall(text)
    if n is not None and len(nums) != n:
        return None
    out = []
    for s in nums:
        f = float(s)
        if f != int(f) or not 0 <= f <= LOC_MAX:
            return None
        out.append(int(f))
    return out


def _parse_point(text: str):
    return _ints(text, 2)


def _parse_box(text: str):
    b = _ints(text, 4)
    if b is None or b[0] > b[2] or b[1] > b[3]:
        return None
    return b


def _parse_trajectory(text: str):
    groups = _INNER.findall(text)
    if not groups:
        return None
    out = []
    for g in groups:
        w = _ints(g, 3)
        if w is None or w[2] not in (0, 1):
            return None
        out.append(w)
    # nothing but the groups (and brackets, commas, spaces) may be in the text
    rest = _INNER.sub("", text)
    if re.search(r"[0-9]", rest):
        return None
    return out


def _parse_relation(text: str):
    t = " " + re.sub(r"[^a-z ]", " ", text.lower()) + " "
    t = re.sub(r"\s+", " ", t)
    found = []
    checks = [("left_of", r" left "), ("right_of", r" right "), ("in_front_of", r" in front "),
              ("behind", r" behind "), ("above", r" above "), ("below", r" below "), ("holding", r" holding ")]
    for name, pat in checks:
        if re.search(pat, t):
            found.append(name)
    if ("left_of" in found and "right_of" in found) or ("in_front_of" in found and "behind" in found) or \
            ("above" in found and "below" in found):
        return None
    return found or None


def _parse_list(text: str):
    parts = [p.strip(" .\n\t") for p in re.split(r",|\band\b|\n", text)]
    parts = [re.sub(r"\s+", " ", p) for p in parts if p.strip(" .\n\t")]
    return parts or None


def _parse_plan(text: str):
    parts = [p.strip() for p in re.split(r";|\n", text)]
    steps = []
    for p in parts:
        if not p:
            continue
        p = re.sub(r"^\s*(?:step\s*)?\d+\s*[.):]\s*", "", p, flags=re.I).strip(" .")
        if p:
            steps.append(re.sub(r"\s+", " ", p))
    return steps or None


def _parse_done(text: str):
    t = text.strip().lower().strip(" .!")
    if re.match(r"^(yes|true|done|complete[d]?)\b", t):
        return True
    if re.match(r"^(no|false|not)\b", t):
        return False
    return None


def _parse_text(text: str):
    t = re.sub(r"\s+", " ", text.strip()).strip(" .")
    return t or None


_PARSERS = {
    "point": _parse_point, "affordance_grasp": _parse_point, "affordance_place": _parse_point,
    "box": _parse_box, "trajectory": _parse_trajectory,
    "objects": _parse_list, "relation": _parse_relation, "gripper_relation": _parse_relation,
    "plan": _parse_plan, "done": _parse_done, "goal": _parse_text, "next_subtask": _parse_text,
}

SUBTYPES = tuple(_PARSERS)


def parse_answer(subtype: str, text: Any, strict: bool = False):
    """Read an ETC answer back into structured values.

    point / affordance_*: [x, y] ints; box: [x1, y1, x2, y2]; trajectory: [[x, y, g], ...];
    objects: [names]; relation / gripper_relation: [canonical relation names, in RELATIONS order];
    plan: [step texts];
    done: bool; goal / next_subtask: normalised text.
    Malformed text -> None (strict=False) or EtcParseError (strict=True). Unknown subtype -> EtcParseError.
    """
    if subtype not in _PARSERS:
        raise EtcParseError(f"unknown ETC subtype {subtype!r}; known: {sorted(_PARSERS)}")
    out = _PARSERS[subtype](text) if isinstance(text, str) else None
    if out is None and strict:
        raise EtcParseError(f"malformed {subtype} answer: {text!r}")
    return out


def answer_values(subtype: str, target: dict):
    """The values parse_answer must return for a sample with this `target` (used by validation)."""
    if subtype in ("point", "affordance_grasp", "affordance_place"):
        return [int(x) for x in target["loc"]]
    if subtype == "box":
        return [int(x) for x in target["loc"]]
    if subtype == "trajectory":
        return [[int(a), int(b), int(g)] for (a, b), g in zip(target["loc"], target["gripper"])]
    if subtype == "objects":
        return list(target["names"])
    if subtype in ("relation", "gripper_relation"):
        return sorted(target["relations"], key=RELATIONS.index)
    if subtype == "plan":
        return [s["text"] for s in target["steps"]]
    if subtype == "done":
        return bool(target["done"])
    if subtype == "goal":
        return _parse_text(target["text"])
    if subtype == "next_subtask":
        return _parse_text(target["text"])
    raise EtcParseError(f"unknown ETC subtype {subtype!r}")
