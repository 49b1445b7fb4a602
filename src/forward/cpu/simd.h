/* simd.h — shared AVX-512 helpers of the CPU kernels (inline). */
#ifndef AC_SIMD_H
#define AC_SIMD_H

#include <math.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define AC_AVX512 1
#endif

/* ---- exp ------------------------------------------------------------------------------
 * exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 (two-part ln 2),
 * exp(r) = 1 + r + r^2 P(r) (Cephes expf polynomial, ~1 ulp on |r| <= ln2/2).
 * Inputs below -104 (including -inf) give 0, above 88.7 give +inf. */
#define EXP_LO (-104.0f)
#define EXP_HI (88.7228f)
static const float EXP_P0 = 1.9875691500E-4f, EXP_P1 = 1.3981999507E-3f, EXP_P2 = 8.3334519073E-3f,
                   EXP_P3 = 4.1665795894E-2f, EXP_P4 = 1.6666665459E-1f, EXP_P5 = 5.0000001201E-1f;
static const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f, LOG2E = 1.44269504088896341f;

#ifdef AC_AVX512
static inline __m512 ac_exp512(__m512 x) {
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 y = _mm512_scalef_ps(p, n);
    /* below the range: exactly 0 (scalef would give a tiny denormal); NaN stays NaN */
    __mmask16 lo = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_LT_OQ);
    y = _mm512_mask_mov_ps(y, lo, _mm512_setzero_ps());
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(y, nan, x);
}
#endif

/* erf(x) as a rational function x P(x^2) / Q(x^2) on [-4, 4] (clamped outside,
 * where erf is +-1 in single precision); max abs error ~1e-7. */
static const float ERF_A1 = -1.60960333262415e-02f, ERF_A3 = -2.95459980854025e-03f,
                   ERF_A5 = -7.34990630326855e-04f, ERF_A7 = -5.69250639462346e-05f,
                   ERF_A9 = -2.10102402082508e-06f, ERF_A11 = 2.77068142495902e-08f,
                   ERF_A13 = -2.72614225801306e-10f;
static const float ERF_B0 = -1.42647390514189e-02f, ERF_B2 = -7.37332916720468e-03f,
                   ERF_B4 = -1.68282697438203e-03f, ERF_B6 = -2.13374055278905e-04f,
                   ERF_B8 = -1.45660718464996e-05f;

#ifdef AC_AVX512
static inline __m512 ac_erf512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(ERF_A13);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A11));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A9));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A7));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A5));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A3));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(ERF_A1));
    p = _mm512_mul_ps(p, x);
    __m512 q = _mm512_set1_ps(ERF_B8);
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(ERF_B6));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(ERF_B4));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(ERF_B2));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(ERF_B0));
    return _mm512_div_ps(p, q);
}

/* gelu(x) = 0.5 x (1 + erf(x / sqrt 2)) */
static inline __m512 ac_gelu512(__m512 v) {
    __m512 e = ac_erf512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* silu(g) * u = g / (1 + exp(-g)) * u */
static inline __m512 ac_swiglu512(__m512 g, __m512 u) {
    __m512 e = ac_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

static inline __mmask16 ac_mask16(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}
#endif

#endif
