/* model_avx2.c — F16 -> F32 row conversion with F16C (8 at a time), for
 * ac_row_to_f32 at level AC_CPU_AVX2 and above. Exact, as the scalar path. */
#include <immintrin.h>
#include <stdint.h>

int64_t ac_f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n);

int64_t ac_f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    return i;
}
