/* ops_avx2.c — element-wise kernels of the forward on AVX2 + FMA (8 lanes,
 * masked tails: one code path per element). Same formulas and FMAs as the
 * AVX-512 forms (exp, erf: bitwise equal). Called through ops.c at level
 * AC_CPU_AVX2. */
#include "forward/forward.h"
#include "simd.h"

void ac_vexp_avx2(float *x, int n) {
    for (int i = 0; i < n; i += 8) {
        const __m256i m = ac_mask8(n - i);
        _mm256_maskstore_ps(x + i, m, ac_exp256(_mm256_maskload_ps(x + i, m)));
    }
}

void ac_silu_mul_avx2(float *g, const float *u, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < n; i += 8) {
        const __m256i m = ac_mask8(n - i);
        __m256 gv = _mm256_maskload_ps(g + i, m), uv = _mm256_maskload_ps(u + i, m);
        __m256 e = ac_exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        __m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_maskstore_ps(g + i, m, _mm256_mul_ps(s, uv));
    }
}

void ac_gelu_erf_avx2(float *x, int n) {
    for (int i = 0; i < n; i += 8) {
        const __m256i m = ac_mask8(n - i);
        _mm256_maskstore_ps(x + i, m, ac_gelu256(_mm256_maskload_ps(x + i, m)));
    }
}

#define NORM_FN(name) name##_avx2
#include "norm_impl.h"
