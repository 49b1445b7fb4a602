/* cuda_codec_av.cu — A·V from compressed attention-map rows (see
 * cuda_codec_av.h). Head dims 32/64/128: q8 rows with bf16 V on the tensor
 * cores (k_av_q8_mma, q4 rows too); top-k rows (k <= 32) with bf16 V by the v4 gather, V rows
 * through L1 (k_av_topk, session 14); every other codec, and f32 V, by a gather from V staged
 * in shared memory once per block for all heads of a kv group (k_av_smem, v3).
 * Other head dims: one block per (row t, head h) decoding row t into shared
 * memory (weights, and for top-k their key indices), each thread accumulating
 * its output columns d. Row offsets are the codec's closed forms. Versions,
 * predictions and measured times: docs/GPU_NOTES.md. */
#include "cuda_codec_av.h"
#include "cuda_backend.h"
#include "cuda_attn_wg.h"
#include "cuda_ptx.h"
#include "cuda_pv_tile.h"
#include "cuda_wgmma.h"

#include <cuda_fp16.h>
#include <type_traits>

namespace {

using namespace ac_ptx;

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

/* Where a launch's sequences are: one sequence (`one`, the caller's V and out rows from 0) or
 * sequences s0 .. s0 + gridDim.z - 1 of a packed batch (maps tab[s], rows cu[s] .. cu[s+1] of V
 * and out; head maps ac_cuda_map_bytes(L) apart). */
struct av_src {
    const unsigned char *const *tab; /* device [n_seq] or NULL */
    const int *cu;                   /* device [n_seq + 1] with tab */
    const int *nrows;                /* device [n_seq] with tab: rows [0, nrows[s]) of sequence s, or NULL: every row */
    const unsigned char *one;        /* without tab */
    size_t one_mb;
    int s0, L1, rows1;
};

__device__ __forceinline__ void av_seq(const ac_cu_codec &c, const av_src &q, const unsigned char **maps, size_t *mb,
                                       int *r0, int *L, int *rows) {
    if (q.tab) {
        const int s = q.s0 + blockIdx.z;
        *r0 = q.cu[s], *L = q.cu[s + 1] - *r0, *rows = q.nrows ? q.nrows[s] : *L, *maps = q.tab[s];
        *mb = (row_offset(c, *L, *L) + 63) / 64 * 64;
    } else {
        *r0 = 0, *L = q.L1, *rows = q.rows1, *maps = q.one, *mb = q.one_mb;
    }
}

/* ---- v3 gather kernel: V of one kv head staged in shared memory ----------------------------------
 * Block = (sequence, kv head g, PB consecutive (row, head-of-group) pairs); pair p is row p / G,
 * head g G + p % G, so the G query heads sharing V are served by one block. The block copies the V
 * rows its pairs can reach (causal: up to its last row; KT rows at a time when they do not fit)
 * into shared memory once, then each warp takes pairs: lane l decodes stored entry j0 + l of each
 * 32-entry chunk, the entries whose key lies in the staged rows are compacted into a per-warp list
 * (ballot + prefix count: stored order kept, damaged top-k indices and zero weights dropped), and
 * the warp walks the list U entries at a time, every V row read from shared memory (lane l owns
 * columns COLS l .. COLS l + COLS - 1). v2 read the rows from L2/HBM: ~1 GB of V rows per layer at
 * Llama-1B 512 x 16 top-32. Accumulators of PW pairs per warp stay in registers across key tiles. */
template <int COLS>
__device__ __forceinline__ void lds_cols(const float *p, float *x) {
    if (COLS == 4) {
        const float4 v = *reinterpret_cast<const float4 *>(p);
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    } else if (COLS == 2) {
        const float2 v = *reinterpret_cast<const float2 *>(p);
        x[0] = v.x, x[1] = v.y;
    } else {
        x[0] = p[0];
    }
}
template <int COLS>
__device__ __forceinline__ void lds_cols(const bf16 *p, float *x) {
    if (COLS == 4) {
        const uint2 u = *reinterpret_cast<const uint2 *>(p);
        x[0] = __uint_as_float(u.x << 16), x[1] = __uint_as_float(u.x & 0xffff0000u);
        x[2] = __uint_as_float(u.y << 16), x[3] = __uint_as_float(u.y & 0xffff0000u);
    } else if (COLS == 2) {
        const uint32_t u = *reinterpret_cast<const uint32_t *>(p);
        x[0] = __uint_as_float(u << 16), x[1] = __uint_as_float(u & 0xffff0000u);
    } else {
        x[0] = __bfloat162float(*p);
    }
}

template <typename T, int COLS, int NW, int PW>
__global__ void __launch_bounds__(NW * 32, 1) k_av_smem(ac_cu_codec c, av_src q, int H, int Hkv, const T *__restrict__ V,
                                                     int ldv, T *__restrict__ O, int ldo, int KT, int PB, int vec) {
    constexpr int HD = 32 * COLS, U = 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    uint32_t *ent = reinterpret_cast<uint32_t *>(smem_raw); /* [NW][32] (key - k0) HD: the entry's V row in sv */
    float *entw = reinterpret_cast<float *>(ent + NW * 32);  /* [NW][32] its weight */
    T *sv = reinterpret_cast<T *>(smem_raw + NW * 32 * 8);   /* [KT][HD] V rows k0 .. k1 - 1 of kv head g */
    const unsigned char *maps;
    size_t mb;
    int r0, L, rows;
    av_seq(c, q, &maps, &mb, &r0, &L, &rows);
    const int G = H / Hkv, g = blockIdx.y, npairs = rows * G;
    const int qb0 = blockIdx.x * PB;
    if (qb0 >= npairs) return; /* whole block */
    const int qb1 = min(npairs, qb0 + PB), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kend = c.causal ? (qb1 - 1) / G + 1 : L, ntiles = (kend + KT - 1) / KT;
    const T *Vg = V + (size_t)r0 * ldv + (size_t)g * HD;
    uint32_t *e = ent + warp * 32;
    float *ew = entw + warp * 32;
    const T *svl = sv + COLS * lane; /* this lane's columns of staged row 0 */
    for (int qa = qb0; qa < qb1; qa += NW * PW) {
        float acc[PW][COLS];
#pragma unroll
        for (int i = 0; i < PW; i++)
#pragma unroll
            for (int k = 0; k < COLS; k++) acc[i][k] = 0.f;
        for (int tile = 0; tile < ntiles; tile++) {
            const int k0 = tile * KT, k1 = min(kend, k0 + KT);
            if (ntiles > 1 || qa == qb0) { /* stage V rows [k0, k1) */
                __syncthreads();
                if (vec) {
                    constexpr int CH = HD * (int)sizeof(T) / 16, PER = 16 / (int)sizeof(T);
                    for (int i = threadIdx.x; i < (k1 - k0) * CH; i += NW * 32) {
                        const int r = i / CH, cc = (i % CH) * PER;
                        *reinterpret_cast<uint4 *>(sv + (size_t)r * HD + cc) =
                            __ldg(reinterpret_cast<const uint4 *>(Vg + (size_t)(k0 + r) * ldv + cc));
                    }
                } else {
                    for (int i = threadIdx.x; i < (k1 - k0) * HD; i += NW * 32)
                        sv[i] = Vg[(size_t)(k0 + i / HD) * ldv + i % HD];
                }
                __syncthreads();
            }
#pragma unroll
            for (int i = 0; i < PW; i++) {
                const int pq = qa + i * NW + warp;
                if (pq >= qb1) continue;
                const int t = pq / G, h = g * G + pq % G;
                const unsigned char *row = maps + (size_t)h * mb + row_offset(c, L, t);
                const int n_t = c.causal ? t + 1 : L;
                const int n = c.kind == 4 ? (n_t < c.topk ? n_t : c.topk) : n_t;
                const float scale = (c.kind == 2 || c.kind == 3) ? ld_f32(row) : 0.f;
                for (int j0 = 0; j0 < n; j0 += 32) {
                    if (c.kind != 4) { /* dense rows: stored entry j is key j */
                        if (j0 + 32 <= k0) continue;
                        if (j0 >= k1) break;
                    }
                    int key = 0;
                    float w = 0.f;
                    if (j0 + lane < n) w = decode_w(c, row, n, n_t, j0 + lane, scale, &key);
                    const bool in = j0 + lane < n && key >= k0 && key < k1 && w != 0.f;
                    const unsigned mask = __ballot_sync(0xffffffffu, in);
                    if (!mask) continue;
                    const int m = __popc(mask), pos = __popc(mask & ((1u << lane) - 1u));
                    __syncwarp();
                    e[lane] = 0, ew[lane] = 0.f; /* past m: key k0, weight 0 */
                    __syncwarp();
                    if (in) e[pos] = (uint32_t)(key - k0) * HD, ew[pos] = w; /* unpacked once, not per column */
                    __syncwarp();
                    for (int jj = 0; jj < m; jj += U) {
                        uint32_t pk[U];
                        float wj[U], x[U][COLS];
                        const uint4 a = *reinterpret_cast<const uint4 *>(e + jj),
                                    b = *reinterpret_cast<const uint4 *>(e + jj + 4);
                        const float4 fa = *reinterpret_cast<const float4 *>(ew + jj),
                                     fb = *reinterpret_cast<const float4 *>(ew + jj + 4);
                        pk[0] = a.x, pk[1] = a.y, pk[2] = a.z, pk[3] = a.w, pk[4] = b.x, pk[5] = b.y, pk[6] = b.z,
                        pk[7] = b.w;
                        wj[0] = fa.x, wj[1] = fa.y, wj[2] = fa.z, wj[3] = fa.w, wj[4] = fb.x, wj[5] = fb.y,
                        wj[6] = fb.z, wj[7] = fb.w;
#pragma unroll
                        for (int u = 0; u < U; u++) lds_cols<COLS>(svl + pk[u], x[u]);
#pragma unroll
                        for (int u = 0; u < U; u++)
#pragma unroll
                            for (int k = 0; k < COLS; k++) acc[i][k] += wj[u] * x[u][k];
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < PW; i++) {
            const int pq = qa + i * NW + warp;
            if (pq >= qb1) continue;
            const int t = pq / G, h = g * G + pq % G;
            T *o = O + (size_t)(r0 + t) * ldo + (size_t)h * HD + COLS * lane;
#pragma unroll
            for (int k = 0; k < COLS; k++) ac_st(o + k, acc[i][k]);
        }
    }
}

/* ---- v3 q8 (and q4) rows on the tensor cores (bf16 V) ---------------------------------------------
 * q8 weights are integers 0..255 (q4: 0..15) times a row scale: exact in bf16, so P V runs as the fused
 * attention's P V does (mma.sync m16n8k16, V tiles of 64 keys through shared memory by cp.async,
 * two stages), with the map bytes as the A operand and the row scale applied at the end.
 * Block = (sequence, kv head g, BM = 16 MT rows); warp (mt, hw) owns m-tile mt of head g G + hw
 * (+ GW per pass when G > GW): V tiles are shared by the G heads. A fragments straight from the
 * rows: the k index of a 16-key step is permuted so that thread tq's four k slots (2tq, 2tq+1,
 * 2tq+8, 2tq+9) are keys 4tq .. 4tq+3, one 4-byte (q4: 2-byte) read per row; V rows are stored in shared memory
 * in the same permuted order (key bit 1 -> slot bit 3), so the ldmatrix.trans addressing is the
 * fused kernel's and its 8 row addresses hit 8 different bank groups. */
/* bytes key .. key+3 of a row's weights (key a multiple of 4), 0 past n: one or two aligned 32-bit
 * reads when all four are in the row (each word holds a byte of the row, so it lies inside the
 * 4-byte-aligned map allocation), else byte reads */
__device__ __forceinline__ uint32_t ld4(const unsigned char *p, int key, int n) {
    if (key + 4 <= n) {
        const uintptr_t a = (uintptr_t)(p + key);
        const uint32_t *w = reinterpret_cast<const uint32_t *>(a & ~(uintptr_t)3);
        const uint32_t sh = (uint32_t)(a & 3) * 8, lo = __ldg(w);
        return sh ? __funnelshift_r(lo, __ldg(w + 1), sh) : lo;
    }
    uint32_t r = 0;
#pragma unroll
    for (int b = 0; b < 4; b++)
        if (key + b < n) r |= (uint32_t)p[key + b] << (8 * b);
    return r;
}
/* bytes (sel = 0: 0 and 1, sel = 2: 2 and 3) of x as a bf16 pair, exactly (0x4B000000 | b is 2^23 + b) */
__device__ __forceinline__ uint32_t q8_pair(uint32_t x, int sel) {
    const float lo = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440 + sel)) - 8388608.f;
    const float hi = __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7441 + sel)) - 8388608.f;
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
/* q4: nibbles of keys key .. key+3 (key a multiple of 4: byte key / 2 of the row's weights, low
 * nibble first) in the low 16 bits, 0 past n; the aligned-word reads as in ld4 */
__device__ __forceinline__ uint32_t ld4n(const unsigned char *p, int key, int n) {
    if (key + 4 <= n) {
        const uintptr_t a = (uintptr_t)(p + key / 2);
        const uint32_t *w = reinterpret_cast<const uint32_t *>(a & ~(uintptr_t)3);
        const uint32_t sh = (uint32_t)(a & 3) * 8, lo = __ldg(w);
        return (sh <= 16 ? lo >> sh : __funnelshift_r(lo, __ldg(w + 1), sh)) & 0xffffu;
    }
    uint32_t r = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (key + i < n) {
            const uint32_t b = p[(key + i) / 2];
            r |= ((i & 1) ? b >> 4 : b & 15u) << (4 * i);
        }
    return r;
}
/* nibbles (sel = 0: 0 and 1, sel = 8: 2 and 3) of x as a bf16 pair, exactly */
__device__ __forceinline__ uint32_t q4_pair(uint32_t x, int sel) {
    const float lo = __uint_as_float(0x4B000000u | ((x >> sel) & 15u)) - 8388608.f;
    const float hi = __uint_as_float(0x4B000000u | ((x >> (sel + 4)) & 15u)) - 8388608.f;
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
/* shared-memory slot of key j of a 64-key tile: bit 1 of j moves to bit 3 (bits 3, 2 down one) */
__device__ __forceinline__ int q8_slot(int j) {
    return (j & ~15) | ((j >> 1) & 1) << 3 | ((j >> 3) & 1) << 2 | ((j >> 2) & 1) << 1 | (j & 1);
}

/* The place of a k_av_q8_mma / k_av_topk_mma block and of this thread in it: the block's sequence
 * (av_seq: maps, mb, r0, L, rows), its rows tb0 .. tb0 + 16 MT - 1 (the longest, causal, blocks first)
 * of kv head g (G heads a kv head) and its n_tiles key tiles of BN; this thread's warp on m-tile mt (rows
 * t0 .. t0 + 15) of the group's head hw (+ GW a pass, nthr threads), with w_end its last key + 1, and
 * lane (gr, tq: the m16n8k16 fragment coordinates). */
template <int MT, int BN> struct mma_av_place {
    const unsigned char *maps;
    size_t mb;
    int r0, L, rows, tb0, G, g, nthr, n_tiles, warp, lane, gr, tq, mt, hw, t0, w_end;
};
/* Fill b; false when the block has no rows (it returns before any barrier). */
template <int MT, int BN>
__device__ __forceinline__ bool mma_av_setup(const ac_cu_codec &c, const av_src &q, int H, int Hkv, int GW,
                                             mma_av_place<MT, BN> &b) {
    constexpr int BM = 16 * MT;
    av_seq(c, q, &b.maps, &b.mb, &b.r0, &b.L, &b.rows);
    b.tb0 = (gridDim.x - 1 - blockIdx.x) * BM;
    if (b.tb0 >= b.rows) return false;
    b.G = H / Hkv, b.g = blockIdx.y, b.nthr = MT * GW * 32;
    const int kv_end = c.causal ? min(b.L, b.tb0 + BM) : b.L;
    b.n_tiles = (kv_end + BN - 1) / BN;
    b.warp = threadIdx.x >> 5, b.lane = threadIdx.x & 31, b.gr = b.lane >> 2, b.tq = b.lane & 3;
    b.mt = b.warp % MT, b.hw = b.warp / MT, b.t0 = b.tb0 + b.mt * 16;
    b.w_end = c.causal ? min(b.L, b.t0 + 16) : b.L;
    return true;
}

/* The tensor-core A.V kernels' shared pieces (k_av_q8_mma, k_av_topk_mma, k_av_topk_wg). V rows j0 ..
 * j0 + BN - 1 of a kv head (Vg, rows ldv apart; zero rows past L) into the shared tile vs [BN][LDS] by
 * nthr threads, key r at row q8_slot(r) (SLOT: the q8 kernel's permuted k order) or r. */
template <int HD, int LDS, int BN, bool SLOT>
__device__ __forceinline__ void cp_v_tile(bf16 *vs, const bf16 *Vg, int ldv, int j0, int L, int nthr) {
    constexpr int CH = HD / 8;
    for (int i = threadIdx.x; i < BN * CH; i += nthr) {
        const int r = i / CH, cc = (i % CH) * 8, ok = j0 + r < L;
        cp_async16(smem_u32(vs + (SLOT ? q8_slot(r) : r) * LDS + cc), Vg + (size_t)(ok ? j0 + r : 0) * ldv + cc,
                   ok ? 16 : 0);
    }
}
/* This thread's part of a 16-row output tile (the m16n8 C layout: n-tile i at o[i], rows gr and gr + 8)
 * times sA (row rA) and sB (row rB = rA + 8) as bf16 pairs at column col + 8 i of rows r0 + rA and
 * r0 + rB of O, those below rows. */
template <int DT>
__device__ __forceinline__ void st_rows_bf16(bf16 *O, int ldo, int r0, int rA, int rows, int col, const float (*o)[4],
                                             float sA, float sB) {
    const int rB = rA + 8;
#pragma unroll
    for (int i = 0; i < DT; i++) {
        if (rA < rows)
            *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(r0 + rA) * ldo + col + i * 8) =
                __floats2bfloat162_rn(o[i][0] * sA, o[i][1] * sA);
        if (rB < rows)
            *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(r0 + rB) * ldo + col + i * 8) =
                __floats2bfloat162_rn(o[i][2] * sB, o[i][3] * sB);
    }
}

template <int HD, int MT, bool Q4>
__global__ void __launch_bounds__(256) k_av_q8_mma(ac_cu_codec c, av_src q, int H, int Hkv, const bf16 *__restrict__ V,
                                                   int ldv, bf16 *__restrict__ O, int ldo, int GW) {
    constexpr int BN = 64, LDS = HD + 8, DT = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Vs = reinterpret_cast<bf16 *>(smem_raw); /* [2][BN][LDS] */
    mma_av_place<MT, BN> b;
    if (!mma_av_setup(c, q, H, Hkv, GW, b)) return;
    const int rA = b.t0 + b.gr, rB = rA + 8;
    const bf16 *Vg = V + (size_t)b.r0 * ldv + (size_t)b.g * HD;
    auto load_tile = [&](int t, int stage) { cp_v_tile<HD, LDS, BN, true>(Vs + stage * BN * LDS, Vg, ldv, t * BN, b.L, b.nthr); };
    for (int hp = 0; hp < b.G; hp += GW) {
        const int hh = hp + b.hw, h = b.g * b.G + hh;
        const bool active = hh < b.G;
        /* this thread's two rows: weights from byte 4 of the row, n keys stored (0: no row) */
        const unsigned char *pA = b.maps, *pB = b.maps;
        int nA = 0, nB = 0;
        float sA = 0.f, sB = 0.f;
        if (active && rA < b.rows) {
            const unsigned char *rw = b.maps + (size_t)h * b.mb + row_offset(c, b.L, rA);
            pA = rw + 4, nA = c.causal ? rA + 1 : b.L, sA = ld_f32(rw);
        }
        if (active && rB < b.rows) {
            const unsigned char *rw = b.maps + (size_t)h * b.mb + row_offset(c, b.L, rB);
            pB = rw + 4, nB = c.causal ? rB + 1 : b.L, sB = ld_f32(rw);
        }
        float o[DT][4];
#pragma unroll
        for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        load_tile(0, 0);
        cp_commit();
        for (int t = 0; t < b.n_tiles; t++) {
            cp_next_tile(t, b.n_tiles, load_tile);
            __syncthreads();
            const bf16 *vs = Vs + (t & 1) * BN * LDS;
            if (active && t * BN < b.w_end) {
#pragma unroll
                for (int ks = 0; ks < BN / 16; ks++) {
                    const int key = t * BN + ks * 16 + 4 * b.tq;
                    uint32_t a[4];
                    if (Q4) {
                        const uint32_t xa = ld4n(pA, key, nA), xb = ld4n(pB, key, nB);
                        a[0] = q4_pair(xa, 0), a[1] = q4_pair(xb, 0), a[2] = q4_pair(xa, 8), a[3] = q4_pair(xb, 8);
                    } else {
                        const uint32_t xa = ld4(pA, key, nA), xb = ld4(pB, key, nB);
                        a[0] = q8_pair(xa, 0), a[1] = q8_pair(xb, 0), a[2] = q8_pair(xa, 2), a[3] = q8_pair(xb, 2);
                    }
                    mma_pv_kstep<HD, LDS, 1>(&o, &a, vs, ks, b.lane); /* V rows in slot order: the permuted keys */
                }
            }
            __syncthreads(); /* the stage is refilled next */
        }
        if (active) st_rows_bf16<DT>(O, ldo, b.r0, rA, b.rows, h * HD + 2 * b.tq, o, sA, sB);
    }
}

/* ---- v4 top-k gather (session 14, variant 4; bf16 V, k <= 32) ---------------------------------------
 * Why v3 (k_av_smem) runs ~9x over its floor (docs/GPU_NOTES.md, "Session 14: A.V v4"): every pair's
 * row is fetched from HBM by byte loads only when the warp reaches it (one exposed memory latency per
 * pair, 16 pairs in a row per warp, 16 warps per SM), and the whole V prefix of the block is copied in
 * before any work and not overlapped (one 512-thread block per SM at 96 registers).
 * v4: block = (sequence, kv head g, PB = NW PW consecutive (row, head-of-group) pairs, pair p: row
 * p / G, head g G + p % G). (1) Every lane loads its entries of all PW pairs of its warp at once
 * (entry `lane` of pair i, key and f16 weight packed in one register: damaged keys >= n_t and zero
 * weights drop out here), so the block's row reads are in flight together. (2) The PW pairs'
 * accumulators stay in registers; V rows are read from global memory through L1 (the G heads and
 * neighbouring rows of a block reuse the same V rows), no staging and no barrier. (3) Per pair: its
 * entries (ballot), compacted into the warp's list (V offset, f32 weight) in stored order, walked 8
 * then 4 at a time (the last group's slots past the list not read); lane l owns columns COLS l ..
 * COLS l + COLS - 1. Removed in session 15 (slower at every shape of runs 19 and 20): V rows staged in
 * shared memory in key tiles (variant 3) and one packed word an entry in the list (9, 10). */
template <int COLS>
__device__ __forceinline__ void ld_cols_v4(const bf16 *p, float *x) {
    if (COLS == 4) {
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(p));
        x[0] = __uint_as_float(u.x << 16), x[1] = __uint_as_float(u.x & 0xffff0000u);
        x[2] = __uint_as_float(u.y << 16), x[3] = __uint_as_float(u.y & 0xffff0000u);
    } else if (COLS == 2) {
        const uint32_t u = __ldg(reinterpret_cast<const unsigned int *>(p));
        x[0] = __uint_as_float(u << 16), x[1] = __uint_as_float(u & 0xffff0000u);
    } else {
        const unsigned short u = __ldg(reinterpret_cast<const unsigned short *>(p));
        x[0] = __uint_as_float((uint32_t)u << 16);
    }
}
/* U list entries from jj into acc (TAIL: those at m and past are not read and add 0). The list holds V
 * offsets in elements from base. */
template <int COLS, int U, bool TAIL>
__device__ __forceinline__ void walk_v4(const bf16 *base, const uint32_t *e, const float *ew, int jj, int m, float *acc) {
    uint32_t pk[U];
    float wj[U], x[U][COLS];
#pragma unroll
    for (int u = 0; u < U; u += 4) {
        const uint4 a = *reinterpret_cast<const uint4 *>(e + jj + u);
        pk[u] = a.x, pk[u + 1] = a.y, pk[u + 2] = a.z, pk[u + 3] = a.w;
        const float4 f = *reinterpret_cast<const float4 *>(ew + jj + u);
        wj[u] = f.x, wj[u + 1] = f.y, wj[u + 2] = f.z, wj[u + 3] = f.w;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        if (!TAIL || jj + u < m) {
            ld_cols_v4<COLS>(base + pk[u], x[u]);
        } else { /* past the list: nothing read (a stale offset may point past the sequence's rows) */
            wj[u] = 0.f;
#pragma unroll
            for (int k = 0; k < COLS; k++) x[u][k] = 0.f;
        }
    }
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int k = 0; k < COLS; k++) acc[k] += wj[u] * x[u][k];
}

/* byte offset of row t of a top-k head map (row_offset for kind 4 alone) */
__device__ __forceinline__ size_t topk_row_offset(int causal, int k, int L, int t) {
    const size_t T = (size_t)t;
    if (!causal) return T * 4 * (size_t)(L < k ? L : k);
    return 4 * (t <= k ? T * (T + 1) / 2 : (size_t)k * (k + 1) / 2 + (T - k) * k);
}

template <int COLS, int NW, int PW>
__global__ void __launch_bounds__(NW * 32, 3) k_av_topk(ac_cu_codec c, av_src q, int H, int Hkv, const bf16 *__restrict__ V,
                                                     int ldv, bf16 *__restrict__ O, int ldo) {
    constexpr int HD = 32 * COLS, PB = NW * PW;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    uint32_t *list = reinterpret_cast<uint32_t *>(smem_raw);   /* [NW][32] V offset of the entry (walk_v4) */
    float *listw = reinterpret_cast<float *>(list + NW * 32);  /* [NW][32] its weight */
    const unsigned char *maps;
    size_t mb;
    int r0, L, rows;
    av_seq(c, q, &maps, &mb, &r0, &L, &rows);
    const int G = H / Hkv, g = blockIdx.y, npairs = rows * G;
    const int qb0 = (gridDim.x - 1 - blockIdx.x) * PB; /* causal: the longest blocks first */
    if (qb0 >= npairs) return;                         /* whole block */
    const int qb1 = min(npairs, qb0 + PB), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kend = c.causal ? (qb1 - 1) / G + 1 : L;
    const bf16 *Vg = V + (size_t)r0 * ldv + (size_t)g * HD;
    uint32_t *e = list + warp * 32;
    float *ew = listw + warp * 32;
    /* (1) entry `lane` of each pair: key | f16 weight << 16; 0 (weight 0) past the row, for damaged keys */
    uint32_t ent[PW];
    if (((uintptr_t)maps & 3) == 0) { /* rows 4-byte aligned: every load issued before any is used */
        const int dt = NW / G, dh = NW % G; /* pair p + NW: row + dt, head + dh (carry into the row) */
        int t = (qb0 + warp) / G, hh = (qb0 + warp) % G;
#pragma unroll
        for (int i = 0; i < PW; i++) {
            if (i) {
                const int carry = hh + dh >= G;
                t += dt + carry, hh += dh - (carry ? G : 0);
            }
            const int tc = min(t, (qb1 - 1) / G); /* past the block: a valid row, its entries dropped below */
            const unsigned char *row = maps + (size_t)(g * G + hh) * mb + topk_row_offset(c.causal, c.topk, L, tc);
            const int n_t = c.causal ? tc + 1 : L, n = n_t < c.topk ? n_t : c.topk, j = min(lane, n - 1);
            const uint32_t kw = __ldg(reinterpret_cast<const unsigned int *>(row + 4 * (j >> 1)));
            const uint32_t ww = __ldg(reinterpret_cast<const unsigned int *>(row + 4 * ((n + j) >> 1)));
            const uint32_t key = j & 1 ? kw >> 16 : kw & 0xffffu, w = (n + j) & 1 ? ww >> 16 : ww & 0xffffu;
            ent[i] = qb0 + i * NW + warp < qb1 && lane < n && key < (uint32_t)n_t ? key | w << 16 : 0u;
        }
    } else {
#pragma unroll
        for (int i = 0; i < PW; i++) {
            const int pq = qb0 + i * NW + warp;
            ent[i] = 0;
            if (pq < qb1) {
                const int t = pq / G, h = g * G + pq % G;
                const unsigned char *row = maps + (size_t)h * mb + topk_row_offset(c.causal, c.topk, L, t);
                const int n_t = c.causal ? t + 1 : L, n = n_t < c.topk ? n_t : c.topk;
                if (lane < n) {
                    const uint32_t key = ld_u16(row + 2 * lane), w = ld_u16(row + 2 * (size_t)n + 2 * lane);
                    ent[i] = key < (uint32_t)n_t ? key | w << 16 : 0u;
                }
            }
        }
    }
    float acc[PW][COLS];
#pragma unroll
    for (int i = 0; i < PW; i++)
#pragma unroll
        for (int k = 0; k < COLS; k++) acc[i][k] = 0.f;
    const uint32_t lt = (1u << lane) - 1u;
    const bf16 *base = Vg + COLS * lane;
#pragma unroll
    for (int i = 0; i < PW; i++) {
        const uint32_t key = ent[i] & 0xffffu;
        const bool in = key < (uint32_t)kend && (ent[i] & 0x7fff0000u);
        const unsigned mask = __ballot_sync(0xffffffffu, in);
        if (!mask) continue;
        const int m = __popc(mask);
        if (in) {
            const int pos = __popc(mask & lt);
            e[pos] = key * (uint32_t)ldv, ew[pos] = half_f32((uint16_t)(ent[i] >> 16));
        }
        __syncwarp();
        int jj = 0; /* the loops are not unrolled: the pair loop is (acc[i] in registers), 16 copies */
#pragma unroll 1
        for (; jj + 8 <= m; jj += 8) walk_v4<COLS, 8, false>(base, e, ew, jj, m, acc[i]);
#pragma unroll 1
        for (; jj < m; jj += 4) walk_v4<COLS, 4, true>(base, e, ew, jj, m, acc[i]);
        __syncwarp(); /* the list is rewritten by the next pair */
    }
#pragma unroll
    for (int i = 0; i < PW; i++) {
        const int pq = qb0 + i * NW + warp;
        if (pq >= qb1) continue;
        const int t = pq / G, h = g * G + pq % G;
        bf16 *o = O + (size_t)(r0 + t) * ldo + (size_t)h * HD + COLS * lane;
#pragma unroll
        for (int k = 0; k < COLS; k++) o[k] = __float2bfloat16_rn(acc[i][k]);
    }
}

/* ---- v4 top-k on the tensor cores (session 14, variant 5; bf16 V, k <= 32) ---------------------------
 * The gather (k_av_topk) costs ~7 instructions per stored entry on the CUDA cores; where a row's k
 * entries are a large share of its keys (short rows: top-32 over 512 tokens is 1 key in 8 on average)
 * it is cheaper to multiply densely. Block = (sequence, kv head g, BM = 16 MT rows), warps (mt, hw) as
 * in k_av_q8_mma (V tiles of 64 keys through shared memory by cp.async, two stages, shared by the G
 * heads; natural key order). Each warp loads the top-k entries of its 16 rows once (lane l: entry l
 * of each row, key | f16 weight << 16, damaged keys and zero weights dropped), then per key tile
 * writes them as bf16 into its own zeroed 16 x 64 tile of P in shared memory and runs P V as the
 * fused attention does (ldmatrix + mma.sync m16n8k16); a tile none of its rows has an entry in is
 * skipped. A key held twice by a row (damaged maps) gets the sum of its weights, as on the CPU.
 * Weights are rounded to bf16 (2^-9 relative; the gather keeps f16's 2^-11). */
__device__ __forceinline__ void topk_row_entries16(const ac_cu_codec &c, const unsigned char *maps, size_t mb, int L,
                                                   int rows, int h, int t0, int lane, unsigned char *scratch,
                                                   uint32_t *ent) {
    /* ent[r]: entry `lane` of row t0 + r as key | bf16 weight << 16 (0 past the row, past `rows`, for
     * damaged keys and zero weights). The 16 rows are back to back in the head map (at most 2 KB for
     * k <= 32): the warp copies them into scratch (shared memory, 16-byte aligned) with coalesced
     * loads first, then every lane reads its entries there. */
    const size_t o0 = topk_row_offset(c.causal, c.topk, L, t0);
    const int tl = min(t0 + 15, rows - 1);
    const uint32_t nbytes = (uint32_t)(topk_row_offset(c.causal, c.topk, L, tl + 1) - o0);
    const unsigned char *src = maps + (size_t)h * mb + o0;
    if (((uintptr_t)src & 3) == 0) {
        for (uint32_t i = lane; i < nbytes / 4; i += 32)
            reinterpret_cast<uint32_t *>(scratch)[i] = __ldg(reinterpret_cast<const unsigned int *>(src) + i);
    } else {
        for (uint32_t i = lane; i < nbytes; i += 32) scratch[i] = src[i];
    }
    __syncwarp();
    uint32_t off = 0, unsorted = 0; /* bit r: row t0 + r's stored keys are not strictly ascending */
#pragma unroll
    for (int r = 0; r < 16; r++) {
        const int t = t0 + r, n_t = c.causal ? t + 1 : L, n = n_t < c.topk ? n_t : c.topk;
        uint32_t key = 0xffffffffu, w = 0;
        if (t < rows && lane < n) {
            key = *reinterpret_cast<const uint16_t *>(scratch + off + 2 * lane);
            w = *reinterpret_cast<const uint16_t *>(scratch + off + 2 * n + 2 * lane);
        }
        const uint32_t prev = __shfl_up_sync(0xffffffffu, key, 1);
        if (t < rows && lane > 0 && lane < n && key <= prev) unsorted |= 1u << r;
        ent[r] = t < rows && lane < n && key < (uint32_t)n_t ? key | w << 16 : 0u;
        if (t < rows) off += 4 * (uint32_t)n;
    }
    unsorted = __reduce_or_sync(0xffffffffu, unsorted);
    __syncwarp(); /* scratch is the warp's P tile next */
#pragma unroll
    for (int r = 0; r < 16; r++) { /* the weight as bf16; a key held by several lanes (damaged rows): summed */
        const bool valid = ent[r] & 0x7fff0000u;
        const float w = half_f32((uint16_t)(ent[r] >> 16));
        float sum = w;
        /* only a row whose keys are not ascending (the codec writes them ascending: damaged maps) can hold
         * a key twice; match.any is slow (one pass per distinct value), so ascending rows skip it */
        if (unsorted >> r & 1) {
            const unsigned same = __match_any_sync(0xffffffffu, valid ? ent[r] & 0xffffu : 0x10000u + lane);
            if (__any_sync(0xffffffffu, __popc(same) > 1)) { /* sum over the lanes holding this key */
                sum = 0.f;
#pragma unroll 1
                for (int src = 0; src < 32; src++) {
                    const float ws = __shfl_sync(0xffffffffu, w, src);
                    if (same >> src & 1) sum += ws;
                }
                if (__ffs(same) - 1 != lane) sum = 0.f; /* the lowest lane keeps the key */
            }
        }
        const uint32_t wb = __bfloat16_as_ushort(__float2bfloat16_rn(sum));
        ent[r] = valid && (wb & 0x7fffu) ? (ent[r] & 0xffffu) | wb << 16 : 0u;
    }
}

/* The warp's P tile [16][LDP] (bf16, at pw, shared address pw_s) for the keys k0 .. k0 + BN - 1: zeroed,
 * then the entries of its 16 rows with a key there (ent[r]: key | bf16 weight << 16, as
 * topk_row_entries16 leaves them) at column key - k0; true where this lane wrote one. */
template <int BN, int LDP>
__device__ __forceinline__ bool p_tile(bf16 *pw, uint32_t pw_s, const uint32_t (&ent)[16], uint32_t k0, int lane) {
    for (int i = lane; i < 16 * LDP / 8; i += 32) reinterpret_cast<uint4 *>(pw)[i] = make_uint4(0, 0, 0, 0);
    __syncwarp();
    bool any = false;
#pragma unroll
    for (int r = 0; r < 16; r++) {
        const uint32_t key = ent[r] & 0xffffu;
        const bool in = key - k0 < (uint32_t)BN && (ent[r] & 0x7fff0000u);
        if (in) {
            const uint32_t a = pw_s + 2 * (r * LDP + (key - k0));
            asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(a), "h"((unsigned short)(ent[r] >> 16)));
        }
        any |= in;
    }
    __syncwarp();
    return any;
}

template <int HD, int MT>
__global__ void __launch_bounds__(256, HD == 128 ? 1 : 2) k_av_topk_mma(ac_cu_codec c, av_src q, int H, int Hkv,
                                                        const bf16 *__restrict__ V, int ldv, bf16 *__restrict__ O,
                                                        int ldo, int GW) {
    constexpr int BN = 64, LDS = HD + 8, LDP = BN + 8, DT = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Vs = reinterpret_cast<bf16 *>(smem_raw); /* [2][BN][LDS] */
    bf16 *Ps = Vs + 2 * BN * LDS;                  /* [warps][16][LDP] */
    mma_av_place<MT, BN> b;
    if (!mma_av_setup(c, q, H, Hkv, GW, b)) return;
    const bf16 *Vg = V + (size_t)b.r0 * ldv + (size_t)b.g * HD;
    bf16 *pw = Ps + b.warp * 16 * LDP;
    const uint32_t pw_s = smem_u32(pw);
    auto load_tile = [&](int t, int stage) { cp_v_tile<HD, LDS, BN, false>(Vs + stage * BN * LDS, Vg, ldv, t * BN, b.L, b.nthr); };
    for (int hp = 0; hp < b.G; hp += GW) {
        const int hh = hp + b.hw, h = b.g * b.G + hh;
        const bool active = hh < b.G && b.t0 < b.rows;
        uint32_t ent[16];
        __syncthreads(); /* the previous pass's last tile is no longer read (V stage and P tile) */
        if (active) topk_row_entries16(c, b.maps, b.mb, b.L, b.rows, h, b.t0, b.lane, reinterpret_cast<unsigned char *>(pw), ent);
        else
#pragma unroll
            for (int r = 0; r < 16; r++) ent[r] = 0;
        float o[DT][4];
#pragma unroll
        for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        load_tile(0, 0);
        cp_commit();
        for (int t = 0; t < b.n_tiles; t++) {
            cp_next_tile(t, b.n_tiles, load_tile);
            __syncthreads();
            const bf16 *vs = Vs + (t & 1) * BN * LDS;
            const uint32_t k0 = (uint32_t)(t * BN);
            if (active && t * BN < b.w_end) {
                if (__any_sync(0xffffffffu, p_tile<BN, LDP>(pw, pw_s, ent, k0, b.lane))) {
#pragma unroll 1 /* not unrolled: the 16 rows' entries stay in registers (an unrolled tile spills) */
                    for (int ks = 0; ks < BN / 16; ks++) {
                        uint32_t a[4];
                        ldsm_x4(smem_u32(pw + (b.lane & 15) * LDP + ks * 16 + (b.lane >> 4) * 8), a[0], a[1], a[2], a[3]);
                        mma_pv_kstep<HD, LDS, 1>(&o, &a, vs, ks, b.lane);
                    }
                }
                __syncwarp(); /* the tile is zeroed again next */
            }
            __syncthreads(); /* the stage is refilled next */
        }
        if (active) st_rows_bf16<DT>(O, ldo, b.r0, b.t0 + b.gr, b.rows, h * HD + 2 * b.tq, o, 1.f, 1.f);
    }
}

/* ---- variant 8 (session 14): variant 5 on Hopper's warpgroup MMA, hd 64, sm_90a ----------------------
 * Variant 5 reads every V fragment through ldmatrix once per warp (8 warps of a block: ~8 KB of
 * shared-memory reads per 16 rows x 64 keys, ~1 GB a layer at 512 x 16). Here a warpgroup (4 warps,
 * 64 rows of one head) multiplies its P tile by the V tile with wgmma: the tensor cores read V
 * straight from shared memory (the fused wgmma kernel's 128B-swizzled MN-major tile and descriptor),
 * and the A operand comes from registers — the m16n8k16 A fragments each warp ldmatrix-loads from its
 * own P tile, built as in variant 5. Block = (sequence, kv head g, 64 rows) x GW = min(G, NWG) heads of
 * the group (one warpgroup each, sharing the V tiles of 64 keys, two cp.async stages); NWG 2: two
 * blocks per SM, each with two heads (the G / 2 passes re-copy the V tiles, from L2). Four warpgroups a
 * block (variant 7, one block per SM) were slower at every shape of runs 19 and 20: removed in session 15. */
template <int NWG> /* warpgroups (heads) a block at most: 2 (two blocks per SM) */
__global__ void __launch_bounds__(NWG * 128, 4 / NWG) k_av_topk_wg(ac_cu_codec c, av_src q, int H, int Hkv,
                                                       const bf16 *__restrict__ V, int ldv, bf16 *__restrict__ O,
                                                       int ldo, int GW) {
#ifdef AC_WGMMA
    constexpr int BN = 64, LDP = BN + 8, BM = 64;
    constexpr uint32_t TB = BN * 128; /* bytes of a V tile [BN][64] */
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t s0 = smem_u32(smem_raw), sV = (s0 + 1023u) & ~1023u; /* [2][BN][64] swizzled */
    bf16 *Ps = reinterpret_cast<bf16 *>(smem_raw + (sV - s0) + 2 * TB);  /* [warps][16][LDP] */
    const unsigned char *maps;
    size_t mb;
    int r0, L, rows;
    av_seq(c, q, &maps, &mb, &r0, &L, &rows);
    const int tb0 = (gridDim.x - 1 - blockIdx.x) * BM; /* longest (causal) blocks first */
    if (tb0 >= rows) return;
    const int G = H / Hkv, g = blockIdx.y, nthr = GW * 128;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wg = threadIdx.x >> 7, gr = lane >> 2, tq = lane & 3;
    const int t0 = tb0 + (warp & 3) * 16; /* this warp's rows: the warpgroup's 16 (warp & 3) .. */
    const int kv_end = c.causal ? min(L, tb0 + BM) : L, n_tiles = (kv_end + BN - 1) / BN;
    const bf16 *Vg = V + (size_t)r0 * ldv + (size_t)g * 64;
    bf16 *pw = Ps + warp * 16 * LDP;
    const uint32_t pw_s = smem_u32(pw);
    auto load_tile = [&](int t, int stage) {
        const int j0 = t * BN;
        const uint32_t dst = sV + stage * TB;
        for (int i = threadIdx.x; i < BN * 8; i += nthr) {
            const int r = i >> 3, cc = i & 7, ok = j0 + r < L;
            cp_async16(dst + ac_wg::swz(r, cc), Vg + (size_t)(ok ? j0 + r : 0) * ldv + cc * 8, ok ? 16 : 0);
        }
    };
    for (int hp = 0; hp < G; hp += GW) {
        const int hh = hp + wg, h = g * G + hh;
        const bool active = hh < G; /* warpgroup-uniform */
        uint32_t ent[16];
        __syncthreads(); /* the previous pass's last tile is no longer read (V stage and P tile) */
        if (active && t0 < rows) topk_row_entries16(c, maps, mb, L, rows, h, t0, lane, reinterpret_cast<unsigned char *>(pw), ent);
        else
#pragma unroll
            for (int r = 0; r < 16; r++) ent[r] = 0;
        float o[32]; /* O [64 x 64] of the warpgroup: n-tile d at o[4d .. 4d + 3], the m16n8 C layout */
#pragma unroll
        for (int i = 0; i < 32; i++) o[i] = 0.f;
        load_tile(0, 0);
        cp_commit();
        for (int t = 0; t < n_tiles; t++) {
            cp_next_tile(t, n_tiles, load_tile);
            ac_wg::fence_proxy_async(); /* cp.async wrote through the generic proxy; wgmma reads through the async one */
            __syncthreads();
            const uint32_t k0 = (uint32_t)(t * BN);
            if (active) { /* every tile up to the warpgroup's last row (kv_end): the whole group multiplies */
                /* the P tile as p_tile builds it, written out: the call here took one register more (123 -> 124) */
                for (int i = lane; i < 16 * LDP / 8; i += 32) reinterpret_cast<uint4 *>(pw)[i] = make_uint4(0, 0, 0, 0);
                __syncwarp();
#pragma unroll
                for (int r = 0; r < 16; r++) { /* ent[r]: key | bf16 weight << 16 */
                    const uint32_t key = ent[r] & 0xffffu;
                    if (key - k0 < (uint32_t)BN && (ent[r] & 0x7fff0000u)) {
                        const uint32_t a = pw_s + 2 * (r * LDP + (key - k0));
                        asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(a), "h"((unsigned short)(ent[r] >> 16)));
                    }
                }
                __syncwarp();
                uint32_t a[BN / 16][4];
#pragma unroll
                for (int ks = 0; ks < BN / 16; ks++)
                    ldsm_x4(pw_s + 2 * ((lane & 15) * LDP + ks * 16 + (lane >> 4) * 8), a[ks][0], a[ks][1], a[ks][2], a[ks][3]);
                ac_wg::reg_fence(o);
                ac_wg::fence();
                ac_wg::wgmma_pv<BN / 16, 1>(o, a, sV + (t & 1) * TB, TB);
                ac_wg::commit();
                ac_wg::wait<0>();
                ac_wg::reg_fence(o);
                __syncwarp(); /* the P tile is zeroed again next */
            }
            __syncthreads(); /* the stage is refilled next */
        }
        if (active) {
            const int rA = t0 + gr, rB = rA + 8;
#pragma unroll
            for (int d = 0; d < 8; d++) {
                const int col = h * 64 + d * 8 + 2 * tq;
                if (rA < rows)
                    *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(r0 + rA) * ldo + col) = __floats2bfloat162_rn(o[4 * d], o[4 * d + 1]);
                if (rB < rows)
                    *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(r0 + rB) * ldo + col) =
                        __floats2bfloat162_rn(o[4 * d + 2], o[4 * d + 3]);
            }
        }
    }
#endif /* AC_WGMMA */
}

/* ---- variants 12-14 (session 15): the wgmma top-k kernel with P tiles in shared memory --------------------
 * Run 20: variant 8 takes ~100 us at Llama-1B 512 x 16 where its tensor-core work is ~10 us and its bytes
 * ~25: each 64-key tile runs copy wait, two block barriers, the P build, ldmatrix and a wgmma waited for
 * at once, so with 4 warpgroups an SM the latencies are not hidden. In these kernels P tiles live in
 * shared memory, 128B-swizzled K-major (the wgmma A operand read by descriptor: no ldmatrix, no A
 * registers), two per warpgroup, so the P build of tile t + 1 overlaps the product of tile t
 * (wgmma.wait_group 1), and the four warps of a warpgroup meet at a named barrier after writing their
 * rows. Block = (sequence, kv head g, 64 rows) x GW = min(G, NWG) warpgroups, one head each.
 * Variant 12 (sequences of at most AV_WGS_MAX_L keys) copies every V tile the block's rows reach into
 * shared memory once (one cp.async burst overlapped with the first head's entries, one block barrier,
 * the only one), then each warpgroup runs its heads w, w + GW, ... alone. Variants 13 / 14 (any
 * length; 2 / 4 warpgroups) share a ring of AV_RING V tiles: at tile t every thread waits for its
 * copies of tile t, one block barrier (which also means every warpgroup's product of tile t - 2 is
 * done: each waited for it at the end of tile t - 1), then tile t + AV_RING - 2 is copied into the slot
 * tile t - 2 used, two tiles ahead of its use. */
constexpr int AV_WGS_MAX_L = 1024, AV_RING = 4;
#ifdef AC_WGMMA /* the helpers exist in the sm_90a pass only, as the kernels' bodies */
constexpr uint32_t AV_TB = 64 * 128, AV_PB = 64 * 128; /* bytes of a V tile [64 keys][64], of a P tile [64 rows][64] */

struct wgs_geom { /* a block's place and shared-memory layout (variants 12-14) */
    const unsigned char *maps;
    size_t mb;
    int r0, L, rows, tb0, G, g, nthr, lane, wg, gr, tq, t0, n_tiles;
    uint32_t sP, sV, pw; /* P tiles [GW][2][64][64], V tiles, this warp's rows of its P buffer 0 (shared addresses) */
    unsigned char *pw_g; /* pw as a generic pointer */
};

/* false: the block has no rows (return before any barrier) */
__device__ __forceinline__ bool wgs_geom_init(wgs_geom &b, const ac_cu_codec &c, const av_src &q, int H, int Hkv, int GW,
                                              unsigned char *smem_raw) {
    av_seq(c, q, &b.maps, &b.mb, &b.r0, &b.L, &b.rows);
    b.tb0 = (gridDim.x - 1 - blockIdx.x) * 64; /* longest (causal) blocks first */
    if (b.tb0 >= b.rows) return false;
    b.G = H / Hkv, b.g = blockIdx.y, b.nthr = GW * 128;
    const int warp = threadIdx.x >> 5, wr = warp & 3;
    b.lane = threadIdx.x & 31, b.wg = threadIdx.x >> 7, b.gr = b.lane >> 2, b.tq = b.lane & 3, b.t0 = b.tb0 + wr * 16;
    const int kv_end = c.causal ? min(b.L, b.tb0 + 64) : b.L;
    b.n_tiles = (kv_end + 63) / 64;
    const uint32_t s0 = smem_u32(smem_raw);
    b.sP = (s0 + 1023u) & ~1023u;
    b.sV = b.sP + (uint32_t)GW * 2 * AV_PB;
    b.pw = b.sP + (uint32_t)b.wg * 2 * AV_PB + (uint32_t)wr * 16 * 128;
    b.pw_g = smem_raw + (b.pw - s0);
    return true;
}

/* Tile t of a head: this warp's 16 rows of P buffer t & 1 zeroed and its entries in keys [64 t, 64 t + 64)
 * written (ent[r]: key | bf16 weight << 16), the warpgroup's product O += P . V issued on the V tile at
 * vtile, then tile t - 1's product waited for (its P buffer free for tile t + 1). */
__device__ __forceinline__ void wgs_tile(const wgs_geom &b, const uint32_t (&ent)[16], int t, uint32_t vtile,
                                         float (&o)[32]) {
    const uint32_t buf = (uint32_t)(t & 1) * AV_PB, k0 = (uint32_t)(t * 64);
    uint4 *pz = reinterpret_cast<uint4 *>(b.pw_g + buf); /* this warp's 16 rows: 2 KB */
#pragma unroll
    for (int i = 0; i < 4; i++) pz[b.lane + 32 * i] = make_uint4(0, 0, 0, 0);
    __syncwarp();
#pragma unroll
    for (int r = 0; r < 16; r++) {
        const uint32_t key = ent[r] & 0xffffu, j = key - k0;
        if (j < 64u && (ent[r] & 0x7fff0000u)) {
            const uint32_t a = b.pw + buf + (uint32_t)r * 128 + (((j >> 3) ^ (uint32_t)(r & 7)) << 4) + (j & 7) * 2;
            asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(a), "h"((unsigned short)(ent[r] >> 16)));
        }
    }
    ac_wg::fence_proxy_async(); /* st.shared (generic proxy), read next by wgmma (async proxy) */
    ac_wg::bar_sync(1 + b.wg, 128); /* the warpgroup's four warps have written their rows */
    ac_wg::reg_fence(o);
    ac_wg::fence();
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
        ac_wg::wgmma_ss_n64_tb(o, ac_wg::desc(b.sP + (uint32_t)b.wg * 2 * AV_PB + buf + ks * 32, 16, 1024),
                               ac_wg::desc(vtile + ks * 2048, AV_TB, 1024), 1);
    ac_wg::commit();
    ac_wg::wait<1>();
    ac_wg::reg_fence(o);
}

/* the warpgroup's O [64 x 64] of head h (every product waited for): this warp's rows below `rows` */
__device__ __forceinline__ void wgs_store(const wgs_geom &b, const float (&o)[32], int h, bf16 *__restrict__ O, int ldo) {
    const int rA = b.t0 + b.gr, rB = rA + 8;
#pragma unroll
    for (int d = 0; d < 8; d++) {
        const int col = h * 64 + d * 8 + 2 * b.tq;
        if (rA < b.rows)
            *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(b.r0 + rA) * ldo + col) = __floats2bfloat162_rn(o[4 * d], o[4 * d + 1]);
        if (rB < b.rows)
            *reinterpret_cast<__nv_bfloat162 *>(O + (size_t)(b.r0 + rB) * ldo + col) = __floats2bfloat162_rn(o[4 * d + 2], o[4 * d + 3]);
    }
}

/* this warp's entries of head h (ent zero when its rows are past the sequence's) */
__device__ __forceinline__ void wgs_entries(const wgs_geom &b, const ac_cu_codec &c, int h, uint32_t (&ent)[16]) {
    if (b.t0 < b.rows) topk_row_entries16(c, b.maps, b.mb, b.L, b.rows, h, b.t0, b.lane, b.pw_g, ent);
    else
#pragma unroll
        for (int r = 0; r < 16; r++) ent[r] = 0;
}
#endif /* AC_WGMMA */

template <int NWG>
__global__ void __launch_bounds__(NWG * 128, 2) k_av_topk_wgs(ac_cu_codec c, av_src q, int H, int Hkv,
                                                   const bf16 *__restrict__ V, int ldv, bf16 *__restrict__ O,
                                                   int ldo, int GW) {
#ifdef AC_WGMMA
    extern __shared__ __align__(16) unsigned char smem_raw[];
    wgs_geom b;
    if (!wgs_geom_init(b, c, q, H, Hkv, GW, smem_raw)) return;
    { /* every V tile of the block, one burst: tile i at sV + i * AV_TB */
        const bf16 *Vg = V + (size_t)b.r0 * ldv + (size_t)b.g * 64;
        for (int i = threadIdx.x; i < b.n_tiles * 64 * 8; i += b.nthr) {
            const int r = i >> 3, cc = i & 7, ok = r < b.L;
            cp_async16(b.sV + (uint32_t)(r >> 6) * AV_TB + ac_wg::swz(r & 63, cc), Vg + (size_t)(ok ? r : 0) * ldv + cc * 8,
                       ok ? 16 : 0);
        }
        cp_commit();
    }
    bool first = true;
    for (int hh = b.wg; hh < b.G; hh += GW) { /* warpgroup-uniform; every warpgroup runs at least one head */
        const int h = b.g * b.G + hh;
        uint32_t ent[16];
        wgs_entries(b, c, h, ent); /* its scratch is P buffer 0: no product in flight */
        if (first) { /* V resident for the whole block from here on */
            cp_wait<0>();
            __syncthreads();
            first = false;
        }
        float o[32]; /* O [64 x 64] of the warpgroup: n-tile d at o[4d .. 4d + 3], the m16n8 C layout */
#pragma unroll
        for (int i = 0; i < 32; i++) o[i] = 0.f;
        for (int t = 0; t < b.n_tiles; t++) wgs_tile(b, ent, t, b.sV + (uint32_t)t * AV_TB, o);
        ac_wg::wait<0>();
        ac_wg::reg_fence(o);
        wgs_store(b, o, h, O, ldo);
        __syncwarp();
        ac_wg::bar_sync(1 + b.wg, 128); /* no warp of the warpgroup reads P buffer 0 any more (all waited) */
    }
#endif /* AC_WGMMA */
}

template <int NWG>
__global__ void __launch_bounds__(NWG * 128, 4 / NWG) k_av_topk_wgr(ac_cu_codec c, av_src q, int H, int Hkv,
                                                        const bf16 *__restrict__ V, int ldv, bf16 *__restrict__ O,
                                                        int ldo, int GW) {
#ifdef AC_WGMMA
    extern __shared__ __align__(16) unsigned char smem_raw[];
    wgs_geom b;
    if (!wgs_geom_init(b, c, q, H, Hkv, GW, smem_raw)) return;
    const bf16 *Vg = V + (size_t)b.r0 * ldv + (size_t)b.g * 64;
    auto load_tile = [&](int t) { /* tile t into ring slot t % AV_RING, one commit group (empty past the end) */
        if (t < b.n_tiles) {
            const uint32_t dst = b.sV + (uint32_t)(t % AV_RING) * AV_TB;
            const int j0 = t * 64;
            for (int i = threadIdx.x; i < 64 * 8; i += b.nthr) {
                const int r = i >> 3, cc = i & 7, ok = j0 + r < b.L;
                cp_async16(dst + ac_wg::swz(r, cc), Vg + (size_t)(ok ? j0 + r : 0) * ldv + cc * 8, ok ? 16 : 0);
            }
        }
        cp_commit();
    };
    for (int hp = 0; hp < b.G; hp += GW) {
        const int hh = hp + b.wg, h = b.g * b.G + hh;
        const bool active = hh < b.G; /* warpgroup-uniform */
        __syncthreads(); /* the previous pass's tiles and P buffers are no longer read (all its products waited) */
        for (int t = 0; t < AV_RING - 2; t++) load_tile(t);
        uint32_t ent[16];
        if (active) wgs_entries(b, c, h, ent);
        else
#pragma unroll
            for (int r = 0; r < 16; r++) ent[r] = 0;
        float o[32]; /* O [64 x 64] of the warpgroup: n-tile d at o[4d .. 4d + 3], the m16n8 C layout */
#pragma unroll
        for (int i = 0; i < 32; i++) o[i] = 0.f;
        for (int t = 0; t < b.n_tiles; t++) {
            cp_wait<AV_RING - 3>(); /* this thread's copies of tile t landed (tile t + 1's may be in flight) */
            ac_wg::fence_proxy_async(); /* cp.async wrote through the generic proxy; wgmma reads through the async one */
            __syncthreads(); /* every thread's copies of tile t; every product of tile t - 2 done */
            load_tile(t + AV_RING - 2); /* into tile t - 2's slot */
            if (active) wgs_tile(b, ent, t, b.sV + (uint32_t)(t % AV_RING) * AV_TB, o);
        }
        cp_wait<0>(); /* the empty groups past the end */
        if (active) {
            ac_wg::wait<0>();
            ac_wg::reg_fence(o);
            wgs_store(b, o, h, O, ldo);
        }
    }
#endif /* AC_WGMMA */
}

/* one-time raise of a kernel's dynamic shared-memory limit to the device's opt-in maximum */
static int smem_optin(void) {
    static int v = 0;
    if (!v) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
            cudaGetLastError(), v = 48 * 1024;
    }
    return v;
}

template <typename T> struct is_bf16 { static constexpr bool v = false; };
template <> struct is_bf16<bf16> { static constexpr bool v = true; };

/* cudaFuncSetAttribute(kern, a, v) the first time only: `set` is the caller's flag for that kernel */
template <typename K> static int attr_once(int &set, K *kern, cudaFuncAttribute a, int v) {
    if (!set) {
        AC_CU(cudaFuncSetAttribute(kern, a, v));
        set = 1;
    }
    return AC_OK;
}

/* f(std::integral_constant<int, COLS>{}) with COLS = hd / 32: the kernels' column template for head dims
 * 32, 64 and 128; f returns a status */
template <typename F> static int by_cols(int hd, F &&f) {
    if (hd == 32) return f(std::integral_constant<int, 1>{});
    if (hd == 64) return f(std::integral_constant<int, 2>{});
    return f(std::integral_constant<int, 4>{});
}

/* Launch the v3 kernels for head dims 32/64/128 over the sequences of q (gridDim.z of them).
 * Lmax: the longest sequence; rows_max: the most rows of one sequence. The gather kernel, 16 warps a block
 * (8-warp blocks, variant 1, were slower at every shape of runs 19 and 20: removed in session 15): */
template <typename T>
static int launch_smem(const ac_cu_codec &c, const av_src &q, int n_seq, int Lmax, int rows_max, int H, int Hkv,
                       int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st) {
    constexpr int NW = 16, PB = 256; /* PW: pairs per warp and pass: 4 (8 at hd 128: fewer re-stagings) */
    const int G = H / Hkv, ent = NW * 32 * 8, optin = smem_optin();
    const size_t rowb = (size_t)hd * sizeof(T);
    int KT = (int)((optin - ent) / rowb);
    if (KT > Lmax) KT = Lmax;
    if (KT < 1) return ac_err(AC_ERR_UNSUPPORTED, "codec A.V: V rows of %zu bytes exceed shared memory", rowb);
    const size_t smem = ent + (size_t)KT * rowb;
    const int vec = (uintptr_t)v % 16 == 0 && ((size_t)ldv * sizeof(T)) % 16 == 0;
    dim3 grid((rows_max * G + PB - 1) / PB, Hkv, n_seq);
    const int rc = by_cols(hd, [&](auto cols) {
        constexpr int COLS = decltype(cols)::value, PW = COLS == 4 ? 8 : 4;
        static int set = 0;
        const int r = attr_once(set, k_av_smem<T, COLS, NW, PW>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
        if (!r) k_av_smem<T, COLS, NW, PW><<<grid, NW * 32, smem, st>>>(c, q, H, Hkv, v, ldv, out, ldo, KT, PB, vec);
        return r;
    });
    if (rc) return rc;
    AC_CU_LAUNCH();
    return AC_OK;
}

/* The v4 top-k kernel (variant 4; the caller checked bf16 V, top-k rows of k <= 32, 16-byte aligned V
 * rows): V rows through L1, shared memory for the warps' lists only. */
static int launch_topk(const ac_cu_codec &c, const av_src &q, int n_seq, int rows_max, int H, int Hkv, int hd,
                       const bf16 *v, int ldv, bf16 *out, int ldo, cudaStream_t st) {
    constexpr int NW = 8, LIST = NW * 32 * 8;
    const int G = H / Hkv, PW = hd == 128 ? 8 : 16, PB = NW * PW; /* hd 128: 8 pairs a warp (registers) */
    dim3 grid((rows_max * G + PB - 1) / PB, Hkv, n_seq);
    const int rc = by_cols(hd, [&](auto cols) {
        constexpr int COLS = decltype(cols)::value, PW = COLS == 4 ? 8 : 16;
        static int set = 0; /* as little shared memory as the blocks need: the rest is L1 */
        const int r = attr_once(set, k_av_topk<COLS, NW, PW>, cudaFuncAttributePreferredSharedMemoryCarveout, 10);
        if (!r) k_av_topk<COLS, NW, PW><<<grid, NW * 32, LIST, st>>>(c, q, H, Hkv, v, ldv, out, ldo);
        return r;
    });
    if (rc) return rc;
    AC_CU_LAUNCH();
    return AC_OK;
}

/* The tensor-core top-k kernel (variant 5; the caller checked bf16 V in 16-byte aligned rows, out in
 * bf16 pairs, k <= 32): 2 m-tiles x up to 4 heads of the group per block, as the q8 kernel */
static int launch_topk_mma(const ac_cu_codec &c, const av_src &q, int n_seq, int rows_max, int H, int Hkv, int hd,
                           const bf16 *v, int ldv, bf16 *out, int ldo, cudaStream_t st) {
    constexpr int MT = 2;
    const int G = H / Hkv, GW = G < 8 / MT ? G : 8 / MT, thr = MT * GW * 32;
    const size_t smem = (size_t)2 * 64 * (hd + 8) * sizeof(bf16) + (size_t)MT * GW * 16 * (64 + 8) * sizeof(bf16);
    dim3 grid((rows_max + 16 * MT - 1) / (16 * MT), Hkv, n_seq);
    if (hd == 32) k_av_topk_mma<32, MT><<<grid, thr, smem, st>>>(c, q, H, Hkv, v, ldv, out, ldo, GW);
    else if (hd == 64) k_av_topk_mma<64, MT><<<grid, thr, smem, st>>>(c, q, H, Hkv, v, ldv, out, ldo, GW);
    else {
        static int set = 0; /* hd 128: 52 KB with 4 heads a block, past the default 48 KB */
        const int most = 2 * 64 * (128 + 8) * 2 + 8 * 16 * (64 + 8) * 2; /* 4 heads a block */
        if (int rc = attr_once(set, k_av_topk_mma<128, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, most)) return rc;
        k_av_topk_mma<128, MT><<<grid, thr, smem, st>>>(c, q, H, Hkv, v, ldv, out, ldo, GW);
    }
    AC_CU_LAUNCH();
    return AC_OK;
}

/* One launch of a wgmma top-k kernel (variants 8, 12-14): blocks of 64 rows x kv heads x sequences, GW
 * warpgroups each; `set`: the caller's once-per-kernel flag for the shared-memory limit (most bytes) */
typedef void (*wg_kernel)(ac_cu_codec, av_src, int, int, const bf16 *, int, bf16 *, int, int);
static int launch_wg_grid(wg_kernel kern, int &set, size_t most, size_t smem, const ac_cu_codec &c, const av_src &q,
                          int n_seq, int rows_max, int H, int Hkv, int GW, const bf16 *v, int ldv, bf16 *out, int ldo,
                          cudaStream_t st) {
    if (int rc = attr_once(set, kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)most)) return rc;
    dim3 grid((rows_max + 63) / 64, Hkv, n_seq);
    kern<<<grid, GW * 128, smem, st>>>(c, q, H, Hkv, v, ldv, out, ldo, GW);
    AC_CU_LAUNCH();
    return AC_OK;
}

/* Variant 8 (the caller checked what variant 5 needs, hd 64, and that the device runs the sm_90a
 * code): NWG warpgroups a block at most */
template <int NWG>
static int launch_topk_wg(const ac_cu_codec &c, const av_src &q, int n_seq, int rows_max, int H, int Hkv,
                          const bf16 *v, int ldv, bf16 *out, int ldo, cudaStream_t st) {
    const int G = H / Hkv, GW = G < NWG ? G : NWG;
    static int set = 0;
    return launch_wg_grid(k_av_topk_wg<NWG>, set, 1024 + 2 * 64 * 128 + (size_t)NWG * 4 * 16 * (64 + 8) * sizeof(bf16),
                          1024 + 2 * 64 * 128 + (size_t)GW * 4 * 16 * (64 + 8) * sizeof(bf16), c, q, n_seq, rows_max, H,
                          Hkv, GW, v, ldv, out, ldo, st);
}

/* Variant 12 (the caller checked what variant 8 needs and Lmax <= AV_WGS_MAX_L): NWG warpgroups a block,
 * P buffers and every V tile of the longest sequence */
template <int NWG>
static int launch_topk_wgs(const ac_cu_codec &c, const av_src &q, int n_seq, int Lmax, int rows_max, int H, int Hkv,
                           const bf16 *v, int ldv, bf16 *out, int ldo, cudaStream_t st) {
    const int G = H / Hkv, GW = G < NWG ? G : NWG;
    static int set = 0;
    return launch_wg_grid(k_av_topk_wgs<NWG>, set, 1024 + (size_t)NWG * 2 * 64 * 128 + (size_t)((AV_WGS_MAX_L + 63) / 64) * 64 * 128,
                          1024 + (size_t)GW * 2 * 64 * 128 + (size_t)((Lmax + 63) / 64) * 64 * 128, c, q, n_seq, rows_max,
                          H, Hkv, GW, v, ldv, out, ldo, st);
}

/* Variants 13 and 14 (the caller checked what variant 8 needs): NWG warpgroups a block, a ring of V tiles */
template <int NWG>
static int launch_topk_wgr(const ac_cu_codec &c, const av_src &q, int n_seq, int rows_max, int H, int Hkv,
                           const bf16 *v, int ldv, bf16 *out, int ldo, cudaStream_t st) {
    const int G = H / Hkv, GW = G < NWG ? G : NWG;
    static int set = 0;
    return launch_wg_grid(k_av_topk_wgr<NWG>, set, 1024 + (size_t)NWG * 2 * 64 * 128 + (size_t)AV_RING * 64 * 128,
                          1024 + (size_t)GW * 2 * 64 * 128 + (size_t)AV_RING * 64 * 128, c, q, n_seq, rows_max, H, Hkv, GW,
                          v, ldv, out, ldo, st);
}

/* Either kernel. variant (benchmarks; 0 everywhere else): 2 q8/q4 rows by the gather kernel (CUDA cores)
 * instead of the tensor cores, 4 top-k rows by the v4 gather (V read through L1), 5 top-k rows on the tensor
 * cores (k_av_topk_mma), 8 variant 5 on wgmma with two warpgroups a block (hd 64 on sm_90a; elsewhere as 5),
 * where they apply, else as 0; 11: v3 (the default before session 14); 12: 8 with every V tile staged once
 * and the P tiles double-buffered in shared memory (sequences of at most 1024 keys; longer as 8); 13, 14:
 * 12's P pipeline over a ring of four V tiles shared by 2 / 4 warpgroups (heads), any length. Any other
 * number runs as 0, among them those removed in session 15 (slower than another variant at every shape of
 * runs 19 and 20): 1 the gather kernel in 8-warp blocks, 3 the v4 gather with V staged in shared memory,
 * 6 q8/q4 rows with the next tile's map words prefetched, 7 variant 8 with four warpgroups a block, 9 and 10
 * variants 4 and 3 with one packed word an entry in the gather's list. */
constexpr int AV_WG_MAX_L = 1024; /* the default's switch from variant 8 to 4 (run 20: between 512 and 2048) */

template <typename T>
static int launch_v3(const ac_cu_codec &c, const av_src &q, int n_seq, int Lmax, int rows_max, int H, int Hkv, int hd,
                     const T *v, int ldv, T *out, int ldo, cudaStream_t st, int variant = 0) {
    const int G = H / Hkv;
    switch (variant) { /* the variants there are; any other number runs the default */
    case 2: case 4: case 5: case 8: case 11: case 12: case 13: case 14: break;
    default: variant = 0;
    }
    if constexpr (is_bf16<T>::v) {
        /* top-k rows: the v4 gather through L1 (run 19: 179 / 176 / 174 us against v3's 232 / 292 / 671 at
           Llama-1B 512 x 16 / 2048 x 4 / 8192 x 1, correct in all 9297 checks); where it does not apply
           (k > 32, V rows not 16-byte aligned) the launch below falls through to v3 as before */
        /* run 20 (H100, one Llama-1B layer, µs): the wgmma kernel with two blocks a SM (variant 8) 103.5 /
           239.8 / 740.9 at 512 x 16 / 2048 x 4 / 8192 x 1, the gather 175.6 / 175.6 / 172.3: variant 8 while
           every sequence of the launch is at most AV_WG_MAX_L keys long (hd 64 on sm_90a), else the gather */
        if (!variant && c.kind == 4)
            variant = hd == 64 && Lmax <= AV_WG_MAX_L && (uintptr_t)out % 4 == 0 && ldo % 2 == 0 &&
                              ac_cu_wgmma_available()
                          ? 8
                          : 4;
        else if (variant == 11) variant = 0; /* v3 as it was the default (benchmarks) */
        if ((variant == 5 || variant == 8 || variant >= 12) && c.kind == 4 && c.topk <= 32 && (uintptr_t)v % 16 == 0 &&
            ((size_t)ldv * 2) % 16 == 0 && (uintptr_t)out % 4 == 0 && ldo % 2 == 0) {
            if ((variant == 13 || variant == 14) && hd == 64 && ac_cu_wgmma_available())
                return variant == 13
                           ? launch_topk_wgr<2>(c, q, n_seq, rows_max, H, Hkv, (const bf16 *)v, ldv, (bf16 *)out, ldo, st)
                           : launch_topk_wgr<4>(c, q, n_seq, rows_max, H, Hkv, (const bf16 *)v, ldv, (bf16 *)out, ldo, st);
            if (variant == 12 && hd == 64 && Lmax <= AV_WGS_MAX_L && ac_cu_wgmma_available())
                return launch_topk_wgs<2>(c, q, n_seq, Lmax, rows_max, H, Hkv, (const bf16 *)v, ldv, (bf16 *)out, ldo, st);
            if (variant >= 8 && hd == 64 && ac_cu_wgmma_available())
                return launch_topk_wg<2>(c, q, n_seq, rows_max, H, Hkv, (const bf16 *)v, ldv, (bf16 *)out, ldo, st);
            return launch_topk_mma(c, q, n_seq, rows_max, H, Hkv, hd, (const bf16 *)v, ldv, (bf16 *)out, ldo, st);
        }
        /* v4 top-k gather (variant 4): bf16 V in 16-byte aligned rows, k <= 32, V offsets in 32 bits */
        if (variant == 4 && c.kind == 4 && c.topk <= 32 && (uintptr_t)v % 16 == 0 && ((size_t)ldv * 2) % 16 == 0 &&
            (size_t)Lmax * (size_t)ldv < ((size_t)1 << 32))
            return launch_topk(c, q, n_seq, rows_max, H, Hkv, hd, (const bf16 *)v, ldv, (bf16 *)out, ldo, st);
        /* q8 and q4 rows: the tensor-core kernel when V rows allow 16-byte copies and out bf16 pairs */
        if ((c.kind == 2 || c.kind == 3) && variant != 2 && (uintptr_t)v % 16 == 0 && ((size_t)ldv * 2) % 16 == 0 && (uintptr_t)out % 4 == 0 &&
            ldo % 2 == 0) {
            constexpr int MT = 2;
            const int GW = G < 8 / MT ? G : 8 / MT, thr = MT * GW * 32;
            const size_t smem = (size_t)2 * 64 * (hd + 8) * sizeof(bf16);
            dim3 grid((rows_max + 16 * MT - 1) / (16 * MT), Hkv, n_seq);
#define AC_AV_Q8(HD, Q4) \
    k_av_q8_mma<HD, MT, Q4><<<grid, thr, smem, st>>>(c, q, H, Hkv, (const bf16 *)v, ldv, (bf16 *)out, ldo, GW)
            const bool q4 = c.kind == 3;
            if (hd == 32) q4 ? AC_AV_Q8(32, true) : AC_AV_Q8(32, false);
            else if (hd == 64) q4 ? AC_AV_Q8(64, true) : AC_AV_Q8(64, false);
            else q4 ? AC_AV_Q8(128, true) : AC_AV_Q8(128, false);
#undef AC_AV_Q8
            AC_CU_LAUNCH();
            return AC_OK;
        }
    }
    return launch_smem<T>(c, q, n_seq, Lmax, rows_max, H, Hkv, hd, v, ldv, out, ldo, st);
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
    if (hd == 32 || hd == 64 || hd == 128) { /* the v3 kernels */
        av_src q = {};
        q.one = (const unsigned char *)maps, q.one_mb = map_bytes, q.L1 = L, q.rows1 = n_rows;
        return launch_v3<T>(*c, q, 1, L, n_rows, H, Hkv, hd, v, ldv, out, ldo, st);
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

template <typename T>
int ac_cu_codec_av_seqs(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, int s0, int n_seq, int Lmax,
                        int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st) {
    return ac_cu_codec_av_seqs_variant<T>(c, d_maps, d_cu, s0, n_seq, Lmax, H, Hkv, hd, v, ldv, out, ldo, st, 0);
}

template <typename T>
int ac_cu_codec_av_seqs_variant(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, int s0, int n_seq,
                                int Lmax, int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st,
                                int variant) {
    if (!c || c->kind < 0 || c->kind > 4 || (c->kind == 4 && c->topk < 1) || !d_maps || !d_cu || s0 < 0 || n_seq < 0 ||
        n_seq > 65535 || Lmax < 1 || Lmax > 65536 || H <= 0 || Hkv <= 0 || H % Hkv || !(hd == 32 || hd == 64 || hd == 128))
        return ac_err(AC_ERR_ARG, "codec A.V: invalid arguments (%d sequences, L %d, heads %d/%d, head dim %d)", n_seq,
                      Lmax, H, Hkv, hd);
    if (!n_seq) return AC_OK;
    av_src q = {};
    q.tab = (const unsigned char *const *)d_maps, q.cu = d_cu, q.s0 = s0;
    return launch_v3<T>(*c, q, n_seq, Lmax, Lmax, H, Hkv, hd, v, ldv, out, ldo, st, variant);
}

template <typename T>
int ac_cu_codec_av_seqs_rows(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, const int *d_rows, int s0,
                             int n_seq, int Lmax, int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo,
                             cudaStream_t st) {
    if (!c || c->kind < 0 || c->kind > 4 || (c->kind == 4 && c->topk < 1) || !d_maps || !d_cu || !d_rows || s0 < 0 ||
        n_seq < 0 || n_seq > 65535 || Lmax < 1 || Lmax > 65536 || H <= 0 || Hkv <= 0 || H % Hkv ||
        !(hd == 32 || hd == 64 || hd == 128))
        return ac_err(AC_ERR_ARG, "codec A.V: invalid arguments (%d sequences, L %d, heads %d/%d, head dim %d)", n_seq,
                      Lmax, H, Hkv, hd);
    if (!n_seq) return AC_OK;
    av_src q = {};
    q.tab = (const unsigned char *const *)d_maps, q.cu = d_cu, q.nrows = d_rows, q.s0 = s0;
    return launch_v3<T>(*c, q, n_seq, Lmax, Lmax, H, Hkv, hd, v, ldv, out, ldo, st, 0);
}

template int ac_cu_codec_av_seqs_rows<float>(const ac_cu_codec *, const void *const *, const int *, const int *, int, int,
                                             int, int, int, int, const float *, int, float *, int, cudaStream_t);
template int ac_cu_codec_av_seqs_rows<bf16>(const ac_cu_codec *, const void *const *, const int *, const int *, int, int,
                                            int, int, int, int, const bf16 *, int, bf16 *, int, cudaStream_t);
template int ac_cu_codec_av_seqs_variant<float>(const ac_cu_codec *, const void *const *, const int *, int, int, int,
                                                int, int, int, const float *, int, float *, int, cudaStream_t, int);
template int ac_cu_codec_av_seqs_variant<bf16>(const ac_cu_codec *, const void *const *, const int *, int, int, int,
                                               int, int, int, const bf16 *, int, bf16 *, int, cudaStream_t, int);
template int ac_cu_codec_av_seqs<float>(const ac_cu_codec *, const void *const *, const int *, int, int, int, int, int,
                                        int, const float *, int, float *, int, cudaStream_t);
template int ac_cu_codec_av_seqs<bf16>(const ac_cu_codec *, const void *const *, const int *, int, int, int, int, int,
                                       int, const bf16 *, int, bf16 *, int, cudaStream_t);
template int ac_cu_codec_av<float>(const ac_cu_codec *, const void *, size_t, int, int, int, int, int, const float *,
                                   int, float *, int, cudaStream_t);
template int ac_cu_codec_av<bf16>(const ac_cu_codec *, const void *, size_t, int, int, int, int, int, const bf16 *,
                                  int, bf16 *, int, cudaStream_t);
