"""`etc-vla midtrain report`: the whole mid-training data engine in one call.

    cfg = load_midtrain_config("config/midtrain.yaml", ["out=runs/midtrain"])   # etc_training.midtrain.config
    summary = run_engine(cfg)          # -> out/report.md, out/report.json, out/*.png

Steps (each reuses what an earlier invocation finished; feature caches resume mid-way), one function each:
  1. `load_inputs`: the built-in offline pool (or `pool.path`), robot data: `robot.etc` or the recipe's synthetic
     episodes + ETC (etc_training.recipe.data.make_synthetic_data with robot.synthetic = the recipe's defaults);
  2. `extract_base_features`: frozen base VLM -> features + answer NLL of the pool and of the robot samples;
  3. `perplexity_scores`: robot-adapted model (adapt.checkpoint, or the base fine-tuned on the robot ETC records)
     -> pool NLL -> the perplexity baselines;
  4. `fit_and_score` + `estimator_scores`: learned proximity estimator (held-out AUC) and the baselines -> one
     score per pool candidate per method;
  5. `evaluate_scores`: precision@K per method (robot-like sources = the ground truth), per-source score
     distributions;
  6. gap analysis (etc_training.midtrain.report.gap_analysis): pairwise normalized MMD heatmap + t-SNE of pool
     sources and robot categories;
  7. `write_selections`: selection files (top K of the learned estimator, and K random) in the recipe's
     general-source format;
  8. optional (train.enabled) `recipe_comparison`: tiny recipe runs, Stage 1 mixing ETC with the selected vs the
     random subset.
The report itself (report.json, report.md, the plots) is written by etc_training.midtrain.report.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.config import MidtrainConfig

if TYPE_CHECKING:
    from etc_training.midtrain.features import FeatureCache
    from etc_training.midtrain.pool import Pool

# the order of the methods' score files and of the report's rows
SCORE_ORDER = ("learned", "learned_alt", "random", "distance", "ppl", "delta_ppl")


@dataclass
class Inputs:
    """Step 1: the candidate pool and the robot samples (positives)."""

    pool: Pool
    positives: list[str]  # robot-like pool sources: the ground truth of precision@K
    etc_path: str
    episodes: str | None  # episodes dir of the synthetic robot data (None with robot.etc)
    robot_items: list[dict]
    pool_items: list[dict]


@dataclass
class BaseFeatures:
    """Step 2: the frozen base model's feature caches of the pool and of the robot samples."""

    pool: FeatureCache
    robot: FeatureCache
    model_info: dict
    candidates_per_s: float  # extraction rate over both caches


@dataclass
class Evaluation:
    """Step 5: precision@K per method, notes on the scores, the methods' titles and the plots written."""

    results: dict  # evaluate_methods' output (report.json "evaluation")
    notes: dict
    titles: dict[str, str]
    plots: list[Path]


@contextmanager
def _timed(timing: dict[str, float], key: str) -> Iterator[None]:
    """timing[key] = seconds of the block (rounded to 10 ms); nothing is recorded when the block raises."""
    t0 = time.perf_counter()
    yield
    timing[key] = round(time.perf_counter() - t0, 2)


# ---------------------------------------------------------------------------------------------- 1. data
def _robot_data(cfg: MidtrainConfig, out: Path, progress: bool) -> tuple[str, str | None]:
    """(ETC path, episodes dir or None)."""
    if cfg.robot.etc:
        return cfg.robot.etc, None
    from etc_training.recipe.data import make_synthetic_data

    eps, etc = make_synthetic_data(out / "robot_data", cfg.robot.synthetic, progress=progress)
    return str(etc), str(eps)


def load_inputs(cfg: MidtrainConfig, out: Path, progress: bool) -> Inputs:
    """The pool (built-in under OUT/pool unless pool.path), its robot-like sources, and the robot samples
    (robot.max_items of them, a seeded subsample, when set)."""
    from etc_training.midtrain.builtin_pool import make_builtin_pool, source_list
    from etc_training.midtrain.pool import pool_items, read_pool, robot_items
    from etc_training.midtrain.report import robot_like_sources

    pool_path = cfg.pool.path or make_builtin_pool(out / "pool", cfg.pool.n_per_source, cfg.pool.seed,
                                                   source_list(cfg.pool.sources), progress=progress)
    pool = read_pool(pool_path)
    positives = robot_like_sources(pool, cfg.pool.robot_like_sources)
    etc_path, episodes = _robot_data(cfg, out, progress)
    r_items = robot_items(etc_path, cfg.robot.splits)
    if cfg.robot.max_items and len(r_items) > cfg.robot.max_items:
        keep = np.sort(np.random.default_rng([cfg.seed, 41]).choice(len(r_items), cfg.robot.max_items, replace=False))
        r_items = [r_items[int(i)] for i in keep]
    return Inputs(pool, positives, etc_path, episodes, r_items, pool_items(pool))


# ---------------------------------------------------------------------------------------------- 2. features
def extract_base_features(cfg: MidtrainConfig, inputs: Inputs, out: Path, progress: bool) -> tuple[Any, BaseFeatures]:
    """(the frozen base model, its feature caches under OUT/features/base/{pool,robot})."""
    from etc_training.midtrain.features import extract_features, load_model

    base = load_model(cfg.model.path, cfg.model.preset, cfg.model.seed, cfg.model.device)
    minfo = {"path": cfg.model.path, "preset": cfg.model.preset, "seed": cfg.model.seed}
    fdir = out / "features" / "base"
    pc = extract_features(base, inputs.pool_items, fdir / "pool", cfg.features.batch_size, progress=progress,
                          model_info=minfo, overwrite=True)
    rc = extract_features(base, inputs.robot_items, fdir / "robot", cfg.features.batch_size, progress=progress,
                          model_info=minfo, overwrite=True)
    rate = (pc.n + rc.n) / max(1e-9, float(pc.index.get("extract_s", 0)) + float(rc.index.get("extract_s", 0)))
    return base, BaseFeatures(pc, rc, minfo, rate)


# ---------------------------------------------------------------------------------------------- 3. adapted model
def adapted_model(cfg: MidtrainConfig, base, robot_items: list[dict], model_info: dict, out: Path,
                  progress: bool) -> tuple[Any, dict, dict]:
    """(robot-adapted model, its report, its model_info): adapt.checkpoint when set, else the base fine-tuned on
    the robot ETC records, cached under OUT/models/adapted and reused while adapt.* is unchanged."""
    from etc_ros.core.config import to_dict
    from etc_ros.core.io import atomic_write_json
    from etc_training.midtrain.baselines import adapt_model
    from etc_training.midtrain.features import load_model

    if cfg.adapt.checkpoint:
        adapted = load_model(cfg.adapt.checkpoint, device=cfg.model.device)
        return adapted, {"checkpoint": cfg.adapt.checkpoint}, {"path": cfg.adapt.checkpoint}
    adir = out / "models" / "adapted"
    if (adir / "vla.json").is_file() and (adir / "adapt.json").is_file() and \
            json.loads((adir / "adapt.json").read_text()).get("config") == to_dict(cfg.adapt):
        adapted = load_model(adir, device=cfg.model.device)
        adapt_rep = json.loads((adir / "adapt.json").read_text())["report"]
    else:
        adapted, adapt_rep = adapt_model(base, robot_items, cfg.adapt.steps, cfg.adapt.batch_size, cfg.adapt.lr,
                                         cfg.seed, progress=progress)
        adapted.save(adir)
        atomic_write_json(adir / "adapt.json", {"config": to_dict(cfg.adapt), "report": adapt_rep})
    return adapted, adapt_rep, {"path": str(adir), "adapted_from": model_info}


def perplexity_scores(cfg: MidtrainConfig, base, inputs: Inputs, feats: BaseFeatures, out: Path,
                      progress: bool) -> tuple[dict[str, np.ndarray], dict]:
    """({"ppl", "delta_ppl"} scores of the pool (those in report.methods), the adapted model's report)."""
    from etc_training.midtrain.baselines import delta_ppl_scores, ppl_scores
    from etc_training.midtrain.features import extract_features

    methods = list(cfg.report.methods)
    adapted, adapt_rep, ainfo = adapted_model(cfg, base, inputs.robot_items, feats.model_info, out, progress)
    ac = extract_features(adapted, inputs.pool_items, out / "features" / "adapted" / "pool", cfg.features.batch_size,
                          progress=progress, model_info=ainfo, overwrite=True)
    del adapted
    scores: dict[str, np.ndarray] = {}
    if "ppl" in methods:
        scores["ppl"] = ppl_scores(ac.mean_nll())
    if "delta_ppl" in methods:
        scores["delta_ppl"] = delta_ppl_scores(feats.pool.mean_nll(), ac.mean_nll())
    return scores, adapt_rep


# ---------------------------------------------------------------------------------------------- 4. estimator
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


def _ablation_estimator(cfg: MidtrainConfig, feats: BaseFeatures) -> tuple[dict, np.ndarray]:
    """The same estimator selected by the other rule (held-out loss <-> AUC): (its report, its pool scores)."""
    from etc_training.midtrain.estimator import ProximityEstimator, subsample_rows

    e = cfg.estimator
    pc, rc = feats.pool, feats.robot
    alt = ProximityEstimator(pc.dim, e.hidden, e.dropout, cfg.seed)
    arep = alt.fit(rc.load(), pc.load(subsample_rows(pc.n, e.max_negatives, cfg.seed)), epochs=e.epochs,
                   batch_size=e.batch_size, lr=e.lr, weight_decay=e.weight_decay, val_fraction=e.val_fraction,
                   select_by="loss" if e.select_by == "auc" else "auc", patience=e.patience)
    return {k: v for k, v in arep.items() if k != "history"}, alt.score_cache(pc, block=e.block).astype(np.float64)


def estimator_scores(cfg: MidtrainConfig, feats: BaseFeatures, learned: np.ndarray
                     ) -> tuple[dict[str, np.ndarray], dict | None]:
    """(scores of learned / learned_alt (estimator.ablation) / random / distance, the ablation's report or None)."""
    from etc_training.midtrain.baselines import avg_distance_scores, random_scores

    methods = list(cfg.report.methods)
    scores: dict[str, np.ndarray] = {}
    if "learned" in methods or "learned" in cfg.select.methods:
        scores["learned"] = learned.astype(np.float64)
    ablation = None
    if cfg.estimator.ablation:
        ablation, scores["learned_alt"] = _ablation_estimator(cfg, feats)
    if "random" in methods or "random" in cfg.select.methods:
        scores["random"] = random_scores(feats.pool.n, cfg.seed)
    if "distance" in methods:
        scores["distance"] = avg_distance_scores(feats.pool, feats.robot.load(), seed=cfg.seed)
    return scores, ablation


def save_scores(scores: dict[str, np.ndarray], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for m, s in scores.items():
        np.save(out_dir / f"{m}.npy", s)


# ---------------------------------------------------------------------------------------------- 5. evaluation
def evaluate_scores(cfg: MidtrainConfig, inputs: Inputs, feats: BaseFeatures, scores: dict[str, np.ndarray],
                    out: Path) -> Evaluation:
    """precision@K per method (the methods in report.methods, and the ablation), notes, titles and the plots
    score_distributions.png and precision_at_k.png."""
    from etc_training.midtrain.baselines import METHOD_TITLES
    from etc_training.midtrain.report import evaluate_methods, plot_precision, plot_score_distributions

    pc, positives, methods = feats.pool, inputs.positives, list(cfg.report.methods)
    groups = pc.groups
    assert [r["id"] for r in inputs.pool.records] == pc.ids, "pool / cache row order"
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
    return Evaluation(ev, notes, titles, plots)


# ---------------------------------------------------------------------------------------------- 7. selections
def write_selections(cfg: MidtrainConfig, inputs: Inputs, feats: BaseFeatures, scores: dict[str, np.ndarray],
                     out: Path) -> tuple[int, dict]:
    """(K, {method: selection file info}): the top K of every method in select.methods under OUT/selection."""
    from etc_training.midtrain.select import resolve_k, top_k, write_selection

    pc, positives = feats.pool, inputs.positives
    K = resolve_k(pc.n, cfg.select.k, None if cfg.select.k else cfg.select.fraction)
    selections = {}
    for m in cfg.select.methods:
        sel = top_k(scores[m], K)
        selections[m] = write_selection(inputs.pool, sel, scores[m], out / "selection" / f"{m}.jsonl", m,
                                        {"precision": float(np.isin(pc.groups[sel], positives).mean())
                                         if positives else None})
    return K, selections


# ---------------------------------------------------------------------------------------------- 8. recipe runs
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


def _recipe_argv(cfg: MidtrainConfig, variant: str, seed: int, run_out: Path, etc_path: str, episodes: str | None,
                 selections: dict) -> list[str]:
    """`etc-vla` argv of one recipe run: Stage 1's general source is the variant's selection (none: ETC only)."""
    t = cfg.train
    w_etc = 1 - t.general_weight if variant != "none" else 1.0
    sources = [f"{{name: etc, kind: etc, splits: [train], weight: {w_etc}}}"]
    if variant != "none":
        key = "learned" if variant == "selected" else "random"
        if key not in selections:
            raise MidtrainError(f"train variant {variant!r} needs select.methods to include {key!r}")
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
    return ["train", "--no-progress"] + (["--config", t.config] if t.config else []) + ov


def _stage_figures(metrics_path: Path) -> dict[str, Any] | None:
    """Last train ETC / action losses, held-out action loss / accuracy and the sample counts of one stage
    (None when the stage has no metrics)."""
    from etc_training.recipe.metrics import read_metrics

    rows = read_metrics(metrics_path)
    if not rows:
        return None
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
    return st


def _run_recipe(name: str, argv: list[str], run_out: Path) -> dict[str, Any]:
    """One `etc-vla train` run in this process: wall time, final policy and per-stage figures."""
    from etc_training.cli import main as cli_main

    t0 = time.perf_counter()
    rc = cli_main(argv)
    if rc != 0:
        raise MidtrainError(f"recipe run {name!r} failed (exit {rc}); see {run_out}")
    summ = json.loads((run_out / "summary.json").read_text())
    res: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 1), "final_policy": summ["final_policy"]}
    for stage in ("stage1", "stage2", "stage3"):
        st = _stage_figures(run_out / stage / "metrics.jsonl")
        if st is not None:
            res[stage] = st
    return res


def _seed_summary(runs: dict[str, Any]) -> dict[str, Any]:
    """{"runs", "mean", "std"} of one variant: mean and std over seeds of every flat figure."""
    figs = [_flat_figures(r) for r in runs.values()]
    keys = sorted(set().union(*figs)) if figs else []
    mean = {k: float(np.mean([f[k] for f in figs if k in f])) for k in keys}
    std = {k: float(np.std([f[k] for f in figs if k in f])) for k in keys}
    return {"runs": runs, "mean": mean, "std": std}


def recipe_comparison(cfg: MidtrainConfig, out: Path, etc_path: str, episodes: str | None,
                      selections: dict, log=print) -> dict:
    """Tiny recipe runs (`etc-vla train`), identical but for Stage 1's general source: the learned selection,
    a random selection of the same K, or none; one run per seed in train.seeds. Reports per run and as the mean
    over seeds: Stage-1 ETC loss, the held-out action loss / accuracy at the end of each stage, and the final
    policy's answer NLL on held-out robot ETC records."""
    from etc_training.midtrain.pool import robot_items

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
            argv = _recipe_argv(cfg, v, seed, run_out, etc_path, episodes, selections)
            results["commands"][name] = "etc-vla " + " ".join(f"'{a}'" if (" " in a or "{" in a) else a
                                                               for a in argv)
            log(f"[midtrain] recipe run {name!r}: {results['commands'][name]}")
            res = _run_recipe(name, argv, run_out)
            if val_items:
                res.update(_etc_eval_nll(res["final_policy"], val_items, out / "train" / f"{name}_etc_val",
                                         cfg.features.batch_size))
            runs[str(seed)] = res
        results["variants"][v] = _seed_summary(runs)
    return results


# ---------------------------------------------------------------------------------------------- the engine
def build_summary(cfg: MidtrainConfig, inputs: Inputs, feats: BaseFeatures, fit_rep: dict, ablation: dict | None,
                  adapt_rep: dict, evaluation: Evaluation, gap: dict, K: int, selections: dict,
                  train_res: dict | None, timing: dict[str, float]) -> dict:
    """report.json's content."""
    from etc_ros.core.config import to_dict
    from etc_training.midtrain.features import feature_info

    pc, rc, groups = feats.pool, feats.robot, feats.pool.groups
    return {
        "pool": {"path": str(inputs.pool.path), "n": len(inputs.pool),
                 "sources": {g: int((groups == g).sum()) for g in sorted(set(groups.tolist()))},
                 "robot_like_sources": inputs.positives},
        "robot": {"etc": inputs.etc_path, "splits": cfg.robot.splits, "n": rc.n,
                  "groups": feature_info(rc)["groups"]},
        "features": {"pooling": pc.index.get("pooling"), "dim": pc.dim, "model": feats.model_info,
                     "candidates_per_s": round(feats.candidates_per_s, 2), "pool": feature_info(pc),
                     "robot": feature_info(rc)},
        "estimator": {k: v for k, v in fit_rep.items() if k != "history"},
        "estimator_ablation": ablation,
        "notes": evaluation.notes,
        "method_titles": evaluation.titles,
        "adapted_model": adapt_rep,
        "evaluation": evaluation.results,
        "gap": {k: v for k, v in gap.items() if k not in ("mmd2",)},
        "selection": {"k": K, "files": selections},
        "train": train_res,
        "timing": timing,
        "plots": [str(p) for p in evaluation.plots] + gap["files"],
        "config": to_dict(cfg),
    }


def run_engine(cfg: MidtrainConfig, log=print) -> dict:
    """Steps 1-8 (module docstring), then OUT/report.json + OUT/report.md; returns the report's summary."""
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()
    from etc_ros.core.config import save_config
    from etc_training.midtrain.report import gap_analysis, write_report
    from etc_training.recipe.distributed import set_threads

    say = log or (lambda s: None)
    prog = bool(cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    set_threads(cfg.model.threads)
    t_all = time.perf_counter()
    timing: dict[str, float] = {}

    with _timed(timing, "data_s"):
        inputs = load_inputs(cfg, out, prog)
    say(f"[midtrain] pool {inputs.pool.path}: {len(inputs.pool)} candidates from {inputs.pool.sources()}; "
        f"robot-like {inputs.positives}; robot samples {len(inputs.robot_items)} ({inputs.etc_path}, splits "
        f"{cfg.robot.splits})")
    with _timed(timing, "features_s"):
        base, feats = extract_base_features(cfg, inputs, out, prog)
    scores: dict[str, np.ndarray] = {}
    adapt_rep: dict[str, Any] = {}
    if "ppl" in cfg.report.methods or "delta_ppl" in cfg.report.methods:
        with _timed(timing, "adapt_s"):
            scores, adapt_rep = perplexity_scores(cfg, base, inputs, feats, out, prog)
    del base
    with _timed(timing, "estimator_s"):
        _est, learned, fit_rep = fit_and_score(cfg, feats.pool, feats.robot, out / "estimator", progress=prog)
    say(f"[midtrain] estimator: held-out AUC {fit_rep['val_auc']:.4f} (train {fit_rep['train_auc']:.4f}, "
        f"best epoch {fit_rep['best_epoch']})")
    more, ablation = estimator_scores(cfg, feats, learned)
    scores.update(more)
    scores = {m: scores[m] for m in SCORE_ORDER if m in scores}
    save_scores(scores, out / "scores")
    evaluation = evaluate_scores(cfg, inputs, feats, scores, out)
    with _timed(timing, "gap_s"):
        gap = gap_analysis(feats.pool, feats.robot, out / "gap", cfg.gap.max_per_set, cfg.gap.embedding,
                           cfg.gap.embed_per_set, cfg.seed)
    K, selections = write_selections(cfg, inputs, feats, scores, out)
    train_res = None
    if cfg.train.enabled:
        with _timed(timing, "train_s"):
            train_res = recipe_comparison(cfg, out, inputs.etc_path, inputs.episodes, selections, log=say)
    timing["total_s"] = round(time.perf_counter() - t_all, 2)
    summary = build_summary(cfg, inputs, feats, fit_rep, ablation, adapt_rep, evaluation, gap, K, selections,
                            train_res, timing)
    write_report(summary, out)
    say(f"[midtrain] report: {out / 'report.md'}")
    return summary


__all__ = ["Inputs", "BaseFeatures", "Evaluation", "run_engine", "load_inputs", "extract_base_features",
           "adapted_model", "perplexity_scores", "fit_and_score", "estimator_scores", "save_scores", "evaluate_scores",
           "write_selections", "recipe_comparison", "build_summary"]
