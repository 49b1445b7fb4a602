/* cache_cmds.c — the attention-cache commands: build (a cache over a corpus or
 * a task's training prompts, tasks.c), db stats|verify|repair,
 * train-projector, tune (the layers to serve, from measured sensitivity). */
#define _GNU_SOURCE
#include "attncache.h"
#include "cli.h"
#include "tasks.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- build ------------------------------------------------------------------------------------ */

static void progress(size_t done, size_t total, size_t added, double t0) {
    double el = cli_now() - t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int w = 30, fill = total ? (int)((double)w * done / total) : w;
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu inputs, %zu new  %.1f/s  ETA %d:%02d ", fill,
            "##############################", w - fill, "", done, total, added, rate, (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

int cmd_build(int argc, char **argv) {
    cli_common c = {0};
    const char *out = NULL;
    int limit = 0, skip_bad = 0, commit_every = 64, quiet = 0, shots = -1, shared = 0;
    const char *task = NULL, *data = "../shared/data";
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-i") && i + 1 < argc) c.input = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (cli_opt_int("--limit", argv[++i], 1, 1 << 30, &limit)) return 1;
        } else if (!strcmp(argv[i], "--commit-every") && i + 1 < argc) {
            if (cli_opt_int("--commit-every", argv[++i], 1, 1 << 20, &commit_every)) return 1;
        } else if (!strcmp(argv[i], "--task") && i + 1 < argc) task = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--shots") && i + 1 < argc) {
            if (cli_opt_int("--shots", argv[++i], 0, 64, &shots)) return 1;
        } else if (!strcmp(argv[i], "--demos") && i + 1 < argc) {
            if ((shared = task_parse_demos(argv[++i])) < 0) return 1;
        } else if (!strcmp(argv[i], "--skip-bad")) skip_bad = 1;
        else if (!strcmp(argv[i], "-q")) quiet = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache build -m MODEL -i corpus.txt -o CACHE_DIR [--codec C] [--limit N]\n"
                   "Runs the exact prefill over each input line and stores its attention maps (every layer\n"
                   "and head, compressed), token count and feature summary; then indexes the entries.\n"
                   "Appends to an existing cache of the same model; inputs already stored are skipped.\n"
                   "Entries are committed every --commit-every inputs (default 64, at most once a second):\n"
                   "a build killed at any moment keeps every committed entry.\n"
                   "  --codec C            f32|f16|q8|q4|topkK, +\"-causal\" for decoders (default q8[-causal])\n"
                   "  --limit N            first N lines only\n"
                   "  --task T [--shots K] instead of -i: the prompts of label-scoring task T (sst2,\n"
                   "                       agnews-fewshot, trec) built from its training rows, as eval builds them\n"
                   "  --demos D            with --task: per-query (default) or shared demonstrations (as eval)\n"
                   "  --skip-bad           skip (and report) empty or over-long lines instead of stopping\n"
                   "  -q                   no progress bar\n%s",
                   cli_common_help);
            return 0;
        } else return cli_fail("build: unknown option '%s' (see --help)", argv[i]);
    }
    if (!out) return cli_fail("build: -o CACHE_DIR is required");
    c.cache = out;
    c.commit_every = commit_every;
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    cli_lines in = {0};
    if (cli_load(&c, &m, &ctx)) return 1;
    int rc = 0;
    if (task) {
        char **pr;
        int np;
        if ((rc = task_prompts(task, data, shots, shared, limit, &pr, &np))) goto done;
        in.lines = pr;
        in.n = in.cap = (size_t)np;
    } else if ((rc = cli_read_lines(c.input, &in))) goto done;
    if ((rc = cli_open_cache(&c, m, 1, 1, &cache))) goto done;
    size_t n = limit && (size_t)limit < in.n ? (size_t)limit : in.n, added = 0, dup = 0, bad = 0;
    int tty = !quiet && isatty(2);
    double t0 = cli_now(), last = 0;
    int cap = 4096;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    for (size_t l = 0; l < n && !rc; l++) {
        int nt = 0, r = AC_OK;
        if (cli_is_blank(in.lines[l])) {
            if (!skip_bad) {
                rc = cli_fail("%sline %zu: empty input text", tty ? "\n" : "", l + 1);
                break;
            }
            fprintf(stderr, "%sattncache: warning: line %zu skipped: empty input text\n", tty ? "\n" : "", l + 1);
            bad++;
            continue;
        } else {
            r = ac_tokenize(m, in.lines[l], strlen(in.lines[l]), 1, ids, cap, &nt);
            if (r == AC_ERR_RANGE) {
                cap = nt;
                int32_t *ni = realloc(ids, (size_t)cap * sizeof *ids);
                if (!ni) r = AC_ERR_NOMEM;
                else ids = ni, r = ac_tokenize(m, in.lines[l], strlen(in.lines[l]), 1, ids, cap, &nt);
            }
        }
        int was_added = 0;
        if (r == AC_OK) r = ac_cache_add(cache, ctx, ids, nt, &was_added);
        if (r != AC_OK) {
            if (skip_bad && (r == AC_ERR_INPUT)) {
                fprintf(stderr, "%sattncache: warning: line %zu skipped: %s\n", tty ? "\n" : "", l + 1, ac_last_error());
                bad++;
                continue;
            }
            rc = cli_fail("%sline %zu: %s", tty ? "\n" : "", l + 1, ac_last_error());
            break;
        }
        added += was_added;
        dup += !was_added;
        double now = cli_now();
        if (tty && (now - last > 0.2 || l + 1 == n)) {
            progress(l + 1, n, added, t0);
            last = now;
        }
    }
    free(ids);
    if (tty) fputc('\n', stderr);
    /* commit what was added (also after an error: nothing stored is lost) and index */
    if (ac_cache_commit(cache) != AC_OK) rc = cli_fail("commit failed: %s", ac_last_error());
    if (!rc && ac_cache_reindex(cache) != AC_OK) rc = cli_fail("indexing failed: %s", ac_last_error());
    double el = cli_now() - t0;
    fprintf(stderr, "build: %zu new entries, %zu already stored, %zu skipped, %.1f s (%.1f inputs/s)\n", added, dup, bad,
            el, el > 0 ? (double)(added + dup) / el : 0);
    if (!rc) ac_cache_print_db_stats(cache, stdout);
done:
    if (cache && ac_cache_close(cache) != AC_OK && !rc) rc = cli_fail("closing the cache: %s", ac_last_error());
    cli_lines_free(&in);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}

/* ---- db ----------------------------------------------------------------------------------------- */

/* db compact DIR --max-bytes N [--policy lru|lfu] */
static int db_compact(int argc, char **argv) {
    long long max = 0;
    int policy = AC_EVICT_LFU;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max-bytes") && i + 1 < argc) {
            char *end = NULL;
            errno = 0;
            max = strtoll(argv[++i], &end, 10);
            if (errno || end == argv[i] || *end || max < 1) return cli_fail("bad --max-bytes '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--policy") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "lru")) policy = AC_EVICT_LRU;
            else if (!strcmp(v, "lfu")) policy = AC_EVICT_LFU;
            else return cli_fail("bad --policy '%s' (lru|lfu)", v);
        } else {
            return cli_fail("db compact: unknown or incomplete option '%s'", argv[i]);
        }
    }
    if (!max) return cli_fail("db compact: --max-bytes N is required");
    int64_t ev = 0;
    if (ac_db_compact(argv[0], max, policy, stdout, &ev) != AC_OK) return cli_fail("compact: %s", ac_last_error());
    return 0;
}

int cmd_db(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        printf("usage: attncache db stats CACHE_DIR     entries, bytes, bytes per map element by codec\n"
               "       attncache db verify CACHE_DIR    check every record (checksums, structure), both commit\n"
               "                                        slots and the saved indexes; exit 1 on any damage\n"
               "       attncache db repair CACHE_DIR    keep every intact record of a damaged cache and make it\n"
               "                                        writable again (a damaged original is kept beside it)\n"
               "       attncache db compact CACHE_DIR --max-bytes N [--policy lru|lfu]\n"
               "                                        evict entries (least often hit first, default lfu; lru:\n"
               "                                        least recently used first) until the store fits in N bytes\n");
        return argc < 1 ? 2 : 0;
    }
    if (argc < 2) return cli_fail("db %s: CACHE_DIR is required", argv[0]);
    if (!strcmp(argv[0], "stats")) {
        if (ac_db_print_stats(argv[1], stdout) != AC_OK) return cli_fail("%s", ac_last_error());
        return 0;
    }
    if (!strcmp(argv[0], "verify")) {
        int64_t bad = 0;
        int rc = ac_db_verify(argv[1], stdout, &bad);
        if (rc != AC_OK) return cli_fail("verify: %s", ac_last_error());
        printf("verify: all records intact\n");
        return 0;
    }
    if (!strcmp(argv[0], "repair")) {
        int64_t n = 0;
        if (ac_db_repair(argv[1], stdout, &n) != AC_OK) return cli_fail("repair: %s", ac_last_error());
        printf("repair: %lld entries\n", (long long)n);
        return 0;
    }
    if (!strcmp(argv[0], "compact")) return db_compact(argc - 1, argv + 1);
    return cli_fail("db: unknown subcommand '%s' (stats|verify|repair|compact)", argv[0]);
}

/* ---- train-projector ------------------------------------------------------------------------------ */

int cmd_train_projector(int argc, char **argv) {
    cli_common c = {0};
    ac_cache_train_params tp = ac_cache_default_train_params();
    tp.verbose = 1;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--pairs") && i + 1 < argc) {
            if (cli_opt_int("--pairs", argv[++i], 10, 1 << 24, &tp.n_pairs)) return 1;
        } else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) {
            if (cli_opt_int("--epochs", argv[++i], 1, 100000, &tp.epochs)) return 1;
        } else if (!strcmp(argv[i], "--hidden") && i + 1 < argc) {
            if (cli_opt_int("--hidden", argv[++i], 1, 65536, &tp.hidden)) return 1;
        } else if (!strcmp(argv[i], "--lr") && i + 1 < argc) {
            if (cli_opt_float("--lr", argv[++i], 1e-12, 1e3, &tp.lr)) return 1;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            if (cli_opt_u64("--seed", argv[++i], &tp.seed)) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache train-projector -m MODEL --cache DIR [--pairs N] [--epochs N] [--hidden N]\n"
                   "Trains the 2-layer feature projector on pairs of stored entries (target: mean attention-map\n"
                   "difference over layers and heads plus the relative length difference; SmoothL1 on the\n"
                   "projections' L2 distance), saves DIR/projector.gguf and reindexes with it. Prints the hit\n"
                   "quality of each key kind on held-out entries (retrieved/best map distance; 1 is ideal).\n"
                   "  --pairs N (4000)  --epochs N (30)  --hidden N (256)  --lr X (1e-3)  --seed S (1)\n%s",
                   cli_common_help);
            return 0;
        } else return cli_fail("train-projector: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    if (cli_load(&c, &m, NULL)) return 1;
    c.key = AC_KEY_MEAN + 1; /* open with the untrained key: the projector may not exist yet */
    ac_cache *cache;
    if (cli_open_cache(&c, m, 1, 0, &cache)) {
        ac_model_free(m);
        return 1;
    }
    double rep[3];
    double t0 = cli_now();
    int rc = ac_cache_train_projector(cache, &tp, rep);
    if (rc != AC_OK) rc = cli_fail("train-projector: %s", ac_last_error());
    else {
        printf("projector trained in %.1f s; hit quality (retrieved/best map distance, held-out, 1 = ideal):\n",
               cli_now() - t0);
        printf("  projector %.3f   mean-pooled layer-0 %.3f   random projection %.3f\n", rep[0], rep[1], rep[2]);
    }
    if (ac_cache_close(cache) != AC_OK && !rc) rc = cli_fail("%s", ac_last_error());
    ac_model_free(m);
    return rc;
}

/* ---- tune --------------------------------------------------------------------------------------------- */

/* deviation of a cached output from the exact one: decoders KL(exact || cached)
 * of the last-position distributions, encoders 1 - cos of pooled embeddings */
static double deviation(const float *a, const float *b, int n, int decoder) {
    if (decoder) {
        double ma = a[0], mb = b[0];
        for (int i = 1; i < n; i++) ma = fmax(ma, a[i]), mb = fmax(mb, b[i]);
        double za = 0, zb = 0;
        for (int i = 0; i < n; i++) za += exp(a[i] - ma), zb += exp(b[i] - mb);
        double kl = 0;
        for (int i = 0; i < n; i++) {
            double la = a[i] - ma - log(za), lb = b[i] - mb - log(zb);
            kl += exp(la) * (la - lb);
        }
        return kl;
    }
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return 1.0 - ab / (sqrt(aa * bb) + 1e-30);
}

/* Sum over the hitting queries of the deviation of the cached output from the
 * exact one (ref [nq][V]); *rc set on a forward error. */
static double mean_deviation(ac_ctx *cached, int32_t **tok, const int *ntok, const int *hit, int nq, const float *ref,
                             float *got, int V, int dec, int *rc) {
    double sum = 0;
    for (int q = 0; q < nq && !*rc; q++) {
        if (!hit[q]) continue;
        ac_seq s = {tok[q], ntok[q]};
        ac_outputs o = {0};
        if (dec) o.logits = got;
        else o.pooled = got, o.pooling = AC_POOL_DEFAULT;
        if (ac_forward(cached, &s, 1, &o) != AC_OK) *rc = cli_fail("%s", ac_last_error());
        else sum += deviation(ref + (size_t)q * V, got, V, dec);
    }
    return sum;
}

/* tune --rank-heads -f: each group of g adjacent heads of a layer served alone (every layer
 * served), the mean and worst output deviation over the nh hitting queries; each head gets its
 * group's; saved as DIR/head_rank.txt (ac_cache_save_head_rank). Returns 0 or 1 (reported). */
static int rank_heads_by_output(ac_cache *cache, ac_ctx *cached, const ac_model_info *info, int g, int32_t **tok,
                                const int *ntok, const int *hit, int nq, int nh, const float *ref, float *got, int V,
                                int dec, int cls) {
    const int NL = info->n_layer, NH = info->n_head, nlh = NL * NH;
    if (g > NH || NH % g) return cli_fail("tune: --rank-group %d does not divide the model's %d heads", g, NH);
    double *dist = calloc((size_t)nlh, sizeof *dist), *worst = calloc((size_t)nlh, sizeof *worst);
    uint8_t *mask = calloc((size_t)nlh, 1);
    int rc = !dist || !worst || !mask ? cli_fail("out of memory") : 0;
    printf("per-head output deviation (%s; groups of %d heads served alone; mean (worst) over %d hitting queries):\n",
           dec ? "KL" : cls ? "KL of the classifier's outputs" : "1-cos", g, nh);
    for (int l = 0; l < NL && !rc; l++) {
        printf("  layer %d:", l);
        for (int h0 = 0; h0 < NH && !rc; h0 += g) {
            memset(mask, 0, (size_t)nlh);
            memset(mask + (size_t)l * NH + h0, 1, (size_t)g);
            if (ac_cache_set_serve_heads(cache, mask) != AC_OK) {
                rc = cli_fail("%s", ac_last_error());
                break;
            }
            double sum = 0, w = 0;
            for (int q = 0; q < nq && !rc; q++) {
                if (!hit[q]) continue;
                ac_seq s = {tok[q], ntok[q]};
                ac_outputs o = {0};
                if (dec) o.logits = got;
                else if (cls) o.cls = got;
                else o.pooled = got, o.pooling = AC_POOL_DEFAULT;
                if (ac_forward(cached, &s, 1, &o) != AC_OK) rc = cli_fail("%s", ac_last_error());
                else {
                    const double d = deviation(ref + (size_t)q * V, got, V, dec || cls);
                    sum += d;
                    if (d > w) w = d;
                }
            }
            const double mean = AC_CLI_MIN(1.0, AC_CLI_MAX(0.0, sum / nh)); /* (KL may pass 1: clipped) */
            w = AC_CLI_MIN(1.0, AC_CLI_MAX(mean, w));
            for (int h = h0; h < h0 + g; h++) dist[(size_t)l * NH + h] = mean, worst[(size_t)l * NH + h] = w;
            printf(" %.2e(%.1e)", mean, w);
        }
        printf("\n");
    }
    if (!rc && ac_cache_save_head_rank(cache, dist, worst, nh) != AC_OK) rc = cli_fail("%s", ac_last_error());
    if (!rc) printf("saved head_rank.txt: %d groups of %d heads ranked (use --serve-heads rank:K/%d)\n", nlh / g, g, g);
    free(dist), free(worst), free(mask);
    return rc;
}

int cmd_tune(int argc, char **argv) {
    cli_common c = {0};
    double budget = -1;
    int limit = 50, head_entries = 64, max_span = 0, sink_first = 1, sink_last = 1;
    float head_eps = -1;
    int rank_heads = 0, rank_entries = 500, rank_group = 1;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--head-eps") && i + 1 < argc) {
            if (cli_opt_float("--head-eps", argv[++i], 0, 1, &head_eps)) return 1;
        } else if (!strcmp(argv[i], "--head-entries") && i + 1 < argc) {
            if (cli_opt_int("--head-entries", argv[++i], 1, 1 << 20, &head_entries)) return 1;
        } else if (!strcmp(argv[i], "--rank-heads")) {
            rank_heads = 1;
        } else if (!strcmp(argv[i], "--rank-group") && i + 1 < argc) {
            if (cli_opt_int("--rank-group", argv[++i], 1, 1024, &rank_group)) return 1;
        } else if (!strcmp(argv[i], "--rank-entries") && i + 1 < argc) {
            if (cli_opt_int("--rank-entries", argv[++i], 1, 1 << 20, &rank_entries)) return 1;
        } else if (!strcmp(argv[i], "--max-span") && i + 1 < argc) {
            if (cli_opt_int("--max-span", argv[++i], 0, 512, &max_span)) return 1;
        } else if (!strcmp(argv[i], "--sinks") && i + 1 < argc) {
            const char *v = argv[++i];
            char a[32], b[32];
            const char *comma = strchr(v, ',');
            if (!comma || comma - v >= 32 || strlen(comma + 1) >= 32)
                return cli_fail("bad --sinks '%s' (FIRST,LAST: keys at the start and end, 0-64)", v);
            memcpy(a, v, (size_t)(comma - v));
            a[comma - v] = 0;
            strcpy(b, comma + 1);
            if (cli_opt_int("--sinks (first)", a, 0, 64, &sink_first) || cli_opt_int("--sinks (last)", b, 0, 64, &sink_last))
                return 1;
        } else if (!strcmp(argv[i], "--budget") && i + 1 < argc) {
            if (cli_opt_double("--budget", argv[++i], 0, 1e9, &budget)) return 1;
        } else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (cli_opt_int("--limit", argv[++i], 1, 1 << 20, &limit)) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache tune -m MODEL --cache DIR -f queries.txt [--budget X] [--limit N]\n"
                   "Measures, on held-out query lines that hit, how much serving each single layer from the\n"
                   "cache changes the output (decoders: KL of the last-position distribution; encoders:\n"
                   "1 - cosine of the pooled embedding), then serves the least sensitive layers first, as\n"
                   "many as keep the mean deviation of the chosen set within the budget (default: twice the\n"
                   "median single-layer deviation), and saves DIR/policy.txt (use with --layers policy).\n"
                   "\n"
                   "       attncache tune -m MODEL --cache DIR --head-eps EPS [--head-entries N] [--sinks F,L]\n"
                   "                      [--max-span W]\n"
                   "Per-head spans instead (no queries needed): profiles N stored entries (default 64) and\n"
                   "gives each head the smallest window w (1..128, at most W) such that, on every profiled\n"
                   "entry, its rows put at most EPS of their mass outside the first F keys (default 1), the\n"
                   "last L keys (bidirectional; default 1) and the window (causal t-w < s <= t, else\n"
                   "|s-t| < w); other heads stay exact. Prints the per-head table, saves DIR/heads.txt\n"
                   "(use with --heads policy).\n"
                   "\n"
                   "       attncache tune -m MODEL --cache DIR --rank-heads [--rank-entries N] [--threshold T]\n"
                   "Ranks the (layer, head) pairs for per-head serving (no queries needed): each of N stored\n"
                   "entries (default 500) is looked up as a query (its own summary, the key and threshold T;\n"
                   "itself excluded), and each head's mean total-variation distance between its map rows and\n"
                   "the retrieved neighbour's is averaged over the pairs found. Prints the table, saves\n"
                   "DIR/head_rank.txt (use with --serve-heads rank:K: the K most stable pairs).\n"
                   "\n"
                   "       attncache tune -m MODEL --cache DIR --rank-heads -f queries.txt [--rank-group G]\n"
                   "                      [--limit N] [--threshold T]\n"
                   "Ranks the heads by what serving them does to the output instead: on the first N query\n"
                   "lines (default 50; lines not in the cache) that hit, each group of G adjacent heads of a\n"
                   "layer (default 1) is served alone and the output's deviation from the exact one is\n"
                   "averaged (decoders: KL of the last position; encoders with a classifier head: KL of\n"
                   "its outputs; other encoders: 1 - cosine of the pooled embedding); every head of a\n"
                   "group gets its group's value. Saves DIR/head_rank.txt (use\n"
                   "with --serve-heads rank:K/G).\n%s%s",
                   cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("tune: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *exact, *cached;
    ac_cache *cache = NULL;
    cli_lines in = {0};
    if (rank_heads && !c.input) { /* per-head serving: heads ranked by their maps' distance to the neighbours' */
        ac_model_params mp = ac_model_default_params();
        if (!c.model) return cli_fail("tune: -m MODEL is required");
        if (head_eps >= 0) return cli_fail("tune: --rank-heads and --head-eps are separate runs");
        if (ac_model_load(c.model, &mp, &m) != AC_OK) return cli_fail("%s", ac_last_error());
        int np = 0, rh = cli_open_cache(&c, m, 1, 0, &cache);
        if (!rh && ac_cache_rank_heads(cache, rank_entries, stdout, &np) != AC_OK) rh = cli_fail("%s", ac_last_error());
        if (!rh) printf("saved %s/head_rank.txt: %d pairs profiled (use --serve-heads rank:K)\n", c.cache, np);
        if (cache && ac_cache_close(cache) != AC_OK && !rh) rh = cli_fail("%s", ac_last_error());
        ac_model_free(m);
        return rh;
    }
    if (head_eps >= 0) { /* per-head spans from the stored maps */
        ac_model_params mp = ac_model_default_params();
        if (!c.model) return cli_fail("tune: -m MODEL is required");
        if (ac_model_load(c.model, &mp, &m) != AC_OK) return cli_fail("%s", ac_last_error());
        int nr = 0, rh = cli_open_cache(&c, m, 1, 0, &cache);
        if (!rh && ac_cache_tune_heads(cache, head_eps, head_entries, sink_first, sink_last, max_span, stdout, &nr) != AC_OK)
            rh = cli_fail("%s", ac_last_error());
        if (!rh) printf("saved %s/heads.txt: %d heads restricted (use --heads policy)\n", c.cache, nr);
        if (cache && ac_cache_close(cache) != AC_OK && !rh) rh = cli_fail("%s", ac_last_error());
        ac_model_free(m);
        return rh;
    }
    if (cli_load(&c, &m, &exact)) return 1;
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = c.threads;
    int rc = ac_ctx_new(m, &cp, &cached) != AC_OK ? cli_api_fail("context", AC_ERR_INTERNAL) : 0;
    if (rc) goto out0;
    if ((rc = cli_read_lines(c.input, &in))) goto out;
    if ((rc = cli_open_cache(&c, m, 1, 0, &cache))) goto out;
    /* every pass must look every query up: adaptive lookups would skip some of the hitting
     * queries once the misses among them pass the floor, and their deviation would read 0 */
    if (ac_cache_set_adapt(cache, 0.0f, 0, 0) != AC_OK) {
        rc = cli_fail("%s", ac_last_error());
        goto out;
    }
    ac_ctx_attach_cache(cached, cache);
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int NL = info.n_layer, dec = info.causal && info.has_lm_head;
    /* the head ranking of an encoder with a classifier head measures the classifier's outputs */
    const int cls = rank_heads && !dec && info.n_cls_out > 0, V = dec ? info.n_vocab : cls ? info.n_cls_out : info.n_embd;
    if (NL <= 0 || V <= 0) {
        rc = cli_fail("tune: model has no layers");
        goto out;
    }
    const int nq = (int)AC_CLI_MIN((size_t)limit, in.n);
    float *ref = malloc((size_t)nq * V * sizeof *ref), *got = malloc((size_t)V * sizeof *got);
    int32_t **tok = calloc((size_t)nq, sizeof *tok);
    int *ntok = calloc((size_t)nq, sizeof *ntok), *hit = calloc((size_t)nq, sizeof *hit);
    double *sens = calloc((size_t)NL, sizeof *sens);
    uint8_t *mask = calloc((size_t)NL, 1);
    int *order = malloc((size_t)NL * sizeof *order);
    if (!ref || !got || !tok || !ntok || !hit || !sens || !mask || !order) {
        rc = cli_fail("out of memory");
        goto out2;
    }
    /* exact outputs; which queries hit at all (all layers served) */
    int nh = 0;
    ac_cache_stats st;
    for (int q = 0; q < nq && !rc; q++) {
        int n = 0;
        ac_tokenize(m, in.lines[q], strlen(in.lines[q]), 1, NULL, 0, &n);
        tok[q] = malloc((size_t)(n > 0 ? n : 1) * sizeof **tok);
        if (!tok[q] || ac_tokenize(m, in.lines[q], strlen(in.lines[q]), 1, tok[q], n, &ntok[q]) != AC_OK || n == 0) {
            rc = cli_fail("line %d: %s", q + 1, ac_last_error());
            break;
        }
        ac_seq s = {tok[q], ntok[q]};
        ac_outputs o = {0};
        if (dec) o.logits = ref + (size_t)q * V;
        else if (cls) o.cls = ref + (size_t)q * V;
        else o.pooled = ref + (size_t)q * V, o.pooling = AC_POOL_DEFAULT;
        if (ac_forward(exact, &s, 1, &o) != AC_OK) {
            rc = cli_fail("line %d: %s", q + 1, ac_last_error());
            break;
        }
        ac_cache_reset_stats(cache);
        if (dec) o.logits = got;
        else if (cls) o.cls = got;
        else o.pooled = got;
        if (ac_forward(cached, &s, 1, &o) != AC_OK) {
            rc = cli_fail("line %d: %s", q + 1, ac_last_error());
            break;
        }
        ac_cache_get_stats(cache, &st);
        hit[q] = st.hits > 0;
        nh += hit[q];
    }
    if (rc) goto out2;
    if (nh == 0) {
        rc = cli_fail("tune: none of the %d queries hit the cache at this threshold; raise --threshold", nq);
        goto out2;
    }
    if (rank_heads) { /* per-head serving: groups of heads ranked by the output's deviation */
        rc = rank_heads_by_output(cache, cached, &info, rank_group, tok, ntok, hit, nq, nh, ref, got, V, dec, cls);
        goto out2;
    }
    /* one layer at a time */
    for (int l = 0; l < NL && !rc; l++) {
        memset(mask, 0, (size_t)NL);
        mask[l] = 1;
        ac_cache_set_layers(cache, mask);
        sens[l] = mean_deviation(cached, tok, ntok, hit, nq, ref, got, V, dec, &rc) / nh;
    }
    for (int l = 0; l < NL; l++) order[l] = l;
    for (int i = 1; i < NL; i++) /* insertion sort by sensitivity */
        for (int j = i; j > 0 && sens[order[j]] < sens[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (budget < 0) budget = 2.0 * sens[order[NL / 2]]; /* default: twice the median layer's deviation */
    printf("per-layer sensitivity (%s, mean over %d hitting queries):\n", dec ? "KL" : "1-cos", nh);
    for (int l = 0; l < NL; l++) printf("  layer %2d  %.3e\n", l, sens[l]);
    /* largest prefix of the sorted layers whose joint deviation stays within budget */
    int best_k = 0;
    double best_dev = 0;
    for (int k = 1; k <= NL && !rc; k++) {
        memset(mask, 0, (size_t)NL);
        for (int i = 0; i < k; i++) mask[order[i]] = 1;
        ac_cache_set_layers(cache, mask);
        double dev = mean_deviation(cached, tok, ntok, hit, nq, ref, got, V, dec, &rc) / nh;
        printf("  %2d layers: deviation %.3e%s\n", k, dev, dev <= budget ? "" : " (over budget)");
        if (dev > budget) break;
        best_k = k;
        best_dev = dev;
    }
    memset(mask, 0, (size_t)NL);
    for (int i = 0; i < best_k; i++) mask[order[i]] = 1;
    ac_cache_set_layers(cache, mask);
    if (!rc && ac_cache_save_policy(cache) != AC_OK) rc = cli_fail("%s", ac_last_error());
    if (!rc) {
        printf("policy: %d of %d layers served (deviation %.3e, budget %.3e):", best_k, NL, best_dev, budget);
        for (int l = 0; l < NL; l++)
            if (mask[l]) printf(" %d", l);
        printf("\nsaved to %s/policy.txt (use --layers policy)\n", c.cache);
    }
out2:
    if (tok)
        for (int q = 0; q < nq; q++) free(tok[q]);
    free(tok), free(ntok), free(hit), free(sens), free(mask), free(order), free(ref), free(got);
out:
    if (cache) ac_cache_close(cache);
    ac_ctx_free(cached);
out0:
    cli_lines_free(&in);
    ac_ctx_free(exact);
    ac_model_free(m);
    return rc;
}
