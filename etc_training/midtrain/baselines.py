"""Selection baselines of the EmbodiedMidtrain ablation (higher score = kept first, like the learned estimator):

- `random`: a seeded uniform score per candidate (random selection of K).
- `distance` (feature-space average distance): score = - mean_j ||phi(x) - phi(r_j)||_2 over the robot features
  r_j (at most `max_ref` of them, seeded), on the same frozen features the estimator uses.
- `ppl` (robot-conditioned perplexity): score = - log PPL_adapted(x) = - mean answer-token NLL of the candidate
  under a model adapted to robot data. Adapted model: the checkpoint given (e.g. the recipe's Stage-1 / ETC-
  trained policy), or, when none is given, a copy of the frozen base model fine-tuned here on the robot ETC
  records for a few steps (`adapt_model`, answer-only loss, as in Stage 1).
- `delta_ppl` (delta perplexity): score = log PPL_base(x) - log PPL_adapted(x): how much adapting to robot data
  made the candidate more likely.

The perplexities come from the feature caches (features.py records each row's answer NLL in the same pass).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError

METHODS = ("learned", "random", "distance", "ppl", "delta_ppl")
METHOD_TITLES = {"learned": "learned estimator", "random": "random", "distance": "feature-space avg. distance",
                 "ppl": "robot-conditioned perplexity", "delta_ppl": "delta perplexity"}


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    if n < 1:
        raise MidtrainError(f"need at least one candidate, got {n}")
    return np.random.default_rng([seed, 101]).random(n).astype(np.float64)


def avg_distance_scores(pool: Any, robot: Any, block: int = 16384, max_ref: int = 2048, seed: int = 0) -> np.ndarray:
    """-mean Euclidean distance of each pool row to the robot rows. `pool` is an (N, D) array or a FeatureCache
    (streamed in blocks); `robot` an (M, D) array."""
    R = np.asarray(robot, dtype=np.float64)
    if R.ndim != 2 or len(R) == 0:
        raise MidtrainError(f"robot features must be a non-empty (M, D) array, got {R.shape}")
    if len(R) > max_ref:
        R = R[np.sort(np.random.default_rng([seed, 5]).choice(len(R), max_ref, replace=False))]
    rr = np.einsum("ij,ij->i", R, R)[None, :]

    def blk(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != R.shape[1]:
            raise MidtrainError(f"pool features have {X.shape[1]} dims, robot features {R.shape[1]}")
        d2 = np.maximum(np.einsum("ij,ij->i", X, X)[:, None] + rr - 2.0 * X @ R.T, 0.0)
        return -np.sqrt(d2).mean(1)

    if hasattr(pool, "iter_blocks"):
        out = np.empty(pool.n, np.float64)
        for s, X in pool.iter_blocks(block):
            out[s:s + len(X)] = blk(X)
        return out
    P = np.asarray(pool)
    if P.ndim != 2 or len(P) == 0:
        raise MidtrainError(f"pool features must be a non-empty (N, D) array, got {P.shape}")
    return np.concatenate([blk(P[s:s + block]) for s in range(0, len(P), block)])


def ppl_scores(adapted_nll: Any) -> np.ndarray:
    """- mean answer NLL under the robot-adapted model (lower perplexity = closer)."""
    a = np.asarray(adapted_nll, dtype=np.float64)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise MidtrainError("perplexities must be a finite 1-D array")
    return -a


def delta_ppl_scores(base_nll: Any, adapted_nll: Any) -> np.ndarray:
    """log PPL_base - log PPL_adapted per candidate."""
    b = np.asarray(base_nll, dtype=np.float64)
    a = np.asarray(adapted_nll, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise MidtrainError(f"base {b.shape} and adapted {a.shape} perplexities must be 1-D of the same length")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise MidtrainError("perplexities contain NaN or Inf")
    return b - a


def adapt_model(policy, robot_items: Sequence[dict], steps: int = 40, batch_size: int = 8, lr: float = 2e-4,
                seed: int = 0, progress: bool = True, store=None) -> tuple[Any, dict]:
    """A copy of `policy` fine-tuned on robot ETC items (answer-only next-token loss, AdamW, constant lr, grad
    clip 1.0): the stand-in "robot-adapted" model when no Stage-1 checkpoint is given. Returns (model, report)."""
    import torch
    from tqdm import tqdm

    from etc_training.midtrain.features import _images_for, build_example
    from etc_training.recipe.data import EpisodeStore, RecordImages

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise MidtrainError("adaptation needs steps >= 1, batch_size >= 1 and lr > 0")
    if not robot_items:
        raise MidtrainError("no robot items to adapt the model on")
    model = copy.deepcopy(policy)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 23])
    resolver = RecordImages(store or EpisodeStore(cache=16), (), 1)
    proc = model.processor
    n_views = int(proc.config.n_views)
    losses = []
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    for _ in tqdm(range(steps), desc="adapt on robot data", unit="step", disable=not progress):
        idx = rng.choice(len(robot_items), size=min(batch_size, len(robot_items)), replace=False)
        exs = [build_example(proc, robot_items[int(i)], _images_for(robot_items[int(i)], resolver, n_views))
               for i in idx]
        out = model(proc.collate(exs))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out["loss"]))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rep = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "first_loss": losses[0],
           "last_loss": float(np.mean(losses[-5:])), "wall_s": round(time.perf_counter() - t0, 2)}
    model.meta = dict(model.meta, midtrain_adapted=rep)
    return model, rep


def save_adapted(model, directory: str | Path) -> Path:
    return model.save(directory)


__all__ = ["METHODS", "METHOD_TITLES", "random_scores", "avg_distance_scores", "ppl_scores", "delta_ppl_scores",
           "adapt_model", "save_adapted"]
