/* forward.c — the CPU backend (backend.h: ac_backend_cpu): its contexts and
 * the prefill forward pass (llama2.c style: one clear pass over the model),
 * for llama/qwen2 (pre-RMSNorm, RoPE, GQA, SwiGLU) and bert (embeddings +
 * LayerNorm, post-LayerNorm blocks, GELU).
 *
 * Rows: T = sum of the sequences' lengths; sequence s owns rows
 * off[s] .. off[s] + L[s] - 1 of every [T][...] buffer. Projections are GEMMs
 * over all T rows; RoPE positions, masks and attention are per sequence. */
#define _POSIX_C_SOURCE 200809L
#include "forward/forward.h"
#include "forward/backend.h"
#include "util/common.h"
#include "util/cpu.h"

#include <math.h>
#include <stdio.h>
#include <omp.h>
#include <string.h>
#include <strings.h>

/* ---- stage names, params ---------------------------------------------------------------- */

const char *ac_stage_name(int stage) {
    static const char *const names[AC_STAGE_COUNT] = {"qkv", "qk", "softmax", "av", "attn", "o", "mlp", "norm", "head"};
    return stage >= 0 && stage < AC_STAGE_COUNT ? names[stage] : "?";
}

ac_ctx_params ac_ctx_default_params(void) {
    ac_ctx_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 0;
    p.gemm = AC_GEMM_AUTO;
    p.attn = AC_ATTN_FUSED;
    p.max_tokens = 0;
    p.profile = 0;
    return p;
}

int ac_ctx_get_profile(const ac_ctx *ctx, double *seconds) {
    if (!ctx || !seconds) return ac_err(AC_ERR_ARG, "ac_ctx_get_profile: NULL argument");
    memcpy(seconds, ctx->prof, sizeof ctx->prof);
    return AC_OK;
}

void ac_ctx_reset_profile(ac_ctx *ctx) {
    if (ctx) memset(ctx->prof, 0, sizeof ctx->prof);
}

const ac_model *ac_ctx_model(const ac_ctx *ctx) { return ctx ? ctx->loaded : NULL; }

/* "own avx2-f32", "onednn", ... for weights packed as `pack` */
static void backend_name(const ac_ctx *c, const ac_gemm_ops *ops, int pack, char *buf, size_t n) {
    if (ops == &ac_gemm_own_ops) snprintf(buf, n, "own %s", ac_own_gemm_kernel(c->level, pack == AC_PACK_BF16));
    else snprintf(buf, n, "%s", ops->name);
}

static const char *cpu_describe(const ac_ctx *c, char *buf, int n) {
    const ac_model *m = c->model;
    char f[48], q[48];
    backend_name(c, c->gemm_f32, AC_PACK_NONE, f, sizeof f);
    backend_name(c, c->gemm_q, m->pack, q, sizeof q);
    const char *how = m->pack == AC_PACK_BF16   ? "packed bf16"
                      : m->pack == AC_PACK_DNNL ? "packed bf16 (oneDNN layout)"
                      : m->pack == AC_PACK_F32  ? "widened to f32"
                      : m->pack == AC_PACK_F32P && m->hp.n_layer > 0 && m->layers[0].w_up.pack == AC_PACK_F16P
                          ? "F16 kept in f16 GEMM panels, widened by each task"
                      : m->pack == AC_PACK_F32P ? "widened to f32 GEMM panels"
                                                : "converted to f32 per call";
    const char *f32how = m->f32_panels ? "f32 weights, copied to GEMM panels" : "f32 weights";
    if (m->info.weight_type == GGML_F32)
        snprintf(buf, (size_t)n, "cpu %s; gemm %s (%s)", ac_cpu_level_name(c->level), f, f32how);
    else
        snprintf(buf, (size_t)n, "cpu %s; gemm %s (%s), %s (other weights, %s)%s", ac_cpu_level_name(c->level), f, f32how,
                 q, how, m->fast_fallback ? "; --fast: no AVX512-BF16 at this level, the exact f32 path runs" : "");
    return buf;
}

int ac_ctx_swap_attn_hook(ac_ctx *ctx, const ac_attn_hook *hook, ac_attn_hook *prev) {
    if (!ctx) return 0;
    const int had = ctx->has_hook;
    if (prev) *prev = ctx->hook;
    if (hook) {
        ctx->hook = *hook;
        ctx->has_hook = 1;
    } else {
        memset(&ctx->hook, 0, sizeof ctx->hook);
        ctx->has_hook = 0;
    }
    return had;
}

void ac_ctx_set_attn_hook(ac_ctx *ctx, const ac_attn_hook *hook) {
    ac_attn_hook old;
    if (ac_ctx_swap_attn_hook(ctx, hook, &old) && old.release) old.release(old.user);
    if (ctx) ac_gain_reset(&ctx->gain); /* a new cache: nothing timed yet */
}

int ac_ctx_get_attn_hook(const ac_ctx *ctx, ac_attn_hook *out) {
    if (!ctx || !ctx->has_hook) return 0;
    if (out) *out = ctx->hook;
    return 1;
}

int ac_ctx_swap_kv_hook(ac_ctx *ctx, const ac_kv_hook *hook, ac_kv_hook *prev) {
    if (!ctx) return 0;
    const int had = ctx->has_kv_hook;
    if (prev) *prev = ctx->kv_hook;
    if (hook) {
        ctx->kv_hook = *hook;
        ctx->has_kv_hook = 1;
    } else {
        memset(&ctx->kv_hook, 0, sizeof ctx->kv_hook);
        ctx->has_kv_hook = 0;
    }
    return had;
}

void ac_ctx_set_kv_hook(ac_ctx *ctx, const ac_kv_hook *hook) {
    ac_kv_hook old;
    if (ac_ctx_swap_kv_hook(ctx, hook, &old) && old.release) old.release(old.user);
}

int ac_ctx_get_kv_hook(const ac_ctx *ctx, ac_kv_hook *out) {
    if (!ctx || !ctx->has_kv_hook) return 0;
    if (out) *out = ctx->kv_hook;
    return 1;
}

int ac_ctx_gain_stats(const ac_ctx *ctx, ac_gain_stats *out) {
    if (!ctx || !out) return ac_err(AC_ERR_ARG, "ac_ctx_gain_stats: NULL argument");
    memset(out, 0, sizeof *out);
    const ac_gain *g = &ctx->gain;
    out->enabled = ctx->gain_on && ctx->params.gain_guard >= 0;
    out->bypassing = g->bypassing;
    out->calls = g->calls, out->bypassed = g->bypassed;
    out->probes_exact = g->probes_exact, out->probes_cached = g->probes_cached;
    out->s_per_token_exact = g->t_exact, out->s_per_token_cached = g->t_cached;
    return AC_OK;
}

int ac_ctx_last_plan(const ac_ctx *ctx, int n, ac_seq_plan *plan) {
    if (!ctx || n <= 0 || !plan) return ac_err(AC_ERR_ARG, "ac_ctx_last_plan: invalid argument");
    if (n != ctx->n_plan)
        return ac_err(AC_ERR_ARG, "ac_ctx_last_plan: %d sequences asked, the last successful forward had %d", n,
                      ctx->n_plan);
    memcpy(plan, ctx->plan, (size_t)n * sizeof *plan);
    return AC_OK;
}

/* ---- context --------------------------------------------------------------------------------- */

static const ac_gemm_ops *backend_by_id(int id) {
    switch (id) {
    case AC_GEMM_NAIVE: return &ac_gemm_naive_ops;
    case AC_GEMM_OWN: return &ac_gemm_own_ops;
    case AC_GEMM_OPENBLAS: return &ac_gemm_blas_ops;
#ifdef AC_HAVE_DNNL
    case AC_GEMM_DNNL: return &ac_gemm_dnnl_ops;
#endif
    default: return NULL;
    }
}

/* AC_GEMM=auto|openblas|onednn|naive overrides a ctx param left at AUTO. */
static int env_gemm(int *id) {
    const char *e = getenv("AC_GEMM");
    if (!e || !*e || !strcasecmp(e, "auto")) return AC_OK;
    if (!strcasecmp(e, "openblas") || !strcasecmp(e, "blas")) *id = AC_GEMM_OPENBLAS;
    else if (!strcasecmp(e, "onednn") || !strcasecmp(e, "dnnl")) *id = AC_GEMM_DNNL;
    else if (!strcasecmp(e, "naive")) *id = AC_GEMM_NAIVE;
    else if (!strcasecmp(e, "own")) *id = AC_GEMM_OWN;
    else if (!strcasecmp(e, "avx512")) {
        if (ac_cpu_level() < AC_CPU_AVX512)
            return ac_err(AC_ERR_UNSUPPORTED, "AC_GEMM=avx512: the CPU level in use is %s (AC_GEMM=own runs the own kernels at any level)",
                          ac_cpu_level_name(ac_cpu_level()));
        *id = AC_GEMM_OWN;
    } else return ac_err(AC_ERR_ARG, "AC_GEMM='%s': expected auto, own, avx512, openblas, onednn or naive", e);
    return AC_OK;
}

static void cpu_ctx_free(ac_ctx *c);

/* (p checked, max_tokens set by ac_ctx_new: backend.c) */
static int cpu_ctx_new(const ac_model *loaded, const ac_ctx_params *params, ac_ctx **out) {
    const ac_ctx_params p = *params;
    if (p.gemm < AC_GEMM_AUTO || p.gemm > AC_GEMM_OWN) return ac_err(AC_ERR_ARG, "ac_ctx_new: gemm backend %d", p.gemm);
    int gemm = p.gemm, rc;
    if ((rc = ac_cpu_check_env())) return rc;
    if (gemm == AC_GEMM_AUTO && (rc = env_gemm(&gemm))) return rc;
    const int level = ac_cpu_level();
    const ac_model *model; /* the weights in this context's layout */
    if ((rc = ac_cpu_weights(loaded, level, gemm, &model))) return rc;

    ac_ctx *c = AC_CALLOC(1, sizeof *c);
    if (!c) return AC_ERR_NOMEM;
    c->loaded = loaded;
    c->model = model;
    c->params = p;
    c->level = level;
    c->n_threads = p.n_threads ? p.n_threads : omp_get_num_procs();
    if ((rc = ac_pool_new(c->n_threads, &c->pool))) {
        free(c);
        return rc;
    }
    if (gemm == AC_GEMM_AUTO) {
        /* the own kernels at every level (measured faster than oneDNN and OpenBLAS at these
         * shapes, on the forward's own threads: no second thread set, and bitwise independent
         * of M); oneDNN for weights packed in its layout, OpenBLAS for unpacked ones */
        c->gemm_f32 = &ac_gemm_own_ops;
#ifdef AC_HAVE_DNNL
        const ac_gemm_ops *lib = &ac_gemm_dnnl_ops;
#else
        const ac_gemm_ops *lib = &ac_gemm_blas_ops;
#endif
        c->gemm_q = model->pack == AC_PACK_BF16 || model->pack == AC_PACK_F32 || model->pack == AC_PACK_F32P
                        ? &ac_gemm_own_ops
                    : model->pack == AC_PACK_DNNL ? lib
                                                  : &ac_gemm_blas_ops;
    } else if (gemm == AC_GEMM_OWN) {
        c->gemm_f32 = c->gemm_q = &ac_gemm_own_ops;
    } else {
        c->gemm_f32 = c->gemm_q = backend_by_id(gemm);
        if (!c->gemm_f32) {
            cpu_ctx_free(c);
            return ac_err(AC_ERR_UNSUPPORTED, "GEMM backend %d not available in this build", gemm);
        }
    }
    if (c->gemm_q == &ac_gemm_own_ops && model->pack == AC_PACK_BF16 && !(level >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16)) {
        cpu_ctx_free(c);
        return ac_err(AC_ERR_INTERNAL, "weights packed for AVX512-BF16 chosen for a context at CPU level %s",
                      ac_cpu_level_name(level));
    }
#ifdef AC_HAVE_DNNL
    /* oneDNN runs on OpenMP's threads: ours must not poll while those work */
    if ((c->gemm_f32 == &ac_gemm_dnnl_ops || c->gemm_q == &ac_gemm_dnnl_ops) && !getenv("AC_POOL_SPIN_US"))
        ac_pool_set_wait(c->pool, 20);
#endif
    *out = c;
    return AC_OK;
}

static void ws_free(ac_ctx *c) {
    free(c->x), free(c->xb), free(c->q), free(c->k), free(c->v), free(c->att), free(c->hb), free(c->hb2);
    free(c->act_bf16), free(c->rope_cs), free(c->x_bf), free(c->xb_bf), free(c->att_bf), free(c->hb_bf);
    c->x = c->xb = c->q = c->k = c->v = c->att = c->hb = c->hb2 = c->rope_cs = NULL;
    c->act_bf16 = c->x_bf = c->xb_bf = c->att_bf = c->hb_bf = NULL;
    c->cap_T = 0;
    c->rope_L = 0;
}

static void cpu_ctx_free(ac_ctx *c) {
    if (c->pk)
        for (int i = 0; i < ac_pool_threads(c->pool); i++) free(c->pk[i]);
    free(c->pk);
    ac_pool_free(c->pool);
    ws_free(c);
    free(c->P);
    free(c->wtile);
    free(c->rows);
    free(c->cls_tmp);
    free(c->kt);
    free(c->pkv), free(c->pq), free(c->po), free(c->hfull), free(c->x0full), free(c->pkv_tok);
    ac_dnnl_state_free(c->dnnl);
    free(c);
}

int ac_ctx_pack_scratch(ac_ctx *c, size_t n, float ***out) {
    const int nth = ac_pool_threads(c->pool);
    if (!c->pk && !(c->pk = AC_CALLOC((size_t)nth, sizeof *c->pk))) return AC_ERR_NOMEM;
    if (n > c->cap_pk) {
        for (int i = 0; i < nth; i++) {
            free(c->pk[i]);
            if (!(c->pk[i] = AC_ALIGNED_ALLOC(n * sizeof(float)))) {
                for (int k = 0; k < nth; k++) free(c->pk[k]), c->pk[k] = NULL;
                c->cap_pk = 0;
                return AC_ERR_NOMEM;
            }
        }
        c->cap_pk = n;
    }
    *out = c->pk;
    return AC_OK;
}

int ac_ctx_scratch_f32(float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return AC_OK;
    float *b = AC_ALIGNED_ALLOC(n * sizeof(float));
    if (!b) return AC_ERR_NOMEM;
    free(*buf);
    *buf = b;
    *cap = n;
    return AC_OK;
}

/* *buf [cap] int32 grown to at least n (contents not kept). 0 or an error code. */
static int grow_i32(int32_t **buf, int *cap, int n) {
    int32_t *b = AC_MALLOC((size_t)n * sizeof *b);
    if (!b) return AC_ERR_NOMEM;
    free(*buf);
    *buf = b;
    *cap = n;
    return AC_OK;
}

/* Make room for T rows. */
static int ws_reserve(ac_ctx *c, int T) {
    if (T <= c->cap_T) return AC_OK;
    const ac_hparams *hp = &c->model->hp;
    const size_t D = (size_t)hp->n_embd, QD = (size_t)hp->n_head * hp->head_dim,
                 KVD = (size_t)hp->n_head_kv * hp->head_dim, F = (size_t)hp->n_ff;
    const size_t W = AC_MAX(AC_MAX(D, QD), F);
    size_t cap = (size_t)T, tmp;
    if (!ac_mul_ok(cap, W * sizeof(float), &tmp))
        return ac_err(AC_ERR_NOMEM, "%d tokens: workspace size overflows", T);
    ws_free(c);
    c->x = AC_ALIGNED_ALLOC(cap * D * sizeof(float));
    c->xb = AC_ALIGNED_ALLOC(cap * D * sizeof(float));
    c->q = AC_ALIGNED_ALLOC(cap * QD * sizeof(float));
    c->k = AC_ALIGNED_ALLOC(cap * KVD * sizeof(float));
    c->v = AC_ALIGNED_ALLOC(cap * KVD * sizeof(float));
    c->att = AC_ALIGNED_ALLOC(cap * QD * sizeof(float));
    c->hb = AC_ALIGNED_ALLOC(cap * F * sizeof(float));
    c->hb2 = AC_ALIGNED_ALLOC(cap * F * sizeof(float));
    c->act_bf16 = AC_ALIGNED_ALLOC(cap * W * sizeof(uint16_t));
    c->x_bf = AC_ALIGNED_ALLOC(cap * D * sizeof(uint16_t));
    c->xb_bf = AC_ALIGNED_ALLOC(cap * D * sizeof(uint16_t));
    c->att_bf = AC_ALIGNED_ALLOC(cap * QD * sizeof(uint16_t));
    c->hb_bf = AC_ALIGNED_ALLOC(cap * F * sizeof(uint16_t));
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->act_bf16 || !c->x_bf ||
        !c->xb_bf || !c->att_bf || !c->hb_bf) {
        ws_free(c);
        return AC_ERR_NOMEM;
    }
    c->cap_T = T;
    return AC_OK;
}

void ac_model_rope_cs(const ac_model *m, int pos, float *cs) {
    const int half = m->hp.n_rot / 2;
    for (int i = 0; i < half; i++) {
        double inv = pow((double)m->hp.rope_base, -2.0 * i / m->hp.n_rot);
        if (m->rope_freqs) inv /= (double)m->rope_freqs[i];
        double th = pos * (double)m->hp.rope_scale * inv;
        cs[i * 2] = (float)cos(th);
        cs[i * 2 + 1] = (float)sin(th);
    }
}

/* cos/sin of every (position, pair) up to L positions: rope_cs [L][n_rot/2][2]. */
static int rope_reserve(ac_ctx *c, int L) {
    if (L <= c->rope_L) return AC_OK;
    const ac_model *m = c->model;
    const int half = m->hp.n_rot / 2;
    float *cs = AC_ALIGNED_ALLOC((size_t)L * half * 2 * sizeof(float));
    if (!cs) return AC_ERR_NOMEM;
    for (int pos = 0; pos < L; pos++) ac_model_rope_cs(m, pos, cs + (size_t)pos * half * 2);
    free(c->rope_cs);
    c->rope_cs = cs;
    c->rope_L = L;
    return AC_OK;
}

/* ---- helpers ------------------------------------------------------------------------------------ */

static inline void prof_lap(ac_ctx *c, int stage, double *t) {
    if (!c->params.profile) return;
    double now = ac_now();
    c->prof[stage] += now - *t;
    *t = now;
}

static const ac_gemm_ops *ops_for(const ac_ctx *c, const ac_mat *W) {
    return W->type == GGML_F32 ? c->gemm_f32 : c->gemm_q;
}

static int matmul(ac_ctx *c, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    return ops_for(c, W)->matmul(c, W, X, Y, bias, accumulate);
}

/* An activation X [M][K] with its bf16 copy (bf: [M][K]; ok: 1 if bf already holds it). */
static ac_act act(const float *x, uint16_t *bf, int M, int K, int ok) {
    ac_act a = {x, M, K, bf, ok};
    return a;
}

int ac_ctx_gemm_fast(const ac_ctx *c, const ac_mat *W) {
    if (ops_for(c, W) != &ac_gemm_own_ops) return 0;
    return W->pack == AC_PACK_BF16 || W->pack == AC_PACK_F32P || W->pack == AC_PACK_F16P || W->f32; /* (BF16 packing and level checked at creation) */
}

/* 1 if a GEMM on W reads only the bf16 copy of its input (the own BF16 kernel) */
static int reads_bf16_only(const ac_ctx *c, const ac_mat *W) {
    return W->pack == AC_PACK_BF16 && ac_ctx_gemm_fast(c, W);
}

/* ---- row-parallel steps on the context's pool ------------------------------------------------ */
typedef struct rows_call {
    ac_ctx *c;
    ac_row_fn fn;
    const void *arg;
    int n, chunk;
} rows_call;

static void rows_step(void *v, int ith, int nth) {
    (void)ith, (void)nth;
    rows_call *rc = v;
    const int nchunk = (rc->n + rc->chunk - 1) / rc->chunk;
    for (int ch; (ch = ac_pool_next(rc->c->pool)) < nchunk;)
        rc->fn(rc->c, rc->arg, ch * rc->chunk, AC_MIN(rc->n, (ch + 1) * rc->chunk));
}

/* fn over rows 0..n-1 of width elements each, in dynamic chunks; small jobs run on
 * the caller alone (a parallel step costs a barrier). */
void ac_ctx_par_rows(ac_ctx *c, int n, int width, ac_row_fn fn, const void *arg) {
    const int nth = ac_pool_threads(c->pool);
    if (nth == 1 || (size_t)n * (size_t)width < 32768) {
        fn(c, arg, 0, n);
        return;
    }
    rows_call rc = {c, fn, arg, n, AC_MAX(1, n / (4 * nth))};
    ac_pool_run(c->pool, rows_step, &rc);
}

/* rows of a generic job's epilogue: SWIGLU (gate in Y, up in hb2) or GELU */
static void epi_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    const ac_gemm_job *j = arg;
    const int N = j->W->n_out;
    for (int m = r0; m < r1; m++) {
        if (j->epi == AC_EPI_SWIGLU) ac_silu_mul(j->Y + (size_t)m * N, c->hb2 + (size_t)m * N, N);
        else ac_gelu_erf(j->Y + (size_t)m * N, N);
    }
}

static void bf16_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    (void)c;
    const ac_gemm_job *j = arg;
    const int N = j->W->n_out;
    for (int m = r0; m < r1; m++) ac_f32_to_bf16(j->Ybf + (size_t)m * N, j->Y + (size_t)m * N, (size_t)N);
}

/* One job on the generic backends: the product, then the epilogue as plain loops. */
static int gemm_generic(ac_ctx *c, ac_gemm_job *j) {
    const int M = j->X->M, N = j->W->n_out;
    int rc;
    if (!j->Y) return ac_err(AC_ERR_INTERNAL, "GEMM job on %s without an f32 output", j->W->name);
    switch (j->epi) {
    case AC_EPI_ACCUM: rc = matmul(c, j->W, j->X, j->Y, j->bias, 1); break;
    case AC_EPI_SWIGLU:
        if ((rc = matmul(c, j->W, j->X, j->Y, NULL, 0)) || (rc = matmul(c, j->W_up, j->X, c->hb2, NULL, 0))) break;
        ac_ctx_par_rows(c, M, N, epi_rows, j);
        break;
    case AC_EPI_GELU:
        if ((rc = matmul(c, j->W, j->X, j->Y, j->bias, 0))) break;
        ac_ctx_par_rows(c, M, N, epi_rows, j);
        break;
    default: rc = matmul(c, j->W, j->X, j->Y, j->bias, 0); break;
    }
    if (rc == AC_OK && j->Ybf) ac_ctx_par_rows(c, M, N, bf16_rows, j);
    return rc;
}

int ac_ctx_gemm(ac_ctx *c, ac_gemm_job *jobs, int n_jobs) {
    ac_gemm_job fast[16];
    int nf = 0, rc;
    for (int i = 0; i < n_jobs; i++) {
        ac_gemm_job *j = &jobs[i];
        if (nf < 16 && ac_ctx_gemm_fast(c, j->W) && (!j->W_up || ac_ctx_gemm_fast(c, j->W_up))) fast[nf++] = *j;
        else if ((rc = gemm_generic(c, j))) return rc;
    }
    return nf ? ac_own_gemm_run(c, fast, nf) : AC_OK;
}

/* The own kernels behind the plain backend interface (one job). */
static int own_matmul(ac_ctx *c, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    if (!ac_ctx_gemm_fast(c, W)) return ac_gemm_blas_ops.matmul(c, W, X, Y, bias, accumulate);
    ac_gemm_job j = {W, NULL, X, Y, NULL, bias, accumulate ? AC_EPI_ACCUM : AC_EPI_STORE, NULL, 0};
    return ac_own_gemm_run(c, &j, 1);
}

const ac_gemm_ops ac_gemm_own_ops = {"own", AC_GEMM_OWN, own_matmul};

/* embedding row of token id into dst [D] */
static void embed_row(const ac_model *m, int32_t id, float *dst) {
    const ac_gguf_tensor *t = m->tok_embd;
    ac_row_to_f32(t->type, t->data, ggml_row_bytes(t->type, t->ne[0]), id, t->ne[0], dst);
}

/* x [D] = the input embedding of token `id` at position `pos`: its row of the
 * token table, and for BERT + token type 0 + position `pos`, then the
 * embedding LayerNorm; tmp [D] is scratch (BERT only). The one definition that
 * ac_forward (embed_rows) and ac_model_layer0_states share: cache keys are
 * computed from the latter and must match the forward pass bitwise. */
static void embed_token(const ac_model *m, int32_t id, int pos, float *x, float *tmp) {
    const int D = m->hp.n_embd;
    embed_row(m, id, x);
    if (m->info.arch != AC_ARCH_BERT) return;
    if (m->type_embd0)
        for (int d = 0; d < D; d++) x[d] += m->type_embd0[d];
    const ac_gguf_tensor *pt = m->pos_embd;
    ac_row_to_f32(pt->type, pt->data, ggml_row_bytes(pt->type, D), pos, D, tmp);
    for (int d = 0; d < D; d++) x[d] += tmp[d];
    ac_layernorm(x, x, m->embd_norm_w, m->embd_norm_b, D, m->hp.norm_eps);
}

typedef struct fwd_plan {
    int n_seq, T;
    const ac_seq *seqs;
    int *off;             /* [n_seq] first row of each sequence */
    const float **maps;   /* [n_seq] supplied attention maps of the current layer */
    int *srv;             /* [n_seq] rows [0, srv) served by the hook's apply (compressed maps);
                             rows [srv, L) computed (0 < srv < L only for causal models) */
    uint8_t *rec;         /* [n_seq] 1: record the map of this site */
    uint8_t *hpart;       /* [n_seq] 1: the hook serves only some heads of this site (serve_heads) */
    uint8_t *hmask;       /* [n_seq][n_head] those heads (1: from the hook's maps), when hpart */
    uint8_t *kvmask;      /* [n_seq][n_head_kv] 1: every query head of K/V head g served (its K not
                             projected), when hpart */
    int *row_seq;         /* [T] sequence of each row */
    int *row_pos;         /* [T] position of each row in its sequence */
    int att_bf_ok;        /* 1: the attention wrote the bf16 copy of every row (no hook apply) */
    /* the prefix cache: sequence s computes only its rows [first[s], L); T counts computed
     * rows, off[] indexes them; off_full[] / T_full count every row */
    int kv_on;            /* 1: the prefix hook takes part in this call (causal model) */
    int *first;           /* [n_seq] rows [0, first) taken from the prefix cache */
    int *off_full;        /* [n_seq] first row of each sequence among all T_full rows */
    int T_full;
    size_t tok_floats;    /* floats per row of c->pkv: n_layer * 2 * kvd + n_embd */
    int keep;             /* 1: one sequence, its rows laid out for c->pkv_ld rows and kept after the call */
} fwd_plan;

/* Sequence s's rows in c->pkv (kv_on): K/V of every layer and final hidden states. */
static ac_kv_rows seq_rows(const ac_ctx *c, const fwd_plan *pl, int s) {
    const ac_hparams *hp = &c->model->hp;
    const int L = pl->seqs[s].n_tokens, kvd = hp->n_head_kv * hp->head_dim;
    const int ld = pl->keep ? c->pkv_ld : L;
    float *base = c->pkv + (size_t)pl->off_full[s] * pl->tok_floats;
    ac_kv_rows r = {base, base + (size_t)hp->n_layer * 2 * ld * kvd, L, kvd, hp->n_layer, hp->n_embd, ld, 0, 0};
    return r;
}

/* No Q or K projected for sequence s (a supplied map, or every row of every head served). */
static int qk_none(const fwd_plan *pl, int s) {
    return pl->maps[s] || (pl->srv[s] >= pl->seqs[s].n_tokens && !pl->hpart[s]);
}
/* Computed rows at the start of sequence s that need no query (served by the hook's apply for
 * every head; a site served per head needs every row's query for its computed heads). */
static int q_skip(const fwd_plan *pl, int s) {
    return pl->srv[s] > pl->first[s] && !pl->hpart[s] ? pl->srv[s] - pl->first[s] : 0;
}



/* RoPE of the Q and K rows of the sequences that computed them (row positions). */
static void rope_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    const fwd_plan *pl = arg;
    const ac_hparams *hp = &c->model->hp;
    const int QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    for (int r = r0; r < r1; r++) {
        const int s = pl->row_seq[r], pos = pl->row_pos[r];
        if (qk_none(pl, s)) continue;
        const float *cs = c->rope_cs + (size_t)pos * hp->n_rot;
        if (pos >= pl->srv[s] || pl->hpart[s]) ac_rope_row(c->q + (size_t)r * QD, hp->n_head, hp->head_dim, hp->n_rot, hp->rope_neox, cs);
        ac_rope_row(c->k + (size_t)r * KVD, hp->n_head_kv, hp->head_dim, hp->n_rot, hp->rope_neox, cs);
    }
}

/* Q, K, V projections (+ RoPE for decoders): V for every row; Q and K only for
 * the rows of sequences without a supplied map, as GEMMs over runs of
 * consecutive such sequences; a partly served sequence (rows [0, srv) from
 * the hook) projects K for all its rows and Q for rows [srv, L) only; a sequence
 * served per head (hpart) on every row is a run of its own whose Q and K GEMMs skip the
 * columns of the served heads (ac_gemm_job.skip: whole 64-column panels; the computed heads'
 * columns are bitwise what the full projection gives). All of them run as one parallel
 * region when the weights are packed for the BF16 kernel. X: [T][D] input. */
static int project_qkv(ac_ctx *c, const ac_layer *L, ac_act *X, const fwd_plan *pl) {
    const ac_model *m = c->model;
    const ac_hparams *hp = &m->hp;
    const int D = hp->n_embd, QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    ac_gemm_job jobs[16];
    ac_act sub[8];
    int nj = 0, ns = 0, rc;
    jobs[nj++] = (ac_gemm_job){&L->wv, NULL, X, c->v, NULL, L->bv, AC_EPI_STORE, NULL, 0};
    for (int s = 0; s < pl->n_seq;) {
        if (qk_none(pl, s)) {
            s++;
            continue;
        }
        int e = s + 1, part = q_skip(pl, s); /* a partly served sequence is a run of its own */
        const int alone = part || pl->hpart[s];
        while (!alone && e < pl->n_seq && !qk_none(pl, e) && !q_skip(pl, e) && !pl->hpart[e]) e++;
        /* (a site whose last rows are computed for every head, srv < L, projects them all) */
        const int hskip = pl->hpart[s] && pl->srv[s] >= pl->seqs[s].n_tokens;
        const uint8_t *qskip = hskip ? pl->hmask + (size_t)s * hp->n_head : NULL;
        const uint8_t *kskip = hskip ? pl->kvmask + (size_t)s * hp->n_head_kv : NULL;
        const int r0 = pl->off[s], r1 = e < pl->n_seq ? pl->off[e] : pl->T;
        if (ns >= 7) { /* flush a full job list */
            if ((rc = ac_ctx_gemm(c, jobs, nj))) return rc;
            nj = ns = 0;
        }
        ac_act *a = &sub[ns++];
        *a = r0 == 0 && r1 == pl->T ? *X : act(X->x + (size_t)r0 * D, X->bf16 + (size_t)r0 * D, r1 - r0, D, X->bf16_ok);
        ac_act *aq = a;
        if (part) {
            aq = &sub[ns++];
            *aq = act(X->x + (size_t)(r0 + part) * D, X->bf16 + (size_t)(r0 + part) * D, r1 - r0 - part, D, X->bf16_ok);
        }
        jobs[nj++] = (ac_gemm_job){&L->wq, NULL, aq, c->q + (size_t)(r0 + part) * QD, NULL, L->bq, AC_EPI_STORE,
                                   qskip, hp->head_dim};
        jobs[nj++] = (ac_gemm_job){&L->wk, NULL, a, c->k + (size_t)r0 * KVD, NULL, L->bk, AC_EPI_STORE,
                                   kskip, hp->head_dim};
        s = e;
    }
    if (nj && (rc = ac_ctx_gemm(c, jobs, nj))) return rc;
    if (m->info.arch != AC_ARCH_BERT) ac_ctx_par_rows(c, pl->T, QD + KVD, rope_rows, pl);
    return AC_OK;
}

/* The hook's view of (layer il, sequence s). */
static ac_attn_site make_site(const ac_ctx *c, const fwd_plan *pl, int il, int s, const ac_act *X) {
    const ac_hparams *hp = &c->model->hp;
    const int P = pl->first[s];
    const float *x = P == 0 ? X->x + (size_t)pl->off[s] * hp->n_embd : il == 0 ? c->x0full : NULL;
    ac_attn_site site = {.layer = il, .seq = s, .tokens = pl->seqs[s].tokens, .n_tokens = pl->seqs[s].n_tokens,
                         .n_head = hp->n_head, .causal = hp->causal, .x = x, .first = P, .summary = NULL,
                         .exact_from = ac_ctx_exact_from(c, s), .heads = NULL};
    return site;
}

/* Attention of a sequence whose rows [0, P) came from the prefix cache: its
 * queries [q0, L) (q0 = P, or past the rows the hook serves) over the keys and
 * values of every row, the cached ones included (c->pkv), through per-sequence
 * scratch (the fused kernel indexes q and out by row of the sequence). */
static int attend_after_prefix(ac_ctx *c, int il, int s, fwd_plan *pl, const ac_act *X, double *tp) {
    const ac_hparams *hp = &c->model->hp;
    const int QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    const int L = pl->seqs[s].n_tokens, P = pl->first[s], o = pl->off[s];
    const int q0 = AC_MAX(P, pl->srv[s]); /* srv <= L-1 under the prefix cache */
    const ac_kv_rows kr = seq_rows(c, pl, s);
    float *K = kr.kv + (size_t)2 * il * kr.ld * KVD, *V = K + (size_t)kr.ld * KVD; /* [L][KVD] each */
    int rc;
    if ((rc = ac_ctx_scratch_f32(&c->pq, &c->cap_pq, (size_t)L * QD)) ||
        (rc = ac_ctx_scratch_f32(&c->po, &c->cap_po, (size_t)L * QD)))
        return rc;
    for (int t = q0; t < L; t++) memcpy(c->pq + (size_t)t * QD, c->q + (size_t)(o + t - P) * QD, (size_t)QD * sizeof(float));
    ac_attn_args aa = {c->pq, K, V, c->po, L, hp->n_head, hp->n_head_kv, hp->head_dim, QD, KVD,
                       hp->causal, 1.0f / sqrtf((float)hp->head_dim), NULL, q0, 0, 0, 0, NULL};
    if (pl->srv[s] > P) { /* rows [P, srv) from the attention-map cache (it writes rows [0, srv)) */
        ac_attn_site site = make_site(c, pl, il, s, X);
        site.x = NULL; /* (layer 0's whole-sequence states were given to `reuse` only) */
        if ((rc = c->hook.apply(c->hook.user, &site, pl->srv[s], V, KVD, hp->n_head_kv, hp->head_dim, c->po, QD)) !=
            AC_OK)
            return ac_err_prefix(rc, "attention hook apply (layer %d, sequence %d)", il, s);
        prof_lap(c, AC_STAGE_AV, tp);
    }
    if ((rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, ac_attn_kt_floats(&aa)))) return rc;
    if ((rc = ac_attn_fused(&aa, c->kt, c->pool))) return rc;
    memcpy(c->att + (size_t)o * QD, c->po + (size_t)P * QD, (size_t)(L - P) * QD * sizeof(float));
    prof_lap(c, AC_STAGE_ATTN, tp);
    return AC_OK;
}

/* Attention of one site under the hook's per-head spans (ac_attn_heads).
 * Returns 1 when done that way, 0 when the hook restricts no head (the caller
 * runs the usual kernel), -rc on an error. */
static int attn_spans(ac_ctx *c, const ac_attn_args *aa, const ac_attn_site *site) {
    int span[AC_ATTN_SPAN_HEADS], n_sink = 0, n_end = 0;
    if (aa->H > AC_ATTN_SPAN_HEADS) return 0;
    for (int h = 0; h < aa->H; h++) span[h] = 0;
    if (c->hook.head_span(c->hook.user, site, span, &n_sink, &n_end) <= 0) return 0;
    const int rc = ac_attn_heads(aa, span, n_sink, n_end, c->kt, c->pool);
    return rc < 0 ? 0 : rc > 0 ? -rc : 1;
}

/* A site served per head (pl->hpart): after the hook's apply wrote the served heads' rows
 * [0, srv), the fused kernel runs every other head over all rows (the served ones skipped), then,
 * when srv < L, the served heads alone over rows [srv, L). A computed head is bitwise what the
 * exact forward gives it (the kernel's tasks are per head and row block). */
static int attn_unserved_heads(ac_ctx *c, const ac_attn_args *aa, const uint8_t *mask, int srv) {
    ac_attn_args a = *aa;
    a.out_bf = NULL;
    a.q0 = 0;
    a.skip = mask;
    int rc = ac_attn_fused(&a, c->kt, c->pool);
    if (rc || srv >= aa->L) return rc;
    uint8_t inv[AC_ATTN_SPAN_HEADS];
    for (int h = 0; h < aa->H; h++) inv[h] = !mask[h];
    a.q0 = srv;
    a.skip = inv;
    return ac_attn_fused(&a, c->kt, c->pool);
}

/* Whether GEMM inputs are read in bf16 (weights packed for a bf16 kernel at load): else the
 * norms' and the attention's bf16 copies are never read, and not written (2% of MiniLM's exact
 * time at AVX2). */
static int bf16_inputs(const ac_ctx *c) { return c->model->pack == AC_PACK_BF16 || c->model->pack == AC_PACK_DNNL; }

/* Whether sequence s takes the plain fused attention: no cached prefix, no served rows, no
 * supplied map, not recorded, not materialised, no per-head spans (spans_hook: the hook has them). */
static int plain_fused(const ac_ctx *c, const fwd_plan *pl, int s, int spans_hook) {
    return !pl->first[s] && !pl->srv[s] && !pl->maps[s] && !pl->rec[s] && c->params.attn != AC_ATTN_MATERIALIZED &&
           !spans_hook;
}

/* Q, K, V and attention of one layer; X: [T][D] input of the projections. Result in c->att. */
static int attention_block(ac_ctx *c, int il, const ac_layer *L, ac_act *X, fwd_plan *pl, double *tp) {
    const ac_model *m = c->model;
    const ac_hparams *hp = &m->hp;
    const int QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    int rc;
    /* ask the hook which sequences come with a map */
    for (int s = 0; s < pl->n_seq; s++) {
        pl->maps[s] = NULL;
        pl->rec[s] = 0;
        pl->srv[s] = 0;
        pl->hpart[s] = 0;
        if (!c->has_hook) continue;
        const int n = pl->seqs[s].n_tokens, P = pl->first[s];
        if (il == 0 && P > 0 && c->hook.reuse && /* the hook's site.x: every row's layer-0 states */
            ((rc = ac_ctx_scratch_f32(&c->x0full, &c->cap_x0full, (size_t)n * hp->n_embd)) ||
             (rc = ac_model_layer0_states(m, pl->seqs[s].tokens, n, c->x0full))))
            return rc;
        ac_attn_site site = make_site(c, pl, il, s, X);
        if (c->hook.supply) pl->maps[s] = c->hook.supply(c->hook.user, &site); /* (never with kv_on) */
        if (!pl->maps[s] && c->hook.reuse && c->hook.apply) {
            int r = c->hook.reuse(c->hook.user, &site);
            r = r < 0 ? 0 : r > n ? n : r;
            if (r < n && !hp->causal) r = 0; /* bidirectional rows depend on every token: all or none */
            if (pl->kv_on && r > n - 1) r = n - 1; /* K of every computed row goes to the prefix cache */
            if (r <= P) r = 0;                     /* nothing past the cached rows */
            if (r > 0 && P == 0 && c->hook.serve_heads && hp->n_head <= AC_ATTN_SPAN_HEADS) {
                uint8_t *mask = pl->hmask + (size_t)s * hp->n_head;
                memset(mask, 1, (size_t)hp->n_head);
                const int nh = c->hook.serve_heads(c->hook.user, &site, mask);
                if (nh <= 0) r = 0; /* no head served after all: the site is computed */
                else if (nh < hp->n_head) {
                    pl->hpart[s] = 1;
                    uint8_t *kvm = pl->kvmask + (size_t)s * hp->n_head_kv;
                    const int grp = hp->n_head / hp->n_head_kv;
                    for (int g = 0; g < hp->n_head_kv; g++) {
                        kvm[g] = 1;
                        for (int h = g * grp; h < (g + 1) * grp; h++) kvm[g] &= mask[h] != 0;
                    }
                }
            }
            pl->srv[s] = r;
        }
        if (pl->maps[s] || pl->srv[s]) {
            ac_seq_plan *sp = &c->plan[s];
            sp->map_layers++;
            sp->map_rows = AC_MAX(sp->map_rows, pl->maps[s] ? n : pl->srv[s] - P);
        }
        if (pl->srv[s]) continue;
        if (!pl->maps[s] && c->hook.record)
            pl->rec[s] = c->hook.want_record ? c->hook.want_record(c->hook.user, &site) != 0 : 1;
    }
    if ((rc = project_qkv(c, L, X, pl))) return rc;
    if (pl->kv_on) /* this layer's K (after RoPE) and V rows of every sequence, after its cached ones */
        for (int s = 0; s < pl->n_seq; s++) {
            const ac_kv_rows kr = seq_rows(c, pl, s);
            const int n = kr.L, P = pl->first[s];
            float *K = kr.kv + (size_t)2 * il * kr.ld * KVD, *V = K + (size_t)kr.ld * KVD;
            memcpy(K + (size_t)P * KVD, c->k + (size_t)pl->off[s] * KVD, (size_t)(n - P) * KVD * sizeof(float));
            memcpy(V + (size_t)P * KVD, c->v + (size_t)pl->off[s] * KVD, (size_t)(n - P) * KVD * sizeof(float));
        }
    prof_lap(c, AC_STAGE_QKV, tp);
    /* the attention writes the bf16 copy of its output only where a GEMM reads it */
    pl->att_bf_ok = bf16_inputs(c);
    for (int s = 0; s < pl->n_seq; s++) pl->att_bf_ok &= !pl->srv[s] && !pl->first[s];

    /* the sequences on the plain fused path (no prefix, served rows, map, recording or per-head
     * spans): all in one parallel step */
    const int spans_hook = c->has_hook && c->hook.head_span != NULL;
    int n_plain = 0;
    for (int s = 0; s < pl->n_seq; s++) n_plain += plain_fused(c, pl, s, spans_hook);
    if (n_plain) {
        ac_attn_args *aas = AC_MALLOC((size_t)n_plain * sizeof *aas);
        if (!aas) return ac_err(AC_ERR_NOMEM, "out of memory for the attention of %d sequences", n_plain);
        size_t nkt = 0;
        for (int s = 0, i = 0; s < pl->n_seq; s++) {
            if (!plain_fused(c, pl, s, spans_hook)) continue;
            const int o = pl->off[s];
            ac_attn_args aa = {c->q + (size_t)o * QD, c->k + (size_t)o * KVD, c->v + (size_t)o * KVD,
                               c->att + (size_t)o * QD, pl->seqs[s].n_tokens, hp->n_head, hp->n_head_kv, hp->head_dim,
                               QD, KVD, hp->causal, 1.0f / sqrtf((float)hp->head_dim),
                               bf16_inputs(c) ? c->att_bf + (size_t)o * QD : NULL, 0, 0, 0, 0, NULL};
            aas[i++] = aa;
            nkt += ac_attn_kt_floats(&aa);
        }
        rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, nkt);
        if (!rc) rc = ac_attn_fused_multi(aas, n_plain, c->kt, c->pool);
        free(aas);
        if (rc) return rc;
        prof_lap(c, AC_STAGE_ATTN, tp);
    }
    for (int s = 0; s < pl->n_seq; s++) {
        const int o = pl->off[s], n = pl->seqs[s].n_tokens;
        if (plain_fused(c, pl, s, spans_hook)) continue; /* done above */
        if (pl->first[s]) {
            if ((rc = attend_after_prefix(c, il, s, pl, X, tp))) return rc;
            continue;
        }
        ac_attn_args aa = {c->q + (size_t)o * QD, c->k + (size_t)o * KVD, c->v + (size_t)o * KVD,
                           c->att + (size_t)o * QD, n, hp->n_head, hp->n_head_kv, hp->head_dim, QD, KVD,
                           hp->causal, 1.0f / sqrtf((float)hp->head_dim),
                           bf16_inputs(c) ? c->att_bf + (size_t)o * QD : NULL, 0, 0, 0, 0, NULL};
        if (pl->srv[s]) {
            ac_attn_site site = make_site(c, pl, il, s, X);
            if (pl->hpart[s]) site.heads = pl->hmask + (size_t)s * hp->n_head;
            if ((rc = c->hook.apply(c->hook.user, &site, pl->srv[s], aa.v, KVD, hp->n_head_kv, hp->head_dim, aa.out,
                                    QD)) != AC_OK)
                return ac_err_prefix(rc, "attention hook apply (layer %d, sequence %d)", il, s);
            prof_lap(c, AC_STAGE_AV, tp);
            if (pl->hpart[s]) { /* the heads not served (and the served ones' rows past srv): exact */
                if ((rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, ac_attn_kt_floats(&aa)))) return rc;
                if ((rc = attn_unserved_heads(c, &aa, site.heads, pl->srv[s]))) return rc;
                prof_lap(c, AC_STAGE_ATTN, tp);
            } else if (pl->srv[s] < n) { /* the rows past the served ones: exact, over every key */
                aa.q0 = pl->srv[s];
                aa.out_bf = NULL;
                if ((rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, ac_attn_kt_floats(&aa)))) return rc;
                if ((rc = ac_attn_fused(&aa, c->kt, c->pool))) return rc;
                prof_lap(c, AC_STAGE_ATTN, tp);
            }
        } else if (pl->maps[s]) {
            ac_attn_apply(&aa, pl->maps[s], c->pool);
            prof_lap(c, AC_STAGE_AV, tp);
        } else if (pl->rec[s] || c->params.attn == AC_ATTN_MATERIALIZED) {
            size_t need = (size_t)hp->n_head * n * n;
            if ((rc = ac_ctx_scratch_f32(&c->P, &c->cap_P, need))) return rc;
            double tq = 0, ts = 0;
            if ((rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, ac_attn_kt_floats(&aa)))) return rc;
            if ((rc = ac_attn_scores(&aa, c->P, c->kt, c->pool, &tq, &ts))) return rc;
            if (c->params.profile) {
                c->prof[AC_STAGE_QK] += tq;
                c->prof[AC_STAGE_SOFTMAX] += ts;
                *tp = ac_now();
            }
            if (pl->rec[s]) {
                ac_attn_site site = make_site(c, pl, il, s, X);
                if ((rc = c->hook.record(c->hook.user, &site, c->P)) != AC_OK)
                    return ac_err_prefix(rc, "attention hook (layer %d, sequence %d)", il, s);
                if (c->params.profile) *tp = ac_now(); /* the hook's own time is not ours */
            }
            ac_attn_apply(&aa, c->P, c->pool);
            prof_lap(c, AC_STAGE_AV, tp);
        } else {
            ac_attn_site site = make_site(c, pl, il, s, X);
            if ((rc = ac_ctx_scratch_f32(&c->kt, &c->cap_kt, ac_attn_kt_floats(&aa)))) return rc;
            const int spans = c->has_hook && c->hook.head_span ? attn_spans(c, &aa, &site) : 0;
            if (spans < 0) return -spans;
            if (!spans && (rc = ac_attn_fused(&aa, c->kt, c->pool))) return rc;
            prof_lap(c, AC_STAGE_ATTN, tp);
        }
    }
    return AC_OK;
}

typedef struct norm_arg {
    const float *x, *w, *b;
    float *out;
    uint16_t *out_bf;
    int rms;
} norm_arg;


static void norm_fn(ac_ctx *c, const void *arg, int r0, int r1) {
    const norm_arg *na = arg;
    uint16_t *out_bf = bf16_inputs(c) ? na->out_bf : NULL;
    const ac_hparams *hp = &c->model->hp;
    const int D = hp->n_embd;
    for (int t = r0; t < r1; t++) {
        float *o = na->out + (size_t)t * D;
        if (na->rms) ac_rmsnorm(o, na->x + (size_t)t * D, na->w, D, hp->norm_eps);
        else ac_layernorm(o, na->x + (size_t)t * D, na->w, na->b, D, hp->norm_eps);
        if (out_bf) ac_f32_to_bf16(out_bf + (size_t)t * D, o, (size_t)D);
    }
}

/* out = rmsnorm(x) * w (f32 and, if out_bf, bf16), rows of [T][D] */
static void rmsnorm_rows(ac_ctx *c, const float *x, const float *w, float *out, uint16_t *out_bf, int T) {
    norm_arg na = {x, w, NULL, out, out_bf, 1};
    ac_ctx_par_rows(c, T, c->model->hp.n_embd, norm_fn, &na);
}

/* x = layernorm(x) * w + b in place, with its bf16 copy */
static void layernorm_rows(ac_ctx *c, float *x, const float *w, const float *b, uint16_t *x_bf, int T) {
    norm_arg na = {x, w, b, x, x_bf, 0};
    ac_ctx_par_rows(c, T, c->model->hp.n_embd, norm_fn, &na);
}

/* The matrices the forward's next GEMM call reads first (ac_ctx.gemm_then), for the call about
 * to run; NULL, NULL after it. */
static void gemm_then(ac_ctx *c, const ac_mat *W, const ac_mat *W_up) {
    c->gemm_then[0] = W;
    c->gemm_then[1] = W_up;
}

static int layer_llama(ac_ctx *c, int il, fwd_plan *pl, const ac_mat *next, double *tp) {
    const ac_model *m = c->model;
    const ac_hparams *hp = &m->hp;
    const ac_layer *L = &m->layers[il];
    const int T = pl->T, D = hp->n_embd, QD = hp->n_head * hp->head_dim, F = hp->n_ff;
    int rc;
    /* xb = rmsnorm(x) * attn_norm */
    rmsnorm_rows(c, c->x, L->norm1_w, c->xb, c->xb_bf, T);
    prof_lap(c, AC_STAGE_NORM, tp);
    ac_act X = act(c->xb, c->xb_bf, T, D, 1);
    gemm_then(c, &L->wo, NULL); /* (the Q/K/V projections' call) */
    rc = attention_block(c, il, L, &X, pl, tp);
    gemm_then(c, NULL, NULL);
    if (rc) return rc;
    /* x += att Wo^T (+ bo) */
    ac_act A = act(c->att, c->att_bf, T, QD, pl->att_bf_ok);
    ac_gemm_job jo = {&L->wo, NULL, &A, c->x, NULL, L->bo, AC_EPI_ACCUM, NULL, 0};
    gemm_then(c, &L->w_gate, &L->w_up);
    rc = ac_ctx_gemm(c, &jo, 1);
    gemm_then(c, NULL, NULL);
    if (rc) return rc;
    prof_lap(c, AC_STAGE_O, tp);
    /* xb = rmsnorm(x) * ffn_norm */
    rmsnorm_rows(c, c->x, L->norm2_w, c->xb, c->xb_bf, T);
    prof_lap(c, AC_STAGE_NORM, tp);
    /* hb = silu(xb Wg^T) * (xb Wu^T);  x += hb Wd^T. When all three run on the BF16 kernel,
     * hb exists only in bf16. */
    const int down_bf = reads_bf16_only(c, &L->w_down);
    const int skip_f32 = down_bf && ac_ctx_gemm_fast(c, &L->w_gate) && ac_ctx_gemm_fast(c, &L->w_up);
    ac_gemm_job jg = {&L->w_gate, &L->w_up, &X, skip_f32 ? NULL : c->hb, down_bf ? c->hb_bf : NULL, NULL,
                      AC_EPI_SWIGLU, NULL, 0};
    gemm_then(c, &L->w_down, NULL);
    rc = ac_ctx_gemm(c, &jg, 1);
    gemm_then(c, NULL, NULL);
    if (rc) return rc;
    ac_act H = act(c->hb, c->hb_bf, T, F, down_bf);
    ac_gemm_job jd = {&L->w_down, NULL, &H, c->x, NULL, NULL, AC_EPI_ACCUM, NULL, 0};
    gemm_then(c, next, NULL); /* the next layer's first projection, or the LM head */
    rc = ac_ctx_gemm(c, &jd, 1);
    gemm_then(c, NULL, NULL);
    if (rc) return rc;
    prof_lap(c, AC_STAGE_MLP, tp);
    return AC_OK;
}

static int layer_bert(ac_ctx *c, int il, fwd_plan *pl, double *tp) {
    const ac_model *m = c->model;
    const ac_hparams *hp = &m->hp;
    const ac_layer *L = &m->layers[il];
    const int T = pl->T, D = hp->n_embd, QD = hp->n_head * hp->head_dim, F = hp->n_ff;
    int rc;
    ac_act X = act(c->x, c->x_bf, T, D, 1); /* x_bf is kept current by the LayerNorms */
    if ((rc = attention_block(c, il, L, &X, pl, tp))) return rc;
    /* x = LN(x + att Wo^T + bo) */
    ac_act A = act(c->att, c->att_bf, T, QD, pl->att_bf_ok);
    ac_gemm_job jo = {&L->wo, NULL, &A, c->x, NULL, L->bo, AC_EPI_ACCUM, NULL, 0};
    if ((rc = ac_ctx_gemm(c, &jo, 1))) return rc;
    prof_lap(c, AC_STAGE_O, tp);
    layernorm_rows(c, c->x, L->norm1_w, L->norm1_b, c->x_bf, T);
    prof_lap(c, AC_STAGE_NORM, tp);
    /* x = LN(x + gelu(x Wu^T + bu) Wd^T + bd) */
    const int down_bf = reads_bf16_only(c, &L->w_down);
    const int skip_f32 = down_bf && ac_ctx_gemm_fast(c, &L->w_up);
    ac_gemm_job ju = {&L->w_up, NULL, &X, skip_f32 ? NULL : c->hb, down_bf ? c->hb_bf : NULL, L->b_up, AC_EPI_GELU, NULL, 0};
    if ((rc = ac_ctx_gemm(c, &ju, 1))) return rc;
    ac_act H = act(c->hb, c->hb_bf, T, F, down_bf);
    ac_gemm_job jd = {&L->w_down, NULL, &H, c->x, NULL, L->b_down, AC_EPI_ACCUM, NULL, 0};
    if ((rc = ac_ctx_gemm(c, &jd, 1))) return rc;
    prof_lap(c, AC_STAGE_MLP, tp);
    layernorm_rows(c, c->x, L->norm2_w, L->norm2_b, c->x_bf, T);
    prof_lap(c, AC_STAGE_NORM, tp);
    return AC_OK;
}

/* One sequence against the context's limits; s >= 0 names it in the message. */
static int check_seq(const ac_ctx *c, const ac_seq *q, int s) {
    const int V = c->model->hp.n_vocab;
    char where[32] = "";
    if (s >= 0) snprintf(where, sizeof where, " (sequence %d)", s);
    if (q->n_tokens <= 0) return ac_err(AC_ERR_INPUT, "empty input (no tokens)%s", where);
    if (!q->tokens) return ac_err(AC_ERR_ARG, "NULL tokens%s", where);
    if (q->n_tokens > c->max_tokens)
        return ac_err(AC_ERR_INPUT, "input of %d tokens exceeds the limit of %d tokens%s", q->n_tokens, c->max_tokens,
                      where);
    for (int i = 0; i < q->n_tokens; i++)
        if (q->tokens[i] < 0 || q->tokens[i] >= V)
            return ac_err(AC_ERR_INPUT, "token id %d at position %d is out of range [0, %d)%s", (int)q->tokens[i], i, V,
                          where);
    return AC_OK;
}

int ac_ctx_check_seq(const ac_ctx *c, const ac_seq *seq) {
    if (!c || !seq) return ac_err(AC_ERR_ARG, "ac_ctx_check_seq: invalid argument");
    return check_seq(c, seq, -1);
}

static int check_inputs(const ac_ctx *c, const ac_seq *seqs, int n_seq, int *T_out, int *Lmax_out) {
    int64_t T = 0;
    int Lmax = 0;
    for (int s = 0; s < n_seq; s++) {
        const ac_seq *q = &seqs[s];
        int rc = check_seq(c, q, s);
        if (rc) return rc;
        T += q->n_tokens;
        Lmax = AC_MAX(Lmax, q->n_tokens);
        if (T > (1 << 30)) return ac_err(AC_ERR_INPUT, "batch of more than 2^30 tokens");
    }
    *T_out = (int)T;
    *Lmax_out = Lmax;
    return AC_OK;
}

/* rows [n][D] of the final hidden states picked per sequence (first or last token) */
static int gather_rows(ac_ctx *c, const fwd_plan *pl, const float *h, int last, float **out) {
    const int D = c->model->hp.n_embd;
    int rc = ac_ctx_scratch_f32(&c->rows, &c->cap_rows, (size_t)pl->n_seq * D);
    if (rc) return rc;
    for (int s = 0; s < pl->n_seq; s++) {
        int r = pl->off[s] + (last ? pl->seqs[s].n_tokens - 1 : 0);
        memcpy(c->rows + (size_t)s * D, h + (size_t)r * D, (size_t)D * sizeof(float));
    }
    *out = c->rows;
    return AC_OK;
}

/* dst [D] = pooling (mean / first / last) of the rows o .. o+n-1 of h, optionally L2-normalised */
static void pool_row(const float *h, int o, int n, int D, int pooling, int normalize, float *dst) {
    if (pooling == AC_POOL_MEAN) {
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int t = 0; t < n; t++) acc += h[(size_t)(o + t) * D + d];
            dst[d] = (float)(acc / n);
        }
    } else {
        memcpy(dst, h + (size_t)(o + (pooling == AC_POOL_CLS ? 0 : n - 1)) * D, (size_t)D * sizeof(float));
    }
    if (!normalize) return;
    double ss = 0;
    for (int d = 0; d < D; d++) ss += (double)dst[d] * dst[d];
    if (ss > 0) {
        const float inv = (float)(1.0 / sqrt(ss));
        for (int d = 0; d < D; d++) dst[d] *= inv;
    }
}

static int outputs(ac_ctx *c, const fwd_plan *pl, const float *h, ac_outputs *out, int pooling, double *tp) {
    const ac_model *m = c->model;
    const int D = m->hp.n_embd, n_seq = pl->n_seq;
    int rc;
    if (out->hidden) memcpy(out->hidden, h, (size_t)pl->T * D * sizeof(float));
    if (out->pooled) {
        for (int s = 0; s < n_seq; s++)
            pool_row(h, pl->off[s], pl->seqs[s].n_tokens, D, pooling, out->normalize, out->pooled + (size_t)s * D);
        prof_lap(c, AC_STAGE_NORM, tp);
    }
    if (out->logits) {
        float *rows;
        if ((rc = gather_rows(c, pl, h, 1, &rows))) return rc;
        ac_act a = act(rows, c->act_bf16, n_seq, D, 0);
        if ((rc = matmul(c, &m->output, &a, out->logits, NULL, 0))) return rc;
        prof_lap(c, AC_STAGE_HEAD, tp);
    }
    if (out->cls) {
        float *rows;
        if ((rc = gather_rows(c, pl, h, m->info.arch != AC_ARCH_BERT, &rows))) return rc;
        if (m->cls_mean_l2) /* the head was trained on the L2-normalised mean pool */
            for (int s = 0; s < n_seq; s++)
                pool_row(h, pl->off[s], pl->seqs[s].n_tokens, D, AC_POOL_MEAN, 1, rows + (size_t)s * D);
        ac_act a = act(rows, c->act_bf16, n_seq, D, 0);
        if (m->has_cls) {
            /* hb [n_seq][D] = tanh(rows Wc^T + bc) */
            float *y = out->cls;
            if (m->has_cls_out) {
                if ((rc = ac_ctx_scratch_f32(&c->cls_tmp, &c->cap_cls_tmp, (size_t)n_seq * D))) return rc;
                y = c->cls_tmp;
            }
            if ((rc = matmul(c, &m->cls, &a, y, m->cls_b, 0))) return rc;
            for (size_t i = 0; i < (size_t)n_seq * D; i++) y[i] = tanhf(y[i]);
            a = act(y, c->act_bf16, n_seq, D, 0);
        }
        if (m->has_cls_out && (rc = matmul(c, &m->cls_out, &a, out->cls, m->cls_out_b, 0))) return rc;
        prof_lap(c, AC_STAGE_HEAD, tp);
    }
    return AC_OK;
}

/* x = token embedding (+ bert: type 0 + position, LayerNorm, bf16 copy) */
static void embed_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    const fwd_plan *pl = arg;
    const ac_model *m = c->model;
    const int D = m->hp.n_embd;
    for (int r = r0; r < r1; r++) {
        const int t = pl->row_pos[r];
        float *x = c->x + (size_t)r * D;
        embed_token(m, pl->seqs[pl->row_seq[r]].tokens[t], t, x, c->xb + (size_t)r * D);
        if (m->info.arch == AC_ARCH_BERT && bf16_inputs(c)) ac_f32_to_bf16(c->x_bf + (size_t)r * D, x, (size_t)D);
    }
}

/* Offer every sequence to the prefix hook: pl->first[s] = P rows found, their
 * K/V and hidden states in c->pkv (which gets room for every row). */
static int prefix_lookup(ac_ctx *c, fwd_plan *pl) {
    const ac_hparams *hp = &c->model->hp;
    pl->tok_floats = (size_t)hp->n_layer * 2 * hp->n_head_kv * hp->head_dim + hp->n_embd;
    size_t n;
    if (!ac_mul_ok((size_t)pl->T_full, pl->tok_floats * sizeof(float), &n))
        return ac_err(AC_ERR_NOMEM, "%d tokens: prefix rows overflow", pl->T_full);
    /* One sequence: rows laid out for pkv_ld rows (grown in steps of 256), so that the next
     * call finds the rows of the tokens it shares with this one where they are. */
    const int L0 = pl->seqs[0].n_tokens;
    pl->keep = pl->n_seq == 1 && c->pkv_ld >= L0;
    if (pl->n_seq == 1 && !pl->keep && L0 <= INT32_MAX - 256) {
        c->pkv_ld = (L0 + 255) / 256 * 256;
        c->pkv_valid = 0;
        pl->keep = 1;
    }
    const size_t rows_needed = pl->keep ? (size_t)c->pkv_ld : (size_t)pl->T_full;
    int valid = 0; /* rows of the kept sequence that begin this one */
    if (pl->keep) {
        const int32_t *t = pl->seqs[0].tokens;
        while (valid < c->pkv_valid && valid < L0 && c->pkv_tok[valid] == t[valid]) valid++;
    }
    c->pkv_valid = 0; /* until this call succeeds (it rewrites the rows) */
    if (!ac_mul_ok(rows_needed, pl->tok_floats * sizeof(float), &n))
        return ac_err(AC_ERR_NOMEM, "%zu tokens: prefix rows overflow", rows_needed);
    const float *before = c->pkv;
    int rc = ac_ctx_scratch_f32(&c->pkv, &c->cap_pkv, rows_needed * pl->tok_floats);
    if (rc) return ac_err(rc, "out of memory for the prefix cache's rows of %zu tokens", rows_needed);
    if (c->pkv != before) valid = 0; /* (a new buffer) */
    for (int s = 0; s < pl->n_seq; s++) {
        ac_kv_rows kr = seq_rows(c, pl, s);
        kr.valid = pl->keep ? valid : 0;
        int P = c->kv_hook.lookup ? c->kv_hook.lookup(c->kv_hook.user, pl->seqs[s].tokens, &kr) : 0;
        pl->first[s] = P < 0 ? 0 : P > kr.L - 1 ? kr.L - 1 : P;
    }
    return AC_OK;
}

static int cpu_forward(ac_ctx *c, const ac_seq *seqs, int n_seq, ac_outputs *out) {
    const ac_model *m = c->model;
    const ac_hparams *hp = &m->hp;
    const int D = hp->n_embd, bert = m->info.arch == AC_ARCH_BERT;
    int T_full = 0, Lmax = 0, rc;
    c->n_plan = 0;
    if ((rc = check_inputs(c, seqs, n_seq, &T_full, &Lmax))) return rc;
    if (out->logits && !m->has_output) return ac_err(AC_ERR_UNSUPPORTED, "model has no LM head (no logits)");
    if (out->cls && !m->info.n_cls_out) return ac_err(AC_ERR_UNSUPPORTED, "model has no classifier head");
    int pooling = out->pooling == AC_POOL_DEFAULT ? hp->pooling : out->pooling;
    if (out->pooled && (pooling < AC_POOL_MEAN || pooling > AC_POOL_LAST))
        return ac_err(AC_ERR_ARG, "pooled output requested with pooling %d", out->pooling);
    if (n_seq > c->cap_plan) {
        ac_seq_plan *np = realloc(c->plan, (size_t)n_seq * sizeof *np);
        if (!np) return AC_ERR_NOMEM;
        c->plan = np;
        c->cap_plan = n_seq;
    }
    memset(c->plan, 0, (size_t)n_seq * sizeof *c->plan);

    fwd_plan pl = {.n_seq = n_seq, .seqs = seqs, .T_full = T_full};
    /* the prefix cache takes part unless a hook wants whole maps (supply, record) */
    pl.kv_on = c->has_kv_hook && hp->causal && !(c->has_hook && (c->hook.supply || c->hook.record));
    pl.off = AC_MALLOC((size_t)n_seq * sizeof *pl.off);
    pl.off_full = AC_MALLOC((size_t)n_seq * sizeof *pl.off_full);
    pl.first = AC_CALLOC((size_t)n_seq, sizeof *pl.first);
    pl.maps = AC_MALLOC((size_t)n_seq * sizeof *pl.maps);
    pl.rec = AC_MALLOC((size_t)n_seq);
    pl.srv = AC_MALLOC((size_t)n_seq * sizeof *pl.srv);
    pl.hpart = AC_CALLOC((size_t)n_seq, 1);
    pl.hmask = AC_MALLOC((size_t)n_seq * hp->n_head);
    pl.kvmask = AC_MALLOC((size_t)n_seq * hp->n_head_kv);
    if (!pl.off || !pl.off_full || !pl.first || !pl.maps || !pl.rec || !pl.srv || !pl.hpart || !pl.hmask ||
        !pl.kvmask) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    for (int s = 0, o = 0; s < n_seq; o += seqs[s].n_tokens, s++) pl.off_full[s] = o;
    if (pl.kv_on && prefix_lookup(c, &pl) != AC_OK) { /* no room for the rows: this call runs without it */
        pl.kv_on = 0;
        memset(pl.first, 0, (size_t)n_seq * sizeof *pl.first);
        ac_err_clear();
    }
    int T = 0, any_first = 0;
    for (int s = 0; s < n_seq; s++) {
        pl.off[s] = T;
        T += seqs[s].n_tokens - pl.first[s];
        any_first |= pl.first[s] > 0;
        c->plan[s].n_tokens = seqs[s].n_tokens;
        c->plan[s].prefix_rows = pl.first[s];
    }
    pl.T = T;
    pl.row_seq = AC_MALLOC((size_t)T * sizeof *pl.row_seq);
    pl.row_pos = AC_MALLOC((size_t)T * sizeof *pl.row_pos);
    if (!pl.row_seq || !pl.row_pos) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    for (int s = 0; s < n_seq; s++)
        for (int t = pl.first[s]; t < seqs[s].n_tokens; t++) {
            const int r = pl.off[s] + t - pl.first[s];
            pl.row_seq[r] = s, pl.row_pos[r] = t;
        }
    if ((rc = ws_reserve(c, T))) goto done;
    if (!bert && (rc = rope_reserve(c, Lmax))) goto done;

    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(c->n_threads); /* oneDNN (OpenMP runtime) follows the caller's setting */
    double tp = c->params.profile ? ac_now() : 0;

    /* embeddings: x [T][D] */
    ac_ctx_par_rows(c, T, D, embed_rows, &pl);
    prof_lap(c, AC_STAGE_NORM, &tp);

    for (int il = 0; il < hp->n_layer && rc == AC_OK; il++) {
        /* what the GEMM call after layer il's last one reads first: the next layer's V projection
         * (project_qkv's first job), or the LM head's matrix for logits */
        const ac_mat *next = il + 1 < hp->n_layer ? &m->layers[il + 1].wv : out->logits && m->has_output ? &m->output : NULL;
        rc = bert ? layer_bert(c, il, &pl, &tp) : layer_llama(c, il, &pl, next, &tp);
    }

    if (rc == AC_OK) {
        const float *h = c->x;
        if (!bert) { /* final norm: xb = rmsnorm(x) * output_norm */
            rmsnorm_rows(c, c->x, m->out_norm_w, c->xb, NULL, T);
            h = c->xb;
            prof_lap(c, AC_STAGE_NORM, &tp);
        }
        fwd_plan full = pl; /* the outputs see every row: cached ones from c->pkv */
        int *off_last = NULL; /* [n_seq] (logits alone) */
        if (pl.kv_on) {
            for (int s = 0; s < n_seq; s++) {
                const ac_kv_rows kr = seq_rows(c, &pl, s);
                memcpy(kr.hid + (size_t)pl.first[s] * D, h + (size_t)pl.off[s] * D,
                       (size_t)(kr.L - pl.first[s]) * D * sizeof(float));
            }
            /* logits alone read each sequence's last row, always computed: no need for the rest */
            const int last_only = !out->hidden && !out->pooled && !out->cls;
            if (any_first && last_only) {
                if (!(off_last = AC_MALLOC((size_t)n_seq * sizeof *off_last))) rc = AC_ERR_NOMEM;
                for (int s = 0; off_last && s < n_seq; s++) off_last[s] = pl.off[s] - pl.first[s]; /* + L - 1: the last row */
                full.off = off_last;
            } else if (any_first && !(rc = ac_ctx_scratch_f32(&c->hfull, &c->cap_hfull, (size_t)T_full * D))) {
                for (int s = 0; s < n_seq; s++) {
                    const ac_kv_rows kr = seq_rows(c, &pl, s);
                    memcpy(c->hfull + (size_t)pl.off_full[s] * D, kr.hid, (size_t)kr.L * D * sizeof(float));
                }
                h = c->hfull;
                full.off = pl.off_full;
                full.T = T_full;
            }
        }
        if (rc == AC_OK) rc = outputs(c, &full, h, out, pooling, &tp);
        free(off_last);
        if (rc == AC_OK && pl.kv_on && c->kv_hook.insert)
            for (int s = 0; s < n_seq; s++) {
                const ac_kv_rows kr = seq_rows(c, &pl, s);
                c->kv_hook.insert(c->kv_hook.user, seqs[s].tokens, &kr, pl.first[s]);
            }
        /* the rows stay for the next call: exact ones only (no row's attention from a stored map) */
        if (rc == AC_OK && pl.kv_on && pl.keep && !c->plan[0].map_layers) {
            const int L0 = seqs[0].n_tokens;
            if (L0 <= c->cap_pkv_tok || !grow_i32(&c->pkv_tok, &c->cap_pkv_tok, L0)) {
                memcpy(c->pkv_tok, seqs[0].tokens, (size_t)L0 * sizeof *c->pkv_tok);
                c->pkv_valid = L0;
            }
        }
    }
    omp_set_num_threads(saved_threads);
    if (rc == AC_OK) c->n_plan = n_seq;
done:
    free(pl.off);
    free(pl.off_full);
    free(pl.first);
    free(pl.maps);
    free(pl.rec);
    free(pl.srv);
    free(pl.hpart);
    free(pl.hmask);
    free(pl.kvmask);
    free(pl.row_seq);
    free(pl.row_pos);
    return rc;
}

static int cpu_lm_head(ac_ctx *c, const float *h, int n, float *logits) {
    const ac_model *m = c->model;
    if (!m->has_output) return ac_err(AC_ERR_UNSUPPORTED, "model has no LM head (no logits)");
    int rc = ws_reserve(c, n);
    if (rc) return rc;
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(c->n_threads);
    double tp = c->params.profile ? ac_now() : 0;
    ac_act a = act(h, c->act_bf16, n, m->hp.n_embd, 0);
    rc = matmul(c, &m->output, &a, logits, NULL, 0);
    prof_lap(c, AC_STAGE_HEAD, &tp);
    omp_set_num_threads(saved_threads);
    return rc;
}

const ac_backend_ops ac_backend_cpu = {"cpu", NULL, cpu_ctx_new, cpu_ctx_free, cpu_forward, cpu_lm_head, cpu_describe};

struct ac_pool *ac_ctx_pool(const ac_ctx *c) { return c ? c->pool : NULL; }

int ac_ctx_threads(const ac_ctx *c) { return c && c->pool ? ac_pool_threads(c->pool) : 1; }

typedef struct task_job {
    ac_pool *pool;
    int n;
    ac_task_fn fn;
    void *arg;
} task_job;

static void task_step(void *arg, int ith, int nth) {
    (void)nth;
    const task_job *j = arg;
    for (int t; (t = ac_pool_next(j->pool)) < j->n;) j->fn(j->arg, t, ith);
}

void ac_ctx_run_tasks(ac_ctx *c, int n_task, int serial, ac_task_fn fn, void *arg) {
    ac_pool *pool = c ? c->pool : NULL;
    if (serial || !pool || ac_pool_threads(pool) == 1) {
        for (int t = 0; t < n_task; t++) fn(arg, t, 0);
        return;
    }
    task_job j = {pool, n_task, fn, arg};
    ac_pool_run(pool, task_step, &j);
}

int ac_model_layer0_states(const ac_model *m, const int32_t *tokens, int n, float *x0) {
    if (!m || !tokens || n <= 0 || !x0) return ac_err(AC_ERR_ARG, "ac_model_layer0_states: invalid argument");
    const ac_hparams *hp = &m->hp;
    const int D = hp->n_embd, bert = m->info.arch == AC_ARCH_BERT;
    if (bert && n > hp->n_ctx_train)
        return ac_err(AC_ERR_INPUT, "input of %d tokens exceeds the model's %d positions", n, hp->n_ctx_train);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= m->info.n_vocab)
            return ac_err(AC_ERR_INPUT, "token id %d at position %d out of range [0, %d)", tokens[t], t, m->info.n_vocab);
    float *tmp = bert ? AC_MALLOC((size_t)D * sizeof *tmp) : NULL;
    if (bert && !tmp) return AC_ERR_NOMEM;
    for (int t = 0; t < n; t++) {
        float *x = x0 + (size_t)t * D;
        embed_token(m, tokens[t], t, x, tmp); /* as in ac_forward (embed_rows) */
        if (!bert) ac_rmsnorm(x, x, m->layers[0].norm1_w, D, hp->norm_eps); /* the input of layer 0's attention */
    }
    free(tmp);
    return AC_OK;
}
