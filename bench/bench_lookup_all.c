/* bench_lookup_all.c — the cache's lookup_all (the cuda backend's lookups of one forward call: every
 * sequence's layer-0 site at once, keyed on the layer-0 summary) timed alone on the CPU, the batched
 * way (one key call, one index search of B queries, then the candidates) and the old way (each
 * sequence looked up alone, on OpenMP threads: ac_cache_lookup_all_each) side by side in one run:
 * the modes alternate batch by batch, so a noisy machine affects both alike.
 *
 * The texts (one per line) are tokenized and the first N recorded into a fresh cache on the CPU
 * (threshold 1e-3: every text hits itself, as gpu_stream's stream; adaptive admission off). Each
 * text's layer-0 summary is computed once on the host (what the GPU hands the cache). A pass looks
 * every text up in batches of B; each mode's best pass is reported with its lookup split (features,
 * key, search, fetch: batched, each phase's wall time; old way, summed over the threads), and the
 * two modes' hits and entries are compared (they must be equal).
 * AC_BENCH_KEY=mean|random|projector picks the key (default: the cache's: random, no projector).
 * usage: bench_lookup_all MODEL TEXTS [N 512] [B 64] [REPS 5] */
#define _GNU_SOURCE
#include "attncache.h"
#include "bench_texts.h"
#include "cache/cache_testing.h"
#include "forward/forward.h"
#include "util/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <omp.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *what) {
    fprintf(stderr, "bench_lookup_all: %s: %s\n", what, ac_last_error());
    return 1;
}

/* sum [S][D]: the segment means of the layer-0 states (the cuda backend's summary, as the cache's). */
static int host_summary(const ac_model *m, const int32_t *tok, int L, int D, float *sum) {
    const int S = AC_ATTN_SUMMARY_SEGMENTS;
    float *x0 = malloc((size_t)L * D * sizeof *x0);
    if (!x0) return AC_ERR_NOMEM;
    int rc = ac_model_layer0_states(m, tok, L, x0);
    for (int k = 0; !rc && k < S; k++) {
        int a = (int)((int64_t)k * L / S), b = (int)((int64_t)(k + 1) * L / S);
        if (b <= a) a = 0, b = L;
        for (int d = 0; d < D; d++) {
            float acc = 0;
            for (int t = a; t < b; t++) acc += x0[(size_t)t * D + d];
            sum[(size_t)k * D + d] = acc * (1.0f / (float)(b - a));
        }
    }
    free(x0);
    return rc;
}

typedef struct mode_run {
    double best, feat, key, search, fetch; /* ms: the best pass and its split */
    int64_t hits;
} mode_run;

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_lookup_all MODEL TEXTS [N 512] [B 64] [REPS 5]\n");
        return 2;
    }
    const int N = argc > 3 ? atoi(argv[3]) : 512, B = argc > 4 ? atoi(argv[4]) : 64, reps = argc > 5 ? atoi(argv[5]) : 5;
    if (N < 1 || B < 1 || reps < 1) {
        fprintf(stderr, "bench_lookup_all: bad N/B/REPS\n");
        return 2;
    }
    ac_model *m = NULL;
    ac_model_params mp = ac_model_default_params();
    if (ac_model_load(argv[1], &mp, &m)) return fail("loading the model");
    ac_ctx_params cp = ac_ctx_default_params();
    ac_ctx *ctx = NULL;
    if (ac_ctx_new(m, &cp, &ctx)) return fail("the context");
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int D = info.n_embd;
    enum { MAXT = 128 };
    ac_seq *seqs = NULL;
    long long tokens = 0;
    int n = bench_load_texts(m, "bench_lookup_all", argv[2], N, MAXT, 0, &seqs, &tokens);
    if (n < 0) return 1;
    if (n < 1) {
        fprintf(stderr, "bench_lookup_all: no texts in %s\n", argv[2]);
        return 1;
    }
    char dir[] = "/tmp/ac_bench_lookup_all_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    ac_cache_params kp = ac_cache_default_params();
    kp.writable = 1, kp.create = 1;
    ac_cache *cache = NULL;
    if (ac_cache_open(m, dir, &kp, &cache)) return fail("creating the cache");
    double t0 = now();
    for (int i = 0; i < n; i++)
        if (ac_cache_add(cache, ctx, seqs[i].tokens, seqs[i].n_tokens, NULL)) return fail("recording");
    if (ac_cache_commit(cache)) return fail("commit");
    const char *ks = getenv("AC_BENCH_KEY");
    if (ks && !strcmp(ks, "projector") && ac_cache_train_projector(cache, NULL, NULL)) return fail("training the projector");
    if (ac_cache_close(cache)) return fail("closing the cache");
    printf("%d texts, %lld tokens (mean %.1f), recorded in %.2f s; batches of %d, %d passes\n", n, tokens,
           (double)tokens / n, now() - t0, B, reps);
    kp = ac_cache_default_params();
    kp.threshold = 1e-3f, kp.adapt_floor = 0;
    kp.key = !ks ? AC_KEY_AUTO : !strcmp(ks, "mean") ? AC_KEY_MEAN : !strcmp(ks, "random") ? AC_KEY_RANDOM : AC_KEY_PROJECTOR;
    if (ac_cache_open(m, dir, &kp, &cache)) return fail("opening the cache");
    if (ac_ctx_attach_cache(ctx, cache)) return fail("attaching the cache");
    ac_attn_hook h;
    if (!ac_ctx_get_attn_hook(ctx, &h) || !h.lookup_all) {
        fprintf(stderr, "bench_lookup_all: no lookup_all hook\n");
        return 1;
    }
    const size_t SD = (size_t)AC_ATTN_SUMMARY_SEGMENTS * D;
    float *sum = malloc((size_t)n * SD * sizeof *sum);
    ac_attn_site *sites = malloc((size_t)n * sizeof *sites);
    uint8_t *hit[2] = {malloc((size_t)n), malloc((size_t)n)};
    uint64_t *key[2] = {malloc((size_t)n * 8), malloc((size_t)n * 8)};
    if (!sum || !sites || !hit[0] || !hit[1] || !key[0] || !key[1]) return 1;
    for (int i = 0; i < n; i++) {
        if (host_summary(m, seqs[i].tokens, seqs[i].n_tokens, D, sum + i * SD)) return fail("layer-0 summary");
        sites[i] = (ac_attn_site){.layer = 0, .seq = 0, .tokens = seqs[i].tokens, .n_tokens = seqs[i].n_tokens,
                                  .n_head = info.n_head, .causal = info.causal, .x = NULL, .first = 0,
                                  .summary = sum + i * SD, .exact_from = -1, .heads = NULL};
    }
    mode_run run[2];
    for (int md = 0; md < 2; md++) run[md] = (mode_run){1e30, 0, 0, 0, 0, 0};
    for (int r = -1; r < reps; r++) { /* pass -1: warm-up */
        double t[2] = {0, 0};
        ac_cache_stats s0[2], s1[2], d[2];
        memset(d, 0, sizeof d);
        for (int b0 = 0; b0 < n; b0 += B) {
            const int nb = n - b0 < B ? n - b0 : B;
            ac_attn_site *bs = sites + b0;
            for (int i = 0; i < nb; i++) bs[i].seq = i;
            for (int k = 0; k < 2; k++) {
                const int md = (k + b0 / B + (r + 1)) & 1; /* 0: batched, 1: each alone; alternating */
                ac_cache_lookup_all_each(cache, md);
                ac_cache_get_stats(cache, &s0[md]);
                const double ta = now();
                if (h.lookup_all(h.user, bs, nb)) return fail("lookup_all");
                t[md] += now() - ta;
                ac_cache_get_stats(cache, &s1[md]);
                d[md].t_features += s1[md].t_features - s0[md].t_features;
                d[md].t_key += s1[md].t_key - s0[md].t_key;
                d[md].t_search += s1[md].t_search - s0[md].t_search;
                d[md].t_fetch += s1[md].t_fetch - s0[md].t_fetch;
                d[md].hits += s1[md].hits - s0[md].hits;
                for (int i = 0; i < nb; i++) h.reuse(h.user, &bs[i]); /* layer 0 takes the results */
                if (ac_cache_last_hits(ctx, nb, hit[md] + b0, key[md] + b0)) return fail("last hits");
            }
        }
        for (int i = 0; i < n; i++)
            if (hit[0][i] != hit[1][i] || (hit[0][i] && key[0][i] != key[1][i])) {
                fprintf(stderr, "bench_lookup_all: text %d: batched hit %d entry %llx, alone hit %d entry %llx\n", i,
                        hit[0][i], (unsigned long long)key[0][i], hit[1][i], (unsigned long long)key[1][i]);
                return 1;
            }
        if (r < 0) continue;
        for (int md = 0; md < 2; md++)
            if (t[md] * 1e3 < run[md].best)
                run[md] = (mode_run){t[md] * 1e3, d[md].t_features * 1e3, d[md].t_key * 1e3, d[md].t_search * 1e3,
                                     d[md].t_fetch * 1e3, d[md].hits};
    }
    static const char *names[2] = {"batched", "each alone (old)"};
    for (int md = 0; md < 2; md++)
        printf("%-17s best pass %8.3f ms (%6.2f us a text): features %.3f key %.3f search %.3f fetch %.3f ms; %lld hits "
               "of %d\n",
               names[md], run[md].best, run[md].best * 1e3 / n, run[md].feat, run[md].key, run[md].search,
               run[md].fetch, (long long)run[md].hits, n);
    printf("side by side (one run, alternating batches): batched / old = %.3f; key %.3f, search %.3f (threads %d)\n",
           run[0].best / run[1].best, run[1].key > 0 ? run[0].key / run[1].key : 0,
           run[1].search > 0 ? run[0].search / run[1].search : 0, omp_get_max_threads());
    ac_ctx_attach_cache(ctx, NULL);
    ac_cache_close(cache);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    for (int i = 0; i < n; i++) free((void *)seqs[i].tokens);
    free(seqs), free(sum), free(sites), free(hit[0]), free(hit[1]), free(key[0]), free(key[1]);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return 0;
}
