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
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from etc_ros.core.errors import DatasetError
from etc_ros.core.io import atomic_write, fsync_dir
from etc_ros.data import codec, stats as stats_mod
from etc_ros.data.schema import (
    ACTION, CODEBASE_VERSION, EE_POSE, EPISODE_INDEX, FORMAT_NAME, FORMAT_VERSION, FRAME_INDEX, INDEX,
    INFO_PATH, LOCK_NAME, OBJECTS, ROWS_PER_GROUP, SPLIT_RE, STATE, STATS_PATH, TASK_INDEX, TASKS_PATH,
    TIMESTAMP, TIMESTAMP_NS, DATA_PATH, EPISODES_PATH, VIDEO_PATH, DatasetSpec, EpisodeData, as_vector,
    cameras_to_json, check_depth, check_gripper, check_image, check_info, chunk_file, data_arrow_schema,
    data_relpath, depth_key, episode_arrow_schema, episodes_relpath, image_key, image_struct_type, stats_to_json,
    lerobot_stats_columns, metadata_errors, object_errors, read_json_file, to_json, video_relpath,
)

log = logging.getLogger(__name__)

try:  # advisory lock against two writers on one dataset (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _commit_file(tmp: Path, final: Path) -> None:
    _fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _tmp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


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


# ------------------------------------------------------------------------------------- derived meta files
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


def _write(path: Path, writer, durable: bool) -> None:
    """Atomic replace of `path`; with durable=False no fsync (survives a process kill, not a power cut)."""
    if durable:
        atomic_write(path, writer)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
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
    _write(root / TASKS_PATH, lambda p: pq.write_table(table, p), durable)


def write_stats(root: Path, stats: Mapping[str, Mapping[str, np.ndarray]], durable: bool = True) -> None:
    text = json.dumps(stats_mod.to_jsonable(stats), indent=2) + "\n"
    _write(root / STATS_PATH, lambda p: p.write_text(text, encoding="utf-8"), durable)


# --------------------------------------------------------------------------------------------- recorder
class EpisodeRecorder:
    """One episode being recorded. Get it from `DatasetWriter.begin_episode`; call `add_frame` per frame,
    then `finalize(success)` (atomic commit) or `discard()`."""

    def __init__(self, writer: "DatasetWriter", episode_index: int, from_index: int, instruction: str,
                 task_index: int, split: str, cameras_json: str | None, metadata: dict,
                 start_time_ns: int | None) -> None:
        self._w = writer
        self.spec = writer.spec
        self.episode_index = episode_index
        self.from_index = from_index
        self.instruction = instruction
        self.task_index = task_index
        self.split = split
        self.cameras_json = cameras_json
        self.metadata = metadata
        self._t0_ns = start_time_ns
        self._n = 0
        self._last_ts: float | None = None
        self._last_ns: int | None = None
        self._numeric: dict[str, list] = {STATE: [], EE_POSE: [], ACTION: [], TIMESTAMP: [], TIMESTAMP_NS: []}
        self._pending: dict[str, list] = {}
        self._img_stats = {image_key(c): stats_mod.ImageStats(3) for c in self.spec.cameras}
        self._img_stats.update({depth_key(c): stats_mod.ImageStats(1, scale=1.0) for c in self.spec.depth_cameras})
        self._done = False
        root = writer.root
        self._data_final = root / data_relpath(episode_index, self.spec.chunks_size)
        self._data_final.parent.mkdir(parents=True, exist_ok=True)
        self._data_tmp = _tmp_path(self._data_final)
        self._pq_writer = None
        self._schema = data_arrow_schema(self.spec, episode_index)
        self._videos: dict[str, tuple[codec.VideoEncoder, Path, Path]] = {}
        if self.spec.video:
            for cam, (h, w) in self.spec.cameras.items():
                final = root / video_relpath(cam, episode_index, self.spec.chunks_size)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = _tmp_path(final)
                self._videos[cam] = (codec.VideoEncoder(tmp, w, h, self.spec.fps, self.spec.video_codec), tmp, final)

    def __len__(self) -> int:
        return self._n

    @property
    def active(self) -> bool:
        return not self._done

    def _check_open(self) -> None:
        if self._done:
            raise DatasetError(f"episode {self.episode_index} was already finalized or discarded")

    # ---------------------------------------------------------------------------------------- frames
    def add_frame(self, images: Mapping[str, np.ndarray], state: Any, ee_pose: Any, action: Any, timestamp: float,
                  timestamp_ns: int | None = None, objects: list | None = None,
                  depth: Mapping[str, np.ndarray] | None = None) -> int:
        """Validate and append one frame; returns its frame index. A rejected frame changes nothing."""
        self._check_open()
        spec = self.spec
        where = f"episode {self.episode_index} frame {self._n}"
        if not isinstance(images, Mapping):
            raise DatasetError(f"{where}: images must be a dict {{camera: uint8 HxWx3}}, got {type(images).__name__}")
        missing = [c for c in spec.cameras if c not in images]
        extra = [c for c in images if c not in spec.cameras]
        if missing or extra:
            raise DatasetError(f"{where}: images for cameras {sorted(images)}; the dataset has {list(spec.cameras)}"
                               + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else ""))
        imgs = {c: check_image(images[c], spec.cameras[c], c, where) for c in spec.cameras}
        dcams = spec.depth_cameras
        deps: dict[str, np.ndarray] = {}
        if dcams:
            if not isinstance(depth, Mapping):
                raise DatasetError(f"{where}: this dataset stores depth for cameras {list(dcams)}: pass "
                                   "depth={camera: uint16 HxW millimetres}")
            missing = [c for c in dcams if c not in depth]
            extra = [c for c in depth if c not in dcams]
            if missing or extra:
                raise DatasetError(f"{where}: depth for cameras {sorted(depth)}; the dataset stores depth for "
                                   f"{list(dcams)}")
            deps = {c: check_depth(depth[c], spec.cameras[c], c, where) for c in dcams}
        elif depth:
            raise DatasetError(f"{where}: depth given but the dataset spec has depth=False")
        s = as_vector(state, 7, "state", where)
        e = as_vector(ee_pose, 6, "ee_pose", where)
        a = as_vector(action, 7, "action", where)
        check_gripper(s[6], "state", where)
        check_gripper(a[6], "action", where)
        try:
            ts = float(timestamp)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: timestamp must be a number of seconds, got {timestamp!r}") from None
        if not np.isfinite(ts) or ts < 0:
            raise DatasetError(f"{where}: timestamp must be finite and >= 0 s from the episode start, got {ts}")
        if self._last_ts is not None and not np.float32(ts) > np.float32(self._last_ts):
            raise DatasetError(f"{where}: timestamp {ts} is not after the previous frame's {self._last_ts}")
        if timestamp_ns is None:
            if self._t0_ns is None:
                self._t0_ns = time.time_ns()
            ns = self._t0_ns + int(round(ts * 1e9))
        else:
            if isinstance(timestamp_ns, (bool, np.bool_)) or not isinstance(timestamp_ns, (int, np.integer)):
                raise DatasetError(f"{where}: timestamp_ns must be an int (ns since the epoch), got "
                                   f"{type(timestamp_ns).__name__}")
            ns = int(timestamp_ns)
            if ns <= 0:
                raise DatasetError(f"{where}: timestamp_ns must be > 0 (absolute capture time); pass None to use "
                                   "a synthetic clock")
            if self._t0_ns is None:
                self._t0_ns = ns - int(round(ts * 1e9))
        if self._last_ns is not None and ns <= self._last_ns:
            raise DatasetError(f"{where}: timestamp_ns {ns} is not after the previous frame's {self._last_ns}")
        objs = [] if objects is None else objects
        errs = object_errors(objs, list(spec.cameras))
        if errs:
            raise DatasetError(f"{where}: annotations.objects: " + "; ".join(errs[:5]))
        try:
            objs_json = to_json(objs)
        except (TypeError, ValueError) as ex:
            raise DatasetError(f"{where}: annotations.objects is not JSON serialisable: {ex}") from None

        # accepted: encode and append
        p = self._pending
        if spec.video:
            for c, img in imgs.items():
                self._videos[c][0].add(img)
        else:
            for c, img in imgs.items():
                p.setdefault(image_key(c), []).append(codec.encode_png(img, self._w.png_level))
        for c, d in deps.items():
            p.setdefault(depth_key(c), []).append(codec.encode_png(d, self._w.png_level))
        for c, img in imgs.items():
            self._img_stats[image_key(c)].add(img)
        for c, d in deps.items():
            self._img_stats[depth_key(c)].add(d[..., None])
        p.setdefault(OBJECTS, []).append(objs_json)
        num = self._numeric
        num[STATE].append(s)
        num[EE_POSE].append(e)
        num[ACTION].append(a)
        num[TIMESTAMP].append(np.float32(ts))
        num[TIMESTAMP_NS].append(ns)
        self._last_ts, self._last_ns = ts, ns
        self._n += 1
        if len(p[OBJECTS]) >= ROWS_PER_GROUP:
            self._flush()
        return self._n - 1

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = self._pending
        k = len(p.get(OBJECTS, []))
        if k == 0:
            return
        start = self._n - k
        cols: dict[str, Any] = {}
        st = image_struct_type()
        for f in self._schema:
            name = f.name
            if f.type == st:
                cols[name] = pa.StructArray.from_arrays(
                    [pa.array(p[name], pa.binary()), pa.nulls(k, pa.string())], fields=list(st))
            elif name in (STATE, EE_POSE, ACTION):
                flat = np.stack(self._numeric[name][start:]).astype(np.float32).reshape(-1)
                cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), f.type.list_size)
            elif name == TIMESTAMP:
                cols[name] = pa.array(np.asarray(self._numeric[TIMESTAMP][start:], dtype=np.float32))
            elif name == TIMESTAMP_NS:
                cols[name] = pa.array(np.asarray(self._numeric[TIMESTAMP_NS][start:], dtype=np.int64))
            elif name == FRAME_INDEX:
                cols[name] = pa.array(np.arange(start, self._n, dtype=np.int64))
            elif name == EPISODE_INDEX:
                cols[name] = pa.array(np.full(k, self.episode_index, dtype=np.int64))
            elif name == INDEX:
                cols[name] = pa.array(np.arange(self.from_index + start, self.from_index + self._n, dtype=np.int64))
            elif name == TASK_INDEX:
                cols[name] = pa.array(np.full(k, self.task_index, dtype=np.int64))
            elif name == OBJECTS:
                cols[name] = pa.array(p[OBJECTS], pa.string())
            else:  # pragma: no cover - schema and writer out of sync
                raise AssertionError(name)
        table = pa.Table.from_arrays([cols[f.name] for f in self._schema], schema=self._schema)
        if self._pq_writer is None:
            blobs = [f.name for f in self._schema if f.type == st]
            self._pq_writer = pq.ParquetWriter(
                str(self._data_tmp), self._schema, use_dictionary=False,
                write_statistics=[f.name for f in self._schema if f.name not in blobs])
        self._pq_writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        self._pending = {}

    # ------------------------------------------------------------------------------------------ commit
    def finalize(self, success: bool | None = None) -> int:
        """Commit the episode atomically; returns its episode index."""
        self._check_open()
        if success is not None and not isinstance(success, (bool, np.bool_)):
            raise DatasetError(f"episode {self.episode_index}: success must be True, False or None, got {success!r}")
        if self._n == 0:
            raise DatasetError(f"episode {self.episode_index}: cannot finalize an episode without frames "
                               "(add frames or discard() it)")
        errs = metadata_errors(self.metadata, self._n)
        if errs:
            raise DatasetError(f"episode {self.episode_index}: " + "; ".join(errs))
        self._flush()
        self._pq_writer.close()
        self._pq_writer = None
        # 1. frames (and videos) into place
        _commit_file(self._data_tmp, self._data_final)
        for enc, tmp, final in self._videos.values():
            enc.close()
            _commit_file(tmp, final)
        # 2. statistics of this episode
        T = self._n
        arrays = {STATE: np.stack(self._numeric[STATE]), EE_POSE: np.stack(self._numeric[EE_POSE]),
                  ACTION: np.stack(self._numeric[ACTION]),
                  TIMESTAMP: np.asarray(self._numeric[TIMESTAMP], dtype=np.float32)}
        all_arrays = dict(arrays)
        all_arrays.update(index_arrays(self.episode_index, self.from_index, self.task_index, T))
        ep_stats = stats_mod.numeric_episode_stats(all_arrays)
        ep_stats.update({k: a.result() for k, a in self._img_stats.items()})
        # 3. the episode's meta/episodes file: the commit point
        row = self._episode_row(success, ep_stats)
        self._w._commit_episode(self, row, ep_stats, arrays)
        self._done = True
        return self.episode_index

    def _episode_row(self, success: bool | None, ep_stats: dict) -> dict:
        spec = self.spec
        c, f = chunk_file(self.episode_index, spec.chunks_size)
        row: dict[str, Any] = {
            "episode_index": self.episode_index, "tasks": [self.instruction], "length": self._n,
            "instruction": self.instruction, "split": self.split,
            "success": None if success is None else bool(success), "cameras": self.cameras_json,
            "metadata": to_json(self.metadata), "task_index": self.task_index,
            "data/chunk_index": c, "data/file_index": f,
            "dataset_from_index": self.from_index, "dataset_to_index": self.from_index + self._n,
        }
        if spec.video:
            for cam in spec.cameras:
                k = image_key(cam)
                row.update({f"videos/{k}/chunk_index": c, f"videos/{k}/file_index": f,
                            f"videos/{k}/from_timestamp": 0.0, f"videos/{k}/to_timestamp": self._n / spec.fps})
        row.update({"meta/episodes/chunk_index": c, "meta/episodes/file_index": f, "stats": stats_to_json(ep_stats)})
        row.update(lerobot_stats_columns(ep_stats))
        return row

    def discard(self) -> None:
        """Drop the episode: its temp files are deleted and nothing is committed."""
        if self._done:
            return
        self._done = True
        if self._pq_writer is not None:
            try:
                self._pq_writer.close()
            except Exception:  # noqa: BLE001
                pass
            self._pq_writer = None
        self._data_tmp.unlink(missing_ok=True)
        for enc, tmp, _ in self._videos.values():
            enc.abort()
            tmp.unlink(missing_ok=True)
        self._w._active_ref = None


def index_arrays(episode_index: int, from_index: int, task_index: int, length: int) -> dict[str, np.ndarray]:
    return {FRAME_INDEX: np.arange(length, dtype=np.int64),
            EPISODE_INDEX: np.full(length, episode_index, dtype=np.int64),
            INDEX: np.arange(from_index, from_index + length, dtype=np.int64),
            TASK_INDEX: np.full(length, task_index, dtype=np.int64)}


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
        # weak: a dropped recorder (never finalized) must not keep the writer and its lock alive
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
        from etc_ros.data.reader import (episode_stats_from_row, read_episode_row, read_numeric_columns, read_tasks,
                                         scan_episode_files)

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
    def _active(self) -> EpisodeRecorder | None:
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
                      ) -> EpisodeRecorder:
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
        rec = EpisodeRecorder(self, idx, self.num_frames, instruction, task_index, split, cams, meta,
                              None if start_time_ns is None else int(start_time_ns))
        self._active_ref = weakref.ref(rec)
        return rec

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
        rec = self.begin_episode(ep.instruction, split=ep.split, cameras=ep.cameras, metadata=ep.metadata)
        try:
            for t in range(T):
                rec.add_frame(images={c: v[t] for c, v in images.items()}, state=state[t], ee_pose=ee[t],
                              action=act[t], timestamp=ts[t], timestamp_ns=None if ns is None else ns[t],
                              objects=None if objs is None else list(objs[t]),
                              depth=None if depth is None else {c: v[t] for c, v in depth.items()})
            return rec.finalize(ep.success)
        except BaseException:
            rec.discard()
            raise

    def _commit_episode(self, rec: EpisodeRecorder, row: dict, ep_stats: dict, arrays: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = episode_arrow_schema(self.spec, rec.episode_index, ep_stats)
        table = pa.Table.from_pylist([row], schema=schema)
        atomic_write(self.root / episodes_relpath(rec.episode_index, self.spec.chunks_size),
                     lambda p: pq.write_table(table, p, compression="NONE", write_statistics=False))
        # committed: update the in-memory view and the derived files
        self._add_committed(row, ep_stats, arrays)
        self._active_ref = None
        self._write_derived(durable=False)

    def _write_derived(self, durable: bool = True) -> None:
        """Rewrite tasks.parquet, stats.json and info.json (each temp + rename: never torn by a crash).
        durable=False skips the fsyncs (after each episode: they are rebuildable); create/close are durable."""
        write_tasks(self.root, self._tasks, durable)
        write_stats(self.root, self._stats.result(), durable)
        info = build_info(self.spec, self.num_episodes, self.num_frames, len(self._tasks), self._splits)
        _write(self.root / INFO_PATH, lambda p: p.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"),
               durable)
        self._dirty = not durable


_TOKEN = object()
