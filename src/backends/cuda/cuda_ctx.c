/* cuda_ctx.c — the CUDA backend behind the forward-level backend table
 * (src/forward/backend.h: ac_backend_cuda), so that ac_ctx_new with
 * ac_ctx_params.backend = "cuda" reaches it like the CPU. Built (into the
 * forward stage's library) only with -DAC_CUDA=ON.
 *
 * A context owns its upload (ac_cuda_model: bf16 weights, f32 embeddings and
 * norms, the stream and the workspace, which one ac_cuda_model couples), made
 * at ac_ctx_new and freed at ac_ctx_free.
 *
 * The attention hook (the attention cache, ac_ctx_attach_cache) reaches the
 * GPU through ac_cuda_opts: before the layers run, every site (layer,
 * sequence) is asked `reuse` in the CPU forward's order (layer 0 first: the
 * cache's lookup, timed inside ac_forward); a site served whole gets the
 * stored rows as they are kept through the hook's `maps` (no decoding on the
 * host) and ac_cuda_forward runs only V and A.V from them; the others are
 * computed exactly. A recording hook (ac_cache_add) gets the materialised
 * kernel's maps copied back (`record`). What the GPU does not do yet is
 * refused with a clear error, never run differently: `supply` (dense f32
 * maps), partial rows (the cache's rows 'prefix' and exact tail), per-head
 * spans (--heads), a longer dense entry serving a shorter bidirectional
 * input, and recording mixed with reuse in one call.
 * Not here yet either: ac_lm_head on separate hidden states, and the GEMM and
 * attention settings of ac_ctx_params, which name CPU kernels. Per-stage
 * profiles (ac_ctx_params.profile) come from the backend's CUDA events.
 * Without a CUDA device (driver or GPU missing) `available` says so and
 * ac_ctx_new fails with that reason; nothing else is touched. */
#include "backends/cuda/cuda_backend.h"
#include "forward/backend.h"
#include "forward/forward.h"
#include "util/common.h"

#include <stdio.h>
#include <string.h>

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
    if (p->profile) ac_cuda_set_profile(c->be, 1);
    *out = c;
    return AC_OK;
}

static void cuda_ctx_free(ac_ctx *c) {
    ac_cuda_model_free(c->be);
    free(c);
}

/* One ac_forward call's view for the hook wrappers below. */
typedef struct hook_call {
    ac_ctx *c;
    const ac_seq *seqs;
} hook_call;

static ac_attn_site site_of(const hook_call *hc, int layer, int seq) {
    const ac_hparams *hp = &hc->c->loaded->hp;
    ac_attn_site s = {layer, seq, hc->seqs[seq].tokens, hc->seqs[seq].n_tokens, hp->n_head, hp->causal, NULL, 0,
                      ac_ctx_exact_from(hc->c, seq)};
    return s; /* x NULL: the cache computes the layer-0 states it keys on from the tokens */
}

/* ac_cuda_opts.serve_site over the hook: reuse (layer 0: the lookup), then the stored rows via `maps` */
static int hook_serve_site(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    hook_call *hc = user;
    ac_ctx *c = hc->c;
    const ac_attn_hook *h = &c->hook;
    const ac_hparams *hp = &c->loaded->hp;
    ac_attn_site site = site_of(hc, layer, seq);
    int r = h->reuse(h->user, &site);
    r = r < 0 ? 0 : r > L ? L : r;
    if (r < L && !hp->causal) r = 0; /* bidirectional rows depend on every token: all or none (as the CPU) */
    if (r > 0 && r < L)
        return ac_err(AC_ERR_UNSUPPORTED,
                      "backend 'cuda': the cache serves %d of %d rows (rows 'prefix', an exact tail or exact_from); "
                      "partial rows are not on the GPU yet",
                      r, L);
    if (!r) {
        if (h->head_span && hp->n_head <= AC_ATTN_SPAN_HEADS) { /* asked as the CPU asks a computed site */
            int span[AC_ATTN_SPAN_HEADS], n_sink = 0, n_end = 0;
            memset(span, 0, sizeof span);
            if (h->head_span(h->user, &site, span, &n_sink, &n_end) > 0)
                return ac_err(AC_ERR_UNSUPPORTED,
                              "backend 'cuda': the cache's per-head spans (head policy) are not on the GPU yet");
        }
        return 0;
    }
    ac_attn_maps m;
    memset(&m, 0, sizeof m);
    int rc = h->maps(h->user, &site, &m);
    if (rc) return rc;
    if (!m.causal && m.n_tokens != L)
        return ac_err(AC_ERR_UNSUPPORTED,
                      "backend 'cuda': a stored dense map of %d tokens serving %d tokens (allow_longer) is not on the "
                      "GPU yet",
                      m.n_tokens, L);
    out->maps = m.data, out->head_bytes = m.head_bytes;
    out->kind = m.kind, out->causal = m.causal, out->topk = m.topk;
    out->pageable = 1; /* the store's rows: a file mapping or the heap */
    ac_seq_plan *sp = &c->plan[seq];
    sp->map_layers++;
    sp->map_rows = L;
    return 1;
}

/* ac_cuda_opts.record over the hook: the materialised kernel's P [H][L][L], copied back */
static int hook_record(void *user, int layer, int seq, const float *P, int n_head, int L) {
    hook_call *hc = user;
    const ac_attn_hook *h = &hc->c->hook;
    ac_attn_site site = site_of(hc, layer, seq);
    (void)n_head, (void)L;
    if (h->want_record && !h->want_record(h->user, &site)) return AC_OK;
    return h->record(h->user, &site, P);
}

static int cuda_forward(ac_ctx *c, const ac_seq *seqs, int n_seq, ac_outputs *out) {
    c->n_plan = 0;
    for (int s = 0; s < n_seq; s++) {
        int rc = ac_ctx_check_seq(c, &seqs[s]);
        if (rc) return ac_err_prefix(rc, "sequence %d", s);
    }
    if (n_seq > c->cap_plan) {
        ac_seq_plan *np = realloc(c->plan, (size_t)n_seq * sizeof *np);
        if (!np) return ac_err(AC_ERR_NOMEM, "backend 'cuda': out of memory");
        c->plan = np;
        c->cap_plan = n_seq;
    }
    memset(c->plan, 0, (size_t)n_seq * sizeof *c->plan);
    for (int s = 0; s < n_seq; s++) c->plan[s].n_tokens = seqs[s].n_tokens;
    ac_cuda_opts o;
    memset(&o, 0, sizeof o);
    hook_call hc = {c, seqs};
    int use_opts = 0;
    if (c->has_hook) {
        const ac_attn_hook *h = &c->hook;
        if (h->supply)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': an attention hook supplying dense maps is not on the GPU");
        const int reuse = h->reuse != NULL;
        if (reuse && !h->maps)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': the attention hook hands out no stored rows (maps)");
        if (reuse && h->record)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': recording and reuse in one call are not on the GPU yet");
        o.user = &hc;
        if (reuse) o.serve_site = hook_serve_site;
        if (h->record) o.record = hook_record;
        use_opts = reuse || h->record;
        if (!use_opts && h->head_span) { /* a hook with spans only: asked per site, as the CPU would */
            for (int il = 0; il < c->loaded->hp.n_layer; il++)
                for (int s = 0; s < n_seq; s++) {
                    int span[AC_ATTN_SPAN_HEADS], n_sink = 0, n_end = 0;
                    ac_attn_site site = site_of(&hc, il, s);
                    memset(span, 0, sizeof span);
                    if (c->loaded->hp.n_head <= AC_ATTN_SPAN_HEADS &&
                        h->head_span(h->user, &site, span, &n_sink, &n_end) > 0)
                        return ac_err(AC_ERR_UNSUPPORTED,
                                      "backend 'cuda': the cache's per-head spans (head policy) are not on the GPU yet");
                }
        }
    }
    int rc = ac_cuda_forward(c->be, seqs, n_seq, out, use_opts ? &o : NULL);
    if (rc) return rc;
    if (c->params.profile) { /* the backend's CUDA-event stages, in seconds, onto the context's */
        float ms[AC_CUDA_PROF_N];
        ac_cuda_get_profile(c->be, ms);
        static const int stage[AC_CUDA_PROF_N] = {AC_STAGE_NORM, AC_STAGE_QKV, AC_STAGE_ATTN, AC_STAGE_O,
                                                  AC_STAGE_MLP,  AC_STAGE_NORM, AC_STAGE_HEAD};
        for (int i = 0; i < AC_CUDA_PROF_N; i++) c->prof[stage[i]] += ms[i] * 1e-3;
    }
    c->n_plan = n_seq;
    return AC_OK;
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
