#!/usr/bin/env bash
# EmbodiedMidtrain downstream at working quality (research issue 17, item 4), shrunk to fit one session of this
# 2-core CPU in the retentive form of scripts/etc_ablation_cpu.sh (training a policy from scratch to working
# success takes ~50 min per run here; 12 such runs do not fit).
#
# 1. `etc-vla midtrain report --config config/midtrain_pickup100k.yaml`: the 100,001-candidate pool scored with the
#    frozen features of the VLM that is mid-trained below (the working pick_up policy's Stage-2 VLM) against its own
#    robot data (pick_up ETC); selections of K = 10 % = 10,000 candidates: learned estimator, random, feature distance.
# 2. `etc-vla ablate --variants midtrain`: from the SAME trained policy (INIT, default runs/policy_pickup/stage2/final,
#    32 % success), mt_<method> mid-trains its VLM for MT_STEPS Stage-1 steps on one selection (32 general VLM
#    samples per step, no action data, lr MT_LR), then fine-tunes exactly like s3_action_only (FT_STEPS Stage-3 steps
#    of actions + grounding questions); s3_action_only (no mid-training) is the paired reference. 3 seeds each;
#    success vs fine-tuning step at steps 0 / 200 / 400 / FT_STEPS on 50 new train-split scenes per seed, and the
#    final policy on the train and ood_color splits (50 scenes each per seed), with the CKA drift at the same steps.
# 3. s3_etc (target-scene ETC in the same Stage 3, the ETC ablation's variant) with the same checkpoints: the CKA
#    drift of ETC co-training vs action-only next to the success of the same checkpoints (ETC Fig. 3a, item 2).
#
# Two streams side by side (one thread each) into one OUT (finished runs are resumed), then one gathering call with
# the same settings writes OUT/ablation.md / .json / success_vs_step.png.
source "$(dirname "$0")/research_env.sh"   # repo root, PY, cli, stream, headless GL, passive OpenMP
OUT="${OUT:-runs/midtrain_downstream}"
SEL="${SEL:-runs/midtrain_pickup100k/selection}"
MT_STEPS="${MT_STEPS:-200}"
MT_LR="${MT_LR:-3.0e-4}"
FT_STEPS="${FT_STEPS:-600}"
mkdir -p "$OUT"
pickup_data   # DATA, EPISODES_DIR, VAL_DIR, INIT and the pick_up ETC (scripts/etc_ablation_cpu.sh builds it too)
ablate() {  # variants seeds
  stage3_ablate "$1" "$2" --midtrain-selections "$SEL" --eval-checkpoints 200,400 "stages.stage1.steps=$MT_STEPS" \
    "stages.stage1.lr=$MT_LR" stages.stage1.warmup=20
}
# one run (the selections must exist for mt_*): scripts/midtrain_downstream.sh one VARIANT SEED
if [ "${1:-}" = one ]; then ablate "$2" "$3"; exit; fi
[ -f "$SEL/distance.jsonl" ] || cli midtrain report --config config/midtrain_pickup100k.yaml --no-progress \
  "model.path=$INIT" "robot.etc=$DATA/etc"
stream "s3_action_only 0" "mt_learned 0" "s3_action_only 1" "mt_random 1" "s3_action_only 2" "mt_distance 2" \
  "s3_etc 0" "s3_etc 1" > "$OUT/stream_a.log" 2>&1 &
A=$!
stream "mt_random 0" "mt_distance 0" "mt_learned 1" "mt_distance 1" "mt_learned 2" "mt_random 2" "s3_etc 2" \
  > "$OUT/stream_b.log" 2>&1 &
B=$!
wait $A $B
ablate midtrain,s3_etc 0,1,2 2>&1 | tee "$OUT/ablate.log"
