"""Distribution gap between datasets in feature space: pairwise MMD with a Gaussian RBF kernel, a heatmap, and a
2-D embedding (t-SNE or PCA).

    MMD^2(P, Q) = E k(x, x') - 2 E k(x, y) + E k(y, y'),   k(x, y) = exp(-||x - y||^2 / (2 sigma^2))

- Estimator: the biased (V-statistic) form, means over all pairs including i = j. It is >= 0, exactly 0 for
  identical sample sets, and never needs clipping.
- Bandwidth: ONE sigma for the whole matrix (so entries are comparable), the median heuristic: the median of the
  pairwise Euclidean distances between distinct points of the union of all (sub-sampled) datasets.
- Normalization: since 0 < k <= 1 and k(x, x) = 1, MMD^2 <= 2. The reported distance is
  d(P, Q) = sqrt(MMD^2 / 2) in [0, 1] (0 = same sample, 1 = infinitely far apart relative to sigma).
- Each dataset is sub-sampled to at most `max_per_set` rows (seeded) to bound the O(n^2) kernel cost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError


def _as2d(x, name: str = "features") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise MidtrainError(f"{name} must be a non-empty (N, D) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise MidtrainError(f"{name} contains NaN or Inf")
    return a


def sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx = np.einsum("ij,ij->i", x, x)[:, None]
    yy = np.einsum("ij,ij->i", y, y)[None, :]
    return np.maximum(xx + yy - 2.0 * x @ y.T, 0.0)


def median_bandwidth(sets: Sequence, max_points: int = 2000, seed: int = 0) -> float:
    """Median heuristic over the union of the sets (at most max_points of it, seeded)."""
    X = np.concatenate([_as2d(s, f"set {k}") for k, s in enumerate(sets)])
    if len(X) > max_points:
        X = X[np.sort(np.random.default_rng([seed, 3]).choice(len(X), max_points, replace=False))]
    if len(X) < 2:
        raise MidtrainError("the median heuristic needs at least 2 points")
    d = np.sqrt(sq_dists(X, X)[np.triu_indices(len(X), 1)])
    sigma = float(np.median(d))
    if sigma <= 0:  # more than half of the pairs coincide: fall back to the mean distance
        sigma = float(d.mean())
    if sigma <= 0:
        raise MidtrainError("all points are identical: no bandwidth")
    return sigma


def _kmean(x: np.ndarray, y: np.ndarray, sigma: float, block: int = 2048) -> float:
    tot = 0.0
    g = 1.0 / (2.0 * sigma * sigma)
    for s in range(0, len(x), block):
        tot += float(np.exp(-sq_dists(x[s:s + block], y) * g).sum())
    return tot / (len(x) * len(y))


def mmd2(x, y, sigma: float) -> float:
    """Biased MMD^2 between two samples with an RBF kernel of bandwidth sigma."""
    if not sigma > 0:
        raise MidtrainError(f"sigma must be > 0, got {sigma}")
    X, Y = _as2d(x, "x"), _as2d(y, "y")
    if X.shape[1] != Y.shape[1]:
        raise MidtrainError(f"x has {X.shape[1]} features, y has {Y.shape[1]}")
    v = _kmean(X, X, sigma) + _kmean(Y, Y, sigma) - 2.0 * _kmean(X, Y, sigma)
    return max(0.0, v)


def normalized_mmd(m2: float | np.ndarray) -> np.ndarray | float:
    """sqrt(MMD^2 / 2): in [0, 1] for an RBF kernel."""
    return np.sqrt(np.clip(np.asarray(m2, dtype=np.float64), 0.0, 2.0) / 2.0)


def subsample(x, k: int, seed: int) -> np.ndarray:
    a = np.asarray(x)
    if len(a) <= k:
        return np.asarray(a, dtype=np.float64)
    return np.asarray(a[np.sort(np.random.default_rng([seed, 11]).choice(len(a), k, replace=False))], np.float64)


def mmd_matrix(sets: Mapping[str, np.ndarray], max_per_set: int = 500, sigma: float | None = None,
               seed: int = 0) -> dict:
    """Pairwise MMD^2 and normalized distance between named datasets. Returns {names, sigma, mmd2, distance,
    sizes} (matrices as nested lists)."""
    if len(sets) < 2:
        raise MidtrainError(f"the gap analysis needs at least 2 datasets, got {len(sets)}")
    names = list(sets)
    subs = [subsample(_as2d(sets[n], n), max_per_set, seed + k) for k, n in enumerate(names)]
    if sigma is None:
        sigma = median_bandwidth(subs, seed=seed)
    k = len(names)
    self_k = [_kmean(s, s, sigma) for s in subs]
    M = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            M[i, j] = M[j, i] = max(0.0, self_k[i] + self_k[j] - 2.0 * _kmean(subs[i], subs[j], sigma))
    return {"names": names, "sigma": float(sigma), "mmd2": M.tolist(), "distance": normalized_mmd(M).tolist(),
            "sizes": [int(len(s)) for s in subs], "normalization": "sqrt(MMD^2 / 2), RBF kernel max = 2",
            "estimator": "biased V-statistic", "bandwidth": "median heuristic over the union (one sigma)"}


def plot_heatmap(result: Mapping, path: str | Path, title: str = "normalized MMD  sqrt(MMD^2 / 2)") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["names"])
    D = np.asarray(result["distance"])
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.6 + 0.65 * n))
    im = ax.imshow(D, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(D.max())))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{D[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if D[i, j] < 0.6 * D.max() else "black")
    ax.set_title(f"{title}\nsigma = {result['sigma']:.3g} (median heuristic)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def embed_2d(sets: Mapping[str, np.ndarray], method: str = "tsne", max_per_set: int = 300, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """(coords (N, 2), labels (N,)) of a seeded sub-sample of each set. method: "tsne" (scikit-learn, PCA init,
    perplexity min(30, (N - 1) / 3)) or "pca"."""
    if method not in ("tsne", "pca"):
        raise MidtrainError(f"embedding method must be 'tsne' or 'pca', got {method!r}")
    parts, labels = [], []
    for k, (n, x) in enumerate(sets.items()):
        s = subsample(_as2d(x, n), max_per_set, seed + 100 + k)
        parts.append(s)
        labels += [n] * len(s)
    X = np.concatenate(parts)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    if len(X) < 3:
        raise MidtrainError("an embedding needs at least 3 points")
    from sklearn.decomposition import PCA

    if method == "pca":
        Y = PCA(n_components=2, random_state=seed).fit_transform(X)
    else:
        from sklearn.manifold import TSNE

        X50 = PCA(n_components=min(50, X.shape[1], len(X)), random_state=seed).fit_transform(X)
        perp = float(min(30.0, max(2.0, (len(X) - 1) / 3.0)))
        Y = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(X50)
    return np.asarray(Y), np.asarray(labels, dtype=object)


def plot_embedding(coords: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "t-SNE of features",
                   robot_prefix: str = "robot/") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6))
    names = list(dict.fromkeys(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for k, n in enumerate(names):
        m = labels == n
        robot = str(n).startswith(robot_prefix)
        ax.scatter(coords[m, 0], coords[m, 1], s=14 if robot else 8, marker="^" if robot else "o",
                   color=cmap(k % cmap.N), alpha=0.75, label=n, edgecolors="black" if robot else "none",
                   linewidths=0.3)
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


__all__ = ["mmd2", "mmd_matrix", "median_bandwidth", "normalized_mmd", "plot_heatmap", "embed_2d", "plot_embedding",
           "sq_dists", "subsample"]
