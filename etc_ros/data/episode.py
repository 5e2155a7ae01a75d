"""One episode being recorded: frame validation, streaming into the data file, images, statistics, commit.

    ep = writer.begin_episode(instruction="put the cube in the bowl", cameras={"primary": cam})  # DatasetWriter
    ep.add_frame(images={"primary": rgb}, state=q7, ee_pose=p6, action=a7, timestamp=t)
    idx = ep.finalize(success=True)

Frames are validated one at a time (a rejected frame changes nothing) and stream into a hidden temp file next to
their final place, ROWS_PER_GROUP frames per parquet row group, so a long teleop episode never sits in memory; RGB
goes into the rows as PNG (etc_ros.data.codec) or, in video mode, into one mp4 per camera. `finalize` fsyncs and
renames the data (and video) files into place, computes the episode's statistics and hands its meta/episodes row
to the DatasetWriter, whose write of that file is the commit point (see etc_ros.data.writer).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from etc_ros.core.errors import DatasetError
from etc_ros.core.io import fsync_dir
from etc_ros.data import codec
from etc_ros.data import stats as stats_mod
from etc_ros.data.schema import (
    ACTION,
    EE_POSE,
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    OBJECTS,
    ROWS_PER_GROUP,
    STATE,
    TASK_INDEX,
    TIMESTAMP,
    TIMESTAMP_NS,
    DatasetSpec,
    as_vector,
    check_depth,
    check_gripper,
    check_image,
    chunk_file,
    data_arrow_schema,
    data_relpath,
    depth_key,
    image_key,
    image_struct_type,
    lerobot_stats_columns,
    metadata_errors,
    object_errors,
    stats_to_json,
    temp_path,
    to_json,
    video_relpath,
)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _commit_file(tmp: Path, final: Path) -> None:
    _fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def index_arrays(episode_index: int, from_index: int, task_index: int, length: int) -> dict[str, np.ndarray]:
    return {FRAME_INDEX: np.arange(length, dtype=np.int64),
            EPISODE_INDEX: np.full(length, episode_index, dtype=np.int64),
            INDEX: np.arange(from_index, from_index + length, dtype=np.int64),
            TASK_INDEX: np.full(length, task_index, dtype=np.int64)}


# ------------------------------------------------------------------------------------------- frame checks
def _check_images(spec: DatasetSpec, images: Any, depth: Any, where: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(RGB per camera, depth per depth camera) of one frame, checked against the spec."""
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
    return imgs, deps


def _check_vectors(state: Any, ee_pose: Any, action: Any, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state (7,), ee_pose (6,), action (7,)) with the grippers of state and action in range."""
    s = as_vector(state, 7, "state", where)
    e = as_vector(ee_pose, 6, "ee_pose", where)
    a = as_vector(action, 7, "action", where)
    check_gripper(s[6], "state", where)
    check_gripper(a[6], "action", where)
    return s, e, a


def _check_objects(objects: list | None, cameras: list[str], where: str) -> str:
    """The frame's annotations.objects as the JSON stored in the row."""
    objs = [] if objects is None else objects
    errs = object_errors(objs, cameras)
    if errs:
        raise DatasetError(f"{where}: annotations.objects: " + "; ".join(errs[:5]))
    try:
        return to_json(objs)
    except (TypeError, ValueError) as ex:
        raise DatasetError(f"{where}: annotations.objects is not JSON serialisable: {ex}") from None


# ----------------------------------------------------------------------------------------------- writer
class EpisodeWriter:
    """One episode being recorded. Get it from `DatasetWriter.begin_episode`; call `add_frame` per frame,
    then `finalize(success)` (atomic commit) or `discard()`.

    The writer passes `commit(episode, row, ep_stats, arrays)`, which writes the episode's meta/episodes file
    (the commit point) and updates the dataset's derived files, and `release()`, called when the episode is
    discarded."""

    def __init__(self, root: Path, spec: DatasetSpec, png_level: int, episode_index: int, from_index: int,
                 instruction: str, task_index: int, split: str, cameras_json: str | None, metadata: dict,
                 start_time_ns: int | None, *, commit: Callable[[EpisodeWriter, dict, dict, dict], None],
                 release: Callable[[], None]) -> None:
        self._commit = commit
        self._release = release
        self.png_level = png_level
        self.spec = spec
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
        self._data_final = root / data_relpath(episode_index, self.spec.chunks_size)
        self._data_final.parent.mkdir(parents=True, exist_ok=True)
        self._data_tmp = temp_path(self._data_final)
        self._pq_writer = None
        self._schema = data_arrow_schema(self.spec, episode_index)
        self._videos: dict[str, tuple[codec.VideoEncoder, Path, Path]] = {}
        if self.spec.video:
            for cam, (h, w) in self.spec.cameras.items():
                final = root / video_relpath(cam, episode_index, self.spec.chunks_size)
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_path(final)
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
        where = f"episode {self.episode_index} frame {self._n}"
        imgs, deps = _check_images(self.spec, images, depth, where)
        s, e, a = _check_vectors(state, ee_pose, action, where)
        ts, ns = self._check_time(timestamp, timestamp_ns, where)
        objs_json = _check_objects(objects, list(self.spec.cameras), where)
        self._append(imgs, deps, s, e, a, ts, ns, objs_json)
        return self._n - 1

    def _check_time(self, timestamp: Any, timestamp_ns: Any, where: str) -> tuple[float, int]:
        """(seconds from the episode start, absolute ns): both strictly after the previous frame's. The first
        frame fixes the episode's start time when begin_episode got none (timestamp_ns - timestamp, else now)."""
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
        return ts, ns

    def _append(self, imgs: dict[str, np.ndarray], deps: dict[str, np.ndarray], s: np.ndarray, e: np.ndarray,
                a: np.ndarray, ts: float, ns: int, objs_json: str) -> None:
        """An accepted frame: encode its images, update the image statistics, buffer the row (flushed every
        ROWS_PER_GROUP frames)."""
        p = self._pending
        if self.spec.video:
            for c, img in imgs.items():
                self._videos[c][0].add(img)
        else:
            for c, img in imgs.items():
                p.setdefault(image_key(c), []).append(codec.encode_png(img, self.png_level))
        for c, d in deps.items():
            p.setdefault(depth_key(c), []).append(codec.encode_png(d, self.png_level))
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
        self._commit(self, row, ep_stats, arrays)
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
        self._release()


__all__ = ["EpisodeWriter", "index_arrays"]
