#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Installs the Debian 12 packages RetNet Studio builds against. Idempotent; needs root (or sudo).
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  nlohmann-json3-dev libopenblas-dev libsentencepiece-dev sentencepiece
  libgtest-dev
  qt6-base-dev libqcustomplot-dev libgl1-mesa-dev
  clang libclang-rt-14-dev
  libcpp-httplib-dev libcli11-dev help2man
  libopenmpi-dev openmpi-bin
  curl desktop-file-utils appstream lintian dpkg-dev file
)
# The serve tests' JavaScript client needs Node.js and npm: Debian's, unless the machine already
# has them (a Node.js build that bundles npm conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
