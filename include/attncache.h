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
} ac_model_params;

ac_model_params ac_model_default_params(void);

/* Load a GGUF model. On success the caller owns *out (free with ac_model_free). */
int ac_model_load(const char *path, const ac_model_params *params, ac_model **out);
void ac_model_free(ac_model *model); /* NULL is fine */
/* Fills *info; strings inside are owned by the model. */
int ac_model_get_info(const ac_model *model, ac_model_info *info);

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

enum ac_gemm_backend { AC_GEMM_AUTO = 0, AC_GEMM_OPENBLAS = 1, AC_GEMM_DNNL = 2, AC_GEMM_NAIVE = 3 };
enum ac_attn_kind { AC_ATTN_FUSED = 0, AC_ATTN_MATERIALIZED = 1 };

typedef struct ac_ctx_params {
    int n_threads;     /* 0 = all cores */
    int gemm;          /* enum ac_gemm_backend */
    int attn;          /* enum ac_attn_kind; FUSED (online softmax) is the default */
    int max_tokens;    /* longest single input accepted; 0 = model's n_ctx_train */
    int profile;       /* 1: accumulate per-stage timings (ac_ctx_get_profile) */
} ac_ctx_params;

ac_ctx_params ac_ctx_default_params(void);
/* The model is borrowed and must outlive the context. Caller owns *out. */
int ac_ctx_new(const ac_model *model, const ac_ctx_params *params, ac_ctx **out);
void ac_ctx_free(ac_ctx *ctx);
/* The model a context was made for (borrowed). */
const ac_model *ac_ctx_model(const ac_ctx *ctx);

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

/* Apply the LM head to n final hidden states (after the final norm, as in
 * ac_outputs.hidden): h [n][n_embd] -> logits [n][n_vocab], caller-allocated. */
int ac_lm_head(ac_ctx *ctx, const float *h, int n, float *logits);

/* Convenience: tokenize (with specials) + forward + pooling for n texts.
 * out: [n][n_embd], caller-allocated. n_tokens_out (optional): [n]. */
int ac_embed_texts(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize,
                   float *out, int *n_tokens_out);

/* Label scoring: log P(label_i | prompt) summed over the label's tokens
 * (prompt tokenized with BOS; each label tokenized as a continuation).
 * logprob_out: [n_labels], caller-allocated. */
int ac_score_labels(ac_ctx *ctx, const char *prompt, const char *const *labels, int n_labels,
                    double *logprob_out);

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

#ifdef __cplusplus
}
#endif
#endif /* ATTNCACHE_H */
