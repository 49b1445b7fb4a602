/* test_truncate.c — ac_ctx_params.truncate: a text longer than the context's
 * limit is cut to it by ac_embed_texts, keeping the closing [SEP] the
 * tokenizer added (the embedding equals a forward over the first limit-1
 * tokens + [SEP]); without it the text is refused with a clear error. Uses the
 * real MiniLM from models-cache/ (skips when absent). */
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

static void test_truncate(void **st) {
    (void)st;
    const char *path = AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f32.gguf";
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("skip: %s absent\n", path);
        skip();
    }
    fclose(f);
    ac_model *m;
    assert_int_equal(ac_model_load(path, NULL, &m), AC_OK);
    ac_model_info in;
    ac_model_get_info(m, &in);
    const int D = in.n_embd;
    /* ~700 word pieces: over MiniLM's 512 positions */
    size_t cap = 8000;
    char *text = malloc(cap);
    text[0] = 0;
    for (int i = 0; i < 700; i++) strcat(text, i % 3 ? "cat " : "sat ");
    const char *texts[2] = {text, "a short one"};
    float *e = malloc((size_t)2 * D * sizeof *e), *r = malloc((size_t)D * sizeof *r);
    int nt[2];

    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    ac_ctx *c;
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_OK);
    assert_int_equal(ac_embed_texts(c, texts, 2, AC_POOL_MEAN, 1, e, nt), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "exceeds"));
    ac_ctx_free(c);

    p.truncate = 1;
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_OK);
    assert_int_equal(ac_embed_texts(c, texts, 2, AC_POOL_MEAN, 1, e, nt), AC_OK);
    assert_int_equal(nt[0], in.n_ctx_train);
    assert_true(nt[1] < 10);
    /* the same as the first n_ctx_train - 1 tokens + [SEP], through ac_forward */
    int n = 0;
    ac_tokenize(m, text, strlen(text), 1, NULL, 0, &n);
    assert_true(n > in.n_ctx_train);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    assert_int_equal(ac_tokenize(m, text, strlen(text), 1, ids, n, &n), AC_OK);
    const int32_t sep = ids[n - 1];
    ids[in.n_ctx_train - 1] = sep;
    ac_seq s = {.tokens = ids, .n_tokens = in.n_ctx_train};
    ac_outputs o = {0};
    o.pooled = r;
    o.pooling = AC_POOL_MEAN;
    o.normalize = 1;
    assert_int_equal(ac_forward(c, &s, 1, &o), AC_OK);
    assert_memory_equal(r, e, (size_t)D * sizeof *r);
    ac_ctx_free(c);
    free(ids), free(e), free(r), free(text);
    ac_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_truncate)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
