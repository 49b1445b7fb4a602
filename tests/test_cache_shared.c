/* test_cache_shared.c — one attention cache shared by many contexts
 * (src/cache/cache.c): N threads x M queries, each thread with its own
 * context attached to one cache, give bitwise the results of the same
 * queries run one at a time; a writer inserting entries while readers look
 * up changes nothing for the entries that were there (bitwise) and makes its
 * own entries findable; contexts and caches may be freed in either order;
 * failed lookups and skipped damaged records are counted. Run it under
 * ASan/UBSan (scripts/test.sh) and, by hand, under TSan (docs/CACHE.md). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "cache/cache_testing.h"
#include "store_reserve.h"
#include "cache/store.h"
#include "forward/forward.h"
#include "ref_forward.h"

#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TINY 1e-5f /* a threshold that admits the identical sequence only */
#define N_THREADS 4

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

typedef struct fx {
    char root[64];
    ac_model *m;
    ac_ctx *exact; /* never attached */
    int D, V, causal;
} fx;

static ac_ctx *mkctx(const ac_model *m) {
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 1; /* N_THREADS contexts at once on a 2-core machine */
    ac_ctx *c = NULL;
    int rc = ac_ctx_new(m, &p, &c);
    if (rc) fprintf(stderr, "ctx: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

static void fx_open(fx *f, int arch) {
    memset(f, 0, sizeof *f);
    strcpy(f->root, "/tmp/ac_cache_shared_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    char path[128];
    snprintf(path, sizeof path, "%s/model.gguf", f->root);
    ref_spec s = ref_spec_default(arch);
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
    f->causal = in.causal;
    f->exact = mkctx(f->m);
}

static void fx_close(fx *f) {
    ac_ctx_free(f->exact);
    ac_model_free(f->m);
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* n random sequences of lengths 8 + (7 i mod 23); caller frees *ids */
static void make_seqs(const fx *f, int n, uint64_t seed, ac_seq *seqs, int32_t **ids) {
    int T = 0;
    for (int i = 0; i < n; i++) T += 8 + (7 * i) % 23;
    *ids = malloc((size_t)T * sizeof **ids);
    ref_random_tokens(&seed, *ids, T, f->V);
    for (int i = 0, o = 0; i < n; i++) {
        seqs[i].tokens = *ids + o;
        seqs[i].n_tokens = 8 + (7 * i) % 23;
        o += seqs[i].n_tokens;
    }
}

static ac_cache *open_cache(const fx *f, const char *name, int writable) {
    char dir[160];
    snprintf(dir, sizeof dir, "%s/%s", f->root, name);
    ac_cache_params p = ac_cache_default_params();
    p.writable = writable;
    p.create = writable;
    p.threshold = TINY;
    p.codec = f->causal ? "f32-causal" : "f32"; /* served layers give the exact result up to rounding */
    ac_cache *c = NULL;
    int rc = ac_cache_open(f->m, dir, &p, &c);
    if (rc) fprintf(stderr, "ac_cache_open: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

static void add_all(ac_cache *c, ac_ctx *ctx, const ac_seq *seqs, int n) {
    for (int i = 0; i < n; i++) {
        int added = -1;
        int rc = ac_cache_add(c, ctx, seqs[i].tokens, seqs[i].n_tokens, &added);
        if (rc) fprintf(stderr, "ac_cache_add: %s\n", ac_last_error());
        assert_int_equal(rc, AC_OK);
        assert_int_equal(added, 1);
    }
    assert_int_equal(ac_cache_commit(c), AC_OK);
}

/* pooled embedding [D] of one sequence (no cmocka calls: used from threads) */
static int embed(ac_ctx *ctx, const ac_seq *s, float *pooled) {
    ac_outputs o;
    memset(&o, 0, sizeof o);
    o.pooled = pooled;
    o.pooling = AC_POOL_MEAN;
    return ac_forward(ctx, s, 1, &o);
}

static double rel_err(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= num)) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0 ? num / den : num;
}

/* ---- 1. N threads x M queries on one cache == the same queries one at a time -------------------- */

typedef struct worker {
    const fx *f;
    ac_cache *c;
    const ac_seq *qs;     /* [nq] queries */
    int nq, M, id;
    const float *ref;     /* [nq][D] results one at a time (bitwise expected) */
    const float *exact;   /* [nq][D] exact results (within 1e-5 expected), or NULL */
    int n_old;            /* queries [0, n_old): bitwise against ref; the rest: within 1e-5 of exact */
    const atomic_int *until; /* non-NULL: go on past M queries until *until != 0 */
    int errors, mismatches, done;
    double worst;
} worker;

static void *worker_run(void *arg) {
    worker *w = arg;
    ac_ctx *ctx = NULL;
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 1;
    if (ac_ctx_new(w->f->m, &p, &ctx) != AC_OK || ac_ctx_attach_cache(ctx, w->c) != AC_OK) {
        w->errors++;
        ac_ctx_free(ctx);
        return NULL;
    }
    const int D = w->f->D;
    float *out = malloc((size_t)D * sizeof *out);
    for (int j = 0; out && (j < w->M || (w->until && !atomic_load(w->until))); j++) {
        const int q = (w->id * 7 + j * 5) % w->nq; /* each thread its own order */
        if (embed(ctx, &w->qs[q], out) != AC_OK) {
            w->errors++;
            continue;
        }
        if (q < w->n_old) {
            if (memcmp(out, w->ref + (size_t)q * D, (size_t)D * sizeof *out)) w->mismatches++;
        } else {
            double e = rel_err(out, w->exact + (size_t)q * D, D);
            if (!(e <= 1e-5)) w->mismatches++;
            if (e > w->worst) w->worst = e;
        }
        w->done++;
    }
    free(out);
    ac_ctx_free(ctx); /* freed while attached: the cache forgets it */
    return NULL;
}

static void threads_vs_single(int arch) {
    fx f;
    fx_open(&f, arch);
    enum { NS = 6, NQ = 9, M = 30 }; /* 6 stored, 3 misses */
    ac_seq qs[NQ];
    int32_t *ids;
    make_seqs(&f, NQ, 21, qs, &ids);
    ac_cache *w = open_cache(&f, "c", 1);
    add_all(w, f.exact, qs, NS);
    assert_int_equal(ac_cache_close(w), AC_OK);
    ac_cache *c = open_cache(&f, "c", 0);

    /* one at a time, one context */
    float *ref = malloc((size_t)NQ * f.D * sizeof *ref), *ex = malloc((size_t)NQ * f.D * sizeof *ex);
    ac_ctx *one = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(one, c), AC_OK);
    for (int q = 0; q < NQ; q++) {
        assert_int_equal(embed(one, &qs[q], ref + (size_t)q * f.D), AC_OK);
        assert_int_equal(embed(f.exact, &qs[q], ex + (size_t)q * f.D), AC_OK);
        const int same = !memcmp(ref + (size_t)q * f.D, ex + (size_t)q * f.D, (size_t)f.D * sizeof *ref);
        if (q >= NS) assert_true(same); /* a miss runs exact */
        else assert_true(rel_err(ref + (size_t)q * f.D, ex + (size_t)q * f.D, f.D) <= 1e-5);
    }
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.queries, NQ);
    assert_int_equal(st.hits, NS);
    ac_cache_reset_stats(c);

    /* N threads, each its own context, all on c */
    pthread_t th[N_THREADS];
    worker wk[N_THREADS];
    int64_t hits_expected = 0;
    for (int t = 0; t < N_THREADS; t++) {
        wk[t] = (worker){&f, c, qs, NQ, M, t, ref, NULL, NQ, NULL, 0, 0, 0, 0};
        for (int j = 0; j < M; j++) hits_expected += (t * 7 + j * 5) % NQ < NS;
        assert_int_equal(pthread_create(&th[t], NULL, worker_run, &wk[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(wk[t].errors, 0);
        assert_int_equal(wk[t].done, M);
        assert_int_equal(wk[t].mismatches, 0);
    }
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.queries, N_THREADS * M);
    assert_int_equal(st.hits, hits_expected);
    assert_int_equal(st.layers_served, hits_expected * ref_spec_default(arch).n_layer);
    assert_int_equal(st.lookups_failed, 0);
    /* the single context is still attached and still gives the same result */
    float *again = malloc((size_t)f.D * sizeof *again);
    assert_int_equal(embed(one, &qs[0], again), AC_OK);
    assert_memory_equal(again, ref, (size_t)f.D * sizeof *again);
    free(again);
    assert_int_equal(ac_cache_close(c), AC_OK); /* closed with `one` attached */
    ac_ctx_free(one);
    free(ref);
    free(ex);
    free(ids);
    fx_close(&f);
}

static void test_threads_llama(void **s) { (void)s, threads_vs_single(AC_ARCH_LLAMA); }
static void test_threads_bert(void **s) { (void)s, threads_vs_single(AC_ARCH_BERT); }

/* ---- 2. a writer inserting while readers look up ------------------------------------------------ */

typedef struct inserter {
    ac_cache *c;
    ac_ctx *ctx;
    const ac_seq *seqs;
    int n, errors;
} inserter;

static void *insert_run(void *arg) {
    inserter *in = arg;
    for (int i = 0; i < in->n; i++) {
        int added = 0;
        if (ac_cache_add(in->c, in->ctx, in->seqs[i].tokens, in->seqs[i].n_tokens, &added) != AC_OK || !added ||
            ac_cache_commit(in->c) != AC_OK) /* each one published at once */
            in->errors++;
    }
    return NULL;
}

static void test_concurrent_inserter(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_LLAMA);
    enum { OLD = 5, NEW = 6, NQ = OLD + NEW, M = 40 };
    ac_seq qs[NQ];
    int32_t *ids;
    make_seqs(&f, NQ, 33, qs, &ids);
    ac_cache *c = open_cache(&f, "w", 1); /* the writer and the readers share this one cache */
    add_all(c, f.exact, qs, OLD);
    float *ref = malloc((size_t)NQ * f.D * sizeof *ref), *ex = malloc((size_t)NQ * f.D * sizeof *ex);
    ac_ctx *one = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(one, c), AC_OK);
    for (int q = 0; q < NQ; q++) {
        assert_int_equal(embed(one, &qs[q], ref + (size_t)q * f.D), AC_OK);
        assert_int_equal(embed(f.exact, &qs[q], ex + (size_t)q * f.D), AC_OK);
    }
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.hits, OLD); /* the new ones are not stored yet */
    assert_int_equal(st.entries, OLD);

    ac_ctx *wctx = mkctx(f.m);
    inserter in = {c, wctx, qs + OLD, NEW, 0};
    pthread_t wt, th[N_THREADS - 1];
    worker wk[N_THREADS - 1];
    atomic_int writer_done = 0; /* the readers look up for as long as the writer inserts */
    for (int t = 0; t < N_THREADS - 1; t++) {
        wk[t] = (worker){&f, c, qs, NQ, M, t, ref, ex, OLD, &writer_done, 0, 0, 0, 0};
        assert_int_equal(pthread_create(&th[t], NULL, worker_run, &wk[t]), 0);
    }
    assert_int_equal(pthread_create(&wt, NULL, insert_run, &in), 0);
    assert_int_equal(pthread_join(wt, NULL), 0);
    atomic_store(&writer_done, 1);
    assert_int_equal(in.errors, 0);
    int64_t looked = 0;
    for (int t = 0; t < N_THREADS - 1; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(wk[t].errors, 0);
        assert_true(wk[t].done >= M);
        looked += wk[t].done;
        assert_int_equal(wk[t].mismatches, 0); /* old entries bitwise; new ones hit or miss, both within 1e-5 */
    }
    fprintf(stderr, "concurrent inserter: %d entries added while %d readers ran %lld queries\n", NEW, N_THREADS - 1,
            (long long)looked);
    /* every new entry is findable now, without a reindex */
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.entries, NQ);
    ac_cache_reset_stats(c);
    float *out = malloc((size_t)f.D * sizeof *out);
    for (int q = OLD; q < NQ; q++) {
        assert_int_equal(embed(one, &qs[q], out), AC_OK);
        assert_true(rel_err(out, ex + (size_t)q * f.D, f.D) <= 1e-5);
    }
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.queries, NEW);
    assert_int_equal(st.hits, NEW);
    free(out);
    ac_ctx_free(one); /* attached: freed before the cache */
    assert_int_equal(ac_cache_close(c), AC_OK);
    ac_ctx_free(wctx);
    /* reopened: the index saved at close holds every entry */
    c = open_cache(&f, "w", 0);
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.entries, NQ);
    one = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(one, c), AC_OK);
    float *o2 = malloc((size_t)f.D * sizeof *o2);
    for (int q = 0; q < NQ; q++) assert_int_equal(embed(one, &qs[q], o2), AC_OK);
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.hits, NQ);
    free(o2);
    ac_ctx_free(one);
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(ref);
    free(ex);
    free(ids);
    fx_close(&f);
}

/* ---- 3. free order ------------------------------------------------------------------------------ */

static void test_free_order(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_LLAMA);
    ac_seq qs[3];
    int32_t *ids;
    make_seqs(&f, 3, 5, qs, &ids);
    ac_cache *w = open_cache(&f, "a", 1);
    add_all(w, f.exact, qs, 2);
    assert_int_equal(ac_cache_close(w), AC_OK);
    w = open_cache(&f, "b", 1);
    add_all(w, f.exact, qs, 3);
    assert_int_equal(ac_cache_close(w), AC_OK);
    float *ex = malloc((size_t)f.D * sizeof *ex), *out = malloc((size_t)f.D * sizeof *out);
    assert_int_equal(embed(f.exact, &qs[2], ex), AC_OK);
    ac_cache_stats st;

    /* contexts first: two attached, both freed, then the cache closed */
    ac_cache *a = open_cache(&f, "a", 0);
    ac_ctx *x = mkctx(f.m), *y = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(x, a), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(y, a), AC_OK);
    ac_ctx_free(x);
    assert_int_equal(embed(y, &qs[0], out), AC_OK);
    assert_int_equal(ac_cache_get_stats(a, &st), AC_OK);
    assert_int_equal(st.hits, 1);
    ac_ctx_free(y);
    assert_int_equal(ac_cache_close(a), AC_OK);

    /* the cache first: its contexts run exact afterwards, then are freed */
    a = open_cache(&f, "a", 0);
    x = mkctx(f.m);
    y = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(x, a), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(y, a), AC_OK);
    assert_int_equal(ac_cache_close(a), AC_OK);
    assert_int_equal(embed(x, &qs[2], out), AC_OK);
    assert_memory_equal(out, ex, (size_t)f.D * sizeof *out);
    ac_ctx_free(x);
    ac_ctx_free(y);

    /* a context moved between caches: the first forgets it */
    a = open_cache(&f, "a", 0);
    ac_cache *b = open_cache(&f, "b", 0);
    x = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(x, a), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(x, b), AC_OK);
    assert_int_equal(ac_cache_close(a), AC_OK); /* nothing attached to a any more: x keeps b */
    assert_int_equal(embed(x, &qs[2], out), AC_OK); /* stored in b only */
    assert_int_equal(ac_cache_get_stats(b, &st), AC_OK);
    assert_int_equal(st.hits, 1);
    ac_ctx_free(x);
    assert_int_equal(ac_cache_close(b), AC_OK);

    /* a writer's cache closed with an attached reader context, after adds through it */
    w = open_cache(&f, "c", 1);
    x = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(x, w), AC_OK);
    int added = 0;
    assert_int_equal(ac_cache_add(w, x, qs[0].tokens, qs[0].n_tokens, &added), AC_OK); /* through the attached one */
    assert_int_equal(added, 1);
    assert_int_equal(ac_cache_commit(w), AC_OK);
    assert_int_equal(embed(x, &qs[0], out), AC_OK); /* still attached after the add: a hit */
    assert_int_equal(ac_cache_get_stats(w, &st), AC_OK);
    assert_int_equal(st.hits, 1);
    assert_int_equal(ac_cache_close(w), AC_OK);
    ac_ctx_free(x);
    free(ex);
    free(out);
    free(ids);
    fx_close(&f);
}

/* ---- 3b. which sequences of a call hit (ac_cache_last_hits) ---------------------------------------- */

static void test_last_hits(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    ac_seq qs[4];
    int32_t *ids;
    make_seqs(&f, 4, 11, qs, &ids);
    ac_cache *w = open_cache(&f, "h", 1);
    add_all(w, f.exact, qs, 2); /* 0 and 1 stored; 2 and 3 not */
    ac_ctx *x = mkctx(f.m);
    uint8_t hit[4];
    uint64_t key[4];
    /* no cache attached: all misses */
    assert_int_equal(ac_cache_last_hits(x, 4, hit, key), AC_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(hit[i], 0);
    assert_int_equal(ac_ctx_attach_cache(x, w), AC_OK);
    float *out = malloc((size_t)4 * f.D * sizeof *out);
    ac_outputs o;
    memset(&o, 0, sizeof o);
    o.pooled = out;
    o.pooling = AC_POOL_MEAN;
    const ac_seq mixed[4] = {qs[2], qs[0], qs[3], qs[1]};
    assert_int_equal(ac_forward(x, mixed, 4, &o), AC_OK);
    memset(hit, 9, sizeof hit);
    assert_int_equal(ac_cache_last_hits(x, 4, hit, key), AC_OK);
    const uint8_t want[4] = {0, 1, 0, 1};
    assert_memory_equal(hit, want, 4);
    assert_int_equal(key[0], 0);
    assert_int_equal(key[2], 0);
    assert_true(key[1] != 0 && key[3] != 0 && key[1] != key[3]);
    /* the next call replaces the report: one sequence, a miss */
    assert_int_equal(ac_forward(x, &qs[3], 1, &o), AC_OK);
    assert_int_equal(ac_cache_last_hits(x, 1, hit, NULL), AC_OK);
    assert_int_equal(hit[0], 0);
    assert_int_equal(ac_forward(x, &qs[1], 1, &o), AC_OK);
    assert_int_equal(ac_cache_last_hits(x, 1, hit, key), AC_OK);
    assert_int_equal(hit[0], 1);
    assert_true(key[0] == key[3]); /* the same entry as in the mixed call (key[1..3] untouched) */
    assert_int_equal(ac_cache_last_hits(NULL, 1, hit, key), AC_ERR_ARG);
    assert_int_equal(ac_cache_last_hits(x, 1, NULL, key), AC_ERR_ARG);
    ac_ctx_free(x);
    assert_int_equal(ac_cache_close(w), AC_OK);
    free(out);
    free(ids);
    fx_close(&f);
}

/* ---- 3c. eviction: use records, LFU/LRU compaction under a budget, SIGKILL during compaction ------ */

static int64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static int64_t cache_entries(const fx *f, const char *name) {
    ac_cache *c = open_cache(f, name, 0);
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    return st.entries;
}

/* hits of sequences qs[idx[0..n)] through a fresh context attached to the named cache */
static int64_t hits_of(const fx *f, const char *name, const ac_seq *qs, const int *idx, int n) {
    ac_cache *c = open_cache(f, name, 0);
    ac_ctx *x = mkctx(f->m);
    assert_int_equal(ac_ctx_attach_cache(x, c), AC_OK);
    float *out = malloc((size_t)f->D * sizeof *out);
    for (int i = 0; i < n; i++) assert_int_equal(embed(x, &qs[idx[i]], out), AC_OK);
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    ac_ctx_free(x);
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(out);
    return st.hits;
}

/* a writable cache with n entries; sequences use[i] hit times[i] times each, in order */
static void fill_used(const fx *f, const char *name, const ac_seq *qs, int n, const int *use, const int *times, int nu) {
    ac_cache *w = open_cache(f, name, 1);
    add_all(w, f->exact, qs, n);
    ac_ctx *x = mkctx(f->m);
    assert_int_equal(ac_ctx_attach_cache(x, w), AC_OK);
    float *out = malloc((size_t)f->D * sizeof *out);
    for (int i = 0; i < nu; i++)
        for (int t = 0; t < times[i]; t++) {
            usleep(2000); /* distinct last-use times (ms) */
            assert_int_equal(embed(x, &qs[use[i]], out), AC_OK);
        }
    ac_ctx_free(x);
    assert_int_equal(ac_cache_close(w), AC_OK); /* saves usage.bin */
    free(out);
}

static void test_compact_policies(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    enum { N = 12 };
    ac_seq qs[N];
    int32_t *ids;
    make_seqs(&f, N, 21, qs, &ids);
    char dir[200], path[240];
    /* LFU: the often-hit entries stay, whatever their age */
    const int use[3] = {0, 1, 2}, times[3] = {3, 3, 3};
    fill_used(&f, "lfu", qs, N, use, times, 3);
    snprintf(dir, sizeof dir, "%s/lfu", f.root);
    snprintf(path, sizeof path, "%s/maps.acdb", dir);
    const int64_t full = file_size(path);
    const int64_t budget = 4096 + (full - 4096) / 3;
    int64_t ev = -1;
    assert_int_equal(ac_db_compact(dir, budget, AC_EVICT_LFU, NULL, &ev), AC_OK);
    assert_true(ev > 0);
    assert_true(file_size(path) <= budget);
    int64_t bad = -1;
    assert_int_equal(ac_db_verify(dir, NULL, &bad), AC_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(cache_entries(&f, "lfu"), N - ev);
    assert_int_equal(hits_of(&f, "lfu", qs, use, 3), 3); /* every hit entry kept */
    /* within budget now: a second compaction changes nothing */
    assert_int_equal(ac_db_compact(dir, budget, AC_EVICT_LFU, NULL, &ev), AC_OK);
    assert_int_equal(ev, 0);

    /* LRU: the recently hit entries stay, then the newest inserted; the oldest unhit go */
    const int use2[2] = {7, 3}, times2[2] = {1, 1};
    fill_used(&f, "lru", qs, N, use2, times2, 2);
    snprintf(dir, sizeof dir, "%s/lru", f.root);
    snprintf(path, sizeof path, "%s/maps.acdb", dir);
    assert_int_equal(ac_db_compact(dir, budget, AC_EVICT_LRU, NULL, &ev), AC_OK);
    assert_true(ev > 0);
    assert_true(file_size(path) <= budget);
    assert_int_equal(hits_of(&f, "lru", qs, use2, 2), 2);
    const int newest[2] = {11, 10}, older[3] = {1, 2, 4}; /* the short entry 0 fills a gap: not asserted */
    assert_int_equal(hits_of(&f, "lru", qs, newest, 2), 2);
    assert_int_equal(hits_of(&f, "lru", qs, older, 3), 0);
    /* bad arguments, and a writer holding the cache */
    assert_int_equal(ac_db_compact(dir, 100, AC_EVICT_LRU, NULL, NULL), AC_ERR_ARG);
    assert_int_equal(ac_db_compact(dir, budget, 7, NULL, NULL), AC_ERR_ARG);
    ac_cache *w = open_cache(&f, "lru", 1);
    assert_int_equal(ac_db_compact(dir, 4096 + 64, AC_EVICT_LRU, NULL, NULL), AC_ERR_CACHE);
    assert_int_equal(ac_cache_close(w), AC_OK);
    /* a damaged usage.bin is ignored (advisory), never an error */
    char upath[240];
    snprintf(upath, sizeof upath, "%s/usage.bin", dir);
    FILE *uf = fopen(upath, "r+b");
    assert_non_null(uf);
    fseek(uf, 20, SEEK_SET);
    fputc(0x5a, uf);
    fclose(uf);
    assert_int_equal(ac_db_compact(dir, 4096 + (full - 4096) / 6, AC_EVICT_LRU, NULL, &ev), AC_OK);
    assert_int_equal(ac_db_verify(dir, NULL, &bad), AC_OK);
    free(ids);
    fx_close(&f);
}

static int g_kill_after, g_writes;
static ssize_t killing_pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (++g_writes >= g_kill_after) {
        if (n > 128) (void)!pwrite(fd, buf, n / 2, off); /* a torn write, then the kill */
        kill(getpid(), SIGKILL);
    }
    return pwrite(fd, buf, n, off);
}

static void test_compact_sigkill(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    enum { N = 10 };
    ac_seq qs[N];
    int32_t *ids;
    make_seqs(&f, N, 33, qs, &ids);
    const int use[2] = {4, 5}, times[2] = {2, 1};
    fill_used(&f, "orig", qs, N, use, times, 2);
    char orig[200], dir[200], path[240], cmd[600];
    snprintf(orig, sizeof orig, "%s/orig", f.root);
    snprintf(path, sizeof path, "%s/maps.acdb", orig);
    const int64_t budget = 4096 + (file_size(path) - 4096) / 2;
    int64_t n_new = -1;
    int completed = 0, killed = 0;
    for (int k = 1; k < 200 && !completed; k++) {
        snprintf(dir, sizeof dir, "%s/k%d", f.root, k);
        snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", orig, dir);
        assert_int_equal(system(cmd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            g_kill_after = k;
            g_writes = 0;
            ac_store_set_pwrite_hook(killing_pwrite);
            _exit(ac_db_compact(dir, budget, AC_EVICT_LFU, NULL, NULL) == AC_OK ? 0 : 3);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        completed = WIFEXITED(status);
        if (completed) assert_int_equal(WEXITSTATUS(status), 0);
        else assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), killed++;
        /* either the old store or the new one, complete */
        int64_t bad = -1;
        assert_int_equal(ac_db_verify(dir, NULL, &bad), AC_OK);
        assert_int_equal(bad, 0);
        char name[32];
        snprintf(name, sizeof name, "k%d", k);
        const int64_t n = cache_entries(&f, name);
        if (completed) n_new = n;
        else assert_int_equal(n, N); /* killed before the rename: the old store, whole */
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
    }
    assert_true(completed);
    assert_true(killed >= 3); /* killed in the temp file's header, records and commit at least */
    assert_true(n_new > 0 && n_new < N);
    free(ids);
    fx_close(&f);
}

/* ---- 4. failed lookups are counted ------------------------------------------------------------------ */

static void test_failed_lookups_counted(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    ac_seq qs[2];
    int32_t *ids;
    make_seqs(&f, 2, 9, qs, &ids);
    ac_cache *c = open_cache(&f, "f", 1);
    add_all(c, f.exact, qs, 2);
    ac_ctx *x = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(x, c), AC_OK);
    float *ex = malloc((size_t)f.D * sizeof *ex), *out = malloc((size_t)f.D * sizeof *out);
    assert_int_equal(embed(f.exact, &qs[0], ex), AC_OK);
    ac_cache_fail_next_lookups(c, 2);
    for (int k = 0; k < 3; k++) assert_int_equal(embed(x, &qs[0], out), AC_OK); /* 2 fail (exact), 1 hits */
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.queries, 3);
    assert_int_equal(st.lookups_failed, 2);
    assert_int_equal(st.hits, 1);
    assert_non_null(strstr(st.first_failure, "injected"));
    /* a failed lookup runs exact, and the call itself succeeds with no error left behind */
    ac_cache_fail_next_lookups(c, 1);
    assert_int_equal(embed(x, &qs[0], out), AC_OK);
    assert_memory_equal(out, ex, (size_t)f.D * sizeof *out);
    /* reported by the db statistics */
    char *text = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&text, &len);
    assert_int_equal(ac_cache_print_db_stats(c, mf), AC_OK);
    fclose(mf);
    assert_non_null(strstr(text, "failed 3"));
    assert_non_null(strstr(text, "injected"));
    free(text);
    ac_cache_reset_stats(c);
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.lookups_failed, 0);
    assert_string_equal(st.first_failure, "");
    assert_int_equal(ac_cache_close(c), AC_OK);
    ac_ctx_free(x);
    free(ex);
    free(out);
    free(ids);
    fx_close(&f);
}

/* ---- 5. the context's task runner (the cache serves maps on it) --------------------------------------- */

typedef struct task_count {
    atomic_int runs[1000];
    atomic_int bad_ith;
    int nth;
} task_count;

static void count_task(void *arg, int task, int ith) {
    task_count *tc = arg;
    atomic_fetch_add(&tc->runs[task], 1);
    if (ith < 0 || ith >= tc->nth) atomic_fetch_add(&tc->bad_ith, 1);
}

static void test_ctx_run_tasks(void **s) {
    (void)s;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    ac_ctx *ctx = NULL;
    assert_int_equal(ac_ctx_new(f.m, &p, &ctx), AC_OK);
    assert_int_equal(ac_ctx_threads(ctx), 2);
    assert_int_equal(ac_ctx_threads(NULL), 1);
    static task_count tc;
    for (int serial = 0; serial < 2; serial++)
        for (int n = 0; n <= 1000; n += 333) {
            memset(&tc, 0, sizeof tc);
            tc.nth = serial ? 1 : 2; /* serial: every task on the caller, ith 0 */
            ac_ctx_run_tasks(ctx, n, serial, count_task, &tc);
            for (int t = 0; t < 1000; t++) assert_int_equal(atomic_load(&tc.runs[t]), t < n ? 1 : 0);
            assert_int_equal(atomic_load(&tc.bad_ith), 0);
        }
    ac_ctx_free(ctx);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_llama),       cmocka_unit_test(test_threads_bert),
        cmocka_unit_test(test_concurrent_inserter), cmocka_unit_test(test_free_order), cmocka_unit_test(test_last_hits), cmocka_unit_test(test_compact_policies), cmocka_unit_test(test_compact_sigkill),
        cmocka_unit_test(test_failed_lookups_counted), cmocka_unit_test(test_ctx_run_tasks),
    };
    test_store_reserve_apply(); /* AC_TEST_STORE_RESERVE: see store_reserve.h */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
