#!/usr/bin/env bash
# Train attncache's own Llama-architecture decoder (attnlm) and export it to GGUF.
#
#   tools/train_decoder.sh prep                 # here: copy the data into .dev/data, train the BPE tokenizer
#   tools/train_decoder.sh train OUTDIR [ARGS]  # on the GPU machine: train + evaluate, HF checkpoint -> OUTDIR
#   tools/train_decoder.sh export CKPT_DIR [OUT.gguf]   # here: GGUF (F16) + tokenizer/forward checks
#
# The GPU run (through the device tool, carrying .dev/data and .dev/attnlm-tok):
#   tools/train_decoder.sh train $OUT --steps N      # N from models/attnlm.md re-creates the committed model
# ARGS go to `train_decoder.py train` (defaults there: 8 layers, width 256, 8 heads / 2 KV heads,
# FFN 704, seq 1024, batch 64, lr 2e-3, seed 1234). Without --steps the run times itself
# (--time-budget seconds of training).
#
# Environment: AC_DATA (default ../shared/data), PY (python with torch/transformers/tokenizers;
# default .venv/bin/python when present, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA_SRC="${AC_DATA:-$ROOT/../shared/data}"
DATA="$ROOT/.dev/data"
TOK="$ROOT/.dev/attnlm-tok"
if [[ -z "${PY:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi

cmd="${1:-}"
shift || true
case "$cmd" in
prep)
    # Only the files training/eval read; the held-out rule is applied by train_decoder.py.
    for f in sst2/train.tsv sst2/dev.tsv stsb/sts-train.csv stsb/sts-dev.csv agnews/train.csv trec/train.txt \
             mrpc/train.txt imdb/train.tsv sentiment/mr.txt sentiment/cr.txt sentiment/subj.txt sentiment/mpqa.txt; do
        if [[ ! -f "$DATA_SRC/$f" ]]; then echo "train_decoder: missing $DATA_SRC/$f" >&2; exit 1; fi
        mkdir -p "$DATA/$(dirname "$f")"
        cp -f "$DATA_SRC/$f" "$DATA/$f"
        chmod u+w "$DATA/$f"
    done
    "$PY" tools/py/train_decoder.py tokenizer --data "$DATA" --out "$TOK" --vocab 8192
    ;;
train)
    out="${1:?usage: train_decoder.sh train OUTDIR [ARGS]}"
    shift
    export PYTHONUNBUFFERED=1
    "$PY" tools/py/train_decoder.py train --data "$DATA" --tokenizer "$TOK" --out "$out" \
        --seed 1234 --compile --workers 10 "$@"
    ;;
export)
    ckpt="${1:?usage: train_decoder.sh export CKPT_DIR [OUT.gguf]}"
    gg="${2:-$ROOT/models/attnlm-8k.gguf}"
    mkdir -p "$(dirname "$gg")"
    cli=()
    if [[ -x "$ROOT/build-train/attncache" ]]; then cli=(--cli "$ROOT/build-train/attncache"); fi
    "$PY" tools/py/export_decoder_gguf.py "$ckpt" --outfile "$gg" --name attnlm-8k --data "$DATA" "${cli[@]}"
    ;;
*)
    sed -n '2,17p' "${BASH_SOURCE[0]}"
    exit 2
    ;;
esac
