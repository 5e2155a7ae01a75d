"""ChunkScheduler: ACT temporal ensembling weights and the receding horizon, in policy-step time."""
from __future__ import annotations

import math

import numpy as np
import pytest

from etc_ros.core.errors import SafetyError, UserError
from etc_ros.safety.chunking import ChunkScheduler, ensemble_weights


def _chunk(value: float, h: int = 4, d: int = 7) -> np.ndarray:
    return np.full((h, d), float(value))


def test_ensemble_weights_oldest_first_k001():
    w = ensemble_weights(3, 0.01)
    raw = np.array([1.0, math.exp(-0.01), math.exp(-0.02)])
    np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-12)
    assert w[0] > w[1] > w[2]  # the oldest prediction weighs most
    assert ensemble_weights(0).size == 0
    np.testing.assert_allclose(ensemble_weights(4, 0.0), 0.25)


def test_ensemble_averages_all_valid_predictions_with_exp_weights():
    s = ChunkScheduler("ensemble", k=0.5)  # large k so the weighting is clearly visible
    s.add(_chunk(1.0), start_step=0)  # covers steps 0..3
    s.add(_chunk(2.0), start_step=1)  # covers 1..4
    s.add(_chunk(4.0), start_step=2)  # covers 2..5
    np.testing.assert_allclose(s.action_for(0), 1.0)
    w = np.exp(-0.5 * np.arange(2))
    np.testing.assert_allclose(s.action_for(1), (w @ [1.0, 2.0]) / w.sum())
    w = np.exp(-0.5 * np.arange(3))
    np.testing.assert_allclose(s.action_for(2), (w @ [1.0, 2.0, 4.0]) / w.sum())
    np.testing.assert_allclose(s.action_for(3), (w @ [1.0, 2.0, 4.0]) / w.sum())
    w = np.exp(-0.5 * np.arange(2))
    np.testing.assert_allclose(s.action_for(4), (w @ [2.0, 4.0]) / w.sum())  # first chunk is over
    np.testing.assert_allclose(s.action_for(5), 4.0)
    assert s.action_for(6) is None
    assert s.n_chunks == 0


def test_ensemble_uses_row_of_each_chunk_for_the_step():
    s = ChunkScheduler("ensemble", k=0.01)
    a = np.arange(5 * 7, dtype=float).reshape(5, 7)
    b = 100 + np.arange(5 * 7, dtype=float).reshape(5, 7)
    s.add(a, 10)
    s.add(b, 12)
    w = ensemble_weights(2, 0.01)
    np.testing.assert_allclose(s.action_for(13), w[0] * a[3] + w[1] * b[1])


def test_ensemble_result_is_convex_combination():
    rng = np.random.default_rng(0)
    s = ChunkScheduler("ensemble")
    for start in range(6):
        s.add(rng.uniform(0, 1, size=(8, 7)), start)
    for step in range(6, 13):
        a = s.action_for(step)
        assert a is not None and np.all(a >= 0) and np.all(a <= 1)


def test_receding_executes_first_n_then_switches_to_newest():
    s = ChunkScheduler("receding", receding_steps=3)
    s.add(_chunk(1.0, h=6), 0)
    assert s.action_for(0)[0] == 1.0
    s.add(_chunk(2.0, h=6), 1)  # arrives early: chunk 1 still has rows 1, 2 to run
    s.add(_chunk(3.0, h=6), 2)  # newer still: replaces chunk 2 as the pending one
    assert s.action_for(1)[0] == 1.0
    assert s.action_for(2)[0] == 1.0
    assert s.action_for(3)[0] == 3.0  # row 3 of chunk 1 would be its 4th action: switch to the newest
    assert s.action_for(4)[0] == 3.0
    # no newer chunk: the active one runs on to its end (steps 2..7), then nothing
    assert s.action_for(7)[0] == 3.0
    assert s.action_for(8) is None


def test_receding_row_index_is_step_minus_start():
    s = ChunkScheduler("receding", receding_steps=2)
    a = np.arange(4 * 7, dtype=float).reshape(4, 7)
    s.add(a, 5)
    np.testing.assert_array_equal(s.action_for(6), a[1])  # latency: row 0 is already in the past
    b = -np.arange(4 * 7, dtype=float).reshape(4, 7)
    s.add(b, 6)
    np.testing.assert_array_equal(s.action_for(7), b[1])  # chunk a used rows 0..1 -> switch


def test_receding_waits_for_a_future_chunk():
    s = ChunkScheduler("receding", receding_steps=1)
    s.add(_chunk(1.0, h=4), 0)
    s.add(_chunk(2.0, h=4), 3)
    assert s.action_for(1)[0] == 1.0  # the new chunk does not cover step 1 yet
    assert s.action_for(3)[0] == 2.0


@pytest.mark.parametrize("kwargs", [dict(mode="fifo"), dict(k=-1.0), dict(k=float("nan")),
                                    dict(receding_steps=0), dict(max_chunks=0)])
def test_bad_configuration_is_a_user_error(kwargs):
    with pytest.raises(UserError):
        ChunkScheduler(**kwargs)


def test_bad_chunks_raise_safety_error():
    s = ChunkScheduler()
    with pytest.raises(SafetyError, match="shape"):
        s.add(np.zeros(7), 0)
    with pytest.raises(SafetyError, match="NaN"):
        s.add(np.full((2, 7), np.nan), 0)
    s.add(np.zeros((2, 7)), 5)
    with pytest.raises(SafetyError, match="older"):
        s.add(np.zeros((2, 7)), 4)


def test_max_chunks_drops_oldest():
    s = ChunkScheduler("ensemble", max_chunks=2)
    for i in range(4):
        s.add(_chunk(float(i), h=10), i)
    assert s.n_chunks == 2
    w = ensemble_weights(2, 0.01)
    np.testing.assert_allclose(s.action_for(4), w @ [2.0, 3.0])
