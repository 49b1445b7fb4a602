/* attn_avx2.c — the attention micro-kernels on AVX2 + FMA (8-lane FMAs), with
 * the driver of attn_impl.h. Q K^T: the 64 keys of a tile in four strips of
 * 16, each 6 query rows x 16 keys = 12 ymm accumulators over the head dims in
 * order (the same FMAs, in the same order, as the AVX-512 kernel: scores agree
 * bitwise). P V: 6 rows x 16 head dims per strip. Compiled with the AVX2
 * flags; called only at level AC_CPU_AVX2 or above (attn.c). */
#include "simd.h"

#define ATTN_FN(name) name##_avx2
#include "attn_impl.h"

/* S [MR][BK] = scale * q[r] . Kt[:, j] for the MR rows q[r] (each [hd]): the strips of 16 keys
 * that hold the block's nk keys (a short sequence's only block: 2 strips of 4 at L = 25). */
static inline void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S) {
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *q4 = q[4], *q5 = q[5];
    const __m256 sc = _mm256_set1_ps(scale);
    for (int s = 0; s < nk; s += 16) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
               c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *kc = Kt + s;
#define QK_ROW(c0, c1, qr)                             \
    do {                                               \
        __m256 qb = _mm256_broadcast_ss((qr) + d);     \
        c0 = _mm256_fmadd_ps(qb, k0, c0);              \
        c1 = _mm256_fmadd_ps(qb, k1, c1);              \
    } while (0)
        for (int d = 0; d < hd; d++) {
            const float *kr = kc + (size_t)d * BK;
            __m256 k0 = _mm256_load_ps(kr), k1 = _mm256_load_ps(kr + 8);
            QK_ROW(c00, c01, q0);
            QK_ROW(c10, c11, q1);
            QK_ROW(c20, c21, q2);
            QK_ROW(c30, c31, q3);
            QK_ROW(c40, c41, q4);
            QK_ROW(c50, c51, q5);
        }
#undef QK_ROW
#define QK_ST(r, c0, c1)                                                  \
    do {                                                                  \
        _mm256_store_ps(S + (r) * BK + s, _mm256_mul_ps(c0, sc));         \
        _mm256_store_ps(S + (r) * BK + s + 8, _mm256_mul_ps(c1, sc));     \
    } while (0)
        QK_ST(0, c00, c01);
        QK_ST(1, c10, c11);
        QK_ST(2, c20, c21);
        QK_ST(3, c30, c31);
        QK_ST(4, c40, c41);
        QK_ST(5, c50, c51);
#undef QK_ST
    }
}

/* O[r][0..w) += sum_{j < nk} p[r][j] * V[j][0..w), w <= 64, for MR rows. */
static inline void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
    for (int s = 0; s < w; s += 16) {
        const __m256i m0 = ac_mask8(w - s), m1 = ac_mask8(w - s - 8);
#define PV_LD(r, c0, c1) __m256 c0 = _mm256_maskload_ps(O[r] + s, m0), c1 = _mm256_maskload_ps(O[r] + s + 8, m1)
        PV_LD(0, c00, c01);
        PV_LD(1, c10, c11);
        PV_LD(2, c20, c21);
        PV_LD(3, c30, c31);
        PV_LD(4, c40, c41);
        PV_LD(5, c50, c51);
#undef PV_LD
#define PV_ROW(c0, c1, pr)                             \
    do {                                               \
        __m256 pb = _mm256_broadcast_ss((pr) + j);     \
        c0 = _mm256_fmadd_ps(pb, v0, c0);              \
        c1 = _mm256_fmadd_ps(pb, v1, c1);              \
    } while (0)
        if (w - s >= 16) {
            for (int j = 0; j < nk; j++) {
                const float *vr = V + (size_t)j * ldv + s;
                __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
                PV_ROW(c00, c01, p0);
                PV_ROW(c10, c11, p1);
                PV_ROW(c20, c21, p2);
                PV_ROW(c30, c31, p3);
                PV_ROW(c40, c41, p4);
                PV_ROW(c50, c51, p5);
            }
        } else {
            for (int j = 0; j < nk; j++) {
                const float *vr = V + (size_t)j * ldv + s;
                __m256 v0 = _mm256_maskload_ps(vr, m0), v1 = _mm256_maskload_ps(vr + 8, m1);
                PV_ROW(c00, c01, p0);
                PV_ROW(c10, c11, p1);
                PV_ROW(c20, c21, p2);
                PV_ROW(c30, c31, p3);
                PV_ROW(c40, c41, p4);
                PV_ROW(c50, c51, p5);
            }
        }
#undef PV_ROW
#define PV_ST(r, c0, c1)                                \
    do {                                                \
        _mm256_maskstore_ps(O[r] + s, m0, c0);          \
        _mm256_maskstore_ps(O[r] + s + 8, m1, c1);      \
    } while (0)
        PV_ST(0, c00, c01);
        PV_ST(1, c10, c11);
        PV_ST(2, c20, c21);
        PV_ST(3, c30, c31);
        PV_ST(4, c40, c41);
        PV_ST(5, c50, c51);
#undef PV_ST
    }
}

/* Online-softmax update of one row of a key block (contract: attn.c): the vectors of 8 that
 * hold the block's nk keys. */
static inline float online_row(float *s, int nvalid, int nk, float *m, float *l) {
    const float m_old = *m;
    const int nv = (nk + 7) / 8;
    __m256 v[8];
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmx = ninf;
    for (int c = 0; c < nv; c++) {
        v[c] = _mm256_blendv_ps(ninf, _mm256_load_ps(s + 8 * c), _mm256_castsi256_ps(ac_mask8(nvalid - 8 * c)));
        vmx = _mm256_max_ps(vmx, v[c]);
    }
    const float mx = ac_hmax256(vmx);
    const float m_new = mx > m_old ? mx : m_old;
    const __m256 mn = _mm256_set1_ps(m_new);
    __m256 sum = _mm256_setzero_ps();
    for (int c = 0; c < nv; c++) {
        __m256 p = ac_exp256(_mm256_sub_ps(v[c], mn)); /* -inf -> 0 */
        _mm256_store_ps(s + 8 * c, p);
        sum = _mm256_add_ps(sum, p);
    }
    /* exp(-inf) = 0 on the first block; exp(0) is 1 exactly, which the scalar exp need not compute
     * (the running max of a row changes in few of its blocks) */
    const float alpha = m_old == m_new ? 1.0f : ac_expf_fma(m_old - m_new);
    *l = *l * alpha + ac_hsum256(sum);
    *m = m_new;
    return alpha;
}

/* In place: row[0..nv) = softmax, row[nv..L) = 0. */
static inline void softmax_row(float *row, int nv, int L) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmx = ninf;
    int j = 0;
    for (; j + 8 <= nv; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(row + j));
    const __m256i mt = ac_mask8(nv - j);
    if (j < nv) vmx = _mm256_max_ps(vmx, _mm256_blendv_ps(ninf, _mm256_maskload_ps(row + j, mt), _mm256_castsi256_ps(mt)));
    const __m256 mn = _mm256_set1_ps(ac_hmax256(vmx));
    __m256 vs = _mm256_setzero_ps();
    for (j = 0; j + 8 <= nv; j += 8) {
        __m256 p = ac_exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), mn));
        _mm256_storeu_ps(row + j, p);
        vs = _mm256_add_ps(vs, p);
    }
    if (j < nv) {
        __m256 p = _mm256_and_ps(ac_exp256(_mm256_sub_ps(_mm256_maskload_ps(row + j, mt), mn)), _mm256_castsi256_ps(mt));
        _mm256_maskstore_ps(row + j, mt, p);
        vs = _mm256_add_ps(vs, p);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / ac_hsum256(vs));
    for (j = 0; j + 8 <= nv; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
    if (j < nv) _mm256_maskstore_ps(row + j, mt, _mm256_mul_ps(_mm256_maskload_ps(row + j, mt), inv));
    for (j = nv; j < L; j++) row[j] = 0.0f;
}
