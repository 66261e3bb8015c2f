#!/usr/bin/env bash
# GPU training (certify harden --device gpu) on a machine with an NVIDIA GPU, against the CPU path
# and a PyTorch CUDA implementation of the same step, in one run (see results/gpu/README.md).
#
# Expects, beside the repository (built elsewhere, x86_64; gzip'd to fit the transfer):
#   .dev/certify.gz            strip of target/release/certify
#   .dev/gpu_harden_bench.gz   strip of cargo build --release -p certify-cli --example gpu_harden_bench
#   .dev/gpu_tests.gz          strip of certify-gpu's test binary (cargo test --release -p certify-gpu --no-run)
#   .dev/mnist-paper-base.onnx ../shared/models/mnist-paper-base.onnx
#   .dev/mnist-train/          ../shared/data/mnist/train-{images-idx3,labels-idx1}-ubyte.gz
#   .gl/*.deb, .gl/extra/*.deb the Vulkan loader and X libraries (see device-gpu-bench.sh)
# Writes its logs to $OUT (default ./harden-bench-out). BUDGET (seconds, default 500) bounds the
# optional last part, a 900-step run of the CPU recipe on the GPU.
set -uo pipefail
OUT="${OUT:-harden-bench-out}"
BUDGET="${BUDGET:-500}"
mkdir -p "$OUT"
. "$(dirname "$0")/device-vulkan-env.sh"
for f in certify gpu_harden_bench gpu_tests; do
  gunzip -c ".dev/$f.gz" > "/tmp/$f" && chmod +x "/tmp/$f"
done
MODEL=.dev/mnist-paper-base.onnx
TRAIN=.dev/mnist-train
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu cores: $(nproc)"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUT/machine.txt"

echo "== certify-gpu tests on this GPU (REQUIRE_GPU=1: kernels, training steps vs CPU)"
REQUIRE_GPU=1 timeout 120 /tmp/gpu_tests 2>&1 | grep -v XDG_RUNTIME | tail -30 | tee "$OUT/gpu-tests.txt"

echo "== one exact-penalty step, batch 500: GPU vs CPU (all cores)"
timeout 90 /tmp/gpu_harden_bench "$MODEL" examples/data/mnist-1k 500 10 3 exact 2>&1 | grep -v XDG_RUNTIME | tee "$OUT/step-exact.txt"

echo "== PyTorch CUDA: self-check, then one epoch of the exact step by each method, plain and projection steps"
TORCH=(python3 scripts/torch_harden_bench.py "$MODEL" "$TRAIN/train-images-idx3-ubyte.gz" "$TRAIN/train-labels-idx1-ubyte.gz" --device cuda)
timeout 60 "${TORCH[@]}" --self-check 2>&1 | tail -3 | tee "$OUT/torch-self-check.txt"
for method in replicate loop batched; do
  timeout 90 "${TORCH[@]}" --epochs 1 --batch 500 --lambda 0.1 --lr 1e-4 --dropout 0.5 --penalty exact --method "$method" 2>/dev/null \
    | tail -1 | tee "$OUT/torch-epoch-$method.json"
done
for pen in none projections:1; do
  timeout 45 "${TORCH[@]}" --steps 40 --batch 500 --lambda 0.1 --lr 1e-4 --dropout 0.5 --penalty "$pen" 2>/dev/null \
    | tail -1 | tee "$OUT/torch-steps-${pen%%:*}.json"
done

echo "== certify harden --device gpu, exact penalty, one epoch"
start=$SECONDS
timeout 200 /tmp/certify harden "$MODEL" --data "$TRAIN" --out /tmp/epoch.onnx --epochs 1 --batch 500 --lambda 0.1 \
  --lr 1e-4 --dropout 0.5 --penalty exact --seed 0 --device gpu --val examples/data/mnist-1k --val-every 40 --json 2>&1 \
  | grep -v XDG_RUNTIME | tr '\r' '\n' | grep -v '^\s*$' | tail -8 | tee "$OUT/harden-epoch.txt"
epoch_s=$((SECONDS - start))
timeout 60 /tmp/certify /tmp/epoch.onnx --data examples/data/mnist-1k --attacks deepfool --json 2>/dev/null | tail -1 > "$OUT/epoch.eval1k.json"

echo "== projection step (1 per sample), batch 500: GPU vs CPU"
timeout 60 /tmp/gpu_harden_bench "$MODEL" examples/data/mnist-1k 500 20 3 projections:1 2>&1 | grep -v XDG_RUNTIME | tee "$OUT/step-proj.txt"

left=$((BUDGET - SECONDS))
echo "== elapsed ${SECONDS}s, epoch ${epoch_s}s, ${left}s left"
if [ "$epoch_s" -gt 0 ] && [ $((epoch_s * 8 + 40)) -lt "$left" ]; then
  echo "== the CPU recipe's 900 steps on the GPU (results/paper-mnist/jacobian-900.*)"
  timeout $((left - 30)) /tmp/certify harden "$MODEL" --data "$TRAIN" --out /tmp/j900.onnx --steps 900 --batch 500 --lambda 0.1 \
    --lr 1e-4 --dropout 0.5 --penalty exact --seed 0 --device gpu --val examples/data/mnist-1k --val-every 100 --json 2>&1 \
    | grep -v XDG_RUNTIME | tr '\r' '\n' | grep -E 'step [0-9]+:|summary|error' | tee "$OUT/harden-900.txt"
  timeout 25 /tmp/certify /tmp/j900.onnx --data examples/data/mnist-1k --attacks deepfool --json 2>/dev/null | tail -1 > "$OUT/j900.eval1k.json"
fi
echo "== done in ${SECONDS}s"
