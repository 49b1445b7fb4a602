/* ops.c — element-wise CPU kernels of the forward pass: norms, activations,
 * RoPE, exp, f32 -> bf16. exp, SiLU and GELU have a form per CPU level
 * (ops_avx512.c, ops_avx2.c, ops_neon.c on aarch64, the portable C here,
 * which the compiler vectorises), picked at each call from ac_cpu_level(); norms and RoPE are
 * the same C compiled once per level (norm_impl.h). Within a level each has one code path for all
 * elements (masked tails), so a value never depends on its position in a
 * buffer: batched and single runs agree bitwise. f32 -> bf16 rounds the same
 * way on every path (VCVTNEPS2BF16 where present). */
#include "forward/forward.h"
#include "util/common.h"

#include "simd.h"
#include "util/cpu.h"

#include <math.h>
#include <string.h>

/* Per-level forms (ops_avx2.c, ops_avx512.c). */
void ac_vexp_avx2(float *x, int n);
void ac_vexp_avx512(float *x, int n);
void ac_silu_mul_avx2(float *g, const float *u, int n);
void ac_silu_mul_avx512(float *g, const float *u, int n);
void ac_gelu_erf_avx2(float *x, int n);
void ac_gelu_erf_avx512(float *x, int n);
size_t ac_f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n);
void ac_vexp_neon(float *x, int n);
void ac_silu_mul_neon(float *g, const float *u, int n);
void ac_gelu_erf_neon(float *x, int n);

/* X86(...), ARM(...): the per-level cases, compiled only where those files are
 * (x86-64; aarch64) */
#if defined(__x86_64__) || defined(__i386__)
#define LEVEL() ac_cpu_level()
#define X86(...) __VA_ARGS__
#define ARM(...)
#elif defined(__aarch64__)
#define LEVEL() ac_cpu_level()
#define X86(...)
#define ARM(...) __VA_ARGS__
#else
#define LEVEL() AC_CPU_SCALAR
#define X86(...)
#define ARM(...)
#endif

float ac_expf(float x) { return ac_expf_c(x); }

void ac_vexp(float *x, int n) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_vexp_avx512(x, n); return;
        case AC_CPU_AVX2: ac_vexp_avx2(x, n); return;
    )
    ARM(case AC_CPU_NEON: ac_vexp_neon(x, n); return;)
    default:
        for (int i = 0; i < n; i++) x[i] = ac_expf_c(x[i]);
    }
}

/* ---- norms and RoPE: norm_impl.h, one copy per level ------------------------------------------- */
#define NORM_FN(name) name##_scalar
#include "norm_impl.h"
#undef NORM_FN
void ac_rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps);
void ac_rmsnorm_avx512(float *out, const float *x, const float *w, int n, float eps);
void ac_layernorm_avx2(float *out, const float *x, const float *w, const float *b, int n, float eps);
void ac_layernorm_avx512(float *out, const float *x, const float *w, const float *b, int n, float eps);
void ac_rope_row_avx2(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs);
void ac_rope_row_avx512(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs);

void ac_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_rmsnorm_avx512(out, x, w, n, eps); return;
        case AC_CPU_AVX2: ac_rmsnorm_avx2(out, x, w, n, eps); return;
    )
    default: ac_rmsnorm_scalar(out, x, w, n, eps);
    }
}

void ac_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_layernorm_avx512(out, x, w, b, n, eps); return;
        case AC_CPU_AVX2: ac_layernorm_avx2(out, x, w, b, n, eps); return;
    )
    default: ac_layernorm_scalar(out, x, w, b, n, eps);
    }
}

void ac_rope_row(float *x, int n_heads, int hd, int n_rot, int neox, const float *cs) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_rope_row_avx512(x, n_heads, hd, n_rot, neox, cs); return;
        case AC_CPU_AVX2: ac_rope_row_avx2(x, n_heads, hd, n_rot, neox, cs); return;
    )
    default: ac_rope_row_scalar(x, n_heads, hd, n_rot, neox, cs);
    }
}

/* ---- activations ------------------------------------------------------------------------ */
void ac_silu_mul(float *g, const float *u, int n) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_silu_mul_avx512(g, u, n); return;
        case AC_CPU_AVX2: ac_silu_mul_avx2(g, u, n); return;
    )
    ARM(case AC_CPU_NEON: ac_silu_mul_neon(g, u, n); return;)
    default:
        for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + ac_expf_c(-g[i])) * u[i];
    }
}

void ac_gelu_erf(float *x, int n) {
    switch (LEVEL()) {
    X86(
        case AC_CPU_AVX512: ac_gelu_erf_avx512(x, n); return;
        case AC_CPU_AVX2: ac_gelu_erf_avx2(x, n); return;
    )
    ARM(case AC_CPU_NEON: ac_gelu_erf_neon(x, n); return;)
    default:
        for (int i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + ac_erf_c(x[i] * 0.70710678118654752f));
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
#if defined(__x86_64__) || defined(__i386__)
    if (ac_cpu_bf16()) i = ac_f32_to_bf16_avx512(dst, src, n);
#endif
    for (; i < n; i++) dst[i] = bf16_rne(src[i]);
}
