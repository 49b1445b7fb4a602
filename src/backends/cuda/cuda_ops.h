/* cuda_ops.h — the CUDA backend's element-wise and row kernels (everything
 * but the GEMMs and attention): embeddings, RMSNorm, LayerNorm, RoPE, SwiGLU,
 * GELU(erf), pooling, gathers. Each launcher runs on `st` and returns AC_OK or
 * an AC_ERR_* status (launch failures). T is the activation type: float or bf16.
 * Row layout: T rows of the packed sequences (cu_seqlens style), row r has the
 * position pos[r] inside its sequence. All pointers are device pointers. */
#ifndef AC_CUDA_OPS_H
#define AC_CUDA_OPS_H

#include "cuda_common.h"

/* x [n][D] f32 = tok [tokens[r]] (+ type0 [D] + pos_tab [pos[r]]) when type0/pos_tab are non-NULL (bert). */
int ac_cu_embed(float *x, const float *tok, const int *tokens, const float *pos_tab, const int *pos, const float *type0,
                int n, int D, cudaStream_t st);
/* out [n][D] = rmsnorm(x) * w. */
template <typename T> int ac_cu_rmsnorm(T *out, const float *x, const float *w, int n, int D, float eps, cudaStream_t st);
/* y [n][D] = layernorm(x) * w + b; y may alias x; out_t [n][D] (optional) gets the same values in T. */
template <typename T>
int ac_cu_layernorm(float *y, T *out_t, const float *x, const float *w, const float *b, int n, int D, float eps,
                    cudaStream_t st);
/* r [n][D] = layernorm(r + y) * w + b in place (bert's post-LN residual kept in T: the bf16 mode);
 * y32 [n][D] (optional) gets the same values in f32. Sum and statistics in f32. */
template <typename T>
int ac_cu_add_layernorm(T *r, const T *y, float *y32, const float *w, const float *b, int n, int D, float eps,
                        cudaStream_t st);
/* RoPE in place on q [n][ldq] (nh heads of hd) and k [n][ldk] (nkv heads): cs [pos][n_rot/2][2] (cos, sin).
 * neox 0: pairs (2i, 2i+1); 1: (i, i + n_rot/2). */
template <typename T>
int ac_cu_rope(T *q, int ldq, int nh, T *k, int ldk, int nkv, int hd, int n_rot, int neox, const float *cs,
               const int *pos, int n, cudaStream_t st);
/* h [n][F] = silu(gu[:, :F]) * gu[:, F:] with gu [n][2F]. */
template <typename T> int ac_cu_swiglu(T *h, const T *gu, int n, int F, cudaStream_t st);
/* x [count] = 0.5 x (1 + erf(x / sqrt 2)) in place. */
template <typename T> int ac_cu_gelu(T *x, size_t count, cudaStream_t st);
/* x [count] = tanh(x) (+ b[i % width] first if b) in place (classifier dense). */
int ac_cu_bias_tanh(float *x, const float *b, size_t count, int width, cudaStream_t st);
/* y [n][N] += b (broadcast bias; the fallback when cuBLASLt has no bias epilogue). */
template <typename T> int ac_cu_add_bias(T *y, int ldy, const float *b, int n, int N, cudaStream_t st);
/* out [n_seq][D] = pooling of h [T][D] per sequence (cu [n_seq+1] row offsets); mode: enum ac_pooling
 * (MEAN, CLS = first row, LAST); normalize: L2. */
int ac_cu_pool(float *out, const float *h, const int *cu, int n_seq, int D, int mode, int normalize, cudaStream_t st);
/* dst [n_seq][D] in T = row (first: cu[s], last: cu[s+1]-1) of src [T][D] f32. */
template <typename T> int ac_cu_gather(T *dst, const float *src, const int *cu, int n_seq, int D, int last, cudaStream_t st);
/* dst [n][D] f32: row r = a [src[r]] when src[r] >= 0, else b [-1 - src[r]] (the prefix cache: rows
 * computed on the GPU and given rows interleaved in sequence order). n < 2^31 grid rows. */
int ac_cu_rows_select(float *dst, const float *a, const float *b, const int *src, int n, int D, cudaStream_t st);
/* dst [2][n][w] f32 = columns col .. col + 2w - 1 of src [n][ld] (K then V of the qkv rows: the
 * prefix cache's copy of a layer's computed rows). */
template <typename T> int ac_cu_kv_out(float *dst, const T *src, int ld, int col, int n, int w, cudaStream_t st);
/* dst [count] T = src [count] f32. */
template <typename T> int ac_cu_convert(T *dst, const float *src, size_t count, cudaStream_t st);

#endif
