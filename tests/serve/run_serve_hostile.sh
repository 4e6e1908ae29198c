#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# `retnet serve` against a hostile user, with curl only, on loopback: SIGINT the moment the server
# says it listens (a signal between bind and listen was lost: the server hung), SIGTERM during a
# streamed request (a signal landing on an OpenBLAS thread killed the server, exit 143), a second
# server on a port in use (cpp-httplib's SO_REUSEPORT let it bind and share the clients), two
# SIGTERMs at once, a request body nested too deep, chunked or compressed.
# Usage: run_serve_hostile.sh RETNET MODEL_DIR
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
fail() { echo "serve hostile test FAILED: $*" >&2; exit 1; }

# Starts a server on a free port; sets $pid and $port.
start_server() {
  local log="$work/server${#pids[@]}.log"
  "$retnet" serve --model "$model" --port 0 "$@" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 400); do
    if grep -qs "on http://" "$log"; then break; fi
    sleep 0.01
  done
  port=$(grep -o "127.0.0.1:[0-9]*" "$log" | cut -d: -f2) || fail "server did not start: $(cat "$log")"
}
# Waits up to 5 s for $pid to end; sets $status to its exit status, or "hung".
await_exit() {
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  status=0
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; status=hung; return; fi
  wait "$pid" || status=$?
}

for i in 1 2 3 4 5; do
  start_server
  kill -INT "$pid"
  await_exit
  [ "$status" = 0 ] || fail "SIGINT right after startup (try $i): exit status $status"
done

start_server
curl -sS -N -m 30 -H 'Content-Type: application/json' \
  -d '{"prompt": "x", "max_tokens": 4000, "stream": true}' "http://127.0.0.1:$port/v1/completions" >"$work/sse" &
client=$!
for _ in $(seq 1 100); do grep -qs '^data: {' "$work/sse" && break; sleep 0.05; done
kill -TERM "$pid"
await_exit
[ "$status" = 0 ] || fail "SIGTERM during a streamed request: exit status $status"
grep -q "retnet serve: stopping: requests in flight are cancelled" "$work/server$((${#pids[@]} - 1)).log" \
  || fail "no line says the server stops: $(cat "$work/server$((${#pids[@]} - 1)).log")"
wait "$client" || fail "the streaming client saw an error at shutdown"
tail -2 "$work/sse" | grep -qx 'data: \[DONE\]' || fail "the stream was cut without [DONE]: $(tail -c 300 "$work/sse")"

# Two SIGTERMs at once (coreutils' timeout sends them so) are one request: the same graceful stop.
# Before, the second ended the server at once (143, the stream cut) in about half the runs.
for i in 1 2 3; do
  start_server
  curl -sS -N -m 30 -H 'Content-Type: application/json' \
    -d '{"prompt": "x", "max_tokens": 4000, "stream": true}' "http://127.0.0.1:$port/v1/completions" >"$work/sse2" &
  client=$!
  for _ in $(seq 1 100); do grep -qs '^data: {' "$work/sse2" && break; sleep 0.05; done
  kill -TERM "$pid"; kill -TERM "$pid"
  await_exit
  [ "$status" = 0 ] || fail "two SIGTERMs at once (try $i): exit status $status"
  wait "$client" || fail "two SIGTERMs at once (try $i): the streaming client saw an error"
  tail -2 "$work/sse2" | grep -qx 'data: \[DONE\]' || fail "two SIGTERMs at once (try $i): the stream was cut"
done

# A client that trickles its request (a byte a second: the read timeout never fires) and an idle
# connection do not hold a stop: it exits 0 within about 3 s. Before, the trickle held it 29 s.
start_server
exec 3<>"/dev/tcp/127.0.0.1/$port" 4<>"/dev/tcp/127.0.0.1/$port"
( printf 'POST /v1/completions HTTP/1.1\r\n' >&3; for _ in $(seq 1 30); do printf X >&3 2>/dev/null || break; sleep 1; done ) &
trickler=$!
sleep 0.5
kill -INT "$pid"
await_exit
kill "$trickler" 2>/dev/null || true; wait "$trickler" 2>/dev/null || true; exec 3>&- 4>&-
[ "$status" = 0 ] || fail "SIGINT with a trickling client and an idle connection: exit status $status"

start_server
if "$retnet" serve --model "$model" --port "$port" >"$work/second" 2>&1; then fail "a second server bound port $port"; fi
grep -q "cannot listen on 127.0.0.1:$port: the port is in use" "$work/second" || fail "second server said: $(cat "$work/second")"
[ "$(wc -l <"$work/second")" = 1 ] || fail "more than one line: $(cat "$work/second")"
# A body nested 1,000 deep is refused in one 400 naming the nesting, and the server goes on.
python3 -c "print('{\"prompt\": \"x\", \"stop\": ' + '[' * 1000 + ']' * 1000 + '}')" >"$work/deep.json"
curl -sS -m 10 -H 'Content-Type: application/json' --data-binary @"$work/deep.json" \
  "http://127.0.0.1:$port/v1/completions" >"$work/deep_reply" || fail "the deeply nested request failed: $?"
grep -q 'nests arrays or objects more than 64 levels deep' "$work/deep_reply" || fail "deep body: $(head -c 300 "$work/deep_reply")"
curl -sS -m 30 -H 'Content-Type: application/json' -d '{"prompt": "x", "max_tokens": 2}' \
  "http://127.0.0.1:$port/v1/completions" | grep -q '"choices"' || fail "the server did not answer after the deep body"
# --max-body holds for bodies without a Content-Length too: cpp-httplib read a chunked or compressed
# body whole (285 KB of gzip inflated to 300 MB). Both are refused before their body is read.
python3 -c "import json; print(json.dumps({'prompt': 'x', 'max_tokens': 2, 'user': 'x' * 5000}))" >"$work/plain.json"
gzip -c "$work/plain.json" >"$work/plain.json.gz"
code=$(curl -sS -o "$work/gz_reply" -w '%{http_code}' -m 10 -H 'Content-Type: application/json' -H 'Content-Encoding: gzip' \
  --data-binary @"$work/plain.json.gz" "http://127.0.0.1:$port/v1/completions")
[ "$code" = 415 ] || fail "a gzip body answered $code: $(head -c 300 "$work/gz_reply")"
code=$(curl -sS -o "$work/chunked_reply" -w '%{http_code}' -m 10 -H 'Content-Type: application/json' \
  -H 'Transfer-Encoding: chunked' --data-binary @"$work/plain.json" "http://127.0.0.1:$port/v1/completions")
[ "$code" = 411 ] || fail "a chunked body answered $code: $(head -c 300 "$work/chunked_reply")"
curl -sS -m 30 -H 'Content-Type: application/json' --data-binary @"$work/plain.json" \
  "http://127.0.0.1:$port/v1/completions" | grep -q '"choices"' || fail "the server did not answer after the refused bodies"
# A temperature below the sampler's smallest (1e-100) is refused in a 400 naming it, and the server goes on
# (it used to end the decode thread, and the server with it).
code=$(curl -sS -o "$work/cold_reply" -w '%{http_code}' -m 10 -H 'Content-Type: application/json' \
  -d '{"prompt": "x", "temperature": 1e-200}' "http://127.0.0.1:$port/v1/completions")
[ "$code" = 400 ] && grep -q 'temperature' "$work/cold_reply" || fail "a temperature of 1e-200 answered $code: $(head -c 300 "$work/cold_reply")"
curl -sS -m 30 -H 'Content-Type: application/json' -d '{"prompt": "x", "max_tokens": 2, "temperature": 0}' \
  "http://127.0.0.1:$port/v1/completions" | grep -q '"choices"' || fail "the server did not answer after the cold request"
echo "serve: all hostile tests passed"
