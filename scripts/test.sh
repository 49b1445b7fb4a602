#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test in a
# release build and again under AddressSanitizer + UndefinedBehaviorSanitizer,
# then fuzzes the GGUF reader and the map store for AC_FUZZ_SECONDS each
# (default 60; libFuzzer, scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash tools/setup_models.sh --sst2     # converts the real MiniLM (+ SST-2 head); golden tests use it
bash scripts/build.sh build
(cd build && ctest --output-on-failure -j2)
bash scripts/build.sh build-asan -DAC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   AC_TEST_QUICK=1 ctest --output-on-failure -j2)
bash scripts/fuzz.sh "${AC_FUZZ_SECONDS:-60}"
