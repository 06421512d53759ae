#!/usr/bin/env bash
# Set up, then run the test suite (CPU only; GPU / TensorRT / TFLite tests skip with a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
