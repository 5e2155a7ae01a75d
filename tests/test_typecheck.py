"""The robot side type-checks (issue 15, item 5): scripts/typecheck.sh runs mypy over the policy contract, the
worker, the runtime, the safety layer and the ROS nodes (setup.cfg [mypy]). A type error fails here with mypy's
own report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_robot_side_type_checks():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "typecheck.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, f"mypy found type errors:\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert "Success: no issues found" in r.stdout, r.stdout
