"""Thread setup shared by every entry point that loads torch (or another OpenMP runtime). Standard library only.

On a shared, oversubscribed CPU, OpenMP worker threads that spin while they wait make 2 torch threads 10-50x
slower than 1 (measured on the project's 2-core machine); passive waiting keeps the second thread useful. The
OpenMP runtime reads OMP_WAIT_POLICY once, when it loads: call `prefer_passive_openmp()` before the first
`import torch`. The torch thread count itself is etc_training.recipe.distributed.set_threads (training side).
"""
from __future__ import annotations

import os


def prefer_passive_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the environment already sets a policy (a user's choice is kept)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
