#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Builds the .deb packages (retnet, retnet-studio, libretnet-dev) from an existing build directory
# with CPack (installing under /usr) and checks them with lintian. Usage: scripts/package.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
# Debian's paths: /usr, and the multiarch library directory (where pkg-config looks when cross-compiling).
cmake -S . -B "$build" -DCMAKE_INSTALL_PREFIX=/usr \
      -DCMAKE_INSTALL_LIBDIR="lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)" >/dev/null
(cd "$build" && cpack -G DEB >/dev/null)
debs=$(ls "$build"/*.deb)
for deb in $debs; do
  echo "== $(basename "$deb") ($(du -h "$deb" | cut -f1))"
  dpkg-deb --field "$deb" Depends | sed 's/^/   Depends: /'
  lintian --tag-display-limit 0 "$deb" || true
done
