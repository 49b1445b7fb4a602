/* cuda_backend.h — the CUDA backend's narrow C interface: a model's weights
 * uploaded once, and the exact prefill forward pass on the GPU returning what
 * ac_forward returns (final hidden states, pooled embeddings, last-position
 * logits, classifier outputs). cuda_ctx.c puts it behind the forward-level
 * backend table (src/forward/backend.h: ac_ctx_params.backend = "cuda"); the
 * GPU tests and benchmarks also call it directly.
 *
 * Precision: AC_CUDA_BF16 keeps matrices and the activations between GEMMs in
 * bf16 (f32 accumulation, f32 residual stream, f32 norms/softmax) and runs the
 * fused tensor-core attention; AC_CUDA_F32 keeps everything in f32 (GEMMs with
 * CUBLAS_COMPUTE_32F, no TF32; materialised f32 attention): the exactness check
 * against the CPU engine. Embedding tables stay f32 in both.
 * Built only with -DAC_CUDA=ON; all functions are plain C. */
#ifndef AC_CUDA_BACKEND_H
#define AC_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "attncache.h"
#include "backends/cuda/map_lru.h"
#include "load/model.h" /* C headers without their own extern "C" guards */

enum { AC_CUDA_BF16 = 0, AC_CUDA_F32 = 1 };
enum { AC_CUDA_PARTIAL_RUN_MAX_L = 1024 }; /* ac_cuda_opts.partial_run 0: longest sequence of a run */

typedef struct ac_cuda_model ac_cuda_model;

/* One site's served maps (ac_cuda_opts.serve_site). */
typedef struct ac_cuda_site_maps {
    const void *maps;        /* head h's map at maps + h * head_bytes (borrowed until the call returns) */
    size_t head_bytes;
    int kind, causal, topk;  /* codec (src/cache/codec.h: 0 f32, 1 f16, 2 q8, 3 q4, 4 top-k) */
    int pageable;            /* 1: the caller knows maps is pageable host memory (not asked of CUDA) */
    uint64_t ident[2];       /* identity of the site's bytes (0, 0: none): equal identities and layers mean
                                equal bytes. Host maps with an identity are kept in the backend's
                                device map cache (ac_cuda_set_map_cache) and served from it again
                                without an upload */
    int rows;                /* rows served: 0 (or >= L): every row; 0 < R < L (causal models only: AC_ERR_ARG
                                on a bidirectional one): rows [0, R) from the maps, rows [R, L) computed
                                exactly over every key 0 .. their position (Q, K, V and RoPE projected for
                                every row: the CPU's rows 'prefix' and exact tails) */
    const unsigned char *heads; /* NULL: every query head served; else [n_head], 1: head h's rows [0, R) from
                                the maps, 0: head h computed exactly on every row (per-head serving; copied
                                before serve_site is asked again). Rows [R, L) of every head are exact. Not
                                with given prefix rows (AC_ERR_ARG) */
} ac_cuda_site_maps;

/* Options of a forward call (zero-initialise; all optional). */
typedef struct ac_cuda_opts {
    int attn_variant;    /* fused attention: AC_FLASH_* of cuda_attn.h, 0: the default for the head dim */
    int materialised;    /* 1: materialised attention (P [H][L][L] in device memory) even in bf16 */
    /* Called per (layer, sequence) with P [H][L][L] (host copy, borrowed for the call) when set;
     * implies materialised. Return AC_OK or an error, which aborts the forward. */
    int (*record)(void *user, int layer, int seq, const float *P, int n_head, int L);
    void *user;
    /* Served attention maps (the attention cache on the GPU). When set, serve(user, layer, seq, L) is
     * asked once per (layer, sequence) and returns that site's n_head maps back to back, each
     * ac_cuda_map_bytes(codec_kind, codec_causal, codec_topk, L) bytes in the cache's codec format
     * (src/cache/codec.h: 0 f32, 1 f16, 2 q8, 3 q4, 4 top-k; dense or causal), or NULL to compute the
     * site's attention. The memory is borrowed until ac_cuda_forward returns: device memory (used in
     * place: hot entries kept on the GPU), pinned host memory (copied directly) or pageable host memory
     * (staged through the backend's pinned buffer). Host maps are copied on a second stream, layer by
     * layer, while the layers before them run. A served site skips Wq, Wk, RoPE, QK^T and softmax:
     * only V, A.V straight from the compressed rows, the output projection and the MLP run; served
     * and computed sequences mix freely in one batch. Not with `record`. Top-k indices outside a
     * row's stored columns are ignored (damaged maps never read outside V). */
    const void *(*serve)(void *user, int layer, int seq, int L);
    int codec_kind, codec_causal, codec_topk;
    /* The same with a codec and head stride per site (the attention hook's GPU seam: cuda_ctx.c over
     * the cache's stored entries, whose codecs may differ): fills *out and returns 1 to serve the site,
     * 0 to compute it, or an AC_ERR_* code (< 0), which aborts the forward. out->maps holds the n_head
     * maps at out->maps + h * out->head_bytes; head_bytes >= ac_cuda_map_bytes(kind, causal, topk, L)
     * (a causal map of a longer input serves through its first L rows). Memory as for serve. Used
     * instead of serve (and the codec_* fields) when set. out->rows < L serves rows [0, rows) only
     * (partly served: the site's other rows run the exact attention over every key, as the CPU forward
     * does for a hook's reuse returning R < L). */
    int (*serve_site)(void *user, int layer, int seq, int L, struct ac_cuda_site_maps *out);
    /* S > 0 (with serve or serve_site): before the first site is asked, the embeddings run and the
     * layer-0 states' S segment means of every sequence are computed on the device and copied
     * back; ac_cuda_layer0_summary gives them to serve / serve_site (the attention cache keys on
     * them: no host recomputation of the states). The forward's results are unchanged. */
    int summary;
    /* How partly served sites (ac_cuda_site_maps.rows < L) run. One sequence at a time: the exact rows
     * [R, L) alone through the prefix-rows attention over keys [0, L) (two launches a site). As a run:
     * consecutive such sequences without given prefix rows together, the fused attention over all their
     * rows (as computed sequences), then one A.V launch overwriting rows [0, R) of each (the attention
     * of the served rows is computed and dropped; many short sequences launch twice a layer instead of
     * twice a sequence). Same results up to the attention's rounding. 0 (default): runs of two or more
     * sequences of at most AC_CUDA_PARTIAL_RUN_MAX_L tokens as runs, the others one at a time (run 19,
     * Llama-1B, top-32 rows: runs 1.13x faster at 512 x 16, equal at 2048 x 4); 1: always runs; -1:
     * always one at a time. */
    int partial_run;

    /* Given prefix rows (the prefix K/V cache on the GPU; causal models; not with serve or record; with
     * serve_site only when summary is 0 and every served site serves rows [0, R) with P < R < L: rows
     * [P, R) from the maps, the rest exact, as the CPU forward with both caches). When pfx_P is set, sequence s's rows [0, P = pfx_P[s]) (0 <= P < L) come from the
     * caller and are not computed at all: only rows P..L-1 run through every stage (embedding, norms,
     * projections, RoPE at their positions, MLP); their queries attend causally over all L keys, the
     * given rows' K/V (uploaded through pinned staging, in the precision's type) and their own.
     *   pfx_kv[s]  host f32 [n_layer][2][pfx_ld[s]][n_head_kv*head_dim]: layer l's K rows (after
     *              RoPE) at + 2l ld kvd, its V rows at + (2l+1) ld kvd. Rows [0, P) are read (and
     *              rounded to bf16 on the device in the bf16 mode); after a successful call rows
     *              [P, L) hold what the GPU computed (bf16 values in the bf16 mode). Pinned memory
     *              (ac_cuda_host_alloc) lets these copies overlap the layers; pageable works too.
     *   pfx_hid[s] host f32 [L][n_embd] final hidden states (after the final norm): rows [0, P)
     *              are read when an output needs them (hidden, pooled other than last, a
     *              mean-pooled classifier head); rows [P, L) are written.
     * Outputs are those of the whole sequences (hidden [sum L][n_embd] as without prefix rows).
     * Buffers borrowed for the call (the layout of the prefix hook's ac_kv_rows, forward.h). */
    const int *pfx_P;          /* [n_seq] */
    float *const *pfx_kv;      /* [n_seq] */
    float *const *pfx_hid;     /* [n_seq] */
    const int *pfx_ld;         /* [n_seq] rows per K or V block (>= L) */
    /* The device prefix cache (below: ac_cuda_prefix_cache_find) with given rows.
     *   pfx_res[s] 1: sequence s's P given rows are resident (find(tokens, P) said 1 before this
     *              call): its rows [0, P) of pfx_kv and pfx_hid are neither read nor written (the
     *              block serves them; nothing is uploaded). The call fails with AC_ERR_ARG if the
     *              block is not resident. NULL: none.
     *   pfx_keep   1: given rows read from the host are also made resident (a new block per
     *              distinct prefix, budget permitting), so a later call can pass pfx_res. */
    const unsigned char *pfx_res; /* [n_seq] or NULL */
    int pfx_keep;
} ac_cuda_opts;

/* Bytes of one head's map of L tokens in a codec (as src/cache/codec.h's ac_codec_map_bytes:
 * rows back to back, padded to 64 bytes); 0 for an invalid codec or L outside [1, 65536]. */
size_t ac_cuda_map_bytes(int kind, int causal, int topk, int L);

/* 1 if a CUDA device is usable (driver present, at least one device), else 0 with no error set. */
int ac_cuda_available(void);
/* Short description of device 0 ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs") into buf. */
int ac_cuda_device_name(char *buf, size_t n);

/* Upload a loaded model (llama, qwen2 or bert; any weight type the loader reads) in `precision`.
 * The model is borrowed (tokenizer, hyper-parameters) and must outlive the result; the
 * weights are copied. *out is owned by the caller (ac_cuda_model_free). */
int ac_cuda_model_upload(const ac_model *m, int precision, ac_cuda_model **out);
/* A model with random weights of the given shape (benchmarks): arch AC_ARCH_*, hp as a loaded
 * model's (n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot, rope, eps,
 * causal, n_ctx_train). Norm weights near 1, matrices uniform in +-1/sqrt(n_in). */
int ac_cuda_model_random(int arch, const ac_hparams *hp, int precision, uint64_t seed, ac_cuda_model **out);
void ac_cuda_model_free(ac_cuda_model *g);

/* The forward pass over n_seq sequences (packed, no padding), as ac_forward: out's host buffers
 * (hidden, pooled, logits, cls; any NULL) receive the same quantities. opts may be NULL. */
int ac_cuda_forward(ac_cuda_model *g, const ac_seq *seqs, int n_seq, ac_outputs *out, const ac_cuda_opts *opts);

/* Pinned (page-locked) host memory for given prefix rows (the copies to and from it overlap the
 * layers), or NULL with an error set. Free with ac_cuda_host_free (NULL is fine). */
void *ac_cuda_host_alloc(size_t bytes);
void ac_cuda_host_free(void *p);

/* The LM head on n final hidden states (after the final norm): h [n][n_embd] host f32 ->
 * logits [n][n_vocab] host (ac_lm_head on the cuda backend; label scoring of multi-token labels). */
int ac_cuda_lm_head(ac_cuda_model *g, const float *h, int n, float *logits);

/* Device milliseconds of the last ac_cuda_forward per stage, from CUDA events:
 * ms[0] embeddings, [1] attention blocks' projections + RoPE, [2] attention core,
 * [3] output projections, [4] MLP, [5] norms, [6] outputs. Zeros unless profiling
 * was switched on with ac_cuda_set_profile (events cost a little). */
enum { AC_CUDA_PROF_N = 7 };
/* Device milliseconds of the last ac_cuda_forward from its first to its last GPU operation
 * (CUDA events on the backend's stream: launch gaps included, host preparation not). */
float ac_cuda_last_ms(const ac_cuda_model *g);
void ac_cuda_set_profile(ac_cuda_model *g, int on);
/* CUDA graphs of the exact path (default on; env AC_CUDA_GRAPHS=0: off): the second call of a shape
 * (rows, sequences, longest sequence, outputs asked) is captured, later ones replay it; results are
 * bitwise those of the plain run. ac_cuda_graph_stats: the last call (0 plain, 1 captured, 2 replayed),
 * graphs captured and replays so far (any pointer may be NULL). */
void ac_cuda_set_graphs(ac_cuda_model *g, int on);
void ac_cuda_graph_stats(const ac_cuda_model *g, int *last, long long *captures, long long *replays);
/* Of the last ac_cuda_forward: sites (layer, sequence) served from maps, and map bytes copied from
 * host memory to the device. */
void ac_cuda_last_served(const ac_cuda_model *g, int *sites, size_t *bytes_uploaded);
void ac_cuda_get_profile(const ac_cuda_model *g, float *ms);
/* Sequence seq's layer-0 summary of the current or last ac_cuda_forward that asked for one
 * (opts.summary = S): [S][n_embd] f32 segment means of the layer-0 states (llama/qwen2: the
 * embeddings RMS-normed with layer 0's attention norm; bert: the normed embeddings), the values
 * src/forward/forward.h ac_attn_site.summary describes. Pinned host memory owned by g, valid
 * until the next ac_cuda_forward; NULL when there is none. */
const float *ac_cuda_layer0_summary(const ac_cuda_model *g, int seq);

/* The device map cache: the host maps of served sites that carry an identity (ac_cuda_site_maps.ident)
 * stay in device memory after their upload, one block per (identity, layer), least recently used
 * evicted first, within a byte budget; a site whose block is resident is served from it (no staging,
 * no upload; ac_cuda_last_served counts only the bytes actually copied). Blocks of the current call
 * are never evicted during it: a call whose maps exceed the budget uploads the rest as before.
 * Default budget (set at the first served call): AC_CUDA_MAP_CACHE_MB from the environment when set
 * (0: off), else min(1 GiB, a quarter of the device's free memory). */
int ac_cuda_set_map_cache(ac_cuda_model *g, size_t budget_bytes); /* evicts down to it; 0: off */
/* Counters since the model was made: hits, misses, blocks made resident (their bytes = uploaded into
 * the cache), evictions, refusals; bytes resident and the budget. Zeros before the first served call. */
void ac_cuda_map_cache_stats(const ac_cuda_model *g, ac_map_lru_stats *out);

/* The device prefix cache: the given prefix rows (ac_cuda_opts.pfx_*) of hot prefixes kept in device
 * memory, one block per distinct (tokens[0, P), P) — keyed by a 128-bit hash of the tokens and P (a
 * collision is about 2^-128 likely: no token copy is compared) — in the precision's type as the
 * attention reads them, plus their final hidden rows in f32; least recently used evicted first within
 * a byte budget; blocks of the current call never evicted during it; a failed call drops the blocks
 * it made. Default budget (set at the first use): AC_CUDA_PREFIX_CACHE_MB from the environment when
 * set (0: off), else min(1 GiB, an eighth of the device's free memory).
 * find: 1 when tokens[0, P)'s block is resident (it is then pinned for the next ac_cuda_forward,
 * which may pass pfx_res[s] = 1 for it), else 0; starts the next call's bookkeeping; never an error.
 * Not thread-safe (one thread per model, as ac_cuda_forward). */
int ac_cuda_prefix_cache_find(ac_cuda_model *g, const int32_t *tokens, int P);
/* 1 if the cache is on (a budget above 0), choosing the default budget at the first call. */
int ac_cuda_prefix_cache_on(ac_cuda_model *g);
int ac_cuda_set_prefix_cache(ac_cuda_model *g, size_t budget_bytes); /* evicts down to it; 0: off */
typedef struct ac_cuda_prefix_stats {
    ac_map_lru_stats lru;          /* hits / misses: finds; inserts: blocks made (bytes_inserted); resident */
    uint64_t bytes_uploaded;       /* given rows' bytes copied host -> device (K/V and hidden), all calls */
    size_t last_bytes_uploaded;    /* the same, last ac_cuda_forward */
    int last_resident_hits;        /* sequences of the last ac_cuda_forward served from blocks */
} ac_cuda_prefix_stats;
void ac_cuda_prefix_cache_stats(const ac_cuda_model *g, ac_cuda_prefix_stats *out);

#ifdef __cplusplus
}
#endif
#endif
