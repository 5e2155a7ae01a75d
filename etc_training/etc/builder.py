"""ETC builder: episodes (etc_ros.data format) -> ETC sample records (JSONL per split and category + index).

    summary = build_etc("runs/sim_episodes", "runs/etc", EtcConfig())

Output layout (see docs/etc.md):
    out/index.json                         format, config, dataset, convention, counts, files
    out/samples/<split>/<category>.jsonl   one record per line
    out/segments.jsonl                     per-episode segmentation + checks against recorded metadata
    out/stats.json, out/stats.md           statistics per category / subtype (stats.py)
    out/overlays/*.png                     points, boxes, trajectories drawn on frames (overlay.py)
Reading the source dataset and writing / reading the ETC directory live in store.py.
Images are referenced ({episode, episode_id, frame, camera, dataset}), never copied.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from etc_ros.core.config import from_dict, to_dict
from etc_ros.core.errors import CalibrationError, DatasetError, UserError
from etc_ros.core.io import atomic_write_json
from etc_training.etc.config import ALL_SUBTYPES, EtcConfig
from etc_training.etc.episode import EpisodeView, make_view
from etc_training.etc.generators import GENERATORS, NEEDS_CALIBRATION
from etc_training.etc.mixture import SUBTYPE_CATEGORY
from etc_training.etc.segment import compare_events, compare_segments
from etc_training.etc.store import (
    dataset_ref,
    episode_id_of,
    episode_meta,
    load_episode,
    open_dataset,
    reader_image_sizes,
    write_samples,
)

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


def load_view(reader, i: int, ds_ref: str, cfg: EtcConfig, ann: dict | None) -> EpisodeView:
    meta = episode_meta(reader, i)
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
    m = episode_meta(reader, i)
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


__all__ = ["build_etc", "episode_samples", "EtcConfig", "CalibrationError"]
