#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Trains the bundled default model on the GPU machine, after scripts/gpu/run_device_checks.sh has
# unpacked the carried .debs and built `retnet` (same SCRATCH and BUILD defaults): the tokenizer of
# resources/models/default (reused, so the bundled tokenizer does not change), the config
# tools/default_model_gpu_config.json (fla, d=320, 6 layers, 5 heads of Dk 64 / Dv 128, FFN 896,
# vocab 2048 untied: 11.39M parameters, 22.8 MB in bf16), `retnet train --device cuda-bf16
# --dropout 0.2` for TIME_LIMIT seconds keeping the best validation model, `retnet eval` of it on
# the last 10% of tinyshakespeare, and `retnet convert --dtype bf16` of it.
#
# $OUT receives at most 7 files: config.json, tokenizer.model, training.json, train.log, eval.log
# and model.safetensors split into 15 MiB parts (the `run` tool returns files of at most 16 MiB):
#   cat model.safetensors.part-* > model.safetensors
# Whatever exists is copied even when a step fails (the bf16 model, else the best f32 one).
#
# Usage: OUT=$OUT scripts/gpu/train_default_model_gpu.sh
# Environment: TIME_LIMIT (150 s), STEPS (8000, an upper bound: the schedule is fitted to the time
# limit), DROPOUT (0.2), BATCH (32), SEQ_LEN (256), LR (2e-3), WARMUP (100), EVAL_EVERY (250),
# DEVICE (cuda-bf16), CONFIG, TOKENIZER, BUILD (/tmp/retnet-build), SCRATCH (/tmp/retnet-deps),
# RETNET (the executable; default $BUILD/bin/retnet), WORK (/tmp/retnet-default-gpu).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
SCRATCH=${SCRATCH:-/tmp/retnet-deps}
RETNET=${RETNET:-$BUILD/bin/retnet}
WORK=${WORK:-/tmp/retnet-default-gpu}
TIME_LIMIT=${TIME_LIMIT:-150}
STEPS=${STEPS:-8000}
DROPOUT=${DROPOUT:-0.2}
BATCH=${BATCH:-32}
SEQ_LEN=${SEQ_LEN:-256}
LR=${LR:-2e-3}
WARMUP=${WARMUP:-100}
EVAL_EVERY=${EVAL_EVERY:-250}
DEVICE=${DEVICE:-cuda-bf16}
CONFIG=${CONFIG:-$ROOT/tools/default_model_gpu_config.json}
TOKENIZER=${TOKENIZER:-$ROOT/resources/models/default/tokenizer.model}
DATA=$ROOT/resources/data/tinyshakespeare.txt
ARCH=x86_64-linux-gnu
P=$SCRATCH/root
# The libraries run_device_checks.sh unpacked (the executable also carries them as rpath).
export LD_LIBRARY_PATH="$P/usr/lib/$ARCH:$P/usr/lib/$ARCH/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The CPU evaluation: OpenBLAS falls back to slow generic kernels on CPUs it does not recognize.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
log() { echo "== [train-gpu $(date +%H:%M:%S)] $*"; }

# Copies what exists into $OUT, whatever happened before (runs on every exit).
collect() {
  local rc=$? model="" f
  set +e
  [ -f "$WORK/bf16/model.safetensors" ] && model=$WORK/bf16
  [ -z "$model" ] && [ -f "$WORK/run/best/model.safetensors" ] && model=$WORK/run/best
  for f in train.log eval.log; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"; done
  if [ -n "$model" ]; then
    for f in config.json tokenizer.model training.json; do [ -f "$model/$f" ] && cp "$model/$f" "$OUT/"; done
    split -b 15M -d -a 1 "$model/model.safetensors" "$OUT/model.safetensors.part-"
    log "copied $model to $OUT (join: cat model.safetensors.part-* > model.safetensors; $(stat -c %s "$model/model.safetensors") bytes)"
  else
    log "no model to copy"
  fi
  ls -la "$OUT"
  log "exit $rc"
}
trap collect EXIT

if [ ! -x "$RETNET" ]; then
  log "$RETNET missing: building it in $BUILD"
  cmake --build "$BUILD" -j16 --target retnet >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
fi
log "device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1 | head -1)"

log "training: $DEVICE, dropout $DROPOUT, time limit $TIME_LIMIT s, config $CONFIG"
T0=$(date +%s)
set +e
"$RETNET" train --data "$DATA" --config "$CONFIG" --tokenizer "$TOKENIZER" --out "$WORK/run" \
  --device "$DEVICE" --dropout "$DROPOUT" --steps "$STEPS" --batch "$BATCH" --seq-len "$SEQ_LEN" --lr "$LR" \
  --warmup "$WARMUP" --min-lr-ratio 0.1 --weight-decay 0.1 --grad-clip 1.0 --eval-every "$EVAL_EVERY" \
  --save-every 0 --log-every 50 --time-limit "$TIME_LIMIT" >"$WORK/train.log" 2>&1
TRAIN_RC=$?
set -e
grep -E "validation|done|error|time limit" "$WORK/train.log" | tail -25
log "retnet train exit $TRAIN_RC after $(( $(date +%s) - T0 )) s"
[ -f "$WORK/run/best/model.safetensors" ] || { log "no best model"; exit 1; }
log "best: $(tr -d '\n ' <"$WORK/run/best/training.json"); $("$RETNET" info --model "$WORK/run/best" 2>&1 | grep -m1 parameters)"

log "eval of best/ on the last 10% (CPU)"
"$RETNET" eval --model "$WORK/run/best" --text "$DATA" --tail 0.1 2>&1 | tee "$WORK/eval.log"
log "convert to bf16"
"$RETNET" convert --model "$WORK/run/best" --out "$WORK/bf16" --dtype bf16 2>&1 | tee -a "$WORK/eval.log"
log "eval of the bf16 copy"
"$RETNET" eval --model "$WORK/bf16" --text "$DATA" --tail 0.1 2>&1 | tee -a "$WORK/eval.log"
exit "$TRAIN_RC"
