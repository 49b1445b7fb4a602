/* tok_memo.c — the BPE word memo (tok_memo.h): open addressing on a 64-bit
 * hash of the word, keys and ids in two growing arenas; the table doubles at
 * half load. Entries are never removed: a memo lives for one group of related
 * tokenizations (ac_tok_memo_new ... ac_tok_memo_free) and stops growing at
 * AC_TOK_MEMO_MAX_BYTES. */
#include "tok_memo.h"
#include "tokenizer.h"
#include "util/common.h"

#include <stdlib.h>
#include <string.h>

typedef struct memo_slot {
    uint64_t h;        /* hash of the word; 0: empty slot */
    uint32_t key, len; /* word bytes at keys + key */
    uint32_t ids, n;   /* its ids at ids + ids */
} memo_slot;

struct ac_tok_memo {
    const void *vocab; /* the vocab its ids belong to (set by the first use) */
    memo_slot *slot;   /* [mask + 1] */
    size_t mask, used;
    char *keys;        /* [nkeys] */
    size_t nkeys, cap_keys;
    int32_t *ids;      /* [nids] */
    size_t nids, cap_ids;
};

static uint64_t word_hash(const char *w, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)w[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h ? h : 1; /* 0 marks an empty slot */
}

int ac_tok_memo_new(ac_tok_memo **out) {
    if (!out) return ac_err(AC_ERR_ARG, "ac_tok_memo_new: NULL argument");
    ac_tok_memo *m = AC_CALLOC(1, sizeof *m);
    if (m) m->slot = AC_CALLOC(256, sizeof *m->slot);
    if (!m || !m->slot) {
        free(m);
        *out = NULL;
        return ac_err(AC_ERR_NOMEM, "out of memory for a tokenizer memo");
    }
    m->mask = 255;
    *out = m;
    return AC_OK;
}

void ac_tok_memo_free(ac_tok_memo *m) {
    if (!m) return;
    free(m->slot);
    free(m->keys);
    free(m->ids);
    free(m);
}

int tok_memo_bind(ac_tok_memo *m, const void *vocab) {
    if (!m->vocab) m->vocab = vocab;
    return m->vocab == vocab;
}

/* the slot of w: its entry, or the empty slot where it would go */
static memo_slot *find(const ac_tok_memo *m, uint64_t h, const char *w, size_t len) {
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        memo_slot *s = &m->slot[i];
        if (!s->h || (s->h == h && s->len == len && !memcmp(m->keys + s->key, w, len))) return s;
    }
}

const int32_t *tok_memo_get(const ac_tok_memo *m, const char *w, size_t len, int *n) {
    const memo_slot *s = find(m, word_hash(w, len), w, len);
    if (!s->h) return NULL;
    *n = (int)s->n;
    return m->ids + s->ids;
}

static int grow_to(void **p, size_t *cap, size_t need, size_t esz) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * esz);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

static int rehash(ac_tok_memo *m) {
    const size_t nslot = 2 * (m->mask + 1);
    memo_slot *old = m->slot, *ns = AC_CALLOC(nslot, sizeof *ns);
    if (!ns) return 0;
    const size_t omask = m->mask;
    m->slot = ns;
    m->mask = nslot - 1;
    for (size_t i = 0; i <= omask; i++)
        if (old[i].h) {
            size_t j = old[i].h & m->mask;
            while (ns[j].h) j = (j + 1) & m->mask;
            ns[j] = old[i];
        }
    free(old);
    return 1;
}

void tok_memo_put(ac_tok_memo *m, const char *w, size_t len, const int32_t *ids, int n) {
    const size_t bytes = (m->mask + 1) * sizeof *m->slot + m->cap_keys + m->cap_ids * sizeof *m->ids;
    if (n < 0 || bytes + len + (size_t)n * sizeof *ids > AC_TOK_MEMO_MAX_BYTES || len > UINT32_MAX / 2) return;
    if (2 * (m->used + 1) > m->mask + 1 && !rehash(m)) return;
    const uint64_t h = word_hash(w, len);
    memo_slot *s = find(m, h, w, len);
    if (s->h) return; /* (already stored) */
    if (!grow_to((void **)&m->keys, &m->cap_keys, m->nkeys + len, 1) ||
        !grow_to((void **)&m->ids, &m->cap_ids, m->nids + (size_t)n, sizeof *m->ids))
        return;
    memcpy(m->keys + m->nkeys, w, len);
    if (n) memcpy(m->ids + m->nids, ids, (size_t)n * sizeof *ids);
    *s = (memo_slot){h, (uint32_t)m->nkeys, (uint32_t)len, (uint32_t)m->nids, (uint32_t)n};
    m->nkeys += len;
    m->nids += (size_t)n;
    m->used++;
}
