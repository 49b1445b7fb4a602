/* hash.c — XXH64 through libxxhash (a well-kept library rather than our own copy). */
#include "cache/hash.h"

uint64_t ac_xxh64(const void *data, size_t len, uint64_t seed) { return XXH64(data, len, seed); }
void ac_xxh64_init(ac_xxh64_state *s, uint64_t seed) { XXH64_reset(&s->s, seed); }
void ac_xxh64_update(ac_xxh64_state *s, const void *data, size_t len) { XXH64_update(&s->s, data, len); }
uint64_t ac_xxh64_digest(const ac_xxh64_state *s) { return XXH64_digest(&s->s); }
