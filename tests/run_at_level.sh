#!/usr/bin/env bash
# run_at_level.sh PROBE LEVEL CMD... — run a test with the CPU kernels forced to
# LEVEL (AC_CPU=LEVEL); exit 77 (ctest: skipped) where the CPU lacks the level.
set -u
probe="$1" level="$2"
shift 2
"$probe" "$level" || exit $?
AC_CPU="$level" exec "$@"
