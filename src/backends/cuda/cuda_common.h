/* cuda_common.h — shared helpers of the CUDA backend (device code and host
 * glue): error checks that turn CUDA/cuBLAS failures into AC_ERR_* status
 * codes with a message, and bf16/f32 load/store helpers for kernels templated
 * on the activation type. Internal to src/backends/cuda and its tests. */
#ifndef AC_CUDA_COMMON_H
#define AC_CUDA_COMMON_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "attncache.h"
#include "util/common.h"
}

typedef __nv_bfloat16 bf16;

/* Status of a CUDA runtime call: AC_OK, or AC_ERR_INTERNAL with the call and its message. */
#define AC_CU(call)                                                                                    \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess)                                                                         \
            return ac_err(AC_ERR_INTERNAL, "CUDA: %s: %s (%s:%d)", #call, cudaGetErrorString(e_),      \
                          __FILE__, __LINE__);                                                         \
    } while (0)
/* After a launch: the launch error (bad configuration, no kernel image for this GPU). */
#define AC_CU_LAUNCH() AC_CU(cudaGetLastError())

__device__ __forceinline__ float ac_ld(const float *p) { return *p; }
__device__ __forceinline__ float ac_ld(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void ac_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void ac_st(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* Host: f32 -> bf16 bits, round to nearest even (NaN kept quiet), as the CPU path's ac_f32_to_bf16. */
static inline uint16_t ac_host_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float ac_host_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
