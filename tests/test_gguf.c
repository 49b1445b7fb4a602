/* test_gguf.c — GGUF reader/writer: round trips of every value and tensor
 * type (memory and file, v2 and v3, alignment 32 and 64), the real
 * stories260K.gguf, fp16/bf16 conversion, and hostile files: truncation at
 * every byte, a table of targeted corruptions (each asserting the status code
 * and a substring of the message) and a fixed-seed random-mutation loop. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "load/gguf.h"
#include "util/common.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORIES AC_SHARED_DIR "/models/stories260K.gguf"

/* ---- helpers ------------------------------------------------------------------ */

static void st32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void st64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t ld64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Offset of the first occurrence of s (without NUL) in buf; fails the test if absent. */
static size_t find_bytes(const uint8_t *buf, size_t n, const char *s) {
    size_t l = strlen(s);
    for (size_t i = 0; i + l <= n; i++)
        if (memcmp(buf + i, s, l) == 0) return i;
    fail_msg("'%s' not found in buffer", s);
    return 0;
}

/* Read everything the parsed file exposes, so ASan sees any bad pointer. */
static uint64_t touch_all(const ac_gguf_file *g) {
    uint64_t h = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const ac_gguf_kv *kv = &g->kv[i];
        for (uint64_t j = 0; j < kv->key.len; j++) h = h * 31 + (uint8_t)kv->key.ptr[j];
        if (kv->type == AC_GGUF_T_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++) h = h * 31 + (uint8_t)kv->v.str.ptr[j];
        if (kv->type == AC_GGUF_T_ARRAY) {
            if (kv->arr_type == AC_GGUF_T_STRING) {
                for (uint64_t e = 0; e < kv->arr_n; e++)
                    for (uint64_t j = 0; j < kv->arr_str[e].len; j++) h = h * 31 + (uint8_t)kv->arr_str[e].ptr[j];
            } else {
                for (uint64_t e = 0; e < kv->arr_n; e++) {
                    float f = ac_gguf_arr_f32(kv, e);
                    h = h * 31 + (uint64_t)ac_gguf_arr_i32(kv, e) + ac_gguf_arr_u32(kv, e) + (f == f);
                }
            }
        }
        /* lookups by a NUL-terminated copy of the key must find this kv (keys are unique) */
        if (kv->key.len < 256 && !memchr(kv->key.ptr, 0, kv->key.len)) {
            char k[256];
            memcpy(k, kv->key.ptr, kv->key.len);
            k[kv->key.len] = 0;
            assert_ptr_equal(ac_gguf_find(g, k), kv);
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ac_gguf_tensor *t = &g->tensors[i];
        const uint8_t *d = t->data;
        assert_true(d >= g->base && t->nbytes <= g->size && (size_t)(d - g->base) <= g->size - t->nbytes);
        for (size_t j = 0; j < t->nbytes; j++) h += d[j];
        for (uint64_t j = 0; j < t->name.len; j++) h = h * 31 + (uint8_t)t->name.ptr[j];
    }
    return h;
}

/* Open a copy of buf in an exactly-sized heap block (ASan catches any over-read). */
static int open_copy(const uint8_t *buf, size_t n, ac_gguf_file **g, uint8_t **copy) {
    *copy = malloc(n ? n : 1);
    assert_non_null(*copy);
    if (n) memcpy(*copy, buf, n);
    return ac_gguf_open_memory(*copy, n, g);
}

static char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/test_gguf_%d_%s", AC_BINARY_DIR, (int)getpid(), name);
    return p;
}

/* ---- fp16 / bf16 ---------------------------------------------------------------- */

static void test_fp16_exhaustive(void **state) {
    (void)state;
    /* fp16 -> fp32 -> fp16 is the identity on every non-NaN code; NaN stays NaN with its sign */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ac_fp16_to_fp32((uint16_t)h);
        uint16_t back = ac_fp32_to_fp16(f);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) && (back & 0x8000) == (h & 0x8000));
        } else {
            assert_int_equal(back, h);
        }
    }
    /* known values */
    assert_true(ac_fp16_to_fp32(0x3c00) == 1.0f);
    assert_true(ac_fp16_to_fp32(0xc000) == -2.0f);
    assert_true(ac_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    assert_true(ac_fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24)); /* largest subnormal */
    assert_true(ac_fp16_to_fp32(0x0400) == ldexpf(1.0f, -14));
    assert_true(ac_fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(isinf(ac_fp16_to_fp32(0x7c00)) && ac_fp16_to_fp32(0x7c00) > 0);
    assert_true(isinf(ac_fp16_to_fp32(0xfc00)) && ac_fp16_to_fp32(0xfc00) < 0);
    assert_true(signbit(ac_fp16_to_fp32(0x8000)) && ac_fp16_to_fp32(0x8000) == 0.0f);
    assert_int_equal(ac_fp32_to_fp16(INFINITY), 0x7c00);
    assert_int_equal(ac_fp32_to_fp16(-INFINITY), 0xfc00);
    assert_int_equal(ac_fp32_to_fp16(1e10f), 0x7c00);
    assert_int_equal(ac_fp32_to_fp16(65519.99f), 0x7bff);
    assert_int_equal(ac_fp32_to_fp16(65520.0f), 0x7c00); /* tie at the top rounds to even = inf */
    assert_int_equal(ac_fp32_to_fp16(ldexpf(1.0f, -25)), 0x0000); /* tie to even: 0 */
    assert_int_equal(ac_fp32_to_fp16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001);
    assert_int_equal(ac_fp32_to_fp16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp ties to even 2 */
    assert_int_equal(ac_fp32_to_fp16(-0.0f), 0x8000);
    assert_true(isnan(ac_fp16_to_fp32(ac_fp32_to_fp16(NAN))));

    /* fp32 -> fp16 round to nearest even: around every midpoint between adjacent finite fp16 values */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double lo = ac_fp16_to_fp32((uint16_t)h), hi = ac_fp16_to_fp32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact: 12 significant bits */
        assert_true((double)mid == (lo + hi) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        assert_int_equal(ac_fp32_to_fp16(mid), even);
        assert_int_equal(ac_fp32_to_fp16(nextafterf(mid, 0.0f)), h);
        assert_int_equal(ac_fp32_to_fp16(nextafterf(mid, INFINITY)), h + 1);
        assert_int_equal(ac_fp32_to_fp16(-mid), 0x8000 | even);
        assert_int_equal(ac_fp32_to_fp16((float)lo), h);
    }
#if defined(__FLT16_MAX__) && !defined(__clang__)
    /* cross-check against the compiler's conversion on a sweep of bit patterns */
    for (uint64_t u = 0; u < (1ull << 32); u += 65521) {
        uint32_t x = (uint32_t)u;
        float f;
        memcpy(&f, &x, 4);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &r, 2);
        assert_int_equal(ac_fp32_to_fp16(f), rb);
    }
#endif
}

/* Reference bf16 rounding through exact double arithmetic. */
static uint16_t bf16_ref(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t lo = x & 0xffff0000u;
    float flo;
    memcpy(&flo, &lo, 4);
    double dlo = fabs((double)flo), d = fabs((double)f);
    double dhi;
    uint32_t hi = lo + 0x10000u;
    if ((hi & 0x7fffffffu) == 0x7f800000u) dhi = ldexp(1.0, 128);
    else {
        float fhi;
        memcpy(&fhi, &hi, 4);
        dhi = fabs((double)fhi);
    }
    double a = d - dlo, b = dhi - d;
    if (a < b) return (uint16_t)(lo >> 16);
    if (b < a) return (uint16_t)(hi >> 16);
    return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ac_bf16_to_fp32((uint16_t)h);
        uint16_t back = ac_fp32_to_bf16(f);
        if (isnan(f)) assert_true(isnan(ac_bf16_to_fp32(back)) && (back & 0x8000) == (h & 0x8000));
        else assert_int_equal(back, h);
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 2000000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t x = (uint32_t)s;
        if (i & 1) x = (x & 0xffff0000u) | 0x8000u | ((uint32_t)(i >> 1) & 1); /* near ties */
        float f;
        memcpy(&f, &x, 4);
        if (isnan(f) || isinf(f)) continue;
        assert_int_equal(ac_fp32_to_bf16(f), bf16_ref(f));
    }
    assert_int_equal(ac_fp32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(ac_fp32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(ac_fp32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds up to inf */
    assert_true(isnan(ac_bf16_to_fp32(ac_fp32_to_bf16(NAN))));
    uint32_t snan = 0x7f800001u; /* NaN whose payload lives only in the low half stays NaN */
    float fs;
    memcpy(&fs, &snan, 4);
    assert_true(isnan(ac_bf16_to_fp32(ac_fp32_to_bf16(fs))));
}

/* ---- round trip ------------------------------------------------------------------- */

static const char *k_strs[] = {"", "a", "hello world", "\xe2\x96\x81ha", "tab\there"};

typedef struct {
    float f32[8 * 3];        /* [3][8] */
    uint16_t f16[64];        /* [64] */
    uint16_t bf16[4 * 2 * 2 * 2]; /* [2][2][2][4] */
    uint8_t q8[2 * 34];      /* Q8_0 [1][64] = 2 blocks */
    uint8_t q4k[144 * 2];    /* Q4_K [2][256] */
} tensors_in;

static void fill_tensors(tensors_in *t) {
    for (int i = 0; i < 24; i++) t->f32[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 64; i++) t->f16[i] = ac_fp32_to_fp16((float)i / 7.0f);
    for (int i = 0; i < 32; i++) t->bf16[i] = ac_fp32_to_bf16((float)i * -1.5f);
    for (int i = 0; i < (int)sizeof t->q8; i++) t->q8[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < (int)sizeof t->q4k; i++) t->q4k[i] = (uint8_t)(i * 13 + 5);
}

/* Build a writer holding every value type and every tensor type. */
static ac_gguf_writer *build_full(size_t alignment, const tensors_in *tin) {
    ac_gguf_writer *w = ac_gguf_writer_new();
    assert_non_null(w);
    if (alignment != AC_GGUF_DEFAULT_ALIGNMENT) assert_int_equal(ac_gguf_w_u32(w, "general.alignment", (uint32_t)alignment), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "general.architecture", "llama"), AC_OK);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u;
    int32_t i32 = -2000000000;
    float f32 = 1.5f;
    uint8_t b = 1;
    uint64_t u64 = 18000000000000000000ull;
    int64_t i64 = -9000000000000000000ll;
    double f64 = -2.25e300;
    assert_int_equal(ac_gguf_w_raw(w, "v.u8", AC_GGUF_T_UINT8, 0, 0, &u8, 1), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.i8", AC_GGUF_T_INT8, 0, 0, &i8, 1), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.u16", AC_GGUF_T_UINT16, 0, 0, &u16, 2), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.i16", AC_GGUF_T_INT16, 0, 0, &i16, 2), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.u32", AC_GGUF_T_UINT32, 0, 0, &u32, 4), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.i32", AC_GGUF_T_INT32, 0, 0, &i32, 4), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.f32", AC_GGUF_T_FLOAT32, 0, 0, &f32, 4), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.bool", AC_GGUF_T_BOOL, 0, 0, &b, 1), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.u64", AC_GGUF_T_UINT64, 0, 0, &u64, 8), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.i64", AC_GGUF_T_INT64, 0, 0, &i64, 8), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.f64", AC_GGUF_T_FLOAT64, 0, 0, &f64, 8), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "v.strnul", AC_GGUF_T_STRING, 0, 0, "a\0b", 3), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "v.str", "stories"), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "v.empty", ""), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "c.u32", 7), AC_OK);
    assert_int_equal(ac_gguf_w_i32(w, "c.i32", -7), AC_OK);
    assert_int_equal(ac_gguf_w_u64(w, "c.u64", 1ull << 40), AC_OK);
    assert_int_equal(ac_gguf_w_f32(w, "c.f32", 1e-5f), AC_OK);
    assert_int_equal(ac_gguf_w_bool(w, "c.bool", 0), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "c.replaced", 1), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "c.replaced", "now a string"), AC_OK); /* replaces in place */
    /* arrays of every element type */
    uint8_t au8[3] = {0, 128, 255};
    int8_t ai8[3] = {-128, 0, 127};
    uint16_t au16[2] = {1, 65535};
    int16_t ai16[2] = {-32768, 32767};
    uint32_t au32[3] = {0, 1, 4294967295u};
    int32_t ai32[4] = {-1, 0, 1, 2147483647};
    float af32[3] = {-0.5f, 0.0f, 3.25f};
    uint8_t abool[4] = {1, 0, 0, 1};
    uint64_t au64[2] = {0, 1ull << 63};
    int64_t ai64[2] = {INT64_MIN, INT64_MAX};
    double af64[3] = {1e-300, -7.0, -1e300};
    assert_int_equal(ac_gguf_w_raw(w, "a.u8", AC_GGUF_T_ARRAY, AC_GGUF_T_UINT8, 3, au8, sizeof au8), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.i8", AC_GGUF_T_ARRAY, AC_GGUF_T_INT8, 3, ai8, sizeof ai8), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.u16", AC_GGUF_T_ARRAY, AC_GGUF_T_UINT16, 2, au16, sizeof au16), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.i16", AC_GGUF_T_ARRAY, AC_GGUF_T_INT16, 2, ai16, sizeof ai16), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.u32", AC_GGUF_T_ARRAY, AC_GGUF_T_UINT32, 3, au32, sizeof au32), AC_OK);
    assert_int_equal(ac_gguf_w_arr_i32(w, "a.i32", ai32, 4), AC_OK);
    assert_int_equal(ac_gguf_w_arr_f32(w, "a.f32", af32, 3), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.bool", AC_GGUF_T_ARRAY, AC_GGUF_T_BOOL, 4, abool, sizeof abool), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.u64", AC_GGUF_T_ARRAY, AC_GGUF_T_UINT64, 2, au64, sizeof au64), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.i64", AC_GGUF_T_ARRAY, AC_GGUF_T_INT64, 2, ai64, sizeof ai64), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "a.f64", AC_GGUF_T_ARRAY, AC_GGUF_T_FLOAT64, 3, af64, sizeof af64), AC_OK);
    assert_int_equal(ac_gguf_w_arr_str(w, "a.str", k_strs, 5), AC_OK);
    assert_int_equal(ac_gguf_w_arr_f32(w, "a.empty", NULL, 0), AC_OK);
    uint8_t rawstr[8 + 2 + 8 + 0];
    st64(rawstr, 2);
    memcpy(rawstr + 8, "xy", 2);
    st64(rawstr + 10, 0);
    assert_int_equal(ac_gguf_w_raw(w, "a.rawstr", AC_GGUF_T_ARRAY, AC_GGUF_T_STRING, 2, rawstr, sizeof rawstr), AC_OK);
    /* tensors: every supported type, 1-4 dims, plus a known-but-unsupported one */
    int64_t ne_f32[2] = {8, 3}, ne_f16[1] = {64}, ne_bf16[4] = {4, 2, 2, 2}, ne_q8[2] = {64, 1}, ne_q4k[2] = {256, 2};
    assert_int_equal(ac_gguf_w_tensor(w, "t.f32", GGML_F32, 2, ne_f32, tin->f32), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "t.f16", GGML_F16, 1, ne_f16, tin->f16), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "t.bf16", GGML_BF16, 4, ne_bf16, tin->bf16), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "t.q8_0", GGML_Q8_0, 2, ne_q8, tin->q8), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "blk.0.attn_q.weight", GGML_Q4_K, 2, ne_q4k, tin->q4k), AC_OK);
    return w;
}

static void check_full(const ac_gguf_file *g, uint32_t version, size_t alignment, const tensors_in *tin) {
    int64_t iv;
    double dv;
    int bv;
    ac_gguf_str sv;
    const ac_gguf_kv *kv;
    assert_int_equal(g->version, version);
    assert_int_equal(g->alignment, alignment);
    assert_int_equal(g->data_offset % alignment, 0);
    assert_int_equal(g->n_tensors, 5);
    assert_int_equal(g->n_kv, 35 + (alignment != AC_GGUF_DEFAULT_ALIGNMENT));
    assert_int_equal(ac_gguf_get_str(g, "general.architecture", &sv, 1), AC_OK);
    assert_true(ac_gguf_str_eq(sv, "llama"));
    assert_int_equal(ac_gguf_get_int(g, "v.u8", &iv, 1), AC_OK);
    assert_int_equal(iv, 200);
    assert_int_equal(ac_gguf_get_int(g, "v.i8", &iv, 1), AC_OK);
    assert_int_equal(iv, -100);
    assert_int_equal(ac_gguf_get_int(g, "v.u16", &iv, 1), AC_OK);
    assert_int_equal(iv, 60000);
    assert_int_equal(ac_gguf_get_int(g, "v.i16", &iv, 1), AC_OK);
    assert_int_equal(iv, -30000);
    assert_int_equal(ac_gguf_get_int(g, "v.u32", &iv, 1), AC_OK);
    assert_int_equal(iv, 4000000000ll);
    assert_int_equal(ac_gguf_get_int(g, "v.i32", &iv, 1), AC_OK);
    assert_int_equal(iv, -2000000000ll);
    assert_int_equal(ac_gguf_get_float(g, "v.f32", &dv, 1), AC_OK);
    assert_true(dv == 1.5);
    assert_int_equal(ac_gguf_get_bool(g, "v.bool", &bv, 1), AC_OK);
    assert_int_equal(bv, 1);
    kv = ac_gguf_find(g, "v.u64");
    assert_non_null(kv);
    assert_int_equal(kv->type, AC_GGUF_T_UINT64);
    assert_true(kv->v.u64 == 18000000000000000000ull);
    assert_int_equal(ac_gguf_get_int(g, "v.u64", &iv, 1), AC_ERR_FORMAT); /* > INT64_MAX */
    assert_non_null(strstr(ac_last_error(), "v.u64"));
    assert_int_equal(ac_gguf_get_int(g, "v.i64", &iv, 1), AC_OK);
    assert_true(iv == -9000000000000000000ll);
    assert_int_equal(ac_gguf_get_float(g, "v.f64", &dv, 1), AC_OK);
    assert_true(dv == -2.25e300);
    assert_int_equal(ac_gguf_get_str(g, "v.strnul", &sv, 1), AC_OK);
    assert_int_equal(sv.len, 3);
    assert_memory_equal(sv.ptr, "a\0b", 3);
    assert_false(ac_gguf_str_eq(sv, "a"));
    assert_int_equal(ac_gguf_get_str(g, "v.str", &sv, 1), AC_OK);
    assert_true(ac_gguf_str_eq(sv, "stories"));
    assert_int_equal(ac_gguf_get_str(g, "v.empty", &sv, 1), AC_OK);
    assert_int_equal(sv.len, 0);
    assert_true(ac_gguf_str_eq(sv, ""));
    assert_int_equal(ac_gguf_get_int(g, "c.u32", &iv, 1), AC_OK);
    assert_int_equal(iv, 7);
    assert_int_equal(ac_gguf_get_int(g, "c.i32", &iv, 1), AC_OK);
    assert_int_equal(iv, -7);
    assert_int_equal(ac_gguf_get_int(g, "c.u64", &iv, 1), AC_OK);
    assert_int_equal(iv, 1ll << 40);
    assert_int_equal(ac_gguf_get_float(g, "c.f32", &dv, 1), AC_OK);
    assert_true(dv == (double)1e-5f);
    assert_int_equal(ac_gguf_get_bool(g, "c.bool", &bv, 1), AC_OK);
    assert_int_equal(bv, 0);
    assert_int_equal(ac_gguf_get_str(g, "c.replaced", &sv, 1), AC_OK);
    assert_true(ac_gguf_str_eq(sv, "now a string"));
    assert_int_equal(g->kv[1 + (alignment != AC_GGUF_DEFAULT_ALIGNMENT)].type, AC_GGUF_T_UINT8); /* insertion order */
    /* arrays */
    assert_int_equal(ac_gguf_get_arr(g, "a.u8", AC_GGUF_T_UINT8, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 3);
    assert_int_equal(ac_gguf_arr_u32(kv, 2), 255);
    assert_int_equal(ac_gguf_arr_i32(kv, 1), 128);
    assert_int_equal(ac_gguf_get_arr(g, "a.i8", AC_GGUF_T_INT8, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_i32(kv, 0), -128);
    assert_true(ac_gguf_arr_f32(kv, 2) == 127.0f);
    assert_int_equal(ac_gguf_get_arr(g, "a.u16", AC_GGUF_T_UINT16, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_u32(kv, 1), 65535);
    assert_int_equal(ac_gguf_get_arr(g, "a.i16", AC_GGUF_T_INT16, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_i32(kv, 0), -32768);
    assert_int_equal(ac_gguf_get_arr(g, "a.u32", AC_GGUF_T_UINT32, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_u32(kv, 2), 4294967295u);
    assert_int_equal(ac_gguf_get_arr(g, "a.i32", AC_GGUF_T_INT32, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 4);
    assert_int_equal(ac_gguf_arr_i32(kv, 0), -1);
    assert_int_equal(ac_gguf_arr_i32(kv, 3), 2147483647);
    assert_int_equal(ac_gguf_arr_i32(kv, 4), 0); /* out of range -> 0 */
    assert_int_equal(ac_gguf_get_arr(g, "a.f32", AC_GGUF_T_FLOAT32, &kv, 1), AC_OK);
    assert_true(ac_gguf_arr_f32(kv, 0) == -0.5f && ac_gguf_arr_f32(kv, 2) == 3.25f);
    assert_int_equal(ac_gguf_arr_i32(kv, 2), 3); /* converted, truncated */
    assert_int_equal(ac_gguf_get_arr(g, "a.bool", AC_GGUF_T_BOOL, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_u32(kv, 0), 1);
    assert_int_equal(ac_gguf_arr_u32(kv, 1), 0);
    assert_int_equal(ac_gguf_get_arr(g, "a.u64", AC_GGUF_T_UINT64, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 2);
    assert_true(ld64((const uint8_t *)kv->arr_data + 8) == 1ull << 63);
    assert_int_equal(ac_gguf_get_arr(g, "a.i64", AC_GGUF_T_INT64, &kv, 1), AC_OK);
    assert_true((int64_t)ld64(kv->arr_data) == INT64_MIN);
    assert_int_equal(ac_gguf_get_arr(g, "a.f64", AC_GGUF_T_FLOAT64, &kv, 1), AC_OK);
    assert_true(ac_gguf_arr_f32(kv, 1) == -7.0f);
    assert_true(isinf(ac_gguf_arr_f32(kv, 2)) && ac_gguf_arr_f32(kv, 2) < 0);
    assert_int_equal(ac_gguf_arr_i32(kv, 2), 0); /* not representable: 0 */
    assert_int_equal(ac_gguf_get_arr(g, "a.str", AC_GGUF_T_STRING, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 5);
    assert_null(kv->arr_data);
    for (int i = 0; i < 5; i++) assert_true(ac_gguf_str_eq(kv->arr_str[i], k_strs[i]));
    assert_int_equal(ac_gguf_arr_i32(kv, 0), 0); /* not numeric */
    assert_int_equal(ac_gguf_get_arr(g, "a.empty", AC_GGUF_T_FLOAT32, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 0);
    assert_int_equal(ac_gguf_get_arr(g, "a.rawstr", AC_GGUF_T_COUNT, &kv, 1), AC_OK); /* any element type */
    assert_int_equal(kv->arr_type, AC_GGUF_T_STRING);
    assert_true(ac_gguf_str_eq(kv->arr_str[0], "xy") && ac_gguf_str_eq(kv->arr_str[1], ""));
    /* tensors */
    struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[4];
        const void *data;
        size_t nbytes;
    } exp[5] = {
        {"t.f32", GGML_F32, 2, {8, 3, 1, 1}, tin->f32, sizeof tin->f32},
        {"t.f16", GGML_F16, 1, {64, 1, 1, 1}, tin->f16, sizeof tin->f16},
        {"t.bf16", GGML_BF16, 4, {4, 2, 2, 2}, tin->bf16, sizeof tin->bf16},
        {"t.q8_0", GGML_Q8_0, 2, {64, 1, 1, 1}, tin->q8, sizeof tin->q8},
        {"blk.0.attn_q.weight", GGML_Q4_K, 2, {256, 2, 1, 1}, tin->q4k, sizeof tin->q4k},
    };
    for (int i = 0; i < 5; i++) {
        const ac_gguf_tensor *t = ac_gguf_find_tensor(g, exp[i].name);
        assert_non_null(t);
        assert_ptr_equal(t, &g->tensors[i]);
        assert_int_equal(t->type, exp[i].type);
        assert_int_equal(t->n_dims, exp[i].n_dims);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], exp[i].ne[d]);
        assert_int_equal(t->nbytes, exp[i].nbytes);
        assert_int_equal(t->offset % alignment, 0);
        assert_int_equal(((const uint8_t *)t->data - g->base) % alignment, 0);
        assert_memory_equal(t->data, exp[i].data, exp[i].nbytes);
        if (exp[i].type != GGML_Q4_K) {
            assert_true(ggml_dtype_supported(t->type));
            assert_int_equal(ggml_row_bytes(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]), t->nbytes);
            const ac_gguf_tensor *o = NULL;
            assert_int_equal(ac_gguf_expect_tensor(g, exp[i].name, exp[i].n_dims, exp[i].ne, &o, 1), AC_OK);
            assert_ptr_equal(o, t);
        }
    }
    assert_int_equal(ggml_row_bytes(GGML_Q8_0, 64), 68);
    /* f16 / bf16 payloads decode to what was written */
    const ac_gguf_tensor *t = ac_gguf_find_tensor(g, "t.f16");
    uint16_t h;
    memcpy(&h, (const uint8_t *)t->data + 2 * 14, 2);
    assert_true(ac_fp16_to_fp32(h) == ac_fp16_to_fp32(ac_fp32_to_fp16(2.0f)));
    /* unsupported type: parsed, but reported by name */
    t = ac_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_false(ggml_dtype_supported(t->type));
    assert_int_equal(ggml_row_bytes(t->type, 256), 0);
    assert_int_equal(ggml_row_bytes_any(t->type, 256), 144);
    assert_string_equal(ggml_dtype_name(t->type), "Q4_K");
    assert_int_equal(ac_gguf_check_supported(t), AC_ERR_UNSUPPORTED);
    assert_string_equal(ac_last_error(), "unsupported type Q4_K in tensor blk.0.attn_q.weight");
    int64_t ne_q4k[2] = {256, 2};
    assert_int_equal(ac_gguf_expect_tensor(g, "blk.0.attn_q.weight", 2, ne_q4k, NULL, 1), AC_ERR_UNSUPPORTED);
    assert_non_null(strstr(ac_last_error(), "unsupported type Q4_K in tensor blk.0.attn_q.weight"));
    touch_all(g);
}

static void test_roundtrip(void **state) {
    (void)state;
    tensors_in tin;
    fill_tensors(&tin);
    for (uint32_t version = 2; version <= 3; version++) {
        for (size_t alignment = 32; alignment <= 64; alignment *= 2) {
            ac_gguf_writer *w = build_full(alignment, &tin);
            uint8_t *buf = NULL;
            size_t size = 0;
            assert_int_equal(ac_gguf_w_to_memory(w, version, &buf, &size), AC_OK);
            assert_int_equal(size % alignment, 0);
            /* memory */
            ac_gguf_file *g = NULL;
            uint8_t *copy;
            assert_int_equal(open_copy(buf, size, &g, &copy), AC_OK);
            check_full(g, version, alignment, &tin);
            assert_int_equal(g->mapped, 0);
            ac_gguf_close(g);
            free(copy);
            /* file: bytes identical to the memory serialisation, mmap'd */
            const char *path = tmp_path("rt.gguf");
            assert_int_equal(ac_gguf_w_write(w, path, version), AC_OK);
            FILE *f = fopen(path, "rb");
            assert_non_null(f);
            uint8_t *fb = malloc(size + 1);
            assert_int_equal(fread(fb, 1, size + 1, f), size);
            fclose(f);
            assert_memory_equal(fb, buf, size);
            free(fb);
            assert_int_equal(ac_gguf_open(path, &g), AC_OK);
            assert_int_equal(g->mapped, 1);
            check_full(g, version, alignment, &tin);
            ac_gguf_close(g);
            unlink(path);
            free(buf);
            ac_gguf_writer_free(w);
        }
    }
}

/* A file with no tensors and no kvs; a writer with general.alignment but no tensors. */
static void test_empty_files(void **state) {
    (void)state;
    ac_gguf_writer *w = ac_gguf_writer_new();
    uint8_t *buf;
    size_t size;
    ac_gguf_file *g;
    assert_int_equal(ac_gguf_w_to_memory(w, 3, &buf, &size), AC_OK);
    assert_int_equal(size, 32); /* 24-byte header + padding */
    assert_int_equal(ac_gguf_open_memory(buf, size, &g), AC_OK);
    assert_int_equal(g->n_kv, 0);
    assert_int_equal(g->n_tensors, 0);
    assert_null(ac_gguf_find(g, "x"));
    assert_null(ac_gguf_find_tensor(g, "x"));
    ac_gguf_close(g);
    assert_int_equal(ac_gguf_open_memory(buf, 24, &g), AC_OK); /* tensor-less file without final padding */
    assert_int_equal(g->data_offset, 24);
    ac_gguf_close(g);
    free(buf);
    ac_gguf_writer_free(w);
}

/* ---- getters ------------------------------------------------------------------ */

static void test_getters(void **state) {
    (void)state;
    ac_gguf_writer *w = ac_gguf_writer_new();
    assert_int_equal(ac_gguf_w_u32(w, "n", 5), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "s", "x"), AC_OK);
    assert_int_equal(ac_gguf_w_f32(w, "f", 0.5f), AC_OK);
    assert_int_equal(ac_gguf_w_bool(w, "b", 1), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "llama.block_count", 5), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "llama.block_count2", 6), AC_OK);
    float row[4] = {1, 2, 3, 4};
    int64_t ne[2] = {4, 1};
    assert_int_equal(ac_gguf_w_tensor(w, "w", GGML_F32, 2, ne, row), AC_OK);
    uint8_t *buf;
    size_t size;
    ac_gguf_file *g;
    assert_int_equal(ac_gguf_w_to_memory(w, 3, &buf, &size), AC_OK);
    assert_int_equal(ac_gguf_open_memory(buf, size, &g), AC_OK);
    int64_t iv = 42;
    double dv = 42;
    int bv = 42;
    ac_gguf_str sv = {0, NULL};
    const ac_gguf_kv *kv = NULL;
    /* missing */
    assert_int_equal(ac_gguf_get_int(g, "nope", &iv, 0), AC_OK);
    assert_int_equal(iv, 42);
    assert_int_equal(ac_gguf_get_int(g, "nope", &iv, 1), AC_ERR_FORMAT);
    assert_string_equal(ac_last_error(), "missing required key nope");
    assert_int_equal(ac_gguf_get_float(g, "nope", &dv, 0), AC_OK);
    assert_true(dv == 42);
    assert_int_equal(ac_gguf_get_bool(g, "nope", &bv, 1), AC_ERR_FORMAT);
    assert_int_equal(ac_gguf_get_str(g, "nope", &sv, 0), AC_OK);
    assert_null(sv.ptr);
    assert_int_equal(ac_gguf_get_arr(g, "nope", AC_GGUF_T_STRING, &kv, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "nope"));
    /* wrong type */
    assert_int_equal(ac_gguf_get_int(g, "s", &iv, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "key s: expected an integer"));
    assert_int_equal(ac_gguf_get_int(g, "f", &iv, 1), AC_ERR_FORMAT);
    assert_int_equal(ac_gguf_get_str(g, "n", &sv, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "key n: expected string"));
    assert_int_equal(ac_gguf_get_bool(g, "n", &bv, 1), AC_ERR_FORMAT);
    assert_int_equal(ac_gguf_get_float(g, "s", &dv, 1), AC_ERR_FORMAT);
    assert_int_equal(ac_gguf_get_arr(g, "n", AC_GGUF_T_INT32, &kv, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "expected array of i32"));
    /* conversions */
    assert_int_equal(ac_gguf_get_float(g, "n", &dv, 1), AC_OK);
    assert_true(dv == 5.0);
    assert_int_equal(ac_gguf_get_int(g, "b", &iv, 1), AC_OK);
    assert_int_equal(iv, 1);
    /* exact-length key matching (keys are not NUL-terminated in the file) */
    assert_int_equal(ac_gguf_get_int(g, "llama.block_count", &iv, 1), AC_OK);
    assert_int_equal(iv, 5);
    assert_null(ac_gguf_find(g, "llama.block_coun"));
    assert_null(ac_gguf_find(g, "llama.block_count22"));
    assert_null(ac_gguf_find(g, ""));
    assert_null(ac_gguf_find(g, NULL));
    assert_null(ac_gguf_find_tensor(g, "ww"));
    /* expect_tensor */
    const ac_gguf_tensor *t = (const ac_gguf_tensor *)1;
    int64_t bad[2] = {4, 2};
    assert_int_equal(ac_gguf_expect_tensor(g, "w", 2, bad, &t, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "tensor w: shape [4 x 1], expected [4 x 2]"));
    assert_int_equal(ac_gguf_expect_tensor(g, "w", 1, ne, &t, 1), AC_ERR_FORMAT);
    assert_int_equal(ac_gguf_expect_tensor(g, "missing", 2, ne, &t, 1), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "missing required tensor missing"));
    assert_int_equal(ac_gguf_expect_tensor(g, "missing", 2, ne, &t, 0), AC_OK);
    assert_null(t);
    assert_int_equal(ac_gguf_expect_tensor(g, "w", 2, ne, &t, 1), AC_OK);
    assert_non_null(t);
    /* dtype table */
    assert_string_equal(ggml_dtype_name(GGML_Q6_K), "Q6_K");
    assert_string_equal(ggml_dtype_name(4), "type#4");
    assert_string_equal(ggml_dtype_name(999), "type#999");
    assert_false(ggml_dtype_known(4));
    assert_true(ggml_dtype_known(GGML_MXFP4));
    assert_false(ggml_dtype_known(GGML_DTYPE_COUNT));
    assert_int_equal(ggml_row_bytes(GGML_Q8_0, 33), 0);
    assert_int_equal(ggml_row_bytes(GGML_Q8_0, 0), 0);
    assert_int_equal(ggml_row_bytes(GGML_F16, 3), 6);
    assert_int_equal(ggml_row_bytes(GGML_BF16, 5), 10);
    assert_int_equal(ggml_row_bytes(GGML_F32, 5), 20);
    ac_gguf_close(g);
    free(buf);
    ac_gguf_writer_free(w);
}

static void test_writer_errors(void **state) {
    (void)state;
    ac_gguf_writer *w = ac_gguf_writer_new();
    float x[32] = {0};
    int64_t ne[2] = {32, 1}, ne_bad[2] = {31, 1}, ne_neg[2] = {32, -1};
    uint8_t *buf;
    size_t size;
    assert_int_equal(ac_gguf_w_tensor(w, "a", GGML_F32, 2, ne, x), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "a", GGML_F32, 2, ne, x), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "duplicate tensor a"));
    assert_int_equal(ac_gguf_w_tensor(w, "q", GGML_Q8_0, 2, ne_bad, x), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_tensor(w, "n", GGML_F32, 2, ne_neg, x), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_tensor(w, "u", 4, 2, ne, x), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_tensor(w, "d", GGML_F32, 5, ne, x), AC_ERR_ARG);
    uint8_t b7 = 7;
    assert_int_equal(ac_gguf_w_raw(w, "b", AC_GGUF_T_BOOL, 0, 0, &b7, 1), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_raw(w, "n", AC_GGUF_T_ARRAY, AC_GGUF_T_ARRAY, 0, NULL, 0), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_raw(w, "s", AC_GGUF_T_UINT32, 0, 0, x, 3), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_to_memory(w, 1, &buf, &size), AC_ERR_ARG);
    assert_int_equal(ac_gguf_w_u32(w, "general.alignment", 3), AC_OK);
    assert_int_equal(ac_gguf_w_to_memory(w, 3, &buf, &size), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "general.alignment = 3"));
    assert_int_equal(ac_gguf_w_u32(w, "general.alignment", 0), AC_OK);
    assert_int_equal(ac_gguf_w_write(w, tmp_path("bad.gguf"), 3), AC_ERR_ARG);
    assert_int_equal(access(tmp_path("bad.gguf"), F_OK), -1);
    assert_int_equal(ac_gguf_w_u32(w, "general.alignment", 4096), AC_OK);
    assert_int_equal(ac_gguf_w_to_memory(w, 3, &buf, &size), AC_OK);
    assert_int_equal(size, 8192);
    free(buf);
    assert_int_equal(ac_gguf_w_write(w, "/nonexistent-dir/x.gguf", 3), AC_ERR_IO);
    ac_gguf_writer_free(w);
}

/* Atomic write: replaces an existing file, leaves no temp files behind. */
static void test_file_io(void **state) {
    (void)state;
    const char *path = tmp_path("atomic.gguf");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("old contents", f);
    fclose(f);
    ac_gguf_writer *w = ac_gguf_writer_new();
    assert_int_equal(ac_gguf_w_str(w, "k", "v"), AC_OK);
    assert_int_equal(ac_gguf_w_write(w, path, 2), AC_OK);
    ac_gguf_file *g;
    assert_int_equal(ac_gguf_open(path, &g), AC_OK);
    assert_int_equal(g->version, 2);
    assert_non_null(ac_gguf_find(g, "k"));
    ac_gguf_close(g);
    DIR *d = opendir(AC_BINARY_DIR);
    assert_non_null(d);
    struct dirent *e;
    char pre[64];
    snprintf(pre, sizeof pre, "test_gguf_%d_atomic.gguf.tmp.", (int)getpid());
    while ((e = readdir(d))) assert_null(strstr(e->d_name, pre));
    closedir(d);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    /* truncated file on disk: error names the path */
    assert_int_equal(truncate(path, 40), 0);
    assert_int_equal(ac_gguf_open(path, &g), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), path));
    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(ac_gguf_open(path, &g), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "too small"));
    unlink(path);
    assert_int_equal(ac_gguf_open(path, &g), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), path));
    assert_int_equal(ac_gguf_open(AC_BINARY_DIR, &g), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), "not a regular file"));
    ac_gguf_writer_free(w);
}

/* ---- the real model -------------------------------------------------------------- */

static void test_stories260k(void **state) {
    (void)state;
    if (access(STORIES, R_OK) != 0) {
        print_message("skip: %s absent\n", STORIES);
        skip();
    }
    ac_gguf_file *g;
    assert_int_equal(ac_gguf_open(STORIES, &g), AC_OK);
    /* values checked independently with gguf-py 0.17.1 (GGUFReader) */
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_kv, 19);
    assert_int_equal(g->n_tensors, 48);
    assert_int_equal(g->data_offset, 14176);
    ac_gguf_str s;
    assert_int_equal(ac_gguf_get_str(g, "general.architecture", &s, 1), AC_OK);
    assert_true(ac_gguf_str_eq(s, "llama"));
    int64_t v;
    assert_int_equal(ac_gguf_get_int(g, "llama.embedding_length", &v, 1), AC_OK);
    assert_int_equal(v, 64);
    assert_int_equal(ac_gguf_get_int(g, "llama.block_count", &v, 1), AC_OK);
    assert_int_equal(v, 5);
    assert_int_equal(ac_gguf_get_int(g, "llama.attention.head_count", &v, 1), AC_OK);
    assert_int_equal(v, 8);
    assert_int_equal(ac_gguf_get_int(g, "llama.context_length", &v, 1), AC_OK);
    assert_int_equal(v, 128);
    double eps;
    assert_int_equal(ac_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps, 1), AC_OK);
    assert_true(fabs(eps - 1e-5) < 1e-10);
    const ac_gguf_kv *kv;
    assert_int_equal(ac_gguf_get_arr(g, "tokenizer.ggml.tokens", AC_GGUF_T_STRING, &kv, 1), AC_OK);
    assert_int_equal(kv->arr_n, 512);
    assert_true(ac_gguf_str_eq(kv->arr_str[300], "\xe2\x96\x81ha"));
    assert_int_equal(ac_gguf_get_arr(g, "tokenizer.ggml.scores", AC_GGUF_T_FLOAT32, &kv, 1), AC_OK);
    assert_true(ac_gguf_arr_f32(kv, 300) == -41.0f);
    assert_int_equal(ac_gguf_get_arr(g, "tokenizer.ggml.token_type", AC_GGUF_T_INT32, &kv, 1), AC_OK);
    assert_int_equal(ac_gguf_arr_i32(kv, 0), 2);
    assert_int_equal(ac_gguf_arr_i32(kv, 3), 6);
    const ac_gguf_tensor *t;
    int64_t ne[2] = {64, 512};
    assert_int_equal(ac_gguf_expect_tensor(g, "token_embd.weight", 2, ne, &t, 1), AC_OK);
    assert_int_equal(t->type, GGML_F32);
    assert_int_equal(t->offset, 0);
    assert_ptr_equal(t->data, g->base + 14176);
    char name[64];
    for (int l = 0; l < 5; l++) {
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        int64_t ne_down[2] = {172, 64};
        assert_int_equal(ac_gguf_expect_tensor(g, name, 2, ne_down, &t, 1), AC_OK);
    }
    touch_all(g);
    ac_gguf_close(g);
}

/* ---- hostile files ------------------------------------------------------------------ */

/* Small valid file used for truncation and mutation: every value kind, 3 tensors. */
static void small_file(uint32_t version, uint8_t **buf, size_t *size) {
    ac_gguf_writer *w = ac_gguf_writer_new();
    assert_non_null(w);
    static const char *toks[] = {"<s>", "</s>", "ab"};
    float sc[3] = {0, -1, -2.5f};
    int32_t tt[3] = {3, 3, 1};
    uint8_t u8 = 9, b = 1;
    assert_int_equal(ac_gguf_w_u32(w, "general.alignment", 32), AC_OK);
    assert_int_equal(ac_gguf_w_str(w, "general.architecture", "llama"), AC_OK);
    assert_int_equal(ac_gguf_w_u32(w, "llama.block_count", 2), AC_OK);
    assert_int_equal(ac_gguf_w_f32(w, "llama.eps", 1e-6f), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "k.u8", AC_GGUF_T_UINT8, 0, 0, &u8, 1), AC_OK);
    assert_int_equal(ac_gguf_w_raw(w, "k.bool", AC_GGUF_T_BOOL, 0, 0, &b, 1), AC_OK);
    assert_int_equal(ac_gguf_w_arr_str(w, "tok.list", toks, 3), AC_OK);
    assert_int_equal(ac_gguf_w_arr_f32(w, "tok.scores", sc, 3), AC_OK);
    assert_int_equal(ac_gguf_w_arr_i32(w, "tok.types", tt, 3), AC_OK);
    uint8_t bools[3] = {0, 1, 1};
    assert_int_equal(ac_gguf_w_raw(w, "k.bools", AC_GGUF_T_ARRAY, AC_GGUF_T_BOOL, 3, bools, 3), AC_OK);
    float a[12];
    uint16_t h[8];
    uint8_t q[34];
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    for (int i = 0; i < 8; i++) h[i] = ac_fp32_to_fp16((float)i);
    for (int i = 0; i < 34; i++) q[i] = (uint8_t)i;
    int64_t ne_a[2] = {4, 3}, ne_h[1] = {8}, ne_q[1] = {32};
    assert_int_equal(ac_gguf_w_tensor(w, "tA", GGML_F32, 2, ne_a, a), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "tB", GGML_F16, 1, ne_h, h), AC_OK);
    assert_int_equal(ac_gguf_w_tensor(w, "tQ", GGML_Q8_0, 1, ne_q, q), AC_OK); /* 34 bytes: padding follows */
    assert_int_equal(ac_gguf_w_to_memory(w, version, buf, size), AC_OK);
    ac_gguf_writer_free(w);
}

static void test_truncation_every_byte(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        uint8_t *buf;
        size_t size;
        small_file(version, &buf, &size);
        ac_gguf_file *g;
        uint8_t *copy;
        assert_int_equal(open_copy(buf, size, &g, &copy), AC_OK);
        uint64_t ref = touch_all(g);
        size_t need = 0; /* end of the last tensor's data: shorter files lose data */
        for (uint64_t i = 0; i < g->n_tensors; i++)
            need = AC_MAX(need, (size_t)((const uint8_t *)g->tensors[i].data - g->base) + g->tensors[i].nbytes);
        ac_gguf_close(g);
        free(copy);
        assert_true(need < size); /* the Q8_0 tensor leaves trailing padding */
        int n_fail = 0;
        for (size_t len = 0; len <= size; len++) {
            int rc = open_copy(buf, len, &g, &copy);
            if (len < need) {
                if (rc != AC_ERR_FORMAT) fail_msg("truncation at %zu of %zu: rc %d, want AC_ERR_FORMAT", len, size, rc);
                assert_true(strlen(ac_last_error()) > 0);
                n_fail++;
            } else {
                if (rc != AC_OK) fail_msg("length %zu >= %zu must parse: %s", len, need, ac_last_error());
                assert_int_equal(touch_all(g), ref);
                ac_gguf_close(g);
            }
            free(copy);
        }
        assert_int_equal(n_fail, need);
        free(buf);
    }
}

/* One targeted corruption of small_file(): mutate, then expect code + substring. */
typedef struct {
    const char *name;
    void (*mutate)(uint8_t **buf, size_t *size);
    int code;
    const char *msg;
} corrupt_case;

/* positions inside small_file() */
static size_t kv_value(const uint8_t *b, size_t n, const char *key) { /* offset of the value after type */
    return find_bytes(b, n, key) + strlen(key) + 4;
}
static size_t tinfo(const uint8_t *b, size_t n, const char *name) { /* offset of n_dims in a tensor info */
    return find_bytes(b, n, name) + strlen(name);
}
/* tensor info field offsets (from n_dims) for a tensor with n_dims dims */
#define TI_NE(nd_off, d) ((nd_off) + 4 + 8 * (d))
#define TI_TYPE(nd_off, nd) ((nd_off) + 4 + 8 * (nd))
#define TI_OFF(nd_off, nd) ((nd_off) + 8 + 8 * (nd))

static void m_magic(uint8_t **b, size_t *n) { (void)n; (*b)[0] = 'X'; }
static void m_empty(uint8_t **b, size_t *n) { (void)b; *n = 0; }
static void m_v1(uint8_t **b, size_t *n) { (void)n; st32(*b + 4, 1); }
static void m_v99(uint8_t **b, size_t *n) { (void)n; st32(*b + 4, 99); }
static void m_vbe(uint8_t **b, size_t *n) { (void)n; st32(*b + 4, 0x03000000u); }
static void m_nkv(uint8_t **b, size_t *n) { (void)n; st64(*b + 16, 1ull << 62); }
static void m_nkv_plus1(uint8_t **b, size_t *n) { (void)n; st64(*b + 16, ld64(*b + 16) + 1); }
static void m_ntensors(uint8_t **b, size_t *n) { (void)n; st64(*b + 8, 1ull << 62); }
static void m_ntensors_plus1(uint8_t **b, size_t *n) { (void)n; st64(*b + 8, ld64(*b + 8) + 1); }
static void m_keylen(uint8_t **b, size_t *n) { (void)n; st64(*b + 24, 1ull << 63); }
static void m_strlen(uint8_t **b, size_t *n) { st64(*b + kv_value(*b, *n, "general.architecture"), 1ull << 63); }
static void m_strlen_edge(uint8_t **b, size_t *n) { /* exactly one byte more than the file holds */
    size_t at = kv_value(*b, *n, "general.architecture");
    st64(*b + at, *n - (at + 8) + 1);
}
static void m_arrlen(uint8_t **b, size_t *n) { st64(*b + kv_value(*b, *n, "tok.scores") + 4, 1ull << 61); }
static void m_arrlen_str(uint8_t **b, size_t *n) { st64(*b + kv_value(*b, *n, "tok.list") + 4, UINT64_MAX); }
static void m_arrlen_str1(uint8_t **b, size_t *n) { /* one more string than present: garbage follows */
    size_t at = kv_value(*b, *n, "tok.list") + 4;
    st64(*b + at, ld64(*b + at) + 1000);
}
static void m_nested(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "tok.scores"), AC_GGUF_T_ARRAY); }
static void m_arrtype(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "tok.scores"), 13); }
static void m_vtype(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "llama.block_count") - 4, 13); }
static void m_bool7(uint8_t **b, size_t *n) { (*b)[kv_value(*b, *n, "k.bool")] = 7; }
static void m_boolarr(uint8_t **b, size_t *n) { (*b)[kv_value(*b, *n, "k.bools") + 12 + 1] = 2; }
static void m_align0(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "general.alignment"), 0); }
static void m_align3(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "general.alignment"), 3); }
static void m_align_f32(uint8_t **b, size_t *n) { st32(*b + kv_value(*b, *n, "general.alignment") - 4, AC_GGUF_T_FLOAT32); }
static void m_align64(uint8_t **b, size_t *n) { /* tensors written for 32 are misaligned for 64 */
    st32(*b + kv_value(*b, *n, "general.alignment"), 64);
}
static void m_dupkey(uint8_t **b, size_t *n) { memcpy(*b + find_bytes(*b, *n, "llama.eps"), "tok.types", 9); }
static void m_duptensor(uint8_t **b, size_t *n) { memcpy(*b + find_bytes(*b, *n, "tB"), "tA", 2); }
static void m_ndims5(uint8_t **b, size_t *n) { st32(*b + tinfo(*b, *n, "tA"), 5); }
static void m_ndims0(uint8_t **b, size_t *n) { st32(*b + tinfo(*b, *n, "tA"), 0); }
static void m_ne0(uint8_t **b, size_t *n) { st64(*b + TI_NE(tinfo(*b, *n, "tA"), 1), 0); }
static void m_neneg(uint8_t **b, size_t *n) { st64(*b + TI_NE(tinfo(*b, *n, "tA"), 0), (uint64_t)-4); }
static void m_ne_overflow(uint8_t **b, size_t *n) {
    size_t t = tinfo(*b, *n, "tA");
    st64(*b + TI_NE(t, 0), 1ull << 40);
    st64(*b + TI_NE(t, 1), 1ull << 40);
}
static void m_bytes_overflow(uint8_t **b, size_t *n) { /* 2^62 F32 elements = 2^64 bytes */
    size_t t = tinfo(*b, *n, "tA");
    st64(*b + TI_NE(t, 0), 1ull << 31);
    st64(*b + TI_NE(t, 1), 1ull << 31);
}
static void m_huge_tensor(uint8_t **b, size_t *n) { st64(*b + TI_NE(tinfo(*b, *n, "tA"), 1), 1ull << 40); }
static void m_off_past(uint8_t **b, size_t *n) { st64(*b + TI_OFF(tinfo(*b, *n, "tB"), 1), 1ull << 40); }
static void m_off_wrap(uint8_t **b, size_t *n) { st64(*b + TI_OFF(tinfo(*b, *n, "tB"), 1), UINT64_MAX - 31); }
static void m_off_misaligned(uint8_t **b, size_t *n) {
    size_t at = TI_OFF(tinfo(*b, *n, "tB"), 1);
    st64(*b + at, ld64(*b + at) + 4);
}
static void m_overlap(uint8_t **b, size_t *n) { st64(*b + TI_OFF(tinfo(*b, *n, "tB"), 1), 0); }
static void m_elem_misaligned(uint8_t **b, size_t *n) { /* alignment 1, F32 data at file offset 2 mod 4 */
    size_t q = tinfo(*b, *n, "tQ"), end_infos = TI_OFF(q, 1) + 8, t = tinfo(*b, *n, "tA");
    st32(*b + kv_value(*b, *n, "general.alignment"), 1);
    st64(*b + TI_OFF(t, 2), (6 - end_infos % 4) % 4);
}
static void m_type999(uint8_t **b, size_t *n) { st32(*b + TI_TYPE(tinfo(*b, *n, "tA"), 2), 999); }
static void m_type4(uint8_t **b, size_t *n) { st32(*b + TI_TYPE(tinfo(*b, *n, "tA"), 2), 4); }
static void m_type40(uint8_t **b, size_t *n) { st32(*b + TI_TYPE(tinfo(*b, *n, "tA"), 2), 40); }
static void m_q8_block(uint8_t **b, size_t *n) { st64(*b + TI_NE(tinfo(*b, *n, "tQ"), 0), 31); }
static void m_truncate_header(uint8_t **b, size_t *n) { (void)b; *n = 20; }
static void m_cut_data(uint8_t **b, size_t *n) { /* cut inside tQ's data */
    (void)b;
    *n -= 40;
}
static void m_i32_ok(uint8_t **b, size_t *n) { /* known but unsupported type: opens fine */
    st32(*b + TI_TYPE(tinfo(*b, *n, "tA"), 2), GGML_I32); /* same size as F32: still valid */
}

static const corrupt_case k_cases[] = {
    {"bad magic", m_magic, AC_ERR_FORMAT, "bad magic"},
    {"empty buffer", m_empty, AC_ERR_FORMAT, "bad magic"},
    {"header truncated", m_truncate_header, AC_ERR_FORMAT, "truncated file: header n_kv"},
    {"version 1", m_v1, AC_ERR_FORMAT, "GGUF version 1 is not supported"},
    {"version 99", m_v99, AC_ERR_FORMAT, "unsupported GGUF version 99"},
    {"big-endian", m_vbe, AC_ERR_FORMAT, "big-endian"},
    {"n_kv 2^62", m_nkv, AC_ERR_FORMAT, "n_kv = 4611686018427387904 is impossible"},
    {"n_kv + 1", m_nkv_plus1, AC_ERR_FORMAT, "tensor info 0 (offset"},
    {"n_tensors 2^62", m_ntensors, AC_ERR_FORMAT, "n_tensors = 4611686018427387904 is impossible"},
    {"n_tensors + 1", m_ntensors_plus1, AC_ERR_FORMAT, "tensor"},
    {"key length 2^63", m_keylen, AC_ERR_FORMAT, "kv 0 (offset 24): kv key: string length 9223372036854775808"},
    {"string length 2^63", m_strlen, AC_ERR_FORMAT, "key 'general.architecture': string value: string length 9223372036854775808"},
    {"string length +1", m_strlen_edge, AC_ERR_FORMAT, "exceeds the"},
    {"array length 2^61", m_arrlen, AC_ERR_FORMAT, "key 'tok.scores': array length 2305843009213693952 of f32 exceeds"},
    {"string array length 2^64-1", m_arrlen_str, AC_ERR_FORMAT, "key 'tok.list': array length 18446744073709551615 of string"},
    {"string array length +1000", m_arrlen_str1, AC_ERR_FORMAT, "key 'tok.list'"},
    {"nested array", m_nested, AC_ERR_FORMAT, "key 'tok.scores': nested arrays are not supported"},
    {"array element type 13", m_arrtype, AC_ERR_FORMAT, "key 'tok.scores': invalid array element type 13"},
    {"value type 13", m_vtype, AC_ERR_FORMAT, "key 'llama.block_count': invalid value type 13"},
    {"bool value 7", m_bool7, AC_ERR_FORMAT, "key 'k.bool': bool value 7 is not 0 or 1"},
    {"bool array element 2", m_boolarr, AC_ERR_FORMAT, "key 'k.bools': bool array element 1 is 2"},
    {"alignment 0", m_align0, AC_ERR_FORMAT, "general.alignment = 0 is not a power of two"},
    {"alignment 3", m_align3, AC_ERR_FORMAT, "general.alignment = 3 is not a power of two"},
    {"alignment f32", m_align_f32, AC_ERR_FORMAT, "general.alignment has type f32"},
    {"alignment 64", m_align64, AC_ERR_FORMAT, "is not a multiple of the alignment 64"},
    {"duplicate key", m_dupkey, AC_ERR_FORMAT, "duplicate key 'tok.types' (kv 3 and 8)"},
    {"duplicate tensor", m_duptensor, AC_ERR_FORMAT, "duplicate tensor name 'tA'"},
    {"n_dims 5", m_ndims5, AC_ERR_FORMAT, "tensor 'tA': n_dims 5 not in [1, 4]"},
    {"n_dims 0", m_ndims0, AC_ERR_FORMAT, "tensor 'tA': n_dims 0 not in [1, 4]"},
    {"ne zero", m_ne0, AC_ERR_FORMAT, "tensor 'tA': ne[1] = 0 is not positive"},
    {"ne negative", m_neneg, AC_ERR_FORMAT, "tensor 'tA': ne[0] = -4 is not positive"},
    {"ne product overflow", m_ne_overflow, AC_ERR_FORMAT, "tensor 'tA': element count overflows"},
    {"byte size overflow", m_bytes_overflow, AC_ERR_FORMAT, "tensor 'tA': byte size overflows"},
    {"tensor larger than file", m_huge_tensor, AC_ERR_FORMAT, "tensor 'tA': data [0, 0 + 17592186044416) past end of file"},
    {"offset past end", m_off_past, AC_ERR_FORMAT, "tensor 'tB': data [1099511627776, 1099511627776 + 16) past end of file (size"},
    {"offset wraps", m_off_wrap, AC_ERR_FORMAT, "tensor 'tB': data [18446744073709551584"},
    {"offset misaligned", m_off_misaligned, AC_ERR_FORMAT, "tensor 'tB': offset 68 is not a multiple of the alignment 32"},
    {"F32 data misaligned", m_elem_misaligned, AC_ERR_FORMAT, "is not 4-byte aligned for F32"},
    {"overlapping tensors", m_overlap, AC_ERR_FORMAT, "overlap"},
    {"type 999", m_type999, AC_ERR_FORMAT, "tensor 'tA': unknown tensor type id 999"},
    {"type 4 (removed)", m_type4, AC_ERR_FORMAT, "tensor 'tA': unknown tensor type id 4"},
    {"type 40", m_type40, AC_ERR_FORMAT, "tensor 'tA': unknown tensor type id 40"},
    {"Q8_0 ne[0] % 32", m_q8_block, AC_ERR_FORMAT, "tensor 'tQ': ne[0] = 31 is not a multiple of the Q8_0 block size 32"},
    {"data cut", m_cut_data, AC_ERR_FORMAT, "tensor 'tQ': data [96, 96 + 34) past end of file"},
    {"valid I32 tensor", m_i32_ok, AC_OK, NULL},
};

static void test_corrupt_table(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        uint8_t *base;
        size_t base_size;
        small_file(version, &base, &base_size);
        for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
            const corrupt_case *c = &k_cases[i];
            size_t n = base_size;
            uint8_t *b = malloc(n);
            assert_non_null(b);
            memcpy(b, base, n);
            c->mutate(&b, &n);
            uint8_t *copy;
            ac_gguf_file *g = NULL;
            int rc = open_copy(b, n, &g, &copy);
            if (rc != c->code)
                fail_msg("case '%s' (v%u): rc %d (%s), want %d", c->name, version, rc, ac_last_error(), c->code);
            if (c->msg && !strstr(ac_last_error(), c->msg))
                fail_msg("case '%s' (v%u): message \"%s\" lacks \"%s\"", c->name, version, ac_last_error(), c->msg);
            if (rc == AC_OK) {
                touch_all(g);
                ac_gguf_close(g);
            } else {
                assert_null(g);
            }
            free(copy);
            free(b);
        }
        free(base);
    }
}

/* Fixed-seed random mutations: never a crash, an out-of-bounds read (ASan) or
 * a code other than OK / FORMAT. */
static void test_random_mutations(void **state) {
    (void)state;
    uint8_t *base;
    size_t base_size;
    small_file(3, &base, &base_size);
    static const uint64_t interesting[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 32, 33, 63, 64, 255, 256,
                                           0x7fffffffu, 0x80000000u, 0xffffffffu, 1ull << 32, 1ull << 62,
                                           1ull << 63, UINT64_MAX, UINT64_MAX - 31, (uint64_t)INT64_MAX};
    uint64_t s = 12345;
#define RND() (s ^= s << 13, s ^= s >> 7, s ^= s << 17, s)
    int n_ok = 0, n_fail = 0;
    for (int it = 0; it < 5000; it++) {
        size_t n = base_size;
        uint8_t *b = malloc(n);
        memcpy(b, base, n);
        int nm = 1 + (int)(RND() % 4);
        for (int m = 0; m < nm; m++) {
            size_t at = (size_t)(RND() % n);
            switch (RND() % 6) {
            case 0: b[at] ^= (uint8_t)(1u << (RND() % 8)); break;
            case 1: b[at] = (uint8_t)RND(); break;
            case 2: /* an interesting u64 */
                if (at + 8 <= n) st64(b + at, interesting[RND() % (sizeof interesting / sizeof interesting[0])]);
                break;
            case 3: /* an interesting u32 */
                if (at + 4 <= n) st32(b + at, (uint32_t)interesting[RND() % (sizeof interesting / sizeof interesting[0])]);
                break;
            case 4: /* aim at the header counts and first key */
                at = 8 + (RND() % 24);
                if (at + 8 <= n) st64(b + at, ld64(b + at) + (RND() % 5) - 2);
                break;
            case 5: n = at + 1; break; /* truncate */
            }
        }
        uint8_t *copy;
        ac_gguf_file *g = NULL;
        int rc = open_copy(b, n, &g, &copy);
        if (rc == AC_OK) {
            touch_all(g);
            ac_gguf_close(g);
            n_ok++;
        } else {
            if (rc != AC_ERR_FORMAT) fail_msg("iteration %d: rc %d (%s)", it, rc, ac_last_error());
            assert_true(strlen(ac_last_error()) > 0);
            n_fail++;
        }
        free(copy);
        free(b);
    }
    print_message("random mutations: %d parsed, %d rejected\n", n_ok, n_fail);
    assert_true(n_fail > 1000 && n_ok > 100); /* the loop exercises both outcomes */
    free(base);
#undef RND
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_file_io),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_truncation_every_byte),
        cmocka_unit_test(test_corrupt_table),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
