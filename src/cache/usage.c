/* usage.c — per-entry use records (usage.h) and cache compaction under a byte
 * budget with an eviction policy (ac_db_compact, attncache.h). */
#define _GNU_SOURCE
#include "cache/usage.h"
#include "attncache.h"
#include "cache/hash.h"
#include "cache/store.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define USAGE_MAGIC "ACUSAGE1"

static int cmp_rec_key(const void *a, const void *b) {
    const ac_usage_rec *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

const ac_usage_rec *ac_usage_find(const ac_usage_rec *recs, int64_t n, uint64_t key) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (recs[mid].key < key) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && recs[lo].key == key ? &recs[lo] : NULL;
}

int ac_usage_load(const char *dir, ac_usage_rec **recs, int64_t *n) {
    *recs = NULL;
    *n = 0;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/usage.bin", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? AC_OK : ac_err(AC_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    int rc = AC_OK;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) goto bad;
    long size = ftell(f);
    if (size < 24 || fseek(f, 0, SEEK_SET) != 0) goto bad;
    buf = AC_MALLOC((size_t)size);
    if (!buf) { rc = AC_ERR_NOMEM; goto out; }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size || memcmp(buf, USAGE_MAGIC, 8) != 0) goto bad;
    uint64_t cnt, sum;
    memcpy(&cnt, buf + 8, 8);
    if (cnt > (uint64_t)(size - 24) / sizeof(ac_usage_rec) || 16 + cnt * sizeof(ac_usage_rec) + 8 != (uint64_t)size) goto bad;
    memcpy(&sum, buf + size - 8, 8);
    if (sum != ac_xxh64(buf, (size_t)size - 8, 0)) goto bad;
    if (cnt) {
        *recs = AC_MALLOC((size_t)cnt * sizeof **recs);
        if (!*recs) { rc = AC_ERR_NOMEM; goto out; }
        memcpy(*recs, buf + 16, (size_t)cnt * sizeof **recs);
        qsort(*recs, (size_t)cnt, sizeof **recs, cmp_rec_key); /* sorted when written; cheap insurance */
    }
    *n = (int64_t)cnt;
    goto out;
bad:
    rc = ac_err(AC_ERR_FORMAT, "'%s' is damaged (bad size, magic or checksum): use records ignored", path);
out:
    free(buf);
    fclose(f);
    return rc;
}

int ac_usage_save(const char *dir, ac_usage_rec *recs, int64_t n) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/usage.bin", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    if (n > 1) qsort(recs, (size_t)n, sizeof *recs, cmp_rec_key);
    const size_t bytes = 16 + (size_t)n * sizeof *recs + 8;
    uint8_t *buf = AC_MALLOC(bytes);
    if (!buf) return AC_ERR_NOMEM;
    memcpy(buf, USAGE_MAGIC, 8);
    uint64_t cnt = (uint64_t)n;
    memcpy(buf + 8, &cnt, 8);
    if (n) memcpy(buf + 16, recs, (size_t)n * sizeof *recs);
    uint64_t sum = ac_xxh64(buf, bytes - 8, 0);
    memcpy(buf + bytes - 8, &sum, 8);
    const int rc = ac_write_file_atomic(path, buf, bytes);
    free(buf);
    return rc;
}

/* ---- compaction: the policy --------------------------------------------------------------------- */

typedef struct choose_ctx {
    int policy;
    uint64_t budget;            /* record bytes that may stay (max_bytes less the header page) */
    const ac_usage_rec *u;      /* sorted by key */
    int64_t nu;
    int64_t evicted;
    uint64_t kept_bytes;
} choose_ctx;

typedef struct ranked {
    int64_t i;        /* ordinal (commit order: larger is newer) */
    uint64_t hits;
    int64_t last_ms;
} ranked;

/* best first: LRU by last use, LFU by hits then last use; ties: the newer entry */
static int cmp_lru(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->last_ms != y->last_ms) return x->last_ms > y->last_ms ? -1 : 1;
    return x->i > y->i ? -1 : x->i < y->i;
}
static int cmp_lfu(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->hits != y->hits) return x->hits > y->hits ? -1 : 1;
    return cmp_lru(a, b);
}

static int choose(void *user, int64_t n, const uint64_t *keys, const uint64_t *bytes, uint8_t *keep) {
    choose_ctx *cc = user;
    ranked *r = AC_MALLOC((size_t)(n ? n : 1) * sizeof *r);
    if (!r) return AC_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) {
        const ac_usage_rec *u = ac_usage_find(cc->u, cc->nu, keys[i]);
        r[i] = (ranked){i, u ? u->hits : 0, u ? u->last_ms : 0};
    }
    qsort(r, (size_t)n, sizeof *r, cc->policy == AC_EVICT_LFU ? cmp_lfu : cmp_lru);
    /* best first while they fit; a large entry that does not fit is passed over for smaller ones */
    uint64_t used = 0;
    for (int64_t k = 0; k < n; k++) {
        const int64_t i = r[k].i;
        if (used + bytes[i] <= cc->budget) {
            keep[i] = 1;
            used += bytes[i];
        } else {
            cc->evicted++;
        }
    }
    cc->kept_bytes = used;
    free(r);
    return AC_OK;
}

int ac_db_compact(const char *dir, int64_t max_bytes, int policy, void *file, int64_t *n_evicted) {
    FILE *f = file;
    if (n_evicted) *n_evicted = 0;
    if (!dir) return ac_err(AC_ERR_ARG, "no cache directory given");
    if (policy != AC_EVICT_LRU && policy != AC_EVICT_LFU) return ac_err(AC_ERR_ARG, "bad eviction policy %d", policy);
    if (max_bytes <= AC_STORE_HEADER_BYTES)
        return ac_err(AC_ERR_ARG, "byte budget %lld is not above the store's %d-byte header", (long long)max_bytes,
                      AC_STORE_HEADER_BYTES);
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/maps.acdb", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    /* over budget at all? (committed bytes; an uncommitted tail is the next writer's to truncate) */
    ac_store *st = NULL;
    int rc = ac_store_open(path, NULL, AC_STORE_READ, &st);
    if (rc) return ac_err_prefix(rc, "attention cache '%s'", dir);
    ac_store_stats ss;
    ac_store_stats_get(st, &ss);
    ac_store_close(st);
    if (ss.committed_bytes <= (uint64_t)max_bytes) {
        if (f) fprintf(f, "compact: %s: %llu bytes, within the budget of %lld: nothing to do\n", dir,
                       (unsigned long long)ss.committed_bytes, (long long)max_bytes);
        return AC_OK;
    }
    choose_ctx cc = {policy, (uint64_t)max_bytes - AC_STORE_HEADER_BYTES, NULL, 0, 0, 0};
    ac_usage_rec *u = NULL;
    if (ac_usage_load(dir, &u, &cc.nu) != AC_OK) {
        if (f) fprintf(f, "compact: %s\n", ac_last_error());
        ac_err_clear();
    }
    cc.u = u;
    /* entry ordinals change: the saved indexes go first (rebuilt at the next open), so that a crash
     * after the store's rename can never pair an old index with the new store */
    for (const char *const *nm = (const char *const[]){"index-projector.faiss", "index-mean.faiss", "index-random.faiss", NULL};
         *nm; nm++) {
        char ipath[PATH_MAX + 64];
        snprintf(ipath, sizeof ipath, "%s/%s.meta", dir, *nm);
        unlink(ipath);
        snprintf(ipath, sizeof ipath, "%s/%s", dir, *nm);
        unlink(ipath);
    }
    int64_t kept = 0;
    uint64_t after = 0;
    rc = ac_store_compact(path, NULL, choose, &cc, f, &kept, &after);
    free(u);
    if (rc) return ac_err_prefix(rc, "attention cache '%s'", dir);
    if (f) fprintf(f, "compact: policy %s: evicted %lld entries; the store is %llu bytes (budget %lld)\n",
                   policy == AC_EVICT_LFU ? "lfu" : "lru", (long long)cc.evicted, (unsigned long long)after,
                   (long long)max_bytes);
    if (n_evicted) *n_evicted = cc.evicted;
    return AC_OK;
}
