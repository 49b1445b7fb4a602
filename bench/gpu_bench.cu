/* gpu_bench.cu — attncache's side of the GPU benchmark (bench/gpu_run.sh runs
 * it beside the PyTorch peer, bench/gpu_torch_peer.py, on the same shapes).
 *
 *   gpu_bench forward   exact bf16 prefill of random-weight models with real
 *                       shapes (Llama-3.2-1B, BERT-base, MiniLM-L6) at
 *                       L x batch; median of 10 after 3 warm-ups, CUDA events
 *                       (first to last GPU operation of each call); per-stage
 *                       split from a profiled extra call.
 *   gpu_bench attn      the fused attention kernel alone (each variant) at
 *                       head dims 64 and 128, causal and not.
 *   gpu_bench av        the A.V kernels alone (every variant) beside our fused attention (the default
 *                       kernel) on the same q/k/v, Llama-1B layer, 512 x 16, 2048 x 4, 8192 x 1.
 *   gpu_bench cache     the cache on the GPU: Llama-1B at 512 x 16 and 2048 x 4,
 *                       every (layer, sequence) served from compressed maps
 *                       (top-k 32 and q8 rows, causal; each sequence its own maps), beside the
 *                       exact forward in one run: maps resident on the device
 *                       (hot entries) and maps copied from pinned host memory
 *                       (overlapped with the layers before them); the attention
 *                       stage (A.V vs the fused kernel) and the Amdahl bound
 *                       (exact minus its attention core and Q/K projections).
 *   gpu_bench attnx     the fused kernel at Llama-1B's GQA layouts (fused QKV buffer vs separate, B 1 vs 2).
 *   gpu_bench fwd1 N L B [V]  Llama-1B's forward at L x B, N calls, attention variant V (0: default)
 *                       (for ncu and clock sampling). AC_BENCH_ATTN_VARIANT=V: `forward` with variant V.
 *   gpu_bench prefix    given prefix rows (the prefix K/V cache's seam): Llama-1B, only rows P..L-1
 *                       computed, beside the exact forward, cold (uploaded) and warm (resident in
 *                       the device prefix cache) (bench_prefix below).
 *   gpu_bench partial   partly served sites (rows [0, R) from top-32 maps, the rest exact): R = L, L - 16,
 *                       7L/8, L/2 beside exact, one sequence at a time and as runs (opts.partial_run),
 *                       Llama-1B at 512 x 16 and 2048 x 4 (bench_partial below).
 * Output: one "RESULT ..." line per measurement (parsed by the runner) and a
 * readable table. usage: gpu_bench forward|attn|cache|av|prefix|partial|all [repeats]
 *   (cache runs av after it: the A.V kernels alone, every variant, beside the fused kernel) */
#include "backends/cuda/cuda_attn.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_codec_av.h"

#include <algorithm>
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define OK(x)                                                                                                  \
    do {                                                                                                       \
        int rc_ = (x);                                                                                         \
        if (rc_ != AC_OK) {                                                                                    \
            fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #x, rc_, ac_last_error());            \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

typedef struct shape {
    const char *name;
    int arch;
    ac_hparams hp;
} shape;

static shape llama1b(void) {
    shape s = {"llama-1b", AC_ARCH_LLAMA, {}};
    ac_hparams *h = &s.hp;
    h->n_vocab = 128256, h->n_ctx_train = 131072, h->n_embd = 2048, h->n_layer = 16, h->n_head = 32;
    h->n_head_kv = 8, h->head_dim = 64, h->n_ff = 8192, h->n_rot = 64, h->rope_neox = 0, h->rope_base = 500000.f;
    h->rope_scale = 1.f, h->norm_eps = 1e-5f, h->causal = 1, h->pooling = AC_POOL_LAST;
    return s;
}
static shape bert(const char *name, int D, int layers, int heads, int ff) {
    shape s = {name, AC_ARCH_BERT, {}};
    ac_hparams *h = &s.hp;
    h->n_vocab = 30522, h->n_ctx_train = 512, h->n_embd = D, h->n_layer = layers, h->n_head = heads;
    h->n_head_kv = heads, h->head_dim = D / heads, h->n_ff = ff, h->n_rot = 0, h->norm_eps = 1e-12f, h->causal = 0;
    h->pooling = AC_POOL_MEAN;
    return s;
}

/* B sequences of L tokens each, back to back (token i of the batch: i * 2654435761 mod n_vocab), and
 * the outputs of a forward over them: pooled rows (pooling). Not copyable: o points into pooled. */
struct fwd_batch {
    int B;
    std::vector<int32_t> tok;
    std::vector<ac_seq> seqs;
    std::vector<float> pooled;
    ac_outputs o = {};
    fwd_batch(const ac_hparams &hp, int L, int B_, int pooling)
        : B(B_), tok((size_t)L * B_), seqs(B_), pooled((size_t)B_ * hp.n_embd) {
        const int T = L * B;
        for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 2654435761u) % (unsigned)hp.n_vocab);
        for (int b = 0; b < B; b++) seqs[b].tokens = tok.data() + (size_t)b * L, seqs[b].n_tokens = L;
        o.pooled = pooled.data();
        o.pooling = pooling;
    }
    fwd_batch(const fwd_batch &) = delete;
    fwd_batch &operator=(const fwd_batch &) = delete;
    int forward(ac_cuda_model *g, const ac_cuda_opts *opts) { return ac_cuda_forward(g, seqs.data(), B, &o, opts); }
};

/* The stage times (ms, st[AC_CUDA_PROF_N]) of one profiled forward */
static void profiled_forward(ac_cuda_model *g, fwd_batch &fb, const ac_cuda_opts *opts, float *st) {
    ac_cuda_set_profile(g, 1);
    OK(fb.forward(g, opts));
    ac_cuda_get_profile(g, st);
    ac_cuda_set_profile(g, 0);
}

/* Median ms (CUDA events) of reps forwards after 3 warm-ups, then one profiled call: its stages in st */
static double timed_forward(ac_cuda_model *g, fwd_batch &fb, const ac_cuda_opts *opts, int reps, float *st) {
    for (int i = 0; i < 3; i++) OK(fb.forward(g, opts));
    std::vector<double> ev;
    for (int i = 0; i < reps; i++) {
        OK(fb.forward(g, opts));
        ev.push_back(ac_cuda_last_ms(g));
    }
    profiled_forward(g, fb, opts, st);
    return median(ev);
}

static void bench_forward(int reps) {
    struct {
        shape s;
        int L, B;
    } cases[] = {{llama1b(), 512, 16},
                 {llama1b(), 2048, 4},
                 {llama1b(), 8192, 1},
                 {bert("bert-base", 768, 12, 12, 3072), 128, 256},
                 {bert("bert-base", 768, 12, 12, 3072), 512, 64},
                 {bert("minilm-l6", 384, 6, 12, 1536), 128, 256},
                 {bert("minilm-l6", 384, 6, 12, 1536), 512, 64},
                 /* single requests: launch-bound, measured with CUDA graphs (default) and without */
                 {bert("minilm-l6", 384, 6, 12, 1536), 16, 1},
                 {bert("minilm-l6", 384, 6, 12, 1536), 128, 1},
                 {bert("bert-base", 768, 12, 12, 3072), 128, 1},
                 {llama1b(), 128, 1}};
    printf("%-10s %6s %6s %10s %10s %12s   stages ms: embed qkv+rope attn o mlp norm out\n", "model", "L", "batch",
           "median ms", "wall ms", "tokens/s");
    const char *last = "";
    ac_cuda_model *g = NULL;
    for (auto &c : cases) {
        if (strcmp(last, c.s.name)) {
            ac_cuda_model_free(g);
            OK(ac_cuda_model_random(c.s.arch, &c.s.hp, AC_CUDA_BF16, 7, &g));
            last = c.s.name;
        }
        const int T = c.L * c.B;
        fwd_batch fb(c.s.hp, c.L, c.B, c.s.hp.pooling);
        /* AC_BENCH_ATTN_VARIANT=v: the fused attention's variant v where the head dim has it (else the default) */
        ac_cuda_opts fo = {};
        const char *evar = getenv("AC_BENCH_ATTN_VARIANT");
        if (evar && ac_cu_flash_variant_ok(c.s.hp.head_dim, atoi(evar))) fo.attn_variant = atoi(evar);
        const ac_cuda_opts *fop = fo.attn_variant ? &fo : NULL;
        for (int i = 0; i < 3; i++) OK(fb.forward(g, fop));
        std::vector<double> ev, wall;
        for (int i = 0; i < reps; i++) {
            double t0 = ac_now();
            OK(fb.forward(g, fop));
            wall.push_back((ac_now() - t0) * 1e3);
            ev.push_back(ac_cuda_last_ms(g));
        }
        float st[AC_CUDA_PROF_N];
        profiled_forward(g, fb, fop, st);
        const double ms = median(ev);
        printf("%-10s %6d %6d %10.3f %10.3f %12.0f   %.2f %.2f %.2f %.2f %.2f %.2f %.2f\n", c.s.name, c.L, c.B, ms,
               median(wall), T / (ms * 1e-3), st[0], st[1], st[2], st[3], st[4], st[5], st[6]);
        printf("RESULT forward %s %d %d %.4f\n", c.s.name, c.L, c.B, ms);
        if (c.B == 1) { /* the same without CUDA graphs (every kernel launched from the host) */
            ac_cuda_set_graphs(g, 0);
            std::vector<double> ev0;
            for (int i = 0; i < reps; i++) {
                OK(fb.forward(g, fop));
                ev0.push_back(ac_cuda_last_ms(g));
            }
            ac_cuda_set_graphs(g, 1);
            long long caps = 0, reps_g = 0;
            ac_cuda_graph_stats(g, NULL, &caps, &reps_g);
            printf("%-10s %6d %6d %10.3f   (no CUDA graphs: graphs %.2fx faster; %lld captured, %lld replays so far)\n",
                   c.s.name, c.L, c.B, median(ev0), median(ev0) / ms, caps, reps_g);
            printf("RESULT forward_nograph %s %d %d %.4f\n", c.s.name, c.L, c.B, median(ev0));
        }
        fflush(stdout);
    }
    ac_cuda_model_free(g);
}

/* median ms of reps calls of the fused attention (variant w) after 3 warm-ups, CUDA events */
static double time_flash(const ac_cu_attn *a, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *o, int w, int reps) {
    static cudaEvent_t e0, e1;
    if (!e0) cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++) OK(ac_cu_flash_attn(a, q, k, v, o, w, 0));
    std::vector<double> t;
    for (int i = 0; i < reps; i++) {
        cudaEventRecord(e0);
        OK(ac_cu_flash_attn(a, q, k, v, o, w, 0));
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        t.push_back(ms);
    }
    return median(t);
}

static void bench_attn(int reps) {
    struct {
        int B, H, L, hd, causal;
    } cases[] = {{8, 16, 2048, 128, 0}, {8, 16, 2048, 128, 1}, {8, 32, 2048, 64, 0}, {8, 32, 2048, 64, 1},
                 {2, 16, 8192, 128, 1}, {2, 32, 8192, 64, 1},
                 {64, 12, 512, 64, 0}, {64, 12, 512, 32, 0}}; /* BERT-base, MiniLM at 512 x 64 */
    printf("\n%-28s %6s %10s %10s\n", "attention (B,H,L,hd,causal)", "variant", "median ms", "TFLOP/s");
    for (auto &c : cases) {
        const size_t T = (size_t)c.B * c.L, n = T * c.H * c.hd;
        bf16 *q, *k, *v, *o;
        int *cu;
        cudaMalloc(&q, n * 2), cudaMalloc(&k, n * 2), cudaMalloc(&v, n * 2), cudaMalloc(&o, n * 2);
        cudaMalloc(&cu, (c.B + 1) * 4);
        std::vector<int> hcu(c.B + 1);
        for (int b = 0; b <= c.B; b++) hcu[b] = b * c.L;
        cudaMemcpy(cu, hcu.data(), hcu.size() * 4, cudaMemcpyHostToDevice);
        std::vector<uint16_t> h(n);
        for (size_t i = 0; i < n; i++) h[i] = ac_host_f32_to_bf16((float)((i * 2654435761u) % 2001) / 1000.f - 1.f);
        cudaMemcpy(q, h.data(), n * 2, cudaMemcpyHostToDevice);
        for (size_t i = 0; i < n; i++) h[i] = ac_host_f32_to_bf16((float)((i * 40503u + 7) % 1999) / 1000.f - 1.f);
        cudaMemcpy(k, h.data(), n * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(v, h.data(), n * 2, cudaMemcpyHostToDevice);
        ac_cu_attn a = {c.B, c.L, cu, c.H, c.H, c.hd, c.H * c.hd, c.H * c.hd, c.H * c.hd, c.causal,
                        1.0f / sqrtf((float)c.hd)};
        const double flop = 4.0 * c.B * c.H * (double)c.L * c.L * c.hd * (c.causal ? 0.5 : 1.0);
        for (int w = AC_FLASH_W4; w <= ac_flash_last_variant(c.hd); w++) {
            if (!ac_cu_flash_variant_ok(c.hd, w)) continue;
            const double ms = time_flash(&a, q, k, v, o, w, reps);
            printf("%2d,%2d,%5d,%3d,%d %17d %10.3f %10.1f\n", c.B, c.H, c.L, c.hd, c.causal, w, ms,
                   flop / (ms * 1e-3) / 1e12);
            printf("RESULT attn %d %d %d %d %d %d %.4f\n", c.B, c.H, c.L, c.hd, c.causal, w, ms);
            fflush(stdout);
        }
        cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(cu);
    }
}

/* The fused kernel at the forward's own layouts (session 13): Llama-1B's GQA (32 query heads over 8
 * kv heads) read from one fused [T][QKV] buffer (ldq = ldk = 3072, as the forward passes it) vs
 * separate buffers and vs no GQA, at B = 1 and 2, with flat and peaky scores (q scaled by `qs`):
 * which of these makes the forward's attention at 8192 x 1 slower than the kernel bench's B = 2 case. */
static void bench_attnx(int reps) {
    struct {
        int B, H, Hkv, L, fused;
        float qs;
    } cases[] = {{2, 32, 32, 8192, 0, 1.f}, {1, 32, 32, 8192, 0, 1.f}, {1, 32, 8, 8192, 0, 1.f},
                 {1, 32, 8, 8192, 1, 1.f},  {2, 32, 8, 8192, 1, 1.f},  {1, 32, 8, 8192, 1, 8.f},
                 {4, 32, 8, 2048, 1, 1.f},  {16, 32, 8, 512, 1, 1.f}};
    const int hd = 64;
    printf("\n%-40s %6s %10s %10s\n", "attention x (B,H,Hkv,L,fused,qscale)", "variant", "median ms", "TFLOP/s");
    for (auto &c : cases) {
        const size_t T = (size_t)c.B * c.L;
        const int QD = c.H * hd, KVD = c.Hkv * hd, QKV = QD + 2 * KVD;
        bf16 *buf, *o;
        int *cu;
        cudaMalloc(&buf, T * QKV * 2), cudaMalloc(&o, T * QD * 2), cudaMalloc(&cu, (c.B + 1) * 4);
        std::vector<int> hcu(c.B + 1);
        for (int b = 0; b <= c.B; b++) hcu[b] = b * c.L;
        cudaMemcpy(cu, hcu.data(), hcu.size() * 4, cudaMemcpyHostToDevice);
        std::vector<uint16_t> h(T * QKV);
        for (size_t i = 0; i < h.size(); i++) {
            const float u = (float)((i * 2654435761u + (i >> 7) * 40503u) % 2001) / 1000.f - 1.f;
            h[i] = ac_host_f32_to_bf16(u);
        }
        /* fused: [T][QD | KVD | KVD]; separate: Q [T][QD], then K [T][KVD], then V [T][KVD] */
        if (c.qs != 1.f)
            for (size_t r = 0; r < T; r++)
                for (int j = 0; j < QD; j++) {
                    const size_t i = c.fused ? r * QKV + j : r * QD + j;
                    h[i] = ac_host_f32_to_bf16(c.qs * ((float)((i * 2654435761u) % 2001) / 1000.f - 1.f));
                }
        cudaMemcpy(buf, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
        const bf16 *q = buf, *k = c.fused ? buf + QD : buf + T * QD, *v = c.fused ? buf + QD + KVD : buf + T * (QD + KVD);
        const int ld = c.fused ? QKV : 0;
        ac_cu_attn a = {c.B, c.L, cu, c.H, c.Hkv, hd, c.fused ? ld : QD, c.fused ? ld : KVD, QD, 1, 0.125f};
        const double flop = 4.0 * c.B * c.H * (double)c.L * c.L * hd * 0.5;
        for (int w = AC_FLASH_W4; w <= ac_flash_last_variant(hd); w++) {
            if (!ac_cu_flash_variant_ok(hd, w)) continue;
            const double ms = time_flash(&a, q, k, v, o, w, reps);
            printf("%2d,%2d,%2d,%5d,%d,%.0f %28d %10.3f %10.1f\n", c.B, c.H, c.Hkv, c.L, c.fused, c.qs, w, ms,
                   flop / (ms * 1e-3) / 1e12);
            printf("RESULT attnx %d %d %d %d %d %.0f %d %.4f\n", c.B, c.H, c.Hkv, c.L, c.fused, c.qs, w, ms);
            fflush(stdout);
        }
        cudaFree(buf), cudaFree(o), cudaFree(cu);
    }
}

/* Llama-1B exact forward at one shape, n calls back to back (for ncu and clock sampling). */
static void bench_fwd1(int L, int B, int n, int variant) {
    shape s = llama1b();
    ac_cuda_model *g = NULL;
    OK(ac_cuda_model_random(s.arch, &s.hp, AC_CUDA_BF16, 7, &g));
    fwd_batch fb(s.hp, L, B, s.hp.pooling);
    ac_cuda_opts fo = {};
    fo.attn_variant = variant;
    std::vector<double> ev;
    for (int i = 0; i < n; i++) {
        OK(fb.forward(g, &fo));
        ev.push_back(ac_cuda_last_ms(g));
    }
    float st[AC_CUDA_PROF_N];
    profiled_forward(g, fb, &fo, st);
    printf("fwd1 llama-1b %d x %d, attention variant %d: %d calls, median %.3f ms; stages embed %.2f qkv %.2f attn %.2f o %.2f mlp %.2f "
           "norm %.2f out %.2f\n", L, B, variant, n, median(ev), st[0], st[1], st[2], st[3], st[4], st[5], st[6]);
    ac_cuda_model_free(g);
}

/* One sequence's H head maps of random rows in a codec (kind 2 q8 or 4 top-k), rows back to back as
 * src/cache/codec.h lays them out: top-k keeps k evenly spaced keys of 1/k each, q8 random weights
 * summing to about 1. */
static std::vector<unsigned char> rand_maps(int kind, int causal, int topk, int L, int H, uint64_t seed) {
    const size_t mb = ac_cuda_map_bytes(kind, causal, topk, L);
    std::vector<unsigned char> m(mb * H, 0);
    uint64_t r = 12345 + seed;
    for (int h = 0; h < H; h++) {
        unsigned char *p = m.data() + mb * h;
        for (int t = 0; t < L; t++) {
            const int n = causal ? t + 1 : L;
            if (kind == 4) {
                const int k = n < topk ? n : topk;
                uint16_t *idx = (uint16_t *)p, *val = idx + k; /* unaligned in general: memcpy */
                const __half w = __float2half(1.0f / k);
                for (int i = 0; i < k; i++) {
                    const uint16_t ix = (uint16_t)((int64_t)i * n / k);
                    uint16_t wv;
                    memcpy(&wv, &w, 2);
                    memcpy((unsigned char *)idx + 2 * i, &ix, 2);
                    memcpy((unsigned char *)val + 2 * i, &wv, 2);
                }
                p += 4 * (size_t)k;
            } else {
                const float scale = 2.0f / (255.0f * n);
                memcpy(p, &scale, 4);
                for (int j = 0; j < n; j++) {
                    r = r * 6364136223846793005ull + 1442695040888963407ull;
                    p[4 + j] = (unsigned char)(r >> 56);
                }
                p += 4 + (size_t)n;
            }
        }
    }
    return m;
}

/* each sequence its own maps (the same at every layer): the A.V reads them from HBM, as distinct
 * requests would, rather than one sequence's maps from L2 for the whole batch */
typedef struct served_maps {
    const unsigned char *p;
    size_t per_seq;
} served_maps;
static const void *serve_same(void *user, int layer, int seq, int L) {
    (void)layer, (void)L;
    const served_maps *m = (const served_maps *)user;
    return m->p + (size_t)seq * m->per_seq;
}

static void bench_cache(int reps) {
    struct {
        int L, B;
    } cases[] = {{512, 16}, {2048, 4}};
    struct {
        const char *name;
        int kind, causal, topk;
    } codecs[] = {{"topk32-causal", 4, 1, 32}, {"q8-causal", 2, 1, 0}};
    shape sh = llama1b();
    ac_cuda_model *g = NULL;
    OK(ac_cuda_model_random(sh.arch, &sh.hp, AC_CUDA_BF16, 7, &g));
    const int H = sh.hp.n_head, QD = H * sh.hp.head_dim, KVD = sh.hp.n_head_kv * sh.hp.head_dim, QKV = QD + 2 * KVD;
    (void)QKV;
    printf("\ncache on the GPU, llama-1b bf16, every site served (stages ms: qkv+rope | attention)\n");
    printf("%-6s %-14s %-10s %9s %8s %8s %9s %9s %9s %8s\n", "L x B", "codec", "maps", "ms", "qkv ms", "attn ms",
           "vs exact", "attn op x", "bound x", "% bound");
    for (auto &c : cases) {
        fwd_batch fb(sh.hp, c.L, c.B, AC_POOL_LAST);
        float se[AC_CUDA_PROF_N];
        const double exact = timed_forward(g, fb, NULL, reps, se);
        printf("%4dx%-2d %-14s %-10s %9.3f %8.3f %8.3f\n", c.L, c.B, "exact", "-", exact, se[1], se[2]);
        printf("RESULT cache %d %d exact - %.4f %.4f %.4f\n", c.L, c.B, exact, se[1], se[2]);
        for (auto &k : codecs) {
            std::vector<unsigned char> h;
            for (int b = 0; b < c.B; b++) {
                std::vector<unsigned char> m = rand_maps(k.kind, k.causal, k.topk, c.L, H, (uint64_t)b);
                h.insert(h.end(), m.begin(), m.end());
            }
            const size_t per_seq = h.size() / c.B;
            void *dmaps = NULL, *pinned = NULL;
            if (cudaMalloc(&dmaps, h.size()) != cudaSuccess || cudaMallocHost(&pinned, h.size()) != cudaSuccess) {
                fprintf(stderr, "cannot allocate %zu bytes of maps\n", h.size());
                exit(1);
            }
            cudaMemcpy(dmaps, h.data(), h.size(), cudaMemcpyHostToDevice);
            memcpy(pinned, h.data(), h.size());
            for (int where = 0; where < 2; where++) {
                served_maps sm = {(const unsigned char *)(where ? pinned : dmaps), per_seq};
                ac_cuda_opts opts = {};
                opts.serve = serve_same, opts.user = &sm;
                opts.codec_kind = k.kind, opts.codec_causal = k.causal, opts.codec_topk = k.topk;
                float sc[AC_CUDA_PROF_N];
                const double ms = timed_forward(g, fb, &opts, reps, sc);
                int sites = 0;
                size_t up = 0;
                ac_cuda_last_served(g, &sites, &up);
                /* bound: the exact forward without its attention core and with only V projected */
                const double bound = exact - se[1] - se[2] + sc[1];
                printf("%4dx%-2d %-14s %-10s %9.3f %8.3f %8.3f %8.2fx %8.2fx %8.2fx %7.0f%%   (%d sites, %.0f MB up)\n",
                       c.L, c.B, k.name, where ? "pinned" : "device", ms, sc[1], sc[2], exact / ms, se[2] / sc[2],
                       exact / bound, 100.0 * bound / ms, sites, up / 1e6);
                printf("RESULT cache %d %d %s %s %.4f %.4f %.4f %.4f\n", c.L, c.B, k.name, where ? "pinned" : "device",
                       ms, sc[1], sc[2], bound);
                fflush(stdout);
            }
            cudaFree(dmaps), cudaFreeHost(pinned);
        }
    }
    ac_cuda_model_free(g);
}

/* Partly served sites (session 14): every site serves rows [0, R) of its maps (top-32 causal, device
 * memory, each sequence its own), rows [R, L) exact over every key; R = L (whole), L - 16 (an exact
 * tail), 7L/8, L/2; beside the exact forward, in one run (CUDA events; stages qkv+rope | attention). */
typedef struct rows_maps {
    const unsigned char *p;
    size_t per_seq, head_bytes;
    int rows; /* 0: every row */
} rows_maps;
static int serve_rows(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    (void)layer, (void)L;
    const rows_maps *m = (const rows_maps *)user;
    out->maps = m->p + (size_t)seq * m->per_seq;
    out->head_bytes = m->head_bytes;
    out->kind = 4, out->causal = 1, out->topk = 32;
    out->rows = m->rows;
    return 1;
}

static void bench_partial(int reps) {
    struct {
        int L, B;
    } cases[] = {{512, 16}, {2048, 4}};
    shape sh = llama1b();
    ac_cuda_model *g = NULL;
    OK(ac_cuda_model_random(sh.arch, &sh.hp, AC_CUDA_BF16, 7, &g));
    const int H = sh.hp.n_head;
    printf("\npartly served sites on the GPU, llama-1b bf16, top-32 causal maps on the device (stages ms: qkv+rope | "
           "attention)\n");
    printf("%-7s %-12s %9s %8s %8s %9s\n", "L x B", "rows", "ms", "qkv ms", "attn ms", "vs exact");
    for (auto &c : cases) {
        fwd_batch fb(sh.hp, c.L, c.B, AC_POOL_LAST);
        float se[AC_CUDA_PROF_N];
        const double exact = timed_forward(g, fb, NULL, reps, se);
        printf("%4dx%-2d %-12s %9.3f %8.3f %8.3f\n", c.L, c.B, "exact", exact, se[1], se[2]);
        printf("RESULT partial %d %d exact %.4f %.4f %.4f\n", c.L, c.B, exact, se[1], se[2]);
        std::vector<unsigned char> h;
        for (int b = 0; b < c.B; b++) {
            std::vector<unsigned char> m = rand_maps(4, 1, 32, c.L, H, (uint64_t)b);
            h.insert(h.end(), m.begin(), m.end());
        }
        void *dmaps = NULL;
        if (cudaMalloc(&dmaps, h.size()) != cudaSuccess) {
            fprintf(stderr, "cannot allocate %zu bytes of maps\n", h.size());
            exit(1);
        }
        cudaMemcpy(dmaps, h.data(), h.size(), cudaMemcpyHostToDevice);
        const int rows[4] = {0, c.L - 16, c.L * 7 / 8, c.L / 2};
        const char *names[4] = {"whole", "tail 16", "7L/8", "L/2"};
        for (int v = 0; v < 7; v++) { /* whole; then each R one sequence at a time (seq) and as runs (run) */
            const int vr = v == 0 ? 0 : 1 + (v - 1) / 2, as_run = v > 0 && (v - 1) % 2;
            rows_maps rm = {(const unsigned char *)dmaps, h.size() / c.B, ac_cuda_map_bytes(4, 1, 32, c.L), rows[vr]};
            ac_cuda_opts opts = {};
            opts.serve_site = serve_rows, opts.user = &rm, opts.partial_run = as_run ? 1 : -1;
            float sc[AC_CUDA_PROF_N];
            const double ms = timed_forward(g, fb, &opts, reps, sc);
            char nm[32];
            snprintf(nm, sizeof nm, "%s%s", names[vr], v == 0 ? "" : as_run ? " run" : " seq");
            printf("%4dx%-2d %-12s %9.3f %8.3f %8.3f %8.2fx\n", c.L, c.B, nm, ms, sc[1], sc[2], exact / ms);
            printf("RESULT partial %d %d %s %.4f %.4f %.4f\n", c.L, c.B, nm, ms, sc[1], sc[2]);
            fflush(stdout);
        }
        cudaFree(dmaps);
    }
    ac_cuda_model_free(g);
}

/* The A.V kernels alone beside our fused attention, one Llama-1B layer (H 32, Hkv 8, hd 64) over
 * the batch, q/k/v inside one [T][QKV] buffer as in the forward, each sequence its own maps on the
 * device: per-layer microseconds and the ratio, for every kernel variant (cuda_codec_av.h). */
static void bench_av(int reps) {
    struct {
        int L, B;
    } cases[] = {{512, 16}, {2048, 4}, {8192, 1}};
    struct {
        const char *name;
        int kind, causal, topk;
    } codecs[] = {{"topk32-causal", 4, 1, 32}, {"q8-causal", 2, 1, 0}};
    const int H = 32, Hkv = 8, hd = 64, QD = H * hd, QKV = QD + 2 * Hkv * hd;
    printf("\nA.V alone, one llama-1b layer (us), beside our fused attention on the same q/k/v\n");
    printf("%-8s %-14s %8s %10s %10s %9s\n", "L x B", "codec", "variant", "A.V us", "flash us", "attn op x");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    auto time_it = [&](auto &&fn) {
        for (int i = 0; i < 3; i++) fn();
        std::vector<double> t;
        for (int i = 0; i < reps; i++) {
            cudaEventRecord(e0);
            fn();
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            t.push_back(ms * 1e3);
        }
        return median(t);
    };
    /* AC_BENCH_AV_L=N: only the case of N tokens; AC_BENCH_AV_VARIANTS=a,b,...: only those variants (one
       kernel under a profiler) */
    const int only_L = getenv("AC_BENCH_AV_L") ? atoi(getenv("AC_BENCH_AV_L")) : 0;
    const char *only_v = getenv("AC_BENCH_AV_VARIANTS");
    auto wanted = [&](int var) {
        if (!only_v) return true;
        for (const char *p = only_v; *p;) {
            char *end;
            const long x = strtol(p, &end, 10);
            if (end == p) break;
            if (x == var) return true;
            p = *end == ',' ? end + 1 : end;
        }
        return false;
    };
    for (auto &c : cases) {
        if (only_L && c.L != only_L) continue;
        const size_t T = (size_t)c.L * c.B;
        bf16 *qkv, *att;
        int *cu;
        cudaMalloc(&qkv, T * QKV * 2), cudaMalloc(&att, T * QD * 2), cudaMalloc(&cu, (c.B + 1) * 4);
        std::vector<uint16_t> h(T * QKV);
        for (size_t i = 0; i < h.size(); i++) h[i] = ac_host_f32_to_bf16((float)((i * 2654435761u) % 2001) / 1000.f - 1.f);
        cudaMemcpy(qkv, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
        std::vector<int> hcu(c.B + 1);
        for (int b = 0; b <= c.B; b++) hcu[b] = b * c.L;
        cudaMemcpy(cu, hcu.data(), hcu.size() * 4, cudaMemcpyHostToDevice);
        ac_cu_attn a = {c.B, c.L, cu, H, Hkv, hd, QKV, QKV, QD, 1, 0.125f};
        const double flash = time_it([&] { OK(ac_cu_flash_attn(&a, qkv, qkv + QD, qkv + QD + Hkv * hd, att, 0, 0)); });
        for (auto &k : codecs) {
            std::vector<void *> maps(c.B);
            for (int b = 0; b < c.B; b++) {
                std::vector<unsigned char> m = rand_maps(k.kind, k.causal, k.topk, c.L, H, (uint64_t)b);
                cudaMalloc(&maps[b], m.size());
                cudaMemcpy(maps[b], m.data(), m.size(), cudaMemcpyHostToDevice);
            }
            void **tab;
            cudaMalloc(&tab, c.B * sizeof(void *));
            cudaMemcpy(tab, maps.data(), c.B * sizeof(void *), cudaMemcpyHostToDevice);
            const ac_cu_codec cc = {k.kind, k.causal, k.topk};
            /* top-k: the default (0: variant 8 up to 1024 keys, else 4, since session 15), v3 (11) and v4 (4: V through L1, 5: tensor
               cores, 8: 5 on wgmma, 12-14: 8 without block barriers in the key loop); q8:
               the tensor cores (0) and, up to 2048 tokens, the CUDA-core gather (2) */
            const std::vector<int> vars = k.kind == 4 ? std::vector<int>{0, 11, 4, 5, 8, 12, 13, 14}
                                                      : c.L <= 2048 ? std::vector<int>{0, 2} : std::vector<int>{0};
            for (int var : vars) {
                if (!wanted(var)) continue;
                const double us = time_it([&] {
                    OK(ac_cu_codec_av_seqs_variant<bf16>(&cc, (const void *const *)tab, cu, 0, c.B, c.L, H, Hkv, hd,
                                                         qkv + QD + Hkv * hd, QKV, att, QD, 0, var));
                });
                printf("%4dx%-3d %-14s %8d %10.1f %10.1f %8.2fx\n", c.L, c.B, k.name, var, us, flash, flash / us);
                printf("RESULT av %d %d %s %d %.2f %.2f\n", c.L, c.B, k.name, var, us, flash);
                fflush(stdout);
            }
            for (void *m : maps) cudaFree(m);
            cudaFree(tab);
        }
        cudaFree(qkv), cudaFree(att), cudaFree(cu);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* The prefix K/V cache's seam on the GPU: Llama-1B bf16, each sequence's first P rows given (K/V of
 * every layer and final hidden states in host f32, as the prefix cache's lookup leaves them, in
 * pinned memory, uploaded one layer ahead), only rows P..L-1 computed, the computed rows copied
 * back; beside the exact forward of the same sequences in one run. Each case twice: cold (the rows
 * uploaded every call, as without the device prefix cache) and warm (every prefix resident in the
 * device prefix cache: found before the call, nothing uploaded). ms = CUDA events of the main
 * stream (the uploads overlap it); wall = the whole call, copies and the warm call's finds included
 * (the tree's own lookup and insert copies are not: cuda_ctx.c's, timed by `attncache bench --gpu
 * --prefix-cache`). Bound = L / (L - P) (tokens over computed tokens). Budget of the device prefix
 * cache: AC_CUDA_PREFIX_CACHE_MB when set, else 2 GiB (the largest case keeps ~300 MB). */
static void bench_prefix(int reps) {
    struct {
        int L, B, P;
    } cases[] = {{512, 16, 448}, {2048, 4, 1792}, {2048, 4, 1024}, {8192, 1, 7168}};
    shape sh = llama1b();
    ac_cuda_model *g = NULL;
    OK(ac_cuda_model_random(sh.arch, &sh.hp, AC_CUDA_BF16, 7, &g));
    const int NL = sh.hp.n_layer, KVD = sh.hp.n_head_kv * sh.hp.head_dim, D = sh.hp.n_embd;
    const char *env = getenv("AC_CUDA_PREFIX_CACHE_MB");
    const size_t budget = env && *env ? (size_t)strtoull(env, NULL, 10) << 20 : (size_t)2 << 30;
    printf("%6s %4s %6s %10s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %10s %10s\n", "L", "B", "P", "exact ms",
           "exact wall", "cold ms", "cold wall", "warm ms", "warm wall", "cold ev", "cold wl", "warm ev", "warm wl",
           "bound", "cold MiB", "warm MiB");
    for (auto &c : cases) {
        fwd_batch fb(sh.hp, c.L, c.B, AC_POOL_LAST);
        std::vector<float *> kvp(c.B), hidp(c.B); /* pinned, as the cuda context's rows (cuda_ctx.c) */
        std::vector<int> P(c.B, 0), ld(c.B, c.L);
        for (int b = 0; b < c.B; b++) {
            kvp[b] = (float *)ac_cuda_host_alloc((size_t)NL * 2 * c.L * KVD * 4);
            hidp[b] = (float *)ac_cuda_host_alloc((size_t)c.L * D * 4);
            if (!kvp[b] || !hidp[b]) OK(AC_ERR_NOMEM);
        }
        ac_cuda_opts po = {};
        po.pfx_P = P.data(), po.pfx_ld = ld.data(), po.pfx_kv = kvp.data(), po.pfx_hid = hidp.data();
        OK(fb.forward(g, &po)); /* every row written back: the rows to give */
        for (int b = 0; b < c.B; b++) P[b] = c.P;
        OK(ac_cuda_set_prefix_cache(g, budget));
        std::vector<unsigned char> res(c.B);
        ac_cuda_opts pw = po; /* warm: resident (the keep call below made them so) */
        pw.pfx_res = res.data(), pw.pfx_keep = 1;
        ac_cuda_opts pk = po;
        pk.pfx_keep = 1;
        OK(fb.forward(g, &pk)); /* cold, made resident */
        auto warm = [&]() {
            for (int b = 0; b < c.B; b++) res[b] = (unsigned char)ac_cuda_prefix_cache_find(g, fb.seqs[b].tokens, c.P);
            return fb.forward(g, &pw);
        };
        std::vector<double> ev_e, wall_e, ev_p, wall_p, ev_w, wall_w;
        for (int i = 0; i < 2; i++) { /* warm-ups */
            OK(fb.forward(g, NULL));
            OK(fb.forward(g, &po));
            OK(warm());
        }
        ac_cuda_prefix_stats st_c, st_w;
        int n_res = 0;
        for (int i = 0; i < reps; i++) { /* alternating */
            double t0 = ac_now();
            OK(fb.forward(g, NULL));
            wall_e.push_back((ac_now() - t0) * 1e3), ev_e.push_back(ac_cuda_last_ms(g));
            t0 = ac_now();
            OK(fb.forward(g, &po));
            wall_p.push_back((ac_now() - t0) * 1e3), ev_p.push_back(ac_cuda_last_ms(g));
            ac_cuda_prefix_cache_stats(g, &st_c);
            t0 = ac_now();
            OK(warm());
            wall_w.push_back((ac_now() - t0) * 1e3), ev_w.push_back(ac_cuda_last_ms(g));
            ac_cuda_prefix_cache_stats(g, &st_w);
            n_res = st_w.last_resident_hits;
        }
        const double me = median(ev_e), mwe = median(wall_e), mp = median(ev_p), mwp = median(wall_p);
        const double mw = median(ev_w), mww = median(wall_w);
        printf("%6d %4d %6d %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %7.2fx %7.2fx %7.2fx %7.2fx %7.2fx %10.1f %10.1f\n",
               c.L, c.B, c.P, me, mwe, mp, mwp, mw, mww, me / mp, mwe / mwp, me / mw, mwe / mww,
               (double)c.L / (c.L - c.P), st_c.last_bytes_uploaded / 1048576.0, st_w.last_bytes_uploaded / 1048576.0);
        printf("  device prefix cache: %d of %d sequences from blocks (warm); %llu hits, %llu misses, %llu blocks made "
               "(%.1f MiB), %llu evicted, %d resident (%.1f MiB of %.1f)\n",
               n_res, c.B, (unsigned long long)st_w.lru.hits, (unsigned long long)st_w.lru.misses,
               (unsigned long long)st_w.lru.inserts, st_w.lru.bytes_inserted / 1048576.0,
               (unsigned long long)st_w.lru.evictions, st_w.lru.entries, st_w.lru.resident / 1048576.0,
               st_w.lru.budget / 1048576.0);
        printf("RESULT prefix %d %d %d %.4f %.4f %.4f %.4f %.4f %.4f %zu %zu\n", c.L, c.B, c.P, me, mwe, mp, mwp, mw, mww,
               st_c.last_bytes_uploaded, st_w.last_bytes_uploaded);
        fflush(stdout);
        OK(ac_cuda_set_prefix_cache(g, 0)); /* the next case starts empty */
        for (int b = 0; b < c.B; b++) ac_cuda_host_free(kvp[b]), ac_cuda_host_free(hidp[b]);
    }
    ac_cuda_model_free(g);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    const int reps = argc > 2 ? atoi(argv[2]) : 10;
    if (!ac_cuda_available()) {
        printf("SKIP gpu_bench: no CUDA device\n");
        return 0;
    }
    char dev[256];
    OK(ac_cuda_device_name(dev, sizeof dev));
    printf("device: %s\n", dev);
    if (!strcmp(what, "attn") || !strcmp(what, "all")) bench_attn(reps);
    if (!strcmp(what, "forward") || !strcmp(what, "all")) bench_forward(reps);
    if (!strcmp(what, "cache")) bench_cache(reps);
    if (!strcmp(what, "av") || !strcmp(what, "cache")) bench_av(reps);
    if (!strcmp(what, "prefix")) bench_prefix(reps);
    if (!strcmp(what, "partial")) bench_partial(reps);
    if (!strcmp(what, "attnx")) bench_attnx(reps);
    if (!strcmp(what, "fwd1")) /* gpu_bench fwd1 N L B */
        bench_fwd1(argc > 3 ? atoi(argv[3]) : 8192, argc > 4 ? atoi(argv[4]) : 1, reps, argc > 5 ? atoi(argv[5]) : 0);
    return 0;
}
