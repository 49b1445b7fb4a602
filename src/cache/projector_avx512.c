/* projector_avx512.c — the projector's f32 GEMV (training, unpacked keys),
 * four rows at a time with AVX-512 (kernels.h). */
#include "cache/kernels.h"

#include <immintrin.h>

void ac_proj_gemv4_avx512(const float *W, const float *b, const float *x, int r0, int n, float *y, int relu) {
    const float *w0 = W + (size_t)r0 * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + i), xv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + i), xv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + i), xv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + i), xv, a3);
    }
    const float v[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                        _mm512_reduce_add_ps(a3)};
    for (int k = 0; k < 4; k++) {
        const float t = b[r0 + k] + v[k];
        y[r0 + k] = relu && t < 0 ? 0 : t;
    }
}
