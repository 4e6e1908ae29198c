#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One call on the GPU machine (the `run` tool, carry [".debs", ".device"]): builds `retnet` and the
# CUDA tests, runs the tests, writes a random fla-hub-1.3B-shaped checkpoint with `retnet init`
# (tools/bench/fla_1.3b.json), and times on those same weights:
#   ours   retnet bench (prefill per form, batched decode, context sweep) in bf16 and fp32, and
#          retnet generate (2048-token prompt, 256 new tokens) against the bench's step
#   fla    scripts/gpu/fla_anchors.py, with fla's source carried in .device/fla (never committed)
# then plots the comparison (scripts/gpu/plot_benchmarks.py). JSON, logs and PNGs go to $OUT.
# SKIP_TESTS=1 / SKIP_FLA=1 leave out the CUDA tests / the fla anchors (to spend less device time).
# Every step has its own time limit and writes what it has, so a slow step costs only itself.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
MODEL=/tmp/anchor-model
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }

CONFIGURE_ONLY=1 OUT="$OUT" "$ROOT/scripts/gpu/run_device_checks.sh" >"$OUT/configure-run.log" 2>&1 || { log "configure FAILED"; exit 1; }
export LD_LIBRARY_PATH="/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu:/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$BUILD" -j16 --target retnet retnet_cuda_tests >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -30; log "build FAILED"; exit 1; }
log "built"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 120 "$BUILD/bin/retnet_cuda_tests" --gtest_brief=1 >"$OUT/cuda_tests.log" 2>&1
  log "cuda tests: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/cuda_tests.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]" "$OUT/cuda_tests.log" | head -10 | tee -a "$OUT/summary.txt"
fi
RETNET="$BUILD/bin/retnet"
rm -rf "$MODEL"  # init writes only into a new or empty directory
timeout 150 "$RETNET" init --config "$ROOT/tools/bench/fla_1.3b.json" --out "$MODEL" >"$OUT/init.log" 2>&1
log "model: $(tail -1 "$OUT/init.log")"

for dtype in bf16 fp32; do
  timeout 120 "$RETNET" bench --model "$MODEL" --device cuda --dtype $dtype --lengths 2048,8192 --batch 1,16,64 \
    --contexts 512 --repeats 3 --decode-steps 32 --json >"$OUT/ours_$dtype.json" 2>"$OUT/ours_$dtype.err"
  log "ours $dtype: $(python3 -c "import json;d=json.load(open('$OUT/ours_$dtype.json'));print([(r['batch'],round(r['tokens_per_s'])) for r in d['decode']], [(r['T'],round(r['chunkwise_ms'],1)) for r in d['prefill']])" 2>&1 | tail -1)"
done
timeout 90 "$RETNET" bench --model "$MODEL" --device cuda --dtype bf16 --mode decode --batch 1,16 \
  --contexts 1024,32768 --decode-steps 32 --json >"$OUT/ours_contexts.json" 2>"$OUT/ours_contexts.err"
log "context sweep: $(python3 -c "import json;d=json.load(open('$OUT/ours_contexts.json'));print([(r['batch'],r['context'],round(r['ms_per_step'],3)) for r in d['decode']])" 2>&1 | tail -1)"

PROMPT=$(python3 -c "import random;random.seed(1);print(','.join(str(random.randrange(3,32000)) for _ in range(2048)))")
timeout 60 "$RETNET" generate --model "$MODEL" --device cuda-bf16 --tokens "$PROMPT" -n 256 --greedy --ignore-eos \
  --mode chunkwise --max-prompt-tokens 4096 >"$OUT/generate.out" 2>"$OUT/generate.err"
log "generate: $(tail -1 "$OUT/generate.err")"

[ -z "${SKIP_FLA:-}" ] && FLA_SRC="$ROOT/.device/fla" timeout 200 python3 "$ROOT/scripts/gpu/fla_anchors.py" --model "$MODEL" --out "$OUT/fla.json" \
  >"$OUT/fla.log" 2>&1
log "fla: $(python3 -c "import json;d=json.load(open('$OUT/fla.json'));m=d.get('model',{});print([(r['batch'],round(r['tokens_per_s'])) for r in m.get('decode',[])], [(r['T'],round(r['ms'],1)) for r in m.get('prefill',[])], d.get('model_error','')[-300:], d.get('kernels_error','')[-300:])" 2>&1 | tail -3)"
python3 "$ROOT/scripts/gpu/plot_benchmarks.py" "$OUT" >>"$OUT/summary.txt" 2>&1
log "done"
