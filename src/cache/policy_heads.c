/* policy_heads.c — per-head spans from recorded maps (policy_heads.h).
 *
 * A head is "positional" when, on every profiled entry, its rows put nearly
 * all their mass on a few fixed positions relative to the row: the first
 * key(s) (a sink: [CLS] / BOS), the last key(s) ([SEP], bidirectional) and a
 * window around the diagonal (previous token, diagonal, local context). Such a
 * head can run as exact attention restricted to that span: the error of a row
 * is then exactly the mass it had outside the span (the total-variation
 * distance of the renormalised row), which is what the profile measures, per
 * candidate window. For comparison the profile also measures the distance of
 * the rows from a position-only template (mean weight per relative offset):
 * what serving such a head from a fixed map, with no Q.K at all, would cost. */
#define _GNU_SOURCE
#include "cache/policy_heads.h"
#include "cache/codec.h"
#include "forward/forward.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const int ac_head_span_candidates[AC_HEAD_SPANS] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};

#define TMPL_OFF 64                 /* template offsets |d| < 64 */
#define TMPL_BINS (2 * TMPL_OFF + 3) /* offsets, then sink, end, far */
#define ROWS_PER_MAP 128             /* rows profiled per map (evenly spread) */

void ac_heads_profile_free(ac_head_profile *p) {
    if (!p) return;
    free(p->lost_mean);
    free(p->lost_max);
    free(p->tmpl_tv);
    memset(p, 0, sizeof *p);
}

void ac_heads_free(ac_head_policy *hp) {
    if (!hp) return;
    free(hp->span);
    memset(hp, 0, sizeof *hp);
}

/* template bin of key s for row t */
static int tmpl_bin(int t, int s, int L, int causal, int n_sink, int n_end) {
    if (s < n_sink) return 2 * TMPL_OFF;
    if (!causal && s >= L - n_end) return 2 * TMPL_OFF + 1;
    const int d = s - t;
    if (d > -TMPL_OFF && d < TMPL_OFF) return d + TMPL_OFF;
    return 2 * TMPL_OFF + 2;
}

int ac_heads_profile(ac_mapstore *st, int n_layer, int n_head, int causal, int n_sink, int n_end, int max_entries,
                     ac_head_profile *out) {
    memset(out, 0, sizeof *out);
    if (n_sink < 0 || n_end < 0 || n_sink > 64 || n_end > 64)
        return ac_err(AC_ERR_ARG, "head profile: sinks must be 0-64 (got %d first, %d last)", n_sink, n_end);
    if (causal) n_end = 0;
    const int64_t n = ac_mapstore_count(st);
    const int m = (int)AC_MIN((int64_t)(max_entries > 0 ? max_entries : 64), n);
    if (m < 1) return ac_err(AC_ERR_CACHE, "head profile: the cache has no entries to profile");
    const size_t NH = (size_t)n_layer * n_head;
    int Lmax = 0;
    ac_store_entry *ents = AC_CALLOC((size_t)m, sizeof *ents);
    if (!ents) return ac_err(AC_ERR_NOMEM, "head profile: out of memory");
    int got = 0;
    for (int i = 0; i < m; i++) {
        if (ac_mapstore_get(st, (int64_t)i * n / m, &ents[got]) != AC_OK) { /* damaged: skipped */
            ac_err_clear();
            continue;
        }
        Lmax = AC_MAX(Lmax, ents[got].n_tokens);
        got++;
    }
    if (!got) {
        free(ents);
        return ac_err(AC_ERR_CACHE, "head profile: every sampled entry is damaged");
    }
    out->n_layer = n_layer, out->n_head = n_head, out->n_entries = got;
    out->lost_mean = AC_CALLOC(NH * AC_HEAD_SPANS, sizeof(double));
    out->lost_max = AC_CALLOC(NH * AC_HEAD_SPANS, sizeof(double));
    out->tmpl_tv = AC_CALLOC(NH, sizeof(double));
    double *tw = AC_CALLOC(NH * TMPL_BINS, sizeof(double)), *tn = AC_CALLOC(NH * TMPL_BINS, sizeof(double));
    double *tvn = AC_CALLOC(NH, sizeof(double));
    float *row = AC_MALLOC(((size_t)Lmax + 1) * sizeof(float));
    double *cs = AC_MALLOC(((size_t)Lmax + 1) * sizeof(double)), *lost_e = AC_MALLOC(AC_HEAD_SPANS * sizeof(double));
    float *trow = AC_MALLOC(((size_t)Lmax + 1) * sizeof(float));
    int rc = AC_OK;
    if (!out->lost_mean || !out->lost_max || !out->tmpl_tv || !tw || !tn || !tvn || !row || !cs || !lost_e || !trow) {
        rc = ac_err(AC_ERR_NOMEM, "head profile: out of memory");
        goto done;
    }
    /* pass 1: mass outside each candidate span; template weights */
    for (int i = 0; i < got; i++) {
        const ac_store_entry *e = &ents[i];
        const int L = e->n_tokens, stride = AC_MAX(1, L / ROWS_PER_MAP);
        for (size_t lh = 0; lh < NH; lh++) {
            const void *map = ac_store_entry_map(e, n_head, (int)(lh / n_head), (int)(lh % n_head));
            int nrows = 0;
            for (int k = 0; k < AC_HEAD_SPANS; k++) lost_e[k] = 0;
            for (int t = 0; t < L; t += stride, nrows++) {
                ac_codec_decode_row(&e->codec, map, L, t, row);
                const int nv = causal ? t + 1 : L;
                cs[0] = 0;
                for (int s = 0; s < nv; s++) cs[s + 1] = cs[s] + row[s];
                const double tot = cs[nv] > 0 ? cs[nv] : 1;
                for (int k = 0; k < AC_HEAD_SPANS; k++) {
                    int r[6];
                    ac_attn_span_ranges(t, L, causal, ac_head_span_candidates[k], n_sink, n_end, r);
                    double kept = 0;
                    for (int p = 0; p < 6; p += 2) kept += cs[AC_MIN(r[p + 1], nv)] - cs[AC_MIN(r[p], nv)];
                    lost_e[k] += fmax(0.0, 1.0 - kept / tot);
                }
                double *w = tw + lh * TMPL_BINS, *c = tn + lh * TMPL_BINS;
                for (int s = 0; s < nv; s++) {
                    const int b = tmpl_bin(t, s, L, causal, n_sink, n_end);
                    w[b] += row[s] / tot;
                    c[b] += 1;
                }
            }
            for (int k = 0; k < AC_HEAD_SPANS; k++) {
                const double v = lost_e[k] / nrows;
                out->lost_mean[lh * AC_HEAD_SPANS + k] += v / got;
                if (v > out->lost_max[lh * AC_HEAD_SPANS + k]) out->lost_max[lh * AC_HEAD_SPANS + k] = v;
            }
        }
    }
    for (size_t b = 0; b < NH * TMPL_BINS; b++) tw[b] = tn[b] > 0 ? tw[b] / tn[b] : 0; /* mean weight per key */
    /* pass 2: distance of the rows from the position-only template */
    for (int i = 0; i < got; i++) {
        const ac_store_entry *e = &ents[i];
        const int L = e->n_tokens, stride = AC_MAX(1, L / ROWS_PER_MAP);
        for (size_t lh = 0; lh < NH; lh++) {
            const void *map = ac_store_entry_map(e, n_head, (int)(lh / n_head), (int)(lh % n_head));
            const double *w = tw + lh * TMPL_BINS;
            for (int t = 0; t < L; t += stride) {
                ac_codec_decode_row(&e->codec, map, L, t, row);
                const int nv = causal ? t + 1 : L;
                double ts = 0, rs = 0, tv = 0;
                for (int s = 0; s < nv; s++) {
                    trow[s] = (float)w[tmpl_bin(t, s, L, causal, n_sink, n_end)];
                    ts += trow[s], rs += row[s];
                }
                if (ts <= 0) ts = 1;
                if (rs <= 0) rs = 1;
                for (int s = 0; s < nv; s++) tv += fabs(row[s] / rs - trow[s] / ts);
                out->tmpl_tv[lh] += 0.5 * tv;
                tvn[lh] += 1;
            }
        }
    }
    for (size_t lh = 0; lh < NH; lh++) out->tmpl_tv[lh] /= tvn[lh] > 0 ? tvn[lh] : 1;
done:
    free(ents);
    free(tw), free(tn), free(tvn), free(row), free(cs), free(lost_e), free(trow);
    if (rc) ac_heads_profile_free(out);
    return rc;
}

int ac_heads_choose(const ac_head_profile *pr, float eps, int max_span, int n_sink, int n_end, ac_head_policy *out) {
    memset(out, 0, sizeof *out);
    if (!(eps >= 0 && eps <= 1)) return ac_err(AC_ERR_ARG, "head policy: eps must be in [0, 1] (got %g)", eps);
    const size_t NH = (size_t)pr->n_layer * pr->n_head;
    out->span = AC_CALLOC(NH ? NH : 1, sizeof(int));
    if (!out->span) return ac_err(AC_ERR_NOMEM, "head policy: out of memory");
    out->n_layer = pr->n_layer, out->n_head = pr->n_head, out->n_sink = n_sink, out->n_end = n_end;
    for (size_t lh = 0; lh < NH; lh++)
        for (int k = 0; k < AC_HEAD_SPANS; k++) {
            const int w = ac_head_span_candidates[k];
            if (max_span > 0 && w > max_span) break;
            if (pr->lost_max[lh * AC_HEAD_SPANS + k] <= eps) {
                out->span[lh] = w;
                out->n_restricted++;
                break;
            }
        }
    return AC_OK;
}

/* ---- heads.txt ------------------------------------------------------------------------------------- */

/* Format (text):
 *   heads 1
 *   layers N heads H sink S end E
 *   <layer>: w w w ... (H spans; 0 = exact)        one line per layer */
int ac_heads_load(const char *dir, const char *spec, int n_layer, int n_head, ac_head_policy *out) {
    memset(out, 0, sizeof *out);
    out->n_layer = n_layer, out->n_head = n_head;
    if (!spec || !strcmp(spec, "none")) return AC_OK;
    if (strcmp(spec, "policy") != 0) return ac_err(AC_ERR_ARG, "bad heads spec '%s' (none|policy)", spec);
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/heads.txt", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    FILE *f = fopen(path, "r");
    if (!f) return ac_err(AC_ERR_CACHE, "no head policy in '%s' (run `attncache tune --head-eps EPS`)", dir);
    int ver = 0, nl = 0, nh = 0, ns = 0, ne = 0, rc = AC_OK;
    if (fscanf(f, " heads %d layers %d heads %d sink %d end %d", &ver, &nl, &nh, &ns, &ne) != 5 || ver != 1) {
        rc = ac_err(AC_ERR_CACHE, "'%s': not a head policy (version 1 header expected)", path);
        goto out;
    }
    if (nl != n_layer || nh != n_head) {
        rc = ac_err(AC_ERR_CACHE, "'%s' is for %d layers x %d heads, the model has %d x %d", path, nl, nh, n_layer, n_head);
        goto out;
    }
    if (ns < 0 || ns > 64 || ne < 0 || ne > 64) {
        rc = ac_err(AC_ERR_CACHE, "'%s': sinks out of range (%d, %d; 0-64)", path, ns, ne);
        goto out;
    }
    out->span = AC_CALLOC((size_t)nl * nh, sizeof(int));
    if (!out->span) {
        rc = ac_err(AC_ERR_NOMEM, "head policy: out of memory");
        goto out;
    }
    out->n_sink = ns, out->n_end = ne;
    for (int l = 0; l < nl && !rc; l++) {
        int got = -1;
        if (fscanf(f, " %d :", &got) != 1 || got != l) rc = ac_err(AC_ERR_CACHE, "'%s': layer %d's line missing", path, l);
        for (int h = 0; h < nh && !rc; h++) {
            int w;
            if (fscanf(f, "%d", &w) != 1 || w < 0 || w > 512)
                rc = ac_err(AC_ERR_CACHE, "'%s': layer %d head %d: span missing or out of range (0-512)", path, l, h);
            else {
                out->span[(size_t)l * nh + h] = w;
                out->n_restricted += w > 0;
            }
        }
    }
out:
    fclose(f);
    if (rc) ac_heads_free(out);
    return rc;
}

int ac_heads_save(const char *dir, const ac_head_policy *hp) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/heads.txt", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) return rc;
    fprintf(af.f, "heads 1\nlayers %d heads %d sink %d end %d\n", hp->n_layer, hp->n_head, hp->n_sink, hp->n_end);
    for (int l = 0; l < hp->n_layer; l++) {
        fprintf(af.f, "%d:", l);
        for (int h = 0; h < hp->n_head; h++) fprintf(af.f, " %d", hp->span ? hp->span[(size_t)l * hp->n_head + h] : 0);
        fputc('\n', af.f);
    }
    return ac_atomic_commit(&af);
}

void ac_heads_print(FILE *f, const ac_head_profile *pr, const ac_head_policy *hp) {
    fprintf(f, "per-head profile over %d entries (sinks: %d first, %d last): span chosen (0 = exact), worst-entry "
            "mass lost at that span / at span 8, template TV distance\n", pr->n_entries, hp->n_sink, hp->n_end);
    int k8 = 0;
    while (k8 < AC_HEAD_SPANS - 1 && ac_head_span_candidates[k8] < 8) k8++;
    int n_tmpl = 0;
    for (int l = 0; l < pr->n_layer; l++) {
        fprintf(f, "  layer %d:", l);
        for (int h = 0; h < pr->n_head; h++) {
            const size_t lh = (size_t)l * pr->n_head + h;
            const int w = hp->span[lh];
            int k = 0;
            while (w && ac_head_span_candidates[k] != w) k++;
            fprintf(f, " [%d %.3f/%.3f t%.2f]", w, w ? pr->lost_max[lh * AC_HEAD_SPANS + k] : 0.0,
                    pr->lost_max[lh * AC_HEAD_SPANS + k8], pr->tmpl_tv[lh]);
        }
        fputc('\n', f);
    }
    for (size_t lh = 0; lh < (size_t)pr->n_layer * pr->n_head; lh++) n_tmpl += pr->tmpl_tv[lh] <= 0.1;
    fprintf(f, "restricted heads: %d of %d; heads whose rows are within TV 0.1 of a position-only template: %d\n",
            hp->n_restricted, pr->n_layer * pr->n_head, n_tmpl);
}
