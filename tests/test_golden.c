/* test_golden.c — the engine against PyTorch reference activations
 * (the GGUF files in tests/golden, made by tools/py/make_golden.py from the Hugging Face
 * models): token ids, final hidden states, pooled embeddings, logits and
 * every layer's attention maps. This proves converter, loader, tokenizer
 * and forward agree with the reference implementation.
 * Tolerances (issue): hidden/pooled/logits relative error <= 1e-3 with F16
 * weights (1e-4 with F32), attention maps <= 1e-3 absolute. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "forward/forward.h"
#include "load/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* attention maps recorded through the forward hook: [n_layer][H][L][L] */
typedef struct rec_state {
    float *maps;
    int L, H;
} rec_state;

static int rec_cb(void *user, const ac_attn_site *site, const float *P) {
    rec_state *r = user;
    size_t per = (size_t)r->H * r->L * r->L;
    memcpy(r->maps + (size_t)site->layer * per, P, per * sizeof(float));
    return AC_OK;
}

static const float *golden_f32(const ac_gguf_file *g, const char *fmt, int i, size_t want) {
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    const ac_gguf_tensor *t = ac_gguf_find_tensor(g, name);
    assert_non_null(t);
    assert_int_equal(t->type, GGML_F32);
    size_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= (size_t)t->ne[d];
    assert_int_equal(n, want);
    return t->data;
}

/* max |a - b| / max(|b|) over n */
static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

static double max_abs(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Runs every golden input through the model at `model_path`. */
static void check_golden(const char *golden_path, const char *model_path, double tol_rel) {
    if (access(golden_path, R_OK) != 0 || access(model_path, R_OK) != 0) {
        print_message("skipping: %s or %s absent (run tools/setup_models.sh)\n", golden_path, model_path);
        skip();
    }
    ac_gguf_file *g = NULL;
    assert_int_equal(ac_gguf_open(golden_path, &g), AC_OK);
    int64_t n_inputs = 0, n_layer = 0, n_head = 0, n_embd = 0, n_vocab = 0;
    assert_int_equal(ac_gguf_get_int(g, "golden.n_inputs", &n_inputs, 1), AC_OK);
    assert_int_equal(ac_gguf_get_int(g, "golden.n_layer", &n_layer, 1), AC_OK);
    assert_int_equal(ac_gguf_get_int(g, "golden.n_head", &n_head, 1), AC_OK);
    assert_int_equal(ac_gguf_get_int(g, "golden.n_embd", &n_embd, 1), AC_OK);
    ac_gguf_get_int(g, "golden.n_vocab", &n_vocab, 0);

    ac_model *m = NULL;
    ac_model_params mp = ac_model_default_params();
    assert_int_equal(ac_model_load(model_path, &mp, &m), AC_OK);
    ac_model_info info;
    ac_model_get_info(m, &info);
    assert_int_equal(info.n_layer, n_layer);
    assert_int_equal(info.n_embd, n_embd);
    ac_ctx *ctx = NULL;
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(ac_ctx_new(m, &cp, &ctx), AC_OK);
    const int D = (int)n_embd, NL = (int)n_layer, H = (int)n_head;

    for (int i = 0; i < n_inputs; i++) {
        char key[64];
        snprintf(key, sizeof key, "golden.input.%d.text", i);
        ac_gguf_str text;
        assert_int_equal(ac_gguf_get_str(g, key, &text, 1), AC_OK);
        char name[64];
        snprintf(name, sizeof name, "in.%d.tokens", i);
        const ac_gguf_tensor *tt = ac_gguf_find_tensor(g, name);
        assert_non_null(tt);
        const int T = (int)tt->ne[0];
        const int32_t *gold_ids = tt->data;

        /* tokenizer: the reference ids exactly (specials included) */
        int32_t ids[512];
        int n = 0;
        assert_int_equal(ac_tokenize(m, text.ptr, (size_t)text.len, 1, ids, 512, &n), AC_OK);
        assert_int_equal(n, T);
        assert_memory_equal(ids, gold_ids, (size_t)T * sizeof *ids);

        /* forward with the maps recorded (materialised path) */
        rec_state rs = {malloc((size_t)NL * H * T * T * sizeof(float)), T, H};
        assert_non_null(rs.maps);
        ac_attn_hook hook;
        memset(&hook, 0, sizeof hook);
        hook.user = &rs;
        hook.record = rec_cb;
        ac_ctx_set_attn_hook(ctx, &hook);
        float *hidden = malloc((size_t)T * D * sizeof *hidden), *pooled = malloc((size_t)D * sizeof *pooled);
        float *logits = n_vocab ? malloc((size_t)n_vocab * sizeof *logits) : NULL;
        ac_seq s = {ids, T};
        ac_outputs o = {0};
        o.hidden = hidden;
        o.pooled = pooled;
        o.pooling = AC_POOL_MEAN;
        o.normalize = 1;
        o.logits = logits;
        assert_int_equal(ac_forward(ctx, &s, 1, &o), AC_OK);
        ac_ctx_set_attn_hook(ctx, NULL);

        const float *gh = golden_f32(g, "in.%d.hidden", i, (size_t)(NL + 1) * T * D);
        double eh = rel_err(hidden, gh + (size_t)NL * T * D, (size_t)T * D);
        const float *ga = golden_f32(g, "in.%d.attn", i, (size_t)NL * H * T * T);
        double ea = max_abs(rs.maps, ga, (size_t)NL * H * T * T);
        double ep = 0, el = 0;
        if (!n_vocab) {
            const float *gp = golden_f32(g, "in.%d.pooled", i, (size_t)D);
            ep = max_abs(pooled, gp, (size_t)D);
        } else {
            const float *gl = golden_f32(g, "in.%d.logits", i, (size_t)T * n_vocab);
            el = rel_err(logits, gl + (size_t)(T - 1) * n_vocab, (size_t)n_vocab);
        }
        print_message("%s input %d (%d tokens): hidden rel %.2e, attention abs %.2e, %s %.2e\n", model_path, i, T,
                      eh, ea, n_vocab ? "logits rel" : "pooled abs", n_vocab ? el : ep);
        assert_true(eh <= tol_rel);
        assert_true(ea <= 1e-3);
        assert_true(ep <= tol_rel);
        assert_true(el <= tol_rel);
        free(rs.maps);
        free(hidden);
        free(pooled);
        free(logits);
    }
    ac_ctx_free(ctx);
    ac_model_free(m);
    ac_gguf_close(g);
}

static void test_minilm_f32(void **state) {
    (void)state;
    check_golden(AC_SOURCE_DIR "/tests/golden/minilm.gguf", AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f32.gguf",
                 1e-4);
}

static void test_minilm_f16(void **state) {
    (void)state;
    check_golden(AC_SOURCE_DIR "/tests/golden/minilm.gguf", AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f16.gguf",
                 1e-3);
}

static void test_stories(void **state) {
    (void)state;
    check_golden(AC_SOURCE_DIR "/tests/golden/stories260K.gguf", AC_SHARED_DIR "/models/stories260K.gguf", 1e-4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minilm_f32),
        cmocka_unit_test(test_minilm_f16),
        cmocka_unit_test(test_stories),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
