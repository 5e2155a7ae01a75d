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


GENERATORS: dict[str, Callable] = {
    "doc_text": _doc_text,
    "chart_qa": _chart_qa,
    "shape_caption": _shape_caption,
    "counting": _counting,
    "tabletop_pointing": _tabletop_pointing,
    "tabletop_relation": _tabletop_relation,
}


def make_record(source: str, i: int, seed: int = 0) -> tuple:
    """(PIL image, record without the image path) of sample i of a source; deterministic in (seed, source, i)."""
    if source not in GENERATORS:
        raise MidtrainError(f"unknown built-in pool source {source!r}; known: {list(GENERATORS)}")
    rng = np.random.default_rng([int(seed), SOURCES.index(source), int(i)])
    img, pairs, meta = GENERATORS[source](rng, i)
    conv = []
    for k, (q, a) in enumerate(pairs):
        conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
    rec = {"id": f"{source}/{i:06d}", "source": source, "conversations": conv,
           "robot_like": source in ROBOT_LIKE, "meta": meta}
    return img, rec


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


__all__ = ["SOURCES", "ROBOT_LIKE", "GENERATORS", "make_record", "make_builtin_pool"]
