/* attn_impl.h — the attention driver (tasks, key-block transposition, fused
 * online softmax, materialised scores/softmax, P V), included once by each
 * level's translation unit (attn.c: portable C, attn_avx2.c, attn_avx512.c).
 *
 * The including file defines, before including this header:
 *   ATTN_FN(name)  the level's name of an entry point (e.g. name##_avx2)
 *   static void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S);
 *   static void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]);
 *   static float online_row(float *s, int nvalid, int nk, float *m, float *l);
 *   static void softmax_row(float *row, int nv, int L);
 * (contracts: see attn.c). The micro-kernels are inlined into the driver, so a
 * level costs no indirect call per tile or row. */
#include "forward/forward.h"
#include "util/pool.h"
#include "util/common.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define BK 64  /* keys per block (micro-kernel width)     */
#define MR 6   /* query rows per micro-kernel call        */
#define BQ 48  /* query rows per task of the fused kernel */
#define HD_MAX 256

static inline void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S);
static inline void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]);
static inline float online_row(float *s, int nvalid, int nk, float *m, float *l);
static inline void softmax_row(float *row, int nv, int L);

static const float g_zero_row[BK] __attribute__((aligned(64)));

/* Kt block (g, kb) [hd][BK] = K rows kb*BK.. of kv head g, transposed, zero padded. */
static void transpose_block(const ac_attn_args *a, float *Kt, int g, int kb) {
    const int nkb = (a->L + BK - 1) / BK, j0 = kb * BK, nk = AC_MIN(BK, a->L - j0), hd = a->hd;
    float *dst = Kt + ((size_t)g * nkb + kb) * (size_t)hd * BK;
    const float *k = a->k + (size_t)g * hd;
#ifdef AC_AVX2
    if (hd % 8 == 0) { /* 8 keys x 8 dims at a time; keys past the block's end: zero rows */
        const __m256 z = _mm256_setzero_ps();
        for (int j = 0; j < BK; j += 8) {
            const float *kr[8];
            for (int i = 0; i < 8; i++) kr[i] = j + i < nk ? k + (size_t)(j0 + j + i) * a->ldk : NULL;
            for (int d = 0; d < hd; d += 8) {
#define KT_LD(i) (kr[i] ? _mm256_loadu_ps(kr[i] + d) : z)
                ac_tr8x8_store(KT_LD(0), KT_LD(1), KT_LD(2), KT_LD(3), KT_LD(4), KT_LD(5), KT_LD(6), KT_LD(7),
                               dst + (size_t)d * BK + j, BK);
#undef KT_LD
            }
        }
        return;
    }
#endif
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
    const int W = a->win;
    for (int j0 = 0; j0 < jend; j0 += BK) {
        const int nk = AC_MIN(BK, jend - j0);
        if (W) { /* a restricted head: skip the blocks outside every row's span */
            const int lo = i0 - W + 1, hi = a->causal ? i0 + nq - 1 : i0 + nq + W - 2;
            if (!(j0 + nk - 1 >= lo && j0 <= hi) && j0 >= a->n_sink && (a->causal || j0 + nk <= a->L - a->n_end))
                continue;
        }
        const float *kt = kt_block(ac, g, j0 / BK);
        for (int r0 = 0; r0 < nq; r0 += MR) {
            const int nr = AC_MIN(MR, nq - r0);
            /* causal: a tile whose last row precedes this block sees none of its keys (every row
             * would be skipped below: the same results without its products) */
            if (a->causal && i0 + r0 + nr - 1 < j0) continue;
            const float *q[MR], *prow[MR];
            float *orow[MR];
            tile_rows(a, h, i0 + r0, nr, q);
            qk_tile(q, kt, hd, a->scale, nk, S);
            for (int r = 0; r < MR; r++) {
                float *s = S + r * BK;
                const int i = i0 + r0 + r;
                int nvalid = r < nr ? nk : 0;
                if (a->causal && i - j0 + 1 < nvalid) nvalid = i - j0 + 1; /* keys j <= i */
                if (W && nvalid > 0) { /* keys outside the row's span: -inf (weight 0) */
                    int any = 0;
                    for (int k = 0; k < nvalid; k++) {
                        const int j = j0 + k;
                        if (j < a->n_sink || (j > i - W && j < i + W) || (!a->causal && j >= a->L - a->n_end)) any = 1;
                        else s[k] = -INFINITY;
                    }
                    if (!any) nvalid = 0;
                }
                if (nvalid <= 0) { /* padding row, or nothing visible in this block */
                    prow[r] = g_zero_row;
                    orow[r] = NULL;
                    continue;
                }
                const float alpha = online_row(s, nvalid, nk, &mrow[r0 + r], &lrow[r0 + r]);
                float *o = O + (size_t)(r0 + r) * hd;
                if (alpha != 1.0f)
                    for (int d = 0; d < hd; d++) o[d] *= alpha;
                prow[r] = s;
                orow[r] = o;
            }
            /* causal: keys past the tile's last row have weight 0 in every row */
            const int nkt = a->causal ? AC_MIN(nk, i0 + r0 + nr - j0) : nk;
            for (int c0 = 0; c0 < hd; c0 += 64) {
                float *oc[MR];
                for (int r = 0; r < MR; r++) oc[r] = orow[r] ? orow[r] + c0 : dummy[r];
                pv_tile(prow, nkt, a->v + (size_t)j0 * a->ldk + (size_t)g * hd + c0, (size_t)a->ldk,
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

/* The fused call's tasks: heads x query blocks of BQ rows from q0. */
static int fused_ntask(const ac_attn_args *a) {
    const int q0 = a->q0 > 0 && a->q0 < a->L ? a->q0 : 0;
    return a->H * ((a->L - q0 + BQ - 1) / BQ);
}

/* Task t of a fused call (t < fused_ntask); S, O, mrow, lrow: the thread's scratch. */
static void fused_task_at(attn_call *ac, int t, float *S, float *O, float *mrow, float *lrow) {
    const ac_attn_args *a = ac->a;
    const int q0 = a->q0 > 0 && a->q0 < a->L ? a->q0 : 0;
    /* query blocks of at most BQ rows, as even as whole tiles allow (72 rows: 36 + 36, not
     * 48 + 24: equal tasks for the threads); a row's result does not depend on its block */
    const int nblk = (a->L - q0 + BQ - 1) / BQ;
    const int bq = ((a->L - q0 + nblk - 1) / nblk + MR - 1) / MR * MR;
    /* causal: later query blocks have more keys, so hand them out first */
    const int b = a->causal ? nblk - 1 - t / a->H : t / a->H, h = t % a->H, i0 = q0 + b * bq;
    if (a->skip && a->skip[h]) return; /* a head served from the cache's maps */
    if (i0 < a->L) fused_task(ac, h, i0, AC_MIN(bq, a->L - i0), S, O, mrow, lrow);
}

static void fused_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    attn_call *ac = v;
    const int ntask = fused_ntask(ac->a);
    float S[MR * BK] __attribute__((aligned(64)));
    float O[BQ * HD_MAX] __attribute__((aligned(64)));
    float mrow[BQ], lrow[BQ];
    for (int t; (t = ac_pool_next(ac->pool)) < ntask;) fused_task_at(ac, t, S, O, mrow, lrow);
}

int ATTN_FN(ac_attn_fused)(const ac_attn_args *a, float *kt, ac_pool *pool) {
    attn_call ac;
    float *owned;
    int rc = call_init(&ac, a, kt, pool, &owned);
    if (rc) return rc;
    ac_pool_run(ac.pool, fused_step, &ac);
    free(owned);
    free(ac.flag);
    return AC_OK;
}

/* ---- fused, several sequences in one parallel step ------------------------------------------
 * Each sequence is its own call (its key blocks, flags, tasks); the tasks of all of them are
 * numbered one after the other and handed out dynamically in one step, so a batch of short
 * texts costs one barrier per layer instead of one per text. The calls go longest first (their
 * tasks are the largest), which leaves the small ones to fill the end. Every task computes
 * what the call of its sequence alone computes: the results are bitwise those of per-sequence
 * calls. */
typedef struct attn_multi {
    attn_call *calls; /* [n], longest L first */
    int *start;       /* [n + 1] first task of each call; start[n] = all tasks */
    int n;
    ac_pool *pool;
} attn_multi;

static void fused_multi_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    attn_multi *am = v;
    float S[MR * BK] __attribute__((aligned(64)));
    float O[BQ * HD_MAX] __attribute__((aligned(64)));
    float mrow[BQ], lrow[BQ];
    for (int t; (t = ac_pool_next(am->pool)) < am->start[am->n];) {
        int lo = 0, hi = am->n - 1; /* the call holding task t: start[lo] <= t < start[lo + 1] */
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (am->start[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        fused_task_at(&am->calls[lo], t - am->start[lo], S, O, mrow, lrow);
    }
}

int ATTN_FN(ac_attn_fused_multi)(const ac_attn_args *a, int n, float *kt, ac_pool *pool) {
    if (n <= 0) return AC_OK;
    attn_call *calls = malloc((size_t)n * sizeof *calls);
    int *order = malloc((size_t)n * sizeof *order), *start = malloc(((size_t)n + 1) * sizeof *start);
    size_t *kofs = malloc((size_t)n * sizeof *kofs), *fofs = malloc((size_t)n * sizeof *fofs);
    float *owned = NULL;
    _Atomic int *flags = NULL;
    int rc = AC_OK;
    if (!calls || !order || !start || !kofs || !fofs) {
        rc = ac_err(AC_ERR_NOMEM, "attention: out of memory for %d sequences", n);
        goto cleanup;
    }
    size_t nkt = 0, nflag = 0;
    double work = 0;
    for (int i = 0; i < n; i++) { /* each sequence's key blocks and flags, in argument order */
        kofs[i] = nkt, fofs[i] = nflag;
        nkt += ac_attn_kt_floats(&a[i]);
        nflag += (size_t)a[i].Hkv * ((a[i].L + BK - 1) / BK);
        work += (double)a[i].H * a[i].L * a[i].L * a[i].hd;
        order[i] = i;
    }
    for (int i = 1; i < n; i++) { /* longest first (insertion sort: stable, n is a batch) */
        const int o = order[i];
        int k = i;
        for (; k > 0 && a[order[k - 1]].L < a[o].L; k--) order[k] = order[k - 1];
        order[k] = o;
    }
    if (!kt) kt = owned = AC_ALIGNED_ALLOC(nkt * sizeof(float));
    flags = calloc(nflag ? nflag : 1, sizeof *flags);
    if (!kt || !flags) {
        rc = ac_err(AC_ERR_NOMEM, "attention: out of memory for the key blocks");
        goto cleanup;
    }
    start[0] = 0;
    for (int i = 0; i < n; i++) {
        const int o = order[i];
        calls[i].a = &a[o];
        calls[i].Kt = kt + kofs[o];
        calls[i].flag = flags + fofs[o];
        calls[i].P = NULL;
        calls[i].pool = NULL;
        start[i + 1] = start[i] + fused_ntask(&a[o]);
    }
    /* little work: the caller alone (a parallel step costs a barrier) */
    attn_multi am = {calls, start, n, work < 2e5 ? NULL : pool};
    ac_pool_run(am.pool, fused_multi_step, &am);
cleanup:
    free(owned);
    free(flags);
    free(calls);
    free(order);
    free(start);
    free(kofs);
    free(fofs);
    return rc;
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
            qk_tile(q, kt_, hd, a->scale, nk, S);
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

int ATTN_FN(ac_attn_scores)(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax) {
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

void ATTN_FN(ac_attn_apply)(const ac_attn_args *a, const float *P, ac_pool *pool) {
    apply_call ap = {a, P, (double)a->H * a->L * a->L * a->hd < 2e5 ? NULL : pool};
    ac_pool_run(ap.pool, apply_step, &ap);
}
