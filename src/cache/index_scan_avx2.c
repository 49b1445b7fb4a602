/* index_scan_avx2.c — the flat index scan's kernels with AVX2 + FMA + F16C:
 * the AVX-512 kernels' arithmetic on pairs of 8-lane halves, so every lane
 * adds in the same order and the results are bitwise equal (index_scan.h). */
#include "cache/index_scan.h"

#include <immintrin.h>
#include <math.h>

float ac_scan_sim_avx2(const float *q, const float *x, int d, int l2) {
    int j = 0;
    /* a0, a1 of the AVX-512 kernel as (lo, hi) halves */
    __m256 a0l = _mm256_setzero_ps(), a0h = _mm256_setzero_ps(), a1l = _mm256_setzero_ps(), a1h = _mm256_setzero_ps();
    for (; j + 32 <= d; j += 32) {
        __m256 x0l = _mm256_loadu_ps(x + j), x0h = _mm256_loadu_ps(x + j + 8);
        __m256 x1l = _mm256_loadu_ps(x + j + 16), x1h = _mm256_loadu_ps(x + j + 24);
        const __m256 q0l = _mm256_loadu_ps(q + j), q0h = _mm256_loadu_ps(q + j + 8);
        const __m256 q1l = _mm256_loadu_ps(q + j + 16), q1h = _mm256_loadu_ps(q + j + 24);
        if (l2) {
            x0l = _mm256_sub_ps(x0l, q0l), x0h = _mm256_sub_ps(x0h, q0h);
            x1l = _mm256_sub_ps(x1l, q1l), x1h = _mm256_sub_ps(x1h, q1h);
            a0l = _mm256_fmadd_ps(x0l, x0l, a0l), a0h = _mm256_fmadd_ps(x0h, x0h, a0h);
            a1l = _mm256_fmadd_ps(x1l, x1l, a1l), a1h = _mm256_fmadd_ps(x1h, x1h, a1h);
        } else {
            a0l = _mm256_fmadd_ps(x0l, q0l, a0l), a0h = _mm256_fmadd_ps(x0h, q0h, a0h);
            a1l = _mm256_fmadd_ps(x1l, q1l, a1l), a1h = _mm256_fmadd_ps(x1h, q1h, a1h);
        }
    }
    float t[16];
    _mm256_storeu_ps(t, _mm256_add_ps(a0l, a1l));
    _mm256_storeu_ps(t + 8, _mm256_add_ps(a0h, a1h));
    float acc = 0.0f;
    for (int i = 0; i < 16; i++) acc += t[i];
    for (; j < d; j++) { /* one FMA per term, as in ac_scan_sim_avx512 */
        const float e = l2 ? x[j] - q[j] : x[j];
        acc = fmaf(e, l2 ? e : q[j], acc);
    }
    return l2 ? -acc : acc;
}

uint32_t ac_scan_block_avx2(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                            float *out) {
    int j = 0;
    /* the AVX-512 kernel's a0..a3, each as (lo, hi): vectors 0-7 and 8-15 */
    __m256 a0l = _mm256_setzero_ps(), a1l = _mm256_setzero_ps(), a2l = _mm256_setzero_ps(), a3l = _mm256_setzero_ps();
    __m256 a0h = _mm256_setzero_ps(), a1h = _mm256_setzero_ps(), a2h = _mm256_setzero_ps(), a3h = _mm256_setzero_ps();
#define AC_LDL(jj) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + (size_t)(jj) * 16)))
#define AC_LDH(jj) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + (size_t)(jj) * 16 + 8)))
    for (; j + 4 <= d; j += 4) {
        const __m256 q0 = _mm256_broadcast_ss(q + j), q1 = _mm256_broadcast_ss(q + j + 1);
        const __m256 q2 = _mm256_broadcast_ss(q + j + 2), q3 = _mm256_broadcast_ss(q + j + 3);
        a0l = _mm256_fmadd_ps(AC_LDL(j), q0, a0l), a0h = _mm256_fmadd_ps(AC_LDH(j), q0, a0h);
        a1l = _mm256_fmadd_ps(AC_LDL(j + 1), q1, a1l), a1h = _mm256_fmadd_ps(AC_LDH(j + 1), q1, a1h);
        a2l = _mm256_fmadd_ps(AC_LDL(j + 2), q2, a2l), a2h = _mm256_fmadd_ps(AC_LDH(j + 2), q2, a2h);
        a3l = _mm256_fmadd_ps(AC_LDL(j + 3), q3, a3l), a3h = _mm256_fmadd_ps(AC_LDH(j + 3), q3, a3h);
    }
    for (; j < d; j++) {
        const __m256 qj = _mm256_broadcast_ss(q + j);
        a0l = _mm256_fmadd_ps(AC_LDL(j), qj, a0l), a0h = _mm256_fmadd_ps(AC_LDH(j), qj, a0h);
    }
#undef AC_LDL
#undef AC_LDH
    __m256 sl = _mm256_add_ps(_mm256_add_ps(a0l, a1l), _mm256_add_ps(a2l, a3l));
    __m256 sh = _mm256_add_ps(_mm256_add_ps(a0h, a1h), _mm256_add_ps(a2h, a3h));
    if (l2) {
        float s[16] = {0}; /* sq [nv]: nothing past it is read */
        for (int v = 0; v < nv && v < 16; v++) s[v] = sq[v];
        const __m256 two = _mm256_set1_ps(2.0f);
        sl = _mm256_fmsub_ps(two, sl, _mm256_loadu_ps(s));
        sh = _mm256_fmsub_ps(two, sh, _mm256_loadu_ps(s + 8));
    }
    _mm256_storeu_ps(out, sl);
    _mm256_storeu_ps(out + 8, sh);
    const __m256 vt = _mm256_set1_ps(thr);
    const uint32_t m = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(sl, vt, _CMP_GT_OQ)) |
                       (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(sh, vt, _CMP_GT_OQ)) << 8;
    return m & (nv >= 16 ? 0xFFFFu : (1u << nv) - 1u);
}
