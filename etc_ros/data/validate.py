"""Dataset validation: every schema error, each naming the file / episode / column / frame.

    errors = validate_dataset(root)                 # [] when the dataset is valid
    report = validate_report(root)                  # .errors, .warnings (crash leftovers, stale derived files)

Errors make the dataset unusable as documented (broken / truncated files, wrong columns or dtypes, NaN, bad
indices, bad annotations...). Warnings are harmless leftovers the reader ignores (hidden *.tmp files of an
interrupted episode, orphan data files without their meta/episodes file) and derived files (info.json totals,
tasks.parquet, stats.json) that are stale; `etc-vla data repair` fixes all warnings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etc_ros.core.errors import DatasetError
from etc_ros.data import codec
from etc_ros.data.reader import _arrow_errors, _vec, read_episode_row, scan_episode_files
from etc_ros.data.schema import (
    ACTION,
    EE_POSE,
    EPISODE_INDEX,
    FRAME_INDEX,
    GRIPPER_TOL,
    IMAGE_PREFIX,
    INDEX,
    INFO_PATH,
    OBJECTS,
    SPLIT_RE,
    STATE,
    STATS_PATH,
    TASK_INDEX,
    TASKS_PATH,
    TIMESTAMP,
    TIMESTAMP_NS,
    VECTOR_COLUMNS,
    VIDEO_PATH,
    DatasetSpec,
    check_info,
    chunk_file,
    data_arrow_schema,
    data_relpath,
    depth_key,
    image_key,
    is_temp_name,
    metadata_errors,
    object_errors,
    parse_chunk_file,
    read_json_file,
    stats_from_json,
    video_relpath,
)

MAX_PER_EPISODE = 10  # messages per episode before "... and N more"


class _Broken(str):
    """An error meaning the episode's files are unusable (repair quarantines such episodes)."""


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    num_episodes: int = 0
    num_frames: int = 0
    broken_episodes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_dataset(root: str | Path, *, deep: bool = True, warnings: list[str] | None = None) -> list[str]:
    """All schema errors of the dataset at `root` ([] = valid). Pass a list as `warnings` to receive the
    warnings too. deep=False skips decoding every image (structure and numbers are still checked)."""
    rep = validate_report(root, deep=deep)
    if warnings is not None:
        warnings.extend(rep.warnings)
    return rep.errors


def leftover_files(root: Path, spec: DatasetSpec, committed: set[int]) -> tuple[list[Path], list[Path], list[Path]]:
    """(temp files, orphan data/video files without a committed episode, unexpected files) under data/, meta/
    and videos/."""
    temps: list[Path] = []
    orphans: list[Path] = []
    odd: list[Path] = []
    for top in ("data", "meta", "videos"):
        base = root / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if not p.is_file():
                continue
            if is_temp_name(p.name):
                temps.append(p)
                continue
            rel = p.relative_to(root).as_posix()
            if top == "meta":
                if rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet"):
                    continue
                parts = rel.split("/")
                if len(parts) == 4 and parts[1] == "episodes" and parse_chunk_file("/".join(parts[2:])):
                    continue
                odd.append(p)
                continue
            parts = rel.split("/")
            cf = parse_chunk_file("/".join(parts[-2:])) if len(parts) >= 3 else None
            ok_shape = (top == "data" and len(parts) == 3 and p.suffix == ".parquet") or \
                       (top == "videos" and len(parts) == 4 and p.suffix == ".mp4"
                        and parts[1].startswith(IMAGE_PREFIX)
                        and parts[1][len(IMAGE_PREFIX):] in spec.cameras and spec.video)
            if cf is None or not ok_shape or cf[1] >= spec.chunks_size:
                odd.append(p)
                continue
            idx = cf[0] * spec.chunks_size + cf[1]
            if idx not in committed:
                orphans.append(p)
    return temps, orphans, odd


def validate_report(root: str | Path, *, deep: bool = True) -> ValidationReport:
    root = Path(root)
    rep = ValidationReport()
    if not root.is_dir():
        rep.errors.append(f"{root}: no such dataset directory")
        return rep
    try:
        info = read_json_file(root / INFO_PATH, "meta/info.json")
        spec = check_info(info, str(root / INFO_PATH))
    except DatasetError as e:
        rep.errors.append(str(e))
        return rep
    ipath = root / INFO_PATH
    want = spec.features()
    feats = info.get("features")
    if not isinstance(feats, dict):
        rep.errors.append(f"{ipath}: 'features' must be a dict")
    else:
        for k, v in want.items():
            if k not in feats:
                rep.errors.append(f"{ipath}: features lack {k!r}")
            elif any(feats[k].get(a) != v.get(a) for a in ("dtype", "shape")):
                rep.errors.append(f"{ipath}: feature {k!r} has dtype/shape {feats[k].get('dtype')}/"
                                  f"{feats[k].get('shape')}, expected {v['dtype']}/{v['shape']}")
        for k in feats:
            if k not in want:
                rep.errors.append(f"{ipath}: unexpected feature {k!r}")
    for k, want_v in (("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"),):
        if info.get(k) != want_v:
            rep.errors.append(f"{ipath}: {k} must be {want_v!r}, got {info.get(k)!r}")
    # what LeRobot's reader (LeRobotDatasetMetadata / LeRobotDataset, v3.0) takes from info.json besides the above
    lerobot_keys = ["total_episodes", "total_frames", "total_tasks", "chunks_size", "splits"]
    if spec.video:
        lerobot_keys.append("video_path")
    missing = [k for k in lerobot_keys if k not in info]
    if missing:
        rep.errors.append(f"{ipath}: missing keys {missing} that LeRobot's reader uses (run `etc-vla data repair`)")
    if spec.video and "video_path" in info and info["video_path"] != VIDEO_PATH:
        rep.errors.append(f"{ipath}: video_path must be {VIDEO_PATH!r}, got {info['video_path']!r}")

    files = scan_episode_files(root, spec)
    n = (max(files) + 1) if files else 0
    rep.num_episodes = n
    rows: dict[int, dict] = {}
    for i in range(n):
        if i not in files:
            from etc_ros.data.schema import episodes_relpath

            rep.errors.append(f"episode {i}: {root / episodes_relpath(i, spec.chunks_size)} is missing "
                              "(episode indices must be contiguous)")
            rep.broken_episodes.append(i)
            continue
        try:
            rows[i] = read_episode_row(files[i], i, spec)
        except DatasetError as e:
            rep.errors.append(str(e))
            rep.broken_episodes.append(i)
    rep.num_frames = int(sum(r["length"] for r in rows.values()))

    temps, orphans, odd = leftover_files(root, spec, set(files))
    for p in temps:
        rep.warnings.append(f"{p}: leftover temp file of an interrupted write (ignored by the reader; "
                            "`etc-vla data repair` removes it)")
    for p in orphans:
        rep.warnings.append(f"{p}: orphan file of an uncommitted episode (ignored by the reader; "
                            "`etc-vla data repair` moves it to quarantine/)")
    for p in odd:
        rep.warnings.append(f"{p}: unexpected file in the dataset layout (ignored)")

    prev_to: int | None = None
    task_names: dict[int, str] = {}
    for i in _progress(range(n), "validate", n):
        if i not in rows:
            prev_to = None
            continue
        row = rows[i]
        msgs = _check_row(root, spec, i, row, files[i], prev_to, task_names)
        msgs += _check_data(root, spec, i, row, deep)
        if msgs:
            if any(isinstance(m, _Broken) for m in msgs):
                rep.broken_episodes.append(i)
            rep.errors.extend(msgs[:MAX_PER_EPISODE])
            if len(msgs) > MAX_PER_EPISODE:
                rep.errors.append(f"episode {i}: ... and {len(msgs) - MAX_PER_EPISODE} more errors")
        prev_to = row["dataset_to_index"]

    # derived files (rebuildable by repair). Our reader never relies on them, but LeRobot's does: it looks a
    # task up by its row position in tasks.parquet (pandas index = the task string) and takes len() and the
    # episode list from info.json's totals. Those are errors; a missing or stale stats.json is a warning.
    rep.errors += _check_tasks_file(root, task_names if rows and not rep.broken_episodes else None)
    if task_names and sorted(task_names) != list(range(len(task_names))):
        rep.errors.append(f"task indices {sorted(task_names)[:10]} are not contiguous 0..{len(task_names) - 1}: a "
                          "LeRobot reader looks a task up by its position in meta/tasks.parquet and would pair "
                          "episodes with other episodes' instructions (run `etc-vla data repair`)")
    if not rep.broken_episodes:
        exp = {"total_episodes": n, "total_frames": rep.num_frames, "total_tasks": len(task_names)}
        stale = {k: (info.get(k), v) for k, v in exp.items() if k in info and info.get(k) != v}
        if stale:
            rep.errors.append(f"{ipath}: totals are stale " + ", ".join(f"{k} {a} != {b}" for k, (a, b) in
                                                                        stale.items())
                              + " (LeRobot's reader takes its length and episodes from them; run "
                              "`etc-vla data repair`)")
    spath = root / STATS_PATH
    try:
        st = json.loads(spath.read_text(encoding="utf-8"))
        from etc_ros.data.stats import from_jsonable, nonfinite_entries, shape_errors

        if not isinstance(st, dict) or not all(isinstance(v, dict) for v in st.values()):
            raise AttributeError("not a mapping of feature -> {statistic: values}")
        miss = [k for k in (STATE, ACTION, EE_POSE) if n and k not in st]
        bad = nonfinite_entries(from_jsonable(st))
        shapes = shape_errors(from_jsonable(st))
        if bad:
            rep.errors.append(f"{spath}: non-finite statistics {bad[:6]}{' ...' if len(bad) > 6 else ''} (readers "
                              "would normalize with them; run `etc-vla data repair` to rebuild them)")
        elif shapes:
            rep.errors.append(f"{spath}: {'; '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''} (readers would "
                              "normalize with them; run `etc-vla data repair` to rebuild them)")
        elif miss:
            rep.warnings.append(f"{spath}: no statistics for {miss} (run `etc-vla data repair`)")
        elif n and not rep.broken_episodes and st[STATE].get("count") != [rep.num_frames]:
            rep.warnings.append(f"{spath}: statistics cover {st[STATE].get('count')} frames, the dataset has "
                                f"{rep.num_frames} (stale; run `etc-vla data repair`)")
        elif n and not rep.broken_episodes:
            rep.warnings += _stats_disagree(spath, st, rows)
    except FileNotFoundError:
        rep.warnings.append(f"{spath} is missing (run `etc-vla data repair`)")
    except (ValueError, AttributeError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError, bad layout
        rep.errors.append(f"{spath}: not readable statistics ({type(e).__name__}: {e}): LeRobot's reader loads it "
                          "whenever it exists (run `etc-vla data repair` to rebuild it)")
    rep.broken_episodes = sorted(set(rep.broken_episodes))
    return rep


def _check_tasks_file(root: Path, task_names: dict[int, str] | None) -> list[str]:
    """meta/tasks.parquet as LeRobot reads it (pandas.read_parquet, then tasks.iloc[task_index].name): readable,
    the task strings as the pandas index, task_index equal to the row position, and - when the episodes are all
    readable (task_names given) - the same index -> instruction mapping as the episodes."""
    import pyarrow.parquet as pq

    path = root / TASKS_PATH
    hint = " (LeRobot's reader looks tasks up there; run `etc-vla data repair`)"
    try:
        pf = pq.ParquetFile(str(path))
        t = pf.read(columns=["task_index", "task"]).to_pydict()
        md = pf.schema_arrow.metadata or {}
        missing = [c for c in ("task_index", "task") if c not in t]
        if missing:
            raise KeyError(f"no column(s) {missing}")
    except FileNotFoundError:
        return [f"{path} is missing{hint}"]
    except (KeyError,) + _arrow_errors() as e:
        return [f"{path}: cannot read columns task_index, task ({type(e).__name__}: {e}){hint}"]
    errs = []
    try:
        index_cols = json.loads(md[b"pandas"].decode()).get("index_columns")
    except (KeyError, ValueError, AttributeError):
        index_cols = None
    if index_cols != ["task"]:
        errs.append(f"{path}: the pandas index must be the 'task' column (index_columns ['task']), found "
                    f"{index_cols!r}: LeRobot would return row numbers instead of instructions{hint}")
    if t["task_index"] != list(range(len(t["task_index"]))):
        errs.append(f"{path}: task_index column {t['task_index'][:10]} is not the row position "
                    f"0..{len(t['task_index']) - 1}: LeRobot would pair frames with other rows' instructions{hint}")
    if task_names is not None and dict(zip(t["task_index"], t["task"])) != task_names:
        errs.append(f"{path}: does not match the episodes' tasks (stale){hint}")
    return errs


def _stats_disagree(spath: Path, st: dict, rows: dict[int, dict], tol: float = 1e-4) -> list[str]:
    """stats.json min / max of the state and action against the episodes' own statistics."""
    out = []
    eps = []
    for r in rows.values():
        try:
            eps.append(stats_from_json(r.get("stats")))
        except (ValueError, TypeError):
            return out  # reported per episode
    for k in (STATE, ACTION):
        for s, fn in (("min", np.min), ("max", np.max)):
            try:
                want = fn(np.stack([np.asarray(e[k][s], dtype=np.float64) for e in eps]), axis=0)
                got = np.asarray(st[k][s], dtype=np.float64)
            except (KeyError, ValueError, TypeError):
                continue
            if got.shape != want.shape or not np.allclose(got, want, atol=tol, rtol=tol):
                out.append(f"{spath}: {k}.{s} does not match the episodes' data (stale; run `etc-vla data repair`)")
    return out


def _check_row(root: Path, spec: DatasetSpec, i: int, row: dict, path: Path, prev_to: int | None,
               task_names: dict[int, str]) -> list[str]:
    where = f"episode {i}: {path}"
    errs: list[str] = []
    c, f = chunk_file(i, spec.chunks_size)
    for k, v in (("data/chunk_index", c), ("data/file_index", f), ("meta/episodes/chunk_index", c),
                 ("meta/episodes/file_index", f)):
        if row.get(k) != v:
            errs.append(f"{where}: {k} is {row.get(k)!r}, expected {v}")
    if prev_to is not None and row["dataset_from_index"] != prev_to:
        errs.append(f"{where}: dataset_from_index {row['dataset_from_index']} != previous episode's "
                    f"dataset_to_index {prev_to}")
    if i == 0 and row["dataset_from_index"] != 0:
        errs.append(f"{where}: dataset_from_index of episode 0 must be 0, got {row['dataset_from_index']}")
    if not SPLIT_RE.match(row["split"]):
        errs.append(f"{where}: split {row['split']!r} must match [A-Za-z0-9_-]+")
    if list(row["tasks"] or []) != [row["instruction"]]:
        errs.append(f"{where}: tasks {row['tasks']!r} must be [instruction] = [{row['instruction']!r}]")
    ti = row["task_index"]
    if task_names.get(ti, row["instruction"]) != row["instruction"]:
        errs.append(f"{where}: task_index {ti} is {row['instruction']!r} here but {task_names[ti]!r} in an "
                    "earlier episode")
    else:
        task_names[ti] = row["instruction"]
    errs += [f"{where}: {m}" for m in metadata_errors(row["metadata"], row["length"])]
    try:
        st = stats_from_json(row.get("stats"))
        if STATE not in st or int(st[STATE]["count"][0]) != row["length"]:
            errs.append(f"{where}: column 'stats' lacks statistics of {STATE} over the episode's "
                        f"{row['length']} frames")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        errs.append(f"{where}: column 'stats' is not valid statistics JSON ({e})")
    cams = row["cameras"]
    if cams is not None:
        for name, cam in cams.items():
            if name not in spec.cameras:
                errs.append(f"{where}: cameras has calibration for unknown camera {name!r}")
                continue
            h, w = spec.cameras[name]
            if (cam.intrinsics.width, cam.intrinsics.height) != (w, h):
                errs.append(f"{where}: camera {name!r} intrinsics are {cam.intrinsics.width}x{cam.intrinsics.height}, "
                            f"images are {w}x{h}")
    if spec.video:
        for cam in spec.cameras:
            k = image_key(cam)
            for col, v in ((f"videos/{k}/chunk_index", c), (f"videos/{k}/file_index", f)):
                if row.get(col) != v:
                    errs.append(f"{where}: {col} is {row.get(col)!r}, expected {v}")
    return errs


def _check_data(root: Path, spec: DatasetSpec, i: int, row: dict, deep: bool) -> list[str]:
    import pyarrow.parquet as pq

    path = root / data_relpath(i, spec.chunks_size)
    where = f"episode {i}: {path}"
    T = int(row["length"])
    try:
        pf = pq.ParquetFile(str(path))
        schema = pf.schema_arrow
    except FileNotFoundError:
        return [_Broken(f"{where}: data file is missing")]
    except _arrow_errors() as e:
        return [_Broken(f"{where}: cannot read data file ({type(e).__name__}: {e})")]
    errs: list[str] = []
    want = data_arrow_schema(spec)
    for fld in want:
        if fld.name not in schema.names:
            errs.append(f"{where}: column {fld.name!r} is missing")
        elif not schema.field(fld.name).type.equals(fld.type):
            errs.append(f"{where}: column {fld.name!r} has type {schema.field(fld.name).type}, expected {fld.type}")
    for name in schema.names:
        if name not in want.names:
            errs.append(f"{where}: unexpected column {name!r}")
    if errs:
        return errs
    if pf.metadata.num_rows != T:
        return [_Broken(f"{where}: has {pf.metadata.num_rows} frames, expected {T} (episode length)")]
    blobs = set(want.names) - {STATE, EE_POSE, ACTION, TIMESTAMP, TIMESTAMP_NS, FRAME_INDEX, EPISODE_INDEX,
                               INDEX, TASK_INDEX, OBJECTS}
    try:
        t = pf.read(columns=[c for c in want.names if deep or c not in blobs])
    except _arrow_errors() as e:
        return [_Broken(f"{where}: cannot read data file ({type(e).__name__}: {e})")]
    if t.num_rows != T:
        return [_Broken(f"{where}: has {t.num_rows} frames, expected {T} (episode length)")]
    try:
        vecs = {k: _vec(t.column(k), VECTOR_COLUMNS[k][0]) for k in VECTOR_COLUMNS}
    except (ValueError, TypeError) as e:
        return [f"{where}: vector columns hold nulls or bad values ({e})"]
    for k, a in vecs.items():
        bad = np.where(~np.all(np.isfinite(a), axis=1))[0]
        if len(bad):
            errs.append(f"{where}: column {k!r} has NaN/Inf at frames {bad[:5].tolist()}"
                        + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))
    for k in (STATE, ACTION):
        g = vecs[k][:, 6]
        bad = np.where(~((g >= -GRIPPER_TOL) & (g <= 1 + GRIPPER_TOL)))[0]
        if len(bad):
            errs.append(f"{where}: column {k!r} gripper outside [0, 1] at frames {bad[:5].tolist()}")
    cols = {}
    for k in (TIMESTAMP, TIMESTAMP_NS, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
        col = t.column(k)
        if col.null_count:
            errs.append(f"{where}: column {k!r} has nulls")
            return errs
        cols[k] = col.to_numpy()
    ts, ns = cols[TIMESTAMP].astype(np.float64), cols[TIMESTAMP_NS]
    if not np.all(np.isfinite(ts)) or np.any(ts < 0):
        errs.append(f"{where}: column 'timestamp' must be finite and >= 0")
    elif np.any(np.diff(ts) <= 0):
        errs.append(f"{where}: column 'timestamp' is not strictly increasing (frame "
                    f"{int(np.where(np.diff(ts) <= 0)[0][0]) + 1})")
    if np.any(ns <= 0):
        errs.append(f"{where}: column 'timestamp_ns' must be > 0 (absolute capture time), frame "
                    f"{int(np.where(ns <= 0)[0][0])}")
    elif np.any(np.diff(ns) <= 0):
        errs.append(f"{where}: column 'timestamp_ns' is not strictly increasing (frame "
                    f"{int(np.where(np.diff(ns) <= 0)[0][0]) + 1})")
    if not np.array_equal(cols[FRAME_INDEX], np.arange(T)):
        errs.append(f"{where}: column 'frame_index' must be 0..{T - 1}")
    if np.any(cols[EPISODE_INDEX] != i):
        errs.append(f"{where}: column 'episode_index' must be {i} on every frame")
    a, b = row["dataset_from_index"], row["dataset_to_index"]
    if not np.array_equal(cols[INDEX], np.arange(a, b)):
        errs.append(f"{where}: column 'index' must be {a}..{b - 1}")
    if np.any(cols[TASK_INDEX] != row["task_index"]):
        errs.append(f"{where}: column 'task_index' must be {row['task_index']} (the episode's task)")
    for fr, s in enumerate(t.column(OBJECTS).to_pylist()):
        if s is None:
            errs.append(f"{where}: frame {fr}: column 'annotations.objects' is null (use '[]')")
            continue
        try:
            objs = json.loads(s)
        except json.JSONDecodeError as e:
            errs.append(f"{where}: frame {fr}: column 'annotations.objects' is not JSON ({e})")
            continue
        for m in object_errors(objs, list(spec.cameras)):
            errs.append(f"{where}: frame {fr}: column 'annotations.objects': {m}")
    if deep:
        for cam in spec.cameras:
            if not spec.video:
                errs += _check_png_column(t.column(image_key(cam)), where, image_key(cam), spec.cameras[cam], False)
        for cam in spec.depth_cameras:
            errs += _check_png_column(t.column(depth_key(cam)), where, depth_key(cam), spec.cameras[cam], True)
    if spec.video:
        for cam in spec.cameras:
            vp = root / video_relpath(cam, i, spec.chunks_size)
            try:
                if deep:
                    fr = codec.decode_video(vp, spec.fps, f"episode {i}")
                    if fr.shape[1:] != (*spec.cameras[cam], 3):
                        errs.append(f"episode {i}: {vp}: frames are {fr.shape[1:]}, expected {(*spec.cameras[cam], 3)}")
                    cnt = len(fr)
                else:
                    cnt = codec.video_frame_count(vp, f"episode {i}")
                if cnt != T:
                    errs.append(_Broken(f"episode {i}: {vp}: has {cnt} frames, expected {T} (episode length)"))
            except DatasetError as e:
                errs.append(_Broken(str(e)))
    return errs


def _check_png_column(col, where: str, name: str, hw: tuple[int, int], depth: bool) -> list[str]:
    errs = []
    want = hw if depth else (*hw, 3)
    for fr, b in enumerate(col.combine_chunks().field("bytes").to_pylist()):
        if b is None:
            errs.append(f"{where}: frame {fr}: column {name!r} has no image bytes")
            continue
        try:
            img = codec.decode_png(b, f"{where}: frame {fr}: column {name!r}", depth=depth)
        except DatasetError as e:
            errs.append(str(e))
            continue
        if img.shape != want:
            errs.append(f"{where}: frame {fr}: column {name!r} decodes to shape {img.shape}, expected {want}")
    return errs


def _progress(it, desc: str, total: int):
    """tqdm bar for long loops (only on a TTY, only when there are many items)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, desc=desc, total=total, unit="ep", leave=False, disable=None if total >= 50 else True)
