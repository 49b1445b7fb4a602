/* cuda_summary.cu — the layer-0 summary on the device (see cuda_summary.h)
 * and its use by the forward pass: after the embeddings, the layer-0 states
 * (bert: the embedding LayerNorm's f32 output in x; llama/qwen2: RMSNorm(x) *
 * layer 0's attention norm, written in f32 to the final-norm buffer h, which
 * is free until the last layer) are reduced to S segment means per sequence
 * and only those (n_seq * S * D floats) are copied back to pinned host memory
 * for the cache's lookups (ac_cuda_opts.summary). */
#include "cuda_summary.h"
#include "cuda_model.h"
#include "cuda_ops.h"

enum { SUM_THREADS = 128 };

/* grid (n_seq * S, ceil(D / SUM_THREADS)): block = one (sequence, segment) and 128 columns */
__global__ void k_segment_means(float *__restrict__ out, const float *__restrict__ x, const int *__restrict__ cu,
                                int S, int D) {
    const int s = blockIdx.x / S, k = blockIdx.x % S;
    const int d = blockIdx.y * SUM_THREADS + threadIdx.x;
    if (d >= D) return;
    const int r0 = cu[s], L = cu[s + 1] - r0;
    int a = (int)((long long)k * L / S), b = (int)((long long)(k + 1) * L / S);
    if (b <= a) a = 0, b = L;
    const float *p = x + ((size_t)r0 + a) * D + d;
    float acc = 0.f;
#pragma unroll 4
    for (int t = a; t < b; t++, p += D) acc += *p; /* position order, as the host's loop */
    out[((size_t)s * S + k) * D + d] = acc * (1.0f / (float)(b - a));
}

int ac_cu_segment_means(float *out, const float *x, const int *cu, int n_seq, int S, int D, cudaStream_t st) {
    if (n_seq <= 0 || S <= 0 || D <= 0) return AC_OK;
    if ((long long)n_seq * S > 0x7fffffffLL) return ac_err(AC_ERR_ARG, "segment means: %d sequences", n_seq);
    dim3 grid((unsigned)(n_seq * S), (unsigned)((D + SUM_THREADS - 1) / SUM_THREADS));
    k_segment_means<<<grid, SUM_THREADS, 0, st>>>(out, x, cu, S, D);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- the forward pass's part (cuda_model.h) ---------------------------------------------------- */
int ac_cu_layer0_summary(ac_cuda_model *g, int Tn, int n_seq, int S) {
    const int D = g->D;
    const size_t n = (size_t)n_seq * S * D;
    g->sum_n = 0, g->sum_S = 0;
    if (n > g->cap_sum) {
        cudaFree(g->d_sum);
        cudaFreeHost(g->h_sum);
        g->d_sum = g->h_sum = NULL, g->cap_sum = 0;
        int rc = DMALLOC(g->d_sum, n * 4);
        if (rc) return rc;
        if (cudaMallocHost((void **)&g->h_sum, n * 4) != cudaSuccess) {
            cudaGetLastError();
            g->h_sum = NULL;
            return ac_err(AC_ERR_NOMEM, "CUDA: cannot pin %zu KiB of host memory for the layer-0 summaries", n >> 8);
        }
        g->cap_sum = n;
    }
    const float *x0 = g->x; /* bert: the embedding LayerNorm's f32 output (in place) */
    if (!g->bert) {          /* the CPU's layer-0 states: rmsnorm(embedding) * norm1 of layer 0, in f32 */
        int rc = ac_cu_rmsnorm<float>(g->h, g->x, g->L[0].n1w, Tn, D, g->hp.norm_eps, g->st);
        if (rc) return rc;
        x0 = g->h;
    }
    int rc = ac_cu_segment_means(g->d_sum, x0, g->d_cu, n_seq, S, D, g->st);
    if (rc) return rc;
    AC_CU(cudaMemcpyAsync(g->h_sum, g->d_sum, n * 4, cudaMemcpyDeviceToHost, g->st));
    AC_CU(cudaStreamSynchronize(g->st)); /* the lookups read them next */
    g->sum_n = n_seq, g->sum_S = S;
    return AC_OK;
}

void ac_cu_summary_free(ac_cuda_model *g) {
    cudaFree(g->d_sum);
    cudaFreeHost(g->h_sum);
    g->d_sum = g->h_sum = NULL, g->cap_sum = 0, g->sum_n = 0;
}

const float *ac_cuda_layer0_summary(const ac_cuda_model *g, int seq) {
    if (!g || !g->h_sum || seq < 0 || seq >= g->sum_n) return NULL;
    return g->h_sum + (size_t)seq * g->sum_S * g->D;
}
