#!/usr/bin/env bash
# One-shot GPU benchmark (issue 16): < 8 minutes on one modern GPU, one JSON in benchmarks/results/.
#   bash benchmarks/gpu.sh                 # on the GPU machine, from anywhere
#   bash benchmarks/gpu.sh --dry-run       # the same code paths on CPU with tiny networks
# Extra arguments go to benchmarks/gpu.py (e.g. --budget 400, --sections phases,bf16_run).
# gpu.py builds on the speed benchmarks' harness (harness.py, phase_steps.py, speed_peak.py): they travel with it.
# The JSON is rewritten after every section, so a run stopped by the time limit keeps what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
out="benchmarks/results/gpu_$(date -u +%Y%m%dT%H%M%SZ).json"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
fi
# hard stop at 470 s (the script's own budget is 450 s; a long torch.compile is the one thing it cannot cut)
timeout --signal=INT 470 python benchmarks/gpu.py --out "$out" "$@" || echo "gpu.py stopped early (exit $?); partial results in $out"
echo "results: $out"
