/* pool.c — the forward pass's own thread pool (ggml style): persistent workers,
 * one call = one parallel step, the caller works as thread 0.
 *
 * Why not OpenMP here: the 2 cores are shared with other processes. At the end
 * of a step a thread that finished early must wait for the others; if one of
 * them was preempted, spinning on (as libgomp does by default) keeps a core
 * busy while the preempted thread waits for one, and sleeping (passive) costs a
 * wake-up of 0.1 ms or more per step on this VM. Here a waiting thread polls
 * with sched_yield (the core goes to any runnable thread, a preempted sibling
 * included; on a quiet machine the yield returns at once), after an optional
 * pure spin (AC_POOL_PAUSE_US, default 0: measured best next to other jobs),
 * and sleeps on a futex only after AC_POOL_SPIN_US (default 5000 us) of
 * waiting, e.g. between forward calls. Work inside a step is shared
 * dynamically (ac_pool_next), so a preempted thread delays at most the task
 * it holds. */
#define _GNU_SOURCE
#include "util/pool.h"
#include "util/common.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

struct ac_pool {
    int n;                      /* threads including the caller */
    pthread_t *th;              /* [n - 1] workers */
    _Atomic uint32_t gen;       /* bumped for each step (futex word of the workers) */
    _Atomic uint32_t done;      /* workers finished with the current step (futex word of the caller) */
    _Atomic int next;           /* task counter of the current step */
    _Atomic int stop;
    ac_pool_fn fn;
    void *arg;
    double pause_s, spin_s;
};

static long futex(_Atomic uint32_t *addr, int op, uint32_t val) {
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait until *w != old: spin (pause) for pause_s, then keep polling with
 * sched_yield (the core goes to whoever is runnable, a preempted sibling
 * included, while a quiet machine sees no wake-up latency), and after spin_s
 * sleep on the futex. */
static void wait_change(_Atomic uint32_t *w, uint32_t old, double pause_s, double spin_s) {
    double t0 = 0;
    for (int i = 0;; i++) {
        if (atomic_load_explicit(w, memory_order_acquire) != old) return;
        if ((i & 63) == 63) {
            double t = now_s();
            if (t0 == 0) t0 = t;
            else if (t - t0 > spin_s) break;
            if (t - t0 > pause_s) sched_yield();
        } else {
            CPU_RELAX();
        }
    }
    while (atomic_load_explicit(w, memory_order_acquire) == old) futex(w, FUTEX_WAIT_PRIVATE, old);
}

typedef struct worker_arg {
    ac_pool *p;
    int ith;
} worker_arg;

static void *worker(void *v) {
    worker_arg wa = *(worker_arg *)v;
    free(v);
    ac_pool *p = wa.p;
    uint32_t seen = 0;
    for (;;) {
        wait_change(&p->gen, seen, p->pause_s, p->spin_s);
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load(&p->stop)) break;
        p->fn(p->arg, wa.ith, p->n);
        uint32_t d = atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1;
        if (d == (uint32_t)(p->n - 1)) futex(&p->done, FUTEX_WAKE_PRIVATE, 1);
    }
    return NULL;
}

int ac_pool_new(int n_threads, ac_pool **out) {
    *out = NULL;
    ac_pool *p = AC_CALLOC(1, sizeof *p);
    if (!p) return AC_ERR_NOMEM;
    p->n = n_threads < 1 ? 1 : n_threads;
    const char *e = getenv("AC_POOL_SPIN_US");
    p->spin_s = (e && *e ? atof(e) : 5000.0) * 1e-6;
    e = getenv("AC_POOL_PAUSE_US");
    p->pause_s = (e && *e ? atof(e) : 0.0) * 1e-6;
    if (p->n > 1) {
        p->th = AC_CALLOC((size_t)p->n - 1, sizeof *p->th);
        if (!p->th) {
            free(p);
            return AC_ERR_NOMEM;
        }
    }
    for (int i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) wa->p = p, wa->ith = i;
        int rc = wa ? pthread_create(&p->th[i - 1], NULL, worker, wa) : ENOMEM;
        if (rc != 0) {
            free(wa);
            p->n = i; /* stop the ones already running */
            ac_pool_free(p);
            return ac_err(AC_ERR_NOMEM, "cannot start thread %d of the forward pool", i);
        }
    }
    *out = p;
    return AC_OK;
}

void ac_pool_free(ac_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
    for (int i = 1; i < p->n; i++) pthread_join(p->th[i - 1], NULL);
    free(p->th);
    free(p);
}

int ac_pool_threads(const ac_pool *p) { return p ? p->n : 1; }

void ac_pool_set_wait(ac_pool *p, double spin_us) {
    if (!p) return;
    p->spin_s = spin_us * 1e-6;
    if (p->pause_s > p->spin_s) p->pause_s = p->spin_s;
}

static _Thread_local int tl_next; /* task counter of a pool-less (NULL) run */

void ac_pool_run(ac_pool *p, ac_pool_fn fn, void *arg) {
    if (!p || p->n == 1) {
        if (p) atomic_store_explicit(&p->next, 0, memory_order_relaxed);
        else tl_next = 0;
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel); /* publishes fn, arg, counters */
    futex(&p->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
    fn(arg, 0, p->n);
    for (uint32_t d; (d = atomic_load_explicit(&p->done, memory_order_acquire)) != (uint32_t)(p->n - 1);)
        wait_change(&p->done, d, p->pause_s, p->spin_s);
}

int ac_pool_next(ac_pool *p) {
    return p ? atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed) : tl_next++;
}
