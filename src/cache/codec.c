/* codec.c — attention-map codecs: encoders, plain reference decoders, and the
 * fused "decode inside A.V" kernels (AVX-512 + portable C). Layouts: codec.h. */
#include "cache/codec.h"
#include "util/fp16.h"
#include "util/common.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define AC_CODEC_AVX512 1
#else
#define AC_CODEC_AVX512 0
#endif

int ac_codec_simd(void) { return AC_CODEC_AVX512; }

/* ---- names ------------------------------------------------------------------------- */
static const char *const kind_names[AC_CODEC_COUNT] = {"f32", "f16", "q8", "q4", "topk"};

const char *ac_codec_kind_name(int kind) {
    return (kind >= 0 && kind < AC_CODEC_COUNT) ? kind_names[kind] : "?";
}

void ac_codec_format(const ac_map_codec *c, char *buf, size_t cap) {
    if (!cap) return;
    if (c->kind == AC_CODEC_TOPK)
        snprintf(buf, cap, "topk%d%s", c->topk, c->causal ? "-causal" : "");
    else
        snprintf(buf, cap, "%s%s", ac_codec_kind_name(c->kind), c->causal ? "-causal" : "");
}

int ac_codec_parse(const char *s, ac_map_codec *c) {
    ac_map_codec r = {0, 0, 0};
    if (!s) return ac_err(AC_ERR_ARG, "codec: NULL name");
    size_t n = strlen(s);
    const char *suffix = "-causal";
    size_t sl = strlen(suffix);
    char name[32];
    if (n >= sizeof name) return ac_err(AC_ERR_ARG, "codec '%s': name too long", s);
    memcpy(name, s, n + 1);
    if (n > sl && strcmp(name + n - sl, suffix) == 0) {
        r.causal = 1;
        name[n - sl] = 0;
    }
    if (strncmp(name, "topk", 4) == 0) {
        char *end = NULL;
        long k = strtol(name + 4, &end, 10);
        if (end == name + 4 || *end || k < 1 || k > AC_CODEC_MAX_L)
            return ac_err(AC_ERR_ARG, "codec '%s': want topk<K> with 1 <= K <= %d", s, AC_CODEC_MAX_L);
        r.kind = AC_CODEC_TOPK;
        r.topk = (int)k;
    } else {
        int k;
        for (k = 0; k < AC_CODEC_COUNT; k++)
            if (k != AC_CODEC_TOPK && strcmp(name, kind_names[k]) == 0) break;
        if (k == AC_CODEC_COUNT)
            return ac_err(AC_ERR_ARG, "codec '%s': unknown (f32, f16, q8, q4, topk<K>, optional -causal)", s);
        r.kind = k;
    }
    *c = r;
    return AC_OK;
}

/* ---- sizes --------------------------------------------------------------------------- */
int ac_codec_check(const ac_map_codec *c, int L) {
    if (!c) return ac_err(AC_ERR_ARG, "codec: NULL");
    if (c->kind < 0 || c->kind >= AC_CODEC_COUNT) return ac_err(AC_ERR_ARG, "codec: unknown kind %d", c->kind);
    if (c->causal != 0 && c->causal != 1) return ac_err(AC_ERR_ARG, "codec: causal must be 0 or 1, got %d", c->causal);
    if (c->kind == AC_CODEC_TOPK && (c->topk < 1 || c->topk > AC_CODEC_MAX_L))
        return ac_err(AC_ERR_ARG, "codec topk: k=%d out of range 1..%d", c->topk, AC_CODEC_MAX_L);
    if (L < 1 || L > AC_CODEC_MAX_L) return ac_err(AC_ERR_ARG, "codec: map size L=%d out of range 1..%d", L, AC_CODEC_MAX_L);
    return AC_OK;
}

size_t ac_codec_row_bytes(const ac_map_codec *c, int n) {
    size_t un = (size_t)n;
    switch (c->kind) {
    case AC_CODEC_F32: return 4 * un;
    case AC_CODEC_F16: return 2 * un;
    case AC_CODEC_Q8: return 4 + un;
    case AC_CODEC_Q4: return 4 + (un + 1) / 2;
    case AC_CODEC_TOPK: return 4 * (size_t)AC_MIN(c->topk, n);
    default: return 0;
    }
}

size_t ac_codec_row_offset(const ac_map_codec *c, int L, int t) {
    size_t ut = (size_t)t;
    if (!c->causal) return ut * ac_codec_row_bytes(c, L);
    size_t tri = ut * (ut + 1) / 2; /* sum_{s<t} (s+1) */
    switch (c->kind) {
    case AC_CODEC_F32: return 4 * tri;
    case AC_CODEC_F16: return 2 * tri;
    case AC_CODEC_Q8: return 4 * ut + tri;
    case AC_CODEC_Q4: return 4 * ut + (ut + 1) * (ut + 1) / 4; /* sum_{u=1..t} ceil(u/2) */
    case AC_CODEC_TOPK: {
        size_t k = (size_t)c->topk;
        if (ut <= k) return 4 * tri;
        return 4 * (k * (k + 1) / 2 + (ut - k) * k);
    }
    default: return 0;
    }
}

size_t ac_codec_map_bytes(const ac_map_codec *c, int L) {
    if (!c || c->kind < 0 || c->kind >= AC_CODEC_COUNT || L < 1 || L > AC_CODEC_MAX_L) return 0;
    if (c->kind == AC_CODEC_TOPK && (c->topk < 1 || c->topk > AC_CODEC_MAX_L)) return 0;
    size_t b = ac_codec_row_offset(c, L, L);
    return (b + 63) & ~(size_t)63;
}

/* ---- half precision ---------------------------------------------------------------- */
/* The GGUF stage's exact conversions (round to nearest even; tested exhaustively in test_gguf). */
uint16_t ac_f32_to_f16(float f) { return ac_fp32_to_fp16(f); }

float ac_f16_to_f32(uint16_t h) { return ac_fp16_to_fp32(h); }

/* ---- encoder --------------------------------------------------------------------------- */
static inline void st_f32(uint8_t *p, float v) { memcpy(p, &v, 4); }
static inline float ld_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline uint16_t ld_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void st_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* k-th largest (0-based) of a[0..n) by quickselect; a is reordered. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) { float t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

/* Encode one TOPK row. scratch: n floats, sel: n bytes. */
static void encode_topk_row(const float *p, int n, int k, uint8_t *dst, float *scratch, uint8_t *sel) {
    int kk = AC_MIN(k, n);
    memset(sel, 0, (size_t)n);
    if (kk == n) {
        memset(sel, 1, (size_t)n);
    } else {
        memcpy(scratch, p, (size_t)n * sizeof(float));
        float thr = kth_largest(scratch, n, kk - 1);
        int cnt = 0;
        for (int j = 0; j < n; j++) if (p[j] > thr) { sel[j] = 1; cnt++; }
        for (int j = 0; j < n && cnt < kk; j++) if (p[j] == thr && !sel[j]) { sel[j] = 1; cnt++; }
    }
    double mass = 0;
    for (int j = 0; j < n; j++) if (sel[j]) mass += p[j];
    float inv = mass > 0 ? (float)(1.0 / mass) : 0.0f;
    int o = 0;
    for (int j = 0; j < n; j++) {
        if (!sel[j]) continue;
        st_u16(dst + 2 * (size_t)o, (uint16_t)j);
        st_u16(dst + 2 * (size_t)kk + 2 * (size_t)o, ac_f32_to_f16(p[j] * inv));
        o++;
    }
}

int ac_codec_encode(const ac_map_codec *c, const float *P, int L, void *dst) {
    int rc = ac_codec_check(c, L);
    if (rc) return rc;
    if (!P || !dst) return ac_err(AC_ERR_ARG, "codec encode: NULL map or destination");
    size_t total = ac_codec_map_bytes(c, L);
    uint8_t *out = (uint8_t *)dst;
    float *scratch = NULL; /* [L] TOPK selection */
    uint8_t *sel = NULL;   /* [L] */
    if (c->kind == AC_CODEC_TOPK) {
        scratch = (float *)AC_MALLOC((size_t)L * sizeof(float));
        sel = (uint8_t *)AC_MALLOC((size_t)L);
        if (!scratch || !sel) { rc = AC_ERR_NOMEM; goto done; }
    }
    size_t off = 0;
    for (int t = 0; t < L; t++) {
        const float *p = P + (size_t)t * L; /* [L] */
        int n = ac_codec_row_n(c, L, t);
        float m = 0.0f;
        for (int j = 0; j < n; j++) {
            float v = p[j];
            if (!isfinite(v) || v < 0.0f) {
                rc = ac_err(AC_ERR_ARG, "codec encode: row %d col %d: value %g is not a probability", t, j, (double)v);
                goto done;
            }
            if (v > m) m = v;
        }
        uint8_t *r = out + off;
        switch (c->kind) {
        case AC_CODEC_F32: memcpy(r, p, (size_t)n * 4); break;
        case AC_CODEC_F16:
            for (int j = 0; j < n; j++) st_u16(r + 2 * (size_t)j, ac_f32_to_f16(p[j]));
            break;
        case AC_CODEC_Q8: {
            float inv = m > 0 ? 255.0f / m : 0.0f;
            st_f32(r, m / 255.0f);
            for (int j = 0; j < n; j++) {
                long q = lrintf(p[j] * inv);
                r[4 + j] = (uint8_t)(q > 255 ? 255 : q);
            }
            break;
        }
        case AC_CODEC_Q4: {
            float inv = m > 0 ? 15.0f / m : 0.0f;
            st_f32(r, m / 15.0f);
            memset(r + 4, 0, ((size_t)n + 1) / 2);
            for (int j = 0; j < n; j++) {
                long q = lrintf(p[j] * inv);
                uint8_t qq = (uint8_t)(q > 15 ? 15 : q);
                r[4 + j / 2] |= (uint8_t)((j & 1) ? qq << 4 : qq);
            }
            break;
        }
        case AC_CODEC_TOPK: encode_topk_row(p, n, c->topk, r, scratch, sel); break;
        }
        off += ac_codec_row_bytes(c, n);
    }
    memset(out + off, 0, total - off);
done:
    free(scratch);
    free(sel);
    return rc;
}

/* ---- reference decoders ----------------------------------------------------------------- */
/* Decode a row of n stored columns into row[0..n) (row[n..) untouched). */
static void decode_row_n(const ac_map_codec *c, const uint8_t *r, int n, float *row) {
    switch (c->kind) {
    case AC_CODEC_F32: memcpy(row, r, (size_t)n * 4); break;
    case AC_CODEC_F16:
        for (int j = 0; j < n; j++) row[j] = ac_f16_to_f32(ld_u16(r + 2 * (size_t)j));
        break;
    case AC_CODEC_Q8: {
        float s = ld_f32(r);
        for (int j = 0; j < n; j++) row[j] = (float)r[4 + j] * s;
        break;
    }
    case AC_CODEC_Q4: {
        float s = ld_f32(r);
        for (int j = 0; j < n; j++) {
            uint8_t b = r[4 + j / 2];
            row[j] = (float)((j & 1) ? (b >> 4) : (b & 15)) * s;
        }
        break;
    }
    case AC_CODEC_TOPK: {
        int kk = AC_MIN(c->topk, n);
        for (int j = 0; j < n; j++) row[j] = 0.0f;
        for (int i = 0; i < kk; i++) {
            int j = ld_u16(r + 2 * (size_t)i);
            if (j < n) row[j] = ac_f16_to_f32(ld_u16(r + 2 * (size_t)kk + 2 * (size_t)i));
        }
        break;
    }
    }
}

void ac_codec_decode_row(const ac_map_codec *c, const void *map, int L, int t, float *row) {
    int n = ac_codec_row_n(c, L, t);
    const uint8_t *r = (const uint8_t *)map + ac_codec_row_offset(c, L, t);
    decode_row_n(c, r, n, row);
    for (int j = n; j < L; j++) row[j] = 0.0f;
}

void ac_codec_decode(const ac_map_codec *c, const void *map, int L, float *P) {
    for (int t = 0; t < L; t++) ac_codec_decode_row(c, map, L, t, P + (size_t)t * L);
}

int ac_codec_av_ref(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v,
                    int head_dim, float *out, int ld_o) {
    int rc = ac_codec_check(c, L);
    if (rc) return rc;
    float *row = (float *)AC_MALLOC((size_t)L * sizeof(float));     /* [L] */
    double *acc = (double *)AC_MALLOC((size_t)head_dim * sizeof(double)); /* [head_dim] */
    if (!row || !acc) { free(row); free(acc); return AC_ERR_NOMEM; }
    for (int t = 0; t < L; t++) {
        ac_codec_decode_row(c, map, L, t, row);
        for (int d = 0; d < head_dim; d++) acc[d] = 0.0;
        for (int j = 0; j < L; j++) {
            if (row[j] == 0.0f) continue;
            const float *v = V + (size_t)j * ld_v;
            for (int d = 0; d < head_dim; d++) acc[d] += (double)row[j] * v[d];
        }
        for (int d = 0; d < head_dim; d++) out[(size_t)t * ld_o + d] = (float)acc[d];
    }
    free(row);
    free(acc);
    return AC_OK;
}

/* ---- fused kernels --------------------------------------------------------------------- */
#if AC_CODEC_AVX512

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
        __mmask16 nz = _mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_NEQ_UQ);
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
        __mmask16 nz = (__mmask16)(_mm512_cmp_ps_mask(p0, _mm512_setzero_ps(), _CMP_NEQ_UQ) |
                                   _mm512_cmp_ps_mask(p1, _mm512_setzero_ps(), _CMP_NEQ_UQ));
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

void ac_codec_av_row(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
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

#else /* portable C */

void ac_codec_av_row(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                     float *out) {
    const uint8_t *r = (const uint8_t *)row;
    for (int d = 0; d < head_dim; d++) out[d] = 0.0f;
    if (c->kind == AC_CODEC_TOPK) {
        int kk = AC_MIN(c->topk, n);
        for (int i = 0; i < kk; i++) {
            int j = ld_u16(r + 2 * (size_t)i);
            if (j >= n) continue;
            float p = ac_f16_to_f32(ld_u16(r + 2 * (size_t)kk + 2 * (size_t)i));
            const float *v = V + (size_t)j * ld_v;
            for (int d = 0; d < head_dim; d++) out[d] += p * v[d];
        }
        return;
    }
    float pb[16];
    float s = (c->kind == AC_CODEC_Q8 || c->kind == AC_CODEC_Q4) ? ld_f32(r) : 1.0f;
    for (int j0 = 0; j0 < n; j0 += 16) {
        int m = AC_MIN(16, n - j0);
        for (int i = 0; i < m; i++) {
            int j = j0 + i;
            switch (c->kind) {
            case AC_CODEC_F32: pb[i] = ld_f32(r + 4 * (size_t)j); break;
            case AC_CODEC_F16: pb[i] = ac_f16_to_f32(ld_u16(r + 2 * (size_t)j)); break;
            case AC_CODEC_Q8: pb[i] = (float)r[4 + j] * s; break;
            default: pb[i] = (float)((j & 1) ? (r[4 + j / 2] >> 4) : (r[4 + j / 2] & 15)) * s; break;
            }
        }
        for (int i = 0; i < m; i++) {
            if (pb[i] == 0.0f) continue;
            const float *v = V + (size_t)(j0 + i) * ld_v;
            for (int d = 0; d < head_dim; d++) out[d] += pb[i] * v[d];
        }
    }
}

#endif

void ac_codec_av(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                 float *out, int ld_o) {
    const uint8_t *r = (const uint8_t *)map;
    int t = 0;
#if AC_CODEC_AVX512
    if (c->kind == AC_CODEC_F32 || c->kind == AC_CODEC_F16) {
        for (; t + 1 < L; t += 2) {
            int n0 = ac_codec_row_n(c, L, t), n1 = ac_codec_row_n(c, L, t + 1);
            const uint8_t *r1 = r + ac_codec_row_bytes(c, n0);
            av_row2(c, r, n0, r1, n1, V, ld_v, head_dim, out + (size_t)t * ld_o, out + (size_t)(t + 1) * ld_o);
            r = r1 + ac_codec_row_bytes(c, n1);
        }
    }
#endif
    for (; t < L; t++) {
        int n = ac_codec_row_n(c, L, t);
        ac_codec_av_row(c, r, n, V, ld_v, head_dim, out + (size_t)t * ld_o);
        r += ac_codec_row_bytes(c, n);
    }
}
