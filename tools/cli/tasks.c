/* tasks.c — the evaluation tasks shared by eval, build and the cache
 * commands: data-set readers, metrics, and the label-scoring prompts.
 *
 *   sst2            SST-2 (sentence<TAB>label; dev and train files)
 *   stsb            STS-B dev (pairs with a gold similarity 0..5)
 *   agnews-fewshot  AG News topics (CSV "class","title","description")
 *   trec            TREC question types ("<label> <question>")
 *
 * Held-out splits: SST-2 and STS-B use their dev files. AG News and TREC ship
 * only a train file here: data row i (0-based, header excluded) is held out
 * for evaluation when i % 8 == 0 (AC_TASK_HOLDOUT), the rest is the pool that
 * few-shot examples are drawn from; model training must skip held-out rows
 * too (tools/py/ follows the same rule). Few-shot examples are drawn per query
 * with a fixed seed, balanced over classes, never the query itself. */
#define _GNU_SOURCE
#include "tasks.h"
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- data ----------------------------------------------------------------------------- */

void task_ds_free(task_ds *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->ex[i].a);
        free(d->ex[i].b);
    }
    free(d->ex);
    memset(d, 0, sizeof *d);
}

static int ds_push(task_ds *d, const char *a, size_t la, const char *b, size_t lb, int label, double score) {
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 256;
        task_ex *ne = realloc(d->ex, (size_t)nc * sizeof *ne);
        if (!ne) return 0;
        d->ex = ne;
        d->cap = nc;
    }
    task_ex *e = &d->ex[d->n];
    memset(e, 0, sizeof *e);
    e->a = strndup(a, la);
    e->b = b ? strndup(b, lb) : NULL;
    e->label = label;
    e->score = score;
    if (!e->a || (b && !e->b)) return 0;
    d->n++;
    return 1;
}

/* trim trailing whitespace in place */
static void rtrim(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

static FILE *open_data(const char *dir, const char *rel, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) cli_fail("cannot open data file '%s': %s", path, strerror(errno));
    return f;
}

/* SST-2: header, then sentence<TAB>label */
int task_load_sst2(const char *dir, const char *split, task_ds *d) {
    char path[4096], *line = NULL;
    size_t cap = 0;
    char rel[64];
    snprintf(rel, sizeof rel, "sst2/%s.tsv", split);
    FILE *f = open_data(dir, rel, path, sizeof path);
    if (!f) return 1;
    int ln = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        if (ln++ == 0) continue;
        rtrim(line);
        char *tab = strrchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        rtrim(line);
        int lab = atoi(tab + 1);
        if ((lab != 0 && lab != 1) || !*line) {
            rc = cli_fail("%s:%d: bad row", path, ln);
            break;
        }
        if (!ds_push(d, line, strlen(line), NULL, 0, lab, 0)) {
            rc = cli_fail("out of memory");
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* STS-B: genre, file, year, id, score, s1, s2 [extra fields] (tab-separated) */
int task_load_stsb(const char *dir, task_ds *d) {
    char path[4096], *line = NULL;
    size_t cap = 0;
    FILE *f = open_data(dir, "stsb/sts-dev.csv", path, sizeof path);
    if (!f) return 1;
    int ln = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        ln++;
        rtrim(line);
        char *fld[7] = {0};
        char *p = line;
        int nf = 0;
        while (nf < 7) {
            fld[nf++] = p;
            char *t = strchr(p, '\t');
            if (!t) break;
            *t = 0;
            p = t + 1;
        }
        if (nf < 7) {
            rc = cli_fail("%s:%d: expected 7 tab-separated fields", path, ln);
            break;
        }
        char *end;
        double s = strtod(fld[4], &end);
        if (end == fld[4] || s < 0 || s > 5) {
            rc = cli_fail("%s:%d: bad score '%s'", path, ln, fld[4]);
            break;
        }
        if (!ds_push(d, fld[5], strlen(fld[5]), fld[6], strlen(fld[6]), 0, s)) {
            rc = cli_fail("out of memory");
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* one CSV field ("..." with "" escapes, or bare); returns pointer after it */
static const char *csv_field(const char *p, char *out, size_t cap) {
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (*p) {
            if (*p == '"') {
                if (p[1] == '"') {
                    if (n + 1 < cap) out[n++] = '"';
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            if (*p == '\\' && p[1] == 'n') { /* escaped newline -> space */
                if (n + 1 < cap) out[n++] = ' ';
                p += 2;
                continue;
            }
            if (n + 1 < cap) out[n++] = *p;
            p++;
        }
    } else {
        while (*p && *p != ',') {
            if (n + 1 < cap) out[n++] = *p;
            p++;
        }
    }
    out[n] = 0;
    if (*p == ',') p++;
    return p;
}

/* AG News: "class","title","description"; class 1..4 -> label 0..3 */
int task_load_agnews(const char *dir, task_ds *train, task_ds *held) {
    char path[4096], *line = NULL;
    size_t cap = 0;
    FILE *f = open_data(dir, "agnews/train.csv", path, sizeof path);
    if (!f) return 1;
    int row = 0, rc = 0;
    size_t fcap = 1 << 16;
    char *c = malloc(fcap), *t = malloc(fcap), *ds = malloc(fcap), *txt = malloc(2 * fcap + 4);
    if (!c || !t || !ds || !txt) rc = cli_fail("out of memory");
    while (!rc && getline(&line, &cap, f) >= 0) {
        rtrim(line);
        if (!*line) continue;
        const char *p = csv_field(line, c, fcap);
        p = csv_field(p, t, fcap);
        csv_field(p, ds, fcap);
        int lab = atoi(c) - 1;
        if (lab < 0 || lab > 3) {
            rc = cli_fail("%s: row %d: bad class '%s'", path, row + 1, c);
            break;
        }
        rtrim(t);
        rtrim(ds);
        int n = snprintf(txt, 2 * fcap + 4, "%s. %s", t, ds);
        task_ds *d = (row % AC_TASK_HOLDOUT == 0) ? held : train;
        if (!ds_push(d, txt, (size_t)n, NULL, 0, lab, 0)) rc = cli_fail("out of memory");
        row++;
    }
    free(c);
    free(t);
    free(ds);
    free(txt);
    free(line);
    fclose(f);
    return rc;
}

int task_load_imdb(const char *dir, const ac_model *m, task_ds *train, task_ds *held) {
    char path[4096], *line = NULL;
    size_t cap = 0;
    FILE *f = open_data(dir, "imdb/train.tsv", path, sizeof path);
    if (!f) return 1;
    int row = 0, rc = 0;
    ssize_t len;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        if (len && line[len - 1] == '\n') line[--len] = 0;
        if (!len) continue;
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2 || t1 != line + 1 || (line[0] != '0' && line[0] != '1') || !t2[1]) {
            rc = cli_fail("%s: row %d: expected label<TAB>id<TAB>review", path, row + 1);
            break;
        }
        task_ds *d = (row % AC_TASK_HOLDOUT == 0) ? held : train;
        row++;
        if (!d) continue;
        const char *text = t2 + 1;
        int n = 0;
        const int trc = ac_tokenize(m, text, strlen(text), 1, NULL, 0, &n); /* AC_ERR_RANGE: the count, no ids */
        if (trc != AC_OK && trc != AC_ERR_RANGE) {
            rc = cli_fail("%s: row %d: %s", path, row, ac_last_error());
            break;
        }
        if (n < AC_IMDB_MIN_TOKENS || n > AC_IMDB_MAX_TOKENS) continue;
        if (!ds_push(d, text, strlen(text), NULL, 0, line[0] - '0', 0)) rc = cli_fail("out of memory");
    }
    free(line);
    fclose(f);
    return rc;
}

/* TREC: "<label 0..5> <question>" */
int task_load_trec(const char *dir, task_ds *train, task_ds *held) {
    char path[4096], *line = NULL;
    size_t cap = 0;
    FILE *f = open_data(dir, "trec/train.txt", path, sizeof path);
    if (!f) return 1;
    int row = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        rtrim(line);
        if (!*line) continue;
        if (!isdigit((unsigned char)line[0]) || line[1] != ' ' || line[0] > '5') {
            rc = cli_fail("%s: row %d: bad label", path, row + 1);
            break;
        }
        task_ds *d = (row % AC_TASK_HOLDOUT == 0) ? held : train;
        if (!ds_push(d, line + 2, strlen(line + 2), NULL, 0, line[0] - '0', 0)) {
            rc = cli_fail("out of memory");
            break;
        }
        row++;
    }
    free(line);
    fclose(f);
    return rc;
}

/* ---- metrics ----------------------------------------------------------------------------- */

static int cmp_idx_val(const void *a, const void *b, void *v) {
    const double *x = v;
    double p = x[*(const int *)a], q = x[*(const int *)b];
    return (p > q) - (p < q);
}

/* average ranks (ties get the mean rank) */
static void ranks(const double *x, int n, double *r) {
    int *idx = malloc((size_t)n * sizeof *idx);
    for (int i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof *idx, cmp_idx_val, (void *)x);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && x[idx[j + 1]] == x[idx[i]]) j++;
        double avg = 0.5 * (i + j) + 1;
        for (int k = i; k <= j; k++) r[idx[k]] = avg;
        i = j + 1;
    }
    free(idx);
}

double task_pearson(const double *x, const double *y, int n) {
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : 0;
}

double task_spearman(const double *x, const double *y, int n) {
    double *rx = malloc((size_t)n * sizeof *rx), *ry = malloc((size_t)n * sizeof *ry);
    ranks(x, n, rx);
    ranks(y, n, ry);
    double r = task_pearson(rx, ry, n);
    free(rx);
    free(ry);
    return r;
}

/* ---- prompts ---------------------------------------------------------------------------- */

const task_spec TASK_SST2 = {"sst2", "Is the sentiment of the review positive or negative?", "Review",
                                    "Sentiment", 2, {"negative", "positive"}, 0};
const task_spec TASK_AGNEWS = {"agnews-fewshot",
                                      "Classify the topic of the news article: world, sports, business or science.",
                                      "Article", "Topic", 4, {"world", "sports", "business", "science"}, 8};
const task_spec TASK_TREC = {
    "trec", "What does the question ask for: description, entity, abbreviation, person, location or number?",
    "Question", "Type", 6, {"description", "entity", "abbreviation", "person", "location", "number"}, 6};

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static int sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_add(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return 0;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return 1;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *ns = realloc(b->s, nc);
        if (!ns) return 0;
        b->s = ns;
        b->cap = nc;
    }
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* --demos shared: the one demonstration set every prompt carries (the usual
 * few-shot protocol, e.g. MMLU's fixed dev-set shots; prompts then share a
 * long token prefix). Default (per-query): demonstrations seeded by the query. */
#define TASK_SHARED_SEED 0x5eedULL
uint64_t task_demo_seed(int shared, uint64_t per_query) { return shared ? TASK_SHARED_SEED : per_query; }

/* Prompt for query q: instruction, k demonstrations drawn (seeded by q) from
 * `pool` balanced over classes, then the query with an open answer slot. */
char *task_build_prompt(const task_spec *t, const task_ds *pool, const char *query, int k, uint64_t seed) {
    return task_build_prompt_at(t, pool, query, k, seed, NULL);
}

char *task_build_prompt_at(const task_spec *t, const task_ds *pool, const char *query, int k, uint64_t seed,
                           size_t *query_at) {
    sbuf b = {0};
    sb_add(&b, "%s\n\n", t->instruction);
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 12345;
    if (!s) s = 1;
    for (int i = 0; i < k && pool->n > 0; i++) {
        int want = i % t->n_labels, pick = -1;
        for (int tries = 0; tries < 1000 && pick < 0; tries++) {
            int c = (int)(rng_next(&s) % (uint64_t)pool->n);
            if (pool->ex[c].label == want && strcmp(pool->ex[c].a, query) != 0) pick = c;
        }
        if (pick < 0) continue;
        sb_add(&b, "%s: %s\n%s: %s\n\n", t->field, pool->ex[pick].a, t->answer, t->labels[want]);
    }
    const size_t at = b.n;
    if (!sb_add(&b, "%s: %s\n%s:", t->field, query, t->answer)) {
        free(b.s);
        return NULL;
    }
    if (query_at) *query_at = at;
    return b.s;
}

int task_parse_demos(const char *v) {
    if (!strcmp(v, "shared")) return 1;
    if (!strcmp(v, "per-query")) return 0;
    cli_fail("bad --demos '%s' (per-query|shared)", v);
    return -1;
}

/* Prompts of a label-scoring task built from its TRAINING pool (never the
 * held-out rows): the corpus for an attention cache of that task. Each prompt
 * is built exactly as eval builds the held-out ones, with the answer slot open.
 * *prompts: malloc'd array of malloc'd strings (caller frees). */
int task_prompts(const char *task, const char *dir, int shots, int shared, int limit, char ***prompts, int *n) {
    task_ds pool = {0}, held = {0};
    const task_spec *spec = NULL;
    int rc = 0;
    *prompts = NULL;
    *n = 0;
    if (!strcmp(task, "sst2")) {
        rc = task_load_sst2(dir, "train", &pool);
        spec = &TASK_SST2;
    } else if (!strcmp(task, "agnews-fewshot")) {
        rc = task_load_agnews(dir, &pool, &held);
        spec = &TASK_AGNEWS;
    } else if (!strcmp(task, "trec")) {
        rc = task_load_trec(dir, &pool, &held);
        spec = &TASK_TREC;
    } else rc = cli_fail("build: --task must be sst2, agnews-fewshot or trec");
    if (!rc) {
        const int k = shots >= 0 ? shots : spec->default_shots;
        const int m = limit > 0 && limit < pool.n ? limit : pool.n;
        char **v = calloc((size_t)(m > 0 ? m : 1), sizeof *v);
        if (!v) rc = cli_fail("out of memory");
        /* seeds offset from eval's (which use 1..n) so demonstrations differ from the eval prompts' */
        for (int i = 0; i < m && !rc; i++)
            if (!(v[i] = task_build_prompt(spec, &pool, pool.ex[i].a, k, task_demo_seed(shared, 1000003ULL + (uint64_t)i))))
                rc = cli_fail("out of memory");
        if (rc) {
            for (int i = 0; v && i < m; i++) free(v[i]);
            free(v);
        } else {
            *prompts = v;
            *n = m;
        }
    }
    task_ds_free(&pool);
    task_ds_free(&held);
    return rc;
}

