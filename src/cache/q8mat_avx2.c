/* q8mat_avx2.c — q8mat.h's kernels with AVX2 (no VNNI): the quantiser's max
 * and codes 8 floats at a time, and the int8 x uint8 dot products on codes
 * widened to int16 and multiplied with vpmaddwd, whose pair sums (at most
 * 2 x 255 x 128) cannot saturate — unlike vpmaddubsw's int16 pair sums, which
 * would clip at 32767 once x8 codes near 255 meet weights near 127. The int32
 * sums are exact (|sum| <= 255 x 127 x AC_Q8MAT_MAX_COLS < 2^31), so every
 * path gives the same integers. Also serves AVX-512 CPUs without VNNI. */
#include "cache/kernels.h"

#include <immintrin.h>
#include <math.h>

float ac_q8_absmax_avx2(const float *x, int n) {
    int i = 0;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mv = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    return mx;
}

void ac_q8_codes_avx2(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8) {
    int i = 0;
    const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(low), hi = _mm256_set1_ps(lim);
    const __m256i voff = _mm256_set1_epi32(off);
    for (; i + 8 <= n; i += 8) { /* round to nearest even (the default mode), as lrintf */
        const __m256 v = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv)));
        const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), voff); /* 0..255 */
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(x8 + i), _mm_packus_epi16(w, w));
    }
    for (; i < n; i++) x8[i] = (uint8_t)(lrintf(fminf(lim, fmaxf(low, x[i] * inv))) + off);
}

static inline int32_t hsum(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* One 64-column block of row k: acc += sum over the 4 groups of 16 of
 * vpmaddwd(x codes, w codes) (int32 pair sums, exact). */
#define AC_ROW64(acc, wk)                                                                                        \
    acc = _mm256_add_epi32(                                                                                      \
        acc, _mm256_add_epi32(                                                                                   \
                 _mm256_add_epi32(_mm256_madd_epi16(x0, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wk)))), \
                                  _mm256_madd_epi16(x1, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((wk) + 16))))), \
                 _mm256_add_epi32(_mm256_madd_epi16(x2, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((wk) + 32)))), \
                                  _mm256_madd_epi16(x3, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)((wk) + 48)))))))

void ac_q8_dot4_avx2(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]) {
    const int8_t *w = m->w + (size_t)r0 * m->ld;
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256(),
            a3 = _mm256_setzero_si256();
    for (int i = 0; i < m->ld; i += 64, w += 256) {
        const __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x8 + i)));
        const __m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x8 + i + 16)));
        const __m256i x2 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x8 + i + 32)));
        const __m256i x3 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x8 + i + 48)));
        AC_ROW64(a0, w);
        AC_ROW64(a1, w + 64);
        AC_ROW64(a2, w + 128);
        AC_ROW64(a3, w + 192);
    }
    v[0] = hsum(a0), v[1] = hsum(a1), v[2] = hsum(a2), v[3] = hsum(a3);
}
