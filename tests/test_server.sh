#!/usr/bin/env bash
# `attncache serve` as clients see it: a real server on a free loopback port,
# driven with curl (and the pinned `openai` client and wrk when present).
#   tests/test_server.sh BUILD_DIR SHARED_DIR
# Checks: every route's response shape; embeddings equal the CLI's (cosine >=
# 0.99999); the error cases (malformed JSON, wrong types, invalid UTF-8, empty
# input, huge arrays, over-long input, body limit, unknown route/method, API
# key, 429 over the concurrency limit); slow clients time out; SIGTERM drains
# a request in flight and exits 0; a bounded loopback load test (wrk) with no
# failed request. Skips (exit 0, a message) when the MiniLM GGUF is absent.
set -uo pipefail
BUILD=${1:?build dir}
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$BUILD/attncache"
M="$SRC/models-cache/all-MiniLM-L6-v2-sst2-f32.gguf"
DEC="$SRC/models/attnlm-8k.gguf"
QUICK=${AC_TEST_QUICK:-0}
if [[ ! -f "$M" ]]; then
    echo "SKIP: $M absent (run tools/setup_models.sh --sst2)"
    exit 0
fi
command -v curl >/dev/null || { echo "SKIP: curl absent"; exit 0; }
PY=python3
TMP=$(mktemp -d)
SRV_PID=""
cleanup() {
    [[ -n "$SRV_PID" ]] && kill -KILL "$SRV_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
npass=0
nfail=0
ok() { npass=$((npass + 1)); }
bad() { nfail=$((nfail + 1)); echo "FAIL: $*"; }

# start_server ARGS...: sets SRV_PID, PORT, LOG; waits until /health answers 200
start_server() {
    LOG="$TMP/server.$RANDOM.log"
    "$BIN" serve --port 0 "$@" 2>"$LOG" &
    SRV_PID=$!
    PORT=""
    for _ in $(seq 300); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$LOG" 2>/dev/null | grep -o '[0-9]*$')
        if [[ -n "$PORT" && "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" == 200 ]]; then
            URL="http://127.0.0.1:$PORT"
            return 0
        fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "server did not start:"; cat "$LOG"
    exit 1
}

# stop_server: SIGTERM, expect exit status 0
stop_server() {
    kill -TERM "$SRV_PID"
    wait "$SRV_PID"
    local rc=$?
    SRV_PID=""
    if [[ $rc -eq 0 ]]; then ok; else bad "server exited with $rc after SIGTERM: $(tail -20 "$LOG")"; fi
}

# req NAME EXPECTED_STATUS METHOD PATH [BODY_FILE|-] [curl args...]: body in $TMP/out
req() {
    local name=$1 want=$2 method=$3 path=$4 body=${5:--}
    shift 5 2>/dev/null || shift $#
    local args=(-s -o "$TMP/out" -w '%{http_code}' -X "$method" "$@")
    [[ "$body" != "-" ]] && args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    local got
    got=$(curl "${args[@]}" "http://127.0.0.1:$PORT$path")
    if [[ "$got" == "$want" ]]; then ok; else bad "$name: status $got, want $want: $(head -c 300 "$TMP/out")"; fi
}
# jreq NAME STATUS METHOD PATH JSON [curl args]
jreq() {
    printf '%s' "$5" > "$TMP/body"
    local n=$1 s=$2 m=$3 p=$4
    shift 5
    req "$n" "$s" "$m" "$p" "$TMP/body" "$@"
}
# pycheck NAME PYTHON-EXPR-ON-d (d = parsed $TMP/out)
pycheck() {
    if $PY -c "import json,sys,math,base64,struct; d=json.load(open('$TMP/out')); sys.exit(0 if ($2) else 1)" 2>"$TMP/pyerr"; then
        ok
    else
        bad "$1: $(head -c 300 "$TMP/out") $(cat "$TMP/pyerr")"
    fi
}

cat > "$TMP/texts.txt" <<'EOF'
The cat sat on the mat.
A man is playing a guitar.
Quantum computers use qubits, which can be in superposition.
Le café est très bon aujourd'hui — naïve façade, 東京タワー.
EOF
"$BIN" embed -m "$M" -f "$TMP/texts.txt" > "$TMP/cli.jsonl" || bad "CLI embed failed"
"$BIN" embed -m "$M" -f "$TMP/texts.txt" --normalize > "$TMP/cli_norm.jsonl" || bad "CLI embed --normalize failed"

start_server -m "$M" -t 2 -q --max-client-batch-size 32 --timeout 2

# ---- shapes ---------------------------------------------------------------------------------
req health 200 GET /health
pycheck health "d['status'] == 'ok'"
req models 200 GET /v1/models
pycheck models "d['object'] == 'list' and d['data'][0]['id'] == 'all-MiniLM-L6-v2-sst2-f32' and d['data'][0]['object'] == 'model'"
req info 200 GET /info
pycheck info "d['max_input_length'] == 512 and d['model_type']['classifier']['id2label'] == {'0': 'negative', '1': 'positive'}"

$PY - "$TMP/texts.txt" > "$TMP/emb_req.json" <<'EOF'
import json, sys
print(json.dumps({"input": [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")], "model": "my-model"}))
EOF
req embeddings 200 POST /v1/embeddings "$TMP/emb_req.json"
cp "$TMP/out" "$TMP/emb_resp.json"
pycheck embeddings-shape "d['object'] == 'list' and d['model'] == 'my-model' and len(d['data']) == 4 and all(e['object'] == 'embedding' and e['index'] == i and len(e['embedding']) == 384 for i, e in enumerate(d['data'])) and d['usage']['prompt_tokens'] == d['usage']['total_tokens'] > 0"
# equal to the CLI's embeddings
if $PY - "$TMP/cli.jsonl" "$TMP/emb_resp.json" <<'EOF'
import json, math, sys
cli = [json.loads(l)["embedding"] for l in open(sys.argv[1])]
srv = [e["embedding"] for e in json.load(open(sys.argv[2]))["data"]]
assert len(cli) == len(srv) == 4
for a, b in zip(cli, srv):
    cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    assert cos >= 0.99999, cos
    assert abs(math.sqrt(sum(y * y for y in b)) - 1) < 1e-5  # /v1/embeddings are L2-normalised
EOF
then ok; else bad "server embeddings differ from the CLI's"; fi
# the same batch, normalised, on both sides: the same float32 values (the CLI
# prints each float with the digits that read back exactly, as the server does)
if $PY - "$TMP/cli_norm.jsonl" "$TMP/emb_resp.json" <<'EOF'
import json, struct, sys
f32 = lambda v: struct.pack("<f", v)
cli = [json.loads(l)["embedding"] for l in open(sys.argv[1])]
srv = [e["embedding"] for e in json.load(open(sys.argv[2]))["data"]]
assert len(cli) == len(srv) == 4
bad = sum(f32(x) != f32(y) for a, b in zip(cli, srv) for x, y in zip(a, b))
assert bad == 0, f"{bad} values differ as float32"
EOF
then ok; else bad "CLI --normalize and server embeddings not the same float32 values"; fi
# usage counts the CLI's tokens
pycheck usage "d['usage']['prompt_tokens'] == sum(json.loads(l)['tokens'] for l in open('$TMP/cli.jsonl'))"

jreq embeddings-b64 200 POST /v1/embeddings '{"input":"The cat sat on the mat.","encoding_format":"base64"}'
pycheck embeddings-b64 "len(struct.unpack('<384f', base64.b64decode(d['data'][0]['embedding']))) == 384 and abs(sum(x*x for x in struct.unpack('<384f', base64.b64decode(d['data'][0]['embedding']))) - 1) < 1e-4"
jreq embeddings-ids 200 POST /v1/embeddings '{"input":[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]}'
cp "$TMP/out" "$TMP/ids.json"
jreq embeddings-idss 200 POST /v1/embeddings '{"input":[[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102],[101, 7592, 102]]}'
pycheck embeddings-idss "len(d['data']) == 2 and d['usage']['prompt_tokens'] == 12"
# token ids of the first text give the text's embedding
if $PY - "$TMP/ids.json" "$TMP/emb_resp.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))["data"][0]["embedding"]
b = json.load(open(sys.argv[2]))["data"][0]["embedding"]
assert sum(x * y for x, y in zip(a, b)) > 0.99999
EOF
then ok; else bad "token-id input differs from the same text"; fi
jreq dimensions-same 200 POST /v1/embeddings '{"input":"hi","dimensions":384}'
jreq dimensions-other 400 POST /v1/embeddings '{"input":"hi","dimensions":128}'
pycheck dimensions-msg "'dimensions' in d['error']['message'] and d['error']['type'] == 'invalid_request_error'"

jreq embed 200 POST /embed '{"inputs":["The cat sat on the mat.","hello"],"normalize":false}'
pycheck embed-shape "len(d) == 2 and len(d[0]) == 384 and abs(math.sqrt(sum(x*x for x in d[0])) - 1) > 1e-3"
jreq embed-single 200 POST /embed '{"inputs":"hello"}'
pycheck embed-single "len(d) == 1 and abs(math.sqrt(sum(x*x for x in d[0])) - 1) < 1e-5"
jreq tokenize 200 POST /tokenize '{"inputs":"hello world"}'
pycheck tokenize "[t['id'] for t in d[0]] == [101, 7592, 2088, 102] and d[0][0]['special'] and not d[0][1]['special'] and d[0][0]['text'] == '[CLS]'"
jreq tokenize-nospecial 200 POST /tokenize '{"inputs":["hello world"],"add_special_tokens":false}'
pycheck tokenize-nospecial "[t['id'] for t in d[0]] == [7592, 2088]"
jreq predict 200 POST /predict '{"inputs":"a wonderful, moving and beautifully acted film"}'
pycheck predict "d[0]['label'] == 'positive' and d[0]['score'] > d[1]['score'] and abs(d[0]['score'] + d[1]['score'] - 1) < 1e-6"
jreq predict-batch 200 POST /predict '{"inputs":["a dull, lifeless and boring mess","a triumph"]}'
pycheck predict-batch "d[0][0]['label'] == 'negative' and d[1][0]['label'] == 'positive'"
jreq predict-raw 200 POST /predict '{"inputs":"fine","raw_scores":true}'
pycheck predict-raw "len(d) == 2"
jreq predict-pairs 422 POST /predict '{"inputs":[["a","b"]]}'
jreq score-encoder 400 POST /score '{"inputs":"x","labels":["a"]}'

# ---- errors ----------------------------------------------------------------------------------
jreq malformed 400 POST /v1/embeddings '{"input": ["a",'
pycheck malformed-openai-shape "'malformed JSON' in d['error']['message']"
jreq malformed-tei 400 POST /embed '{"inputs": "a"} trailing'
pycheck malformed-tei-shape "'error' in d and d['error_type'] == 'Validation'"
jreq not-object 422 POST /embed '["a"]'
jreq empty-body 400 POST /embed ''
jreq missing-field 400 POST /v1/embeddings '{"inputs":"a"}'
jreq wrong-type 400 POST /v1/embeddings '{"input":42}'
jreq wrong-type-tei 422 POST /embed '{"inputs":{"a":1}}'
jreq mixed-types 400 POST /v1/embeddings '{"input":["a",[1,2]]}'
jreq bool-type 422 POST /embed '{"inputs":"a","normalize":"yes"}'
jreq bad-format 400 POST /v1/embeddings '{"input":"a","encoding_format":"int8"}'
jreq bad-direction 422 POST /embed '{"inputs":"a","truncation_direction":"Up"}'
jreq empty-string 400 POST /v1/embeddings '{"input":""}'
jreq blank-string 422 POST /embed '{"inputs":["ok","  \t "]}'
pycheck blank-names-input "'input 1 is empty' in d['error']"
jreq empty-array 400 POST /v1/embeddings '{"input":[]}'
jreq empty-ids 400 POST /v1/embeddings '{"input":[[]]}'
jreq id-range 400 POST /v1/embeddings '{"input":[101, 99999999]}'
jreq id-float 400 POST /v1/embeddings '{"input":[101, 1.5]}'
jreq id-negative 400 POST /v1/embeddings '{"input":[-1]}'
printf '{"input":"abc \xff\xfe def"}' > "$TMP/body"
req invalid-utf8 400 POST /v1/embeddings "$TMP/body"
pycheck invalid-utf8-msg "'UTF-8' in d['error']['message']"
printf '{"inputs":["ok","\xed\xa0\x80 surrogate"]}' > "$TMP/body"
req invalid-utf8-surrogate 422 POST /embed "$TMP/body"
printf '{"inputs":"\xc0\xaf overlong"}' > "$TMP/body"
req invalid-utf8-overlong 422 POST /tokenize "$TMP/body"
jreq nul-escape 400 POST /v1/embeddings '{"input":"abc\u0000def"}'
pycheck nul-escape-msg "'NUL' in d['error']['message']"
jreq escaped-backslash-u 200 POST /v1/embeddings '{"input":"a literal \\\\u0000 is fine"}'
$PY -c "import json; print(json.dumps({'input': ['x'] * 33}))" > "$TMP/body"
req huge-array 413 POST /v1/embeddings "$TMP/body"
$PY -c "import json; print(json.dumps({'inputs': 'word ' * 600}))" > "$TMP/long.json"
req too-long 413 POST /embed "$TMP/long.json"
pycheck too-long-msg "'600' in d['error'] or '602' in d['error']"
$PY -c "import json; print(json.dumps({'input': 'word ' * 600}))" > "$TMP/body"
req too-long-openai 400 POST /v1/embeddings "$TMP/body"
$PY -c "import json; print(json.dumps({'inputs': ' '.join(str(i) for i in range(600)), 'truncate': True}))" > "$TMP/body"
req truncate-right 200 POST /embed "$TMP/body"
cp "$TMP/out" "$TMP/right.json"
$PY -c "import json; print(json.dumps({'inputs': ' '.join(str(i) for i in range(600)), 'truncate': True, 'truncation_direction': 'Left'}))" > "$TMP/body"
req truncate-left 200 POST /embed "$TMP/body"
if $PY - "$TMP/right.json" "$TMP/out" <<'EOF'
import json, sys
a, b = json.load(open(sys.argv[1]))[0], json.load(open(sys.argv[2]))[0]
assert sum(x * y for x, y in zip(a, b)) < 0.999  # different halves of the text were kept
EOF
then ok; else bad "left and right truncation gave the same embedding"; fi
head -c 3000000 /dev/zero | tr '\0' 'a' > "$TMP/big"
req body-limit 413 POST /embed "$TMP/big"
req body-limit-chunked 413 POST /embed "$TMP/big" -H 'Transfer-Encoding: chunked'
req not-found 404 GET /nope
req wrong-method 405 GET /v1/embeddings
req wrong-method-post 405 POST /health - -d '{}'
# nested arrays deep enough to trouble a recursive parser
$PY -c "print('{\"input\":' + '[' * 5000 + ']' * 5000 + '}')" > "$TMP/body"
req deep-nesting 400 POST /v1/embeddings "$TMP/body"
# a request after all the errors still works
jreq after-errors 200 POST /embed '{"inputs":"still fine"}'

# ---- slow / half-open clients (--timeout 2) -------------------------------------------------------
t0=$(date +%s.%N)
if exec 3<>"/dev/tcp/127.0.0.1/$PORT"; then
    printf 'POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in' >&3
    timeout 10 cat <&3 > /dev/null
    exec 3<&-
    t1=$(date +%s.%N)
    if $PY -c "import sys; sys.exit(0 if 1.5 < $t1 - $t0 < 8 else 1)"; then ok; else bad "half-open client not timed out in time ($t0 .. $t1)"; fi
else
    bad "cannot open a raw connection"
fi
req alive-after-timeout 200 GET /health

# ---- metrics --------------------------------------------------------------------------------------
req metrics 200 GET /metrics
for m in 'attncache_requests_total{route="/v1/embeddings",status="200"}' 'attncache_requests_total{route="/embed",status="413"}' \
    'attncache_batch_tokens_bucket' 'attncache_batch_sequences_count' 'attncache_stage_duration_seconds_bucket{stage="queue"' \
    'attncache_stage_duration_seconds_bucket{stage="tokenize"' 'attncache_stage_duration_seconds_bucket{stage="forward"' \
    'attncache_queue_sequences' 'attncache_tokens_total' 'attncache_tokens_per_second'; do
    grep -qF "$m" "$TMP/out" && ok || bad "metrics: no $m"
done

# ---- the pinned openai client ----------------------------------------------------------------------
VPY="$SRC/.venv-server/bin/python"
if [[ -x "$VPY" ]] && "$VPY" -c 'import openai' 2>/dev/null; then
    if "$VPY" "$SRC/tests/server_openai_client.py" "$URL" "$TMP/cli.jsonl" "$TMP/texts.txt"; then ok; else bad "openai client test"; fi
else
    echo "note: .venv-server with the pinned openai client absent (tools/setup_server_tests.sh): openai client test skipped"
fi

# ---- bounded load test (loopback, stops by itself) ------------------------------------------------
if command -v wrk >/dev/null; then
    cat > "$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {
  '{"input":["The cat sat on the mat.","A man is playing a guitar."]}',
  '{"input":"Quantum computers use qubits."}',
  '{"input":["one","two","three","four"],"encoding_format":"base64"}',
}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/v1/embeddings", nil, bodies[(i % #bodies) + 1])
end
EOF
    dur=4; [[ "$QUICK" == 1 ]] && dur=2
    timeout 60 wrk -t 2 -c 16 -d "${dur}s" --timeout 10s -s "$TMP/post.lua" "$URL" > "$TMP/wrk.txt" 2>&1
    cat "$TMP/wrk.txt" | sed 's/^/  wrk: /'
    reqs=$(grep -o '^ *[0-9]* requests in' "$TMP/wrk.txt" | grep -o '[0-9]*' | head -1)
    if [[ -n "$reqs" && "$reqs" -gt 0 ]] && ! grep -q 'Non-2xx' "$TMP/wrk.txt" && ! grep -q 'Socket errors' "$TMP/wrk.txt"; then
        ok
    else
        bad "load test: failed requests or none done"
    fi
    # batching happened across clients: some batch held more than one request's sequences
    req metrics-after-load 200 GET /metrics
    if awk '/^attncache_batch_sequences_bucket\{le="4"\}/ {a=$2} /^attncache_batch_sequences_count/ {c=$2} END {exit !(c > a)}' "$TMP/out"; then
        ok
    else
        bad "no batch of more than 4 sequences under 16 concurrent clients"
    fi
else
    echo "note: wrk absent: load test skipped"
fi
stop_server

# ---- API key, 429, SIGTERM drain -----------------------------------------------------------------------
printf 'sekret-key-123\n' > "$TMP/key"
start_server -m "$M" -t 2 -q --api-key-file "$TMP/key" --max-concurrent-requests 1
req no-key 401 GET /v1/models
pycheck no-key-shape "d['error']['type'] == 'authentication_error'"
req wrong-key 401 GET /v1/models - -H 'Authorization: Bearer sekret-key-124'
req prefix-key 401 GET /v1/models - -H 'Authorization: Bearer sekret-key-12'
req right-key 200 GET /v1/models - -H 'Authorization: Bearer sekret-key-123'
req health-open 200 GET /health
# the slow request must still run 0.4 s later (the 429 below needs the one slot taken): with 64
# inputs it once finished first (status 200 for over-limit) after the attention got faster
n=256; [[ "$QUICK" == 1 ]] && n=128
$PY -c "import json; print(json.dumps({'inputs': ['a slow request of many words number %d ' % i * 12 for i in range($n)]}))" > "$TMP/slow.json"
curl -s -o "$TMP/slow.out" -w '%{http_code}' -H 'Authorization: Bearer sekret-key-123' --data-binary @"$TMP/slow.json" "$URL/embed" > "$TMP/slow.code" &
cpid=$!
sleep 0.4
jreq over-limit 429 POST /embed '{"inputs":"x"}' -H 'Authorization: Bearer sekret-key-123'
# SIGTERM while the slow request is in flight: it completes, the server exits 0
kill -TERM "$SRV_PID"
wait "$cpid"
[[ "$(cat "$TMP/slow.code")" == 200 ]] && ok || bad "request in flight at SIGTERM: status $(cat "$TMP/slow.code")"
$PY -c "import json; d=json.load(open('$TMP/slow.out')); assert len(d) == $n" && ok || bad "drained response incomplete"
wait "$SRV_PID"
rc=$?
SRV_PID=""
[[ $rc -eq 0 ]] && ok || bad "exit status $rc after SIGTERM drain: $(tail -20 "$LOG")"
grep -q "stopped" "$LOG" && ok || bad "no 'stopped' line: $(tail -3 "$LOG")"
curl -s -o /dev/null "$URL/health" && bad "still listening after exit" || ok

# a second SIGTERM during the drain: the request's queued sequences are cancelled (small batches: many
# queued). The request is made long enough (256 inputs of ~250 tokens, seconds of work on any CPU
# level) that it is still running when the signals come.
$PY -c "import json; print(json.dumps({'inputs': ['a much slower request of many words number %d ' % i * 30 for i in range(256)]}))" > "$TMP/slower.json"
start_server -m "$M" -t 2 -q --max-batch-tokens 512
curl -s -o "$TMP/slow.out" -w '%{http_code}' --data-binary @"$TMP/slower.json" "$URL/embed" > "$TMP/slow.code" &
cpid=$!
sleep 0.4
kill -TERM "$SRV_PID"
sleep 0.2
kill -TERM "$SRV_PID"
wait "$cpid"
wait "$SRV_PID"
rc=$?
SRV_PID=""
[[ $rc -eq 0 ]] && ok || bad "exit status $rc after a second SIGTERM: $(tail -20 "$LOG")"
code=$(cat "$TMP/slow.code")
[[ "$code" == 503 || "$code" == 000 ]] && ok || bad "request cut by a second SIGTERM: status $code, want 503 (or closed)"
grep -q "second signal" "$LOG" && ok || bad "no second-signal line: $(tail -3 "$LOG")"

# bad start-up options are refused with a message
"$BIN" serve -m "$M" --port 99999 2>"$TMP/err" && bad "bad --port accepted" || { grep -q "bad --port" "$TMP/err" && ok || bad "no message for bad --port"; }
"$BIN" serve 2>"$TMP/err" && bad "serve without -m accepted" || ok
"$BIN" serve -m "$M" --max-batch-tokens 100 --port 0 2>"$TMP/err" && bad "batch budget below input limit accepted" || { grep -q "max-batch-tokens" "$TMP/err" && ok || bad "no message for --max-batch-tokens"; }
"$BIN" serve -m /nonexistent.gguf --port 0 2>"$TMP/err" && bad "missing model accepted" || { grep -q "cannot load model" "$TMP/err" && ok || bad "no message for a missing model"; }

# ---- an attention cache served read-only (two workers attached to one cache) ---------------------------
head -20 "$SRC/../shared/data/sst2/train.tsv" 2>/dev/null | tail -n +2 | cut -f1 > "$TMP/corpus.txt"
if [[ -s "$TMP/corpus.txt" ]] && "$BIN" build -m "$M" -i "$TMP/corpus.txt" -o "$TMP/c.cache" > /dev/null 2>&1; then
    start_server -m "$M" -t 1 --workers 2 -q --cache "$TMP/c.cache"
    $PY -c "import json,sys; print(json.dumps({'input': [open('$TMP/corpus.txt').readline().strip(), 'zebras compute eigenvalues at dawn']}))" > "$TMP/body"
    req cache-embed 200 POST /v1/embeddings "$TMP/body"
    cp "$TMP/out" "$TMP/cached.json"
    req cache-metrics 200 GET /metrics
    grep -q '^attncache_cache_hits_total [1-9]' "$TMP/out" && ok || bad "no cache hit: $(grep cache_hits "$TMP/out")"
    grep -q '^attncache_cache_lookups_total 2$' "$TMP/out" && ok || bad "cache lookups: $(grep cache_lookups "$TMP/out")"
    grep -q '^attncache_stage_duration_seconds_count{stage="lookup"} [1-9]' "$TMP/out" && ok || bad "no lookup stage histogram"
    grep -q '^attncache_cache_lookups_skipped_total 0$' "$TMP/out" && ok || bad "lookups skipped with hits: $(grep skipped "$TMP/out")"
    stop_server
    # adaptive lookups: 10 inputs that never hit (threshold 1e-12), window 4: 4 looked up, then skip, skip,
    # skip, probe, skip, skip — /metrics counts them
    start_server -m "$M" -t 1 -q --cache "$TMP/c.cache" --threshold 1e-12 --adapt-window 4
    $PY -c "import json; print(json.dumps({'input': ['zebra number %d computes eigenvalues at dawn' % i for i in range(10)]}))" > "$TMP/body10"
    req adapt-embed 200 POST /v1/embeddings "$TMP/body10"
    req adapt-metrics 200 GET /metrics
    grep -q '^attncache_cache_lookups_skipped_total 5$' "$TMP/out" && grep -q '^attncache_cache_probes_total 1$' "$TMP/out" &&
      grep -q '^attncache_cache_lookups_total 5$' "$TMP/out" && grep -q '^attncache_cache_skipping 1$' "$TMP/out" && ok ||
      bad "adaptive lookups in /metrics: $(grep -E 'skipp|probes|lookups_total' "$TMP/out")"
    stop_server
    "$BIN" serve -m "$M" --cache "$TMP/c.cache" --adapt-floor 2 --port 0 2>"$TMP/err" && bad "bad --adapt-floor accepted" || { grep -q "bad --adapt-floor" "$TMP/err" && ok || bad "no message for a bad --adapt-floor"; }
    "$BIN" serve -m "$M" --cache "$TMP/c.cache" --recheck-margin 1.5 --port 0 2>"$TMP/err" && bad "bad --recheck-margin accepted" || { grep -q "bad --recheck-margin" "$TMP/err" && ok || bad "no message for a bad --recheck-margin"; }
    start_server -m "$M" -t 2 -q
    req exact-embed 200 POST /v1/embeddings "$TMP/body"
    if $PY - "$TMP/cached.json" "$TMP/out" <<'EOF'
import json, sys
a, b = (json.load(open(p))["data"] for p in sys.argv[1:3])
for x, y in zip(a, b):
    assert sum(u * v for u, v in zip(x["embedding"], y["embedding"])) > 0.99, "cached embedding far from exact"
EOF
    then ok; else bad "cached embeddings differ from exact ones"; fi
    stop_server
else
    echo "note: no SST-2 data or cache build failed: cache test skipped"
fi

# ---- the cache online: --cache-insert records served inputs, later requests hit them ---------------------
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
wait_metric() { # NAME MIN: poll up to 30 s until the metric reaches MIN
    for _ in $(seq 300); do
        local v
        v=$(metric "$1")
        [[ -n "$v" && "$v" -ge "$2" ]] && return 0
        sleep 0.1
    done
    return 1
}
start_server -m "$M" -t 2 -q --cache "$TMP/live.cache" --cache-insert
jreq insert-first 200 POST /embed '{"inputs":["a first sentence to remember","another one, quite different","and a third"]}'
wait_metric attncache_cache_committed_entries 3 && ok || bad "3 inputs not recorded: $(curl -s "$URL/metrics" | grep cache_)"
jreq insert-again 200 POST /embed '{"inputs":["a first sentence to remember","another one, quite different","and a third"]}'
req insert-metrics 200 GET /metrics
grep -q '^attncache_cache_hits_total 3$' "$TMP/out" && ok || bad "recorded inputs not served: $(grep -E 'cache_(hits|lookups)' "$TMP/out")"
grep -q '^attncache_cache_inserts_total 3$' "$TMP/out" && grep -q '^attncache_cache_insert_duplicates_total 0$' "$TMP/out" &&
    ok || bad "a batch served wholly from the cache was offered for recording again"
# the hits reach usage.bin (the eviction policy's input) while the server runs: saved when idle
sleep 2.5
if $PY - "$TMP/live.cache/usage.bin" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"ACUSAGE1", "bad magic"
n = struct.unpack_from("<Q", b, 8)[0]
recs = [struct.unpack_from("<QQq", b, 16 + 24 * i) for i in range(n)]
assert n == 3 and all(h == 1 and t > 0 for _, h, t in recs), recs
EOF
then ok; else bad "usage.bin does not hold the 3 hits"; fi
# a batch with a hit and a miss: only the miss is offered for recording (ac_cache_last_hits)
jreq insert-mixed 200 POST /embed '{"inputs":["a first sentence to remember","zebras compute eigenvalues at dawn"]}'
wait_metric attncache_cache_inserts_total 4 && ok || bad "the new input of a mixed batch not recorded"
req insert-mixed-metrics 200 GET /metrics
grep -q '^attncache_cache_insert_offered_total 4$' "$TMP/out" && grep -q '^attncache_cache_insert_duplicates_total 0$' "$TMP/out" &&
    ok || bad "the hit of a mixed batch was offered for recording: $(grep -E 'cache_insert' "$TMP/out")"
grep -q '^attncache_cache_hits_total 4$' "$TMP/out" && ok || bad "the stored input of a mixed batch not served: $(grep -E 'cache_hits' "$TMP/out")"
stop_server
"$BIN" db verify "$TMP/live.cache" > "$TMP/verify.txt" 2>&1 && grep -q "all records intact" "$TMP/verify.txt" && ok || bad "db verify after insert: $(cat "$TMP/verify.txt")"

# --cache-max-bytes: eviction. An insert that takes the store to the budget compacts it (to 3/4 of
# the budget, the default LFU); the store never passes the budget by more than one entry (~15-40 KB
# here), every entry stays intact, and what is inserted after a compaction is served
BUDGET=120000
start_server -m "$M" -t 2 -q --cache "$TMP/cap.cache" --cache-insert --cache-max-bytes $BUDGET
maxseen=0
for i in $(seq 12); do
    jreq "cap-$i" 200 POST /embed "{\"inputs\":[\"capped text number $i about subject $((i * 37 % 101))\"]}"
    wait_metric attncache_cache_insert_offered_total "$i" || bad "input $i not offered"
    sz=$(stat -c %s "$TMP/cap.cache/maps.acdb" 2>/dev/null || echo 0)
    ((sz > maxseen)) && maxseen=$sz
done
wait_metric attncache_cache_compactions_total 1 && ok || bad "no compaction under the budget: $(curl -s "$URL/metrics" | grep -E 'cache_(store|evict|compact)')"
wait_metric attncache_cache_evictions_total 1 && ok || bad "nothing evicted"
((maxseen <= BUDGET + 45000)) && ok || bad "store reached $maxseen bytes under a budget of $BUDGET"
# an entry inserted after the compactions is served from the shared cache
jreq cap-new 200 POST /embed '{"inputs":["a fresh sentence after the compactions"]}'
hits0=$(metric attncache_cache_hits_total)
wait_metric attncache_cache_insert_offered_total 13
for _ in $(seq 50); do # until it is committed and the lookup finds it
    jreq cap-again 200 POST /embed '{"inputs":["a fresh sentence after the compactions"]}'
    [[ "$(metric attncache_cache_hits_total)" -gt "$hits0" ]] && break
    sleep 0.1
done
[[ "$(metric attncache_cache_hits_total)" -gt "$hits0" ]] && ok || bad "an entry inserted after compaction not served"
[[ "$(metric attncache_cache_store_full)" == 0 ]] && ok || bad "store marked full despite eviction"
stop_server
"$BIN" db verify "$TMP/cap.cache" > "$TMP/verify.txt" 2>&1 && grep -q "all records intact" "$TMP/verify.txt" && ok || bad "db verify after compactions: $(cat "$TMP/verify.txt")"
sz=$(stat -c %s "$TMP/cap.cache/maps.acdb")
((sz <= BUDGET + 45000)) && ok || bad "store of $sz bytes after stop (budget $BUDGET)"
# a smaller budget at start: compacted before serving
start_server -m "$M" -t 2 -q --cache "$TMP/cap.cache" --cache-insert --cache-max-bytes 60000 --cache-evict lru
wait_metric attncache_cache_evictions_total 1 && ok || bad "no eviction at start under a smaller budget"
sz=$(stat -c %s "$TMP/cap.cache/maps.acdb")
((sz <= 60000)) && ok || bad "store of $sz bytes after the start-up compaction (budget 60000)"
stop_server
# the same offline: attncache db compact
sz0=$(stat -c %s "$TMP/cap.cache/maps.acdb")
"$BIN" db compact "$TMP/cap.cache" --max-bytes $((sz0 - 1)) --policy lru > "$TMP/cout" 2>&1 && grep -q "evicted [1-9]" "$TMP/cout" && ok || bad "db compact: $(cat "$TMP/cout")"
sz=$(stat -c %s "$TMP/cap.cache/maps.acdb")
((sz < sz0)) && ok || bad "store of $sz bytes after db compact --max-bytes $((sz0 - 1))"
"$BIN" db compact "$TMP/cap.cache" --max-bytes $((sz0 - 1)) > "$TMP/cout" 2>&1 && grep -q "nothing to do" "$TMP/cout" && ok || bad "db compact within the budget: $(cat "$TMP/cout")"
"$BIN" db verify "$TMP/cap.cache" > "$TMP/verify.txt" 2>&1 && ok || bad "db verify after db compact: $(cat "$TMP/verify.txt")"
"$BIN" db compact "$TMP/cap.cache" --max-bytes 40000 --policy mru 2>"$TMP/err" && bad "bad --policy accepted" || { grep -q "bad --policy" "$TMP/err" && ok || bad "no message for a bad --policy"; }
"$BIN" db compact "$TMP/cap.cache" 2>"$TMP/err" && bad "db compact without --max-bytes accepted" || { grep -q "max-bytes" "$TMP/err" && ok || bad "no message for a missing --max-bytes"; }
"$BIN" serve -m "$M" --cache "$TMP/cap.cache" --cache-insert --cache-evict fifo --port 0 2>"$TMP/err" && bad "bad --cache-evict accepted" || { grep -q "bad --cache-evict" "$TMP/err" && ok || bad "no message for a bad --cache-evict"; }

# SIGKILL while inserting under load: a restart sees every committed entry and nothing half-written
start_server -m "$M" -t 2 -q --cache "$TMP/kill.cache" --cache-insert
(for i in $(seq 400); do
    curl -s -o /dev/null -d "{\"inputs\":[\"request number $i about topic $((i * 7919 % 1000))\",\"second text $i\"]}" "$URL/embed" || break
done) &
lpid=$!
wait_metric attncache_cache_committed_entries 6 && ok || bad "no entries committed under load"
sleep 0.5
committed=$(metric attncache_cache_committed_entries)
kill -KILL "$SRV_PID"
wait "$SRV_PID" 2>/dev/null
SRV_PID=""
wait "$lpid" 2>/dev/null
"$BIN" db verify "$TMP/kill.cache" > "$TMP/verify.txt" 2>&1 && grep -q "all records intact" "$TMP/verify.txt" && ok || bad "db verify after SIGKILL: $(cat "$TMP/verify.txt")"
entries=$("$BIN" db stats "$TMP/kill.cache" 2>/dev/null | awk '$1 == "entries" {print $2}')
[[ -n "$entries" && -n "$committed" && "$entries" -ge "$committed" ]] && ok || bad "after SIGKILL: $entries entries, $committed were committed"
start_server -m "$M" -t 2 -q --cache "$TMP/kill.cache" --cache-insert
jreq after-kill 200 POST /embed '{"inputs":"request number 1 about topic 919"}'
req after-kill-metrics 200 GET /metrics
grep -q '^attncache_cache_hits_total 1$' "$TMP/out" && ok || bad "a committed entry not served after restart: $(grep -E 'cache_(hits|lookups)' "$TMP/out")"
stop_server

# ---- 503 while loading: the F16 model is widened to f32 by the workers' contexts before ready (~1 s), the socket is open before --------
F16="$SRC/models-cache/all-MiniLM-L6-v2-f16.gguf"
if [[ -f "$F16" ]]; then
    LOG="$TMP/server.loading.log"
    "$BIN" serve --port 0 -q -m "$F16" 2>"$LOG" &
    SRV_PID=$!
    PORT=""
    for _ in $(seq 200); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$LOG" 2>/dev/null | grep -o '[0-9]*$')
        [[ -n "$PORT" ]] && break
        sleep 0.01
    done
    # each check asserts when the request came before the end of loading (a race it nearly always wins)
    code=$(curl -s -o "$TMP/out" -w '%{http_code}' -d '{"inputs":"x"}' "http://127.0.0.1:$PORT/embed")
    if [[ "$code" == 503 ]]; then
        pycheck embed-loading "'loading' in d['error']"
    else
        echo "note: the model loaded before the first /embed ($code): 503 while loading not observed"
    fi
    code=$(curl -s -o "$TMP/out" -w '%{http_code}' "http://127.0.0.1:$PORT/health")
    if [[ "$code" == 503 ]]; then
        pycheck health-loading "d['status'] == 'loading'"
    else
        echo "note: the model loaded before the first /health ($code)"
    fi
    for _ in $(seq 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" == 200 ]] && break
        sleep 0.05
    done
    jreq embed-loaded 200 POST /embed '{"inputs":"x"}'
    stop_server
fi

# ---- /score with the committed decoder ------------------------------------------------------------
if [[ -f "$DEC" ]]; then
    start_server -m "$DEC" -t 2 -q
    printf 'a great and moving film\na dull and boring film\n' > "$TMP/sc.txt"
    "$BIN" score -m "$DEC" --labels "good,bad" --template "Review: {text} Sentiment:" -f "$TMP/sc.txt" > "$TMP/sc_cli.jsonl"
    jreq score 200 POST /score '{"inputs":["a great and moving film","a dull and boring film"],"labels":["good","bad"],"template":"Review: {text} Sentiment:"}'
    if $PY - "$TMP/sc_cli.jsonl" "$TMP/out" <<'EOF'
import json, sys
cli = [json.loads(l) for l in open(sys.argv[1])]
srv = json.load(open(sys.argv[2]))
assert len(cli) == len(srv) == 2
for c, s in zip(cli, srv):
    assert c["label"] == s["label"] and c["tokens"] == s["tokens"]
    for k in c["logprobs"]:
        assert abs(c["logprobs"][k] - s["logprobs"][k]) < 1e-4, (c, s)
EOF
    then ok; else bad "/score differs from the CLI's score: $(head -c 300 "$TMP/out")"; fi
    jreq score-no-labels 422 POST /score '{"inputs":"x","labels":[]}'
    jreq score-bad-template 422 POST /score '{"inputs":"x","labels":["a"],"template":"no placeholder"}'
    jreq predict-no-head 400 POST /predict '{"inputs":"x"}'
    # the prefix K/V cache's inputs (below), answered here without it: two prompts sharing a
    # 46-token head, a multi-token label, a long unrelated prompt, embeddings sharing the head
    P="Film reviews from a weekly newspaper, each followed by the critic's verdict on whether the film is worth seeing. The critics write for a general audience and keep their reviews short. "
    LONG=$(for i in $(seq 6); do printf 'Item %d of an unrelated inventory list: copper wire, brass screws, and oak planks. ' "$i"; done)
    $PY - "$P" "$LONG" "$TMP" <<'EOF'
import json, sys
p, long_text, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
bodies = {
    "pa": {"inputs": p + "Review: a great and moving film. Verdict:", "labels": ["good", "bad"]},
    "pb": {"inputs": p + "Review: a dull and boring film. Verdict:", "labels": ["good", "bad"]},
    "pc": {"inputs": p + "Review: a great and moving film. Verdict:", "labels": ["good", "very good", "bad"]},
    "pd": {"inputs": long_text + "Verdict:", "labels": ["good", "bad"]},
    "pe": {"input": [p + "An embedding of this text.", p + "An embedding of that other text."]},
}
for k, v in bodies.items():
    json.dump(v, open(f"{tmp}/{k}.json", "w"))
with open(f"{tmp}/pab.txt", "w") as f:
    f.write(bodies["pa"]["inputs"] + "\n" + bodies["pb"]["inputs"] + "\n")
EOF
    for k in pa pb pc pd; do req "exact-$k" 200 POST /score "$TMP/$k.json"; cp "$TMP/out" "$TMP/exact_$k.json"; done
    req exact-pe 200 POST /v1/embeddings "$TMP/pe.json"
    cp "$TMP/out" "$TMP/exact_pe.json"
    stop_server

    # ---- the prefix K/V cache (--prefix-cache): the second prompt computes only what it does not
    # share with the first; answers equal the exact server's; its metrics; eviction under a 1 MiB budget
    start_server -m "$DEC" -t 2 -q --prefix-cache 1 --prefix-min 8
    req prefix-info 200 GET /info
    pycheck prefix-info "d['prefix_cache'] == {'max_bytes': 1048576, 'min_match': 8}"
    metric() { curl -s "$URL/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
    # the tokens the two prompts share (with BOS), as the server tokenizes them
    common=$("$BIN" tokenize -m "$DEC" --special -f "$TMP/pab.txt" | $PY -c "
import sys
a, b = [l.split() for l in sys.stdin]
n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n)")
    same_as_exact() { # NAME KEY: the last response equals the exact server's (|d| <= 1e-6)
        if $PY - "$TMP/exact_$2.json" "$TMP/out" <<'EOF'
import json, sys
e, g = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
if isinstance(e, dict):  # /v1/embeddings
    ea, ga = [x["embedding"] for x in e["data"]], [x["embedding"] for x in g["data"]]
    assert len(ea) == len(ga) and all(len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y)) <= 1e-6 for x, y in zip(ea, ga)), "embeddings differ"
else:
    assert len(e) == len(g)
    for x, y in zip(e, g):
        assert x["label"] == y["label"] and x["tokens"] == y["tokens"] and x["logprobs"].keys() == y["logprobs"].keys()
        for k in x["logprobs"]:
            assert abs(x["logprobs"][k] - y["logprobs"][k]) <= 1e-6, (k, x, y)
EOF
        then ok; else bad "$1: differs from the server without --prefix-cache: $(head -c 300 "$TMP/out")"; fi
    }
    req prefix-a 200 POST /score "$TMP/pa.json"
    same_as_exact prefix-a pa
    r1=$(metric attncache_prefix_tokens_reused_total)
    c1=$(metric attncache_prefix_tokens_computed_total)
    req prefix-b 200 POST /score "$TMP/pb.json"
    same_as_exact prefix-b pb
    r2=$(metric attncache_prefix_tokens_reused_total)
    c2=$(metric attncache_prefix_tokens_computed_total)
    nb=$($PY -c "import json; print(json.load(open('$TMP/out'))[0]['tokens'])")
    if [[ "$r1" == 0 && "$common" -ge 40 && $((r2 - r1)) -eq "$common" && $((c2 - c1)) -eq $((nb - common)) ]]; then ok
    else bad "prefix reuse: reused $r1 then $r2, computed $c1 then $c2 (want 0, then +$common reused and +$((nb - common)) computed of $nb)"; fi
    [[ "$(metric attncache_prefix_hits_total)" == 1 && "$(metric attncache_prefix_lookups_total)" == 2 ]] && ok || bad "prefix hits/lookups: $(curl -s "$URL/metrics" | grep '^attncache_prefix')"
    req prefix-multi-token-label 200 POST /score "$TMP/pc.json"
    same_as_exact prefix-multi-token-label pc
    req prefix-embeddings 200 POST /v1/embeddings "$TMP/pe.json"
    same_as_exact prefix-embeddings pe
    [[ "$(metric attncache_prefix_evictions_total)" == 0 ]] && ok || bad "prefix evictions before the budget was reached"
    req prefix-long 200 POST /score "$TMP/pd.json" # 173 tokens: its rows take the 1 MiB budget past its limit
    same_as_exact prefix-long pd
    ev=$(metric attncache_prefix_evictions_total)
    by=$(metric attncache_prefix_bytes)
    if [[ "$ev" -ge 1 && "$by" -gt 0 && "$by" -le 1048576 ]]; then ok; else bad "prefix eviction: evictions $ev, bytes $by of 1048576"; fi
    for m in lookups_total hits_total tokens_reused_total tokens_computed_total bytes evictions_total; do
        curl -s "$URL/metrics" | grep -q "^# TYPE attncache_prefix_$m " && ok || bad "metric attncache_prefix_$m missing"
    done
    req prefix-a-again 200 POST /score "$TMP/pa.json" # after the eviction
    same_as_exact prefix-a-again pa
    stop_server
    # refused: a bidirectional model, --prefix-min alone, a zero budget
    for args in "-m $M --prefix-cache 16" "-m $DEC --prefix-min 8" "-m $DEC --prefix-cache 0"; do
        # shellcheck disable=SC2086
        "$BIN" serve --port 0 -q $args >/dev/null 2>"$TMP/perr"
        rc=$?
        if [[ $rc -ne 0 ]] && grep -qE "needs a causal model|applies to --prefix-cache|bad --prefix-cache" "$TMP/perr"; then ok
        else bad "serve $args: exit $rc, $(cat "$TMP/perr")"; fi
    done
else
    echo "note: $DEC absent: /score and --prefix-cache tests skipped"
fi

echo "test_server: $npass passed, $nfail failed"
[[ $nfail -eq 0 ]]
