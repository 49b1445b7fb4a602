/* fp16.h — half-precision conversions (IEEE fp16 and bfloat16), exact and
 * round-to-nearest-even; generic helpers shared by the GGUF loader, the
 * backends, the cache's codecs and index scan, and the tests. */
#ifndef AC_UTIL_FP16_H
#define AC_UTIL_FP16_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

float ac_fp16_to_fp32(uint16_t h);  /* exact, subnormals and NaN included */
uint16_t ac_fp32_to_fp16(float f);  /* round to nearest even; overflow to inf, NaN stays NaN */
float ac_bf16_to_fp32(uint16_t h);  /* exact */
uint16_t ac_fp32_to_bf16(float f);  /* round to nearest even */
/* dst [n] = the n fp16 values at src (any alignment), exactly; F16C where the CPU level
 * in use (util/cpu.h) has it. */
void ac_fp16_row_to_fp32(const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
