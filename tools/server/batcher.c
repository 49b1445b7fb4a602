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
    ac_ctx *ctx;
    ac_cache *cache;
    int64_t cache_gen;    /* generation of the view in `cache` */
    ac_cache_stats base;  /* lookup counts of the views closed at re-opens */
    ac_cache_stats stats; /* base + the current view's, after the last batch (under b->mu) */
    double t_lookup;      /* the current view's lookup seconds at the last batch */
    int64_t hits;         /* the current view's hits at the last batch */
    /* batch scratch */
    srv_item **batch; /* [max_batch_seqs] */
    ac_seq *seqs;     /* [max_batch_seqs] */
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
    worker *w;            /* [workers] */
};

static void finish_item(srv_item *it, int status, const char *msg) {
    srv_job *j = it->job;
    j->status[it->idx] = status;
    if (status != AC_OK) snprintf(j->err[it->idx], SRV_ERR_LEN, "%s", msg && msg[0] ? msg : ac_status_str(status));
}

/* Runs items [0, n) of one kind on the worker's context; per-item statuses set. */
static void run_batch(worker *w, srv_item **items, int n) {
    srv_batcher *b = w->b;
    const int kind = items[0]->job->kind;
    if (kind == SRV_JOB_SCORE) {
        srv_job *j = items[0]->job;
        const int k = items[0]->idx;
        int rc = ac_score_labels(w->ctx, j->prompts[k], j->labels, j->n_labels, j->logprobs + (size_t)k * j->n_labels);
        finish_item(items[0], rc, rc == AC_OK ? NULL : ac_last_error());
        return;
    }
    const int dim = kind == SRV_JOB_EMBED ? b->n_embd : b->n_cls;
    for (int i = 0; i < n; i++) {
        w->seqs[i].tokens = items[i]->job->tokens[items[i]->idx];
        w->seqs[i].n_tokens = items[i]->n_tokens;
    }
    ac_outputs o = {0};
    if (kind == SRV_JOB_EMBED) {
        o.pooled = w->out;
        o.pooling = b->p.pooling;
    } else {
        o.cls = w->out;
    }
    int rc = ac_forward(w->ctx, w->seqs, n, &o);
    if (rc == AC_OK) {
        for (int i = 0; i < n; i++) {
            memcpy(items[i]->job->out + (size_t)items[i]->idx * dim, w->out + (size_t)i * dim, (size_t)dim * sizeof(float));
            finish_item(items[i], AC_OK, NULL);
        }
        return;
    }
    /* per-sequence status: one at a time, so only the failing sequences fail */
    for (int i = 0; i < n; i++) {
        rc = n > 1 ? ac_forward(w->ctx, w->seqs + i, 1, &o) : rc;
        if (rc == AC_OK)
            memcpy(items[i]->job->out + (size_t)items[i]->idx * dim, w->out, (size_t)dim * sizeof(float));
        finish_item(items[i], rc, rc == AC_OK ? NULL : ac_last_error());
    }
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
}

static double lookup_seconds(const ac_cache_stats *s) { return s->t_features + s->t_key + s->t_search + s->t_fetch; }

/* Re-open the worker's read-only view when new entries were committed. Keeps
 * the old view if the new one cannot be opened. Worker thread, outside b->mu. */
static void refresh_view(worker *w) {
    srv_batcher *b = w->b;
    if (!w->cache || !b->p.generation) return;
    int64_t g = b->p.generation(b->p.user);
    if (g == w->cache_gen) return;
    ac_cache_params cap = b->p.cache_params ? *b->p.cache_params : ac_cache_default_params();
    cap.writable = 0;
    cap.create = 0;
    ac_cache *nc = NULL;
    if (ac_cache_open(b->model, b->p.cache_dir, &cap, &nc) != AC_OK) {
        fprintf(stderr, "attncache serve: cannot re-open the cache view: %s\n", ac_last_error());
        w->cache_gen = g; /* try again at the next commit */
        return;
    }
    ac_cache_stats old;
    ac_cache_get_stats(w->cache, &old);
    ac_ctx_attach_cache(w->ctx, NULL);
    ac_cache_close(w->cache);
    w->cache = nc;
    ac_ctx_attach_cache(w->ctx, nc);
    w->cache_gen = g;
    add_stats(&w->base, &old);
    w->t_lookup = 0;
    w->hits = 0;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    srv_batcher *b = w->b;
    const int max_seqs = b->p.max_batch_seqs, max_tok = b->p.max_batch_tokens;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping) pthread_cond_wait(&b->work, &b->mu);
        if (!b->head) break; /* stopping and drained */
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

        refresh_view(w);
        double t0 = srv_now();
        for (int i = 0; i < n; i++) srv_metrics_stage(SRV_ST_QUEUE, t0 - w->batch[i]->job->t_enqueue);
        run_batch(w, w->batch, n);
        double t1 = srv_now();
        srv_metrics_stage(SRV_ST_FORWARD, t1 - t0);
        srv_metrics_batch(n, tok);

        ac_cache_stats cs;
        int64_t batch_hits = 0;
        if (w->cache) {
            ac_cache_get_stats(w->cache, &cs);
            srv_metrics_stage(SRV_ST_LOOKUP, lookup_seconds(&cs) - w->t_lookup);
            w->t_lookup = lookup_seconds(&cs);
            batch_hits = cs.hits - w->hits;
            w->hits = cs.hits;
            add_stats(&cs, &w->base);
        }
        /* record the batch's sequences unless all of them were served from the cache (the
         * lookup reports counts, not which sequence hit: a mixed batch is recorded whole) */
        if (b->p.on_sequence && kind != SRV_JOB_SCORE && batch_hits < n)
            for (int i = 0; i < n; i++) {
                srv_item *it = w->batch[i];
                if (it->job->status[it->idx] == AC_OK)
                    b->p.on_sequence(b->p.user, it->job->tokens[it->idx], it->n_tokens);
            }
        pthread_mutex_lock(&b->mu);
        if (w->cache) w->stats = cs;
        for (int i = 0; i < n; i++) {
            srv_job *j = w->batch[i]->job;
            if (--j->remaining == 0) pthread_cond_signal(&j->done);
        }
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
    ac_model_info info;
    ac_model_get_info(model, &info);
    b->n_embd = info.n_embd;
    b->n_cls = info.n_cls_out;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
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
        w->seqs = calloc((size_t)p->max_batch_seqs, sizeof *w->seqs);
        w->out = calloc((size_t)p->max_batch_seqs * dim, sizeof *w->out);
        if (!w->batch || !w->seqs || !w->out) {
            rc = AC_ERR_NOMEM;
            goto fail;
        }
        ac_ctx_params cp = ac_ctx_default_params();
        cp.n_threads = p->threads;
        cp.gemm = p->gemm;
        cp.attn = p->attn;
        cp.max_tokens = p->max_tokens;
        if ((rc = ac_ctx_new(model, &cp, &w->ctx)) != AC_OK) goto fail;
        if (p->cache_dir) {
            ac_cache_params cap = p->cache_params ? *p->cache_params : ac_cache_default_params();
            cap.writable = 0;
            cap.create = 0;
            if ((rc = ac_cache_open(model, p->cache_dir, &cap, &w->cache)) != AC_OK) goto fail;
            if ((rc = ac_ctx_attach_cache(w->ctx, w->cache)) != AC_OK) goto fail;
            if (p->generation) w->cache_gen = p->generation(p->user);
        }
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

int srv_batcher_cache_stats(srv_batcher *b, ac_cache_stats *s) {
    memset(s, 0, sizeof *s);
    int have = 0;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->p.workers; i++) {
        const ac_cache_stats *w = &b->w[i].stats;
        if (!b->w[i].cache) continue;
        have = 1;
        if (w->entries > s->entries) s->entries = w->entries;
        s->queries += w->queries;
        s->hits += w->hits;
        s->layers_served += w->layers_served;
        s->bytes_read += w->bytes_read;
        s->t_features += w->t_features;
        s->t_key += w->t_key;
        s->t_search += w->t_search;
        s->t_fetch += w->t_fetch;
    }
    pthread_mutex_unlock(&b->mu);
    return have;
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
            if (w->cache) {
                if (w->ctx) ac_ctx_attach_cache(w->ctx, NULL);
                ac_cache_close(w->cache);
            }
            ac_ctx_free(w->ctx);
            free(w->batch);
            free(w->seqs);
            free(w->out);
        }
        free(b->w);
    }
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
