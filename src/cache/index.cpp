// index.cpp — the C interface of index.h over FAISS. Every entry point catches
// all C++ exceptions (AC_TRY/AC_CATCH) and turns them into AC_ERR_* codes.
#include "cache/index.h"
#include "cache/hash.h"
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "cache/index_scan.h"
extern "C" {
#include "util/common.h" /* a C header without extern "C" guards */
#include "util/atomic_file.h"
#include "util/pool.h"
#include "util/fp16.h"
}

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include <algorithm>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h> /* _mm_prefetch (without -march=native nothing else includes it) */
#endif
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <memory>
#include <new>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <omp.h>

namespace {

const char kMagic[8] = {'A', 'C', 'I', 'N', 'D', 'E', 'X', '1'};
const uint32_t kVersion = 1;
const uint64_t kMaxFile = (uint64_t)1 << 40;

struct FileHeader {
    char magic[8];
    uint32_t version;
    uint32_t kind, metric, dim, nlist, nprobe, hnsw_m, ef_construction, ef_search;
    uint32_t reserved0;
    uint64_t ntotal;
    uint64_t payload_bytes;
    uint64_t payload_hash; // xxh64 of the FAISS bytes, seed 0
    uint64_t reserved[2];
    uint64_t header_hash; // xxh64 of the bytes before it, seed 0
};
static_assert(sizeof(FileHeader) == 96, "index file header layout");

} // namespace

struct ac_index {
    ac_index_params p;
    faiss::Index *top = nullptr;       // owns everything below
    faiss::IndexIVF *ivf = nullptr;    // IVF view (not owned)
    faiss::IndexHNSW *hnsw = nullptr;  // HNSW view (not owned)
    // Flat kind: an f16 copy of the stored vectors for the scan of a few
    // queries, in blocks of 16 vectors stored element-major ([n/16][dim][16]:
    // element j of the 16 vectors side by side), so one FMA serves 16 vectors
    // and no horizontal sums are needed; sc_sq, sc_norm [n]: |x|^2 and |x| of
    // the f32 vectors. See flat_search for how the results stay exact.
    uint16_t *sc = nullptr; // huge pages (AC_HUGE_ALLOC): read cold on every lookup
    size_t sc_cap = 0;      // elements allocated
    std::vector<float> sc_sq, sc_norm;
    float sc_max_norm = 0;
    int64_t sc_count = 0;
    bool sc_bad = false; // a value beyond f16's range: no scan copy
    mutable std::atomic<int64_t> sc_queries{0}, sc_unproven{0}, sc_recomputed{0}; // see ac_index_scan_stats
    ~ac_index() {
        delete top;
        free(sc);
    }
};

#define AC_TRY try {
#define AC_CATCH(op)                                                                                \
    }                                                                                                 \
    catch (const std::bad_alloc &) {                                                                  \
        return ac_err(AC_ERR_NOMEM, "index %s: out of memory", op);                                 \
    }                                                                                                 \
    catch (const faiss::FaissException &e) {                                                         \
        return ac_err(AC_ERR_INTERNAL, "index %s: faiss: %s", op, e.what());                        \
    }                                                                                                 \
    catch (const std::exception &e) {                                                                 \
        return ac_err(AC_ERR_INTERNAL, "index %s: %s", op, e.what());                               \
    }                                                                                                 \
    catch (...) {                                                                                     \
        return ac_err(AC_ERR_INTERNAL, "index %s: unknown C++ exception", op);                      \
    }

static faiss::MetricType faiss_metric(int m) {
    return m == AC_METRIC_COSINE ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2;
}

static int check_params(const ac_index_params *p) {
    if (!p) return ac_err(AC_ERR_ARG, "index: NULL params");
    if (p->kind < AC_INDEX_FLAT || p->kind > AC_INDEX_HNSW) return ac_err(AC_ERR_ARG, "index: unknown kind %d", p->kind);
    if (p->metric != AC_METRIC_COSINE && p->metric != AC_METRIC_L2)
        return ac_err(AC_ERR_ARG, "index: unknown metric %d", p->metric);
    if (p->dim < 1 || p->dim > 65536) return ac_err(AC_ERR_ARG, "index: dim %d out of range 1..65536", p->dim);
    if (p->kind == AC_INDEX_IVF_FLAT && (p->nlist < 1 || p->nlist > (1 << 24) || p->nprobe < 1))
        return ac_err(AC_ERR_ARG, "index: IVF needs nlist in 1..2^24 and nprobe >= 1 (got %d, %d)", p->nlist, p->nprobe);
    if (p->kind == AC_INDEX_HNSW && (p->hnsw_m < 2 || p->hnsw_m > 512 || p->ef_construction < 1 || p->ef_search < 1))
        return ac_err(AC_ERR_ARG, "index: HNSW needs M in 2..512, efConstruction and efSearch >= 1 (got %d, %d, %d)",
                      p->hnsw_m, p->ef_construction, p->ef_search);
    return AC_OK;
}

// Normalised copy for cosine, or the input itself for L2. x: [n][dim].
static const float *prepare(const ac_index *idx, const float *x, int64_t n, std::vector<float> &buf) {
    if (idx->p.metric != AC_METRIC_COSINE) return x;
    size_t d = (size_t)idx->p.dim;
    buf.assign(x, x + (size_t)n * d);
    for (int64_t i = 0; i < n; i++) {
        float *v = buf.data() + (size_t)i * d;
        double ss = 0;
        for (size_t j = 0; j < d; j++) ss += (double)v[j] * v[j];
        if (ss > 0) {
            float inv = (float)(1.0 / std::sqrt(ss));
            for (size_t j = 0; j < d; j++) v[j] *= inv;
        }
    }
    return buf.data();
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite(x[i])) return 0;
    return 1;
}

extern "C" {

static void sync_scan(ac_index *idx);

ac_index_params ac_index_default_params(int kind, int dim) {
    ac_index_params p;
    p.kind = kind;
    p.metric = AC_METRIC_COSINE;
    p.dim = dim;
    p.nlist = 256;
    p.nprobe = 8;
    p.hnsw_m = 32;
    p.ef_construction = 80;
    p.ef_search = 64;
    return p;
}

int ac_index_create(const ac_index_params *p, ac_index **out) {
    if (!out) return ac_err(AC_ERR_ARG, "index: NULL out");
    *out = nullptr;
    int rc = check_params(p);
    if (rc) return rc;
    AC_TRY
    std::unique_ptr<ac_index> idx(new ac_index);
    idx->p = *p;
    faiss::MetricType m = faiss_metric(p->metric);
    switch (p->kind) {
    case AC_INDEX_FLAT: {
        faiss::Index *flat = m == faiss::METRIC_INNER_PRODUCT ? (faiss::Index *)new faiss::IndexFlatIP(p->dim)
                                                               : (faiss::Index *)new faiss::IndexFlatL2(p->dim);
        auto *map = new faiss::IndexIDMap(flat);
        map->own_fields = true;
        idx->top = map;
        break;
    }
    case AC_INDEX_IVF_FLAT: {
        faiss::Index *q = m == faiss::METRIC_INNER_PRODUCT ? (faiss::Index *)new faiss::IndexFlatIP(p->dim)
                                                            : (faiss::Index *)new faiss::IndexFlatL2(p->dim);
        auto *ivf = new faiss::IndexIVFFlat(q, p->dim, (size_t)p->nlist, m);
        ivf->own_fields = true;
        ivf->nprobe = (size_t)p->nprobe;
        idx->top = ivf;
        idx->ivf = ivf;
        break;
    }
    case AC_INDEX_HNSW: {
        auto *h = new faiss::IndexHNSWFlat(p->dim, p->hnsw_m, m);
        h->hnsw.efConstruction = p->ef_construction;
        h->hnsw.efSearch = p->ef_search;
        auto *map = new faiss::IndexIDMap(h);
        map->own_fields = true;
        idx->top = map;
        idx->hnsw = h;
        break;
    }
    }
    *out = idx.release();
    return AC_OK;
    AC_CATCH("create")
}

void ac_index_free(ac_index *idx) {
    try {
        delete idx;
    } catch (...) {
    }
}

int ac_index_train(ac_index *idx, const float *x, int64_t n) {
    if (!idx || (!x && n > 0) || n < 0) return ac_err(AC_ERR_ARG, "index train: bad arguments");
    if (!idx->ivf) return AC_OK;
    if (n < idx->p.nlist)
        return ac_err(AC_ERR_ARG, "index train: IVF with nlist %d needs at least %d training vectors, got %lld",
                      idx->p.nlist, idx->p.nlist, (long long)n);
    if (!all_finite(x, (size_t)n * (size_t)idx->p.dim)) return ac_err(AC_ERR_ARG, "index train: non-finite value");
    AC_TRY
    std::vector<float> buf;
    idx->top->train(n, prepare(idx, x, n, buf));
    return AC_OK;
    AC_CATCH("train")
}

int ac_index_is_trained(const ac_index *idx) { return idx && idx->top->is_trained; }
int64_t ac_index_ntotal(const ac_index *idx) { return idx ? (int64_t)idx->top->ntotal : 0; }
int ac_index_dim(const ac_index *idx) { return idx ? idx->p.dim : 0; }
void ac_index_get_params(const ac_index *idx, ac_index_params *p) { *p = idx->p; }

int ac_index_set_search(ac_index *idx, int nprobe, int ef_search) {
    if (!idx) return ac_err(AC_ERR_ARG, "index: NULL");
    if (nprobe > 0) {
        idx->p.nprobe = nprobe;
        if (idx->ivf) idx->ivf->nprobe = (size_t)nprobe;
    }
    if (ef_search > 0) {
        idx->p.ef_search = ef_search;
        if (idx->hnsw) idx->hnsw->hnsw.efSearch = ef_search;
    }
    return AC_OK;
}

int ac_index_add(ac_index *idx, const float *x, const int64_t *ids, int64_t n) {
    if (!idx || (!x && n > 0) || n < 0) return ac_err(AC_ERR_ARG, "index add: bad arguments");
    if (n == 0) return AC_OK;
    if (!idx->top->is_trained) return ac_err(AC_ERR_ARG, "index add: IVF index not trained yet (call ac_index_train)");
    if (!all_finite(x, (size_t)n * (size_t)idx->p.dim)) return ac_err(AC_ERR_ARG, "index add: non-finite value");
    AC_TRY
    std::vector<float> buf;
    const float *v = prepare(idx, x, n, buf);
    std::vector<faiss::Index::idx_t> seq;
    const faiss::Index::idx_t *xid = (const faiss::Index::idx_t *)ids;
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "idx_t is 64-bit");
    if (!ids) {
        seq.resize((size_t)n);
        for (int64_t i = 0; i < n; i++) seq[(size_t)i] = idx->top->ntotal + i;
        xid = seq.data();
    }
    idx->top->add_with_ids(n, v, xid);
    sync_scan(idx);
    return AC_OK;
    AC_CATCH("add")
}

// Exact flat search of a few queries on the calling thread: Debian's generic
// libfaiss build computes ~1-3 GFLOP/s in its distance loops (measured: 255 us
// for one 128-d query over 3,000 entries, which is 5-9% of a MiniLM forward);
// this scan over the same stored vectors (an f16 pass and a proof, kernels
// per CPU level in index_scan.h) takes ~20 us with AVX-512. Same results:
// similarity = inner product (cosine, normalised vectors) or -||q - x||^2,
// best first, ties to the lower position, then mapped through the id map.

// Bring the f16 scan copy up to the flat index's vectors (after add / load).
// A value beyond f16's range drops the copy (the f32 scan serves).
static void sync_scan(ac_index *idx) {
    const auto *map = dynamic_cast<const faiss::IndexIDMap *>(idx->top);
    const auto *flat = map ? dynamic_cast<const faiss::IndexFlat *>(map->index) : nullptr;
    if (!flat || idx->sc_bad) return;
    const float *xb = flat->get_xb();
    const int64_t n = flat->ntotal;
    const size_t d = (size_t)flat->d;
    const size_t need = (size_t)((n + 15) / 16) * 16 * d;
    if (need > idx->sc_cap) {
        const size_t cap = std::max(need, 2 * idx->sc_cap);
        uint16_t *nsc = (uint16_t *)AC_HUGE_ALLOC(cap * sizeof(uint16_t));
        if (!nsc) throw std::bad_alloc();
        if (idx->sc) std::memcpy(nsc, idx->sc, idx->sc_cap * sizeof(uint16_t));
        std::memset(nsc + idx->sc_cap, 0, (cap - idx->sc_cap) * sizeof(uint16_t));
        free(idx->sc);
        idx->sc = nsc;
        idx->sc_cap = cap;
    }
    idx->sc_sq.resize((size_t)n);
    idx->sc_norm.resize((size_t)n);
    for (int64_t i = idx->sc_count; i < n; i++) {
        uint16_t *blk = idx->sc + (size_t)(i / 16) * 16 * d;
        const float *x = xb + (size_t)i * d;
        double nn = 0;
        for (size_t j = 0; j < d; j++) {
            if (!(std::fabs(x[j]) < 65504.0f)) {
                idx->sc_bad = true;
                free(idx->sc);
                idx->sc = nullptr;
                idx->sc_cap = 0;
                return;
            }
            blk[j * 16 + (size_t)(i % 16)] = ac_fp32_to_fp16(x[j]);
            nn += (double)x[j] * x[j];
        }
        idx->sc_sq[(size_t)i] = (float)nn;
        idx->sc_norm[(size_t)i] = (float)std::sqrt(nn);
        idx->sc_max_norm = std::max(idx->sc_max_norm, (float)std::sqrt(nn));
    }
    idx->sc_count = n;
}

// Insert (v, i) into the best-first list s/l of capacity k holding *have.
static inline void topk_push(float *s, faiss::Index::idx_t *l, int k, int *have, float v, faiss::Index::idx_t i) {
    if (*have == k && !(v > s[k - 1])) return;
    int p = *have < k ? (*have)++ : k - 1;
    while (p > 0 && v > s[p - 1]) {
        s[p] = s[p - 1];
        l[p] = l[p - 1];
        p--;
    }
    s[p] = v;
    l[p] = i;
}

// The f16 pass over blocks [b0, b1) for one query q [d]: approximate
// similarities into approx (every block's 16 lanes written), the best kc
// into cs / cl (holding *hc). Blocks in order: a query's candidates do not
// depend on how its blocks were grouped into calls.
static void scan_blocks(const ac_index *idx, const ac_scan_kernels *k, const float *q, int64_t n, int d, int l2,
                        int kc, float *approx, float *cs, faiss::Index::idx_t *cl, int *hc, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
        const int nv = (int)std::min<int64_t>(16, n - 16 * b);
        float *sim = approx + 16 * b;
        /* once the list is full, only lanes above its worst enter (few, after the first blocks) */
        const float thr = *hc < kc ? -INFINITY : cs[kc - 1];
        uint32_t m = k->block(idx->sc + (size_t)b * 16 * d, idx->sc_sq.data() + 16 * b, nv, q, d, l2, thr, sim);
        for (; m; m &= m - 1) {
            const int v = __builtin_ctz(m);
            topk_push(cs, cl, kc, hc, sim[v], 16 * b + v);
        }
    }
}

// scan_blocks for four queries at once with the level's block4: the same
// values, candidates and counts *hc [4] as four scan_blocks calls.
static void scan_blocks4(const ac_index *idx, const ac_scan_kernels *k, const float *const *q, int64_t n, int d,
                         int l2, int kc, float *const *approx, float *const *cs, faiss::Index::idx_t *const *cl,
                         int *hc, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
        const int nv = (int)std::min<int64_t>(16, n - 16 * b);
        float thr[4], *sim[4];
        uint32_t m[4];
        for (int i = 0; i < 4; i++) {
            thr[i] = hc[i] < kc ? -INFINITY : cs[i][kc - 1];
            sim[i] = approx[i] + 16 * b;
        }
        k->block4(idx->sc + (size_t)b * 16 * d, idx->sc_sq.data() + 16 * b, nv, q, d, l2, thr, sim, m);
        for (int i = 0; i < 4; i++)
            for (uint32_t mi = m[i]; mi; mi &= mi - 1) {
                const int v = __builtin_ctz(mi);
                topk_push(cs[i], cl[i], kc, &hc[i], sim[i][v], 16 * b + v);
            }
    }
}

// One thread's share of the f16 pass: the approximate similarities of its
// blocks [b0, b1) into approx, and its best kc of them.
struct scan_job {
    const ac_index *idx;
    const ac_scan_kernels *k;   // the level's kernels
    const float *q;             // [d]
    int64_t n;
    int d, l2, kc;
    float *approx;              // [n rounded up to 16]
    float *cs;                  // [nth][kc]
    faiss::Index::idx_t *cl;    // [nth][kc]
    int *have;                  // [nth]
};

static void scan_step(void *arg, int ith, int nth) {
    const scan_job *j = (const scan_job *)arg;
    const int64_t nb = (j->n + 15) / 16, b0 = nb * ith / nth, b1 = nb * (ith + 1) / nth;
    int hc = 0;
    scan_blocks(j->idx, j->k, j->q, j->n, j->d, j->l2, j->kc, j->approx, j->cs + (size_t)ith * j->kc,
                j->cl + (size_t)ith * j->kc, &hc, b0, b1);
    j->have[ith] = hc;
}

// Scans this large or more (vectors x dim) are split over the pool's threads;
// smaller ones run on the caller (a parallel step's wake-up and barrier cost
// more than a ~30 us scan on this VM).
static const int64_t kParallelScan = (int64_t)1 << 22;

/* Exact results from an f16 pass (half the f32 bytes: the scan's cost is
 * reading them cold) and a proof. The pass gives approximate similarities
 * a_i of every vector and its best kc candidates; these are re-ranked on
 * the f32 vectors, giving the k-th exact similarity S. With x^ the f16
 * copy (relative rounding 2^-11, absolute 2^-25 below f16's normal
 * range) and f32 sums in any order (index_scan.h derives the bound for
 * each level's), |q.x - q.x^| <= e_i = g |q| |x_i| + d 2^-25 |q|_inf,
 * g = 2^-11 + (d + 2) 2^-24 (twice that for L2's 2 q.x - |x|^2), plus a
 * relative margin of 1e-5 + (d + 32) 2^-24 for the remaining f32 roundings. A vector outside
 * the candidates with a_i + e_i < S cannot enter the top k; the others
 * (none, unless many vectors are near-equal) are computed exactly. A
 * 4-bit or 8-bit pass was measured too: its error bound is ~10x the gaps
 * between real neighbours, so the proof failed on most queries.
 * This is the part after the pass, for one query qv: its nth candidate lists
 * cs / cl [nth][kc] (have_t [nth] each) and approx [n] give its top k s / l
 * (ids mapped). The result is the exact top k (ties to the lower position)
 * whatever candidates the pass found, so it does not depend on nth. */
static void scan_finish(const ac_index *idx, const ac_scan_kernels *ker, const faiss::IndexIDMap *map,
                        const float *xb, const float *qv, int64_t n, int d, int l2, int k, int kc,
                        const float *approx, const float *cs, const faiss::Index::idx_t *cl, const int *have_t,
                        int nth, std::vector<faiss::Index::idx_t> &cand, float *s, faiss::Index::idx_t *l) {
    auto flat_sim = ker->sim;
    int have = 0;
    cand.clear();
    for (int t = 0; t < nth; t++)
        cand.insert(cand.end(), cl + (size_t)t * kc, cl + (size_t)t * kc + have_t[t]);
    std::sort(cand.begin(), cand.end()); /* re-rank in position order: ties keep the lower position */
    for (faiss::Index::idx_t c : cand) /* the candidates' f32 rows are cold: fetch them all at once */
        for (int o = 0; o < d; o += 16) __builtin_prefetch(xb + (size_t)c * d + o);
    for (faiss::Index::idx_t c : cand) topk_push(s, l, k, &have, flat_sim(qv, xb + (size_t)c * d, d, l2), c);
    /* the proof that no other vector enters the top k */
    double qn = 0, qi = 0;
    for (int i = 0; i < d; i++) qn += (double)qv[i] * qv[i], qi = std::max(qi, (double)std::fabs(qv[i]));
    const double f = l2 ? 2.0 : 1.0, g = std::ldexp(1.0, -11) + (d + 2) * std::ldexp(1.0, -24);
    const double a = f * g * std::sqrt(qn), b0 = f * d * std::ldexp(1.0, -25) * qi;
    const double S = (have == k ? (double)s[k - 1] : -INFINITY) + (l2 ? qn : 0.0); /* in the pass's terms */
    /* the f32 roundings of the exact similarities (sums of d terms) and of 2 q.x^ - |x|^2 */
    const double margin = (1e-5 + (d + 32) * std::ldexp(1.0, -24)) *
                          (std::fabs(S) + (l2 ? qn + (double)idx->sc_max_norm * idx->sc_max_norm : 1.0));
    double worst = -INFINITY; /* best approximate similarity outside the candidates */
    for (int t = 0; t < nth; t++)
        if (have_t[t] == kc) worst = std::max(worst, (double)cs[(size_t)t * kc + kc - 1]);
    idx->sc_queries++;
    if (worst + a * idx->sc_max_norm + b0 + margin >= S) { /* not proven at once: vector by vector */
        idx->sc_unproven++;
        for (int64_t i = 0; i < n; i++) {
            if ((double)approx[(size_t)i] + a * idx->sc_norm[(size_t)i] + b0 + margin < S) continue;
            if (std::binary_search(cand.begin(), cand.end(), (faiss::Index::idx_t)i)) continue;
            idx->sc_recomputed++;
            topk_push(s, l, k, &have, flat_sim(qv, xb + (size_t)i * d, d, l2), i);
        }
        /* pushed out of position order: restore "ties keep the lower position" */
        for (int r = 1; r < have; r++)
            for (int t = r; t > 0 && s[t] == s[t - 1] && l[t] < l[t - 1]; t--) std::swap(l[t], l[t - 1]);
    }
    for (int r = 0; r < have; r++) l[r] = map->id_map[(size_t)l[r]];
    for (int r = have; r < k; r++) s[r] = -INFINITY, l[r] = -1;
}

static bool flat_search(const ac_index *idx, const float *q, int64_t nq, int k, int l2, float *sims,
                        faiss::Index::idx_t *lab, ac_pool *pool) {
    const auto *map = dynamic_cast<const faiss::IndexIDMap *>(idx->top);
    const auto *flat = map ? dynamic_cast<const faiss::IndexFlat *>(map->index) : nullptr;
    if (!flat || map->id_map.size() != (size_t)flat->ntotal) return false;
    const float *xb = flat->get_xb();
    const int64_t n = flat->ntotal;
    const int d = (int)flat->d;
    const ac_scan_kernels *ker = ac_scan_kernels_now();
    const bool scan = !idx->sc_bad && idx->sc_count == n && n > k;
    const int nth = scan && pool && n * d >= kParallelScan ? ac_pool_threads(pool) : 1;
    const int kc = scan ? (int)std::min<int64_t>(n, k + 8) : k;
    std::vector<float> cs((size_t)nth * kc);
    /* every block's 16 lanes are written by the scan: no zero fill */
    std::unique_ptr<float[]> approx(scan ? new float[(size_t)((n + 15) / 16) * 16] : nullptr);
    std::vector<faiss::Index::idx_t> cl((size_t)nth * kc), cand;
    std::vector<int> have_t((size_t)nth);
    for (int64_t iq = 0; iq < nq; iq++) {
        const float *qv = q + iq * d;
        float *s = sims + iq * k;
        faiss::Index::idx_t *l = lab + iq * k;
        if (scan) {
            scan_job j = {idx, ker, qv, n, d, l2, kc, approx.get(), cs.data(), cl.data(), have_t.data()};
            ac_pool_run(nth > 1 ? pool : nullptr, scan_step, &j);
            scan_finish(idx, ker, map, xb, qv, n, d, l2, k, kc, approx.get(), cs.data(), cl.data(), have_t.data(), nth,
                        cand, s, l);
        } else {
            int have = 0;
            for (int64_t i = 0; i < n; i++) topk_push(s, l, k, &have, ker->sim(qv, xb + (size_t)i * d, d, l2), i);
            for (int r = 0; r < have; r++) l[r] = map->id_map[(size_t)l[r]];
            for (int r = have; r < k; r++) s[r] = -INFINITY, l[r] = -1;
        }
    }
    return true;
}

// Queries of a batch scanned together (each chunk of the f16 copy read once
// for them), at most: their approximate similarities take group x n floats.
static const int64_t kBatchGroup = 8;
static const size_t kBatchApproxBytes = (size_t)32 << 20;
// Blocks of the f16 copy that every query of a group scans before the next
// ones are read: 64 KiB of f16 codes (L1/L2-resident while the group passes).
static const size_t kBatchChunkBytes = (size_t)64 << 10;
// Batches this large or more (queries x vectors x dim) split their groups over
// OpenMP threads (a 64-query batch over 512 128-d keys: 4 M).
static const int64_t kParallelBatch = (int64_t)1 << 21;

// The flat scan of nq queries at once (ac_index_search_batch): the same pass,
// proof and results per query as flat_search, with each chunk of the f16 copy
// read once for a group of queries instead of once per query; the groups are
// spread over OpenMP threads (each with its own buffers) when the batch is
// large and the caller is not inside a parallel region.
static bool flat_search_batch(const ac_index *idx, const float *q, int64_t nq, int k, int l2, float *sims,
                              faiss::Index::idx_t *lab) {
    const auto *map = dynamic_cast<const faiss::IndexIDMap *>(idx->top);
    const auto *flat = map ? dynamic_cast<const faiss::IndexFlat *>(map->index) : nullptr;
    if (!flat || map->id_map.size() != (size_t)flat->ntotal) return false;
    const int64_t n = flat->ntotal;
    const int d = (int)flat->d;
    const bool scan = !idx->sc_bad && idx->sc_count == n && n > k;
    if (!scan || nq <= 1) return flat_search(idx, q, nq, k, l2, sims, lab, nullptr);
    const float *xb = flat->get_xb();
    const ac_scan_kernels *ker = ac_scan_kernels_now();
    const int kc = (int)std::min<int64_t>(n, k + 8);
    const int64_t nb = (n + 15) / 16, n16 = nb * 16;
    const int64_t group =
        std::max<int64_t>(1, std::min<int64_t>(kBatchGroup, (int64_t)(kBatchApproxBytes / (n16 * sizeof(float)))));
    const int64_t chunk = std::max<int64_t>(1, (int64_t)(kBatchChunkBytes / (16 * (size_t)d * sizeof(uint16_t))));
    const int64_t ngroups = (nq + group - 1) / group;
    const bool par = ngroups > 1 && nq * n * d >= kParallelBatch && !omp_in_parallel() && omp_get_max_threads() > 1;
    std::atomic<int> oom{0};
#pragma omp parallel if (par)
    {
        /* nothing may leave a parallel region or skip its barriers: failures are reported after it */
        std::unique_ptr<float[]> approx;
        std::vector<float> cs;
        std::vector<faiss::Index::idx_t> cl, cand;
        std::vector<int> have;
        try {
            approx.reset(new float[(size_t)(group * n16)]);
            cs.resize((size_t)(group * kc));
            cl.resize((size_t)(group * kc));
            have.resize((size_t)group);
            cand.reserve((size_t)kc);
        } catch (...) {
            oom = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t gi = 0; gi < ngroups; gi++) {
            if (oom) continue;
            const int64_t g0 = gi * group, ng = std::min(group, nq - g0);
            std::fill(have.begin(), have.end(), 0);
            for (int64_t b0 = 0; b0 < nb; b0 += chunk) {
                const int64_t b1 = std::min(nb, b0 + chunk);
                int64_t i = 0;
                for (; ker->block4 && i + 4 <= ng; i += 4) { /* four queries per read of each block */
                    const float *qq[4];
                    float *ap[4], *cp[4];
                    faiss::Index::idx_t *lp[4];
                    for (int t = 0; t < 4; t++) {
                        qq[t] = q + (g0 + i + t) * d, ap[t] = approx.get() + (i + t) * n16;
                        cp[t] = cs.data() + (i + t) * kc, lp[t] = cl.data() + (i + t) * kc;
                    }
                    scan_blocks4(idx, ker, qq, n, d, l2, kc, ap, cp, lp, &have[(size_t)i], b0, b1);
                }
                for (; i < ng; i++)
                    scan_blocks(idx, ker, q + (g0 + i) * d, n, d, l2, kc, approx.get() + i * n16, cs.data() + i * kc,
                                cl.data() + i * kc, &have[(size_t)i], b0, b1);
            }
            try {
                for (int64_t i = 0; i < ng; i++)
                    scan_finish(idx, ker, map, xb, q + (g0 + i) * d, n, d, l2, k, kc, approx.get() + i * n16,
                                cs.data() + i * kc, cl.data() + i * kc, &have[(size_t)i], 1, cand,
                                sims + (g0 + i) * k, lab + (g0 + i) * k);
            } catch (...) {
                oom = 1;
            }
        }
    }
    if (oom) throw std::bad_alloc();
    return true;
}

void ac_index_scan_stats(const ac_index *idx, int64_t *queries, int64_t *unproven, int64_t *recomputed) {
    if (queries) *queries = idx ? (int64_t)idx->sc_queries : 0;
    if (unproven) *unproven = idx ? (int64_t)idx->sc_unproven : 0;
    if (recomputed) *recomputed = idx ? (int64_t)idx->sc_recomputed : 0;
}

int ac_index_search(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims) {
    return ac_index_search_pool(idx, q, nq, k, ids, sims, nullptr);
}

int ac_index_search_pool(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims,
                         ac_pool *pool) {
    if (!idx || (!q && nq > 0) || nq < 0) return ac_err(AC_ERR_ARG, "index search: bad arguments");
    if (k < 1 || k > 65536) return ac_err(AC_ERR_ARG, "index search: k=%d out of range 1..65536", k);
    if (nq == 0) return AC_OK;
    if (!idx->top->is_trained) return ac_err(AC_ERR_ARG, "index search: IVF index not trained yet");
    if (!all_finite(q, (size_t)nq * (size_t)idx->p.dim)) return ac_err(AC_ERR_ARG, "index search: non-finite query");
    AC_TRY
    std::vector<float> buf;
    const float *v = prepare(idx, q, nq, buf);
    size_t n = (size_t)nq * (size_t)k;
    std::vector<float> dist(n);
    std::vector<faiss::Index::idx_t> lab(n);
    /* A few queries (the per-sequence lookups inside a forward pass): FAISS runs
     * on the calling thread. Its OpenMP team would otherwise keep spinning after
     * the search and take the cores from the forward's own thread pool
     * (measured: 7.5 ms per MiniLM query lost to it). */
    const int l2 = idx->p.metric != AC_METRIC_COSINE;
    if (idx->p.kind == AC_INDEX_FLAT && nq < 16 && flat_search(idx, v, nq, k, l2, dist.data(), lab.data(), pool)) {
        for (size_t i = 0; i < n; i++) dist[i] = l2 ? -dist[i] : dist[i]; /* FAISS's convention: L2 distances */
    } else {
        const int saved_threads = omp_get_max_threads();
        if (nq < 16) omp_set_num_threads(1);
        idx->top->search(nq, v, k, dist.data(), lab.data());
        if (nq < 16) omp_set_num_threads(saved_threads);
    }
    for (size_t i = 0; i < n; i++) {
        float s = lab[i] < 0 ? -INFINITY : (idx->p.metric == AC_METRIC_COSINE ? dist[i] : -dist[i]);
        if (ids) ids[i] = lab[i];
        if (sims) sims[i] = s;
    }
    return AC_OK;
    AC_CATCH("search")
}

int ac_index_search_batch(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims) {
    if (!idx || (!q && nq > 0) || nq < 0) return ac_err(AC_ERR_ARG, "index search: bad arguments");
    if (k < 1 || k > 65536) return ac_err(AC_ERR_ARG, "index search: k=%d out of range 1..65536", k);
    if (nq == 0) return AC_OK;
    if (!idx->top->is_trained) return ac_err(AC_ERR_ARG, "index search: IVF index not trained yet");
    if (!all_finite(q, (size_t)nq * (size_t)idx->p.dim)) return ac_err(AC_ERR_ARG, "index search: non-finite query");
    if (idx->p.kind != AC_INDEX_FLAT) { /* FAISS's few-query path (per query alike), in groups of 15 */
        for (int64_t i = 0; i < nq; i += 15) {
            const int64_t m = std::min<int64_t>(15, nq - i);
            int rc = ac_index_search_pool(idx, q + i * idx->p.dim, m, k, ids ? ids + i * k : nullptr,
                                          sims ? sims + i * k : nullptr, nullptr);
            if (rc) return rc;
        }
        return AC_OK;
    }
    AC_TRY
    std::vector<float> buf;
    const float *v = prepare(idx, q, nq, buf);
    const size_t n = (size_t)nq * (size_t)k;
    std::vector<float> dist(n);
    std::vector<faiss::Index::idx_t> lab(n);
    const int l2 = idx->p.metric != AC_METRIC_COSINE;
    if (!flat_search_batch(idx, v, nq, k, l2, dist.data(), lab.data())) {
        for (int64_t i = 0; i < nq; i += 15) { /* not our flat layout: FAISS's few-query path */
            const int64_t m = std::min<int64_t>(15, nq - i);
            int rc = ac_index_search_pool(idx, q + i * idx->p.dim, m, k, ids ? ids + i * k : nullptr,
                                          sims ? sims + i * k : nullptr, nullptr);
            if (rc) return rc;
        }
        return AC_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids) ids[i] = lab[i];
        if (sims) sims[i] = lab[i] < 0 ? -INFINITY : dist[i]; /* the scan's similarities (see ac_index_search_pool) */
    }
    return AC_OK;
    AC_CATCH("search")
}

int ac_index_lookup(const ac_index *idx, const float *q, float threshold, int64_t *id, float *sim, int *hit) {
    int64_t i = -1;
    float s = -INFINITY;
    if (id) *id = -1;
    if (sim) *sim = s;
    if (hit) *hit = 0;
    if (!idx || !q) return ac_err(AC_ERR_ARG, "index lookup: bad arguments");
    if (idx->top->ntotal > 0) {
        int rc = ac_index_search(idx, q, 1, 1, &i, &s);
        if (rc) return rc;
    }
    if (id) *id = i;
    if (sim) *sim = s;
    if (hit) *hit = i >= 0 && ac_index_is_hit(s, threshold);
    return AC_OK;
}

int ac_index_save(const ac_index *idx, const char *path) {
    if (!idx || !path) return ac_err(AC_ERR_ARG, "index save: bad arguments");
    AC_TRY
    faiss::VectorIOWriter w;
    faiss::write_index(idx->top, &w);
    FileHeader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, kMagic, 8);
    h.version = kVersion;
    h.kind = (uint32_t)idx->p.kind;
    h.metric = (uint32_t)idx->p.metric;
    h.dim = (uint32_t)idx->p.dim;
    h.nlist = (uint32_t)idx->p.nlist;
    h.nprobe = (uint32_t)idx->p.nprobe;
    h.hnsw_m = (uint32_t)idx->p.hnsw_m;
    h.ef_construction = (uint32_t)idx->p.ef_construction;
    h.ef_search = (uint32_t)idx->p.ef_search;
    h.ntotal = (uint64_t)idx->top->ntotal;
    h.payload_bytes = w.data.size();
    h.payload_hash = ac_xxh64(w.data.data(), w.data.size(), 0);
    h.header_hash = ac_xxh64(&h, offsetof(FileHeader, header_hash), 0);
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) return ac_err_prefix(rc, "index save %s", path);
    if (fwrite(&h, 1, sizeof h, af.f) != sizeof h || fwrite(w.data.data(), 1, w.data.size(), af.f) != w.data.size()) {
        rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af.tmp, strerror(errno));
        ac_atomic_abort(&af);
    } else {
        rc = ac_atomic_commit(&af); /* fsync, rename over path, fsync of the directory */
    }
    return rc ? ac_err_prefix(rc, "index save %s", path) : AC_OK;
    }
    catch (const std::bad_alloc &) {
        return ac_err(AC_ERR_NOMEM, "index save %s: out of memory", path);
    }
    catch (const std::exception &e) {
        return ac_err(AC_ERR_INTERNAL, "index save %s: %s", path, e.what());
    }
    catch (...) {
        return ac_err(AC_ERR_INTERNAL, "index save %s: unknown C++ exception", path);
    }
}

int ac_index_load(const char *path, ac_index **out) {
    if (!path || !out) return ac_err(AC_ERR_ARG, "index load: bad arguments");
    *out = nullptr;
    AC_TRY
    FILE *f = fopen(path, "rb");
    if (!f) return ac_err(AC_ERR_IO, "index load %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        fclose(f);
        return ac_err(AC_ERR_IO, "index load %s: fstat: %s", path, strerror(errno));
    }
    uint64_t size = (uint64_t)sb.st_size;
    FileHeader h;
    if (size < sizeof h || fread(&h, sizeof h, 1, f) != 1) {
        fclose(f);
        return ac_err(AC_ERR_FORMAT, "index load %s: %llu bytes is too short for an index file", path,
                      (unsigned long long)size);
    }
    if (memcmp(h.magic, kMagic, 8) != 0) {
        fclose(f);
        return ac_err(AC_ERR_FORMAT, "index load %s: not an attncache index file (bad magic)", path);
    }
    if (h.header_hash != ac_xxh64(&h, offsetof(FileHeader, header_hash), 0)) {
        fclose(f);
        return ac_err(AC_ERR_FORMAT, "index load %s: header checksum mismatch (damaged file)", path);
    }
    if (h.version != kVersion) {
        fclose(f);
        return ac_err(AC_ERR_FORMAT, "index load %s: version %u, this build reads %u", path, h.version, kVersion);
    }
    if (size > kMaxFile || h.payload_bytes != size - sizeof h) {
        fclose(f);
        return ac_err(AC_ERR_FORMAT, "index load %s: header says %llu payload bytes, the file holds %llu (truncated?)",
                      path, (unsigned long long)h.payload_bytes, (unsigned long long)(size - sizeof h));
    }
    ac_index_params p;
    p.kind = (int)h.kind;
    p.metric = (int)h.metric;
    p.dim = (int)h.dim;
    p.nlist = (int)h.nlist;
    p.nprobe = (int)h.nprobe;
    p.hnsw_m = (int)h.hnsw_m;
    p.ef_construction = (int)h.ef_construction;
    p.ef_search = (int)h.ef_search;
    int rc = check_params(&p);
    if (rc) {
        fclose(f);
        return ac_err_prefix(AC_ERR_FORMAT, "index load %s", path);
    }
    faiss::VectorIOReader r;
    r.data.resize((size_t)h.payload_bytes);
    size_t got = h.payload_bytes ? fread(r.data.data(), 1, (size_t)h.payload_bytes, f) : 0;
    fclose(f);
    if (got != h.payload_bytes) return ac_err(AC_ERR_IO, "index load %s: short read", path);
    if (ac_xxh64(r.data.data(), r.data.size(), 0) != h.payload_hash)
        return ac_err(AC_ERR_FORMAT, "index load %s: payload checksum mismatch (damaged file)", path);
    std::unique_ptr<faiss::Index> top;
    try {
        top.reset(faiss::read_index(&r));
    } catch (const std::bad_alloc &) {
        return ac_err(AC_ERR_NOMEM, "index load %s: out of memory", path);
    } catch (const std::exception &e) {
        return ac_err(AC_ERR_FORMAT, "index load %s: faiss cannot parse the payload: %s", path, e.what());
    }
    std::unique_ptr<ac_index> idx(new ac_index);
    idx->p = p;
    faiss::MetricType m = faiss_metric(p.metric);
    bool ok = top && top->d == p.dim && top->metric_type == m && (uint64_t)top->ntotal == h.ntotal;
    if (ok) {
        if (p.kind == AC_INDEX_IVF_FLAT) {
            idx->ivf = dynamic_cast<faiss::IndexIVFFlat *>(top.get());
            ok = idx->ivf != nullptr;
            if (ok) idx->ivf->nprobe = (size_t)p.nprobe;
        } else {
            auto *map = dynamic_cast<faiss::IndexIDMap *>(top.get());
            ok = map != nullptr;
            if (ok && p.kind == AC_INDEX_HNSW) {
                idx->hnsw = dynamic_cast<faiss::IndexHNSWFlat *>(map->index);
                ok = idx->hnsw != nullptr;
                if (ok) idx->hnsw->hnsw.efSearch = p.ef_search;
            } else if (ok) {
                ok = dynamic_cast<faiss::IndexFlat *>(map->index) != nullptr;
            }
        }
    }
    if (!ok) return ac_err(AC_ERR_FORMAT, "index load %s: payload does not match its header (kind %d, dim %d)", path, p.kind, p.dim);
    idx->top = top.release();
    sync_scan(idx.get());
    *out = idx.release();
    return AC_OK;
    AC_CATCH("load")
}

} // extern "C"
