/* cuda_attn.h — attention on the GPU over packed variable-length sequences
 * (cu_seqlens style: sequence s owns rows cu[s] .. cu[s+1]-1 of q, k, v, out;
 * no padding). Q [rows][ldq] holds head h at column h*hd (already RoPE'd,
 * unscaled); K, V [rows][ldk] hold kv head g at column g*hd; query head h reads
 * kv head h / (H / Hkv) (GQA without expanding K/V). All pointers are device
 * pointers; every launcher returns AC_OK or an AC_ERR_* status. */
#ifndef AC_CUDA_ATTN_H
#define AC_CUDA_ATTN_H

#include "cuda_common.h"

typedef struct ac_cu_attn {
    int n_seq, Lmax;       /* sequences, longest length (with cp: most query rows) */
    const int *cu;         /* [n_seq+1] device row offsets                   */
    int H, Hkv, hd;        /* heads, kv heads, head dim                      */
    int ldq, ldk, ldo;     /* row strides in elements                        */
    int causal;
    float scale;           /* usually 1/sqrt(hd)                             */
    /* Given prefix rows (the prefix K/V cache; NULL cp: none). Sequence s then has
     * P = cp[s+1] - cp[s] keys before its rows cu[s] .. cu[s+1]-1: its keys j < P are rows
     * cp[s] + j of kp / vp [rows][ldp] (kv head g at column g*hd, same type as k and v), its keys
     * j >= P rows cu[s] + j - P of k / v; its n = cu[s+1] - cu[s] query rows sit at positions
     * P .. P+n-1 and attend (causal) to keys 0 .. their position, over L = P + n keys. */
    const int *cp;         /* [n_seq+1] device offsets of the prefix rows, or NULL */
    const void *kp, *vp;   /* device pointers, 16-byte aligned                      */
    int ldp;               /* multiple of 8                                         */
} ac_cu_attn;

/* Fused FlashAttention-2-style kernel: bf16 tensor cores (mma.sync m16n8k16),
 * f32 online softmax, never materialises L x L. hd in {32, 64, 128}; ldq, ldk,
 * ldo multiples of 8 and q, k, v, out 16-byte aligned. variant (0: the default
 * for hd): query rows per block as warps x m-tiles of 16 rows each. */
enum { AC_FLASH_W4 = 1 /* 4 x 1: 64 rows */, AC_FLASH_W8 = 2 /* 8 x 1: 128 rows */,
       AC_FLASH_W4X2 = 3 /* 4 x 2: 128 rows, each K/V fragment feeds 2 products; hd <= 64 */,
       AC_FLASH_W4K128 = 4 /* 4 x 1 with tiles of 128 keys (half the barriers and softmax passes); hd <= 64 */,
       /* wgmma (Hopper warpgroup MMA, cuda_attn_wg.cu), hd 64 and 128, where ac_cu_flash_variant_ok says
        * so: warpgroups of 64 rows x key tiles */
       AC_FLASH_WG1K128 = 5 /* 1 x 128 keys */, AC_FLASH_WG2 = 6 /* 2 x 64 keys */,
       AC_FLASH_WG2K128 = 7 /* 2 x 128 keys */,
       /* the same, pipelined: inside a warpgroup the next S = Q K^T and the last P V run during the softmax
        * (hd 64 only) */
       AC_FLASH_WGP2 = 8 /* 2 x 64 keys */, AC_FLASH_WGP2K128 = 9 /* 2 x 128 keys */ };
/* The last variant for a head dim (variants run from AC_FLASH_W4 to it; some of them are not offered
 * for hd or may not run on this device: ac_cu_flash_variant_ok). */
static inline int ac_flash_last_variant(int hd) {
    return hd == 64 ? AC_FLASH_WGP2K128 : hd < 64 ? AC_FLASH_W4K128 : hd == 128 ? AC_FLASH_WG2K128 : AC_FLASH_W8;
}
/* 1 where variant runs for head dim hd on the current device (the wgmma ones need an sm_90 GPU). */
int ac_cu_flash_variant_ok(int hd, int variant);
int ac_cu_flash_attn(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int variant,
                     cudaStream_t st);

/* Materialised attention: P = softmax(scale Q K^T) (masked, f32) written to
 * P + p_off[s] as [H][L][L] per sequence (p_off: device [n_seq] element offsets),
 * then out = P V. Any hd; T = float or bf16. The recording path and the f32 mode.
 * With prefix rows (a->cp): [H][n][L] per sequence (its n query rows over its L keys). */
template <typename T>
int ac_cu_attn_materialised(const ac_cu_attn *a, const T *q, const T *k, const T *v, T *out, float *P,
                            const long long *p_off, cudaStream_t st);

#endif
