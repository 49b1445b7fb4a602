/* test_server_batcher.c — the server's dynamic batcher (tools/server/batcher.c)
 * on the real MiniLM: results of batched sequences equal one-at-a-time
 * forwards; a bad sequence in a batch fails alone (per-sequence status); many
 * client threads at once under a small token budget all get their own
 * results. Skips when models-cache/all-MiniLM-L6-v2-f32.gguf is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "batcher.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f32.gguf"

static ac_model *g_model;
static int g_dim;

static int setup(void **state) {
    (void)state;
    if (access(MODEL, R_OK) != 0) return 0;
    ac_model_params mp = ac_model_default_params();
    if (ac_model_load(MODEL, &mp, &g_model) != AC_OK) return -1;
    ac_model_info info;
    ac_model_get_info(g_model, &info);
    g_dim = info.n_embd;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ac_model_free(g_model);
    return 0;
}

static srv_batcher *new_batcher(int workers, int max_tokens, int max_seqs) {
    srv_batcher_params p = {0};
    p.workers = workers;
    p.threads = 1;
    p.max_batch_tokens = max_tokens;
    p.max_batch_seqs = max_seqs;
    p.pooling = AC_POOL_DEFAULT;
    srv_batcher *b = NULL;
    assert_int_equal(srv_batcher_new(g_model, &p, &b), AC_OK);
    return b;
}

/* tokens of a text (with specials), malloc'd */
static int32_t *toks(const char *text, int *n) {
    int32_t *ids = malloc(512 * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(ac_tokenize(g_model, text, strlen(text), 1, ids, 512, n), AC_OK);
    return ids;
}

/* the pooled embedding of one sequence alone on a fresh context */
static void reference(const int32_t *ids, int n, float *out) {
    ac_ctx *ctx;
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = 1;
    assert_int_equal(ac_ctx_new(g_model, &cp, &ctx), AC_OK);
    ac_seq s = {ids, n};
    ac_outputs o = {0};
    o.pooled = out;
    o.pooling = AC_POOL_DEFAULT;
    assert_int_equal(ac_forward(ctx, &s, 1, &o), AC_OK);
    ac_ctx_free(ctx);
}

static double cosine(const float *a, const float *b, int d) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < d; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb);
}

static const char *texts[] = {
    "The cat sat on the mat.",
    "A man is playing a guitar on a small stage in front of a quiet crowd.",
    "Quantum computers use qubits.",
    "hello",
    "Stocks rallied on Friday after the central bank held interest rates steady for a third month.",
    "Le café est très bon.",
};
#define N_TEXTS ((int)(sizeof texts / sizeof texts[0]))

static void test_bad_sequence_fails_alone(void **state) {
    (void)state;
    if (!g_model) skip();
    srv_batcher *b = new_batcher(1, 4096, 64);
    int n0, n2;
    int32_t *t0 = toks(texts[0], &n0), *t2 = toks(texts[2], &n2);
    int32_t bad[4] = {101, 7592, 999999, 102}; /* a token id past the vocabulary */
    int32_t *tk[3] = {t0, bad, t2};
    int nt[3] = {n0, 4, n2}, st[3] = {-100, -100, -100};
    char err[3][SRV_ERR_LEN] = {{0}};
    float *out = calloc((size_t)3 * g_dim, sizeof *out), *ref = malloc((size_t)g_dim * sizeof *ref);
    srv_job j = {0};
    j.kind = SRV_JOB_EMBED;
    j.n = 3;
    j.tokens = tk;
    j.n_tokens = nt;
    j.out = out;
    j.status = st;
    j.err = err;
    assert_int_equal(srv_batcher_run(b, &j), AC_OK);
    assert_int_equal(st[0], AC_OK);
    assert_int_equal(st[1], AC_ERR_INPUT);
    assert_non_null(strstr(err[1], "999999"));
    assert_int_equal(st[2], AC_OK);
    reference(t0, n0, ref);
    assert_true(cosine(out, ref, g_dim) > 0.99999);
    reference(t2, n2, ref);
    assert_true(cosine(out + 2 * g_dim, ref, g_dim) > 0.99999);
    free(t0);
    free(t2);
    free(out);
    free(ref);
    srv_batcher_free(b);
}

typedef struct client {
    srv_batcher *b;
    int id, failures;
} client;

static float *g_ref; /* [N_TEXTS][dim] */
static int32_t *g_tok[N_TEXTS];
static int g_ntok[N_TEXTS];

static void *client_main(void *arg) {
    client *c = arg;
    float *out = malloc((size_t)3 * g_dim * sizeof *out);
    for (int r = 0; r < 12; r++) {
        int n = 1 + (c->id + r) % 3, which[3], st[3], nt[3];
        int32_t *tk[3];
        char err[3][SRV_ERR_LEN];
        for (int i = 0; i < n; i++) {
            which[i] = (c->id * 7 + r * 3 + i) % N_TEXTS;
            tk[i] = g_tok[which[i]];
            nt[i] = g_ntok[which[i]];
        }
        srv_job j = {0};
        j.kind = SRV_JOB_EMBED;
        j.n = n;
        j.tokens = tk;
        j.n_tokens = nt;
        j.out = out;
        j.status = st;
        j.err = err;
        if (srv_batcher_run(c->b, &j) != AC_OK) c->failures++;
        for (int i = 0; i < n; i++)
            if (st[i] != AC_OK || cosine(out + (size_t)i * g_dim, g_ref + (size_t)which[i] * g_dim, g_dim) < 0.99999)
                c->failures++;
    }
    free(out);
    return NULL;
}

/* 8 client threads, 2 workers, a budget of 48 tokens / 3 sequences per batch: every
 * client gets its own sequences' embeddings back */
static void test_many_clients(void **state) {
    (void)state;
    if (!g_model) skip();
    g_ref = malloc((size_t)N_TEXTS * g_dim * sizeof *g_ref);
    for (int i = 0; i < N_TEXTS; i++) {
        g_tok[i] = toks(texts[i], &g_ntok[i]);
        assert_true(g_ntok[i] <= 48);
        reference(g_tok[i], g_ntok[i], g_ref + (size_t)i * g_dim);
    }
    srv_batcher *b = new_batcher(2, 48, 3);
    pthread_t th[8];
    client cl[8];
    for (int i = 0; i < 8; i++) {
        cl[i] = (client){b, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        failures += cl[i].failures;
    }
    assert_int_equal(failures, 0);
    int64_t qs, qt;
    srv_batcher_depth(b, &qs, &qt);
    assert_int_equal(qs, 0);
    assert_int_equal(qt, 0);
    srv_batcher_free(b);
    for (int i = 0; i < N_TEXTS; i++) free(g_tok[i]);
    free(g_ref);
}

/* a job bigger than one batch's budget is split over batches and still complete */
static void test_job_larger_than_budget(void **state) {
    (void)state;
    if (!g_model) skip();
    srv_batcher *b = new_batcher(1, 20, 2);
    enum { N = 7 };
    int32_t *tk[N];
    int nt[N], st[N];
    char err[N][SRV_ERR_LEN];
    float *out = malloc((size_t)N * g_dim * sizeof *out), *ref = malloc((size_t)g_dim * sizeof *ref);
    for (int i = 0; i < N; i++) tk[i] = toks(texts[i % N_TEXTS], &nt[i]);
    srv_job j = {0};
    j.kind = SRV_JOB_EMBED;
    j.n = N;
    j.tokens = tk;
    j.n_tokens = nt;
    j.out = out;
    j.status = st;
    j.err = err;
    assert_int_equal(srv_batcher_run(b, &j), AC_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(st[i], AC_OK);
        reference(tk[i], nt[i], ref);
        assert_true(cosine(out + (size_t)i * g_dim, ref, g_dim) > 0.99999);
        free(tk[i]);
    }
    free(out);
    free(ref);
    srv_batcher_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_sequence_fails_alone),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_job_larger_than_budget),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
