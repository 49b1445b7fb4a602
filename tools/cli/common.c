/* common.c — the helpers every attncache command uses (cli.h): error lines,
 * input lines, the strict numeric option parser, the common options (model,
 * threads, --backend, --cpu, --gemm, --truncate, cache options, --on-error), model and
 * context loading, cache opening, checked output streams and JSON output
 * (cJSON). Calls only the public API (include/attncache.h); no command code. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("attncache: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_api_fail(const char *what, int rc) {
    return cli_fail("%s: %s (%s)", what, ac_last_error()[0] ? ac_last_error() : "failed", ac_status_str(rc));
}

int cli_read_lines(const char *path, cli_lines *out) {
    memset(out, 0, sizeof *out);
    FILE *f = stdin;
    if (path && strcmp(path, "-") != 0) {
        f = fopen(path, "rb");
        if (!f) return cli_fail("cannot open input '%s': %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        if (n > 0 && line[n - 1] == '\r') line[--n] = 0;
        if (memchr(line, 0, (size_t)n)) {
            rc = cli_fail("input line %zu contains a NUL byte", out->n + 1);
            break;
        }
        if (out->n == out->cap) {
            size_t nc = out->cap ? out->cap * 2 : 64;
            char **nl = realloc(out->lines, nc * sizeof *nl);
            if (!nl) {
                rc = cli_fail("out of memory reading input");
                break;
            }
            out->lines = nl;
            out->cap = nc;
        }
        out->lines[out->n] = strdup(line);
        if (!out->lines[out->n]) {
            rc = cli_fail("out of memory reading input");
            break;
        }
        out->n++;
    }
    if (!rc && ferror(f)) rc = cli_fail("error reading input: %s", strerror(errno));
    free(line);
    if (f != stdin) fclose(f);
    if (rc) cli_lines_free(out);
    return rc;
}

void cli_lines_free(cli_lines *l) {
    for (size_t i = 0; i < l->n; i++) free(l->lines[i]);
    free(l->lines);
    memset(l, 0, sizeof *l);
}

int cli_is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

/* stdout through a cookie stream whose write records the first errno of a failed write(2): a
 * write that fails while the buffer overflows mid-command (long output, /dev/full) is reported
 * with its cause at the end, not as a bare "write error" (stdio keeps only the error flag). */
static int g_out_errno;

static ssize_t out_write(void *cookie, const char *buf, size_t n) {
    (void)cookie;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(STDOUT_FILENO, buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (!g_out_errno) g_out_errno = w < 0 ? errno : EIO;
            return done ? (ssize_t)done : -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)done;
}

void cli_wrap_stdout(void) {
    cookie_io_functions_t io = {.read = NULL, .write = out_write, .seek = NULL, .close = NULL};
    FILE *f = fopencookie(NULL, "w", io);
    if (!f) return; /* keep the plain stdout */
    setvbuf(f, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, 1 << 16);
    fflush(stdout);
    stdout = f;
}

int cli_close_file(FILE *f, const char *name) {
    errno = 0;
    int bad = ferror(f) != 0;
    int e = errno;
    if (fflush(f) != 0) bad = 1, e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (!bad) return 0;
    if (f == stdout && g_out_errno) e = g_out_errno; /* the cause of the first failed write */
    return cli_fail("writing %s failed: %s", name, e ? strerror(e) : "write error");
}

int cli_stdout_failed(void) { return ferror(stdout) != 0; }

int cli_finish_stdout(int rc) {
    int frc = cli_close_file(stdout, "standard output");
    return rc ? rc : frc;
}

/* Strict number parsing, one place for every numeric option: the whole
 * string is the number (no blanks, no trailing characters), finite, in range.
 * Returns NULL or why not. */
static const char *num_why(const char *s, double v, const char *end, int err, double lo, double hi) {
    if (!*s) return "empty";
    if (isspace((unsigned char)*s)) return "leading blank";
    if (end == s) return "not a number";
    if (*end) return "trailing characters";
    if (v != v) return "not a number (NaN)";
    if (v == 1.0 / 0.0 || v == -1.0 / 0.0) return "infinite";
    if (err == ERANGE || v < lo || v > hi) return "out of range";
    return NULL;
}

static const char *long_why(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    const char *why = num_why(s, 0, end, 0, 0, 0);
    if (!why && (errno == ERANGE || v < lo || v > hi)) why = "out of range";
    *out = v;
    return why;
}

int cli_parse_int(const char *s, int lo, int hi, int *out) {
    long v = 0;
    if (!s || long_why(s, lo, hi, &v)) return 0;
    *out = (int)v;
    return 1;
}

int cli_opt_int(const char *name, const char *s, long lo, long hi, int *out) {
    if (lo < INT_MIN) lo = INT_MIN;
    if (hi > INT_MAX) hi = INT_MAX;
    long v = 0;
    const char *why = s ? long_why(s, lo, hi, &v) : "missing";
    if (why) return cli_fail("bad %s '%s': %s (an integer in %ld..%ld)", name, s ? s : "", why, lo, hi);
    *out = (int)v;
    return 0;
}

int cli_opt_double(const char *name, const char *s, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    const char *why = s ? num_why(s, v, end, errno, lo, hi) : "missing";
    if (why && lo <= -FLT_MAX && hi >= FLT_MAX) return cli_fail("bad %s '%s': %s (a finite number)", name, s ? s : "", why);
    if (why) return cli_fail("bad %s '%s': %s (a finite number in %g..%g)", name, s ? s : "", why, lo, hi);
    *out = v;
    return 0;
}

int cli_opt_float(const char *name, const char *s, double lo, double hi, float *out) {
    double v = 0;
    if (lo < -FLT_MAX) lo = -FLT_MAX;
    if (hi > FLT_MAX) hi = FLT_MAX;
    if (cli_opt_double(name, s, lo, hi, &v)) return 1;
    *out = (float)v;
    return 0;
}

int cli_opt_u64(const char *name, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = s && *s != '-' ? strtoull(s, &end, 10) : 0;
    const char *why = !s ? "missing" : *s == '-' ? "negative" : num_why(s, 0, end, 0, 0, 0);
    if (!why && errno == ERANGE) why = "out of range";
    if (why) return cli_fail("bad %s '%s': %s (an integer in 0..%llu)", name, s ? s : "", why, (unsigned long long)UINT64_MAX);
    *out = (uint64_t)v;
    return 0;
}

int cli_load(const cli_common *c, ac_model **m, ac_ctx **ctx) {
    *m = NULL;
    if (ctx) *ctx = NULL;
    if (!c->model) return cli_fail("no model given (-m MODEL)");
    if (c->gemm_avx512) { /* --gemm avx512 names a level: refuse it below */
        char cpu[96];
        ac_cpu_info(cpu, sizeof cpu);
        if (strncmp(cpu, "avx512", 6) != 0)
            return cli_fail("--gemm avx512: the CPU level in use is %s (--gemm own runs the own kernels at any level)", cpu);
    }
    ac_model_params mp = ac_model_default_params();
    if (c->fast) mp.f32_math = 0;
    mp.vocab_only = c->vocab_only;
    int rc = ac_model_load(c->model, &mp, m);
    if (rc != AC_OK) return cli_fail("cannot load model '%s': %s", c->model, ac_last_error());
    if (!ctx) return 0;
    ac_ctx_params cp = ac_ctx_default_params();
    cp.n_threads = c->threads;
    cp.gemm = c->gemm;
    cp.attn = c->attn;
    cp.profile = c->profile;
    cp.truncate = c->truncate;
    cp.backend = c->backend;
    rc = ac_ctx_new(*m, &cp, ctx);
    if (rc != AC_OK) {
        ac_model_free(*m);
        *m = NULL;
        return cli_api_fail("cannot create context", rc);
    }
    return 0;
}

/* Common options; returns 1 if argv[*i] was consumed (with its value), 0 if
 * not ours, -1 on error. */
int cli_common_opt(cli_common *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
#define NEXT() ((*i) + 1 < argc ? argv[++(*i)] : (cli_fail("option %s needs a value", a), (char *)NULL))
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!(c->model = NEXT())) return -1;
    } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
        if (!(c->input = NEXT())) return -1;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        const char *v = NEXT();
        if (!v || cli_opt_int("--threads", v, 0, 1024, &c->threads)) return -1;
    } else if (!strcmp(a, "--gemm")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strcmp(v, "auto")) c->gemm = AC_GEMM_AUTO;
        else if (!strcmp(v, "openblas")) c->gemm = AC_GEMM_OPENBLAS;
        else if (!strcmp(v, "dnnl") || !strcmp(v, "onednn")) c->gemm = AC_GEMM_DNNL;
        else if (!strcmp(v, "naive")) c->gemm = AC_GEMM_NAIVE;
        else if (!strcmp(v, "own")) c->gemm = AC_GEMM_OWN;
        else if (!strcmp(v, "avx512")) c->gemm = AC_GEMM_OWN, c->gemm_avx512 = 1;
        else return cli_fail("bad --gemm '%s' (auto|own|avx512|openblas|dnnl|naive)", v), -1;
    } else if (!strcmp(a, "--backend")) {
        if (!(c->backend = NEXT())) return -1; /* checked by ac_ctx_new, with the reason */
    } else if (!strcmp(a, "--truncate")) {
        c->truncate = 1;
    } else if (!strcmp(a, "--cpu")) { /* process-wide, before any model is loaded */
        const char *v = NEXT();
        if (!v) return -1;
        if (ac_set_cpu_level(v) != AC_OK) return cli_fail("--cpu %s: %s", v, ac_last_error()), -1;
    } else if (!strcmp(a, "--fast")) {
        c->fast = 1;
    } else if (!strcmp(a, "--attn")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strcmp(v, "fused")) c->attn = AC_ATTN_FUSED;
        else if (!strcmp(v, "materialized")) c->attn = AC_ATTN_MATERIALIZED;
        else return cli_fail("bad --attn '%s' (fused|materialized)", v), -1;
    } else if (!strcmp(a, "--cache")) {
        if (!(c->cache = NEXT())) return -1;
    } else if (!strcmp(a, "--layers")) {
        if (!(c->layers = NEXT())) return -1;
    } else if (!strcmp(a, "--codec")) {
        if (!(c->codec = NEXT())) return -1;
    } else if (!strcmp(a, "--threshold")) {
        const char *v = NEXT();
        if (!v || cli_opt_float("--threshold", v, -FLT_MAX, FLT_MAX, &c->threshold)) return -1;
        c->have_threshold = 1;
    } else if (!strcmp(a, "--key")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strcmp(v, "projector")) c->key = AC_KEY_PROJECTOR;
        else if (!strcmp(v, "mean")) c->key = AC_KEY_MEAN;
        else if (!strcmp(v, "random")) c->key = AC_KEY_RANDOM;
        else if (!strcmp(v, "auto")) c->key = AC_KEY_AUTO;
        else return cli_fail("bad --key '%s' (projector|mean|random|auto)", v), -1;
        c->key++; /* stored +1 so that 0 means unset */
    } else if (!strcmp(a, "--index")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strcmp(v, "flat")) c->index_kind = 1;
        else if (!strcmp(v, "ivf")) c->index_kind = 2;
        else if (!strcmp(v, "hnsw")) c->index_kind = 3;
        else return cli_fail("bad --index '%s' (flat|ivf|hnsw)", v), -1;
    } else if (!strcmp(a, "--rows")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strcmp(v, "all")) c->rows = AC_ROWS_ALL;
        else if (!strcmp(v, "prefix")) c->rows = AC_ROWS_PREFIX;
        else return cli_fail("bad --rows '%s' (all|prefix)", v), -1;
    } else if (!strcmp(a, "--adapt-floor")) {
        const char *v = NEXT();
        if (!v || cli_opt_float("--adapt-floor", v, 0.0, 1.0, &c->adapt_floor)) return -1;
        c->have_adapt_floor = 1;
    } else if (!strcmp(a, "--adapt-window")) {
        const char *v = NEXT();
        if (!v || cli_opt_int("--adapt-window", v, 1, 1 << 20, &c->adapt_window)) return -1;
    } else if (!strcmp(a, "--adapt-probe-max")) {
        const char *v = NEXT();
        if (!v || cli_opt_int("--adapt-probe-max", v, 4, 1 << 20, &c->adapt_probe_max)) return -1;
    } else if (!strcmp(a, "--heads")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (strcmp(v, "none") != 0 && strcmp(v, "policy") != 0) return cli_fail("bad --heads '%s' (none|policy)", v), -1;
        c->heads = v;
    } else if (!strcmp(a, "--serve-heads")) {
        if (!(c->serve_heads = NEXT())) return -1; /* checked by ac_cache_open, which names a bad one */
    } else if (!strcmp(a, "--exact-tail")) {
        const char *v = NEXT();
        if (!v) return -1;
        if (!strncmp(v, "query", 5)) { /* query, query+M, query-M */
            const char *mv = v + 5;
            c->exact_query = 1;
            c->exact_margin = 0;
            if (*mv && ((*mv != '+' && *mv != '-') || !mv[1]))
                return cli_fail("bad --exact-tail '%s' (N, query, query+M or query-M)", v), -1;
            if (*mv && cli_opt_int("--exact-tail query+M (the margin M)", mv + (*mv == '+'), -(1 << 20), 1 << 20,
                                   &c->exact_margin))
                return -1;
        } else if (cli_opt_int("--exact-tail", v, 0, 1 << 20, &c->exact_tail)) return -1;
    } else if (!strcmp(a, "--verify")) {
        const char *v = NEXT();
        if (!v || cli_opt_float("--verify", v, 0, 1, &c->verify)) return -1;
    } else if (!strcmp(a, "--recheck-margin")) {
        const char *v = NEXT();
        if (!v || cli_opt_float("--recheck-margin", v, 0, 1, &c->recheck_margin)) return -1;
    } else if (!strcmp(a, "--verify-rows")) {
        const char *v = NEXT();
        if (!v || cli_opt_int("--verify-rows", v, 1, 64, &c->verify_rows)) return -1;
    } else if (!strcmp(a, "--allow-longer")) {
        c->allow_longer = 1;
    } else if (!strcmp(a, "--no-verify")) {
        c->no_verify = 1;
    } else {
        return 0;
    }
#undef NEXT
    return 1;
}

int cli_prefix_opt(int argc, char **argv, int *i, int64_t *bytes) {
    if (strcmp(argv[*i], "--prefix-cache") != 0) return 0;
    if (*i + 1 >= argc) return cli_fail("option --prefix-cache needs a value (its budget in MiB)"), -1;
    int mb = 0;
    if (cli_opt_int("--prefix-cache (MiB)", argv[++*i], 1, 1 << 20, &mb)) return -1;
    *bytes = (int64_t)mb << 20;
    return 1;
}

const char *cli_common_help =
    "  -m, --model FILE     GGUF model (required)\n"
    "  -f, --file FILE      input texts, one per line (default: stdin)\n"
    "  -t, --threads N      threads (default: all cores)\n"
    "      --backend B      cpu|cuda: the engine running the model (default cpu; cuda: an NVIDIA GPU,\n"
    "                       bf16 weights, in a build with -DAC_CUDA=ON; --cache: rows 'all' or\n"
    "                       'prefix', --exact-tail, --serve-heads, with --prefix-cache too; not\n"
    "                       --heads)\n"
    "      --gemm B         auto|own|avx512|openblas|dnnl|naive (default auto: own kernels at the\n"
    "                       CPU level; avx512: the same, refused below that level)\n"
    "      --cpu L          avx512|avx2|scalar|auto (aarch64: neon|scalar|auto): CPU kernel level\n"
    "                       (default auto = the CPU's, or the AC_CPU environment variable's);\n"
    "                       a level above the CPU's is refused\n"
    "      --fast           bf16 arithmetic for F16/BF16/Q8_0 weights where the CPU has AVX512-BF16\n"
    "                       (~2x faster, rel. error ~1e-3..5e-3; elsewhere the exact path);\n"
    "                       default: exact f32 products\n"
    "      --attn A         fused|materialized exact attention (default fused)\n"
    "      --truncate       embed, similarity: cut a text longer than the model's limit to it\n"
    "                       (keeping the closing [SEP]/EOS) instead of refusing it\n";

const char *cli_cache_help =
    "      --cache DIR      attention cache directory (see `attncache build`)\n"
    "      --threshold T    hit when the key distance <= T (default 0.05)\n"
    "      --layers SPEC    layers served on a hit: all|none|policy|0-3,7 (default all)\n"
    "      --key K          projector|mean|random|auto (default auto: projector if trained, else random)\n"
    "      --index I        flat|ivf|hnsw (default flat)\n"
    "      --rows R         all: a hit serves every row (approximate; default); prefix: causal\n"
    "                       models, only the rows of the token prefix shared with the entry\n"
    "                       (exact), the other rows computed; no threshold\n"
    "      --exact-tail N   rows all, causal models: the last N rows of a served layer are\n"
    "                       computed exactly (the answer position's attention), the rest served\n"
    "      --heads H        none (default) | policy: the heads of DIR/heads.txt (`tune --head-eps`)\n"
    "                       run exact attention restricted to sinks + a window around the\n"
    "                       diagonal, on every computed site (no lookup needed: --threshold -1\n"
    "                       turns lookups off)\n"
    "      --serve-heads S  which heads of a served layer a hit takes from the map, the others\n"
    "                       computed exactly: all (default) | none | rank:K (the K most stable\n"
    "                       (layer, head) pairs of DIR/head_rank.txt: `tune --rank-heads`) |\n"
    "                       rank:K/G (K heads in whole groups of G adjacent heads of a layer:\n"
    "                       MiniLM's heads of 32 in pairs, G = 2, skip their Q/K projection) |\n"
    "                       L.H,L.H,... (L.*: every head of layer L)\n"
    "      --verify T       rows all: trust a candidate only if a few exact rows of the query's\n"
    "                       layer-0 maps (causal: the last row first; encoders: [CLS]) are within\n"
    "                       mean total-variation distance T of the entry's (0-1; default off)\n"
    "      --verify-rows N  rows checked per head (default 4)\n"
    "      --recheck-margin M  models with a classifier head: a served input whose classifier\n"
    "                       margin (top-1 minus top-2 probability) is under M (0-1; default 0,\n"
    "                       off) is computed again exactly and answered exactly (the served\n"
    "                       inputs of a batch together); eval and bench count them\n"
    "      --allow-longer   bidirectional models: a longer entry may serve (renormalised rows)\n"
    "      --no-verify      skip each entry's payload checksum on first use (trust the file)\n"
    "      --adapt-floor F  adaptive lookups: while the cache's recent hit rate is under F (default\n"
    "                       0.02), sequences skip the lookup and run exact, but for one in K (a\n"
    "                       probe; K doubles from 4 while probes miss); a probe that hits turns\n"
    "                       lookups back on. 0: off, every sequence is looked up\n"
    "      --adapt-window N lookups the hit rate is taken over, made before any skipping (default 64)\n"
    "      --adapt-probe-max K  largest probe interval (default 256)\n";

int cli_open_cache(const cli_common *c, ac_model *m, int writable, int create, ac_cache **out) {
    *out = NULL;
    if (!c->cache) return cli_fail("no attention cache given (--cache DIR)");
    ac_cache_params p = ac_cache_default_params();
    p.writable = writable;
    p.create = create;
    p.codec = c->codec;
    if (c->key) p.key = c->key - 1;
    if (c->index_kind) p.index_kind = c->index_kind - 1;
    if (c->have_threshold) p.threshold = c->threshold;
    if (c->layers) p.layers = c->layers;
    p.allow_longer = c->allow_longer;
    p.no_verify = c->no_verify;
    p.rows = c->rows;
    if (c->have_adapt_floor) p.adapt_floor = c->adapt_floor;
    if (c->adapt_window) p.adapt_window = c->adapt_window;
    if (c->adapt_probe_max) p.adapt_probe_max = c->adapt_probe_max;
    p.heads = c->heads;
    p.serve_heads = c->serve_heads;
    if (c->exact_query && !c->exact_query_ok)
        return cli_fail("--exact-tail query: only `eval` with a prompt task (agnews-fewshot, trec, sst2 on a decoder) "
                        "knows where each prompt's query starts; give --exact-tail N");
    p.exact_tail = c->exact_tail;
    p.verify = c->verify;
    p.verify_rows = c->verify_rows;
    p.recheck_margin = c->recheck_margin;
    if (c->commit_every > 0) p.commit_every = c->commit_every;
    int rc = ac_cache_open(m, c->cache, &p, out);
    if (rc != AC_OK) return cli_fail("%s", ac_last_error());
    return 0;
}

/* --cache for the commands that only read a cache (embed, similarity, score) */
int cli_attach_cache(const cli_common *c, ac_model *m, ac_ctx *ctx, ac_cache **cache) {
    *cache = NULL;
    if (!c->cache) return 0;
    if (cli_open_cache(c, m, 0, 0, cache)) return 1;
    ac_ctx_attach_cache(ctx, *cache);
    return 0;
}

void cli_cache_warn(const ac_cache *cache) {
    ac_cache_stats s;
    if (!cache || ac_cache_get_stats(cache, &s) != AC_OK) return;
    if (s.records_damaged || s.lookups_failed || s.damaged_unindexed)
        fprintf(stderr,
                "attncache: warning: attention cache: %lld damaged record(s) left out of the index, %lld lookup "
                "candidate(s) skipped as damaged, %lld failed lookup(s); those inputs were computed exactly "
                "(`attncache db verify` names the records, `attncache db repair` drops them)\n",
                (long long)s.damaged_unindexed, (long long)s.records_damaged, (long long)s.lookups_failed);
}

void cli_detach_cache(ac_ctx *ctx, ac_cache *cache) {
    if (!cache) return;
    cli_cache_warn(cache);
    ac_ctx_attach_cache(ctx, NULL);
    ac_cache_close(cache);
}

/* ---- per-line errors (--on-error stop|skip) ------------------------------------------------ */

const char *cli_on_error_help =
    "      --on-error M     what a bad line (empty, over-long) does: stop (default): an error naming\n"
    "                       the line, exit 1, the lines before it answered; skip: its output line is\n"
    "                       {\"error\":\"...\",\"line\":N}, the other lines are answered, exit 0 and a\n"
    "                       count on stderr\n";

/* --on-error VALUE: 1 if argv[*i] was it (consumed), 0 if not, -1 on a bad value. */
int cli_on_error_opt(int argc, char **argv, int *i, int *skip) {
    if (strcmp(argv[*i], "--on-error")) return 0;
    if (*i + 1 >= argc) return cli_fail("option --on-error needs a value (stop|skip)"), -1;
    const char *v = argv[++*i];
    if (!strcmp(v, "stop")) *skip = 0;
    else if (!strcmp(v, "skip")) *skip = 1;
    else return cli_fail("bad --on-error '%s' (stop|skip)", v), -1;
    return 1;
}

/* A bad input line: with skip, its output line is a JSON error object and
 * *n_failed counts it (returns 0: go on); else one error line (returns 1). */
int cli_line_error(int skip, size_t line, const char *msg, size_t *n_failed) {
    if (!skip) return cli_fail("line %zu: %s", line, msg);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "error", msg);
        cJSON_AddNumberToObject(o, "line", (double)line);
    }
    if (cli_json_write(stdout, o)) return 1;
    (*n_failed)++;
    return 0;
}

/* The summary of a skip run on stderr. */
void cli_failed_summary(const char *cmd, size_t n_failed, size_t n) {
    if (n_failed)
        fprintf(stderr, "attncache: warning: %s: %zu of %zu lines failed; their output lines are {\"error\":...} objects\n",
                cmd, n_failed, n);
}

int cli_parse_pooling(const char *v, int *out) {
    if (!strcmp(v, "mean")) *out = AC_POOL_MEAN;
    else if (!strcmp(v, "cls")) *out = AC_POOL_CLS;
    else if (!strcmp(v, "last")) *out = AC_POOL_LAST;
    else if (!strcmp(v, "default")) *out = AC_POOL_DEFAULT;
    else return 0;
    return 1;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- JSON output (cJSON) ------------------------------------------------------------------- */

/* buf = v in %g with the fewest significant digits (6..9) that read back as the same float
 * (9 always do: every float round-trips). Whether p digits read back is monotone in p (a
 * p-digit decimal is also a (p+1)-digit one, and the correctly rounded p+1 digits are at
 * least as close to v), so a search tries 8, then 7 or 9, then 6: two tries where counting
 * up from 6 took three. */
static void float_shortest(float v, char buf[32]) {
    char b[32];
    snprintf(buf, 32, "%.8g", (double)v);
    if ((float)strtod(buf, NULL) != v) {
        snprintf(buf, 32, "%.9g", (double)v);
        return;
    }
    snprintf(b, sizeof b, "%.7g", (double)v);
    if ((float)strtod(b, NULL) != v) return; /* 8 */
    memcpy(buf, b, sizeof b);
    snprintf(b, sizeof b, "%.6g", (double)v);
    if ((float)strtod(b, NULL) == v) memcpy(buf, b, sizeof b);
}

cJSON *cli_json_float(float v) {
    /* cJSON prints a double with %1.15g (or %1.17g when that does not round-trip), which keeps
     * those <= 9 digits as they are */
    char buf[32];
    float_shortest(v, buf);
    return cJSON_CreateNumber(strtod(buf, NULL));
}

/* ---- the same digits by integer arithmetic, for 1e-10 <= |v| < 1e5 ----------------------
 * v = m / 2^s exactly (m < 2^24, s <= 58); its digits rounded to p significant ones are
 * floor(m 10^k / 2^s) with k = p - 1 - X (X: v's decimal exponent), rounded half to even on the
 * exact remainder as glibc's printf does, all in 128-bit integers. Whether p digits read back as
 * v: whether they lie strictly inside v's rounding interval (the midpoints to its neighbours),
 * compared exactly; within 2^-48 of a midpoint, where strtod's rounding to double first could
 * decide, the snprintf/strtod path answers instead. */
typedef unsigned __int128 u128;

static const uint64_t g_p10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
                                   100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
                                   10000000000000ull, 100000000000000ull, 1000000000000000ull,
                                   10000000000000000ull, 100000000000000000ull, 1000000000000000000ull,
                                   10000000000000000000ull};

/* v = m / 2^s >= 10^x ? (-10 <= x <= 6) */
static int at_least_p10(uint32_t m, int s, int x) {
    return x >= 0 ? (u128)m >= ((u128)g_p10[x] << s) : ((u128)m * g_p10[-x]) >= ((u128)1 << s);
}

/* The p significant digits of m / 2^s (decimal exponent *X on entry, updated on a carry):
 * *D, with 10^(p-1) <= *D < 10^p. Returns k = p - 1 - *X, so that the digits' value is D / 10^k. */
static int round_digits(uint32_t m, int s, int p, uint64_t *D, int *X) {
    int k = p - 1 - *X; /* 0 <= k <= 18 */
    const u128 n = (u128)m * g_p10[k];
    u128 q = n >> s;
    const u128 r = n - (q << s), half = s ? (u128)1 << (s - 1) : 0;
    if (s && (r > half || (r == half && (q & 1)))) q++;
    if (q >= g_p10[p]) { /* 99..9 rounded up to 10^p: one digit 1 of the next decade */
        q = g_p10[p - 1];
        (*X)++;
        k--;
    }
    *D = (uint64_t)q;
    return k;
}

/* 1: D / 10^k reads back as m / 2^s (lo4: 4m - 2, or 4m - 1 where the float below is half as
 * far: m = 2^23), 0: not, -1: too close to a midpoint to tell here. */
static int reads_back(uint64_t D, int k, uint32_t m, int s, int pow2) {
    const u128 d = (u128)D << (s + 2), lo = ((u128)(4 * m - (pow2 ? 1 : 2))) * g_p10[k],
               hi = ((u128)(4 * m + 2)) * g_p10[k];
    const u128 dl = d > lo ? d - lo : lo - d, dh = d > hi ? d - hi : hi - d;
    if (dl <= (lo >> 48) || dh <= (hi >> 48)) return -1;
    return d > lo && d < hi;
}

/* %.{p}g of the digits D (p of them) with decimal exponent X, trailing zeros dropped. */
static int format_g(int neg, uint64_t D, int p, int X, char *out) {
    char dig[20];
    int n = p;
    for (int i = p - 1; i >= 0; i--, D /= 10) dig[i] = (char)('0' + D % 10);
    while (n > 1 && dig[n - 1] == '0') n--;
    char *o = out;
    if (neg) *o++ = '-';
    if (X < -4 || X >= p) {
        *o++ = dig[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, dig + 1, (size_t)n - 1);
            o += n - 1;
        }
        o += snprintf(o, 8, "e%c%02d", X < 0 ? '-' : '+', X < 0 ? -X : X);
    } else if (X >= 0) {
        for (int i = 0; i <= X; i++) *o++ = i < n ? dig[i] : '0';
        if (n > X + 1) {
            *o++ = '.';
            memcpy(o, dig + X + 1, (size_t)(n - X - 1));
            o += n - X - 1;
        }
    } else {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -X - 1; i++) *o++ = '0';
        memcpy(o, dig, (size_t)n);
        o += n;
    }
    *o = 0;
    return (int)(o - out);
}

/* float_shortest's text by integer arithmetic, for 1e-10 <= |v| < 1e5; -1 where it cannot tell. */
static int float_shortest_int(float v, char buf[32]) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    const int neg = (int)(bits >> 31), be = (int)((bits >> 23) & 0xff);
    const uint32_t m = (bits & 0x7fffffu) | 0x800000u; /* normal: v = m 2^(be - 150) */
    const int s = 150 - be, pow2 = m == 0x800000u && be > 1;
    if (s < 0 || s > 58) return -1;
    int X0 = (int)floor(log10(fabs((double)v)));
    while (X0 > -10 && !at_least_p10(m, s, X0)) X0--;
    while (X0 < 6 && at_least_p10(m, s, X0 + 1)) X0++;
    if (X0 < -10 || X0 > 4 || !at_least_p10(m, s, X0)) return -1; /* (below 1e5: k >= 0 after a carry) */
    uint64_t D8, D;
    int X8 = X0, X = X0;
    const int k8 = round_digits(m, s, 8, &D8, &X8);
    int r = reads_back(D8, k8, m, s, pow2);
    if (r < 0) return -1;
    if (!r) { /* 9 digits: always */
        round_digits(m, s, 9, &D, &X);
        return format_g(neg, D, 9, X, buf);
    }
    const int k7 = round_digits(m, s, 7, &D, &X);
    if ((r = reads_back(D, k7, m, s, pow2)) < 0) return -1;
    if (!r) return format_g(neg, D8, 8, X8, buf);
    uint64_t D6;
    int X6 = X0;
    const int k6 = round_digits(m, s, 6, &D6, &X6);
    if ((r = reads_back(D6, k6, m, s, pow2)) < 0) return -1;
    return r ? format_g(neg, D6, 6, X6, buf) : format_g(neg, D, 7, X, buf);
}

int cli_float_text(float v, char buf[32]) {
    if (isfinite(v) && fabsf(v) < 1e6f) {
        /* cJSON prints this node with %1.15g, which gives back the <= 9 digits the same way
         * (an exponent below -4 too; none at or above 6 arises here) */
        const float a = fabsf(v);
        int n = a >= 1e-10f ? float_shortest_int(v, buf) : -1;
        if (n >= 0) return n;
        float_shortest(v, buf);
        return (int)strlen(buf);
    }
    cJSON *j = cli_json_float(v); /* large, inf, nan: what cJSON prints */
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!t) return -1;
    const size_t n = strlen(t) < 31 ? strlen(t) : 31;
    memcpy(buf, t, n);
    buf[n] = 0;
    cJSON_free(t);
    return (int)n;
}

int cli_json_write(FILE *f, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return cli_fail("out of memory writing JSON");
    fputs(s, f);
    fputc('\n', f);
    cJSON_free(s);
    return 0;
}
