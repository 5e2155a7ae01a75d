#!/usr/bin/env bash
# The ETC pathway ablation of research issue 17 (item 1) shrunk to fit one session of this 2-core CPU:
# action_only vs three_stage, 3 training seeds each, 50 new scenes per split and seed on every pick_up split
# (train, ood_color, ood_distractor, ood_phrase). What is shrunk, and only that: the optimizer steps, from the
# working recipe's 600 + 3000 + 1800 (config/ablation_pickup.yaml) to 300 + 1300 + 600 = 2200 per variant
# (--budget total: action_only makes Stage 1's 300 steps in Stage 2). Data, model, batch sizes, learning rates
# and the evaluation are those of scripts/etc_ablation.sh. Two streams run side by side, one thread each, into
# one OUT (finished runs are resumed), then one gathering call writes OUT/ablation.md / .json / .png.
# Usage: bash scripts/etc_ablation_cpu.sh   (data: runs/data/pickup and runs/data/pickup_val, as `make policy`
# collects them; ETC is built here). Measured here: ~2 h.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-${MUJOCO_GL:-egl}}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
OUT="${OUT:-runs/abl17}"
EPISODES_DIR="${EPISODES_DIR:-runs/data/pickup}"
VAL_DIR="${VAL_DIR:-runs/data/pickup_val}"
STEPS="${STEPS:-stages.stage1.steps=300 stages.stage2.steps=1300 stages.stage3.steps=600}"
D="$OUT/data"
mkdir -p "$D"
cli() { "$PY" -m etc_training.cli "$@"; }
[ -f "$D/etc/index.json" ] || cli etc build --episodes "$EPISODES_DIR" --out "$D/etc" --workers 2 overlays=0
[ -f "$D/etc_val/index.json" ] || cli etc build --episodes "$VAL_DIR" --out "$D/etc_val" --workers 2 overlays=0
ablate() {  # variants seeds workers threads
  # shellcheck disable=SC2086
  cli ablate --config config/ablation_pickup.yaml --out "$OUT" --seeds "$2" --variants "$1" --budget total \
    --episodes 50 --splits all --family pick_up --workers "$3" --etc-eval "$D/etc_val" --etc-eval-splits train \
    --val-data "$VAL_DIR" --val-split train --no-progress \
    "data.episodes=$EPISODES_DIR" "data.etc=$D/etc" "run.threads=$4" $STEPS
}
# stream A and stream B: different seeds first, so no two processes build one seed's initial model at once
( ablate three_stage 0 1 1; ablate three_stage 1 1 1; ablate action_only 2 1 1 ) > "$OUT/stream_a.log" 2>&1 &
A=$!
( ablate action_only 1 1 1; ablate action_only 0 1 1; ablate three_stage 2 1 1 ) > "$OUT/stream_b.log" 2>&1 &
B=$!
wait $A $B
ablate action_only,three_stage 0,1,2 2 2 2>&1 | tee "$OUT/ablate.log"
