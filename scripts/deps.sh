#!/usr/bin/env bash
# Install the Debian packages attncache needs (idempotent: only what is missing).
set -euo pipefail
pkgs=(build-essential cmake pkg-config
      libopenblas-dev libdnnl-dev libfaiss-dev
      liblmdb-dev   # only build/bench_store: the store vs LMDB measurement (docs/CACHE_STORE.md section 3)
      libutf8proc-dev libpcre2-dev libcmocka-dev libxxhash-dev
      libmicrohttpd-dev libcjson-dev curl wrk
      clang libclang-rt-14-dev)  # libFuzzer + sanitizer runtimes for scripts/fuzz.sh
# Python (tools only): any python3 with a working venv module will do.
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3 python3-venv python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
