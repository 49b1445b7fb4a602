/* codec_avx512.c — the fused "decode inside A.V" kernels with AVX-512
 * (F/BW/VL + F16C): 16 probabilities decoded per step, zero probabilities
 * skipped, one FMA per stored column in column order per output element
 * (kernels.h: the AVX2 kernels give bitwise the same results). Layouts:
 * codec.h. */
#include "cache/kernels.h"
#include "util/common.h"

#include <immintrin.h>
#include <string.h>

static inline float ld_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline uint16_t ld_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

#define AC_AI static inline __attribute__((always_inline))

/* Decode the 16 values j0..j0+15 of a dense row (lanes >= m zero). data: the
 * values (after the scale for Q8/Q4). */
AC_AI __m512 decode16(const int kind, const uint8_t *data, int j0, int m, __m512 vs) {
    __mmask16 lm = (__mmask16)((1u << m) - 1);
    switch (kind) {
    case AC_CODEC_F32: return _mm512_maskz_loadu_ps(lm, data + 4 * (size_t)j0);
    case AC_CODEC_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lm, data + 2 * (size_t)j0));
    case AC_CODEC_Q8: {
        __m128i b = _mm_maskz_loadu_epi8(lm, data + j0);
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)), vs);
    }
    default: { /* Q4 */
        __mmask16 bm = (__mmask16)((1u << ((m + 1) / 2)) - 1);
        __m128i b = _mm_maskz_loadu_epi8(bm, data + j0 / 2);
        __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
        __m128i x = _mm_maskz_mov_epi8(lm, _mm_unpacklo_epi8(lo, hi));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x)), vs);
    }
    }
}

/* out[0..16*nv) (last vector masked by tail) = sum_j p_j V[j][0..), dense row. */
AC_AI void av_dense_chunk(const int kind, const int nv, const uint8_t *row, int n, const float *V,
                          int ld_v, __mmask16 tail, float *out) {
    __m512 acc[8];
    for (int c = 0; c < nv; c++) acc[c] = _mm512_setzero_ps();
    const uint8_t *data = row;
    __m512 vs = _mm512_setzero_ps();
    if (kind == AC_CODEC_Q8 || kind == AC_CODEC_Q4) {
        vs = _mm512_set1_ps(ld_f32(row));
        data = row + 4;
    }
    float pb[16];
    for (int j0 = 0; j0 < n; j0 += 16) {
        int m = n - j0 < 16 ? n - j0 : 16;
        __m512 p = decode16(kind, data, j0, m, vs);
        /* lanes < m only: a NaN scale (damaged data) must not reach V's rows past n */
        __mmask16 nz = _mm512_mask_cmp_ps_mask((__mmask16)((1u << m) - 1), p, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        if (!nz) continue;
        _mm512_storeu_ps(pb, p);
        const float *vb = V + (size_t)j0 * ld_v; /* [16][ld_v] */
        while (nz) {
            int j = __builtin_ctz(nz);
            nz &= (__mmask16)(nz - 1);
            __m512 b = _mm512_set1_ps(pb[j]);
            const float *v = vb + (size_t)j * ld_v;
            for (int c = 0; c < nv - 1; c++) acc[c] = _mm512_fmadd_ps(b, _mm512_loadu_ps(v + 16 * c), acc[c]);
            acc[nv - 1] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(tail, v + 16 * (nv - 1)), acc[nv - 1]);
        }
    }
    for (int c = 0; c < nv - 1; c++) _mm512_storeu_ps(out + 16 * c, acc[c]);
    _mm512_mask_storeu_ps(out + 16 * (nv - 1), tail, acc[nv - 1]);
}

/* Two rows at once (t, t+1): every V load feeds two FMAs. Zero probabilities
 * are skipped where both rows are zero. */
AC_AI void av_dense_chunk2(const int kind, const int nv, const uint8_t *row0, int n0, const uint8_t *row1, int n1,
                           const float *V, int ld_v, __mmask16 tail, float *out0, float *out1) {
    __m512 a0[8], a1[8];
    for (int c = 0; c < nv; c++) a0[c] = a1[c] = _mm512_setzero_ps();
    const uint8_t *d0 = row0, *d1 = row1;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    if (kind == AC_CODEC_Q8 || kind == AC_CODEC_Q4) {
        s0 = _mm512_set1_ps(ld_f32(row0));
        s1 = _mm512_set1_ps(ld_f32(row1));
        d0 = row0 + 4;
        d1 = row1 + 4;
    }
    float pb0[16], pb1[16];
    int n = n0 > n1 ? n0 : n1;
    for (int j0 = 0; j0 < n; j0 += 16) {
        int m0 = n0 - j0, m1 = n1 - j0;
        m0 = m0 < 0 ? 0 : (m0 > 16 ? 16 : m0);
        m1 = m1 < 0 ? 0 : (m1 > 16 ? 16 : m1);
        __m512 p0 = decode16(kind, d0, j0, m0, s0), p1 = decode16(kind, d1, j0, m1, s1);
        __mmask16 nz = (__mmask16)(_mm512_mask_cmp_ps_mask((__mmask16)((1u << m0) - 1), p0, _mm512_setzero_ps(), _CMP_NEQ_UQ) |
                                   _mm512_mask_cmp_ps_mask((__mmask16)((1u << m1) - 1), p1, _mm512_setzero_ps(), _CMP_NEQ_UQ));
        if (!nz) continue;
        _mm512_storeu_ps(pb0, p0);
        _mm512_storeu_ps(pb1, p1);
        const float *vb = V + (size_t)j0 * ld_v; /* [16][ld_v] */
        while (nz) {
            int j = __builtin_ctz(nz);
            nz &= (__mmask16)(nz - 1);
            __m512 b0 = _mm512_set1_ps(pb0[j]), b1 = _mm512_set1_ps(pb1[j]);
            const float *v = vb + (size_t)j * ld_v;
            for (int c = 0; c < nv - 1; c++) {
                __m512 x = _mm512_loadu_ps(v + 16 * c);
                a0[c] = _mm512_fmadd_ps(b0, x, a0[c]);
                a1[c] = _mm512_fmadd_ps(b1, x, a1[c]);
            }
            __m512 x = _mm512_maskz_loadu_ps(tail, v + 16 * (nv - 1));
            a0[nv - 1] = _mm512_fmadd_ps(b0, x, a0[nv - 1]);
            a1[nv - 1] = _mm512_fmadd_ps(b1, x, a1[nv - 1]);
        }
    }
    for (int c = 0; c < nv - 1; c++) {
        _mm512_storeu_ps(out0 + 16 * c, a0[c]);
        _mm512_storeu_ps(out1 + 16 * c, a1[c]);
    }
    _mm512_mask_storeu_ps(out0 + 16 * (nv - 1), tail, a0[nv - 1]);
    _mm512_mask_storeu_ps(out1 + 16 * (nv - 1), tail, a1[nv - 1]);
}

#define AV_DENSE2_CASES(KIND)                                                                    \
    switch (nv) {                                                                                \
    case 1: av_dense_chunk2(KIND, 1, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 2: av_dense_chunk2(KIND, 2, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 3: av_dense_chunk2(KIND, 3, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 4: av_dense_chunk2(KIND, 4, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 5: av_dense_chunk2(KIND, 5, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 6: av_dense_chunk2(KIND, 6, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    case 7: av_dense_chunk2(KIND, 7, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;              \
    default: av_dense_chunk2(KIND, 8, r0, n0, r1, n1, V, ld_v, tail, o0, o1); break;             \
    }

/* Rows t and t+1 of an F32/F16 map. (Q8/Q4 rows stay one at a time: their
 * many exact zeros are skipped per row, which the pair would lose; measured
 * with src/cache/bench/bench_codec.c.) */
static void av_row2(const ac_map_codec *c, const uint8_t *r0, int n0, const uint8_t *r1, int n1, const float *V0,
                    int ld_v, int head_dim, float *out0, float *out1) {
    for (int d0 = 0; d0 < head_dim; d0 += 128) {
        int w = AC_MIN(128, head_dim - d0);
        int nv = (w + 15) / 16;
        int rem = w - 16 * (nv - 1);
        __mmask16 tail = (__mmask16)((1u << rem) - 1);
        const float *V = V0 + d0;
        float *o0 = out0 + d0, *o1 = out1 + d0;
        if (c->kind == AC_CODEC_F32) AV_DENSE2_CASES(AC_CODEC_F32) else AV_DENSE2_CASES(AC_CODEC_F16)
    }
}

AC_AI void av_topk_chunk(const int nv, const uint8_t *row, int kk, int n, const float *V, int ld_v,
                         __mmask16 tail, float *out) {
    __m512 acc[8];
    for (int c = 0; c < nv; c++) acc[c] = _mm512_setzero_ps();
    const uint8_t *idx = row, *val = row + 2 * (size_t)kk;
    float pb[16];
    for (int i0 = 0; i0 < kk; i0 += 16) {
        int m = kk - i0 < 16 ? kk - i0 : 16;
        __mmask16 lm = (__mmask16)((1u << m) - 1);
        _mm512_storeu_ps(pb, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lm, val + 2 * (size_t)i0)));
        for (int i = 0; i < m; i++) {
            int j = ld_u16(idx + 2 * (size_t)(i0 + i));
            if (j >= n) continue; /* hostile index */
            __m512 b = _mm512_set1_ps(pb[i]);
            const float *v = V + (size_t)j * ld_v;
            for (int c = 0; c < nv - 1; c++) acc[c] = _mm512_fmadd_ps(b, _mm512_loadu_ps(v + 16 * c), acc[c]);
            acc[nv - 1] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(tail, v + 16 * (nv - 1)), acc[nv - 1]);
        }
    }
    for (int c = 0; c < nv - 1; c++) _mm512_storeu_ps(out + 16 * c, acc[c]);
    _mm512_mask_storeu_ps(out + 16 * (nv - 1), tail, acc[nv - 1]);
}

/* Specialise on (kind, nv) so the accumulators live in registers. */
#define AV_DENSE_CASES(KIND)                                                                     \
    switch (nv) {                                                                                \
    case 1: av_dense_chunk(KIND, 1, row, n, V, ld_v, tail, out); break;                          \
    case 2: av_dense_chunk(KIND, 2, row, n, V, ld_v, tail, out); break;                          \
    case 3: av_dense_chunk(KIND, 3, row, n, V, ld_v, tail, out); break;                          \
    case 4: av_dense_chunk(KIND, 4, row, n, V, ld_v, tail, out); break;                          \
    case 5: av_dense_chunk(KIND, 5, row, n, V, ld_v, tail, out); break;                          \
    case 6: av_dense_chunk(KIND, 6, row, n, V, ld_v, tail, out); break;                          \
    case 7: av_dense_chunk(KIND, 7, row, n, V, ld_v, tail, out); break;                          \
    default: av_dense_chunk(KIND, 8, row, n, V, ld_v, tail, out); break;                         \
    }

static void av_chunk(const ac_map_codec *c, const uint8_t *row, int n, const float *V, int ld_v, int nv,
                     __mmask16 tail, float *out) {
    switch (c->kind) {
    case AC_CODEC_F32: AV_DENSE_CASES(AC_CODEC_F32); break;
    case AC_CODEC_F16: AV_DENSE_CASES(AC_CODEC_F16); break;
    case AC_CODEC_Q8: AV_DENSE_CASES(AC_CODEC_Q8); break;
    case AC_CODEC_Q4: AV_DENSE_CASES(AC_CODEC_Q4); break;
    case AC_CODEC_TOPK: {
        int kk = AC_MIN(c->topk, n);
        switch (nv) {
        case 1: av_topk_chunk(1, row, kk, n, V, ld_v, tail, out); break;
        case 2: av_topk_chunk(2, row, kk, n, V, ld_v, tail, out); break;
        case 3: av_topk_chunk(3, row, kk, n, V, ld_v, tail, out); break;
        case 4: av_topk_chunk(4, row, kk, n, V, ld_v, tail, out); break;
        case 5: av_topk_chunk(5, row, kk, n, V, ld_v, tail, out); break;
        case 6: av_topk_chunk(6, row, kk, n, V, ld_v, tail, out); break;
        case 7: av_topk_chunk(7, row, kk, n, V, ld_v, tail, out); break;
        default: av_topk_chunk(8, row, kk, n, V, ld_v, tail, out); break;
        }
        break;
    }
    }
}

void ac_codec_av_row_avx512(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                            float *out) {
    /* head dims in chunks of up to 128 (8 zmm accumulators); the row is
     * re-decoded per chunk, which is cheap next to the FMAs. */
    for (int d0 = 0; d0 < head_dim; d0 += 128) {
        int w = AC_MIN(128, head_dim - d0);
        int nv = (w + 15) / 16;
        int rem = w - 16 * (nv - 1);
        __mmask16 tail = (__mmask16)((1u << rem) - 1);
        av_chunk(c, (const uint8_t *)row, n, V + d0, ld_v, nv, tail, out + d0);
    }
}

void ac_codec_av_avx512(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                        float *out, int ld_o) {
    const uint8_t *r = (const uint8_t *)map;
    int t = 0;
    if (c->kind == AC_CODEC_F32 || c->kind == AC_CODEC_F16) {
        for (; t + 1 < L; t += 2) {
            int n0 = ac_codec_row_n(c, L, t), n1 = ac_codec_row_n(c, L, t + 1);
            const uint8_t *r1 = r + ac_codec_row_bytes(c, n0);
            av_row2(c, r, n0, r1, n1, V, ld_v, head_dim, out + (size_t)t * ld_o, out + (size_t)(t + 1) * ld_o);
            r = r1 + ac_codec_row_bytes(c, n1);
        }
    }
    for (; t < L; t++) {
        int n = ac_codec_row_n(c, L, t);
        ac_codec_av_row_avx512(c, r, n, V, ld_v, head_dim, out + (size_t)t * ld_o);
        r += ac_codec_row_bytes(c, n);
    }
}
