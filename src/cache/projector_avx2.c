/* projector_avx2.c — the projector's f32 GEMV (training, unpacked keys),
 * four rows at a time with AVX2 + FMA (kernels.h). */
#include "cache/kernels.h"

#include <immintrin.h>

static inline float hsum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void ac_proj_gemv4_avx2(const float *W, const float *b, const float *x, int r0, int n, float *y, int relu) {
    const float *w0 = W + (size_t)r0 * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
    }
    if (i < n) { /* masked tail: nothing past the rows is read */
        const __m256i m = _mm256_loadu_si256((const __m256i *)(ones + 8 - (n - i)));
        const __m256 xv = _mm256_maskload_ps(x + i, m);
        a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + i, m), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + i, m), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + i, m), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + i, m), xv, a3);
    }
    const float v[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (int k = 0; k < 4; k++) {
        const float t = b[r0 + k] + v[k];
        y[r0 + k] = relu && t < 0 ? 0 : t;
    }
}
