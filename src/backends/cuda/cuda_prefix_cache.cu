/* cuda_prefix_cache.cu — the CUDA backend's device prefix cache
 * (cuda_backend.h ac_cuda_prefix_cache_find): the given rows of hot prefixes
 * (the prefix K/V cache's shared few-shot demonstrations, instruction
 * prefixes) kept in device memory, so a repeated prefix is neither copied out
 * of the host tree nor uploaded. map_lru.c's bookkeeping, one block per
 * (ac_prefix_key(tokens, P), P) — P in the entry's layer field — LRU
 * eviction within a byte budget; blocks found or made in a call are pinned
 * for it; a failed call drops the blocks it made (they may be unfilled).
 *
 * Block layout: cuda_model.h ac_cu_pcache_*. Blocks are filled and read on
 * the given rows' stream st_pu (cuda_backend.cu pfx_stage, pfx_hidden_full):
 * a block made in a call is written there before anything of the call or a
 * later one reads it (the same stream, or a later call, which begins after
 * this one synchronised every stream).
 *
 * Blocks come from cudaMalloc and go back with cudaFree (which waits for the
 * device): inserts and evictions happen before the call's kernels are
 * enqueued, when the previous calls have finished. Default budget (chosen at
 * the first use): AC_CUDA_PREFIX_CACHE_MB from the environment when set (0:
 * off), else min(1 GiB, an eighth of the device's free memory). */
#include "cuda_model.h"
#include "prefix_key.h"

#include <stdint.h>
#include <stdlib.h>

static int blk_alloc(void *user, void **p, size_t bytes) {
    (void)user;
    *p = NULL;
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        cudaGetLastError(); /* out of memory: the rows are uploaded as before, not kept */
        *p = NULL;
        return 1;
    }
    return 0;
}

static void blk_free(void *user, void *p) {
    (void)user;
    if (cudaFree(p) != cudaSuccess) cudaGetLastError();
}

static void init_once(ac_cuda_model *g) {
    if (g->pc_on) return;
    ac_map_lru_init(&g->pc, ac_cu_cache_budget("AC_CUDA_PREFIX_CACHE_MB", 8), blk_alloc, blk_free, g);
    g->pc_on = 1;
}

size_t ac_cu_pcache_hid_off(const ac_cuda_model *g, int P) {
    const size_t kv = (size_t)g->hp.n_layer * 2 * (size_t)P * g->KVD * ac_cu_tsize(g->prec);
    return (kv + 255) & ~(size_t)255;
}

size_t ac_cu_pcache_bytes(const ac_cuda_model *g, int P) {
    return ac_cu_pcache_hid_off(g, P) + (size_t)P * g->D * sizeof(float);
}

void ac_cu_pcache_begin(ac_cuda_model *g) {
    init_once(g);
    if (!g->pc_begun) ac_map_lru_begin_call(&g->pc);
    g->pc_begun = 1;
}

void *ac_cu_pcache_peek(ac_cuda_model *g, const int32_t *tokens, int P) {
    if (!g->pc_on || P <= 0) return NULL;
    uint64_t k[2];
    ac_prefix_key(tokens, P, k);
    return ac_map_lru_peek(&g->pc, k[0], k[1], P, ac_cu_pcache_bytes(g, P));
}

void *ac_cu_pcache_insert(ac_cuda_model *g, const int32_t *tokens, int P) {
    if (!g->pc_on || P <= 0) return NULL;
    uint64_t k[2];
    ac_prefix_key(tokens, P, k);
    return ac_map_lru_insert(&g->pc, k[0], k[1], P, ac_cu_pcache_bytes(g, P));
}

void ac_cu_pcache_abort(ac_cuda_model *g) {
    if (g->pc_on) ac_map_lru_abort_call(&g->pc);
}

void ac_cu_pcache_free(ac_cuda_model *g) {
    if (g->pc_on) {
        if (g->st_pu) cudaStreamSynchronize(g->st_pu);
        ac_map_lru_clear(&g->pc);
    }
    free(g->pc_how), free(g->pc_blk);
    g->pc_how = NULL, g->pc_blk = NULL, g->pc_cap = 0;
    g->pc_on = 0, g->pc_begun = 0;
}

int ac_cuda_prefix_cache_find(ac_cuda_model *g, const int32_t *tokens, int P) {
    if (!g || !tokens || P <= 0) return 0;
    ac_cu_pcache_begin(g);
    uint64_t k[2];
    ac_prefix_key(tokens, P, k);
    return ac_map_lru_find(&g->pc, k[0], k[1], P, ac_cu_pcache_bytes(g, P)) != NULL;
}

int ac_cuda_prefix_cache_on(ac_cuda_model *g) {
    if (!g) return 0;
    init_once(g);
    return g->pc.budget > 0;
}

int ac_cuda_set_prefix_cache(ac_cuda_model *g, size_t budget_bytes) {
    if (!g) return ac_err(AC_ERR_ARG, "ac_cuda_set_prefix_cache: no model");
    init_once(g);
    ac_map_lru_begin_call(&g->pc); /* between calls: nothing is in use, every block may go */
    g->pc_begun = 0;
    ac_map_lru_set_budget(&g->pc, budget_bytes);
    return AC_OK;
}

void ac_cuda_prefix_cache_stats(const ac_cuda_model *g, ac_cuda_prefix_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!g) return;
    if (g->pc_on) ac_map_lru_get_stats(&g->pc, &out->lru);
    out->bytes_uploaded = g->pc_up_total;
    out->last_bytes_uploaded = g->pc_up_last;
    out->last_resident_hits = g->pc_hits_last;
}
