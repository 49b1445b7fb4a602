/* attncache eval — accuracy on real data sets (../shared/data by default).
 *
 *   sst2            SST-2 dev accuracy: encoder with a classifier head (cls
 *                   outputs), or a decoder by label scoring (k-shot, --shots)
 *   stsb            STS-B dev Spearman of cosine(pooled embeddings) vs gold
 *   agnews-fewshot  AG News k-shot topic classification by label scoring
 *   trec            TREC question type by label scoring (k-shot)
 *
 * Held-out splits: SST-2 and STS-B use their dev files. AG News and TREC ship
 * only a train file here: data row i (0-based, header excluded) is held out
 * for evaluation when i % 8 == 0 (AC_EVAL_HOLDOUT), the rest is the pool that
 * few-shot examples are drawn from; model training must skip held-out rows
 * too (tools/py/ follows the same rule). Few-shot examples are drawn per query
 * with a fixed seed, balanced over classes, never the query itself. */
#define _GNU_SOURCE
#include "attncache.h"
#include "cli.h"
#include "eval.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- data ----------------------------------------------------------------------------- */

static void ds_free(eval_ds *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->ex[i].a);
        free(d->ex[i].b);
    }
    free(d->ex);
    memset(d, 0, sizeof *d);
}

static int ds_push(eval_ds *d, const char *a, size_t la, const char *b, size_t lb, int label, double score) {
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 256;
        eval_ex *ne = realloc(d->ex, (size_t)nc * sizeof *ne);
        if (!ne) return 0;
        d->ex = ne;
        d->cap = nc;
    }
    eval_ex *e = &d->ex[d->n];
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
int eval_load_sst2(const char *dir, const char *split, eval_ds *d) {
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
int eval_load_stsb(const char *dir, eval_ds *d) {
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
int eval_load_agnews(const char *dir, eval_ds *train, eval_ds *held) {
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
        eval_ds *d = (row % AC_EVAL_HOLDOUT == 0) ? held : train;
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

/* TREC: "<label 0..5> <question>" */
int eval_load_trec(const char *dir, eval_ds *train, eval_ds *held) {
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
        eval_ds *d = (row % AC_EVAL_HOLDOUT == 0) ? held : train;
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

double eval_pearson(const double *x, const double *y, int n) {
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

double eval_spearman(const double *x, const double *y, int n) {
    double *rx = malloc((size_t)n * sizeof *rx), *ry = malloc((size_t)n * sizeof *ry);
    ranks(x, n, rx);
    ranks(y, n, ry);
    double r = eval_pearson(rx, ry, n);
    free(rx);
    free(ry);
    return r;
}

/* ---- prompts ---------------------------------------------------------------------------- */

typedef struct task_spec {
    const char *name;
    const char *instruction;  /* first line of the prompt */
    const char *field;        /* "Review", "Article", "Question" */
    const char *answer;       /* "Sentiment", "Topic", "Type" */
    int n_labels;
    const char *labels[6];    /* label words (scored with a leading space) */
    int default_shots;
} task_spec;

static const task_spec SPEC_SST2 = {"sst2", "Is the sentiment of the review positive or negative?", "Review",
                                    "Sentiment", 2, {"negative", "positive"}, 0};
static const task_spec SPEC_AGNEWS = {"agnews-fewshot",
                                      "Classify the topic of the news article: world, sports, business or science.",
                                      "Article", "Topic", 4, {"world", "sports", "business", "science"}, 8};
static const task_spec SPEC_TREC = {
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
#define SHARED_SEED 0x5eedULL
static uint64_t demo_seed(int shared, uint64_t per_query) { return shared ? SHARED_SEED : per_query; }

/* Prompt for query q: instruction, k demonstrations drawn (seeded by q) from
 * `pool` balanced over classes, then the query with an open answer slot. */
static char *build_prompt(const task_spec *t, const eval_ds *pool, const char *query, int k, uint64_t seed) {
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
    sb_add(&b, "%s: %s\n%s:", t->field, query, t->answer);
    return b.s;
}

/* ---- one example ----------------------------------------------------------------------- */

typedef struct ex_out {
    double sec;       /* wall time of the example's forward work */
    double attn;      /* s in the attention stages (fused attn + QK^T + softmax + A.V) */
    double lookup;    /* s in cache lookup (features, key, search, fetch) */
    uint64_t bytes;   /* cache map bytes read */
    int hit;          /* cache served at least one layer */
    long long rows_served, rows_total; /* query rows served from maps / of the served sites */
    int pred;         /* predicted class */
    double score;     /* STS-B cosine */
    int tokens;
} ex_out;

typedef struct eval_job {
    const char *task;
    const task_spec *spec; /* label scoring tasks */
    const eval_ds *pool, *q;
    int shots;
    int shared_demos; /* 1: every prompt carries the same demonstrations */
} eval_job;

/* Runs example i on ctx (cache attached or not), filling *o. */
static int run_example(ac_ctx *ctx, ac_cache *cache, const eval_job *j, int i, ex_out *o) {
    const ac_model *m = ac_ctx_model(ctx);
    double p0[AC_STAGE_COUNT], p1[AC_STAGE_COUNT];
    ac_cache_stats s0 = {0}, s1 = {0};
    ac_ctx_get_profile(ctx, p0);
    if (cache) ac_cache_get_stats(cache, &s0);
    const eval_ex *ex = &j->q->ex[i];
    int rc = AC_OK;
    double t0 = ac_cli_now();
    if (j->spec) { /* label scoring */
        const task_spec *t = j->spec;
        const char *labs[6];
        char lbuf[6][64];
        double lp[6];
        for (int k = 0; k < t->n_labels; k++) {
            snprintf(lbuf[k], sizeof lbuf[k], " %s", t->labels[k]);
            labs[k] = lbuf[k];
        }
        char *prompt = build_prompt(t, j->pool, ex->a, j->shots, demo_seed(j->shared_demos, (uint64_t)i + 1));
        if (!prompt) return cli_fail("out of memory");
        ac_tokenize(m, prompt, strlen(prompt), 1, NULL, 0, &o->tokens);
        rc = ac_score_labels(ctx, prompt, labs, t->n_labels, lp);
        free(prompt);
        int best = 0;
        for (int k = 1; k < t->n_labels; k++)
            if (lp[k] > lp[best]) best = k;
        o->pred = best;
    } else if (!strcmp(j->task, "sst2")) { /* encoder with a classifier head */
        int32_t ids[4096];
        float cls[64];
        rc = ac_tokenize(m, ex->a, strlen(ex->a), 1, ids, 4096, &o->tokens);
        if (rc == AC_OK) {
            ac_seq s = {ids, o->tokens};
            ac_outputs out = {0};
            out.cls = cls;
            rc = ac_forward(ctx, &s, 1, &out);
            o->pred = cls[1] > cls[0];
        }
    } else { /* stsb */
        ac_model_info info;
        ac_model_get_info(m, &info);
        float *e = malloc(2 * (size_t)info.n_embd * sizeof *e);
        int nt[2] = {0, 0};
        const char *pair[2] = {ex->a, ex->b};
        rc = e ? ac_embed_texts(ctx, pair, 2, AC_POOL_DEFAULT, 1, e, nt) : AC_ERR_NOMEM;
        double s = 0;
        for (int k = 0; rc == AC_OK && k < info.n_embd; k++) s += (double)e[k] * e[info.n_embd + k];
        o->score = s;
        o->tokens = nt[0] + nt[1];
        free(e);
    }
    o->sec = ac_cli_now() - t0;
    if (rc != AC_OK) return cli_fail("%s example %d: %s", j->task, i, ac_last_error());
    ac_ctx_get_profile(ctx, p1);
    o->attn = (p1[AC_STAGE_ATTN] - p0[AC_STAGE_ATTN]) + (p1[AC_STAGE_QK] - p0[AC_STAGE_QK]) +
              (p1[AC_STAGE_SOFTMAX] - p0[AC_STAGE_SOFTMAX]) + (p1[AC_STAGE_AV] - p0[AC_STAGE_AV]);
    if (cache) {
        ac_cache_get_stats(cache, &s1);
        o->hit = s1.layers_served > s0.layers_served;
        o->lookup = (s1.t_features - s0.t_features) + (s1.t_key - s0.t_key) + (s1.t_search - s0.t_search) +
                    (s1.t_fetch - s0.t_fetch);
        o->bytes = s1.bytes_read - s0.bytes_read;
        o->rows_served = s1.rows_served - s0.rows_served;
        o->rows_total = s1.rows_total - s0.rows_total;
    }
    return AC_OK;
}

/* Example i exactly (o0) and then with the cache (o1), on one context: the
 * cache is attached only for the second run. One context, so one thread
 * pool: a second context's idle workers would poll the cores while the
 * other runs and slow both (measured on 13-token MiniLM queries). */
static int run_pair(ac_ctx *ctx, ac_cache *cache, const eval_job *j, int i, ex_out *o0, ex_out *o1) {
    ac_ctx_attach_cache(ctx, NULL);
    int rc = run_example(ctx, NULL, j, i, o0);
    if (rc || !cache) return rc;
    ac_ctx_attach_cache(ctx, cache);
    rc = run_example(ctx, cache, j, i, o1);
    ac_ctx_attach_cache(ctx, NULL);
    return rc;
}

static double metric_of(const eval_job *j, const ex_out *o, int n) {
    if (!j->spec && strcmp(j->task, "sst2") != 0) { /* stsb: Spearman x 100 */
        double *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
        for (int i = 0; i < n; i++) p[i] = o[i].score, g[i] = j->q->ex[i].score;
        double r = 100.0 * eval_spearman(p, g, n);
        free(p);
        free(g);
        return r;
    }
    int c = 0;
    for (int i = 0; i < n; i++) c += o[i].pred == j->q->ex[i].label;
    return 100.0 * c / n;
}

/* sums over a side-by-side run (o0 exact, o1 cached) */
typedef struct stream_agg {
    double sec0, sec1, hsec0, hsec1, att0, att1, hatt0, hatt1, look;
    long long tokens, bytes, rows_served, rows_total;
    int hits;
} stream_agg;

static stream_agg aggregate(const ex_out *o0, const ex_out *o1, int n) {
    stream_agg a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < n; i++) {
        a.sec0 += o0[i].sec, a.sec1 += o1[i].sec, a.att0 += o0[i].attn, a.att1 += o1[i].attn + o1[i].lookup;
        a.look += o1[i].lookup, a.bytes += (long long)o1[i].bytes, a.tokens += o0[i].tokens;
        a.rows_served += o1[i].rows_served, a.rows_total += o1[i].rows_total;
        if (o1[i].hit) {
            a.hits++;
            a.hsec0 += o0[i].sec, a.hsec1 += o1[i].sec, a.hatt0 += o0[i].attn, a.hatt1 += o1[i].attn;
        }
    }
    return a;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static void print_speed(FILE *f, const char *name, double a, double b) {
    fprintf(f, "  %-34s %9.4f s %9.4f s   %6.3fx\n", name, a, b, b > 0 ? a / b : 0);
}

int cmd_eval(int argc, char **argv) {
    cli_common c = {0};
    const char *task = NULL, *dir = NULL, *json = NULL, *thresholds = NULL, *plot = NULL;
    int limit = 0, shots = -1, shared = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--task") && i + 1 < argc) task = argv[++i];
        else if (!strcmp(argv[i], "--thresholds") && i + 1 < argc) {
            thresholds = argv[++i];
            char *list = strdup(thresholds); /* checked here, before any work */
            int bad = !list, n_thr = 0;
            for (char *tok = list ? strtok(list, ",") : NULL; tok && !bad; tok = strtok(NULL, ",")) {
                float t;
                bad = cli_opt_float("threshold in --thresholds", tok, -FLT_MAX, FLT_MAX, &t) || ++n_thr > 32;
                if (n_thr > 32) cli_fail("--thresholds: at most 32 values");
            }
            free(list);
            if (bad || !n_thr) return bad ? 1 : cli_fail("bad --thresholds '%s': no value", thresholds);
        }
        else if (!strcmp(argv[i], "--plot") && i + 1 < argc) plot = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (cli_opt_int("--limit", argv[++i], 1, 1 << 30, &limit)) return 1;
        } else if (!strcmp(argv[i], "--shots") && i + 1 < argc) {
            if (cli_opt_int("--shots", argv[++i], 0, 64, &shots)) return 1;
        } else if (!strcmp(argv[i], "--demos") && i + 1 < argc) {
            if ((shared = eval_parse_demos(argv[++i])) < 0) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache eval --task sst2|stsb|agnews-fewshot|trec -m MODEL [--data DIR]\n"
                   "                      [--limit N] [--shots K] [--json FILE] [--cache DIR ...]\n"
                   "  --data DIR           data sets (default ../shared/data)\n"
                   "  --limit N            first N held-out examples only\n"
                   "  --shots K            demonstrations per prompt for label scoring\n"
                   "                       (defaults: sst2 0, agnews-fewshot 8, trec 6)\n"
                   "  --demos D            per-query (default): demonstrations drawn per prompt; shared:\n"
                   "                       one demonstration set for every prompt (long shared prefix)\n"
                   "With --cache, every example runs twice side by side, exact (fused attention) and with\n"
                   "the cache (lookup included in its time), and the report gives both metrics, the hit\n"
                   "rate, bytes read per query and end-to-end / attention speedups over the whole stream\n"
                   "and over hits only. --thresholds a,b,c repeats that run at each threshold (one row each;\n"
                   "JSON \"sweep\"); --plot FILE.png draws speedup and the metric against the threshold.\n"
                   "Held-out rows: SST-2/STS-B dev files; AG News and TREC rows with index %% %d == 0.\n%s%s",
                   AC_EVAL_HOLDOUT, cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("eval: unknown option '%s' (see --help)", argv[i]);
    }
    if (!task) return cli_fail("eval: --task is required (sst2|stsb|agnews-fewshot|trec)");
    if (!dir) dir = "../shared/data";
    c.profile = 1;
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info info;
    ac_model_get_info(m, &info);
    eval_ds pool = {0}, q = {0};
    ex_out *o0 = NULL, *o1 = NULL;
    int rc = 0;
    eval_job job = {task, NULL, &pool, &q, 0, shared};
    if (!strcmp(task, "sst2")) {
        rc = eval_load_sst2(dir, "dev", &q);
        if (!rc && !info.n_cls_out) {
            rc = eval_load_sst2(dir, "train", &pool);
            job.spec = &SPEC_SST2;
        }
    } else if (!strcmp(task, "stsb")) rc = eval_load_stsb(dir, &q);
    else if (!strcmp(task, "agnews-fewshot")) {
        rc = eval_load_agnews(dir, &pool, &q);
        job.spec = &SPEC_AGNEWS;
    } else if (!strcmp(task, "trec")) {
        rc = eval_load_trec(dir, &pool, &q);
        job.spec = &SPEC_TREC;
    } else rc = cli_fail("eval: unknown task '%s' (sst2|stsb|agnews-fewshot|trec)", task);
    if (rc) goto out;
    if (job.spec && (!info.causal || !info.has_lm_head)) {
        rc = cli_fail("eval: task %s needs a decoder with an LM head (or, for sst2, a classifier head)", task);
        goto out;
    }
    if (job.spec) job.shots = shots >= 0 ? shots : job.spec->default_shots;
    const int n = limit && limit < q.n ? limit : q.n;
    if (n == 0) {
        rc = cli_fail("eval: no examples");
        goto out;
    }
    if (c.cache && (rc = cli_open_cache(&c, m, 0, 0, &cache))) goto out;
    o0 = calloc((size_t)n, sizeof *o0);
    o1 = calloc((size_t)n, sizeof *o1);
    if (!o0 || !o1) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (int i = 0; i < n && !rc; i++) rc = run_pair(ctx, cache, &job, i, &o0[i], &o1[i]); /* side by side */
    if (rc) goto out;
    const stream_agg A = aggregate(o0, o1, n);
    const double sec0 = A.sec0, sec1 = A.sec1, hsec0 = A.hsec0, hsec1 = A.hsec1, att0 = A.att0, att1 = A.att1,
                 hatt0 = A.hatt0, hatt1 = A.hatt1, look = A.look;
    const long long tokens = A.tokens, bytes = A.bytes;
    const int hits = A.hits;
    const double met0 = metric_of(&job, o0, n), met1 = cache ? metric_of(&job, o1, n) : 0;
    const char *mname = (!job.spec && strcmp(task, "sst2") != 0) ? "spearman" : "accuracy";
    const char *base = strrchr(c.model, '/');
    base = base ? base + 1 : c.model;
    printf("%-16s %-28s %-9s %8s %6s %9s %10s\n", "task", "model", "metric", "value", "n", "seconds", "tokens/s");
    printf("%-16s %-28.28s %-9s %8.2f %6d %9.2f %10.1f\n", task, base, mname, met0, n, sec0, sec0 > 0 ? tokens / sec0 : 0);
    if (job.spec)
        printf("(%d-shot, %s demonstrations, mean prompt %.0f tokens)\n", job.shots, shared ? "shared" : "per-query",
               (double)tokens / n);
    if (cache) {
        printf("%-16s %-28.28s %-9s %8.2f %6d %9.2f %10.1f   (with cache)\n", task, base, mname, met1, n, sec1,
               sec1 > 0 ? tokens / sec1 : 0);
        printf("cache: hit rate %.1f%% (%d/%d), %.1f KiB of maps read per query, lookup %.2f%% of cached time, "
               "%.1f%% of the served layers' rows from maps\n",
               100.0 * hits / n, hits, n, bytes / 1024.0 / n, sec1 > 0 ? 100.0 * look / sec1 : 0,
               A.rows_total ? 100.0 * (double)A.rows_served / (double)A.rows_total : 0);
        ac_cache_stats cs;
        ac_cache_get_stats(cache, &cs);
        if (cs.queries)
            printf("lookup per query: features %.1f us, key %.1f us, search %.1f us, fetch %.1f us "
                   "(search: %lld of %lld not proven by the f16 pass, %lld vectors recomputed); "
                   "%lld failed lookups, %lld damaged records skipped%s%s%s\n",
                   1e6 * cs.t_features / cs.queries, 1e6 * cs.t_key / cs.queries, 1e6 * cs.t_search / cs.queries,
                   1e6 * cs.t_fetch / cs.queries, (long long)cs.search_unproven, (long long)cs.queries,
                   (long long)cs.search_recomputed, (long long)cs.lookups_failed, (long long)cs.records_damaged,
                   cs.first_failure[0] ? " (first: " : "", cs.first_failure, cs.first_failure[0] ? ")" : "");
        if (cs.damaged_unindexed)
            printf("lookup problems: %lld damaged record(s) left out of the index (computed exactly; "
                   "`attncache db verify`, `attncache db repair`)\n", (long long)cs.damaged_unindexed);
        printf("  %-34s %11s %11s   %7s\n", "speed (exact vs cache)", "exact", "cache", "speedup");
        print_speed(stdout, "end-to-end, whole stream", sec0, sec1);
        print_speed(stdout, "end-to-end, hits only", hsec0, hsec1);
        print_speed(stdout, "attention (+lookup), whole stream", att0, att1);
        print_speed(stdout, "attention op, hits only", hatt0, hatt1);
        printf("  accuracy change: %+.2f points\n", met1 - met0);
    }
    /* --thresholds: the same side-by-side run at each threshold */
    int n_sweep = 0;
    double sweep[32][9];
    if (cache && thresholds) {
        printf("threshold sweep (exact and cached side by side at each threshold):\n");
        printf("  %10s %8s %9s %8s %9s %9s %10s %9s %10s\n", "threshold", "hits", mname, "change", "e2e",
               "e2e.hits", "attn.hits", "lookup", "KiB/query");
        char *list = strdup(thresholds);
        for (char *tok = strtok(list, ","); tok && !rc && n_sweep < 32; tok = strtok(NULL, ",")) {
            float t;
            if (cli_opt_float("threshold in --thresholds", tok, -FLT_MAX, FLT_MAX, &t)) {
                rc = 1;
                break;
            }
            ac_cache_set_threshold(cache, t);
            for (int i = 0; i < n && !rc; i++) rc = run_pair(ctx, cache, &job, i, &o0[i], &o1[i]);
            if (rc) break;
            const stream_agg B = aggregate(o0, o1, n);
            const double m1 = metric_of(&job, o1, n), m0 = metric_of(&job, o0, n);
            double *r = sweep[n_sweep++];
            r[0] = t, r[1] = (double)B.hits / n, r[2] = m1, r[3] = m1 - m0, r[4] = ratio(B.sec0, B.sec1);
            r[5] = ratio(B.hsec0, B.hsec1), r[6] = ratio(B.hatt0, B.hatt1), r[7] = ratio(B.look, B.sec1);
            r[8] = (double)B.bytes / n;
            printf("  %10g %7.1f%% %9.2f %+8.2f %8.3fx %8.3fx %9.3fx %8.2f%% %10.1f\n", r[0], 100 * r[1], r[2], r[3],
                   r[4], r[5], r[6], 100 * r[7], r[8] / 1024.0);
        }
        free(list);
        if (rc) goto out;
    }
    if (plot) {
        if (!n_sweep) {
            rc = cli_fail("--plot needs --cache and --thresholds a,b,...");
            goto out;
        }
        double t[32], sp[32], mt[32], hr[32];
        for (int k = 0; k < n_sweep; k++) t[k] = sweep[k][0], hr[k] = sweep[k][1], mt[k] = sweep[k][2], sp[k] = sweep[k][4];
        if ((rc = cli_plot_sweep(plot, n_sweep, t, sp, mt, hr, met0, mname))) goto out;
        printf("plot written to %s\n", plot);
    }
    if (json) {
        FILE *jf = fopen(json, "w");
        if (!jf) {
            rc = cli_fail("cannot write '%s': %s", json, strerror(errno));
            goto out;
        }
        fprintf(jf, "{\"task\":\"%s\",\"model\":", task);
        cli_json_str(jf, c.model);
        fprintf(jf, ",\"metric\":\"%s\",\"value\":%.4f,\"n\":%d,\"seconds\":%.4f,\"tokens\":%lld,\"tokens_per_s\":%.2f",
                mname, met0, n, sec0, tokens, sec0 > 0 ? tokens / sec0 : 0);
        if (job.spec)
            fprintf(jf, ",\"shots\":%d,\"demos\":\"%s\",\"mean_prompt_tokens\":%.1f", job.shots,
                    shared ? "shared" : "per-query", (double)tokens / n);
        if (cache) {
            fprintf(jf, ",\"cache\":{\"dir\":");
            cli_json_str(jf, c.cache);
            fprintf(jf,
                    ",\"threshold\":%g,\"value\":%.4f,\"seconds\":%.4f,\"hits\":%d,\"hit_rate\":%.4f,"
                    "\"bytes_per_query\":%.1f,\"lookup_seconds\":%.4f,\"speedup_e2e\":%.4f,\"speedup_e2e_hits\":%.4f,"
                    "\"speedup_attn\":%.4f,\"speedup_attn_hits\":%.4f,\"rows_served_share\":%.4f}",
                    c.have_threshold ? c.threshold : ac_cache_default_params().threshold, met1, sec1, hits,
                    (double)hits / n, (double)bytes / n, look, sec1 > 0 ? sec0 / sec1 : 0,
                    hsec1 > 0 ? hsec0 / hsec1 : 0, att1 > 0 ? att0 / att1 : 0, hatt1 > 0 ? hatt0 / hatt1 : 0,
                    A.rows_total ? (double)A.rows_served / (double)A.rows_total : 0);
            if (n_sweep) {
                fputs(",\"sweep\":[", jf);
                for (int k = 0; k < n_sweep; k++)
                    fprintf(jf,
                            "%s{\"threshold\":%g,\"hit_rate\":%.4f,\"value\":%.4f,\"change\":%.4f,\"speedup_e2e\":%.4f,"
                            "\"speedup_e2e_hits\":%.4f,\"speedup_attn_hits\":%.4f,\"lookup_share\":%.4f,"
                            "\"bytes_per_query\":%.1f}",
                            k ? "," : "", sweep[k][0], sweep[k][1], sweep[k][2], sweep[k][3], sweep[k][4], sweep[k][5],
                            sweep[k][6], sweep[k][7], sweep[k][8]);
                fputc(']', jf);
            }
        }
        fputs("}\n", jf);
        if (cli_close_file(jf, json)) {
            rc = 1;
            goto out;
        }
    }
out:
    free(o0);
    free(o1);
    ds_free(&pool);
    ds_free(&q);
    if (cache) {
        cli_cache_warn(cache);
        ac_cache_close(cache);
    }
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}

double ac_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prompts of a label-scoring task built from its TRAINING pool (never the
 * held-out rows): the corpus for an attention cache of that task. Each prompt
 * is built exactly as eval builds the held-out ones, with the answer slot open.
 * *prompts: malloc'd array of malloc'd strings (caller frees). */
int eval_parse_demos(const char *v) {
    if (!strcmp(v, "shared")) return 1;
    if (!strcmp(v, "per-query")) return 0;
    cli_fail("bad --demos '%s' (per-query|shared)", v);
    return -1;
}

int eval_task_prompts(const char *task, const char *dir, int shots, int shared, int limit, char ***prompts, int *n) {
    eval_ds pool = {0}, held = {0};
    const task_spec *spec = NULL;
    int rc = 0;
    *prompts = NULL;
    *n = 0;
    if (!strcmp(task, "sst2")) {
        rc = eval_load_sst2(dir, "train", &pool);
        spec = &SPEC_SST2;
    } else if (!strcmp(task, "agnews-fewshot")) {
        rc = eval_load_agnews(dir, &pool, &held);
        spec = &SPEC_AGNEWS;
    } else if (!strcmp(task, "trec")) {
        rc = eval_load_trec(dir, &pool, &held);
        spec = &SPEC_TREC;
    } else rc = cli_fail("build: --task must be sst2, agnews-fewshot or trec");
    if (!rc) {
        const int k = shots >= 0 ? shots : spec->default_shots;
        const int m = limit > 0 && limit < pool.n ? limit : pool.n;
        char **v = calloc((size_t)(m > 0 ? m : 1), sizeof *v);
        if (!v) rc = cli_fail("out of memory");
        /* seeds offset from eval's (which use 1..n) so demonstrations differ from the eval prompts' */
        for (int i = 0; i < m && !rc; i++)
            if (!(v[i] = build_prompt(spec, &pool, pool.ex[i].a, k, demo_seed(shared, 1000003ULL + (uint64_t)i))))
                rc = cli_fail("out of memory");
        if (rc) {
            for (int i = 0; v && i < m; i++) free(v[i]);
            free(v);
        } else {
            *prompts = v;
            *n = m;
        }
    }
    ds_free(&pool);
    ds_free(&held);
    return rc;
}
