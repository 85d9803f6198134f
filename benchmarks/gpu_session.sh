#!/usr/bin/env bash
# Everything a session with a lent GPU checks, in one call (issue 19): the gpu-marked tests (sync
# checks included), a two-phase training run on --device cuda, and the GPU benchmarks. Run from the
# repository root on the GPU machine after ../shared/gpu/install.sh; logs go to $OUT (or /tmp/out).
# Each step has its own time limit so that one slow step cannot eat the others' device time; the
# limits of `all` add up to 590 s, under the device tool's 600 s a call.
# `evidence` (issue 15: the full image grid, timed) is a call of its own: `all` fills one call.
#   bash benchmarks/gpu_session.sh [tests|train|bench|all|evidence]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -f /tmp/site/env.sh ] && source /tmp/site/env.sh
export DALAUG_CACHE=/tmp/dalaug-cache
what=${1:-all}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, print its tail
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch, nvidia.dali as d; print('torch', torch.__version__, '| DALI', d.__version__)"
  python -c "import triton; print('triton', triton.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [ "$what" = tests ] || [ "$what" = all ]; then
  step pytest-gpu "${TESTS_S:-180}" python -m pytest -m gpu -q -n 8 -p no:cacheprovider --maxfail=30 tests
fi
if [ "$what" = train ] || [ "$what" = all ]; then
  # The embedded default (digits): augmented epochs, then refinement, on this GPU.
  step train-cuda "${TRAIN_S:-90}" python -m train --device cuda --epochs 4 --out /tmp/run-cuda
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  step bench-ops "${OPS_S:-120}" python -m benchmarks.bench_ops
  step bench-gpu "${GPU_S:-200}" python -m benchmarks.bench_gpu
  cp BENCHMARKS.md "$OUT/"
fi
if [ "$what" = evidence ]; then
  # 40 short runs; several share the GPU (each run is far from filling it).
  step evidence "${EVIDENCE_S:-560}" python -m benchmarks.evidence --device cuda --workers "${EVIDENCE_WORKERS:-6}"
  cp EXPERIMENTS.md EXPERIMENTS.png "$OUT/" 2>/dev/null
fi
