/* test_map_lru.c — the CUDA backend's device map cache bookkeeping
 * (src/backends/cuda/map_lru.c), on the CPU with malloc as the "device": a
 * repeated identity is found (same block, nothing new allocated), the budget
 * is never exceeded, least recently used blocks go first, blocks used in the
 * current call are never evicted, a block is never served for an identity
 * whose size changed, a failed allocation is refused without a leak, and a
 * long random run agrees with a plain reference implementation, every block
 * served holding the bytes of its identity. Runs without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backends/cuda/map_lru.h"
#include "backends/cuda/prefix_key.h"

#include <stdlib.h>
#include <string.h>

/* ---- the "device": malloc, counted; a block holds its identity in its first 24 bytes ---- */
typedef struct dev {
    long live;         /* blocks allocated and not freed */
    size_t live_bytes;
    int fail;          /* next allocations to fail */
    long allocs;
} dev;

static int dev_alloc(void *u, void **p, size_t bytes) {
    dev *d = u;
    if (d->fail > 0) {
        d->fail--;
        return 1;
    }
    size_t *b = malloc(bytes < 32 ? 32 + sizeof(size_t) : bytes + sizeof(size_t));
    if (!b) return 1;
    b[0] = bytes;
    *p = b + 1;
    d->live++, d->live_bytes += bytes, d->allocs++;
    return 0;
}
static void dev_free(void *u, void *p) {
    dev *d = u;
    assert_non_null(p);
    size_t *b = (size_t *)p - 1;
    d->live--, d->live_bytes -= b[0];
    free(b);
}
static void fill(void *p, uint64_t k0, uint64_t k1, int layer) { /* "the upload" */
    uint64_t w[3] = {k0, k1, (uint64_t)layer};
    memcpy(p, w, sizeof w);
}
static int holds(const void *p, uint64_t k0, uint64_t k1, int layer) {
    uint64_t w[3];
    memcpy(w, p, sizeof w);
    return w[0] == k0 && w[1] == k1 && w[2] == (uint64_t)layer;
}

static void test_repeat_and_budget(void **state) {
    (void)state;
    dev d = {0};
    ac_map_lru c;
    ac_map_lru_init(&c, 4096, dev_alloc, dev_free, &d);
    ac_map_lru_begin_call(&c);
    assert_null(ac_map_lru_find(&c, 1, 2, 0, 1000));
    void *a = ac_map_lru_insert(&c, 1, 2, 0, 1000);
    assert_non_null(a);
    fill(a, 1, 2, 0);
    assert_ptr_equal(ac_map_lru_find(&c, 1, 2, 0, 1000), a); /* same call: found */
    assert_null(ac_map_lru_find(&c, 1, 2, 1, 1000));          /* another layer: another block */
    ac_map_lru_begin_call(&c);
    const long allocs = d.allocs;
    assert_ptr_equal(ac_map_lru_find(&c, 1, 2, 0, 1000), a); /* the next call: found, nothing allocated */
    assert_int_equal(d.allocs, allocs);
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.inserts, 1);
    assert_int_equal(st.bytes_inserted, 1000);
    assert_int_equal(st.resident, 1024); /* rounded up to 256 */
    /* fill to the budget: 4 blocks of 1024; a fifth evicts the least recently used (not a) */
    ac_map_lru_begin_call(&c);
    void *b = ac_map_lru_insert(&c, 3, 0, 0, 1024), *x = ac_map_lru_insert(&c, 4, 0, 0, 1024);
    void *y = ac_map_lru_insert(&c, 5, 0, 0, 1024);
    assert_true(b && x && y);
    ac_map_lru_begin_call(&c);
    assert_ptr_equal(ac_map_lru_find(&c, 1, 2, 0, 1000), a); /* a used again: 3 is now the oldest */
    assert_non_null(ac_map_lru_insert(&c, 6, 0, 0, 1024));
    ac_map_lru_get_stats(&c, &st);
    assert_true(st.resident <= st.budget);
    assert_int_equal(st.evictions, 1);
    assert_null(ac_map_lru_find(&c, 3, 0, 0, 1024));
    assert_ptr_equal(ac_map_lru_find(&c, 1, 2, 0, 1000), a);
    /* bigger than the budget: refused, nothing evicted */
    assert_null(ac_map_lru_insert(&c, 7, 0, 0, 5000));
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.refused, 1);
    assert_int_equal(d.live, st.entries);
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
}

/* blocks of the current call are never evicted: an insert that needs them refuses */
static void test_pinned(void **state) {
    (void)state;
    dev d = {0};
    ac_map_lru c;
    ac_map_lru_init(&c, 2048, dev_alloc, dev_free, &d);
    ac_map_lru_begin_call(&c);
    assert_non_null(ac_map_lru_insert(&c, 1, 0, 0, 1024));
    assert_non_null(ac_map_lru_insert(&c, 2, 0, 0, 1024));
    assert_null(ac_map_lru_insert(&c, 3, 0, 0, 1024)); /* both pinned */
    ac_map_lru_begin_call(&c);
    assert_non_null(ac_map_lru_find(&c, 2, 0, 0, 1024)); /* 2 pinned again; 1 is not */
    assert_non_null(ac_map_lru_insert(&c, 3, 0, 0, 1024));
    assert_null(ac_map_lru_find(&c, 1, 0, 0, 1024));
    assert_non_null(ac_map_lru_find(&c, 2, 0, 0, 1024));
    /* a smaller budget evicts the unpinned only */
    ac_map_lru_begin_call(&c);
    ac_map_lru_find(&c, 3, 0, 0, 1024);
    ac_map_lru_set_budget(&c, 1024);
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.resident, 1024);
    assert_non_null(ac_map_lru_find(&c, 3, 0, 0, 1024));
    ac_map_lru_set_budget(&c, 0); /* budget 0: caches nothing new */
    ac_map_lru_begin_call(&c);
    ac_map_lru_set_budget(&c, 0);
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.entries, 0);
    assert_null(ac_map_lru_insert(&c, 9, 0, 0, 256));
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
}

/* an identity whose size changed is never served its old block; allocation failures are refusals */
static void test_stale_and_failures(void **state) {
    (void)state;
    dev d = {0};
    ac_map_lru c;
    ac_map_lru_init(&c, 1 << 20, dev_alloc, dev_free, &d);
    ac_map_lru_begin_call(&c);
    assert_non_null(ac_map_lru_insert(&c, 1, 1, 3, 4096));
    ac_map_lru_begin_call(&c);
    assert_null(ac_map_lru_find(&c, 1, 1, 3, 2048)); /* same identity, other size: dropped */
    assert_int_equal(d.live, 0);
    assert_null(ac_map_lru_find(&c, 1, 1, 3, 4096));
    d.fail = 1; /* the device is out of memory, nothing to give back: refused */
    assert_null(ac_map_lru_insert(&c, 2, 0, 0, 512));
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.entries, 0);
    assert_non_null(ac_map_lru_insert(&c, 2, 0, 0, 512));
    ac_map_lru_begin_call(&c);
    d.fail = 1; /* out of memory again: the unpinned block is given back and the allocation retried */
    assert_non_null(ac_map_lru_insert(&c, 3, 0, 0, 512));
    assert_null(ac_map_lru_find(&c, 2, 0, 0, 512));
    assert_int_equal(d.live, 1);
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
}

/* ---- a long random run against a plain reference -------------------------------------------------------------- */
typedef struct ref_ent {
    uint64_t k0;
    int layer;
    size_t bytes, acct;
    uint64_t stamp, call;
} ref_ent;

enum { REF_MAX = 4096 };

static void test_random_vs_reference(void **state) {
    (void)state;
    dev d = {0};
    ac_map_lru c;
    const size_t budget = 64 * 1024;
    ac_map_lru_init(&c, budget, dev_alloc, dev_free, &d);
    ref_ent *r = calloc(REF_MAX, sizeof *r);
    int nr = 0;
    size_t res = 0;
    uint64_t stamp = 0, call = 1, rng = 12345;
    assert_non_null(r);
    for (int op = 0; op < 200000; op++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if (rng % 7 == 0) {
            ac_map_lru_begin_call(&c);
            call++;
            continue;
        }
        const uint64_t k0 = (rng >> 8) % 97;
        const int layer = (int)((rng >> 20) % 3);
        const size_t bytes = 256 + ((k0 * 37 + (uint64_t)layer * 11 + ((rng >> 40) % 50 == 0)) % 16) * 300;
        int j = -1;
        for (int i = 0; i < nr; i++)
            if (r[i].k0 == k0 && r[i].layer == layer) j = i;
        /* the reference find */
        int want_hit = j >= 0 && r[j].bytes == bytes;
        if (j >= 0 && !want_hit && r[j].call != call) { /* stale size: dropped */
            res -= r[j].acct;
            r[j] = r[--nr];
            j = -1;
        }
        void *p = ac_map_lru_find(&c, k0, 77, layer, bytes);
        assert_int_equal(p != NULL, want_hit);
        if (want_hit) {
            assert_true(holds(p, k0, 77, layer));
            r[j].stamp = ++stamp, r[j].call = call;
            continue;
        }
        /* the reference insert */
        const size_t acct = (bytes + 255) & ~(size_t)255;
        int ok = 1;
        if (j >= 0) ok = 0; /* pinned under another size */
        while (ok && res + acct > budget) {
            int v = -1;
            for (int i = 0; i < nr; i++)
                if (v < 0 || r[i].stamp < r[v].stamp) v = i;
            if (v < 0 || r[v].call == call) ok = 0;
            else res -= r[v].acct, r[v] = r[--nr];
        }
        p = ac_map_lru_insert(&c, k0, 77, layer, bytes);
        assert_int_equal(p != NULL, ok);
        if (ok) {
            fill(p, k0, 77, layer);
            assert_true(nr < REF_MAX);
            r[nr++] = (ref_ent){k0, layer, bytes, acct, ++stamp, call};
            res += acct;
        }
        ac_map_lru_stats st;
        ac_map_lru_get_stats(&c, &st);
        assert_true(st.resident <= budget);
        assert_int_equal(st.resident, res);
        assert_int_equal(st.entries, nr);
        assert_int_equal(d.live, nr);
    }
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_true(st.hits > 1000 && st.evictions > 1000 && st.refused > 0);
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
    free(r);
}

/* a failed call's blocks (their uploads may not have happened) are dropped; the ones it found stay */
static void test_abort_call(void **state) {
    (void)state;
    dev d = {0};
    ac_map_lru c;
    ac_map_lru_init(&c, 1 << 20, dev_alloc, dev_free, &d);
    ac_map_lru_begin_call(&c);
    void *a = ac_map_lru_insert(&c, 1, 0, 0, 512);
    assert_non_null(a);
    ac_map_lru_begin_call(&c);
    assert_ptr_equal(ac_map_lru_find(&c, 1, 0, 0, 512), a);
    assert_non_null(ac_map_lru_insert(&c, 2, 0, 0, 512));
    assert_non_null(ac_map_lru_insert(&c, 3, 0, 1, 512));
    ac_map_lru_abort_call(&c);
    ac_map_lru_begin_call(&c);
    assert_ptr_equal(ac_map_lru_find(&c, 1, 0, 0, 512), a);
    assert_null(ac_map_lru_find(&c, 2, 0, 0, 512));
    assert_null(ac_map_lru_find(&c, 3, 0, 1, 512));
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.resident, 512);
    assert_int_equal(d.live, 1);
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
}

/* The device prefix cache's use (cuda_prefix_cache.cu): blocks keyed by ac_prefix_key(tokens, P) with
 * P as the layer. Keys: equal for equal prefixes, different when one token, the length or the order
 * differs, none equal among many random prefixes; peek neither counts nor drops, pins like find; a
 * block found by the context's question survives the same call's inserts under a tiny budget. */
static int cmp_key(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : x[1] != y[1] ? (x[1] < y[1] ? -1 : 1) : 0;
}
static void test_prefix_keys(void **state) {
    (void)state;
    int32_t t[300], u[300];
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < 300; i++) s ^= s << 13, s ^= s >> 7, s ^= s << 17, t[i] = (int32_t)(s % 32000);
    uint64_t k[2], k2[2];
    ac_prefix_key(t, 200, k);
    memcpy(u, t, sizeof u);
    ac_prefix_key(u, 200, k2);
    assert_true(k[0] == k2[0] && k[1] == k2[1]);
    u[250] ^= 1; /* past P: the same key */
    ac_prefix_key(u, 200, k2);
    assert_true(k[0] == k2[0] && k[1] == k2[1]);
    for (int pos = 0; pos < 200; pos += 37) { /* one token of the prefix: both words differ */
        memcpy(u, t, sizeof u);
        u[pos] += 1;
        ac_prefix_key(u, 200, k2);
        assert_true(k[0] != k2[0] && k[1] != k2[1]);
    }
    memcpy(u, t, sizeof u);
    u[10] = t[11], u[11] = t[10]; /* order */
    if (t[10] != t[11]) {
        ac_prefix_key(u, 200, k2);
        assert_true(k[0] != k2[0] || k[1] != k2[1]);
    }
    ac_prefix_key(t, 199, k2); /* length */
    assert_true(k[0] != k2[0] && k[1] != k2[1]);
    int32_t z[4] = {0, 0, 0, 0}; /* zero tokens: lengths still apart */
    uint64_t kz[5][2];
    for (int P = 0; P <= 4; P++) ac_prefix_key(z, P, kz[P]);
    for (int a = 0; a <= 4; a++)
        for (int b = a + 1; b <= 4; b++) assert_true(kz[a][0] != kz[b][0] && kz[a][1] != kz[b][1]);
    enum { N = 20000 };
    uint64_t(*all)[2] = malloc(N * sizeof *all);
    assert_non_null(all);
    for (int i = 0; i < N; i++) { /* every prefix of 100 random sequences, and 200 single-token edits */
        const int seq = i / 200, P = 1 + i % 200;
        int32_t v[200];
        for (int j = 0; j < 200; j++) v[j] = (int32_t)((t[j] + seq * 7919) % 32000);
        ac_prefix_key(v, P, all[i]);
    }
    qsort(all, N, sizeof *all, cmp_key);
    for (int i = 1; i < N; i++) assert_true(all[i][0] != all[i - 1][0] || all[i][1] != all[i - 1][1]);
    free(all);

    dev d = {0};
    ac_map_lru c;
    ac_map_lru_init(&c, 3 * 1024, dev_alloc, dev_free, &d);
    ac_map_lru_begin_call(&c);
    ac_prefix_key(t, 100, k);
    assert_null(ac_map_lru_find(&c, k[0], k[1], 100, 1024)); /* the context's question: a miss */
    assert_null(ac_map_lru_peek(&c, k[0], k[1], 100, 1024)); /* the forward's: not counted */
    void *a = ac_map_lru_insert(&c, k[0], k[1], 100, 1024);
    assert_non_null(a);
    assert_ptr_equal(ac_map_lru_peek(&c, k[0], k[1], 100, 1024), a); /* a second sequence with it: no new block */
    ac_map_lru_stats st;
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.misses, 1), assert_int_equal(st.hits, 0), assert_int_equal(st.inserts, 1);
    ac_map_lru_begin_call(&c);
    assert_ptr_equal(ac_map_lru_find(&c, k[0], k[1], 100, 1024), a); /* next call: a device hit */
    ac_prefix_key(t, 99, k2);
    assert_null(ac_map_lru_peek(&c, k2[0], k2[1], 99, 1024)); /* another length: never a's */
    assert_null(ac_map_lru_peek(&c, k[0], k[1], 100, 2048));  /* another size: never a's, and kept */
    for (uint64_t i = 1; i <= 4; i++) /* fills past the budget: a is pinned, others go */
        ac_map_lru_insert(&c, i, i, 7, 1024);
    assert_ptr_equal(ac_map_lru_peek(&c, k[0], k[1], 100, 1024), a);
    ac_map_lru_get_stats(&c, &st);
    assert_int_equal(st.hits, 1), assert_int_equal(st.misses, 1);
    assert_true(st.resident <= 3 * 1024);
    ac_map_lru_clear(&c);
    assert_int_equal(d.live, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeat_and_budget),
        cmocka_unit_test(test_pinned),
        cmocka_unit_test(test_stale_and_failures),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_abort_call),
        cmocka_unit_test(test_prefix_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
