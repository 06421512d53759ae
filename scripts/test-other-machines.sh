#!/usr/bin/env bash
# The test suite as other machines see it, on this one: oneDNN held to a lower instruction set (the kernels of another
# x86 CPU class) and/or a CPU burner on every core (a loaded machine). CI runs the plain suite (scripts/test.sh).
#   bash scripts/test-other-machines.sh avx2 [pytest args]         ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2-only CPU)
#   bash scripts/test-other-machines.sh avx512 [pytest args]       ONEDNN_MAX_CPU_ISA=AVX512_CORE (AVX-512, no VNNI/AMX)
#   bash scripts/test-other-machines.sh load [pytest args]         a busy loop on every core while the suite runs
#   bash scripts/test-other-machines.sh avx2+load [pytest args]    both
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?give avx2, avx512, load or a combination such as avx2+load}"; shift
case "$mode" in *avx2*) export ONEDNN_MAX_CPU_ISA=AVX2 ;; *avx512*) export ONEDNN_MAX_CPU_ISA=AVX512_CORE ;; esac
burners=()
if [[ "$mode" == *load* ]]; then
  for _ in $(seq "$(nproc)"); do python3 -c "while True: pass" & burners+=($!); done
fi
trap '[ ${#burners[@]} -eq 0 ] || kill "${burners[@]}" 2>/dev/null || true' EXIT
echo "ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}, burners: ${#burners[@]}" >&2
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
