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
