#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Trains the bundled default model (resources/models/default) from scratch on tinyshakespeare with
# the CPU trainer: a 2048-piece BPE SentencePiece tokenizer (byte fallback) trained on the first
# 90% of the text, then `retnet train` with the config tools/default_model_config.json, then
# `retnet eval` on the last 10% (the validation part). The model with the best validation loss is
# kept (out/run/best).
#
# Usage: tools/train_default_model.sh OUT_DIR
# Environment:
#   RETNET      the retnet executable (default: build/bin/retnet)
#   TOKENIZER   an existing tokenizer.model to use instead of training one
#   TIME_LIMIT  seconds of training (default 450); the cosine schedule is fitted to it
#   STEPS       upper bound on the steps (default 4000)
#   DROPOUT     training-only residual dropout (default 0, as for the bundled model)
#   CHUNK       0: parallel retention (default); C > 0: chunkwise with chunks of C tokens
#   THREADS     threads of the trainer's loops and of OpenBLAS (default: nproc)
#   DEBS        a folder of Debian packages (libopenblas, libsentencepiece...) to unpack into a
#               scratch prefix first, for machines without them (the GPU machine of the `run` tool)
#   RESULT_DIR  where to copy the resulting model files and logs (files over 15 MiB are split
#               into .part-aa, .part-ab...; join them with cat)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${1:?usage: tools/train_default_model.sh OUT_DIR}
RETNET=${RETNET:-$ROOT/build/bin/retnet}
TIME_LIMIT=${TIME_LIMIT:-450}
STEPS=${STEPS:-4000}
DROPOUT=${DROPOUT:-0}
CHUNK=${CHUNK:-0}
THREADS=${THREADS:-$(nproc)}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$THREADS}
DATA=$ROOT/resources/data/tinyshakespeare.txt
mkdir -p "$OUT_DIR"

if [ -n "${DEBS:-}" ]; then
  P=/tmp/retnet-deps
  rm -rf "$P" && mkdir -p "$P"
  for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$P"; done
  export LD_LIBRARY_PATH="$P/usr/lib/x86_64-linux-gnu/openblas-pthread:$P/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# OpenBLAS picks its kernels from the CPU model; in virtual machines that report a generic
# "Intel Xeon Processor" it falls back to the SSE3 (Prescott) kernels, 3-4x slower.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"

if [ -n "${TOKENIZER:-}" ]; then
  TOK=$TOKENIZER
else
  # The training part only: the text is ASCII, so the first 90% of the characters are bytes.
  chars=$(wc -c <"$DATA")
  head -c $((chars - (chars + 5) / 10)) "$DATA" >"$OUT_DIR/train_part.txt"
  "$RETNET" tokenizer train --text "$OUT_DIR/train_part.txt" --vocab-size 2048 --out "$OUT_DIR/tokenizer"
  TOK=$OUT_DIR/tokenizer/tokenizer.model
fi

set -o pipefail
"$RETNET" train --data "$DATA" --config "$ROOT/tools/default_model_config.json" --tokenizer "$TOK" \
  --out "$OUT_DIR/run" --steps "$STEPS" --batch 16 --seq-len 256 --lr 2e-3 --warmup 100 \
  --min-lr-ratio 0.1 --weight-decay 0.1 --grad-clip 1.0 --dropout "$DROPOUT" --chunk "$CHUNK" \
  --eval-every 100 --save-every 100 \
  --time-limit "$TIME_LIMIT" --threads "$THREADS" --log-every 10 2>&1 | tee "$OUT_DIR/train.log"
"$RETNET" eval --model "$OUT_DIR/run/best" --text "$DATA" --tail 0.1 --threads "$THREADS" 2>&1 | tee "$OUT_DIR/eval.log"

if [ -n "${RESULT_DIR:-}" ]; then
  mkdir -p "$RESULT_DIR"
  cp "$OUT_DIR/train.log" "$OUT_DIR/eval.log" "$RESULT_DIR/"
  for f in config.json tokenizer.model training.json model.safetensors; do
    src=$OUT_DIR/run/best/$f
    if [ "$(stat -c %s "$src")" -gt $((15 * 1024 * 1024)) ]; then
      split -b 15M "$src" "$RESULT_DIR/$f.part-"
    else
      cp "$src" "$RESULT_DIR/"
    fi
  done
  ls -la "$RESULT_DIR"
fi
