"""`repair`: bring a dataset back to a valid state after crashes or damaged files.

1. hidden *.tmp leftovers of interrupted writes are deleted;
2. orphan data / video files (an episode whose meta/episodes file was never committed) and broken episodes
   (unreadable or truncated data/video files) are moved to quarantine/<time>/ (never deleted); an episode whose
   meta/episodes file is damaged but whose data is whole keeps its frames: its row is rebuilt from the data file
   (instruction from its task_index in the old tasks.parquet, split from info.json's ranges; success, cameras and
   metadata are lost and say so), the damaged file goes to quarantine;
3. the remaining episodes are renumbered so that indices stay contiguous (their data and meta files are
   rewritten only when their index or global frame range changes);
4. meta/info.json, meta/tasks.parquet and meta/stats.json are rebuilt from the committed episodes.
A missing or unreadable meta/info.json is rebuilt from the spec stored in every data file's parquet metadata.
Run it with no writer open on the dataset (it takes the writer lock).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from etc_ros.core.errors import DatasetError
from etc_ros.core.io import atomic_write, atomic_write_json
from etc_ros.data import codec
from etc_ros.data import stats as stats_mod
from etc_ros.data.reader import (
    _arrow_errors,
    episode_stats_from_row,
    read_episode_row,
    read_numeric_columns,
    read_tasks,
    scan_episode_files,
)
from etc_ros.data.schema import (
    DEPTH_PREFIX,
    EPISODE_INDEX,
    IMAGE_PREFIX,
    INDEX,
    INFO_PATH,
    ROWS_PER_GROUP,
    TASK_INDEX,
    DatasetSpec,
    check_info,
    chunk_file,
    data_arrow_schema,
    data_relpath,
    episode_arrow_schema,
    episodes_relpath,
    image_key,
    lerobot_stats_columns,
    read_json_file,
    stats_to_json,
    to_json,
    video_relpath,
)
from etc_ros.data.validate import _progress, leftover_files


def _spec_from_parquet(root: Path) -> DatasetSpec | None:
    import pyarrow.parquet as pq

    for top in ("data", "meta/episodes"):
        base = root / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("file-*.parquet")):
            try:
                md = pq.read_schema(str(p)).metadata or {}
                ours = json.loads(md[b"etc_ros"].decode())
                return DatasetSpec.from_dict(ours["spec"])
            except (KeyError, ValueError, DatasetError) + _arrow_errors():
                continue
    return None


def _intact(root: Path, spec: DatasetSpec, i: int, row: dict, deep: bool) -> str | None:
    """None when the episode's files are whole, else the reason."""
    import pyarrow.parquet as pq

    path = root / data_relpath(i, spec.chunks_size)
    try:
        t = pq.ParquetFile(str(path)).read()
    except FileNotFoundError:
        return f"data file {path} is missing"
    except _arrow_errors() as e:
        return f"cannot read {path} ({type(e).__name__}: {e})"
    if t.num_rows != row["length"]:
        return f"{path} has {t.num_rows} frames, episode length is {row['length']}"
    try:
        if np.any(t.column(EPISODE_INDEX).to_numpy() != i):
            return f"{path}: episode_index column is not {i}"
    except _arrow_errors() as e:
        return f"{path}: bad episode_index column ({e})"
    if deep:
        for name in t.column_names:
            if name.startswith((IMAGE_PREFIX, DEPTH_PREFIX)):
                for fr, b in enumerate(t.column(name).combine_chunks().field("bytes").to_pylist()):
                    try:
                        codec.decode_png(b or b"", f"{path} frame {fr} {name}",
                                         depth=name.startswith(DEPTH_PREFIX))
                    except DatasetError as e:
                        return str(e)
    if spec.video:
        for cam in spec.cameras:
            vp = root / video_relpath(cam, i, spec.chunks_size)
            try:
                n = codec.video_frame_count(vp, f"episode {i}")
            except DatasetError as e:
                return str(e)
            if n != row["length"]:
                return f"{vp} has {n} frames, episode length is {row['length']}"
    return None


def _conform_data(root: Path, spec: DatasetSpec, i: int) -> tuple[str | None, str | None]:
    """Episode i's data file against the schema: (why it is unusable, None) when a required column is missing or
    has a type that cannot be cast back without loss; (None, what was done) when columns of another type were cast
    back losslessly (the file is rewritten); (None, None) when it already fits."""
    import pyarrow.parquet as pq

    path = root / data_relpath(i, spec.chunks_size)
    want = data_arrow_schema(spec, i)
    try:
        t = pq.ParquetFile(str(path)).read()
    except _arrow_errors() as e:
        return f"cannot read {path} ({type(e).__name__}: {e})", None
    missing = [f.name for f in want if f.name not in t.column_names]
    if missing:
        return f"{path} lacks columns {missing}", None
    changed = []
    for f in want:
        col = t.column(f.name)
        if col.type.equals(f.type):
            continue
        try:
            new = col.cast(f.type)
            same = new.cast(col.type).equals(col)
        except _arrow_errors() as e:
            return f"{path}: column {f.name!r} has type {col.type}, expected {f.type} ({type(e).__name__}: {e})", None
        if not same:
            return f"{path}: column {f.name!r} has type {col.type}, expected {f.type} (not castable without loss)", None
        t = t.set_column(t.column_names.index(f.name), f.name, new)
        changed.append(f"{f.name} {col.type} -> {f.type}")
    if not changed:
        return None, None
    t = t.replace_schema_metadata(t.schema.metadata or want.metadata)
    atomic_write(path, lambda p: pq.write_table(t, p, row_group_size=ROWS_PER_GROUP, use_dictionary=False))
    return None, f"episode {i}: {path.relative_to(root)}: column types cast back to the schema ({', '.join(changed)})"


REBUILT_NOTE = ("meta/episodes row rebuilt by repair from the data file (the row was damaged): success, cameras and "
                "metadata were lost")


def _split_of(info: dict | None, i: int) -> str:
    """The split info.json's ranges ("a:b" or "a:b,c:d") give episode i; 'train' when none does."""
    splits = info.get("splits") if isinstance(info, dict) else None
    for name, ranges in (splits if isinstance(splits, dict) else {}).items():
        for r in str(ranges).split(","):
            try:
                a, b = (int(x) for x in r.split(":"))
            except ValueError:
                continue
            if a <= i < b:
                return str(name)
    return "train"


def _row_from_data(root: Path, spec: DatasetSpec, i: int, tasks: dict[int, str] | None, info: dict | None,
                   deep: bool) -> tuple[dict | None, str]:
    """Rebuild episode i's meta/episodes row from its data file (whole, one task_index whose instruction the old
    tasks.parquet knows). Returns (row in read_episode_row's form, '') or (None, why not)."""
    import pyarrow.parquet as pq

    path = root / data_relpath(i, spec.chunks_size)
    try:
        t = pq.ParquetFile(str(path)).read(columns=[EPISODE_INDEX, INDEX, TASK_INDEX])
    except FileNotFoundError:
        return None, f"data file {path} is missing"
    except _arrow_errors() as e:
        return None, f"cannot read {path} ({type(e).__name__}: {e})"
    T = t.num_rows
    if T < 1:
        return None, f"{path} holds no frames"
    ti = set(t.column(TASK_INDEX).to_pylist())
    if len(ti) != 1:
        return None, f"{path}: task_index is not one value ({sorted(ti)[:5]})"
    ti_old = int(ti.pop())
    if not tasks or ti_old not in tasks:
        return None, f"the instruction of task_index {ti_old} is not in the old meta/tasks.parquet"
    c, f = chunk_file(i, spec.chunks_size)
    row: dict = {"episode_index": i, "tasks": [tasks[ti_old]], "length": T, "instruction": tasks[ti_old],
                 "split": _split_of(info, i), "success": None, "cameras": None, "metadata": {"repair": REBUILT_NOTE},
                 "task_index": ti_old, "data/chunk_index": c, "data/file_index": f,
                 "dataset_from_index": int(t.column(INDEX)[0].as_py()), "meta/episodes/chunk_index": c,
                 "meta/episodes/file_index": f}
    row["dataset_to_index"] = row["dataset_from_index"] + T
    if spec.video:
        for cam in spec.cameras:
            k = image_key(cam)
            row.update({f"videos/{k}/chunk_index": c, f"videos/{k}/file_index": f,
                        f"videos/{k}/from_timestamp": 0.0, f"videos/{k}/to_timestamp": T / spec.fps})
    why = _intact(root, spec, i, row, deep)
    if why is not None:
        return None, why
    # the episode's statistics, as the writer computes them
    try:
        arrays = read_numeric_columns(path, i, T)
        ep_stats = stats_mod.numeric_episode_stats(arrays)
        full = pq.ParquetFile(str(path)).read()
        for name in full.column_names:
            if name.startswith(IMAGE_PREFIX) or name.startswith(DEPTH_PREFIX):
                depth = name.startswith(DEPTH_PREFIX)
                acc = stats_mod.ImageStats(1, scale=1.0) if depth else stats_mod.ImageStats(3)
                for fr, b in enumerate(full.column(name).combine_chunks().field("bytes").to_pylist()):
                    img = codec.decode_png(b or b"", f"{path} frame {fr} {name}", depth=depth)
                    acc.add(img[..., None] if depth else img)
                ep_stats[name] = acc.result()
        if spec.video:
            for cam in spec.cameras:
                acc = stats_mod.ImageStats(3)
                for img in codec.decode_video(root / video_relpath(cam, i, spec.chunks_size), spec.fps,
                                              f"episode {i}", expected=T):
                    acc.add(img)
                ep_stats[image_key(cam)] = acc.result()
    except DatasetError as e:
        return None, str(e)
    row["stats"] = stats_to_json(ep_stats)  # index / task columns are recomputed by _renumber or _write_row
    return row, ""


def _write_row(root: Path, spec: DatasetSpec, row: dict) -> None:
    """Write a row in read_episode_row's form (metadata dict, cameras models) as episode row['episode_index']'s
    meta/episodes file, with its statistics (index columns recomputed) in both forms."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from etc_ros.data.episode import index_arrays

    i, T = int(row["episode_index"]), int(row["length"])
    ep_stats = episode_stats_from_row(row, spec)
    ep_stats.update(stats_mod.numeric_episode_stats(
        {k: v for k, v in index_arrays(i, int(row["dataset_from_index"]), int(row["task_index"]), T).items()
         if k in (EPISODE_INDEX, INDEX, TASK_INDEX)}))
    row = dict(row)
    row["stats"] = stats_to_json(ep_stats)
    row.update(lerobot_stats_columns(ep_stats))
    row["metadata"] = to_json(row["metadata"])
    cams = row["cameras"]
    row["cameras"] = None if cams is None else to_json({k: v.to_dict() for k, v in cams.items()})
    schema = episode_arrow_schema(spec, i, ep_stats)
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema}], schema=schema)
    atomic_write(root / episodes_relpath(i, spec.chunks_size), lambda p: pq.write_table(table, p))


def _quarantine(root: Path, qdir: Path, paths: list[Path], actions: list[str], why: str) -> None:
    for p in paths:
        if not p.exists():
            continue
        dst = qdir / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p), str(dst))
        actions.append(f"moved {p.relative_to(root)} to {dst.relative_to(root)} ({why})")


def _renumber(root: Path, spec: DatasetSpec, old: int, new: int, new_from: int, row: dict,
              task_index: int | None = None) -> None:
    """Move episode `old` to index `new` starting at global frame `new_from`, with task `task_index` (default: its
    own; rewrites data + meta)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    T = int(row["length"])
    ti = int(row["task_index"]) if task_index is None else int(task_index)
    src = root / data_relpath(old, spec.chunks_size)
    dst = root / data_relpath(new, spec.chunks_size)
    t = pq.ParquetFile(str(src)).read()
    md = dict(t.schema.metadata or {})
    if b"etc_ros" in md:
        ours = json.loads(md[b"etc_ros"].decode())
        ours["episode_index"] = new
        md[b"etc_ros"] = json.dumps(ours).encode()
    t = t.set_column(t.column_names.index(EPISODE_INDEX), EPISODE_INDEX, pa.array(np.full(T, new, np.int64)))
    t = t.set_column(t.column_names.index(INDEX), INDEX, pa.array(np.arange(new_from, new_from + T, dtype=np.int64)))
    t = t.set_column(t.column_names.index(TASK_INDEX), TASK_INDEX, pa.array(np.full(T, ti, np.int64)))
    t = t.replace_schema_metadata(md)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, lambda p: pq.write_table(t, p, row_group_size=8, use_dictionary=False))
    if spec.video:
        for cam in spec.cameras:
            vs, vd = root / video_relpath(cam, old, spec.chunks_size), root / video_relpath(cam, new, spec.chunks_size)
            vd.parent.mkdir(parents=True, exist_ok=True)
            os.replace(vs, vd)
    c, f = chunk_file(new, spec.chunks_size)
    row = dict(row)
    row.update({"episode_index": new, "task_index": ti, "dataset_from_index": new_from,
                "dataset_to_index": new_from + T, "data/chunk_index": c, "data/file_index": f,
                "meta/episodes/chunk_index": c, "meta/episodes/file_index": f})
    if spec.video:
        for cam in spec.cameras:
            k = image_key(cam)
            row.update({f"videos/{k}/chunk_index": c, f"videos/{k}/file_index": f})
    _write_row(root, spec, row)
    if new != old:
        (root / episodes_relpath(old, spec.chunks_size)).unlink(missing_ok=True)
        src.unlink(missing_ok=True)


def repair_dataset(root: str | Path, *, deep: bool = False) -> list[str]:
    """Repair the dataset at `root` in place; returns the list of actions taken (empty when nothing to do
    besides rewriting the derived files). deep=True also decodes every PNG to find damaged images."""
    from etc_ros.data.meta import build_info, write_tasks
    from etc_ros.data.writer import DatasetWriter

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    actions: list[str] = []
    try:
        spec = check_info(read_json_file(root / INFO_PATH, "meta/info.json"), str(root / INFO_PATH))
    except DatasetError as e:
        spec = _spec_from_parquet(root)
        if spec is None:
            raise DatasetError(f"cannot repair {root}: {e}, and no data file carries the dataset spec") from None
        atomic_write_json(root / INFO_PATH, build_info(spec, 0, 0, 0, []))
        actions.append(f"rebuilt {INFO_PATH} from the spec stored in the parquet files ({e})")
    # hold the writer lock during the surgery
    probe = DatasetWriter(root, spec, _token=_token())
    probe._acquire_lock()
    try:
        files = scan_episode_files(root, spec)
        temps, orphans, _ = leftover_files(root, spec, set(files))
        for p in temps:
            p.unlink(missing_ok=True)
            actions.append(f"removed temp file {p.relative_to(root)}")
        qdir = root / "quarantine" / time.strftime("%Y%m%d-%H%M%S")
        try:  # the instructions of episodes whose row must be rebuilt (read before tasks.parquet is rewritten)
            old_tasks = read_tasks(root)
        except DatasetError:
            old_tasks = None
        try:
            old_info = read_json_file(root / INFO_PATH, "meta/info.json")
        except DatasetError:
            old_info = None
        # a data file below the last committed episode without its meta/episodes file: the writer commits episodes
        # in order, so the meta file was lost, not never written. Keep the frames: rebuild the row from the data.
        for i in [i for i in range(max(files, default=-1)) if i not in files]:
            dpath = root / data_relpath(i, spec.chunks_size)
            if dpath not in orphans:
                continue
            rebuilt, no = _row_from_data(root, spec, i, old_tasks, old_info, deep)
            if rebuilt is None:
                continue  # quarantined with the orphans below
            _write_row(root, spec, rebuilt)
            files[i] = root / episodes_relpath(i, spec.chunks_size)
            keep = {dpath} | ({root / video_relpath(c, i, spec.chunks_size) for c in spec.cameras} if spec.video
                              else set())
            orphans = [p for p in orphans if p not in keep]
            actions.append(f"episode {i}: missing meta/episodes row rebuilt from its data file (instruction "
                           f"{rebuilt['instruction']!r}, split {rebuilt['split']!r}; success, cameras and metadata "
                           "lost)")
        _quarantine(root, qdir, orphans, actions, "orphan: its episode was never committed")
        good: list[tuple[int, dict]] = []
        for i in _progress(sorted(files), "repair", len(files)):
            try:
                row = read_episode_row(files[i], i, spec)
            except DatasetError as e:  # the row is damaged: keep the frames when the data file is whole
                rebuilt, no = _row_from_data(root, spec, i, old_tasks, old_info, deep)
                if rebuilt is not None:
                    why, done = _conform_data(root, spec, i)
                    if why is not None:
                        _quarantine(root, qdir, [files[i], root / data_relpath(i, spec.chunks_size)]
                                    + ([root / video_relpath(c, i, spec.chunks_size) for c in spec.cameras]
                                       if spec.video else []), actions, f"broken episode {i}: {e}; {why}")
                        continue
                    if done:
                        actions.append(done)
                    _quarantine(root, qdir, [files[i]], actions, f"damaged episode row {i}: {e}")
                    _write_row(root, spec, rebuilt)
                    actions.append(f"episode {i}: meta/episodes row rebuilt from its data file (instruction "
                                   f"{rebuilt['instruction']!r}, split {rebuilt['split']!r}; success, cameras and "
                                   "metadata lost)")
                    good.append((i, rebuilt))
                    continue
                why = f"{e}; its row cannot be rebuilt: {no}"
            else:
                why = _intact(root, spec, i, row, deep)
            if why is None:
                why, done = _conform_data(root, spec, i)
                if done:
                    actions.append(done)
            if why is None:
                good.append((i, row))
                continue
            paths = [files[i], root / data_relpath(i, spec.chunks_size)]
            paths += [root / video_relpath(c, i, spec.chunks_size) for c in spec.cameras] if spec.video else []
            _quarantine(root, qdir, paths, actions, f"broken episode {i}: {why}")
        # task indices stay contiguous (LeRobot looks a task up by its position in tasks.parquet): the surviving
        # tasks keep their order and close the gaps a dropped episode's task left
        task_map = {o: n for n, o in enumerate(sorted({int(row["task_index"]) for _, row in good}))}
        start = 0
        for new, (old, row) in enumerate(good):
            ti_old = int(row["task_index"])
            ti = task_map[ti_old]
            if new != old or row["dataset_from_index"] != start or ti != ti_old:
                _renumber(root, spec, old, new, start, row, task_index=ti)
                actions.append(f"episode {old} renumbered to {new} (frames {start}..{start + row['length'] - 1}"
                               + (f", task {ti_old} -> {ti}" if ti != ti_old else "") + ")")
            row["task_index"] = ti
            start += int(row["length"])
        # the task table is derived from the surviving episodes only
        write_tasks(root, {int(row["task_index"]): row["instruction"] for _, row in good})
    finally:
        probe.close()
    w = DatasetWriter.open(root)
    try:
        w._write_derived()
    finally:
        w.close()
    return actions


def _token():
    from etc_ros.data import writer

    return writer._TOKEN
