#!/usr/bin/env bash
# Issue 17, item 3 (ETC Fig. 4b) on the retentive ablation's policies (scripts/etc_ablation_cpu.sh): the attention
# of the action prediction of every s3_* policy (3 seeds each) on the same scenes as its closed-loop evaluation
# (seed 1000 + training seed, 50 per split), then with vs without OOD ETC: s3_etc_ood and s3_action_only against
# s3_etc, paired on the same scenes. Writes OUT/attention/<variant>_seed<s>/ and OUT/attention/compare.{md,json}.
source "$(dirname "$0")/research_env.sh"   # repo root, PY, cli, stream, headless GL, passive OpenMP
OUT="${OUT:-runs/abl17_retentive}"
SEEDS="${SEEDS:-0 1 2}"
VARIANTS="${VARIANTS:-s3_action_only s3_etc s3_etc_ood}"
A="$OUT/attention"
mkdir -p "$A"
one() {  # variant seed
  local d="$A/$1_seed$2"
  [ -f "$d/report.json" ] || cli analyze attention --checkpoint "$OUT/$1/seed$2/stage3/final" \
    --out "$d" --splits train,ood_color,ood_distractor,ood_phrase --scenes 50 --seed $((1000 + $2)) --overlays 4 \
    --outcomes "$OUT/$1/seed$2/eval/eval.json" --threads 1 --no-progress > "$d.log" 2>&1
}
n=0
for v in $VARIANTS; do
  for s in $SEEDS; do
    one "$v" "$s" &
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then wait; fi  # two at a time (one per core)
  done
done
wait
runs() { local out=""; for s in $SEEDS; do out="$out,$A/$1_seed$s"; done; echo "${out#,}"; }
args=()
for v in $VARIANTS; do args+=(--runs "$v=$(runs "$v")"); done
cli analyze attention-compare "${args[@]}" --reference s3_etc --out "$A"
