#!/usr/bin/env bash
# The ETC category ablation at working quality (research issue 17, item 1; ETC Fig. 3b), in the retentive form of
# scripts/etc_ablation_cpu.sh and scripts/midtrain_downstream.sh (training a policy from scratch to working success
# takes ~50 min per run on this 2-core CPU; 15 such runs do not fit in a session).
#
# From the SAME trained policy (INIT, default runs/policy_pickup/stage2/final, 32 % success), FT_STEPS Stage-3 steps:
#   s3_action_only          actions + grounding questions, no ETC (the no-ETC reference)
#   s3_etc                  + target-scene ETC, all three categories (the all-three reference)
#   s3_etc_<category>       + target-scene ETC of one category only (scene_grounding, task_oriented,
#                           action_planning), the same ETC batch size
# 3 seeds each; 50 new pick_up scenes per split (train, ood_color) and seed, the same scenes for every variant.
# The two references are the runs scripts/midtrain_downstream.sh trained with exactly these settings: when REF holds
# them they are linked into OUT and reused (training and evaluation), else they are trained here.
#
# Two streams side by side (one thread each) into one OUT (finished runs are resumed), then one gathering call
# writes OUT/ablation.md / .json / .png.
source "$(dirname "$0")/research_env.sh"   # repo root, PY, cli, stream, headless GL, passive OpenMP
OUT="${OUT:-runs/category_retentive}"
REF="${REF:-runs/midtrain_downstream}"
DATA="${DATA:-runs/abl17/data}"          # scripts/etc_ablation_cpu.sh builds the pick_up ETC there
EPISODES_DIR="${EPISODES_DIR:-runs/data/pickup}"
VAL_DIR="${VAL_DIR:-runs/data/pickup_val}"
INIT="${INIT:-runs/policy_pickup/stage2/final}"
FT_STEPS="${FT_STEPS:-600}"
mkdir -p "$OUT"
[ -f "$DATA/etc/index.json" ] || cli etc build --episodes "$EPISODES_DIR" --out "$DATA/etc" --workers 2 overlays=0
[ -f "$DATA/etc_val/index.json" ] || cli etc build --episodes "$VAL_DIR" --out "$DATA/etc_val" --workers 2 overlays=0
for v in s3_action_only s3_etc; do
  if [ -d "$REF/$v" ] && [ ! -e "$OUT/$v" ]; then ln -s "$(realpath "$REF/$v")" "$OUT/$v"; fi
done
ablate() {  # variants seeds (the training settings of scripts/midtrain_downstream.sh's Stage 3)
  cli ablate --config config/ablation_pickup.yaml --out "$OUT" --seeds "$2" --variants "$1" --episodes 50 \
    --splits train,ood_color --family pick_up --workers 1 --etc-eval "$DATA/etc_val" --etc-eval-splits train \
    --val-data "$VAL_DIR" --val-split train --no-progress \
    "model.init=$INIT" "stages.stage3.steps=$FT_STEPS" run.checkpoint_every=200 cka.every=200 \
    "data.episodes=$EPISODES_DIR" "data.etc=$DATA/etc" run.threads=1
}
# one run: scripts/category_retentive.sh one VARIANT SEED
if [ "${1:-}" = one ]; then ablate "$2" "$3"; exit; fi
stream "s3_etc_scene_grounding 0" "s3_etc_action_planning 0" "s3_etc_task_oriented 1" "s3_etc_scene_grounding 2" \
  "s3_etc_action_planning 2" "s3_action_only 0" "s3_action_only 1" "s3_action_only 2" > "$OUT/stream_a.log" 2>&1 &
A=$!
stream "s3_etc_task_oriented 0" "s3_etc_scene_grounding 1" "s3_etc_action_planning 1" "s3_etc_task_oriented 2" \
  "s3_etc 0" "s3_etc 1" "s3_etc 2" > "$OUT/stream_b.log" 2>&1 &
B=$!
wait $A $B
ablate retentive_categories 0,1,2 2>&1 | tee "$OUT/ablate.log"
