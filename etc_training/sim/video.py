"""Episode videos: animated GIF (PIL) or MP4 (PyAV), chosen by the file suffix.

    save_episode_gif(episode, "runs/demo/ep0.gif")            # EpisodeData: its primary camera + instruction
    save_episode_gif(frames, "out.mp4", fps=5, scale=2)       # (T, H, W, 3) uint8 array or list of images
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_ros.core.errors import UserError


class VideoError(UserError):
    pass


def _frames_of(episode_or_frames: Any, camera: str | None) -> tuple[list[np.ndarray], str | None]:
    caption = None
    src = episode_or_frames
    if hasattr(src, "images") and isinstance(getattr(src, "images"), dict):  # EpisodeData
        caption = getattr(src, "instruction", None) or None
        src = src.images
    if isinstance(src, dict):
        if not src:
            raise VideoError("no camera images to write")
        cam = camera or ("primary" if "primary" in src else sorted(src)[0])
        if cam not in src:
            raise VideoError(f"camera {cam!r} not in the episode (cameras: {sorted(src)})")
        src = src[cam]
    frames = [np.asarray(f) for f in (src if isinstance(src, (list, tuple)) else np.asarray(src))]
    if not frames:
        raise VideoError("no frames to write")
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise VideoError(f"frame {i} must be an (H, W, 3) uint8 image, got {f.dtype} {f.shape}")
        if f.shape != frames[0].shape:
            raise VideoError(f"frame {i} has shape {f.shape}, frame 0 has {frames[0].shape}")
    return frames, caption


def _decorate(frames: Sequence[np.ndarray], scale: int, caption: str | None) -> list[np.ndarray]:
    from PIL import Image, ImageDraw

    out = []
    for f in frames:
        im = Image.fromarray(f)
        if scale != 1:
            im = im.resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
        if caption:
            d = ImageDraw.Draw(im)
            h = 12 * max(1, scale // 2) + 4
            d.rectangle([0, im.height - h, im.width, im.height], fill=(0, 0, 0))
            d.text((4, im.height - h + 2), caption[: 12 + im.width // 6], fill=(255, 255, 255))
        out.append(np.asarray(im))
    return out


def save_episode_gif(episode_or_frames: Any, path: str | Path, *, fps: float = 5.0, camera: str | None = None,
                     scale: int = 1, caption: str | None | bool = True) -> Path:
    """Write an episode (EpisodeData or a dict {camera: frames}) or a frame sequence as a GIF (.gif, PIL) or an
    MP4 (.mp4, PyAV H.264/MPEG-4). caption=True uses the episode's instruction (if any); a string overrides it;
    False/None writes no caption. Returns the path."""
    path = Path(path)
    if fps <= 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    if int(scale) < 1:
        raise VideoError(f"scale must be a positive integer, got {scale}")
    frames, instr = _frames_of(episode_or_frames, camera)
    text = instr if caption is True else (caption or None)
    frames = _decorate(frames, int(scale), text)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(round(1000.0 / fps)), loop=0,
                    optimize=False)
    elif suffix == ".mp4":
        _write_mp4(frames, path, fps)
    else:
        raise VideoError(f"unsupported video format {path.suffix!r}: use .gif or .mp4")
    return path


def _write_mp4(frames: Sequence[np.ndarray], path: Path, fps: float) -> None:
    from fractions import Fraction

    import av

    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2  # yuv420p needs even sizes
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        for f in frames:
            if pad_h or pad_w:
                f = np.pad(f, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
