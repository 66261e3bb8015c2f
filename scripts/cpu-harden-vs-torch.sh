#!/usr/bin/env bash
# CPU training step of certify against PyTorch, measured in the same run: the paper's MNIST
# network, 500 MNIST training images per step, Adam, dropout 0.5, λ 0.1, 2 threads each.
# Rounds alternate the two (PyTorch, then certify, penalty by penalty), so that this 2-core
# machine's drift (10–50% within an hour) hits both alike; every line is one median.
#
#   TORCH_PYTHON=/path/to/venv/bin/python scripts/cpu-harden-vs-torch.sh [ROUNDS] [STEPS]
#
# TORCH_PYTHON: a Python with torch (CPU use only; e.g. `python3 -m venv v && v/bin/pip install
# torch==2.15.0 onnx numpy`). PENALTIES (default "none projections:1 exact"); exact runs
# min(STEPS, 3) steps. certify's side is the step timer (cli/examples/step_timing.rs), built
# here in release; PyTorch's is scripts/torch_harden_bench.py (the ONNX graph interpreted with
# torch ops, double backprop, `--method loop`: one forward, K or P vector-Jacobian products).
# Needs ../shared (model and data). Prints one table row per round and penalty with the ratio
# PyTorch / certify (> 1: certify faster).
set -euo pipefail
ROUNDS="${1:-3}"
STEPS="${2:-7}"
PENALTIES="${PENALTIES:-none projections:1 exact}"
PY="${TORCH_PYTHON:?set TORCH_PYTHON to a python that has torch}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$ROOT/../shared"
MODEL="$SHARED/models/mnist-paper-base.onnx"
IMAGES="$SHARED/data/mnist/train-images-idx3-ubyte.gz"
LABELS="$SHARED/data/mnist/train-labels-idx1-ubyte.gz"
for f in "$MODEL" "$IMAGES" "$LABELS"; do
  [ -f "$f" ] || { echo "cpu-harden-vs-torch: missing $f (needs ../shared)" >&2; exit 2; }
done
"$PY" -c 'import torch, onnx' || { echo "cpu-harden-vs-torch: $PY lacks torch or onnx" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p certify-cli --example step_timing)
TIMER="$ROOT/target/release/examples/step_timing"

echo "# $(date -u '+%F %T UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "# certify $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty'), $("$PY" -c 'import torch; print("torch", torch.__version__)')"
echo "| round | step | PyTorch median s | certify median s | PyTorch / certify |"
echo "|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for pen in $PENALTIES; do
    steps="$STEPS"
    [ "$pen" = exact ] && steps=$((STEPS < 3 ? STEPS : 3))
    torch_s=$("$PY" "$ROOT/scripts/torch_harden_bench.py" "$MODEL" "$IMAGES" "$LABELS" --device cpu --threads 2 \
      --penalty "$pen" --method loop --steps "$steps" --warmup 1 2>/dev/null |
      "$PY" -c 'import json, sys; print("%.3f" % json.loads(sys.stdin.read())["median_step_s"])')
    ours=$(RAYON_NUM_THREADS=2 "$TIMER" "${pen/none/plain}" "$steps")
    ours_s=$(echo "$ours" | sed -E 's/.*median ([0-9.]+) s.*/\1/')
    ratio=$("$PY" -c "print('%.2f' % ($torch_s / $ours_s))")
    echo "| $round | ${pen/none/plain} | $torch_s | $ours_s | ${ratio}× |"
  done
done
