/* bench_store.c — map-store choice: our append-only segment file (store.c)
 * against LMDB, on the same pre-encoded entries.
 *
 * Build (after building ac_cache in build-cache):
 *   gcc -O2 -march=native -Iinclude -Isrc src/cache/bench/bench_store.c \
 *       build-cache/libac_cache.a build-cache/libac_util.a -llmdb -lm -fopenmp \
 *       -o build-cache/bench_store
 * Run:  build-cache/bench_store <scratch dir> [n_small=200] [n_large=6]
 *
 * Entries: "small" = 6 layers x 12 heads x L 128, "large" = 16 x 32 x L 512,
 * q8 dense maps (1.03 bytes/element) + 128-d feature. For each engine:
 *   write : entries/s and MB/s, every entry its own durable commit (fsync), and
 *           again without fsync (ours: AC_STORE_NOSYNC; LMDB: MDB_NOSYNC)
 *   open  : open the DB (ours scans the record headers)
 *   get   : warm lookup latency of a random entry (pointer only, zero copy),
 *           median and p99 over 2000 lookups
 *   read  : get + touch every 4 KiB page of the entry, warm (page cache) and
 *           cold (the file's pages evicted with posix_fadvise DONTNEED first)
 *   verify: ours only: first-access checksum of one entry (XXH64)
 * Scratch files are deleted at the end.
 *
 * bench_store --corrupt <scratch dir> [trials=300]: robustness instead of
 * speed. A DB of 40 entries (6 x 12 x 32^2, q8) per engine; each trial flips 4
 * random bytes of a copy of the file, then a child process opens it and reads
 * every entry, comparing with what was written. Outcomes per trial: intact
 * (all served, all right), error (open or some reads refused with a message),
 * SILENT (wrong bytes handed out as good), CRASH (child killed by a signal). */
#define _GNU_SOURCE
#include "cache/codec.h"
#include "cache/store.h"
#include "util/common.h"
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shape {
    const char *name;
    int n_layer, n_head, L;
} shape;

static uint64_t rs = 1;
static uint64_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* one head's q8 map, encoded from a random softmax map [L][L] */
static uint8_t *make_map(int L, size_t *bytes) {
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float));
    for (int t = 0; t < L; t++) {
        double s = 0;
        for (int j = 0; j < L; j++) {
            P[(size_t)t * L + j] = (float)exp((double)(rnd() % 1000) / 200.0);
            s += P[(size_t)t * L + j];
        }
        for (int j = 0; j < L; j++) P[(size_t)t * L + j] = (float)(P[(size_t)t * L + j] / s);
    }
    *bytes = ac_codec_map_bytes(&c, L);
    uint8_t *m = (uint8_t *)mallocCheck(*bytes);
    double t0 = ac_now();
    if (ac_codec_encode(&c, P, L, m) != AC_OK) exit(1);
    double t1 = ac_now();
    fprintf(stderr, "  (q8 encode of one %dx%d map: %.1f us, %.2f GB/s of fp32 input)\n", L, L, (t1 - t0) * 1e6,
            (double)L * L * 4 / (t1 - t0) / 1e9);
    free(P);
    return m;
}

static volatile uint64_t sink;
static void touch(const uint8_t *p, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i += 4096) s += p[i];
    s += p[n - 1];
    sink += s;
}

static void evict(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

typedef struct result {
    double w_sync_s, w_nosync_s, open_ms, get_med_us, get_p99_us, read_warm_ms, read_cold_ms, verify_ms;
    double entry_mb;
} result;

/* ---- ours ------------------------------------------------------------------------------- */
static void bench_ours(const char *dir, const shape *sh, int n, const uint8_t *map, size_t mb, const float *feat,
                       result *r) {
    char path[512];
    snprintf(path, sizeof path, "%s/ours_%s.acdb", dir, sh->name);
    ac_store_params p = {{1, 2}, sh->n_layer, sh->n_head, 0, 128, 0};
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    for (int sync = 1; sync >= 0; sync--) {
        unlink(path);
        ac_store *st = NULL;
        if (ac_store_open(path, &p, AC_STORE_WRITE | AC_STORE_CREATE | (sync ? 0 : AC_STORE_NOSYNC), &st)) {
            fprintf(stderr, "%s\n", ac_last_error());
            exit(1);
        }
        double t0 = ac_now();
        for (int k = 0; k < n; k++) {
            int rc = ac_store_begin(st, (uint64_t)k, sh->L, &c, feat);
            for (int l = 0; l < sh->n_layer && !rc; l++)
                for (int h = 0; h < sh->n_head && !rc; h++) rc = ac_store_put_map_encoded(st, l, h, map, mb);
            if (!rc) rc = ac_store_end(st);
            if (!rc) rc = ac_store_commit(st);
            if (rc) { fprintf(stderr, "%s\n", ac_last_error()); exit(1); }
        }
        double t1 = ac_now();
        ac_store_close(st);
        if (sync) r->w_sync_s = t1 - t0; else r->w_nosync_s = t1 - t0;
    }
    ac_store *st = NULL;
    double t0 = ac_now();
    if (ac_store_open(path, &p, AC_STORE_READ | AC_STORE_NO_VERIFY, &st)) exit(1);
    r->open_ms = (ac_now() - t0) * 1e3;
    double *lat = (double *)mallocCheck(2000 * sizeof(double));
    ac_store_entry e;
    for (int i = 0; i < 2000; i++) {
        uint64_t key = rnd() % (uint64_t)n;
        double a = ac_now();
        if (ac_store_find(st, key, &e)) exit(1);
        lat[i] = (ac_now() - a) * 1e6;
        sink += e.maps[0];
    }
    qsort(lat, 2000, sizeof(double), cmp_d);
    r->get_med_us = lat[1000];
    r->get_p99_us = lat[1980];
    size_t ebytes = (size_t)sh->n_layer * sh->n_head * e.map_bytes;
    r->entry_mb = (double)(ebytes + 64 + 512) / 1e6;
    t0 = ac_now();
    ac_store_find(st, (uint64_t)n / 2, &e);
    touch(e.maps, ebytes);
    r->read_warm_ms = (ac_now() - t0) * 1e3;
    ac_store_close(st);
    if (ac_store_open(path, &p, AC_STORE_READ | AC_STORE_NO_VERIFY, &st)) exit(1);
    evict(path); /* after open: time the entry's own reads only */
    t0 = ac_now();
    ac_store_find(st, ((uint64_t)n / 2 + 1) % (uint64_t)n, &e);
    touch(e.maps, ebytes);
    r->read_cold_ms = (ac_now() - t0) * 1e3;
    ac_store_close(st);
    if (ac_store_open(path, &p, AC_STORE_READ, &st)) exit(1);
    ac_store_find(st, 0, &e); /* warm its pages */
    ac_store_close(st);
    if (ac_store_open(path, &p, AC_STORE_READ, &st)) exit(1);
    t0 = ac_now();
    if (ac_store_find(st, 0, &e)) exit(1);
    r->verify_ms = (ac_now() - t0) * 1e3;
    ac_store_close(st);
    free(lat);
    unlink(path);
}

/* ---- LMDB ---------------------------------------------------------------------------------- */
#define MDB_CHECK(x)                                                                     \
    do {                                                                                 \
        int rc_ = (x);                                                                   \
        if (rc_) { fprintf(stderr, "%s: %s\n", #x, mdb_strerror(rc_)); exit(1); }       \
    } while (0)

static void bench_lmdb(const char *dir, const shape *sh, int n, const uint8_t *map, size_t mb, const float *feat,
                       result *r) {
    char path[512], lock[600];
    snprintf(path, sizeof path, "%s/lmdb_%s.mdb", dir, sh->name);
    snprintf(lock, sizeof lock, "%s-lock", path);
    size_t n_maps = (size_t)sh->n_layer * sh->n_head;
    size_t vbytes = 64 + 512 + n_maps * mb; /* same record layout as ours: header, feature, maps */
    for (int sync = 1; sync >= 0; sync--) {
        unlink(path);
        unlink(lock);
        MDB_env *env;
        MDB_CHECK(mdb_env_create(&env));
        MDB_CHECK(mdb_env_set_mapsize(env, (size_t)64 << 30));
        MDB_CHECK(mdb_env_open(env, path, MDB_NOSUBDIR | (sync ? 0 : MDB_NOSYNC), 0644));
        MDB_dbi dbi;
        MDB_txn *txn;
        MDB_CHECK(mdb_txn_begin(env, NULL, 0, &txn));
        MDB_CHECK(mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &dbi));
        MDB_CHECK(mdb_txn_commit(txn));
        double t0 = ac_now();
        for (int k = 0; k < n; k++) {
            size_t key = (size_t)k;
            MDB_val kv = {sizeof key, &key}, vv = {vbytes, NULL};
            MDB_CHECK(mdb_txn_begin(env, NULL, 0, &txn));
            MDB_CHECK(mdb_put(txn, dbi, &kv, &vv, MDB_RESERVE | MDB_APPEND));
            uint8_t *v = (uint8_t *)vv.mv_data;
            memset(v, 0, 64);
            memcpy(v + 64, feat, 512);
            for (size_t m = 0; m < n_maps; m++) memcpy(v + 576 + m * mb, map, mb);
            MDB_CHECK(mdb_txn_commit(txn));
        }
        double t1 = ac_now();
        if (sync) r->w_sync_s = t1 - t0; else r->w_nosync_s = t1 - t0;
        mdb_env_close(env);
    }
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    double t0 = ac_now();
    MDB_CHECK(mdb_env_create(&env));
    MDB_CHECK(mdb_env_set_mapsize(env, (size_t)64 << 30));
    MDB_CHECK(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY, 0644));
    MDB_CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    MDB_CHECK(mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &dbi));
    mdb_txn_reset(txn);
    r->open_ms = (ac_now() - t0) * 1e3;
    double *lat = (double *)mallocCheck(2000 * sizeof(double));
    MDB_val vv;
    for (int i = 0; i < 2000; i++) {
        size_t key = (size_t)(rnd() % (uint64_t)n);
        MDB_val kv = {sizeof key, &key};
        double a = ac_now();
        MDB_CHECK(mdb_txn_renew(txn));
        MDB_CHECK(mdb_get(txn, dbi, &kv, &vv));
        lat[i] = (ac_now() - a) * 1e6;
        sink += ((const uint8_t *)vv.mv_data)[576];
        mdb_txn_reset(txn);
    }
    qsort(lat, 2000, sizeof(double), cmp_d);
    r->get_med_us = lat[1000];
    r->get_p99_us = lat[1980];
    r->entry_mb = (double)vbytes / 1e6;
    size_t key = (size_t)n / 2;
    MDB_val kv = {sizeof key, &key};
    t0 = ac_now();
    MDB_CHECK(mdb_txn_renew(txn));
    MDB_CHECK(mdb_get(txn, dbi, &kv, &vv));
    touch((const uint8_t *)vv.mv_data + 576, vbytes - 576);
    r->read_warm_ms = (ac_now() - t0) * 1e3;
    mdb_txn_reset(txn);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    MDB_CHECK(mdb_env_create(&env));
    MDB_CHECK(mdb_env_set_mapsize(env, (size_t)64 << 30));
    MDB_CHECK(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY, 0644));
    MDB_CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    MDB_CHECK(mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &dbi));
    evict(path); /* after open: time the entry's own reads only */
    key = ((size_t)n / 2 + 1) % (size_t)n;
    t0 = ac_now();
    MDB_CHECK(mdb_get(txn, dbi, &kv, &vv));
    touch((const uint8_t *)vv.mv_data + 576, vbytes - 576);
    r->read_cold_ms = (ac_now() - t0) * 1e3;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    r->verify_ms = NAN;
    free(lat);
    unlink(path);
    unlink(lock);
}

/* ---- robustness -------------------------------------------------------------------------- */
#include <signal.h>
#include <sys/wait.h>
enum { CN = 40, CL = 32 };
static const shape cshape = {"c", 6, 12, CL};

static void fill_val(uint8_t *v, size_t n, uint64_t key) { /* the "maps" of entry key */
    for (size_t i = 0; i < n; i++) v[i] = (uint8_t)((i * 131 + key * 7) >> 3);
}

/* child: 0 intact, 1 error(s) reported, 2 silent corruption */
static int read_ours(const char *path, size_t mb) {
    ac_store *st = NULL;
    ac_store_params p = {{1, 2}, cshape.n_layer, cshape.n_head, 0, 128, 0};
    if (ac_store_open(path, &p, AC_STORE_READ, &st)) return 1;
    int out = ac_store_damage(st) || ac_store_count(st) != CN ? 1 : 0;
    size_t nb = mb * (size_t)(cshape.n_layer * cshape.n_head);
    uint8_t *want = (uint8_t *)mallocCheck(nb);
    for (int64_t i = 0; i < ac_store_count(st); i++) {
        ac_store_entry e;
        if (ac_store_get(st, i, &e)) { out = out > 1 ? out : 1; continue; }
        fill_val(want, nb, e.key);
        if (memcmp(e.maps, want, nb) != 0) out = 2;
    }
    free(want);
    ac_store_close(st);
    return out;
}

static int read_lmdb(const char *path, size_t vbytes) {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    if (mdb_env_create(&env) || mdb_env_set_mapsize(env, (size_t)1 << 30) ||
        mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0644))
        return 1;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &dbi)) return 1;
    int out = 0;
    uint8_t *want = (uint8_t *)mallocCheck(vbytes);
    for (size_t k = 0; k < CN; k++) {
        MDB_val kv = {sizeof k, &k}, vv;
        if (mdb_get(txn, dbi, &kv, &vv) || vv.mv_size != vbytes) { out = out > 1 ? out : 1; continue; }
        fill_val(want, vbytes - 576, k);
        if (memcmp((const uint8_t *)vv.mv_data + 576, want, vbytes - 576) != 0) out = 2;
    }
    free(want);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return out;
}

static int corrupt_main(const char *dir, int trials) {
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    size_t mb = ac_codec_map_bytes(&c, CL), nm = (size_t)(cshape.n_layer * cshape.n_head), nb = mb * nm;
    size_t vbytes = 576 + nb;
    uint8_t *val = (uint8_t *)mallocCheck(nb);
    float feat[128] = {0};
    char po[512], pl[512], pc[520], lk[600];
    snprintf(po, sizeof po, "%s/corrupt_ours.acdb", dir);
    snprintf(pl, sizeof pl, "%s/corrupt_lmdb.mdb", dir);
    snprintf(lk, sizeof lk, "%s-lock", pl);
    unlink(po);
    unlink(pl);
    unlink(lk);
    ac_store *st = NULL;
    ac_store_params p = {{1, 2}, cshape.n_layer, cshape.n_head, 0, 128, 0};
    if (ac_store_open(po, &p, AC_STORE_WRITE | AC_STORE_CREATE | AC_STORE_NOSYNC, &st)) return 1;
    for (uint64_t k = 0; k < CN; k++) {
        fill_val(val, nb, k);
        int rc = ac_store_begin(st, k, CL, &c, feat);
        for (size_t m = 0; m < nm && !rc; m++) rc = ac_store_put_map_encoded(st, (int)(m / 12), (int)(m % 12), val + m * mb, mb);
        if (rc || ac_store_end(st) || ac_store_commit(st)) return 1;
    }
    ac_store_close(st);
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    MDB_CHECK(mdb_env_create(&env));
    MDB_CHECK(mdb_env_set_mapsize(env, (size_t)1 << 30));
    MDB_CHECK(mdb_env_open(env, pl, MDB_NOSUBDIR | MDB_NOSYNC, 0644));
    MDB_CHECK(mdb_txn_begin(env, NULL, 0, &txn));
    MDB_CHECK(mdb_dbi_open(txn, NULL, MDB_INTEGERKEY, &dbi));
    for (size_t k = 0; k < CN; k++) {
        MDB_val kv = {sizeof k, &k}, vv = {vbytes, NULL};
        MDB_CHECK(mdb_put(txn, dbi, &kv, &vv, MDB_RESERVE));
        memset(vv.mv_data, 0, 576);
        fill_val((uint8_t *)vv.mv_data + 576, nb, k);
    }
    MDB_CHECK(mdb_txn_commit(txn));
    mdb_env_close(env);
    printf("| engine | flips land in | trials | intact | error reported | SILENT wrong data | CRASH (signal) |\n|---|---|---|---|---|---|---|\n");
    for (int run = 0; run < 4; run++) {
        int eng = run & 1, edges = run >> 1; /* edges: flips only in the first and last 8 KiB (meta/tree pages, headers) */
        const char *src = eng ? pl : po;
        snprintf(pc, sizeof pc, "%s.copy", src);
        FILE *f = fopen(src, "rb");
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *orig = (uint8_t *)mallocCheck((size_t)n), *b = (uint8_t *)mallocCheck((size_t)n);
        if (fread(orig, 1, (size_t)n, f) != (size_t)n) return 1;
        fclose(f);
        int res[4] = {0, 0, 0, 0};
        rs = 12345;
        for (int t = 0; t < trials; t++) {
            memcpy(b, orig, (size_t)n);
            for (int i = 0; i < 4; i++) {
                uint64_t pos = rnd() % (uint64_t)n;
                if (edges) pos = (pos & 1) ? (uint64_t)n - 1 - (pos >> 1) % 8192 : (pos >> 1) % 8192;
                b[pos] ^= (uint8_t)(1u << (rnd() % 8));
            }
            f = fopen(pc, "wb");
            fwrite(b, 1, (size_t)n, f);
            fclose(f);
            pid_t pid = fork();
            if (pid == 0) _exit(eng ? read_lmdb(pc, vbytes) : read_ours(pc, mb));
            int status;
            waitpid(pid, &status, 0);
            if (WIFSIGNALED(status)) res[3]++;
            else res[WEXITSTATUS(status) > 2 ? 1 : WEXITSTATUS(status)]++;
        }
        printf("| %s | %s of %ld bytes | %d | %d | %d | %d | %d |\n", eng ? "LMDB 0.9.24" : "own segments",
               edges ? "first/last 8 KiB" : "anywhere", n, trials, res[0], res[1], res[2], res[3]);
        unlink(pc);
        free(orig);
        free(b);
    }
    unlink(po);
    unlink(pl);
    unlink(lk);
    free(val);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--corrupt") == 0) return corrupt_main(argv[2], argc > 3 ? atoi(argv[3]) : 300);
    if (argc < 2) {
        fprintf(stderr, "usage: %s <scratch dir> [n_small=200] [n_large=6]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int ns = argc > 2 ? atoi(argv[2]) : 200, nl = argc > 3 ? atoi(argv[3]) : 6;
    shape shapes[2] = {{"small", 6, 12, 128}, {"large", 16, 32, 512}};
    int counts[2] = {ns, nl};
    float feat[128];
    for (int i = 0; i < 128; i++) feat[i] = (float)i / 128.0f;
    printf("| shape | engine | entry MB | write fsync/entry (entries/s, MB/s) | write no-sync (entries/s, MB/s) | open ms | get median / p99 us | read warm ms | read cold ms | first-access verify ms |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int s = 0; s < 2; s++) {
        size_t mb;
        fprintf(stderr, "%s: %d x %d x L %d, %d entries\n", shapes[s].name, shapes[s].n_layer, shapes[s].n_head,
                shapes[s].L, counts[s]);
        uint8_t *map = make_map(shapes[s].L, &mb);
        for (int eng = 0; eng < 2; eng++) {
            result r;
            memset(&r, 0, sizeof r);
            if (eng == 0) bench_ours(dir, &shapes[s], counts[s], map, mb, feat, &r);
            else bench_lmdb(dir, &shapes[s], counts[s], map, mb, feat, &r);
            int n = counts[s];
            char ver[32];
            if (isnan(r.verify_ms)) snprintf(ver, sizeof ver, "n/a (no checksums)");
            else snprintf(ver, sizeof ver, "%.2f", r.verify_ms);
            printf("| %d x %d x %d^2 | %s | %.2f | %.1f, %.0f | %.1f, %.0f | %.2f | %.2f / %.2f | %.2f | %.2f | %s |\n",
                   shapes[s].n_layer, shapes[s].n_head, shapes[s].L, eng ? "LMDB" : "own segments", r.entry_mb,
                   n / r.w_sync_s, n * r.entry_mb / r.w_sync_s, n / r.w_nosync_s, n * r.entry_mb / r.w_nosync_s,
                   r.open_ms, r.get_med_us, r.get_p99_us, r.read_warm_ms, r.read_cold_ms, ver);
            fflush(stdout);
        }
        free(map);
    }
    return (int)(sink & 0);
}
