/* verify.c — the distance between a query's exact layer-0 rows and a stored
 * entry's (verify.h). Layer 0 is the one layer whose exact rows are cheap
 * before the forward pass has run anything: its input is the layer-0 states
 * the lookup already computed for the key. */
#include "cache/verify.h"
#include "cache/codec.h"
#include "util/common.h"

#include <math.h>

int ac_verify_pick_rows(int L, int causal, int nr, int *rows) {
    if (L < 1 || nr < 1) return 0;
    nr = AC_MIN(nr, L);
    rows[0] = causal ? L - 1 : 0;
    for (int r = 1; r < nr; r++) { /* evenly spread over the others */
        const int t = (int)((int64_t)r * L / nr);
        rows[r] = causal ? (L - 1 - t) : t;
    }
    return nr;
}

double ac_verify_distance(const ac_store_entry *e, int n_head, int L, int causal, const int *rows, int nr,
                          const float *Pq, float *row) {
    double sum = 0;
    for (int h = 0; h < n_head; h++) {
        const void *map = ac_store_entry_map(e, n_head, 0, h);
        for (int r = 0; r < nr; r++) {
            const int t = rows[r], nv = causal ? t + 1 : L;
            ac_codec_decode_row(&e->codec, map, e->n_tokens, t, row);
            double tot = 0, tv = 0;
            for (int j = 0; j < nv; j++) tot += row[j];
            const double inv = tot > 1e-20 ? 1.0 / tot : 0;
            const float *q = Pq + ((size_t)h * nr + r) * L;
            for (int j = 0; j < nv; j++) tv += fabs(row[j] * inv - q[j]);
            sum += 0.5 * tv;
        }
    }
    return sum / ((double)n_head * nr);
}
