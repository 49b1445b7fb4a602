/* test_cache_build_kill.c — "a build killed with SIGKILL at any moment leaves
 * a database that opens and holds every entry committed before the kill".
 *
 * Runs the real CLI (`attncache build -m MODEL -i corpus -o DIR --commit-every 1 -q`)
 * on a small synthetic BERT model with a WordPiece vocabulary and a corpus of
 * random-word lines (with some repeated lines), SIGKILLs it at random moments
 * (fixed seed), and after each kill checks that:
 *   - the cache opens for writing (recovering the dead writer's uncommitted tail),
 *   - ac_db_verify finds every record intact,
 *   - the entry count never decreases, and every entry seen after an earlier
 *     kill is still there with byte-identical maps;
 * each restart appends to the same directory and skips stored lines. Finally
 * one build runs to the end: every distinct corpus line is stored exactly once.
 * Skips when the CLI binary is absent. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "cache/hash.h"
#include "cache/store.h"
#include "load/gguf.h"
#include "ref_forward.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLI AC_BINARY_DIR "/attncache"
#define N_LINES 200
#define N_KILLS 6

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- the model: ref_forward's synthetic BERT + a WordPiece vocabulary of whole words ---- */

enum { V = 101, N_SPECIAL = 5 };
static char g_words[V][8];  /* ids >= N_SPECIAL: the words "waa", "wab", ... */
static char g_tokens[V][12]; /* token strings as llama.cpp stores WordPiece vocabs: whole words with a U+2581 prefix */

static void write_model(const char *path) {
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    s.n_vocab = V;
    s.n_ctx = 128;
#if defined(__SANITIZE_ADDRESS__)
    /* sanitizer builds run ~10x slower: a smaller model keeps the kills inside the builds
     * and the final build short */
    s.n_embd = 256;
    s.n_head = 4;
    s.n_head_kv = 4;
    s.n_layer = 4;
    s.n_ff = 1024;
#else
    /* a full build of the corpus takes ~3 s (Release, 2 cores): the kills land inside it */
    s.n_embd = 384;
    s.n_head = 6;
    s.n_head_kv = 6;
    s.n_layer = 8;
    s.n_ff = 1536;
#endif
    ac_gguf_writer *w = NULL;
    assert_int_equal(ref_build_writer(&s, &w), AC_OK);
    const char *toks[V];
    const char *special[N_SPECIAL] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    int32_t types[V];
    for (int i = 0; i < V; i++) {
        if (i < N_SPECIAL) snprintf(g_words[i], sizeof g_words[i], "%s", special[i]);
        else snprintf(g_words[i], sizeof g_words[i], "w%c%c", 'a' + (i - N_SPECIAL) / 26, 'a' + (i - N_SPECIAL) % 26);
        snprintf(g_tokens[i], sizeof g_tokens[i], "%s%s", i < N_SPECIAL ? "" : "\xE2\x96\x81", g_words[i]);
        toks[i] = g_tokens[i];
        types[i] = i < N_SPECIAL ? 3 : 1;
    }
    assert_int_equal(ac_gguf_w_str(w, "tokenizer.ggml.model", "bert"), AC_OK);
    assert_int_equal(ac_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, V), AC_OK);
    assert_int_equal(ac_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, V), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 0), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 1), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "tokenizer.ggml.cls_token_id", 2), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "tokenizer.ggml.seperator_token_id", 3), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "tokenizer.ggml.mask_token_id", 4), AC_OK);
    assert_int_equal(ac_gguf_w_write(w, path, 3), AC_OK);
    ac_gguf_writer_free(w);
}

/* N_LINES lines of 4..100 random words; every 10th line repeats an earlier one.
 * ids[l]: the line's tokens as the WordPiece tokenizer gives them ([CLS] words
 * [SEP]: every word is a whole-word token), n_ids[l] their count. Returns the
 * number of distinct lines; lines[] owned by the caller. */
static int write_corpus(const char *path, char **lines, int32_t ids[][128], int *n_ids) {
    uint64_t s = 0xC0FFEE;
    int distinct = 0;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int l = 0; l < N_LINES; l++) {
        if (l % 10 == 9) {
            const int src = (int)(rnd(&s) % (uint64_t)l);
            lines[l] = strdup(lines[src]);
            memcpy(ids[l], ids[src], sizeof ids[l]);
            n_ids[l] = n_ids[src];
        } else {
            const int nw = 4 + (int)(rnd(&s) % 97);
            lines[l] = malloc((size_t)nw * 4 + 1);
            char *p = lines[l];
            ids[l][0] = 2; /* [CLS] */
            for (int k = 0; k < nw; k++) {
                const int id = N_SPECIAL + (int)(rnd(&s) % (V - N_SPECIAL));
                p += sprintf(p, k ? " %s" : "%s", g_words[id]);
                ids[l][1 + k] = id;
            }
            ids[l][1 + nw] = 3; /* [SEP] */
            n_ids[l] = nw + 2;
            distinct++;
        }
        fprintf(f, "%s\n", lines[l]);
    }
    assert_int_equal(fclose(f), 0);
    /* the generated lines are distinct with overwhelming probability; count exactly */
    int d = 0;
    for (int l = 0; l < N_LINES; l++) {
        int seen = 0;
        for (int k = 0; k < l && !seen; k++) seen = !strcmp(lines[k], lines[l]);
        d += !seen;
    }
    assert_true(d <= distinct);
    return d;
}

/* Start the CLI build; stdout and stderr go to log (appended). */
static pid_t start_build(const char *model, const char *corpus, const char *dir, const char *log) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(CLI, CLI, "build", "-m", model, "-i", corpus, "-o", dir, "--commit-every", "1", "-q", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void print_log(const char *log) {
    FILE *f = fopen(log, "r");
    if (!f) return;
    char buf[512];
    while (fgets(buf, sizeof buf, f)) fprintf(stderr, "  cli: %s", buf);
    fclose(f);
}

/* What one check saw: the keys of the committed entries and a hash of each one's record payload. */
typedef struct seen {
    int64_t n;
    uint64_t key[N_LINES], sum[N_LINES];
} seen;

static uint64_t payload_hash(const ac_store_entry *e, int n_maps, int feat_dim) {
    uint64_t h = ac_xxh64(e->maps, e->map_bytes * (size_t)n_maps, (uint64_t)e->n_tokens);
    return h ^ ac_xxh64(e->feature, (size_t)feat_dim * sizeof(float), 1);
}

/* The commit slots: a copy of the database with one byte of its newest commit
 * slot flipped is reported by db verify, refused by a writer (which truncates
 * nothing), and db repair gives back every entry, byte-identical. */
static void check_slot_damage(const char *dir, const seen *prev, int it) {
    if (prev->n == 0) return;
    char db[512], cdir[512], cdb[600];
    snprintf(db, sizeof db, "%s/maps.acdb", dir);
    snprintf(cdir, sizeof cdir, "%s.slotcopy", dir);
    snprintf(cdb, sizeof cdb, "%s/maps.acdb", cdir);
    rm_rf(cdir);
    assert_int_equal(mkdir(cdir, 0755), 0);
    FILE *in = fopen(db, "rb"), *out = fopen(cdb, "wb");
    assert_non_null(in);
    assert_non_null(out);
    static uint8_t buf[1 << 16];
    size_t k, size = 0;
    uint64_t seq[2] = {0, 0};
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) {
        if (size == 0) { /* the header page: flip a byte of the newest slot */
            memcpy(&seq[0], buf + 512 + 8, 8);
            memcpy(&seq[1], buf + 1024 + 8, 8);
            buf[(seq[0] > seq[1] ? 512 : 1024) + (size_t)(it * 7 % 64)] ^= 0x5a;
        }
        assert_int_equal(fwrite(buf, 1, k, out), k);
        size += k;
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    int64_t nbad = 0;
    FILE *rep = tmpfile();
    assert_int_equal(ac_db_verify(cdir, rep, &nbad), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "commit slot"));
    fclose(rep);
    ac_store *s = NULL;
    assert_int_equal(ac_store_open(cdb, NULL, AC_STORE_WRITE, &s), AC_ERR_CACHE);
    struct stat sb;
    assert_int_equal(stat(cdb, &sb), 0);
    assert_int_equal((uint64_t)sb.st_size, size); /* nothing truncated */
    int64_t ne = -1;
    rep = tmpfile();
    assert_int_equal(ac_db_repair(cdir, rep, &ne), AC_OK);
    fclose(rep);
    assert_int_equal(ne, prev->n);
    assert_int_equal(ac_db_verify(cdir, NULL, &nbad), AC_OK);
    assert_int_equal(ac_store_open(cdb, NULL, AC_STORE_READ, &s), AC_OK);
    ac_store_params sp;
    ac_store_get_params(s, &sp);
    for (int64_t i = 0; i < prev->n; i++) {
        ac_store_entry e;
        assert_int_equal(ac_store_find(s, prev->key[i], &e), AC_OK);
        assert_true(payload_hash(&e, sp.n_layer * sp.n_head, sp.feat_dim) == prev->sum[i]);
    }
    ac_store_close(s);
    fprintf(stderr, "kill %d: newest commit slot damaged in a copy: reported, repaired (%lld entries)\n", it,
            (long long)ne);
    rm_rf(cdir);
}

/* After a kill: the cache opens for writing (recovery), verifies clean, holds
 * everything seen before (same bytes), and never fewer entries. */
static void check_after_kill(const ac_model *m, const char *dir, seen *prev, int it) {
    char db[512];
    snprintf(db, sizeof db, "%s/maps.acdb", dir);
    if (access(db, F_OK) != 0) { /* killed before the database was created (it appears atomically) */
        fprintf(stderr, "kill %d: no database yet\n", it);
        assert_int_equal(prev->n, 0);
        return;
    }
    ac_cache_params p = ac_cache_default_params();
    p.writable = 1;
    ac_cache *c = NULL;
    int rc = ac_cache_open(m, dir, &p, &c);
    if (rc) fprintf(stderr, "kill %d: writable open: %s\n", it, ac_last_error());
    assert_int_equal(rc, AC_OK);
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    int64_t nbad = -1;
    rc = ac_cache_verify(c, NULL, &nbad);
    if (rc) fprintf(stderr, "kill %d: verify: %s\n", it, ac_last_error());
    assert_int_equal(rc, AC_OK);
    assert_int_equal(nbad, 0);
    assert_int_equal(ac_cache_close(c), AC_OK);

    nbad = -1;
    FILE *rep = tmpfile();
    rc = ac_db_verify(dir, rep, &nbad);
    if (rc) fprintf(stderr, "kill %d: db verify: %s\n", it, ac_last_error());
    assert_int_equal(rc, AC_OK);
    assert_int_equal(nbad, 0);
    fclose(rep);

    /* the writer open truncated the dead writer's tail: the file ends at the committed end */
    ac_store *s = NULL;
    assert_int_equal(ac_store_open(db, NULL, AC_STORE_READ, &s), AC_OK);
    assert_null(ac_store_damage(s));
    ac_store_stats ss;
    assert_int_equal(ac_store_stats_get(s, &ss), AC_OK);
    assert_int_equal(ss.file_bytes, ss.committed_bytes);
    ac_store_params sp;
    ac_store_get_params(s, &sp);
    const int n_maps = sp.n_layer * sp.n_head;
    const int64_t n = ac_store_count(s);
    assert_int_equal(n, st.entries);
    fprintf(stderr, "kill %d: %lld entries (before: %lld)\n", it, (long long)n, (long long)prev->n);
    assert_true(n >= prev->n);
    assert_true(n <= N_LINES);
    for (int64_t i = 0; i < prev->n; i++) { /* every entry seen before: same ordinal, key and bytes */
        ac_store_entry e;
        assert_int_equal(ac_store_find(s, prev->key[i], &e), AC_OK);
        assert_int_equal(e.index, i);
        assert_true(payload_hash(&e, n_maps, sp.feat_dim) == prev->sum[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        ac_store_entry e;
        assert_int_equal(ac_store_get(s, i, &e), AC_OK);
        prev->key[i] = e.key;
        prev->sum[i] = payload_hash(&e, n_maps, sp.feat_dim);
    }
    prev->n = n;
    ac_store_close(s);
    check_slot_damage(dir, prev, it);
}

static void test_build_killed(void **state) {
    (void)state;
    if (access(CLI, X_OK) != 0) {
        fprintf(stderr, "skipped: no CLI at %s (build target attncache_cli)\n", CLI);
        skip();
    }
    char root[] = "/tmp/ac_build_kill_XXXXXX";
    assert_non_null(mkdtemp(root));
    char model[128], corpus[128], dir[128], log[128];
    snprintf(model, sizeof model, "%s/model.gguf", root);
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", root);
    snprintf(dir, sizeof dir, "%s/cache", root);
    snprintf(log, sizeof log, "%s/build.log", root);
    write_model(model);
    char *lines[N_LINES];
    int32_t (*ids)[128] = calloc(N_LINES, sizeof *ids);
    int n_ids[N_LINES];
    const int distinct = write_corpus(corpus, lines, ids, n_ids);

    ac_model *m = NULL;
    int rc = ac_model_load(model, NULL, &m);
    if (rc) fprintf(stderr, "load: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);

    seen *prev = calloc(1, sizeof *prev);
    uint64_t s = 20240611;
    int finished_early = 0;
    for (int it = 0; it < N_KILLS; it++) {
        /* the first kill during startup (2..20 ms), the others at 2 ms .. 2.2 s: during the
         * model load, the first commit (right after the first entry), record writes of the
         * uncommitted tail, later commits (at most one a second) */
        const long us = 2000 + (long)(rnd(&s) % (it == 0 ? 18000 : 2200000));
        pid_t pid = start_build(model, corpus, dir, log);
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        int status = 0;
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status)) { /* it ended before the kill */
            if (WEXITSTATUS(status) != 0) print_log(log);
            assert_int_equal(WEXITSTATUS(status), 0);
            finished_early = 1;
        } else {
            assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        }
        fprintf(stderr, "kill %d after %.3f s%s\n", it, us / 1e6, WIFEXITED(status) ? " (build had finished)" : "");
        check_after_kill(m, dir, prev, it);
    }
    /* the killed builds made progress without finishing (the test is not vacuous) */
    assert_true(prev->n > 0);
    if (!finished_early) assert_true(prev->n < distinct);

    /* one build to the end: exit 0, every distinct line exactly once */
    pid_t pid = start_build(model, corpus, dir, log);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) print_log(log);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_after_kill(m, dir, prev, N_KILLS);
    assert_int_equal(prev->n, distinct);

    /* each line is present: adding it again stores nothing */
    ac_cache_params p = ac_cache_default_params();
    p.writable = 1;
    ac_cache *c = NULL;
    assert_int_equal(ac_cache_open(m, dir, &p, &c), AC_OK);
    ac_ctx *ctx = NULL;
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(ac_ctx_new(m, &cp, &ctx), AC_OK);
    for (int l = 0; l < N_LINES; l++) {
        int added = -1;
        assert_int_equal(ac_cache_add(c, ctx, ids[l], n_ids[l], &added), AC_OK);
        if (added) fprintf(stderr, "line %d was not stored: '%s'\n", l + 1, lines[l]);
        assert_int_equal(added, 0);
    }
    ac_cache_stats st;
    assert_int_equal(ac_cache_get_stats(c, &st), AC_OK);
    assert_int_equal(st.entries, distinct);
    assert_int_equal(ac_cache_close(c), AC_OK);

    ac_ctx_free(ctx);
    ac_model_free(m);
    for (int l = 0; l < N_LINES; l++) free(lines[l]);
    free(ids);
    free(prev);
    if (!getenv("AC_KEEP_TMP")) rm_rf(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_build_killed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
