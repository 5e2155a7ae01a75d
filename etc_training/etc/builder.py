"""ETC builder: episodes (etc_ros.data format) -> ETC sample records (JSONL per split and category + index).

    summary = build_etc("runs/sim_episodes", "runs/etc", EtcConfig())

Output layout (see docs/etc.md):
    out/index.json                         format, config, dataset, convention, counts, files
    out/samples/<split>/<category>.jsonl   one record per line
    out/segments.jsonl                     per-episode segmentation + checks against recorded metadata
    out/stats.json, out/stats.md           statistics per category / subtype (stats.py)
    out/overlays/*.png                     points, boxes, trajectories drawn on frames (overlay.py)
Images are referenced ({episode, episode_id, frame, camera, dataset}), never copied.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from etc_ros.core.config import from_dict, to_dict
from etc_ros.core.errors import CalibrationError, DatasetError, UserError
from etc_ros.core.io import atomic_write, atomic_write_json

from etc_training.etc.config import ALL_SUBTYPES, EtcConfig
from etc_training.etc.episode import EpisodeView, make_view
from etc_training.etc.generators import GENERATORS, NEEDS_CALIBRATION
from etc_training.etc.mixture import SUBTYPE_CATEGORY, CATEGORIES
from etc_training.etc.segment import compare_events, compare_segments

FORMAT = "etc_samples/1"
SUBTYPE_INDEX = {s: i for i, s in enumerate(ALL_SUBTYPES)}


def check_config(cfg: EtcConfig) -> EtcConfig:
    unknown = [s for s in cfg.subtypes if s not in GENERATORS]
    if unknown:
        raise UserError(f"etc config: unknown subtypes {unknown}; known: {list(ALL_SUBTYPES)}")
    if cfg.stride < 1:
        raise UserError(f"etc config: stride must be >= 1, got {cfg.stride}")
    if cfg.waypoints < 2:
        raise UserError(f"etc config: waypoints must be >= 2, got {cfg.waypoints}")
    if cfg.horizon < cfg.waypoints - 1:
        raise UserError(f"etc config: horizon ({cfg.horizon} frames) must be >= waypoints - 1 ({cfg.waypoints - 1})")
    if cfg.workers < 1:
        raise UserError(f"etc config: workers must be >= 1, got {cfg.workers}")
    bad = [k for k in cfg.max_per_episode if k not in GENERATORS]
    if bad:
        raise UserError(f"etc config: max_per_episode names unknown subtypes {bad}")
    return cfg


def frames_for(view: EpisodeView, cfg: EtcConfig) -> list[int]:
    frames = set(range(0, view.num_frames, cfg.stride))
    frames.update(t for t in view.annotated_frames() if 0 <= t < view.num_frames)
    return sorted(frames)


def cameras_for(view: EpisodeView, cfg: EtcConfig) -> list[str]:
    have = list(view.image_sizes)
    if not cfg.cameras:
        return have
    missing = [c for c in cfg.cameras if c not in have]
    if missing:
        raise DatasetError(f"episode {view.episode_id}: cameras {missing} asked by the ETC config are not in the "
                           f"episode (cameras: {have})")
    return list(cfg.cameras)


def episode_samples(view: EpisodeView, cfg: EtcConfig) -> tuple[list[dict], dict]:
    """All ETC records of one episode (deterministic given cfg.seed and the episode index) + per-episode info."""
    info: dict[str, Any] = dict(episode=view.index, episode_id=view.episode_id, split=view.split,
                                source=view.source, frames=view.num_frames, skipped={})
    cams = cameras_for(view, cfg)
    subtypes = [s for s in ALL_SUBTYPES if s in cfg.subtypes]
    calib_needed = [s for s in subtypes if s in NEEDS_CALIBRATION]
    skip_subtypes: dict[str, set[str]] = defaultdict(set)
    if calib_needed and view.state is not None:
        mounts = view.metadata.get("camera_mounts") or {}
        for cam in cams:
            if cam not in view.cameras:
                # a camera mounted on the arm (metadata.camera_mounts) has no fixed T_base_cam: it is skipped
                # for the projected subtypes by design; any other camera without calibration is an error
                if cfg.on_missing_calibration == "error" and cam not in mounts:
                    view.camera(cam, "/".join(calib_needed))  # raises CalibrationError naming what is missing
                skip_subtypes[cam].update(calib_needed)
                why = "moving camera (camera_mounts)" if cam in mounts else "no calibration"
                info["skipped"][f"{cam}: {why}"] = calib_needed
    samples: list[dict] = []
    ds = view.dataset
    for t in frames_for(view, cfg):
        for ci, cam in enumerate(cams):
            for st in subtypes:
                if st in skip_subtypes[cam]:
                    continue
                rng = np.random.default_rng([cfg.seed, view.index, t, ci, SUBTYPE_INDEX[st]])
                made = GENERATORS[st](view, t, cam, rng, cfg)
                for k, s in enumerate(made):
                    rec = {
                        "id": f"{view.episode_id}:{cam}:{t}:{st}:{k}",
                        "images": [dict(episode=view.index, episode_id=view.episode_id, frame=int(t), camera=cam,
                                        dataset=ds)],
                        "prompt": s["prompt"], "answer": s["answer"],
                        "category": SUBTYPE_CATEGORY[st], "subtype": st, "template": s["template"],
                        "source_episode": view.episode_id, "split": view.split, "source": view.source,
                        "target": s["target"],
                    }
                    samples.append(rec)
    # per-episode caps, deterministic
    by_st: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_st[s["subtype"]].append(i)
    drop: set[int] = set()
    for st, idx in by_st.items():
        cap = int(cfg.max_per_episode.get(st, 0) or 0)
        if cap > 0 and len(idx) > cap:
            rng = np.random.default_rng([cfg.seed, view.index, 1_000_003, SUBTYPE_INDEX[st]])
            keep = set(rng.choice(idx, size=cap, replace=False).tolist())
            drop.update(i for i in idx if i not in keep)
    samples = [s for i, s in enumerate(samples) if i not in drop]
    info["samples"] = len(samples)
    info.update(segmentation_report(view, cfg))
    return samples, info


def segmentation_report(view: EpisodeView, cfg: EtcConfig) -> dict:
    """The episode's segmentation and its agreement with recorded gripper events / subtasks (if any)."""
    out: dict[str, Any] = {}
    if view.seg is None:
        return out
    out["segmentation"] = view.seg.to_dict()
    md = view.metadata
    if isinstance(md.get("gripper_events"), list):
        out["events_check"] = compare_events(view.seg.events, md["gripper_events"], cfg.event_tolerance)
    if isinstance(md.get("subtasks"), list) and md["subtasks"]:
        out["subtasks_check"] = compare_segments([s.to_dict() for s in view.seg.segments], md["subtasks"],
                                                 cfg.event_tolerance)
    return out


# ---------------------------------------------------------------------------------------------- dataset side
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


def _meta(reader, i: int) -> dict:
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


def load_view(reader, i: int, ds_ref: str, cfg: EtcConfig, ann: dict | None) -> EpisodeView:
    meta = _meta(reader, i)
    ep = load_episode(reader, i)
    eid = episode_id_of(meta, i)
    ep_ann = None
    if ann:
        from etc_training.etc.annotate import annotations_for

        ep_ann = annotations_for(ann, i, eid)
    return make_view(ep, i, ds_ref, meta=meta, annotations=ep_ann, seg_params=cfg.segment, episode_id=eid,
                     image_sizes=reader_image_sizes(reader))


_WORKER: dict[str, Any] = {}


def _worker_init(root: str, ds_ref: str, cfg_dict: dict, ann: dict | None) -> None:
    _WORKER["reader"] = open_dataset(root)
    _WORKER["cfg"] = from_dict(EtcConfig, cfg_dict)
    _WORKER["ds_ref"] = ds_ref
    _WORKER["ann"] = ann


def _worker_run(i: int):
    view = load_view(_WORKER["reader"], i, _WORKER["ds_ref"], _WORKER["cfg"], _WORKER["ann"])
    return episode_samples(view, _WORKER["cfg"])


def _is_reader(x) -> bool:
    return hasattr(x, "load_episode") and hasattr(x, "num_episodes")


def _episode_results(source, indices: list[int], ds_ref: str, cfg: EtcConfig, ann: dict | None,
                     progress: bool) -> Iterable[tuple[list[dict], dict]]:
    from tqdm import tqdm

    bar = tqdm(total=len(indices), desc="etc build", unit="ep", disable=not (progress and sys.stderr.isatty()))
    try:
        if cfg.workers <= 1 or len(indices) <= 1 or _is_reader(source):
            reader = source if _is_reader(source) else open_dataset(source)
            for i in indices:
                view = load_view(reader, i, ds_ref, cfg, ann)
                yield episode_samples(view, cfg)
                bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_worker_init,
                          initargs=(str(source), ds_ref, to_dict(cfg), ann)) as pool:
                for res in pool.imap(_worker_run, indices, chunksize=1):
                    yield res
                    bar.update(1)
    finally:
        bar.close()


def _episode_split(reader, i: int) -> str | None:
    m = _meta(reader, i)
    s = m.get("split")
    return str(s) if s is not None else None


def build_etc(episodes_dir, out_dir: str | Path, cfg: EtcConfig | dict | None = None, *,
              progress: bool = True, write_extras: bool = True) -> dict:
    """Build ETC records for every episode of `episodes_dir` (a dataset directory, or an object with
    num_episodes / episode_meta / load_episode such as a DatasetReader) into `out_dir`.
    Returns a summary dict (counts per split / category / subtype, samples per second, segmentation agreement,
    files written)."""
    if isinstance(cfg, dict):
        cfg = from_dict(EtcConfig, cfg)
    cfg = check_config(cfg or EtcConfig())
    out = Path(out_dir)
    if _is_reader(episodes_dir):
        reader, source = episodes_dir, episodes_dir
        root = getattr(reader, "root", None)
        ds_ref = dataset_ref(root, out, cfg.dataset_path) if root is not None else "memory"
        ds_abs = str(Path(root).resolve()) if root is not None else "memory"
    else:
        root = Path(episodes_dir)
        reader, source = open_dataset(root), root
        ds_ref, ds_abs = dataset_ref(root, out, cfg.dataset_path), str(root.resolve())
    n = int(reader.num_episodes)
    if n == 0:
        raise DatasetError(f"{episodes_dir}: the dataset has no episodes")
    indices = list(range(n))
    if cfg.splits:  # cheap pre-filter on the episode index; the episode's own split is checked again below
        indices = [i for i in indices if _episode_split(reader, i) in (None, *cfg.splits)]
    ann = None
    if cfg.annotations:
        from etc_training.etc.annotate import load_annotations

        ann = load_annotations(cfg.annotations)
        cfg = dataclasses.replace(cfg, annotations=str(Path(cfg.annotations).resolve()))
    t0 = time.perf_counter()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    infos: list[dict] = []
    for samples, info in _episode_results(source, indices, ds_ref, cfg, ann, progress):
        if cfg.splits and info["split"] not in cfg.splits:
            continue
        infos.append(info)
        for s in samples:
            groups[(s["split"], s["category"])].append(s)
    gen_s = time.perf_counter() - t0
    summary = write_samples(out, groups, infos, cfg, ds_ref, ds_abs)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["generate_seconds"] = round(gen_s, 3)
    summary["samples_per_s"] = round(summary["n_samples"] / max(gen_s, 1e-9), 1)
    if write_extras:
        from etc_training.etc.stats import write_stats

        summary["stats"] = [str(p) for p in write_stats(out)]
        if cfg.overlays > 0 and summary["n_samples"]:
            from etc_training.etc.overlay import write_overlays

            summary["overlays"] = [str(p) for p in write_overlays(
                out, out / "overlays", cfg.overlays, seed=cfg.seed, reader=reader)]
    idx = json.loads((out / "index.json").read_text())
    idx["summary"] = {k: v for k, v in summary.items() if k not in ("files",)}
    atomic_write_json(out / "index.json", idx)
    return summary


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


__all__ = ["build_etc", "episode_samples", "load_samples", "iter_samples", "load_index", "EtcConfig",
           "CalibrationError"]
