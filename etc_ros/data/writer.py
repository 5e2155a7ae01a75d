"""Writing episode datasets, one atomically committed episode at a time (see docs/dataset.md).

    w = DatasetWriter.create(root, DatasetSpec(fps=5.0, cameras={"primary": (224, 224)}))
    ep = w.begin_episode(instruction="put the cube in the bowl", cameras={"primary": cam}, metadata={...})
    ep.add_frame(images={"primary": rgb}, state=q7, ee_pose=p6, action=a7, timestamp=t)
    idx = ep.finalize(success=True)

Commit protocol of an episode: frames stream into a hidden temp file next to their final place (row groups of
ROWS_PER_GROUP frames, so a long teleop episode never sits in memory); on finalize the data file (and the mp4
files in video mode) are fsynced and renamed into place, then the episode's meta/episodes file is written to a
temp file, fsynced and renamed: that rename is the commit point. Afterwards meta/info.json, meta/tasks.parquet
and meta/stats.json are rewritten atomically; they are derived from the committed episodes (`repair` rebuilds
them). A crash at any moment leaves the finished episodes intact; leftovers are hidden `*.tmp` files (ignored by
the reader, reported by validate, removed by repair) or an orphan data file without its episodes file (ignored,
overwritten by the next episode, quarantined by repair).

The jobs are split: this module holds DatasetWriter (one writer per dataset: the lock, create / open, the task
table, starting episodes, the commit point and the in-memory view of the committed episodes);
etc_ros.data.episode the EpisodeWriter (frame validation, streaming rows and videos, per-episode statistics,
moving the files into place); etc_ros.data.meta the derived meta files (info.json, tasks.parquet, stats.json).
"""
from __future__ import annotations

import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from etc_ros.core.errors import DatasetError
from etc_ros.core.io import atomic_write
from etc_ros.data import codec
from etc_ros.data import stats as stats_mod
from etc_ros.data.episode import EpisodeWriter
from etc_ros.data.meta import write_info, write_stats, write_tasks
from etc_ros.data.schema import (
    FORMAT_NAME,
    INFO_PATH,
    LOCK_NAME,
    SPLIT_RE,
    DatasetSpec,
    EpisodeData,
    cameras_to_json,
    check_info,
    data_relpath,
    episode_arrow_schema,
    episodes_relpath,
    metadata_errors,
    read_json_file,
    to_json,
)

log = logging.getLogger(__name__)

try:  # advisory lock against two writers on one dataset (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _is_our_dataset(root: Path) -> bool:
    p = root / INFO_PATH
    if not p.is_file():
        return False
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(info, dict) and isinstance(info.get("etc_ros"), dict) \
        and info["etc_ros"].get("format") == FORMAT_NAME


# ----------------------------------------------------------------------------------------------- writer
class DatasetWriter:
    """Appends episodes to a dataset. One writer per dataset at a time (advisory lock file `.writer.lock`),
    one episode in progress per writer."""

    def __init__(self, root: Path, spec: DatasetSpec, *, png_level: int = codec.PNG_LEVEL,
                 _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("use DatasetWriter.create(root, spec) or DatasetWriter.open(root)")
        self.root = Path(root)
        self.spec = spec
        self.png_level = int(png_level)
        self._lock_fd: int | None = None
        # weak: a dropped EpisodeWriter (never finalized) must not keep the writer and its lock alive
        self._active_ref: weakref.ref | None = None
        self._lengths: list[int] = []
        self._splits: list[str] = []
        self._stats = stats_mod.StatsAccumulator()
        self._dirty = False  # derived files written without fsync since the last durable write
        self._tasks: dict[int, str] = {}
        self._task_of: dict[str, int] = {}

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def create(cls, root: str | Path, spec: DatasetSpec, *, png_level: int = codec.PNG_LEVEL) -> "DatasetWriter":
        """New dataset at `root` (created; must be empty or absent). An existing etc_ros dataset with the
        same spec is opened for appending; anything else non-empty is refused."""
        root = Path(root)
        if not isinstance(spec, DatasetSpec):
            raise DatasetError(f"spec must be a DatasetSpec, got {type(spec).__name__}")
        if root.exists() and not root.is_dir():
            raise DatasetError(f"{root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            if not _is_our_dataset(root):
                raise DatasetError(f"{root} is not empty and does not hold an etc_ros dataset "
                                   f"(no {INFO_PATH} of ours); refusing to write there")
            w = cls.open(root, png_level=png_level)
            diff = w.spec.same_as(spec)
            if diff:
                w.close()
                raise DatasetError(f"{root} holds a dataset with a different spec: " + "; ".join(diff))
            return w
        if spec.video:
            codec.encoder_name(spec.video_codec)  # fail early when the codec is missing
        root.mkdir(parents=True, exist_ok=True)
        w = cls(root, spec, png_level=png_level, _token=_TOKEN)
        w._acquire_lock()
        (root / "data").mkdir(exist_ok=True)
        (root / "meta" / "episodes").mkdir(parents=True, exist_ok=True)
        w._write_derived()
        return w

    @classmethod
    def open(cls, root: str | Path, *, png_level: int = codec.PNG_LEVEL) -> "DatasetWriter":
        """Append to an existing dataset (spec read from meta/info.json)."""
        from etc_ros.data.reader import (
            episode_stats_from_row,
            read_episode_row,
            read_numeric_columns,
            read_tasks,
            scan_episode_files,
        )

        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: no such dataset directory")
        info = read_json_file(root / INFO_PATH, "meta/info.json")
        spec = check_info(info, str(root / INFO_PATH))
        w = cls(root, spec, png_level=png_level, _token=_TOKEN)
        w._acquire_lock()
        try:
            files = scan_episode_files(root, spec)
            n = (max(files) + 1) if files else 0
            rows = []
            for i in range(n):
                if i not in files:
                    raise DatasetError(f"{root}: episode {i} has no {episodes_relpath(i, spec.chunks_size)}; "
                                       "run `etc-vla data repair` before appending")
                rows.append(read_episode_row(files[i], i, spec))
            try:
                w._tasks.update(read_tasks(root))
            except DatasetError as e:
                log.warning("%s (rebuilt from the episodes)", e)
            from etc_ros.data.validate import _progress

            for i, row in _progress(enumerate(rows), "open dataset", len(rows)):
                try:
                    arrays = read_numeric_columns(root / data_relpath(i, spec.chunks_size), i, int(row["length"]))
                except DatasetError as e:
                    log.warning("%s: quantiles in stats.json fall back to per-episode averages", e)
                    arrays = None
                w._add_committed(row, episode_stats_from_row(row), arrays)
        except BaseException:
            w.close()
            raise
        return w

    def _add_committed(self, row: dict, ep_stats: dict, arrays: dict | None) -> None:
        ti, instr = int(row["task_index"]), row["instruction"]
        if self._tasks.get(ti, instr) != instr:
            log.warning("task_index %d is %r in tasks.parquet but %r in episode %d: the episode wins",
                        ti, self._tasks[ti], instr, row["episode_index"])
        self._tasks[ti] = instr
        self._task_of = {v: k for k, v in sorted(self._tasks.items(), reverse=True)}
        self._lengths.append(int(row["length"]))
        self._splits.append(row["split"])
        self._stats.add(ep_stats, arrays)

    def _acquire_lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(str(self.root / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DatasetError(f"{self.root} is being written by another DatasetWriter (lock {LOCK_NAME}); "
                               "close it first") from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the dataset. An episode still in progress is discarded."""
        active = self._active
        if active is not None and active.active:
            log.warning("episode %d was not finalized: discarded", active.episode_index)
            active.discard()
        if self._lock_fd is not None and getattr(self, "_dirty", False):
            self._write_derived(durable=True)
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # release the lock when dropped (never finalizes anything)
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            self._lock_fd = None

    # ---------------------------------------------------------------------------------------- episodes
    @property
    def _active(self) -> EpisodeWriter | None:
        return None if self._active_ref is None else self._active_ref()

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_frames(self) -> int:
        return int(sum(self._lengths))

    @property
    def tasks(self) -> dict[int, str]:
        return dict(self._tasks)

    def begin_episode(self, instruction: str, split: str = "train", cameras: Mapping[str, Any] | None = None,
                      metadata: Mapping[str, Any] | None = None, *, start_time_ns: int | None = None
                      ) -> EpisodeWriter:
        """Start recording an episode. `cameras`: {name: CameraModel} calibration of the stored images
        (intrinsics at the stored size); `metadata`: free JSON (see docs/dataset.md for the documented keys);
        `start_time_ns`: absolute time of timestamp 0 (default: the first frame's timestamp_ns, else now)."""
        if self._lock_fd is None and fcntl is not None:
            raise DatasetError(f"{self.root}: this DatasetWriter is closed")
        active = self._active
        if active is not None and active.active:
            raise DatasetError(f"episode {active.episode_index} is still being recorded: finalize() or "
                               "discard() it first")
        if not isinstance(instruction, str) or not instruction.strip():
            raise DatasetError(f"instruction must be a non-empty string, got {instruction!r}")
        instruction = instruction.strip()
        if not isinstance(split, str) or not SPLIT_RE.match(split):
            raise DatasetError(f"split must be a name like 'train', 'val' or 'test', got {split!r}")
        meta = {} if metadata is None else metadata
        if not isinstance(meta, Mapping):
            raise DatasetError(f"metadata must be a dict, got {type(meta).__name__}")
        errs = metadata_errors(meta)
        if errs:
            raise DatasetError("; ".join(errs))
        try:
            meta = json.loads(to_json(dict(meta)))
        except (TypeError, ValueError) as e:
            raise DatasetError(f"metadata is not JSON serialisable: {e}") from None
        idx = self.num_episodes
        cams = cameras_to_json(cameras, self.spec, f"episode {idx}")
        if start_time_ns is not None and int(start_time_ns) <= 0:
            raise DatasetError(f"start_time_ns must be > 0, got {start_time_ns}")
        task_index = self._task_of.get(instruction)
        if task_index is None:
            task_index = (max(self._tasks) + 1) if self._tasks else 0
        episode = EpisodeWriter(self.root, self.spec, self.png_level, idx, self.num_frames, instruction, task_index,
                                split, cams, meta, None if start_time_ns is None else int(start_time_ns),
                                commit=self._commit_episode, release=self._release_episode)
        self._active_ref = weakref.ref(episode)
        return episode

    def write_episode(self, ep: EpisodeData) -> int:
        """Write a whole in-memory episode (validated frame by frame); returns its episode index."""
        if not isinstance(ep, EpisodeData):
            raise DatasetError(f"write_episode needs an EpisodeData, got {type(ep).__name__}")
        T = len(ep)
        where = f"EpisodeData ({ep.instruction!r})"
        if T == 0:
            raise DatasetError(f"{where}: no frames")

        def per_frame(name: str, a: Any, dims: int | None) -> np.ndarray:
            arr = np.asarray(a)
            if arr.ndim == 0 or arr.shape[0] != T:
                raise DatasetError(f"{where}: {name} has {arr.shape[0] if arr.ndim else 0} frames, state has {T}")
            if dims is not None and arr.ndim != dims:
                raise DatasetError(f"{where}: {name} must have {dims} dimensions, got shape {arr.shape}")
            return arr

        if not isinstance(ep.images, Mapping):
            raise DatasetError(f"{where}: images must be a dict {{camera: (T, H, W, 3) uint8}}")
        images = {c: per_frame(f"images[{c!r}]", v, 4) for c, v in ep.images.items()}
        depth = None if not ep.depth else {c: per_frame(f"depth[{c!r}]", v, None) for c, v in ep.depth.items()}
        state = per_frame("state", ep.state, 2)
        ee = per_frame("ee_pose", ep.ee_pose, 2)
        act = per_frame("action", ep.action, 2)
        ts = per_frame("timestamp", ep.timestamp, 1)
        ns = None if ep.timestamp_ns is None else per_frame("timestamp_ns", ep.timestamp_ns, 1)
        objs = ep.objects
        if objs is not None and (not isinstance(objs, (list, tuple)) or len(objs) != T):
            raise DatasetError(f"{where}: objects must be a list with one list per frame ({T})")
        out = self.begin_episode(ep.instruction, split=ep.split, cameras=ep.cameras, metadata=ep.metadata)
        try:
            for t in range(T):
                out.add_frame(images={c: v[t] for c, v in images.items()}, state=state[t], ee_pose=ee[t],
                              action=act[t], timestamp=ts[t], timestamp_ns=None if ns is None else ns[t],
                              objects=None if objs is None else list(objs[t]),
                              depth=None if depth is None else {c: v[t] for c, v in depth.items()})
            return out.finalize(ep.success)
        except BaseException:
            out.discard()
            raise

    def _commit_episode(self, episode: EpisodeWriter, row: dict, ep_stats: dict, arrays: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = episode_arrow_schema(self.spec, episode.episode_index, ep_stats)
        table = pa.Table.from_pylist([row], schema=schema)
        atomic_write(self.root / episodes_relpath(episode.episode_index, self.spec.chunks_size),
                     lambda p: pq.write_table(table, p, compression="NONE", write_statistics=False))
        # committed: update the in-memory view and the derived files
        self._add_committed(row, ep_stats, arrays)
        self._active_ref = None
        self._write_derived(durable=False)

    def _release_episode(self) -> None:
        """The episode in progress was discarded: none is active any more."""
        self._active_ref = None

    def _write_derived(self, durable: bool = True) -> None:
        """Rewrite tasks.parquet, stats.json and info.json (each temp + rename: never torn by a crash).
        durable=False skips the fsyncs (after each episode: they are rebuildable); create/close are durable."""
        write_tasks(self.root, self._tasks, durable)
        write_stats(self.root, self._stats.result(), durable)
        write_info(self.root, self.spec, self.num_episodes, self.num_frames, len(self._tasks), self._splits, durable)
        self._dirty = not durable


_TOKEN = object()
