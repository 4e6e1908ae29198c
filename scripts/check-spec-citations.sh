#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Checks that every "§N" / "§N.M" cited in the tracked files (ranges such as §2.4–2.6 expanded)
# is a numbered heading of docs/spec.md, that every link to spec.md#anchor names one of its
# headings, and that each line citing a section says which document it means (spec.md).
# Prints one line per problem; exits non-zero if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."
spec=docs/spec.md
status=0
self=":!scripts/check-spec-citations.sh"  # its own patterns are not citations

# Section numbers and GitHub anchors of the spec's headings ("## 2. torchscale", "### 2.7 Form …").
sections=$(sed -nE 's/^##+ ([0-9]+(\.[0-9]+)?)\.? .*/\1/p' "$spec")
anchors=$(grep -E '^##+ ' "$spec" | sed -E 's/^#+ //' | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9 _\n-' | tr ' ' '-')

# Every cited number, one per line: "§2.4–2.6" and "§2.4–§2.6" give 2.4 2.5 2.6.
cited=$(git grep -hIoE '§[0-9]+(\.[0-9]+)?(–§?[0-9]+(\.[0-9]+)?)?' -- "$self" | sed 's/§//g' |
  awk -F'–' '{ if (NF == 1) { print $1; next }
               split($1, a, "."); split($2, b, ".");
               if (a[1] != b[1] || a[2] == "" || b[2] == "") { print $1; print $2; next }
               for (i = a[2]; i <= b[2]; i++) print a[1] "." i }' | sort -uV)
for n in $cited; do
  grep -qxF "$n" <<<"$sections" || { echo "cited but not a heading of $spec: §$n"; status=1; }
done

for a in $(git grep -hIoE 'spec\.md#[A-Za-z0-9_-]+' -- "$self" | sed 's/.*#//' | sort -u); do
  grep -qxF "$a" <<<"$anchors" || { echo "link to a missing heading: $spec#$a"; status=1; }
done

# A citation must name its document (docs/spec.md in code, a link to spec.md in docs).
while IFS= read -r line; do
  echo "citation without docs/spec.md: $line"
  status=1
done < <(git grep -nI '§' -- ":!$spec" "$self" | grep -v 'spec\.md' || true)
if git grep -nI 'retnet-reference\|shared/spec' -- "$self"; then
  echo "the lines above cite a document outside the repository"
  status=1
fi

echo "spec citations: $(wc -w <<<"$cited") section numbers cited, $(wc -l <<<"$sections") headings in $spec," \
  "$(git grep -hIoE 'spec\.md#[A-Za-z0-9_-]+' -- "$self" | sort -u | wc -l) distinct anchors linked: $([ $status = 0 ] && echo OK || echo FAILED)"
exit "$status"
