"""The contract between a policy and the robot graph (pure: numpy only, no ROS, no onnxruntime).

    class Policy(Protocol):      what the policy node and the worker call
        spec -> PolicySpec       what the policy promises (read-only)
        step(observation) -> np.ndarray (horizon, 7)

    observation = {"images": {camera: HxWx3 uint8}, "state": (7,), "instruction": str}

PolicyRuntime (etc_ros.policy.runtime: an exported bundle) and ScriptedRuntime (etc_ros.policy.scripted) satisfy it.
`PolicySpec.from_mapping(spec_json)` reads a bundle's spec.json (etc_ros.policy.bundle.build_spec writes it): its
`control_hz` is the POLICY rate (chunks' step rate, spec.POLICY_HZ by default), not the safety node's servo tick.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Protocol

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError

Observation = Mapping[str, Any]  # {"images": {camera: HxWx3 uint8}, "state": (7,), "instruction": str}


class PolicySpecError(UserError):
    """A policy spec that breaks the contract (no camera, non-positive rate or horizon, ...)."""


def _names(value: Any, dim: Any, default: tuple[str, ...], prefix: str, what: str) -> tuple[str, ...]:
    """Names from a list, else `dim` generic names (default's when dim is its length), else the default."""
    if value is not None:
        names = tuple(str(v) for v in value)
        if dim is not None and int(dim) != len(names):
            raise PolicySpecError(f"{what}: {len(names)} names {list(names)} but {what[:-6]}_dim = {dim}")
        return names
    if dim is None or int(dim) == len(default):
        return default
    return tuple(f"{prefix}{i}" for i in range(int(dim)))


@dataclass(frozen=True)
class PolicySpec:
    """What a policy promises the graph. Immutable; `extra` keeps every other spec.json / runtime key
    (robot, head, normalization, backend, variant, bundle, ...) read-only."""

    cameras: tuple[str, ...] = ("primary",)  # camera names, in the order the model takes its views
    image_size: tuple[int, int] = (robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE)  # (height, width) of the model input
    horizon: int = robot_spec.CHUNK_HORIZON  # actions per chunk
    policy_hz: float = robot_spec.POLICY_HZ  # chunk steps per second (spec.json: control_hz)
    action_names: tuple[str, ...] = robot_spec.ACTION_NAMES
    state_names: tuple[str, ...] = robot_spec.STATE_NAMES
    uses_state: bool = True  # the observation must carry the joint state
    providers: tuple[str, ...] = ()  # execution providers the runtime opened (empty: scripted / torch)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        cams = tuple(str(c) for c in self.cameras)
        if not cams or len(set(cams)) != len(cams):
            raise PolicySpecError(f"cameras must be unique names, at least one; got {list(cams)}")
        try:
            size = tuple(int(v) for v in self.image_size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise PolicySpecError(f"image_size must be (height, width) > 0, got {self.image_size!r}")
        hz = self.policy_hz
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not (math.isfinite(hz) and hz > 0):
            raise PolicySpecError(f"policy rate (control_hz) must be a positive number, got {hz!r}")
        if isinstance(self.horizon, bool) or int(self.horizon) != self.horizon or self.horizon < 1:
            raise PolicySpecError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        if not self.action_names:
            raise PolicySpecError("action_names is empty")
        object.__setattr__(self, "cameras", cams)
        object.__setattr__(self, "image_size", (size[0], size[1]))
        object.__setattr__(self, "policy_hz", float(hz))
        object.__setattr__(self, "horizon", int(self.horizon))
        object.__setattr__(self, "action_names", tuple(str(a) for a in self.action_names))
        object.__setattr__(self, "state_names", tuple(str(s) for s in self.state_names))
        object.__setattr__(self, "uses_state", bool(self.uses_state))
        object.__setattr__(self, "providers", tuple(str(p) for p in self.providers))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    # keys of spec.json that the typed fields stand for (the rest goes to `extra`)
    _KEYS = ("cameras", "image_size", "horizon", "control_hz", "action_names", "action_dim", "state_names",
             "state_dim", "uses_state", "providers")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> PolicySpec:
        """A bundle's spec.json (or PolicyRuntime's spec: spec.json + backend, variant, providers, bundle).
        cameras may be a list or a {name: ...} mapping; image_size an int or [h, w]; a missing key takes the
        robot default of etc_ros.core.spec."""
        if not isinstance(m, Mapping):
            raise PolicySpecError(f"a policy spec must be a mapping, got {type(m).__name__}")
        cams = m.get("cameras", ("primary",))
        if isinstance(cams, str):
            cams = (cams,)
        size = m.get("image_size", robot_spec.IMAGE_SIZE)
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            size = (int(size), int(size))
        return cls(
            cameras=tuple(cams),
            image_size=size,
            horizon=m.get("horizon", m.get("chunk_horizon", robot_spec.CHUNK_HORIZON)),
            policy_hz=m.get("control_hz", robot_spec.POLICY_HZ),
            action_names=_names(m.get("action_names"), m.get("action_dim"), robot_spec.ACTION_NAMES, "a",
                                "action_names"),
            state_names=_names(m.get("state_names"), m.get("state_dim"), robot_spec.STATE_NAMES, "s", "state_names"),
            uses_state=bool(m.get("uses_state", True)),
            providers=tuple(m.get("providers") or ()),
            extra={k: v for k, v in m.items() if k not in cls._KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec.json view (control_hz = policy_hz; lists, not tuples): from_mapping(to_dict()) == self."""
        out = dict(self.extra)
        out.update(cameras=list(self.cameras), image_size=list(self.image_size), horizon=self.horizon,
                   control_hz=self.policy_hz, action_dim=self.action_dim, action_names=list(self.action_names),
                   state_dim=self.state_dim, state_names=list(self.state_names), uses_state=self.uses_state)
        if self.providers:
            out["providers"] = list(self.providers)
        return out


class Policy(Protocol):
    """What the policy node and PolicyWorker need from a policy (structural: no base class to inherit)."""

    @property
    def spec(self) -> PolicySpec: ...

    def step(self, observation: Observation) -> np.ndarray:
        """One observation -> (spec.horizon, spec.action_dim) actions in raw units (NaN: refused downstream)."""
        ...


__all__ = ["Observation", "Policy", "PolicySpec", "PolicySpecError"]
