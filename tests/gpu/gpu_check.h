/* gpu_check.h — the GPU tests' tiny harness (no cmocka: these programs are
 * carried to a GPU machine without the Debian -dev libraries): CHECK counts
 * failures, rng draws fresh inputs, rel_err is ||a - b|| / ||b||. */
#ifndef AC_GPU_CHECK_H
#define AC_GPU_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int g_fail = 0, g_pass = 0;
#define CHECK(cond, ...)                                                                                        \
    do {                                                                                                        \
        if (cond) {                                                                                             \
            g_pass++;                                                                                           \
        } else {                                                                                                \
            g_fail++;                                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                                                       \
            fprintf(stderr, "\n");                                                                              \
        }                                                                                                       \
    } while (0)

static uint64_t g_rng = 0x853c49e6748fea9bull;
static inline void rng_seed(uint64_t s) { g_rng = s * 0x9E3779B97F4A7C15ull + 1; }
static inline float rnd(void) { /* uniform [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)(g_rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
static inline int rnd_int(int n) { return (int)(((rnd() + 1.0f) * 0.5f) * n) % n; }

/* ||a - b|| / ||b|| (NaN in a gives NaN: never passes) */
static inline double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        d += e * e;
        r += (double)b[i] * b[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}
static inline int all_finite(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

#endif
