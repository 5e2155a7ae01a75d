"""Top-K selection and the mid-training subset file.

- `top_k(scores, k)`: exact; order = score descending, ties broken by the lower pool index (so a selection is a
  pure function of the scores, whatever the sort algorithm).
- `write_selection(...)`: the selected pool records as a Stage-1 "general" mixture source of the recipe
  (etc_training/recipe/data.py reads it with kind "general"): one JSONL record per human/gpt pair
  ({id, image (absolute path), source, conversations: [human, gpt], score, rank, split: "train"}); a record with
  several pairs becomes several records ("<id>#<k>"), since the recipe trains one question/answer per example.
  A selection.json summary (method, K, per-source counts, score range) is written next to it.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError


def resolve_k(n: int, k: int | None = None, fraction: float | None = None) -> int:
    """K from an absolute count or a fraction of the pool (exactly one of them)."""
    if (k is None) == (fraction is None):
        raise MidtrainError("give exactly one of k (a count) and fraction (of the pool)")
    if k is not None:
        if not 1 <= int(k) <= n:
            raise MidtrainError(f"k must be in [1, {n}] (the pool size), got {k}")
        return int(k)
    if not 0 < float(fraction) <= 1:
        raise MidtrainError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(float(fraction) * n)))


def ranking(scores: Any) -> np.ndarray:
    """All indices, best first (score descending, ties -> lower index first)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise MidtrainError("no scores to rank")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise MidtrainError(f"scores contain NaN or Inf (first at index {bad})")
    return np.lexsort((np.arange(s.size), -s))


def top_k(scores: Any, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (exact, deterministic ties)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 1 <= int(k) <= s.size:
        raise MidtrainError(f"k must be in [1, {s.size}], got {k}")
    if s.size > 4 * k and s.size > 100_000:  # large pool: partition first, then an exact order of the candidates
        if not np.all(np.isfinite(s)):
            raise MidtrainError("scores contain NaN or Inf")
        thr = np.partition(s, s.size - k)[s.size - k]
        cand = np.flatnonzero(s >= thr)  # every index that can be in the top k (ties at the threshold included)
        order = np.lexsort((cand, -s[cand]))
        return cand[order[:k]]
    return ranking(s)[:k]


def precision_at_k(selected: Sequence[int], positive: Any) -> float:
    pos = np.asarray(positive, dtype=bool)
    sel = np.asarray(selected, dtype=np.int64)
    if sel.size == 0:
        raise MidtrainError("empty selection")
    return float(pos[sel].mean())


def write_selection(pool, indices: Sequence[int], scores: Any, out_path: str | Path, method: str,
                    extra: dict | None = None) -> dict:
    """Write the selected records (recipe "general" JSONL) + <out>.json summary. Returns the summary."""
    from etc_ros.core.io import atomic_write, atomic_write_json
    from etc_training.midtrain.pool import qa_pairs

    out = Path(out_path)
    if out.suffix != ".jsonl":
        raise MidtrainError(f"the selection file must end with .jsonl, got {out}")
    s = np.asarray(scores, dtype=np.float64)
    if len(s) != len(pool.records):
        raise MidtrainError(f"{len(s)} scores for a pool of {len(pool.records)} records")
    idx = [int(i) for i in indices]
    lines = []
    for rank, i in enumerate(idx):
        r = pool.records[i]
        pairs = qa_pairs(r)
        img = str(pool.image_path(r).resolve())
        for k, (q, a) in enumerate(pairs):
            rid = r["id"] if len(pairs) == 1 else f"{r['id']}#{k}"
            lines.append(json.dumps({"id": rid, "image": img, "source": r["source"],
                                     "conversations": [{"from": "human", "value": "<image>\n" + q},
                                                       {"from": "gpt", "value": a}],
                                     "score": float(s[i]), "rank": rank, "split": "train"}, ensure_ascii=False))

    def w(tmp: Path) -> None:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    atomic_write(out, w)
    by_source = Counter(pool.records[i]["source"] for i in idx)
    summary = {"method": method, "k": len(idx), "n_pool": len(pool.records), "records_written": len(lines),
               "pool": str(pool.path), "out": str(out), "by_source": dict(sorted(by_source.items())),
               "score_min": float(s[idx].min()) if idx else None, "score_max": float(s[idx].max()) if idx else None}
    summary.update(extra or {})
    atomic_write_json(out.with_suffix(".json"), summary)
    return summary


__all__ = ["resolve_k", "ranking", "top_k", "precision_at_k", "write_selection"]
