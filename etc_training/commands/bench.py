"""`etc-vla bench NAME|all --out DIR [--quick]`: run benchmarks and write JSON (one file per benchmark + summary).

A benchmark is a module etc_training/benchmarks/<name>_bench.py exposing `run(out_dir: Path, quick: bool) -> dict`.
Speed targets are reported as ratios against a baseline measured in the same run, never asserted in tests.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import time
from pathlib import Path


def available() -> list[str]:
    from etc_training import benchmarks

    return sorted(m.name[: -len("_bench")] for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name.endswith("_bench"))


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default="all", help="benchmark name or 'all' (see --list)")
    p.add_argument("--out", default="runs/bench", help="output directory for JSON results")
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--bundle", default=None, help="policy bundle to benchmark (benchmarks that take one: policy)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from etc_ros.core.errors import UserError
    from etc_ros.core.io import atomic_write_json

    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    todo = names if args.name == "all" else [args.name]
    for n in todo:
        if n not in names:
            raise UserError(f"unknown benchmark {n!r}; available: {names}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                           "platform": platform.platform()}, "results": {}}
    for n in todo:
        print(f"[bench] {n} ...", flush=True)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"etc_training.benchmarks.{n}_bench")
        d = out / n
        d.mkdir(parents=True, exist_ok=True)
        kw = {}
        if getattr(args, "bundle", None) and "bundle" in __import__("inspect").signature(mod.run).parameters:
            kw["bundle"] = args.bundle
        res = mod.run(d, quick=args.quick, **kw)
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(out / f"{n}.json", res)
        summary["results"][n] = res
        print(json.dumps(res, indent=2, default=str)[:4000])
    atomic_write_json(out / "summary.json", summary)
    print(f"[bench] wrote {out}/summary.json")
    return 0
