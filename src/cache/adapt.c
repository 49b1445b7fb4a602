/* adapt.c — adaptive lookups: skip the lookups of a cache whose recent hit
 * rate is near zero, probing now and then (the state machine of adapt.h). */
#include "cache/adapt.h"
#include "util/common.h"

int ac_adapt_check(float floor, int window, int probe_max) {
    if (!(floor >= 0.0f && floor <= 1.0f)) /* NaN too */
        return ac_err(AC_ERR_ARG, "adaptive lookups: floor %g is not a hit rate in [0, 1] (0: off)", (double)floor);
    if (window < 0 || window > AC_ADAPT_MAX_PARAM)
        return ac_err(AC_ERR_ARG, "adaptive lookups: window %d is not in [1, %d] (0: default %d)", window,
                      AC_ADAPT_MAX_PARAM, AC_ADAPT_DEFAULT_WINDOW);
    if (probe_max < 0 || (probe_max > 0 && probe_max < AC_ADAPT_PROBE_MIN) || probe_max > AC_ADAPT_MAX_PARAM)
        return ac_err(AC_ERR_ARG, "adaptive lookups: largest probe interval %d is not in [%d, %d] (0: default %d)",
                      probe_max, AC_ADAPT_PROBE_MIN, AC_ADAPT_MAX_PARAM, AC_ADAPT_DEFAULT_PROBE_MAX);
    return AC_OK;
}

void ac_adapt_reset(ac_adapt *a) {
    a->rate = 0;
    a->seen = 0;
    a->skipping = 0;
    a->interval = AC_ADAPT_PROBE_MIN;
    a->since = 0;
}

void ac_adapt_init(ac_adapt *a, float floor, int window, int probe_max) {
    a->floor = floor;
    a->window = window > 0 ? window : AC_ADAPT_DEFAULT_WINDOW;
    a->probe_max = probe_max > 0 ? probe_max : AC_ADAPT_DEFAULT_PROBE_MAX;
    ac_adapt_reset(a);
}

int ac_adapt_admit(ac_adapt *a) {
    if (!(a->floor > 0) || !a->skipping) return AC_ADAPT_LOOKUP;
    if (++a->since < a->interval) return AC_ADAPT_SKIP;
    a->since = 0;
    return AC_ADAPT_PROBE;
}

void ac_adapt_note(ac_adapt *a, int kind, int hit) {
    if (!(a->floor > 0)) return;
    if (kind == AC_ADAPT_PROBE && a->skipping) {
        if (hit) { /* the stream hits again: look every sequence up, this hit counted */
            a->skipping = 0;
            a->rate = 1.0;
            a->seen = 1;
            a->interval = AC_ADAPT_PROBE_MIN;
            a->since = 0;
        } else if (a->interval < a->probe_max) {
            a->interval = a->interval > a->probe_max / 2 ? a->probe_max : 2 * a->interval;
        }
        return;
    }
    if (a->skipping) return; /* a lookup admitted before another thread started skipping: no news */
    if (a->seen < a->window) a->seen++;
    a->rate += ((hit ? 1.0 : 0.0) - a->rate) / (double)a->seen;
    if (a->seen >= a->window && a->rate < a->floor) {
        a->skipping = 1;
        a->interval = AC_ADAPT_PROBE_MIN;
        a->since = 0;
    }
}

void ac_adapt_new_entries(ac_adapt *a) {
    if (a->skipping) { /* the next sequence is a probe, then K starts over */
        a->interval = AC_ADAPT_PROBE_MIN;
        a->since = a->interval - 1;
    }
}
