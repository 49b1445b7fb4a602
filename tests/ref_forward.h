/* ref_forward.h — for tests and benches of the forward stage:
 *  - ref_build: a random synthetic GGUF model (llama, qwen2, bert) written with
 *    the project's GGUF writer, any weight type (F32, F16, BF16, Q8_0);
 *  - ref_model / ref_forward: a plain, obviously correct reference forward pass
 *    (naive loops, double accumulation, one sequence), reading the weights back
 *    from the GGUF file on its own (own dequantisation), sharing no code with
 *    src/forward except the GGUF reader and the scalar fp16/bf16 converters. */
#ifndef AC_REF_FORWARD_H
#define AC_REF_FORWARD_H

#include "attncache.h"
#include "load/gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ref_spec {
    int arch;                       /* enum ac_arch */
    int n_vocab, n_ctx, n_embd, n_layer, n_head, n_head_kv, n_ff;
    int n_rot;                      /* 0: head_dim */
    uint32_t wtype;                 /* type of the matrices and token_embd */
    int tied;                       /* decoders: no output.weight */
    int qkv_bias;                   /* q/k/v biases (qwen2 needs them) */
    int o_bias;                     /* attn_output bias (llama) */
    int fused_qkv;                  /* one blk.N.attn_qkv tensor */
    int n_cls;                      /* classifier outputs (cls dense + cls.output), 0: none */
    int rope_freqs;                 /* write rope_freqs.weight */
    int causal;                     /* -1: arch default, else write {arch}.attention.causal */
    int pooling_type;               /* -1: not written */
    float rope_base, eps;
    float rope_linear;              /* > 0: write rope.scaling.type = linear with this factor */
    float wscale;                   /* matrix values ~ U(-1,1) * wscale / sqrt(n_in); 0: 1 */
    uint64_t seed;
    /* fault injection (NULL: none): a tensor left out, one written a row short, one written as Q4_0,
     * general.architecture replaced */
    const char *omit, *reshape, *q4, *arch_override;
} ref_spec;

/* A small default spec of each architecture. */
ref_spec ref_spec_default(int arch);

/* Fill a writer with the model of spec s (caller owns *out, ac_gguf_writer_free). */
int ref_build_writer(const ref_spec *s, ac_gguf_writer **out);
/* Build into memory (caller frees *buf). */
int ref_build(const ref_spec *s, uint8_t **buf, size_t *size);

typedef struct ref_layer {
    float *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
    float *n1w, *n1b, *n2w, *n2b;
    float *wg, *wu, *wd, *bu, *bd;
} ref_layer;

typedef struct ref_model {
    int arch, V, n_ctx, D, NL, H, HKV, HD, F, n_rot, neox, causal;
    double base, eps, rope_scale;
    float *tok, *type0, *pos, *en_w, *en_b, *out_norm, *out, *rope_ff;
    float *cls_w, *cls_b, *clso_w, *clso_b;
    int n_cls, has_cls;
    ref_layer *L;
} ref_model;

/* Read the model back from a GGUF (weights dequantised independently). */
int ref_model_init(ref_model *r, const ac_gguf_file *g);
void ref_model_free(ref_model *r);

/* One sequence: hidden [n][D] final hidden states (after the final norm);
 * logits [V] of the last position (NULL to skip; decoders);
 * cls [n_cls] (NULL to skip). */
void ref_forward(const ref_model *r, const int32_t *tok, int n, double *hidden, double *logits, double *cls);

/* max |a - r| / max |r| */
double ref_rel_err_f(const float *a, const double *r, size_t n);

/* Random ids in [0, V) (xorshift). */
void ref_random_tokens(uint64_t *state, int32_t *ids, int n, int V);

#endif
