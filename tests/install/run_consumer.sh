#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the engine from BUILD_DIR into a scratch prefix, then builds tests/install/consumer
# against it twice, through find_package(RetNet CONFIG) and through pkg-config, and runs both on a
# reference fixture. Usage: run_consumer.sh BUILD_DIR FIXTURE_DIR
set -euo pipefail
build=$(realpath "$1")
fixture=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for component in dev cli; do
  cmake --install "$build" --prefix "$work/prefix" --component "$component" >/dev/null
done
test -x "$work/prefix/bin/retnet"
test -f "$work/prefix/share/retnet-studio/models/default/config.json"
# A build with CUDA installs its module where the installed retnet looks for it: --device cuda then
# says what the machine lacks (or runs), never that the module is missing.
module=$(find "$work/prefix" -name libretnet-cuda.so)
if [ -n "$module" ]; then
  notice=$(env -u RETNET_CUDA_MODULE "$work/prefix/bin/retnet" generate --model "$fixture" --tokens 1,2 -n 1 --greedy \
           --device cuda 2>&1 >/dev/null)
  if printf '%s' "$notice" | grep -q 'libretnet-cuda\|undefined symbol'; then
    echo "the installed retnet did not load its CUDA module ($module): $notice" >&2
    exit 1
  fi
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$here/consumer" -B "$work/cmake-build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/retnet_consumer" "$fixture"

pc=$(find "$work/prefix" -name retnet.pc)
export PKG_CONFIG_PATH="$(dirname "$pc")"
c++ -O1 -o "$work/pc_consumer" "$here/consumer/main.cpp" $(pkg-config --cflags --libs retnet)
"$work/pc_consumer" "$fixture"
echo "install consumer: CMake package and pkg-config builds both pass"
