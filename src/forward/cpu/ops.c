/* ops.c — element-wise CPU kernels of the forward pass: norms, activations,
 * RoPE, exp, f32 -> bf16. Each has one code path for all elements (AVX-512
 * with masked tails when compiled for it, plain C otherwise), so a value never
 * depends on its position in a buffer: batched and single runs agree bitwise. */
#include "forward/forward.h"
#include "util/common.h"

#include "simd.h"

#include <math.h>
#include <string.h>

float ac_expf(float x) {
    if (x != x) return x;
    if (x < EXP_LO) return 0.0f;
    if (x > EXP_HI) return INFINITY;
    float n = nearbyintf(x * LOG2E);
    float r = fmaf(n, -LN2_HI, x);
    r = fmaf(n, -LN2_LO, r);
    float p = EXP_P0;
    p = fmaf(p, r, EXP_P1);
    p = fmaf(p, r, EXP_P2);
    p = fmaf(p, r, EXP_P3);
    p = fmaf(p, r, EXP_P4);
    p = fmaf(p, r, EXP_P5);
    float r2 = r * r;
    p = fmaf(p, r2, r + 1.0f);
    return ldexpf(p, (int)n);
}

void ac_vexp(float *x, int n) {
#ifdef AC_AVX512
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, ac_exp512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, ac_exp512(_mm512_maskz_loadu_ps(m, x + i)));
    }
#else
    for (int i = 0; i < n; i++) x[i] = ac_expf(x[i]);
#endif
}

/* ---- norms (double accumulation of the sums: cheap at these sizes, and exact enough
 * that the result does not depend on vector width) ------------------------------------- */
void ac_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

void ac_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
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

/* ---- activations ------------------------------------------------------------------------ */
void ac_silu_mul(float *g, const float *u, int n) {
#ifdef AC_AVX512
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 e = ac_exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, uv));
    }
#else
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + ac_expf(-g[i])) * u[i];
#endif
}

#ifndef AC_AVX512
static float erf_approx(float x) {
    x = fminf(fmaxf(x, -4.0f), 4.0f);
    float x2 = x * x;
    float p = ERF_A13;
    p = fmaf(p, x2, ERF_A11);
    p = fmaf(p, x2, ERF_A9);
    p = fmaf(p, x2, ERF_A7);
    p = fmaf(p, x2, ERF_A5);
    p = fmaf(p, x2, ERF_A3);
    p = fmaf(p, x2, ERF_A1);
    p *= x;
    float q = ERF_B8;
    q = fmaf(q, x2, ERF_B6);
    q = fmaf(q, x2, ERF_B4);
    q = fmaf(q, x2, ERF_B2);
    q = fmaf(q, x2, ERF_B0);
    return p / q;
}
#endif

void ac_gelu_erf(float *x, int n) {
    const float inv_sqrt2 = 0.70710678118654752f;
#ifdef AC_AVX512
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), is2 = _mm512_set1_ps(inv_sqrt2);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = ac_erf512(_mm512_mul_ps(v, is2));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
    }
#else
    for (int i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erf_approx(x[i] * inv_sqrt2));
#endif
}

/* ---- RoPE ------------------------------------------------------------------------------------ */
void ac_rope_row(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs) {
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

/* ---- f32 -> bf16 -------------------------------------------------------------------------------- */
static inline uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);  /* denormal -> 0, as VCVTNEPS2BF16 */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void ac_f32_to_bf16(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
    for (; i + 16 <= n; i += 16) {
        __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)b);
    }
#endif
    for (; i < n; i++) dst[i] = bf16_rne(src[i]);
}
