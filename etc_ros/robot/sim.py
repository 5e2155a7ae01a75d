"""SimBackend: the MuJoCo world (`set_joint_targets(q6, gripper)`, `advance(dt)`, `joint_state()`), advanced in
real time by the driver's timer; a lock shared with the simulated camera serializes physics and rendering.
ThreadBoundEnv: runs every call on the world in one thread (offscreen GL contexts are bound to a thread).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from etc_ros.robot.base import DriverBackend, DriverError, binary_gripper, check_gripper_mode


class SimBackend(DriverBackend):
    """The simulated world, shared with the simulated camera through `lock`."""

    name = "sim"

    def __init__(self, env: Any, lock: Any = None, max_step: float = 0.05, moving_time: float | None = None,
                 accel_time: float | None = None, gripper_mode: str = "position"):
        """moving_time / accel_time: the servo profile written to the simulated servos, as the interbotix
        backend writes it to the real ones (None: the world's own profile). gripper_mode: 'position' = the world's
        own gripper (a position actuator, what the policies were trained on); 'binary' = open/close at 0.5, to
        try the real robot's binary gripper in simulation."""
        import threading

        self.gripper_mode = check_gripper_mode(gripper_mode)
        if env is None:
            raise DriverError("sim backend needs a simulated world")
        for m in ("set_joint_targets", "advance", "joint_state"):
            if not callable(getattr(env, m, None)):
                raise DriverError(f"sim world {type(env).__name__} lacks {m}()")
        self.env = env
        self.lock = lock if lock is not None else threading.Lock()
        self.max_step = float(max_step)
        if moving_time is not None and callable(getattr(env, "set_servo_profile", None)):
            at = 0.5 * float(moving_time) if accel_time is None else float(accel_time)
            try:
                with self.lock:
                    env.set_servo_profile(float(moving_time), at)
            except ValueError as e:  # SimError is a ValueError (UserError)
                raise DriverError(f"servo profile moving_time={moving_time} accel_time={at}: {e}") from e

    def read(self) -> tuple[np.ndarray, float]:
        with self.lock:
            q, g = self.env.joint_state()
        return np.asarray(q, dtype=float).copy(), float(g)

    def command(self, q: np.ndarray, gripper: float) -> None:
        g = binary_gripper(gripper) if self.gripper_mode == "binary" else float(gripper)
        with self.lock:
            self.env.set_joint_targets(np.asarray(q, dtype=float), g)

    def update(self, dt: float) -> None:
        # a late timer must not make the world jump: at most max_step of simulated time per call
        dt = min(float(dt), self.max_step)
        if dt > 0:
            with self.lock:
                self.env.advance(dt)


# ---------------------------------------------------------------------------------------------------- sim world
class ThreadBoundEnv:
    """Proxy that runs every call on the wrapped world in ONE dedicated thread.

    Offscreen OpenGL contexts (MuJoCo's EGL/OSMesa renderer) are bound to the thread that made them current, while
    ROS callbacks run on executor threads: reset(), render(), advance()... all go through this thread (which also
    serializes them). Attribute reads (e.g. `env.instruction`) are evaluated there too."""

    def __init__(self, env: Any = None, factory: Callable[[], Any] | None = None, name: str = "sim-world"):
        import queue
        import threading

        if (env is None) == (factory is None):
            raise DriverError("ThreadBoundEnv needs exactly one of env or factory")
        self._queue: Any = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False
        self._thread.start()
        if env is None:
            assert factory is not None  # exactly one of env / factory, checked above
            env = self.call(factory)
        self._env = env

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, kwargs, box, done = item
            try:
                box.append((True, fn(*args, **kwargs)))
            except BaseException as e:  # delivered to the caller
                box.append((False, e))
            done.set()

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        import threading

        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if self._closed:
            raise DriverError("the simulated world was closed")
        box: list = []
        done = threading.Event()
        self._queue.put((fn, args, kwargs, box, done))
        done.wait()
        ok, val = box[0]
        if not ok:
            raise val
        return val

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = self.call(getattr, self._env, name)
        if callable(attr):
            return lambda *a, **k: self.call(attr, *a, **k)
        return attr

    def close(self, close_env: bool = True) -> None:
        """Stop the thread; with close_env, first call the world's own close() (on that thread)."""
        if self._closed:
            return
        try:
            close = getattr(self._env, "close", None) if close_env else None
            if callable(close):
                self.call(close)
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join(5.0)
