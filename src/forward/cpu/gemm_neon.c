/* gemm_neon.c — the own GEMM's NEON micro-kernel and F32 task on aarch64
 * (driver: gemm_own.c). Each task transposes its panel of 64 rows of W into
 * P [K][64] (4x4 in-register transposes), then, per strip of 16 columns, a
 * register tile of MR = 6 rows x 16 columns (24 q-register accumulators, 4
 * loads of P and 6 lane-broadcast FMAs of X per k) over the whole K, k in
 * order: each output is the chain acc = fma(x[k], w[k], acc), k = 0..K-1,
 * independent of M and the task split. Fused epilogues (bias, accumulate,
 * GELU, SwiGLU) on 4 lanes. Used at level AC_CPU_NEON. */
#include "forward/forward.h"
#include "gemm_own.h"
#include "simd.h"
#include "util/common.h"

#include <string.h>

#define MR 6

/* P [K][NR] = the 64 rows of W from n0, transposed (rows past N repeat the last one;
 * their results are never stored). */
static void pack_panel(const ac_mat *W, int n0, float *P) {
    const int N = W->n_out, K = W->n_in;
    for (int c = 0; c < NR / 4; c++) {
        const float *src[4];
        for (int i = 0; i < 4; i++) src[i] = W->f32 + (size_t)AC_MIN(n0 + 4 * c + i, N - 1) * K;
        int k0 = 0;
        for (; k0 + 4 <= K; k0 += 4) {
            float32x4_t r0 = vld1q_f32(src[0] + k0), r1 = vld1q_f32(src[1] + k0), r2 = vld1q_f32(src[2] + k0),
                        r3 = vld1q_f32(src[3] + k0);
            /* 4x4 transpose: rows of W -> rows of P */
            float32x4_t t0 = vtrn1q_f32(r0, r1), t1 = vtrn2q_f32(r0, r1), t2 = vtrn1q_f32(r2, r3),
                        t3 = vtrn2q_f32(r2, r3);
            float *d = P + (size_t)k0 * NR + 4 * c;
            vst1q_f32(d, vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2))));
            vst1q_f32(d + NR, vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3))));
            vst1q_f32(d + 2 * NR, vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2))));
            vst1q_f32(d + 3 * NR, vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3))));
        }
        for (; k0 < K; k0++)
            for (int i = 0; i < 4; i++) P[(size_t)k0 * NR + 4 * c + i] = src[i][k0];
    }
}

/* out [MR][16] = A rows (f32, k = 0..K-1) x columns s..s+15 of P (row stride NR); mr rows valid. */
static inline __attribute__((always_inline)) void kernel(const int mr, int K, const float *A, size_t lda,
                                                          const float *P, float *out) {
    float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00,
                c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00, c40 = c00,
                c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    const float *a0 = A, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda, *a5 = a4 + lda;
#define N_ROW(cr0, cr1, cr2, cr3, ap)          \
    do {                                       \
        const float x = (ap)[k];               \
        cr0 = vfmaq_n_f32(cr0, b0, x);         \
        cr1 = vfmaq_n_f32(cr1, b1, x);         \
        cr2 = vfmaq_n_f32(cr2, b2, x);         \
        cr3 = vfmaq_n_f32(cr3, b3, x);         \
    } while (0)
    for (int k = 0; k < K; k++) {
        const float *b = P + (size_t)k * NR;
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
        N_ROW(c00, c01, c02, c03, a0);
        if (mr > 1) N_ROW(c10, c11, c12, c13, a1);
        if (mr > 2) N_ROW(c20, c21, c22, c23, a2);
        if (mr > 3) N_ROW(c30, c31, c32, c33, a3);
        if (mr > 4) N_ROW(c40, c41, c42, c43, a4);
        if (mr > 5) N_ROW(c50, c51, c52, c53, a5);
    }
#undef N_ROW
#define N_ST(r, x0, x1, x2, x3)                                                                     \
    do {                                                                                          \
        vst1q_f32(out + (r) * 16, x0), vst1q_f32(out + (r) * 16 + 4, x1);                         \
        vst1q_f32(out + (r) * 16 + 8, x2), vst1q_f32(out + (r) * 16 + 12, x3);                    \
    } while (0)
    N_ST(0, c00, c01, c02, c03);
    N_ST(1, c10, c11, c12, c13);
    N_ST(2, c20, c21, c22, c23);
    N_ST(3, c30, c31, c32, c33);
    N_ST(4, c40, c41, c42, c43);
    N_ST(5, c50, c51, c52, c53);
#undef N_ST
}

static void kernel_mr(int mr, int K, const float *A, size_t lda, const float *P, float *out) {
    switch (mr) {
    case 6: kernel(6, K, A, lda, P, out); break;
    case 5: kernel(5, K, A, lda, P, out); break;
    case 4: kernel(4, K, A, lda, P, out); break;
    case 3: kernel(3, K, A, lda, P, out); break;
    case 2: kernel(2, K, A, lda, P, out); break;
    default: kernel(1, K, A, lda, P, out); break;
    }
}

/* The epilogue of 4 results v (Y offset row, bias column col), nv of them stored;
 * g: the SWIGLU gate values of the same outputs. */
static inline void epi4(const ac_gemm_job *j, size_t row, int col, int nv, float32x4_t v, const float *g) {
    float t[4] = {0}, tg[4] = {0};
    if (j->bias) {
        memcpy(t, j->bias + col, (size_t)nv * sizeof *t);
        v = vaddq_f32(v, vld1q_f32(t));
    }
    switch (j->epi) {
    case AC_EPI_ACCUM:
        memcpy(t, j->Y + row, (size_t)nv * sizeof *t);
        v = vaddq_f32(v, vld1q_f32(t));
        break;
    case AC_EPI_GELU: v = ac_gelu_f32x4(v); break;
    case AC_EPI_SWIGLU:
        memcpy(tg, g, (size_t)nv * sizeof *tg);
        v = ac_swiglu_f32x4(vld1q_f32(tg), v);
        break;
    default: break;
    }
    vst1q_f32(t, v);
    if (j->Y) memcpy(j->Y + row, t, (size_t)nv * sizeof *t);
    if (j->Ybf) ac_f32_to_bf16(j->Ybf + row, t, (size_t)nv);
}

/* One F32 task: rows m0..m0+nm of job j, panel p; pk: [2][K][NR] panel scratch. */
void ac_gemm_task_f32_neon(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx) {
    (void)nx;
    float acc[MR * 16], gate[MR * 16]; /* [MR][16] one strip; SWIGLU: silu's input */
    const int N = j->W->n_out, K = j->W->n_in, n0 = p * NR, nc = AC_MIN(NR, N - n0);
    const float *P = ac_f32_panel(j->W, p, pk), *Pu = NULL;
    if (P == pk) pack_panel(j->W, n0, pk);
    if (j->epi == AC_EPI_SWIGLU) {
        float *su = pk + (size_t)K * NR;
        if ((Pu = ac_f32_panel(j->W_up, p, su)) == su) pack_panel(j->W_up, n0, su);
    }
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
                for (int c = 0; c < 16 && s + c < nc; c += 4)
                    epi4(j, row + c, n0 + s + c, AC_MIN(4, nc - s - c), vld1q_f32(acc + r * 16 + c), gate + r * 16 + c);
            }
        }
    }
}
