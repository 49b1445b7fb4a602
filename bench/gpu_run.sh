#!/usr/bin/env bash
# GPU benchmark, attncache and the PyTorch peer side by side on the same GPU in
# one run: bench/gpu_bench (our backend, random weights of real shapes) then
# bench/gpu_torch_peer.py (plain PyTorch + transformers, bf16, SDPA), then the
# side-by-side tables. usage: bench/gpu_run.sh GPU_BENCH_BINARY [OUT_DIR] [repeats]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: bench/gpu_run.sh GPU_BENCH_BINARY [OUT_DIR] [repeats]}
out=${2:-.}
reps=${3:-10}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader | tee "$out/gpu_card.txt"
"$bin" all "$reps" | tee "$out/gpu_ours.txt"
PYTHONUNBUFFERED=1 python3 "$here/gpu_torch_peer.py" run "$reps" | tee "$out/gpu_peer.txt"
python3 "$here/gpu_torch_peer.py" table "$out/gpu_ours.txt" "$out/gpu_peer.txt" | tee "$out/gpu_table.md"
