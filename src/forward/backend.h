/* backend.h — the forward-level backend interface (ggml's backend table and
 * text-embeddings-inference's Backend::embed are the models): a backend owns
 * what it makes of a model's weights (packing, widening, a device upload),
 * its contexts' private state, its kernels and its attention. ac_ctx_new picks
 * one by name (ac_ctx_params.backend) from the registry in backend.c, and the
 * public context functions (ac_forward, ac_lm_head, ac_ctx_describe,
 * ac_ctx_free) dispatch through its table.
 *
 * Backends:
 *   "cpu"   src/forward/forward.c + src/forward/cpu (the default, always built):
 *           its GEMMs (ac_ctx_params.gemm), CPU levels, the attention hook (the
 *           attention cache) and the weights of cpu/weights.c.
 *   "cuda"  src/backends/cuda (built with -DAC_CUDA=ON; usable where a CUDA
 *           device is present): cuda_ctx.c fills the table over
 *           ac_cuda_model_upload / ac_cuda_forward.
 *
 * Weights: a backend prepares what it needs of a model when the first context
 * asks (ac_model_prepared keeps it on the model, made once under the model's
 * lock, released by ac_model_free), or per context where its data cannot be
 * shared. The loader (src/load) calls no backend.
 *
 * Contexts: struct ac_ctx (forward.h) holds what every backend shares (the
 * model, the parameters, the token limit, the attention hook, the profile);
 * `be` is the backend's private state. The CPU backend's state is the rest of
 * struct ac_ctx (its workspace), which predates this table. */
#ifndef AC_BACKEND_H
#define AC_BACKEND_H

#include "attncache.h"
#include "load/model.h"

#include <stddef.h>

typedef struct ac_backend_ops {
    const char *name; /* "cpu", "cuda": the value of ac_ctx_params.backend */
    /* 1 if contexts can run here, else 0 with a reason in why[n] ("no CUDA device (driver or
     * GPU missing)"). NULL: always available. */
    int (*available)(char *why, size_t n);
    /* A new context on model m (borrowed; outlives it) with parameters p (checked for what
     * every backend shares): its weights prepared or found, its private state made. ac_ctx_new
     * then sets the shared fields ops and max_tokens. Caller owns *out (ac_ctx_free). */
    int (*ctx_new)(const ac_model *m, const ac_ctx_params *p, ac_ctx **out);
    /* Frees the context's private state and the context (its hook already released). */
    void (*ctx_free)(ac_ctx *c);
    /* ac_forward and ac_lm_head of this backend (arguments as in attncache.h). */
    int (*forward)(ac_ctx *c, const ac_seq *seqs, int n_seq, ac_outputs *out);
    int (*lm_head)(ac_ctx *c, const float *h, int n, float *logits);
    /* One line naming the backend and its kernels into buf[n]; returns buf. */
    const char *(*describe)(const ac_ctx *c, char *buf, int n);
} ac_backend_ops;

extern const ac_backend_ops ac_backend_cpu;
#ifdef AC_HAVE_CUDA
extern const ac_backend_ops ac_backend_cuda;
#endif

/* The backend named `name` (NULL or "": "cpu"). AC_ERR_ARG for a name no backend has,
 * AC_ERR_UNSUPPORTED for one this build or machine cannot run (the message says why). */
int ac_backend_find(const char *name, const ac_backend_ops **out);

#endif
