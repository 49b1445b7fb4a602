/* norm_impl.h — RMSNorm, LayerNorm and RoPE in plain C, included by each
 * level's file (ops.c, ops_avx2.c, ops_avx512.c) with NORM_FN(name) naming
 * its copy: the compiler vectorises them for that level, and fuses multiply-
 * adds where the level has FMA, so a level's results do not depend on the
 * flags the rest of the build uses (AC_NATIVE). */
#include <math.h>
#include <stddef.h>

/* ---- norms (double accumulation of the sums: cheap at these sizes, and exact enough
 * that the result does not depend on vector width) ------------------------------------- */
void NORM_FN(ac_rmsnorm)(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

void NORM_FN(ac_layernorm)(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    var /= n;
    float s = (float)(1.0 / sqrt(var + eps)), mu = (float)mean;
    for (int i = 0; i < n; i++) out[i] = (x[i] - mu) * s * w[i] + (b ? b[i] : 0.0f);
}

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

