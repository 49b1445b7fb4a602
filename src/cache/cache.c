/* cache.c — the attention cache: ties the map store, the feature projector,
 * the vector index and the reuse policy to the forward pass (its attention
 * hook). See include/attncache.h (attention cache section) for the contract.
 *
 * Per input the store keeps: key = xxh64 of its token ids, L, a feature
 * summary of its layer-0 states (S segment means of the [L][D] states and
 * log(1+L): S*D+1 floats) and its n_layer*n_head compressed maps. The index
 * holds one key vector per entry (projector output, mean state, or a random
 * projection of it); lookups run inside the forward pass, timed.
 *
 * Sharing (docs/CACHE.md, "One cache, many contexts"): an ac_cache is opened
 * once and attached to any number of contexts; each attachment (cache_att)
 * holds that context's per-call state (sequence results, scratch), so lookups
 * run from several threads at once. What they share is read under `rw`
 * (a writer-preferring reader-writer lock): the reader store handle, the
 * index, projector, key kind, layer mask and threshold. A writer (ac_cache_add
 * and the other writing calls, serialised by `wmu`) records into its own store
 * handle, which readers never touch, and takes `rw` exclusively only to
 * publish: refresh the reader handle after a commit and add the new keys to
 * the index (or swap in a rebuilt index / projector). Zero-copy map pointers
 * stay valid until the cache is closed (store contract), so a forward pass
 * keeps serving the maps it looked up after the lock is released. */
#define _GNU_SOURCE
#include "cache/fingerprint.h"
#include "attncache.h"
#include "cache/adapt.h"
#include "cache/codec.h"
#include "cache/hash.h"
#include "cache/index.h"
#include "cache/policy_heads.h"
#include "cache/policy_serve.h"
#include "cache/projector.h"
#include "cache/q8mat.h"
#include "cache/cache_testing.h"
#include "cache/store_ops.h"
#include "cache/usage.h"
#include "cache/verify.h"
#include "forward/forward.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AC_FEAT_SEGMENTS 4 /* S: position segments of the feature summary */
_Static_assert(AC_FEAT_SEGMENTS == AC_ATTN_SUMMARY_SEGMENTS, "the hook's site summary is the cache's");
#define AC_KEY_DIM 128     /* projector / random-projection key length   */
#define AC_LOOKUP_K 8      /* index candidates examined per lookup        */
#define AC_MIN_PREFIX_ROWS 16 /* PREFIX mode: shorter common prefixes are misses */

typedef struct seq_state {
    int looked_up, hit;
    int served;              /* a site of this call was served from the maps (the confidence gate's test) */
    int batched;             /* looked up by hook_lookup_all, not yet taken by layer 0's reuse */
    const int32_t *bt;       /* ... for these tokens */
    int bL;
    int rows;                /* rows served on a hit (L, or the common token prefix in PREFIX mode) */
    ac_store_entry e;        /* zero copy into the reader store handle: valid until the cache closes */
    float dist;
} seq_state;

/* Scratch of one thread of work (an attachment's lookups, or the writer). */
typedef struct scratch {
    float *x0;               /* [cap_x0][D] layer-0 states */
    size_t cap_x0;
    float *feat;             /* [feat_dim] */
    float *keyv;             /* [2 * max(D, 1024)]: key, then make_key's tmp */
    uint8_t *rand_x8;        /* [D + 64] the random key's quantised input */
} scratch;

/* One context attached to a cache: its per-call state. Owned by the context's
 * hook (freed by att_release when the context drops the hook: detach, another
 * attach, ac_ctx_free, or ac_cache_close detaching it). */
typedef struct cache_att {
    ac_cache *c;
    ac_ctx *ctx;
    struct cache_att *prev, *next; /* the cache's list, under c->amu */
    seq_state *ss;           /* [ss_cap] per sequence of the current forward call */
    int ss_cap;
    uint8_t *layers;         /* [n_layer] the layer mask read at this call's lookups */
    uint8_t *serve;          /* [n_layer][n_head] the served heads read with it (per-head serving) */
    scratch scr;
    scratch *tscr;           /* [n_tscr] per-thread scratch of hook_lookup_all's parallel lookups */
    int n_tscr;
    struct lookup_batch *lb; /* hook_lookup_all's batch buffers (NULL until the first batch) */
} cache_att;

/* Lookup statistics: atomics, updated by every attachment's thread. */
typedef struct counters {
    _Atomic int64_t queries, hits, failed, damaged, layers_served, rows_served, rows_total, skipped, probes, head_sites,
        head_spanned, heads_served, verify_checked, verify_rejected, features_given, rechecked;
    _Atomic uint64_t bytes_read;
    _Atomic double t_features, t_key, t_search, t_fetch, sum_distance_hit, t_verify;
} counters;

struct ac_cache {
    /* fixed at open */
    const ac_model *m;
    char dir[PATH_MAX];
    ac_cache_params p;       /* threshold changes under rw (write) */
    int D, n_layer, n_head, causal, feat_dim;
    uint64_t fp[2];          /* model fingerprint */
    int with_tokens;         /* the store keeps each entry's token ids (format 2) */
    ac_map_codec codec;      /* codec of new entries */
    ac_q8mat rand_proj;      /* [AC_KEY_DIM][D] +-1/sqrt(D) for AC_KEY_RANDOM (exact in int8) */
    /* shared, read-mostly: read under rw (read), changed under rw (write) */
    pthread_rwlock_t rw;
    ac_mapstore *st;         /* reader handle: lookups, stats, index builds */
    ac_projector *proj;      /* NULL until trained */
    int key;                 /* enum ac_cache_keykind in use */
    ac_index *idx;           /* NULL when the store is empty */
    uint8_t *layers;         /* [n_layer] 1: served on a hit */
    uint8_t *serve;          /* [n_layer][n_head] 1: the head of a served layer comes from the map
                                (per-head serving, policy_serve.h; all 1 by default) */
    ac_head_policy heads;    /* per-head spans (policy_heads.c) */
    ac_layer0_qk l0;         /* layer 0's Q/K weights in f32, when p.verify > 0 (verify.c) */
    int64_t scan_base[2], scan_carry[2]; /* index scan stats: idx's counters at the last reset, and those of replaced indexes */
    /* the writer: under wmu */
    pthread_mutex_t wmu;
    ac_mapstore *stw;        /* writer handle (writable caches), never read by lookups */
    int pending;
    uint64_t *pend_keys;     /* [pending] keys written since the last commit (not yet findable) */
    int pend_cap;
    double last_commit;      /* ac_now() of the last commit */
    int idx_dirty;           /* the index holds keys not saved in its file */
    scratch wscr;
    /* attachments */
    pthread_mutex_t amu;
    cache_att *atts;
    int locks;               /* 1: rw, wmu and amu initialised */
    counters n;
    _Atomic int fail_next;   /* cache_testing.h: lookups still to fail */
    _Atomic int lookup_each; /* cache_testing.h: lookup_all the old way (each sequence alone) */
    pthread_mutex_t fmu;     /* first_failure */
    char first_failure[192];
    int64_t n_unindexed;     /* damaged records the index left out (build_index; under rw) */
    /* per-entry use, by ordinal [u_cap] (usage.h): grown by the writer under rw (write) or at
     * open; updated by lookups under rw (read); saved by the writer (writable caches only) */
    _Atomic uint64_t *u_key;   /* 0: not known (never hit nor inserted since open) */
    _Atomic uint64_t *u_hits;
    _Atomic int64_t *u_last;   /* unix ms of the last hit or the insert; 0: unknown */
    int64_t u_cap;
    _Atomic int u_dirty;       /* hits since the last save */
    /* adaptive lookups (adapt.h): one state for the cache, not per attachment — the
     * server's batcher hands any client's sequences to any worker, so every attachment
     * sees a sample of one stream: together they learn its hit rate W times faster and
     * probe once, not W times; and eval/bench attach and detach a context around every
     * query, which would restart a per-attachment state each time. Decisions follow the
     * order in which lookups take admu: deterministic for one context. */
    pthread_mutex_t admu;
    ac_adapt adapt;
};

static int64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Room for n entries' use. At open, or by the writer under rw (write). */
static int usage_grow(ac_cache *c, int64_t n) {
    if (n <= c->u_cap) return AC_OK;
    int64_t nc = AC_MAX(n, AC_MAX(2 * c->u_cap, 64));
    _Atomic uint64_t *k = realloc((void *)c->u_key, (size_t)nc * sizeof *k);
    if (k) c->u_key = k;
    _Atomic uint64_t *h = realloc((void *)c->u_hits, (size_t)nc * sizeof *h);
    if (h) c->u_hits = h;
    _Atomic int64_t *l = realloc((void *)c->u_last, (size_t)nc * sizeof *l);
    if (l) c->u_last = l;
    if (!k || !h || !l) return ac_err(AC_ERR_NOMEM, "cache: out of memory for use records");
    for (int64_t i = c->u_cap; i < nc; i++) {
        atomic_init(&c->u_key[i], 0);
        atomic_init(&c->u_hits[i], 0);
        atomic_init(&c->u_last[i], 0);
    }
    c->u_cap = nc;
    return AC_OK;
}

/* Write the known entries' use to DIR/usage.bin. Writer (wmu) or close. */
static int usage_save(ac_cache *c) {
    if (!c->p.writable || !c->u_cap) return AC_OK;
    const int64_t n = AC_MIN(ac_mapstore_count(c->st), c->u_cap);
    ac_usage_rec *r = AC_MALLOC((size_t)(n ? n : 1) * sizeof *r);
    if (!r) return AC_ERR_NOMEM;
    atomic_store(&c->u_dirty, 0);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t key = atomic_load(&c->u_key[i]);
        if (key) r[k++] = (ac_usage_rec){key, atomic_load(&c->u_hits[i]), atomic_load(&c->u_last[i])};
    }
    int rc = ac_usage_save(c->dir, r, k);
    free(r);
    return rc;
}

/* At open (writable): the saved use of the entries still stored. */
static void usage_load(ac_cache *c) {
    ac_usage_rec *r = NULL;
    int64_t n = 0;
    if (ac_usage_load(c->dir, &r, &n) != AC_OK) { /* advisory: a damaged file counts as none */
        fprintf(stderr, "attncache: %s\n", ac_last_error());
        ac_err_clear();
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        ac_store_entry e;
        if (ac_mapstore_find(c->st, r[j].key, &e) != AC_OK || e.index < 0 || e.index >= c->u_cap) continue;
        atomic_store(&c->u_key[e.index], r[j].key);
        atomic_store(&c->u_hits[e.index], r[j].hits);
        atomic_store(&c->u_last[e.index], r[j].last_ms);
    }
    ac_err_clear();
    free(r);
}

static void rd_lock(ac_cache *c) { pthread_rwlock_rdlock(&c->rw); }
static void wr_lock(ac_cache *c) { pthread_rwlock_wrlock(&c->rw); }
static void rw_unlock(ac_cache *c) { pthread_rwlock_unlock(&c->rw); }

static void add_f64(_Atomic double *a, double v) {
    double o = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &o, o + v, memory_order_relaxed, memory_order_relaxed)) {}
}
static void add_i64(_Atomic int64_t *a, int64_t v) { atomic_fetch_add_explicit(a, v, memory_order_relaxed); }

static int scratch_init(scratch *s, int D, int feat_dim) {
    memset(s, 0, sizeof *s);
    s->feat = AC_MALLOC((size_t)feat_dim * sizeof(float));
    s->keyv = AC_MALLOC((size_t)AC_MAX(D, 1024) * sizeof(float) * 2);
    s->rand_x8 = AC_MALLOC((size_t)D + 64);
    return s->feat && s->keyv && s->rand_x8 ? AC_OK : AC_ERR_NOMEM;
}

static void scratch_free(scratch *s) {
    free(s->x0);
    free(s->feat);
    free(s->keyv);
    free(s->rand_x8);
    memset(s, 0, sizeof *s);
}

/* ---- model fingerprint --------------------------------------------------------------------- */

/* 128-bit hash of the GGUF metadata and tensor-info region plus, for each
 * tensor, up to 4 KiB from its start, middle and end. Two models that differ
 * anywhere in their hyper-parameters, vocab or tensor layout, or in sampled
 * weight bytes, get different fingerprints; a full hash of multi-GB weights
 * at every open would cost seconds. */
static void model_fingerprint(const ac_model *m, uint64_t fp[2]) {
    const ac_gguf_file *g = m->gguf;
    ac_xxh64_state s0, s1;
    ac_xxh64_init(&s0, 0x61747463ULL);
    ac_xxh64_init(&s1, 0x68656361ULL);
    ac_xxh64_update(&s0, g->base, g->data_offset);
    ac_xxh64_update(&s1, g->base, g->data_offset);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ac_gguf_tensor *t = &g->tensors[i];
        const uint8_t *d = t->data;
        size_t n = t->nbytes, w = AC_MIN(n, (size_t)4096);
        size_t offs[3] = {0, n / 2 - AC_MIN(n / 2, w / 2), n - w};
        for (int k = 0; k < 3; k++) {
            ac_xxh64_update(&s0, d + offs[k], w);
            ac_xxh64_update(&s1, d + offs[k], w);
        }
    }
    fp[0] = ac_xxh64_digest(&s0);
    fp[1] = ac_xxh64_digest(&s1);
}

void ac_cache_model_fingerprint(const ac_model *m, uint64_t fp[2]) { model_fingerprint(m, fp); }

/* ---- features and keys ------------------------------------------------------------------------ */

/* feat [S*D+1]: mean of the layer-0 states over each of S equal position
 * segments (an empty segment takes the whole-sequence mean), then log(1+L). */
static void summarize(const float *x0, int L, int D, float *feat) {
    const int S = AC_FEAT_SEGMENTS;
    for (int k = 0; k < S; k++) {
        int a = (int)((int64_t)k * L / S), b = (int)((int64_t)(k + 1) * L / S);
        if (b <= a) a = 0, b = L;
        float *f = feat + (size_t)k * D;
        for (int d = 0; d < D; d++) f[d] = 0;
        for (int t = a; t < b; t++) {
            const float *x = x0 + (size_t)t * D;
            for (int d = 0; d < D; d++) f[d] += x[d];
        }
        const float inv = 1.0f / (float)(b - a);
        for (int d = 0; d < D; d++) f[d] *= inv;
    }
    feat[(size_t)S * D] = logf(1.0f + (float)L);
}

static int key_dim(const ac_cache *c, const ac_projector *proj, int key) {
    return key == AC_KEY_MEAN ? c->D : key == AC_KEY_PROJECTOR ? (proj ? proj->out_dim : AC_KEY_DIM) : AC_KEY_DIM;
}

/* The whole-sequence mean state from a summary (segments are equal-sized up to rounding). */
static void summary_mean(const ac_cache *c, const float *feat, float *mean) {
    const int S = AC_FEAT_SEGMENTS, D = c->D;
    for (int d = 0; d < D; d++) {
        float s = 0;
        for (int k = 0; k < S; k++) s += feat[(size_t)k * D + d];
        mean[d] = s / S;
    }
}

/* key [key_dim] of a feature summary, with projector proj (the key kind
 * PROJECTOR's); scr: the caller's scratch (keyv's second half, rand_x8). */
static int make_key(const ac_cache *c, const ac_projector *proj, int key, const float *feat, float *out, scratch *scr) {
    float *tmp = scr->keyv + AC_MAX(c->D, 1024);
    switch (key) {
    case AC_KEY_PROJECTOR:
        if (!proj) return ac_err(AC_ERR_CACHE, "no trained projector in '%s' (run train-projector)", c->dir);
        return ac_proj_key(proj, feat, out);
    case AC_KEY_MEAN: summary_mean(c, feat, out); return AC_OK;
    case AC_KEY_RANDOM: { /* q8mat.h: the same GEMV as the projector's */
        summary_mean(c, feat, tmp);
        const float sx = ac_q8_quant_u8(tmp, c->D, c->rand_proj.ld, 0, scr->rand_x8);
        ac_q8mat_gemv(&c->rand_proj, NULL, scr->rand_x8, sx, 128, out, 0);
        return AC_OK;
    }
    default: return ac_err(AC_ERR_ARG, "unknown cache key kind %d", key);
    }
}

/* keys out [n][kd] of n feature summaries feat [n][feat_dim] (a batch of
 * lookups): row i bitwise make_key of row i (projector: ac_proj_keys; random:
 * the same quantised means through ac_q8mat_gemm; mean: the same sums). */
static int make_keys(const ac_cache *c, const ac_projector *proj, int key, const float *feat, int n, float *out) {
    const int kd = key_dim(c, proj, key), D = c->D;
    const size_t fd = (size_t)c->feat_dim;
    switch (key) {
    case AC_KEY_PROJECTOR:
        if (!proj) return ac_err(AC_ERR_CACHE, "no trained projector in '%s' (run train-projector)", c->dir);
        return ac_proj_keys(proj, feat, n, out);
    case AC_KEY_MEAN:
        for (int i = 0; i < n; i++) summary_mean(c, feat + i * fd, out + (size_t)i * kd);
        return AC_OK;
    case AC_KEY_RANDOM: {
        const int ld = c->rand_proj.ld;
        float *tmp = AC_MALLOC(((size_t)D + n) * sizeof *tmp);
        uint8_t *x8 = AC_MALLOC((size_t)n * ld);
        if (!tmp || !x8) {
            free(tmp), free(x8);
            return ac_err(AC_ERR_NOMEM, "cache: out of memory for %d lookup keys", n);
        }
        float *sx = tmp + D;
        for (int i = 0; i < n; i++) {
            summary_mean(c, feat + i * fd, tmp);
            sx[i] = ac_q8_quant_u8(tmp, D, ld, 0, x8 + (size_t)i * ld);
        }
        ac_q8mat_gemm(&c->rand_proj, NULL, x8, ld, sx, n, 128, out, kd, 0);
        free(tmp), free(x8);
        return AC_OK;
    }
    default: return ac_err(AC_ERR_ARG, "unknown cache key kind %d", key);
    }
}

/* distance from the index's similarity: L2 index -> Euclidean, cosine -> 1 - cos */
static float sim_to_dist(int key, float sim) {
    if (key == AC_KEY_PROJECTOR) return sqrtf(sim < 0 ? -sim : 0);
    return 1.0f - sim;
}

static int ensure_x0(const ac_cache *c, scratch *s, int L) {
    if ((size_t)L <= s->cap_x0) return AC_OK;
    float *n = realloc(s->x0, (size_t)L * c->D * sizeof *n);
    if (!n) return ac_err(AC_ERR_NOMEM, "cache: out of memory for %d layer-0 states", L);
    s->x0 = n;
    s->cap_x0 = (size_t)L;
    return AC_OK;
}

static int features_of(const ac_cache *c, scratch *s, const int32_t *tokens, int L, float *feat) {
    int rc = ensure_x0(c, s, L);
    if (rc) return rc;
    if ((rc = ac_model_layer0_states(c->m, tokens, L, s->x0))) return rc;
    summarize(s->x0, L, c->D, feat);
    return AC_OK;
}

/* ---- paths, params ------------------------------------------------------------------------------ */

static void path_of(const ac_cache *c, const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", c->dir, name);
}

static void index_name(int key, char *buf, size_t cap) {
    static const char *const names[] = {"projector", "mean", "random"};
    snprintf(buf, cap, "index-%s.faiss", names[key]);
}

ac_cache_params ac_cache_default_params(void) {
    ac_cache_params p;
    memset(&p, 0, sizeof p);
    p.key = AC_KEY_AUTO;
    p.index_kind = AC_INDEX_FLAT;
    p.threshold = 0.05f;
    p.layers = "all";
    p.commit_every = 64;
    p.adapt_floor = AC_ADAPT_DEFAULT_FLOOR;
    p.adapt_window = AC_ADAPT_DEFAULT_WINDOW;
    p.adapt_probe_max = AC_ADAPT_DEFAULT_PROBE_MAX;
    return p;
}

ac_cache_train_params ac_cache_default_train_params(void) {
    ac_cache_train_params t = {.n_pairs = 4000, .epochs = 30, .hidden = 256, .lr = 1e-3f, .seed = 1, .verbose = 0};
    return t;
}

/* "all", "none", "policy" (file), or a list like "0-3,7" */
static int parse_layers(ac_cache *c, const char *spec) {
    const int n = c->n_layer;
    if (!spec || !strcmp(spec, "all")) {
        memset(c->layers, 1, (size_t)n);
        return AC_OK;
    }
    memset(c->layers, 0, (size_t)n);
    if (!strcmp(spec, "none")) return AC_OK;
    char buf[4096];
    const char *s = spec;
    if (!strcmp(spec, "policy")) {
        char path[PATH_MAX + 32];
        path_of(c, "policy.txt", path, sizeof path);
        FILE *f = fopen(path, "r");
        if (!f) return ac_err(AC_ERR_CACHE, "no reuse policy in '%s' (run tune)", c->dir);
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        char *nl = strchr(buf, '\n');
        if (nl) *nl = 0;
        s = buf;
        if (!strncmp(s, "layers ", 7)) s += 7;
        if (!strcmp(s, "none")) return AC_OK;
    }
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s) return ac_err(AC_ERR_ARG, "bad layer list '%s'", spec);
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            if (end == s + 1) return ac_err(AC_ERR_ARG, "bad layer list '%s'", spec);
            s = end;
        }
        if (a < 0 || b >= n || a > b) return ac_err(AC_ERR_ARG, "layer range %ld-%ld outside 0-%d", a, b, n - 1);
        for (long l = a; l <= b; l++) c->layers[l] = 1;
        if (*s == ',') s++;
        else if (*s) return ac_err(AC_ERR_ARG, "bad layer list '%s'", spec);
    }
    return AC_OK;
}

/* ---- index ------------------------------------------------------------------------------------- */

/* index-<key>.faiss holds the keys of entries 0..n-1 in order; a sidecar
 * index-<key>.faiss.meta records (n, projector fingerprint, index kind, keys
 * version) so a stale index (more entries since, another projector, keys made
 * by older code) is rebuilt. Version 4: projector and random keys from int8 GEMVs (q8mat.h). */
#define KEYS_VERSION 4

/* A new index over the reader handle's entries with key kind `key` (projector
 * proj); *out = NULL when there is nothing to index. Reads only shared state
 * that the writer alone changes: call it as the writer (wmu) or at open. */
static int make_index(ac_cache *c, const ac_projector *proj, int key, ac_index **out) {
    *out = NULL;
    const int64_t n = ac_mapstore_count(c->st);
    const int kd = key_dim(c, proj, key);
    if (n == 0) return AC_OK;
    float *keys = AC_MALLOC((size_t)n * kd * sizeof *keys);
    int64_t *ids = AC_MALLOC((size_t)n * sizeof *ids), nk = 0, n_damaged = 0; /* [nk] entries indexed */
    int rc = (!keys || !ids) ? AC_ERR_NOMEM : AC_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        ac_store_entry e;
        if ((rc = ac_mapstore_get(c->st, i, &e)) == AC_ERR_CACHE) { /* damaged record: left out (a lookup skips it too) */
            ac_err_clear();
            rc = AC_OK;
            n_damaged++;
            continue;
        }
        if (rc) break;
        rc = make_key(c, proj, key, e.feature, keys + (size_t)nk * kd, &c->wscr);
        ids[nk++] = i;
    }
    c->n_unindexed = n_damaged;
    ac_index *idx = NULL;
    if (!rc && nk > 0) { /* nk == 0: every record damaged, nothing to look up */
        int kind = c->p.index_kind;
        if (kind == AC_INDEX_IVF_FLAT && nk < 64) kind = AC_INDEX_FLAT; /* too few to train lists */
        ac_index_params ip = ac_index_default_params(kind, kd);
        ip.metric = key == AC_KEY_PROJECTOR ? AC_METRIC_L2 : AC_METRIC_COSINE;
        if (kind == AC_INDEX_IVF_FLAT) {
            int nl = (int)sqrt((double)nk);
            ip.nlist = nl < 4 ? 4 : nl;
        }
        rc = ac_index_create(&ip, &idx);
        if (!rc && kind == AC_INDEX_IVF_FLAT) rc = ac_index_train(idx, keys, nk);
        if (!rc) rc = ac_index_add(idx, keys, ids, nk);
    }
    free(keys);
    free(ids);
    if (rc) {
        ac_index_free(idx);
        if (rc == AC_ERR_NOMEM) ac_err(rc, "cache: out of memory building the index");
        return rc;
    }
    *out = idx;
    return AC_OK;
}

/* Make idx (may be NULL) the index lookups use, freeing the old one. Caller
 * holds rw for writing. The old index's scan statistics carry over. */
static void swap_index(ac_cache *c, ac_index *idx) {
    int64_t u = 0, r = 0;
    ac_index_scan_stats(c->idx, NULL, &u, &r);
    c->scan_carry[0] += u - c->scan_base[0];
    c->scan_carry[1] += r - c->scan_base[1];
    c->scan_base[0] = c->scan_base[1] = 0;
    ac_index_free(c->idx);
    c->idx = idx;
}

/* Save the index and its sidecar (writer, or open). */
static int save_index(ac_cache *c) {
    if (!c->idx) return AC_OK;
    char name[64], path[PATH_MAX + 80], mpath[PATH_MAX + 96];
    index_name(c->key, name, sizeof name);
    path_of(c, name, path, sizeof path);
    int rc = ac_index_save(c->idx, path);
    if (rc) return rc;
    snprintf(mpath, sizeof mpath, "%s.meta", path);
    ac_atomic_file af;
    if ((rc = ac_atomic_open(&af, mpath))) return rc;
    fprintf(af.f, "%lld %016llx %d %d\n", (long long)ac_mapstore_count(c->st),
            (unsigned long long)(c->proj ? ac_proj_fingerprint(c->proj) : 0), c->p.index_kind, KEYS_VERSION);
    if ((rc = ac_atomic_commit(&af))) return rc;
    c->idx_dirty = 0;
    return AC_OK;
}

/* Rebuild the index of the cache's key kind from every entry and swap it in;
 * save: also write it to the directory. Writer (wmu) or open. */
static int build_index(ac_cache *c, int save) {
    ac_index *idx = NULL;
    int rc = make_index(c, c->proj, c->key, &idx);
    if (rc) return rc;
    wr_lock(c);
    swap_index(c, idx);
    rw_unlock(c);
    return save ? save_index(c) : AC_OK;
}

/* Load the saved index if it matches the store and projector; else rebuild. */
static int open_index(ac_cache *c) {
    const int64_t n = ac_mapstore_count(c->st);
    if (n == 0) return AC_OK;
    char name[64], path[PATH_MAX + 80], mpath[PATH_MAX + 96];
    index_name(c->key, name, sizeof name);
    path_of(c, name, path, sizeof path);
    snprintf(mpath, sizeof mpath, "%s.meta", path);
    FILE *f = fopen(mpath, "r");
    long long mn = -1;
    unsigned long long mfp = 0;
    int mkind = -1, mver = 0;
    if (f) {
        if (fscanf(f, "%lld %llx %d %d", &mn, &mfp, &mkind, &mver) != 4 || mver != KEYS_VERSION) mn = -1;
        fclose(f);
    }
    uint64_t pfp = c->proj ? ac_proj_fingerprint(c->proj) : 0;
    if (mn == n && mfp == pfp && mkind == c->p.index_kind && ac_index_load(path, &c->idx) == AC_OK &&
        ac_index_ntotal(c->idx) <= n && ac_index_dim(c->idx) == key_dim(c, c->proj, c->key))
        return AC_OK;
    ac_index_free(c->idx);
    c->idx = NULL;
    ac_err_clear();
    return build_index(c, c->p.writable);
}

/* The entries committed since the reader handle last looked: refresh it and
 * add their keys to the index (a first index is built whole). Writer (wmu). */
static int publish_new(ac_cache *c) {
    const int64_t n0 = ac_mapstore_count(c->st);
    wr_lock(c);
    int rc = ac_mapstore_refresh(c->st, NULL);
    const int64_t n1 = ac_mapstore_count(c->st);
    if (!rc) rc = usage_grow(c, n1);
    const int64_t now = unix_ms();
    for (int64_t i = n0; !rc && i < n1; i++) atomic_store(&c->u_last[i], now); /* inserted now */
    rw_unlock(c);
    if (rc) return rc;
    if (n1 == n0) return AC_OK;
    for (int64_t i = n0; i < n1; i++) { /* the use records know the new entries' keys */
        ac_store_entry e;
        if (ac_mapstore_get(c->st, i, &e) == AC_OK) atomic_store(&c->u_key[i], e.key);
    }
    ac_err_clear(); /* a damaged record: left out here and by the index below */
    pthread_mutex_lock(&c->admu); /* new entries may serve the stream: probe again soon */
    ac_adapt_new_entries(&c->adapt);
    pthread_mutex_unlock(&c->admu);
    if (!c->idx) {
        if ((rc = build_index(c, 0)) == AC_OK) c->idx_dirty = 1;
        return rc;
    }
    const int kd = key_dim(c, c->proj, c->key);
    float *keys = AC_MALLOC((size_t)(n1 - n0) * kd * sizeof *keys);
    int64_t *ids = AC_MALLOC((size_t)(n1 - n0) * sizeof *ids), nk = 0;
    rc = (!keys || !ids) ? AC_ERR_NOMEM : AC_OK;
    for (int64_t i = n0; i < n1 && !rc; i++) {
        ac_store_entry e;
        if ((rc = ac_mapstore_get(c->st, i, &e)) == AC_ERR_CACHE) { /* damaged: left out, as in make_index */
            ac_err_clear();
            rc = AC_OK;
            continue;
        }
        if (!rc) rc = make_key(c, c->proj, c->key, e.feature, keys + (size_t)nk * kd, &c->wscr);
        if (!rc) ids[nk++] = i;
    }
    if (!rc && nk) {
        wr_lock(c);
        rc = ac_index_add(c->idx, keys, ids, nk);
        rw_unlock(c);
    }
    free(keys);
    free(ids);
    c->idx_dirty = 1;
    if (rc) { /* a partial add: rebuild whole rather than leave entries unfindable */
        ac_err_clear();
        rc = build_index(c, 0);
    }
    return rc;
}

/* ---- open / close ---------------------------------------------------------------------------------- */

int ac_cache_open(const ac_model *m, const char *dir, const ac_cache_params *pp, ac_cache **out) {
    if (!m || !dir || !out) return ac_err(AC_ERR_ARG, "ac_cache_open: invalid argument");
    *out = NULL;
    ac_cache_params p = pp ? *pp : ac_cache_default_params();
    ac_cache *c = AC_CALLOC(1, sizeof *c);
    if (!c) return AC_ERR_NOMEM;
    int rc = AC_OK;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra); /* a writer waiting to publish is not starved by a stream of lookups */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    const int lk = pthread_rwlock_init(&c->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (lk != 0) {
        free(c);
        return ac_err(AC_ERR_NOMEM, "cache: cannot create its lock");
    }
    pthread_mutex_init(&c->wmu, NULL);
    pthread_mutex_init(&c->amu, NULL);
    pthread_mutex_init(&c->fmu, NULL);
    pthread_mutex_init(&c->admu, NULL);
    c->locks = 1;
    if (strlen(dir) >= sizeof c->dir - 64) {
        rc = ac_err(AC_ERR_ARG, "cache path too long");
        goto fail;
    }
    strcpy(c->dir, dir);
    c->m = m;
    c->p = p;
    c->D = m->info.n_embd;
    c->n_layer = m->info.n_layer;
    c->n_head = m->info.n_head;
    c->causal = m->info.causal;
    c->feat_dim = AC_FEAT_SEGMENTS * c->D + 1;
    model_fingerprint(m, c->fp);
    if ((rc = ac_adapt_check(p.adapt_floor, p.adapt_window, p.adapt_probe_max))) goto fail;
    ac_adapt_init(&c->adapt, p.adapt_floor, p.adapt_window, p.adapt_probe_max);

    if (p.writable && p.create && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = ac_err(AC_ERR_IO, "cannot create cache directory '%s': %s", dir, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        rc = ac_err(AC_ERR_CACHE, "no attention cache at '%s' (not a directory; build one with `attncache build`)", dir);
        goto fail;
    }
    /* codec of new entries */
    const char *cs = p.codec ? p.codec : (c->causal ? "q8-causal" : "q8");
    if ((rc = ac_codec_parse(cs, &c->codec))) goto fail;
    if (c->codec.causal && !c->causal) {
        rc = ac_err(AC_ERR_ARG, "codec '%s' is for causal models; %s is bidirectional", cs, m->info.arch_name);
        goto fail;
    }
    /* the store, refusing another model's */
    char path[PATH_MAX + 32];
    path_of(c, "maps.acdb", path, sizeof path);
    ac_store_params sp = {{c->fp[0], c->fp[1]}, c->n_layer, c->n_head, c->causal, c->feat_dim, 1};
    int flags = p.writable ? AC_STORE_WRITE | (p.create ? AC_STORE_CREATE : 0) : AC_STORE_READ;
    if (p.no_verify) flags |= AC_STORE_NO_VERIFY;
    /* a writable cache has two handles: the writer's, and the readers' (lookups
     * never touch the writer's state; it is refreshed after each commit) */
    if ((rc = ac_mapstore_open(&ac_store_file_ops, path, &sp, flags, p.writable ? &c->stw : &c->st)) ||
        (p.writable &&
         (rc = ac_mapstore_open(&ac_store_file_ops, path, &sp, AC_STORE_READ | (flags & AC_STORE_NO_VERIFY), &c->st)))) {
        ac_err_prefix(rc, "attention cache '%s'", dir);
        goto fail;
    }
    ac_store_params got;
    ac_mapstore_get_params(c->st, &got);
    c->with_tokens = got.with_tokens;
    if (p.rows != AC_ROWS_ALL && p.rows != AC_ROWS_PREFIX) {
        rc = ac_err(AC_ERR_ARG, "bad cache rows mode %d", p.rows);
        goto fail;
    }
    if (p.rows == AC_ROWS_PREFIX) {
        if (!c->causal) {
            rc = ac_err(AC_ERR_ARG, "rows 'prefix' needs a causal model: every row of %s's bidirectional maps "
                        "depends on every token", m->info.arch_name);
            goto fail;
        }
        if (!c->with_tokens) {
            rc = ac_err(AC_ERR_CACHE, "attention cache '%s' keeps no token ids (format 1): rows 'prefix' needs a "
                        "database rebuilt with this version", dir);
            goto fail;
        }
    }
    /* projector, if trained, must be this model's */
    path_of(c, "projector.gguf", path, sizeof path);
    if (access(path, F_OK) == 0) {
        if ((rc = ac_proj_load(path, &c->proj))) goto fail;
        if (c->proj->trained_on != c->fp[0]) {
            rc = ac_err(AC_ERR_CACHE, "projector '%s' was trained for another model (fingerprint %016llx, this model %016llx)",
                        path, (unsigned long long)c->proj->trained_on, (unsigned long long)c->fp[0]);
            goto fail;
        }
        if (c->proj->in_dim != c->feat_dim) {
            rc = ac_err(AC_ERR_CACHE, "projector '%s' reads %d features, this model's summaries have %d", path,
                        c->proj->in_dim, c->feat_dim);
            goto fail;
        }
    }
    c->key = p.key == AC_KEY_AUTO ? (c->proj ? AC_KEY_PROJECTOR : AC_KEY_RANDOM) : p.key;
    if (c->key < 0 || c->key > AC_KEY_RANDOM) {
        rc = ac_err(AC_ERR_ARG, "bad cache key kind %d", c->key);
        goto fail;
    }
    if (c->key == AC_KEY_PROJECTOR && !c->proj) {
        rc = ac_err(AC_ERR_CACHE, "no trained projector in '%s' (run `attncache train-projector`)", dir);
        goto fail;
    }
    float *rp = AC_MALLOC((size_t)AC_KEY_DIM * c->D * sizeof(float));
    c->layers = AC_CALLOC((size_t)c->n_layer, 1);
    if (!rp || !c->layers || scratch_init(&c->wscr, c->D, c->feat_dim)) {
        free(rp);
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    uint64_t s = 0x5eed;
    for (size_t i = 0; i < (size_t)AC_KEY_DIM * c->D; i++) { /* +-1/sqrt(D), fixed seed */
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        rp[i] = ((s >> 63) ? 1.0f : -1.0f) / sqrtf((float)c->D);
    }
    rc = ac_q8mat_pack(rp, AC_KEY_DIM, c->D, &c->rand_proj);
    free(rp);
    if (rc) goto fail;
    if ((rc = parse_layers(c, p.layers))) goto fail;
    if (!(c->serve = AC_MALLOC((size_t)c->n_layer * c->n_head))) {
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    if ((rc = ac_serve_heads_parse(dir, p.serve_heads, c->n_layer, c->n_head, c->serve))) goto fail;
    c->p.serve_heads = NULL; /* borrowed from the caller: read here only */
    if ((rc = ac_heads_load(dir, p.heads, c->n_layer, c->n_head, &c->heads))) goto fail;
    if (p.exact_tail < 0) {
        rc = ac_err(AC_ERR_ARG, "cache: exact_tail must be >= 0 (got %d)", p.exact_tail);
        goto fail;
    }
    if (!(p.verify >= 0 && p.verify <= 1) || p.verify_rows < 0 || p.verify_rows > 64) {
        rc = ac_err(AC_ERR_ARG, "cache: verify must be in [0, 1] and verify_rows in 0-64 (got %g, %d)", p.verify,
                    p.verify_rows);
        goto fail;
    }
    if (p.verify > 0 && p.rows != AC_ROWS_ALL) {
        rc = ac_err(AC_ERR_ARG, "cache: verify is for rows 'all' (rows 'prefix' serves exact rows only)");
        goto fail;
    }
    if (p.verify > 0 && (rc = ac_layer0_qk_init(m, &c->l0))) goto fail;
    if (!(p.recheck_margin >= 0 && p.recheck_margin <= 1)) {
        rc = ac_err(AC_ERR_ARG, "cache: recheck_margin must be in [0, 1] (a probability margin; got %g)",
                    (double)p.recheck_margin);
        goto fail;
    }
    if (p.recheck_margin > 0 && m->info.n_cls_out < 2) {
        rc = ac_err(AC_ERR_ARG, "cache: recheck_margin needs a model with a classifier head (%s has none): the "
                                "gate reads its outputs' margin", m->info.arch_name);
        goto fail;
    }
    if (p.exact_tail > 0 && (!c->causal || p.rows != AC_ROWS_ALL)) {
        rc = ac_err(AC_ERR_ARG, "cache: exact tail rows need a causal model and rows 'all'");
        goto fail;
    }
    if ((rc = usage_grow(c, ac_mapstore_count(c->st)))) goto fail;
    if (p.writable) usage_load(c);
    if ((rc = open_index(c))) goto fail;
    *out = c;
    return AC_OK;
fail:
    ac_cache_close(c);
    return rc;
}

static void att_release(void *user);

int ac_cache_close(ac_cache *c) {
    if (!c) return AC_OK;
    int rc = AC_OK;
    if (c->locks) {
        /* every attached context drops the hook (att_release unlinks and frees
         * its attachment); afterwards they run exact */
        for (;;) {
            pthread_mutex_lock(&c->amu);
            cache_att *a = c->atts;
            pthread_mutex_unlock(&c->amu);
            if (!a) break;
            ac_ctx_set_attn_hook(a->ctx, NULL);
        }
        if (c->stw) rc = ac_cache_commit(c); /* pending entries, then the use records */
        if (c->stw && c->idx_dirty) {
            int rs = save_index(c); /* the keys added since open, so the next open need not rebuild */
            if (!rc) rc = rs;
        }
    }
    ac_mapstore_close(c->stw);
    ac_mapstore_close(c->st);
    ac_index_free(c->idx);
    ac_proj_free(c->proj);
    ac_q8mat_free(&c->rand_proj);
    free(c->layers);
    free(c->serve);
    ac_heads_free(&c->heads);
    ac_layer0_qk_free(&c->l0);
    scratch_free(&c->wscr);
    free(c->pend_keys);
    free((void *)c->u_key);
    free((void *)c->u_hits);
    free((void *)c->u_last);
    if (c->locks) {
        pthread_rwlock_destroy(&c->rw);
        pthread_mutex_destroy(&c->wmu);
        pthread_mutex_destroy(&c->amu);
        pthread_mutex_destroy(&c->fmu);
        pthread_mutex_destroy(&c->admu);
    }
    free(c);
    return rc;
}

/* ---- lookup ---------------------------------------------------------------------------------------- */

static int entry_fits(const ac_cache *c, int Le, int L) {
    if (Le == L) return 1;
    return Le > L && (c->causal || c->p.allow_longer);
}

/* Keep the first failure's message (shown with the failure count). */
static void note_failure(ac_cache *c, const char *msg) {
    pthread_mutex_lock(&c->fmu);
    if (!c->first_failure[0]) snprintf(c->first_failure, sizeof c->first_failure, "%s", msg && *msg ? msg : "(no message)");
    pthread_mutex_unlock(&c->fmu);
}

/* feat [feat_dim] of one query: from x0 [L][D], its layer-0 states, when the
 * forward pass has them; else from summary [S][D], their segment means, when
 * the backend computed them (the GPU; not with verify, which needs the
 * states: *given 1); else computed here from the tokens (into s->x0). */
static int query_features(const ac_cache *c, scratch *s, const int32_t *tokens, int L, const float *x0,
                          const float *summary, float *feat, int *given) {
    *given = 0;
    if (x0) {
        summarize(x0, L, c->D, feat);
        return AC_OK;
    }
    if (summary && c->p.verify <= 0) { /* the backend's summary: the same values, no states here */
        memcpy(feat, summary, (size_t)AC_FEAT_SEGMENTS * c->D * sizeof *feat);
        feat[(size_t)AC_FEAT_SEGMENTS * c->D] = logf(1.0f + (float)L);
        *given = 1;
        return AC_OK;
    }
    return features_of(c, s, tokens, L, feat);
}

/* What one query's candidate check counted (added to the cache's counters by
 * the caller, only for lookups the admission let through). */
typedef struct cand_counts {
    int64_t damaged, verify_checked, verify_rejected;
    double t_verify;
} cand_counts;

/* The candidates ids / sims [AC_LOOKUP_K] (best first) of query `tokens`
 * [L]: the entry it takes into st (st->hit; st->rows 0 on entry). x0v: the
 * query's layer-0 states [L][D] when verify is on. Reads the store (rw held
 * by the caller, read); touches nothing shared but the store's readers. A
 * damaged candidate record is skipped (counted in *cc). */
static int pick_candidate(ac_cache *c, const int32_t *tokens, int L, const float *x0v, const int64_t *ids,
                          const float *sims, seq_state *st, cand_counts *cc) {
    const float threshold = c->p.threshold;
    int rc = AC_OK;
    int vrows[64], nvr = 0;
    float *vP = NULL, *vrow = NULL; /* verify: the query's exact layer-0 rows [H][nvr][L], scratch */
    for (int k = 0; !rc && k < AC_LOOKUP_K && ids[k] >= 0; k++) {
        float d = sim_to_dist(c->key, sims[k]);
        ac_store_entry e;
        if (c->p.rows == AC_ROWS_PREFIX) {
            /* exact rows only: the candidate sharing the longest token prefix
             * (row t of a causal map depends on tokens 0..t alone); distance
             * plays no part in exactness, so no threshold */
            if (ac_mapstore_get(c->st, ids[k], &e) != AC_OK) { /* damaged record: skip it */
                cc->damaged++;
                continue;
            }
            if (!e.tokens) continue;
            const int m = AC_MIN(L, e.n_tokens);
            int p = 0;
            while (p < m && e.tokens[p] == tokens[p]) p++;
            if (p >= AC_MIN_PREFIX_ROWS && p > st->rows) {
                st->hit = 1;
                st->rows = p;
                st->e = e;
                st->dist = d;
                if (p == L) break;
            }
            continue;
        }
        if (d > threshold) break; /* candidates come best first */
        if (!entry_fits(c, ac_mapstore_n_tokens(c->st, ids[k]), L)) continue; /* no read of a record that cannot serve */
        if (ac_mapstore_get(c->st, ids[k], &e) != AC_OK) { /* damaged record: skip it */
            cc->damaged++;
            continue;
        }
        if (c->p.verify > 0) { /* trust the map only if its layer-0 rows agree with the query's */
            const double tv0 = ac_now();
            if (!vP) {
                nvr = ac_verify_pick_rows(L, c->causal, c->p.verify_rows > 0 ? c->p.verify_rows : 4, vrows);
                vP = AC_MALLOC((size_t)c->n_head * nvr * L * sizeof *vP);
                rc = vP ? ac_layer0_rows(&c->l0, x0v, L, vrows, nvr, vP)
                        : ac_err(AC_ERR_NOMEM, "cache: out of memory verifying a map");
            }
            float *nr_ = rc ? NULL : realloc(vrow, (size_t)e.n_tokens * sizeof *vrow);
            if (!rc && !nr_) rc = ac_err(AC_ERR_NOMEM, "cache: out of memory verifying a map");
            if (rc) break;
            vrow = nr_;
            const double dv = ac_verify_distance(&e, c->n_head, L, c->causal, vrows, nvr, vP, vrow);
            cc->verify_checked++;
            cc->t_verify += ac_now() - tv0;
            if (dv > c->p.verify) {
                cc->verify_rejected++;
                continue;
            }
        }
        st->hit = 1;
        st->rows = L;
        st->e = e;
        st->dist = d;
        break;
    }
    free(vP);
    free(vrow);
    if (rc) st->hit = 0;
    return rc;
}

static void add_cand_counts(counters *n, const cand_counts *cc) {
    if (cc->damaged) add_i64(&n->damaged, cc->damaged);
    if (cc->verify_checked) add_i64(&n->verify_checked, cc->verify_checked);
    if (cc->verify_rejected) add_i64(&n->verify_rejected, cc->verify_rejected);
    if (cc->t_verify > 0) add_f64(&n->t_verify, cc->t_verify);
}

/* A hit's entry use (rw held, read). */
static void note_use(ac_cache *c, const seq_state *st) {
    if (!st->hit || st->e.index < 0 || st->e.index >= c->u_cap) return;
    atomic_store_explicit(&c->u_key[st->e.index], st->e.key, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->u_hits[st->e.index], 1, memory_order_relaxed);
    atomic_store_explicit(&c->u_last[st->e.index], unix_ms(), memory_order_relaxed);
    atomic_store_explicit(&c->u_dirty, 1, memory_order_relaxed);
}

/* An injected failure (cache_testing.h) for the next lookup, if one is due. */
static int injected_failure(ac_cache *c) {
    if (atomic_load_explicit(&c->fail_next, memory_order_relaxed) > 0 &&
        atomic_fetch_sub_explicit(&c->fail_next, 1, memory_order_relaxed) > 0)
        return ac_err(AC_ERR_INTERNAL, "cache '%s': lookup failure injected for testing", c->dir);
    return AC_OK;
}

/* Look sequence `tokens` up for attachment a; fills *st (and a->layers when
 * copy_layers). x0 [L][D], summary [S][D]: as query_features. s: the calling
 * thread's scratch; key and search run on pool (NULL: the calling thread).
 * Holds rw (read) throughout. A damaged candidate record is skipped
 * (counted); an error is returned and the caller serves the sequence
 * exactly. */
static int lookup_with(cache_att *a, const int32_t *tokens, int L, const float *x0, const float *summary,
                       seq_state *st, scratch *s, struct ac_pool *pool, int copy_layers) {
    ac_cache *c = a->c;
    counters *n = &c->n;
    st->looked_up = 1;
    st->hit = 0;
    rd_lock(c);
    if (copy_layers) {
        memcpy(a->layers, c->layers, (size_t)c->n_layer);
        memcpy(a->serve, c->serve, (size_t)c->n_layer * c->n_head);
    }
    const float threshold = c->p.threshold;
    if (!c->idx || threshold < 0) {
        rw_unlock(c);
        return AC_OK;
    }
    pthread_mutex_lock(&c->admu);
    const int admit = ac_adapt_admit(&c->adapt);
    pthread_mutex_unlock(&c->admu);
    if (admit == AC_ADAPT_SKIP) { /* the stream's recent lookups missed: run exact, no lookup */
        rw_unlock(c);
        add_i64(&n->skipped, 1);
        return AC_OK;
    }
    if (admit == AC_ADAPT_PROBE) add_i64(&n->probes, 1);
    add_i64(&n->queries, 1);
    double t0 = ac_now();
    int given = 0;
    int rc = query_features(c, s, tokens, L, x0, summary, s->feat, &given);
    if (given) add_i64(&n->features_given, 1);
    double t1 = ac_now();
    add_f64(&n->t_features, t1 - t0);
    float *key = s->keyv;
    if (!rc) rc = make_key(c, c->proj, c->key, s->feat, key, s);
    if (!rc) rc = injected_failure(c);
    double t2 = ac_now();
    add_f64(&n->t_key, t2 - t1);
    int64_t ids[AC_LOOKUP_K];
    float sims[AC_LOOKUP_K];
    if (!rc) rc = ac_index_search_pool(c->idx, key, 1, AC_LOOKUP_K, ids, sims, pool);
    double t3 = ac_now();
    add_f64(&n->t_search, t3 - t2);
    cand_counts cc = {0};
    if (!rc) rc = pick_candidate(c, tokens, L, x0 ? x0 : s->x0, ids, sims, st, &cc);
    add_cand_counts(n, &cc);
    if (!rc) note_use(c, st);
    rw_unlock(c);
    pthread_mutex_lock(&c->admu); /* a failed lookup counts as a miss: it cost and served nothing */
    ac_adapt_note(&c->adapt, admit, !rc && st->hit);
    pthread_mutex_unlock(&c->admu);
    if (rc) {
        st->hit = 0;
        return rc;
    }
    if (st->hit) {
        add_i64(&n->hits, 1);
        add_f64(&n->sum_distance_hit, st->dist);
    }
    add_f64(&n->t_fetch, ac_now() - t3);
    ac_err_clear(); /* skipped damaged records: counted, not this call's error */
    return AC_OK;
}

static int lookup(cache_att *a, const int32_t *tokens, int L, const float *x0, const float *summary, seq_state *st) {
    return lookup_with(a, tokens, L, x0, summary, st, &a->scr, ac_ctx_pool(a->ctx), 1);
}

void ac_cache_fail_next_lookups(ac_cache *c, int n) {
    if (c) atomic_store(&c->fail_next, n > 0 ? n : 0);
}

void ac_cache_lookup_all_each(ac_cache *c, int on) {
    if (c) atomic_store(&c->lookup_each, on ? 1 : 0);
}

/* ---- hook callbacks --------------------------------------------------------------------------------- */

static seq_state *seq_slot(cache_att *a, int seq) {
    if (seq >= a->ss_cap) {
        int nc = AC_MAX(seq + 1, a->ss_cap * 2);
        seq_state *n = realloc(a->ss, (size_t)nc * sizeof *n);
        if (!n) return NULL;
        memset(n + a->ss_cap, 0, (size_t)(nc - a->ss_cap) * sizeof *n);
        a->ss = n;
        a->ss_cap = nc;
    }
    return &a->ss[seq];
}

static int hook_reuse(void *user, const ac_attn_site *site) {
    cache_att *a = user;
    ac_cache *c = a->c;
    seq_state *st = seq_slot(a, site->seq);
    if (!st) { /* no memory for the sequence's state: a failed lookup */
        if (site->layer == 0) {
            add_i64(&c->n.failed, 1);
            note_failure(c, "cache: out of memory for a sequence's lookup state");
        }
        return 0;
    }
    if (site->layer == 0 && st->batched && st->bt == site->tokens && st->bL == site->n_tokens) {
        st->batched = 0; /* looked up already, with the call's other sequences (hook_lookup_all) */
    } else if (site->layer == 0) { /* first layer of a new forward call: look this sequence up */
        memset(st, 0, sizeof *st);
        if (lookup(a, site->tokens, site->n_tokens, site->x, site->summary, st) != AC_OK) {
            /* a failed lookup never breaks the exact path: counted, its message kept */
            st->hit = 0;
            add_i64(&c->n.failed, 1);
            note_failure(c, ac_last_error());
            ac_err_clear();
        }
    }
    if (!st->hit || !a->layers[site->layer]) return 0;
    const uint8_t *sv = a->serve + (size_t)site->layer * c->n_head;
    int nh = 0;
    for (int h = 0; h < c->n_head; h++) nh += sv[h];
    /* no head of this layer served; or some, where the prefix cache supplied the first rows (the
     * forward serves heads separately only on sites it computes whole): computed exactly */
    if (nh == 0 || (nh < c->n_head && site->first > 0)) return 0;
    int rows = st->rows;
    if (c->p.exact_tail > 0) /* the last rows exact (causal, rows 'all') */
        rows = AC_MIN(rows, site->n_tokens - c->p.exact_tail);
    if (site->exact_from >= 0) /* the caller's exact rows (ac_ctx_set_exact_from): the query's own */
        rows = AC_MIN(rows, site->exact_from);
    if (rows < 1 || (rows < site->n_tokens && !site->causal)) return 0; /* bidirectional: all rows or none */
    add_i64(&c->n.layers_served, 1);
    add_i64(&c->n.heads_served, nh);
    add_i64(&c->n.rows_served, rows);
    add_i64(&c->n.rows_total, site->n_tokens);
    st->served = 1;
    return rows;
}

/* The confidence gate (ac_cache_params.recheck_margin): the served sequences of the call
 * whose classifier margin, softmax top-1 minus top-2 probability, is under the margin. */
static int hook_recheck(void *user, int n_seq, const float *cls, int n_cls, uint8_t *redo) {
    cache_att *a = user;
    ac_cache *c = a->c;
    const float m = c->p.recheck_margin;
    int k = 0;
    for (int s = 0; m > 0 && n_cls >= 2 && s < n_seq && s < a->ss_cap; s++) {
        if (!a->ss[s].served) continue;
        const float *z = cls + (size_t)s * n_cls; /* [n_cls] logits */
        int b1 = z[1] > z[0] ? 1 : 0, b2 = 1 - b1; /* top-1, top-2 */
        for (int i = 2; i < n_cls; i++) {
            if (z[i] > z[b1]) b2 = b1, b1 = i;
            else if (z[i] > z[b2]) b2 = i;
        }
        double sum = 0;
        for (int i = 0; i < n_cls; i++) sum += exp((double)z[i] - z[b1]);
        const double margin = (1.0 - exp((double)z[b2] - z[b1])) / sum; /* p(b1) - p(b2) */
        if (!(margin >= m)) redo[s] = 1, k++; /* NaN outputs: recomputed */
    }
    if (k) add_i64(&c->n.rechecked, k);
    return k;
}

/* hook_lookup_all's buffers (an attachment's, grown as needed). Rows of feat,
 * keys, ids and sims follow a round's order (pos); the rest is by site. */
typedef struct lookup_batch {
    int cap, kcap;                /* sites; floats of one key */
    float *feat;                  /* [cap][feat_dim] */
    float *keys;                  /* [cap][kcap] */
    int64_t *ids;                 /* [cap][AC_LOOKUP_K] */
    float *sims;                  /* [cap][AC_LOOKUP_K] */
    int *pos;                     /* [cap] the sites looked up in a round */
    int *rc;                      /* [cap] each site's lookup status */
    uint8_t *done, *given, *kind; /* [cap] looked up; features from the summary; the admission's answer */
    cand_counts *cc;              /* [cap] */
} lookup_batch;

static void lookup_batch_free(lookup_batch *b) {
    if (!b) return;
    free(b->feat), free(b->keys), free(b->ids), free(b->sims), free(b->pos), free(b->rc);
    free(b->done), free(b->cc);
    free(b);
}

/* a->lb with room for n sites and keys of kd floats. */
static lookup_batch *lookup_batch_get(cache_att *a, int n, int kd) {
    lookup_batch *b = a->lb;
    if (b && b->cap >= n && b->kcap >= kd) return b;
    lookup_batch_free(b);
    a->lb = b = AC_CALLOC(1, sizeof *b);
    if (!b) return NULL;
    const int cap = AC_MAX(n, 64);
    b->cap = cap, b->kcap = kd;
    b->feat = AC_MALLOC((size_t)cap * a->c->feat_dim * sizeof *b->feat);
    b->keys = AC_MALLOC((size_t)cap * kd * sizeof *b->keys);
    b->ids = AC_MALLOC((size_t)cap * AC_LOOKUP_K * sizeof *b->ids);
    b->sims = AC_MALLOC((size_t)cap * AC_LOOKUP_K * sizeof *b->sims);
    b->pos = AC_MALLOC((size_t)cap * sizeof *b->pos);
    b->rc = AC_MALLOC((size_t)cap * sizeof *b->rc);
    b->done = AC_MALLOC((size_t)cap * 3);
    b->cc = AC_MALLOC((size_t)cap * sizeof *b->cc);
    if (!b->feat || !b->keys || !b->ids || !b->sims || !b->pos || !b->rc || !b->done || !b->cc) {
        lookup_batch_free(b);
        a->lb = NULL;
        return NULL;
    }
    b->given = b->done + cap, b->kind = b->given + cap;
    return b;
}

static int all_finite_f(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* A site's lookup failed: its message kept (the first failure's), the error cleared. */
static void batch_fail(ac_cache *c, lookup_batch *b, int i, int rc) {
    b->rc[i] = rc;
    note_failure(c, ac_last_error());
    ac_err_clear();
}

/* One round of a batch: the m sites b->pos[0 .. m) looked up together (rw held,
 * read): their features, all their keys in one call (make_keys), one index
 * search of m queries (ac_index_search_batch), then each one's candidates
 * (pick_candidate, on nt threads). Fills their seq_state, rc, given and cc,
 * and marks them done; counts only the phases' times (the admission decides
 * later which of them count as lookups). */
static void batch_round(cache_att *a, lookup_batch *b, const ac_attn_site *sites, int m, int nt) {
    ac_cache *c = a->c;
    counters *n = &c->n;
    const size_t fd = (size_t)c->feat_dim;
    const int kd = key_dim(c, c->proj, c->key);
    const double t0 = ac_now();
    int need_states = 0;
    for (int j = 0; j < m; j++) {
        const int i = b->pos[j];
        const ac_attn_site *site = &sites[i];
        b->rc[i] = AC_OK, b->given[i] = 0, b->done[i] = 1;
        memset(&b->cc[i], 0, sizeof b->cc[i]);
        seq_state *st = &a->ss[site->seq];
        st->hit = 0, st->rows = 0;
        if (site->x || (site->summary && c->p.verify <= 0)) {
            int given = 0;
            query_features(c, NULL, site->tokens, site->n_tokens, site->x, site->summary, b->feat + j * fd, &given);
            b->given[i] = (uint8_t)given;
        } else {
            need_states = 1;
        }
    }
    if (need_states) { /* layer-0 states computed here from the tokens, on the threads' scratch */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
        for (int j = 0; j < m; j++) {
            const int i = b->pos[j];
            const ac_attn_site *site = &sites[i];
            if (site->x || (site->summary && c->p.verify <= 0)) continue;
            int given = 0, rc = query_features(c, &a->tscr[omp_get_thread_num()], site->tokens, site->n_tokens,
                                               NULL, site->summary, b->feat + j * fd, &given);
            if (rc) {
                batch_fail(c, b, i, rc);
                memset(b->feat + j * fd, 0, fd * sizeof *b->feat); /* defined values for the batch's keys */
            }
        }
    }
    const double t1 = ac_now();
    add_f64(&n->t_features, t1 - t0);
    /* keys and search in chunks of >= 4 queries on the threads (run 15: one thread for the whole
       batch lost to 16 threads each looking one sequence up); every query's key and search result is
       bitwise its own (make_keys, ac_index_search_batch), so the chunking changes no result */
    const int nch = AC_MAX(1, AC_MIN(nt, m / 4)), per = (m + nch - 1) / nch;
#pragma omp parallel for num_threads(nch) schedule(static, 1) if (nch > 1)
    for (int ch = 0; ch < nch; ch++) {
        const int j0 = ch * per, cnt = AC_MIN(per, m - j0);
        if (cnt <= 0) continue;
        const int r = make_keys(c, c->proj, c->key, b->feat + (size_t)j0 * fd, cnt, b->keys + (size_t)j0 * kd);
        if (r) {
            for (int j = j0; j < j0 + cnt; j++)
                if (!b->rc[b->pos[j]]) b->rc[b->pos[j]] = r;
            note_failure(c, ac_last_error());
            ac_err_clear();
        }
    }
    for (int j = 0; j < m; j++) {
        const int i = b->pos[j];
        float *key = b->keys + (size_t)j * kd;
        if (!b->rc[i] && !all_finite_f(key, kd)) /* the one query the index refuses alone */
            batch_fail(c, b, i, ac_err(AC_ERR_ARG, "index search: non-finite query"));
        if (b->rc[i]) memset(key, 0, (size_t)kd * sizeof *key); /* searched, not used */
    }
    const double t2 = ac_now();
    add_f64(&n->t_key, t2 - t1);
#pragma omp parallel for num_threads(nch) schedule(static, 1) if (nch > 1)
    for (int ch = 0; ch < nch; ch++) {
        const int j0 = ch * per, cnt = AC_MIN(per, m - j0);
        if (cnt <= 0) continue;
        const int r = ac_index_search_batch(c->idx, b->keys + (size_t)j0 * kd, cnt, AC_LOOKUP_K,
                                            b->ids + (size_t)j0 * AC_LOOKUP_K, b->sims + (size_t)j0 * AC_LOOKUP_K);
        if (r) {
            for (int j = j0; j < j0 + cnt; j++)
                if (!b->rc[b->pos[j]]) b->rc[b->pos[j]] = r;
            note_failure(c, ac_last_error());
            ac_err_clear();
        }
    }
    const double t3 = ac_now();
    add_f64(&n->t_search, t3 - t2);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4) if (nt > 1 && m >= 8)
    for (int j = 0; j < m; j++) {
        const int i = b->pos[j];
        if (b->rc[i]) continue;
        const ac_attn_site *site = &sites[i];
        const int r = pick_candidate(c, site->tokens, site->n_tokens, NULL, b->ids + (size_t)j * AC_LOOKUP_K,
                                     b->sims + (size_t)j * AC_LOOKUP_K, &a->ss[site->seq], &b->cc[i]);
        if (r) batch_fail(c, b, i, r);
        else ac_err_clear(); /* skipped damaged records: counted, not this call's error */
    }
    add_f64(&n->t_fetch, ac_now() - t3);
}

/* The old way, kept for verify (its candidate check needs each query's
 * layer-0 states, recomputed on the thread that checks): each sequence's own
 * lookup_with, in parallel. The admission sees them in completion order. */
static void lookup_each(cache_att *a, const ac_attn_site *sites, int n, int nt) {
    ac_cache *c = a->c;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int i = 0; i < n; i++) {
        const ac_attn_site *site = &sites[i];
        seq_state *st = &a->ss[site->seq];
        memset(st, 0, sizeof *st);
        if (lookup_with(a, site->tokens, site->n_tokens, site->x, site->summary, st, &a->tscr[omp_get_thread_num()],
                        NULL, 0) != AC_OK) {
            st->hit = 0; /* a failed lookup never breaks the exact path: counted, its message kept */
            add_i64(&c->n.failed, 1);
            note_failure(c, ac_last_error());
            ac_err_clear();
        }
    }
}

/* forward.h lookup_all: the layer-0 sites of every sequence of a call (the GPU, which has every
 * sequence's summary at once), looked up as one batch: the keys of all of them in one call, one
 * index search of n queries, then each one's candidates on OpenMP threads (batch_round). Layer 0's
 * reuse then takes each result once. Same results as n lookups one after another (the keys and the
 * search are bitwise those of one query; the candidate check is the same code), and the same
 * admission decisions and counters as those n lookups in site order: the admission (adapt.h) is
 * asked for every site in order after the round, from the state it had, and each answer is noted
 * before the next is asked. A round looks up the sites the admission is predicted to let through
 * (all, while looking up; while skipping, the probes, as if they missed); a site let through but not
 * predicted (a probe hit turned lookups back on) starts the next round, with the state restored to
 * just before it. A site looked up but then skipped (the rate fell below the floor inside the batch)
 * is dropped uncounted. Times: each phase's wall time for the whole batch. The layer mask is read
 * once for the call. With verify on, each sequence is looked up alone (lookup_each). */
static int hook_lookup_all(void *user, const ac_attn_site *sites, int n) {
    cache_att *a = user;
    ac_cache *c = a->c;
    counters *cn = &c->n;
    if (n <= 0) return AC_OK;
    int max_seq = 0;
    for (int i = 0; i < n; i++) {
        if (sites[i].layer != 0 || sites[i].seq < 0) return ac_err(AC_ERR_ARG, "cache: lookup_all takes layer-0 sites");
        max_seq = AC_MAX(max_seq, sites[i].seq);
    }
    if (!seq_slot(a, max_seq)) return ac_err(AC_ERR_NOMEM, "cache: out of memory for %d sequences' lookup state", n);
    for (int i = 0; i < n; i++) a->ss[sites[i].seq].batched = 0;
    const int nt = AC_MAX(1, AC_MIN(omp_get_max_threads(), n));
    if (nt > a->n_tscr) {
        scratch *t = realloc(a->tscr, (size_t)nt * sizeof *t);
        if (!t) return ac_err(AC_ERR_NOMEM, "cache: out of memory for lookup scratch");
        a->tscr = t;
        for (int i = a->n_tscr; i < nt; i++) {
            if (scratch_init(&t[i], c->D, c->feat_dim)) {
                scratch_free(&t[i]);
                return ac_err(AC_ERR_NOMEM, "cache: out of memory for lookup scratch");
            }
            a->n_tscr = i + 1;
        }
    }
    rd_lock(c);
    memcpy(a->layers, c->layers, (size_t)c->n_layer);
    memcpy(a->serve, c->serve, (size_t)c->n_layer * c->n_head);
    if (c->p.verify > 0 || atomic_load_explicit(&c->lookup_each, memory_order_relaxed)) {
        rw_unlock(c);
        lookup_each(a, sites, n, nt);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        seq_state *st = &a->ss[sites[i].seq];
        memset(st, 0, sizeof *st);
        st->looked_up = 1;
    }
    if (!c->idx || c->p.threshold < 0) {
        rw_unlock(c);
        goto out;
    }
    lookup_batch *b = lookup_batch_get(a, n, key_dim(c, c->proj, c->key));
    if (!b) {
        rw_unlock(c);
        for (int i = 0; i < n; i++) a->ss[sites[i].seq].looked_up = 0;
        return ac_err(AC_ERR_NOMEM, "cache: out of memory for a batch of %d lookups", n);
    }
    memset(b->done, 0, (size_t)n);
    int start = 0, stalled = 0;
    while (start < n) {
        /* the sites the admission is predicted to let through, from its state now */
        int m = 0;
        pthread_mutex_lock(&c->admu);
        ac_adapt sim = c->adapt;
        pthread_mutex_unlock(&c->admu);
        for (int i = start; i < n; i++) {
            const int k = ac_adapt_admit(&sim);
            if (sim.skipping && k == AC_ADAPT_PROBE) ac_adapt_note(&sim, k, 0);
            if ((k != AC_ADAPT_SKIP || stalled) && !b->done[i]) b->pos[m++] = i;
        }
        if (m) batch_round(a, b, sites, m, nt);
        /* the admission, site by site in order, each answer noted before the next is asked */
        int stop = n;
        pthread_mutex_lock(&c->admu);
        for (int i = start; i < n; i++) {
            const ac_adapt before = c->adapt;
            const int k = ac_adapt_admit(&c->adapt);
            if (k != AC_ADAPT_SKIP && !b->done[i]) { /* not looked up yet: the next round, from here */
                c->adapt = before;
                stop = i;
                break;
            }
            b->kind[i] = (uint8_t)k;
            if (k == AC_ADAPT_SKIP) continue;
            seq_state *st = &a->ss[sites[i].seq];
            if (!b->rc[i] && (b->rc[i] = injected_failure(c)) != AC_OK) note_failure(c, ac_last_error()), ac_err_clear();
            if (b->rc[i]) st->hit = 0;
            ac_adapt_note(&c->adapt, k, !b->rc[i] && st->hit);
        }
        pthread_mutex_unlock(&c->admu);
        /* the counters of the sites decided */
        for (int i = start; i < stop; i++) {
            seq_state *st = &a->ss[sites[i].seq];
            if (b->kind[i] == AC_ADAPT_SKIP) { /* run exact, no lookup (any result looked up is dropped) */
                st->hit = 0;
                add_i64(&cn->skipped, 1);
                continue;
            }
            if (b->kind[i] == AC_ADAPT_PROBE) add_i64(&cn->probes, 1);
            add_i64(&cn->queries, 1);
            if (b->given[i]) add_i64(&cn->features_given, 1);
            add_cand_counts(cn, &b->cc[i]);
            if (b->rc[i]) { /* a failed lookup never breaks the exact path: counted (its message kept) */
                add_i64(&cn->failed, 1);
                continue;
            }
            if (st->hit) {
                note_use(c, st);
                add_i64(&cn->hits, 1);
                add_f64(&cn->sum_distance_hit, st->dist);
            }
        }
        stalled = stop == start; /* another thread moved the admission: look every site left up */
        start = stop;
    }
    rw_unlock(c);
out:
    for (int i = 0; i < n; i++) {
        seq_state *st = &a->ss[sites[i].seq];
        st->bt = sites[i].tokens, st->bL = sites[i].n_tokens, st->batched = 1;
    }
    return AC_OK;
}

/* The head policy's spans of this site's layer (forward.h head_span). */
static int hook_head_span(void *user, const ac_attn_site *site, int *span, int *n_sink, int *n_end) {
    cache_att *a = user;
    ac_cache *c = a->c;
    const ac_head_policy *hp = &c->heads;
    int n = 0;
    rd_lock(c);
    if (hp->n_restricted && site->n_head == hp->n_head && site->layer < hp->n_layer) {
        for (int h = 0; h < hp->n_head; h++) n += (span[h] = hp->span[(size_t)site->layer * hp->n_head + h]) > 0;
        *n_sink = hp->n_sink;
        *n_end = hp->n_end;
    }
    rw_unlock(c);
    add_i64(&c->n.head_sites, site->n_head);
    add_i64(&c->n.head_spanned, n);
    return n;
}

/* The heads of a site hook_reuse served that come from the map (forward.h serve_heads). */
static int hook_serve_heads(void *user, const ac_attn_site *site, uint8_t *mask) {
    const cache_att *a = user;
    const ac_cache *c = a->c;
    if (site->n_head != c->n_head || site->layer < 0 || site->layer >= c->n_layer) return site->n_head;
    const uint8_t *sv = a->serve + (size_t)site->layer * c->n_head;
    int n = 0;
    for (int h = 0; h < c->n_head; h++) n += (mask[h] = sv[h]);
    return n;
}

/* out[t][h*hd + d] = sum_j P_h[t][j] V[j][g*hd + d], g = h / (H/Hkv), from
 * the stored compressed rows (decoded inside the A.V kernel). A longer
 * entry serves through its top-left L x L block (causal: exact prefix;
 * bidirectional with allow_longer: rows renormalised by their mass over
 * the first L columns, ac_codec_row_mass, no row decoded; when the entry ends
 * with the query's last token — [SEP] — that token is aligned: the query's
 * last row is the entry's last row, and the last column the entry's last
 * column, so the mass a head puts on the closing token stays on it instead of
 * spreading over the content). Runs on the context's own thread pool: tasks
 * of one head x 16 rows. */
typedef struct apply_job {
    const ac_store_entry *e;
    int layer, L, nrows, H, grp, hd, ldv, ldo, causal, renorm; /* rows [0, nrows) of L */
    int end_align; /* renorm: the entry's last token is the query's (end_aligned) */
    const float *v;
    float *out;
    const uint8_t *heads; /* [H] 1: serve head h (site->heads); NULL: every head */
} apply_job;

#define APPLY_ROWS 16

/* one task: head h = task / nb, rows [16 (task % nb), +16); ith: the thread running it */
static void apply_task(void *arg, int task, int ith) {
    (void)ith;
    const apply_job *j = arg;
    const ac_store_entry *e = j->e;
    const ac_map_codec *codec = &e->codec;
    const int Le = e->n_tokens, nb = (j->nrows + APPLY_ROWS - 1) / APPLY_ROWS;
    const int h = task / nb, t0 = (task % nb) * APPLY_ROWS, t1 = AC_MIN(j->nrows, t0 + APPLY_ROWS);
    if (j->heads && !j->heads[h]) return; /* computed by the forward (per-head serving) */
    const uint8_t *map = ac_store_entry_map(e, j->H, j->layer, h);
    const float *vh = j->v + (size_t)(h / j->grp) * j->hd;
    const int body = j->end_align ? j->L - 1 : j->L; /* renorm: the columns taken at their positions */
    for (int t = t0; t < t1; t++) {
        float *o = j->out + (size_t)t * j->ldo + (size_t)h * j->hd;
        const int src = j->end_align && t == j->L - 1 ? Le - 1 : t; /* the closing token's row */
        const uint8_t *r = map + ac_codec_row_offset(codec, Le, src);
        ac_codec_av_row(codec, r, j->causal ? t + 1 : body, vh, j->ldv, j->hd, o);
        if (j->renorm) { /* a longer bidirectional entry: rows renormalised over the first L columns */
            double s = ac_codec_row_mass(codec, r, Le, body);
            if (j->end_align) { /* the closing token's column */
                const float pe = ac_codec_row_value(codec, r, Le, Le - 1);
                const float *ve = vh + (size_t)(j->L - 1) * j->ldv;
                for (int d = 0; d < j->hd; d++) o[d] += pe * ve[d];
                s += pe;
            }
            const float inv = s > 1e-20 ? (float)(1.0 / s) : 0.0f;
            for (int d = 0; d < j->hd; d++) o[d] *= inv;
        }
    }
}

static int hook_apply(void *user, const ac_attn_site *site, int n_rows, const float *v, int ldv, int n_head_kv,
                      int hd, float *out, int ldo) {
    cache_att *a = user;
    ac_cache *c = a->c;
    const ac_store_entry *e = &a->ss[site->seq].e;
    const int L = site->n_tokens, Le = e->n_tokens, H = site->n_head, R = n_rows;
    if (R < 1 || R > L) return ac_err(AC_ERR_INTERNAL, "cache: apply of %d rows of %d", R, L);
    const int ntask = H * ((R + APPLY_ROWS - 1) / APPLY_ROWS);
    apply_job j = {e,   site->layer, L,      R, H, H / n_head_kv, hd, ldv, ldo, c->causal, !c->causal && Le > L,
                   0,   v,           out,    site->heads};
    j.end_align = j.renorm && ac_entry_end_aligned(e->tokens, Le, site->tokens, L);
    int nh = H;
    if (site->heads) {
        nh = 0;
        for (int h = 0; h < H; h++) nh += site->heads[h] != 0;
    }
    /* little work: the caller alone, no barrier */
    ac_ctx_run_tasks(a->ctx, ntask, (double)R * L * H * hd < 2e5, apply_task, &j);
    const ac_map_codec *codec = &e->codec;
    atomic_fetch_add_explicit(&c->n.bytes_read,
                              (uint64_t)nh * (ac_codec_row_offset(codec, Le, R - 1) +
                                             ac_codec_row_bytes(codec, ac_codec_row_n(codec, Le, R - 1))),
                              memory_order_relaxed);
    return AC_OK;
}

/* The GPU seam (forward.h `maps`): the stored rows of a site hook_reuse
 * served, as they are kept, for a backend that runs A.V itself. Counts the
 * bytes of rows [0, L) as read, as hook_apply does for the rows it reads. */
static int hook_maps(void *user, const ac_attn_site *site, ac_attn_maps *out) {
    cache_att *a = user;
    ac_cache *c = a->c;
    if (site->seq < 0 || site->seq >= a->ss_cap || !a->ss[site->seq].hit)
        return ac_err(AC_ERR_INTERNAL, "cache: maps asked for sequence %d, which no lookup served", site->seq);
    const ac_store_entry *e = &a->ss[site->seq].e;
    const int L = site->n_tokens, Le = e->n_tokens;
    if (L < 1 || L > Le || site->n_head != c->n_head || site->layer < 0 || site->layer >= c->n_layer)
        return ac_err(AC_ERR_INTERNAL, "cache: maps of layer %d for %d tokens from an entry of %d", site->layer, L, Le);
    out->data = ac_store_entry_map(e, c->n_head, site->layer, 0);
    out->head_bytes = e->map_bytes;
    out->kind = e->codec.kind;
    out->causal = e->codec.causal;
    out->topk = e->codec.topk;
    out->n_tokens = Le;
    out->ident[0] = e->key, out->ident[1] = e->payload_hash;
    const ac_map_codec *codec = &e->codec;
    atomic_fetch_add_explicit(&c->n.bytes_read,
                              (uint64_t)c->n_head * (ac_codec_row_offset(codec, Le, L - 1) +
                                                     ac_codec_row_bytes(codec, ac_codec_row_n(codec, Le, L - 1))),
                              memory_order_relaxed);
    return AC_OK;
}

/* ---- attaching -------------------------------------------------------------------------------------- */

static void lookup_batch_free(struct lookup_batch *b);

static void att_free(cache_att *a) {
    lookup_batch_free(a->lb);
    scratch_free(&a->scr);
    for (int i = 0; i < a->n_tscr; i++) scratch_free(&a->tscr[i]);
    free(a->tscr);
    free(a->ss);
    free(a->layers);
    free(a->serve);
    free(a);
}

/* The context drops the hook (detach, another attach, ac_ctx_free, or the
 * cache closing): unlink the attachment from its cache and free it. */
static void att_release(void *user) {
    cache_att *a = user;
    ac_cache *c = a->c;
    pthread_mutex_lock(&c->amu);
    if (a->prev) a->prev->next = a->next;
    else c->atts = a->next;
    if (a->next) a->next->prev = a->prev;
    pthread_mutex_unlock(&c->amu);
    att_free(a);
}

/* The attachment ctx's hook carries, or NULL. */
static cache_att *att_of(const ac_ctx *ctx) {
    ac_attn_hook h;
    return ac_ctx_get_attn_hook(ctx, &h) && h.release == att_release ? h.user : NULL;
}

int ac_ctx_attach_cache(ac_ctx *ctx, ac_cache *c) {
    if (!ctx) return ac_err(AC_ERR_ARG, "ac_ctx_attach_cache: NULL context");
    if (!c) {
        ac_ctx_set_attn_hook(ctx, NULL); /* releases the attachment, if any */
        return AC_OK;
    }
    if (ac_ctx_model(ctx) != c->m) return ac_err(AC_ERR_ARG, "cache and context belong to different models");
    const cache_att *old = att_of(ctx);
    if (old && old->c == c) return AC_OK; /* already attached */
    cache_att *a = AC_CALLOC(1, sizeof *a);
    if (!a) return ac_err(AC_ERR_NOMEM, "cache: out of memory attaching a context");
    a->c = c;
    a->ctx = ctx;
    a->layers = AC_CALLOC((size_t)c->n_layer, 1);
    a->serve = AC_CALLOC((size_t)c->n_layer * c->n_head, 1);
    if (!a->layers || !a->serve || scratch_init(&a->scr, c->D, c->feat_dim)) {
        att_free(a);
        return ac_err(AC_ERR_NOMEM, "cache: out of memory attaching a context");
    }
    pthread_mutex_lock(&c->amu);
    a->next = c->atts;
    if (c->atts) c->atts->prev = a;
    c->atts = a;
    pthread_mutex_unlock(&c->amu);
    ac_attn_hook h;
    memset(&h, 0, sizeof h);
    h.user = a;
    h.reuse = hook_reuse;
    h.apply = hook_apply;
    h.maps = hook_maps;
    h.head_span = hook_head_span;
    h.serve_heads = hook_serve_heads;
    h.lookup_all = hook_lookup_all;
    h.recheck = c->p.recheck_margin > 0 ? hook_recheck : NULL;
    h.release = att_release;
    ac_ctx_set_attn_hook(ctx, &h); /* the context's previous attachment (another cache's) is released */
    return AC_OK;
}

int ac_cache_last_hits(const ac_ctx *ctx, int n, uint8_t *hit, uint64_t *key) {
    if (!ctx || n < 0 || (n > 0 && !hit)) return ac_err(AC_ERR_ARG, "ac_cache_last_hits: invalid argument");
    const cache_att *a = att_of(ctx);
    for (int i = 0; i < n; i++) {
        const seq_state *st = a && i < a->ss_cap ? &a->ss[i] : NULL;
        const int h = st && st->looked_up && st->hit;
        hit[i] = (uint8_t)h;
        if (key) key[i] = h ? st->e.key : 0;
    }
    return AC_OK;
}

/* ---- writing ------------------------------------------------------------------------------------------ */

/* The recording hook ac_cache_add lends its context: every site's P goes to
 * the writer's store handle. */
static int rec_want(void *user, const ac_attn_site *site) {
    (void)user, (void)site;
    return 1;
}

/* The heads of a site are encoded on threads (the top-k selection and the q8 scan are the cost of
 * recording long prompts: a Llama-1B site at 2048 tokens is 32 maps of 4 M probabilities), at most
 * REC_BATCH_BYTES of encoded maps at a time, then written in head order by the writer. */
#define REC_BATCH_BYTES ((size_t)256 << 20)
static int rec_put(void *user, const ac_attn_site *site, const float *P) {
    ac_cache *c = user;
    const int L = site->n_tokens, nh = site->n_head;
    const size_t LL = (size_t)L * L, mb = ac_codec_map_bytes(&c->codec, L);
    const int nt = AC_MIN(omp_get_max_threads(), nh);
    if (nt <= 1 || mb == 0 || mb > REC_BATCH_BYTES) {
        for (int h = 0; h < nh; h++) { /* one at a time: the store encodes into its own buffer */
            int rc = ac_mapstore_put_map(c->stw, site->layer, h, P + (size_t)h * LL);
            if (rc) return rc;
        }
        return AC_OK;
    }
    const int per = (int)AC_MIN((size_t)nh, REC_BATCH_BYTES / mb);
    uint8_t *buf = (uint8_t *)AC_MALLOC((size_t)per * mb); /* [per][mb] encoded maps */
    if (!buf) return ac_err(AC_ERR_NOMEM, "recording: %zu bytes of encoded maps", (size_t)per * mb);
    int rc = AC_OK;
    for (int h0 = 0; h0 < nh && !rc; h0 += per) {
        const int n = AC_MIN(per, nh - h0);
        _Atomic int bad = INT_MAX; /* the lowest head that failed to encode (every head is tried) */
#pragma omp parallel for num_threads(AC_MIN(nt, n)) schedule(dynamic, 1)
        for (int i = 0; i < n; i++) {
            if (ac_codec_encode(&c->codec, P + (size_t)(h0 + i) * LL, L, buf + (size_t)i * mb)) {
                int cur = atomic_load(&bad);
                while (h0 + i < cur && !atomic_compare_exchange_weak(&bad, &cur, h0 + i)) {}
            }
        }
        const int b = atomic_load(&bad) == INT_MAX ? -1 : atomic_load(&bad);
        const int m = b >= 0 ? b - h0 : n; /* heads [h0, h0 + m) encoded */
        for (int i = 0; i < m && !rc; i++)
            rc = ac_mapstore_put_map_encoded(c->stw, site->layer, h0 + i, buf + (size_t)i * mb, mb);
        if (!rc && b >= 0) { /* the store encodes it again on this thread: its message, and the entry dropped */
            rc = ac_mapstore_put_map(c->stw, site->layer, b, P + (size_t)b * LL);
            if (!rc) rc = ac_err(AC_ERR_INTERNAL, "recording: layer %d head %d failed to encode once", site->layer, b);
        }
    }
    free(buf);
    return rc;
}

/* Commit the pending entries and publish them to lookups. Writer (wmu). */
static int commit_locked(ac_cache *c) {
    if (!c->stw || !c->pending) return AC_OK;
    int rc = ac_mapstore_commit(c->stw);
    c->last_commit = ac_now();
    if (rc) return rc;
    c->pending = 0;
    return publish_new(c);
}

static int add_locked(ac_cache *c, ac_ctx *ctx, const int32_t *tokens, int n, int *added) {
    uint64_t key = ac_xxh64(tokens, (size_t)n * sizeof *tokens, 0);
    ac_store_entry e;
    int rc = ac_mapstore_find(c->stw, key, &e);
    if (rc == AC_OK) return AC_OK; /* already stored */
    if (rc != AC_ERR_RANGE) return rc;
    ac_err_clear();
    for (int i = 0; i < c->pending; i++) /* written since the last commit: the store cannot find it yet */
        if (c->pend_keys[i] == key) return AC_OK;
    if (c->pending == c->pend_cap) {
        int nc = c->pend_cap ? 2 * c->pend_cap : 64;
        uint64_t *nk = realloc(c->pend_keys, (size_t)nc * sizeof *nk);
        if (!nk) return ac_err(AC_ERR_NOMEM, "cache: out of memory");
        c->pend_keys = nk;
        c->pend_cap = nc;
    }
    if ((rc = features_of(c, &c->wscr, tokens, n, c->wscr.feat))) return rc;
    if ((rc = ac_mapstore_begin(c->stw, key, n, &c->codec, c->wscr.feat))) return rc;
    if (c->with_tokens && (rc = ac_mapstore_put_tokens(c->stw, tokens))) goto fail;
    /* record through ctx with a lent hook; afterwards ctx gets its own hook
     * back (none, or its attachment to this or another cache) */
    ac_attn_hook rec, prev, tmp;
    memset(&rec, 0, sizeof rec);
    rec.user = c;
    rec.want_record = rec_want;
    rec.record = rec_put;
    const int had = ac_ctx_swap_attn_hook(ctx, &rec, &prev);
    ac_seq s = {tokens, n};
    ac_outputs o;
    memset(&o, 0, sizeof o);
    rc = ac_forward(ctx, &s, 1, &o);
    ac_ctx_swap_attn_hook(ctx, had ? &prev : NULL, &tmp);
    if (rc) goto fail;
    if ((rc = ac_mapstore_end(c->stw))) goto fail;
    c->pend_keys[c->pending++] = key;
    if (added) *added = 1;
    /* commit after commit_every entries, but not more than once a second
     * (each commit is two fsyncs), and always once 4096 are pending */
    const double now = ac_now();
    if ((c->pending >= (c->p.commit_every > 0 ? c->p.commit_every : 1) && now - c->last_commit >= 1.0) ||
        c->pending >= 4096)
        return commit_locked(c);
    return AC_OK;
fail:
    ac_mapstore_abort(c->stw);
    return rc;
}

int ac_cache_add(ac_cache *c, ac_ctx *ctx, const int32_t *tokens, int n, int *added) {
    if (added) *added = 0;
    if (!c || !ctx || !tokens || n <= 0) return ac_err(AC_ERR_ARG, "ac_cache_add: invalid argument");
    if (!c->p.writable) return ac_err(AC_ERR_CACHE, "cache '%s' is open read-only", c->dir);
    if (ac_ctx_model(ctx) != c->m) return ac_err(AC_ERR_ARG, "cache and context belong to different models");
    pthread_mutex_lock(&c->wmu);
    int rc = add_locked(c, ctx, tokens, n, added);
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

int ac_cache_commit(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_commit: NULL cache");
    if (!c->p.writable) return AC_OK;
    pthread_mutex_lock(&c->wmu);
    const int added = c->pending > 0;
    int rc = commit_locked(c);
    if (!rc && (added || atomic_load(&c->u_dirty))) rc = usage_save(c); /* the new entries' insert times, hits */
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

int ac_cache_reindex(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_reindex: NULL cache");
    pthread_mutex_lock(&c->wmu);
    int rc = build_index(c, c->p.writable);
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

/* ---- policy, stats --------------------------------------------------------------------------------------- */

int ac_cache_set_layers(ac_cache *c, const uint8_t *mask) {
    if (!c || !mask) return ac_err(AC_ERR_ARG, "ac_cache_set_layers: invalid argument");
    wr_lock(c);
    for (int l = 0; l < c->n_layer; l++) c->layers[l] = mask[l] != 0;
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_get_layers(const ac_cache *cc, uint8_t *mask) {
    if (!cc || !mask) return ac_err(AC_ERR_ARG, "ac_cache_get_layers: invalid argument");
    ac_cache *c = (ac_cache *)cc; /* the lock is not part of the value */
    rd_lock(c);
    memcpy(mask, c->layers, (size_t)c->n_layer);
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_set_threshold(ac_cache *c, float t) {
    if (!c || !isfinite(t)) return ac_err(AC_ERR_ARG, "ac_cache_set_threshold: invalid argument");
    wr_lock(c);
    c->p.threshold = t;
    rw_unlock(c);
    pthread_mutex_lock(&c->admu); /* another threshold, another hit rate */
    ac_adapt_reset(&c->adapt);
    pthread_mutex_unlock(&c->admu);
    return AC_OK;
}

int ac_cache_set_adapt(ac_cache *c, float floor, int window, int probe_max) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_set_adapt: NULL cache");
    int rc = ac_adapt_check(floor, window, probe_max);
    if (rc) return rc;
    pthread_mutex_lock(&c->admu);
    ac_adapt_init(&c->adapt, floor, window, probe_max);
    pthread_mutex_unlock(&c->admu);
    wr_lock(c);
    c->p.adapt_floor = floor;
    c->p.adapt_window = c->adapt.window;
    c->p.adapt_probe_max = c->adapt.probe_max;
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_save_policy(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_save_policy: NULL cache");
    char path[PATH_MAX + 32];
    path_of(c, "policy.txt", path, sizeof path);
    uint8_t *layers = AC_MALLOC((size_t)c->n_layer);
    if (!layers) return ac_err(AC_ERR_NOMEM, "cache: out of memory");
    rd_lock(c);
    memcpy(layers, c->layers, (size_t)c->n_layer);
    const float threshold = c->p.threshold;
    rw_unlock(c);
    pthread_mutex_lock(&c->wmu); /* one writer of the directory's files */
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) goto out;
    fputs("layers ", af.f);
    int first = 1, any = 0;
    for (int l = 0; l < c->n_layer; l++)
        if (layers[l]) {
            fprintf(af.f, first ? "%d" : ",%d", l);
            first = 0;
            any = 1;
        }
    if (!any) fputs("none", af.f);
    fprintf(af.f, "\nthreshold %g\n", threshold);
    rc = ac_atomic_commit(&af);
out:
    pthread_mutex_unlock(&c->wmu);
    free(layers);
    return rc;
}

int ac_cache_set_head_spans(ac_cache *c, const int *span, int n_sink, int n_end) {
    if (!c || n_sink < 0 || n_sink > 64 || n_end < 0 || n_end > 64)
        return ac_err(AC_ERR_ARG, "ac_cache_set_head_spans: invalid argument");
    const size_t NH = (size_t)c->n_layer * c->n_head;
    int *ns = NULL, nr = 0;
    if (span) {
        for (size_t i = 0; i < NH; i++) {
            if (span[i] < 0 || span[i] > 512)
                return ac_err(AC_ERR_ARG, "head span %d of layer %d head %d outside 0-512", span[i],
                              (int)(i / c->n_head), (int)(i % c->n_head));
            nr += span[i] > 0;
        }
        if (!(ns = AC_MALLOC(NH * sizeof *ns))) return ac_err(AC_ERR_NOMEM, "cache: out of memory");
        memcpy(ns, span, NH * sizeof *ns);
    }
    wr_lock(c);
    int *old = c->heads.span;
    c->heads.span = ns;
    c->heads.n_sink = n_sink;
    c->heads.n_end = c->causal ? 0 : n_end;
    c->heads.n_restricted = nr;
    rw_unlock(c);
    free(old);
    return AC_OK;
}

int ac_cache_get_head_spans(const ac_cache *cc, int *span, int *n_sink, int *n_end, int *n_restricted) {
    if (!cc) return ac_err(AC_ERR_ARG, "ac_cache_get_head_spans: NULL cache");
    ac_cache *c = (ac_cache *)cc; /* the lock is not part of the value */
    const size_t NH = (size_t)c->n_layer * c->n_head;
    rd_lock(c);
    if (span)
        for (size_t i = 0; i < NH; i++) span[i] = c->heads.span ? c->heads.span[i] : 0;
    if (n_sink) *n_sink = c->heads.n_sink;
    if (n_end) *n_end = c->heads.n_end;
    if (n_restricted) *n_restricted = c->heads.n_restricted;
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_tune_heads(ac_cache *c, float eps, int max_entries, int n_sink, int n_end, int max_span, void *report,
                        int *n_restricted) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_tune_heads: NULL cache");
    if (!(eps >= 0 && eps <= 1)) return ac_err(AC_ERR_ARG, "head policy: eps must be in [0, 1] (got %g)", eps);
    if (c->causal) n_end = 0;
    ac_head_profile pr;
    ac_head_policy hp;
    rd_lock(c); /* entries come from the reader handle, as lookups read them */
    int rc = ac_heads_profile(c->st, c->n_layer, c->n_head, c->causal, n_sink, n_end, max_entries, &pr);
    rw_unlock(c);
    if (rc) return rc;
    rc = ac_heads_choose(&pr, eps, max_span, n_sink, n_end, &hp);
    if (!rc && report) ac_heads_print(report, &pr, &hp);
    if (!rc) rc = ac_cache_set_head_spans(c, hp.span, n_sink, n_end);
    if (!rc && c->p.writable) {
        pthread_mutex_lock(&c->wmu); /* one writer of the directory's files */
        rc = ac_heads_save(c->dir, &hp);
        pthread_mutex_unlock(&c->wmu);
    }
    if (!rc && n_restricted) *n_restricted = hp.n_restricted;
    ac_heads_free(&hp);
    ac_heads_profile_free(&pr);
    return rc;
}

/* One stored entry looked up as a query (its feature summary, the cache's key and threshold,
 * itself excluded): the first other entry that may serve it, or -1. wmu held (c->wscr), rw read. */
static int64_t rank_neighbour(ac_cache *c, int64_t i, const ac_store_entry *q) {
    float *key = c->wscr.keyv;
    int64_t ids[AC_LOOKUP_K + 1];
    float sims[AC_LOOKUP_K + 1];
    if (make_key(c, c->proj, c->key, q->feature, key, &c->wscr) != AC_OK ||
        ac_index_search(c->idx, key, 1, AC_LOOKUP_K + 1, ids, sims) != AC_OK) {
        ac_err_clear();
        return -1;
    }
    for (int k = 0; k < AC_LOOKUP_K + 1 && ids[k] >= 0; k++) {
        if (ids[k] == i) continue;
        if (sim_to_dist(c->key, sims[k]) > c->p.threshold) break; /* best first */
        if (entry_fits(c, ac_mapstore_n_tokens(c->st, ids[k]), q->n_tokens)) return ids[k];
    }
    return -1;
}

int ac_cache_rank_heads(ac_cache *c, int max_entries, void *report, int *n_pairs) {
    if (!c || max_entries < 0) return ac_err(AC_ERR_ARG, "ac_cache_rank_heads: invalid argument");
    if (n_pairs) *n_pairs = 0;
    if (max_entries == 0) max_entries = 500;
    ac_head_rank r;
    memset(&r, 0, sizeof r);
    const int nlh = c->n_layer * c->n_head;
    r.n_layer = c->n_layer, r.n_head = c->n_head, r.threshold = c->p.threshold;
    r.tv = AC_CALLOC((size_t)nlh, sizeof *r.tv);
    r.tv_max = AC_CALLOC((size_t)nlh, sizeof *r.tv_max);
    r.order = AC_MALLOC((size_t)nlh * sizeof *r.order);
    float *rq = NULL, *re = NULL;
    int rc = r.tv && r.tv_max && r.order ? AC_OK : ac_err(AC_ERR_NOMEM, "cache: out of memory ranking heads");
    pthread_mutex_lock(&c->wmu); /* the writer's scratch makes the keys */
    rd_lock(c);
    const int64_t n = ac_mapstore_count(c->st);
    if (!rc && (!c->idx || n < 2)) rc = ac_err(AC_ERR_CACHE, "cache '%s': ranking heads needs at least 2 indexed entries", c->dir);
    const int64_t m = AC_MIN(n, (int64_t)max_entries);
    int cap = 0;
    for (int64_t k = 0; !rc && k < m; k++) {
        const int64_t i = k * n / m; /* evenly spread */
        ac_store_entry q, e;
        if (ac_mapstore_get(c->st, i, &q) != AC_OK) { /* damaged: left out, as a lookup would */
            ac_err_clear();
            continue;
        }
        const int64_t j = rank_neighbour(c, i, &q);
        if (j < 0) continue;
        if (ac_mapstore_get(c->st, j, &e) != AC_OK) {
            ac_err_clear();
            continue;
        }
        if (e.n_tokens > cap) {
            float *a = realloc(rq, (size_t)e.n_tokens * sizeof *a), *b = a ? realloc(re, (size_t)e.n_tokens * sizeof *b) : NULL;
            if (a) rq = a;
            if (b) re = b;
            if (!a || !b) {
                rc = ac_err(AC_ERR_NOMEM, "cache: out of memory ranking heads");
                break;
            }
            cap = e.n_tokens;
        }
        ac_head_rank_pair(&q, &e, c->n_layer, c->n_head, c->causal, r.tv, r.tv_max, rq, re);
        r.n_pairs++;
    }
    rw_unlock(c);
    if (!rc && r.n_pairs == 0)
        rc = ac_err(AC_ERR_CACHE, "cache '%s': none of %lld profiled entries has a neighbour within the threshold %g "
                    "(raise it)", c->dir, (long long)m, (double)c->p.threshold);
    if (!rc) {
        ac_head_rank_finish(&r);
        if (report) ac_head_rank_print(report, &r);
        if (c->p.writable) rc = ac_head_rank_save(c->dir, &r);
        if (!rc && n_pairs) *n_pairs = r.n_pairs;
    }
    pthread_mutex_unlock(&c->wmu);
    free(rq);
    free(re);
    ac_head_rank_free(&r);
    return rc;
}

int ac_cache_save_head_rank(ac_cache *c, const double *dist, const double *worst, int n_measured) {
    if (!c || !dist || n_measured < 1) return ac_err(AC_ERR_ARG, "ac_cache_save_head_rank: invalid argument");
    const int nlh = c->n_layer * c->n_head;
    for (int i = 0; i < nlh; i++) {
        const double w = worst ? worst[i] : dist[i];
        if (!(dist[i] >= 0 && dist[i] <= 1) || !(w >= 0 && w <= 1))
            return ac_err(AC_ERR_ARG, "ac_cache_save_head_rank: layer %d head %d: distance %g (worst %g) outside [0, 1]",
                          i / c->n_head, i % c->n_head, dist[i], w);
    }
    ac_head_rank r;
    memset(&r, 0, sizeof r);
    r.n_layer = c->n_layer, r.n_head = c->n_head, r.n_pairs = n_measured, r.threshold = c->p.threshold;
    r.tv = AC_MALLOC((size_t)nlh * sizeof *r.tv);
    r.tv_max = AC_MALLOC((size_t)nlh * sizeof *r.tv_max);
    r.order = AC_MALLOC((size_t)nlh * sizeof *r.order);
    int rc = r.tv && r.tv_max && r.order ? AC_OK : ac_err(AC_ERR_NOMEM, "cache: out of memory saving a head ranking");
    if (!rc) {
        for (int i = 0; i < nlh; i++) r.tv[i] = dist[i], r.tv_max[i] = worst ? worst[i] : dist[i];
        ac_head_rank_sort(&r);
        pthread_mutex_lock(&c->wmu); /* one writer of the directory's files */
        rc = ac_head_rank_save(c->dir, &r);
        pthread_mutex_unlock(&c->wmu);
    }
    ac_head_rank_free(&r);
    return rc;
}

int ac_cache_set_serve_heads(ac_cache *c, const uint8_t *mask) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_set_serve_heads: NULL cache");
    wr_lock(c);
    for (int i = 0; i < c->n_layer * c->n_head; i++) c->serve[i] = mask ? mask[i] != 0 : 1;
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_get_serve_heads(const ac_cache *cc, uint8_t *mask) {
    if (!cc || !mask) return ac_err(AC_ERR_ARG, "ac_cache_get_serve_heads: invalid argument");
    ac_cache *c = (ac_cache *)cc;
    rd_lock(c);
    memcpy(mask, c->serve, (size_t)c->n_layer * c->n_head);
    rw_unlock(c);
    return AC_OK;
}

int ac_cache_get_stats(const ac_cache *cc, ac_cache_stats *s) {
    if (!cc || !s) return ac_err(AC_ERR_ARG, "ac_cache_get_stats: invalid argument");
    ac_cache *c = (ac_cache *)cc; /* the locks are not part of the value */
    counters *n = &c->n;
    memset(s, 0, sizeof *s);
    s->queries = atomic_load(&n->queries);
    s->hits = atomic_load(&n->hits);
    s->lookups_failed = atomic_load(&n->failed);
    s->records_damaged = atomic_load(&n->damaged);
    s->layers_served = atomic_load(&n->layers_served);
    s->rows_served = atomic_load(&n->rows_served);
    s->rows_total = atomic_load(&n->rows_total);
    s->bytes_read = atomic_load(&n->bytes_read);
    s->t_features = atomic_load(&n->t_features);
    s->t_key = atomic_load(&n->t_key);
    s->t_search = atomic_load(&n->t_search);
    s->t_fetch = atomic_load(&n->t_fetch);
    s->sum_distance_hit = atomic_load(&n->sum_distance_hit);
    s->lookups_skipped = atomic_load(&n->skipped);
    s->probes = atomic_load(&n->probes);
    pthread_mutex_lock(&c->admu);
    s->skipping = c->adapt.skipping;
    pthread_mutex_unlock(&c->admu);
    s->head_sites = atomic_load(&n->head_sites);
    s->head_sites_spanned = atomic_load(&n->head_spanned);
    s->heads_served = atomic_load(&n->heads_served);
    s->verify_checked = atomic_load(&n->verify_checked);
    s->verify_rejected = atomic_load(&n->verify_rejected);
    s->t_verify = atomic_load(&n->t_verify);
    s->rechecked = atomic_load(&n->rechecked);
    s->features_given = atomic_load(&n->features_given);
    pthread_mutex_lock(&c->fmu);
    memcpy(s->first_failure, c->first_failure, sizeof s->first_failure);
    pthread_mutex_unlock(&c->fmu);
    rd_lock(c);
    s->entries = ac_mapstore_count(c->st);
    s->damaged_unindexed = c->n_unindexed;
    int64_t u = 0, r = 0;
    ac_index_scan_stats(c->idx, NULL, &u, &r);
    s->search_unproven = c->scan_carry[0] + u - c->scan_base[0];
    s->search_recomputed = c->scan_carry[1] + r - c->scan_base[1];
    rw_unlock(c);
    return AC_OK;
}

void ac_cache_reset_stats(ac_cache *c) {
    if (!c) return;
    counters *n = &c->n;
    atomic_store(&n->queries, 0);
    atomic_store(&n->hits, 0);
    atomic_store(&n->failed, 0);
    atomic_store(&n->damaged, 0);
    atomic_store(&n->layers_served, 0);
    atomic_store(&n->rows_served, 0);
    atomic_store(&n->rows_total, 0);
    atomic_store(&n->head_sites, 0);
    atomic_store(&n->head_spanned, 0);
    atomic_store(&n->heads_served, 0);
    atomic_store(&n->verify_checked, 0);
    atomic_store(&n->verify_rejected, 0);
    atomic_store(&n->t_verify, 0.0);
    atomic_store(&n->rechecked, 0);
    atomic_store(&n->features_given, 0);
    atomic_store(&n->bytes_read, 0);
    atomic_store(&n->t_features, 0.0);
    atomic_store(&n->t_key, 0.0);
    atomic_store(&n->t_search, 0.0);
    atomic_store(&n->t_fetch, 0.0);
    atomic_store(&n->sum_distance_hit, 0.0);
    atomic_store(&n->skipped, 0);
    atomic_store(&n->probes, 0);
    pthread_mutex_lock(&c->fmu);
    c->first_failure[0] = 0;
    pthread_mutex_unlock(&c->fmu);
    wr_lock(c);
    ac_index_scan_stats(c->idx, NULL, &c->scan_base[0], &c->scan_base[1]);
    c->scan_carry[0] = c->scan_carry[1] = 0;
    rw_unlock(c);
}

int ac_cache_print_db_stats(ac_cache *c, void *file) {
    if (!c || !file) return ac_err(AC_ERR_ARG, "ac_cache_print_db_stats: invalid argument");
    FILE *f = file;
    ac_cache_stats s;
    ac_cache_get_stats(c, &s);
    rd_lock(c);
    const double floor = c->p.adapt_floor;
    fprintf(f, "cache: %s\nmodel: %s, %d layers x %d heads, %s\nkey: %s%s, index: %s\n", c->dir,
            c->m->info.arch_name, c->n_layer, c->n_head, c->causal ? "causal" : "bidirectional",
            c->key == AC_KEY_PROJECTOR ? "projector" : c->key == AC_KEY_MEAN ? "mean" : "random",
            c->proj ? " (trained projector present)" : "", c->p.index_kind == 0 ? "flat" : c->p.index_kind == 1 ? "ivf" : "hnsw");
    ac_mapstore_stats_print(c->st, f);
    if (c->n_unindexed)
        fprintf(f, "DAMAGED    %lld record(s) failed their checksum and are left out of the index (served by exact "
                "compute); `attncache db repair` drops them\n", (long long)c->n_unindexed);
    rw_unlock(c);
    if (s.queries || s.lookups_failed || s.records_damaged) /* this handle looked something up */
        fprintf(f, "lookups since open (or reset): %lld, hits %lld, failed %lld, damaged records skipped %lld\n",
                (long long)s.queries, (long long)s.hits, (long long)s.lookups_failed, (long long)s.records_damaged);
    if (s.lookups_skipped || s.probes)
        fprintf(f, "adaptive lookups: %lld sequences skipped (recent hit rate under %g), %lld probes%s\n",
                (long long)s.lookups_skipped, floor, (long long)s.probes,
                s.skipping ? "; skipping now" : "");
    if (s.first_failure[0]) fprintf(f, "first failed lookup: %s\n", s.first_failure);
    return AC_OK;
}

int ac_cache_verify(ac_cache *c, void *file, int64_t *n_bad) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_verify: NULL cache");
    wr_lock(c); /* verification marks records on the reader handle */
    int rc = ac_mapstore_verify(c->st, n_bad, file);
    rw_unlock(c);
    return rc;
}

/* ---- projector training ------------------------------------------------------------------------------------ */

/* Attention-map distance of two entries: mean |P_a - P_b| over layers, heads
 * and the common top-left block (sampled rows: at most ~4096 rows per pair),
 * plus the relative length difference. ra, rb: [max L] scratch. */
static double map_distance(const ac_cache *c, const ac_store_entry *a, const ac_store_entry *b, float *ra, float *rb) {
    const int La = a->n_tokens, Lb = b->n_tokens, m = AC_MIN(La, Lb), H = c->n_head;
    const int maps = c->n_layer * H;
    const int rows = AC_MAX(1, AC_MIN(m, 4096 / maps));
    const int stride = AC_MAX(1, m / rows);
    double sum = 0;
    long long cnt = 0;
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < H; h++) {
            const void *ma = ac_store_entry_map(a, H, l, h), *mb = ac_store_entry_map(b, H, l, h);
            for (int t = (m - 1) % stride; t < m; t += stride) {
                ac_codec_decode_row(&a->codec, ma, La, t, ra);
                ac_codec_decode_row(&b->codec, mb, Lb, t, rb);
                const int n = c->causal ? t + 1 : m;
                for (int j = 0; j < n; j++) sum += fabsf(ra[j] - rb[j]);
                cnt += n;
            }
        }
    return (cnt ? sum / (double)cnt : 0) + fabs((double)(La - Lb)) / (double)AC_MAX(La, Lb);
}

static uint64_t rng_u64(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float key_distance(int key, const float *a, const float *b, int d) {
    if (key == AC_KEY_PROJECTOR) {
        double s = 0;
        for (int k = 0; k < d; k++) s += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
        return (float)sqrt(s);
    }
    double ab = 0, aa = 0, bb = 0;
    for (int k = 0; k < d; k++) ab += (double)a[k] * b[k], aa += (double)a[k] * a[k], bb += (double)b[k] * b[k];
    return (float)(1.0 - ab / (sqrt(aa * bb) + 1e-30));
}

static int train_locked(ac_cache *c, const ac_cache_train_params *tpp, double *report);

int ac_cache_train_projector(ac_cache *c, const ac_cache_train_params *tpp, double *report) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_train_projector: NULL cache");
    if (!c->p.writable) return ac_err(AC_ERR_CACHE, "cache '%s' is open read-only", c->dir);
    pthread_mutex_lock(&c->wmu);
    int rc = train_locked(c, tpp, report);
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

/* Writer (wmu): entries are read from the reader handle, which only the
 * writer changes; lookups go on with the old projector until the swap. */
static int train_locked(ac_cache *c, const ac_cache_train_params *tpp, double *report) {
    ac_cache_train_params tp = tpp ? *tpp : ac_cache_default_train_params();
    const int64_t n = ac_mapstore_count(c->st);
    if (n < 20) return ac_err(AC_ERR_CACHE, "projector training needs at least 20 entries (cache has %lld)", (long long)n);
    const int F = c->feat_dim, D = c->D;
    int rc = AC_OK, Lmax = 0;
    ac_store_entry *ents = AC_MALLOC((size_t)n * sizeof *ents);
    float *X = AC_MALLOC((size_t)n * F * sizeof *X);
    int *train = AC_MALLOC((size_t)n * sizeof *train), *held = AC_MALLOC((size_t)n * sizeof *held);
    float *mean = AC_MALLOC((size_t)n * D * sizeof *mean);
    ac_proj_pair *pairs = AC_MALLOC((size_t)AC_MAX(tp.n_pairs, 1) * sizeof *pairs);
    float *keys[3] = {NULL, NULL, NULL};
    ac_projector *proj = NULL;
    if (!ents || !X || !train || !held || !mean || !pairs) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    int ntr = 0, nho = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((rc = ac_mapstore_get(c->st, i, &ents[i]))) goto done;
        memcpy(X + (size_t)i * F, ents[i].feature, (size_t)F * sizeof *X);
        summary_mean(c, ents[i].feature, mean + (size_t)i * D);
        Lmax = AC_MAX(Lmax, ents[i].n_tokens);
        if (i % 10 == 9) held[nho++] = (int)i; /* held out: hit-quality queries */
        else train[ntr++] = (int)i;
    }
    /* pairs (a, b) where b could serve a (the retrievals that matter): half
     * random among those, half hard (the nearest of 32 such candidates under
     * the mean key); falls back to any b when a has no servable partner */
    uint64_t s = tp.seed ? tp.seed : 1;
    for (int p = 0; p < tp.n_pairs; p++) {
        const int a = train[rng_u64(&s) % (uint64_t)ntr], hard = p % 2 == 1;
        int b = -1;
        float bd = INFINITY;
        for (int k = 0, found = 0; k < 256 && found < (hard ? 32 : 1); k++) {
            const int cand = train[rng_u64(&s) % (uint64_t)ntr];
            if (cand == a || !entry_fits(c, ents[cand].n_tokens, ents[a].n_tokens)) continue;
            found++;
            float d = hard ? key_distance(AC_KEY_MEAN, mean + (size_t)a * D, mean + (size_t)cand * D, D) : 0;
            if (b < 0 || d < bd) bd = d, b = cand;
        }
        while (b < 0 || b == a) b = train[rng_u64(&s) % (uint64_t)ntr];
        pairs[p].a = a;
        pairs[p].b = b;
    }
    double t0 = ac_now();
#pragma omp parallel
    {
        float *ra = malloc((size_t)Lmax * 2 * sizeof *ra);
#pragma omp for schedule(dynamic, 8)
        for (int p = 0; p < tp.n_pairs; p++)
            pairs[p].target = ra ? (float)map_distance(c, &ents[pairs[p].a], &ents[pairs[p].b], ra, ra + Lmax) : NAN;
        free(ra);
    }
    if (tp.verbose) fprintf(stderr, "train-projector: %d pair targets in %.1f s\n", tp.n_pairs, ac_now() - t0);
    if ((rc = ac_proj_new(F, tp.hidden, AC_KEY_DIM, tp.seed, &proj))) goto done;
    ac_proj_train_params pt = ac_proj_default_train_params();
    pt.epochs = tp.epochs;
    pt.lr = tp.lr;
    pt.seed = tp.seed;
    pt.verbose = tp.verbose;
    double loss = 0;
    if ((rc = ac_proj_train(proj, X, (int)n, pairs, tp.n_pairs, &pt, &loss))) goto done;
    proj->trained_on = c->fp[0];

    /* hit quality on held-out entries: map distance of the entry each key
     * retrieves (nearest train entry that may serve it) over the best one */
    const int kd[3] = {AC_KEY_DIM, D, AC_KEY_DIM};
    for (int k = 0; k < 3 && !rc; k++) {
        keys[k] = AC_MALLOC((size_t)n * kd[k] * sizeof(float));
        if (!keys[k]) rc = AC_ERR_NOMEM;
        for (int64_t i = 0; i < n && !rc; i++)
            rc = make_key(c, proj, k, X + (size_t)i * F, keys[k] + (size_t)i * kd[k], &c->wscr);
    }
    if (rc) goto done;
    const int nq = AC_MIN(nho, 100);
    double sum_ret[3] = {0, 0, 0}, sum_best = 0;
#pragma omp parallel reduction(+ : sum_best) reduction(+ : sum_ret[:3])
    {
        float *ra = malloc((size_t)Lmax * 2 * sizeof *ra);
#pragma omp for schedule(dynamic, 1)
        for (int qi = 0; qi < nq; qi++) {
            if (!ra) continue;
            const int q = held[qi], Lq = ents[q].n_tokens;
            double best = INFINITY, dret[3];
            int ret[3] = {-1, -1, -1};
            for (int k = 0; k < 3; k++) {
                float bd = INFINITY;
                for (int j = 0; j < ntr; j++) {
                    const int e = train[j];
                    if (!entry_fits(c, ents[e].n_tokens, Lq)) continue;
                    float d = key_distance(k, keys[k] + (size_t)q * kd[k], keys[k] + (size_t)e * kd[k], kd[k]);
                    if (d < bd) bd = d, ret[k] = e;
                }
            }
            if (ret[0] < 0) continue; /* nothing may serve this query */
            uint64_t qs = 0x9E3779B97F4A7C15ULL ^ (uint64_t)q;
            const int ncand = AC_MIN(ntr, 300);
            for (int j = 0; j < ncand; j++) { /* best over (a sample of) the train entries */
                const int e = ntr <= 300 ? train[j] : train[rng_u64(&qs) % (uint64_t)ntr];
                if (!entry_fits(c, ents[e].n_tokens, Lq)) continue;
                double d = map_distance(c, &ents[q], &ents[e], ra, ra + Lmax);
                if (d < best) best = d;
            }
            for (int k = 0; k < 3; k++) {
                dret[k] = map_distance(c, &ents[q], &ents[ret[k]], ra, ra + Lmax);
                if (dret[k] < best) best = dret[k];
            }
            sum_best += best;
            for (int k = 0; k < 3; k++) sum_ret[k] += dret[k];
        }
        free(ra);
    }
    for (int k = 0; k < 3; k++) {
        double r = sum_best > 0 ? sum_ret[k] / sum_best : NAN;
        if (report) report[k] = r;
        if (tp.verbose)
            fprintf(stderr, "hit quality (%s key): retrieved/best map distance = %.3f over %d held-out queries\n",
                    k == 0 ? "projector" : k == 1 ? "mean" : "random", r, nq);
    }
    /* keep it: save, switch the cache to the projector key, reindex */
    char path[PATH_MAX + 32];
    path_of(c, "projector.gguf", path, sizeof path);
    if ((rc = ac_proj_save(proj, path))) goto done;
    ac_index *idx = NULL;
    if ((rc = make_index(c, proj, AC_KEY_PROJECTOR, &idx))) goto done;
    wr_lock(c); /* projector, key kind and index change together */
    ac_projector *old = c->proj;
    c->proj = proj;
    c->key = AC_KEY_PROJECTOR;
    swap_index(c, idx);
    rw_unlock(c);
    proj = old; /* freed below */
    rc = save_index(c);
done:
    if (rc == AC_ERR_NOMEM) ac_err(rc, "projector training: out of memory");
    for (int k = 0; k < 3; k++) free(keys[k]);
    ac_proj_free(proj);
    free(ents);
    free(X);
    free(train);
    free(held);
    free(mean);
    free(pairs);
    return rc;
}

/* ---- db tools without a model ----------------------------------------------------------------------------- */

static int open_raw(const char *dir, ac_mapstore **st) {
    if (!dir) return ac_err(AC_ERR_ARG, "no cache directory given");
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/maps.acdb", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    int rc = ac_mapstore_open(&ac_store_file_ops, path, NULL, AC_STORE_READ, st);
    if (rc) ac_err_prefix(rc, "attention cache '%s'", dir);
    return rc;
}

int ac_db_print_stats(const char *dir, void *file) {
    ac_mapstore *st = NULL;
    int rc = open_raw(dir, &st);
    if (rc) return rc;
    ac_store_params sp;
    ac_mapstore_get_params(st, &sp);
    fprintf(file, "cache: %s\nshape: %d layers x %d heads, %s, feature %d floats\nmodel fingerprint: %016llx%016llx\n",
            dir, sp.n_layer, sp.n_head, sp.causal ? "causal" : "bidirectional", sp.feat_dim,
            (unsigned long long)sp.fingerprint[0], (unsigned long long)sp.fingerprint[1]);
    ac_mapstore_stats_print(st, file); /* with its DAMAGED / WARNING lines */
    ac_mapstore_close(st);
    return AC_OK;
}

/* The saved indexes of dir: each one present is loaded (its checksums
 * checked) and its size compared with the store; a damaged or stale index is
 * reported as such, not as damage: it is rebuilt from the store when a cache
 * is next opened (the store is the only source of truth). */
static void verify_indexes(const char *dir, int64_t n_store, FILE *f) {
    for (int k = 0; k < 3; k++) {
        char name[64], path[PATH_MAX + 80];
        index_name(k, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (access(path, F_OK) != 0) continue;
        ac_index *idx = NULL;
        if (ac_index_load(path, &idx) != AC_OK) {
            if (f) fprintf(f, "index %s: unreadable (%s); not a loss: it is rebuilt from the store at the next open\n",
                           name, ac_last_error());
            ac_err_clear();
            continue;
        }
        const int64_t nt = ac_index_ntotal(idx);
        ac_index_free(idx);
        if (f) {
            if (nt > n_store)
                fprintf(f, "index %s: %lld vectors for %lld entries (stale); rebuilt from the store at the next open\n",
                        name, (long long)nt, (long long)n_store);
            else
                fprintf(f, "index %s: intact (%lld vectors; rebuilt from the store whenever it falls behind)\n", name,
                        (long long)nt);
        }
    }
}

int ac_db_verify(const char *dir, void *file, int64_t *n_bad) {
    ac_mapstore *st = NULL;
    int rc = open_raw(dir, &st);
    if (rc) return rc;
    rc = ac_mapstore_verify(st, n_bad, file);
    int64_t n = ac_mapstore_count(st);
    ac_mapstore_close(st);
    char *msg = rc ? strdup(ac_last_error()) : NULL; /* keep the store's message past the index checks */
    verify_indexes(dir, n, file);
    if (rc) ac_err(rc, "%s", msg ? msg : "store verify failed");
    free(msg);
    return rc;
}

int ac_db_repair(const char *dir, void *file, int64_t *n_entries) {
    if (!dir) return ac_err(AC_ERR_ARG, "no cache directory given");
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/maps.acdb", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    int changed = 0;
    int rc = ac_store_repair(path, NULL, file, n_entries, &changed);
    if (rc) return ac_err_prefix(rc, "attention cache '%s'", dir);
    if (changed) { /* entry ordinals may have changed: the saved indexes are rebuilt at the next open */
        for (int k = 0; k < 3; k++) {
            char name[64], mpath[PATH_MAX + 96];
            index_name(k, name, sizeof name);
            snprintf(mpath, sizeof mpath, "%s/%s.meta", dir, name);
            if (unlink(mpath) == 0 && file) fprintf(file, "repair: %s will be rebuilt at the next open\n", name);
        }
    }
    return AC_OK;
}
