/* projector.h — the attention cache's feature projector (AttnCache's
 * "Siamese" MLP): x (fixed-size summary of the layer-0 normed token
 * embeddings) -> z = W2 relu(W1 ((x - mu) / sigma) + b1) + b2, trained in C so
 * that ||z_a - z_b||_2 predicts the attention-map difference of inputs a, b
 * (SmoothL1 loss, Adam). Saved as a small GGUF file. */
#ifndef AC_PROJECTOR_H
#define AC_PROJECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "q8mat.h"

typedef struct ac_projector {
    int in_dim, hidden, out_dim;
    float *mu;    /* [in_dim]  input mean (standardisation)      */
    float *isig;  /* [in_dim]  1 / input std                      */
    float *w1;    /* [hidden][in_dim]                             */
    float *b1;    /* [hidden]                                     */
    float *w2;    /* [out_dim][hidden]                            */
    float *b2;    /* [out_dim]                                    */
    /* Lookup copies of W1, W2 (ac_proj_pack): int8 rows for VNNI GEMVs
     * (q8mat.h: the key of a 1537 -> 256 -> 128 projector 117 -> ~18 us,
     * cold); k1.w NULL: unpacked, the f32 weights serve. */
    ac_q8mat k1, k2;
    uint64_t trained_on; /* fingerprint of the model whose features it was trained on (0: none) */
} ac_projector;

/* A training pair: rows a and b of the feature matrix, target distance. */
typedef struct ac_proj_pair {
    int a, b;
    float target;
} ac_proj_pair;

typedef struct ac_proj_train_params {
    int epochs;      /* passes over the pairs (default 30) */
    int batch;       /* pairs per step (default 64) */
    float lr;        /* Adam learning rate (default 1e-3) */
    float beta;      /* SmoothL1 transition point (default: 0.1 x mean target) */
    uint64_t seed;
    int verbose;     /* print loss per epoch to stderr */
} ac_proj_train_params;

ac_proj_train_params ac_proj_default_train_params(void);

/* Random init (He for W1, Xavier for W2), identity standardisation.
 * Caller owns *out (ac_proj_free). */
int ac_proj_new(int in_dim, int hidden, int out_dim, uint64_t seed, ac_projector **out);
void ac_proj_free(ac_projector *p);

/* z[n][out_dim] = f(x[n][in_dim]), with the int8 lookup weights when packed
 * (every key of a database and every query key come from this one function,
 * so they agree exactly); training uses the f32 weights. */
int ac_proj_apply(const ac_projector *p, const float *x, int n, float *z);
/* (Re)build the int8 lookup copies from the f32 weights. ac_proj_new,
 * ac_proj_train and ac_proj_load call it; call it again after changing the
 * weights by hand. AC_OK or AC_ERR_NOMEM. */
int ac_proj_pack(ac_projector *p);
/* One lookup key z[out_dim] = f(x[in_dim]): ac_proj_apply of one vector
 * (same values) without its thread team. */
int ac_proj_key(const ac_projector *p, const float *x, float *z);
/* n lookup keys z[n][out_dim] of x[n][in_dim] (a batch of queries): row i
 * bitwise equal to ac_proj_key of x row i. Packed: the two int8 layers as
 * ac_q8mat_gemm (each weight block read once for all n); unpacked:
 * ac_proj_apply. AC_OK, AC_ERR_ARG or AC_ERR_NOMEM. */
int ac_proj_keys(const ac_projector *p, const float *x, int n, float *z);

/* Sets the standardisation from X, then trains on the pairs. X [n][in_dim].
 * *final_loss (optional): mean loss of the last epoch. */
int ac_proj_train(ac_projector *p, const float *X, int n, const ac_proj_pair *pairs, int n_pairs,
                  const ac_proj_train_params *tp, double *final_loss);

/* Mean SmoothL1-free diagnostics: mean |dist - target| over pairs. */
double ac_proj_eval_mae(const ac_projector *p, const float *X, const ac_proj_pair *pairs, int n_pairs);

/* Persist as GGUF (atomic); load verifies shapes and finiteness. */
int ac_proj_save(const ac_projector *p, const char *path);
int ac_proj_load(const char *path, ac_projector **out);
/* Hash of all parameters (a database records the projector it was built with). */
uint64_t ac_proj_fingerprint(const ac_projector *p);

#endif
