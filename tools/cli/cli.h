/* cli.h — the helpers every attncache command uses (common.c): errors, input
 * lines, strict option parsing, the common options, model/context/cache
 * loading, checked output streams, JSON output. Commands include this (and
 * tasks.h for data sets and prompts); it includes only the public API. */
#ifndef AC_CLI_H
#define AC_CLI_H

#include "attncache.h"
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#define AC_CLI_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AC_CLI_MAX(a, b) ((a) > (b) ? (a) : (b))

typedef struct cli_common {
    const char *model, *input;
    const char *backend; /* --backend cpu|cuda (ac_ctx_params.backend); NULL: cpu */
    int threads, gemm, attn, profile, fast, vocab_only;
    int gemm_avx512; /* --gemm avx512: the own kernels, and the CPU level must be avx512 */
    int truncate;    /* --truncate: embed/similarity cut over-long texts to the model's limit */
    /* attention cache options */
    const char *cache, *layers, *codec;
    int key, index_kind, allow_longer, have_threshold, commit_every, no_verify, rows;
    const char *heads;  /* --heads none|policy */
    const char *serve_heads; /* --serve-heads all|none|rank:K|L.H,... (per-head serving) */
    int exact_tail;     /* --exact-tail N */
    int exact_query;    /* --exact-tail query[+M|-M]: 1; exact rows from the query's start (eval) */
    int exact_margin;   /* M of query+M (rows before the query also exact; -M: fewer rows)     */
    int exact_query_ok; /* set by the command that knows where each prompt's query starts     */
    float verify;       /* --verify T */
    int verify_rows;    /* --verify-rows N */
    float recheck_margin; /* --recheck-margin M (the confidence gate; 0: off) */
    float threshold;
    int have_adapt_floor, adapt_window, adapt_probe_max; /* adaptive lookups; 0: the library's defaults */
    float adapt_floor;
} cli_common;

typedef struct cli_lines {
    char **lines;
    size_t n, cap;
} cli_lines;

/* ---- errors: one line on stderr, "attncache: error: ..."; both return 1 ---- */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_api_fail(const char *what, int rc); /* what + ac_last_error() + the status name */

/* ---- input lines: -f FILE or stdin ("-"), one text a line, CR/LF cut; a NUL
 * byte is an error. *out owns the lines (cli_lines_free). 0 or 1 after an error. */
int cli_read_lines(const char *path, cli_lines *out);
void cli_lines_free(cli_lines *l);
int cli_is_blank(const char *s);

/* ---- numeric options, one strict parser for all: the whole string, finite
 * (no NaN/inf), in [lo, hi]. 0 on success; else 1 after one error line naming
 * the option, the value, why, and the accepted range. ---- */
int cli_parse_int(const char *s, int lo, int hi, int *out); /* 1 if s is an integer in lo..hi (strict, no message) */
int cli_opt_int(const char *name, const char *s, long lo, long hi, int *out);
int cli_opt_double(const char *name, const char *s, double lo, double hi, double *out);
int cli_opt_float(const char *name, const char *s, double lo, double hi, float *out);
int cli_opt_u64(const char *name, const char *s, uint64_t *out);

/* ---- common options: model, input, threads, --gemm, --cpu, --fast, --attn,
 * --truncate and the cache options. 1 if argv[*i] was consumed (with its
 * value), 0 if not ours, -1 after an error line. ---- */
int cli_common_opt(cli_common *c, int argc, char **argv, int *i);
extern const char *cli_common_help;
extern const char *cli_cache_help;
int cli_parse_pooling(const char *v, int *out); /* mean|cls|last|default: 1, else 0 */
/* --prefix-cache MB (eval, bench): the prefix K/V cache's budget in MiB (1..1048576), as
 * bytes in *bytes. 1 if argv[*i] was it (consumed with its value), 0 if not, -1 after an
 * error line. */
int cli_prefix_opt(int argc, char **argv, int *i, int64_t *bytes);

/* ---- per-line errors (--on-error stop|skip) of embed, score, tokenize ---- */
extern const char *cli_on_error_help;
/* --on-error VALUE: 1 if argv[*i] was it (consumed), 0 if not, -1 on a bad value. */
int cli_on_error_opt(int argc, char **argv, int *i, int *skip);
/* A bad input line: with skip, its output line is the JSON object
 * {"error":"...","line":N} and *n_failed counts it (returns 0: go on); else
 * one error line (returns 1). */
int cli_line_error(int skip, size_t line, const char *msg, size_t *n_failed);
void cli_failed_summary(const char *cmd, size_t n_failed, size_t n); /* a skip run's count on stderr */

/* ---- model, context, cache ---- */
/* Loads c->model into *m (caller frees with ac_model_free) and, when ctx is
 * not NULL, a context on it into *ctx (ac_ctx_free). 0 or 1 after an error. */
int cli_load(const cli_common *c, ac_model **m, ac_ctx **ctx);
/* Open the cache named by --cache for model m (writable/create for build);
 * *out is the caller's (ac_cache_close). */
int cli_open_cache(const cli_common *c, ac_model *m, int writable, int create, ac_cache **out);
/* --cache for the commands that only read a cache (embed, similarity, score):
 * opens and attaches it (*cache NULL without --cache); detach warns, detaches,
 * closes (NULL: nothing). */
int cli_attach_cache(const cli_common *c, ac_model *m, ac_ctx *ctx, ac_cache **cache);
void cli_detach_cache(ac_ctx *ctx, ac_cache *cache);
/* One warning line on stderr when the cache passed over damaged records or a
 * lookup failed (those queries were computed exactly); nothing otherwise. */
void cli_cache_warn(const ac_cache *cache);

/* ---- output streams: every write is checked. cli_close_file closes f (named
 * `name` in the message) and returns 0, or 1 after one error line when a write,
 * the flush or the close failed (disk full, /dev/full, EIO). cli_stdout_failed:
 * stdout already saw a write error (commands stop early). cli_finish_stdout:
 * main's last word: flushes and closes stdout; rc, or 1 if that failed. ---- */
/* cli_wrap_stdout (first thing in main): stdout remembers the errno of its first failed write. */
void cli_wrap_stdout(void);
int cli_close_file(FILE *f, const char *name);
int cli_stdout_failed(void);
int cli_finish_stdout(int rc);

/* ---- JSON (cJSON) ---- */
/* A float as a JSON number with the fewest digits (<= 9) that read back as
 * the same float: embeddings round-trip exactly. NULL when out of memory. */
cJSON *cli_json_float(float v);
/* buf = the text cJSON prints for cli_json_float(v) (the same bytes), made without the node:
 * a row of floats (an embedding) is written straight to a line. Returns its length, or -1
 * when out of memory. */
int cli_float_text(float v, char buf[32]);
/* Writes j unformatted and a newline to f, and frees j (takes it; NULL is
 * out of memory). 0, or 1 after an error line. */
int cli_json_write(FILE *f, cJSON *j);

double cli_now(void); /* monotonic seconds */



#endif
