"""The built-in OFFLINE candidate pool: several labelled general-VLM-like sources drawn with PIL / numpy, so the
mid-training engine runs with no downloads.

Sources (all answers are exact: every image is drawn from the values the answer states):

| source | images | conversations | robot-like |
|---|---|---|---|
| `doc_text` | book covers / text pages | "What is the title of this book?" / author | no |
| `chart_qa` | bar charts with labelled bars | largest bar, value of a bar | no |
| `shape_caption` | shapes on coloured / gradient backgrounds | "Describe the image." -> caption | no |
| `counting` | scattered shapes | "How many circles are there?" | no |
| `tabletop_pointing` | tabletop scenes (wall, table, objects) | "Locate a point on the red cube." -> [(x, y)] | yes |
| `tabletop_relation` | tabletop scenes | left/right/closest-object relations | yes |

General scenes rendered unlike the robot tabletop (outdoor: sky, ground, houses, trees, cars, a sign), five
task types on them; not in the default six (config/midtrain.yaml keeps the six its published figures came from),
used by the >= 100k pool (config/midtrain_pool100k.yaml: 11 sources x 9,091 = 100,001 candidates):

| source | conversations | robot-like |
|---|---|---|
| `scene_caption` | "Describe the image." -> "Two trees, a red house and a blue car under a cloudy sky." | no |
| `scene_vqa` | object colour, left/right of two objects | no |
| `scene_counting` | "How many trees are there?" | no |
| `scene_pointing` | "Point to the red house." -> [(x, y)] (the robot-like answer format on an unlike image) | no |
| `sign_text` | "What does the sign say?" -> the word on it | no |

"Robot-like" (the ground truth of precision@K) = the two tabletop sources: spatial grounding on manipulation-style
scenes, the kind of VLM data the EmbodiedMidtrain paper found closest to robot data (spatial pointing QA with
normalized point answers like [(0.976, 0.244)]); text-centric sources (book covers, charts) are the far end.
A fraction of the shape / counting images use a table-like background (meta.style = "tabletop") so that sources
are not perfectly uniform inside (sample-level, not only dataset-level, differences).

    make_builtin_pool("runs/midtrain/pool", n_per_source=200, seed=0)  -> Path of pool.jsonl
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from etc_training.midtrain import MidtrainError

SOURCES = ("doc_text", "chart_qa", "shape_caption", "counting", "tabletop_pointing", "tabletop_relation")
SCENE_SOURCES = ("scene_caption", "scene_vqa", "scene_counting", "scene_pointing", "sign_text")
ALL_SOURCES = SOURCES + SCENE_SOURCES  # a source's index here seeds its samples: append, never reorder
ROBOT_LIKE = ("tabletop_pointing", "tabletop_relation")

PALETTE = {"red": (214, 45, 45), "green": (46, 170, 70), "blue": (45, 80, 215), "yellow": (228, 205, 45),
           "purple": (145, 65, 185), "orange": (236, 135, 35), "white": (240, 240, 240), "black": (25, 25, 25),
           "pink": (235, 130, 180), "brown": (130, 85, 45), "gray": (128, 128, 128), "cyan": (60, 200, 210)}
OBJ_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle")
TABLETOP_OBJECTS = ("cube", "block", "ball", "bowl", "plate", "cup")

_WORDS_A = ("Modern", "Practical", "Elementary", "Advanced", "Complete", "Hidden", "Quiet", "Lost", "Golden",
            "Applied", "Silent", "Northern", "Essential", "Little", "Brief")
_WORDS_B = ("Trigonometry", "Algebra", "Gardening", "History", "Cooking", "Physics", "Poems", "Rivers", "Economics",
            "Chemistry", "Sailing", "Statistics", "Painting", "Harbor", "Letters")
_FIRST = ("Anna", "Peter", "Maria", "John", "Elena", "David", "Sofia", "Marcus", "Laura", "Tomas", "Irene", "Hugo")
_LAST = ("Keller", "Moreno", "Laine", "Okafor", "Brandt", "Novak", "Ferris", "Lund", "Castell", "Weber", "Ito")
_FILLER = ("the", "of", "and", "a", "in", "to", "is", "for", "with", "on", "as", "by", "this", "that", "from")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _color(name: str, rng: np.random.Generator, jitter: int = 12) -> tuple[int, int, int]:
    base = np.asarray(PALETTE[name], dtype=np.int64)
    return tuple(int(v) for v in np.clip(base + rng.integers(-jitter, jitter + 1, 3), 0, 255))


def _pick(rng: np.random.Generator, seq, k: int | None = None, replace: bool = False):
    if k is None:
        return seq[int(rng.integers(len(seq)))]
    idx = rng.choice(len(seq), size=k, replace=replace)
    return [seq[int(i)] for i in idx]


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:  # pragma: no cover - internal
        raise ValueError(shape)


def _background(rng: np.random.Generator, w: int, h: int, tabletop: bool):
    """A flat colour, a vertical gradient, or (tabletop) a wall above a table."""
    from PIL import Image

    if tabletop:
        return _tabletop_background(rng, w, h)[0]
    kind = int(rng.integers(3))
    if kind == 0:
        return Image.new("RGB", (w, h), _color(_pick(rng, tuple(PALETTE)), rng, 30))
    top = np.asarray(_color(_pick(rng, tuple(PALETTE)), rng, 30), np.float32)
    bot = np.asarray(_color(_pick(rng, tuple(PALETTE)), rng, 30), np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    arr = (top * (1 - t) + bot * t) * np.ones((1, w, 1), np.float32)
    if kind == 2:
        arr = arr + rng.normal(0, 12, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _tabletop_background(rng: np.random.Generator, w: int, h: int):
    """Wall (upper part) + table (lower part) in muted tones; returns (image, y of the table edge)."""
    from PIL import Image

    edge = int(h * rng.uniform(0.35, 0.55))
    wall = np.asarray(rng.integers(170, 225, 3), np.float32)
    table = np.asarray(_pick(rng, ((150, 150, 150), (160, 125, 90), (120, 120, 128), (175, 160, 135))), np.float32)
    table = table + rng.integers(-12, 13, 3)
    arr = np.empty((h, w, 3), np.float32)
    arr[:edge] = wall
    arr[edge:] = table
    arr += rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), edge


# ---------------------------------------------------------------------------------------------- sources
def _doc_text(rng: np.random.Generator, idx: int) -> tuple:
    from PIL import Image, ImageDraw

    w, h = 120, 160
    title = f"{_pick(rng, _WORDS_A)} {_pick(rng, _WORDS_B)}"
    author = f"{_pick(rng, _FIRST)} {chr(65 + int(rng.integers(26)))}. {_pick(rng, _LAST)}"
    cover = bool(rng.random() < 0.6)
    bg = _color(_pick(rng, ("white", "yellow", "cyan", "pink", "gray", "brown")), rng, 20) if cover else (245, 245, 240)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    ink = (20, 20, 20) if sum(bg) > 300 else (240, 240, 240)
    if cover:
        y = 18
        for word in title.split():
            d.text((10, y), word, fill=ink, font=_font(15))
            y += 20
        d.line([(10, y + 4), (w - 10, y + 4)], fill=ink, width=2)
        d.text((10, h - 28), author, fill=ink, font=_font(9))
        q = _pick(rng, ("What is the title of this book?", "Who wrote this book?"))
        a = title if q.startswith("What is the title") else author
    else:
        d.text((8, 6), title, fill=ink, font=_font(11))
        lines = []
        for _ in range(11):
            lines.append(" ".join(_pick(rng, _FILLER + _WORDS_B, k=4, replace=True)).lower())
        for k, ln in enumerate(lines):
            d.text((8, 24 + 12 * k), ln, fill=(60, 60, 60), font=_font(8))
        q = _pick(rng, ("What is the heading of this page?", "What is the first word of the second line?"))
        a = title if q.startswith("What is the heading") else lines[1].split()[0]
    return img, [(q, a)], {"style": "cover" if cover else "page"}


def _chart_qa(rng: np.random.Generator, idx: int) -> tuple:
    from PIL import Image, ImageDraw

    w, h = 160, 120
    n = int(rng.integers(3, 7))
    labels = [chr(65 + k) for k in range(n)]
    vals = rng.choice(np.arange(1, 11), size=n, replace=False)
    img = Image.new("RGB", (w, h), (250, 250, 250))
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = 18, 10, w - 6, h - 18
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill=(30, 30, 30), width=1)
    for v in (0, 5, 10):
        y = y1 - (y1 - y0) * v / 10
        d.text((2, y - 5), str(v), fill=(30, 30, 30), font=_font(8))
    bw = (x1 - x0) / n
    col = _color(_pick(rng, ("blue", "orange", "green", "purple", "gray")), rng)
    for k in range(n):
        bx = x0 + k * bw + bw * 0.2
        top = y1 - (y1 - y0) * float(vals[k]) / 10
        d.rectangle([bx, top, bx + bw * 0.6, y1 - 1], fill=col)
        d.text((bx + bw * 0.2, y1 + 3), labels[k], fill=(30, 30, 30), font=_font(9))
    if rng.random() < 0.5:
        q, a = "Which bar in the chart has the largest value?", labels[int(np.argmax(vals))]
    else:
        k = int(rng.integers(n))
        q, a = f"What is the value of bar {labels[k]}?", str(int(vals[k]))
    return img, [(q, a)], {"n_bars": n}


def _shape_caption(rng: np.random.Generator, idx: int) -> tuple:
    from PIL import ImageDraw

    w, h = 128, 128
    tabletop = bool(rng.random() < 0.2)
    img = _background(rng, w, h, tabletop)
    d = ImageDraw.Draw(img)
    n = int(rng.integers(1, 4))
    parts = []
    for _ in range(n):
        shape, cname = _pick(rng, SHAPES), _pick(rng, OBJ_COLORS)
        r = float(rng.uniform(10, 22))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        _draw_shape(d, shape, cx, cy, r, _color(cname, rng))
        size = "large" if r > 17 else "small"
        parts.append(f"a {size} {cname} {shape}")
    where = "on a table" if tabletop else "on a plain background"
    cap = (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + f" {where}."
    q = _pick(rng, ("Describe the image.", "What do you see in this picture?", "Write a short caption."))
    return img, [(q, cap[0].upper() + cap[1:])], {"style": "tabletop" if tabletop else "flat"}


def _counting(rng: np.random.Generator, idx: int) -> tuple:
    from PIL import ImageDraw

    w, h = 128, 128
    tabletop = bool(rng.random() < 0.2)
    img = _background(rng, w, h, tabletop)
    d = ImageDraw.Draw(img)
    target = _pick(rng, SHAPES)
    n = int(rng.integers(1, 10))
    others = [s for s in SHAPES if s != target]
    n_other = int(rng.integers(0, 5))
    cname = _pick(rng, OBJ_COLORS)
    for k in range(n + n_other):
        shape = target if k < n else _pick(rng, others)
        r = float(rng.uniform(5, 9))
        _draw_shape(d, shape, float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r)), r, _color(cname, rng))
    q = f"How many {target}s are there in the image?"
    return img, [(q, str(n))], {"style": "tabletop" if tabletop else "flat", "count": n}


def _tabletop_scene(rng: np.random.Generator, w: int = 160, h: int = 120):
    """Objects on a table seen from a raised camera, and a gripper marker. Returns (image, objects) with
    objects = [{"name", "x", "y"} (normalized centre)]."""
    from PIL import ImageDraw

    img, edge = _tabletop_background(rng, w, h)
    d = ImageDraw.Draw(img)
    n = int(rng.integers(2, 5))
    colors = _pick(rng, OBJ_COLORS, k=n)
    objs: list[dict] = []
    tries = 0
    while len(objs) < n and tries < 200:
        tries += 1
        kind = _pick(rng, TABLETOP_OBJECTS)
        r = float(rng.uniform(6, 12))
        cx, cy = float(rng.uniform(r + 2, w - r - 2)), float(rng.uniform(edge + r + 2, h - r - 2))
        if any(abs(cx - o["px"]) < 2.2 * r and abs(cy - o["py"]) < 2.2 * r for o in objs):
            continue
        col = _color(colors[len(objs)], rng)
        if kind in ("cube", "block"):
            rw = r * (1.0 if kind == "cube" else 1.5)
            d.rectangle([cx - rw, cy - r, cx + rw, cy + r], fill=col)
        elif kind == "ball":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        elif kind in ("bowl", "plate"):
            d.ellipse([cx - 1.6 * r, cy - 0.8 * r, cx + 1.6 * r, cy + 0.8 * r], fill=col)
            if kind == "bowl":
                d.ellipse([cx - r, cy - 0.45 * r, cx + r, cy + 0.45 * r], fill=tuple(int(c * 0.7) for c in col))
        else:  # cup
            d.rectangle([cx - 0.7 * r, cy - r, cx + 0.7 * r, cy + r], fill=col)
        objs.append({"name": f"{colors[len(objs)]} {kind}", "px": cx, "py": cy,
                     "x": round(cx / w, 3), "y": round(cy / h, 3)})
    # gripper marker: a dark blob with two fingers somewhere above the table
    gx, gy = float(rng.uniform(20, w - 20)), float(rng.uniform(8, edge + 10))
    d.rectangle([gx - 2, gy - 2, gx + 2, gy + 2], fill=(25, 25, 25))
    d.line([(gx - 4, gy + 2), (gx - 4, gy + 7)], fill=(25, 25, 25), width=2)
    d.line([(gx + 4, gy + 2), (gx + 4, gy + 7)], fill=(25, 25, 25), width=2)
    return img, objs


def _tabletop_pointing(rng: np.random.Generator, idx: int) -> tuple:
    img, objs = _tabletop_scene(rng)
    o = _pick(rng, objs)
    fmt = "Answer with a list of (x, y) points, coordinates normalized to [0, 1]."
    q = _pick(rng, (f"Locate a point on the {o['name']}. {fmt}", f"Point to the {o['name']} on the table. {fmt}",
                    f"Where should the robot touch the {o['name']}? {fmt}"))
    return img, [(q, f"[({o['x']:.3f}, {o['y']:.3f})]")], {"n_objects": len(objs)}


def _tabletop_relation(rng: np.random.Generator, idx: int) -> tuple:
    img, objs = _tabletop_scene(rng)
    kind = int(rng.integers(3))
    o = _pick(rng, objs)
    others = [p for p in objs if p is not o]
    if kind == 0:
        left = [p for p in others if p["x"] < o["x"]]
        q = f"Which object is closest to the left of the {o['name']}?"
        a = f"The {max(left, key=lambda p: p['x'])['name']}." if left else f"Nothing is left of the {o['name']}."
    elif kind == 1:
        px, py = round(float(rng.uniform(0.05, 0.95)), 3), round(float(rng.uniform(0.5, 0.95)), 3)
        near = min(objs, key=lambda p: (p["x"] - px) ** 2 + (p["y"] - py) ** 2)
        q = f"You are standing at the point ({px:.3f}, {py:.3f}). Which object is nearest to you?"
        a = f"The {near['name']}."
    else:
        p = _pick(rng, others)
        side = "left" if p["x"] < o["x"] else "right"
        q = f"Is the {p['name']} to the left or to the right of the {o['name']}?"
        a = f"To the {side}."
    return img, [(q, a)], {"relation": ("left_of", "nearest", "side")[kind], "n_objects": len(objs)}


# ---------------------------------------------------------------------------------------------- general scenes
SCENE_KINDS = ("house", "tree", "car")
SIGN_WORDS = ("STOP", "EXIT", "OPEN", "PARK", "CAFE", "BANK", "HOTEL", "SALE", "NORTH", "RIVER", "MARKET", "BUS",
              "TAXI", "PHARMACY", "BAKERY", "LIBRARY", "SCHOOL", "GARDEN")
_SKIES = {"clear": ((90, 150, 230), (175, 210, 245)), "cloudy": ((150, 160, 175), (205, 210, 215)),
          "sunset": ((235, 120, 70), (250, 200, 120))}


def _outdoor_scene(rng: np.random.Generator, w: int = 160, h: int = 120, sign: bool = False):
    """An outdoor scene seen from eye level: sky, horizon, grass or road, houses, trees and cars (no table, no
    gripper). Returns (image, objects [{"kind", "color", "name", "x", "y"}], sky, sign word or None)."""
    from PIL import Image, ImageDraw

    sky = _pick(rng, tuple(_SKIES))
    top, bot = (np.asarray(c, np.float32) for c in _SKIES[sky])
    horizon = int(h * rng.uniform(0.45, 0.6))
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    arr = np.empty((h, w, 3), np.float32)
    arr[:horizon] = (top * (1 - t) + bot * t) * np.ones((1, w, 1), np.float32)
    ground = _pick(rng, ((70, 150, 60), (95, 160, 75), (105, 105, 110)))
    arr[horizon:] = np.asarray(ground, np.float32) + rng.integers(-10, 11, 3)
    arr += rng.normal(0, 4, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if sky == "cloudy":
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(4, horizon * 0.6))
            d.ellipse([cx - 14, cy - 5, cx + 14, cy + 5], fill=(232, 234, 238))
    elif sky == "clear":
        sx, sy = float(rng.uniform(12, w - 12)), float(rng.uniform(8, horizon * 0.4))
        d.ellipse([sx - 7, sy - 7, sx + 7, sy + 7], fill=(250, 225, 90))
    objs: list[dict] = []
    for _ in range(int(rng.integers(3, 7)) * 3):
        if len(objs) >= 6:
            break
        kind = _pick(rng, SCENE_KINDS)
        base = horizon + float(rng.uniform(2, h - horizon - 4))  # the object stands on the ground at y = base
        scale = 0.6 + 0.8 * (base - horizon) / max(1.0, h - horizon)  # nearer = lower = larger
        half = {"house": 16.0, "tree": 8.0, "car": 12.0}[kind] * scale
        cx = float(rng.uniform(half + 4, w - half - 4))
        height = {"house": 36.0, "tree": 28.4, "car": 13.0}[kind] * scale  # roof / crown / cabin included
        box = (cx - half - 3, base - height, cx + half + 3, base + scale)
        if any(box[0] < o["box"][2] + 1 and o["box"][0] < box[2] + 1 and box[1] < o["box"][3] + 1
               and o["box"][1] < box[3] + 1 for o in objs):
            continue  # no occlusion: every object is fully visible (counts and points stay exact)
        if kind == "house":
            color = _pick(rng, ("red", "yellow", "white", "blue", "brown"))
            hh = 22 * scale
            d.rectangle([cx - half, base - hh, cx + half, base], fill=_color(color, rng))
            d.polygon([(cx - half - 3, base - hh), (cx, base - hh - 14 * scale), (cx + half + 3, base - hh)],
                      fill=_color(_pick(rng, ("brown", "gray", "red")), rng))
            d.rectangle([cx - 3 * scale, base - 9 * scale, cx + 3 * scale, base], fill=(70, 45, 30))
            cy = base - hh / 2
        elif kind == "tree":
            color = "green"
            d.rectangle([cx - 2 * scale, base - 14 * scale, cx + 2 * scale, base], fill=(105, 70, 40))
            r = 9 * scale
            d.ellipse([cx - r, base - 14 * scale - 1.6 * r, cx + r, base - 14 * scale + 0.4 * r],
                      fill=_color("green", rng))
            cy = base - 14 * scale - 0.6 * r
        else:
            color = _pick(rng, ("red", "blue", "yellow", "black", "white", "orange"))
            ch = 8 * scale
            d.rectangle([cx - half, base - ch, cx + half, base - 2 * scale], fill=_color(color, rng))
            d.rectangle([cx - half * 0.5, base - ch - 5 * scale, cx + half * 0.5, base - ch], fill=_color(color, rng))
            for wx in (cx - half * 0.6, cx + half * 0.6):
                d.ellipse([wx - 3 * scale, base - 5 * scale, wx + 3 * scale, base + scale], fill=(20, 20, 20))
            cy = base - ch / 2
        objs.append({"kind": kind, "color": color, "name": f"{color} {kind}" if kind != "tree" else "tree",
                     "px": cx, "py": cy, "box": box,
                     "x": round(min(max(cx / w, 0.0), 1.0), 3), "y": round(min(max(cy / h, 0.0), 1.0), 3)})
    word = None
    if sign:
        word = _pick(rng, SIGN_WORDS)
        sx = float(rng.uniform(10, w - 70))
        sy = float(rng.uniform(6, max(7.0, horizon - 30)))
        d.rectangle([sx, sy, sx + 8 + 8 * len(word), sy + 18], fill=_color(_pick(rng, ("white", "yellow")), rng),
                    outline=(30, 30, 30))
        d.text((sx + 4, sy + 3), word, fill=(20, 20, 20), font=_font(12))
    return img, objs, sky, word


def _scene_caption(rng: np.random.Generator, idx: int) -> tuple:
    img, objs, sky, _ = _outdoor_scene(rng)
    counts: dict[str, int] = {}
    for o in objs:
        counts[o["name"]] = counts.get(o["name"], 0) + 1
    words = ("a", "two", "three", "four", "five", "six")
    parts = [f"{words[n - 1]} {name}{'s' if n > 1 else ''}" for name, n in counts.items()]
    things = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    cap = f"{things[0].upper() + things[1:]} under a {sky} sky."
    q = _pick(rng, ("Describe the image.", "What do you see in this picture?", "Write a short caption."))
    return img, [(q, cap)], {"sky": sky, "n_objects": len(objs)}


def _scene_vqa(rng: np.random.Generator, idx: int) -> tuple:
    """A question whose answer is unambiguous in the scene: the colour of an object kind seen once, the side of one
    uniquely named object relative to another, else the weather."""
    img, objs, sky, _ = _outdoor_scene(rng)
    names = [o["name"] for o in objs]
    unique = [o for o in objs if names.count(o["name"]) == 1]
    once = [o for o in objs if o["kind"] != "tree" and sum(p["kind"] == o["kind"] for p in objs) == 1]
    kind = int(rng.integers(3))
    if kind == 0 and once:
        o = _pick(rng, once)
        q, a = f"What colour is the {o['kind']}?", o["color"].capitalize() + "."
    elif kind == 1 and len(unique) >= 2:
        p, o = _pick(rng, unique, k=2)
        side = "left" if p["px"] < o["px"] else "right"
        q, a = f"Is the {p['name']} to the left or to the right of the {o['name']}?", f"To the {side}."
    else:
        q, a = "What is the weather like?", {"clear": "Sunny.", "cloudy": "Cloudy.", "sunset": "It is sunset."}[sky]
    return img, [(q, a)], {"sky": sky, "n_objects": len(objs)}


def _scene_counting(rng: np.random.Generator, idx: int) -> tuple:
    img, objs, sky, _ = _outdoor_scene(rng)
    kind = _pick(rng, SCENE_KINDS)
    n = sum(o["kind"] == kind for o in objs)
    plural = {"house": "houses", "tree": "trees", "car": "cars"}[kind]
    return img, [(f"How many {plural} are there in the image?", str(n))], {"sky": sky, "count": n}


def _scene_pointing(rng: np.random.Generator, idx: int) -> tuple:
    """Points on every object of one name (one point per instance, left to right)."""
    img, objs, sky, _ = _outdoor_scene(rng)
    name = _pick(rng, [o["name"] for o in objs])
    hits = sorted((o for o in objs if o["name"] == name), key=lambda o: o["px"])
    fmt = "Answer with a list of (x, y) points, coordinates normalized to [0, 1]."
    what = f"the {name}" if len(hits) == 1 else f"each {name}"
    q = _pick(rng, (f"Point to {what}. {fmt}", f"Locate a point on {what}. {fmt}"))
    pts = ", ".join(f"({o['x']:.3f}, {o['y']:.3f})" for o in hits)
    return img, [(q, f"[{pts}]")], {"sky": sky, "n_objects": len(objs), "n_points": len(hits)}


def _sign_text(rng: np.random.Generator, idx: int) -> tuple:
    img, objs, sky, word = _outdoor_scene(rng, sign=True)
    q = _pick(rng, ("What does the sign say?", "Read the text on the sign."))
    return img, [(q, str(word))], {"sky": sky, "word": word}


GENERATORS: dict[str, Callable] = {
    "doc_text": _doc_text,
    "chart_qa": _chart_qa,
    "shape_caption": _shape_caption,
    "counting": _counting,
    "tabletop_pointing": _tabletop_pointing,
    "tabletop_relation": _tabletop_relation,
    "scene_caption": _scene_caption,
    "scene_vqa": _scene_vqa,
    "scene_counting": _scene_counting,
    "scene_pointing": _scene_pointing,
    "sign_text": _sign_text,
}


def make_record(source: str, i: int, seed: int = 0) -> tuple:
    """(PIL image, record without the image path) of sample i of a source; deterministic in (seed, source, i)."""
    if source not in GENERATORS:
        raise MidtrainError(f"unknown built-in pool source {source!r}; known: {list(GENERATORS)}")
    rng = np.random.default_rng([int(seed), ALL_SOURCES.index(source), int(i)])
    img, pairs, meta = GENERATORS[source](rng, i)
    conv = []
    for k, (q, a) in enumerate(pairs):
        conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
    rec = {"id": f"{source}/{i:06d}", "source": source, "conversations": conv,
           "robot_like": source in ROBOT_LIKE, "meta": meta}
    return img, rec


def source_list(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Built-in source names from a config list: "default" -> the six, "all" -> all eleven, else the names."""
    out: list[str] = []
    for n in names:
        add = SOURCES if n == "default" else ALL_SOURCES if n == "all" else (n,)
        for a in add:
            if a not in GENERATORS:
                raise MidtrainError(f"unknown built-in pool source {a!r}; known: {list(GENERATORS)}, default, all")
            if a not in out:
                out.append(a)
    if not out:
        raise MidtrainError("no built-in pool source named")
    return tuple(out)


def make_builtin_pool(out_dir: str | Path, n_per_source: int = 200, seed: int = 0,
                      sources: tuple[str, ...] | list[str] = SOURCES, progress: bool = True) -> Path:
    """Write the pool (pool.jsonl + pool.json manifest + images/<source>/<i>.png) under out_dir; returns the
    pool.jsonl path. Re-running with the same arguments reuses a complete earlier build."""
    import json

    from etc_training.midtrain.pool import MANIFEST_FILE, POOL_FILE, write_pool

    if n_per_source < 1:
        raise MidtrainError(f"n_per_source must be >= 1, got {n_per_source}")
    unknown = [s for s in sources if s not in GENERATORS]
    if unknown:
        raise MidtrainError(f"unknown built-in pool source(s) {unknown}; known: {list(GENERATORS)}")
    out = Path(out_dir)
    want = {"format": "etc-midtrain-pool/1", "builtin": True, "version": 1, "n_per_source": int(n_per_source),
            "seed": int(seed), "sources": list(sources), "robot_like_sources": [s for s in sources if s in ROBOT_LIKE]}
    mf = out / MANIFEST_FILE
    if mf.is_file() and (out / POOL_FILE).is_file():
        try:
            old = json.loads(mf.read_text())
            if {k: old.get(k) for k in want} == want:
                return out / POOL_FILE
        except json.JSONDecodeError:
            pass
    from tqdm import tqdm

    t0 = time.perf_counter()
    recs = []
    total = len(sources) * n_per_source
    with tqdm(total=total, desc="builtin pool", unit="img", disable=not progress) as bar:
        for s in sources:
            (out / "images" / s).mkdir(parents=True, exist_ok=True)
            for i in range(n_per_source):
                img, rec = make_record(s, i, seed)
                rel = f"images/{s}/{i:06d}.png"
                img.save(out / rel, format="PNG")
                rec["image"] = rel
                recs.append(rec)
                bar.update(1)
    manifest = dict(want, n=len(recs), build_s=round(time.perf_counter() - t0, 2),
                    counts={s: n_per_source for s in sources})
    return write_pool(out / POOL_FILE, recs, manifest)


__all__ = ["SOURCES", "SCENE_SOURCES", "ALL_SOURCES", "ROBOT_LIKE", "GENERATORS", "make_record", "make_builtin_pool",
           "source_list"]
