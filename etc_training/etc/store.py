"""Where the ETC builder reads from and writes to: the source episode dataset and the ETC directory on disk.

    idx = load_index("runs/etc"); recs = load_samples("runs/etc", splits=["train"], categories=["spatial"])

Source side: open an etc_ros.data dataset, refer to it from the index (absolute or relative to the ETC
directory) and read an episode's id, metadata, image sizes and arrays without decoding pixels.
ETC side: `write_samples` writes out/samples/<split>/<category>.jsonl, out/segments.jsonl and out/index.json
(format FORMAT); `load_index` / `iter_samples` / `load_samples` read them back. The builder, validator, stats,
overlays and annotation tool all go through this module, so none of them imports another to reach the files.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from etc_ros.core.config import to_dict
from etc_ros.core.errors import DatasetError, UserError
from etc_ros.core.io import atomic_write, atomic_write_json
from etc_training.etc.config import EtcConfig
from etc_training.etc.mixture import CATEGORIES

FORMAT = "etc_samples/1"


# ---------------------------------------------------------------------------------------------- source episodes
def open_dataset(root: str | Path):
    from etc_ros.data import DatasetReader

    root = Path(root)
    if not root.exists():
        raise DatasetError(f"episode dataset not found: {root}")
    return DatasetReader(root)


def dataset_ref(root: str | Path, out_dir: str | Path, mode: str) -> str:
    root = Path(root).resolve()
    if mode == "relative":
        return os.path.relpath(root, Path(out_dir).resolve())
    return str(root)


def resolve_dataset(ref: str, etc_dir: str | Path) -> Path:
    p = Path(ref)
    return p if p.is_absolute() else (Path(etc_dir) / p).resolve()


def episode_meta(reader, i: int) -> dict:
    """Episode i's metadata, {} when the reader has none."""
    try:
        return dict(reader.episode_meta(i) or {})
    except Exception:  # noqa: BLE001 - metadata is optional for the builder
        return {}


def episode_id_of(meta: dict, i: int) -> str:
    for k in ("episode_id", "id", "name", "uuid"):
        if meta.get(k):
            return str(meta[k])
    return f"episode_{i:06d}"


def reader_image_sizes(reader) -> dict[str, tuple[int, int]] | None:
    """{cam: (W, H)} from a DatasetReader's spec (None for readers without one)."""
    spec = getattr(reader, "spec", None)
    cams = getattr(spec, "cameras", None)
    if not cams:
        return None
    return {c: (int(hw[1]), int(hw[0])) for c, hw in cams.items()}


def load_episode(reader, i: int, images: bool = False):
    """Episode i; pixels are only decoded when asked (ETC needs sizes and calibration, not pixels)."""
    if not images and reader_image_sizes(reader) is not None:
        try:
            return reader.load_episode(i, images=False)
        except TypeError:
            pass
    return reader.load_episode(i)


# ---------------------------------------------------------------------------------------------- ETC directory
def _write_jsonl(path: Path, records: list[dict]) -> None:
    def w(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, separators=(",", ":"), default=_json_default) + "\n")

    atomic_write(path, w)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_samples(out: Path, groups: dict, infos: list[dict], cfg: EtcConfig, ds_ref: str, ds_abs: str) -> dict:
    from etc_training.etc import coords

    out.mkdir(parents=True, exist_ok=True)
    files = []
    by_split: Counter = Counter()
    by_cat: Counter = Counter()
    by_sub: Counter = Counter()
    by_split_cat: dict[str, dict[str, int]] = defaultdict(dict)
    # remove record files of an earlier build that this one does not rewrite
    old = out / "samples"
    if old.is_dir():
        for p in old.rglob("*.jsonl"):
            p.unlink()
    for (split, cat), recs in sorted(groups.items()):
        recs.sort(key=lambda r: r["id"])
        rel = f"samples/{split}/{cat}.jsonl"
        _write_jsonl(out / rel, recs)
        files.append(dict(path=rel, split=split, category=cat, count=len(recs)))
        by_split[split] += len(recs)
        by_cat[cat] += len(recs)
        by_split_cat[split][cat] = len(recs)
        for r in recs:
            by_sub[r["subtype"]] += 1
    _write_jsonl(out / "segments.jsonl", infos)
    ev = [i["events_check"] for i in infos if "events_check" in i]
    sb = [i["subtasks_check"] for i in infos if "subtasks_check" in i]
    seg_summary = dict(
        episodes_with_recorded_events=len(ev), events_agree=sum(1 for e in ev if e["ok"]),
        episodes_with_recorded_subtasks=len(sb),
        subtask_boundary_f1=round(float(np.mean([s["f1"] for s in sb])), 4) if sb else None,
    )
    n = sum(by_cat.values())
    summary = dict(
        out_dir=str(out), n_samples=n, n_episodes=len(infos),
        by_split=dict(by_split), by_category={c: by_cat.get(c, 0) for c in CATEGORIES}, by_subtype=dict(by_sub),
        by_split_category=dict(by_split_cat), segmentation=seg_summary, files=files,
    )
    index = dict(
        format=FORMAT, dataset=ds_ref, dataset_abs=ds_abs, created_unix=round(time.time(), 3),
        convention=dict(
            coordinates="integers 0..1023: loc = clip(floor((u + 0.5) / W * 1023 + 0.5), 0, 1023), same for v "
                        "with H; pixel centres at integer (u, v), image spans [-0.5, W - 0.5]",
            point="[x, y]", box="[x1, y1, x2, y2]", trajectory="[[x, y, g], ...] g: 1 open, 0 closed",
            loc_max=coords.LOC_MAX,
        ),
        config=to_dict(cfg), files=files, counts=dict(by_split=dict(by_split), by_category=dict(by_cat),
                                                      by_subtype=dict(by_sub)),
        episodes=[{k: v for k, v in i.items() if k not in ("segmentation",)} for i in infos],
    )
    atomic_write_json(out / "index.json", index)
    return summary


# ---------------------------------------------------------------------------------------------- reading back
def load_index(etc_dir: str | Path) -> dict:
    p = Path(etc_dir) / "index.json"
    if not p.is_file():
        raise UserError(f"{etc_dir}: not an ETC directory (no index.json); build one with `etc-vla etc build`")
    try:
        idx = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: invalid JSON: {e}") from None
    if idx.get("format") != FORMAT:
        raise UserError(f"{p}: format {idx.get('format')!r} is not {FORMAT!r}")
    return idx


def iter_samples(etc_dir: str | Path, splits: Iterable[str] | None = None,
                 categories: Iterable[str] | None = None) -> Iterable[dict]:
    idx = load_index(etc_dir)
    splits = set(splits) if splits else None
    categories = set(categories) if categories else None
    for f in idx["files"]:
        if splits is not None and f["split"] not in splits:
            continue
        if categories is not None and f["category"] not in categories:
            continue
        p = Path(etc_dir) / f["path"]
        if not p.is_file():
            raise UserError(f"{etc_dir}: index lists {f['path']} but the file is missing")
        with open(p, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{p}:{ln}: invalid JSON record: {e}") from None


def load_samples(etc_dir: str | Path, splits: Iterable[str] | None = None,
                 categories: Iterable[str] | None = None) -> list[dict]:
    return list(iter_samples(etc_dir, splits, categories))
