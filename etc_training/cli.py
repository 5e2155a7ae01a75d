"""`etc-vla`: the project's one command line (the robot PC's image has its torch-free part, `etc-robot`).

Each subcommand lives in its own module exposing `register(parser)`: the training ones in
etc_training/commands/<name>.py, the robot-side operator commands (ros, teleop run/keys, calibrate, data) in
etc_ros/commands/<name>.py. Parsing and dispatch are etc_ros/cli.py's, shared by both. Heavy imports (torch,
mujoco, rclpy) happen inside the handlers, so `etc-vla --help` stays fast and the robot-side commands never pull
in torch.
"""
from __future__ import annotations

import argparse
import sys

from etc_ros import cli as robot_cli
from etc_ros.core.threads import prefer_passive_openmp

# name -> (module, one-line help). Order = order in --help. The robot-side ones (ros, calibrate, data and teleop's
# run/keys) live in etc_ros/commands/ and are also the robot PC's `etc-robot` (etc_ros/cli.py).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("etc_training.commands.demo", "run the end-to-end demo on the embedded default"),
    "data": ("etc_ros.commands.data", "episode datasets: validate, import rosbag2/MCAP, info, repair"),
    "sim": ("etc_training.commands.sim", "MuJoCo WidowX world: collect demonstrations, render"),
    "etc": ("etc_training.commands.etc", "ETC data engine: build, validate, annotate"),
    "train": ("etc_training.commands.train", "three-stage ETC training recipe"),
    "eval": ("etc_training.commands.eval", "closed-loop and offline evaluation"),
    "analyze": ("etc_training.commands.analyze", "inside a trained policy: spatial attention vs object boxes"),
    "ablate": ("etc_training.commands.ablate", "the paper's ablation at this scale"),
    "export": ("etc_training.commands.export", "export a checkpoint to a policy bundle (ONNX)"),
    "distill": ("etc_training.commands.distill", "SDM one-step distillation of the diffusion head"),
    "midtrain": ("etc_training.commands.midtrain", "mid-training data selection (EmbodiedMidtrain)"),
    "teleop": ("etc_training.commands.teleop", "teleoperated data collection, recordings -> target-scene ETC"),
    "calibrate": ("etc_ros.commands.calibrate", "camera intrinsics/extrinsics calibration"),
    "ros": ("etc_ros.commands.ros", "ROS 2: bringup of the node graph, say an instruction, e-stop, parameters"),
    "bench": ("etc_training.commands.bench", "benchmarks writing JSON"),
}


def build_parser() -> argparse.ArgumentParser:
    return robot_cli.build_parser(
        "etc-vla", "ETC vision-language-action policies for the WidowX 250 6DOF: data, training, export, ROS 2.",
        SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    prefer_passive_openmp()  # before torch loads (etc_ros/core/threads.py)
    return robot_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
