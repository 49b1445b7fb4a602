#!/usr/bin/env bash
# Cross-build attncache for aarch64 (Debian's gcc-aarch64-linux-gnu and the
# arm64 multiarch -dev packages) and run the test programs under
# qemu-aarch64-static. Speed means nothing under emulation; correctness does.
#
# Not part of CI (scripts/test.sh): the build and the emulated run take a while
# (see docs/PERFORMANCE.md, CPU levels, for what runs and how long it took).
#
# usage: scripts/test_aarch64.sh [BUILD_DIR] [TEST_REGEX]
#   BUILD_DIR   default build-aarch64
#   TEST_REGEX  ctest -R filter (default: every test program)
# Installs what is missing (adds the arm64 architecture to dpkg; removes nothing).
# Every arm64 package the build needs exists in Debian 12 (bookworm): pcre2,
# utf8proc, cmocka, xxhash, openblas, faiss (static), libmicrohttpd and cJSON (the
# server), oneDNN. oneDNN is left
# out (AC_WITH_DNNL=OFF): its GEMM dispatch is x86 only here; OpenBLAS serves.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-aarch64}
filter=${2:-}

pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static cmake pkg-config
      libpcre2-dev:arm64 libutf8proc-dev:arm64 libcmocka-dev:arm64 libxxhash-dev:arm64
      libopenblas-dev:arm64 libfaiss-dev:arm64 libmicrohttpd-dev:arm64 libcjson-dev:arm64)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test_aarch64: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
  # simulate first: never let apt remove an installed (amd64) package
  if $SUDO apt-get install -s --no-install-recommends "${missing[@]}" | grep -q '^Remv'; then
    echo "test_aarch64: installing ${missing[*]} would remove packages; install them by hand" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$dir"
tc="$dir/aarch64-toolchain.cmake"
cat > "$tc" <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# tests run under qemu: ctest starts them through the emulator
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
EOF
export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
export PKG_CONFIG_PATH=
# -fvect-cost-model=very-cheap: Debian 12's aarch64 GCC 12 dies with an internal
# compiler error (vect_transform_reduction) vectorising the fmax reductions of
# tests/test_forward.c, tests/test_golden.c and tools/cli/cache_cmds.c at -O3
# with the default cost model.
cmake -S . -B "$dir" -DCMAKE_TOOLCHAIN_FILE="$PWD/$tc" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_C_FLAGS="-fvect-cost-model=very-cheap" -DCMAKE_CXX_FLAGS="-fvect-cost-model=very-cheap" \
      -DAC_NATIVE=OFF -DAC_WITH_DNNL=OFF \
      -DOPENBLAS_LIB=/usr/lib/aarch64-linux-gnu/libopenblas.so \
      -DOPENBLAS_INC=/usr/include/aarch64-linux-gnu/openblas-pthread \
      -DFAISS_LIB=/usr/lib/aarch64-linux-gnu/libfaiss.a >/dev/null
# keep going past a target that fails (-k): every test program that builds is run
build_ok=1
if ! cmake --build "$dir" -j"$(nproc)" -- -k > "$dir/build.log" 2>&1; then
  build_ok=0
  grep -E "error|undefined reference" "$dir/build.log" | sort | uniq | head -20 >&2
  echo "test_aarch64: some targets failed to build (log: $dir/build.log); running the tests that built" >&2
fi
grep -E "warning" "$dir/build.log" || true

# The arm64 dynamic loader and libraries live in the multiarch directories;
# the cross toolchain's own runtime (libgomp, libstdc++) in /usr/aarch64-linux-gnu.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu:/lib/aarch64-linux-gnu
# Tests that start the CLI binary themselves need the kernel to run arm64
# executables (binfmt_misc + qemu); without it they are left out, and said so.
# The map store reserves 16 GiB of address space per mapping (store.c,
# RESERVE_MIN), and qemu-user 7.2 keeps host memory for the page flags of every
# reserved guest page, never given back: test_cache_store's 300-open damage test
# grew qemu past 20 GB, test_cache_reuse was OOM-killed at 24 GB (no such growth
# natively; on arm64 hardware the reservation costs nothing). The tests that
# open stores take a 64 MiB reservation from AC_TEST_STORE_RESERVE instead
# (tests/store_reserve.h); growth past it maps further regions, as on any file.
export AC_TEST_STORE_RESERVE=$((64 << 20))
out='^$'
if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  echo "test_aarch64: no binfmt_misc entry for qemu-aarch64: test_cli, test_cli_scalar, test_server" \
       "and test_cache_build_kill (they start the arm64 CLI from a shell or by exec) skipped" >&2
  out="^test_cli(_.*)?\$|^test_server\$|^test_cache_build_kill\$"
fi
echo "test_aarch64: skipped under qemu: $out" >&2
skip=(-E "$out")
rc=0
(cd "$dir" && OMP_NUM_THREADS=2 ctest --output-on-failure -j2 ${filter:+-R "$filter"} "${skip[@]}") || rc=1
((build_ok)) || rc=1
exit $rc
