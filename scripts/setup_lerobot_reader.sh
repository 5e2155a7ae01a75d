#!/usr/bin/env bash
# Builds .venv-lerobot: the real LeRobot (0.4.4, dataset format v3.0) as an independent reader for the interop test
# (tests/test_lerobot_interop.py). Part of `make test` (scripts/setup.sh --with-browser); the test calls it too.
#  - a child venv of the project's Python; one .pth line puts .venv's site-packages behind its own, so torch 2.13
#    (CPU), numpy, pyarrow and pillow are reused and nothing CUDA is downloaded;
#  - requirements-lerobot-reader.txt installed with --no-deps (every LeRobot 0.4.x declares torch<2.11, and a
#    resolving `pip install lerobot` beside torch 2.13 falls back to 0.3.2, which reads only dataset v2.1);
#  - checked by importing LeRobotDataset. Idempotent: a stamp holds the hash of the lock, this script and the
#    project's torch version; nothing is redone when unchanged. Exits non-zero with the reason when it cannot build.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=.venv
VENV=.venv-lerobot
STAMP="$VENV/.reader-installed"
[ -x "$MAIN/bin/python" ] || { echo "[lerobot-reader] $MAIN missing: run scripts/setup.sh first" >&2; exit 1; }
torch_v="$("$MAIN/bin/python" -c 'import torch; print(torch.__version__)')"
want="$( (cat requirements-lerobot-reader.txt scripts/setup_lerobot_reader.sh; echo "$torch_v") | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[lerobot-reader] creating $VENV (LeRobot 0.4.4 reader, torch $torch_v from $MAIN)"
start=$(date +%s)
rm -rf "$VENV"
base="$("$MAIN/bin/python" -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$VENV"
site_main="$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site_child="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$(cd "$site_main" && pwd)" > "$site_child/_etc_project_venv.pth"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-lerobot-reader.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" - <<'PY' || { echo "[lerobot-reader] install failed: LeRobot's dataset classes do not import in .venv-lerobot (network? see requirements-lerobot-reader.txt)" >&2; exit 1; }
import importlib.metadata as md
assert md.version("lerobot") == "0.4.4", md.version("lerobot")
import subprocess, sys
# the reader script itself imports LeRobotDataset (with its torchvision workaround); run its import check
subprocess.run([sys.executable, "tests/lerobot_reader.py", "--check"], check=True)
PY
echo "$want" > "$STAMP"
echo "[lerobot-reader] done in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1) on disk"
