/* api.c — the text-level public API on top of the forward stage:
 * tokenization wrappers, embedding of texts, label scoring. */
#include "attncache.h"
#include "forward/forward.h" /* the context's limit and truncation setting */
#include "load/model.h"
#include "util/common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- tokenizer wrappers ------------------------------------------------------------ */

int ac_tokenize(const ac_model *m, const char *text, size_t len, int add_special, int32_t *ids,
                int cap, int *n_out) {
    if (!m || !n_out || (!text && len) || cap < 0 || (!ids && cap))
        return ac_err(AC_ERR_ARG, "ac_tokenize: invalid argument");
    if (!m->vocab) return ac_err(AC_ERR_UNSUPPORTED, "model has no tokenizer metadata");
    return ac_vocab_tokenize(m->vocab, text ? text : "", len, add_special, ids, cap, n_out);
}

int ac_token_to_piece(const ac_model *m, int32_t id, char *buf, int cap, int *n_out) {
    if (!m || !n_out || cap < 0 || (!buf && cap)) return ac_err(AC_ERR_ARG, "ac_token_to_piece: invalid argument");
    if (!m->vocab) return ac_err(AC_ERR_UNSUPPORTED, "model has no tokenizer metadata");
    return ac_vocab_piece(m->vocab, id, buf, cap, n_out);
}

int32_t ac_token_bos(const ac_model *m) { return m && m->vocab ? ac_vocab_bos(m->vocab) : -1; }
int32_t ac_token_eos(const ac_model *m) { return m && m->vocab ? ac_vocab_eos(m->vocab) : -1; }

/* ac_tokenize through a memo of BPE words (NULL: none; tokenizer.h). */
static int tokenize_memo(const ac_model *m, ac_tok_memo *memo, const char *text, size_t len, int add_special,
                         int32_t *ids, int cap, int *n_out) {
    if (!memo) return ac_tokenize(m, text, len, add_special, ids, cap, n_out);
    if (!m->vocab) return ac_err(AC_ERR_UNSUPPORTED, "model has no tokenizer metadata");
    return ac_vocab_tokenize_memo(m->vocab, memo, text, len, add_special, ids, cap, n_out);
}

/* Tokenize into a malloc'd array (caller frees *ids); memo: as tokenize_memo. */
static int tokenize_alloc(const ac_model *m, ac_tok_memo *memo, const char *text, size_t len, int add_special,
                          int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    int cap = (int)AC_MIN(len + 16, (size_t)1 << 28), need = 0;
    int32_t *buf = AC_MALLOC((size_t)cap * sizeof *buf);
    if (!buf) return AC_ERR_NOMEM;
    int rc = tokenize_memo(m, memo, text, len, add_special, buf, cap, &need);
    if (rc == AC_ERR_RANGE) {
        free(buf);
        cap = need;
        buf = AC_MALLOC((size_t)cap * sizeof *buf);
        if (!buf) return AC_ERR_NOMEM;
        rc = tokenize_memo(m, memo, text, len, add_special, buf, cap, &need);
    }
    if (rc != AC_OK) {
        free(buf);
        return rc;
    }
    *ids = buf;
    *n = need;
    return AC_OK;
}

/* ---- embeddings ---------------------------------------------------------------------- */

static void set_status(ac_status *st, int code, const char *msg) {
    st->code = code;
    snprintf(st->message, sizeof st->message, "%s", code ? msg : "");
}

/* The embedding of texts[0..n): each text tokenized and checked alone; the
 * good ones go through one forward call. fail_fast: stop at the first bad
 * text with its error (ac_embed_texts); else record it in status[] and go on. */
static int embed_impl(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize, float *out,
                      int *n_tokens_out, ac_status *status, int fail_fast) {
    const ac_model *m = ac_ctx_model(ctx);
    ac_model_info info;
    int rc = ac_model_get_info(m, &info);
    if (rc) return rc;
    const int D = info.n_embd;
    ac_seq *seqs = AC_CALLOC((size_t)AC_MAX(n, 1), sizeof *seqs);  /* [n_good] */
    int32_t **toks = AC_CALLOC((size_t)AC_MAX(n, 1), sizeof *toks); /* [n] */
    int *good = AC_MALLOC((size_t)AC_MAX(n, 1) * sizeof *good);      /* [n_good] index into texts */
    float *pooled = NULL;                                            /* [n_good][D] */
    int n_good = 0;
    if (!seqs || !toks || !good) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int nt = 0, r;
        if (status) set_status(&status[i], AC_OK, "");
        if (n_tokens_out) n_tokens_out[i] = 0;
        if (!texts[i]) r = ac_err(AC_ERR_ARG, "text is NULL");
        else if ((r = tokenize_alloc(m, NULL, texts[i], strlen(texts[i]), 1, &toks[i], &nt)) == AC_OK) {
            if (ctx->params.truncate && nt > ctx->max_tokens) { /* keep the closing special token */
                const int32_t last = toks[i][nt - 1];
                const int closing =
                    ctx->max_tokens > 1 && (last == ac_vocab_sep(m->vocab) || last == ac_vocab_eos(m->vocab));
                nt = ctx->max_tokens;
                if (closing) toks[i][nt - 1] = last;
            }
            if (n_tokens_out) n_tokens_out[i] = nt;
            ac_seq q = {toks[i], nt};
            r = ac_ctx_check_seq(ctx, &q);
        }
        if (r == AC_ERR_NOMEM || (r && fail_fast)) { /* the call fails */
            rc = r == AC_ERR_NOMEM ? ac_err(r, "out of memory tokenizing text %d", i) : ac_err_prefix(r, "text %d", i);
            if (status) set_status(&status[i], rc, ac_last_error());
            goto done;
        }
        if (r) {
            set_status(&status[i], r, ac_last_error());
            memset(out + (size_t)i * D, 0, (size_t)D * sizeof *out);
            continue;
        }
        seqs[n_good].tokens = toks[i];
        seqs[n_good].n_tokens = nt;
        good[n_good++] = i;
    }
    if (n_good == 0) goto done;
    int all = n_good == n; /* then out is written in place */
    pooled = all ? out : AC_MALLOC((size_t)n_good * D * sizeof *pooled);
    if (!pooled) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    ac_outputs o = {0};
    o.pooled = pooled;
    o.pooling = pooling;
    o.normalize = normalize;
    if ((rc = ac_forward(ctx, seqs, n_good, &o))) goto done;
    if (!all)
        for (int k = 0; k < n_good; k++) memcpy(out + (size_t)good[k] * D, pooled + (size_t)k * D, (size_t)D * sizeof *out);
done:
    if (toks)
        for (int i = 0; i < n; i++) free(toks[i]);
    if (pooled != out) free(pooled);
    free(toks);
    free(seqs);
    free(good);
    if (rc == AC_OK) ac_err_clear(); /* per-text errors live in status[] */
    return rc;
}

int ac_embed_texts(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize, float *out,
                   int *n_tokens_out) {
    if (!ctx || !texts || n < 0 || !out) return ac_err(AC_ERR_ARG, "ac_embed_texts: invalid argument");
    return embed_impl(ctx, texts, n, pooling, normalize, out, n_tokens_out, NULL, 1);
}

int ac_embed_texts_status(ac_ctx *ctx, const char *const *texts, int n, int pooling, int normalize, float *out,
                          int *n_tokens_out, ac_status *status) {
    if (!ctx || !texts || n < 0 || !out || !status) return ac_err(AC_ERR_ARG, "ac_embed_texts_status: invalid argument");
    return embed_impl(ctx, texts, n, pooling, normalize, out, n_tokens_out, status, 0);
}

/* ---- label scoring ----------------------------------------------------------------------- */

/* The log-softmax of logits [n], in double: its max *mx and the log of its normaliser *ls
 * (log sum exp(logits - mx)); the value at id is (double)logits[id] - mx - ls. */
static void log_softmax_norm(const float *logits, int n, double *mx_out, double *ls_out) {
    double mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)logits[i] - mx);
    *mx_out = mx;
    *ls_out = log(s);
}

/* log-softmax value of logits[id] over n entries, in double. */
static double log_softmax_at(const float *logits, int n, int id) {
    double mx, ls;
    log_softmax_norm(logits, n, &mx, &ls);
    return (double)logits[id] - mx - ls;
}

/* The label's tokens as a continuation of the prompt: tokenize prompt+label and
 * take what follows the prompt's own tokens when the prompt's tokens are a
 * prefix; otherwise tokenize the label alone (no specials). Caller frees *out.
 * memo: the prompt's words, so that only the words at the junction run BPE merges. */
static int continuation_tokens(const ac_model *m, ac_tok_memo *memo, const int32_t *ptoks, int np, const char *prompt,
                               const char *label, int32_t **out, int *nout) {
    size_t lp = strlen(prompt), ll = strlen(label);
    char *joined = AC_MALLOC(lp + ll + 1);
    if (!joined) return AC_ERR_NOMEM;
    memcpy(joined, prompt, lp);
    memcpy(joined + lp, label, ll + 1);
    int32_t *jt = NULL;
    int nj = 0;
    int rc = tokenize_alloc(m, memo, joined, lp + ll, 1, &jt, &nj);
    free(joined);
    if (rc != AC_OK) return rc;
    /* the prompt's tokens without a trailing EOS/SEP the vocab may append */
    int nprefix = np;
    int32_t eos = ac_token_eos(m);
    if (nprefix > 0 && ptoks[nprefix - 1] == eos && eos >= 0) nprefix--;
    int nje = nj;
    if (nje > 0 && jt[nje - 1] == eos && eos >= 0) nje--;
    if (nje > nprefix && memcmp(jt, ptoks, (size_t)nprefix * sizeof *jt) == 0) {
        memmove(jt, jt + nprefix, (size_t)(nje - nprefix) * sizeof *jt);
        *out = jt;
        *nout = nje - nprefix;
        return AC_OK;
    }
    free(jt);
    rc = tokenize_alloc(m, memo, label, ll, 0, out, nout);
    if (rc == AC_OK && *nout == 0) {
        free(*out);
        *out = NULL;
        return ac_err(AC_ERR_INPUT, "label '%s' has no tokens", label);
    }
    return rc;
}

int ac_score_labels(ac_ctx *ctx, const char *prompt, const char *const *labels, int n_labels,
                    double *logprob_out) {
    if (!ctx || !prompt || !labels || n_labels <= 0 || !logprob_out)
        return ac_err(AC_ERR_ARG, "ac_score_labels: invalid argument");
    const ac_model *m = ac_ctx_model(ctx);
    ac_model_info info;
    int rc = ac_model_get_info(m, &info);
    if (rc != AC_OK) return rc;
    if (!info.has_lm_head || !info.causal)
        return ac_err(AC_ERR_UNSUPPORTED, "label scoring needs a decoder with an LM head (model is %s)",
                      info.arch_name);
    const int V = info.n_vocab, D = info.n_embd;
    int32_t *ptoks = NULL, **ltoks = NULL, *buf = NULL;
    int np = 0, *nl = NULL;
    float *hidden = NULL, *logits = NULL;
    ac_seq *seqs = NULL;
    ac_tok_memo *memo = NULL; /* the prompt's BPE words, for the prompt+label texts */

    if ((rc = ac_tok_memo_new(&memo)) != AC_OK) goto done;
    rc = tokenize_alloc(m, memo, prompt, strlen(prompt), 1, &ptoks, &np);
    if (rc != AC_OK) goto done;
    int32_t eos = ac_token_eos(m);
    if (np > 0 && ptoks[np - 1] == eos && eos >= 0) np--; /* never score after an appended EOS */
    if (np == 0) {
        rc = ac_err(AC_ERR_INPUT, "empty prompt");
        goto done;
    }
    ac_seq pq = {ptoks, np};
    if ((rc = ac_ctx_check_seq(ctx, &pq))) goto done; /* "input of N tokens exceeds the limit of M tokens" */
    ltoks = AC_CALLOC((size_t)n_labels, sizeof *ltoks);
    nl = AC_CALLOC((size_t)n_labels, sizeof *nl);
    if (!ltoks || !nl) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    int all_single = 1, total = 0;
    for (int i = 0; i < n_labels; i++) {
        if (!labels[i]) {
            rc = ac_err(AC_ERR_ARG, "label %d is NULL", i);
            goto done;
        }
        rc = continuation_tokens(m, memo, ptoks, np, prompt, labels[i], &ltoks[i], &nl[i]);
        if (rc != AC_OK) goto done;
        if (nl[i] != 1) all_single = 0;
        total += np + nl[i];
    }
    if (all_single) {
        /* one prefill of the prompt: the last position's logits score every label */
        logits = AC_MALLOC((size_t)V * sizeof *logits);
        if (!logits) {
            rc = AC_ERR_NOMEM;
            goto done;
        }
        ac_seq s = {ptoks, np};
        ac_outputs o = {0};
        o.logits = logits;
        if ((rc = ac_forward(ctx, &s, 1, &o)) != AC_OK) goto done;
        double mx, ls; /* one normaliser for every label */
        log_softmax_norm(logits, V, &mx, &ls);
        for (int i = 0; i < n_labels; i++) logprob_out[i] = (double)logits[ltoks[i][0]] - mx - ls;
        goto done;
    }
    /* With a prefix cache: the prompt alone first (stored, its shared head
     * taken from the cache), so that every prompt+label sequence below takes
     * the whole prompt from it and computes its label's tokens only. */
    if (ac_ctx_get_kv_hook(ctx, NULL) && np >= 2) {
        ac_seq s = {ptoks, np};
        ac_outputs o = {0};
        if ((rc = ac_forward(ctx, &s, 1, &o)) != AC_OK) goto done;
    }
    /* multi-token labels: one batch of prompt+label sequences; the LM head is
     * applied at the label positions only */
    seqs = AC_CALLOC((size_t)n_labels, sizeof *seqs);
    buf = AC_MALLOC((size_t)total * sizeof *buf);
    hidden = AC_MALLOC((size_t)total * D * sizeof *hidden);
    logits = AC_MALLOC((size_t)V * sizeof *logits);
    if (!seqs || !buf || !hidden || !logits) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    int off = 0;
    for (int i = 0; i < n_labels; i++) {
        memcpy(buf + off, ptoks, (size_t)np * sizeof *buf);
        memcpy(buf + off + np, ltoks[i], (size_t)nl[i] * sizeof *buf);
        seqs[i].tokens = buf + off;
        seqs[i].n_tokens = np + nl[i];
        off += np + nl[i];
        if ((rc = ac_ctx_check_seq(ctx, &seqs[i]))) {
            ac_err_prefix(rc, "prompt + label '%s'", labels[i]);
            goto done;
        }
    }
    ac_outputs o = {0};
    o.hidden = hidden;
    if ((rc = ac_forward(ctx, seqs, n_labels, &o)) != AC_OK) goto done;
    off = 0;
    for (int i = 0; i < n_labels; i++) {
        double lp = 0;
        for (int j = 0; j < nl[i]; j++) {
            /* the hidden state at position np-1+j predicts label token j */
            const float *h = hidden + (size_t)(off + np - 1 + j) * D;
            if ((rc = ac_lm_head(ctx, h, 1, logits)) != AC_OK) goto done;
            lp += log_softmax_at(logits, V, ltoks[i][j]);
        }
        logprob_out[i] = lp;
        off += np + nl[i];
    }
done:
    if (ltoks)
        for (int i = 0; i < n_labels; i++) free(ltoks[i]);
    free(ltoks);
    free(nl);
    free(ptoks);
    free(buf);
    free(hidden);
    free(logits);
    free(seqs);
    ac_tok_memo_free(memo);
    return rc;
}
