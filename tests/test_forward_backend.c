/* test_forward_backend.c — the forward-level backend table (src/forward/backend.h):
 *  - ac_ctx_params.backend = "cpu" (and "") gives bitwise the default's outputs;
 *  - an unknown name is AC_ERR_ARG naming it; "cuda" without a CUDA build or device
 *    is AC_ERR_UNSUPPORTED saying why (on a GPU machine: the GPU's result);
 *  - the CPU backend's lazy weight preparation under concurrency: threads create
 *    contexts on one fresh model at once, needing the same and different layouts
 *    (and at two CPU levels), and every context computes what a context made alone
 *    on a fresh model computes, bitwise (run it under ASan/TSan: build-asan does);
 *  - the loader prepares nothing (the model holds no packed copy until a context asks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "forward/backend.h"
#include "forward/forward.h"
#include "load/model.h"
#include "ref_forward.h"
#include "util/cpu.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef AC_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

typedef struct outs {
    float *hidden, *pooled, *logits, *cls;
    size_t nh, np, nl, nc;
} outs;

static const int g_lens[3] = {23, 1, 9};

static void seqs_make(ac_seq *seqs, int32_t *ids, int V) {
    uint64_t seed = 77;
    ref_random_tokens(&seed, ids, 33, V);
    for (int s = 0, o = 0; s < 3; o += g_lens[s], s++) seqs[s].tokens = ids + o, seqs[s].n_tokens = g_lens[s];
}

/* every output the model has, from ctx over the fixed batch */
static void run(ac_ctx *c, const ac_model *m, outs *o) {
    const ac_model_info *in = &m->info;
    int32_t ids[33];
    ac_seq seqs[3];
    seqs_make(seqs, ids, in->n_vocab);
    o->nh = (size_t)33 * in->n_embd, o->np = (size_t)3 * in->n_embd;
    o->nl = in->has_lm_head ? (size_t)3 * in->n_vocab : 0, o->nc = (size_t)3 * in->n_cls_out;
    o->hidden = malloc(o->nh * 4), o->pooled = malloc(o->np * 4);
    o->logits = o->nl ? malloc(o->nl * 4) : NULL, o->cls = o->nc ? malloc(o->nc * 4) : NULL;
    ac_outputs out = {o->hidden, o->pooled, o->logits, o->cls, AC_POOL_DEFAULT, 1};
    int rc = ac_forward(c, seqs, 3, &out);
    if (rc) fprintf(stderr, "forward: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
}

static void outs_equal(const outs *a, const outs *b) {
    assert_memory_equal(a->hidden, b->hidden, a->nh * 4);
    assert_memory_equal(a->pooled, b->pooled, a->np * 4);
    if (a->nl) assert_memory_equal(a->logits, b->logits, a->nl * 4);
    if (a->nc) assert_memory_equal(a->cls, b->cls, a->nc * 4);
}

static void outs_free(outs *o) { free(o->hidden), free(o->pooled), free(o->logits), free(o->cls); }

static ac_model *load(const uint8_t *buf, size_t size, int f32_math) {
    ac_model_params mp = ac_model_default_params();
    mp.f32_math = f32_math;
    ac_model *m = NULL;
    int rc = ac_model_load_memory(buf, size, &mp, AC_LOAD_NO_VOCAB, &m);
    if (rc) fprintf(stderr, "load: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return m;
}

static ac_ctx *ctx_with(const ac_model *m, const char *backend, int gemm) {
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    p.backend = backend;
    p.gemm = gemm;
    ac_ctx *c = NULL;
    int rc = ac_ctx_new(m, &p, &c);
    if (rc) fprintf(stderr, "ctx_new: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

/* ---- "cpu" is the default ------------------------------------------------------------------ */
static void test_cpu_is_default(void **st) {
    (void)st;
    const struct {
        int arch;
        uint32_t wtype;
        int f32_math, n_cls;
    } cases[4] = {{AC_ARCH_LLAMA, GGML_F16, 0, 0}, {AC_ARCH_BERT, GGML_F32, 1, 3}, {AC_ARCH_QWEN2, GGML_Q8_0, 1, 0},
                  {AC_ARCH_BERT, GGML_F16, 0, 2}};
    for (int k = 0; k < 4; k++) {
        ref_spec s = ref_spec_default(cases[k].arch);
        s.wtype = cases[k].wtype;
        s.n_cls = cases[k].n_cls;
        uint8_t *buf;
        size_t size;
        assert_int_equal(ref_build(&s, &buf, &size), AC_OK);
        ac_model *m = load(buf, size, cases[k].f32_math);
        ac_ctx *c0 = NULL;
        assert_int_equal(ac_ctx_new(m, NULL, &c0), AC_OK); /* default parameters */
        ac_ctx *c1 = ctx_with(m, "cpu", AC_GEMM_AUTO), *c2 = ctx_with(m, "", AC_GEMM_AUTO);
        assert_string_equal(ac_ctx_backend(c0), "cpu");
        if (cases[k].wtype == GGML_F32) { /* F32: copied once into the own GEMM's panels, the mapping untouched */
            assert_ptr_not_equal(c0->model, m);
            assert_ptr_equal(c1->model, c0->model);
            assert_int_equal(c0->model->f32_panels, 1);
            assert_int_equal(c0->model->layers[0].wq.pack, AC_PACK_F32P);
            assert_ptr_equal(m->layers[0].wq.f32, m->layers[0].wq.data);
            assert_true((const uint8_t *)m->layers[0].wq.data >= buf && (const uint8_t *)m->layers[0].wq.data < buf + size);
            setenv("AC_F32_PANELS", "off", 1); /* zero-copy: the kernels read the mapping */
            ac_ctx *c3 = ctx_with(m, "cpu", AC_GEMM_AUTO);
            unsetenv("AC_F32_PANELS");
            assert_ptr_equal(c3->model, m);
            ac_ctx_free(c3);
        } else { /* one prepared view, shared by the contexts */
            assert_ptr_not_equal(c0->model, m);
            assert_ptr_equal(c1->model, c0->model);
        }
        assert_string_equal(ac_ctx_backend(c1), "cpu");
        assert_ptr_equal(ac_ctx_model(c1), m);
        char d0[256], d1[256];
        assert_string_equal(ac_ctx_describe(c0, d0, sizeof d0), ac_ctx_describe(c1, d1, sizeof d1));
        assert_int_equal(strncmp(d1, "cpu ", 4), 0);
        outs a, b, c;
        run(c0, m, &a), run(c1, m, &b), run(c2, m, &c);
        outs_equal(&a, &b);
        outs_equal(&a, &c);
        if (m->has_output) { /* ac_lm_head dispatches too */
            const int V = m->info.n_vocab;
            float *l0 = malloc((size_t)V * 4), *l1 = malloc((size_t)V * 4);
            assert_int_equal(ac_lm_head(c0, a.hidden, 1, l0), AC_OK);
            assert_int_equal(ac_lm_head(c1, a.hidden, 1, l1), AC_OK);
            assert_memory_equal(l0, l1, (size_t)V * 4);
            free(l0), free(l1);
        }
        printf("  %s %s: backend \"cpu\" == default, bitwise (%s)\n", m->arch_name, ggml_dtype_name(s.wtype), d1);
        outs_free(&a), outs_free(&b), outs_free(&c);
        ac_ctx_free(c0), ac_ctx_free(c1), ac_ctx_free(c2);
        ac_model_free(m);
        free(buf);
    }
}

/* ---- names that do not run ----------------------------------------------------------------- */
static void test_backend_errors(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    uint8_t *buf;
    size_t size;
    assert_int_equal(ref_build(&s, &buf, &size), AC_OK);
    ac_model *m = load(buf, size, 1);
    ac_ctx_params p = ac_ctx_default_params();
    ac_ctx *c = (ac_ctx *)&p; /* must be cleared on failure */
    p.backend = "tpu";
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_ERR_ARG);
    assert_null(c);
    assert_non_null(strstr(ac_last_error(), "unknown backend 'tpu'"));
    assert_non_null(strstr(ac_last_error(), "cpu or cuda"));
    p.backend = "CPU"; /* names are exact */
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_ERR_ARG);

    p.backend = "cuda";
    int rc = ac_ctx_new(m, &p, &c);
#ifdef AC_HAVE_CUDA
    if (!ac_cuda_available()) {
        assert_int_equal(rc, AC_ERR_UNSUPPORTED);
        assert_null(c);
        assert_non_null(strstr(ac_last_error(), "backend 'cuda' cannot run here: no CUDA device"));
        printf("  cuda without a device: %s\n", ac_last_error());
    } else { /* a GPU machine: the GPU's forward, near the CPU's (bf16 weights) */
        assert_int_equal(rc, AC_OK);
        assert_string_equal(ac_ctx_backend(c), "cuda");
        ac_ctx *cc = ctx_with(m, "cpu", AC_GEMM_AUTO);
        outs g, r;
        run(c, m, &g), run(cc, m, &r);
        double dot = 0;
        for (size_t i = 0; i < r.np; i++) dot += (double)g.pooled[i] * r.pooled[i]; /* normalised: cosines */
        assert_true(dot / 3 > 0.999);
        outs_free(&g), outs_free(&r);
        ac_ctx_free(cc);
        ac_ctx_free(c);
    }
#else
    assert_int_equal(rc, AC_ERR_UNSUPPORTED);
    assert_null(c);
    assert_non_null(strstr(ac_last_error(), "built without the CUDA backend"));
    printf("  cuda in a build without it: %s\n", ac_last_error());
#endif
    /* the checks every backend shares come first, whatever the name */
    p.backend = "tpu";
    p.n_threads = -1;
    assert_int_equal(ac_ctx_new(m, &p, &c), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "n_threads"));
    ac_model_free(m);
    free(buf);
}

/* ---- the lazy preparation under concurrency ---------------------------------------------- */
enum { N_THREADS = 4, ROUNDS = 3 };

typedef struct job {
    const ac_model *m;
    pthread_barrier_t *bar;
    int gemm, level; /* level -1: the one in use */
    ac_ctx *c;
    int rc;
    char err[256];
} job;

static void *job_run(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->bar);
    if (j->level >= 0) ac_cpu_set_level(j->level); /* process-wide: the other thread may change it again */
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 1;
    p.gemm = j->gemm;
    j->rc = ac_ctx_new(j->m, &p, &j->c);
    if (j->rc) snprintf(j->err, sizeof j->err, "%s", ac_last_error());
    return NULL;
}

/* ctx's output, run at the level it was made for, against a context made alone (same
 * parameters, same level) on a freshly loaded model */
static void check_alone(ac_ctx *c, const uint8_t *buf, size_t size, int f32_math, int gemm) {
    assert_int_equal(ac_cpu_set_level(c->level), AC_OK);
    outs a, b;
    run(c, c->loaded, &a);
    ac_model *m1 = load(buf, size, f32_math);
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 1;
    p.gemm = gemm;
    ac_ctx *c1 = NULL;
    assert_int_equal(ac_ctx_new(m1, &p, &c1), AC_OK);
    assert_int_equal(c1->model->pack, c->model->pack);
    run(c1, m1, &b);
    outs_equal(&a, &b);
    outs_free(&a), outs_free(&b);
    ac_ctx_free(c1);
    ac_model_free(m1);
}

static void race(const uint8_t *buf, size_t size, int f32_math, const int *gemm, const int *level, const char *what) {
    for (int r = 0; r < ROUNDS; r++) {
        ac_model *m = load(buf, size, f32_math);
        assert_non_null(m->preps); /* where contexts keep what they prepare */
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, N_THREADS);
        job jobs[N_THREADS];
        pthread_t th[N_THREADS];
        for (int t = 0; t < N_THREADS; t++) {
            jobs[t] = (job){m, &bar, gemm[t], level ? level[t] : -1, NULL, 0, ""};
            assert_int_equal(pthread_create(&th[t], NULL, job_run, &jobs[t]), 0);
        }
        for (int t = 0; t < N_THREADS; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
        pthread_barrier_destroy(&bar);
        for (int t = 0; t < N_THREADS; t++) {
            if (jobs[t].rc) fprintf(stderr, "thread %d: %s\n", t, jobs[t].err);
            assert_int_equal(jobs[t].rc, AC_OK);
        }
        for (int t = 0; t < N_THREADS; t++) { /* a layout fits the level its context was made at */
            const ac_ctx *c = jobs[t].c;
            if (c->model->pack == AC_PACK_BF16) assert_true(c->level >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16);
            for (int u = 0; u < N_THREADS; u++) /* one preparation per layout, shared */
                if (jobs[u].c->model->pack == c->model->pack && c->model != m) assert_ptr_equal(jobs[u].c->model, c->model);
        }
        for (int t = 0; t < N_THREADS; t++) check_alone(jobs[t].c, buf, size, f32_math, gemm[t]);
        if (r == 0) {
            printf("  %s: layouts", what);
            for (int t = 0; t < N_THREADS; t++)
                printf(" %d@%s", jobs[t].c->model->pack, ac_cpu_level_name(jobs[t].c->level));
            printf("\n");
        }
        for (int t = 0; t < N_THREADS; t++) ac_ctx_free(jobs[t].c);
        ac_model_free(m);
        ac_cpu_set_level(-1);
    }
}

static void test_prepare_race(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    s.wtype = GGML_F16;
    s.n_embd = 128, s.n_ff = 256, s.n_head = 4, s.n_head_kv = 2; /* enough work for the threads to overlap */
    uint8_t *buf;
    size_t size;
    assert_int_equal(ref_build(&s, &buf, &size), AC_OK);
    /* the loader prepares nothing */
    ac_model *m = load(buf, size, 1);
    assert_int_equal(m->pack, AC_PACK_NONE);
    for (int il = 0; il < m->hp.n_layer; il++) assert_null(m->layers[il].wq.packed), assert_null(m->layers[il].wq.f32);
    ac_model_free(m);

    const int same[N_THREADS] = {AC_GEMM_AUTO, AC_GEMM_AUTO, AC_GEMM_AUTO, AC_GEMM_AUTO};
    race(buf, size, 1, same, NULL, "exact, one layout (f32) wanted by 4 threads");
    race(buf, size, 0, same, NULL, "fast, one layout wanted by 4 threads");
#ifdef AC_HAVE_DNNL
    const int mixed[N_THREADS] = {AC_GEMM_AUTO, AC_GEMM_DNNL, AC_GEMM_OPENBLAS, AC_GEMM_AUTO};
#else
    const int mixed[N_THREADS] = {AC_GEMM_AUTO, AC_GEMM_NAIVE, AC_GEMM_OPENBLAS, AC_GEMM_AUTO};
#endif
    race(buf, size, 0, mixed, NULL, "fast, own/oneDNN/OpenBLAS contexts at once");
    if (ac_cpu_hw_level() >= AC_CPU_AVX2) { /* two CPU levels: two layouts in the fast mode */
        const int hi = ac_cpu_hw_level(), lv[N_THREADS] = {hi, hi - 1, hi, hi - 1};
        race(buf, size, 0, same, lv, "fast, contexts at two CPU levels at once");
    }
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_is_default),
        cmocka_unit_test(test_backend_errors),
        cmocka_unit_test(test_prepare_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
