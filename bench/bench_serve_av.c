/* bench_serve_av.c — a served head's A.V from stored codec rows against the fused exact
 * attention of the same head, at one length: what per-head serving saves per served head
 * (docs/CACHE.md "IMDB with the Q/K projection skip").
 *
 *   bench_serve_av [-L 380] [--longer 40] [-r 20]
 *
 * One thread (the caller), 12 heads of 32 (MiniLM). Q, K, V random; the entry's map: random
 * softmax rows of L + longer tokens (a longer bidirectional entry, as IMDB's serve), encoded
 * with q8, topk16 and topk32. Times, best of r: the fused kernel (QK^T, softmax, A.V) over the
 * 12 heads; the stored rows' A.V (ac_codec_av_row over the first L columns) without and with the
 * renormalisation the cache applies (ac_codec_row_mass); each as a ratio to the fused kernel.
 * Both run side by side in one process: on a loaded machine compare the ratios, not the times. */
#define _ISOC11_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "cache/codec.h"
#include "forward/forward.h"
#include "util/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 12345;
static float frand(void) { /* [-0.5, 0.5) */
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rs >> 40) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv) {
    int L = 380, more = 40, R = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-L") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--longer") && i + 1 < argc) more = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) R = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_serve_av [-L 380] [--longer 40] [-r 20]\n");
            return 1;
        }
    }
    if (L < 2 || L > 4096 || more < 0 || more > 4096 || R < 1) {
        fprintf(stderr, "bench_serve_av: L 2-4096, --longer 0-4096, r >= 1\n");
        return 1;
    }
    const int H = 12, hd = 32, D = H * hd, Le = L + more;
    float *q = malloc(sizeof(float) * L * D), *k = malloc(sizeof(float) * L * D); /* [L][D] */
    float *v = malloc(sizeof(float) * Le * D), *o = malloc(sizeof(float) * L * D); /* [Le][D], [L][D] */
    float *P = malloc(sizeof(float) * Le * Le);                                     /* [Le][Le] */
    if (!q || !k || !v || !o || !P) return 1;
    for (int i = 0; i < L * D; i++) q[i] = 4 * frand(), k[i] = 4 * frand();
    for (int i = 0; i < Le * D; i++) v[i] = frand();
    for (int t = 0; t < Le; t++) { /* a softmax row of spread logits */
        double s = 0;
        for (int j = 0; j < Le; j++) s += P[(size_t)t * Le + j] = expf(8 * frand());
        for (int j = 0; j < Le; j++) P[(size_t)t * Le + j] = (float)(P[(size_t)t * Le + j] / s);
    }
    ac_attn_args a = {q, k, v, o, L, H, H, hd, D, D, 0, 1.0f / sqrtf((float)hd), NULL, 0, 0, 0, 0, NULL};
    float *kt = aligned_alloc(64, (ac_attn_kt_floats(&a) * sizeof(float) + 63) / 64 * 64); /* 64-byte aligned */
    if (!kt) return 1;
    double tf = 1e30;
    for (int r = 0; r < R; r++) {
        const double t0 = now();
        if (ac_attn_fused(&a, kt, NULL) != AC_OK) return 1;
        tf = fmin(tf, now() - t0);
    }
    printf("L %d (entry of %d), 12 heads of 32, one thread: fused attention %.3f ms\n", L, Le, 1e3 * tf);
    const char *names[] = {"q8", "topk16", "topk32"};
    for (int ci = 0; ci < 3; ci++) {
        ac_map_codec c;
        if (ac_codec_parse(names[ci], &c) != AC_OK) return 1;
        uint8_t *m = malloc(ac_codec_map_bytes(&c, Le));
        if (!m || ac_codec_encode(&c, P, Le, m) != AC_OK) return 1;
        double best[2] = {1e30, 1e30};
        for (int renorm = 0; renorm < 2; renorm++)
            for (int r = 0; r < R; r++) {
                const double t0 = now();
                for (int h = 0; h < H; h++) /* (every head reads the one map: the codec's cost, not the cache's) */
                    for (int t = 0; t < L; t++) {
                        const uint8_t *row = m + ac_codec_row_offset(&c, Le, t);
                        float *ot = o + (size_t)t * D + h * hd;
                        ac_codec_av_row(&c, row, L, v + h * hd, D, hd, ot);
                        if (renorm) {
                            const float inv = (float)(1.0 / ac_codec_row_mass(&c, row, Le, L));
                            for (int d = 0; d < hd; d++) ot[d] *= inv;
                        }
                    }
                best[renorm] = fmin(best[renorm], now() - t0);
            }
        printf("  %-7s stored rows' A.V %.3f ms (%.2fx the fused kernel), renormalised %.3f ms (%.2fx)\n", names[ci],
               1e3 * best[0], best[0] / tf, 1e3 * best[1], best[1] / tf);
        free(m);
    }
    free(q), free(k), free(v), free(o), free(P), free(kt);
    return 0;
}
