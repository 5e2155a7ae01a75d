"""Episode dataset schema: one format for sim collection, teleop recording, rosbag import and training.

Layout (LeRobot v3 style, see docs/dataset.md)::

    root/
      meta/info.json                      codebase_version "v3.0", fps, robot_type, features, path templates
      meta/stats.json                     normalization statistics (rebuildable)
      meta/tasks.parquet                  task_index <-> instruction (rebuildable)
      meta/episodes/chunk-XXX/file-YYY.parquet   ONE row per file = one episode (the commit point)
      data/chunk-XXX/file-YYY.parquet     ONE episode per file (frames)
      videos/<key>/chunk-XXX/file-YYY.mp4 only in video mode, one episode per file

Deviation from LeRobot v3 (documented): one episode per data / episodes file; chunk = episode // chunks_size,
file = episode % chunks_size, so finishing an episode is one atomic rename.

This module is numpy + pyarrow only (robot side: no torch).
"""
from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraModel
from etc_ros.core.errors import CalibrationError, DatasetError

CODEBASE_VERSION = "v3.0"
FORMAT_NAME = "etc_ros.episodes"
FORMAT_VERSION = 1
DEFAULT_CHUNKS_SIZE = 1000

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
LOCK_NAME = ".writer.lock"

# frame columns
STATE = "observation.state"
EE_POSE = "observation.ee_pose"
ACTION = "action"
TIMESTAMP = "timestamp"
TIMESTAMP_NS = "timestamp_ns"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"
OBJECTS = "annotations.objects"
IMAGE_PREFIX = "observation.images."
DEPTH_PREFIX = "observation.depth."

STATE_NAMES = list(robot_spec.STATE_NAMES)
EE_POSE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw"]
ACTION_NAMES = list(robot_spec.ACTION_NAMES)
VECTOR_COLUMNS: dict[str, tuple[int, list[str]]] = {
    STATE: (robot_spec.STATE_DIM, STATE_NAMES),
    EE_POSE: (6, EE_POSE_NAMES),
    ACTION: (robot_spec.ACTION_DIM, ACTION_NAMES),
}
INT_COLUMNS = (FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX)
# numeric columns that get statistics (per episode and global)
STATS_NUMERIC = (STATE, EE_POSE, ACTION, TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX)
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = ("q01", "q10", "q50", "q90", "q99")

SPLIT_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
CAMERA_RE = re.compile(r"^[A-Za-z0-9_]+$")
SOURCES = ("sim", "teleop", "bag")
GRIPPER_EVENT_TYPES = ("open", "close")
GRIPPER_TOL = 1e-6


def image_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


def depth_key(camera: str) -> str:
    return DEPTH_PREFIX + camera


def chunk_file(episode_index: int, chunks_size: int) -> tuple[int, int]:
    """Episode index -> (chunk_index, file_index): one episode per file."""
    return episode_index // chunks_size, episode_index % chunks_size


def data_relpath(episode_index: int, chunks_size: int) -> str:
    c, f = chunk_file(episode_index, chunks_size)
    return DATA_PATH.format(chunk_index=c, file_index=f)


def episodes_relpath(episode_index: int, chunks_size: int) -> str:
    c, f = chunk_file(episode_index, chunks_size)
    return EPISODES_PATH.format(chunk_index=c, file_index=f)


def video_relpath(camera: str, episode_index: int, chunks_size: int) -> str:
    c, f = chunk_file(episode_index, chunks_size)
    return VIDEO_PATH.format(video_key=image_key(camera), chunk_index=c, file_index=f)


_FILE_RE = re.compile(r"^chunk-(\d{3,})/file-(\d{3,})\.(parquet|mp4)$")


def parse_chunk_file(rel: str) -> tuple[int, int] | None:
    """'chunk-001/file-002.parquet' -> (1, 2); None for anything else (temp files...)."""
    m = _FILE_RE.match(rel)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_temp_name(name: str) -> bool:
    return name.endswith(".tmp") or name.startswith(".")


def temp_path(final: Path) -> Path:
    """The hidden temp file a writer fills before renaming it to `final` (is_temp_name holds for its name)."""
    return final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


# ----------------------------------------------------------------------------------------------------- spec
@dataclass
class DatasetSpec:
    """What a dataset holds. `cameras` maps a camera name to its stored image size (height, width).

    depth: False, True (depth for every camera) or a list of camera names with a depth image.
    video: store RGB as mp4 (lossy, PyAV) instead of lossless PNG in the parquet files.
    """

    fps: float = robot_spec.POLICY_HZ
    cameras: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"primary": (robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE)})
    depth: bool | Sequence[str] = False
    video: bool = False
    robot_type: str = robot_spec.ROBOT_MODEL
    video_codec: str = "h264"  # "h264" or "mpeg4", used when video=True
    chunks_size: int = DEFAULT_CHUNKS_SIZE

    def __post_init__(self) -> None:
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            raise DatasetError(f"DatasetSpec.fps must be a number, got {self.fps!r}") from None
        if not math.isfinite(fps) or fps <= 0:
            raise DatasetError(f"DatasetSpec.fps must be > 0, got {self.fps!r}")
        self.fps = fps
        if not isinstance(self.cameras, Mapping) or not self.cameras:
            raise DatasetError("DatasetSpec.cameras must be a non-empty mapping {name: (height, width)}")
        cams: dict[str, tuple[int, int]] = {}
        for name, hw in self.cameras.items():
            if not isinstance(name, str) or not CAMERA_RE.match(name):
                raise DatasetError(f"camera name {name!r} must match [A-Za-z0-9_]+")
            try:
                h, w = (int(v) for v in hw)
            except (TypeError, ValueError):
                raise DatasetError(f"camera {name!r}: size must be (height, width), got {hw!r}") from None
            if h <= 0 or w <= 0:
                raise DatasetError(f"camera {name!r}: size must be positive, got {hw!r}")
            if self.video and (h % 2 or w % 2):
                raise DatasetError(f"camera {name!r}: video mode needs even height and width, got {h}x{w}")
            cams[name] = (h, w)
        self.cameras = cams
        if isinstance(self.depth, (bool, np.bool_)):
            self.depth = bool(self.depth)
        else:
            d = tuple(self.depth)
            unknown = [c for c in d if c not in cams]
            if unknown:
                raise DatasetError(f"DatasetSpec.depth names unknown cameras {unknown}; cameras: {list(cams)}")
            self.depth = d
        self.video = bool(self.video)
        if self.video_codec not in ("h264", "mpeg4"):
            raise DatasetError(f"DatasetSpec.video_codec must be 'h264' or 'mpeg4', got {self.video_codec!r}")
        if not isinstance(self.robot_type, str) or not self.robot_type:
            raise DatasetError("DatasetSpec.robot_type must be a non-empty string")
        if int(self.chunks_size) < 1:
            raise DatasetError(f"DatasetSpec.chunks_size must be >= 1, got {self.chunks_size}")
        self.chunks_size = int(self.chunks_size)

    @property
    def depth_cameras(self) -> tuple[str, ...]:
        if self.depth is True:
            return tuple(self.cameras)
        if self.depth is False:
            return ()
        return tuple(self.depth)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.cameras)

    # ---- info.json
    def features(self) -> dict[str, dict]:
        """LeRobot v3 `features` dict (dtype / shape / names [/ info])."""
        feats: dict[str, dict] = {}
        for cam, (h, w) in self.cameras.items():
            if self.video:
                feats[image_key(cam)] = {
                    "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                    "info": {"video.height": h, "video.width": w, "video.codec": self.video_codec,
                             "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                             "video.channels": 3, "has_audio": False},
                }
            else:
                feats[image_key(cam)] = {"dtype": "image", "shape": [h, w, 3],
                                         "names": ["height", "width", "channels"]}
        for cam in self.depth_cameras:
            h, w = self.cameras[cam]
            feats[depth_key(cam)] = {"dtype": "image", "shape": [h, w, 1], "names": ["height", "width", "channels"],
                                     "info": {"encoding": "png16", "unit": "mm", "is_depth_map": True}}
        for key, (dim, names) in VECTOR_COLUMNS.items():
            feats[key] = {"dtype": "float32", "shape": [dim], "names": list(names)}
        feats[TIMESTAMP] = {"dtype": "float32", "shape": [1], "names": None}
        feats[TIMESTAMP_NS] = {"dtype": "int64", "shape": [1], "names": None}
        for key in INT_COLUMNS:
            feats[key] = {"dtype": "int64", "shape": [1], "names": None}
        feats[OBJECTS] = {"dtype": "string", "shape": [1], "names": None,
                          "info": {"encoding": "json", "schema": "list of objects, see docs/dataset.md"}}
        return feats

    def to_dict(self) -> dict:
        return {"fps": self.fps, "cameras": {k: list(v) for k, v in self.cameras.items()},
                "depth": self.depth if isinstance(self.depth, bool) else list(self.depth),
                "video": self.video, "robot_type": self.robot_type, "video_codec": self.video_codec,
                "chunks_size": self.chunks_size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetSpec":
        try:
            depth = d.get("depth", False)
            return cls(fps=d["fps"], cameras={k: tuple(v) for k, v in d["cameras"].items()},
                       depth=depth if isinstance(depth, bool) else tuple(depth), video=bool(d.get("video", False)),
                       robot_type=d.get("robot_type", robot_spec.ROBOT_MODEL),
                       video_codec=d.get("video_codec", "h264"),
                       chunks_size=int(d.get("chunks_size", DEFAULT_CHUNKS_SIZE)))
        except (KeyError, AttributeError, TypeError) as e:
            raise DatasetError(f"bad dataset spec {dict(d)!r}: {e}") from None

    @classmethod
    def from_info(cls, info: Mapping[str, Any], where: str = INFO_PATH) -> "DatasetSpec":
        ext = info.get("etc_ros")
        if not isinstance(ext, Mapping) or "spec" not in ext:
            raise DatasetError(f"{where}: no 'etc_ros.spec' section: not a dataset written by etc_ros "
                               "(LeRobot datasets from elsewhere are not supported)")
        spec = cls.from_dict(ext["spec"])
        if float(info.get("fps", spec.fps)) != spec.fps:
            raise DatasetError(f"{where}: fps {info.get('fps')} disagrees with etc_ros.spec.fps {spec.fps}")
        return spec

    def same_as(self, other: "DatasetSpec") -> list[str]:
        """Differences (human readable) between two specs; [] when equal."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


# ------------------------------------------------------------------------------------------- episode data
@dataclass
class EpisodeData:
    """A whole episode in memory (what a sim worker sends and what `DatasetReader.load_episode` returns).

    images: {camera: (T, H, W, 3) uint8}; state (T, 7) float32; ee_pose (T, 6) float32 (xyz + rpy 'sxyz' of
    ee_gripper_link in base_link); action (T, 7) float32 (Bridge 7-D); timestamp (T,) float32 seconds from the
    episode start; timestamp_ns (T,) int64 absolute capture time (None -> synthetic clock at write time);
    objects: per-frame list of object dicts (None -> empty lists); depth: {camera: (T, H, W) uint16 mm} or None.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    ee_pose: np.ndarray
    action: np.ndarray
    timestamp: np.ndarray
    timestamp_ns: np.ndarray | None = None
    objects: list[list[dict]] | None = None
    depth: dict[str, np.ndarray] | None = None
    instruction: str = ""
    split: str = "train"
    success: bool | None = None
    cameras: dict[str, CameraModel] | None = None
    metadata: dict = field(default_factory=dict)
    episode_index: int | None = None  # set by the reader

    def __len__(self) -> int:
        return int(np.asarray(self.state).shape[0]) if np.ndim(self.state) >= 1 else 0

    @property
    def length(self) -> int:
        return len(self)


# ------------------------------------------------------------------------------------------------ checks
def as_vector(value: Any, dim: int, name: str, where: str) -> np.ndarray:
    """Validate a per-frame vector: shape (dim,), real, finite -> float32."""
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001
        raise DatasetError(f"{where}: {name} is not an array: {type(value).__name__}") from None
    if a.shape != (dim,):
        raise DatasetError(f"{where}: {name} must have shape ({dim},), got {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DatasetError(f"{where}: {name} must be a float array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        bad = [i for i in range(dim) if not np.isfinite(a[i])]
        raise DatasetError(f"{where}: {name} has non-finite values (NaN/Inf) at index {bad}")
    return a


def check_gripper(value: float, name: str, where: str) -> None:
    if not (-GRIPPER_TOL <= float(value) <= 1.0 + GRIPPER_TOL):
        raise DatasetError(f"{where}: {name} gripper value must be in [0, 1] (1 = open), got {float(value):.6g}")


def check_image(img: Any, hw: tuple[int, int], name: str, where: str) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise DatasetError(f"{where}: image {name!r} must be uint8, got dtype {a.dtype}")
    h, w = hw
    if a.shape != (h, w, 3):
        raise DatasetError(f"{where}: image {name!r} must have shape (H, W, 3) = ({h}, {w}, 3), got {a.shape}")
    return a


def check_depth(img: Any, hw: tuple[int, int], name: str, where: str) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint16:
        raise DatasetError(f"{where}: depth {name!r} must be uint16 millimetres, got dtype {a.dtype}")
    h, w = hw
    if a.shape == (h, w, 1):
        a = a[..., 0]
    if a.shape != (h, w):
        raise DatasetError(f"{where}: depth {name!r} must have shape (H, W) = ({h}, {w}), got {a.shape}")
    return a


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)) \
        and math.isfinite(float(x))


def object_errors(objects: Any, cameras: Sequence[str] | None = None) -> list[str]:
    """Schema errors of one frame's `annotations.objects` list ([] when fine)."""
    if not isinstance(objects, list):
        return [f"must be a list of objects, got {type(objects).__name__}"]
    errs: list[str] = []
    for i, o in enumerate(objects):
        p = f"object {i}"
        if not isinstance(o, Mapping):
            errs.append(f"{p}: must be a dict, got {type(o).__name__}")
            continue
        if not isinstance(o.get("name"), str) or not o.get("name"):
            errs.append(f"{p}: 'name' must be a non-empty string")
        for k in ("category", "color"):
            if k in o and o[k] is not None and not isinstance(o[k], str):
                errs.append(f"{p}: '{k}' must be a string")
        if "pose" in o and o["pose"] is not None:
            pose = o["pose"]
            if not isinstance(pose, (list, tuple, np.ndarray)) or len(pose) != 7 or not all(_is_num(v) for v in pose):
                errs.append(f"{p}: 'pose' must be 7 finite numbers [x, y, z, qw, qx, qy, qz]")
            elif abs(float(np.linalg.norm(np.asarray(pose[3:], dtype=float))) - 1.0) > 1e-3:
                errs.append(f"{p}: 'pose' quaternion [qw, qx, qy, qz] is not unit length")
        if "size" in o and o["size"] is not None:
            size = o["size"]
            if not isinstance(size, (list, tuple, np.ndarray)) or not all(_is_num(v) for v in size):
                errs.append(f"{p}: 'size' must be a list of finite numbers")
        cams = o.get("cameras")
        if cams is None:
            continue
        if not isinstance(cams, Mapping):
            errs.append(f"{p}: 'cameras' must be a dict {{camera: {{point, box, visible}}}}")
            continue
        for cam, c in cams.items():
            q = f"{p} camera {cam!r}"
            if cameras is not None and cam not in cameras:
                errs.append(f"{q}: unknown camera (dataset cameras: {list(cameras)})")
            if not isinstance(c, Mapping):
                errs.append(f"{q}: must be a dict")
                continue
            if c.get("point") is not None:
                pt = c["point"]
                if not isinstance(pt, (list, tuple, np.ndarray)) or len(pt) != 2 or not all(_is_num(v) for v in pt):
                    errs.append(f"{q}: 'point' must be [u, v] (2 finite numbers)")
            if c.get("box") is not None:
                bx = c["box"]
                if not isinstance(bx, (list, tuple, np.ndarray)) or len(bx) != 4 or not all(_is_num(v) for v in bx):
                    errs.append(f"{q}: 'box' must be [x1, y1, x2, y2] (4 finite numbers)")
                elif not (float(bx[0]) <= float(bx[2]) and float(bx[1]) <= float(bx[3])):
                    errs.append(f"{q}: 'box' must have x1 <= x2 and y1 <= y2, got {list(bx)}")
            if "visible" in c and not isinstance(c["visible"], (bool, np.bool_)):
                errs.append(f"{q}: 'visible' must be a bool")
    return errs


def metadata_errors(meta: Any, length: int | None = None) -> list[str]:
    """Schema errors of an episode's free `metadata` dict (the documented keys are checked)."""
    if not isinstance(meta, Mapping):
        return [f"metadata must be a dict, got {type(meta).__name__}"]
    errs: list[str] = []
    src = meta.get("source")
    if src is not None and src not in SOURCES:
        errs.append(f"metadata.source must be one of {list(SOURCES)}, got {src!r}")
    ev = meta.get("gripper_events")
    if ev is not None:
        if not isinstance(ev, list):
            errs.append("metadata.gripper_events must be a list of {frame, type}")
        else:
            for i, e in enumerate(ev):
                if not isinstance(e, Mapping) or e.get("type") not in GRIPPER_EVENT_TYPES \
                        or not isinstance(e.get("frame"), (int, np.integer)) or isinstance(e.get("frame"), bool):
                    errs.append(f"metadata.gripper_events[{i}] must be {{frame: int, type: open|close}}, got {e!r}")
                elif length is not None and not 0 <= int(e["frame"]) < length:
                    errs.append(f"metadata.gripper_events[{i}].frame {e['frame']} outside [0, {length})")
    st = meta.get("subtasks")
    if st is not None:
        if not isinstance(st, list):
            errs.append("metadata.subtasks must be a list of {name, start, end}")
        else:
            for i, s in enumerate(st):
                ok = isinstance(s, Mapping) and isinstance(s.get("name"), str) \
                    and all(isinstance(s.get(k), (int, np.integer)) and not isinstance(s.get(k), bool)
                            for k in ("start", "end"))
                if not ok:
                    errs.append(f"metadata.subtasks[{i}] must be {{name: str, start: int, end: int}}, got {s!r}")
                elif not 0 <= int(s["start"]) <= int(s["end"]) or (length is not None and int(s["end"]) > length):
                    errs.append(f"metadata.subtasks[{i}] needs 0 <= start <= end <= length ({length}), "
                                f"got start {s['start']} end {s['end']}")
    return errs


def cameras_to_json(cameras: Mapping[str, Any] | None, spec: DatasetSpec, where: str) -> str | None:
    """{name: CameraModel | dict} -> JSON string, checking names and that intrinsics match the stored size."""
    if cameras is None:
        return None
    if not isinstance(cameras, Mapping):
        raise DatasetError(f"{where}: cameras must be a dict {{name: CameraModel}}, got {type(cameras).__name__}")
    out = {}
    for name, cam in cameras.items():
        if name not in spec.cameras:
            raise DatasetError(f"{where}: calibration for unknown camera {name!r}; dataset cameras: "
                               f"{list(spec.cameras)}")
        try:
            model = cam if isinstance(cam, CameraModel) else CameraModel.from_dict(dict(cam))
        except (CalibrationError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: camera {name!r}: bad calibration: {e}") from None
        d = model.to_dict()
        h, w = spec.cameras[name]
        if (d["intrinsics"]["width"], d["intrinsics"]["height"]) != (w, h):
            raise DatasetError(
                f"{where}: camera {name!r}: intrinsics are for {d['intrinsics']['width']}x"
                f"{d['intrinsics']['height']} but images are stored at {w}x{h} (WxH); "
                f"pass CameraModel.resized({w}, {h})")
        out[name] = d
    return json.dumps(out)


def cameras_from_json(text: str | None) -> dict[str, CameraModel] | None:
    if text is None or text == "":
        return None
    d = json.loads(text)
    return {name: CameraModel.from_dict(v) for name, v in d.items()}


def to_json(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, separators=(",", ":"), allow_nan=False)


def _json_default(o: Any):
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: {what} is not valid JSON ({e})") from None


def check_info(info: Any, where: str) -> DatasetSpec:
    """Validate meta/info.json's top level; return the spec (DatasetError naming the problem otherwise)."""
    if not isinstance(info, Mapping):
        raise DatasetError(f"{where}: must hold a JSON object")
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise DatasetError(f"{where}: codebase_version must be {CODEBASE_VERSION!r}, got "
                           f"{info.get('codebase_version')!r}")
    missing = [k for k in ("fps", "features", "data_path", "robot_type") if k not in info]
    if missing:
        raise DatasetError(f"{where}: missing keys {missing}")
    return DatasetSpec.from_info(info, where)


# ------------------------------------------------------------------------------------------ arrow schemas
ROWS_PER_GROUP = 8  # frames per parquet row group: random access reads one group, decodes one frame


def image_struct_type():
    import pyarrow as pa

    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def data_arrow_schema(spec: DatasetSpec, episode_index: int | None = None):
    """Arrow schema of a data/chunk-XXX/file-YYY.parquet file (column order = this order)."""
    import pyarrow as pa

    fields = []
    if not spec.video:
        fields += [pa.field(image_key(c), image_struct_type()) for c in spec.cameras]
    fields += [pa.field(depth_key(c), image_struct_type()) for c in spec.depth_cameras]
    fields += [pa.field(k, pa.list_(pa.float32(), dim)) for k, (dim, _) in VECTOR_COLUMNS.items()]
    fields += [pa.field(TIMESTAMP, pa.float32()), pa.field(TIMESTAMP_NS, pa.int64())]
    fields += [pa.field(k, pa.int64()) for k in INT_COLUMNS]
    fields += [pa.field(OBJECTS, pa.string())]
    return pa.schema(fields, metadata=_data_file_metadata(spec, episode_index))


def _hf_feature(feat: dict) -> dict:
    if feat["dtype"] == "image":
        return {"_type": "Image"}
    if feat["dtype"] in ("float32", "int64") and feat["shape"] != [1]:
        return {"feature": {"dtype": feat["dtype"], "_type": "Value"}, "length": int(feat["shape"][0]),
                "_type": "Sequence"}
    return {"dtype": feat["dtype"], "_type": "Value"}


def _data_file_metadata(spec: DatasetSpec, episode_index: int | None) -> dict[bytes, bytes]:
    feats = {k: _hf_feature(v) for k, v in spec.features().items() if v["dtype"] != "video"}
    ours = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "spec": spec.to_dict()}
    if episode_index is not None:
        ours["episode_index"] = int(episode_index)
    return {b"huggingface": json.dumps({"info": {"features": feats}}).encode(),
            b"etc_ros": json.dumps(ours).encode()}


def data_column_types(spec: DatasetSpec) -> dict[str, Any]:
    s = data_arrow_schema(spec)
    return {f.name: f.type for f in s}


# episode (meta/episodes) columns
EP_REQUIRED = ("episode_index", "tasks", "length", "instruction", "split", "success", "cameras", "metadata",
               "task_index", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index",
               "meta/episodes/chunk_index", "meta/episodes/file_index")


def lerobot_stats_columns(ep_stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """LeRobot v3's per-episode statistics columns of meta/episodes: `stats/<feature>/<stat>`, each the value as a
    (nested) list in the statistic's own shape (images (3, 1, 1)), so LeRobot's aggregate / merge / split tools
    find them. The `stats` JSON column keeps the same numbers for this project's reader.

    Depth is left out: LeRobot's dataset tools take every `image` feature's statistics as RGB (3, 1, 1) and fail on
    the one-channel depth's (1, 1, 1) (seen with LeRobot 0.4.4's delete_episodes); its statistics stay in the JSON
    column and meta/stats.json."""
    return {f"stats/{k}/{st}": np.asarray(v).tolist() for k, d in ep_stats.items() if not k.startswith(DEPTH_PREFIX)
            for st, v in d.items()}


def _stats_field(name: str, value: Any):
    import pyarrow as pa

    arr = np.asarray(value)
    t = pa.int64() if name.endswith("/count") else pa.float64()
    for _ in range(arr.ndim):
        t = pa.list_(t)
    return pa.field(name, t)


def episode_arrow_schema(spec: DatasetSpec, episode_index: int, ep_stats: Mapping[str, Any] | None = None):
    """Schema of one meta/episodes file; with ep_stats, also LeRobot's stats/<feature>/<stat> columns."""
    import pyarrow as pa

    fields = [
        pa.field("episode_index", pa.int64()), pa.field("tasks", pa.list_(pa.string())),
        pa.field("length", pa.int64()), pa.field("instruction", pa.string()), pa.field("split", pa.string()),
        pa.field("success", pa.bool_()), pa.field("cameras", pa.string()), pa.field("metadata", pa.string()),
        pa.field("task_index", pa.int64()),
        pa.field("data/chunk_index", pa.int64()), pa.field("data/file_index", pa.int64()),
        pa.field("dataset_from_index", pa.int64()), pa.field("dataset_to_index", pa.int64()),
    ]
    if spec.video:
        for c in spec.cameras:
            k = image_key(c)
            fields += [pa.field(f"videos/{k}/chunk_index", pa.int64()), pa.field(f"videos/{k}/file_index", pa.int64()),
                       pa.field(f"videos/{k}/from_timestamp", pa.float64()),
                       pa.field(f"videos/{k}/to_timestamp", pa.float64())]
    fields += [pa.field("meta/episodes/chunk_index", pa.int64()), pa.field("meta/episodes/file_index", pa.int64()),
               pa.field("stats", pa.string())]
    if ep_stats:
        fields += [_stats_field(k, v) for k, v in lerobot_stats_columns(ep_stats).items()]
    ours = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "spec": spec.to_dict(),
            "episode_index": int(episode_index)}
    return pa.schema(fields, metadata={b"etc_ros": json.dumps(ours).encode()})


def stats_to_json(ep_stats: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps({k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in ep_stats.items()},
                      separators=(",", ":"))


def stats_from_json(text: str | None) -> dict[str, dict[str, np.ndarray]]:
    if not text:
        return {}
    d = json.loads(text)
    return {k: {s: np.asarray(v, dtype=np.int64 if s == "count" else np.float64) for s, v in sub.items()}
            for k, sub in d.items()}
