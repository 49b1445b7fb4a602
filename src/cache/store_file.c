/* store_file.c — the file store (store.c) as an implementation of the map
 * store interface (store_ops.h): each operation forwards to its ac_store_*
 * function; the state is the ac_store handle. */
#include "cache/store_ops.h"

static int f_open(const char *where, const ac_store_params *params, int flags, void **state) {
    ac_store *st = NULL;
    int rc = ac_store_open(where, params, flags, &st);
    *state = st;
    return rc;
}
static void f_close(void *s) { ac_store_close(s); }
static void f_get_params(const void *s, ac_store_params *p) { ac_store_get_params(s, p); }
static int64_t f_count(const void *s) { return ac_store_count(s); }
static int f_n_tokens(const void *s, int64_t i) { return ac_store_n_tokens(s, i); }
static const char *f_damage(const void *s) { return ac_store_damage(s); }
static int f_refresh(void *s, int64_t *n_new) { return ac_store_refresh(s, n_new); }
static int f_get(void *s, int64_t i, ac_store_entry *e) { return ac_store_get(s, i, e); }
static int f_find(void *s, uint64_t key, ac_store_entry *e) { return ac_store_find(s, key, e); }
static int f_begin(void *s, uint64_t key, int n_tokens, const ac_map_codec *codec, const float *feature) {
    return ac_store_begin(s, key, n_tokens, codec, feature);
}
static int f_put_tokens(void *s, const int32_t *tokens) { return ac_store_put_tokens(s, tokens); }
static int f_put_map(void *s, int layer, int head, const float *P) { return ac_store_put_map(s, layer, head, P); }
static int f_put_map_encoded(void *s, int layer, int head, const void *map, size_t bytes) {
    return ac_store_put_map_encoded(s, layer, head, map, bytes);
}
static int f_end(void *s) { return ac_store_end(s); }
static void f_abort(void *s) { ac_store_abort(s); }
static int f_commit(void *s) { return ac_store_commit(s); }
static int f_stats_get(const void *s, ac_store_stats *st) { return ac_store_stats_get(s, st); }
static void f_stats_print(const void *s, FILE *f) { ac_store_stats_print(s, f); }
static int f_verify(void *s, int64_t *n_bad, FILE *report) { return ac_store_verify(s, n_bad, report); }

const ac_store_ops ac_store_file_ops = {
    .name = "file",
    .open = f_open,
    .close = f_close,
    .get_params = f_get_params,
    .count = f_count,
    .n_tokens = f_n_tokens,
    .damage = f_damage,
    .refresh = f_refresh,
    .get = f_get,
    .find = f_find,
    .begin = f_begin,
    .put_tokens = f_put_tokens,
    .put_map = f_put_map,
    .put_map_encoded = f_put_map_encoded,
    .end = f_end,
    .abort = f_abort,
    .commit = f_commit,
    .stats_get = f_stats_get,
    .stats_print = f_stats_print,
    .verify = f_verify,
};
