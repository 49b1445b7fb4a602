#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and run each for a
# bounded time. A crash, a sanitizer report, or a wrong answer (the harnesses
# abort()) makes libFuzzer exit non-zero, and this script with it.
# usage: scripts/fuzz.sh [SECONDS per target, default 60] [BUILD_DIR, default build-fuzz]
# Targets: tests/fuzz_gguf.c (GGUF reader), tests/fuzz_store.c (map store: open,
# get/find, verify, repair on mutated databases). Longer campaigns: docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
out=${2:-build-fuzz}
CC=${FUZZ_CC:-clang}
mkdir -p "$out"
flags=(-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -Iinclude -Isrc)
link=(-fsanitize=fuzzer,address,undefined)
# the engine's per-ISA files get their level's flags, as in CMakeLists.txt (ac_isa_sources)
avx2=(-mavx2 -mfma -mf16c -mbmi2)
avx512=("${avx2[@]}" -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd -mavx512bf16 -mavx512vnni)
compile() { # compile FILE... into $out/obj, echo the objects
  for f in "$@"; do
    local o="$out/obj/$(echo "$f" | tr / _).o" extra=()
    case "$f" in *_avx512.c) extra=("${avx512[@]}") ;; *_avx2.c) extra=("${avx2[@]}") ;; esac
    "$CC" "${flags[@]}" "${extra[@]}" -c "$f" -o "$o"
    echo "$o"
  done
}
mkdir -p "$out/obj"
util=(src/util/common.c src/util/fp16.c src/util/fp16_avx2.c src/util/cpu.c src/util/atomic_file.c)
mapfile -t gguf_objs < <(compile tests/fuzz_gguf.c src/load/gguf.c src/load/gguf_write.c "${util[@]}")
"$CC" "${link[@]}" "${gguf_objs[@]}" -lm -o "$out/fuzz_gguf"
mapfile -t store_objs < <(compile tests/fuzz_store.c src/cache/store.c src/cache/codec.c src/cache/codec_avx2.c \
  src/cache/codec_avx512.c src/cache/hash.c src/load/gguf.c "${util[@]}")
"$CC" "${link[@]}" "${store_objs[@]}" -lxxhash -lm -o "$out/fuzz_store"
for t in gguf store; do
  corpus="$out/corpus-$t"
  mkdir -p "$corpus"
  FUZZ_SEED_DIR="$corpus" "$out/fuzz_$t" -runs=0 "$corpus" > "$out/seed-$t.log" 2>&1
  max_len=$([ $t = gguf ] && echo 4096 || echo 16384)
  echo "fuzz: $t for ${secs}s (corpus $corpus)"
  rm -f "$out/$t-timeout-"*
  if ! "$out/fuzz_$t" -max_len="$max_len" -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 \
       -artifact_prefix="$out/$t-" -print_final_stats=1 "$corpus" > "$out/fuzz-$t.log" 2>&1; then
    # a unit over the 60 s limit (each takes about a millisecond) that replays quickly was a stall of
    # this machine, not of the code (seen twice in long runs on a loaded 2-core VM): warn, go on.
    # Anything else (a crash, a sanitizer report, a wrong answer, a timeout that replays slowly) fails.
    stalled=0
    for f in "$out/$t-timeout-"*; do
      [ -e "$f" ] || continue
      if timeout 30 "$out/fuzz_$t" "$f" > /dev/null 2>&1; then stalled=1; else stalled=0; break; fi
    done
    if [ $stalled -eq 1 ] && ! ls "$out/$t-"{crash,leak,oom}-* > /dev/null 2>&1; then
      echo "fuzz: warning: $t: a unit hit the 60 s limit but replays within 30 s (a stall of the machine, not a hang); kept as $out/$t-timeout-*" >&2
    else
      tail -n 60 "$out/fuzz-$t.log"
      echo "fuzz: $t FAILED (input kept as $out/$t-*; replay: $out/fuzz_$t FILE)" >&2
      exit 1
    fi
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$out/fuzz-$t.log" | tr '\n' ' '
  echo
done
