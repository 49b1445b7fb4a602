/* bench_gemm.c — the own GEMM alone on the Llama-1B / BERT-base / MiniLM projection
 * shapes, timed in CPU seconds of the process (CLOCK_PROCESS_CPUTIME_ID), so that a
 * machine loaded by other jobs changes the figure less than a wall-clock time would
 * (cache sharing and clock still do: compare builds or variants side by side).
 *
 *   bench_gemm [--cpu avx512|avx2|scalar] [-M 128] [-t 1] [-r 5] [--shape llama1b|bert|minilm|attnlm]
 *              [--wtype f32|f16] [--panels] [--f16-panels] [--flush MB]
 *
 * Prints, per projection (Q, K, O, gate+up SwiGLU, down), the best of r runs in
 * GFLOP per CPU-second (2*M*N*K per job). --wtype f16 hands the kernels F16 weights
 * without an f32 copy (W->f32 NULL), where the level converts them into its panels.
 * --panels: the weights copied once into the F32 tasks' panels first (AC_PACK_F32P, what the
 * CPU backend does for a model's matrices), so the tasks read them in place. --f16-panels (with
 * --wtype f16): kept in f16 in those panels (AC_PACK_F16P), widened by each task. --flush MB:
 * before each run, MB MiB are written (untimed), so the weights come from memory as in a
 * forward whose other work (attention, other layers) evicted them. */
#define _POSIX_C_SOURCE 200809L
#include "attncache.h"
#include "forward/forward.h"
#include "load/gguf.h"
#include "load/model.h"
#include "ref_forward.h"
#include "util/common.h"
#include "util/cpu.h"
#include "util/fp16.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float urand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(*s >> 40) / 16777216.0f - 0.5f;
}

/* a weight matrix [n][k] of random values, as F32 (in place) or F16 (f32 NULL) */
static ac_mat make_mat(const char *name, int n, int k, int f16, uint64_t *rs, void **own) {
    ac_mat m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", name);
    m.n_out = n, m.n_in = k;
    float *w = malloc((size_t)n * k * sizeof *w);
    for (size_t i = 0; i < (size_t)n * k; i++) w[i] = 0.05f * urand(rs);
    if (!f16) {
        m.type = GGML_F32, m.row_bytes = (size_t)k * 4, m.data = w, m.f32 = w;
        *own = w;
        return m;
    }
    uint16_t *h = malloc((size_t)n * k * sizeof *h);
    for (size_t i = 0; i < (size_t)n * k; i++) h[i] = ac_fp32_to_fp16(w[i]);
    free(w);
    m.type = GGML_F16, m.row_bytes = (size_t)k * 2, m.data = h, m.f32 = NULL;
    *own = h;
    return m;
}

int main(int argc, char **argv) {
    const char *cpu = NULL, *shape = "llama1b", *wtype = "f32";
    int M = 128, threads = 1, reps = 5, panels = 0, f16p = 0, flush_mb = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--cpu") && v) cpu = v, i++;
        else if (!strcmp(a, "-M") && v) M = atoi(v), i++;
        else if (!strcmp(a, "-t") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "-r") && v) reps = atoi(v), i++;
        else if (!strcmp(a, "--shape") && v) shape = v, i++;
        else if (!strcmp(a, "--wtype") && v) wtype = v, i++;
        else if (!strcmp(a, "--panels")) panels = 1;
        else if (!strcmp(a, "--f16-panels")) f16p = 1;
        else if (!strcmp(a, "--flush") && v) flush_mb = atoi(v), i++;
        else {
            fprintf(stderr, "usage: %s [--cpu L] [-M rows] [-t threads] [-r reps] [--shape llama1b|bert|minilm] "
                            "[--wtype f32|f16] [--panels]\n", argv[0]);
            return 2;
        }
    }
    if (M < 1 || reps < 1 || threads < 1) return 2;
    if (cpu) {
        int lv = !strcmp(cpu, "avx512") ? AC_CPU_AVX512 : !strcmp(cpu, "avx2") ? AC_CPU_AVX2 : AC_CPU_SCALAR;
        if (ac_cpu_set_level(lv) != AC_OK) {
            fprintf(stderr, "level %s: %s\n", cpu, ac_last_error());
            return 1;
        }
    }
    int D, Q, KV, F;
    if (!strcmp(shape, "llama1b")) D = 2048, Q = 2048, KV = 512, F = 8192;
    else if (!strcmp(shape, "bert")) D = 768, Q = 768, KV = 768, F = 3072;
    else if (!strcmp(shape, "attnlm")) D = 256, Q = 256, KV = 64, F = 704; /* models/attnlm-8k.gguf */
    else D = 384, Q = 384, KV = 384, F = 1536; /* minilm */
    const int f16 = !strcmp(wtype, "f16");
    /* a small model only for the context (pool, level, scratch) */
    ref_spec sp = ref_spec_default(AC_ARCH_LLAMA);
    uint8_t *buf;
    size_t size;
    ac_model *model;
    ac_ctx *ctx;
    if (ref_build(&sp, &buf, &size) || ac_model_load_memory(buf, size, NULL, AC_LOAD_NO_VOCAB, &model)) return 1;
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = threads;
    if (ac_ctx_new(model, &p, &ctx)) {
        fprintf(stderr, "ctx: %s\n", ac_last_error());
        return 1;
    }
    uint64_t rs = 7;
    void *own[6];
    ac_mat wq = make_mat("wq", Q, D, f16, &rs, &own[0]), wk = make_mat("wk", KV, D, f16, &rs, &own[1]);
    ac_mat wo = make_mat("wo", D, Q, f16, &rs, &own[2]), wg = make_mat("wg", F, D, f16, &rs, &own[3]);
    ac_mat wu = make_mat("wu", F, D, f16, &rs, &own[4]), wd = make_mat("wd", D, F, f16, &rs, &own[5]);
    ac_mat *all[6] = {&wq, &wk, &wo, &wg, &wu, &wd};
    for (int i = 0; i < 6 && (panels || f16p); i++)
        if ((f16p ? ac_f16_panel_pack(all[i]) : ac_f32_panel_pack(all[i])) != AC_OK) {
            fprintf(stderr, "%s: %s\n", all[i]->name, ac_last_error());
            return 1;
        }
    const int maxk = F > D ? F : D;
    float *X = malloc((size_t)M * maxk * sizeof *X), *Y = malloc((size_t)M * maxk * sizeof *Y);
    for (size_t i = 0; i < (size_t)M * maxk; i++) X[i] = urand(&rs), Y[i] = 0;
    struct { const char *name; ac_mat *w, *up; int epi; } jobs[] = {
        {"q", &wq, NULL, AC_EPI_STORE}, {"k", &wk, NULL, AC_EPI_STORE}, {"o", &wo, NULL, AC_EPI_ACCUM},
        {"gate+up", &wg, &wu, AC_EPI_SWIGLU}, {"down", &wd, NULL, AC_EPI_ACCUM}};
    const size_t flush_n = (size_t)flush_mb << 18; /* floats */
    float *flush = flush_n ? malloc(flush_n * sizeof *flush) : NULL;
    printf("level %s, kernel %s, shape %s, %s weights%s, M %d, threads %d, best of %d (GFLOP per CPU-second)%s\n",
           ac_cpu_level_name(ac_cpu_level()), ac_own_gemm_kernel(ac_cpu_level(), 0), shape, wtype,
           f16p ? " in f16 panels" : panels ? " in panels" : "", M, threads, reps, flush ? ", caches flushed" : "");
    double tot_f = 0, tot_t = 0;
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        ac_act a = {X, M, jobs[i].w->n_in, NULL, 0};
        ac_gemm_job j = {jobs[i].w, jobs[i].up, &a, Y, NULL, NULL, jobs[i].epi, NULL, 0};
        const double fl = 2.0 * M * jobs[i].w->n_out * jobs[i].w->n_in * (jobs[i].up ? 2 : 1);
        double best = 1e30;
        for (int r = 0; r <= reps; r++) { /* r = 0: warm-up */
            for (size_t f = 0; f < flush_n; f += 16) flush[f] += 1.0f;
            double t0 = cpu_s();
            if (ac_own_gemm_run(ctx, &j, 1) != AC_OK) {
                fprintf(stderr, "%s: %s\n", jobs[i].name, ac_last_error());
                return 1;
            }
            double t = cpu_s() - t0;
            if (r && t < best) best = t;
        }
        tot_f += fl, tot_t += best;
        printf("  %-8s N %5d K %5d  %7.1f GFLOP/cpu-s\n", jobs[i].name, jobs[i].w->n_out, jobs[i].w->n_in, fl / best * 1e-9);
    }
    printf("  all      %7.1f GFLOP/cpu-s\n", tot_f / tot_t * 1e-9);
    for (int i = 0; i < 6; i++) free(own[i]), free(all[i]->packed);
    free(X), free(Y), free(flush);
    ac_ctx_free(ctx);
    ac_model_free(model);
    free(buf);
    return 0;
}
