#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test in a
# release build and again under AddressSanitizer + UndefinedBehaviorSanitizer,
# then fuzzes the GGUF reader and the map store for AC_FUZZ_SECONDS each
# (default 60; libFuzzer, scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash tools/setup_models.sh --sst2     # converts the real MiniLM (+ SST-2 head); golden tests use it
bash tools/setup_server_tests.sh      # the pinned openai client for tests/test_server.sh (.venv-server)
# Where nvcc is present (every CI machine) the release build also compiles the CUDA
# backend and its GPU test programs; without a GPU those print SKIP and pass.
cuda=()
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=$PATH:/usr/local/cuda/bin
  cuda=(-DAC_CUDA=ON)
fi
bash scripts/build.sh build "${cuda[@]}"
(cd build && ctest --output-on-failure -j2)
bash scripts/build.sh build-asan -DAC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   AC_TEST_QUICK=1 ctest --output-on-failure -j2)
bash scripts/fuzz.sh "${AC_FUZZ_SECONDS:-60}"
