/* index_scan_avx512.c — the flat index scan's kernels with AVX-512
 * (index_scan.h: summation order and error bound). */
#include "cache/index_scan.h"

#include <immintrin.h>
#include <math.h>

float ac_scan_sim_avx512(const float *q, const float *x, int d, int l2) {
    int j = 0;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; j + 32 <= d; j += 32) {
        __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
        const __m512 q0 = _mm512_loadu_ps(q + j), q1 = _mm512_loadu_ps(q + j + 16);
        if (l2) {
            x0 = _mm512_sub_ps(x0, q0), x1 = _mm512_sub_ps(x1, q1);
            a0 = _mm512_fmadd_ps(x0, x0, a0), a1 = _mm512_fmadd_ps(x1, x1, a1);
        } else {
            a0 = _mm512_fmadd_ps(x0, q0, a0), a1 = _mm512_fmadd_ps(x1, q1, a1);
        }
    }
    float t[16];
    _mm512_storeu_ps(t, _mm512_add_ps(a0, a1));
    float acc = 0.0f;
    for (int i = 0; i < 16; i++) acc += t[i];
    for (; j < d; j++) { /* one FMA per term, as in ac_scan_sim_avx2 */
        const float e = l2 ? x[j] - q[j] : x[j];
        acc = fmaf(e, l2 ? e : q[j], acc);
    }
    return l2 ? -acc : acc;
}

uint32_t ac_scan_block_avx512(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2,
                              float thr, float *out) {
    int j = 0;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
#define AC_LDB(jj) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + (size_t)(jj) * 16)))
    for (; j + 4 <= d; j += 4) {
        a0 = _mm512_fmadd_ps(AC_LDB(j), _mm512_set1_ps(q[j]), a0);
        a1 = _mm512_fmadd_ps(AC_LDB(j + 1), _mm512_set1_ps(q[j + 1]), a1);
        a2 = _mm512_fmadd_ps(AC_LDB(j + 2), _mm512_set1_ps(q[j + 2]), a2);
        a3 = _mm512_fmadd_ps(AC_LDB(j + 3), _mm512_set1_ps(q[j + 3]), a3);
    }
    for (; j < d; j++) a0 = _mm512_fmadd_ps(AC_LDB(j), _mm512_set1_ps(q[j]), a0);
#undef AC_LDB
    const __mmask16 valid = (__mmask16)(nv >= 16 ? 0xFFFFu : (1u << nv) - 1u);
    __m512 sv = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    if (l2) sv = _mm512_fmsub_ps(_mm512_set1_ps(2.0f), sv, _mm512_maskz_loadu_ps(valid, sq));
    _mm512_storeu_ps(out, sv);
    return _mm512_mask_cmp_ps_mask(valid, sv, _mm512_set1_ps(thr), _CMP_GT_OQ);
}

/* ac_scan_block_avx512 for four queries: per query the same four chains
 * (element j into chain j mod 4, the d mod 4 last ones into chain 0) and the
 * same final sums, so the same bits; each element's 16 codes converted once. */
void ac_scan_block4_avx512(const uint16_t *blk, const float *sq, int nv, const float *const *q, int d, int l2,
                           const float *thr, float *const *out, uint32_t *mask) {
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
           a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    int j = 0;
#define AC_LDB(jj) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + (size_t)(jj) * 16)))
    for (; j + 4 <= d; j += 4) {
        const __m512 x0 = AC_LDB(j), x1 = AC_LDB(j + 1), x2 = AC_LDB(j + 2), x3 = AC_LDB(j + 3);
        a00 = _mm512_fmadd_ps(x0, _mm512_set1_ps(q0[j]), a00);
        a01 = _mm512_fmadd_ps(x1, _mm512_set1_ps(q0[j + 1]), a01);
        a02 = _mm512_fmadd_ps(x2, _mm512_set1_ps(q0[j + 2]), a02);
        a03 = _mm512_fmadd_ps(x3, _mm512_set1_ps(q0[j + 3]), a03);
        a10 = _mm512_fmadd_ps(x0, _mm512_set1_ps(q1[j]), a10);
        a11 = _mm512_fmadd_ps(x1, _mm512_set1_ps(q1[j + 1]), a11);
        a12 = _mm512_fmadd_ps(x2, _mm512_set1_ps(q1[j + 2]), a12);
        a13 = _mm512_fmadd_ps(x3, _mm512_set1_ps(q1[j + 3]), a13);
        a20 = _mm512_fmadd_ps(x0, _mm512_set1_ps(q2[j]), a20);
        a21 = _mm512_fmadd_ps(x1, _mm512_set1_ps(q2[j + 1]), a21);
        a22 = _mm512_fmadd_ps(x2, _mm512_set1_ps(q2[j + 2]), a22);
        a23 = _mm512_fmadd_ps(x3, _mm512_set1_ps(q2[j + 3]), a23);
        a30 = _mm512_fmadd_ps(x0, _mm512_set1_ps(q3[j]), a30);
        a31 = _mm512_fmadd_ps(x1, _mm512_set1_ps(q3[j + 1]), a31);
        a32 = _mm512_fmadd_ps(x2, _mm512_set1_ps(q3[j + 2]), a32);
        a33 = _mm512_fmadd_ps(x3, _mm512_set1_ps(q3[j + 3]), a33);
    }
    for (; j < d; j++) {
        const __m512 x = AC_LDB(j);
        a00 = _mm512_fmadd_ps(x, _mm512_set1_ps(q0[j]), a00);
        a10 = _mm512_fmadd_ps(x, _mm512_set1_ps(q1[j]), a10);
        a20 = _mm512_fmadd_ps(x, _mm512_set1_ps(q2[j]), a20);
        a30 = _mm512_fmadd_ps(x, _mm512_set1_ps(q3[j]), a30);
    }
#undef AC_LDB
    const __mmask16 valid = (__mmask16)(nv >= 16 ? 0xFFFFu : (1u << nv) - 1u);
    const __m512 sqv = l2 ? _mm512_maskz_loadu_ps(valid, sq) : _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);
    __m512 sv[4] = {_mm512_add_ps(_mm512_add_ps(a00, a01), _mm512_add_ps(a02, a03)),
                    _mm512_add_ps(_mm512_add_ps(a10, a11), _mm512_add_ps(a12, a13)),
                    _mm512_add_ps(_mm512_add_ps(a20, a21), _mm512_add_ps(a22, a23)),
                    _mm512_add_ps(_mm512_add_ps(a30, a31), _mm512_add_ps(a32, a33))};
    for (int i = 0; i < 4; i++) {
        if (l2) sv[i] = _mm512_fmsub_ps(two, sv[i], sqv);
        _mm512_storeu_ps(out[i], sv[i]);
        mask[i] = _mm512_mask_cmp_ps_mask(valid, sv[i], _mm512_set1_ps(thr[i]), _CMP_GT_OQ);
    }
}
