#!/usr/bin/env bash
# demo_cache.sh — the attention cache at work, in a few lines (scripts/run.sh runs it after the
# main job; needs build/attncache). The committed decoder models/attnlm-8k.gguf answers AG News
# topics from 8-shot prompts that share their demonstrations (the usual few-shot protocol). A
# small cache of training prompts' attention maps is recorded; then held-out prompts run twice
# side by side, exact and with the cache serving the rows of the shared prefix (`--rows prefix`:
# those rows are what the model computes, so the answers do not change); then once more with exact
# prefix K/V reuse (only the tokens after the shared prefix computed, every stage). Full figures and
# commands: docs/CACHE.md. The cache lives in a temporary directory, removed at exit.
# usage: demo_cache.sh [DATA_DIR (default ../shared/data)] [QUERIES (default 100)] [ENTRIES (default 10)]
# AC_BIN: the attncache binary (default build/attncache); the temporary directory is made under $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
queries=${2:-100}
entries=${3:-10}
bin=${AC_BIN:-build/attncache}
model=models/attnlm-8k.gguf

echo
echo "== the attention cache at work: $model, AG News 8-shot prompts sharing their demonstrations =="
if [ ! -f "$data/agnews/train.csv" ]; then
  echo "demo skipped: AG News not found ($data/agnews/train.csv); the data sets are read from ../shared/data"
  exit 0
fi
if [ ! -f "$model" ] || [ ! -x "$bin" ]; then
  echo "demo skipped: $model or $bin missing" >&2
  exit 0
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/attncache-demo.XXXXXX")
trap 'rm -rf "$dir"' EXIT

t0=$(date +%s%N)
"$bin" build -m "$model" --task agnews-fewshot --demos shared --limit "$entries" --codec topk16-causal \
  --data "$data" -q -o "$dir/cache" > "$dir/build.txt" 2> "$dir/build.err" ||
  { cat "$dir/build.err" >&2; exit 1; }
t1=$(date +%s%N)
"$bin" eval --task agnews-fewshot -m "$model" --data "$data" --demos shared --limit "$queries" \
  --cache "$dir/cache" --rows prefix --json "$dir/cache.json" > "$dir/eval.txt" 2>&1 ||
  { cat "$dir/eval.txt" >&2; exit 1; }

# One line per way of running the stream, from eval's JSON (exact first).
show() { # show JSON: the exact line and the cached one
  python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["cache"]
print(f"{d['n']} held-out prompts (mean {d['mean_prompt_tokens']:.0f} tokens), exact and cached side by side:")
print(f"  exact            accuracy {d['value']:6.2f}%  {d['seconds']:6.2f} s")
print(f"  attention cache  accuracy {c['value']:6.2f}%  {c['seconds']:6.2f} s  {c['speedup_e2e']:.2f}x end-to-end, "
      f"{c['speedup_attn']:.2f}x attention; hits {100 * c['hit_rate']:.0f}%, "
      f"{100 * c['rows_served_share']:.0f}% of attention rows served from maps")
EOF
}
echo "recorded $entries training prompts' attention maps (top-16 weights per row, $(du -sh "$dir/cache" | cut -f1)) in" \
  "$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }') s"
show "$dir/cache.json"

# Exact prefix K/V reuse (the radix tree of cached K/V rows: a prompt whose first tokens match computes
# only the rest, every stage; exact): the same stream, exact and with the prefix cache side by side.
"$bin" eval --task agnews-fewshot -m "$model" --data "$data" --demos shared --limit "$queries" \
  --prefix-cache 256 --json "$dir/prefix.json" > "$dir/prefix.txt" 2>&1 ||
  { cat "$dir/prefix.txt" >&2; exit 1; }
python3 - "$dir/prefix.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["prefix"]
print(f"  prefix K/V reuse accuracy {p['value']:6.2f}%  {p['seconds']:6.2f} s  {p['speedup_e2e']:.2f}x end-to-end "
      f"(exact {d['seconds']:.2f} s in its run); {p['tokens_reused']} of {p['tokens_reused'] + p['tokens_computed']} "
      f"prompt tokens reused, exactly")
EOF
echo "(timings from one run on this machine; the speedup grows with the share of the prompt that is shared)"
