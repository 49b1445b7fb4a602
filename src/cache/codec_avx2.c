/* codec_avx2.c — the fused "decode inside A.V" kernels with AVX2 + FMA + F16C
 * (8 lanes). Per output element the arithmetic is the AVX-512 kernels': each
 * probability decoded alike (F16 exactly, Q8/Q4 as code x scale, one
 * rounding), then one FMA per nonzero stored column in column order (TOPK:
 * per kept entry in stored order), so the two give bitwise equal outputs
 * (kernels.h; tests/test_cache_codec.c checks it). Layouts: codec.h. */
#include "cache/kernels.h"
#include "util/common.h"

#include <immintrin.h>
#include <string.h>

#define AC_AI static inline __attribute__((always_inline))
#define NV_MAX 8 /* accumulators of 8 floats: head dims in chunks of 64 */

static inline float ld_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline uint16_t ld_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Lane mask for the last accumulator of a chunk: lanes < rem (1..8) on. */
static inline __m256i tail_mask(int rem) {
    static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(ones + 8 - rem));
}

/* Values j0..j0+7 of a dense row with m (1..8) of them stored (lanes >= m
 * zero). data: the values (after the scale for Q8/Q4). The tail (m < 8) goes
 * through a small buffer: nothing past the row's last byte is read. */
AC_AI __m256 decode8(const int kind, const uint8_t *data, int j0, int m, __m256 vs) {
    if (m < 8) {
        float pb[8] = {0};
        for (int i = 0; i < m; i++) {
            const int j = j0 + i;
            switch (kind) {
            case AC_CODEC_F32: pb[i] = ld_f32(data + 4 * (size_t)j); break;
            case AC_CODEC_F16: pb[i] = _cvtsh_ss(ld_u16(data + 2 * (size_t)j)); break;
            case AC_CODEC_Q8: pb[i] = (float)data[j]; break;
            default: pb[i] = (float)((j & 1) ? (data[j / 2] >> 4) : (data[j / 2] & 15)); break;
            }
        }
        const __m256 p = _mm256_loadu_ps(pb);
        return kind == AC_CODEC_Q8 || kind == AC_CODEC_Q4 ? _mm256_mul_ps(p, vs) : p;
    }
    switch (kind) {
    case AC_CODEC_F32: return _mm256_loadu_ps((const float *)(data + 4 * (size_t)j0));
    case AC_CODEC_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(data + 2 * (size_t)j0)));
    case AC_CODEC_Q8: {
        const __m128i b = _mm_loadl_epi64((const __m128i *)(data + j0));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), vs);
    }
    default: { /* Q4: 4 bytes, low nibble first (j0 is a multiple of 8) */
        int32_t w;
        memcpy(&w, data + j0 / 2, 4);
        const __m128i b = _mm_cvtsi32_si128(w), f = _mm_set1_epi8(0x0F);
        const __m128i x = _mm_unpacklo_epi8(_mm_and_si128(b, f), _mm_and_si128(_mm_srli_epi16(b, 4), f));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x)), vs);
    }
    }
}

/* acc[c] += b V[c] for the nv vectors of one V row (the last one masked
 * unless full: vmaskmovps is slower than a plain load, on AMD especially). */
#define AC_FMA_ROW(acc, b, v)                                                                                    \
    do {                                                                                                         \
        for (int c_ = 0; c_ < nv - 1; c_++) acc[c_] = _mm256_fmadd_ps(b, _mm256_loadu_ps((v) + 8 * c_), acc[c_]); \
        acc[nv - 1] = _mm256_fmadd_ps(b, full ? _mm256_loadu_ps((v) + 8 * (nv - 1))                             \
                                              : _mm256_maskload_ps((v) + 8 * (nv - 1), tail),                  \
                                      acc[nv - 1]);                                                              \
    } while (0)

/* out[0..8 nv) (the last vector masked by tail) = sum_j p_j V[j][0..), dense row. */
AC_AI void av_dense_chunk(const int kind, const int nv, const int full, const uint8_t *row, int n, const float *V,
                          int ld_v, __m256i tail, float *out) {
    __m256 acc[NV_MAX];
    for (int c = 0; c < nv; c++) acc[c] = _mm256_setzero_ps();
    const uint8_t *data = row;
    __m256 vs = _mm256_setzero_ps();
    if (kind == AC_CODEC_Q8 || kind == AC_CODEC_Q4) {
        vs = _mm256_set1_ps(ld_f32(row));
        data = row + 4;
    }
    float pb[8];
    for (int j0 = 0; j0 < n; j0 += 8) {
        const int m = n - j0 < 8 ? n - j0 : 8;
        const __m256 p = decode8(kind, data, j0, m, vs);
        /* lanes < m only: a NaN scale (damaged data) must not reach V's rows past n */
        unsigned nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_NEQ_UQ)) & ((1u << m) - 1);
        if (!nz) continue;
        _mm256_storeu_ps(pb, p);
        const float *vb = V + (size_t)j0 * ld_v; /* [8][ld_v] */
        for (; nz; nz &= nz - 1) {
            const int j = __builtin_ctz(nz);
            const __m256 b = _mm256_broadcast_ss(pb + j);
            AC_FMA_ROW(acc, b, vb + (size_t)j * ld_v);
        }
    }
    for (int c = 0; c < nv - 1; c++) _mm256_storeu_ps(out + 8 * c, acc[c]);
    if (full)
        _mm256_storeu_ps(out + 8 * (nv - 1), acc[nv - 1]);
    else
        _mm256_maskstore_ps(out + 8 * (nv - 1), tail, acc[nv - 1]);
}

/* The same for a TOPK row (kk kept entries; indices >= n ignored). Zero
 * values are not skipped, as in the AVX-512 kernel. */
AC_AI void av_topk_chunk(const int nv, const int full, const uint8_t *row, int kk, int n, const float *V, int ld_v,
                         __m256i tail, float *out) {
    __m256 acc[NV_MAX];
    for (int c = 0; c < nv; c++) acc[c] = _mm256_setzero_ps();
    const uint8_t *idx = row, *val = row + 2 * (size_t)kk;
    for (int i = 0; i < kk; i++) {
        const int j = ld_u16(idx + 2 * (size_t)i);
        if (j >= n) continue; /* hostile index */
        const __m256 b = _mm256_set1_ps(_cvtsh_ss(ld_u16(val + 2 * (size_t)i)));
        AC_FMA_ROW(acc, b, V + (size_t)j * ld_v);
    }
    for (int c = 0; c < nv - 1; c++) _mm256_storeu_ps(out + 8 * c, acc[c]);
    if (full)
        _mm256_storeu_ps(out + 8 * (nv - 1), acc[nv - 1]);
    else
        _mm256_maskstore_ps(out + 8 * (nv - 1), tail, acc[nv - 1]);
}

/* Specialise on (kind, nv) so the accumulators live in registers. */
#define AV_NV_CASES(CALL)                                                                                        \
    switch (nv) {                                                                                                \
    case 1: CALL(1); break;                                                                                      \
    case 2: CALL(2); break;                                                                                      \
    case 3: CALL(3); break;                                                                                      \
    case 4: CALL(4); break;                                                                                      \
    case 5: CALL(5); break;                                                                                      \
    case 6: CALL(6); break;                                                                                      \
    case 7: CALL(7); break;                                                                                      \
    default: CALL(8); break;                                                                                     \
    }
/* Specialised on (kind, nv, full); full: the head-dim chunk is a multiple of 8. */
#define DENSE_F32(NV) av_dense_chunk(AC_CODEC_F32, NV, FULL, row, n, V, ld_v, tail, out)
#define DENSE_F16(NV) av_dense_chunk(AC_CODEC_F16, NV, FULL, row, n, V, ld_v, tail, out)
#define DENSE_Q8(NV) av_dense_chunk(AC_CODEC_Q8, NV, FULL, row, n, V, ld_v, tail, out)
#define DENSE_Q4(NV) av_dense_chunk(AC_CODEC_Q4, NV, FULL, row, n, V, ld_v, tail, out)
#define TOPK(NV) av_topk_chunk(NV, FULL, row, kk, n, V, ld_v, tail, out)
#define AV_KIND_CASES                                                                                            \
    switch (c->kind) {                                                                                           \
    case AC_CODEC_F32: AV_NV_CASES(DENSE_F32); break;                                                            \
    case AC_CODEC_F16: AV_NV_CASES(DENSE_F16); break;                                                            \
    case AC_CODEC_Q8: AV_NV_CASES(DENSE_Q8); break;                                                              \
    case AC_CODEC_Q4: AV_NV_CASES(DENSE_Q4); break;                                                              \
    case AC_CODEC_TOPK: {                                                                                        \
        const int kk = AC_MIN(c->topk, n);                                                                       \
        AV_NV_CASES(TOPK);                                                                                       \
        break;                                                                                                   \
    }                                                                                                            \
    }

static void av_chunk(const ac_map_codec *c, const uint8_t *row, int n, const float *V, int ld_v, int nv, int rem,
                     float *out) {
    const __m256i tail = tail_mask(rem);
    if (rem == 8) {
#define FULL 1
        AV_KIND_CASES
#undef FULL
    } else {
#define FULL 0
        AV_KIND_CASES
#undef FULL
    }
}

void ac_codec_av_row_avx2(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                          float *out) {
    /* head dims in chunks of up to 64 (8 ymm accumulators); the row is
     * re-decoded per chunk, which is cheap next to the FMAs. */
    for (int d0 = 0; d0 < head_dim; d0 += 8 * NV_MAX) {
        const int w = AC_MIN(8 * NV_MAX, head_dim - d0), nv = (w + 7) / 8;
        av_chunk(c, (const uint8_t *)row, n, V + d0, ld_v, nv, w - 8 * (nv - 1), out + d0);
    }
}

void ac_codec_av_avx2(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                      float *out, int ld_o) {
    const uint8_t *r = (const uint8_t *)map;
    for (int t = 0; t < L; t++) {
        const int n = ac_codec_row_n(c, L, t);
        ac_codec_av_row_avx2(c, r, n, V, ld_v, head_dim, out + (size_t)t * ld_o);
        r += ac_codec_row_bytes(c, n);
    }
}
