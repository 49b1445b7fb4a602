#!/usr/bin/env bash
# The GPU tests: builds the CUDA backend (-DAC_CUDA=ON) unless BIN_DIR already
# holds the test programs, then runs them (kernels against CPU references; the
# whole forward pass against the CPU engine on MiniLM and stories260K).
# Without a CUDA device (or without nvcc) it says so and exits 0.
# usage: scripts/test_gpu.sh [BIN_DIR]   env: AC_GPU_MINILM, AC_GPU_STORIES, AC_GPU_GREEDY (model paths),
#        AC_GPU_SANITIZE=1 (also under compute-sanitizer memcheck)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "test_gpu: no CUDA device here: GPU tests skipped"
  exit 0
fi
bin=${1:-}
if [ -z "$bin" ]; then
  if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    echo "test_gpu: no nvcc: GPU tests skipped"
    exit 0
  fi
  export PATH=$PATH:/usr/local/cuda/bin
  bash scripts/build.sh build-cuda -DAC_CUDA=ON
  bin=build-cuda/tests
fi
minilm=${AC_GPU_MINILM:-models-cache/all-MiniLM-L6-v2-f32.gguf}
stories=${AC_GPU_STORIES:-../shared/models/stories260K.gguf}
greedy=${AC_GPU_GREEDY:-../shared/models/stories260K.greedy.tsv}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$bin/test_cuda_ops"
"$bin/test_cuda_cache"
"$bin/test_cuda_forward" "$minilm" "$stories" "$greedy"
if [ "${AC_GPU_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null 2>&1; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_cuda_ops"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_cuda_cache"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/test_cuda_forward" "$minilm" "$stories" "$greedy"
fi
echo "test_gpu: all GPU tests passed"
