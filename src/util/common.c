/* common.c — error messages, checked allocation, timing. */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "common.h"
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static _Thread_local char g_err[1024];

const char *ac_last_error(void) { return g_err; }

void ac_err_clear(void) { g_err[0] = 0; }

int ac_err(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

int ac_err_prefix(int code, const char *fmt, ...) {
    char pre[512], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    snprintf(g_err, sizeof g_err, "%.400s: %.600s", pre, old);
    return code;
}

const char *ac_status_str(int s) {
    switch (s) {
    case AC_OK: return "AC_OK";
    case AC_ERR_IO: return "AC_ERR_IO";
    case AC_ERR_FORMAT: return "AC_ERR_FORMAT";
    case AC_ERR_UNSUPPORTED: return "AC_ERR_UNSUPPORTED";
    case AC_ERR_NOMEM: return "AC_ERR_NOMEM";
    case AC_ERR_ARG: return "AC_ERR_ARG";
    case AC_ERR_INPUT: return "AC_ERR_INPUT";
    case AC_ERR_RANGE: return "AC_ERR_RANGE";
    case AC_ERR_CACHE: return "AC_ERR_CACHE";
    case AC_ERR_INTERNAL: return "AC_ERR_INTERNAL";
    default: return "AC_ERR_UNKNOWN";
    }
}

void *ac_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) ac_err(AC_ERR_NOMEM, "out of memory allocating %zu bytes at %s:%d", n, file, line);
    return p;
}

void *ac_calloc_at(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) ac_err(AC_ERR_NOMEM, "out of memory allocating %zu x %zu bytes at %s:%d", n, sz, file, line);
    return p;
}

void *ac_aligned_alloc_at(size_t n, const char *file, int line) {
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (sz < n || posix_memalign(&p, 64, sz ? sz : 64) != 0) {
        ac_err(AC_ERR_NOMEM, "out of memory allocating %zu aligned bytes at %s:%d", n, file, line);
        return NULL;
    }
    return p;
}

void *ac_huge_alloc_at(size_t n, const char *file, int line) {
    const size_t huge = (size_t)2 << 20;
    if (n < huge / 8) return ac_aligned_alloc_at(n, file, line); /* small: not worth a 2 MiB page */
    void *p = NULL;
    size_t sz = (n + huge - 1) & ~(huge - 1);
    if (sz < n || posix_memalign(&p, huge, sz ? sz : huge) != 0) {
        ac_err(AC_ERR_NOMEM, "out of memory allocating %zu bytes at %s:%d", n, file, line);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(p, sz ? sz : huge, MADV_HUGEPAGE); /* advice only: 4 KiB pages where refused */
#endif
    return p;
}

void *ac_malloc_check_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "Error: malloc of %zu bytes failed at %s:%d\n", n, file, line);
        exit(EXIT_FAILURE);
    }
    return p;
}

double ac_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
