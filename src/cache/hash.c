/* hash.c — XXH64, written from the public algorithm description
 * (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md). */
#include "cache/hash.h"
#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } /* little-endian host */
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t round1(uint64_t acc, uint64_t in) { acc += in * P2; acc = rotl(acc, 31); return acc * P1; }
static inline uint64_t merge(uint64_t acc, uint64_t v) { acc ^= round1(0, v); return acc * P1 + P4; }

static uint64_t finish(uint64_t h, const uint8_t *p, size_t len) {
    while (len >= 8) { h ^= round1(0, rd64(p)); h = rotl(h, 27) * P1 + P4; p += 8; len -= 8; }
    if (len >= 4) { h ^= (uint64_t)rd32(p) * P1; h = rotl(h, 23) * P2 + P3; p += 4; len -= 4; }
    while (len > 0) { h ^= (*p) * P5; h = rotl(h, 11) * P1; p++; len--; }
    h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
    return h;
}

static uint64_t converge(const uint64_t v[4]) {
    uint64_t h = rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18);
    for (int i = 0; i < 4; i++) h = merge(h, v[i]);
    return h;
}

uint64_t ac_xxh64(const void *data, size_t len, uint64_t seed) {
    const uint8_t *p = (const uint8_t *)data;
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v[4] = {seed + P1 + P2, seed + P2, seed, seed - P1};
        const uint8_t *lim = end - 32;
        do {
            v[0] = round1(v[0], rd64(p)); v[1] = round1(v[1], rd64(p + 8));
            v[2] = round1(v[2], rd64(p + 16)); v[3] = round1(v[3], rd64(p + 24));
            p += 32;
        } while (p <= lim);
        h = converge(v);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    return finish(h, p, (size_t)(end - p));
}

void ac_xxh64_init(ac_xxh64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + P1 + P2; s->v[1] = seed + P2; s->v[2] = seed; s->v[3] = seed - P1;
}

void ac_xxh64_update(ac_xxh64_state *s, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    s->total_len += len;
    if (s->mem_len + len < 32) {
        if (len) memcpy(s->mem + s->mem_len, p, len);
        s->mem_len += (uint32_t)len;
        return;
    }
    if (s->mem_len) { /* complete the pending stripe */
        size_t fill = 32 - s->mem_len;
        memcpy(s->mem + s->mem_len, p, fill);
        s->v[0] = round1(s->v[0], rd64(s->mem)); s->v[1] = round1(s->v[1], rd64(s->mem + 8));
        s->v[2] = round1(s->v[2], rd64(s->mem + 16)); s->v[3] = round1(s->v[3], rd64(s->mem + 24));
        p += fill; len -= fill; s->mem_len = 0;
    }
    uint64_t v0 = s->v[0], v1 = s->v[1], v2 = s->v[2], v3 = s->v[3];
    while (len >= 32) {
        v0 = round1(v0, rd64(p)); v1 = round1(v1, rd64(p + 8));
        v2 = round1(v2, rd64(p + 16)); v3 = round1(v3, rd64(p + 24));
        p += 32; len -= 32;
    }
    s->v[0] = v0; s->v[1] = v1; s->v[2] = v2; s->v[3] = v3;
    if (len) { memcpy(s->mem, p, len); s->mem_len = (uint32_t)len; }
}

uint64_t ac_xxh64_digest(const ac_xxh64_state *s) {
    uint64_t h = s->total_len >= 32 ? converge(s->v) : s->seed + P5;
    h += s->total_len;
    return finish(h, s->mem, s->mem_len);
}
