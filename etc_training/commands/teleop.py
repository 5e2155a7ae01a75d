"""`etc-vla teleop ...`: teleoperated data collection and its way into training (docs/teleop.md).

    etc-vla teleop run [--config config/teleop.yaml] [--input keyboard|joy|spacemouse|script|none] [--script FILE]
                       [--bringup sim|fake|interbotix|none] [--root DIR] [--instruction TEXT] [--duration S] [k=v ...]
    etc-vla teleop keys [--config FILE]                      print the keyboard shortcuts
    etc-vla teleop to-etc --episodes DIR [--annotations FILE] --out DIR [--mixture FILE] [k=v ETC overrides ...]

No rclpy / torch import at module level: `run` imports the ROS nodes inside its handler, `to-etc` the ETC engine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="teleop_command", metavar="SUBCOMMAND")
    r = sub.add_parser("run", help="teleoperate the arm (through the safety node) and record episodes")
    r.add_argument("--config", default=None, help="teleop YAML (default: config/teleop.yaml of the package)")
    r.add_argument("--input", default=None, choices=["keyboard", "joy", "spacemouse", "script", "none"],
                   help="input device (default: keyboard on a terminal)")
    r.add_argument("--script", default=None, help="scripted input file (JSON / JSON lines / YAML list of events)")
    r.add_argument("--bringup", default=None, choices=["sim", "fake", "interbotix", "none"],
                   help="robot graph to start here (none: attach to a running one); default: robot.bringup")
    r.add_argument("--root", default=None, help="episode dataset directory (default: recorder.root)")
    r.add_argument("--instruction", default=None, help="instruction of the first episode")
    r.add_argument("--duration", type=float, default=None,
                   help="seconds to run (default: until quit; with --input script: the script + 2 s)")
    r.add_argument("--no-recorder", action="store_true", help="teleoperate only (no recorder node)")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. teleop.linear_speed=0.03")
    r.set_defaults(func=_run)

    k = sub.add_parser("keys", help="print the keyboard shortcuts")
    k.add_argument("--config", default=None)
    k.set_defaults(func=_keys)

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


# ----------------------------------------------------------------------------------------------- run
def _load(args):
    from etc_ros.teleop.config import load_teleop_file

    ov = list(args.overrides or [])
    if getattr(args, "bringup", None):
        ov.append(f"robot.bringup={args.bringup}")
    if getattr(args, "root", None):
        ov.append(f"recorder.root={args.root}")
    if getattr(args, "instruction", None) is not None:
        ov.append("recorder.instruction=" + json.dumps(args.instruction))
    return load_teleop_file(args.config, ov)


def _keys(args) -> int:
    from etc_ros.teleop.mapping import help_text

    tele, _, _ = _load(argparse.Namespace(config=args.config, overrides=[]))
    print(help_text(tele))
    return 0


def _run(args) -> int:
    from etc_ros.teleop.mapping import TeleopError

    tele, rec, robot = _load(args)
    inp = args.input or ("script" if args.script else "keyboard")
    if inp == "keyboard" and not sys.stdin.isatty():
        raise TeleopError("keyboard input needs a terminal (stdin is not a TTY): use --input script --script FILE, "
                          "--input joy or --input spacemouse")
    if inp == "script" and not args.script:
        raise TeleopError("--input script needs --script FILE")
    script = None
    if inp == "script":
        from etc_ros.teleop.script import load_script

        script = load_script(args.script)
    from etc_ros.nodes.teleop_node import TeleopSession

    def on_event(cmd: str, ok: bool, msg: str) -> None:
        print(f"[teleop] {cmd}: {'' if ok else 'FAILED: '}{msg}", flush=True)

    print(f"[teleop] robot: {robot.bringup}, input: {inp}, episodes: {rec.root}", flush=True)
    session = TeleopSession(robot, tele, None if args.no_recorder else rec, input=inp, script=script,
                            recorder=not args.no_recorder, on_event=on_event)
    rc = 0
    try:
        print(f"[teleop] ROS_DOMAIN_ID={session.domain_id}; waiting for the arm...", flush=True)
        if not session.wait_ready(60.0):
            raise TeleopError("the arm did not become ready within 60 s (driver / safety node / joint states)")
        print("[teleop] ready", flush=True)
        if inp == "keyboard":
            from etc_ros.teleop.mapping import help_text

            print(help_text(tele), flush=True)
            _keyboard_loop(session, args.duration)
        else:
            t0, done_at = time.monotonic(), None
            while not session.teleop.quit_requested:
                time.sleep(0.05)
                if args.duration is not None and time.monotonic() - t0 >= args.duration:
                    break
                if script is not None and args.duration is None and session.teleop.script_done:
                    done_at = done_at or time.monotonic()
                    if time.monotonic() - done_at >= 2.0:  # let the last service calls finish
                        break
    except KeyboardInterrupt:
        print("\n[teleop] interrupted", flush=True)
        rc = 130
    finally:
        status = session.recorder.status() if session.recorder is not None else None
        session.stop(park=robot.bringup == "interbotix")
    if status is not None:
        print(f"[teleop] {status['episodes_saved']} episode(s) saved, {status['episodes_discarded']} discarded, "
              f"{status['frames_written']} frames written (writer {status['write_fps']} frames/s) in {rec.root}")
    return rc


def _keyboard_loop(session, duration: float | None) -> None:
    """cbreak mode (one key at a time, no echo; Ctrl-C still interrupts): keys -> the teleop node."""
    import os
    import select
    import termios
    import tty

    from etc_ros.teleop.devices import parse_keys

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    t0 = time.monotonic()
    try:
        tty.setcbreak(fd)
        print("[teleop] keys active (h: help, q: quit)", flush=True)
        while not session.teleop.quit_requested and (duration is None or time.monotonic() - t0 < duration):
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            data = os.read(fd, 64).decode("utf-8", errors="replace")
            for key in parse_keys(data):
                if key == "ctrl-c":
                    raise KeyboardInterrupt
                cmds = session.teleop.feed_key(key)
                if "relabel" in cmds:
                    termios.tcsetattr(fd, termios.TCSADRAIN, old)
                    try:
                        text = input("[teleop] instruction: ")
                    finally:
                        tty.setcbreak(fd)
                    session.teleop.relabel(text.strip())
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


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
