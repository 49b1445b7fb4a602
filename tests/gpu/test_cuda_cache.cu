/* test_cuda_cache.cu — the GPU A·V over compressed attention maps
 * (src/backends/cuda/cuda_codec_av.cu) against the CPU: maps encoded by the
 * cache's own codec (ac_codec_encode), decoded by its plain reference
 * (ac_codec_decode), multiplied by V in double. Every codec, dense and causal,
 * GQA, f32 and bf16 V, all rows and a prefix of rows (causal partial reuse),
 * V tiled past shared memory, q8 on the tensor cores, several sequences of a
 * packed batch in one launch (ac_cu_codec_av_seqs), the benchmark variants (sessions 14 and 15).
 * Exits 0 with "SKIP" when no CUDA device is present. */
#include "gpu_check.h"

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_codec_av.h"
#include "cache/codec.h"

#include <algorithm>
#include <string.h>
#include <vector>

using std::vector;

#define CU(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));            \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

/* random softmax rows, causal zeros above the diagonal */
static void rand_map(float *P, int L, int causal) {
    for (int t = 0; t < L; t++) {
        const int n = causal ? t + 1 : L;
        double s = 0;
        for (int j = 0; j < L; j++) {
            float v = j < n ? expf(3.0f * rnd()) : 0.0f;
            P[(size_t)t * L + j] = v;
            s += v;
        }
        for (int j = 0; j < n; j++) P[(size_t)t * L + j] = (float)(P[(size_t)t * L + j] / s);
    }
}

/* damage 1: the first top-k index of every row set past the row (must be ignored, never read);
 * vpad: V rows vpad elements longer than the K/V heads (odd: no vector loads, the strided kernel) */
template <typename T>
static void run(const char *spec, int L, int H, int Hkv, int hd, int n_rows, int damage = 0, int vpad = 0) {
    ac_map_codec c;
    if (ac_codec_parse(spec, &c) != AC_OK) {
        CHECK(0, "codec %s", spec);
        return;
    }
    const size_t mb = ac_codec_map_bytes(&c, L);
    vector<unsigned char> maps(mb * H);
    vector<float> P((size_t)L * L), D((size_t)H * L * L);
    for (int h = 0; h < H; h++) {
        rand_map(P.data(), L, c.causal);
        CHECK(ac_codec_encode(&c, P.data(), L, maps.data() + h * mb) == AC_OK, "encode %s", spec);
        for (int t = 0; damage && t < L; t++) {
            unsigned char *r = maps.data() + h * mb + ac_codec_row_offset(&c, L, t);
            r[0] = 0xff, r[1] = 0xff;
        }
        ac_codec_decode(&c, maps.data() + h * mb, L, D.data() + (size_t)h * L * L);
    }
    const int ldv = Hkv * hd + vpad, ldo = H * hd;
    vector<float> V((size_t)L * ldv);
    for (auto &x : V) x = rnd();
    if (sizeof(T) == 2)
        for (auto &x : V) x = ac_host_bf16_to_f32(ac_host_f32_to_bf16(x));
    /* reference: the decoded maps times V, rows [0, n_rows) */
    vector<float> ref((size_t)n_rows * ldo);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < n_rows; t++)
            for (int d = 0; d < hd; d++) {
                double a = 0;
                for (int j = 0; j < L; j++) a += (double)D[((size_t)h * L + t) * L + j] * V[(size_t)j * ldv + (h / (H / Hkv)) * hd + d];
                ref[(size_t)t * ldo + h * hd + d] = (float)a;
            }
    void *dm;
    T *dv, *dout;
    CU(cudaMalloc(&dm, maps.size()));
    CU(cudaMemcpy(dm, maps.data(), maps.size(), cudaMemcpyHostToDevice));
    CU(cudaMalloc(&dv, V.size() * sizeof(T)));
    CU(cudaMalloc(&dout, (size_t)L * ldo * sizeof(T)));
    CU(cudaMemset(dout, 0xff, (size_t)L * ldo * sizeof(T))); /* NaN poison */
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(dv, V.data(), V.size() * 4, cudaMemcpyHostToDevice));
    } else {
        vector<uint16_t> b(V.size());
        for (size_t i = 0; i < V.size(); i++) b[i] = ac_host_f32_to_bf16(V[i]);
        CU(cudaMemcpy(dv, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
    }
    ac_cu_codec cc = {c.kind, c.causal, c.topk};
    const int rc = ac_cu_codec_av<T>(&cc, dm, mb, L, n_rows, H, Hkv, hd, dv, ldv, dout, ldo, 0);
    CU(cudaDeviceSynchronize());
    vector<float> got((size_t)n_rows * ldo);
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
    } else {
        vector<uint16_t> b(got.size());
        CU(cudaMemcpy(b.data(), dout, b.size() * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < b.size(); i++) got[i] = ac_host_bf16_to_f32(b[i]);
    }
    const double e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(rc == AC_OK && all_finite(got.data(), got.size()) && e < (sizeof(T) == 4 ? 1e-5 : 8e-3),
          "codec %s L %d H %d/%d hd %d rows %d (%zu-byte V): rel err %.3g", spec, L, H, Hkv, hd, n_rows, sizeof(T), e);
    cudaFree(dm), cudaFree(dv), cudaFree(dout);
}

/* Several sequences of a packed batch in one launch (ac_cu_codec_av_seqs): lens[] tokens each, maps in
 * separate allocations found through a device table, sequences s0 .. ns-1 served; the rows of the
 * sequences before s0 must stay as poisoned. damage: as in run (top-k rows: the first index of every
 * row past the row); mis: the maps start mis bytes past their allocation's (aligned) start. */
template <typename T>
static void run_seqs(const char *spec, const vector<int> &lens, int s0, int H, int Hkv, int hd, int variant = 0,
                     int damage = 0, int mis = 0, const vector<int> &nrows = {}) {
    ac_map_codec c;
    if (ac_codec_parse(spec, &c) != AC_OK) {
        CHECK(0, "codec %s", spec);
        return;
    }
    const int ns = (int)lens.size(), ldv = Hkv * hd, ldo = H * hd;
    vector<int> cu(ns + 1, 0);
    for (int s = 0; s < ns; s++) cu[s + 1] = cu[s] + lens[s];
    const int Tn = cu[ns];
    int Lmax = 0;
    vector<float> V((size_t)Tn * ldv), ref((size_t)Tn * ldo, 0.f);
    for (auto &x : V) x = sizeof(T) == 2 ? ac_host_bf16_to_f32(ac_host_f32_to_bf16(rnd())) : rnd();
    vector<void *> dmaps(ns, nullptr);
    for (int s = 0; s < ns; s++) {
        const int L = lens[s];
        Lmax = L > Lmax ? L : Lmax;
        const size_t mb = ac_codec_map_bytes(&c, L);
        CHECK(mb == ac_cuda_map_bytes(c.kind, c.causal, c.topk, L), "map bytes %s L %d", spec, L);
        vector<unsigned char> maps(mb * H);
        vector<float> P((size_t)L * L), D((size_t)L * L);
        for (int h = 0; h < H; h++) {
            rand_map(P.data(), L, c.causal);
            CHECK(ac_codec_encode(&c, P.data(), L, maps.data() + h * mb) == AC_OK, "encode %s", spec);
            for (int t = 0; damage && t < L; t++) {
                unsigned char *r = maps.data() + h * mb + ac_codec_row_offset(&c, L, t);
                r[0] = 0xff, r[1] = 0xff;
            }
            ac_codec_decode(&c, maps.data() + h * mb, L, D.data());
            vector<double> a(hd);
            for (int t = 0; s >= s0 && t < (nrows.empty() ? L : nrows[s]); t++) { /* zero weights skipped */
                std::fill(a.begin(), a.end(), 0.0);
                for (int j = 0; j < L; j++) {
                    const double p = D[(size_t)t * L + j];
                    if (p == 0.0) continue;
                    const float *vr = V.data() + (size_t)(cu[s] + j) * ldv + (h / (H / Hkv)) * hd;
                    for (int d = 0; d < hd; d++) a[d] += p * vr[d];
                }
                for (int d = 0; d < hd; d++) ref[(size_t)(cu[s] + t) * ldo + h * hd + d] = (float)a[d];
            }
        }
        CU(cudaMalloc(&dmaps[s], maps.size() + 16));
        CU(cudaMemcpy((char *)dmaps[s] + mis, maps.data(), maps.size(), cudaMemcpyHostToDevice));
    }
    vector<void *> dtab_h(ns);
    for (int s = 0; s < ns; s++) dtab_h[s] = (char *)dmaps[s] + mis;
    void **dtab;
    int *dcu;
    T *dv, *dout;
    CU(cudaMalloc(&dtab, ns * sizeof(void *)));
    CU(cudaMemcpy(dtab, dtab_h.data(), ns * sizeof(void *), cudaMemcpyHostToDevice));
    CU(cudaMalloc(&dcu, (ns + 1) * sizeof(int)));
    CU(cudaMemcpy(dcu, cu.data(), (ns + 1) * sizeof(int), cudaMemcpyHostToDevice));
    CU(cudaMalloc(&dv, V.size() * sizeof(T)));
    CU(cudaMalloc(&dout, (size_t)Tn * ldo * sizeof(T)));
    CU(cudaMemset(dout, 0xff, (size_t)Tn * ldo * sizeof(T))); /* NaN poison */
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(dv, V.data(), V.size() * 4, cudaMemcpyHostToDevice));
    } else {
        vector<uint16_t> b(V.size());
        for (size_t i = 0; i < V.size(); i++) b[i] = ac_host_f32_to_bf16(V[i]);
        CU(cudaMemcpy(dv, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
    }
    ac_cu_codec cc = {c.kind, c.causal, c.topk};
    int *drows = NULL; /* rows [0, nrows[s]) only (ac_cu_codec_av_seqs_rows) */
    if (!nrows.empty()) {
        CU(cudaMalloc(&drows, ns * sizeof(int)));
        CU(cudaMemcpy(drows, nrows.data(), ns * sizeof(int), cudaMemcpyHostToDevice));
    }
    const int rc = drows ? ac_cu_codec_av_seqs_rows<T>(&cc, (const void *const *)dtab, dcu, drows, s0, ns - s0, Lmax, H,
                                                       Hkv, hd, dv, ldv, dout, ldo, 0)
                 : variant ? ac_cu_codec_av_seqs_variant<T>(&cc, (const void *const *)dtab, dcu, s0, ns - s0, Lmax, H,
                                                            Hkv, hd, dv, ldv, dout, ldo, 0, variant)
                           : ac_cu_codec_av_seqs<T>(&cc, (const void *const *)dtab, dcu, s0, ns - s0, Lmax, H, Hkv, hd,
                                                    dv, ldv, dout, ldo, 0);
    CU(cudaDeviceSynchronize());
    vector<float> got((size_t)Tn * ldo);
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost));
    } else {
        vector<uint16_t> b(got.size());
        CU(cudaMemcpy(b.data(), dout, b.size() * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < b.size(); i++) got[i] = ac_host_bf16_to_f32(b[i]);
    }
    const size_t first = (size_t)cu[s0] * ldo;
    int untouched = 1;
    for (size_t i = 0; i < first; i++) untouched &= !isfinite(got[i]);
    /* with nrows: each sequence's rows past nrows[s] must stay poisoned; compared: the rows served */
    vector<float> gs, rs;
    for (int q = s0; q < ns; q++) {
        const int R = nrows.empty() ? lens[q] : nrows[q];
        for (size_t i = (size_t)cu[q] * ldo; i < (size_t)(cu[q] + R) * ldo; i++) gs.push_back(got[i]), rs.push_back(ref[i]);
        for (size_t i = (size_t)(cu[q] + R) * ldo; i < (size_t)cu[q + 1] * ldo; i++) untouched &= !isfinite(got[i]);
    }
    const double e = rs.empty() ? 0 : rel_err(gs.data(), rs.data(), rs.size());
    CHECK(rc == AC_OK && untouched && all_finite(gs.data(), gs.size()) && e < (sizeof(T) == 4 ? 1e-5 : 8e-3),
          "batched codec %s, %d sequences from %d (longest %d)%s, H %d/%d hd %d (%zu-byte V, variant %d, damage %d, "
          "maps +%d): rel err %.3g, rows not served kept %d",
          spec, ns, s0, Lmax, nrows.empty() ? "" : " (rows per sequence)", H, Hkv, hd, sizeof(T), variant, damage, mis,
          e, untouched);
    for (void *m : dmaps) cudaFree(m);
    cudaFree(dtab), cudaFree(dcu), cudaFree(dv), cudaFree(dout), cudaFree(drows);
}

/* Session 14's variants. v4 top-k (4: V through L1, 5: tensor cores, 8: 5 on wgmma at hd 64 with 2
   warpgroups a block, as 5 elsewhere; session 15's 12, 13, 14: 8 without block barriers in the key loop):
   causal and dense, rows
   shorter than k, k = 1, GQA 4:1, 1:1, 7:1 and 16:1 (pairs of a warp cross rows unevenly; several passes
   of the tensor-core kernel), head dims 32/64/128, sequences of different lengths (one of 1 token) in one
   launch, damaged indices, maps not 4-byte aligned (the byte paths), long sequences (many 64-key tiles
   of the tensor-core kernels), and what the variants leave to variant 0: k > 32, f32 V, q8 rows.
   longer = 0: without the sequences past 1000 tokens
   (for compute-sanitizer runs). */
static void v4_cases(int longer) {
    const vector<int> lens = {37, 200, 1, 130, 64};
    for (int var : {4, 5, 8, 12, 13, 14}) {
        for (const char *s : {"topk8-causal", "topk32", "topk32-causal", "topk1", "topk8", "topk1-causal"}) {
            run_seqs<bf16>(s, lens, 1, 8, 2, 64, var);
            run_seqs<bf16>(s, lens, 0, 4, 4, 128, var);
            run_seqs<bf16>(s, lens, 0, 14, 2, 32, var);
        }
        run_seqs<bf16>("topk8-causal", lens, 0, 8, 2, 64, var, 1);
        run_seqs<bf16>("topk32", lens, 1, 4, 1, 128, var, 1);
        run_seqs<bf16>("topk32-causal", lens, 0, 7, 1, 32, var, 1);
        run_seqs<bf16>("topk8-causal", lens, 0, 16, 1, 64, var);
        run_seqs<bf16>("topk32-causal", lens, 0, 4, 4, 64, var);  /* hd 64, G 1: one warpgroup a block */
        run_seqs<bf16>("topk8", lens, 2, 7, 1, 64, var, 1);       /* hd 64, G 7: a pass with 3 heads */
        run_seqs<bf16>("topk32-causal", lens, 0, 8, 2, 64, var, 0, 2);
        run_seqs<bf16>("topk8", lens, 1, 4, 4, 128, var, 1, 1);
        run_seqs<bf16>("topk32-causal", {900, 500}, 0, 4, 1, 128, var); /* hd 128: several tiles */
        if (longer) {
            run_seqs<bf16>("topk32-causal", {4500, 700, 1}, 0, 4, 1, 64, var);
            run_seqs<bf16>("topk32", {2600, 300}, 0, 4, 2, 64, var);
            run_seqs<bf16>("topk16-causal", {3000, 45}, 0, 4, 1, 128, var);
            run_seqs<bf16>("topk32-causal", {2100}, 0, 4, 4, 32, var);
        }
        run_seqs<bf16>("topk64-causal", lens, 0, 8, 2, 64, var);
        run_seqs<float>("topk8-causal", lens, 2, 4, 2, 32, var);
        run_seqs<bf16>("q8-causal", lens, 0, 8, 2, 64, var);
    }
    /* variant 11: v3 as the default was before (top-k rows included) */
    run_seqs<bf16>("topk32-causal", lens, 1, 8, 2, 64, 11);
    run_seqs<bf16>("topk8", lens, 0, 4, 4, 128, 11);
    /* removed variants' numbers (session 15: 3, 9, 10 top-k gathers, 7 wgmma with 4 warpgroups, 6 q8 rows with
       the map words prefetched) and unknown ones run the default */
    run_seqs<bf16>("q8-causal", lens, 1, 8, 2, 64, 6);
    for (int var : {3, 6, 7, 9, 10, 99}) run_seqs<bf16>("topk8-causal", lens, 0, 8, 2, 64, var);
}

/* A few launches of every session-14 and -15 kernel, for compute-sanitizer's racecheck (slow): one key
   tile and several (64-key tiles), GQA 4:1 and 1:1. */
static void v4_race_cases(void) {
    const vector<int> lens = {37, 200, 1, 130, 64};
    for (int var : {4, 5, 8, 12, 13, 14}) {
        run_seqs<bf16>("topk32-causal", lens, 0, 8, 2, 64, var);
        run_seqs<bf16>("topk8", {600, 37}, 0, 4, 4, 128, var);
    }
}

/* usage: test_cuda_cache [v4 | v4short | v4race]   (v4: only session 14's variants; v4short: without
   the long cases; v4race: a few launches of each new kernel) */
int main(int argc, char **argv) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("SKIP test_cuda_cache: no CUDA device\n");
        return 0;
    }
    rng_seed(7);
    if (argc > 1 && (!strcmp(argv[1], "v4") || !strcmp(argv[1], "v4short") || !strcmp(argv[1], "v4race"))) {
        if (!strcmp(argv[1], "v4race")) v4_race_cases();
        else v4_cases(!strcmp(argv[1], "v4"));
        printf("test_cuda_cache %s: %d checks passed, %d failed\n", argv[1], g_pass, g_fail);
        return g_fail ? 1 : 0;
    }
    const char *specs[] = {"f32", "f16", "q8", "q4", "topk8", "f32-causal", "f16-causal", "q8-causal", "q4-causal",
                           "topk8-causal", "topk1"};
    const int Ls[] = {1, 37, 200};
    for (const char *s : specs)
        for (int L : Ls) {
            run<float>(s, L, 4, 2, 64, L);
            run<bf16>(s, L, 4, 4, 32, L);
            run<bf16>(s, L, 4, 2, 64, L);  /* bf16 pairs per lane */
            run<bf16>(s, L, 8, 2, 128, L); /* bf16 quads per lane */
            if (strstr(s, "causal") && L > 1) run<float>(s, L, 4, 1, 128, L / 2); /* served prefix */
        }
    run<float>("q8-causal", 3000, 2, 1, 64, 3000); /* long rows */
    run<float>("q8-causal", 3000, 2, 1, 48, 3000); /* head dim 48: the block kernel, past 48 KB of shared memory */
    run<bf16>("topk8", 200, 4, 2, 48, 200);
    run<float>("f16", 37, 2, 2, 16, 37);
    run<float>("topk8", 200, 4, 2, 64, 200, 1); /* damaged indices: warp kernel */
    run<bf16>("topk8-causal", 200, 4, 4, 32, 200, 1);
    run<float>("topk8", 200, 4, 2, 48, 200, 1); /* and block kernel */
    run<float>("topk8-causal", 200, 4, 2, 64, 200, 0, 1); /* odd V stride: columns 32 apart per lane */
    run<bf16>("q8-causal", 200, 4, 2, 128, 200, 0, 1);
    run<bf16>("topk32", 300, 4, 1, 64, 300, 0, 3);
    run<bf16>("topk8-causal", 200, 8, 2, 64, 100); /* served prefix through the v4 gather (the default) */
    run<bf16>("topk32-causal", 700, 4, 1, 128, 333);
    /* v3: V past shared memory in key tiles (f32 hd 128: 446 rows a tile; bf16 hd 128: 892), q8 rows on
       the tensor cores at every head dim, dense and causal, GQA 4:1 */
    run<float>("topk8", 1000, 4, 1, 128, 1000);
    run<float>("topk8-causal", 1000, 4, 2, 128, 1000);
    run<bf16>("topk32-causal", 1200, 8, 2, 128, 1200);
    run<bf16>("topk32", 2000, 4, 1, 64, 2000); /* hd 64 bf16: 1784 rows a tile (the 2048-token bench case) */
    run<bf16>("q8-causal", 1200, 8, 2, 64, 1200);
    run<bf16>("q8", 300, 8, 2, 128, 300);
    run<bf16>("q8-causal", 77, 8, 2, 32, 50);
    /* several sequences in one launch */
    const vector<int> lens = {37, 200, 1, 130, 64};
    for (const char *s : {"topk8-causal", "q8-causal", "q8", "topk32", "f16-causal", "q4"}) {
        run_seqs<bf16>(s, lens, 1, 8, 2, 64);
        run_seqs<bf16>(s, lens, 0, 4, 4, 128);
        run_seqs<float>(s, lens, 2, 4, 2, 32);
    }
    run_seqs<bf16>("q8-causal", {1100, 900}, 0, 4, 1, 128);
    run_seqs<bf16>("q4-causal", {2500, 77}, 0, 4, 1, 64); /* q4 on the tensor cores past 2048 keys */
    /* rows [0, R) per sequence only (the served rows of partly served sites; session 14): R = L, L - 1, half,
       1 and 0; the rows past R untouched */
    const vector<int> rws = {20, 199, 1, 65, 0};
    for (const char *s : {"topk8-causal", "q8-causal", "q4-causal", "f16-causal", "topk32-causal"}) {
        run_seqs<bf16>(s, lens, 0, 8, 2, 64, 0, 0, 0, rws);
        run_seqs<bf16>(s, lens, 1, 4, 4, 128, 0, 0, 0, rws);
        run_seqs<float>(s, lens, 0, 4, 2, 32, 0, 0, 0, rws);
    }
    run_seqs<bf16>("q8-causal", {1100, 900}, 0, 4, 1, 64, 0, 0, 0, {1050, 37});
    run_seqs<bf16>("topk32-causal", {2000, 300}, 0, 4, 1, 64, 0, 0, 0, {1990, 300});
    /* the benchmark variants: top-k rows by the v3 gather (11; one key tile and several), q8 on the CUDA cores,
       a removed variant's number (1: 8-warp gather blocks, removed in session 15: the default) */
    run_seqs<bf16>("topk8-causal", lens, 1, 8, 2, 64, 11);
    run_seqs<bf16>("topk32", {2000, 300}, 0, 4, 1, 64, 11);
    run_seqs<bf16>("topk8-causal", lens, 1, 8, 2, 64, 1);
    run_seqs<bf16>("q8-causal", lens, 0, 8, 2, 64, 2);
    v4_cases(1);
    /* bad arguments are refused, not run */
    ac_cu_codec bad = {9, 0, 0};
    CHECK(ac_cu_codec_av<float>(&bad, NULL, 0, 8, 8, 1, 1, 8, NULL, 8, NULL, 8, 0) == AC_ERR_ARG, "bad codec kind");
    ac_cu_codec ok = {4, 1, 8};
    CHECK(ac_cu_codec_av_seqs<float>(&ok, NULL, NULL, 0, 1, 8, 1, 1, 64, NULL, 8, NULL, 8, 0) == AC_ERR_ARG,
          "batched: no map table");
    CHECK(ac_cu_codec_av_seqs<float>(&bad, (const void *const *)&ok, (const int *)&ok, 0, 1, 8, 1, 1, 64, NULL, 8, NULL,
                                     8, 0) == AC_ERR_ARG,
          "batched: bad codec kind");
    CHECK(ac_cu_codec_av_seqs_rows<float>(&ok, (const void *const *)&ok, (const int *)&ok, NULL, 0, 1, 8, 1, 1, 64,
                                          NULL, 8, NULL, 8, 0) == AC_ERR_ARG,
          "batched rows: no row table");
    printf("test_cuda_cache: %d checks passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
