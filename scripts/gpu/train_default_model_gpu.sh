#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Trains the bundled default model on the GPU machine (the `run` tool, carry [".debs"], plus a
# prebuilt `retnet` in RETNET if there is one, its libretnet-cuda.so beside it; else it is built in $BUILD after
# scripts/gpu/run_device_checks.sh CONFIGURE_ONLY=1). The recipe of resources/models/default:
# tools/default_model_config.json (fla, d 384, 6 layers, 6 heads of Dk 64 / Dv 128, SwiGLU 704,
# 323 pieces untied: 12.2M parameters), the bundled character-level tokenizer, and
#   retnet train --device cuda-bf16 --seq-len 1024 --batch 16 --steps 2459 --lr 1e-3 --warmup 200
#     --beta2 0.99 --min-lr-ratio 0.1 --dropout 0.25 --weight-decay 10.0 --ema-decay 0.999
#     --grad-clip 1.0 --eval-every 100 --eval-window 1024 --seed 2
# keeping the best validated average; then bf16 conversion and `retnet eval` (windows of 1024 and
# --stream). Everything lands in $OUT (scripts/gpu/train_sweep.sh, which this runs with one run):
#   cat model.safetensors.part-* > model.safetensors
# Usage: OUT=$OUT [RETNET=…] [TIME_LIMIT=500] scripts/gpu/train_default_model_gpu.sh [extra train options]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-/tmp/retnet-build}
export RETNET=${RETNET:-$BUILD/bin/retnet}
export TOKENIZER=${TOKENIZER:-$ROOT/resources/models/default/tokenizer.model}
export TIME_LIMIT=${TIME_LIMIT:-500}
if [ ! -x "$RETNET" ]; then
  CONFIGURE_ONLY=1 BUILD="$BUILD" "$ROOT/scripts/gpu/run_device_checks.sh"
  cmake --build "$BUILD" -j16 --target retnet >/tmp/retnet-default-build.log 2>&1 \
    || { tail -30 /tmp/retnet-default-build.log; exit 1; }
fi
RECIPE="--seq-len 1024 --batch 16 --eval-window 1024 --steps 2459 --lr 1e-3 --warmup 200 --beta2 0.99"
RECIPE="$RECIPE --min-lr-ratio 0.1 --dropout 0.25 --weight-decay 10.0 --ema-decay 0.999 --grad-clip 1.0 --eval-every 100 --seed 2"
cd "$ROOT"
exec scripts/gpu/train_sweep.sh "default:tools/default_model_config.json:$RECIPE${*:+ $*}"
