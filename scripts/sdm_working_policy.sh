#!/usr/bin/env bash
# SDM at working quality (issue 17, item 5), one seed: a diffusion teacher on the working pick_up policy's frozen
# condition (`etc-vla distill teacher`), then SDM and consistency one-step students distilled from it and the
# comparison (teacher-10 / teacher-1 / sdm-1 / cd-1: held-out action error, closed loop on 50 new pick_up scenes
# of the train and ood_color splits, latency in PyTorch and ONNX Runtime) (`etc-vla distill sdm`).
# Usage: scripts/sdm_working_policy.sh SEED        (env: OUT, REG, DATA, HELD, TEACHER_STEPS, SDM_FRAMES, EPISODES)
#        REPORT_ONLY=1 scripts/sdm_working_policy.sh SEED   re-runs only the comparison of an existing seed
# Then: etc-vla distill summary --runs runs/sdm_work/seed{0,1,2}/sdm --out runs/sdm_work/summary
# The teacher's condition bank does not depend on the seed: a later seed reuses the first one's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
SEED="${1:?usage: scripts/sdm_working_policy.sh SEED}"
OUT="${OUT:-runs/sdm_work}"
REG="${REG:-runs/policy_pickup_ft/stage2/final}"    # the working regression policy (make policy)
DATA="${DATA:-runs/data/pickup}"                    # its training demonstrations
HELD="${HELD:-runs/data/pickup_val}"                # held-out demonstrations (sim collect --seed 5)
T="$OUT/seed$SEED"
mkdir -p "$T/cache"
for bank in "$OUT"/seed*/cache/teacher_cond_bank.pt; do
  if [ -f "$bank" ] && [ ! -f "$T/cache/teacher_cond_bank.pt" ]; then cp "$bank" "$T/cache/"; fi
done
ACTION=sdm
if [ "${REPORT_ONLY:-0}" = 1 ]; then ACTION=report; else
$PY -m etc_training.cli distill teacher --checkpoint "$REG" --data "$DATA" --out "$T" --no-progress \
  "seed=$SEED" "teacher.seed=$SEED" "teacher.steps=${TEACHER_STEPS:-5000}" run.threads=1
fi
$PY -m etc_training.cli distill "$ACTION" --checkpoint "$T/teacher" --data "$DATA" --heldout "$HELD" --out "$T/sdm" \
  --no-progress "seed=$SEED" "sdm.seed=$SEED" consistency.enabled=true "consistency.seed=$SEED" \
  "data.max_frames=${SDM_FRAMES:-4000}" "eval.episodes=${EPISODES:-50}" 'eval.families=[pick_up]' \
  'eval.heldout_splits=[train]' 'eval.sim_splits=[train, ood_color]' \
  'eval.variants=[teacher-10, teacher-1, sdm-1, cd-1]' run.threads=1
