/* test_cache_projector.c — the feature projector learns a distance it is
 * shown, beats an untrained projector, survives save/load, and rejects
 * damaged files; its int8 lookup GEMV (q8mat) gives the same integers, codes
 * and keys at every CPU level, extreme codes included. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/projector.h"
#include "cache/q8mat.h"
#include "util/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "levels.h"

enum { N = 400, IN = 48, LAT = 4, NP = 3000 };

static uint64_t rs = 7;
static double urand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rs >> 11) / 9007199254740992.0;
}

/* X: rows with a hidden LAT-dim structure; target = distance in the latent
 * space under a fixed random map A (what the projector must discover among
 * IN-LAT distracting noise dimensions of larger variance). */
static void make_data(float *X, ac_proj_pair *pairs) {
    static float lat[N][LAT];
    for (int r = 0; r < N; r++) {
        for (int k = 0; k < LAT; k++) lat[r][k] = (float)(2 * urand() - 1);
        for (int i = 0; i < IN; i++) {
            float v = (float)(3.0 * (2 * urand() - 1)); /* noise */
            if (i < LAT) v = lat[r][i] * 0.5f + 5.0f;   /* signal, offset and scaled */
            X[r * IN + i] = v;
        }
    }
    for (int p = 0; p < NP; p++) {
        int a = (int)(urand() * N), b = (int)(urand() * N);
        if (a == b) b = (a + 1) % N;
        double s = 0;
        for (int k = 0; k < LAT; k++) s += (lat[a][k] - lat[b][k]) * (lat[a][k] - lat[b][k]);
        pairs[p] = (ac_proj_pair){a, b, (float)sqrt(s)};
    }
}

static void learns_distance(void) {
    float *X = malloc(sizeof(float) * N * IN);
    ac_proj_pair *pairs = malloc(sizeof *pairs * NP);
    make_data(X, pairs);
    ac_projector *p = NULL, *untrained = NULL;
    assert_int_equal(ac_proj_new(IN, 64, 16, 3, &p), AC_OK);
    assert_int_equal(ac_proj_new(IN, 64, 16, 3, &untrained), AC_OK);
    /* the baseline: best constant prediction (mean target) */
    double tmean = 0, const_mae = 0;
    for (int i = 0; i < NP; i++) tmean += pairs[i].target;
    tmean /= NP;
    for (int i = 0; i < NP; i++) const_mae += fabs(pairs[i].target - tmean);
    const_mae /= NP;
    ac_proj_train_params tp = ac_proj_default_train_params();
    tp.epochs = 40;
    tp.lr = 3e-3f;
    double loss = -1;
    /* train on the first 2500 pairs, evaluate on the held-out 500 */
    assert_int_equal(ac_proj_train(p, X, N, pairs, 2500, &tp, &loss), AC_OK);
    assert_true(loss >= 0 && isfinite(loss));
    double mae = ac_proj_eval_mae(p, X, pairs + 2500, NP - 2500);
    double mae0 = ac_proj_eval_mae(untrained, X, pairs + 2500, NP - 2500);
    print_message("held-out MAE: trained %.4f, untrained %.4f, constant %.4f\n", mae, mae0, const_mae);
    assert_true(mae < 0.5 * const_mae);
    assert_true(mae < 0.2 * mae0);
    ac_proj_free(p);
    ac_proj_free(untrained);
    free(X);
    free(pairs);
}

/* Training's f32 GEMVs sum in a different order per level (kernels.h): each
 * level trains its own, equally good, projector. */
static void test_learns_distance(void **state) {
    (void)state;
    print_message("level %s: ", ac_cpu_level_name(ac_cpu_level()));
    rs = 7;
    learns_distance();
}

static void test_save_load(void **state) {
    (void)state;
    ac_projector *p = NULL, *q = NULL;
    assert_int_equal(ac_proj_new(IN, 32, 8, 11, &p), AC_OK);
    p->trained_on = 0xF234567890ABCDEFULL; /* above INT64_MAX */
    char path[] = "/tmp/ac_proj_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ac_proj_save(p, path), AC_OK);
    assert_int_equal(ac_proj_load(path, &q), AC_OK);
    assert_int_equal(q->in_dim, IN);
    assert_int_equal(q->out_dim, 8);
    assert_true(q->trained_on == p->trained_on);
    assert_true(ac_proj_fingerprint(p) == ac_proj_fingerprint(q));
    float x[IN], z1[8], z2[8];
    for (int i = 0; i < IN; i++) x[i] = (float)urand();
    ac_proj_apply(p, x, 1, z1);
    ac_proj_apply(q, x, 1, z2);
    assert_memory_equal(z1, z2, sizeof z1);
    ac_proj_free(q);
    q = NULL;

    /* truncated file: a clear error, no crash */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, sz / 2), 0);
    int rc = ac_proj_load(path, &q);
    assert_int_not_equal(rc, AC_OK);
    assert_null(q);
    assert_non_null(strstr(ac_last_error(), "loading projector"));
    /* not a projector: a different architecture */
    assert_int_not_equal(ac_proj_load("/nonexistent/proj.gguf", &q), AC_OK);
    unlink(path);
    ac_proj_free(p);
}

/* The lookup key (int8 weights, blocked layout, padded shapes) equals
 * ac_proj_apply bitwise, stays close to the f32 network, and follows
 * ac_proj_pack after a change of the weights. */
static void ref_key(const ac_projector *p, const float *x, float *z) {
    float h[64];
    for (int r = 0; r < p->hidden; r++) {
        double a = p->b1[r];
        for (int i = 0; i < p->in_dim; i++) a += (double)p->w1[(size_t)r * p->in_dim + i] * ((x[i] - p->mu[i]) * p->isig[i]);
        h[r] = a > 0 ? (float)a : 0.0f;
    }
    for (int o = 0; o < p->out_dim; o++) {
        double a = p->b2[o];
        for (int r = 0; r < p->hidden; r++) a += (double)p->w2[(size_t)o * p->hidden + r] * h[r];
        z[o] = (float)a;
    }
}

static void lookup_key(void) {
    const int in = 37, hid = 30, out = 7; /* none a multiple of 4 or 32: padding paths */
    ac_projector *p = NULL;
    assert_int_equal(ac_proj_new(in, hid, out, 5, &p), AC_OK);
    for (int i = 0; i < in; i++) p->mu[i] = 0.1f * (float)(i % 5), p->isig[i] = 0.5f + 0.05f * (float)(i % 7);
    for (int r = 0; r < hid; r++) p->b1[r] = 0.01f * (float)(r % 3);
    assert_int_equal(ac_proj_pack(p), AC_OK);
    for (int t = 0; t < 20; t++) {
        float x[37], za[7], zk[7], zr[7];
        for (int i = 0; i < in; i++) x[i] = (float)(2 * urand() - 1);
        assert_int_equal(ac_proj_apply(p, x, 1, za), AC_OK);
        assert_int_equal(ac_proj_key(p, x, zk), AC_OK);
        assert_memory_equal(za, zk, sizeof za); /* one function for stored and query keys */
        ref_key(p, x, zr);
        double e = 0, n = 0;
        for (int o = 0; o < out; o++) e += (za[o] - zr[o]) * (double)(za[o] - zr[o]), n += zr[o] * (double)zr[o];
        if (t == 0) printf("  lookup key vs f32 network: relative error %.4f\n", sqrt(e / n));
        assert_true(sqrt(e / n) < 0.04); /* int8 weights x uint8 activations: ~1% (1.1% on the SST-2 projector) */
    }
    /* weights changed by hand: the key follows after ac_proj_pack */
    float x[37], z0[7], z1[7];
    for (int i = 0; i < in; i++) x[i] = (float)i / in;
    assert_int_equal(ac_proj_key(p, x, z0), AC_OK);
    for (int o = 0; o < out; o++) p->b2[o] += 1.0f; /* biases stay f32: seen at once */
    for (size_t i = 0; i < (size_t)out * hid; i++) p->w2[i] *= 2.0f;
    assert_int_equal(ac_proj_pack(p), AC_OK);
    assert_int_equal(ac_proj_key(p, x, z1), AC_OK);
    float zr[7];
    ref_key(p, x, zr);
    for (int o = 0; o < out; o++) {
        assert_true(fabsf(z1[o] - z0[o]) > 0.5f);
        assert_true(fabsf(z1[o] - zr[o]) < 0.05f * (1 + fabsf(zr[o])));
    }
    ac_proj_free(p);
    /* wider than the int8 GEMV's int32 sums allow: no lookup copy, f32 keys */
    assert_int_equal(ac_proj_new(AC_Q8MAT_MAX_COLS + 1, 8, 4, 3, &p), AC_OK);
    assert_null(p->k1.w);
    float *xw = calloc(AC_Q8MAT_MAX_COLS + 1, sizeof *xw), zw[4], zw2[4];
    xw[7] = 1.0f;
    assert_int_equal(ac_proj_key(p, xw, zw), AC_OK);
    assert_int_equal(ac_proj_apply(p, xw, 1, zw2), AC_OK);
    assert_memory_equal(zw, zw2, sizeof zw);
    free(xw);
    ac_proj_free(p);
}

static void test_lookup_key(void **state) {
    (void)state;
    lookup_key();
}

/* The lookup key is bitwise the same at every level: equal codes, exact
 * integer dot products, then the same f32 epilogue. */
static void test_key_across_levels(void **state) {
    (void)state;
    const int in = 1537, hid = 256, out = 128; /* the SST-2 projector's shape */
    ac_projector *p = NULL;
    assert_int_equal(ac_proj_new(in, hid, out, 9, &p), AC_OK);
    for (int i = 0; i < in; i++) p->mu[i] = 0.01f * (float)(i % 11), p->isig[i] = 0.5f + 0.1f * (float)(i % 7);
    float *x = malloc(sizeof(float) * in), z[3][128];
    const int top = levels_top();
    for (int t = 0; t < 10; t++) {
        for (int i = 0; i < in; i++) x[i] = (float)(4 * urand() - 2);
        for (int lv = top; lv >= 0; lv--) {
            levels_enter(lv);
            assert_int_equal(ac_proj_key(p, x, z[lv]), AC_OK);
            if (lv < top) assert_memory_equal(z[lv], z[top], sizeof z[0]);
        }
    }
    levels_leave();
    free(x);
    ac_proj_free(p);
}

/* A batch of keys (ac_proj_keys: the GPU's lookups of one call, each weight
 * block read once for all of them) is bitwise the keys of ac_proj_key one by
 * one, at every level: the SST-2 shape with 64 queries (the threaded GEMM),
 * padding shapes, one query, and an unpacked (f32) projector. */
static void keys_case(ac_projector *p, int n) {
    float *x = malloc(sizeof(float) * (size_t)n * p->in_dim), *zb = malloc(sizeof(float) * (size_t)n * p->out_dim),
          *z1 = malloc(sizeof(float) * p->out_dim);
    for (size_t i = 0; i < (size_t)n * p->in_dim; i++) x[i] = (float)(4 * urand() - 2);
    const int top = levels_top();
    for (int lv = top; lv >= 0; lv--) {
        levels_enter(lv);
        assert_int_equal(ac_proj_keys(p, x, n, zb), AC_OK);
        for (int i = 0; i < n; i++) {
            assert_int_equal(ac_proj_key(p, x + (size_t)i * p->in_dim, z1), AC_OK);
            assert_memory_equal(zb + (size_t)i * p->out_dim, z1, sizeof(float) * p->out_dim);
        }
    }
    levels_leave();
    free(x), free(zb), free(z1);
}

static void test_keys_batch(void **state) {
    (void)state;
    ac_projector *p = NULL;
    assert_int_equal(ac_proj_new(1537, 256, 128, 11, &p), AC_OK);
    for (int i = 0; i < p->in_dim; i++) p->mu[i] = 0.01f * (float)(i % 11), p->isig[i] = 0.5f + 0.1f * (float)(i % 7);
    keys_case(p, 64);
    keys_case(p, 1);
    ac_proj_free(p);
    assert_int_equal(ac_proj_new(37, 30, 7, 5, &p), AC_OK); /* padding paths */
    keys_case(p, 9);
    ac_proj_free(p);
    assert_int_equal(ac_proj_new(AC_Q8MAT_MAX_COLS + 1, 8, 4, 3, &p), AC_OK); /* unpacked: f32 keys */
    assert_null(p->k1.w);
    keys_case(p, 3);
    ac_proj_free(p);
    float z[4];
    assert_int_equal(ac_proj_keys(NULL, z, 1, z), AC_ERR_ARG);
}

/* y of ac_q8mat_gemv with sx = scale = 1 and b = NULL is the integer dot
 * product itself; reference in int64 from the float codes. */
static void q8_case(const float *W, int rows, int cols, const uint8_t *x8, int off, const char *what) {
    ac_q8mat m;
    assert_int_equal(ac_q8mat_pack(W, rows, cols, &m), AC_OK);
    float *y[3];
    const int top = levels_top();
    for (int lv = top; lv >= 0; lv--) {
        levels_enter(lv);
        y[lv] = malloc(sizeof(float) * rows);
        ac_q8mat_gemv(&m, NULL, x8, 1.0f, off, y[lv], 0);
        if (lv < top) assert_memory_equal(y[lv], y[top], sizeof(float) * rows);
    }
    levels_leave();
    for (int r = 0; r < rows; r++) {
        int64_t ref = 0; /* codes: W[r][i] / scale[r] rounded, as the pack */
        for (int i = 0; i < cols; i++)
            ref += (int64_t)((int)x8[i] - off) * (int64_t)lrintf(W[(size_t)r * cols + i] / m.scale[r]);
        const double want = (double)m.scale[r] * (double)ref;
        if (!(fabs(y[top][r] - want) <= 1e-6 * fabs(want) + 1e-6))
            fail_msg("%s: row %d: gemv %.9g, exact %.9g", what, r, (double)y[top][r], want);
    }
    for (int lv = top; lv >= 0; lv--) free(y[lv]);
    ac_q8mat_free(&m);
}

/* Extreme codes: weights +-127 against activations 255 make every
 * vpmaddubsw-style int16 pair sum (2 x 255 x 127 = 64770) overflow; the
 * widest matrix (AC_Q8MAT_MAX_COLS) puts the int32 sums near 2^31. */
static void test_q8mat_extremes(void **state) {
    (void)state;
    const int cols = AC_Q8MAT_MAX_COLS, rows = 5;
    float *W = malloc(sizeof(float) * rows * cols);
    uint8_t *x8 = malloc((size_t)cols);
    for (int i = 0; i < cols; i++) {
        W[i] = 1.0f;                             /* +127 everywhere */
        W[cols + i] = -1.0f;                     /* -127 */
        W[2 * cols + i] = (i & 1) ? 1.0f : -1.0f; /* alternating */
        W[3 * cols + i] = (float)(2 * urand() - 1);
        W[4 * cols + i] = (i % 3) ? 1.0f : -0.5f;
    }
    memset(x8, 255, (size_t)cols);
    q8_case(W, rows, cols, x8, 0, "x8 = 255");
    q8_case(W, rows, cols, x8, 128, "x8 = 255, off 128");
    memset(x8, 0, (size_t)cols);
    q8_case(W, rows, cols, x8, 128, "x8 = 0, off 128");
    for (int i = 0; i < cols; i++) x8[i] = (uint8_t)(urand() * 256);
    q8_case(W, rows, cols, x8, 0, "random x8");
    for (int c = 1; c <= 130; c += 43) { /* short, padded rows */
        for (int i = 0; i < c; i++) x8[i] = (uint8_t)(i & 1 ? 255 : 3);
        q8_case(W + 2 * cols, 3, c, x8, 128, "short rows");
    }
    free(W);
    free(x8);
}

/* The activation codes are equal at every level: ties at .5 round to even,
 * clamping at both ends, lengths off the vector widths. */
static void test_q8_codes_across_levels(void **state) {
    (void)state;
    const int top = levels_top();
    for (int n = 1; n <= 300; n += 13) {
        const int ld = (n + 63) & ~63;
        float *x = malloc(sizeof(float) * n);
        uint8_t *c[3];
        for (int nonneg = 0; nonneg < 2; nonneg++) {
            for (int i = 0; i < n; i++) /* halves: many exact ties once scaled */
                x[i] = (float)((int)(urand() * 64) - (nonneg ? 0 : 32)) * 0.5f;
            x[n / 2] = nonneg ? 31.5f : -31.5f;
            float sx[3];
            for (int lv = top; lv >= 0; lv--) {
                levels_enter(lv);
                c[lv] = malloc((size_t)ld);
                sx[lv] = ac_q8_quant_u8(x, n, ld, nonneg, c[lv]);
                if (lv < top) {
                    assert_true(sx[lv] == sx[top]);
                    assert_memory_equal(c[lv], c[top], (size_t)ld);
                }
            }
            for (int i = 0; i < n; i++) { /* against lrintf */
                const float lim = nonneg ? 255.0f : 127.0f, v = x[i] * (1.0f / sx[top]);
                assert_int_equal(c[top][i], (int)lrintf(fminf(lim, fmaxf(-lim, v))) + (nonneg ? 0 : 128));
            }
            for (int lv = top; lv >= 0; lv--) free(c[lv]);
        }
        free(x);
    }
    levels_leave();
}

static void test_bad_args(void **state) {
    (void)state;
    ac_projector *p = NULL;
    assert_int_equal(ac_proj_new(0, 8, 8, 1, &p), AC_ERR_ARG);
    assert_int_equal(ac_proj_new(8, 8, 8, 1, &p), AC_OK);
    float X[16] = {0};
    ac_proj_pair bad = {0, 5, 1.0f};
    assert_int_equal(ac_proj_train(p, X, 2, &bad, 1, NULL, NULL), AC_ERR_ARG);
    ac_proj_pair nanp = {0, 1, NAN};
    assert_int_equal(ac_proj_train(p, X, 2, &nanp, 1, NULL, NULL), AC_ERR_ARG);
    ac_proj_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_distance),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_lookup_key),
        cmocka_unit_test(test_key_across_levels),
        cmocka_unit_test(test_keys_batch),
        cmocka_unit_test(test_q8mat_extremes),
        cmocka_unit_test(test_q8_codes_across_levels),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
