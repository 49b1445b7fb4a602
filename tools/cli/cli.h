/* cli.h — helpers shared by the attncache commands (tools/cli/). */
#ifndef AC_CLI_H
#define AC_CLI_H

#include "attncache.h"
#include <stdint.h>
#include <stdio.h>

#define AC_CLI_MIN(a, b) ((a) < (b) ? (a) : (b))

typedef struct cli_common {
    const char *model, *input;
    int threads, gemm, attn, profile, fast, vocab_only;
    int gemm_avx512; /* --gemm avx512: the own kernels, and the CPU level must be avx512 */
    int truncate;    /* --truncate: embed/similarity cut over-long texts to the model's limit */
    /* attention cache options */
    const char *cache, *layers, *codec;
    int key, index_kind, allow_longer, have_threshold, commit_every, no_verify, rows;
    float threshold;
} cli_common;

typedef struct cli_lines {
    char **lines;
    size_t n, cap;
} cli_lines;

extern const char *cli_common_help;
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_api_fail(const char *what, int rc);
int cli_read_lines(const char *path, cli_lines *out);
void cli_lines_free(cli_lines *l);
int cli_is_blank(const char *s);
void cli_json_str(FILE *f, const char *s);
int cli_parse_int(const char *s, int lo, int hi, int *out); /* 1 if s is an integer in lo..hi (strict, no message) */
/* Numeric options, one strict parser for all: the whole string, finite (no
 * NaN/inf), in [lo, hi]. 0 on success; else 1 after one error line naming the
 * option, the value, why, and the accepted range. */
int cli_opt_int(const char *name, const char *s, long lo, long hi, int *out);
int cli_opt_double(const char *name, const char *s, double lo, double hi, double *out);
int cli_opt_float(const char *name, const char *s, double lo, double hi, float *out);
int cli_opt_u64(const char *name, const char *s, uint64_t *out);
/* Output streams: every write is checked. cli_close_file closes f (named
 * `name` in the message) and returns 0, or 1 after one error line when a write,
 * the flush or the close failed (disk full, /dev/full, EIO). cli_stdout_failed:
 * stdout already saw a write error (commands stop early). cli_finish_stdout:
 * main's last word: flushes and closes stdout; rc, or 1 if that failed. */
int cli_close_file(FILE *f, const char *name);
int cli_stdout_failed(void);
int cli_finish_stdout(int rc);
int cli_load(const cli_common *c, ac_model **m, ac_ctx **ctx);
int cli_common_opt(cli_common *c, int argc, char **argv, int *i);

/* Open the cache named by --cache for model m (writable/create for build). */
int cli_open_cache(const cli_common *c, ac_model *m, int writable, int create, ac_cache **out);
extern const char *cli_cache_help;
/* One warning line on stderr when the cache passed over damaged records or a
 * lookup failed (those queries were computed exactly); nothing otherwise. */
void cli_cache_warn(const ac_cache *cache);

/* eval --plot: PNG of speedup and metric against the threshold (plot.c) */
int cli_plot_sweep(const char *path, int n, const double *thr, const double *speedup, const double *metric,
                   const double *hit_rate, double metric_exact, const char *metric_name);

/* bench --gpu (bench_gpu.c): 0 if the CUDA backend is built in and a device is present, else 1
 * with a message; cli_bench_gpu times one length on the GPU (*g: the uploaded model, made on first
 * use, freed with cli_bench_gpu_free). */
int cli_bench_gpu_check(void);
#ifdef AC_HAVE_CUDA
typedef struct ac_cuda_model ac_cuda_model;
int cli_bench_gpu(const ac_model *m, const ac_seq *seqs, int batch, int L, int reps, ac_cuda_model **g, FILE *jf,
                  int *first);
void cli_bench_gpu_free(ac_cuda_model *g);
#endif

int cmd_bench(int argc, char **argv);
int cmd_build(int argc, char **argv);
int cmd_db(int argc, char **argv);
int cmd_train_projector(int argc, char **argv);
int cmd_tune(int argc, char **argv);

#endif
