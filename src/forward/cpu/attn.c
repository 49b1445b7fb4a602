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
 * for Q K^T and 6 rows x 64 head dims for P V.
 *
 * The driver (attn_impl.h) is compiled once per CPU level with that level's
 * micro-kernels: this file (portable C, which the compiler vectorises for
 * the baseline), attn_avx2.c and attn_avx512.c (x86-64), attn_neon.c
 * (aarch64). The entry points below pick
 * one at each call from ac_cpu_level().
 *
 * Within a level a score is scale * sum_d q[d] k[d] in f32 with d in order, and
 * each value has one code path: results do not depend on the task split, the
 * thread count or a row's position. Across levels Q K^T and exp agree bitwise
 * between AVX2 and AVX-512 (FMAs in the same order); the softmax sums are
 * reduced in a different lane order, so maps differ in the last bits. */
#include "simd.h"
#include "util/cpu.h"

#define ATTN_FN(name) name##_scalar
#include "attn_impl.h"

/* S [MR][BK] = scale * q[r] . Kt[:, j] for the MR rows q[r] (each [hd]), at least for the
 * block's nk valid keys j < nk (a level may skip the padding columns past them). */
static inline void qk_tile(const float *const q[MR], const float *Kt, int hd, float scale, int nk, float *S) {
    (void)nk; /* every key of the block is computed */
    for (int r = 0; r < MR; r++) {
        float acc[BK] = {0};
        for (int d = 0; d < hd; d++) {
            const float qd = q[r][d];
            for (int j = 0; j < BK; j++) acc[j] += qd * Kt[(size_t)d * BK + j];
        }
        for (int j = 0; j < BK; j++) S[r * BK + j] = acc[j] * scale;
    }
}

/* O[r][0..w) += sum_{j < nk} p[r][j] * V[j][0..w), w <= 64, for MR rows. */
static inline void pv_tile(const float *const p[MR], int nk, const float *V, size_t ldv, int w, float *const O[MR]) {
    for (int r = 0; r < MR; r++) {
        float *o = O[r];
        for (int j = 0; j < nk; j++) {
            const float pj = p[r][j];
            const float *vr = V + (size_t)j * ldv;
            for (int c = 0; c < w; c++) o[c] += pj * vr[c];
        }
    }
}

/* Online-softmax update of one row of a key block: s [BK] raw scores, the first
 * nvalid of them visible, nk (>= nvalid) keys in the block. Updates the running max *m
 * and sum *l, overwrites s with p = exp(s - m_new) (0 past nvalid, at least up to nk;
 * columns past nk may be left as they are) and returns alpha = exp(m_old - m_new),
 * the factor that rescales the row's output accumulated so far. */
static inline float online_row(float *s, int nvalid, int nk, float *m, float *l) {
    (void)nk;
    const float m_old = *m;
    float mx = s[0];
    for (int j = 1; j < nvalid; j++) mx = s[j] > mx ? s[j] : mx;
    const float m_new = mx > m_old ? mx : m_old;
    float sum = 0.0f;
    for (int j = 0; j < nvalid; j++) {
        s[j] = ac_expf_c(s[j] - m_new);
        sum += s[j];
    }
    for (int j = nvalid; j < BK; j++) s[j] = 0.0f;
    const float alpha = ac_expf_c(m_old - m_new); /* exp(-inf) = 0 on the first block */
    *l = *l * alpha + sum;
    *m = m_new;
    return alpha;
}

/* In place: row[0..nv) = softmax, row[nv..L) = 0. */
static inline void softmax_row(float *row, int nv, int L) {
    float mx = row[0];
    for (int j = 1; j < nv; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < nv; j++) {
        row[j] = ac_expf_c(row[j] - mx);
        sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < nv; j++) row[j] *= inv;
    for (int j = nv; j < L; j++) row[j] = 0.0f;
}

/* ---- entry points: the level's driver ------------------------------------------------ */
int ac_attn_fused_avx2(const ac_attn_args *a, float *kt, ac_pool *pool);
int ac_attn_fused_multi_scalar(const ac_attn_args *a, int n, float *kt, ac_pool *pool);
int ac_attn_fused_multi_avx2(const ac_attn_args *a, int n, float *kt, ac_pool *pool);
int ac_attn_fused_multi_avx512(const ac_attn_args *a, int n, float *kt, ac_pool *pool);
int ac_attn_fused_multi_neon(const ac_attn_args *a, int n, float *kt, ac_pool *pool);
int ac_attn_scores_avx2(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax);
void ac_attn_apply_avx2(const ac_attn_args *a, const float *P, ac_pool *pool);
int ac_attn_fused_avx512(const ac_attn_args *a, float *kt, ac_pool *pool);
int ac_attn_scores_avx512(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax);
void ac_attn_apply_avx512(const ac_attn_args *a, const float *P, ac_pool *pool);
int ac_attn_fused_neon(const ac_attn_args *a, float *kt, ac_pool *pool);
int ac_attn_scores_neon(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax);
void ac_attn_apply_neon(const ac_attn_args *a, const float *P, ac_pool *pool);

size_t ac_attn_kt_floats(const ac_attn_args *a) {
    const size_t nkb = ((size_t)a->L + BK - 1) / BK;
    return (size_t)a->Hkv * nkb * (size_t)a->hd * BK;
}

#if defined(__x86_64__) || defined(__i386__)
#define AC_ATTN_X86 1
#endif

int ac_attn_fused(const ac_attn_args *a, float *kt, ac_pool *pool) {
#ifdef AC_ATTN_X86
    switch (ac_cpu_level()) {
    case AC_CPU_AVX512: return ac_attn_fused_avx512(a, kt, pool);
    case AC_CPU_AVX2: return ac_attn_fused_avx2(a, kt, pool);
    default: break;
    }
#elif defined(__aarch64__)
    if (ac_cpu_level() >= AC_CPU_NEON) return ac_attn_fused_neon(a, kt, pool);
#endif
    return ac_attn_fused_scalar(a, kt, pool);
}

int ac_attn_fused_multi(const ac_attn_args *a, int n, float *kt, ac_pool *pool) {
#ifdef AC_ATTN_X86
    switch (ac_cpu_level()) {
    case AC_CPU_AVX512: return ac_attn_fused_multi_avx512(a, n, kt, pool);
    case AC_CPU_AVX2: return ac_attn_fused_multi_avx2(a, n, kt, pool);
    default: break;
    }
#elif defined(__aarch64__)
    if (ac_cpu_level() >= AC_CPU_NEON) return ac_attn_fused_multi_neon(a, n, kt, pool);
#endif
    return ac_attn_fused_multi_scalar(a, n, kt, pool);
}

int ac_attn_scores(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax) {
#ifdef AC_ATTN_X86
    switch (ac_cpu_level()) {
    case AC_CPU_AVX512: return ac_attn_scores_avx512(a, P, kt, pool, t_qk, t_softmax);
    case AC_CPU_AVX2: return ac_attn_scores_avx2(a, P, kt, pool, t_qk, t_softmax);
    default: break;
    }
#elif defined(__aarch64__)
    if (ac_cpu_level() >= AC_CPU_NEON) return ac_attn_scores_neon(a, P, kt, pool, t_qk, t_softmax);
#endif
    return ac_attn_scores_scalar(a, P, kt, pool, t_qk, t_softmax);
}

void ac_attn_apply(const ac_attn_args *a, const float *P, ac_pool *pool) {
#ifdef AC_ATTN_X86
    switch (ac_cpu_level()) {
    case AC_CPU_AVX512: ac_attn_apply_avx512(a, P, pool); return;
    case AC_CPU_AVX2: ac_attn_apply_avx2(a, P, pool); return;
    default: break;
    }
#elif defined(__aarch64__)
    if (ac_cpu_level() >= AC_CPU_NEON) {
        ac_attn_apply_neon(a, P, pool);
        return;
    }
#endif
    ac_attn_apply_scalar(a, P, pool);
}
