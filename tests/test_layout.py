"""Guards the design card: dependency direction, package metadata, and the one CLI."""
from __future__ import annotations

import ast
import os
import shutil
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
    for needle in ('"launch"', '"urdf"', '"config"', "etc-vla = etc_training.cli:main", "etc-robot = etc_ros.cli:main",
                   "resource/"):
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
    code = ("import sys; from etc_training import cli; cli.build_parser(); print('torch' in sys.modules); "
            "sys.exit('torch' in sys.modules)")
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


def _robot_image_tree(tmp_path: Path) -> Path:
    """The files docker/Dockerfile.robot copies into the robot image (its COPY lines of this repository)."""
    dst = tmp_path / "robot_image"
    dst.mkdir()
    copied = []
    for line in (ROOT / "docker/Dockerfile.robot").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or parts[1].startswith("--"):
            continue
        for src in parts[1:-1]:
            if src.startswith(("docker/", "requirements")):
                continue  # entrypoint / pip requirements: not part of the package tree
            copied.append(src)
            s = ROOT / src
            if s.is_dir():
                shutil.copytree(s, dst / src, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(s, dst / src)
    assert "etc_ros" in copied and "etc_training" not in copied, copied
    return dst


_NO_TORCH = ("import sys\n"
             "class _Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('torch', 'etc_training'):\n"
             "            raise ImportError(f'{name} is not in the robot image')\n"
             "sys.meta_path.insert(0, _Block())\n")


@pytest.mark.parametrize("argv,rc,needle", [
    (["--help"], 0, "teleop"),
    (["ros", "plan"], 0, "driver_node"),
    (["ros", "params"], 0, ""),
    (["teleop", "keys"], 0, "quit"),
    (["calibrate", "--help"], 0, "extrinsics"),
    (["data", "validate", "no/such/dataset"], None, "no/such/dataset"),
])
def test_robot_image_runs_the_operator_commands_without_the_training_side(tmp_path, argv, rc, needle):
    """The robot image has no etc_training (and no torch): its `etc-robot` (ros, teleop, calibrate, data) must run
    from exactly what docker/Dockerfile.robot copies, and setup.py must not declare etc-vla there."""
    tree = _robot_image_tree(tmp_path)
    code = _NO_TORCH + "from etc_ros.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("ETC_ROS_SHARE", None)
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=120)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    if rc is None:
        assert r.returncode != 0, out
    else:
        assert r.returncode == rc, out
    assert needle in out


def test_setup_without_the_training_side_installs_etc_robot_only(tmp_path):
    tree = _robot_image_tree(tmp_path)
    code = ("import sys, setuptools\n"
            "seen = {}\n"
            "setuptools.setup = lambda **kw: seen.update(kw)\n"
            "sys.argv = ['setup.py']\n"
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__file__': 'setup.py', '__name__': 'x'})\n"
            "print(seen['entry_points']['console_scripts'], seen['packages'])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "etc-robot = etc_ros.cli:main" in r.stdout and "etc-vla" not in r.stdout
    assert "etc_training" not in r.stdout and "etc_ros.commands" in r.stdout
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "etc-vla = etc_training.cli:main" in r.stdout and "etc-robot = etc_ros.cli:main" in r.stdout
