"""Overlay images: an ETC record's points, boxes and trajectories drawn on its frame (PNG, PIL), with the
prompt and answer printed underneath, so a person can check the data by eye.

Everything drawn is decoded from the *answer text* (parse_answer + the 0..1023 convention), so an overlay shows
what a model would be taught, not what the builder meant.
"""
from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etc_ros.core.errors import UserError
from etc_ros.data.schema import image_key
from etc_training.etc import coords
from etc_training.etc.store import load_index, load_samples, open_dataset, resolve_dataset

if TYPE_CHECKING:  # PIL is imported where it draws, so importing this module stays light
    from PIL import Image

GEOMETRIC = ("trajectory", "point", "box", "affordance_grasp", "affordance_place", "relation", "gripper_relation",
             "objects")


class FrameSource:
    """Frames by (dataset ref, episode, frame, camera); readers opened once and cached."""

    def __init__(self, etc_dir: str | Path, reader=None):
        self.etc_dir = Path(etc_dir)
        self.reader = reader
        self._readers: dict[str, object] = {}
        self._episodes: dict[tuple[str, int], object] = {}

    def _reader(self, ref: str):
        if self.reader is not None:
            return self.reader
        if ref not in self._readers:
            self._readers[ref] = open_dataset(resolve_dataset(ref, self.etc_dir))
        return self._readers[ref]

    def frame(self, ref: str, episode: int, t: int, cam: str) -> np.ndarray:
        r = self._reader(ref)
        if hasattr(r, "episode_frame"):
            d = r.episode_frame(int(episode), int(t), images=True)
            key = image_key(cam)
            if key not in d:
                raise UserError(f"episode {episode} has no camera {cam!r}")
            return np.asarray(d[key])
        key = (ref, int(episode))
        if key not in self._episodes:
            self._episodes = {key: r.load_episode(int(episode))}
        imgs = self._episodes[key].images
        if cam not in imgs:
            raise UserError(f"episode {episode} has no camera {cam!r}")
        return np.asarray(imgs[cam][int(t)])


def _pick(samples: list[dict], n: int, seed: int) -> list[dict]:
    """n records spread over subtypes (geometric ones first), reproducible."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by[s["subtype"]].append(s)
    order = [st for st in GEOMETRIC if st in by] + sorted(st for st in by if st not in GEOMETRIC)
    for st in order:
        rng.shuffle(by[st])
    out: list[dict] = []
    k = 0
    while len(out) < n and any(by[st] for st in order):
        st = order[k % len(order)]
        if by[st]:
            out.append(by[st].pop())
        k += 1
    return out


def draw_sample(img: np.ndarray, s: dict, min_width: int = 448) -> "Image.Image":
    from PIL import Image, ImageDraw

    H, W = img.shape[:2]
    scale = max(1, int(np.ceil(min_width / W)))
    base = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((W * scale, H * scale), Image.NEAREST)
    wrap = max(40, (W * scale) // 7)
    text = ["[" + s["subtype"] + "] " + s["id"], "Q: " + s["prompt"], "A: " + s["answer"]]
    lines = [ln for t in text for ln in textwrap.wrap(t, wrap)]
    canvas = Image.new("RGB", (W * scale, H * scale + 14 * len(lines) + 8), (255, 255, 255))
    canvas.paste(base, (0, 0))
    d = ImageDraw.Draw(canvas)

    def px(loc):  # 0..1023 -> display pixel
        u, v = coords.loc_to_point(loc, W, H)
        return ((u + 0.5) * scale - 0.5, (v + 0.5) * scale - 0.5)

    def dot(p, color, r=4, label=None):
        d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], outline=color, width=2)
        d.line([p[0] - r - 3, p[1], p[0] + r + 3, p[1]], fill=color)
        d.line([p[0], p[1] - r - 3, p[0], p[1] + r + 3], fill=color)
        if label:
            d.text((p[0] + r + 2, p[1] - r - 10), label, fill=color)

    st = s["subtype"]
    val = coords.parse_answer(st, s["answer"])
    tg = s.get("target", {})
    if st in ("point", "affordance_grasp", "affordance_place") and val:
        dot(px(val), (255, 0, 0), 5, tg.get("object"))
        if tg.get("box_pixel"):
            b = tg["box_pixel"]
            d.rectangle([(b[0] + .5) * scale - .5, (b[1] + .5) * scale - .5, (b[2] + .5) * scale - .5,
                         (b[3] + .5) * scale - .5], outline=(255, 160, 0), width=1)
    elif st == "box" and val:
        p1, p2 = px(val[:2]), px(val[2:])
        d.rectangle([p1, p2], outline=(0, 255, 0), width=2)
        d.text((p1[0], max(0, p1[1] - 12)), tg.get("object", ""), fill=(0, 255, 0))
    elif st == "trajectory" and val:
        pts = [px(w[:2]) for w in val]
        d.line(pts, fill=(255, 255, 0), width=2)
        for k, (p, w) in enumerate(zip(pts, val)):
            dot(p, (0, 220, 255) if w[2] == 1 else (255, 0, 255), 6 if k == 0 else 3, str(k))
    elif st == "objects" and tg.get("loc"):
        for k, (loc, name) in enumerate(zip(tg["loc"], tg["names"])):
            dot(px(loc), (255, 0, 0), 3, f"{k + 1}:{name}")
    elif st == "relation" and tg.get("subject_loc"):
        dot(px(tg["subject_loc"]), (255, 0, 0), 4, tg["subject"])
        dot(px(tg["reference_loc"]), (0, 120, 255), 4, tg["reference"])
    elif st == "gripper_relation" and tg.get("gripper_loc"):
        dot(px(tg["gripper_loc"]), (255, 0, 255), 4, "gripper")
        dot(px(tg["object_loc"]), (0, 120, 255), 4, tg["object"])
    y = H * scale + 4
    for ln in lines:
        d.text((4, y), ln, fill=(0, 0, 0))
        y += 14
    return canvas


def write_overlays(etc_dir: str | Path, out_dir: str | Path, n: int = 12, seed: int = 0, reader=None,
                   ids: list[str] | None = None) -> list[Path]:
    """Draw n records (spread over subtypes, or exactly `ids`) of an ETC directory as PNGs into out_dir."""
    from etc_ros.core.io import atomic_write

    if n < 0:
        raise UserError(f"number of overlays must be >= 0, got {n}")
    load_index(etc_dir)
    samples = load_samples(etc_dir)
    if ids:
        want = set(ids)
        chosen = [s for s in samples if s["id"] in want]
        missing = want - {s["id"] for s in chosen}
        if missing:
            raise UserError(f"no ETC records with ids {sorted(missing)[:5]}")
    else:
        chosen = _pick(samples, n, seed)
    src = FrameSource(etc_dir, reader)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, s in enumerate(chosen):
        ref = s["images"][0]
        img = src.frame(ref["dataset"], ref["episode"], ref["frame"], ref["camera"])
        canvas = draw_sample(img, s)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s["id"])
        p = out / f"{k:03d}_{s['subtype']}_{safe}.png"
        atomic_write(p, lambda tmp: canvas.save(tmp, format="PNG"))
        paths.append(p)
    return paths
