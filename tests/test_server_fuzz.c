/* test_server_fuzz.c — a bounded fuzz pass over the server's JSON handlers
 * (tools/server/routes.c) on the real MiniLM with its SST-2 head: valid
 * request bodies of every POST route, mutated (bytes flipped, inserted,
 * deleted, cut, spliced with JSON tokens and invalid UTF-8) and generated from
 * a small JSON grammar with wrong types, are handled; every answer must be
 * 200 or a client error (400/413/422), never a 5xx, and its body valid UTF-8
 * JSON of the route's error shape. ASan/UBSan catch memory errors. Fixed
 * seed; AC_TEST_QUICK=1 runs fewer cases. Skips without the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "batcher.h"
#include "metrics.h"
#include "routes.h"
#include "sbuf.h"
#include "server.h"
#include "srvutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-sst2-f32.gguf"

static srv_server g_s;

static int setup(void **state) {
    (void)state;
    if (access(MODEL, R_OK) != 0) return 0;
    srv_metrics_init();
    srv_config *c = &g_s.cfg;
    c->model_id = "fuzz";
    c->workers = 1;
    c->max_batch_tokens = 1024;
    c->max_batch_requests = 16;
    c->max_concurrent = 8;
    c->max_client_batch = 8;
    c->max_body = 1 << 16;
    c->pooling = AC_POOL_DEFAULT;
    ac_model_params mp = ac_model_default_params();
    if (ac_model_load(MODEL, &mp, &g_s.model) != AC_OK) return -1;
    ac_model_get_info(g_s.model, &g_s.info);
    g_s.max_input = 64; /* small, so that the fuzzer reaches the length checks */
    g_s.cls_labels = calloc((size_t)g_s.info.n_cls_out, sizeof *g_s.cls_labels);
    for (int i = 0; i < g_s.info.n_cls_out; i++) {
        char buf[64];
        if (ac_model_cls_label(g_s.model, i, buf, sizeof buf) != AC_OK) return -1;
        g_s.cls_labels[i] = strdup(buf);
    }
    srv_batcher_params bp = {0};
    bp.workers = 1;
    bp.threads = 1;
    bp.max_batch_tokens = 1024;
    bp.max_batch_seqs = 16;
    bp.pooling = AC_POOL_DEFAULT;
    if (srv_batcher_new(g_s.model, &bp, &g_s.batcher) != AC_OK) return -1;
    atomic_store(&g_s.ready, 1);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    srv_batcher_free(g_s.batcher);
    for (int i = 0; g_s.cls_labels && i < g_s.info.n_cls_out; i++) free(g_s.cls_labels[i]);
    free(g_s.cls_labels);
    ac_model_free(g_s.model);
    return 0;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static const struct {
    int route;
    const char *body;
} seeds[] = {
    {SRV_R_EMBEDDINGS, "{\"input\":\"The cat sat on the mat.\",\"model\":\"m\"}"},
    {SRV_R_EMBEDDINGS, "{\"input\":[\"a b\",\"c d e\"],\"encoding_format\":\"base64\",\"dimensions\":384}"},
    {SRV_R_EMBEDDINGS, "{\"input\":[101,7592,102],\"encoding_format\":\"float\",\"user\":\"u\"}"},
    {SRV_R_EMBEDDINGS, "{\"input\":[[101,7592,102],[101,2088,102]]}"},
    {SRV_R_EMBED, "{\"inputs\":\"hello world\",\"normalize\":false,\"truncate\":true,\"truncation_direction\":\"Left\"}"},
    {SRV_R_EMBED, "{\"inputs\":[\"one\",\"two\"],\"truncate\":false}"},
    {SRV_R_TOKENIZE, "{\"inputs\":\"caf\\u00e9 \\ud83d\\ude00 na\\u00efve\",\"add_special_tokens\":true}"},
    {SRV_R_TOKENIZE, "{\"inputs\":[\"x\",\"y z\"],\"add_special_tokens\":false}"},
    {SRV_R_PREDICT, "{\"inputs\":\"a wonderful film\",\"raw_scores\":false}"},
    {SRV_R_PREDICT, "{\"inputs\":[\"bad\",\"good\"],\"raw_scores\":true,\"truncate\":true}"},
    {SRV_R_SCORE, "{\"inputs\":\"x\",\"labels\":[\"a\"],\"template\":\"{text}\"}"},
    {SRV_R_EMBED, "{\"inputs\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}"},
};
#define N_SEEDS ((int)(sizeof seeds / sizeof seeds[0]))

static const char *const tokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud800", "\\u0000", "null", "true", "false", "-1", "1e400",
    "0.5", "99999999", "\"input\"", "\"inputs\"", "\"truncate\"", "\"labels\"", "\xff", "\xc0\xaf", "\xed\xa0\x80",
    "\xf4\x90\x80\x80", "\xe2\x82", " ", "\t", "[[", "]]", "\"\"", "[]", "{}", "word word word word word word ",
    "many words many words many words many words many words many words many words many words many words many words "
    "many words many words many words many words many words many words many words many words many words many words "
    "many words many words many words many words many words many words many words many words many words many words ",
};
#define N_TOKENS ((int)(sizeof tokens / sizeof tokens[0]))

static void mutate(sbuf *b, const char *seed) {
    size_t n = strlen(seed);
    sbuf_put(b, seed, n);
    int k = 1 + (int)(rnd() % 4);
    for (int m = 0; m < k && b->n > 0; m++) {
        size_t at = rnd() % (b->n + 1);
        sbuf t = {0};
        switch (rnd() % 5) {
        case 0: /* flip a byte */
            if (at < b->n) b->p[at] = (char)(rnd() & 0xFF);
            break;
        case 1: /* delete a run */
        {
            size_t len = rnd() % 8;
            if (at + len > b->n) len = b->n - at;
            memmove(b->p + at, b->p + at + len, b->n - at - len);
            b->n -= len;
            b->p[b->n] = 0;
            break;
        }
        case 2: /* cut */
            b->n = at;
            b->p[b->n] = 0;
            break;
        default: /* insert a JSON token or odd bytes */
            sbuf_put(&t, b->p, at);
            sbuf_puts(&t, tokens[rnd() % N_TOKENS]);
            sbuf_put(&t, b->p + at, b->n - at);
            sbuf_free(b);
            *b = t;
            break;
        }
    }
}

/* a random JSON value of depth <= d */
static void gen_value(sbuf *b, int d) {
    switch (rnd() % (d > 0 ? 7 : 5)) {
    case 0: sbuf_printf(b, "%d", (int)(rnd() % 40000) - 100); break;
    case 1: sbuf_puts(b, rnd() & 1 ? "true" : "null"); break;
    case 2: sbuf_printf(b, "%g", (double)(int)rnd() / 1000.0); break;
    case 3: sbuf_puts(b, "\"\""); break;
    case 4: sbuf_printf(b, "\"%s\"", rnd() & 1 ? "some words here" : "Left"); break;
    case 5: {
        int n = (int)(rnd() % 12);
        sbuf_put(b, "[", 1);
        for (int i = 0; i < n; i++) {
            if (i) sbuf_put(b, ",", 1);
            gen_value(b, d - 1);
        }
        sbuf_put(b, "]", 1);
        break;
    }
    default: {
        static const char *keys[] = {"input", "inputs", "labels", "template", "normalize", "truncate",
                                     "truncation_direction", "encoding_format", "dimensions", "raw_scores",
                                     "add_special_tokens", "model"};
        int n = (int)(rnd() % 5);
        sbuf_put(b, "{", 1);
        for (int i = 0; i < n; i++) {
            sbuf_printf(b, "%s\"%s\":", i ? "," : "", keys[rnd() % 12]);
            gen_value(b, d - 1);
        }
        sbuf_put(b, "}", 1);
    }
    }
}

static int n_status[600];

static void check_one(int route, const char *body, size_t len) {
    srv_response rs;
    srv_route_handle(&g_s, route, body, len, &rs);
    if (!(rs.status == 200 || rs.status == 400 || rs.status == 413 || rs.status == 422)) {
        fprintf(stderr, "route %s status %d for body [%.*s]: %.*s\n", srv_route_path(route), rs.status, (int)len,
                body, (int)rs.len, rs.body);
        fail();
    }
    n_status[rs.status]++;
    assert_non_null(rs.body);
    size_t bad;
    assert_true(srv_utf8_valid(rs.body, rs.len, &bad));
    cJSON *j = cJSON_ParseWithLength(rs.body, rs.len);
    if (!j) {
        fprintf(stderr, "not JSON: %.*s\n", (int)rs.len, rs.body);
        fail();
    }
    if (rs.status != 200) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        assert_non_null(e);
        if (route == SRV_R_EMBEDDINGS) assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
        else assert_true(cJSON_IsString(e));
    }
    cJSON_Delete(j);
    free(rs.body);
}

static void test_fuzz_routes(void **state) {
    (void)state;
    if (!g_s.model) skip();
    const char *q = getenv("AC_TEST_QUICK");
    const int n = q && q[0] == '1' ? 600 : 3000;
    static const int post_routes[] = {SRV_R_EMBEDDINGS, SRV_R_EMBED, SRV_R_TOKENIZE, SRV_R_PREDICT, SRV_R_SCORE};
    for (int i = 0; i < N_SEEDS; i++) check_one(seeds[i].route, seeds[i].body, strlen(seeds[i].body));
    for (int it = 0; it < n; it++) {
        sbuf b = {0};
        int route;
        if (rnd() % 3) {
            int s = (int)(rnd() % N_SEEDS);
            route = rnd() % 4 ? seeds[s].route : post_routes[rnd() % 5];
            mutate(&b, seeds[s].body);
        } else {
            route = post_routes[rnd() % 5];
            gen_value(&b, 4);
        }
        assert_true(sbuf_ok(&b));
        check_one(route, b.p ? b.p : "", b.n);
        sbuf_free(&b);
    }
    /* the pass reached both the handlers' success paths and their errors */
    assert_true(n_status[200] > 20);
    assert_true(n_status[400] > 20);
    assert_true(n_status[422] > 20);
    assert_true(n_status[413] > 0);
    fprintf(stderr, "fuzz: %d cases: %d x 200, %d x 400, %d x 413, %d x 422\n", n + N_SEEDS, n_status[200],
            n_status[400], n_status[413], n_status[422]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fuzz_routes)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
