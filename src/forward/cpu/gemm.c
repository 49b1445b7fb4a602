/* gemm.c — two GEMM backends: a naive reference (plain loops, any weight type
 * converted row by row) and OpenBLAS (cblas_sgemm; F32 weights in place,
 * other types converted to f32 in row tiles just before use).
 * Y [M][N] (+)= X [M][K] . W^T (+ bias), W [N][K]. */
#include "forward/forward.h"
#include "util/common.h"

#include <cblas.h>
#include <string.h>

void ac_mat_rows_f32(const ac_mat *W, int r0, int n, float *dst) {
    for (int r = 0; r < n; r++) ac_row_to_f32(W->type, W->data, W->row_bytes, r0 + r, W->n_in, dst + (size_t)r * W->n_in);
}

typedef struct bias_arg {
    float *Y;
    int N;
    const float *bias;
} bias_arg;

static void bias_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    (void)c;
    const bias_arg *b = arg;
    for (int m = r0; m < r1; m++) {
        float *y = b->Y + (size_t)m * b->N;
        for (int n = 0; n < b->N; n++) y[n] += b->bias[n];
    }
}

static void add_bias_rows(ac_ctx *c, float *Y, int M, int N, const float *bias) {
    if (!bias) return;
    bias_arg b = {Y, N, bias};
    ac_ctx_par_rows(c, M, N, bias_rows, &b);
}

/* ---- naive reference ------------------------------------------------------------------ */
typedef struct naive_arg {
    const ac_mat *W;
    const ac_act *X;
    float *Y;
    const float *bias;
    int accumulate;
    int nomem;
} naive_arg;

/* output columns r0..r1 (rows of W) */
static void naive_cols(ac_ctx *c, const void *arg, int n0, int n1) {
    (void)c;
    naive_arg *na = (naive_arg *)arg;
    const ac_mat *W = na->W;
    const int M = na->X->M, N = W->n_out, K = W->n_in;
    float *wrow = W->f32 ? NULL : malloc((size_t)K * sizeof *wrow); /* [K] */
    if (!W->f32 && !wrow) {
        na->nomem = 1; /* benign race: any writer stores 1 */
        return;
    }
    for (int n = n0; n < n1; n++) {
        const float *w = W->f32 ? W->f32 + (size_t)n * K : wrow;
        if (!W->f32) ac_row_to_f32(W->type, W->data, W->row_bytes, n, K, wrow);
        for (int m = 0; m < M; m++) {
            const float *x = na->X->x + (size_t)m * K;
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc += x[k] * w[k];
            if (na->bias) acc += na->bias[n];
            float *y = na->Y + (size_t)m * N + n;
            *y = na->accumulate ? *y + acc : acc;
        }
    }
    free(wrow);
}

static int naive_matmul(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    naive_arg na = {W, X, Y, bias, accumulate, 0};
    ac_ctx_par_rows(ctx, W->n_out, W->n_in * X->M, naive_cols, &na);
    if (na.nomem) return ac_err(AC_ERR_NOMEM, "naive gemm: out of memory for a row of %d", W->n_in);
    return AC_OK;
}

const ac_gemm_ops ac_gemm_naive_ops = {"naive", AC_GEMM_NAIVE, naive_matmul};

/* ---- OpenBLAS ------------------------------------------------------------------------------ */
#define BLAS_TILE_BYTES (4u << 20) /* converted weight tile: ~4 MiB of f32 */

typedef struct tile_arg {
    const ac_mat *W;
    int n0;
    float *dst;
} tile_arg;

static void tile_rows(ac_ctx *c, const void *arg, int r0, int r1) {
    (void)c;
    const tile_arg *t = arg;
    const int K = t->W->n_in;
    for (int r = r0; r < r1; r++) ac_row_to_f32(t->W->type, t->W->data, t->W->row_bytes, t->n0 + r, K, t->dst + (size_t)r * K);
}

static int blas_matmul(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    const int M = X->M, N = W->n_out, K = W->n_in;
    if (openblas_get_num_threads() != ctx->n_threads) openblas_set_num_threads(ctx->n_threads);
    if (W->f32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X->x, K, W->f32, K,
                    accumulate ? 1.0f : 0.0f, Y, N);
    } else {
        int nb = (int)AC_MAX(16, AC_MIN((size_t)N, BLAS_TILE_BYTES / ((size_t)K * sizeof(float))));
        int rc = ac_ctx_scratch_f32(&ctx->wtile, &ctx->cap_wtile, (size_t)nb * K);
        if (rc) return rc;
        for (int n0 = 0; n0 < N; n0 += nb) {
            const int n = AC_MIN(nb, N - n0);
            tile_arg t = {W, n0, ctx->wtile};
            ac_ctx_par_rows(ctx, n, K, tile_rows, &t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, K, 1.0f, X->x, K, ctx->wtile, K,
                        accumulate ? 1.0f : 0.0f, Y + n0, N);
        }
    }
    add_bias_rows(ctx, Y, M, N, bias);
    return AC_OK;
}

const ac_gemm_ops ac_gemm_blas_ops = {"openblas", AC_GEMM_OPENBLAS, blas_matmul};
