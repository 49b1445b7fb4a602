/* test_tokenizer.c — tokenizers against llama.cpp's fixtures (id for id),
 * special tokens, invalid UTF-8, pieces / round trips, long inputs,
 * hostile metadata. Fixtures: ../shared/vocab/ggml-vocab-*.gguf(.inp/.out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "load/gguf.h"
#include "tokenize/tok_pretok.h"
#include "tokenize/tok_unicode.h"
#include "tokenize/tokenizer.h"
#include "util/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB_DIR AC_SHARED_DIR "/vocab/"

static const char *const VOCABS[] = {"llama-spm", "gpt-2", "deepseek-coder", "bert-bge"};
#define N_VOCABS 4

/* ---- helpers ------------------------------------------------------------------ */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = mallocCheck((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

typedef struct {
    gguf_file *g;
    ac_vocab *v;
} vocab_t;

/* 0 if the fixture is absent (caller skips) */
static int open_vocab(const char *name, vocab_t *out) {
    char path[512];
    snprintf(path, sizeof path, VOCAB_DIR "ggml-vocab-%s.gguf", name);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    assert_int_equal(gguf_open(path, &out->g), AC_OK);
    int rc = ac_vocab_load(out->g, &out->v);
    if (rc) fprintf(stderr, "load %s: %s\n", name, ac_last_error());
    assert_int_equal(rc, AC_OK);
    return 1;
}

static void close_vocab(vocab_t *t) {
    ac_vocab_free(t->v);
    gguf_close(t->g);
}

/* tokenize into a malloc'd array (exercises the AC_ERR_RANGE retry) */
static int32_t *tok(const ac_vocab *v, const char *s, size_t len, int add_special, int *n) {
    int need = 0;
    int rc = ac_vocab_tokenize(v, s, len, add_special, NULL, 0, &need);
    if (need > 0) assert_int_equal(rc, AC_ERR_RANGE);
    else assert_int_equal(rc, AC_OK);
    int32_t *ids = mallocCheck(sizeof(int32_t) * (size_t)(need + 1));
    rc = ac_vocab_tokenize(v, s, len, add_special, ids, need, n);
    if (rc) fprintf(stderr, "tokenize: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    assert_int_equal(*n, need);
    return ids;
}

typedef struct {
    char **text;
    size_t *len;
    int32_t **ids;
    int *n_ids;
    int n;
} cases_t;

/* Split .inp exactly as llama.cpp's test-tokenizer-0: the separator is
 * "\n__ggml_vocab_test__\n"; the text after the last separator (if any) is a
 * case too. .out: one line per case, ids separated by spaces. */
static int load_cases(const char *name, cases_t *c) {
    char p[512];
    size_t il, ol;
    snprintf(p, sizeof p, VOCAB_DIR "ggml-vocab-%s.gguf.inp", name);
    char *inp = read_all(p, &il);
    snprintf(p, sizeof p, VOCAB_DIR "ggml-vocab-%s.gguf.out", name);
    char *outf = read_all(p, &ol);
    if (!inp || !outf) {
        free(inp);
        free(outf);
        return 0;
    }
    memset(c, 0, sizeof *c);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t sl = strlen(sep), pos = 0, cap = 0;
    while (pos < il) {
        const char *nx = NULL;
        for (size_t i = pos; i + sl <= il; i++)
            if (!memcmp(inp + i, sep, sl)) {
                nx = inp + i;
                break;
            }
        size_t end = nx ? (size_t)(nx - inp) : il;
        if (c->n == (int)cap) {
            cap = cap ? cap * 2 : 64;
            c->text = realloc(c->text, cap * sizeof *c->text);
            c->len = realloc(c->len, cap * sizeof *c->len);
            assert_non_null(c->text);
            assert_non_null(c->len);
        }
        c->len[c->n] = end - pos;
        c->text[c->n] = mallocCheck(end - pos + 1);
        memcpy(c->text[c->n], inp + pos, end - pos);
        c->text[c->n][end - pos] = 0;
        c->n++;
        if (!nx) break;
        pos = end + sl;
    }
    /* .out lines */
    c->ids = calloc((size_t)c->n, sizeof *c->ids);
    c->n_ids = calloc((size_t)c->n, sizeof *c->n_ids);
    assert_non_null(c->ids);
    int line = 0;
    char *s = outf;
    while (*s && line < c->n + 1) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        if (line < c->n) {
            c->ids[line] = mallocCheck(sizeof(int32_t) * (strlen(s) / 2 + 2));
            char *q = s;
            for (;;) {
                while (*q == ' ' || *q == '\t' || *q == '\r') q++;
                if (!*q) break;
                char *qe;
                long x = strtol(q, &qe, 10);
                assert_true(qe != q);
                c->ids[line][c->n_ids[line]++] = (int32_t)x;
                q = qe;
            }
        }
        line++;
        if (!e) break;
        s = e + 1;
    }
    assert_int_equal(line >= c->n, 1); /* as many lines as cases */
    free(inp);
    free(outf);
    return 1;
}

static void free_cases(cases_t *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->text[i]);
        free(c->ids[i]);
    }
    free(c->text);
    free(c->len);
    free(c->ids);
    free(c->n_ids);
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* ---- fixtures: every case id for id ---------------------------------------------- */

static void run_fixture(const char *name) {
    vocab_t t;
    cases_t c = {0};
    if (!open_vocab(name, &t)) {
        fprintf(stderr, "skip: no fixture %s\n", name);
        skip();
    }
    if (!load_cases(name, &c)) {
        close_vocab(&t);
        skip();
    }
    int pass = 0;
    for (int i = 0; i < c.n; i++) {
        int n = 0;
        int32_t *ids = tok(t.v, c.text[i], c.len[i], 0, &n);
        int ok = n == c.n_ids[i] && (n == 0 || !memcmp(ids, c.ids[i], sizeof(int32_t) * (size_t)n));
        if (ok) pass++;
        else {
            fprintf(stderr, "  %s case %d FAILED: '%s'\n", name, i, c.text[i]);
            print_ids("expected", c.ids[i], c.n_ids[i]);
            print_ids("got     ", ids, n);
        }
        free(ids);
    }
    printf("vocab %-15s: %d/%d cases pass\n", name, pass, c.n);
    fflush(stdout);
    assert_true(c.n >= 40);
    assert_int_equal(pass, c.n);
    free_cases(&c);
    close_vocab(&t);
}

static void test_fixture_spm(void **st) { (void)st; run_fixture("llama-spm"); }
static void test_fixture_gpt2(void **st) { (void)st; run_fixture("gpt-2"); }
static void test_fixture_deepseek_coder(void **st) { (void)st; run_fixture("deepseek-coder"); }
static void test_fixture_bert(void **st) { (void)st; run_fixture("bert-bge"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_spm),
        cmocka_unit_test(test_fixture_gpt2),
        cmocka_unit_test(test_fixture_deepseek_coder),
        cmocka_unit_test(test_fixture_bert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
