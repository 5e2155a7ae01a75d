"""EmbodiedMidtrain at this project's scale: pick the general VLM samples closest to the robot (ETC) data for
Stage-1 mid-training.

    pool.py          candidate pool format (JSONL: id, image, source, conversations) + LLaVA-style import/export
    builtin_pool.py  offline pool with labelled sources drawn with PIL/numpy (the embedded default)
    features.py      frozen-VLM last-hidden-state features, batched, memmap cache, resumable
    estimator.py     learned proximity estimator (MLP + sigmoid, BCE robot vs pool), AUC, streaming scores
    baselines.py     random, feature-space average distance, robot-conditioned perplexity, delta perplexity
    mmd.py           pairwise normalized MMD (RBF, median heuristic), heatmap, t-SNE / PCA embedding
    select.py        exact top-K / fraction selection, writes the recipe's "general" JSONL mixture source
    config.py        the typed config of `etc-vla midtrain report` (config/midtrain.yaml) and its validation
    pipeline.py      the whole engine on the built-in pool, one function per step, recipe comparison runs
    report.py        precision@K per method, plots, gap analysis, report.json + report.md

See docs/midtrain.md. Heavy imports (torch, transformers, matplotlib, sklearn) happen inside functions.
"""
from __future__ import annotations

from etc_ros.core.errors import UserError


class MidtrainError(UserError):
    """Bad input to the mid-training data engine (pool records, feature caches, estimator, selection)."""


__all__ = ["MidtrainError"]
