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

/* ---- runners --------------------------------------------------------------------------- */

/* label scoring over a held-out set; returns accuracy, counts tokens */
static int run_scoring(ac_ctx *ctx, const task_spec *t, const eval_ds *pool, const eval_ds *q, int n, int shots,
                       eval_result *r) {
    const ac_model *m = ac_ctx_model(ctx);
    const char *labs[6];
    char lbuf[6][64];
    for (int i = 0; i < t->n_labels; i++) {
        snprintf(lbuf[i], sizeof lbuf[i], " %s", t->labels[i]);
        labs[i] = lbuf[i];
    }
    int correct = 0;
    double lp[6];
    long long tokens = 0, ptok_sum = 0;
    for (int i = 0; i < n; i++) {
        char *prompt = build_prompt(t, pool, q->ex[i].a, shots, (uint64_t)i + 1);
        if (!prompt) return cli_fail("out of memory");
        int ntok = 0;
        ac_tokenize(m, prompt, strlen(prompt), 1, NULL, 0, &ntok);
        int rc = ac_score_labels(ctx, prompt, labs, t->n_labels, lp);
        free(prompt);
        if (rc != AC_OK) return cli_fail("%s example %d: %s", t->name, i, ac_last_error());
        int best = 0;
        for (int k = 1; k < t->n_labels; k++)
            if (lp[k] > lp[best]) best = k;
        correct += best == q->ex[i].label;
        tokens += ntok;
        ptok_sum += ntok;
    }
    r->metric = 100.0 * correct / (n ? n : 1);
    r->metric_name = "accuracy";
    r->tokens = tokens;
    r->mean_prompt_tokens = n ? (double)ptok_sum / n : 0;
    return 0;
}

static int run_sst2_head(ac_ctx *ctx, const eval_ds *q, int n, int n_cls, eval_result *r) {
    const ac_model *m = ac_ctx_model(ctx);
    float cls[64];
    int correct = 0;
    long long tokens = 0;
    if (n_cls < 2 || n_cls > 64) return cli_fail("sst2: classifier head has %d outputs (want 2)", n_cls);
    for (int i = 0; i < n; i++) {
        int32_t ids[2048];
        int nt = 0;
        int rc = ac_tokenize(m, q->ex[i].a, strlen(q->ex[i].a), 1, ids, 2048, &nt);
        if (rc != AC_OK) return cli_fail("sst2 example %d: %s", i, ac_last_error());
        ac_seq s = {ids, nt};
        ac_outputs o = {0};
        o.cls = cls;
        if ((rc = ac_forward(ctx, &s, 1, &o)) != AC_OK) return cli_fail("sst2 example %d: %s", i, ac_last_error());
        correct += (cls[1] > cls[0]) == (q->ex[i].label == 1);
        tokens += nt;
    }
    r->metric = 100.0 * correct / (n ? n : 1);
    r->metric_name = "accuracy";
    r->tokens = tokens;
    return 0;
}

static int run_stsb(ac_ctx *ctx, const eval_ds *q, int n, eval_result *r) {
    const ac_model *m = ac_ctx_model(ctx);
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int d = info.n_embd;
    float *e = malloc(2 * (size_t)d * sizeof *e);
    double *pred = malloc((size_t)n * sizeof *pred), *gold = malloc((size_t)n * sizeof *gold);
    int nt[2], rc = 0;
    long long tokens = 0;
    if (!e || !pred || !gold) rc = cli_fail("out of memory");
    for (int i = 0; i < n && !rc; i++) {
        const char *pair[2] = {q->ex[i].a, q->ex[i].b};
        if (ac_embed_texts(ctx, pair, 2, AC_POOL_DEFAULT, 1, e, nt) != AC_OK) {
            rc = cli_fail("stsb example %d: %s", i, ac_last_error());
            break;
        }
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)e[k] * e[d + k];
        pred[i] = s;
        gold[i] = q->ex[i].score;
        tokens += nt[0] + nt[1];
    }
    if (!rc) {
        r->metric = 100.0 * eval_spearman(pred, gold, n);
        r->metric_name = "spearman";
        r->tokens = tokens;
    }
    free(e);
    free(pred);
    free(gold);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    cli_common c = {0};
    const char *task = NULL, *dir = NULL, *json = NULL;
    int limit = 0, shots = -1;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--task") && i + 1 < argc) task = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 1, 1 << 30, &limit)) return cli_fail("bad --limit '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--shots") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 0, 64, &shots)) return cli_fail("bad --shots '%s'", argv[i]);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache eval --task sst2|stsb|agnews-fewshot|trec -m MODEL [--data DIR]\n"
                   "                      [--limit N] [--shots K] [--json FILE]\n"
                   "  --data DIR           data sets (default ../shared/data)\n"
                   "  --limit N            first N held-out examples only\n"
                   "  --shots K            demonstrations per prompt for label scoring\n"
                   "                       (defaults: sst2 0, agnews-fewshot 8, trec 6)\n"
                   "Held-out rows: SST-2/STS-B dev files; AG News and TREC rows with index %% %d == 0.\n%s",
                   AC_EVAL_HOLDOUT, cli_common_help);
            return 0;
        } else return cli_fail("eval: unknown option '%s' (see --help)", argv[i]);
    }
    if (!task) return cli_fail("eval: --task is required (sst2|stsb|agnews-fewshot|trec)");
    if (!dir) dir = "../shared/data";
    ac_model *m;
    ac_ctx *ctx;
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info info;
    ac_model_get_info(m, &info);
    eval_ds pool = {0}, q = {0};
    eval_result res = {0};
    int rc = 0;
    const task_spec *spec = NULL;
    if (!strcmp(task, "sst2")) {
        rc = eval_load_sst2(dir, "dev", &q);
        if (!rc && !info.n_cls_out) {
            rc = eval_load_sst2(dir, "train", &pool);
            spec = &SPEC_SST2;
        }
    } else if (!strcmp(task, "stsb")) rc = eval_load_stsb(dir, &q);
    else if (!strcmp(task, "agnews-fewshot")) {
        rc = eval_load_agnews(dir, &pool, &q);
        spec = &SPEC_AGNEWS;
    } else if (!strcmp(task, "trec")) {
        rc = eval_load_trec(dir, &pool, &q);
        spec = &SPEC_TREC;
    } else rc = cli_fail("eval: unknown task '%s' (sst2|stsb|agnews-fewshot|trec)", task);
    if (rc) goto out;
    int n = limit && limit < q.n ? limit : q.n;
    if (n == 0) {
        rc = cli_fail("eval: no examples");
        goto out;
    }
    double t0 = ac_cli_now();
    if (spec) {
        if (!info.causal || !info.has_lm_head) {
            rc = cli_fail("eval: task %s needs a decoder with an LM head (or, for sst2, a classifier head)", task);
            goto out;
        }
        res.shots = shots >= 0 ? shots : spec->default_shots;
        rc = run_scoring(ctx, spec, &pool, &q, n, res.shots, &res);
    } else if (!strcmp(task, "sst2")) rc = run_sst2_head(ctx, &q, n, info.n_cls_out, &res);
    else rc = run_stsb(ctx, &q, n, &res);
    if (rc) goto out;
    res.seconds = ac_cli_now() - t0;
    res.n = n;
    printf("%-16s %-28s %-9s %8s %6s %9s %10s\n", "task", "model", "metric", "value", "n", "seconds", "tokens/s");
    const char *base = strrchr(c.model, '/');
    base = base ? base + 1 : c.model;
    printf("%-16s %-28.28s %-9s %8.2f %6d %9.2f %10.1f\n", task, base, res.metric_name, res.metric, n, res.seconds,
           res.seconds > 0 ? res.tokens / res.seconds : 0);
    if (spec) printf("(%d-shot, mean prompt %.0f tokens)\n", res.shots, res.mean_prompt_tokens);
    if (json) {
        FILE *jf = fopen(json, "w");
        if (!jf) {
            rc = cli_fail("cannot write '%s': %s", json, strerror(errno));
            goto out;
        }
        fprintf(jf, "{\"task\":\"%s\",\"model\":", task);
        cli_json_str(jf, c.model);
        fprintf(jf, ",\"metric\":\"%s\",\"value\":%.4f,\"n\":%d,\"seconds\":%.3f,\"tokens\":%lld,\"tokens_per_s\":%.2f",
                res.metric_name, res.metric, n, res.seconds, res.tokens, res.seconds > 0 ? res.tokens / res.seconds : 0);
        if (spec) fprintf(jf, ",\"shots\":%d,\"mean_prompt_tokens\":%.1f", res.shots, res.mean_prompt_tokens);
        fputs("}\n", jf);
        fclose(jf);
    }
out:
    ds_free(&pool);
    ds_free(&q);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}

double ac_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
