# Sourced by scripts/paper-mnist.sh and scripts/paper-recipe.sh (not run on its own): moves to
# the repository root and names the shared inputs of the paper's MNIST experiments, and OUT,
# the caller's first argument (default results/paper-mnist).
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Each can be set in the environment instead (e.g. on a machine without ../shared).
SHARED=${SHARED:-../shared}
BASE=${BASE:-$SHARED/models/mnist-paper-base.onnx}
TRAIN=${TRAIN:-$SHARED/data/mnist/train-images-idx3-ubyte.gz}
TEST=${TEST:-$SHARED/data/mnist/t10k-images-idx3-ubyte.gz}
OUT=${1:-results/paper-mnist}
