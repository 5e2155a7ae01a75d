"""Report pieces without a model: precision@K bookkeeping, plots and the ground truth of precision@K
(the config validation is tests/test_midtrain_config.py)."""
from __future__ import annotations

import numpy as np
import pytest

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.report import (
    evaluate_methods,
    plot_precision,
    plot_score_distributions,
    robot_like_sources,
)


def test_precision_at_k_bookkeeping():
    groups = np.array(["a"] * 6 + ["b"] * 4, dtype=object)  # b is robot-like
    perfect = np.r_[np.zeros(6), np.ones(4)]
    worst = -perfect
    tied = np.zeros(10)  # all tied: the lowest indices win -> all from "a"
    ev = evaluate_methods({"perfect": perfect, "worst": worst, "tied": tied}, groups, ["b"], [0.2, 0.5])
    assert ev["k"] == {"0.2": 2, "0.5": 5, "R": 4} and ev["random_expectation"] == 0.4
    assert ev["methods"]["perfect"]["precision_at_k"] == {"0.2": 1.0, "0.5": 0.8, "R": 1.0}
    assert ev["methods"]["worst"]["precision_at_k"]["R"] == 0.0
    assert ev["methods"]["tied"]["precision_at_k"]["0.5"] == 0.0
    assert ev["methods"]["perfect"]["top_k_by_source"]["0.5"] == {"a": 1, "b": 4}
    mr = ev["methods"]["perfect"]["mean_rank_percentile"]
    assert mr["b"] > mr["a"] and mr["b"] == pytest.approx(1 - 1.5 / 9)


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    groups = np.array(["x", "y", "z"] * 20, dtype=object)
    scores = {"learned": rng.normal(size=60), "random": rng.random(60)}
    ev = evaluate_methods(scores, groups, ["z"], [0.1, 0.25])
    assert plot_precision(ev, tmp_path / "p.png").stat().st_size > 1000
    assert plot_score_distributions(scores, groups, tmp_path / "s.png", ["z"]).stat().st_size > 1000


def test_robot_like_sources_resolution():
    class P:
        manifest: dict = {}
        records = [{"source": "a", "robot_like": True}, {"source": "b"}]

        def sources(self):
            return ["a", "b"]

    assert robot_like_sources(P()) == ["a"]
    assert robot_like_sources(P(), ["b"]) == ["b"]
    with pytest.raises(MidtrainError, match="not in the pool"):
        robot_like_sources(P(), ["c"])
    p = P()
    p.manifest = {"robot_like_sources": ["b"]}
    assert robot_like_sources(p) == ["b"]
