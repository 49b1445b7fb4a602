/* test_forward_levels.c — the forward's kernels at every CPU level this machine
 * has (AVX-512, AVX2, portable C; on aarch64 NEON, which has AVX2's rank, and
 * portable C), set with ac_cpu_set_level, against each other and against the
 * double-precision reference:
 *   - exp: AVX-512, AVX2 and NEON bitwise equal to the scalar FMA formula
 *     (ac_expf_fma), edge cases included; the portable form within 2 ulp;
 *   - the own F32 GEMM: AVX2 bitwise equal to AVX-512 (the same FMAs, k in
 *     order), every level independent of M (a row's result does not depend on
 *     the rows beside it), each level within f32 rounding of double sums;
 *   - whole forwards (fused and materialised, llama/bert/qwen2, F32/F16/Q8_0)
 *     at each level within 1e-5 of the portable level and of the reference;
 *   - the fused attention of several sequences in one step (ac_attn_fused_multi) at
 *     each level bitwise what one call per sequence gives, and within f32 rounding of
 *     double-precision attention (lengths below, at and past a key block, hd 32);
 *   - --fast without AVX512-BF16 runs the exact path; a model packed for
 *     AVX512-BF16 refuses a context at a lower level with a clear error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "forward/cpu/simd.h"
#include "forward/forward.h"
#include "load/model.h"
#include "ref_forward.h"
#include "util/common.h"
#include "util/cpu.h"
#include "util/pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* level names as this architecture spells them (aarch64: scalar, neon) */
#define LV_NAME(lv) ac_cpu_level_name(lv)

static void set_level(int lv) { assert_int_equal(ac_cpu_set_level(lv), AC_OK); }

static int ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return abs(ia - ib);
}

/* ---- exp ------------------------------------------------------------------------------------ */
static void test_exp(void **st) {
    (void)st;
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    const float special[] = {NAN, -INFINITY, INFINITY, 0.0f, -0.0f, -104.0f, -103.99f, -103.3f, -88.0f, -87.3f,
                             88.72f, 88.7228f, 88.8f, -1e-30f, 1e-30f, 0.5f, -0.5f, 1.0f};
    const int ns = (int)(sizeof special / sizeof *special);
    for (int i = 0; i < N; i++) x[i] = i < ns ? special[i] : -110.0f + 200.0f * (float)(i - ns) / (float)(N - ns);
    for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++) {
        set_level(lv);
        memcpy(y, x, N * sizeof *y);
        ac_vexp(y, N - 5); /* an odd length: the masked tail */
        int maxu = 0;
        for (int i = 0; i < N - 5; i++) {
            const float r = ac_expf_fma(x[i]); /* fmaf: exactly rounded, whatever the build's flags */
            if (isnan(r)) {
                assert_true(isnan(y[i]));
                continue;
            }
            if (lv >= AC_CPU_AVX2) { /* the same formula and FMAs: bitwise */
                if (memcmp(&r, &y[i], 4)) fprintf(stderr, "exp(%.9g): %.9g vs %.9g\n", x[i], y[i], r);
                assert_memory_equal(&r, &y[i], 4);
            } else {
                maxu = AC_MAX(maxu, ulp_diff(r, y[i]));
            }
            if (x[i] > -87.0f && x[i] < 88.0f) assert_true(fabs((double)y[i] - exp((double)x[i])) <= 4e-7 * exp((double)x[i]));
        }
        for (int i = N - 5; i < N; i++) assert_memory_equal(&x[i], &y[i], 4); /* past n: untouched */
        /* portable C: separate multiply and add where the build has no FMA (2 ulp) */
        printf("  exp at %s: %s (max %d ulp from the FMA formula)\n", LV_NAME(lv),
               lv >= AC_CPU_AVX2 ? "bitwise" : "portable", maxu);
        assert_true(maxu <= 2);
    }
    assert_true(ac_expf(-INFINITY) == 0.0f && ac_expf(0.0f) == 1.0f && ac_expf(100.0f) > 3.4e38f && isfinite(ac_expf(INFINITY)));
    ac_cpu_set_level(-1);
    free(x), free(y);
}

/* ---- the own F32 GEMM ------------------------------------------------------------------------- */
typedef struct small_ctx {
    uint8_t *buf;
    size_t size;
    ac_model *m;
    ac_ctx *c;
} small_ctx;

/* a context at level lv (its pool, level and scratch are what ac_own_gemm_run uses) */
static void small_open(small_ctx *s, int lv) {
    memset(s, 0, sizeof *s);
    set_level(lv);
    ref_spec sp = ref_spec_default(AC_ARCH_LLAMA);
    assert_int_equal(ref_build(&sp, &s->buf, &s->size), AC_OK);
    assert_int_equal(ac_model_load_memory(s->buf, s->size, NULL, AC_LOAD_NO_VOCAB, &s->m), AC_OK);
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;
    assert_int_equal(ac_ctx_new(s->m, &p, &s->c), AC_OK);
    assert_int_equal(s->c->level, lv);
}

static void small_close(small_ctx *s) {
    ac_ctx_free(s->c);
    ac_model_free(s->m);
    free(s->buf);
    ac_cpu_set_level(-1);
}

static ac_mat f32_mat(const char *name, const float *w, int n_out, int n_in) {
    ac_mat m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", name);
    m.n_out = n_out, m.n_in = n_in, m.type = GGML_F32, m.row_bytes = (size_t)n_in * 4, m.data = w, m.f32 = w;
    return m;
}

static void test_gemm(void **st) {
    (void)st;
    enum { M = 13, N = 77, K = 300, EPI = 4 }; /* K: several of the AVX2 kernel's k blocks, and a tail */
    float *W = malloc(N * K * 4), *Wu = malloc(N * K * 4), *X = malloc(M * K * 4), *b = malloc(N * 4);
    float *Y[3][EPI], *Y5 = malloc(5 * N * 4);
    uint64_t rs = 99;
    for (int i = 0; i < N * K; i++) W[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
    for (int i = 0; i < N * K; i++) Wu[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
    for (int i = 0; i < M * K; i++) X[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 8388608.0f - 1.0f;
    for (int i = 0; i < N; i++) b[i] = 0.01f * (float)(i % 7) - 0.03f;
    ac_mat mw = f32_mat("w", W, N, K), mu = f32_mat("w_up", Wu, N, K);
    const int epis[EPI] = {AC_EPI_STORE, AC_EPI_ACCUM, AC_EPI_GELU, AC_EPI_SWIGLU};
    for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++) {
        small_ctx s;
        small_open(&s, lv);
        for (int e = 0; e < EPI; e++) {
            Y[lv][e] = malloc(M * N * 4);
            for (int i = 0; i < M * N; i++) Y[lv][e][i] = 0.25f; /* what ACCUM adds to */
            ac_act a = {X, M, K, NULL, 0};
            ac_gemm_job j = {&mw, epis[e] == AC_EPI_SWIGLU ? &mu : NULL, &a, Y[lv][e], NULL,
                             epis[e] == AC_EPI_SWIGLU ? NULL : b, epis[e], NULL, 0};
            assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
            /* rows 4..8 alone (M = 5): bitwise the rows of the whole product */
            for (int i = 0; i < 5 * N; i++) Y5[i] = 0.25f;
            ac_act a5 = {X + 4 * K, 5, K, NULL, 0};
            j.X = &a5;
            j.Y = Y5;
            assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
            assert_memory_equal(Y5, Y[lv][e] + 4 * N, 5 * N * 4);
            /* against double sums: f32 rounding of K = 300 terms */
            double err = 0, mx = 0;
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double g = 0, u = 0;
                    for (int k = 0; k < K; k++) g += (double)X[m * K + k] * W[n * K + k], u += (double)X[m * K + k] * Wu[n * K + k];
                    double r = g + (epis[e] == AC_EPI_SWIGLU ? 0 : b[n]);
                    if (epis[e] == AC_EPI_ACCUM) r += 0.25;
                    if (epis[e] == AC_EPI_GELU) r = 0.5 * r * (1 + erf(r / sqrt(2.0)));
                    if (epis[e] == AC_EPI_SWIGLU) r = g / (1 + exp(-g)) * u;
                    err = fmax(err, fabs(r - Y[lv][e][m * N + n]));
                    mx = fmax(mx, fabs(r));
                }
            assert_true(err / mx < 2e-6);
            if (lv == AC_CPU_AVX512) /* the same FMAs in the same order as AVX2 */
                assert_memory_equal(Y[AC_CPU_AVX512][e], Y[AC_CPU_AVX2][e], M * N * 4);
#if defined(__aarch64__)
            /* NEON: one FMA chain per output, k in order; the portable tile is the same chain
             * where the compiler contracts its multiply-adds (GCC does on aarch64 by default):
             * the tolerance above is the check, bitwise equality is reported */
            if (lv == AC_CPU_NEON) {
                assert_string_equal(ac_own_gemm_kernel(lv, 0), "neon-f32");
                printf("  own gemm neon vs scalar, epilogue %d: %s\n", epis[e],
                       memcmp(Y[AC_CPU_NEON][e], Y[AC_CPU_SCALAR][e], M * N * 4) ? "differs in the last bits" : "bitwise equal");
            }
#endif
            printf("  own gemm at %-6s epilogue %d: rel err vs double %.2e, M-independent%s\n", LV_NAME(lv), epis[e],
                   err / mx, lv == AC_CPU_AVX512 ? ", bitwise equal to avx2" : "");
        }
        small_close(&s);
    }
    for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++)
        for (int e = 0; e < EPI; e++) free(Y[lv][e]);
    free(W), free(Wu), free(X), free(b), free(Y5);
}

/* The F32 task split of larger products: 390 x 200 (K 300) goes panel by panel in tasks of
 * more than MBF = 192 rows (a task loops over sub-blocks on one packed panel; AVX2's last tile
 * rows split 4 + 4 style); 1800 x 77 goes row block by row block (X of 2.1 MB, far larger than
 * W). Every level: a 7-row product alone is bitwise the same rows of the whole one, sampled
 * rows within f32 rounding of double sums; AVX2 bitwise equal to AVX-512. */
/* ac_gemm_job.skip (per-head serving's Q/K projections): a 64-column panel whose columns are all
 * unwanted is left unwritten; every other column, a partly unwanted panel's included, is bitwise
 * the product without skip; at every level, F32 in place and (where the CPU has it) packed BF16. */
static void test_gemm_skip(void **st) {
    (void)st;
    enum { M = 50, N = 192, K = 96, HD = 32 }; /* 3 panels of 2 "heads" of 32 columns */
    float *W = malloc(N * K * 4), *X = malloc(M * K * 4), *b = malloc(N * 4);
    float *Yf = malloc(M * N * 4), *Ys = malloc(M * N * 4);
    uint64_t rs = 7;
    for (int i = 0; i < N * K; i++) W[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
    for (int i = 0; i < M * K; i++) X[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 8388608.0f - 1.0f;
    for (int i = 0; i < N; i++) b[i] = 0.01f * (float)(i % 5);
    /* heads 0, 1 (panel 0: skipped), 3 (half of panel 1: computed), 5 (half of panel 2: computed) */
    const uint8_t skip[N / HD] = {1, 1, 0, 1, 0, 1};
    for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++)
        for (int bf = 0; bf < 2; bf++) {
            if (bf && !ac_bf16_gemm_at(lv)) continue;
            small_ctx s;
            small_open(&s, lv);
            ac_mat mw = f32_mat("w", W, N, K);
            if (bf) assert_int_equal(ac_bf16_pack(&mw), AC_OK);
            ac_act a = {X, M, K, malloc(M * K * 2), 0};
            for (int i = 0; i < M * N; i++) Yf[i] = Ys[i] = 7.0f;
            ac_gemm_job j = {&mw, NULL, &a, Yf, NULL, b, AC_EPI_STORE, NULL, 0};
            assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
            j.Y = Ys, j.skip = skip, j.skip_w = HD;
            assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    const float got = Ys[m * N + n];
                    if (n < 64) assert_true(got == 7.0f); /* the skipped panel: untouched */
                    else assert_memory_equal(&got, &Yf[m * N + n], 4);
                    assert_true(Yf[m * N + n] != 7.0f);
                }
            /* no column unwanted with a mask: every column written */
            const uint8_t none[N / HD] = {0};
            for (int i = 0; i < M * N; i++) Ys[i] = 7.0f;
            j.skip = none;
            assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
            assert_memory_equal(Ys, Yf, M * N * 4);
            if (bf) free(mw.packed);
            free(a.bf16);
            small_close(&s);
        }
    free(W), free(X), free(b), free(Yf), free(Ys);
}

static void test_gemm_blocks(void **st) {
    (void)st;
    const int shapes[2][3] = {{390, 200, 300}, {1800, 77, 300}};
    for (int sh = 0; sh < 2; sh++) {
        const int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2], m7 = M / 2 + 1;
        float *W = malloc((size_t)N * K * 4), *Wu = malloc((size_t)N * K * 4), *X = malloc((size_t)M * K * 4);
        float *Y[3][2], *Y7 = malloc((size_t)7 * N * 4);
        uint64_t rs = 1234 + sh;
        for (int i = 0; i < N * K; i++) W[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
        for (int i = 0; i < N * K; i++) Wu[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
        for (int i = 0; i < M * K; i++) X[i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 8388608.0f - 1.0f;
        ac_mat mw = f32_mat("w", W, N, K), mu = f32_mat("w_up", Wu, N, K);
        const int epis[2] = {AC_EPI_ACCUM, AC_EPI_SWIGLU};
        for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++) {
            small_ctx s;
            small_open(&s, lv);
            for (int e = 0; e < 2; e++) {
                Y[lv][e] = malloc((size_t)M * N * 4);
                for (int i = 0; i < M * N; i++) Y[lv][e][i] = 0.25f;
                ac_act a = {X, M, K, NULL, 0};
                ac_gemm_job j = {&mw, epis[e] == AC_EPI_SWIGLU ? &mu : NULL, &a, Y[lv][e], NULL, NULL, epis[e], NULL, 0};
                assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
                for (int i = 0; i < 7 * N; i++) Y7[i] = 0.25f;
                ac_act a7 = {X + (size_t)m7 * K, 7, K, NULL, 0};
                j.X = &a7;
                j.Y = Y7;
                assert_int_equal(ac_own_gemm_run(s.c, &j, 1), AC_OK);
                assert_memory_equal(Y7, Y[lv][e] + (size_t)m7 * N, (size_t)7 * N * 4);
                double err = 0, mx = 0;
                for (int m = 0; m < M; m += 37)
                    for (int n = 0; n < N; n++) {
                        double g = 0, u = 0;
                        for (int k = 0; k < K; k++) g += (double)X[(size_t)m * K + k] * W[n * K + k], u += (double)X[(size_t)m * K + k] * Wu[n * K + k];
                        const double r = epis[e] == AC_EPI_SWIGLU ? g / (1 + exp(-g)) * u : g + 0.25;
                        err = fmax(err, fabs(r - Y[lv][e][(size_t)m * N + n]));
                        mx = fmax(mx, fabs(r));
                    }
                assert_true(err / mx < 2e-6);
                if (lv == AC_CPU_AVX512) assert_memory_equal(Y[AC_CPU_AVX512][e], Y[AC_CPU_AVX2][e], (size_t)M * N * 4);
                printf("  own gemm %dx%dx%d at %-6s epilogue %d: rel err vs double %.2e, M-independent%s\n", M, N, K,
                       LV_NAME(lv), epis[e], err / mx, lv == AC_CPU_AVX512 ? ", bitwise equal to avx2" : "");
            }
            small_close(&s);
        }
        for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++)
            for (int e = 0; e < 2; e++) free(Y[lv][e]);
        free(W), free(Wu), free(X), free(Y7);
    }
}

/* ---- whole forwards --------------------------------------------------------------------------- */
typedef struct run_out {
    float *h[2]; /* [attn kind][T][D] */
} run_out;

static void forward_at(const ref_spec *sp, int lv, int f32_math, const int *lens, int n, run_out *o, int T,
                       const ref_model *ref, const int32_t *ids) {
    set_level(lv);
    uint8_t *buf;
    size_t size;
    assert_int_equal(ref_build(sp, &buf, &size), AC_OK);
    ac_model_params mp = ac_model_default_params();
    mp.f32_math = f32_math;
    ac_model *m;
    assert_int_equal(ac_model_load_memory(buf, size, &mp, AC_LOAD_NO_VOCAB, &m), AC_OK);
    const int D = m->info.n_embd;
    ac_seq seqs[4];
    for (int s = 0, off = 0; s < n; off += lens[s], s++) seqs[s].tokens = ids + off, seqs[s].n_tokens = lens[s];
    for (int attn = 0; attn < 2; attn++) {
        ac_ctx_params p = ac_ctx_default_params();
        p.n_threads = 2;
        p.attn = attn;
        ac_ctx *c;
        assert_int_equal(ac_ctx_new(m, &p, &c), AC_OK);
        if (lv < AC_CPU_AVX512 || !ac_cpu_hw()->avx512bf16) assert_int_equal(c->model->pack == AC_PACK_BF16, 0);
        o->h[attn] = malloc((size_t)T * D * 4);
        ac_outputs out = {0};
        out.hidden = o->h[attn];
        assert_int_equal(ac_forward(c, seqs, n, &out), AC_OK);
        ac_ctx_free(c);
    }
    if (ref) { /* each sequence against the double reference */
        double *hr = malloc((size_t)T * D * sizeof *hr);
        for (int s = 0, off = 0; s < n; off += lens[s], s++) ref_forward(ref, ids + off, lens[s], hr + (size_t)off * D, NULL, NULL);
        for (int attn = 0; attn < 2; attn++) assert_true(ref_rel_err_f(o->h[attn], hr, (size_t)T * D) < 1e-5);
        free(hr);
    }
    ac_model_free(m);
    free(buf);
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) { /* (no fmax: aarch64 GCC 12 fails vectorising that reduction) */
        const double d = fabs((double)a[i] - b[i]), v = fabs((double)b[i]);
        if (d > e) e = d;
        if (v > mx) mx = v;
    }
    return e / (mx > 0 ? mx : 1);
}

static void test_forward_levels(void **st) {
    (void)st;
    ref_spec specs[4] = {ref_spec_default(AC_ARCH_LLAMA), ref_spec_default(AC_ARCH_BERT),
                         ref_spec_default(AC_ARCH_QWEN2), ref_spec_default(AC_ARCH_LLAMA)};
    specs[2].wtype = GGML_F16;
    specs[3].wtype = GGML_Q8_0;
    specs[3].n_embd = 64, specs[3].n_ff = 160; /* rows of whole Q8_0 blocks */
    const char *labels[4] = {"llama F32", "bert F32", "qwen2 F16", "llama Q8_0"};
    const int lens[3] = {33, 70, 5};
    const int T = 108;
    for (int si = 0; si < 4; si++) {
        uint8_t *buf;
        size_t size;
        ac_gguf_file *g;
        ref_model ref;
        assert_int_equal(ref_build(&specs[si], &buf, &size), AC_OK);
        assert_int_equal(ac_gguf_open_memory(buf, size, &g), AC_OK);
        assert_int_equal(ref_model_init(&ref, g), 0);
        int32_t ids[108];
        uint64_t rs = 5 + (uint64_t)si;
        ref_random_tokens(&rs, ids, T, specs[si].n_vocab);
        run_out base;
        forward_at(&specs[si], AC_CPU_SCALAR, 1, lens, 3, &base, T, &ref, ids);
        const size_t n = (size_t)T * specs[si].n_embd;
        for (int lv = AC_CPU_AVX2; lv <= ac_cpu_hw_level(); lv++) {
            run_out o;
            forward_at(&specs[si], lv, 1, lens, 3, &o, T, &ref, ids);
            for (int attn = 0; attn < 2; attn++) {
                /* GEMMs agree bitwise between AVX2 and AVX-512, not with the portable path (no FMA in
                 * a baseline build); softmax sums are reduced in different lane orders: f32 rounding */
                const double d = rel_diff(o.h[attn], base.h[attn], n);
                printf("  %-10s %-6s vs scalar, %s attention: rel diff %.2e\n", labels[si], LV_NAME(lv),
                       attn ? "materialised" : "fused", d);
                assert_true(d < 1e-5);
                free(o.h[attn]);
            }
            if (specs[si].wtype != GGML_F32 && !(lv >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16)) {
                /* --fast without AVX512-BF16: the exact path, bitwise */
                run_out ex, fa;
                forward_at(&specs[si], lv, 1, lens, 3, &ex, T, NULL, ids);
                forward_at(&specs[si], lv, 0, lens, 3, &fa, T, NULL, ids);
                for (int attn = 0; attn < 2; attn++) {
                    assert_memory_equal(ex.h[attn], fa.h[attn], n * 4);
                    free(ex.h[attn]), free(fa.h[attn]);
                }
            }
        }
        for (int attn = 0; attn < 2; attn++) free(base.h[attn]);
        ref_model_free(&ref);
        ac_gguf_close(g);
        free(buf);
    }
    ac_cpu_set_level(-1);
}

/* ---- level errors ------------------------------------------------------------------------------ */
static void test_level_errors(void **st) {
    (void)st;
    assert_int_equal(ac_set_cpu_level("sse9"), AC_ERR_ARG);
    assert_non_null(strstr(ac_last_error(), "sse9"));
    assert_int_equal(ac_cpu_set_level(7), AC_ERR_ARG);
#if defined(__aarch64__)
    assert_int_equal(ac_set_cpu_level("avx512"), AC_ERR_ARG); /* not a level of this architecture */
    assert_non_null(strstr(ac_last_error(), "neon"));
    assert_int_equal(ac_set_cpu_level("neon"), AC_OK);
    assert_int_equal(ac_cpu_level(), AC_CPU_NEON);
#endif
    if (ac_cpu_hw_level() < AC_CPU_AVX512) {
#if !defined(__aarch64__)
        assert_int_equal(ac_set_cpu_level("avx512"), AC_ERR_UNSUPPORTED);
#else
        assert_int_equal(ac_cpu_set_level(AC_CPU_AVX512), AC_ERR_UNSUPPORTED);
#endif
        assert_non_null(strstr(ac_last_error(), "at most"));
    }
    assert_int_equal(ac_set_cpu_level("scalar"), AC_OK);
    char buf[128];
    assert_int_equal(strncmp(ac_cpu_info(buf, sizeof buf), "scalar", 6), 0);
    /* "auto": the default level, i.e. the hardware's lowered by AC_CPU when that names a level
     * the CPU has (so the test also holds when run by hand with AC_CPU=avx2|scalar) */
    int want = ac_cpu_hw_level(), env_lv;
    const char *env = getenv("AC_CPU");
    if (env && *env && ac_cpu_parse_level(env, &env_lv) == AC_OK && env_lv <= want) want = env_lv;
    assert_int_equal(ac_set_cpu_level("auto"), AC_OK);
    assert_int_equal(ac_cpu_level(), want);

}

/* hidden states [T][D] of ctx over the batch */
static float *hidden_of(ac_ctx *c, const ac_seq *seqs, int n, int T, int D) {
    float *h = malloc((size_t)T * D * sizeof *h);
    ac_outputs out = {0};
    out.hidden = h;
    assert_int_equal(ac_forward(c, seqs, n, &out), AC_OK);
    return h;
}

/* One model, contexts at two CPU levels alive at once: the CPU backend prepares the weights
 * each level needs (BF16 panels at AVX-512 with BF16, f32 copies at AVX2 in the fast mode)
 * and keeps both; each context computes what a model loaded at its level computes, bitwise.
 * (Before the backend table, weights were packed at load for the level of that moment and a
 * context at another level was refused.) */
static void test_two_levels_one_model(void **st) {
    (void)st;
    if (ac_cpu_hw_level() < AC_CPU_AVX2) {
        print_message("this CPU has one level: skipped\n");
        return;
    }
    const int hi = ac_cpu_hw_level(), lo = hi - 1;
    ref_spec sp = ref_spec_default(AC_ARCH_QWEN2);
    sp.wtype = GGML_F16;
    uint8_t *b;
    size_t size;
    assert_int_equal(ref_build(&sp, &b, &size), AC_OK);
    ac_model_params mp = ac_model_default_params();
    mp.f32_math = 0;
    const int lens[2] = {19, 7}, T = 26;
    int32_t ids[26];
    uint64_t seed = 5;
    ref_random_tokens(&seed, ids, T, sp.n_vocab);
    ac_seq seqs[2] = {{ids, lens[0]}, {ids + lens[0], lens[1]}};
    ac_ctx_params p = ac_ctx_default_params();
    p.n_threads = 2;

    ac_model *m;
    assert_int_equal(ac_model_load_memory(b, size, &mp, AC_LOAD_NO_VOCAB, &m), AC_OK);
    assert_int_equal(m->pack, AC_PACK_NONE); /* the loader prepares nothing */
    const int D = m->info.n_embd;
    ac_ctx *c_hi, *c_lo;
    set_level(hi);
    assert_int_equal(ac_ctx_new(m, &p, &c_hi), AC_OK);
    set_level(lo);
    assert_int_equal(ac_ctx_new(m, &p, &c_lo), AC_OK);
    assert_int_equal(c_lo->level, lo);
    if (hi == AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16) {
        assert_int_equal(c_hi->model->pack, AC_PACK_BF16);
        assert_int_equal(c_lo->model->pack, AC_PACK_F32P);
        assert_true(c_lo->model->fast_fallback);
    }
    assert_ptr_equal(ac_ctx_model(c_hi), m);
    assert_ptr_equal(ac_ctx_model(c_lo), m);
    float *h_lo = hidden_of(c_lo, seqs, 2, T, D);
    set_level(hi);
    float *h_hi = hidden_of(c_hi, seqs, 2, T, D);

    for (int k = 0; k < 2; k++) { /* each against a model loaded and run at that level alone */
        const int lv = k ? lo : hi;
        set_level(lv);
        ac_model *m1;
        ac_ctx *c1;
        assert_int_equal(ac_model_load_memory(b, size, &mp, AC_LOAD_NO_VOCAB, &m1), AC_OK);
        assert_int_equal(ac_ctx_new(m1, &p, &c1), AC_OK);
        float *h1 = hidden_of(c1, seqs, 2, T, D);
        assert_memory_equal(h1, k ? h_lo : h_hi, (size_t)T * D * sizeof *h1);
        free(h1);
        ac_ctx_free(c1);
        ac_model_free(m1);
    }
    free(h_lo), free(h_hi);
    ac_ctx_free(c_hi);
    ac_ctx_free(c_lo);
    ac_model_free(m); /* with it, the weights both contexts read */
    free(b);
    ac_cpu_set_level(-1);
}

/* ---- fused attention of several sequences ------------------------------------------------ */

/* double-precision attention of one sequence, out [L][H*hd] */
static void attn_ref(const ac_attn_args *a, double *out) {
    double *sc = malloc((size_t)a->L * sizeof *sc);
    for (int h = 0; h < a->H; h++) {
        const int g = h / (a->H / a->Hkv);
        for (int i = 0; i < a->L; i++) {
            const int nk = a->causal ? i + 1 : a->L;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < nk; j++) {
                double d = 0;
                for (int e = 0; e < a->hd; e++)
                    d += (double)a->q[(size_t)i * a->ldq + h * a->hd + e] * a->k[(size_t)j * a->ldk + g * a->hd + e];
                sc[j] = d * a->scale;
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j < nk; j++) sum += (sc[j] = exp(sc[j] - mx));
            for (int e = 0; e < a->hd; e++) {
                double o = 0;
                for (int j = 0; j < nk; j++) o += sc[j] * a->v[(size_t)j * a->ldk + g * a->hd + e];
                out[(size_t)i * a->ldq + h * a->hd + e] = o / sum;
            }
        }
    }
    free(sc);
}

/* Seven sequences (L 1, 7, 16, 25, 64, 65, 282: one key, a partial strip, a whole strip, MiniLM's
 * SST-2 length, one whole block, a block and one key, IMDB's length with a 26-key tail block),
 * 4 heads over 2 KV heads of dim 32, bidirectional and causal: at every level the one-step call
 * (2 threads, and the caller alone) gives bitwise what ac_attn_fused gives per sequence, and
 * each within f32 rounding of double-precision attention. */
static void test_attn_multi(void **st) {
    (void)st;
    enum { NS = 7, H = 4, HKV = 2, HD = 32 };
    const int Ls[NS] = {1, 7, 16, 25, 64, 65, 282};
    const int ldq = H * HD, ldk = HKV * HD;
    ac_pool *pool;
    assert_int_equal(ac_pool_new(2, &pool), AC_OK);
    uint64_t rs = 7;
    float *q[NS], *k[NS], *v[NS], *o1[NS], *om[NS];
    double *ref[NS];
    for (int s = 0; s < NS; s++) {
        const int L = Ls[s];
        q[s] = malloc((size_t)L * ldq * 4), o1[s] = malloc((size_t)L * ldq * 4), om[s] = malloc((size_t)L * ldq * 4);
        k[s] = malloc((size_t)L * ldk * 4), v[s] = malloc((size_t)L * ldk * 4);
        ref[s] = malloc((size_t)L * ldq * sizeof **ref);
        for (int i = 0; i < L * ldq; i++) q[s][i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 4194304.0f - 2.0f;
        for (int i = 0; i < L * ldk; i++) k[s][i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 4194304.0f - 2.0f;
        for (int i = 0; i < L * ldk; i++) v[s][i] = (float)((rs = rs * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
    }
    for (int causal = 0; causal < 2; causal++) {
        ac_attn_args a1[NS], am[NS];
        for (int s = 0; s < NS; s++) {
            ac_attn_args x = {q[s], k[s], v[s], o1[s], Ls[s], H, HKV, HD, ldq, ldk, causal, 1.0f / sqrtf((float)HD),
                              NULL, 0, 0, 0, 0, NULL};
            a1[s] = am[s] = x;
            am[s].out = om[s];
            attn_ref(&a1[s], ref[s]);
        }
        for (int lv = AC_CPU_SCALAR; lv <= ac_cpu_hw_level(); lv++) {
            set_level(lv);
            for (int s = 0; s < NS; s++) assert_int_equal(ac_attn_fused(&a1[s], NULL, pool), AC_OK);
            for (int serial = 0; serial < 2; serial++) {
                for (int s = 0; s < NS; s++) memset(om[s], 0xff, (size_t)Ls[s] * ldq * 4);
                assert_int_equal(ac_attn_fused_multi(am, NS, NULL, serial ? NULL : pool), AC_OK);
                for (int s = 0; s < NS; s++) assert_memory_equal(om[s], o1[s], (size_t)Ls[s] * ldq * 4);
            }
            double err = 0;
            for (int s = 0; s < NS; s++)
                for (int i = 0; i < Ls[s] * ldq; i++) err = fmax(err, fabs(om[s][i] - ref[s][i]));
            printf("  fused attention of %d sequences at %-6s %s: bitwise the per-sequence calls, max err vs double %.2e\n",
                   NS, LV_NAME(lv), causal ? "causal" : "bidirectional", err);
            assert_true(err < 2e-6); /* outputs are averages of values in [-0.5, 0.5] */
        }
    }
    assert_int_equal(ac_attn_fused_multi(NULL, 0, NULL, pool), AC_OK); /* nothing to do */
    ac_cpu_set_level(-1);
    ac_pool_free(pool);
    for (int s = 0; s < NS; s++) free(q[s]), free(k[s]), free(v[s]), free(o1[s]), free(om[s]), free(ref[s]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attn_multi),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_blocks),
        cmocka_unit_test(test_gemm_skip),
        cmocka_unit_test(test_forward_levels),
        cmocka_unit_test(test_level_errors),
        cmocka_unit_test(test_two_levels_one_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
