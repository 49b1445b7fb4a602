/* fuzz_store.c — libFuzzer target for the attention-map store reader (not
 * built by the tests/ glob, which picks up test_*.c only; scripts/fuzz.sh
 * builds and runs it with clang).
 *
 * Each input is a whole database file (seeded with a valid one of KEYS
 * entries, every codec, see write_seed). The harness writes it to a file and
 * runs what a reader of a damaged cache runs:
 *   open (read-only) -> get every entry, find every key -> verify -> stats;
 *   then db repair on the file -> open again -> get every entry.
 * The contract checked: every entry handed out is byte-identical to the entry
 * the seed stored under that key (the "intact answer"); anything else must be
 * an error with a message (the caller then computes exactly: a miss), never
 * a crash, a sanitizer report or a wrong entry. A wrong entry calls abort().
 *
 * Build and run by hand (scripts/fuzz.sh does this):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc tests/fuzz_store.c \
 *       src/cache/store.c src/cache/codec.c src/cache/hash.c src/util/common.c -lxxhash -lm -o fuzz_store
 *   mkdir -p corpus && FUZZ_SEED_DIR=corpus ./fuzz_store -runs=0 corpus   # writes the seed
 *   ./fuzz_store -max_len=65536 -max_total_time=60 corpus */
#define _GNU_SOURCE
#include "cache/store.h"
#include "util/common.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NL 2
#define NH 2
#define FD 8
#define KEYS 6

static const ac_store_params g_params = {{0x1111222233334444ULL, 0x5555666677778888ULL}, NL, NH, 1, FD, 1};
static const ac_map_codec g_codecs[] = {{AC_CODEC_F32, 0, 0}, {AC_CODEC_F16, 0, 0}, {AC_CODEC_Q8, 1, 0},
                                        {AC_CODEC_Q4, 0, 0},  {AC_CODEC_TOPK, 1, 3}, {AC_CODEC_Q8, 0, 0}};
static char g_dir[64], g_path[96];
static uint8_t *g_ref[KEYS + 1];  /* [key] the intact record payload: feature | tokens | maps */
static size_t g_ref_bytes[KEYS + 1];

static int key_L(uint64_t k) { return 2 + (int)(k * 3 % 7); }

/* Deterministic entry `key`: feature [FD], tokens [L], maps [NL*NH][L][L] (softmax rows). */
static void gen(uint64_t key, float *feat, int32_t *tok, float *maps) {
    uint64_t s = key * 0x9E3779B97F4A7C15ULL + 7;
    const int L = key_L(key);
    for (int i = 0; i < FD; i++) feat[i] = (float)((s = s * 6364136223846793005ULL + 1) >> 40) / 16777216.0f;
    for (int t = 0; t < L; t++) tok[t] = (int32_t)(key * 100 + (uint64_t)t);
    for (int m = 0; m < NL * NH; m++)
        for (int t = 0; t < L; t++) {
            float *r = maps + ((size_t)m * L + t) * L;
            double sum = 0;
            for (int j = 0; j < L; j++) {
                s = s * 6364136223846793005ULL + 1;
                r[j] = (j <= t || !g_codecs[key % 6].causal) ? (float)exp((double)(s >> 40) / 4194304.0) : 0.0f;
                sum += r[j];
            }
            for (int j = 0; j < L; j++) r[j] = (float)(r[j] / sum);
        }
}

/* The bytes an intact entry hands out, concatenated, for comparison. */
static size_t entry_bytes(const ac_store_entry *e, uint8_t *out) {
    size_t n = 0;
    memcpy(out + n, e->feature, FD * sizeof(float)), n += FD * sizeof(float);
    memcpy(out + n, e->tokens, (size_t)e->n_tokens * 4), n += (size_t)e->n_tokens * 4;
    memcpy(out + n, e->maps, e->map_bytes * NL * NH), n += e->map_bytes * NL * NH;
    return n;
}

/* abort() unless e is exactly the seed's entry for its key. */
static void check_entry(const ac_store_entry *e) {
    static uint8_t buf[1 << 16];
    if (e->key < 1 || e->key > KEYS) abort();                 /* a key the seed never stored */
    if (e->n_tokens != key_L(e->key) || !e->tokens) abort();
    const ac_map_codec *c = &g_codecs[e->key % 6];
    if (e->codec.kind != c->kind || e->codec.causal != c->causal || (c->kind == AC_CODEC_TOPK && e->codec.topk != c->topk))
        abort();
    if (e->map_bytes != ac_codec_map_bytes(c, e->n_tokens)) abort();
    size_t n = entry_bytes(e, buf);
    if (n != g_ref_bytes[e->key] || memcmp(buf, g_ref[e->key], n) != 0) abort(); /* silently wrong */
}

static void write_file(const char *p, const uint8_t *d, size_t n) {
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

/* The seed database, and the reference bytes of each entry. */
static void make_seed(const char *path) {
    float feat[FD], maps[NL * NH * 8 * 8];
    int32_t tok[8];
    ac_store *st = NULL;
    unlink(path);
    if (ac_store_open(path, &g_params, AC_STORE_WRITE | AC_STORE_CREATE | AC_STORE_NOSYNC, &st)) abort();
    for (uint64_t k = 1; k <= KEYS; k++) {
        gen(k, feat, tok, maps);
        if (ac_store_append(st, k, key_L(k), tok, &g_codecs[k % 6], feat, maps)) abort();
    }
    ac_store_close(st);
    if (ac_store_open(path, &g_params, AC_STORE_READ, &st)) abort();
    for (uint64_t k = 1; k <= KEYS; k++) {
        ac_store_entry e;
        if (ac_store_find(st, k, &e)) abort();
        g_ref[k] = malloc(1 << 16);
        g_ref_bytes[k] = entry_bytes(&e, g_ref[k]);
    }
    ac_store_close(st);
}

/* The scratch directory goes when the fuzzer exits normally (a crash keeps it). */
static void remove_dir(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char p[400];
        snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    /* tmpfs when there is one: the repair fsyncs */
    snprintf(g_dir, sizeof g_dir, "%s/fuzz_store.%ld", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
    ac_store_set_reserve_hint((size_t)1 << 20); /* small mappings: thousands of opens a second */
    if (mkdir(g_dir, 0700) != 0) abort();
    atexit(remove_dir);
    snprintf(g_path, sizeof g_path, "%s/maps.acdb", g_dir);
    make_seed(g_path);
    const char *seed_dir = getenv("FUZZ_SEED_DIR");
    if (seed_dir) { /* put the valid database into the corpus */
        FILE *f = fopen(g_path, "rb");
        static uint8_t b[1 << 20];
        size_t n = f ? fread(b, 1, sizeof b, f) : 0;
        if (f) fclose(f);
        char p[512];
        snprintf(p, sizeof p, "%s/seed.acdb", seed_dir);
        write_file(p, b, n);
    }
    return 0;
}

/* Everything a reader does; every entry handed out is checked. */
static void read_all(int expect_intact) {
    ac_store *st = NULL;
    int rc = ac_store_open(g_path, &g_params, AC_STORE_READ, &st);
    if (rc) {
        if (rc != AC_ERR_FORMAT && rc != AC_ERR_CACHE && rc != AC_ERR_IO) abort();
        if (!ac_last_error()[0]) abort(); /* every refusal names its problem */
        if (expect_intact) abort();
        return;
    }
    for (int64_t i = 0; i < ac_store_count(st); i++) {
        ac_store_entry e;
        rc = ac_store_get(st, i, &e);
        if (rc == AC_OK) check_entry(&e);
        else if (rc != AC_ERR_CACHE || expect_intact) abort();
    }
    for (uint64_t k = 0; k <= KEYS + 1; k++) {
        ac_store_entry e;
        rc = ac_store_find(st, k, &e);
        if (rc == AC_OK) {
            if (e.key != k) abort();
            check_entry(&e);
        } else if (rc != AC_ERR_RANGE && rc != AC_ERR_CACHE) abort();
    }
    int64_t bad = -1;
    rc = ac_store_verify(st, &bad, NULL);
    if ((rc == AC_OK) != (bad == 0)) abort();
    if (expect_intact && rc != AC_OK) abort();
    ac_store_stats s;
    if (ac_store_stats_get(st, &s) != AC_OK) abort();
    ac_store_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(g_path, data, size);
    read_all(0);
    /* db repair keeps exactly the intact entries; the result reads clean */
    int64_t n = -1;
    int rc = ac_store_repair(g_path, &g_params, NULL, &n, NULL);
    if (rc == AC_OK) {
        if (n < 0 || n > KEYS) abort();
        read_all(1);
    } else if (!ac_last_error()[0]) {
        abort();
    }
    /* the damaged originals repair keeps: removed so the directory stays small */
    DIR *d = opendir(g_dir);
    if (!d) abort();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "maps.acdb")) continue;
        char p[400];
        snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    return 0;
}
