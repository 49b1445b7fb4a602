/* cuda_gemm.cu — cuBLASLt behind ac_cu_gemm_run (see cuda_gemm.h).
 *
 * cuBLASLt is column-major: the row-major Y [M][N] is the column-major
 * Y^T [N][M] = W [N][K] . X^T, where W (row-major [N][K]) is the column-major
 * K x N matrix used transposed and X (row-major [M][K]) the column-major K x M
 * matrix used as is. The bias epilogue adds a vector over Y^T's rows = Y's
 * columns. A plan (descriptors + the heuristic's algorithm) is made once per
 * shape and kept in a small table: the heuristic costs tens of microseconds. */
#include "cuda_gemm.h"
#include "cuda_ops.h"

#include <cublasLt.h>

#define AC_LT(call)                                                                                    \
    do {                                                                                               \
        cublasStatus_t s_ = (call);                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                               \
            return ac_err(AC_ERR_INTERNAL, "cuBLASLt: %s: status %d (%s:%d)", #call, (int)s_, __FILE__, \
                          __LINE__);                                                                   \
    } while (0)

typedef struct plan {
    int M, N, K, ab_f32, y_f32, ldy, bias, used, align; /* align: of the pointers, bytes (<= 256) */
    int gelu;                                            /* the GELU (tanh form) epilogue */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} plan;

#define N_PLANS 64
#define N_BIAS 1024 /* bf16 copies of f32 biases (2 per layer in use) */
#define WS_BYTES (32u << 20)

struct ac_cu_gemm {
    cublasLtHandle_t lt;
    cudaStream_t st;
    void *ws;
    plan plans[N_PLANS];
    int n_plans;
    const float *bias_key[N_BIAS]; /* f32 bias -> its bf16 copy (bf16 outputs take a bf16 bias:  */
    bf16 *bias_bf[N_BIAS];         /* an f32 bias on a bf16 output made cuBLASLt pick kernels   */
    int n_bias;                    /* 1.7x slower on BERT-base, H200, see docs/GPU_NOTES.md)    */
};

static void plan_free(plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

int ac_cu_gemm_new(cudaStream_t st, ac_cu_gemm **out) {
    *out = NULL;
    ac_cu_gemm *g = (ac_cu_gemm *)calloc(1, sizeof *g);
    if (!g) return AC_ERR_NOMEM;
    g->st = st;
    if (cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return ac_err(AC_ERR_INTERNAL, "cuBLASLt: cannot create a handle");
    }
    if (cudaMalloc(&g->ws, WS_BYTES) != cudaSuccess) {
        cublasLtDestroy(g->lt);
        free(g);
        return ac_err(AC_ERR_NOMEM, "CUDA: %u MiB GEMM workspace", WS_BYTES >> 20);
    }
    *out = g;
    return AC_OK;
}

void ac_cu_gemm_free(ac_cu_gemm *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_free(&g->plans[i]);
    for (int i = 0; i < g->n_bias; i++) cudaFree(g->bias_bf[i]);
    cudaFree(g->ws);
    cublasLtDestroy(g->lt);
    free(g);
}

/* A plan for the shape; with_bias 0 after a failed bias heuristic; p->gelu set by the caller. */
static int make_plan(ac_cu_gemm *g, plan *p, int with_bias) {
    const cudaDataType_t ab = p->ab_f32 ? CUDA_R_32F : CUDA_R_16BF, yt = p->y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    AC_LT(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->gelu && !with_bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_GELU;
        AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    }
    if (with_bias) {
        cublasLtEpilogue_t epi = p->gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = p->y_f32 ? CUDA_R_32F : CUDA_R_16BF; /* the bias in D's type */
        AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    AC_LT(cublasLtMatrixLayoutCreate(&p->la, ab, p->K, p->N, p->K));
    AC_LT(cublasLtMatrixLayoutCreate(&p->lb, ab, p->K, p->M, p->K));
    AC_LT(cublasLtMatrixLayoutCreate(&p->lc, yt, p->N, p->M, p->ldy));
    cublasLtMatmulPreference_t pref;
    AC_LT(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WS_BYTES;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (p->align < 256) { /* row ranges of a buffer (served sites' GEMMs): only algorithms that accept them */
        uint32_t a = (uint32_t)p->align;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a, sizeof a);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a, sizeof a);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a, sizeof a);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a, sizeof a);
    }
    cublasLtMatmulHeuristicResult_t res;
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || n < 1) return AC_ERR_UNSUPPORTED; /* no message: the caller retries */
    p->algo = res.algo;
    p->bias = with_bias;
    return AC_OK;
}

int ac_cu_gemm_run(ac_cu_gemm *g, int ab_f32, int y_f32, const void *W, const void *X, void *Y, int ldy, int M, int N,
                   int K, const float *bias, int accumulate) {
    return ac_cu_gemm_run_act(g, ab_f32, y_f32, W, X, Y, ldy, M, N, K, bias, accumulate, 0);
}

int ac_cu_gemm_run_act(ac_cu_gemm *g, int ab_f32, int y_f32, const void *W, const void *X, void *Y, int ldy, int M,
                       int N, int K, const float *bias, int accumulate, int gelu) {
    if (M <= 0) return AC_OK;
    gelu = gelu ? 1 : 0;
    if (gelu && accumulate) return ac_err(AC_ERR_ARG, "cuBLASLt: a GELU epilogue cannot accumulate");
    const int want_bias = bias != NULL;
    uintptr_t bits = (uintptr_t)W | (uintptr_t)X | (uintptr_t)Y | 256;
    const int align = (int)(bits & (~bits + 1)); /* lowest set bit: the pointers' common alignment */
    plan *p = NULL;
    for (int i = 0; i < g->n_plans && !p; i++) {
        plan *q = &g->plans[i];
        if (q->M == M && q->N == N && q->K == K && q->ab_f32 == ab_f32 && q->y_f32 == y_f32 && q->ldy == ldy &&
            q->used == 1 + want_bias && q->align == align && q->gelu == gelu)
            p = q;
    }
    if (!p) {
        if (g->n_plans == N_PLANS) { /* full: drop the oldest half (shapes of earlier batches) */
            for (int i = 0; i < N_PLANS / 2; i++) plan_free(&g->plans[i]);
            memmove(g->plans, g->plans + N_PLANS / 2, sizeof(plan) * (N_PLANS / 2));
            memset(g->plans + N_PLANS / 2, 0, sizeof(plan) * (N_PLANS / 2));
            g->n_plans = N_PLANS / 2;
        }
        p = &g->plans[g->n_plans];
        p->M = M, p->N = N, p->K = K, p->ab_f32 = ab_f32, p->y_f32 = y_f32, p->ldy = ldy, p->used = 1 + want_bias;
        p->align = align, p->gelu = gelu;
        int rc = make_plan(g, p, want_bias);
        if (rc == AC_ERR_UNSUPPORTED && gelu) { /* the caller runs its own GELU pass */
            plan_free(p);
            return AC_ERR_UNSUPPORTED;
        }
        if (rc == AC_ERR_UNSUPPORTED && want_bias) { /* no bias epilogue for this combination: plain + kernel */
            plan_free(p);
            p->M = M, p->N = N, p->K = K, p->ab_f32 = ab_f32, p->y_f32 = y_f32, p->ldy = ldy, p->used = 1 + want_bias;
            p->align = align;
            rc = make_plan(g, p, 0);
        }
        if (rc) {
            plan_free(p);
            return rc == AC_ERR_UNSUPPORTED
                       ? ac_err(AC_ERR_UNSUPPORTED, "cuBLASLt: no algorithm for %dx%dx%d (%s in, %s out)", M, N, K,
                                ab_f32 ? "f32" : "bf16", y_f32 ? "f32" : "bf16")
                       : rc;
        }
        g->n_plans++;
    }
    if (p->bias) {
        const void *bp = bias;
        if (!y_f32) { /* the bf16 copy of this bias, made once */
            int i = 0;
            while (i < g->n_bias && g->bias_key[i] != bias) i++;
            if (i == g->n_bias) {
                if (i == N_BIAS) return ac_err(AC_ERR_UNSUPPORTED, "cuBLASLt: more than %d biases", N_BIAS);
                if (cudaMalloc(&g->bias_bf[i], (size_t)N * sizeof(bf16)) != cudaSuccess)
                    return ac_err(AC_ERR_NOMEM, "CUDA: bias copy of %d elements", N);
                int rc = ac_cu_convert<bf16>(g->bias_bf[i], bias, (size_t)N, g->st);
                if (rc) return rc;
                g->bias_key[i] = bias;
                g->n_bias++;
            }
            bp = g->bias_bf[i];
        }
        AC_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
    }
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    AC_LT(cublasLtMatmul(g->lt, p->op, &alpha, W, p->la, X, p->lb, &beta, Y, p->lc, Y, p->lc, &p->algo, g->ws,
                         WS_BYTES, g->st));
    if (want_bias && !p->bias) {
        int rc = y_f32 ? ac_cu_add_bias<float>((float *)Y, ldy, bias, M, N, g->st)
                       : ac_cu_add_bias<bf16>((bf16 *)Y, ldy, bias, M, N, g->st);
        if (rc) return rc;
    }
    return AC_OK;
}
