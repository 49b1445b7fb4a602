/* gemm_avx512.c — the own GEMM's AVX-512 micro-kernels and tasks (the driver,
 * packing and the other levels: gemm_own.c):
 *
 *   Y [M][N] = epilogue(X [M][K] . W^T)        W [N][K]
 *
 * BF16 (F16/BF16/Q8_0 weights, packed by the CPU backend (weights.c); X rounded to bf16 once):
 *
 * Packed layout ("panels"): W is cut into panels of NR = 64 output columns;
 * panel p holds, for each pair of input columns k2 = 0..K/2-1, the 64 rows'
 * bf16 pairs: panel[p][k2][c][e] = W[64p + c][2 k2 + e] (zero padded past N).
 * One VDPBF16PS multiplies a broadcast bf16 pair of X by 16 columns' pairs and
 * accumulates 16 f32 sums, so the micro-kernel keeps MR = 6 rows x 64 columns
 * = 24 zmm accumulators over the whole K (no K blocking: a panel is at most
 * K * 128 bytes, 1 MiB for K = 8192, and stays in L2).
 *
 * The summation order over K is fixed per output element (pair by pair, in
 * order), independent of M, the task split or the thread count: batched and
 * single-sequence results are bitwise identical.
 *
 * F32: each task reads its panel P [K][64] (AC_PACK_F32P: copied once by the
 * CPU backend), or transposes 64 rows of W into it (16x16 in-register
 * transposes), then the same 6 x 64 register tile with FMAs, k in order; the
 * task's first row tile prefetches the panel ahead of its loads.
 *
 * Compiled with the AVX-512 flags (BF16, VNNI included); gemm_own.c calls
 * the F32 task at level AC_CPU_AVX512 and the BF16 task only where the CPU
 * has AVX512-BF16. */
#include "forward/forward.h"
#include "gemm_own.h"
#include "simd.h"
#include "util/common.h"

#include <string.h>

#define MR 6

/* The MR x 4 accumulators of a micro-kernel as named locals (registers:
 * __m512 may alias anything, so summing through an array or the out pointer
 * would go through memory), and their copy-out. */
#define AC_ACC_DECL                                                                                              \
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00, \
           c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00, c40 = c00,      \
           c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00
#define AC_ACC_OUT(o)                                                                                            \
    do {                                                                                                         \
        o[0][0] = c00, o[0][1] = c01, o[0][2] = c02, o[0][3] = c03, o[1][0] = c10, o[1][1] = c11;                \
        o[1][2] = c12, o[1][3] = c13, o[2][0] = c20, o[2][1] = c21, o[2][2] = c22, o[2][3] = c23;                \
        o[3][0] = c30, o[3][1] = c31, o[3][2] = c32, o[3][3] = c33, o[4][0] = c40, o[4][1] = c41;                \
        o[4][2] = c42, o[4][3] = c43, o[5][0] = c50, o[5][1] = c51, o[5][2] = c52, o[5][3] = c53;                \
    } while (0)

/* out [MR][4] = sum over k2 of A rows (bf16 pairs) x panel; mr rows valid. */
static inline __attribute__((always_inline)) void kernel(const int mr, int kp, const uint16_t *A, size_t lda,
                                                          const uint16_t *B, __m512 out[MR][4]) {
    AC_ACC_DECL;
    const uint8_t *a0 = (const uint8_t *)A, *a1 = a0 + 2 * lda, *a2 = a1 + 2 * lda, *a3 = a2 + 2 * lda,
                  *a4 = a3 + 2 * lda, *a5 = a4 + 2 * lda;
#define AC_ROW(cr0, cr1, cr2, cr3, ap)                                  \
    do {                                                                \
        int32_t pr;                                                     \
        memcpy(&pr, (ap) + 4 * (size_t)k, 4);                           \
        __m512bh av = (__m512bh)_mm512_set1_epi32(pr);                  \
        cr0 = _mm512_dpbf16_ps(cr0, av, b0);                            \
        cr1 = _mm512_dpbf16_ps(cr1, av, b1);                            \
        cr2 = _mm512_dpbf16_ps(cr2, av, b2);                            \
        cr3 = _mm512_dpbf16_ps(cr3, av, b3);                            \
    } while (0)
    for (int k = 0; k < kp; k++) {
        const uint16_t *b = B + (size_t)k * NR * 2;
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 32),
                 b2 = (__m512bh)_mm512_load_si512(b + 64), b3 = (__m512bh)_mm512_load_si512(b + 96);
        AC_ROW(c00, c01, c02, c03, a0);
        if (mr > 1) AC_ROW(c10, c11, c12, c13, a1);
        if (mr > 2) AC_ROW(c20, c21, c22, c23, a2);
        if (mr > 3) AC_ROW(c30, c31, c32, c33, a3);
        if (mr > 4) AC_ROW(c40, c41, c42, c43, a4);
        if (mr > 5) AC_ROW(c50, c51, c52, c53, a5);
    }
#undef AC_ROW
    AC_ACC_OUT(out);
}

static void kernel_mr(int mr, int kp, const uint16_t *A, size_t lda, const uint16_t *B, __m512 acc[MR][4]) {
    switch (mr) {
    case 6: kernel(6, kp, A, lda, B, acc); break;
    case 5: kernel(5, kp, A, lda, B, acc); break;
    case 4: kernel(4, kp, A, lda, B, acc); break;
    case 3: kernel(3, kp, A, lda, B, acc); break;
    case 2: kernel(2, kp, A, lda, B, acc); break;
    default: kernel(1, kp, A, lda, B, acc); break;
    }
}

static inline void store_bf16(uint16_t *dst, __mmask16 m, __m512 v) {
    __m256i b = (__m256i)_mm512_cvtneps_pbh(v);
    _mm256_mask_storeu_epi16(dst, m, b);
}

/* The epilogue of 16 results v of row `row` (Y offset), columns col.. (mask mk);
 * g: the SWIGLU gate values of the same outputs. */
static inline void epi16(const ac_gemm_job *j, size_t row, int col, __mmask16 mk, __m512 v, const float *g) {
    if (j->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, j->bias + col));
    switch (j->epi) {
    case AC_EPI_ACCUM: v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, j->Y + row)); break;
    case AC_EPI_GELU: v = ac_gelu512(v); break;
    case AC_EPI_SWIGLU: v = ac_swiglu512(_mm512_maskz_loadu_ps(mk, g), v); break;
    default: break;
    }
    if (j->Y) _mm512_mask_storeu_ps(j->Y + row, mk, v);
    if (j->Ybf) store_bf16(j->Ybf + row, mk, v);
}

/* One task: rows m0..m0+nm of job j, panel p. */
void ac_gemm_task_bf16_avx512(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx) {
    (void)pk, (void)nx;
    float gate[MR * NR] __attribute__((aligned(64))); /* SWIGLU: silu's input */
    const ac_mat *W = j->W;
    const int N = W->n_out, K = W->n_in, kp = K / 2, n0 = p * NR;
    const uint16_t *A = j->X->bf16;
    const uint16_t *B = (const uint16_t *)W->packed + (size_t)p * kp * NR * 2;
    const uint16_t *Bu = j->W_up ? (const uint16_t *)j->W_up->packed + (size_t)p * kp * NR * 2 : NULL;
    __mmask16 mk[4];
    for (int c = 0; c < 4; c++) mk[c] = ac_mask16(N - n0 - 16 * c);
    __m512 acc[MR][4];
    for (int r0 = m0; r0 < m0 + nm; r0 += MR) {
        const int mr = AC_MIN(MR, m0 + nm - r0);
        kernel_mr(mr, kp, A + (size_t)r0 * K, (size_t)K, B, acc);
        if (j->epi == AC_EPI_SWIGLU) { /* keep silu's input, then the up projection */
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < 4; c++) _mm512_store_ps(gate + r * NR + 16 * c, acc[r][c]);
            kernel_mr(mr, kp, A + (size_t)r0 * K, (size_t)K, Bu, acc);
        }
        for (int r = 0; r < mr; r++) {
            const size_t row = (size_t)(r0 + r) * N + n0;
            for (int c = 0; c < 4 && mk[c]; c++) epi16(j, row + 16 * c, n0 + 16 * c, mk[c], acc[r][c], gate + r * NR + 16 * c);
        }
    }
}

/* ---- F32 -------------------------------------------------------------------------------------- */

/* In-register transpose of 16 rows of 16 floats. */
static inline void tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* P [K][NR] = the 64 rows of W from n0, transposed (rows past N repeat the last one;
 * their results are never stored). */
static void pack_panel_f32(const ac_mat *W, int n0, float *P) {
    const int N = W->n_out, K = W->n_in;
    for (int c = 0; c < NR / 16; c++) {
        const float *src[16];
        for (int i = 0; i < 16; i++) src[i] = W->f32 + (size_t)AC_MIN(n0 + 16 * c + i, N - 1) * K;
        for (int k0 = 0; k0 < K; k0 += 16) {
            const __mmask16 mk = ac_mask16(K - k0);
            __m512 r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_maskz_loadu_ps(mk, src[i] + k0);
            tr16(r);
            for (int kk = 0; kk < 16 && k0 + kk < K; kk++) _mm512_store_ps(P + (size_t)(k0 + kk) * NR + 16 * c, r[kk]);
        }
    }
}

/* Prefetch distance of the first row tile of an F32 task, in panel rows (64 rows x 256 bytes =
 * 16 KiB ahead): that tile brings the panel in from memory, where a short input's call
 * (all-MiniLM-L6-v2, 13 rows: 42 MB of F32 weights, more than L3, streamed once per call)
 * otherwise stalls on it (hardware prefetch alone: 6,600 against 8,000 tokens/s, 1 thread).
 * The later tiles find it in L1/L2. Prefetches change no result. */
#define PF_ROWS 64

/* out [MR][4] = A rows (f32) x a panel [K][NR]; mr rows valid (registers, as the BF16 kernel).
 * The panel is P (f32), or with f16 P16 (AC_PACK_F16P: f16, each row widened as it is read
 * (exact: the same f32 values, the same FMAs in the same order, so bitwise the f32 panel's sums)
 * and, with st, stored to st [K][NR] for the task's later row tiles; a task's first tile thus
 * reads half the bytes from memory, where a call of few rows spends much of its time: the weights
 * of a forward do not stay in cache between calls). f16, mr and pf are constants where it is
 * inlined, so each use compiles to one specialised loop.
 * pf: prefetch the panel PF_ROWS rows ahead (f16: always, 2 * PF_ROWS f16 rows, the same bytes);
 * nxb (f32 only): prefetch the nxn cache lines from nxb into L2, spread over the K steps (another
 * panel: the next task's, while this tile computes from cache). */
static inline __attribute__((always_inline)) void kernel_fma(const int mr, const int f16, int K, const float *A,
                                                              size_t lda, const float *P, const uint16_t *P16,
                                                              float *st, __m512 out[MR][4], const int pf,
                                                              const char *nxb, int nxn) {
    AC_ACC_DECL;
    int nxd = 0; /* lines of nxb prefetched so far */
    const float *a0 = A, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda, *a5 = a4 + lda;
#define F_ROW(cr0, cr1, cr2, cr3, ap)                 \
    do {                                              \
        __m512 av = _mm512_set1_ps((ap)[k]);          \
        cr0 = _mm512_fmadd_ps(av, b0, cr0);           \
        cr1 = _mm512_fmadd_ps(av, b1, cr1);           \
        cr2 = _mm512_fmadd_ps(av, b2, cr2);           \
        cr3 = _mm512_fmadd_ps(av, b3, cr3);           \
    } while (0)
    for (int k = 0; k < K; k++) {
        __m512 b0, b1, b2, b3; /* the panel's row k, f32 */
        if (f16) {
            const uint16_t *b = P16 + (size_t)k * NR;
            if (k + 2 * PF_ROWS < K) {
                const char *q = (const char *)(b + 2 * PF_ROWS * NR);
                _mm_prefetch(q, _MM_HINT_T0), _mm_prefetch(q + 64, _MM_HINT_T0);
            }
            b0 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)b));
            b1 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(b + 16)));
            b2 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(b + 32)));
            b3 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(b + 48)));
            if (st) {
                float *d = st + (size_t)k * NR;
                _mm512_store_ps(d, b0), _mm512_store_ps(d + 16, b1), _mm512_store_ps(d + 32, b2), _mm512_store_ps(d + 48, b3);
            }
        } else {
            const float *b = P + (size_t)k * NR;
            if (nxb)
                for (const int want = (int)((int64_t)(k + 1) * nxn / K); nxd < want; nxd++)
                    _mm_prefetch(nxb + (size_t)64 * nxd, _MM_HINT_T1);
            if (pf && k + PF_ROWS < K) {
                const char *q = (const char *)(b + PF_ROWS * NR);
                _mm_prefetch(q, _MM_HINT_T0), _mm_prefetch(q + 64, _MM_HINT_T0);
                _mm_prefetch(q + 128, _MM_HINT_T0), _mm_prefetch(q + 192, _MM_HINT_T0);
            }
            b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32), b3 = _mm512_load_ps(b + 48);
        }
        F_ROW(c00, c01, c02, c03, a0);
        if (mr > 1) F_ROW(c10, c11, c12, c13, a1);
        if (mr > 2) F_ROW(c20, c21, c22, c23, a2);
        if (mr > 3) F_ROW(c30, c31, c32, c33, a3);
        if (mr > 4) F_ROW(c40, c41, c42, c43, a4);
        if (mr > 5) F_ROW(c50, c51, c52, c53, a5);
    }
#undef F_ROW
    AC_ACC_OUT(out);
}

static void kernel_f32_mr(int mr, int K, const float *A, size_t lda, const float *P, __m512 acc[MR][4], int pf,
                          const char *nxb, int nxn) {
#define KF(n)                                                                                                  \
    (pf ? kernel_fma(n, 0, K, A, lda, P, NULL, NULL, acc, 1, NULL, 0)                                                         \
        : nxb ? kernel_fma(n, 0, K, A, lda, P, NULL, NULL, acc, 0, nxb, nxn) : kernel_fma(n, 0, K, A, lda, P, NULL, NULL, acc, 0, NULL, 0))
    switch (mr) {
    case 6: KF(6); break;
    case 5: KF(5); break;
    case 4: KF(4); break;
    case 3: KF(3); break;
    case 2: KF(2); break;
    default: KF(1); break;
    }
#undef KF
}

static void kernel_f16_mr(int mr, int K, const float *A, size_t lda, const uint16_t *P16, float *st, __m512 acc[MR][4]) {
#define KH(n) (st ? kernel_fma(n, 1, K, A, lda, NULL, P16, st, acc, 1, NULL, 0) : kernel_fma(n, 1, K, A, lda, NULL, P16, NULL, acc, 1, NULL, 0))
    switch (mr) {
    case 6: KH(6); break;
    case 5: KH(5); break;
    case 4: KH(4); break;
    case 3: KH(3); break;
    case 2: KH(2); break;
    default: KH(1); break;
    }
#undef KH
}

/* The first row tile of a task on panel p of W: from the f16 panel (widened into st when later
 * tiles follow) for AC_PACK_F16P, else kernel_fma on the f32 panel P with prefetches. */
static void first_tile(int mr, int K, const float *A, size_t lda, const ac_mat *W, int p, const float *P, float *st,
                       __m512 acc[MR][4]) {
    if (W->pack == AC_PACK_F16P) kernel_f16_mr(mr, K, A, lda, ac_f16_panel(W, p), st, acc);
    else kernel_f32_mr(mr, K, A, lda, P, acc, 1, NULL, 0);
}

/* Tiles of a task that prefetch the next task's panels (after the first, which streams its own) */
#define NX_TILES 4

/* One F32 task: rows m0..m0+nm of job j, panel p; pk: [2][K][NR] panel scratch. */
void ac_gemm_task_f32_avx512(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx) {
    float gate[MR * NR] __attribute__((aligned(64))); /* SWIGLU: silu's input */
    const int N = j->W->n_out, K = j->W->n_in, n0 = p * NR;
    /* F16P: the first tile widens the panels into pk as it goes; else transposed here if not in place */
    const float *P = ac_f32_panel(j->W, p, pk), *Pu = NULL;
    if (P == pk && j->W->pack != AC_PACK_F16P) pack_panel_f32(j->W, n0, pk);
    float *su = pk + (size_t)K * NR;
    if (j->epi == AC_EPI_SWIGLU && (Pu = ac_f32_panel(j->W_up, p, su)) == su && j->W_up->pack != AC_PACK_F16P)
        pack_panel_f32(j->W_up, n0, su);
    __mmask16 mk[4];
    for (int c = 0; c < 4; c++) mk[c] = ac_mask16(N - n0 - 16 * c);
    __m512 acc[MR][4];
    /* tiles 1..nxt prefetch the next task's panels, a share each (SWIGLU: its second one while
     * computing with W_up; otherwise both in turn) */
    const int swiglu = j->epi == AC_EPI_SWIGLU, ntile = (nm + MR - 1) / MR, nxt = AC_MIN(NX_TILES, ntile - 1);
    const int nx0 = nx ? (int)(nx->bytes[0] / 64) : 0, nx1 = nx ? (int)(nx->bytes[1] / 64) : 0;
    for (int r0 = m0; r0 < m0 + nm; r0 += MR) {
        const int mr = AC_MIN(MR, m0 + nm - r0), ti = (r0 - m0) / MR;
        const float *A = j->X->x + (size_t)r0 * K;
        const int more = r0 + mr < m0 + nm; /* later tiles read what the first one widened */
        const char *xb = NULL, *xu = NULL; /* this tile's share of the next panels */
        int xn = 0, xun = 0;
        if (ti >= 1 && ti <= nxt) {
            const int s0 = (ti - 1) * nx0 / nxt, s1 = ti * nx0 / nxt, u0 = (ti - 1) * nx1 / nxt, u1 = ti * nx1 / nxt;
            if (nx0) xb = (const char *)nx->p[0] + (size_t)64 * s0, xn = s1 - s0;
            if (nx1) xu = (const char *)nx->p[1] + (size_t)64 * u0, xun = u1 - u0;
            if (!swiglu && !xb) xb = xu, xn = xun, xu = NULL;
        }
        /* the first tile brings the panel in (prefetches; f16 panels widened on the way) */
        if (r0 == m0) first_tile(mr, K, A, (size_t)K, j->W, p, P, more ? pk : NULL, acc);
        else kernel_f32_mr(mr, K, A, (size_t)K, P, acc, 0, xb, xn);
        if (!swiglu && xu && r0 != m0) /* (both next panels, this job has one kernel call per tile) */
            for (int l = 0; l < xun; l++) _mm_prefetch(xu + (size_t)64 * l, _MM_HINT_T1);
        if (swiglu) {
            for (int r = 0; r < mr; r++)
                for (int c = 0; c < 4; c++) _mm512_store_ps(gate + r * NR + 16 * c, acc[r][c]);
            if (r0 == m0) first_tile(mr, K, A, (size_t)K, j->W_up, p, Pu, more ? su : NULL, acc);
            else kernel_f32_mr(mr, K, A, (size_t)K, Pu, acc, 0, xu, xun);
        }
        for (int r = 0; r < mr; r++) {
            const size_t row = (size_t)(r0 + r) * N + n0;
            for (int c = 0; c < 4 && mk[c]; c++) epi16(j, row + 16 * c, n0 + 16 * c, mk[c], acc[r][c], gate + r * NR + 16 * c);
        }
    }
}

