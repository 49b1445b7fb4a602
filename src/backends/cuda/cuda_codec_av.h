/* cuda_codec_av.h — the attention cache's A·V on the GPU: out = P·V where P
 * is read row by row straight from the cache's compressed map formats (the
 * row layouts of src/cache/codec.h: f32, f16, q8, q4, top-k; dense or causal),
 * never expanded to an L x L temporary. The layout description is passed as
 * plain ints so this file needs nothing from the cache stage.
 * Checked against the CPU codec in tests/gpu/test_cuda_cache.cu; used by the
 * served layers of ac_cuda_forward (cuda_backend.cu). */
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
template <typename T>
int ac_cu_codec_av(const ac_cu_codec *c, const void *maps, size_t map_bytes, int L, int n_rows, int H, int Hkv,
                   int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st);

/* The same for whole sequences s0 .. s0 + n_seq - 1 of a packed batch in one launch (head dims
 * 32/64/128 only, else AC_ERR_ARG): d_maps (device [s0 + n_seq]) holds sequence s's maps (head h at
 * + h * ac_cuda_map_bytes(kind, causal, topk, L_s)); d_cu (device) its rows [d_cu[s], d_cu[s+1]) of
 * v and out, all of them computed; Lmax: the longest of the sequences. */
template <typename T>
int ac_cu_codec_av_seqs(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, int s0, int n_seq, int Lmax,
                        int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st);

/* The same with rows [0, d_rows[s]) of each sequence only (d_rows device, indexed as d_maps; at most its
 * length): the served rows of partly served sites (the others are the caller's; never written). */
template <typename T>
int ac_cu_codec_av_seqs_rows(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, const int *d_rows, int s0,
                             int n_seq, int Lmax, int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo,
                             cudaStream_t st);

/* The same with a kernel variant, for benchmarks and tests (0: the default above — top-k rows as 8 where every
 * sequence is at most 1024 keys at hd 64 on sm_90a, else as 4 where that applies, the rest v3; 2: q8/q4 rows by
 * the gather kernel on the CUDA cores, not the tensor cores; 4: top-k rows (k <= 32) with bf16 V in 16-byte
 * aligned rows by the v4 gather, V rows read through L1; 5: the same rows densified per 64-key tile on the
 * tensor cores (out in bf16 pairs too); 8: variant 5 on Hopper's wgmma, two warpgroups a block, at hd 64 where
 * the device runs the sm_90a code (else as 5); 11: v3 for every codec, the default before session 14; 12: 8
 * with every V tile staged once and the P tiles double-buffered in shared memory (at most 1024 keys; longer as
 * 8); 13, 14: 12's P pipeline over a ring of four V tiles, 2 / 4 warpgroups a block, any length; other codecs
 * and layouts as variant 0). Any other number runs as 0, among them those removed in session 15 (slower than
 * another variant at every shape of runs 19 and 20): 1 (the v3 gather in 8-warp blocks), 3 (the v4 gather
 * with V staged in shared memory), 6 (q8/q4 rows on the tensor cores with the next key tile's map words loaded
 * during the current one), 7 (8 with four warpgroups a block), 9 and 10 (4 and 3 with one packed word an
 * entry in the gather's list). */
template <typename T>
int ac_cu_codec_av_seqs_variant(const ac_cu_codec *c, const void *const *d_maps, const int *d_cu, int s0, int n_seq,
                                int Lmax, int H, int Hkv, int hd, const T *v, int ldv, T *out, int ldo, cudaStream_t st,
                                int variant);

#endif
