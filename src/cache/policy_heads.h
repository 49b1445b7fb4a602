/* policy_heads.h — the attention cache's per-head policy: which heads are
 * positional enough to run restricted to a key span (sinks + a window around
 * the diagonal), chosen from the maps a cache recorded (docs/CACHE.md
 * "Per-head spans"). The forward pass runs those heads with
 * ac_attn_local_rows (forward.h hook `head_span`); no lookup is needed. */
#ifndef AC_POLICY_HEADS_H
#define AC_POLICY_HEADS_H

#include "cache/store_ops.h"

#include <stdio.h>

typedef struct ac_head_policy {
    int n_layer, n_head;
    int *span;          /* [n_layer][n_head]: 0 exact, w > 0 restricted to the span of w */
    int n_sink, n_end;  /* first / last keys every restricted row also attends to */
    int n_restricted;   /* heads with span > 0 */
} ac_head_policy;

/* Candidate windows, ascending. */
#define AC_HEAD_SPANS 14
extern const int ac_head_span_candidates[AC_HEAD_SPANS];

/* Per (layer, head) measurements over the profiled entries. */
typedef struct ac_head_profile {
    int n_layer, n_head, n_entries;
    double *lost_mean;  /* [n_layer][n_head][AC_HEAD_SPANS] mean over rows and entries of the mass
                           outside the span (= the total-variation distance of the restricted,
                           renormalised row from the exact one) */
    double *lost_max;   /* [...][AC_HEAD_SPANS] worst entry's mean over its rows */
    double *tmpl_tv;    /* [n_layer][n_head] mean TV distance of the rows from a position-only
                           template (mean weight per relative offset |d| < 64 and per sink) */
} ac_head_profile;

/* Profile up to max_entries entries of st (evenly spread over the store)
 * with sinks n_sink / n_end (n_end ignored when causal). */
int ac_heads_profile(ac_mapstore *st, int n_layer, int n_head, int causal, int n_sink, int n_end, int max_entries,
                     ac_head_profile *out);
void ac_heads_profile_free(ac_head_profile *p);

/* A policy from a profile: each head gets the smallest candidate window whose
 * worst entry loses at most eps of its mass outside the span, or 0 (exact).
 * max_span: larger windows are not worth restricting (0: no limit). */
int ac_heads_choose(const ac_head_profile *pr, float eps, int max_span, int n_sink, int n_end, ac_head_policy *out);

/* "none" / NULL: no restricted head; "policy": DIR/heads.txt (written by
 * ac_heads_save). Errors name the problem (missing file, wrong shape, bad
 * numbers). */
int ac_heads_load(const char *dir, const char *spec, int n_layer, int n_head, ac_head_policy *out);
/* DIR/heads.txt, crash-safe (temp + fsync + rename). */
int ac_heads_save(const char *dir, const ac_head_policy *hp);
void ac_heads_free(ac_head_policy *hp);

/* The per-head table of a profile and the chosen policy, for humans. */
void ac_heads_print(FILE *f, const ac_head_profile *pr, const ac_head_policy *hp);

#endif
