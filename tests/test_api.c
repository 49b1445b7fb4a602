/* test_api.c — the text-level API's batched calls with a status per input:
 * one bad text (NULL, over-long) gets its own error and the rest of the batch
 * its results, equal to one-at-a-time calls; the all-or-nothing call keeps its
 * contract. Uses the real MiniLM converted by tools/setup_models.sh (skips
 * when absent). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MINILM AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f32.gguf"

static void test_embed_status(void **state) {
    (void)state;
    if (access(MINILM, R_OK) != 0) {
        fprintf(stderr, "skipped: %s absent (tools/setup_models.sh)\n", MINILM);
        skip();
    }
    ac_model *m = NULL;
    assert_int_equal(ac_model_load(MINILM, NULL, &m), AC_OK);
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = 2;
    cp.max_tokens = 16; /* a small limit: over-long inputs are easy to make */
    ac_ctx *ctx = NULL;
    assert_int_equal(ac_ctx_new(m, &cp, &ctx), AC_OK);
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int D = info.n_embd;
    const char *longtext = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                           "sixteen seventeen eighteen nineteen twenty";
    const char *texts[6] = {"a small dog", longtext, "the cat sat on the mat", NULL, "good morning", longtext};
    const int n = 6;
    float *out = malloc((size_t)n * D * sizeof *out), *one = malloc((size_t)D * sizeof *one);
    int ntok[6], nt1 = 0;
    ac_status st[6];
    for (size_t i = 0; i < (size_t)n * D; i++) out[i] = 42.0f; /* the bad rows must be zeroed */
    assert_int_equal(ac_embed_texts_status(ctx, texts, n, AC_POOL_DEFAULT, 1, out, ntok, st), AC_OK);
    const int bad[6] = {0, 1, 0, 1, 0, 1};
    for (int i = 0; i < n; i++) {
        if (bad[i]) {
            assert_int_not_equal(st[i].code, AC_OK);
            assert_true(strlen(st[i].message) > 0);
            for (int k = 0; k < D; k++) assert_true(out[(size_t)i * D + k] == 0.0f);
            continue;
        }
        assert_int_equal(st[i].code, AC_OK);
        assert_string_equal(st[i].message, "");
        /* the same as the text alone */
        assert_int_equal(ac_embed_texts(ctx, &texts[i], 1, AC_POOL_DEFAULT, 1, one, &nt1), AC_OK);
        assert_int_equal(ntok[i], nt1);
        for (int k = 0; k < D; k++) assert_true(fabsf(out[(size_t)i * D + k] - one[k]) <= 1e-5f);
    }
    assert_int_equal(st[1].code, AC_ERR_INPUT);
    assert_non_null(strstr(st[1].message, "exceeds the limit of 16 tokens"));
    assert_true(ntok[1] > 16); /* the count of an over-long text is reported */
    assert_int_equal(st[3].code, AC_ERR_ARG);
    assert_non_null(strstr(st[3].message, "NULL"));

    /* the all-or-nothing call: the first bad text fails it, named */
    assert_int_equal(ac_embed_texts(ctx, texts, 3, AC_POOL_DEFAULT, 1, out, NULL), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "text 1: input of"));
    assert_non_null(strstr(ac_last_error(), "exceeds the limit of 16 tokens"));

    /* every text bad: the call works, every status says why */
    const char *allbad[2] = {longtext, NULL};
    assert_int_equal(ac_embed_texts_status(ctx, allbad, 2, AC_POOL_DEFAULT, 0, out, NULL, st), AC_OK);
    assert_int_equal(st[0].code, AC_ERR_INPUT);
    assert_int_equal(st[1].code, AC_ERR_ARG);
    /* every text good: the same as ac_embed_texts */
    const char *good[2] = {"a small dog", "good morning"};
    float *o2 = malloc(2 * (size_t)D * sizeof *o2);
    assert_int_equal(ac_embed_texts_status(ctx, good, 2, AC_POOL_DEFAULT, 1, out, NULL, st), AC_OK);
    assert_int_equal(ac_embed_texts(ctx, good, 2, AC_POOL_DEFAULT, 1, o2, NULL), AC_OK);
    assert_memory_equal(out, o2, 2 * (size_t)D * sizeof *o2);
    assert_int_equal(st[0].code + st[1].code, 0);
    /* caller errors */
    assert_int_equal(ac_embed_texts_status(ctx, good, 2, AC_POOL_DEFAULT, 1, out, NULL, NULL), AC_ERR_ARG);
    assert_int_equal(ac_embed_texts_status(NULL, good, 2, AC_POOL_DEFAULT, 1, out, NULL, st), AC_ERR_ARG);
    assert_int_equal(ac_embed_texts_status(ctx, good, 0, AC_POOL_DEFAULT, 1, out, NULL, st), AC_OK);

    /* the per-sequence check ac_forward makes */
    int32_t ids[20] = {0};
    ac_seq q = {ids, 17};
    assert_int_equal(ac_ctx_check_seq(ctx, &q), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "input of 17 tokens exceeds the limit of 16 tokens"));
    q.n_tokens = 16;
    assert_int_equal(ac_ctx_check_seq(ctx, &q), AC_OK);
    ids[3] = info.n_vocab;
    assert_int_equal(ac_ctx_check_seq(ctx, &q), AC_ERR_INPUT);
    q.n_tokens = 0;
    assert_int_equal(ac_ctx_check_seq(ctx, &q), AC_ERR_INPUT);
    free(out);
    free(one);
    free(o2);
    ac_ctx_free(ctx);
    ac_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_embed_status)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
