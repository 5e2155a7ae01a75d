"""The derived meta files of a dataset: meta/info.json, meta/tasks.parquet, meta/stats.json.

They summarise the committed episodes (the meta/episodes files are the truth): DatasetWriter rewrites them after
every committed episode and `repair` rebuilds them. Each is replaced atomically (temp file + rename), so a crash
never leaves a torn one; `durable=False` skips the fsyncs (the file survives a process kill, not a power cut: fine
for files that can be rebuilt).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from etc_ros.core.io import atomic_write
from etc_ros.data import stats as stats_mod
from etc_ros.data.schema import (
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    DatasetSpec,
    temp_path,
)


def splits_summary(splits: Sequence[str]) -> dict[str, str]:
    """{split: "a:b"} (LeRobot style) or "a:b,c:d" when a split's episodes are not contiguous."""
    out: dict[str, list[list[int]]] = {}
    for i, s in enumerate(splits):
        if s is None:
            continue
        r = out.setdefault(s, [])
        if r and r[-1][1] == i:
            r[-1][1] = i + 1
        else:
            r.append([i, i + 1])
    return {s: ",".join(f"{a}:{b}" for a, b in r) for s, r in out.items()}


def build_info(spec: DatasetSpec, total_episodes: int, total_frames: int, total_tasks: int,
               splits: Sequence[str]) -> dict:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": spec.robot_type,
        "total_episodes": int(total_episodes),
        "total_frames": int(total_frames),
        "total_tasks": int(total_tasks),
        "chunks_size": spec.chunks_size,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": spec.fps,
        "splits": splits_summary(splits),
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if spec.video else None,
        "features": spec.features(),
        "etc_ros": {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "spec": spec.to_dict(),
            "episodes_path": EPISODES_PATH,
            "one_episode_per_file": True,
            "image_encoding": "mp4" if spec.video else "png",
            "coordinates": {"base_frame": "base_link", "ee_frame": "ee_gripper_link", "euler": "sxyz",
                            "camera_frame": "opencv", "object_quaternion": "wxyz"},
        },
    }


def replace_file(path: Path, writer: Callable[[Path], None], durable: bool = True) -> None:
    """Atomic replace of `path`; with durable=False no fsync (survives a process kill, not a power cut)."""
    if durable:
        atomic_write(path, writer)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_tasks(root: Path, tasks: Mapping[int, str], durable: bool = True) -> None:
    """meta/tasks.parquet: columns task_index, task (pandas metadata makes `task` the index, as LeRobot)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = sorted(tasks.items())
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    table = pa.table({"task_index": [k for k, _ in items], "task": [v for _, v in items]}, schema=schema)
    replace_file(root / TASKS_PATH, lambda p: pq.write_table(table, p), durable)


def write_stats(root: Path, stats: Mapping[str, Mapping[str, np.ndarray]], durable: bool = True) -> None:
    text = json.dumps(stats_mod.to_jsonable(stats), indent=2) + "\n"
    replace_file(root / STATS_PATH, lambda p: p.write_text(text, encoding="utf-8"), durable)


def write_info(root: Path, spec: DatasetSpec, total_episodes: int, total_frames: int, total_tasks: int,
               splits: Sequence[str], durable: bool = True) -> None:
    """meta/info.json (build_info)."""
    info = build_info(spec, total_episodes, total_frames, total_tasks, splits)
    replace_file(root / INFO_PATH, lambda p: p.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"),
                 durable)


__all__ = ["splits_summary", "build_info", "replace_file", "write_tasks", "write_stats", "write_info"]
