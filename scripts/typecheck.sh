#!/usr/bin/env bash
# Type check of the robot side with mypy (pinned in requirements.txt; settings in setup.cfg [mypy]), part of
# `make test` and of tests/test_typecheck.py. Checked (ROBOT_TYPED): the policy contract, the worker, the fake
# runtimes, the ONNX/TensorRT runtime (policy/runtime.py; both graph runners meet its GraphSet protocol) and the
# TensorRT engine builder (policy/tensorrt.py), the safety layer (etc_ros/safety/), the driver backends
# (etc_ros/robot/), every ROS node (the policy -> safety -> driver path, and teleop + recorder) and the camera
# calibration (etc_ros/camera/: board, intrinsics, hand-eye, calibration files, synthetic views, and calibration.py
# that gathers them). Modules they import are analysed for their types, their own errors are not reported
# (follow_imports = silent). Add a module here once it passes.
# Usage: scripts/typecheck.sh [extra mypy arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
ROBOT_TYPED=(
  etc_ros/policy/interface.py
  etc_ros/policy/worker.py
  etc_ros/policy/runtime.py
  etc_ros/policy/scripted.py
  etc_ros/policy/tensorrt.py
  etc_ros/nodes/bringup.py
  etc_ros/nodes/camera_node.py
  etc_ros/nodes/common.py
  etc_ros/nodes/driver_node.py
  etc_ros/nodes/graph.py
  etc_ros/nodes/instruction_node.py
  etc_ros/nodes/messages.py
  etc_ros/nodes/policy_node.py
  etc_ros/nodes/recorder_node.py
  etc_ros/nodes/safety_node.py
  etc_ros/nodes/sim_robot.py
  etc_ros/nodes/teleop_node.py
  etc_ros/nodes/tools.py
  etc_ros/safety/__init__.py
  etc_ros/safety/chunking.py
  etc_ros/safety/executor.py
  etc_ros/safety/filter.py
  etc_ros/safety/guard.py
  etc_ros/safety/watchdog.py
  etc_ros/robot/__init__.py
  etc_ros/robot/base.py
  etc_ros/robot/core.py
  etc_ros/robot/fake.py
  etc_ros/robot/interbotix.py
  etc_ros/robot/sim.py
  etc_ros/camera/board.py
  etc_ros/camera/calibration.py
  etc_ros/camera/calibration_files.py
  etc_ros/camera/handeye.py
  etc_ros/camera/intrinsics.py
  etc_ros/camera/synthetic_views.py
)
"$PY" -m mypy --version >/dev/null 2>&1 || { echo "[typecheck] mypy is not installed in $PY (pip install -r requirements.txt -c constraints.txt)" >&2; exit 1; }
exec "$PY" -m mypy "$@" "${ROBOT_TYPED[@]}"
