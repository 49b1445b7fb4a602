/* store.h — the attention cache's map store ("memorization database").
 *
 * One file holds every entry: key id, token count L, feature vector
 * float[feat_dim] and n_layer*n_head compressed L x L attention maps (codec.h).
 * Format and crash-safety argument: docs/CACHE_STORE.md. In short:
 *   - append-only; records are written past the committed end, fsync'd, and
 *     only then published by a checksummed commit slot in the header page
 *     (two slots, alternating, the highest valid sequence wins);
 *   - readers mmap the file and hand out pointers into the map (zero copy);
 *     they see exactly the entries of the last commit they read;
 *   - one writer at a time (flock); any number of reader processes alongside;
 *   - a writer killed at any moment (SIGKILL, ENOSPC, power loss after fsync)
 *     leaves every committed entry intact; the next writer truncates the
 *     uncommitted tail;
 *   - damage (a bad record, a damaged newest commit slot) is reported, never
 *     repaired behind the caller's back: writers refuse a damaged file, and
 *     ac_store_repair keeps every record whose checksums hold.
 * Threading: the reading calls (get_params, count, n_tokens, damage, get, find,
 * stats) may run from several threads at once on one handle while no thread
 * changes it (refresh, writes, commit, verify); see store_ops.h, the interface
 * through which the cache uses this store, for the whole contract. */
#ifndef AC_CACHE_STORE_H
#define AC_CACHE_STORE_H

#include "cache/codec.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AC_STORE_VERSION_MAJOR 2 /* reads 1 (no token ids) and 2 */
#define AC_STORE_VERSION_MINOR 0
#define AC_STORE_HEADER_BYTES 4096 /* the header page before the first record */

typedef struct ac_store ac_store;

/* What the database was built for; a DB opened with different values is refused. */
typedef struct ac_store_params {
    uint64_t fingerprint[2]; /* caller's 128-bit model hash (weights + settings that shape the maps) */
    int n_layer, n_head;     /* maps per entry = n_layer * n_head                                   */
    int causal;              /* 1: the model is causal; lower-triangle codecs are allowed           */
    int feat_dim;            /* feature vector length (e.g. 128)                                     */
    int with_tokens;         /* create: records carry their token ids (ac_store_put_tokens); open:
                                reports the file's choice (not compared)                             */
} ac_store_params;

enum ac_store_flags {
    AC_STORE_READ = 0,      /* read-only handle                                                   */
    AC_STORE_WRITE = 1,     /* the (single) writer; also reads                                    */
    AC_STORE_CREATE = 2,    /* with WRITE: create the file if missing                            */
    AC_STORE_NOSYNC = 4,    /* commits skip fsync: survives a process kill, NOT a power loss       */
    AC_STORE_NO_VERIFY = 8, /* get/find skip the payload checksum on first access (trust the file) */
    AC_STORE_REPAIR = 16,   /* with WRITE: run ac_store_repair first (a damaged DB is repaired)   */
};

/* Open (or create) path. params: what the caller's model is; NULL accepts
 * whatever the file holds (tools; not with CREATE). On success the caller owns
 * *out (ac_store_close). A damaged file (bad record header, truncated tail, a
 * damaged newest commit slot with intact records past the older commit) opens
 * read-only with the entries before the damage (ac_store_damage() says what
 * and where); a writer refuses it (nothing is truncated or overwritten) until
 * ac_store_repair has run (or with AC_STORE_REPAIR, which runs it).
 * Errors: AC_ERR_IO (open/lock/mmap), AC_ERR_FORMAT (not a map DB, bad header
 * checksum, unknown version, no valid commit), AC_ERR_CACHE (different model
 * fingerprint or shape, writer lock held, damaged DB opened for writing),
 * AC_ERR_ARG. */
int ac_store_open(const char *path, const ac_store_params *params, int flags, ac_store **out);
void ac_store_close(ac_store *st); /* NULL is fine; an unfinished or uncommitted entry is dropped (commit first) */

/* The parameters recorded in the file. */
void ac_store_get_params(const ac_store *st, ac_store_params *p);
/* Committed entries visible to this handle. */
int64_t ac_store_count(const ac_store *st);
/* Token count of entry i from the in-memory record table (no read of the
 * record, no checksum); -1 when i is out of range. */
int ac_store_n_tokens(const ac_store *st, int64_t i);
/* NULL if the file is intact as far as open/refresh could see, else a message
 * (record offset and problem, or the damaged commit slot). Borrowed, valid
 * until close or the next refresh. A damaged commit slot that cost nothing (it
 * held the commit before the one in use) is not damage: ac_store_verify and
 * ac_store_stats report it. */
const char *ac_store_damage(const ac_store *st);
/* Readers: pick up entries committed since open / the last refresh. Pointers
 * handed out earlier stay valid. *n_new (optional): entries added. */
int ac_store_refresh(ac_store *st, int64_t *n_new);

/* ---- reading (zero copy) -------------------------------------------------------- */
typedef struct ac_store_entry {
    uint64_t key;
    int n_tokens;         /* L */
    ac_map_codec codec;
    const float *feature; /* [feat_dim], into the map, 64-byte aligned                  */
    const int32_t *tokens; /* [n_tokens] token ids, or NULL when the DB carries none   */
    const uint8_t *maps;  /* [n_layer*n_head][map_bytes], layer-major, 64-byte aligned */
    size_t map_bytes;     /* one head's compressed map (ac_codec_map_bytes)             */
    int64_t index;        /* ordinal in the DB (commit order)                           */
    uint64_t offset;      /* file offset of the record (diagnostics)                    */
    uint64_t payload_hash; /* the record's payload checksum (xxh64 seeded with offset): with
                              key, the identity of its bytes (a device copy keyed on it is
                              never stale: another record, or the same after repair, differs) */
} ac_store_entry;

/* Entry by ordinal 0..count-1. The first access verifies the record's payload
 * checksum (unless AC_STORE_NO_VERIFY): a damaged record gives AC_ERR_CACHE
 * (and keeps giving it); other entries stay readable. Pointers stay valid
 * until ac_store_close. */
int ac_store_get(ac_store *st, int64_t i, ac_store_entry *e);
/* Entry by key: AC_OK, AC_ERR_RANGE if absent (no message), or get()'s errors. */
int ac_store_find(ac_store *st, uint64_t key, ac_store_entry *e);
/* One head's map of an entry. */
static inline const void *ac_store_entry_map(const ac_store_entry *e, int n_head, int layer, int head) {
    return e->maps + ((size_t)layer * (size_t)n_head + (size_t)head) * e->map_bytes;
}

/* ---- writing (handle opened with AC_STORE_WRITE) ------------------------------------------ */
/* Start an entry: key (unique in the DB), L tokens, codec (causal codecs only in
 * a causal DB), feature [feat_dim] (copied). */
int ac_store_begin(ac_store *st, uint64_t key, int n_tokens, const ac_map_codec *codec, const float *feature);
/* Token ids [n_tokens] of the entry just begun (required, right after begin,
 * when the DB was created with_tokens; refused otherwise). */
int ac_store_put_tokens(ac_store *st, const int32_t *tokens);
/* The maps, in order layer 0 head 0, layer 0 head 1, ...: P is [L][L] (encoded
 * here) or, for _encoded, one head's compressed map of map_bytes bytes. */
int ac_store_put_map(ac_store *st, int layer, int head, const float *P);
int ac_store_put_map_encoded(ac_store *st, int layer, int head, const void *map, size_t bytes);
/* Finish the entry: written, not yet committed (invisible to readers). */
int ac_store_end(ac_store *st);
/* Drop the entry in progress (if any). */
void ac_store_abort(ac_store *st);
/* Make every finished entry durable and visible: fsync data, write the next
 * commit slot, fsync. After a failed fsync the handle refuses further writes
 * (reopen); committed entries are never affected. */
int ac_store_commit(ac_store *st);
/* begin (+ put_tokens when tokens) + all maps (maps: [n_layer][n_head][L][L]) + end + commit. */
int ac_store_append(ac_store *st, uint64_t key, int n_tokens, const int32_t *tokens, const ac_map_codec *codec,
                    const float *feature, const float *maps);

/* ---- db verify / db stats ---------------------------------------------------------------- */
typedef struct ac_store_stats {
    int64_t entries;            /* committed, intact headers                          */
    uint64_t file_bytes;        /* file size                                          */
    uint64_t committed_bytes;   /* end of the committed region                        */
    uint64_t commit_seq;        /* sequence number of the commit in use               */
    uint64_t tokens;            /* sum of L                                           */
    int64_t codec_entries[AC_CODEC_COUNT];
    uint64_t codec_bytes[AC_CODEC_COUNT];    /* record bytes (header+feature+maps)   */
    uint64_t codec_elements[AC_CODEC_COUNT]; /* attention probabilities represented: n_maps*L*L */
    int damaged;                /* 1 if open/refresh stopped at a bad record or a damaged newest commit */
    uint64_t damage_offset;
    int slot_damaged;           /* a commit slot fails its checksum (newest: damaged = 1 too)          */
    int64_t lost_entries;       /* intact records past the commit in use that a damaged newest commit
                                   slot hides (db repair recovers them)                                */
    uint64_t lost_bytes;
} ac_store_stats;
int ac_store_stats_get(const ac_store *st, ac_store_stats *s);
/* Human-readable stats (entries, bytes, bytes/element per codec). */
void ac_store_stats_print(const ac_store *st, FILE *f);
/* Check every committed record: header checksum and structure (sizes agree
 * with L, codec and shape; keys unique), payload checksum, and TOPK indices in
 * range. *n_bad (optional): damaged records. Returns AC_OK if all are intact,
 * else AC_ERR_CACHE naming the first bad record; never crashes on a damaged
 * file. report (optional): one line per bad record. */
int ac_store_verify(ac_store *st, int64_t *n_bad, FILE *report);

/* db repair: keep every intact record of a damaged database and make it
 * writable again. Takes the writer lock (AC_ERR_CACHE if a writer holds it),
 * then finds every record whose header and payload checksums hold, anywhere
 * in the file (past a damaged newest commit, after a damaged record, even with
 * both commit slots damaged; a key stored twice keeps its first copy).
 *   - if they lie back to back from the data start (a damaged commit slot, a
 *     torn tail): commits them in place (both slots rewritten); nothing moves;
 *   - else (damaged records in between): writes them to a new file (checksums
 *     re-seeded with their new offsets), fsyncs, and renames it over path; the
 *     damaged original stays as "<path>.damaged.<unix time>". Entry ordinals
 *     change, keys do not.
 * An intact database (every committed record checks out, both slots valid or
 * blank) is left alone. params: as ac_store_open (NULL accepts the
 * file's model). report (optional): what was found and done. *n_entries
 * (optional): entries after the repair; *changed (optional): 1 if the file was
 * changed. Readers that have the file open keep their view (reopen to see the
 * repair). */
int ac_store_repair(const char *path, const ac_store_params *params, FILE *report, int64_t *n_entries, int *changed);

/* ---- compaction (eviction) ------------------------------------------------------------------ */
/* choose: given the n committed entries' keys [n] and record bytes [n] (in
 * commit order), set keep[i] = 1 for the entries to keep (keep is [n], zeroed);
 * return AC_OK or an error that stops the compaction (nothing changed). */
typedef int (*ac_store_choose_fn)(void *user, int64_t n, const uint64_t *keys, const uint64_t *bytes, uint8_t *keep);
/* Rewrite the database with the entries choose() keeps (in their order): under
 * the writer lock (AC_ERR_CACHE while a writer holds it), the kept records are
 * copied into "<path>.compact.<pid>" (checksums re-seeded with their new
 * offsets), fsync'd and committed, then renamed over path and the directory
 * fsync'd. A process killed at any point leaves either the old store or the
 * new one, each complete (a stray temp file at most). Keys are kept, ordinals
 * change. Nothing is written when every entry is kept. A damaged database is
 * refused (repair it first). Readers that have the file open keep their view
 * (the old file's mapping) until they reopen. report (optional): one line;
 * *n_kept, *bytes_after (optional): entries and committed bytes afterwards. */
int ac_store_compact(const char *path, const ac_store_params *params, ac_store_choose_fn choose, void *user,
                     FILE *report, int64_t *n_kept, uint64_t *bytes_after);

/* ---- testing hook --------------------------------------------------------------------------- */
/* Replaces pwrite() for every store write in this process (NULL restores it).
 * Fault injection: return -1 with errno = ENOSPC, or a short count. */
typedef ssize_t (*ac_store_pwrite_fn)(int fd, const void *buf, size_t n, off_t off);
void ac_store_set_pwrite_hook(ac_store_pwrite_fn fn);
/* Address space reserved per mapping region (default 16 GiB; 0 restores it).
 * Tests set it tiny to exercise re-mapping into new regions. */
void ac_store_set_reserve_hint(size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
