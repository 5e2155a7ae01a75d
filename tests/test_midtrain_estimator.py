"""Proximity estimator (planted signal recovered, AUC, streaming scores, persistence), baselines, exact top-K.
Pure numpy / small torch MLPs: no VLM needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.baselines import (
    avg_distance_scores,
    delta_ppl_scores,
    ppl_scores,
    random_scores,
)
from etc_training.midtrain.estimator import ProximityEstimator, roc_auc
from etc_training.midtrain.features import FeatureCache, create_cache, mark_complete
from etc_training.midtrain.select import precision_at_k, ranking, resolve_k, top_k

torch.set_num_threads(1)


def _planted(seed: int = 0, d: int = 24, n_pos: int = 300, n_pool: int = 900, frac_planted: float = 0.15):
    """Robot features ~ N(mu, I) with mu along a random direction; the pool is N(0, I) except a planted
    fraction drawn like the robot features."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    mu = 4.0 * u / np.linalg.norm(u)
    pos = rng.normal(size=(n_pos, d)) + mu
    pool = rng.normal(size=(n_pool, d))
    planted = np.zeros(n_pool, bool)
    planted[rng.choice(n_pool, int(frac_planted * n_pool), replace=False)] = True
    pool[planted] += mu
    return pos.astype(np.float32), pool.astype(np.float32), planted


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    diff = s[y][:, None] - s[~y][None, :]
    brute = float(((diff > 0) + 0.5 * (diff == 0)).mean())  # P(score_pos > score_neg), ties count half
    assert roc_auc(y, s) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([1, 1, 0, 0], [3, 2, 1, 0]) == 1.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    with pytest.raises(MidtrainError, match="positive and negative"):
        roc_auc([1, 1], [0.1, 0.2])


def test_estimator_separable_signal_auc_is_one():
    pos, pool, planted = _planted(seed=2)
    neg = pool[~planted]  # separable: robot vs clean pool
    est = ProximityEstimator(pos.shape[1], hidden=(64,), seed=0)
    rep = est.fit(pos, neg, epochs=25, batch_size=128, lr=3e-3)
    assert rep["val_auc"] > 0.995 and rep["train_auc"] > 0.995
    assert rep["n_pos_val"] == 60 and rep["n_neg_val"] == round(0.2 * len(neg))
    s = est.score(np.concatenate([pos, neg]))
    assert np.all((s > 0) & (s < 1))
    # a shuffled-label control cannot be separated
    rng = np.random.default_rng(0)
    both = np.concatenate([pos, neg])
    perm = rng.permutation(len(both))
    ctrl = ProximityEstimator(pos.shape[1], hidden=(64,), seed=0).fit(both[perm[:len(pos)]], both[perm[len(pos):]],
                                                                       epochs=10, batch_size=128, lr=3e-3)
    assert ctrl["val_auc"] < 0.7


def test_estimator_ranks_planted_pool_samples_first():
    """Trained robot-vs-whole-pool (planted samples included as negatives), the ranking still puts the planted
    robot-like pool samples on top."""
    pos, pool, planted = _planted(seed=3)
    est = ProximityEstimator(pos.shape[1], hidden=(64,), seed=1)
    est.fit(pos, pool, epochs=20, batch_size=128, lr=3e-3, weight_decay=1e-3)
    z = est.logits(pool)
    k = int(planted.sum())
    assert precision_at_k(top_k(z, k), planted) > 0.9
    assert roc_auc(planted, z) > 0.97


def test_estimator_is_deterministic_and_round_trips(tmp_path):
    pos, pool, _ = _planted(seed=4, n_pos=120, n_pool=300)
    a = ProximityEstimator(pos.shape[1], hidden=(32, 16), seed=5)
    ra = a.fit(pos, pool, epochs=5, batch_size=64)
    b = ProximityEstimator(pos.shape[1], hidden=(32, 16), seed=5)
    rb = b.fit(pos, pool, epochs=5, batch_size=64)
    assert ra["val_auc"] == rb["val_auc"]
    assert np.array_equal(a.logits(pool), b.logits(pool))
    a.save(tmp_path / "est")
    c = ProximityEstimator.load(tmp_path / "est")
    assert np.array_equal(c.logits(pool), a.logits(pool))
    assert c.report["val_auc"] == ra["val_auc"]
    with pytest.raises(MidtrainError, match="not an estimator directory"):
        ProximityEstimator.load(tmp_path)


def test_estimator_bad_input():
    est = ProximityEstimator(8)
    with pytest.raises(MidtrainError, match="expects 8"):
        est.fit(np.zeros((10, 7)), np.zeros((10, 8)))
    bad = np.zeros((10, 8))
    bad[3, 2] = np.nan
    with pytest.raises(MidtrainError, match="NaN"):
        est.fit(np.ones((10, 8)), bad)
    with pytest.raises(MidtrainError, match="at least 2"):
        est.fit(np.ones((1, 8)), np.zeros((10, 8)))
    with pytest.raises(MidtrainError, match="dimension"):
        ProximityEstimator(0)


def _cache(tmp_path, X: np.ndarray, groups=None):
    rows = [{"id": f"r{i}", "group": (groups[i] if groups is not None else "g")} for i in range(len(X))]
    d = create_cache(tmp_path / "cache", rows, X.shape[1])
    mm = np.memmap(d / "features.f32", dtype=np.float32, mode="r+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    mark_complete(d)
    return FeatureCache(d)


def test_streaming_scores_equal_in_memory(tmp_path):
    pos, pool, _ = _planted(seed=6, n_pos=100, n_pool=257)
    est = ProximityEstimator(pos.shape[1], hidden=(16,), seed=0)
    est.fit(pos, pool, epochs=3, batch_size=64)
    c = _cache(tmp_path, pool)
    assert c.complete and c.n == 257
    blocks = list(c.iter_blocks(50))
    assert [s for s, _ in blocks] == [0, 50, 100, 150, 200, 250] and len(blocks[-1][1]) == 7
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), pool)
    z = est.score_cache(c, block=50)
    np.testing.assert_allclose(z, est.logits(pool), rtol=0, atol=1e-6)
    p = est.score_cache(c, block=64, logit=False)
    np.testing.assert_allclose(p, est.score(pool), atol=1e-6)
    with pytest.raises(MidtrainError, match="expects"):
        ProximityEstimator(5).score_cache(c)


def test_avg_distance_baseline(tmp_path):
    rng = np.random.default_rng(0)
    robot = rng.normal(size=(40, 6)) + 5.0
    pool = rng.normal(size=(30, 6)) + np.linspace(0, 5, 30)[:, None]  # later rows closer to the robot cloud
    s = avg_distance_scores(pool, robot, block=7)
    brute = -np.array([np.linalg.norm(robot - x, axis=1).mean() for x in pool])
    np.testing.assert_allclose(s, brute, rtol=1e-9, atol=1e-9)
    assert ranking(s)[0] >= 25
    c = _cache(tmp_path, pool.astype(np.float32))
    np.testing.assert_allclose(avg_distance_scores(c, robot, block=8), avg_distance_scores(pool.astype(np.float32),
                                                                                           robot), atol=1e-6)


def test_perplexity_baselines_and_random():
    base = np.array([8.0, 8.0, 6.0])
    adapted = np.array([7.0, 5.0, 6.5])
    np.testing.assert_array_equal(ppl_scores(adapted), [-7.0, -5.0, -6.5])
    np.testing.assert_array_equal(delta_ppl_scores(base, adapted), [1.0, 3.0, -0.5])
    assert list(ranking(delta_ppl_scores(base, adapted))) == [1, 0, 2]
    with pytest.raises(MidtrainError):
        delta_ppl_scores(base, adapted[:2])
    a, b = random_scores(100, 3), random_scores(100, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, random_scores(100, 4))


def test_top_k_exact_with_ties():
    s = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert list(top_k(s, 3)) == [1, 3, 0]
    assert list(top_k(s, 5)) == [1, 3, 0, 2, 5]
    assert list(ranking(s)) == [1, 3, 0, 2, 5, 4]
    rng = np.random.default_rng(0)
    big = np.round(rng.normal(size=200_000), 2)  # heavy ties, takes the partition path
    small = big[:3000]
    assert list(ranking(small)) == sorted(range(len(small)), key=lambda i: (-small[i], i))
    full = ranking(big)  # checked against sorted() above; the partition path must agree with it
    for k in (1, 17, 1000):
        assert np.array_equal(top_k(big, k), full[:k])
        assert np.all(np.diff(big[full[:k]]) <= 0)
    with pytest.raises(MidtrainError, match="NaN"):
        top_k(np.array([1.0, np.nan]), 1)
    with pytest.raises(MidtrainError, match="k must be"):
        top_k(s, 7)


def test_resolve_k():
    assert resolve_k(100, k=10) == 10
    assert resolve_k(100, fraction=0.25) == 25
    assert resolve_k(3, fraction=0.01) == 1
    with pytest.raises(MidtrainError, match="exactly one"):
        resolve_k(100)
    with pytest.raises(MidtrainError, match="exactly one"):
        resolve_k(100, k=3, fraction=0.1)
    with pytest.raises(MidtrainError, match="fraction"):
        resolve_k(100, fraction=1.5)
    with pytest.raises(MidtrainError, match=r"\[1, 100\]"):
        resolve_k(100, k=0)
