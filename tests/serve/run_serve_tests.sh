#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# `retnet serve` with real clients on loopback: curl (every endpoint, errors, the 503 of a full
# queue, a client disconnect cancelling its request, concurrent requests decoded together giving
# the texts they give one by one), the official `openai` npm package streaming
# a completion, and a bounded load test (CLIENTS concurrent clients, nothing lost, p50/p99, requests/s).
# Usage: run_serve_tests.sh RETNET MODEL_DIR   (installs tests/serve/node_modules on first use)
set -euo pipefail
retnet=$(realpath "$1")
model=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
clients=${RETNET_SERVE_LOAD_CLIENTS:-8}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "serve test FAILED: $*" >&2; exit 1; }

if [ ! -d "$here/node_modules/openai" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in tests/serve (the openai package)"
fi

# Starts a server on a free port; sets $base to its /v1 URL.
start_server() {
  local log="$work/server${#pids[@]}.log"
  "$retnet" serve --model "$model" --port 0 "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    if grep -qs "on http://" "$log"; then break; fi
    sleep 0.05
  done
  base=$(grep -o "http://[0-9.:]*/v1" "$log") || fail "server did not start: $(cat "$log")"
}

json_field() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const v=JSON.parse(s)$1;process.stdout.write(typeof v==='string'?v:JSON.stringify(v))})"; }
post() { curl -sS -o "$work/body" -w '%{http_code}' -H 'Content-Type: application/json' -d "$1" "$base/completions"; }

start_server --queue $((clients + 2))
prompt="ROMEO:"
[ "$(curl -sS "${base%/v1}/health" | json_field .status)" = ok ] || fail "/health"
[ "$(curl -sS "$base/models" | json_field '.data[0].object')" = model ] || fail "/v1/models"

# A greedy completion equals `retnet generate --greedy` of the same prompt.
code=$(post "{\"prompt\": \"$prompt\", \"max_tokens\": 24, \"temperature\": 0}")
[ "$code" = 200 ] || fail "completion answered $code: $(cat "$work/body")"
text=$(json_field '.choices[0].text' <"$work/body")
[ "$(json_field '.usage.completion_tokens' <"$work/body")" = 24 ] || fail "usage: $(cat "$work/body")"
[ "$(json_field '.choices[0].finish_reason' <"$work/body")" = length ] || fail "finish_reason: $(cat "$work/body")"
cli=$("$retnet" generate --model "$model" --prompt "$prompt" --max-new-tokens 24 --greedy 2>/dev/null)
[ "$cli" = "$text" ] || fail "server text '$text' differs from retnet generate '$cli'"

# Streaming: curl sees server-sent events ending in [DONE] whose pieces join to the same text.
curl -sS -N -H 'Content-Type: application/json' \
  -d "{\"prompt\": \"$prompt\", \"max_tokens\": 24, \"temperature\": 0, \"stream\": true}" "$base/completions" >"$work/sse"
tail -2 "$work/sse" | grep -qx 'data: \[DONE\]' || fail "stream does not end with [DONE]: $(tail -3 "$work/sse")"
streamed=$(grep '^data: {' "$work/sse" | sed 's/^data: //' | node -e \
  "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write(s.trim().split('\n').map(l=>JSON.parse(l).choices[0].text).join('')))")
[ "$streamed" = "$text" ] || fail "streamed '$streamed' != '$text'"

# The official openai client, streaming.
node "$here/openai_client.mjs" "$base" "$prompt" 24 >"$work/openai" || fail "openai client: $(cat "$work/openai")"
[ "$(json_field .text <"$work/openai")" = "$text" ] || fail "openai client got $(cat "$work/openai")"
[ "$(json_field .finish <"$work/openai")" = length ] || fail "openai client finish: $(cat "$work/openai")"
echo "serve: curl and openai $(node -p 'require("'"$here"'/node_modules/openai/package.json").version') agree: '$text'"

# Refusals: each a JSON error with the right status.
[ "$(post '{"prompt": "x", "n": 2}')" = 400 ] || fail "n=2 not refused"
[ "$(post '{"prompt": "x", "temperature": 9}')" = 400 ] || fail "temperature 9 not refused"
# integer fields: a whole number written as 2.0 is taken, 2.5 is not; ranges are printed as integers
[ "$(post '{"prompt": "x", "max_tokens": 2.0, "top_k": 40.0, "temperature": 0}')" = 200 ] \
  || fail "max_tokens 2.0 / top_k 40.0 refused: $(cat "$work/body")"
[ "$(json_field .usage.completion_tokens <"$work/body")" = 2 ] || fail "max_tokens 2.0 gave $(cat "$work/body")"
[ "$(post '{"prompt": "x", "top_k": 2.5}')" = 400 ] && grep -q 'top_k must be an integer' "$work/body" \
  || fail "top_k 2.5: $(cat "$work/body")"
[ "$(post '{"prompt": "x", "top_k": -1}')" = 400 ] && grep -q 'top_k must be in \[0, 16777216\]' "$work/body" \
  || fail "top_k -1: $(cat "$work/body")"
# a seed takes all of int64, compared exactly; token ids written as floats are ids
[ "$(post '{"prompt": [5, 6.0], "max_tokens": 1, "seed": 9223372036854775807}')" = 200 ] || fail "seed 2^63-1 / ids 6.0: $(cat "$work/body")"
[ "$(post '{"prompt": "x", "seed": 9223372036854775808}')" = 400 ] && grep -q 'seed must be in' "$work/body" \
  || fail "seed 2^63: $(cat "$work/body")"
[ "$(post '{"prompt": "x", "max_tokens": 1e400}')" = 400 ] && grep -q 'too large for a double' "$work/body" \
  || fail "1e400: $(cat "$work/body")"
[ "$(post '{"prompt": "x", "max_tokens": 1, "logprobs": false}')" = 200 ] || fail "logprobs false: $(cat "$work/body")"
[ "$(post 'not json')" = 400 ] || fail "bad JSON not refused"
[ "$(post '{"prompt": "x", "max_tokens": 999999}')" = 400 ] || fail "max_tokens over the limit not refused"
head -c 2000000 /dev/zero | tr '\0' 'a' | sed 's/^/{"prompt": "/; s/$/"}/' >"$work/big"
[ "$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$work/big" "$base/completions")" = 413 ] \
  || fail "a 2 MB body was not refused with 413"
[ "$(curl -sS -o /dev/null -w '%{http_code}' "$base/nothing")" = 404 ] || fail "unknown path not 404"
for bad in 0 257 2x; do
  "$retnet" serve --model "$model" --port 0 --parallel "$bad" >/dev/null 2>"$work/err" && fail "--parallel $bad accepted"
  grep -q -- "option --parallel \(must be in \[1, 256\], got $bad\|expects an integer, got '$bad'\)" "$work/err" \
    || fail "--parallel $bad: $(cat "$work/err")"
done
# An address other machines reach needs --allow-remote (the server has no authentication).
timeout 20 "$retnet" serve --model "$model" --port 0 --host 0.0.0.0 >/dev/null 2>"$work/err" && fail "--host 0.0.0.0 accepted"
grep -q -- "add --allow-remote" "$work/err" || fail "--host 0.0.0.0: $(cat "$work/err")"

# A client that leaves cancels its request: the server is idle again within a few seconds.
curl -sS -N -m 1 -H 'Content-Type: application/json' \
  -d '{"prompt": "x", "max_tokens": 4000, "stream": true}' "$base/completions" >/dev/null 2>&1 || true
for _ in $(seq 1 50); do
  [ "$(curl -sS "${base%/v1}/health" | json_field .in_flight)" = 0 ] && break
  sleep 0.1
done
health=$(curl -sS "${base%/v1}/health")
[ "$(echo "$health" | json_field .in_flight)" = 0 ] && [ "$(echo "$health" | json_field .cancelled)" -ge 1 ] \
  || fail "disconnect did not cancel: $health"

# Batched decoding: different greedy requests sent together (more than --parallel, so some wait
# and join as others finish) return the texts they return one by one.
prompts=("ROMEO:" "KING HENRY:" "First Citizen:" "O" "JULIET:" "Sir," "MENENIUS:")
for i in "${!prompts[@]}"; do
  post "{\"prompt\": \"${prompts[$i]}\", \"max_tokens\": $((12 + 5 * i)), \"temperature\": 0}" >/dev/null
  json_field '.choices[0].text' <"$work/body" >"$work/serial$i"
done
together_pids=()
for i in "${!prompts[@]}"; do
  curl -sS -o "$work/together$i" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"${prompts[$i]}\", \"max_tokens\": $((12 + 5 * i)), \"temperature\": 0}" "$base/completions" &
  together_pids+=($!)
done
wait "${together_pids[@]}" || fail "a concurrent request failed"
for i in "${!prompts[@]}"; do
  together=$(json_field '.choices[0].text' <"$work/together$i")
  [ "$together" = "$(cat "$work/serial$i")" ] || fail "'${prompts[$i]}' together gave '$together', alone '$(cat "$work/serial$i")'"
done
peak=$(curl -sS "${base%/v1}/health" | json_field .peak_active)
[ "$peak" -ge 2 ] || fail "the concurrent requests were never decoded together (peak_active $peak)"
echo "serve: ${#prompts[@]} concurrent greedy requests (up to $peak decoded together) equal the same requests one by one"

# Load: concurrent clients, every answer 200 with the greedy text.
node "$here/load_test.mjs" "$base" "$clients" 4 24 "$prompt" "$text" >"$work/load" || fail "load test lost answers: $(cat "$work/load")"
echo "serve: load test $(cat "$work/load")"

# A full queue answers 503 at once: with room for one request, a second concurrent one is refused.
start_server --parallel 1 --queue 0
curl -sS -o /dev/null -H 'Content-Type: application/json' -d '{"prompt": "x", "max_tokens": 4000}' "$base/completions" &
long=$!
for _ in $(seq 1 50); do
  [ "$(curl -sS "${base%/v1}/health" | json_field .in_flight)" = 1 ] && break
  sleep 0.05
done
code=$(post '{"prompt": "x", "max_tokens": 4}')
kill "$long" 2>/dev/null || true
[ "$code" = 503 ] || fail "a full queue answered $code"
echo "serve: all client tests passed"
