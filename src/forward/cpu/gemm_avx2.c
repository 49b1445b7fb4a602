/* gemm_avx2.c — the own GEMM's AVX2 + FMA micro-kernel and F32 task (driver:
 * gemm_own.c). Each task transposes its panel of 64 rows of W into
 * P [K][64] (8x8 in-register transposes), then, per strip of 16 columns, a
 * register tile of MR = 6 rows x 16 columns (12 ymm accumulators, 2 loads of
 * P and 6 broadcasts of X per k) over the whole K, k in order: the same FMAs
 * in the same order as the AVX-512 F32 kernel, so the products agree bitwise.
 * Fused epilogues (bias, accumulate, GELU, SwiGLU) on 8 lanes with masked
 * tails. Compiled with the AVX2 flags; used at level AC_CPU_AVX2. */
#include "forward/forward.h"
#include "gemm_own.h"
#include "simd.h"
#include "util/common.h"

#include <string.h>

#define MR 6

/* In-register transpose of 8 rows of 8 floats. */
static inline void tr8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* P [K][NR] = the 64 rows of W from n0, transposed (rows past N repeat the last one;
 * their results are never stored). */
static void pack_panel(const ac_mat *W, int n0, float *P) {
    const int N = W->n_out, K = W->n_in;
    for (int c = 0; c < NR / 8; c++) {
        const float *src[8];
        for (int i = 0; i < 8; i++) src[i] = W->f32 + (size_t)AC_MIN(n0 + 8 * c + i, N - 1) * K;
        int k0 = 0;
        for (; k0 + 8 <= K; k0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src[i] + k0);
            tr8(r);
            for (int kk = 0; kk < 8; kk++) _mm256_store_ps(P + (size_t)(k0 + kk) * NR + 8 * c, r[kk]);
        }
        for (; k0 < K; k0++)
            for (int i = 0; i < 8; i++) P[(size_t)k0 * NR + 8 * c + i] = src[i][k0];
    }
}

/* out [MR][2] = A rows x P's 16 columns (row stride NR); mr rows valid. */
static inline __attribute__((always_inline)) void kernel(const int mr, int K, const float *A, size_t lda,
                                                          const float *P, __m256 out[MR][2]) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = A, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda, *a5 = a4 + lda;
#define F_ROW(cr0, cr1, ap)                            \
    do {                                               \
        __m256 av = _mm256_broadcast_ss((ap) + k);     \
        cr0 = _mm256_fmadd_ps(av, b0, cr0);            \
        cr1 = _mm256_fmadd_ps(av, b1, cr1);            \
    } while (0)
    for (int k = 0; k < K; k++) {
        const float *b = P + (size_t)k * NR;
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        F_ROW(c00, c01, a0);
        if (mr > 1) F_ROW(c10, c11, a1);
        if (mr > 2) F_ROW(c20, c21, a2);
        if (mr > 3) F_ROW(c30, c31, a3);
        if (mr > 4) F_ROW(c40, c41, a4);
        if (mr > 5) F_ROW(c50, c51, a5);
    }
#undef F_ROW
    out[0][0] = c00, out[0][1] = c01, out[1][0] = c10, out[1][1] = c11, out[2][0] = c20, out[2][1] = c21;
    out[3][0] = c30, out[3][1] = c31, out[4][0] = c40, out[4][1] = c41, out[5][0] = c50, out[5][1] = c51;
}

static void kernel_mr(int mr, int K, const float *A, size_t lda, const float *P, __m256 acc[MR][2]) {
    switch (mr) {
    case 6: kernel(6, K, A, lda, P, acc); break;
    case 5: kernel(5, K, A, lda, P, acc); break;
    case 4: kernel(4, K, A, lda, P, acc); break;
    case 3: kernel(3, K, A, lda, P, acc); break;
    case 2: kernel(2, K, A, lda, P, acc); break;
    default: kernel(1, K, A, lda, P, acc); break;
    }
}

/* The epilogue of 8 results v of row `row` (Y offset), columns col.. (n valid lanes);
 * g: the SWIGLU gate values of the same outputs. */
static inline void epi8(const ac_gemm_job *j, size_t row, int col, int n, __m256 v, __m256 g) {
    const __m256i mk = ac_mask8(n);
    const int full = n >= 8;
    if (j->bias) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(j->bias + col) : _mm256_maskload_ps(j->bias + col, mk));
    switch (j->epi) {
    case AC_EPI_ACCUM: v = _mm256_add_ps(v, full ? _mm256_loadu_ps(j->Y + row) : _mm256_maskload_ps(j->Y + row, mk)); break;
    case AC_EPI_GELU: v = ac_gelu256(v); break;
    case AC_EPI_SWIGLU: v = ac_swiglu256(g, v); break;
    default: break;
    }
    if (j->Y) {
        if (full) _mm256_storeu_ps(j->Y + row, v);
        else _mm256_maskstore_ps(j->Y + row, mk, v);
    }
    if (j->Ybf) {
        float t[8];
        _mm256_storeu_ps(t, v);
        ac_f32_to_bf16(j->Ybf + row, t, (size_t)AC_MIN(n, 8));
    }
}

/* One F32 task: rows m0..m0+nm of job j, panel p; pk: [2][K][NR] panel scratch. */
void ac_gemm_task_f32_avx2(const ac_gemm_job *j, int p, int m0, int nm, float *pk) {
    const int N = j->W->n_out, K = j->W->n_in, n0 = p * NR, nc = AC_MIN(NR, N - n0);
    float *P = pk, *Pu = pk + (size_t)K * NR;
    pack_panel(j->W, n0, P);
    if (j->epi == AC_EPI_SWIGLU) pack_panel(j->W_up, n0, Pu);
    __m256 acc[MR][2], gate[MR][2];
    memset(gate, 0, sizeof gate);
    for (int r0 = m0; r0 < m0 + nm; r0 += MR) {
        const int mr = AC_MIN(MR, m0 + nm - r0);
        const float *A = j->X->x + (size_t)r0 * K;
        for (int s = 0; s < nc; s += 16) {
            kernel_mr(mr, K, A, (size_t)K, P + s, acc);
            if (j->epi == AC_EPI_SWIGLU) {
                memcpy(gate, acc, sizeof gate);
                kernel_mr(mr, K, A, (size_t)K, Pu + s, acc);
            }
            for (int r = 0; r < mr; r++) {
                const size_t row = (size_t)(r0 + r) * N + n0 + s;
                epi8(j, row, n0 + s, nc - s, acc[r][0], gate[r][0]);
                if (nc - s > 8) epi8(j, row + 8, n0 + s + 8, nc - s - 8, acc[r][1], gate[r][1]);
            }
        }
    }
}
