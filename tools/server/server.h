/* server.h — `attncache serve`: configuration and the state shared by the HTTP
 * layer (http.c), the routes (routes.c) and the start/stop logic (serve.c).
 *
 * Layers, one way: engine (include/attncache.h) <- batcher.c (queue, workers,
 * dynamic batching) <- routes.c (JSON requests and responses, validation,
 * tokenization) <- http.c (libmicrohttpd: connections, limits, auth) <- serve.c. */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include "attncache.h"
#include "batcher.h"
#include "recorder.h"

#include <stdatomic.h>
#include <stddef.h>

typedef struct srv_config {
    const char *model_path;
    const char *model_id;     /* name in responses (default: file name without .gguf) */
    const char *host;         /* default 127.0.0.1 */
    int port;                 /* default 8080; 0: any free port (printed) */
    int threads;              /* per worker context; 0: all cores / workers */
    int workers;              /* contexts (default 1) */
    int max_batch_tokens;     /* default 16384 */
    int max_batch_requests;   /* sequences per batch, default 64 */
    int max_concurrent;       /* in-flight inference requests before 429, default 64 */
    int max_client_batch;     /* inputs in one request, default 256 */
    int max_input_tokens;     /* 0: the model's context length */
    int auto_truncate;        /* truncate over-long inputs unless the request says otherwise */
    size_t max_body;          /* request body bytes, default 2 MiB */
    int timeout_s;            /* idle connection timeout, default 30 */
    int drain_s;              /* SIGTERM: seconds to wait for in-flight requests, default 30 */
    int max_connections;      /* default 256 */
    int pooling;              /* enum ac_pooling (default: the model's) */
    int fast;                 /* bf16 arithmetic */
    const char *api_key;      /* NULL: no authentication */
    const char *cache_dir;    /* attention cache, shared by the workers */
    ac_cache_params cache_params;
    int cache_insert;         /* record served inputs into the cache (recorder.c) */
    long long cache_max_bytes; /* byte budget of the store: compaction (0: none) */
    int cache_evict;          /* enum ac_evict_policy (default LFU) */
    int cache_queue;          /* inputs waiting to be recorded before new ones are dropped */
    int64_t prefix_bytes;     /* --prefix-cache MB: the prefix K/V cache's budget in bytes (0: none) */
    int prefix_min;           /* --prefix-min N: shortest prefix reused, in tokens (0: the default) */
    int quiet;                /* no per-request log lines */
} srv_config;

typedef struct srv_server {
    srv_config cfg;
    ac_model *model;          /* owned; NULL while loading */
    ac_model_info info;
    int max_input;            /* effective per-input token limit */
    char **cls_labels;        /* [info.n_cls_out] label names (owned) */
    srv_batcher *batcher;     /* owned */
    ac_cache *cache;          /* owned; NULL without --cache; writable with --cache-insert; replaced by each
                                 compaction (recorder thread), read by the main thread after the recorder */
    srv_recorder *recorder;   /* owned; NULL without --cache-insert */
    ac_prefix_cache *prefix;  /* owned; NULL without --prefix-cache; every worker's context attached */
    int64_t evicted_at_start; /* entries evicted by the start-up compaction */
    atomic_int ready;         /* 1 once model and workers are up */
    atomic_int draining;      /* 1 after SIGTERM: new requests get 503 */
    atomic_long in_flight;    /* admitted inference requests (the 429 limit) */
    atomic_long open;         /* requests being handled, any route (the drain waits for 0) */
} srv_server;

int cmd_serve(int argc, char **argv);

#endif
