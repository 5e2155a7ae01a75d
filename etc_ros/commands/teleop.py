"""`etc-robot teleop ...` (also `etc-vla teleop ...`): teleoperated data collection on the robot PC (docs/teleop.md).

    etc-robot teleop run [--config config/teleop.yaml] [--input keyboard|joy|spacemouse|script|none] [--script FILE]
                         [--bringup sim|fake|interbotix|none] [--root DIR] [--instruction TEXT] [--duration S] [k=v ...]
    etc-robot teleop keys [--config FILE]                      print the keyboard shortcuts

Turning the recordings into target-scene ETC (`etc-vla teleop to-etc`) needs the training side
(etc_training/commands/teleop.py adds it to this parser). No rclpy import at module level: `run` imports the ROS
nodes inside its handler.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_actions(sub) -> None:
    """The robot-side actions (run, keys) on a `teleop` subparsers object."""
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



def register(p: argparse.ArgumentParser) -> None:
    add_actions(p.add_subparsers(dest="teleop_command", metavar="SUBCOMMAND"))
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
