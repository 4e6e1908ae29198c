#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Several `retnet train --device cuda-bf16` runs side by side (small models leave most of an H200
# idle, so they share it well; on a machine with several GPUs run i goes to GPU i mod count), each
# fitted to the same time limit; then the run with the
# lowest validation bits per character is converted to bf16, evaluated with `retnet eval --tail 0.1`
# (in its windows, then with --stream) and copied to $OUT in 15 MiB parts. Every run's log and best/training.json go to $OUT/runs.tar.gz.
#
# Usage: OUT=$OUT scripts/gpu/train_sweep.sh "NAME:CONFIG:OPTIONS" ...
#   e.g. "d3:tools/default_model_config.json:--dropout 0.3 --weight-decay 8.0 --ema-decay 0.997"
# OPTIONS are `retnet train` options; these defaults apply to the ones a run does not name:
# --dropout 0.2 --lr 1e-3 --steps 20000 --batch 64 --seq-len 256 --eval-window 256 --warmup 200
# --beta2 0.99 --min-lr-ratio 0.1 --weight-decay 0.1 --grad-clip 1.0 --eval-every 100.
# The final evaluation uses the best run's --eval-window.
# Environment: TOKENIZER (required: the tokenizer.model the configs' vocab_size matches),
# TIME_LIMIT (300 s per run: the schedule is shortened if the steps would not fit), RETNET (default
# $BUILD/bin/retnet; a prebuilt one can be carried, with the libretnet-cuda.so built beside it in
# the same directory: it loads its CUDA backend from there), SCRATCH (/tmp/retnet-deps: the carried .debs
# are unpacked there unless it already holds them), WORK (/tmp/retnet-sweep).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(realpath -m "${OUT:-$ROOT/device-out}")
BUILD=${BUILD:-/tmp/retnet-build}
SCRATCH=${SCRATCH:-/tmp/retnet-deps}
RETNET=${RETNET:-$BUILD/bin/retnet}
WORK=${WORK:-/tmp/retnet-sweep}
TOKENIZER=${TOKENIZER:?TOKENIZER must name a tokenizer.model}
TIME_LIMIT=${TIME_LIMIT:-300}
DATA=$ROOT/resources/data/tinyshakespeare.txt
ARCH=x86_64-linux-gnu
P=$SCRATCH/root
[ $# -gt 0 ] || { echo "usage: $0 NAME:CONFIG:OPTIONS ..." >&2; exit 2; }
DEFAULTS=(dropout 0.2 lr 1e-3 steps 20000 batch 64 seq-len 256 eval-window 256 warmup 200 beta2 0.99
          min-lr-ratio 0.1 weight-decay 0.1 grad-clip 1.0 eval-every 100)
# The run's options, then each default the run does not override.
run_options() {
  local extra=$1 i
  echo "$extra"
  for ((i = 0; i < ${#DEFAULTS[@]}; i += 2)); do
    [[ " $extra " == *" --${DEFAULTS[i]} "* ]] || echo "--${DEFAULTS[i]} ${DEFAULTS[i + 1]}"
  done
}
log() { echo "== [sweep $(date +%H:%M:%S)] $*"; }

if [ ! -d "$P/usr/lib/$ARCH" ]; then
  mkdir -p "$P"
  for deb in "$ROOT"/.debs/*.deb; do dpkg -x "$deb" "$P"; done
fi
export LD_LIBRARY_PATH="$P/usr/lib/$ARCH:$P/usr/lib/$ARCH/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
[ "$GPUS" -gt 0 ] || GPUS=1
log "device: $GPUS × $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); $# runs, $TIME_LIMIT s each"

pids=() run_index=0
for spec in "$@"; do
  IFS=: read -r name config extra <<<"$spec"
  gpu=$((run_index % GPUS)) && run_index=$((run_index + 1))
  # shellcheck disable=SC2046  # the options are words on purpose
  CUDA_VISIBLE_DEVICES=$gpu "$RETNET" train --data "$DATA" --config "$ROOT/$config" --tokenizer "$TOKENIZER" --out "$WORK/$name" \
    --device cuda-bf16 $(run_options "$extra") --save-every 0 --log-every 100 --threads 2 \
    --time-limit "$TIME_LIMIT" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || log "a run exited with $?"; done

best="" best_bpc=""
for spec in "$@"; do
  IFS=: read -r name config extra <<<"$spec"
  json=$WORK/$name/best/training.json
  [ -f "$json" ] || { log "$name: no best model"; continue; }
  bpc=$(python3 -c "import json;print(json.load(open('$json'))['val_bits_per_char'])")
  log "$name ($spec): best $(tr -d '\n ' <"$json"); $(grep -c '^step' "$WORK/$name.log") progress lines"
  cp "$json" "$WORK/$name.best.json"
  if [ -z "$best" ] || python3 -c "import sys;sys.exit(0 if $bpc < $best_bpc else 1)"; then
    best=$name best_bpc=$bpc
    best_window=$(run_options "$extra" | sed -n 's/.*--eval-window \([0-9]*\).*/\1/p' | head -1)
  fi
done
(cd "$WORK" && shopt -s nullglob && tar -czf "$OUT/runs.tar.gz" ./*.log ./*.best.json)
[ -n "$best" ] || { log "no run produced a model"; exit 1; }

log "best run: $best ($best_bpc bpc); converting to bf16 and evaluating on the last 10% (CPU)"
"$RETNET" convert --model "$WORK/$best/best" --out "$WORK/bf16" --dtype bf16 --overwrite
"$RETNET" eval --model "$WORK/bf16" --text "$DATA" --tail 0.1 --window "$best_window" --threads "$(nproc)" 2>&1 | tee "$OUT/eval.txt"
log "and as one sequence, the state carried through the whole text (retnet eval --stream, CUDA backend)"
"$RETNET" eval --model "$WORK/bf16" --text "$DATA" --tail 0.1 --stream --device cuda 2>&1 | tee -a "$OUT/eval.txt"
for f in config.json tokenizer.model training.json; do cp "$WORK/$best/best/$f" "$OUT/"; done
echo "$best" >"$OUT/best_run.txt"
split -b 15M -d -a 1 "$WORK/bf16/model.safetensors" "$OUT/model.safetensors.part-"
ls -la "$OUT"
