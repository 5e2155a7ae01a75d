"""Action / observation spec of the WidowX 250 6DOF policies, shared by training, simulation and robot.

Conventions (BridgeData V2, the de facto standard for WidowX VLA policies):
- state  (7,): the six arm joint positions [rad] in JOINT_NAMES order + gripper opening in [0, 1] (1 = open).
- action (7,): delta EE position [m] (base_link frame), delta EE roll/pitch/yaw [rad] ('sxyz' Euler,
  applied in the base frame), absolute gripper command in [0, 1] (1 = open). Default 5 Hz.
- EE = ee_gripper_link, poses expressed in base_link.
Joint position limits are NOT defined here: they are read from urdf/wx250s.urdf (single source of truth).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROBOT_MODEL = "wx250s"
JOINT_NAMES: tuple[str, ...] = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
GRIPPER_JOINT = "left_finger"  # prismatic finger joint; right_finger mimics it with multiplier -1
BASE_FRAME = "base_link"
EE_FRAME = "ee_gripper_link"
STATE_DIM = 7
ACTION_DIM = 7
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_NAMES: tuple[str, ...] = JOINT_NAMES + ("gripper",)

# Rates and sizes shared by training, export, simulation and the ROS graph: each is written here once.
POLICY_HZ = 5.0  # Bridge / SimplerEnv policy rate: actions (and recorded frames) per second
SERVO_HZ = 50.0  # the safety executor's control tick: joint commands per second to the driver
CHUNK_HORIZON = 10  # actions per predicted chunk (2 s at 5 Hz)
IMAGE_SIZE = 224  # px, square model input and stored/rendered camera image (Bridge / PaliGemma-224)
MAX_OBSERVATION_AGE = 0.5  # s: chunks computed from (and inference on) older observations are refused

# Bridge action clip (server defaults)
MAX_DELTA_XYZ = 0.05  # m per step
MAX_DELTA_RPY = 0.25  # rad per step
ACTION_LOW = np.array([-MAX_DELTA_XYZ] * 3 + [-MAX_DELTA_RPY] * 3 + [0.0])
ACTION_HIGH = np.array([MAX_DELTA_XYZ] * 3 + [MAX_DELTA_RPY] * 3 + [1.0])

# Poses (rad) used by the Interbotix driver
SLEEP_POSE = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])
HOME_POSE = np.zeros(6)
# A comfortable start pose above the table, gripper pointing down (used by sim and policy episodes).
# Derived with WidowXKinematics.ik (elbow-up branch, seeded from the previous guess): ee_gripper_link at
# (0.280, 0.000, 0.160) m in base_link with its x axis along -z (rpy = 0, pi/2, 0; shoulder + elbow + wrist_angle
# = pi/2); inside WorkspaceBox and >= 0.1 rad from every joint limit. Rounded to 1e-4 rad (EE error < 2e-5 m).
READY_POSE = np.array([0.0, -0.0625, 0.2423, 0.0, 1.3910, 0.0])

# Finger travel (left finger joint, m) <-> normalized gripper opening
FINGER_CLOSED = 0.015
FINGER_OPEN = 0.037


def gripper_from_finger(finger_pos: float | np.ndarray) -> float | np.ndarray:
    """Left-finger joint position [m] -> gripper opening in [0, 1] (1 = open)."""
    return np.clip((np.asarray(finger_pos) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED), 0.0, 1.0)


def finger_from_gripper(g: float | np.ndarray) -> float | np.ndarray:
    return FINGER_CLOSED + np.clip(np.asarray(g), 0.0, 1.0) * (FINGER_OPEN - FINGER_CLOSED)


@dataclass
class WorkspaceBox:
    """EE position box in base_link [m] (Bridge server default)."""

    low: tuple[float, float, float] = (0.1, -0.15, -0.1)
    high: tuple[float, float, float] = (0.45, 0.25, 0.18)

    def contains(self, p: np.ndarray, tol: float = 1e-9) -> bool:
        p = np.asarray(p, dtype=float)
        return bool(np.all(p >= np.asarray(self.low) - tol) and np.all(p <= np.asarray(self.high) + tol))

    def clip(self, p: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(p, dtype=float), self.low, self.high)


@dataclass
class SafetyLimits:
    """Hard limits enforced by the safety filter and (again) by the driver. Defaults from the Interbotix /
    Bridge / deployment facts; override in config/safety.yaml."""

    joint_margin: float = 0.05  # rad kept away from the URDF position limits
    max_joint_velocity: float = 3.14  # rad/s (Interbotix MoveIt)
    max_joint_acceleration: float = 5.0  # rad/s^2 (Interbotix MoveIt)
    max_ee_step: float = 0.05  # m per policy step (Bridge clip)
    max_gripper_rate: float = 2.0  # opening fraction per second
    workspace: WorkspaceBox = field(default_factory=WorkspaceBox)
    max_observation_age: float = MAX_OBSERVATION_AGE  # s: chunks computed from older observations are rejected
    chunk_timeout: float = 1.0  # s without a fresh valid chunk -> hold
    camera_timeout: float = 0.1  # s without a camera frame -> hold (3 frames of a 30 fps camera)
