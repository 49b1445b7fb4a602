/* cuda_ctx.c — the CUDA backend behind the forward-level backend table
 * (src/forward/backend.h: ac_backend_cuda), so that ac_ctx_new with
 * ac_ctx_params.backend = "cuda" reaches it like the CPU. Built (into the
 * forward stage's library) only with -DAC_CUDA=ON.
 *
 * A context owns its upload (ac_cuda_model: bf16 weights, f32 embeddings and
 * norms, the stream and the workspace, which one ac_cuda_model couples), made
 * at ac_ctx_new and freed at ac_ctx_free. Not here yet: the attention hook
 * (the attention cache; a context with one refuses to run, rather than run
 * without it), ac_lm_head on separate hidden states, and the GEMM, attention
 * and profiling settings of ac_ctx_params, which name CPU kernels.
 * Without a CUDA device (driver or GPU missing) `available` says so and
 * ac_ctx_new fails with that reason; nothing else is touched. */
#include "backends/cuda/cuda_backend.h"
#include "forward/backend.h"
#include "forward/forward.h"
#include "util/common.h"

#include <stdio.h>

static int cuda_available(char *why, size_t n) {
    if (ac_cuda_available()) return 1;
    snprintf(why, n, "no CUDA device (driver or GPU missing)");
    return 0;
}

static int cuda_ctx_new(const ac_model *m, const ac_ctx_params *p, ac_ctx **out) {
    ac_ctx *c = AC_CALLOC(1, sizeof *c);
    if (!c) return AC_ERR_NOMEM;
    int rc = ac_cuda_model_upload(m, AC_CUDA_BF16, (ac_cuda_model **)&c->be);
    if (rc) {
        free(c);
        return ac_err_prefix(rc, "backend 'cuda'");
    }
    c->loaded = c->model = m;
    c->params = *p;
    c->n_threads = 1;
    *out = c;
    return AC_OK;
}

static void cuda_ctx_free(ac_ctx *c) {
    ac_cuda_model_free(c->be);
    free(c);
}

static int cuda_forward(ac_ctx *c, const ac_seq *seqs, int n_seq, ac_outputs *out) {
    if (c->has_hook)
        return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': the attention cache (attention hook) is not wired to the GPU yet");
    for (int s = 0; s < n_seq; s++) {
        int rc = ac_ctx_check_seq(c, &seqs[s]);
        if (rc) return ac_err_prefix(rc, "sequence %d", s);
    }
    return ac_cuda_forward(c->be, seqs, n_seq, out, NULL);
}

static int cuda_lm_head(ac_ctx *c, const float *h, int n, float *logits) {
    (void)c, (void)h, (void)n, (void)logits;
    return ac_err(AC_ERR_UNSUPPORTED,
                  "backend 'cuda': ac_lm_head on given hidden states is not available (ac_forward's logits are)");
}

static const char *cuda_describe(const ac_ctx *c, char *buf, int n) {
    (void)c;
    char dev[200];
    if (ac_cuda_device_name(dev, sizeof dev) != AC_OK) snprintf(dev, sizeof dev, "(device unknown)");
    snprintf(buf, (size_t)n, "cuda %s; bf16 weights, cuBLASLt GEMMs, fused attention", dev);
    return buf;
}

const ac_backend_ops ac_backend_cuda = {"cuda", cuda_available, cuda_ctx_new, cuda_ctx_free,
                                        cuda_forward, cuda_lm_head, cuda_describe};
