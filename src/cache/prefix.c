/* prefix.c — the prefix K/V cache (include/attncache.h, "prefix K/V cache"):
 * a token-level radix tree whose nodes keep, for their run of tokens, every
 * layer's K (after RoPE) and V rows and the final hidden states, in f32,
 * plugged into the forward pass through its prefix hook (forward.h,
 * ac_kv_hook): `lookup` copies the rows of the longest stored prefix into the
 * context's rows, `insert` stores what a sequence added.
 *
 * Tree: the root holds no tokens; a node's children start with different
 * tokens; a node is split where a new sequence leaves its run. A node's rows:
 *   rows [n_layer][2][n][kvd]   K then V of each layer, for its n tokens
 *        [n][n_embd]            final hidden states
 * Locking: one read-write lock. Lookups hold it shared while they walk and
 * copy the rows out (so no node is read after it is released: eviction and
 * splits, which hold it exclusively, can never free rows a forward is still
 * using); last-use stamps and statistics are atomics. Budget: after an insert,
 * the least recently used leaf is evicted until the bytes fit (a scan of the
 * nodes per eviction; a parent left childless becomes a leaf itself). */
#define _POSIX_C_SOURCE 200809L
#include "attncache.h"
#include "cache/fingerprint.h"
#include "cache/hash.h"
#include "forward/forward.h"
#include "load/model.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct pnode {
    struct pnode *parent;
    struct pnode **kid; /* [n_kid] children (first tokens differ) */
    int n_kid, cap_kid;
    int32_t *tok;       /* [n] this node's run of tokens */
    float *rows;        /* [n_layer][2][n][kvd] K/V, then [n][n_embd] hidden */
    int n;
    int depth;          /* tokens before the run (its first token's position) */
    _Atomic uint64_t last_use;
    size_t bytes;
} pnode;

typedef struct prefix_att {
    ac_prefix_cache *pc;
    ac_ctx *ctx;
    struct prefix_att *prev, *next;
} prefix_att;

struct ac_prefix_cache {
    const ac_model *model;
    ac_prefix_params p;
    int n_layer, kvd, n_embd, n_vocab;
    uint64_t fp[2]; /* the model's fingerprint (the file's check) */
    pthread_rwlock_t lock;
    pnode root;
    _Atomic int64_t bytes, nodes;
    _Atomic uint64_t tick;
    _Atomic int64_t lookups, hits, reused, computed, inserts, stored, evictions, insert_failed;
    _Atomic int64_t ns_lookup, ns_insert;
    pthread_mutex_t att_mu; /* guards atts */
    prefix_att *atts;
};

ac_prefix_params ac_prefix_default_params(void) {
    ac_prefix_params p = {(int64_t)256 << 20, 16};
    return p;
}

static size_t node_bytes(const ac_prefix_cache *pc, int n, int cap_kid) {
    return sizeof(pnode) + (size_t)n * sizeof(int32_t) + (size_t)cap_kid * sizeof(pnode *) +
           (size_t)n * ((size_t)pc->n_layer * 2 * pc->kvd + pc->n_embd) * sizeof(float);
}

/* account for a change of nd bytes in node nd (already applied to nd->bytes by the caller) */
static void add_bytes(ac_prefix_cache *pc, int64_t d) { atomic_fetch_add(&pc->bytes, d); }

/* copy rows [r0, r0+n) of a row set laid out for `len` tokens (src) to rows [d0, d0+n) of
 * one laid out for `dlen` tokens (dst); both [n_layer][2][len][kvd] + [len][n_embd] (a
 * context's ac_kv_rows: len or dlen is its ld) */
static void copy_rows(const ac_prefix_cache *pc, float *dst, int dlen, int d0, const float *src, int len, int r0,
                      int n) {
    const size_t kvd = (size_t)pc->kvd, D = (size_t)pc->n_embd;
    for (int b = 0; b < 2 * pc->n_layer; b++)
        memcpy(dst + ((size_t)b * dlen + d0) * kvd, src + ((size_t)b * len + r0) * kvd, (size_t)n * kvd * sizeof(float));
    const float *hs = src + (size_t)2 * pc->n_layer * len * kvd;
    float *hd = dst + (size_t)2 * pc->n_layer * dlen * kvd;
    memcpy(hd + (size_t)d0 * D, hs + (size_t)r0 * D, (size_t)n * D * sizeof(float));
}

static pnode *find_kid(const pnode *nd, int32_t t) {
    for (int i = 0; i < nd->n_kid; i++)
        if (nd->kid[i]->tok[0] == t) return nd->kid[i];
    return NULL;
}

static int add_kid(ac_prefix_cache *pc, pnode *nd, pnode *k) {
    if (nd->n_kid == nd->cap_kid) {
        const int nc = nd->cap_kid ? 2 * nd->cap_kid : 2;
        pnode **nk = realloc(nd->kid, (size_t)nc * sizeof *nk);
        if (!nk) return AC_ERR_NOMEM;
        nd->kid = nk;
        if (nd != &pc->root) {
            const size_t nb = node_bytes(pc, nd->n, nc);
            add_bytes(pc, (int64_t)nb - (int64_t)nd->bytes);
            nd->bytes = nb;
        }
        nd->cap_kid = nc;
    }
    nd->kid[nd->n_kid++] = k;
    k->parent = nd;
    return AC_OK;
}

/* A node for tokens [pos, pos+n) of `tok`, its rows copied from src (laid out for len tokens). */
static pnode *node_new(ac_prefix_cache *pc, const int32_t *tok, int pos, int n, const float *src, int len) {
    pnode *nd = AC_CALLOC(1, sizeof *nd);
    if (!nd) return NULL;
    nd->tok = AC_MALLOC((size_t)n * sizeof *nd->tok);
    nd->rows = AC_MALLOC((size_t)n * ((size_t)pc->n_layer * 2 * pc->kvd + pc->n_embd) * sizeof(float));
    if (!nd->tok || !nd->rows) {
        free(nd->tok), free(nd->rows), free(nd);
        return NULL;
    }
    memcpy(nd->tok, tok + pos, (size_t)n * sizeof *tok);
    copy_rows(pc, nd->rows, n, 0, src, len, pos, n);
    nd->n = n;
    nd->depth = pos;
    nd->bytes = node_bytes(pc, n, 0);
    atomic_store(&nd->last_use, atomic_fetch_add(&pc->tick, 1) + 1);
    add_bytes(pc, (int64_t)nd->bytes);
    atomic_fetch_add(&pc->nodes, 1);
    return nd;
}

static void node_free_tree(ac_prefix_cache *pc, pnode *nd) {
    for (int i = 0; i < nd->n_kid; i++) node_free_tree(pc, nd->kid[i]);
    free(nd->kid);
    if (nd == &pc->root) {
        nd->kid = NULL;
        nd->n_kid = nd->cap_kid = 0;
        return;
    }
    add_bytes(pc, -(int64_t)nd->bytes);
    atomic_fetch_sub(&pc->nodes, 1);
    free(nd->tok);
    free(nd->rows);
    free(nd);
}

/* Split nd after its first k tokens (0 < k < n): nd keeps [0, k), a new child the rest
 * (with nd's children). Exclusive lock held. */
static int node_split(ac_prefix_cache *pc, pnode *nd, int k) {
    pnode *tail = node_new(pc, nd->tok, k, nd->n - k, nd->rows, nd->n);
    if (!tail) return AC_ERR_NOMEM;
    float *head = AC_MALLOC((size_t)k * ((size_t)pc->n_layer * 2 * pc->kvd + pc->n_embd) * sizeof(float));
    pnode **kids = AC_MALLOC(2 * sizeof *kids);
    if (!head || !kids) {
        free(head), free(kids);
        node_free_tree(pc, tail);
        return AC_ERR_NOMEM;
    }
    copy_rows(pc, head, k, 0, nd->rows, nd->n, 0, k);
    tail->depth = nd->depth + k;
    atomic_store(&tail->last_use, atomic_load(&nd->last_use));
    tail->kid = nd->kid, tail->n_kid = nd->n_kid, tail->cap_kid = nd->cap_kid;
    for (int i = 0; i < tail->n_kid; i++) tail->kid[i]->parent = tail;
    const size_t tb = node_bytes(pc, tail->n, tail->cap_kid);
    add_bytes(pc, (int64_t)tb - (int64_t)tail->bytes);
    tail->bytes = tb;
    free(nd->rows);
    nd->rows = head;
    int32_t *tk = realloc(nd->tok, (size_t)k * sizeof *tk);
    if (tk) nd->tok = tk; /* (else it keeps its longer array, unused past k) */
    nd->n = k;
    nd->kid = kids, nd->n_kid = 1, nd->cap_kid = 2;
    kids[0] = tail;
    tail->parent = nd;
    const size_t hb = node_bytes(pc, k, 2);
    add_bytes(pc, (int64_t)hb - (int64_t)nd->bytes);
    nd->bytes = hb;
    return AC_OK;
}

/* the least recently used leaf (NULL: the tree is empty) */
static void lru_leaf(pnode *nd, pnode **best, uint64_t *best_use) {
    for (int i = 0; i < nd->n_kid; i++) {
        pnode *k = nd->kid[i];
        if (k->n_kid) lru_leaf(k, best, best_use);
        else {
            const uint64_t u = atomic_load_explicit(&k->last_use, memory_order_relaxed);
            if (!*best || u < *best_use) *best = k, *best_use = u;
        }
    }
}

static void evict_to_budget(ac_prefix_cache *pc) {
    while (atomic_load(&pc->bytes) > pc->p.max_bytes) {
        pnode *leaf = NULL;
        uint64_t use = 0;
        lru_leaf(&pc->root, &leaf, &use);
        if (!leaf) break;
        pnode *par = leaf->parent;
        for (int i = 0; i < par->n_kid; i++)
            if (par->kid[i] == leaf) {
                par->kid[i] = par->kid[--par->n_kid];
                break;
            }
        node_free_tree(pc, leaf);
        atomic_fetch_add(&pc->evictions, 1);
    }
}

/* ---- the hook --------------------------------------------------------------------------------- */

/* Longest stored prefix of tok[0, lim) at least min_match long: its length (0: none); with
 * rows, its rows are copied into them; with rows or stamp, its nodes' last use is stamped. Shared
 * lock held. */
static int walk(ac_prefix_cache *pc, const int32_t *tok, int lim, const ac_kv_rows *rows, int stamp) {
    const pnode *nd = &pc->root;
    int pos = 0;
    while (pos < lim) {
        pnode *k = find_kid(nd, tok[pos]);
        if (!k) break;
        int m = 0;
        const int cap = AC_MIN(k->n, lim - pos);
        while (m < cap && k->tok[m] == tok[pos + m]) m++;
        if (rows) { /* (the context's rows below rows->valid hold these already) */
            const int skip = AC_MIN(m, AC_MAX(0, rows->valid - pos));
            if (skip < m) copy_rows(pc, rows->kv, rows->ld, pos + skip, k->rows, k->n, skip, m - skip);
        }
        if (rows || stamp)
            atomic_store_explicit(&k->last_use, atomic_fetch_add(&pc->tick, 1) + 1, memory_order_relaxed);
        pos += m;
        if (m < k->n) break;
        nd = k;
    }
    return pos;
}

static int hook_lookup(void *user, const int32_t *tokens, const ac_kv_rows *rows) {
    prefix_att *a = user;
    ac_prefix_cache *pc = a->pc;
    const double t0 = ac_now();
    atomic_fetch_add(&pc->lookups, 1);
    int P = 0;
    if (rows->L >= 2 && rows->kvd == pc->kvd && rows->n_layer == pc->n_layer && rows->n_embd == pc->n_embd) {
        pthread_rwlock_rdlock(&pc->lock);
        P = walk(pc, tokens, rows->L - 1, NULL, 0);
        if (P >= pc->p.min_match) walk(pc, tokens, P, rows, 1);
        else P = 0;
        pthread_rwlock_unlock(&pc->lock);
    }
    if (P) {
        atomic_fetch_add(&pc->hits, 1);
        atomic_fetch_add(&pc->reused, P);
    }
    atomic_fetch_add(&pc->computed, rows->L - P);
    atomic_fetch_add(&pc->ns_lookup, (int64_t)((ac_now() - t0) * 1e9));
    return P;
}

/* The hook's match: lookup's P without copying; count: the caller serves the rows itself, so the
 * walk counts (and stamps) as a lookup. */
static int hook_match(void *user, const int32_t *tokens, int L, int count) {
    prefix_att *a = user;
    ac_prefix_cache *pc = a->pc;
    const double t0 = count ? ac_now() : 0;
    int P = 0;
    if (L >= 2 && tokens) {
        pthread_rwlock_rdlock(&pc->lock);
        P = walk(pc, tokens, L - 1, NULL, 0);
        if (P >= pc->p.min_match) {
            if (count) walk(pc, tokens, P, NULL, 1);
        } else {
            P = 0;
        }
        pthread_rwlock_unlock(&pc->lock);
    }
    if (count) {
        atomic_fetch_add(&pc->lookups, 1);
        if (P) {
            atomic_fetch_add(&pc->hits, 1);
            atomic_fetch_add(&pc->reused, P);
        }
        atomic_fetch_add(&pc->computed, L - P);
        atomic_fetch_add(&pc->ns_lookup, (int64_t)((ac_now() - t0) * 1e9));
    }
    return P;
}

static void hook_insert(void *user, const int32_t *tokens, const ac_kv_rows *rows, int P) {
    (void)P;
    prefix_att *a = user;
    ac_prefix_cache *pc = a->pc;
    const int L = rows->L;
    if (rows->kvd != pc->kvd || rows->n_layer != pc->n_layer || rows->n_embd != pc->n_embd) return;
    if (L < pc->p.min_match) return; /* could never give a prefix of min_match tokens */
    const double t0 = ac_now();
    pthread_rwlock_wrlock(&pc->lock);
    pnode *nd = &pc->root;
    int pos = 0, added = 0, failed = 0;
    while (pos < L) {
        pnode *k = find_kid(nd, tokens[pos]);
        if (!k) {
            if (pos < rows->unfilled) { /* rows the caller did not fill (device-resident): never stored */
                failed = 1;
                break;
            }
            if ((int64_t)node_bytes(pc, L - pos, 0) > pc->p.max_bytes || /* could never fit */
                !(k = node_new(pc, tokens, pos, L - pos, rows->kv, rows->ld))) {
                failed = 1;
                break;
            }
            if (add_kid(pc, nd, k)) {
                node_free_tree(pc, k);
                failed = 1;
                break;
            }
            added = L - pos;
            break;
        }
        int m = 0;
        const int cap = AC_MIN(k->n, L - pos);
        while (m < cap && k->tok[m] == tokens[pos + m]) m++;
        if (m < k->n && pos + m < L && node_split(pc, k, m)) { /* (a sequence ending inside a run needs no split) */
            failed = 1;
            break;
        }
        atomic_store_explicit(&k->last_use, atomic_fetch_add(&pc->tick, 1) + 1, memory_order_relaxed);
        pos += m;
        nd = k;
    }
    if (added) {
        atomic_fetch_add(&pc->inserts, 1);
        atomic_fetch_add(&pc->stored, added);
    }
    if (failed) atomic_fetch_add(&pc->insert_failed, 1);
    evict_to_budget(pc);
    pthread_rwlock_unlock(&pc->lock);
    atomic_fetch_add(&pc->ns_insert, (int64_t)((ac_now() - t0) * 1e9));
}

static void hook_release(void *user) {
    prefix_att *a = user;
    ac_prefix_cache *pc = a->pc;
    pthread_mutex_lock(&pc->att_mu);
    if (a->prev) a->prev->next = a->next;
    else pc->atts = a->next;
    if (a->next) a->next->prev = a->prev;
    pthread_mutex_unlock(&pc->att_mu);
    free(a);
}

/* ---- persistence ----------------------------------------------------------------------------------
 * One file: a header of 80 bytes, then the nodes in preorder.
 *   header  magic "ACPFXv01", u32 version, n_layer, kvd, n_embd, pack, u32 0,
 *           u64 fingerprint[2] (the model's, as the map store's), u64 n_nodes, payload bytes,
 *           payload XXH64, header XXH64 (of the 72 bytes before it)
 *   node    i64 parent (preorder index, -1: the root), i32 n, i32 0, i32 tokens[n],
 *           f32 rows[n][n_layer*2*kvd + n_embd] (the node's layout)
 * Written to PATH.tmp.XXXXXX (util/atomic_file.h), fsync'd, renamed over PATH, directory fsync'd: a crash leaves
 * the old file or the new one. A file that fails any check is refused with AC_ERR_CACHE
 * naming the problem; the tree in memory is then unchanged. Host byte order. */
#define PFX_MAGIC "ACPFXv01"
#define PFX_VERSION 1u
#define PFX_HDR 80

typedef struct pfx_hdr {
    char magic[8];
    uint32_t version, n_layer, kvd, n_embd, pack, zero;
    uint64_t fp[2], n_nodes, payload, payload_hash, hdr_hash;
} pfx_hdr;
_Static_assert(sizeof(pfx_hdr) == PFX_HDR, "prefix file header layout");

static size_t tok_floats(const ac_prefix_cache *pc) { return (size_t)pc->n_layer * 2 * pc->kvd + pc->n_embd; }

/* preorder write of nd's subtree; idx: nd's preorder index (-1 root); *next: next index */
typedef struct pfx_writer {
    FILE *f;
    ac_xxh64_state h;
    uint64_t bytes, nodes;
    int err;
} pfx_writer;

static void pw_put(pfx_writer *w, const void *p, size_t n) {
    if (w->err) return;
    if (fwrite(p, 1, n, w->f) != n) w->err = 1;
    ac_xxh64_update(&w->h, p, n);
    w->bytes += n;
}

static void pw_tree(const ac_prefix_cache *pc, pfx_writer *w, const pnode *nd, int64_t idx) {
    for (int i = 0; i < nd->n_kid; i++) {
        const pnode *k = nd->kid[i];
        const int64_t me = (int64_t)w->nodes++;
        const int32_t n = k->n, pad = 0;
        pw_put(w, &idx, sizeof idx);
        pw_put(w, &n, sizeof n);
        pw_put(w, &pad, sizeof pad);
        pw_put(w, k->tok, (size_t)n * sizeof *k->tok);
        pw_put(w, k->rows, (size_t)n * tok_floats(pc) * sizeof(float));
        pw_tree(pc, w, k, me);
    }
}

int ac_prefix_save(ac_prefix_cache *pc, const char *path) {
    if (!pc || !path || !*path) return ac_err(AC_ERR_ARG, "ac_prefix_save: invalid argument");
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) return rc;
    pfx_hdr h;
    memset(&h, 0, sizeof h);
    if (fwrite(&h, 1, sizeof h, af.f) != sizeof h) rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af.tmp, strerror(errno));
    pfx_writer w = {af.f, {{0}}, 0, 0, 0};
    ac_xxh64_init(&w.h, 0);
    if (!rc) {
        pthread_rwlock_rdlock(&pc->lock);
        pw_tree(pc, &w, &pc->root, -1);
        pthread_rwlock_unlock(&pc->lock);
        if (w.err) rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af.tmp, strerror(errno));
    }
    if (!rc) {
        memcpy(h.magic, PFX_MAGIC, 8);
        h.version = PFX_VERSION, h.n_layer = (uint32_t)pc->n_layer, h.kvd = (uint32_t)pc->kvd;
        h.n_embd = (uint32_t)pc->n_embd, h.pack = (uint32_t)pc->model->pack;
        memcpy(h.fp, pc->fp, sizeof h.fp);
        h.n_nodes = w.nodes, h.payload = w.bytes, h.payload_hash = ac_xxh64_digest(&w.h);
        h.hdr_hash = ac_xxh64(&h, offsetof(pfx_hdr, hdr_hash), 0);
        if (fseek(af.f, 0, SEEK_SET) != 0 || fwrite(&h, 1, sizeof h, af.f) != sizeof h)
            rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af.tmp, strerror(errno));
    }
    if (rc) {
        ac_atomic_abort(&af);
        return rc;
    }
    return ac_atomic_commit(&af); /* fsync, rename over path, fsync of the directory */
}

/* a fresh tree from the file's payload, or an error naming what is wrong */
static int pfx_parse(ac_prefix_cache *pc, const char *path, const uint8_t *p, size_t len, uint64_t n_nodes, pnode *root) {
    const size_t tf = tok_floats(pc);
    pnode **all = NULL;
    if (n_nodes > len / 16 || !(all = AC_CALLOC(n_nodes ? n_nodes : 1, sizeof *all)))
        return n_nodes > len / 16 ? ac_err(AC_ERR_CACHE, "prefix cache file '%s': %llu nodes cannot fit in %zu bytes", path,
                                           (unsigned long long)n_nodes, len)
                                  : AC_ERR_NOMEM;
    size_t off = 0;
    int rc = AC_OK;
    for (uint64_t i = 0; i < n_nodes && !rc; i++) {
        int64_t parent;
        int32_t n;
        if (len - off < 16) {
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': truncated at node %llu", path, (unsigned long long)i);
            break;
        }
        memcpy(&parent, p + off, 8), memcpy(&n, p + off + 8, 4);
        off += 16;
        if (parent < -1 || parent >= (int64_t)i || n < 1 || (size_t)n > (len - off) / (4 + tf * 4)) {
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': node %llu is malformed (parent %lld, %d tokens)", path,
                        (unsigned long long)i, (long long)parent, (int)n);
            break;
        }
        const int32_t *tok = (const int32_t *)(p + off);
        for (int k = 0; k < n && !rc; k++)
            if (tok[k] < 0 || tok[k] >= pc->n_vocab) rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': node %llu has token id %d out of range", path, (unsigned long long)i, (int)tok[k]);
        if (rc) break;
        pnode *par = parent < 0 ? root : all[parent];
        if (find_kid(par, tok[0])) {
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': node %llu repeats a sibling's first token", path,
                        (unsigned long long)i);
            break;
        }
        const float *rows = (const float *)(p + off + (size_t)n * 4);
        pnode *nd = node_new(pc, tok, 0, n, rows, n);
        if (!nd || add_kid(pc, par, nd)) {
            if (nd) node_free_tree(pc, nd);
            rc = AC_ERR_NOMEM;
            break;
        }
        all[i] = nd;
        off += (size_t)n * (4 + tf * 4);
    }
    if (!rc && off != len) rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': %zu bytes past the last node", path, len - off);
    free(all);
    return rc;
}

/* free a tree built beside the live one (its root is not pc->root) */
static void fresh_free(ac_prefix_cache *pc, pnode *root) {
    for (int i = 0; i < root->n_kid; i++) node_free_tree(pc, root->kid[i]);
    free(root->kid);
    add_bytes(pc, -(int64_t)root->bytes); /* its child array, counted by add_kid */
    memset(root, 0, sizeof *root);
}

int ac_prefix_load(ac_prefix_cache *pc, const char *path) {
    if (!pc || !path || !*path) return ac_err(AC_ERR_ARG, "ac_prefix_load: invalid argument");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ac_err(AC_ERR_IO, "cannot open prefix cache file '%s': %s", path, strerror(errno));
    struct stat st;
    uint8_t *buf = NULL;
    int rc = AC_OK;
    if (fstat(fd, &st) != 0) rc = ac_err(AC_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    else if (st.st_size < PFX_HDR)
        rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': %lld bytes, shorter than its header", path, (long long)st.st_size);
    else if (!(buf = AC_MALLOC((size_t)st.st_size))) rc = AC_ERR_NOMEM;
    for (size_t got = 0; !rc && got < (size_t)st.st_size;) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) rc = ac_err(AC_ERR_IO, "cannot read '%s': %s", path, r < 0 ? strerror(errno) : "unexpected end");
        else got += (size_t)r;
    }
    close(fd);
    pfx_hdr h;
    if (!rc) {
        memcpy(&h, buf, sizeof h);
        const size_t len = (size_t)st.st_size - PFX_HDR;
        if (memcmp(h.magic, PFX_MAGIC, 8) != 0) rc = ac_err(AC_ERR_CACHE, "'%s' is not a prefix cache file (bad magic)", path);
        else if (ac_xxh64(&h, offsetof(pfx_hdr, hdr_hash), 0) != h.hdr_hash)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': header damaged (checksum mismatch)", path);
        else if (h.version != PFX_VERSION)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': version %u (this build reads %u)", path, h.version, PFX_VERSION);
        else if (h.n_layer != (uint32_t)pc->n_layer || h.kvd != (uint32_t)pc->kvd || h.n_embd != (uint32_t)pc->n_embd ||
                 memcmp(h.fp, pc->fp, sizeof h.fp) != 0)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s' was made with another model", path);
        else if (h.pack != (uint32_t)pc->model->pack)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s' was made with other weight arithmetic (exact f32 vs --fast bf16)", path);
        else if (h.payload != len)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': %zu bytes of nodes, the header says %llu (truncated or extended)",
                        path, len, (unsigned long long)h.payload);
        else if (ac_xxh64(buf + PFX_HDR, len, 0) != h.payload_hash)
            rc = ac_err(AC_ERR_CACHE, "prefix cache file '%s': nodes damaged (checksum mismatch)", path);
    }
    pnode fresh;
    memset(&fresh, 0, sizeof fresh);
    if (!rc && (rc = pfx_parse(pc, path, buf + PFX_HDR, (size_t)st.st_size - PFX_HDR, h.n_nodes, &fresh)) != AC_OK)
        fresh_free(pc, &fresh);
    free(buf);
    if (rc) return rc;
    /* swap it in: the old nodes go, the file's are the tree */
    pthread_rwlock_wrlock(&pc->lock);
    node_free_tree(pc, &pc->root);
    pc->root.kid = fresh.kid, pc->root.n_kid = fresh.n_kid, pc->root.cap_kid = fresh.cap_kid;
    for (int i = 0; i < fresh.n_kid; i++) fresh.kid[i]->parent = &pc->root;
    add_bytes(pc, -(int64_t)fresh.bytes); /* the root's child array is not counted */
    evict_to_budget(pc);
    pthread_rwlock_unlock(&pc->lock);
    return AC_OK;
}

/* ---- public API -------------------------------------------------------------------------------- */

int ac_prefix_cache_new(const ac_model *model, const ac_prefix_params *p, ac_prefix_cache **out) {
    if (!model || !out) return ac_err(AC_ERR_ARG, "ac_prefix_cache_new: NULL argument");
    *out = NULL;
    ac_prefix_params pp = p ? *p : ac_prefix_default_params();
    if (pp.max_bytes < 1) return ac_err(AC_ERR_ARG, "prefix cache: max_bytes %lld (must be >= 1)", (long long)pp.max_bytes);
    if (pp.min_match < 1) return ac_err(AC_ERR_ARG, "prefix cache: min_match %d (must be >= 1)", pp.min_match);
    ac_model_info info;
    int rc = ac_model_get_info(model, &info);
    if (rc) return rc;
    ac_prefix_cache *pc = AC_CALLOC(1, sizeof *pc);
    if (!pc) return AC_ERR_NOMEM;
    pc->model = model;
    pc->p = pp;
    pc->n_layer = info.n_layer;
    pc->kvd = info.n_head_kv * info.head_dim;
    pc->n_embd = info.n_embd;
    pc->n_vocab = info.n_vocab;
    ac_cache_model_fingerprint(model, pc->fp);
    if (pthread_rwlock_init(&pc->lock, NULL)) {
        free(pc);
        return ac_err(AC_ERR_NOMEM, "prefix cache: cannot create its lock");
    }
    if (pthread_mutex_init(&pc->att_mu, NULL)) {
        pthread_rwlock_destroy(&pc->lock);
        free(pc);
        return ac_err(AC_ERR_NOMEM, "prefix cache: cannot create its lock");
    }
    *out = pc;
    return AC_OK;
}

void ac_prefix_cache_free(ac_prefix_cache *pc) {
    if (!pc) return;
    pthread_mutex_lock(&pc->att_mu);
    for (prefix_att *a = pc->atts, *next; a; a = next) {
        next = a->next;
        ac_kv_hook cur;
        if (ac_ctx_get_kv_hook(a->ctx, &cur) && cur.user == a)
            ac_ctx_swap_kv_hook(a->ctx, NULL, NULL); /* detached without calling release (we free a here) */
        free(a);
    }
    pc->atts = NULL;
    pthread_mutex_unlock(&pc->att_mu);
    node_free_tree(pc, &pc->root);
    pthread_mutex_destroy(&pc->att_mu);
    pthread_rwlock_destroy(&pc->lock);
    free(pc);
}

int ac_ctx_attach_prefix(ac_ctx *ctx, ac_prefix_cache *pc) {
    if (!ctx) return ac_err(AC_ERR_ARG, "ac_ctx_attach_prefix: NULL context");
    if (!pc) {
        ac_ctx_set_kv_hook(ctx, NULL);
        return AC_OK;
    }
    if (ac_ctx_model(ctx) != pc->model)
        return ac_err(AC_ERR_ARG, "ac_ctx_attach_prefix: the prefix cache was made for another model than the context's");
    const char *be = ac_ctx_backend(ctx);
    if (!be || (strcmp(be, "cpu") && strcmp(be, "cuda"))) /* (the cuda backend: src/backends/cuda/cuda_ctx.c) */
        return ac_err(AC_ERR_UNSUPPORTED,
                      "ac_ctx_attach_prefix: the prefix cache runs on the cpu and cuda backends only (this context runs "
                      "on %s)",
                      be ? be : "?");
    prefix_att *a = AC_CALLOC(1, sizeof *a);
    if (!a) return AC_ERR_NOMEM;
    a->pc = pc;
    a->ctx = ctx;
    pthread_mutex_lock(&pc->att_mu);
    a->next = pc->atts;
    if (pc->atts) pc->atts->prev = a;
    pc->atts = a;
    pthread_mutex_unlock(&pc->att_mu);
    ac_kv_hook h = {a, hook_lookup, hook_insert, hook_release, hook_match};
    ac_ctx_set_kv_hook(ctx, &h); /* releases a previous attachment */
    return AC_OK;
}

int ac_prefix_clear(ac_prefix_cache *pc) {
    if (!pc) return ac_err(AC_ERR_ARG, "ac_prefix_clear: NULL cache");
    pthread_rwlock_wrlock(&pc->lock);
    node_free_tree(pc, &pc->root);
    pthread_rwlock_unlock(&pc->lock);
    return AC_OK;
}

int ac_prefix_get_stats(const ac_prefix_cache *cpc, ac_prefix_stats *s) {
    if (!cpc || !s) return ac_err(AC_ERR_ARG, "ac_prefix_get_stats: NULL argument");
    ac_prefix_cache *pc = (ac_prefix_cache *)cpc; /* atomics only */
    memset(s, 0, sizeof *s);
    s->lookups = atomic_load(&pc->lookups);
    s->hits = atomic_load(&pc->hits);
    s->tokens_reused = atomic_load(&pc->reused);
    s->tokens_computed = atomic_load(&pc->computed);
    s->inserts = atomic_load(&pc->inserts);
    s->tokens_stored = atomic_load(&pc->stored);
    s->evictions = atomic_load(&pc->evictions);
    s->insert_failed = atomic_load(&pc->insert_failed);
    s->bytes = atomic_load(&pc->bytes);
    s->nodes = atomic_load(&pc->nodes);
    s->max_bytes = pc->p.max_bytes;
    s->t_lookup = atomic_load(&pc->ns_lookup) * 1e-9;
    s->t_insert = atomic_load(&pc->ns_insert) * 1e-9;
    return AC_OK;
}

void ac_prefix_reset_stats(ac_prefix_cache *pc) {
    if (!pc) return;
    atomic_store(&pc->lookups, 0), atomic_store(&pc->hits, 0), atomic_store(&pc->reused, 0);
    atomic_store(&pc->computed, 0), atomic_store(&pc->inserts, 0), atomic_store(&pc->stored, 0);
    atomic_store(&pc->evictions, 0), atomic_store(&pc->insert_failed, 0);
    atomic_store(&pc->ns_lookup, 0), atomic_store(&pc->ns_insert, 0);
}
