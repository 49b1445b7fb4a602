/* codec_neon.c — the fused "decode inside A.V" kernel with NEON (aarch64,
 * where Advanced SIMD is always present: it serves the baseline level there).
 * Per output element the arithmetic of the x86 SIMD kernels: each probability
 * decoded alike (F16 exactly, Q8/Q4 as code x scale, one rounding), then one
 * fused multiply-add per nonzero stored column in column order (TOPK: per kept
 * entry in stored order), so the outputs are bitwise those of codec_avx2.c /
 * codec_avx512.c (kernels.h). Layouts: codec.h. */
#include "cache/kernels.h"
#include "util/common.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define AC_AI static inline __attribute__((always_inline))
#define NV_MAX 16 /* accumulators of 4 floats: head dims in chunks of 64 */

static inline float ld_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline float ld_f16(const uint8_t *p) { __fp16 h; memcpy(&h, p, 2); return (float)h; }
static inline uint16_t ld_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* pb[0..m) = probabilities j0..j0+m-1 of a dense row (data: after the scale). */
AC_AI void decode8(const int kind, const uint8_t *data, int j0, int m, float s, float *pb) {
    for (int i = 0; i < m; i++) {
        const int j = j0 + i;
        switch (kind) {
        case AC_CODEC_F32: pb[i] = ld_f32(data + 4 * (size_t)j); break;
        case AC_CODEC_F16: pb[i] = ld_f16(data + 2 * (size_t)j); break;
        case AC_CODEC_Q8: pb[i] = (float)data[j] * s; break;
        default: pb[i] = (float)((j & 1) ? (data[j / 2] >> 4) : (data[j / 2] & 15)) * s; break;
        }
    }
}

/* acc[c] += p V[4c..4c+4) for the nv vectors of one V row; the w - 4 nv
 * columns left (0..3) in scalar fused multiply-adds on acc_t. */
#define AC_FMA_ROW(p, v)                                                                                         \
    do {                                                                                                         \
        const float32x4_t b_ = vdupq_n_f32(p);                                                                   \
        for (int c_ = 0; c_ < nv; c_++) acc[c_] = vfmaq_f32(acc[c_], b_, vld1q_f32((v) + 4 * c_));              \
        for (int e_ = 0; e_ < rem; e_++) acc_t[e_] = fmaf(p, (v)[4 * nv + e_], acc_t[e_]);                     \
    } while (0)

/* out[0..4 nv + rem) = sum_j p_j V[j][0..), dense row. */
AC_AI void av_dense_chunk(const int kind, const int nv, const uint8_t *row, int n, const float *V, int ld_v, int rem,
                          float *out) {
    float32x4_t acc[NV_MAX];
    float acc_t[3] = {0, 0, 0};
    for (int c = 0; c < nv; c++) acc[c] = vdupq_n_f32(0.0f);
    const uint8_t *data = row;
    float s = 1.0f;
    if (kind == AC_CODEC_Q8 || kind == AC_CODEC_Q4) {
        s = ld_f32(row);
        data = row + 4;
    }
    float pb[8];
    for (int j0 = 0; j0 < n; j0 += 8) {
        const int m = n - j0 < 8 ? n - j0 : 8;
        decode8(kind, data, j0, m, s, pb);
        for (int i = 0; i < m; i++) {
            if (!(pb[i] != 0.0f)) continue; /* zero skipped; NaN (damaged data) is not */
            const float *v = V + (size_t)(j0 + i) * ld_v;
            AC_FMA_ROW(pb[i], v);
        }
    }
    for (int c = 0; c < nv; c++) vst1q_f32(out + 4 * c, acc[c]);
    for (int e = 0; e < rem; e++) out[4 * nv + e] = acc_t[e];
}

AC_AI void av_topk_chunk(const int nv, const uint8_t *row, int kk, int n, const float *V, int ld_v, int rem,
                         float *out) {
    float32x4_t acc[NV_MAX];
    float acc_t[3] = {0, 0, 0};
    for (int c = 0; c < nv; c++) acc[c] = vdupq_n_f32(0.0f);
    const uint8_t *idx = row, *val = row + 2 * (size_t)kk;
    for (int i = 0; i < kk; i++) {
        const int j = ld_u16(idx + 2 * (size_t)i);
        if (j >= n) continue; /* hostile index */
        const float p = ld_f16(val + 2 * (size_t)i);
        const float *v = V + (size_t)j * ld_v;
        AC_FMA_ROW(p, v);
    }
    for (int c = 0; c < nv; c++) vst1q_f32(out + 4 * c, acc[c]);
    for (int e = 0; e < rem; e++) out[4 * nv + e] = acc_t[e];
}

#define AV_NV_CASES(CALL)                                                                                        \
    switch (nv) {                                                                                                \
    case 0: CALL(0); break;                                                                                      \
    case 1: CALL(1); break;                                                                                      \
    case 2: CALL(2); break;                                                                                      \
    case 3: CALL(3); break;                                                                                      \
    case 4: CALL(4); break;                                                                                      \
    case 5: CALL(5); break;                                                                                      \
    case 6: CALL(6); break;                                                                                      \
    case 7: CALL(7); break;                                                                                      \
    case 8: CALL(8); break;                                                                                      \
    case 12: CALL(12); break;                                                                                    \
    default: CALL_ANY(nv); break;                                                                                \
    }

static void av_chunk(const ac_map_codec *c, const uint8_t *row, int n, const float *V, int ld_v, int nv, int rem,
                     float *out) {
    switch (c->kind) {
#define CALL(NV) av_dense_chunk(AC_CODEC_F32, NV, row, n, V, ld_v, rem, out)
#define CALL_ANY(NV) av_dense_chunk(AC_CODEC_F32, NV, row, n, V, ld_v, rem, out)
    case AC_CODEC_F32: AV_NV_CASES(CALL); break;
#undef CALL
#undef CALL_ANY
#define CALL(NV) av_dense_chunk(AC_CODEC_F16, NV, row, n, V, ld_v, rem, out)
#define CALL_ANY(NV) av_dense_chunk(AC_CODEC_F16, NV, row, n, V, ld_v, rem, out)
    case AC_CODEC_F16: AV_NV_CASES(CALL); break;
#undef CALL
#undef CALL_ANY
#define CALL(NV) av_dense_chunk(AC_CODEC_Q8, NV, row, n, V, ld_v, rem, out)
#define CALL_ANY(NV) av_dense_chunk(AC_CODEC_Q8, NV, row, n, V, ld_v, rem, out)
    case AC_CODEC_Q8: AV_NV_CASES(CALL); break;
#undef CALL
#undef CALL_ANY
#define CALL(NV) av_dense_chunk(AC_CODEC_Q4, NV, row, n, V, ld_v, rem, out)
#define CALL_ANY(NV) av_dense_chunk(AC_CODEC_Q4, NV, row, n, V, ld_v, rem, out)
    case AC_CODEC_Q4: AV_NV_CASES(CALL); break;
#undef CALL
#undef CALL_ANY
    case AC_CODEC_TOPK: {
        const int kk = AC_MIN(c->topk, n);
#define CALL(NV) av_topk_chunk(NV, row, kk, n, V, ld_v, rem, out)
#define CALL_ANY(NV) av_topk_chunk(NV, row, kk, n, V, ld_v, rem, out)
        AV_NV_CASES(CALL);
#undef CALL
#undef CALL_ANY
        break;
    }
    }
}

void ac_codec_av_row_neon(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                          float *out) {
    /* head dims in chunks of up to 64 (16 q-register accumulators); the row
     * is re-decoded per chunk, which is cheap next to the FMAs. */
    for (int d0 = 0; d0 < head_dim; d0 += 4 * NV_MAX) {
        const int w = AC_MIN(4 * NV_MAX, head_dim - d0);
        av_chunk(c, (const uint8_t *)row, n, V + d0, ld_v, w / 4, w % 4, out + d0);
    }
}
