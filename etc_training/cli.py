"""`etc-vla`: the project's one command line.

Each subcommand lives in its own module (etc_training/commands/<name>.py) exposing
`register(subparsers)`; heavy imports (torch, mujoco, rclpy) happen inside the handlers, so `etc-vla --help`
stays fast and the robot-side commands never pull in torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order = order in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("etc_training.commands.demo", "run the end-to-end demo on the embedded default"),
    "data": ("etc_training.commands.data", "episode datasets: validate, import rosbag2/MCAP, info"),
    "sim": ("etc_training.commands.sim", "MuJoCo WidowX world: collect demonstrations, render"),
    "etc": ("etc_training.commands.etc", "ETC data engine: build, validate, annotate"),
    "train": ("etc_training.commands.train", "three-stage ETC training recipe"),
    "eval": ("etc_training.commands.eval", "closed-loop and offline evaluation"),
    "ablate": ("etc_training.commands.ablate", "the paper's ablation at this scale"),
    "export": ("etc_training.commands.export", "export a checkpoint to a policy bundle (ONNX)"),
    "distill": ("etc_training.commands.distill", "SDM one-step distillation of the diffusion head"),
    "midtrain": ("etc_training.commands.midtrain", "mid-training data selection (EmbodiedMidtrain)"),
    "teleop": ("etc_training.commands.teleop", "teleoperated data collection"),
    "calibrate": ("etc_training.commands.calibrate", "camera intrinsics/extrinsics calibration"),
    "ros": ("etc_training.commands.ros", "ROS 2: bringup of the node graph, say an instruction"),
    "bench": ("etc_training.commands.bench", "benchmarks writing JSON"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etc-vla",
        description="ETC vision-language-action policies for the WidowX 250 6DOF: data, training, export, ROS 2.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod_name, help_text) in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue  # not implemented yet: not listed
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.register(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: on a busy 2-core machine spinning OpenMP workers make torch 10-50x slower (measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # clear one-line errors for expected failures
        from etc_ros.core.errors import UserError

        if isinstance(e, UserError):
            print(f"etc-vla {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
