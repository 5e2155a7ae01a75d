"""Guards the design card: dependency direction, package metadata, and the one CLI."""
from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_NODE_DIRS = ("etc_ros/nodes",)  # the only place rclpy may be imported


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    mods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


def _py_files(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


def test_robot_side_never_imports_torch_or_transformers():
    bad = []
    for f in _py_files("etc_ros"):
        hit = _imports(f) & {"torch", "transformers", "torchvision", "etc_training"}
        if hit:
            bad.append(f"{f.relative_to(ROOT)}: {sorted(hit)}")
    assert not bad, "robot side must run on numpy + onnxruntime only:\n" + "\n".join(bad)


def test_rclpy_only_in_node_adapters():
    bad = []
    for pkg in ("etc_ros", "etc_training"):
        for f in _py_files(pkg):
            rel = f.relative_to(ROOT).as_posix()
            if any(rel.startswith(d + "/") for d in ROS_NODE_DIRS):
                continue
            hit = _imports(f) & {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "trajectory_msgs",
                                 "diagnostic_msgs", "std_srvs", "builtin_interfaces"}
            if hit:
                bad.append(f"{rel}: {sorted(hit)}")
    assert not bad, "pure cores must not import rclpy/messages (only etc_ros/nodes may):\n" + "\n".join(bad)


def test_importing_robot_core_does_not_load_torch():
    code = (
        "import sys, importlib, pkgutil, etc_ros\n"
        "mods = [m.name for m in pkgutil.walk_packages(etc_ros.__path__, 'etc_ros.') if '.nodes' not in m.name]\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = [m for m in ('torch', 'transformers', 'rclpy') if m in sys.modules]\n"
        "print(len(mods), bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_xml_is_ament_python_format3():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "etc_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for d in ("rclpy", "std_msgs", "sensor_msgs", "trajectory_msgs", "diagnostic_msgs", "std_srvs"):
        assert d in deps, f"package.xml lacks exec_depend {d}"
    assert (ROOT / "resource" / "etc_ros").is_file()
    # every ROS / system package the robot side imports is declared, so `rosdep install` pulls it
    import ast

    ros_or_system = {"rclpy": "rclpy", "std_msgs": "std_msgs", "std_srvs": "std_srvs", "sensor_msgs": "sensor_msgs",
                     "trajectory_msgs": "trajectory_msgs", "diagnostic_msgs": "diagnostic_msgs",
                     "builtin_interfaces": "builtin_interfaces", "rcl_interfaces": "rcl_interfaces",
                     "ament_index_python": "ament_index_python", "geometry_msgs": "geometry_msgs",
                     "launch": "launch", "launch_ros": "launch_ros", "interbotix_xs_modules": "interbotix_xs_modules",
                     "interbotix_common_modules": "interbotix_common_modules", "interbotix_xs_msgs":
                     "interbotix_xs_msgs", "cv2": "python3-opencv", "pyrealsense2": "librealsense2",
                     "numpy": "python3-numpy", "yaml": "python3-yaml"}
    used = set()
    for p in list((ROOT / "etc_ros").rglob("*.py")) + list((ROOT / "launch").glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [n.module] if isinstance(n, ast.ImportFrom) and n.module and n.level == 0 else []
            used |= {m.split(".")[0] for m in names}
    missing = sorted(ros_or_system[m] for m in used & set(ros_or_system) if ros_or_system[m] not in deps)
    assert not missing, f"package.xml lacks exec_depend {missing}"
    assert {"interbotix_xs_modules", "interbotix_xs_msgs", "interbotix_common_modules"} <= deps


def test_setup_installs_both_packages_and_data():
    text = (ROOT / "setup.py").read_text()
    for needle in ('"launch"', '"urdf"', '"config"', "etc-vla = etc_training.cli:main", "resource/"):
        assert needle in text, f"setup.py misses {needle}"
    for d in ("etc_ros", "etc_training", "launch", "urdf", "config", "tests", "docker"):
        assert (ROOT / d).is_dir(), f"missing top-level {d}/"


def test_cli_help_lists_every_implemented_subcommand():
    from etc_training import cli

    r = subprocess.run([sys.executable, "-m", "etc_training.cli", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    implemented = [n for n, (mod, _) in cli.SUBCOMMANDS.items()
                   if (ROOT / (mod.replace(".", "/") + ".py")).is_file()]
    assert "data" in implemented
    for name in implemented:
        assert name in r.stdout, f"`etc-vla --help` does not list {name}"


def test_cli_help_does_not_import_torch():
    code = "import sys; from etc_training import cli; cli.build_parser(); print('torch' in sys.modules); sys.exit('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "etc-vla --help must stay light (torch imported at parse time)" + r.stdout + r.stderr


@pytest.mark.parametrize("bad", ["not_an_override", "=3"])
def test_config_override_errors_are_clear(bad):
    from dataclasses import dataclass

    from etc_ros.core.config import ConfigError, load_config

    @dataclass
    class Cfg:
        steps: int = 3

    with pytest.raises(ConfigError):
        load_config(Cfg, None, [bad])
