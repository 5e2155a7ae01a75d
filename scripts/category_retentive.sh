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
FT_STEPS="${FT_STEPS:-600}"
mkdir -p "$OUT"
pickup_data   # DATA, EPISODES_DIR, VAL_DIR, INIT and the pick_up ETC
for v in s3_action_only s3_etc; do
  if [ -d "$REF/$v" ] && [ ! -e "$OUT/$v" ]; then ln -s "$(realpath "$REF/$v")" "$OUT/$v"; fi
done
ablate() { stage3_ablate "$1" "$2"; }  # variants seeds (scripts/midtrain_downstream.sh's Stage-3 settings)
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
