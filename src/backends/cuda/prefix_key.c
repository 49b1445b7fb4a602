/* prefix_key.c — see prefix_key.h. Two lanes, each a multiply-xorshift
 * absorption of the 32-bit token ids (two per 64-bit word) with its own seed
 * and odd multiplier, finished by a 64-bit avalanche mix with the length. */
#include "backends/cuda/prefix_key.h"

#include <stddef.h>

static uint64_t mix64(uint64_t x) { /* avalanche: every input bit moves about half the output bits */
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

static uint64_t lane(const int32_t *t, int P, uint64_t seed, uint64_t mul) {
    uint64_t h = seed ^ ((uint64_t)(uint32_t)P * mul);
    int i = 0;
    for (; i + 1 < P; i += 2) {
        const uint64_t w = (uint64_t)(uint32_t)t[i] | (uint64_t)(uint32_t)t[i + 1] << 32;
        h = (h ^ mix64(w + seed)) * mul;
        h ^= h >> 29;
    }
    if (i < P) { /* the odd last token, marked apart from a pair */
        h = (h ^ mix64(((uint64_t)(uint32_t)t[i] | 0xa5a5a5a500000000ull) + seed)) * mul;
        h ^= h >> 29;
    }
    return mix64(h ^ (uint64_t)(uint32_t)P);
}

void ac_prefix_key(const int32_t *tokens, int P, uint64_t key[2]) {
    if (P < 0) P = 0;
    key[0] = lane(tokens, P, 0x243f6a8885a308d3ull, 0x9e3779b97f4a7c15ull);
    key[1] = lane(tokens, P, 0x13198a2e03707344ull, 0xc2b2ae3d27d4eb4full);
}
