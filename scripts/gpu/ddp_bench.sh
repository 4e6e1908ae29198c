#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Data-parallel training on a machine of two or more GPUs (the `run` tool, kind nvidia-h200-x2 or
# larger, carry [".debs"]; NCCL_NVLS_ENABLE=0 is kept). Configures through run_device_checks.sh,
# builds the CLI and the CUDA tests, then:
#   1. the two-GPU tests (TwoGpuTest.*: summed shard gradients = one GPU's whole-batch gradient,
#      three steps on two GPUs = one GPU);
#   2. the loss curve: `retnet train --device cuda` (fp32) on tinyshakespeare, the bundled model's
#      shape, 200 steps of a global batch of 16 × 256, on one GPU and with --gpus 2: the largest
#      difference of the logged losses (expected within ~1e-3: float reassociation, docs/training.md);
#   3. scaling: a 358M-parameter model (d 1024, 21 layers, SwiGLU 2816, cuda-bf16, 1024-token
#      windows), PER_GPU_BATCH sequences per GPU, on 1, 2 and (if present) all GPUs: tokens/s (the
#      median of the last progress lines) and the efficiency tok/s(N) / (N · tok/s(1)), target ≥ 90%.
# Logs and summary.txt go to $OUT. Usage: OUT=$OUT scripts/gpu/ddp_bench.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
BUILD=${BUILD:-/tmp/retnet-build}
PER_GPU_BATCH=${PER_GPU_BATCH:-4}
SCALE_STEPS=${SCALE_STEPS:-40}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

CONFIGURE_ONLY=1 OUT="$OUT" BUILD="$BUILD" "$ROOT/scripts/gpu/run_device_checks.sh" || { log "configure FAILED"; exit 1; }
grep -q "NCCL found" "$OUT"/configure.log 2>/dev/null || log "(configure log does not say NCCL found: check $OUT)"
T0=$(date +%s)
cmake --build "$BUILD" -j16 --target retnet retnet_cuda_tests >"$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -60; log "build FAILED"; exit 1; }
log "build: $(( $(date +%s) - T0 )) s"
GPUS=$(nvidia-smi -L | wc -l)
log "GPUs: $GPUS"
[ "$GPUS" -ge 2 ] || { log "fewer than two GPUs: nothing to measure"; exit 1; }
RETNET="$BUILD/bin/retnet"
DATA="$ROOT/resources/data/tinyshakespeare.txt"
TOKENIZER="$ROOT/resources/models/default/tokenizer.model"

# ---- 1. the two-GPU tests -------------------------------------------------------------------------
timeout 300 "$BUILD/bin/retnet_cuda_tests" --gtest_filter='TwoGpuTest.*' >"$OUT/ddp_tests.log" 2>&1
TEST_RC=$?
grep -E "OK|FAILED|SKIPPED|PASSED|Failure|Expected|actual" "$OUT/ddp_tests.log" | tee -a "$OUT/summary.txt"
log "two-GPU tests exit $TEST_RC"

# ---- 2. the loss curve: one GPU against two, same global batch -----------------------------------
curve() {  # curve NAME [--gpus N]
  rm -rf "/tmp/retnet-ddp-$1"
  timeout 600 "$RETNET" train --data "$DATA" --config "$ROOT/tools/default_model_config.json" --tokenizer "$TOKENIZER" \
    --out "/tmp/retnet-ddp-$1" --device cuda --steps 200 --batch 16 --seq-len 256 --lr 1e-3 --warmup 20 \
    --eval-every 100 --save-every 0 --log-every 10 "${@:2}" >"$OUT/curve_$1.log" 2>&1
  log "curve $1 exit $?"
}
curve one
curve two --gpus 2
paste <(grep -oE "  loss [0-9.]+" "$OUT/curve_one.log" | awk '{print $2}') \
      <(grep -oE "  loss [0-9.]+" "$OUT/curve_two.log" | awk '{print $2}') \
  | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; n++} END {printf "loss curve: %d points, largest |1 GPU - 2 GPUs| = %.4f\n", n, m}' \
  | tee -a "$OUT/summary.txt"
grep "validation" "$OUT/curve_one.log" "$OUT/curve_two.log" | tee -a "$OUT/summary.txt"

# ---- 3. scaling of a 358M model ------------------------------------------------------------------
cat >"$OUT/config_358m.json" <<JSON
{"model_type": "retnet", "hidden_size": 1024, "num_hidden_layers": 21, "num_heads": 8, "expand_k": 1,
 "expand_v": 2, "intermediate_size": 2816, "vocab_size": 323, "tie_word_embeddings": false,
 "bos_token_id": 1, "eos_token_id": 2, "norm_eps": 1e-6}
JSON
speed() {  # speed N: tokens/s with N GPUs (median of the last three progress lines)
  local n=$1 extra=()
  [ "$n" -gt 1 ] && extra=(--gpus "$n")
  rm -rf "/tmp/retnet-ddp-scale$n"
  timeout 900 "$RETNET" train --data "$DATA" --config "$OUT/config_358m.json" --tokenizer "$TOKENIZER" \
    --out "/tmp/retnet-ddp-scale$n" --device cuda-bf16 --steps "$SCALE_STEPS" --batch $((PER_GPU_BATCH * n)) \
    --seq-len 1024 --lr 3e-4 --warmup 10 --eval-every 0 --save-every 0 --log-every 5 --val-fraction 0.01 \
    "${extra[@]}" >"$OUT/scale_$n.log" 2>&1 || { log "scale $n FAILED: $(tail -2 "$OUT/scale_$n.log")" >&2; echo 0; return; }
  grep -oE "[0-9]+ tok/s" "$OUT/scale_$n.log" | awk '{print $1}' | tail -3 | sort -n | sed -n 2p
}
S1=$(speed 1)
log "1 GPU: $S1 tok/s (batch $PER_GPU_BATCH x 1024)"
for n in 2 $([ "$GPUS" -gt 2 ] && echo "$GPUS"); do
  SN=$(speed "$n")
  log "$n GPUs: $SN tok/s (batch $((PER_GPU_BATCH * n)) x 1024), efficiency $(awk -v a="$SN" -v b="$S1" -v n="$n" \
      'BEGIN {if (b > 0) printf "%.1f%%", 100 * a / (n * b); else print "n/a"}')"
done
exit $TEST_RC
