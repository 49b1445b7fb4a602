/* batcher.c — queue + worker pool with token-budget batching (batcher.h). */
#define _GNU_SOURCE
#include "batcher.h"
#include "metrics.h"
#include "srvutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_item {
    srv_job *job;
    int idx;        /* sequence index within the job */
    int n_tokens;
    srv_item *next; /* queue link */
};

typedef struct worker {
    srv_batcher *b;
    pthread_t th;
    int started;
    ac_ctx *ctx;      /* attached to b->p.cache and b->p.prefix, if any */
    /* batch scratch */
    srv_item **batch; /* [max_batch_seqs] */
    srv_item **run;   /* [max_batch_seqs] the batch's sequences that passed ac_ctx_check_seq */
    ac_seq *seqs;     /* [max_batch_seqs] */
    uint8_t *hit;     /* [max_batch_seqs] per sequence of the last forward: served from the cache */
    uint64_t *key;    /* [max_batch_seqs] the served entry's key */
    float *out;       /* [max_batch_seqs][max(n_embd, n_cls)] */
} worker;

struct srv_batcher {
    const ac_model *model;
    srv_batcher_params p;
    int n_embd, n_cls;
    pthread_mutex_t mu;
    pthread_cond_t work;  /* queue non-empty or stopping */
    srv_item *head, *tail;
    int64_t q_seqs, q_tokens;
    int stopping;
    int had_cache;        /* created with a cache */
    int paused;           /* srv_batcher_pause: workers take no batch */
    int running;          /* workers running a batch */
    pthread_cond_t idle;  /* running dropped to 0 while paused */
    ac_cache_stats base;  /* lookup counts of the caches closed since start (compactions) */
    double t_lookup;      /* the shared cache's lookup seconds at the last batch (under mu) */
    worker *w;            /* [workers] */
};

static void finish_item(srv_item *it, int status, const char *msg) {
    srv_job *j = it->job;
    j->status[it->idx] = status;
    if (status != AC_OK) snprintf(j->err[it->idx], SRV_ERR_LEN, "%s", msg && msg[0] ? msg : ac_status_str(status));
}

/* Runs items [0, n) of one kind on the worker's context; per-item statuses
 * set. Each sequence is checked first (ac_ctx_check_seq): a bad one fails
 * alone and the others run together as one ac_forward. Returns the number of
 * sequences that went through the forward (w->run[0..k), w->hit/key filled). */
static int run_batch(worker *w, srv_item **items, int n) {
    srv_batcher *b = w->b;
    const int kind = items[0]->job->kind;
    if (kind == SRV_JOB_SCORE) {
        srv_job *j = items[0]->job;
        const int k = items[0]->idx;
        int rc = ac_score_labels(w->ctx, j->prompts[k], j->labels, j->n_labels, j->logprobs + (size_t)k * j->n_labels);
        finish_item(items[0], rc, rc == AC_OK ? NULL : ac_last_error());
        return 0;
    }
    const int dim = kind == SRV_JOB_EMBED ? b->n_embd : b->n_cls;
    int k = 0;
    for (int i = 0; i < n; i++) {
        ac_seq sq = {items[i]->job->tokens[items[i]->idx], items[i]->n_tokens};
        int rc = ac_ctx_check_seq(w->ctx, &sq);
        if (rc != AC_OK) {
            finish_item(items[i], rc, ac_last_error());
            continue;
        }
        w->run[k] = items[i];
        w->seqs[k++] = sq;
    }
    if (!k) return 0;
    ac_outputs o = {0};
    if (kind == SRV_JOB_EMBED) {
        o.pooled = w->out;
        o.pooling = b->p.pooling;
    } else {
        o.cls = w->out;
    }
    int rc = ac_forward(w->ctx, w->seqs, k, &o);
    if (rc != AC_OK) { /* a call-level failure (out of memory...): every sequence of the call fails */
        for (int i = 0; i < k; i++) finish_item(w->run[i], rc, ac_last_error());
        return 0;
    }
    for (int i = 0; i < k; i++) {
        memcpy(w->run[i]->job->out + (size_t)w->run[i]->idx * dim, w->out + (size_t)i * dim, (size_t)dim * sizeof(float));
        finish_item(w->run[i], AC_OK, NULL);
    }
    if (b->p.cache) ac_cache_last_hits(w->ctx, k, w->hit, w->key);
    else memset(w->hit, 0, (size_t)k);
    return k;
}

static double lookup_seconds(const ac_cache_stats *s) { return s->t_features + s->t_key + s->t_search + s->t_fetch; }

static void *worker_main(void *arg) {
    worker *w = arg;
    srv_batcher *b = w->b;
    const int max_seqs = b->p.max_batch_seqs, max_tok = b->p.max_batch_tokens;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while ((!b->head || b->paused) && !b->stopping) pthread_cond_wait(&b->work, &b->mu);
        if (!b->head) break; /* stopping and drained */
        b->running++;
        /* take sequences of the head's kind in arrival order within the budget */
        const int kind = b->head->job->kind;
        int n = 0, tok = 0;
        srv_item *prev = NULL, *it = b->head;
        while (it && n < max_seqs && tok < max_tok) {
            srv_item *next = it->next;
            int fits = it->job->kind == kind && (n == 0 || (kind != SRV_JOB_SCORE && tok + it->n_tokens <= max_tok));
            if (fits) {
                if (prev) prev->next = next;
                else b->head = next;
                if (b->tail == it) b->tail = prev;
                it->next = NULL;
                w->batch[n++] = it;
                tok += it->n_tokens;
                b->q_seqs--;
                b->q_tokens -= it->n_tokens;
                if (kind == SRV_JOB_SCORE) break;
            } else {
                prev = it;
            }
            it = next;
        }
        pthread_mutex_unlock(&b->mu);

        double t0 = srv_now();
        for (int i = 0; i < n; i++) srv_metrics_stage(SRV_ST_QUEUE, t0 - w->batch[i]->job->t_enqueue);
        const int ran = run_batch(w, w->batch, n);
        double t1 = srv_now();
        srv_metrics_stage(SRV_ST_FORWARD, t1 - t0);
        srv_metrics_batch(n, tok);

        /* misses only go to the recorder; hits tell it which entries were used */
        for (int i = 0; i < ran; i++) {
            srv_item *it = w->run[i];
            if (w->hit[i]) {
                if (b->p.on_hit) b->p.on_hit(b->p.user, w->key[i]);
            } else if (b->p.on_sequence) {
                b->p.on_sequence(b->p.user, it->job->tokens[it->idx], it->n_tokens);
            }
        }
        pthread_mutex_lock(&b->mu);
        if (b->p.cache) { /* the shared cache's lookup time since the last batch of any worker */
            ac_cache_stats cs;
            ac_cache_get_stats(b->p.cache, &cs);
            const double tl = lookup_seconds(&cs);
            if (tl > b->t_lookup) srv_metrics_stage(SRV_ST_LOOKUP, tl - b->t_lookup);
            b->t_lookup = tl;
        }
        for (int i = 0; i < n; i++) {
            srv_job *j = w->batch[i]->job;
            if (--j->remaining == 0) pthread_cond_signal(&j->done);
        }
        if (--b->running == 0 && b->paused) pthread_cond_broadcast(&b->idle);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int srv_batcher_new(const ac_model *model, const srv_batcher_params *p, srv_batcher **out) {
    *out = NULL;
    if (!model || !p || p->workers < 1 || p->max_batch_seqs < 1 || p->max_batch_tokens < 1)
        return AC_ERR_ARG;
    srv_batcher *b = calloc(1, sizeof *b);
    if (!b) return AC_ERR_NOMEM;
    b->model = model;
    b->p = *p;
    b->had_cache = p->cache != NULL;
    ac_model_info info;
    ac_model_get_info(model, &info);
    b->n_embd = info.n_embd;
    b->n_cls = info.n_cls_out;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->idle, NULL);
    int rc = AC_OK;
    b->w = calloc((size_t)p->workers, sizeof *b->w);
    if (!b->w) {
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    const int dim = b->n_embd > b->n_cls ? b->n_embd : b->n_cls;
    for (int i = 0; i < p->workers; i++) {
        worker *w = &b->w[i];
        w->b = b;
        w->batch = calloc((size_t)p->max_batch_seqs, sizeof *w->batch);
        w->run = calloc((size_t)p->max_batch_seqs, sizeof *w->run);
        w->seqs = calloc((size_t)p->max_batch_seqs, sizeof *w->seqs);
        w->hit = calloc((size_t)p->max_batch_seqs, 1);
        w->key = calloc((size_t)p->max_batch_seqs, sizeof *w->key);
        w->out = calloc((size_t)p->max_batch_seqs * dim, sizeof *w->out);
        if (!w->batch || !w->run || !w->seqs || !w->hit || !w->key || !w->out) {
            rc = AC_ERR_NOMEM;
            goto fail;
        }
        ac_ctx_params cp = ac_ctx_default_params();
        cp.n_threads = p->threads;
        cp.gemm = p->gemm;
        cp.attn = p->attn;
        cp.max_tokens = p->max_tokens;
        if ((rc = ac_ctx_new(model, &cp, &w->ctx)) != AC_OK) goto fail;
        if (p->cache && (rc = ac_ctx_attach_cache(w->ctx, p->cache)) != AC_OK) goto fail;
        if (p->prefix && (rc = ac_ctx_attach_prefix(w->ctx, p->prefix)) != AC_OK) goto fail;
    }
    for (int i = 0; i < p->workers; i++) {
        if (pthread_create(&b->w[i].th, NULL, worker_main, &b->w[i]) != 0) {
            rc = AC_ERR_NOMEM;
            goto fail;
        }
        b->w[i].started = 1;
    }
    *out = b;
    return AC_OK;
fail:
    srv_batcher_free(b);
    return rc;
}

int srv_batcher_run(srv_batcher *b, srv_job *j) {
    const int n = j->n;
    if (n < 1) return AC_ERR_ARG;
    j->items = calloc((size_t)n, sizeof *j->items);
    if (!j->items) return AC_ERR_NOMEM;
    pthread_cond_init(&j->done, NULL);
    j->remaining = n;
    j->t_enqueue = srv_now();
    int rc = AC_OK;
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        rc = AC_ERR_ARG;
    } else {
        for (int i = 0; i < n; i++) {
            srv_item *it = &j->items[i];
            it->job = j;
            it->idx = i;
            it->n_tokens = j->n_tokens[i];
            if (b->tail) b->tail->next = it;
            else b->head = it;
            b->tail = it;
            b->q_seqs++;
            b->q_tokens += it->n_tokens;
        }
        if (n > 1) pthread_cond_broadcast(&b->work);
        else pthread_cond_signal(&b->work);
        while (j->remaining > 0) pthread_cond_wait(&j->done, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&j->done);
    free(j->items);
    j->items = NULL;
    return rc;
}

void srv_batcher_cancel_queued(srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    for (srv_item *it = b->head, *next; it; it = next) {
        next = it->next;
        finish_item(it, SRV_CANCELLED, "the server is shutting down");
        if (--it->job->remaining == 0) pthread_cond_signal(&it->job->done);
    }
    b->head = b->tail = NULL;
    b->q_seqs = b->q_tokens = 0;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
}

void srv_batcher_depth(srv_batcher *b, int64_t *seqs, int64_t *tokens) {
    pthread_mutex_lock(&b->mu);
    *seqs = b->q_seqs;
    *tokens = b->q_tokens;
    pthread_mutex_unlock(&b->mu);
}

static void add_stats(ac_cache_stats *a, const ac_cache_stats *b) {
    a->queries += b->queries;
    a->hits += b->hits;
    a->layers_served += b->layers_served;
    a->rows_served += b->rows_served;
    a->rows_total += b->rows_total;
    a->bytes_read += b->bytes_read;
    a->t_features += b->t_features;
    a->t_key += b->t_key;
    a->t_search += b->t_search;
    a->t_fetch += b->t_fetch;
    a->lookups_failed += b->lookups_failed;
    a->records_damaged += b->records_damaged;
}

int srv_batcher_cache_stats(srv_batcher *b, ac_cache_stats *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&b->mu);
    const int have = b->had_cache;
    if (b->p.cache) ac_cache_get_stats(b->p.cache, s);
    add_stats(s, &b->base);
    pthread_mutex_unlock(&b->mu);
    return have;
}

void srv_batcher_pause(srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->paused = 1;
    while (b->running > 0) pthread_cond_wait(&b->idle, &b->mu);
    if (b->p.cache) { /* its counts live on in base; the contexts let go of it */
        ac_cache_stats cs;
        ac_cache_get_stats(b->p.cache, &cs);
        add_stats(&b->base, &cs);
        for (int i = 0; i < b->p.workers; i++) ac_ctx_attach_cache(b->w[i].ctx, NULL);
        b->p.cache = NULL;
    }
    b->t_lookup = 0;
    pthread_mutex_unlock(&b->mu);
}

int srv_batcher_resume(srv_batcher *b, ac_cache *cache) {
    int rc = AC_OK;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; cache && i < b->p.workers && rc == AC_OK; i++) rc = ac_ctx_attach_cache(b->w[i].ctx, cache);
    if (rc != AC_OK)
        for (int i = 0; i < b->p.workers; i++) ac_ctx_attach_cache(b->w[i].ctx, NULL);
    b->p.cache = rc == AC_OK ? cache : NULL;
    b->paused = 0;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void srv_batcher_free(srv_batcher *b) {
    if (!b) return;
    if (b->w) {
        pthread_mutex_lock(&b->mu);
        b->stopping = 1;
        pthread_cond_broadcast(&b->work);
        pthread_mutex_unlock(&b->mu);
        for (int i = 0; i < b->p.workers; i++)
            if (b->w[i].started) pthread_join(b->w[i].th, NULL);
        for (int i = 0; i < b->p.workers; i++) {
            worker *w = &b->w[i];
            ac_ctx_free(w->ctx); /* detaches it from the cache */
            free(w->batch);
            free(w->run);
            free(w->seqs);
            free(w->hit);
            free(w->key);
            free(w->out);
        }
        free(b->w);
    }
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
