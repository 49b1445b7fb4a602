/* test_cache_approx.c — the approximate-reuse policies of the attention cache
 * (docs/CACHE.md "Approximate reuse that keeps accuracy"); ctest runs it at every CPU level
 * (AC_LEVEL_TESTS, tests/run_at_level.sh).
 * Per-head spans (the head policy):
 *   the kernel: heads skipped by ac_attn_args.skip are left untouched and the
 *   others are bitwise the all-heads kernel (from row q0 too); ac_attn_heads
 *   restricts exactly the chosen heads — each
 *   restricted head equals a brute-force softmax over its span (sinks, window,
 *   end keys; causal and bidirectional, GQA), the reference ac_attn_local_rows
 *   agrees, and every head with span 0 is bitwise the all-heads fused kernel;
 *   the cache: spans set through the API change the output of the restricted
 *   heads' models only, all-zero spans (and spans covering the input) leave it
 *   bitwise exact, the counters count restricted head sites, ac_cache_tune_heads
 *   profiles recorded maps (a head whose maps are positional gets a span, the
 *   policy is saved and reloaded with heads "policy"), damaged heads.txt files
 *   and bad arguments are refused with a message naming the problem;
 *   exact_tail: the last rows of a served layer are computed (causal), and the
 *   option is refused for bidirectional models.
 * Exact rows from a row on, per sequence (ac_ctx_set_exact_from): rows before
 * the value come from the retrieved map at their positions, the rest are
 * computed (a query sharing exactly those rows with the stored entry gets its
 * exact output; one more served row moves it); one value per sequence of a
 * batch or one for all; 0 serves nothing, -1 everything; with exact_tail the
 * more exact rows win; bidirectional models serve all rows or none; bad values
 * are refused with a message and leave the values in place.
 * Verification (ac_cache_params.verify): the exact layer-0 rows of a stored
 * sequence equal its stored f32 rows (distance ~0: accepted, served); another
 * sequence's map is rejected at a tight threshold (a miss, bitwise exact) and
 * accepted without verification (the output moves); the rows checked put the
 * answer row first; bad settings are refused.
 * Per-head serving (ac_cache_params.serve_heads): no head served is bitwise the
 * exact forward (nothing counted served); every head is bitwise the whole-site
 * serving, every head of one layer bitwise that layer served whole; some heads
 * of layer 0 equal a reference forward supplied the mixed maps (the stored
 * entry's for the served heads, the query's own for the others) within 1e-5,
 * with exact tail rows too (causal); the counters count served heads; specs
 * and damaged or missing rankings are refused by name; ac_cache_rank_heads
 * refuses a cache where no entry has a neighbour, ranks the heads of two
 * entries most stable first, and rank:K serves the K pairs it saved first. With
 * heads of 32 columns, serving whole 64-column panels of heads leaves their Q (and
 * K) columns unprojected and gives the same output as the mixed-map reference.
 * The confidence gate (ac_cache_params.recheck_margin): a query whose answer the served
 * maps flip is computed again once the margin is above its cached margin, bitwise the exact
 * forward (cls and hidden states; alone, in a batch beside a confident served query, and with
 * no cls asked for), left as served below it; the count is kept; bad margins and a model
 * without a classifier head are refused by name. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "cache/verify.h"
#include "forward/forward.h"
#include "ref_forward.h"
#include "util/common.h"


#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f;
}

/* ---- 1. the kernel ------------------------------------------------------------------------------ */

/* brute force: row t of head h over the keys allowed by (w, sinks, end), double precision */
static void brute_row(const ac_attn_args *a, int h, int w, int ns, int ne, int t, double *out) {
    const int g = h / (a->H / a->Hkv), hd = a->hd, L = a->L;
    double mx = -INFINITY, *s = malloc((size_t)L * sizeof *s), sum = 0;
    for (int j = 0; j < L; j++) {
        int ok = a->causal ? j <= t : 1;
        ok = ok && (j < ns || (j > t - w && j < t + w) || (!a->causal && j >= L - ne));
        s[j] = -INFINITY;
        if (!ok) continue;
        double d = 0;
        for (int i = 0; i < hd; i++) d += (double)a->q[(size_t)t * a->ldq + h * hd + i] * a->k[(size_t)j * a->ldk + g * hd + i];
        s[j] = d * a->scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int j = 0; j < L; j++) sum += s[j] = s[j] == -INFINITY ? 0 : exp(s[j] - mx);
    for (int i = 0; i < hd; i++) out[i] = 0;
    for (int j = 0; j < L; j++)
        for (int i = 0; i < hd; i++) out[i] += s[j] / sum * a->v[(size_t)j * a->ldk + g * hd + i];
    free(s);
}

static void kernel_case(int L, int causal, int ns, int ne, uint64_t seed) {
    enum { H = 4, HKV = 2, HD = 32 };
    const int QD = H * HD, KVD = HKV * HD;
    float *q = malloc((size_t)L * QD * 4), *k = malloc((size_t)L * KVD * 4), *v = malloc((size_t)L * KVD * 4);
    float *o_all = malloc((size_t)L * QD * 4), *o_sp = malloc((size_t)L * QD * 4), *o_ref = malloc((size_t)L * QD * 4);
    for (int i = 0; i < L * QD; i++) q[i] = 2 * frand(&seed);
    for (int i = 0; i < L * KVD; i++) k[i] = 2 * frand(&seed), v[i] = frand(&seed);
    ac_attn_args a = {q, k, v, o_all, L, H, HKV, HD, QD, KVD, causal, 1.0f / sqrtf(HD), NULL, 0, 0, 0, 0, NULL};
    float *kt = aligned_alloc(64, (ac_attn_kt_floats(&a) * 4 + 63) / 64 * 64); /* 64-byte aligned key blocks */
    assert_int_equal(ac_attn_fused(&a, kt, NULL), AC_OK);
    { /* skipped heads (per-head serving): untouched; the others bitwise the all-heads kernel, also
       * from a row q0 on (rows before it untouched) */
        const uint8_t skip[H] = {1, 0, 0, 1};
        const int q0s[2] = {0, L / 2};
        for (int qi = 0; qi < 2; qi++) {
            for (int i = 0; i < L * QD; i++) o_sp[i] = -7.0f;
            ac_attn_args b = a;
            b.out = o_sp, b.skip = skip, b.q0 = q0s[qi];
            assert_int_equal(ac_attn_fused(&b, kt, NULL), AC_OK);
            const int q0 = b.q0 > 0 && b.q0 < L ? b.q0 : 0;
            for (int t = 0; t < L; t++)
                for (int h = 0; h < H; h++) {
                    const float *got = o_sp + (size_t)t * QD + h * HD;
                    if (skip[h] || t < q0)
                        for (int i = 0; i < HD; i++) assert_true(got[i] == -7.0f);
                    else
                        assert_memory_equal(got, o_all + (size_t)t * QD + h * HD, HD * 4);
                }
        }
    }
    const int span[H] = {0, 3, 0, 70}; /* heads 0, 2 exact; 1 and 3 restricted (3: exact when L <= 70) */
    a.out = o_sp;
    const int rc = ac_attn_heads(&a, span, ns, ne, kt, NULL);
    if (L <= 3) { /* spans covering the input: no restriction at all */
        assert_int_equal(rc, -1);
        goto done;
    }
    assert_int_equal(rc, AC_OK);
    a.out = o_ref;
    double *row = malloc(HD * sizeof *row), worst = 0;
    for (int h = 0; h < H; h++) {
        const int w = span[h] > 0 && span[h] < L ? span[h] : 0;
        if (!w) { /* exact heads: bitwise the all-heads kernel */
            for (int t = 0; t < L; t++) assert_memory_equal(o_sp + (size_t)t * QD + h * HD, o_all + (size_t)t * QD + h * HD, HD * 4);
            continue;
        }
        const int nend = causal ? 0 : ne;
        ac_attn_local_rows(&a, h, w, ns, nend, 0, L);
        for (int t = 0; t < L; t++) {
            brute_row(&a, h, w, ns, nend, t, row);
            for (int i = 0; i < HD; i++) {
                worst = fmax(worst, fabs(o_sp[(size_t)t * QD + h * HD + i] - row[i]));
                worst = fmax(worst, fabs(o_ref[(size_t)t * QD + h * HD + i] - row[i]));
            }
        }
        /* and it is a restriction: some row differs from the full attention */
        double diff = 0;
        for (int t = 0; t < L; t++)
            for (int i = 0; i < HD; i++)
                diff = fmax(diff, fabs(o_sp[(size_t)t * QD + h * HD + i] - o_all[(size_t)t * QD + h * HD + i]));
        if (L > w + ns + nend + 1) assert_true(diff > 1e-3);
    }
    free(row);
    if (worst > 2e-5) fprintf(stderr, "L %d causal %d sinks %d/%d: worst %.3g\n", L, causal, ns, ne, worst);
    assert_true(worst <= 2e-5);
done:
    free(q), free(k), free(v), free(o_all), free(o_sp), free(o_ref), free(kt);
}

static void test_kernel(void **st) {
    (void)st;
    const int lens[] = {1, 3, 5, 64, 65, 130, 200};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        for (int causal = 0; causal < 2; causal++) {
            kernel_case(lens[i], causal, 1, 1, 11 + i);
            kernel_case(lens[i], causal, 0, 0, 23 + i);
            kernel_case(lens[i], causal, 4, 2, 37 + i);
        }
}

/* ---- 2. through the cache ----------------------------------------------------------------------- */

typedef struct fx {
    char root[64], model[128], dir[160];
    ac_model *m;
    ac_ctx *exact, *cctx;
    int D, NL, NH, causal, V;
} fx;

static void fx_open_spec(fx *f, const ref_spec *spec);

static void fx_open(fx *f, int arch) {
    const ref_spec s = ref_spec_default(arch);
    fx_open_spec(f, &s);
}

static void fx_open_spec(fx *f, const ref_spec *spec) {
    memset(f, 0, sizeof *f);
    strcpy(f->root, "/tmp/ac_cache_approx_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->model, sizeof f->model, "%s/model.gguf", f->root);
    snprintf(f->dir, sizeof f->dir, "%s/cache", f->root);
    ref_spec s = *spec;
    uint8_t *buf = NULL;
    size_t size = 0;
    assert_int_equal(ref_build(&s, &buf, &size), AC_OK);
    FILE *fp = fopen(f->model, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, size, fp), size);
    fclose(fp);
    free(buf);
    assert_int_equal(ac_model_load(f->model, NULL, &f->m), AC_OK);
    ac_model_info in;
    ac_model_get_info(f->m, &in);
    f->D = in.n_embd, f->NL = in.n_layer, f->NH = in.n_head, f->causal = in.causal, f->V = in.n_vocab;
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    assert_int_equal(ac_ctx_new(f->m, &p, &f->exact), AC_OK);
    assert_int_equal(ac_ctx_new(f->m, &p, &f->cctx), AC_OK);
}

static void fx_close(fx *f) {
    ac_ctx_free(f->exact);
    ac_ctx_free(f->cctx);
    ac_model_free(f->m);
    rm_rf(f->root);
}

static float *hidden_of(fx *f, ac_ctx *c, const ac_seq *s, int n) {
    int T = 0;
    for (int i = 0; i < n; i++) T += s[i].n_tokens;
    float *h = malloc((size_t)T * f->D * 4);
    ac_outputs o = {0};
    o.hidden = h;
    assert_int_equal(ac_forward(c, s, n, &o), AC_OK);
    return h;
}

static double max_rel(const float *a, const float *b, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
    return m > 0 ? e / m : e;
}

/* entries: n random sequences; a few "positional" ones are not needed: the
 * synthetic model's heads are what they are, the test only checks that the
 * profile, the choice and the file agree */
static void build(fx *f, const ac_seq *s, int n) {
    ac_cache_params p = ac_cache_default_params();
    p.writable = 1, p.create = 1;
    p.codec = f->causal ? "f32-causal" : "f32";
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f->m, f->dir, &p, &c), AC_OK);
    for (int i = 0; i < n; i++) assert_int_equal(ac_cache_add(c, f->exact, s[i].tokens, s[i].n_tokens, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void through_cache(int arch) {
    fx f;
    fx_open(&f, arch);
    const int lens[3] = {40, 70, 9};
    int32_t ids[119];
    uint64_t seed = 5;
    ref_random_tokens(&seed, ids, 119, f.V);
    ac_seq s[3] = {{ids, 40}, {ids + 40, 70}, {ids + 110, 9}};
    (void)lens;
    build(&f, s, 3);
    const size_t NH = (size_t)f.NL * f.NH, T = 119;
    float *e = hidden_of(&f, f.exact, s, 3);

    /* a reader with lookups off (threshold < 0): only the head policy acts */
    ac_cache_params p = ac_cache_default_params();
    p.threshold = -1;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    int nr = -1, ns = -1, ne = -1;
    assert_int_equal(ac_cache_get_head_spans(c, NULL, &ns, &ne, &nr), AC_OK);
    assert_int_equal(nr, 0);
    float *h = hidden_of(&f, f.cctx, s, 3);
    assert_memory_equal(h, e, T * f.D * 4); /* no policy: bitwise exact */
    free(h);

    /* spans of 0 everywhere but set: bitwise exact; spans of 512 (>= every L): bitwise exact */
    int *span = calloc(NH, sizeof *span);
    assert_int_equal(ac_cache_set_head_spans(c, span, 1, 1), AC_OK);
    h = hidden_of(&f, f.cctx, s, 3);
    assert_memory_equal(h, e, T * f.D * 4);
    free(h);
    for (size_t i = 0; i < NH; i++) span[i] = 512;
    assert_int_equal(ac_cache_set_head_spans(c, span, 1, 1), AC_OK);
    h = hidden_of(&f, f.cctx, s, 3);
    assert_memory_equal(h, e, T * f.D * 4);
    free(h);

    /* head 0 of every layer restricted to a window of 2 (+1 sink): the output moves; counted */
    for (size_t i = 0; i < NH; i++) span[i] = i % f.NH == 0 ? 2 : 0;
    assert_int_equal(ac_cache_set_head_spans(c, span, 1, 1), AC_OK);
    ac_cache_reset_stats(c);
    h = hidden_of(&f, f.cctx, s, 3);
    const double moved = max_rel(h, e, T * f.D);
    ac_cache_stats stt;
    ac_cache_get_stats(c, &stt);
    assert_int_equal(stt.head_sites, (int64_t)3 * f.NL * f.NH);
    assert_int_equal(stt.head_sites_spanned, (int64_t)3 * f.NL);
    assert_true(moved > 1e-4);
    /* the same restriction on the sequence alone, in a batch of one: the same rows (per sequence) */
    float *h1 = hidden_of(&f, f.cctx, &s[1], 1);
    assert_true(max_rel(h1, h + (size_t)40 * f.D, (size_t)70 * f.D) < 1e-5);
    free(h1);
    free(h);
    /* bad spans refused, policy unchanged */
    span[3] = -1;
    assert_int_equal(ac_cache_set_head_spans(c, span, 1, 1), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "outside 0-512"));
    assert_int_equal(ac_cache_set_head_spans(c, NULL, 65, 0), AC_ERR_ARG);
    assert_int_equal(ac_cache_get_head_spans(c, NULL, NULL, NULL, &nr), AC_OK);
    assert_int_equal(nr, f.NL);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* tune on the recorded maps: eps 1 restricts every head to the smallest window; eps 0 to
     * windows with no loss at all (windows >= L are free); the file is written and reloads */
    p = ac_cache_default_params();
    p.writable = 1;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_tune_heads(c, 1.0f, 0, 1, 1, 0, NULL, &nr), AC_OK);
    assert_int_equal(nr, (int)NH);
    assert_int_equal(ac_cache_get_head_spans(c, span, NULL, NULL, NULL), AC_OK);
    for (size_t i = 0; i < NH; i++) assert_int_equal(span[i], 1);
    assert_int_equal(ac_cache_tune_heads(c, 0.0f, 0, 1, 1, 0, NULL, &nr), AC_OK);
    assert_int_equal(ac_cache_get_head_spans(c, span, NULL, NULL, NULL), AC_OK);
    for (size_t i = 0; i < NH; i++) assert_true(span[i] == 0 || span[i] >= 64); /* L 70 needs >= 64..70 */
    assert_int_equal(ac_cache_tune_heads(c, 0.05f, 0, 1, 1, 8, NULL, &nr), AC_OK); /* max span 8 */
    int *saved = calloc(NH, sizeof *saved);
    assert_int_equal(ac_cache_get_head_spans(c, saved, NULL, NULL, NULL), AC_OK);
    for (size_t i = 0; i < NH; i++) assert_true(saved[i] <= 8);
    assert_int_equal(ac_cache_tune_heads(c, 2.0f, 0, 1, 1, 0, NULL, NULL), AC_ERR_ARG); /* eps outside [0, 1] */
    assert_int_equal(ac_cache_close(c), AC_OK);
    p = ac_cache_default_params();
    p.heads = "policy";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_get_head_spans(c, span, &ns, &ne, &nr), AC_OK);
    assert_memory_equal(span, saved, NH * sizeof *span);
    assert_int_equal(ns, 1);
    assert_int_equal(ne, f.causal ? 0 : 1);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* damaged or foreign heads.txt: refused at open, naming the file */
    char path[256];
    snprintf(path, sizeof path, "%s/heads.txt", f.dir);
    const char *bad[] = {"garbage\n", "heads 1\nlayers 99 heads 4 sink 1 end 1\n",
                         "heads 1\nlayers 2 heads 4 sink 1 end 1\n0: 1 2 3\n"};
    char good_shape[128];
    snprintf(good_shape, sizeof good_shape, "heads 1\nlayers %d heads %d sink 1 end 1\n0: 1 -4\n", f.NL, f.NH);
    const char *bad2[] = {bad[0], bad[1], bad[2], good_shape};
    for (int i = 0; i < 4; i++) {
        write_text(path, bad2[i]);
        c = NULL;
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_CACHE);
        assert_null(c);
        assert_non_null(strstr(ac_last_error(), "heads.txt"));
    }
    unlink(path);
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_CACHE); /* missing */
    assert_non_null(strstr(ac_last_error(), "tune --head-eps"));
    p.heads = "sometimes";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);

    /* exact_tail: bidirectional models refuse it; causal ones compute the last rows */
    p = ac_cache_default_params();
    p.exact_tail = 4;
    p.threshold = 1e-5f;
    p.key = AC_KEY_MEAN;
    c = NULL;
    if (!f.causal) {
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
        assert_non_null(strstr(ac_last_error(), "causal"));
    } else {
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
        assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
        ac_cache_reset_stats(c);
        h = hidden_of(&f, f.cctx, &s[1], 1); /* a stored sequence: a hit */
        ac_cache_get_stats(c, &stt);
        assert_int_equal(stt.hits, 1);
        assert_int_equal(stt.rows_served, (int64_t)(70 - 4) * f.NL);
        assert_int_equal(stt.rows_total, (int64_t)70 * f.NL);
        assert_true(max_rel(h, e + (size_t)40 * f.D, (size_t)70 * f.D) < 1e-5); /* f32 maps of itself: exact */
        free(h);
        h = hidden_of(&f, f.cctx, &s[2], 1); /* 9 tokens: 5 rows served */
        ac_cache_get_stats(c, &stt);
        assert_int_equal(stt.rows_served - (int64_t)66 * f.NL, (int64_t)5 * f.NL);
        free(h);
        assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
        assert_int_equal(ac_cache_close(c), AC_OK);
        p.exact_tail = -1;
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
    }
    free(span);
    free(saved);
    free(e);
    fx_close(&f);
}

static void verification(int arch) {
    fx f;
    fx_open(&f, arch);
    int32_t ids[119 + 40];
    uint64_t seed = 9;
    ref_random_tokens(&seed, ids, 119 + 40, f.V);
    ac_seq s[3] = {{ids, 40}, {ids + 40, 70}, {ids + 110, 9}};
    build(&f, s, 3);
    ac_seq other = {ids + 119, 40}; /* not stored; the length of entry 0 */
    float *e_self = hidden_of(&f, f.exact, &s[0], 1), *e_other = hidden_of(&f, f.exact, &other, 1);
    const size_t n = (size_t)40 * f.D;

    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f; /* every candidate of a fitting length passes the key test */
    p.key = AC_KEY_MEAN;
    ac_cache *c = NULL;
    /* 1. no verification: the other sequence is served entry 0's maps, its output moves */
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    float *h = hidden_of(&f, f.cctx, &other, 1);
    ac_cache_stats st;
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.verify_checked, 0);
    assert_true(max_rel(h, e_other, n) > 1e-4);
    free(h);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* 2. verification at a tight threshold: the wrong map is rejected (a miss, bitwise exact);
     * the stored sequence's own map agrees with its exact rows (RoPE, GQA, causal mask) and serves */
    p.verify = 1e-4f;
    p.verify_rows = 6;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    h = hidden_of(&f, f.cctx, &other, 1);
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 0);
    assert_true(st.verify_checked >= 1);
    assert_int_equal(st.verify_rejected, st.verify_checked);
    assert_memory_equal(h, e_other, n * 4);
    free(h);
    ac_cache_reset_stats(c);
    h = hidden_of(&f, f.cctx, &s[0], 1);
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.verify_rejected, 0);
    assert_true(max_rel(h, e_self, n) < 1e-5);
    free(h);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* 3. bad settings */
    p.verify = 1.5f;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "verify"));
    p.verify = 0.1f, p.verify_rows = 65;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
    if (f.causal) {
        p.verify_rows = 4, p.rows = AC_ROWS_PREFIX;
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
        assert_non_null(strstr(ac_last_error(), "prefix"));
    }
    free(e_self), free(e_other);
    fx_close(&f);
}

/* ---- 3. exact rows from a row on, per sequence (ac_ctx_set_exact_from) -------------------------- */

/* rows_served of the cache since its last reset */
static int64_t rows_served(ac_cache *c) {
    ac_cache_stats st;
    ac_cache_get_stats(c, &st);
    return st.rows_served;
}

/* Causal: one stored entry A (70 tokens, f32 maps); queries Qk share A's first Fk tokens and
 * differ after them, so A's map rows [0, Fk) ARE Qk's own rows (row t depends on tokens 0..t):
 * served rows [0, Fk) and computed rows [Fk, L) give Qk's exact output, while serving even a
 * few rows past Fk moves it. That shows the rows before exact_from come from the map at their
 * positions and the rows from it on are computed. Bidirectional: all rows or none. */
static void exact_from_case(int arch) {
    fx f;
    fx_open(&f, arch);
    enum { L = 70 };
    int32_t ids[4 * L];
    uint64_t seed = 31;
    ref_random_tokens(&seed, ids, 4 * L, f.V);
    int32_t *A = ids, *Q1 = ids + L, *Q2 = ids + 2 * L, *Q3 = ids + 3 * L;
    memcpy(Q1, A, 30 * sizeof *A); /* Q1 shares 30 tokens with A, Q2 50; Q3 shares none */
    memcpy(Q2, A, 50 * sizeof *A);
    const ac_seq sa = {A, L}, q1 = {Q1, L}, q2 = {Q2, L}, q3 = {Q3, L};
    build(&f, &sa, 1);
    const size_t n = (size_t)L * f.D;
    float *e1 = hidden_of(&f, f.exact, &q1, 1), *e2 = hidden_of(&f, f.exact, &q2, 1), *ea = hidden_of(&f, f.exact, &sa, 1);
    float *e3 = hidden_of(&f, f.exact, &q3, 1);

    /* without a cache the values change nothing */
    const int f30 = 30;
    assert_int_equal(ac_ctx_set_exact_from(f.exact, 1, &f30), AC_OK);
    float *h = hidden_of(&f, f.exact, &q1, 1);
    assert_memory_equal(h, e1, n * 4);
    free(h);

    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f; /* every query hits A (the one entry of a fitting length) */
    p.key = AC_KEY_MEAN;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    ac_seq_plan plan[3];

    if (!f.causal) { /* bidirectional: a value below L leaves the sequence unserved, L serves it whole */
        const int f69 = L - 1, fL = L, none = -1;
        assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f69), AC_OK);
        h = hidden_of(&f, f.cctx, &q3, 1);
        assert_memory_equal(h, e3, n * 4);
        assert_int_equal(rows_served(c), 0);
        free(h);
        assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &fL), AC_OK);
        h = hidden_of(&f, f.cctx, &q3, 1);
        assert_true(max_rel(h, e3, n) > 1e-4); /* another input's maps */
        assert_int_equal(rows_served(c), (int64_t)L * f.NL);
        free(h);
        ac_cache_reset_stats(c);
        assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &none), AC_OK);
        h = hidden_of(&f, f.cctx, &q3, 1);
        assert_int_equal(rows_served(c), (int64_t)L * f.NL);
        free(h);
        goto done;
    }

    /* 1. Q1 with exact rows from 30: rows [0, 30) served (A's rows: Q1's own), the rest computed */
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f30), AC_OK);
    h = hidden_of(&f, f.cctx, &q1, 1);
    assert_int_equal(rows_served(c), (int64_t)30 * f.NL);
    assert_int_equal(ac_ctx_last_plan(f.cctx, 1, plan), AC_OK);
    assert_int_equal(plan[0].map_rows, 30);
    assert_int_equal(plan[0].map_layers, f.NL);
    assert_true(max_rel(h, e1, n) < 1e-5);
    free(h);
    /* 2. ten rows past the shared prefix served: they are A's, not Q1's, and the output moves;
     * no value at all: every row served, it moves too */
    const int f40 = 40, none = -1;
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f40), AC_OK);
    h = hidden_of(&f, f.cctx, &q1, 1);
    assert_true(max_rel(h, e1, n) > 1e-4);
    free(h);
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &none), AC_OK);
    h = hidden_of(&f, f.cctx, &q1, 1);
    assert_true(max_rel(h, e1, n) > 1e-4);
    assert_int_equal(rows_served(c), (int64_t)L * f.NL);
    free(h);

    /* 3. one value per sequence in one batch: Q1 from 30, Q2 from 50, A itself whole (-1); each
     * sequence's rows equal its exact forward */
    const ac_seq batch[3] = {q1, q2, sa};
    const int per[3] = {30, 50, -1};
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 3, per), AC_OK);
    h = hidden_of(&f, f.cctx, batch, 3);
    assert_int_equal(rows_served(c), (int64_t)(30 + 50 + L) * f.NL);
    assert_int_equal(ac_ctx_last_plan(f.cctx, 3, plan), AC_OK);
    assert_int_equal(plan[0].map_rows, 30);
    assert_int_equal(plan[1].map_rows, 50);
    assert_int_equal(plan[2].map_rows, L);
    assert_true(max_rel(h, e1, n) < 1e-5);
    assert_true(max_rel(h + n, e2, n) < 1e-5);
    assert_true(max_rel(h + 2 * n, ea, n) < 1e-5);
    free(h);
    /* one value for every sequence of a call */
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f30), AC_OK);
    h = hidden_of(&f, f.cctx, batch, 3);
    assert_int_equal(rows_served(c), (int64_t)3 * 30 * f.NL);
    assert_true(max_rel(h, e1, n) < 1e-5 && max_rel(h + n, e2, n) < 1e-5 && max_rel(h + 2 * n, ea, n) < 1e-5);
    free(h);
    /* 0: the sequence is not served (bitwise exact) */
    const int zero = 0;
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &zero), AC_OK);
    h = hidden_of(&f, f.cctx, &q3, 1);
    assert_memory_equal(h, e3, n * 4);
    assert_int_equal(rows_served(c), 0);
    free(h);

    /* 4. bad values: refused with a message, the values in place kept */
    const int bad = -2, past = L + 1, two[2] = {10, 20};
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f30), AC_OK);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &bad), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "exact_from -2"));
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, -1, NULL), AC_ERR_ARG);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 2, NULL), AC_ERR_ARG);
    assert_int_equal(ac_ctx_set_exact_from(NULL, 1, &f30), AC_ERR_ARG);
    ac_cache_reset_stats(c);
    h = hidden_of(&f, f.cctx, &q1, 1); /* still 30 */
    assert_int_equal(rows_served(c), (int64_t)30 * f.NL);
    free(h);
    float *hb = malloc(3 * n * 4);
    ac_outputs o = {0};
    o.hidden = hb;
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &past), AC_OK);
    assert_int_equal(ac_forward(f.cctx, &q1, 1, &o), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "exact_from 71 is past its 70 tokens"));
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 2, two), AC_OK);
    assert_int_equal(ac_forward(f.cctx, batch, 3, &o), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "ac_ctx_set_exact_from gave values for 2"));
    free(hb);
    /* cleared: every row served again */
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 0, NULL), AC_OK);
    ac_cache_reset_stats(c);
    h = hidden_of(&f, f.cctx, &q1, 1);
    assert_int_equal(rows_served(c), (int64_t)L * f.NL);
    free(h);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* 5. with exact_tail: the more exact rows of the two (tail 30: rows from 40; value 50) */
    p.exact_tail = 30;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    const int f50 = 50, f20 = 20;
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f50), AC_OK);
    h = hidden_of(&f, f.cctx, &q2, 1);
    assert_int_equal(rows_served(c), (int64_t)40 * f.NL);
    assert_true(max_rel(h, e2, n) < 1e-5);
    free(h);
    ac_cache_reset_stats(c);
    assert_int_equal(ac_ctx_set_exact_from(f.cctx, 1, &f20), AC_OK);
    h = hidden_of(&f, f.cctx, &q2, 1);
    assert_int_equal(rows_served(c), (int64_t)20 * f.NL);
    assert_true(max_rel(h, e2, n) < 1e-5);
    free(h);
done:
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(e1), free(e2), free(e3), free(ea);
    fx_close(&f);
}

/* ---- 4. per-head serving (ac_cache_params.serve_heads) ------------------------------------------ */

/* The maps of one forward pass, recorded per layer: P [NL][H][L][L]; or, with mix set, layer 0's
 * maps supplied as mix (the other layers computed). A reference for per-head serving. */
typedef struct maps_hook {
    int H, L;
    float *P;         /* [NL][H][L][L] recorded */
    const float *mix; /* [H][L][L] supplied at layer 0 */
} maps_hook;

static int mh_record(void *u, const ac_attn_site *s, const float *P) {
    maps_hook *m = u;
    const size_t n = (size_t)m->H * m->L * m->L;
    memcpy(m->P + (size_t)s->layer * n, P, n * sizeof *P);
    return AC_OK;
}

static const float *mh_supply(void *u, const ac_attn_site *s) {
    const maps_hook *m = u;
    return s->layer == 0 ? m->mix : NULL;
}

/* P [NL][H][L][L] of seq's exact forward on ctx (materialised through the record hook). */
static float *record_maps(fx *f, ac_ctx *ctx, const ac_seq *seq) {
    maps_hook m = {f->NH, seq->n_tokens, calloc((size_t)f->NL * f->NH * seq->n_tokens * seq->n_tokens, 4), NULL};
    ac_attn_hook h;
    memset(&h, 0, sizeof h);
    h.user = &m;
    h.record = mh_record;
    ac_ctx_set_attn_hook(ctx, &h);
    float *x = hidden_of(f, ctx, seq, 1);
    ac_ctx_set_attn_hook(ctx, NULL);
    free(x);
    return m.P;
}

/* The exact forward of seq on f->exact given, at layer 0, head hh's map from px where mask[hh] and
 * from py elsewhere ([H][L][L] each; mix: scratch of that size): the reference a per-head serving
 * run must equal. */
static float *hidden_mixed_maps(fx *f, const ac_seq *seq, const uint8_t *mask, const float *px, const float *py,
                                float *mix) {
    const int L = seq->n_tokens;
    const size_t hm = (size_t)L * L;
    for (int hh = 0; hh < f->NH; hh++) memcpy(mix + hh * hm, (mask[hh] ? px : py) + hh * hm, hm * 4);
    maps_hook mh = {f->NH, L, NULL, mix};
    ac_attn_hook sup;
    memset(&sup, 0, sizeof sup);
    sup.user = &mh;
    sup.supply = mh_supply;
    ac_ctx_set_attn_hook(f->exact, &sup);
    float *ref = hidden_of(f, f->exact, seq, 1);
    ac_ctx_set_attn_hook(f->exact, NULL);
    return ref;
}

static int64_t heads_served(ac_cache *c, int64_t *layers) {
    ac_cache_stats st;
    ac_cache_get_stats(c, &st);
    if (layers) *layers = st.layers_served;
    return st.heads_served;
}

static void serve_heads_case(int arch) {
    fx f;
    fx_open(&f, arch);
    int32_t ids[80];
    uint64_t seed = 13;
    ref_random_tokens(&seed, ids, 80, f.V);
    const int L = 40;
    ac_seq x = {ids, L}, y = {ids + L, L}; /* x stored (f32 maps), y served x's maps */
    build(&f, &x, 1);
    const size_t n = (size_t)L * f.D, NLH = (size_t)f.NL * f.NH;
    float *ey = hidden_of(&f, f.exact, &y, 1);

    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f; /* y finds x */
    p.key = AC_KEY_MEAN;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    /* default (all): whole-site serving, every head counted */
    float *all = hidden_of(&f, f.cctx, &y, 1);
    int64_t nl = 0;
    assert_int_equal(heads_served(c, &nl), (int64_t)NLH);
    assert_int_equal(nl, f.NL);
    assert_true(max_rel(all, ey, n) > 1e-4); /* another input's maps move the output */
    uint8_t *mask = calloc(NLH, 1), *got = calloc(NLH, 1);
    /* no head served: no site served, bitwise the exact forward */
    assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
    ac_cache_reset_stats(c);
    float *h = hidden_of(&f, f.cctx, &y, 1);
    assert_memory_equal(h, ey, n * 4);
    assert_int_equal(heads_served(c, &nl), 0);
    assert_int_equal(nl, 0);
    free(h);
    /* every head (set explicitly): bitwise the whole-site serving */
    memset(mask, 1, NLH);
    assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
    h = hidden_of(&f, f.cctx, &y, 1);
    assert_memory_equal(h, all, n * 4);
    free(h);
    /* every head of layer 0 only: bitwise layer 0 served whole (layers "0") */
    memset(mask, 0, NLH);
    memset(mask, 1, (size_t)f.NH);
    assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
    float *l0 = hidden_of(&f, f.cctx, &y, 1);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    p.layers = "0";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    h = hidden_of(&f, f.cctx, &y, 1);
    assert_memory_equal(h, l0, n * 4);
    free(h);
    /* some heads of layer 0 (the even ones): those heads take x's maps, the others y's own.
     * Reference: layer 0 supplied the mixed maps (materialised path), the rest computed */
    ac_ctx *fresh = NULL; /* a context whose buffers never held this input's rows */
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(ac_ctx_new(f.m, &cp, &fresh), AC_OK);
    memset(mask, 0, NLH);
    int n_even = 0;
    for (int hh = 0; hh < f.NH; hh += 2) mask[hh] = 1, n_even++;
    assert_true(n_even < f.NH);
    assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
    assert_int_equal(ac_cache_get_serve_heads(c, got), AC_OK);
    assert_memory_equal(got, mask, NLH);
    assert_int_equal(ac_ctx_attach_cache(fresh, c), AC_OK);
    ac_cache_reset_stats(c);
    float *part = hidden_of(&f, fresh, &y, 1);
    assert_int_equal(heads_served(c, &nl), n_even);
    assert_int_equal(nl, 1);
    assert_int_equal(ac_ctx_attach_cache(fresh, NULL), AC_OK);
    float *px = record_maps(&f, f.exact, &x), *py = record_maps(&f, f.exact, &y);
    const size_t hm = (size_t)L * L;
    float *mix = malloc((size_t)f.NH * hm * 4);
    float *ref = hidden_mixed_maps(&f, &y, mask, px, py, mix);
    assert_true(max_rel(part, ref, n) < 1e-5);
    assert_true(max_rel(part, ey, n) > 1e-4); /* the served heads did move it */
    assert_true(max_rel(part, l0, n) > 1e-4); /* and it is not layer 0 served whole */
    if (f.causal) { /* with exact tail rows: the served heads' last rows computed too (x served itself) */
        assert_int_equal(ac_cache_close(c), AC_OK);
        p.exact_tail = 7;
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
        assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
        ac_ctx *fresh2 = NULL;
        assert_int_equal(ac_ctx_new(f.m, &cp, &fresh2), AC_OK);
        assert_int_equal(ac_ctx_attach_cache(fresh2, c), AC_OK);
        ac_cache_reset_stats(c);
        float *ex = hidden_of(&f, f.exact, &x, 1), *sx = hidden_of(&f, fresh2, &x, 1);
        assert_int_equal(heads_served(c, NULL), n_even);
        assert_true(max_rel(sx, ex, n) < 1e-5); /* its own f32 maps: exact up to rounding */
        free(ex), free(sx);
        ac_ctx_free(fresh2);
        p.exact_tail = 0;
    }
    free(px), free(py), free(mix), free(ref), free(part), free(l0), free(all);
    ac_ctx_free(fresh);
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* bad specs refused by name, at open */
    p = ac_cache_default_params();
    const char *bad[] = {"rank:",     "rank:-1",  "rank:99999", "0.",        "x.1",     "99.0",
                         "0.99",      "0.1;",     "rank:3/2",   "rank:2/3",  "rank:2/0", "rank:2/",
                         "rank:2/2x", "rank:/2"};
    for (int i = 0; i < 14; i++) {
        p.serve_heads = bad[i];
        c = NULL;
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
        assert_null(c);
        assert_non_null(strstr(ac_last_error(), "serve-heads"));
    }
    p.serve_heads = "rank:1"; /* no ranking yet */
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "tune --rank-heads"));
    p.serve_heads = "0.1,1.*";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_get_serve_heads(c, got), AC_OK);
    for (size_t i = 0; i < NLH; i++) assert_int_equal(got[i], i == 1 || (i >= (size_t)f.NH && i < 2 * (size_t)f.NH));
    assert_int_equal(ac_cache_close(c), AC_OK);

    /* the ranking: one entry has no neighbour (refused by name); with y stored too, x and y are
     * each other's; saved, and rank:K serves the K pairs the file lists first */
    p = ac_cache_default_params();
    p.writable = 1, p.threshold = 1e9f, p.key = AC_KEY_MEAN;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_rank_heads(c, 0, NULL, NULL), AC_ERR_CACHE);
    assert_int_equal(ac_cache_add(c, f.exact, y.tokens, y.n_tokens, NULL), AC_OK);
    assert_int_equal(ac_cache_commit(c), AC_OK);
    int np = 0;
    assert_int_equal(ac_cache_rank_heads(c, 0, NULL, &np), AC_OK);
    assert_int_equal(np, 2);
    assert_int_equal(ac_cache_close(c), AC_OK);
    char path[256];
    snprintf(path, sizeof path, "%s/head_rank.txt", f.dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[256];
    assert_non_null(fgets(line, sizeof line, fp));
    assert_non_null(fgets(line, sizeof line, fp));
    const int K = 3;
    memset(mask, 0, NLH);
    double prev = -1, *tvs = calloc(NLH, sizeof *tvs);
    for (int i = 0; i < (int)NLH; i++) {
        int l, hh;
        double tv, tm;
        assert_int_equal(fscanf(fp, "%d %d %lf %lf", &l, &hh, &tv, &tm), 4);
        tvs[(size_t)l * f.NH + hh] = tv;
        assert_true(tv >= prev && tv <= tm + 1e-12 && tm <= 1.0); /* most stable first; a mean <= its worst */
        assert_true(tv > 0);                                     /* two random inputs: every head differs */
        prev = tv;
        if (i < K) mask[(size_t)l * f.NH + hh] = 1;
    }
    fclose(fp);
    p = ac_cache_default_params();
    p.serve_heads = "rank:3";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_get_serve_heads(c, got), AC_OK);
    assert_memory_equal(got, mask, NLH);
    assert_int_equal(ac_cache_close(c), AC_OK);
    /* rank:4/2: the two pairs of adjacent heads (h / 2 equal, one layer) of least mean distance */
    const int ng = (int)NLH / 2;
    int g1 = -1, g2 = -1;
    for (int g = 0; g < ng; g++) {
        const double d = tvs[2 * g] + tvs[2 * g + 1];
        if (g1 < 0 || d < tvs[2 * g1] + tvs[2 * g1 + 1]) g2 = g1, g1 = g;
        else if (g2 < 0 || d < tvs[2 * g2] + tvs[2 * g2 + 1]) g2 = g;
    }
    memset(mask, 0, NLH);
    mask[2 * g1] = mask[2 * g1 + 1] = mask[2 * g2] = mask[2 * g2 + 1] = 1;
    p.serve_heads = "rank:4/2";
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_cache_get_serve_heads(c, got), AC_OK);
    assert_memory_equal(got, mask, NLH);
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(tvs);
    /* a ranking measured elsewhere (ac_cache_save_head_rank): saved, rank:K reads it back in its
     * order; values outside [0, 1] refused naming the head, nothing written */
    {
        double *dist = calloc(NLH, sizeof *dist);
        for (size_t i = 0; i < NLH; i++) dist[i] = 0.5 - 0.01 * (double)i; /* the last head most stable */
        p = ac_cache_default_params();
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
        assert_int_equal(ac_cache_save_head_rank(c, dist, NULL, 7), AC_OK);
        dist[1] = 1.5;
        assert_int_equal(ac_cache_save_head_rank(c, dist, NULL, 7), AC_ERR_ARG);
        assert_non_null(strstr(ac_last_error(), "layer 0 head 1"));
        dist[1] = NAN;
        assert_int_equal(ac_cache_save_head_rank(c, dist, NULL, 7), AC_ERR_ARG);
        assert_int_equal(ac_cache_save_head_rank(c, NULL, NULL, 7), AC_ERR_ARG);
        assert_int_equal(ac_cache_save_head_rank(c, dist, NULL, 0), AC_ERR_ARG);
        assert_int_equal(ac_cache_close(c), AC_OK);
        p.serve_heads = "rank:2";
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
        assert_int_equal(ac_cache_get_serve_heads(c, got), AC_OK);
        for (size_t i = 0; i < NLH; i++) assert_int_equal(got[i], i >= NLH - 2);
        assert_int_equal(ac_cache_close(c), AC_OK);
        fp = fopen(path, "r");
        assert_non_null(fp);
        int ver = 0, nl = 0, nh = 0, np2 = 0;
        assert_int_equal(fscanf(fp, "head_rank %d layers %d heads %d pairs %d", &ver, &nl, &nh, &np2), 4);
        assert_int_equal(np2, 7);
        fclose(fp);
        free(dist);
    }
    /* a damaged ranking: refused at open, naming the file */
    write_text(path, "head_rank 1\nlayers 1 heads 1 pairs 2 threshold 1\n0 0 0.5 0.5\n");
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "head_rank.txt"));
    write_text(path, "garbage");
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "head_rank.txt"));
    free(mask), free(got), free(ey);
    fx_close(&f);
}

/* Per-head serving with heads of 32 columns (MiniLM's): serving heads 0-3 of layer 0 (of 8) leaves
 * the Q projection's first two 64-column panels (and, with GQA, the K panel of K/V heads 0-1)
 * unprojected (ac_gemm_job.skip); the output equals the reference forward supplied the mixed maps
 * within 1e-5 (the reference's materialised softmax rounds differently), as when every head is
 * projected (serve_heads_case); serving heads 0 and 2 (no panel whole) agrees the same way. */
static void serve_heads_wide_case(int arch) {
    ref_spec sp = ref_spec_default(arch);
    sp.n_embd = 256, sp.n_head = 8, sp.n_head_kv = arch == AC_ARCH_BERT ? 8 : 4, sp.n_ff = 320;
    fx f;
    fx_open_spec(&f, &sp);
    assert_int_equal(f.NH, 8);
    int32_t ids[100];
    uint64_t seed = 29;
    ref_random_tokens(&seed, ids, 100, f.V);
    const int L = 50;
    ac_seq x = {ids, L}, y = {ids + L, L};
    build(&f, &x, 1);
    const size_t n = (size_t)L * f.D, NLH = (size_t)f.NL * f.NH, hm = (size_t)L * L;
    float *ey = hidden_of(&f, f.exact, &y, 1);
    float *px = record_maps(&f, f.exact, &x), *py = record_maps(&f, f.exact, &y);
    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f;
    p.key = AC_KEY_MEAN;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    uint8_t *mask = calloc(NLH, 1);
    float *mix = malloc((size_t)f.NH * hm * 4);
    const uint8_t sets[2][8] = {{1, 1, 1, 1, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0}};
    for (int k = 0; k < 2; k++) {
        memset(mask, 0, NLH);
        memcpy(mask, sets[k], 8);
        assert_int_equal(ac_cache_set_serve_heads(c, mask), AC_OK);
        ac_ctx *fresh = NULL;
        ac_ctx_params cp = ac_ctx_default_params();
        cp.n_threads = 2;
        assert_int_equal(ac_ctx_new(f.m, &cp, &fresh), AC_OK);
        assert_int_equal(ac_ctx_attach_cache(fresh, c), AC_OK);
        ac_cache_reset_stats(c);
        float *part = hidden_of(&f, fresh, &y, 1);
        int64_t nl = 0;
        assert_int_equal(heads_served(c, &nl), k == 0 ? 4 : 2);
        assert_int_equal(nl, 1);
        ac_ctx_free(fresh);
        float *ref = hidden_mixed_maps(&f, &y, mask, px, py, mix);
        assert_true(max_rel(part, ref, n) < 1e-5);
        assert_true(max_rel(part, ey, n) > 1e-4); /* the served heads did move it */
        free(part), free(ref);
    }
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(mask), free(mix), free(px), free(py), free(ey);
    fx_close(&f);
}

static void test_serve_heads_wide(void **st) {
    (void)st;
    serve_heads_wide_case(AC_ARCH_BERT);
    serve_heads_wide_case(AC_ARCH_LLAMA);
}

/* A longer bidirectional entry (allow_longer) serves through its first L columns renormalised; when
 * it ends with the query's last token (an encoder's [SEP]) that token is aligned: the query's last
 * row is the entry's last row and its last column the entry's last column (then renormalised). Both
 * equal a reference forward supplied exactly those maps at layer 0 (layers "0") within 1e-5, and
 * the two differ. */
static void test_longer_end_aligned(void **st) {
    (void)st;
    fx f;
    fx_open(&f, AC_ARCH_BERT);
    int32_t ids[80];
    uint64_t seed = 41;
    ref_random_tokens(&seed, ids, 80, f.V);
    const int Le = 50, L = 30;
    ac_seq x = {ids, Le};
    build(&f, &x, 1);
    float *px = record_maps(&f, f.exact, &x); /* [NL][H][Le][Le] */
    const size_t hm = (size_t)L * L, n = (size_t)L * f.D;
    float *mix = malloc((size_t)f.NH * hm * 4), *out[2];
    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f, p.key = AC_KEY_MEAN, p.layers = "0", p.allow_longer = 1;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    for (int aligned = 0; aligned < 2; aligned++) {
        int32_t q[30];
        memcpy(q, ids + Le, sizeof q);
        q[L - 1] = aligned ? ids[Le - 1] : (ids[Le - 1] + 1) % f.V;
        ac_seq y = {q, L};
        assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
        ac_cache_reset_stats(c);
        out[aligned] = hidden_of(&f, f.cctx, &y, 1);
        int64_t nl = 0;
        heads_served(c, &nl);
        assert_int_equal(nl, 1);
        assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
        for (int h = 0; h < f.NH; h++)
            for (int t = 0; t < L; t++) {
                const int src = aligned && t == L - 1 ? Le - 1 : t;
                const float *r = px + ((size_t)h * Le + src) * Le; /* layer 0 */
                float *m = mix + h * hm + (size_t)t * L;
                double sum = 0;
                for (int j = 0; j < L; j++) sum += (m[j] = aligned && j == L - 1 ? r[Le - 1] : r[j]);
                for (int j = 0; j < L; j++) m[j] = (float)(m[j] / sum);
            }
        maps_hook mh = {f.NH, L, NULL, mix};
        ac_attn_hook sup;
        memset(&sup, 0, sizeof sup);
        sup.user = &mh;
        sup.supply = mh_supply;
        ac_ctx_set_attn_hook(f.exact, &sup);
        float *ref = hidden_of(&f, f.exact, &y, 1);
        ac_ctx_set_attn_hook(f.exact, NULL);
        assert_true(max_rel(out[aligned], ref, n) < 1e-5);
        free(ref);
    }
    assert_true(max_rel(out[0], out[1], n) > 1e-4); /* (their last tokens differ too) */
    assert_int_equal(ac_cache_close(c), AC_OK);
    free(out[0]), free(out[1]), free(mix), free(px);
    fx_close(&f);
}

static void test_verify_rows(void **st) {
    (void)st;
    int rows[8];
    assert_int_equal(ac_verify_pick_rows(10, 1, 4, rows), 4);
    assert_int_equal(rows[0], 9); /* causal: the answer row first */
    assert_int_equal(ac_verify_pick_rows(10, 0, 4, rows), 4);
    assert_int_equal(rows[0], 0); /* encoder: [CLS] first */
    for (int causal = 0; causal < 2; causal++)
        for (int L = 1; L < 30; L++) {
            const int n = ac_verify_pick_rows(L, causal, 8, rows);
            assert_int_equal(n, L < 8 ? L : 8);
            for (int i = 0; i < n; i++) {
                assert_true(rows[i] >= 0 && rows[i] < L);
                for (int j = 0; j < i; j++) assert_true(rows[i] != rows[j]);
            }
        }
}

/* ---- 5. the confidence gate (ac_cache_params.recheck_margin) ----------------------------------- */

/* cls [n][n_cls] of seqs through ctx; hidden (optional) [sum L][D] */
static void cls_of(ac_ctx *ctx, const ac_seq *s, int n, float *cls, float *hidden) {
    ac_outputs o = {0};
    o.cls = cls, o.hidden = hidden;
    assert_int_equal(ac_forward(ctx, s, n, &o), AC_OK);
}

static int argmax_of(const float *z, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (z[i] > z[b]) b = i;
    return b;
}

/* softmax top-1 minus top-2 probability, as the gate measures it */
static double margin_of(const float *z, int n) {
    double p[8], s = 0, t1 = 0, t2 = 0;
    for (int i = 0; i < n; i++) s += (p[i] = exp((double)z[i]));
    for (int i = 0; i < n; i++) {
        const double q = p[i] / s;
        if (q > t1) t2 = t1, t1 = q;
        else if (q > t2) t2 = q;
    }
    return t1 - t2;
}

/* A query whose answer the served maps flip: the gate at any margin above its cached margin
 * computes it again and answers exactly (bitwise the exact forward, hidden states too), also
 * inside a batch next to a confident served query (left as served) and with no cls asked for;
 * below the margin nothing is recomputed; the count is kept; bad margins and a model without
 * a classifier head are refused by name. */
static void recheck_case(int arch) {
    fx f;
    ref_spec spec = ref_spec_default(arch);
    const int NC = arch == AC_ARCH_BERT ? 2 : 3;
    spec.n_cls = NC;
    fx_open_spec(&f, &spec);
    enum { L = 24, NQ = 48 };
    int32_t ids[3 * L + NQ * L];
    uint64_t seed = 31;
    ref_random_tokens(&seed, ids, 3 * L + NQ * L, f.V);
    ac_seq s[3] = {{ids, L}, {ids + L, L}, {ids + 2 * L, L}};
    build(&f, s, 3);
    ac_cache_params p = ac_cache_default_params();
    p.threshold = 1e9f, p.key = AC_KEY_MEAN, p.adapt_floor = 0;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    /* the flipped query (lowest cached margin among those whose answer changes) and a confident one */
    float ze[NC], zc[NC], zflip[NC], zconf[NC];
    int flip = -1, conf = -1;
    double mflip = 2, mconf = -1;
    for (int q = 0; q < NQ; q++) {
        ac_seq x = {ids + 3 * L + q * L, L};
        cls_of(f.exact, &x, 1, ze, NULL);
        cls_of(f.cctx, &x, 1, zc, NULL);
        const double mc = margin_of(zc, NC);
        if (argmax_of(ze, NC) != argmax_of(zc, NC) && mc < mflip) flip = q, mflip = mc, memcpy(zflip, zc, sizeof zc);
        if (argmax_of(ze, NC) == argmax_of(zc, NC) && mc > mconf) conf = q, mconf = mc, memcpy(zconf, zc, sizeof zc);
    }
    assert_true(flip >= 0 && conf >= 0); /* the served maps change some answer */
    assert_true(mconf > mflip);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    ac_seq xf = {ids + 3 * L + flip * L, L}, xc = {ids + 3 * L + conf * L, L};
    float *he = malloc((size_t)L * f.D * 4), *hb = malloc((size_t)2 * L * f.D * 4);
    cls_of(f.exact, &xf, 1, ze, he);
    /* 1. below the flipped query's margin: nothing recomputed, the served answer stays */
    p.recheck_margin = (float)(mflip * 0.5);
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    cls_of(f.cctx, &xf, 1, zc, NULL);
    assert_memory_equal(zc, zflip, sizeof zc);
    ac_cache_stats st;
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.rechecked, 0);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    /* 2. between the two margins: the flipped query is computed again, its exact answer back */
    p.recheck_margin = (float)(0.5 * (mflip + mconf));
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_OK);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, c), AC_OK);
    float *h1 = malloc((size_t)L * f.D * 4);
    cls_of(f.cctx, &xf, 1, zc, h1);
    assert_memory_equal(zc, ze, sizeof zc);
    assert_int_equal(argmax_of(zc, NC), argmax_of(ze, NC));
    assert_memory_equal(h1, he, (size_t)L * f.D * 4);
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.rechecked, 1);
    /* in a batch, after the confident query: only the flipped one is recomputed; both rows in place */
    ac_seq b[2] = {xc, xf};
    float zb[2 * NC];
    cls_of(f.cctx, b, 2, zb, hb);
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.rechecked, 2);
    assert_memory_equal(zb + NC, ze, sizeof ze);
    assert_memory_equal(hb + (size_t)L * f.D, he, (size_t)L * f.D * 4);
    for (int i = 0; i < NC; i++) assert_true(fabsf(zb[i] - zconf[i]) <= 1e-4f * (1 + fabsf(zconf[i])));
    /* no cls asked for: the gate still reads them and recomputes */
    ac_outputs o = {0};
    o.hidden = h1;
    assert_int_equal(ac_forward(f.cctx, &xf, 1, &o), AC_OK);
    assert_memory_equal(h1, he, (size_t)L * f.D * 4);
    ac_cache_get_stats(c, &st);
    assert_int_equal(st.rechecked, 3);
    assert_int_equal(ac_ctx_attach_cache(f.cctx, NULL), AC_OK);
    assert_int_equal(ac_cache_close(c), AC_OK);
    /* 3. bad margins */
    const float bad[3] = {-0.1f, 1.5f, NAN};
    for (int i = 0; i < 3; i++) {
        p.recheck_margin = bad[i];
        assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
        assert_non_null(strstr(ac_last_error(), "recheck_margin must be in [0, 1]"));
    }
    free(he), free(hb), free(h1);
    fx_close(&f);
    /* 4. a model without a classifier head */
    spec.n_cls = 0;
    fx_open_spec(&f, &spec);
    build(&f, s, 1);
    p.recheck_margin = 0.1f;
    assert_int_equal(ac_cache_open(f.m, f.dir, &p, &c), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "recheck_margin needs a model with a classifier head"));
    fx_close(&f);
}

/* The cases run once per architecture, as test_<case>_llama and test_<case>_bert: cmocka hands
 * each its architecture as the initial state. */
static int g_llama = AC_ARCH_LLAMA, g_bert = AC_ARCH_BERT;
static void test_cache(void **st) { through_cache(*(const int *)*st); }
static void test_verify(void **st) { verification(*(const int *)*st); }
static void test_exact_from(void **st) { exact_from_case(*(const int *)*st); }
static void test_serve_heads(void **st) { serve_heads_case(*(const int *)*st); }
static void test_recheck(void **st) { recheck_case(*(const int *)*st); }
#define PER_ARCH(fn) {#fn "_llama", fn, NULL, NULL, &g_llama}, {#fn "_bert", fn, NULL, NULL, &g_bert}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel),
        PER_ARCH(test_cache),
        cmocka_unit_test(test_verify_rows),
        PER_ARCH(test_verify),
        PER_ARCH(test_exact_from),
        PER_ARCH(test_serve_heads),
        cmocka_unit_test(test_serve_heads_wide),
        cmocka_unit_test(test_longer_end_aligned),
        PER_ARCH(test_recheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
