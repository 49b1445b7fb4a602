/* store_ops.c — the map store interface's generic part (store_ops.h): opening
 * a handle of any implementation, and append written once over the table. */
#include "cache/store_ops.h"
#include "util/common.h"

#include <stdlib.h>

int ac_mapstore_open(const ac_store_ops *ops, const char *where, const ac_store_params *params, int flags,
                     ac_mapstore **out) {
    if (!ops || !out) return ac_err(AC_ERR_ARG, "store: NULL implementation or out");
    *out = NULL;
    ac_mapstore *s = AC_CALLOC(1, sizeof *s);
    if (!s) return ac_err(AC_ERR_NOMEM, "store: out of memory");
    s->ops = ops;
    int rc = ops->open(where, params, flags, &s->state);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return AC_OK;
}

void ac_mapstore_close(ac_mapstore *s) {
    if (!s) return;
    s->ops->close(s->state);
    free(s);
}

int ac_mapstore_append(ac_mapstore *s, uint64_t key, int n_tokens, const int32_t *tokens, const ac_map_codec *codec,
                       const float *feature, const float *maps) {
    if (!s || n_tokens <= 0 || !maps) return ac_err(AC_ERR_ARG, "store append: invalid argument");
    ac_store_params p;
    ac_mapstore_get_params(s, &p);
    int rc = ac_mapstore_begin(s, key, n_tokens, codec, feature);
    if (rc) return rc;
    if (tokens && (rc = ac_mapstore_put_tokens(s, tokens))) goto fail;
    const size_t LL = (size_t)n_tokens * (size_t)n_tokens;
    for (int l = 0; l < p.n_layer; l++)
        for (int h = 0; h < p.n_head; h++)
            if ((rc = ac_mapstore_put_map(s, l, h, maps + ((size_t)l * p.n_head + h) * LL))) goto fail;
    if ((rc = ac_mapstore_end(s))) goto fail;
    return ac_mapstore_commit(s);
fail:
    ac_mapstore_abort(s);
    return rc;
}
