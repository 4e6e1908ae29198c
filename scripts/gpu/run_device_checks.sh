#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One call on the GPU machine (the `run` tool, carry [".debs"]): unpack the carried Debian packages
# into a scratch prefix (never into /), configure and build the engine, CLI and tests with CUDA,
# run ctest (core + cuda), the CUDA benchmark and `retnet compare --device cuda` on the fixtures.
# Logs go to $OUT (or ./device-out when $OUT is unset). Fetch the packages first, here:
#   mkdir -p .debs && cd .debs && apt-get download libgtest-dev libgmock-dev libsentencepiece-dev libcli11-dev \
#     libsentencepiece0 libprotobuf-lite32 nlohmann-json3-dev libopenblas-dev libopenblas0 \
#     libopenblas0-pthread libopenblas-pthread-dev libblas-dev libblas3 liblapack3 libgfortran5 \
#     libquadmath0 pkgconf-bin libpkgconf3
# Usage: scripts/gpu/run_device_checks.sh [quick]   (quick: cuda tests only, no core tests / bench)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/device-out}
MODE=${1:-full}
mkdir -p "$OUT"
SCRATCH=${SCRATCH:-/tmp/retnet-deps}
P=$SCRATCH/root
BUILD=${BUILD:-/tmp/retnet-build}
ARCH=x86_64-linux-gnu
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
log "nvcc: $(nvcc --version 2>&1 | tail -1); cmake: $(cmake --version | head -1); c++: $(c++ --version | head -1)"

# ---- dependencies from the carried .debs ---------------------------------------------------------
rm -rf "$SCRATCH" && mkdir -p "$P"
for deb in "$ROOT"/.debs/*.deb; do dpkg -x "$deb" "$P" || { log "dpkg -x failed: $deb"; exit 1; }; done
# .pc files name prefix=/usr: point them at the scratch prefix.
for pc in "$P"/usr/lib/$ARCH/pkgconfig/*.pc "$P"/usr/share/pkgconfig/*.pc; do
  [ -f "$pc" ] && sed -i "s#^prefix=/usr#prefix=$P/usr#" "$pc"
done
LIBDIRS="$P/usr/lib/$ARCH:$P/usr/lib/$ARCH/openblas-pthread"
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$P/usr/lib/$ARCH/pkgconfig:$P/usr/share/pkgconfig"
PKGCONF=$(command -v pkg-config || echo "$P/usr/bin/pkgconf")
LINK="-Wl,-rpath-link,$P/usr/lib/$ARCH -Wl,-rpath,$P/usr/lib/$ARCH/openblas-pthread:$P/usr/lib/$ARCH"

# ---- configure and build ------------------------------------------------------------------------
T0=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DRETNET_BUILD_APP=OFF -DRETNET_WITH_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$P/usr" -DCMAKE_LIBRARY_PATH="$P/usr/lib/$ARCH/openblas-pthread;$P/usr/lib/$ARCH" \
  -DBLA_VENDOR=OpenBLAS -DPKG_CONFIG_EXECUTABLE="$PKGCONF" \
  -DCMAKE_CXX_FLAGS="-isystem $P/usr/include/$ARCH/openblas-pthread -isystem $P/usr/include" \
  -DCMAKE_EXE_LINKER_FLAGS="$LINK" -DCMAKE_SHARED_LINKER_FLAGS="$LINK" \
  >"$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; log "configure FAILED"; exit 1; }
[ -n "${CONFIGURE_ONLY:-}" ] && { log "configured"; exit 0; }
# BASE_SRC=DIR (an earlier commit exported with `git archive REV | tar -x -C .device/base`, carried):
# its benchmark and CLI are built beside this tree's, in the background, for an A/B in the same run.
BASE_BUILD=/tmp/retnet-base-build
if [ -n "${BASE_SRC:-}" ] && [ "$MODE" != quick ]; then
  ( cmake -S "$ROOT/$BASE_SRC" -B "$BASE_BUILD" -DCMAKE_BUILD_TYPE=Release -DRETNET_BUILD_APP=OFF -DRETNET_WITH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
      -DCMAKE_PREFIX_PATH="$P/usr" -DCMAKE_LIBRARY_PATH="$P/usr/lib/$ARCH/openblas-pthread;$P/usr/lib/$ARCH" \
      -DBLA_VENDOR=OpenBLAS -DPKG_CONFIG_EXECUTABLE="$PKGCONF" \
      -DCMAKE_CXX_FLAGS="-isystem $P/usr/include/$ARCH/openblas-pthread -isystem $P/usr/include" \
      -DCMAKE_EXE_LINKER_FLAGS="$LINK" >"$OUT/base-configure.log" 2>&1 \
    && cmake --build "$BASE_BUILD" -j6 --target retnet_cuda_bench retnet_cuda_train_bench retnet >"$OUT/base-build.log" 2>&1 ) &
  BASE_PID=$!
fi
cmake --build "$BUILD" -j${JOBS:-12} --target retnet_cuda_tests retnet_cuda_oom_tests retnet_cuda_bench retnet_cuda_train_bench \
  retnet_boundary_bench >"$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; log "build FAILED"; exit 1; }
# The CLI and the core tests come from other parts of the tree: a failure there is logged, not fatal.
OTHER="retnet"
[ "$MODE" = quick ] || OTHER="$OTHER retnet_core_tests"
cmake --build "$BUILD" -j${JOBS:-12} --target $OTHER >>"$OUT/build.log" 2>&1 \
  || { grep -E "error:" -A3 "$OUT/build.log" | head -20; log "build of $OTHER FAILED (continuing)"; }
log "configure + build: $(( $(date +%s) - T0 )) s"

# ---- tests --------------------------------------------------------------------------------------
cd "$BUILD"
# The CUDA suite runs as one process (its per-case errors go to the log); ctest runs the rest.
CTEST_RC=0
if [ "$MODE" != quick ]; then
  ctest -LE cuda -j8 --timeout 300 --output-on-failure >"$OUT/ctest.log" 2>&1 || CTEST_RC=$?
  grep -E "tests passed|tests failed|Total Test time" "$OUT/ctest.log" | tee -a "$OUT/summary.txt"
  grep -E "\(Failed\)|\(SEGFAULT\)|\(Timeout\)|Not Run|\*\*\*" "$OUT/ctest.log" | head -40 | tee -a "$OUT/summary.txt"
fi
"$BUILD/bin/retnet_cuda_tests" --gtest_brief=1 >"$OUT/cuda_tests_verbose.log" 2>&1 || CTEST_RC=$?
"$BUILD/bin/retnet_cuda_oom_tests" --gtest_brief=1 >>"$OUT/cuda_tests_verbose.log" 2>&1 || CTEST_RC=$?
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]" "$OUT/cuda_tests_verbose.log" | tee -a "$OUT/summary.txt"
grep -E "^\[  FAILED  \]" "$OUT/cuda_tests_verbose.log" | head -20 | tee -a "$OUT/summary.txt"
grep -E "rel (l2 )?err" "$OUT/cuda_tests_verbose.log" | sort -t: -k3 -g | tail -5 >>"$OUT/summary.txt"

# ---- CLI on the GPU -----------------------------------------------------------------------------
{
  for m in fla_small ts_gelu_tied ts_small; do
    TOK=$(python3 -c "import json;print(','.join(map(str,json.load(open('$ROOT/tests/data/reference/$m/tokens.json'))['tokens'])))")
    CH=$(python3 -c "import json;print(json.load(open('$ROOT/tests/data/reference/$m/tokens.json'))['chunk_size'])")
    for dev in cpu cuda; do
      echo "--- retnet compare $m --device $dev"
      "$BUILD/bin/retnet" compare --model "$ROOT/tests/data/reference/$m" --tokens "$TOK" --chunk-size "$CH" --device $dev 2>&1
    done
    echo "--- retnet compare $m --device cuda --head-norm-eps 0"
    "$BUILD/bin/retnet" compare --model "$ROOT/tests/data/reference/$m" --tokens "$TOK" --chunk-size "$CH" --device cuda --head-norm-eps 0 2>&1
  done
  echo "--- retnet logits --device cuda"
  "$BUILD/bin/retnet" logits --model "$ROOT/tests/data/reference/fla_small" --tokens 1,2,3,4,5 --device cuda --out /tmp/l.npy 2>&1 && echo "logits OK"
  if "$BUILD/bin/retnet" 2>&1 | grep -q generate; then
    echo "--- retnet generate --device cuda"
    "$BUILD/bin/retnet" generate --model "$ROOT/tests/data/reference/fla_small" --tokens 1,2,3 --max-new-tokens 8 --device cuda 2>&1 | tail -5
  fi
} >"$OUT/cli.log" 2>&1
grep -E "vs|PASS|FAIL|error" "$OUT/cli.log" | head -30 >>"$OUT/summary.txt"

# ---- benchmark ----------------------------------------------------------------------------------
if [ "$MODE" != quick ] && [ -z "${BASE_SRC:-}" ]; then
  timeout 240 "$BUILD/bin/retnet_cuda_bench" "${BENCH_LAYERS:-4}" >"$OUT/bench.log" 2>&1
  # what a kernel boundary costs against a grid barrier (docs/benchmarks.md); exits 1 if the chains disagree
  timeout 60 "$BUILD/bin/retnet_boundary_bench" 24 >>"$OUT/bench.log" 2>&1 || echo "boundary bench FAILED (rc $?)" >>"$OUT/bench.log"
  cat "$OUT/bench.log" | tee -a "$OUT/summary.txt"
fi
# ---- A/B against BASE_SRC, in the same run -----------------------------------------------------------
if [ -n "${BASE_SRC:-}" ] && [ "$MODE" != quick ]; then
  wait "$BASE_PID" || { tail -20 "$OUT/base-build.log"; log "base build FAILED"; }
  for round in $(seq 1 "${ROUNDS:-1}"); do  # alternate trees, so drift shows between rounds
    log "bench round $round: this tree"
    timeout 200 "$BUILD/bin/retnet_cuda_bench" "${BENCH_LAYERS:-4}" 2>&1 | tee -a "$OUT/bench-ab.log" | tail -12
    log "bench round $round: $BASE_SRC"
    timeout 200 "$BASE_BUILD/bin/retnet_cuda_bench" "${BENCH_LAYERS:-4}" 2>&1 | tee -a "$OUT/bench-ab.log" | tail -12
    for tree in "$BUILD" "$BASE_BUILD"; do
      log "training bench ($tree)"
      timeout 120 "$tree/bin/retnet_cuda_train_bench" 2>&1 | tee -a "$OUT/bench-ab.log" | tail -4
    done
    for dev in cuda cuda-bf16 cpu; do  # `retnet bench` on the bundled model, this tree then the base
      for tree in "$BUILD" "$BASE_BUILD"; do
        log "retnet bench --device $dev ($tree)"
        timeout 100 "$tree/bin/retnet" bench --model "$ROOT/resources/models/default" --device $dev \
          --lengths 64,256,1024 2>&1 | tee -a "$OUT/bench-ab.log" | tail -5
      done
    done
  done
fi
# ---- memory checker on a subset (SANITIZE=1) --------------------------------------------------------
if [ -n "${SANITIZE:-}" ] && command -v compute-sanitizer >/dev/null; then
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/bin/retnet_cuda_tests" \
    --gtest_filter='KernelTest.*:RecurrentScan*:*EveryForm*/fla_dk64*:*EveryForm*/ts_dk100*:*Introspection*/ts_dk64*' \
    --gtest_brief=1 >"$OUT/memcheck.log" 2>&1
  log "compute-sanitizer memcheck exit $? ($(grep -c 'Invalid' "$OUT/memcheck.log") invalid accesses); $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
fi
echo "== ctest exit code $CTEST_RC"
exit $CTEST_RC
