"""`etc-vla sim`: the MuJoCo WidowX tabletop world.

    etc-vla sim collect --split SPLIT --episodes N --out DIR [--workers K] [--seed S] [--config F] [key=value ...]
    etc-vla sim expert  --split SPLIT --episodes N [--family F] [--seed S] [--json OUT]   expert success, no data
    etc-vla sim render  --split SPLIT --seed S --out IMG.png                              first frame of an episode
    etc-vla sim video   --split SPLIT --seed S --out EP.gif|EP.mp4 [--family F]           one expert episode

Settings come from config/sim.yaml (dataclass SimConfig in etc_training/sim/config.py), then key=value overrides
(e.g. render.cameras=[primary,wrist] physics.weld_on_grasp=true), then the flags above.
"""
from __future__ import annotations

import argparse
import json
import sys


def _common(p: argparse.ArgumentParser, episodes: bool = True) -> None:
    p.add_argument("--split", default=None, help="train | ood_color | ood_combo | ood_distractor | ood_phrase")
    p.add_argument("--seed", type=int, default=None, help="base seed (default from the config: 0)")
    p.add_argument("--config", default=None, help="YAML config (default: config/sim.yaml)")
    p.add_argument("overrides", nargs="*", default=[], help="key=value config overrides")
    if episodes:
        p.add_argument("--episodes", type=int, default=None, help="number of episodes")


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sim_command", metavar="ACTION")

    c = sub.add_parser("collect", help="scripted-expert demonstrations into a dataset (parallel workers)")
    _common(c)
    c.add_argument("--out", required=True, help="dataset directory (created; an existing one of ours is appended)")
    c.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    c.add_argument("--keep-failures", action="store_true", help="also write failed expert episodes")
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--json", default=None, help="write the summary JSON here too")
    c.set_defaults(func=_collect)

    e = sub.add_parser("expert", help="scripted expert success rate per task family (no rendering, no data)")
    _common(e)
    e.add_argument("--family", default=None, help="only this family (pick_place | pick_up | push | stack)")
    e.add_argument("--json", default=None, help="write the result JSON here")
    e.set_defaults(func=_expert)

    r = sub.add_parser("render", help="render the first frame of an episode to a PNG")
    _common(r, episodes=False)
    r.add_argument("--out", required=True)
    r.add_argument("--camera", default="primary")
    r.set_defaults(func=_render)

    v = sub.add_parser("video", help="run the expert for one episode and save a GIF / MP4")
    _common(v, episodes=False)
    v.add_argument("--out", required=True, help=".gif or .mp4")
    v.add_argument("--family", default=None)
    v.add_argument("--scale", type=int, default=2)
    v.set_defaults(func=_video)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _load(args):
    from pathlib import Path

    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path
    from etc_training.sim.config import SimConfig

    path = args.config
    if path is None:
        default = config_path("sim.yaml")
        path = default if Path(default).is_file() else None
    cfg = load_config(SimConfig, path, list(args.overrides or []))
    if args.split is not None:
        cfg.split = args.split
    if args.seed is not None:
        cfg.seed = args.seed
    if getattr(args, "episodes", None) is not None:
        cfg.episodes = args.episodes
    if getattr(args, "workers", None) is not None:
        cfg.workers = args.workers
    if getattr(args, "keep_failures", False):
        cfg.keep_failures = True
    from etc_training.sim.splits import check_split

    check_split(cfg.split)
    return cfg


def _collect(args) -> int:
    from etc_ros.core.io import atomic_write_json
    from etc_training.sim.collect import collect

    cfg = _load(args)
    summary = collect(cfg, args.out, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    if args.json:
        atomic_write_json(args.json, summary)
    return 0


def _expert(args) -> int:
    import time

    from etc_ros.core.io import atomic_write_json
    from etc_training.sim.collect import episode_seed
    from etc_training.sim.env import SimEnv
    from etc_training.sim.expert import ScriptedExpert

    cfg = _load(args)
    if args.family is not None:
        cfg.families = [args.family]
    env = SimEnv(cfg, render=False)
    per: dict[str, list[bool]] = {}
    steps: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    try:
        from tqdm import tqdm
        it = tqdm(range(cfg.episodes), desc=f"expert {cfg.split}", unit="ep", disable=None)
    except ImportError:  # pragma: no cover
        it = range(cfg.episodes)
    failures = []
    for i in it:
        seed = episode_seed(cfg.seed, cfg.split, i)
        env.reset(seed=seed, split=cfg.split)
        ex = ScriptedExpert(env, seed)
        while env.steps < cfg.max_steps:
            a = ex.act()
            if ex.done:
                break
            env.step(a)
        ok = env.is_success()
        fam = env.task.family
        per.setdefault(fam, []).append(ok)
        steps.setdefault(fam, []).append(env.steps)
        if not ok:
            failures.append({"seed": seed, "family": fam, "instruction": env.instruction, "steps": env.steps})
    res = {
        "split": cfg.split, "episodes": cfg.episodes, "seed": cfg.seed, "wall_s": round(time.perf_counter() - t0, 2),
        "success_rate": round(sum(sum(v) for v in per.values()) / max(cfg.episodes, 1), 4),
        "per_family": {f: {"success": int(sum(v)), "episodes": len(v), "rate": round(sum(v) / len(v), 4),
                           "mean_steps": round(float(sum(steps[f]) / len(steps[f])), 1)}
                       for f, v in sorted(per.items())},
        "failures": failures,
    }
    print(json.dumps(res, indent=2))
    if args.json:
        atomic_write_json(args.json, res)
    return 0


def _render(args) -> int:
    from pathlib import Path

    from PIL import Image

    from etc_training.sim.env import SimEnv

    cfg = _load(args)
    if args.camera not in cfg.render.cameras:
        cfg.render.cameras = list(cfg.render.cameras) + [args.camera]
    with SimEnv(cfg) as env:
        env.reset(seed=cfg.seed, split=cfg.split)
        img = env.render(args.camera)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(args.out)
        print(f"{args.out}: {env.instruction}")
    return 0


def _video(args) -> int:
    from etc_training.sim.collect import run_episode
    from etc_training.sim.env import SimEnv
    from etc_training.sim.video import save_episode_gif

    cfg = _load(args)
    with SimEnv(cfg) as env:
        ep = run_episode(env, cfg.seed, cfg.split, family=args.family, annotate=False)
    save_episode_gif(ep, args.out, scale=args.scale)
    print(f"{args.out}: {ep.instruction!r}, {len(ep)} frames, success={ep.success}", file=sys.stdout)
    return 0
