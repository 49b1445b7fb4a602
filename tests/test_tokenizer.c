/* test_tokenizer.c — tokenizers against llama.cpp's fixtures (id for id),
 * special tokens, invalid UTF-8, pieces / round trips, long inputs,
 * hostile metadata. Fixtures: ../shared/vocab/ggml-vocab-*.gguf(.inp/.out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "load/gguf.h"
#include "tokenize/tok_internal.h"
#include "tokenize/tok_pretok.h"
#include "tokenize/tok_unicode.h"
#include "tokenize/tokenizer.h"
#include "util/common.h"

#include <pthread.h>
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
    ac_gguf_file *g;
    ac_vocab *v;
} vocab_t;

/* 0 if the fixture is absent (caller skips) */
static int open_vocab(const char *name, vocab_t *out) {
    char path[512];
    snprintf(path, sizeof path, VOCAB_DIR "ggml-vocab-%s.gguf", name);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    assert_int_equal(ac_gguf_open(path, &out->g), AC_OK);
    int rc = ac_vocab_load(out->g, &out->v);
    if (rc) fprintf(stderr, "load %s: %s\n", name, ac_last_error());
    assert_int_equal(rc, AC_OK);
    return 1;
}

static void close_vocab(vocab_t *t) {
    ac_vocab_free(t->v);
    ac_gguf_close(t->g);
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

/* ---- the BPE word memo (ac_vocab_tokenize_memo) ---------------------------------------- */

/* ids of text through memo (NULL: none) into a malloc'd array */
static int32_t *tok_memo(const ac_vocab *v, ac_tok_memo *memo, const char *s, size_t len, int *n) {
    int need = 0;
    int rc = ac_vocab_tokenize_memo(v, memo, s, len, 1, NULL, 0, &need);
    if (need > 0) assert_int_equal(rc, AC_ERR_RANGE);
    int32_t *ids = malloc((size_t)(need > 0 ? need : 1) * sizeof *ids);
    assert_int_equal(ac_vocab_tokenize_memo(v, memo, s, len, 1, ids, need, n), AC_OK);
    assert_int_equal(*n, need);
    return ids;
}

/* Every fixture text, and every text joined with the next one (a prompt + a continuation, as
 * ac_score_labels tokenizes them), through one memo shared by all: the ids of the plain
 * tokenizer, whether the words were stored already or not; a second vocab (SPM) given the
 * same memo runs without it. */
static void memo_check(const char *name, const char *other) {
    vocab_t t, o;
    cases_t c = {0};
    if (!open_vocab(name, &t)) skip();
    if (!load_cases(name, &c)) {
        close_vocab(&t);
        skip();
    }
    ac_tok_memo *memo = NULL;
    assert_int_equal(ac_tok_memo_new(&memo), AC_OK);
    int checked = 0;
    for (int pass = 0; pass < 2; pass++) /* pass 1: every word stored by pass 0 */
        for (int i = 0; i < c.n; i++) {
            const size_t l2 = c.len[(i + 1) % c.n], lj = c.len[i] + l2;
            char *joined = malloc(lj + 1);
            memcpy(joined, c.text[i], c.len[i]);
            memcpy(joined + c.len[i], c.text[(i + 1) % c.n], l2);
            joined[lj] = 0;
            const char *texts[2] = {c.text[i], joined};
            const size_t lens[2] = {c.len[i], lj};
            for (int k = 0; k < 2; k++) {
                int n0 = 0, n1 = 0;
                int32_t *a = tok(t.v, texts[k], lens[k], 1, &n0), *b = tok_memo(t.v, memo, texts[k], lens[k], &n1);
                assert_int_equal(n0, n1);
                if (n0) assert_memory_equal(a, b, (size_t)n0 * sizeof *a);
                free(a), free(b);
                checked++;
            }
            free(joined);
        }
    if (open_vocab(other, &o)) { /* the memo is bound to the first vocab: another one ignores it */
        for (int i = 0; i < AC_MIN(c.n, 20); i++) {
            int n0 = 0, n1 = 0;
            int32_t *a = tok(o.v, c.text[i], c.len[i], 1, &n0), *b = tok_memo(o.v, memo, c.text[i], c.len[i], &n1);
            assert_int_equal(n0, n1);
            if (n0) assert_memory_equal(a, b, (size_t)n0 * sizeof *a);
            free(a), free(b);
        }
        close_vocab(&o);
    }
    printf("memo %-15s: %d texts equal to the plain tokenizer's ids\n", name, checked);
    ac_tok_memo_free(memo);
    free_cases(&c);
    close_vocab(&t);
}

static void test_memo_gpt2(void **st) { (void)st; memo_check("gpt-2", "llama-spm"); }
static void test_memo_deepseek(void **st) { (void)st; memo_check("deepseek-coder", "gpt-2"); }

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


/* ---- special tokens ------------------------------------------------------------------ */

static int meta_bool(const ac_gguf_file *g, const char *key, int dflt) {
    int b = dflt;
    if (ac_gguf_find(g, key)) assert_int_equal(ac_gguf_get_bool(g, key, &b, 1), AC_OK);
    return b;
}

static int32_t meta_id(const ac_gguf_file *g, const char *key, int32_t dflt) {
    int64_t x = dflt;
    if (ac_gguf_find(g, key)) assert_int_equal(ac_gguf_get_int(g, key, &x, 1), AC_OK);
    return (int32_t)x;
}

static int contains(const int32_t *ids, int n, int32_t x) {
    for (int i = 0; i < n; i++)
        if (ids[i] == x) return 1;
    return 0;
}

/* expected BOS/EOS from the metadata (llama.cpp defaults: SPM add_bos,
 * gpt2 pre "gpt-2"/"deepseek-coder" no BOS, BERT always CLS ... SEP) */
static void check_add_special(const char *name, const char *text) {
    vocab_t t;
    if (!open_vocab(name, &t)) skip();
    int type = ac_vocab_type(t.v);
    int exp_bos = type == AC_VOCAB_WPM ? 1 : meta_bool(t.g, "tokenizer.ggml.add_bos_token", type == AC_VOCAB_SPM);
    int exp_eos = type == AC_VOCAB_WPM ? 1 : meta_bool(t.g, "tokenizer.ggml.add_eos_token", 0);
    int32_t bos = type == AC_VOCAB_WPM ? meta_id(t.g, "tokenizer.ggml.cls_token_id", 101)
                                       : meta_id(t.g, "tokenizer.ggml.bos_token_id", type == AC_VOCAB_SPM ? 1 : 11);
    int32_t eos = type == AC_VOCAB_WPM ? meta_id(t.g, "tokenizer.ggml.seperator_token_id", 102)
                                       : meta_id(t.g, "tokenizer.ggml.eos_token_id", type == AC_VOCAB_SPM ? 2 : 11);
    assert_int_equal(ac_vocab_bos(t.v), bos);
    if (type == AC_VOCAB_WPM) {
        assert_int_equal(ac_vocab_cls(t.v), bos);
        assert_int_equal(ac_vocab_sep(t.v), eos);
    } else {
        assert_int_equal(ac_vocab_eos(t.v), eos);
    }
    assert_int_equal(ac_vocab_add_bos(t.v), exp_bos);
    int n0, n1;
    int32_t *a = tok(t.v, text, strlen(text), 0, &n0);
    int32_t *b = tok(t.v, text, strlen(text), 1, &n1);
    assert_int_equal(n1, n0 + exp_bos + exp_eos);
    if (exp_bos) assert_int_equal(b[0], bos);
    if (exp_eos) assert_int_equal(b[n1 - 1], eos);
    assert_memory_equal(b + exp_bos, a, sizeof(int32_t) * (size_t)n0);
    printf("%-15s add_special: bos=%d (%s) eos=%d (%s), %d -> %d tokens\n", name, bos, exp_bos ? "added" : "not added",
           eos, exp_eos ? "added" : "not added", n0, n1);
    free(a);
    free(b);
    /* empty text: only the specials */
    a = tok(t.v, "", 0, 0, &n0);
    assert_int_equal(n0, 0);
    free(a);
    a = tok(t.v, NULL, 0, 1, &n0);
    assert_int_equal(n0, exp_bos + exp_eos);
    if (exp_bos) assert_int_equal(a[0], bos);
    if (exp_eos) assert_int_equal(a[n0 - 1], eos);
    free(a);
    /* special-token text is plain text (parse_special off) */
    for (int32_t id = 0; id < ac_vocab_n_tokens(t.v); id++) {
        if (id != bos && id != eos) continue;
        ac_gguf_str s = ac_vocab_token_text(t.v, id);
        char buf[128];
        snprintf(buf, sizeof buf, "x %.*s y", (int)(s.len < 100 ? s.len : 100), s.ptr);
        a = tok(t.v, buf, strlen(buf), 0, &n0);
        assert_false(contains(a, n0, id));
        free(a);
    }
    close_vocab(&t);
}

static void test_add_special_spm(void **st) { (void)st; check_add_special("llama-spm", "Hello world"); }
static void test_add_special_gpt2(void **st) { (void)st; check_add_special("gpt-2", "Hello world"); }
static void test_add_special_deepseek(void **st) { (void)st; check_add_special("deepseek-coder", "Hello world"); }
static void test_add_special_bert(void **st) { (void)st; check_add_special("bert-bge", "Hello world"); }

/* ---- invalid UTF-8 ------------------------------------------------------------------- */

#define FFFD "\xEF\xBF\xBD"
static const struct {
    const char *in, *out;
} UTF8_CASES[] = {
    {"a\xC3", "a" FFFD},                                 /* truncated 2-byte at end */
    {"a\xC3z", "a" FFFD "z"},                            /* 2-byte cut by ASCII */
    {"\xE2\x82", FFFD},                                  /* truncated 3-byte: one U+FFFD */
    {"\xF0\x9F\x98", FFFD},                              /* truncated 4-byte */
    {"\xF0\x9F\x98 ok", FFFD " ok"},
    {"\xC0\xAF", FFFD FFFD},                             /* overlong '/' */
    {"\xC1\xBF", FFFD FFFD},
    {"\xE0\x80\xAF", FFFD FFFD FFFD},                    /* overlong, 3 bytes */
    {"\xF0\x80\x80\xAF", FFFD FFFD FFFD FFFD},           /* overlong, 4 bytes */
    {"\xED\xA0\x80", FFFD FFFD FFFD},                    /* UTF-16 surrogate */
    {"\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD},           /* > U+10FFFF */
    {"\x80", FFFD},                                      /* lone continuation */
    {"x\x80\xBFy", "x" FFFD FFFD "y"},
    {"\xFF", FFFD},
    {"\xFE\xFF hi", FFFD FFFD " hi"},
    {"\xF5\x80\x80\x80", FFFD FFFD FFFD FFFD},
    {"h\xC3\xA9llo \xF0\x9F\xA6\x99 \xE2\x82\xAC", "h\xC3\xA9llo \xF0\x9F\xA6\x99 \xE2\x82\xAC"}, /* valid */
    {"\xEF\xBF\xBD", FFFD},                              /* U+FFFD itself is valid */
    {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},            /* U+10FFFF is valid */
};
#define N_UTF8 (sizeof UTF8_CASES / sizeof UTF8_CASES[0])

static void test_sanitize_utf8(void **st) {
    (void)st;
    for (size_t i = 0; i < N_UTF8; i++) {
        size_t ol = 0;
        char *o = tu_sanitize_utf8(UTF8_CASES[i].in, strlen(UTF8_CASES[i].in), &ol);
        assert_non_null(o);
        if (ol != strlen(UTF8_CASES[i].out) || memcmp(o, UTF8_CASES[i].out, ol))
            fail_msg("sanitize case %zu: got %zu bytes", i, ol);
        free(o);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void test_invalid_utf8_all_vocabs(void **st) {
    (void)st;
    int any = 0;
    for (int k = 0; k < N_VOCABS; k++) {
        vocab_t t;
        if (!open_vocab(VOCABS[k], &t)) continue;
        any = 1;
        int nt = ac_vocab_n_tokens(t.v);
        /* each bad input tokenizes like its U+FFFD-replaced form */
        for (size_t i = 0; i < N_UTF8; i++) {
            int na, nb;
            int32_t *a = tok(t.v, UTF8_CASES[i].in, strlen(UTF8_CASES[i].in), 1, &na);
            int32_t *b = tok(t.v, UTF8_CASES[i].out, strlen(UTF8_CASES[i].out), 1, &nb);
            assert_int_equal(na, nb);
            assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);
            free(a);
            free(b);
        }
        /* random bytes, biased to the UTF-8 lead / continuation ranges: no crash, ids in range */
        for (int it = 0; it < 3000; it++) {
            char buf[96];
            int len = (int)(rnd() % sizeof buf);
            for (int j = 0; j < len; j++) {
                uint32_t r = rnd();
                buf[j] = (char)((r & 3) == 0 ? (r >> 8) & 0x7F : 0x80 | ((r >> 8) & 0x7F));
            }
            int n;
            int32_t *a = tok(t.v, buf, (size_t)len, it & 1, &n);
            for (int j = 0; j < n; j++) assert_true(a[j] >= 0 && a[j] < nt);
            free(a);
        }
        close_vocab(&t);
    }
    if (!any) skip();
}

/* ---- pieces and round trips --------------------------------------------------------------- */

static int32_t find_token(const ac_vocab *v, const char *s) {
    for (int32_t i = 0; i < ac_vocab_n_tokens(v); i++) {
        ac_gguf_str t = ac_vocab_token_text(v, i);
        if (t.len == strlen(s) && !memcmp(t.ptr, s, t.len)) return i;
    }
    return -1;
}

static void expect_piece(const ac_vocab *v, const char *tok_text, const char *piece) {
    int32_t id = find_token(v, tok_text);
    if (id < 0) fail_msg("token '%s' not in vocab", tok_text);
    char buf[64];
    int n = 0;
    assert_int_equal(ac_vocab_piece(v, id, buf, sizeof buf, &n), AC_OK);
    if (n != (int)strlen(piece) || memcmp(buf, piece, (size_t)n))
        fail_msg("piece of '%s': got '%.*s', want '%s'", tok_text, n, buf, piece);
}

static void test_pieces(void **st) {
    (void)st;
    vocab_t t;
    int any = 0;
    if (open_vocab("llama-spm", &t)) {
        any = 1;
        expect_piece(t.v, "<0x0A>", "\n");
        expect_piece(t.v, "<0xE2>", "\xE2");
        expect_piece(t.v, "\xE2\x96\x81Hello", " Hello");
        expect_piece(t.v, "<s>", "<s>");
        /* buffer too small: AC_ERR_RANGE with the size needed, bad id: AC_ERR_ARG */
        int n = 0;
        char b[2];
        assert_int_equal(ac_vocab_piece(t.v, find_token(t.v, "\xE2\x96\x81Hello"), b, 2, &n), AC_ERR_RANGE);
        assert_int_equal(n, 6);
        assert_int_equal(ac_vocab_piece(t.v, -1, b, 2, &n), AC_ERR_ARG);
        assert_int_equal(ac_vocab_piece(t.v, ac_vocab_n_tokens(t.v), b, 2, &n), AC_ERR_ARG);
        close_vocab(&t);
    }
    if (open_vocab("gpt-2", &t)) {
        any = 1;
        expect_piece(t.v, "\xC4\xA0world", " world"); /* "Ġworld" */
        expect_piece(t.v, "\xC4\x8A", "\n");         /* "Ċ" */
        expect_piece(t.v, "hello", "hello");
        close_vocab(&t);
    }
    if (open_vocab("bert-bge", &t)) {
        any = 1;
        expect_piece(t.v, "\xE2\x96\x81hello", " hello"); /* word start */
        expect_piece(t.v, "ing", "ing");                  /* "##ing" as converted */
        expect_piece(t.v, "[CLS]", "[CLS]");
        close_vocab(&t);
    }
    if (!any) skip();
}

/* detokenize(tokenize(x)) == x on every fixture text where llama.cpp
 * guarantees it: SPM (leading space removed), byte-level BPE without
 * clean-up (deepseek-coder), and the raw piece concatenation for gpt-2
 * (whose detokenize applies the " ?" clean-up). With add_special the
 * specials are checked and cut off first (llama.cpp's detokenize keeps the
 * SPM space after a BOS, so remove_special is not a round trip there). */
static void roundtrip(const char *name, int use_detok) {
    vocab_t t;
    cases_t c = {0};
    if (!open_vocab(name, &t)) skip();
    if (!load_cases(name, &c)) {
        close_vocab(&t);
        skip();
    }
    int ok = 0;
    for (int i = 0; i < c.n; i++) {
        for (int sp = 0; sp < 2; sp++) {
            int n, m = 0;
            int32_t *ids = tok(t.v, c.text[i], c.len[i], sp, &n);
            int nb = sp && ac_vocab_add_bos(t.v), ne = sp && ac_vocab_add_eos(t.v);
            if (nb) assert_int_equal(ids[0], ac_vocab_bos(t.v));
            if (ne) assert_int_equal(ids[n - 1], ac_vocab_eos(t.v));
            int cap = (int)(c.len[i] * 4 + 64);
            char *out = mallocCheck((size_t)cap);
            if (use_detok) {
                assert_int_equal(ac_vocab_detokenize(t.v, ids + nb, n - nb - ne, 0, 0, out, cap, &m), AC_OK);
            } else {
                for (int j = nb; j < n - ne; j++) {
                    int k = 0;
                    assert_int_equal(ac_vocab_piece(t.v, ids[j], out + m, cap - m, &k), AC_OK);
                    m += k;
                }
            }
            if ((size_t)m != c.len[i] || memcmp(out, c.text[i], (size_t)m))
                fail_msg("%s case %d round trip: '%s' -> '%.*s'", name, i, c.text[i], m, out);
            ok++;
            free(out);
            free(ids);
        }
    }
    printf("%-15s round trip: %d checks\n", name, ok);
    free_cases(&c);
    close_vocab(&t);
}

static void test_roundtrip_spm(void **st) { (void)st; roundtrip("llama-spm", 1); }
static void test_roundtrip_deepseek(void **st) { (void)st; roundtrip("deepseek-coder", 1); }
static void test_roundtrip_gpt2(void **st) { (void)st; roundtrip("gpt-2", 0); }

/* every SPM token: detokenize(tokenize(detokenize({id}))) is stable
 * (llama.cpp's test-tokenizer-1-spm property), except byte tokens whose
 * piece is not valid UTF-8 on its own (we replace invalid UTF-8 input) */
static void test_roundtrip_spm_all_tokens(void **st) {
    (void)st;
    vocab_t t;
    if (!open_vocab("llama-spm", &t)) skip();
    int checked = 0;
    char s1[256], s2[256];
    for (int32_t id = 0; id < ac_vocab_n_tokens(t.v); id++) {
        int n1 = 0, n2 = 0, n = 0;
        if (ac_vocab_detokenize(t.v, &id, 1, 0, 0, s1, sizeof s1, &n1) != AC_OK || n1 == 0) continue;
        size_t vl = 0;
        char *valid = tu_sanitize_utf8(s1, (size_t)n1, &vl);
        int is_valid = vl == (size_t)n1 && !memcmp(valid, s1, vl);
        free(valid);
        if (!is_valid) continue;
        int32_t *ids = tok(t.v, s1, (size_t)n1, 0, &n);
        assert_int_equal(ac_vocab_detokenize(t.v, ids, n, 0, 0, s2, sizeof s2, &n2), AC_OK);
        if (n1 != n2 || memcmp(s1, s2, (size_t)n1)) fail_msg("token %d: '%.*s' -> '%.*s'", id, n1, s1, n2, s2);
        free(ids);
        checked++;
    }
    printf("llama-spm      : %d tokens round trip\n", checked);
    assert_true(checked > 30000);
    close_vocab(&t);
}

/* the SentencePiece vocab of a real model (stories260K, 512 tokens, mostly
 * byte fallback): the reference continuations round trip */
static void test_stories260k_vocab(void **st) {
    (void)st;
    size_t len;
    char *tsv = read_all(AC_SHARED_DIR "/models/stories260K.greedy.tsv", &len);
    ac_gguf_file *g = NULL;
    ac_vocab *v = NULL;
    if (!tsv || ac_gguf_open(AC_SHARED_DIR "/models/stories260K.gguf", &g) != AC_OK) {
        free(tsv);
        skip();
    }
    assert_int_equal(ac_vocab_load(g, &v), AC_OK);
    assert_int_equal(ac_vocab_type(v), AC_VOCAB_SPM);
    assert_int_equal(ac_vocab_n_tokens(v), 512);
    int lines = 0;
    for (char *line = strtok(tsv, "\n"); line; line = strtok(NULL, "\n")) {
        char *tab = strchr(line, '\t');
        if (line[0] == '#' || !tab) continue;
        const char *texts[2] = {line, tab + 1};
        *tab = 0;
        for (int k = 0; k < 2; k++) {
            int n, m;
            int32_t *ids = tok(v, texts[k], strlen(texts[k]), 1, &n);
            assert_int_equal(ids[0], 1); /* BOS */
            char out[4096];
            assert_int_equal(ac_vocab_detokenize(v, ids + 1, n - 1, 0, 0, out, sizeof out, &m), AC_OK);
            assert_int_equal((size_t)m, strlen(texts[k]));
            assert_memory_equal(out, texts[k], (size_t)m);
            if (k) printf("stories260K continuation %d: %d tokens (with BOS)\n", lines, n);
            free(ids);
        }
        lines++;
    }
    assert_true(lines >= 4);
    ac_vocab_free(v);
    ac_gguf_close(g);
    free(tsv);
}

/* detokenize options: remove_special, unparse_special, clean_spaces */
static void test_detokenize_options(void **st) {
    (void)st;
    vocab_t t;
    if (!open_vocab("llama-spm", &t)) skip();
    int n, m;
    char out[128];
    int32_t *ids = tok(t.v, "Hello world", 11, 1, &n);
    assert_int_equal(ac_vocab_detokenize(t.v, ids + 1, n - 1, 0, 0, out, sizeof out, &m), AC_OK);
    assert_int_equal(m, 11);
    assert_memory_equal(out, "Hello world", 11);
    /* llama.cpp keeps the prefixed space when remove_special drops the BOS */
    assert_int_equal(ac_vocab_detokenize(t.v, ids, n, 1, 0, out, sizeof out, &m), AC_OK);
    assert_int_equal(m, 12);
    assert_memory_equal(out, " Hello world", 12);
    assert_int_equal(ac_vocab_detokenize(t.v, ids, n, 0, 1, out, sizeof out, &m), AC_OK);
    assert_int_equal(m, 15); /* "<s> Hello world": BOS rendered, space kept */
    assert_memory_equal(out, "<s> Hello world", 15);
    assert_int_equal(ac_vocab_detokenize(t.v, ids, n, 0, 1, out, 4, &m), AC_ERR_RANGE);
    assert_int_equal(m, 15);
    free(ids);
    close_vocab(&t);
    if (open_vocab("gpt-2", &t)) { /* clean_spaces: " ?" -> "?" */
        ids = tok(t.v, "you ?", 5, 0, &n);
        assert_int_equal(ac_vocab_detokenize(t.v, ids, n, 0, 0, out, sizeof out, &m), AC_OK);
        assert_int_equal(m, 4);
        assert_memory_equal(out, "you?", 4);
        free(ids);
        close_vocab(&t);
    }
}

/* ---- long input ------------------------------------------------------------------------------ */


static char *make_long_text(const char *name, size_t target, size_t *len) {
    cases_t c = {0};
    if (!load_cases(name, &c)) return NULL;
    char *b = mallocCheck(target + 4096);
    size_t o = 0;
    for (int i = 0; o < target; i = (i + 1) % c.n) {
        if (o + c.len[i] + 2 > target + 4096) break;
        memcpy(b + o, c.text[i], c.len[i]);
        o += c.len[i];
        b[o++] = (i % 3) ? ' ' : '\n';
    }
    free_cases(&c);
    *len = o;
    return b;
}

/* Long inputs: right, and not quadratic. No speed target here (speed lives in benchmarks,
 * and a loaded or sanitized run is slow): a quadratic tokenizer needs ~1e11 steps for
 * 1 MiB, hours, while a linear one takes under a second (3 s under ASan); 60 s tells
 * the two apart on any machine. */
#define QUADRATIC_GUARD_S 60.0
static void check_not_quadratic(const ac_vocab *v, const char *what, const char *text, size_t len, int special) {
    double t0 = ac_now();
    int n;
    int32_t *ids = tok(v, text, len, special, &n); /* tokenizes twice: size, then fill */
    double dt = (ac_now() - t0) / 2;
    free(ids);
    printf("  %-12s %6.1f ms per pass\n", what, dt * 1e3);
    assert_true(dt < QUADRATIC_GUARD_S);
}

static void test_long_input(void **st) {
    (void)st;
    int any = 0;
    for (int k = 0; k < N_VOCABS; k++) {
        vocab_t t;
        if (!open_vocab(VOCABS[k], &t)) continue;
        size_t len;
        char *text = make_long_text(VOCABS[k], 1u << 20, &len);
        if (!text) {
            close_vocab(&t);
            continue;
        }
        any = 1;
        int n;
        int32_t *ids = tok(t.v, text, len, 1, &n);
        printf("%-15s 1 MiB mixed text: %8d tokens\n", VOCABS[k], n);
        assert_true(n > 100000);
        int type = ac_vocab_type(t.v);
        if (type == AC_VOCAB_SPM || !strcmp(VOCABS[k], "deepseek-coder")) { /* lossless */
            char *back = mallocCheck(len + 16);
            int m = 0;
            int nb = ac_vocab_add_bos(t.v);
            assert_int_equal(ac_vocab_detokenize(t.v, ids + nb, n - nb, 0, 0, back, (int)len + 16, &m), AC_OK);
            assert_int_equal((size_t)m, len);
            assert_memory_equal(back, text, len);
            free(back);
        }
        free(ids);
        check_not_quadratic(t.v, "mixed text", text, len, 1);
        /* one 1 MiB "word" without spaces (worst case for merges / greedy matching) */
        memset(text, 'a', len);
        for (size_t i = 7; i < len; i += 13) text[i] = "bcdefgh"[i % 7];
        ids = tok(t.v, text, len, 0, &n);
        printf("%-15s 1 MiB single word: %8d tokens\n", VOCABS[k], n);
        assert_true(n > 0);
        free(ids);
        check_not_quadratic(t.v, "single word", text, len, 0);
        free(text);
        close_vocab(&t);
    }
    if (!any) skip();
}

/* ---- threads: a vocab is shared read-only ------------------------------------------------------ */

typedef struct {
    const ac_vocab *v;
    const cases_t *c;
    int bad;
} thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    for (int rep = 0; rep < 5; rep++)
        for (int i = 0; i < a->c->n; i++) {
            int32_t ids[2048];
            int n = 0;
            if (ac_vocab_tokenize(a->v, a->c->text[i], a->c->len[i], 0, ids, 2048, &n) != AC_OK ||
                n != a->c->n_ids[i] || memcmp(ids, a->c->ids[i], sizeof(int32_t) * (size_t)n))
                a->bad++;
        }
    return NULL;
}

static void test_threads(void **st) {
    (void)st;
    int any = 0;
    for (int k = 0; k < N_VOCABS; k++) { /* all code paths: custom matchers, PCRE2 (JIT), trie, WPM */
        vocab_t t;
        cases_t c = {0};
        if (!open_vocab(VOCABS[k], &t)) continue;
        if (!load_cases(VOCABS[k], &c)) {
            close_vocab(&t);
            continue;
        }
        any = 1;
        pthread_t th[4];
        thr_arg args[4];
        for (int i = 0; i < 4; i++) {
            args[i] = (thr_arg){t.v, &c, 0};
            assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(args[i].bad, 0);
        }
        free_cases(&c);
        close_vocab(&t);
    }
    if (!any) skip();
}

/* ---- synthetic vocabs: exact algorithms and hostile metadata ------------------------------------ */

typedef struct {
    ac_gguf_writer *w;
    uint8_t *buf;
    ac_gguf_file *g;
} synth;

static int synth_open(synth *s, ac_vocab **v) {
    size_t size = 0;
    assert_int_equal(ac_gguf_w_to_memory(s->w, 3, &s->buf, &size), AC_OK);
    assert_int_equal(ac_gguf_open_memory(s->buf, size, &s->g), AC_OK);
    return ac_vocab_load(s->g, v);
}

static void synth_close(synth *s, ac_vocab *v) {
    ac_vocab_free(v);
    ac_gguf_close(s->g);
    free(s->buf);
    ac_gguf_writer_free(s->w);
}

#define U2581 "\xE2\x96\x81"

/* SPM: merges by score, byte fallback, user-defined token split, space prefix after it */
static void test_synthetic_spm(void **st) {
    (void)st;
    enum { NB = 256 };
    const char *base[] = {"<unk>", "<s>", "</s>", U2581, "a", "b", "ab", U2581 "ab", "<U>", U2581 "a", "ba"};
    const int nbase = (int)(sizeof base / sizeof base[0]);
    const char *toks[300];
    char bytes[NB][8];
    float scores[300];
    int32_t types[300];
    int n = 0;
    for (int i = 0; i < nbase; i++) {
        toks[n] = base[i];
        scores[n] = -(float)i;
        types[n] = i == 0 ? 2 : i <= 2 ? 3 : i == 8 ? 4 : 1;
        n++;
    }
    scores[9] = -100; /* "▁a" scores low: "▁ab" comes from "▁" + "ab" */
    scores[10] = -0.5f; /* "ba" beats "ab" (-6) where both apply */
    int byte0 = n;
    for (int b = 0; b < NB; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b];
        scores[n] = 0;
        types[n] = 6;
        n++;
    }
    synth s = {ac_gguf_writer_new(), NULL, NULL};
    ac_gguf_w_str(s.w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(s.w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    ac_gguf_w_arr_f32(s.w, "tokenizer.ggml.scores", scores, (uint64_t)n);
    ac_gguf_w_arr_i32(s.w, "tokenizer.ggml.token_type", types, (uint64_t)n);
    ac_vocab *v = NULL;
    assert_int_equal(synth_open(&s, &v), AC_OK);
    struct {
        const char *in;
        int32_t out[12];
        int n;
    } cases[] = {
        {"ab", {7}, 1},                                   /* ▁ a b: ab(-6) then ▁+ab -> ▁ab */
        {"aba", {9, 10}, 2},                              /* ba(-0.5) first, then the token ▁a */
        {"abb", {7, 5}, 2},                               /* ab, ▁ab, then b */
        {"c", {3, byte0 + 'c'}, 2},                       /* byte fallback */
        {"x<U>ab", {3, byte0 + 'x', 8, 7}, 4},            /* user-defined split, prefix after it */
        {"<s>", {3, byte0 + '<', byte0 + 's', byte0 + '>'}, 4}, /* control text is plain text */
        {"\xC3\xA9", {3, byte0 + 0xC3, byte0 + 0xA9}, 3}, /* multi-byte char -> its bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int m;
        int32_t *ids = tok(v, cases[i].in, strlen(cases[i].in), 0, &m);
        if (m != cases[i].n || memcmp(ids, cases[i].out, sizeof(int32_t) * (size_t)m)) {
            print_ids("expected", cases[i].out, cases[i].n);
            print_ids("got     ", ids, m);
            fail_msg("synthetic SPM case '%s'", cases[i].in);
        }
        free(ids);
    }
    synth_close(&s, v);
}

/* BPE: merge ranks decide, pre-tokenizer splits, unknown pre -> default */
static void test_synthetic_bpe(void **st) {
    (void)st;
    const char *toks[] = {"a", "b", "c", "ab", "bc", "abc", "\xC4\xA0", "\xC4\xA0" "a", "!"};
    for (int variant = 0; variant < 2; variant++) {
        synth s = {ac_gguf_writer_new(), NULL, NULL};
        ac_gguf_w_str(s.w, "tokenizer.ggml.model", "gpt2");
        ac_gguf_w_str(s.w, "tokenizer.ggml.pre", variant ? "no-such-pre" : "gpt-2");
        ac_gguf_w_arr_str(s.w, "tokenizer.ggml.tokens", toks, 9);
        const char *m0[] = {"a b", "ab c", "\xC4\xA0 a"};
        const char *m1[] = {"b c", "a b", "\xC4\xA0 a"};
        ac_gguf_w_arr_str(s.w, "tokenizer.ggml.merges", variant ? m1 : m0, 3);
        ac_vocab *v = NULL;
        assert_int_equal(synth_open(&s, &v), AC_OK);
        assert_string_equal(ac_vocab_pre(v), variant ? "no-such-pre" : "gpt-2");
        int m;
        int32_t *ids = tok(v, "abc a!", 6, 1, &m); /* gpt-2: no BOS */
        /* variant 0: a b -> ab, ab c -> abc; " a" -> Ġa; "!" ; variant 1: b c first -> a bc */
        int32_t e0[] = {5, 7, 8}, e1[] = {0, 4, 7, 8};
        int32_t *e = variant ? e1 : e0;
        int ne = variant ? 4 : 3;
        if (m != ne || memcmp(ids, e, sizeof(int32_t) * (size_t)ne)) {
            print_ids("got", ids, m);
            fail_msg("synthetic BPE variant %d", variant);
        }
        free(ids);
        synth_close(&s, v);
    }
}

typedef void (*synth_fn)(ac_gguf_writer *w);

static void h_no_model(ac_gguf_writer *w) { ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"a"}, 1); }
static void h_bad_model(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "t5x");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"a"}, 1);
}
static void h_no_tokens(ac_gguf_writer *w) { ac_gguf_w_str(w, "tokenizer.ggml.model", "llama"); }
static void h_tokens_i32(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_i32(w, "tokenizer.ggml.tokens", (const int32_t[]){1, 2}, 2);
}
static void h_short_scores(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"<unk>", "<s>", "</s>"}, 3);
    ac_gguf_w_arr_f32(w, "tokenizer.ggml.scores", (const float[]){0, 0}, 2);
}
static void h_short_types(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"<unk>", "<s>", "</s>"}, 3);
    ac_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", (const int32_t[]){2, 3}, 2);
}
static void h_dup(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"<unk>", "<s>", "</s>", "x", "x"}, 5);
}
static void h_bpe_no_merges(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"a", "b"}, 2);
}
static void h_eos_missing(ac_gguf_writer *w) { /* add_eos with no EOS id (default 11 out of range) */
    ac_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"a", "b"}, 2);
    ac_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *[]){"a b"}, 1);
    ac_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 1);
}
static void h_flag_type(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"<unk>", "<s>", "</s>"}, 3);
    ac_gguf_w_str(w, "tokenizer.ggml.add_bos_token", "yes");
}
static void h_bert_no_sep(ac_gguf_writer *w) {
    ac_gguf_w_str(w, "tokenizer.ggml.model", "bert");
    ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *[]){"[PAD]", "a"}, 2);
}

static void test_hostile_metadata(void **st) {
    (void)st;
    struct {
        synth_fn f;
        int rc;
        const char *what;
    } cases[] = {
        {h_no_model, AC_ERR_FORMAT, "no tokenizer.ggml.model"},
        {h_bad_model, AC_ERR_UNSUPPORTED, "unknown model"},
        {h_no_tokens, AC_ERR_FORMAT, "no tokens"},
        {h_tokens_i32, AC_ERR_FORMAT, "tokens not strings"},
        {h_short_scores, AC_ERR_FORMAT, "too few scores"},
        {h_short_types, AC_ERR_FORMAT, "too few token types"},
        {h_dup, AC_ERR_FORMAT, "duplicate token"},
        {h_bpe_no_merges, AC_ERR_FORMAT, "BPE without merges"},
        {h_eos_missing, AC_ERR_FORMAT, "add_eos without EOS"},
        {h_flag_type, AC_ERR_FORMAT, "add_bos_token not a bool"},
        {h_bert_no_sep, AC_ERR_FORMAT, "BERT without SEP/CLS"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        synth s = {ac_gguf_writer_new(), NULL, NULL};
        cases[i].f(s.w);
        ac_vocab *v = (ac_vocab *)(uintptr_t)1;
        int rc = synth_open(&s, &v);
        if (rc != cases[i].rc) fail_msg("%s: rc %d (%s), want %d", cases[i].what, rc, ac_last_error(), cases[i].rc);
        assert_null(v);
        assert_true(strlen(ac_last_error()) > 0);
        printf("hostile: %-26s -> %s: %s\n", cases[i].what, ac_status_str(rc), ac_last_error());
        synth_close(&s, NULL);
    }
    /* out-of-range special ids keep the default */
    synth s = {ac_gguf_writer_new(), NULL, NULL};
    ac_gguf_w_str(s.w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(s.w, "tokenizer.ggml.tokens", (const char *[]){"<unk>", "<s>", "</s>", "a"}, 4);
    ac_gguf_w_u32(s.w, "tokenizer.ggml.bos_token_id", 99);
    ac_gguf_w_u32(s.w, "tokenizer.ggml.eos_token_id", 3);
    ac_vocab *v = NULL;
    assert_int_equal(synth_open(&s, &v), AC_OK);
    assert_int_equal(ac_vocab_bos(v), 1);
    assert_int_equal(ac_vocab_eos(v), 3);
    /* bad arguments */
    int n;
    int32_t ids[4];
    assert_int_equal(ac_vocab_tokenize(v, NULL, 3, 0, ids, 4, &n), AC_ERR_ARG);
    assert_int_equal(ac_vocab_tokenize(v, "a", 1, 0, NULL, 4, &n), AC_ERR_ARG);
    assert_int_equal(ac_vocab_tokenize(NULL, "a", 1, 0, ids, 4, &n), AC_ERR_ARG);
    synth_close(&s, v);
}

/* ---- pre-tokenizer internals -------------------------------------------------------------------- */

static void test_regex_collapse(void **st) {
    (void)st;
    char *c = tok_regex_collapse("\\s?\\p{L}+");
    assert_non_null(c);
    assert_string_equal(c, "\\s?[\xD2" "A-Za-z]+");
    free(c);
    c = tok_regex_collapse("[^\\s\\p{L}\\p{N}]+");
    assert_string_equal(c, "[^\\s\xD2" "A-Za-z\xD1" "0-9]+");
    free(c);
    assert_null(tok_regex_collapse("[0-9][0-9][0-9]"));
    /* splitting: digits and non-ASCII whitespace through both PCRE2 paths */
    tok_pretok p;
    const char *rx[] = {"\\p{N}", "[\r\n]"};
    assert_int_equal(tok_pretok_compile(&p, rx, 2), AC_OK);
    uint32_t cps[] = {'a', '1', '2', 0x3000, '\n', 'b'}; /* U+3000: ideographic space */
    uint32_t *lens = NULL;
    size_t np = 0;
    assert_int_equal(tok_pretok_split(&p, cps, 6, &lens, &np), AC_OK);
    uint32_t want[] = {1, 1, 1, 1, 1, 1};
    assert_int_equal(np, 6);
    assert_memory_equal(lens, want, sizeof want);
    free(lens);
    tok_pretok_free(&p);
}

/* ---- fast paths against their plain references ---------------------------------------------------- */

static void compare_dbg(ac_vocab *v, int flags, const char *text, size_t len, const char *what) {
    int n0, n1;
    tok_debug_set(v, 0);
    double t0 = ac_now();
    int32_t *a = tok(v, text, len, 1, &n0);
    double t1 = ac_now();
    tok_debug_set(v, flags);
    int32_t *b = tok(v, text, len, 1, &n1);
    double t2 = ac_now();
    tok_debug_set(v, 0);
    if (n0 != n1 || memcmp(a, b, sizeof(int32_t) * (size_t)n0)) fail_msg("%s: fast path differs from reference", what);
    if (len > 100000)
        printf("%-34s %8d tokens, fast %6.1f ms, reference %6.1f ms\n", what, n0, (t1 - t0) * 500, (t2 - t1) * 500);
    free(a);
    free(b);
}

static void test_fast_paths(void **st) {
    (void)st;
    vocab_t t;
    int any = 0;
    if (open_vocab("llama-spm", &t)) { /* pair-set segmentation == one queue */
        size_t len;
        char *text = make_long_text("llama-spm", 1u << 20, &len);
        if (text) {
            any = 1;
            compare_dbg(t.v, TOK_DBG_SPM_NO_SEGMENT, text, len, "llama-spm segmented SPM, 1 MiB");
            free(text);
        }
        close_vocab(&t);
    }
    if (open_vocab("deepseek-coder", &t)) { /* trie partition == per-token memmem */
        size_t len;
        char *text = make_long_text("deepseek-coder", 1u << 20, &len);
        if (text) {
            any = 1;
            const char *ins[] = {"<|User|>", "<|Assistant|>", "<|EOT|>", "[PAD32022]", "[PAD32040]", "<|EOT|><|EOT|>"};
            for (size_t i = 0, k = 0; i + 16 < len; i += 997, k++) { /* sprinkle user-defined token texts */
                const char *x = ins[k % 6];
                size_t l = strlen(x);
                if (i + l < len) memcpy(text + i, x, l);
            }
            compare_dbg(t.v, TOK_DBG_REF_PARTITION, text, len, "deepseek-coder udt partition, 1 MiB");
            free(text);
        }
        close_vocab(&t);
    }
    /* overlapping user-defined tokens on a synthetic vocab, random texts */
    const char *toks[] = {"<unk>", "<s>", "</s>", "<U>", "<UU>", "U>x", "ab", "b", "x", "a", "<", "U", ">"};
    int32_t types[] = {2, 3, 3, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1};
    synth s = {ac_gguf_writer_new(), NULL, NULL};
    ac_gguf_w_str(s.w, "tokenizer.ggml.model", "llama");
    ac_gguf_w_arr_str(s.w, "tokenizer.ggml.tokens", toks, 13);
    ac_gguf_w_arr_i32(s.w, "tokenizer.ggml.token_type", types, 13);
    ac_vocab *v = NULL;
    assert_int_equal(synth_open(&s, &v), AC_OK);
    for (int it = 0; it < 3000; it++) {
        char buf[48];
        int l = (int)(rnd() % 40);
        for (int j = 0; j < l; j++) buf[j] = "<U>xab "[rnd() % 7];
        compare_dbg(v, TOK_DBG_REF_PARTITION | TOK_DBG_SPM_NO_SEGMENT, buf, (size_t)l, "synthetic partition");
    }
    /* a known case: longest first ("<UU>" before "<U>"), then leftmost non-overlapping */
    int n;
    int32_t *ids = tok(v, "<UU>U>xab", 9, 0, &n);
    int32_t want[] = {4, 5, 6}; /* <UU> U>x ab */
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    synth_close(&s, v);
    if (!any) printf("(fixtures absent: synthetic checks only)\n");
}

/* ---- pre-tokenizers against a true regex engine ------------------------------------------------------ */

/* Every pre-tokenizer in the table (hand-written GPT-2 / Llama-3 matchers,
 * collapsed-category and UTF PCRE2 paths) must split like PCRE2 in UTF+UCP
 * mode running the original regexes, on text made of characters where
 * llama.cpp's engine and real regex semantics agree (no U+0085, no '~',
 * which llama.cpp's \p{S} lacks; and where a regex has a literal range
 * containing non-ASCII whitespace, as the CJK class U+0800-U+4E00 holds
 * U+2028 and U+3000, no such whitespace: llama.cpp matches those ranges
 * on text where that whitespace became U+000B, and so do we). */
static void test_pretok_vs_regex(void **st) {
    (void)st;
    static const char *const alpha[] = {
        "a", "Z", "e", "s", "t", "r", "v", "l", "d", "m", "S", "T", "L", "\xC3\xA9", "\xD0\xB6", "\xE4\xB8\xAD",
        "\xEA\xB0\x80", "\xC7\x85", "1", "2", "\xD9\xA3", "\xE2\x85\xAB", "\xC2\xBD", "'", "'", "!", ".", ",", "?",
        "_", "-", "$", "+", "<", "`", "|", "(", "\xE3\x80\x82", "\xF0\x9F\x98\x80", "\xE2\x9C\x85", "\xCC\x81",
        " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\xA8", "\x0B", "\x01",
        "\xEF\xBF\xBD",
    };
    const int na = (int)(sizeof alpha / sizeof alpha[0]);
    int total = 0;
    for (int k = 0; k < tok_pre_count(); k++) {
        const char *const *rx;
        int nrx = tok_pre_regexes(k, &rx);
        int ws_in_range = 0;
        for (int j = 0; j < nrx; j++) ws_in_range |= strstr(rx[j], "\xE0\xA0\x80") != NULL; /* U+0800 */
        tok_pretok fast, ref;
        assert_int_equal(tok_pretok_compile(&fast, rx, nrx), AC_OK);
        assert_int_equal(tok_pretok_compile_reference(&ref, rx, nrx), AC_OK);
        for (int it = 0; it < 1500; it++) {
            char buf[512];
            size_t bl = 0;
            int nch = (int)(rnd() % 40);
            for (int j = 0; j < nch; j++) {
                const char *c = alpha[rnd() % (uint32_t)na];
                if (ws_in_range && (!strcmp(c, "\xE3\x80\x80") || !strcmp(c, "\xE2\x80\xA8"))) c = " ";
                memcpy(buf + bl, c, strlen(c));
                bl += strlen(c);
            }
            uint32_t cps[512];
            size_t n = tu_decode(buf, bl, cps, NULL);
            uint32_t *l1 = NULL, *l2 = NULL;
            size_t n1 = 0, n2 = 0;
            assert_int_equal(tok_pretok_split(&fast, cps, n, &l1, &n1), AC_OK);
            assert_int_equal(tok_pretok_split(&ref, cps, n, &l2, &n2), AC_OK);
            if (n1 != n2 || (n1 && memcmp(l1, l2, n1 * sizeof *l1))) {
                fprintf(stderr, "pre '%s' text '%.*s' =", tok_pre_names(k), (int)bl, buf);
                for (size_t j = 0; j < bl; j++) fprintf(stderr, " %02x", (unsigned char)buf[j]);
                fprintf(stderr, "\n  fast:");
                for (size_t j = 0; j < n1; j++) fprintf(stderr, " %u", l1[j]);
                fprintf(stderr, "\n  ref: ");
                for (size_t j = 0; j < n2; j++) fprintf(stderr, " %u", l2[j]);
                fprintf(stderr, "\n");
                fail_msg("pre-tokenizer %s differs from the regex", tok_pre_names(k));
            }
            free(l1);
            free(l2);
            total++;
        }
        tok_pretok_free(&fast);
        tok_pretok_free(&ref);
    }
    printf("pre-tokenizers: %d pre types x random texts = %d splits equal to PCRE2 UCP\n", tok_pre_count(), total);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_spm),
        cmocka_unit_test(test_fixture_gpt2),
        cmocka_unit_test(test_memo_gpt2),
        cmocka_unit_test(test_memo_deepseek),
        cmocka_unit_test(test_fixture_deepseek_coder),
        cmocka_unit_test(test_fixture_bert),
        cmocka_unit_test(test_add_special_spm),
        cmocka_unit_test(test_add_special_gpt2),
        cmocka_unit_test(test_add_special_deepseek),
        cmocka_unit_test(test_add_special_bert),
        cmocka_unit_test(test_sanitize_utf8),
        cmocka_unit_test(test_invalid_utf8_all_vocabs),
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_roundtrip_spm),
        cmocka_unit_test(test_roundtrip_deepseek),
        cmocka_unit_test(test_roundtrip_gpt2),
        cmocka_unit_test(test_roundtrip_spm_all_tokens),
        cmocka_unit_test(test_stories260k_vocab),
        cmocka_unit_test(test_detokenize_options),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_synthetic_spm),
        cmocka_unit_test(test_synthetic_bpe),
        cmocka_unit_test(test_hostile_metadata),
        cmocka_unit_test(test_regex_collapse),
        cmocka_unit_test(test_fast_paths),
        cmocka_unit_test(test_pretok_vs_regex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
