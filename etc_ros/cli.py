"""`etc-robot`: the robot PC's command line (torch-free; the robot image has no etc_training).

    etc-robot ros bringup | plan | params | say | estop | reset-estop | dry-run   the ROS 2 graph (commands/ros.py)
    etc-robot teleop run | keys                                              teleoperated collection
    etc-robot calibrate board | intrinsics | extrinsics | check | selftest    the fixed camera's calibration
    etc-robot data validate | info | repair | import-bag                     episode datasets

The training machine's `etc-vla` (etc_training/cli.py) has the same subcommands next to the training ones, built
from the same modules and the same parser/dispatch code below. Each subcommand module exposes
`register(parser)`; heavy imports (rclpy, cv2, pyarrow) happen inside the handlers, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from etc_ros.core.errors import UserError

# name -> (module, one-line help). Order = order in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ros": ("etc_ros.commands.ros", "ROS 2: bringup of the node graph, say an instruction, e-stop, parameters"),
    "teleop": ("etc_ros.commands.teleop", "teleoperated data collection"),
    "calibrate": ("etc_ros.commands.calibrate", "camera intrinsics/extrinsics calibration"),
    "data": ("etc_ros.commands.data", "episode datasets: validate, import rosbag2/MCAP, info, repair"),
}


def build_parser(prog: str = "etc-robot", description: str | None = None,
                 subcommands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    """One parser with one subparser per entry of `subcommands` (default: the robot side's)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description or "ETC-VLA on the robot PC (WidowX 250 6DOF): ROS 2 graph, teleop, "
                                               "camera calibration, episode datasets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod_name, help_text) in (SUBCOMMANDS if subcommands is None else subcommands).items():
        mod = importlib.import_module(mod_name)
        mod.register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and dispatch; expected failures (UserError) become one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
