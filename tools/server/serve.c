/* serve.c — `attncache serve`: options, start-up (listen first so that
 * /health answers 503 while the model loads), the worker pool, and the
 * shutdown on SIGTERM/SIGINT (stop accepting, drain in-flight requests,
 * finish the queue, free). */
#define _GNU_SOURCE
#include "server.h"
#include "http.h"
#include "metrics.h"
#include "srvutil.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *usage_text =
    "usage: attncache serve -m MODEL [--host 127.0.0.1] [--port 8080] [options]\n"
    "An HTTP server for embeddings, classification and label scoring with dynamic batching.\n"
    "Routes: POST /v1/embeddings, GET /v1/models (OpenAI); POST /embed, /tokenize, /predict (TEI);\n"
    "POST /score (label log-probabilities, decoders); GET /health, /info, /metrics (Prometheus).\n"
    "\n"
    "  -m, --model FILE             GGUF model (required)\n"
    "      --model-id NAME          model name in responses (default: the file name without .gguf)\n"
    "      --host ADDR              address to listen on (default 127.0.0.1: this machine only)\n"
    "      --port N                 TCP port (default 8080; 0: a free port, printed at start)\n"
    "  -t, --threads N              threads per worker (default: cores / workers)\n"
    "      --workers W              model contexts running batches in parallel (default 1)\n"
    "      --max-batch-tokens N     token budget of one forward batch (default 16384)\n"
    "      --max-batch-requests N   sequences in one forward batch (default 64)\n"
    "      --max-concurrent-requests N  requests in flight before 429 Too Many Requests (default 64)\n"
    "      --max-client-batch-size N    inputs in one request before 413 (default 256)\n"
    "      --max-input-tokens N     longest input in tokens (default and maximum: the model's context)\n"
    "      --auto-truncate          cut over-long inputs instead of refusing them (a request's\n"
    "                               \"truncate\" field overrides it on the TEI routes)\n"
    "      --max-body-bytes N       request body limit (default 2097152)\n"
    "      --timeout S              close connections idle for S seconds (default 30)\n"
    "      --drain-timeout S        on SIGTERM, wait up to S seconds for requests in flight (default 30)\n"
    "      --max-connections N      open connections (default 256)\n"
    "      --pooling P              mean|cls|last (default: the model's pooling type)\n"
    "      --fast                   bf16 arithmetic for F16/BF16/Q8_0 weights (see attncache embed --help)\n"
    "      --api-key KEY            require \"Authorization: Bearer KEY\" on every route but /health\n"
    "      --api-key-file FILE      the same, the key read from FILE (first line; preferred: not in ps)\n"
    "      --cache DIR              serve an attention cache (one cache shared by the workers)\n"
    "      --threshold T            cache hit when the key distance <= T (default 0.05)\n"
    "      --layers SPEC            cache layers served on a hit: all|none|policy|0-3,7\n"
    "      --recheck-margin M       models with a classifier head: an input the cache served whose\n"
    "                               classifier margin (top-1 minus top-2 probability) is under M (0-1)\n"
    "                               is computed again exactly and answered exactly (default 0: off)\n"
    "      --cache-insert           record served inputs into the cache in the background (DIR is\n"
    "                               created if missing); the workers serve them after each commit\n"
    "      --cache-max-bytes N      byte budget of the map store: an insert that reaches it compacts the\n"
    "                               store to 3/4 of N, evicting by --cache-evict (the workers wait\n"
    "                               meanwhile); a store over N is compacted at start\n"
    "      --cache-evict P          lfu (default: least often hit go first; ties: least recently used)\n"
    "                               | lru (least recently hit or inserted first)\n"
    "      --cache-queue N          inputs waiting to be recorded before new ones are dropped (default 1024)\n"
    "      --adapt-floor F          adaptive lookups: while the cache's recent hit rate (all workers together)\n"
    "                               is under F (default 0.02), sequences skip the lookup and run exact, but\n"
    "                               for one in K (a probe, K doubling from 4 while probes miss); a probe\n"
    "                               that hits turns lookups back on; 0: off. /metrics counts the skipped\n"
    "      --adapt-window N         lookups the hit rate is taken over (default 64)\n"
    "      --adapt-probe-max K      largest probe interval (default 256)\n"
    "      --prefix-cache MB        exact prefix K/V reuse for causal models (refused for bidirectional\n"
    "                               ones): one cache of MB MiB, shared by the workers, keeps every layer's\n"
    "                               K/V of the sequences run; a sequence that starts with a stored prefix\n"
    "                               computes only its other tokens, with the same results (LRU eviction)\n"
    "      --prefix-min N           shortest stored prefix worth reusing, in tokens (default 16)\n"
    "  -q, --quiet                  no log line per request\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting connections, finish the requests in flight, exit 0\n"
    "(a second signal answers the requests still queued with 503 and exits).\n";

static void offer_sequence(void *user, const int32_t *tokens, int n) { srv_recorder_offer(user, tokens, n); }

/* The store's size after a compaction: 3/4 of the budget, so that inserting goes on a while before
 * the next one. */
static int64_t compact_target(const srv_config *c) { return c->cache_max_bytes - c->cache_max_bytes / 4; }

/* The recorder's compaction (recorder.h, p.compact): the workers wait, the cache is closed (its
 * pending entries and use records saved), the store compacted, the cache re-opened and attached
 * again. Recorder thread. */
static int compact_cache(void *user, ac_cache **cache, int64_t *evicted) {
    srv_server *s = user;
    const srv_config *c = &s->cfg;
    srv_batcher_pause(s->batcher);
    int rc = ac_cache_close(*cache);
    if (rc != AC_OK) fprintf(stderr, "attncache serve: closing the cache for compaction: %s\n", ac_last_error());
    *cache = s->cache = NULL;
    rc = ac_db_compact(c->cache_dir, compact_target(c), c->cache_evict, NULL, evicted);
    if (rc != AC_OK) fprintf(stderr, "attncache serve: cache compaction failed: %s\n", ac_last_error());
    ac_cache_params cap = c->cache_params;
    cap.writable = 1;
    cap.create = 1;
    ac_cache *nc = NULL;
    int ro = ac_cache_open(s->model, c->cache_dir, &cap, &nc);
    if (ro != AC_OK) {
        fprintf(stderr, "attncache serve: cannot re-open the cache after compaction (serving without it): %s\n",
                ac_last_error());
        nc = NULL;
    }
    if (srv_batcher_resume(s->batcher, nc) != AC_OK)
        fprintf(stderr, "attncache serve: cannot attach the workers to the compacted cache: %s\n", ac_last_error());
    *cache = s->cache = nc;
    if (!c->quiet && rc == AC_OK)
        fprintf(stderr, "attncache serve: cache compacted: %lld entries evicted\n", (long long)*evicted);
    return rc != AC_OK ? rc : ro;
}

static int parse_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "attncache: error: bad %s '%s' (an integer in [%ld, %ld])\n", opt, v ? v : "", lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* A float in [0, 1] for option opt (what: the range as the error message states it); 0 after the message. */
static int unit_float(const char *opt, const char *v, const char *what, float *out) {
    char *end;
    const float f = v ? strtof(v, &end) : 0.0f;
    if (!v || end == v || *end || !(f >= 0.0f && f <= 1.0f)) {
        fprintf(stderr, "attncache: error: bad %s '%s' (%s)\n", opt, v ? v : "", what);
        return 0;
    }
    *out = f;
    return 1;
}

/* The API key from a file: its first line, trailing whitespace removed. malloc'd or NULL. */
static char *read_key_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "attncache: error: cannot open --api-key-file '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    if (n < 0) n = 0;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (line) line[n] = 0;
    if (n == 0) {
        fprintf(stderr, "attncache: error: --api-key-file '%s' holds no key\n", path);
        free(line);
        return NULL;
    }
    return line;
}

static char *default_model_id(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf")) n -= 5;
    return strndup(b, n);
}

static int parse_args(int argc, char **argv, srv_config *c, char **key_owned, int *help) {
    *help = 0;
    const char *key_file = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
#define VAL()                                                                                                  \
    do {                                                                                                       \
        if (!v) {                                                                                              \
            fprintf(stderr, "attncache: error: option %s needs a value\n", a);                                  \
            return 0;                                                                                          \
        }                                                                                                      \
        i++;                                                                                                   \
    } while (0)
#define INT(field, lo, hi)                                                                                     \
    do {                                                                                                       \
        VAL();                                                                                                 \
        if (!parse_int(a, v, lo, hi, &x)) return 0;                                                            \
        c->field = (int)x;                                                                                     \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            *help = 1;
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VAL();
            c->model_path = v;
        } else if (!strcmp(a, "--model-id")) {
            VAL();
            c->model_id = v;
        } else if (!strcmp(a, "--host")) {
            VAL();
            c->host = v;
        } else if (!strcmp(a, "--port")) INT(port, 0, 65535);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT(threads, 0, 1024);
        else if (!strcmp(a, "--workers")) INT(workers, 1, 256);
        else if (!strcmp(a, "--max-batch-tokens")) INT(max_batch_tokens, 1, 1 << 24);
        else if (!strcmp(a, "--max-batch-requests")) INT(max_batch_requests, 1, 1 << 16);
        else if (!strcmp(a, "--max-concurrent-requests")) INT(max_concurrent, 1, 1 << 20);
        else if (!strcmp(a, "--max-client-batch-size")) INT(max_client_batch, 1, 1 << 20);
        else if (!strcmp(a, "--max-input-tokens")) INT(max_input_tokens, 1, 1 << 24);
        else if (!strcmp(a, "--timeout")) INT(timeout_s, 1, 86400);
        else if (!strcmp(a, "--drain-timeout")) INT(drain_s, 0, 86400);
        else if (!strcmp(a, "--max-connections")) INT(max_connections, 1, 1 << 16);
        else if (!strcmp(a, "--max-body-bytes")) {
            VAL();
            if (!parse_int(a, v, 64, (long)1 << 32, &x)) return 0;
            c->max_body = (size_t)x;
        } else if (!strcmp(a, "--auto-truncate")) c->auto_truncate = 1;
        else if (!strcmp(a, "--fast")) c->fast = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) c->quiet = 1;
        else if (!strcmp(a, "--pooling")) {
            VAL();
            if (!strcmp(v, "mean")) c->pooling = AC_POOL_MEAN;
            else if (!strcmp(v, "cls")) c->pooling = AC_POOL_CLS;
            else if (!strcmp(v, "last")) c->pooling = AC_POOL_LAST;
            else return fprintf(stderr, "attncache: error: bad --pooling '%s' (mean|cls|last)\n", v), 0;
        } else if (!strcmp(a, "--api-key")) {
            VAL();
            if (!v[0]) return fprintf(stderr, "attncache: error: --api-key is empty\n"), 0;
            c->api_key = v;
        } else if (!strcmp(a, "--api-key-file")) {
            VAL();
            key_file = v;
        } else if (!strcmp(a, "--cache")) {
            VAL();
            c->cache_dir = v;
        } else if (!strcmp(a, "--threshold")) {
            VAL();
            char *end;
            c->cache_params.threshold = strtof(v, &end);
            if (end == v || *end) return fprintf(stderr, "attncache: error: bad --threshold '%s'\n", v), 0;
        } else if (!strcmp(a, "--recheck-margin")) {
            VAL();
            if (!unit_float(a, v, "a margin in 0..1", &c->cache_params.recheck_margin)) return 0;
        } else if (!strcmp(a, "--cache-insert")) {
            c->cache_insert = 1;
        } else if (!strcmp(a, "--cache-queue")) {
            INT(cache_queue, 1, 1 << 20);
        } else if (!strcmp(a, "--cache-max-bytes")) {
            VAL();
            char *end;
            errno = 0;
            long long x2 = strtoll(v, &end, 10);
            if (errno || end == v || *end || x2 < 1) return fprintf(stderr, "attncache: error: bad --cache-max-bytes '%s'\n", v), 0;
            c->cache_max_bytes = x2;
        } else if (!strcmp(a, "--cache-evict")) {
            VAL();
            if (!strcmp(v, "lru")) c->cache_evict = AC_EVICT_LRU;
            else if (!strcmp(v, "lfu")) c->cache_evict = AC_EVICT_LFU;
            else return fprintf(stderr, "attncache: error: bad --cache-evict '%s' (lru|lfu)\n", v), 0;
        } else if (!strcmp(a, "--layers")) {
            VAL();
            c->cache_params.layers = v;
        } else if (!strcmp(a, "--adapt-floor")) {
            VAL();
            if (!unit_float(a, v, "a hit rate in [0, 1]; 0: off", &c->cache_params.adapt_floor)) return 0;
        } else if (!strcmp(a, "--adapt-window")) {
            INT(cache_params.adapt_window, 1, 1 << 20);
        } else if (!strcmp(a, "--adapt-probe-max")) {
            INT(cache_params.adapt_probe_max, 4, 1 << 20);
        } else if (!strcmp(a, "--prefix-cache")) {
            VAL();
            if (!parse_int("--prefix-cache (MiB)", v, 1, 1L << 20, &x)) return 0;
            c->prefix_bytes = (int64_t)x << 20;
        } else if (!strcmp(a, "--prefix-min")) {
            INT(prefix_min, 1, 1 << 24);
        } else {
            fprintf(stderr, "attncache: error: serve: unknown option '%s' (see --help)\n", a);
            return 0;
        }
#undef INT
#undef VAL
    }
    if (key_file) {
        if (c->api_key) return fprintf(stderr, "attncache: error: give --api-key or --api-key-file, not both\n"), 0;
        if (!(*key_owned = read_key_file(key_file))) return 0;
        c->api_key = *key_owned;
    }
    if (!c->model_path) return fprintf(stderr, "attncache: error: no model given (-m MODEL)\n"), 0;
    if (c->cache_insert && !c->cache_dir)
        return fprintf(stderr, "attncache: error: --cache-insert needs --cache DIR\n"), 0;
    if (c->cache_max_bytes && !c->cache_insert)
        return fprintf(stderr, "attncache: error: --cache-max-bytes applies to --cache-insert\n"), 0;
    if (c->prefix_min && !c->prefix_bytes)
        return fprintf(stderr, "attncache: error: --prefix-min applies to --prefix-cache MB\n"), 0;
    return 1;
}

int cmd_serve(int argc, char **argv) {
    srv_server *s = calloc(1, sizeof *s);
    if (!s) return fprintf(stderr, "attncache: error: out of memory\n"), 1;
    srv_config *c = &s->cfg;
    c->host = "127.0.0.1";
    c->port = 8080;
    c->workers = 1;
    c->max_batch_tokens = 16384;
    c->max_batch_requests = 64;
    c->max_concurrent = 64;
    c->max_client_batch = 256;
    c->max_body = (size_t)2 << 20;
    c->timeout_s = 30;
    c->drain_s = 30;
    c->max_connections = 256;
    c->pooling = AC_POOL_DEFAULT;
    c->cache_params = ac_cache_default_params();
    c->cache_queue = 1024;
    c->cache_evict = AC_EVICT_LFU;
    char *key_owned = NULL, *id_owned = NULL;
    srv_http *http = NULL;
    int rc = 1, help = 0, port = 0;

    if (!parse_args(argc, argv, c, &key_owned, &help)) goto out;
    if (help) {
        fputs(usage_text, stdout);
        rc = 0;
        goto out;
    }
    if (!c->model_id && !(c->model_id = id_owned = default_model_id(c->model_path))) goto out;
    if (c->threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = ncpu > c->workers ? (int)(ncpu / c->workers) : 1;
    }

    /* every thread started from here on inherits the blocked signals; main waits for them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_metrics_init();
    if (srv_http_start(s, &http, &port) != AC_OK) goto out;
    fprintf(stderr, "attncache serve: listening on http://%s%s%s:%d (loading %s)\n", strchr(c->host, ':') ? "[" : "",
            c->host, strchr(c->host, ':') ? "]" : "", port, c->model_path);

    ac_model_params mp = ac_model_default_params();
    if (c->fast) mp.f32_math = 0;
    if (ac_model_load(c->model_path, &mp, &s->model) != AC_OK) {
        fprintf(stderr, "attncache: error: cannot load model '%s': %s\n", c->model_path, ac_last_error());
        goto out;
    }
    ac_model_get_info(s->model, &s->info);
    s->max_input = s->info.n_ctx_train > 0 ? s->info.n_ctx_train : INT_MAX;
    if (c->max_input_tokens > 0 && c->max_input_tokens < s->max_input) s->max_input = c->max_input_tokens;
    if (s->max_input > c->max_batch_tokens) {
        fprintf(stderr,
                "attncache: error: --max-batch-tokens %d is smaller than the longest input (%d tokens): raise it or "
                "lower --max-input-tokens\n",
                c->max_batch_tokens, s->max_input);
        goto out;
    }
    if (s->info.n_cls_out > 0) {
        s->cls_labels = calloc((size_t)s->info.n_cls_out, sizeof *s->cls_labels);
        if (!s->cls_labels) goto out;
        for (int i = 0; i < s->info.n_cls_out; i++) {
            char buf[128];
            if (ac_model_cls_label(s->model, i, buf, sizeof buf) != AC_OK) snprintf(buf, sizeof buf, "LABEL_%d", i);
            if (!(s->cls_labels[i] = strdup(buf))) goto out;
        }
    }
    if (c->prefix_bytes) { /* one prefix K/V cache for every worker */
        if (!s->info.causal) {
            fprintf(stderr,
                    "attncache: error: --prefix-cache needs a causal model: '%s' (%s) is bidirectional (every token "
                    "attends to the whole input, so no stored prefix's K/V can be reused); drop the option\n",
                    c->model_path, s->info.arch_name);
            goto out;
        }
        ac_prefix_params pp = ac_prefix_default_params();
        pp.max_bytes = c->prefix_bytes;
        if (c->prefix_min) pp.min_match = c->prefix_min;
        if (ac_prefix_cache_new(s->model, &pp, &s->prefix) != AC_OK) {
            fprintf(stderr, "attncache: error: cannot create the prefix cache: %s\n", ac_last_error());
            goto out;
        }
    }
    if (c->cache_dir && c->cache_max_bytes > 0) { /* a store over the budget is compacted before use */
        char path[4200];
        snprintf(path, sizeof path, "%s/maps.acdb", c->cache_dir);
        struct stat sb;
        if (stat(path, &sb) == 0 && sb.st_size > c->cache_max_bytes) {
            int64_t ev = 0;
            if (ac_db_compact(c->cache_dir, compact_target(c), c->cache_evict, NULL, &ev) != AC_OK) {
                fprintf(stderr, "attncache: error: cannot compact the cache '%s' to --cache-max-bytes: %s\n",
                        c->cache_dir, ac_last_error());
                goto out;
            }
            s->evicted_at_start = ev;
            fprintf(stderr, "attncache serve: cache over --cache-max-bytes: %lld entries evicted at start\n",
                    (long long)ev);
        }
    }
    if (c->cache_dir) { /* one cache for every worker (and the recorder, which writes through it) */
        ac_cache_params cap = c->cache_params;
        cap.writable = c->cache_insert;
        cap.create = c->cache_insert;
        if (ac_cache_open(s->model, c->cache_dir, &cap, &s->cache) != AC_OK) {
            fprintf(stderr, "attncache: error: cannot open the cache '%s'%s: %s\n", c->cache_dir,
                    c->cache_insert ? " for inserting" : "", ac_last_error()[0] ? ac_last_error() : "failed");
            goto out;
        }
    }
    if (c->cache_insert) {
        srv_recorder_params rp = {0};
        rp.dir = c->cache_dir;
        rp.cache = s->cache;
        rp.threads = c->threads;
        rp.queue_cap = c->cache_queue;
        rp.max_bytes = c->cache_max_bytes;
        rp.compact = compact_cache;
        rp.user = s;
        if (srv_recorder_new(s->model, &rp, &s->recorder) != AC_OK) {
            fprintf(stderr, "attncache: error: cannot start the cache recorder: %s\n",
                    ac_last_error()[0] ? ac_last_error() : "failed");
            goto out;
        }
    }
    srv_batcher_params bp = {0};
    bp.workers = c->workers;
    bp.threads = c->threads;
    bp.max_batch_tokens = c->max_batch_tokens;
    bp.max_batch_seqs = c->max_batch_requests;
    bp.pooling = c->pooling;
    bp.max_tokens = s->info.n_ctx_train;
    bp.cache = s->cache;
    bp.prefix = s->prefix;
    if (s->recorder) {
        bp.on_sequence = offer_sequence;
        bp.user = s->recorder;
    }
    if (srv_batcher_new(s->model, &bp, &s->batcher) != AC_OK) {
        fprintf(stderr, "attncache: error: cannot start the workers: %s\n",
                ac_last_error()[0] ? ac_last_error() : "failed");
        goto out;
    }
    atomic_store(&s->ready, 1);
    fprintf(stderr, "attncache serve: ready: %s (%s, dim %d), %d worker(s) x %d thread(s)%s%s\n", c->model_id,
            s->info.arch_name, s->info.n_embd, c->workers, c->threads, c->api_key ? ", API key required" : "",
            s->prefix ? ", prefix K/V cache" : "");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "attncache serve: %s: draining (up to %d s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT", c->drain_s);
    atomic_store(&s->draining, 1);
    srv_http_quiesce(http);
    double t_end = srv_now() + c->drain_s;
    while (atomic_load(&s->open) > 0 && srv_now() < t_end) {
        /* a second signal ends the wait: the requests left are closed */
        struct timespec ts = {0, 10 * 1000 * 1000};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) {
            fprintf(stderr, "attncache serve: second signal: queued requests cancelled (503)\n");
            srv_batcher_cancel_queued(s->batcher);
            break;
        }
    }
    long left = atomic_load(&s->open);
    srv_http_stop(http); /* closes what is left after the drain timeout */
    http = NULL;
    fprintf(stderr, "attncache serve: stopped%s\n", left > 0 ? " (drain timeout: open requests closed)" : "");
    rc = 0;
out:
    srv_http_stop(http);
    srv_recorder_stop_compaction(s->recorder); /* compactions pause the workers: none from here on */
    srv_batcher_free(s->batcher);
    if (s->recorder) {
        srv_recorder_stats rs;
        srv_recorder_get_stats(s->recorder, &rs);
        srv_recorder_free(s->recorder, rc == 0 ? 5.0 : 0.0); /* record what is queued, up to 5 s */
        fprintf(stderr, "attncache serve: cache: %lld inserted, %lld already stored, %lld dropped\n",
                (long long)rs.inserted, (long long)rs.duplicates, (long long)rs.dropped);
    }
    if (s->cache && ac_cache_close(s->cache) != AC_OK) /* after the workers and the recorder */
        fprintf(stderr, "attncache serve: closing the cache: %s\n", ac_last_error());
    if (s->prefix) {
        ac_prefix_stats ps;
        ac_prefix_get_stats(s->prefix, &ps);
        if (!c->quiet)
            fprintf(stderr, "attncache serve: prefix cache: %lld lookups, %lld hits, %lld tokens reused, %lld computed\n",
                    (long long)ps.lookups, (long long)ps.hits, (long long)ps.tokens_reused, (long long)ps.tokens_computed);
        ac_prefix_cache_free(s->prefix); /* after the workers (their contexts are freed) */
    }
    if (s->cls_labels)
        for (int i = 0; i < s->info.n_cls_out; i++) free(s->cls_labels[i]);
    free(s->cls_labels);
    ac_model_free(s->model);
    free(key_owned);
    free(id_owned);
    free(s);
    return rc;
}
