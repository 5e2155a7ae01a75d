"""Scripted policy runtimes (pure numpy) that satisfy etc_ros.policy.interface.Policy: `.spec` (a PolicySpec) and
`.step(observation)`.

Used by a dry bringup without a model (`policy_bundle: fake:<name>`), the ROS benchmarks and tests:
- fake:hold    zero deltas, gripper kept open (the arm holds still under the policy)
- fake:circle  the EE traces a small horizontal circle (0.03 m radius, one turn per 4 s), gripper open
- fake:busy    like circle but every step burns `latency_s` (0.05 s) of CPU (inference load on the host); kept in
               the product because `etc-vla bench ros` starts it by name in a separate node process
The test-only stand-ins (NaN chunks, huge chunks, slow steps) are in tests/policy_fakes.py.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError
from etc_ros.policy.interface import Observation, PolicySpec

FAKE_RUNTIMES = ("hold", "circle", "busy")  # the names `policy_bundle: fake:<name>` accepts


class FakeRuntimeError(UserError):
    pass


class ScriptedRuntime:
    """Returns `fn(observation, call_index)` (an (H, 7) array) or a fixed `chunk`; optional latency."""

    def __init__(self, chunk: np.ndarray | None = None, fn: Callable[[Observation, int], np.ndarray] | None = None,
                 horizon: int = robot_spec.CHUNK_HORIZON, control_hz: float = robot_spec.POLICY_HZ,
                 cameras: tuple[str, ...] = ("primary",), latency_s: float = 0.0, busy: bool = False,
                 raise_on_call: int | None = None):
        if chunk is None and fn is None:
            chunk = np.zeros((horizon, robot_spec.ACTION_DIM))
            chunk[:, 6] = 1.0
        self.chunk = None if chunk is None else np.asarray(chunk, dtype=float)
        self.fn = fn
        self.horizon = int(horizon if self.chunk is None else self.chunk.shape[0])
        self.spec = PolicySpec(cameras=tuple(cameras), horizon=self.horizon, policy_hz=float(control_hz),
                               extra={"name": "scripted"})
        self.latency_s = float(latency_s)
        self.busy = bool(busy)
        self.raise_on_call = raise_on_call
        self.calls = 0
        self.last_observation: Observation | None = None
        self.instructions: list[str] = []
        self._lock = threading.Lock()

    def step(self, observation: Observation) -> np.ndarray:
        with self._lock:
            k = self.calls
            self.calls += 1
            self.last_observation = observation
            self.instructions.append(observation.get("instruction", ""))
        if self.raise_on_call is not None and k == self.raise_on_call:
            raise RuntimeError(f"scripted failure on call {k}")
        if self.latency_s > 0:
            if self.busy:
                t_end = time.perf_counter() + self.latency_s
                x = 0.0
                while time.perf_counter() < t_end:
                    x += math.sin(x + 1.0)
            else:
                time.sleep(self.latency_s)
        out = self.fn(observation, k) if self.fn is not None else self.chunk
        return np.array(out, dtype=float, copy=True)


def circle_fn(radius: float = 0.03, period_s: float = 4.0, horizon: int = robot_spec.CHUNK_HORIZON,
              control_hz: float = robot_spec.POLICY_HZ) -> Callable[[Observation, int], np.ndarray]:
    """Chunks of deltas along a circle, phase from the wall clock so consecutive chunks agree."""
    w = 2 * math.pi / period_s
    dt = 1.0 / control_hz

    def fn(obs: Observation, k: int) -> np.ndarray:
        t0 = time.time()
        out = np.zeros((horizon, robot_spec.ACTION_DIM))
        for i in range(horizon):
            t = t0 + i * dt
            out[i, 0] = -radius * w * dt * math.sin(w * t)
            out[i, 1] = radius * w * dt * math.cos(w * t)
        out[:, 6] = 1.0
        return out

    return fn


def make_fake_runtime(name: str, cameras: tuple[str, ...] = ("primary",), horizon: int = robot_spec.CHUNK_HORIZON,
                      control_hz: float = robot_spec.POLICY_HZ, latency_s: float | None = None) -> ScriptedRuntime:
    name = name.strip().lower()
    kw: dict[str, Any] = dict(horizon=horizon, control_hz=control_hz, cameras=tuple(cameras))
    if name == "hold":
        return ScriptedRuntime(**kw)
    if name == "circle":
        return ScriptedRuntime(fn=circle_fn(horizon=horizon, control_hz=control_hz), **kw)
    if name == "busy":
        return ScriptedRuntime(fn=circle_fn(horizon=horizon, control_hz=control_hz),
                               latency_s=0.05 if latency_s is None else latency_s, busy=True, **kw)
    raise FakeRuntimeError(f"unknown fake runtime {name!r}; expected one of {list(FAKE_RUNTIMES)}")
