/* recorder.h — `serve --cache DIR --cache-insert`: records the attention maps
 * of served inputs into the cache in the background.
 *
 * The workers offer each sequence they ran (a copy of its tokens) to a
 * bounded queue; one recorder thread, with its own context at a lower CPU
 * priority, takes them in order and calls ac_cache_add on the shared cache
 * (opened writable by the caller) (inputs already stored are recognised by their token hash before
 * any forward and skipped), and commits at least once a second while it has
 * added entries. The cache is the one the workers look up in (shared): a
 * commit publishes the new entries to every worker's next lookup. While idle
 * it commits every 2 s, which saves the entries' use records (usage.bin:
 * hits, last use; the eviction policy's input) when lookups changed them. The store's commit protocol keeps the directory consistent if the
 * process is killed at any point: a restart sees every committed entry and
 * nothing half-written. Inputs offered while the queue is full are dropped
 * (counted). */
#ifndef SRV_RECORDER_H
#define SRV_RECORDER_H

#include "attncache.h"
#include <stdint.h>

typedef struct srv_recorder srv_recorder;

typedef struct srv_recorder_stats {
    int64_t offered, inserted, duplicates, dropped, errors, commits;
    int64_t compactions, evictions; /* store compactions run, entries they evicted */
    double compact_seconds;         /* time spent compacting (the workers wait meanwhile) */
    int64_t entries;     /* committed entries in the store */
    int64_t store_bytes; /* size of the map store file */
    int full;            /* 1 once the store reached max_bytes with no way under it: no more inserts */
} srv_recorder_stats;

typedef struct srv_recorder_params {
    const char *dir;                     /* the cache's directory (the store file's size) */
    ac_cache *cache;                     /* borrowed, opened writable; outlives the recorder */
    int threads;                         /* the recorder context's threads */
    int queue_cap;                       /* sequences waiting to be recorded */
    int64_t max_bytes;                   /* byte budget of the store file (0: none) */
    /* with max_bytes: called from the recorder thread (after a commit) when an insert took the store
     * to max_bytes or past it; must bring the store under the budget (evicting) and replace *cache
     * by the re-opened cache (NULL if it could not be re-opened: recording stops). *evicted: entries
     * dropped. NULL: no eviction; inserting stops at the budget. */
    int (*compact)(void *user, ac_cache **cache, int64_t *evicted);
    void *user;
} srv_recorder_params;

/* Starts the thread. The model and p->cache are borrowed. Caller owns *out (srv_recorder_free). AC status + ac_last_error(). */
int srv_recorder_new(const ac_model *model, const srv_recorder_params *p, srv_recorder **out);
/* Queue a copy of tokens[0..n) for recording; never blocks (drops when full). Any thread. */
void srv_recorder_offer(srv_recorder *r, const int32_t *tokens, int n);
void srv_recorder_get_stats(srv_recorder *r, srv_recorder_stats *s);
/* No compaction from now on (waits for one in progress), and no insert that would need one: before
 * the workers that p.compact pauses go away. Any thread. */
void srv_recorder_stop_compaction(srv_recorder *r);
/* Records what is queued (up to a deadline of drain_s seconds), commits, stops, frees (the cache
 * stays open). NULL is fine. */
void srv_recorder_free(srv_recorder *r, double drain_s);

#endif
