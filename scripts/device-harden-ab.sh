#!/usr/bin/env bash
# GPU training step, A/B of two builds of gpu_harden_bench on one warm GPU (interleaved), with the
# device time of every kernel (CERTIFY_GPU_PROFILE=1), PyTorch CUDA's exact and projection steps
# measured in the same run, and, when time is left, one epoch of `certify harden --device gpu`
# and the paper recipe with the exact penalty on the GPU (scripts/paper-recipe.sh).
#
# Expects, beside the repository (built elsewhere, x86_64; gzip'd stripped binaries):
#   .dev/ghb_old.gz, .dev/ghb_new.gz  gpu_harden_bench of the two builds
#   .dev/gpu_tests.gz                 certify-gpu's test binary (cargo test --release -p certify-gpu --no-run)
#   .dev/certify.gz                   target/release/certify of the new build
#   .dev/mnist-paper-base.onnx        ../shared/models/mnist-paper-base.onnx
#   .dev/mnist-train/                 ../shared/data/mnist/{train,t10k}-*.gz
#   .gl/*.deb, .gl/extra/*.deb        the Vulkan loader and X libraries (see device-vulkan-env.sh)
# Writes two files to $OUT (default ./harden-ab-out; the device tool returns only a few files):
# log.txt (everything but the recipe) and recipe.txt (the recipe's output and its JSON files).
# BUDGET (seconds, default 540) bounds the run; the optional parts start only when they fit.
# QUICK=1 leaves out the old build's kernel profile and PyTorch's `batched` formulation.
set -uo pipefail
OUT="${OUT:-harden-ab-out}"
BUDGET="${BUDGET:-540}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
. "$(dirname "$0")/device-vulkan-env.sh"
for f in ghb_old ghb_new gpu_tests certify; do
  gunzip -c ".dev/$f.gz" > "/tmp/$f" && chmod +x "/tmp/$f"
done
MODEL=.dev/mnist-paper-base.onnx
DATA=.dev/mnist-train
quiet() { grep -v XDG_RUNTIME; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu cores: $(nproc)"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1

echo "== certify-gpu tests on this GPU (REQUIRE_GPU=1)"
REQUIRE_GPU=1 timeout 120 /tmp/gpu_tests 2>&1 | quiet | grep -E "^test |test result|panicked"

echo "== A/B, exact penalty, batch 500 (interleaved)"
for round in 1 2; do
  for b in ghb_old ghb_new; do
    echo "== $b exact (round $round)"
    timeout 60 "/tmp/$b" "$MODEL" examples/data/mnist-1k 500 10 0 exact 2>&1 | quiet
  done
done
for b in ghb_old ghb_new; do
  echo "== $b projections:1"
  timeout 60 "/tmp/$b" "$MODEL" examples/data/mnist-1k 500 20 0 projections:1 2>&1 | quiet
done

echo "== device time per kernel"
builds=(ghb_old ghb_new)
[ "${QUICK:-0}" = 1 ] && builds=(ghb_new)
for b in "${builds[@]}"; do
  for pen in exact projections:1; do
    echo "== $b $pen"
    CERTIFY_GPU_PROFILE=1 timeout 60 "/tmp/$b" "$MODEL" examples/data/mnist-1k 500 5 0 "$pen" 2>&1 | quiet
  done
done

echo "== PyTorch CUDA, same machine: one epoch of the exact step (two formulations), projection steps"
TORCH=(python3 scripts/torch_harden_bench.py "$MODEL" "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz" --device cuda)
methods=(loop batched)
[ "${QUICK:-0}" = 1 ] && methods=(loop)
for method in "${methods[@]}"; do
  timeout 90 "${TORCH[@]}" --epochs 1 --batch 500 --lambda 0.1 --lr 1e-4 --dropout 0.5 --penalty exact --method "$method" 2>/dev/null \
    | tail -1
done
timeout 45 "${TORCH[@]}" --steps 40 --batch 500 --lambda 0.1 --lr 1e-4 --dropout 0.5 --penalty projections:1 2>/dev/null \
  | tail -1

echo "== certify harden --device gpu, exact penalty, one epoch (new build)"
start=$SECONDS
timeout 120 /tmp/certify harden "$MODEL" --data "$DATA/train-images-idx3-ubyte.gz" --out /tmp/epoch.onnx --epochs 1 --batch 500 \
  --lambda 0.1 --lr 1e-4 --dropout 0.5 --penalty exact --seed 0 --device gpu --val examples/data/mnist-1k --val-every 40 --json 2>&1 \
  | quiet | tr '\r' '\n' | grep -v '^\s*$' | tail -4
epoch_s=$((SECONDS - start))
left=$((BUDGET - SECONDS))
echo "== elapsed ${SECONDS}s, epoch ${epoch_s}s, ${left}s left"
# The recipe trains 1,500 steps (12.5 epochs) and evaluates two models on 16 cores.
if [ "$epoch_s" -gt 0 ] && [ $((epoch_s * 13 + 60)) -lt "$left" ]; then
  echo "== scripts/paper-recipe.sh with the exact penalty on the GPU"
  DEVICE=gpu PENALTY=exact THREADS="$(nproc)" CERTIFY=/tmp/certify BASE="$MODEL" \
    TRAIN="$DATA/train-images-idx3-ubyte.gz" TEST="$DATA/t10k-images-idx3-ubyte.gz" \
    timeout $((left - 10)) scripts/paper-recipe.sh /tmp/recipe-gpu-exact 2>&1 | quiet | tail -5
  for f in /tmp/recipe-gpu-exact/*.json /tmp/recipe-gpu-exact/commands.txt; do
    echo "== $f"
    cat "$f"
  done > "$OUT/recipe.txt"
fi
echo "== done in ${SECONDS}s"
