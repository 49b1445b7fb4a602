/* metrics.c — Prometheus counters and histograms of the server. */
#include "metrics.h"
#include "srvutil.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char *const route_paths[SRV_R_COUNT] = {
    "/v1/embeddings", "/v1/models", "/embed", "/tokenize", "/predict", "/score", "/health", "/info", "/metrics",
    "other"};

const char *srv_route_path(int r) { return r >= 0 && r < SRV_R_COUNT ? route_paths[r] : "other"; }

/* the statuses this server answers with; anything else is counted as "other" */
static const int statuses[] = {200, 400, 401, 404, 405, 413, 422, 429, 500, 503};
#define N_STATUS ((int)(sizeof statuses / sizeof statuses[0]) + 1)

#define MAX_BOUNDS 16
typedef struct hist {
    int n;
    double bounds[MAX_BOUNDS];
    uint64_t counts[MAX_BOUNDS + 1]; /* counts[n]: above the last bound */
    double sum;
    uint64_t count;
} hist;

static const double lat_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,   0.5,   1,      2.5,   5,    10,   30};
static const double tok_bounds[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
static const double seq_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

static struct {
    pthread_mutex_t mu;
    double t0;
    uint64_t req[SRV_R_COUNT][N_STATUS];
    uint64_t rejected[SRV_R_COUNT];
    hist req_lat[SRV_R_COUNT];
    hist stage[SRV_ST_COUNT];
    hist batch_tokens, batch_seqs;
    uint64_t tokens, sequences, batches;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void hist_init(hist *h, const double *b, int n) {
    memset(h, 0, sizeof *h);
    h->n = n;
    memcpy(h->bounds, b, (size_t)n * sizeof *b);
}

static void hist_add(hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

int srv_metrics_init(void) {
    pthread_mutex_lock(&M.mu);
    M.t0 = srv_now();
    memset(M.req, 0, sizeof M.req);
    memset(M.rejected, 0, sizeof M.rejected);
    for (int r = 0; r < SRV_R_COUNT; r++) hist_init(&M.req_lat[r], lat_bounds, 15);
    for (int s = 0; s < SRV_ST_COUNT; s++) hist_init(&M.stage[s], lat_bounds, 15);
    hist_init(&M.batch_tokens, tok_bounds, 12);
    hist_init(&M.batch_seqs, seq_bounds, 10);
    M.tokens = M.sequences = M.batches = 0;
    pthread_mutex_unlock(&M.mu);
    return 0;
}

static int status_index(int status) {
    for (int i = 0; i < N_STATUS - 1; i++)
        if (statuses[i] == status) return i;
    return N_STATUS - 1;
}

void srv_metrics_request(int route, int status, double seconds) {
    if (route < 0 || route >= SRV_R_COUNT) route = SRV_R_OTHER;
    pthread_mutex_lock(&M.mu);
    M.req[route][status_index(status)]++;
    hist_add(&M.req_lat[route], seconds);
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_stage(int stage, double seconds) {
    if (stage < 0 || stage >= SRV_ST_COUNT) return;
    pthread_mutex_lock(&M.mu);
    hist_add(&M.stage[stage], seconds);
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_batch(int n_seq, int n_tokens) {
    pthread_mutex_lock(&M.mu);
    hist_add(&M.batch_tokens, n_tokens);
    hist_add(&M.batch_seqs, n_seq);
    M.tokens += (uint64_t)n_tokens;
    M.sequences += (uint64_t)n_seq;
    M.batches++;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_rejected(int route) {
    if (route < 0 || route >= SRV_R_COUNT) route = SRV_R_OTHER;
    pthread_mutex_lock(&M.mu);
    M.rejected[route]++;
    pthread_mutex_unlock(&M.mu);
}

static void hist_render(sbuf *b, const char *name, const char *labels, const hist *h) {
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        sbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n];
    sbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    const char *lb = labels[0] ? "{" : "", *rb = labels[0] ? "}" : "";
    sbuf_printf(b, "%s_sum%s%s%s %.9g\n", name, lb, labels, rb, h->sum);
    sbuf_printf(b, "%s_count%s%s%s %llu\n", name, lb, labels, rb, (unsigned long long)h->count);
}

void srv_metrics_render(sbuf *b, const srv_gauges *g) {
    static const char *const stage_names[SRV_ST_COUNT] = {"queue", "tokenize", "forward", "lookup"};
    pthread_mutex_lock(&M.mu);
    double up = srv_now() - M.t0;
    sbuf_puts(b, "# HELP attncache_requests_total HTTP requests by route and status code.\n"
                 "# TYPE attncache_requests_total counter\n");
    for (int r = 0; r < SRV_R_COUNT; r++)
        for (int s = 0; s < N_STATUS; s++) {
            if (!M.req[r][s]) continue;
            if (s < N_STATUS - 1)
                sbuf_printf(b, "attncache_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route_paths[r],
                            statuses[s], (unsigned long long)M.req[r][s]);
            else
                sbuf_printf(b, "attncache_requests_total{route=\"%s\",status=\"other\"} %llu\n", route_paths[r],
                            (unsigned long long)M.req[r][s]);
        }
    sbuf_puts(b, "# HELP attncache_requests_rejected_total Requests refused with 429 (over --max-concurrent-requests).\n"
                 "# TYPE attncache_requests_rejected_total counter\n");
    for (int r = 0; r < SRV_R_COUNT; r++)
        if (M.rejected[r])
            sbuf_printf(b, "attncache_requests_rejected_total{route=\"%s\"} %llu\n", route_paths[r],
                        (unsigned long long)M.rejected[r]);
    sbuf_puts(b, "# HELP attncache_request_duration_seconds Time from a request's first byte to its response.\n"
                 "# TYPE attncache_request_duration_seconds histogram\n");
    for (int r = 0; r < SRV_R_COUNT; r++) {
        if (!M.req_lat[r].count) continue;
        char lab[64];
        snprintf(lab, sizeof lab, "route=\"%s\"", route_paths[r]);
        hist_render(b, "attncache_request_duration_seconds", lab, &M.req_lat[r]);
    }
    sbuf_puts(b, "# HELP attncache_stage_duration_seconds Time per stage: queue (per sequence, enqueue to batch "
                 "start), tokenize (per request), forward (per batch, lookup included), lookup (per batch: the attention "
                 "cache's features, key, search and fetch).\n"
                 "# TYPE attncache_stage_duration_seconds histogram\n");
    for (int s = 0; s < SRV_ST_COUNT; s++) {
        if (s == SRV_ST_LOOKUP && !M.stage[s].count) continue; /* no cache */
        char lab[64];
        snprintf(lab, sizeof lab, "stage=\"%s\"", stage_names[s]);
        hist_render(b, "attncache_stage_duration_seconds", lab, &M.stage[s]);
    }
    sbuf_puts(b, "# HELP attncache_batch_tokens Tokens per forward batch.\n# TYPE attncache_batch_tokens histogram\n");
    hist_render(b, "attncache_batch_tokens", "", &M.batch_tokens);
    sbuf_puts(b, "# HELP attncache_batch_sequences Sequences per forward batch.\n"
                 "# TYPE attncache_batch_sequences histogram\n");
    hist_render(b, "attncache_batch_sequences", "", &M.batch_seqs);
    sbuf_printf(b,
                "# HELP attncache_tokens_total Tokens run through the model.\n# TYPE attncache_tokens_total counter\n"
                "attncache_tokens_total %llu\n"
                "# HELP attncache_sequences_total Sequences run through the model.\n"
                "# TYPE attncache_sequences_total counter\nattncache_sequences_total %llu\n"
                "# HELP attncache_batches_total Forward batches run.\n# TYPE attncache_batches_total counter\n"
                "attncache_batches_total %llu\n"
                "# HELP attncache_tokens_per_second Mean tokens per second since start.\n"
                "# TYPE attncache_tokens_per_second gauge\nattncache_tokens_per_second %.6g\n"
                "# HELP attncache_uptime_seconds Seconds since the server started.\n"
                "# TYPE attncache_uptime_seconds gauge\nattncache_uptime_seconds %.3f\n",
                (unsigned long long)M.tokens, (unsigned long long)M.sequences, (unsigned long long)M.batches,
                up > 0 ? (double)M.tokens / up : 0.0, up);
    pthread_mutex_unlock(&M.mu);
    sbuf_printf(b,
                "# HELP attncache_queue_sequences Sequences waiting for a worker.\n"
                "# TYPE attncache_queue_sequences gauge\nattncache_queue_sequences %lld\n"
                "# HELP attncache_queue_tokens Tokens waiting for a worker.\n"
                "# TYPE attncache_queue_tokens gauge\nattncache_queue_tokens %lld\n"
                "# HELP attncache_in_flight_requests Inference requests admitted and not yet answered.\n"
                "# TYPE attncache_in_flight_requests gauge\nattncache_in_flight_requests %lld\n"
                "# HELP attncache_ready 1 once the model is loaded.\n# TYPE attncache_ready gauge\n"
                "attncache_ready %d\n",
                (long long)g->queue_sequences, (long long)g->queue_tokens, (long long)g->in_flight, g->ready);
}
