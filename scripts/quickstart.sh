#!/usr/bin/env bash
# Set up, then run the main job: train, prune, distill and INT8 a CNN on Fashion-MNIST for ONNX Runtime (CPU).
# The same set-up as scripts/test.sh (LiteRT included), so the main job's table does not depend on which ran first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/compress run --target cpu --out "${1:-runs/fashion}"
