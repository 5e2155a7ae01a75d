"""Test-only policy stand-ins (moved out of the product's etc_ros/policy/scripted.py, which keeps hold, circle and
busy): a runtime whose chunks hold NaN, one whose chunks are huge (1e6), and one that sleeps on every step."""
from __future__ import annotations

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.policy.scripted import ScriptedRuntime, circle_fn, make_fake_runtime


def make_test_runtime(name: str, cameras: tuple[str, ...] = ("primary",), horizon: int = robot_spec.CHUNK_HORIZON,
                      control_hz: float = robot_spec.POLICY_HZ, latency_s: float | None = None) -> ScriptedRuntime:
    """nan / huge / slow here; any other name goes to the product's make_fake_runtime (hold, circle, busy)."""
    name = name.strip().lower()
    kw = dict(horizon=horizon, control_hz=control_hz, cameras=tuple(cameras))
    if name == "nan":  # every chunk has NaN in it
        c = np.zeros((horizon, robot_spec.ACTION_DIM))
        c[:, 6] = 1.0
        c[horizon // 2, 0] = np.nan
        c[0, 2] = np.nan
        return ScriptedRuntime(chunk=c, **kw)
    if name == "huge":  # every chunk has huge values
        return ScriptedRuntime(chunk=np.full((horizon, robot_spec.ACTION_DIM), 1e6), **kw)
    if name == "slow":  # like circle, but every step sleeps latency_s (0.3 s) to simulate slow inference
        return ScriptedRuntime(fn=circle_fn(horizon=horizon, control_hz=control_hz),
                               latency_s=0.3 if latency_s is None else latency_s, **kw)
    return make_fake_runtime(name, cameras=cameras, horizon=horizon, control_hz=control_hz, latency_s=latency_s)
