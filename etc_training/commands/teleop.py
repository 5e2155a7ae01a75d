"""`etc-vla teleop ...`: teleoperated data collection (run, keys: etc_ros/commands/teleop.py, also `etc-robot
teleop` on the robot PC) and its way into training (to-etc, here: it needs the ETC engine).

    etc-vla teleop run ... | keys ...                      see etc_ros/commands/teleop.py
    etc-vla teleop to-etc --episodes DIR [--annotations FILE] --out DIR [--mixture FILE] [k=v ETC overrides ...]

No torch import at module level: `to-etc` imports the ETC engine inside its handler.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from etc_ros.commands.teleop import add_actions


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="teleop_command", metavar="SUBCOMMAND")
    add_actions(sub)
    e = sub.add_parser("to-etc", help="recorded episodes -> target-scene ETC + Stage-3 mixture snippet")
    e.add_argument("--episodes", required=True, help="teleop episode dataset (etc_ros.data format)")
    e.add_argument("--annotations", default=None,
                   help="operator annotation JSON (etc-vla etc annotate); without it no scene-grounding ETC")
    e.add_argument("--out", required=True, help="output ETC directory")
    e.add_argument("--etc-config", default=None, help="ETC YAML (default: config/etc.yaml)")
    e.add_argument("--mixture", default=None, help="Stage-3 mixture snippet to write / update "
                                                   "(default: OUT/stage3_mixture.yaml)")
    e.add_argument("--target-weight", type=float, default=0.9, help="share of target-scene ETC in the ETC batch")
    e.add_argument("--ood-weight", type=float, default=0.1, help="share of OOD ETC (0 = none)")
    e.add_argument("--ood-etc", default=None, help="ETC directory holding the OOD split (default: data.etc)")
    e.add_argument("--skip-uncalibrated", action="store_true",
                   help="build what needs no calibration for uncalibrated episodes instead of failing")
    e.add_argument("--no-validate", action="store_true", help="skip the validation of the records")
    e.add_argument("overrides", nargs="*", help="ETC config overrides key=value (e.g. stride=2)")
    e.set_defaults(func=_to_etc)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# ----------------------------------------------------------------------------------------------- to-etc
def _to_etc(args) -> int:
    from etc_ros.core.errors import UserError
    from etc_ros.data import DatasetReader, validate_dataset
    from etc_training.commands.etc import load_cfg
    from etc_training.etc import build_etc, validate_etc
    from etc_training.etc.mixture import SUBTYPE_CATEGORY

    episodes, out = Path(args.episodes), Path(args.out)
    errors = validate_dataset(episodes, deep=False)
    if errors:
        raise UserError(f"{episodes} is not a valid episode dataset ({len(errors)} error(s)), first: {errors[0]} "
                        "(etc-vla data validate / repair)")
    reader = DatasetReader(episodes)
    splits = sorted({reader.episode_meta(i)["split"] for i in reader.episodes()})
    ov = list(args.overrides or [])
    if args.skip_uncalibrated:
        ov.append("on_missing_calibration=skip")
    cfg = load_cfg(args.etc_config, ov, None, args.annotations)
    if not cfg.annotations:
        kept = [s for s in cfg.subtypes if SUBTYPE_CATEGORY.get(s) != "scene_grounding"]
        dropped = sorted(set(cfg.subtypes) - set(kept))
        cfg.subtypes = kept
        if dropped:
            print(f"[to-etc] no --annotations: action-aligned + task-oriented ETC only (skipping {dropped})")
    summary = build_etc(episodes, out, cfg)
    print(f"[to-etc] {summary['n_samples']} records from {reader.num_episodes} "
          f"episode(s) -> {out}: {json.dumps(summary.get('by_subtype', {}), sort_keys=True)}")
    if not args.no_validate:
        rep = validate_etc(out)
        if rep.get("n_errors", 0):
            print(f"[to-etc] validation: {rep['n_errors']} error(s), first: {rep['errors'][:3]}", file=sys.stderr)
            return 1
        print(f"[to-etc] validation OK ({rep.get('n_samples', '?')} records)")
    snippet = Path(args.mixture) if args.mixture else out / "stage3_mixture.yaml"
    write_stage3_snippet(snippet, episodes=episodes, etc_dir=out, splits=splits, target_weight=args.target_weight,
                         ood_weight=args.ood_weight, ood_etc=args.ood_etc)
    print(f"[to-etc] Stage-3 mixture snippet: {snippet}")
    return 0


def write_stage3_snippet(path: str | Path, *, episodes: str | Path, etc_dir: str | Path, splits: list[str],
                         target_weight: float = 0.9, ood_weight: float = 0.1, ood_etc: str | None = None) -> dict:
    """Write or update a Stage-3 (Retentive Adaptation) snippet of the training config (etc_training.recipe
    TrainConfig keys): target-scene actions (action_splits) + target-scene ETC + OOD ETC. An existing file keeps
    its other keys and sources; the `target` (and `ood`) sources are replaced. Returns the written dict."""
    import yaml

    from etc_ros.core.errors import UserError
    from etc_ros.core.io import atomic_write_text

    if target_weight <= 0 or ood_weight < 0:
        raise UserError(f"--target-weight must be > 0 and --ood-weight >= 0, got {target_weight}, {ood_weight}")
    path = Path(path)
    data: dict = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: existing mixture snippet is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: existing mixture snippet must be a mapping")
    st3 = data.setdefault("stages", {}).setdefault("stage3", {})
    st3["enabled"] = True
    st3["action_splits"] = list(splits)
    sources = [s for s in (st3.get("etc_sources") or []) if isinstance(s, dict)
               and s.get("name") not in ("target", "ood")]
    sources.insert(0, {"name": "target", "kind": "etc", "path": str(Path(etc_dir).resolve()), "splits": list(splits),
                       "weight": float(target_weight)})
    if ood_weight > 0:
        sources.insert(1, {"name": "ood", "kind": "etc", "path": str(Path(ood_etc).resolve()) if ood_etc else None,
                           "splits": ["ood"], "weight": float(ood_weight)})
    st3["etc_sources"] = sources
    try:  # the snippet must be a valid (partial) training config
        from etc_ros.core.config import load_config
        from etc_training.recipe.config import TrainConfig

        load_config(TrainConfig, None, [f"stages.stage3={json.dumps(st3)}"])
    except ImportError:  # recipe not available: write unchecked
        pass
    header = (f"# Stage-3 (Retentive Adaptation) data for the target scene, written by `etc-vla teleop to-etc`\n"
              f"# on {time.strftime('%Y-%m-%d %H:%M:%S')}. Merge into a training config (docs/teleop.md).\n"
              f"# Target-scene episodes: {Path(episodes).resolve()} (splits {splits}): Stage 3 draws its action\n"
              f"# batches from data.episodes with action_splits, so data.episodes must hold these episodes.\n")
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return data
