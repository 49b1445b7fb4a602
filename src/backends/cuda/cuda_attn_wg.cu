/* cuda_attn_wg.cu — the fused attention on Hopper's warpgroup MMA (wgmma, sm_90a), head dims 64 and 128.
 *
 * The same algorithm as k_flash (cuda_attn.cu: online softmax in the log2 domain, one FFMA and one
 * MUFU.EX2 per score, O rescaled only when a row's max moved, causal blocks stop at their diagonal,
 * longest blocks first, GQA without expanding K/V, given prefix rows), with the two products on
 * wgmma instead of mma.sync:
 *   S [64 x BN] = Q [64 x D] . K^T      both operands read by the tensor cores from shared memory
 *                                        (128B-swizzled tiles, K-major), no ldmatrix;
 *   O [64 x D] += P [64 x BN] . V        P from registers (the S accumulators re-packed to bf16:
 *                                        wgmma's accumulator and A-fragment layouts are mma.sync's,
 *                                        warp w of the group holding rows 16w .. 16w + 15), V from
 *                                        shared memory as an MN-major operand (the same tile bytes).
 * Head dim D = 64 or 128: a tile of rows of D bf16 is kept as D / 64 column blocks, each a 128B-swizzled
 * tile of rows of 64 (block c holds columns 64c .. 64c + 63); a k-step of S reads the block its 16
 * columns are in, and O's columns 64c .. are the product with block c of V (one m64n64 per block).
 * Per block: NWG warpgroups x 64 query rows of one (sequence, head), K/V tiles of BN keys two stages
 * deep through cp.async (the Q tile with the first). A warpgroup skips (uniformly) the causal tiles
 * wholly after its last row and every tile when its rows are past the sequence. */
#include "cuda_attn.h"
#include "cuda_attn_wg.h"
#include "cuda_ptx.h"
#include "cuda_pv_tile.h"
#include "cuda_wgmma.h"

#include <math.h>

namespace {

using namespace ac_ptx;

#ifdef AC_WGMMA
/* One block's place: sequence s, head h (kv head g), query rows q0 .. q0 + 64 NWG - 1, this thread's
 * warpgroup / warp / rows, and the shared tiles (K and V stage st at sK / sV + st TB). */
template <int NWG, int BN, int D> struct wg_block {
    static_assert(D == 64 || D == 128, "head dim 64 or 128");
    static constexpr int HD = D, BM = 64 * NWG, NCB = D / 64; /* NCB column blocks of 64 */
    static constexpr int CSH = D == 64 ? 3 : 4;                 /* log2 of the 16-byte chunks a row */
    static constexpr uint32_t QCB = BM * 128, KCB = BN * 128; /* bytes of a column block of Q [BM][64], K or V [BN][64] */
    static constexpr uint32_t QB = QCB * NCB, TB = KCB * NCB;  /* bytes: Q tile [BM][D], a K or V tile [BN][D] */
    uint32_t sQ, sK, sV;
    int start, n, P, L, q0, g, wg, tq, wrow, row0, row1, wg_last, n_tiles;
    bool wg_rows; /* the warpgroup has rows of this sequence */
    const bf16 *Kg, *Vg, *KPg, *VPg;
};

/* Fill b; false when the block has no rows (it returns before any barrier). */
template <int NWG, int BN, int D, bool PFX>
__device__ __forceinline__ bool wg_setup(wg_block<NWG, BN, D> &b, unsigned char *smem_raw, const bf16 *K, const bf16 *V,
                                         const int *cu, int ldk, int H, int Hkv, int causal, const int *cp,
                                         const bf16 *KP, const bf16 *VP, int ldp) {
    using B = wg_block<NWG, BN, D>;
    b.sQ = (smem_u32(smem_raw) + 1023u) & ~1023u; /* swizzle atoms start on 1024-byte boundaries */
    b.sK = b.sQ + B::QB, b.sV = b.sK + 2 * B::TB;
    const int s = blockIdx.z, h = blockIdx.y;
    b.g = h / (H / Hkv);
    b.start = cu[s], b.n = cu[s + 1] - b.start;
    b.P = PFX ? cp[s + 1] - cp[s] : 0;
    b.L = b.P + b.n;
    b.q0 = (gridDim.x - 1 - blockIdx.x) * B::BM; /* longest (causal) blocks first */
    if (b.q0 >= b.n) return false;
    b.wg = threadIdx.x >> 7, b.tq = threadIdx.x & 3;
    b.wrow = b.q0 + b.wg * 64 + ((threadIdx.x >> 5) & 3) * 16; /* this warp's first row */
    b.row0 = b.wrow + ((threadIdx.x & 31) >> 2), b.row1 = b.row0 + 8; /* this thread's rows (position P + row) */
    b.wg_last = b.q0 + b.wg * 64 + 63;
    b.wg_rows = b.q0 + b.wg * 64 < b.n;
    const int kv_end = causal ? min(b.L, b.P + b.q0 + B::BM) : b.L;
    b.n_tiles = (kv_end + BN - 1) / BN;
    b.Kg = K + (size_t)b.start * ldk + (size_t)b.g * B::HD, b.Vg = V + (size_t)b.start * ldk + (size_t)b.g * B::HD;
    b.KPg = b.VPg = nullptr;
    if (PFX) b.KPg = KP + (size_t)cp[s] * ldp + (size_t)b.g * B::HD, b.VPg = VP + (size_t)cp[s] * ldp + (size_t)b.g * B::HD;
    return true;
}

/* the Q tile, rows q0 .. q0 + BM - 1 of head h (zero past n) */
template <int NWG, int BN, int D>
__device__ __forceinline__ void wg_load_q(const wg_block<NWG, BN, D> &b, const bf16 *Q, int ldq) {
    using B = wg_block<NWG, BN, D>;
    const bf16 *Qg = Q + (size_t)b.start * ldq + (size_t)blockIdx.y * D;
    for (int i = threadIdx.x; i < B::BM * (D / 8); i += NWG * 128) {
        const int r = i >> B::CSH, c = i & (D / 8 - 1), ok = b.q0 + r < b.n; /* 16-byte chunk c of row r */
        cp_async16(b.sQ + (c >> 3) * B::QCB + ac_wg::swz(r, c & 7), Qg + (size_t)(ok ? b.q0 + r : 0) * ldq + c * 8,
                   ok ? 16 : 0);
    }
}

/* rows of keys t BN .. + BN - 1 of K (which 0) or V (1) into the swizzled tile at dst (zero past L) */
template <int NWG, int BN, int D, bool PFX>
__device__ __forceinline__ void wg_load_rows(const wg_block<NWG, BN, D> &b, int t, uint32_t dst, int which, int ldk,
                                             int ldp) {
    using B = wg_block<NWG, BN, D>;
    const int j0 = t * BN;
    const bf16 *own = which ? b.Vg : b.Kg, *given = which ? b.VPg : b.KPg;
    for (int i = threadIdx.x; i < BN * (D / 8); i += NWG * 128) {
        const int r = i >> B::CSH, c = i & (D / 8 - 1), key = j0 + r, ok = key < b.L;
        const uint32_t at = dst + (c >> 3) * B::KCB + ac_wg::swz(r, c & 7);
        if (PFX && key < b.P) cp_async16(at, given + (size_t)key * ldp + c * 8, 16);
        else cp_async16(at, own + (size_t)(ok ? key - b.P : 0) * ldk + c * 8, ok ? 16 : 0);
    }
}

/* K_t and V_t into stage st (they share a stage; the argument order is cp_next_tile's) */
template <int NWG, int BN, int D, bool PFX>
__device__ __forceinline__ void wg_load_kv(const wg_block<NWG, BN, D> &b, int ldk, int ldp, int t, int st) {
    using B = wg_block<NWG, BN, D>;
    wg_load_rows<NWG, BN, D, PFX>(b, t, b.sK + st * B::TB, 0, ldk, ldp);
    wg_load_rows<NWG, BN, D, PFX>(b, t, b.sV + st * B::TB, 1, ldk, ldp);
}

/* S = Q K_t^T for the warpgroup's 64 rows (stage st), issued and committed (not waited) */
template <int NWG, int BN, int D>
__device__ __forceinline__ void wg_scores(const wg_block<NWG, BN, D> &b, int st, float (&sc)[BN / 2]) {
    using B = wg_block<NWG, BN, D>;
#pragma unroll
    for (int i = 0; i < BN / 2; i++) sc[i] = 0.f;
    ac_wg::reg_fence(sc);
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) { /* k-steps of 16: column block kc / 4, 32 bytes a step inside it */
        const uint32_t cb = kc >> 2, kin = (kc & 3) * 32;
        const uint64_t da = ac_wg::desc(b.sQ + cb * B::QCB + b.wg * 64 * 128 + kin, 16, 1024);
        const uint64_t db = ac_wg::desc(b.sK + st * B::TB + cb * B::KCB + kin, 16, 1024);
        if constexpr (BN == 64) ac_wg::wgmma_ss_n64(sc, da, db, 1);
        else ac_wg::wgmma_ss_n128(sc, da, db, 1);
    }
    ac_wg::commit();
}

/* O += P V_t (stage st), issued and committed (not waited); O's columns 64c .. 64c + 63 at o[32c ..] */
template <int NWG, int BN, int D>
__device__ __forceinline__ void wg_pv(const wg_block<NWG, BN, D> &b, int st, float (&o)[D / 2],
                                      const uint32_t (&pf)[BN / 16][4]) {
    using B = wg_block<NWG, BN, D>;
    ac_wg::wgmma_pv<BN / 16, B::NCB>(o, pf, b.sV + st * B::TB, B::KCB);
    ac_wg::commit();
}

/* The online softmax of one tile of raw scores (keys j0 ..): masks keys past L and (causal) past the
 * row's position, moves the running maxima m0, m1 (this thread's two rows), writes P as the A
 * fragments of the k-steps of 16 keys, and returns the rescale factors of the old O and l (1 where
 * no row of the warp moved its max: *moved false) and this tile's row sums. */
template <int NWG, int BN, int D>
__device__ __forceinline__ void wg_softmax(const wg_block<NWG, BN, D> &b, int j0, int causal, float scale_log2,
                                           float (&sc)[BN / 2], uint32_t (&pf)[BN / 16][4], float &m0, float &m1,
                                           float &a0, float &a1, float &s0, float &s1, bool &moved) {
    constexpr int NT = BN / 8;
    const bool need_mask = j0 + BN > b.L || (causal && j0 + BN - 1 > b.P + b.wrow);
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        if (need_mask) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = j0 + nt * 8 + 2 * b.tq + (e & 1), pos = b.P + (e < 2 ? b.row0 : b.row1);
                if (key >= b.L || (causal && key > pos)) sc[4 * nt + e] = -INFINITY;
            }
        }
        mx0 = fmaxf(mx0, fmaxf(sc[4 * nt], sc[4 * nt + 1]));
        mx1 = fmaxf(mx1, fmaxf(sc[4 * nt + 2], sc[4 * nt + 3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    /* a row with every key masked so far keeps max -inf and uses base 0 (its exponentials are 0) */
    const float b0 = mx0 == -INFINITY ? 0.f : mx0 * scale_log2, b1 = mx1 == -INFINITY ? 0.f : mx1 * scale_log2;
    moved = __any_sync(0xffffffffu, mx0 != m0 || mx1 != m1); /* warp-uniform */
    a0 = a1 = 1.f;
    if (moved) a0 = ex2_ftz(fmaf(m0, scale_log2, -b0)), a1 = ex2_ftz(fmaf(m1, scale_log2, -b1)); /* m = -inf: 0 */
    m0 = mx0, m1 = mx1;
    s0 = s1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const float p0 = ex2_ftz(fmaf(sc[4 * nt], scale_log2, -b0));
        const float p1 = ex2_ftz(fmaf(sc[4 * nt + 1], scale_log2, -b0));
        const float p2 = ex2_ftz(fmaf(sc[4 * nt + 2], scale_log2, -b1));
        const float p3 = ex2_ftz(fmaf(sc[4 * nt + 3], scale_log2, -b1));
        s0 += p0 + p1, s1 += p2 + p3;
        pf[nt >> 1][(nt & 1) * 2] = pack_bf16(p0, p1);
        pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
    }
}

template <int N> __device__ __forceinline__ void wg_rescale(float (&o)[N], float a0, float a1) {
#pragma unroll
    for (int d = 0; d < N / 4; d++) o[4 * d] *= a0, o[4 * d + 1] *= a0, o[4 * d + 2] *= a1, o[4 * d + 3] *= a1;
}

/* O / l to this thread's rows (those of the sequence) of head h */
template <int NWG, int BN, int D>
__device__ __forceinline__ void wg_store(const wg_block<NWG, BN, D> &b, const float (&o)[D / 2], float l0, float l1,
                                         bf16 *O, int ldo) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0 ? 1.f / l0 : 0.f, i1 = l1 > 0 ? 1.f / l1 : 0.f;
    bf16 *o0 = O + (size_t)(b.start + b.row0) * ldo + (size_t)blockIdx.y * D;
    bf16 *o1 = O + (size_t)(b.start + b.row1) * ldo + (size_t)blockIdx.y * D;
#pragma unroll
    for (int d = 0; d < D / 8; d++) { /* n-tile d: columns 8d .. (o[32c ..] = block c = n-tiles 8c ..) */
        const int c = d * 8 + 2 * b.tq;
        if (b.row0 < b.n) *reinterpret_cast<uint32_t *>(o0 + c) = pack_bf16(o[4 * d] * i0, o[4 * d + 1] * i0);
        if (b.row1 < b.n) *reinterpret_cast<uint32_t *>(o1 + c) = pack_bf16(o[4 * d + 2] * i1, o[4 * d + 3] * i1);
    }
}
#endif /* AC_WGMMA */

#define AC_WG_PARAMS                                                                                           \
    const bf16 *__restrict__ Q, const bf16 *__restrict__ K, const bf16 *__restrict__ V, bf16 *__restrict__ O,  \
        const int *__restrict__ cu, int ldq, int ldk, int ldo, int H, int Hkv, int causal, float scale_log2,    \
        const int *__restrict__ cp, const bf16 *__restrict__ KP, const bf16 *__restrict__ VP, int ldp

/* Plain: per tile, S (wait), softmax, P V (wait). K_t and V_t share a stage; tile t + 1 loads meanwhile. */
/* hd 64 with 2 warpgroups: at most 128 registers, so two blocks share an SM (at 132, one: 1.5x slower, run 19) */
template <int NWG, int BN, int D, bool PFX>
__global__ void __launch_bounds__(NWG * 128, NWG == 2 && D == 64 ? 2 : 1) k_flash_wg(AC_WG_PARAMS) {
#ifdef AC_WGMMA
    extern __shared__ unsigned char smem_raw[];
    wg_block<NWG, BN, D> b;
    if (!wg_setup<NWG, BN, D, PFX>(b, smem_raw, K, V, cu, ldk, H, Hkv, causal, cp, KP, VP, ldp)) return;
    float o[D / 2]; /* O [64 x D] of the warpgroup: this thread's n-tile d at o[4d .. 4d + 3] */
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    wg_load_q(b, Q, ldq);
    wg_load_kv<NWG, BN, D, PFX>(b, ldk, ldp, 0, 0);
    cp_commit(); /* group 0: the Q tile and the first K/V tile */
    for (int t = 0; t < b.n_tiles; t++) {
        cp_next_tile(t, b.n_tiles, wg_load_kv<NWG, BN, D, PFX>, b, ldk, ldp);
        ac_wg::fence_proxy_async(); /* cp.async wrote through the generic proxy; wgmma reads through the async one */
        __syncthreads();
        const int j0 = t * BN, st = t & 1;
        if (b.wg_rows && (!causal || j0 <= b.P + b.wg_last)) { /* warpgroup-uniform */
            float sc[BN / 2];                                   /* S [64 x BN]: n-tile nt at sc[4nt .. 4nt + 3] */
            uint32_t pf[BN / 16][4];
            ac_wg::fence();
            wg_scores(b, st, sc);
            ac_wg::wait<0>();
            ac_wg::reg_fence(sc);
            float a0, a1, s0, s1;
            bool moved;
            wg_softmax(b, j0, causal, scale_log2, sc, pf, m0, m1, a0, a1, s0, s1, moved);
            l0 = l0 * a0 + s0, l1 = l1 * a1 + s1;
            if (moved) wg_rescale(o, a0, a1);
            ac_wg::reg_fence(o);
            ac_wg::fence();
            wg_pv(b, st, o, pf);
            ac_wg::wait<0>();
            ac_wg::reg_fence(o);
        }
        __syncthreads(); /* the next iteration's load overwrites this stage */
    }
    wg_store(b, o, l0, l1, O, ldo);
#endif /* AC_WGMMA */
}

/* Pipelined (variants WGP*): inside a warpgroup the tensor cores run while the softmax does. Iteration t
 * issues S_t = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S_t only, computes P_t (the
 * exponentials: the MUFU-bound part) while P_{t-1} V_{t-1} still runs, then waits for it and rescales O.
 * K and V tiles therefore live one iteration apart: iteration t loads K_{t+1} and V_t (one cp.async group)
 * while it reads K_t and V_{t-1}; P lives in two register sets (an in-flight wgmma reads its A
 * registers until it completes). */
template <int NWG, int BN, int D, bool PFX>
__global__ void __launch_bounds__(NWG * 128) k_flash_wgp(AC_WG_PARAMS) {
#ifdef AC_WGMMA
    extern __shared__ unsigned char smem_raw[];
    wg_block<NWG, BN, D> b;
    if (!wg_setup<NWG, BN, D, PFX>(b, smem_raw, K, V, cu, ldk, H, Hkv, causal, cp, KP, VP, ldp)) return;
    constexpr uint32_t TB = wg_block<NWG, BN, D>::TB;
    auto active = [&](int t) { return b.wg_rows && (!causal || t * BN <= b.P + b.wg_last); }; /* warpgroup-uniform */
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    uint32_t pf[BN / 16][4], pn[BN / 16][4]; /* P_{t-1} (read by the in-flight product), P_t (being made) */
    wg_load_q(b, Q, ldq);
    wg_load_rows<NWG, BN, D, PFX>(b, 0, b.sK, 0, ldk, ldp);
    cp_commit(); /* group 0: Q, K_0 */
    for (int t = 0; t <= b.n_tiles; t++) { /* t = n_tiles: only the last P V */
        if (t + 1 < b.n_tiles) wg_load_rows<NWG, BN, D, PFX>(b, t + 1, b.sK + ((t + 1) & 1) * TB, 0, ldk, ldp);
        if (t < b.n_tiles) wg_load_rows<NWG, BN, D, PFX>(b, t, b.sV + (t & 1) * TB, 1, ldk, ldp);
        cp_commit(); /* group t + 1: K_{t+1}, V_t */
        if (t < b.n_tiles) cp_wait<1>(); /* K_t and V_{t-1} are in the groups before */
        else cp_wait<0>();
        ac_wg::fence_proxy_async();
        __syncthreads();
        const bool act = t < b.n_tiles && active(t), act_prev = t > 0 && active(t - 1);
        float sc[BN / 2];
        if (act || act_prev) {
            ac_wg::reg_fence(o);
            ac_wg::fence();
        }
        if (act) wg_scores(b, t & 1, sc);
        if (act_prev) wg_pv(b, (t - 1) & 1, o, pf);
        if (act) {
            if (act_prev) ac_wg::wait<1>(); /* S_t done; P_{t-1} V_{t-1} may still run */
            else ac_wg::wait<0>();
            ac_wg::reg_fence(sc);
            float a0, a1, s0, s1;
            bool moved;
            wg_softmax(b, t * BN, causal, scale_log2, sc, pn, m0, m1, a0, a1, s0, s1, moved);
            l0 = l0 * a0 + s0, l1 = l1 * a1 + s1;
            if (act_prev) ac_wg::wait<0>(); /* P_{t-1} V_{t-1} done: O and pf are free */
            ac_wg::reg_fence(o);
            if (moved) wg_rescale(o, a0, a1);
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
#pragma unroll
                for (int e = 0; e < 4; e++) pf[kk][e] = pn[kk][e];
        } else if (act_prev) {
            ac_wg::wait<0>();
            ac_wg::reg_fence(o);
        }
        __syncthreads(); /* every warpgroup is done with K_t and V_{t-1}: the next loads may overwrite them */
    }
    wg_store(b, o, l0, l1, O, ldo);
#endif /* AC_WGMMA */
}

/* 1 where this binary's code for the device holds the wgmma kernels (the sm_90a pass), 0 elsewhere */
__global__ void k_wgmma_probe(int *out) {
#ifdef AC_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

template <int NWG, int BN, int D, bool PFX, bool PIPE>
int launch_wg_t(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    constexpr int BM = 64 * NWG;
    const size_t smem = ((size_t)BM + (size_t)4 * BN) * 2 * D + 1024; /* Q, 2 stages of K and V, + alignment slack */
    void (*kern)(AC_WG_PARAMS);
    if constexpr (PIPE) kern = k_flash_wgp<NWG, BN, D, PFX>;
    else kern = k_flash_wg<NWG, BN, D, PFX>;
    static bool attr_set = false; /* one attribute per instantiation */
    if (!attr_set) {
        AC_CU(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    dim3 grid((a->Lmax + BM - 1) / BM, a->H, a->n_seq);
    kern<<<grid, NWG * 128, smem, st>>>(q, k, v, out, a->cu, a->ldq, a->ldk, a->ldo, a->H, a->Hkv, a->causal,
                                        a->scale * 1.4426950408889634f, a->cp, (const bf16 *)a->kp,
                                        (const bf16 *)a->vp, a->ldp);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <int NWG, int BN, int D = 64, bool PIPE = false>
int launch_wg(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    return a->cp ? launch_wg_t<NWG, BN, D, true, PIPE>(a, q, k, v, out, st)
                 : launch_wg_t<NWG, BN, D, false, PIPE>(a, q, k, v, out, st);
}

} // namespace

int ac_cu_wgmma_available(void) {
    static int known = -1; /* host-side cache: one probe per process */
    if (known >= 0) return known;
    int *d = NULL, h = 0;
    if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) return 0;
    k_wgmma_probe<<<1, 1>>>(d);
    if (cudaGetLastError() == cudaSuccess && cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess)
        known = h;
    else
        known = 0;
    cudaFree(d);
    return known;
}

int ac_cu_flash_attn_wg(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int variant,
                        cudaStream_t st) {
    if (a->hd != 64 && a->hd != 128)
        return ac_err(AC_ERR_UNSUPPORTED, "flash attention (wgmma): head dim %d (64 or 128)", a->hd);
    if (!ac_cu_wgmma_available())
        return ac_err(AC_ERR_UNSUPPORTED, "flash attention variant %d needs wgmma (an sm_90 GPU and the sm_90a build)",
                      variant);
    switch (a->hd * 16 + variant) {
    case 64 * 16 + AC_FLASH_WG1K128: return launch_wg<1, 128>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_WG2: return launch_wg<2, 64>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_WG2K128: return launch_wg<2, 128>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_WGP2: return launch_wg<2, 64, 64, true>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_WGP2K128: return launch_wg<2, 128, 64, true>(a, q, k, v, out, st);
    case 128 * 16 + AC_FLASH_WG1K128: return launch_wg<1, 128, 128>(a, q, k, v, out, st);
    case 128 * 16 + AC_FLASH_WG2: return launch_wg<2, 64, 128>(a, q, k, v, out, st);
    case 128 * 16 + AC_FLASH_WG2K128: return launch_wg<2, 128, 128>(a, q, k, v, out, st);
    default: return ac_err(AC_ERR_ARG, "flash attention (wgmma): variant %d at head dim %d", variant, a->hd);
    }
}
