/* cpu.h — which instruction-set level the CPU kernels run at (chosen at run
 * time from cpuid, lowered by AC_CPU=avx512|avx2|scalar or ac_cpu_set_level).
 *
 * Levels (each includes the ones below it):
 *   AC_CPU_SCALAR  portable C, any x86-64 (and any other architecture)
 *   AC_CPU_AVX2    AVX2 + FMA + F16C (Haswell, Zen 1 and later)
 *   AC_CPU_AVX512  AVX-512 F/BW/VL/DQ (+ BF16 and VNNI kernels where present)
 * On aarch64 the levels are AC_CPU_SCALAR and AC_CPU_NEON (Advanced SIMD, in
 * every aarch64; AC_CPU=neon|scalar), NEON having AVX2's rank: code that
 * compares a level with AC_CPU_AVX2 or AC_CPU_AVX512 must do so only on x86
 * (the x86 kernels are not built elsewhere). The cache's NEON kernels serve
 * both aarch64 levels (src/cache/kernels.h); the forward's run at AC_CPU_NEON.
 *
 * Kernels for a level live in their own translation units, named *_avx2.c /
 * *_avx512.c (*_neon.c on aarch64), which CMake compiles with that level's target flags (see
 * CMakeLists.txt, ac_isa_sources); the rest of the engine is built for the
 * baseline. Code must call a level's kernels only when ac_cpu_level() is at
 * least that level.
 *
 * The level is process-wide: set it (or AC_CPU) before loading models and
 * creating contexts; weight packing at load depends on it. Reading it is
 * thread-safe. */
#ifndef AC_CPU_H
#define AC_CPU_H

enum { AC_CPU_SCALAR = 0, AC_CPU_AVX2 = 1, AC_CPU_AVX512 = 2, AC_CPU_NEON = 1 /* aarch64 */ };

typedef struct ac_cpu_features {
    int avx2, fma, f16c;                            /* AC_CPU_AVX2 needs all three   */
    int avx512f, avx512bw, avx512vl, avx512dq;      /* AC_CPU_AVX512 needs all four  */
    int avx512bf16, avx512vnni, avxvnni;            /* optional extras               */
    int neon;                                       /* aarch64                       */
} ac_cpu_features;

/* What the hardware (and OS) supports; detected once. Never NULL. */
const ac_cpu_features *ac_cpu_hw(void);
/* The highest level the hardware supports. */
int ac_cpu_hw_level(void);
/* The level in use: the hardware's, lowered by AC_CPU (read at first use) or
 * ac_cpu_set_level. */
int ac_cpu_level(void);
/* AVX512-BF16 / AVX512-VNNI kernels usable (level AVX512 and the feature present). */
int ac_cpu_bf16(void);
int ac_cpu_vnni(void);
/* Force a level (AC_CPU_*), or -1 to go back to the default. A level above
 * the hardware's is refused: AC_ERR_UNSUPPORTED with a message naming both. */
int ac_cpu_set_level(int level);
/* "avx512", "avx2", "scalar" -> level (aarch64: "neon", "scalar"); AC_ERR_ARG
 * naming the value otherwise. */
int ac_cpu_parse_level(const char *name, int *level);
/* AC_OK, or the error for an AC_CPU value that is not a level or above the
 * hardware's (checked by model load and context creation). */
int ac_cpu_check_env(void);
const char *ac_cpu_level_name(int level);
/* One line: level in use, hardware level and extras, e.g.
 * "avx512 (hardware avx512 +bf16 +vnni)". Returns buf. */
const char *ac_cpu_describe(char *buf, int n);

#endif
