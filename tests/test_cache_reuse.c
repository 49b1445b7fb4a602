/* test_cache_reuse.c — the attention cache as integrated into the engine
 * (src/cache/cache.c on the forward hook), on tiny synthetic models of both
 * kinds: a causal llama-arch decoder and a bidirectional bert-arch encoder.
 * The store, codecs, index and projector have their own unit tests; this file
 * tests what ties them together:
 *   exactness of served layers (f32 maps: equal to the exact forward; q8: a
 *   small nonzero error), the layer policy, misses staying bitwise exact,
 *   length rules (causal prefix served by a longer entry; bidirectional longer
 *   entries only with allow_longer; shorter entries never), batches mixing
 *   hits and misses, bad inputs (another model's database or projector, a
 *   missing directory, damaged and truncated databases, writes to a read-only
 *   cache), and projector training end to end — at every CPU level. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "cache/cache_testing.h"
#include "cache/codec.h"
#include "cache/store.h"
#include "forward/forward.h"
#include "ref_forward.h"
#include "util/common.h"

#include "util/cpu.h"
#include "store_reserve.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------------- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static void write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

static void copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)n);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    write_file(to, b, (size_t)n);
    free(b);
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= num)) num = d; /* NaN propagates */
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0 ? num / den : num;
}

static int all_finite(const float *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

/* ---- fixture: one synthetic model on disk, an exact and a cache context ----------------------------- */

typedef struct fx {
    int arch, causal;
    char root[64];      /* mkdtemp directory holding the model and the caches */
    char model_path[128];
    ac_model *m;
    ac_ctx *exact;      /* never has a cache attached (except inside ac_cache_add) */
    ac_ctx *cctx;       /* the context caches are attached to for lookups */
    int D, NL, V;
} fx;

static ac_model *load_model_spec(const ref_spec *s, const char *path) {
    uint8_t *buf = NULL;
    size_t size = 0;
    assert_int_equal(ref_build(s, &buf, &size), AC_OK);
    write_file(path, buf, size);
    free(buf);
    ac_model *m = NULL;
    int rc = ac_model_load(path, NULL, &m);
    if (rc) fprintf(stderr, "load %s: %s\n", path, ac_last_error());
    assert_int_equal(rc, AC_OK);
    return m;
}

static ac_ctx *mkctx(const ac_model *m) {
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    ac_ctx *c = NULL;
    int rc = ac_ctx_new(m, &p, &c);
    if (rc) fprintf(stderr, "ctx: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

static void fx_open(fx *f, int arch) {
    memset(f, 0, sizeof *f);
    f->arch = arch;
    strcpy(f->root, "/tmp/ac_cache_reuse_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->model_path, sizeof f->model_path, "%s/model.gguf", f->root);
    ref_spec s = ref_spec_default(arch);
    f->m = load_model_spec(&s, f->model_path);
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f->m, &in), AC_OK);
    f->causal = in.causal;
    f->D = in.n_embd;
    f->NL = in.n_layer;
    f->V = in.n_vocab;
    assert_int_equal(f->causal, arch != AC_ARCH_BERT);
    f->exact = mkctx(f->m);
    f->cctx = mkctx(f->m);
}

static void fx_close(fx *f) {
    ac_ctx_free(f->cctx);
    ac_ctx_free(f->exact);
    ac_model_free(f->m);
    rm_rf(f->root);
}

static void cache_dir(const fx *f, const char *name, char *buf, size_t cap) { snprintf(buf, cap, "%s/%s", f->root, name); }

/* codec name for this model: "-causal" appended for decoders */
static const char *codec_for(const fx *f, const char *base, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s", base, f->causal ? "-causal" : "");
    return buf;
}

static ac_cache *open_cache(const fx *f, const char *dir, const ac_cache_params *p) {
    ac_cache *c = NULL;
    int rc = ac_cache_open(f->m, dir, p, &c);
    if (rc) fprintf(stderr, "ac_cache_open(%s): %s\n", dir, ac_last_error());
    assert_int_equal(rc, AC_OK);
    assert_non_null(c);
    return c;
}

/* Build a cache at dir with the given codec from n sequences (added through
 * the exact context), commit, reindex, close. */
static void build_cache(fx *f, const char *dir, const char *codec, const ac_seq *seqs, int n) {
    ac_cache_params p = ac_cache_default_params();
    p.writable = 1;
    p.create = 1;
    p.codec = codec;
    ac_cache *c = open_cache(f, dir, &p);
    for (int i = 0; i < n; i++) {
        int added = -1;
        int rc = ac_cache_add(c, f->exact, seqs[i].tokens, seqs[i].n_tokens, &added);
        if (rc) fprintf(stderr, "ac_cache_add: %s\n", ac_last_error());
        assert_int_equal(rc, AC_OK);
        assert_int_equal(added, 1);
    }
    /* the same tokens again: already stored */
    int added = -1;
    int rc = ac_cache_add(c, f->exact, seqs[0].tokens, seqs[0].n_tokens, &added);
    if (rc) fprintf(stderr, "ac_cache_add again: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    assert_int_equal(added, 0);
    assert_int_equal(ac_cache_commit(c), AC_OK);
    assert_int_equal(ac_cache_reindex(c), AC_OK);
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.entries, n);
    assert_int_equal(ac_cache_close(c), AC_OK);
}

/* A reader of dir attached to f->cctx. */
static ac_cache *open_reader(fx *f, const char *dir, float threshold, const char *layers, int allow_longer) {
    ac_cache_params p = ac_cache_default_params();
    p.threshold = threshold;
    if (layers) p.layers = layers;
    p.allow_longer = allow_longer;
    ac_cache *c = open_cache(f, dir, &p);
    assert_int_equal(ac_ctx_attach_cache(f->cctx, c), AC_OK);
    return c;
}

static void close_reader(fx *f, ac_cache *c) {
    assert_int_equal(ac_ctx_attach_cache(f->cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
}

/* Outputs of one forward call: hidden [T][D], pooled [n][D], logits [n][V] (decoders). */
typedef struct outs {
    float *hidden, *pooled, *logits;
    int T, n;
} outs;

static void outs_free(outs *o) {
    free(o->hidden);
    free(o->pooled);
    free(o->logits);
    memset(o, 0, sizeof *o);
}

static outs run(fx *f, ac_ctx *ctx, const ac_seq *seqs, int n) {
    outs o = {0};
    o.n = n;
    for (int i = 0; i < n; i++) o.T += seqs[i].n_tokens;
    o.hidden = malloc((size_t)o.T * f->D * sizeof(float));
    o.pooled = malloc((size_t)n * f->D * sizeof(float));
    o.logits = f->causal ? malloc((size_t)n * f->V * sizeof(float)) : NULL;
    ac_outputs out = {o.hidden, o.pooled, o.logits, NULL, AC_POOL_MEAN, 0};
    int rc = ac_forward(ctx, seqs, n, &out);
    if (rc) fprintf(stderr, "ac_forward: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return o;
}

/* worst relative error over hidden, pooled and logits */
static double outs_err(const fx *f, const outs *a, const outs *b) {
    assert_int_equal(a->T, b->T);
    double e = rel_err(a->hidden, b->hidden, (size_t)a->T * f->D);
    e = fmax(e, rel_err(a->pooled, b->pooled, (size_t)a->n * f->D));
    if (a->logits) e = fmax(e, rel_err(a->logits, b->logits, (size_t)a->n * f->V));
    return e;
}

static int outs_bitwise(const fx *f, const outs *a, const outs *b) {
    if (a->T != b->T) return 0;
    if (memcmp(a->hidden, b->hidden, (size_t)a->T * f->D * sizeof(float))) return 0;
    if (memcmp(a->pooled, b->pooled, (size_t)a->n * f->D * sizeof(float))) return 0;
    if (a->logits && memcmp(a->logits, b->logits, (size_t)a->n * f->V * sizeof(float))) return 0;
    return 1;
}

static ac_cache_stats stats_of(const ac_cache *c) {
    ac_cache_stats s;
    assert_int_equal(ac_cache_get_stats(c, &s), AC_OK);
    return s;
}

/* Random sequences of the given lengths (ids in one buffer, caller frees *ids). */
static void make_seqs(const fx *f, const int *lens, int n, uint64_t seed, ac_seq *seqs, int32_t **ids) {
    int T = 0;
    for (int i = 0; i < n; i++) T += lens[i];
    *ids = malloc((size_t)T * sizeof **ids);
    ref_random_tokens(&seed, *ids, T, f->V);
    for (int i = 0, o = 0; i < n; o += lens[i], i++) {
        seqs[i].tokens = *ids + o;
        seqs[i].n_tokens = lens[i];
    }
}

/* Query one sequence through the cache context (stats reset first) and
 * compare it with the exact forward. Returns the relative error; *st the stats. */
static double query_one(fx *f, ac_cache *c, const ac_seq *s, ac_cache_stats *st, int *bitwise) {
    ac_cache_reset_stats(c);
    outs e = run(f, f->exact, s, 1), q = run(f, f->cctx, s, 1);
    *st = stats_of(c);
    double err = outs_err(f, &q, &e);
    if (bitwise) *bitwise = outs_bitwise(f, &q, &e);
    assert_true(all_finite(q.hidden, (size_t)q.T * f->D));
    outs_free(&e);
    outs_free(&q);
    return err;
}

#define TINY 1e-5f /* threshold that admits an identical sequence (key distance 0 up to rounding) only */

/* ---- 1. exactness ------------------------------------------------------------------------------------ */

static void exactness(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {9, 17, 24, 31};
    ac_seq seqs[4];
    int32_t *ids;
    make_seqs(&f, lens, 4, 11, seqs, &ids);
    char dir[160], codec[32];

    /* f32 maps: served layers give the exact result */
    cache_dir(&f, "f32", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "f32", codec, sizeof codec), seqs, 4);
    ac_cache *c = open_reader(&f, dir, TINY, NULL, 0);
    ac_cache_stats st;
    assert_int_equal(stats_of(c).entries, 4);
    for (int i = 0; i < 4; i++) {
        int bw;
        double err = query_one(&f, c, &seqs[i], &st, &bw);
        if (!(err <= 1e-5)) fprintf(stderr, "f32 seq %d (L=%d): rel err %.3g\n", i, lens[i], err);
        assert_true(err <= 1e-5);
        assert_int_equal(st.queries, 1);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.layers_served, f.NL);
        assert_true(st.bytes_read > 0);
        assert_true(st.sum_distance_hit <= TINY);
    }
    close_reader(&f, c);

    /* q8 maps: a small, nonzero error */
    cache_dir(&f, "q8", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "q8", codec, sizeof codec), seqs, 4);
    c = open_reader(&f, dir, TINY, NULL, 0);
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        int bw;
        double err = query_one(&f, c, &seqs[i], &st, &bw);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.layers_served, f.NL);
        assert_false(bw);
        assert_true(err > 0);
        worst = fmax(worst, err);
    }
    fprintf(stderr, "%s: q8 maps, worst relative error %.3g\n", arch == AC_ARCH_BERT ? "bert" : "llama", worst);
    assert_true(worst <= 2e-2);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

static void test_exactness_llama(void **st) { (void)st, exactness(AC_ARCH_LLAMA); }
static void test_exactness_bert(void **st) { (void)st, exactness(AC_ARCH_BERT); }

/* ---- 2. layer policy ------------------------------------------------------------------------------------- */

static void layer_policy(int arch) {
    fx f;
    fx_open(&f, arch);
    assert_true(f.NL >= 2);
    const int lens[] = {12, 20};
    ac_seq seqs[2];
    int32_t *ids;
    make_seqs(&f, lens, 2, 21, seqs, &ids);
    char dir[160], codec[32];
    cache_dir(&f, "c", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "f32", codec, sizeof codec), seqs, 2);
    ac_cache *c = open_reader(&f, dir, TINY, NULL, 0);
    uint8_t *mask = calloc((size_t)f.NL, 1), *got = calloc((size_t)f.NL, 1);
    ac_cache_stats st;
    int bw;

    /* default "all" */
    assert_int_equal(ac_cache_get_layers(c, got), AC_OK);
    for (int l = 0; l < f.NL; l++) assert_int_equal(got[l], 1);

    /* some layers: only those are served, still exact (f32) */
    for (int l = 0; l < f.NL; l++) mask[l] = l % 2 == 1;
    int want = f.NL / 2;
    assert_int_equal(ac_cache_set_layers(c, mask), AC_OK);
    assert_int_equal(ac_cache_get_layers(c, got), AC_OK);
    assert_memory_equal(got, mask, (size_t)f.NL);
    double err = query_one(&f, c, &seqs[1], &st, &bw);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.layers_served, want);
    assert_true(err <= 1e-5);

    /* the policy file round trip: save, reopen with layers = "policy" */
    assert_int_equal(ac_cache_save_policy(c), AC_OK);
    close_reader(&f, c);
    c = open_reader(&f, dir, TINY, "policy", 0);
    assert_int_equal(ac_cache_get_layers(c, got), AC_OK);
    assert_memory_equal(got, mask, (size_t)f.NL);
    err = query_one(&f, c, &seqs[0], &st, &bw);
    assert_int_equal(st.layers_served, want);
    assert_true(err <= 1e-5);
    close_reader(&f, c);

    /* a list on open */
    c = open_reader(&f, dir, TINY, "0", 0);
    err = query_one(&f, c, &seqs[0], &st, &bw);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.layers_served, 1);
    assert_true(err <= 1e-5);

    /* none: a hit serves nothing, the output is the exact one bit for bit */
    memset(mask, 0, (size_t)f.NL);
    assert_int_equal(ac_cache_set_layers(c, mask), AC_OK);
    err = query_one(&f, c, &seqs[0], &st, &bw);
    assert_int_equal(st.layers_served, 0);
    assert_true(bw);
    close_reader(&f, c);
    c = open_reader(&f, dir, TINY, "none", 0);
    err = query_one(&f, c, &seqs[1], &st, &bw);
    assert_int_equal(st.layers_served, 0);
    assert_true(bw);
    close_reader(&f, c);

    /* bad layer lists are refused */
    ac_cache_params p = ac_cache_default_params();
    ac_cache *bad = NULL;
    const char *specs[] = {"7", "x", "0-", "1-0", "0,,1"};
    char big[16];
    snprintf(big, sizeof big, "%d", f.NL);
    specs[0] = big;
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        p.layers = specs[i];
        assert_int_equal(ac_cache_open(f.m, dir, &p, &bad), AC_ERR_ARG);
        assert_null(bad);
    }
    free(mask);
    free(got);
    free(ids);
    fx_close(&f);
}

static void test_layers_llama(void **st) { (void)st, layer_policy(AC_ARCH_LLAMA); }
static void test_layers_bert(void **st) { (void)st, layer_policy(AC_ARCH_BERT); }

/* ---- 3. misses ------------------------------------------------------------------------------------------------ */

static void misses(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {14, 22, 14, 22};
    ac_seq seqs[4];
    int32_t *ids;
    make_seqs(&f, lens, 4, 31, seqs, &ids); /* 0, 1 stored; 2, 3 new (same lengths) */
    char dir[160], codec[32];
    cache_dir(&f, "c", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "f32", codec, sizeof codec), seqs, 2);
    ac_cache_stats st;
    int bw;

    /* threshold < 0: never a hit, not even looked up; bitwise exact */
    ac_cache *c = open_reader(&f, dir, -1.0f, NULL, 0);
    for (int i = 0; i < 4; i++) {
        query_one(&f, c, &seqs[i], &st, &bw);
        assert_int_equal(st.hits, 0);
        assert_int_equal(st.layers_served, 0);
        assert_true(bw);
    }
    /* set_threshold turns lookups on */
    assert_int_equal(ac_cache_set_threshold(c, TINY), AC_OK);
    query_one(&f, c, &seqs[0], &st, &bw);
    assert_int_equal(st.hits, 1);
    assert_int_equal(ac_cache_set_threshold(c, NAN), AC_ERR_ARG);
    close_reader(&f, c);

    /* different sequences of the stored lengths: looked up, missed, bitwise exact */
    for (int k = 0; k < 2; k++) {
        c = open_reader(&f, dir, k ? 0.0f : TINY, NULL, 0);
        for (int i = 2; i < 4; i++) {
            query_one(&f, c, &seqs[i], &st, &bw);
            assert_int_equal(st.queries, 1);
            assert_int_equal(st.hits, 0);
            assert_int_equal(st.layers_served, 0);
            assert_true(bw);
        }
        close_reader(&f, c);
    }

    /* an empty cache: every lookup misses */
    cache_dir(&f, "empty", dir, sizeof dir);
    ac_cache_params p = ac_cache_default_params();
    p.writable = p.create = 1;
    ac_cache *w = open_cache(&f, dir, &p);
    assert_int_equal(stats_of(w).entries, 0);
    assert_int_equal(ac_cache_close(w), AC_OK);
    c = open_reader(&f, dir, 2.0f, NULL, 1);
    query_one(&f, c, &seqs[0], &st, &bw);
    assert_int_equal(st.hits, 0);
    assert_true(bw);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

static void test_misses_llama(void **st) { (void)st, misses(AC_ARCH_LLAMA); }
static void test_misses_bert(void **st) { (void)st, misses(AC_ARCH_BERT); }

/* ---- 4. length rules ---------------------------------------------------------------------------------------------- */

/* Causal: a prefix of a stored longer entry is served from its top-left block,
 * which is the prefix's own map: exact. */
static void test_lengths_causal(void **state) {
    (void)state;
    fx f;
    fx_open(&f, AC_ARCH_LLAMA);
    const int lens[] = {40, 10, 12};
    ac_seq seqs[3];
    int32_t *ids;
    make_seqs(&f, lens, 3, 41, seqs, &ids);
    char dir[160];
    cache_dir(&f, "c", dir, sizeof dir);
    build_cache(&f, dir, "f32-causal", seqs, 3);
    ac_cache *c = open_reader(&f, dir, 2.0f, NULL, 0); /* cosine distance <= 2: any entry that fits */
    ac_cache_stats st;
    int bw;
    const int plens[] = {25, 13, 39};
    for (int k = 0; k < 3; k++) {
        ac_seq prefix = {seqs[0].tokens, plens[k]}; /* longer than the short entries: only the 40 fits */
        double err = query_one(&f, c, &prefix, &st, &bw);
        if (!(err <= 1e-5)) fprintf(stderr, "prefix L=%d of the 40-token entry: rel err %.3g\n", plens[k], err);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.layers_served, f.NL);
        assert_true(err <= 1e-5);
    }
    /* longer than every entry: nothing may serve it */
    int32_t *longer = malloc(50 * sizeof *longer);
    memcpy(longer, seqs[0].tokens, 40 * sizeof *longer);
    for (int i = 40; i < 50; i++) longer[i] = (int32_t)(i % f.V);
    ac_seq q = {longer, 50};
    query_one(&f, c, &q, &st, &bw);
    assert_int_equal(st.hits, 0);
    assert_true(bw);
    free(longer);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

/* Bidirectional: a longer entry serves only with allow_longer; a shorter one never. */
static void test_lengths_bidirectional(void **state) {
    (void)state;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    const int lens[] = {40, 10, 25};
    ac_seq seqs[3];
    int32_t *ids;
    make_seqs(&f, lens, 3, 51, seqs, &ids);
    char dlong[160], dshort[160];
    cache_dir(&f, "long", dlong, sizeof dlong);
    cache_dir(&f, "short", dshort, sizeof dshort);
    build_cache(&f, dlong, "f32", &seqs[0], 1);  /* one entry of 40 tokens */
    build_cache(&f, dshort, "f32", &seqs[1], 1); /* one entry of 10 tokens */
    ac_cache_stats st;
    int bw;
    ac_seq prefix = {seqs[0].tokens, 25}, other = seqs[2];

    /* causal-only codecs are refused for a bidirectional model */
    ac_cache_params p = ac_cache_default_params();
    p.writable = p.create = 1;
    p.codec = "f32-causal";
    ac_cache *bad = NULL;
    assert_int_equal(ac_cache_open(f.m, dlong, &p, &bad), AC_ERR_ARG);
    assert_null(bad);

    /* default: the longer entry does not serve (the bidirectional block is not the query's map) */
    ac_cache *c = open_reader(&f, dlong, 2.0f, NULL, 0);
    for (int k = 0; k < 2; k++) {
        query_one(&f, c, k ? &other : &prefix, &st, &bw);
        assert_int_equal(st.queries, 1);
        assert_int_equal(st.hits, 0);
        assert_true(bw);
    }
    close_reader(&f, c);

    /* allow_longer: served through the renormalised top-left block */
    c = open_reader(&f, dlong, 2.0f, NULL, 1);
    for (int k = 0; k < 2; k++) {
        double err = query_one(&f, c, k ? &other : &prefix, &st, &bw);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.layers_served, f.NL);
        assert_true(isfinite(err));
        assert_false(bw);
    }
    close_reader(&f, c);

    /* a shorter entry never serves, allow_longer or not */
    for (int al = 0; al < 2; al++) {
        c = open_reader(&f, dshort, 2.0f, NULL, al);
        query_one(&f, c, &other, &st, &bw);
        assert_int_equal(st.queries, 1);
        assert_int_equal(st.hits, 0);
        assert_true(bw);
        close_reader(&f, c);
    }
    free(ids);
    fx_close(&f);
}

/* ---- 5. batches mixing hits and misses --------------------------------------------------------------------------- */

static void mixed_batch(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {18, 27, 23};
    ac_seq seqs[3];
    int32_t *ids;
    make_seqs(&f, lens, 3, 61, seqs, &ids); /* 0, 1 stored, 2 new */
    char dir[160], codec[32];
    cache_dir(&f, "c", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "f32", codec, sizeof codec), seqs, 2);
    ac_cache *c = open_reader(&f, dir, TINY, NULL, 0);
    ac_seq batch[4] = {seqs[0], seqs[2], seqs[1], seqs[0]};
    ac_cache_reset_stats(c);
    outs b = run(&f, f.cctx, batch, 4);
    ac_cache_stats st = stats_of(c);
    assert_int_equal(st.queries, 4);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.layers_served, 3 * f.NL);
    outs be = run(&f, f.exact, batch, 4);
    assert_true(outs_err(&f, &b, &be) <= 1e-5);
    /* each sequence: the batch rows equal the one-at-a-time cached result and the exact one */
    for (int i = 0, off = 0; i < 4; off += batch[i].n_tokens, i++) {
        outs one = run(&f, f.cctx, &batch[i], 1), ex = run(&f, f.exact, &batch[i], 1);
        const size_t n = (size_t)batch[i].n_tokens * f.D;
        double e1 = rel_err(b.hidden + (size_t)off * f.D, one.hidden, n);
        double e2 = rel_err(b.hidden + (size_t)off * f.D, ex.hidden, n);
        double e3 = rel_err(b.pooled + (size_t)i * f.D, one.pooled, (size_t)f.D);
        double e4 = f.causal ? rel_err(b.logits + (size_t)i * f.V, one.logits, (size_t)f.V) : 0;
        if (!(fmax(fmax(e1, e2), fmax(e3, e4)) <= 1e-5))
            fprintf(stderr, "batch seq %d: vs one-at-a-time %.3g (pooled %.3g logits %.3g), vs exact %.3g\n", i, e1, e3,
                    e4, e2);
        assert_true(e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5 && e4 <= 1e-5);
        outs_free(&one);
        outs_free(&ex);
    }
    outs_free(&b);
    outs_free(&be);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

static void test_batch_llama(void **st) { (void)st, mixed_batch(AC_ARCH_LLAMA); }
static void test_batch_bert(void **st) { (void)st, mixed_batch(AC_ARCH_BERT); }

/* ---- 5b. the GPU seam: the hook's `maps` hands out the rows `apply` reads ----------------------------------------- */
/* A backend that runs A.V itself (src/backends/cuda) asks a served site's stored rows through the
 * hook's `maps`; here, on the CPU, the rows it hands out multiplied by a V give what the hook's own
 * `apply` gives, for every layer of a batch's hits, with the codec and head stride of the store;
 * a sequence that missed is refused (no rows to hand out). */
static void maps_seam(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {18, 27, 23};
    ac_seq seqs[3];
    int32_t *ids;
    make_seqs(&f, lens, 3, 67, seqs, &ids); /* 0, 1 stored, 2 new */
    char dir[160], codec[32];
    cache_dir(&f, "m", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "q8", codec, sizeof codec), seqs, 2);
    ac_cache *c = open_reader(&f, dir, TINY, NULL, 0);
    ac_seq batch[3] = {seqs[0], seqs[2], seqs[1]}; /* hit, miss, hit */
    outs b = run(&f, f.cctx, batch, 3);
    outs_free(&b);
    ac_attn_hook h;
    assert_true(ac_ctx_get_attn_hook(f.cctx, &h));
    assert_non_null(h.maps);
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f.m, &in), AC_OK);
    const int H = in.n_head, Hkv = in.n_head_kv, hd = in.head_dim, QD = H * hd, KVD = Hkv * hd;
    uint64_t ident[3][2] = {{0}};
    for (int s = 0; s < 3; s++) {
        const int L = batch[s].n_tokens;
        float *v = malloc((size_t)L * KVD * sizeof *v), *o1 = calloc((size_t)L * QD, sizeof *o1),
              *o2 = calloc((size_t)L * QD, sizeof *o2);
        assert_true(v && o1 && o2);
        for (int i = 0; i < L * KVD; i++) v[i] = sinf(0.37f * (float)i + (float)s);
        for (int l = 0; l < f.NL; l++) {
            ac_attn_site site = {.layer = l, .seq = s, .tokens = batch[s].tokens, .n_tokens = L, .n_head = H,
                                 .causal = f.causal, .x = NULL, .first = 0, .summary = NULL, .exact_from = -1, .heads = NULL};
            ac_attn_maps m;
            memset(&m, 0, sizeof m);
            const int rc = h.maps(h.user, &site, &m);
            if (s == 1) { /* the miss */
                assert_int_equal(rc, AC_ERR_INTERNAL);
                continue;
            }
            assert_int_equal(rc, AC_OK);
            const ac_map_codec mc = {m.kind, m.causal, m.topk};
            assert_int_equal(m.n_tokens, L);
            assert_true(m.data != NULL && m.head_bytes == ac_codec_map_bytes(&mc, L));
            assert_int_equal(mc.kind, AC_CODEC_Q8);
            assert_int_equal(mc.causal, f.causal);
            /* the bytes' identity (the GPU's device map cache keys on it): set, the same on every layer */
            assert_true(m.ident[0] || m.ident[1]);
            if (l == 0) memcpy(ident[s], m.ident, sizeof m.ident);
            assert_true(m.ident[0] == ident[s][0] && m.ident[1] == ident[s][1]);
            assert_int_equal(h.apply(h.user, &site, L, v, KVD, Hkv, hd, o1, QD), AC_OK);
            for (int hh = 0; hh < H; hh++)
                ac_codec_av(&mc, (const uint8_t *)m.data + (size_t)hh * m.head_bytes, L, v + (size_t)(hh / (H / Hkv)) * hd,
                            KVD, hd, o2 + (size_t)hh * hd, QD);
            const double e = rel_err(o2, o1, (size_t)L * QD);
            if (!(e <= 1e-5)) fprintf(stderr, "maps seam: layer %d sequence %d: %.3g\n", l, s, e);
            assert_true(e <= 1e-5);
        }
        free(v), free(o1), free(o2);
    }
    assert_true(ident[0][0] != ident[2][0] || ident[0][1] != ident[2][1]); /* two entries, two identities */
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

static void test_maps_seam_llama(void **st) { (void)st, maps_seam(AC_ARCH_LLAMA); }
static void test_maps_seam_bert(void **st) { (void)st, maps_seam(AC_ARCH_BERT); }

/* ---- 5c. the GPU seam: a layer-0 summary given instead of the states ----------------------------------------------- */
/* The cuda backend keeps the layer-0 states on the device and hands the cache their segment means
 * (ac_attn_site.summary, x NULL). Here, on the CPU: the means of ac_model_layer0_states given at
 * layer 0 make the lookups find what the CPU forward's own states found (same hits, same entries),
 * are counted in features_given, and are what the lookup keys on: another sequence's summary
 * changes the result. */
static void host_summary(const fx *f, const ac_seq *q, float *sum) {
    const int L = q->n_tokens, S = AC_ATTN_SUMMARY_SEGMENTS, D = f->D;
    float *x0 = malloc((size_t)L * D * sizeof *x0);
    assert_non_null(x0);
    assert_int_equal(ac_model_layer0_states(f->m, q->tokens, L, x0), AC_OK);
    for (int k = 0; k < S; k++) {
        int a = (int)((int64_t)k * L / S), b = (int)((int64_t)(k + 1) * L / S);
        if (b <= a) a = 0, b = L;
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int t = a; t < b; t++) acc += x0[(size_t)t * D + d];
            sum[(size_t)k * D + d] = (float)(acc / (b - a));
        }
    }
    free(x0);
}

static void summary_seam(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {18, 27, 23, 2};
    ac_seq seqs[4];
    int32_t *ids;
    make_seqs(&f, lens, 4, 73, seqs, &ids); /* 0, 1, 3 stored, 2 new; 3 shorter than S (empty segments) */
    char dir[160], codec[32];
    cache_dir(&f, "s", dir, sizeof dir);
    ac_seq stored[3] = {seqs[0], seqs[1], seqs[3]};
    build_cache(&f, dir, codec_for(&f, "q8", codec, sizeof codec), stored, 3);
    ac_cache *c = open_reader(&f, dir, TINY, NULL, 0);
    ac_seq batch[4] = {seqs[0], seqs[2], seqs[1], seqs[3]}; /* hit, miss, hit, hit */
    ac_cache_reset_stats(c);
    outs b = run(&f, f.cctx, batch, 4); /* the CPU forward: its own states (x) */
    outs_free(&b);
    uint8_t hit_x[4], hit_s[4];
    uint64_t key_x[4], key_s[4];
    assert_int_equal(ac_cache_last_hits(f.cctx, 4, hit_x, key_x), AC_OK);
    ac_cache_stats st = stats_of(c);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.features_given, 0);
    ac_attn_hook h;
    assert_true(ac_ctx_get_attn_hook(f.cctx, &h));
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f.m, &in), AC_OK);
    float *sum = malloc((size_t)4 * AC_ATTN_SUMMARY_SEGMENTS * f.D * sizeof *sum);
    assert_non_null(sum);
    const size_t SD = (size_t)AC_ATTN_SUMMARY_SEGMENTS * f.D;
    for (int s = 0; s < 4; s++) host_summary(&f, &batch[s], sum + s * SD);
    ac_cache_reset_stats(c);
    for (int s = 0; s < 4; s++) { /* layer 0 as the cuda backend asks it: x NULL, the summary given */
        ac_attn_site site = {.layer = 0, .seq = s, .tokens = batch[s].tokens, .n_tokens = batch[s].n_tokens, .n_head = in.n_head,
                             .causal = f.causal, .x = NULL, .first = 0, .summary = sum + s * SD, .exact_from = -1, .heads = NULL};
        const int r = h.reuse(h.user, &site);
        assert_int_equal(r > 0, hit_x[s]);
    }
    assert_int_equal(ac_cache_last_hits(f.cctx, 4, hit_s, key_s), AC_OK);
    st = stats_of(c);
    assert_int_equal(st.queries, 4);
    assert_int_equal(st.features_given, 4);
    assert_int_equal(st.hits, 3);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(hit_s[s], hit_x[s]);
        assert_true(key_s[s] == key_x[s]);
    }
    /* lookup_all (the cuda backend: every sequence's layer-0 lookup at once, on OpenMP threads): the same
       hits and entries, each sequence looked up once, layer 0's reuse answered from the batch */
    assert_non_null(h.lookup_all);
    ac_attn_site all[4];
    for (int s = 0; s < 4; s++)
        all[s] = (ac_attn_site){0, s, batch[s].tokens, batch[s].n_tokens, in.n_head, f.causal, NULL, 0, sum + s * SD, -1, NULL};
    for (int rep = 0; rep < 2; rep++) {
        ac_cache_reset_stats(c);
        assert_int_equal(h.lookup_all(h.user, all, 4), AC_OK);
        st = stats_of(c);
        assert_int_equal(st.queries, 4);
        for (int s = 0; s < 4; s++) assert_int_equal(h.reuse(h.user, &all[s]) > 0, hit_x[s]);
        for (int l = 1; l < f.NL; l++) /* later layers: the batch's hits served */
            for (int s = 0; s < 4; s++) {
                ac_attn_site site = all[s];
                site.layer = l, site.summary = NULL;
                assert_int_equal(h.reuse(h.user, &site) > 0, hit_x[s]);
            }
        st = stats_of(c);
        assert_int_equal(st.queries, 4); /* not looked up again by reuse */
        assert_int_equal(st.hits, 3);
        assert_int_equal(st.features_given, 4);
        assert_int_equal(st.layers_served, 3 * f.NL);
        assert_int_equal(ac_cache_last_hits(f.cctx, 4, hit_s, key_s), AC_OK);
        for (int s = 0; s < 4; s++) {
            assert_int_equal(hit_s[s], hit_x[s]);
            assert_true(key_s[s] == key_x[s]);
        }
    }
    /* a batch result is taken once, and only for its own tokens: another input at that slot is looked up */
    assert_int_equal(h.lookup_all(h.user, all, 4), AC_OK);
    ac_cache_reset_stats(c);
    ac_attn_site other = all[1];
    other.tokens = batch[0].tokens, other.n_tokens = batch[0].n_tokens, other.summary = sum;
    assert_int_equal(h.reuse(h.user, &other) > 0, 1); /* sequence 0's input at slot 1: its own lookup, a hit */
    assert_int_equal(h.reuse(h.user, &all[0]) > 0, 1);
    assert_int_equal(h.reuse(h.user, &all[0]) > 0, 1); /* taken: looked up again */
    st = stats_of(c);
    assert_int_equal(st.queries, 2);
    /* sequence 0 asked with sequence 1's summary: the lookup follows the summary, not the tokens */
    ac_attn_site wrong = {.layer = 0, .seq = 0, .tokens = batch[0].tokens, .n_tokens = batch[0].n_tokens, .n_head = in.n_head,
                        .causal = f.causal, .x = NULL, .first = 0, .summary = sum + 2 * SD, .exact_from = -1, .heads = NULL};
    h.reuse(h.user, &wrong);
    assert_int_equal(ac_cache_last_hits(f.cctx, 1, hit_s, key_s), AC_OK);
    assert_true(!hit_s[0] || key_s[0] != key_x[0]);
    free(sum);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

static void test_summary_seam_llama(void **st) { (void)st, summary_seam(AC_ARCH_LLAMA); }
static void test_summary_seam_bert(void **st) { (void)st, summary_seam(AC_ARCH_BERT); }

/* ---- 5d. lookup_all as one batch: the per-query path's results, admission and counters ----------------------------- */
/* hook_lookup_all looks a call's sequences up together (all keys in one call, one index search of n
 * queries, then the candidates). Against the per-query path (layer 0's reuse, site by site, in order),
 * on two caches opened alike on one directory: the same hit and entry per site, and the same counters,
 * with the adaptive admission turning lookups off and on inside a batch (window 4, floor 0.5: runs of
 * misses start skipping, a probe that hits turns lookups back on), over two batches in a row (the state
 * carried over), and with injected failures. Keys: random (the default here) and mean. */
enum { NB = 40 };

typedef struct batch_run {
    uint8_t hit[NB];
    uint64_t key[NB];
    ac_cache_stats st;
} batch_run;

static void batch_lookups(fx *f, const char *dir, const ac_cache_params *p, const ac_attn_site *all, int batched,
                          int fails, batch_run out[2]) {
    ac_cache *c = open_cache(f, dir, p);
    assert_int_equal(ac_ctx_attach_cache(f->cctx, c), AC_OK);
    ac_attn_hook h;
    assert_true(ac_ctx_get_attn_hook(f->cctx, &h));
    for (int rep = 0; rep < 2; rep++) {
        ac_cache_reset_stats(c);
        ac_cache_fail_next_lookups(c, fails);
        if (batched) assert_int_equal(h.lookup_all(h.user, all, NB), AC_OK);
        for (int s = 0; s < NB; s++) h.reuse(h.user, &all[s]); /* batched: takes the batch's result */
        assert_int_equal(ac_cache_last_hits(f->cctx, NB, out[rep].hit, out[rep].key), AC_OK);
        out[rep].st = stats_of(c);
    }
    close_reader(f, c);
}

static void lookup_all_batch(int arch) {
    fx f;
    fx_open(&f, arch);
    int lens[8];
    for (int i = 0; i < 8; i++) lens[i] = 6 + 5 * i;
    ac_seq seqs[8];
    int32_t *ids;
    make_seqs(&f, lens, 8, 91, seqs, &ids); /* 0-3 stored, 4-7 new */
    char dir[160], codec[32];
    cache_dir(&f, "b", dir, sizeof dir);
    build_cache(&f, dir, codec_for(&f, "q8", codec, sizeof codec), seqs, 4);
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f.m, &in), AC_OK);
    const size_t SD = (size_t)AC_ATTN_SUMMARY_SEGMENTS * f.D;
    float *sum = malloc(8 * SD * sizeof *sum);
    assert_non_null(sum);
    for (int s = 0; s < 8; s++) host_summary(&f, &seqs[s], sum + s * SD);
    /* misses, then hits (a probe hits: lookups back on inside the batch), misses, a mix */
    static const char pat[NB + 1] = "MMMMMMMMMHHHHHHHHHHHHMMMMMMMMMMMMHMHHMHM";
    ac_attn_site all[NB];
    for (int s = 0, nh = 0, nm = 0; s < NB; s++) {
        const int q = pat[s] == 'H' ? nh++ % 4 : 4 + nm++ % 4;
        all[s] = (ac_attn_site){0, s, seqs[q].tokens, seqs[q].n_tokens, in.n_head, f.causal, NULL, 0, sum + q * SD, -1, NULL};
    }
    const int keys[2] = {AC_KEY_RANDOM, AC_KEY_MEAN};
    for (int ki = 0; ki < 2; ki++)
        for (int fails = 0; fails <= 3; fails += 3) {
            batch_run one[2], bat[2];
            ac_cache_params p = ac_cache_default_params();
            p.threshold = TINY, p.key = keys[ki];
            p.adapt_floor = 0.5f, p.adapt_window = 4, p.adapt_probe_max = 8;
            batch_lookups(&f, dir, &p, all, 0, fails, one);
            batch_lookups(&f, dir, &p, all, 1, fails, bat);
            for (int rep = 0; rep < 2; rep++) {
                const ac_cache_stats *a = &one[rep].st, *b = &bat[rep].st;
                if (rep == 0 && fails == 0)
                    printf("  lookup_all batch (key %d): %lld queries, %lld hits, %lld skipped, %lld probes\n",
                           keys[ki], (long long)a->queries, (long long)a->hits, (long long)a->lookups_skipped,
                           (long long)a->probes);
                assert_true(a->lookups_skipped > 0 && a->probes > 0 && a->hits > 0); /* the admission at work */
                for (int s = 0; s < NB; s++) {
                    assert_int_equal(bat[rep].hit[s], one[rep].hit[s]);
                    assert_true(bat[rep].key[s] == one[rep].key[s]);
                }
                assert_int_equal(b->queries, a->queries);
                assert_int_equal(b->hits, a->hits);
                assert_int_equal(b->lookups_skipped, a->lookups_skipped);
                assert_int_equal(b->probes, a->probes);
                assert_int_equal(b->skipping, a->skipping);
                assert_int_equal(b->features_given, a->features_given);
                assert_int_equal(b->features_given, b->queries);
                assert_int_equal(b->lookups_failed, a->lookups_failed);
                assert_int_equal(b->lookups_failed, fails);
                assert_true(b->sum_distance_hit == a->sum_distance_hit || fabs(b->sum_distance_hit - a->sum_distance_hit) <= 1e-9);
            }
        }
    free(sum);
    free(ids);
    fx_close(&f);
}

static void test_lookup_all_batch_llama(void **st) { (void)st, lookup_all_batch(AC_ARCH_LLAMA); }
static void test_lookup_all_batch_bert(void **st) { (void)st, lookup_all_batch(AC_ARCH_BERT); }

/* ---- 5b. recording on threads ------------------------------------------------------------------------------------- */

/* A site's heads are encoded on threads when recording (rec_put): the stored bytes must not depend
 * on how many — each codec, one thread against four, entry by entry. */
static void record_threads(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {5, 23, 40};
    ac_seq seqs[3];
    int32_t *ids;
    make_seqs(&f, lens, 3, 29, seqs, &ids);
    const int nt0 = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        const char *base = k == 0 ? "topk4" : k == 1 ? "q8" : "f32";
        char dir[2][160], db[2][400], codec[32];
        for (int v = 0; v < 2; v++) {
            omp_set_num_threads(v == 0 ? 1 : 4);
            char name[32];
            snprintf(name, sizeof name, "thr%d_%s", v, base);
            cache_dir(&f, name, dir[v], sizeof dir[v]);
            build_cache(&f, dir[v], codec_for(&f, base, codec, sizeof codec), seqs, 3);
            snprintf(db[v], sizeof db[v], "%s/maps.acdb", dir[v]);
        }
        omp_set_num_threads(nt0);
        ac_store *s[2] = {NULL, NULL};
        for (int v = 0; v < 2; v++) assert_int_equal(ac_store_open(db[v], NULL, AC_STORE_READ, &s[v]), AC_OK);
        ac_store_params sp;
        ac_store_get_params(s[0], &sp);
        assert_true(sp.n_head > 1); /* more than one head a site: the threaded path runs */
        for (int64_t i = 0; i < 3; i++) {
            ac_store_entry e0, e1;
            assert_int_equal(ac_store_get(s[0], i, &e0), AC_OK);
            assert_int_equal(ac_store_get(s[1], i, &e1), AC_OK);
            assert_int_equal(e0.n_tokens, e1.n_tokens);
            assert_int_equal(e0.map_bytes, e1.map_bytes);
            const size_t n = e0.map_bytes * (size_t)sp.n_layer * sp.n_head;
            assert_memory_equal(e0.maps, e1.maps, n);
        }
        for (int v = 0; v < 2; v++) ac_store_close(s[v]);
    }
    free(ids);
    fx_close(&f);
}
/* A map that is not a probability (a model whose activations overflow: NaN attention) fails to record on
 * the threaded path as on the serial one: the store's message, naming layer 0 head 0 (the lowest head
 * that fails), and nothing committed. */
static void test_record_threads_bad_map(void **state) {
    (void)state;
    char root[64] = "/tmp/ac_cache_reuse_bad_XXXXXX", path[128], dir[160];
    assert_non_null(mkdtemp(root));
    snprintf(path, sizeof path, "%s/model.gguf", root);
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    s.wscale = 1e30f; /* activations overflow to inf: every attention row NaN */
    ac_model *m = load_model_spec(&s, path);
    ac_ctx *ctx = mkctx(m);
    snprintf(dir, sizeof dir, "%s/c", root);
    ac_cache_params p = ac_cache_default_params();
    p.writable = 1, p.create = 1, p.codec = "topk4-causal";
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(m, dir, &p, &c), AC_OK);
    const int nt0 = omp_get_max_threads();
    omp_set_num_threads(4);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = 1 + i;
    int added = -1;
    const int rc = ac_cache_add(c, ctx, ids, 12, &added);
    omp_set_num_threads(nt0);
    assert_int_not_equal(rc, AC_OK);
    assert_non_null(strstr(ac_last_error(), "not a probability"));
    assert_non_null(strstr(ac_last_error(), "layer 0 head 0"));
    assert_int_equal(ac_cache_commit(c), AC_OK);
    assert_int_equal(stats_of(c).entries, 0);
    assert_int_equal(ac_cache_close(c), AC_OK);
    ac_ctx_free(ctx);
    ac_model_free(m);
    rm_rf(root);
}
static void test_record_threads_llama(void **st) { (void)st, record_threads(AC_ARCH_LLAMA); }
static void test_record_threads_bert(void **st) { (void)st, record_threads(AC_ARCH_BERT); }

/* ---- 6. bad inputs -------------------------------------------------------------------------------------------------- */

/* file offset of the middle of entry i's maps (store.h: reader handle, any model) */
static uint64_t map_offset(const char *db, int64_t i, size_t *span) {
    ac_store *s = NULL;
    assert_int_equal(ac_store_open(db, NULL, AC_STORE_READ, &s), AC_OK);
    ac_store_params sp;
    ac_store_get_params(s, &sp);
    ac_store_entry e;
    assert_int_equal(ac_store_get(s, i, &e), AC_OK);
    /* maps follow the 64-byte record header, the 64-byte-padded feature and
     * (format 2) the 64-byte-padded token ids */
    const uint64_t feat = ((uint64_t)sp.feat_dim * 4 + 63) / 64 * 64;
    const uint64_t toks = sp.with_tokens ? ((uint64_t)e.n_tokens * 4 + 63) / 64 * 64 : 0;
    assert_int_equal(sp.with_tokens, 1);
    assert_ptr_equal((const uint8_t *)e.feature + feat, (const uint8_t *)e.tokens);
    assert_ptr_equal((const uint8_t *)e.feature + feat + toks, e.maps);
    const uint64_t off = e.offset + 64 + feat + toks;
    *span = e.map_bytes * (size_t)sp.n_layer * sp.n_head;
    ac_store_close(s);
    return off;
}

static void flip_bytes(const char *path, uint64_t off, int n) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    for (int k = 0; k < n; k++) {
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, (off_t)(off + k)), 1);
        b ^= 0x5a;
        assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + k)), 1);
    }
    close(fd);
}

static void bad_inputs(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[] = {11, 19, 26, 15};
    ac_seq seqs[4];
    int32_t *ids;
    make_seqs(&f, lens, 4, 71, seqs, &ids);
    char dir[160], codec[32], db[200];
    cache_dir(&f, "c", dir, sizeof dir);
    codec_for(&f, "f32", codec, sizeof codec);
    build_cache(&f, dir, codec, seqs, 3);
    snprintf(db, sizeof db, "%s/maps.acdb", dir);
    ac_cache_params p = ac_cache_default_params();
    ac_cache *c = NULL;
    ac_cache_stats st;
    int bw;

    /* another model (other weights, same shape) */
    {
        ref_spec s2 = ref_spec_default(arch);
        s2.seed = 999;
        char path2[160];
        snprintf(path2, sizeof path2, "%s/other.gguf", f.root);
        ac_model *m2 = load_model_spec(&s2, path2);
        for (int wr = 0; wr < 2; wr++) {
            p = ac_cache_default_params();
            p.writable = wr;
            int rc = ac_cache_open(m2, dir, &p, &c);
            fprintf(stderr, "other model (%s): %s\n", wr ? "writer" : "reader", ac_last_error());
            assert_int_equal(rc, AC_ERR_CACHE);
            assert_null(c);
            assert_non_null(strstr(ac_last_error(), "fingerprint"));
            assert_non_null(strstr(ac_last_error(), "model"));
            assert_non_null(strstr(ac_last_error(), dir));
        }
        /* a context of another model cannot take this model's cache */
        ac_ctx *c2 = mkctx(m2);
        c = open_reader(&f, dir, TINY, NULL, 0);
        assert_int_equal(ac_ctx_attach_cache(c2, c), AC_ERR_ARG);
        close_reader(&f, c);
        ac_ctx_free(c2);
        ac_model_free(m2);
    }
    /* a missing directory: clear errors, nothing created */
    {
        char missing[200];
        snprintf(missing, sizeof missing, "%s/no/such/dir", f.root);
        p = ac_cache_default_params();
        assert_int_equal(ac_cache_open(f.m, missing, &p, &c), AC_ERR_CACHE);
        fprintf(stderr, "missing dir: %s\n", ac_last_error());
        assert_non_null(strstr(ac_last_error(), missing));
        assert_null(c);
        p.writable = 1; /* a writer without create */
        assert_true(ac_cache_open(f.m, missing, &p, &c) < 0);
        assert_non_null(strstr(ac_last_error(), missing));
        p.create = 1; /* create makes one level only */
        assert_int_equal(ac_cache_open(f.m, missing, &p, &c), AC_ERR_IO);
        assert_null(c);
        assert_false(file_exists(missing));
        /* a directory without a database, opened read-only */
        char emptyd[200];
        snprintf(emptyd, sizeof emptyd, "%s/emptydir", f.root);
        assert_int_equal(mkdir(emptyd, 0755), 0);
        p = ac_cache_default_params();
        assert_true(ac_cache_open(f.m, emptyd, &p, &c) < 0);
        assert_null(c);
        assert_non_null(strstr(ac_last_error(), emptyd));
        /* NULL arguments */
        assert_int_equal(ac_cache_open(NULL, dir, &p, &c), AC_ERR_ARG);
        assert_int_equal(ac_cache_open(f.m, NULL, &p, &c), AC_ERR_ARG);
        assert_int_equal(ac_cache_close(NULL), AC_OK);
    }
    /* writes to a read-only cache */
    {
        p = ac_cache_default_params();
        c = open_cache(&f, dir, &p);
        int added = -1;
        assert_int_equal(ac_cache_add(c, f.exact, seqs[3].tokens, seqs[3].n_tokens, &added), AC_ERR_CACHE);
        assert_non_null(strstr(ac_last_error(), "read-only"));
        assert_int_equal(ac_cache_train_projector(c, NULL, NULL), AC_ERR_CACHE);
        assert_int_equal(stats_of(c).entries, 3);
        int64_t nbad = -1;
        assert_int_equal(ac_cache_verify(c, NULL, &nbad), AC_OK);
        assert_int_equal(nbad, 0);
        assert_int_equal(ac_cache_close(c), AC_OK);
        /* the exact context kept no hook: still exact after the refused add */
        outs a = run(&f, f.exact, &seqs[3], 1);
        outs_free(&a);
    }
    /* a damaged record payload: that entry is skipped (the query stays exact), the others serve */
    {
        size_t span;
        uint64_t off = map_offset(db, 1, &span);
        flip_bytes(db, off + span / 2, 8);
        int64_t nbad = -1;
        FILE *rep = tmpfile();
        assert_int_equal(ac_db_verify(dir, rep, &nbad), AC_ERR_CACHE);
        assert_int_equal(nbad, 1);
        fclose(rep);
        for (int key = AC_KEY_MEAN; key <= AC_KEY_RANDOM; key++) { /* saved index, and one rebuilt at open */
            p = ac_cache_default_params();
            p.threshold = key == AC_KEY_MEAN ? TINY : 1e-4f;
            p.key = key;
            int rc = ac_cache_open(f.m, dir, &p, &c);
            if (rc) fprintf(stderr, "open damaged (key %d): %s\n", key, ac_last_error());
            assert_int_equal(rc, AC_OK);
            assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
            query_one(&f, c, &seqs[1], &st, &bw);
            assert_int_equal(st.queries, 1);
            assert_int_equal(st.hits, 0);
            assert_true(bw);
            /* not silent: the damaged record is counted, skipped at lookup (the saved random index
             * still lists it) or left out of the index (the mean index is built at open) */
            fprintf(stderr, "damaged record, key %d: %lld skipped at lookup, %lld left out of the index\n", key,
                    (long long)st.records_damaged, (long long)st.damaged_unindexed);
            assert_int_equal(st.records_damaged, key == AC_KEY_RANDOM ? 1 : 0);
            assert_int_equal(st.records_damaged + st.damaged_unindexed, 1);
            assert_int_equal(st.lookups_failed, 0);
            for (int i = 0; i < 3; i += 2) {
                double err = query_one(&f, c, &seqs[i], &st, &bw);
                assert_int_equal(st.hits, 1);
                assert_true(err <= 1e-5);
            }
            nbad = -1;
            assert_int_equal(ac_cache_verify(c, NULL, &nbad), AC_ERR_CACHE);
            assert_int_equal(nbad, 1);
            close_reader(&f, c);
        }
    }
    /* a truncated database: opens read-only with the intact entries; a writer is refused */
    {
        char dir2[160], db2[200];
        cache_dir(&f, "trunc", dir2, sizeof dir2);
        build_cache(&f, dir2, codec, seqs, 3);
        snprintf(db2, sizeof db2, "%s/maps.acdb", dir2);
        size_t span;
        uint64_t off = map_offset(db2, 2, &span);
        assert_int_equal(truncate(db2, (off_t)(off + span / 3)), 0);
        p = ac_cache_default_params();
        p.threshold = TINY;
        c = open_cache(&f, dir2, &p);
        assert_int_equal(stats_of(c).entries, 2);
        assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
        for (int i = 0; i < 3; i++) {
            double err = query_one(&f, c, &seqs[i], &st, &bw);
            assert_int_equal(st.hits, i < 2);
            if (i < 2) assert_true(err <= 1e-5);
            else assert_true(bw);
        }
        close_reader(&f, c);
        p.writable = 1;
        assert_int_equal(ac_cache_open(f.m, dir2, &p, &c), AC_ERR_CACHE);
        fprintf(stderr, "truncated, writer: %s\n", ac_last_error());
        assert_null(c);
        /* a file that is not a database at all */
        write_file(db2, "not a database", 14);
        p.writable = 0;
        assert_true(ac_cache_open(f.m, dir2, &p, &c) < 0);
        assert_null(c);
    }
    free(ids);
    fx_close(&f);
}

static void test_bad_inputs_llama(void **st) { (void)st, bad_inputs(AC_ARCH_LLAMA); }
static void test_bad_inputs_bert(void **st) { (void)st, bad_inputs(AC_ARCH_BERT); }

/* ---- a writer cache attached to its own context ------------------------------------------------------------------------ */

/* The writer adds through the context it is attached to for lookups: new
 * entries become hits after reindexing; another context's hook is left alone. */
static void test_writer_attached(void **state) {
    (void)state;
    fx f;
    fx_open(&f, AC_ARCH_LLAMA);
    const int lens[] = {16, 21};
    ac_seq seqs[2];
    int32_t *ids;
    make_seqs(&f, lens, 2, 81, seqs, &ids);
    char dir[160];
    cache_dir(&f, "c", dir, sizeof dir);
    ac_cache_params p = ac_cache_default_params();
    p.writable = p.create = 1;
    p.codec = "f32-causal";
    p.threshold = TINY;
    ac_cache *c = open_cache(&f, dir, &p);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    ac_cache_stats st;
    int bw, added;
    query_one(&f, c, &seqs[0], &st, &bw); /* empty: miss */
    assert_int_equal(st.hits, 0);
    assert_true(bw);
    /* failed adds store nothing and leave the writer usable */
    {
        int32_t bad[4] = {1, 2, 100000, 3}; /* id out of range */
        added = -1;
        assert_int_equal(ac_cache_add(c, f.cctx, bad, 4, &added), AC_ERR_INPUT);
        assert_int_equal(added, 0);
        int32_t *toolong = calloc(4096, sizeof *toolong); /* past max_tokens */
        assert_true(ac_cache_add(c, f.cctx, toolong, 4096, &added) < 0);
        free(toolong);
        assert_int_equal(ac_cache_add(c, f.cctx, bad, 0, &added), AC_ERR_ARG);
        ac_model *m2 = NULL; /* a context of another model */
        char path2[160];
        snprintf(path2, sizeof path2, "%s/other.gguf", f.root);
        ref_spec s2 = ref_spec_default(AC_ARCH_LLAMA);
        s2.seed = 77;
        m2 = load_model_spec(&s2, path2);
        ac_ctx *c2 = mkctx(m2);
        assert_int_equal(ac_cache_add(c, c2, seqs[0].tokens, seqs[0].n_tokens, &added), AC_ERR_ARG);
        ac_ctx_free(c2);
        ac_model_free(m2);
        assert_int_equal(stats_of(c).entries, 0);
        query_one(&f, c, &seqs[0], &st, &bw); /* still attached, still exact */
        assert_true(bw);
    }
    assert_int_equal(ac_cache_add(c, f.cctx, seqs[0].tokens, seqs[0].n_tokens, &added), AC_OK);
    assert_int_equal(added, 1);
    assert_int_equal(ac_cache_commit(c), AC_OK);
    assert_int_equal(ac_cache_reindex(c), AC_OK);
    double err = query_one(&f, c, &seqs[0], &st, &bw); /* still attached after the add */
    assert_int_equal(st.hits, 1);
    assert_true(err <= 1e-5);
    /* adding through another context keeps the attachment of this one */
    assert_int_equal(ac_cache_add(c, f.exact, seqs[1].tokens, seqs[1].n_tokens, &added), AC_OK);
    assert_int_equal(added, 1);
    assert_int_equal(ac_cache_commit(c), AC_OK);
    assert_int_equal(ac_cache_reindex(c), AC_OK);
    for (int i = 0; i < 2; i++) {
        err = query_one(&f, c, &seqs[i], &st, &bw);
        assert_int_equal(st.hits, 1);
        assert_true(err <= 1e-5);
    }
    /* many contexts per cache: attaching it to another context keeps the first attached */
    ac_ctx *third = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(third, c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(third, c), AC_OK); /* again: still one attachment */
    ac_cache_reset_stats(c);
    outs a = run(&f, f.cctx, &seqs[0], 1), b = run(&f, f.exact, &seqs[0], 1);
    assert_int_equal(stats_of(c).queries, 1);
    assert_int_equal(stats_of(c).hits, 1);
    assert_true(outs_err(&f, &a, &b) <= 1e-5);
    outs_free(&a);
    a = run(&f, third, &seqs[0], 1);
    assert_int_equal(stats_of(c).queries, 2);
    assert_int_equal(stats_of(c).hits, 2);
    assert_true(outs_err(&f, &a, &b) <= 1e-5);
    outs_free(&a);
    /* detached, third runs exact and is not looked up */
    assert_int_equal(ac_ctx_attach_cache(third, NULL), AC_OK);
    a = run(&f, third, &seqs[0], 1);
    assert_true(outs_bitwise(&f, &a, &b));
    assert_int_equal(stats_of(c).queries, 2);
    outs_free(&a);
    outs_free(&b);
    /* a detached context may be freed before the cache is closed; so may an attached one */
    ac_ctx_free(third);
    third = mkctx(f.m);
    assert_int_equal(ac_ctx_attach_cache(third, c), AC_OK);
    ac_ctx_free(third);
    err = query_one(&f, c, &seqs[0], &st, &bw); /* cctx still attached */
    assert_int_equal(st.hits, 1);
    /* close while attached detaches the context: it runs exact afterwards */
    assert_int_equal(ac_cache_close(c), AC_OK);
    a = run(&f, f.cctx, &seqs[0], 1), b = run(&f, f.exact, &seqs[0], 1);
    assert_true(outs_bitwise(&f, &a, &b));
    outs_free(&a);
    outs_free(&b);
    /* both entries were committed by close */
    c = open_reader(&f, dir, TINY, NULL, 0);
    assert_int_equal(stats_of(c).entries, 2);
    close_reader(&f, c);
    free(ids);
    fx_close(&f);
}

/* ---- 7. projector end to end ----------------------------------------------------------------------------------------------- */

static int print_has(ac_cache *c, const char *needle) {
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    assert_non_null(m);
    assert_int_equal(ac_cache_print_db_stats(c, m), AC_OK);
    fclose(m);
    int r = buf && strstr(buf, needle) != NULL;
    free(buf);
    return r;
}

static void projector(int arch) {
    fx f;
    fx_open(&f, arch);
    enum { N = 44 };
    int lens[N];
    uint64_t ls = 91;
    for (int i = 0; i < N; i++) {
        ls ^= ls << 13, ls ^= ls >> 7, ls ^= ls << 17;
        lens[i] = 8 + (int)(ls % 25);
    }
    ac_seq seqs[N];
    int32_t *ids;
    make_seqs(&f, lens, N, 93, seqs, &ids);
    char dir[160], codec[32], ppath[200];
    cache_dir(&f, "c", dir, sizeof dir);
    snprintf(ppath, sizeof ppath, "%s/projector.gguf", dir);
    build_cache(&f, dir, codec_for(&f, "f32", codec, sizeof codec), seqs, N);
    ac_cache_params p = ac_cache_default_params();
    ac_cache *c = NULL;

    /* no projector yet: asking for its key is refused */
    p.key = AC_KEY_PROJECTOR;
    assert_int_equal(ac_cache_open(f.m, dir, &p, &c), AC_ERR_CACHE);
    assert_null(c);

    p = ac_cache_default_params();
    p.writable = 1;
    c = open_cache(&f, dir, &p);
    assert_true(print_has(c, "key: random")); /* auto without a projector: the random projection */
    ac_cache_train_params tp = ac_cache_default_train_params();
    tp.n_pairs = 300;
    tp.epochs = 4;
    tp.hidden = 64;
    tp.seed = 5;
    double report[3] = {NAN, NAN, NAN};
    double t0 = ac_now();
    int rc = ac_cache_train_projector(c, &tp, report);
    if (rc) fprintf(stderr, "train: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    fprintf(stderr, "%s: projector trained in %.2f s; hit quality projector %.3f mean %.3f random %.3f\n",
            arch == AC_ARCH_BERT ? "bert" : "llama", ac_now() - t0, report[0], report[1], report[2]);
    for (int k = 0; k < 3; k++) {
        assert_true(isfinite(report[k]));
        assert_true(report[k] >= 0.999); /* retrieved/best map distance; best <= retrieved */
    }
    assert_true(file_exists(ppath));
    assert_true(print_has(c, "key: projector"));
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* reopened with AC_KEY_AUTO: the projector key; a stored sequence hits itself */
    p = ac_cache_default_params();
    p.threshold = 1e-2f;
    c = open_cache(&f, dir, &p);
    assert_true(print_has(c, "key: projector"));
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    ac_cache_stats st;
    int bw;
    for (int i = 0; i < N; i += 11) {
        double err = query_one(&f, c, &seqs[i], &st, &bw);
        if (!(err <= 1e-5)) fprintf(stderr, "projector key, stored seq %d: rel err %.3g\n", i, err);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.layers_served, f.NL);
        assert_true(err <= 1e-5);
        assert_true(st.t_key >= 0 && st.t_search >= 0);
    }
    close_reader(&f, c);
    /* lookup_all, one batch of NB (the projector's keys in one call; flat, IVF and HNSW searched as one
       batch): the per-query path's hits and entries; a loose threshold so that near neighbours hit too */
    {
        ac_model_info in;
        assert_int_equal(ac_model_get_info(f.m, &in), AC_OK);
        const size_t SD = (size_t)AC_ATTN_SUMMARY_SEGMENTS * f.D;
        float *sum = malloc(NB * SD * sizeof *sum);
        assert_non_null(sum);
        ac_attn_site all[NB];
        for (int s = 0; s < NB; s++) {
            host_summary(&f, &seqs[s], sum + s * SD);
            all[s] = (ac_attn_site){0, s, seqs[s].tokens, seqs[s].n_tokens, in.n_head, f.causal, NULL, 0, sum + s * SD, -1, NULL};
        }
        for (int kind = 0; kind < 3; kind++) {
            ac_cache_params bp = ac_cache_default_params();
            bp.threshold = 1.0f;
            bp.index_kind = kind;
            batch_run one[2], bat[2];
            batch_lookups(&f, dir, &bp, all, 0, 0, one);
            batch_lookups(&f, dir, &bp, all, 1, 0, bat);
            assert_true(one[0].st.hits >= NB / 2 && one[0].st.queries == NB);
            for (int rep = 0; rep < 2; rep++) {
                assert_int_equal(bat[rep].st.hits, one[rep].st.hits);
                assert_int_equal(bat[rep].st.queries, one[rep].st.queries);
                for (int s = 0; s < NB; s++) {
                    assert_int_equal(bat[rep].hit[s], one[rep].hit[s]);
                    assert_true(bat[rep].key[s] == one[rep].key[s]);
                }
            }
        }
        free(sum);
    }
    /* the other key kinds still open beside the projector, with every index kind
     * (IVF falls back to flat below 64 entries); stored sequences hit themselves */
    for (int key = AC_KEY_MEAN; key <= AC_KEY_RANDOM; key++)
        for (int kind = 0; kind < 3; kind++) {
            p.key = key;
            p.index_kind = kind;
            p.threshold = TINY * 10;
            c = open_cache(&f, dir, &p);
            assert_true(print_has(c, key == AC_KEY_MEAN ? "key: mean" : "key: random"));
            assert_true(print_has(c, kind == 0 ? "index: flat" : kind == 1 ? "index: ivf" : "index: hnsw"));
            assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
            for (int i = 5; i < N; i += 13) {
                double err = query_one(&f, c, &seqs[i], &st, &bw);
                assert_int_equal(st.hits, 1);
                assert_true(err <= 1e-5);
            }
            close_reader(&f, c);
        }

    /* another model's projector is refused */
    {
        ref_spec s2 = ref_spec_default(arch);
        s2.seed = 4242;
        char path2[160], dir2[160], pp2[200];
        snprintf(path2, sizeof path2, "%s/other.gguf", f.root);
        ac_model *m2 = load_model_spec(&s2, path2);
        ac_ctx *c2 = mkctx(m2);
        cache_dir(&f, "other", dir2, sizeof dir2);
        ac_cache_params p2 = ac_cache_default_params();
        p2.writable = p2.create = 1;
        ac_cache *w = NULL;
        assert_int_equal(ac_cache_open(m2, dir2, &p2, &w), AC_OK);
        int added;
        assert_int_equal(ac_cache_add(w, c2, seqs[0].tokens, seqs[0].n_tokens, &added), AC_OK);
        assert_int_equal(ac_cache_close(w), AC_OK);
        snprintf(pp2, sizeof pp2, "%s/projector.gguf", dir2);
        copy_file(ppath, pp2);
        for (int wr = 0; wr < 2; wr++) {
            p2 = ac_cache_default_params();
            p2.writable = wr;
            w = NULL;
            rc = ac_cache_open(m2, dir2, &p2, &w);
            fprintf(stderr, "foreign projector: %s\n", ac_last_error());
            assert_int_equal(rc, AC_ERR_CACHE);
            assert_null(w);
            assert_non_null(strstr(ac_last_error(), "projector"));
        }
        /* a damaged projector file is refused too */
        write_file(pp2, "GGUF garbage", 12);
        p2 = ac_cache_default_params();
        assert_true(ac_cache_open(m2, dir2, &p2, &w) < 0);
        assert_null(w);
        ac_ctx_free(c2);
        ac_model_free(m2);
    }
    free(ids);
    fx_close(&f);
}

static void test_projector_llama(void **st) { (void)st, projector(AC_ARCH_LLAMA); }
static void test_projector_bert(void **st) { (void)st, projector(AC_ARCH_BERT); }

/* ---- 7. prefix rows ------------------------------------------------------------------------------------------
 * rows = PREFIX: a query sharing a token prefix with a stored entry gets the
 * rows of that prefix from the map (exact for a causal model up to the codec:
 * f32 maps here) and computes the rest; a shared prefix under 16 tokens is a
 * miss; batches mix full, partial and missed sequences; bidirectional models
 * and format-1 databases refuse the mode. */
static void test_prefix_rows(void **state) {
    (void)state;
    fx f;
    fx_open(&f, AC_ARCH_LLAMA);
    enum { P = 20 };
    const int lens[] = {P, 10, 14, 25, 12, 9};
    ac_seq parts[6];
    int32_t *ids;
    make_seqs(&f, lens, 6, 77, parts, &ids);
    /* the tails (parts 1, 2, 4) start with distinct tokens, none equal to part 3's first */
    int32_t *t1 = (int32_t *)parts[1].tokens, *t2 = (int32_t *)parts[2].tokens, *t4 = (int32_t *)parts[4].tokens;
    t1[0] = 1, t2[0] = 2, t4[0] = 3, ((int32_t *)parts[3].tokens)[0] = 4;
    int32_t A[P + 10], B[P + 14], Q[P + 12];
    memcpy(A, parts[0].tokens, P * 4), memcpy(A + P, t1, 10 * 4);
    memcpy(B, parts[0].tokens, P * 4), memcpy(B + P, t2, 14 * 4);
    memcpy(Q, parts[0].tokens, P * 4), memcpy(Q + P, t4, 12 * 4);
    ac_seq ents[3] = {{A, P + 10}, {B, P + 14}, parts[3]};
    char dir[160];
    cache_dir(&f, "prefix", dir, sizeof dir);
    build_cache(&f, dir, "f32-causal", ents, 3);

    ac_cache_params p = ac_cache_default_params();
    p.rows = AC_ROWS_PREFIX;
    p.key = AC_KEY_MEAN;
    ac_cache *c = open_cache(&f, dir, &p);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    ac_cache_stats st;
    /* a new tail after the shared prefix: P rows served per layer, the rest computed */
    ac_seq q = {Q, P + 12};
    double err = query_one(&f, c, &q, &st, NULL);
    fprintf(stderr, "prefix rows: partial hit rel err %.3g, rows %lld of %lld\n", err, (long long)st.rows_served,
            (long long)st.rows_total);
    assert_true(err <= 1e-5);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.layers_served, f.NL);
    assert_int_equal(st.rows_served, (int64_t)P * f.NL);
    assert_int_equal(st.rows_total, (int64_t)(P + 12) * f.NL);
    /* a stored sequence, and the bare prefix (a prefix of two entries): every row served */
    ac_seq full[2] = {{A, P + 10}, {Q, P}};
    for (int i = 0; i < 2; i++) {
        err = query_one(&f, c, &full[i], &st, NULL);
        assert_true(err <= 1e-5);
        assert_int_equal(st.hits, 1);
        assert_int_equal(st.rows_served, st.rows_total);
    }
    /* 15 shared tokens: a miss */
    int32_t S[30];
    memcpy(S, Q, 15 * 4);
    for (int i = 15; i < 30; i++) S[i] = (Q[i] + 7) % f.V == A[i] || (Q[i] + 7) % f.V == B[i] ? (Q[i] + 9) % f.V : (Q[i] + 7) % f.V;
    ac_seq sq = {S, 30};
    err = query_one(&f, c, &sq, &st, NULL);
    assert_int_equal(st.hits, 0);
    assert_true(err <= 1e-6);
    /* one batch: partial, miss, full, partial */
    ac_seq batch[4] = {q, sq, full[0], q};
    ac_cache_reset_stats(c);
    outs e = run(&f, f.exact, batch, 4), b = run(&f, f.cctx, batch, 4);
    st = stats_of(c);
    err = outs_err(&f, &b, &e);
    assert_true(err <= 1e-5);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.rows_served, (int64_t)(P + P + 10 + P) * f.NL);
    outs_free(&e);
    outs_free(&b);
    close_reader(&f, c);

    /* refusals: a bidirectional model; a database without token ids is covered by
     * test_cache_store (format 1 layout = format 2 without FLAG_TOKENS) */
    fx fb;
    fx_open(&fb, AC_ARCH_BERT);
    char dirb[160];
    cache_dir(&fb, "pb", dirb, sizeof dirb);
    ac_seq sb = {parts[3].tokens, 25};
    for (int i = 0; i < 25; i++) ((int32_t *)sb.tokens)[i] %= fb.V;
    build_cache(&fb, dirb, "f32", &sb, 1);
    ac_cache *cb = NULL;
    assert_int_equal(ac_cache_open(fb.m, dirb, &p, &cb), AC_ERR_ARG);
    assert_null(cb);
    assert_non_null(strstr(ac_last_error(), "causal"));
    fx_close(&fb);
    free(ids);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exactness_llama),   cmocka_unit_test(test_exactness_bert),
        cmocka_unit_test(test_layers_llama),      cmocka_unit_test(test_layers_bert),
        cmocka_unit_test(test_misses_llama),      cmocka_unit_test(test_misses_bert),
        cmocka_unit_test(test_lengths_causal),    cmocka_unit_test(test_lengths_bidirectional),
        cmocka_unit_test(test_batch_llama),       cmocka_unit_test(test_batch_bert),
        cmocka_unit_test(test_maps_seam_llama),   cmocka_unit_test(test_maps_seam_bert),
        cmocka_unit_test(test_summary_seam_llama), cmocka_unit_test(test_summary_seam_bert),
        cmocka_unit_test(test_lookup_all_batch_llama), cmocka_unit_test(test_lookup_all_batch_bert),
        cmocka_unit_test(test_record_threads_llama), cmocka_unit_test(test_record_threads_bert),
        cmocka_unit_test(test_record_threads_bad_map),
        cmocka_unit_test(test_bad_inputs_llama),  cmocka_unit_test(test_bad_inputs_bert),
        cmocka_unit_test(test_writer_attached),   cmocka_unit_test(test_projector_llama),
        cmocka_unit_test(test_projector_bert),    cmocka_unit_test(test_prefix_rows),
    };
    test_store_reserve_apply(); /* AC_TEST_STORE_RESERVE: see store_reserve.h */
    /* at the level in use; ctest runs the file again at each lower level (tests/CMakeLists.txt) */
    print_message("level %s:\n", ac_cpu_level_name(ac_cpu_level()));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
