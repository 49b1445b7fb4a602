/* usage.h — per-entry use of an attention cache (hits, last use) kept beside
 * the store in DIR/usage.bin, and the eviction policies that read it
 * (ac_db_compact, attncache.h).
 *
 * File format (little-endian): "ACUSAGE1", u64 n, n records {u64 key, u64
 * hits, i64 last use in unix milliseconds} sorted by key, u64 XXH64 of every
 * byte before it (seed 0). Written whole to "usage.bin.tmp.XXXXXX", fsync'd, renamed
 * over usage.bin, directory fsync'd: a crash leaves the old or the new file.
 * The file is advisory: a missing or damaged one means "no use recorded" (an
 * entry absent from it has hits 0 and last use 0) and never stops a cache. */
#ifndef AC_CACHE_USAGE_H
#define AC_CACHE_USAGE_H

#include <stdint.h>
#include <stdio.h>

typedef struct ac_usage_rec {
    uint64_t key;
    uint64_t hits;
    int64_t last_ms; /* unix milliseconds of the last hit, or of the insert; 0: unknown */
} ac_usage_rec;

/* Load DIR/usage.bin: *recs (caller frees) sorted by key, *n records. A
 * missing file gives n = 0 and AC_OK; a damaged one gives n = 0 and
 * AC_ERR_FORMAT with a message (callers may go on without it). */
int ac_usage_load(const char *dir, ac_usage_rec **recs, int64_t *n);
/* Write recs[0..n) (sorted here, in place) as DIR/usage.bin, crash-safe. */
int ac_usage_save(const char *dir, ac_usage_rec *recs, int64_t n);
/* The record of key in recs sorted by key, or NULL. */
const ac_usage_rec *ac_usage_find(const ac_usage_rec *recs, int64_t n, uint64_t key);

#endif
