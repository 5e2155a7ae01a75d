"""Action-chunk scheduling in policy-step time (pure numpy, no clock).

A policy chunk is an (H, D) array of actions; row i is meant for policy step `start_step + i`, where
`start_step` is the policy step of the observation the chunk was computed from. The scheduler answers
"which action for step s?" in one of two modes:

- "ensemble": temporal ensembling as in ACT. Every chunk that has a prediction for step s contributes it;
  predictions are ordered oldest chunk first and weighted w_i = exp(-k * i) (i = 0 for the OLDEST), so the
  oldest prediction weighs most and k sets how fast newer ones gain influence (k = 0.01 by default).
  The result is the weighted mean (a convex combination, so bounded actions stay bounded).
- "receding": receding horizon. One chunk is active; its row `s - start_step` is executed. Once the active
  chunk has used its first `receding_steps` rows (s - start_step >= n) and a newer chunk exists, the newest
  chunk becomes active (intermediate ones are dropped). Without a newer chunk the active one runs on to its
  end (H rows), then the scheduler has nothing (the executor holds).

Chunks must be added in non-decreasing `start_step` order (the executor rejects out-of-order chunks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etc_ros.core.errors import SafetyError

MODES = ("ensemble", "receding")


@dataclass
class _Chunk:
    actions: np.ndarray  # (H, D)
    start: int  # policy step of row 0
    seq: int  # insertion order (age: smaller = older)

    @property
    def end(self) -> int:  # first step NOT covered
        return self.start + self.actions.shape[0]

    def covers(self, step: int) -> bool:
        return self.start <= step < self.end


def ensemble_weights(n: int, k: float = 0.01) -> np.ndarray:
    """Normalized ACT weights for n predictions ordered oldest first: w_i = exp(-k i) / sum."""
    if n <= 0:
        return np.zeros(0)
    w = np.exp(-float(k) * np.arange(n, dtype=float))
    return w / w.sum()


class ChunkScheduler:
    """Turns a stream of action chunks into one action per policy step (see the module docstring)."""

    def __init__(self, mode: str = "ensemble", k: float = 0.01, receding_steps: int = 5, max_chunks: int = 64):
        if mode not in MODES:
            raise SafetyError(f"chunk scheduler mode {mode!r} is not one of {list(MODES)}")
        if not (isinstance(k, (int, float)) and math.isfinite(k) and k >= 0):
            raise SafetyError(f"ensemble k must be a finite number >= 0, got {k!r}")
        if isinstance(receding_steps, bool) or not isinstance(receding_steps, (int, np.integer)) or receding_steps < 1:
            raise SafetyError(f"receding_steps must be an integer >= 1, got {receding_steps!r}")
        if isinstance(max_chunks, bool) or not isinstance(max_chunks, (int, np.integer)) or max_chunks < 1:
            raise SafetyError(f"max_chunks must be an integer >= 1, got {max_chunks!r}")
        self.mode = mode
        self.k = float(k)
        self.receding_steps = int(receding_steps)
        self.max_chunks = int(max_chunks)
        self._chunks: list[_Chunk] = []  # ensemble: all live chunks, oldest first
        self._active: _Chunk | None = None  # receding
        self._pending: _Chunk | None = None  # receding: newest chunk not yet active
        self._seq = 0

    # ---- input --------------------------------------------------------------------------------------------
    def add(self, actions: np.ndarray, start_step: int) -> None:
        a = np.asarray(actions, dtype=float)
        if a.ndim != 2 or a.shape[0] < 1:
            raise SafetyError(f"a chunk must have shape (H, D) with H >= 1, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise SafetyError("a chunk contains NaN or Inf")
        newest = self._newest()
        if newest is not None and int(start_step) < newest.start:
            raise SafetyError(f"chunk start step {start_step} is older than the newest chunk ({newest.start})")
        c = _Chunk(a.copy(), int(start_step), self._seq)
        self._seq += 1
        if self.mode == "ensemble":
            self._chunks.append(c)
            if len(self._chunks) > self.max_chunks:
                del self._chunks[: len(self._chunks) - self.max_chunks]
        else:
            if self._active is None:
                self._active = c
            else:
                self._pending = c

    def clear(self) -> None:
        self._chunks.clear()
        self._active = None
        self._pending = None

    # ---- output -------------------------------------------------------------------------------------------
    def action_for(self, step: int) -> np.ndarray | None:
        """The action for policy step `step` (steps must be queried in non-decreasing order), or None."""
        step = int(step)
        if self.mode == "ensemble":
            self._chunks = [c for c in self._chunks if c.end > step]  # drop chunks that are over
            preds = [c.actions[step - c.start] for c in self._chunks if c.covers(step)]
            if not preds:
                return None
            w = ensemble_weights(len(preds), self.k)
            return np.tensordot(w, np.stack(preds), axes=1)
        # receding horizon
        act, new = self._active, self._pending
        if new is not None and new.covers(step):
            if act is None or not act.covers(step) or step - act.start >= self.receding_steps:
                self._active, self._pending = new, None
                act = new
        elif new is not None and new.end <= step:
            self._pending = None  # the newer chunk is over before it could be used
        if act is not None and act.end <= step:
            self._active = act = None
        if act is None or not act.covers(step):
            return None
        return act.actions[step - act.start].copy()

    def predictions_for(self, step: int) -> int:
        """How many live predictions cover `step` (diagnostics)."""
        if self.mode == "ensemble":
            return sum(1 for c in self._chunks if c.covers(int(step)))
        return int(self._active is not None and self._active.covers(int(step)))

    @property
    def n_chunks(self) -> int:
        if self.mode == "ensemble":
            return len(self._chunks)
        return int(self._active is not None) + int(self._pending is not None)

    def _newest(self) -> _Chunk | None:
        if self.mode == "ensemble":
            return self._chunks[-1] if self._chunks else None
        return self._pending or self._active
