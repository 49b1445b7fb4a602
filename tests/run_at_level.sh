#!/usr/bin/env bash
# run_at_level.sh PROBE LEVEL CMD... — run a test with the CPU kernels forced to
# LEVEL (AC_CPU=LEVEL); exit 77 (ctest: skipped) where the CPU lacks the level.
# AC_TEST_EMULATOR (e.g. qemu-aarch64-static, set by ctest in a cross build) runs
# the probe and a test program that is not a script.
set -u
probe="$1" level="$2"
shift 2
emu=${AC_TEST_EMULATOR:-}
$emu "$probe" "$level" || exit $?
if [ -n "$emu" ] && [ "$1" != bash ]; then
  AC_CPU="$level" exec $emu "$@"
fi
AC_CPU="$level" exec "$@"
