/* norm_impl.h — RMSNorm, LayerNorm and RoPE in plain C, included by each
 * level's file (ops.c, ops_avx2.c, ops_avx512.c) with NORM_FN(name) naming
 * its copy: the compiler vectorises them for that level, and fuses multiply-
 * adds where the level has FMA, so a level's results do not depend on the
 * flags the rest of the build uses (AC_NATIVE). */
#include <math.h>
#include <stddef.h>

/* ---- norms (double accumulation of the sums: cheap at these sizes, and exact enough
 * that the result does not depend on vector width) -------------------------------------
 * The sums run in NL = 8 double lanes (element i into lane i % 8, lanes added in a fixed
 * tree at the end): the same additions in the same order at every level, which the compiler
 * turns into vector adds (one running double sum was a chain of dependent adds, ~1 us per
 * row of 384: 6% of MiniLM's time at the AVX-512 level). */
#define NL 8

static inline double NORM_FN(lanes_sum)(const double a[NL]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

void NORM_FN(ac_rmsnorm)(float *out, const float *x, const float *w, int n, float eps) {
    double a[NL] = {0};
    int i = 0;
    for (; i + NL <= n; i += NL)
        for (int l = 0; l < NL; l++) a[l] += (double)x[i + l] * x[i + l];
    for (int l = 0; i < n; i++, l++) a[l] += (double)x[i] * x[i];
    const double ss = NORM_FN(lanes_sum)(a);
    float s = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

void NORM_FN(ac_layernorm)(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    double a[NL] = {0};
    int i = 0;
    for (; i + NL <= n; i += NL)
        for (int l = 0; l < NL; l++) a[l] += x[i + l];
    for (int l = 0; i < n; i++, l++) a[l] += x[i];
    const double mean = NORM_FN(lanes_sum)(a) / n;
    for (int l = 0; l < NL; l++) a[l] = 0;
    for (i = 0; i + NL <= n; i += NL)
        for (int l = 0; l < NL; l++) {
            const double d = x[i + l] - mean;
            a[l] += d * d;
        }
    for (int l = 0; i < n; i++, l++) {
        const double d = x[i] - mean;
        a[l] += d * d;
    }
    const double var = NORM_FN(lanes_sum)(a) / n;
    float s = (float)(1.0 / sqrt(var + eps)), mu = (float)mean;
    for (i = 0; i < n; i++) out[i] = (x[i] - mu) * s * w[i] + (b ? b[i] : 0.0f);
}
#undef NL

/* ---- RoPE ------------------------------------------------------------------------------------ */
void NORM_FN(ac_rope_row)(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * hd;
        if (!neox) {
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                float a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c - b * s;
                v[2 * i + 1] = a * s + b * c;
            }
        } else {
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = a * s + b * c;
            }
        }
    }
}

