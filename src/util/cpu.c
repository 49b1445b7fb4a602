/* cpu.c — run-time CPU feature detection and the kernel level in use. */
#include "util/cpu.h"
#include "util/common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static ac_cpu_features g_hw;
static atomic_int g_hw_done;     /* 0: not yet, 1: detected */
static atomic_int g_forced = -1; /* ac_cpu_set_level, -1: none */
static atomic_int g_env = -2;    /* AC_CPU: -2 unread, -1 unset or invalid, else level */

static void detect(ac_cpu_features *f) {
    memset(f, 0, sizeof *f);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f->avx2 = __builtin_cpu_supports("avx2");
    f->fma = __builtin_cpu_supports("fma");
    /* F16C has no __builtin_cpu_supports name in every GCC: CPUID.1:ECX bit 29 */
    {
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
        f->f16c = (c >> 29) & 1;
    }
    f->avx512f = __builtin_cpu_supports("avx512f");
    f->avx512bw = __builtin_cpu_supports("avx512bw");
    f->avx512vl = __builtin_cpu_supports("avx512vl");
    f->avx512dq = __builtin_cpu_supports("avx512dq");
    f->avx512bf16 = __builtin_cpu_supports("avx512bf16");
    f->avx512vnni = __builtin_cpu_supports("avx512vnni");
    { /* AVX-VNNI: CPUID.(7,1):EAX bit 4 (no __builtin_cpu_supports name in clang 14) */
        unsigned a, b, c, d;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
        if (a >= 7) {
            __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
            f->avxvnni = (a >> 4) & 1;
        }
    }
#elif defined(__aarch64__)
    f->neon = 1; /* Advanced SIMD is part of the aarch64 base */
#endif
}

const ac_cpu_features *ac_cpu_hw(void) {
    if (!atomic_load_explicit(&g_hw_done, memory_order_acquire)) {
        ac_cpu_features f;
        detect(&f); /* idempotent: racing threads write the same values */
        g_hw = f;
        atomic_store_explicit(&g_hw_done, 1, memory_order_release);
    }
    return &g_hw;
}

int ac_cpu_hw_level(void) {
    const ac_cpu_features *f = ac_cpu_hw();
    if (f->neon) return AC_CPU_NEON;
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx2 && f->fma && f->f16c) return AC_CPU_AVX512;
    if (f->avx2 && f->fma && f->f16c) return AC_CPU_AVX2;
    return AC_CPU_SCALAR;
}

#if defined(__aarch64__)
#define LEVEL_NAMES "neon or scalar"
static int parse(const char *name) {
    if (!strcasecmp(name, "neon")) return AC_CPU_NEON;
    if (!strcasecmp(name, "scalar")) return AC_CPU_SCALAR;
    return -1;
}
#else
#define LEVEL_NAMES "avx512, avx2 or scalar"
static int parse(const char *name) {
    if (!strcasecmp(name, "avx512")) return AC_CPU_AVX512;
    if (!strcasecmp(name, "avx2")) return AC_CPU_AVX2;
    if (!strcasecmp(name, "scalar")) return AC_CPU_SCALAR;
    return -1;
}
#endif

int ac_cpu_parse_level(const char *name, int *level) {
    if (!name || !level) return ac_err(AC_ERR_ARG, "cpu level: NULL argument");
    int lv = parse(name);
    if (lv < 0) return ac_err(AC_ERR_ARG, "cpu level '%s': expected " LEVEL_NAMES, name);
    *level = lv;
    return AC_OK;
}

static int env_level(void) {
    int e = atomic_load(&g_env);
    if (e != -2) return e;
    const char *s = getenv("AC_CPU");
    int lv = -1;
    if (s && *s && strcasecmp(s, "auto") && strcasecmp(s, "native")) {
        int parsed = parse(s); /* invalid values are reported by ac_cpu_check_env */
        if (parsed >= 0 && parsed <= ac_cpu_hw_level()) lv = parsed;
    }
    atomic_store(&g_env, lv);
    return lv;
}

int ac_cpu_check_env(void) {
    const char *s = getenv("AC_CPU");
    if (!s || !*s || !strcasecmp(s, "auto") || !strcasecmp(s, "native")) return AC_OK;
    int lv, rc;
    if ((rc = ac_cpu_parse_level(s, &lv))) return ac_err_prefix(rc, "AC_CPU");
    if (lv > ac_cpu_hw_level())
        return ac_err(AC_ERR_UNSUPPORTED, "AC_CPU=%s: this CPU supports at most %s", s,
                      ac_cpu_level_name(ac_cpu_hw_level()));
    return AC_OK;
}

int ac_cpu_level(void) {
    int f = atomic_load_explicit(&g_forced, memory_order_relaxed);
    if (f >= 0) return f;
    int e = env_level();
    return e >= 0 ? e : ac_cpu_hw_level();
}

int ac_cpu_bf16(void) { return ac_cpu_level() >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16; }
int ac_cpu_vnni(void) { return ac_cpu_level() >= AC_CPU_AVX512 && ac_cpu_hw()->avx512vnni; }

int ac_cpu_set_level(int level) {
    if (level < 0) {
        atomic_store(&g_forced, -1);
        return AC_OK;
    }
    if (level > AC_CPU_AVX512) return ac_err(AC_ERR_ARG, "cpu level %d: expected 0..%d", level, AC_CPU_AVX512);
    if (level > ac_cpu_hw_level())
        return ac_err(AC_ERR_UNSUPPORTED, "cpu level %s: this CPU supports at most %s", ac_cpu_level_name(level),
                      ac_cpu_level_name(ac_cpu_hw_level()));
    atomic_store(&g_forced, level);
    return AC_OK;
}

const char *ac_cpu_level_name(int level) {
#if defined(__aarch64__)
    if (level == AC_CPU_NEON) return "neon";
#endif
    switch (level) {
    case AC_CPU_AVX512: return "avx512";
    case AC_CPU_AVX2: return "avx2";
    case AC_CPU_SCALAR: return "scalar";
    default: return "?";
    }
}

const char *ac_cpu_describe(char *buf, int n) {
    const ac_cpu_features *f = ac_cpu_hw();
    int hw = ac_cpu_hw_level();
    snprintf(buf, (size_t)n, "%s (hardware %s%s%s)", ac_cpu_level_name(ac_cpu_level()), ac_cpu_level_name(hw),
             hw >= AC_CPU_AVX512 && f->avx512bf16 ? " +bf16" : "", hw >= AC_CPU_AVX512 && f->avx512vnni ? " +vnni" : "");
    return buf;
}

/* ---- public (attncache.h) ---------------------------------------------------------------- */
int ac_set_cpu_level(const char *name) {
    if (!name) return ac_err(AC_ERR_ARG, "ac_set_cpu_level: NULL name");
    if (!strcasecmp(name, "auto")) return ac_cpu_set_level(-1);
    int lv, rc;
    if ((rc = ac_cpu_parse_level(name, &lv))) return rc;
    return ac_cpu_set_level(lv);
}

const char *ac_cpu_info(char *buf, int n) {
    if (!buf || n <= 0) return buf;
    return ac_cpu_describe(buf, n);
}
