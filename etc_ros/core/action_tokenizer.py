"""Action tokenizers: a normalized action chunk (H, D) in [-1, 1] <-> a list of integer tokens in
[0, vocab_size). The VLA maps these into a reserved block at the top of its vocabulary by an offset
(see etc_ros.core.processor). Shared by training and the robot runtime: numpy + the `tokenizers` library only.

- BinningActionTokenizer: one token per (step, dimension), `n_bins` uniform bins over [-1, 1]
  (time-major order: step 0 dims 0..D-1, step 1 ...). H * D tokens per chunk (70 for H=10, D=7).
- FastActionTokenizer (FAST-style compression): per dimension, an orthonormal DCT-II along time; the
  coefficients are multiplied by `scale` and rounded to integers, flattened lowest frequency first
  (all dimensions' frequency 0, then frequency 1, ...), each integer written as one character of a
  fixed alphabet, and the character string compressed by a byte-pair encoding trained (`fit`) on the
  project's own action chunks. Smooth chunks have few non-zero high-frequency coefficients, so long runs of
  zeros merge into few tokens.

Decoding never raises on a malformed sequence (unknown ids, wrong length, characters outside the alphabet):
it returns a chunk of the right shape (missing coefficients = 0) and reports it invalid, so the runtime can
drop the chunk.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import ModelError

ACTION_TOKENIZER_FILE = "action_tokenizer.json"
# First code point of the FAST alphabet (Latin Extended-A onwards: printable, no whitespace, no normalizer).
_FAST_CHAR_BASE = 0x100


def _check_chunk(chunk: Any, horizon: int, action_dim: int) -> np.ndarray:
    arr = np.asarray(chunk, dtype=np.float64)
    if arr.shape != (horizon, action_dim):
        raise ModelError(f"action chunk must have shape ({horizon}, {action_dim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelError("action chunk contains NaN or Inf")
    return np.clip(arr, -1.0, 1.0)


def _as_token_list(tokens: Any) -> list[int] | None:
    """Token ids as a list of python ints, or None when they are not integers at all."""
    try:
        arr = np.asarray(tokens)
    except Exception:  # pragma: no cover - exotic input
        return None
    if arr.size == 0:
        return []
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            return None
    return [int(t) for t in arr.reshape(-1)]


class ActionTokenizer:
    """Common interface of the action tokenizers."""

    kind = "base"
    horizon: int
    action_dim: int

    @property
    def vocab_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def max_tokens(self) -> int:
        """Upper bound on the number of tokens of one chunk."""
        return self.horizon * self.action_dim

    @property
    def fixed_length(self) -> int | None:
        """Exact number of tokens per chunk, or None for variable-length tokenizers (FAST)."""
        return None

    def encode(self, chunk: Any) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, tokens: Sequence[int], return_valid: bool = False):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        from etc_ros.core.io import atomic_write_json

        return atomic_write_json(path, self.to_dict())


def decode_phase(step: int, fixed_length: int | None) -> str:
    """Constrained decoding rule shared by the PyTorch decoder and the robot runtime: for a tokenizer with a fixed
    number of tokens per chunk (binning), the first `fixed_length` steps may only emit action tokens and the next one
    must be the stop token, so every decoded chunk has the right shape (as OpenVLA-style decoders do). Variable-length
    tokenizers (FAST) decode freely ("any")."""
    if fixed_length is None:
        return "any"
    return "actions" if step < fixed_length else "stop"


class BinningActionTokenizer(ActionTokenizer):
    """Per-dimension uniform binning of [-1, 1] into `n_bins` bins; token = bin index."""

    kind = "bin"

    def __init__(self, n_bins: int = 256, action_dim: int = robot_spec.ACTION_DIM,
                 horizon: int = robot_spec.CHUNK_HORIZON):
        if int(n_bins) < 2:
            raise ModelError(f"n_bins must be >= 2, got {n_bins}")
        if int(action_dim) < 1 or int(horizon) < 1:
            raise ModelError(f"action_dim and horizon must be >= 1, got {action_dim}, {horizon}")
        self.n_bins = int(n_bins)
        self.action_dim = int(action_dim)
        self.horizon = int(horizon)

    @property
    def fixed_length(self) -> int:
        """Tokens per chunk (always horizon x action_dim): decoding can be constrained to exactly this many."""
        return self.horizon * self.action_dim

    @property
    def vocab_size(self) -> int:
        return self.n_bins

    @property
    def max_error(self) -> float:
        """Largest round-trip error in normalized units (half a bin)."""
        return 1.0 / self.n_bins

    def encode(self, chunk: Any) -> list[int]:
        arr = _check_chunk(chunk, self.horizon, self.action_dim)
        idx = np.floor((arr + 1.0) / 2.0 * self.n_bins).astype(np.int64)
        return np.clip(idx, 0, self.n_bins - 1).reshape(-1).tolist()

    def decode(self, tokens: Sequence[int], return_valid: bool = False):
        n = self.horizon * self.action_dim
        toks = _as_token_list(tokens)
        valid = toks is not None
        toks = toks or []
        if len(toks) != n:
            valid = False
        vals = np.zeros(n, dtype=np.float64)  # missing -> 0 (the middle of the range)
        for i, t in enumerate(toks[:n]):
            if 0 <= t < self.n_bins:
                vals[i] = -1.0 + (t + 0.5) * 2.0 / self.n_bins
            else:
                valid = False
        chunk = vals.reshape(self.horizon, self.action_dim).astype(np.float32)
        return (chunk, bool(valid)) if return_valid else chunk

    def to_dict(self) -> dict:
        return {"type": self.kind, "n_bins": self.n_bins, "action_dim": self.action_dim, "horizon": self.horizon}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BinningActionTokenizer":
        return cls(n_bins=int(d.get("n_bins", 256)), action_dim=int(d["action_dim"]), horizon=int(d["horizon"]))


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix C (n x n): coefficients = C @ x along time, x = C.T @ coefficients."""
    k = np.arange(n)[:, None]
    t = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * t + 1) * k / (2 * n))
    c[0, :] *= 1.0 / np.sqrt(2.0)
    return c


class FastActionTokenizer(ActionTokenizer):
    """DCT + scale/round + BPE action tokenizer (FAST-style). `fit(chunks)` before encode/decode."""

    kind = "fast"

    def __init__(
        self,
        action_dim: int = robot_spec.ACTION_DIM,
        horizon: int = robot_spec.CHUNK_HORIZON,
        scale: float = 10.0,
        max_vocab_size: int = 1024,
        min_frequency: int = 2,
    ):
        if int(action_dim) < 1 or int(horizon) < 1:
            raise ModelError(f"action_dim and horizon must be >= 1, got {action_dim}, {horizon}")
        if not (float(scale) > 0 and math.isfinite(float(scale))):
            raise ModelError(f"FAST scale must be a positive number, got {scale}")
        self.action_dim = int(action_dim)
        self.horizon = int(horizon)
        self.scale = float(scale)
        self.min_frequency = int(min_frequency)
        # |DCT coefficient| <= sqrt(2H) for inputs in [-1, 1]: the alphabet covers every reachable integer.
        self.bound = int(math.ceil(math.sqrt(2.0 * self.horizon) * self.scale))
        self.alphabet_size = 2 * self.bound + 1
        if _FAST_CHAR_BASE + self.alphabet_size >= 0xD800:  # stay below the UTF-16 surrogate range
            raise ModelError(f"FAST scale {self.scale} is too large for horizon {self.horizon}")
        if int(max_vocab_size) < self.alphabet_size:
            raise ModelError(
                f"FAST max_vocab_size {max_vocab_size} is below the alphabet size {self.alphabet_size} "
                f"(scale {self.scale}, horizon {self.horizon})"
            )
        self.max_vocab_size = int(max_vocab_size)
        self._dct = dct_matrix(self.horizon)
        self._bpe = None  # tokenizers.Tokenizer once fitted
        self._id_to_tok: list[str] = []

    # ------------------------------------------------------------------ helpers
    @property
    def fitted(self) -> bool:
        return self._bpe is not None

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_tok) if self.fitted else self.max_vocab_size

    def _require_fit(self) -> None:
        if not self.fitted:
            raise ModelError("FastActionTokenizer is not fitted: call fit(chunks) or load a saved one")

    def _alphabet(self) -> list[str]:
        return [chr(_FAST_CHAR_BASE + i) for i in range(self.alphabet_size)]

    def coefficients(self, chunk: Any) -> np.ndarray:
        """Quantized DCT coefficients (H, D) as integers in [-bound, bound]."""
        arr = _check_chunk(chunk, self.horizon, self.action_dim)
        coef = np.round(self._dct @ arr * self.scale).astype(np.int64)
        return np.clip(coef, -self.bound, self.bound)

    def _to_string(self, coef: np.ndarray) -> str:
        flat = coef.reshape(-1)  # row k = frequency k: lowest frequency of every dimension first
        return "".join(chr(_FAST_CHAR_BASE + int(v) + self.bound) for v in flat)

    def max_error_bound(self) -> float:
        """Worst-case round-trip error (normalized units) from rounding the coefficients."""
        return float(np.max(np.sum(np.abs(self._dct), axis=0)) * 0.5 / self.scale)

    # ------------------------------------------------------------------ fit / encode / decode
    def fit(self, chunks: Any, show_progress: bool = False) -> "FastActionTokenizer":
        """Train the BPE on normalized chunks (N, H, D). Deterministic for the same data."""
        from tokenizers import Tokenizer, models, trainers

        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[1:] != (self.horizon, self.action_dim) or arr.shape[0] == 0:
            raise ModelError(
                f"FAST fit needs chunks of shape (N, {self.horizon}, {self.action_dim}), got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ModelError("FAST fit: chunks contain NaN or Inf")
        strings = [self._to_string(self.coefficients(c)) for c in arr]
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=self.max_vocab_size,
            min_frequency=self.min_frequency,
            initial_alphabet=self._alphabet(),
            special_tokens=[],
            show_progress=show_progress,
        )
        tok.train_from_iterator(strings, trainer, length=len(strings))
        self._set_bpe(tok)
        return self

    def _set_bpe(self, tok) -> None:
        vocab = tok.get_vocab()
        id_to_tok = [""] * len(vocab)
        for s, i in vocab.items():
            if not 0 <= i < len(vocab):
                raise ModelError("FAST tokenizer: vocabulary ids are not contiguous")
            id_to_tok[i] = s
        missing = [c for c in self._alphabet() if c not in vocab]
        if missing:
            raise ModelError(f"FAST tokenizer: {len(missing)} alphabet characters missing from the vocabulary")
        self._bpe = tok
        self._id_to_tok = id_to_tok

    def encode(self, chunk: Any) -> list[int]:
        self._require_fit()
        return list(self._bpe.encode(self._to_string(self.coefficients(chunk))).ids)

    def decode(self, tokens: Sequence[int], return_valid: bool = False):
        self._require_fit()
        n = self.horizon * self.action_dim
        toks = _as_token_list(tokens)
        valid = toks is not None
        text = []
        for t in toks or []:
            if 0 <= t < len(self._id_to_tok):
                text.append(self._id_to_tok[t])
            else:
                valid = False
        chars = "".join(text)
        if len(chars) != n:
            valid = False
        vals = np.zeros(n, dtype=np.float64)  # missing coefficients -> 0
        for i, ch in enumerate(chars[:n]):
            v = ord(ch) - _FAST_CHAR_BASE - self.bound
            if -self.bound <= v <= self.bound:
                vals[i] = v
            else:
                valid = False
        coef = vals.reshape(self.horizon, self.action_dim) / self.scale
        chunk = np.clip(self._dct.T @ coef, -1.0, 1.0).astype(np.float32)
        return (chunk, bool(valid)) if return_valid else chunk

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        return {
            "type": self.kind,
            "action_dim": self.action_dim,
            "horizon": self.horizon,
            "scale": self.scale,
            "max_vocab_size": self.max_vocab_size,
            "min_frequency": self.min_frequency,
            "bpe": json.loads(self._bpe.to_str()) if self.fitted else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FastActionTokenizer":
        from tokenizers import Tokenizer

        out = cls(
            action_dim=int(d["action_dim"]),
            horizon=int(d["horizon"]),
            scale=float(d.get("scale", 10.0)),
            max_vocab_size=int(d.get("max_vocab_size", 1024)),
            min_frequency=int(d.get("min_frequency", 2)),
        )
        if d.get("bpe") is not None:
            try:
                tok = Tokenizer.from_str(json.dumps(d["bpe"]))
            except Exception as e:
                raise ModelError(f"FAST tokenizer: invalid BPE section: {e}") from None
            out._set_bpe(tok)
        return out


_KINDS = {"bin": BinningActionTokenizer, "fast": FastActionTokenizer}


def action_tokenizer_from_dict(d: Mapping[str, Any]) -> ActionTokenizer:
    if not isinstance(d, Mapping) or d.get("type") not in _KINDS:
        kind = d.get("type") if isinstance(d, Mapping) else type(d).__name__
        raise ModelError(f"unknown action tokenizer type {kind!r}; known: {sorted(_KINDS)}")
    try:
        return _KINDS[d["type"]].from_dict(d)
    except KeyError as e:
        raise ModelError(f"action tokenizer: missing key {e}") from None


def load_action_tokenizer(path: str | Path) -> ActionTokenizer:
    p = Path(path)
    if p.is_dir():
        p = p / ACTION_TOKENIZER_FILE
    if not p.is_file():
        raise ModelError(f"action tokenizer file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{p}: invalid JSON: {e}") from None
    return action_tokenizer_from_dict(d)


def make_action_tokenizer(kind: str, action_dim: int = robot_spec.ACTION_DIM, horizon: int = robot_spec.CHUNK_HORIZON,
                          **kwargs: Any) -> ActionTokenizer:
    """'bin' or 'fast' (unfitted) with the given shape."""
    if kind not in _KINDS:
        raise ModelError(f"unknown action tokenizer {kind!r}; use one of {sorted(_KINDS)}")
    return _KINDS[kind](action_dim=action_dim, horizon=horizon, **kwargs)


def synthetic_smooth_chunks(n: int, horizon: int = robot_spec.CHUNK_HORIZON, action_dim: int = robot_spec.ACTION_DIM,
                            seed: int = 0) -> np.ndarray:
    """Smooth normalized chunks (N, H, D) in [-1, 1] for tests and benchmarks: random low-frequency motion on
    the arm dimensions and a piecewise-constant +-1 gripper."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, horizon)[None, :, None]
    amp = rng.uniform(0.1, 0.6, (n, 1, action_dim))
    freq = rng.uniform(0.1, 1.0, (n, 1, action_dim))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, action_dim))
    offset = rng.uniform(-0.3, 0.3, (n, 1, action_dim))
    x = offset + amp * np.sin(2 * np.pi * freq * t + phase)
    grip = np.where(rng.random((n, 1)) < 0.5, 1.0, -1.0)
    switch = rng.integers(0, horizon + 1, n)
    steps = np.arange(horizon)[None, :]
    x[:, :, -1] = np.where(steps < switch[:, None], grip, -grip)
    return np.clip(x, -1.0, 1.0)
