/* simd.h — shared helpers of the CPU kernels (inline): the exp and erf
 * approximations as constants, a scalar exp for the per-ISA files, and their
 * AVX-512 (ac_*512) and AVX2+FMA (ac_*256) vector forms. The vector forms
 * exist only in translation units compiled for that level (*_avx512.c,
 * *_avx2.c; see CMakeLists.txt ac_isa_sources), and NEON forms (ac_*_f32x4)
 * on aarch64, where Advanced SIMD is always there. All forms compute the same
 * formula with the same fused multiply-adds: exp and erf agree bitwise across
 * AVX-512, AVX2, NEON and ac_expf_fma. */
#ifndef AC_SIMD_H
#define AC_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define AC_AVX512 1
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define AC_AVX2 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define AC_NEON 1
#endif

/* ---- exp ------------------------------------------------------------------------------
 * exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln 2 (two-part ln 2),
 * exp(r) = 1 + r + r^2 P(r) (Cephes expf polynomial, ~1 ulp on |r| <= ln2/2).
 * Inputs below -104 (including -inf) give 0; inputs above 88.7228 are clamped to
 * it (3.4027e38, just below FLT_MAX: +inf included); NaN stays NaN. Every form
 * (vector and scalar) behaves alike at these edges. */
#define EXP_LO (-104.0f)
#define EXP_HI (88.7228f)
static const float EXP_P0 = 1.9875691500E-4f, EXP_P1 = 1.3981999507E-3f, EXP_P2 = 8.3334519073E-3f,
                   EXP_P3 = 4.1665795894E-2f, EXP_P4 = 1.6666665459E-1f, EXP_P5 = 5.0000001201E-1f;
static const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f, LOG2E = 1.44269504088896341f;

/* 2^k for k in [-126, 127], from the exponent bits. */
static inline float ac_pow2i(int k) {
    uint32_t u = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The portable exp: the same formula in plain multiply-adds (fused where the
 * compiler targets FMA), rounding by the 1.5 * 2^23 trick and 2^n from the
 * exponent bits, branch-free: a loop over it vectorises at any level. */
static inline float ac_expf_c(float x) {
    const float xc = x == x ? (x < EXP_LO ? EXP_LO : x > EXP_HI ? EXP_HI : x) : 0.0f;
    const float n = (xc * LOG2E + 12582912.0f) - 12582912.0f; /* round to nearest even (|.| < 2^22) */
    float r = xc - n * LN2_HI;
    r = r - n * LN2_LO;
    float p = EXP_P0;
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * (r * r) + (r + 1.0f);
    const int ni = (int)n, n1 = ni / 2;
    const float y = p * ac_pow2i(n1) * ac_pow2i(ni - n1);
    return x != x ? x : x < EXP_LO ? 0.0f : y;
}

/* The scalar exp with fused multiply-adds (fmaf): for the per-ISA files, where
 * fmaf is one instruction. p 2^n is formed as (p 2^n1) 2^n2 with n1 + n2 = n,
 * both in [-75, 64]: the first product is exact, the second rounds once, as
 * VSCALEFPS and ldexpf do (denormal results included). */
static inline float ac_expf_fma(float x) {
    if (x != x) return x;
    if (x < EXP_LO) return 0.0f;
    if (x > EXP_HI) x = EXP_HI;
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
    const int ni = (int)n, n1 = ni / 2;
    return p * ac_pow2i(n1) * ac_pow2i(ni - n1);
}

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

/* The same rational erf in plain C (the portable kernels' GELU, also inside the GEMM epilogue). */
static inline float ac_erf_c(float x) {
    x = x < -4.0f ? -4.0f : x > 4.0f ? 4.0f : x;
    float x2 = x * x;
    float p = ERF_A13;
    p = p * x2 + ERF_A11;
    p = p * x2 + ERF_A9;
    p = p * x2 + ERF_A7;
    p = p * x2 + ERF_A5;
    p = p * x2 + ERF_A3;
    p = p * x2 + ERF_A1;
    p *= x;
    float q = ERF_B8;
    q = q * x2 + ERF_B6;
    q = q * x2 + ERF_B4;
    q = q * x2 + ERF_B2;
    q = q * x2 + ERF_B0;
    return p / q;
}

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

#ifdef AC_AVX2
/* exp on 8 lanes: ac_exp512's formula; 2^n as in ac_expf_fma (bitwise equal to VSCALEFPS). */
static inline __m256 ac_exp256(__m256 x) {
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23)));
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23)));
    /* below the range: 0; NaN stays NaN */
    y = _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ), y);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

static inline __m256 ac_erf256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(ERF_A13);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A11));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A9));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A7));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A5));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A3));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(ERF_A1));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(ERF_B8);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(ERF_B6));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(ERF_B4));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(ERF_B2));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(ERF_B0));
    return _mm256_div_ps(p, q);
}

static inline __m256 ac_gelu256(__m256 v) {
    __m256 e = ac_erf256(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 ac_swiglu256(__m256 g, __m256 u) {
    __m256 e = ac_exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

/* lane mask of the first n lanes (n clamped to 0..8), for maskload/maskstore */
static inline __m256i ac_mask8(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

static inline float ac_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* dst[i][0..8) = column i of the 8 rows r[0..8) (an 8x8 transpose in registers): dst row i
 * at dst + i * ldd (32-byte aligned). */
static inline void ac_tr8x8_store(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 r4, __m256 r5, __m256 r6,
                                  __m256 r7, float *dst, size_t ldd) {
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
                 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
                 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
                 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_store_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

static inline float ac_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#ifdef AC_NEON
/* exp on 4 lanes: ac_exp256's formula and FMAs (vfmaq_f32(a, b, c) = a + b c, fused),
 * 2^n in two factors as there: bitwise equal to ac_expf_fma. */
static inline float32x4_t ac_exp_f32x4(float32x4_t x) {
    float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(LOG2E))); /* nearest, ties to even */
    float32x4_t r = vfmaq_f32(xc, n, vdupq_n_f32(-LN2_HI));
    r = vfmaq_f32(r, n, vdupq_n_f32(-LN2_LO));
    float32x4_t p = vdupq_n_f32(EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(EXP_P5), p, r);
    float32x4_t r2 = vmulq_f32(r, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, r2);
    const int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23)));
    y = vmulq_f32(y, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23)));
    /* below the range: 0; NaN stays NaN */
    y = vbslq_f32(vcltq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(0.0f), y);
    return vbslq_f32(vceqq_f32(x, x), y, x);
}

static inline float32x4_t ac_erf_f32x4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-4.0f)), vdupq_n_f32(4.0f));
    float32x4_t x2 = vmulq_f32(x, x);
    float32x4_t p = vdupq_n_f32(ERF_A13);
    p = vfmaq_f32(vdupq_n_f32(ERF_A11), p, x2);
    p = vfmaq_f32(vdupq_n_f32(ERF_A9), p, x2);
    p = vfmaq_f32(vdupq_n_f32(ERF_A7), p, x2);
    p = vfmaq_f32(vdupq_n_f32(ERF_A5), p, x2);
    p = vfmaq_f32(vdupq_n_f32(ERF_A3), p, x2);
    p = vfmaq_f32(vdupq_n_f32(ERF_A1), p, x2);
    p = vmulq_f32(p, x);
    float32x4_t q = vdupq_n_f32(ERF_B8);
    q = vfmaq_f32(vdupq_n_f32(ERF_B6), q, x2);
    q = vfmaq_f32(vdupq_n_f32(ERF_B4), q, x2);
    q = vfmaq_f32(vdupq_n_f32(ERF_B2), q, x2);
    q = vfmaq_f32(vdupq_n_f32(ERF_B0), q, x2);
    return vdivq_f32(p, q);
}

static inline float32x4_t ac_gelu_f32x4(float32x4_t v) {
    float32x4_t e = ac_erf_f32x4(vmulq_f32(v, vdupq_n_f32(0.70710678118654752f)));
    return vmulq_f32(vmulq_f32(vdupq_n_f32(0.5f), v), vaddq_f32(vdupq_n_f32(1.0f), e));
}

static inline float32x4_t ac_swiglu_f32x4(float32x4_t g, float32x4_t u) {
    float32x4_t e = ac_exp_f32x4(vsubq_f32(vdupq_n_f32(0.0f), g));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}
#endif

#endif
