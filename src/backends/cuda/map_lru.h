/* map_lru.h — the bookkeeping of the CUDA backend's device-resident cache of
 * hot stored maps (the attention cache's served rows kept in device memory,
 * so a repeated hit uploads nothing): a hash of entries keyed by the bytes'
 * identity (two 64-bit words the owner of the bytes guarantees: equal
 * identity => equal bytes; the attention cache gives its record's key and
 * payload checksum) and the layer, a least-recently-used order, and a byte
 * budget. Plain C with no CUDA: the device memory comes from the alloc/free
 * callbacks (cudaMalloc/cudaFree in cuda_map_cache.cu; malloc in the CPU
 * test tests/test_map_lru.c), so the policy is tested on every CI run.
 *
 * One forward call is one "call" (ac_map_lru_begin_call): blocks found or
 * inserted during the current call are pinned (never evicted until the next
 * call begins: their device pointers are in use by the call's kernels).
 * Not thread-safe (one per CUDA model, used from the forward's thread). */
#ifndef AC_MAP_LRU_H
#define AC_MAP_LRU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_map_lru_stats {
    uint64_t hits;          /* finds that returned a resident block */
    uint64_t misses;        /* finds that did not */
    uint64_t inserts;       /* blocks made resident */
    uint64_t evictions;     /* blocks evicted (LRU, budget) */
    uint64_t refused;       /* inserts refused: over the budget with everything else pinned, or alloc failed */
    uint64_t bytes_inserted;/* bytes of the blocks made resident (= uploaded into them) */
    size_t resident;        /* bytes resident now (accounted: rounded up to 256) */
    size_t budget;          /* bytes allowed */
    int entries;            /* blocks resident now */
} ac_map_lru_stats;

typedef struct ac_map_lru_ent {
    uint64_t k0, k1;        /* identity of the bytes */
    int layer;
    size_t bytes;           /* requested size */
    size_t acct;            /* accounted size (bytes rounded up to 256) */
    void *dev;              /* the block (alloc's pointer); NULL: slot free */
    uint64_t call;          /* last call that used it */
    uint64_t ins_call;      /* the call that made it resident (its upload belongs to that call) */
    int prev, next;         /* LRU list (prev: more recent), -1 ends */
    int hnext;              /* hash chain, -1 ends; the free list's link when the slot is free */
} ac_map_lru_ent;

typedef struct ac_map_lru {
    ac_map_lru_ent *e;
    int cap, n, free_head;  /* slots, used slots, first free slot (-1: none) */
    int *bucket;            /* [nb] first slot of each chain, -1: empty */
    int nb;                 /* power of two */
    int head, tail;         /* most and least recently used, -1: none */
    uint64_t call;
    size_t budget, resident;
    ac_map_lru_stats st;
    /* device memory: alloc returns 0 and *p, or nonzero (no memory); free releases */
    int (*alloc)(void *user, void **p, size_t bytes);
    void (*free)(void *user, void *p);
    void *user;
} ac_map_lru;

/* A cache with budget bytes (0: caches nothing) over the given allocator. */
void ac_map_lru_init(ac_map_lru *c, size_t budget, int (*alloc)(void *, void **, size_t), void (*free_fn)(void *, void *),
                     void *user);
/* Frees every block and the tables (the cache can be initialised again). */
void ac_map_lru_clear(ac_map_lru *c);
/* Start a forward call: unpins the blocks of the previous one. */
void ac_map_lru_begin_call(ac_map_lru *c);
/* The resident block of (k0, k1, layer) of this size (made most recent and pinned for the call), or
 * NULL (a miss; a resident block of another size under that identity is evicted: never served). */
void *ac_map_lru_find(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes);
/* As find, counting neither a hit nor a miss and dropping nothing: the resident block of (k0, k1,
 * layer) of this size, made most recent and pinned for the call, or NULL. (The prefix cache asks
 * its blocks twice in a call: the context's question, counted by find, then the forward's.) */
void *ac_map_lru_peek(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes);
/* Make (k0, k1, layer) resident in a new block of `bytes` (the caller fills it: the upload), evicting
 * least recently used unpinned blocks to stay within the budget; pinned for the call. NULL when it
 * cannot fit (bigger than the budget, or the rest pinned) or alloc fails: serve it without caching.
 * Call after a find of the same identity missed. */
void *ac_map_lru_insert(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes);
/* The current call failed: its uploads may not have happened, so every block it made resident is
 * dropped (blocks it only found stay). Call before the next begin_call. */
void ac_map_lru_abort_call(ac_map_lru *c);
/* Change the budget; unpinned blocks are evicted (LRU first) down to it. */
void ac_map_lru_set_budget(ac_map_lru *c, size_t budget);
void ac_map_lru_get_stats(const ac_map_lru *c, ac_map_lru_stats *s);

#ifdef __cplusplus
}
#endif
#endif
