/* adapt.h — adaptive lookups: a cache that does not help must cost nothing.
 *
 * One state machine per open cache (cache.c keeps it under its own mutex;
 * nothing here locks). Every sequence that reaches a lookup asks
 * ac_adapt_admit whether to look it up; after a lookup, ac_adapt_note says
 * whether it hit. Deterministic: the decisions depend only on the order of
 * the calls.
 *
 *   looking up (the start): rate = mean of the hits of the lookups made, over
 *     the last `window` lookups (weight 1/min(seen, window) per new lookup:
 *     the plain mean while fewer than `window` were made, then an
 *     exponentially decayed one). Once `window` lookups were made and
 *     rate < floor: skipping, with the probe interval K = AC_ADAPT_PROBE_MIN.
 *   skipping: each sequence is skipped (computed exactly, no lookup) but for
 *     one in K, a probe, which is looked up. A probe that misses doubles K
 *     (up to probe_max); a probe that hits turns lookups back on, with rate 1
 *     counting that hit and `window` lookups before skipping may start again.
 *   new entries committed while skipping: the next sequence is a probe and K
 *     starts over at AC_ADAPT_PROBE_MIN (the new entries may serve the stream).
 *
 * Worst cases: a stream that turns to hits while skipping waits at most
 * probe_max sequences for its probe; a stream that stays at misses pays
 * `window` lookups, then about one in probe_max. */
#ifndef AC_CACHE_ADAPT_H
#define AC_CACHE_ADAPT_H

#include <stdint.h>

#define AC_ADAPT_PROBE_MIN 4         /* the first probe interval K */
#define AC_ADAPT_DEFAULT_FLOOR 0.02f /* ac_cache_default_params */
#define AC_ADAPT_DEFAULT_WINDOW 64
#define AC_ADAPT_DEFAULT_PROBE_MAX 256
#define AC_ADAPT_MAX_PARAM (1 << 20) /* window, probe_max: at most this */

enum { AC_ADAPT_SKIP = 0, AC_ADAPT_LOOKUP = 1, AC_ADAPT_PROBE = 2 };

typedef struct ac_adapt {
    /* parameters */
    float floor;        /* skip below this hit rate; <= 0: off (every sequence looked up) */
    int window;         /* N >= 1 */
    int probe_max;      /* largest K, >= AC_ADAPT_PROBE_MIN */
    /* state */
    double rate;        /* decayed hit rate of the lookups made since the last (re)start */
    int64_t seen;       /* those lookups, counted up to window */
    int skipping;       /* 1: only probes are looked up */
    int interval;       /* K: one sequence in K is a probe while skipping */
    int since;          /* sequences since the last probe (skipping) */
} ac_adapt;

/* Validate the parameters (0 for window or probe_max: the default); the
 * message names the bad one. AC_OK or AC_ERR_ARG. */
int ac_adapt_check(float floor, int window, int probe_max);
/* Set the parameters (checked first) and start over: looking up, nothing seen. */
void ac_adapt_init(ac_adapt *a, float floor, int window, int probe_max);
/* Start over with the same parameters. */
void ac_adapt_reset(ac_adapt *a);
/* The next sequence: AC_ADAPT_SKIP, AC_ADAPT_LOOKUP or AC_ADAPT_PROBE. */
int ac_adapt_admit(ac_adapt *a);
/* The result of a lookup admitted as LOOKUP or PROBE (kind): hit 1 or 0. */
void ac_adapt_note(ac_adapt *a, int kind, int hit);
/* New entries became findable. */
void ac_adapt_new_entries(ac_adapt *a);

#endif
