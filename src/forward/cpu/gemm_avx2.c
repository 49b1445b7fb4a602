/* gemm_avx2.c — the own GEMM's AVX2 + FMA micro-kernel and F32 task (driver:
 * gemm_own.c). Each task reads its panel P [K][64] (AC_PACK_F32P: copied once by
 * the CPU backend) or transposes 64 rows of W into it (8x8 in-register
 * transposes; the first row tile prefetches the panel ahead), then, per strip of 16 columns, a
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

/* Prefetch distance of a task's first row tile, in panel rows (see gemm_avx512.c: that tile
 * brings the panel in from memory; the later ones find it in L1/L2). */
#define PF_ROWS 64

/* C [MR][NR] (row stride NR, columns s..s+15 of it) += A rows (k = 0..K-1) x the 16 columns
 * of P (row stride NR); mr rows valid. The accumulators start from and return to C, so a
 * product cut into k blocks adds exactly what one pass would. pf: prefetch the strip's cache
 * line PF_ROWS rows ahead while that stays below row pf_end (the panel's end). */
static inline __attribute__((always_inline)) void kernel(const int mr, int K, const float *A, size_t lda,
                                                          const float *P, float *C, const int pf, int pf_end) {
#define C_LD(r) _mm256_load_ps(C + (r) * NR), _mm256_load_ps(C + (r) * NR + 8)
    __m256 c00 = _mm256_load_ps(C), c01 = _mm256_load_ps(C + 8), c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    if (mr > 1) c10 = _mm256_load_ps(C + NR), c11 = _mm256_load_ps(C + NR + 8);
    if (mr > 2) c20 = _mm256_load_ps(C + 2 * NR), c21 = _mm256_load_ps(C + 2 * NR + 8);
    if (mr > 3) c30 = _mm256_load_ps(C + 3 * NR), c31 = _mm256_load_ps(C + 3 * NR + 8);
    if (mr > 4) c40 = _mm256_load_ps(C + 4 * NR), c41 = _mm256_load_ps(C + 4 * NR + 8);
    if (mr > 5) c50 = _mm256_load_ps(C + 5 * NR), c51 = _mm256_load_ps(C + 5 * NR + 8);
#undef C_LD
    const float *a0 = A, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda, *a5 = a4 + lda;
#define F_ROW(cr0, cr1, ap)                            \
    do {                                               \
        __m256 av = _mm256_broadcast_ss((ap) + k);     \
        cr0 = _mm256_fmadd_ps(av, b0, cr0);            \
        cr1 = _mm256_fmadd_ps(av, b1, cr1);            \
    } while (0)
    for (int k = 0; k < K; k++) {
        const float *b = P + (size_t)k * NR;
        if (pf && k + PF_ROWS < pf_end) _mm_prefetch((const char *)(b + PF_ROWS * NR), _MM_HINT_T0);
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        F_ROW(c00, c01, a0);
        if (mr > 1) F_ROW(c10, c11, a1);
        if (mr > 2) F_ROW(c20, c21, a2);
        if (mr > 3) F_ROW(c30, c31, a3);
        if (mr > 4) F_ROW(c40, c41, a4);
        if (mr > 5) F_ROW(c50, c51, a5);
    }
#undef F_ROW
    _mm256_store_ps(C, c00), _mm256_store_ps(C + 8, c01);
    if (mr > 1) _mm256_store_ps(C + NR, c10), _mm256_store_ps(C + NR + 8, c11);
    if (mr > 2) _mm256_store_ps(C + 2 * NR, c20), _mm256_store_ps(C + 2 * NR + 8, c21);
    if (mr > 3) _mm256_store_ps(C + 3 * NR, c30), _mm256_store_ps(C + 3 * NR + 8, c31);
    if (mr > 4) _mm256_store_ps(C + 4 * NR, c40), _mm256_store_ps(C + 4 * NR + 8, c41);
    if (mr > 5) _mm256_store_ps(C + 5 * NR, c50), _mm256_store_ps(C + 5 * NR + 8, c51);
}

#define KB 128 /* k block: P's block (128 x 64 floats, 32 KiB) stays in L1 over all the task's rows */

/* C [.][NR] (rows r0.., columns of the panel) += A rows x P over k0..k0+kl for the task's rows;
 * pf_end > 0: the first row tile prefetches P up to its row pf_end (the rest of the panel). */
static void kblock(int nm, int kl, int nc, const float *A, size_t lda, const float *P, float *C, int pf_end) {
    for (int r = 0; r < nm;) {
        /* the last 7..11 rows as two tiles of 4..6 (e.g. 8 = 4 + 4, not 6 + 2): a tile of
         * 1..3 rows has 2..6 accumulators, too few to cover the FMA latency */
        const int left = nm - r, mr = left > MR && left < 2 * MR ? (left + 1) / 2 : AC_MIN(MR, left);
        const float *Ar = A + (size_t)r * lda;
        float *Cr = C + (size_t)r * NR;
        const int pf = r == 0 && pf_end > 0;
        for (int s = 0; s < nc; s += 16) {
#define KS(n) (pf ? kernel(n, kl, Ar, lda, P + s, Cr + s, 1, pf_end) : kernel(n, kl, Ar, lda, P + s, Cr + s, 0, 0))
            switch (mr) {
            case 6: KS(6); break;
            case 5: KS(5); break;
            case 4: KS(4); break;
            case 3: KS(3); break;
            case 2: KS(2); break;
            default: KS(1); break;
            }
#undef KS
        }
        r += mr;
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

/* One F32 task: rows m0..m0+nm of job j, panel p; pk: [2][K][NR] panel scratch. The panel is
 * packed once and serves every sub-block of MBF rows. Loop order per sub-block: k block, rows,
 * strips: each k block of the panel is read from L1 by every row of the sub-block (a whole
 * panel, K x 256 bytes, can exceed L2 at K = 8192); each output still sums over k in order. */
void ac_gemm_task_f32_avx2(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx) {
    (void)nx;
    const int N = j->W->n_out, K = j->W->n_in, n0 = p * NR, nc = AC_MIN(NR, N - n0);
    const int swiglu = j->epi == AC_EPI_SWIGLU;
    const float *P = ac_f32_panel(j->W, p, pk), *Pu = NULL;
    if (P == pk) pack_panel(j->W, n0, pk);
    if (swiglu) {
        float *su = pk + (size_t)K * NR;
        if ((Pu = ac_f32_panel(j->W_up, p, su)) == su) pack_panel(j->W_up, n0, su);
    }
    /* C: the product (SWIGLU: the up projection), G: SWIGLU's gate (silu's input) */
    float C[MBF * NR] __attribute__((aligned(32))), G[MBF * NR] __attribute__((aligned(32)));
    const __m256 zero = _mm256_setzero_ps();
    for (int s0 = m0; s0 < m0 + nm; s0 += MBF) {
        const int sn = AC_MIN(MBF, m0 + nm - s0);
        memset(C, 0, (size_t)sn * NR * sizeof *C);
        if (swiglu) memset(G, 0, (size_t)sn * NR * sizeof *G);
        const float *A = j->X->x + (size_t)s0 * K;
        for (int k0 = 0; k0 < K; k0 += KB) {
            const int kl = AC_MIN(KB, K - k0);
            const int pf_end = s0 == m0 ? K - k0 : 0; /* the first sub-block brings the panel in */
            if (swiglu) {
                kblock(sn, kl, nc, A + k0, (size_t)K, P + (size_t)k0 * NR, G, pf_end);
                kblock(sn, kl, nc, A + k0, (size_t)K, Pu + (size_t)k0 * NR, C, pf_end);
            } else {
                kblock(sn, kl, nc, A + k0, (size_t)K, P + (size_t)k0 * NR, C, pf_end);
            }
        }
        for (int r = 0; r < sn; r++) {
            const size_t row = (size_t)(s0 + r) * N + n0;
            for (int c = 0; c < nc; c += 8) {
                const __m256 g = swiglu ? _mm256_load_ps(G + r * NR + c) : zero;
                epi8(j, row + c, n0 + c, nc - c, _mm256_load_ps(C + r * NR + c), g);
            }
        }
    }
}
