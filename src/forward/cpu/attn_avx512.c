/* attn_avx512.c — the attention micro-kernels on AVX-512 (16-lane FMAs; MR = 6
 * query rows x 64 keys for Q K^T = 24 zmm accumulators, 6 rows x 64 head dims
 * for P V), with the driver of attn_impl.h. Compiled with the AVX-512 flags;
 * called only at level AC_CPU_AVX512 (attn.c). */
#include "simd.h"

#define ATTN_FN(name) name##_avx512
#include "attn_impl.h"

/* S [MR][BK] = scale * q[r] . Kt[:, j] for the MR rows q[r] (each [hd]). */
static inline void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S) {
    (void)nk; /* every key of the block is computed */
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00,
           c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00, c40 = c00,
           c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3], *q4 = q[4], *q5 = q[5];
#define QK_ROW(c0, c1, c2, c3, qr)                    \
    do {                                              \
        __m512 qb = _mm512_set1_ps((qr)[d]);          \
        c0 = _mm512_fmadd_ps(qb, k0, c0);             \
        c1 = _mm512_fmadd_ps(qb, k1, c1);             \
        c2 = _mm512_fmadd_ps(qb, k2, c2);             \
        c3 = _mm512_fmadd_ps(qb, k3, c3);             \
    } while (0)
    for (int d = 0; d < hd; d++) {
        const float *kr = Kt + (size_t)d * BK;
        __m512 k0 = _mm512_load_ps(kr), k1 = _mm512_load_ps(kr + 16), k2 = _mm512_load_ps(kr + 32),
               k3 = _mm512_load_ps(kr + 48);
        QK_ROW(c00, c01, c02, c03, q0);
        QK_ROW(c10, c11, c12, c13, q1);
        QK_ROW(c20, c21, c22, c23, q2);
        QK_ROW(c30, c31, c32, c33, q3);
        QK_ROW(c40, c41, c42, c43, q4);
        QK_ROW(c50, c51, c52, c53, q5);
    }
#undef QK_ROW
    const __m512 sc = _mm512_set1_ps(scale);
#define QK_ST(r, c0, c1, c2, c3)                                         \
    do {                                                                 \
        _mm512_store_ps(S + (r) * BK, _mm512_mul_ps(c0, sc));            \
        _mm512_store_ps(S + (r) * BK + 16, _mm512_mul_ps(c1, sc));       \
        _mm512_store_ps(S + (r) * BK + 32, _mm512_mul_ps(c2, sc));       \
        _mm512_store_ps(S + (r) * BK + 48, _mm512_mul_ps(c3, sc));       \
    } while (0)
    QK_ST(0, c00, c01, c02, c03);
    QK_ST(1, c10, c11, c12, c13);
    QK_ST(2, c20, c21, c22, c23);
    QK_ST(3, c30, c31, c32, c33);
    QK_ST(4, c40, c41, c42, c43);
    QK_ST(5, c50, c51, c52, c53);
#undef QK_ST
}


/* pv_tile for w <= 32 (head_dim 32 and below): 2 zmm per row instead of 4 — the upper two
 * would be masked to zero and their FMAs wasted (a third of the fused kernel's multiply-adds
 * at head_dim 32). The same FMAs, j in order, for every valid column: results unchanged. */
static inline void pv_tile32(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
    const __mmask16 m0 = ac_mask16(w), m1 = ac_mask16(w - 16);
#define PV_LD(r, c0, c1) __m512 c0 = _mm512_maskz_loadu_ps(m0, O[r]), c1 = _mm512_maskz_loadu_ps(m1, O[r] + 16)
    PV_LD(0, c00, c01);
    PV_LD(1, c10, c11);
    PV_LD(2, c20, c21);
    PV_LD(3, c30, c31);
    PV_LD(4, c40, c41);
    PV_LD(5, c50, c51);
#undef PV_LD
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
#define PV_ROW(c0, c1, pr)                            \
    do {                                              \
        __m512 pb = _mm512_set1_ps((pr)[j]);          \
        c0 = _mm512_fmadd_ps(pb, v0, c0);             \
        c1 = _mm512_fmadd_ps(pb, v1, c1);             \
    } while (0)
    for (int j = 0; j < nk; j++) {
        const float *vr = V + (size_t)j * ldv;
        __m512 v0 = _mm512_maskz_loadu_ps(m0, vr), v1 = _mm512_maskz_loadu_ps(m1, vr + 16);
        PV_ROW(c00, c01, p0);
        PV_ROW(c10, c11, p1);
        PV_ROW(c20, c21, p2);
        PV_ROW(c30, c31, p3);
        PV_ROW(c40, c41, p4);
        PV_ROW(c50, c51, p5);
    }
#undef PV_ROW
#define PV_ST(r, c0, c1)                                   \
    do {                                                   \
        _mm512_mask_storeu_ps(O[r], m0, c0);               \
        _mm512_mask_storeu_ps(O[r] + 16, m1, c1);          \
    } while (0)
    PV_ST(0, c00, c01);
    PV_ST(1, c10, c11);
    PV_ST(2, c20, c21);
    PV_ST(3, c30, c31);
    PV_ST(4, c40, c41);
    PV_ST(5, c50, c51);
#undef PV_ST
}

/* O[r][0..w) += sum_{j < nk} p[r][j] * V[j][0..w), w <= 64, for MR rows. */
static inline void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
    if (w <= 32) {
        pv_tile32(p, nk, V, ldv, w, O);
        return;
    }
    const __mmask16 m0 = ac_mask16(w), m1 = ac_mask16(w - 16), m2 = ac_mask16(w - 32), m3 = ac_mask16(w - 48);
#define PV_LD(r, c0, c1, c2, c3)                                                                          \
    __m512 c0 = _mm512_maskz_loadu_ps(m0, O[r]), c1 = _mm512_maskz_loadu_ps(m1, O[r] + 16),               \
           c2 = _mm512_maskz_loadu_ps(m2, O[r] + 32), c3 = _mm512_maskz_loadu_ps(m3, O[r] + 48)
    PV_LD(0, c00, c01, c02, c03);
    PV_LD(1, c10, c11, c12, c13);
    PV_LD(2, c20, c21, c22, c23);
    PV_LD(3, c30, c31, c32, c33);
    PV_LD(4, c40, c41, c42, c43);
    PV_LD(5, c50, c51, c52, c53);
#undef PV_LD
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
#define PV_ROW(c0, c1, c2, c3, pr)                    \
    do {                                              \
        __m512 pb = _mm512_set1_ps((pr)[j]);          \
        c0 = _mm512_fmadd_ps(pb, v0, c0);             \
        c1 = _mm512_fmadd_ps(pb, v1, c1);             \
        c2 = _mm512_fmadd_ps(pb, v2, c2);             \
        c3 = _mm512_fmadd_ps(pb, v3, c3);             \
    } while (0)
    for (int j = 0; j < nk; j++) {
        const float *vr = V + (size_t)j * ldv;
        __m512 v0 = _mm512_maskz_loadu_ps(m0, vr), v1 = _mm512_maskz_loadu_ps(m1, vr + 16),
               v2 = _mm512_maskz_loadu_ps(m2, vr + 32), v3 = _mm512_maskz_loadu_ps(m3, vr + 48);
        PV_ROW(c00, c01, c02, c03, p0);
        PV_ROW(c10, c11, c12, c13, p1);
        PV_ROW(c20, c21, c22, c23, p2);
        PV_ROW(c30, c31, c32, c33, p3);
        PV_ROW(c40, c41, c42, c43, p4);
        PV_ROW(c50, c51, c52, c53, p5);
    }
#undef PV_ROW
#define PV_ST(r, c0, c1, c2, c3)                           \
    do {                                                   \
        _mm512_mask_storeu_ps(O[r], m0, c0);               \
        _mm512_mask_storeu_ps(O[r] + 16, m1, c1);          \
        _mm512_mask_storeu_ps(O[r] + 32, m2, c2);          \
        _mm512_mask_storeu_ps(O[r] + 48, m3, c3);          \
    } while (0)
    PV_ST(0, c00, c01, c02, c03);
    PV_ST(1, c10, c11, c12, c13);
    PV_ST(2, c20, c21, c22, c23);
    PV_ST(3, c30, c31, c32, c33);
    PV_ST(4, c40, c41, c42, c43);
    PV_ST(5, c50, c51, c52, c53);
#undef PV_ST
}


/* Online-softmax update of one row of a key block: s [BK] raw scores, the first
 * nvalid of them visible. Updates the running max *m and sum *l, overwrites s
 * with p = exp(s - m_new) (0 past nvalid) and returns alpha = exp(m_old - m_new),
 * the factor that rescales the row's output accumulated so far. */
static inline float online_row(float *s, int nvalid, int nk, float *m, float *l) {
    (void)nk;
    const float m_old = *m;
    __m512 v[4];
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int c = 0; c < 4; c++) v[c] = _mm512_mask_loadu_ps(ninf, ac_mask16(nvalid - 16 * c), s + 16 * c);
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3])));
    const float m_new = mx > m_old ? mx : m_old;
    const __m512 mn = _mm512_set1_ps(m_new);
    __m512 sum = _mm512_setzero_ps();
    for (int c = 0; c < 4; c++) {
        __m512 p = ac_exp512(_mm512_sub_ps(v[c], mn)); /* -inf -> 0 */
        _mm512_store_ps(s + 16 * c, p);
        sum = _mm512_add_ps(sum, p);
    }
    const float alpha = ac_expf_fma(m_old - m_new); /* exp(-inf) = 0 on the first block */
    *l = *l * alpha + _mm512_reduce_add_ps(sum);
    *m = m_new;
    return alpha;
}


/* In place: row[0..nv) = softmax, row[nv..L) = 0. */
static inline void softmax_row(float *row, int nv, int L) {
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nv; j += 16) vmx = _mm512_max_ps(vmx, _mm512_mask_loadu_ps(vmx, ac_mask16(nv - j), row + j));
    const __m512 mn = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
    __m512 vs = _mm512_setzero_ps();
    for (int j = 0; j < nv; j += 16) {
        const __mmask16 mk = ac_mask16(nv - j);
        __m512 p = ac_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + j), mn));
        _mm512_mask_storeu_ps(row + j, mk, p);
        vs = _mm512_add_ps(vs, _mm512_maskz_mov_ps(mk, p));
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
    for (int j = 0; j < nv; j += 16) {
        const __mmask16 mk = ac_mask16(nv - j);
        _mm512_mask_storeu_ps(row + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row + j), inv));
    }
    for (int j = nv; j < L; j++) row[j] = 0.0f;
}

