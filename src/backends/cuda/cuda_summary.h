/* cuda_summary.h — the layer-0 summary the attention cache keys on, computed
 * on the device (the states never leave it): per sequence, the means of its
 * layer-0 states over S equal position segments, exactly as the cache's
 * summarize() does on the host (src/cache/cache.c; forward.h
 * ac_attn_site.summary states the format). Internal to src/backends/cuda
 * and its tests; all pointers device pointers unless named h_. */
#ifndef AC_CUDA_SUMMARY_H
#define AC_CUDA_SUMMARY_H

#include "cuda_common.h"

/* out [n_seq][S][D] = for sequence s (rows cu[s] .. cu[s+1]-1 of x [T][D], L rows) and
 * segment k: the mean of rows [k L / S, (k+1) L / S) (integer division, 64-bit), or of
 * all L rows when that range is empty; each column summed in position order in f32 and
 * scaled by 1/count, as the host does (so f32 inputs agree to rounding). */
int ac_cu_segment_means(float *out, const float *x, const int *cu, int n_seq, int S, int D, cudaStream_t st);

#endif
