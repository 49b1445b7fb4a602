/* index.h — nearest-neighbour index over the cache's feature vectors: a small
 * C interface over FAISS (flat exact, IVF-Flat, HNSW). No C++ exception ever
 * crosses it: FAISS errors come back as AC_ERR_* with FAISS's message.
 *
 * Similarity convention (higher = closer, for both metrics):
 *   AC_METRIC_COSINE : vectors are L2-normalised on add and on search (copies;
 *                      inputs untouched); similarity = cosine in [-1, 1].
 *   AC_METRIC_L2     : similarity = -||q - x||^2.
 * A "hit" is similarity >= threshold.
 * Ids are caller-chosen int64 (e.g. the store's entry key / ordinal).
 * Threading: search may run from several threads on one index; add/train/save
 * need exclusive access. */
#ifndef AC_CACHE_INDEX_H
#define AC_CACHE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_index ac_index;

enum ac_index_kind { AC_INDEX_FLAT = 0, AC_INDEX_IVF_FLAT = 1, AC_INDEX_HNSW = 2 };
enum ac_index_metric { AC_METRIC_COSINE = 0, AC_METRIC_L2 = 1 };

typedef struct ac_index_params {
    int kind;            /* enum ac_index_kind                                        */
    int metric;          /* enum ac_index_metric                                      */
    int dim;             /* vector length, 1..65536                                   */
    int nlist;           /* IVF: inverted lists (e.g. ~sqrt(n)); must be trained       */
    int nprobe;          /* IVF: lists visited per query (default 8)                   */
    int hnsw_m;          /* HNSW: graph degree M (default 32)                          */
    int ef_construction; /* HNSW: build beam (default 80)                              */
    int ef_search;       /* HNSW: search beam (default 64; raised to k if smaller)      */
} ac_index_params;

/* Defaults for a kind: cosine, nlist 256, nprobe 8, M 32, efC 80, efS 64. */
ac_index_params ac_index_default_params(int kind, int dim);

/* Caller owns *out (ac_index_free). */
int ac_index_create(const ac_index_params *p, ac_index **out);
void ac_index_free(ac_index *idx); /* NULL is fine */

/* IVF: train the coarse quantizer on x [n][dim] (n >= nlist). Others: no-op. */
int ac_index_train(ac_index *idx, const float *x, int64_t n);
int ac_index_is_trained(const ac_index *idx);
/* Add x [n][dim] with ids [n] (NULL: ntotal, ntotal+1, ...). */
int ac_index_add(ac_index *idx, const float *x, const int64_t *ids, int64_t n);
int64_t ac_index_ntotal(const ac_index *idx);
int ac_index_dim(const ac_index *idx);
/* Change search-time knobs (IVF nprobe, HNSW ef_search); <= 0 leaves one as is. */
int ac_index_set_search(ac_index *idx, int nprobe, int ef_search);

/* k nearest of each query q [nq][dim]: ids [nq][k], sims [nq][k] (either may
 * be NULL), best first; missing results (k > ntotal) are id -1, sim -INFINITY. */
int ac_index_search(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims);
/* The same results, with a flat index's scan of a few queries split over
 * pool's threads (NULL: the calling thread). Call it from outside any step of
 * that pool. */
struct ac_pool;
int ac_index_search_pool(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims,
                         struct ac_pool *pool);
/* The results of nq searches of one query each, in one call (a batch of
 * lookups): bitwise the ids and similarities ac_index_search gives each query
 * alone. Flat: the own scan with each chunk of its f16 copy read once for a
 * group of queries, then each query's exact re-rank and proof as alone (its
 * results are the exact top k, whatever candidates the pass found); IVF and
 * HNSW: FAISS's few-query path (results per query independent of the others)
 * in groups of 15. A large flat batch spreads its query groups over OpenMP
 * threads (call it from outside a parallel region to use them). */
int ac_index_search_batch(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims);
/* The flat index's own scan (single queries): queries scanned, those whose
 * f16 pass could not prove the top k at once, and the vectors then computed
 * exactly (see flat_search in index.cpp). Any pointer may be NULL. */
void ac_index_scan_stats(const ac_index *idx, int64_t *queries, int64_t *unproven, int64_t *recomputed);
/* Nearest stored vector of one query and whether it is a hit
 * (sim >= threshold). Empty index: *id = -1, *hit = 0. */
int ac_index_lookup(const ac_index *idx, const float *q, float threshold, int64_t *id, float *sim, int *hit);
static inline int ac_index_is_hit(float sim, float threshold) { return sim >= threshold; }

/* Save atomically (util/atomic_file.h: path.tmp.XXXXXX, fsync, rename, fsync dir): a file of our
 * own header (magic, version, params, payload size, xxh64 checksum) followed by
 * the FAISS serialisation. Load checks the header and checksum before FAISS
 * parses anything: a corrupt or truncated file gives AC_ERR_FORMAT. */
int ac_index_save(const ac_index *idx, const char *path);
int ac_index_load(const char *path, ac_index **out);
/* The parameters the index was made with. */
void ac_index_get_params(const ac_index *idx, ac_index_params *p);

#ifdef __cplusplus
}
#endif
#endif
