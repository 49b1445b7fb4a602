/* test_cache_index.c — the FAISS wrapper: exact flat search against a plain C
 * brute force (cosine and L2, caller ids) and, at every CPU level, the own
 * f16 scan + proof against an exhaustive scan with the level's own exact
 * similarity (bitwise; AVX2 and AVX-512 bitwise equal too), IVF-Flat and HNSW
 * recall on random data, the hit helper, save/load round trips,
 * corrupt/truncated/garbage index files, and FAISS errors coming back as
 * codes (never exceptions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/index.h"
#include "cache/index_scan.h"
#include "util/pool.h"
#include "util/common.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "levels.h"

static uint64_t rng_state = 99;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static float rng_normal(void) {
    double u = ((double)(rng_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double v = (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}
static float *randn(int64_t n, int d) {
    float *x = (float *)mallocCheck((size_t)n * d * sizeof(float));
    for (int64_t i = 0; i < n * d; i++) x[i] = rng_normal();
    return x;
}

static char g_dir[256];
static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/ac_test_cache_index.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}
static const char *path_in(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

/* Plain C brute force: sims [nq][k], ids [nq][k], best first. */
static void brute(const float *x, const int64_t *ids, int64_t n, const float *q, int64_t nq, int d, int metric, int k,
                  int64_t *out_ids, float *out_sims) {
    double *s = (double *)mallocCheck((size_t)n * sizeof(double));
    for (int64_t a = 0; a < nq; a++) {
        const float *qa = q + a * d;
        double qn = 0;
        for (int j = 0; j < d; j++) qn += (double)qa[j] * qa[j];
        for (int64_t i = 0; i < n; i++) {
            const float *xi = x + i * d;
            double dot = 0, xn = 0, l2 = 0;
            for (int j = 0; j < d; j++) {
                dot += (double)qa[j] * xi[j];
                xn += (double)xi[j] * xi[j];
                l2 += ((double)qa[j] - xi[j]) * ((double)qa[j] - xi[j]);
            }
            s[i] = metric == AC_METRIC_COSINE ? dot / sqrt(qn * xn) : -l2;
        }
        for (int r = 0; r < k; r++) { /* selection, k small */
            int64_t best = -1;
            for (int64_t i = 0; i < n; i++)
                if (s[i] > -INFINITY && (best < 0 || s[i] > s[best])) best = i;
            out_ids[a * k + r] = ids ? ids[best] : best;
            out_sims[a * k + r] = (float)s[best];
            s[best] = -INFINITY;
        }
    }
    free(s);
}

/* ac_index_search_batch of the nq queries q [nq][d] gives bitwise what
 * ac_index_search gives each query alone (ids and similarities), and counts
 * nq scans in the flat index's stats. */
static void check_batch_equals_single(const ac_index *idx, const float *q, int64_t nq, int d, int k) {
    int64_t *bi = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t)), *oi = (int64_t *)mallocCheck((size_t)k * sizeof(int64_t));
    float *bs = (float *)mallocCheck((size_t)nq * k * sizeof(float)), *os = (float *)mallocCheck((size_t)k * sizeof(float));
    int64_t q0 = 0, q1 = 0;
    ac_index_scan_stats(idx, &q0, NULL, NULL);
    assert_int_equal(ac_index_search_batch(idx, q, nq, k, bi, bs), AC_OK);
    ac_index_scan_stats(idx, &q1, NULL, NULL);
    ac_index_params p;
    ac_index_get_params(idx, &p);
    if (p.kind == AC_INDEX_FLAT && ac_index_ntotal(idx) > k) assert_int_equal(q1 - q0, nq);
    for (int64_t a = 0; a < nq; a++) {
        assert_int_equal(ac_index_search(idx, q + a * d, 1, k, oi, os), AC_OK);
        for (int r = 0; r < k; r++) {
            assert_true(bi[a * k + r] == oi[r]);
            assert_memory_equal(&bs[a * k + r], &os[r], sizeof(float));
        }
    }
    /* one query, and none */
    assert_int_equal(ac_index_search_batch(idx, q, 1, k, bi, bs), AC_OK);
    assert_int_equal(ac_index_search(idx, q, 1, k, oi, os), AC_OK);
    assert_memory_equal(bi, oi, (size_t)k * sizeof(int64_t));
    assert_memory_equal(bs, os, (size_t)k * sizeof(float));
    assert_int_equal(ac_index_search_batch(idx, q, 0, k, bi, bs), AC_OK);
    free(bi), free(oi), free(bs), free(os);
}

static void check_flat(int metric, int64_t n, int d) {
    const int k = 10;
    const int64_t nq = 40;
    float *x = randn(n, d), *q = randn(nq, d);
    int64_t *ids = (int64_t *)mallocCheck((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) ids[i] = 1000 + 3 * i; /* caller ids */
    ac_index_params p = ac_index_default_params(AC_INDEX_FLAT, d);
    p.metric = metric;
    ac_index *idx = NULL;
    assert_int_equal(ac_index_create(&p, &idx), AC_OK);
    assert_int_equal(ac_index_add(idx, x, ids, n / 2 + 1), AC_OK); /* in two batches */
    assert_int_equal(ac_index_add(idx, x + (n / 2 + 1) * d, ids + n / 2 + 1, n - (n / 2 + 1)), AC_OK);
    assert_int_equal(ac_index_ntotal(idx), n);
    int64_t *gi = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t)), *bi = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t));
    float *gs = (float *)mallocCheck((size_t)nq * k * sizeof(float)), *bs = (float *)mallocCheck((size_t)nq * k * sizeof(float));
    assert_int_equal(ac_index_search(idx, q, nq, k, gi, gs), AC_OK);
    brute(x, ids, n, q, nq, d, metric, k, bi, bs);
    for (int64_t i = 0; i < nq * k; i++) {
        float tol = metric == AC_METRIC_COSINE ? 1e-5f : 1e-3f * fabsf(bs[i]);
        assert_true(fabsf(gs[i] - bs[i]) <= tol);
        /* ids equal, unless two candidates tie within the tolerance */
        if (gi[i] != bi[i]) {
            int64_t r = i % k;
            assert_true(r + 1 < k && fabsf(bs[i] - bs[i + 1]) <= tol);
        }
    }
    /* one query at a time: the own int8 scan + exact re-rank (nq < 16) instead of FAISS's search */
    for (int64_t a = 0; a < nq; a++) {
        int64_t oi[10];
        float os[10];
        assert_int_equal(ac_index_search(idx, q + a * d, 1, k, oi, os), AC_OK);
        for (int r = 0; r < k; r++) {
            const int64_t i = a * k + r;
            float tol = metric == AC_METRIC_COSINE ? 1e-5f : 1e-3f * fabsf(bs[i]);
            assert_true(fabsf(os[r] - bs[i]) <= tol);
            if (oi[r] != bi[i]) assert_true(r + 1 < k && fabsf(bs[i] - bs[i + 1]) <= tol);
        }
    }
    /* all the queries in one batch: each one's results bitwise */
    check_batch_equals_single(idx, q, nq, d, k);
    /* a query equal to a stored vector is its own best hit */
    int64_t id;
    float sim;
    int hit;
    assert_int_equal(ac_index_lookup(idx, x + (n / 3) * d, metric == AC_METRIC_COSINE ? 0.999f : -1e-3f, &id, &sim, &hit), AC_OK);
    assert_int_equal(id, ids[n / 3]);
    assert_int_equal(hit, 1);
    /* a random query: a hit exactly when its brute-force best reaches the threshold
     * (no hit in 128-d; with 7-d vectors a cosine above 0.9 can happen) */
    const float thr = metric == AC_METRIC_COSINE ? 0.9f : -1.0f;
    assert_int_equal(ac_index_lookup(idx, q, thr, &id, &sim, &hit), AC_OK);
    assert_int_equal(hit, bs[0] >= thr);
    if (d >= 128) assert_int_equal(hit, 0);
    assert_int_equal(ac_index_is_hit(sim, sim), 1);
    assert_int_equal(ac_index_is_hit(sim, sim + 1e-3f), 0);
    ac_index_free(idx);
    free(x); free(q); free(ids); free(gi); free(bi); free(gs); free(bs);
}

/* 128-d like the projector keys; an odd size and dimension (partial blocks
 * of 16 vectors and of 4 elements); 384-d like the mean keys */
static void test_flat_cosine(void **state) {
    (void)state;
    check_flat(AC_METRIC_COSINE, 700, 128);
    check_flat(AC_METRIC_COSINE, 45, 7);
    check_flat(AC_METRIC_COSINE, 333, 384);
}
static void test_flat_l2(void **state) {
    (void)state;
    check_flat(AC_METRIC_L2, 700, 128);
    check_flat(AC_METRIC_L2, 45, 7);
    check_flat(AC_METRIC_L2, 333, 384);
}

/* index.cpp's prepare(): cosine vectors normalised in place, the same bits. */
static void normalise(float *v, int64_t n, int d) {
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)v[i * d + j] * v[i * d + j];
        if (ss > 0) {
            const float inv = (float)(1.0 / sqrt(ss));
            for (int j = 0; j < d; j++) v[i * d + j] *= inv;
        }
    }
}

/* One data set: the single-query scan (serial and on a 2-thread pool) equals
 * an exhaustive scan with the level's exact similarity, bit for bit — the
 * f16 pass and its proof (index_scan.h: the bound holds for every level's
 * summation order) lose nothing. res_ids/res_sims [nq][k] get the results. */
static void exact_case(const char *name, float *x, int64_t n, float *q, int64_t nq, int d, int metric, int k,
                       ac_pool *pool, int64_t *res_ids, float *res_sims) {
    ac_index_params p = ac_index_default_params(AC_INDEX_FLAT, d);
    p.metric = metric;
    ac_index *idx = NULL;
    assert_int_equal(ac_index_create(&p, &idx), AC_OK);
    assert_int_equal(ac_index_add(idx, x, NULL, n), AC_OK);
    const int l2 = metric == AC_METRIC_L2;
    float *xs = (float *)mallocCheck((size_t)n * d * sizeof(float)), *qs = (float *)mallocCheck((size_t)d * sizeof(float));
    memcpy(xs, x, (size_t)n * d * sizeof(float));
    if (!l2) normalise(xs, n, d);
    const ac_scan_kernels *ker = ac_scan_kernels_now();
    float *all = (float *)mallocCheck((size_t)n * sizeof(float));
    for (int64_t a = 0; a < nq; a++) {
        memcpy(qs, q + a * d, (size_t)d * sizeof(float));
        if (!l2) normalise(qs, 1, d);
        for (int64_t i = 0; i < n; i++) all[i] = ker->sim(qs, xs + i * d, d, l2);
        int64_t oi[16], pi[16];
        float os[16], ps[16];
        assert_int_equal(ac_index_search(idx, q + a * d, 1, k, oi, os), AC_OK);
        assert_int_equal(ac_index_search_pool(idx, q + a * d, 1, k, pi, ps, pool), AC_OK);
        for (int r = 0; r < k; r++) { /* the exhaustive top k, ties to the lower position */
            int64_t best = -1;
            for (int64_t i = 0; i < n; i++)
                if (all[i] > -INFINITY && (best < 0 || all[i] > all[best])) best = i;
            if (oi[r] != best || os[r] != all[best])
                fail_msg("%s, level %s, query %lld rank %d: scan %lld (%.9g), exhaustive %lld (%.9g)", name,
                         ac_cpu_level_name(ac_cpu_level()), (long long)a, r, (long long)oi[r], (double)os[r],
                         (long long)best, (double)all[best]);
            assert_int_equal(pi[r], best);
            assert_true(ps[r] == all[best]);
            res_ids[a * k + r] = best;
            res_sims[a * k + r] = all[best];
            all[best] = -INFINITY;
        }
    }
    free(all), free(xs), free(qs);
    ac_index_free(idx);
}

/* Data sets that stress the proof, at every level; across levels, AVX2 and
 * AVX-512 return bitwise equal results (same summation order), portable C
 * the same vectors with similarities within 1e-5 relative (its sums of d <=
 * 128 products round in another order: at most 2 (d + 1) 2^-24 ~ 1.5e-5 of
 * sum |q_j x_j|, which the similarities here are close to; near-ties within
 * that may swap). */
static void test_flat_exact_across_levels(void **state) {
    (void)state;
    enum { NQ = 30, K = 8, NSET = 4 };
    const int top = levels_top();
    ac_pool *pool = NULL;
    assert_int_equal(ac_pool_new(2, &pool), AC_OK);
    int64_t *ids[3][NSET];
    float *sims[3][NSET];
    const char *names[NSET] = {"tight L2 clusters", "tiny values (f16 subnormals), L2", "cosine, odd d", "large values, L2"};
    for (int set = 0; set < NSET; set++) {
        const int d = set == 2 ? 37 : 128;
        const int64_t n = set == 0 ? 40000 : 3000; /* set 0: n d > 2^22, the parallel scan */
        const int metric = set == 2 ? AC_METRIC_COSINE : AC_METRIC_L2;
        const int nc = 10;
        rng_state = 1234 + (uint64_t)set;
        float *c = randn(nc, d);
        const float scale = set == 1 ? 1e-6f : set == 3 ? 3000.0f : 1.0f, noise = set == 2 ? 0.3f : 0.005f;
        float *x = (float *)mallocCheck((size_t)n * d * sizeof(float)), *q = (float *)mallocCheck((size_t)NQ * d * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < d; j++) x[i * d + j] = scale * (c[(i % nc) * d + j] + noise * rng_normal());
        for (int64_t a = 0; a < NQ; a++)
            for (int j = 0; j < d; j++) q[a * d + j] = scale * (c[(a % nc) * d + j] + noise * rng_normal());
        for (int lv = top; lv >= 0; lv--) {
            levels_enter(lv);
            ids[lv][set] = (int64_t *)mallocCheck(NQ * K * sizeof(int64_t));
            sims[lv][set] = (float *)mallocCheck(NQ * K * sizeof(float));
            exact_case(names[set], x, n, q, NQ, d, metric, K, pool, ids[lv][set], sims[lv][set]);
            if (lv > 0 && lv < top) {
                assert_memory_equal(ids[lv][set], ids[top][set], NQ * K * sizeof(int64_t));
                assert_memory_equal(sims[lv][set], sims[top][set], NQ * K * sizeof(float));
            }
        }
        double worst = 0;
        for (int i = 0; i < NQ * K && top > 0; i++) {
            const double e = fabs((double)sims[0][set][i] - sims[top][set][i]) / fmax(1e-30, fabs(sims[top][set][i]));
            worst = fmax(worst, e);
            assert_true(e <= 1e-5);
            if (ids[0][set][i] != ids[top][set][i]) /* a near-tie within the tolerance */
                assert_true(fabs((double)sims[top][set][i] - sims[top][set][i + (i % K + 1 < K ? 1 : -1)]) <=
                            2e-5 * fabs(sims[top][set][i]));
        }
        print_message("%s: exact at every level; portable C vs SIMD similarities within %.1e\n", names[set], worst);
        for (int lv = top; lv >= 0; lv--) free(ids[lv][set]), free(sims[lv][set]);
        free(c), free(x), free(q);
    }
    levels_leave();
    ac_pool_free(pool);
}

/* Tight clusters of near-equal vectors, where the f16 pass cannot tell the
 * neighbours apart: the error bound sends them to the exact computation, so
 * the single-query scan still returns the true top k with exact
 * similarities. (An int8 pass with a re-rank of 6k candidates found 5% of
 * them here.) With a 2-thread pool and an index large enough for the
 * parallel scan, the same results. */
static void test_flat_tight_clusters(void **state) {
    (void)state;
    const int d = 128, k = 8, nc = 20;
    const int64_t n = 33000, nq = 60; /* n * d > 2^22: the parallel scan */
    float *centres = randn(nc, d);
    float *x = (float *)mallocCheck((size_t)n * d * sizeof(float)), *q = (float *)mallocCheck((size_t)nq * d * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) x[i * d + j] = centres[(i % nc) * d + j] + 0.01f * (float)rng_normal();
    for (int64_t a = 0; a < nq; a++)
        for (int j = 0; j < d; j++) q[a * d + j] = centres[(a % nc) * d + j] + 0.01f * (float)rng_normal();
    ac_index_params p = ac_index_default_params(AC_INDEX_FLAT, d);
    p.metric = AC_METRIC_L2;
    ac_index *idx = NULL;
    assert_int_equal(ac_index_create(&p, &idx), AC_OK);
    assert_int_equal(ac_index_add(idx, x, NULL, n), AC_OK);
    int64_t *bi = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t));
    float *bs = (float *)mallocCheck((size_t)nq * k * sizeof(float));
    brute(x, NULL, n, q, nq, d, AC_METRIC_L2, k, bi, bs);
    ac_pool *pool = NULL;
    assert_int_equal(ac_pool_new(2, &pool), AC_OK);
    int64_t found = 0;
    for (int64_t a = 0; a < nq; a++) {
        int64_t oi[8], pi[8];
        float os[8], ps[8];
        assert_int_equal(ac_index_search(idx, q + a * d, 1, k, oi, os), AC_OK);
        assert_int_equal(ac_index_search_pool(idx, q + a * d, 1, k, pi, ps, pool), AC_OK);
        for (int r = 0; r < k; r++) {
            /* the returned similarity is the exact one of the returned vector */
            double l2 = 0;
            for (int j = 0; j < d; j++) l2 += ((double)q[a * d + j] - x[oi[r] * d + j]) * ((double)q[a * d + j] - x[oi[r] * d + j]);
            assert_true(fabs(os[r] + l2) <= 1e-4 * l2 + 1e-7);
            assert_true(r == 0 || os[r] <= os[r - 1]);
            for (int s2 = 0; s2 < k; s2++)
                if (oi[r] == bi[a * k + s2]) { found++; break; }
            /* the parallel scan's candidates include the serial ones: never worse */
            assert_true(ps[r] >= os[r] - 1e-6f * fabsf(os[r]));
        }
    }
    /* the batch: the same results (the unproven queries recomputed as alone) */
    check_batch_equals_single(idx, q, nq, d, k);
    const double rec = (double)found / (double)(nq * k);
    printf("  tight clusters (n %lld, noise 1%% of the spread): recall@%d %.4f\n", (long long)n, k, rec);
    assert_true(rec >= 0.999); /* exact up to float-vs-double near-ties */
    int64_t sq_ = 0, su = 0, sr = 0;
    ac_index_scan_stats(idx, &sq_, &su, &sr);
    assert_int_equal(sq_, 4 * nq + 2); /* single, pool; the batch check: nq batched, nq alone, one of each */
    assert_true(su > 0 && sr > 0); /* the bound could not exclude the near-equal neighbours */
    printf("  f16 pass: %lld of %lld searches not proven at once, %lld vectors recomputed\n", (long long)su,
           (long long)sq_, (long long)sr);
    ac_pool_free(pool);
    ac_index_free(idx);
    free(centres), free(x), free(q), free(bi), free(bs);
}

static void test_flat_edge(void **state) {
    (void)state;
    ac_index_params p = ac_index_default_params(AC_INDEX_FLAT, 4);
    ac_index *idx = NULL;
    assert_int_equal(ac_index_create(&p, &idx), AC_OK);
    float q[4] = {1, 0, 0, 0};
    int64_t id = 7;
    float sim = 0;
    int hit = 1;
    assert_int_equal(ac_index_lookup(idx, q, 0.5f, &id, &sim, &hit), AC_OK); /* empty */
    assert_int_equal(id, -1);
    assert_int_equal(hit, 0);
    float x[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    assert_int_equal(ac_index_add(idx, x, NULL, 2), AC_OK); /* ids 0, 1 */
    int64_t ids[4];
    float sims[4];
    assert_int_equal(ac_index_search(idx, q, 1, 4, ids, sims), AC_OK); /* k > ntotal */
    assert_int_equal(ids[0], 0);
    assert_true(fabsf(sims[0] - 1.0f) < 1e-6f);
    assert_int_equal(ids[1], 1);
    assert_true(fabsf(sims[1]) < 1e-6f);
    assert_int_equal(ids[2], -1);
    assert_true(isinf(sims[2]) && sims[2] < 0);
    /* cosine normalises: a scaled query has the same similarity */
    float q2[4] = {5, 0, 0, 0};
    assert_int_equal(ac_index_search(idx, q2, 1, 1, ids, sims), AC_OK);
    assert_true(fabsf(sims[0] - 1.0f) < 1e-6f);
    assert_int_equal(ac_index_add(idx, x, NULL, 1), AC_OK); /* sequential ids continue */
    assert_int_equal(ac_index_ntotal(idx), 3);
    float bad[4] = {NAN, 0, 0, 0};
    assert_int_equal(ac_index_add(idx, bad, NULL, 1), AC_ERR_ARG);
    assert_int_equal(ac_index_search(idx, bad, 1, 1, ids, sims), AC_ERR_ARG);
    assert_int_equal(ac_index_search(idx, q, 1, 0, ids, sims), AC_ERR_ARG);
    ac_index_free(idx);
    p.dim = 0;
    assert_int_equal(ac_index_create(&p, &idx), AC_ERR_ARG);
    p = ac_index_default_params(7, 4);
    assert_int_equal(ac_index_create(&p, &idx), AC_ERR_ARG);
    p = ac_index_default_params(AC_INDEX_HNSW, 4);
    p.hnsw_m = 1;
    assert_int_equal(ac_index_create(&p, &idx), AC_ERR_ARG);
    ac_index_free(NULL);
}

/* Clustered random data (like real sentence features): 64 centres ~ N(0,1),
 * points = centre + N(0,1) (overlapping clusters). x: [n][d]. */
static float *clustered(int64_t n, int d, const float *centres, int nc) {
    float *x = (float *)mallocCheck((size_t)n * d * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const float *c = centres + (size_t)(rng_u64() % (uint64_t)nc) * d;
        for (int j = 0; j < d; j++) x[i * d + j] = c[j] + rng_normal();
    }
    return x;
}

/* recall@k of an approximate index against the exact one */
static double recall(ac_index *approx, ac_index *exact, const float *q, int64_t nq, int k) {
    int64_t *a = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t)), *e = (int64_t *)mallocCheck((size_t)nq * k * sizeof(int64_t));
    assert_int_equal(ac_index_search(approx, q, nq, k, a, NULL), AC_OK);
    assert_int_equal(ac_index_search(exact, q, nq, k, e, NULL), AC_OK);
    int64_t found = 0;
    for (int64_t i = 0; i < nq; i++)
        for (int r = 0; r < k; r++)
            for (int s = 0; s < k; s++)
                if (a[i * k + r] == e[i * k + s]) { found++; break; }
    free(a);
    free(e);
    return (double)found / (double)(nq * k);
}

static void test_ivf_hnsw_recall(void **state) {
    (void)state;
    const int d = 128, k = 10;
    const int64_t n = 5000, nq = 100;
    float *centres = randn(64, d);
    float *x = clustered(n, d, centres, 64), *q = clustered(nq, d, centres, 64);
    for (int metric = 0; metric < 2; metric++) {
        ac_index_params pf = ac_index_default_params(AC_INDEX_FLAT, d);
        pf.metric = metric;
        ac_index *flat = NULL, *ivf = NULL, *hnsw = NULL;
        assert_int_equal(ac_index_create(&pf, &flat), AC_OK);
        assert_int_equal(ac_index_add(flat, x, NULL, n), AC_OK);

        ac_index_params pi = ac_index_default_params(AC_INDEX_IVF_FLAT, d);
        pi.metric = metric;
        pi.nlist = 64;
        pi.nprobe = 8;
        assert_int_equal(ac_index_create(&pi, &ivf), AC_OK);
        assert_int_equal(ac_index_is_trained(ivf), 0);
        assert_int_equal(ac_index_add(ivf, x, NULL, n), AC_ERR_ARG); /* not trained */
        assert_non_null(strstr(ac_last_error(), "not trained"));
        assert_int_equal(ac_index_train(ivf, x, 10), AC_ERR_ARG);   /* fewer than nlist */
        assert_int_equal(ac_index_train(ivf, x, n), AC_OK);
        assert_int_equal(ac_index_add(ivf, x, NULL, n), AC_OK);
        double r_ivf = recall(ivf, flat, q, nq, k);
        assert_int_equal(ac_index_set_search(ivf, 1, 0), AC_OK);
        double r_ivf_low = recall(ivf, flat, q, nq, k);
        assert_int_equal(ac_index_set_search(ivf, 8, 0), AC_OK);

        ac_index_params ph = ac_index_default_params(AC_INDEX_HNSW, d);
        ph.metric = metric;
        ph.hnsw_m = 32;
        ph.ef_construction = 80;
        ph.ef_search = 128;
        assert_int_equal(ac_index_create(&ph, &hnsw), AC_OK);
        assert_int_equal(ac_index_train(hnsw, x, n), AC_OK); /* no-op */
        assert_int_equal(ac_index_add(hnsw, x, NULL, n), AC_OK);
        double r_hnsw = recall(hnsw, flat, q, nq, k);
        print_message("%s, clustered: recall@%d IVF(nlist 64, nprobe 8) %.3f (nprobe 1: %.3f), HNSW(M 32, efS 128) %.3f\n",
                      metric ? "L2" : "cosine", k, r_ivf, r_ivf_low, r_hnsw);
        assert_true(r_ivf >= 0.9);
        assert_true(r_hnsw >= 0.9);
        assert_true(r_ivf_low < r_ivf); /* the knob does something */

        /* save/load keeps results (and search knobs) */
        ac_index *kinds[3] = {flat, ivf, hnsw};
        for (int t = 0; t < 3; t++) check_batch_equals_single(kinds[t], q, 40, d, k); /* a batch: as alone */
        for (int t = 0; t < 3; t++) {
            const char *path = path_in("rt.acidx");
            assert_int_equal(ac_index_save(kinds[t], path), AC_OK);
            ac_index *back = NULL;
            assert_int_equal(ac_index_load(path, &back), AC_OK);
            ac_index_params a, b;
            ac_index_get_params(kinds[t], &a);
            ac_index_get_params(back, &b);
            assert_memory_equal(&a, &b, sizeof a);
            assert_int_equal(ac_index_ntotal(back), n);
            int64_t i1[10 * 10], i2[10 * 10];
            float s1[10 * 10], s2[10 * 10];
            assert_int_equal(ac_index_search(kinds[t], q, 10, k, i1, s1), AC_OK);
            assert_int_equal(ac_index_search(back, q, 10, k, i2, s2), AC_OK);
            assert_memory_equal(i1, i2, sizeof i1);
            assert_memory_equal(s1, s2, sizeof s1);
            ac_index_free(back);
        }
        ac_index_free(flat);
        ac_index_free(ivf);
        ac_index_free(hnsw);
    }
    free(x);
    free(q);
    free(centres);
}

/* Isotropic Gaussian data (no structure: the worst case for IVF, whose lists
 * then carve space arbitrarily): HNSW still reaches 0.9; IVF recall is only
 * reported against nprobe, and must reach 1 when it visits every list. */
static void test_recall_isotropic(void **state) {
    (void)state;
    const int d = 128, k = 10;
    const int64_t n = 3000, nq = 100;
    float *x = randn(n, d), *q = randn(nq, d);
    ac_index_params pf = ac_index_default_params(AC_INDEX_FLAT, d), pi = ac_index_default_params(AC_INDEX_IVF_FLAT, d),
                    ph = ac_index_default_params(AC_INDEX_HNSW, d);
    pi.nlist = 64;
    pi.nprobe = 32;
    ph.ef_search = 128;
    ac_index *flat = NULL, *ivf = NULL, *hnsw = NULL;
    assert_int_equal(ac_index_create(&pf, &flat), AC_OK);
    assert_int_equal(ac_index_create(&pi, &ivf), AC_OK);
    assert_int_equal(ac_index_create(&ph, &hnsw), AC_OK);
    assert_int_equal(ac_index_add(flat, x, NULL, n), AC_OK);
    assert_int_equal(ac_index_train(ivf, x, n), AC_OK);
    assert_int_equal(ac_index_add(ivf, x, NULL, n), AC_OK);
    assert_int_equal(ac_index_add(hnsw, x, NULL, n), AC_OK);
    double r_hnsw = recall(hnsw, flat, q, nq, k);
    print_message("cosine, isotropic: recall@%d HNSW(M 32, efS 128) %.3f; IVF(nlist 64) by nprobe:", k, r_hnsw);
    double prev = 0;
    for (int np = 1; np <= 64; np *= 2) {
        assert_int_equal(ac_index_set_search(ivf, np, 0), AC_OK);
        double r = recall(ivf, flat, q, nq, k);
        print_message(" %d:%.3f", np, r);
        assert_true(r >= prev - 0.02);
        prev = r;
    }
    print_message("\n");
    assert_true(prev >= 0.999);
    assert_true(r_hnsw >= 0.9);
    ac_index_free(flat);
    ac_index_free(ivf);
    ac_index_free(hnsw);
    free(x);
    free(q);
}

static void test_save_atomic_and_corrupt(void **state) {
    (void)state;
    const int d = 16;
    float *x = randn(200, d);
    ac_index_params p = ac_index_default_params(AC_INDEX_HNSW, d);
    ac_index *idx = NULL;
    assert_int_equal(ac_index_create(&p, &idx), AC_OK);
    assert_int_equal(ac_index_add(idx, x, NULL, 200), AC_OK);
    char path[512];
    snprintf(path, sizeof path, "%s", path_in("c.acidx"));
    assert_int_equal(ac_index_save(idx, path), AC_OK);
    /* overwrite in place: still one file, no temp left behind */
    assert_int_equal(ac_index_save(idx, path), AC_OK);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp > /dev/null", g_dir);
    assert_int_not_equal(system(cmd), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *orig = (uint8_t *)mallocCheck((size_t)n), *b = (uint8_t *)mallocCheck((size_t)n);
    assert_int_equal(fread(orig, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    ac_index *back = NULL;
    struct { long pos; const char *msg; } flips[] = {
        {0, "bad magic"}, {20, "header checksum"}, {96 + 10, "payload checksum"}, {n - 1, "payload checksum"}, {n / 2, "payload checksum"}};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(b, orig, (size_t)n);
        b[flips[i].pos] ^= 0x20;
        f = fopen(path, "wb");
        fwrite(b, 1, (size_t)n, f);
        fclose(f);
        assert_int_equal(ac_index_load(path, &back), AC_ERR_FORMAT);
        assert_null(back);
        assert_non_null(strstr(ac_last_error(), flips[i].msg));
    }
    long cuts[] = {0, 10, 95, 96, n / 3, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        f = fopen(path, "wb");
        fwrite(orig, 1, (size_t)cuts[i], f);
        fclose(f);
        assert_int_equal(ac_index_load(path, &back), AC_ERR_FORMAT);
    }
    for (long i = 0; i < n; i++) b[i] = (uint8_t)(i * 37 + 11);
    f = fopen(path, "wb");
    fwrite(b, 1, (size_t)n, f);
    fclose(f);
    assert_int_equal(ac_index_load(path, &back), AC_ERR_FORMAT);
    assert_int_equal(ac_index_load(path_in("nope.acidx"), &back), AC_ERR_IO);
    assert_int_equal(ac_index_save(idx, "/nonexistent-dir/x.acidx"), AC_ERR_IO);
    /* intact again -> loads */
    f = fopen(path, "wb");
    fwrite(orig, 1, (size_t)n, f);
    fclose(f);
    assert_int_equal(ac_index_load(path, &back), AC_OK);
    assert_int_equal(ac_index_ntotal(back), 200);
    ac_index_free(back);
    ac_index_free(idx);
    free(orig);
    free(b);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_cosine),
        cmocka_unit_test(test_flat_l2),
        cmocka_unit_test(test_flat_tight_clusters),
        cmocka_unit_test(test_flat_exact_across_levels),
        cmocka_unit_test(test_flat_edge),
        cmocka_unit_test(test_ivf_hnsw_recall),
        cmocka_unit_test(test_recall_isotropic),
        cmocka_unit_test(test_save_atomic_and_corrupt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
