#!/usr/bin/env bash
# Sets up everything `make demo` / `make test` need, from a fresh clone:
#  1. Debian packages for headless MuJoCo rendering (EGL / OSMesa), installed only when missing;
#  2. .venv with the pinned Python dependencies (requirements.txt, constrained by constraints.txt);
#  3. this package installed editable (console script `etc-vla`).
# Idempotent: a stamp file records the hash of the dependency files; nothing is redone when unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.etc-vla-installed"

# `--with-browser` (make test): also headless Chromium, for the ETC annotation page test, and .venv-lerobot, the
# real LeRobot reader of the interop test (scripts/setup_lerobot_reader.sh; a failure there is reported, and
# tests/test_lerobot_interop.py then fails naming it).
WITH_TEST_TOOLS=0
[ "${1:-}" = "--with-browser" ] && WITH_TEST_TOOLS=1
lerobot_reader() {
  if [ "$WITH_TEST_TOOLS" = 1 ]; then
    bash scripts/setup_lerobot_reader.sh \
      || echo "[setup] WARNING: the LeRobot reader venv could not be built; tests/test_lerobot_interop.py will fail" >&2
  fi
}
debs=(libegl1 libosmesa6 libgl1-mesa-dri libgles2)
[ "$WITH_TEST_TOOLS" = 1 ] && debs+=(chromium)
need_deb=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_deb+=("$pkg")
done
if [ "${#need_deb[@]}" -gt 0 ]; then
  echo "[setup] installing Debian packages for headless rendering: ${need_deb[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_deb[@]}" >/dev/null
fi

want="$(cat requirements.txt constraints.txt setup.py | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  lerobot_reader
  exit 0
fi
echo "[setup] creating $VENV and installing pinned dependencies (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import torch, mujoco, rclpy, transformers, onnxruntime" \
  || { echo "[setup] dependency install failed" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import etc_ros, etc_training" || { echo "[setup] package install failed" >&2; exit 1; }
echo "$want" > "$STAMP"
lerobot_reader
echo "[setup] done"
