/* eval.c — `attncache eval`: accuracy (or Spearman) of a model on a task's
 * held-out rows (tasks.c: sst2, stsb, agnews-fewshot, trec), and with --cache
 * the same run side by side with the attention cache: hit rate, bytes read,
 * end-to-end and attention speedups; --thresholds repeats that per threshold
 * (a sweep), --json FILE writes the results, --plot FILE.png draws the sweep
 * (tools/py/plot_sweep.py on the JSON).
 *
 *   sst2            encoder with a classifier head (cls outputs), or a decoder
 *                   by label scoring (k-shot, --shots)
 *   stsb            Spearman of cosine(pooled embeddings) vs gold
 *   agnews-fewshot  k-shot topic classification by label scoring
 *   trec            question type by label scoring (k-shot) */
#define _GNU_SOURCE
#include "cli.h"
#include "tasks.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- one example ----------------------------------------------------------------------- */

typedef struct ex_out {
    double sec;       /* wall time of the example's forward work */
    double attn;      /* s in the attention stages (fused attn + QK^T + softmax + A.V) */
    double lookup;    /* s in cache lookup (features, key, search, fetch) */
    uint64_t bytes;   /* cache map bytes read */
    int hit;          /* cache served at least one layer */
    int skipped;      /* sequences that skipped the lookup (adaptive lookups: recent hit rate under the floor) */
    int seqs;         /* sequences that reached the cache: looked up or skipped */
    long long rows_served, rows_total; /* query rows served from maps / of the served sites */
    int pred;         /* predicted class */
    double dist;      /* key distance of the served entry (hits; --items) */
    float cls[2];     /* classifier outputs of the two classes (sst2, imdb on an encoder), for --items */
    double score;     /* STS-B cosine */
    int tokens;
    long long reused, computed; /* prefix cache: rows taken from it / computed */
    int query_row, exact_rows; /* --exact-tail query: the query's first row; rows from there (with the margin) */
    float stage[AC_STAGE_COUNT]; /* s per forward stage */
} ex_out;

typedef struct eval_job {
    const char *task;
    const task_spec *spec; /* label scoring tasks */
    const task_ds *pool, *q;
    int shots;
    int shared_demos; /* 1: every prompt carries the same demonstrations */
    int exact_query;  /* --exact-tail query[+M|-M]: the cache computes each prompt's query rows exactly */
    int exact_margin; /* M: that many rows before the query too (negative: fewer rows)                  */
} eval_job;

static int tokens_of(const ac_model *m, const char *text, int add_special, int32_t **out, int *n);

/* The row where prompt's query segment starts (prompt[0, at) is instruction and
 * demonstrations): the tokens the prompt and that head have in common, as
 * ac_score_labels tokenizes them (BOS, no EOS). *n_tokens: the prompt's count.
 * 0, or 1 after an error line. */
static int query_row(const ac_model *m, const char *prompt, size_t at, int *row, int *n_tokens) {
    int32_t *pt = NULL, *ht = NULL;
    int np = 0, nh = 0, rc;
    char *head = strndup(prompt, at);
    if (!head) return cli_fail("out of memory");
    rc = tokens_of(m, prompt, 1, &pt, &np);
    if (!rc) rc = tokens_of(m, head, 1, &ht, &nh);
    if (!rc) {
        int k = 0;
        while (k < np && k < nh && pt[k] == ht[k]) k++;
        *row = k;
        *n_tokens = np;
    }
    free(head);
    free(pt);
    free(ht);
    return rc;
}

/* Runs example i on ctx (cache attached or not), filling *o. */
static int run_example(ac_ctx *ctx, ac_cache *cache, ac_prefix_cache *pc, const eval_job *j, int i, ex_out *o) {
    const ac_model *m = ac_ctx_model(ctx);
    double p0[AC_STAGE_COUNT], p1[AC_STAGE_COUNT];
    ac_cache_stats s0 = {0}, s1 = {0};
    ac_prefix_stats q0 = {0}, q1 = {0};
    ac_ctx_get_profile(ctx, p0);
    if (cache) ac_cache_get_stats(cache, &s0);
    if (pc) ac_prefix_get_stats(pc, &q0);
    const task_ex *ex = &j->q->ex[i];
    int rc = AC_OK;
    double t0 = cli_now();
    if (j->spec) { /* label scoring */
        const task_spec *t = j->spec;
        const char *labs[6];
        char lbuf[6][64];
        double lp[6];
        for (int k = 0; k < t->n_labels; k++) {
            snprintf(lbuf[k], sizeof lbuf[k], " %s", t->labels[k]);
            labs[k] = lbuf[k];
        }
        size_t qat = 0;
        char *prompt = task_build_prompt_at(t, j->pool, ex->a, j->shots, task_demo_seed(j->shared_demos, (uint64_t)i + 1),
                                            &qat);
        if (!prompt) return cli_fail("out of memory");
        ac_tokenize(m, prompt, strlen(prompt), 1, NULL, 0, &o->tokens);
        if (j->exact_query) { /* the query's rows exact: from its first row (less the margin) to the end */
            int qrow = 0, np = 0;
            if (query_row(m, prompt, qat, &qrow, &np)) {
                free(prompt);
                return 1;
            }
            int from = qrow - j->exact_margin;
            from = from < 0 ? 0 : from > np ? np : from;
            o->query_row = qrow;
            o->exact_rows = np - from;
            if ((rc = ac_ctx_set_exact_from(ctx, 1, &from)) != AC_OK) {
                free(prompt);
                return cli_api_fail("exact rows", rc);
            }
        }
        t0 = cli_now(); /* the timed work is the library's: the prompt's text and its count are eval's bookkeeping */
        rc = ac_score_labels(ctx, prompt, labs, t->n_labels, lp);
        free(prompt);
        int best = 0;
        for (int k = 1; k < t->n_labels; k++)
            if (lp[k] > lp[best]) best = k;
        o->pred = best;
    } else if (!strcmp(j->task, "sst2") || !strcmp(j->task, "imdb")) { /* encoder with a classifier head */
        int32_t ids[4096];
        float cls[64];
        rc = ac_tokenize(m, ex->a, strlen(ex->a), 1, ids, 4096, &o->tokens);
        if (rc == AC_OK) {
            ac_seq s = {ids, o->tokens};
            ac_outputs out = {0};
            out.cls = cls;
            rc = ac_forward(ctx, &s, 1, &out);
            o->pred = cls[1] > cls[0];
            o->cls[0] = cls[0], o->cls[1] = cls[1];
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
    o->sec = cli_now() - t0;
    if (rc != AC_OK) return cli_fail("%s example %d: %s", j->task, i, ac_last_error());
    ac_ctx_get_profile(ctx, p1);
    for (int k = 0; k < AC_STAGE_COUNT; k++) o->stage[k] = (float)(p1[k] - p0[k]);
    o->attn = (p1[AC_STAGE_ATTN] - p0[AC_STAGE_ATTN]) + (p1[AC_STAGE_QK] - p0[AC_STAGE_QK]) +
              (p1[AC_STAGE_SOFTMAX] - p0[AC_STAGE_SOFTMAX]) + (p1[AC_STAGE_AV] - p0[AC_STAGE_AV]);
    if (cache) {
        ac_cache_get_stats(cache, &s1);
        o->hit = s1.layers_served > s0.layers_served;
        o->lookup = (s1.t_features - s0.t_features) + (s1.t_key - s0.t_key) + (s1.t_search - s0.t_search) +
                    (s1.t_fetch - s0.t_fetch);
        o->bytes = s1.bytes_read - s0.bytes_read;
        o->dist = s1.sum_distance_hit - s0.sum_distance_hit;
        o->rows_served = s1.rows_served - s0.rows_served;
        o->rows_total = s1.rows_total - s0.rows_total;
        o->skipped = (int)(s1.lookups_skipped - s0.lookups_skipped);
        o->seqs = o->skipped + (int)(s1.queries - s0.queries);
    }
    if (pc) {
        ac_prefix_get_stats(pc, &q1);
        o->reused = q1.tokens_reused - q0.tokens_reused;
        o->computed = q1.tokens_computed - q0.tokens_computed;
        o->hit |= o->reused > 0;
        o->lookup += (q1.t_lookup - q0.t_lookup) + (q1.t_insert - q0.t_insert);
    }
    return AC_OK;
}

/* ids of text (add_special as ac_tokenize takes it) into a malloc'd array; trailing EOS cut.
 * 0, or 1 after an error line. */
static int tokens_of(const ac_model *m, const char *text, int add_special, int32_t **out, int *n) {
    *out = NULL;
    *n = 0;
    int need = 0, rc = ac_tokenize(m, text, strlen(text), add_special, NULL, 0, &need);
    if (rc != AC_OK && rc != AC_ERR_RANGE) return cli_api_fail("tokenize", rc);
    if (!(*out = malloc((size_t)(need > 0 ? need : 1) * sizeof **out))) return cli_fail("out of memory");
    if ((rc = ac_tokenize(m, text, strlen(text), add_special, *out, need, n)) != AC_OK) {
        free(*out);
        *out = NULL;
        return cli_api_fail("tokenize", rc);
    }
    const int32_t eos = ac_token_eos(m);
    if (*n > 0 && eos >= 0 && (*out)[*n - 1] == eos) (*n)--;
    return 0;
}

static cJSON *json_ids(const int32_t *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; a && k < n; k++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[k]))) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* --dump-prompts FILE: the first n label-scoring prompts exactly as the run scores them, one
 * JSON object a line: {"index","label" (gold class),"prompt","tokens" (ids with BOS, as
 * ac_score_labels runs them),"labels" (the continuations scored),"label_tokens" (each one's ids
 * after the prompt, as ac_score_labels takes them)}, for peers fed the same token ids
 * (bench/prefix_compare.py). The model runs nothing. 0, or 1 after an error line. */
static int dump_prompts(const ac_model *m, const eval_job *j, int n, const char *path) {
    if (!j->spec) return cli_fail("--dump-prompts: task %s is not scored by prompts", j->task);
    FILE *f = fopen(path, "w");
    if (!f) return cli_fail("cannot write '%s': %s", path, strerror(errno));
    const task_spec *t = j->spec;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        char *prompt = task_build_prompt(t, j->pool, j->q->ex[i].a, j->shots, task_demo_seed(j->shared_demos, (uint64_t)i + 1));
        int32_t *pt = NULL;
        int np = 0;
        cJSON *o = cJSON_CreateObject(), *labs = NULL, *ltok = NULL;
        if (!prompt || !o) rc = cli_fail("out of memory");
        if (!rc) rc = tokens_of(m, prompt, 1, &pt, &np);
        if (!rc) {
            cJSON_AddNumberToObject(o, "index", i);
            cJSON_AddNumberToObject(o, "label", j->q->ex[i].label);
            cJSON_AddStringToObject(o, "prompt", prompt);
            cJSON_AddItemToObject(o, "tokens", json_ids(pt, np));
            labs = cJSON_AddArrayToObject(o, "labels");
            ltok = cJSON_AddArrayToObject(o, "label_tokens");
            if (!labs || !ltok) rc = cli_fail("out of memory");
        }
        for (int k = 0; !rc && k < t->n_labels; k++) { /* as ac_score_labels: prompt + " label", the ids after the prompt's */
            char lab[80], *joined = NULL;
            snprintf(lab, sizeof lab, " %s", t->labels[k]);
            int32_t *jt = NULL, *lt = NULL;
            int nj = 0, nl = 0;
            if (asprintf(&joined, "%s%s", prompt, lab) < 0) joined = NULL, rc = cli_fail("out of memory");
            if (!rc) rc = tokens_of(m, joined, 1, &jt, &nj);
            if (!rc && nj > np && !memcmp(jt, pt, (size_t)np * sizeof *pt)) {
                cJSON_AddItemToArray(ltok, json_ids(jt + np, nj - np));
            } else if (!rc && !(rc = tokens_of(m, lab, 0, &lt, &nl))) {
                cJSON_AddItemToArray(ltok, json_ids(lt, nl));
            }
            cJSON_AddItemToArray(labs, cJSON_CreateString(lab));
            free(joined);
            free(jt);
            free(lt);
        }
        if (!rc) rc = cli_json_write(f, o);
        else cJSON_Delete(o);
        free(pt);
        free(prompt);
    }
    if (cli_close_file(f, path)) rc = 1;
    if (!rc) fprintf(stderr, "attncache: %d prompts written to %s\n", n, path);
    return rc;
}

/* Example i exactly (o0) and then with the cache and/or the prefix cache
 * (o1), on one context: they are attached only for the second run. One
 * context, so one thread pool: a second context's idle workers would poll
 * the cores while the other runs and slow both (measured on 13-token MiniLM
 * queries). */
static int run_pair(ac_ctx *ctx, ac_cache *cache, ac_prefix_cache *pc, const eval_job *j, int i, ex_out *o0,
                    ex_out *o1) {
    ac_ctx_attach_cache(ctx, NULL);
    ac_ctx_attach_prefix(ctx, NULL);
    int rc = run_example(ctx, NULL, NULL, j, i, o0);
    if (rc || (!cache && !pc)) return rc;
    if (cache) ac_ctx_attach_cache(ctx, cache);
    if (pc && (rc = ac_ctx_attach_prefix(ctx, pc))) return cli_api_fail("prefix cache", rc);
    rc = run_example(ctx, cache, pc, j, i, o1);
    ac_ctx_attach_cache(ctx, NULL);
    ac_ctx_attach_prefix(ctx, NULL);
    return rc;
}

/* --items FILE: one TSV line per example, exact (o0) and cached (o1; NULL: no cache) side by
 * side, for offline analysis of which answers the cache changes (e.g. against the classifier's
 * margin). 0, or 1 after an error line. */
static int write_items(const eval_job *j, const ex_out *o0, const ex_out *o1, int n, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return cli_fail("cannot write '%s': %s", path, strerror(errno));
    fprintf(f, "index\tlabel\ttokens\texact_pred\tcache_pred\thit\texact_out0\texact_out1\tcache_out0\tcache_out1\tdistance\n");
    for (int i = 0; i < n; i++) {
        const ex_out *c = o1 ? &o1[i] : &o0[i];
        if (!strcmp(j->task, "stsb"))
            fprintf(f, "%d\t%g\t%d\t-1\t-1\t%d\t%.9g\t0\t%.9g\t0\t%.6g\n", i, j->q->ex[i].score, o0[i].tokens,
                    c->hit, o0[i].score, c->score, c->dist);
        else
            fprintf(f, "%d\t%d\t%d\t%d\t%d\t%d\t%.9g\t%.9g\t%.9g\t%.9g\t%.6g\n", i, j->q->ex[i].label,
                    o0[i].tokens, o0[i].pred, c->pred, c->hit, o0[i].cls[0], o0[i].cls[1], c->cls[0], c->cls[1], c->dist);
    }
    return cli_close_file(f, path);
}

static double metric_of(const eval_job *j, const ex_out *o, int n) {
    if (!strcmp(j->task, "stsb")) { /* Spearman x 100 */
        double *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
        for (int i = 0; i < n; i++) p[i] = o[i].score, g[i] = j->q->ex[i].score;
        double r = 100.0 * task_spearman(p, g, n);
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
    long long tokens, bytes, rows_served, rows_total, reused, computed;
    int hits;
    long long skipped, seqs;
} stream_agg;

static stream_agg aggregate(const ex_out *o0, const ex_out *o1, int n) {
    stream_agg a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < n; i++) {
        a.sec0 += o0[i].sec, a.sec1 += o1[i].sec, a.att0 += o0[i].attn, a.att1 += o1[i].attn + o1[i].lookup;
        a.look += o1[i].lookup, a.bytes += (long long)o1[i].bytes, a.tokens += o0[i].tokens;
        a.rows_served += o1[i].rows_served, a.rows_total += o1[i].rows_total, a.skipped += o1[i].skipped;
        a.seqs += o1[i].seqs;
        a.reused += o1[i].reused, a.computed += o1[i].computed;
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

/* --plot: draws the sweep JSON with tools/py/plot_sweep.py (matplotlib) in
 * the source tree's .venv (AC_VENV names another, as for
 * tools/setup_python.sh). Without that Python: a warning saying how to draw
 * it, and 0 (the sweep is in the JSON). 1 after an error line when the script
 * ran and failed. */
static int draw_plot(const char *json, const char *png) {
    const char *venv = getenv("AC_VENV");
    char py[4096], script[4096];
    snprintf(script, sizeof script, "%s/tools/py/plot_sweep.py", AC_SOURCE_DIR);
    if (venv && *venv) snprintf(py, sizeof py, "%s/bin/python", venv);
    else snprintf(py, sizeof py, "%s/.venv/bin/python", AC_SOURCE_DIR);
    if (access(py, X_OK) != 0 || access(script, R_OK) != 0) {
        fprintf(stderr,
                "attncache: warning: --plot: %s not found, so %s was not drawn; the sweep is in %s. To draw it, "
                "in the attncache source tree: bash tools/setup_python.sh, then .venv/bin/python "
                "tools/py/plot_sweep.py %s %s\n",
                access(py, X_OK) != 0 ? py : script, png, json, json, png);
        return 0;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return cli_fail("--plot: cannot start %s: %s", py, strerror(errno));
    if (pid == 0) {
        execl(py, py, script, json, png, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return cli_fail("--plot: waiting for %s: %s", script, strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return cli_fail("--plot: %s %s failed (%s %d); the sweep is in %s", py, script,
                        WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), json);
    printf("plot written to %s (sweep in %s)\n", png, json);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    cli_common c = {0};
    const char *task = NULL, *dir = NULL, *json = NULL, *thresholds = NULL, *plot = NULL, *dump = NULL,
               *items = NULL;
    int limit = 0, shots = -1, shared = 0;
    int64_t prefix_bytes = 0;
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
        else if ((r = cli_prefix_opt(argc, argv, &i, &prefix_bytes))) {
            if (r < 0) return 1;
        }
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--dump-prompts") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--items") && i + 1 < argc) items = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (cli_opt_int("--limit", argv[++i], 1, 1 << 30, &limit)) return 1;
        } else if (!strcmp(argv[i], "--shots") && i + 1 < argc) {
            if (cli_opt_int("--shots", argv[++i], 0, 64, &shots)) return 1;
        } else if (!strcmp(argv[i], "--demos") && i + 1 < argc) {
            if ((shared = task_parse_demos(argv[++i])) < 0) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache eval --task sst2|stsb|imdb|agnews-fewshot|trec -m MODEL [--data DIR]\n"
                   "                      [--limit N] [--shots K] [--json FILE] [--cache DIR ...]\n"
                   "  --data DIR           data sets (default ../shared/data)\n"
                   "  --limit N            first N held-out examples only\n"
                   "  --shots K            demonstrations per prompt for label scoring\n"
                   "                       (defaults: sst2 0, agnews-fewshot 8, trec 6)\n"
                   "  --demos D            per-query (default): demonstrations drawn per prompt; shared:\n"
                   "                       one demonstration set for every prompt (long shared prefix)\n"
                   "  --exact-tail query[+M|-M]  with --cache on a prompt task: each prompt's rows from its\n"
                   "                       query's start (after the last demonstration) to the end computed\n"
                   "                       exactly in the served layers, M rows earlier (+M) or later (-M);\n"
                   "                       the demonstrations' rows served (ac_ctx_set_exact_from)\n"
                   "  --dump-prompts FILE  write the prompts (label scoring tasks) as JSON lines — text, token\n"
                   "                       ids, gold label, the labels' token ids — and exit without running\n"
                   "                       the model (peers fed the same ids: bench/prefix_compare.py)\n"
                   "  --items FILE         write one line per example (TSV with a header): index, gold label,\n"
                   "                       exact and cached prediction, hit, and the classifier's two outputs\n"
                   "                       (sst2/imdb on an encoder) or the score (stsb) of both passes, and\n"
                   "                       the served entry's key distance (hits)\n"
                   "With --cache, every example runs twice side by side, exact (fused attention) and with\n"
                   "the cache (lookup included in its time), and the report gives both metrics, the hit\n"
                   "rate, bytes read per query and end-to-end / attention speedups over the whole stream\n"
                   "and over hits only. --thresholds a,b,c repeats that run at each threshold (one row each;\n"
                   "JSON \"sweep\"); --plot FILE.png draws speedup, hit rate and the metric against the\n"
                   "threshold with matplotlib (tools/py/plot_sweep.py in the source tree's .venv) from the\n"
                   "JSON (--json FILE, else FILE.json beside the plot).\n"
                   "With --prefix-cache MB (causal models), the second run of each example keeps the K/V rows of\n"
                   "earlier prompts in a prefix cache of MB MiB and computes only what a prompt does not share\n"
                   "with them (exact); with --cache too, both (prefix rows first, maps for later rows). The\n"
                   "report adds the tokens reused and computed and the Amdahl bound (all tokens / computed).\n"
                   "Held-out rows: SST-2/STS-B dev files; AG News, TREC and IMDB rows with index %% %d == 0\n"
                   "(imdb: reviews of %d-%d tokens, a model with a classifier head).\n%s%s",
                   AC_TASK_HOLDOUT, AC_IMDB_MIN_TOKENS, AC_IMDB_MAX_TOKENS, cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("eval: unknown option '%s' (see --help)", argv[i]);
    }
    if (!task) return cli_fail("eval: --task is required (sst2|stsb|imdb|agnews-fewshot|trec)");
    if (plot && (!c.cache || !thresholds)) return cli_fail("--plot needs --cache and --thresholds a,b,...");
    /* --plot draws from the sweep's JSON: --json FILE, or the plot's name with .json */
    char *json_path = NULL;
    if (json) json_path = strdup(json);
    else if (plot) {
        size_t lp = strlen(plot);
        const size_t ext = lp > 4 && !strcasecmp(plot + lp - 4, ".png") ? 4 : 0;
        if ((json_path = malloc(lp - ext + 6))) sprintf(json_path, "%.*s.json", (int)(lp - ext), plot);
    }
    if ((json || plot) && !json_path) return cli_fail("out of memory");
    if (!dir) dir = "../shared/data";
    c.profile = 1;
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    ac_prefix_cache *pc = NULL;
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info info;
    ac_model_get_info(m, &info);
    task_ds pool = {0}, q = {0};
    ex_out *o0 = NULL, *o1 = NULL;
    int rc = 0;
    eval_job job = {task, NULL, &pool, &q, 0, shared, 0, 0};
    if (!strcmp(task, "sst2")) {
        rc = task_load_sst2(dir, "dev", &q);
        if (!rc && !info.n_cls_out) {
            rc = task_load_sst2(dir, "train", &pool);
            job.spec = &TASK_SST2;
        }
    } else if (!strcmp(task, "imdb")) {
        rc = task_load_imdb(dir, m, NULL, &q);
        if (!rc && !info.n_cls_out)
            rc = cli_fail("eval: task imdb needs an encoder with a classifier head (tools/py/train_imdb_head.py)");
    } else if (!strcmp(task, "stsb")) rc = task_load_stsb(dir, &q);
    else if (!strcmp(task, "agnews-fewshot")) {
        rc = task_load_agnews(dir, &pool, &q);
        job.spec = &TASK_AGNEWS;
    } else if (!strcmp(task, "trec")) {
        rc = task_load_trec(dir, &pool, &q);
        job.spec = &TASK_TREC;
    } else rc = cli_fail("eval: unknown task '%s' (sst2|stsb|imdb|agnews-fewshot|trec)", task);
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
    if (dump) {
        rc = dump_prompts(m, &job, n, dump);
        goto out;
    }
    if (c.exact_query) {
        if (!job.spec) {
            rc = cli_fail("eval: --exact-tail query needs a prompt task (agnews-fewshot, trec, sst2 on a decoder); "
                          "task %s has no query segment", task);
            goto out;
        }
        if (!c.cache) {
            rc = cli_fail("eval: --exact-tail query needs --cache DIR (it decides which rows the cache serves)");
            goto out;
        }
        c.exact_query_ok = 1;
        job.exact_query = 1;
        job.exact_margin = c.exact_margin;
    }
    if (c.cache && (rc = cli_open_cache(&c, m, 0, 0, &cache))) goto out;
    if (prefix_bytes) {
        if (!info.causal) {
            rc = cli_fail("eval: --prefix-cache needs a causal model (decoder); %s is bidirectional", info.arch_name);
            goto out;
        }
        ac_prefix_params pp = ac_prefix_default_params();
        pp.max_bytes = prefix_bytes;
        int prc = ac_prefix_cache_new(m, &pp, &pc);
        if (prc) {
            rc = cli_api_fail("prefix cache", prc);
            goto out;
        }
    }
    o0 = calloc((size_t)n, sizeof *o0);
    o1 = calloc((size_t)n, sizeof *o1);
    if (!o0 || !o1) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (int i = 0; i < n && !rc; i++) rc = run_pair(ctx, cache, pc, &job, i, &o0[i], &o1[i]); /* side by side */
    if (rc) goto out;
    if (items && (rc = write_items(&job, o0, cache || pc ? o1 : NULL, n, items))) goto out;
    const stream_agg A = aggregate(o0, o1, n);
    const double sec0 = A.sec0, sec1 = A.sec1, hsec0 = A.hsec0, hsec1 = A.hsec1, att0 = A.att0, att1 = A.att1,
                 hatt0 = A.hatt0, hatt1 = A.hatt1, look = A.look;
    const long long tokens = A.tokens, bytes = A.bytes;
    const int hits = A.hits;
    const double met0 = metric_of(&job, o0, n), met1 = cache || pc ? metric_of(&job, o1, n) : 0;
    const char *mname = !strcmp(task, "stsb") ? "spearman" : "accuracy";
    const char *base = strrchr(c.model, '/');
    base = base ? base + 1 : c.model;
    printf("%-16s %-28s %-9s %8s %6s %9s %10s\n", "task", "model", "metric", "value", "n", "seconds", "tokens/s");
    printf("%-16s %-28.28s %-9s %8.2f %6d %9.2f %10.1f\n", task, base, mname, met0, n, sec0, sec0 > 0 ? tokens / sec0 : 0);
    if (job.spec)
        printf("(%d-shot, %s demonstrations, mean prompt %.0f tokens)\n", job.shots, shared ? "shared" : "per-query",
               (double)tokens / n);
    if (cache || pc)
        printf("%-16s %-28.28s %-9s %8.2f %6d %9.2f %10.1f   (with %s)\n", task, base, mname, met1, n, sec1,
               sec1 > 0 ? tokens / sec1 : 0,
               cache && pc ? "prefix cache + cache" : pc ? "prefix cache" : "cache");
    if (pc) {
        ac_prefix_stats ps;
        ac_prefix_get_stats(pc, &ps);
        const long long all = A.reused + A.computed;
        printf("prefix cache: %d/%d queries reused a prefix; tokens reused %lld, computed %lld (%.1f%% of %lld); "
               "Amdahl bound %.2fx (all tokens / computed); %lld nodes, %.1f MiB of %.1f MiB, %lld evictions; "
               "lookup+insert %.2f%% of its time\n",
               hits, n, A.reused, A.computed, all ? 100.0 * (double)A.computed / (double)all : 0, all,
               A.computed ? (double)all / (double)A.computed : 0, (long long)ps.nodes, ps.bytes / 1048576.0,
               ps.max_bytes / 1048576.0, (long long)ps.evictions, sec1 > 0 ? 100.0 * look / sec1 : 0);
    }
    if (cache) {
        printf("cache: hit rate %.1f%% (%d/%d), %.1f KiB of maps read per query, lookup %.2f%% of cached time, "
               "%.1f%% of the served layers' rows from maps\n",
               100.0 * hits / n, hits, n, bytes / 1024.0 / n, sec1 > 0 ? 100.0 * look / sec1 : 0,
               A.rows_total ? 100.0 * (double)A.rows_served / (double)A.rows_total : 0);
        if (job.exact_query) {
            long long qr = 0, er = 0;
            for (int i = 0; i < n; i++) qr += o1[i].query_row, er += o1[i].exact_rows;
            printf("exact rows from the query's start (--exact-tail query%+d): the query starts at row %.1f of %.1f "
                   "on average; %.1f rows a prompt exact in each served layer\n",
                   job.exact_margin, (double)qr / n, (double)tokens / n, (double)er / n);
        }
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
        if (A.seqs != n && A.seqs > 0) /* several sequences per example (stsb: a pair): the hit rate above
                                         counts examples with at least one served sequence */
            printf("sequences served: %lld of %lld (%.1f%%)\n", (long long)cs.hits, A.seqs,
                   100.0 * (double)cs.hits / (double)A.seqs);
        const float floor = c.have_adapt_floor ? c.adapt_floor : ac_cache_default_params().adapt_floor;
        if (floor <= 0)
            printf("adaptive lookups: off (--adapt-floor 0): every sequence looked up\n");
        else
            printf("adaptive lookups (skipped while the recent hit rate is under %g): %lld of %lld sequences "
                   "skipped the lookup (%.1f%%), %lld probes%s\n",
                   floor, A.skipped, A.seqs, A.seqs ? 100.0 * (double)A.skipped / (double)A.seqs : 0.0,
                   (long long)cs.probes,
                   cs.skipping ? "; skipping at the end" : "");
        if (cs.damaged_unindexed)
            printf("lookup problems: %lld damaged record(s) left out of the index (computed exactly; "
                   "`attncache db verify`, `attncache db repair`)\n", (long long)cs.damaged_unindexed);
    }
    if (cache || pc) {
        const long long all = A.reused + A.computed;
        printf("  %-34s %11s %11s   %7s\n", pc ? "speed (exact vs reuse)" : "speed (exact vs cache)", "exact",
               pc ? "reuse" : "cache", "speedup");
        print_speed(stdout, "end-to-end, whole stream", sec0, sec1);
        print_speed(stdout, "end-to-end, hits only", hsec0, hsec1);
        print_speed(stdout, "attention (+lookup), whole stream", att0, att1);
        print_speed(stdout, "attention op, hits only", hatt0, hatt1);
        if (pc) { /* where the time goes, whole stream */
            double e[AC_STAGE_COUNT] = {0}, r[AC_STAGE_COUNT] = {0};
            for (int i = 0; i < n; i++)
                for (int k = 0; k < AC_STAGE_COUNT; k++) e[k] += o0[i].stage[k], r[k] += o1[i].stage[k];
            printf("  stages, s (exact | reuse):");
            for (int k = 0; k < AC_STAGE_COUNT; k++)
                if (e[k] > 0 || r[k] > 0) printf("  %s %.3f | %.3f", ac_stage_name(k), e[k], r[k]);
            printf("\n");
        }
        if (pc && A.computed)
            printf("  %-34s %11s %11s   %6.3fx (%.1f%% of it reached)\n", "Amdahl bound (tokens / computed)", "",
                   "", (double)all / (double)A.computed,
                   100.0 * ratio(sec0, sec1) / ((double)all / (double)A.computed));
        if (cache) {
            /* Amdahl: the exact stream's attention stages (QK^T, softmax, A.V / fused) removed
             * entirely; share reached: the time saved end-to-end over that attention time */
            ac_cache_stats cs;
            ac_cache_get_stats(cache, &cs);
            const double shr = sec0 > 0 ? att0 / sec0 : 0;
            printf("  Amdahl bound (no attention op at all): %.3fx (attention %.1f%% of the exact time); reached "
                   "%.3fx = %.0f%% of the attention time saved\n",
                   shr < 1 ? 1.0 / (1.0 - shr) : 0, 100 * shr, ratio(sec0, sec1),
                   att0 > 0 ? 100 * (sec0 - sec1) / att0 : 0);
            if (cs.hits && cs.heads_served < (int64_t)cs.hits * info.n_layer * info.n_head) {
                /* per-head serving also skips the served heads' Q and K projections (whole 64-column
                 * panels): the bound of serving every head, the attention op and the Q/K share of the
                 * projection stage (Q: D x QD, K and V: D x KVD each) removed; the stages of both */
                double e[AC_STAGE_COUNT] = {0}, r[AC_STAGE_COUNT] = {0};
                for (int i = 0; i < n; i++)
                    for (int k = 0; k < AC_STAGE_COUNT; k++) e[k] += o0[i].stage[k], r[k] += o1[i].stage[k];
                const double qd = (double)info.n_head, kvd = (double)info.n_head_kv;
                const double qk = e[AC_STAGE_QKV] * (qd + kvd) / (qd + 2 * kvd), sk = sec0 > 0 ? (att0 + qk) / sec0 : 0;
                printf("  stages, s (exact | cache):");
                for (int k = 0; k < AC_STAGE_COUNT; k++)
                    if (e[k] > 0 || r[k] > 0) printf("  %s %.3f | %.3f", ac_stage_name(k), e[k], r[k]);
                printf("\n  Amdahl bound with the Q/K projections (no attention op, no Q/K projection): %.3fx "
                       "(%.1f%% of the exact time); reached %.0f%% of that time saved\n",
                       sk < 1 ? 1.0 / (1.0 - sk) : 0, 100 * sk, att0 + qk > 0 ? 100 * (sec0 - sec1) / (att0 + qk) : 0);
            }
            if (c.recheck_margin > 0)
                printf("  recheck (--recheck-margin %g): %lld of %d served examples' sequences computed again "
                       "exactly (%.1f%% of the stream), their exact answers kept\n",
                       (double)c.recheck_margin, (long long)cs.rechecked, hits, 100.0 * (double)cs.rechecked / n);
            if (cs.verify_checked)
                printf("  verification: %lld candidates checked, %lld rejected, %.1f us per query (in the lookup "
                       "time)\n",
                       (long long)cs.verify_checked, (long long)cs.verify_rejected,
                       1e6 * cs.t_verify / (cs.queries ? cs.queries : 1));
            if (cs.hits && cs.heads_served < (int64_t)cs.hits * info.n_layer * info.n_head)
                printf("  per-head serving (--serve-heads): %.1f%% of the hits' (layer, head) attention sites served "
                       "from maps, the rest computed\n",
                       100.0 * (double)cs.heads_served / ((double)cs.hits * info.n_layer * info.n_head));
            if (cs.head_sites_spanned)
                printf("  head policy: %.1f%% of the computed (sequence, layer, head) attention sites ran restricted "
                       "to their span\n",
                       cs.head_sites ? 100.0 * (double)cs.head_sites_spanned / (double)cs.head_sites : 0);
        }
        printf("  accuracy change: %+.2f points\n", met1 - met0);
        if (strcmp(task, "stsb")) { /* classification: which answers the cache changed */
            int rw = 0, wr = 0, pos0 = 0, pos1 = 0, changed = 0;
            for (int i = 0; i < n; i++) {
                const int lab = q.ex[i].label;
                changed += o0[i].pred != o1[i].pred;
                rw += o0[i].pred == lab && o1[i].pred != lab;
                wr += o0[i].pred != lab && o1[i].pred == lab;
                pos0 += o0[i].pred == 1, pos1 += o1[i].pred == 1;
            }
            printf("  answers changed: %d of %d (right to wrong %d, wrong to right %d); class 1 predicted: exact %d, "
                   "cache %d\n", changed, n, rw, wr, pos0, pos1);
        }
        /* the hit rate where a lookup pays for itself: its cost over the time a hit saves (hsec1
         * includes the hits' own lookups); a guide for --adapt-floor (its own cache misses not counted) */
        const long long looked = A.seqs - A.skipped;
        const double per_lookup = looked > 0 ? look / (double)looked : 0,
                     saved = hits ? (hsec0 - hsec1) / hits + per_lookup : 0;
        if (hits && per_lookup > 0 && saved > 0)
            printf("  break-even hit rate: %.2f%% (lookup %.1f us / %.1f us saved per hit; --adapt-floor)\n",
                   100.0 * per_lookup / saved, 1e6 * per_lookup, 1e6 * saved);
    }
    /* --thresholds: the same side-by-side run at each threshold */
    int n_sweep = 0;
    double sweep[32][10];
    if (cache && thresholds) {
        printf("threshold sweep (exact and cached side by side at each threshold):\n");
        printf("  %10s %8s %9s %8s %9s %9s %10s %9s %10s %8s\n", "threshold", "hits", mname, "change", "e2e",
               "e2e.hits", "attn.hits", "lookup", "KiB/query", "skipped");
        char *list = strdup(thresholds);
        for (char *tok = strtok(list, ","); tok && !rc && n_sweep < 32; tok = strtok(NULL, ",")) {
            float t;
            if (cli_opt_float("threshold in --thresholds", tok, -FLT_MAX, FLT_MAX, &t)) {
                rc = 1;
                break;
            }
            ac_cache_set_threshold(cache, t);
            for (int i = 0; i < n && !rc; i++) rc = run_pair(ctx, cache, pc, &job, i, &o0[i], &o1[i]);
            if (rc) break;
            const stream_agg B = aggregate(o0, o1, n);
            const double m1 = metric_of(&job, o1, n), m0 = metric_of(&job, o0, n);
            double *r = sweep[n_sweep++];
            r[0] = t, r[1] = (double)B.hits / n, r[2] = m1, r[3] = m1 - m0, r[4] = ratio(B.sec0, B.sec1);
            r[5] = ratio(B.hsec0, B.hsec1), r[6] = ratio(B.hatt0, B.hatt1), r[7] = ratio(B.look, B.sec1);
            r[8] = (double)B.bytes / n;
            r[9] = B.seqs ? (double)B.skipped / (double)B.seqs : 0;
            printf("  %10g %7.1f%% %9.2f %+8.2f %8.3fx %8.3fx %9.3fx %8.2f%% %10.1f %7.1f%%\n", r[0], 100 * r[1], r[2],
                   r[3], r[4], r[5], r[6], 100 * r[7], r[8] / 1024.0, 100 * r[9]);
        }
        free(list);
        if (rc) goto out;
    }
    if (json_path) {
        cJSON *root = cJSON_CreateObject(), *cj = NULL, *sw = NULL;
        if (root) {
            cJSON_AddStringToObject(root, "task", task);
            cJSON_AddStringToObject(root, "model", c.model);
            cJSON_AddStringToObject(root, "metric", mname);
            cJSON_AddNumberToObject(root, "value", met0);
            cJSON_AddNumberToObject(root, "n", n);
            cJSON_AddNumberToObject(root, "seconds", sec0);
            cJSON_AddNumberToObject(root, "tokens", (double)tokens);
            cJSON_AddNumberToObject(root, "tokens_per_s", sec0 > 0 ? tokens / sec0 : 0);
            if (job.spec) {
                cJSON_AddNumberToObject(root, "shots", job.shots);
                cJSON_AddStringToObject(root, "demos", shared ? "shared" : "per-query");
                cJSON_AddNumberToObject(root, "mean_prompt_tokens", (double)tokens / n);
            }
        }
        cJSON *pj = NULL;
        if (root && pc && (pj = cJSON_AddObjectToObject(root, "prefix"))) {
            const long long all = A.reused + A.computed;
            cJSON_AddNumberToObject(pj, "max_bytes", (double)prefix_bytes);
            cJSON_AddNumberToObject(pj, "value", met1);
            cJSON_AddNumberToObject(pj, "seconds", sec1);
            cJSON_AddNumberToObject(pj, "hits", hits);
            cJSON_AddNumberToObject(pj, "tokens_reused", (double)A.reused);
            cJSON_AddNumberToObject(pj, "tokens_computed", (double)A.computed);
            cJSON_AddNumberToObject(pj, "amdahl_bound", A.computed ? (double)all / (double)A.computed : 0);
            cJSON_AddNumberToObject(pj, "speedup_e2e", ratio(sec0, sec1));
            cJSON_AddNumberToObject(pj, "lookup_seconds", look);
        }
        if (root && cache && (cj = cJSON_AddObjectToObject(root, "cache"))) {
            cJSON_AddStringToObject(cj, "dir", c.cache);
            cJSON_AddItemToObject(cj, "threshold",
                                  cli_json_float(c.have_threshold ? c.threshold : ac_cache_default_params().threshold));
            cJSON_AddNumberToObject(cj, "value", met1);
            cJSON_AddNumberToObject(cj, "seconds", sec1);
            cJSON_AddNumberToObject(cj, "hits", hits);
            cJSON_AddNumberToObject(cj, "hit_rate", (double)hits / n);
            cJSON_AddNumberToObject(cj, "bytes_per_query", (double)bytes / n);
            cJSON_AddNumberToObject(cj, "lookup_seconds", look);
            cJSON_AddNumberToObject(cj, "speedup_e2e", ratio(sec0, sec1));
            cJSON_AddNumberToObject(cj, "speedup_e2e_hits", ratio(hsec0, hsec1));
            cJSON_AddNumberToObject(cj, "speedup_attn", ratio(att0, att1));
            cJSON_AddNumberToObject(cj, "speedup_attn_hits", ratio(hatt0, hatt1));
            cJSON_AddNumberToObject(cj, "rows_served_share",
                                    A.rows_total ? (double)A.rows_served / (double)A.rows_total : 0);
            if (job.exact_query) { /* --exact-tail query[+M]: where the queries start, rows exact per prompt */
                long long qr = 0, er = 0;
                for (int i = 0; i < n; i++) qr += o1[i].query_row, er += o1[i].exact_rows;
                cJSON_AddNumberToObject(cj, "exact_query_margin", job.exact_margin);
                cJSON_AddNumberToObject(cj, "mean_query_row", (double)qr / n);
                cJSON_AddNumberToObject(cj, "mean_exact_rows", (double)er / n);
            }
            cJSON_AddNumberToObject(cj, "lookups_skipped", (double)A.skipped);
            cJSON_AddNumberToObject(cj, "skipped_share", A.seqs ? (double)A.skipped / (double)A.seqs : 0);
            const double shr = sec0 > 0 ? att0 / sec0 : 0;
            cJSON_AddNumberToObject(cj, "amdahl_bound", shr < 1 ? 1.0 / (1.0 - shr) : 0);
            cJSON_AddNumberToObject(cj, "attention_time_saved_share", att0 > 0 ? (sec0 - sec1) / att0 : 0);
            ac_cache_stats js;
            ac_cache_get_stats(cache, &js);
            cJSON_AddNumberToObject(cj, "head_sites_spanned_share",
                                    js.head_sites ? (double)js.head_sites_spanned / (double)js.head_sites : 0);
            cJSON_AddNumberToObject(cj, "heads_served_share",
                                    js.hits ? (double)js.heads_served / ((double)js.hits * info.n_layer * info.n_head) : 0);
            cJSON_AddNumberToObject(cj, "verify_checked", (double)js.verify_checked);
            cJSON_AddNumberToObject(cj, "verify_rejected", (double)js.verify_rejected);
            cJSON_AddNumberToObject(cj, "recheck_margin", c.recheck_margin);
            cJSON_AddNumberToObject(cj, "rechecked", (double)js.rechecked);
            if (n_sweep && (sw = cJSON_AddArrayToObject(root, "sweep")))
                for (int k = 0; k < n_sweep; k++) {
                    static const char *const key[10] = {"threshold",         "hit_rate",     "value",
                                                        "change",            "speedup_e2e",  "speedup_e2e_hits",
                                                        "speedup_attn_hits", "lookup_share", "bytes_per_query",
                                                        "skipped_share"};
                    cJSON *row = cJSON_CreateObject();
                    if (!row) break;
                    cJSON_AddItemToObject(row, key[0], cli_json_float((float)sweep[k][0]));
                    for (int f = 1; f < 10; f++) cJSON_AddNumberToObject(row, key[f], sweep[k][f]);
                    cJSON_AddItemToArray(sw, row);
                }
        }
        FILE *jf = fopen(json_path, "w");
        if (!jf) {
            cJSON_Delete(root);
            rc = cli_fail("cannot write '%s': %s", json_path, strerror(errno));
            goto out;
        }
        rc = cli_json_write(jf, root);
        if (cli_close_file(jf, json_path)) rc = 1;
        if (rc) goto out;
    }
    if (plot) rc = draw_plot(json_path, plot);
out:
    free(json_path);
    free(o0);
    free(o1);
    task_ds_free(&pool);
    task_ds_free(&q);
    if (cache) {
        cli_cache_warn(cache);
        ac_cache_close(cache);
    }
    ac_prefix_cache_free(pc);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}
