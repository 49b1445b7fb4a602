/* attncache — command-line tool. Uses only the public API (include/attncache.h).
 *
 *   attncache tokenize -m MODEL [--special] [-f FILE]
 *   attncache embed    -m MODEL [--pooling mean|cls|last] [--normalize] [-f FILE]
 *   attncache score    -m MODEL --labels "a,b" [--template "...{text}..."] [-f FILE]
 *   attncache info     -m MODEL
 *   attncache bench    -m MODEL [-L 128,512,1024] ...
 *
 * Inputs: one text per line from -f FILE or stdin. Errors: one line on
 * stderr, non-zero exit. */
#define _GNU_SOURCE
#include "attncache.h"
#include "cli.h"
#include "eval.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_serve(int argc, char **argv); /* tools/server/serve.c */

/* ---- small helpers shared by the commands (cli.h) ----------------------------------- */

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

void cli_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

int cli_close_file(FILE *f, const char *name) {
    errno = 0;
    int bad = ferror(f) != 0;
    int e = errno;
    if (fflush(f) != 0) bad = 1, e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (!bad) return 0;
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

const char *cli_common_help =
    "  -m, --model FILE     GGUF model (required)\n"
    "  -f, --file FILE      input texts, one per line (default: stdin)\n"
    "  -t, --threads N      threads (default: all cores)\n"
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
    "      --allow-longer   bidirectional models: a longer entry may serve (renormalised rows)\n"
    "      --no-verify      skip each entry's payload checksum on first use (trust the file)\n";

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
    if (c->commit_every > 0) p.commit_every = c->commit_every;
    int rc = ac_cache_open(m, c->cache, &p, out);
    if (rc != AC_OK) return cli_fail("%s", ac_last_error());
    return 0;
}

/* --cache for the commands that only read a cache (embed, similarity, score) */
static int attach_cache(const cli_common *c, ac_model *m, ac_ctx *ctx, ac_cache **cache) {
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

static void detach_cache(ac_ctx *ctx, ac_cache *cache) {
    if (!cache) return;
    cli_cache_warn(cache);
    ac_ctx_attach_cache(ctx, NULL);
    ac_cache_close(cache);
}

/* ---- per-line errors (--on-error stop|skip) ------------------------------------------------ */

static const char *on_error_help =
    "      --on-error M     what a bad line (empty, over-long) does: stop (default): an error naming\n"
    "                       the line, exit 1, the lines before it answered; skip: its output line is\n"
    "                       {\"error\":\"...\",\"line\":N}, the other lines are answered, exit 0 and a\n"
    "                       count on stderr\n";

/* --on-error VALUE: 1 if argv[*i] was it (consumed), 0 if not, -1 on a bad value. */
static int on_error_opt(int argc, char **argv, int *i, int *skip) {
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
static int line_error(int skip, size_t line, const char *msg, size_t *n_failed) {
    if (!skip) return cli_fail("line %zu: %s", line, msg);
    fputs("{\"error\":", stdout);
    cli_json_str(stdout, msg);
    printf(",\"line\":%zu}\n", line);
    (*n_failed)++;
    return 0;
}

/* The summary of a skip run on stderr. */
static void failed_summary(const char *cmd, size_t n_failed, size_t n) {
    if (n_failed)
        fprintf(stderr, "attncache: warning: %s: %zu of %zu lines failed; their output lines are {\"error\":...} objects\n",
                cmd, n_failed, n);
}

/* ---- commands -------------------------------------------------------------------------- */

static int cmd_tokenize(int argc, char **argv) {
    cli_common c = {0};
    int special = 0, skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--special")) special = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache tokenize -m MODEL [--special] [-f FILE]\n"
                   "Prints one line per input line: the token ids separated by single spaces.\n"
                   "  --special            add BOS/EOS/CLS/SEP as the model's metadata says\n%s%s",
                   on_error_help, cli_common_help);
            return 0;
        } else return cli_fail("tokenize: unknown option '%s' (see --help)", argv[i]);
    }
    c.vocab_only = 1; /* the tokenizer is all this needs: vocab-only GGUFs work too */
    ac_model *m;
    if (cli_load(&c, &m, NULL)) return 1;
    cli_lines in;
    if (cli_read_lines(c.input, &in)) {
        ac_model_free(m);
        return 1;
    }
    int rc = 0, cap = 1024;
    size_t n_failed = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    for (size_t l = 0; l < in.n && !rc && !cli_stdout_failed(); l++) {
        int n = 0, r = ids ? ac_tokenize(m, in.lines[l], strlen(in.lines[l]), special, ids, cap, &n) : AC_ERR_NOMEM;
        if (r == AC_ERR_RANGE) {
            cap = n;
            free(ids);
            ids = malloc((size_t)cap * sizeof *ids);
            r = ids ? ac_tokenize(m, in.lines[l], strlen(in.lines[l]), special, ids, cap, &n) : AC_ERR_NOMEM;
        }
        if (r == AC_ERR_INPUT) { /* this line's problem */
            rc = line_error(skip, l + 1, ac_last_error(), &n_failed);
            continue;
        }
        if (r != AC_OK) {
            rc = cli_fail("line %zu: %s", l + 1, r == AC_ERR_NOMEM ? "out of memory" : ac_last_error());
            break;
        }
        for (int k = 0; k < n; k++) printf(k ? " %d" : "%d", ids[k]);
        putchar('\n');
    }
    failed_summary("tokenize", n_failed, in.n);
    free(ids);
    cli_lines_free(&in);
    ac_model_free(m);
    return rc;
}

static int parse_pooling(const char *v, int *out) {
    if (!strcmp(v, "mean")) *out = AC_POOL_MEAN;
    else if (!strcmp(v, "cls")) *out = AC_POOL_CLS;
    else if (!strcmp(v, "last")) *out = AC_POOL_LAST;
    else if (!strcmp(v, "default")) *out = AC_POOL_DEFAULT;
    else return 0;
    return 1;
}

static void print_embedding(const float *e, int d, int ntok) {
    fputs("{\"embedding\":[", stdout);
    for (int k = 0; k < d; k++) printf(k ? ",%.7g" : "%.7g", e[k]);
    printf("],\"tokens\":%d}\n", ntok);
}

static int cmd_embed(int argc, char **argv) {
    cli_common c = {0};
    int pooling = AC_POOL_DEFAULT, normalize = 0, batch = 16, skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--normalize")) normalize = 1;
        else if (!strcmp(argv[i], "--pooling") && i + 1 < argc) {
            if (!parse_pooling(argv[++i], &pooling)) return cli_fail("bad --pooling '%s' (mean|cls|last)", argv[i]);
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            if (cli_opt_int("--batch", argv[++i], 1, 4096, &batch)) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache embed -m MODEL [--pooling mean|cls|last] [--normalize] [-f FILE]\n"
                   "Prints one JSON line per input line: {\"embedding\":[...],\"tokens\":N}.\n"
                   "  --pooling P          mean|cls|last (default: the model's pooling type)\n"
                   "  --normalize          L2-normalise the embedding\n"
                   "  --batch N            inputs per forward call (default 16)\n%s%s%s",
                   on_error_help, cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("embed: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    cli_lines in;
    if (cli_load(&c, &m, &ctx)) return 1;
    if (attach_cache(&c, m, ctx, &cache)) goto fail_model;
    if (cli_read_lines(c.input, &in)) goto fail_model;
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int d = info.n_embd;
    float *emb = malloc((size_t)batch * d * sizeof *emb); /* [batch][d] */
    int *ntok = malloc((size_t)batch * sizeof *ntok);
    ac_status *st = malloc((size_t)batch * sizeof *st);
    const char **texts = malloc((size_t)batch * sizeof *texts); /* the batch's non-blank lines */
    int rc = (!emb || !ntok || !st || !texts) ? cli_fail("out of memory") : 0;
    size_t n_failed = 0;
    for (size_t l0 = 0; l0 < in.n && !rc && !cli_stdout_failed(); l0 += (size_t)batch) {
        int nb = (int)AC_CLI_MIN((size_t)batch, in.n - l0), nt = 0;
        for (int k = 0; k < nb; k++)
            if (!cli_is_blank(in.lines[l0 + k])) texts[nt++] = in.lines[l0 + k];
        /* one call per batch; a bad line gets its own status (no retry line by line) */
        int r = ac_embed_texts_status(ctx, texts, nt, pooling, normalize, emb, ntok, st);
        if (r != AC_OK) {
            rc = cli_fail("embedding failed: %s", ac_last_error());
            break;
        }
        for (int k = 0, j = 0; k < nb && !rc; k++) {
            if (cli_is_blank(in.lines[l0 + k])) {
                rc = line_error(skip, l0 + k + 1, "empty input text", &n_failed);
                continue;
            }
            if (st[j].code == AC_OK) print_embedding(emb + (size_t)j * d, d, ntok[j]);
            else rc = line_error(skip, l0 + k + 1, st[j].message, &n_failed);
            j++;
        }
    }
    failed_summary("embed", n_failed, in.n);
    free(st);
    free(texts);
    free(emb);
    free(ntok);
    cli_lines_free(&in);
    detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
fail_model:
    detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return 1;
}

/* Split "a,b,c" into a malloc'd array of strdup'd labels. */
static int split_labels(const char *s, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    char **v = calloc((size_t)cap, sizeof *v);
    if (!v) return 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        v[*n] = strndup(p, len);
        if (!v[*n]) return 0;
        if (len == 0 || cli_is_blank(v[*n])) {
            for (int i = 0; i <= *n; i++) free(v[i]);
            free(v);
            return 0;
        }
        (*n)++;
        if (!e) break;
        p = e + 1;
    }
    *out = v;
    return 1;
}

/* template with {text} replaced (first occurrence); malloc'd */
static char *apply_template(const char *tpl, const char *text) {
    const char *at = strstr(tpl, "{text}");
    if (!at) return strdup(text);
    size_t a = (size_t)(at - tpl), lt = strlen(text), rest = strlen(at + 6);
    char *s = malloc(a + lt + rest + 1);
    if (!s) return NULL;
    memcpy(s, tpl, a);
    memcpy(s + a, text, lt);
    memcpy(s + a + lt, at + 6, rest + 1);
    return s;
}

static int cmd_score(int argc, char **argv) {
    cli_common c = {0};
    const char *labels_arg = NULL, *tpl = "{text}";
    int skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--labels") && i + 1 < argc) labels_arg = argv[++i];
        else if (!strcmp(argv[i], "--template") && i + 1 < argc) tpl = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache score -m MODEL --labels \"a,b,...\" [--template \"...{text}...\"] [-f FILE]\n"
                   "Prompt-based classification: for each input line, the prompt is the template with\n"
                   "{text} replaced by the line; each label is scored by the log-probability of its tokens\n"
                   "as a continuation of the prompt (a space is put between prompt and label unless the\n"
                   "prompt ends in whitespace). Prints JSON lines:\n"
                   "  {\"logprobs\":{\"a\":-1.2,...},\"label\":\"a\",\"tokens\":N}\n"
                   "  --template T         the prompt, with {text} where each line goes (default \"{text}\")\n%s%s",
                   on_error_help, cli_common_help);
            return 0;
        } else return cli_fail("score: unknown option '%s' (see --help)", argv[i]);
    }
    if (!labels_arg) return cli_fail("score: --labels \"a,b,...\" is required");
    if (!strstr(tpl, "{text}"))
        return cli_fail("score: bad --template '%s': it has no {text} (the place each input line goes)", tpl);
    char **labels;
    int nl;
    if (!split_labels(labels_arg, &labels, &nl) || nl < 1)
        return cli_fail("score: bad --labels '%s' (comma-separated, none empty)", labels_arg);
    ac_model *m;
    ac_ctx *ctx;
    int rc = 1;
    cli_lines in = {0};
    double *lp = calloc((size_t)nl, sizeof *lp);
    char **cont = calloc((size_t)nl, sizeof *cont);
    if (!lp || !cont) goto out_labels;
    ac_cache *cache = NULL;
    if (cli_load(&c, &m, &ctx)) goto out_labels;
    if (attach_cache(&c, m, ctx, &cache)) goto out;
    if (cli_read_lines(c.input, &in)) goto out;
    rc = 0;
    size_t n_failed = 0;
    for (size_t l = 0; l < in.n && !rc && !cli_stdout_failed(); l++) {
        if (cli_is_blank(in.lines[l])) {
            rc = line_error(skip, l + 1, "empty input text", &n_failed);
            continue;
        }
        char *prompt = apply_template(tpl, in.lines[l]);
        if (!prompt) {
            rc = cli_fail("out of memory");
            break;
        }
        size_t plen = strlen(prompt);
        int need_space = plen > 0 && !isspace((unsigned char)prompt[plen - 1]);
        for (int k = 0; k < nl; k++) {
            free(cont[k]);
            if (asprintf(&cont[k], "%s%s", need_space ? " " : "", labels[k]) < 0) cont[k] = NULL;
        }
        int r = ac_score_labels(ctx, prompt, (const char *const *)cont, nl, lp);
        if (r != AC_OK) {
            free(prompt);
            if (r == AC_ERR_INPUT) rc = line_error(skip, l + 1, ac_last_error(), &n_failed); /* this line's problem */
            else rc = cli_fail("line %zu: %s", l + 1, ac_last_error());
            continue;
        }
        int ntok = 0;
        ac_tokenize(m, prompt, plen, 1, NULL, 0, &ntok); /* the count only (AC_ERR_RANGE expected) */
        free(prompt);
        int best = 0;
        fputs("{\"logprobs\":{", stdout);
        for (int k = 0; k < nl; k++) {
            if (k) putchar(',');
            cli_json_str(stdout, labels[k]);
            printf(":%.6f", lp[k]);
            if (lp[k] > lp[best]) best = k;
        }
        fputs("},\"label\":", stdout);
        cli_json_str(stdout, labels[best]);
        printf(",\"tokens\":%d}\n", ntok);
    }
    failed_summary("score", n_failed, in.n);
out:
    cli_lines_free(&in);
    detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
out_labels:
    for (int k = 0; k < nl; k++) {
        free(labels[k]);
        if (cont) free(cont[k]);
    }
    free(labels);
    free(cont);
    free(lp);
    return rc;
}

/* Embeds every input line (normalised) and prints the cosine-similarity matrix. */
static int cmd_similarity(int argc, char **argv) {
    cli_common c = {0};
    int pooling = AC_POOL_DEFAULT;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--pooling") && i + 1 < argc) {
            if (!parse_pooling(argv[++i], &pooling)) return cli_fail("bad --pooling '%s' (mean|cls|last)", argv[i]);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache similarity -m MODEL [--pooling mean|cls|last] [-f FILE]\n"
                   "Embeds each input line (L2-normalised) and prints the cosine similarity of every pair.\n%s",
                   cli_common_help);
            return 0;
        } else return cli_fail("similarity: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    if (cli_load(&c, &m, &ctx)) return 1;
    cli_lines in = {0};
    float *emb = NULL;
    int rc = attach_cache(&c, m, ctx, &cache);
    if (!rc) rc = cli_read_lines(c.input, &in);
    if (rc) goto out;
    if (in.n == 0) {
        rc = cli_fail("similarity: no input lines");
        goto out;
    }
    for (size_t l = 0; l < in.n; l++)
        if (cli_is_blank(in.lines[l])) {
            rc = cli_fail("line %zu: empty input text", l + 1);
            goto out;
        }
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int d = info.n_embd;
    emb = malloc(in.n * (size_t)d * sizeof *emb);
    if (!emb) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (size_t l = 0; l < in.n; l++) {
        int r = ac_embed_texts(ctx, (const char *const *)in.lines + l, 1, pooling, 1, emb + l * d, NULL);
        if (r != AC_OK) {
            rc = cli_fail("line %zu: %s", l + 1, ac_last_error());
            goto out;
        }
    }
    printf("model: %s (%s, dim %d)\n", c.model, info.arch_name, d);
    for (size_t i = 0; i < in.n; i++) printf("[%zu] %s\n", i + 1, in.lines[i]);
    printf("cosine similarity:\n     ");
    for (size_t j = 0; j < in.n; j++) printf("  [%zu] ", j + 1);
    putchar('\n');
    for (size_t i = 0; i < in.n; i++) {
        printf("[%zu] ", i + 1);
        for (size_t j = 0; j < in.n; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += (double)emb[i * d + k] * emb[j * d + k];
            printf(" %6.3f", s);
        }
        putchar('\n');
    }
out:
    free(emb);
    cli_lines_free(&in);
    detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}

static const char *pool_name(int p) {
    switch (p) {
    case AC_POOL_NONE: return "none";
    case AC_POOL_MEAN: return "mean";
    case AC_POOL_CLS: return "cls";
    case AC_POOL_LAST: return "last";
    default: return "default";
    }
}

static int cmd_info(int argc, char **argv) {
    cli_common c = {0};
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache info -m MODEL\nPrints the model's architecture and sizes, the CPU level and the kernels a context\nwould run (cpu, kernels) as JSON.\n");
            return 0;
        }
        return cli_fail("info: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx; /* only to report the kernels it would run */
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info f;
    ac_model_get_info(m, &f);
    char cpu[128], kern[256];
    ac_cpu_info(cpu, sizeof cpu);
    ac_ctx_describe(ctx, kern, sizeof kern);
    ac_ctx_free(ctx);
    printf("{\"arch\":");
    cli_json_str(stdout, f.arch_name);
    printf(",\"name\":");
    cli_json_str(stdout, f.name ? f.name : "");
    printf(",\"n_vocab\":%d,\"n_ctx_train\":%d,\"n_embd\":%d,\"n_layer\":%d,\"n_head\":%d,\"n_head_kv\":%d,"
           "\"n_ff\":%d,\"head_dim\":%d,\"causal\":%s,\"pooling\":\"%s\",\"lm_head\":%s,\"n_cls_out\":%d,"
           "\"n_params\":%zu,\"file_bytes\":%zu,\"bos\":%d,\"eos\":%d,",
           f.n_vocab, f.n_ctx_train, f.n_embd, f.n_layer, f.n_head, f.n_head_kv, f.n_ff, f.head_dim,
           f.causal ? "true" : "false", pool_name(f.pooling), f.has_lm_head ? "true" : "false", f.n_cls_out,
           f.n_params, f.file_bytes, ac_token_bos(m), ac_token_eos(m));
    printf("\"cpu\":");
    cli_json_str(stdout, cpu);
    printf(",\"kernels\":");
    cli_json_str(stdout, kern);
    printf("}\n");
    ac_model_free(m);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "attncache %d.%d — prefill-only transformer engine with an attention cache\n\n"
               "usage: attncache <command> [options]   (attncache <command> --help)\n\n"
               "commands:\n"
               "  tokenize   token ids of each input line\n"
               "  embed      pooled embeddings (JSON lines)\n"
               "  score      prompt-based classification by label log-probabilities\n"
               "  similarity cosine similarity of the input lines' embeddings\n"
               "  info       model architecture and sizes\n"
               "  eval       accuracy on real data sets (sst2, stsb, agnews-fewshot, trec)\n"
               "  build      record an attention cache over a corpus\n"
               "  db         stats|verify of an attention cache\n"
               "  train-projector  train the cache's feature projector\n"
               "  tune       choose the layers to reuse from measured sensitivity\n"
               "  bench      prefill throughput and per-stage time split\n"
               "  serve      HTTP server: OpenAI/TEI embeddings, predict, score, metrics\n",
            AC_VERSION_MAJOR, AC_VERSION_MINOR);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return cli_finish_stdout(0);
    }
    argc -= 2;
    argv += 2;
    int (*run)(int, char **) = !strcmp(cmd, "tokenize")          ? cmd_tokenize
                               : !strcmp(cmd, "embed")           ? cmd_embed
                               : !strcmp(cmd, "score")           ? cmd_score
                               : !strcmp(cmd, "similarity")      ? cmd_similarity
                               : !strcmp(cmd, "info")            ? cmd_info
                               : !strcmp(cmd, "bench")           ? cmd_bench
                               : !strcmp(cmd, "eval")            ? cmd_eval
                               : !strcmp(cmd, "build")           ? cmd_build
                               : !strcmp(cmd, "db")              ? cmd_db
                               : !strcmp(cmd, "train-projector") ? cmd_train_projector
                               : !strcmp(cmd, "tune")            ? cmd_tune
                               : !strcmp(cmd, "serve")           ? cmd_serve /* tools/server/serve.c */
                                                                 : NULL;
    if (!run) {
        cli_fail("unknown command '%s'", cmd);
        usage(stderr);
        return 2;
    }
    /* every command's stdout is checked at the end: a failed write (full
     * disk, /dev/full) is an error and a non-zero exit, never a silent cut */
    return cli_finish_stdout(run(argc, argv));
}
