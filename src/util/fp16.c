/* fp16.c — fp16 / bf16 conversions (fp16.h); the F16C row form is in fp16_avx2.c. */
#include "util/fp16.h"
#include "util/cpu.h"

#include <string.h>

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ac_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        if (m == 0) return u2f(sign);
        e = 113; /* normalise the subnormal: value m * 2^-24 */
        while (!(m & 0x400)) { m <<= 1; e--; }
        m &= 0x3ff;
        return u2f(sign | (e << 23) | (m << 13));
    }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t ac_fp32_to_fp16(float f) {
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff); /* NaN, quiet */
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 (incl. inf) rounds to inf */
    if (ax < 0x38800000u) {                     /* below 2^-14: fp16 subnormal or zero */
        if (ax < 0x33000000u) return sign;      /* < 2^-25: rounds to zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, s = 126 - e; /* 14 <= s <= 24 */
        uint32_t r = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = (ax - 0x38000000u) >> 13, rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return sign | (uint16_t)r;
}

float ac_bf16_to_fp32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t ac_fp32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* NaN, quiet */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* F16C form (fp16_avx2.c): the first n - n % 8 elements. */
int64_t ac_fp16_row_to_fp32_avx2(const void *src, float *dst, int64_t n);

void ac_fp16_row_to_fp32(const void *src, float *dst, int64_t n) {
    int64_t i = 0;
#if defined(__x86_64__) || defined(__i386__)
    if (ac_cpu_level() >= AC_CPU_AVX2) i = ac_fp16_row_to_fp32_avx2(src, dst, n);
#endif
    const unsigned char *p = (const unsigned char *)src;
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = ac_fp16_to_fp32(h);
    }
}
