"""Independent reader for the LeRobot interop test: runs in the reader venv (.venv-lerobot, LeRobot 0.4.4, see
scripts/setup_lerobot_reader.sh), never inside the project's environment, and imports nothing from the project.

    .venv-lerobot/bin/python tests/lerobot_reader.py ROOT [ROOT ...] [--delete-from ROOT --delete-episode K --out DIR]

Opens the dataset with LeRobot's own classes (LeRobotDatasetMetadata, LeRobotDataset with delta timestamps, which
pads by the episodes' dataset_from_index / dataset_to_index) and prints one JSON object on stdout: the metadata
LeRobot sees, every episode's range and tasks, and every frame as LeRobot returns it (task string, indices, numeric
vectors, a digest of each image). With --delete-episode it also runs LeRobot's own dataset tool delete_episodes
(which rewrites data, meta and the per-episode stats columns) and reads the result back the same way.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local datasets only: a load that falls back to the hub fails
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# PyPI's torchvision wheel is CUDA-linked; beside the CPU torch its compiled ops (_C.so) do not load, and
# torchvision's meta registrations then fail on the two detection ops registered without a guard. Declaring
# their schemas lets the genuine torchvision Python code import; LeRobot's dataset path uses none of its ops
# (only transforms.ToTensor for images).
try:
    import torchvision  # noqa: F401
except RuntimeError as e:
    if "torchvision::" not in str(e):
        raise
    _tv = torch.library.Library("torchvision", "DEF")
    _tv.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _tv.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    for m in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[m]
    import torchvision  # noqa: F401

logging.disable(logging.WARNING)
warnings.filterwarnings("ignore")

import lerobot  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata  # noqa: E402


def _digest(t: torch.Tensor) -> dict:
    """An image as LeRobot returns it -> shape, dtype and a sha1 of its pixels in (H, W, C) layout, comparable to the
    same image decoded elsewhere: RGB comes as float (C, H, W) in [0, 1] (hashed as uint8), 16-bit depth as integer
    millimetres (hashed as uint16)."""
    a = t.detach().cpu().numpy()
    if np.issubdtype(a.dtype, np.floating):
        px = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    else:
        px = a.astype(np.int64).astype(np.uint16)
    px = np.ascontiguousarray(px.transpose(1, 2, 0))
    return {"shape": list(a.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "sha1": hashlib.sha1(px.tobytes()).hexdigest(), "min": int(px.min()), "max": int(px.max())}


def _value(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def read(root: str, repo_id: str = "local/interop") -> dict:
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    fps = meta.fps
    # one step back and one ahead: LeRobot clamps to and pads at the episode's [from, to) range
    delta = {"action": [-1.0 / fps, 0.0, 1.0 / fps]}
    ds = LeRobotDataset(repo_id, root=root, delta_timestamps=delta, tolerance_s=1e-3, video_backend="pyav")
    out: dict = {
        "lerobot_version": getattr(lerobot, "__version__", "?"),
        "codebase_version": meta.info["codebase_version"],
        "fps": fps, "robot_type": meta.robot_type,
        "total_episodes": meta.total_episodes, "total_frames": meta.total_frames, "total_tasks": meta.total_tasks,
        "num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "len": len(ds),
        "features": {k: {"dtype": v["dtype"], "shape": list(v["shape"])} for k, v in meta.features.items()},
        "camera_keys": list(meta.camera_keys), "video_keys": list(meta.video_keys),
        # LeRobot looks a task up by position (tasks.iloc[task_index]); report both so a mismatch shows
        "tasks_by_position": [str(name) for name in meta.tasks.index],
        "task_index_column": [int(x) for x in meta.tasks["task_index"]],
        "stats_keys": sorted(meta.stats) if meta.stats is not None else None,
        "episodes": [],
        "frames": [],
    }
    for pos in range(len(meta.episodes)):
        ep = meta.episodes[pos]
        out["episodes"].append({
            "position": pos, "episode_index": int(ep["episode_index"]), "tasks": list(ep["tasks"]),
            "length": int(ep["length"]), "from": int(ep["dataset_from_index"]), "to": int(ep["dataset_to_index"]),
            "data_file": meta.get_data_file_path(int(ep["episode_index"])).as_posix(),
        })
    num_keys = [k for k, ft in meta.features.items() if ft["dtype"] not in ("image", "video", "string")]
    for i in range(len(ds)):
        item = ds[i]
        f = {"i": i, "task": item["task"]}
        for k in num_keys:
            if k in item:
                f[k] = _value(item[k])
        f["action_is_pad"] = _value(item["action_is_pad"])
        for k in meta.camera_keys:
            f[k] = _digest(item[k])
        out["frames"].append(f)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("roots", nargs="*")
    ap.add_argument("--check", action="store_true", help="only import LeRobot and print its version")
    ap.add_argument("--delete-from", default=None, help="a dataset root to run LeRobot's delete_episodes on")
    ap.add_argument("--delete-episode", type=int, default=None)
    ap.add_argument("--out", default=None, help="where delete_episodes writes the new dataset")
    a = ap.parse_args()
    if a.check:
        print(json.dumps({"lerobot": lerobot.__version__, "torch": torch.__version__,
                          "torchvision": torchvision.__version__}))
        return 0
    result: dict = {"reads": {}}
    for root in a.roots:  # one process for all datasets: importing torch + LeRobot is most of the time
        try:
            result["reads"][root] = read(root)
        except Exception as e:  # noqa: BLE001 - reported per dataset, the test names it
            result["reads"][root] = {"error": f"{type(e).__name__}: {e}"}
    if a.delete_from is not None:
        from lerobot.datasets.dataset_tools import delete_episodes

        try:
            ds = LeRobotDataset("local/interop", root=a.delete_from)
            delete_episodes(ds, episode_indices=[a.delete_episode], output_dir=a.out, repo_id="local/deleted")
            result["after_delete"] = read(a.out, "local/deleted")
        except Exception as e:  # noqa: BLE001
            result["after_delete"] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
