/* index_scan.h — the kernels of the flat index's own exact scan (index.cpp,
 * flat_search), one set per CPU level (util/cpu.h): portable C in
 * index_scan.c, index_scan_avx2.c, index_scan_avx512.c. Internal.
 *
 * Vectors are kept twice: f32 (FAISS's copy) and f16 in blocks of 16 stored
 * element-major ([n/16][d][16]: element j of the 16 vectors side by side, so
 * one multiply-add serves 16 vectors and no horizontal sums are needed).
 *
 * The error bound of index.cpp's proof holds for every level. With x^ the f16
 * copy of x (relative rounding 2^-11; absolute 2^-25 below f16's normal
 * range) and f32 arithmetic (unit roundoff u = 2^-24):
 *   |q.x - q.x^| <= 2^-11 |q| |x| + d 2^-25 |q|_inf                 (rounding to f16)
 *   |fl(q.x^) - q.x^| <= h u sum_j |q_j x^_j| <= h u (1 + 2^-11) |q| |x| + ...
 * where h is the most roundings any one product q_j x^_j goes through on its
 * way into the result: the error of a sum in any order (any tree of adds or
 * fused multiply-adds) is at most h u times the sum of the magnitudes, to
 * first order. The f16 pass sums as follows per vector:
 *   portable C     : one product rounding, then d sequential adds: h <= d + 1
 *   AVX2, AVX-512, : 4 FMA chains (j mod 4; the d mod 4 last terms on the
 *   NEON             first), then (c0 + c1) + (c2 + c3): h <= d/4 + 5, and
 *                    h <= d + 1 for every d (adding a chain that is still
 *                    zero is exact)
 * so h <= d + 1 on every level, and g = 2^-11 + (d + 2) 2^-24 bounds both
 * terms together (to first order, for d + 1 <= 2^11); index.cpp adds a
 * relative margin of 1e-5 + (d + 32) 2^-24 for the remaining roundings: of
 * the exact similarities (sim: sums of d products, at most d + 1 roundings
 * deep on every level) and of L2's 2 q.x^ - |x|^2.
 *
 * AVX2 and AVX-512 add in exactly the same order per lane (the AVX2 kernels
 * keep the AVX-512 register layout as pairs of 8-lane halves, NEON's on
 * aarch64 as quarters), so they return bitwise the same similarities and
 * results. */
#ifndef AC_CACHE_INDEX_SCAN_H
#define AC_CACHE_INDEX_SCAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_scan_kernels {
    /* The exact similarity in f32: q.x (cosine: normalised vectors) or
     * -|q - x|^2 (l2). q, x: [d]. */
    float (*sim)(const float *q, const float *x, int d, int l2);
    /* Approximate similarities out[16] of q to the nv <= 16 vectors of one
     * element-major f16 block blk [d][16] (sim's convention, up to the
     * constant -|q|^2 for L2: 2 q.x^ - sq); sq [nv]: |x|^2. Lanes >= nv of
     * out are written (garbage). Returns the mask of lanes < nv above thr. */
    uint32_t (*block)(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                      float *out);
    /* block for 4 queries q[i] at once (a batch, ac_index_search_batch), with
     * thresholds thr[i], into out[i], masks into mask[i]: each query's values
     * bitwise block's (the same FMA chains, in the same order), the block's
     * f16 codes loaded and converted once for the four. NULL at levels
     * without one (block serves each query). */
    void (*block4)(const uint16_t *blk, const float *sq, int nv, const float *const *q, int d, int l2,
                   const float *thr, float *const *out, uint32_t *mask);
} ac_scan_kernels;

/* The kernels of the level in use (ac_cpu_level()). Never NULL. */
const ac_scan_kernels *ac_scan_kernels_now(void);

float ac_scan_sim_avx2(const float *q, const float *x, int d, int l2);
uint32_t ac_scan_block_avx2(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                            float *out);
float ac_scan_sim_neon(const float *q, const float *x, int d, int l2);
uint32_t ac_scan_block_neon(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                            float *out);
float ac_scan_sim_avx512(const float *q, const float *x, int d, int l2);
uint32_t ac_scan_block_avx512(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2,
                              float thr, float *out);
void ac_scan_block4_avx512(const uint16_t *blk, const float *sq, int nv, const float *const *q, int d, int l2,
                           const float *thr, float *const *out, uint32_t *mask);

#ifdef __cplusplus
}
#endif
#endif
