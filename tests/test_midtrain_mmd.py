"""Gap analysis: MMD with an RBF kernel (0 for identical sets, grows with a shift), median-heuristic bandwidth,
normalized matrix, heatmap and 2-D embedding files."""
from __future__ import annotations

import numpy as np
import pytest

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.mmd import (
    embed_2d,
    median_bandwidth,
    mmd2,
    mmd_matrix,
    normalized_mmd,
    plot_embedding,
    plot_heatmap,
)


def _brute_mmd2(x, y, sigma):
    k = lambda a, b: np.exp(-np.sum((a[:, None, :] - b[None, :, :]) ** 2, -1) / (2 * sigma ** 2))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_zero_for_identical_and_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    assert mmd2(x, x.copy(), 1.3) == pytest.approx(0.0, abs=1e-12)
    y = rng.normal(size=(60, 5)) + 0.7
    assert mmd2(x, y, 1.3) == pytest.approx(_brute_mmd2(x, y, 1.3), rel=1e-9, abs=1e-12)
    assert mmd2(x, y, 1.3) == pytest.approx(mmd2(y, x, 1.3), rel=1e-12)


def test_mmd_grows_with_shift_and_is_small_for_same_distribution():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8))
    same = rng.normal(size=(300, 8))
    sigma = median_bandwidth([x, same])
    base = mmd2(x, same, sigma)
    vals = [mmd2(x, rng.normal(size=(300, 8)) + np.r_[s, np.zeros(7)], sigma) for s in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert base < 0.01
    assert all(b > a for a, b in zip([base] + vals, vals))
    assert vals[-1] > 0.5
    d = normalized_mmd(np.array([base] + vals))
    assert np.all((d >= 0) & (d <= 1)) and np.all(np.diff(d) > 0)
    assert normalized_mmd(2.0) == pytest.approx(1.0)


def test_median_bandwidth_is_median_pairwise_distance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(15, 3)) + 2
    u = np.concatenate([a, b])
    d = np.sqrt(((u[:, None] - u[None]) ** 2).sum(-1))[np.triu_indices(len(u), 1)]
    assert median_bandwidth([a, b]) == pytest.approx(float(np.median(d)), rel=1e-9)
    with pytest.raises(MidtrainError, match="identical"):
        median_bandwidth([np.ones((4, 2))])


def test_mmd_matrix_and_plots(tmp_path):
    rng = np.random.default_rng(3)
    sets = {"pool/a": rng.normal(size=(40, 6)), "pool/b": rng.normal(size=(40, 6)) + 0.2,
            "robot/x": rng.normal(size=(30, 6)) + 3.0}
    res = mmd_matrix(sets, max_per_set=35, seed=0)
    D = np.asarray(res["distance"])
    assert res["names"] == list(sets) and res["sizes"] == [35, 35, 30]
    assert np.allclose(D, D.T) and np.allclose(np.diag(D), 0) and np.all((D >= 0) & (D <= 1))
    assert D[0, 1] < D[0, 2] and D[0, 1] < D[1, 2]  # within-group gap < cross-group gap
    assert np.allclose(D, np.sqrt(np.asarray(res["mmd2"]) / 2))
    assert plot_heatmap(res, tmp_path / "h.png").stat().st_size > 1000
    for method in ("pca", "tsne"):
        coords, labels = embed_2d(sets, method, max_per_set=20, seed=0)
        assert coords.shape == (60, 2) and np.all(np.isfinite(coords))
        assert list(dict.fromkeys(labels.tolist())) == list(sets)
        assert plot_embedding(coords, labels, tmp_path / f"{method}.png").stat().st_size > 1000
    with pytest.raises(MidtrainError, match="at least 2 datasets"):
        mmd_matrix({"a": sets["pool/a"]})
    with pytest.raises(MidtrainError, match="tsne"):
        embed_2d(sets, "umap")
    with pytest.raises(MidtrainError, match="NaN"):
        mmd2(np.array([[np.nan, 1.0]]), np.ones((2, 2)), 1.0)
