#!/usr/bin/env bash
# test_cli.sh — the attncache command as a user runs it: output formats, the
# fixture ids through the CLI, and clear one-line errors with a non-zero exit.
# usage: test_cli.sh BUILD_DIR SHARED_DIR   (run by ctest)
set -u
BIN="$1/attncache"
SHARED="$2"
pass=0 fail=0 skipped=0
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
skip() { skipped=$((skipped + 1)); echo "skip $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

STORIES="$SHARED/models/stories260K.gguf"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPM="$SHARED/vocab/ggml-vocab-llama-spm.gguf"

# --help on every command, exit 0
for c in tokenize embed similarity score eval info bench build db train-projector tune; do
  check "help $c" "'$BIN' $c --help >/dev/null 2>&1"
done
check "unknown command exits 2" "'$BIN' frobnicate 2>/dev/null; [ \$? -eq 2 ]"

# --backend (ac_ctx_params.backend): the cuda backend where it cannot run (built without it, or
# no device) is a clear error, exit 1; bench --gpu is the same as --backend cuda; an unknown name
# is refused naming it; --backend cpu is the default, byte for byte
if [ -f "$STORIES" ]; then
  if ! nvidia-smi -L >/dev/null 2>&1; then
    # --cache on the cuda backend is no longer refused up front: without a GPU the context's
    # reason comes first, and the cache directory is never created
    # --prefix-cache on the cuda backend is accepted now (the prefix cache runs on the GPU): without
    # a GPU the device reason is the error, as for the plain commands
    # partial rows (--rows prefix, --exact-tail N|query) and both caches together run on the GPU
    # since session 14: without a GPU, the same device reason (and no cache directory)
    for cmd in "bench -L 8 -r 1 --gpu" "bench -L 8 -r 1 --backend cuda" "embed --backend cuda" \
               "bench -L 8 -r 1 --gpu --cache $T/gc" "embed --backend cuda --cache $T/gc" \
               "bench -L 8 -r 1 --gpu --prefix-cache 8" \
               "eval --task sst2 --data $SHARED/data --limit 2 --backend cuda --prefix-cache 8" \
               "bench -L 8 -r 1 --gpu --cache $T/gc --rows prefix --shared-prefix 0.5" \
               "bench -L 8 -r 1 --gpu --cache $T/gc --exact-tail 2" \
               "eval --task sst2 --data $SHARED/data --limit 2 --backend cuda --cache $T/gc --rows prefix --prefix-cache 8" \
               "eval --task sst2 --data $SHARED/data --limit 2 --backend cuda --cache $T/gc --exact-tail query"; do
      check "$cmd without a GPU: clear error" "! echo hi | '$BIN' $cmd -m '$STORIES' > /dev/null 2> '$T/e.txt' && grep -Eq \"backend 'cuda' cannot run here: no CUDA device|backend 'cuda': this attncache was built without the CUDA backend\" '$T/e.txt'"
    done
    check "--cache with the cuda backend, no GPU: no cache directory made" "! test -e '$T/gc'"
  fi
  check "--backend tpu refused by name" "! echo hi | '$BIN' embed -m '$STORIES' --backend tpu > /dev/null 2> '$T/e.txt' && grep -q \"unknown backend 'tpu'\" '$T/e.txt'"
  check "--backend cpu is the default" "echo 'one more line' | '$BIN' embed -m '$STORIES' > '$T/d.json' && echo 'one more line' | '$BIN' embed -m '$STORIES' --backend cpu | cmp -s - '$T/d.json'"
fi

if [ -f "$SPM" ] && [ -f "$SPM.inp" ]; then
  # single-line fixture cases through `attncache tokenize` (a vocab-only file: tokenize needs no weights)
  python3 - "$SPM.inp" "$SPM.out" "$T" <<'EOF'
import sys
inp = open(sys.argv[1], encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
out = open(sys.argv[2], encoding="utf-8").read().split("\n")
cases = [(t, o) for t, o in zip(inp, out) if t and "\n" not in t and "\r" not in t and t.strip()]
open(sys.argv[3] + "/in.txt", "w", encoding="utf-8").write("".join(t + "\n" for t, _ in cases))
open(sys.argv[3] + "/want.txt", "w", encoding="utf-8").write("".join(o.strip() + "\n" for _, o in cases))
EOF
  if "$BIN" tokenize -m "$SPM" -f "$T/in.txt" > "$T/got.txt" 2> "$T/err.txt"; then
    check "tokenize: $(wc -l < "$T/in.txt") fixture lines give llama.cpp's ids" "diff -q '$T/want.txt' '$T/got.txt' >/dev/null"
  else
    bad "tokenize on the SPM fixture: $(cat "$T/err.txt")"
  fi
else
  skip "tokenize fixture (absent: $SPM)"
fi

if [ -f "$STORIES" ]; then
  check "tokenize --special adds BOS" "[ \"\$(echo 'Once upon a time' | '$BIN' tokenize -m '$STORIES' --special | cut -d' ' -f1)\" = 1 ]"
  printf 'Once upon a time\nThe little dog\n' | "$BIN" embed -m "$STORIES" --normalize > "$T/emb.jsonl" 2>"$T/err.txt"
  check "embed: JSON lines with 64-d unit vectors and token counts" "python3 -c '
import json,sys,math
L=[json.loads(l) for l in open(\"$T/emb.jsonl\")]
assert len(L)==2 and all(len(x[\"embedding\"])==64 and x[\"tokens\"]>1 for x in L)
assert all(abs(math.sqrt(sum(v*v for v in x[\"embedding\"]))-1)<1e-4 for x in L)'"
  echo 'Once upon a time there was a' | "$BIN" score -m "$STORIES" --labels "girl,dog,car" > "$T/score.jsonl" 2>"$T/err.txt"
  check "score: log-probabilities and the argmax" "python3 -c '
import json
x=json.loads(open(\"$T/score.jsonl\").read())
lp=x[\"logprobs\"]; assert set(lp)=={\"girl\",\"dog\",\"car\"} and all(v<0 for v in lp.values())
assert x[\"label\"]==max(lp,key=lp.get)'"
  # a failed write on stdout (here /dev/full) is an error naming the stream, never a silent cut
  if [ -w /dev/full ]; then
    python3 -c "print('Once upon a time there was a dog\n' * 300, end='')" > "$T/many.txt"
    for cmd in "tokenize -m $STORIES" "embed -m $STORIES" "score -m $STORIES --labels a,b" "similarity -m $STORIES" "info -m $STORIES" "--help" "embed --help" "eval --help"; do
      "$BIN" $cmd -f "$T/many.txt" > /dev/full 2> "$T/e.txt" < /dev/null; rc=$?
      [ "$cmd" = "--help" ] && { "$BIN" --help > /dev/full 2> "$T/e.txt"; rc=$?; }
      check "stdout on a full disk: '${cmd%% -m*}' exits 1 naming standard output" "[ $rc -eq 1 ] && grep -q 'writing standard output failed: No space left' '$T/e.txt'"
    done
  else
    skip "write errors (no /dev/full)"
  fi
  check "info: JSON with the architecture" "'$BIN' info -m '$STORIES' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"arch\"]==\"llama\" and d[\"n_layer\"]==5'"
  # CPU level (issue 9): --cpu, AC_CPU and --gemm avx512 below the avx512 level
  check "info --cpu scalar: level and kernels reported" "'$BIN' info -m '$STORIES' --cpu scalar | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"cpu\"].startswith(\"scalar\") and \"own scalar-f32\" in d[\"kernels\"], d'"
  check "bench prints the level and the GEMM" "'$BIN' bench -m '$STORIES' -L 16 -r 1 --cpu scalar 2>/dev/null | grep -q '^cpu: scalar.*kernels: cpu scalar; gemm own scalar-f32'"
  echo hi | "$BIN" embed -m "$STORIES" --cpu scalar --gemm avx512 > /dev/null 2> "$T/e.txt"; rc=$?
  check "--gemm avx512 below the avx512 level: exit != 0, names the level" "[ $rc -ne 0 ] && grep -q 'level in use is scalar' '$T/e.txt'"
  echo hi | "$BIN" embed -m "$STORIES" --cpu sse9 > /dev/null 2> "$T/e.txt"; rc=$?
  check "--cpu with a bad level: exit != 0" "[ $rc -ne 0 ] && grep -q \"'sse9'\" '$T/e.txt'"
  echo hi | AC_CPU=bogus "$BIN" embed -m "$STORIES" > /dev/null 2> "$T/e.txt"; rc=$?
  check "AC_CPU with a bad level: exit != 0" "[ $rc -ne 0 ] && grep -q 'AC_CPU' '$T/e.txt'"
  check "--cpu scalar and the default level: same embedding to 1e-5" "python3 - '$BIN' '$STORIES' <<'PY'
import json, subprocess, sys
run = lambda *a: json.loads(subprocess.run([sys.argv[1], 'embed', '-m', sys.argv[2], *a], input='Once upon a time there was a dog\\n', capture_output=True, text=True, check=True).stdout)['embedding']
a, b = run(), run('--cpu', 'scalar')
assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5 * max(abs(x) for x in a)
PY"
  # bad input: one clear line on stderr, non-zero exit, output before the bad line kept
  printf 'Once upon a time\n\nmore\n' | "$BIN" embed -m "$STORIES" > "$T/o.txt" 2> "$T/e.txt"; rc=$?
  check "empty line: exit != 0, one error line naming line 2" "[ $rc -ne 0 ] && [ \$(wc -l < '$T/e.txt') -eq 1 ] && grep -q 'line 2: empty' '$T/e.txt'"
  python3 -c "print('word ' * 400)" | "$BIN" embed -m "$STORIES" > /dev/null 2> "$T/e.txt"; rc=$?
  check "over-long input: clear error" "[ $rc -ne 0 ] && grep -q 'exceeds' '$T/e.txt'"
  python3 -c "print('word ' * 400); print('short')" | "$BIN" embed -m "$STORIES" --truncate > "$T/o.txt" 2> "$T/e.txt"; rc=$?
  check "over-long input with --truncate: cut to the limit, the next line too" "[ $rc -eq 0 ] && [ \$(wc -l < '$T/o.txt') -eq 2 ] && head -1 '$T/o.txt' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"tokens\"]==128, d[\"tokens\"]'"
  # --on-error skip: a bad line gets a JSON error object, every other line its answer
  python3 -c "print('Once upon a time\n\n' + 'word ' * 400 + '\nThe little dog')" > "$T/mix.txt"
  "$BIN" embed -m "$STORIES" -f "$T/mix.txt" --on-error skip > "$T/o.txt" 2> "$T/e.txt"; rc=$?
  printf 'Once upon a time\nThe little dog\n' | "$BIN" embed -m "$STORIES" > "$T/good.txt"
  check "embed --on-error skip: errors on lines 2 and 3, lines 1 and 4 answered as alone, exit 0" "[ $rc -eq 0 ] && grep -q '2 of 4 lines failed' '$T/e.txt' && python3 -c '
import json
L=[json.loads(l) for l in open(\"$T/o.txt\")]; G=[json.loads(l) for l in open(\"$T/good.txt\")]
assert len(L)==4 and L[1]==dict(error=\"empty input text\",line=2), L[1]
assert L[2][\"line\"]==3 and \"exceeds the limit of 128 tokens\" in L[2][\"error\"], L[2]
assert L[0]==G[0] and L[3]==G[1]'"
  "$BIN" embed -m "$STORIES" -f "$T/mix.txt" > "$T/o.txt" 2> "$T/e.txt"; rc=$?
  check "embed default (stop): exit 1 at line 2, line 1 answered" "[ $rc -eq 1 ] && [ \$(wc -l < '$T/o.txt') -eq 1 ] && grep -q 'line 2: empty input text' '$T/e.txt'"
  "$BIN" score -m "$STORIES" --labels "girl,dog" -f "$T/mix.txt" --on-error skip > "$T/o.txt" 2> "$T/e.txt"; rc=$?
  check "score --on-error skip: the same, as JSON lines" "[ $rc -eq 0 ] && python3 -c '
import json
L=[json.loads(l) for l in open(\"$T/o.txt\")]
assert len(L)==4 and L[1][\"line\"]==2 and L[2][\"line\"]==3 and \"logprobs\" in L[0] and \"logprobs\" in L[3], L'"
  python3 -c "print('word ' * 400)" | "$BIN" score -m "$STORIES" --labels a,b > /dev/null 2> "$T/e.txt"; rc=$?
  check "score over-long: the same message as embed" "[ $rc -eq 1 ] && grep -q 'line 1: input of [0-9]* tokens exceeds the limit of 128 tokens' '$T/e.txt'"
  check "score --template without {text}: refused" "echo x | '$BIN' score -m '$STORIES' --labels a,b --template 'Review: x' 2>&1 >/dev/null | grep -q 'bad --template .*no {text}'"
  check "bad --on-error: refused" "echo x | '$BIN' embed -m '$STORIES' --on-error maybe 2>&1 | grep -q \"bad --on-error 'maybe'\""
  check "tokenize --on-error skip: accepted, every line answered" "[ \$('$BIN' tokenize -m '$STORIES' --on-error skip -f '$T/mix.txt' | wc -l) -eq 4 ]"
  printf 'caf\xc3 \xff\xfe ok\n' | "$BIN" tokenize -m "$STORIES" > /dev/null 2> "$T/e.txt"
  check "invalid UTF-8: tokenized (replacement), exit 0" "[ \$? -eq 0 ]"
  head -c 5000 "$STORIES" > "$T/trunc.gguf"
  "$BIN" info -m "$T/trunc.gguf" > /dev/null 2> "$T/e.txt"; rc=$?
  check "truncated GGUF: exit != 0, one line" "[ $rc -ne 0 ] && [ \$(wc -l < '$T/e.txt') -eq 1 ] && grep -q 'cannot load model' '$T/e.txt'"
  printf 'GGUF\x03\x00\x00\x00' > "$T/short.gguf"
  check "8-byte GGUF: clear error" "! '$BIN' info -m '$T/short.gguf' 2>/dev/null"
  check "missing file: clear error" "'$BIN' info -m '$T/nope.gguf' 2>&1 | grep -q 'nope.gguf'"
  if [ -f "$SPM" ]; then
    check "vocab-only GGUF (no weights): names the missing tensor" "'$BIN' embed -m '$SPM' </dev/null 2>&1 | grep -q 'missing required tensor'"
  fi
  # numeric options: one strict parser; NaN, infinities, trailing garbage, out of range refused by name
  for bad in "--threshold nan" "--threshold inf" "--threshold -inf" "--threshold 0.5x" "--threshold 1e99" "--threshold ''" \
             "--threads 5000" "--threads 2x" "--batch 0" "--batch 99999999999999999999" \
             "--adapt-floor nan" "--adapt-floor 1.5" "--adapt-floor -0.1" "--adapt-window 0" "--adapt-probe-max 2"; do
    opt=${bad%% *}
    eval "echo x | '$BIN' embed -m '$STORIES' $bad > /dev/null 2> '$T/e.txt'"; rc=$?
    check "numeric option refused: $bad" "[ $rc -eq 1 ] && grep -q \"bad $opt '\" '$T/e.txt'"
  done
  check "eval --thresholds with a NaN: refused before any work" "'$BIN' eval --task sst2 -m '$STORIES' --thresholds 1,nan 2>&1 | grep -q \"bad threshold in --thresholds 'nan': not a number\""
  # --prefix-cache MB: exact vs prefix K/V reuse side by side; strict budget values
  check "bench --prefix-cache: side by side, reused and computed tokens" "'$BIN' bench -m '$STORIES' -L 64 -r 2 --prefix-cache 8 --shared-prefix 0.75 2>/dev/null | grep -q 'reused 96 computed 32'"
  "$BIN" eval --task sst2 -m "$STORIES" --data "$SHARED/data" --limit 4 --prefix-cache 8 > "$T/evp.txt" 2>&1
  check "eval --prefix-cache: label continuations reuse the prompt, accuracy unchanged" "grep -q 'prefix cache: 4/4 queries reused a prefix' '$T/evp.txt' && grep -q 'accuracy change: +0.00 points' '$T/evp.txt'"
  check "bench --prefix-cache 0: refused" "'$BIN' bench -m '$STORIES' -L 64 --prefix-cache 0 2>&1 | grep -q 'prefix-cache (MiB)'"
  check "eval --prefix-cache 1e3: refused" "'$BIN' eval --task agnews-fewshot -m '$STORIES' --prefix-cache 1e3 2>&1 | grep -q \"prefix-cache (MiB) '1e3'\""
  check "bench --prefix-cache without a value: refused" "'$BIN' bench -m '$STORIES' --prefix-cache 2>&1 | grep -q 'needs a value'"
  check "bench --prefix-cache with --cache: refused" "'$BIN' bench -m '$STORIES' -L 8 --prefix-cache 8 --cache '$T/pcx' 2>&1 | grep -q 'runs alone'"
  check "bench -L with garbage: refused" "'$BIN' bench -m '$STORIES' -L 16,1e3 2>&1 | grep -q \"bad length in -L '1e3': trailing characters\""
  check "score without --labels: clear error" "! echo x | '$BIN' score -m '$STORIES' 2>/dev/null"
  check "bad --pooling: clear error" "! echo x | '$BIN' embed -m '$STORIES' --pooling max 2>/dev/null"
  # the cache commands on a damaged database: errors, never a crash
  mkdir -p "$T/c"; echo garbage > "$T/c/maps.acdb"
  "$BIN" db verify "$T/c" > /dev/null 2> "$T/e.txt"; rc=$?
  check "db verify on garbage: exit 1 (not a crash), message" "[ $rc -eq 1 ] && [ -s '$T/e.txt' ]"
  echo 'Once upon a time' | "$BIN" embed -m "$STORIES" --cache "$T/c" > /dev/null 2> "$T/e.txt"; rc=$?
  check "embed --cache on garbage: exit 1 with a message" "[ $rc -eq 1 ] && grep -q 'attention cache' '$T/e.txt'"
  DATA="$SHARED/data"
  if [ -f "$DATA/sst2/dev.tsv" ] && [ -f "$DATA/stsb/sts-dev.csv" ]; then
    # the evaluation harness end to end (stories260K: label scoring and embeddings; tiny limits)
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 8 --json "$T/ev.json" > "$T/ev.txt" 2> "$T/e.txt"
    check "eval sst2 (label scoring): table + JSON" "grep -q '^sst2 ' '$T/ev.txt' && python3 -c 'import json; d=json.load(open(\"$T/ev.json\")); assert d[\"n\"]==8 and 0<=d[\"value\"]<=100'"
    check "eval stsb (embeddings): Spearman row" "'$BIN' eval --task stsb -m '$STORIES' --data '$DATA' --limit 20 2>/dev/null | grep -q spearman"
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 2 --json /dev/full > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --json on a full disk: exit 1 naming the file" "[ $rc -eq 1 ] && grep -q 'writing /dev/full failed' '$T/e.txt'"
    check "eval on a missing data dir: clear error" "'$BIN' eval --task sst2 -m '$STORIES' --data '$T/none' 2>&1 | grep -q 'cannot open data file'"
    # the cache commands end to end on a small corpus of SST-2 train sentences (short enough for stories' 128 positions)
    tail -n +2 "$DATA/sst2/train.tsv" | cut -f1 | awk 'length($0) < 60' | head -60 > "$T/corpus.txt"
    "$BIN" build -m "$STORIES" -i "$T/corpus.txt" -o "$T/cache" -q > "$T/b.txt" 2> "$T/e.txt"
    check "build: 60 lines recorded" "grep -q 'entries    60' '$T/b.txt' || grep -q '60 new entries' '$T/e.txt'"
    check "build again: nothing new (already stored)" "'$BIN' build -m '$STORIES' -i '$T/corpus.txt' -o '$T/cache' -q 2>&1 >/dev/null | grep -q '0 new entries, 60 already stored'"
    check "db stats and db verify" "'$BIN' db stats '$T/cache' | grep -q 'entries    60' && '$BIN' db verify '$T/cache' | grep -q 'all records intact'"
    check "db stats to a full disk: exit 1" "! '$BIN' db stats '$T/cache' > /dev/full 2>/dev/null"
    # one flipped byte in the newest commit slot: reported, nothing truncated, db repair gives all back
    cp -r "$T/cache" "$T/slot" && python3 -c "
import struct; f=open('$T/slot/maps.acdb','r+b'); h=f.read(2048)
o=512 if struct.unpack_from('<Q',h,520)[0] > struct.unpack_from('<Q',h,1032)[0] else 1024
f.seek(o+6); b=f.read(1); f.seek(o+6); f.write(bytes([b[0]^0x5a]))" && cp "$T/slot/maps.acdb" "$T/slot.orig"
    "$BIN" db verify "$T/slot" > "$T/o.txt" 2> "$T/e.txt"; rc=$?
    check "db verify: a damaged newest commit slot is an error naming the commit" "[ $rc -eq 1 ] && grep -q 'commit slot .* is damaged: commit [0-9]*, the newest' '$T/e.txt'"
    echo 'a new line' | "$BIN" build -m "$STORIES" -o "$T/slot" -q > /dev/null 2> "$T/e.txt"; rc=$?
    check "build into it: refused, the file untouched" "[ $rc -ne 0 ] && grep -q 'db repair' '$T/e.txt' && cmp -s '$T/slot/maps.acdb' '$T/slot.orig'"
    check "db repair, then verify clean and all 60 entries" "'$BIN' db repair '$T/slot' | grep -q 'repair: 60 entries' && '$BIN' db verify '$T/slot' | grep -q 'all records intact' && '$BIN' db stats '$T/slot' | grep -q 'entries    60'"
    idx=$(ls "$T/slot"/index-*.faiss 2>/dev/null | head -1)
    if [ -n "$idx" ]; then
      python3 -c "f=open('$idx','r+b'); f.seek(200); b=f.read(1); f.seek(200); f.write(bytes([b[0]^1]))"
      check "db verify: a damaged index is reported as rebuilt at the next open (the store intact: exit 0)" "'$BIN' db verify '$T/slot' | grep -q 'unreadable.*rebuilt from the store at the next open'"
    else
      bad "no saved index in $T/slot"
    fi
    # a damaged record: db verify names it (and reports the indexes), a lookup that meets it says so
    cp -r "$T/cache" "$T/dmg" && python3 -c "
f=open('$T/dmg/maps.acdb','r+b'); f.seek(4096+64+8); b=f.read(1); f.seek(4096+64+8); f.write(bytes([b[0]^1]))"
    "$BIN" db verify "$T/dmg" > "$T/o.txt" 2> "$T/e.txt"; rc=$?
    check "db verify: a damaged record named, the indexes reported" "[ $rc -eq 1 ] && grep -q 'entry 0 .*payload checksum mismatch' '$T/o.txt' && grep -q '^index index-.*' '$T/o.txt'"
    head -5 "$T/corpus.txt" | "$BIN" embed -m "$STORIES" --cache "$T/dmg" --threshold 1e9 > /dev/null 2> "$T/e.txt"; rc=$?
    rm -f "$T/dmg"/index-*.meta  # the index is rebuilt at open and leaves the damaged record out
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 4 --cache "$T/dmg" --threshold 1e9 > "$T/o.txt" 2> "$T/e.txt"
    check "eval --cache over a damaged record: counted on the lookup line" "grep -q 'lookup problems: 1 damaged record(s) left out of the index' '$T/o.txt'"
    check "embed --cache over a damaged record: exit 0, a warning counting it" "[ $rc -eq 0 ] && grep -q 'warning: attention cache: .*damaged' '$T/e.txt'"
    check "train-projector: hit quality report" "'$BIN' train-projector -m '$STORIES' --cache '$T/cache' --pairs 200 --epochs 3 2>/dev/null | grep -q 'projector .* mean-pooled'"
    # stored lines served from q8 maps: close to, but not bitwise, the exact embeddings
    head -3 "$T/corpus.txt" | "$BIN" embed -m "$STORIES" --normalize > "$T/x.jsonl"
    head -3 "$T/corpus.txt" | "$BIN" embed -m "$STORIES" --normalize --cache "$T/cache" --threshold 1e-4 > "$T/c.jsonl"
    check "embed --cache: stored lines served (close to exact, not identical)" "python3 -c '
import json
a=[json.loads(l)[\"embedding\"] for l in open(\"$T/x.jsonl\")]; b=[json.loads(l)[\"embedding\"] for l in open(\"$T/c.jsonl\")]
cos=[sum(x*y for x,y in zip(u,v)) for u,v in zip(a,b)]
assert len(a)==3 and all(c>0.99 for c in cos) and a!=b, cos'"
    head -20 "$T/corpus.txt" > "$T/q.txt"
    check "tune: saves a policy" "'$BIN' tune -m '$STORIES' --cache '$T/cache' -f '$T/q.txt' --threshold 1e-4 --limit 20 2>/dev/null | grep -q 'policy:' && [ -f '$T/cache/policy.txt' ]"
    # tune looks every query up (adaptive lookups off): 10 misses first would otherwise make it skip the 3 hits
    { for i in 1 2 3 4 5 6 7 8 9 10; do echo "zebra $i computes eigenvalues at dawn"; done; head -3 "$T/corpus.txt"; } > "$T/q2.txt"
    check "tune: every query looked up, whatever --adapt-window says" "'$BIN' tune -m '$STORIES' --cache '$T/cache' -f '$T/q2.txt' --threshold 1e-4 --adapt-window 4 2>/dev/null | grep -q 'mean over 3 hitting queries'"
    # per-head serving: the ranking, then the 5 most stable (layer, head) pairs served on each hit
    check "tune --rank-heads: saves the ranking" "'$BIN' tune -m '$STORIES' --cache '$T/cache' --rank-heads --rank-entries 20 --threshold 1e9 2>/dev/null | grep -q 'pairs profiled' && [ -f '$T/cache/head_rank.txt' ]"
    check "eval --serve-heads rank:5: 5 of 40 (layer, head) pairs served per hit, reported" "'$BIN' eval --task stsb -m '$STORIES' --data '$DATA' --limit 4 --cache '$T/cache' --threshold 1e9 --serve-heads rank:5 2>&1 | grep -q 'per-head serving (--serve-heads): 12.5% of the hits'"
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 4 --cache "$T/cache" --serve-heads rank:9999 > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --serve-heads rank:9999: refused by name" "[ $rc -ne 0 ] && grep -q 'bad serve-heads' '$T/e.txt'"
    # the output ranking: groups of 2 heads served alone on the hitting queries, saved; rank:4/2 serves 2 groups
    check "tune --rank-heads -f --rank-group 2: output deviation per group, saved" "'$BIN' tune -m '$STORIES' --cache '$T/cache' --rank-heads -f '$T/q.txt' --rank-group 2 --threshold 1e-4 --limit 20 2>/dev/null | grep -q 'saved head_rank.txt: 20 groups of 2 heads ranked' && [ \$(tail -n +3 '$T/cache/head_rank.txt' | wc -l) -eq 40 ]"
    check "eval --serve-heads rank:4/2: 4 of 40 pairs served per hit" "'$BIN' eval --task stsb -m '$STORIES' --data '$DATA' --limit 4 --cache '$T/cache' --threshold 1e9 --serve-heads rank:4/2 2>&1 | grep -q 'per-head serving (--serve-heads): 10.0% of the hits'"
    "$BIN" tune -m "$STORIES" --cache "$T/cache" --rank-heads -f "$T/q.txt" --rank-group 3 --threshold 1e-4 > /dev/null 2> "$T/e.txt"; rc=$?
    check "tune --rank-group 3 (8 heads): refused by name" "[ $rc -ne 0 ] && grep -q 'does not divide' '$T/e.txt'"
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 8 --cache "$T/cache" --threshold 1e9 --layers policy > "$T/ev.txt" 2>&1
    check "eval --cache: side-by-side report" "grep -q 'hit rate' '$T/ev.txt' && grep -q 'end-to-end, whole stream' '$T/ev.txt' && grep -q '0 failed lookups, 0 damaged records skipped' '$T/ev.txt' && grep -q 'answers changed: [0-9]* of 8 (right to wrong [0-9]*, wrong to right [0-9]*); class 1 predicted: exact [0-9]*, cache [0-9]*' '$T/ev.txt'"
    # --items: one line per example, exact and cached side by side, agreeing with the reported figures
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 8 --cache "$T/cache" --threshold 1e9 --items "$T/items.tsv" --json "$T/it.json" > /dev/null 2>&1
    "$BIN" eval --task stsb -m "$STORIES" --data "$DATA" --limit 4 --cache "$T/cache" --threshold 1e9 --items "$T/items2.tsv" --json "$T/it2.json" > /dev/null 2>&1
    check "eval --items: one line per example; predictions, hits and key distances match the report" "python3 -c '
import csv, json
r = list(csv.DictReader(open(\"$T/items.tsv\"), delimiter=\"\\t\"))
j = json.load(open(\"$T/it.json\"))
assert len(r) == 8 and [int(x[\"index\"]) for x in r] == list(range(8))
assert abs(100 * sum(x[\"exact_pred\"] == x[\"label\"] for x in r) / 8 - j[\"value\"]) < 1e-6
assert abs(100 * sum(x[\"cache_pred\"] == x[\"label\"] for x in r) / 8 - j[\"cache\"][\"value\"]) < 1e-6
r = list(csv.DictReader(open(\"$T/items2.tsv\"), delimiter=\"\\t\"))
j = json.load(open(\"$T/it2.json\"))
assert len(r) == 4 and sum(int(x[\"hit\"]) for x in r) == j[\"cache\"][\"hits\"] > 0
assert all(float(x[\"distance\"]) == 0 for x in r if x[\"hit\"] == \"0\")
assert any(float(x[\"distance\"]) > 0 for x in r if x[\"hit\"] == \"1\")
'"
    "$BIN" eval --task stsb -m "$STORIES" --data "$DATA" --limit 2 --cache "$T/cache" --recheck-margin 2 > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --recheck-margin 2: refused by name" "[ $rc -eq 1 ] && grep -q \"bad --recheck-margin '2': out of range\" '$T/e.txt'"
    "$BIN" eval --task stsb -m "$STORIES" --data "$DATA" --limit 2 --cache "$T/cache" --recheck-margin 0.1 > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --recheck-margin on a model without a classifier head: refused, naming it" "[ $rc -eq 1 ] && grep -q 'recheck_margin needs a model with a classifier head' '$T/e.txt'"
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 2 --items /dev/full > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --items on a full disk: exit 1 naming the file" "[ $rc -eq 1 ] && grep -q '/dev/full' '$T/e.txt'"
    # adaptive lookups: a stream that never hits skips all but the first --adapt-window lookups and the probes
    # (STS-B, 20 pairs = 40 sequences: 4 looked up, then probe intervals 4, 8, 16: 3 probes, 33 skipped);
    # --adapt-floor 0 looks every one up
    "$BIN" eval --task stsb -m "$STORIES" --data "$DATA" --limit 20 --cache "$T/cache" --threshold 1e-12 --adapt-window 4 \
      --json "$T/ad.json" > "$T/ad.txt" 2>&1
    check "eval --cache, no hits: 33 of 40 lookups skipped, 3 probes, reported and in the JSON" "grep -q 'adaptive lookups (skipped while the recent hit rate is under 0.02): 33 of 40 sequences skipped the lookup (82.5%)' '$T/ad.txt' && grep -q ', 3 probes' '$T/ad.txt' && python3 -c '
import json; d=json.load(open(\"$T/ad.json\"))[\"cache\"]; assert d[\"lookups_skipped\"]==33 and d[\"hits\"]==0'"
    check "eval --cache --adapt-floor 0: no lookup skipped" "'$BIN' eval --task stsb -m '$STORIES' --data '$DATA' --limit 20 --cache '$T/cache' --threshold 1e-12 --adapt-window 4 --adapt-floor 0 --json '$T/ad0.json' 2>&1 | grep -q 'adaptive lookups: off' && python3 -c '
import json; assert json.load(open(\"$T/ad0.json\"))[\"cache\"][\"lookups_skipped\"]==0'"
    # scripts/demo_cache.sh (run.sh's second part): a few lines with both accuracies, the speedup and the hit
    # rate; its temporary cache removed; without the data, skipped with a message and exit 0
    if [ -f "$DATA/agnews/train.csv" ] && [ -f "$SRC_DIR/models/attnlm-8k.gguf" ]; then
      mkdir -p "$T/demo_tmp"
      TMPDIR="$T/demo_tmp" AC_BIN="$BIN" bash "$SRC_DIR/scripts/demo_cache.sh" "$DATA" 6 2 > "$T/demo.txt" 2>&1; rc=$?
      check "demo_cache.sh: exact, cached and prefix lines, speedup, hits, temp dir removed" "[ $rc -eq 0 ] && grep -q '^  exact  *accuracy' '$T/demo.txt' && grep -Eq '^  attention cache  *accuracy .* [0-9.]+x end-to-end.*hits 100%' '$T/demo.txt' && grep -Eq '^  prefix K/V reuse accuracy .* [0-9.]+x end-to-end .* prompt tokens reused' '$T/demo.txt' && [ -z \"\$(ls -A '$T/demo_tmp')\" ]"
    else
      skip "demo_cache.sh (AG News or models/attnlm-8k.gguf absent)"
    fi
    AC_BIN="$BIN" bash "$SRC_DIR/scripts/demo_cache.sh" "$T/no-data" > "$T/demo.txt" 2>&1; rc=$?
    check "demo_cache.sh without the data: skipped with a message, exit 0" "[ $rc -eq 0 ] && grep -q 'demo skipped: AG News not found' '$T/demo.txt'"
    "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 6 --cache "$T/cache" --thresholds -1,1e9 --json "$T/sw.json" > /dev/null 2>&1
    check "eval --thresholds: one sweep row per threshold (none hit at -1)" "python3 -c '
import json; d=json.load(open(\"$T/sw.json\")); s=d[\"sweep\"]
assert [r[\"threshold\"] for r in s]==[-1,1e9] and s[0][\"hit_rate\"]==0'"
    # --plot: the sweep's JSON beside the plot, drawn by tools/py/plot_sweep.py (matplotlib, .venv)
    SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if "$SRC/.venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
      "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 4 --cache "$T/cache" --thresholds -1,0.5,1e9 --plot "$T/p.png" > "$T/o.txt" 2> "$T/e.txt"; rc=$?
      check "eval --plot: sweep JSON beside it, a PNG drawn by matplotlib (Software tag)" "[ $rc -eq 0 ] && grep -q 'plot written to' '$T/o.txt' && python3 -c '
import json, struct
d=json.load(open(\"$T/p.json\")); assert [r[\"threshold\"] for r in d[\"sweep\"]]==[-1,0.5,1e9]
b=open(\"$T/p.png\",\"rb\").read(); assert b[:8]==bytes([137,80,78,71,13,10,26,10]) and b[12:16]==b\"IHDR\"
w,h=struct.unpack(\">II\",b[16:24]); assert w>=600 and h>=500, (w,h)
assert b\"matplotlib\" in b  # tEXt Software
'"
    else
      skip "eval --plot with matplotlib: .venv lacks it (tools/setup_python.sh)"
    fi
    rm -f "$T/p.png" "$T/p.json"
    AC_VENV="$T/no-venv" "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --limit 2 --cache "$T/cache" --thresholds 0.5 --plot "$T/p.png" > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --plot without the Python tools: exit 0, the JSON, a warning saying how to draw it" "[ $rc -eq 0 ] && [ -f '$T/p.json' ] && [ ! -f '$T/p.png' ] && grep -q 'plot_sweep.py $T/p.json $T/p.png' '$T/e.txt'"
    echo x | "$BIN" eval --task sst2 -m "$STORIES" --data "$DATA" --plot "$T/q.png" > /dev/null 2> "$T/e.txt"; rc=$?
    check "eval --plot without --cache/--thresholds: refused before any work" "[ $rc -eq 1 ] && grep -q 'needs --cache and --thresholds' '$T/e.txt'"
    # rows=prefix on few-shot prompts that share their demonstrations (the committed decoder):
    # every query shares the demonstrations with a stored prompt, those rows come from f32 maps
    # (exact), the rest is computed: 100% hits, the metric unchanged
    ATTNLM="$(cd "$(dirname "$0")/.." && pwd)/models/attnlm-8k.gguf"
    if [ -f "$ATTNLM" ]; then
      "$BIN" build -m "$ATTNLM" --task agnews-fewshot --data "$DATA" --demos shared --shots 2 --limit 3 \
          --codec f32-causal -o "$T/cp" -q > /dev/null 2>&1
      "$BIN" eval --task agnews-fewshot -m "$ATTNLM" --data "$DATA" --demos shared --shots 2 --limit 6 \
          --cache "$T/cp" --rows prefix --json "$T/pf.json" > "$T/pf.txt" 2>&1
      check "eval --rows prefix --demos shared: all hits, rows served, metric unchanged" "python3 -c '
import json; d=json.load(open(\"$T/pf.json\")); c=d[\"cache\"]
assert d[\"demos\"]==\"shared\" and c[\"hit_rate\"]==1 and 0.5<c[\"rows_served_share\"]<1 and c[\"value\"]==d[\"value\"], d'"
      check "bench --rows prefix --shared-prefix 0.5: half the rows served" "'$BIN' bench -m '$STORIES' -L 64 -r 1 --cache '$T/bp' --cache-build 1 --rows prefix --shared-prefix 0.5 --codec f32-causal 2>/dev/null | grep -q 'hits 100%  skipped 0%  rows 50%'"
      # --exact-tail query (ac_ctx_set_exact_from): per-query demonstrations, the rows from each prompt's
      # query on computed, the demonstrations' rows served; the line says where the queries start
      "$BIN" build -m "$ATTNLM" --task agnews-fewshot --data "$DATA" --shots 2 --limit 3 --codec f32-causal -o "$T/cq" -q \
          > /dev/null 2>&1
      "$BIN" eval --task agnews-fewshot -m "$ATTNLM" --data "$DATA" --shots 2 --limit 4 --cache "$T/cq" --key mean \
          --threshold 1e9 --exact-tail query+4 --json "$T/eq.json" > "$T/eq.txt" 2>&1
      check "eval --exact-tail query+4: all hits, the query rows exact, the demonstrations' rows served" "grep -Eq '^exact rows from the query.s start \(--exact-tail query\+4\): the query starts at row [1-9][0-9.]* of [0-9.]+ on average; [1-9][0-9.]* rows a prompt exact' '$T/eq.txt' && python3 -c '
import json; c=json.load(open(\"$T/eq.json\"))[\"cache\"]; assert c[\"hit_rate\"]==1 and 0.3<c[\"rows_served_share\"]<0.95 and c[\"exact_query_margin\"]==4 and 4<c[\"mean_exact_rows\"]<c[\"mean_query_row\"], c'"
      check "--exact-tail: a bad value refused" "'$BIN' eval --task agnews-fewshot -m '$ATTNLM' --data '$DATA' --cache '$T/cq' --exact-tail queryx 2>&1 | grep -q \"bad --exact-tail 'queryx'\""
      check "--exact-tail query+: a bad margin refused" "'$BIN' eval --task agnews-fewshot -m '$ATTNLM' --data '$DATA' --cache '$T/cq' --exact-tail query+ 2>&1 | grep -q \"bad --exact-tail 'query+'\""
      check "--exact-tail query on a task without prompts: refused" "'$BIN' eval --task stsb -m '$ATTNLM' --data '$DATA' --cache '$T/cq' --exact-tail query 2>&1 | grep -q 'needs a prompt task'"
      check "--exact-tail query without --cache: refused" "'$BIN' eval --task agnews-fewshot -m '$ATTNLM' --data '$DATA' --exact-tail query 2>&1 | grep -q 'needs --cache'"
      check "--exact-tail query outside eval: refused" "echo hello | '$BIN' score -m '$ATTNLM' --labels a,b --cache '$T/cq' --exact-tail query 2>&1 | grep -q 'only .eval. with a prompt task'"
      check "--demos: bad value refused" "'$BIN' eval --task agnews-fewshot -m '$ATTNLM' --data '$DATA' --demos some 2>&1 | grep -q \"bad --demos 'some'\""
      # --dump-prompts: the prompts eval scores, as token ids (bench/prefix_compare.py feeds them to llama.cpp)
      "$BIN" eval --task agnews-fewshot -m "$ATTNLM" --data "$DATA" --demos shared --shots 2 --limit 3 --dump-prompts "$T/dp.jsonl" 2> /dev/null
      "$BIN" eval --task agnews-fewshot -m "$ATTNLM" --data "$DATA" --demos shared --shots 2 --limit 3 --json "$T/dpe.json" > /dev/null 2>&1
      check "eval --dump-prompts: one line per prompt, BOS + shared demonstrations, the token count eval runs, label ids" "python3 -c '
import json; d=[json.loads(l) for l in open(\"$T/dp.jsonl\")]; e=json.load(open(\"$T/dpe.json\"))
assert len(d)==3 and [x[\"index\"] for x in d]==[0,1,2] and all(0<=x[\"label\"]<4 for x in d), d
assert sum(len(x[\"tokens\"]) for x in d)==round(3*e[\"mean_prompt_tokens\"]), e
assert len(set(x[\"tokens\"][0] for x in d))==1 and all(x[\"prompt\"].startswith(d[0][\"prompt\"][:200]) for x in d)
assert all(x[\"labels\"]==[\" world\",\" sports\",\" business\",\" science\"] and all(len(t)>=1 for t in x[\"label_tokens\"]) for x in d)'"
      "$BIN" eval --task agnews-fewshot -m "$ATTNLM" --data "$DATA" --limit 2 --dump-prompts /dev/full > /dev/null 2> "$T/e.txt"; rc=$?
      check "eval --dump-prompts on a full disk: exit 1 naming the file" "[ $rc -eq 1 ] && grep -q '/dev/full' '$T/e.txt'"
      check "eval --dump-prompts on a task without prompts: refused" "'$BIN' eval --task stsb -m '$ATTNLM' --data '$DATA' --limit 2 --dump-prompts '$T/x.jsonl' 2>&1 | grep -q 'not scored by prompts'"
    else
      skip "rows=prefix flow (absent: $ATTNLM)"
    fi
  else
    skip "eval and cache flows (absent: $DATA)"
  fi
else
  skip "model tests (absent: $STORIES)"
fi

echo "$pass passed, $fail failed, $skipped skipped"
[ "$fail" -eq 0 ]
