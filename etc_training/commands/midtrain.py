"""`etc-vla midtrain ...`: the mid-training data engine (EmbodiedMidtrain).

    etc-vla midtrain pool builtin --out DIR [--n-per-source 150] [--seed 0] [--sources all]  offline pool
    etc-vla midtrain pool import-llava FILE.json --out POOL.jsonl [--images ROOT] [--source NAME]
    etc-vla midtrain pool export-llava POOL --out FILE.json --images ROOT
    etc-vla midtrain pool info POOL
    etc-vla midtrain features --pool POOL --robot ETC_DIR --out FEATS [--model CKPT] [--batch-size 16]
                              [--max-batches N] [--only pool|robot]              resumable: run again after a kill
    etc-vla midtrain fit --features FEATS --out EST [--epochs 40] [--hidden 256]  estimator, AUC, scores, plot
    etc-vla midtrain select --pool POOL --features FEATS --out SEL.jsonl --method learned|random|distance|ppl|delta_ppl
                            [--estimator EST] [--adapted-features FEATS2/pool] [--k K | --fraction F]
    etc-vla midtrain gap --features FEATS --out DIR [--embedding tsne|pca]       MMD heatmap + embedding
    etc-vla midtrain report [--config config/midtrain.yaml] [--out DIR] [--train] [key=value ...]

The selection file is a Stage-1 "general" source of the recipe:
    etc-vla train ... 'stages.stage1.etc_sources=[{name: etc, kind: etc, weight: 0.75},
                                                   {name: mid, kind: general, path: SEL.jsonl, weight: 0.25}]'
See docs/midtrain.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="midtrain_command", metavar="SUBCOMMAND")

    pool = sub.add_parser("pool", help="candidate pools: built-in offline pool, LLaVA import / export, info")
    psub = pool.add_subparsers(dest="pool_command", metavar="ACTION")
    b = psub.add_parser("builtin", help="generate the built-in offline pool (PIL/numpy, labelled sources)")
    b.add_argument("--out", required=True, help="output directory (pool.jsonl, pool.json, images/)")
    b.add_argument("--n-per-source", type=int, default=150)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--sources", default="default",
                   help="comma-separated sources, 'default' (the six of config/midtrain.yaml) or 'all' (+ the five "
                        "general-scene sources)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_pool_builtin)
    i = psub.add_parser("import-llava", help="LLaVA-style JSON list -> pool JSONL")
    i.add_argument("json", help="LLaVA-style JSON file (list of {id, image, conversations})")
    i.add_argument("--out", required=True, help="output pool .jsonl (or a directory: DIR/pool.jsonl)")
    i.add_argument("--images", default=None, help="image root the 'image' paths are relative to (default: the "
                                                   "JSON file's directory)")
    i.add_argument("--source", default=None, help="source name (default: the JSON file's stem)")
    i.add_argument("--no-check-images", action="store_true", help="do not check that the image files exist")
    i.set_defaults(func=_pool_import)
    e = psub.add_parser("export-llava", help="pool -> LLaVA-style JSON list")
    e.add_argument("pool")
    e.add_argument("--out", required=True)
    e.add_argument("--images", required=True, help="image root the exported paths are made relative to")
    e.set_defaults(func=_pool_export)
    n = psub.add_parser("info", help="counts per source")
    n.add_argument("pool")
    n.set_defaults(func=_pool_info)
    pool.set_defaults(func=lambda args: (pool.print_help(), 2)[1])

    f = sub.add_parser("features", help="frozen-VLM features + answer NLL of the pool and robot samples (cached)")
    f.add_argument("--pool", default=None, help="pool (.jsonl / dir / .parquet)")
    f.add_argument("--robot", default=None, help="robot samples: ETC directory or JSONL")
    f.add_argument("--splits", nargs="*", default=["train"], help="robot ETC splits (default: train)")
    f.add_argument("--out", required=True, help="output directory: OUT/pool and OUT/robot caches")
    f.add_argument("--only", choices=["pool", "robot"], default=None)
    f.add_argument("--model", default=None, help="etc-vla policy or PaliGemma checkpoint (default: random-init "
                                                 "--preset with --seed)")
    f.add_argument("--preset", default="tiny")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--max-batches", type=int, default=None, help="stop after N batches (resume later)")
    f.add_argument("--overwrite", action="store_true", help="replace caches made from other items / models")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_features)

    t = sub.add_parser("fit", help="train the proximity estimator (robot positive, pool negative), score the pool")
    t.add_argument("--features", required=True, help="directory with pool/ and robot/ caches")
    t.add_argument("--out", required=True, help="estimator directory (+ scores.npy, fit.json, scores.png)")
    t.add_argument("--hidden", type=int, nargs="*", default=[256])
    t.add_argument("--dropout", type=float, default=0.1)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--select-by", choices=["auc", "loss"], default="auc",
                   help="model selection on the held-out split (auc: earliest best-AUC epoch, with --patience)")
    t.add_argument("--patience", type=int, default=5)
    t.add_argument("--max-negatives", type=int, default=200000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_fit)

    s = sub.add_parser("select", help="rank the pool with a method and write the top K as a Stage-1 source")
    s.add_argument("--pool", required=True)
    s.add_argument("--features", required=True, help="directory with pool/ (and robot/) caches")
    s.add_argument("--out", required=True, help="selection .jsonl (a .json summary is written next to it)")
    s.add_argument("--method", default="learned", choices=["learned", "random", "distance", "ppl", "delta_ppl"])
    s.add_argument("--estimator", default=None, help="estimator directory (method learned)")
    s.add_argument("--adapted-features", default=None,
                   help="pool cache made with the robot-adapted model (methods ppl, delta_ppl)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--k", type=int, default=None)
    g.add_argument("--fraction", type=float, default=None, help="share of the pool (default 0.25)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_select)

    a = sub.add_parser("gap", help="pairwise normalized MMD heatmap + t-SNE/PCA of pool sources vs robot groups")
    a.add_argument("--features", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--embedding", choices=["tsne", "pca"], default="tsne")
    a.add_argument("--max-per-set", type=int, default=300)
    a.add_argument("--embed-per-set", type=int, default=150)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_gap)

    r = sub.add_parser("report", help="the whole engine on the built-in pool: methods compared, plots, report")
    r.add_argument("--config", default=None, help="YAML (default: config/midtrain.yaml)")
    r.add_argument("--out", default=None)
    r.add_argument("--train", action="store_true", help="also run the tiny recipe with selected vs random data")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("overrides", nargs="*", metavar="key=value")
    r.set_defaults(func=_report)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _threads(n: int) -> None:
    from etc_ros.core.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads its OpenMP runtime
    from etc_training.recipe.distributed import set_threads

    set_threads(n)


# ---------------------------------------------------------------------------------------------- pool
def _pool_builtin(args) -> int:
    from etc_training.midtrain.builtin_pool import make_builtin_pool, source_list
    from etc_training.midtrain.pool import read_pool

    p = make_builtin_pool(args.out, args.n_per_source, args.seed, source_list(args.sources.split(",")),
                          progress=not args.no_progress)
    pool = read_pool(p)
    print(json.dumps({"pool": str(p), "n": len(pool), "sources": pool.sources(),
                      "robot_like_sources": pool.manifest.get("robot_like_sources")}))
    return 0


def _pool_import(args) -> int:
    from etc_training.midtrain.pool import import_llava

    print(json.dumps(import_llava(args.json, args.out, args.images, args.source,
                                  check_images=not args.no_check_images)))
    return 0


def _pool_export(args) -> int:
    from etc_training.midtrain.pool import export_llava

    print(json.dumps(export_llava(args.pool, args.out, args.images)))
    return 0


def _pool_info(args) -> int:
    from collections import Counter

    from etc_training.midtrain.pool import read_pool

    pool = read_pool(args.pool)
    c = Counter(r["source"] for r in pool.records)
    print(json.dumps({"pool": str(pool.path), "n": len(pool), "by_source": dict(sorted(c.items())),
                      "manifest": pool.manifest}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- features
def _features(args) -> int:
    from etc_ros.core.errors import UserError
    from etc_training.midtrain.features import extract_features, feature_info, load_model
    from etc_training.midtrain.pool import pool_items, read_pool, robot_items

    todo = {}
    if args.only in (None, "pool"):
        if not args.pool:
            raise UserError("features: --pool is required (or --only robot)")
        todo["pool"] = pool_items(read_pool(args.pool))
    if args.only in (None, "robot"):
        if not args.robot:
            raise UserError("features: --robot is required (or --only pool)")
        todo["robot"] = robot_items(args.robot, args.splits)
    _threads(args.threads)
    model = load_model(args.model, args.preset, args.seed, args.device)
    info = {"path": args.model, "preset": args.preset, "seed": args.seed}
    out = {}
    for name, items in todo.items():
        c = extract_features(model, items, Path(args.out) / name, args.batch_size, args.max_batches,
                             progress=not args.no_progress, overwrite=args.overwrite, model_info=info)
        out[name] = feature_info(c)
    print(json.dumps(out, indent=2))
    return 0 if all(v["complete"] for v in out.values()) else 3


# ---------------------------------------------------------------------------------------------- fit / select
def _fit(args) -> int:
    import numpy as np

    from etc_ros.core.io import atomic_write_json
    from etc_training.midtrain.estimator import ProximityEstimator, subsample_rows
    from etc_training.midtrain.features import FeatureCache
    from etc_training.midtrain.report import plot_score_distributions

    _threads(1)
    fd = Path(args.features)
    pc = FeatureCache(fd / "pool").require_complete()
    rc = FeatureCache(fd / "robot").require_complete()
    est = ProximityEstimator(pc.dim, args.hidden, args.dropout, args.seed)
    rep = est.fit(rc.load(), pc.load(subsample_rows(pc.n, args.max_negatives, args.seed)), epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                  val_fraction=args.val_fraction, select_by=args.select_by, patience=args.patience,
                  progress=not args.no_progress)
    scores = est.score_cache(pc, progress=not args.no_progress)
    out = Path(args.out)
    est.save(out)
    np.save(out / "scores.npy", scores.astype(np.float64))
    groups = pc.groups
    by_src = {g: {"mean": float(scores[groups == g].mean()), "n": int((groups == g).sum())}
              for g in sorted(set(groups.tolist()))}
    rep_out = {k: v for k, v in rep.items() if k != "history"}
    rep_out["by_source"] = by_src
    atomic_write_json(out / "fit.json", rep_out)
    plot_score_distributions({"learned": scores}, groups, out / "scores.png", [])
    print(json.dumps({"val_auc": rep["val_auc"], "train_auc": rep["train_auc"], "best_epoch": rep["best_epoch"],
                      "by_source_mean_logit": {k: round(v["mean"], 3) for k, v in by_src.items()},
                      "out": str(out)}, indent=2))
    return 0


def _select(args) -> int:
    import numpy as np

    from etc_ros.core.errors import UserError
    from etc_training.midtrain import baselines
    from etc_training.midtrain.features import FeatureCache
    from etc_training.midtrain.pool import read_pool
    from etc_training.midtrain.select import resolve_k, top_k, write_selection

    pool = read_pool(args.pool)
    fd = Path(args.features)
    pc = FeatureCache(fd / "pool").require_complete()
    if pc.ids != [r["id"] for r in pool.records]:
        raise UserError(f"{fd / 'pool'} was not extracted from {args.pool} (ids / order differ)")
    m = args.method
    if m == "learned":
        if not args.estimator:
            raise UserError("select --method learned needs --estimator DIR (from `etc-vla midtrain fit`)")
        from etc_training.midtrain.estimator import ProximityEstimator

        _threads(1)
        scores = ProximityEstimator.load(args.estimator).score_cache(pc).astype(np.float64)
    elif m == "random":
        scores = baselines.random_scores(pc.n, args.seed)
    elif m == "distance":
        scores = baselines.avg_distance_scores(pc, FeatureCache(fd / "robot").require_complete().load(), seed=args.seed)
    else:
        if not args.adapted_features:
            raise UserError(f"select --method {m} needs --adapted-features (a pool cache made with the robot-adapted "
                            "model: `etc-vla midtrain features --only pool --model ADAPTED ...`)")
        ac = FeatureCache(args.adapted_features).require_complete()
        if ac.ids != pc.ids:
            raise UserError(f"{args.adapted_features} holds other candidates than {fd / 'pool'}")
        scores = (baselines.ppl_scores(ac.mean_nll()) if m == "ppl"
                  else baselines.delta_ppl_scores(pc.mean_nll(), ac.mean_nll()))
    k = resolve_k(pc.n, k=args.k) if args.k is not None else resolve_k(pc.n, fraction=args.fraction or 0.25)
    summ = write_selection(pool, top_k(scores, k), scores, args.out, m)
    print(json.dumps(summ, indent=2))
    return 0


def _gap(args) -> int:
    from etc_training.midtrain.features import FeatureCache
    from etc_training.midtrain.report import gap_analysis

    fd = Path(args.features)
    pc = FeatureCache(fd / "pool").require_complete()
    rc = FeatureCache(fd / "robot").require_complete() if (fd / "robot" / "index.json").is_file() else None
    res = gap_analysis(pc, rc, args.out, args.max_per_set, args.embedding, args.embed_per_set, args.seed)
    print(json.dumps({"sigma": res["sigma"], "names": res["names"], "files": res["files"],
                      "pool_to_robot_mean_distance": res.get("pool_to_robot_mean_distance")}, indent=2))
    return 0


def _report(args) -> int:
    from etc_ros.core.paths import config_path
    from etc_training.midtrain.config import load_midtrain_config
    from etc_training.midtrain.pipeline import run_engine

    path = args.config
    if path is None:
        try:
            d = config_path("midtrain.yaml")
            path = str(d) if d.is_file() else None
        except FileNotFoundError:
            path = None
    ov = list(args.overrides)
    if args.out:
        ov.append(f"out={args.out}")
    if args.train:
        ov.append("train.enabled=true")
    if args.no_progress:
        ov.append("progress=false")
    cfg = load_midtrain_config(path, ov)
    s = run_engine(cfg)
    ev = s["evaluation"]
    print(json.dumps({"report": str(Path(cfg.out) / "report.md"), "val_auc": s["estimator"]["val_auc"],
                      "precision_at_k": {m: r["precision_at_k"] for m, r in ev["methods"].items()},
                      "k": ev["k"]}, indent=2))
    return 0
