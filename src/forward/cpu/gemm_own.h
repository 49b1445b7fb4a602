/* gemm_own.h — the own GEMM's per-level tasks (gemm_own.c drives them).
 * A task computes rows m0..m0+nm of job j for panel p (output columns
 * 64p .. 64p+63), epilogue included; pk: the calling thread's scratch of
 * 2 x K x AC_GEMM_NR floats (F32 panels: W's and, for SWIGLU, W_up's). */
#ifndef AC_GEMM_OWN_H
#define AC_GEMM_OWN_H

#include "forward/forward.h"

#define NR 64          /* output columns per panel (every level) */
#define AC_GEMM_NR NR
#define MB (6 * 16)    /* rows per BF16 task */
#define MBF 192        /* rows per F32 sub-block (a task of more rows loops over sub-blocks on one packed panel) */

/* Panel p of W as P [K][NR]: read in place where the CPU backend's weights widened W into
 * panels (AC_PACK_F32P, weights.c), else `scratch`, which the task fills by transposing the
 * 64 rows of W->f32 from 64p (the caller does that when this returns scratch). */
static inline const float *ac_f32_panel(const ac_mat *W, int p, float *scratch) {
    return W->pack == AC_PACK_F32P ? (const float *)W->packed + (size_t)p * W->n_in * NR : scratch;
}

/* Panel p of an AC_PACK_F16P matrix: uint16 [K][NR] (the x86 tasks widen it into their scratch). */
static inline const uint16_t *ac_f16_panel(const ac_mat *W, int p) {
    return (const uint16_t *)W->packed + (size_t)p * W->n_in * NR;
}

/* The panels the thread's next task will likely read (up to two byte ranges; bytes 0: none;
 * on one thread exactly its next task's, on n threads task t + n's), which a task of several row
 * tiles may bring into cache while its later tiles compute from its own panel (the AVX-512 F32
 * task does). Prefetches change no result. */
typedef struct ac_gemm_next {
    const void *p[2];
    size_t bytes[2];
} ac_gemm_next;

typedef void (*ac_gemm_task_fn)(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);

void ac_gemm_task_f32_scalar(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);
void ac_gemm_task_f32_avx2(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);
void ac_gemm_task_f32_avx512(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);
void ac_gemm_task_f32_neon(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);
void ac_gemm_task_bf16_avx512(const ac_gemm_job *j, int p, int m0, int nm, float *pk, const ac_gemm_next *nx);

#endif
