#!/usr/bin/env bash
# GPU certification throughput on a machine with an NVIDIA GPU, against the CPU path and a
# PyTorch CUDA implementation of the same computation, in one run (see results/gpu/README.md).
#
# Expects, beside the repository (built elsewhere, x86_64):
#   .dev/gpu_certify_bench     cargo build --release -p certify-cli --example gpu_certify_bench
#   .dev/mnist-paper-base.onnx ../shared/models/mnist-paper-base.onnx
#   .gl/*.deb                  the Vulkan loader (apt-get download libvulkan1), when the machine lacks it
# Writes its logs to $OUT (default ./gpu-bench-out).
set -uo pipefail
OUT="${OUT:-gpu-bench-out}"
mkdir -p "$OUT"
. "$(dirname "$0")/device-vulkan-env.sh"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu cores: $(nproc)"
} 2>&1 | tee "$OUT/machine.txt"
N="${N:-1000}"
for model in .dev/mnist-paper-base.onnx examples/models/mnist-convnet-maxpool.onnx; do
  name=$(basename "$model" .onnx)
  echo "== certify-gpu vs certify-cpu: $name, $N inputs"
  timeout 240 .dev/gpu_certify_bench "$model" examples/data/mnist-1k "$N" 64 256 2>&1 | tee "$OUT/certify-$name.txt"
  echo "== PyTorch CUDA: $name, $N inputs"
  timeout 120 python3 scripts/torch_certify_bench.py "$model" examples/data/mnist-1k/t10k-images-idx3-ubyte.gz "$N" 256 \
    --check "$OUT/torch-$name-values.json" 2>&1 | tee "$OUT/torch-$name.txt"
done
