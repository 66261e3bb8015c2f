#!/usr/bin/env bash
# The paper's Table 2 on MNIST, as certify produces it: post-train the paper's network
# (../shared/models/mnist-paper-base.onnx, 99.10%) with each defence, then measure test accuracy
# (all 10,000 test images), ρ̂_adv (DeepFool, first 1,000) and FGSM accuracy per ε (first 1,000).
#
#   scripts/paper-mnist.sh [OUT_DIR]        (default results/paper-mnist)
#
# Environment: CERTIFY (the binary; default target/release/certify, built if missing),
# STEPS (300), LR (1e-4), ONLY (space-separated row names to run; default all).
# Then: python3 scripts/table2.py OUT_DIR
set -euo pipefail
# shellcheck source=scripts/paper-paths.sh
source "$(dirname "$0")/paper-paths.sh"
STEPS=${STEPS:-300}
LR=${LR:-1e-4}
CERTIFY=${CERTIFY:-target/release/certify}
[ -x "$CERTIFY" ] || cargo build --release -p certify-cli
mkdir -p "$OUT"

# The paper's recipe: Adam, mini-batches of 500, dropout 0.5 before the last layer, λ = 0.1 for
# the Jacobian penalty (mean CE + λ·sqrt(mean ‖J‖²)); adversarial examples by DeepFool, 10% of
# each mini-batch for adversarial training alone and 20% with the Jacobian penalty (the best
# proportions of the paper's Tables 7 and 8).
common=(--data "$TRAIN" --batch 500 --steps "$STEPS" --lr "$LR" --dropout 0.5 --seed 0 --threads "${THREADS:-2}" --json -q)
declare -A ROW=(
  [adversarial]="--regularizer none --adversarial deepfool:0.1"
  [input-gradient]="--regularizer input-gradient --lambda ${IG_LAMBDA:-1}"
  [input-gradient-at]="--regularizer input-gradient --lambda ${IG_LAMBDA:-1} --adversarial deepfool:0.1"
  [jacobian]="--regularizer jacobian --lambda 0.1 --penalty exact"
  [jacobian-at]="--regularizer jacobian --lambda 0.1 --penalty ${JAT_PENALTY:-exact} --adversarial deepfool:0.2"
)
ORDER=(jacobian adversarial input-gradient input-gradient-at jacobian-at)
for name in ${ONLY:-${ORDER[@]}}; do
  echo "== $name: certify harden $BASE --out $OUT/$name.onnx ${common[*]} ${ROW[$name]}" | tee -a "$OUT/commands.txt"
  # shellcheck disable=SC2086
  "$CERTIFY" harden "$BASE" --out "$OUT/$name.onnx" "${common[@]}" ${ROW[$name]} > "$OUT/$name.train.json"
done
[ -n "${NO_EVAL:-}" ] && exit 0
for name in base ${ONLY:-${ORDER[@]}}; do
  model=$OUT/$name.onnx
  [ "$name" = base ] && model=$BASE
  echo "== evaluate $name" | tee -a "$OUT/commands.txt"
  "$CERTIFY" "$model" --data "$TEST" --attacks none --json -q --threads "${THREADS:-2}" | tail -n 1 > "$OUT/$name.eval10k.json"
  "$CERTIFY" "$model" --data "$TEST" --limit 1000 --attacks deepfool,fgsm --eps 0.05,0.1,0.2,0.3 --json -q --threads "${THREADS:-2}" \
    | tail -n 1 > "$OUT/$name.eval1k.json"
done
python3 scripts/table2.py "$OUT" | tee "$OUT/table2.md"
