#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The quality and training-cost side of the Transformer twin, in one call on the GPU machine (the
# `run` tool, carry [".debs"]): builds `retnet` and the CUDA tests, runs the twin's training tests,
# then
#   1. training speed and memory: `retnet train --device cuda-bf16` of the bundled RetNet's config
#      (tools/default_model_config.json; parallel form, and chunkwise with --chunk 64) and of its
#      twin (--arch transformer) at T = 1024 … 8192,
#      16384 tokens per step (B = 16384 / T); tokens/s from the run's last progress line, peak GPU
#      memory of the process sampled with nvidia-smi every 0.1 s;
#   2. quality: both trained side by side on tinyshakespeare with the bundled model's recipe
#      (scripts/gpu/train_default_model_gpu.sh, STEPS = 2459 steps of 16 × 1024 tokens), then `retnet eval --tail 0.1 --window 1024`
#      of each best model on the same windows.
# Writes $OUT/twin_train_speed.json, each run's training.json and the logs.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
STEPS=${STEPS:-2459}
WORK=/tmp/twin-train
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
CONFIGURE_ONLY=1 OUT="$OUT" "$ROOT/scripts/gpu/run_device_checks.sh" >"$OUT/configure-run.log" 2>&1 || { log "configure FAILED"; exit 1; }
P=/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$P:$P/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$BUILD" -j16 --target retnet retnet_cuda_tests >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -30; log "build FAILED"; exit 1; }
log "built"
RETNET=$BUILD/bin/retnet
timeout 240 "$BUILD/bin/retnet_cuda_tests" --gtest_brief=1 --gtest_filter="${TEST_FILTER:-*Twin*:*Attention*:*Train*}" >"$OUT/cuda_tests.log" 2>&1
log "cuda tests: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/cuda_tests.log" | tr '\n' ' ')"
grep -E "^\[  FAILED  \]" "$OUT/cuda_tests.log" | head -10 | tee -a "$OUT/summary.txt"

DATA=$ROOT/resources/data/tinyshakespeare.txt
CONFIG=$ROOT/tools/default_model_config.json
TOKENIZER=$ROOT/resources/models/default/tokenizer.model
# shellcheck source=scripts/gpu/peak_memory.sh
. "$ROOT/scripts/gpu/peak_memory.sh"
echo '{"speed": [' >"$WORK/speed.json"
first=1
for run in "retnet:" "retnet-chunk64:--chunk 64" "transformer:--arch transformer"; do
  name=${run%%:*} options=${run#*:}
  for T in 1024 2048 4096 8192; do
    B=$((16384 / T))
    # shellcheck disable=SC2086  # the options are words on purpose
    "$RETNET" train --data "$DATA" --config "$CONFIG" --tokenizer "$TOKENIZER" $options --out "$WORK/speed-$name-$T" \
      --device cuda-bf16 --seq-len $T --batch $B --steps 48 --log-every 16 --eval-every 1000 --save-every 0 --warmup 2 \
      >"$WORK/speed-$name-$T.log" 2>&1 &
    pid=$!
    peak=$(peak_of $pid)
    wait $pid; rc=$?
    tps=$(grep 'tok/s' "$WORK/speed-$name-$T.log" | tail -1 | sed -n 's/.* \([0-9][0-9]*\) tok\/s.*/\1/p')
    log "train $name T=$T B=$B: rc $rc, ${tps:-?} tok/s, peak ${peak} MiB"
    [ $first = 1 ] || echo ',' >>"$WORK/speed.json"
    first=0
    echo "{\"run\": \"$name\", \"T\": $T, \"B\": $B, \"rc\": $rc, \"tokens_per_s\": ${tps:-null}, \"peak_mib\": $peak}" >>"$WORK/speed.json"
  done
done
echo ']}' >>"$WORK/speed.json"

RECIPE="--seq-len 1024 --batch 16 --eval-window 1024 --steps $STEPS --lr 1e-3 --warmup 200 --beta2 0.99 --min-lr-ratio 0.1"
RECIPE="$RECIPE --dropout 0.25 --weight-decay 10.0 --ema-decay 0.999 --grad-clip 1.0 --eval-every 100 --seed 2"
for arch in retnet transformer; do
  # shellcheck disable=SC2086  # the recipe is words on purpose
  "$RETNET" train --data "$DATA" --config "$CONFIG" --tokenizer "$TOKENIZER" --arch $arch --out "$WORK/q-$arch" \
    --device cuda-bf16 $RECIPE --save-every 0 --log-every 100 --time-limit 300 >"$WORK/q-$arch.log" 2>&1 &
done
wait
for arch in retnet transformer; do
  log "quality $arch: $(grep "tok/s" "$WORK/q-$arch.log" | tail -1); $(grep -E "^done" "$WORK/q-$arch.log")"
  "$RETNET" eval --model "$WORK/q-$arch/best" --text "$DATA" --tail 0.1 --window 1024 --device cuda >"$WORK/eval-$arch.txt" 2>&1
  log "eval $arch: $(tail -2 "$WORK/eval-$arch.txt" | tr '\n' ' ')"
  cp "$WORK/q-$arch/best/training.json" "$OUT/training-$arch.json" 2>/dev/null
done
cp "$WORK/speed.json" "$OUT/twin_train_speed.json"
(cd "$WORK" && tar -czf "$OUT/logs.tar.gz" ./*.log ./eval-*.txt)
log "done"
