"""Normalization statistics for states and actions, shared by training and the robot runtime.

Three modes:
- "quantile" (the recipe's default for the state): the 1st and 99th percentiles of each dimension map to -1 and
  +1, values outside are clipped to [-1, 1]. unnormalize() maps [-1, 1] back to [q01, q99].
- "minmax" (the default for actions): the data's min and max map to -1 and +1, nothing is clipped in either
  direction, so every action the data (or the robot) can do survives the round trip. Quantile clipping is wrong
  for actions: a policy trained on clipped targets cannot reproduce the large corrective steps of its own
  demonstrations (measured: 84 of 162 expert replays fail after a quantile round trip, 0 after minmax).
- "meanstd": (x - mean) / std, no clipping.
A dimension whose range is degenerate (q99 - q01, max - min or std below `eps`, e.g. a constant gripper)
normalizes to 0 and unnormalizes to its constant value (q01, min or mean) instead of dividing by ~0.

Stats are computed from data (`NormStats.from_data`), stored as JSON next to a checkpoint
(`save_norm_stats` / `load_norm_stats`: {"state": {...}, "action": {...}}) and loaded by the robot: numpy only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from etc_ros.core.errors import ModelError

MODES = ("quantile", "minmax", "meanstd")
NORM_STATS_FILE = "norm_stats.json"


def _vec(name: str, value: Any, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if dim is not None and arr.shape[0] != dim:
        raise ModelError(f"norm stats: {name} has {arr.shape[0]} values, expected {dim}")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"norm stats: {name} contains NaN or Inf")
    return arr


@dataclass
class NormStats:
    """Per-dimension statistics of one quantity (state or action)."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mode: str = "quantile"
    count: int = 0
    eps: float = 1e-6
    names: tuple[str, ...] = field(default_factory=tuple)
    min: np.ndarray | None = None  # per-dimension data range; required by "minmax" (older stats files lack it)
    max: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ModelError(f"norm stats: unknown mode {self.mode!r}; use one of {list(MODES)}")
        self.mean = _vec("mean", self.mean)
        dim = self.mean.shape[0]
        if dim == 0:
            raise ModelError("norm stats: zero dimensions")
        self.std = _vec("std", self.std, dim)
        self.q01 = _vec("q01", self.q01, dim)
        self.q99 = _vec("q99", self.q99, dim)
        if np.any(self.std < 0):
            raise ModelError("norm stats: std must be >= 0")
        if np.any(self.q99 < self.q01):
            raise ModelError("norm stats: q99 must be >= q01 in every dimension")
        if (self.min is None) != (self.max is None):
            raise ModelError("norm stats: min and max must be given together")
        if self.min is not None:
            self.min = _vec("min", self.min, dim)
            self.max = _vec("max", self.max, dim)
            if np.any(self.max < self.min):
                raise ModelError("norm stats: max must be >= min in every dimension")
        elif self.mode == "minmax":
            raise ModelError("norm stats: mode 'minmax' needs min and max")
        self.names = tuple(self.names)
        if self.names and len(self.names) != dim:
            raise ModelError(f"norm stats: {len(self.names)} names for {dim} dimensions")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(
        cls,
        data: Any,
        mode: str = "quantile",
        names: tuple[str, ...] | list[str] = (),
        low_q: float = 0.01,
        high_q: float = 0.99,
    ) -> "NormStats":
        """Stats over all leading axes of `data` (..., D): e.g. (N, D) states or (N, H, D) action chunks."""
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim < 1 or arr.size == 0:
            raise ModelError(f"norm stats: need a non-empty (..., D) array, got shape {arr.shape}")
        if arr.ndim == 1:
            arr = arr[:, None]
        flat = arr.reshape(-1, arr.shape[-1])
        if not np.all(np.isfinite(flat)):
            bad = int(np.sum(~np.isfinite(flat)))
            raise ModelError(f"norm stats: data contains {bad} NaN/Inf values")
        if not 0.0 <= low_q < high_q <= 1.0:
            raise ModelError(f"norm stats: need 0 <= low_q < high_q <= 1, got {low_q}, {high_q}")
        q01, q99 = np.quantile(flat, [low_q, high_q], axis=0)
        return cls(
            mean=flat.mean(axis=0),
            std=flat.std(axis=0),
            q01=q01,
            q99=q99,
            min=flat.min(axis=0),
            max=flat.max(axis=0),
            mode=mode,
            count=int(flat.shape[0]),
            names=tuple(names),
        )

    @classmethod
    def identity(cls, dim: int, mode: str = "quantile") -> "NormStats":
        """Stats under which normalize() is the identity on [-1, 1] (quantile) or everywhere (meanstd)."""
        return cls(mean=np.zeros(dim), std=np.ones(dim), q01=-np.ones(dim), q99=np.ones(dim), mode=mode,
                   min=-np.ones(dim), max=np.ones(dim))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    # ------------------------------------------------------------------ transforms
    def _scale_offset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """normalize(x) = (x - offset) / scale on non-degenerate dims; `ok` marks them."""
        if self.mode == "quantile":
            scale = (self.q99 - self.q01) / 2.0
            offset = (self.q99 + self.q01) / 2.0
            ok = (self.q99 - self.q01) > self.eps
        elif self.mode == "minmax":
            scale = (self.max - self.min) / 2.0
            offset = (self.max + self.min) / 2.0
            ok = (self.max - self.min) > self.eps
        else:
            scale = self.std.copy()
            offset = self.mean.copy()
            ok = self.std > self.eps
        return scale, offset, ok

    def _check(self, x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[-1] != self.dim:
            raise ModelError(f"{what}: expected last dimension {self.dim}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{what}: input contains NaN or Inf")
        return arr

    def normalize(self, x: Any) -> np.ndarray:
        """Raw values (..., D) -> normalized (float32). Quantile mode clips to [-1, 1]."""
        arr = self._check(x, "normalize")
        scale, offset, ok = self._scale_offset()
        safe = np.where(ok, scale, 1.0)
        y = np.where(ok, (arr - offset) / safe, 0.0)
        if self.mode == "quantile":
            y = np.clip(y, -1.0, 1.0)
        return y.astype(np.float32)

    def unnormalize(self, y: Any) -> np.ndarray:
        """Normalized values (..., D) -> raw units (float64). Quantile mode clips the input to [-1, 1] first."""
        arr = self._check(y, "unnormalize")
        if self.mode == "quantile":
            arr = np.clip(arr, -1.0, 1.0)
        scale, offset, ok = self._scale_offset()
        const = {"quantile": self.q01, "minmax": self.min}.get(self.mode, self.mean)
        return np.where(ok, arr * scale + offset, const)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        d = {
            "mode": self.mode,
            "count": int(self.count),
            "eps": float(self.eps),
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
        }
        if self.min is not None:
            d.update(min=self.min.tolist(), max=self.max.tolist())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NormStats":
        if not isinstance(d, Mapping):
            raise ModelError(f"norm stats: expected a mapping, got {type(d).__name__}")
        missing = [k for k in ("mean", "std", "q01", "q99") if k not in d]
        if missing:
            raise ModelError(f"norm stats: missing key(s) {missing}")
        unknown = sorted(set(d) - {"mode", "count", "eps", "names", "mean", "std", "q01", "q99", "min", "max"})
        if unknown:
            raise ModelError(f"norm stats: unknown key(s) {unknown}")
        return cls(
            mean=d["mean"],
            std=d["std"],
            q01=d["q01"],
            q99=d["q99"],
            mode=str(d.get("mode", "quantile")),
            count=int(d.get("count", 0)),
            eps=float(d.get("eps", 1e-6)),
            names=tuple(d.get("names", ())),
            min=d.get("min"),
            max=d.get("max"),
        )

    def with_mode(self, mode: str) -> "NormStats":
        d = self.to_dict()
        d["mode"] = mode
        return NormStats.from_dict(d)


def save_norm_stats(path: str | Path, stats: Mapping[str, NormStats]) -> Path:
    """Write {"state": ..., "action": ...} (any keys) as JSON, atomically."""
    from etc_ros.core.io import atomic_write_json

    return atomic_write_json(path, {k: v.to_dict() for k, v in stats.items()})


def load_norm_stats(path: str | Path) -> dict[str, NormStats]:
    p = Path(path)
    if p.is_dir():
        p = p / NORM_STATS_FILE
    if not p.is_file():
        raise ModelError(f"norm stats file not found: {p}")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{p}: invalid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{p}: top level must be a mapping of name -> stats")
    out = {}
    for k, v in raw.items():
        try:
            out[k] = NormStats.from_dict(v)
        except ModelError as e:
            raise ModelError(f"{p}: {k}: {e}") from None
    return out
