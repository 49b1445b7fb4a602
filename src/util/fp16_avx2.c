/* fp16_avx2.c — fp16 -> f32 rows with F16C (8 at a time), for ac_fp16_row_to_fp32
 * at level AC_CPU_AVX2 and above. Exact, as the scalar conversion. */
#include <immintrin.h>
#include <stdint.h>

int64_t ac_fp16_row_to_fp32_avx2(const void *src, float *dst, int64_t n);

int64_t ac_fp16_row_to_fp32_avx2(const void *src, float *dst, int64_t n) {
    const uint16_t *s = (const uint16_t *)src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    return i;
}
