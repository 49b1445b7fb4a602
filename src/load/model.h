/* model.h — a loaded model: the GGUF mapping, its vocab, hyper-parameters and
 * pointers to every weight (into the mapping where the type allows), as the
 * file has them. The loader (src/load/model.c) calls no backend code: what a
 * backend makes of the weights (the CPU backend's packed or widened copies,
 * a GPU upload) it makes itself, when its first context needs it, and keeps
 * on the model through ac_model_prepared (below).
 *
 * Weight layout convention (ggml's): a matrix tensor with ne = {n_in, n_out}
 * is stored as n_out rows of n_in contiguous elements, and y = W x means
 * y[o] = sum_i W[o][i] x[i]. */
#ifndef AC_MODEL_H
#define AC_MODEL_H

#include "attncache.h"
#include "gguf.h"
#include "../tokenize/tokenizer.h"

/* A weight matrix W [n_out][n_in] (y = W x). Every backend can use `data`
 * (any supported type, converted on the fly); F32 is used in place (`f32`).
 * The loader leaves `packed`, `packed_md` and `pack` empty: they describe a
 * backend's own copy of the matrix, set only in that backend's copies of the
 * tables (the CPU backend's, src/forward/cpu/weights.c). */
typedef struct ac_mat {
    char name[96];         /* tensor name, for messages                      */
    int n_out, n_in;       /* rows (ne[1]), columns (ne[0])                  */
    uint32_t type;         /* enum ggml_dtype of `data`                      */
    size_t row_bytes;      /* bytes of one row of `data`                     */
    const void *data;      /* [n_out] rows of row_bytes, in the file mapping */
    const float *f32;      /* [n_out][n_in] when usable in place, else NULL  */
    void *packed;          /* backend-packed copy (owned by the backend's weights) or NULL, layout per `pack` */
    void *packed_md;       /* AC_PACK_DNNL: its oneDNN memory descriptor (owned likewise) */
    int pack;              /* AC_PACK_NONE, AC_PACK_BF16 (own panels), AC_PACK_DNNL (oneDNN blocked), AC_PACK_F32
                              (row-major f32 copy, `f32` = `packed`), AC_PACK_F32P (f32 in the own GEMM's panels),
                              AC_PACK_F16P (f16 in those panels) */
} ac_mat;

enum {
    AC_PACK_NONE = 0,
    AC_PACK_BF16 = 1,
    AC_PACK_DNNL = 2,
    AC_PACK_F32 = 3, /* widened to an owned row-major f32 copy (`f32` points at it) */
    AC_PACK_F32P = 4, /* widened to f32 straight into the own F32 GEMM's panels [ceil(N/64)][K][64] (`f32` NULL) */
    AC_PACK_F16P = 5  /* F16 weights kept in f16 in those panels (`packed`: uint16 [ceil(N/64)][K][64]), widened by
                         each F32 task at the x86 levels (F16C); half the bytes, the same f32 values */
};

typedef struct ac_layer {
    /* llama/qwen2: norm1 = attn_norm (before attention), norm2 = ffn_norm (before MLP), RMSNorm, no bias.
     * bert: norm1 = attn_output_norm (after attention + residual), norm2 = layer_output_norm (after MLP +
     * residual), LayerNorm with bias. */
    const float *norm1_w, *norm1_b; /* [n_embd] (b: bert only)   */
    const float *norm2_w, *norm2_b; /* [n_embd]                  */
    ac_mat wq, wk, wv, wo;          /* [H*hd][D], [Hkv*hd][D] x2, [D][H*hd] */
    const float *bq, *bk, *bv, *bo; /* [H*hd], [Hkv*hd] x2, [D]; NULL if absent */
    ac_mat w_gate, w_up, w_down;    /* [F][D], [F][D], [D][F]; w_gate unused (n_out 0) for bert */
    const float *b_up, *b_down;     /* [F], [D]; bert, NULL if absent */
} ac_layer;

typedef struct ac_hparams {
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_rot;          /* rotary dims (<= head_dim, even)                  */
    int rope_neox;      /* 0: adjacent pairs (2i,2i+1) llama; 1: (i, i+n_rot/2) qwen2 */
    float rope_base;
    float rope_scale;   /* linear position scaling (1/factor), 1 if none */
    float norm_eps;
    int causal;
    int pooling;        /* enum ac_pooling; model default                   */
    int has_rank_head;  /* pooling_type == RANK (4) in the file             */
    int n_types;        /* bert token types (rows of token_types), 0 if absent */
} ac_hparams;

struct ac_model {
    ac_gguf_file *gguf;     /* owned mapping */
    ac_vocab *vocab;     /* owned tokenizer (NULL if the file has no tokenizer metadata) */
    ac_model_info info;  /* strings owned by the model */

    /* ---- added by the forward stage ---- */
    ac_hparams hp;
    char arch_name[32], name[128];
    void *file_buf;            /* owned copy of the file (use_mmap = 0 or memory loads), or NULL */

    const ac_gguf_tensor *tok_embd;    /* [n_vocab][D] any type (row lookup with conversion) */
    const float *type_embd0;        /* [D] token type 0 row (bert), NULL if absent */
    const ac_gguf_tensor *pos_embd;    /* [n_ctx_train][D] (bert) */
    const float *embd_norm_w, *embd_norm_b; /* [D] (bert token_embd_norm) */
    const float *out_norm_w;        /* [D] (llama/qwen2 output_norm) */
    const float *rope_freqs;        /* [n_rot/2] frequency divisors (llama3 rope_freqs), NULL if absent */
    ac_mat output;                  /* [n_vocab][D] LM head (decoders; tied = token_embd data) */
    int has_output;
    ac_mat cls, cls_out;            /* classifier: [D][D] dense+tanh (optional), [n_cls][D] */
    const float *cls_b, *cls_out_b; /* [D], [n_cls] */
    int has_cls, has_cls_out;
    int vocab_only;     /* loaded with ac_model_params.vocab_only: no weights */
    int cls_mean_l2;    /* 1: the head reads the L2-normalised mean pool (attncache.head.input = mean_l2), 0: CLS/last token */

    ac_layer *layers;               /* [n_layer] */

    float **owned_f32;              /* converted small tensors (norms, biases), owned */
    int n_owned, cap_owned;
    ac_model_params params;         /* as loaded (f32_math: the arithmetic the backends prepare for) */
    int load_flags;                 /* AC_LOAD_* flags of the load (hints for the CPU backend) */
    /* Backends' copies of this model's tables, when a backend's view of the model (struct copy
     * made by the CPU backend) is what its kernels read: how its matrices are laid out (AC_PACK_*),
     * and 1 in fast_fallback when the fast (bf16) mode was asked but the CPU level has no BF16
     * kernel (the exact f32 path runs). Both 0 in a loaded model. */
    int pack;
    int fast_fallback;
    int f32_panels;                 /* 1: the view's F32 matrices are copied into the own GEMM's F32 panels */
    struct ac_model_preps *preps;   /* what backends prepared from this model (ac_model_prepared), owned */
};

/* Internal load entry points (tests, tools). flags: */
enum {
    AC_LOAD_NO_VOCAB = 1,   /* do not build the tokenizer even if metadata is present */
    /* hints recorded on the model for the CPU backend's weight preparation: */
    AC_LOAD_NO_PACK = 2,    /* no packed or widened copies (only on-the-fly conversion) */
    AC_LOAD_PACK_DNNL = 4,  /* pack for oneDNN's BF16 matmul instead of the own BF16 kernel */
};
int ac_model_load_ex(const char *path, const ac_model_params *params, int flags, ac_model **out);
/* From a GGUF image in memory. The buffer is copied when params->use_mmap == 0, else
 * borrowed (it must outlive the model). */
int ac_model_load_memory(const void *buf, size_t size, const ac_model_params *params, int flags,
                         ac_model **out);

/* What backends make of a model, kept with it. ac_model_prepared returns in *out the
 * data made for (owner, kind): the one made earlier, or make(m, kind, arg, out) called
 * now, once, under the model's lock (concurrent callers for the same model wait; the
 * model stays usable from other threads meanwhile for everything else). On success
 * the data belongs to the model: release(data) is called by ac_model_free. owner: any
 * address naming the backend (its ops table). A failed make is not kept (the next call
 * tries again) and its error is returned. */
typedef int (*ac_prep_make_fn)(const ac_model *m, int kind, void *arg, void **out);
int ac_model_prepared(const ac_model *m, const void *owner, int kind, ac_prep_make_fn make, void *arg,
                      void (*release)(void *data), void **out);

/* Every weight matrix of a model's tables (m itself, or a backend's view of it): the layers'
 * q, k, v, o, gate, up, down, then the LM head and classifier heads that are present, into
 * out[0 .. n) (borrowed, at most cap; AC_MODEL_MAX_MATS(m) is enough); returns n. */
#define AC_MODEL_MAX_MATS(m) (7 * (m)->hp.n_layer + 3)
int ac_model_mats(ac_model *m, ac_mat **out, int cap);

/* Convert row `row` of tensor data of `type` ([rows][n] elements) to f32. */
void ac_row_to_f32(uint32_t type, const void *data, size_t row_bytes, int64_t row, int64_t n, float *dst);

#endif
