"""Camera calibration files and calibration captures (numpy + OpenCV + PyYAML, no ROS).

- Calibration file: YAML written by `etc-vla calibrate` (`save_intrinsics`, then `save_camera_model`) with the
  CameraModel.to_dict keys (name, intrinsics, T_base_cam) plus the calibration reports; a .json file with the same
  keys is read as JSON. `load_calibration_file` is the one reader of these files: `load_camera_model` (the
  recorder's cameras) and `load_intrinsics` (the camera node's `calibration` parameter) are built on it.
- Capture: view_NNN.png (RGB) + view_NNN.json {"q": [6 joint positions], "gripper": g} per view (`save_views`,
  written by the recorder node's ~/capture service; `load_views`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_ros.core.camera import CameraIntrinsics, CameraModel
from etc_ros.core.errors import CalibrationError


def save_camera_model(model: CameraModel, path: str | Path, report: dict | None = None,
                      extra: dict | None = None) -> Path:
    """YAML with CameraModel.to_dict() keys (what the recorder and the camera node read) + the report."""
    import yaml

    from etc_ros.core.io import atomic_write_text

    d = model.to_dict()
    if extra:
        d.update(extra)
    if report is not None:
        d["calibration"] = report
    d.setdefault("calibration_time", time.strftime("%Y-%m-%dT%H:%M:%S"))
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def save_intrinsics(intr: CameraIntrinsics, path: str | Path, name: str, report: dict | None = None) -> Path:
    """Intrinsics only (before the extrinsics exist); `calibrate extrinsics` completes the same file."""
    import yaml

    from etc_ros.core.io import atomic_write_text

    d: dict[str, Any] = {"name": name, "intrinsics": intr.to_dict()}
    if report is not None:
        d["calibration_intrinsics"] = report
    d["calibration_time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def load_calibration_file(path: str | Path, require_intrinsics: bool = True) -> dict[str, Any]:
    """The mapping stored in a camera calibration file (YAML; JSON when the name ends in .json).
    CalibrationError when the file is missing, unreadable or not a mapping, or (require_intrinsics) has no
    'intrinsics'."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"camera calibration file {p} not found")
    as_json = p.suffix == ".json"
    try:
        text = p.read_text()
        d = json.loads(text) if as_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CalibrationError(f"{p}: invalid {'JSON' if as_json else 'YAML'}: {e}") from None
    if not isinstance(d, dict):
        raise CalibrationError(f"{p}: a calibration file holds a mapping (intrinsics, T_base_cam)")
    if require_intrinsics and "intrinsics" not in d:
        raise CalibrationError(f"{p}: not a calibration file (no 'intrinsics')")
    return d


def load_camera_model(path: str | Path) -> CameraModel:
    """Intrinsics and extrinsics (T_base_cam) of a calibration file; CalibrationError when either is missing."""
    return CameraModel.from_dict(load_calibration_file(path, require_intrinsics=False))


def load_intrinsics(path: str | Path) -> CameraIntrinsics:
    """The intrinsics of a calibration file (with or without T_base_cam; a T_base_cam present must be valid), or
    of a file holding only the intrinsics mapping (width, height, fx, fy, cx, cy, distortion)."""
    d = load_calibration_file(path, require_intrinsics=False)
    if "intrinsics" in d:
        if "T_base_cam" in d:
            return CameraModel.from_dict(d).intrinsics
        return CameraIntrinsics.from_dict(d["intrinsics"])
    return CameraIntrinsics.from_dict(d)


def save_views(directory: str | Path, images: Sequence[np.ndarray], joints: Sequence[Sequence[float]],
               gripper: Sequence[float] | None = None, start: int = 0) -> list[Path]:
    """Write a calibration capture: view_NNN.png (RGB) + view_NNN.json {"q": [6], "gripper": g}."""
    import cv2

    from etc_ros.core.io import atomic_write_bytes, atomic_write_json

    out = []
    d = Path(directory)
    for k, (img, q) in enumerate(zip(images, joints)):
        name = d / f"view_{start + k:03d}"
        a = np.asarray(img)
        ok, buf = cv2.imencode(".png", a[:, :, ::-1] if a.ndim == 3 else a)
        if not ok:
            raise CalibrationError(f"cannot encode {name}.png")
        atomic_write_bytes(name.with_suffix(".png"), buf.tobytes())
        meta: dict[str, Any] = {"q": [float(x) for x in np.asarray(q, dtype=float).reshape(6)]}
        if gripper is not None:
            meta["gripper"] = float(gripper[k])
        atomic_write_json(name.with_suffix(".json"), meta)
        out.append(name.with_suffix(".png"))
    return out


def load_views(directory: str | Path, need_joints: bool = True) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """[(name, RGB image, q (6,) or None)] of a capture directory (sorted by name)."""
    import cv2

    d = Path(directory)
    if not d.is_dir():
        raise CalibrationError(f"views directory {d} not found")
    pngs = sorted(list(d.glob("*.png")) + list(d.glob("*.jpg")))
    if not pngs:
        raise CalibrationError(f"{d}: no calibration images (*.png / *.jpg)")
    out: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for p in pngs:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"{p}: not a readable image")
        q = None
        j = p.with_suffix(".json")
        if j.is_file():
            try:
                meta = json.loads(j.read_text())
                q = np.asarray(meta["q"], dtype=float).reshape(6)
            except (ValueError, KeyError, TypeError) as e:
                raise CalibrationError(f"{j}: needs {{\"q\": [6 joint positions in rad]}}: {e}") from None
        elif need_joints:
            raise CalibrationError(f"{p}: no joint state file {j.name} next to it (extrinsics need one per view)")
        out.append((p.stem, np.ascontiguousarray(img[:, :, ::-1]), q))
    return out
