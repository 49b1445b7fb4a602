/* levels.h — for tests that compare the CPU levels (util/cpu.h) with each other
 * in one process (e.g. "the AVX2 and AVX-512 kernels give bitwise the same
 * key"): the levels this machine has, from the level in use at start (the
 * hardware's, or lower with AC_CPU) down to scalar; levels above it are
 * reported as skipped. Usage:
 *
 *     const int top = levels_top();
 *     for (int lv = top; lv >= 0; lv--) { levels_enter(lv); ... compare with top ...; }
 *     levels_leave();
 *
 * Running a whole test at each level is not done here: ctest does it, through
 * tests/run_at_level.sh (the one mechanism, listed in tests/CMakeLists.txt). */
#ifndef AC_TEST_LEVELS_H
#define AC_TEST_LEVELS_H

#include "util/cpu.h"

static int levels_top_ = -1;

/* The highest level to compare; prints the skipped ones once. */
static inline int levels_top(void) {
    if (levels_top_ < 0) {
        ac_cpu_set_level(-1);
        levels_top_ = ac_cpu_level();
        for (int lv = AC_CPU_AVX512; lv > levels_top_; lv--)
            print_message("level %s: not available here (%s), skipped\n", ac_cpu_level_name(lv),
                          lv > ac_cpu_hw_level() ? "CPU" : "AC_CPU");
    }
    return levels_top_;
}

static inline void levels_enter(int lv) { assert_int_equal(ac_cpu_set_level(lv), AC_OK); }
static inline void levels_leave(void) { ac_cpu_set_level(-1); }

#endif
