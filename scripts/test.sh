#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One command to pass the tests: install the dependencies, build, run every test with CTest.
# GPU tests report "skipped" on machines without a GPU. Before the main ctest run,
# scripts/ci-extra.sh builds the engine with ASan + UBSan, runs its tests and fuzzes the file
# parsers for a bounded time (docs/robustness.md); RETNET_CI_EXTRA=0 skips that step.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
extra_status=0
if [ "${RETNET_CI_EXTRA:-1}" != 0 ]; then
  set +e
  scripts/ci-extra.sh 2>&1 | tee build/ci-extra.log
  extra_status=${PIPESTATUS[0]}
  set -e
fi
ctest_status=0
QT_QPA_PLATFORM=offscreen ctest --test-dir build --output-on-failure -j"$(nproc)" "$@" || ctest_status=$?
if [ "$extra_status" -ne 0 ]; then
  # ctest's summary above covers the normal build; the last line counts the sanitizer/fuzz steps.
  grep -E "^ci-extra: (FAIL|failed)" build/ci-extra.log || true
  tail -1 build/ci-extra.log
  exit "$extra_status"
fi
exit "$ctest_status"
