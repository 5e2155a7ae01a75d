# Sourced by the research job scripts (etc_ablation*.sh, midtrain_downstream.sh): the repository root as the working
# directory, the project's Python (PYTHON, default .venv/bin/python) as PY and `cli` (= etc-vla), headless MuJoCo
# rendering and passive OpenMP waiting (two 1-thread jobs side by side), and `stream "variant seed" ...`, which runs
# the sourcing script's `ablate VARIANT SEED` for each pair in turn.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-${MUJOCO_GL:-egl}}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cli() { "$PY" -m etc_training.cli "$@"; }
stream() {  # "variant seed" ...
  local run
  for run in "$@"; do
    # shellcheck disable=SC2086
    ablate $run
  done
}
