/* fuzz_gguf.c — libFuzzer entry point for the GGUF reader (not built by
 * default; the tests/ glob only picks up test_*.c).
 *
 * scripts/fuzz.sh builds and runs it for a bounded time (CI); by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *       tests/fuzz_gguf.c src/load/gguf.c src/load/gguf_write.c src/util/common.c -lm -o /tmp/fuzz_gguf
 *   mkdir -p /tmp/gguf_corpus && FUZZ_SEED_DIR=/tmp/gguf_corpus /tmp/fuzz_gguf -runs=0 /tmp/gguf_corpus
 *   /tmp/fuzz_gguf -max_len=4096 -max_total_time=60 /tmp/gguf_corpus
 * With -DFUZZ_GGUF_MAIN it builds as a plain program that replays files given on
 * the command line (for gcc / no libFuzzer). With FUZZ_SEED_DIR set,
 * LLVMFuzzerInitialize writes a small valid GGUF (seed.gguf) into that directory. */
#include "load/gguf.h"
#include "util/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint64_t g_sink;

/* With FUZZ_SEED_DIR set (scripts/fuzz.sh), write a small valid GGUF there:
 * one key of every scalar type, string and number arrays, and tensors of
 * F32, F16 and Q8_0, so the fuzzer starts from the reader's whole surface. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = getenv("FUZZ_SEED_DIR");
    if (!dir) return 0;
    ac_gguf_writer *w = ac_gguf_writer_new();
    if (!w) abort();
    const char *strs[3] = {"a", "bc", "\xc3\xa9t\xc3\xa9"};
    const float fv[4] = {0.5f, -1.0f, 2.0f, 3.25f};
    const int32_t iv[3] = {1, -2, 3};
    float t32[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint16_t t16[6] = {0x3c00, 0x4000, 0xbc00, 0, 0x7bff, 1};
    uint8_t q8[34] = {0x00, 0x3c}; /* one Q8_0 block: fp16 scale 1.0, 32 int8 */
    for (int i = 0; i < 32; i++) q8[2 + i] = (uint8_t)(i * 7 - 100);
    const int64_t ne32[2] = {4, 2}, ne16[2] = {3, 2}, ne8[1] = {32};
    int rc = ac_gguf_w_str(w, "general.architecture", "llama") | ac_gguf_w_u32(w, "u32", 7) | ac_gguf_w_i32(w, "i32", -7) |
             ac_gguf_w_u64(w, "u64", 1ull << 40) | ac_gguf_w_f32(w, "f32", 0.25f) | ac_gguf_w_bool(w, "bool", 1) |
             ac_gguf_w_arr_str(w, "strs", strs, 3) | ac_gguf_w_arr_f32(w, "fv", fv, 4) | ac_gguf_w_arr_i32(w, "iv", iv, 3) |
             ac_gguf_w_tensor(w, "t.f32", 0, 2, ne32, t32) | ac_gguf_w_tensor(w, "t.f16", 1, 2, ne16, t16) |
             ac_gguf_w_tensor(w, "t.q8", 8, 1, ne8, q8);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (rc || ac_gguf_w_to_memory(w, 3, &buf, &n)) abort();
    ac_gguf_writer_free(w);
    char path[512];
    snprintf(path, sizeof path, "%s/seed.gguf", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) abort();
    free(buf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ac_gguf_file *g = NULL;
    int rc = ac_gguf_open_memory(data, size, &g);
    if (rc != AC_OK) {
        if (rc != AC_ERR_FORMAT && rc != AC_ERR_NOMEM) abort(); /* unexpected status */
        if (ac_last_error()[0] == 0) abort();                  /* every failure names its problem */
        return 0;
    }
    uint64_t h = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const ac_gguf_kv *kv = &g->kv[i];
        for (uint64_t j = 0; j < kv->key.len; j++) h += (uint8_t)kv->key.ptr[j];
        if (kv->type == AC_GGUF_T_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++) h += (uint8_t)kv->v.str.ptr[j];
        if (kv->type == AC_GGUF_T_ARRAY) {
            if (kv->arr_type == AC_GGUF_T_STRING) {
                for (uint64_t e = 0; e < kv->arr_n; e++)
                    for (uint64_t j = 0; j < kv->arr_str[e].len; j++) h += (uint8_t)kv->arr_str[e].ptr[j];
            } else {
                for (uint64_t e = 0; e < kv->arr_n; e++)
                    h += (uint64_t)ac_gguf_arr_i32(kv, e) + ac_gguf_arr_u32(kv, e) + (uint64_t)(ac_gguf_arr_f32(kv, e) > 0);
            }
        }
        if (kv->key.len < 128 && !memchr(kv->key.ptr, 0, kv->key.len)) {
            char k[128];
            int64_t iv;
            double dv;
            int bv;
            ac_gguf_str sv;
            const ac_gguf_kv *av;
            memcpy(k, kv->key.ptr, kv->key.len);
            k[kv->key.len] = 0;
            if (ac_gguf_find(g, k) != kv) abort();
            h += (uint64_t)ac_gguf_get_int(g, k, &iv, 1) + (uint64_t)ac_gguf_get_float(g, k, &dv, 1) +
                 (uint64_t)ac_gguf_get_bool(g, k, &bv, 1) + (uint64_t)ac_gguf_get_str(g, k, &sv, 1) +
                 (uint64_t)ac_gguf_get_arr(g, k, AC_GGUF_T_COUNT, &av, 1);
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ac_gguf_tensor *t = &g->tensors[i];
        const uint8_t *d = t->data;
        if (d < g->base || (size_t)(d - g->base) > g->size || t->nbytes > g->size - (size_t)(d - g->base)) abort();
        for (size_t j = 0; j < t->nbytes; j++) h += d[j];
        if (t->name.len < 128 && !memchr(t->name.ptr, 0, t->name.len)) {
            char k[128];
            memcpy(k, t->name.ptr, t->name.len);
            k[t->name.len] = 0;
            if (ac_gguf_find_tensor(g, k) != t) abort();
            h += (uint64_t)ac_gguf_expect_tensor(g, k, t->n_dims, t->ne, NULL, 1);
        }
    }
    g_sink = h;
    ac_gguf_close(g);
    return 0;
}

#ifdef FUZZ_GGUF_MAIN
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
        if (b && fread(b, 1, (size_t)n, f) == (size_t)n) LLVMFuzzerTestOneInput(b, (size_t)n);
        free(b);
        fclose(f);
    }
    return 0;
}
#endif
