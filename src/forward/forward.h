/* forward.h — internals of the forward stage: the context, the CPU backend's
 * GEMM table, the attention stage and its hook (the attention cache plugs in
 * here). The forward-level backend table (CPU, CUDA) is in backend.h.
 *
 * One ac_forward call runs T = sum of n_tokens rows through the model at once:
 * every projection is one GEMM over all T rows (sequences concatenated), while
 * attention, positions and masks are per sequence.
 *
 * GEMM backends (ac_gemm_ops, runtime choice per context; AUTO or AC_GEMM=...):
 *   own      own kernels (cpu/gemm_own.c) on the context's thread pool at the
 *            context's CPU level (ctx->level, from ac_cpu_level() at creation):
 *            F32 on F32 (and load-widened) weights at every level (AVX-512,
 *            AVX2+FMA, portable C), BF16 (VDPBF16PS) on F16/BF16/Q8_0 weights
 *            packed by cpu/weights.c where the CPU has AVX512-BF16; fused epilogues.
 *            AUTO's choice at every level.
 *   onednn   oneDNN matmul: F32 weights in place; BF16 on weights packed in
 *            oneDNN's blocked layout (AC_PACK=onednn).
 *   openblas cblas_sgemm: F32 in place, other types widened to f32 in tiles.
 *   naive    plain loops (reference).
 * Measured on the 2-core Zen4 (see bench/bench_forward.c): the own BF16 kernel
 * runs at ~215 GFLOP/s per core, oneDNN's BF16 matmul at ~200-225 when alone,
 * but oneDNN's static OpenMP split loses whole shares whenever a thread is
 * preempted by another process, which the dynamic tasks of the pool do not. */
#ifndef AC_FORWARD_H
#define AC_FORWARD_H

#include "attncache.h"
#include "forward/gain.h"
#include "load/model.h"
#include "util/pool.h"

#include <stddef.h>
#include <stdint.h>

/* ---- attention hook ------------------------------------------------------------
 * A site is one (layer, sequence) pair of one ac_forward call. Initialise it with
 * designated fields (.exact_from = -1 for "no limit"): a positional initializer that
 * stops early leaves exact_from 0, which means "serve no row". */
typedef struct ac_attn_site {
    int layer;              /* 0..n_layer-1                                    */
    int seq;                /* index into the seqs[] of this ac_forward call   */
    const int32_t *tokens;  /* [n_tokens] the sequence's token ids (borrowed)  */
    int n_tokens;           /* L                                               */
    int n_head;             /* H (query heads)                                 */
    int causal;             /* 1: P[h][t][s] == 0 for s > t                    */
    const float *x;         /* [n_tokens][n_embd] this layer's attention input
                               (borrowed; layer 0: the normed embeddings, the
                               values ac_model_layer0_states computes). When
                               the prefix cache supplied the sequence's first
                               rows (first > 0): layer 0 the whole sequence's
                               layer-0 states, later layers NULL              */
    int first;              /* rows [0, first) came from the prefix cache (not
                               computed); `reuse` may then serve rows up to
                               L-1. A hook with `supply` or `record` makes
                               ac_forward bypass the prefix cache (first 0)    */
    const float *summary;   /* layer 0, when x is NULL, optional: [AC_ATTN_SUMMARY_SEGMENTS]
                               [n_embd] the segment means of the layer-0 states (the
                               values x would hold), computed where the states are
                               (the GPU backend, which keeps x on the device): mean
                               k over positions [k L / S, (k+1) L / S) (integer
                               division; an empty segment: all L positions). The
                               attention cache keys on exactly this. NULL: not
                               given (the CPU forward gives x instead)          */
    int exact_from;         /* -1, or rows [exact_from, L) must be computed:
                               `reuse` serves at most exact_from rows (the
                               caller's ac_ctx_set_exact_from; ac_ctx_exact_from) */
    const uint8_t *heads;   /* `apply` only: NULL = every query head is served;
                               else [n_head], 1 = head h's rows come from the
                               hook's maps, 0 = computed by the forward (the
                               hook's `serve_heads` answer; apply must not
                               write those heads' columns)                     */
} ac_attn_site;
#define AC_ATTN_SUMMARY_SEGMENTS 4

/* A site's stored maps in the attention cache's codec (src/cache/codec.h row
 * layouts; plain ints so the forward stage needs nothing from the cache):
 * query head h's map at data + h * head_bytes, each map of n_tokens rows (the
 * stored input's length: >= the site's L when a longer entry serves through
 * its first rows). Host memory, zero copy into the cache's store: valid until
 * the cache is closed. */
typedef struct ac_attn_maps {
    const void *data;
    size_t head_bytes;          /* one head's map (ac_codec_map_bytes of n_tokens) */
    int kind, causal, topk;     /* enum ac_codec_kind, 0/1, top-k's k */
    int n_tokens;               /* Le */
    uint64_t ident[2];          /* identity of the bytes (0, 0: none): equal identities and layers
                                   mean equal bytes, so a backend may keep a copy (the GPU's
                                   device-resident hot entries) and serve it again. The cache
                                   gives its record's key and payload checksum */
} ac_attn_maps;

/* All callbacks are optional (NULL) and are called from the thread that
 * called ac_forward, never concurrently. Per layer, every sequence is asked
 * `supply` first; `want_record`/`record` are asked for sequences that were not
 * supplied. */
typedef struct ac_attn_hook {
    void *user;
    /* Return a normalised attention map P [H][L][L] (row t: weights over
     * positions s of the same sequence, rows sum to 1, zero above the diagonal
     * when causal) to use for this site, or NULL to compute attention. When a
     * map is supplied, the Q and K projections, RoPE, QK^T and softmax are
     * skipped for the sequence: only V, P.V, the output projection and the MLP
     * run. All sequences of a layer are asked before that layer's attention
     * runs, so the map must stay valid until `supply` is called for the next
     * layer (or ac_forward returns). */
    const float *(*supply)(void *user, const ac_attn_site *site);
    /* Return 1 to have P of this site computed on the materialised path and
     * passed to `record`. NULL: record every site when `record` is set. */
    int (*want_record)(void *user, const ac_attn_site *site);
    /* Receives P [H][L][L] (borrowed, valid during the call). Return AC_OK or
     * an AC_ERR_* code, which aborts the forward pass. */
    int (*record)(void *user, const ac_attn_site *site, const float *P);
    /* Compressed reuse (the attention cache): asked after `supply` returned
     * NULL; return R > 0 to serve rows [0, R) of this site with `apply`
     * instead of computing them (R = L: Q/K projections, RoPE, QK^T and
     * softmax are skipped; causal models may return R < L: K is projected
     * for every row, Q and the exact attention only for rows [R, L)). 0: compute. */
    int (*reuse)(void *user, const ac_attn_site *site);
    /* out rows [0, n_rows) of [L][ldo] (head h at column h*hd) = P_h . V,
     * V [L][ldv] (kv head g at column g*hd), from the hook's own (compressed)
     * maps. AC_OK or an error. */
    int (*apply)(void *user, const ac_attn_site *site, int n_rows, const float *v, int ldv, int n_head_kv,
                 int head_dim, float *out, int ldo);
    /* The GPU seam of `apply`: a backend that runs P.V itself from the
     * compressed rows (src/backends/cuda) asks for a site `reuse` served the
     * stored maps as they are kept instead of their product with V. Fills *out
     * (ac_attn_maps) and returns AC_OK, or an error. The CPU forward never
     * calls it. NULL: the hook has no stored rows to hand out. */
    int (*maps)(void *user, const ac_attn_site *site, struct ac_attn_maps *out);
    /* Per-head key spans (the cache's head policy), asked for each site whose
     * rows are all computed on the fused path (nothing supplied, reused or
     * recorded). Fill span[h] for every query head h < site->n_head (at most
     * AC_ATTN_SPAN_HEADS): 0 = full exact attention; w > 0 = exact softmax
     * attention restricted to the first *n_sink keys, the window t-w < s <= t
     * (causal) or |s-t| < w (bidirectional) and, bidirectional only, the last
     * *n_end keys (ac_attn_local_rows). Return the number of restricted heads
     * (0: the usual all-heads kernel). Heads with span 0 are computed by the
     * same fused kernel, one head at a time: bitwise what they were. */
    int (*head_span)(void *user, const ac_attn_site *site, int *span, int *n_sink, int *n_end);
    /* Per-head serving (the cache's serve_heads policy), asked for each site
     * `reuse` served (R > 0) whose rows [0, R) the forward computes itself
     * otherwise (no prefix-cache rows: site->first == 0): set mask[h] = 1 for
     * the query heads h < site->n_head (at most AC_ATTN_SPAN_HEADS) whose rows
     * [0, R) come from the hook's maps, 0 for the heads computed exactly
     * (every row, over every key). Return the number of heads served:
     * n_head (or a NULL callback): the whole site, as before; 0: the site is
     * computed exactly after all; 0 < n < n_head: Q and K are projected for
     * every row, `apply` runs with site->heads = mask (it writes the served
     * heads' columns only) and the other heads run the fused kernel one head
     * at a time, which gives them bitwise what the exact forward does. */
    int (*serve_heads)(void *user, const ac_attn_site *site, uint8_t *mask);
    /* The context gives the hook up: called once, when ac_ctx_set_attn_hook
     * replaces it or ac_ctx_free frees the context (the hook's owner releases
     * `user`; the context must not be used from inside). NULL: nothing to do. */
    void (*release)(void *user);
    /* Optional: the layer-0 sites of every sequence of a call at once (sites[i].layer 0,
     * distinct seq), before `reuse` is asked for any of them; the hook may look them up
     * in parallel, and `reuse` then answers those sites' layer 0 from the results (each
     * once, for the same tokens). A backend that has every sequence's layer-0 summary
     * before the first site calls it (the cuda backend); the CPU forward never does (its
     * path is unchanged). AC_OK, or an error: reuse then looks each site up itself. */
    int (*lookup_all)(void *user, const ac_attn_site *sites, int n);
    /* Optional: the confidence gate (the cache's recheck_margin). Asked once after a
     * successful forward call on a model with a classifier head, with that call's
     * classifier outputs cls [n_seq][n_cls]: set redo[s] = 1 (redo is zeroed, [n_seq]) for
     * the sequences whose outputs must be computed again exactly, and return how many
     * (0: none). ac_forward then runs those sequences together without the hook and
     * writes their exact outputs in place of the call's. */
    int (*recheck)(void *user, int n_seq, const float *cls, int n_cls, uint8_t *redo);
} ac_attn_hook;

/* Layer-0 states of a token sequence: the normed embeddings the first
 * attention block reads (llama/qwen2: RMSNorm(embedding) * attn_norm of
 * layer 0; bert: LayerNorm(token + position + type embeddings)). x0 [n][D].
 * Uses no context workspace (callable from inside a hook). */
int ac_model_layer0_states(const ac_model *m, const int32_t *tokens, int n, float *x0);
/* cos, sin of position pos's rotary angles: cs [n_rot/2][2] (the forward's own table). */
void ac_model_rope_cs(const ac_model *m, int pos, float *cs);

/* Exact layer-0 attention rows without a context (layer0_rows.c): the attention
 * cache verifies a retrieved map against them. ac_layer0_qk holds f32 copies
 * of layer 0's Q and K weights (init once; read-only, shareable by threads). */
typedef struct ac_layer0_qk {
    const ac_model *m;
    float *wq, *wk; /* [H*hd][D], [Hkv*hd][D] */
} ac_layer0_qk;
int ac_layer0_qk_init(const ac_model *m, ac_layer0_qk *w);
void ac_layer0_qk_free(ac_layer0_qk *w);
/* P [H][nr][L]: rows rows[0..nr) of the layer-0 maps of the sequence whose
 * layer-0 states are x0 [L][D] (ac_model_layer0_states); causal rows are 0
 * past the diagonal. */
int ac_layer0_rows(const ac_layer0_qk *w, const float *x0, int L, const int *rows, int nr, float *P);
/* Sequence s's value of ac_ctx_set_exact_from for a call (-1: none); ac_forward
 * has checked the values against the call's sequences. */
int ac_ctx_exact_from(const ac_ctx *ctx, int s);
/* A context's thread pool (hooks run their parallel work on it: no second set
 * of threads competing for the cores). */
struct ac_pool *ac_ctx_pool(const ac_ctx *ctx);
/* Threads of a context's pool (the caller included; 1 for NULL). */
int ac_ctx_threads(const ac_ctx *ctx);
/* fn(arg, task, ith) for every task in [0, n_task) on the context's threads,
 * each thread taking the next task; ith in [0, ac_ctx_threads(ctx)) names the
 * thread (per-thread scratch). serial != 0 (little work) or a context of one
 * thread: all on the caller, ith 0. Call from the context's thread, outside
 * any step of its pool (e.g. from a hook). */
typedef void (*ac_task_fn)(void *arg, int task, int ith);
void ac_ctx_run_tasks(ac_ctx *ctx, int n_task, int serial, ac_task_fn fn, void *arg);

/* Install (a copy of) a hook on a context; NULL removes it. The hook it
 * replaces is released (its `release`, if any, is called after the swap). */
void ac_ctx_set_attn_hook(ac_ctx *ctx, const ac_attn_hook *hook);
/* The context's hook: 1 and *out = a copy, or 0 when it has none. */
int ac_ctx_get_attn_hook(const ac_ctx *ctx, ac_attn_hook *out);
/* Lend ctx a hook for a while: installs `hook` (NULL: none) WITHOUT releasing
 * the current one, which is copied to *prev; returns 1 if there was one. Put
 * it back with ac_ctx_swap_attn_hook(ctx, had ? &prev : NULL, &tmp). */
int ac_ctx_swap_attn_hook(ac_ctx *ctx, const ac_attn_hook *hook, ac_attn_hook *prev);

/* ---- prefix K/V hook (the prefix cache, src/cache/prefix.c, plugs in here) ----------
 * Causal models only. Before the layers run, every sequence of an ac_forward
 * call is offered to `lookup`, which may fill the first P rows (0 <= P < L) of
 * the sequence's rows below from what it keeps of an earlier input with the
 * same first P tokens: those rows are then not computed at all (no embedding,
 * norm, projection, attention query, MLP or final norm); rows P..L-1 are, and
 * their queries attend over all L keys. After a successful forward, `insert`
 * receives every row of every sequence (P: how many came from lookup).
 * Borrowed pointers, valid during the call only; both are called from the
 * thread that called ac_forward. */
typedef struct ac_kv_rows {
    float *kv;  /* [n_layer][2][ld][kvd], rows 0..L-1 used: layer l's K rows (after RoPE) at
                   kv + (2l) ld kvd, its V rows at kv + (2l+1) ld kvd                     */
    float *hid; /* [L][n_embd] final hidden states (after the final norm)                 */
    int L, kvd, n_layer, n_embd;
    int ld;     /* rows per K or V block (>= L)                                            */
    int valid;  /* rows [0, valid) already hold this sequence's K/V and hidden states (the
                   context kept them from its previous call, which began with the same
                   tokens): lookup need not copy them                                      */
    int unfilled; /* (insert) rows [0, unfilled) were NOT filled: the backend had them in
                   device memory (match said P, lookup was not called); insert stores none
                   of them (if the hook no longer holds them, it stores nothing)          */
} ac_kv_rows;

typedef struct ac_kv_hook {
    void *user;
    /* Fill rows [0, P) of *rows for these L tokens and return P (0: nothing
     * usable; values outside [0, L-1] are clamped). Never an error: a failed
     * lookup is a miss (the hook counts it). */
    int (*lookup)(void *user, const int32_t *tokens, const ac_kv_rows *rows);
    /* Every row of the sequence, after a successful forward (P rows came from lookup). */
    void (*insert)(void *user, const int32_t *tokens, const ac_kv_rows *rows, int P);
    /* The context gives the hook up (replaced, or ac_ctx_free): as ac_attn_hook.release. */
    void (*release)(void *user);
    /* Optional (NULL: none). The P that lookup would return for these L tokens, copying nothing
     * (a backend that keeps hot prefixes in device memory asks this first, then checks its own
     * copy of tokens[0, P)). count = 0: only a question (no statistics, no last-use stamps);
     * count = 1: the caller serves those P rows itself (lookup will not be called): counted and
     * stamped as a lookup that gave P rows. Same thread-safety as lookup. The CPU forward never
     * calls it. */
    int (*match)(void *user, const int32_t *tokens, int L, int count);
} ac_kv_hook;

/* Install (a copy of) a prefix hook; NULL removes it. The replaced one is released. */
void ac_ctx_set_kv_hook(ac_ctx *ctx, const ac_kv_hook *hook);
/* As ac_ctx_swap_attn_hook: install without releasing the current one (copied to *prev). */
int ac_ctx_swap_kv_hook(ac_ctx *ctx, const ac_kv_hook *hook, ac_kv_hook *prev);
/* 1 and *out = a copy of the context's prefix hook, or 0 when it has none. */
int ac_ctx_get_kv_hook(const ac_ctx *ctx, ac_kv_hook *out);

/* ---- GEMM backends ---------------------------------------------------------------
 * Activations: X [M][K] row-major f32, optionally with a BF16 copy made on
 * demand (once per activation, shared by the GEMMs that read it). */
typedef struct ac_act {
    const float *x;   /* [M][K] */
    int M, K;
    uint16_t *bf16;   /* [M][K] scratch owned by ctx; valid when bf16_ok */
    int bf16_ok;
} ac_act;

typedef struct ac_gemm_ops {
    const char *name;
    int id; /* enum ac_gemm_backend */
    /* Y [M][N] = X [M][K] . W^T (+ bias [N]); accumulate: Y += instead. N = W->n_out, K = W->n_in. */
    int (*matmul)(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate);
} ac_gemm_ops;

/* A GEMM with a fused epilogue; several independent jobs can run as one
 * parallel region (ac_ctx_gemm). Y [M][N] and/or Ybf [M][N] receive:
 *   STORE  X W^T + b          ACCUM  Y + X W^T + b
 *   GELU   gelu(X W^T + b)    SWIGLU silu(X W^T) * (X W_up^T)              */
enum { AC_EPI_STORE = 0, AC_EPI_ACCUM, AC_EPI_GELU, AC_EPI_SWIGLU };
typedef struct ac_gemm_job {
    const ac_mat *W, *W_up; /* W_up: SWIGLU's up projection (W is the gate) */
    ac_act *X;
    float *Y;               /* [M][N] f32 result (required by the generic path) */
    uint16_t *Ybf;          /* [M][N] bf16 copy of the result, or NULL */
    const float *bias;      /* [N] or NULL */
    int epi;
    /* Optional (NULL: every column wanted). [N / skip_w] 1: output columns [i skip_w, (i+1) skip_w)
     * are not wanted (per-head serving: the Q/K columns of heads served from maps). The own kernels
     * leave a 64-column panel whose columns are all unwanted unwritten and every other column
     * bitwise as without skip; the generic backends compute every column. skip_w divides N. */
    const uint8_t *skip;
    int skip_w;
} ac_gemm_job;

/* Run jobs (any backend; packed BF16 weights on the own kernel in one region). */
int ac_ctx_gemm(ac_ctx *ctx, ac_gemm_job *jobs, int n_jobs);
/* 1 if a job on W will run on the own kernels (the f32 Y of a bf16-only input may be skipped). */
int ac_ctx_gemm_fast(const ac_ctx *ctx, const ac_mat *W);

/* The own kernels (gemm_own.c): F32 at every level; BF16 on packed weights
 * where the level in use has AVX512-BF16 (ac_bf16_gemm_available). */
int ac_f32_gemm_available(void);
int ac_bf16_gemm_available(void);
int ac_bf16_gemm_at(int level); /* the same for a context at `level` */
/* Name of the own kernel a context at `level` runs (bf16: for packed weights). */
const char *ac_own_gemm_kernel(int level, int bf16);
size_t ac_bf16_packed_bytes(int n_out, int n_in);
int ac_bf16_pack(ac_mat *W);                               /* sets W->packed, W->pack */
/* W widened to f32 straight into the own F32 tasks' panel layout [ceil(N/64)][K][64] (rows past
 * N repeat the last one), which every level's task reads in place instead of transposing 64 rows
 * of a row-major copy per task: W->packed owns it (the CPU weights free it), W->pack =
 * AC_PACK_F32P, W->f32 stays NULL. The values are those of the row-major widening, and the
 * tasks sum in the same order: results are bitwise those of AC_PACK_F32. */
size_t ac_f32_panel_bytes(int n_out, int n_in);
int ac_f32_panel_pack(ac_mat *W);
/* An F16 matrix kept in f16 in the same panel layout (uint16 [ceil(N/64)][K][64], rows past N
 * repeat the last one): W->packed owns it, W->pack = AC_PACK_F16P, W->f32 stays NULL. Only the
 * AVX-512 F32 task reads it (its first row tile widens the panel as it goes, into its scratch for
 * the later tiles): the values are exactly those of the f32 widening (every f16 is an f32),
 * summed in the same order, so results are bitwise those of AC_PACK_F32P, from half the bytes. */
int ac_f16_panel_pack(ac_mat *W);
int ac_own_gemm_run(ac_ctx *ctx, ac_gemm_job *jobs, int n_jobs); /* W packed AC_PACK_BF16, F32P, F16P, or f32 */

extern const ac_gemm_ops ac_gemm_naive_ops;
extern const ac_gemm_ops ac_gemm_own_ops;
extern const ac_gemm_ops ac_gemm_blas_ops;
#ifdef AC_HAVE_DNNL
extern const ac_gemm_ops ac_gemm_dnnl_ops;
#endif

/* oneDNN helpers (gemm_dnnl.c); without AC_HAVE_DNNL they report unavailability. */
int ac_dnnl_bf16_available(void);                 /* 1 if built with oneDNN and the CPU has AVX512-BF16 */
int ac_dnnl_bf16_at(int level);                   /* the same for a context at `level` (no global read) */
int ac_dnnl_pack_bf16(ac_mat *W, uint16_t *tmp);  /* tmp: [n_out][n_in] scratch; sets W->packed */
typedef struct ac_dnnl_state ac_dnnl_state;       /* per-context primitive cache */
void ac_dnnl_state_free(ac_dnnl_state *s);

/* The CPU backend's weights (cpu/weights.c): the model as contexts at `level` with GEMM
 * choice `gemm` (AC_GEMM_*) read it — m itself, or a view of it (made once per layout and
 * kept on m, thread-safe) whose F16/BF16/Q8_0 matrices are widened or packed (view->pack,
 * view->fast_fallback say how) and, where the own GEMM runs them, whose F32 matrices are
 * copied into its F32 panels (view->f32_panels; AC_F32_PANELS=auto|on|off, a malformed value
 * is an AC_ERR_ARG). *out is borrowed from m. */
int ac_cpu_weights(const ac_model *m, int level, int gemm, const ac_model **out);

/* Tile conversion for backends that need f32 weights: rows [r0, r0+n) of W -> dst [n][K]. */
void ac_mat_rows_f32(const ac_mat *W, int r0, int n, float *dst);

/* ---- attention kind ----------------------------------------------------------------- */
typedef struct ac_attn_args {
    const float *q;  /* [L][ldq], head h at column h*hd (already RoPE'd, unscaled) */
    const float *k;  /* [L][ldk], kv head g at column g*hd */
    const float *v;  /* [L][ldk] */
    float *out;      /* [L][ldq] */
    int L, H, Hkv, hd, ldq, ldk, causal;
    float scale;     /* 1/sqrt(hd) */
    uint16_t *out_bf; /* [L][ldq] bf16 copy of out (the next GEMM's input), or NULL */
    int q0;          /* fused: query rows [q0, L) only (0: all; causal; q rows before q0 unused) */
    int win;         /* fused: 0, or each row t attends only to the keys s < n_sink, the window
                        t-win < s <= t (causal) / |s-t| < win, and (bidirectional) s >= L-n_end
                        (a head's span, see head_span); key blocks outside every row's span
                        are skipped */
    int n_sink, n_end;
    const uint8_t *skip; /* fused: NULL, or [H] 1 = head h is left alone (not computed, its out
                            columns untouched); every other head gets bitwise what it gets
                            without skip (per-head serving runs its computed heads so) */
} ac_attn_args;

/* kt: scratch of ac_attn_kt_floats(a) floats for the transposed key blocks
 * (NULL: allocated per call). */
size_t ac_attn_kt_floats(const ac_attn_args *a);
/* Fused blocked attention with online softmax; never materialises L x L. */
int ac_attn_fused(const ac_attn_args *a, float *kt, ac_pool *pool);
/* The fused attention of n sequences (a[n], each as for ac_attn_fused) in one parallel step:
 * bitwise what n calls of ac_attn_fused give. kt: scratch of the sum of ac_attn_kt_floats(&a[i])
 * floats (64-byte aligned), or NULL (allocated per call). */
int ac_attn_fused_multi(const ac_attn_args *a, int n, float *kt, ac_pool *pool);
/* Materialised: P [H][L][L] = softmax(scale Q K^T) (masked) ... */
int ac_attn_scores(const ac_attn_args *a, float *P, float *kt, ac_pool *pool, double *t_qk, double *t_softmax);
/* ... then out = P V (also the skip path, with a supplied P). */
void ac_attn_apply(const ac_attn_args *a, const float *P, ac_pool *pool);

/* Restricted attention of query head h (attn_local.c), rows [t0, t1) of out
 * (and out_bf when set): softmax over the keys s < n_sink, the window of w
 * around the diagonal (see head_span) and, bidirectional, the last n_end keys.
 * n_sink + 2 w + n_end <= AC_ATTN_LOCAL_MAX. */
#define AC_ATTN_LOCAL_MAX 2048
#define AC_ATTN_SPAN_HEADS 256
void ac_attn_local_rows(const ac_attn_args *a, int h, int w, int n_sink, int n_end, int t0, int t1);
/* Fused attention of a site (a->win unused) with per-head spans span[H]
 * (0: exact): every head by ac_attn_fused one head at a time, the restricted
 * ones with win = span[h] — heads with span 0 are bitwise what the all-heads
 * call gives. Spans >= L count as 0. Returns AC_OK, -1 when no head is
 * restricted (nothing done), or an error. kt: ac_attn_kt_floats(a) floats. */
int ac_attn_heads(const ac_attn_args *a, const int *span, int n_sink, int n_end, float *kt, ac_pool *pool);
/* The keys row t of such a head attends to, as three disjoint ascending ranges
 * r = {a0, a1, b0, b1, c0, c1}: sinks [0, a1), window [b0, b1), end [c0, L)
 * (empty when causal). Returns their total count (<= n_sink + 2w - 1 + n_end). */
int ac_attn_span_ranges(int t, int L, int causal, int w, int n_sink, int n_end, int r[6]);

/* ---- the context ------------------------------------------------------------------------- */
struct ac_backend_ops;
struct ac_ctx {
    /* every backend */
    const struct ac_backend_ops *ops; /* the backend running this context (backend.h) */
    void *be;                        /* its private state (NULL for the CPU backend: the fields below) */
    const ac_model *loaded;          /* the model given to ac_ctx_new (ac_ctx_model) */
    const ac_model *model;           /* the model the kernels read: `loaded`, or the CPU backend's view
                                        of it with this context's weight layout (ac_cpu_weights) */
    ac_ctx_params params;
    int max_tokens;                  /* effective limit per sequence */
    ac_attn_hook hook;
    int has_hook;
    double prof[AC_STAGE_COUNT];
    ac_kv_hook kv_hook;              /* the prefix cache (causal models), if has_kv_hook */
    int has_kv_hook;
    ac_seq_plan *plan;               /* [cap_plan] what the last ac_forward did per sequence */
    int n_plan, cap_plan;
    ac_gain gain;                    /* the measured-gain guard (gain.h), for backends that apply it */
    int gain_on;                     /* 1: this backend applies it (set by the backend at creation) */
    int *exact_from;                 /* [n_exact_from] ac_ctx_set_exact_from's values (owned) */
    int n_exact_from;

    /* the CPU backend */
    int n_threads;
    int level;                       /* CPU level of the own GEMM (AC_CPU_*, fixed at creation) */
    ac_pool *pool;                   /* the forward's threads (n_threads, caller included) */
    const ac_gemm_ops *gemm_f32;     /* for F32 weights */
    const ac_gemm_ops *gemm_q;       /* for F16/BF16/Q8_0 weights */
    const ac_mat *gemm_then[2];      /* the matrices (W, W_up) the forward's next GEMM call reads first, set
                                        around a call: its last tasks prefetch their first panels;
                                        NULL: unknown */
    float *pkv;     /* per sequence [L][...]: its ac_kv_rows (K/V of every layer, final hidden) */
    size_t cap_pkv;
    /* A single sequence's rows stay in pkv after its call (layout ld = pkv_ld rows): the next
     * call's sequence that starts with the same tokens finds its first rows there and the
     * prefix cache's lookup copies only the rest (shared demonstrations: most of a prompt). */
    int32_t *pkv_tok; /* [pkv_valid] the tokens whose rows pkv holds (rows 0..pkv_valid-1)  */
    int pkv_valid, pkv_ld, cap_pkv_tok;
    float *pq, *po; /* [L][H*hd] query rows / attention output of a sequence with cached rows */
    size_t cap_pq, cap_po;
    float *hfull;   /* [sum L][D] final hidden states of every row (cached ones included) */
    size_t cap_hfull;
    float *x0full;  /* [L][D] layer-0 states of a whole sequence (the attention hook's site.x) */
    size_t cap_x0full;

    /* workspace, grown on demand (capacity in tokens: cap_T) */
    int cap_T;
    float *x;      /* [T][D]   residual stream                          */
    float *xb;     /* [T][D]   normed input of a sub-block               */
    float *q;      /* [T][H*hd]                                          */
    float *k;      /* [T][Hkv*hd]                                        */
    float *v;      /* [T][Hkv*hd]                                        */
    float *att;    /* [T][H*hd] attention output (before wo)             */
    float *hb;     /* [T][F]    MLP hidden (gate / up)                   */
    float *hb2;    /* [T][F]                                             */
    uint16_t *act_bf16; /* [T][max(D, H*hd, F)] bf16 scratch for other GEMM inputs */
    uint16_t *x_bf;     /* [T][D]    bf16 copies of x, xb, att, hb (the GEMM inputs) */
    uint16_t *xb_bf;    /* [T][D]    */
    uint16_t *att_bf;   /* [T][H*hd] */
    uint16_t *hb_bf;    /* [T][F]    */
    size_t cap_P;
    float *P;      /* [H][L][L] materialised map of one sequence         */
    float *wtile;  /* [tile rows][K] f32 weight tile (on-the-fly conversion) */
    size_t cap_wtile;
    float *rope_cs; /* [rope_L][n_rot/2][2] cos, sin per position and pair */
    int rope_L;
    float *rows;   /* [n_seq][D] gathered rows for the heads */
    size_t cap_rows;
    float *cls_tmp; /* [n_seq][D] classifier dense output */
    size_t cap_cls_tmp;
    float *kt;      /* attention key blocks of one sequence (ac_attn_kt_floats) */
    size_t cap_kt;
    float **pk;     /* [n_threads] F32 weight panels of the own GEMM, cap_pk floats each */
    size_t cap_pk;
    ac_dnnl_state *dnnl;
};

/* fn over rows 0..n-1 (width elements each) on the context's pool, in dynamic
 * chunks; small jobs run on the caller alone. */
typedef void (*ac_row_fn)(ac_ctx *c, const void *arg, int r0, int r1);
void ac_ctx_par_rows(ac_ctx *c, int n, int width, ac_row_fn fn, const void *arg);

/* Grow a float buffer to at least n elements (64-byte aligned). */
int ac_ctx_scratch_f32(float **buf, size_t *cap, size_t n);
/* Per-thread scratch of n floats each (the own GEMM's F32 panels). */
int ac_ctx_pack_scratch(ac_ctx *ctx, size_t n, float ***out);

/* ---- CPU kernels (cpu/ops.c) -------------------------------------------------------------- */
void ac_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void ac_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
void ac_f32_to_bf16(uint16_t *dst, const float *src, size_t n); /* round to nearest even */
void ac_vexp(float *x, int n);      /* x[i] = expf(x[i]) (vectorised; exp(-inf) = 0) */
float ac_expf(float x);             /* scalar version of the same approximation */
void ac_silu_mul(float *g, const float *u, int n); /* g = silu(g) * u */
void ac_gelu_erf(float *x, int n);  /* x = 0.5 x (1 + erf(x / sqrt 2)) */
/* RoPE on one token's row of n_heads heads of hd: cs [n_rot/2][2] = (cos, sin) of its
 * position's angles. neox = 0: pairs (2i, 2i+1); neox = 1: pairs (i, i + n_rot/2). */
void ac_rope_row(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs);

#endif
