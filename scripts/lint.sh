#!/usr/bin/env bash
# Lint with ruff (pinned in requirements.txt; settings in ruff.toml: pycodestyle E/W, pyflakes F, import order I,
# 120 columns), part of `make test` and of tests/test_lint.py. Checks every Python file of the repository except the
# virtual environments, runs/ and build folders.
# Usage: scripts/lint.sh [extra ruff check arguments], e.g. --fix (safe fixes only) or --statistics
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -m ruff --version >/dev/null 2>&1 || { echo "[lint] ruff is not installed in $PY (pip install -r requirements.txt -c constraints.txt)" >&2; exit 1; }
exec "$PY" -m ruff check "$@" .
