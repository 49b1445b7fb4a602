/* cuda_gemm.h — Y = X W^T (+ bias) (+ Y) through cuBLASLt, the backend's
 * only matrix product. Row-major: X [M][K] (ld K), W [N][K] (ld K, ggml's
 * weight layout), Y [M][ldy]. Types: W and X both bf16 (f32 accumulate) or both
 * f32 (CUBLAS_COMPUTE_32F: no TF32, exact-mode checks); Y bf16 or f32. The bias
 * (f32 [N]; bf16 outputs use a bf16 copy made on first use, keyed by the pointer: biases must
 * stay put while the handle lives) rides cuBLASLt's bias epilogue, with a kernel as fallback.
 * accumulate: Y += X W^T (+ bias) (beta = 1; residual adds). */
#ifndef AC_CUDA_GEMM_H
#define AC_CUDA_GEMM_H

#include "cuda_common.h"

typedef struct ac_cu_gemm ac_cu_gemm; /* handle, workspace and cached plans; one stream */

int ac_cu_gemm_new(cudaStream_t st, ac_cu_gemm **out);
void ac_cu_gemm_free(ac_cu_gemm *g);

/* ab_f32: 1 for f32 W and X, 0 for bf16; y_f32: 1 for an f32 Y, 0 for bf16. */
int ac_cu_gemm_run(ac_cu_gemm *g, int ab_f32, int y_f32, const void *W, const void *X, void *Y, int ldy, int M, int N,
                   int K, const float *bias, int accumulate);

/* The same with gelu = 1: Y = gelu(X W^T + bias) in cuBLASLt's epilogue, GELU in its tanh form
 * (the erf form differs by < 5e-4 absolute: under bf16 rounding; the backend uses it for bf16
 * outputs only). Not with accumulate (AC_ERR_ARG). AC_ERR_UNSUPPORTED, without a message, when
 * cuBLASLt has no such kernel: the caller then runs the plain GEMM and its own GELU. */
int ac_cu_gemm_run_act(ac_cu_gemm *g, int ab_f32, int y_f32, const void *W, const void *X, void *Y, int ldy, int M,
                       int N, int K, const float *bias, int accumulate, int gelu);

#endif
