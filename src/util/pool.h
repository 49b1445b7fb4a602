/* pool.h — a fixed set of threads running steps with dynamic task hand-out (see
 * pool.c): the CPU backend's forward runs on one per context, and the cache's
 * parallel index scans borrow it (ac_ctx_pool). */
#ifndef AC_POOL_H
#define AC_POOL_H

typedef struct ac_pool ac_pool;
/* fn(arg, ith, nth): thread ith of nth; ith 0 is the caller. */
typedef void (*ac_pool_fn)(void *arg, int ith, int nth);

int ac_pool_new(int n_threads, ac_pool **out); /* n_threads >= 1 (1: no workers) */
void ac_pool_free(ac_pool *p);
int ac_pool_threads(const ac_pool *p);
/* How long a waiting thread polls (spin, then sched_yield) before it sleeps. */
void ac_pool_set_wait(ac_pool *p, double spin_us);
/* Run one step on every thread and wait for all of them. p may be NULL: fn runs
 * on the caller alone (as thread 0 of 1). */
void ac_pool_run(ac_pool *p, ac_pool_fn fn, void *arg);
/* Next task index of the current step (0, 1, 2, ... across all threads). */
int ac_pool_next(ac_pool *p);

#endif
