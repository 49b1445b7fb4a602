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
extern "C" {
#include "util/common.h" /* a C header without extern "C" guards */
}

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include <cerrno>
#include <cmath>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
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
    ~ac_index() { delete top; }
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
    return AC_OK;
    AC_CATCH("add")
}

// Exact flat search of a few queries on the calling thread: Debian's generic
// libfaiss build computes ~1-3 GFLOP/s in its distance loops (measured: 255 us
// for one 128-d query over 3,000 entries, which is 5-9% of a MiniLM forward);
// this AVX-512 scan over the same stored vectors takes ~20 us. Same results:
// similarity = inner product (cosine, normalised vectors) or -||q - x||^2,
// best first, ties to the lower position, then mapped through the id map.
static float flat_sim(const float *q, const float *x, int d, int l2) {
    int j = 0;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; j + 32 <= d; j += 32) {
        __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
        __m512 q0 = _mm512_loadu_ps(q + j), q1 = _mm512_loadu_ps(q + j + 16);
        if (l2) {
            x0 = _mm512_sub_ps(x0, q0), x1 = _mm512_sub_ps(x1, q1);
            a0 = _mm512_fmadd_ps(x0, x0, a0), a1 = _mm512_fmadd_ps(x1, x1, a1);
        } else {
            a0 = _mm512_fmadd_ps(x0, q0, a0), a1 = _mm512_fmadd_ps(x1, q1, a1);
        }
    }
    alignas(64) float t[16];
    _mm512_store_ps(t, _mm512_add_ps(a0, a1));
    float acc = 0.0f;
    for (int i = 0; i < 16; i++) acc += t[i];
#else
    float acc = 0.0f;
#endif
    for (; j < d; j++) acc += l2 ? (x[j] - q[j]) * (x[j] - q[j]) : x[j] * q[j];
    return l2 ? -acc : acc;
}

static bool flat_search(const faiss::Index *top, const float *q, int64_t nq, int k, int l2, float *sims,
                        faiss::Index::idx_t *lab) {
    const auto *map = dynamic_cast<const faiss::IndexIDMap *>(top);
    const auto *flat = map ? dynamic_cast<const faiss::IndexFlat *>(map->index) : nullptr;
    if (!flat || map->id_map.size() != (size_t)flat->ntotal) return false;
    const float *xb = flat->get_xb();
    const int64_t n = flat->ntotal;
    const int d = (int)flat->d;
    for (int64_t iq = 0; iq < nq; iq++) {
        float *s = sims + iq * k;
        faiss::Index::idx_t *l = lab + iq * k;
        int have = 0;
        for (int64_t i = 0; i < n; i++) {
            const float v = flat_sim(q + iq * d, xb + (size_t)i * d, d, l2);
            if (have == k && !(v > s[k - 1])) continue;
            int p = have < k ? have++ : k - 1;
            while (p > 0 && v > s[p - 1]) {
                s[p] = s[p - 1];
                l[p] = l[p - 1];
                p--;
            }
            s[p] = v;
            l[p] = i;
        }
        for (int r = 0; r < have; r++) l[r] = map->id_map[(size_t)l[r]];
        for (int r = have; r < k; r++) s[r] = -INFINITY, l[r] = -1;
    }
    return true;
}

int ac_index_search(const ac_index *idx, const float *q, int64_t nq, int k, int64_t *ids, float *sims) {
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
    if (idx->p.kind == AC_INDEX_FLAT && nq < 16 && flat_search(idx->top, v, nq, k, l2, dist.data(), lab.data())) {
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
    std::string tmp;
    int fd = -1;
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
    tmp = std::string(path) + ".tmp." + std::to_string((long)getpid());
    fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return ac_err(AC_ERR_IO, "index save %s: cannot create %s: %s", path, tmp.c_str(), strerror(errno));
    const uint8_t *parts[2] = {(const uint8_t *)&h, w.data.data()};
    size_t sizes[2] = {sizeof h, w.data.size()};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < sizes[i]) {
            ssize_t r = write(fd, parts[i] + off, sizes[i] - off);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                int e = r < 0 ? errno : ENOSPC;
                close(fd);
                unlink(tmp.c_str());
                return ac_err(AC_ERR_IO, "index save %s: write failed: %s", path, strerror(e));
            }
            off += (size_t)r;
        }
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp.c_str());
        return ac_err(AC_ERR_IO, "index save %s: fsync failed: %s", path, strerror(e));
    }
    close(fd);
    fd = -1;
    if (rename(tmp.c_str(), path) != 0) {
        int e = errno;
        unlink(tmp.c_str());
        return ac_err(AC_ERR_IO, "index save %s: rename from %s failed: %s", path, tmp.c_str(), strerror(e));
    }
    std::string dir(path);
    size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return AC_OK;
    }
    catch (const std::bad_alloc &) {
        if (fd >= 0) close(fd);
        if (!tmp.empty()) unlink(tmp.c_str());
        return ac_err(AC_ERR_NOMEM, "index save %s: out of memory", path);
    }
    catch (const std::exception &e) {
        if (fd >= 0) close(fd);
        if (!tmp.empty()) unlink(tmp.c_str());
        return ac_err(AC_ERR_INTERNAL, "index save %s: %s", path, e.what());
    }
    catch (...) {
        if (fd >= 0) close(fd);
        if (!tmp.empty()) unlink(tmp.c_str());
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
    *out = idx.release();
    return AC_OK;
    AC_CATCH("load")
}

} // extern "C"
