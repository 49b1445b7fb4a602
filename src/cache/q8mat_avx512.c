/* q8mat_avx512.c — q8mat.h's kernels with AVX-512: the quantiser's max and
 * codes 16 floats at a time, and the int8 x uint8 dot products with VNNI
 * (vpdpbusd: 64 products per instruction, exact int32 sums: |sum| <=
 * 255 x 127 x AC_Q8MAT_MAX_COLS < 2^31, no intermediate saturation). */
#include "cache/kernels.h"

#include <immintrin.h>
#include <math.h>

float ac_q8_absmax_avx512(const float *x, int n) {
    int i = 0;
    __m512 mv = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    float mx = _mm512_reduce_max_ps(mv);
    for (; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    return mx;
}

void ac_q8_codes_avx512(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8) {
    int i = 0;
    const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(low), hi = _mm512_set1_ps(lim);
    const __m512i voff = _mm512_set1_epi32(off);
    for (; i + 16 <= n; i += 16) { /* round to nearest even (the default mode), as lrintf */
        const __m512 v = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv)));
        _mm_storeu_si128((__m128i *)(x8 + i), _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), voff)));
    }
    for (; i < n; i++) x8[i] = (uint8_t)(lrintf(fminf(lim, fmaxf(low, x[i] * inv))) + off);
}

void ac_q8_dot4_avx512vnni(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]) {
    const int8_t *w = m->w + (size_t)r0 * m->ld;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512(),
            a3 = _mm512_setzero_si512();
    for (int i = 0; i < m->ld; i += 64, w += 256) {
        const __m512i xv = _mm512_loadu_si512(x8 + i);
        a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(w));
        a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(w + 64));
        a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(w + 128));
        a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(w + 192));
    }
    v[0] = _mm512_reduce_add_epi32(a0), v[1] = _mm512_reduce_add_epi32(a1);
    v[2] = _mm512_reduce_add_epi32(a2), v[3] = _mm512_reduce_add_epi32(a3);
}
