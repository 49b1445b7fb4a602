/* cuda_map_cache.cu — the CUDA backend's device map cache (cuda_backend.h
 * ac_cuda_set_map_cache): map_lru.c's bookkeeping over device blocks.
 * serve_plan (cuda_backend.cu) asks it for every host-served site with an
 * identity: a resident block serves the site in place; otherwise a block is
 * made resident and the site's upload (stage_layer, on the upload stream)
 * writes into it instead of the per-call buffer.
 *
 * Blocks come from a stream-ordered memory pool of the backend's own
 * (cudaMallocFromPoolAsync / cudaFreeAsync on the main stream st, memory
 * kept in the pool when freed): a stream that evicts and admits blocks every
 * call pays no cudaMalloc/cudaFree (which waits for the device) per block.
 * Ordering: blocks are allocated and freed on st; the upload stream waits on
 * an event recorded on st after serve_plan's allocations
 * (ac_cu_map_cache_ready); kernels read them on st after the layer's upload
 * event. Evicted blocks belong to earlier calls, which have finished. Where
 * pools are not supported (or AC_CUDA_MAP_CACHE_POOL=0) blocks come from
 * cudaMalloc and go back with cudaFree. */
#include "cuda_model.h"

#include <stdint.h>
#include <stdlib.h>

static int blk_alloc(void *user, void **p, size_t bytes) {
    ac_cuda_model *g = (ac_cuda_model *)user;
    *p = NULL;
    const cudaError_t e = g->lru_pool ? cudaMallocFromPoolAsync(p, bytes, g->lru_pool, g->st) : cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory: not this call's error (the site is uploaded as before) */
        *p = NULL;
        return 1;
    }
    return 0;
}

static void blk_free(void *user, void *p) {
    ac_cuda_model *g = (ac_cuda_model *)user;
    const cudaError_t e = g->lru_pool ? cudaFreeAsync(p, g->st) : cudaFree(p);
    if (e != cudaSuccess) cudaGetLastError();
}

size_t ac_cu_cache_budget(const char *env_mb, size_t free_div) {
    const char *env = getenv(env_mb);
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
    return fr / free_div < cap ? fr / free_div : cap;
}

/* the pool, where the device has them; NULL otherwise (cudaMalloc) */
static cudaMemPool_t make_pool(void) {
    const char *env = getenv("AC_CUDA_MAP_CACHE_POOL");
    if (env && !strcmp(env, "0")) return NULL;
    int dev = 0, ok = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&ok, cudaDevAttrMemoryPoolsSupported, dev) != cudaSuccess || !ok) {
        cudaGetLastError();
        return NULL;
    }
    cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    cudaMemPool_t pool = NULL;
    if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    uint64_t keep = UINT64_MAX; /* freed blocks stay in the pool for the next ones */
    if (cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
        cudaGetLastError();
        cudaMemPoolDestroy(pool);
        return NULL;
    }
    return pool;
}

static void init_once(ac_cuda_model *g) {
    if (g->lru_on) return;
    g->lru_pool = make_pool();
    if (g->lru_pool && cudaEventCreateWithFlags(&g->lru_ev, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        cudaMemPoolDestroy(g->lru_pool);
        g->lru_pool = NULL, g->lru_ev = NULL;
    }
    ac_map_lru_init(&g->lru, ac_cu_cache_budget("AC_CUDA_MAP_CACHE_MB", 4), blk_alloc, blk_free, g);
    g->lru_on = 1;
}

void ac_cu_map_cache_begin(ac_cuda_model *g) {
    init_once(g);
    ac_map_lru_begin_call(&g->lru);
}

cudaEvent_t ac_cu_map_cache_ready(ac_cuda_model *g) {
    if (g->lru_on && g->lru_pool && g->lru_ev && cudaEventRecord(g->lru_ev, g->st) == cudaSuccess) return g->lru_ev;
    cudaGetLastError();
    return g->t0; /* recorded on st at the start of the call: cudaMalloc'd blocks exist already */
}

void ac_cu_map_cache_free(ac_cuda_model *g) {
    if (!g->lru_on) return;
    ac_map_lru_clear(&g->lru);
    if (g->lru_pool) {
        cudaStreamSynchronize(g->st); /* the frees above, before the pool goes */
        cudaMemPoolDestroy(g->lru_pool);
    }
    if (g->lru_ev) cudaEventDestroy(g->lru_ev);
    g->lru_pool = NULL, g->lru_ev = NULL;
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
