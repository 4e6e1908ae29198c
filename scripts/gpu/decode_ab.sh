#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# A/B of the decoding step in one call on the GPU machine: this tree against an earlier commit, both
# built there, on the same 1.3B-shaped weights, the trees alternating (ratios come from one run,
# so a slower card or a warm-up does not pass for a change). Prepare here:
#   REV=main; git archive --format=tar.gz $REV $(git ls-tree --name-only $REV | grep -v -E '^(docs|resources)$') \
#     resources/data > .device/base.tgz          # the tree without its docs and bundled model (~2.5 MB)
# then, with the `run` tool, carry [".debs", ".device"] (.debs: see run_device_checks.sh), command
#   OUT=$OUT BASE_TGZ=.device/base.tgz scripts/gpu/decode_ab.sh
# Steps: this tree's CUDA tests (NO_TESTS=1 skips them), the per-op tables (`retnet_cuda_bench 24 ops
# $OPS_ROWS`, default 1,16) of both trees side by side, then `retnet bench --mode decode` at batches
# $BATCHES (default 1,16,64), ROUNDS rounds (default 3), each tree once a round. Without BASE_TGZ only
# this tree is measured. THIS_ALT="args" also runs this tree's bench with those arguments added, each
# round ("this+alt"); THIS_ENVS="VAR=value VAR=other" runs this tree's bench once more a round under
# each setting ("this[VAR=value]"), for knobs read from the environment. KERNELS=N first times the
# retention kernels (`retnet_cuda_bench 1 kernels`, the issue's shapes, forward and forward +
# backward) of both trees, alternating, N rounds; PREFILL=N
# N rounds of the 24-layer chunkwise prefill at 2048 and 8192 tokens (`retnet_cuda_bench 24
# prefill`, bf16 weights, random 1.3B-shaped model), the trees alternating; ROUNDS=0 and
# OPS_ROWS= (empty) skip the decoding bench and the per-op tables. $OUT gets summary.txt and
# all-logs.tgz. About 5 minutes, plus the start.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=/tmp/retnet-build BASE=/tmp/base-src BASE_BUILD=/tmp/base-build MODEL=/tmp/anchor-model
OPS_ROWS=${OPS_ROWS-1,16} BATCHES=${BATCHES:-1,16,64} ROUNDS=${ROUNDS:-3} KERNELS=${KERNELS:-0} PREFILL=${PREFILL:-0}
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "== $(date +%T) (+$(( $(date +%s) - T0 )) s) $*" | tee -a "$OUT/summary.txt"; }
log "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"

CONFIGURE_ONLY=1 OUT="$OUT" BUILD="$BUILD" "$ROOT/scripts/gpu/run_device_checks.sh" >"$OUT/configure.log" 2>&1 \
  || { tail -20 "$OUT/configure.log"; log "configure FAILED"; exit 1; }
TREES=("$BUILD")
if [ -n "${BASE_TGZ:-}" ]; then
  rm -rf "$BASE" && mkdir -p "$BASE" && tar -xzf "$ROOT/$BASE_TGZ" -C "$BASE" || { log "cannot unpack $BASE_TGZ"; exit 1; }
  cp -r "$ROOT/.debs" "$BASE/.debs"
  ( CONFIGURE_ONLY=1 OUT="$OUT/base" BUILD="$BASE_BUILD" SCRATCH=/tmp/base-deps "$BASE/scripts/gpu/run_device_checks.sh" \
      >"$OUT/base-configure.log" 2>&1 \
    && cmake --build "$BASE_BUILD" -j8 --target retnet retnet_cuda_bench >"$OUT/base-build.log" 2>&1 ) &
  BASE_PID=$!
  TREES+=("$BASE_BUILD")
fi
export LD_LIBRARY_PATH="/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu:/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$BUILD" -j10 --target retnet retnet_cuda_tests retnet_cuda_bench >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -30; log "build FAILED"; exit 1; }
log "built"
if [ -n "${BASE_TGZ:-}" ]; then
  wait "$BASE_PID" || { tail -20 "$OUT/base-build.log"; log "base build FAILED"; exit 1; }
  log "base built"
fi

if [ -z "${NO_TESTS:-}" ]; then
  timeout 200 "$BUILD/bin/retnet_cuda_tests" --gtest_brief=1 >"$OUT/cuda_tests.log" 2>&1
  log "cuda tests: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/cuda_tests.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]" "$OUT/cuda_tests.log" | head -10 | tee -a "$OUT/summary.txt"
fi

name() { [ "$1" = "$BUILD" ] && echo this || echo base; }
for round in $(seq 1 "$KERNELS"); do
  for t in "${TREES[@]}"; do
    log "retention kernels round $round, $(name "$t"):"
    timeout 120 "$t/bin/retnet_cuda_bench" 1 kernels 2>&1 | grep -E "^retention kernels" | tee -a "$OUT/summary.txt"
  done
done
for round in $(seq 1 "$PREFILL"); do
  for t in "${TREES[@]}"; do
    log "prefill round $round, $(name "$t"): $(timeout 150 "$t/bin/retnet_cuda_bench" 24 prefill 2>&1 | grep -E "^prefill" \
      | sed 's/prefill L 24 //' | tr '\n' ' ')"
  done
done
if [ -n "$OPS_ROWS" ]; then
  for t in "${TREES[@]}"; do timeout 90 "$t/bin/retnet_cuda_bench" 24 ops "$OPS_ROWS" >"$OUT/ops-$(name "$t").log" 2>&1; done
  log "per op, µs (this tree | base):"
  if [ -n "${BASE_TGZ:-}" ]; then
    paste "$OUT/ops-this.log" "$OUT/ops-base.log" | grep -E "op M=" | awk -F'\t' '{print $1 " | " substr($2, 40)}' | tee -a "$OUT/summary.txt"
  else
    grep -E "op M=" "$OUT/ops-this.log" | tee -a "$OUT/summary.txt"
  fi
fi

finish() {
  log "done"
  cd "$OUT" && tar czf all-logs.tgz --exclude=all-logs.tgz --exclude=summary.txt ./* 2>/dev/null
  find "$OUT" -mindepth 1 -maxdepth 1 ! -name all-logs.tgz ! -name summary.txt -exec rm -rf {} +
  exit 0
}
[ "$ROUNDS" -gt 0 ] || finish
rm -rf "$MODEL"
timeout 150 "$BUILD/bin/retnet" init --config "$ROOT/tools/bench/fla_1.3b.json" --out "$MODEL" >"$OUT/init.log" 2>&1 \
  || { tail -3 "$OUT/init.log"; log "init FAILED"; exit 1; }
RUNS=("${TREES[@]}")
[ -n "${THIS_ALT:-}" ] && RUNS+=("$BUILD+alt")
for setting in ${THIS_ENVS:-}; do RUNS+=("$BUILD+env:$setting"); done
for round in $(seq 1 "$ROUNDS"); do
  for run in "${RUNS[@]}"; do
    t=${run%%+*} extra=() env=()
    label=$(name "$t")
    case "$run" in
      *+alt) label=this+alt; read -ra extra <<<"$THIS_ALT" ;;
      *+env:*) env=("${run#*+env:}"); label="this[${env[0]}]" ;;
    esac
    json="$OUT/decode-$round-${label//[^A-Za-z0-9+_=-]/_}.json"
    env "${env[@]}" timeout 90 "$t/bin/retnet" bench --model "$MODEL" --device cuda --dtype bf16 --mode decode --batch "$BATCHES" \
      --contexts 512 --decode-steps 32 --json "${extra[@]}" >"$json" 2>"${json%.json}.err"
    log "decode round $round, $label: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print('  '.join(f\"batch {r['batch']}: {r['ms_per_step']:.3f} ms ({r['tokens_per_s']:.0f} tok/s)\" \
+ (f\" device {r['device_ms_per_step']:.3f}\" if 'device_ms_per_step' in r else '') for r in d['decode']))" "$json" 2>&1 | tail -1)"
  done
done
finish
