/* cache_testing.h — fault injection for the cache's tests (not public API). */
#ifndef AC_CACHE_TESTING_H
#define AC_CACHE_TESTING_H

#include "attncache.h"

/* The next n lookups of c (from any attached context) fail with
 * AC_ERR_INTERNAL after their key is computed, as a real error there would:
 * the sequence runs exact and the failure is counted. n <= 0 clears. */
void ac_cache_fail_next_lookups(ac_cache *c, int n);

/* on 1: the hook's lookup_all looks each sequence up alone, in parallel (the
 * way before the batched lookups), for side-by-side timings and comparisons
 * (bench/bench_lookup_all.c); 0: one batch (the default). */
void ac_cache_lookup_all_each(ac_cache *c, int on);

#endif
