#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# `retnet serve` of a Transformer twin under --max-memory, with curl only: each request reserves
# its KV cache at prompt + max_tokens when admitted. One that can never fit is refused with 507
# before it runs; one that fits alone but not beside a running request gets 503 with
# Retry-After, and is admitted once that request has gone. (Before, the server admitted both and
# the caches grew past the limit mid-generation.)
# Usage: run_serve_twin_memory.sh RETNET RETNET_MODEL_DIR
set -euo pipefail
retnet=$(realpath "$1")
model=$(realpath "$2")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "serve twin memory test FAILED: $*; the server said: $(tail -c 2000 "$work/log" 2>/dev/null)" >&2; exit 1; }

# The bundled model's twin: 6 layers × 2 × 384 floats, 18 KiB of KV cache a token. Under 111 MiB
# less its float32 weights (47 MiB: held all along, so counted) and a 64-token prompt's working
# memory (3.4 MiB), 3000 tokens (53 MiB) fit, but not 1000 (18 MiB) more beside them, and 4000
# (70 MiB) never.
"$retnet" init --arch transformer --like "$model" --out "$work/twin" --seed 1 >/dev/null 2>&1 || fail "init of the twin"
"$retnet" serve --model "$work/twin" --port 0 --max-memory 111M --max-prompt-tokens 64 --parallel 2 >"$work/log" 2>&1 &
pids+=($!)
for _ in $(seq 1 400); do grep -qs "on http://" "$work/log" && break; sleep 0.05; done
base=$(grep -o "http://[0-9.:]*/v1" "$work/log") || fail "server did not start: $(cat "$work/log")"
post() {  # post BODY [curl options]: prints the status; the body in $work/body, the headers in $work/headers
  local body=$1
  shift
  curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
    -d "$body" "$base/completions" || true
}

code=$(post '{"prompt": "x", "max_tokens": 4000}')
[ "$code" = 507 ] || fail "a request whose cache can never fit answered $code: $(cat "$work/body")"
grep -Eq '"message":"the KV cache of this request at [0-9]+ prompt \+ 4000 max_tokens tokens needs 70 MiB, more than the' "$work/body" \
  || fail "507 message: $(cat "$work/body")"
grep -q 'ask for fewer max_tokens","param":"max_tokens","type":"server_error"' "$work/body" || fail "507 body: $(cat "$work/body")"

# A streams 3000 tokens (greedy: this random twin never samples EOS then, so A runs until its
# client leaves); B asks for 1000 beside it.
curl -sS -N -m 120 -H 'Content-Type: application/json' \
  -d '{"prompt": "x", "max_tokens": 3000, "temperature": 0, "stream": true}' "$base/completions" >"$work/a" 2>/dev/null &
client=$!
pids+=("$client")
for _ in $(seq 1 400); do grep -qs '^data: {' "$work/a" && break; sleep 0.05; done
grep -qs '^data: {' "$work/a" || fail "the first request does not stream: $(cat "$work/a")"
code=$(post '{"prompt": "x", "max_tokens": 1000}')
[ "$code" = 503 ] || fail "a request that does not fit beside a running one answered $code: $(cat "$work/body")"
grep -qi '^Retry-After: 1' "$work/headers" || fail "503 without Retry-After: $(cat "$work/headers")"
grep -Eq 'the KV caches of the requests running or waiting hold 53 MiB of the 6[01] MiB the memory limit leaves them, and this one.s 18 MiB does not fit beside them; retry later' "$work/body" \
  || fail "503 message: $(cat "$work/body")"

# A's client leaves: its reservation goes with it, and B is admitted (200 as it starts streaming).
kill "$client"
for _ in $(seq 1 200); do
  curl -sS "${base%/v1}/health" | grep -q '"in_flight":0' && break
  sleep 0.05
done
curl -sS "${base%/v1}/health" | grep -q '"kv_reserved":0' || fail "reservation kept: $(curl -sS "${base%/v1}/health")"
code=$(post '{"prompt": "x", "max_tokens": 1000, "stream": true}' -m 3)
[ "$code" = 200 ] || fail "the request was not admitted once the first had gone: $code $(cat "$work/body")"
code=$(post '{"prompt": "x", "max_tokens": 8}')
[ "$code" = 200 ] || fail "a small request answered $code: $(cat "$work/body")"
echo "serve: a twin's KV cache is reserved at admission (507 never fits, 503 not beside others)"
