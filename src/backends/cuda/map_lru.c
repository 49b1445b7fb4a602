/* map_lru.c — the device map cache's bookkeeping (see map_lru.h): slots in
 * one array (a free list through hnext), chained hashing on (k0, k1, layer),
 * a doubly linked LRU list. Blocks used in the current call are moved to the
 * front as they are used, so the unpinned ones are always the list's tail:
 * eviction only ever looks at the tail. */
#include "map_lru.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int bucket_of(const ac_map_lru *c, uint64_t k0, uint64_t k1, int layer) {
    const uint64_t l = (uint64_t)(uint32_t)layer * 0xD6E8FEB86659FD93ull;
    const uint64_t h = mix64(k0 ^ mix64(k1 + 0x9E3779B97F4A7C15ull) ^ l);
    return (int)(h & (uint64_t)(c->nb - 1));
}

void ac_map_lru_init(ac_map_lru *c, size_t budget, int (*alloc)(void *, void **, size_t),
                     void (*free_fn)(void *, void *), void *user) {
    memset(c, 0, sizeof *c);
    c->free_head = c->head = c->tail = -1;
    c->call = 1;
    c->budget = budget;
    c->alloc = alloc, c->free = free_fn, c->user = user;
}

static void lru_unlink(ac_map_lru *c, int i) {
    ac_map_lru_ent *x = &c->e[i];
    if (x->prev >= 0) c->e[x->prev].next = x->next;
    else c->head = x->next;
    if (x->next >= 0) c->e[x->next].prev = x->prev;
    else c->tail = x->prev;
    x->prev = x->next = -1;
}

static void lru_front(ac_map_lru *c, int i) {
    ac_map_lru_ent *x = &c->e[i];
    x->prev = -1;
    x->next = c->head;
    if (c->head >= 0) c->e[c->head].prev = i;
    c->head = i;
    if (c->tail < 0) c->tail = i;
}

/* slot i out of the cache: its block freed, the slot on the free list */
static void drop(ac_map_lru *c, int i) {
    ac_map_lru_ent *x = &c->e[i];
    int *pp = &c->bucket[bucket_of(c, x->k0, x->k1, x->layer)];
    while (*pp >= 0 && *pp != i) pp = &c->e[*pp].hnext;
    if (*pp == i) *pp = x->hnext;
    lru_unlink(c, i);
    if (c->free) c->free(c->user, x->dev);
    c->resident -= x->acct;
    c->n--;
    c->st.evictions++;
    memset(x, 0, sizeof *x);
    x->prev = x->next = -1;
    x->hnext = c->free_head;
    c->free_head = i;
}

static int find_slot(const ac_map_lru *c, uint64_t k0, uint64_t k1, int layer) {
    if (!c->nb) return -1;
    for (int i = c->bucket[bucket_of(c, k0, k1, layer)]; i >= 0; i = c->e[i].hnext)
        if (c->e[i].k0 == k0 && c->e[i].k1 == k1 && c->e[i].layer == layer) return i;
    return -1;
}

void ac_map_lru_clear(ac_map_lru *c) {
    for (int i = 0; i < c->cap; i++)
        if (c->e[i].dev && c->free) c->free(c->user, c->e[i].dev);
    free(c->e);
    free(c->bucket);
    ac_map_lru_init(c, c->budget, c->alloc, c->free, c->user);
}

void ac_map_lru_begin_call(ac_map_lru *c) { c->call++; }

void *ac_map_lru_find(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes) {
    const int i = find_slot(c, k0, k1, layer);
    if (i >= 0 && c->e[i].bytes == bytes) {
        lru_unlink(c, i);
        lru_front(c, i);
        c->e[i].call = c->call;
        c->st.hits++;
        return c->e[i].dev;
    }
    if (i >= 0 && c->e[i].call != c->call) drop(c, i); /* another size under that identity: never served */
    c->st.misses++;
    return NULL;
}

void *ac_map_lru_peek(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes) {
    const int i = find_slot(c, k0, k1, layer);
    if (i < 0 || c->e[i].bytes != bytes) return NULL;
    lru_unlink(c, i);
    lru_front(c, i);
    c->e[i].call = c->call;
    return c->e[i].dev;
}

/* room for one more slot and hash entry; 0 or -1 (no memory) */
static int reserve(ac_map_lru *c) {
    if (c->free_head < 0) {
        const int nc = c->cap ? 2 * c->cap : 64;
        ac_map_lru_ent *e = realloc(c->e, (size_t)nc * sizeof *e);
        if (!e) return -1;
        c->e = e;
        for (int i = nc - 1; i >= c->cap; i--) {
            memset(&e[i], 0, sizeof e[i]);
            e[i].prev = e[i].next = -1;
            e[i].hnext = c->free_head;
            c->free_head = i;
        }
        c->cap = nc;
    }
    if (c->n + 1 > c->nb) { /* load factor 1: rehash into twice the buckets */
        const int nb = c->nb ? 2 * c->nb : 64;
        int *b = malloc((size_t)nb * sizeof *b);
        if (!b) return -1;
        for (int i = 0; i < nb; i++) b[i] = -1;
        free(c->bucket);
        c->bucket = b, c->nb = nb;
        for (int i = 0; i < c->cap; i++)
            if (c->e[i].dev) {
                const int k = bucket_of(c, c->e[i].k0, c->e[i].k1, c->e[i].layer);
                c->e[i].hnext = b[k];
                b[k] = i;
            }
    }
    return 0;
}

void *ac_map_lru_insert(ac_map_lru *c, uint64_t k0, uint64_t k1, int layer, size_t bytes) {
    const size_t acct = (bytes + 255) & ~(size_t)255;
    int i = find_slot(c, k0, k1, layer);
    if (i >= 0) {
        if (c->e[i].bytes == bytes) return ac_map_lru_find(c, k0, k1, layer, bytes); /* already resident */
        if (c->e[i].call == c->call) { /* pinned under another size: leave it */
            c->st.refused++;
            return NULL;
        }
        drop(c, i);
    }
    if (!bytes || acct > c->budget || !c->alloc) {
        c->st.refused++;
        return NULL;
    }
    while (c->resident + acct > c->budget) { /* the unpinned blocks are the list's tail */
        if (c->tail < 0 || c->e[c->tail].call == c->call) {
            c->st.refused++;
            return NULL;
        }
        drop(c, c->tail);
    }
    void *p = NULL;
    if (reserve(c) != 0) {
        c->st.refused++;
        return NULL;
    }
    while (c->alloc(c->user, &p, bytes) != 0 || !p) { /* out of device memory: give back unpinned blocks first */
        p = NULL;
        if (c->tail < 0 || c->e[c->tail].call == c->call) {
            c->st.refused++;
            return NULL;
        }
        drop(c, c->tail);
    }
    i = c->free_head;
    ac_map_lru_ent *x = &c->e[i];
    c->free_head = x->hnext;
    x->k0 = k0, x->k1 = k1, x->layer = layer;
    x->bytes = bytes, x->acct = acct, x->dev = p, x->call = x->ins_call = c->call;
    const int k = bucket_of(c, k0, k1, layer);
    x->hnext = c->bucket[k];
    c->bucket[k] = i;
    lru_front(c, i);
    c->resident += acct;
    c->n++;
    c->st.inserts++;
    c->st.bytes_inserted += bytes;
    return p;
}

void ac_map_lru_abort_call(ac_map_lru *c) {
    for (int i = 0; i < c->cap; i++)
        if (c->e[i].dev && c->e[i].ins_call == c->call) drop(c, i);
}

void ac_map_lru_set_budget(ac_map_lru *c, size_t budget) {
    c->budget = budget;
    while (c->resident > c->budget && c->tail >= 0 && c->e[c->tail].call != c->call) drop(c, c->tail);
}

void ac_map_lru_get_stats(const ac_map_lru *c, ac_map_lru_stats *s) {
    *s = c->st;
    s->resident = c->resident;
    s->budget = c->budget;
    s->entries = c->n;
}
