/* ops_neon.c — element-wise kernels of the forward on aarch64 NEON (4 lanes;
 * a tail of fewer than 4 goes through a small buffer and the same vector
 * code: one code path per element). Same formulas and FMAs as the AVX2 and
 * AVX-512 forms (exp, erf: bitwise equal). Called through ops.c at level
 * AC_CPU_NEON. Norms and RoPE: the portable C (ops.c), which the aarch64
 * compiler vectorises with NEON itself. */
#include "forward/forward.h"
#include "simd.h"

#include <string.h>

/* y[0..n) = f(x[0..n)) four lanes at a time, the tail through a zero-padded buffer */
#define NEON_MAP(x, n, F)                                                 \
    do {                                                                  \
        int i_ = 0;                                                       \
        for (; i_ + 4 <= (n); i_ += 4) vst1q_f32((x) + i_, F(vld1q_f32((x) + i_))); \
        if (i_ < (n)) {                                                   \
            float t_[4] = {0};                                            \
            memcpy(t_, (x) + i_, (size_t)((n) - i_) * sizeof(float));     \
            vst1q_f32(t_, F(vld1q_f32(t_)));                              \
            memcpy((x) + i_, t_, (size_t)((n) - i_) * sizeof(float));     \
        }                                                                 \
    } while (0)

void ac_vexp_neon(float *x, int n) { NEON_MAP(x, n, ac_exp_f32x4); }

void ac_gelu_erf_neon(float *x, int n) { NEON_MAP(x, n, ac_gelu_f32x4); }

void ac_silu_mul_neon(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(g + i, ac_swiglu_f32x4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) {
        float tg[4] = {0}, tu[4] = {0};
        memcpy(tg, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(tg, ac_swiglu_f32x4(vld1q_f32(tg), vld1q_f32(tu)));
        memcpy(g + i, tg, (size_t)(n - i) * sizeof(float));
    }
}
