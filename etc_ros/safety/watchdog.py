"""Freshness watchdog: hold the arm when the policy or the camera goes quiet. Time is always passed in."""
from __future__ import annotations

import math

from etc_ros.core.errors import SafetyError


def _finite(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise SafetyError(f"{name} must be a finite number of seconds, got {x!r}")
    return float(x)


class Watchdog:
    """`check(now)` returns '' when fresh, else the reason to hold:

    - 'no_chunk_yet'   : no valid chunk accepted since the last reset,
    - 'chunk_timeout'  : the last valid chunk arrived more than chunk_timeout ago,
    - 'camera_timeout' : camera stamps are being reported and the newest is older than camera_timeout.

    The camera check starts with the first reported camera stamp (a run without a camera feed is covered by
    the chunk timeout: no images, no chunks)."""

    def __init__(self, chunk_timeout: float, camera_timeout: float):
        self.chunk_timeout = _finite(chunk_timeout, "chunk_timeout")
        self.camera_timeout = _finite(camera_timeout, "camera_timeout")
        if self.chunk_timeout <= 0 or self.camera_timeout <= 0:
            raise SafetyError("chunk_timeout and camera_timeout must be > 0")
        self.last_chunk: float | None = None
        self.last_camera: float | None = None

    def reset(self) -> None:
        self.last_chunk = None
        self.last_camera = None

    def note_chunk(self, now: float) -> None:
        now = _finite(now, "chunk arrival time")
        self.last_chunk = now if self.last_chunk is None else max(self.last_chunk, now)

    def note_camera(self, stamp: float) -> None:
        stamp = _finite(stamp, "camera stamp")
        self.last_camera = stamp if self.last_camera is None else max(self.last_camera, stamp)

    def chunk_age(self, now: float) -> float | None:
        return None if self.last_chunk is None else float(now) - self.last_chunk

    def camera_age(self, now: float) -> float | None:
        return None if self.last_camera is None else float(now) - self.last_camera

    def check(self, now: float) -> str:
        now = _finite(now, "now")
        if self.last_chunk is None:
            return "no_chunk_yet"
        if now - self.last_chunk > self.chunk_timeout:
            return "chunk_timeout"
        if self.last_camera is not None and now - self.last_camera > self.camera_timeout:
            return "camera_timeout"
        return ""
