"""Episode dataset throughput: write, sequential read (load_episode) and random access (frame()) in frames/s,
one 224x224 camera, PNG (default, lossless) and mp4 video mode.

Images are synthetic "rendered scenes" (smooth gradient background, a few flat-coloured boxes, mild sensor
noise), which compress like simulator renders; pure noise would be the worst case for PNG.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from etc_ros.core import spec as robot_spec


def _scene_images(rng: np.random.Generator, T: int, h: int = robot_spec.IMAGE_SIZE,
                  w: int = robot_spec.IMAGE_SIZE) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([90 + 60 * x / w, 100 + 40 * y / h, 120 + 20 * (x + y) / (w + h)], -1)
    out = np.empty((T, h, w, 3), np.uint8)
    boxes = [(rng.integers(0, h - 40), rng.integers(0, w - 40), rng.integers(20, 40), rng.integers(0, 256, 3))
             for _ in range(4)]
    for t in range(T):
        img = base.copy()
        for k, (r0, c0, s, col) in enumerate(boxes):
            dr = int(3 * np.sin(t / 5 + k))
            img[max(r0 + dr, 0):r0 + dr + s, c0:c0 + s] = col
        img += rng.normal(0, 2.0, img.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _episode(rng: np.random.Generator, T: int, fps: float):
    from etc_ros.data import EpisodeData

    state = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
    state[:, 6] = rng.uniform(0, 1, T)
    action = rng.uniform(-0.05, 0.05, (T, 7)).astype(np.float32)
    action[:, 6] = rng.integers(0, 2, T)
    return EpisodeData(images={"primary": _scene_images(rng, T)}, state=state,
                       ee_pose=rng.normal(0, 0.2, (T, 6)).astype(np.float32), action=action,
                       timestamp=(np.arange(T) / fps).astype(np.float32), instruction="pick up the red cube",
                       metadata={"source": "sim"})


def _measure(root: Path, video: bool, n_eps: int, T: int, n_random: int, seed: int = 0) -> dict:
    from etc_ros.data import DatasetReader, DatasetSpec, DatasetWriter, validate_dataset

    rng = np.random.default_rng(seed)
    eps = [_episode(rng, T, 5.0) for _ in range(n_eps)]
    image_hw = (robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE)
    dataset_spec = DatasetSpec(fps=robot_spec.POLICY_HZ, cameras={"primary": image_hw}, video=video)
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    with DatasetWriter.create(root, dataset_spec) as w:
        for e in eps:
            w.write_episode(e)
    t_write = time.perf_counter() - t0
    frames = n_eps * T
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    r = DatasetReader(root)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n_eps):
        r.load_episode(i)
    t_seq = time.perf_counter() - t0
    idx = np.random.default_rng(seed + 1).integers(0, frames, n_random)
    r2 = DatasetReader(root)  # cold handle cache
    t0 = time.perf_counter()
    for g in idx:
        r2.frame(int(g))
    t_rand = time.perf_counter() - t0
    t0 = time.perf_counter()
    for g in idx:
        r2.frame(int(g), images=False)
    t_rand_noimg = time.perf_counter() - t0
    t0 = time.perf_counter()
    errors = validate_dataset(root)
    t_val = time.perf_counter() - t0
    return {
        "episodes": n_eps, "frames": frames, "frames_per_episode": T,
        "write_fps": round(frames / t_write, 1),
        "read_sequential_fps": round(frames / t_seq, 1),
        "read_random_frame_fps": round(n_random / t_rand, 1),
        "read_random_frame_no_images_fps": round(n_random / t_rand_noimg, 1),
        "validate_fps": round(frames / t_val, 1), "validate_errors": len(errors),
        "open_s": round(t_open, 4), "bytes_per_frame": int(size / frames),
    }


def run(out_dir: Path, quick: bool = False) -> dict:
    """Write / read throughput of the episode dataset at 224x224, one camera. Returns the results dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_eps, T, n_random = (3, 20, 60) if quick else (20, 50, 500)
    res: dict = {"image_size": [robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE], "cameras": 1, "quick": quick}
    for name, video in (("png", False), ("video_h264", True)):
        root = out_dir / f"dataset_{name}"
        try:
            res[name] = _measure(root, video, n_eps if not video else max(2, n_eps // 2), T, n_random)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return res


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dataset_bench"),
                         quick="--quick" in sys.argv), indent=2))
