#!/usr/bin/env bash
# check_isa.sh BUILD_DIR — one binary runs on any x86-64: in a build configured
# with -DAC_NATIVE=OFF, only the per-level files (*_avx2.*, *_avx512.*) may hold
# AVX/AVX2/FMA/F16C/AVX-512 instructions. Lists every other object file of the
# engine's libraries that does (ymm/zmm/mask registers, VEX/EVEX-only
# instructions) and exits 1 if there is one.
set -euo pipefail
dir=${1:-build}
if grep -q "^AC_NATIVE:BOOL=ON" "$dir/CMakeCache.txt"; then
  echo "check_isa: $dir is an AC_NATIVE=ON build (-march=native everywhere); configure with -DAC_NATIVE=OFF" >&2
  exit 2
fi
bad=0 n=0
while IFS= read -r o; do
  case "$o" in *_avx2.*|*_avx512.*) continue ;; esac
  n=$((n + 1))
  # any VEX/EVEX instruction (mnemonic v...: AVX and later), ymm/zmm/k-mask operand, or BMI2
  hits=$(objdump -d --no-show-raw-insn "$o" |
    awk -F'\t' 'NF >= 2 { split($2, w, " "); m = w[1];
                 if (m ~ /^v/ && m !~ /^verr|^verw/ || $0 ~ /%[yz]mm|%k[0-7]/ || m ~ /^(shlx|shrx|sarx|bzhi|pdep|pext|mulx)$/) c++ }
                 END { print c + 0 }')
  if [ "$hits" != 0 ]; then
    echo "check_isa: $o: $hits AVX/AVX2/AVX-512 instructions outside a per-level file"
    bad=1
  fi
done < <(find "$dir" -path '*/CMakeFiles/ac_*.dir/*' -name '*.o'; find "$dir" -path '*/CMakeFiles/attncache*.dir/*' -name '*.o')
echo "check_isa: $n baseline object files checked"
exit $bad
