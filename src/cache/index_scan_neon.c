/* index_scan_neon.c — the flat index scan's kernels with NEON (aarch64, the
 * baseline level there): the AVX-512 kernels' arithmetic on quarters of 4
 * lanes, so every lane adds in the same order as on x86 SIMD and the results
 * are bitwise equal to theirs (index_scan.h: order and error bound). */
#include "cache/index_scan.h"

#include <arm_neon.h>
#include <math.h>
#include <stddef.h>

float ac_scan_sim_neon(const float *q, const float *x, int d, int l2) {
    int j = 0;
    float32x4_t a0[4], a1[4]; /* the AVX-512 kernel's a0, a1 in quarters */
    for (int k = 0; k < 4; k++) a0[k] = a1[k] = vdupq_n_f32(0.0f);
    for (; j + 32 <= d; j += 32)
        for (int k = 0; k < 4; k++) {
            float32x4_t x0 = vld1q_f32(x + j + 4 * k), x1 = vld1q_f32(x + j + 16 + 4 * k);
            const float32x4_t q0 = vld1q_f32(q + j + 4 * k), q1 = vld1q_f32(q + j + 16 + 4 * k);
            if (l2) {
                x0 = vsubq_f32(x0, q0), x1 = vsubq_f32(x1, q1);
                a0[k] = vfmaq_f32(a0[k], x0, x0), a1[k] = vfmaq_f32(a1[k], x1, x1);
            } else {
                a0[k] = vfmaq_f32(a0[k], x0, q0), a1[k] = vfmaq_f32(a1[k], x1, q1);
            }
        }
    float t[16];
    for (int k = 0; k < 4; k++) vst1q_f32(t + 4 * k, vaddq_f32(a0[k], a1[k]));
    float acc = 0.0f;
    for (int i = 0; i < 16; i++) acc += t[i];
    for (; j < d; j++) { /* one FMA per term, as on x86 */
        const float e = l2 ? x[j] - q[j] : x[j];
        acc = fmaf(e, l2 ? e : q[j], acc);
    }
    return l2 ? -acc : acc;
}

uint32_t ac_scan_block_neon(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                            float *out) {
    int j = 0;
    float32x4_t a[4][4]; /* [chain j mod 4][quarter of the 16 vectors] */
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 4; k++) a[c][k] = vdupq_n_f32(0.0f);
#define AC_LDQ(jj, k) vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk + (size_t)(jj) * 16 + 4 * (k))))
    for (; j + 4 <= d; j += 4)
        for (int c = 0; c < 4; c++) {
            const float32x4_t qj = vdupq_n_f32(q[j + c]);
            for (int k = 0; k < 4; k++) a[c][k] = vfmaq_f32(a[c][k], AC_LDQ(j + c, k), qj);
        }
    for (; j < d; j++) {
        const float32x4_t qj = vdupq_n_f32(q[j]);
        for (int k = 0; k < 4; k++) a[0][k] = vfmaq_f32(a[0][k], AC_LDQ(j, k), qj);
    }
#undef AC_LDQ
    uint32_t m = 0;
    for (int k = 0; k < 4; k++) {
        float32x4_t s = vaddq_f32(vaddq_f32(a[0][k], a[1][k]), vaddq_f32(a[2][k], a[3][k]));
        if (l2) {
            float sb[4] = {0, 0, 0, 0}; /* sq [nv]: nothing past it is read */
            for (int v = 0; v < 4 && 4 * k + v < nv; v++) sb[v] = sq[4 * k + v];
            /* 2 s - sq in one rounding: -(sq - 2 s), rounding to nearest is symmetric */
            s = vnegq_f32(vfmsq_f32(vld1q_f32(sb), vdupq_n_f32(2.0f), s));
        }
        vst1q_f32(out + 4 * k, s);
    }
    for (int v = 0; v < nv && v < 16; v++) m |= (uint32_t)(out[v] > thr) << v;
    return m;
}
