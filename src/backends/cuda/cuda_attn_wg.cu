/* cuda_attn_wg.cu — the fused attention on Hopper's warpgroup MMA (wgmma, sm_90a), head dim 64.
 *
 * The same algorithm as k_flash (cuda_attn.cu: online softmax in the log2 domain, one FFMA and one
 * MUFU.EX2 per score, O rescaled only when a row's max moved, causal blocks stop at their diagonal,
 * longest blocks first, GQA without expanding K/V, given prefix rows), with the two products on
 * wgmma instead of mma.sync:
 *   S [64 x BN] = Q [64 x 64] . K^T     both operands read by the tensor cores from shared memory
 *                                        (128B-swizzled tiles, K-major), no ldmatrix;
 *   O [64 x 64] += P [64 x BN] . V       P from registers (the S accumulators re-packed to bf16:
 *                                        wgmma's accumulator and A-fragment layouts are mma.sync's,
 *                                        warp w of the group holding rows 16w .. 16w + 15), V from
 *                                        shared memory as an MN-major operand (the same tile bytes).
 * Per block: NWG warpgroups x 64 query rows of one (sequence, head), K/V tiles of BN keys two stages
 * deep through cp.async (the Q tile with the first). A warpgroup skips (uniformly) the causal tiles
 * wholly after its last row and every tile when its rows are past the sequence. */
#include "cuda_attn.h"
#include "cuda_attn_wg.h"
#include "cuda_ptx.h"
#include "cuda_wgmma.h"

#include <math.h>

namespace {

using namespace ac_ptx;

template <int NWG, int BN, bool PFX>
__global__ void __launch_bounds__(NWG * 128)
    k_flash_wg(const bf16 *__restrict__ Q, const bf16 *__restrict__ K, const bf16 *__restrict__ V, bf16 *__restrict__ O,
               const int *__restrict__ cu, int ldq, int ldk, int ldo, int H, int Hkv, int causal, float scale_log2,
               const int *__restrict__ cp, const bf16 *__restrict__ KP, const bf16 *__restrict__ VP, int ldp) {
#ifdef AC_WGMMA
    constexpr int HD = 64, BM = 64 * NWG, NT = BN / 8, DT = HD / 8;
    constexpr uint32_t QB = BM * 128, TB = BN * 128; /* bytes: the Q tile [BM][64], one K or V tile [BN][64] */
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u; /* swizzle atoms start on 1024-byte boundaries */
    const uint32_t sK = sQ + QB, sV = sK + 2 * TB;             /* stage st: K at sK + st TB, V at sV + st TB */

    const int s = blockIdx.z, h = blockIdx.y, g = h / (H / Hkv);
    const int start = cu[s], n = cu[s + 1] - start;
    const int P = PFX ? cp[s + 1] - cp[s] : 0;
    const int L = P + n;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM; /* longest (causal) blocks first */
    if (q0 >= n) return;
    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gr = lane >> 2,
              tq = lane & 3;
    const int wrow = q0 + wg * 64 + warp * 16;         /* this warp's first row */
    const int row0 = wrow + gr, row1 = row0 + 8;       /* this thread's two rows (position P + row) */
    const int wg_first = q0 + wg * 64, wg_last = wg_first + 63;

    {   /* the Q tile, rows q0 .. q0 + BM - 1 (zero past n) */
        const bf16 *Qg = Q + (size_t)start * ldq + (size_t)h * HD;
        for (int i = threadIdx.x; i < BM * 8; i += NWG * 128) {
            const int r = i >> 3, c = i & 7, ok = q0 + r < n;
            cp_async16(sQ + ac_wg::swz(r, c), Qg + (size_t)(ok ? q0 + r : 0) * ldq + c * 8, ok ? 16 : 0);
        }
    }
    const int kv_end = causal ? min(L, P + q0 + BM) : L;
    const int n_tiles = (kv_end + BN - 1) / BN;
    const bf16 *Kg = K + (size_t)start * ldk + (size_t)g * HD, *Vg = V + (size_t)start * ldk + (size_t)g * HD;
    const bf16 *KPg = nullptr, *VPg = nullptr;
    if (PFX) KPg = KP + (size_t)cp[s] * ldp + (size_t)g * HD, VPg = VP + (size_t)cp[s] * ldp + (size_t)g * HD;
    auto load_tile = [&](int t, int st) { /* keys t BN .. + BN - 1 (zero past L) into stage st */
        const int j0 = t * BN;
        const uint32_t ks = sK + st * TB, vs = sV + st * TB;
        for (int i = threadIdx.x; i < BN * 8; i += NWG * 128) {
            const int r = i >> 3, c = i & 7, key = j0 + r, ok = key < L;
            const uint32_t off_s = ac_wg::swz(r, c);
            if (PFX && key < P) {
                const size_t off = (size_t)key * ldp + c * 8;
                cp_async16(ks + off_s, KPg + off, 16);
                cp_async16(vs + off_s, VPg + off, 16);
            } else {
                const size_t off = (size_t)(ok ? key - P : 0) * ldk + c * 8;
                cp_async16(ks + off_s, Kg + off, ok ? 16 : 0);
                cp_async16(vs + off_s, Vg + off, ok ? 16 : 0);
            }
        }
    };

    float o[DT * 4]; /* O [64 x 64] of the warpgroup: this thread's n-tile d at o[4d .. 4d + 3] */
#pragma unroll
    for (int i = 0; i < DT * 4; i++) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const bool wg_rows = wg_first < n; /* the warpgroup has rows of this sequence */

    load_tile(0, 0);
    cp_commit(); /* group 0: the Q tile and the first K/V tile */
    for (int t = 0; t < n_tiles; t++) {
        if (t + 1 < n_tiles) {
            load_tile(t + 1, (t + 1) & 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        ac_wg::fence_proxy_async(); /* cp.async wrote through the generic proxy; wgmma reads through the async one */
        __syncthreads();
        const int j0 = t * BN, st = t & 1;
        if (wg_rows && (!causal || j0 <= P + wg_last)) {
            float sc[NT * 4]; /* S [64 x BN]: this thread's n-tile nt at sc[4nt .. 4nt + 3] */
#pragma unroll
            for (int i = 0; i < NT * 4; i++) sc[i] = 0.f;
            ac_wg::reg_fence(sc);
            ac_wg::fence();
#pragma unroll
            for (int kc = 0; kc < HD / 16; kc++) {
                const uint64_t da = ac_wg::desc(sQ + wg * 64 * 128 + kc * 32, 16, 1024);
                const uint64_t db = ac_wg::desc(sK + st * TB + kc * 32, 16, 1024);
                if constexpr (BN == 64) ac_wg::wgmma_ss_n64(sc, da, db, 1);
                else ac_wg::wgmma_ss_n128(sc, da, db, 1);
            }
            ac_wg::commit();
            ac_wg::wait<0>();
            ac_wg::reg_fence(sc);

            /* mask keys past L and, causal, past the row's position (raw scores: scale > 0 keeps the max) */
            const bool need_mask = j0 + BN > L || (causal && j0 + BN - 1 > P + wrow);
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (need_mask) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int key = j0 + nt * 8 + 2 * tq + (e & 1), pos = P + (e < 2 ? row0 : row1);
                        if (key >= L || (causal && key > pos)) sc[4 * nt + e] = -INFINITY;
                    }
                }
                mx0 = fmaxf(mx0, fmaxf(sc[4 * nt], sc[4 * nt + 1]));
                mx1 = fmaxf(mx1, fmaxf(sc[4 * nt + 2], sc[4 * nt + 3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float b0 = mx0 == -INFINITY ? 0.f : mx0 * scale_log2, b1 = mx1 == -INFINITY ? 0.f : mx1 * scale_log2;
            if (__any_sync(0xffffffffu, mx0 != m0 || mx1 != m1)) { /* some row's max moved: rescale O and l */
                const float a0 = ex2_ftz(fmaf(m0, scale_log2, -b0)), a1 = ex2_ftz(fmaf(m1, scale_log2, -b1));
                l0 *= a0, l1 *= a1;
#pragma unroll
                for (int d = 0; d < DT; d++) o[4 * d] *= a0, o[4 * d + 1] *= a0, o[4 * d + 2] *= a1, o[4 * d + 3] *= a1;
            }
            m0 = mx0, m1 = mx1;
            uint32_t pf[BN / 16][4]; /* P as the A fragments of the k-steps of 16 keys */
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float p0 = ex2_ftz(fmaf(sc[4 * nt], scale_log2, -b0));
                const float p1 = ex2_ftz(fmaf(sc[4 * nt + 1], scale_log2, -b0));
                const float p2 = ex2_ftz(fmaf(sc[4 * nt + 2], scale_log2, -b1));
                const float p3 = ex2_ftz(fmaf(sc[4 * nt + 3], scale_log2, -b1));
                l0 += p0 + p1, l1 += p2 + p3;
                pf[nt >> 1][(nt & 1) * 2] = pack_bf16(p0, p1);
                pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
            }
            ac_wg::reg_fence(o);
            ac_wg::fence();
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++)
                ac_wg::wgmma_rs_n64_tb(o, pf[kk], ac_wg::desc(sV + st * TB + kk * 2048, TB, 1024), 1);
            ac_wg::commit();
            ac_wg::wait<0>();
            ac_wg::reg_fence(o);
        }
        __syncthreads(); /* the next iteration's load overwrites this stage */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0 ? 1.f / l0 : 0.f, i1 = l1 > 0 ? 1.f / l1 : 0.f;
    bf16 *o0 = O + (size_t)(start + row0) * ldo + (size_t)h * HD, *o1 = O + (size_t)(start + row1) * ldo + (size_t)h * HD;
#pragma unroll
    for (int d = 0; d < DT; d++) {
        const int c = d * 8 + 2 * tq;
        if (row0 < n) *reinterpret_cast<uint32_t *>(o0 + c) = pack_bf16(o[4 * d] * i0, o[4 * d + 1] * i0);
        if (row1 < n) *reinterpret_cast<uint32_t *>(o1 + c) = pack_bf16(o[4 * d + 2] * i1, o[4 * d + 3] * i1);
    }
#endif /* AC_WGMMA */
}

/* Pipelined (variants WGP*): inside a warpgroup the tensor cores run while the softmax does. Iteration t
 * issues S_t = Q K_t^T and O += P_{t-1} V_{t-1} back to back, waits for S_t only, computes P_t (the
 * exponentials: the MUFU-bound part) while P_{t-1} V_{t-1} still runs, then waits for it and rescales O.
 * K and V tiles therefore live one iteration apart: iteration t loads K_{t+1} and V_t (one cp.async group)
 * while it reads K_t and V_{t-1}; P lives in two register sets (an in-flight wgmma reads its A
 * registers until it completes). */
template <int NWG, int BN, bool PFX>
__global__ void __launch_bounds__(NWG * 128)
    k_flash_wgp(const bf16 *__restrict__ Q, const bf16 *__restrict__ K, const bf16 *__restrict__ V, bf16 *__restrict__ O,
                const int *__restrict__ cu, int ldq, int ldk, int ldo, int H, int Hkv, int causal, float scale_log2,
                const int *__restrict__ cp, const bf16 *__restrict__ KP, const bf16 *__restrict__ VP, int ldp) {
#ifdef AC_WGMMA
    constexpr int HD = 64, BM = 64 * NWG, NT = BN / 8, DT = HD / 8, KS = BN / 16;
    constexpr uint32_t QB = BM * 128, TB = BN * 128;
    extern __shared__ unsigned char smem_raw[];
    const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;
    const uint32_t sK = sQ + QB, sV = sK + 2 * TB; /* K_t at sK + (t & 1) TB, V_t at sV + (t & 1) TB */

    const int s = blockIdx.z, h = blockIdx.y, g = h / (H / Hkv);
    const int start = cu[s], n = cu[s + 1] - start;
    const int P = PFX ? cp[s + 1] - cp[s] : 0;
    const int L = P + n;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;
    if (q0 >= n) return;
    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gr = lane >> 2,
              tq = lane & 3;
    const int wrow = q0 + wg * 64 + warp * 16, row0 = wrow + gr, row1 = row0 + 8;
    const int wg_first = q0 + wg * 64, wg_last = wg_first + 63;
    {
        const bf16 *Qg = Q + (size_t)start * ldq + (size_t)h * HD;
        for (int i = threadIdx.x; i < BM * 8; i += NWG * 128) {
            const int r = i >> 3, c = i & 7, ok = q0 + r < n;
            cp_async16(sQ + ac_wg::swz(r, c), Qg + (size_t)(ok ? q0 + r : 0) * ldq + c * 8, ok ? 16 : 0);
        }
    }
    const int kv_end = causal ? min(L, P + q0 + BM) : L;
    const int n_tiles = (kv_end + BN - 1) / BN;
    const bf16 *Kg = K + (size_t)start * ldk + (size_t)g * HD, *Vg = V + (size_t)start * ldk + (size_t)g * HD;
    const bf16 *KPg = nullptr, *VPg = nullptr;
    if (PFX) KPg = KP + (size_t)cp[s] * ldp + (size_t)g * HD, VPg = VP + (size_t)cp[s] * ldp + (size_t)g * HD;
    /* rows of keys t BN .. + BN - 1 of K (or V: which = 1) into the shared tile at dst (zero past L) */
    auto load_rows = [&](int t, uint32_t dst, int which) {
        const int j0 = t * BN;
        const bf16 *own = which ? Vg : Kg, *given = which ? VPg : KPg;
        for (int i = threadIdx.x; i < BN * 8; i += NWG * 128) {
            const int r = i >> 3, c = i & 7, key = j0 + r, ok = key < L;
            if (PFX && key < P) cp_async16(dst + ac_wg::swz(r, c), given + (size_t)key * ldp + c * 8, 16);
            else cp_async16(dst + ac_wg::swz(r, c), own + (size_t)(ok ? key - P : 0) * ldk + c * 8, ok ? 16 : 0);
        }
    };
    const bool wg_rows = wg_first < n;
    auto active = [&](int t) { return wg_rows && (!causal || t * BN <= P + wg_last); }; /* warpgroup-uniform */

    float o[DT * 4];
#pragma unroll
    for (int i = 0; i < DT * 4; i++) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    uint32_t pf[KS][4], pn[KS][4]; /* P_{t-1} (read by the in-flight product), P_t (being made) */

    load_rows(0, sK, 0);
    cp_commit(); /* group 0: Q, K_0 */
    for (int t = 0; t <= n_tiles; t++) { /* t = n_tiles: only the last P V */
        if (t + 1 < n_tiles) load_rows(t + 1, sK + ((t + 1) & 1) * TB, 0);
        if (t < n_tiles) load_rows(t, sV + (t & 1) * TB, 1);
        cp_commit(); /* group t + 1: K_{t+1}, V_t */
        if (t < n_tiles) cp_wait<1>(); /* K_t and V_{t-1} are in the groups before */
        else cp_wait<0>();
        ac_wg::fence_proxy_async();
        __syncthreads();
        const bool act = t < n_tiles && active(t), act_prev = t > 0 && active(t - 1);
        const int j0 = t * BN;
        float sc[NT * 4];
        if (act || act_prev) {
            ac_wg::reg_fence(o);
            ac_wg::fence();
        }
        if (act) {
#pragma unroll
            for (int i = 0; i < NT * 4; i++) sc[i] = 0.f;
            ac_wg::reg_fence(sc);
#pragma unroll
            for (int kc = 0; kc < HD / 16; kc++) {
                const uint64_t da = ac_wg::desc(sQ + wg * 64 * 128 + kc * 32, 16, 1024);
                const uint64_t db = ac_wg::desc(sK + (t & 1) * TB + kc * 32, 16, 1024);
                if constexpr (BN == 64) ac_wg::wgmma_ss_n64(sc, da, db, 1);
                else ac_wg::wgmma_ss_n128(sc, da, db, 1);
            }
            ac_wg::commit();
        }
        if (act_prev) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                ac_wg::wgmma_rs_n64_tb(o, pf[kk], ac_wg::desc(sV + ((t - 1) & 1) * TB + kk * 2048, TB, 1024), 1);
            ac_wg::commit();
        }
        if (act) {
            if (act_prev) ac_wg::wait<1>(); /* S_t done; P_{t-1} V_{t-1} may still run */
            else ac_wg::wait<0>();
            ac_wg::reg_fence(sc);
            const bool need_mask = j0 + BN > L || (causal && j0 + BN - 1 > P + wrow);
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (need_mask) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int key = j0 + nt * 8 + 2 * tq + (e & 1), pos = P + (e < 2 ? row0 : row1);
                        if (key >= L || (causal && key > pos)) sc[4 * nt + e] = -INFINITY;
                    }
                }
                mx0 = fmaxf(mx0, fmaxf(sc[4 * nt], sc[4 * nt + 1]));
                mx1 = fmaxf(mx1, fmaxf(sc[4 * nt + 2], sc[4 * nt + 3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float b0 = mx0 == -INFINITY ? 0.f : mx0 * scale_log2, b1 = mx1 == -INFINITY ? 0.f : mx1 * scale_log2;
            const bool moved = __any_sync(0xffffffffu, mx0 != m0 || mx1 != m1);
            float a0 = 1.f, a1 = 1.f;
            if (moved) a0 = ex2_ftz(fmaf(m0, scale_log2, -b0)), a1 = ex2_ftz(fmaf(m1, scale_log2, -b1));
            m0 = mx0, m1 = mx1;
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float p0 = ex2_ftz(fmaf(sc[4 * nt], scale_log2, -b0));
                const float p1 = ex2_ftz(fmaf(sc[4 * nt + 1], scale_log2, -b0));
                const float p2 = ex2_ftz(fmaf(sc[4 * nt + 2], scale_log2, -b1));
                const float p3 = ex2_ftz(fmaf(sc[4 * nt + 3], scale_log2, -b1));
                s0 += p0 + p1, s1 += p2 + p3;
                pn[nt >> 1][(nt & 1) * 2] = pack_bf16(p0, p1);
                pn[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
            }
            l0 = l0 * a0 + s0, l1 = l1 * a1 + s1;
            if (act_prev) ac_wg::wait<0>(); /* P_{t-1} V_{t-1} done: O and pf are free */
            ac_wg::reg_fence(o);
            if (moved) {
#pragma unroll
                for (int d = 0; d < DT; d++) o[4 * d] *= a0, o[4 * d + 1] *= a0, o[4 * d + 2] *= a1, o[4 * d + 3] *= a1;
            }
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int e = 0; e < 4; e++) pf[kk][e] = pn[kk][e];
        } else if (act_prev) {
            ac_wg::wait<0>();
            ac_wg::reg_fence(o);
        }
        __syncthreads(); /* every warpgroup is done with K_t and V_{t-1}: the next loads may overwrite them */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0 ? 1.f / l0 : 0.f, i1 = l1 > 0 ? 1.f / l1 : 0.f;
    bf16 *o0 = O + (size_t)(start + row0) * ldo + (size_t)h * HD, *o1 = O + (size_t)(start + row1) * ldo + (size_t)h * HD;
#pragma unroll
    for (int d = 0; d < DT; d++) {
        const int c = d * 8 + 2 * tq;
        if (row0 < n) *reinterpret_cast<uint32_t *>(o0 + c) = pack_bf16(o[4 * d] * i0, o[4 * d + 1] * i0);
        if (row1 < n) *reinterpret_cast<uint32_t *>(o1 + c) = pack_bf16(o[4 * d + 2] * i1, o[4 * d + 3] * i1);
    }
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

template <int NWG, int BN, bool PFX, bool PIPE>
int launch_wg_t(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    constexpr int BM = 64 * NWG;
    const size_t smem = (size_t)BM * 128 + (size_t)4 * BN * 128 + 1024; /* + the 1024-byte alignment slack */
    auto kern = PIPE ? k_flash_wgp<NWG, BN, PFX> : k_flash_wg<NWG, BN, PFX>;
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

template <int NWG, int BN, bool PIPE = false>
int launch_wg(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    return a->cp ? launch_wg_t<NWG, BN, true, PIPE>(a, q, k, v, out, st)
                 : launch_wg_t<NWG, BN, false, PIPE>(a, q, k, v, out, st);
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
    if (a->hd != 64) return ac_err(AC_ERR_UNSUPPORTED, "flash attention (wgmma): head dim %d (64 only)", a->hd);
    if (!ac_cu_wgmma_available())
        return ac_err(AC_ERR_UNSUPPORTED, "flash attention variant %d needs wgmma (an sm_90 GPU and the sm_90a build)",
                      variant);
    switch (variant) {
    case AC_FLASH_WG1K128: return launch_wg<1, 128>(a, q, k, v, out, st);
    case AC_FLASH_WG2: return launch_wg<2, 64>(a, q, k, v, out, st);
    case AC_FLASH_WG2K128: return launch_wg<2, 128>(a, q, k, v, out, st);
    case AC_FLASH_WGP2: return launch_wg<2, 64, true>(a, q, k, v, out, st);
    case AC_FLASH_WGP2K128: return launch_wg<2, 128, true>(a, q, k, v, out, st);
    default: return ac_err(AC_ERR_ARG, "flash attention (wgmma): variant %d", variant);
    }
}
