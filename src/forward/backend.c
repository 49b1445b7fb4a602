/* backend.c — the registry of forward-level backends (backend.h) and the
 * public context functions, which check what every backend shares and
 * dispatch through the context's table. */
#include "forward/backend.h"
#include "forward/forward.h"
#include "util/common.h"

#include <stdio.h>
#include <string.h>

static const ac_backend_ops *const registry[] = {
    &ac_backend_cpu,
#ifdef AC_HAVE_CUDA
    &ac_backend_cuda,
#endif
};

/* Names this build knows but cannot run, with the reason. */
static const char *unbuilt(const char *name) {
#ifndef AC_HAVE_CUDA
    if (!strcmp(name, "cuda")) return "this attncache was built without the CUDA backend (cmake -DAC_CUDA=ON)";
#endif
    (void)name;
    return NULL;
}

int ac_backend_find(const char *name, const ac_backend_ops **out) {
    *out = NULL;
    if (!name || !*name) name = "cpu";
    for (size_t i = 0; i < sizeof registry / sizeof *registry; i++) {
        const ac_backend_ops *b = registry[i];
        if (strcmp(b->name, name)) continue;
        char why[256] = "";
        if (b->available && !b->available(why, sizeof why))
            return ac_err(AC_ERR_UNSUPPORTED, "backend '%s' cannot run here: %s", name, why);
        *out = b;
        return AC_OK;
    }
    const char *reason = unbuilt(name);
    if (reason) return ac_err(AC_ERR_UNSUPPORTED, "backend '%s': %s", name, reason);
    return ac_err(AC_ERR_ARG, "unknown backend '%.64s' (expected cpu or cuda)", name);
}

/* The checks for every backend (model, thread count, attention kind, token limit), and the
 * context's token limit for the model. */
static int params_check(const ac_model *m, const ac_ctx_params *p, int *max_tokens) {
    if (m->vocab_only) return ac_err(AC_ERR_ARG, "model was loaded vocab-only (no weights): no context");
    if (p->n_threads < 0 || p->n_threads > 1024) return ac_err(AC_ERR_ARG, "ac_ctx_new: n_threads %d", p->n_threads);
    if (p->attn != AC_ATTN_FUSED && p->attn != AC_ATTN_MATERIALIZED)
        return ac_err(AC_ERR_ARG, "ac_ctx_new: attention kind %d", p->attn);
    if (p->max_tokens < 0) return ac_err(AC_ERR_ARG, "ac_ctx_new: max_tokens %d", p->max_tokens);
    const ac_hparams *hp = &m->hp;
    int mt = p->max_tokens ? p->max_tokens : hp->n_ctx_train;
    if (m->info.arch == AC_ARCH_BERT && mt > hp->n_ctx_train) mt = hp->n_ctx_train; /* BERT: no positions past it */
    *max_tokens = mt;
    return AC_OK;
}

int ac_ctx_new(const ac_model *model, const ac_ctx_params *params, ac_ctx **out) {
    if (!model || !out) return ac_err(AC_ERR_ARG, "ac_ctx_new: NULL argument");
    *out = NULL;
    const ac_ctx_params p = params ? *params : ac_ctx_default_params();
    int mt = 0, rc;
    if ((rc = params_check(model, &p, &mt))) return rc;
    const ac_backend_ops *b;
    if ((rc = ac_backend_find(p.backend, &b))) return rc;
    ac_ctx *c = NULL;
    if ((rc = b->ctx_new(model, &p, &c))) return rc;
    c->ops = b;
    c->max_tokens = mt;
    c->params.backend = NULL; /* borrowed during ac_ctx_new only */
    *out = c;
    return AC_OK;
}

void ac_ctx_free(ac_ctx *c) {
    if (!c) return;
    ac_ctx_set_attn_hook(c, NULL); /* releases the hook (an attached cache forgets this context) */
    ac_ctx_set_kv_hook(c, NULL);   /* the same for an attached prefix cache */
    free(c->plan);
    free(c->exact_from);
    c->ops->ctx_free(c);
}

int ac_ctx_set_exact_from(ac_ctx *c, int n, const int *from) {
    if (!c || n < 0 || (n > 0 && !from)) return ac_err(AC_ERR_ARG, "ac_ctx_set_exact_from: invalid argument");
    for (int s = 0; s < n; s++)
        if (from[s] < -1)
            return ac_err(AC_ERR_ARG, "ac_ctx_set_exact_from: sequence %d: exact_from %d (expected -1 or a row >= 0)",
                          s, from[s]);
    int *v = NULL;
    if (n > 0) {
        if (!(v = AC_MALLOC((size_t)n * sizeof *v)))
            return ac_err(AC_ERR_NOMEM, "ac_ctx_set_exact_from: out of memory for %d values", n);
        memcpy(v, from, (size_t)n * sizeof *v);
    }
    free(c->exact_from); /* replaced only once the new values are valid and copied */
    c->exact_from = v;
    c->n_exact_from = n;
    return AC_OK;
}

int ac_ctx_exact_from(const ac_ctx *c, int s) {
    if (!c || c->n_exact_from <= 0 || s < 0) return -1;
    return c->exact_from[c->n_exact_from == 1 ? 0 : s < c->n_exact_from ? s : c->n_exact_from - 1];
}

/* ac_ctx_set_exact_from's values against this call's sequences. */
static int check_exact_from(const ac_ctx *c, const ac_seq *seqs, int n_seq) {
    if (c->n_exact_from <= 0) return AC_OK;
    if (c->n_exact_from > 1 && c->n_exact_from != n_seq)
        return ac_err(AC_ERR_ARG,
                      "ac_forward: %d sequences, but ac_ctx_set_exact_from gave values for %d (1 for all, or one each)",
                      n_seq, c->n_exact_from);
    for (int s = 0; s < n_seq; s++) {
        const int f = ac_ctx_exact_from(c, s);
        if (f > seqs[s].n_tokens)
            return ac_err(AC_ERR_ARG, "ac_forward: sequence %d: exact_from %d is past its %d tokens", s, f,
                          seqs[s].n_tokens);
    }
    return AC_OK;
}

/* The confidence gate (ac_attn_hook.recheck, the cache's recheck_margin): the sequences of
 * the call just made that the hook names (redo, [n_seq], k of them) run again together
 * without the hook, and their outputs replace the call's in out (every field asked for;
 * cls: the call's classifier outputs, out->cls or the caller's scratch). */
static int recheck_exact(ac_ctx *c, const ac_seq *seqs, int n_seq, const ac_outputs *out, float *cls,
                         const uint8_t *redo, int k) {
    const ac_model_info *in = &ac_ctx_model(c)->info;
    const size_t D = (size_t)in->n_embd, V = (size_t)in->n_vocab, NC = (size_t)in->n_cls_out;
    const int lm = in->has_lm_head;
    ac_seq *sub = AC_MALLOC((size_t)k * sizeof *sub);
    size_t T = 0;
    for (int s = 0, j = 0; sub && s < n_seq; s++)
        if (redo[s]) sub[j++] = seqs[s], T += (size_t)seqs[s].n_tokens;
    ac_outputs o = {0};
    o.pooling = out->pooling, o.normalize = out->normalize;
    o.cls = AC_MALLOC((size_t)k * NC * sizeof *o.cls); /* [k][NC] */
    if (out->hidden) o.hidden = AC_MALLOC(T * D * sizeof *o.hidden);   /* [T][D] */
    if (out->pooled) o.pooled = AC_MALLOC((size_t)k * D * sizeof *o.pooled); /* [k][D] */
    if (out->logits && lm) o.logits = AC_MALLOC((size_t)k * V * sizeof *o.logits); /* [k][V] */
    int rc = AC_OK;
    if (!sub || !o.cls || (out->hidden && !o.hidden) || (out->pooled && !o.pooled) || (out->logits && lm && !o.logits)) {
        rc = ac_err(AC_ERR_NOMEM, "ac_forward: out of memory recomputing %d sequences exactly", k);
        goto cleanup;
    }
    ac_attn_hook hook;
    const int had = ac_ctx_swap_attn_hook(c, NULL, &hook); /* lent out: not released */
    rc = c->ops->forward(c, sub, k, &o);
    ac_ctx_swap_attn_hook(c, had ? &hook : NULL, NULL);
    if (rc) goto cleanup;
    size_t row = 0, srow = 0; /* hidden rows: of the call, of the recomputed sequences */
    for (int s = 0, j = 0; s < n_seq; row += (size_t)seqs[s].n_tokens, s++) {
        if (!redo[s]) continue;
        const size_t L = (size_t)seqs[s].n_tokens;
        memcpy(cls + s * NC, o.cls + j * NC, NC * sizeof *cls);
        if (o.hidden) memcpy(out->hidden + row * D, o.hidden + srow * D, L * D * sizeof *o.hidden);
        if (o.pooled) memcpy(out->pooled + s * D, o.pooled + j * D, D * sizeof *o.pooled);
        if (o.logits) memcpy(out->logits + s * V, o.logits + j * V, V * sizeof *o.logits);
        srow += L, j++;
    }
cleanup:
    free(sub), free(o.cls), free(o.hidden), free(o.pooled), free(o.logits);
    return rc;
}

int ac_forward(ac_ctx *c, const ac_seq *seqs, int n_seq, ac_outputs *out) {
    if (!c || !seqs || !out || n_seq <= 0) return ac_err(AC_ERR_ARG, "ac_forward: invalid argument");
    int rc = check_exact_from(c, seqs, n_seq);
    if (rc) return rc;
    const int NC = ac_ctx_model(c)->info.n_cls_out;
    if (!c->has_hook || !c->hook.recheck || NC <= 0) return c->ops->forward(c, seqs, n_seq, out);
    /* the confidence gate needs the classifier's outputs, asked for or not */
    ac_outputs o = *out;
    float *scratch = NULL;
    uint8_t *redo = AC_CALLOC((size_t)n_seq, 1); /* [n_seq] 1: computed again exactly */
    if (!o.cls) o.cls = scratch = AC_MALLOC((size_t)n_seq * NC * sizeof *scratch); /* [n_seq][NC] */
    if (!redo || !o.cls) {
        free(scratch), free(redo);
        return ac_err(AC_ERR_NOMEM, "ac_forward: out of memory for the confidence gate of %d sequences", n_seq);
    }
    rc = c->ops->forward(c, seqs, n_seq, &o);
    const int k = rc ? 0 : c->hook.recheck(c->hook.user, n_seq, o.cls, NC, redo);
    if (k > 0) rc = recheck_exact(c, seqs, n_seq, &o, o.cls, redo, k);
    free(scratch);
    free(redo);
    return rc;
}

int ac_lm_head(ac_ctx *c, const float *h, int n, float *logits) {
    if (!c || !h || n <= 0 || !logits) return ac_err(AC_ERR_ARG, "ac_lm_head: invalid argument");
    return c->ops->lm_head(c, h, n, logits);
}

const char *ac_ctx_describe(const ac_ctx *c, char *buf, int n) {
    if (!buf || n <= 0) return buf;
    if (!c) {
        snprintf(buf, (size_t)n, "(no context)");
        return buf;
    }
    return c->ops->describe(c, buf, n);
}

const char *ac_ctx_backend(const ac_ctx *c) { return c ? c->ops->name : NULL; }
