/* cuda_attn.cu — fused (FlashAttention-2-style) and materialised attention.
 *
 * Fused kernel, per block: NW warps x 16 query rows of one (sequence, head);
 * K and V tiles of BN = 64 keys (128: variant W4K128, hd <= 64) stream through shared memory with cp.async,
 * two stages deep (the next tile loads while this one is used). Per tile:
 *   S = Q K^T        mma.sync m16n8k16 bf16 -> f32; Q fragments stay in registers,
 *                    K fragments by ldmatrix (rows = keys: the B "col" layout);
 *   online softmax   in the log2 domain, f32; the row max/sum of a row live in
 *                    the 4 threads of a quad (shuffles), the sum stays per thread
 *                    until the end (the rescale factor is the same for the quad);
 *                    p = 2^(s scale log2(e) - base) is one FFMA and one MUFU.EX2
 *                    (ftz), and O is rescaled only when a row's max moved;
 *   O += P V         P re-packed from the S accumulators into A fragments in
 *                    registers (their layouts line up), V by ldmatrix.trans.
 * Rows of shared memory are padded by 8 bf16 (16 bytes): ldmatrix's 8 row
 * addresses then fall in 8 different 16-byte bank groups. Causal blocks stop
 * at their last row's key; blocks are issued longest-first. */
#include "cuda_attn.h"
#include "cuda_attn_wg.h"
#include "cuda_ptx.h"
#include "cuda_pv_tile.h"

#include <math.h>

namespace {

using namespace ac_ptx;



/* PFX: sequence s has P = cp[s+1] - cp[s] given keys (rows of KP / VP, stride ldp) before its own
 * rows; its query i sits at position P + i (see ac_cu_attn). Without PFX, P = 0 (the code of the
 * exact path is the same as before the prefix cache). */
template <int HD, int NW, int MT, bool PFX, int BN>
__global__ void __launch_bounds__(NW * 32)
    k_flash(const bf16 *__restrict__ Q, const bf16 *__restrict__ K, const bf16 *__restrict__ V, bf16 *__restrict__ O,
            const int *__restrict__ cu, int ldq, int ldk, int ldo, int H, int Hkv, int causal, float scale_log2,
            const int *__restrict__ cp, const bf16 *__restrict__ KP, const bf16 *__restrict__ VP, int ldp) {
    constexpr int BM = 16 * NW * MT, LDS = HD + 8, NT = BN / 8, DT = HD / 8, KC = HD / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw); /* [2][BN][LDS] */
    bf16 *Vs = Ks + 2 * BN * LDS;                  /* [2][BN][LDS] */

    /* issue order: a (sequence, head)'s query tiles one after another, longest (causal) first: the
     * blocks running together share that head's K/V in L2 (run 15: issuing every head's longest
     * tile first instead was 1.3-1.5x slower at hd 64, its K/V working set no longer in L2) */
    const int s = blockIdx.z, h = blockIdx.y, g = h / (H / Hkv);
    const int start = cu[s], n = cu[s + 1] - start; /* query rows (this sequence's rows of Q, K, V, O) */
    const int P = PFX ? cp[s + 1] - cp[s] : 0;       /* given keys before them (positions 0 .. P-1) */
    const int L = P + n;                             /* keys */
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM; /* longest (causal) blocks first */
    if (q0 >= n) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
    const int wrow = q0 + warp * 16 * MT; /* this warp's first row; m-tile mt holds rows wrow + 16 mt .. + 15 */
    int row[MT][2];                       /* this thread's query rows: gr and gr + 8 of each m-tile (position P + row) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) row[mt][0] = wrow + mt * 16 + gr, row[mt][1] = row[mt][0] + 8;

    /* Q fragments (A layout), rows past n read as zero */
    uint32_t qf[MT][KC][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const bf16 *q_0 = Q + (size_t)(start + row[mt][0]) * ldq + (size_t)h * HD;
        const bf16 *q_1 = Q + (size_t)(start + row[mt][1]) * ldq + (size_t)h * HD;
        const bool ok0 = row[mt][0] < n, ok1 = row[mt][1] < n;
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            const int c = kc * 16 + 2 * tq;
            qf[mt][kc][0] = ok0 ? *reinterpret_cast<const uint32_t *>(q_0 + c) : 0u;
            qf[mt][kc][1] = ok1 ? *reinterpret_cast<const uint32_t *>(q_1 + c) : 0u;
            qf[mt][kc][2] = ok0 ? *reinterpret_cast<const uint32_t *>(q_0 + c + 8) : 0u;
            qf[mt][kc][3] = ok1 ? *reinterpret_cast<const uint32_t *>(q_1 + c + 8) : 0u;
        }
    }

    float o[MT][DT][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int i = 0; i < DT; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
    }

    const int kv_end = causal ? min(L, P + q0 + BM) : L; /* the block's last row attends to keys <= P + q0 + BM - 1 */
    const int n_tiles = (kv_end + BN - 1) / BN;
    /* key j >= P: row j - P of K, V (this sequence's rows); j < P: row j of KP, VP */
    const bf16 *Kg = K + (size_t)start * ldk + (size_t)g * HD, *Vg = V + (size_t)start * ldk + (size_t)g * HD;
    const bf16 *KPg = nullptr, *VPg = nullptr;
    if (PFX) KPg = KP + (size_t)cp[s] * ldp + (size_t)g * HD, VPg = VP + (size_t)cp[s] * ldp + (size_t)g * HD;

    auto load_tile = [&](int t, int stage) {
        constexpr int CH = HD / 8; /* 16-byte chunks per row */
        const int j0 = t * BN;
        bf16 *ks = Ks + stage * BN * LDS, *vs = Vs + stage * BN * LDS;
        for (int i = threadIdx.x; i < BN * CH; i += NW * 32) {
            const int r = i / CH, c = (i % CH) * 8;
            const int key = j0 + r, ok = key < L;
            if (PFX && key < P) {
                const size_t off = (size_t)key * ldp + c;
                cp_async16(smem_u32(ks + r * LDS + c), KPg + off, 16);
                cp_async16(smem_u32(vs + r * LDS + c), VPg + off, 16);
            } else {
                const size_t off = (size_t)(ok ? key - P : 0) * ldk + c; /* (past L: row 0, nothing read) */
                cp_async16(smem_u32(ks + r * LDS + c), Kg + off, ok ? 16 : 0);
                cp_async16(smem_u32(vs + r * LDS + c), Vg + off, ok ? 16 : 0);
            }
        }
    };

    load_tile(0, 0);
    cp_commit();
    for (int t = 0; t < n_tiles; t++) {
        cp_next_tile(t, n_tiles, load_tile);
        __syncthreads();
        const bf16 *ks = Ks + (t & 1) * BN * LDS, *vs = Vs + (t & 1) * BN * LDS;
        const int j0 = t * BN;

        /* S = Q K^T for this warp's 16 MT rows x BN keys: each K fragment feeds MT products */
        float sc[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NT; i++) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
#pragma unroll
            for (int nb = 0; nb < NT / 2; nb++) {
                const int key = nb * 16 + (lane & 7) + ((lane >> 4) << 3), col = kc * 16 + ((lane >> 3) & 1) * 8;
                uint32_t b0, b1, b2, b3;
                ldsm_x4(smem_u32(ks + key * LDS + col), b0, b1, b2, b3);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816(sc[mt][2 * nb], qf[mt][kc], b0, b1);
                    mma16816(sc[mt][2 * nb + 1], qf[mt][kc], b2, b3);
                }
            }
        }
        /* mask keys past L and, causal, past the row's position P + row (raw scores: scale > 0 keeps the max) */
        const bool need_mask = j0 + BN > L || (causal && j0 + BN - 1 > P + wrow);
        uint32_t pf[BN / 16][MT][4]; /* P as the A fragments of k-step kk of m-tile mt: pf[kk][mt] */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float mx0 = m[mt][0], mx1 = m[mt][1]; /* running maxima of the raw scores */
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (need_mask) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int key = j0 + nt * 8 + 2 * tq + (e & 1), pos = P + row[mt][e >> 1];
                        if (key >= L || (causal && key > pos)) sc[mt][nt][e] = -INFINITY;
                    }
                }
                mx0 = fmaxf(mx0, fmaxf(sc[mt][nt][0], sc[mt][nt][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[mt][nt][2], sc[mt][nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* the base in the log2 domain; a row with every key masked so far keeps max -inf and
             * uses 0 (its exponentials are then 0). p = 2^(s*scale_log2 - base): one FFMA and one
             * MUFU.EX2 per score, as FlashAttention-2 does (the scale folded into the FFMA) */
            const float b0 = mx0 == -INFINITY ? 0.f : mx0 * scale_log2, b1 = mx1 == -INFINITY ? 0.f : mx1 * scale_log2;
            /* rescale O and l only when some row's max moved (warp-uniform branch: after the first
             * tiles most tiles move no max, and the rescale costs one FMUL per score at hd 64) */
            if (__any_sync(0xffffffffu, mx0 != m[mt][0] || mx1 != m[mt][1])) {
                const float a0 = ex2_ftz(fmaf(m[mt][0], scale_log2, -b0)), a1 = ex2_ftz(fmaf(m[mt][1], scale_log2, -b1));
                l[mt][0] *= a0, l[mt][1] *= a1; /* m = -inf at the start: a = 0 */
#pragma unroll
                for (int i = 0; i < DT; i++) o[mt][i][0] *= a0, o[mt][i][1] *= a0, o[mt][i][2] *= a1, o[mt][i][3] *= a1;
            }
            m[mt][0] = mx0, m[mt][1] = mx1;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float p0 = ex2_ftz(fmaf(sc[mt][nt][0], scale_log2, -b0));
                const float p1 = ex2_ftz(fmaf(sc[mt][nt][1], scale_log2, -b0));
                const float p2 = ex2_ftz(fmaf(sc[mt][nt][2], scale_log2, -b1));
                const float p3 = ex2_ftz(fmaf(sc[mt][nt][3], scale_log2, -b1));
                l[mt][0] += p0 + p1, l[mt][1] += p2 + p3;
                pf[nt >> 1][mt][(nt & 1) * 2] = pack_bf16(p0, p1);
                pf[nt >> 1][mt][(nt & 1) * 2 + 1] = pack_bf16(p2, p3);
            }
        }
        /* O += P V: each V fragment feeds MT products */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) mma_pv_kstep<HD, LDS, MT>(o, pf[kk], vs, kk, lane);
        __syncthreads(); /* the next iteration's load overwrites this stage */
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = l0 > 0 ? 1.f / l0 : 0.f, i1 = l1 > 0 ? 1.f / l1 : 0.f;
        bf16 *o0 = O + (size_t)(start + row[mt][0]) * ldo + (size_t)h * HD;
        bf16 *o1 = O + (size_t)(start + row[mt][1]) * ldo + (size_t)h * HD;
#pragma unroll
        for (int d = 0; d < DT; d++) {
            const int c = d * 8 + 2 * tq;
            if (row[mt][0] < n) *reinterpret_cast<uint32_t *>(o0 + c) = pack_bf16(o[mt][d][0] * i0, o[mt][d][1] * i0);
            if (row[mt][1] < n) *reinterpret_cast<uint32_t *>(o1 + c) = pack_bf16(o[mt][d][2] * i1, o[mt][d][3] * i1);
        }
    }
}

template <int HD, int NW, int MT, bool PFX, int BN>
int launch_flash_t(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    constexpr int BM = 16 * NW * MT;
    const size_t smem = (size_t)4 * BN * (HD + 8) * sizeof(bf16);
    static bool attr_set = false; /* one attribute per instantiation (host side, before the first launch) */
    if (!attr_set) {
        AC_CU(cudaFuncSetAttribute(k_flash<HD, NW, MT, PFX, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    dim3 grid((a->Lmax + BM - 1) / BM, a->H, a->n_seq);
    k_flash<HD, NW, MT, PFX, BN><<<grid, NW * 32, smem, st>>>(q, k, v, out, a->cu, a->ldq, a->ldk, a->ldo, a->H, a->Hkv,
                                                          a->causal, a->scale * 1.4426950408889634f, a->cp,
                                                          (const bf16 *)a->kp, (const bf16 *)a->vp, a->ldp);
    AC_CU_LAUNCH();
    return AC_OK;
}

template <int HD, int NW, int MT, int BN = 64>
int launch_flash(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, cudaStream_t st) {
    return a->cp ? launch_flash_t<HD, NW, MT, true, BN>(a, q, k, v, out, st)
                 : launch_flash_t<HD, NW, MT, false, BN>(a, q, k, v, out, st);
}

/* ---- materialised: one block per (query row, head, sequence) -------------------------------------
 * With given prefix rows (cp non-NULL; see ac_cu_attn): sequence s has np = cp[s+1] - cp[s] keys
 * before its n rows, L = np + n keys; query i (position np + i) writes row i of its [H][n][L] map. */
template <typename T>
__device__ __forceinline__ const T *key_row(const T *K, const T *KP, const int *cp, int s, int start, int np, int j,
                                            int ldk, int ldp) {
    return j < np ? KP + (size_t)(cp[s] + j) * ldp : K + (size_t)(start + j - np) * ldk;
}

template <typename T>
__global__ void k_scores(const T *Q, const T *K, float *P, const long long *p_off, const int *cu, int ldq, int ldk,
                         int H, int Hkv, int hd, int causal, float scale, const int *cp, const T *KP, int ldp) {
    __shared__ float red[32];
    const int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z, g = h / (H / Hkv);
    const int start = cu[s], nq = cu[s + 1] - start, np = cp ? cp[s + 1] - cp[s] : 0, L = np + nq;
    if (i >= nq) return;
    const T *q = Q + (size_t)(start + i) * ldq + (size_t)h * hd;
    float *p = P + p_off[s] + ((size_t)h * nq + i) * L;
    const int n = causal ? np + i + 1 : L;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        if (j >= n) {
            p[j] = 0.f;
            continue;
        }
        const T *kr = key_row(K, KP, cp, s, start, np, j, ldk, ldp) + (size_t)g * hd;
        float acc = 0;
        for (int d = 0; d < hd; d++) acc += ac_ld(q + d) * ac_ld(kr + d);
        p[j] = acc * scale;
        mx = fmaxf(mx, acc * scale);
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) mx = fmaxf(mx, red[w]);
    __syncthreads();
    float sum = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = sum;
    __syncthreads();
    sum = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) sum += red[w];
    const float inv = 1.f / sum;
    for (int j = threadIdx.x; j < n; j += blockDim.x) p[j] *= inv;
}

template <typename T>
__global__ void k_apply(const float *P, const long long *p_off, const T *V, T *O, const int *cu, int ldk, int ldo,
                        int H, int Hkv, int hd, int causal, const int *cp, const T *VP, int ldp) {
    const int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z, g = h / (H / Hkv);
    const int start = cu[s], nq = cu[s + 1] - start, np = cp ? cp[s + 1] - cp[s] : 0, L = np + nq;
    if (i >= nq) return;
    const float *p = P + p_off[s] + ((size_t)h * nq + i) * L;
    const int n = causal ? np + i + 1 : L;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0;
        for (int j = 0; j < n; j++) acc += p[j] * ac_ld(key_row(V, VP, cp, s, start, np, j, ldk, ldp) + (size_t)g * hd + d);
        ac_st(O + (size_t)(start + i) * ldo + (size_t)h * hd + d, acc);
    }
}

} // namespace

int ac_cu_flash_attn(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int variant,
                     cudaStream_t st) {
    if (a->n_seq <= 0 || a->Lmax <= 0) return AC_OK;
    if (a->H <= 0 || a->Hkv <= 0 || a->H % a->Hkv)
        return ac_err(AC_ERR_ARG, "flash attention: %d heads over %d kv heads", a->H, a->Hkv);
    if ((a->ldq | a->ldk | a->ldo) & 7 || ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)out) & 15)
        return ac_err(AC_ERR_ARG, "flash attention: strides/pointers not 16-byte aligned");
    if (a->cp && (!a->kp || !a->vp || a->ldp <= 0 || a->ldp & 7 || ((uintptr_t)a->kp | (uintptr_t)a->vp) & 15))
        return ac_err(AC_ERR_ARG, "flash attention: prefix rows missing or not 16-byte aligned");
    if (a->n_seq > 65535 || a->H > 65535) return ac_err(AC_ERR_ARG, "flash attention: grid too large");
    if (!(a->scale > 0.f)) return ac_err(AC_ERR_ARG, "flash attention: scale %g (want > 0)", (double)a->scale);
    /* defaults from gpu_bench attn on the H100: at hd 64 and 128 the wgmma kernel with 2 warpgroups and
     * 128-key tiles where the device runs it (run 17, hd 64: 1.25x the mma.sync kernel at causal 8192,
     * 1.19-1.24x at 2048 and BERT-base 512; run 19, hd 128: 1.25-1.36x), else 4 warps x 1 m-tile
     * (run 10); hd 32 keeps 4 x 2 */
    if (!variant)
        variant = a->hd <= 32                                             ? AC_FLASH_W4X2
                  : (a->hd == 64 || a->hd == 128) && ac_cu_wgmma_available() ? AC_FLASH_WG2K128
                                                                        : AC_FLASH_W4;
    if (variant < AC_FLASH_W4 || variant > ac_flash_last_variant(a->hd))
        return ac_err(AC_ERR_ARG, "flash attention: variant %d for head dim %d", variant, a->hd);
    if (variant >= AC_FLASH_WG1K128) return ac_cu_flash_attn_wg(a, q, k, v, out, variant, st);
    switch (a->hd * 16 + variant) {
    case 32 * 16 + AC_FLASH_W4: return launch_flash<32, 4, 1>(a, q, k, v, out, st);
    case 32 * 16 + AC_FLASH_W8: return launch_flash<32, 8, 1>(a, q, k, v, out, st);
    case 32 * 16 + AC_FLASH_W4X2: return launch_flash<32, 4, 2>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_W4: return launch_flash<64, 4, 1>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_W8: return launch_flash<64, 8, 1>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_W4X2: return launch_flash<64, 4, 2>(a, q, k, v, out, st);
    case 32 * 16 + AC_FLASH_W4K128: return launch_flash<32, 4, 1, 128>(a, q, k, v, out, st);
    case 64 * 16 + AC_FLASH_W4K128: return launch_flash<64, 4, 1, 128>(a, q, k, v, out, st);
    case 128 * 16 + AC_FLASH_W4: return launch_flash<128, 4, 1>(a, q, k, v, out, st);
    case 128 * 16 + AC_FLASH_W8: return launch_flash<128, 8, 1>(a, q, k, v, out, st);
    default: return ac_err(AC_ERR_UNSUPPORTED, "flash attention: head dim %d (32, 64 or 128)", a->hd);
    }
}

int ac_cu_flash_variant_ok(int hd, int variant) {
    if (variant < AC_FLASH_W4 || variant > ac_flash_last_variant(hd)) return 0;
    if (hd > 64 && (variant == AC_FLASH_W4X2 || variant == AC_FLASH_W4K128)) return 0; /* hd <= 64 only */
    return variant < AC_FLASH_WG1K128 || ac_cu_wgmma_available();
}

template <typename T>
int ac_cu_attn_materialised(const ac_cu_attn *a, const T *q, const T *k, const T *v, T *out, float *P,
                            const long long *p_off, cudaStream_t st) {
    if (a->n_seq <= 0 || a->Lmax <= 0) return AC_OK;
    if (a->H <= 0 || a->Hkv <= 0 || a->H % a->Hkv)
        return ac_err(AC_ERR_ARG, "attention: %d heads over %d kv heads", a->H, a->Hkv);
    if (a->n_seq > 65535 || a->H > 65535) return ac_err(AC_ERR_ARG, "attention: grid too large");
    dim3 grid(a->Lmax, a->H, a->n_seq);
    if (a->cp && (!a->kp || !a->vp || a->ldp <= 0)) return ac_err(AC_ERR_ARG, "attention: prefix rows missing");
    k_scores<T><<<grid, 128, 0, st>>>(q, k, P, p_off, a->cu, a->ldq, a->ldk, a->H, a->Hkv, a->hd, a->causal, a->scale,
                                      a->cp, (const T *)a->kp, a->ldp);
    AC_CU_LAUNCH();
    k_apply<T><<<grid, a->hd < 128 ? a->hd : 128, 0, st>>>(P, p_off, v, out, a->cu, a->ldk, a->ldo, a->H, a->Hkv,
                                                           a->hd, a->causal, a->cp, (const T *)a->vp, a->ldp);
    AC_CU_LAUNCH();
    return AC_OK;
}

template int ac_cu_attn_materialised<float>(const ac_cu_attn *, const float *, const float *, const float *, float *,
                                            float *, const long long *, cudaStream_t);
template int ac_cu_attn_materialised<bf16>(const ac_cu_attn *, const bf16 *, const bf16 *, const bf16 *, bf16 *,
                                           float *, const long long *, cudaStream_t);
