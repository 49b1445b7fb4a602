/* test_cache_projector.c — the feature projector learns a distance it is
 * shown, beats an untrained projector, survives save/load, and rejects
 * damaged files. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/projector.h"
#include "util/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static void test_learns_distance(void **state) {
    (void)state;
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

static void test_lookup_key(void **state) {
    (void)state;
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
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
