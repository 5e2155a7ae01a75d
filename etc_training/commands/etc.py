"""`etc-vla etc ...`: the ETC data engine.

    etc-vla etc build --episodes DIR --out DIR [--config config/etc.yaml] [--workers N] [--annotations FILE] [k=v ...]
    etc-vla etc validate DIR [--episodes DIR] [--no-dataset]        exit 1 when any record fails a check
    etc-vla etc overlays DIR --out DIR [-n N] [--seed S] [--ids ID ...]
    etc-vla etc stats DIR
    etc-vla etc annotate --episodes DIR --out FILE [--port N]       local web tool (127.0.0.1 only)
"""
from __future__ import annotations

import argparse
import json


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="etc_command", metavar="SUBCOMMAND")

    b = sub.add_parser("build", help="build ETC records from an episode dataset (+ stats, overlays)")
    b.add_argument("--episodes", required=True, help="episode dataset directory (etc_ros.data format)")
    b.add_argument("--out", required=True, help="output ETC directory")
    b.add_argument("--config", default=None, help="YAML config (default: config/etc.yaml of the package)")
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: config, 1)")
    b.add_argument("--annotations", default=None, help="operator annotation JSON (target-scene scene grounding)")
    b.add_argument("--no-validate", action="store_true", help="skip the validation pass after building")
    b.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. stride=2 horizon=10)")
    b.set_defaults(func=_build)

    v = sub.add_parser("validate", help="check every ETC record against ground truth (exit 1 on errors)")
    v.add_argument("etc_dir")
    v.add_argument("--episodes", default=None, help="dataset directory (default: the one recorded in index.json)")
    v.add_argument("--no-dataset", action="store_true", help="record-only checks (do not open the dataset)")
    v.add_argument("--json", action="store_true", help="print the whole report as JSON")
    v.set_defaults(func=_validate)

    o = sub.add_parser("overlays", help="draw records (points, boxes, trajectories) on their frames as PNGs")
    o.add_argument("etc_dir")
    o.add_argument("--out", required=True)
    o.add_argument("-n", type=int, default=12, help="number of records (spread over subtypes)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--ids", nargs="*", default=None, help="draw exactly these record ids")
    o.set_defaults(func=_overlays)

    s = sub.add_parser("stats", help="statistics per category / subtype (stats.json + stats.md)")
    s.add_argument("etc_dir")
    s.set_defaults(func=_stats)

    a = sub.add_parser("annotate", help="local web tool to annotate objects (points / boxes) on frames")
    a.add_argument("--episodes", required=True, help="episode dataset directory")
    a.add_argument("--out", required=True, help="annotation JSON file (created or extended)")
    a.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0 = any free port)")
    a.set_defaults(func=_annotate)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def load_cfg(path: str | None, overrides, workers: int | None = None, annotations: str | None = None):
    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path
    from etc_training.etc.config import EtcConfig

    if path is None:
        try:
            default = config_path("etc.yaml")
            path = str(default) if default.is_file() else None
        except FileNotFoundError:
            path = None
    ov = list(overrides or [])
    if workers is not None:
        ov.append(f"workers={workers}")
    if annotations is not None:
        ov.append(f"annotations={annotations}")
    return load_config(EtcConfig, path, ov)


def _build(args) -> int:
    from etc_training.etc.builder import build_etc
    from etc_training.etc.validate import format_report, validate_etc

    cfg = load_cfg(args.config, args.overrides, args.workers, args.annotations)
    summary = build_etc(args.episodes, args.out, cfg)
    show = {k: summary[k] for k in ("n_samples", "n_episodes", "by_split", "by_category", "by_subtype",
                                    "segmentation", "samples_per_s", "seconds")}
    print(json.dumps(show, indent=2))
    print(f"wrote {args.out}/index.json, samples/, stats.json, stats.md"
          + (f", {len(summary.get('overlays', []))} overlays" if summary.get("overlays") else ""))
    if args.no_validate:
        return 0
    rep = validate_etc(args.out)
    print(format_report(rep))
    return 1 if rep["n_errors"] else 0


def _validate(args) -> int:
    from etc_training.etc.validate import format_report, validate_etc

    rep = validate_etc(args.etc_dir, dataset=args.episodes, check_dataset=not args.no_dataset)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 1 if rep["n_errors"] else 0


def _overlays(args) -> int:
    from etc_training.etc.overlay import write_overlays

    paths = write_overlays(args.etc_dir, args.out, args.n, seed=args.seed, ids=args.ids)
    print(f"wrote {len(paths)} overlays to {args.out}")
    return 0


def _stats(args) -> int:
    from etc_training.etc.stats import write_stats

    paths = write_stats(args.etc_dir)
    print(paths[1].read_text())
    return 0


def _annotate(args) -> int:
    from etc_training.etc.annotate import AnnotationServer

    srv = AnnotationServer(args.episodes, args.out, port=args.port)
    print(f"ETC annotation tool: open {srv.url} (Ctrl-C to stop); saving to {args.out}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()
    return 0
