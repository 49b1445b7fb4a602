/* eval.h — data-set readers and metrics of `attncache eval` (tools/cli/eval.c). */
#ifndef AC_EVAL_H
#define AC_EVAL_H

#define AC_EVAL_HOLDOUT 8 /* AG News / TREC: data row i is held out when i % 8 == 0 */

typedef struct eval_ex {
    char *a, *b;   /* text (b: second sentence of a pair, or NULL) */
    int label;     /* class index */
    double score;  /* STS-B gold similarity */
} eval_ex;

typedef struct eval_ds {
    eval_ex *ex;
    int n, cap;
} eval_ds;

int eval_load_sst2(const char *dir, const char *split, eval_ds *d);
int eval_load_stsb(const char *dir, eval_ds *d);
int eval_load_agnews(const char *dir, eval_ds *train, eval_ds *held);
int eval_load_trec(const char *dir, eval_ds *train, eval_ds *held);
double eval_pearson(const double *x, const double *y, int n);
double eval_spearman(const double *x, const double *y, int n);
double ac_cli_now(void);
int cmd_eval(int argc, char **argv);
int eval_task_prompts(const char *task, const char *dir, int shots, int shared, int limit, char ***prompts, int *n);
/* "shared" -> 1, "per-query" -> 0, else an error message and -1 (--demos). */
int eval_parse_demos(const char *v);

#endif
