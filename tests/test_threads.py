"""Thread setup (etc_ros.core.threads): one helper sets the OpenMP wait policy for every torch entry point."""
from __future__ import annotations

import re
from pathlib import Path

from etc_ros.core.threads import prefer_passive_openmp

ROOT = Path(__file__).resolve().parents[1]
NOT_YET_SWITCHED: set[str] = set()


def test_passive_unless_the_environment_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    prefer_passive_openmp()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_wait_policy_is_set_in_one_place():
    pat = re.compile(r"""environ(\.setdefault\(|\[)\s*["']OMP_WAIT_POLICY""")
    hits = []
    for pkg in ("etc_ros", "etc_training"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            if rel != "etc_ros/core/threads.py" and rel not in NOT_YET_SWITCHED and pat.search(f.read_text()):
                hits.append(rel)
    assert not hits, f"use etc_ros.core.threads.prefer_passive_openmp() instead: {hits}"
