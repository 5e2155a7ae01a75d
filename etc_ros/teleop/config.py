"""config/teleop.yaml: `load_teleop_file` -> (TeleopConfig, RecorderConfig, RobotSection), with key=value
overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from etc_ros.teleop.mapping import TeleopConfig, TeleopError, check_teleop_config


# --------------------------------------------------------------------------------------------- file config
@dataclass
class RobotSection:
    """How `etc-vla teleop run` reaches the arm."""

    bringup: str = "sim"  # sim (MuJoCo world) | fake (no hardware, no MuJoCo) | interbotix | none (attach)
    camera_type: str = "realsense"  # real robot (bringup: interbotix)
    domain_id: int = -1  # -1 = ROS_DOMAIN_ID from the environment
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-node parameter overrides of the graph
    threads: int = 4


def load_teleop_file(path: str | Path | None = None, overrides: Sequence[str] = ()):
    """(TeleopConfig, RecorderConfig, RobotSection) from config/teleop.yaml (default: the package's) plus
    key=value overrides (e.g. teleop.linear_speed=0.03 recorder.root=/data/ep)."""

    from etc_ros.core.config import ConfigError, apply_overrides, from_dict, merge_dicts, to_dict
    from etc_ros.teleop.recorder import RecorderConfig, check_recorder_config

    data = {"teleop": to_dict(TeleopConfig()), "recorder": to_dict(RecorderConfig()),
            "robot": to_dict(RobotSection())}
    if path is None:
        from etc_ros.core.paths import config_path

        default = config_path("teleop.yaml")
        path = default if default.is_file() else None
    if path is not None:
        from etc_ros.core.config import read_yaml_mapping

        p = Path(path)
        loaded = read_yaml_mapping(p, TeleopError, what="teleop config",
                                   top_level="a mapping with teleop / recorder / robot")
        unknown = sorted(set(loaded) - {"teleop", "recorder", "robot"})
        if unknown:
            raise ConfigError(f"{p}: unknown section(s) {unknown}; known: ['recorder', 'robot', 'teleop']")
        # mappings that are data, not schema: replace them instead of merging key by key
        for sect, key in (("teleop", "keyboard"), ("teleop", "joy"), ("teleop", "spacemouse")):
            sub = (loaded.get(sect) or {}).get(key) or {}
            for k in ("bindings", "axes", "buttons"):
                if k in sub:
                    data[sect][key][k] = {}
        data = merge_dicts(data, loaded)
    data = apply_overrides(data, overrides)
    tele = check_teleop_config(from_dict(TeleopConfig, data["teleop"] or {}, "teleop."))
    rec = check_recorder_config(from_dict(RecorderConfig, data["recorder"] or {}, "recorder."))
    robot = from_dict(RobotSection, data["robot"] or {}, "robot.")
    if robot.bringup not in ("sim", "fake", "interbotix", "none"):
        raise TeleopError(f"robot.bringup must be sim, fake, interbotix or none, got {robot.bringup!r}")
    return tele, rec, robot
