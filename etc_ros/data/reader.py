"""Reading episode datasets (numpy + pyarrow; PIL / PyAV for images).

    r = DatasetReader(root)
    ep = r.load_episode(0)          # EpisodeData, exact arrays
    f = r.frame(123)                # random access: one frame's row group, only its images decoded

Only committed episodes exist for the reader: episodes are the meta/episodes/chunk-XXX/file-YYY.parquet files;
hidden temp files and orphan data files (crash leftovers) are ignored. A broken episode (unreadable or truncated
file) does not stop the reader from opening: accessing that episode raises DatasetError naming the file.
"""
from __future__ import annotations

import bisect
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from etc_ros.core.errors import CalibrationError, DatasetError
from etc_ros.data import codec
from etc_ros.data.schema import (
    ACTION,
    DEPTH_PREFIX,
    EE_POSE,
    EP_REQUIRED,
    EPISODE_INDEX,
    FRAME_INDEX,
    IMAGE_PREFIX,
    INDEX,
    INFO_PATH,
    OBJECTS,
    STATE,
    STATS_PATH,
    TASK_INDEX,
    TASKS_PATH,
    TIMESTAMP,
    TIMESTAMP_NS,
    VECTOR_COLUMNS,
    DatasetSpec,
    EpisodeData,
    cameras_from_json,
    check_info,
    data_relpath,
    depth_key,
    episodes_relpath,
    image_key,
    parse_chunk_file,
    read_json_file,
    stats_from_json,
    video_relpath,
)

_ARROW_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, IndexError, TypeError)


def _arrow_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return _ARROW_ERRORS + (pa.ArrowException,)


# ------------------------------------------------------------------------------------------------ helpers
def scan_episode_files(root: Path, spec: DatasetSpec) -> dict[int, Path]:
    """Committed episode files: episode index -> meta/episodes path (temp files ignored)."""
    base = root / "meta" / "episodes"
    out: dict[int, Path] = {}
    if not base.is_dir():
        return out
    for chunk in sorted(base.iterdir()):
        if not chunk.is_dir():
            continue
        for f in sorted(chunk.iterdir()):
            cf = parse_chunk_file(f"{chunk.name}/{f.name}")
            if cf is None or not f.name.endswith(".parquet"):
                continue
            c, i = cf
            if i >= spec.chunks_size:
                continue
            out[c * spec.chunks_size + i] = f
    return out


def read_episode_row(path: Path, episode_index: int, spec: DatasetSpec) -> dict:
    """The one row of an episode's meta/episodes file, checked. DatasetError naming the file otherwise."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(str(path)).read()
    except _arrow_errors() as e:
        raise DatasetError(f"episode {episode_index}: cannot read {path} ({type(e).__name__}: {e})") from None
    if table.num_rows != 1:
        raise DatasetError(f"episode {episode_index}: {path} must hold exactly one row, has {table.num_rows}")
    missing = [c for c in EP_REQUIRED if c not in table.column_names]
    if missing:
        raise DatasetError(f"episode {episode_index}: {path} lacks columns {missing}")
    row = {k: v[0] for k, v in table.to_pydict().items()}
    if row["episode_index"] != episode_index:
        raise DatasetError(f"episode {episode_index}: {path} says episode_index {row['episode_index']}")
    for k in ("length", "task_index", "dataset_from_index", "dataset_to_index"):
        if not isinstance(row[k], int) or row[k] < 0:
            raise DatasetError(f"episode {episode_index}: {path}: {k} must be an int >= 0, got {row[k]!r}")
    if row["length"] < 1 or row["dataset_to_index"] - row["dataset_from_index"] != row["length"]:
        raise DatasetError(f"episode {episode_index}: {path}: length {row['length']} disagrees with "
                           f"dataset_from_index {row['dataset_from_index']} / to_index {row['dataset_to_index']}")
    if not isinstance(row["instruction"], str) or not row["instruction"]:
        raise DatasetError(f"episode {episode_index}: {path}: instruction must be a non-empty string")
    if not isinstance(row["split"], str) or not row["split"]:
        raise DatasetError(f"episode {episode_index}: {path}: split must be a non-empty string")
    try:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
    except (TypeError, json.JSONDecodeError) as e:
        raise DatasetError(f"episode {episode_index}: {path}: metadata is not JSON ({e})") from None
    try:
        row["cameras"] = cameras_from_json(row["cameras"])
    except (TypeError, ValueError, AttributeError, CalibrationError) as e:
        raise DatasetError(f"episode {episode_index}: {path}: bad cameras calibration ({e})") from None
    return row


def episode_stats_from_row(row: dict, spec: DatasetSpec | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per-episode statistics stored in the row's `stats` JSON column."""
    try:
        return stats_from_json(row.get("stats"))
    except (ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"episode {row.get('episode_index')}: bad stats column ({e})") from None


def read_tasks(root: Path) -> dict[int, str]:
    import pyarrow.parquet as pq

    path = root / TASKS_PATH
    try:
        t = pq.ParquetFile(str(path)).read(columns=["task_index", "task"]).to_pydict()
        return {int(i): str(s) for i, s in zip(t["task_index"], t["task"], strict=True)}
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing") from None
    except _arrow_errors() as e:  # KeyError: a column is missing
        raise DatasetError(f"cannot read {path} ({type(e).__name__}: {e})") from None


def _vec(col, dim: int) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("null values")
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def read_numeric_columns(path: Path, episode_index: int, length: int) -> dict[str, np.ndarray]:
    """state / ee_pose / action / timestamp of an episode's data file (for statistics)."""
    import pyarrow.parquet as pq

    try:
        t = pq.ParquetFile(str(path)).read(columns=[STATE, EE_POSE, ACTION, TIMESTAMP])
        out = {k: _vec(t.column(k), VECTOR_COLUMNS[k][0]) for k in (STATE, EE_POSE, ACTION)}
        out[TIMESTAMP] = t.column(TIMESTAMP).to_numpy().astype(np.float32)
    except FileNotFoundError:
        raise DatasetError(f"episode {episode_index}: data file {path} is missing") from None
    except _arrow_errors() as e:
        raise DatasetError(f"episode {episode_index}: cannot read {path} ({type(e).__name__}: {e})") from None
    if len(out[TIMESTAMP]) != length:
        raise DatasetError(f"episode {episode_index}: {path} has {len(out[TIMESTAMP])} frames, expected {length}")
    return out


# ------------------------------------------------------------------------------------------------ reader
class DatasetReader:
    """Read access to an episode dataset. Raises DatasetError naming the problem when the dataset itself
    (meta/info.json) is unusable; a broken episode only fails when it is accessed."""

    _MAX_OPEN = 16

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset directory")
        self.info = read_json_file(self.root / INFO_PATH, "meta/info.json")
        self.spec: DatasetSpec = check_info(self.info, str(self.root / INFO_PATH))
        files = scan_episode_files(self.root, self.spec)
        self.num_episodes = (max(files) + 1) if files else 0
        self._rows: dict[int, dict] = {}
        self._broken: dict[int, str] = {}
        for i in range(self.num_episodes):
            if i not in files:
                mp = self.root / episodes_relpath(i, self.spec.chunks_size)
                self._broken[i] = f"episode {i}: meta file {mp} is missing (run `etc-vla data repair`)"
                continue
            try:
                self._rows[i] = read_episode_row(files[i], i, self.spec)
            except DatasetError as e:
                self._broken[i] = str(e)
        self._starts = [(row["dataset_from_index"], i) for i, row in sorted(self._rows.items())]
        self._starts.sort()
        self._start_keys = [s for s, _ in self._starts]
        self._tasks: dict[int, str] | None = None
        self._handles: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    # ------------------------------------------------------------------------------------ summary
    @property
    def num_frames(self) -> int:
        return int(sum(r["length"] for r in self._rows.values()))

    @property
    def broken_episodes(self) -> dict[int, str]:
        """Episodes whose meta file could not be read: index -> reason."""
        return dict(self._broken)

    @property
    def fps(self) -> float:
        return self.spec.fps

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.spec.camera_names

    @property
    def tasks(self) -> dict[int, str]:
        """task_index -> instruction (from the episodes; tasks.parquet is only a derived copy)."""
        if self._tasks is None:
            self._tasks = {int(r["task_index"]): r["instruction"] for r in self._rows.values()}
        return dict(self._tasks)

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """meta/stats.json as numpy arrays (None when missing, as LeRobot's reader: rebuild with repair). A file
        that is there but unreadable, non-finite or of the wrong shapes raises a DatasetError naming it: it would
        poison every normalization built from it."""
        from etc_ros.data.stats import from_jsonable, nonfinite_entries, shape_errors

        path = self.root / STATS_PATH
        hint = " (run `etc-vla data repair` to rebuild it)"
        try:
            st = from_jsonable(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise DatasetError(f"{path}: not readable statistics ({type(e).__name__}: {e}){hint}") from None
        bad = nonfinite_entries(st)
        if bad:
            raise DatasetError(f"{path}: non-finite statistics {bad[:6]}{' ...' if len(bad) > 6 else ''}{hint}")
        bad = shape_errors(st)
        if bad:
            raise DatasetError(f"{path}: {'; '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}{hint}")
        return st

    def episodes(self, split: str | None = None) -> list[int]:
        """Readable episode indices (optionally only those of one split), ascending."""
        return [i for i, r in sorted(self._rows.items()) if split is None or r["split"] == split]

    def _row(self, i: int) -> dict:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise DatasetError(f"episode index must be an int, got {i!r}")
        i = int(i)
        if not 0 <= i < self.num_episodes:
            raise DatasetError(f"episode {i} does not exist ({self.num_episodes} episodes in {self.root})")
        if i in self._broken:
            raise DatasetError(self._broken[i])
        return self._rows[i]

    def episode_meta(self, i: int) -> dict:
        """Per-episode metadata: episode_index, length, tasks, instruction, split, success, cameras
        ({name: CameraModel} or None), metadata (dict), task_index, dataset_from_index, dataset_to_index, ..."""
        row = self._row(i)
        out = {k: v for k, v in row.items() if k != "stats" and not k.startswith("stats/")}
        out["metadata"] = json.loads(json.dumps(row["metadata"]))  # a copy the caller may modify
        out["tasks"] = list(row["tasks"])
        return out

    def episode_stats(self, i: int) -> dict[str, dict[str, np.ndarray]]:
        return episode_stats_from_row(self._row(i), self.spec)

    def episode_length(self, i: int) -> int:
        return int(self._row(i)["length"])

    # --------------------------------------------------------------------------------------- files
    def data_path(self, i: int) -> Path:
        return self.root / data_relpath(int(i), self.spec.chunks_size)

    def video_path(self, camera: str, i: int) -> Path:
        return self.root / video_relpath(camera, int(i), self.spec.chunks_size)

    def _parquet(self, i: int):
        import pyarrow.parquet as pq

        if os.getpid() != self._pid:  # forked (DataLoader worker): never share open files
            self._handles = OrderedDict()
            self._pid = os.getpid()
        h = self._handles.get(i)
        if h is not None:
            self._handles.move_to_end(i)
            return h
        path = self.data_path(i)
        row = self._rows[i]
        try:
            pf = pq.ParquetFile(str(path))
            n = pf.metadata.num_rows
        except FileNotFoundError:
            raise DatasetError(f"episode {i}: data file {path} is missing") from None
        except _arrow_errors() as e:
            raise DatasetError(f"episode {i}: cannot read {path} ({type(e).__name__}: {e})") from None
        if n != row["length"]:
            raise DatasetError(f"episode {i}: {path} has {n} frames, episode length is {row['length']}")
        missing = [c for c in self._expected_columns() if c not in pf.schema_arrow.names]
        if missing:
            raise DatasetError(f"episode {i}: {path} lacks columns {missing}")
        offsets = [0]
        for g in range(pf.metadata.num_row_groups):
            offsets.append(offsets[-1] + pf.metadata.row_group(g).num_rows)
        h = (pf, offsets)
        self._handles[i] = h
        while len(self._handles) > self._MAX_OPEN:
            self._handles.popitem(last=False)
        return h

    def _expected_columns(self) -> list[str]:
        cols = [] if self.spec.video else [image_key(c) for c in self.spec.cameras]
        cols += [depth_key(c) for c in self.spec.depth_cameras]
        return cols + [STATE, EE_POSE, ACTION, TIMESTAMP, TIMESTAMP_NS, FRAME_INDEX, EPISODE_INDEX, INDEX,
                       TASK_INDEX, OBJECTS]

    # ------------------------------------------------------------------------------------- episodes
    def load_episode(self, i: int, *, images: bool = True) -> EpisodeData:
        """The whole episode, exactly as written (PNG mode) / as decoded (video mode)."""
        row = self._row(i)
        i = int(i)
        pf, _ = self._parquet(i)
        path = self.data_path(i)
        T = int(row["length"])
        cols = [c for c in self._expected_columns()
                if images or not c.startswith((IMAGE_PREFIX, DEPTH_PREFIX))]
        try:
            t = pf.read(columns=cols)
            d = self._columns_to_numpy(t, path, i, T)
        except DatasetError:
            raise
        except _arrow_errors() as e:
            self._handles.pop(i, None)
            raise DatasetError(f"episode {i}: cannot read {path} ({type(e).__name__}: {e})") from None
        imgs: dict[str, np.ndarray] = {}
        depth: dict[str, np.ndarray] | None = None
        if images:
            for c in self.spec.cameras:
                if self.spec.video:
                    imgs[c] = codec.decode_video(self.video_path(c, i), self.spec.fps, f"episode {i} camera {c!r}",
                                                 expected=T)
                else:
                    imgs[c] = self._decode_column(t.column(image_key(c)), path, i, c, False)
            if self.spec.depth_cameras:
                depth = {c: self._decode_column(t.column(depth_key(c)), path, i, c, True)
                         for c in self.spec.depth_cameras}
        return EpisodeData(
            images=imgs, state=d[STATE], ee_pose=d[EE_POSE], action=d[ACTION], timestamp=d[TIMESTAMP],
            timestamp_ns=d[TIMESTAMP_NS], objects=d[OBJECTS], depth=depth, instruction=row["instruction"],
            split=row["split"], success=row["success"], cameras=row["cameras"],
            metadata=json.loads(json.dumps(row["metadata"])), episode_index=i)

    def _columns_to_numpy(self, t, path: Path, i: int, T: int) -> dict[str, Any]:
        where = f"episode {i}: {path}"
        out: dict[str, Any] = {}
        try:
            for k, (dim, _) in VECTOR_COLUMNS.items():
                out[k] = _vec(t.column(k), dim)
            out[TIMESTAMP] = t.column(TIMESTAMP).to_numpy().astype(np.float32)
            out[TIMESTAMP_NS] = t.column(TIMESTAMP_NS).to_numpy().astype(np.int64)
            for k in (FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
                out[k] = t.column(k).to_numpy().astype(np.int64)
            objs_raw = t.column(OBJECTS).to_pylist()
        except _arrow_errors() as e:
            raise DatasetError(f"{where}: bad column data ({type(e).__name__}: {e})") from None
        if len(out[TIMESTAMP]) != T:
            raise DatasetError(f"{where}: has {len(out[TIMESTAMP])} frames, expected {T}")
        if not np.array_equal(out[FRAME_INDEX], np.arange(T)) or np.any(out[EPISODE_INDEX] != i):
            raise DatasetError(f"{where}: frame_index / episode_index columns do not match episode {i}")
        objs = []
        for f, s in enumerate(objs_raw):
            try:
                objs.append(json.loads(s) if s else [])
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: frame {f}: annotations.objects is not JSON ({e})") from None
        out[OBJECTS] = objs
        return out

    def _decode_column(self, col, path: Path, i: int, cam: str, depth: bool) -> np.ndarray:
        kind = "depth" if depth else "image"
        datas = col.combine_chunks().field("bytes").to_pylist()
        frames = []
        for f, b in enumerate(datas):
            if b is None:
                raise DatasetError(f"episode {i}: {path}: frame {f}: {kind} {cam!r} is empty")
            frames.append(codec.decode_png(b, f"episode {i}: {path}: frame {f} {kind} {cam!r}", depth=depth))
        h, w = self.spec.cameras[cam]
        arr = np.stack(frames)
        want = (len(frames), h, w) if depth else (len(frames), h, w, 3)
        if arr.shape != want:
            raise DatasetError(f"episode {i}: {path}: {kind} {cam!r} has shape {arr.shape[1:]}, expected {want[1:]}")
        return arr

    # --------------------------------------------------------------------------------------- frames
    def locate(self, global_index: int) -> tuple[int, int]:
        """Global frame index -> (episode index, frame index within it)."""
        if isinstance(global_index, bool) or not isinstance(global_index, (int, np.integer)):
            raise DatasetError(f"frame index must be an int, got {global_index!r}")
        g = int(global_index)
        k = bisect.bisect_right(self._start_keys, g) - 1
        if k >= 0:
            start, ep = self._starts[k]
            if g < start + self._rows[ep]["length"]:
                return ep, g - start
        raise DatasetError(f"frame {g} does not exist in {self.root} ({self.num_frames} readable frames)")

    def frame(self, global_index: int, *, images: bool = True) -> dict:
        """One frame by global index (the `index` column). Decodes only this frame's images."""
        ep, t = self.locate(global_index)
        return self.episode_frame(ep, t, images=images)

    def episode_frame(self, episode: int, t: int, *, images: bool = True) -> dict:
        """One frame of an episode as a dict keyed by column name (+ "task"): images decoded to numpy,
        annotations.objects parsed, vectors float32, scalars as Python numbers."""
        row = self._row(episode)
        episode = int(episode)
        T = int(row["length"])
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < T:
            raise DatasetError(f"episode {episode} has frames 0..{T - 1}, asked for {t!r}")
        t = int(t)
        pf, offsets = self._parquet(episode)
        g = bisect.bisect_right(offsets, t) - 1
        path = self.data_path(episode)
        cols = [c for c in self._expected_columns()
                if images or not c.startswith((IMAGE_PREFIX, DEPTH_PREFIX))]
        try:
            tab = pf.read_row_group(g, columns=cols).slice(t - offsets[g], 1)
        except _arrow_errors() as e:
            self._handles.pop(episode, None)
            raise DatasetError(f"episode {episode}: cannot read {path} ({type(e).__name__}: {e})") from None
        where = f"episode {episode}: {path}: frame {t}"
        try:
            out: dict[str, Any] = {}
            for k, (dim, _) in VECTOR_COLUMNS.items():
                out[k] = _vec(tab.column(k), dim)[0]
            out[TIMESTAMP] = float(tab.column(TIMESTAMP)[0].as_py())
            out[TIMESTAMP_NS] = int(tab.column(TIMESTAMP_NS)[0].as_py())
            for k in (FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX):
                out[k] = int(tab.column(k)[0].as_py())
            raw = tab.column(OBJECTS)[0].as_py()
        except _arrow_errors() as e:
            raise DatasetError(f"{where}: bad column data ({type(e).__name__}: {e})") from None
        if out[FRAME_INDEX] != t or out[EPISODE_INDEX] != episode:
            raise DatasetError(f"{where}: frame_index/episode_index columns say {out[FRAME_INDEX]}/"
                               f"{out[EPISODE_INDEX]}")
        try:
            out[OBJECTS] = json.loads(raw) if raw else []
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: annotations.objects is not JSON ({e})") from None
        out["task"] = row["instruction"]
        if images:
            for c in self.spec.cameras:
                if self.spec.video:
                    out[image_key(c)] = codec.decode_video_frame(self.video_path(c, episode), self.spec.fps, t,
                                                                 f"episode {episode} camera {c!r}")
                else:
                    b = tab.column(image_key(c))[0]["bytes"].as_py()
                    if b is None:
                        raise DatasetError(f"{where}: image {c!r} is empty")
                    out[image_key(c)] = codec.decode_png(b, f"{where} image {c!r}")
            for c in self.spec.depth_cameras:
                b = tab.column(depth_key(c))[0]["bytes"].as_py()
                if b is None:
                    raise DatasetError(f"{where}: depth {c!r} is empty")
                out[depth_key(c)] = codec.decode_png(b, f"{where} depth {c!r}", depth=True)
        return out

    def __repr__(self) -> str:
        return (f"DatasetReader({str(self.root)!r}: {self.num_episodes} episodes, {self.num_frames} frames, "
                f"{self.spec.fps} fps, cameras {list(self.spec.cameras)})")
