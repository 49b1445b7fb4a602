/* batcher.h — the server's queue and worker pool (dynamic batching).
 *
 * One model, W workers, each with its own ac_ctx, all attached to one shared
 * attention cache if one is given (lookups from every worker at once; the
 * recorder inserts through the same cache, and new entries are served by
 * every worker once committed). HTTP threads submit jobs of
 * already tokenized and validated sequences and block until every sequence of
 * the job is done. Each worker takes sequences of one kind from the queue in
 * arrival order, across jobs and so across clients, until the batch holds
 * max_batch_tokens tokens or max_batch_seqs sequences, and runs them as one
 * ac_forward call. Each sequence is checked first (ac_ctx_check_seq), so a bad
 * sequence fails only its own job; every sequence carries its own status. */
#ifndef SRV_BATCHER_H
#define SRV_BATCHER_H

#include "attncache.h"
#include <pthread.h>
#include <stdint.h>

enum srv_job_kind {
    SRV_JOB_EMBED = 0,   /* pooled embedding (not normalised): out [n][n_embd] */
    SRV_JOB_PREDICT = 1, /* classifier outputs (logits): out [n][n_cls_out] */
    SRV_JOB_SCORE = 2,   /* label log-probabilities of each prompt (decoders): logprobs [n][n_labels];
                            run one prompt at a time (ac_score_labels) */
};

#define SRV_ERR_LEN 200

typedef struct srv_item srv_item;

typedef struct srv_job {
    int kind;
    /* n sequences (all borrowed until srv_batcher_run returns) */
    int n;
    int32_t *const *tokens; /* [n][n_tokens[i]] (EMBED / PREDICT) */
    const int *n_tokens;    /* [n] tokens per sequence (SCORE: the prompt's, for the budget) */
    float *out;             /* [n][dim] caller-allocated (EMBED / PREDICT) */
    /* SCORE */
    const char *const *prompts; /* [n] */
    const char *const *labels;  /* [n_labels] continuations as ac_score_labels takes them */
    int n_labels;
    double *logprobs;       /* [n][n_labels] caller-allocated */
    /* results: per sequence */
    int *status;            /* [n] AC_OK or AC_ERR_*, caller-allocated */
    char (*err)[SRV_ERR_LEN]; /* [n] message for a failed sequence, caller-allocated */
    /* internal */
    srv_item *items;
    int remaining;
    double t_enqueue;
    pthread_cond_t done;
} srv_job;

typedef struct srv_batcher_params {
    int workers;          /* W contexts */
    int threads;          /* threads per context (0: all cores) */
    int max_batch_tokens; /* token budget of one forward batch */
    int max_batch_seqs;   /* sequences in one forward batch */
    int pooling;          /* enum ac_pooling of EMBED outputs */
    int gemm, attn;       /* ac_ctx_params */
    int max_tokens;       /* ac_ctx_params.max_tokens */
    ac_cache *cache;      /* NULL: no attention cache; else borrowed (outlives the batcher): every
                             worker's context is attached to this one shared cache */
    ac_prefix_cache *prefix; /* NULL: none; else borrowed (outlives the batcher): every worker's context is
                                attached to this one shared prefix K/V cache (causal models) */
    /* optional, with a cache (called from a worker thread after each batch): on_sequence with each
     * sequence that ran and missed the cache (tokens borrowed for the call), on_hit with the key
     * of the entry that served each sequence that hit */
    void (*on_sequence)(void *user, const int32_t *tokens, int n_tokens);
    void (*on_hit)(void *user, uint64_t key);
    void *user;
} srv_batcher_params;

typedef struct srv_batcher srv_batcher;

/* Creates the contexts and starts the workers. The model is borrowed and must
 * outlive the batcher. Caller owns *out (srv_batcher_free). On failure the
 * message is in ac_last_error(). */
int srv_batcher_new(const ac_model *model, const srv_batcher_params *p, srv_batcher **out);
/* Enqueues the job and waits until all its sequences are done. Returns AC_OK
 * (per-sequence results in job->status) or AC_ERR_ARG when the batcher is
 * stopping. The job is borrowed for the call. */
int srv_batcher_run(srv_batcher *b, srv_job *job);
/* Status of a sequence dropped from the queue by srv_batcher_cancel_queued
 * (positive: not an AC_ERR_* code). */
#define SRV_CANCELLED 1
/* Completes every queued (not yet running) sequence with SRV_CANCELLED and
 * refuses new jobs: the second signal of a shutdown. Batches already running
 * finish. */
void srv_batcher_cancel_queued(srv_batcher *b);
/* Sequences and tokens waiting in the queue. */
void srv_batcher_depth(srv_batcher *b, int64_t *seqs, int64_t *tokens);
/* The shared attention cache's statistics; returns 0 (s zeroed) without a cache. */
int srv_batcher_cache_stats(srv_batcher *b, ac_cache_stats *s);
/* Cache maintenance (compaction): waits until no batch runs, holds the
 * workers off (queued sequences wait), and detaches every worker's context
 * from the cache (its lookup counts are kept for srv_batcher_cache_stats).
 * Then the caller may close the cache. Any thread but a worker's. */
void srv_batcher_pause(srv_batcher *b);
/* Attaches every worker's context to cache (borrowed; NULL: run without one)
 * and lets the workers go on. AC status (on failure: no cache). */
int srv_batcher_resume(srv_batcher *b, ac_cache *cache);
/* Stops taking jobs, finishes the queued ones, joins the workers, frees all. NULL is fine. */
void srv_batcher_free(srv_batcher *b);

#endif
