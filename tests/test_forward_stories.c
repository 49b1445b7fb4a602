/* test_forward_stories.c — the real pretrained stories260K (llama, F32) against
 * the reference llama2.c greedy continuations in
 * ../shared/models/stories260K.greedy.tsv: for each prompt (BOS first), repeated
 * prefill of the whole sequence + argmax of the last logits, 64 positions; the
 * decoded text must equal the reference line. Also checks the model against the
 * plain reference forward (tests/ref_forward.c). Skips if the files are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "load/model.h"
#include "ref_forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MODEL AC_SHARED_DIR "/models/stories260K.gguf"
#define GREEDY AC_SHARED_DIR "/models/stories260K.greedy.tsv"
#define STEPS 64

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Greedy continuation of prompt to STEPS positions; returns the decoded text
 * as llama2.c prints it (pieces of positions 1..STEPS, leading space of the
 * piece after BOS dropped). Caller frees. */
static char *greedy(ac_ctx *c, const ac_model *m, const char *prompt) {
    int32_t ids[STEPS + 1];
    int n = 0;
    assert_int_equal(ac_tokenize(m, prompt, strlen(prompt), 1, ids, STEPS, &n), AC_OK);
    assert_true(n >= 1 && ids[0] == ac_token_bos(m));
    ac_model_info in;
    ac_model_get_info(m, &in);
    float *logits = malloc((size_t)in.n_vocab * sizeof *logits);
    while (n < STEPS + 1) {
        ac_seq s = {ids, n};
        ac_outputs o = {0};
        o.logits = logits;
        assert_int_equal(ac_forward(c, &s, 1, &o), AC_OK);
        int next = argmax(logits, in.n_vocab);
        if (next == ac_token_bos(m)) break; /* llama2.c stops on BOS */
        ids[n++] = next;
    }
    free(logits);
    size_t cap = 4096, len = 0;
    char *text = calloc(cap, 1);
    for (int i = 1; i < n; i++) {
        char piece[256];
        int np = 0;
        assert_int_equal(ac_token_to_piece(m, ids[i], piece, sizeof piece, &np), AC_OK);
        const char *p = piece;
        if (i == 1 && np > 0 && piece[0] == ' ') p++, np--;
        assert_true(len + (size_t)np + 1 < cap);
        memcpy(text + len, p, (size_t)np);
        len += (size_t)np;
    }
    /* the TSV holds each continuation on one line: newlines appear as spaces */
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n') text[i] = ' ';
    return text;
}

static void test_greedy(void **st) {
    (void)st;
    if (access(MODEL, R_OK) != 0 || access(GREEDY, R_OK) != 0) skip();
    ac_model *m;
    int rc = ac_model_load(MODEL, NULL, &m);
    if (rc) fprintf(stderr, "%s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    if (!m->vocab) {
        ac_model_free(m);
        skip(); /* tokenizer unavailable */
    }
    ac_model_info in;
    ac_model_get_info(m, &in);
    assert_string_equal(in.arch_name, "llama");
    assert_int_equal(in.n_embd, 64);
    assert_int_equal(in.n_layer, 5);
    assert_int_equal(in.n_head_kv, 4);
    const int gemms[2] = {AC_GEMM_AUTO, AC_GEMM_OPENBLAS};
    for (int gi = 0; gi < 2; gi++)
        for (int attn = 0; attn < 2; attn++) {
            ac_ctx_params p = ac_ctx_default_params();
            p.gemm = gemms[gi];
            p.attn = attn;
            ac_ctx *c;
            assert_int_equal(ac_ctx_new(m, &p, &c), AC_OK);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            FILE *f = fopen(GREEDY, "r");
            assert_non_null(f);
            char line[8192];
            int n_lines = 0;
            while (fgets(line, sizeof line, f)) {
                if (line[0] == '#' || line[0] == '\n') continue;
                line[strcspn(line, "\r\n")] = 0;
                char *tab = strchr(line, '\t');
                assert_non_null(tab);
                *tab = 0;
                char *got = greedy(c, m, line);
                if (strcmp(got, tab + 1) != 0)
                    fprintf(stderr, "prompt '%s'\n  want: %s\n  got:  %s\n", line, tab + 1, got);
                assert_string_equal(got, tab + 1);
                free(got);
                n_lines++;
            }
            fclose(f);
            assert_true(n_lines > 0);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            printf("  stories260K: %d greedy continuations reproduced (gemm %d, attn %d) in %.2f s\n", n_lines,
                   gemms[gi], attn, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            ac_ctx_free(c);
        }
    ac_model_free(m);
}

/* the real model against the plain reference forward, all logits of a prefill */
static void test_vs_reference(void **st) {
    (void)st;
    if (access(MODEL, R_OK) != 0) skip();
    ac_model *m;
    assert_int_equal(ac_model_load_ex(MODEL, NULL, AC_LOAD_NO_VOCAB, &m), AC_OK);
    ref_model r;
    assert_int_equal(ref_model_init(&r, m->gguf), 0);
    int32_t ids[100];
    uint64_t seed = 7;
    ref_random_tokens(&seed, ids, 100, r.V);
    ids[0] = 1;
    double *rh = malloc(100 * 64 * sizeof *rh), *rl = malloc((size_t)r.V * sizeof *rl);
    ref_forward(&r, ids, 100, rh, rl, NULL);
    ac_ctx *c;
    assert_int_equal(ac_ctx_new(m, NULL, &c), AC_OK);
    float *h = malloc(100 * 64 * sizeof *h), *l = malloc((size_t)r.V * sizeof *l);
    ac_seq s = {ids, 100};
    ac_outputs o = {0};
    o.hidden = h;
    o.logits = l;
    assert_int_equal(ac_forward(c, &s, 1, &o), AC_OK);
    double eh = ref_rel_err_f(h, rh, 100 * 64), el = ref_rel_err_f(l, rl, (size_t)r.V);
    printf("  stories260K vs reference: hidden %.2e, logits %.2e\n", eh, el);
    assert_true(eh < 1e-4 && el < 1e-4);
    free(rh), free(rl), free(h), free(l);
    ac_ctx_free(c);
    ref_model_free(&r);
    ac_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_reference),
        cmocka_unit_test(test_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
