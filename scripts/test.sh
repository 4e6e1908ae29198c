#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One command to pass the tests: install the dependencies, build, run every test with CTest.
# GPU tests report "skipped" on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
QT_QPA_PLATFORM=offscreen ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
