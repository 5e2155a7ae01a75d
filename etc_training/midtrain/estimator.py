"""Learned proximity estimator: s(x) = sigmoid(f(phi(x))) on frozen VLM features, trained with binary
cross-entropy, robot (ETC) samples positive, pool samples negative.

By the classical density-ratio argument the Bayes-optimal classifier is p_robot / (p_robot + p_pool) (with the
classes weighted equally, which `balance=True` does with pos_weight = n_neg / n_pos), a monotone function of the
density ratio, so ranking the pool by s(x) ranks it by p_robot(x) / p_pool(x).

f is a small MLP on standardized features (mean / std of the training features, stored with the weights):
Linear(D, H) - GELU - Dropout - ... - Linear(H, 1). A stratified held-out fraction of both classes measures the
ROC AUC; the weights of the epoch with the lowest held-out loss are kept.

    est = ProximityEstimator(dim=256, hidden=(256,), seed=0)
    report = est.fit(pos_features, neg_features, epochs=40)         # report["val_auc"]
    scores = est.score_cache(pool_cache, block=65536)                # streamed over the memmap
    est.save("runs/midtrain/estimator"); est = ProximityEstimator.load("runs/midtrain/estimator")
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError

CONFIG_FILE = "estimator.json"
WEIGHTS_FILE = "estimator.safetensors"


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties). Needs both classes."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise MidtrainError(f"labels {y.shape} and scores {s.shape} differ in length")
    n1 = int(y.sum())
    n0 = int(len(y) - n1)
    if n1 == 0 or n0 == 0:
        raise MidtrainError("AUC needs positive and negative samples")
    if not np.all(np.isfinite(s)):
        raise MidtrainError("scores contain NaN or Inf")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _check_features(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise MidtrainError(f"{name} must be a non-empty (N, D) array, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise MidtrainError(f"{name} has {a.shape[1]} features per row, the estimator expects {dim}")
    if not np.all(np.isfinite(a)):
        raise MidtrainError(f"{name} contains NaN or Inf")
    return a


def _split(n: int, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    k = int(round(n * frac))
    if frac > 0:
        k = min(max(k, 1), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


class ProximityEstimator:
    def __init__(self, dim: int, hidden: Sequence[int] = (256,), dropout: float = 0.1, seed: int = 0):
        if dim < 1:
            raise MidtrainError(f"feature dimension must be >= 1, got {dim}")
        if any(int(h) < 1 for h in hidden):
            raise MidtrainError(f"hidden sizes must be >= 1, got {list(hidden)}")
        if not 0 <= dropout < 1:
            raise MidtrainError(f"dropout must be in [0, 1), got {dropout}")
        self.dim = int(dim)
        self.hidden = [int(h) for h in hidden]
        self.dropout = float(dropout)
        self.seed = int(seed)
        self.mean = np.zeros(self.dim, np.float32)
        self.std = np.ones(self.dim, np.float32)
        self.report: dict = {}
        self.net = self._make_net()

    def _make_net(self):
        import torch

        torch.manual_seed(self.seed)
        layers: list = []
        d = self.dim
        for h in self.hidden:
            layers += [torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Dropout(self.dropout)]
            d = h
        layers.append(torch.nn.Linear(d, 1))
        return torch.nn.Sequential(*layers)

    # -------------------------------------------------------------- training
    def fit(self, pos: Any, neg: Any, *, epochs: int = 40, batch_size: int = 256, lr: float = 1e-3,
            weight_decay: float = 1e-4, val_fraction: float = 0.2, balance: bool = True, select_by: str = "auc",
            patience: int = 5, progress: bool = False) -> dict:
        """Train on positives (robot) vs negatives (pool); returns {train_auc, val_auc, val_loss, best_epoch,
        n_pos, n_neg, history}. Deterministic for a given seed.

        Model selection (`select_by`): "auc" keeps the EARLIEST epoch with the best held-out AUC (improvements
        below 1e-4 do not count) and stops after `patience` epochs without one; "loss" keeps the epoch with the
        lowest held-out BCE. Robot vs pool is often separable: once the held-out AUC saturates, further epochs
        only sharpen the boundary (the held-out loss still falls as the margins grow) and the logits of the
        candidates, which lie far from the robot data, start to reflect a few max-margin directions rather than
        proximity; "auc" keeps the least-sharpened classifier that separates best."""
        import torch
        from tqdm import tqdm

        P = _check_features(pos, "positive features", self.dim)
        N = _check_features(neg, "negative features", self.dim)
        if epochs < 1 or batch_size < 1 or lr <= 0 or patience < 1:
            raise MidtrainError("epochs, batch_size and patience must be >= 1 and lr > 0")
        if select_by not in ("auc", "loss"):
            raise MidtrainError(f"select_by must be 'auc' or 'loss', got {select_by!r}")
        if not 0 <= val_fraction < 1:
            raise MidtrainError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction > 0 and (len(P) < 2 or len(N) < 2):
            raise MidtrainError("a held-out split needs at least 2 positives and 2 negatives")
        rng = np.random.default_rng([self.seed, 17])
        ptr, pva = _split(len(P), val_fraction, rng)
        ntr, nva = _split(len(N), val_fraction, rng)
        Xtr = np.concatenate([P[ptr], N[ntr]])
        ytr = np.concatenate([np.ones(len(ptr), np.float32), np.zeros(len(ntr), np.float32)])
        self.mean = Xtr.mean(0).astype(np.float32)
        self.std = (Xtr.std(0) + 1e-6).astype(np.float32)
        Xv = np.concatenate([P[pva], N[nva]]) if val_fraction > 0 else Xtr
        yv = np.concatenate([np.ones(len(pva), np.float32), np.zeros(len(nva), np.float32)]) if val_fraction > 0 \
            else ytr
        pw = float(len(ntr)) / float(max(1, len(ptr))) if balance else 1.0
        self.net = self._make_net()
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw))
        xt = torch.from_numpy((Xtr - self.mean) / self.std)
        yt = torch.from_numpy(ytr)
        gen = torch.Generator().manual_seed(self.seed)
        best_key, best_ep, best_state, since = -math.inf, -1, None, 0
        history = []
        for ep in tqdm(range(epochs), desc="estimator", unit="epoch", disable=not progress):
            self.net.train()
            perm = torch.randperm(len(xt), generator=gen)
            tot = 0.0
            for k in range(0, len(xt), batch_size):
                idx = perm[k:k + batch_size]
                loss = lossf(self.net(xt[idx]).squeeze(-1), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(idx)
            zv = self.logits(Xv)
            vl = self._loss_z(zv, yv, pw)
            va = roc_auc(yv, zv)
            history.append({"epoch": ep, "train_loss": tot / len(xt), "val_loss": vl, "val_auc": va})
            key = va if select_by == "auc" else -vl
            if key > best_key + (1e-4 if select_by == "auc" else 1e-7):
                best_key, best_ep, since = key, ep, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                since += 1
                if select_by == "auc" and since >= patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        zv = self.logits(Xv)
        rep = {
            "n_pos": int(len(P)), "n_neg": int(len(N)), "n_pos_val": int(len(pva)), "n_neg_val": int(len(nva)),
            "pos_weight": pw, "best_epoch": int(best_ep), "epochs_run": len(history), "select_by": select_by,
            "val_loss": self._loss_z(zv, yv, pw), "train_auc": roc_auc(ytr, self.logits(Xtr)),
            "val_auc": roc_auc(yv, zv) if val_fraction > 0 else None,
            "epochs": int(epochs), "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
            "hidden": self.hidden, "dropout": self.dropout, "seed": self.seed, "history": history,
        }
        self.report = rep
        return rep

    @staticmethod
    def _loss_z(z: np.ndarray, y: np.ndarray, pw: float) -> float:
        import torch

        return float(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(np.asarray(z, np.float32)), torch.from_numpy(y), pos_weight=torch.tensor(pw)))

    # -------------------------------------------------------------- scoring
    def logits(self, x: Any, block: int = 65536) -> np.ndarray:
        """f(phi(x)) for an in-memory (N, D) array, float32."""
        import torch

        X = _check_features(x, "features", self.dim)
        self.net.eval()
        out = np.empty(len(X), np.float32)
        with torch.no_grad():
            for s in range(0, len(X), block):
                xb = torch.from_numpy((X[s:s + block] - self.mean) / self.std)
                out[s:s + block] = self.net(xb).squeeze(-1).numpy()
        return out

    def score(self, x: Any) -> np.ndarray:
        """Proximity s(x) = sigmoid(f(phi(x))) in (0, 1)."""
        z = self.logits(x).astype(np.float64)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def score_cache(self, cache, block: int = 16384, progress: bool = False, logit: bool = True) -> np.ndarray:
        """Scores of every row of a FeatureCache, streamed block by block (memory: one block + the output).
        Returns logits (ranking-equivalent to s(x), no saturation ties) unless logit=False."""
        from tqdm import tqdm

        if cache.dim != self.dim:
            raise MidtrainError(f"{cache.dir}: features have {cache.dim} dims, the estimator expects {self.dim}")
        out = np.empty(cache.n, np.float32)
        with tqdm(total=cache.n, desc="scoring", unit="cand", unit_scale=True, disable=not progress) as bar:
            for s, X in cache.iter_blocks(block):
                z = self.logits(X, block=block)
                out[s:s + len(X)] = z if logit else 1.0 / (1.0 + np.exp(-z))
                bar.update(len(X))
        return out

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        from etc_ros.core.io import atomic_write, atomic_write_json

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / WEIGHTS_FILE, lambda t: save_file(
            {k: v.contiguous() for k, v in self.net.state_dict().items()}, str(t)))
        rep = {k: v for k, v in self.report.items() if k != "history"}
        atomic_write_json(d / CONFIG_FILE, {
            "format": "etc-midtrain-estimator/1", "dim": self.dim, "hidden": self.hidden, "dropout": self.dropout,
            "seed": self.seed, "mean": self.mean.tolist(), "std": self.std.tolist(), "report": rep})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "ProximityEstimator":
        from safetensors.torch import load_file

        d = Path(directory)
        f = d / CONFIG_FILE
        if not f.is_file() or not (d / WEIGHTS_FILE).is_file():
            raise MidtrainError(f"not an estimator directory (needs {CONFIG_FILE} and {WEIGHTS_FILE}): {d}")
        try:
            cfg = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise MidtrainError(f"{f}: invalid JSON: {e}") from None
        est = cls(int(cfg["dim"]), cfg["hidden"], float(cfg["dropout"]), int(cfg["seed"]))
        est.mean = np.asarray(cfg["mean"], np.float32)
        est.std = np.asarray(cfg["std"], np.float32)
        est.report = cfg.get("report", {})
        try:
            est.net.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
        except RuntimeError as e:
            raise MidtrainError(f"{d}: weights do not match the config: {e}") from None
        est.net.eval()
        return est


def subsample_rows(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted row indices: all rows, or k of them drawn without replacement (deterministic)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 29]).choice(n, size=int(k), replace=False))


__all__ = ["ProximityEstimator", "roc_auc", "subsample_rows"]
