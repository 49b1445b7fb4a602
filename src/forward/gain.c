/* gain.c — the measured-gain guard (gain.h). */
#include "forward/gain.h"

#include <string.h>

void ac_gain_reset(ac_gain *g) {
    memset(g, 0, sizeof *g);
    g->last = AC_GAIN_USE;
}

int ac_gain_next(ac_gain *g) {
    g->calls++;
    int use;
    if (!g->bypassing) {
        /* an exact probe after the warm-up, then one call in AC_GAIN_RECHECK */
        const int due = g->warm >= AC_GAIN_WARM && (g->n_exact == 0 || ++g->since >= AC_GAIN_RECHECK);
        use = !due;
        if (due) g->since = 0, g->probes_exact++;
    } else {
        use = ++g->since >= g->interval;
        if (use) g->since = 0, g->probes_cached++;
        else g->bypassed++;
    }
    g->last = use ? AC_GAIN_USE : AC_GAIN_EXACT;
    return g->last;
}

static void mean_in(double *m, int64_t *n, double x) {
    *m = *n ? *m + AC_GAIN_DECAY * (x - *m) : x;
    ++*n;
}

void ac_gain_note(ac_gain *g, double seconds, int64_t tokens) {
    if (tokens <= 0 || !(seconds >= 0)) return;
    const double t = seconds / (double)tokens;
    if (g->last == AC_GAIN_USE) {
        if (g->warm < AC_GAIN_WARM) { /* cold calls: not averaged */
            g->warm++;
            return;
        }
        mean_in(&g->t_cached, &g->n_cached, t);
    } else {
        mean_in(&g->t_exact, &g->n_exact, t);
    }
    if (!g->n_exact || !g->n_cached) return;
    const int slower = g->t_cached > g->t_exact * (1.0 + AC_GAIN_MARGIN);
    if (!g->bypassing) {
        if (slower) g->bypassing = 1, g->interval = AC_GAIN_PROBE_MIN, g->since = 0;
    } else if (g->last == AC_GAIN_USE) { /* a cached probe decides */
        if (slower) {
            g->interval = g->interval * 2 > AC_GAIN_PROBE_MAX ? AC_GAIN_PROBE_MAX : g->interval * 2;
        } else {
            g->bypassing = 0, g->since = 0;
        }
    }
}
