/* codec.c — attention-map codecs: encoders, plain reference decoders, and the
 * portable C version of the fused "decode inside A.V" kernels; the SIMD ones
 * (codec_avx2.c, codec_avx512.c, codec_neon.c) are picked at run time.
 * Layouts: codec.h. */
#include "cache/codec.h"
#include "cache/kernels.h"
#include "util/cpu.h"
#include "util/fp16.h"
#include "util/common.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

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
/* code j (0..15) of a q4 row: two per byte after the 4-byte scale, the even column in the low nibble */
static inline unsigned q4_code(const uint8_t *r, int j) { return (j & 1) ? (r[4 + j / 2] >> 4) : (r[4 + j / 2] & 15); }

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
        for (int j = 0; j < n; j++) row[j] = (float)q4_code(r, j) * s;
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

double ac_codec_row_mass(const ac_map_codec *c, const void *row, int n_stored, int n) {
    const uint8_t *r = row;
    n = AC_MAX(0, AC_MIN(n, n_stored));
    double s = 0;
    switch (c->kind) {
    case AC_CODEC_F32:
        for (int j = 0; j < n; j++) s += ld_f32(r + 4 * (size_t)j);
        break;
    case AC_CODEC_F16:
        for (int j = 0; j < n; j++) s += ac_f16_to_f32(ld_u16(r + 2 * (size_t)j));
        break;
    case AC_CODEC_Q8: { /* integer sum of the codes, then the row's scale */
        uint32_t q = 0;
        for (int j = 0; j < n; j++) q += r[4 + j];
        s = (double)ld_f32(r) * q;
        break;
    }
    case AC_CODEC_Q4: {
        uint32_t q = 0;
        for (int j = 0; j < n; j++) q += q4_code(r, j);
        s = (double)ld_f32(r) * q;
        break;
    }
    case AC_CODEC_TOPK: { /* k entries, not n columns; values widened 64 at a time (F16C where it runs) */
        const int kk = AC_MIN(c->topk, n_stored);
        float v[64];
        for (int i0 = 0; i0 < kk; i0 += 64) {
            const int m = AC_MIN(64, kk - i0);
            ac_fp16_row_to_fp32(r + 2 * (size_t)kk + 2 * (size_t)i0, v, m);
            for (int i = 0; i < m; i++)
                if (ld_u16(r + 2 * (size_t)(i0 + i)) < n) s += v[i];
        }
        break;
    }
    }
    return s;
}

float ac_codec_row_value(const ac_map_codec *c, const void *row, int n_stored, int j) {
    const uint8_t *r = row;
    if (j < 0 || j >= n_stored) return 0.0f;
    switch (c->kind) {
    case AC_CODEC_F32: return ld_f32(r + 4 * (size_t)j);
    case AC_CODEC_F16: return ac_f16_to_f32(ld_u16(r + 2 * (size_t)j));
    case AC_CODEC_Q8: return (float)r[4 + j] * ld_f32(r);
    case AC_CODEC_Q4: return (float)q4_code(r, j) * ld_f32(r);
    case AC_CODEC_TOPK: {
        const int kk = AC_MIN(c->topk, n_stored);
        for (int i = 0; i < kk; i++)
            if (ld_u16(r + 2 * (size_t)i) == j) return ac_f16_to_f32(ld_u16(r + 2 * (size_t)kk + 2 * (size_t)i));
        return 0.0f;
    }
    }
    return 0.0f;
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
#if AC_CACHE_NEON
#define AC_PORTABLE __attribute__((unused)) /* aarch64: NEON serves the baseline level */
#else
#define AC_PORTABLE
#endif
/* Portable C: p_j decoded 16 at a time, zero probabilities skipped. Without
 * FMA (the x86-64 baseline) each product is rounded before the add, which the
 * SIMD kernels do not: kernels.h states the tolerance between them. */
AC_PORTABLE static void av_row_c(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
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
            default: pb[i] = (float)q4_code(r, j) * s; break;
            }
        }
        for (int i = 0; i < m; i++) {
            if (pb[i] == 0.0f) continue;
            const float *v = V + (size_t)(j0 + i) * ld_v;
            for (int d = 0; d < head_dim; d++) out[d] += pb[i] * v[d];
        }
    }
}

AC_PORTABLE static void av_c(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim, float *out,
                 int ld_o) {
    const uint8_t *r = (const uint8_t *)map;
    for (int t = 0; t < L; t++) {
        int n = ac_codec_row_n(c, L, t);
        av_row_c(c, r, n, V, ld_v, head_dim, out + (size_t)t * ld_o);
        r += ac_codec_row_bytes(c, n);
    }
}

#if AC_CACHE_NEON
/* NEON is part of every aarch64: its kernel serves the baseline level. */
static void av_neon(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                    float *out, int ld_o) {
    const uint8_t *r = (const uint8_t *)map;
    for (int t = 0; t < L; t++) {
        int n = ac_codec_row_n(c, L, t);
        ac_codec_av_row_neon(c, r, n, V, ld_v, head_dim, out + (size_t)t * ld_o);
        r += ac_codec_row_bytes(c, n);
    }
}
#endif

/* The kernels of each level (util/cpu.h), indexed by ac_cpu_level(). */
static const struct {
    ac_codec_av_row_fn row;
    ac_codec_av_fn map;
} kernels[] = {
#if AC_CACHE_NEON
    {ac_codec_av_row_neon, av_neon}, /* scalar and neon (util/cpu.h): NEON serves both */
    {ac_codec_av_row_neon, av_neon},
#else
    {av_row_c, av_c},
#endif
#if AC_CACHE_X86
    {ac_codec_av_row_avx2, ac_codec_av_avx2},
    {ac_codec_av_row_avx512, ac_codec_av_avx512},
#endif
};

static int level(void) {
    int l = ac_cpu_level();
    return l < (int)(sizeof kernels / sizeof kernels[0]) ? l : 0;
}

int ac_codec_simd(void) { return level(); }

void ac_codec_av_row(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                     float *out) {
    kernels[level()].row(c, row, n, V, ld_v, head_dim, out);
}

void ac_codec_av(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                 float *out, int ld_o) {
    kernels[level()].map(c, map, L, V, ld_v, head_dim, out, ld_o);
}
