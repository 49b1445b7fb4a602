/* q8mat.c — see q8mat.h: packing, the portable C kernels, and the choice of
 * SIMD kernels (q8mat_avx2.c, q8mat_avx512.c) at run time. */
#include "q8mat.h"

#include "cache/kernels.h"
#include "util/common.h"
#include "util/cpu.h"

#include <math.h>
#include <string.h>

static int pad64(int n) { return (n + 63) & ~63; }
static int pad4(int n) { return (n + 3) & ~3; }

int ac_q8mat_pack(const float *W, int rows, int cols, ac_q8mat *m) {
    memset(m, 0, sizeof *m);
    if (!W || rows <= 0 || cols <= 0 || cols > AC_Q8MAT_MAX_COLS)
        return ac_err(AC_ERR_ARG, "q8mat: bad shape %d x %d (at most %d columns)", rows, cols, AC_Q8MAT_MAX_COLS);
    const int ld = pad64(cols), r4 = pad4(rows);
    /* codes, then scales and row sums (ld a multiple of 64: aligned) */
    int8_t *w = AC_HUGE_ALLOC((size_t)r4 * ld + (size_t)r4 * 8);
    if (!w) return ac_err(AC_ERR_NOMEM, "q8mat: out of memory for a %d x %d matrix", rows, cols);
    float *scale = (float *)(w + (size_t)r4 * ld);
    int32_t *rsum = (int32_t *)(scale + r4);
    for (int r = 0; r < r4; r++) {
        float mx = 0;
        for (int i = 0; r < rows && i < cols; i++) mx = fmaxf(mx, fabsf(W[(size_t)r * cols + i]));
        scale[r] = mx / 127.0f;
        rsum[r] = 0;
    }
    for (int r0 = 0; r0 < r4; r0 += 4)
        for (int c = 0; c < ld; c += 64)
            for (int k = 0; k < 4; k++)
                for (int e = 0; e < 64; e++) {
                    const int r = r0 + k, col = c + e;
                    const float v = r < rows && col < cols && scale[r] > 0 ? W[(size_t)r * cols + col] / scale[r] : 0.0f;
                    const int8_t q = (int8_t)lrintf(fminf(127.0f, fmaxf(-127.0f, v)));
                    w[(size_t)r0 * ld + (size_t)c * 4 + (size_t)k * 64 + e] = q;
                    rsum[r] += q;
                }
    *m = (ac_q8mat){rows, cols, ld, w, scale, rsum};
    return AC_OK;
}

void ac_q8mat_free(ac_q8mat *m) {
    if (!m) return;
    free(m->w);
    memset(m, 0, sizeof *m);
}

/* ---- portable C kernels (kernels.h) ---------------------------------------------------- */
#if AC_CACHE_NEON
#define AC_PORTABLE __attribute__((unused)) /* aarch64: NEON serves the baseline level */
#else
#define AC_PORTABLE
#endif

AC_PORTABLE static float absmax_c(const float *x, int n) {
    float mx = 0;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    return mx;
}

AC_PORTABLE static void codes_c(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8) {
    for (int i = 0; i < n; i++) x8[i] = (uint8_t)(lrintf(fminf(lim, fmaxf(low, x[i] * inv))) + off);
}

AC_PORTABLE static void dot4_c(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]) {
    const int8_t *w = m->w + (size_t)r0 * m->ld;
    v[0] = v[1] = v[2] = v[3] = 0;
    for (int i = 0; i < m->ld; i += 64, w += 256)
        for (int k = 0; k < 4; k++)
            for (int e = 0; e < 64; e++) v[k] += (int32_t)x8[i + e] * (int32_t)w[k * 64 + e];
}

/* The kernels in use: the level's (util/cpu.h); on AVX-512 without VNNI the
 * dot products take the AVX2 kernel (vpmaddwd on widened codes). */
typedef struct q8_kernels {
    ac_q8_absmax_fn absmax;
    ac_q8_codes_fn codes;
    ac_q8_dot4_fn dot4;
} q8_kernels;

static q8_kernels pick(void) {
#if AC_CACHE_NEON
    q8_kernels k = {ac_q8_absmax_neon, ac_q8_codes_neon, ac_q8_dot4_neon};
#else
    q8_kernels k = {absmax_c, codes_c, dot4_c};
#endif
#if AC_CACHE_X86
    const int lv = ac_cpu_level();
    if (lv >= AC_CPU_AVX512) {
        k = (q8_kernels){ac_q8_absmax_avx512, ac_q8_codes_avx512, ac_q8_dot4_avx2};
        if (ac_cpu_vnni()) k.dot4 = ac_q8_dot4_avx512vnni;
    } else if (lv >= AC_CPU_AVX2) {
        k = (q8_kernels){ac_q8_absmax_avx2, ac_q8_codes_avx2, ac_q8_dot4_avx2};
    }
#endif
    return k;
}

/* Every path rounds alike (x inv, one rounding; clamp; round to nearest
 * even) and max |x| is exact in any order, so the codes match bit for bit
 * (finite x). */
float ac_q8_quant_u8(const float *x, int n, int ld, int nonneg, uint8_t *x8) {
    const q8_kernels k = pick();
    const float lim = nonneg ? 255.0f : 127.0f, low = nonneg ? 0.0f : -127.0f;
    const int off = nonneg ? 0 : 128;
    const float mx = k.absmax(x, n);
    const float sx = mx / lim, inv = sx > 0 ? 1.0f / sx : 0.0f;
    k.codes(x, n, inv, low, lim, off, x8);
    for (int i = n; i < ld; i++) x8[i] = (uint8_t)off;
    return sx;
}

/* y[r0 .. r0 + 4) of one vector from its dot products v (the one float
 * expression of gemv and gemm). */
static inline void finish4(const ac_q8mat *m, const float *b, int r0, const int32_t v[4], float sx, int off, float *y,
                           int relu) {
    for (int k = 0; k < 4 && r0 + k < m->rows; k++) {
        const float t = (b ? b[r0 + k] : 0.0f) + m->scale[r0 + k] * sx * (float)(v[k] - off * m->rsum[r0 + k]);
        y[r0 + k] = relu && t < 0 ? 0 : t;
    }
}

void ac_q8mat_gemv(const ac_q8mat *m, const float *b, const uint8_t *x8, float sx, int off, float *y, int relu) {
    const ac_q8_dot4_fn dot4 = pick().dot4;
    for (int r0 = 0; r0 < m->rows; r0 += 4) {
        int32_t v[4];
        dot4(m, r0, x8, v); /* exact integers on every path */
        finish4(m, b, r0, v, sx, off, y, relu);
    }
}

/* Work (products) from which gemm splits its row blocks over threads: ~64 keys
 * of a 1537 -> 256 layer (26 M); a 256 -> 128 layer's 2 M stay on one thread. */
#define AC_Q8_GEMM_PARALLEL ((int64_t)1 << 23)

void ac_q8mat_gemm(const ac_q8mat *m, const float *b, const uint8_t *x8, int ldx, const float *sx, int n, int off,
                   float *y, int ldy, int relu) {
    const ac_q8_dot4_fn dot4 = pick().dot4;
    const int nb = (m->rows + 3) / 4;
    const int64_t work = (int64_t)n * m->rows * m->ld;
#pragma omp parallel for schedule(static) if (work >= AC_Q8_GEMM_PARALLEL && nb >= 8)
    for (int blk = 0; blk < nb; blk++) {
        const int r0 = 4 * blk;
        for (int i = 0; i < n; i++) { /* the block's 4 x ld codes stay in L1 while the vectors pass */
            int32_t v[4];
            dot4(m, r0, x8 + (size_t)i * ldx, v);
            finish4(m, b, r0, v, sx[i], off, y + (size_t)i * ldy, relu);
        }
    }
}
