/* attn_neon.c — the attention micro-kernels on aarch64 NEON (4-lane FMAs),
 * with the driver of attn_impl.h. Q K^T: the 64 keys of a tile in four
 * strips of 16, each 6 query rows x 16 keys = 24 q-register accumulators over
 * the head dims in order (score = scale * (fma chain over d)). P V: 6 rows x
 * 16 head dims per strip, keys in order. Softmax: ac_exp_f32x4 (bitwise
 * ac_expf_fma), max and sums over 4 lanes. Called at level AC_CPU_NEON
 * (attn.c); the whole forward at that level is checked against the portable
 * level in tests/test_forward_levels.c. */
#include "simd.h"

#define ATTN_FN(name) name##_neon
#include "attn_impl.h"

/* S [MR][BK] = scale * q[r] . Kt[:, j] for the MR rows q[r] (each [hd]). */
static inline void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S) {
    (void)nk; /* every key of the block is computed */
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *q4 = q[4], *q5 = q[5];
    for (int s = 0; s < BK; s += 16) {
        float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
                    c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00,
                    c33 = c00, c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
        const float *kc = Kt + s;
#define QK_ROW(x0, x1, x2, x3, qr)             \
    do {                                       \
        const float qd = (qr)[d];              \
        x0 = vfmaq_n_f32(x0, k0, qd);          \
        x1 = vfmaq_n_f32(x1, k1, qd);          \
        x2 = vfmaq_n_f32(x2, k2, qd);          \
        x3 = vfmaq_n_f32(x3, k3, qd);          \
    } while (0)
        for (int d = 0; d < hd; d++) {
            const float *kr = kc + (size_t)d * BK;
            float32x4_t k0 = vld1q_f32(kr), k1 = vld1q_f32(kr + 4), k2 = vld1q_f32(kr + 8), k3 = vld1q_f32(kr + 12);
            QK_ROW(c00, c01, c02, c03, q0);
            QK_ROW(c10, c11, c12, c13, q1);
            QK_ROW(c20, c21, c22, c23, q2);
            QK_ROW(c30, c31, c32, c33, q3);
            QK_ROW(c40, c41, c42, c43, q4);
            QK_ROW(c50, c51, c52, c53, q5);
        }
#undef QK_ROW
#define QK_ST(r, x0, x1, x2, x3)                                          \
    do {                                                                  \
        float *o_ = S + (r) * BK + s;                                     \
        vst1q_f32(o_, vmulq_n_f32(x0, scale));                            \
        vst1q_f32(o_ + 4, vmulq_n_f32(x1, scale));                        \
        vst1q_f32(o_ + 8, vmulq_n_f32(x2, scale));                        \
        vst1q_f32(o_ + 12, vmulq_n_f32(x3, scale));                       \
    } while (0)
        QK_ST(0, c00, c01, c02, c03);
        QK_ST(1, c10, c11, c12, c13);
        QK_ST(2, c20, c21, c22, c23);
        QK_ST(3, c30, c31, c32, c33);
        QK_ST(4, c40, c41, c42, c43);
        QK_ST(5, c50, c51, c52, c53);
#undef QK_ST
    }
}

/* O[r][0..w) += sum_{j < nk} p[r][j] * V[j][0..w), w <= 64, for MR rows. Strips of 16
 * head dims; a last strip narrower than 16 goes through a padded copy of V's rows and O. */
static inline void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
    for (int s = 0; s < w; s += 16) {
        const int ws = w - s < 16 ? w - s : 16;
        float ob[MR][16];
        for (int r = 0; r < MR; r++) {
            memset(ob[r], 0, sizeof ob[r]);
            memcpy(ob[r], O[r] + s, (size_t)ws * sizeof(float));
        }
#define PV_LD(r, x0, x1, x2, x3)                                                                       \
    float32x4_t x0 = vld1q_f32(ob[r]), x1 = vld1q_f32(ob[r] + 4), x2 = vld1q_f32(ob[r] + 8),        \
                x3 = vld1q_f32(ob[r] + 12)
        PV_LD(0, c00, c01, c02, c03);
        PV_LD(1, c10, c11, c12, c13);
        PV_LD(2, c20, c21, c22, c23);
        PV_LD(3, c30, c31, c32, c33);
        PV_LD(4, c40, c41, c42, c43);
        PV_LD(5, c50, c51, c52, c53);
#undef PV_LD
#define PV_ROW(x0, x1, x2, x3, pr)             \
    do {                                       \
        const float pj = (pr)[j];              \
        x0 = vfmaq_n_f32(x0, v0, pj);          \
        x1 = vfmaq_n_f32(x1, v1, pj);          \
        x2 = vfmaq_n_f32(x2, v2, pj);          \
        x3 = vfmaq_n_f32(x3, v3, pj);          \
    } while (0)
        for (int j = 0; j < nk; j++) {
            const float *vr = V + (size_t)j * ldv + s;
            float vb[16];
            if (ws < 16) {
                memset(vb, 0, sizeof vb);
                memcpy(vb, vr, (size_t)ws * sizeof(float));
                vr = vb;
            }
            float32x4_t v0 = vld1q_f32(vr), v1 = vld1q_f32(vr + 4), v2 = vld1q_f32(vr + 8), v3 = vld1q_f32(vr + 12);
            PV_ROW(c00, c01, c02, c03, p0);
            PV_ROW(c10, c11, c12, c13, p1);
            PV_ROW(c20, c21, c22, c23, p2);
            PV_ROW(c30, c31, c32, c33, p3);
            PV_ROW(c40, c41, c42, c43, p4);
            PV_ROW(c50, c51, c52, c53, p5);
        }
#undef PV_ROW
#define PV_ST(r, x0, x1, x2, x3)                                                                   \
    do {                                                                                       \
        vst1q_f32(ob[r], x0), vst1q_f32(ob[r] + 4, x1), vst1q_f32(ob[r] + 8, x2);             \
        vst1q_f32(ob[r] + 12, x3);                                                             \
        memcpy(O[r] + s, ob[r], (size_t)ws * sizeof(float));                                   \
    } while (0)
        PV_ST(0, c00, c01, c02, c03);
        PV_ST(1, c10, c11, c12, c13);
        PV_ST(2, c20, c21, c22, c23);
        PV_ST(3, c30, c31, c32, c33);
        PV_ST(4, c40, c41, c42, c43);
        PV_ST(5, c50, c51, c52, c53);
#undef PV_ST
    }
}

/* lanes 0..3 of v where lane < n, -inf elsewhere */
static inline float32x4_t first_n_or_ninf(float32x4_t v, int n) {
    const int32x4_t idx = {0, 1, 2, 3};
    return vbslq_f32(vcltq_s32(idx, vdupq_n_s32(n)), v, vdupq_n_f32(-INFINITY));
}

/* Online-softmax update of one row of a key block (contract: attn.c). */
static inline float online_row(float *s, int nvalid, int nk, float *m, float *l) {
    (void)nk;
    const float m_old = *m;
    float32x4_t v[BK / 4];
    float32x4_t vmx = vdupq_n_f32(-INFINITY);
    for (int c = 0; c < BK / 4; c++) {
        v[c] = first_n_or_ninf(vld1q_f32(s + 4 * c), nvalid - 4 * c);
        vmx = vmaxq_f32(vmx, v[c]);
    }
    const float mx = vmaxvq_f32(vmx);
    const float m_new = mx > m_old ? mx : m_old;
    const float32x4_t mn = vdupq_n_f32(m_new);
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (int c = 0; c < BK / 4; c++) {
        float32x4_t p = ac_exp_f32x4(vsubq_f32(v[c], mn)); /* -inf -> 0 */
        vst1q_f32(s + 4 * c, p);
        sum = vaddq_f32(sum, p);
    }
    const float alpha = ac_expf_fma(m_old - m_new); /* exp(-inf) = 0 on the first block */
    *l = *l * alpha + vaddvq_f32(sum);
    *m = m_new;
    return alpha;
}

/* In place: row[0..nv) = softmax, row[nv..L) = 0. */
static inline void softmax_row(float *row, int nv, int L) {
    float32x4_t vmx = vdupq_n_f32(-INFINITY);
    int j = 0;
    for (; j + 4 <= nv; j += 4) vmx = vmaxq_f32(vmx, vld1q_f32(row + j));
    float t[4] = {0};
    const int nt = nv - j;
    if (nt > 0) {
        memcpy(t, row + j, (size_t)nt * sizeof(float));
        vmx = vmaxq_f32(vmx, first_n_or_ninf(vld1q_f32(t), nt));
    }
    const float32x4_t mn = vdupq_n_f32(vmaxvq_f32(vmx));
    float32x4_t vs = vdupq_n_f32(0.0f);
    for (j = 0; j + 4 <= nv; j += 4) {
        float32x4_t p = ac_exp_f32x4(vsubq_f32(vld1q_f32(row + j), mn));
        vst1q_f32(row + j, p);
        vs = vaddq_f32(vs, p);
    }
    if (nt > 0) {
        float32x4_t p = ac_exp_f32x4(vsubq_f32(first_n_or_ninf(vld1q_f32(t), nt), mn)); /* padding: exp(-inf) = 0 */
        vst1q_f32(t, p);
        memcpy(row + j, t, (size_t)nt * sizeof(float));
        vs = vaddq_f32(vs, p);
    }
    const float32x4_t inv = vdupq_n_f32(1.0f / vaddvq_f32(vs));
    for (j = 0; j + 4 <= nv; j += 4) vst1q_f32(row + j, vmulq_f32(vld1q_f32(row + j), inv));
    if (nt > 0) {
        memcpy(t, row + j, (size_t)nt * sizeof(float));
        vst1q_f32(t, vmulq_f32(vld1q_f32(t), inv));
        memcpy(row + j, t, (size_t)nt * sizeof(float));
    }
    for (j = nv; j < L; j++) row[j] = 0.0f;
}
