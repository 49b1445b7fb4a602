/* policy_serve.c — per-head serving policy (policy_serve.h).
 *
 * Serving a whole layer of another input's maps on a hit replaces every head's
 * rows at once, the heads whose attention follows the input's content along
 * with those that attend the same way whatever the sentence. The ranking
 * measures, per (layer, head), how far a stored input's rows are from those of
 * the neighbour its key retrieves (mean total-variation distance per row, the
 * error serving that head makes on that row); serving the K most stable pairs
 * and computing the rest keeps the damage of a hit to the heads that barely
 * change between neighbours. */
#define _GNU_SOURCE
#include "cache/policy_serve.h"
#include "cache/codec.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROWS_PER_MAP 64 /* rows compared per map (evenly spread) */

void ac_head_rank_free(ac_head_rank *r) {
    if (!r) return;
    free(r->tv);
    free(r->tv_max);
    free(r->order);
    memset(r, 0, sizeof *r);
}

void ac_head_rank_pair(const ac_store_entry *q, const ac_store_entry *e, int n_layer, int n_head, int causal,
                       double *tv_sum, double *tv_max, float *rq, float *re) {
    const int L = q->n_tokens, Le = e->n_tokens;
    const int stride = L > ROWS_PER_MAP ? (L + ROWS_PER_MAP - 1) / ROWS_PER_MAP : 1;
    const int align = !causal && ac_entry_end_aligned(e->tokens, Le, q->tokens, L);
    for (int l = 0; l < n_layer; l++)
        for (int h = 0; h < n_head; h++) {
            const size_t lh = (size_t)l * n_head + h;
            const void *mq = ac_store_entry_map(q, n_head, l, h), *me = ac_store_entry_map(e, n_head, l, h);
            double sum = 0;
            int rows = 0;
            for (int t = 0; t < L; t += stride, rows++) {
                const int te = align && t == L - 1 ? Le - 1 : t; /* as serving aligns the closing token */
                ac_codec_decode_row(&q->codec, mq, L, t, rq);
                ac_codec_decode_row(&e->codec, me, Le, te, re);
                if (align) re[L - 1] = re[Le - 1];
                const int n = causal ? t + 1 : L;
                double se = 0, d = 0;
                for (int j = 0; j < n; j++) se += re[j];
                /* a longer bidirectional entry serves its first L columns renormalised */
                const double inv = !causal && Le > L ? (se > 1e-20 ? 1.0 / se : 0.0) : 1.0;
                for (int j = 0; j < n; j++) d += fabs((double)rq[j] - inv * re[j]);
                sum += 0.5 * d;
            }
            const double m = rows ? sum / rows : 0;
            tv_sum[lh] += m;
            if (m > tv_max[lh]) tv_max[lh] = m;
        }
}

void ac_head_rank_finish(ac_head_rank *r) {
    const int n = r->n_layer * r->n_head;
    for (int i = 0; i < n; i++) r->tv[i] = r->n_pairs ? r->tv[i] / r->n_pairs : 0;
    ac_head_rank_sort(r);
}

void ac_head_rank_sort(ac_head_rank *r) {
    const int n = r->n_layer * r->n_head;
    for (int i = 0; i < n; i++) { /* insertion sort (a few thousand pairs at most): stable, ties by index */
        int j = i;
        while (j > 0 && r->tv[r->order[j - 1]] > r->tv[i]) {
            r->order[j] = r->order[j - 1];
            j--;
        }
        r->order[j] = i;
    }
}

static int rank_path(const char *dir, char *path, size_t cap) {
    if (snprintf(path, cap, "%s/head_rank.txt", dir) >= (int)cap) return ac_err(AC_ERR_ARG, "path too long");
    return AC_OK;
}

int ac_head_rank_save(const char *dir, const ac_head_rank *r) {
    char path[PATH_MAX];
    int rc = rank_path(dir, path, sizeof path);
    if (rc) return rc;
    ac_atomic_file af;
    if ((rc = ac_atomic_open(&af, path))) return rc;
    fprintf(af.f, "head_rank 1\nlayers %d heads %d pairs %d threshold %.9g\n", r->n_layer, r->n_head, r->n_pairs,
            (double)r->threshold);
    for (int i = 0; i < r->n_layer * r->n_head; i++) {
        const int lh = r->order[i];
        fprintf(af.f, "%d %d %.9g %.9g\n", lh / r->n_head, lh % r->n_head, r->tv[lh], r->tv_max[lh]);
    }
    return ac_atomic_commit(&af);
}

int ac_head_rank_load(const char *dir, int n_layer, int n_head, ac_head_rank *r) {
    memset(r, 0, sizeof *r);
    char path[PATH_MAX];
    int rc = rank_path(dir, path, sizeof path);
    if (rc) return rc;
    FILE *f = fopen(path, "r");
    if (!f) return ac_err(AC_ERR_CACHE, "no head ranking in '%s' (run `attncache tune --rank-heads`)", dir);
    int ver = 0, nl = 0, nh = 0, np = 0;
    double thr = 0;
    if (fscanf(f, "head_rank %d layers %d heads %d pairs %d threshold %lf", &ver, &nl, &nh, &np, &thr) != 5 ||
        ver != 1) {
        fclose(f);
        return ac_err(AC_ERR_CACHE, "'%s': not a head ranking (bad header)", path);
    }
    if (nl != n_layer || nh != n_head) {
        fclose(f);
        return ac_err(AC_ERR_CACHE, "'%s' ranks %d layers x %d heads; the model has %d x %d", path, nl, nh, n_layer,
                      n_head);
    }
    const int n = n_layer * n_head;
    r->n_layer = n_layer, r->n_head = n_head, r->n_pairs = np, r->threshold = (float)thr;
    r->tv = AC_CALLOC((size_t)n, sizeof *r->tv);
    r->tv_max = AC_CALLOC((size_t)n, sizeof *r->tv_max);
    r->order = AC_MALLOC((size_t)n * sizeof *r->order);
    uint8_t *seen = AC_CALLOC((size_t)n, 1);
    rc = r->tv && r->tv_max && r->order && seen ? AC_OK : ac_err(AC_ERR_NOMEM, "out of memory loading '%s'", path);
    for (int i = 0; !rc && i < n; i++) {
        int l, h;
        double tv, tm;
        if (fscanf(f, "%d %d %lf %lf", &l, &h, &tv, &tm) != 4 || l < 0 || l >= n_layer || h < 0 || h >= n_head ||
            !(tv >= 0 && tv <= 1) || !(tm >= 0 && tm <= 1) || seen[l * n_head + h]) {
            rc = ac_err(AC_ERR_CACHE, "'%s': bad or repeated line %d of the ranking", path, i + 3);
            break;
        }
        seen[l * n_head + h] = 1;
        r->order[i] = l * n_head + h;
        r->tv[l * n_head + h] = tv;
        r->tv_max[l * n_head + h] = tm;
    }
    free(seen);
    fclose(f);
    if (rc) ac_head_rank_free(r);
    return rc;
}

void ac_head_rank_print(FILE *f, const ac_head_rank *r) {
    const int n = r->n_layer * r->n_head;
    int *rank = malloc((size_t)n * sizeof *rank);
    if (!rank) return;
    for (int i = 0; i < n; i++) rank[r->order[i]] = i + 1;
    fprintf(f, "per-head map distance to the retrieved neighbour over %d pairs (key threshold %g): mean TV per row "
               "(worst pair) #rank, most stable first\n",
            r->n_pairs, (double)r->threshold);
    for (int l = 0; l < r->n_layer; l++) {
        fprintf(f, "  layer %d:", l);
        for (int h = 0; h < r->n_head; h++) {
            const int lh = l * r->n_head + h;
            fprintf(f, " %.3f(%.2f)#%d", r->tv[lh], r->tv_max[lh], rank[lh]);
        }
        fputc('\n', f);
    }
    free(rank);
}

/* The n_take most stable groups of g adjacent heads (h / g equal, one layer): a group's
 * distance is the mean of its heads' (ties: the lower index first). Served whole, a group of
 * heads whose columns fill the GEMM panels lets the forward skip their Q and K projection. */
static int serve_groups(const ac_head_rank *r, int g, int n_take, uint8_t *mask) {
    const int ng = r->n_layer * r->n_head / g;
    uint8_t *taken = AC_CALLOC((size_t)ng, 1);
    if (!taken) return ac_err(AC_ERR_NOMEM, "out of memory choosing head groups");
    for (int t = 0; t < n_take; t++) {
        int best = -1;
        double bd = 0;
        for (int i = 0; i < ng; i++) {
            if (taken[i]) continue;
            double d = 0;
            for (int h = 0; h < g; h++) d += r->tv[i * g + h];
            if (best < 0 || d < bd) best = i, bd = d;
        }
        taken[best] = 1;
        memset(mask + (size_t)best * g, 1, (size_t)g);
    }
    free(taken);
    return AC_OK;
}

int ac_serve_heads_parse(const char *dir, const char *spec, int n_layer, int n_head, uint8_t *mask) {
    const int n = n_layer * n_head;
    if (!spec || !strcmp(spec, "all")) {
        memset(mask, 1, (size_t)n);
        return AC_OK;
    }
    memset(mask, 0, (size_t)n);
    if (!strcmp(spec, "none")) return AC_OK;
    if (!strncmp(spec, "rank:", 5)) {
        char *end;
        errno = 0;
        const long k = strtol(spec + 5, &end, 10);
        long g = 1; /* rank:K/G: whole groups of G adjacent heads */
        if (end != spec + 5 && *end == '/' && !errno) {
            const char *gs = end + 1;
            g = strtol(gs, &end, 10);
            if (end == gs || g < 1 || g > n_head || n_head % g || k % g)
                return ac_err(AC_ERR_ARG, "bad serve-heads '%s' (rank:K/G: G divides %d heads and K)", spec, n_head);
        }
        if (end == spec + 5 || *end || errno || k < 0 || k > n)
            return ac_err(AC_ERR_ARG, "bad serve-heads '%s' (rank:K with 0 <= K <= %d)", spec, n);
        ac_head_rank r;
        int rc = ac_head_rank_load(dir, n_layer, n_head, &r);
        if (rc) return rc;
        if (g == 1)
            for (long i = 0; i < k; i++) mask[r.order[i]] = 1;
        else rc = serve_groups(&r, (int)g, (int)(k / g), mask);
        ac_head_rank_free(&r);
        return rc;
    }
    for (const char *s = spec; *s;) { /* L.H or L.* */
        char *end;
        const long l = strtol(s, &end, 10);
        if (end == s || *end != '.') return ac_err(AC_ERR_ARG, "bad serve-heads '%s' (all|none|rank:K|L.H,L.H,...)", spec);
        if (l < 0 || l >= n_layer) return ac_err(AC_ERR_ARG, "serve-heads '%s': layer %ld outside 0-%d", spec, l, n_layer - 1);
        s = end + 1;
        if (*s == '*') {
            memset(mask + (size_t)l * n_head, 1, (size_t)n_head);
            s++;
        } else {
            const long h = strtol(s, &end, 10);
            if (end == s) return ac_err(AC_ERR_ARG, "bad serve-heads '%s' (all|none|rank:K|L.H,L.H,...)", spec);
            if (h < 0 || h >= n_head) return ac_err(AC_ERR_ARG, "serve-heads '%s': head %ld outside 0-%d", spec, h, n_head - 1);
            mask[(size_t)l * n_head + h] = 1;
            s = end;
        }
        if (*s == ',') s++;
        else if (*s) return ac_err(AC_ERR_ARG, "bad serve-heads '%s' (all|none|rank:K|L.H,L.H,...)", spec);
    }
    return AC_OK;
}
