/* q8mat.c — see q8mat.h. */
#include "q8mat.h"

#include "util/common.h"

#include <math.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

float ac_q8_quant_u8(const float *x, int n, int ld, int nonneg, uint8_t *x8) {
    const float lim = nonneg ? 255.0f : 127.0f, low = nonneg ? 0.0f : -127.0f;
    const int off = nonneg ? 0 : 128;
    int i = 0;
    float mx = 0;
#if defined(__AVX512F__)
    __m512 mv = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    mx = _mm512_reduce_max_ps(mv);
#endif
    for (; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    const float sx = mx / lim, inv = sx > 0 ? 1.0f / sx : 0.0f;
    i = 0;
#if defined(__AVX512F__)
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(low), hi = _mm512_set1_ps(lim);
    const __m512i voff = _mm512_set1_epi32(off);
    for (; i + 16 <= n; i += 16) { /* round to nearest even (the default mode), as lrintf */
        const __m512 v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv)));
        _mm_storeu_si128((__m128i *)(x8 + i), _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), voff)));
    }
#endif
    for (; i < n; i++) x8[i] = (uint8_t)(lrintf(fminf(lim, fmaxf(low, x[i] * inv))) + off);
    for (i = n; i < ld; i++) x8[i] = (uint8_t)off;
    return sx;
}

void ac_q8mat_gemv(const ac_q8mat *m, const float *b, const uint8_t *x8, float sx, int off, float *y, int relu) {
    const int ld = m->ld;
    for (int r0 = 0; r0 < m->rows; r0 += 4) {
        const int8_t *w = m->w + (size_t)r0 * ld;
        int32_t v[4];
#if defined(__AVX512VNNI__)
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512(),
                a3 = _mm512_setzero_si512();
        for (int i = 0; i < ld; i += 64, w += 256) {
            const __m512i xv = _mm512_loadu_si512(x8 + i);
            a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(w));
            a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(w + 64));
            a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(w + 128));
            a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(w + 192));
        }
        v[0] = _mm512_reduce_add_epi32(a0), v[1] = _mm512_reduce_add_epi32(a1);
        v[2] = _mm512_reduce_add_epi32(a2), v[3] = _mm512_reduce_add_epi32(a3);
#else
        v[0] = v[1] = v[2] = v[3] = 0;
        for (int i = 0; i < ld; i += 64, w += 256)
            for (int k = 0; k < 4; k++)
                for (int e = 0; e < 64; e++) v[k] += (int32_t)x8[i + e] * (int32_t)w[k * 64 + e];
#endif
        for (int k = 0; k < 4 && r0 + k < m->rows; k++) {
            const float t = (b ? b[r0 + k] : 0.0f) + m->scale[r0 + k] * sx * (float)(v[k] - off * m->rsum[r0 + k]);
            y[r0 + k] = relu && t < 0 ? 0 : t;
        }
    }
}
