/* metrics.h — the server's counters and histograms, rendered as Prometheus
 * text (GET /metrics). All functions are thread-safe (one mutex; updates are
 * a few additions per request or batch). */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include "sbuf.h"
#include <stdint.h>

enum srv_route {
    SRV_R_EMBEDDINGS = 0, /* POST /v1/embeddings */
    SRV_R_MODELS,         /* GET /v1/models */
    SRV_R_EMBED,          /* POST /embed */
    SRV_R_TOKENIZE,       /* POST /tokenize */
    SRV_R_PREDICT,        /* POST /predict */
    SRV_R_SCORE,          /* POST /score */
    SRV_R_HEALTH,         /* GET /health */
    SRV_R_INFO,           /* GET /info */
    SRV_R_METRICS,        /* GET /metrics */
    SRV_R_OTHER,          /* anything else (404/405) */
    SRV_R_COUNT
};
const char *srv_route_path(int route);

/* queue: per sequence, enqueue to batch start; tokenize: per request; forward: per
 * batch (lookup included); lookup: per batch, the attention cache's share (with --cache) */
enum srv_stage { SRV_ST_QUEUE = 0, SRV_ST_TOKENIZE, SRV_ST_FORWARD, SRV_ST_LOOKUP, SRV_ST_COUNT };

/* Gauges read at render time (owned by the batcher / HTTP layer). */
typedef struct srv_gauges {
    int64_t queue_sequences, queue_tokens, in_flight;
    int ready; /* 1 once the model is loaded */
} srv_gauges;

int srv_metrics_init(void);
void srv_metrics_request(int route, int status, double seconds);
void srv_metrics_stage(int stage, double seconds);
void srv_metrics_batch(int n_seq, int n_tokens);
void srv_metrics_rejected(int route); /* a 429 (also counted by srv_metrics_request) */
/* Appends the Prometheus text exposition (version 0.0.4). */
void srv_metrics_render(sbuf *b, const srv_gauges *g);

#endif
