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
 * cache's lookup, timed inside ac_forward, keyed on the layer-0 summary the
 * GPU computed after the embeddings: ac_attn_site.summary; every sequence
 * looked up at once through the hook's lookup_all, in parallel); a site
 * served whole gets the stored rows as they are kept through the hook's
 * `maps` (no decoding on the host; their identity lets the backend keep them
 * in device memory) and ac_cuda_forward runs only V and A.V from them; the others are
 * computed exactly. A recording hook (ac_cache_add) gets the materialised
 * kernel's maps copied back (`record`). A site served in part (the cache's
 * rows 'prefix', exact tails, exact_from: reuse returns R < L on a causal
 * model) gets its stored rows [0, R) through A.V and rows [R, L) computed
 * exactly over every key (ac_cuda_site_maps.rows); a site served for some
 * heads only (serve_heads) gets those heads' rows from the maps and the
 * others computed (ac_cuda_site_maps.heads). What the GPU does not do yet is
 * refused with a clear error, never run differently: `supply` (dense f32
 * maps), per-head key spans (--heads policy), a longer dense entry serving a
 * shorter bidirectional input, and recording mixed with reuse in one call.
 * The prefix hook (ac_ctx_attach_prefix, forward.h ac_kv_hook) runs here too:
 * lookups on the host before the call, the rows it gives uploaded and only
 * the new rows computed (ac_cuda_opts.pfx_*), insert after it (kv_begin /
 * kv_end below); hot prefixes stay in device memory (the device prefix cache,
 * cuda_prefix_cache.cu: the hook's match says P, a resident block of those P
 * tokens skips the lookup and the upload). Both caches on one context run
 * the CPU forward's plan: a sequence's first P rows from the prefix cache,
 * then rows [P, R) from the maps where the attention cache serves past P
 * (R <= L - 1: every row's K is computed for the insert), the rest exact;
 * ac_ctx_last_plan reports prefix_rows, map_rows (R - P) and map_layers.
 * A reusing hook is watched by the measured-gain guard (src/forward/gain.h;
 * ac_ctx_params.gain_guard): every call is timed per token, lookups included,
 * and while calls that use the cache run slower than calls without it (short
 * texts: a host lookup costs about what the whole exact forward of the text
 * does on the device), calls run without it, but for probes.
 * Not here yet either: the GEMM and attention settings of ac_ctx_params, which
 * name CPU kernels. Per-stage
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
    c->gain_on = 1; /* the measured-gain guard (gain.h) applies here unless params say -1 */
    ac_gain_reset(&c->gain);
    if (p->profile) ac_cuda_set_profile(c->be, 1);
    *out = c;
    return AC_OK;
}

static void cuda_ctx_free(ac_ctx *c) {
    ac_cuda_model_free(c->be);
    ac_cuda_host_free(c->pkv); /* (pinned: kv_begin) */
    free(c);
}

/* AC_CUDA_HOST_FEATURES=1 (measurements: the session-10 path side by side): no layer-0 summary on the
 * device and no parallel lookup_all; the cache recomputes the states from the tokens, one sequence
 * after another. */
static int host_features(void) {
    const char *e = getenv("AC_CUDA_HOST_FEATURES");
    return e && *e && strcmp(e, "0") != 0;
}

/* AC_CUDA_PARTIAL_RUN (measurements): 1 partly served sequences always as runs, 0 always one at a time;
 * unset: the backend's choice (ac_cuda_opts.partial_run 0). */
static int partial_run_env(void) {
    const char *e = getenv("AC_CUDA_PARTIAL_RUN");
    return !e || !*e ? 0 : strcmp(e, "0") != 0 ? 1 : -1;
}

/* One ac_forward call's view for the hook wrappers below. */
typedef struct hook_call {
    ac_ctx *c;
    const ac_seq *seqs;
    int n_seq;
    int host_features; /* host_features() at the call */
    const int *P;      /* [n_seq] rows given by the prefix cache this call (kv_begin), or NULL: none */
    uint8_t mask[AC_ATTN_SPAN_HEADS]; /* the last site's serve_heads answer (lent to the backend per site) */
} hook_call;

static ac_attn_site site_of(const hook_call *hc, int layer, int seq) {
    const ac_hparams *hp = &hc->c->loaded->hp;
    ac_attn_site s = {.layer = layer, .seq = seq, .tokens = hc->seqs[seq].tokens, .n_tokens = hc->seqs[seq].n_tokens,
                      .n_head = hp->n_head, .causal = hp->causal, .x = NULL, .first = hc->P ? hc->P[seq] : 0,
                      .summary = NULL,
                      .exact_from = ac_ctx_exact_from(hc->c, seq), .heads = NULL};
    /* x NULL (the states stay on the device); layer 0: their segment means, computed there (opts.summary),
       which the cache keys on instead of recomputing the states from the tokens */
    if (layer == 0) s.summary = ac_cuda_layer0_summary(hc->c->be, seq);
    return s;
}

/* ac_cuda_opts.serve_site over the hook: reuse (layer 0: the lookup), then the stored rows via `maps` */
static int hook_serve_site(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    hook_call *hc = user;
    ac_ctx *c = hc->c;
    const ac_attn_hook *h = &c->hook;
    const ac_hparams *hp = &c->loaded->hp;
    ac_attn_site site = site_of(hc, layer, seq);
    if (layer == 0 && seq == 0 && h->lookup_all && !hc->host_features) { /* every sequence's lookup, in parallel */
        ac_attn_site *all = malloc((size_t)hc->n_seq * sizeof *all);
        int rc = all ? AC_OK : AC_ERR_NOMEM;
        for (int s = 0; all && s < hc->n_seq; s++) all[s] = site_of(hc, 0, s);
        if (all) rc = h->lookup_all(h->user, all, hc->n_seq);
        free(all);
        if (rc) ac_err_clear(); /* not fatal: reuse then looks each sequence up itself */
    }
    /* rows [0, r) served, as the CPU forward decides them (forward.c attention_block) */
    const int P = site.first; /* rows given by the prefix cache: not computed at all */
    int r = h->reuse(h->user, &site);
    r = r < 0 ? 0 : r > L ? L : r;
    if (r < L && !hp->causal) r = 0; /* bidirectional rows depend on every token: all or none (as the CPU) */
    if (hc->P && r > L - 1) r = L - 1; /* with the prefix cache every row's K is computed (for its insert) */
    if (r <= P) r = 0;                 /* nothing past the given rows */
    int per_head = 0; /* some heads served, the others computed (serve_heads) */
    if (r > 0 && P == 0 && h->serve_heads && hp->n_head <= AC_ATTN_SPAN_HEADS) { /* as the CPU asks a served site */
        memset(hc->mask, 1, (size_t)hp->n_head);
        const int nh = h->serve_heads(h->user, &site, hc->mask);
        if (nh <= 0) r = 0;
        per_head = nh > 0 && nh < hp->n_head;
    }
    if (!r) {
        if (!P && h->head_span && hp->n_head <= AC_ATTN_SPAN_HEADS) { /* asked as the CPU asks a computed site */
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
    out->ident[0] = m.ident[0], out->ident[1] = m.ident[1]; /* the device map cache keeps them by it */
    out->rows = r; /* r < L: rows [r, L) computed exactly over every key (rows 'prefix', exact tails) */
    out->heads = per_head ? hc->mask : NULL; /* the others computed exactly on every row */
    ac_seq_plan *sp = &c->plan[seq];
    sp->map_layers++;
    sp->map_rows = r - P > sp->map_rows ? r - P : sp->map_rows;
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

/* The prefix hook (ac_ctx_attach_prefix) on the GPU: before the call, every sequence is offered to
 * `lookup` with its rows in c->pkv (ac_kv_rows: f32, ld = L, sequences back to back, the CPU
 * forward's layout; pinned memory here, so the backend's copies are DMAs overlapped with the
 * layers); the P rows it gives go to ac_cuda_forward as given rows (uploaded, not computed), which
 * writes the rows it computes back into the same buffers; after a successful call `insert` gets
 * every row. The tree itself stays in host memory. With the device prefix cache on (budget > 0) and a
 * hook that has `match`: a sequence whose matched P tokens have a resident block (found, pinned for the
 * call) is not looked up at all (pfx_res: no copy out of the tree, no upload; insert is told that rows
 * [0, P) were not filled); every host-given prefix is made resident (pfx_keep). */
typedef struct kv_call {
    int *P, *ld;      /* [n_seq] */
    float **kv, **hid; /* [n_seq] each sequence's rows in c->pkv */
    unsigned char *res; /* [n_seq] 1: rows [0, P) resident in the device prefix cache (not looked up) */
} kv_call;

/* 1: the prefix hook takes part (rows set up, lookups done, o's pfx_* set); 0: it does not (no hook,
 * or no memory for the rows: this call runs without it, as on the CPU). */
static int kv_begin(ac_ctx *c, const ac_seq *seqs, int n_seq, kv_call *kc, ac_cuda_opts *o) {
    const ac_hparams *hp = &c->loaded->hp;
    const int kvd = hp->n_head_kv * hp->head_dim;
    const size_t tok_floats = (size_t)hp->n_layer * 2 * kvd + hp->n_embd;
    size_t T = 0, n;
    for (int s = 0; s < n_seq; s++) T += (size_t)seqs[s].n_tokens;
    memset(kc, 0, sizeof *kc);
    kc->P = AC_CALLOC((size_t)n_seq, sizeof *kc->P), kc->ld = AC_CALLOC((size_t)n_seq, sizeof *kc->ld);
    kc->kv = AC_CALLOC((size_t)n_seq, sizeof *kc->kv), kc->hid = AC_CALLOC((size_t)n_seq, sizeof *kc->hid);
    kc->res = AC_CALLOC((size_t)n_seq, 1);
    int room = kc->P && kc->ld && kc->kv && kc->hid && kc->res && ac_mul_ok(T, tok_floats * sizeof(float), &n);
    if (room && T * tok_floats > c->cap_pkv) { /* pinned: the backend's copies to and from it overlap the layers */
        ac_cuda_host_free(c->pkv);
        c->cap_pkv = 0;
        if ((c->pkv = ac_cuda_host_alloc(n))) c->cap_pkv = T * tok_floats;
        room = c->pkv != NULL;
    }
    if (!room) {
        free(kc->P), free(kc->ld), free(kc->kv), free(kc->hid), free(kc->res);
        memset(kc, 0, sizeof *kc);
        ac_err_clear();
        return 0;
    }
    c->pkv_valid = 0; /* (the CPU forward's kept rows: not used here) */
    /* the device prefix cache: a hook that says P without copying (match) lets a resident prefix skip
       the lookup's copy and the upload */
    const ac_kv_hook *kh = &c->kv_hook;
    const int dev = kh->match && ac_cuda_prefix_cache_on(c->be);
    size_t off = 0;
    for (int s = 0; s < n_seq; s++) {
        const int L = seqs[s].n_tokens;
        float *base = c->pkv + off * tok_floats;
        ac_kv_rows kr = {base, base + (size_t)hp->n_layer * 2 * L * kvd, L, kvd, hp->n_layer, hp->n_embd, L, 0, 0};
        int P = 0;
        if (dev && L >= 2) {
            const int m = kh->match(kh->user, seqs[s].tokens, L, 0);
            if (m > 0 && m <= L - 1 && ac_cuda_prefix_cache_find(c->be, seqs[s].tokens, m)) {
                kh->match(kh->user, seqs[s].tokens, L, 1); /* counted as the hook's hit */
                P = m, kc->res[s] = 1;
            }
        }
        if (!kc->res[s]) P = kh->lookup ? kh->lookup(kh->user, seqs[s].tokens, &kr) : 0;
        kc->P[s] = P < 0 ? 0 : P > L - 1 ? L - 1 : P;
        kc->ld[s] = L, kc->kv[s] = kr.kv, kc->hid[s] = kr.hid;
        c->plan[s].prefix_rows = kc->P[s];
        off += (size_t)L;
    }
    o->pfx_P = kc->P, o->pfx_ld = kc->ld, o->pfx_kv = kc->kv, o->pfx_hid = kc->hid;
    o->pfx_res = dev ? kc->res : NULL, o->pfx_keep = dev;
    return 1;
}

/* After the call: every sequence's rows to `insert` (ok), and the call's arrays freed. */
static void kv_end(ac_ctx *c, const ac_seq *seqs, int n_seq, kv_call *kc, int ok) {
    const ac_hparams *hp = &c->loaded->hp;
    if (ok && c->kv_hook.insert)
        for (int s = 0; s < n_seq; s++) {
            const int L = seqs[s].n_tokens;
            /* resident rows were not copied out of the tree: insert stores none of them */
            ac_kv_rows kr = {kc->kv[s], kc->hid[s], L, hp->n_head_kv * hp->head_dim, hp->n_layer, hp->n_embd, L, 0,
                             kc->res[s] ? kc->P[s] : 0};
            c->kv_hook.insert(c->kv_hook.user, seqs[s].tokens, &kr, kc->P[s]);
        }
    free(kc->P), free(kc->ld), free(kc->kv), free(kc->hid), free(kc->res);
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
    hook_call hc = {c, seqs, n_seq, host_features(), NULL, {0}};
    int use_opts = 0;
    /* the measured-gain guard: a reusing cache whose calls run slower per token than exact
     * ones is left out of this call (but for probes); the hook is not asked at all */
    const int guard = c->has_hook && c->hook.reuse && !c->hook.record && c->gain_on && c->params.gain_guard >= 0;
    const int skip_cache = guard && ac_gain_next(&c->gain) == AC_GAIN_EXACT;
    int64_t n_tok = 0;
    for (int s = 0; s < n_seq; s++) n_tok += seqs[s].n_tokens;
    const double t_call = ac_now();
    if (c->has_hook && !skip_cache) {
        const ac_attn_hook *h = &c->hook;
        if (h->supply)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': an attention hook supplying dense maps is not on the GPU");
        const int reuse = h->reuse != NULL;
        if (reuse && !h->maps)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': the attention hook hands out no stored rows (maps)");
        if (reuse && h->record)
            return ac_err(AC_ERR_UNSUPPORTED, "backend 'cuda': recording and reuse in one call are not on the GPU yet");
        o.user = &hc;
        if (reuse) o.serve_site = hook_serve_site, o.summary = hc.host_features ? 0 : AC_ATTN_SUMMARY_SEGMENTS;
        if (reuse) o.partial_run = partial_run_env();
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
    /* the prefix cache takes part unless a hook wants whole maps (supply, record), as on the CPU; with the
       attention cache too (the CPU's planner): the prefix rows first, then the maps serve rows past them
       (hook_serve_site), the rest exact. The layer-0 summary needs every row's states, and only rows past
       the given ones are embedded on the device: the cache computes the states from the tokens instead */
    const int kv_want = c->has_kv_hook && c->loaded->hp.causal && !(c->has_hook && (c->hook.supply || c->hook.record));
    kv_call kc;
    const int kv_on = kv_want && kv_begin(c, seqs, n_seq, &kc, &o);
    if (kv_on && o.serve_site) o.summary = 0, hc.P = kc.P;
    int rc = ac_cuda_forward(c->be, seqs, n_seq, out, use_opts || kv_on ? &o : NULL);
    if (kv_on) kv_end(c, seqs, n_seq, &kc, rc == AC_OK);
    if (rc) return rc;
    if (guard) ac_gain_note(&c->gain, ac_now() - t_call, n_tok);
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
    return ac_cuda_lm_head(c->be, h, n, logits);
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
