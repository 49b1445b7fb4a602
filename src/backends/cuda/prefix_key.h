/* prefix_key.h — the identity of a token prefix for the CUDA backend's
 * device-resident prefix K/V cache (cuda_prefix_cache.cu): a 128-bit hash of
 * the first P token ids and P (two independent 64-bit hashes). Equal prefixes
 * give equal keys; different ones collide with probability about 2^-128 (the
 * blocks are kept under this key alone: no token copy is compared). The model
 * and precision are not in the key: each ac_cuda_model has its own cache.
 * Plain C, no CUDA (tested on the CPU: tests/test_map_lru.c). */
#ifndef AC_PREFIX_KEY_H
#define AC_PREFIX_KEY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* key[0], key[1] of tokens[0, P) (P >= 0; tokens may be NULL when P is 0). */
void ac_prefix_key(const int32_t *tokens, int P, uint64_t key[2]);

#ifdef __cplusplus
}
#endif
#endif
