/* store_ops.h — the map store interface: a table of operations plus each
 * handle's private state (the shape of ggml's backends), so the cache works
 * with any store. The file store (store.c, adapted in store_file.c) is the
 * first implementation; a second one (e.g. a distributed store) fills the same
 * table and runs the same tests (tests/test_cache_store.c iterates over a table
 * of implementations). cache.c reaches the store only through this header.
 *
 * The record types shared by every implementation (ac_store_params,
 * ac_store_entry, ac_store_stats, the AC_STORE_* open flags) are those of
 * store.h; an implementation gives them the meaning stated there.
 *
 * The contract every implementation keeps:
 *
 *  Entries. An entry is immutable once committed: key, n_tokens, codec,
 *  feature, token ids and maps never change. Ordinals are 0..count-1 in
 *  commit order; keys are unique.
 *
 *  Zero-copy pointers. get/find fill an ac_store_entry whose pointers
 *  (feature, tokens, maps) point into memory the handle owns. They stay valid,
 *  with the same bytes, until ac_mapstore_close of that handle — neither a
 *  refresh, a commit, further writes, nor a failed call invalidates them — and
 *  they may be read from any thread without a lock. Nothing else invalidates
 *  them; after close they dangle. (The file store maps the file and keeps
 *  every mapping until close.)
 *
 *  Visibility. A handle sees the entries of the last commit it made or read:
 *  a writer's own entries once it commits; another handle's after its
 *  refresh. Uncommitted entries are never visible, not even to their writer's
 *  get/find.
 *
 *  Thread-safety, per handle. The reading calls (get_params, count, n_tokens,
 *  damage, get, find, stats_get, stats_print) may run from several threads at
 *  once, as long as no thread runs a changing call (refresh, begin, put_*,
 *  end, abort, commit, verify) on the same handle; a changing call needs the
 *  handle to itself. Handles are independent: a writer handle may write and
 *  commit while other handles on the same database are read (the cache keeps
 *  one handle for lookups and one for its writer, and refreshes the first
 *  under its own lock).
 *
 *  Errors: int status codes with ac_err messages (store.h lists them per call);
 *  a damaged record gives AC_ERR_CACHE from get/find and keeps giving it,
 *  while the other entries stay readable. */
#ifndef AC_CACHE_STORE_OPS_H
#define AC_CACHE_STORE_OPS_H

#include "cache/store.h"
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_store_ops {
    const char *name; /* "file", ... */
    /* Open or create the database named `where` (the file store: a path).
     * params, flags: as ac_store_open. On success *state is the handle's
     * private state, freed by close. */
    int (*open)(const char *where, const ac_store_params *params, int flags, void **state);
    /* Frees the state; an unfinished or uncommitted entry is dropped. */
    void (*close)(void *state);
    void (*get_params)(const void *state, ac_store_params *p);
    int64_t (*count)(const void *state);
    int (*n_tokens)(const void *state, int64_t i); /* -1 when out of range */
    const char *(*damage)(const void *state);      /* NULL, or a message valid until close */
    int (*refresh)(void *state, int64_t *n_new);
    int (*get)(void *state, int64_t i, ac_store_entry *e);
    int (*find)(void *state, uint64_t key, ac_store_entry *e); /* AC_ERR_RANGE (no message) if absent */
    int (*begin)(void *state, uint64_t key, int n_tokens, const ac_map_codec *codec, const float *feature);
    int (*put_tokens)(void *state, const int32_t *tokens);
    int (*put_map)(void *state, int layer, int head, const float *P);
    int (*put_map_encoded)(void *state, int layer, int head, const void *map, size_t bytes);
    int (*end)(void *state);
    void (*abort)(void *state);
    int (*commit)(void *state);
    int (*stats_get)(const void *state, ac_store_stats *s);
    void (*stats_print)(const void *state, FILE *f);
    int (*verify)(void *state, int64_t *n_bad, FILE *report);
} ac_store_ops;

/* A store handle: an implementation and its state. */
typedef struct ac_mapstore {
    const ac_store_ops *ops;
    void *state;
} ac_mapstore;

/* The file store (store.c). */
extern const ac_store_ops ac_store_file_ops;

/* Open a handle of implementation ops. Caller owns *out (ac_mapstore_close). */
int ac_mapstore_open(const ac_store_ops *ops, const char *where, const ac_store_params *params, int flags,
                     ac_mapstore **out);
void ac_mapstore_close(ac_mapstore *s); /* NULL is fine; entry pointers handed out dangle afterwards */
/* begin (+ put_tokens when tokens) + every map (maps: [n_layer][n_head][L][L]) + end + commit,
 * through the table: the same for every implementation. */
int ac_mapstore_append(ac_mapstore *s, uint64_t key, int n_tokens, const int32_t *tokens, const ac_map_codec *codec,
                       const float *feature, const float *maps);

/* The calls, by name (see ac_store_* in store.h for each one's meaning). */
static inline void ac_mapstore_get_params(const ac_mapstore *s, ac_store_params *p) { s->ops->get_params(s->state, p); }
static inline int64_t ac_mapstore_count(const ac_mapstore *s) { return s->ops->count(s->state); }
static inline int ac_mapstore_n_tokens(const ac_mapstore *s, int64_t i) { return s->ops->n_tokens(s->state, i); }
static inline const char *ac_mapstore_damage(const ac_mapstore *s) { return s->ops->damage(s->state); }
static inline int ac_mapstore_refresh(ac_mapstore *s, int64_t *n_new) { return s->ops->refresh(s->state, n_new); }
static inline int ac_mapstore_get(ac_mapstore *s, int64_t i, ac_store_entry *e) { return s->ops->get(s->state, i, e); }
static inline int ac_mapstore_find(ac_mapstore *s, uint64_t key, ac_store_entry *e) {
    return s->ops->find(s->state, key, e);
}
static inline int ac_mapstore_begin(ac_mapstore *s, uint64_t key, int n_tokens, const ac_map_codec *codec,
                                    const float *feature) {
    return s->ops->begin(s->state, key, n_tokens, codec, feature);
}
static inline int ac_mapstore_put_tokens(ac_mapstore *s, const int32_t *tokens) {
    return s->ops->put_tokens(s->state, tokens);
}
static inline int ac_mapstore_put_map(ac_mapstore *s, int layer, int head, const float *P) {
    return s->ops->put_map(s->state, layer, head, P);
}
static inline int ac_mapstore_put_map_encoded(ac_mapstore *s, int layer, int head, const void *map, size_t bytes) {
    return s->ops->put_map_encoded(s->state, layer, head, map, bytes);
}
static inline int ac_mapstore_end(ac_mapstore *s) { return s->ops->end(s->state); }
static inline void ac_mapstore_abort(ac_mapstore *s) { s->ops->abort(s->state); }
static inline int ac_mapstore_commit(ac_mapstore *s) { return s->ops->commit(s->state); }
static inline int ac_mapstore_stats_get(const ac_mapstore *s, ac_store_stats *st) {
    return s->ops->stats_get(s->state, st);
}
static inline void ac_mapstore_stats_print(const ac_mapstore *s, FILE *f) { s->ops->stats_print(s->state, f); }
static inline int ac_mapstore_verify(ac_mapstore *s, int64_t *n_bad, FILE *report) {
    return s->ops->verify(s->state, n_bad, report);
}

#ifdef __cplusplus
}
#endif
#endif
