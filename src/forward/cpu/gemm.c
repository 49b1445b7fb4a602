/* gemm.c — two GEMM backends: a naive reference (plain loops, any weight type
 * converted row by row) and OpenBLAS (cblas_sgemm; F32 weights in place,
 * other types converted to f32 in row tiles just before use).
 * Y [M][N] (+)= X [M][K] . W^T (+ bias), W [N][K]. */
#include "forward/forward.h"
#include "util/common.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

void ac_mat_rows_f32(const ac_mat *W, int r0, int n, float *dst) {
    for (int r = 0; r < n; r++) ac_row_to_f32(W->type, W->data, W->row_bytes, r0 + r, W->n_in, dst + (size_t)r * W->n_in);
}

static void add_bias_rows(float *Y, int M, int N, const float *bias, int n_threads) {
    if (!bias) return;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int m = 0; m < M; m++) {
        float *y = Y + (size_t)m * N;
        for (int n = 0; n < N; n++) y[n] += bias[n];
    }
}

/* ---- naive reference ------------------------------------------------------------------ */
static int naive_matmul(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    const int M = X->M, N = W->n_out, K = W->n_in;
    int fail = 0;
#pragma omp parallel num_threads(ctx->n_threads)
    {
        float *wrow = W->f32 ? NULL : malloc((size_t)K * sizeof *wrow); /* [K] */
        if (!W->f32 && !wrow) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            if (!W->f32 && !wrow) continue;
            const float *w = W->f32 ? W->f32 + (size_t)n * K : wrow;
            if (!W->f32) ac_row_to_f32(W->type, W->data, W->row_bytes, n, K, wrow);
            for (int m = 0; m < M; m++) {
                const float *x = X->x + (size_t)m * K;
                float acc = 0.0f;
                for (int k = 0; k < K; k++) acc += x[k] * w[k];
                if (bias) acc += bias[n];
                float *y = Y + (size_t)m * N + n;
                *y = accumulate ? *y + acc : acc;
            }
        }
        free(wrow);
    }
    if (fail) return ac_err(AC_ERR_NOMEM, "naive gemm: out of memory for a row of %d", K);
    return AC_OK;
}

const ac_gemm_ops ac_gemm_naive_ops = {"naive", AC_GEMM_NAIVE, naive_matmul};

/* ---- OpenBLAS ------------------------------------------------------------------------------ */
#define BLAS_TILE_BYTES (4u << 20) /* converted weight tile: ~4 MiB of f32 */

static int blas_matmul(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    const int M = X->M, N = W->n_out, K = W->n_in;
    openblas_set_num_threads(ctx->n_threads);
    if (W->f32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X->x, K, W->f32, K,
                    accumulate ? 1.0f : 0.0f, Y, N);
    } else {
        int nb = (int)AC_MAX(16, AC_MIN((size_t)N, BLAS_TILE_BYTES / ((size_t)K * sizeof(float))));
        int rc = ac_ctx_scratch_f32(&ctx->wtile, &ctx->cap_wtile, (size_t)nb * K);
        if (rc) return rc;
        for (int n0 = 0; n0 < N; n0 += nb) {
            const int n = AC_MIN(nb, N - n0);
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
            for (int r = 0; r < n; r++)
                ac_row_to_f32(W->type, W->data, W->row_bytes, n0 + r, K, ctx->wtile + (size_t)r * K);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, K, 1.0f, X->x, K, ctx->wtile, K,
                        accumulate ? 1.0f : 0.0f, Y + n0, N);
        }
    }
    add_bias_rows(Y, M, N, bias, ctx->n_threads);
    return AC_OK;
}

const ac_gemm_ops ac_gemm_blas_ops = {"openblas", AC_GEMM_OPENBLAS, blas_matmul};
