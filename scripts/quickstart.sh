#!/usr/bin/env bash
# Set up, then run the main job: train, prune, distill and INT8 a CNN on Fashion-MNIST for ONNX Runtime (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" bash scripts/setup.sh  # the CNN job needs the core pins only
exec .venv/bin/compress run --target cpu --out "${1:-runs/fashion}"
