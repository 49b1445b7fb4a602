/*
 * attncache.h — the public C API of attncache, a prefill-only transformer
 * engine (embeddings, classification, scoring) for GGUF models of the Llama
 * (llama, qwen2) and BERT families.
 *
 * Conventions
 *  - Every function that can fail returns an int status: AC_OK (0) or a
 *    negative AC_ERR_* code. On failure ac_last_error() returns a message
 *    naming the problem, valid until the next failing call on the same thread.
 *  - Ownership is stated at each function. "caller owns" means the caller
 *    must release the object with the named *_free function. Buffers passed
 *    in are borrowed for the duration of the call only, unless stated.
 *  - Objects: ac_model is immutable after load and may be shared by threads.
 *    ac_ctx (workspace + settings) is used by one thread at a time.
 *    ac_cache is shared: attached to many contexts, looked up from their
 *    threads at once, while one writer adds entries (thread-safety is stated
 *    at each cache function).
 */
#ifndef ATTNCACHE_H
#define ATTNCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AC_VERSION_MAJOR 0
#define AC_VERSION_MINOR 1

/* ---- status codes -------------------------------------------------------- */
enum {
    AC_OK = 0,
    AC_ERR_IO = -1,          /* open/read/write/mmap failed                  */
    AC_ERR_FORMAT = -2,      /* malformed or hostile file content            */
    AC_ERR_UNSUPPORTED = -3, /* valid but unsupported (arch, tensor type...) */
    AC_ERR_NOMEM = -4,       /* allocation failed                            */
    AC_ERR_ARG = -5,         /* invalid argument from the caller             */
    AC_ERR_INPUT = -6,       /* bad input text: empty, too long, bad UTF-8   */
    AC_ERR_RANGE = -7,       /* output buffer too small; *n_out = required    */
    AC_ERR_CACHE = -8,       /* attention-cache database problem             */
    AC_ERR_INTERNAL = -9,    /* a bug: please report                         */
};

/* Message for the last failing call on this thread ("" if none). Borrowed. */
const char *ac_last_error(void);
/* Static name of a status code, e.g. "AC_ERR_FORMAT". Borrowed. */
const char *ac_status_str(int status);

/* ---- CPU level ------------------------------------------------------------- */
/* The CPU kernels are chosen at run time from cpuid: "avx512" (AVX-512 F/BW/VL/DQ,
 * with BF16 and VNNI kernels where present), "avx2" (AVX2 + FMA + F16C) or
 * "scalar" (portable C). The environment variable AC_CPU=avx512|avx2|scalar or
 * ac_set_cpu_level lowers it (e.g. to test or measure the other levels on one
 * machine). On aarch64 the levels are "neon" (NEON kernels, the default) and
 * "scalar". The level is process-wide; a context of the CPU backend takes it
 * when it is created (its GEMM kernels and the layout its weights are prepared
 * in: contexts at several levels can share one model), the other kernels read
 * it at each call: set it before creating contexts and running them. */
/* name: "avx512", "avx2", "scalar" (aarch64: "neon", "scalar") or "auto" (back to the hardware's level, or
 * AC_CPU's). AC_ERR_ARG for another name, AC_ERR_UNSUPPORTED for a level above
 * the CPU's (the message names both). */
int ac_set_cpu_level(const char *name);
/* One line: the level in use and the hardware's, e.g. "avx2 (hardware avx512
 * +bf16 +vnni)". Writes at most n bytes (NUL included) to buf; returns buf. */
const char *ac_cpu_info(char *buf, int n);

/* ---- model ----------------------------------------------------------------- */
typedef struct ac_model ac_model;

enum ac_arch { AC_ARCH_LLAMA = 0, AC_ARCH_QWEN2 = 1, AC_ARCH_BERT = 2 };

enum ac_pooling {
    AC_POOL_DEFAULT = -1, /* the model's pooling_type, else MEAN for BERT / LAST for decoders */
    AC_POOL_NONE = 0,
    AC_POOL_MEAN = 1,
    AC_POOL_CLS = 2,
    AC_POOL_LAST = 3,
};

typedef struct ac_model_info {
    int arch;           /* enum ac_arch */
    const char *arch_name;
    const char *name;   /* general.name or "" */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff, head_dim;
    int causal;         /* 1 for decoders, 0 for BERT */
    int pooling;        /* model's default pooling (enum ac_pooling) */
    int has_lm_head;    /* logits available */
    int n_cls_out;      /* classifier outputs (0 if no classifier head) */
    int weight_type;    /* dominant tensor type, GGUF numbering (0 F32, 1 F16, 8 Q8_0, 30 BF16) */
    size_t n_params;
    size_t file_bytes;
} ac_model_info;

typedef struct ac_model_params {
    int use_mmap;       /* 1 (default): map the file, weights used in place where possible */
    int check_tensors;  /* 1: scan weights for NaN/Inf at load (slow)                       */
    int f32_math;       /* 1 (default): exact products — F16/BF16/Q8_0 weights are widened to f32
                           and multiplied in f32 (matches PyTorch to ~2e-4 with F16 weights; 2x the
                           memory of the file's weights). 0: "fast" — packed to BF16 for the
                           AVX512-BF16 kernel, activations rounded to bf16 (~2x faster; relative
                           error ~1e-3..5e-3). The CPU backend widens or packs when the first
                           context that needs it is created (ac_ctx_new), once per layout, and
                           keeps the copies with the model (freed by ac_model_free); loading maps
                           the file and converts nothing large. Env AC_PACK=bf16|f32|onednn|none
                           overrides. */
    int vocab_only;     /* 1: load only the tokenizer (any architecture; no weights needed, e.g.
                           llama.cpp's vocab fixtures); contexts refuse such a model. Default 0. */
} ac_model_params;

ac_model_params ac_model_default_params(void);

/* Load a GGUF model. On success the caller owns *out (free with ac_model_free). */
int ac_model_load(const char *path, const ac_model_params *params, ac_model **out);
void ac_model_free(ac_model *model); /* NULL is fine */
/* Fills *info; strings inside are owned by the model. */
int ac_model_get_info(const ac_model *model, ac_model_info *info);
/* Name of classifier output i (0 <= i < n_cls_out) from the file's
 * "<arch>.classifier.output_labels" (llama.cpp's key), copied into buf as a
 * NUL-terminated string cut to cap-1 bytes. AC_ERR_UNSUPPORTED when the file
 * names no labels (callers may then say "LABEL_<i>"); AC_ERR_RANGE for i. */
int ac_model_cls_label(const ac_model *model, int i, char *buf, size_t cap);

/* ---- tokenizer --------------------------------------------------------------- */
/* Tokenize UTF-8 text of len bytes. add_special: add BOS/EOS/CLS/SEP as the
 * model's metadata says. Writes up to cap ids; *n_out = number produced (or
 * required, with AC_ERR_RANGE). Invalid UTF-8 is replaced by U+FFFD. */
int ac_tokenize(const ac_model *model, const char *text, size_t len, int add_special,
                int32_t *ids, int cap, int *n_out);
/* Text of one token (byte-level/SentencePiece markers decoded). Writes at
 * most cap bytes (no NUL); *n_out = bytes of the piece. */
int ac_token_to_piece(const ac_model *model, int32_t id, char *buf, int cap, int *n_out);
/* Special token ids, -1 if absent. */
int32_t ac_token_bos(const ac_model *model);
int32_t ac_token_eos(const ac_model *model);

/* ---- context: settings + workspace ------------------------------------------------ */
typedef struct ac_ctx ac_ctx;

enum ac_gemm_backend {
    AC_GEMM_AUTO = 0, AC_GEMM_OPENBLAS = 1, AC_GEMM_DNNL = 2, AC_GEMM_NAIVE = 3,
    AC_GEMM_OWN = 4,    /* own kernels at the CPU level in use (ac_cpu_level: AVX-512, AVX2 or
                           portable C) on the forward's threads: F32 at every level, BF16 on
                           F16/BF16/Q8_0 weights packed at load where the CPU has AVX512-BF16
                           (AUTO's choice) */
    AC_GEMM_AVX512 = AC_GEMM_OWN, /* the former name of AC_GEMM_OWN */
};
enum ac_attn_kind { AC_ATTN_FUSED = 0, AC_ATTN_MATERIALIZED = 1 };

typedef struct ac_ctx_params {
    int n_threads;     /* 0 = all cores */
    int gemm;          /* enum ac_gemm_backend: the CPU backend's GEMM (ignored by others); also
                          picks the weights' layout in the fast mode (OPENBLAS/NAIVE: unpacked,
                          DNNL: oneDNN's) */
    int attn;          /* enum ac_attn_kind; FUSED (online softmax) is the default */
    int max_tokens;    /* longest single input accepted; 0 = model's n_ctx_train */
    int profile;       /* 1: accumulate per-stage timings (ac_ctx_get_profile) */
    int truncate;      /* 1: ac_embed_texts cuts a text longer than the limit (max_tokens) to it,
                          keeping the closing special token the tokenizer added ([SEP], EOS), as
                          TEI does; 0 (default): such a text is refused (AC_ERR_INPUT) */
    const char *backend; /* which engine runs the context (borrowed during ac_ctx_new only):
                          "cpu" (NULL or "", the default): this CPU's kernels, with `gemm` and
                          the CPU level (ac_set_cpu_level); the attention cache attaches here.
                          "cuda": an NVIDIA GPU (bf16 weights uploaded per context; `gemm`
                          and `attn` do not apply; the attention and prefix caches attach as on
                          the CPU, with the limits docs/GPU_NOTES.md names); only in a build with
                          -DAC_CUDA=ON, on a machine with a CUDA device. ac_ctx_new: AC_ERR_ARG
                          for an unknown name, AC_ERR_UNSUPPORTED naming why for one that cannot
                          run here. */
    int gain_guard;    /* the measured-gain guard (ac_ctx_gain_stats): a context whose attached
                          attention cache makes its calls slower per token (lookups included)
                          runs them without it, but for probes. 0 (default): on where the
                          backend applies it (cuda); 1: on; -1: off (every call uses the cache,
                          e.g. to measure the cached path itself). The CPU backend does not
                          apply it (its hit-rate rule, ac_cache_params.adapt_floor, does). */
} ac_ctx_params;

ac_ctx_params ac_ctx_default_params(void);
/* The model is borrowed and must outlive the context. Caller owns *out. */
int ac_ctx_new(const ac_model *model, const ac_ctx_params *params, ac_ctx **out);
/* Frees the context; an attached cache forgets it (the cache stays open). NULL is fine. */
void ac_ctx_free(ac_ctx *ctx);
/* The model a context was made for (borrowed). */
const ac_model *ac_ctx_model(const ac_ctx *ctx);
/* The name of the backend running a context ("cpu", "cuda"; static), NULL for NULL. */
const char *ac_ctx_backend(const ac_ctx *ctx);
/* One line naming the context's backend and kernels; on the CPU: the CPU level,
 * the GEMM backend and kernel for F32 and for other weights, e.g. "cpu avx2; gemm
 * own avx2-f32 (f32 weights), own avx2-f32 (other weights, widened to f32)".
 * Writes at most n bytes to buf; returns buf. */
const char *ac_ctx_describe(const ac_ctx *ctx, char *buf, int n);

/* ---- forward ---------------------------------------------------------------------- */
/* One input: a token sequence (borrowed). */
typedef struct ac_seq {
    const int32_t *tokens;
    int n_tokens;
} ac_seq;

/* Outputs are caller-allocated; any pointer may be NULL to skip it. */
typedef struct ac_outputs {
    float *hidden;     /* [sum of n_tokens][n_embd]: final per-token hidden states (after final norm) */
    float *pooled;     /* [n_seq][n_embd]: pooled embedding per sequence */
    float *logits;     /* [n_seq][n_vocab]: last-position logits (decoders with an LM head) */
    float *cls;        /* [n_seq][n_cls_out]: classifier head outputs, if the model has one */
    int pooling;       /* enum ac_pooling for `pooled` */
    int normalize;     /* 1: L2-normalise `pooled` */
} ac_outputs;

/* Run the prefill over n_seq sequences of possibly different lengths, each with
 * its own mask; results equal one-at-a-time calls. */
int ac_forward(ac_ctx *ctx, const ac_seq *seqs, int n_seq, ac_outputs *out);
/* The checks ac_forward makes on each sequence (not empty, at most the
 * context's token limit, ids in the vocabulary): AC_OK or AC_ERR_INPUT/ARG
 * with the reason ("input of 202 tokens exceeds the limit of 128 tokens"). */
int ac_ctx_check_seq(const ac_ctx *ctx, const ac_seq *seq);

/* Per-sequence exact rows for the attention cache (approximate map reuse,
 * docs/CACHE.md "Exact rows from the query's start"): on a cache hit, rows
 * [exact_from[s], L) of sequence s are computed exactly in every served
 * layer (over every key), rows before it are served from the retrieved maps.
 * Meant for prompts whose own part starts at a known row (a few-shot prompt:
 * the query after its demonstrations), whose length varies per prompt, where
 * ac_cache_params.exact_tail fixes one row count for all. Combined with
 * exact_tail, the more exact rows of the two win. Values: -1 = no limit from
 * here for that sequence; 0..L: rows from there exact (0: the sequence is not
 * served; L: nothing exact from here). Bidirectional models serve a sequence
 * whole or not at all: any value below L leaves it unserved.
 * Sticky: applies to every following ac_forward on ctx (ac_score_labels'
 * calls included) until set again; n = 0 (from NULL) clears it. n = 1: one
 * value for every sequence of a call (ac_score_labels' prompt+label
 * sequences all start with the prompt); n > 1: a call must have exactly n
 * sequences. from[n] is copied (borrowed during the call). AC_ERR_ARG for a
 * value below -1 or n < 0; ac_forward fails with AC_ERR_ARG, naming the
 * sequence, when a value exceeds that sequence's length or the count does not
 * match. Without an attached cache it changes nothing. ctx's own thread. */
int ac_ctx_set_exact_from(ac_ctx *ctx, int n, const int *from);

/* Apply the LM head to n final hidden states (after the final norm, as in
 * ac_outputs.hidden): h [n][n_embd] -> logits [n][n_vocab], caller-allocated. */
int ac_lm_head(ac_ctx *ctx, const float *h, int n, float *logits);

/* Convenience: tokenize (with specials) + forward + pooling for n texts.
 * out: [n][n_embd], caller-allocated. n_tokens_out (optional): [n]. One bad
 * text (NULL, no tokens, over-long) fails the whole call with its error
 * ("text 3: input of 202 tokens exceeds ..."); see ac_embed_texts_status. */
int ac_embed_texts(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize,
                   float *out, int *n_tokens_out);

/* Per-input status of a batched call. */
typedef struct ac_status {
    int code;          /* AC_OK, or this input's AC_ERR_* (INPUT: no tokens, over-long, bad token id;
                          ARG: NULL text)                                                          */
    char message[192]; /* "" when code is AC_OK, else why, e.g. "input of 202 tokens exceeds the
                          limit of 128 tokens" (truncated to fit)                                  */
} ac_status;

/* As ac_embed_texts, with a status per text: a bad text gets its own code and
 * message in status[i] and a zero row in out; the good ones are computed
 * together (in one forward call) and their rows are what ac_embed_texts would
 * give. status: [n], caller-allocated, always filled. n_tokens_out (optional):
 * [n], the token count (also of an over-long text; 0 when unknown). Returns
 * AC_OK when the call worked, even if some texts failed (check status[]);
 * a call-level error (bad argument, out of memory, a failing forward pass)
 * returns its code, and then status[] says AC_OK only for inputs that were
 * not reached. Borrowed: ctx, texts. */
int ac_embed_texts_status(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize,
                          float *out, int *n_tokens_out, ac_status *status);

/* Label scoring: log P(label_i | prompt) summed over the label's tokens
 * (prompt tokenized with BOS; each label tokenized as a continuation).
 * logprob_out: [n_labels], caller-allocated. With a prefix cache attached
 * (ac_ctx_attach_prefix) and labels of several tokens, the prompt runs once
 * and every label's continuation reuses its rows. */
int ac_score_labels(ac_ctx *ctx, const char *prompt, const char *const *labels, int n_labels,
                    double *logprob_out);

/* ---- prefix K/V cache (causal models) -----------------------------------------------
 * Exact reuse of a shared token prefix, as vLLM's automatic prefix caching and
 * SGLang's RadixAttention do: a token-level radix tree whose nodes keep, for
 * their run of tokens, every layer's K (after RoPE) and V rows and the final
 * hidden states (after the final norm), in f32. Attached to a context, each
 * sequence of an ac_forward call takes the longest stored prefix P of its
 * tokens (at least min_match tokens, and P <= L-1: one row is always
 * computed), computes only rows P..L-1 through every stage (the new queries
 * attend over the stored keys and their own), and is then stored whole.
 * Outputs (hidden, pooled, logits, cls) equal those of the full forward up to
 * float rounding (bitwise with the own GEMM kernels; tests/test_prefix.c).
 * Bidirectional models (bert) ignore it. Memory: a byte budget; when an insert
 * goes past it, the least recently used leaves are evicted (a leaf whose
 * removal leaves its parent childless makes the parent a leaf in turn).
 * Sharing: one cache serves any number of contexts of its model at once from
 * as many threads (a read-write lock: lookups copy the rows they use into the
 * context while holding it shared, so no node is ever read after the lock is
 * released and eviction can never free rows a forward is using; inserts and
 * evictions hold it exclusively). docs/CACHE.md ("Prefix K/V cache"). */
typedef struct ac_prefix_cache ac_prefix_cache;

typedef struct ac_prefix_params {
    int64_t max_bytes; /* budget for the stored rows, tokens and nodes (default 256 MiB; >= 1) */
    int min_match;     /* shortest prefix worth reusing, in tokens (default 16; >= 1)          */
} ac_prefix_params;

ac_prefix_params ac_prefix_default_params(void);
/* An empty prefix cache for contexts of `model` (borrowed: it must outlive the
 * cache). Caller owns *out (ac_prefix_cache_free). */
int ac_prefix_cache_new(const ac_model *model, const ac_prefix_params *p, ac_prefix_cache **out);
/* Detaches every context still attached (they run without it afterwards) and
 * frees. Contexts may be freed before or after it, but not concurrently with
 * it, and no attached context may be running ac_forward. NULL is fine. */
void ac_prefix_cache_free(ac_prefix_cache *pc);
/* Attach pc to ctx (NULL: detach). A context has at most one prefix cache; a
 * prefix cache has any number of contexts, which must be of its model
 * (AC_ERR_ARG otherwise). Borrowed: the attachment ends at detach,
 * ac_ctx_free(ctx) or ac_prefix_cache_free(pc), whichever comes first.
 * Thread-safety: ctx's own thread; different contexts may attach to one cache
 * from several threads at once. It may be combined with an attention cache
 * (ac_ctx_attach_cache): the prefix rows come from this cache, the map cache
 * may serve later rows (ac_ctx_last_plan says which). Backends "cpu" and
 * "cuda" (on the GPU: the cached rows are uploaded, only the new rows are
 * computed; combined with an attention cache on one cuda context, ac_forward
 * fails with AC_ERR_UNSUPPORTED). */
int ac_ctx_attach_prefix(ac_ctx *ctx, ac_prefix_cache *pc);
/* Drop every stored node. Any thread. */
int ac_prefix_clear(ac_prefix_cache *pc);

/* Persistence: save every stored node to one file (checksummed; written to
 * PATH.tmp.PID, fsync'd and renamed over PATH, so a crash leaves the old file
 * or the new one), and load such a file in place of the tree in memory (then
 * evicted to the budget). A file of another model or weight arithmetic, a
 * damaged or truncated one, is refused (AC_ERR_CACHE naming the problem) and
 * the tree in memory is left as it was. Any thread (save: shared lock; load:
 * exclusive lock for the swap only). */
int ac_prefix_save(ac_prefix_cache *pc, const char *path);
int ac_prefix_load(ac_prefix_cache *pc, const char *path);

typedef struct ac_prefix_stats {
    int64_t lookups;         /* sequences looked up                                       */
    int64_t hits;            /* of them, reused a stored prefix (>= min_match tokens)     */
    int64_t tokens_reused;   /* rows taken from the cache (not computed)                  */
    int64_t tokens_computed; /* rows computed by the forwards that looked up             */
    int64_t inserts;         /* sequences stored (new rows added)                         */
    int64_t tokens_stored;   /* rows added by those inserts                               */
    int64_t evictions;       /* nodes evicted for the budget                              */
    int64_t insert_failed;   /* inserts skipped (out of memory, larger than the budget)   */
    int64_t bytes;           /* bytes held now (rows, tokens, nodes)                      */
    int64_t nodes;           /* nodes now (the root excluded)                             */
    int64_t max_bytes;       /* the budget                                                */
    double t_lookup;         /* s in lookups (rows copied into the contexts)              */
    double t_insert;         /* s in inserts and evictions                                */
} ac_prefix_stats;
/* Statistics since creation or the last reset (bytes, nodes: now). Any thread. */
int ac_prefix_get_stats(const ac_prefix_cache *pc, ac_prefix_stats *s);
void ac_prefix_reset_stats(ac_prefix_cache *pc);

/* What the last ac_forward on a context did for each sequence. */
typedef struct ac_seq_plan {
    int n_tokens;    /* L                                                                      */
    int prefix_rows; /* rows [0, prefix_rows) taken from the prefix cache (not computed)        */
    int map_rows;    /* the attention-map cache served the attention of rows
                        [prefix_rows, prefix_rows + map_rows) in map_layers layers (the most
                        over those layers; 0: none)                                             */
    int map_layers;  /* layers whose attention the map cache served (rows or whole maps)       */
} ac_seq_plan;
/* plan: [n] caller-allocated; n: the sequence count of the last successful
 * ac_forward on ctx (AC_ERR_ARG when it differs). ctx's own thread. */
int ac_ctx_last_plan(const ac_ctx *ctx, int n, ac_seq_plan *plan);

/* The measured-gain guard of a context (ac_ctx_params.gain_guard): it times each call with
 * and without the attached attention cache (wall seconds per token, lookups included) and,
 * while the cached calls are slower, runs calls without the cache but for one in K (K from 4
 * doubling to 256); one call in 32 runs exact while the cache is used. Counts since the hook
 * was attached (ac_ctx_attach_cache). ctx's own thread. */
typedef struct ac_gain_stats {
    int enabled;                /* 1: the guard runs on this context (backend and params)     */
    int bypassing;              /* 1: the cache is slower now; calls run without it          */
    int64_t calls;              /* calls with a reusing cache attached that it decided         */
    int64_t bypassed;           /* of those, run without the cache because it was slower       */
    int64_t probes_exact;       /* run without the cache to time the alternative (using)      */
    int64_t probes_cached;      /* run with the cache while bypassing, to see if it pays again */
    double s_per_token_exact;   /* decayed means of the timed calls (0: none yet)              */
    double s_per_token_cached;
} ac_gain_stats;
int ac_ctx_gain_stats(const ac_ctx *ctx, ac_gain_stats *out);

/* ---- profiling ----------------------------------------------------------------------- */
enum ac_stage {
    AC_STAGE_QKV = 0, /* Q/K/V projections (+bias, RoPE) */
    AC_STAGE_QK,      /* QK^T (materialized path) */
    AC_STAGE_SOFTMAX, /* softmax (materialized path) */
    AC_STAGE_AV,      /* A.V (materialized path) */
    AC_STAGE_ATTN,    /* fused attention (QK^T+softmax+A.V together) */
    AC_STAGE_O,       /* output projection */
    AC_STAGE_MLP,     /* feed-forward */
    AC_STAGE_NORM,    /* norms, residuals, embeddings, pooling, rest */
    AC_STAGE_HEAD,    /* LM head / classifier */
    AC_STAGE_COUNT
};
const char *ac_stage_name(int stage);
/* seconds[AC_STAGE_COUNT] accumulated since the last reset. */
int ac_ctx_get_profile(const ac_ctx *ctx, double *seconds);
void ac_ctx_reset_profile(ac_ctx *ctx);

/* ---- attention cache --------------------------------------------------------------------
 * A cache is a directory: maps.acdb (the map store: per input, its compressed
 * attention maps, token count and layer-0 feature summary), projector.gguf
 * (optional trained feature projector), index-*.faiss (the vector index of
 * the keys), policy.txt (optional per-layer reuse policy from tuning).
 * Attached to a context, every forward pass looks each sequence up (its
 * feature summary, key, nearest entry) and on a hit serves the chosen layers'
 * attention from the stored map: Q/K projections, RoPE, QK^T and softmax are
 * skipped; V, A.V (decoding the stored rows inside the kernel), the output
 * projection and the MLP run. All lookup work is inside ac_forward's time.
 *
 * Sharing: one open cache serves any number of contexts at once (each
 * attached context keeps its own per-call state), looked up from as many
 * threads; one writer at a time may add entries meanwhile, and lookups find
 * them once committed. Thread-safety is stated per function below; "any
 * thread" means concurrently with lookups and with each other. docs/CACHE.md
 * ("One cache, many contexts") describes the locking. */
typedef struct ac_cache ac_cache;

enum ac_cache_keykind {
    AC_KEY_AUTO = -1,     /* PROJECTOR when the cache has a trained projector, else RANDOM (a 128-d scan: 3x
                             cheaper than MEAN's 384-d one on MiniLM, with the same hit quality) */
    AC_KEY_PROJECTOR = 0, /* trained projector (128-d), L2 distance                        */
    AC_KEY_MEAN = 1,      /* mean-pooled layer-0 states, cosine distance (1 - cos)         */
    AC_KEY_RANDOM = 2,    /* fixed random projection of MEAN to 128-d, cosine distance    */
};

enum ac_cache_rows {
    AC_ROWS_ALL = 0,    /* every row of the matched entry's (top-left) maps when its key
                           distance <= threshold: the paper's reuse, approximate */
    AC_ROWS_PREFIX = 1, /* causal models: only the rows of the token prefix the query shares
                           with the entry (the best of the nearest candidates, >= 16 tokens);
                           row t depends on tokens 0..t alone, so these rows are what the
                           model computes, up to the codec; later rows are computed exactly
                           (K for every row, Q and attention for the rest). No threshold. */
};

typedef struct ac_cache_params {
    int writable;         /* 1: open for appending (one writer at a time)                   */
    int create;           /* 1 (with writable): create the directory/database if missing   */
    const char *codec;    /* new entries: "f32","f16","q8","q4","topkK" (+"-causal"); NULL: q8 (causal for decoders) */
    int key;              /* enum ac_cache_keykind                                           */
    int index_kind;       /* 0 flat (exact), 1 IVF-Flat, 2 HNSW                              */
    float threshold;      /* hit when the key distance <= threshold (<0: never hit)          */
    const char *layers;   /* layers served on a hit: "all" (default), "none", "policy", "0-3,7" */
    int allow_longer;     /* bidirectional models: 1 lets a longer entry serve (renormalised
                             top-left block); causal models always accept longer entries    */
    int commit_every;     /* writer: commit after this many new entries (default 64)        */
    int no_verify;        /* 1: skip each entry's payload checksum on first use (trust the file;
                             the headers and commit records are still checked). Default 0. */
    int rows;             /* enum ac_cache_rows: which rows of a served layer come from the map */
    /* Adaptive lookups (a cache that does not help costs nothing; docs/CACHE.md): the cache
     * keeps the hit rate of its recent lookups, over all its contexts together; once it is
     * below adapt_floor, sequences skip the lookup and run exact, but for one in K, a probe,
     * looked up: K starts at 4 and doubles while probes miss; a probe that hits turns every
     * lookup back on. Skipped sequences are misses (exact results); ac_cache_stats counts them. */
    float adapt_floor;    /* hit rate below which lookups are skipped, in [0, 1]; default 0.02;
                             0: off (every sequence is looked up, as before; a zeroed struct) */
    int adapt_window;     /* lookups the hit rate is taken over (the mean of the first ones, then
                             decayed by 1/N per lookup), made before any skipping; 0: 64 */
    int adapt_probe_max;  /* largest probe interval K (>= 4); 0: 256 */
    const char *heads;    /* per-head spans (docs/CACHE.md "Per-head spans"): NULL or "none"
                             (default), or "policy": DIR/heads.txt from ac_cache_tune_heads.
                             Its heads run exact attention restricted to sinks + a window,
                             on every site computed on the fused path (no lookup needed)    */
    int exact_tail;       /* AC_ROWS_ALL on a causal model: the last exact_tail rows of a
                             served layer are computed exactly (0: none; default 0). Per
                             sequence from a row on: ac_ctx_set_exact_from            */
    float verify;         /* AC_ROWS_ALL: > 0 checks each candidate before trusting it: a few
                             exact rows of the query's layer-0 maps (the last row of a causal
                             model, [CLS] of an encoder, others spread) against the entry's; a
                             candidate whose mean total-variation distance exceeds `verify`
                             is rejected (the next one is tried, else a miss). 0: off    */
    int verify_rows;      /* rows checked per head (default 4 when 0; at most 64)           */
    const char *serve_heads; /* per-head serving (docs/CACHE.md "Per-head serving"): which heads of a
                             served layer a hit takes from the map, the others computed exactly:
                             NULL or "all" (default: every head, as before), "none", "rank:K" (the
                             K most stable (layer, head) pairs of DIR/head_rank.txt, written by
                             ac_cache_rank_heads), "rank:K/G" (the same in the K/G most stable
                             groups of G adjacent heads of a layer: with G * head_dim a multiple
                             of 64, a served group's Q/K projection columns are skipped) or a list
                             "L.H,L.H,..." ("L.*": all of layer L).
                             A layer none of whose heads is served is not served; read at open */
    float recheck_margin; /* confidence-gated exact fallback (docs/CACHE.md "Confidence-gated exact
                             fallback"), models with a classifier head only: after a forward call, each
                             sequence the cache served whose classifier outputs have a decision margin
                             (softmax top-1 minus top-2 probability) under recheck_margin is computed
                             again exactly, the served ones of a call together, and its outputs (every
                             one asked for) are the exact ones. In [0, 1]; 0: off (default). A value
                             outside, or > 0 on a model without a classifier head: AC_ERR_ARG. Counted
                             in ac_cache_stats.rechecked */
} ac_cache_params;

ac_cache_params ac_cache_default_params(void);
/* Open (or create) the cache directory for this model; a database built with
 * another model, or a projector trained for another one, is refused with
 * AC_ERR_CACHE naming it. The model is borrowed and must outlive the cache.
 * Caller owns *out (ac_cache_close). Writable: one writer per directory
 * across processes (the store's lock); readers need none. */
int ac_cache_open(const ac_model *model, const char *dir, const ac_cache_params *p, ac_cache **out);
/* Commits pending entries (writer), saves the index if entries were added,
 * detaches every context still attached (they run exact afterwards) and
 * frees. Contexts may be freed before or after it. Not while another thread
 * uses the cache or runs ac_forward on one of its contexts. NULL is fine. */
int ac_cache_close(ac_cache *cache);
/* Attach the cache to a context (NULL: detach whatever cache ctx has). A
 * context has at most one cache: attaching another replaces the first; a cache
 * has any number of contexts. The cache is borrowed: the attachment ends at
 * detach, ac_ctx_free(ctx) or ac_cache_close(cache), whichever comes first.
 * Thread-safety: ctx as for any context call (its own thread); different
 * contexts may attach to one cache from several threads at once. */
int ac_ctx_attach_cache(ac_ctx *ctx, ac_cache *cache);

/* Which sequences of the last ac_forward call on ctx were served from its
 * attached cache: hit[i] = 1 when sequence i found an entry (its maps served
 * the chosen layers; in AC_ROWS_PREFIX mode, at least a prefix of its rows),
 * else 0 (a miss, a failed lookup, no index yet). key (optional, [n]): the
 * served entry's key (its token hash, as stored; stable across compaction),
 * 0 for a miss. n: the sequence count of that call. Valid after a successful
 * ac_forward on ctx and until its next forward; after a failed one the values
 * are unspecified. A context with no cache attached reports all misses.
 * Thread-safety: ctx's own thread, as for any context call; hit and key are
 * caller-allocated. */
int ac_cache_last_hits(const ac_ctx *ctx, int n, uint8_t *hit, uint64_t *key);

/* Writer: run the exact forward on one input through ctx (its own cache
 * attachment, if any, is kept) and store its maps. *added = 0 when an entry
 * with the same tokens is already stored. Any thread (writers are serialised;
 * lookups go on meanwhile); ctx is used by this call. The entry becomes
 * visible to lookups at the next commit (automatic every commit_every entries,
 * at most once a second, or ac_cache_commit). */
int ac_cache_add(ac_cache *cache, ac_ctx *ctx, const int32_t *tokens, int n_tokens, int *added);
/* Make the added entries durable and visible to lookups (their keys join the
 * index). Any thread; no-op on a read-only cache. */
int ac_cache_commit(ac_cache *cache);
/* Rebuild the key index from the stored entries (e.g. after a change of index
 * kind); lookups use the old index until the new one is swapped in. Any thread. */
int ac_cache_reindex(ac_cache *cache);

/* Train the projector on pairs of stored entries (target: mean |P_a - P_b|
 * over layers and heads on the common top-left block, plus the relative length
 * difference), save it in the directory, and reindex. Reports the hit quality
 * of each key kind on held-out entries: mean map distance of the retrieved
 * entry over that of the best entry (1.0 = ideal). report: optional [3]
 * indexed by enum ac_cache_keykind. */
typedef struct ac_cache_train_params {
    int n_pairs, epochs, hidden;
    float lr;
    uint64_t seed;
    int verbose;
} ac_cache_train_params;
ac_cache_train_params ac_cache_default_train_params(void);
/* Writer; any thread: lookups use the old key until the projector, key kind
 * and index are swapped in together. */
int ac_cache_train_projector(ac_cache *cache, const ac_cache_train_params *tp, double *report);

/* Layers served on a hit: mask[n_layer] of 0/1 (copied). Any thread; a
 * forward call already past its lookups keeps the mask it read. */
int ac_cache_set_layers(ac_cache *cache, const uint8_t *mask);
int ac_cache_get_layers(const ac_cache *cache, uint8_t *mask);
/* Any thread; applies to lookups that start afterwards. */
int ac_cache_set_threshold(ac_cache *cache, float threshold);
/* Adaptive lookups (ac_cache_params.adapt_*: floor 0 turns them off; window
 * and probe_max 0: the defaults); starts the hit rate over, lookups on. Any
 * thread; applies to the lookups that start afterwards. ac_cache_set_threshold
 * starts the hit rate over too (the stream's hits change with it). */
int ac_cache_set_adapt(ac_cache *cache, float floor, int window, int probe_max);
/* Save the current layer mask as the directory's policy (policy.txt). Any thread. */
int ac_cache_save_policy(ac_cache *cache);

typedef struct ac_cache_stats {
    int64_t entries;           /* stored */
    int64_t queries, hits;     /* sequences looked up, served */
    int64_t layers_served;     /* (sequence, layer) sites served from maps */
    int64_t rows_served;       /* query rows served from maps, summed over served sites */
    int64_t rows_total;        /* query rows of the served sites (rows_served <= rows_total) */
    double t_features;         /* s: layer-0 states + summary */
    double t_key;              /* s: projector / key computation */
    double t_search;           /* s: index search */
    double t_fetch;            /* s: map fetch + checksum on first touch */
    uint64_t bytes_read;       /* compressed map bytes used */
    double sum_distance_hit;   /* sum of key distances of the hits */
    int64_t search_unproven;   /* lookups whose flat-index f16 pass could not prove the top k at
                                  once (exact results all the same: more vectors computed in f32) */
    int64_t search_recomputed; /* the vectors computed exactly for them */
    int64_t lookups_failed;    /* lookups that ended in an error (out of memory, a bad key...): those
                                  sequences ran exact; counted in queries when they got that far */
    int64_t records_damaged;   /* candidate records skipped because their checksum failed */
    char first_failure[192];   /* message of the first failed lookup since open / reset ("" if none) */
    int64_t damaged_unindexed; /* records left out of the index as damaged when it was (re)built;
                                  not reset by ac_cache_reset_stats                                  */
    int64_t lookups_skipped;   /* sequences not looked up (run exact) because the recent hit rate was
                                  under adapt_floor; not in queries                                  */
    int64_t probes;            /* lookups made while skipping, to see whether hits came back (in
                                  queries)                                                           */
    int skipping;              /* 1: lookups are being skipped now (adaptive lookups)                */
    int64_t head_sites;        /* (sequence, layer, head) triples asked for a span (fused sites) */
    int64_t head_sites_spanned; /* of those, run restricted to their span (head policy)         */
    int64_t heads_served;      /* (sequence, layer, head) triples served from maps: layers_served x
                                  n_head when every head is (per-head serving: fewer)            */
    int64_t verify_checked;    /* candidates verified (ac_cache_params.verify)                   */
    int64_t verify_rejected;   /* of those, rejected as too far from the query's exact rows      */
    double t_verify;           /* s: exact layer-0 rows and their comparison (part of the lookup) */
    int64_t features_given;    /* lookups (in queries) keyed on the layer-0 summary the backend computed
                                  where its states are (the cuda backend, on the device), instead of
                                  the states recomputed on the host from the tokens (in t_features) */
    int64_t rechecked;         /* served sequences computed again exactly by the confidence gate
                                  (ac_cache_params.recheck_margin)                                   */
} ac_cache_stats;
/* Lookup statistics since open or the last reset, summed over every attached
 * context (atomic counters); entries: committed and visible. Any thread. */
int ac_cache_get_stats(const ac_cache *cache, ac_cache_stats *s);

/* Per-head spans (docs/CACHE.md "Per-head spans"). ac_cache_tune_heads
 * profiles up to max_entries stored entries (0: 64): for each layer and head,
 * the mass its recorded rows put outside "n_sink first keys + a window around
 * the diagonal (+ n_end last keys, bidirectional)" for candidate windows
 * 1..128; a head gets the smallest window (<= max_span, 0: no limit) whose
 * worst entry loses at most eps, else 0 (exact). The policy is used at once by
 * every attached context and, on a writable cache, saved as DIR/heads.txt
 * (the "policy" of ac_cache_params.heads). report (a FILE *, or NULL): the
 * per-head table. *n_restricted (optional): heads restricted. */
int ac_cache_tune_heads(ac_cache *cache, float eps, int max_entries, int n_sink, int n_end, int max_span,
                        void *report, int *n_restricted);
/* Set / read the spans directly: span [n_layer * n_head] (layer-major; 0 = exact,
 * 1-512), sinks 0-64. NULL span on set: no restricted head. get copies into
 * span (may be NULL) and returns the restricted count in *n_restricted. */
int ac_cache_set_head_spans(ac_cache *cache, const int *span, int n_sink, int n_end);
int ac_cache_get_head_spans(const ac_cache *cache, int *span, int *n_sink, int *n_end, int *n_restricted);
/* Per-head serving (ac_cache_params.serve_heads). ac_cache_rank_heads
 * profiles up to max_entries stored entries (0: 500; evenly spread): each is
 * looked up as a query would be (its stored feature summary, the cache's key
 * and threshold, itself excluded; the first other entry that may serve it)
 * and, per layer and head, the mean total-variation distance between its map
 * rows and the neighbour's is averaged over the pairs found; heads are ranked
 * by it, most stable first. Saved as DIR/head_rank.txt on a writable cache
 * (serve_heads "rank:K" reads it). report (a FILE *, or NULL): the per-head
 * table. *n_pairs (optional): pairs found (AC_ERR_CACHE when none). Any
 * thread. */
int ac_cache_rank_heads(ac_cache *cache, int max_entries, void *report, int *n_pairs);
/* Save a ranking measured elsewhere as DIR/head_rank.txt (what serve_heads "rank:K" reads), e.g.
 * `attncache tune --rank-heads -f queries`: the output's deviation when one group of heads alone is
 * served. dist [n_layer * n_head] (layer-major): each head's distance, lower served first (ties: the
 * lower index); worst (NULL: dist): its worst case; values in [0, 1] (AC_ERR_ARG naming the head
 * otherwise); n_measured (>= 1): how many measurements each averages (the file's "pairs").
 * Written as ac_cache_save_policy writes policy.txt (temp, fsync, rename). Any thread. */
int ac_cache_save_head_rank(ac_cache *cache, const double *dist, const double *worst, int n_measured);
/* Set / read the served heads directly: mask [n_layer * n_head] (layer-major,
 * 1 = served on a hit in a served layer; copied). NULL on set: every head. Any
 * thread; a forward call already past its lookups keeps the mask it read. */
int ac_cache_set_serve_heads(ac_cache *cache, const uint8_t *mask);
int ac_cache_get_serve_heads(const ac_cache *cache, uint8_t *mask);
void ac_cache_reset_stats(ac_cache *cache);
/* Human-readable database statistics, with the lookup counts (failed lookups
 * included) / full verification (db stats / db verify; lookups wait for it).
 * Any thread. */
int ac_cache_print_db_stats(ac_cache *cache, void *file /* FILE* */);
int ac_cache_verify(ac_cache *cache, void *file /* FILE*: one line per problem */, int64_t *n_bad);
/* The same on a cache directory without a model (read-only; any model's database). */
int ac_db_print_stats(const char *dir, void *file /* FILE* */);
int ac_db_verify(const char *dir, void *file /* FILE* */, int64_t *n_bad);
/* db repair: keep every intact record of a damaged database (a damaged commit
 * slot, damaged records, a torn tail) and make it writable again; an intact
 * one is left alone. What was found and done goes to file (FILE*, optional);
 * *n_entries (optional): entries after the repair. Needs the writer lock
 * (AC_ERR_CACHE while a build runs). The saved indexes are rebuilt at the next
 * open. Design: docs/CACHE_STORE.md, "Damage". */
int ac_db_repair(const char *dir, void *file /* FILE* */, int64_t *n_entries);

/* ---- eviction -------------------------------------------------------------------------------------
 * A writable cache records each entry's use beside the store (DIR/usage.bin:
 * hits and the time of the last hit, or of the insert for an entry not hit
 * since), saved at each commit that has news and at close, crash-safe (temp,
 * fsync, rename). Read-only caches count their hits in memory only. */
enum ac_evict_policy {
    AC_EVICT_LRU = 0, /* keep the most recently used entries (last hit, else insert time) */
    AC_EVICT_LFU = 1, /* keep the most often hit entries (ties: the more recently used)    */
};
/* db compact: when the store's committed bytes exceed max_bytes, rewrite it
 * with the entries the policy ranks first that fit in max_bytes (best first;
 * an entry too large for what is left is passed over for smaller ones), in a
 * new file renamed into place (a process killed at any point leaves the old
 * store or the new one, complete). Entry keys stay, ordinals change: the
 * saved indexes are rebuilt at the next open. Needs the writer lock
 * (AC_ERR_CACHE while a writer has the cache open); readers that have it
 * open keep their old view until they reopen. A damaged store is refused
 * (db repair first). file (FILE*, optional): what was done. *n_evicted
 * (optional): entries dropped. */
int ac_db_compact(const char *dir, int64_t max_bytes, int policy, void *file, int64_t *n_evicted);

#ifdef __cplusplus
}
#endif
#endif /* ATTNCACHE_H */
