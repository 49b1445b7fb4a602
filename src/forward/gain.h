/* gain.h — the measured-gain guard: a context whose cache makes its calls slower
 * stops using it (a cache that does not help must cost nothing).
 *
 * The hit-rate rule (src/cache/adapt.h) skips lookups that miss; it cannot see a
 * stream whose lookups hit but cost more than the work they save — short texts on
 * the GPU, where one lookup on the host costs about what the whole exact forward
 * of the text does on the device. This guard compares times instead: the context
 * times every call (wall seconds per token, lookups included) and keeps two
 * decayed means, one for calls run with the cache and one for calls run without.
 * Pure logic, no clock: the caller measures and reports; deterministic given the
 * reported times.
 *
 *   using (the start): calls run with the cache; the first exact probe comes after
 *     AC_GAIN_WARM cached calls (their cold costs — first fetches, device uploads —
 *     excluded), then one call in AC_GAIN_RECHECK runs without the cache to keep the
 *     exact mean current. Once both means exist and cached > exact x (1 + margin):
 *     bypassing, with the probe interval K = AC_GAIN_PROBE_MIN.
 *   bypassing: calls run without the cache but for one in K, a cached probe. A
 *     probe still slower (by the means) doubles K up to AC_GAIN_PROBE_MAX; one that
 *     is not turns the cache back on.
 * Cost on a stream the cache slows: one call in K (at most 1/AC_GAIN_PROBE_MIN, soon
 * 1/AC_GAIN_PROBE_MAX) pays the cached price; on a stream it speeds up: one call in
 * AC_GAIN_RECHECK runs exact. */
#ifndef AC_FORWARD_GAIN_H
#define AC_FORWARD_GAIN_H

#include <stdint.h>

#define AC_GAIN_WARM 4        /* cached calls before the first exact probe (not averaged) */
#define AC_GAIN_RECHECK 32    /* while using: one call in this many runs exact */
#define AC_GAIN_PROBE_MIN 4
#define AC_GAIN_PROBE_MAX 256
#define AC_GAIN_MARGIN 0.02   /* cached must be more than 2% slower per token to bypass */
#define AC_GAIN_DECAY 0.25    /* weight of a new time in its mean */

typedef struct ac_gain {
    double t_exact, t_cached;   /* decayed means, seconds per token (0: none yet) */
    int64_t n_exact, n_cached;  /* calls averaged into each */
    int64_t calls;              /* calls decided */
    int64_t bypassed;           /* calls run without the cache because it was slower (probes excluded) */
    int64_t probes_exact;       /* exact calls made while using the cache, to time the alternative */
    int64_t probes_cached;      /* cached calls made while bypassing */
    int bypassing;              /* 1: the cache is slower, calls run without it */
    int interval;               /* K while bypassing */
    int since;                  /* calls since the last probe */
    int warm;                   /* cached calls seen before the first average (up to AC_GAIN_WARM) */
    int last;                   /* what the last decision was: AC_GAIN_USE, _EXACT */
} ac_gain;

enum { AC_GAIN_EXACT = 0, AC_GAIN_USE = 1 };

/* Start over: using the cache, nothing timed. */
void ac_gain_reset(ac_gain *g);
/* The next call: AC_GAIN_USE (run it with the cache) or AC_GAIN_EXACT (without). */
int ac_gain_next(ac_gain *g);
/* The call just decided took `seconds` for `tokens` tokens (a failed call: not reported). */
void ac_gain_note(ac_gain *g, double seconds, int64_t tokens);

#endif
