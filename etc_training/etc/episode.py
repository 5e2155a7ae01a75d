"""One episode as the ETC generators see it: arrays, FK positions, calibrated cameras, per-frame objects
(from the simulator or from an operator annotation file) and the plan segmentation.

Works with etc_ros.data.EpisodeData and with any object carrying the same attributes (images, state, ee_pose,
timestamp, objects, instruction, split, success, cameras, metadata).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etc_ros.core.camera import CameraModel
from etc_ros.core.errors import CalibrationError, DatasetError
from etc_training.etc.segment import FAMILIES, Segmentation, SegmentParams, segment_episode

_KIN = None


def kinematics():
    """The project's one kinematics (etc_ros.core.kinematics), built once per process."""
    global _KIN
    if _KIN is None:
        from etc_ros.core.kinematics import WidowXKinematics

        _KIN = WidowXKinematics.from_urdf()
    return _KIN


def fk_positions(q: np.ndarray) -> np.ndarray:
    """(T, >=6) joint positions -> (T, 3) ee_gripper_link positions in base_link (FK of the recorded joints)."""
    q = np.asarray(q, dtype=float)
    if q.ndim != 2 or q.shape[1] < 6:
        raise DatasetError(f"joint state must have shape (T, 6+), got {q.shape}")
    if not np.all(np.isfinite(q[:, :6])):
        raise DatasetError("joint state contains NaN/Inf")
    if not len(q):
        return np.zeros((0, 3))
    return np.asarray(kinematics().fk(q[:, :6]), dtype=float)[:, :3, 3]


def display_name(obj: dict) -> str:
    name = obj.get("name")
    if not name:
        parts = [str(obj.get(k)) for k in ("color", "category") if obj.get(k)]
        name = " ".join(parts) if parts else "object"
    return str(name).replace("_", " ").strip()


@dataclass
class ObjView:
    """One object as seen by one camera at one frame (pixels in the stored image, centre convention)."""

    name: str
    point: tuple[float, float] | None
    box: tuple[float, float, float, float] | None
    visible: bool = True
    xyz: np.ndarray | None = None  # base frame centre, when known (simulation)
    depth: float | None = None  # along the camera's optical axis, when known
    size: Any = None


@dataclass
class EpisodeView:
    index: int
    episode_id: str
    dataset: str
    split: str
    source: str
    instruction: str
    success: bool | None
    num_frames: int
    image_sizes: dict[str, tuple[int, int]]  # cam -> (W, H)
    cameras: dict[str, CameraModel]  # calibrated cameras only, scaled to the stored image size
    state: np.ndarray | None  # (T, 7)
    ee_pos: np.ndarray | None  # (T, 3) from FK
    ee_pose_recorded: np.ndarray | None  # (T, 6) as stored (for cross-checks)
    timestamp: np.ndarray | None
    task: dict
    metadata: dict
    objects: list | None  # per frame list of dicts (simulation)
    annotations: dict[int, dict[str, list[dict]]] = field(default_factory=dict)  # frame -> cam -> objects
    seg: Segmentation | None = None
    _obj_cache: dict = field(default_factory=dict, repr=False)
    _T_cam_base: dict = field(default_factory=dict, repr=False)

    @property
    def family(self) -> str | None:
        f = self.task.get("family")
        return f if f in FAMILIES else None

    @property
    def task_object(self) -> str | None:
        o = self.task.get("object")
        return str(o).replace("_", " ") if o else None

    @property
    def task_target(self) -> str | None:
        o = self.task.get("target")
        return str(o).replace("_", " ") if o else None

    @property
    def fps(self) -> float:
        ts = self.timestamp
        if ts is not None and len(ts) > 1:
            dt = float(np.median(np.diff(ts)))
            if dt > 0:
                return 1.0 / dt
        return 5.0

    def camera(self, cam: str, need: str) -> CameraModel:
        """Calibrated camera or CalibrationError naming the episode, camera and what needed it."""
        if cam not in self.cameras:
            have = sorted(self.cameras) or "none"
            raise CalibrationError(
                f"episode {self.episode_id} (index {self.index}) has no camera calibration for camera {cam!r} "
                f"(calibrated cameras: {have}); {need} ETC needs intrinsics and T_base_cam of that camera. "
                f"Calibrate with `etc-vla calibrate` and store it in the episode's cameras, or disable {need} "
                f"(etc.yaml subtypes) / set on_missing_calibration=skip")
        return self.cameras[cam]

    def scene_objects(self, t: int, cam: str) -> list[ObjView] | None:
        """Objects visible to `cam` at frame t: operator annotations of that frame if any, else simulator
        objects, else None (nothing known). Cached per (frame, camera)."""
        key = (int(t), cam)
        if key not in self._obj_cache:
            self._obj_cache[key] = self._scene_objects(int(t), cam)
        return self._obj_cache[key]

    def _scene_objects(self, t: int, cam: str) -> list[ObjView] | None:
        ann = self.annotations.get(int(t), {}).get(cam)
        if ann is not None:
            out = []
            for o in ann:
                box = tuple(float(x) for x in o["box"]) if o.get("box") is not None else None
                if o.get("point") is not None:
                    point = tuple(float(x) for x in o["point"])
                elif box is not None:
                    point = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
                else:
                    point = None
                out.append(ObjView(display_name(o), point, box, True))
            return out
        if not self.objects or t >= len(self.objects) or not self.objects[t]:
            return None
        W, H = self.image_sizes[cam]
        out = []
        cm = self.cameras.get(cam)
        for o in self.objects[t]:
            cams = o.get("cameras") or {}
            c = cams.get(cam)
            pose = o.get("pose")
            xyz = np.asarray(pose[:3], dtype=float) if pose is not None else None
            point = box = None
            visible = False
            if c is not None:
                point = tuple(float(x) for x in c["point"]) if c.get("point") is not None else None
                box = tuple(float(x) for x in c["box"]) if c.get("box") is not None else None
                visible = bool(c.get("visible", True)) and point is not None
            elif cm is not None and xyz is not None:  # no per-camera record: project the pose
                uv, _ = cm.project(xyz[None])
                if np.all(np.isfinite(uv[0])):
                    point, visible = (float(uv[0, 0]), float(uv[0, 1])), bool(cm.in_image(uv)[0])
            depth = None
            if cm is not None and xyz is not None:
                if cam not in self._T_cam_base:
                    self._T_cam_base[cam] = np.linalg.inv(cm.T_base_cam)
                Tcb = self._T_cam_base[cam]
                depth = float(Tcb[2, :3] @ xyz + Tcb[2, 3])
            if point is not None and not (-0.5 <= point[0] <= W - 0.5 and -0.5 <= point[1] <= H - 0.5):
                visible = False
            out.append(ObjView(display_name(o), point, box, visible, xyz, depth, o.get("size")))
        return out

    def annotated_frames(self) -> list[int]:
        return sorted(self.annotations)


def _get(ep: Any, name: str, default=None):
    if isinstance(ep, dict):
        return ep.get(name, default)
    return getattr(ep, name, default)


def _as_camera(c: Any, name: str) -> CameraModel:
    if isinstance(c, CameraModel):
        return c
    if isinstance(c, dict):
        d = dict(c)
        d.setdefault("name", name)
        return CameraModel.from_dict(d)
    raise CalibrationError(f"camera {name!r}: unreadable calibration of type {type(c).__name__}")


def make_view(ep: Any, index: int, dataset: str, meta: dict | None = None, annotations: dict | None = None,
              seg_params: SegmentParams | None = None, episode_id: str | None = None,
              image_sizes: dict[str, tuple[int, int]] | None = None) -> EpisodeView:
    """Adapt an EpisodeData-like object into an EpisodeView (FK + segmentation included).
    image_sizes {cam: (W, H)} lets the caller skip loading pixels (images may then be empty)."""
    meta = dict(meta or {})
    md = dict(_get(ep, "metadata", None) or {})
    images = _get(ep, "images", None) or {}
    state = _get(ep, "state", None)
    state = None if state is None else np.asarray(state, dtype=float)
    if state is not None and (state.ndim != 2 or state.shape[1] < 7):
        raise DatasetError(f"episode {index}: state must have shape (T, 7), got {state.shape}")
    if state is not None and len(state) == 0:
        state = None
    sizes: dict[str, tuple[int, int]] = {}
    for cam, arr in images.items():
        shp = getattr(arr, "shape", None)
        if shp is None or len(shp) != 4:
            raise DatasetError(f"episode {index}: images[{cam!r}] must be (T, H, W, 3), got {shp}")
        sizes[cam] = (int(shp[2]), int(shp[1]))
    for cam, wh in (image_sizes or {}).items():
        if cam in sizes and tuple(sizes[cam]) != tuple(wh):
            raise DatasetError(f"episode {index}: camera {cam!r} images are {sizes[cam]} (WxH), expected {wh}")
        sizes[cam] = (int(wh[0]), int(wh[1]))
    cams_raw = _get(ep, "cameras", None) or {}
    cameras: dict[str, CameraModel] = {}
    for name, c in cams_raw.items():
        if c is None:
            continue
        cm = _as_camera(c, name)
        if name in sizes and (cm.intrinsics.width, cm.intrinsics.height) != sizes[name]:
            cm = cm.resized(*sizes[name])
        cameras[name] = cm
        sizes.setdefault(name, (cm.intrinsics.width, cm.intrinsics.height))
    T = None
    for arr in images.values():
        T = len(arr)
        break
    if T is None:
        T = len(state) if state is not None else int(meta.get("length", 0) or 0)
    if state is not None and len(state) != T:
        raise DatasetError(f"episode {index}: {len(state)} states but {T} image frames")
    ee = fk_positions(state) if state is not None else None
    ee_rec = _get(ep, "ee_pose", None)
    ee_rec = None if ee_rec is None else np.asarray(ee_rec, dtype=float)
    ts = _get(ep, "timestamp", None)
    ts = None if ts is None else np.asarray(ts, dtype=float)
    task = dict(md.get("task") or meta.get("task") or {})
    split = _get(ep, "split", None) or md.get("split") or meta.get("split") or "train"
    success = _get(ep, "success", None)
    success = None if success is None else bool(success)
    instruction = str(_get(ep, "instruction", None) or task.get("goal_text") or "").strip()
    eid = episode_id or str(meta.get("episode_id") or meta.get("id") or meta.get("name") or f"episode_{index:06d}")
    view = EpisodeView(
        index=int(index), episode_id=eid, dataset=str(dataset), split=str(split),
        source=str(md.get("source") or meta.get("source") or "unknown"), instruction=instruction, success=success,
        num_frames=int(T), image_sizes=sizes, cameras=cameras, state=state, ee_pos=ee, ee_pose_recorded=ee_rec,
        timestamp=ts, task=task, metadata=md, objects=_get(ep, "objects", None),
        annotations=dict(annotations or {}),
    )
    if state is not None:
        view.seg = segment_episode(state[:, 6], ee, view.family, view.task_object, view.task_target, success,
                                   seg_params)
    return view
