/* cuda_codec_av.h — the attention cache's A·V on the GPU: out = P·V where P
 * is read row by row straight from the cache's compressed map formats (the
 * row layouts of src/cache/codec.h: f32, f16, q8, q4, top-k; dense or causal),
 * never expanded to an L x L temporary. The layout description is passed as
 * plain ints so this file needs nothing from the cache stage.
 * Used by ac_cuda_forward's served layers (cuda_backend.cu); kernels checked against the
 * CPU codecs in tests/gpu/test_cuda_cache.cu (see docs/GPU_NOTES.md). */
#ifndef AC_CUDA_CODEC_AV_H
#define AC_CUDA_CODEC_AV_H

#include "cuda_common.h"

/* kind: 0 f32, 1 f16, 2 q8, 3 q4, 4 top-k (enum ac_codec_kind's values); causal 0/1; topk: k. */
typedef struct ac_cu_codec {
    int kind, causal, topk;
} ac_cu_codec;

/* Rows [0, n_rows) of one sequence of L tokens: out [L][ldo] (head h at column h*hd) =
 * P_h V, V [L][ldv] (kv head h / (H/Hkv) at column g*hd); maps: device, head h's map at
 * maps + h * map_bytes (ac_codec_map_bytes). T = float or bf16. L <= 65536. */
/* One sequence of a batched A.V (ac_cu_codec_av_seqs): its maps (device; head h at maps + h *
 * map_bytes), codec, length L (every row served) and first row r0 in V and out. */
typedef struct ac_cu_av_seq {
    const void *maps;
    size_t map_bytes;
    int kind, causal, topk, L, r0, pad;
} ac_cu_av_seq;

/* All rows of n_seq sequences in one launch: d_seqs [n_seq] in device memory, Lmax >= every L;
 * V, out and their strides as ac_cu_codec_av's, rows r0 .. r0 + L - 1 of each sequence. Head
 * dims 32, 64 and 128 only (the warp kernel; AC_ERR_ARG otherwise). */
template <typename T>
int ac_cu_codec_av_seqs(const ac_cu_av_seq *d_seqs, int n_seq, int Lmax, int H, int Hkv, int hd, const T *v, int ldv,
                        T *out, int ldo, cudaStream_t st);

template <typename T>
int ac_cu_codec_av(const ac_cu_codec *c, const void *maps, size_t map_bytes, int L, int n_rows, int H, int Hkv,
                   int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st);

#endif
