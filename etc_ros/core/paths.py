"""Where the package's data files (urdf/, config/, launch/) live: the source tree in a dev checkout,
or share/etc_ros of an ament install on the robot PC."""
from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def share_dir() -> Path:
    """Directory holding urdf/, config/ and launch/ (env ETC_ROS_SHARE overrides)."""
    env = os.environ.get("ETC_ROS_SHARE")
    if env:
        return Path(env)
    if (_REPO_ROOT / "urdf").is_dir() and (_REPO_ROOT / "config").is_dir():
        return _REPO_ROOT
    try:  # installed with colcon on a ROS machine
        from ament_index_python.packages import get_package_share_directory  # noqa: WPS433

        return Path(get_package_share_directory("etc_ros"))
    except Exception as exc:  # pragma: no cover - only on broken installs
        raise FileNotFoundError(
            "cannot locate the etc_ros share directory (urdf/, config/); set ETC_ROS_SHARE"
        ) from exc


def urdf_path(name: str = "wx250s.urdf") -> Path:
    return share_dir() / "urdf" / name


def config_path(name: str) -> Path:
    return share_dir() / "config" / name
