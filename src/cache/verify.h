/* verify.h — checking a retrieved map before trusting it (ac_cache_params.verify):
 * a few exact rows of the query's layer-0 maps (forward.h ac_layer0_rows)
 * against the same rows of the candidate entry's stored layer-0 maps. */
#ifndef AC_CACHE_VERIFY_H
#define AC_CACHE_VERIFY_H

#include "cache/store.h"

/* The rows checked for a query of L tokens: up to nr rows, the one that
 * matters most first (causal: the last row, the answer position; else row 0,
 * [CLS]), the others evenly spread. Returns how many (<= nr, <= L). */
int ac_verify_pick_rows(int L, int causal, int nr, int *rows);

/* Mean over heads and checked rows of the total-variation distance between
 * the query's exact rows Pq [H][nr][L] and entry e's layer-0 rows (its first L
 * columns, renormalised: a longer entry serves through its top-left block).
 * row: scratch of e->n_tokens floats. */
double ac_verify_distance(const ac_store_entry *e, int n_head, int L, int causal, const int *rows, int nr,
                          const float *Pq, float *row);

#endif
