/* cuda_map_cache.cu — the CUDA backend's device map cache (cuda_backend.h
 * ac_cuda_set_map_cache): map_lru.c's bookkeeping over cudaMalloc'd blocks.
 * serve_plan (cuda_backend.cu) asks it for every host-served site with an
 * identity: a resident block serves the site in place; otherwise a block is
 * made resident and the site's upload (stage_layer, on the upload stream)
 * writes into it instead of the per-call buffer. Eviction frees blocks of
 * earlier calls only, which have finished (every call synchronises its
 * streams before returning). */
#include "cuda_model.h"

#include <stdlib.h>

static int blk_alloc(void *user, void **p, size_t bytes) {
    (void)user;
    *p = NULL;
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        cudaGetLastError(); /* out of memory: not this call's error (the site is uploaded as before) */
        *p = NULL;
        return 1;
    }
    return 0;
}

static void blk_free(void *user, void *p) {
    (void)user;
    if (cudaFree(p) != cudaSuccess) cudaGetLastError();
}

static size_t default_budget(void) {
    const char *env = getenv("AC_CUDA_MAP_CACHE_MB");
    if (env && *env) {
        char *end = NULL;
        const unsigned long long mb = strtoull(env, &end, 10);
        if (end && !*end) return (size_t)mb << 20;
    }
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    const size_t cap = (size_t)1 << 30;
    return fr / 4 < cap ? fr / 4 : cap;
}

static void init_once(ac_cuda_model *g) {
    if (g->lru_on) return;
    ac_map_lru_init(&g->lru, default_budget(), blk_alloc, blk_free, g);
    g->lru_on = 1;
}

void ac_cu_map_cache_begin(ac_cuda_model *g) {
    init_once(g);
    ac_map_lru_begin_call(&g->lru);
}

void ac_cu_map_cache_free(ac_cuda_model *g) {
    if (!g->lru_on) return;
    ac_map_lru_clear(&g->lru);
    g->lru_on = 0;
}

int ac_cuda_set_map_cache(ac_cuda_model *g, size_t budget_bytes) {
    if (!g) return ac_err(AC_ERR_ARG, "ac_cuda_set_map_cache: no model");
    init_once(g);
    ac_map_lru_begin_call(&g->lru); /* between calls: nothing is in use, every block may go */
    ac_map_lru_set_budget(&g->lru, budget_bytes);
    return AC_OK;
}

void ac_cuda_map_cache_stats(const ac_cuda_model *g, ac_map_lru_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (g && g->lru_on) ac_map_lru_get_stats(&g->lru, out);
}
