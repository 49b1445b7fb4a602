/* kernels.h — the attention cache's per-instruction-set kernels (internal).
 *
 * Each hot loop of the cache has a portable C version in its module's own
 * file (codec.c, q8mat.c, index_scan.c, projector.c) and SIMD versions in
 * *_avx2.c / *_avx512.c (*_neon.c on aarch64), which CMake compiles with their
 * level's target flags (util/cpu.h). The module picks one at run time from
 * ac_cpu_level() through a small table; nothing here may be called at a level
 * above ac_cpu_level(). Arguments and results: as the public function each
 * one implements (named in its comment).
 *
 * What stays equal across levels (tests/test_cache_*.c check it):
 *   - codec A.V: AVX2 and AVX-512 decode every probability exactly alike and
 *     add p_j V[j][d] with one FMA per stored column in column order, so their
 *     outputs are bitwise equal; portable C rounds the product before the add
 *     (no FMA on the x86-64 baseline): within 1e-6 relative of sum |p_j V_jd|.
 *   - q8mat: integer dot products, exact on every path (bitwise equal keys).
 *   - the f16 scan: AVX2 and AVX-512 sum in the same order (bitwise equal),
 *     portable C in another; index_scan.h states the bound that holds for all.
 * On aarch64 the NEON kernels (Advanced SIMD is always there) serve the one
 * level, AC_CPU_SCALAR; their arithmetic is the x86 SIMD kernels' (codec,
 * scan) or exact (q8mat). */
#ifndef AC_CACHE_KERNELS_H
#define AC_CACHE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cache/codec.h"
#include "cache/q8mat.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__x86_64__) || defined(__i386__)
#define AC_CACHE_X86 1
#else
#define AC_CACHE_X86 0
#endif
#if defined(__aarch64__)
#define AC_CACHE_NEON 1
#else
#define AC_CACHE_NEON 0
#endif

/* ---- codec.h: ac_codec_av_row and ac_codec_av ------------------------------------- */
typedef void (*ac_codec_av_row_fn)(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v,
                                   int head_dim, float *out);
typedef void (*ac_codec_av_fn)(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v,
                               int head_dim, float *out, int ld_o);
void ac_codec_av_row_avx2(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                          float *out);
void ac_codec_av_avx2(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                      float *out, int ld_o);
void ac_codec_av_row_avx512(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                            float *out);
void ac_codec_av_avx512(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v, int head_dim,
                        float *out, int ld_o);
void ac_codec_av_row_neon(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v, int head_dim,
                          float *out);

/* ---- q8mat.h: ac_q8_quant_u8 and ac_q8mat_gemv --------------------------------------- */
/* The quantiser's max |x| (exact whatever the order). */
typedef float (*ac_q8_absmax_fn)(const float *x, int n);
/* x8[i] = round_even(clamp(x[i] inv, low, lim)) + off for i < n (as lrintf). */
typedef void (*ac_q8_codes_fn)(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8);
/* v[k] = W8[r0 + k] . x8 over m->ld columns, k < 4 (rows past m->rows are zero codes). */
typedef void (*ac_q8_dot4_fn)(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]);
float ac_q8_absmax_avx2(const float *x, int n);
void ac_q8_codes_avx2(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8);
void ac_q8_dot4_avx2(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]);
float ac_q8_absmax_avx512(const float *x, int n);
void ac_q8_codes_avx512(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8);
float ac_q8_absmax_neon(const float *x, int n);
void ac_q8_codes_neon(const float *x, int n, float inv, float low, float lim, int off, uint8_t *x8);
void ac_q8_dot4_neon(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]);
/* AVX-512 without VNNI: ac_q8_dot4_avx2. */
void ac_q8_dot4_avx512vnni(const ac_q8mat *m, int r0, const uint8_t *x8, int32_t v[4]);

/* ---- projector.c: y = b + W x (f32 weights, training and unpacked keys) ------------ */
/* y[r] = b[r] + W[r] . x for r in [r0, r0 + 4) (W [rows][n] row-major), ReLU'd if relu. */
typedef void (*ac_proj_gemv4_fn)(const float *W, const float *b, const float *x, int r0, int n, float *y, int relu);
void ac_proj_gemv4_avx2(const float *W, const float *b, const float *x, int r0, int n, float *y, int relu);
void ac_proj_gemv4_avx512(const float *W, const float *b, const float *x, int r0, int n, float *y, int relu);

#ifdef __cplusplus
}
#endif
#endif
