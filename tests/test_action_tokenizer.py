"""Action tokenizers (etc_ros/core/action_tokenizer.py): round trips within quantization error, safe decoding
of malformed token sequences, deterministic FAST fitting, save/load."""
from __future__ import annotations

import json

import numpy as np
import pytest

from etc_ros.core.action_tokenizer import (
    BinningActionTokenizer,
    FastActionTokenizer,
    action_tokenizer_from_dict,
    dct_matrix,
    load_action_tokenizer,
    make_action_tokenizer,
    synthetic_smooth_chunks,
)
from etc_ros.core.errors import ModelError, UserError

H, D = 10, 7


@pytest.fixture(scope="module")
def chunks():
    return synthetic_smooth_chunks(1500, H, D, seed=3)


@pytest.fixture(scope="module")
def fast(chunks):
    return FastActionTokenizer(D, H).fit(chunks[:1000])


def _malformed(vocab: int, n: int):
    rng = np.random.default_rng(0)
    return [
        [],
        [0],
        list(range(min(vocab, n - 1))),  # one short
        [1] * (n + 5),  # too long
        [vocab, vocab + 10],  # out of range
        [-1, -5, 3],
        rng.integers(0, vocab, 3 * n).tolist(),
        np.array([0.5, 1.5]),  # non-integer floats
        ["a", "b"],  # not numbers at all
    ]


# ---------------------------------------------------------------- binning
def test_binning_round_trip_within_half_bin(chunks):
    tok = BinningActionTokenizer(256, D, H)
    assert tok.vocab_size == 256 and tok.max_tokens == 70
    worst = 0.0
    for c in chunks[:300]:
        ids = tok.encode(c)
        assert len(ids) == H * D and min(ids) >= 0 and max(ids) < 256
        dec, ok = tok.decode(ids, return_valid=True)
        assert ok and dec.shape == (H, D)
        worst = max(worst, float(np.abs(dec - c).max()))
    assert worst <= tok.max_error + 1e-6
    assert worst > 0.5 * tok.max_error  # the bound is tight: the test measures something


def test_binning_edges_and_order():
    tok = BinningActionTokenizer(256, 2, 1)
    assert tok.encode(np.array([[-1.0, 1.0]])) == [0, 255]
    assert tok.encode(np.array([[-5.0, 5.0]])) == [0, 255]  # clipped
    c = np.zeros((3, 2))
    c[1, 0] = 1.0
    assert BinningActionTokenizer(4, 2, 3).encode(c) == [2, 2, 3, 2, 2, 2]  # time-major


@pytest.mark.parametrize("bad", _malformed(256, 70), ids=range(9))
def test_binning_malformed_decodes_safely(bad):
    tok = BinningActionTokenizer(256, D, H)
    dec, ok = tok.decode(bad, return_valid=True)
    assert dec.shape == (H, D) and np.all(np.isfinite(dec)) and np.all(np.abs(dec) <= 1)
    assert not ok


def test_binning_rejects_bad_chunks():
    tok = BinningActionTokenizer()
    with pytest.raises(ModelError, match="shape"):
        tok.encode(np.zeros((9, 7)))
    with pytest.raises(ModelError, match="NaN"):
        tok.encode(np.full((10, 7), np.nan))
    with pytest.raises(UserError):
        BinningActionTokenizer(n_bins=1)


# ---------------------------------------------------------------- DCT / FAST
def test_dct_matrix_is_orthonormal():
    c = dct_matrix(H)
    assert np.allclose(c @ c.T, np.eye(H), atol=1e-12)
    # constant signal -> only the DC coefficient
    coef = c @ np.ones(H)
    assert abs(coef[0] - np.sqrt(H)) < 1e-12 and np.allclose(coef[1:], 0, atol=1e-12)


def test_fast_round_trip_within_quantization_bound(fast, chunks):
    bound = fast.max_error_bound()
    assert bound < 0.15  # default scale 10, horizon 10
    worst, lens = 0.0, []
    for c in chunks[1000:]:
        ids = fast.encode(c)
        lens.append(len(ids))
        assert all(0 <= i < fast.vocab_size for i in ids)
        dec, ok = fast.decode(ids, return_valid=True)
        assert ok and dec.shape == (H, D)
        worst = max(worst, float(np.abs(dec - c).max()))
    assert worst <= bound + 1e-6
    assert np.mean(lens) < 0.5 * H * D  # smooth chunks compress well below the 70 binning tokens


def test_fast_decode_recovers_coefficients_exactly(fast, chunks):
    checked = 0
    for c in chunks[1000:1100]:
        ids = fast.encode(c)
        dec = fast.decode(ids)
        # re-encoding the decoded chunk (before the final clip) gives the same quantized coefficients
        coef = np.round(dct_matrix(H) @ dec.astype(np.float64) * fast.scale)
        want = fast.coefficients(c)
        for d in range(D):  # the DCT runs per dimension; columns the final clip did not touch
            if np.all(np.abs(dec[:, d]) < 1 - 1e-6):
                checked += 1
                assert np.array_equal(coef[:, d], want[:, d])
    assert checked > 300


def test_fast_fit_is_deterministic(chunks):
    a = FastActionTokenizer(D, H).fit(chunks[:600]).to_dict()
    b = FastActionTokenizer(D, H).fit(chunks[:600]).to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = FastActionTokenizer(D, H).fit(chunks[600:1200]).to_dict()
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


@pytest.mark.parametrize("which", range(9))
def test_fast_malformed_decodes_safely(fast, which):
    bad = _malformed(fast.vocab_size, H * D)[which]
    dec, ok = fast.decode(bad, return_valid=True)
    assert dec.shape == (H, D) and dec.dtype == np.float32
    assert np.all(np.isfinite(dec)) and np.all(np.abs(dec) <= 1)
    assert not ok


def test_fast_truncated_sequence_is_invalid_but_close(fast, chunks):
    c = chunks[1200]
    ids = fast.encode(c)
    dec, ok = fast.decode(ids[:-1], return_valid=True)
    assert not ok and dec.shape == (H, D)
    dec, ok = fast.decode(ids + [ids[-1]], return_valid=True)
    assert not ok


def test_fast_save_load_identical(fast, chunks, tmp_path):
    p = fast.save(tmp_path / "at.json")
    back = load_action_tokenizer(p)
    assert isinstance(back, FastActionTokenizer) and back.vocab_size == fast.vocab_size
    for c in chunks[1000:1050]:
        assert back.encode(c) == fast.encode(c)
        assert np.array_equal(back.decode(fast.encode(c)), fast.decode(fast.encode(c)))
    b = BinningActionTokenizer(128, D, H)
    assert load_action_tokenizer(b.save(tmp_path / "b.json")).to_dict() == b.to_dict()


def test_fast_errors(chunks, tmp_path):
    with pytest.raises(ModelError, match="not fitted"):
        FastActionTokenizer().encode(chunks[0])
    with pytest.raises(ModelError, match="shape"):
        FastActionTokenizer().fit(chunks[:, :5])
    with pytest.raises(ModelError, match="alphabet"):
        FastActionTokenizer(max_vocab_size=20)
    with pytest.raises(ModelError, match="scale"):
        FastActionTokenizer(scale=0)
    with pytest.raises(ModelError, match="unknown action tokenizer"):
        action_tokenizer_from_dict({"type": "nope"})
    with pytest.raises(ModelError, match="not found"):
        load_action_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid JSON"):
        load_action_tokenizer(tmp_path / "bad.json")
    with pytest.raises(ModelError):
        make_action_tokenizer("wavelet")


def test_fast_scale_trades_error_for_tokens(chunks):
    coarse = FastActionTokenizer(D, H, scale=5.0).fit(chunks[:800])
    fine = FastActionTokenizer(D, H, scale=40.0).fit(chunks[:800])
    held = chunks[800:1000]
    n_c = np.mean([len(coarse.encode(c)) for c in held])
    n_f = np.mean([len(fine.encode(c)) for c in held])
    e_c = max(float(np.abs(coarse.decode(coarse.encode(c)) - c).max()) for c in held)
    e_f = max(float(np.abs(fine.decode(fine.encode(c)) - c).max()) for c in held)
    assert n_c < n_f and e_f < e_c
