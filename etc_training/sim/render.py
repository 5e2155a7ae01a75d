"""Headless offscreen rendering (RGB + linear depth in one pass) on the CPU.

Backend: MUJOCO_GL=egl (Mesa's EGL, surfaceless on the CPU) by default, osmesa as the fallback. The choice must be
made before MuJoCo is imported anywhere in the process: `ensure_headless_gl()` (called when etc_training.sim is
imported) respects an existing MUJOCO_GL, otherwise picks egl when libEGL loads and osmesa when only libOSMesa
does. `probe_gl(backend)` checks in a subprocess that a backend really creates a context.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import warnings
import weakref

import numpy as np

_LIVE: "weakref.WeakSet[OffscreenRenderer]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free GL contexts before interpreter shutdown (OSMesa's own finaliser fails once modules are torn down)."""
    for r in list(_LIVE):
        r.close()

_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"


def _loadable(*names: str) -> bool:
    import ctypes

    for n in names:
        try:
            ctypes.CDLL(n)
            return True
        except OSError:
            continue
    return False


def ensure_headless_gl() -> str:
    """Pick the headless GL backend (sets MUJOCO_GL / PYOPENGL_PLATFORM when unset). Returns the backend name
    ("" when none could be chosen). An explicit MUJOCO_GL always wins."""
    cur = os.environ.get("MUJOCO_GL")
    if cur:
        if cur.lower() in ("egl", "osmesa"):
            os.environ.setdefault("PYOPENGL_PLATFORM", cur.lower())
        return cur
    if "mujoco" in sys.modules:
        warnings.warn("mujoco was imported before MUJOCO_GL was set; headless rendering may fail "
                      "(export MUJOCO_GL=egl or osmesa)", RuntimeWarning, stacklevel=2)
        return ""
    if _loadable("libEGL.so.1", "libEGL.so"):
        backend = "egl"
    elif _loadable("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"):
        backend = "osmesa"
    else:
        return ""
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def probe_gl(backend: str, timeout: float = 60.0) -> bool:
    """Whether `backend` (egl | osmesa) can create a context here (checked in a subprocess)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


class OffscreenRenderer:
    """Renders fixed cameras of a model into (H, W, 3) uint8 RGB and (H, W) float32 depth in metres (distance along
    the optical axis). One GL context per renderer; `bind(model)` after every recompile of the model."""

    def __init__(self, width: int, height: int):
        import mujoco

        self.width, self.height = int(width), int(height)
        try:
            self._gl = mujoco.GLContext(self.width, self.height)
        except Exception as e:  # noqa: BLE001
            from .errors import SimError

            raise SimError(f"cannot create a headless OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
                           f"{e}; install libegl1 (egl) or libosmesa6 (osmesa) and set MUJOCO_GL") from e
        self._gl.make_current()
        _LIVE.add(self)
        self._con = None
        self._scn = None
        self._model = None
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._depth = np.empty((self.height, self.width), dtype=np.float32)

    def bind(self, model) -> None:
        import mujoco

        if model is self._model:
            return
        self._gl.make_current()
        if self._con is not None:
            self._con.free()
        if model.vis.global_.offwidth < self.width or model.vis.global_.offheight < self.height:
            raise ValueError("model offscreen buffer smaller than the render size")
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scn = mujoco.MjvScene(model, maxgeom=max(1000, 4 * model.ngeom))
        self._model = model
        ext = float(model.stat.extent)
        self._near = float(model.vis.map.znear) * ext
        self._far = float(model.vis.map.zfar) * ext

    def render(self, model, data, camera_id: int, depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        import mujoco

        self.bind(model)
        self._gl.make_current()
        self._cam.fixedcamid = int(camera_id)
        mujoco.mjv_updateScene(model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scn)
        mujoco.mjr_render(self._rect, self._scn, self._con)
        mujoco.mjr_readPixels(self._rgb, self._depth if depth else None, self._rect, self._con)
        rgb = np.flipud(self._rgb).copy()
        if not depth:
            return rgb, None
        d = np.flipud(self._depth).astype(np.float64)
        n, f = self._near, self._far
        lin = n / (1.0 - d * (1.0 - n / f))  # OpenGL depth buffer -> distance along the optical axis
        return rgb, lin.astype(np.float32)

    def render_segmentation(self, model, data, camera_id: int) -> np.ndarray:
        """(H, W) int32 geom id seen at each pixel (-1 where no geom: background / skybox)."""
        import mujoco

        self.bind(model)
        self._gl.make_current()
        self._cam.fixedcamid = int(camera_id)
        mujoco.mjv_updateScene(model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scn)
        flags = self._scn.flags
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(self._rect, self._scn, self._con)
            mujoco.mjr_readPixels(self._rgb, None, self._rect, self._con)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0
        rgb = np.flipud(self._rgb).astype(np.int64)
        seg = rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16) - 1  # scene geom index (segid)
        n = self._scn.ngeom
        lut = np.full(n + 1, -1, dtype=np.int64)
        for i in range(n):
            g = self._scn.geoms[i]
            if g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[g.segid] = g.objid
        seg = np.where((seg >= 0) & (seg < n), seg, n)
        return lut[seg].astype(np.int32)

    def close(self) -> None:
        if getattr(self, "_con", None) is not None:
            try:
                self._gl.make_current()
                self._con.free()
            except Exception:  # noqa: BLE001
                pass
            self._con = None
        if getattr(self, "_gl", None) is not None:
            try:
                self._gl.free()
            except Exception:  # noqa: BLE001
                pass
            self._gl = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
