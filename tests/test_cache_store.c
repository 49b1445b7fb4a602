/* test_cache_store.c — the attention-map store through its interface
 * (store_ops.h), once per implementation in g_impls: round trips per codec,
 * reopen, model-fingerprint refusal, writer rules, a reader alongside a writer
 * (same process and another process; zero-copy pointers kept valid), readers
 * of one handle on several threads; then, on the file store, corrupted files
 * (flipped bytes, truncation, bad header, random damage), SIGKILL of a writer
 * at random moments, and a full disk (write fault hook and RLIMIT_FSIZE). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/hash.h"
#include "cache/store_ops.h"
#include "util/common.h"
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- implementations ------------------------------------------------------------------------
 * Every store implementation of the interface (store_ops.h) runs the generic
 * tests; a new implementation is one more line here. The damage, crash and
 * full-disk tests below write the file format itself and run on the file store. */
static const ac_store_ops *const g_impls[] = {&ac_store_file_ops};
#define N_IMPLS (int)(sizeof g_impls / sizeof g_impls[0])
static const ac_store_ops *g_ops; /* the implementation under test */

static int ms_open(const char *where, const ac_store_params *p, int flags, ac_mapstore **out) {
    return ac_mapstore_open(g_ops, where, p, flags, out);
}

/* ---- deterministic entries ------------------------------------------------------------- */
#define NL 2  /* layers */
#define NH 3  /* heads  */
#define FD 16 /* feature dim */

static const ac_store_params g_params = {{0x0123456789abcdefULL, 0xfedcba9876543210ULL}, NL, NH, 1, FD, 0};

typedef struct { uint64_t s; } rng;
static uint64_t rng_u64(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double rng_unif(rng *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

static const ac_map_codec codecs[] = {
    {AC_CODEC_F32, 0, 0}, {AC_CODEC_F16, 0, 0}, {AC_CODEC_Q8, 0, 0},  {AC_CODEC_Q4, 0, 0},  {AC_CODEC_TOPK, 0, 4},
    {AC_CODEC_F32, 1, 0}, {AC_CODEC_F16, 1, 0}, {AC_CODEC_Q8, 1, 0},  {AC_CODEC_Q4, 1, 0},  {AC_CODEC_TOPK, 1, 4},
};
#define N_CODECS (int)(sizeof codecs / sizeof codecs[0])

static int key_L(uint64_t key) { return 1 + (int)(key % 37); }
static ac_map_codec key_codec(uint64_t key) { return codecs[(key / 7) % N_CODECS]; }

/* feature [FD], maps [NL][NH][L][L] (softmax rows, causal if the codec is).
 * noipa: exactly one machine-code copy, so every call gives bit-identical
 * floats (GCC 12 made constant-key clones of this function whose folded
 * arithmetic differed from the generic copy in the last bit). */
__attribute__((noipa)) static void gen_entry(uint64_t key, float *feat, float *maps) {
    rng r = {key * 0x2545F4914F6CDD1DULL + 1};
    int L = key_L(key);
    ac_map_codec c = key_codec(key);
    for (int i = 0; i < FD; i++) feat[i] = (float)(rng_unif(&r) * 2 - 1);
    for (int m = 0; m < NL * NH; m++) {
        double temp = 0.05 + 3 * rng_unif(&r);
        for (int t = 0; t < L; t++) {
            float *p = maps + ((size_t)m * L + t) * L;
            int n = c.causal ? t + 1 : L;
            double s = 0;
            for (int j = 0; j < L; j++) {
                p[j] = j < n ? (float)exp((rng_unif(&r) * 2 - 1) / temp) : 0.0f;
                s += p[j];
            }
            for (int j = 0; j < n; j++) p[j] = (float)(p[j] / s);
        }
    }
}

static float *g_feat, *g_maps; /* scratch, sized for the largest L */

static int append_key(ac_mapstore *st, uint64_t key) {
    ac_map_codec c = key_codec(key);
    gen_entry(key, g_feat, g_maps);
    return ac_mapstore_append(st, key, key_L(key), NULL, &c, g_feat, g_maps);
}

/* 0 if the stored entry equals what gen_entry(key) encodes to. */
static int entry_matches(const ac_store_entry *e, uint64_t key) {
    int L = key_L(key);
    ac_map_codec c = key_codec(key);
    if (e->key != key || e->n_tokens != L || e->codec.kind != c.kind || e->codec.causal != c.causal ||
        (c.kind == AC_CODEC_TOPK && e->codec.topk != c.topk))
        return 1;
    gen_entry(key, g_feat, g_maps);
    if (memcmp(e->feature, g_feat, FD * sizeof(float)) != 0) return 2;
    if ((uintptr_t)e->feature % 64 || (uintptr_t)e->maps % 64) return 3;
    size_t mb = ac_codec_map_bytes(&c, L);
    if (e->map_bytes != mb) return 4;
    uint8_t *buf = (uint8_t *)mallocCheck(mb);
    int rc = 0;
    for (int l = 0; l < NL && !rc; l++)
        for (int h = 0; h < NH && !rc; h++) {
            if (ac_codec_encode(&c, g_maps + ((size_t)l * NH + h) * L * L, L, buf) != AC_OK) rc = 5;
            else if (memcmp(ac_store_entry_map(e, NH, l, h), buf, mb) != 0) rc = 6;
        }
    free(buf);
    return rc;
}

/* ---- files -------------------------------------------------------------------------------- */
static char g_dir[256];
static char *path_in(const char *name) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static uint8_t *read_file(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = (uint8_t *)mallocCheck((size_t)sz + 1);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void write_file(const char *p, const uint8_t *b, size_t n) {
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A DB with keys 1..n, closed. */
static void make_db(const char *p, int n) {
    unlink(p);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE | AC_STORE_CREATE, &st), AC_OK);
    for (int k = 1; k <= n; k++) assert_int_equal(append_key(st, (uint64_t)k), AC_OK);
    ac_mapstore_close(st);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/ac_test_cache_store.XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    g_feat = (float *)mallocCheck(FD * sizeof(float));
    g_maps = (float *)mallocCheck((size_t)NL * NH * 64 * 64 * sizeof(float));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) return -1;
    free(g_feat);
    free(g_maps);
    return 0;
}

/* ---- round trip ------------------------------------------------------------------------------- */
static void test_roundtrip_reopen(void **state) {
    (void)state;
    const char *p = path_in("rt.acdb");
    make_db(p, 80); /* every codec (dense + causal) several times, L 1..37 */
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 80);
    assert_null(ac_mapstore_damage(st));
    for (int64_t i = 0; i < 80; i++) {
        ac_store_entry e;
        assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
        assert_int_equal(e.index, i);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
        assert_int_equal(ac_mapstore_n_tokens(st, i), e.n_tokens); /* from the in-memory table */
        ac_store_entry e2;
        assert_int_equal(ac_mapstore_find(st, (uint64_t)i + 1, &e2), AC_OK);
        assert_ptr_equal(e2.maps, e.maps);
        /* the stored map feeds the fused kernel directly (zero copy) */
        int L = e.n_tokens, hd = 8;
        float V[37 * 8], o1[37 * 8], o2[37 * 8];
        for (int j = 0; j < L * hd; j++) V[j] = (float)((j * 7) % 11) - 5.0f;
        ac_codec_av(&e.codec, ac_store_entry_map(&e, NH, 1, 2), L, V, hd, hd, o1, hd);
        assert_int_equal(ac_codec_av_ref(&e.codec, ac_store_entry_map(&e, NH, 1, 2), L, V, hd, hd, o2, hd), AC_OK);
        for (int j = 0; j < L * hd; j++) assert_true(fabsf(o1[j] - o2[j]) <= 1e-4f * (1 + fabsf(o2[j])));
    }
    ac_store_entry e;
    assert_int_equal(ac_mapstore_find(st, 999, &e), AC_ERR_RANGE);
    assert_int_equal(ac_mapstore_get(st, 80, &e), AC_ERR_RANGE);
    assert_int_equal(ac_mapstore_get(st, -1, &e), AC_ERR_RANGE);
    assert_int_equal(ac_mapstore_n_tokens(st, 80), -1);
    assert_int_equal(ac_mapstore_n_tokens(st, -1), -1);
    int64_t bad = -1;
    assert_int_equal(ac_mapstore_verify(st, &bad, stderr), AC_OK);
    assert_int_equal(bad, 0);
    ac_store_stats s;
    assert_int_equal(ac_mapstore_stats_get(st, &s), AC_OK);
    assert_int_equal(s.entries, 80);
    uint64_t sum = 0;
    int64_t ne = 0;
    for (int k = 0; k < AC_CODEC_COUNT; k++) { sum += s.codec_bytes[k]; ne += s.codec_entries[k]; }
    assert_int_equal(ne, 80);
    if (g_ops == &ac_store_file_ops) { /* the file's layout: a 4 KiB header page, then the records */
        assert_true(sum == s.committed_bytes - 4096);
        assert_true(s.file_bytes == s.committed_bytes);
    }
    assert_true(s.codec_bytes[AC_CODEC_Q8] < s.codec_bytes[AC_CODEC_F32]);
    char *txt = NULL;
    size_t tl = 0;
    FILE *mf = open_memstream(&txt, &tl);
    ac_mapstore_stats_print(st, mf);
    fclose(mf);
    assert_non_null(strstr(txt, "entries    80"));
    assert_non_null(strstr(txt, "codec q4"));
    free(txt);
    ac_store_params got;
    ac_mapstore_get_params(st, &got);
    assert_memory_equal(&got, &g_params, sizeof got);
    ac_mapstore_close(st);

    /* reopen as writer, add more, reopen again */
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 80);
    for (int k = 81; k <= 90; k++) assert_int_equal(append_key(st, (uint64_t)k), AC_OK);
    ac_mapstore_close(st);
    assert_int_equal(ms_open(p, NULL, AC_STORE_READ, &st), AC_OK); /* NULL: accept the file's model */
    assert_int_equal(ac_mapstore_count(st), 90);
    assert_int_equal(ac_mapstore_get(st, 85, &e), AC_OK);
    assert_int_equal(entry_matches(&e, 86), 0);
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_mapstore_close(st);
}

static void test_model_mismatch(void **state) {
    (void)state;
    const char *p = path_in("mm.acdb");
    make_db(p, 2);
    ac_mapstore *st = NULL;
    ac_store_params q = g_params;
    q.fingerprint[1] ^= 1;
    assert_int_equal(ms_open(p, &q, AC_STORE_READ, &st), AC_ERR_CACHE);
    assert_null(st);
    assert_non_null(strstr(ac_last_error(), "different model"));
    assert_non_null(strstr(ac_last_error(), "fedcba9876543210"));
    q = g_params;
    q.n_head = 4;
    assert_int_equal(ms_open(p, &q, AC_STORE_WRITE, &st), AC_ERR_CACHE);
    q = g_params;
    q.feat_dim = 32;
    assert_int_equal(ms_open(p, &q, AC_STORE_READ, &st), AC_ERR_CACHE);
    q = g_params;
    q.causal = 0;
    assert_int_equal(ms_open(p, &q, AC_STORE_READ, &st), AC_ERR_CACHE);
    q = g_params;
    q.n_layer = 0;
    assert_int_equal(ms_open(p, &q, AC_STORE_READ, &st), AC_ERR_ARG);
    assert_int_equal(ms_open(path_in("missing.acdb"), &g_params, AC_STORE_READ, &st), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), "missing.acdb"));
    assert_int_equal(ms_open(p, NULL, AC_STORE_WRITE | AC_STORE_CREATE, &st), AC_ERR_ARG);
}

static void test_writer_rules(void **state) {
    (void)state;
    const char *p = path_in("wr.acdb");
    make_db(p, 3);
    ac_mapstore *w = NULL, *w2 = NULL, *r = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &w), AC_OK);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &w2), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "locked by another writer"));
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &r), AC_OK);
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    float feat[FD] = {0};
    assert_int_equal(ac_mapstore_begin(r, 100, 4, &c, feat), AC_ERR_ARG); /* read-only handle */
    assert_int_equal(ac_mapstore_begin(w, 2, 4, &c, feat), AC_ERR_ARG);   /* duplicate key */
    assert_non_null(strstr(ac_last_error(), "already"));
    assert_int_equal(ac_mapstore_begin(w, 100, 0, &c, feat), AC_ERR_ARG); /* L = 0 */
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, NULL), AC_ERR_ARG); /* no feature */
    float P[16];
    for (int i = 0; i < 16; i++) P[i] = 0.25f;
    /* out of order maps drop the entry */
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, feat), AC_OK);
    assert_int_equal(ac_mapstore_begin(w, 101, 4, &c, feat), AC_ERR_ARG); /* one at a time */
    assert_int_equal(ac_mapstore_put_map(w, 0, 1, P), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "expected layer 0 head 0"));
    assert_int_equal(ac_mapstore_put_map(w, 0, 0, P), AC_ERR_ARG); /* entry was dropped */
    /* missing maps */
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, feat), AC_OK);
    assert_int_equal(ac_mapstore_put_map(w, 0, 0, P), AC_OK);
    assert_int_equal(ac_mapstore_end(w), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "1 of 6 maps"));
    /* a non-probability drops the entry, the DB is unharmed */
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, feat), AC_OK);
    P[5] = NAN;
    assert_int_equal(ac_mapstore_put_map(w, 0, 0, P), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "layer 0 head 0"));
    P[5] = 0.25f;
    /* encoded maps of the wrong size */
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, feat), AC_OK);
    uint8_t enc[4096];
    assert_int_equal(ac_mapstore_put_map_encoded(w, 0, 0, enc, 17), AC_ERR_ARG);
    /* a good one through put_map_encoded */
    size_t mb = ac_codec_map_bytes(&c, 4);
    assert_int_equal(ac_codec_encode(&c, P, 4, enc), AC_OK);
    assert_int_equal(ac_mapstore_begin(w, 100, 4, &c, feat), AC_OK);
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NH; h++) assert_int_equal(ac_mapstore_put_map_encoded(w, l, h, enc, mb), AC_OK);
    assert_int_equal(ac_mapstore_end(w), AC_OK);
    assert_int_equal(ac_mapstore_commit(w), AC_OK);
    assert_int_equal(ac_mapstore_count(w), 4);
    ac_mapstore_close(w);
    ac_mapstore_close(r);
    /* causal codecs need a causal model */
    ac_store_params nc = g_params;
    nc.causal = 0;
    const char *p2 = path_in("noncausal.acdb");
    assert_int_equal(ms_open(p2, &nc, AC_STORE_WRITE | AC_STORE_CREATE, &w), AC_OK);
    ac_map_codec cc = {AC_CODEC_Q8, 1, 0};
    assert_int_equal(ac_mapstore_begin(w, 1, 4, &cc, feat), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "non-causal"));
    ac_mapstore_close(w);
    /* the lock is released by close: a new writer gets it */
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &w), AC_OK);
    ac_mapstore_close(w);
}

/* ---- readers alongside the writer ------------------------------------------------------------ */
static void test_reader_sees_committed_only(void **state) {
    (void)state;
    const char *p = path_in("rw.acdb");
    unlink(p);
    ac_store_set_reserve_hint(64 << 10); /* tiny regions: every growth maps a new region */
    ac_mapstore *w = NULL, *r = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE | AC_STORE_CREATE, &w), AC_OK);
    for (int k = 1; k <= 3; k++) assert_int_equal(append_key(w, (uint64_t)k), AC_OK);
    /* a finished but uncommitted entry, then one in progress */
    ac_map_codec c = key_codec(4);
    gen_entry(4, g_feat, g_maps);
    int L = key_L(4);
    assert_int_equal(ac_mapstore_begin(w, 4, L, &c, g_feat), AC_OK);
    for (int m = 0; m < NL * NH; m++) assert_int_equal(ac_mapstore_put_map(w, m / NH, m % NH, g_maps + (size_t)m * L * L), AC_OK);
    assert_int_equal(ac_mapstore_end(w), AC_OK);
    assert_int_equal(ac_mapstore_count(w), 3); /* not visible before commit, even to the writer */
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &r), AC_OK);
    assert_int_equal(ac_mapstore_count(r), 3);
    ac_store_entry e0, e;
    assert_int_equal(ac_mapstore_get(r, 0, &e0), AC_OK);
    assert_int_equal(ac_mapstore_find(r, 4, &e), AC_ERR_RANGE);
    int64_t nn = -1;
    assert_int_equal(ac_mapstore_refresh(r, &nn), AC_OK);
    assert_int_equal(nn, 0);
    assert_int_equal(ac_mapstore_commit(w), AC_OK);
    assert_int_equal(ac_mapstore_refresh(r, &nn), AC_OK);
    assert_int_equal(nn, 1);
    assert_int_equal(ac_mapstore_find(r, 4, &e), AC_OK);
    assert_int_equal(entry_matches(&e, 4), 0);
    /* grow well past the reader's mapping: old pointers must stay valid */
    for (int k = 5; k <= 60; k++) assert_int_equal(append_key(w, (uint64_t)k), AC_OK);
    assert_int_equal(ac_mapstore_refresh(r, &nn), AC_OK);
    assert_int_equal(nn, 56);
    assert_int_equal(entry_matches(&e0, 1), 0);
    assert_int_equal(entry_matches(&e, 4), 0);
    for (int64_t i = 0; i < 60; i++) {
        assert_int_equal(ac_mapstore_get(r, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
    }
    ac_mapstore_close(w);
    assert_int_equal(ac_mapstore_verify(r, NULL, NULL), AC_OK);
    ac_mapstore_close(r);
    ac_store_set_reserve_hint(0);
}

/* Readers of one handle on several threads at once (the first get of a record
 * verifies it: the threads race to do so): every get succeeds and every
 * thread is handed the same zero-copy pointers. */
#define RD_THREADS 4
#define RD_N 40
typedef struct rd_job {
    ac_mapstore *st;
    const uint8_t *maps[RD_N];
    int bad;
} rd_job;

static void *rd_run(void *arg) {
    rd_job *j = arg;
    for (int64_t i = RD_N - 1; i >= 0; i--) {
        ac_store_entry e, f;
        if (ac_mapstore_get(j->st, i, &e) != AC_OK || ac_mapstore_find(j->st, (uint64_t)i + 1, &f) != AC_OK ||
            f.maps != e.maps || ac_mapstore_n_tokens(j->st, i) != e.n_tokens)
            j->bad++;
        j->maps[i] = e.maps;
    }
    return NULL;
}

static void test_concurrent_readers(void **state) {
    (void)state;
    const char *p = path_in("cr.acdb");
    make_db(p, RD_N);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    pthread_t th[RD_THREADS];
    static rd_job jobs[RD_THREADS];
    for (int t = 0; t < RD_THREADS; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].st = st;
        assert_int_equal(pthread_create(&th[t], NULL, rd_run, &jobs[t]), 0);
    }
    for (int t = 0; t < RD_THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(jobs[t].bad, 0);
        assert_memory_equal(jobs[t].maps, jobs[0].maps, sizeof jobs[0].maps);
    }
    for (int64_t i = 0; i < RD_N; i++) {
        ac_store_entry e;
        assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
    }
    ac_mapstore_close(st);
}

/* A writer process appends while this process reads. */
static void test_cross_process_reader(void **state) {
    (void)state;
    const char *p = path_in("xp.acdb");
    make_db(p, 1);
    const int N = 60;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ac_mapstore *w = NULL;
        if (ms_open(p, &g_params, AC_STORE_WRITE | AC_STORE_NOSYNC, &w) != AC_OK) _exit(2);
        for (int k = 2; k <= N; k++) {
            if (append_key(w, (uint64_t)k) != AC_OK) _exit(3);
            struct timespec ts = {0, 300000};
            nanosleep(&ts, NULL);
        }
        ac_mapstore_close(w);
        _exit(0);
    }
    ac_mapstore *r = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &r), AC_OK);
    int64_t seen = ac_mapstore_count(r), prev = seen;
    int refreshes = 0, grew = 0;
    double t0 = ac_now();
    while (seen < N && ac_now() - t0 < 60) {
        int64_t nn;
        assert_int_equal(ac_mapstore_refresh(r, &nn), AC_OK);
        refreshes++;
        seen = ac_mapstore_count(r);
        assert_true(seen >= prev);
        if (seen > prev) grew++;
        for (int64_t i = prev; i < seen; i++) {
            ac_store_entry e;
            assert_int_equal(ac_mapstore_get(r, i, &e), AC_OK);
            assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
        }
        assert_null(ac_mapstore_damage(r));
        prev = seen;
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(seen, N);
    print_message("cross-process: %d refreshes, the count grew %d times\n", refreshes, grew);
    assert_true(grew >= 2); /* saw the DB grow while the writer ran */
    assert_int_equal(ac_mapstore_verify(r, NULL, NULL), AC_OK);
    ac_mapstore_close(r);
}

/* ---- corruption ---------------------------------------------------------------------------------- */
static uint64_t entry_offset(const char *p, int64_t i) {
    ac_mapstore *st = NULL;
    ac_store_entry e;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
    uint64_t off = e.offset;
    ac_mapstore_close(st);
    return off;
}

static void test_corrupt_payload(void **state) {
    (void)state;
    const char *p = path_in("cp.acdb");
    make_db(p, 6);
    uint64_t off3 = entry_offset(p, 3);
    size_t n;
    uint8_t *b = read_file(p, &n);
    b[off3 + 64 + 64 + 5] ^= 0x10; /* inside the first map of entry 3 */
    write_file(p, b, n);
    free(b);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 6);
    ac_store_entry e;
    assert_int_equal(ac_mapstore_get(st, 3, &e), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "checksum"));
    assert_int_equal(ac_mapstore_find(st, 4, &e), AC_ERR_CACHE); /* key 4 = entry 3 */
    for (int64_t i = 0; i < 6; i++) {
        if (i == 3) continue;
        assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
    }
    int64_t bad = 0;
    assert_int_equal(ac_mapstore_verify(st, &bad, NULL), AC_ERR_CACHE);
    assert_int_equal(bad, 1);
    assert_non_null(strstr(ac_last_error(), "payload checksum"));
    ac_mapstore_close(st);
    /* AC_STORE_NO_VERIFY trusts the file: the damaged entry is handed out */
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ | AC_STORE_NO_VERIFY, &st), AC_OK);
    assert_int_equal(ac_mapstore_get(st, 3, &e), AC_OK);
    assert_int_not_equal(entry_matches(&e, 4), 0);
    ac_mapstore_close(st);
}

static void test_corrupt_record_header(void **state) {
    (void)state;
    const char *p = path_in("ch.acdb");
    make_db(p, 6);
    uint64_t off3 = entry_offset(p, 3);
    size_t n;
    uint8_t *b = read_file(p, &n);
    b[off3 + 20] ^= 0x01; /* the key field of entry 3's header */
    write_file(p, b, n);
    free(b);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 3); /* entries before the damage */
    assert_non_null(ac_mapstore_damage(st));
    assert_non_null(strstr(ac_mapstore_damage(st), "header checksum"));
    for (int64_t i = 0; i < 3; i++) {
        ac_store_entry e;
        assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
    }
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_ERR_CACHE);
    ac_store_stats s;
    ac_mapstore_stats_get(st, &s);
    assert_true(s.damaged && s.damage_offset == off3);
    ac_mapstore_close(st);
    /* a writer refuses a damaged DB, unless asked to repair it; the repair
     * keeps the intact records after the damaged one (a rewritten copy) */
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "damaged"));
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE | AC_STORE_REPAIR, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 5);
    assert_int_equal(append_key(st, 50), AC_OK);
    ac_mapstore_close(st);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 6);
    assert_null(ac_mapstore_damage(st));
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_store_entry e;
    const uint64_t keys[] = {1, 2, 3, 5, 6, 50};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ac_mapstore_find(st, keys[i], &e), AC_OK);
        assert_int_equal(entry_matches(&e, keys[i]), 0);
    }
    assert_int_equal(ac_mapstore_find(st, 4, &e), AC_ERR_RANGE);
    ac_mapstore_close(st);
    /* the damaged original is kept beside it */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s.damaged.* >/dev/null 2>&1", p);
    assert_int_equal(system(cmd), 0);
}

/* Every byte of both commit slots, flipped: the newest slot damaged is
 * reported (reader, verify) and a writer refuses without touching the file; the
 * older slot damaged costs nothing and is reported by verify; repair always
 * gives back every committed entry, byte-identical, and a writable DB. */
static void test_commit_slot_damage(void **state) {
    (void)state;
    const char *p = path_in("slot.acdb");
    make_db(p, 6);
    size_t n;
    uint8_t *orig = read_file(p, &n);
    uint8_t *b = (uint8_t *)mallocCheck(n);
    uint64_t s0, s1;
    memcpy(&s0, orig + 512 + 8, 8);
    memcpy(&s1, orig + 1024 + 8, 8);
    const size_t newest = s0 > s1 ? 512 : 1024;
    int n_newest = 0, n_older = 0;
    for (size_t pos = 512; pos < 1024 + 64; pos++) {
        if (pos == 512 + 64) pos = 1024;
        memcpy(b, orig, n);
        b[pos] ^= (uint8_t)(1u << (pos % 8));
        write_file(p, b, n);
        ac_mapstore *st = NULL;
        assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
        int64_t bad = 0;
        assert_int_equal(ac_mapstore_verify(st, &bad, NULL), AC_ERR_CACHE);
        assert_int_equal(bad, 1);
        assert_non_null(strstr(ac_last_error(), "commit slot"));
        ac_store_stats ss;
        assert_int_equal(ac_mapstore_stats_get(st, &ss), AC_OK);
        assert_true(ss.slot_damaged);
        if ((pos & ~(size_t)63) == newest) {
            n_newest++;
            assert_int_equal(ac_mapstore_count(st), 5);
            assert_non_null(ac_mapstore_damage(st));
            assert_int_equal(ss.lost_entries, 1);
            ac_mapstore_close(st);
            assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_ERR_CACHE);
            size_t n2;
            uint8_t *after = read_file(p, &n2);
            assert_true(n2 == n && memcmp(after, b, n) == 0);
            free(after);
        } else {
            n_older++;
            assert_int_equal(ac_mapstore_count(st), 6);
            assert_null(ac_mapstore_damage(st));
            ac_mapstore_close(st);
        }
        int64_t ne = -1;
        assert_int_equal(ac_store_repair(p, &g_params, NULL, &ne, NULL), AC_OK);
        assert_int_equal(ne, 6);
        assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_OK);
        assert_int_equal(append_key(st, 100), AC_OK);
        ac_mapstore_close(st);
        assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
        assert_int_equal(ac_mapstore_count(st), 7);
        assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
        for (int64_t i = 0; i < 7; i++) {
            ac_store_entry e;
            assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
            assert_int_equal(entry_matches(&e, i < 6 ? (uint64_t)i + 1 : 100), 0);
        }
        ac_mapstore_close(st);
    }
    assert_int_equal(n_newest, 64);
    assert_int_equal(n_older, 64);
    /* both slots damaged: no reader can open it, repair recovers every record */
    memcpy(b, orig, n);
    b[512 + 9] ^= 4;
    b[1024 + 17] ^= 1;
    write_file(p, b, n);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "db repair"));
    int64_t ne = -1;
    assert_int_equal(ac_store_repair(p, &g_params, NULL, &ne, NULL), AC_OK);
    assert_int_equal(ne, 6);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 6);
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_mapstore_close(st);
    /* an intact DB: repair leaves it byte for byte */
    write_file(p, orig, n);
    assert_int_equal(ac_store_repair(p, &g_params, NULL, &ne, NULL), AC_OK);
    assert_int_equal(ne, 6);
    size_t n2;
    uint8_t *after = read_file(p, &n2);
    assert_true(n2 == n && memcmp(after, orig, n) == 0);
    free(after);
    free(b);
    free(orig);
}

static void test_truncated(void **state) {
    (void)state;
    const char *p = path_in("tr.acdb");
    make_db(p, 6);
    uint64_t off4 = entry_offset(p, 4);
    assert_int_equal(truncate(p, (off_t)(off4 + 100)), 0); /* mid entry 4 */
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 4);
    assert_non_null(ac_mapstore_damage(st));
    print_message("truncated: %s\n", ac_mapstore_damage(st));
    for (int64_t i = 0; i < 4; i++) {
        ac_store_entry e;
        assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
    }
    ac_mapstore_close(st);
    assert_int_equal(truncate(p, 4096), 0);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 0);
    assert_non_null(ac_mapstore_damage(st));
    ac_mapstore_close(st);
    assert_int_equal(truncate(p, 100), 0);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "too small"));
    assert_int_equal(truncate(p, 0), 0);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
}

static void test_bad_header(void **state) {
    (void)state;
    const char *p = path_in("bh.acdb");
    make_db(p, 3);
    size_t n;
    uint8_t *orig = read_file(p, &n);
    uint8_t *b = (uint8_t *)mallocCheck(n);
    ac_mapstore *st = NULL;
    /* magic */
    memcpy(b, orig, n);
    b[0] = 'X';
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "bad magic"));
    /* a flipped bit in the model fields */
    memcpy(b, orig, n);
    b[30] ^= 0x40;
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "header checksum"));
    /* a future major version, correctly checksummed */
    memcpy(b, orig, n);
    uint32_t v = 7;
    memcpy(b + 8, &v, 4);
    uint64_t h = ac_xxh64(b, 120, 0);
    memcpy(b + 120, &h, 8);
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "version 7"));
    /* both commit slots damaged */
    memcpy(b, orig, n);
    b[512 + 20] ^= 1;
    b[1024 + 20] ^= 1;
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "no valid commit"));
    /* only the newest slot damaged: readers get the previous commit (one entry
     * fewer), but it is reported, and the writer touches nothing until repair */
    memcpy(b, orig, n);
    uint64_t s0, s1;
    memcpy(&s0, b + 512 + 8, 8);
    memcpy(&s1, b + 1024 + 8, 8);
    b[(s0 > s1 ? 512 : 1024) + 20] ^= 1;
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 2);
    assert_non_null(ac_mapstore_damage(st));
    assert_non_null(strstr(ac_mapstore_damage(st), "commit 5, the newest"));
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "commit slot"));
    ac_mapstore_close(st);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "db repair"));
    size_t n2;
    uint8_t *after = read_file(p, &n2);
    assert_true(n2 == n && memcmp(after, b, n) == 0); /* the refused writer changed nothing */
    free(after);
    int64_t ne = -1;
    assert_int_equal(ac_store_repair(p, &g_params, NULL, &ne, NULL), AC_OK);
    assert_int_equal(ne, 3);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 3);
    assert_null(ac_mapstore_damage(st));
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_mapstore_close(st);
    /* garbage file, directory */
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 131 + 7);
    write_file(p, b, n);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_ERR_FORMAT);
    assert_int_not_equal(ms_open(g_dir, &g_params, AC_STORE_READ, &st), AC_OK);
    free(b);
    free(orig);
}

/* Random damage: open/get/verify never crash, and every entry handed out is
 * exactly what was written. */
static void test_random_damage(void **state) {
    (void)state;
    const char *p = path_in("fz.acdb");
    make_db(p, 5);
    size_t n;
    uint8_t *orig = read_file(p, &n);
    uint8_t *b = (uint8_t *)mallocCheck(n);
    rng r = {42};
    int opened = 0, served = 0, refused = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(b, orig, n);
        size_t len = n;
        int flips = 1 + (int)(rng_u64(&r) % 4);
        const int slots_only = it % 6 == 1; /* the commit slots alone: no record is touched */
        for (int f = 0; f < flips; f++) {
            size_t pos = slots_only ? (rng_u64(&r) & 1 ? 1024 : 512) + rng_u64(&r) % 64
                       : (it % 3 == 0) ? rng_u64(&r) % 4096 : rng_u64(&r) % n; /* header page a third of the time */
            b[pos] ^= (uint8_t)(1u << (rng_u64(&r) % 8));
        }
        if (it % 5 == 4 && !slots_only) len = 4096 + rng_u64(&r) % (n - 4096);
        write_file(p, b, len);
        /* a writer never truncates or overwrites an intact record (it refuses a
         * damaged file), and repair gives back every intact record there is:
         * all of them when only the commit slots were hit */
        ac_mapstore *st = NULL;
        if (ms_open(p, &g_params, AC_STORE_WRITE, &st) == AC_OK) ac_mapstore_close(st);
        int64_t n_rep = -1;
        int rrc = ac_store_repair(p, &g_params, NULL, &n_rep, NULL);
        if (slots_only) {
            assert_int_equal(rrc, AC_OK);
            assert_int_equal(n_rep, 5);
        }
        if (rrc == AC_OK) {
            assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
            if (ac_mapstore_verify(st, NULL, stderr) != AC_OK) fail_msg("after repair (it %d): %s", it, ac_last_error());
            for (int64_t i = 0; i < ac_mapstore_count(st); i++) {
                ac_store_entry e;
                assert_int_equal(ac_mapstore_get(st, i, &e), AC_OK);
                assert_int_equal(entry_matches(&e, e.key), 0);
            }
            ac_mapstore_close(st);
        }
        write_file(p, b, len);
        int rc = ms_open(p, &g_params, AC_STORE_READ, &st);
        if (rc != AC_OK) {
            assert_true(rc == AC_ERR_FORMAT || rc == AC_ERR_CACHE);
            assert_true(strlen(ac_last_error()) > 10);
            continue;
        }
        opened++;
        for (int64_t i = 0; i < ac_mapstore_count(st); i++) {
            ac_store_entry e;
            rc = ac_mapstore_get(st, i, &e);
            if (rc == AC_OK) {
                assert_int_equal(entry_matches(&e, e.key), 0);
                served++;
            } else {
                assert_int_equal(rc, AC_ERR_CACHE);
                refused++;
            }
        }
        ac_mapstore_verify(st, NULL, NULL);
        ac_mapstore_close(st);
    }
    print_message("random damage: %d/300 opened, %d entries served intact, %d refused\n", opened, served, refused);
    assert_true(opened > 0 && served > 0 && refused > 0);
    free(b);
    free(orig);
}

/* ---- crash safety: SIGKILL --------------------------------------------------------------------- */
static void test_sigkill(void **state) {
    (void)state;
    const char *p = path_in("kill.acdb");
    unlink(p);
    rng r = {2024};
    uint64_t next_key = 1;
    int64_t total_reported = 0;
    for (int it = 0; it < 8; it++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        uint64_t base = next_key;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            ac_mapstore *w = NULL;
            int flags = AC_STORE_WRITE | AC_STORE_CREATE | ((it & 1) ? AC_STORE_NOSYNC : 0);
            if (ms_open(p, &g_params, flags, &w) != AC_OK) _exit(2);
            for (uint64_t k = base;; k++) {
                if (append_key(w, k) != AC_OK) _exit(3);
                if (write(fds[1], &k, sizeof k) != (ssize_t)sizeof k) _exit(4); /* report: committed */
            }
        }
        close(fds[1]);
        struct timespec ts = {0, (long)(2000000 + rng_u64(&r) % 40000000)}; /* 2..42 ms */
        nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        uint64_t k, reported = 0, last = base - 1;
        while (read(fds[0], &k, sizeof k) == (ssize_t)sizeof k) { reported++; last = k; }
        close(fds[0]);
        if (access(p, F_OK) != 0) { /* killed before it created the file */
            assert_int_equal(reported, 0);
            continue;
        }
        ac_mapstore *st = NULL;
        assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
        assert_null(ac_mapstore_damage(st));
        for (uint64_t q = base; q <= last; q++) { /* every reported entry, intact */
            ac_store_entry e;
            assert_int_equal(ac_mapstore_find(st, q, &e), AC_OK);
            assert_int_equal(entry_matches(&e, q), 0);
        }
        assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
        int64_t count = ac_mapstore_count(st);
        /* at most one committed entry was not reported (killed between commit and pipe write) */
        assert_true((uint64_t)count == last || (uint64_t)count == last + 1);
        next_key = (uint64_t)count + 1;
        ac_mapstore_close(st);
        /* the newest commit slot of a copy damaged: reported, the writer refuses,
         * repair gives back every committed entry (the kill tests cover the slots) */
        {
            size_t cn;
            uint8_t *cb = read_file(p, &cn);
            uint64_t q0, q1;
            memcpy(&q0, cb + 512 + 8, 8);
            memcpy(&q1, cb + 1024 + 8, 8);
            size_t at = (q0 > q1 ? 512 : 1024) + rng_u64(&r) % 64;
            cb[at] ^= 0x5a;
            char cp[600];
            snprintf(cp, sizeof cp, "%s.copy", p);
            write_file(cp, cb, cn);
            ac_store *cs = NULL;
            assert_int_equal(ac_store_open(cp, &g_params, AC_STORE_READ, &cs), AC_OK);
            int64_t before = ac_store_count(cs);
            int lost = ac_store_damage(cs) != NULL;
            assert_true(lost ? ac_store_verify(cs, NULL, NULL) == AC_ERR_CACHE : before == count);
            ac_store_close(cs);
            if (lost) assert_int_equal(ac_store_open(cp, &g_params, AC_STORE_WRITE, &cs), AC_ERR_CACHE);
            int64_t ne = -1;
            assert_int_equal(ac_store_repair(cp, &g_params, NULL, &ne, NULL), AC_OK);
            assert_true(ne >= count);
            assert_int_equal(ac_store_open(cp, &g_params, AC_STORE_READ, &cs), AC_OK);
            for (uint64_t q = base; q <= last; q++) {
                ac_store_entry e;
                assert_int_equal(ac_store_find(cs, q, &e), AC_OK);
                assert_int_equal(entry_matches(&e, q), 0);
            }
            assert_int_equal(ac_store_verify(cs, NULL, NULL), AC_OK);
            ac_store_close(cs);
            free(cb);
            unlink(cp);
        }
        /* the next writer cuts off the dead writer's uncommitted tail */
        if (ms_open(p, &g_params, AC_STORE_WRITE, &st) != AC_OK) fail_msg("writer: %s", ac_last_error());
        ac_store_stats s;
        ac_mapstore_stats_get(st, &s);
        assert_true(s.file_bytes == s.committed_bytes);
        ac_mapstore_close(st);
        total_reported += (int64_t)reported;
        print_message("kill %d: %llu reported, %lld in the DB\n", it, (unsigned long long)reported, (long long)count);
    }
    assert_true(total_reported > 0);
}

/* ---- full disk ----------------------------------------------------------------------------------- */
static long long g_budget; /* bytes the fake disk still takes */
static int g_fail_header;  /* fail writes into the header page (commit slots) */
static ssize_t fake_pwrite(int fd, const void *buf, size_t n, off_t off) {
    if (g_fail_header && off < 4096) { errno = EIO; return -1; }
    if (off >= 4096) {
        if (g_budget <= 0) { errno = ENOSPC; return -1; }
        if ((long long)n > g_budget) n = (size_t)g_budget; /* a short write first, like a real full disk */
        g_budget -= (long long)n;
    }
    return pwrite(fd, buf, n, off);
}

static void test_enospc_hook(void **state) {
    (void)state;
    const char *p = path_in("full.acdb");
    make_db(p, 3);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_WRITE, &st), AC_OK);
    g_budget = 60000;
    g_fail_header = 0;
    ac_store_set_pwrite_hook(fake_pwrite);
    int rc = AC_OK, ok = 0;
    for (uint64_t k = 4; k < 200 && rc == AC_OK; k++) {
        rc = append_key(st, k);
        if (rc == AC_OK) ok++;
    }
    assert_int_equal(rc, AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), "No space left"));
    assert_non_null(strstr(ac_last_error(), "committed entries intact"));
    assert_int_equal(ac_mapstore_count(st), 3 + ok);
    /* space comes back: the same handle goes on */
    ac_store_set_pwrite_hook(NULL);
    assert_int_equal(append_key(st, 500), AC_OK);
    /* a failing commit write poisons the handle; the commit before stays */
    ac_store_set_pwrite_hook(fake_pwrite);
    g_budget = 1 << 30;
    g_fail_header = 1;
    assert_int_equal(append_key(st, 501), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), "commit"));
    assert_int_equal(append_key(st, 502), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), "reopen"));
    ac_store_set_pwrite_hook(NULL);
    g_fail_header = 0;
    ac_mapstore_close(st);
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 3 + ok + 1);
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_store_entry e;
    assert_int_equal(ac_mapstore_find(st, 500, &e), AC_OK);
    assert_int_equal(entry_matches(&e, 500), 0);
    assert_int_equal(ac_mapstore_find(st, 501, &e), AC_ERR_RANGE);
    ac_mapstore_close(st);
    print_message("fake full disk: %d entries fitted before ENOSPC\n", ok);
}

/* The real thing: RLIMIT_FSIZE in a child with SIGXFSZ ignored -> EFBIG. */
static void test_rlimit_fsize(void **state) {
    (void)state;
    const char *p = path_in("fsize.acdb");
    make_db(p, 3);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        signal(SIGXFSZ, SIG_IGN);
        ac_mapstore *w = NULL;
        if (ms_open(p, &g_params, AC_STORE_WRITE, &w) != AC_OK) _exit(2);
        struct rlimit rl = {(rlim_t)sb.st_size + 50000, (rlim_t)sb.st_size + 50000};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
        int ok = 0, rc = AC_OK;
        for (uint64_t k = 4; k < 500 && rc == AC_OK; k++) {
            rc = append_key(w, k);
            if (rc == AC_OK) ok++;
        }
        int big = strstr(ac_last_error(), "File too large") != NULL;
        int msg[3] = {ok, rc, big};
        if (write(fds[1], msg, sizeof msg) != (ssize_t)sizeof msg) _exit(4);
        ac_mapstore_close(w);
        _exit(0);
    }
    close(fds[1]);
    int msg[3] = {0, 0, 0}, status;
    assert_int_equal(read(fds[0], msg, sizeof msg), (ssize_t)sizeof msg);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(msg[1], AC_ERR_IO);
    assert_int_equal(msg[2], 1);
    assert_true(msg[0] >= 1);
    ac_mapstore *st = NULL;
    assert_int_equal(ms_open(p, &g_params, AC_STORE_READ, &st), AC_OK);
    assert_int_equal(ac_mapstore_count(st), 3 + msg[0]);
    assert_null(ac_mapstore_damage(st));
    assert_int_equal(ac_mapstore_verify(st, NULL, NULL), AC_OK);
    ac_mapstore_close(st);
    print_message("RLIMIT_FSIZE: %d entries fitted before EFBIG\n", msg[0]);
}

/* A database created with_tokens keeps each entry's token ids beside its
 * feature (format 2): they read back, the maps stay intact and aligned, an
 * entry without put_tokens is refused, and a token-less database refuses
 * put_tokens and hands out NULL tokens. */
static void test_tokens(void **state) {
    (void)state;
    const char *p = path_in("tok.acdb");
    unlink(p);
    ac_store_params tp = g_params;
    tp.with_tokens = 1;
    ac_mapstore *w = NULL;
    assert_int_equal(ms_open(p, &tp, AC_STORE_WRITE | AC_STORE_CREATE, &w), AC_OK);
    int32_t tok[64];
    for (uint64_t k = 1; k <= 12; k++) {
        for (int i = 0; i < 64; i++) tok[i] = (int32_t)(k * 1000 + (uint64_t)i);
        ac_map_codec c = key_codec(k);
        gen_entry(k, g_feat, g_maps);
        assert_int_equal(ac_mapstore_append(w, k, key_L(k), tok, &c, g_feat, g_maps), AC_OK);
    }
    ac_map_codec c = key_codec(99);
    gen_entry(99, g_feat, g_maps);
    assert_int_equal(ac_mapstore_begin(w, 99, key_L(99), &c, g_feat), AC_OK);
    assert_int_equal(ac_mapstore_put_tokens(w, NULL), AC_ERR_ARG);
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NH; h++)
            assert_int_equal(ac_mapstore_put_map(w, l, h, g_maps + ((size_t)l * NH + h) * key_L(99) * key_L(99)), AC_OK);
    assert_int_equal(ac_mapstore_put_tokens(w, tok), AC_ERR_ARG); /* only right after begin */
    assert_int_equal(ac_mapstore_end(w), AC_ERR_ARG);             /* no token ids: dropped */
    assert_non_null(strstr(ac_last_error(), "put_tokens"));
    ac_mapstore_close(w);

    ac_mapstore *r = NULL;
    assert_int_equal(ms_open(p, &tp, AC_STORE_READ, &r), AC_OK);
    ac_store_params got;
    ac_mapstore_get_params(r, &got);
    assert_int_equal(got.with_tokens, 1);
    assert_int_equal(ac_mapstore_count(r), 12);
    for (int64_t i = 0; i < 12; i++) {
        ac_store_entry e;
        assert_int_equal(ac_mapstore_get(r, i, &e), AC_OK);
        assert_int_equal(entry_matches(&e, (uint64_t)i + 1), 0);
        assert_non_null(e.tokens);
        for (int t = 0; t < e.n_tokens; t++) assert_int_equal(e.tokens[t], (int32_t)((i + 1) * 1000 + t));
    }
    int64_t bad = -1;
    assert_int_equal(ac_mapstore_verify(r, &bad, NULL), AC_OK);
    assert_int_equal(bad, 0);
    ac_mapstore_close(r);

    /* a database without token ids */
    make_db(path_in("notok.acdb"), 3);
    assert_int_equal(ms_open(path_in("notok.acdb"), &g_params, AC_STORE_WRITE, &w), AC_OK);
    ac_mapstore_get_params(w, &got);
    assert_int_equal(got.with_tokens, 0);
    ac_store_entry e;
    assert_int_equal(ac_mapstore_get(w, 0, &e), AC_OK);
    assert_null(e.tokens);
    c = key_codec(50);
    assert_int_equal(ac_mapstore_begin(w, 50, key_L(50), &c, g_feat), AC_OK);
    assert_int_equal(ac_mapstore_put_tokens(w, tok), AC_ERR_ARG);
    ac_mapstore_close(w);
}

int main(void) {
    const struct CMUnitTest generic[] = { /* any implementation */
        cmocka_unit_test(test_roundtrip_reopen),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_model_mismatch),
        cmocka_unit_test(test_writer_rules),
        cmocka_unit_test(test_reader_sees_committed_only),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_cross_process_reader),
    };
    const struct CMUnitTest file_format[] = { /* the file store's format, crash safety and full disk */
        cmocka_unit_test(test_corrupt_payload),
        cmocka_unit_test(test_corrupt_record_header),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_commit_slot_damage),
        cmocka_unit_test(test_random_damage),
        cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_enospc_hook),
        cmocka_unit_test(test_rlimit_fsize),
    };
    int failed = 0;
    for (int k = 0; k < N_IMPLS; k++) {
        g_ops = g_impls[k];
        char name[64];
        snprintf(name, sizeof name, "store interface: %s", g_ops->name);
        failed += _cmocka_run_group_tests(name, generic, sizeof generic / sizeof generic[0], setup, teardown);
    }
    g_ops = &ac_store_file_ops;
    failed += cmocka_run_group_tests_name("file store", file_format, setup, teardown);
    return failed;
}
