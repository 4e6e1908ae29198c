#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# One command for a newcomer: install the dependencies, build, and generate text with the bundled
# default model. Usage: scripts/quickstart.sh ["prompt"] [more retnet generate options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
prompt="${1:-ROMEO:}"
shift || true
build/bin/retnet info
exec build/bin/retnet generate --prompt "$prompt" --max-new-tokens 500 --seed 1 "$@"
