/* tasks.h — the evaluation tasks (tasks.c): data-set readers, metrics and the
 * label-scoring prompts, used by eval, build and the cache commands. */
#ifndef AC_TASKS_H
#define AC_TASKS_H

#include <stddef.h>
#include <stdint.h>

#define AC_TASK_HOLDOUT 8 /* AG News / TREC: data row i is held out when i % 8 == 0 */

typedef struct task_ex {
    char *a, *b;   /* text (b: second sentence of a pair, or NULL) */
    int label;     /* class index */
    double score;  /* STS-B gold similarity */
} task_ex;

typedef struct task_ds {
    task_ex *ex;
    int n, cap;
} task_ds;

/* Readers: append the rows of DIR/<task>/... to the data set(s); 0, or 1
 * after an error line naming the file and row. Free with task_ds_free. */
int task_load_sst2(const char *dir, const char *split, task_ds *d);
int task_load_stsb(const char *dir, task_ds *d);
int task_load_agnews(const char *dir, task_ds *train, task_ds *held);
int task_load_trec(const char *dir, task_ds *train, task_ds *held);
/* IMDB (label<TAB>id<TAB>review, rows split on '\n' only: reviews hold U+0085
 * and U+2028): the rows whose token count under model m is in [256, 512]
 * (long inputs); row i held out when i % 8 == 0. train may be NULL. */
#define AC_IMDB_MIN_TOKENS 256
#define AC_IMDB_MAX_TOKENS 512
struct ac_model;
int task_load_imdb(const char *dir, const struct ac_model *m, task_ds *train, task_ds *held);
void task_ds_free(task_ds *d);

double task_pearson(const double *x, const double *y, int n);
double task_spearman(const double *x, const double *y, int n); /* ties: average ranks */

/* A label-scoring task: the prompt is the instruction, k demonstrations
 * "<field>: <text>\n<answer>: <label>\n\n" and the query with an open answer. */
typedef struct task_spec {
    const char *name;
    const char *instruction;  /* first line of the prompt */
    const char *field;        /* "Review", "Article", "Question" */
    const char *answer;       /* "Sentiment", "Topic", "Type" */
    int n_labels;
    const char *labels[6];    /* label words (scored with a leading space) */
    int default_shots;
} task_spec;

extern const task_spec TASK_SST2, TASK_AGNEWS, TASK_TREC;

/* The seed of a prompt's demonstrations: --demos shared: one fixed seed for
 * every prompt; per-query: per_query. */
uint64_t task_demo_seed(int shared, uint64_t per_query);
/* Prompt for `query`: k demonstrations drawn (seeded) from `pool`, balanced
 * over classes, never the query itself. malloc'd (caller frees); NULL if out
 * of memory. */
char *task_build_prompt(const task_spec *t, const task_ds *pool, const char *query, int k, uint64_t seed);
/* The same; *query_at (optional): the byte offset where the query's segment
 * ("<field>: <query>\n<answer>:", after the last demonstration) begins. */
char *task_build_prompt_at(const task_spec *t, const task_ds *pool, const char *query, int k, uint64_t seed,
                           size_t *query_at);
/* Prompts of a label-scoring task built from its TRAINING pool (never the
 * held-out rows): the corpus for an attention cache of that task.
 * *prompts: malloc'd array of malloc'd strings (caller frees). 0 or 1. */
int task_prompts(const char *task, const char *dir, int shots, int shared, int limit, char ***prompts, int *n);
/* "shared" -> 1, "per-query" -> 0, else an error line and -1 (--demos). */
int task_parse_demos(const char *v);

#endif
