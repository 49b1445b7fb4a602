/* bench_forward.c — prefill throughput of the forward stage on synthetic models
 * with real shapes (random weights; the speed does not depend on the values).
 *
 *   bench_forward [--model llama1b|bert-base|tiny] [--type f16|f32|bf16|q8_0]
 *                 [-L 128,512] [-t THREADS] [-r REPS] [--gemm auto|openblas|onednn|naive]
 *                 [--attn fused|materialized] [--layers N] [--dir /tmp]
 *
 * The model is written once as a GGUF under --dir (reused when present), then
 * loaded through the normal path (mmap + packing). For each L: one warm-up run,
 * REPS timed runs of one sequence of L random ids; prints tokens/s (best,
 * median) and the per-stage split of the timed runs. Decoders also compute the
 * last position's logits (as llama.cpp's prefill does), BERT the pooled output. */
#define _POSIX_C_SOURCE 200809L
#include "attncache.h"
#include "load/gguf.h"
#include "ref_forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_type(const char *s, uint32_t *t) {
    if (!strcmp(s, "f32")) *t = GGML_F32;
    else if (!strcmp(s, "f16")) *t = GGML_F16;
    else if (!strcmp(s, "bf16")) *t = GGML_BF16;
    else if (!strcmp(s, "q8_0")) *t = GGML_Q8_0;
    else return 0;
    return 1;
}

int main(int argc, char **argv) {
    const char *model = "llama1b", *type = "f16", *lens = "128,512", *dir = "/tmp", *gemm_s = "auto", *attn_s = "fused";
    int threads = 2, reps = 3, layers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = v, i++;
        else if (!strcmp(a, "--type") && v) type = v, i++;
        else if (!strcmp(a, "-L") && v) lens = v, i++;
        else if (!strcmp(a, "-t") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "-r") && v) reps = atoi(v), i++;
        else if (!strcmp(a, "--gemm") && v) gemm_s = v, i++;
        else if (!strcmp(a, "--attn") && v) attn_s = v, i++;
        else if (!strcmp(a, "--layers") && v) layers = atoi(v), i++;
        else if (!strcmp(a, "--dir") && v) dir = v, i++;
        else {
            fprintf(stderr, "usage: %s [--model llama1b|bert-base|tiny] [--type f16|f32|bf16|q8_0] [-L 128,512] "
                            "[-t THREADS] [-r REPS] [--gemm auto|openblas|onednn|naive] [--attn fused|materialized] "
                            "[--layers N] [--dir DIR]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000) reps = 3;
    ref_spec s;
    if (!strcmp(model, "llama1b")) { /* Llama-3.2-1B shapes */
        s = ref_spec_default(AC_ARCH_LLAMA);
        s.n_embd = 2048, s.n_layer = 16, s.n_head = 32, s.n_head_kv = 8, s.n_ff = 8192, s.n_vocab = 128256;
        s.n_ctx = 4096, s.rope_base = 500000.0f, s.tied = 1;
    } else if (!strcmp(model, "bert-base")) {
        s = ref_spec_default(AC_ARCH_BERT);
        s.n_embd = 768, s.n_layer = 12, s.n_head = 12, s.n_head_kv = 12, s.n_ff = 3072, s.n_vocab = 30522, s.n_ctx = 512;
    } else if (!strcmp(model, "tiny")) {
        s = ref_spec_default(AC_ARCH_LLAMA);
        s.n_ctx = 1024;
    } else {
        fprintf(stderr, "unknown model '%s'\n", model);
        return 2;
    }
    if (layers > 0) s.n_layer = layers;
    if (!parse_type(type, &s.wtype)) {
        fprintf(stderr, "unknown type '%s'\n", type);
        return 2;
    }
    s.seed = 42;
    char path[512];
    snprintf(path, sizeof path, "%s/ac_bench_%s_%s_%dl.gguf", dir, model, type, s.n_layer);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "writing %s ...\n", path);
        double t0 = now_s();
        ac_gguf_writer *w;
        if (ref_build_writer(&s, &w) != AC_OK || ac_gguf_w_write(w, path, 3) != AC_OK) {
            fprintf(stderr, "cannot build %s: %s\n", path, ac_last_error());
            return 1;
        }
        ac_gguf_writer_free(w);
        fprintf(stderr, "  %.1f s\n", now_s() - t0);
    }
    double t0 = now_s();
    ac_model *m;
    if (ac_model_load(path, NULL, &m) != AC_OK) {
        fprintf(stderr, "load %s: %s\n", path, ac_last_error());
        return 1;
    }
    double t_load = now_s() - t0;
    ac_model_info in;
    ac_model_get_info(m, &in);
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = threads;
    p.profile = 1;
    p.gemm = !strcmp(gemm_s, "openblas") ? AC_GEMM_OPENBLAS
             : !strcmp(gemm_s, "onednn")  ? AC_GEMM_DNNL
             : !strcmp(gemm_s, "naive")   ? AC_GEMM_NAIVE
                                          : AC_GEMM_AUTO;
    p.attn = !strcmp(attn_s, "materialized") ? AC_ATTN_MATERIALIZED : AC_ATTN_FUSED;
    ac_ctx *c;
    if (ac_ctx_new(m, &p, &c) != AC_OK) {
        fprintf(stderr, "ctx: %s\n", ac_last_error());
        return 1;
    }
    printf("model %s (%s, %s weights): dim %d, %d layers, %d heads, %d kv heads, ffn %d, vocab %d; load %.2f s\n",
           model, in.arch_name, type, in.n_embd, in.n_layer, in.n_head, in.n_head_kv, in.n_ff, in.n_vocab, t_load);
    printf("threads %d, gemm %s, attention %s, reps %d\n", threads, gemm_s, attn_s, reps);
    printf("%6s %9s %9s %9s   split (%% of time)\n", "L", "tok/s", "tok/s.med", "tok/cpu-s");
    char *ls = strdup(lens);
    uint64_t rng = 42;
    float *out = malloc((size_t)(in.n_vocab > in.n_embd ? in.n_vocab : in.n_embd) * sizeof *out);
    for (char *tk = strtok(ls, ","); tk; tk = strtok(NULL, ",")) {
        int L = atoi(tk);
        if (L < 1 || L > in.n_ctx_train) {
            fprintf(stderr, "skip L=%s (1..%d)\n", tk, in.n_ctx_train);
            continue;
        }
        int32_t *ids = malloc((size_t)L * sizeof *ids);
        ref_random_tokens(&rng, ids, L, in.n_vocab);
        ac_seq q = {ids, L};
        ac_outputs o = {0};
        if (in.has_lm_head) o.logits = out;
        else o.pooled = out, o.pooling = AC_POOL_DEFAULT;
        if (ac_forward(c, &q, 1, &o) != AC_OK) { /* warm-up */
            fprintf(stderr, "forward: %s\n", ac_last_error());
            return 1;
        }
        ac_ctx_reset_profile(c);
        double *t = malloc((size_t)reps * sizeof *t), *tc = malloc((size_t)reps * sizeof *tc);
        for (int r = 0; r < reps; r++) {
            double a = now_s(), ac = cpu_s();
            ac_forward(c, &q, 1, &o);
            t[r] = now_s() - a;
            tc[r] = cpu_s() - ac;
        }
        qsort(tc, (size_t)reps, sizeof *tc, cmp_d);
        qsort(t, (size_t)reps, sizeof *t, cmp_d);
        double sec[AC_STAGE_COUNT], tot = 0;
        ac_ctx_get_profile(c, sec);
        for (int i = 0; i < AC_STAGE_COUNT; i++) tot += sec[i];
        printf("%6d %9.1f %9.1f %9.1f  ", L, L / t[0], L / t[reps / 2], L / tc[0]);
        for (int i = 0; i < AC_STAGE_COUNT; i++)
            if (sec[i] > 0) printf(" %s %.1f", ac_stage_name(i), 100.0 * sec[i] / tot);
        printf("\n");
        fflush(stdout);
        free(t);
        free(tc);
        free(ids);
    }
    free(out);
    free(ls);
    ac_ctx_free(c);
    ac_model_free(m);
    return 0;
}
