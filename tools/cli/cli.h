/* cli.h — helpers shared by the attncache commands (tools/cli/). */
#ifndef AC_CLI_H
#define AC_CLI_H

#include "attncache.h"
#include <stdio.h>

#define AC_CLI_MIN(a, b) ((a) < (b) ? (a) : (b))

typedef struct cli_common {
    const char *model, *input;
    int threads, gemm, attn, profile, fast, vocab_only;
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
int cli_parse_int(const char *s, int lo, int hi, int *out);
int cli_load(const cli_common *c, ac_model **m, ac_ctx **ctx);
int cli_common_opt(cli_common *c, int argc, char **argv, int *i);

/* Open the cache named by --cache for model m (writable/create for build). */
int cli_open_cache(const cli_common *c, ac_model *m, int writable, int create, ac_cache **out);
extern const char *cli_cache_help;

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
