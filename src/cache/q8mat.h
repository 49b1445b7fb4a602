/* q8mat.h — small int8 matrices for the cache's lookup keys (the projector's
 * two layers, the random projection): y = W x + b with W in int8 (a scale per
 * row) and x quantised to uint8 per call, 64 products per AVX512-VNNI
 * instruction. A lookup reads these weights cold from memory on every query
 * (the forward pass in between evicts them), so their bytes and layout are
 * the cost: a quarter of the f32 bytes, one sequential stream (blocks of 4
 * rows x 64 columns), on huge pages. Measured on a cold 256 x 1568 matrix:
 * f32 row-major 60 us, f16 one stream 31 us, int8 converted to f32 17 us,
 * int8 x uint8 13 us (and a whole 1537 -> 256 -> 128 projector key 25 -> 18
 * us with huge pages). The integer dot products are the same on every code
 * path, so keys are reproducible. */
#ifndef AC_CACHE_Q8MAT_H
#define AC_CACHE_Q8MAT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ac_q8mat {
    int rows, cols, ld; /* ld: cols rounded up to 64                                  */
    int8_t *w;          /* [rows/4][ld/64][4][64] codes (rows up to 4), owned          */
    float *scale;       /* [rows up to 4] max |W[r]| / 127 (inside w's allocation)     */
    int32_t *rsum;      /* [rows up to 4] sum of row r's codes (inside w's allocation) */
} ac_q8mat;

/* Widest matrix: the int32 dot products hold 255 * 127 * cols without overflow. */
#define AC_Q8MAT_MAX_COLS 65536

/* m = W [rows][cols] (row-major f32), quantised. Caller frees with
 * ac_q8mat_free. AC_OK, AC_ERR_ARG (bad shape, cols > AC_Q8MAT_MAX_COLS) or
 * AC_ERR_NOMEM. */
int ac_q8mat_pack(const float *W, int rows, int cols, ac_q8mat *m);
void ac_q8mat_free(ac_q8mat *m); /* zeroes *m; NULL or empty is fine */

/* x8 [ld] = uint8 codes of x [n] (zero-padded to ld): x ~ sx (x8 - off), off
 * 128 for a signed x, 0 for a non-negative one (e.g. after ReLU). Returns sx. */
float ac_q8_quant_u8(const float *x, int n, int ld, int nonneg, uint8_t *x8);

/* y[r] = b[r] + scale[r] sx (W8[r] . (x8 - off)), ReLU'd if relu; b may be
 * NULL. x8 [m->ld] from ac_q8_quant_u8 with the same off. */
void ac_q8mat_gemv(const ac_q8mat *m, const float *b, const uint8_t *x8, float sx, int off, float *y, int relu);

/* n products at once: y [n][ldy] row i = ac_q8mat_gemv of x8 [n][ldx] row i
 * with scale sx[i], bitwise (the same integer dot products and the same float
 * expression per element). Each block of 4 weight rows is read from memory
 * once for all n vectors (it stays in L1 while they pass), and the blocks are
 * split over OpenMP threads when the work is large: call it from outside any
 * parallel region to use them. ldx >= m->ld, ldy >= m->rows. */
void ac_q8mat_gemm(const ac_q8mat *m, const float *b, const uint8_t *x8, int ldx, const float *sx, int n, int off,
                   float *y, int ldy, int relu);

#endif
