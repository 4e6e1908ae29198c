#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Hostile cases against a built `retnet` (issue #13): what a careless or hostile user would type.
# Each case names the exit code it must end with; every case must also end within its time limit,
# never die of a signal, print at most one line on stderr when it fails, and never send a raw
# escape character to the terminal. Prints one line per failure and "hostile: N tried, M passed".
#   tests/robustness/hostile_cases.sh [build/bin/retnet]
# Uses a scratch directory and FIFOs and (as root) device nodes made there; never writes a path in
# /dev other than through stdout, so it is safe to run against a binary without the fixes.
set -u
RETNET=$(realpath "${1:-build/bin/retnet}")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/retnet-hostile.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1  # outputs a binary without the fixes might misplace (e.g. "-") land here
tried=0 passed=0

# check EXPECTED TIMEOUT_S DESCRIPTION -- ARGS...       (stdin from /dev/null, stdout to $W/out)
# check EXPECTED TIMEOUT_S DESCRIPTION =TEXT ARGS...    the same, and stderr or stdout must hold TEXT
check() {
  local expected=$1 limit=$2 what=$3 want=${4#=}; [ "$4" = -- ] && want=""; shift 4
  tried=$((tried + 1))
  local rc
  timeout -s KILL "$limit" "$RETNET" "$@" </dev/null >"$W/out" 2>"$W/err"; rc=$?
  local lines; lines=$(wc -l <"$W/err")
  local why=""
  [ "$rc" = "$expected" ] || why="exit $rc, expected $expected"
  [ "$rc" = 137 ] && why="killed after ${limit}s (hang?)"
  [ "$expected" != 0 ] && [ "$lines" -gt 1 ] && why="$why; $lines lines on stderr"
  grep -q $'\x1b' "$W/err" && why="$why; raw escape character on stderr"
  [ -z "${BINARY_OUT:-}" ] && grep -q $'\x1b' "$W/out" && why="$why; raw escape character on stdout"
  [ -n "$want" ] && ! grep -qF -- "$want" "$W/out" "$W/err" && why="$why; no '$want' in the output"
  if [ -z "$why" ]; then passed=$((passed + 1)); else echo "FAIL: $what: $why: $(head -c 300 "$W/err")"; fi
}

# --- fixtures: a small model with a tokenizer, texts, FIFOs ---------------------------------------
M="$W/model"
printf '%s' '{"model_type": "retnet", "hidden_size": 32, "num_heads": 2, "num_hidden_layers": 2, "expand_k": 1, "expand_v": 2, "intermediate_size": 64, "vocab_size": 400, "bos_token_id": 1, "eos_token_id": 2}' >"$W/small.json"
"$RETNET" init --config "$W/small.json" --out "$M" 2>/dev/null
head -c 200000 "$SRC/tests/data/tokenizer/corpus.txt" >"$W/text.txt"
for i in 1 2 3; do cat "$SRC/tests/data/tokenizer/corpus.txt"; done >"$W/train.txt"
"$RETNET" tokenizer train --text "$W/train.txt" --vocab-size 400 --out "$M" >/dev/null 2>&1
mkfifo "$W/fifo" "$W/fifo2"
mkdir -p "$W/adir"
printf '{"model_type": "retnet", "hidden_size": 16, "num_heads": 2, "num_hidden_layers": 1, "expand_k": 1, "expand_v": 1, "intermediate_size": 32, "vocab_size": 400, "bos_token_id": 1, "eos_token_id": 2}' >"$W/tiny.json"
TRAIN=(train --data "$W/train.txt" --config "$W/tiny.json" --tokenizer "$M/tokenizer.model" --batch 2 --seq-len 16 --threads 1 --eval-every 0 --save-every 0)

# --- 1. outputs ------------------------------------------------------------------------------------
printf old >"$W/real.npy"; ln -s real.npy "$W/link.npy"
check 0 60 "--out symlink" -- logits --model "$M" --tokens 1,5,6 --out "$W/link.npy"
[ -L "$W/link.npy" ] && [ "$(head -c 6 "$W/real.npy" | tail -c 5)" = NUMPY ] || echo "FAIL: symlink replaced or target not written"
check 1 30 "--out FIFO without reader" "=nobody reads" logits --model "$M" --tokens 1,5,6 --out "$W/fifo"
(cat "$W/fifo2" >"$W/fifo2.got" &) ; sleep 0.2
check 0 60 "--out FIFO with reader" -- logits --model "$M" --tokens 1,5,6 --out "$W/fifo2"
[ -p "$W/fifo2" ] || echo "FAIL: FIFO replaced"
check 1 30 "--out directory" "=is a directory" logits --model "$M" --tokens 1,5,6 --out "$W/adir"
BINARY_OUT=1 check 0 60 "--out -" -- logits --model "$M" --tokens 1,5,6 --out -
# Not /dev/stdout or /dev/null themselves: a binary without the fix would replace them (as root).
BINARY_OUT=1 check 0 60 "--out /proc/self/fd/1" -- logits --model "$M" --tokens 1,5,6 --out /proc/self/fd/1
if mknod "$W/null" c 1 3 2>/dev/null && mknod "$W/full" c 1 7 2>/dev/null && : >"$W/null" 2>/dev/null; then
  check 0 60 "--out a null device (written in place)" -- logits --model "$M" --tokens 1,5,6 --out "$W/null"
  [ -c "$W/null" ] || echo "FAIL: the device was replaced by a regular file"
  check 1 30 "--out a full device" -- logits --model "$M" --tokens 1,5,6 --out "$W/full"
fi
check 1 30 "--out below a file" -- logits --model "$M" --tokens 1,5,6 --out "$W/text.txt/x.npy"
ln -s loop1 "$W/loop2"; ln -s loop2 "$W/loop1"
check 1 30 "--out symlink loop" "=symlink loop" logits --model "$M" --tokens 1,5,6 --out "$W/loop1"
check 1 30 "init --out a FIFO" -- init --config "$W/tiny.json" --out "$W/fifo"

# --- 2. memory -------------------------------------------------------------------------------------
BIG=("${TRAIN[@]}"); BIG[8]=65536; BIG[10]=1024  # the values of --batch and --seq-len
check 1 30 "train --batch 65536 --seq-len 1024" "=more than the memory limit of" "${BIG[@]}" --out "$W/r0"
printf '{"model_type": "retnet", "hidden_size": 8192, "num_heads": 64, "num_hidden_layers": 80, "expand_k": 1, "expand_v": 2, "intermediate_size": 32768, "vocab_size": 256000}' >"$W/giant.json"
check 1 30 "init 60B parameters" "=more than the memory limit of" init --config "$W/giant.json" --out "$W/giant"
T16K=1$(printf ',5%.0s' $(seq 1 16000))
check 1 30 "inspect --json 16k tokens, 2G cap" "=more than the memory limit of" inspect --model "$M" --tokens "$T16K" --json --max-memory 2G
check 1 30 "logits 16k tokens, 64M cap" "=more than the memory limit of" logits --model "$M" --tokens "$T16K" --out "$W/l.npy" --max-memory 64M
check 1 30 "compare 16k tokens, 256M cap" "=more than the memory limit of" compare --model "$M" --tokens "$T16K" --max-memory=256M
check 1 30 "bench --lengths 1000000" "=more than the memory limit of" bench --model "$M" --lengths 1000000
check 1 30 "bench --batch 100000 under 256M" "=decoding --batch 100000" bench --model "$M" --mode decode --batch 1,100000 --max-memory 256M
check 1 30 "bench --contexts 100000000" "=the prefill of --contexts 100000000" bench --model "$M" --mode decode --contexts 64,100000000
head -c 15000 /dev/urandom | base64 -w0 >"$W/long-prompt.txt"  # about a token a character
check 1 30 "generate: a long prompt in the parallel form under 128M" "=--mode chunkwise needs far less" generate -m "$M" -f "$W/long-prompt.txt" --max-prompt-tokens 100000 --max-memory 128M
check 1 10 "serve a model larger than --max-memory" "=the weights of" serve --model "$M" --port 0 --max-memory 16K
check 1 10 "serve --max-prompt-tokens 16000000 under 1G" "=a prompt of --max-prompt-tokens 16000000" serve --model "$M" --port 0 --max-prompt-tokens 16000000 --max-memory 1G
check 1 30 "eval --window 1048576 under 1G" "=more than the memory limit of" eval --model "$M" --text "$W/text.txt" --window 1048576 --max-memory 1G
check 1 10 "a model larger than --max-memory" "=the weights of" info --model "$M" --max-memory 16K
check 1 30 "convert a model larger than --max-memory" "=the weights of" convert --model "$M" --out "$W/cv" --max-memory 16K
check 1 10 "--max-memory junk" "=expects a size" info --model "$M" --max-memory 12abc
check 1 10 "--max-memory without value" -- info --model "$M" --max-memory
check 0 120 "eval of a tail" -- eval --model "$M" --text "$W/text.txt" --tail 0.05 --threads 1
# OPENBLAS_NUM_THREADS: OpenBLAS's per-core threads and buffers alone can exceed the cap on a many-core machine.
( ulimit -v 1572864; export OPENBLAS_NUM_THREADS=2; check 0 120 "eval --stream under ulimit -v 1.5G" -- eval --model "$M" --text "$W/text.txt" --tail 0.05 --stream; echo "$tried $passed" >"$W/sub" )
read -r tried passed <"$W/sub"

# --- 3. training runs ------------------------------------------------------------------------------
check 0 120 "train fresh" -- "${TRAIN[@]}" --out "$W/run" --steps 2
check 1 60 "train again without --resume" "=already holds a training run" "${TRAIN[@]}" --out "$W/run" --steps 2
check 1 60 "train --resume --overwrite" -- "${TRAIN[@]}" --out "$W/run" --steps 2 --resume --overwrite
check 0 60 "train --resume a finished run" -- "${TRAIN[@]}" --out "$W/run" --steps 2 --resume
grep -q "already complete" "$W/out" || echo "FAIL: finished run not reported as complete"
check 1 60 "train --resume other data" "=is not the text" "${TRAIN[@]/$W\/train.txt/$W/text.txt}" --out "$W/run" --steps 3 --resume
check 1 60 "train --resume without a checkpoint" -- "${TRAIN[@]}" --out "$W/empty-run" --steps 3 --resume
check 0 120 "train --overwrite" -- "${TRAIN[@]}" --out "$W/run" --steps 2 --overwrite
flock "$W/run/train.lock" sleep 20 & sleep 0.5
check 1 30 "second writer" "=is in use by another" "${TRAIN[@]}" --out "$W/run" --steps 3 --resume
kill %% 2>/dev/null; wait 2>/dev/null
check 1 30 "train --out a regular file" -- "${TRAIN[@]}" --out "$W/text.txt" --steps 1
check 1 30 "train --steps 0" -- "${TRAIN[@]}" --out "$W/r1" --steps 0

# --- 4. FIFOs and directories where a file is expected ---------------------------------------------
cp -r "$M" "$W/m-fifo-config"; rm "$W/m-fifo-config/config.json"; mkfifo "$W/m-fifo-config/config.json"
cp -r "$M" "$W/m-fifo-tok"; rm "$W/m-fifo-tok/tokenizer.model"; mkfifo "$W/m-fifo-tok/tokenizer.model"
cp -r "$M" "$W/m-fifo-weights"; rm "$W/m-fifo-weights/model.safetensors"; mkfifo "$W/m-fifo-weights/model.safetensors"
cp -r "$M" "$W/m-dir-config"; rm "$W/m-dir-config/config.json"; mkdir "$W/m-dir-config/config.json"
cp -r "$M" "$W/m-dir-weights"; rm "$W/m-dir-weights/model.safetensors"; mkdir "$W/m-dir-weights/model.safetensors"
cp -r "$M" "$W/m-loop"; rm "$W/m-loop/model.safetensors"; ln -s model.safetensors "$W/m-loop/model.safetensors"
check 1 20 "config.json a FIFO" "=FIFO" info --model "$W/m-fifo-config"
check 1 20 "tokenizer.model a FIFO" "=FIFO" generate --model "$W/m-fifo-tok" --prompt hi --max-new-tokens 1
check 1 20 "model.safetensors a FIFO" "=FIFO" info --model "$W/m-fifo-weights"
check 1 20 "config.json a directory" "=is a directory" info --model "$W/m-dir-config"
check 1 20 "model.safetensors a directory" "=is a directory" info --model "$W/m-dir-weights"
check 1 20 "model.safetensors a symlink loop" "=symlink loop" info --model "$W/m-loop"
check 1 20 "eval --text a FIFO" "=FIFO" eval --model "$M" --text "$W/fifo"
check 1 20 "eval --text a directory" "=is a directory" eval --model "$M" --text "$W/adir"
check 1 20 "train --data a FIFO" "=FIFO" "${TRAIN[@]/$W\/train.txt/$W/fifo}" --out "$W/r2" --steps 1
check 1 20 "train --config a FIFO" "=FIFO" "${TRAIN[@]/$W\/tiny.json/$W/fifo}" --out "$W/r3" --steps 1
check 1 20 "tokenizer train --text a FIFO" "=FIFO" tokenizer train --text "$W/fifo" --vocab-size 300 --out "$W/tok"
check 1 20 "tokenizer encode --model a FIFO" "=FIFO" tokenizer encode --model "$W/fifo" --text hi
check 1 20 "init --config a FIFO" "=FIFO" init --config "$W/fifo" --out "$W/i"
check 1 20 "--model a FIFO" -- info --model "$W/fifo"

# --- 5. stdout errors ------------------------------------------------------------------------------
full() { tried=$((tried + 1)); local rc; timeout -s KILL 60 "$RETNET" "$@" </dev/null >/dev/full 2>"$W/err"; rc=$?
  if [ $rc = 1 ] && grep -q "cannot write to standard output" "$W/err" && [ "$(wc -l <"$W/err")" = 1 ]; then passed=$((passed + 1)); else echo "FAIL: $* > /dev/full: exit $rc: $(head -c 200 "$W/err")"; fi; }
full info --model "$M"
full generate --model "$M" --prompt hi --max-new-tokens 4
full generate --model "$M" --prompt hi --max-new-tokens 4 --json
full tokenizer encode --model "$M" --text hello
full inspect --model "$M" --tokens 1,5,6 --json
full compare --model "$M" --tokens 1,5,6 --json
full --version
full generate --help
pipe() { tried=$((tried + 1)); local rc; set -o pipefail; timeout -s KILL 60 "$RETNET" "$@" 2>"$W/err" </dev/null | head -c 10 >/dev/null; rc=$?; set +o pipefail
  if [ $rc = 141 ] && [ ! -s "$W/err" ]; then passed=$((passed + 1)); else echo "FAIL: $* | head: exit $rc: $(head -c 200 "$W/err")"; fi; }
pipe generate --model "$M" --prompt hi --max-new-tokens 100000 --ignore-eos
pipe generate --model "$M" --prompt hi --max-new-tokens 100000 --ignore-eos --json

# --- 6. messages -----------------------------------------------------------------------------------
check 0 120 "train --out with newline and ESC" -- "${TRAIN[@]}" --out "$W/r"$'\n\x1b[2J' --steps 1
check 1 20 "--top-p 0" "=1e-09" generate --model "$M" --prompt a --top-p 0
grep -q "1e-09" "$W/err" || echo "FAIL: --top-p 0 message: $(cat "$W/err")"
cp -r "$M" "$W/m-act"
{ head -c -1 "$W/small.json"; printf ', "hidden_act": "'; head -c 1000000 /dev/zero | tr '\0' x; printf '"}'; } >"$W/m-act/config.json"
check 1 20 "1 MB hidden_act" "=bytes cut" info --model "$W/m-act"
[ "$(wc -c <"$W/err")" -lt 5000 ] || echo "FAIL: 1 MB value echoed whole"
check 1 60 "char tokenizer too small" "=at least" tokenizer train --text "$W/text.txt" --type char --vocab-size 64 --out "$W/tk"
grep -q "\.cc(" "$W/err" && echo "FAIL: sentencepiece internals leak: $(cat "$W/err")"
cp -r "$M" "$W/m-badtok"; printf junk >"$W/m-badtok/tokenizer.model"
check 1 30 "convert with an unreadable tokenizer" -- convert --model "$W/m-badtok" --out "$W/converted"
[ -e "$W/converted" ] && echo "FAIL: convert left a half-written directory"
check 1 10 "invalid UTF-8 prompt" -- generate --model "$M" --prompt $'\xc3\x28'
check 0 30 "prompt with control characters" -- generate --model "$M" --prompt $'a\x1b[2Jb\x07' --max-new-tokens 2
check 1 10 "path with ESC in the error" -- info --model "$W/nope"$'\x1b[2J'

# --- 7. options ------------------------------------------------------------------------------------
for bad in 12abc 1e9 -5 0x10 "" " 7" 99999999999999999999; do
  check 1 10 "--max-new-tokens '$bad'" -- generate --model "$M" --prompt a --max-new-tokens "$bad"
done
for bad in 1e9 12abc 0 -3 "64,,256" "64;256"; do
  check 1 10 "bench --lengths '$bad'" -- bench --model "$M" --lengths "$bad" --repeats 1
done
check 1 10 "bench --lengths beyond an int" "=--lengths value 99999999999 is out of range (at most 2147483647)" \
  bench --model "$M" --lengths 64,99999999999 --repeats 1
for bad in nan inf -1 1e999 abc; do
  check 1 10 "--temperature '$bad'" -- generate --model "$M" --prompt a --temperature "$bad"
done
check 1 10 "--greedy=maybe" "=is a flag" generate --model "$M" --prompt a --greedy=maybe
check 0 30 "--greedy=0" -- generate --model "$M" --prompt a --greedy=0 --max-new-tokens 2
check 0 30 "--json=false" -- info --model "$M" --json=false
check 1 10 "unknown option" -- generate --model "$M" --prompt a --temprature 1
check 1 10 "option twice" -- generate --model "$M" --prompt a --prompt b
check 1 10 "option without value" -- generate --model "$M" --prompt
check 2 10 "unknown command" -- frobnicate
check 0 10 "--help" -- --help
check 0 10 "generate --help" "=--max-new-tokens" generate --help
check 0 10 "generate -h" "=--prompt" generate -h
check 0 10 "help train" "=--resume" help train
check 0 10 "--version" "=retnet " --version
check 0 30 "short forms" -- generate -m "$M" -p hi -n 3 --temp 0 -s 4
check 0 30 "--seed -1" "=retnet generate: seed " generate -m "$M" -p hi -n 3 --seed -1
printf 'to be or not' >"$W/prompt.txt"
check 0 30 "--prompt-file" -- generate -m "$M" -f "$W/prompt.txt" -n 3
check 1 10 "--prompt-file a FIFO" "=pipe it in with --prompt-file - instead" generate -m "$M" -f "$W/fifo" -n 3
check 1 10 "--prompt-file missing" "=cannot open" generate -m "$M" -f "$W/nope.txt" -n 3
check 1 10 "--prompt and --prompt-file" "=not both" generate -m "$M" -p a -f "$W/prompt.txt"
check 1 10 "--seed -2" "=must be in" generate -m "$M" -p a --seed -2
check 1 10 "token id out of range" -- logits --model "$M" --tokens 1,400 --out "$W/x.npy"
check 1 10 "negative token id" -- logits --model "$M" --tokens 1,-1 --out "$W/x.npy"
check 1 10 "empty token list item" -- logits --model "$M" --tokens 1,,2 --out "$W/x.npy"
check 1 10 "--chunk-size 0" -- logits --model "$M" --tokens 1,2 --mode chunkwise --chunk-size 0 --out "$W/x.npy"
check 1 10 "unknown mode" -- logits --model "$M" --tokens 1,2 --mode sideways --out "$W/x.npy"
check 1 10 "unknown device" -- info --model "$M" --device tpu
check 1 10 "bench --dtype fp16" "=option --dtype must be one of stored, fp32, bf16, got 'fp16'" bench --model "$M" --dtype fp16
check 1 10 "bench --mode both" "=option --mode must be one of all, prefill, decode, kernels, got 'both'" bench --model "$M" --mode both
check 1 10 "--model '' (an unset variable)" "=option --model is empty" info --model ""

echo "hostile: $tried tried, $passed passed"
[ "$tried" = "$passed" ]
