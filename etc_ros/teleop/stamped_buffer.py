"""Recent (stamp, value) pairs kept in stamp order, to pair messages of different topics by time: the recorder
node keeps one per camera and one for the joint states and takes, for each image, the joint state nearest to its
capture stamp. Pure Python."""
from __future__ import annotations

import bisect
from typing import Any


class StampedBuffer:
    """Recent (stamp, value) pairs in stamp order; `nearest(stamp)` for synchronization."""

    def __init__(self, maxlen: int = 200):
        self.maxlen = int(maxlen)
        self._t: list[float] = []
        self._v: list[Any] = []

    def add(self, stamp: float, value: Any) -> None:
        if self._t and stamp < self._t[-1]:  # out of order: insert in place
            i = bisect.bisect_right(self._t, stamp)
            self._t.insert(i, stamp)
            self._v.insert(i, value)
        else:
            self._t.append(stamp)
            self._v.append(value)
        if len(self._t) > self.maxlen:
            del self._t[0], self._v[0]

    def items(self) -> list[tuple[float, Any]]:
        """All (stamp, value) pairs, oldest first."""
        return list(zip(self._t, self._v))

    def latest(self) -> tuple[float, Any] | None:
        return (self._t[-1], self._v[-1]) if self._t else None

    def nearest(self, stamp: float) -> tuple[float, Any] | None:
        if not self._t:
            return None
        i = bisect.bisect_left(self._t, stamp)
        cands = [j for j in (i - 1, i) if 0 <= j < len(self._t)]
        j = min(cands, key=lambda k: abs(self._t[k] - stamp))
        return self._t[j], self._v[j]

    def __len__(self) -> int:
        return len(self._t)
