/* common.h — internal helpers shared by every module: errors, allocation,
 * timing. Not part of the public API. */
#ifndef AC_COMMON_H
#define AC_COMMON_H

#include "attncache.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Record an error message (printf-style) for ac_last_error() and return code.
 * Usage: return ac_err(AC_ERR_FORMAT, "tensor %s: offset past end", name); */
int ac_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message: "ctx: <old message>". Returns code. */
int ac_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ac_err_clear(void);

/* Allocation that reports file:line through ac_err on failure (never aborts).
 * In library code: p = AC_MALLOC(n); if (!p) { rc = AC_ERR_NOMEM; goto fail; } */
void *ac_malloc_at(size_t n, const char *file, int line);
void *ac_calloc_at(size_t n, size_t sz, const char *file, int line);
void *ac_aligned_alloc_at(size_t n, const char *file, int line); /* 64-byte aligned, free with free() */
#define AC_MALLOC(n) ac_malloc_at((n), __FILE__, __LINE__)
#define AC_CALLOC(n, sz) ac_calloc_at((n), (sz), __FILE__, __LINE__)
#define AC_ALIGNED_ALLOC(n) ac_aligned_alloc_at((n), __FILE__, __LINE__)
/* From 256 KiB up: 2 MiB-aligned, whole 2 MiB pages, with transparent huge pages advised
 * where the kernel offers them (madvise mode): for data read cold on every
 * cache lookup (projector weights, index scan copy), where 4 KiB pages cost a
 * TLB miss each (measured: 25 -> 18 us for a cold lookup key); smaller
 * sizes: 64-byte aligned. Free with free(). */
void *ac_huge_alloc_at(size_t n, const char *file, int line);
#define AC_HUGE_ALLOC(n) ac_huge_alloc_at((n), __FILE__, __LINE__)

/* For tools and tests only (llm.c style): abort with file:line on failure. */
void *ac_malloc_check_at(size_t n, const char *file, int line);
#define mallocCheck(n) ac_malloc_check_at((n), __FILE__, __LINE__)

/* Overflow-checked size arithmetic: return 0 on overflow, 1 on success. */
static inline int ac_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline int ac_add_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Monotonic wall clock in seconds. */
double ac_now(void);

#define AC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AC_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
