#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The CUDA trainer on the GPU machine (the `run` tool, carry [".debs"]): configure through
# run_device_checks.sh (which unpacks the carried .debs into a scratch prefix), build only the CUDA
# tests, the training benchmark and the CLI, then run the training tests, the benchmark
# (tokens/s) and a short `retnet train --device cuda-bf16` on tinyshakespeare. Logs go to $OUT.
# Usage: OUT=$OUT scripts/gpu/run_train_checks.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

CONFIGURE_ONLY=1 OUT="$OUT" BUILD="$BUILD" "$ROOT/scripts/gpu/run_device_checks.sh" || { log "configure FAILED"; exit 1; }
T0=$(date +%s)
cmake --build "$BUILD" -j16 --target retnet_cuda_tests retnet_cuda_train_bench retnet >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -60; log "build FAILED"; exit 1; }
log "build: $(( $(date +%s) - T0 )) s"

timeout 300 "$BUILD/bin/retnet_cuda_tests" --gtest_filter="${TEST_FILTER:-*Train*}" >"$OUT/train_tests.log" 2>&1
TEST_RC=$?
grep -E "^\[(ms|bf|tf|fp|pa|ch)|loss|PASSED|FAILED|SKIPPED|tests ran" "$OUT/train_tests.log" | tee -a "$OUT/summary.txt"
log "training tests exit $TEST_RC"

timeout ${BENCH_TIMEOUT:-150} "$BUILD/bin/retnet_cuda_train_bench" ${BENCH_ARGS:-32 256 10} >"$OUT/train_bench.log" 2>&1
log "bench exit $?"
cat "$OUT/train_bench.log" | tee -a "$OUT/summary.txt"

if [ -z "${SKIP_CLI:-}" ]; then
  rm -rf /tmp/retnet-train-run
  timeout ${CLI_TIMEOUT:-90} "$BUILD/bin/retnet" train --data "$ROOT/resources/data/tinyshakespeare.txt" \
    --config "$ROOT/tools/default_model_config.json" --tokenizer "$ROOT/resources/models/default/tokenizer.model" \
    --out /tmp/retnet-train-run --device cuda-bf16 --steps 300 --batch 32 --seq-len 256 --lr 2e-3 --warmup 20 \
    --eval-every 100 --save-every 0 --log-every 50 >"$OUT/cli_train.log" 2>&1
  log "retnet train --device cuda-bf16 exit $?"
  tail -15 "$OUT/cli_train.log" | tee -a "$OUT/summary.txt"
fi
exit $TEST_RC
