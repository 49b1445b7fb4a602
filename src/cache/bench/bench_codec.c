/* bench_codec.c — speed of the fused "decode inside A.V" kernels per codec,
 * one head, single thread, against decode-to-fp32 + OpenBLAS sgemm.
 *
 * Build (after building ac_cache in build-cache):
 *   (scripts/build.sh builds it as build/bench_codec; by hand:)
 *   gcc -O2 -march=native -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       src/cache/bench/bench_codec.c build-cache/libac_cache.a build-cache/libac_util.a \
 *       -lopenblas -lm -fopenmp -o build-cache/bench_codec
 * Run:  OPENBLAS_NUM_THREADS=1 build-cache/bench_codec
 * Maps: softmax rows with a per-row temperature drawn log-uniformly in
 * [0.05, 5] (mixed peaked/flat). Reports us per head and effective GFLOP/s
 * (2*L*L*hd dense flops, L*(L+1)*hd for causal maps). */
#include "cache/codec.h"
#include "util/common.h"
#include "util/cpu.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rs = 7;
static double unif(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * (1.0 / 9007199254740992.0);
}

static void synth(float *P, int L, int causal) {
    for (int t = 0; t < L; t++) {
        int n = causal ? t + 1 : L;
        double temp = exp(log(0.05) + unif() * (log(5.0) - log(0.05))), s = 0;
        for (int j = 0; j < L; j++) {
            double g = sqrt(-2 * log(unif() + 1e-300)) * cos(6.283185307 * unif());
            P[(size_t)t * L + j] = j < n ? (float)exp(g / temp) : 0.0f;
            s += P[(size_t)t * L + j];
        }
        for (int j = 0; j < L; j++) P[(size_t)t * L + j] = (float)(P[(size_t)t * L + j] / s);
    }
}

/* ac_codec_av one row at a time (no 2-row blocking), for comparison */
static void av_rows(const ac_map_codec *c, const uint8_t *m, int L, const float *V, int hd, float *O) {
    for (int t = 0; t < L; t++) {
        int n = ac_codec_row_n(c, L, t);
        ac_codec_av_row(c, m + ac_codec_row_offset(c, L, t), n, V, hd, hd, O + (size_t)t * hd);
    }
}

int main(void) {
    const int hd = 64;
    int Ls[] = {128, 512};
    const char *names[] = {"f32", "f16", "q8", "q4", "topk32", "f32-causal", "f16-causal", "q8-causal", "q4-causal", "topk32-causal"};
    printf("fused kernels: %s; head_dim %d; single thread\n", ac_cpu_level_name(ac_codec_simd()), hd);
    printf("timings: best of 5 interleaved rounds\n");
    printf("| L | codec | bytes/elem | fused A.V us/head | GFLOP/s | fused, 1 row at a time us | decode+sgemm us/head |\n|---|---|---|---|---|---|---|\n");
    for (int li = 0; li < 2; li++) {
        int L = Ls[li];
        float *P = (float *)mallocCheck((size_t)L * L * sizeof(float));     /* [L][L] */
        float *D = (float *)mallocCheck((size_t)L * L * sizeof(float));     /* [L][L] decoded */
        float *V = (float *)mallocCheck((size_t)L * hd * sizeof(float));    /* [L][hd] */
        float *O = (float *)mallocCheck((size_t)L * hd * sizeof(float));    /* [L][hd] */
        for (int i = 0; i < L * hd; i++) V[i] = (float)unif() - 0.5f;
        /* baseline: plain fp32 sgemm on the uncompressed map */
        synth(P, L, 0);
        int reps = L == 128 ? 2000 : 200;
        double t0, sg = 1e30;
        for (int round = 0; round < 5; round++) {
            t0 = ac_now();
            for (int r = 0; r < reps / 5; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, 1.0f, P, L, V, hd, 0.0f, O, hd);
            sg = fmin(sg, (ac_now() - t0) / (reps / 5));
        }
        printf("| %d | (fp32 sgemm, no codec) | 4.000 | %.1f | %.1f | - | - |\n", L, sg * 1e6, 2.0 * L * L * hd / sg / 1e9);
        for (size_t ci = 0; ci < sizeof names / sizeof names[0]; ci++) {
            ac_map_codec c;
            if (ac_codec_parse(names[ci], &c)) return 1;
            synth(P, L, c.causal);
            size_t mb = ac_codec_map_bytes(&c, L);
            uint8_t *m = (uint8_t *)mallocCheck(mb);
            if (ac_codec_encode(&c, P, L, m)) return 1;
            ac_codec_av(&c, m, L, V, hd, hd, O, hd); /* warm */
            double fu = 1e30, f1 = 1e30, dg = 1e30;
            for (int round = 0; round < 5; round++) {
                t0 = ac_now();
                for (int r = 0; r < reps / 5; r++) ac_codec_av(&c, m, L, V, hd, hd, O, hd);
                fu = fmin(fu, (ac_now() - t0) / (reps / 5));
                t0 = ac_now();
                for (int r = 0; r < reps / 5; r++) av_rows(&c, m, L, V, hd, O);
                f1 = fmin(f1, (ac_now() - t0) / (reps / 5));
                t0 = ac_now();
                for (int r = 0; r < reps / 20; r++) {
                    ac_codec_decode(&c, m, L, D);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, 1.0f, D, L, V, hd, 0.0f, O, hd);
                }
                dg = fmin(dg, (ac_now() - t0) / (reps / 20));
            }
            double flops = c.causal ? (double)L * (L + 1) * hd : 2.0 * L * L * hd;
            printf("| %d | %s | %.3f | %.1f | %.1f | %.1f | %.1f |\n", L, names[ci], (double)mb / ((double)L * L), fu * 1e6,
                   flops / fu / 1e9, f1 * 1e6, dg * 1e6);
            free(m);
        }
        free(P); free(D); free(V); free(O);
    }
    return 0;
}
