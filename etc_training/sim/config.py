"""Typed configuration of the MuJoCo WidowX world (defaults mirror config/sim.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from etc_ros.core import spec as robot_spec

FAMILIES = ("pick_place", "pick_up", "push", "stack")


@dataclass
class CameraConfig:
    # Nominal fixed third-person camera (base_link frame): eye position and look-at point (m). It faces the robot
    # across the table, elevated, so the arm enters the image from the top as in Bridge / SimplerEnv frames.
    eye: tuple[float, float, float] = (0.64, 0.07, 0.44)
    target: tuple[float, float, float] = (0.25, 0.04, 0.02)
    pos_jitter: float = 0.01  # m, uniform per axis, per episode
    rot_jitter: float = 0.02  # rad, uniform per axis, per episode
    wrist: bool = False  # add the optional wrist camera


@dataclass
class RenderConfig:
    width: int = robot_spec.IMAGE_SIZE
    height: int = robot_spec.IMAGE_SIZE
    cameras: list[str] = field(default_factory=lambda: ["primary"])  # rendered into observations
    shadows: bool = False  # shadow mapping costs ~2.5x render time on a CPU rasteriser


@dataclass
class PhysicsConfig:
    timestep: float = 0.002  # s (500 Hz, as SimplerEnv)
    profile_time: float = 0.25  # s, servo time-based profile (Bridge)
    accel_time: float = 0.10  # s
    friction: float = 1.0  # object sliding friction
    finger_friction: float = 1.5
    gripper_force: float = 0.0  # N, 0 = the URDF finger effort
    gripper_time: float = 0.30  # s for a full open <-> close stroke
    weld_on_grasp: bool = False  # fallback: weld the object to the gripper when both fingers touch it


@dataclass
class RandomizationConfig:
    distractors: tuple[int, int] = (1, 3)  # min, max number of distractors
    color_jitter: float = 0.04
    lighting: bool = True
    table: bool = True


@dataclass
class ExpertConfig:
    noise_xyz: float = 0.003  # m, std of Gaussian action noise (executed and recorded)
    noise_rot: float = 0.015  # rad
    max_retries: int = 2
    lift_height: float = 0.13  # m, EE height while carrying
    pos_tol: float = 0.006  # m, waypoint reached


@dataclass
class SimConfig:
    split: str = "train"
    episodes: int = 10
    workers: int = 1
    seed: int = 0
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    max_steps: int = 60  # 12 s at 5 Hz (SimplerEnv eval limit)
    keep_failures: bool = False  # write failed expert episodes too (success=False)
    max_attempts_factor: float = 2.0  # give up after factor * episodes + 10 attempts
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
