/* test_cache_adapt.c — adaptive lookups (src/cache/adapt.c, cache.c): a
 * stream of misses ends up skipping almost every lookup, probing now and then
 * with a growing interval; a later stream of hits turns lookups back on
 * within one probe interval; every output stays what it would be without the
 * skipping (skipped and missed sequences bitwise the exact forward's, hits
 * bitwise those of the same cache with skipping off); the decisions are
 * deterministic; bad parameters are refused by name. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "cache/adapt.h"
#include "ref_forward.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TINY 1e-5f /* a threshold that admits the identical sequence only */

/* ---- the state machine alone ------------------------------------------------------------ */

static void test_machine_misses_then_hits(void **state) {
    (void)state;
    ac_adapt a;
    ac_adapt_init(&a, 0.02f, 64, 256);
    /* the first `window` sequences are all looked up, whatever they give */
    for (int i = 0; i < 64; i++) {
        int k = ac_adapt_admit(&a);
        assert_int_equal(k, AC_ADAPT_LOOKUP);
        ac_adapt_note(&a, k, 0);
    }
    assert_int_equal(a.skipping, 1);
    /* then probes at intervals 4, 8, ..., 256, 256, ... */
    int looked = 0, n = 0, last_probe = -1, expect = 4;
    for (; n < 4000; n++) {
        int k = ac_adapt_admit(&a);
        if (k == AC_ADAPT_SKIP) continue;
        assert_int_equal(k, AC_ADAPT_PROBE);
        assert_int_equal(n - last_probe, expect);
        last_probe = n;
        expect = expect < 256 ? 2 * expect : 256;
        looked++;
        ac_adapt_note(&a, k, 0);
    }
    /* 4+8+...+256 = 508 sequences for 7 probes, then one in 256 */
    assert_int_equal(looked, 7 + (4000 - 508) / 256);
    assert_true(looked < 4000 / 100);
    /* hits come back: the next probe (at most 256 sequences away) finds one */
    int turned = -1;
    for (int i = 0; i < 257 && turned < 0; i++) {
        int k = ac_adapt_admit(&a);
        if (k == AC_ADAPT_SKIP) continue;
        ac_adapt_note(&a, k, 1);
        if (!a.skipping) turned = i;
    }
    assert_true(turned >= 0);
    for (int i = 0; i < 1000; i++) { /* all looked up while they hit */
        int k = ac_adapt_admit(&a);
        assert_int_equal(k, AC_ADAPT_LOOKUP);
        ac_adapt_note(&a, k, 1);
    }
    assert_true(a.rate > 0.99);
}

static void test_machine_rates(void **state) {
    (void)state;
    ac_adapt a;
    /* a hit rate of 5% stays above a floor of 2%: never skipped */
    ac_adapt_init(&a, 0.02f, 64, 256);
    for (int i = 0; i < 5000; i++) {
        int k = ac_adapt_admit(&a);
        assert_int_equal(k, AC_ADAPT_LOOKUP);
        ac_adapt_note(&a, k, i % 20 == 0);
    }
    /* off: every sequence looked up, even with no hit at all */
    ac_adapt_init(&a, 0.0f, 64, 256);
    for (int i = 0; i < 1000; i++) {
        int k = ac_adapt_admit(&a);
        assert_int_equal(k, AC_ADAPT_LOOKUP);
        ac_adapt_note(&a, k, 0);
    }
    /* a probe hit in a sparse stream (1%): lookups on again, skipping again after `window` misses */
    ac_adapt_init(&a, 0.02f, 16, 64);
    for (int i = 0; i < 16; i++) ac_adapt_note(&a, ac_adapt_admit(&a), 0);
    assert_int_equal(a.skipping, 1);
    int k;
    while ((k = ac_adapt_admit(&a)) == AC_ADAPT_SKIP) {}
    ac_adapt_note(&a, k, 1);
    assert_int_equal(a.skipping, 0);
    int on = 0;
    while (!a.skipping) {
        k = ac_adapt_admit(&a);
        assert_int_equal(k, AC_ADAPT_LOOKUP);
        ac_adapt_note(&a, k, 0);
        on++;
    }
    assert_int_equal(on, 15 + 18); /* the mean of the hit and 15 misses (1/16), then decayed by 15/16 per miss
                                  until under 0.02: 18 more */
    /* new entries while skipping: the interval starts over and the next sequence is a probe */
    for (int i = 0; i < 300; i++) {
        k = ac_adapt_admit(&a);
        ac_adapt_note(&a, k, 0);
    }
    assert_int_equal(a.interval, 64);
    ac_adapt_new_entries(&a);
    assert_int_equal(ac_adapt_admit(&a), AC_ADAPT_PROBE);
    assert_int_equal(a.interval, AC_ADAPT_PROBE_MIN);
}

static void test_machine_bad_params(void **state) {
    (void)state;
    assert_int_equal(ac_adapt_check(0.02f, 64, 256), AC_OK);
    assert_int_equal(ac_adapt_check(0.0f, 0, 0), AC_OK);
    assert_int_equal(ac_adapt_check(NAN, 64, 256), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "floor"));
    assert_int_equal(ac_adapt_check(-0.1f, 64, 256), AC_ERR_ARG);
    assert_int_equal(ac_adapt_check(1.5f, 64, 256), AC_ERR_ARG);
    assert_int_equal(ac_adapt_check(0.02f, -1, 256), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "window"));
    assert_int_equal(ac_adapt_check(0.02f, AC_ADAPT_MAX_PARAM + 1, 256), AC_ERR_ARG);
    assert_int_equal(ac_adapt_check(0.02f, 64, 2), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "probe"));
    assert_int_equal(ac_adapt_check(0.02f, 64, -5), AC_ERR_ARG);
}

/* ---- a real cache on a synthetic model ---------------------------------------------------- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

typedef struct fx {
    char root[64], dir[96];
    ac_model *m;
    ac_ctx *exact, *a, *b; /* exact: never attached; a: the adaptive cache; b: the same cache, adapt off */
    int D, V;
} fx;

static ac_ctx *mkctx(const ac_model *m) {
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 1;
    ac_ctx *c = NULL;
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_OK);
    return c;
}

static void fx_open(fx *f) {
    memset(f, 0, sizeof *f);
    strcpy(f->root, "/tmp/ac_cache_adapt_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    char path[128];
    snprintf(path, sizeof path, "%s/model.gguf", f->root);
    snprintf(f->dir, sizeof f->dir, "%s/cache", f->root);
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    uint8_t *buf = NULL;
    size_t size = 0;
    assert_int_equal(ref_build(&s, &buf, &size), AC_OK);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, size, fp), size);
    assert_int_equal(fclose(fp), 0);
    free(buf);
    assert_int_equal(ac_model_load(path, NULL, &f->m), AC_OK);
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f->m, &in), AC_OK);
    f->D = in.n_embd;
    f->V = in.n_vocab;
    f->exact = mkctx(f->m);
    f->a = mkctx(f->m);
    f->b = mkctx(f->m);
}

static void fx_close(fx *f) {
    ac_ctx_free(f->exact);
    ac_ctx_free(f->a);
    ac_ctx_free(f->b);
    ac_model_free(f->m);
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static ac_cache *open_cache(const fx *f, int writable, float floor, int window, int probe_max) {
    ac_cache_params p = ac_cache_default_params();
    p.writable = writable;
    p.create = writable;
    p.threshold = TINY;
    p.codec = "f32-causal";
    p.adapt_floor = floor;
    p.adapt_window = window;
    p.adapt_probe_max = probe_max;
    ac_cache *c = NULL;
    int rc = ac_cache_open(f->m, f->dir, &p, &c);
    if (rc) fprintf(stderr, "ac_cache_open: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

/* n sequences of lengths 8 + (5 i mod 17) from seed (ids[] owned by the caller) */
static void make_seqs(const fx *f, int n, uint64_t seed, ac_seq *seqs, int32_t **ids) {
    int T = 0;
    for (int i = 0; i < n; i++) T += 8 + (5 * i) % 17;
    *ids = malloc((size_t)T * sizeof **ids);
    assert_non_null(*ids);
    ref_random_tokens(&seed, *ids, T, f->V);
    for (int i = 0, o = 0; i < n; i++) {
        seqs[i].tokens = *ids + o;
        seqs[i].n_tokens = 8 + (5 * i) % 17;
        o += seqs[i].n_tokens;
    }
}

static void embed(ac_ctx *ctx, const ac_seq *s, float *pooled) {
    ac_outputs o;
    memset(&o, 0, sizeof o);
    o.pooled = pooled;
    o.pooling = AC_POOL_MEAN;
    int rc = ac_forward(ctx, s, 1, &o);
    if (rc) fprintf(stderr, "ac_forward: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
}

/* Runs seqs through f->a (adaptive cache ca) and checks each output: a hit
 * bitwise that of f->b (cache cb, adapt off, which must hit too), a miss or a
 * skipped sequence bitwise the exact forward's. hits_out[i]: 1 for a hit. */
static void run_stream(fx *f, ac_cache *ca, ac_cache *cb, const ac_seq *seqs, int n, uint8_t *hits_out) {
    float *ya = malloc((size_t)f->D * sizeof *ya), *yb = malloc((size_t)f->D * sizeof *yb),
          *ye = malloc((size_t)f->D * sizeof *ye);
    assert_non_null(ya);
    assert_non_null(yb);
    assert_non_null(ye);
    (void)ca;
    for (int i = 0; i < n; i++) {
        embed(f->a, &seqs[i], ya);
        uint8_t ha = 0, hb = 0;
        assert_int_equal(ac_cache_last_hits(f->a, 1, &ha, NULL), AC_OK);
        if (ha) {
            embed(f->b, &seqs[i], yb);
            assert_int_equal(ac_cache_last_hits(f->b, 1, &hb, NULL), AC_OK);
            assert_int_equal(hb, 1);
            assert_memory_equal(ya, yb, (size_t)f->D * sizeof *ya);
        } else {
            embed(f->exact, &seqs[i], ye);
            assert_memory_equal(ya, ye, (size_t)f->D * sizeof *ya);
        }
        hits_out[i] = ha;
    }
    (void)cb;
    free(ya);
    free(yb);
    free(ye);
}

static void test_stream_misses_then_hits(void **state) {
    (void)state;
    fx f;
    fx_open(&f);
    enum { N_STORED = 40, N_MISS = 700, N_HIT = 400 };
    ac_seq stored[N_STORED], miss[N_MISS], hit[N_HIT];
    int32_t *ids_s, *ids_m;
    make_seqs(&f, N_STORED, 11, stored, &ids_s);
    make_seqs(&f, N_MISS, 22, miss, &ids_m);
    for (int i = 0; i < N_HIT; i++) hit[i] = stored[i % N_STORED];
    ac_cache *w = open_cache(&f, 1, 0, 0, 0);
    for (int i = 0; i < N_STORED; i++) {
        int added = 0;
        assert_int_equal(ac_cache_add(w, f.exact, stored[i].tokens, stored[i].n_tokens, &added), AC_OK);
        assert_int_equal(added, 1);
    }
    assert_int_equal(ac_cache_close(w), AC_OK);

    ac_cache *ca = open_cache(&f, 0, 0.02f, 64, 256), *cb = open_cache(&f, 0, 0.0f, 0, 0);
    assert_int_equal(ac_ctx_attach_cache(f.a, ca), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.b, cb), AC_OK);
    uint8_t *h = calloc(N_MISS + N_HIT, 1);
    assert_non_null(h);

    /* misses: after the first 64 lookups almost every one is skipped; outputs exact */
    run_stream(&f, ca, cb, miss, N_MISS, h);
    ac_cache_stats s;
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    for (int i = 0; i < N_MISS; i++) assert_int_equal(h[i], 0);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.skipping, 1);
    assert_int_equal(s.queries + s.lookups_skipped, N_MISS); /* every sequence looked up or skipped */
    assert_int_equal(s.probes, 7 + (N_MISS - 64 - 508) / 256); /* intervals 4, 8, ..., 256, then 256 */
    assert_int_equal(s.queries, 64 + s.probes);
    assert_true(s.lookups_skipped >= N_MISS * 85 / 100);
    fprintf(stderr, "misses: %lld of %d skipped, %lld probes\n", (long long)s.lookups_skipped, N_MISS,
            (long long)s.probes);

    /* hits: the next probe finds one and every lookup is back on */
    ac_cache_reset_stats(ca);
    run_stream(&f, ca, cb, hit, N_HIT, h + N_MISS);
    int first = -1;
    for (int i = 0; i < N_HIT && first < 0; i++)
        if (h[N_MISS + i]) first = i;
    assert_true(first >= 0 && first < 256); /* within one probe interval */
    for (int i = first; i < N_HIT; i++) assert_int_equal(h[N_MISS + i], 1); /* on from there */
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    assert_int_equal(s.skipping, 0);
    assert_int_equal(s.probes, 1);
    assert_int_equal(s.lookups_skipped, first);
    assert_int_equal(s.hits, N_HIT - first);
    fprintf(stderr, "hits: on again at sequence %d of %d\n", first, N_HIT);

    /* deterministic: the same streams after a restart give the same decisions */
    uint8_t *h2 = calloc(N_MISS + N_HIT, 1);
    assert_non_null(h2);
    assert_int_equal(ac_cache_set_adapt(ca, 0.02f, 64, 256), AC_OK);
    ac_cache_reset_stats(ca);
    run_stream(&f, ca, cb, miss, N_MISS, h2);
    run_stream(&f, ca, cb, hit, N_HIT, h2 + N_MISS);
    assert_memory_equal(h, h2, N_MISS + N_HIT);
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    assert_int_equal(s.lookups_skipped, N_MISS - 64 - (7 + (N_MISS - 64 - 508) / 256) + first);

    /* off (floor 0): every sequence looked up */
    assert_int_equal(ac_cache_set_adapt(ca, 0.0f, 0, 0), AC_OK);
    ac_cache_reset_stats(ca);
    run_stream(&f, ca, cb, miss, 200, h2);
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    assert_int_equal(s.queries, 200);
    assert_int_equal(s.lookups_skipped, 0);
    assert_int_equal(s.probes, 0);

    /* a new threshold starts the hit rate over: lookups on again */
    assert_int_equal(ac_cache_set_adapt(ca, 0.02f, 16, 0), AC_OK);
    run_stream(&f, ca, cb, miss, 100, h2);
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    assert_int_equal(s.skipping, 1);
    assert_int_equal(ac_cache_set_threshold(ca, TINY), AC_OK);
    assert_int_equal(ac_cache_get_stats(ca, &s), AC_OK);
    assert_int_equal(s.skipping, 0);

    /* bad parameters: refused by name, the cache unchanged */
    assert_int_equal(ac_cache_set_adapt(ca, NAN, 0, 0), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "floor"));
    assert_int_equal(ac_cache_set_adapt(ca, 0.02f, 0, 3), AC_ERR_ARG);
    assert_int_equal(ac_cache_set_adapt(NULL, 0.02f, 0, 0), AC_ERR_ARG);
    ac_cache_params p = ac_cache_default_params();
    p.adapt_window = -4;
    ac_cache *bad = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &bad), AC_ERR_ARG);
    assert_null(bad);
    assert_non_null(strstr(ac_last_error(), "window"));

    free(h);
    free(h2);
    ac_cache_close(ca);
    ac_cache_close(cb);
    free(ids_s);
    free(ids_m);
    fx_close(&f);
}

/* New entries committed by a writer while lookups are skipped: the next
 * sequence is a probe, so a stream that the new entries serve finds them at once. */
static void test_new_entries_probe_soon(void **state) {
    (void)state;
    fx f;
    fx_open(&f);
    enum { N = 300 };
    ac_seq seqs[N], more[4];
    int32_t *ids, *ids2;
    make_seqs(&f, N, 33, seqs, &ids);
    make_seqs(&f, 4, 44, more, &ids2);
    ac_cache *w = open_cache(&f, 1, 0.02f, 32, 256);
    int added = 0;
    assert_int_equal(ac_cache_add(w, f.exact, more[3].tokens, more[3].n_tokens, &added), AC_OK); /* not queried */
    assert_int_equal(ac_cache_commit(w), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.a, w), AC_OK);
    float *y = malloc((size_t)f.D * sizeof *y);
    assert_non_null(y);
    for (int i = 0; i < N; i++) embed(f.a, &seqs[i], y);
    ac_cache_stats s;
    assert_int_equal(ac_cache_get_stats(w, &s), AC_OK);
    assert_int_equal(s.skipping, 1);
    assert_true(s.lookups_skipped > N / 2);
    for (int k = 0; k < 3; k++) assert_int_equal(ac_cache_add(w, f.exact, more[k].tokens, more[k].n_tokens, &added), AC_OK);
    assert_int_equal(ac_cache_commit(w), AC_OK);
    uint8_t hit = 0;
    embed(f.a, &more[0], y);
    assert_int_equal(ac_cache_last_hits(f.a, 1, &hit, NULL), AC_OK);
    assert_int_equal(hit, 1);
    embed(f.a, &more[1], y);
    assert_int_equal(ac_cache_last_hits(f.a, 1, &hit, NULL), AC_OK);
    assert_int_equal(hit, 1);
    assert_int_equal(ac_cache_get_stats(w, &s), AC_OK);
    assert_int_equal(s.skipping, 0);
    free(y);
    ac_cache_close(w);
    free(ids);
    free(ids2);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_machine_misses_then_hits), cmocka_unit_test(test_machine_rates),
        cmocka_unit_test(test_machine_bad_params),       cmocka_unit_test(test_stream_misses_then_hits),
        cmocka_unit_test(test_new_entries_probe_soon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
