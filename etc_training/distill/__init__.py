"""Distillation of the continuous (diffusion) action head into a one-step generator.

- sdm.py: SDM (score and distribution matching): generator G, frozen teacher F, dynamic teacher D.
- consistency.py: consistency distillation baseline (one-step student on the teacher's DDIM grid).
- policy.py: the VLA side: cached prefix conditions, the distilled policy checkpoint, `run_sdm`.
- export.py: the single-pass ONNX head graph for the policy bundle ("head" role of etc_ros.policy.bundle).
- report.py: teacher-10 / teacher-1 / SDM-1 (/ CD-1) comparison: held-out action error, closed-loop success,
  head and end-to-end latency -> Markdown + JSON.
"""
from __future__ import annotations
