/* gemm_own.c — the project's own GEMMs, on the forward's thread pool with
 * dynamic scheduling and fused epilogues:
 *
 *   Y [M][N] = epilogue(X [M][K] . W^T)        W [N][K]
 *
 * This file: the driver (tasks of every job of a call handed out dynamically,
 * so a preempted thread costs one task, not a static share), the BF16 and F32
 * panel packing (called by the CPU backend's weight preparation, weights.c) and
 * the portable F32 task. The micro-kernels of each CPU level live
 * in their own files: gemm_avx512.c (F32 and BF16; layouts described there),
 * gemm_avx2.c (F32), gemm_neon.c (F32, aarch64), picked by the context's
 * level (ctx->level).
 *
 * Work: every job is cut into tasks of one panel (NR = 64 output columns) x a
 * block of rows. Every level sums each output element over k in order (one
 * FMA or multiply-add per k), independent of M, the task split and the thread
 * count: batched and single-sequence results are bitwise identical at every
 * level, and AVX2 and AVX-512 F32 products agree bitwise (the same FMAs in the
 * same order). */
#include "forward/forward.h"
#include "gemm_own.h"
#include "simd.h"
#include "util/common.h"
#include "util/cpu.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define AC_GEMM_X86 1
#endif

#define MR 6

int ac_f32_gemm_available(void) { return 1; /* every level has an own F32 task */ }

static int own_bf16_level(int level) { return level >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16 && ac_cpu_hw()->avx512bw; }

int ac_bf16_gemm_available(void) { return own_bf16_level(ac_cpu_level()); }

int ac_bf16_gemm_at(int level) { return own_bf16_level(level); }

static ac_gemm_task_fn task_f32_for(int level) {
#ifdef AC_GEMM_X86
    if (level >= AC_CPU_AVX512) return ac_gemm_task_f32_avx512;
    if (level >= AC_CPU_AVX2) return ac_gemm_task_f32_avx2;
#elif defined(__aarch64__)
    if (level >= AC_CPU_NEON) return ac_gemm_task_f32_neon;
#endif
    (void)level;
    return ac_gemm_task_f32_scalar;
}

const char *ac_own_gemm_kernel(int level, int bf16) {
    if (bf16 && own_bf16_level(level)) return "avx512-bf16";
#if defined(__aarch64__)
    return level >= AC_CPU_NEON ? "neon-f32" : "scalar-f32";
#endif
    return level >= AC_CPU_AVX512 ? "avx512-f32" : level >= AC_CPU_AVX2 ? "avx2-f32" : "scalar-f32";
}

size_t ac_bf16_packed_bytes(int n_out, int n_in) {
    size_t np = ((size_t)n_out + NR - 1) / NR;
    return np * NR * (size_t)n_in * sizeof(uint16_t);
}

int ac_bf16_pack(ac_mat *W) {
    const int N = W->n_out, K = W->n_in;
    if (K % 2) return ac_err(AC_ERR_UNSUPPORTED, "%s: odd row length %d cannot be packed in bf16 pairs", W->name, K);
    const int np = (N + NR - 1) / NR, kp = K / 2;
    uint16_t *P = AC_ALIGNED_ALLOC(ac_bf16_packed_bytes(N, K)); /* [np][kp][NR][2] */
    if (!P) return AC_ERR_NOMEM;
    int nomem = 0;
#pragma omp parallel
    {
        float *row = malloc((size_t)K * sizeof *row); /* [K] one converted row */
        uint16_t *rb = malloc((size_t)K * sizeof *rb);
        if (!row || !rb) {
#pragma omp atomic write
            nomem = 1;
        }
        /* whole panels per thread: the 64 rows of a panel interleave in its cache lines */
#pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < np; p++) {
            if (!row || !rb) continue;
            for (int c = 0; c < NR; c++) {
                const int n = p * NR + c;
                uint16_t *dst = P + (size_t)p * kp * NR * 2 + (size_t)c * 2;
                if (n < N) {
                    ac_row_to_f32(W->type, W->data, W->row_bytes, n, K, row);
                    ac_f32_to_bf16(rb, row, (size_t)K);
                } else {
                    memset(rb, 0, (size_t)K * sizeof *rb);
                }
                for (int k2 = 0; k2 < kp; k2++) memcpy(dst + (size_t)k2 * NR * 2, rb + 2 * k2, 2 * sizeof *rb);
            }
        }
        free(row);
        free(rb);
    }
    if (nomem) {
        free(P);
        return ac_err(AC_ERR_NOMEM, "out of memory packing %s", W->name);
    }
    W->packed = P;
    W->pack = AC_PACK_BF16;
    return AC_OK;
}

size_t ac_f32_panel_bytes(int n_out, int n_in) {
    size_t np = ((size_t)n_out + NR - 1) / NR;
    return np * NR * (size_t)n_in * sizeof(float);
}

int ac_f32_panel_pack(ac_mat *W) {
    const int N = W->n_out, K = W->n_in, np = (N + NR - 1) / NR;
    float *P = AC_ALIGNED_ALLOC(ac_f32_panel_bytes(N, K)); /* [np][K][NR] */
    if (!P) return ac_err(AC_ERR_NOMEM, "out of memory widening %s to f32 panels", W->name);
    int nomem = 0;
    if (W->type == GGML_F32) {
        /* a plain copy, on the calling thread: memory-bound (~10 ms for all-MiniLM-L6-v2's 42 MB),
         * where an OpenMP team's barriers cost far more on shared cores (measured: 0.5 s of spinning
         * for the 36 matrices of MiniLM next to other jobs); 64 rows read side by side, the
         * panel written in order */
        const float *src = (const float *)W->data; /* [N][K] */
        for (int p = 0; p < np; p++) {
            const float *rows[NR];
            for (int c = 0; c < NR; c++) rows[c] = src + (size_t)AC_MIN(p * NR + c, N - 1) * K; /* past N: the last row */
            float *dst = P + (size_t)p * K * NR;
            for (int k = 0; k < K; k++)
                for (int c = 0; c < NR; c++) dst[(size_t)k * NR + c] = rows[c][k];
        }
        goto done;
    }
#pragma omp parallel
    {
        float *row = malloc((size_t)K * sizeof *row); /* [K] one converted row */
        if (!row) {
#pragma omp atomic write
            nomem = 1;
        }
        /* whole panels per thread: the 64 rows of a panel interleave in its cache lines */
#pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < np; p++) {
            if (!row) continue;
            for (int c = 0; c < NR; c++) { /* rows past N repeat the last one, as the per-task transposes do */
                const int n = AC_MIN(p * NR + c, N - 1);
                if (c == 0 || p * NR + c < N) ac_row_to_f32(W->type, W->data, W->row_bytes, n, K, row);
                float *dst = P + (size_t)p * K * NR + c;
                for (int k = 0; k < K; k++) dst[(size_t)k * NR] = row[k];
            }
        }
        free(row);
    }
    if (nomem) {
        free(P);
        return ac_err(AC_ERR_NOMEM, "out of memory widening %s to f32 panels", W->name);
    }
done:
    W->packed = P;
    W->f32 = NULL;
    W->pack = AC_PACK_F32P;
    return AC_OK;
}

int ac_f16_panel_pack(ac_mat *W) {
    if (W->type != GGML_F16) return ac_err(AC_ERR_INTERNAL, "%s: f16 panels of a matrix that is not F16", W->name);
    const int N = W->n_out, K = W->n_in, np = (N + NR - 1) / NR;
    uint16_t *P = AC_ALIGNED_ALLOC((size_t)np * NR * K * sizeof *P); /* [np][K][NR] */
    if (!P) return ac_err(AC_ERR_NOMEM, "out of memory copying %s to f16 panels", W->name);
    for (int p = 0; p < np; p++) { /* 64 rows read side by side, the panel written in order */
        const uint16_t *rows[NR];
        for (int c = 0; c < NR; c++)
            rows[c] = (const uint16_t *)((const char *)W->data + (size_t)AC_MIN(p * NR + c, N - 1) * W->row_bytes);
        uint16_t *dst = P + (size_t)p * K * NR;
        for (int k = 0; k < K; k++)
            for (int c = 0; c < NR; c++) dst[(size_t)k * NR + c] = rows[c][k];
    }
    W->packed = P;
    W->f32 = NULL;
    W->pack = AC_PACK_F16P;
    return AC_OK;
}

/* ---- the portable F32 task -------------------------------------------------------------
 * P [K][NR] = the 64 rows of W from n0, transposed (rows past N repeat the last
 * one; their results are never stored); then tiles of 4 rows x 16 columns of
 * multiply-adds with k in order (16 x 4 sums: what a baseline x86-64 compiler
 * keeps in SSE registers). */
#define SR 4  /* rows per portable tile    */
#define SC 16 /* columns per portable tile */

static void pack_panel_c(const ac_mat *W, int n0, float *P) {
    const int N = W->n_out, K = W->n_in;
    for (int c = 0; c < NR; c++) {
        const float *src = W->f32 + (size_t)AC_MIN(n0 + c, N - 1) * K;
        for (int k = 0; k < K; k++) P[(size_t)k * NR + c] = src[k];
    }
}

static void tile_c(int mr, int K, const float *A, size_t lda, const float *P, float acc[SR][SC]) {
    float a[SR][SC];
    memset(a, 0, sizeof a);
    for (int k = 0; k < K; k++) {
        const float *b = P + (size_t)k * NR;
        for (int r = 0; r < SR; r++) {
            const float x = r < mr ? A[(size_t)r * lda + k] : 0.0f;
            for (int c = 0; c < SC; c++) a[r][c] += x * b[c];
        }
    }
    memcpy(acc, a, sizeof a);
}

void ac_gemm_task_f32_scalar(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx) {
    (void)nx;
    const int N = j->W->n_out, K = j->W->n_in, n0 = p * NR, nc = AC_MIN(NR, N - n0);
    const float *P = ac_f32_panel(j->W, p, pk), *Pu = NULL;
    if (P == pk) pack_panel_c(j->W, n0, pk);
    if (j->epi == AC_EPI_SWIGLU) {
        float *su = pk + (size_t)K * NR;
        if ((Pu = ac_f32_panel(j->W_up, p, su)) == su) pack_panel_c(j->W_up, n0, su);
    }
    float acc[SR][SC], up[SR][SC];
    for (int r0 = m0; r0 < m0 + nm; r0 += SR) {
        const int mr = AC_MIN(SR, m0 + nm - r0);
        const float *A = j->X->x + (size_t)r0 * K;
        for (int c0 = 0; c0 < nc; c0 += SC) {
            tile_c(mr, K, A, (size_t)K, P + c0, acc);
            if (j->epi == AC_EPI_SWIGLU) tile_c(mr, K, A, (size_t)K, Pu + c0, up);
            for (int r = 0; r < mr; r++) {
                const size_t row = (size_t)(r0 + r) * N + n0 + c0;
                for (int c = 0; c < SC && c0 + c < nc; c++) {
                    /* SWIGLU: acc holds the gate (silu's input), up the up projection */
                    float v = j->epi == AC_EPI_SWIGLU ? up[r][c] : acc[r][c];
                    if (j->bias) v += j->bias[n0 + c0 + c];
                    switch (j->epi) {
                    case AC_EPI_ACCUM: v += j->Y[row + c]; break;
                    case AC_EPI_GELU: v = 0.5f * v * (1.0f + ac_erf_c(v * 0.70710678118654752f)); break;
                    case AC_EPI_SWIGLU: v = acc[r][c] / (1.0f + ac_expf_c(-acc[r][c])) * v; break;
                    default: break;
                    }
                    if (j->Y) j->Y[row + c] = v;
                    if (j->Ybf) ac_f32_to_bf16(j->Ybf + row + c, &v, 1);
                }
            }
        }
    }
}

/* ---- the driver ------------------------------------------------------------------------------- */
typedef struct gemm_call {
    ac_gemm_job *jobs;
    int n_jobs, total;
    int start[16];    /* first task of each job */
    int mb[16];       /* rows per task of each job */
    int bmaj[16];     /* 1: the job's tasks are numbered row block by row block (see rows_first) */
    float **pk;       /* [nth] F32 panel scratch of each thread */
    ac_act *conv[16]; /* inputs to convert to bf16 first */
    int n_conv;
    ac_pool *pool;
    ac_gemm_task_fn task_f32, task_bf16; /* the level's tasks */
    const ac_mat *then[2]; /* ctx->gemm_then: the next call's first matrices */
} gemm_call;

/* an input not yet in bf16 (conv[0]), in chunks of 8 rows */
static void convert_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    gemm_call *g = v;
    ac_act *X = g->conv[0];
    const int nchunk = (X->M + 7) / 8;
    for (int c; (c = ac_pool_next(g->pool)) < nchunk;)
        for (int m = c * 8; m < AC_MIN(X->M, c * 8 + 8); m++)
            ac_f32_to_bf16(X->bf16 + (size_t)m * X->K, X->x + (size_t)m * X->K, (size_t)X->K);
}

/* Task t: its job i, panel p and row block b. */
static void task_at(const gemm_call *g, int t, int *i_out, int *p_out, int *b_out) {
    int i = g->n_jobs - 1;
    while (g->start[i] > t) i--;
    const ac_gemm_job *j = &g->jobs[i];
    const int mb = g->mb[i], nb = (j->X->M + mb - 1) / mb, np = (j->W->n_out + NR - 1) / NR, lt = t - g->start[i];
    *i_out = i;
    *p_out = g->bmaj[i] ? lt % np : lt / nb;
    *b_out = g->bmaj[i] ? lt / np : lt % nb;
}

/* The panels task t reads where they are read in place (F32P, F16P), for the task before it;
 * past the last task, the first panels of the next call's matrices (g->then) if known. */
static void next_of(const gemm_call *g, int t, ac_gemm_next *nx) {
    memset(nx, 0, sizeof *nx);
    const ac_mat *W[2] = {g->then[0], g->then[1]};
    int p = 0;
    if (t < g->total) {
        int i, b;
        task_at(g, t, &i, &p, &b);
        W[0] = g->jobs[i].W, W[1] = g->jobs[i].W_up;
    }
    for (int k = 0; k < 2; k++) {
        if (!W[k]) continue;
        const size_t esz = W[k]->pack == AC_PACK_F32P ? sizeof(float) : W[k]->pack == AC_PACK_F16P ? sizeof(uint16_t) : 0;
        if (!esz) continue; /* (transposed or packed per task: nothing in place to fetch) */
        nx->p[k] = (const char *)W[k]->packed + (size_t)p * W[k]->n_in * NR * esz;
        nx->bytes[k] = esz * (size_t)W[k]->n_in * NR;
    }
}

/* 1: every output column of panel p of job j is unwanted (j->skip): the panel is not computed. */
static int panel_skipped(const ac_gemm_job *j, int p) {
    if (!j->skip || j->skip_w < 1) return 0;
    const int c0 = p * NR, c1 = AC_MIN(j->W->n_out, c0 + NR);
    for (int b = c0 / j->skip_w; b * j->skip_w < c1; b++)
        if (!j->skip[b]) return 0;
    return 1;
}

static void gemm_step(void *v, int ith, int nth) {
    gemm_call *g = v;
    ac_gemm_next nx;
    for (int t; (t = ac_pool_next(g->pool)) < g->total;) {
        int i, p, b;
        task_at(g, t, &i, &p, &b);
        const ac_gemm_job *j = &g->jobs[i];
        const int mb = g->mb[i];
        if (panel_skipped(j, p)) continue; /* (its columns are not wanted: an empty task) */
        /* one thread runs the tasks in order: the next one's panels are known; with more, any
         * thread may take it: the guess is task t + nth (every thread at the pace of this one) */
        next_of(g, t + nth, &nx);
        if (j->W->pack == AC_PACK_BF16)
            g->task_bf16(j, p, b * mb, AC_MIN(mb, j->X->M - b * mb), g->pk ? g->pk[ith] : NULL, &nx);
        else g->task_f32(j, p, b * mb, AC_MIN(mb, j->X->M - b * mb), g->pk[ith], &nx);
    }
}

/* Rows per F32 task of a job of M rows on np panels. Each task packs (transposes) its panel
 * before using it, so the fewer row blocks the less packing: at most ceil(M / MBF) blocks (a
 * task then loops over sub-blocks of MBF rows on one packed panel), fewer while the job still
 * has 4 tasks per thread for the dynamic hand-out (e.g. 400 rows on 24 panels: one task per
 * panel, one pack, where blocks of MBF rows packed each panel 3 times; at 25 rows a pack is
 * ~1/3 of the task's time). A multiple of MR, so only a task's last row tile is partial. The
 * split changes no result: every output sums over k in order whatever its task. */
/* Whether a job's F32 tasks go row block by row block (every panel of a block of rows, then
 * the next block) rather than panel by panel: where X is far larger than W and than L2 (many
 * short texts in one batch: 4,500 rows of MiniLM are 7-27 MiB of X against 0.6-2.4 MiB of
 * W), so a block of rows stays in L2 while the panels pass over it, instead of all of X
 * streaming from memory once per panel (measured: 94 against 127 GFLOP per CPU-second on
 * MiniLM's Q projection at 4,500 rows, AVX2). The rows are then cut in blocks of MBF. */
static int rows_first(const ac_gemm_job *j) {
    const size_t xbytes = (size_t)j->X->M * j->W->n_in * sizeof(float);
    return xbytes > ((size_t)2 << 20) && j->X->M > 2 * j->W->n_out;
}

/* Where W is already in panels (AC_PACK_F32P: a task reads its panel in place, no pack), row
 * blocks cost nothing to add, so a job gets 8 tasks per thread and blocks down to 8 row tiles
 * (48 rows): the last tasks of a step, which the threads finish at different times, are shorter
 * (e.g. 400 rows on 6 panels: 18 tasks of 138 rows instead of 12 of 204). */
static int f32_rows_per_task(int M, int np, int nth, int in_panels) {
    const int per_thread = in_panels ? 8 : 4, rows_min = in_panels ? 8 * MR : MBF;
    const int most = (M + rows_min - 1) / rows_min, want = (per_thread * AC_MAX(nth, 1) + np - 1) / np;
    const int nb = AC_MAX(1, AC_MIN(most, want));
    const int mb = (M + nb - 1) / nb;
    return (mb + MR - 1) / MR * MR;
}

int ac_own_gemm_run(ac_ctx *ctx, ac_gemm_job *jobs, int n_jobs) {
    if (n_jobs > 16) return ac_err(AC_ERR_INTERNAL, "too many GEMM jobs in one call");
    gemm_call g = {jobs, n_jobs, 0, {0}, {0}, {0}, NULL, {0}, 0, ctx->pool, task_f32_for(ctx->level), NULL,
                   {ctx->gemm_then[0], ctx->gemm_then[1]}};
    for (int i = 0; i < n_jobs; i++)
        if (jobs[i].W->pack == AC_PACK_BF16 || (jobs[i].W_up && jobs[i].W_up->pack == AC_PACK_BF16)) {
            if (!own_bf16_level(ctx->level))
                return ac_err(AC_ERR_UNSUPPORTED, "%s: packed for AVX512-BF16, which level %s does not run",
                              jobs[i].W->name, ac_cpu_level_name(ctx->level));
#ifdef AC_GEMM_X86
            g.task_bf16 = ac_gemm_task_bf16_avx512;
#endif
        }
    /* (g.pool is what the steps take their task numbers from: NULL for a caller-only run) */
    int maxk = 0;
    for (int i = 0; i < n_jobs; i++) { /* task counts per job: panels x row blocks */
        const int f32 = jobs[i].W->pack != AC_PACK_BF16, np = (jobs[i].W->n_out + NR - 1) / NR;
        int np_run = 0; /* the panels computed (the tasks of skipped ones end at once) */
        for (int p = 0; p < np; p++) np_run += !panel_skipped(&jobs[i], p);
        g.bmaj[i] = f32 && rows_first(&jobs[i]);
        g.mb[i] = !f32 ? MB
                  : g.bmaj[i] ? MBF
                              : f32_rows_per_task(jobs[i].X->M, AC_MAX(np_run, 1), ctx->n_threads,
                                                  jobs[i].W->pack == AC_PACK_F32P &&
                                                      (!jobs[i].W_up || jobs[i].W_up->pack == AC_PACK_F32P));
        if (f32) maxk = AC_MAX(maxk, jobs[i].W->n_in);
        const int nb = (jobs[i].X->M + g.mb[i] - 1) / g.mb[i];
        g.start[i] = g.total;
        g.total += np * nb;
        ac_act *X = jobs[i].X;
        if (X->bf16_ok || jobs[i].W->pack != AC_PACK_BF16) continue;
        int seen = 0;
        for (int k = 0; k < g.n_conv; k++) seen |= g.conv[k] == X;
        if (!seen) g.conv[g.n_conv++] = X;
    }
    if (g.n_conv) {
        /* one input at a time keeps the task numbering simple */
        ac_act *all[16];
        int n = g.n_conv;
        memcpy(all, g.conv, sizeof all);
        for (int i = 0; i < n; i++) {
            g.conv[0] = all[i];
            g.n_conv = 1;
            ac_pool_run(ctx->pool, convert_step, &g);
            all[i]->bf16_ok = 1;
        }
        g.n_conv = 0;
    }
    if (maxk) { /* F32 panels: 2 x [K][NR] per thread (gate and up for SWIGLU) */
        int rc = ac_ctx_pack_scratch(ctx, (size_t)2 * maxk * NR, &g.pk);
        if (rc) return rc;
    }
    /* a single task, or little work: the caller alone (a parallel step costs a barrier) */
    double flops = 0;
    for (int i = 0; i < n_jobs; i++) flops += 2.0 * jobs[i].X->M * jobs[i].W->n_out * jobs[i].W->n_in;
    if (g.total == 1 || flops < 2e6) g.pool = NULL;
    ac_pool_run(g.pool, gemm_step, &g);
    return AC_OK;
}

