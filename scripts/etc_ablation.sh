#!/usr/bin/env bash
# The ETC ablation of research issue 17, item 1, at working quality, in one command: `bash scripts/etc_ablation.sh`.
#
# NOT RUN HERE: it was prepared and tested on tiny configurations only (tests/test_recipe_ablate.py; a 2-step
# smoke run of this exact pipeline on 3 + 3 + 1 episodes). Compute estimate, from figures measured on this 2-core
# CPU: the working pick_up recipe (config/policy_pickup.yaml) trains at 55-70 samples/s on both cores, 4800 steps x
# (32 action + 16 grounding) samples = ~67 min per training. The ablation makes 21 trainings (4 pathway variants x
# 3 seeds, then 3 category variants x 3 seeds; three_stage is the all-three reference of both) of 5400 steps each
# (--budget total: the 600 Stage-1 steps of the three-stage variants are given to Stage 2 of the others), plus
# 8 ETC samples per Stage-2/3 step and 32 per Stage-1 step in the ETC variants (their per-sample cost was not
# measured): ~24 h of this CPU for the trainings (12 pathway runs + 9 category runs at ~67-80 min), plus
# ~6 min of closed-loop evaluation per run (50 scenes x 3 splits, ~2 min per 50 scenes with 2 workers, measured
# in `make policy`) and ~10 min of data collection / ETC building. On a GPU much less (not measured here); the
# closed-loop rollouts stay on CPU worker processes (WORKERS).
#
# What it does (everything under $OUT; a rerun resumes: existing data is kept, finished trainings are skipped and
# their evaluations reused):
#  1. $EPISODES scripted-expert pick_up demonstrations, split train, seed 0: the only actions any variant trains on
#     (the same scenes as the working policy's runs/data/pickup);
#  2. $OOD_EPISODES pick_up scenes of each OOD split (ood_color, ood_distractor, ood_phrase; seed 1) in a separate
#     dataset: only their ETC is used (Stage 3 of three_stage_ood), never their actions; pick_up has no place
#     target, so there is no ood_combo (the ablation lists it as skipped);
#  3. $VAL_EPISODES held-out demonstrations (seed 5, as runs/data/pickup_val) for the offline action / ETC metrics;
#  4. ETC built from each of the three datasets (etc-vla etc build);
#  5. etc-vla ablate: seeds 0,1,2; action_only, etc_stage2, three_stage, three_stage_ood, then etc_scene_grounding,
#     etc_task_oriented, etc_action_planning; $EVAL_EPISODES seeded scenes per split (train + the three OOD splits)
#     and seed; closed-loop success pooled over seeds with 95 % Wilson intervals -> $OUT/ablation.md / .json.
# Env vars: OUT (runs/ablation_pickup), EPISODES (1200), OOD_EPISODES (200 per split), VAL_EPISODES (60),
# SEEDS (0,1,2), VARIANTS (pathway,categories), EVAL_EPISODES (50), WORKERS (2; e.g. 12 on a 16-core GPU machine).
# Extra arguments go to `etc-vla ablate`: its options first, then recipe overrides key=value (e.g. run.device=cuda).
source "$(dirname "$0")/research_env.sh"   # repo root, PY, cli, stream, headless GL, passive OpenMP
OUT="${OUT:-runs/ablation_pickup}"
EPISODES="${EPISODES:-1200}"
OOD_EPISODES="${OOD_EPISODES:-200}"
VAL_EPISODES="${VAL_EPISODES:-60}"
SEEDS="${SEEDS:-0,1,2}"
VARIANTS="${VARIANTS:-pathway,categories}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
WORKERS="${WORKERS:-2}"
D="$OUT/data"
mkdir -p "$D"

# 1-3. demonstrations: train (actions + ETC), OOD scenes (ETC only), held-out (metrics); a finished collection
# leaves its summary JSON (delete the dataset and the JSON to collect again)
collect() {  # split seed episodes dataset tag
  if [ ! -f "$D/collect_$5.json" ]; then
    cli sim collect --split "$1" --seed "$2" --episodes "$3" --out "$4" --workers "$WORKERS" --no-progress \
      --json "$D/collect_$5.json" 'families=[pick_up]'
  fi
}
collect train 0 "$EPISODES" "$D/pickup" train
for split in ood_color ood_distractor ood_phrase; do
  collect "$split" 1 "$OOD_EPISODES" "$D/pickup_ood" "$split"
done
collect train 5 "$VAL_EPISODES" "$D/pickup_val" val

# 4. ETC of each dataset (the record's split is its episode's: train / ood_* / train)
for name in pickup pickup_ood pickup_val; do
  etc="$D/etc${name#pickup}"
  [ -f "$etc/index.json" ] || cli etc build --episodes "$D/$name" --out "$etc" --workers "$WORKERS" overlays=0
done

# 5. the ablation
cli ablate --config config/ablation_pickup.yaml --out "$OUT" --seeds "$SEEDS" --variants "$VARIANTS" \
  --budget total --episodes "$EVAL_EPISODES" --splits all --family pick_up --workers "$WORKERS" \
  --ood-etc "$D/etc_ood" --etc-eval "$D/etc_val" --etc-eval-splits train \
  --val-data "$D/pickup_val" --val-split train --no-progress \
  "$@" "data.episodes=$D/pickup" "data.etc=$D/etc" 2>&1 | tee -a "$OUT/ablate.log"
