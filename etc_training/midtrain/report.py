"""The mid-training data engine's report: precision@K evaluation, plots, gap analysis, report.json + report.md.

    summary = etc_training.midtrain.pipeline.run_engine(cfg)   # runs the engine, then write_report(summary, out)

- `robot_like_sources` / `evaluate_methods`: the ground truth of precision@K and precision@K per method;
- `plot_score_distributions`, `plot_precision`: score_distributions.png, precision_at_k.png;
- `gap_analysis`: pairwise normalized MMD heatmap + t-SNE / PCA embedding of pool sources and robot groups;
- `write_report` / `write_markdown`: OUT/report.json and OUT/report.md from the engine's summary.
The configuration is etc_training.midtrain.config, the steps that produce the summary etc_training.midtrain.pipeline.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError


# ---------------------------------------------------------------------------------------------- evaluation
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


# ---------------------------------------------------------------------------------------------- report files
def write_report(summary: dict, out: str | Path) -> None:
    """OUT/report.json (the summary) and OUT/report.md."""
    from etc_ros.core.io import atomic_write_json

    out = Path(out)
    atomic_write_json(out / "report.json", summary)
    write_markdown(summary, out / "report.md")


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _md_inputs(s: dict) -> list[str]:
    ev = s["evaluation"]
    L = ["# Mid-training data selection report (EmbodiedMidtrain at tiny scale)", ""]
    L += [f"Pool: `{s['pool']['path']}`, {s['pool']['n']} candidates; sources "
          + ", ".join(f"{k} ({v})" for k, v in s["pool"]["sources"].items()) + ".",
          f"Robot-like sources (ground truth of precision@K): {', '.join(s['pool']['robot_like_sources']) or 'none'}"
          f" = {ev['n_robot_like']} candidates, i.e. {_f(ev['random_expectation'])} of the pool.",
          f"Positives (robot): {s['robot']['n']} ETC records "
          f"({', '.join(f'{k} {v}' for k, v in s['robot']['groups'].items())}).",
          f"Features: {s['features']['pooling']} of the frozen VLM's last hidden states, dim {s['features']['dim']}, "
          f"{_f(s['features']['candidates_per_s'], 1)} candidates/s extraction.", ""]
    return L


def _md_estimator(s: dict) -> list[str]:
    e = s["estimator"]
    L = ["## Learned proximity estimator", "",
         f"MLP {e['hidden']} on standardized features, BCE (pos_weight {_f(e['pos_weight'], 2)}), model selected by "
         f"held-out {e['select_by'].upper()} (epoch {e['best_epoch']}; {e['epochs_run']} of at most {e['epochs']} "
         f"epochs run): **held-out AUC {_f(e['val_auc'], 4)}** (train {_f(e['train_auc'], 4)}; {e['n_pos_val']} robot"
         f" + {e['n_neg_val']} pool held out). Scoring {_f(e.get('score_candidates_per_s'), 0)} candidates/s.", ""]
    a = s.get("estimator_ablation")
    if a:
        L += [f"Ablation: the same estimator selected by held-out {a['select_by'].upper()} (epoch {a['best_epoch']}, "
              f"{a['epochs_run']} epochs run) has held-out AUC {_f(a['val_auc'], 4)}; its precision@K is the "
              "'ablation' row below.", ""]
    return L


def _md_precision(s: dict, titles: dict) -> list[str]:
    """precision@K per method, mean rank percentile per source, the perplexity baselines' model and notes."""
    ev = s["evaluation"]
    ks = list(ev["k"])
    L = ["## Precision@K (share of the top K that comes from robot-like sources)", "",
         "| method | " + " | ".join(f"K={ev['k'][k]}" + (" (R)" if k == "R" else f" ({k})") for k in ks) + " |",
         "|---|" + "---|" * len(ks)]
    for m, r in ev["methods"].items():
        L.append(f"| {titles.get(m, m)} | " + " | ".join(_f(r["precision_at_k"][k]) for k in ks) + " |")
    L += ["", f"Random expectation: {_f(ev['random_expectation'])}. K = R is the number of robot-like candidates "
          "(R-precision).", ""]
    L += ["Mean rank percentile per source (1 = ranked first):", "",
          "| source | " + " | ".join(titles.get(m, m) for m in ev["methods"]) + " |",
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
        L += ["", "The base model's log-perplexity varies little across candidates "
              f"(std {_f(nt['base_log_ppl_std'])}), "
              f"so delta perplexity ranks almost like robot-conditioned perplexity (Spearman "
              f"{_f(nt['spearman_ppl_vs_delta_ppl'])})."]
    return L


def _md_gap(s: dict) -> list[str]:
    g = s["gap"]
    L = ["", "## Distribution gap", "",
         f"Pairwise normalized MMD sqrt(MMD^2/2) (RBF, one sigma = {_f(g['sigma'])} by the median heuristic, biased "
         f"estimator, <= {max(g['sizes'])} samples per set): `gap/mmd_heatmap.png`; {g['embedding']} embedding: "
         "`gap/embedding.png`.", ""]
    if g.get("pool_to_robot_mean_distance"):
        L += ["| pool source | mean normalized MMD to the robot groups |", "|---|---|"]
        for k, v in sorted(g["pool_to_robot_mean_distance"].items(), key=lambda kv: kv[1]):
            L.append(f"| {k} | {_f(v)} |")
        L.append("")
    return L


def _md_selections(s: dict, titles: dict) -> list[str]:
    sel = s["selection"]
    L = ["## Selections", "", f"K = {sel['k']}.", ""]
    for m, info in sel["files"].items():
        L.append(f"- {titles.get(m, m)}: `{info['out']}` ({info['records_written']} records; precision "
                 f"{_f(info.get('precision'))}; by source {info['by_source']})")
    return L


# the recipe comparison's figures in the report (report.json: train.variants.<v>.mean / std)
_TRAIN_FIGURES = [("stage1.train_etc_loss_last", "Stage-1 train ETC loss (last logs)"),
                  ("stage1.val_action_loss", "held-out action loss after Stage 1"),
                  ("stage2.train_action_loss_last", "Stage-2 train action loss (last logs)"),
                  ("stage2.val_action_loss", "held-out action loss after Stage 2"),
                  ("stage2.val_action_accuracy", "held-out action token accuracy after Stage 2"),
                  ("stage3.val_action_loss", "held-out action loss after Stage 3"),
                  ("etc_val_nll", "final policy: answer NLL on held-out robot ETC")]


def _md_selected_vs_random(vs: dict) -> list[str]:
    """The figures where selected minus random exceeds the seed-to-seed std."""
    big = []
    for k, title in _TRAIN_FIGURES:
        a, b = vs["selected"]["mean"].get(k), vs["random"]["mean"].get(k)
        if a is None or b is None:
            continue
        sd = max(vs["selected"]["std"].get(k, 0.0), vs["random"]["std"].get(k, 0.0))
        if abs(a - b) > sd:
            big.append(f"{title} ({a - b:+.4f}, std {sd:.4f})")
    return ["", "Selected minus random larger than the seed-to-seed std: " + ("; ".join(big) if big else
            "none of the figures above") + "."]


def _md_train(s: dict) -> list[str]:
    tr = s.get("train")
    L = ["", "## Tiny recipe run: Stage 1 with the selected vs a random mid-training subset", ""]
    if not tr:
        L.append("Not run (train.enabled = false).")
        return L
    vs = tr["variants"]
    seeds = tr.get("seeds", [0])
    L += [f"Mean over seeds {seeds}" + (" (± std)" if len(seeds) > 1 else "") + ".", "",
          "| figure | " + " | ".join(vs) + " |", "|---|" + "---|" * len(vs)]
    for k, title in _TRAIN_FIGURES:
        cells = []
        for v in vs:
            m = vs[v]["mean"].get(k)
            sd = vs[v]["std"].get(k)
            cells.append("-" if m is None else (f"{m:.4f} ± {sd:.4f}" if len(seeds) > 1 else f"{m:.4f}"))
        if any(c != "-" for c in cells):
            L.append(f"| {title} | " + " | ".join(cells) + " |")
    L += ["", "Commands:", ""] + [f"- {v}: `{c}`" for v, c in tr["commands"].items()]
    if "selected" in vs and "random" in vs and len(seeds) > 1:
        L += _md_selected_vs_random(vs)
    L += ["", "This is a random-init tiny model trained for tens of steps; the runs show the selected subset "
          "feeding Stage 1 as a mixture source (report.json: samples_by_source counts what Stage 1 drew)."]
    return L


def _md_timing(s: dict, path: Path) -> list[str]:
    return ["", "## Timing", "", "This invocation (steps finished by an earlier one are reused): "
            + ", ".join(f"{k} {v}" for k, v in s["timing"].items()), "",
            "Plots: " + ", ".join(f"`{Path(p).relative_to(path.parent) if Path(p).is_relative_to(path.parent) else p}`"
                                  for p in s["plots"] if p.endswith(".png")), ""]


def write_markdown(s: dict, path: Path) -> Path:
    """OUT/report.md from the engine's summary (report.json's content), one function per section."""
    from etc_ros.core.io import atomic_write_text
    from etc_training.midtrain.baselines import METHOD_TITLES

    titles = dict(METHOD_TITLES, **(s.get("method_titles") or {}))
    L = (_md_inputs(s) + _md_estimator(s) + _md_precision(s, titles) + _md_gap(s) + _md_selections(s, titles)
         + _md_train(s) + _md_timing(s, path))
    atomic_write_text(path, "\n".join(L))
    return path


__all__ = ["robot_like_sources", "evaluate_methods", "plot_score_distributions", "plot_precision", "gap_analysis",
           "write_report", "write_markdown"]
