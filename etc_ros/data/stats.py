"""Normalization statistics of an episode dataset (LeRobot-style stats.json), numpy only.

Per episode (the JSON column `stats` of the episode's meta/episodes row):
  numeric features: min, max, mean, std, count (+ q01, q10, q50, q90, q99 for state / ee_pose / action /
  timestamp), exact over the episode;
  images: per-channel min, max, mean, std of pixel values scaled to [0, 1] (every 4th pixel in each
  direction), count = frames, shape (3, 1, 1); depth: the same in millimetres, shape (1, 1, 1).
Global (meta/stats.json), maintained incrementally by the writer (`StatsAccumulator`): min/max/mean/std/count
pooled exactly from the episodes (Chan's parallel variance); quantiles computed on the concatenated frames
(exact up to MAX_QUANTILE_ROWS frames, a uniform stride subsample above), or, when some episode's frames are not
at hand (unreadable data file), the frame-count-weighted mean of the episodes' quantiles.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from etc_ros.data.schema import ACTION, EE_POSE, QUANTILE_KEYS, QUANTILES, STATE, TIMESTAMP

MAX_QUANTILE_ROWS = 100_000
IMAGE_STRIDE = 4
QUANTILE_FEATURES = (STATE, EE_POSE, ACTION, TIMESTAMP)


def numeric_episode_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, a in arrays.items():
        x = np.asarray(a, dtype=np.float64)
        x = x.reshape(len(x), -1)
        d = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
             "count": np.array([len(x)], dtype=np.int64)}
        if key in QUANTILE_FEATURES:
            q = np.quantile(x, QUANTILES, axis=0)
            for k, row in zip(QUANTILE_KEYS, q):
                d[k] = row
        out[key] = d
    return out


class ImageStats:
    """Running per-channel statistics of an image stream (values scaled by 1/scale)."""

    def __init__(self, channels: int, scale: float = 255.0) -> None:
        self.c = channels
        self.scale = scale
        self.n = 0
        self.frames = 0
        self.s = np.zeros(channels)
        self.ss = np.zeros(channels)
        self.lo = np.full(channels, np.inf)
        self.hi = np.full(channels, -np.inf)

    def add(self, img: np.ndarray) -> None:
        x = np.asarray(img)[::IMAGE_STRIDE, ::IMAGE_STRIDE].reshape(-1, self.c).astype(np.float64) / self.scale
        self.n += len(x)
        self.frames += 1
        self.s += x.sum(0)
        self.ss += np.square(x).sum(0)
        self.lo = np.minimum(self.lo, x.min(0))
        self.hi = np.maximum(self.hi, x.max(0))

    def result(self) -> dict[str, np.ndarray]:
        n = max(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.ss / n - mean ** 2, 0.0)
        shape = (self.c, 1, 1)
        return {"min": self.lo.reshape(shape), "max": self.hi.reshape(shape), "mean": mean.reshape(shape),
                "std": np.sqrt(var).reshape(shape), "count": np.array([self.frames], dtype=np.int64)}


class StatsAccumulator:
    """Dataset statistics built episode by episode in O(1) per episode (plus the quantile pass)."""

    def __init__(self) -> None:
        self._f: dict[str, dict] = {}
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._arrays_ok = True

    def add(self, ep_stats: Mapping[str, Mapping[str, np.ndarray]],
            arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Add one episode: its per-episode stats and (optionally) its frames of the quantile features."""
        for key, e in ep_stats.items():
            shape = np.asarray(e["mean"]).shape
            n_b = float(np.asarray(e["count"]).reshape(-1)[0])
            if n_b <= 0:
                continue
            mean_b = np.asarray(e["mean"], dtype=np.float64).reshape(shape)
            m2_b = np.asarray(e["std"], dtype=np.float64).reshape(shape) ** 2 * n_b
            f = self._f.get(key)
            if f is None:
                f = self._f[key] = {"n": 0.0, "mean": np.zeros(shape), "m2": np.zeros(shape),
                                    "min": np.full(shape, np.inf), "max": np.full(shape, -np.inf),
                                    "qsum": {}, "has_q": all(qk in e for qk in QUANTILE_KEYS)}
            n_a = f["n"]
            n = n_a + n_b
            delta = mean_b - f["mean"]
            f["mean"] = f["mean"] + delta * (n_b / n)
            f["m2"] = f["m2"] + m2_b + delta ** 2 * (n_a * n_b / n)
            f["n"] = n
            f["min"] = np.minimum(f["min"], np.asarray(e["min"], dtype=np.float64).reshape(shape))
            f["max"] = np.maximum(f["max"], np.asarray(e["max"], dtype=np.float64).reshape(shape))
            if f["has_q"] and all(qk in e for qk in QUANTILE_KEYS):
                for qk in QUANTILE_KEYS:
                    f["qsum"][qk] = f["qsum"].get(qk, 0.0) + n_b * np.asarray(e[qk], dtype=np.float64).reshape(shape)
            else:
                f["has_q"] = False
        if arrays is None:
            self._arrays_ok = False
        elif self._arrays_ok:
            for k in QUANTILE_FEATURES:
                if k in arrays:
                    a = np.asarray(arrays[k], dtype=np.float32)
                    self._arrays.setdefault(k, []).append(a.reshape(len(a), -1))

    def result(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, f in self._f.items():
            n = f["n"]
            d = {"min": f["min"], "max": f["max"], "mean": f["mean"], "std": np.sqrt(np.maximum(f["m2"] / n, 0.0)),
                 "count": np.array([int(round(n))], dtype=np.int64)}
            if f["has_q"]:
                frames = self._arrays.get(key) if self._arrays_ok else None
                if frames and sum(len(a) for a in frames) == int(round(n)):
                    x = np.concatenate(frames)
                    if len(x) > MAX_QUANTILE_ROWS:
                        x = x[np.linspace(0, len(x) - 1, MAX_QUANTILE_ROWS).round().astype(np.int64)]
                    q = np.quantile(x.astype(np.float64), QUANTILES, axis=0)
                    for qk, row in zip(QUANTILE_KEYS, q):
                        d[qk] = row.reshape(f["mean"].shape)
                else:
                    for qk in QUANTILE_KEYS:
                        d[qk] = f["qsum"][qk] / n
            out[key] = d
        return out


def to_jsonable(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def from_jsonable(d: Mapping) -> dict[str, dict[str, np.ndarray]]:
    return {k: {s: np.asarray(v) for s, v in sub.items()} for k, sub in d.items()}


def nonfinite_entries(stats: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """'feature.stat' of every statistic holding NaN / Inf (or something that is not a number)."""
    bad = []
    for k, d in stats.items():
        for s, v in d.items():
            try:
                ok = bool(np.all(np.isfinite(np.asarray(v, dtype=np.float64))))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad.append(f"{k}.{s}")
    return bad


def shape_errors(stats: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """'feature.stat has shape X, expected Y' for every statistic of the vector features (state / ee_pose / action)
    that does not hold one value per dimension (count: one value): a reader would normalize with them."""
    from etc_ros.data.schema import VECTOR_COLUMNS

    out = []
    for k, (dim, _) in VECTOR_COLUMNS.items():
        sub = stats.get(k)
        for s, v in (sub.items() if isinstance(sub, Mapping) else ()):
            want = (1,) if s == "count" else (dim,)
            if np.shape(v) != want:
                out.append(f"{k}.{s} has shape {np.shape(v)}, expected {want}")
    return out
