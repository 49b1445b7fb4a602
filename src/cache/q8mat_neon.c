/* q8mat_neon.c — q8mat.h's kernels with NEON (aarch64, the baseline level
 * there): codes widened to int16 and multiplied into int32 lanes (smlal), so
 * the dot products are exact and equal to every other path's; the
 * quantiser's codes round to nearest even as lrintf (fcvtns). */
#include "cache/kernels.h"

#include <arm_neon.h>
#include <math.h>

float ac_q8_absmax_neon(const float *x, int n) {
    int i = 0;
    float32x4_t mv = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) mv = vmaxq_f32(mv, vabsq_f32(vld1q_f32(x + i)));
    float mx = vmaxvq_f32(mv);
    for (; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    return mx;
}

void ac_q8_codes_neon(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8) {
    int i = 0;
    const float32x4_t vinv = vdupq_n_f32(inv), lo = vdupq_n_f32(low), hi = vdupq_n_f32(lim);
    const int32x4_t voff = vdupq_n_s32(off);
    for (; i + 8 <= n; i += 8) {
        const float32x4_t v0 = vminq_f32(hi, vmaxq_f32(lo, vmulq_f32(vld1q_f32(x + i), vinv)));
        const float32x4_t v1 = vminq_f32(hi, vmaxq_f32(lo, vmulq_f32(vld1q_f32(x + i + 4), vinv)));
        const int32x4_t q0 = vaddq_s32(vcvtnq_s32_f32(v0), voff), q1 = vaddq_s32(vcvtnq_s32_f32(v1), voff);
        const uint16x8_t w = vcombine_u16(vqmovun_s32(q0), vqmovun_s32(q1)); /* 0..255 */
        vst1_u8(x8 + i, vqmovn_u16(w));
    }
    for (; i < n; i++) x8[i] = (uint8_t)(lrintf(fminf(lim, fmaxf(low, x[i] * inv))) + off);
}

void ac_q8_dot4_neon(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]) {
    const int8_t *w = m->w + (size_t)r0 * m->ld;
    int32x4_t a[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
    for (int i = 0; i < m->ld; i += 64, w += 256)
        for (int g = 0; g < 4; g++) { /* 16 columns */
            const uint8x16_t xb = vld1q_u8(x8 + i + 16 * g);
            const int16x8_t xl = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(xb)));
            const int16x8_t xh = vreinterpretq_s16_u16(vmovl_high_u8(xb));
            for (int k = 0; k < 4; k++) {
                const int8x16_t wb = vld1q_s8(w + 64 * k + 16 * g);
                const int16x8_t wl = vmovl_s8(vget_low_s8(wb)), wh = vmovl_high_s8(wb);
                a[k] = vmlal_s16(a[k], vget_low_s16(xl), vget_low_s16(wl));
                a[k] = vmlal_high_s16(a[k], xl, wl);
                a[k] = vmlal_s16(a[k], vget_low_s16(xh), vget_low_s16(wh));
                a[k] = vmlal_high_s16(a[k], xh, wh);
            }
        }
    for (int k = 0; k < 4; k++) v[k] = vaddvq_s32(a[k]);
}
