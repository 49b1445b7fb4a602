/* recorder.c — background recording of served inputs into the attention cache (recorder.h). */
#define _GNU_SOURCE
#include "recorder.h"
#include "srvutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct pending {
    int32_t *tokens; /* owned */
    int n;
} pending;

struct srv_recorder {
    const ac_model *model;
    srv_recorder_params p;
    char dir[4096];
    ac_cache *cache; /* borrowed, writable, shared with the workers' lookups; replaced by p.compact
                        (under cmu); NULL after a failed re-open (nothing more is recorded) */
    pthread_mutex_t cmu; /* held through a compaction; no_compact takes it */
    int no_compact;      /* srv_recorder_stop_compaction: the batcher is going away */
    ac_ctx *ctx;     /* created by the recorder thread (its pool inherits the lower priority) */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pending *q; /* ring [queue_cap] */
    int head, count;
    int stop;
    double drain_until; /* at stop: record what is queued until then */
    srv_recorder_stats st;
    int init_rc;        /* the thread's context creation status */
    int init_done;
};

static int64_t store_bytes(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/maps.acdb", dir);
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static void commit(srv_recorder *r, int *uncommitted) {
    if (!*uncommitted || !r->cache) return;
    int rc = ac_cache_commit(r->cache);
    ac_cache_stats cs;
    ac_cache_get_stats(r->cache, &cs);
    int64_t bytes = store_bytes(r->dir);
    pthread_mutex_lock(&r->mu);
    if (rc == AC_OK) {
        r->st.commits++;
        r->st.entries = cs.entries;
    } else {
        r->st.errors++;
    }
    r->st.store_bytes = bytes;
    if (r->p.max_bytes > 0 && bytes >= r->p.max_bytes && !r->p.compact) r->st.full = 1;
    pthread_mutex_unlock(&r->mu);
    if (rc != AC_OK) fprintf(stderr, "attncache serve: cache commit failed: %s\n", ac_last_error());
    *uncommitted = 0;
}

/* Over the byte budget: commit, then let p.compact evict (it pauses the
 * workers, closes the cache, compacts the store, re-opens it). Recorder thread. */
static void maybe_compact(srv_recorder *r, int *uncommitted) {
    if (!r->p.compact || r->p.max_bytes <= 0 || store_bytes(r->dir) < r->p.max_bytes) return;
    commit(r, uncommitted);
    pthread_mutex_lock(&r->cmu);
    if (r->no_compact) { /* shutting down: no compaction, so no insert past the budget either */
        pthread_mutex_unlock(&r->cmu);
        pthread_mutex_lock(&r->mu);
        r->st.full = 1;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    int64_t evicted = 0;
    double t0 = srv_now();
    int rc = r->p.compact(r->p.user, &r->cache, &evicted);
    double dt = srv_now() - t0;
    pthread_mutex_unlock(&r->cmu);
    ac_cache_stats cs = {0};
    if (r->cache) ac_cache_get_stats(r->cache, &cs);
    int64_t bytes = store_bytes(r->dir);
    pthread_mutex_lock(&r->mu);
    if (rc == AC_OK) r->st.compactions++, r->st.evictions += evicted;
    else r->st.errors++;
    r->st.compact_seconds += dt;
    r->st.entries = cs.entries;
    r->st.store_bytes = bytes;
    if (!r->cache || bytes >= r->p.max_bytes) r->st.full = 1; /* cannot get under the budget: stop inserting */
    pthread_mutex_unlock(&r->mu);
}

static void *recorder_main(void *arg) {
    srv_recorder *r = arg;
    /* below the serving threads: recording uses the cores they leave idle */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = r->p.threads;
    int rc = ac_ctx_new(r->model, &cp, &r->ctx);
    pthread_mutex_lock(&r->mu);
    r->init_rc = rc;
    r->init_done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc != AC_OK) return NULL;

    int uncommitted = 0;
    double last_commit = srv_now();
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->count && !r->stop) {
            if (uncommitted) { /* idle with entries added: commit within a second */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 200 * 1000 * 1000;
                if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
                if (!r->count && srv_now() - last_commit >= 1.0) break;
            } else { /* idle: every 2 s, save the entries' use (hits) if lookups changed it */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += 2;
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT && !r->count && !r->stop && r->cache) {
                    pthread_mutex_unlock(&r->mu);
                    if (ac_cache_commit(r->cache) != AC_OK) /* nothing pending: writes usage.bin when it changed */
                        fprintf(stderr, "attncache serve: saving the cache's use records: %s\n", ac_last_error());
                    pthread_mutex_lock(&r->mu);
                }
            }
        }
        if (r->stop && (!r->count || srv_now() > r->drain_until)) break;
        pending it = {NULL, 0};
        if (r->count) {
            it = r->q[r->head];
            r->head = (r->head + 1) % r->p.queue_cap;
            r->count--;
        }
        const int full = r->st.full;
        pthread_mutex_unlock(&r->mu);
        if (it.tokens) {
            int added = 0;
            rc = full || !r->cache ? AC_OK : ac_cache_add(r->cache, r->ctx, it.tokens, it.n, &added);
            if (rc != AC_OK) fprintf(stderr, "attncache serve: cache insert failed: %s\n", ac_last_error());
            pthread_mutex_lock(&r->mu);
            if (rc != AC_OK) r->st.errors++;
            else if (full || !r->cache) r->st.dropped++;
            else if (added) r->st.inserted++, uncommitted++;
            else r->st.duplicates++;
            pthread_mutex_unlock(&r->mu);
            free(it.tokens);
            if (added) maybe_compact(r, &uncommitted);
        }
        if (uncommitted && (srv_now() - last_commit >= 1.0 || uncommitted >= 64)) {
            commit(r, &uncommitted);
            last_commit = srv_now();
        }
        pthread_mutex_lock(&r->mu);
    }
    /* what is left in the queue past the drain deadline is dropped */
    while (r->count) {
        free(r->q[r->head].tokens);
        r->head = (r->head + 1) % r->p.queue_cap;
        r->count--;
        r->st.dropped++;
    }
    pthread_mutex_unlock(&r->mu);
    commit(r, &uncommitted);
    return NULL;
}

int srv_recorder_new(const ac_model *model, const srv_recorder_params *p, srv_recorder **out) {
    *out = NULL;
    if (!model || !p || !p->dir || !p->cache || p->queue_cap < 1) return AC_ERR_ARG;
    srv_recorder *r = calloc(1, sizeof *r);
    if (!r) return AC_ERR_NOMEM;
    r->model = model;
    r->p = *p;
    snprintf(r->dir, sizeof r->dir, "%s", p->dir);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->cmu, NULL);
    pthread_cond_init(&r->cv, NULL);
    int rc = AC_OK;
    r->q = calloc((size_t)p->queue_cap, sizeof *r->q);
    if (!r->q) {
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    r->cache = p->cache;
    ac_cache_stats cs;
    ac_cache_get_stats(r->cache, &cs);
    r->st.entries = cs.entries;
    r->st.store_bytes = store_bytes(r->dir);
    r->st.full = p->max_bytes > 0 && r->st.store_bytes >= p->max_bytes && !p->compact;
    if (pthread_create(&r->th, NULL, recorder_main, r) != 0) {
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    r->started = 1;
    pthread_mutex_lock(&r->mu);
    while (!r->init_done) pthread_cond_wait(&r->cv, &r->mu);
    rc = r->init_rc;
    pthread_mutex_unlock(&r->mu);
    if (rc != AC_OK) goto fail;
    *out = r;
    return AC_OK;
fail:
    srv_recorder_free(r, 0);
    return rc;
}

void srv_recorder_offer(srv_recorder *r, const int32_t *tokens, int n) {
    if (!r || n <= 0) return;
    pthread_mutex_lock(&r->mu);
    r->st.offered++;
    if (r->stop || r->count == r->p.queue_cap || r->st.full) {
        r->st.dropped++;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    pthread_mutex_unlock(&r->mu);
    int32_t *copy = malloc((size_t)n * sizeof *copy); /* outside the lock */
    if (!copy) return;
    memcpy(copy, tokens, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&r->mu);
    if (r->count == r->p.queue_cap || r->stop) {
        r->st.dropped++;
        free(copy);
    } else {
        r->q[(r->head + r->count) % r->p.queue_cap] = (pending){copy, n};
        r->count++;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

void srv_recorder_stop_compaction(srv_recorder *r) {
    if (!r) return;
    pthread_mutex_lock(&r->cmu); /* waits for a compaction in progress */
    r->no_compact = 1;
    pthread_mutex_unlock(&r->cmu);
}

void srv_recorder_get_stats(srv_recorder *r, srv_recorder_stats *s) {
    pthread_mutex_lock(&r->mu);
    *s = r->st;
    pthread_mutex_unlock(&r->mu);
}

void srv_recorder_free(srv_recorder *r, double drain_s) {
    if (!r) return;
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        r->drain_until = srv_now() + drain_s;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->th, NULL);
    }
    if (r->q)
        for (int i = 0; i < r->count; i++) free(r->q[(r->head + i) % r->p.queue_cap].tokens);
    free(r->q);
    if (r->cache && r->started && ac_cache_commit(r->cache) != AC_OK) /* what is pending */
        fprintf(stderr, "attncache serve: cache commit failed: %s\n", ac_last_error());
    ac_ctx_free(r->ctx);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->cmu);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
