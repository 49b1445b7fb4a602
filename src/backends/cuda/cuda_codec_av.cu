/* cuda_codec_av.cu — A·V from compressed attention-map rows (see
 * cuda_codec_av.h). Head dims 32/64/128: one warp per (row t, head h), weights
 * decoded into registers and broadcast by shuffle (k_codec_av_warp). Other head
 * dims: one block per (row t, head h) decoding row t into shared memory
 * (weights, and for top-k their key indices), each thread accumulating its
 * output columns d. Row offsets are the codec's closed forms. */
#include "cuda_codec_av.h"
#include "cuda_backend.h"

#include <cuda_fp16.h>

namespace {

__host__ __device__ __forceinline__ size_t row_bytes(const ac_cu_codec &c, int n) {
    switch (c.kind) {
    case 0: return 4 * (size_t)n;
    case 1: return 2 * (size_t)n;
    case 2: return 4 + (size_t)n;
    case 3: return 4 + (size_t)(n + 1) / 2;
    default: return 4 * (size_t)(n < c.topk ? n : c.topk);
    }
}

/* byte offset of row t in a head map (rows back to back) */
__host__ __device__ __forceinline__ size_t row_offset(const ac_cu_codec &c, int L, int t) {
    if (!c.causal) return (size_t)t * row_bytes(c, L);
    const size_t T = (size_t)t, tri = T * (T + 1) / 2; /* sum of n = 1..t */
    switch (c.kind) {
    case 0: return 4 * tri;
    case 1: return 2 * tri;
    case 2: return 4 * T + tri;
    case 3: return 4 * T + (T + 1) * (T + 1) / 4; /* sum of ceil(n/2) */
    default: {
        const size_t k = (size_t)c.topk;
        return 4 * (T <= k ? tri : k * (k + 1) / 2 + (T - k) * k);
    }
    }
}

__device__ __forceinline__ float ld_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return __uint_as_float(u);
}
__device__ __forceinline__ uint16_t ld_u16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
__device__ __forceinline__ float half_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <typename T>
__global__ void k_codec_av(ac_cu_codec c, const unsigned char *maps, size_t map_bytes, int L, int H, int Hkv, int hd,
                           const T *V, int ldv, T *O, int ldo) {
    extern __shared__ float sm[]; /* w [n] then (top-k) idx [n] as ints */
    const int t = blockIdx.x, h = blockIdx.y, g = h / (H / Hkv);
    const unsigned char *row = maps + (size_t)h * map_bytes + row_offset(c, L, t);
    const int n_t = c.causal ? t + 1 : L;
    const int n = c.kind == 4 ? (n_t < c.topk ? n_t : c.topk) : n_t;
    float *w = sm;
    int *idx = reinterpret_cast<int *>(sm + n);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float p;
        switch (c.kind) {
        case 0: p = ld_f32(row + 4 * (size_t)j); break;
        case 1: p = half_f32(ld_u16(row + 2 * (size_t)j)); break;
        case 2: p = ld_f32(row) * row[4 + j]; break;
        case 3: {
            const unsigned char b = row[4 + j / 2];
            p = ld_f32(row) * (float)(j & 1 ? b >> 4 : b & 15);
            break;
        }
        default: {
            const int i = ld_u16(row + 2 * (size_t)j);
            p = half_f32(ld_u16(row + 2 * (size_t)n + 2 * (size_t)j));
            if (i >= n_t) p = 0.f; /* damaged index: ignored, as the CPU kernels do */
            idx[j] = i < n_t ? i : 0;
        }
        }
        w[j] = p;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        const T *vc = V + (size_t)g * hd + d;
        float acc = 0;
        if (c.kind == 4)
            for (int j = 0; j < n; j++) acc += w[j] * ac_ld(vc + (size_t)idx[j] * ldv);
        else
            for (int j = 0; j < n; j++) acc += w[j] * ac_ld(vc + (size_t)j * ldv);
        ac_st(O + (size_t)t * ldo + (size_t)h * hd + d, acc);
    }
}

/* Weight of stored key j of a row of n stored keys (n_t columns of the row; top-k: n = min(n_t, k)),
 * and for top-k its key index (damaged indices: weight 0). */
__device__ __forceinline__ float decode_w(const ac_cu_codec &c, const unsigned char *row, int n, int n_t, int j,
                                          float scale, int *key) {
    *key = j;
    switch (c.kind) {
    case 0: return ld_f32(row + 4 * (size_t)j);
    case 1: return half_f32(ld_u16(row + 2 * (size_t)j));
    case 2: return scale * row[4 + j];
    case 3: {
        const unsigned char b = row[4 + j / 2];
        return scale * (float)(j & 1 ? b >> 4 : b & 15);
    }
    default: {
        const int i = ld_u16(row + 2 * (size_t)j);
        const float p = half_f32(ld_u16(row + 2 * (size_t)n + 2 * (size_t)j));
        *key = i < n_t ? i : 0;
        return i < n_t ? p : 0.f;
    }
    }
}

/* COLS consecutive elements of a V row into floats: one vector load when the
 * columns are contiguous and aligned (CONTIG), else COLS loads 32 apart. */
template <int COLS, bool CONTIG>
__device__ __forceinline__ void ld_cols(const float *p, float *x) {
    if (CONTIG && COLS == 4) {
        const float4 v = *reinterpret_cast<const float4 *>(p);
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    } else if (CONTIG && COLS == 2) {
        const float2 v = *reinterpret_cast<const float2 *>(p);
        x[0] = v.x, x[1] = v.y;
    } else {
#pragma unroll
        for (int k = 0; k < COLS; k++) x[k] = p[CONTIG ? k : 32 * k];
    }
}
template <int COLS, bool CONTIG>
__device__ __forceinline__ void ld_cols(const bf16 *p, float *x) {
    if (CONTIG && COLS == 4) {
        const uint2 u = *reinterpret_cast<const uint2 *>(p);
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.x));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u.y));
        x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
    } else if (CONTIG && COLS == 2) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
        x[0] = a.x, x[1] = a.y;
    } else {
#pragma unroll
        for (int k = 0; k < COLS; k++) x[k] = __bfloat162float(p[CONTIG ? k : 32 * k]);
    }
}

/* One warp per (row t, head h), ROWS warps per block (rows t0 .. t0 + ROWS - 1 of one head): lane l
 * decodes stored key j0 + l of each 32-key chunk into registers, then the warp walks the chunk U keys
 * at a time: U shuffles broadcast the weights (and top-k keys), then the U V-row loads are issued
 * together before their FMAs (memory-level parallelism: v1 waited for each row's load in turn).
 * CONTIG: lane l owns columns COLS l .. COLS l + COLS - 1 (one vector load per V row), else
 * columns l + 32 c. The sum runs over keys in stored order, as in v1. Lanes past the row's stored
 * keys (and damaged top-k indices) carry weight 0 and key 0: their loads are valid and add 0. */
/* Row t of head h (one warp): out row = sum over the row's stored keys of weight x V row. */
template <typename T, int COLS, bool CONTIG>
__device__ __forceinline__ void av_row_warp(const ac_cu_codec &c, const unsigned char *maps, size_t map_bytes, int L,
                                            int t, int h, int H, int Hkv, const T *V, int ldv, T *O, int ldo) {
    constexpr int U = 8; /* keys in flight per warp */
    const int lane = threadIdx.x & 31;
    constexpr int HD = 32 * COLS;
    const int g = h / (H / Hkv);
    const unsigned char *row = maps + (size_t)h * map_bytes + row_offset(c, L, t);
    const int n_t = c.causal ? t + 1 : L;
    const int n = c.kind == 4 ? (n_t < c.topk ? n_t : c.topk) : n_t;
    const float scale = (c.kind == 2 || c.kind == 3) ? ld_f32(row) : 0.f;
    const T *vb = V + (size_t)g * HD + (CONTIG ? COLS * lane : lane);
    float acc[COLS];
#pragma unroll
    for (int k = 0; k < COLS; k++) acc[k] = 0.f;
    for (int j0 = 0; j0 < n; j0 += 32) {
        int key = 0;
        const float w = j0 + lane < n ? decode_w(c, row, n, n_t, j0 + lane, scale, &key) : 0.f;
        const int m = n - j0 < 32 ? n - j0 : 32;
        /* top-k: key and weight (a half, exactly as stored) in one shuffle; dense: the key is j0 + lane
           (clamped to the row's last key where the weight is 0) */
        const uint32_t pk = c.kind == 4 ? (uint32_t)key << 16 | __half_as_ushort(__float2half_rn(w))
                                        : (uint32_t)(j0 + lane < n ? j0 + lane : n - 1);
        for (int jj = 0; jj < m; jj += U) {
            float wj[U], x[U][COLS];
            int kj[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const uint32_t q = __shfl_sync(0xffffffffu, pk, jj + u);
                if (c.kind == 4) wj[u] = half_f32((uint16_t)(q & 0xffffu)), kj[u] = (int)(q >> 16);
                else wj[u] = __shfl_sync(0xffffffffu, w, jj + u), kj[u] = (int)q;
            }
#pragma unroll
            for (int u = 0; u < U; u++) ld_cols<COLS, CONTIG>(vb + (size_t)kj[u] * ldv, x[u]);
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int k = 0; k < COLS; k++) acc[k] += wj[u] * x[u][k];
        }
    }
    T *o = O + (size_t)t * ldo + (size_t)h * HD + (CONTIG ? COLS * lane : lane);
#pragma unroll
    for (int k = 0; k < COLS; k++) ac_st(o + (CONTIG ? k : 32 * k), acc[k]);
}

/* One warp per (row t, head h), ROWS warps per block (rows t0 .. t0 + ROWS - 1 of one head): lane l
 * decodes stored key j0 + l of each 32-key chunk into registers, then the warp walks the chunk U keys
 * at a time: U shuffles broadcast the weights (and top-k keys), then the U V-row loads are issued
 * together before their FMAs (memory-level parallelism: v1 waited for each row's load in turn).
 * CONTIG: lane l owns columns COLS l .. COLS l + COLS - 1 (one vector load per V row), else
 * columns l + 32 c. The sum runs over keys in stored order, as in v1. Lanes past the row's stored
 * keys (and damaged top-k indices) carry weight 0 and key 0: their loads are valid and add 0. */
template <typename T, int COLS, int ROWS, bool CONTIG>
__global__ void __launch_bounds__(ROWS * 32) k_codec_av_warp(ac_cu_codec c, const unsigned char *maps, size_t map_bytes,
                                                         int L, int n_rows, int H, int Hkv, const T *V, int ldv, T *O,
                                                         int ldo) {
    const int t = blockIdx.x * ROWS + (threadIdx.x >> 5);
    if (t >= n_rows) return;
    av_row_warp<T, COLS, CONTIG>(c, maps, map_bytes, L, t, blockIdx.y, H, Hkv, V, ldv, O, ldo);
}

/* The same over several sequences in one launch (blockIdx.z: the sequence, its descriptor in q):
 * each sequence's own maps, codec, length and first row in V / O. */
template <typename T, int COLS, int ROWS, bool CONTIG>
__global__ void __launch_bounds__(ROWS * 32) k_codec_av_warp_seqs(const ac_cu_av_seq *q, int H, int Hkv, const T *V,
                                                              int ldv, T *O, int ldo) {
    const ac_cu_av_seq d = q[blockIdx.z];
    const int t = blockIdx.x * ROWS + (threadIdx.x >> 5);
    if (t >= d.L) return;
    const ac_cu_codec c = {d.kind, d.causal, d.topk};
    av_row_warp<T, COLS, CONTIG>(c, (const unsigned char *)d.maps, d.map_bytes, d.L, t, blockIdx.y, H, Hkv,
                                 V + (size_t)d.r0 * ldv, ldv, O + (size_t)d.r0 * ldo, ldo);
}

} // namespace

size_t ac_cuda_map_bytes(int kind, int causal, int topk, int L) {
    if (kind < 0 || kind > 4 || (kind == 4 && (topk < 1 || topk > 65536)) || L < 1 || L > 65536) return 0;
    const ac_cu_codec c = {kind, causal ? 1 : 0, topk};
    const size_t b = row_offset(c, L, L); /* the end of row L-1 */
    return (b + 63) / 64 * 64;
}

template <typename T>
int ac_cu_codec_av(const ac_cu_codec *c, const void *maps, size_t map_bytes, int L, int n_rows, int H, int Hkv,
                   int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st) {
    if (!c || c->kind < 0 || c->kind > 4 || (c->kind == 4 && c->topk < 1) || L < 1 || L > 65536 || n_rows < 0 ||
        n_rows > L || H <= 0 || Hkv <= 0 || H % Hkv || hd <= 0)
        return ac_err(AC_ERR_ARG, "codec A.V: invalid arguments (L %d, rows %d, heads %d/%d)", L, n_rows, H, Hkv);
    if (!n_rows) return AC_OK;
    if (hd == 32 || hd == 64 || hd == 128) { /* the warp-per-row kernel */
        constexpr int R = 8;
        dim3 grid((n_rows + R - 1) / R, H);
        const unsigned char *m = (const unsigned char *)maps;
        /* contiguous columns per lane when V and out rows allow vector loads at every head */
        const size_t va = (size_t)(hd / 32) * sizeof(T);
        const bool contig = (uintptr_t)v % va == 0 && (uintptr_t)out % va == 0 && ((size_t)ldv * sizeof(T)) % va == 0 &&
                            ((size_t)ldo * sizeof(T)) % va == 0;
#define AC_AV_WARP(COLS, CONTIG)                                                                                        \
    k_codec_av_warp<T, COLS, R, CONTIG><<<grid, R * 32, 0, st>>>(*c, m, map_bytes, L, n_rows, H, Hkv, v, ldv, out, ldo)
        if (hd == 32) AC_AV_WARP(1, true);
        else if (hd == 64 && contig) AC_AV_WARP(2, true);
        else if (hd == 64) AC_AV_WARP(2, false);
        else if (contig) AC_AV_WARP(4, true);
        else AC_AV_WARP(4, false);
#undef AC_AV_WARP
        AC_CU_LAUNCH();
        return AC_OK;
    }
    /* weights + indices of the longest row, + 16 bytes: compute-sanitizer saw the compiled loop
     * read up to 12 bytes past a 1-key row (values it does not use) */
    const size_t smem = (size_t)L * 8 + 16;
    if (smem > 48 * 1024) {
        static size_t set = 0; /* raise the dynamic limit once per size class */
        if (smem > set) {
            if (smem > 227 * 1024) return ac_err(AC_ERR_UNSUPPORTED, "codec A.V: rows of %d keys exceed shared memory", L);
            AC_CU(cudaFuncSetAttribute(k_codec_av<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            set = smem;
        }
    }
    dim3 grid(n_rows, H);
    k_codec_av<T><<<grid, hd < 128 ? (hd < 32 ? 32 : hd) : 128, smem, st>>>(
        *c, (const unsigned char *)maps, map_bytes, L, H, Hkv, hd, v, ldv, out, ldo);
    AC_CU_LAUNCH();
    return AC_OK;
}

template int ac_cu_codec_av<float>(const ac_cu_codec *, const void *, size_t, int, int, int, int, int, const float *,
                                   int, float *, int, cudaStream_t);
template int ac_cu_codec_av<bf16>(const ac_cu_codec *, const void *, size_t, int, int, int, int, int, const bf16 *,
                                  int, bf16 *, int, cudaStream_t);

template <typename T>
int ac_cu_codec_av_seqs(const ac_cu_av_seq *d_seqs, int n_seq, int Lmax, int H, int Hkv, int hd, const T *v, int ldv,
                        T *out, int ldo, cudaStream_t st) {
    if (!d_seqs || n_seq < 0 || n_seq > 65535 || Lmax < 1 || Lmax > 65536 || H <= 0 || H > 65535 || Hkv <= 0 ||
        H % Hkv || (hd != 32 && hd != 64 && hd != 128))
        return ac_err(AC_ERR_ARG, "codec A.V over sequences: invalid arguments (%d sequences, L %d, heads %d/%d, hd %d)",
                      n_seq, Lmax, H, Hkv, hd);
    if (!n_seq) return AC_OK;
    constexpr int R = 8;
    dim3 grid((Lmax + R - 1) / R, H, n_seq);
    /* row ranges start at any row: the row strides decide the alignment, as for one sequence */
    const size_t va = (size_t)(hd / 32) * sizeof(T);
    const bool contig = (uintptr_t)v % va == 0 && (uintptr_t)out % va == 0 && ((size_t)ldv * sizeof(T)) % va == 0 &&
                        ((size_t)ldo * sizeof(T)) % va == 0;
#define AC_AV_SEQS(COLS, CONTIG) k_codec_av_warp_seqs<T, COLS, R, CONTIG><<<grid, R * 32, 0, st>>>(d_seqs, H, Hkv, v, ldv, out, ldo)
    if (hd == 32) AC_AV_SEQS(1, true);
    else if (hd == 64 && contig) AC_AV_SEQS(2, true);
    else if (hd == 64) AC_AV_SEQS(2, false);
    else if (contig) AC_AV_SEQS(4, true);
    else AC_AV_SEQS(4, false);
#undef AC_AV_SEQS
    AC_CU_LAUNCH();
    return AC_OK;
}

template int ac_cu_codec_av_seqs<float>(const ac_cu_av_seq *, int, int, int, int, int, const float *, int, float *, int,
                                        cudaStream_t);
template int ac_cu_codec_av_seqs<bf16>(const ac_cu_av_seq *, int, int, int, int, int, const bf16 *, int, bf16 *, int,
                                       cudaStream_t);
