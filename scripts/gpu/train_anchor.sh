#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Training steps at the 1.3B shape against fla + PyTorch, in one call on the GPU machine (the `run`
# tool, carry [".debs", ".device/fla"] with fla's source under .device/fla/fla, never committed).
# The shape is tools/bench/fla_1.3b.json with the bundled tokenizer's vocabulary (323 pieces, so that
# the run reads tinyshakespeare as the bundled model does); batch 1, T in $LENGTHS:
#   ours: `retnet train --device cuda-bf16 --chunk 64` (AdamW), tokens/s from the last progress line;
#   fla:  scripts/gpu/fla_train_anchor.py (bf16 autocast, fused AdamW), CUDA-event medians;
# peak GPU memory of each process sampled with nvidia-smi every 0.1 s (CUDA context included), as in
# twin_train_compare.sh. Writes $OUT/train_anchor.json and the logs.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
LENGTHS=${LENGTHS:-2048,8192}
STEPS=${STEPS:-12}
SYSTEMS=${SYSTEMS:-retnet,fla}  # either or both
WORK=/tmp/train-anchor
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
CONFIGURE_ONLY=1 OUT="$OUT" "$ROOT/scripts/gpu/run_device_checks.sh" >"$OUT/configure-run.log" 2>&1 || { log "configure FAILED"; exit 1; }
P=/tmp/retnet-deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$P:$P/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$BUILD" -j16 --target retnet >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -30; log "build FAILED"; exit 1; }
log "built"
CONFIG=$WORK/config.json
python3 - "$ROOT/tools/bench/fla_1.3b.json" "$CONFIG" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["vocab_size"] = 323; json.dump(c, open(sys.argv[2], "w"))
PY
# shellcheck source=scripts/gpu/peak_memory.sh
. "$ROOT/scripts/gpu/peak_memory.sh"
rows=()
for T in ${LENGTHS//,/ }; do
  if [[ ,$SYSTEMS, == *,retnet,* ]]; then
    "$BUILD/bin/retnet" train --data "$ROOT/resources/data/tinyshakespeare.txt" --config "$CONFIG" \
      --tokenizer "$ROOT/resources/models/default/tokenizer.model" --out "$WORK/ours-$T" --device cuda-bf16 --chunk 64 \
      --seq-len "$T" --batch 1 --steps "$STEPS" --warmup 2 --log-every 4 --eval-every 100000 --save-every 0 \
      >"$OUT/ours-$T.log" 2>&1 &
    pid=$!
    peak=$(peak_of $pid)
    wait $pid; rc=$?
    tps=$(grep 'tok/s' "$OUT/ours-$T.log" | tail -1 | sed -n 's/.* \([0-9][0-9]*\) tok\/s.*/\1/p')
    log "ours T=$T: rc $rc, ${tps:-?} tok/s, peak $peak MiB"
    rows+=("{\"system\": \"retnet\", \"T\": $T, \"B\": 1, \"rc\": $rc, \"tokens_per_s\": ${tps:-null}, \"peak_mib\": $peak}")
  fi
  [[ ,$SYSTEMS, == *,fla,* ]] || continue
  FLA_SRC=$ROOT/.device/fla python3 "$ROOT/scripts/gpu/fla_train_anchor.py" --config "$CONFIG" --lengths "$T" \
    --steps 8 >"$WORK/fla-$T.json" 2>"$OUT/fla-$T.log" &
  pid=$!
  peak=$(peak_of $pid)
  wait $pid
  line=$(tail -1 "$WORK/fla-$T.json")
  log "fla T=$T: ${line:0:300}, peak $peak MiB"
  rows+=("$(python3 -c "import json,sys; r=json.loads(sys.argv[1] or '{}'); r['peak_mib']=int(sys.argv[2]); print(json.dumps(r))" "$line" "$peak")")
done
(IFS=,; echo "{\"config\": $(cat "$CONFIG"), \"rows\": [${rows[*]}]}") >"$OUT/train_anchor.json"
log "wrote $OUT/train_anchor.json"
