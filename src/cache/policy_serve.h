/* policy_serve.h — per-head serving: which (layer, head) pairs a cache hit
 * takes from the retrieved entry's maps, the others being computed exactly
 * (docs/CACHE.md "Per-head serving"). The pairs are chosen from a ranking of
 * how close each head's maps are between stored inputs and the neighbours
 * their keys retrieve (ac_cache_rank_heads), saved as DIR/head_rank.txt. */
#ifndef AC_POLICY_SERVE_H
#define AC_POLICY_SERVE_H

#include "cache/store_ops.h"

#include <stdint.h>
#include <stdio.h>

typedef struct ac_head_rank {
    int n_layer, n_head, n_pairs;
    float threshold;    /* key threshold the pairs were found under */
    double *tv;         /* [n_layer][n_head] mean over pairs (and each pair's rows) of the total-variation
                           distance between a row of the query's map and the same row of its neighbour's */
    double *tv_max;     /* [n_layer][n_head] the worst pair's mean */
    int *order;         /* [n_layer * n_head] layer * n_head + head, smallest tv first */
} ac_head_rank;

/* Accumulate one pair into tv_sum / tv_max [n_layer][n_head]: query entry q
 * served by entry e (e->n_tokens >= q->n_tokens; a longer bidirectional entry
 * through its top-left block, rows renormalised as serving does; causal:
 * row t over keys 0..t). rq, re: scratch of e->n_tokens floats. */
/* 1 when a longer bidirectional entry (Le > L >= 2 tokens) ends with the query's last token (an
 * encoder's closing [SEP]): serving it aligns that token, the query's last row and column taken
 * from the entry's last ones (cache.c apply_task; the ranking compares rows the same way). */
static inline int ac_entry_end_aligned(const int32_t *et, int Le, const int32_t *qt, int L) {
    return et && qt && Le > L && L >= 2 && et[Le - 1] == qt[L - 1];
}

void ac_head_rank_pair(const ac_store_entry *q, const ac_store_entry *e, int n_layer, int n_head, int causal,
                       double *tv_sum, double *tv_max, float *rq, float *re);
/* Finish a ranking from the sums of n_pairs pairs (tv_sum becomes the mean;
 * order sorted, ties by layer then head). r->tv, r->tv_max, r->order allocated. */
void ac_head_rank_finish(ac_head_rank *r);

/* DIR/head_rank.txt, crash-safe (temp + fsync + rename), and back. Load
 * errors name the problem (missing file, another shape, a bad line). */
int ac_head_rank_save(const char *dir, const ac_head_rank *r);
int ac_head_rank_load(const char *dir, int n_layer, int n_head, ac_head_rank *r);
void ac_head_rank_free(ac_head_rank *r);
/* r->order from r->tv (ascending; ties by index), the sums already averaged. */
void ac_head_rank_sort(ac_head_rank *r);
/* The ranking for humans: per layer, each head's mean (worst) distance and its rank. */
void ac_head_rank_print(FILE *f, const ac_head_rank *r);

/* mask [n_layer][n_head] (1: served on a hit) from a spec: NULL or "all"
 * (every head), "none", "rank:K" (the K most stable pairs of
 * DIR/head_rank.txt, 0 <= K <= n_layer * n_head), "rank:K/G" (K heads in the
 * K/G most stable groups of G adjacent heads of a layer, a group ranked by its
 * heads' mean distance; G divides n_head and K: groups whose Q/K columns fill
 * the GEMM's 64-column panels skip their projection) or a list "L.H,L.H,..."
 * (L.* : every head of layer L). AC_ERR_ARG / AC_ERR_CACHE naming the problem. */
int ac_serve_heads_parse(const char *dir, const char *spec, int n_layer, int n_head, uint8_t *mask);

#endif
