"""The code lints clean: scripts/lint.sh runs ruff (ruff.toml: pycodestyle E/W, pyflakes F, import order I,
120 columns) over every Python file of the repository. A finding fails here with ruff's own report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "lint.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, f"ruff found problems:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert "All checks passed!" in r.stdout, r.stdout
