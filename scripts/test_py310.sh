#!/usr/bin/env bash
# Robot side under CPython 3.10 (the Python of ROS 2 Humble), part of `make test`:
#  1. .venv310 from requirements-robot.txt (onnxruntime CPU wheel instead of onnxruntime-gpu: no GPU here), plus
#     pytest / hypothesis (the newest releases that still support 3.10); rebuilt only when those files change;
#  2. every non-ROS etc_ros module compiled and imported;
#  3. the robot-side tests that need neither ROS wheels nor torch.
# Needs python3.10 (pyenv on these machines, the system Python on Ubuntu 22.04); fails, never skips, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY310="${PY310:-}"
if [ -z "$PY310" ]; then
  for c in python3.10 "$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10; do
    if [ -x "$(command -v "$c" 2>/dev/null || echo "$c")" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      PY310="$c"; break
    fi
  done
fi
[ -n "$PY310" ] || { echo "[py310] no CPython 3.10 found (set PY310=/path/to/python3.10)" >&2; exit 1; }
VENV=.venv310
STAMP="$VENV/.installed"
want="$(cat requirements-robot.txt requirements.txt scripts/test_py310.sh | sha256sum | cut -d' ' -f1)"
if ! [ -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[py310] creating $VENV with $("$PY310" --version) from requirements-robot.txt"
  rm -rf "$VENV"
  "$PY310" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  sed -e 's/^onnxruntime-gpu/onnxruntime/' requirements-robot.txt > "$VENV/requirements-cpu.txt"
  # the test tools of requirements.txt dropped 3.10: the last releases that support it
  printf 'pytest>=8,<10\nhypothesis>=6.100,<6.169\nscipy>=1.10  # reference in test_kinematics\n' >> "$VENV/requirements-cpu.txt"
  "$VENV/bin/python" -m pip install -q -r "$VENV/requirements-cpu.txt" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import numpy, onnxruntime, pyarrow, tokenizers, pytest, hypothesis" \
    || { echo "[py310] dependency install failed" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi
# 2. every module of etc_ros that does not need rclpy / ROS messages / GPU-only packages
"$VENV/bin/python" - <<'PY'
import importlib, pathlib, sys
assert sys.version_info[:2] == (3, 10), sys.version
skip_parts = {"nodes"}  # rclpy + message packages: the ROS install provides them on the robot
gpu_only = {"etc_ros.policy.tensorrt"}  # imports tensorrt / cuda lazily, but only on a GPU
mods, bad = [], []
for p in sorted(pathlib.Path("etc_ros").rglob("*.py")):
    parts = p.with_suffix("").parts
    if skip_parts & set(parts):
        continue
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    compile(p.read_text(), str(p), "exec")
    try:
        importlib.import_module(name)
        mods.append(name)
    except Exception as e:  # noqa: BLE001
        if name not in gpu_only:
            bad.append(f"{name}: {type(e).__name__}: {e}")
print(f"[py310] {sys.version.split()[0]}: imported {len(mods)} etc_ros modules")
if bad:
    print("\n".join(bad))
    sys.exit(1)
PY
# 3. the robot-side tests that import neither torch, etc_training nor rclpy
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_safety_executor.py tests/test_safety_chunking.py \
  tests/test_safety_guard.py tests/test_safety_invariants.py tests/test_kinematics.py tests/test_urdf.py \
  tests/test_action_tokenizer.py tests/test_config.py tests/test_teleop.py
