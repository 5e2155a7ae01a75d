# Sourced by the research job scripts (etc_ablation*.sh, midtrain_downstream.sh): the repository root as the working
# directory, the project's Python (PYTHON, default .venv/bin/python) as PY and `cli` (= etc-vla), headless MuJoCo
# rendering and passive OpenMP waiting (two 1-thread jobs side by side), `stream "variant seed" ...`, which runs
# the sourcing script's `ablate VARIANT SEED` for each pair in turn, `pickup_data` (the pick_up data of the
# working-quality runs, and its ETC built once) and `stage3_ablate` (the Stage-3-from-one-policy runs' settings).
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
pickup_data() {  # DATA, EPISODES_DIR, VAL_DIR, INIT (defaults below unless set); builds DATA/etc and DATA/etc_val once
  DATA="${DATA:-runs/abl17/data}"
  EPISODES_DIR="${EPISODES_DIR:-runs/data/pickup}"   # 1200 pick_up demonstrations, as `make policy` collects them
  VAL_DIR="${VAL_DIR:-runs/data/pickup_val}"
  INIT="${INIT:-runs/policy_pickup/stage2/final}"     # the working pick_up policy (32 % success)
  mkdir -p "$DATA"
  [ -f "$DATA/etc/index.json" ] || cli etc build --episodes "$EPISODES_DIR" --out "$DATA/etc" --workers 2 overlays=0
  [ -f "$DATA/etc_val/index.json" ] || cli etc build --episodes "$VAL_DIR" --out "$DATA/etc_val" --workers 2 \
    overlays=0
}
stage3_ablate() {  # variants seeds [options, then overrides]: into OUT, FT_STEPS Stage-3 steps from INIT, 50 scenes
  local variants=$1 seeds=$2  # per seed on train and ood_color, checkpoints and CKA every 200 steps, one thread
  shift 2
  cli ablate --config config/ablation_pickup.yaml --out "$OUT" --seeds "$seeds" --variants "$variants" --episodes 50 \
    --splits train,ood_color --family pick_up --workers 1 --etc-eval "$DATA/etc_val" --etc-eval-splits train \
    --val-data "$VAL_DIR" --val-split train --no-progress "$@" \
    "model.init=$INIT" "stages.stage3.steps=$FT_STEPS" run.checkpoint_every=200 cka.every=200 \
    "data.episodes=$EPISODES_DIR" "data.etc=$DATA/etc" run.threads=1
}
