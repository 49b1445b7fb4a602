/* cuda_ops.cu — element-wise and row kernels of the CUDA backend (see
 * cuda_ops.h). Rows are independent: one block per row for the reductions
 * (norms, pooling), a grid-stride loop for the element-wise ones. Statistics
 * are accumulated in f32 per thread and combined by a block reduction; the
 * CPU path accumulates in double, so results agree to f32 rounding. */
#include "cuda_ops.h"

#include <math.h>

#define ROW_THREADS 256
/* threads per row of the norms: 128 up to D = 1024 (BERT-base, MiniLM: fewer idle threads), else 256 */
static int norm_threads(int D) { return D <= 1024 ? 128 : 256; }

/* Sum of v over the block (ROW_THREADS threads); every thread gets the result. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) s += red[i];
    return s;
}

static int grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return (int)(b > 65535 * 8 ? 65535 * 8 : b ? b : 1);
}

/* ---- embeddings ------------------------------------------------------------------------- */
__global__ void k_embed(float *x, const float *tok, const int *tokens, const float *pos_tab, const int *pos,
                        const float *type0, int D) {
    const int r = blockIdx.x;
    const float *e = tok + (size_t)tokens[r] * D;
    const float *p = pos_tab ? pos_tab + (size_t)pos[r] * D : NULL;
    float *o = x + (size_t)r * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = e[d];
        if (type0) v += type0[d];
        if (p) v += p[d];
        o[d] = v;
    }
}

int ac_cu_embed(float *x, const float *tok, const int *tokens, const float *pos_tab, const int *pos, const float *type0,
                int n, int D, cudaStream_t st) {
    if (n <= 0) return AC_OK;
    k_embed<<<n, ROW_THREADS, 0, st>>>(x, tok, tokens, pos_tab, pos, type0, D);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- norms ------------------------------------------------------------------------------ */
template <typename T> __global__ void k_rmsnorm(T *out, const float *x, const float *w, int D, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * D;
    float ss = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) ss += xr[d] * xr[d];
    ss = block_sum(ss, red);
    const float s = rsqrtf(ss / D + eps);
    T *o = out + (size_t)blockIdx.x * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) ac_st(o + d, xr[d] * s * w[d]);
}

/* The row read once into registers (PER values per thread): rows up to PER x threads. */
#define NORM_PER 8
template <typename T> __global__ void k_rmsnorm_reg(T *out, const float *x, const float *w, int D, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * D;
    float v[NORM_PER], ss = 0;
#pragma unroll
    for (int i = 0; i < NORM_PER; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        v[i] = d < D ? xr[d] : 0.f;
        ss += v[i] * v[i];
    }
    const float s = rsqrtf(block_sum(ss, red) / D + eps);
    T *o = out + (size_t)blockIdx.x * D;
#pragma unroll
    for (int i = 0; i < NORM_PER; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        if (d < D) ac_st(o + d, v[i] * s * w[d]);
    }
}

template <typename T> int ac_cu_rmsnorm(T *out, const float *x, const float *w, int n, int D, float eps, cudaStream_t st) {
    if (n <= 0) return AC_OK;
    const int th = norm_threads(D);
    if (D <= th * NORM_PER) k_rmsnorm_reg<T><<<n, th, 0, st>>>(out, x, w, D, eps);
    else k_rmsnorm<T><<<n, th, 0, st>>>(out, x, w, D, eps);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* The block-per-row LayerNorm, with an optional residual: v = x [+ x2] (x2 NULL: no add; the sum
 * in f32), out = (v - mean) / sqrt(var + eps) * w [+ b], and out2 (NULL: none) the same values in
 * its own type. out may be x (in place: each thread reads its elements before it writes them).
 * ac_cu_layernorm: x, out f32, out2 T; bert's post-LN with its residual in T (ac_cu_add_layernorm's
 * fallback): x = out = r, x2 = y, out2 the f32 copy. */
template <typename TI>
__device__ __forceinline__ float ld_add(const TI *x, const TI *x2, int d) {
    return x2 ? ac_ld(x + d) + ac_ld(x2 + d) : ac_ld(x + d);
}

/* any D: v is re-read from global memory in each pass (each thread owns its elements) */
template <typename TI, typename TO, typename TO2>
__global__ void k_layernorm(TO *out, TO2 *out2, const TI *x, const TI *x2, const float *w, const float *b, int D,
                            float eps) {
    __shared__ float red[32];
    const size_t row = (size_t)blockIdx.x * D;
    const TI *xr = x + row, *x2r = x2 ? x2 + row : NULL;
    float s1 = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) s1 += ld_add(xr, x2r, d);
    const float mu = block_sum(s1, red) / D;
    float s2 = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float c = ld_add(xr, x2r, d) - mu;
        s2 += c * c;
    }
    const float rs = rsqrtf(block_sum(s2, red) / D + eps);
    TO *yr = out + row;
    TO2 *tr = out2 ? out2 + row : NULL;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const float v = (ld_add(xr, x2r, d) - mu) * rs * w[d] + (b ? b[d] : 0.0f);
        ac_st(yr + d, v); /* same thread read x[d] above: in place is safe */
        if (tr) ac_st(tr + d, v);
    }
}

/* D <= blockDim.x * NORM_PER: v held in registers between the passes */
template <typename TI, typename TO, typename TO2>
__global__ void k_layernorm_reg(TO *out, TO2 *out2, const TI *x, const TI *x2, const float *w, const float *b, int D,
                                float eps) {
    __shared__ float red[32];
    const size_t row = (size_t)blockIdx.x * D;
    const TI *xr = x + row, *x2r = x2 ? x2 + row : NULL;
    float v[NORM_PER], s1 = 0;
#pragma unroll
    for (int i = 0; i < NORM_PER; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        v[i] = d < D ? ld_add(xr, x2r, d) : 0.f;
        s1 += v[i];
    }
    const float mu = block_sum(s1, red) / D;
    float s2 = 0;
#pragma unroll
    for (int i = 0; i < NORM_PER; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        const float c = d < D ? v[i] - mu : 0.f;
        s2 += c * c;
    }
    const float rs = rsqrtf(block_sum(s2, red) / D + eps);
    TO *yr = out + row;
    TO2 *tr = out2 ? out2 + row : NULL;
#pragma unroll
    for (int i = 0; i < NORM_PER; i++) {
        const int d = threadIdx.x + i * blockDim.x;
        if (d >= D) continue;
        const float r = (v[i] - mu) * rs * w[d] + (b ? b[d] : 0.0f);
        ac_st(yr + d, r);
        if (tr) ac_st(tr + d, r);
    }
}

/* the block-per-row launch of either form */
template <typename TI, typename TO, typename TO2>
static void launch_layernorm_rows(TO *out, TO2 *out2, const TI *x, const TI *x2, const float *w, const float *b, int n,
                                  int D, float eps, cudaStream_t st) {
    const int th = norm_threads(D);
    if (D <= th * NORM_PER) k_layernorm_reg<TI, TO, TO2><<<n, th, 0, st>>>(out, out2, x, x2, w, b, D, eps);
    else k_layernorm<TI, TO, TO2><<<n, th, 0, st>>>(out, out2, x, x2, w, b, D, eps);
}

template <typename T>
int ac_cu_layernorm(float *y, T *out_t, const float *x, const float *w, const float *b, int n, int D, float eps,
                    cudaStream_t st) {
    if (n <= 0) return AC_OK;
    launch_layernorm_rows<float, float, T>(y, out_t, x, NULL, w, b, n, D, eps, st);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- bert's post-LayerNorm with its residual in T (bf16 mode) -------------------------------
 * r = layernorm(r + y) * w + b in place: the residual stream of a post-LN model is the previous
 * LayerNorm's output, which the next GEMM reads in T anyway; keeping it only in T (as PyTorch's
 * bf16 forward does) reads 2 x T and writes 1 x T per element instead of the f32 stream's read,
 * accumulate and rewrite (4 + 4 in the GEMM, 4 + 4 + 2 here). The sum and the statistics are f32. */
/* one warp per row, 4 rows a block, 4 consecutive elements per load (8 bytes of bf16, 16 of f32):
 * D % 4 == 0 and D <= 128 NC (else the block-per-row k_layernorm with x2). Run 15: the block-per-row kernels issue one 2-byte load per
 * element and did not get faster on bf16 rows (BERT-base 512 x 64: norms 2.18 ms, ~2x the bytes'
 * time); this one is what the bf16 residual needs to pay off. */
__device__ __forceinline__ void ld4(const float *p, float v[4]) {
    const float4 q = *reinterpret_cast<const float4 *>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void ld4(const bf16 *p, float v[4]) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.x));
    const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.y));
    v[0] = a.x, v[1] = a.y, v[2] = c.x, v[3] = c.y;
}
__device__ __forceinline__ void st4(float *p, const float v[4]) {
    *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(bf16 *p, const float v[4]) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), c = __floats2bfloat162_rn(v[2], v[3]);
    uint2 u;
    u.x = *reinterpret_cast<const uint32_t *>(&a), u.y = *reinterpret_cast<const uint32_t *>(&c);
    *reinterpret_cast<uint2 *>(p) = u;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, int NC>
__global__ void k_add_layernorm_warp(T *r, const T *y, float *y32, const float *w, const float *b, int n, int D,
                                     float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= n) return;
    T *rr = r + (size_t)row * D;
    const T *yr = y + (size_t)row * D;
    float v[NC][4], s1 = 0;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const int d = (c * 32 + lane) * 4;
        float a[4] = {0, 0, 0, 0}, e[4] = {0, 0, 0, 0};
        if (d < D) ld4(rr + d, a), ld4(yr + d, e);
#pragma unroll
        for (int k = 0; k < 4; k++) v[c][k] = a[k] + e[k], s1 += v[c][k];
    }
    const float mu = warp_sum(s1) / D;
    float s2 = 0;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const int d = (c * 32 + lane) * 4;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float q = d < D ? v[c][k] - mu : 0.f;
            s2 += q * q;
        }
    }
    const float rs = rsqrtf(warp_sum(s2) / D + eps);
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const int d = (c * 32 + lane) * 4;
        if (d >= D) continue;
        float ww[4], bb[4] = {0, 0, 0, 0}, o[4];
        ld4(w + d, ww);
        if (b) ld4(b + d, bb);
#pragma unroll
        for (int k = 0; k < 4; k++) o[k] = (v[c][k] - mu) * rs * ww[k] + bb[k];
        st4(rr + d, o); /* this lane read rr[d .. d+3] above: in place is safe */
        if (y32) st4(y32 + (size_t)row * D + d, o);
    }
}

template <typename T, int NC>
static void launch_add_ln_warp(T *r, const T *y, float *y32, const float *w, const float *b, int n, int D, float eps,
                               cudaStream_t st) {
    k_add_layernorm_warp<T, NC><<<(n + 3) / 4, 128, 0, st>>>(r, y, y32, w, b, n, D, eps);
}

template <typename T>
int ac_cu_add_layernorm(T *r, const T *y, float *y32, const float *w, const float *b, int n, int D, float eps,
                        cudaStream_t st) {
    if (n <= 0) return AC_OK;
    const int nc = (D + 127) / 128;
    if (D % 4 == 0 && nc <= 8) {
        switch (nc) {
        case 1: launch_add_ln_warp<T, 1>(r, y, y32, w, b, n, D, eps, st); break;
        case 2: launch_add_ln_warp<T, 2>(r, y, y32, w, b, n, D, eps, st); break;
        case 3: launch_add_ln_warp<T, 3>(r, y, y32, w, b, n, D, eps, st); break;
        case 4: launch_add_ln_warp<T, 4>(r, y, y32, w, b, n, D, eps, st); break;
        case 5: launch_add_ln_warp<T, 5>(r, y, y32, w, b, n, D, eps, st); break;
        case 6: launch_add_ln_warp<T, 6>(r, y, y32, w, b, n, D, eps, st); break;
        case 7: launch_add_ln_warp<T, 7>(r, y, y32, w, b, n, D, eps, st); break;
        default: launch_add_ln_warp<T, 8>(r, y, y32, w, b, n, D, eps, st); break;
        }
    } else {
        launch_layernorm_rows<T, T, float>(r, y32, r, y, w, b, n, D, eps, st); /* r = LN(r + y) in place */
    }
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- RoPE: one block per row, threads over (head, pair) of q then k ------------------------ */
template <typename T>
__global__ void k_rope(T *q, int ldq, int nh, T *k, int ldk, int nkv, int hd, int n_rot, int neox, const float *cs,
                       const int *pos) {
    const int r = blockIdx.x, half = n_rot / 2;
    const float *c = cs + (size_t)pos[r] * n_rot;
    for (int i = threadIdx.x; i < (nh + nkv) * half; i += blockDim.x) {
        const int h = i / half, p = i % half;
        T *v = h < nh ? q + (size_t)r * ldq + (size_t)h * hd : k + (size_t)r * ldk + (size_t)(h - nh) * hd;
        const int i0 = neox ? p : 2 * p, i1 = neox ? p + half : 2 * p + 1;
        const float co = c[2 * p], si = c[2 * p + 1];
        const float a = ac_ld(v + i0), b = ac_ld(v + i1);
        ac_st(v + i0, a * co - b * si);
        ac_st(v + i1, a * si + b * co);
    }
}

template <typename T>
int ac_cu_rope(T *q, int ldq, int nh, T *k, int ldk, int nkv, int hd, int n_rot, int neox, const float *cs,
               const int *pos, int n, cudaStream_t st) {
    if (n <= 0) return AC_OK;
    k_rope<T><<<n, 128, 0, st>>>(q, ldq, nh, k, ldk, nkv, hd, n_rot, neox, cs, pos);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- activations ---------------------------------------------------------------------------- */
template <typename T> __global__ void k_swiglu(T *h, const T *gu, int n, int F) {
    const size_t total = (size_t)n * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / F, c = i % F;
        const float g = ac_ld(gu + r * 2 * F + c), u = ac_ld(gu + r * 2 * F + F + c);
        ac_st(h + i, g / (1.0f + expf(-g)) * u);
    }
}

/* bf16, 8 columns (16 bytes) a thread, 32-bit indices: the scalar kernel's 64-bit division per
 * element and 2-byte accesses made it issue-bound on Llama-1B's [T][2F] (same arithmetic) */
__device__ __forceinline__ void bf8_load(const bf16 *p, float *x) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) x[2 * k] = __uint_as_float(w[k] << 16), x[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
}
__device__ __forceinline__ void bf8_store(bf16 *p, const float *x) {
    uint4 u;
    uint32_t *w = reinterpret_cast<uint32_t *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        __nv_bfloat162 v = __floats2bfloat162_rn(x[2 * k], x[2 * k + 1]);
        w[k] = *reinterpret_cast<uint32_t *>(&v);
    }
    *reinterpret_cast<uint4 *>(p) = u;
}
__global__ void k_swiglu8(bf16 *h, const bf16 *gu, unsigned n_chunks, unsigned F8) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n_chunks; i += gridDim.x * blockDim.x) {
        const unsigned r = i / F8, c = (i - r * F8) * 8, F = F8 * 8;
        float g[8], u[8], y[8];
        bf8_load(gu + (size_t)r * 2 * F + c, g);
        bf8_load(gu + (size_t)r * 2 * F + F + c, u);
#pragma unroll
        for (int k = 0; k < 8; k++) y[k] = g[k] / (1.0f + expf(-g[k])) * u[k];
        bf8_store(h + (size_t)r * F + c, y);
    }
}
__global__ void k_gelu8(bf16 *x, size_t n_chunks) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_chunks; i += (size_t)gridDim.x * blockDim.x) {
        float v[8];
        bf8_load(x + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = 0.5f * v[k] * (1.0f + erff(v[k] * 0.70710678118654752f));
        bf8_store(x + 8 * i, v);
    }
}
static bool vec16(const void *p) { return (uintptr_t)p % 16 == 0; }

template <typename T> int ac_cu_swiglu(T *h, const T *gu, int n, int F, cudaStream_t st) {
    if (n <= 0) return AC_OK;
    if (sizeof(T) == 2 && F % 8 == 0 && vec16(h) && vec16(gu) && (size_t)n * (F / 8) < (1u << 31)) {
        const unsigned chunks = (unsigned)((size_t)n * (F / 8));
        k_swiglu8<<<grid_for(chunks, 256), 256, 0, st>>>((bf16 *)h, (const bf16 *)gu, chunks, (unsigned)(F / 8));
        AC_CU_LAUNCH();
        return AC_OK;
    }
    k_swiglu<T><<<grid_for((size_t)n * F, 256), 256, 0, st>>>(h, gu, n, F);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <typename T> __global__ void k_gelu(T *x, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const float v = ac_ld(x + i);
        ac_st(x + i, 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

template <typename T> int ac_cu_gelu(T *x, size_t count, cudaStream_t st) {
    if (!count) return AC_OK;
    if (sizeof(T) == 2 && count % 8 == 0 && vec16(x)) {
        k_gelu8<<<grid_for(count / 8, 256), 256, 0, st>>>((bf16 *)x, count / 8);
        AC_CU_LAUNCH();
        return AC_OK;
    }
    k_gelu<T><<<grid_for(count, 256), 256, 0, st>>>(x, count);
    AC_CU_LAUNCH();
    return AC_OK;
}

__global__ void k_bias_tanh(float *x, const float *b, size_t count, int width) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        x[i] = tanhf(x[i] + (b ? b[i % width] : 0.0f));
}

int ac_cu_bias_tanh(float *x, const float *b, size_t count, int width, cudaStream_t st) {
    if (!count) return AC_OK;
    k_bias_tanh<<<grid_for(count, 256), 256, 0, st>>>(x, b, count, width);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <typename T> __global__ void k_add_bias(T *y, int ldy, const float *b, int n, int N) {
    const size_t total = (size_t)n * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / N, c = i % N;
        T *p = y + r * ldy + c;
        ac_st(p, ac_ld(p) + b[c]);
    }
}

template <typename T> int ac_cu_add_bias(T *y, int ldy, const float *b, int n, int N, cudaStream_t st) {
    if (n <= 0 || !b) return AC_OK;
    k_add_bias<T><<<grid_for((size_t)n * N, 256), 256, 0, st>>>(y, ldy, b, n, N);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* ---- pooling: one block per sequence; each thread owns columns d (sums in order t = 0..L-1) ---- */
__global__ void k_pool(float *out, const float *h, const int *cu, int D, int mode, int normalize) {
    __shared__ float red[32];
    const int s = blockIdx.x, r0 = cu[s], L = cu[s + 1] - r0;
    float *o = out + (size_t)s * D;
    float ss = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v;
        if (mode == AC_POOL_MEAN) {
            float acc = 0;
            for (int t = 0; t < L; t++) acc += h[(size_t)(r0 + t) * D + d];
            v = acc / L;
        } else {
            v = h[(size_t)(r0 + (mode == AC_POOL_CLS ? 0 : L - 1)) * D + d];
        }
        o[d] = v;
        ss += v * v;
    }
    if (!normalize) return;
    ss = block_sum(ss, red);
    if (ss > 0) {
        const float inv = rsqrtf(ss);
        for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] *= inv;
    }
}

int ac_cu_pool(float *out, const float *h, const int *cu, int n_seq, int D, int mode, int normalize, cudaStream_t st) {
    if (mode != AC_POOL_MEAN && mode != AC_POOL_CLS && mode != AC_POOL_LAST)
        return ac_err(AC_ERR_ARG, "CUDA pooling: mode %d", mode);
    if (n_seq <= 0) return AC_OK;
    k_pool<<<n_seq, ROW_THREADS, 0, st>>>(out, h, cu, D, mode, normalize);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <typename T> __global__ void k_gather(T *dst, const float *src, const int *cu, int D, int last) {
    const int s = blockIdx.x, r = last ? cu[s + 1] - 1 : cu[s];
    for (int d = threadIdx.x; d < D; d += blockDim.x) ac_st(dst + (size_t)s * D + d, src[(size_t)r * D + d]);
}

template <typename T> int ac_cu_gather(T *dst, const float *src, const int *cu, int n_seq, int D, int last, cudaStream_t st) {
    if (n_seq <= 0) return AC_OK;
    k_gather<T><<<n_seq, ROW_THREADS, 0, st>>>(dst, src, cu, D, last);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <typename T> __global__ void k_convert(T *dst, const float *src, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        ac_st(dst + i, src[i]);
}

template <typename T> int ac_cu_convert(T *dst, const float *src, size_t count, cudaStream_t st) {
    if (!count) return AC_OK;
    k_convert<T><<<grid_for(count, 256), 256, 0, st>>>(dst, src, count);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* dst row r = src[r] >= 0 ? a row src[r] : b row -1 - src[r] (one block per row) */
__global__ void k_rows_select(float *dst, const float *a, const float *b, const int *src, int D) {
    const int r = blockIdx.x, k = src[r];
    const float *from = k >= 0 ? a + (size_t)k * D : b + (size_t)(-1 - k) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) dst[(size_t)r * D + d] = from[d];
}

int ac_cu_rows_select(float *dst, const float *a, const float *b, const int *src, int n, int D, cudaStream_t st) {
    if (n <= 0) return AC_OK;
    k_rows_select<<<n, ROW_THREADS, 0, st>>>(dst, a, b, src, D);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* dst [2][n][w] f32: dst[k][r][c] = src [r][col + k w + c] (K then V columns of the qkv rows) */
template <typename T> __global__ void k_kv_out(float *dst, const T *src, int ld, int col, int n, int w) {
    const size_t total = (size_t)2 * n * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % w);
        const size_t rk = i / w; /* k n + r */
        const int k = (int)(rk / n), r = (int)(rk % n);
        dst[i] = ac_ld(src + (size_t)r * ld + col + (size_t)k * w + c);
    }
}

template <typename T> int ac_cu_kv_out(float *dst, const T *src, int ld, int col, int n, int w, cudaStream_t st) {
    if (n <= 0 || w <= 0) return AC_OK;
    const size_t total = (size_t)2 * n * w;
    k_kv_out<T><<<grid_for(total, 256), 256, 0, st>>>(dst, src, ld, col, n, w);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* the two activation types */
#define AC_INST(T)                                                                                             \
    template int ac_cu_rmsnorm<T>(T *, const float *, const float *, int, int, float, cudaStream_t);           \
    template int ac_cu_layernorm<T>(float *, T *, const float *, const float *, const float *, int, int, float, \
                                    cudaStream_t);                                                             \
    template int ac_cu_add_layernorm<T>(T *, const T *, float *, const float *, const float *, int, int, float,  \
                                        cudaStream_t);                                                     \
    template int ac_cu_rope<T>(T *, int, int, T *, int, int, int, int, int, const float *, const int *, int,   \
                               cudaStream_t);                                                                  \
    template int ac_cu_swiglu<T>(T *, const T *, int, int, cudaStream_t);                                      \
    template int ac_cu_gelu<T>(T *, size_t, cudaStream_t);                                                     \
    template int ac_cu_add_bias<T>(T *, int, const float *, int, int, cudaStream_t);                           \
    template int ac_cu_gather<T>(T *, const float *, const int *, int, int, int, cudaStream_t);                 \
    template int ac_cu_convert<T>(T *, const float *, size_t, cudaStream_t);                                   \
    template int ac_cu_kv_out<T>(float *, const T *, int, int, int, int, cudaStream_t);
AC_INST(float)
AC_INST(bf16)
