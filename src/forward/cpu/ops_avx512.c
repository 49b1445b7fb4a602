/* ops_avx512.c — element-wise kernels of the forward on AVX-512 (16 lanes,
 * masked tails: one code path per element). Called through ops.c at level
 * AC_CPU_AVX512; ac_f32_to_bf16_avx512 only where the CPU has AVX512-BF16. */
#include "forward/forward.h"
#include "simd.h"

void ac_vexp_avx512(float *x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, ac_exp512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, ac_exp512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

void ac_silu_mul_avx512(float *g, const float *u, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 e = ac_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, uv));
    }
}

void ac_gelu_erf_avx512(float *x, int n) {
    const float inv_sqrt2 = 0.70710678118654752f;
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), is2 = _mm512_set1_ps(inv_sqrt2);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = ac_erf512(_mm512_mul_ps(v, is2));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
    }
}

/* the first n - n % 16 elements (the caller converts the rest, bitwise the same) */
size_t ac_f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)b);
    }
    return i;
}

#define NORM_FN(name) name##_avx512
#include "norm_impl.h"
