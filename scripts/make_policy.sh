#!/usr/bin/env bash
# `make policy`: reproduces the shipped sim policy bundle (policies/sim_pickup/) from nothing, on this CPU:
#  1. 1200 scripted-expert pick_up demonstrations (clean DART labels), seed 0        (~4 min, 2 workers)
#  2. training with config/policy_pickup.yaml (stage 2 + stage 3)                   (~67 min, both cores)
#     then config/policy_pickup_ft.yaml (1800 more steps, fresh lower cosine)       (~24 min, both cores)
#  3. closed-loop evaluation on 50 new seeded scenes (seed 7), and the memorization check (~2 min each)
#  4. export to an ONNX bundle (fp32 + int8-dynamic, parity checked)                 (~1 min)
# Override with env vars: EPISODES, STEPS (stage 2 of the first config), OUT (default runs/make_policy),
# SHIP (default policies/sim_pickup).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
EPISODES="${EPISODES:-1200}"
OUT="${OUT:-runs/make_policy}"
SHIP="${SHIP:-policies/sim_pickup}"
STEPS_ARG=()
[ -n "${STEPS:-}" ] && STEPS_ARG=("stages.stage2.steps=$STEPS")
mkdir -p "$OUT"
if [ ! -f "$OUT/data/pickup/meta/info.json" ]; then
  $PY -m etc_training.cli sim collect --split train --seed 0 --episodes "$EPISODES" --out "$OUT/data/pickup" \
    --workers 2 --json "$OUT/collect.json" 'families=[pick_up]'
fi
$PY -m etc_training.cli train --config config/policy_pickup.yaml "out=$OUT/train" "data.episodes=$OUT/data/pickup" \
  "${STEPS_ARG[@]}" 2>&1 | tee "$OUT/train.log"
$PY -m etc_training.cli train --config config/policy_pickup_ft.yaml "out=$OUT/train_ft" \
  "model.init=$OUT/train/stage3/final" "data.episodes=$OUT/data/pickup" 2>&1 | tee "$OUT/train_ft.log"
FINAL="$OUT/train_ft/stage2/final"
$PY -m etc_training.cli eval --checkpoint "$FINAL" --family pick_up --episodes 50 --seed 7 \
  --workers 2 --out "$OUT/eval_new_scenes"
$PY -m etc_training.cli eval --checkpoint "$FINAL" --seeds-from "$OUT/data/pickup" --episodes 50 \
  --workers 2 --out "$OUT/eval_train_scenes"
# the full bundle (with its PyTorch copy: `etc-vla bench policy --bundle`) and the shipped one (ONNX only, <= 25 MB)
$PY -m etc_training.cli export "$FINAL" --out "$OUT/bundle_full" --quantize int8-dynamic --force
$PY -m etc_training.cli export "$FINAL" --out "$OUT/bundle" --quantize int8-dynamic --no-torch --force
$PY -m etc_training.cli eval --checkpoint "$OUT/bundle" --family pick_up --episodes 50 --seed 7 --workers 2 \
  --out "$OUT/eval_bundle"
# the bundle holds exactly the files of its manifest (anything else fails its verification): the configs, logs and
# evaluations stay in $OUT (and docs/results/policy/ for the committed copy)
rm -rf "$SHIP.tmp" && mkdir -p "$(dirname "$SHIP")" && cp -r "$OUT/bundle" "$SHIP.tmp"
rm -rf "$SHIP" && mv "$SHIP.tmp" "$SHIP"
$PY -c "from etc_ros.policy.runtime import PolicyRuntime; PolicyRuntime.load('$SHIP')"
echo "[policy] shipped $SHIP ($(du -sh "$SHIP" | cut -f1))"
