/* fingerprint.h — the 128-bit model fingerprint the cache's files carry (the
 * map store's header, the prefix cache's file): defined in cache.c. */
#ifndef AC_CACHE_FINGERPRINT_H
#define AC_CACHE_FINGERPRINT_H

#include "attncache.h"
#include <stdint.h>

/* fp[2]: a hash of the GGUF metadata and tensor infos plus sampled tensor bytes. */
void ac_cache_model_fingerprint(const ac_model *m, uint64_t fp[2]);

#endif
