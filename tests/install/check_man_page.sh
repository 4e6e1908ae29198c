#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# The man page generated from the help (scripts/make-manpage.sh) has a section for every command
# `retnet --help` lists, the options of serve, and renders without groff warnings.
#   tests/install/check_man_page.sh RETNET.1.GZ RETNET
set -u
page=$1 retnet=$2
[ -f "$page" ] || { echo "no man page at $page"; exit 1; }
commands=$("$retnet" --help | sed -n '/^Commands:/,/^$/p' | awk 'NF > 1 && $1 != "Commands:" { print $1 }')
[ -n "$commands" ] || { echo "retnet --help lists no commands"; exit 1; }
for cmd in $commands; do
  zcat "$page" | grep -q "^\.SS \"retnet $cmd\"" || { echo "no section for retnet $cmd"; exit 1; }
done
zcat "$page" | grep -q -- '--allow-remote' || { echo "serve's --allow-remote is missing"; exit 1; }
if command -v man >/dev/null 2>&1; then
  warnings=$(man --warnings -l "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || { echo "man: $warnings"; exit 1; }
fi
echo "man page: $(echo $commands | wc -w) commands, renders cleanly"
