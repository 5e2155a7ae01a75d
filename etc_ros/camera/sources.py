"""Camera sources (pure: no ROS) and the reconnect-with-backoff wrapper used by the camera node.

A source has open() / read() / close(). `read()` returns a Frame (RGB uint8 HxWx3, optional aligned depth in
metres) or raises CameraError when the device is gone; the node never sees driver exceptions.

- RealSenseSource: Intel RealSense through pyrealsense2 (imported lazily), color 640x480 @ 30 by default,
  optional depth aligned to color. Each frame carries its capture time on the host clock when the device's
  timestamp domain is one (system_time, global_time); a hardware_clock timestamp (the camera's own clock) is
  never passed off as host time: such frames carry only their receive time.
- OpenCVSource: UVC cameras through OpenCV (imported lazily), BGR converted to RGB.
- SimCameraSource: renders a camera of the MuJoCo world (any object with render(camera) and camera_model(name)).
- FakeCameraSource: synthetic frames; fails to open / read N times on request (tests of the reconnect logic).

ReconnectingCamera wraps a source: on failure it closes the source and retries open() with exponential
backoff (initial, x2, capped), counting reconnects for the diagnostics.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.errors import UserError

CAMERA_TYPES = ("realsense", "opencv", "sim", "fake")


class CameraError(UserError):
    """The camera cannot be opened or stopped delivering frames (unplugged, busy, wrong id...)."""


# librealsense timestamp domains (rs2_timestamp_domain); get_timestamp() is in milliseconds in all of them
HOST_CLOCK_DOMAINS = ("system_time", "global_time")  # ms since the epoch of the host's system clock
# system_time: measured on the host clock; global_time: the camera clock converted to the host clock by
# librealsense (which keeps measuring the offset); hardware_clock: the camera's own clock (arbitrary origin).
MAX_CAPTURE_AGE = 1.0  # s: an older capture time means a clock mapping gone wrong; the receive time is used


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8, RGB
    depth: np.ndarray | None = None  # (H, W) float32 metres aligned to `image`, 0 = no reading
    device_time: float | None = None  # the device's own timestamp [s] when it has one (not the ROS stamp)
    capture_time: float | None = None  # capture time on the host wall clock (time.time() seconds), when known
    receive_time: float | None = None  # host wall clock (time.time()) when the frame reached this process
    time_domain: str = ""  # the device timestamp's domain ('' = no device timestamp)


def frame_stamp(frame: Frame, node_now: float, wall_now: float,
                max_age: float = MAX_CAPTURE_AGE) -> tuple[float, str, str]:
    """Stamp on the node's clock for `frame`: (stamp, source, note). node_now / wall_now: the node's clock (ROS time)
    and time.time(), read together; the host wall-clock times of the frame are mapped by their age, so the node's
    clock may differ from the wall clock (offset or simulated time). source: 'capture' (the device's capture time),
    'receive' (the host receive time: no host-clock capture time, or an implausible one, said in note) or 'now'.
    Never after node_now."""
    note = ""
    if frame.capture_time is not None:
        age = float(wall_now) - float(frame.capture_time)
        if not np.isfinite(age):
            note = f"capture time {frame.capture_time!r} is not a number"
        elif age < -0.005:  # a few ms of rounding are fine; more means the clocks disagree
            note = f"capture time {-age * 1000:.1f} ms after now ({frame.time_domain})"
        elif age > max_age:
            note = f"capture time {age:.3f} s old > {max_age:g} s ({frame.time_domain})"
        else:
            return float(node_now) - max(0.0, age), "capture", ""
    elif frame.time_domain and frame.time_domain not in HOST_CLOCK_DOMAINS:
        note = f"device timestamp domain {frame.time_domain} is not the host clock"
    if frame.receive_time is not None:
        age = float(wall_now) - float(frame.receive_time)
        if np.isfinite(age):
            return float(node_now) - min(max(0.0, age), max_age), "receive", note
    return float(node_now), "now", note


def timestamp_domain_name(domain: Any) -> str:
    """'system_time' for pyrealsense2's timestamp_domain.system_time (or the enum's value printed otherwise)."""
    name = getattr(domain, "name", None)
    if not isinstance(name, str) or not name:
        name = str(domain)
    return name.rsplit(".", 1)[-1].strip().lower()


class CameraSource:
    """Base class: subclasses implement _open / _read / _close."""

    kind = "base"

    def __init__(self, name: str = "primary", width: int = 640, height: int = 480, fps: float = 30.0):
        if width <= 0 or height <= 0:
            raise CameraError(f"camera {name!r}: width/height must be positive, got {width}x{height}")
        if not fps > 0:
            raise CameraError(f"camera {name!r}: fps must be positive, got {fps}")
        self.name = name
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self._open_flag = False

    @property
    def is_open(self) -> bool:
        return self._open_flag

    def intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the delivered images (nominal Bridge values scaled to the size when unknown)."""
        return CameraIntrinsics().resized(self.width, self.height)

    def open(self) -> None:
        if self._open_flag:
            return
        self._open()
        self._open_flag = True

    def read(self) -> Frame:
        if not self._open_flag:
            raise CameraError(f"camera {self.name!r} ({self.kind}) is not open")
        frame = self._read()
        img = frame.image
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
            raise CameraError(f"camera {self.name!r} ({self.kind}) returned a malformed image "
                              f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}")
        return frame

    def close(self) -> None:
        if not self._open_flag:
            return
        self._open_flag = False
        try:
            self._close()
        except Exception:  # closing a vanished device must not raise
            pass

    # subclass hooks
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> Frame:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class RealSenseSource(CameraSource):
    kind = "realsense"

    def __init__(self, name: str = "primary", width: int = 640, height: int = 480, fps: float = 30.0,
                 serial: str = "", depth: bool = False, timeout_s: float = 1.0):
        super().__init__(name, width, height, fps)
        self.serial = serial
        self.depth = bool(depth)
        self.timeout_ms = int(timeout_s * 1000)
        self._pipe = None
        self._align = None
        self._scale = 0.001
        self._intr: CameraIntrinsics | None = None

    def _open(self) -> None:
        try:
            import pyrealsense2 as rs  # noqa: WPS433 (lazy: only on machines with a RealSense)
        except ImportError as e:
            raise CameraError("camera_type 'realsense' needs pyrealsense2 (pip install pyrealsense2)") from e
        cfg = rs.config()
        if self.serial:
            cfg.enable_device(str(self.serial))
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, int(self.fps))
        if self.depth:
            cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, int(self.fps))
        pipe = rs.pipeline()
        try:
            profile = pipe.start(cfg)
        except RuntimeError as e:
            raise CameraError(f"RealSense {self.serial or '(any)'}: cannot start {self.width}x{self.height}"
                              f"@{self.fps:g}: {e}") from e
        self._pipe = pipe
        vp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = vp.get_intrinsics()
        coeffs = tuple(float(c) for c in getattr(i, "coeffs", ())[:5])
        self._intr = CameraIntrinsics(width=i.width, height=i.height, fx=i.fx, fy=i.fy, cx=i.ppx, cy=i.ppy,
                                      distortion=coeffs if any(coeffs) else ())
        if self.depth:
            self._scale = float(profile.get_device().first_depth_sensor().get_depth_scale())
            self._align = rs.align(rs.stream.color)

    def intrinsics(self) -> CameraIntrinsics:
        return self._intr or super().intrinsics()

    def _read(self) -> Frame:
        try:
            frames = self._pipe.wait_for_frames(self.timeout_ms)
        except RuntimeError as e:  # timeout or device removed
            raise CameraError(f"RealSense {self.serial or '(any)'}: no frame: {e}") from e
        received = time.time()
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            raise CameraError("RealSense: frame set without color")
        img = np.asanyarray(color.get_data()).copy()
        depth = None
        if self._align is not None:
            d = frames.get_depth_frame()
            if d:
                depth = np.asanyarray(d.get_data()).astype(np.float32) * self._scale
        ts = float(color.get_timestamp()) / 1000.0  # ms -> s
        domain = timestamp_domain_name(color.get_frame_timestamp_domain())
        return Frame(img, depth, ts, capture_time=ts if domain in HOST_CLOCK_DOMAINS else None,
                     receive_time=received, time_domain=domain)

    def _close(self) -> None:
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            pipe.stop()


class OpenCVSource(CameraSource):
    kind = "opencv"

    def __init__(self, name: str = "primary", width: int = 640, height: int = 480, fps: float = 30.0,
                 device: str | int = 0):
        super().__init__(name, width, height, fps)
        self.device = device
        self._cap = None

    def _open(self) -> None:
        try:
            import cv2  # noqa: WPS433
        except ImportError as e:
            raise CameraError("camera_type 'opencv' needs OpenCV (pip install opencv-python-headless)") from e
        dev: Any = self.device
        if isinstance(dev, str) and dev.strip().isdigit():
            dev = int(dev)
        cap = cv2.VideoCapture(dev)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"OpenCV camera {self.device!r} cannot be opened (unplugged or busy?)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def _read(self) -> Frame:
        import cv2  # noqa: WPS433

        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"OpenCV camera {self.device!r}: no frame (device gone?)")
        if bgr.shape[1] != self.width or bgr.shape[0] != self.height:
            bgr = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return Frame(np.ascontiguousarray(bgr[:, :, ::-1]))

    def _close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class SimCameraSource(CameraSource):
    """A camera of the simulated world. `env` provides render(camera) -> uint8 HxWx3 and optionally
    camera_model(name) -> CameraModel; `lock` serializes access with the physics stepping."""

    kind = "sim"

    def __init__(self, env: Any, name: str = "primary", fps: float = 10.0, lock: Any = None,
                 camera: str | None = None):
        self.env = env
        self.camera = camera or name
        self.lock = lock if lock is not None else threading.Lock()
        w, h = 640, 480
        self._model = None
        if hasattr(env, "camera_model"):
            try:
                self._model = env.camera_model(self.camera)
                w, h = self._model.intrinsics.width, self._model.intrinsics.height
            except Exception as e:  # unknown camera name
                raise CameraError(f"simulated camera {self.camera!r} is not in the world: {e}") from e
        super().__init__(name, w, h, fps)

    def intrinsics(self) -> CameraIntrinsics:
        return self._model.intrinsics if self._model is not None else super().intrinsics()

    def _open(self) -> None:
        if self.env is None:
            raise CameraError("simulated camera has no world")

    def _read(self) -> Frame:
        with self.lock:
            img = self.env.render(self.camera)
        img = np.ascontiguousarray(img)
        if img.ndim == 3 and img.shape[:2] != (self.height, self.width):
            self.height, self.width = img.shape[:2]
        return Frame(img)


class FakeCameraSource(CameraSource):
    """Synthetic frames (a moving gradient). Failure injection for tests:
    - fail_opens: the next N open() calls raise CameraError;
    - fail_after: after this many successful reads, reads raise (device unplugged) until `unplug_reads`
      further reads have failed; with `replug=False` it stays unplugged (every open fails) until plug()."""

    kind = "fake"

    def __init__(self, name: str = "primary", width: int = 64, height: int = 48, fps: float = 30.0,
                 fail_opens: int = 0, fail_after: int | None = None, unplug_reads: int = 1):
        super().__init__(name, width, height, fps)
        self.fail_opens = int(fail_opens)
        self.fail_after = fail_after
        self.unplug_reads = int(unplug_reads)
        self.opens = 0
        self.reads = 0
        self.failed_reads = 0
        self.unplugged = False
        self._lock = threading.Lock()

    def unplug(self) -> None:
        with self._lock:
            self.unplugged = True

    def plug(self) -> None:
        with self._lock:
            self.unplugged = False
            self.fail_opens = 0

    def _open(self) -> None:
        with self._lock:
            if self.unplugged:
                raise CameraError(f"fake camera {self.name!r}: device not present")
            if self.fail_opens > 0:
                self.fail_opens -= 1
                raise CameraError(f"fake camera {self.name!r}: cannot open (injected failure)")
            self.opens += 1

    def _read(self) -> Frame:
        with self._lock:
            if self.unplugged:
                raise CameraError(f"fake camera {self.name!r}: device gone")
            if self.fail_after is not None and self.reads >= self.fail_after and \
                    self.failed_reads < self.unplug_reads:
                self.failed_reads += 1
                raise CameraError(f"fake camera {self.name!r}: device gone (injected failure)")
            k = self.reads
            self.reads += 1
        yy, xx = np.mgrid[0:self.height, 0:self.width]
        img = np.stack([(xx + k) % 256, (yy + 2 * k) % 256, np.full_like(xx, (7 * k) % 256)], axis=-1)
        return Frame(img.astype(np.uint8))


def make_source(kind: str, name: str = "primary", env: Any = None, lock: Any = None, **params: Any) -> CameraSource:
    """Build a source from its type name and parameters (those of the camera node; unknown ones are ignored)."""
    kind = (kind or "").strip().lower()
    w, h, fps = int(params.get("width", 640)), int(params.get("height", 480)), float(params.get("fps", 30.0))
    if kind == "realsense":
        return RealSenseSource(name, w, h, fps, serial=str(params.get("serial", "") or ""),
                               depth=bool(params.get("depth", False)))
    if kind == "opencv":
        return OpenCVSource(name, w, h, fps, device=params.get("device", 0))
    if kind == "sim":
        if env is None:
            raise CameraError("camera_type 'sim' needs the simulated world: run it inside the sim_robot node "
                              "(use_sim:=true)")
        return SimCameraSource(env, name, fps=fps, lock=lock)
    if kind == "fake":
        return FakeCameraSource(name, w, h, fps)
    raise CameraError(f"unknown camera_type {kind!r}; expected one of {list(CAMERA_TYPES)}")


@dataclass
class ReconnectingCamera:
    """Keeps a source delivering: open on first poll, on CameraError close and retry open() after a backoff
    that doubles up to `backoff_max`. poll() never raises CameraError and never sleeps."""

    source: CameraSource
    backoff_initial: float = 0.1
    backoff_max: float = 2.0
    clock: Callable[[], float] = time.monotonic
    state: str = "disconnected"  # disconnected | connected | reconnecting | closed
    frames: int = 0
    reconnects: int = 0  # successful re-opens after a failure
    failures: int = 0  # total open/read failures
    consecutive_failures: int = 0
    last_error: str = ""
    last_frame_time: float | None = None
    _next_try: float = 0.0
    _backoff: float = field(default=0.0, repr=False)
    _ever_connected: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.backoff_initial > 0 and self.backoff_max >= self.backoff_initial):
            raise CameraError(f"camera backoff must satisfy 0 < initial <= max, got {self.backoff_initial}, "
                              f"{self.backoff_max}")
        self._backoff = self.backoff_initial

    def _fail(self, now: float, err: Exception) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = str(err)
        self.source.close()
        self.state = "reconnecting" if self._ever_connected else "disconnected"
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2.0, self.backoff_max)

    def seconds_until_retry(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return max(0.0, self._next_try - now) if self.state != "connected" else 0.0

    def poll(self, now: float | None = None) -> Frame | None:
        """One attempt: a Frame, or None (not connected yet / backing off / just failed)."""
        if self.state == "closed":
            return None
        now = self.clock() if now is None else now
        if not self.source.is_open:
            if now < self._next_try:
                return None
            try:
                self.source.open()
            except CameraError as e:
                self._fail(now, e)
                return None
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self.state = "connected"
        try:
            frame = self.source.read()
        except CameraError as e:
            self._fail(now, e)
            return None
        self.state = "connected"
        self.consecutive_failures = 0
        self._backoff = self.backoff_initial
        self.frames += 1
        self.last_frame_time = now
        return frame

    def close(self) -> None:
        self.source.close()
        self.state = "closed"

    def diagnostics(self) -> dict:
        return {
            "state": self.state,
            "type": self.source.kind,
            "frames": self.frames,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "next_retry_in_s": round(self.seconds_until_retry(), 3),
        }
