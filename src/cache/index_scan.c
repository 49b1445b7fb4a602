/* index_scan.c — the flat index scan's portable C kernels and the choice of
 * kernels per CPU level (index_scan.h). */
#include "cache/index_scan.h"
#include "cache/kernels.h"
#include "util/fp16.h"
#include "util/cpu.h"

#if AC_CACHE_NEON
#define AC_PORTABLE __attribute__((unused)) /* aarch64: NEON serves the baseline level */
#else
#define AC_PORTABLE
#endif

AC_PORTABLE static float sim_c(const float *q, const float *x, int d, int l2) {
    float acc = 0.0f;
    for (int j = 0; j < d; j++) acc += l2 ? (x[j] - q[j]) * (x[j] - q[j]) : x[j] * q[j];
    return l2 ? -acc : acc;
}

AC_PORTABLE static uint32_t block_c(const uint16_t *blk, const float *sq, int nv, const float *q, int d, int l2, float thr,
                        float *out) {
    for (int v = 0; v < 16; v++) out[v] = 0;
    for (int j = 0; j < d; j++)
        for (int v = 0; v < 16; v++) out[v] += ac_fp16_to_fp32(blk[(size_t)j * 16 + v]) * q[j];
    uint32_t m = 0;
    for (int v = 0; v < nv; v++) {
        if (l2) out[v] = 2.0f * out[v] - sq[v];
        m |= (uint32_t)(out[v] > thr) << v;
    }
    return m;
}

static const ac_scan_kernels kernels[] = {
#if AC_CACHE_NEON
    {ac_scan_sim_neon, ac_scan_block_neon, NULL}, /* scalar and neon (util/cpu.h): NEON serves both */
    {ac_scan_sim_neon, ac_scan_block_neon, NULL},
#else
    {sim_c, block_c, NULL},
#endif
#if AC_CACHE_X86
    {ac_scan_sim_avx2, ac_scan_block_avx2, NULL},
    {ac_scan_sim_avx512, ac_scan_block_avx512, ac_scan_block4_avx512},
#endif
};

const ac_scan_kernels *ac_scan_kernels_now(void) {
    const int l = ac_cpu_level();
    return &kernels[l < (int)(sizeof kernels / sizeof kernels[0]) ? l : 0];
}
