/* cache.c — the attention cache: ties the map store, the feature projector,
 * the vector index and the reuse policy to the forward pass (its attention
 * hook). See include/attncache.h (attention cache section) for the contract.
 *
 * Per input the store keeps: key = xxh64 of its token ids, L, a feature
 * summary of its layer-0 states (S segment means of the [L][D] states and
 * log(1+L): S*D+1 floats) and its n_layer*n_head compressed maps. The index
 * holds one key vector per entry (projector output, mean state, or a random
 * projection of it); lookups run inside the forward pass, timed. */
#define _GNU_SOURCE
#include "attncache.h"
#include "cache/codec.h"
#include "cache/hash.h"
#include "cache/index.h"
#include "cache/projector.h"
#include "cache/q8mat.h"
#include "cache/store.h"
#include "forward/forward.h"
#include "forward/cpu/pool.h"
#include "util/common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AC_FEAT_SEGMENTS 4 /* S: position segments of the feature summary */
#define AC_KEY_DIM 128     /* projector / random-projection key length   */
#define AC_LOOKUP_K 8      /* index candidates examined per lookup        */
#define AC_MIN_PREFIX_ROWS 16 /* PREFIX mode: shorter common prefixes are misses */

typedef struct seq_state {
    int looked_up, hit;
    int rows;                /* rows served on a hit (L, or the common token prefix in PREFIX mode) */
    ac_store_entry e;
    float dist;
} seq_state;

struct ac_cache {
    const ac_model *m;
    char dir[PATH_MAX];
    ac_cache_params p;
    int D, n_layer, n_head, causal, feat_dim;
    uint64_t fp[2];          /* model fingerprint */
    ac_store *st;
    int with_tokens;         /* the store keeps each entry's token ids (format 2) */
    ac_map_codec codec;      /* codec of new entries */
    ac_projector *proj;      /* NULL until trained */
    int key;                 /* enum ac_cache_keykind in use */
    ac_index *idx;           /* NULL when the store is empty */
    ac_q8mat rand_proj;      /* [AC_KEY_DIM][D] +-1/sqrt(D) for AC_KEY_RANDOM (exact in int8) */
    uint8_t *rand_x8;        /* [rand_proj.ld] its quantised input */
    uint8_t *layers;         /* [n_layer] 1: served on a hit */
    ac_ctx *ctx;             /* attached context */
    /* per forward call */
    seq_state *ss;
    int ss_cap;
    /* recording (ac_cache_add) */
    int recording, pending;
    uint64_t *pend_keys;     /* [pending] keys written since the last commit (not yet findable) */
    int pend_cap;
    double last_commit;      /* ac_now() of the last commit */
    /* scratch */
    float *x0;               /* [cap_x0][D] layer-0 states */
    size_t cap_x0;
    float *feat, *keyv;      /* [feat_dim], [max key dim] */
    ac_cache_stats stats;
    int64_t n_unindexed; /* damaged records the index left out (build_index) */
};

/* ---- model fingerprint --------------------------------------------------------------------- */

/* 128-bit hash of the GGUF metadata and tensor-info region plus, for each
 * tensor, up to 4 KiB from its start, middle and end. Two models that differ
 * anywhere in their hyper-parameters, vocab or tensor layout, or in sampled
 * weight bytes, get different fingerprints; a full hash of multi-GB weights
 * at every open would cost seconds. */
static void model_fingerprint(const ac_model *m, uint64_t fp[2]) {
    const gguf_file *g = m->gguf;
    ac_xxh64_state s0, s1;
    ac_xxh64_init(&s0, 0x61747463ULL);
    ac_xxh64_init(&s1, 0x68656361ULL);
    ac_xxh64_update(&s0, g->base, g->data_offset);
    ac_xxh64_update(&s1, g->base, g->data_offset);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
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

static int key_dim(const ac_cache *c, int key) {
    return key == AC_KEY_MEAN ? c->D : key == AC_KEY_PROJECTOR ? (c->proj ? c->proj->out_dim : AC_KEY_DIM) : AC_KEY_DIM;
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

/* key [key_dim] of a feature summary */
static int make_key(const ac_cache *c, int key, const float *feat, float *out, float *tmp /*[D]*/) {
    switch (key) {
    case AC_KEY_PROJECTOR:
        if (!c->proj) return ac_err(AC_ERR_CACHE, "no trained projector in '%s' (run train-projector)", c->dir);
        return ac_proj_key(c->proj, feat, out);
    case AC_KEY_MEAN: summary_mean(c, feat, out); return AC_OK;
    case AC_KEY_RANDOM: { /* q8mat.h: the same GEMV as the projector's */
        summary_mean(c, feat, tmp);
        const float sx = ac_q8_quant_u8(tmp, c->D, c->rand_proj.ld, 0, c->rand_x8);
        ac_q8mat_gemv(&c->rand_proj, NULL, c->rand_x8, sx, 128, out, 0);
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

static int ensure_x0(ac_cache *c, int L) {
    if ((size_t)L <= c->cap_x0) return AC_OK;
    float *n = realloc(c->x0, (size_t)L * c->D * sizeof *n);
    if (!n) return ac_err(AC_ERR_NOMEM, "cache: out of memory for %d layer-0 states", L);
    c->x0 = n;
    c->cap_x0 = (size_t)L;
    return AC_OK;
}

static int features_of(ac_cache *c, const int32_t *tokens, int L, float *feat) {
    int rc = ensure_x0(c, L);
    if (rc) return rc;
    if ((rc = ac_model_layer0_states(c->m, tokens, L, c->x0))) return rc;
    summarize(c->x0, L, c->D, feat);
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
static int build_index(ac_cache *c, int save) {
    const int64_t n = ac_store_count(c->st);
    const int kd = key_dim(c, c->key);
    ac_index_free(c->idx);
    c->idx = NULL;
    if (n == 0) return AC_OK;
    float *keys = AC_MALLOC((size_t)n * kd * sizeof *keys), *tmp = AC_MALLOC((size_t)c->D * sizeof *tmp);
    int64_t *ids = AC_MALLOC((size_t)n * sizeof *ids), nk = 0, n_damaged = 0; /* [nk] entries indexed */
    int rc = (!keys || !tmp || !ids) ? AC_ERR_NOMEM : AC_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        ac_store_entry e;
        if ((rc = ac_store_get(c->st, i, &e)) == AC_ERR_CACHE) { /* damaged record: left out (a lookup skips it too) */
            ac_err_clear();
            rc = AC_OK;
            n_damaged++;
            continue;
        }
        if (rc) break;
        rc = make_key(c, c->key, e.feature, keys + (size_t)nk * kd, tmp);
        ids[nk++] = i;
    }
    c->n_unindexed = n_damaged;
    if (!rc && nk == 0) { /* every record damaged: nothing to look up */
        free(keys);
        free(tmp);
        free(ids);
        return AC_OK;
    }
    if (!rc) {
        int kind = c->p.index_kind;
        if (kind == AC_INDEX_IVF_FLAT && nk < 64) kind = AC_INDEX_FLAT; /* too few to train lists */
        ac_index_params ip = ac_index_default_params(kind, kd);
        ip.metric = c->key == AC_KEY_PROJECTOR ? AC_METRIC_L2 : AC_METRIC_COSINE;
        if (kind == AC_INDEX_IVF_FLAT) {
            int nl = (int)sqrt((double)nk);
            ip.nlist = nl < 4 ? 4 : nl;
        }
        rc = ac_index_create(&ip, &c->idx);
        if (!rc && kind == AC_INDEX_IVF_FLAT) rc = ac_index_train(c->idx, keys, nk);
        if (!rc) rc = ac_index_add(c->idx, keys, ids, nk);
    }
    if (!rc && save) {
        char name[64], path[PATH_MAX + 80];
        index_name(c->key, name, sizeof name);
        path_of(c, name, path, sizeof path);
        rc = ac_index_save(c->idx, path);
        if (!rc) {
            char mpath[PATH_MAX + 96], tpath[PATH_MAX + 128];
            snprintf(mpath, sizeof mpath, "%s.meta", path);
            snprintf(tpath, sizeof tpath, "%s.tmp", mpath);
            FILE *f = fopen(tpath, "w");
            if (!f) rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", tpath, strerror(errno));
            else {
                fprintf(f, "%lld %016llx %d %d\n", (long long)n,
                        (unsigned long long)(c->proj ? ac_proj_fingerprint(c->proj) : 0), c->p.index_kind, KEYS_VERSION);
                if (fclose(f) != 0 || rename(tpath, mpath) != 0)
                    rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", mpath, strerror(errno));
            }
        }
    }
    free(keys);
    free(tmp);
    free(ids);
    if (rc == AC_ERR_NOMEM) ac_err(rc, "cache: out of memory building the index");
    return rc;
}

/* Load the saved index if it matches the store and projector; else rebuild. */
static int open_index(ac_cache *c) {
    const int64_t n = ac_store_count(c->st);
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
        ac_index_ntotal(c->idx) <= n && ac_index_dim(c->idx) == key_dim(c, c->key))
        return AC_OK;
    ac_index_free(c->idx);
    c->idx = NULL;
    ac_err_clear();
    return build_index(c, c->p.writable);
}

int ac_cache_reindex(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_reindex: NULL cache");
    return build_index(c, c->p.writable);
}

/* ---- open / close ---------------------------------------------------------------------------------- */

int ac_cache_open(const ac_model *m, const char *dir, const ac_cache_params *pp, ac_cache **out) {
    if (!m || !dir || !out) return ac_err(AC_ERR_ARG, "ac_cache_open: invalid argument");
    *out = NULL;
    ac_cache_params p = pp ? *pp : ac_cache_default_params();
    ac_cache *c = AC_CALLOC(1, sizeof *c);
    if (!c) return AC_ERR_NOMEM;
    int rc = AC_OK;
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
    if ((rc = ac_store_open(path, &sp, flags, &c->st))) {
        ac_err_prefix(rc, "attention cache '%s'", dir);
        goto fail;
    }
    ac_store_params got;
    ac_store_get_params(c->st, &got);
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
    c->feat = AC_MALLOC((size_t)c->feat_dim * sizeof(float));
    c->keyv = AC_MALLOC((size_t)AC_MAX(c->D, 1024) * sizeof(float) * 2);
    c->rand_x8 = AC_MALLOC((size_t)c->D + 64);
    if (!rp || !c->layers || !c->feat || !c->keyv || !c->rand_x8) {
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
    if ((rc = open_index(c))) goto fail;
    c->stats.entries = ac_store_count(c->st);
    *out = c;
    return AC_OK;
fail:
    ac_cache_close(c);
    return rc;
}

static ac_cache *attached_cache(const ac_ctx *ctx);

int ac_cache_close(ac_cache *c) {
    if (!c) return AC_OK;
    int rc = AC_OK;
    if (c->st && c->pending) rc = ac_cache_commit(c);
    if (attached_cache(c->ctx) == c) ac_ctx_set_attn_hook(c->ctx, NULL);
    ac_store_close(c->st);
    ac_index_free(c->idx);
    ac_proj_free(c->proj);
    ac_q8mat_free(&c->rand_proj);
    free(c->rand_x8);
    free(c->layers);
    free(c->ss);
    free(c->x0);
    free(c->feat);
    free(c->keyv);
    free(c->pend_keys);
    free(c);
    return rc;
}

/* ---- lookup ---------------------------------------------------------------------------------------- */

static int entry_fits(const ac_cache *c, int Le, int L) {
    if (Le == L) return 1;
    return Le > L && (c->causal || c->p.allow_longer);
}

/* Look sequence `tokens` up; fills *st. x0 [L][D]: its layer-0 states when
 * the forward pass has them (else computed here). Key and search run on the
 * context's thread pool. Errors are reported but a failed lookup is a miss
 * (the forward pass stays exact). */
static int lookup(ac_cache *c, const int32_t *tokens, int L, const float *x0, seq_state *st) {
    st->looked_up = 1;
    st->hit = 0;
    if (!c->idx || c->p.threshold < 0) return AC_OK;
    c->stats.queries++;
    struct ac_pool *pool = c->ctx ? ac_ctx_pool(c->ctx) : NULL;
    double t0 = ac_now();
    int rc = AC_OK;
    if (x0) summarize(x0, L, c->D, c->feat);
    else rc = features_of(c, tokens, L, c->feat);
    double t1 = ac_now();
    c->stats.t_features += t1 - t0;
    if (rc) return rc;
    float *key = c->keyv, *tmp = c->keyv + AC_MAX(c->D, 1024);
    if ((rc = make_key(c, c->key, c->feat, key, tmp))) return rc;
    double t2 = ac_now();
    c->stats.t_key += t2 - t1;
    int64_t ids[AC_LOOKUP_K];
    float sims[AC_LOOKUP_K];
    int64_t u0, r0, u1, r1;
    ac_index_scan_stats(c->idx, NULL, &u0, &r0);
    rc = ac_index_search_pool(c->idx, key, 1, AC_LOOKUP_K, ids, sims, pool);
    ac_index_scan_stats(c->idx, NULL, &u1, &r1);
    c->stats.search_unproven += u1 - u0;
    c->stats.search_recomputed += r1 - r0;
    double t3 = ac_now();
    c->stats.t_search += t3 - t2;
    if (rc) return rc;
    for (int k = 0; k < AC_LOOKUP_K && ids[k] >= 0; k++) {
        float d = sim_to_dist(c->key, sims[k]);
        ac_store_entry e;
        if (c->p.rows == AC_ROWS_PREFIX) {
            /* exact rows only: the candidate sharing the longest token prefix
             * (row t of a causal map depends on tokens 0..t alone); distance
             * plays no part in exactness, so no threshold */
            if (ac_store_get(c->st, ids[k], &e) != AC_OK) { /* damaged record: skip it, counted */
                c->stats.damaged_skipped++;
                continue;
            }
            if (!e.tokens) continue;
            const int n = AC_MIN(L, e.n_tokens);
            int p = 0;
            while (p < n && e.tokens[p] == tokens[p]) p++;
            if (p >= AC_MIN_PREFIX_ROWS && p > st->rows) {
                st->hit = 1;
                st->rows = p;
                st->e = e;
                st->dist = d;
                if (p == L) break;
            }
            continue;
        }
        if (d > c->p.threshold) break; /* candidates come best first */
        if (!entry_fits(c, ac_store_n_tokens(c->st, ids[k]), L)) continue; /* no read of a record that cannot serve */
        if (ac_store_get(c->st, ids[k], &e) != AC_OK) { /* damaged record: skip it, counted */
            c->stats.damaged_skipped++;
            continue;
        }
        st->hit = 1;
        st->rows = L;
        st->e = e;
        st->dist = d;
        break;
    }
    if (st->hit) {
        c->stats.hits++;
        c->stats.sum_distance_hit += st->dist;
    }
    c->stats.t_fetch += ac_now() - t3;
    ac_err_clear();
    return AC_OK;
}

/* ---- hook callbacks --------------------------------------------------------------------------------- */

static seq_state *seq_slot(ac_cache *c, int seq) {
    if (seq >= c->ss_cap) {
        int nc = AC_MAX(seq + 1, c->ss_cap * 2);
        seq_state *n = realloc(c->ss, (size_t)nc * sizeof *n);
        if (!n) return NULL;
        memset(n + c->ss_cap, 0, (size_t)(nc - c->ss_cap) * sizeof *n);
        c->ss = n;
        c->ss_cap = nc;
    }
    return &c->ss[seq];
}

static int hook_reuse(void *user, const ac_attn_site *site) {
    ac_cache *c = user;
    if (c->recording) return 0;
    seq_state *st = seq_slot(c, site->seq);
    if (!st) return 0;
    if (site->layer == 0) { /* first layer of a new forward call: look this sequence up */
        memset(st, 0, sizeof *st);
        if (lookup(c, site->tokens, site->n_tokens, site->x, st) != AC_OK) {
            c->stats.lookup_errors++; /* counted; reported by the tools */
            st->hit = 0; /* a failed lookup never breaks the exact path */
            ac_err_clear();
        }
    }
    if (!st->hit || !c->layers[site->layer]) return 0;
    c->stats.layers_served++;
    c->stats.rows_served += st->rows;
    c->stats.rows_total += site->n_tokens;
    return st->rows;
}

/* out[t][h*hd + d] = sum_j P_h[t][j] V[j][g*hd + d], g = h / (H/Hkv), from
 * the stored compressed rows (decoded inside the A.V kernel). A longer
 * entry serves through its top-left L x L block (causal: exact prefix;
 * bidirectional with allow_longer: rows renormalised). Runs on the
 * context's own thread pool: tasks of one head x 16 rows. */
typedef struct apply_job {
    const ac_store_entry *e;
    int layer, L, nrows, H, grp, hd, ldv, ldo, causal, renorm; /* rows [0, nrows) of L */
    const float *v;
    float *out;
    float **rowbuf; /* [n threads][Le] when renorm */
    struct ac_pool *pool;
} apply_job;

#define APPLY_ROWS 16

/* one task: head h = task / nb, rows [16 (task % nb), +16) */
static void apply_task(const apply_job *j, int task, float *row) {
    const ac_store_entry *e = j->e;
    const ac_map_codec *codec = &e->codec;
    const int Le = e->n_tokens, nb = (j->nrows + APPLY_ROWS - 1) / APPLY_ROWS;
    const int h = task / nb, t0 = (task % nb) * APPLY_ROWS, t1 = AC_MIN(j->nrows, t0 + APPLY_ROWS);
    const uint8_t *map = ac_store_entry_map(e, j->H, j->layer, h);
    const float *vh = j->v + (size_t)(h / j->grp) * j->hd;
    for (int t = t0; t < t1; t++) {
        float *o = j->out + (size_t)t * j->ldo + (size_t)h * j->hd;
        ac_codec_av_row(codec, map + ac_codec_row_offset(codec, Le, t), j->causal ? t + 1 : j->L, vh, j->ldv, j->hd, o);
        if (j->renorm) { /* a longer bidirectional entry: rows renormalised over the first L columns */
            ac_codec_decode_row(codec, map, Le, t, row);
            double s = 0;
            for (int k = 0; k < j->L; k++) s += row[k];
            const float inv = s > 1e-20 ? (float)(1.0 / s) : 0.0f;
            for (int d = 0; d < j->hd; d++) o[d] *= inv;
        }
    }
}

static void apply_step(void *arg, int ith, int nth) {
    (void)nth;
    apply_job *j = arg;
    const int ntask = j->H * ((j->nrows + APPLY_ROWS - 1) / APPLY_ROWS);
    for (int task; (task = ac_pool_next(j->pool)) < ntask;) apply_task(j, task, j->renorm ? j->rowbuf[ith] : NULL);
}

static int hook_apply(void *user, const ac_attn_site *site, int n_rows, const float *v, int ldv, int n_head_kv,
                      int hd, float *out, int ldo) {
    ac_cache *c = user;
    const ac_store_entry *e = &c->ss[site->seq].e;
    const int L = site->n_tokens, Le = e->n_tokens, H = site->n_head, R = n_rows;
    if (R < 1 || R > L) return ac_err(AC_ERR_INTERNAL, "cache: apply of %d rows of %d", R, L);
    struct ac_pool *pool = ac_ctx_pool(c->ctx);
    const int nthr = pool ? ac_pool_threads(pool) : 1, ntask = H * ((R + APPLY_ROWS - 1) / APPLY_ROWS);
    apply_job j = {e, site->layer, L, R, H, H / n_head_kv, hd, ldv, ldo, c->causal, !c->causal && Le > L, v, out,
                   NULL, pool};
    int rc = AC_OK;
    if (j.renorm) {
        if (!(j.rowbuf = AC_CALLOC((size_t)nthr, sizeof *j.rowbuf))) rc = AC_ERR_NOMEM;
        for (int i = 0; !rc && i < nthr; i++)
            if (!(j.rowbuf[i] = AC_MALLOC((size_t)Le * sizeof(float)))) rc = AC_ERR_NOMEM;
    }
    if (!rc) {
        if (!pool || nthr == 1 || (double)R * L * H * hd < 2e5) /* little work: the caller alone, no barrier */
            for (int task = 0; task < ntask; task++) apply_task(&j, task, j.renorm ? j.rowbuf[0] : NULL);
        else
            ac_pool_run(pool, apply_step, &j);
    }
    if (j.rowbuf)
        for (int i = 0; i < nthr; i++) free(j.rowbuf[i]);
    free(j.rowbuf);
    if (rc) return ac_err(rc, "cache: out of memory serving a map");
    const ac_map_codec *codec = &e->codec;
    c->stats.bytes_read += (uint64_t)H * (ac_codec_row_offset(codec, Le, R - 1) +
                                          ac_codec_row_bytes(codec, ac_codec_row_n(codec, Le, R - 1)));
    return AC_OK;
}

static int hook_want_record(void *user, const ac_attn_site *site) {
    (void)site;
    return ((ac_cache *)user)->recording;
}

static int hook_record(void *user, const ac_attn_site *site, const float *P) {
    ac_cache *c = user;
    const size_t LL = (size_t)site->n_tokens * site->n_tokens;
    for (int h = 0; h < site->n_head; h++) {
        int rc = ac_store_put_map(c->st, site->layer, h, P + (size_t)h * LL);
        if (rc) return rc;
    }
    return AC_OK;
}

static void install_hook(ac_ctx *ctx, ac_cache *c) {
    ac_attn_hook h;
    memset(&h, 0, sizeof h);
    h.user = c;
    h.reuse = hook_reuse;
    h.apply = hook_apply;
    h.want_record = hook_want_record;
    h.record = hook_record;
    ac_ctx_set_attn_hook(ctx, &h);
}

/* The cache whose hook ctx carries, or NULL. */
static ac_cache *attached_cache(const ac_ctx *ctx) {
    return ctx && ctx->has_hook && ctx->hook.reuse == hook_reuse ? ctx->hook.user : NULL;
}

int ac_ctx_attach_cache(ac_ctx *ctx, ac_cache *c) {
    if (!ctx) return ac_err(AC_ERR_ARG, "ac_ctx_attach_cache: NULL context");
    if (c && ac_ctx_model(ctx) != c->m) return ac_err(AC_ERR_ARG, "cache and context belong to different models");
    /* the cache ctx carried forgets it (a detached context may be freed before
     * that cache is closed); a cache moves from its previous context */
    ac_cache *old = attached_cache(ctx);
    if (old && old->ctx == ctx) old->ctx = NULL;
    if (!c) {
        ac_ctx_set_attn_hook(ctx, NULL);
        return AC_OK;
    }
    if (c->ctx && c->ctx != ctx && attached_cache(c->ctx) == c) ac_ctx_set_attn_hook(c->ctx, NULL);
    install_hook(ctx, c);
    c->ctx = ctx;
    return AC_OK;
}

/* ---- writing ------------------------------------------------------------------------------------------ */

int ac_cache_add(ac_cache *c, ac_ctx *ctx, const int32_t *tokens, int n, int *added) {
    if (!c || !ctx || !tokens || n <= 0) return ac_err(AC_ERR_ARG, "ac_cache_add: invalid argument");
    if (!c->p.writable) return ac_err(AC_ERR_CACHE, "cache '%s' is open read-only", c->dir);
    if (added) *added = 0;
    uint64_t key = ac_xxh64(tokens, (size_t)n * sizeof *tokens, 0);
    ac_store_entry e;
    int rc = ac_store_find(c->st, key, &e);
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
    if ((rc = features_of(c, tokens, n, c->feat))) return rc;
    if ((rc = ac_store_begin(c->st, key, n, &c->codec, c->feat))) return rc;
    if (c->with_tokens && (rc = ac_store_put_tokens(c->st, tokens))) goto fail;
    /* record through ctx; afterwards ctx gets its own hook back (none, this
     * cache's or another cache's) and this cache stays attached where it was */
    const ac_attn_hook prev_hook = ctx->hook;
    const int prev_has = ctx->has_hook;
    if (ac_ctx_model(ctx) != c->m) {
        rc = ac_err(AC_ERR_ARG, "cache and context belong to different models");
        goto fail;
    }
    install_hook(ctx, c);
    c->recording = 1;
    ac_seq s = {tokens, n};
    ac_outputs o;
    memset(&o, 0, sizeof o);
    rc = ac_forward(ctx, &s, 1, &o);
    c->recording = 0;
    ac_ctx_set_attn_hook(ctx, prev_has ? &prev_hook : NULL);
    if (rc) goto fail;
    if ((rc = ac_store_end(c->st))) goto fail;
    c->pend_keys[c->pending++] = key;
    if (added) *added = 1;
    /* commit after commit_every entries, but not more than once a second
     * (each commit is two fsyncs), and always once 4096 are pending */
    const double now = ac_now();
    if ((c->pending >= (c->p.commit_every > 0 ? c->p.commit_every : 1) && now - c->last_commit >= 1.0) ||
        c->pending >= 4096)
        return ac_cache_commit(c);
    return AC_OK;
fail:
    ac_store_abort(c->st);
    return rc;
}

int ac_cache_commit(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_commit: NULL cache");
    if (!c->p.writable || !c->pending) return AC_OK;
    int rc = ac_store_commit(c->st);
    c->last_commit = ac_now();
    if (rc == AC_OK) {
        c->pending = 0;
        c->stats.entries = ac_store_count(c->st);
    }
    return rc;
}

/* ---- policy, stats --------------------------------------------------------------------------------------- */

int ac_cache_set_layers(ac_cache *c, const uint8_t *mask) {
    if (!c || !mask) return ac_err(AC_ERR_ARG, "ac_cache_set_layers: invalid argument");
    for (int l = 0; l < c->n_layer; l++) c->layers[l] = mask[l] != 0;
    return AC_OK;
}

int ac_cache_get_layers(const ac_cache *c, uint8_t *mask) {
    if (!c || !mask) return ac_err(AC_ERR_ARG, "ac_cache_get_layers: invalid argument");
    memcpy(mask, c->layers, (size_t)c->n_layer);
    return AC_OK;
}

int ac_cache_set_threshold(ac_cache *c, float t) {
    if (!c || !isfinite(t)) return ac_err(AC_ERR_ARG, "ac_cache_set_threshold: invalid argument");
    c->p.threshold = t;
    return AC_OK;
}

int ac_cache_save_policy(ac_cache *c) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_save_policy: NULL cache");
    char path[PATH_MAX + 32], tmp[PATH_MAX + 48];
    path_of(c, "policy.txt", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ac_err(AC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    fputs("layers ", f);
    int first = 1, any = 0;
    for (int l = 0; l < c->n_layer; l++)
        if (c->layers[l]) {
            fprintf(f, first ? "%d" : ",%d", l);
            first = 0;
            any = 1;
        }
    if (!any) fputs("none", f);
    fprintf(f, "\nthreshold %g\n", c->p.threshold);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        return ac_err(AC_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    return AC_OK;
}

int ac_cache_get_stats(const ac_cache *c, ac_cache_stats *s) {
    if (!c || !s) return ac_err(AC_ERR_ARG, "ac_cache_get_stats: invalid argument");
    *s = c->stats;
    s->entries = ac_store_count(c->st);
    s->damaged_unindexed = c->n_unindexed;
    return AC_OK;
}

void ac_cache_reset_stats(ac_cache *c) {
    if (!c) return;
    memset(&c->stats, 0, sizeof c->stats);
    c->stats.entries = ac_store_count(c->st);
}

int ac_cache_print_db_stats(ac_cache *c, void *file) {
    if (!c || !file) return ac_err(AC_ERR_ARG, "ac_cache_print_db_stats: invalid argument");
    FILE *f = file;
    fprintf(f, "cache: %s\nmodel: %s, %d layers x %d heads, %s\nkey: %s%s, index: %s\n", c->dir,
            c->m->info.arch_name, c->n_layer, c->n_head, c->causal ? "causal" : "bidirectional",
            c->key == AC_KEY_PROJECTOR ? "projector" : c->key == AC_KEY_MEAN ? "mean" : "random",
            c->proj ? " (trained projector present)" : "", c->p.index_kind == 0 ? "flat" : c->p.index_kind == 1 ? "ivf" : "hnsw");
    ac_store_stats_print(c->st, f);
    if (c->n_unindexed)
        fprintf(f, "DAMAGED    %lld record(s) failed their checksum and are left out of the index (served by exact "
                "compute); `attncache db repair` drops them\n", (long long)c->n_unindexed);
    return AC_OK;
}

int ac_cache_verify(ac_cache *c, void *file, int64_t *n_bad) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_verify: NULL cache");
    return ac_store_verify(c->st, n_bad, file);
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

int ac_cache_train_projector(ac_cache *c, const ac_cache_train_params *tpp, double *report) {
    if (!c) return ac_err(AC_ERR_ARG, "ac_cache_train_projector: NULL cache");
    if (!c->p.writable) return ac_err(AC_ERR_CACHE, "cache '%s' is open read-only", c->dir);
    ac_cache_train_params tp = tpp ? *tpp : ac_cache_default_train_params();
    const int64_t n = ac_store_count(c->st);
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
        if ((rc = ac_store_get(c->st, i, &ents[i]))) goto done;
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
    ac_projector *saved = c->proj;
    c->proj = proj;
    for (int k = 0; k < 3 && !rc; k++) {
        keys[k] = AC_MALLOC((size_t)n * kd[k] * sizeof(float));
        if (!keys[k]) rc = AC_ERR_NOMEM;
        for (int64_t i = 0; i < n && !rc; i++) rc = make_key(c, k, X + (size_t)i * F, keys[k] + (size_t)i * kd[k], c->keyv);
    }
    c->proj = saved;
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
    ac_proj_free(c->proj);
    c->proj = proj;
    proj = NULL;
    c->key = AC_KEY_PROJECTOR;
    rc = build_index(c, 1);
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

static int open_raw(const char *dir, ac_store **st) {
    if (!dir) return ac_err(AC_ERR_ARG, "no cache directory given");
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/maps.acdb", dir) >= (int)sizeof path) return ac_err(AC_ERR_ARG, "path too long");
    int rc = ac_store_open(path, NULL, AC_STORE_READ, st);
    if (rc) ac_err_prefix(rc, "attention cache '%s'", dir);
    return rc;
}

int ac_db_print_stats(const char *dir, void *file) {
    ac_store *st = NULL;
    int rc = open_raw(dir, &st);
    if (rc) return rc;
    ac_store_params sp;
    ac_store_get_params(st, &sp);
    fprintf(file, "cache: %s\nshape: %d layers x %d heads, %s, feature %d floats\nmodel fingerprint: %016llx%016llx\n",
            dir, sp.n_layer, sp.n_head, sp.causal ? "causal" : "bidirectional", sp.feat_dim,
            (unsigned long long)sp.fingerprint[0], (unsigned long long)sp.fingerprint[1]);
    ac_store_stats_print(st, file); /* with its DAMAGED / WARNING lines */
    ac_store_close(st);
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
    ac_store *st = NULL;
    int rc = open_raw(dir, &st);
    if (rc) return rc;
    rc = ac_store_verify(st, n_bad, file);
    int64_t n = ac_store_count(st);
    ac_store_close(st);
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
