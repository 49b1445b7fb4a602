/* cuda_pv_tile.h — the device code that the fused attention (cuda_attn.cu, cuda_attn_wg.cu) and the
 * tensor-core A·V kernels (cuda_codec_av.cu) share for streaming V (and K) tiles through shared memory:
 * the step of the two-stage cp.async tile pipeline, and the mma.sync P·V k-step over a V tile. The
 * wgmma P·V is in cuda_wgmma.h (wgmma_pv). Everything is __forceinline__ and fully unrolled: the
 * kernels compile to the code they had with these lines written out (checked with cuobjdump -sass).
 * Internal to src/backends/cuda. */
#ifndef AC_CUDA_PV_TILE_H
#define AC_CUDA_PV_TILE_H

#include "cuda_common.h"
#include "cuda_ptx.h"

namespace ac_ptx {

/* Top of iteration t of a loop over n_tiles tiles in two stages of shared memory (tile t in stage t & 1,
 * tile 0 issued and committed before the loop): issue tile t + 1 into the other stage by
 * load(a..., t + 1, stage), commit it, and wait until tile t has landed (the last tile: every copy).
 * The caller's barrier follows (for wgmma readers, fence.proxy.async before it). load is a lambda, or a
 * __forceinline__ function with its arguments a...: a lambda that wraps such a call has been seen to
 * change ptxas's register allocation of the kernel around it (k_flash_wg: 190 -> 192 registers). */
template <typename F, typename... A>
__device__ __forceinline__ void cp_next_tile(int t, int n_tiles, F &&load, const A &...a) {
    if (t + 1 < n_tiles) {
        load(a..., t + 1, (t + 1) & 1);
        cp_commit();
        cp_wait<1>();
    } else {
        cp_wait<0>();
    }
}

/* O += P V for k-step ks (keys 16 ks .. 16 ks + 15) of a V tile vs in shared memory (rows = keys, LDS
 * bf16 a row, padded so ldmatrix's 8 row addresses hit 8 bank groups) for MT m-tiles of 16 rows:
 * a[mt] the A fragment (m16n8k16 layout) of m-tile mt, o[mt][n] its accumulators of n-tile n (columns
 * 8n .. 8n + 7, HD / 8 of them). Each V fragment (ldmatrix.trans) feeds MT products. */
template <int HD, int LDS, int MT>
__device__ __forceinline__ void mma_pv_kstep(float (*o)[HD / 8][4], const uint32_t (*a)[4], const bf16 *vs, int ks,
                                             int lane) {
#pragma unroll
    for (int db = 0; db < HD / 16; db++) {
        const int key = ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), col = db * 16 + ((lane >> 4) << 3);
        uint32_t v0, v1, v2, v3;
        ldsm_x4_t(smem_u32(vs + key * LDS + col), v0, v1, v2, v3);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            mma16816(o[mt][2 * db], a[mt], v0, v1);
            mma16816(o[mt][2 * db + 1], a[mt], v2, v3);
        }
    }
}

} // namespace ac_ptx

#endif
