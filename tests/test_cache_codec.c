/* test_cache_codec.c — attention-map codecs: XXH64, half conversion, layout
 * offsets, encode/decode round trips with per-codec error bounds, fused A.V
 * against the plain reference at every CPU level and across levels (AVX2 and
 * AVX-512 bitwise equal, portable C within a stated bound), hostile input,
 * and the codec error table (bytes/element and reconstruction error on
 * synthetic softmax maps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/codec.h"
#include "cache/hash.h"
#include "util/common.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "levels.h"

/* ---- helpers ------------------------------------------------------------------------ */
static uint64_t rng_state = 0x1234567ULL;
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Synthetic attention map P [L][L]: row t = softmax(g / temp) over the allowed
 * columns (0..t if causal), g ~ N(0,1). temp <= 0: per-row temperature drawn
 * log-uniformly in [0.05, 5] (a mix of peaked and flat rows). */
static void synth_map(float *P, int L, int causal, double temp) {
    for (int t = 0; t < L; t++) {
        float *p = P + (size_t)t * L;
        int n = causal ? t + 1 : L;
        double tt = temp > 0 ? temp : exp(log(0.05) + rng_uniform() * (log(5.0) - log(0.05)));
        double mx = -1e300, s = 0;
        double *lg = (double *)mallocCheck((size_t)n * sizeof(double));
        for (int j = 0; j < n; j++) { lg[j] = rng_normal() / tt; if (lg[j] > mx) mx = lg[j]; }
        for (int j = 0; j < n; j++) { lg[j] = exp(lg[j] - mx); s += lg[j]; }
        for (int j = 0; j < L; j++) p[j] = j < n ? (float)(lg[j] / s) : 0.0f;
        free(lg);
    }
}

static const ac_map_codec all_codecs[] = {
    {AC_CODEC_F32, 0, 0}, {AC_CODEC_F16, 0, 0}, {AC_CODEC_Q8, 0, 0},  {AC_CODEC_Q4, 0, 0},
    {AC_CODEC_TOPK, 0, 1}, {AC_CODEC_TOPK, 0, 8}, {AC_CODEC_TOPK, 0, 32},
};
#define N_CODECS (int)(sizeof all_codecs / sizeof all_codecs[0])

/* ---- hash ----------------------------------------------------------------------------- */
static void test_xxh64(void **state) {
    (void)state;
    assert_true(ac_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL);
    assert_true(ac_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)rng_u64();
    for (size_t len = 0; len <= 1000; len += 37) {
        uint64_t ref = ac_xxh64(buf, len, 77);
        for (size_t split = 0; split <= len; split += 13) {
            ac_xxh64_state s;
            ac_xxh64_init(&s, 77);
            ac_xxh64_update(&s, buf, split);
            ac_xxh64_update(&s, buf + split, (len - split) / 2);
            ac_xxh64_update(&s, buf + split + (len - split) / 2, len - split - (len - split) / 2);
            assert_true(ac_xxh64_digest(&s) == ref);
        }
    }
    /* one flipped bit changes the hash */
    uint64_t h0 = ac_xxh64(buf, 1000, 0);
    buf[500] ^= 4;
    assert_true(ac_xxh64(buf, 1000, 0) != h0);
}

/* ---- half -------------------------------------------------------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
/* The portable conversions against the F16C instructions (the SIMD kernels'). */
__attribute__((target("f16c"))) static void half_vs_f16c(void) {
    for (int i = 0; i < 2000000; i++) {
        uint32_t x = (uint32_t)rng_u64();
        float f;
        memcpy(&f, &x, 4);
        if (isnan(f)) continue;
        if (i & 1) f = (float)(rng_uniform() * pow(2.0, -30.0 + 40.0 * rng_uniform()));
        uint16_t hw = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
        assert_int_equal(ac_f32_to_f16(f), hw);
        assert_true(ac_f16_to_f32(hw) == _cvtsh_ss(hw));
    }
}
#endif

static void test_half(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue; /* NaN payloads */
        float f = ac_f16_to_f32((uint16_t)h);
        assert_int_equal(ac_f32_to_f16(f), h);
    }
    assert_int_equal(ac_f32_to_f16(65520.0f), 0x7C00);
    assert_int_equal(ac_f32_to_f16(65519.0f), 0x7BFF);
    assert_int_equal(ac_f32_to_f16(2.98023224e-8f), 0); /* 2^-25 ties to even 0 */
    assert_true(isnan(ac_f16_to_f32(ac_f32_to_f16(NAN))));
#if defined(__x86_64__) || defined(__i386__)
    if (ac_cpu_hw()->f16c)
        half_vs_f16c();
    else
        print_message("no F16C: hardware comparison skipped\n");
#else
    print_message("not x86: F16C comparison skipped\n");
#endif
}

/* ---- layout ------------------------------------------------------------------------------------ */
static void test_offsets(void **state) {
    (void)state;
    int ks[] = {1, 3, 8, 64};
    for (int kind = 0; kind < AC_CODEC_COUNT; kind++)
        for (int causal = 0; causal < 2; causal++)
            for (int ki = 0; ki < (kind == AC_CODEC_TOPK ? 4 : 1); ki++) {
                ac_map_codec c = {kind, causal, ks[ki]};
                for (int L = 1; L <= 70; L++) {
                    size_t off = 0;
                    for (int t = 0; t <= L; t++) {
                        assert_true(ac_codec_row_offset(&c, L, t) == off);
                        if (t < L) off += ac_codec_row_bytes(&c, ac_codec_row_n(&c, L, t));
                    }
                    size_t mb = ac_codec_map_bytes(&c, L);
                    assert_true(mb >= off && mb < off + 64 && mb % 64 == 0);
                }
            }
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    assert_int_equal(ac_codec_map_bytes(&c, 0), 0);
    assert_int_equal(ac_codec_map_bytes(&c, AC_CODEC_MAX_L + 1), 0);
}

static void test_parse(void **state) {
    (void)state;
    const char *names[] = {"f32", "f16", "q8", "q4", "topk32", "q8-causal", "topk1-causal", "f32-causal"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ac_map_codec c;
        char buf[64];
        assert_int_equal(ac_codec_parse(names[i], &c), AC_OK);
        ac_codec_format(&c, buf, sizeof buf);
        assert_string_equal(buf, names[i]);
    }
    const char *bad[] = {"", "q9", "topk", "topk0", "topk70000", "topkx", "q8-causa", "f32-causal-causal"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ac_map_codec c;
        assert_int_equal(ac_codec_parse(bad[i], &c), AC_ERR_ARG);
        assert_true(strstr(ac_last_error(), "codec") != NULL);
    }
}

/* ---- round trips -------------------------------------------------------------------------------- */
static void check_roundtrip(const ac_map_codec *c, int L, double temp) {
    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float)); /* [L][L] */
    float *D = (float *)mallocCheck((size_t)L * L * sizeof(float)); /* [L][L] decoded */
    synth_map(P, L, c->causal, temp);
    size_t mb = ac_codec_map_bytes(c, L);
    uint8_t *m1 = (uint8_t *)mallocCheck(mb), *m2 = (uint8_t *)mallocCheck(mb);
    memset(m1, 0xAA, mb);
    memset(m2, 0x55, mb);
    assert_int_equal(ac_codec_encode(c, P, L, m1), AC_OK);
    assert_int_equal(ac_codec_encode(c, P, L, m2), AC_OK);
    assert_memory_equal(m1, m2, mb); /* deterministic, padding written */
    ac_codec_decode(c, m1, L, D);
    for (int t = 0; t < L; t++) {
        const float *p = P + (size_t)t * L, *d = D + (size_t)t * L;
        int n = ac_codec_row_n(c, L, t);
        float mx = 0;
        for (int j = 0; j < n; j++) mx = p[j] > mx ? p[j] : mx;
        for (int j = n; j < L; j++) assert_true(d[j] == 0.0f); /* causal: nothing above the diagonal */
        if (c->kind == AC_CODEC_TOPK) {
            int kk = AC_MIN(c->topk, n), nz = 0;
            double kept_mass = 0, dsum = 0;
            float min_kept = INFINITY, max_dropped = 0;
            for (int j = 0; j < n; j++) {
                if (d[j] != 0.0f) { nz++; kept_mass += p[j]; min_kept = AC_MIN(min_kept, p[j]); dsum += d[j]; }
                else max_dropped = AC_MAX(max_dropped, p[j]);
            }
            assert_true(nz <= kk);
            assert_true(max_dropped <= min_kept || nz == 0);
            for (int j = 0; j < n; j++)
                if (d[j] != 0.0f) assert_true(fabs(d[j] - p[j] / kept_mass) <= 1e-3 * (p[j] / kept_mass) + 1e-7);
            if (nz) assert_true(fabs(dsum - 1.0) < 2e-3);
            continue;
        }
        for (int j = 0; j < n; j++) {
            double e = fabs((double)d[j] - p[j]);
            switch (c->kind) {
            case AC_CODEC_F32: assert_true(d[j] == p[j]); break;
            case AC_CODEC_F16: assert_true(e <= p[j] * (1.0 / 2048) + 3e-8); break;
            case AC_CODEC_Q8: assert_true(e <= mx / 510.0 * (1 + 1e-5) + 1e-9); break;
            case AC_CODEC_Q4: assert_true(e <= mx / 30.0 * (1 + 1e-5) + 1e-9); break;
            }
        }
    }
    free(P); free(D); free(m1); free(m2);
}

static void test_roundtrip(void **state) {
    (void)state;
    int Ls[] = {1, 2, 15, 16, 17, 64, 127};
    double temps[] = {0.1, 1.0, 5.0, -1};
    for (int ci = 0; ci < N_CODECS; ci++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++)
                for (size_t ti = 0; ti < 4; ti++) {
                    ac_map_codec c = all_codecs[ci];
                    c.causal = causal;
                    check_roundtrip(&c, Ls[li], temps[ti]);
                }
}

static void test_encode_rejects(void **state) {
    (void)state;
    int L = 8;
    float P[64];
    uint8_t dst[1024];
    ac_map_codec c = {AC_CODEC_Q8, 0, 0};
    synth_map(P, L, 0, 1.0);
    P[3 * 8 + 5] = NAN;
    assert_int_equal(ac_codec_encode(&c, P, L, dst), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "row 3 col 5"));
    P[3 * 8 + 5] = -0.25f;
    assert_int_equal(ac_codec_encode(&c, P, L, dst), AC_ERR_ARG);
    P[3 * 8 + 5] = INFINITY;
    assert_int_equal(ac_codec_encode(&c, P, L, dst), AC_ERR_ARG);
    /* causal codecs ignore whatever lies above the diagonal */
    c.causal = 1;
    P[3 * 8 + 5] = NAN;
    assert_int_equal(ac_codec_encode(&c, P, L, dst), AC_OK);
    ac_map_codec bad[] = {{-1, 0, 0}, {AC_CODEC_COUNT, 0, 0}, {AC_CODEC_Q8, 2, 0}, {AC_CODEC_TOPK, 0, 0}, {AC_CODEC_TOPK, 0, 70000}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ac_codec_check(&bad[i], L), AC_ERR_ARG);
        assert_int_equal(ac_codec_encode(&bad[i], P, L, dst), AC_ERR_ARG);
    }
    assert_int_equal(ac_codec_check(&c, 0), AC_ERR_ARG);
    assert_int_equal(ac_codec_check(&c, AC_CODEC_MAX_L + 1), AC_ERR_ARG);
}

/* ---- fused A.V ---------------------------------------------------------------------------------- */
static void check_fused(const ac_map_codec *c, int L, int hd, double temp) {
    int ld_v = hd + 3, ld_o = hd + 5;
    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float));       /* [L][L] */
    float *V = (float *)mallocCheck((size_t)L * ld_v * sizeof(float));    /* [L][ld_v] */
    float *o1 = (float *)mallocCheck((size_t)L * ld_o * sizeof(float));   /* [L][ld_o] fused */
    float *o2 = (float *)mallocCheck((size_t)L * ld_o * sizeof(float));   /* [L][ld_o] reference */
    float *row = (float *)mallocCheck((size_t)L * sizeof(float));
    synth_map(P, L, c->causal, temp);
    for (size_t i = 0; i < (size_t)L * ld_v; i++) V[i] = (float)rng_normal();
    size_t mb = ac_codec_map_bytes(c, L);
    uint8_t *m = (uint8_t *)mallocCheck(mb);
    assert_int_equal(ac_codec_encode(c, P, L, m), AC_OK);
    for (size_t i = 0; i < (size_t)L * ld_o; i++) o1[i] = o2[i] = 12345.0f; /* canaries */
    ac_codec_av(c, m, L, V, ld_v, hd, o1, ld_o);
    assert_int_equal(ac_codec_av_ref(c, m, L, V, ld_v, hd, o2, ld_o), AC_OK);
    for (int t = 0; t < L; t++) {
        ac_codec_decode_row(c, m, L, t, row);
        for (int d = 0; d < hd; d++) {
            double bound = 0;
            for (int j = 0; j < L; j++) bound += fabs((double)row[j] * V[(size_t)j * ld_v + d]);
            double e = fabs((double)o1[(size_t)t * ld_o + d] - o2[(size_t)t * ld_o + d]);
            if (!(e <= 1e-5 * bound + 1e-6)) fail_msg("codec %d causal %d L %d hd %d t %d d %d: fused %g ref %g", c->kind, c->causal, L, hd, t, d,
                                                      (double)o1[(size_t)t * ld_o + d], (double)o2[(size_t)t * ld_o + d]);
        }
        for (int d = hd; d < ld_o; d++) assert_true(o1[(size_t)t * ld_o + d] == 12345.0f);
    }
    free(P); free(V); free(o1); free(o2); free(row); free(m);
}

static void test_fused_vs_reference(void **state) {
    (void)state;
    int Ls[] = {1, 5, 16, 33, 100};
    int hds[] = {1, 8, 16, 24, 64, 100, 128, 136, 256};
    for (int ci = 0; ci < N_CODECS; ci++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++)
                for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
                    ac_map_codec c = all_codecs[ci];
                    c.causal = causal;
                    check_fused(&c, Ls[li], hds[hi], (li + hi) % 2 ? 0.2 : -1);
                }
    assert_int_equal(ac_codec_simd(), ac_cpu_level());
    print_message("fused kernels at level %s: match the reference\n", ac_cpu_level_name(ac_cpu_level()));
}

/* The same map and V at every level: AVX2 and AVX-512 give bitwise equal
 * outputs (the same decoded probabilities, one FMA per nonzero column in
 * column order, kernels.h), whole-map and row-by-row calls too. Portable C
 * rounds each product before its add: both sums of the same n <= L terms are
 * within (n + 1) 2^-24 sum_j |p_j V_jd| of the exact one (one rounding per
 * product and per add), so they differ by at most 2 (L + 1) 2^-24 times that
 * sum, the bound checked (the measured worst is printed). */
static void test_fused_across_levels(void **state) {
    (void)state;
    const int top = levels_top();
    int Ls[] = {1, 7, 8, 9, 31, 100};
    int hds[] = {1, 7, 8, 9, 32, 63, 64, 65, 128, 200};
    double worst_c = 0;
    for (int ci = 0; ci < N_CODECS + 1; ci++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++)
                for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
                    ac_map_codec c = ci < N_CODECS ? all_codecs[ci] : (ac_map_codec){AC_CODEC_TOPK, 0, 5};
                    c.causal = causal;
                    const int L = Ls[li], hd = hds[hi], ld_v = hd + 1, ld_o = hd + 2;
                    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float));    /* [L][L] */
                    float *V = (float *)mallocCheck((size_t)L * ld_v * sizeof(float)); /* [L][ld_v] */
                    float *o[3], *orow = (float *)mallocCheck((size_t)L * ld_o * sizeof(float));
                    synth_map(P, L, causal, (li + hi) % 2 ? 0.1 : -1);
                    for (int i = 0; i < L * L; i++) /* exact zeros, as peaked maps quantise to */
                        if (rng_uniform() < 0.3) P[i] = 0.0f;
                    for (size_t i = 0; i < (size_t)L * ld_v; i++) V[i] = (float)rng_normal();
                    uint8_t *m = (uint8_t *)mallocCheck(ac_codec_map_bytes(&c, L));
                    assert_int_equal(ac_codec_encode(&c, P, L, m), AC_OK);
                    for (int lv = top; lv >= 0; lv--) {
                        levels_enter(lv);
                        o[lv] = (float *)mallocCheck((size_t)L * ld_o * sizeof(float));
                        memset(o[lv], 0, (size_t)L * ld_o * sizeof(float));
                        memset(orow, 0, (size_t)L * ld_o * sizeof(float));
                        ac_codec_av(&c, m, L, V, ld_v, hd, o[lv], ld_o);
                        for (int t = 0; t < L; t++)
                            ac_codec_av_row(&c, m + ac_codec_row_offset(&c, L, t), ac_codec_row_n(&c, L, t), V, ld_v,
                                            hd, orow + (size_t)t * ld_o);
                        /* whole map and row by row alike, bit for bit (AVX-512's row pairs too) */
                        assert_memory_equal(orow, o[lv], (size_t)L * ld_o * sizeof(float));
                        if (lv < top && lv > 0) assert_memory_equal(o[lv], o[top], (size_t)L * ld_o * sizeof(float));
                    }
                    float *row = (float *)mallocCheck((size_t)L * sizeof(float));
                    for (int t = 0; t < L && top > 0; t++) {
                        ac_codec_decode_row(&c, m, L, t, row);
                        for (int d = 0; d < hd; d++) {
                            double sum = 0;
                            for (int j = 0; j < L; j++) sum += fabs((double)row[j] * V[(size_t)j * ld_v + d]);
                            const double e = fabs((double)o[0][(size_t)t * ld_o + d] - o[top][(size_t)t * ld_o + d]);
                            if (sum > 0) worst_c = AC_MAX(worst_c, e / sum);
                            if (!(e <= 2.0 * (L + 1) * 0x1p-24 * sum))
                                fail_msg("codec %d causal %d L %d hd %d t %d d %d: scalar %.9g simd %.9g", c.kind, causal,
                                         L, hd, t, d, (double)o[0][(size_t)t * ld_o + d],
                                         (double)o[top][(size_t)t * ld_o + d]);
                        }
                    }
                    for (int lv = top; lv >= 0; lv--) free(o[lv]);
                    free(P); free(V); free(orow); free(row); free(m);
                }
    levels_leave();
    print_message("levels %s..scalar: SIMD levels bitwise equal; portable C within %.2e of sum |p V| "
                  "(bound 2 (L+1) 2^-24 <= %.2e)\n", ac_cpu_level_name(top), worst_c, 2.0 * 101 * 0x1p-24);
}

/* A hostile TOPK row (indices past the row) must not read outside V. */
/* ac_codec_row_mass: the sum of a stored row's first n columns (a longer entry served over n)
 * equals the sum of its decoded values, for every codec (Q8/Q4 sum the codes, then scale: within
 * 1e-6), n from 1 to the row's length; top-k rows count only their entries below n;
 * ac_codec_row_value gives each column's decoded value. */
static void test_row_mass(void **state) {
    (void)state;
    const int L = 77;
    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float)), *row = (float *)mallocCheck((size_t)L * sizeof(float));
    synth_map(P, L, 0, -1);
    for (int ci = 0; ci < N_CODECS; ci++) {
        const ac_map_codec *c = &all_codecs[ci];
        uint8_t *map = (uint8_t *)mallocCheck(ac_codec_map_bytes(c, L));
        assert_int_equal(ac_codec_encode(c, P, L, map), AC_OK);
        for (int t = 0; t < L; t += 7) {
            ac_codec_decode_row(c, map, L, t, row);
            const uint8_t *r = map + ac_codec_row_offset(c, L, t);
            for (int n = 1; n <= L; n += 5) {
                double want = 0;
                for (int j = 0; j < n; j++) want += row[j];
                const double got = ac_codec_row_mass(c, r, L, n);
                assert_true(fabs(got - want) <= 1e-6 * (want + 1e-3));
            }
            if (c->kind == AC_CODEC_F32 || c->kind == AC_CODEC_F16) /* a whole row: 1 */
                assert_true(fabs(ac_codec_row_mass(c, r, L, L) - 1.0) < 1e-3);
            assert_true(ac_codec_row_mass(c, r, L, 0) == 0.0);
            for (int j = -1; j <= L; j++) /* ac_codec_row_value: the decoded value, 0 outside the row */
                assert_true(ac_codec_row_value(c, r, L, j) == (j >= 0 && j < L ? row[j] : 0.0f));
        }
        free(map);
    }
    /* a hostile top-k row: an index past n (65535) is not counted */
    ac_map_codec c = {AC_CODEC_TOPK, 0, 4};
    uint8_t r[16];
    uint16_t idx[4] = {0, 4, 5, 65535}, val[4];
    for (int i = 0; i < 4; i++) val[i] = ac_f32_to_f16(0.25f);
    memcpy(r, idx, 8);
    memcpy(r + 8, val, 8);
    assert_true(fabs(ac_codec_row_mass(&c, r, 6, 5) - 0.5) < 1e-9);
    assert_true(fabs(ac_codec_row_mass(&c, r, 6, 6) - 0.75) < 1e-9);
    free(P), free(row);
}

static void test_fused_hostile_topk(void **state) {
    (void)state;
    ac_map_codec c = {AC_CODEC_TOPK, 0, 4};
    int n = 5, hd = 16;
    uint8_t row[16];
    uint16_t idx[4] = {0, 4, 5, 65535}, val[4];
    for (int i = 0; i < 4; i++) val[i] = ac_f32_to_f16(0.25f);
    memcpy(row, idx, 8);
    memcpy(row + 8, val, 8);
    float *V = (float *)mallocCheck((size_t)n * hd * sizeof(float)); /* exactly [n][hd] */
    for (int i = 0; i < n * hd; i++) V[i] = 1.0f;
    float out[16];
    ac_codec_av_row(&c, row, n, V, hd, hd, out);
    for (int d = 0; d < hd; d++) assert_true(fabsf(out[d] - 0.5f) < 1e-6f); /* rows 0 and 4 only */
    free(V);
}

/* A damaged Q8/Q4 row whose scale is NaN (0 x NaN is NaN, not zero) must not
 * make the kernels read V past the row's n columns (ASan checks the reads). */
static void test_fused_hostile_scale(void **state) {
    (void)state;
    const int hd = 40; /* unmasked vector loads too (ASan does not see masked ones) */
    for (int kind = AC_CODEC_Q8; kind <= AC_CODEC_Q4; kind++)
        for (int n = 1; n <= 40; n += 3) {
            ac_map_codec c = {kind, 0, 0};
            const size_t rb = ac_codec_row_bytes(&c, n);
            uint8_t *row = (uint8_t *)mallocCheck(rb);
            memset(row, 0x11, rb);
            const float nan = NAN;
            memcpy(row, &nan, 4);
            float *V = (float *)mallocCheck((size_t)n * hd * sizeof(float)); /* exactly [n][hd] */
            for (int i = 0; i < n * hd; i++) V[i] = 1.0f;
            float out[40];
            ac_codec_av_row(&c, row, n, V, hd, hd, out);
            for (int d = 0; d < hd; d++) assert_true(isnan(out[d]));
            free(row);
            free(V);
        }
}

/* ---- error table ------------------------------------------------------------------------------------- */
typedef struct { double max_abs, mean_abs, max_rowsum, av_rel; } errs;

static errs measure(const ac_map_codec *c, int L, double temp, int reps) {
    errs r = {0, 0, 0, 0};
    int hd = 64;
    float *P = (float *)mallocCheck((size_t)L * L * sizeof(float));
    float *D = (float *)mallocCheck((size_t)L * L * sizeof(float));
    float *V = (float *)mallocCheck((size_t)L * hd * sizeof(float));
    float *o = (float *)mallocCheck((size_t)L * hd * sizeof(float));
    uint8_t *m = (uint8_t *)mallocCheck(ac_codec_map_bytes(c, L));
    double sum_abs = 0, n_el = 0, av_num = 0, av_den = 0;
    for (int rep = 0; rep < reps; rep++) {
        synth_map(P, L, c->causal, temp);
        for (int i = 0; i < L * hd; i++) V[i] = (float)rng_normal();
        assert_int_equal(ac_codec_encode(c, P, L, m), AC_OK);
        ac_codec_decode(c, m, L, D);
        ac_codec_av(c, m, L, V, hd, hd, o, hd);
        for (int t = 0; t < L; t++) {
            double rs = 0;
            int n = ac_codec_row_n(c, L, t);
            for (int j = 0; j < n; j++) {
                double e = fabs((double)D[(size_t)t * L + j] - P[(size_t)t * L + j]);
                r.max_abs = AC_MAX(r.max_abs, e);
                sum_abs += e;
                n_el++;
                rs += D[(size_t)t * L + j];
            }
            r.max_rowsum = AC_MAX(r.max_rowsum, fabs(rs - 1.0));
            for (int d = 0; d < hd; d++) { /* A.V error vs exact fp32 maps */
                double ex = 0;
                for (int j = 0; j < n; j++) ex += (double)P[(size_t)t * L + j] * V[(size_t)j * hd + d];
                av_num += (o[(size_t)t * hd + d] - ex) * (o[(size_t)t * hd + d] - ex);
                av_den += ex * ex;
            }
        }
    }
    r.mean_abs = sum_abs / n_el;
    r.av_rel = sqrt(av_num / av_den);
    free(P); free(D); free(V); free(o); free(m);
    return r;
}

static void test_error_table(void **state) {
    (void)state;
    const int L = 128;
    const char *regime[] = {"peaked (T=0.1)", "medium (T=1)", "flat (T=5)", "mixed (T~logU[0.05,5])"};
    double temps[] = {0.1, 1.0, 5.0, -1};
    ac_map_codec list[] = {{AC_CODEC_F32, 0, 0},  {AC_CODEC_F16, 0, 0},  {AC_CODEC_Q8, 0, 0},   {AC_CODEC_Q4, 0, 0},
                           {AC_CODEC_TOPK, 0, 8}, {AC_CODEC_TOPK, 0, 32}, {AC_CODEC_F16, 1, 0}, {AC_CODEC_Q8, 1, 0},
                           {AC_CODEC_Q4, 1, 0},   {AC_CODEC_TOPK, 1, 32}};
    print_message("codec error table, L=%d, 4 maps per cell; bytes/elem = map bytes / (L*L)\n", L);
    print_message("| codec | bytes/elem | regime | max abs | mean abs | max |rowsum-1| | A.V rel err |\n");
    print_message("|---|---|---|---|---|---|---|\n");
    for (size_t ci = 0; ci < sizeof list / sizeof list[0]; ci++) {
        char name[32];
        ac_codec_format(&list[ci], name, sizeof name);
        double bpe = (double)ac_codec_map_bytes(&list[ci], L) / ((double)L * L);
        for (int ti = 0; ti < 4; ti++) {
            errs e = measure(&list[ci], L, temps[ti], 4);
            print_message("| %s | %.3f | %s | %.2e | %.2e | %.2e | %.2e |\n", name, bpe, regime[ti], e.max_abs, e.mean_abs,
                          e.max_rowsum, e.av_rel);
            switch (list[ci].kind) {
            case AC_CODEC_F32: assert_true(e.max_abs == 0 && e.max_rowsum < 1e-5); break;
            case AC_CODEC_F16: assert_true(e.max_abs <= 1.0 / 2048 && e.max_rowsum < 2e-3 && e.av_rel < 1e-3); break;
            case AC_CODEC_Q8: assert_true(e.max_abs <= 1.0 / 510 + 1e-6 && e.av_rel < 0.05); break;
            case AC_CODEC_Q4: assert_true(e.max_abs <= 1.0 / 30 + 1e-6); break;
            case AC_CODEC_TOPK: assert_true(e.max_rowsum < 2e-3); break;
            }
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xxh64),
        cmocka_unit_test(test_half),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_fused_vs_reference),
        cmocka_unit_test(test_fused_across_levels),
        cmocka_unit_test(test_row_mass),
        cmocka_unit_test(test_fused_hostile_topk),
        cmocka_unit_test(test_fused_hostile_scale),
        cmocka_unit_test(test_error_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
