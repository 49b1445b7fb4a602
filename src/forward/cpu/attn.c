/* attn.c — attention of one sequence, two replaceable kinds:
 *  - fused (default): blocked over queries (BQ rows) and keys (BK columns) with an
 *    online softmax (running max m, running sum l, rescaled output O); the L x L
 *    map never exists. Threaded over heads x query blocks (dynamic).
 *  - materialised: P [H][L][L] = softmax(scale Q K^T) with the causal mask, then
 *    out = P V; P is what the attention cache records or supplies.
 * K is first transposed once per call into key blocks Kt [Hkv][nkb][hd][BK]
 * (zero padded), shared by every head of a KV group and every query block;
 * a block is transposed by the first task that needs it (per-block flag).
 * Both kinds use the same two micro-kernels: MR = 6 query rows x BK = 64 keys
 * for Q K^T (24 zmm accumulators, broadcast q, load Kt rows) and 6 rows x 64
 * head dims for P V (broadcast p, load V rows); AVX-512 intrinsics, plain C
 * otherwise. A score is scale * sum_d q[d] k[d] in f32 with d in order. */
#include "forward/forward.h"
#include "util/common.h"

#include "simd.h"

#include "pool.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define BK 64  /* keys per block (micro-kernel width)     */
#define MR 6   /* query rows per micro-kernel call        */
#define BQ 48  /* query rows per task of the fused kernel */
#define HD_MAX 256

static const float g_zero_row[BK] __attribute__((aligned(64)));

size_t ac_attn_kt_floats(const ac_attn_args *a) {
    const size_t nkb = ((size_t)a->L + BK - 1) / BK;
    return (size_t)a->Hkv * nkb * (size_t)a->hd * BK;
}

/* Kt block (g, kb) [hd][BK] = K rows kb*BK.. of kv head g, transposed, zero padded. */
static void transpose_block(const ac_attn_args *a, float *Kt, int g, int kb) {
    const int nkb = (a->L + BK - 1) / BK, j0 = kb * BK, nk = AC_MIN(BK, a->L - j0), hd = a->hd;
    float *dst = Kt + ((size_t)g * nkb + kb) * (size_t)hd * BK;
    const float *k = a->k + (size_t)g * hd;
    for (int d = 0; d < hd; d++) {
        float *row = dst + (size_t)d * BK;
        for (int j = 0; j < nk; j++) row[j] = k[(size_t)(j0 + j) * a->ldk + d];
        for (int j = nk; j < BK; j++) row[j] = 0.0f;
    }
}

/* The shared state of one call: key blocks and their flags (0 todo, 1 busy, 2 ready). */
typedef struct attn_call {
    const ac_attn_args *a;
    float *Kt;
    _Atomic int *flag; /* [Hkv][nkb] */
    float *P;
    ac_pool *pool;
} attn_call;

/* Key block (g, kb), transposing it first if no task did yet. */
static const float *kt_block(attn_call *ac, int g, int kb) {
    const ac_attn_args *a = ac->a;
    const int nkb = (a->L + BK - 1) / BK;
    _Atomic int *f = &ac->flag[g * nkb + kb];
    int st = atomic_load_explicit(f, memory_order_acquire);
    if (st != 2) {
        int zero = 0;
        if (st == 0 && atomic_compare_exchange_strong(f, &zero, 1)) {
            transpose_block(a, ac->Kt, g, kb);
            atomic_store_explicit(f, 2, memory_order_release);
        } else {
            for (int i = 0; atomic_load_explicit(f, memory_order_acquire) != 2; i++)
                if (i > 1000) sched_yield(); /* the transposing thread may be preempted */
        }
    }
    return ac->Kt + ((size_t)g * nkb + kb) * (size_t)a->hd * BK;
}

/* S [MR][BK] = scale * q[r] . Kt[:, j] for the MR rows q[r] (each [hd]). */
static void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, float *S) {
#ifdef AC_AVX512
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
#else
    for (int r = 0; r < MR; r++) {
        float acc[BK] = {0};
        for (int d = 0; d < hd; d++) {
            const float qd = q[r][d];
            for (int j = 0; j < BK; j++) acc[j] = fmaf(qd, Kt[(size_t)d * BK + j], acc[j]);
        }
        for (int j = 0; j < BK; j++) S[r * BK + j] = acc[j] * scale;
    }
#endif
}

/* O[r][0..w) += sum_{j < nk} p[r][j] * V[j][0..w), w <= 64, for MR rows. */
static void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
#ifdef AC_AVX512
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
#else
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < nk; j++) {
            const float pj = p[r][j];
            const float *vr = V + (size_t)j * ldv;
            for (int c = 0; c < w; c++) O[r][c] = fmaf(pj, vr[c], O[r][c]);
        }
#endif
}

/* Online-softmax update of one row of a key block: s [BK] raw scores, the first
 * nvalid of them visible. Updates the running max *m and sum *l, overwrites s
 * with p = exp(s - m_new) (0 past nvalid) and returns alpha = exp(m_old - m_new),
 * the factor that rescales the row's output accumulated so far. */
static float online_row(float *s, int nvalid, float *m, float *l) {
    const float m_old = *m;
#ifdef AC_AVX512
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
    const float alpha = ac_expf(m_old - m_new); /* exp(-inf) = 0 on the first block */
    *l = *l * alpha + _mm512_reduce_add_ps(sum);
#else
    float mx = s[0];
    for (int j = 1; j < nvalid; j++) mx = s[j] > mx ? s[j] : mx;
    const float m_new = mx > m_old ? mx : m_old;
    for (int j = 0; j < nvalid; j++) s[j] -= m_new;
    ac_vexp(s, nvalid);
    for (int j = nvalid; j < BK; j++) s[j] = 0.0f;
    float sum = 0.0f;
    for (int j = 0; j < nvalid; j++) sum += s[j];
    const float alpha = ac_expf(m_old - m_new);
    *l = *l * alpha + sum;
#endif
    *m = m_new;
    return alpha;
}

/* In place: row[0..nv) = softmax, row[nv..L) = 0. */
static void softmax_row(float *row, int nv, int L) {
#ifdef AC_AVX512
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
#else
    float mx = row[0];
    for (int j = 1; j < nv; j++) mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < nv; j++) row[j] -= mx;
    ac_vexp(row, nv);
    float sum = 0.0f;
    for (int j = 0; j < nv; j++) sum += row[j];
    const float inv = 1.0f / sum;
    for (int j = 0; j < nv; j++) row[j] *= inv;
#endif
    for (int j = nv; j < L; j++) row[j] = 0.0f;
}

/* The MR query-row pointers of a tile starting at row i (padding rows repeat row i). */
static void tile_rows(const ac_attn_args *a, int h, int i, int nr, const float *q[MR]) {
    for (int r = 0; r < MR; r++) q[r] = a->q + (size_t)(i + (r < nr ? r : 0)) * a->ldq + (size_t)h * a->hd;
}

/* ---- fused ------------------------------------------------------------------------------ */

/* One task: head h, query rows i0..i0+nq. */
static void fused_task(attn_call *ac, int h, int i0, int nq, float *S, float *O, float *mrow, float *lrow) {
    const ac_attn_args *a = ac->a;
    const int hd = a->hd, g = h / (a->H / a->Hkv);
    const int jend = a->causal ? i0 + nq : a->L;
    float dummy[MR][64] __attribute__((aligned(64)));
    for (int r = 0; r < nq; r++) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
        memset(O + (size_t)r * hd, 0, (size_t)hd * sizeof *O);
    }
    for (int j0 = 0; j0 < jend; j0 += BK) {
        const int nk = AC_MIN(BK, jend - j0);
        const float *kt = kt_block(ac, g, j0 / BK);
        for (int r0 = 0; r0 < nq; r0 += MR) {
            const int nr = AC_MIN(MR, nq - r0);
            const float *q[MR], *prow[MR];
            float *orow[MR];
            tile_rows(a, h, i0 + r0, nr, q);
            qk_tile(q, kt, hd, a->scale, S);
            for (int r = 0; r < MR; r++) {
                float *s = S + r * BK;
                const int i = i0 + r0 + r;
                int nvalid = r < nr ? nk : 0;
                if (a->causal && i - j0 + 1 < nvalid) nvalid = i - j0 + 1; /* keys j <= i */
                if (nvalid <= 0) { /* padding row, or nothing visible in this block */
                    prow[r] = g_zero_row;
                    orow[r] = NULL;
                    continue;
                }
                const float alpha = online_row(s, nvalid, &mrow[r0 + r], &lrow[r0 + r]);
                float *o = O + (size_t)(r0 + r) * hd;
                if (alpha != 1.0f)
                    for (int d = 0; d < hd; d++) o[d] *= alpha;
                prow[r] = s;
                orow[r] = o;
            }
            for (int c0 = 0; c0 < hd; c0 += 64) {
                float *oc[MR];
                for (int r = 0; r < MR; r++) oc[r] = orow[r] ? orow[r] + c0 : dummy[r];
                pv_tile(prow, nk, a->v + (size_t)j0 * a->ldk + (size_t)g * hd + c0, (size_t)a->ldk,
                        AC_MIN(64, hd - c0), oc);
            }
        }
    }
    for (int r = 0; r < nq; r++) {
        const float inv = 1.0f / lrow[r];
        float *dst = a->out + (size_t)(i0 + r) * a->ldq + (size_t)h * hd;
        const float *o = O + (size_t)r * hd;
        for (int d = 0; d < hd; d++) dst[d] = o[d] * inv;
        if (a->out_bf) ac_f32_to_bf16(a->out_bf + (size_t)(i0 + r) * a->ldq + (size_t)h * hd, dst, (size_t)hd);
    }
}

/* Kt: caller scratch of ac_attn_kt_floats(a) floats, or NULL (allocated here). */
static int call_init(attn_call *ac, const ac_attn_args *a, float *kt, ac_pool *pool, float **owned) {
    const int nkb = (a->L + BK - 1) / BK;
    *owned = NULL;
    ac->a = a;
    /* little work: the caller alone (a parallel step costs a barrier) */
    ac->pool = (double)a->H * a->L * a->L * a->hd < 2e5 ? NULL : pool;
    ac->P = NULL;
    ac->Kt = kt ? kt : (*owned = AC_ALIGNED_ALLOC(ac_attn_kt_floats(a) * sizeof(float))); /* 64-byte rows */
    ac->flag = calloc((size_t)a->Hkv * nkb, sizeof *ac->flag);
    if (!ac->Kt || !ac->flag) {
        free(*owned);
        free(ac->flag);
        return ac_err(AC_ERR_NOMEM, "attention: out of memory for the key blocks");
    }
    return AC_OK;
}

static void fused_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    attn_call *ac = v;
    const ac_attn_args *a = ac->a;
    const int q0 = a->q0 > 0 && a->q0 < a->L ? a->q0 : 0;
    const int nblk = (a->L - q0 + BQ - 1) / BQ, ntask = a->H * nblk;
    float S[MR * BK] __attribute__((aligned(64)));
    float O[BQ * HD_MAX] __attribute__((aligned(64)));
    float mrow[BQ], lrow[BQ];
    /* causal: later query blocks have more keys, so hand them out first */
    for (int t; (t = ac_pool_next(ac->pool)) < ntask;) {
        int b = a->causal ? nblk - 1 - t / a->H : t / a->H, h = t % a->H;
        int i0 = q0 + b * BQ;
        fused_task(ac, h, i0, AC_MIN(BQ, a->L - i0), S, O, mrow, lrow);
    }
}

int ac_attn_fused(const ac_attn_args *a, float *kt, ac_pool *pool) {
    attn_call ac;
    float *owned;
    int rc = call_init(&ac, a, kt, pool, &owned);
    if (rc) return rc;
    ac_pool_run(ac.pool, fused_step, &ac);
    free(owned);
    free(ac.flag);
    return AC_OK;
}

/* ---- materialised ------------------------------------------------------------------------- */

/* raw scaled scores for j <= i (causal) or all j; tasks = head x key block */
static void scores_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    attn_call *ac = v;
    const ac_attn_args *a = ac->a;
    const int L = a->L, hd = a->hd, nkb = (L + BK - 1) / BK;
    float S[MR * BK] __attribute__((aligned(64)));
    for (int t; (t = ac_pool_next(ac->pool)) < a->H * nkb;) {
        const int h = t / nkb, kb = t % nkb, j0 = kb * BK, nk = AC_MIN(BK, L - j0);
        const float *kt_ = kt_block(ac, h / (a->H / a->Hkv), kb);
        float *Ph = ac->P + (size_t)h * L * L;
        const int rstart = a->causal ? j0 : 0; /* rows i < j0 see none of these keys */
        for (int r0 = rstart; r0 < L; r0 += MR) {
            const int nr = AC_MIN(MR, L - r0);
            const float *q[MR];
            tile_rows(a, h, r0, nr, q);
            qk_tile(q, kt_, hd, a->scale, S);
            for (int r = 0; r < nr; r++) memcpy(Ph + (size_t)(r0 + r) * L + j0, S + r * BK, (size_t)nk * sizeof *S);
        }
    }
}

/* masked softmax per row, in chunks of 16 rows */
static void softmax_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    attn_call *ac = v;
    const ac_attn_args *a = ac->a;
    const long rows = (long)a->H * a->L, nchunk = (rows + 15) / 16;
    for (long c; (c = ac_pool_next(ac->pool)) < nchunk;)
        for (long hi = c * 16; hi < AC_MIN(rows, c * 16 + 16); hi++) {
            const int i = (int)(hi % a->L);
            softmax_row(ac->P + (size_t)hi * a->L, a->causal ? i + 1 : a->L, a->L);
        }
}

int ac_attn_scores(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax) {
    attn_call ac;
    float *owned;
    int rc = call_init(&ac, a, kt, pool, &owned);
    if (rc) return rc;
    ac.P = P;
    double t0 = ac_now();
    ac_pool_run(ac.pool, scores_step, &ac);
    double t1 = ac_now();
    ac_pool_run(ac.pool, softmax_step, &ac);
    double t2 = ac_now();
    if (t_qk) *t_qk += t1 - t0;
    if (t_softmax) *t_softmax += t2 - t1;
    free(owned);
    free(ac.flag);
    return AC_OK;
}

typedef struct apply_call {
    const ac_attn_args *a;
    const float *P;
    ac_pool *pool;
} apply_call;

static void apply_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    const apply_call *ap = v;
    const ac_attn_args *a = ap->a;
    const int L = a->L, hd = a->hd, nblk = (L + MR - 1) / MR;
    float dummy[MR][HD_MAX] __attribute__((aligned(64)));
    for (int t; (t = ac_pool_next(ap->pool)) < a->H * nblk;) {
        const int h = t / nblk, r0 = (t % nblk) * MR, g = h / (a->H / a->Hkv);
        const float *Ph = ap->P + (size_t)h * L * L;
        float *orow[MR];
        const int nr = AC_MIN(MR, L - r0);
        for (int r = 0; r < MR; r++) {
            if (r < nr) {
                orow[r] = a->out + (size_t)(r0 + r) * a->ldq + (size_t)h * hd;
                memset(orow[r], 0, (size_t)hd * sizeof(float));
            } else {
                orow[r] = dummy[r];
            }
        }
        /* keys visible to the last row of this group; P is zero beyond each row's own limit */
        const int jend = a->causal ? r0 + nr : L;
        for (int j0 = 0; j0 < jend; j0 += BK) {
            const int nk = AC_MIN(BK, jend - j0);
            const float *pp[MR];
            for (int r = 0; r < MR; r++) pp[r] = r < nr ? Ph + (size_t)(r0 + r) * L + j0 : g_zero_row;
            for (int c0 = 0; c0 < hd; c0 += 64) {
                float *oc[MR];
                for (int r = 0; r < MR; r++) oc[r] = orow[r] + c0;
                pv_tile(pp, nk, a->v + (size_t)j0 * a->ldk + (size_t)g * hd + c0, (size_t)a->ldk,
                        AC_MIN(64, hd - c0), oc);
            }
        }
        if (a->out_bf)
            for (int r = 0; r < nr; r++)
                ac_f32_to_bf16(a->out_bf + (size_t)(r0 + r) * a->ldq + (size_t)h * hd, orow[r], (size_t)hd);
    }
}

void ac_attn_apply(const ac_attn_args *a, const float *P, ac_pool *pool) {
    apply_call ap = {a, P, (double)a->H * a->L * a->L * a->hd < 2e5 ? NULL : pool};
    ac_pool_run(ap.pool, apply_step, &ap);
}
