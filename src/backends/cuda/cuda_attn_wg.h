/* cuda_attn_wg.h — the fused attention on Hopper's warpgroup MMA (cuda_attn_wg.cu), reached through
 * ac_cu_flash_attn's variants AC_FLASH_WG* (cuda_attn.h). Internal to src/backends/cuda. */
#ifndef AC_CUDA_ATTN_WG_H
#define AC_CUDA_ATTN_WG_H

#include "cuda_attn.h"

/* 1 when the running device executes this binary's wgmma code (an sm_90 GPU and the sm_90a pass of the
 * build), else 0. Probes the device once per process (a one-thread kernel). */
int ac_cu_wgmma_available(void);

/* ac_cu_flash_attn for variant AC_FLASH_WG1K128 / WG2 / WG2K128 / WGP2 / WGP2K128: head dim 64 only; AC_ERR_UNSUPPORTED
 * (with a message) where wgmma is not available. */
int ac_cu_flash_attn_wg(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int variant,
                        cudaStream_t st);

#endif
