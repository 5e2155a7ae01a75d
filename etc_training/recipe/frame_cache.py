"""Training frames decoded once, at the model resolution, into a memory map.

The dataset stores one PNG per frame plus per-frame object JSON; reading one training frame through the episode
reader decodes the whole episode (every PNG and every JSON row): 35 % of a training step, measured. The cache
decodes every frame of one camera once, resizes it with the project's one resize (etc_ros.core.image.resize_image,
as the processor does: the model sees exactly what the robot runtime will feed it) and keeps:

    frames_<camera>_<size>.u8      (N, size, size, 3) uint8, memory-mapped (shared by processes, paged by the OS)
    grounding_<camera>_<size>.f32  (N, 6) float32: image points of the manipulated object, the place target and
                                   the gripper (end effector), normalized to [-1, 1] (NaN where absent / not in
                                   view); no JSON at train time
    objects_<camera>_<size>.f32    (N, MAX_OBJECTS, 2) float32: the image point of every object of the scene (in
                                   the order of `names`), normalized; NaN for absent slots / objects out of view
    index_<camera>_<size>.json     {fingerprint, episodes: {episode: [offset, length]}, names: {episode: [...]}}

It lives next to the dataset (`<dataset>/../.frame_cache/<dataset name>/`) and is rebuilt, atomically, when the
dataset changes (the fingerprint covers every episode's index, length and data file size / mtime).

    cache = FrameCache.open("runs/data/pickup", "primary", 96)
    img = cache.frame(episode=3, t=10)          # (96, 96, 3) uint8
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from etc_ros.core.image import resize_image
from etc_ros.core.io import atomic_write_json
from etc_training.recipe.config import RecipeError

GROUNDING_ROLES = ("object", "target")
POINTS = 6  # object u, v, target u, v, gripper u, v
MAX_OBJECTS = 6  # per scene, for the grounding queries (named objects, distractors included)
FORMAT = "frame-cache/3"


def cache_dir_for(root: str | Path) -> Path:
    r = Path(root).resolve()
    return r.parent / ".frame_cache" / r.name


def dataset_fingerprint(reader) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for e in reader.episodes():
        p = reader.data_path(e)
        st = p.stat() if p.exists() else None
        h.update(f"{e}:{reader.episode_length(e)}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};"
                 .encode())
    return h.hexdigest()[:24]


def _norm_uv(u: float, v: float, width: int, height: int) -> tuple[float, float]:
    return 2.0 * (u + 0.5) / width - 1.0, 2.0 * (v + 0.5) / height - 1.0


def gripper_points(ee_xyz: np.ndarray, model) -> np.ndarray:
    """(T, 2) normalized image points of the end effector (base-frame positions) through the camera model; NaN
    when behind the camera or without a model."""
    out = np.full((len(ee_xyz), 2), np.nan, dtype=np.float32)
    if model is None or not len(ee_xyz):
        return out
    uv, z = model.project(np.asarray(ee_xyz, dtype=np.float64))
    w, h = model.intrinsics.width, model.intrinsics.height
    ok = (z > 1e-6) & np.all(np.isfinite(uv), axis=1)
    out[ok, 0] = 2.0 * (uv[ok, 0] + 0.5) / w - 1.0
    out[ok, 1] = 2.0 * (uv[ok, 1] + 0.5) / h - 1.0
    return out


def object_points(objects: list, camera: str, width: int, height: int) -> np.ndarray:
    """(MAX_OBJECTS, 2) normalized image points of every annotated object (scene order), NaN where absent."""
    out = np.full((MAX_OBJECTS, 2), np.nan, dtype=np.float32)
    for k, o in enumerate((objects or [])[:MAX_OBJECTS]):
        pt = ((o.get("cameras") or {}).get(camera) or {}).get("point")
        if pt is not None:
            out[k] = _norm_uv(float(pt[0]), float(pt[1]), width, height)
    return out


def grounding_points(objects: list, camera: str, width: int, height: int) -> np.ndarray:
    """(6,) float32: [u, v] of the role-"object" and role-"target" annotations in [-1, 1] and two NaN slots for
    the gripper (filled from the EE pose by the cache); NaN where absent."""
    out = np.full(POINTS, np.nan, dtype=np.float32)
    for k, role in enumerate(GROUNDING_ROLES):
        for o in objects or []:
            if o.get("role") != role:
                continue
            info = (o.get("cameras") or {}).get(camera) or {}
            pt = info.get("point")
            if pt is not None and info.get("visible", True):
                out[2 * k], out[2 * k + 1] = _norm_uv(float(pt[0]), float(pt[1]), width, height)
            break
    return out


class FrameCache:
    def __init__(self, directory: Path, camera: str, size: int, index: dict):
        self.directory, self.camera, self.size = directory, camera, int(size)
        self.offsets = {int(e): (int(o), int(n)) for e, (o, n) in index["episodes"].items()}
        n = int(index["frames"])
        self.frames = np.memmap(directory / f"frames_{camera}_{size}.u8", dtype=np.uint8, mode="r",
                                shape=(n, size, size, 3))
        self.grounding = np.memmap(directory / f"grounding_{camera}_{size}.f32", dtype=np.float32, mode="r",
                                   shape=(n, POINTS))
        self.objects = np.memmap(directory / f"objects_{camera}_{size}.f32", dtype=np.float32, mode="r",
                                 shape=(n, MAX_OBJECTS, 2))
        self.names = {int(e): list(v) for e, v in index.get("names", {}).items()}

    # ------------------------------------------------------------------ building / opening
    @classmethod
    def open(cls, root: str | Path, camera: str, size: int, reader=None, progress: bool = True) -> "FrameCache":
        from etc_ros.data import DatasetReader

        root = Path(root)
        reader = reader or DatasetReader(root)
        if camera not in reader.cameras:
            raise RecipeError(f"{root}: no camera {camera!r} (cameras: {list(reader.cameras)})")
        d = cache_dir_for(root)
        idx_path = d / f"index_{camera}_{size}.json"
        fp = dataset_fingerprint(reader)
        if idx_path.is_file():
            try:
                index = json.loads(idx_path.read_text())
                if index.get("fingerprint") == fp:
                    return cls(d, camera, size, index)
            except (json.JSONDecodeError, OSError, ValueError, KeyError):
                pass  # unreadable or partial: rebuild
        return cls._build(reader, d, camera, int(size), fp, progress)

    @classmethod
    def _build(cls, reader, d: Path, camera: str, size: int, fp: str, progress: bool) -> "FrameCache":
        d.mkdir(parents=True, exist_ok=True)
        eps = list(reader.episodes())
        lengths = [int(reader.episode_length(e)) for e in eps]
        n = int(sum(lengths))
        if n == 0:
            raise RecipeError(f"{reader.root}: the dataset has no frames to cache")
        h, w = reader.spec.cameras[camera]
        tag = f"{camera}_{size}"
        tmp_f = d / f".frames_{tag}.u8.{os.getpid()}.tmp"
        tmp_g = d / f".grounding_{tag}.f32.{os.getpid()}.tmp"
        tmp_o = d / f".objects_{tag}.f32.{os.getpid()}.tmp"
        fm = np.memmap(tmp_f, dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
        gm = np.memmap(tmp_g, dtype=np.float32, mode="w+", shape=(n, POINTS))
        om = np.memmap(tmp_o, dtype=np.float32, mode="w+", shape=(n, MAX_OBJECTS, 2))
        offsets, names, off = {}, {}, 0
        try:
            from tqdm import tqdm

            it = tqdm(list(zip(eps, lengths)), desc=f"frame cache {tag}", unit="ep", disable=not progress)
        except ImportError:  # pragma: no cover
            it = list(zip(eps, lengths))
        try:
            for e, T in it:
                ep = reader.load_episode(e, images=True)
                imgs = ep.images[camera]
                if len(imgs) != T:
                    raise RecipeError(f"{reader.root}: episode {e} has {len(imgs)} frames, index says {T}")
                grip = gripper_points(np.asarray(ep.ee_pose)[:, :3], (ep.cameras or {}).get(camera))
                for t in range(T):
                    fm[off + t] = resize_image(imgs[t], size, size)
                    g = grounding_points(ep.objects[t] if ep.objects else [], camera, w, h)
                    g[4:6] = grip[t]
                    gm[off + t] = g
                    om[off + t] = object_points(ep.objects[t] if ep.objects else [], camera, w, h)
                first = ep.objects[0] if ep.objects else []
                names[str(e)] = [str(o.get("name", "")) for o in first][:MAX_OBJECTS]
                offsets[str(e)] = [off, T]
                off += T
            fm.flush()
            gm.flush()
            om.flush()
            del fm, gm, om
            os.replace(tmp_f, d / f"frames_{tag}.u8")
            os.replace(tmp_g, d / f"grounding_{tag}.f32")
            os.replace(tmp_o, d / f"objects_{tag}.f32")
        except BaseException:
            for p in (tmp_f, tmp_g, tmp_o):
                p.unlink(missing_ok=True)
            raise
        index = {"format": FORMAT, "fingerprint": fp, "camera": camera, "size": size, "frames": n, "episodes": offsets,
                 "names": names, "dataset": str(Path(reader.root).resolve())}
        atomic_write_json(d / f"index_{tag}.json", index)
        return cls(d, camera, size, index)

    # ------------------------------------------------------------------ access
    def _row(self, episode: int, t: int) -> int:
        hit = self.offsets.get(int(episode))
        if hit is None:
            raise RecipeError(f"frame cache {self.directory}: no episode {episode}")
        off, n = hit
        if not 0 <= int(t) < n:
            raise RecipeError(f"frame cache: episode {episode} has frames 0..{n - 1}, asked for {t}")
        return off + int(t)

    def frame(self, episode: int, t: int) -> np.ndarray:
        return np.asarray(self.frames[self._row(episode, t)])

    def points(self, episode: int, t: int) -> np.ndarray:
        return np.asarray(self.grounding[self._row(episode, t)])

    def scene_objects(self, episode: int, t: int) -> list[tuple[str, np.ndarray]]:
        """[(name, (2,) normalized image point)] of the objects in view whose name is unique in the scene."""
        names = self.names.get(int(episode), [])
        pts = np.asarray(self.objects[self._row(episode, t)])
        out = []
        for k, n in enumerate(names):
            if n and names.count(n) == 1 and np.all(np.isfinite(pts[k])) and np.all(np.abs(pts[k]) <= 1.0):
                out.append((n, pts[k]))
        return out


def random_shift(img: np.ndarray, pad: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """DrQ-style augmentation: pad by `pad` pixels (edge replicate) and crop back at a random offset. Returns the
    image and the shift (dx, dy) in pixels applied to its content."""
    if pad <= 0:
        return img, 0, 0
    h, w = img.shape[:2]
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    ox, oy = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    return np.ascontiguousarray(p[oy:oy + h, ox:ox + w]), pad - ox, pad - oy
