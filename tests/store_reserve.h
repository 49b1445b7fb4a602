/* store_reserve.h — the map store's address-space reservation in tests.
 * The store reserves 16 GiB of address space per mapping (src/cache/store.c,
 * RESERVE_MIN): free on real hardware, but qemu-user keeps host memory for
 * every reserved guest page and never gives it back, so a test that opens
 * many stores grows qemu past the machine's memory (test_cache_reuse was
 * OOM-killed at 24 GB). scripts/test_aarch64.sh sets AC_TEST_STORE_RESERVE
 * (bytes) and the tests that open stores pass it to ac_store_set_reserve_hint;
 * unset (every native run), the store keeps its default. */
#ifndef AC_TEST_STORE_RESERVE_H
#define AC_TEST_STORE_RESERVE_H

#include "cache/store.h"

#include <stdlib.h>

static inline size_t test_store_reserve(void) {
    const char *s = getenv("AC_TEST_STORE_RESERVE");
    return s && *s ? (size_t)strtoull(s, NULL, 10) : 0;
}

static inline void test_store_reserve_apply(void) { ac_store_set_reserve_hint(test_store_reserve()); }

#endif
