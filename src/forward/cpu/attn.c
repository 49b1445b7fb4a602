/* attn.c — attention of one sequence, two replaceable kinds:
 *  - fused (default): blocked over queries (BQ rows) and keys (BK columns) with an
 *    online softmax (running max m, running sum l, rescaled output O); the L x L
 *    map never exists. Threaded over heads x query blocks.
 *  - materialised: P [H][L][L] = softmax(scale Q K^T) with the causal mask, then
 *    out = P V; P is what the attention cache records or supplies.
 * Both share the two micro-kernels below (4 query rows x 64 keys for Q K^T,
 * 4 rows x 64 head dims for P V), written with AVX-512 intrinsics, plain C
 * otherwise. Scores: s = scale * sum_d q[d] k[d] in f32 with d in order. */
#include "forward/forward.h"
#include "util/common.h"

#include "simd.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define BK 64  /* keys per block (micro-kernel width)        */
#define BQ 64  /* query rows per task of the fused kernel    */
#define MR 4   /* query rows per micro-kernel call           */
#define HD_MAX 256

/* S [MR][BK] = scale * Q[r] . Kt[:, j] for the MR rows q[r] (each [hd]) and
 * Kt [hd][BK] (zero padded past the valid keys). */
static void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, float *S) {
#ifdef AC_AVX512
    __m512 acc[MR][4];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kr = Kt + (size_t)d * BK;
        __m512 k0 = _mm512_load_ps(kr), k1 = _mm512_load_ps(kr + 16), k2 = _mm512_load_ps(kr + 32),
               k3 = _mm512_load_ps(kr + 48);
        for (int r = 0; r < MR; r++) {
            __m512 qb = _mm512_set1_ps(q[r][d]);
            acc[r][0] = _mm512_fmadd_ps(qb, k0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(qb, k1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(qb, k2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(qb, k3, acc[r][3]);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < 4; c++) _mm512_store_ps(S + r * BK + 16 * c, _mm512_mul_ps(acc[r][c], sc));
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
    __mmask16 m[4];
    for (int c = 0; c < 4; c++) {
        int n = w - 16 * c;
        m[c] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
    }
    __m512 acc[MR][4];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_maskz_loadu_ps(m[c], O[r] + 16 * c);
    for (int j = 0; j < nk; j++) {
        const float *vr = V + (size_t)j * ldv;
        __m512 v0 = _mm512_maskz_loadu_ps(m[0], vr), v1 = _mm512_maskz_loadu_ps(m[1], vr + 16),
               v2 = _mm512_maskz_loadu_ps(m[2], vr + 32), v3 = _mm512_maskz_loadu_ps(m[3], vr + 48);
        for (int r = 0; r < MR; r++) {
            __m512 pb = _mm512_set1_ps(p[r][j]);
            acc[r][0] = _mm512_fmadd_ps(pb, v0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(pb, v1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(pb, v2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(pb, v3, acc[r][3]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(O[r] + 16 * c, m[c], acc[r][c]);
#else
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < nk; j++) {
            const float pj = p[r][j];
            const float *vr = V + (size_t)j * ldv;
            for (int c = 0; c < w; c++) O[r][c] = fmaf(pj, vr[c], O[r][c]);
        }
#endif
}

/* Kt [hd][BK] = K rows j0..j0+nk of kv head g, transposed, zero padded. */
static void load_kt(const ac_attn_args *a, int g, int j0, int nk, float *Kt) {
    const float *k = a->k + (size_t)g * a->hd;
    for (int d = 0; d < a->hd; d++) {
        float *row = Kt + (size_t)d * BK;
        for (int j = 0; j < nk; j++) row[j] = k[(size_t)(j0 + j) * a->ldk + d];
        for (int j = nk; j < BK; j++) row[j] = 0.0f;
    }
}

static const float g_zero_row[HD_MAX > BK ? HD_MAX : BK] __attribute__((aligned(64)));

/* Online-softmax update of one row of a key block: s [BK] raw scores, the first
 * nvalid of them visible. Updates the running max *m and sum *l, overwrites s
 * with p = exp(s - m_new) (0 past nvalid) and returns alpha = exp(m_old - m_new),
 * the factor that rescales the row's output accumulated so far. */
static float online_row(float *s, int nvalid, float *m, float *l) {
    const float m_old = *m;
#ifdef AC_AVX512
    __m512 v[4];
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int c = 0; c < 4; c++) {
        int n = nvalid - 16 * c;
        __mmask16 mk = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
        v[c] = _mm512_mask_loadu_ps(ninf, mk, s + 16 * c);
    }
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
    int j = 0;
    for (; j + 16 <= nv; j += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(row + j));
    if (j < nv) vmx = _mm512_max_ps(vmx, _mm512_mask_loadu_ps(vmx, (__mmask16)((1u << (nv - j)) - 1), row + j));
    const __m512 mn = _mm512_set1_ps(_mm512_reduce_max_ps(vmx));
    __m512 vs = _mm512_setzero_ps();
    for (j = 0; j < nv; j += 16) {
        __mmask16 mk = nv - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nv - j)) - 1);
        __m512 p = ac_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + j), mn));
        _mm512_mask_storeu_ps(row + j, mk, p);
        vs = _mm512_add_ps(vs, _mm512_maskz_mov_ps(mk, p));
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs));
    for (j = 0; j < nv; j += 16) {
        __mmask16 mk = nv - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nv - j)) - 1);
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

/* ---- fused ------------------------------------------------------------------------------ */

/* One task: head h, query rows i0..i0+nq. */
static void fused_task(const ac_attn_args *a, int h, int i0, int nq, float *Kt, float *S, float *O,
                       float *mrow, float *lrow) {
    const int hd = a->hd, g = h / (a->H / a->Hkv);
    const int jend = a->causal ? i0 + nq : a->L;
    for (int r = 0; r < nq; r++) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
        memset(O + (size_t)r * hd, 0, (size_t)hd * sizeof *O);
    }
    for (int j0 = 0; j0 < jend; j0 += BK) {
        const int nk = AC_MIN(BK, jend - j0);
        load_kt(a, g, j0, nk, Kt);
        for (int r0 = 0; r0 < nq; r0 += MR) {
            const float *q[MR];
            float *orow[MR];
            const float *prow[MR];
            for (int r = 0; r < MR; r++) {
                int rr = r0 + r < nq ? r0 + r : r0; /* pad with a valid row, result unused */
                q[r] = a->q + (size_t)(i0 + rr) * a->ldq + (size_t)h * hd;
            }
            qk_tile(q, Kt, hd, a->scale, S);
            for (int r = 0; r < MR; r++) {
                float *s = S + r * BK;
                if (r0 + r >= nq) { /* padding row: contributes nothing */
                    memset(s, 0, BK * sizeof *s);
                    prow[r] = s;
                    orow[r] = NULL;
                    continue;
                }
                const int i = i0 + r0 + r;
                int nvalid = nk;
                if (a->causal && i - j0 + 1 < nvalid) nvalid = i - j0 + 1; /* keys j <= i */
                if (nvalid <= 0) {                                          /* nothing visible here */
                    memset(s, 0, BK * sizeof *s);
                    prow[r] = s;
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
            /* P V over head-dim chunks of 64; padding rows write into a dummy row */
            float dummy[MR][64] __attribute__((aligned(64)));
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
    }
}

void ac_attn_fused(const ac_attn_args *a, int n_threads) {
    const int nblk = (a->L + BQ - 1) / BQ, ntask = a->H * nblk;
#pragma omp parallel num_threads(n_threads)
    {
        float Kt[HD_MAX * BK] __attribute__((aligned(64)));
        float S[MR * BK] __attribute__((aligned(64)));
        float O[BQ * HD_MAX] __attribute__((aligned(64)));
        float mrow[BQ], lrow[BQ];
        /* causal: later query blocks have more keys, so hand them out first */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntask; t++) {
            int b = a->causal ? nblk - 1 - t / a->H : t / a->H, h = t % a->H;
            int i0 = b * BQ;
            fused_task(a, h, i0, AC_MIN(BQ, a->L - i0), Kt, S, O, mrow, lrow);
        }
    }
}

/* ---- materialised ------------------------------------------------------------------------- */

void ac_attn_scores(const ac_attn_args *a, float *P, int n_threads, double *t_qk, double *t_softmax) {
    const int L = a->L, hd = a->hd, nblk = (L + BK - 1) / BK;
    double t0 = ac_now();
    /* pass 1: raw scaled scores for j <= i (causal) or all j; tasks = head x key block */
#pragma omp parallel num_threads(n_threads)
    {
        float Kt[HD_MAX * BK] __attribute__((aligned(64)));
        float S[MR * BK] __attribute__((aligned(64)));
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < a->H * nblk; t++) {
            const int h = t / nblk, jb = t % nblk, j0 = jb * BK, nk = AC_MIN(BK, L - j0);
            const int g = h / (a->H / a->Hkv);
            load_kt(a, g, j0, nk, Kt);
            float *Ph = P + (size_t)h * L * L;
            const int rstart = a->causal ? j0 : 0; /* rows i < j0 see none of these keys */
            for (int r0 = rstart; r0 < L; r0 += MR) {
                const float *q[MR];
                for (int r = 0; r < MR; r++)
                    q[r] = a->q + (size_t)AC_MIN(r0 + r, L - 1) * a->ldq + (size_t)h * hd;
                qk_tile(q, Kt, hd, a->scale, S);
                for (int r = 0; r < MR && r0 + r < L; r++)
                    memcpy(Ph + (size_t)(r0 + r) * L + j0, S + r * BK, (size_t)nk * sizeof *S);
            }
        }
    }
    double t1 = ac_now();
    /* pass 2: masked softmax per row */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (long hi = 0; hi < (long)a->H * L; hi++) {
        const int i = (int)(hi % L);
        float *row = P + (size_t)hi * L;
        softmax_row(row, a->causal ? i + 1 : L, L);
    }
    double t2 = ac_now();
    if (t_qk) *t_qk += t1 - t0;
    if (t_softmax) *t_softmax += t2 - t1;
}

void ac_attn_apply(const ac_attn_args *a, const float *P, int n_threads) {
    const int L = a->L, hd = a->hd, nblk = (L + MR - 1) / MR;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 4)
    for (int t = 0; t < a->H * nblk; t++) {
        const int h = t / nblk, r0 = (t % nblk) * MR, g = h / (a->H / a->Hkv);
        const float *Ph = P + (size_t)h * L * L;
        const float *prow[MR];
        float *orow[MR];
        float dummy[MR][HD_MAX] __attribute__((aligned(64)));
        int nr = AC_MIN(MR, L - r0);
        for (int r = 0; r < MR; r++) {
            if (r < nr) {
                prow[r] = Ph + (size_t)(r0 + r) * L;
                orow[r] = a->out + (size_t)(r0 + r) * a->ldq + (size_t)h * hd;
                memset(orow[r], 0, (size_t)hd * sizeof(float));
            } else {
                prow[r] = g_zero_row; /* only read for j < nk <= BK */
                orow[r] = dummy[r];
            }
        }
        /* keys visible to the last row of this group; P is zero beyond each row's own limit */
        const int jend = a->causal ? r0 + nr : L;
        for (int j0 = 0; j0 < jend; j0 += BK) {
            const int nk = AC_MIN(BK, jend - j0);
            const float *pp[MR];
            for (int r = 0; r < MR; r++) pp[r] = r < nr ? prow[r] + j0 : g_zero_row;
            for (int c0 = 0; c0 < hd; c0 += 64) {
                float *oc[MR];
                for (int r = 0; r < MR; r++) oc[r] = orow[r] + c0;
                pv_tile(pp, nk, a->v + (size_t)j0 * a->ldk + (size_t)g * hd + c0, (size_t)a->ldk,
                        AC_MIN(64, hd - c0), oc);
            }
        }
    }
}
