#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The CUDA tests and the retention-kernel benchmark from binaries built elsewhere, on the GPU machine
# (the `run` tool): no configure and no build there, so a run costs about a minute of device time
# instead of four (run_device_checks.sh builds first). Build them on a Debian 12 machine with nvcc
# (scripts/build.sh builds for sm_90 when nvcc is found), then, here:
#   mkdir -p .prebuilt && cp build/bin/retnet_cuda_tests build/bin/retnet_cuda_bench .prebuilt/
#   strip .prebuilt/retnet_cuda_*   # the tree and the carry together must stay under 64 MiB
#   (cd .prebuilt && apt-get download libopenblas0-pthread libgfortran5 libquadmath0)
# and call this script with carry [".prebuilt"] (26 MB; the tree travels too, under 64 MiB in all).
# The test binaries name the build's source tree for their fixtures: BUILT_IN (default: the path
# that this machine's build used, /tmp/ci if built in a clone there) is linked to this checkout.
# Usage: [PREFILL=1] scripts/gpu/run_prebuilt.sh [gtest filter]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/.prebuilt
BUILT_IN=${BUILT_IN:-/tmp/ci}
[ -x "$BIN/retnet_cuda_tests" ] || { echo "no $BIN/retnet_cuda_tests: build and copy it first (see the top of $0)"; exit 2; }
[ "$BUILT_IN" = "$ROOT" ] || ln -sfn "$ROOT" "$BUILT_IN"
LIBS=/tmp/retnet-prebuilt-libs
mkdir -p "$LIBS" && for deb in "$BIN"/*.deb; do dpkg -x "$deb" "$LIBS"; done  # never into /
NCCL=$(find /usr /opt -name 'libnccl.so.2' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$LIBS/usr/lib/x86_64-linux-gnu/openblas-pthread:$LIBS/usr/lib/x86_64-linux-gnu:${NCCL%/*}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$BIN/retnet_cuda_tests" | grep "not found"; then echo "libraries missing (above)"; exit 1; fi
timeout 300 "$BIN/retnet_cuda_tests" --gtest_brief=1 --gtest_filter="${1:-*}" 2>&1 |
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|FAILED" | head -40
rc=${PIPESTATUS[0]}
[ -x "$BIN/retnet_cuda_bench" ] && timeout 120 "$BIN/retnet_cuda_bench" 0 kernels 2>&1 | tail -6
# PREFILL=1: also the 24-layer 1.3B-shaped prefill at 2048 and 8192 tokens (about a minute)
[ -n "${PREFILL:-}" ] && [ -x "$BIN/retnet_cuda_bench" ] && timeout 300 "$BIN/retnet_cuda_bench" 24 prefill 2>&1 | tail -4
exit "$rc"
