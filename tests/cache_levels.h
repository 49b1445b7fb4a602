/* cache_levels.h — run a cache test at every CPU level (util/cpu.h) the
 * machine supports, from the level in use at start (the hardware's, or lower
 * with AC_CPU) down to scalar; levels above it are reported as skipped. Usage:
 *
 *     for (int lv = levels_top(); lv >= 0; lv--) { levels_enter(lv); ...; }
 *     levels_leave();
 */
#ifndef AC_TEST_CACHE_LEVELS_H
#define AC_TEST_CACHE_LEVELS_H

#include "util/cpu.h"

static int levels_top_ = -1;

/* The highest level to test; prints the skipped ones once. */
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
