#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The robustness part of CI (docs/robustness.md), run by scripts/test.sh after the normal build:
#   1. one clang build of the CPU engine, the CLI, the core tests and the libFuzzer targets with
#      AddressSanitizer + UndefinedBehaviorSanitizer (RETNET_FUZZ=ON implies RETNET_SANITIZE=ON;
#      no app, no CUDA), and its ctest (label core);
#   2. each fuzz target for a bounded time on a copy of its kept corpus fuzz/corpus/<name>.
# Without clang/libFuzzer it falls back to a gcc ASan+UBSan build and skips the fuzzers.
# Environment: RETNET_FUZZ_SECONDS (per target, default 60), RETNET_SANITIZE_BUILD (default
# build-sanitize), RETNET_CI_JOBS (default nproc), RETNET_CI_FUZZ=0 (gcc build, no fuzzing). Prints "ci-extra: N passed, M failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${RETNET_SANITIZE_BUILD:-build-sanitize}
FUZZ_SECONDS=${RETNET_FUZZ_SECONDS:-60}
JOBS=${RETNET_CI_JOBS:-$(nproc)}
FUZZ_TARGETS=(safetensors config tokenizer tokenizer_model npy cli_args run_metadata)
passed=0
failed=0
failures=()
step_ok() { passed=$((passed + 1)); echo "ci-extra: PASS $1"; }
step_fail() { failed=$((failed + 1)); failures+=("$1"); echo "ci-extra: FAIL $1"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# -O1 keeps the sanitized tests fast enough and the reports readable; asserts stay on.
FLAGS=(-DCMAKE_BUILD_TYPE=Sanitize "-DCMAKE_CXX_FLAGS_SANITIZE=-O1 -g1"
       -DRETNET_BUILD_APP=OFF -DRETNET_WITH_CUDA=OFF -DRETNET_SANITIZE=ON)
have_libfuzzer() {
  command -v clang++ >/dev/null || return 1
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    | clang++ -x c++ -fsanitize=fuzzer,address,undefined -o "${TMPDIR:-/tmp}/retnet-libfuzzer-probe.$$" - >/dev/null 2>&1 && rm -f "${TMPDIR:-/tmp}/retnet-libfuzzer-probe.$$"
}
fuzz=0
if [ "${RETNET_CI_FUZZ:-1}" != 0 ] && have_libfuzzer; then
  fuzz=1
  FLAGS+=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DRETNET_FUZZ=ON)
else
  echo "ci-extra: RETNET_CI_FUZZ=0 or no clang with libFuzzer (clang libclang-rt-14-dev): gcc sanitizer build, no fuzzing"
fi

# ---- 1. sanitizer build + core tests --------------------------------------------------------------
mkdir -p "$BUILD"
t0=$(date +%s)
targets=(retnet retnet_core_tests)
[ $fuzz = 1 ] && for t in "${FUZZ_TARGETS[@]}"; do targets+=("fuzz_$t"); done
if cmake -S . -B "$BUILD" "${FLAGS[@]}" >"$BUILD/ci-configure.log" 2>&1 &&
   cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}" >"$BUILD/ci-build.log" 2>&1; then
  step_ok "sanitizer build ($(elapsed "$t0"))"
else
  tail -40 "$BUILD/ci-configure.log" "$BUILD/ci-build.log" 2>/dev/null
  step_fail "sanitizer build"
  echo "ci-extra: $passed passed, $failed failed"
  exit 1
fi

t0=$(date +%s)
# Leaks are real failures too; halt on the first UB report (also compiled in, -fno-sanitize-recover).
# LeakSanitizer needs ptrace, which some containers forbid: probe it and say so instead of failing.
leaks=1
probe="${TMPDIR:-/tmp}/retnet-lsan-probe.$$"
probe_cxx=g++
[ $fuzz = 1 ] && probe_cxx=clang++
if echo 'int main() { return 0; }' | "$probe_cxx" -x c++ -fsanitize=address -o "$probe" - >/dev/null 2>&1 &&
   ! ASAN_OPTIONS=detect_leaks=1 "$probe" >/dev/null 2>&1; then
  leaks=0
  echo "ci-extra: LeakSanitizer cannot run here (no ptrace?): leak detection off"
fi
rm -f "$probe"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=$leaks:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if ctest --test-dir "$BUILD" -L core --output-on-failure -j"$JOBS" --timeout 900 >"$BUILD/ci-ctest.log" 2>&1; then
  step_ok "ASan+UBSan core tests: $(grep -E 'tests passed' "$BUILD/ci-ctest.log" | tail -1) ($(elapsed "$t0"))"
else
  grep -E "Failed|\*\*\*|ERROR: AddressSanitizer|runtime error:|SUMMARY" "$BUILD/ci-ctest.log" | head -60
  step_fail "ASan+UBSan core tests: $(grep -E 'tests passed' "$BUILD/ci-ctest.log" | tail -1)"
fi

# ---- 2. fuzzing ------------------------------------------------------------------------------------
if [ $fuzz = 1 ]; then
  artifacts="$BUILD/fuzz-artifacts"
  mkdir -p "$artifacts"
  run_fuzzer() {  # name -> log in $BUILD/fuzz-<name>.log; new inputs go to a scratch copy of the corpus
    local name=$1 work="$BUILD/fuzz-corpus/$1"
    rm -rf "$work" && mkdir -p "$work"
    "$BUILD/bin/fuzz_$name" -max_total_time="$FUZZ_SECONDS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$name-" "$work" "fuzz/corpus/$name" >"$BUILD/fuzz-$name.log" 2>&1
  }
  # As many at a time as there are cores (two on the CI machine).
  running=0
  for name in "${FUZZ_TARGETS[@]}"; do
    run_fuzzer "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  done
  wait
  for name in "${FUZZ_TARGETS[@]}"; do
    log="$BUILD/fuzz-$name.log"
    # -a: libFuzzer's "recommended dictionary" at the end of a log can hold raw bytes, and grep then
    # prints "binary file matches" instead of the count (a clean 1.2M-run fuzz_tokenizer_model was failed)
    execs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    if grep -aqE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:|fuzz property violated|deadly signal" "$log" ||
       [ -z "$execs" ]; then
      grep -aE "ERROR|runtime error|property violated|deadly|Test unit written" -A12 "$log" | head -40
      step_fail "fuzz_$name (crash input in $artifacts)"
    else
      step_ok "fuzz_$name: $execs executions in ${FUZZ_SECONDS}s, corpus $(ls "$BUILD/fuzz-corpus/$name" | wc -l) new inputs"
    fi
  done
fi

[ ${#failures[@]} -gt 0 ] && printf 'ci-extra: failed: %s\n' "${failures[@]}"
echo "ci-extra: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
