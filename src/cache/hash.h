/* hash.h — XXH64 (xxHash, 64-bit), one-shot and streaming: thin wrappers over
 * Debian's libxxhash. Used as the record / commit / index-file checksum of the
 * attention cache (XXH64("", 0) = 0xEF46DB3751D8E999, XXH64("abc", 0) =
 * 0x44BC2CF5AD770999). */
#ifndef AC_CACHE_HASH_H
#define AC_CACHE_HASH_H

#include <stddef.h>
#include <stdint.h>
#define XXH_STATIC_LINKING_ONLY /* the state struct on the stack, no allocation */
#include <xxhash.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_xxh64_state {
    XXH64_state_t s;
} ac_xxh64_state;

uint64_t ac_xxh64(const void *data, size_t len, uint64_t seed);
void ac_xxh64_init(ac_xxh64_state *s, uint64_t seed);
void ac_xxh64_update(ac_xxh64_state *s, const void *data, size_t len);
uint64_t ac_xxh64_digest(const ac_xxh64_state *s);

#ifdef __cplusplus
}
#endif
#endif
