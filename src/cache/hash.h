/* hash.h — XXH64 (Yann Collet's xxHash, 64-bit variant), one-shot and
 * streaming. Used as the record / commit / index-file checksum of the
 * attention cache. Bit-exact with the reference implementation
 * (XXH64("", 0) = 0xEF46DB3751D8E999, XXH64("abc", 0) = 0x44BC2CF5AD770999). */
#ifndef AC_CACHE_HASH_H
#define AC_CACHE_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_xxh64_state {
    uint64_t v[4];      /* the four lane accumulators          */
    uint64_t total_len; /* bytes fed so far                    */
    uint8_t mem[32];    /* pending bytes of an incomplete stripe */
    uint32_t mem_len;
    uint64_t seed;
} ac_xxh64_state;

uint64_t ac_xxh64(const void *data, size_t len, uint64_t seed);
void ac_xxh64_init(ac_xxh64_state *s, uint64_t seed);
void ac_xxh64_update(ac_xxh64_state *s, const void *data, size_t len);
uint64_t ac_xxh64_digest(const ac_xxh64_state *s);

#ifdef __cplusplus
}
#endif
#endif
