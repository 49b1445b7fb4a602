/* fuzz_gguf.c — libFuzzer entry point for the GGUF reader (not built by
 * default; the tests/ glob only picks up test_*.c).
 *
 * Build and run (from the repo root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *       tests/fuzz_gguf.c src/load/gguf.c src/load/gguf_write.c src/util/common.c -lm -o /tmp/fuzz_gguf
 *   mkdir -p /tmp/gguf_corpus && cp ../shared/vocab/ggml-vocab-bert-bge.gguf /tmp/gguf_corpus/  # optional seeds
 *   /tmp/fuzz_gguf -max_len=4096 -max_total_time=60 /tmp/gguf_corpus
 * With -DFUZZ_GGUF_MAIN it builds as a plain program that replays files given on
 * the command line (for gcc / no libFuzzer). The harness seeds itself with a small
 * valid file written by gguf_writer when the corpus is empty (LLVMFuzzerInitialize
 * writes nothing to disk; use -seed_inputs or the corpus dir for that). */
#include "load/gguf.h"
#include "util/common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint64_t g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = NULL;
    int rc = gguf_open_memory(data, size, &g);
    if (rc != AC_OK) {
        if (rc != AC_ERR_FORMAT && rc != AC_ERR_NOMEM) abort(); /* unexpected status */
        if (ac_last_error()[0] == 0) abort();                  /* every failure names its problem */
        return 0;
    }
    uint64_t h = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        for (uint64_t j = 0; j < kv->key.len; j++) h += (uint8_t)kv->key.ptr[j];
        if (kv->type == GGUF_T_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++) h += (uint8_t)kv->v.str.ptr[j];
        if (kv->type == GGUF_T_ARRAY) {
            if (kv->arr_type == GGUF_T_STRING) {
                for (uint64_t e = 0; e < kv->arr_n; e++)
                    for (uint64_t j = 0; j < kv->arr_str[e].len; j++) h += (uint8_t)kv->arr_str[e].ptr[j];
            } else {
                for (uint64_t e = 0; e < kv->arr_n; e++)
                    h += (uint64_t)gguf_arr_i32(kv, e) + gguf_arr_u32(kv, e) + (uint64_t)(gguf_arr_f32(kv, e) > 0);
            }
        }
        if (kv->key.len < 128 && !memchr(kv->key.ptr, 0, kv->key.len)) {
            char k[128];
            int64_t iv;
            double dv;
            int bv;
            gguf_str sv;
            const gguf_kv *av;
            memcpy(k, kv->key.ptr, kv->key.len);
            k[kv->key.len] = 0;
            if (gguf_find(g, k) != kv) abort();
            h += (uint64_t)gguf_get_int(g, k, &iv, 1) + (uint64_t)gguf_get_float(g, k, &dv, 1) +
                 (uint64_t)gguf_get_bool(g, k, &bv, 1) + (uint64_t)gguf_get_str(g, k, &sv, 1) +
                 (uint64_t)gguf_get_arr(g, k, GGUF_T_COUNT, &av, 1);
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        const uint8_t *d = t->data;
        if (d < g->base || (size_t)(d - g->base) > g->size || t->nbytes > g->size - (size_t)(d - g->base)) abort();
        for (size_t j = 0; j < t->nbytes; j++) h += d[j];
        if (t->name.len < 128 && !memchr(t->name.ptr, 0, t->name.len)) {
            char k[128];
            memcpy(k, t->name.ptr, t->name.len);
            k[t->name.len] = 0;
            if (gguf_find_tensor(g, k) != t) abort();
            h += (uint64_t)gguf_expect_tensor(g, k, t->n_dims, t->ne, NULL, 1);
        }
    }
    g_sink = h;
    gguf_close(g);
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
