"""The whole mid-training data engine in one call, and its report.

    cfg = load_midtrain_config("config/midtrain.yaml", ["out=runs/midtrain"])
    summary = run_engine(cfg)          # -> out/report.md, out/report.json, out/*.png

Steps (each reuses what an earlier invocation finished; feature caches resume mid-way):
  1. pool: the built-in offline pool (or `pool.path`), robot data: `robot.etc` or the recipe's synthetic
     episodes + ETC (etc_training.recipe.data.make_synthetic_data with robot.synthetic = the recipe's defaults);
  2. frozen base VLM -> features + answer NLL of the pool and of the robot samples;
  3. robot-adapted model (adapt.checkpoint, or the base fine-tuned on the robot ETC records) -> pool NLL;
  4. learned proximity estimator (held-out AUC) and the baselines -> one score per pool candidate per method;
  5. precision@K per method (robot-like sources = the ground truth), per-source score distributions;
  6. gap analysis: pairwise normalized MMD heatmap + t-SNE of pool sources and robot categories;
  7. selection files (top K of the learned estimator, and K random) in the recipe's general-source format;
  8. optional (train.enabled): tiny recipe runs, Stage 1 mixing ETC with the selected vs the random subset.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError
from etc_training.recipe.config import SyntheticConfig


# ---------------------------------------------------------------------------------------------- config
@dataclass
class PoolCfg:
    path: str | None = None  # pool JSONL / dir / parquet; null -> the built-in pool under OUT/pool
    n_per_source: int = 150  # built-in pool: candidates per source
    seed: int = 0
    robot_like_sources: list[str] = field(default_factory=list)  # ground truth for precision@K (empty: manifest)


@dataclass
class RobotCfg:
    etc: str | None = None  # ETC directory or JSONL (positives); null -> synthetic recipe data under OUT/robot_data
    splits: list[str] = field(default_factory=lambda: ["train"])
    max_items: int = 0  # 0 = all
    eval_split: str = "val"  # held-out robot ETC split for the recipe comparison (answer NLL)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelCfg:
    path: str | None = None  # etc-vla policy / PaliGemma checkpoint; null -> random-init preset
    preset: str = "tiny"
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 2


@dataclass
class FeaturesCfg:
    batch_size: int = 16


@dataclass
class EstimatorCfg:
    hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    val_fraction: float = 0.2
    select_by: str = "auc"  # auc: earliest epoch with the best held-out AUC (+ patience) | loss: lowest held-out BCE
    patience: int = 5
    ablation: bool = True  # also report the estimator selected by held-out loss (all epochs), as "learned_by_loss"
    max_negatives: int = 200000  # pool rows used as negatives (seeded subsample beyond that)
    block: int = 16384  # rows per block when scoring the cache (memory ~ a few blocks)


@dataclass
class AdaptCfg:
    checkpoint: str | None = None  # robot-adapted policy (e.g. a recipe Stage-1 final/); null -> adapt here
    steps: int = 40
    batch_size: int = 8
    lr: float = 2.0e-4


@dataclass
class SelectCfg:
    k: int | None = None  # absolute K (overrides fraction)
    fraction: float = 0.25
    methods: list[str] = field(default_factory=lambda: ["learned", "random"])  # selection files written


@dataclass
class GapCfg:
    max_per_set: int = 300  # MMD sub-sample per dataset
    embedding: str = "tsne"  # tsne | pca
    embed_per_set: int = 150


@dataclass
class ReportCfg:
    methods: list[str] = field(default_factory=lambda: ["learned", "random", "distance", "ppl", "delta_ppl"])
    k_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25])  # + K = #robot-like ("R")


@dataclass
class TrainCmpCfg:
    enabled: bool = False
    config: str | None = None  # recipe YAML (default config/train_tiny.yaml)
    variants: list[str] = field(default_factory=lambda: ["selected", "random"])  # + "none" (ETC only)
    stage1_steps: int = 30
    stage2_steps: int = 40
    stage3: bool = False
    etc_batch: int = 8
    general_weight: float = 0.25  # share of the Stage-1 ETC batch drawn from the mid-training subset
    threads: int = 2
    seeds: list[int] = field(default_factory=lambda: [0])  # one run per variant and seed
    overrides: list[str] = field(default_factory=list)  # extra recipe overrides (key=value)


@dataclass
class MidtrainConfig:
    out: str = "runs/midtrain"
    seed: int = 0
    progress: bool = True
    pool: PoolCfg = field(default_factory=PoolCfg)
    robot: RobotCfg = field(default_factory=RobotCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    features: FeaturesCfg = field(default_factory=FeaturesCfg)
    estimator: EstimatorCfg = field(default_factory=EstimatorCfg)
    adapt: AdaptCfg = field(default_factory=AdaptCfg)
    select: SelectCfg = field(default_factory=SelectCfg)
    gap: GapCfg = field(default_factory=GapCfg)
    report: ReportCfg = field(default_factory=ReportCfg)
    train: TrainCmpCfg = field(default_factory=TrainCmpCfg)


def load_midtrain_config(path: str | None = None, overrides: Sequence[str] = ()) -> MidtrainConfig:
    from etc_ros.core.config import load_config
    from etc_training.midtrain.baselines import METHODS

    cfg = load_config(MidtrainConfig, path, list(overrides))
    for m in list(cfg.report.methods) + list(cfg.select.methods):
        if m not in METHODS:
            raise MidtrainError(f"unknown method {m!r}; known: {list(METHODS)}")
    if cfg.estimator.select_by not in ("auc", "loss"):
        raise MidtrainError(f"estimator.select_by must be auc or loss, got {cfg.estimator.select_by!r}")
    if cfg.gap.embedding not in ("tsne", "pca"):
        raise MidtrainError(f"gap.embedding must be tsne or pca, got {cfg.gap.embedding!r}")
    for v in cfg.train.variants:
        if v not in ("selected", "random", "none"):
            raise MidtrainError(f"train.variants: unknown variant {v!r} (selected, random, none)")
    if cfg.pool.n_per_source < 1 or cfg.features.batch_size < 1:
        raise MidtrainError("pool.n_per_source and features.batch_size must be >= 1")
    if not 0 < cfg.train.general_weight < 1:
        raise MidtrainError(f"train.general_weight must be in (0, 1), got {cfg.train.general_weight}")
    return cfg


# ---------------------------------------------------------------------------------------------- helpers
def robot_like_sources(pool, explicit: Sequence[str] = ()) -> list[str]:
    """Ground truth for precision@K: explicit list, else the pool manifest's, else records flagged robot_like."""
    if explicit:
        unknown = sorted(set(explicit) - set(pool.sources()))
        if unknown:
            raise MidtrainError(f"robot-like source(s) {unknown} are not in the pool (sources: {pool.sources()})")
        return sorted(explicit)
    if pool.manifest.get("robot_like_sources"):
        return sorted(pool.manifest["robot_like_sources"])
    return sorted({r["source"] for r in pool.records if r.get("robot_like")})


def evaluate_methods(scores: dict[str, np.ndarray], groups: np.ndarray, positive_sources: Sequence[str],
                     k_fractions: Sequence[float]) -> dict:
    """precision@K (share of the top K from robot-like sources) per method and K, and per-source means of the
    scores' ranks (percentile: 1 = top)."""
    from etc_training.midtrain.select import ranking, top_k

    n = len(groups)
    pos = np.isin(groups, list(positive_sources))
    n_pos = int(pos.sum())
    ks: dict[str, int] = {}
    for f in k_fractions:
        ks[f"{f:g}"] = max(1, int(round(f * n)))
    if n_pos:
        ks["R"] = n_pos
    out: dict[str, Any] = {"n": n, "n_robot_like": n_pos, "robot_like_sources": list(positive_sources),
                           "k": ks, "random_expectation": n_pos / n if n else None, "methods": {}}
    for m, s in scores.items():
        order = ranking(s)
        pct = np.empty(n)
        pct[order] = 1.0 - np.arange(n) / max(1, n - 1)
        res: dict[str, Any] = {"precision_at_k": {}, "top_k_by_source": {}, "mean_rank_percentile": {}}
        for name, k in ks.items():
            sel = top_k(s, k)
            res["precision_at_k"][name] = float(pos[sel].mean()) if n_pos else None
            vals, cnt = np.unique(groups[sel], return_counts=True)
            res["top_k_by_source"][name] = {str(v): int(c) for v, c in zip(vals, cnt)}
        for g in sorted(set(groups.tolist())):
            res["mean_rank_percentile"][g] = float(pct[groups == g].mean())
        out["methods"][m] = res
    return out


def plot_score_distributions(scores: dict[str, np.ndarray], groups: np.ndarray, path: Path,
                             positive_sources: Sequence[str], titles: dict | None = None) -> Path:
    """One panel per method: per-source distributions of the score (box + points), robot-like sources marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(set(groups.tolist()))
    ms = list(scores)
    fig, axes = plt.subplots(len(ms), 1, figsize=(8, 2.3 * len(ms)), squeeze=False)
    for ax, m in zip(axes[:, 0], ms):
        s = np.asarray(scores[m], dtype=np.float64)
        data = [s[groups == g] for g in names]
        try:
            bp = ax.boxplot(data, orientation="horizontal", showfliers=False, patch_artist=True)
        except TypeError:  # matplotlib < 3.10
            bp = ax.boxplot(data, vert=False, showfliers=False, patch_artist=True)
        for patch, g in zip(bp["boxes"], names):
            patch.set_facecolor("#f4a261" if g in positive_sources else "#a8c5da")
        rng = np.random.default_rng(0)
        for k, d in enumerate(data):
            ax.scatter(d, k + 1 + rng.uniform(-0.18, 0.18, len(d)), s=3, color="black", alpha=0.35)
        ax.set_yticks(range(1, len(names) + 1))
        ax.set_yticklabels([f"{g} *" if g in positive_sources else g for g in names], fontsize=8)
        ax.set_title((titles or {}).get(m, m) + "  (* = robot-like source)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[-1, 0].set_xlabel("score (learned: logit of s(x); higher = closer to the robot data)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_precision(ev: dict, path: Path, titles: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(ev["k"])
    ms = list(ev["methods"])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    w = 0.8 / max(1, len(ms))
    for j, m in enumerate(ms):
        vals = [ev["methods"][m]["precision_at_k"][k] or 0.0 for k in ks]
        ax.bar(np.arange(len(ks)) + j * w - 0.4 + w / 2, vals, w, label=(titles or {}).get(m, m))
    if ev.get("random_expectation") is not None:
        ax.axhline(ev["random_expectation"], color="black", ls="--", lw=1, label="share of robot-like in pool")
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([f"K={ev['k'][k]}" + (" (R)" if k == "R" else f" ({k})") for k in ks], fontsize=8)
    ax.set_ylabel("precision@K (robot-like share of top K)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def gap_analysis(pool_cache, robot_cache, out_dir: str | Path, max_per_set: int = 300, embedding: str = "tsne",
                 embed_per_set: int = 150, seed: int = 0) -> dict:
    """MMD heatmap + embedding plot of every pool source and robot group; writes mmd.json, mmd_heatmap.png,
    embedding.png under out_dir."""
    from etc_ros.core.io import atomic_write_json
    from etc_training.midtrain.mmd import embed_2d, mmd_matrix, plot_embedding, plot_heatmap

    out = Path(out_dir)
    sets: dict[str, np.ndarray] = {}
    for cache in (pool_cache, robot_cache):
        if cache is None:
            continue
        for g, rows in cache.group_rows().items():
            if len(rows):
                sets[g] = cache.load(rows[np.sort(np.random.default_rng([seed, len(sets)]).permutation(len(rows))
                                                  [:max(max_per_set, embed_per_set)])])
    t0 = time.perf_counter()
    res = mmd_matrix(sets, max_per_set=max_per_set, seed=seed)
    res["mmd_s"] = round(time.perf_counter() - t0, 2)
    plot_heatmap(res, out / "mmd_heatmap.png")
    t0 = time.perf_counter()
    coords, labels = embed_2d(sets, embedding, embed_per_set, seed)
    plot_embedding(coords, labels, out / "embedding.png",
                   title=f"{'t-SNE' if embedding == 'tsne' else 'PCA'} of frozen-VLM features (pool sources vs robot)")
    res["embedding"] = embedding
    res["embedding_s"] = round(time.perf_counter() - t0, 2)
    names = res["names"]
    D = np.asarray(res["distance"])
    robot = [i for i, n in enumerate(names) if n.startswith("robot/")]
    other = [i for i, n in enumerate(names) if not n.startswith("robot/")]
    if robot and other:
        res["pool_to_robot_mean_distance"] = {names[i]: float(D[i, robot].mean()) for i in other}
    atomic_write_json(out / "mmd.json", res)
    res["files"] = [str(out / "mmd_heatmap.png"), str(out / "embedding.png"), str(out / "mmd.json")]
    return res


# ---------------------------------------------------------------------------------------------- engine
def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != max(1, int(n)):
        torch.set_num_threads(max(1, int(n)))


def _robot_data(cfg: MidtrainConfig, out: Path, progress: bool) -> tuple[str, str | None]:
    """(ETC path, episodes dir or None)."""
    if cfg.robot.etc:
        return cfg.robot.etc, None
    from etc_training.recipe.data import make_synthetic_data

    eps, etc = make_synthetic_data(out / "robot_data", cfg.robot.synthetic, progress=progress)
    return str(etc), str(eps)


def fit_and_score(cfg: MidtrainConfig, pool_cache, robot_cache, out_dir: Path, progress: bool = True) -> tuple:
    """Fit the estimator (positives robot, negatives pool) and score the whole pool cache (streamed)."""
    from etc_training.midtrain.estimator import ProximityEstimator, subsample_rows

    e = cfg.estimator
    pos = robot_cache.load()
    neg = pool_cache.load(subsample_rows(pool_cache.n, e.max_negatives, cfg.seed))
    est = ProximityEstimator(pool_cache.dim, e.hidden, e.dropout, cfg.seed)
    t0 = time.perf_counter()
    rep = est.fit(pos, neg, epochs=e.epochs, batch_size=e.batch_size, lr=e.lr, weight_decay=e.weight_decay,
                  val_fraction=e.val_fraction, select_by=e.select_by, patience=e.patience, progress=progress)
    rep["fit_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    scores = est.score_cache(pool_cache, block=e.block, progress=progress)
    rep["score_s"] = round(time.perf_counter() - t0, 3)
    rep["score_candidates_per_s"] = round(pool_cache.n / max(rep["score_s"], 1e-9), 1)
    est.report = rep
    est.save(out_dir)
    return est, scores, rep


def run_engine(cfg: MidtrainConfig, log=print) -> dict:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from etc_ros.core.config import save_config, to_dict
    from etc_ros.core.io import atomic_write_json
    from etc_training.midtrain.baselines import (
        METHOD_TITLES,
        adapt_model,
        avg_distance_scores,
        delta_ppl_scores,
        ppl_scores,
        random_scores,
    )
    from etc_training.midtrain.builtin_pool import make_builtin_pool
    from etc_training.midtrain.features import extract_features, feature_info, load_model
    from etc_training.midtrain.pool import pool_items, read_pool, robot_items
    from etc_training.midtrain.select import resolve_k, top_k, write_selection

    say = log or (lambda s: None)
    prog = bool(cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    _set_threads(cfg.model.threads)
    t_all = time.perf_counter()
    timing: dict[str, float] = {}

    # 1. data
    t0 = time.perf_counter()
    pool_path = cfg.pool.path or make_builtin_pool(out / "pool", cfg.pool.n_per_source, cfg.pool.seed,
                                                   progress=prog)
    pool = read_pool(pool_path)
    positives = robot_like_sources(pool, cfg.pool.robot_like_sources)
    etc_path, episodes = _robot_data(cfg, out, prog)
    r_items = robot_items(etc_path, cfg.robot.splits)
    if cfg.robot.max_items and len(r_items) > cfg.robot.max_items:
        keep = np.sort(np.random.default_rng([cfg.seed, 41]).choice(len(r_items), cfg.robot.max_items, replace=False))
        r_items = [r_items[int(i)] for i in keep]
    p_items = pool_items(pool)
    timing["data_s"] = round(time.perf_counter() - t0, 2)
    say(f"[midtrain] pool {pool.path}: {len(pool)} candidates from {pool.sources()}; robot-like {positives}; "
        f"robot samples {len(r_items)} ({etc_path}, splits {cfg.robot.splits})")

    # 2. features of the frozen base model
    t0 = time.perf_counter()
    base = load_model(cfg.model.path, cfg.model.preset, cfg.model.seed, cfg.model.device)
    minfo = {"path": cfg.model.path, "preset": cfg.model.preset, "seed": cfg.model.seed}
    fdir = out / "features" / "base"
    pc = extract_features(base, p_items, fdir / "pool", cfg.features.batch_size, progress=prog, model_info=minfo,
                          overwrite=True)
    rc = extract_features(base, r_items, fdir / "robot", cfg.features.batch_size, progress=prog, model_info=minfo,
                          overwrite=True)
    timing["features_s"] = round(time.perf_counter() - t0, 2)
    feat_rate = (pc.n + rc.n) / max(1e-9, float(pc.index.get("extract_s", 0)) + float(rc.index.get("extract_s", 0)))

    # 3. robot-adapted model for the perplexity baselines
    scores: dict[str, np.ndarray] = {}
    adapt_rep: dict[str, Any] = {}
    methods = list(cfg.report.methods)
    if "ppl" in methods or "delta_ppl" in methods:
        t0 = time.perf_counter()
        if cfg.adapt.checkpoint:
            adapted = load_model(cfg.adapt.checkpoint, device=cfg.model.device)
            adapt_rep = {"checkpoint": cfg.adapt.checkpoint}
            ainfo = {"path": cfg.adapt.checkpoint}
        else:
            adir = out / "models" / "adapted"
            if (adir / "vla.json").is_file() and (adir / "adapt.json").is_file() and \
                    json.loads((adir / "adapt.json").read_text()).get("config") == to_dict(cfg.adapt):
                adapted = load_model(adir, device=cfg.model.device)
                adapt_rep = json.loads((adir / "adapt.json").read_text())["report"]
            else:
                adapted, adapt_rep = adapt_model(base, r_items, cfg.adapt.steps, cfg.adapt.batch_size, cfg.adapt.lr,
                                                 cfg.seed, progress=prog)
                adapted.save(adir)
                atomic_write_json(adir / "adapt.json", {"config": to_dict(cfg.adapt), "report": adapt_rep})
            ainfo = {"path": str(adir), "adapted_from": minfo}
        ac = extract_features(adapted, p_items, out / "features" / "adapted" / "pool", cfg.features.batch_size,
                              progress=prog, model_info=ainfo, overwrite=True)
        del adapted
        timing["adapt_s"] = round(time.perf_counter() - t0, 2)
        if "ppl" in methods:
            scores["ppl"] = ppl_scores(ac.mean_nll())
        if "delta_ppl" in methods:
            scores["delta_ppl"] = delta_ppl_scores(pc.mean_nll(), ac.mean_nll())
    del base

    # 4. estimator + baselines
    t0 = time.perf_counter()
    est, learned, fit_rep = fit_and_score(cfg, pc, rc, out / "estimator", progress=prog)
    timing["estimator_s"] = round(time.perf_counter() - t0, 2)
    say(f"[midtrain] estimator: held-out AUC {fit_rep['val_auc']:.4f} (train {fit_rep['train_auc']:.4f}, "
        f"best epoch {fit_rep['best_epoch']})")
    if "learned" in methods or "learned" in cfg.select.methods:
        scores["learned"] = learned.astype(np.float64)
    ablation = None
    if cfg.estimator.ablation:
        from etc_training.midtrain.estimator import ProximityEstimator, subsample_rows

        e = cfg.estimator
        alt = ProximityEstimator(pc.dim, e.hidden, e.dropout, cfg.seed)
        arep = alt.fit(rc.load(), pc.load(subsample_rows(pc.n, e.max_negatives, cfg.seed)), epochs=e.epochs,
                       batch_size=e.batch_size, lr=e.lr, weight_decay=e.weight_decay, val_fraction=e.val_fraction,
                       select_by="loss" if e.select_by == "auc" else "auc", patience=e.patience)
        ablation = {k: v for k, v in arep.items() if k != "history"}
        scores["learned_alt"] = alt.score_cache(pc, block=e.block).astype(np.float64)
    if "random" in methods or "random" in cfg.select.methods:
        scores["random"] = random_scores(pc.n, cfg.seed)
    if "distance" in methods:
        scores["distance"] = avg_distance_scores(pc, rc.load(), seed=cfg.seed)
    order = [m for m in ("learned", "learned_alt", "random", "distance", "ppl", "delta_ppl") if m in scores]
    scores = {m: scores[m] for m in order}
    sdir = out / "scores"
    sdir.mkdir(parents=True, exist_ok=True)
    for m, s in scores.items():
        np.save(sdir / f"{m}.npy", s)

    # 5. evaluation + plots
    groups = pc.groups
    assert [r["id"] for r in pool.records] == pc.ids, "pool / cache row order"
    notes = {}
    if "ppl" in scores and "delta_ppl" in scores:
        from scipy.stats import spearmanr

        notes["spearman_ppl_vs_delta_ppl"] = float(spearmanr(scores["ppl"], scores["delta_ppl"])[0])
        notes["base_log_ppl_std"] = float(np.std(pc.mean_nll()))
    shown = [m for m in scores if m in methods or m == "learned_alt"]
    titles = dict(METHOD_TITLES, learned_alt=f"learned, selected by held-out "
                                             f"{'loss' if cfg.estimator.select_by == 'auc' else 'AUC'} (ablation)")
    ev = evaluate_methods({m: scores[m] for m in shown}, groups, positives, cfg.report.k_fractions)
    plots = [plot_score_distributions({m: scores[m] for m in shown if m != "learned_alt"}, groups,
                                      out / "score_distributions.png", positives, titles),
             plot_precision(ev, out / "precision_at_k.png", titles)]

    # 6. gap analysis
    t0 = time.perf_counter()
    gap = gap_analysis(pc, rc, out / "gap", cfg.gap.max_per_set, cfg.gap.embedding, cfg.gap.embed_per_set, cfg.seed)
    timing["gap_s"] = round(time.perf_counter() - t0, 2)

    # 7. selections
    K = resolve_k(pc.n, cfg.select.k, None if cfg.select.k else cfg.select.fraction)
    selections = {}
    for m in cfg.select.methods:
        sel = top_k(scores[m], K)
        selections[m] = write_selection(pool, sel, scores[m], out / "selection" / f"{m}.jsonl", m,
                                        {"precision": float(np.isin(groups[sel], positives).mean())
                                         if positives else None})

    # 8. recipe comparison
    train_res = None
    if cfg.train.enabled:
        t0 = time.perf_counter()
        train_res = recipe_comparison(cfg, out, etc_path, episodes, selections, log=say)
        timing["train_s"] = round(time.perf_counter() - t0, 2)

    timing["total_s"] = round(time.perf_counter() - t_all, 2)
    summary = {
        "pool": {"path": str(pool.path), "n": len(pool), "sources": {g: int((groups == g).sum())
                                                                   for g in sorted(set(groups.tolist()))},
                 "robot_like_sources": positives},
        "robot": {"etc": etc_path, "splits": cfg.robot.splits, "n": rc.n, "groups": feature_info(rc)["groups"]},
        "features": {"pooling": pc.index.get("pooling"), "dim": pc.dim, "model": minfo,
                     "candidates_per_s": round(feat_rate, 2), "pool": feature_info(pc), "robot": feature_info(rc)},
        "estimator": {k: v for k, v in fit_rep.items() if k != "history"},
        "estimator_ablation": ablation,
        "notes": notes,
        "method_titles": titles,
        "adapted_model": adapt_rep,
        "evaluation": ev,
        "gap": {k: v for k, v in gap.items() if k not in ("mmd2",)},
        "selection": {"k": K, "files": selections},
        "train": train_res,
        "timing": timing,
        "plots": [str(p) for p in plots] + gap["files"],
        "config": to_dict(cfg),
    }
    atomic_write_json(out / "report.json", summary)
    write_markdown(summary, out / "report.md")
    say(f"[midtrain] report: {out / 'report.md'}")
    return summary


# ---------------------------------------------------------------------------------------------- recipe runs
def _etc_eval_nll(policy_dir: str, items: list[dict], out_dir: Path, batch_size: int) -> dict:
    from etc_training.midtrain.features import extract_features, load_model

    pol = load_model(policy_dir)
    c = extract_features(pol, items, out_dir, batch_size, progress=False, overwrite=True)
    s, n = c.nll()
    return {"etc_val_nll": float(s.sum() / max(1.0, n.sum())), "etc_val_items": int(c.n)}


def _flat_figures(res: dict) -> dict[str, float]:
    out = {}
    for st in ("stage1", "stage2", "stage3"):
        for k, v in (res.get(st) or {}).items():
            if isinstance(v, (int, float)):
                out[f"{st}.{k}"] = float(v)
    if "etc_val_nll" in res:
        out["etc_val_nll"] = float(res["etc_val_nll"])
    return out


def recipe_comparison(cfg: MidtrainConfig, out: Path, etc_path: str, episodes: str | None,
                      selections: dict, log=print) -> dict:
    """Tiny recipe runs (`etc-vla train`), identical but for Stage 1's general source: the learned selection,
    a random selection of the same K, or none; one run per seed in train.seeds. Reports per run and as the mean
    over seeds: Stage-1 ETC loss, the held-out action loss / accuracy at the end of each stage, and the final
    policy's answer NLL on held-out robot ETC records."""
    from etc_training.cli import main as cli_main
    from etc_training.midtrain.pool import robot_items
    from etc_training.recipe.metrics import read_metrics

    t = cfg.train
    if episodes is None and not Path(etc_path).is_dir():
        raise MidtrainError("the recipe comparison needs robot.etc to be an ETC directory built from episodes")
    if not t.seeds:
        raise MidtrainError("train.seeds is empty")
    val_items = []
    if cfg.robot.eval_split:
        try:
            val_items = robot_items(etc_path, [cfg.robot.eval_split])
        except MidtrainError:
            val_items = []
    results: dict[str, Any] = {"variants": {}, "commands": {}, "seeds": list(t.seeds)}
    for v in t.variants:
        runs: dict[str, Any] = {}
        for seed in t.seeds:
            name = v if len(t.seeds) == 1 else f"{v}_s{seed}"
            run_out = out / "train" / name
            w_etc = 1 - t.general_weight if v != "none" else 1.0
            sources = [f"{{name: etc, kind: etc, splits: [train], weight: {w_etc}}}"]
            if v != "none":
                key = "learned" if v == "selected" else "random"
                if key not in selections:
                    raise MidtrainError(f"train variant {v!r} needs select.methods to include {key!r}")
                sources.append(f"{{name: midtrain, kind: general, path: {Path(selections[key]['out']).resolve()}, "
                               f"weight: {t.general_weight}}}")
            ov = [f"out={run_out}", f"seed={seed}", f"stages.stage1.steps={t.stage1_steps}",
                  f"stages.stage1.etc_batch={t.etc_batch}", f"stages.stage1.etc_sources=[{', '.join(sources)}]",
                  f"stages.stage2.steps={t.stage2_steps}", f"stages.stage3.enabled={str(t.stage3).lower()}",
                  "cka.enabled=false", "run.val_every=0", f"run.threads={t.threads}", "run.tensorboard=false",
                  "run.checkpoint_every=0"]
            if episodes is not None:
                ov += [f"data.episodes={Path(episodes).resolve()}"]
            ov += [f"data.etc={Path(etc_path).resolve()}"] + list(t.overrides)
            argv = ["train", "--no-progress"] + (["--config", t.config] if t.config else []) + ov
            results["commands"][name] = "etc-vla " + " ".join(f"'{a}'" if (" " in a or "{" in a) else a
                                                               for a in argv)
            log(f"[midtrain] recipe run {name!r}: {results['commands'][name]}")
            t0 = time.perf_counter()
            rc = cli_main(argv)
            if rc != 0:
                raise MidtrainError(f"recipe run {name!r} failed (exit {rc}); see {run_out}")
            summ = json.loads((run_out / "summary.json").read_text())
            res: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 1), "final_policy": summ["final_policy"]}
            for stage in ("stage1", "stage2", "stage3"):
                rows = read_metrics(run_out / stage / "metrics.jsonl")
                if not rows:
                    continue
                tr = [r for r in rows if "loss" in r and "lr" in r]
                vals = [r["val"] for r in rows if isinstance(r.get("val"), dict)]
                st: dict[str, Any] = {}
                for k in ("etc_loss", "action_loss"):
                    xs = [r[k] for r in tr if k in r]
                    if xs:
                        st[f"train_{k}_last"] = float(np.mean(xs[-3:]))
                if vals:
                    st["val_action_loss"] = float(vals[-1]["action_loss"])
                    st["val_action_accuracy"] = float(vals[-1]["action_accuracy"])
                cnt = tr[-1].get("counts") if tr else None
                if cnt:
                    st["samples_by_source"] = cnt
                res[stage] = st
            if val_items:
                res.update(_etc_eval_nll(summ["final_policy"], val_items, out / "train" / f"{name}_etc_val",
                                         cfg.features.batch_size))
            runs[str(seed)] = res
        figs = [_flat_figures(r) for r in runs.values()]
        keys = sorted(set().union(*figs)) if figs else []
        mean = {k: float(np.mean([f[k] for f in figs if k in f])) for k in keys}
        std = {k: float(np.std([f[k] for f in figs if k in f])) for k in keys}
        results["variants"][v] = {"runs": runs, "mean": mean, "std": std}
    return results


# ---------------------------------------------------------------------------------------------- markdown
def _f(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def write_markdown(s: dict, path: Path) -> Path:
    from etc_ros.core.io import atomic_write_text
    from etc_training.midtrain.baselines import METHOD_TITLES

    METHOD_TITLES = dict(METHOD_TITLES, **(s.get("method_titles") or {}))  # noqa: N806
    ev = s["evaluation"]
    L = ["# Mid-training data selection report (EmbodiedMidtrain at tiny scale)", ""]
    L += [f"Pool: `{s['pool']['path']}`, {s['pool']['n']} candidates; sources "
          + ", ".join(f"{k} ({v})" for k, v in s["pool"]["sources"].items()) + ".",
          f"Robot-like sources (ground truth of precision@K): {', '.join(s['pool']['robot_like_sources']) or 'none'}"
          f" = {ev['n_robot_like']} candidates, i.e. {_f(ev['random_expectation'])} of the pool.",
          f"Positives (robot): {s['robot']['n']} ETC records ({', '.join(f'{k} {v}' for k, v in s['robot']['groups'].items())}).",
          f"Features: {s['features']['pooling']} of the frozen VLM's last hidden states, dim {s['features']['dim']}, "
          f"{_f(s['features']['candidates_per_s'], 1)} candidates/s extraction.", ""]
    e = s["estimator"]
    L += ["## Learned proximity estimator", "",
          f"MLP {e['hidden']} on standardized features, BCE (pos_weight {_f(e['pos_weight'], 2)}), model selected by "
          f"held-out {e['select_by'].upper()} (epoch {e['best_epoch']}; {e['epochs_run']} of at most {e['epochs']} "
          f"epochs run): **held-out AUC {_f(e['val_auc'], 4)}** (train {_f(e['train_auc'], 4)}; {e['n_pos_val']} robot"
          f" + {e['n_neg_val']} pool held out). Scoring {_f(e.get('score_candidates_per_s'), 0)} candidates/s.", ""]
    a = s.get("estimator_ablation")
    if a:
        L += [f"Ablation: the same estimator selected by held-out {a['select_by'].upper()} (epoch {a['best_epoch']}, "
              f"{a['epochs_run']} epochs run) has held-out AUC {_f(a['val_auc'], 4)}; its precision@K is the "
              "'ablation' row below.", ""]
    ks = list(ev["k"])
    L += ["## Precision@K (share of the top K that comes from robot-like sources)", "",
          "| method | " + " | ".join(f"K={ev['k'][k]}" + (" (R)" if k == "R" else f" ({k})") for k in ks) + " |",
          "|---|" + "---|" * len(ks)]
    for m, r in ev["methods"].items():
        L.append(f"| {METHOD_TITLES.get(m, m)} | " + " | ".join(_f(r["precision_at_k"][k]) for k in ks) + " |")
    L += ["", f"Random expectation: {_f(ev['random_expectation'])}. K = R is the number of robot-like candidates "
          "(R-precision).", ""]
    L += ["Mean rank percentile per source (1 = ranked first):", "",
          "| source | " + " | ".join(METHOD_TITLES.get(m, m) for m in ev["methods"]) + " |",
          "|---|" + "---|" * len(ev["methods"])]
    srcs = sorted(next(iter(ev["methods"].values()))["mean_rank_percentile"]) if ev["methods"] else []
    for g in srcs:
        star = " *" if g in ev["robot_like_sources"] else ""
        L.append(f"| {g}{star} | " + " | ".join(_f(r["mean_rank_percentile"][g], 2) for r in ev["methods"].values())
                 + " |")
    adapted = s.get("adapted_model") or {}
    if adapted:
        L += ["", "Perplexity baselines use a robot-adapted model: "
              + (f"checkpoint `{adapted['checkpoint']}`." if "checkpoint" in adapted else
                 f"the frozen base fine-tuned on the robot ETC records for {adapted.get('steps')} steps (batch "
                 f"{adapted.get('batch_size')}, lr {adapted.get('lr')}; answer loss {_f(adapted.get('first_loss'))} -> "
                 f"{_f(adapted.get('last_loss'))}).")]
    nt = s.get("notes") or {}
    if "spearman_ppl_vs_delta_ppl" in nt:
        L += ["", f"The base model's log-perplexity varies little across candidates (std {_f(nt['base_log_ppl_std'])}), "
              f"so delta perplexity ranks almost like robot-conditioned perplexity (Spearman "
              f"{_f(nt['spearman_ppl_vs_delta_ppl'])})."]
    g = s["gap"]
    L += ["", "## Distribution gap", "",
          f"Pairwise normalized MMD sqrt(MMD^2/2) (RBF, one sigma = {_f(g['sigma'])} by the median heuristic, biased "
          f"estimator, <= {max(g['sizes'])} samples per set): `gap/mmd_heatmap.png`; {g['embedding']} embedding: "
          "`gap/embedding.png`.", ""]
    if g.get("pool_to_robot_mean_distance"):
        L += ["| pool source | mean normalized MMD to the robot groups |", "|---|---|"]
        for k, v in sorted(g["pool_to_robot_mean_distance"].items(), key=lambda kv: kv[1]):
            L.append(f"| {k} | {_f(v)} |")
        L.append("")
    sel = s["selection"]
    L += ["## Selections", "", f"K = {sel['k']}.", ""]
    for m, info in sel["files"].items():
        L.append(f"- {METHOD_TITLES.get(m, m)}: `{info['out']}` ({info['records_written']} records; precision "
                 f"{_f(info.get('precision'))}; by source {info['by_source']})")
    tr = s.get("train")
    L += ["", "## Tiny recipe run: Stage 1 with the selected vs a random mid-training subset", ""]
    if not tr:
        L.append("Not run (train.enabled = false).")
    else:
        vs = tr["variants"]
        seeds = tr.get("seeds", [0])
        keys = [("stage1.train_etc_loss_last", "Stage-1 train ETC loss (last logs)"),
                ("stage1.val_action_loss", "held-out action loss after Stage 1"),
                ("stage2.train_action_loss_last", "Stage-2 train action loss (last logs)"),
                ("stage2.val_action_loss", "held-out action loss after Stage 2"),
                ("stage2.val_action_accuracy", "held-out action token accuracy after Stage 2"),
                ("stage3.val_action_loss", "held-out action loss after Stage 3"),
                ("etc_val_nll", "final policy: answer NLL on held-out robot ETC")]
        L += [f"Mean over seeds {seeds}" + (" (± std)" if len(seeds) > 1 else "") + ".", "",
              "| figure | " + " | ".join(vs) + " |", "|---|" + "---|" * len(vs)]
        for k, title in keys:
            cells = []
            for v in vs:
                m = vs[v]["mean"].get(k)
                sd = vs[v]["std"].get(k)
                cells.append("-" if m is None else (f"{m:.4f} ± {sd:.4f}" if len(seeds) > 1 else f"{m:.4f}"))
            if any(c != "-" for c in cells):
                L.append(f"| {title} | " + " | ".join(cells) + " |")
        L += ["", "Commands:", ""] + [f"- {v}: `{c}`" for v, c in tr["commands"].items()]
        if "selected" in vs and "random" in vs and len(seeds) > 1:
            big = []
            for k, title in keys:
                a, b = vs["selected"]["mean"].get(k), vs["random"]["mean"].get(k)
                if a is None or b is None:
                    continue
                sd = max(vs["selected"]["std"].get(k, 0.0), vs["random"]["std"].get(k, 0.0))
                if abs(a - b) > sd:
                    big.append(f"{title} ({a - b:+.4f}, std {sd:.4f})")
            L += ["", "Selected minus random larger than the seed-to-seed std: " + ("; ".join(big) if big else
                  "none of the figures above") + "."]
        L += ["", "This is a random-init tiny model trained for tens of steps; the runs show the selected subset "
              "feeding Stage 1 as a mixture source (report.json: samples_by_source counts what Stage 1 drew)."]
    L += ["", "## Timing", "", "This invocation (steps finished by an earlier one are reused): "
          + ", ".join(f"{k} {v}" for k, v in s["timing"].items()), "",
          "Plots: " + ", ".join(f"`{Path(p).relative_to(path.parent) if Path(p).is_relative_to(path.parent) else p}`"
                                for p in s["plots"] if p.endswith(".png")), ""]
    atomic_write_text(path, "\n".join(L))
    return path


__all__ = ["MidtrainConfig", "load_midtrain_config", "run_engine", "evaluate_methods", "gap_analysis",
           "fit_and_score", "recipe_comparison", "plot_score_distributions", "plot_precision", "write_markdown",
           "robot_like_sources"]
