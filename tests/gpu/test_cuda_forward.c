/* test_cuda_forward.c — the CUDA backend's whole forward pass against the CPU
 * engine on real models: all-MiniLM-L6-v2 (bert) and stories260K (llama).
 * Fresh random token batches of mixed lengths (packed, 1 token included):
 *   f32 mode   hidden / pooled / logits within 1e-4 relative of the CPU's exact
 *              f32 path (loaded unpacked: no BF16 GEMMs on the CPU side);
 *   bf16 mode  within bf16 tolerance (2e-2 relative, pooled cosine > 0.999);
 *   stories260K's llama2.c greedy lines reproduced by repeated GPU prefill (f32);
 *   recorded maps (materialised path): rows sum to 1, causal zeros, same output;
 *   bad input (empty, out-of-range ids) refused with AC_ERR_INPUT;
 *   synthetic qwen2 (NEOX RoPE, q/k/v biases, GQA, head dim 64: the fused kernel), llama with
 *   rope_freqs and head dim 32, and bert with a classifier head (tests/ref_forward.c's builder);
 *   partly served sites, per-head serving and both caches on one context against the CPU's cached
 *   forward (check_partial, check_cache_api, check_both_caches_api: session 14).
 * Exits 0 with "SKIP" without a CUDA device; a model file that is absent is
 * skipped with a message. usage: test_cuda_forward [minilm.gguf] [stories260K.gguf] [greedy.tsv] */
#include "gpu_check.h"

#include "backends/cuda/cuda_backend.h"
#include "cache/codec.h"
#include "forward/forward.h"
#include "util/common.h"
#include "ref_forward.h"

#include <cuda_runtime_api.h>
#include <string.h>
#include <unistd.h>

#ifndef AC_SOURCE_DIR
#define AC_SOURCE_DIR "."
#endif
#ifndef AC_SHARED_DIR
#define AC_SHARED_DIR "../shared"
#endif

#define OK(x)                                                                                                  \
    do {                                                                                                       \
        int rc_ = (x);                                                                                         \
        if (rc_ != AC_OK) {                                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #x, rc_, ac_last_error());       \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static double cosine_min(const float *a, const float *b, int n, int D) {
    double worst = 1;
    for (int s = 0; s < n; s++) {
        double ab = 0, aa = 0, bb = 0;
        for (int d = 0; d < D; d++) {
            const double x = a[(size_t)s * D + d], y = b[(size_t)s * D + d];
            ab += x * y, aa += x * x, bb += y * y;
        }
        const double c = ab / sqrt(aa * bb + 1e-30);
        if (c < worst) worst = c;
    }
    return worst;
}

/* n_seq sequences of lens[s] tokens back to back in one buffer (returned, the caller frees it), seqs[s]
 * pointing into it: token i of sequence s > 0 is token i of sequence 0 where i < give[s] (give NULL:
 * nowhere), else random in [3, V) (drawn in order). *T: the tokens in all. */
static int32_t *rand_batch(int V, const int *lens, int n_seq, const int *give, ac_seq *seqs, int *T) {
    *T = 0;
    for (int s = 0; s < n_seq; s++) *T += lens[s];
    int32_t *tok = malloc((size_t)*T * sizeof *tok);
    if (!tok) OK(AC_ERR_NOMEM);
    for (int s = 0, o = 0; s < n_seq; o += lens[s], s++) {
        seqs[s].tokens = tok + o, seqs[s].n_tokens = lens[s];
        for (int i = 0; i < lens[s]; i++) tok[o + i] = give && s > 0 && i < give[s] ? tok[i] : 3 + rnd_int(V - 3);
    }
    return tok;
}

/* one batch: CPU (exact f32) vs GPU in both precisions */
static void compare_batch(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf,
                          const int *lens, int n_seq) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab, dec = m->info.arch != AC_ARCH_BERT;
    int T;
    ac_seq *seqs = malloc((size_t)n_seq * sizeof *seqs);
    int32_t *tok = rand_batch(V, lens, n_seq, NULL, seqs, &T);
    const int nc = m->info.n_cls_out;
    float *h[3], *p[3], *lg[3], *cl[3];
    for (int k = 0; k < 3; k++) {
        h[k] = malloc((size_t)T * D * 4), p[k] = malloc((size_t)n_seq * D * 4);
        lg[k] = dec ? malloc((size_t)n_seq * V * 4) : NULL;
        cl[k] = nc ? malloc((size_t)n_seq * nc * 4) : NULL;
        for (size_t i = 0; i < (size_t)T * D; i++) h[k][i] = NAN;
    }
    for (int k = 0; k < 3; k++) {
        ac_outputs o = {0};
        o.hidden = h[k], o.pooled = p[k], o.logits = lg[k], o.cls = cl[k];
        o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
        o.normalize = !dec;
        if (k == 0) OK(ac_forward(cpu, seqs, n_seq, &o));
        else OK(ac_cuda_forward(k == 1 ? g32 : gbf, seqs, n_seq, &o, NULL));
    }
    const double eh32 = rel_err(h[1], h[0], (size_t)T * D), ep32 = rel_err(p[1], p[0], (size_t)n_seq * D);
    const double ehbf = rel_err(h[2], h[0], (size_t)T * D), epbf = rel_err(p[2], p[0], (size_t)n_seq * D);
    const double cbf = cosine_min(p[2], p[0], n_seq, D);
    double el32 = 0, elbf = 0;
    if (dec) el32 = rel_err(lg[1], lg[0], (size_t)n_seq * V), elbf = rel_err(lg[2], lg[0], (size_t)n_seq * V);
    if (nc) { /* the classifier's outputs count with the logits */
        const double c32 = rel_err(cl[1], cl[0], (size_t)n_seq * nc), cbf16 = rel_err(cl[2], cl[0], (size_t)n_seq * nc);
        el32 = c32 > el32 ? c32 : el32, elbf = cbf16 > elbf ? cbf16 : elbf;
    }
    printf("  %s, %d seqs, %d tokens: f32 hidden %.2e pooled %.2e logits/cls %.2e | bf16 hidden %.2e pooled %.2e "
           "(cos >= %.6f) logits/cls %.2e\n",
           name, n_seq, T, eh32, ep32, el32, ehbf, epbf, cbf, elbf);
    CHECK(eh32 < 1e-4 && ep32 < 1e-4 && el32 < 1e-4, "%s f32 vs CPU", name);
    CHECK(ehbf < 3e-2 && epbf < 2e-2 && cbf > 0.999 && elbf < 3e-2, "%s bf16 vs CPU", name);
    for (int k = 0; k < 3; k++) free(h[k]), free(p[k]), free(lg[k]), free(cl[k]);
    free(tok), free(seqs);
}

typedef struct rec_state {
    int calls, bad_rows, bad_mask, causal;
} rec_state;

static int on_record(void *user, int layer, int seq, const float *P, int n_head, int L) {
    rec_state *r = user;
    (void)layer, (void)seq;
    r->calls++;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < L; i++) {
            double s = 0;
            for (int j = 0; j < L; j++) {
                const float v = P[((size_t)h * L + i) * L + j];
                s += v;
                if (r->causal && j > i && v != 0.0f) r->bad_mask++;
            }
            if (fabs(s - 1.0) > 1e-4) r->bad_rows++;
        }
    return AC_OK;
}

/* the recording path gives the fused path's output and well-formed maps */
static void check_record(const char *name, ac_model *m, ac_cuda_model *gbf) {
    const int D = m->hp.n_embd, lens[3] = {5, 70, 1};
    int32_t tok[76];
    for (int i = 0; i < 76; i++) tok[i] = 3 + rnd_int(m->hp.n_vocab - 3);
    ac_seq seqs[3] = {{tok, 5}, {tok + 5, 70}, {tok + 75, 1}};
    (void)lens;
    float *a = malloc(76 * (size_t)D * 4), *b = malloc(76 * (size_t)D * 4);
    ac_outputs o = {0};
    o.hidden = a;
    OK(ac_cuda_forward(gbf, seqs, 3, &o, NULL));
    rec_state r = {0, 0, 0, m->hp.causal};
    ac_cuda_opts opts = {0};
    opts.record = on_record, opts.user = &r;
    o.hidden = b;
    OK(ac_cuda_forward(gbf, seqs, 3, &o, &opts));
    const double e = rel_err(b, a, 76 * (size_t)D);
    printf("  %s record: %d maps, fused vs materialised hidden rel err %.2e\n", name, r.calls, e);
    CHECK(r.calls == 3 * m->hp.n_layer && !r.bad_rows && !r.bad_mask && e < 2e-2,
          "%s record: %d calls, %d bad rows, %d unmasked", name, r.calls, r.bad_rows, r.bad_mask);
    free(a), free(b);
}

/* A copy of a recorded site's maps P [n_head][L][L] (malloc'd: the caller frees; NULL: out of memory) */
static float *copy_site_maps(const ac_attn_site *site, const float *P) {
    const size_t n = (size_t)site->n_head * site->n_tokens * site->n_tokens;
    float *c = malloc(n * 4);
    if (c) memcpy(c, P, n * 4);
    return c;
}
/* The exact maps of every (layer, sequence) site, recorded by the CPU engine's hook (record, with user);
 * the exact output in hidden and pooled (pooling). */
static void cpu_record(ac_ctx *cpu, const ac_seq *seqs, int n_seq, void *user,
                       int (*record)(void *, const ac_attn_site *, const float *), float *hidden, float *pooled,
                       int pooling) {
    ac_attn_hook hook = {0};
    hook.user = user, hook.record = record;
    ac_ctx_set_attn_hook(cpu, &hook);
    ac_outputs o = {0};
    o.hidden = hidden, o.pooled = pooled, o.pooling = pooling;
    OK(ac_forward(cpu, seqs, n_seq, &o));
    ac_ctx_set_attn_hook(cpu, NULL);
}
/* A site's H exact maps of L tokens (P [H][L][L]) encoded in c, back to back ac_codec_map_bytes(c, L)
 * apart: malloc'd, the caller frees. */
static unsigned char *encode_site(const ac_map_codec *c, const float *P, int L, int H) {
    const size_t mb = ac_codec_map_bytes(c, L);
    unsigned char *e = malloc(mb * H);
    if (!e) OK(AC_ERR_NOMEM);
    for (int hh = 0; hh < H; hh++) OK(ac_codec_encode(c, P + (size_t)hh * L * L, L, e + hh * mb));
    return e;
}

/* ---- served maps (the cache on the GPU) -------------------------------------------------------
 * Exact maps recorded by the CPU engine, encoded in a cache codec; some (layer, sequence) sites
 * served, the others computed, in one batch. The CPU engine's cached forward (its reuse/apply hook
 * over the same compressed maps) is the reference. */
enum { SRV_NSEQ = 4 };
typedef struct srv_state {
    ac_map_codec c;
    int n_layer, H, all;            /* all: every site served */
    int lens[SRV_NSEQ];
    float *P[64][SRV_NSEQ];         /* exact maps [H][L][L] from the CPU (record) */
    unsigned char *enc[64][SRV_NSEQ]; /* H encoded maps, host (pageable) */
    void *dev[64][SRV_NSEQ];        /* the same on the device or in pinned memory (where != NULL) */
    int use_dev;
} srv_state;

static int srv_served(const srv_state *st, int layer, int seq) {
    if (st->all) return 1;
    return seq == 0 || (seq == 1 && layer % 2 == 1) || (seq == 3 && layer != 0); /* seq 2: never */
}

static int srv_record(void *user, const ac_attn_site *site, const float *P) {
    srv_state *st = user;
    return (st->P[site->layer][site->seq] = copy_site_maps(site, P)) ? AC_OK : AC_ERR_NOMEM;
}
static int srv_reuse(void *user, const ac_attn_site *site) {
    srv_state *st = user;
    return srv_served(st, site->layer, site->seq) ? site->n_tokens : 0;
}
static int srv_apply(void *user, const ac_attn_site *site, int n_rows, const float *v, int ldv, int n_head_kv,
                     int head_dim, float *out, int ldo) {
    srv_state *st = user;
    const int L = site->n_tokens, grp = site->n_head / n_head_kv;
    const size_t mb = ac_codec_map_bytes(&st->c, L);
    (void)n_rows;
    for (int h = 0; h < site->n_head; h++)
        ac_codec_av(&st->c, st->enc[site->layer][site->seq] + h * mb, L, v + (h / grp) * head_dim, ldv, head_dim,
                    out + h * head_dim, ldo);
    return AC_OK;
}
static const void *srv_serve(void *user, int layer, int seq, int L) {
    srv_state *st = user;
    if (!srv_served(st, layer, seq) || L != st->lens[seq]) return NULL;
    return st->use_dev ? st->dev[layer][seq] : st->enc[layer][seq];
}

static void srv_forward(ac_cuda_model *g, srv_state *st, ac_seq *seqs, float *hidden, float *pooled, int dec) {
    ac_outputs o = {0};
    o.hidden = hidden, o.pooled = pooled;
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    ac_cuda_opts opts = {0};
    opts.serve = srv_serve, opts.user = st;
    opts.codec_kind = st->c.kind, opts.codec_causal = st->c.causal, opts.codec_topk = st->c.topk;
    OK(ac_cuda_forward(g, seqs, SRV_NSEQ, &o, &opts));
}

static void check_served(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf) {
    const int D = m->hp.n_embd, H = m->hp.n_head, NL = m->hp.n_layer, dec = m->hp.causal;
    if (NL > 64) return;
    srv_state st;
    memset(&st, 0, sizeof st);
    st.n_layer = NL, st.H = H;
    const int maxL = m->hp.n_ctx_train < 96 ? m->hp.n_ctx_train : 96;
    st.lens[0] = 5, st.lens[1] = maxL, st.lens[2] = 1 + rnd_int(maxL), st.lens[3] = 1 + rnd_int(maxL);
    int T;
    ac_seq seqs[SRV_NSEQ];
    int32_t *tok = rand_batch(m->hp.n_vocab, st.lens, SRV_NSEQ, NULL, seqs, &T);
    float *h[5], *p[5];
    for (int k = 0; k < 5; k++) h[k] = malloc((size_t)T * D * 4), p[k] = malloc((size_t)SRV_NSEQ * D * 4);
    /* 1. the exact maps, recorded by the CPU engine; h[0]: its exact output */
    cpu_record(cpu, seqs, SRV_NSEQ, &st, srv_record, h[0], p[0], dec ? AC_POOL_LAST : AC_POOL_MEAN);
    ac_attn_hook hook = {0};
    ac_outputs o = {0};
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    int have = 1;
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < SRV_NSEQ; s++) have &= st.P[l][s] != NULL;
    CHECK(have, "%s served: CPU recorded every site", name);
    if (!have) goto done;
    const char *specs[3] = {dec ? "q8-causal" : "q8", dec ? "topk8-causal" : "topk8", "f32"};
    for (int ci = 0; ci < 3; ci++) {
        OK(ac_codec_parse(specs[ci], &st.c));
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < SRV_NSEQ; s++) {
                const int L = st.lens[s];
                const size_t mb = ac_codec_map_bytes(&st.c, L);
                CHECK(mb == ac_cuda_map_bytes(st.c.kind, st.c.causal, st.c.topk, L), "%s map bytes L %d", specs[ci], L);
                st.enc[l][s] = encode_site(&st.c, st.P[l][s], L, H);
            }
        if (ci < 2) {
            /* 2. mixed hits and misses: CPU cached forward (h[1]) vs the GPU, maps from pageable memory */
            st.all = 0;
            hook = (ac_attn_hook){0};
            hook.user = &st, hook.reuse = srv_reuse, hook.apply = srv_apply;
            ac_ctx_set_attn_hook(cpu, &hook);
            o.hidden = h[1], o.pooled = p[1];
            OK(ac_forward(cpu, seqs, SRV_NSEQ, &o));
            ac_ctx_set_attn_hook(cpu, NULL);
            st.use_dev = 0;
            for (size_t i = 0; i < (size_t)T * D; i++) h[2][i] = h[3][i] = NAN;
            srv_forward(gbf, &st, seqs, h[2], p[2], dec);
            int sites = 0;
            ac_cuda_last_served(gbf, &sites, NULL);
            /* the same maps from device memory, f32 mode */
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) {
                    const size_t b = ac_codec_map_bytes(&st.c, st.lens[s]) * H;
                    CHECK(cudaMalloc(&st.dev[l][s], b) == cudaSuccess, "cudaMalloc");
                    cudaMemcpy(st.dev[l][s], st.enc[l][s], b, cudaMemcpyHostToDevice);
                }
            st.use_dev = 1;
            srv_forward(g32, &st, seqs, h[3], p[3], dec);
            int want = 0;
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) want += srv_served(&st, l, s);
            const double ebf = rel_err(h[2], h[1], (size_t)T * D), e32 = rel_err(h[3], h[1], (size_t)T * D);
            const double pbf = rel_err(p[2], p[1], (size_t)SRV_NSEQ * D), dex = rel_err(h[1], h[0], (size_t)T * D);
            printf("  %s served %s (%d of %d sites, mixed): GPU bf16 vs CPU cached hidden %.2e pooled %.2e | GPU f32 "
                   "(device maps) %.2e | cached vs exact %.2e\n",
                   name, specs[ci], sites, NL * SRV_NSEQ, ebf, pbf, e32, dex);
            CHECK(sites == want, "%s served %s: %d sites served, want %d", name, specs[ci], sites, want);
            CHECK(ebf < 3e-2 && pbf < 2e-2 && e32 < 1e-4 && all_finite(h[2], (size_t)T * D),
                  "%s served %s vs CPU cached", name, specs[ci]);
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) cudaFree(st.dev[l][s]), st.dev[l][s] = NULL;
        } else {
            /* 3. f32 mode, every site served its exact f32 map (pinned memory) == the exact forward */
            st.all = 1;
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) {
                    const size_t b = ac_codec_map_bytes(&st.c, st.lens[s]) * H;
                    CHECK(cudaMallocHost(&st.dev[l][s], b) == cudaSuccess, "cudaMallocHost");
                    memcpy(st.dev[l][s], st.enc[l][s], b);
                }
            st.use_dev = 1;
            for (size_t i = 0; i < (size_t)T * D; i++) h[3][i] = NAN;
            srv_forward(g32, &st, seqs, h[3], p[3], dec);
            size_t up = 0;
            ac_cuda_last_served(g32, NULL, &up);
            o.hidden = h[4], o.pooled = p[4];
            OK(ac_cuda_forward(g32, seqs, SRV_NSEQ, &o, NULL));
            const double e = rel_err(h[3], h[4], (size_t)T * D), ec = rel_err(h[3], h[0], (size_t)T * D);
            printf("  %s served f32 exact maps (all sites, pinned): vs GPU exact %.2e, vs CPU exact %.2e\n", name, e, ec);
            size_t want_up = 0; /* pinned host maps are copied, every byte once */
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) want_up += ac_codec_map_bytes(&st.c, st.lens[s]) * H;
            CHECK(e < 1e-4 && ec < 1e-4 && up == want_up, "%s served exact f32 maps (uploaded %zu of %zu bytes)", name,
                  up, want_up);
            for (int l = 0; l < NL; l++)
                for (int s = 0; s < SRV_NSEQ; s++) cudaFreeHost(st.dev[l][s]), st.dev[l][s] = NULL;
        }
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < SRV_NSEQ; s++) free(st.enc[l][s]), st.enc[l][s] = NULL;
    }
    /* 4. damaged top-k maps (indices past the row) read nothing outside V; serve + record refused */
    {
        OK(ac_codec_parse("topk4", &st.c));
        st.all = 1, st.use_dev = 0;
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < SRV_NSEQ; s++) {
                const int L = st.lens[s];
                const size_t mb = ac_codec_map_bytes(&st.c, L);
                st.enc[l][s] = encode_site(&st.c, st.P[l][s], L, H);
                /* every row's first index slot past the row (0xffff); weights untouched: a
                 * damaged index must read nothing outside V and drop that entry alone */
                for (int hh = 0; hh < H; hh++)
                    for (int t = 0; t < L; t++) {
                        uint8_t *r = st.enc[l][s] + hh * mb + ac_codec_row_offset(&st.c, L, t);
                        r[0] = r[1] = 0xff;
                    }
            }
        srv_forward(gbf, &st, seqs, h[2], p[2], dec);
        CHECK(all_finite(h[2], (size_t)T * D), "%s damaged top-k maps: finite output", name);
        ac_cuda_opts opts = {0};
        opts.serve = srv_serve, opts.user = &st, opts.codec_kind = 4, opts.codec_topk = 4;
        opts.record = on_record;
        o.hidden = h[2], o.pooled = NULL;
        CHECK(ac_cuda_forward(gbf, seqs, SRV_NSEQ, &o, &opts) == AC_ERR_ARG, "serve + record refused");
        opts.record = NULL, opts.codec_topk = 0;
        CHECK(ac_cuda_forward(gbf, seqs, SRV_NSEQ, &o, &opts) == AC_ERR_ARG && strstr(ac_last_error(), "codec"),
              "top-k 0 refused: %s", ac_last_error());
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < SRV_NSEQ; s++) free(st.enc[l][s]), st.enc[l][s] = NULL;
    }
done:
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < SRV_NSEQ; s++) free(st.P[l][s]);
    for (int k = 0; k < 5; k++) free(h[k]), free(p[k]);
    free(tok);
}

/* ---- the cache through the public API on a cuda context --------------------------------------
 * ac_cache_open + ac_ctx_attach_cache on a context with backend "cuda" (the attention hook's GPU
 * seam, cuda_ctx.c): entries recorded through both contexts (ac_cache_add: the GPU's materialised
 * maps copied back, and the CPU's), then one batch of exact repeats (hits) and inputs no entry can
 * serve (misses: longer than every entry) through both backends with the same cache. The GPU must
 * make the same lookups, serve every layer of its hits from the stored rows (sites counted by the
 * backend, the context's plan) and agree with the CPU's cached forward within bf16 tolerance.
 * top-k 8 rows move the outputs far from the exact ones (MiniLM: ~0.26 relative), so a GPU that
 * computed its hits exactly would fail; q8 rows recorded on the GPU serve a repeat close to exact. */
enum { CA_NSEQ = 5 };
static void check_cache_api(const char *name, ac_model *m, ac_ctx *cpu) {
    const int D = m->hp.n_embd, NL = m->hp.n_layer, dec = m->hp.causal;
    const int maxL = m->hp.n_ctx_train < 96 ? m->hp.n_ctx_train : 96;
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    gp.gain_guard = -1; /* every call uses the cache: the checks count what it served */
    ac_ctx *gpu;
    OK(ac_ctx_new(m, &gp, &gpu));
    /* entries: 0 and 1 recorded on the GPU, 2 on the CPU; lengths below maxL */
    const int elen[3] = {5, maxL / 2, maxL / 3 + 1};
    /* the batch: repeats of entries 0, 1, 2 (hits), and two new inputs of maxL tokens (misses) */
    const int qsrc[CA_NSEQ] = {0, -1, 1, 2, -1};
    int lens[CA_NSEQ], T = 0;
    for (int s = 0; s < CA_NSEQ; s++) T += lens[s] = qsrc[s] >= 0 ? elen[qsrc[s]] : maxL;
    int32_t *ent[3], *tok = malloc((size_t)T * 4);
    for (int e = 0; e < 3; e++) {
        ent[e] = malloc((size_t)elen[e] * 4);
        for (int i = 0; i < elen[e]; i++) ent[e][i] = 3 + rnd_int(m->hp.n_vocab - 3);
    }
    ac_seq seqs[CA_NSEQ];
    for (int s = 0, o = 0; s < CA_NSEQ; o += lens[s], s++) {
        seqs[s].tokens = tok + o, seqs[s].n_tokens = lens[s];
        for (int i = 0; i < lens[s]; i++) tok[o + i] = qsrc[s] >= 0 ? ent[qsrc[s]][i] : 3 + rnd_int(m->hp.n_vocab - 3);
    }
    float *hid[3], *pool[3];
    for (int k = 0; k < 3; k++) hid[k] = malloc((size_t)T * D * 4), pool[k] = malloc((size_t)CA_NSEQ * D * 4);
    ac_outputs o = {0};
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    o.hidden = hid[0], o.pooled = pool[0];
    OK(ac_forward(cpu, seqs, CA_NSEQ, &o)); /* [0]: exact, CPU */
    const char *codecs[2] = {dec ? "topk8-causal" : "topk8", dec ? "q8-causal" : "q8"};
    for (int ci = 0; ci < 2; ci++) {
        char dir[] = "/tmp/ac_gpu_cache_XXXXXX";
        CHECK(mkdtemp(dir) != NULL, "mkdtemp");
        ac_cache_params cp = ac_cache_default_params();
        cp.writable = 1, cp.create = 1, cp.codec = codecs[ci];
        cp.threshold = 1e-3f, cp.adapt_floor = 0;
        ac_cache *cache;
        OK(ac_cache_open(m, dir, &cp, &cache));
        for (int e = 0; e < 3; e++) OK(ac_cache_add(cache, e < 2 ? gpu : cpu, ent[e], elen[e], NULL));
        OK(ac_cache_commit(cache));
        uint8_t hit[2][CA_NSEQ];
        for (int k = 1; k < 3; k++) { /* [1]: CPU cached, [2]: GPU cached */
            ac_ctx *c = k == 1 ? cpu : gpu;
            OK(ac_ctx_attach_cache(c, cache));
            o.hidden = hid[k], o.pooled = pool[k];
            for (size_t i = 0; i < (size_t)T * D; i++) hid[k][i] = NAN;
            ac_cache_reset_stats(cache);
            OK(ac_forward(c, seqs, CA_NSEQ, &o));
            OK(ac_cache_last_hits(c, CA_NSEQ, hit[k - 1], NULL));
            ac_ctx_attach_cache(c, NULL);
            ac_cache_stats cst;
            OK(ac_cache_get_stats(cache, &cst));
            /* the GPU keys every lookup on its device summary; the CPU on its own states */
            CHECK(cst.queries == CA_NSEQ && cst.features_given == (k == 2 ? CA_NSEQ : 0),
                  "%s cache API (%s, %s): %lld lookups, %lld on a given summary", name, codecs[ci], k == 2 ? "gpu" : "cpu",
                  (long long)cst.queries, (long long)cst.features_given);
        }
        int sites = -1, want = 0, same = 1, hits_ok = 1, plan_ok = 1;
        ac_cuda_last_served(gpu->be, &sites, NULL);
        ac_seq_plan plan[CA_NSEQ];
        OK(ac_ctx_last_plan(gpu, CA_NSEQ, plan));
        for (int s = 0; s < CA_NSEQ; s++) {
            same &= hit[0][s] == hit[1][s];
            hits_ok &= hit[1][s] == (qsrc[s] >= 0);
            want += hit[1][s] ? NL : 0;
            plan_ok &= plan[s].map_layers == (hit[1][s] ? NL : 0) && plan[s].n_tokens == lens[s];
        }
        const double eh = rel_err(hid[2], hid[1], (size_t)T * D), ex = rel_err(hid[1], hid[0], (size_t)T * D);
        const double cs = cosine_min(pool[2], pool[1], CA_NSEQ, D);
        printf("  %s cache API on cuda (%s, %d of %d sequences hit, %d sites served): GPU vs CPU cached hidden %.2e, "
               "pooled cos %.6f; CPU cached vs exact %.2e\n",
               name, codecs[ci], want / NL, CA_NSEQ, sites, eh, cs, ex);
        CHECK(same && hits_ok, "%s cache API (%s): GPU and CPU lookups agree and every repeat hits", name, codecs[ci]);
        CHECK(sites == want && plan_ok, "%s cache API (%s): %d sites served on the GPU, want %d (plan ok %d)", name,
              codecs[ci], sites, want, plan_ok);
        CHECK(all_finite(hid[2], (size_t)T * D) && eh < 3e-2 && cs > 0.999,
              "%s cache API (%s): GPU cached vs CPU cached %.2e, cos %.6f", name, codecs[ci], eh, cs);
        if (ci == 1) /* q8 maps, two of the three hits recorded by the GPU: near the exact forward */
            CHECK(ex < 3e-2, "%s cache API (q8): served GPU-recorded maps vs exact %.2e", name, ex);
        if (ci == 0 && !strcmp(name, "all-MiniLM-L6-v2")) /* top-8 rows must move the output: far more than the
                                                              GPU differs from the CPU (real MiniLM 0.27, random
                                                              weights of its shape ~0.05), or ignoring the maps passes */
            CHECK(ex > 0.01 && ex > 3 * eh, "%s cache API (top-8): cached differs from exact (%.2e, GPU vs CPU %.2e)",
                  name, ex, eh);
        if (ci == 1) { /* the measured-gain guard on a cuda context with default params: every call decided; the
                          exact probe after the warm-up runs without the cache (no site served), the others use it */
            ac_ctx_params gp2 = ac_ctx_default_params();
            gp2.backend = "cuda";
            ac_ctx *gg;
            OK(ac_ctx_new(m, &gp2, &gg));
            OK(ac_ctx_attach_cache(gg, cache));
            float *gh = malloc((size_t)T * D * 4);
            ac_outputs go = {0};
            go.pooling = o.pooling, go.hidden = gh;
            int served_calls = 0, exact_calls = 0;
            for (int i = 0; i < AC_GAIN_WARM + 1; i++) {
                OK(ac_forward(gg, seqs, CA_NSEQ, &go));
                ac_seq_plan pl[CA_NSEQ];
                OK(ac_ctx_last_plan(gg, CA_NSEQ, pl));
                int any = 0;
                for (int q = 0; q < CA_NSEQ; q++) any |= pl[q].map_layers > 0;
                served_calls += any, exact_calls += !any;
            }
            ac_gain_stats gs;
            OK(ac_ctx_gain_stats(gg, &gs));
            printf("  %s gain guard: %lld calls, %d served, %d exact (probe %lld); per token exact %.3f us, cached %.3f "
                   "us\n", name, (long long)gs.calls, served_calls, exact_calls, (long long)gs.probes_exact,
                   gs.s_per_token_exact * 1e6, gs.s_per_token_cached * 1e6);
            CHECK(gs.enabled && gs.calls == AC_GAIN_WARM + 1 && gs.probes_exact == 1 && exact_calls == 1 &&
                      served_calls == AC_GAIN_WARM && gs.s_per_token_exact > 0,
                  "%s gain guard: %lld calls, %lld exact probes, %d/%d served/exact calls", name, (long long)gs.calls,
                  (long long)gs.probes_exact, served_calls, exact_calls);
            free(gh);
            ac_ctx_free(gg);
        }
        OK(ac_cache_close(cache));
        if (dec) { /* partial rows (session 14): an exact tail of 2 rows on every hit, then per-sequence exact rows
                      (the 5-token hit from row 2, the second hit whole, the third from its middle) beside the two
                      misses: GPU vs CPU with the same cache, the same plan */
            cp.writable = 0, cp.create = 0;
            for (int v = 0; v < 2; v++) {
                cp.exact_tail = v == 0 ? 2 : 0;
                OK(ac_cache_open(m, dir, &cp, &cache));
                const int from[CA_NSEQ] = {2, -1, -1, lens[3] / 2, -1};
                ac_seq_plan pl2[2][CA_NSEQ];
                for (int k = 1; k < 3; k++) {
                    ac_ctx *c = k == 1 ? cpu : gpu;
                    OK(ac_ctx_attach_cache(c, cache));
                    if (v) OK(ac_ctx_set_exact_from(c, CA_NSEQ, from));
                    o.hidden = hid[k], o.pooled = pool[k];
                    for (size_t i = 0; i < (size_t)T * D; i++) hid[k][i] = NAN;
                    OK(ac_forward(c, seqs, CA_NSEQ, &o));
                    OK(ac_ctx_last_plan(c, CA_NSEQ, pl2[k - 1]));
                    OK(ac_ctx_set_exact_from(c, 0, NULL));
                    ac_ctx_attach_cache(c, NULL);
                }
                int psites = -1, pwant = 0, pplan = 1, n_part = 0;
                ac_cuda_last_served(gpu->be, &psites, NULL);
                for (int s = 0; s < CA_NSEQ; s++) {
                    const int L = lens[s];
                    const int rows = qsrc[s] < 0 ? 0 : v == 0 ? L - 2 : from[s] < 0 ? L : from[s];
                    pwant += rows > 0 ? NL : 0, n_part += rows > 0 && rows < L;
                    for (int k = 0; k < 2; k++)
                        pplan &= pl2[k][s].map_rows == rows && pl2[k][s].map_layers == (rows > 0 ? NL : 0);
                    if (pl2[1][s].map_rows != rows)
                        printf("  sequence %d: %d map rows on the GPU, %d on the CPU, want %d\n", s, pl2[1][s].map_rows,
                               pl2[0][s].map_rows, rows);
                }
                const double peh = rel_err(hid[2], hid[1], (size_t)T * D), pex = rel_err(hid[1], hid[0], (size_t)T * D);
                const double pcs = cosine_min(pool[2], pool[1], CA_NSEQ, D);
                printf("  %s cache API on cuda, %s (%s, %d partly served sequences, %d sites): GPU vs CPU cached hidden "
                       "%.2e pooled cos %.6f; CPU vs exact %.2e\n",
                       name, v == 0 ? "exact tail 2" : "exact_from 2/-/-/L/2", codecs[ci], n_part, psites, peh, pcs, pex);
                CHECK(psites == pwant && pplan && n_part >= 2, "%s cache API (%s) %s: %d sites served, want %d; plans",
                      name, codecs[ci], v == 0 ? "exact tail" : "exact_from", psites, pwant);
                CHECK(all_finite(hid[2], (size_t)T * D) && peh < 3e-2 && pcs > 0.999,
                      "%s cache API (%s) %s: GPU vs CPU cached %.2e, cos %.6f", name, codecs[ci],
                      v == 0 ? "exact tail" : "exact_from", peh, pcs);
                OK(ac_cache_close(cache));
            }
            cp.exact_tail = 0;
        }
        { /* per-head serving through the cache (session 14): layer 0 serves head 1 only (the others computed),
             layer 1 every head, later layers none; decoders with an exact tail of 2 as well (rows and heads) */
            cp.writable = 0, cp.create = 0, cp.serve_heads = "0.1,1.*", cp.exact_tail = dec ? 2 : 0;
            OK(ac_cache_open(m, dir, &cp, &cache));
            ac_seq_plan pl2[2][CA_NSEQ];
            for (int k = 1; k < 3; k++) {
                ac_ctx *c = k == 1 ? cpu : gpu;
                OK(ac_ctx_attach_cache(c, cache));
                o.hidden = hid[k], o.pooled = pool[k];
                for (size_t i = 0; i < (size_t)T * D; i++) hid[k][i] = NAN;
                OK(ac_forward(c, seqs, CA_NSEQ, &o));
                OK(ac_ctx_last_plan(c, CA_NSEQ, pl2[k - 1]));
                ac_ctx_attach_cache(c, NULL);
            }
            int hsites = -1, hwant = 0, hplan = 1;
            ac_cuda_last_served(gpu->be, &hsites, NULL);
            for (int s = 0; s < CA_NSEQ; s++) {
                const int rows = qsrc[s] < 0 ? 0 : dec ? lens[s] - 2 : lens[s];
                hwant += rows > 0 ? 2 : 0;
                for (int k = 0; k < 2; k++)
                    hplan &= pl2[k][s].map_rows == rows && pl2[k][s].map_layers == (rows > 0 ? 2 : 0);
            }
            const double heh = rel_err(hid[2], hid[1], (size_t)T * D), hcs = cosine_min(pool[2], pool[1], CA_NSEQ, D);
            printf("  %s cache API on cuda, per-head serving 0.1,1.*%s (%s, %d sites): GPU vs CPU cached hidden %.2e "
                   "pooled cos %.6f\n",
                   name, dec ? " + exact tail 2" : "", codecs[ci], hsites, heh, hcs);
            CHECK(hsites == hwant && hplan, "%s cache API (%s) per-head: %d sites served, want %d; plans", name,
                  codecs[ci], hsites, hwant);
            CHECK(all_finite(hid[2], (size_t)T * D) && heh < 3e-2 && hcs > 0.999,
                  "%s cache API (%s) per-head: GPU vs CPU cached %.2e, cos %.6f", name, codecs[ci], heh, hcs);
            OK(ac_cache_close(cache));
            cp.serve_heads = NULL, cp.exact_tail = 0;
        }
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    }
    for (int k = 0; k < 3; k++) free(hid[k]), free(pool[k]);
    for (int e = 0; e < 3; e++) free(ent[e]);
    free(tok);
    ac_ctx_free(gpu);
}

/* The layer-0 summary on the device (opts.summary, cuda_summary.cu) against the host's: the segment
 * means of ac_model_layer0_states (the values the CPU forward hands the cache as site.x), in both
 * precisions (the embeddings and the summary are f32 in both: 1e-5 relative); segments empty for
 * L < S included. Asking for it changes nothing in the forward's results. */
typedef struct sum_probe {
    ac_cuda_model *g;
    int ready; /* layer-0 sites that found their summary already there when asked */
} sum_probe;
static int sum_serve_none(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    (void)out, (void)L;
    sum_probe *p = user;
    if (layer == 0 && ac_cuda_layer0_summary(p->g, seq) != NULL) p->ready++;
    return 0;
}

static void check_summary(const char *name, ac_model *m, ac_cuda_model *g32, ac_cuda_model *gbf) {
    const int D = m->hp.n_embd, S = AC_ATTN_SUMMARY_SEGMENTS, dec = m->hp.causal;
    const int maxL = m->hp.n_ctx_train < 200 ? m->hp.n_ctx_train : 200;
    const int lens[] = {1, 2, 3, 5, 8, 37, maxL, maxL / 2 + 1};
    const int n_seq = (int)(sizeof lens / sizeof lens[0]);
    int T;
    ac_seq seqs[8];
    int32_t *tok = rand_batch(m->hp.n_vocab, lens, n_seq, NULL, seqs, &T);
    float *ref = malloc((size_t)n_seq * S * D * 4), *x0 = malloc((size_t)maxL * D * 4);
    for (int s = 0; s < n_seq; s++) { /* the host reference, beside the kernel */
        const int L = lens[s];
        OK(ac_model_layer0_states(m, seqs[s].tokens, L, x0));
        for (int k = 0; k < S; k++) {
            int a = (int)((int64_t)k * L / S), b = (int)((int64_t)(k + 1) * L / S);
            if (b <= a) a = 0, b = L;
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int t = a; t < b; t++) acc += x0[(size_t)t * D + d];
                ref[((size_t)s * S + k) * D + d] = (float)(acc / (b - a));
            }
        }
    }
    float *h0 = malloc((size_t)T * D * 4), *h1 = malloc((size_t)T * D * 4), *got = malloc((size_t)S * D * 4);
    for (int pi = 0; pi < 2; pi++) {
        ac_cuda_model *g = pi ? gbf : g32;
        ac_outputs o = {0};
        o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
        o.hidden = h0;
        OK(ac_cuda_forward(g, seqs, n_seq, &o, NULL));
        CHECK(ac_cuda_layer0_summary(g, 0) == NULL, "%s summary: none without opts.summary", name);
        sum_probe probe = {g, 0};
        ac_cuda_opts op;
        memset(&op, 0, sizeof op);
        op.serve_site = sum_serve_none, op.user = &probe, op.summary = S;
        o.hidden = h1;
        OK(ac_cuda_forward(g, seqs, n_seq, &o, &op));
        double worst = 0;
        int have = 1;
        for (int s = 0; s < n_seq; s++) {
            const float *dv = ac_cuda_layer0_summary(g, s);
            if (!dv) {
                have = 0;
                break;
            }
            memcpy(got, dv, (size_t)S * D * 4);
            const double e = rel_err(got, ref + (size_t)s * S * D, (size_t)S * D);
            worst = e > worst ? e : worst;
        }
        const double eh = rel_err(h1, h0, (size_t)T * D);
        printf("  %s layer-0 summary on the device (%s): worst sequence vs host %.2e; forward with it vs without %.2e\n",
               name, pi ? "bf16" : "f32", worst, eh);
        CHECK(have && ac_cuda_layer0_summary(g, n_seq) == NULL && probe.ready == n_seq,
              "%s summary (%s): one per sequence, there before the lookups (%d)", name, pi ? "bf16" : "f32",
              probe.ready);
        CHECK(have && worst <= 1e-5, "%s summary (%s): device vs host %.3g", name, pi ? "bf16" : "f32", worst);
        CHECK(eh <= 1e-6, "%s summary (%s): the forward's hidden states moved %.3g", name, pi ? "bf16" : "f32", eh);
    }
    free(tok), free(ref), free(x0), free(h0), free(h1), free(got);
}

/* The device map cache (cuda_map_cache.cu) through the public API: the second pass of a batch of hits
 * uploads nothing and gives the first pass's results (1e-6; bitwise expected, printed); repeats inside
 * a batch upload once; a budget of half the working set is respected (evictions, uploads again, same
 * results); budget 0 turns it off; a cache whose entries hold other bytes for the same inputs
 * (another codec) is served its own maps (as a context that never saw the first), never a stale block. */
static void cached_pass(ac_ctx *gpu, ac_cache *cache, const ac_seq *seqs, int n, float *hid, int dec, size_t *up,
                        int *sites) {
    ac_outputs o = {0};
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    o.hidden = hid;
    OK(ac_ctx_attach_cache(gpu, cache));
    OK(ac_forward(gpu, seqs, n, &o));
    ac_cuda_last_served(gpu->be, sites, up);
    ac_ctx_attach_cache(gpu, NULL);
}

static void check_map_cache(const char *name, ac_model *m) {
    const int D = m->hp.n_embd, NL = m->hp.n_layer, dec = m->hp.causal;
    const int maxL = m->hp.n_ctx_train < 64 ? m->hp.n_ctx_train : 64;
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    gp.gain_guard = -1; /* every call uses the cache: the checks count what it served */
    ac_ctx *gpu, *fresh;
    OK(ac_ctx_new(m, &gp, &gpu));
    OK(ac_ctx_new(m, &gp, &fresh));
    enum { NE = 3, NQ = 5 };
    const int elen[NE] = {maxL, maxL / 2, maxL / 3 + 1}, qsrc[NQ] = {0, 1, 2, 0, 1}; /* repeats inside the batch */
    int T = 0;
    for (int q = 0; q < NQ; q++) T += elen[qsrc[q]];
    int32_t *ent[NE];
    for (int e = 0; e < NE; e++) {
        ent[e] = malloc((size_t)elen[e] * 4);
        for (int i = 0; i < elen[e]; i++) ent[e][i] = 3 + rnd_int(m->hp.n_vocab - 3);
    }
    ac_seq seqs[NQ];
    for (int q = 0; q < NQ; q++) seqs[q].tokens = ent[qsrc[q]], seqs[q].n_tokens = elen[qsrc[q]];
    const size_t n = (size_t)T * D;
    float *h1 = malloc(n * 4), *h2 = malloc(n * 4), *h3 = malloc(n * 4);
    char dirs[2][32] = {"/tmp/ac_gpu_lru_XXXXXX", "/tmp/ac_gpu_lru_XXXXXX"};
    const char *codecs[2] = {dec ? "q8-causal" : "q8", dec ? "topk8-causal" : "topk8"};
    ac_cache *cache[2];
    for (int c = 0; c < 2; c++) {
        CHECK(mkdtemp(dirs[c]) != NULL, "mkdtemp");
        ac_cache_params cp = ac_cache_default_params();
        cp.writable = 1, cp.create = 1, cp.codec = codecs[c], cp.threshold = 1e-3f, cp.adapt_floor = 0;
        OK(ac_cache_open(m, dirs[c], &cp, &cache[c]));
        for (int e = 0; e < NE; e++) OK(ac_cache_add(cache[c], gpu, ent[e], elen[e], NULL));
        OK(ac_cache_commit(cache[c]));
    }
    ac_cuda_model *g = gpu->be;
    OK(ac_cuda_set_map_cache(g, (size_t)256 << 20));
    ac_map_lru_stats s0, s1, s2;
    size_t up1 = 0, up2 = 0, up3 = 0;
    int sites1 = 0, sites2 = 0, sites3 = 0;
    ac_cuda_map_cache_stats(g, &s0);
    cached_pass(gpu, cache[0], seqs, NQ, h1, dec, &up1, &sites1);
    ac_cuda_map_cache_stats(g, &s1);
    cached_pass(gpu, cache[0], seqs, NQ, h2, dec, &up2, &sites2);
    ac_cuda_map_cache_stats(g, &s2);
    /* pass 1: each (entry, layer) uploaded once (the batch's repeats found the block made this call) */
    printf("  %s device map cache: pass 1 %d sites, %zu bytes uploaded, %llu blocks; pass 2 %zu bytes, %llu hits; "
           "%zu bytes resident\n",
           name, sites1, up1, (unsigned long long)(s1.inserts - s0.inserts), up2,
           (unsigned long long)(s2.hits - s1.hits), s2.resident);
    CHECK(sites1 == NQ * NL && up1 > 0 && s1.inserts - s0.inserts == (uint64_t)NE * NL &&
              s1.hits - s0.hits == (uint64_t)(NQ - NE) * NL,
          "%s map cache pass 1: %d sites, %zu bytes, %llu inserts, %llu hits", name, sites1, up1,
          (unsigned long long)(s1.inserts - s0.inserts), (unsigned long long)(s1.hits - s0.hits));
    CHECK(sites2 == NQ * NL && up2 == 0 && s2.hits - s1.hits == (uint64_t)NQ * NL && s2.inserts == s1.inserts,
          "%s map cache pass 2: %d sites, %zu bytes uploaded (want 0), %llu hits", name, sites2, up2,
          (unsigned long long)(s2.hits - s1.hits));
    printf("  %s device map cache: pass 2 %s pass 1\n", name, memcmp(h1, h2, n * 4) ? "differs from" : "bitwise equal to");
    CHECK(rel_err(h2, h1, n) <= 1e-6, "%s map cache: pass 2 differs from pass 1 (%.3g)", name, rel_err(h2, h1, n));
    /* half the working set: respected, blocks evicted and uploaded again every pass, the same results
       (every block is far smaller than half: 3 records x n_layer >= 6 blocks) */
    const size_t half = s1.resident / 2;
    OK(ac_cuda_set_map_cache(g, half));
    ac_map_lru_stats s3;
    ac_cuda_map_cache_stats(g, &s3);
    CHECK(s3.resident <= half && s3.entries < NE * NL, "%s map cache: budget cut to half: %zu of %zu resident, %d blocks",
          name, s3.resident, half, s3.entries);
    int ok_budget = 1, ok_same = 1;
    for (int r = 0; r < 3; r++) {
        cached_pass(gpu, cache[0], seqs, NQ, h3, dec, &up3, &sites3);
        ac_map_lru_stats sr;
        ac_cuda_map_cache_stats(g, &sr);
        ok_budget &= sr.resident <= half && up3 > 0;
        ok_same &= rel_err(h3, h1, n) <= 1e-6;
    }
    ac_map_lru_stats s4;
    ac_cuda_map_cache_stats(g, &s4);
    CHECK(ok_budget && s4.evictions > s3.evictions + 1, "%s map cache: half budget (evictions %llu)", name,
          (unsigned long long)(s4.evictions - s3.evictions));
    CHECK(ok_same, "%s map cache: a tiny budget changed the results", name);
    OK(ac_cuda_set_map_cache(g, 0)); /* off: everything uploaded, nothing resident */
    cached_pass(gpu, cache[0], seqs, NQ, h3, dec, &up3, &sites3);
    ac_cuda_map_cache_stats(g, &s4);
    CHECK(s4.entries == 0 && s4.resident == 0 && up3 > up1 && rel_err(h3, h1, n) <= 1e-6,
          "%s map cache off: %d blocks, %zu bytes uploaded", name, s4.entries, up3);
    /* the other cache: same inputs (same keys), other bytes: served its own maps, never a stale block */
    OK(ac_cuda_set_map_cache(g, (size_t)256 << 20));
    cached_pass(gpu, cache[0], seqs, NQ, h3, dec, &up3, &sites3); /* warm with cache 0's blocks */
    cached_pass(gpu, cache[1], seqs, NQ, h3, dec, &up3, &sites3);
    cached_pass(fresh, cache[1], seqs, NQ, h2, dec, &up2, &sites2); /* a context that never saw cache 0 */
    CHECK(sites3 == NQ * NL && up3 > 0 && rel_err(h3, h2, n) <= 1e-6 && rel_err(h3, h1, n) > 1e-4,
          "%s map cache: other bytes for the same inputs (%zu bytes uploaded; vs fresh %.3g, vs cache 0 %.3g)", name,
          up3, rel_err(h3, h2, n), rel_err(h3, h1, n));
    for (int c = 0; c < 2; c++) {
        OK(ac_cache_close(cache[c]));
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[c]);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dirs[c]);
    }
    for (int e = 0; e < NE; e++) free(ent[e]);
    free(h1), free(h2), free(h3);
    ac_ctx_free(gpu);
    ac_ctx_free(fresh);
}

/* A call that fails after the device map cache made blocks resident (serve_site errs at the last layer,
 * before any upload) must not leave those blocks behind: they were never filled. The next call with the
 * same identities makes every block resident again (no hit on an unfilled block) and gives what a call
 * with the cache off gives. */
typedef struct abort_srv {
    const unsigned char *enc; /* H maps of one sequence (the same for every layer) */
    size_t mb;
    int kind, causal, fail_layer; /* fail_layer < 0: never */
} abort_srv;
static int abort_serve(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    abort_srv *a = user;
    (void)seq, (void)L;
    if (layer == a->fail_layer) return ac_err(AC_ERR_ARG, "test: serve fails at layer %d", layer);
    out->maps = a->enc, out->head_bytes = a->mb, out->kind = a->kind, out->causal = a->causal, out->topk = 0;
    out->pageable = 1, out->ident[0] = 42, out->ident[1] = 7;
    return 1;
}

static void check_map_cache_abort(const char *name, ac_model *m, ac_cuda_model *g) {
    const int D = m->hp.n_embd, H = m->hp.n_head, NL = m->hp.n_layer, dec = m->hp.causal, L = 16;
    if (NL < 2) return;
    ac_map_codec mc;
    OK(ac_codec_parse(dec ? "q8-causal" : "q8", &mc));
    const size_t mb = ac_codec_map_bytes(&mc, L);
    unsigned char *enc = malloc(mb * H);
    float *P = malloc((size_t)L * L * 4);
    for (int hh = 0; hh < H; hh++) { /* head hh: weight on the diagonal and its neighbours, normalised */
        for (int t = 0; t < L; t++) {
            const int hi = dec ? t : L - 1;
            float sum = 0;
            for (int u = 0; u < L; u++) {
                P[t * L + u] = u <= hi ? 1.0f / (1.0f + (float)abs(u - t) + (float)(hh % 3)) : 0.f;
                sum += P[t * L + u];
            }
            for (int u = 0; u < L; u++) P[t * L + u] /= sum;
        }
        OK(ac_codec_encode(&mc, P, L, enc + hh * mb));
    }
    int32_t tok[16];
    for (int i = 0; i < L; i++) tok[i] = 3 + rnd_int(m->hp.n_vocab - 3);
    ac_seq q = {tok, L};
    float *h1 = malloc((size_t)L * D * 4), *h2 = malloc((size_t)L * D * 4);
    ac_outputs o = {0};
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    abort_srv a = {enc, mb, mc.kind, mc.causal, NL - 1};
    ac_cuda_opts op;
    memset(&op, 0, sizeof op);
    op.serve_site = abort_serve, op.user = &a;
    OK(ac_cuda_set_map_cache(g, (size_t)64 << 20));
    ac_map_lru_stats s0, s1, s2;
    ac_cuda_map_cache_stats(g, &s0);
    o.hidden = h1;
    const int rc = ac_cuda_forward(g, &q, 1, &o, &op); /* fails in serve_plan after NL - 1 blocks */
    ac_err_clear();
    ac_cuda_map_cache_stats(g, &s1);
    a.fail_layer = -1;
    OK(ac_cuda_forward(g, &q, 1, &o, &op));
    ac_cuda_map_cache_stats(g, &s2);
    OK(ac_cuda_set_map_cache(g, 0)); /* reference: every map uploaded into the per-call buffer */
    o.hidden = h2;
    OK(ac_cuda_forward(g, &q, 1, &o, &op));
    size_t up = 0;
    ac_cuda_last_served(g, NULL, &up);
    const double e = rel_err(h1, h2, (size_t)L * D);
    printf("  %s device map cache after a failed call: %d blocks left, then %llu made resident, %llu hits; vs "
           "cache off %.2e\n",
           name, s1.entries - s0.entries, (unsigned long long)(s2.inserts - s1.inserts),
           (unsigned long long)(s2.hits - s1.hits), e);
    CHECK(rc == AC_ERR_ARG && s1.entries == s0.entries && s1.inserts - s0.inserts == (uint64_t)(NL - 1),
          "%s map cache: the failed call's %llu blocks were dropped (rc %d, %d left)", name,
          (unsigned long long)(s1.inserts - s0.inserts), rc, s1.entries - s0.entries);
    CHECK(s2.inserts - s1.inserts == (uint64_t)NL && s2.hits == s1.hits && up == (size_t)NL * mb * H && e <= 1e-6,
          "%s map cache: after the failed call, every block uploaded again (%llu), %llu hits, vs off %.3g", name,
          (unsigned long long)(s2.inserts - s1.inserts), (unsigned long long)(s2.hits - s1.hits), e);
    OK(ac_cuda_set_map_cache(g, (size_t)64 << 20));
    free(enc), free(P), free(h1), free(h2);
}

/* CUDA graphs (bf16 model g): three batches of one shape with different tokens run with graphs on
 * (plain or captured or replayed) and off: bitwise the same outputs; the third call of the shape is a
 * replay; after a larger call reallocates the buffers the shape is captured again (stale graphs are
 * never replayed), still bitwise equal. */
static void check_graphs(const char *name, ac_model *m, ac_cuda_model *g) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab, dec = m->info.arch != AC_ARCH_BERT, nc = m->info.n_cls_out;
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256;
    const int lens[3] = {5, maxL < 29 ? maxL : 29, 2}, n = 3, T = lens[0] + lens[1] + lens[2];
    int32_t *tok = malloc((size_t)4 * T * sizeof *tok);
    for (int i = 0; i < 4 * T; i++) tok[i] = 3 + rnd_int(V - 3);
    ac_seq seqs[4][3];
    for (int k = 0; k < 4; k++)
        for (int s = 0, o = 0; s < n; o += lens[s], s++) seqs[k][s].tokens = tok + k * T + o, seqs[k][s].n_tokens = lens[s];
    const size_t nh = (size_t)T * D, np = (size_t)n * D, nl = dec ? (size_t)n * V : 0, ncl = (size_t)n * nc;
    float *res[2][4]; /* [graphs on/off][batch]: hidden | pooled | logits | cls back to back */
    const size_t each = nh + np + nl + ncl;
    int last[4] = {0};
    long long cap0 = 0, cap1 = 0;
    ac_cuda_graph_stats(g, NULL, &cap0, NULL);
    for (int on = 1; on >= 0; on--) {
        ac_cuda_set_graphs(g, on);
        for (int k = 0; k < 3; k++) {
            float *r = res[on][k] = malloc(each * 4);
            ac_outputs o = {0};
            o.hidden = r, o.pooled = r + nh, o.logits = dec ? r + nh + np : NULL, o.cls = nc ? r + nh + np + nl : NULL;
            o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
            o.normalize = !dec;
            OK(ac_cuda_forward(g, seqs[k], n, &o, NULL));
            if (on) ac_cuda_graph_stats(g, &last[k], NULL, NULL);
        }
    }
    ac_cuda_graph_stats(g, NULL, &cap1, NULL);
    int same = 1;
    for (int k = 0; k < 3; k++) same &= !memcmp(res[0][k], res[1][k], each * 4);
    CHECK(same, "%s: graphs on vs off differ", name);
    /* head dims without the fused kernel run the materialised one, which is never captured */
    const int hd = m->hp.head_dim, fused = hd == 32 || hd == 64 || hd == 128;
    if (fused)
        CHECK(last[2] == 2 && cap1 >= cap0 + (last[1] == 1), "%s: third call of a shape not replayed (last %d %d %d)",
              name, last[0], last[1], last[2]);
    else
        CHECK(last[0] == 0 && last[1] == 0 && last[2] == 0 && cap1 == cap0,
              "%s: head dim %d (materialised attention) captured a graph (last %d %d %d)", name, hd, last[0], last[1],
              last[2]);
    /* a larger call (80 sequences of maxL) reallocates the buffers: the next call of the shape captures again */
    ac_cuda_set_graphs(g, 1);
    {
        const int nb = 80;
        int32_t *bt = malloc((size_t)nb * maxL * sizeof *bt);
        ac_seq *bs = malloc(nb * sizeof *bs);
        for (int i = 0; i < nb * maxL; i++) bt[i] = 3 + rnd_int(V - 3);
        for (int s = 0; s < nb; s++) bs[s].tokens = bt + (size_t)s * maxL, bs[s].n_tokens = maxL;
        float *pooled = malloc((size_t)nb * D * 4);
        ac_outputs o = {0};
        o.pooled = pooled, o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
        OK(ac_cuda_forward(g, bs, nb, &o, NULL));
        free(bt), free(bs), free(pooled);
    }
    float *r = res[1][3] = malloc(each * 4);
    ac_outputs o = {0};
    o.hidden = r, o.pooled = r + nh, o.logits = dec ? r + nh + np : NULL, o.cls = nc ? r + nh + np + nl : NULL;
    o.pooling = dec ? AC_POOL_LAST : AC_POOL_MEAN;
    o.normalize = !dec;
    OK(ac_cuda_forward(g, seqs[1], n, &o, NULL));
    ac_cuda_graph_stats(g, &last[3], NULL, NULL);
    CHECK(last[3] == fused && !memcmp(r, res[0][1], each * 4), "%s: after reallocation: last %d (want %d), %s",
          name, last[3], fused, memcmp(r, res[0][1], each * 4) ? "outputs differ" : "outputs equal");
    printf("  %s: CUDA graphs: calls of one shape %d/%d/%d (0 plain, 1 captured, 2 replayed), bitwise equal to plain "
           "runs; after reallocation %d\n", name, last[0], last[1], last[2], last[3]);
    for (int k = 0; k < 3; k++) free(res[0][k]), free(res[1][k]);
    free(res[1][3]);
    free(tok);
}

static void check_bad_input(ac_cuda_model *g, int V) {
    int32_t ids[3] = {1, 2, V};
    ac_seq s = {ids, 3};
    float pooled[4096];
    ac_outputs o = {0};
    o.pooled = pooled;
    o.pooling = AC_POOL_MEAN;
    CHECK(ac_cuda_forward(g, &s, 1, &o, NULL) == AC_ERR_INPUT && strstr(ac_last_error(), "out of range"),
          "out-of-range id: %s", ac_last_error());
    s.n_tokens = 0;
    CHECK(ac_cuda_forward(g, &s, 1, &o, NULL) == AC_ERR_INPUT, "empty sequence: %s", ac_last_error());
    ids[2] = 3;
    s.n_tokens = 3; /* the model still works after refusals */
    CHECK(ac_cuda_forward(g, &s, 1, &o, NULL) == AC_OK && all_finite(pooled, 1), "forward after refusals");
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* stories260K's greedy continuations (64 positions, BOS first) by repeated GPU prefill */
static void check_greedy(ac_model *m, ac_cuda_model *g, const char *tsv) {
    FILE *f = fopen(tsv, "r");
    if (!f) {
        printf("  SKIP greedy lines: %s absent\n", tsv);
        return;
    }
    char line[8192];
    int n_lines = 0, n_ok = 0;
    float *logits = malloc((size_t)m->hp.n_vocab * 4);
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || !strchr(line, '\t')) continue;
        char *tab = strchr(line, '\t'), *want = tab + 1;
        *tab = 0;
        want[strcspn(want, "\r\n")] = 0;
        int32_t ids[65];
        int n = 0;
        OK(ac_tokenize(m, line, strlen(line), 1, ids, 64, &n));
        while (n < 65) {
            ac_seq s = {ids, n};
            ac_outputs o = {0};
            o.logits = logits;
            OK(ac_cuda_forward(g, &s, 1, &o, NULL));
            const int next = argmax(logits, m->hp.n_vocab);
            if (next == ac_token_bos(m)) break;
            ids[n++] = next;
        }
        char text[8192];
        size_t len = 0;
        for (int i = 1; i < n; i++) {
            char piece[256];
            int np = 0;
            OK(ac_token_to_piece(m, ids[i], piece, sizeof piece, &np));
            const char *p = piece;
            if (i == 1 && np > 0 && piece[0] == ' ') p++, np--;
            if (len + (size_t)np + 1 >= sizeof text) break;
            memcpy(text + len, p, (size_t)np);
            len += (size_t)np;
        }
        text[len] = 0;
        for (size_t i = 0; i < len; i++)
            if (text[i] == '\n') text[i] = ' ';
        n_lines++;
        if (!strcmp(text, want)) n_ok++;
        else printf("  greedy mismatch for '%s':\n    got  %s\n    want %s\n", line, text, want);
    }
    fclose(f);
    free(logits);
    printf("  stories260K greedy: %d of %d lines reproduced on the GPU (f32)\n", n_ok, n_lines);
    CHECK(n_lines > 0 && n_ok == n_lines, "greedy lines %d/%d", n_ok, n_lines);
}

/* ---- the prefix K/V cache on the GPU ----------------------------------------------------------
 * Given prefix rows (ac_cuda_opts.pfx_*): sequence s's rows [0, P) come from the caller (K after RoPE,
 * V, final hidden states, f32), only rows P..L-1 are computed, and those are written back. */
typedef struct pfx_bufs {
    int n, NL, KVD, D;
    int P[8], ld[8];
    float *kv[8], *hid[8]; /* [NL][2][ld][KVD], [ld][D] */
} pfx_bufs;

static void pfx_alloc(pfx_bufs *b, const ac_model *m, const ac_seq *seqs, int n) {
    memset(b, 0, sizeof *b);
    b->n = n, b->NL = m->hp.n_layer, b->KVD = m->hp.n_head_kv * m->hp.head_dim, b->D = m->hp.n_embd;
    for (int s = 0; s < n; s++) {
        const int L = seqs[s].n_tokens;
        b->ld[s] = L;
        const size_t nk = (size_t)b->NL * 2 * L * b->KVD, nh = (size_t)L * b->D;
        b->kv[s] = malloc(nk * 4), b->hid[s] = malloc(nh * 4);
        for (size_t i = 0; i < nk; i++) b->kv[s][i] = NAN;
        for (size_t i = 0; i < nh; i++) b->hid[s][i] = NAN;
    }
}
static void pfx_free(pfx_bufs *b) {
    for (int s = 0; s < b->n; s++) free(b->kv[s]), free(b->hid[s]);
}
/* rows [0, P) of b's sequence s = rows [0, P) of a's sequence sa (a stored prefix shared by both) */
static void pfx_give(pfx_bufs *b, int s, int P, const pfx_bufs *a, int sa) {
    b->P[s] = P;
    for (int l = 0; l < b->NL; l++)
        for (int kv = 0; kv < 2; kv++)
            memcpy(b->kv[s] + ((size_t)(2 * l + kv) * b->ld[s]) * b->KVD,
                   a->kv[sa] + ((size_t)(2 * l + kv) * a->ld[sa]) * a->KVD, (size_t)P * b->KVD * 4);
    memcpy(b->hid[s], a->hid[sa], (size_t)P * b->D * 4);
}
static void pfx_opts(pfx_bufs *b, ac_cuda_opts *o) {
    memset(o, 0, sizeof *o);
    o->pfx_P = b->P, o->pfx_ld = b->ld, o->pfx_kv = b->kv, o->pfx_hid = b->hid;
}
/* ||rows [P, L) of b - the same rows of a|| / ||a's||, over every layer's K, V and the hidden rows */
static double pfx_rows_err(const pfx_bufs *b, const pfx_bufs *a, int s, double *eh) {
    double d = 0, r = 0, dh = 0, rh = 0;
    const int P = b->P[s], L = b->ld[s];
    for (int l = 0; l < 2 * b->NL; l++)
        for (size_t i = (size_t)P * b->KVD; i < (size_t)L * b->KVD; i++) {
            const double x = b->kv[s][(size_t)l * L * b->KVD + i], y = a->kv[s][(size_t)l * L * b->KVD + i];
            d += (x - y) * (x - y), r += y * y;
        }
    for (size_t i = (size_t)P * b->D; i < (size_t)L * b->D; i++) {
        const double x = b->hid[s][i], y = a->hid[s][i];
        dh += (x - y) * (x - y), rh += y * y;
    }
    *eh = sqrt(dh / (rh > 0 ? rh : 1));
    return sqrt(d / (r > 0 ? r : 1));
}

/* the CPU engine's rows of a forward (its prefix hook's insert), for the copied-back rows of f32 mode */
typedef struct cpu_rows {
    pfx_bufs *b;
    int calls;
} cpu_rows;
static int cpu_rows_lookup(void *user, const int32_t *tokens, const ac_kv_rows *rows) {
    (void)user, (void)tokens, (void)rows;
    return 0;
}
static void cpu_rows_insert(void *user, const int32_t *tokens, const ac_kv_rows *rows, int P) {
    cpu_rows *cr = user;
    (void)tokens, (void)P;
    pfx_bufs *b = cr->b;
    const int s = cr->calls++;
    if (s >= b->n || rows->L != b->ld[s]) return;
    for (int l = 0; l < 2 * b->NL; l++)
        memcpy(b->kv[s] + (size_t)l * rows->L * b->KVD, rows->kv + (size_t)l * rows->ld * rows->kvd,
               (size_t)rows->L * b->KVD * 4);
    memcpy(b->hid[s], rows->hid, (size_t)rows->L * b->D * 4);
}

enum { PF_NSEQ = 6 };
/* One batch at the backend's level, in one precision: a donor run (every P = 0: the rows written back
 * are the whole sequences'), then the same batch with prefixes given from the donor's sequence 0 (they
 * share its head): P = Lh, 0, Lh/2, Lh (one new row), 0 (one token), 37 (inside a key tile). */
static void check_prefix_backend(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g, int f32) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab;
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256, Lh = maxL / 2;
    const int lens[PF_NSEQ] = {Lh + maxL / 4, 33, Lh / 2 + 15, Lh + 1, 1, maxL};
    const int give[PF_NSEQ] = {Lh, 0, Lh / 2, Lh, 0, 37 < Lh ? 37 : Lh / 3};
    int T;
    ac_seq seqs[PF_NSEQ];
    int32_t *tok = rand_batch(V, lens, PF_NSEQ, give, seqs, &T); /* sequences 1.. start with sequence 0's head */
    float *h[4], *pm[4], *lg[4];
    for (int k = 0; k < 4; k++) {
        h[k] = malloc((size_t)T * D * 4), pm[k] = malloc((size_t)PF_NSEQ * D * 4), lg[k] = malloc((size_t)PF_NSEQ * V * 4);
        for (size_t i = 0; i < (size_t)T * D; i++) h[k][i] = NAN;
    }
    ac_outputs o = {0};
    o.pooling = AC_POOL_MEAN, o.normalize = 1; /* the mean reads the given rows' hidden states */
    /* [0]: the exact GPU forward */
    o.hidden = h[0], o.pooled = pm[0], o.logits = lg[0];
    OK(ac_cuda_forward(g, seqs, PF_NSEQ, &o, NULL));
    /* [1]: the donor (every P = 0, every row written back) */
    pfx_bufs donor, pb;
    pfx_alloc(&donor, m, seqs, PF_NSEQ);
    ac_cuda_opts opts;
    pfx_opts(&donor, &opts);
    o.hidden = h[1], o.pooled = pm[1], o.logits = lg[1];
    OK(ac_cuda_forward(g, seqs, PF_NSEQ, &o, &opts));
    const double e_don = rel_err(h[1], h[0], (size_t)T * D);
    int don_ok = 1;
    for (int s = 0; s < PF_NSEQ; s++) { /* every row written back; the hidden ones are the output's rows */
        don_ok &= all_finite(donor.kv[s], (size_t)donor.NL * 2 * lens[s] * donor.KVD) &&
                  all_finite(donor.hid[s], (size_t)lens[s] * D);
        const float *hs = h[0] + (size_t)(seqs[s].tokens - tok) * D;
        don_ok &= rel_err(donor.hid[s], hs, (size_t)lens[s] * D) < 1e-6;
    }
    CHECK(e_don < 1e-6 && don_ok, "%s %s prefix donor: outputs as the plain forward (%.2e), rows written back", name,
          f32 ? "f32" : "bf16", e_don);
    /* [2]: given prefixes */
    pfx_alloc(&pb, m, seqs, PF_NSEQ);
    for (int s = 0; s < PF_NSEQ; s++) pfx_give(&pb, s, give[s], &donor, 0);
    pfx_opts(&pb, &opts);
    o.hidden = h[2], o.pooled = pm[2], o.logits = lg[2];
    OK(ac_cuda_forward(g, seqs, PF_NSEQ, &o, &opts));
    const double eh = rel_err(h[2], h[0], (size_t)T * D), ep = rel_err(pm[2], pm[0], (size_t)PF_NSEQ * D);
    const double el = rel_err(lg[2], lg[0], (size_t)PF_NSEQ * V), cs = cosine_min(pm[2], pm[0], PF_NSEQ, D);
    double ekv = 0, ehid = 0;
    for (int s = 0; s < PF_NSEQ; s++) {
        double e1 = 0;
        const double e0 = pfx_rows_err(&pb, &donor, s, &e1);
        ekv = e0 > ekv ? e0 : ekv, ehid = e1 > ehid ? e1 : ehid;
    }
    /* [3]: logits and the last-row pooling only (outputs from the computed rows alone) */
    for (int s = 0; s < PF_NSEQ; s++) pfx_give(&pb, s, give[s], &donor, 0);
    ac_outputs o3 = {0};
    o3.pooled = pm[3], o3.logits = lg[3], o3.pooling = AC_POOL_LAST;
    OK(ac_cuda_forward(g, seqs, PF_NSEQ, &o3, &opts));
    float *last = malloc((size_t)PF_NSEQ * D * 4);
    for (int s = 0; s < PF_NSEQ; s++)
        memcpy(last + (size_t)s * D, h[0] + (size_t)(seqs[s].tokens - tok + lens[s] - 1) * D, (size_t)D * 4);
    const double e3 = rel_err(pm[3], last, (size_t)PF_NSEQ * D), el3 = rel_err(lg[3], lg[0], (size_t)PF_NSEQ * V);
    printf("  %s %s given prefixes (P = %d %d %d %d %d %d): vs the full GPU forward hidden %.2e mean-pooled %.2e "
           "(cos %.6f) logits %.2e; rows written back vs the donor's K/V %.2e hidden %.2e; last-row outputs %.2e / %.2e\n",
           name, f32 ? "f32" : "bf16", give[0], give[1], give[2], give[3], give[4], give[5], eh, ep, cs, el, ekv, ehid, e3,
           el3);
    const double tol = f32 ? 1e-5 : 2e-2;
    CHECK(all_finite(h[2], (size_t)T * D) && eh < tol && ep < tol && el < tol && cs > 0.999,
          "%s %s given prefixes vs the full GPU forward", name, f32 ? "f32" : "bf16");
    CHECK(ekv < tol && ehid < tol, "%s %s given prefixes: computed rows written back (K/V %.2e, hidden %.2e)", name,
          f32 ? "f32" : "bf16", ekv, ehid);
    CHECK(e3 < tol && el3 < tol, "%s %s given prefixes, last-row outputs only", name, f32 ? "f32" : "bf16");
    if (f32) { /* against the CPU engine: its exact forward, its rows, and its prefix cache's forward */
        float *hc = malloc((size_t)T * D * 4), *hp = malloc((size_t)T * D * 4), *pc = malloc((size_t)PF_NSEQ * D * 4);
        pfx_bufs cb;
        pfx_alloc(&cb, m, seqs, PF_NSEQ);
        cpu_rows cr = {&cb, 0};
        ac_kv_hook kh = {&cr, cpu_rows_lookup, cpu_rows_insert, NULL, NULL};
        ac_ctx_set_kv_hook(cpu, &kh);
        o.hidden = hc, o.pooled = pc, o.logits = NULL;
        OK(ac_forward(cpu, seqs, PF_NSEQ, &o));
        ac_ctx_set_kv_hook(cpu, NULL);
        double ekc = 0, ehc = 0;
        for (int s = 0; s < PF_NSEQ; s++) {
            double e1 = 0;
            const double e0 = pfx_rows_err(&pb, &cb, s, &e1);
            ekc = e0 > ekc ? e0 : ekc, ehc = e1 > ehc ? e1 : ehc;
        }
        ac_prefix_params pp = ac_prefix_default_params();
        pp.min_match = 4;
        ac_prefix_cache *pcache;
        OK(ac_prefix_cache_new(m, &pp, &pcache));
        OK(ac_ctx_attach_prefix(cpu, pcache));
        ac_seq first = seqs[0];
        ac_outputs o1 = {0};
        o1.pooled = pc, o1.pooling = AC_POOL_LAST;
        OK(ac_forward(cpu, &first, 1, &o1)); /* stores sequence 0: the others find their head */
        o.hidden = hp, o.pooled = pc;
        OK(ac_forward(cpu, seqs, PF_NSEQ, &o));
        ac_prefix_stats st;
        ac_prefix_get_stats(pcache, &st);
        ac_ctx_attach_prefix(cpu, NULL);
        ac_prefix_cache_free(pcache);
        const double ec = rel_err(h[2], hc, (size_t)T * D), ecp = rel_err(h[2], hp, (size_t)T * D);
        const double epc = rel_err(pm[2], pc, (size_t)PF_NSEQ * D);
        printf("  %s f32 given prefixes vs the CPU: exact hidden %.2e, the CPU prefix cache's forward hidden %.2e "
               "pooled %.2e (%lld hits); rows written back vs the CPU's K/V %.2e hidden %.2e\n",
               name, ec, ecp, epc, (long long)st.hits, ekc, ehc);
        CHECK(ec < 1e-4 && ecp < 1e-4 && epc < 1e-4 && st.hits >= 4, "%s f32 given prefixes vs the CPU prefix forward",
              name);
        CHECK(ekc < 1e-4 && ehc < 1e-4, "%s f32 rows written back vs the CPU's rows", name);
        pfx_free(&cb);
        free(hc), free(hp), free(pc);
    }
    /* refusals: P = L, given rows with served maps */
    pb.P[1] = lens[1];
    CHECK(ac_cuda_forward(g, seqs, PF_NSEQ, &o3, &opts) == AC_ERR_ARG && strstr(ac_last_error(), "given rows"),
          "P = L refused: %s", ac_last_error());
    pb.P[1] = 0;
    opts.serve = srv_serve;
    CHECK(ac_cuda_forward(g, seqs, PF_NSEQ, &o3, &opts) == AC_ERR_ARG, "given rows + served maps refused");
    pfx_free(&donor), pfx_free(&pb);
    for (int k = 0; k < 4; k++) free(h[k]), free(pm[k]), free(lg[k]);
    free(last), free(tok);
}

/* stories260K's greedy lines, each step computing only its one new row over the rows of the steps
 * before it (given back to the backend as prefix rows: incremental decoding through the seam) */
static void check_greedy_prefix(ac_model *m, ac_cuda_model *g, const char *tsv) {
    FILE *f = fopen(tsv, "r");
    if (!f) return;
    char line[8192];
    int n_lines = 0, n_ok = 0;
    float *logits = malloc((size_t)m->hp.n_vocab * 4);
    const int KVD = m->hp.n_head_kv * m->hp.head_dim, NL = m->hp.n_layer, D = m->hp.n_embd;
    float *kv = malloc((size_t)NL * 2 * 65 * KVD * 4), *hid = malloc((size_t)65 * D * 4);
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || !strchr(line, '\t')) continue;
        char *tab = strchr(line, '\t'), *want = tab + 1;
        *tab = 0;
        want[strcspn(want, "\r\n")] = 0;
        int32_t ids[65];
        int n = 0, P = 0;
        OK(ac_tokenize(m, line, strlen(line), 1, ids, 64, &n));
        while (n < 65) {
            ac_seq s = {ids, n};
            ac_outputs o = {0};
            o.logits = logits;
            int ld = 65;
            ac_cuda_opts opts = {0};
            opts.pfx_P = &P, opts.pfx_ld = &ld, opts.pfx_kv = &kv, opts.pfx_hid = &hid;
            OK(ac_cuda_forward(g, &s, 1, &o, &opts));
            const int next = argmax(logits, m->hp.n_vocab);
            if (next == ac_token_bos(m)) break;
            P = n; /* rows [0, n) are now in kv, hid */
            ids[n++] = next;
        }
        char text[8192];
        size_t len = 0;
        for (int i = 1; i < n; i++) {
            char piece[256];
            int np = 0;
            OK(ac_token_to_piece(m, ids[i], piece, sizeof piece, &np));
            const char *p = piece;
            if (i == 1 && np > 0 && piece[0] == ' ') p++, np--;
            if (len + (size_t)np + 1 >= sizeof text) break;
            memcpy(text + len, p, (size_t)np);
            len += (size_t)np;
        }
        text[len] = 0;
        for (size_t i = 0; i < len; i++)
            if (text[i] == '\n') text[i] = ' ';
        n_lines++;
        if (!strcmp(text, want)) n_ok++;
        else printf("  greedy (prefix rows) mismatch for '%s':\n    got  %s\n    want %s\n", line, text, want);
    }
    fclose(f);
    free(logits), free(kv), free(hid);
    printf("  stories260K greedy, one new row per step over given prefix rows: %d of %d lines (f32)\n", n_ok, n_lines);
    CHECK(n_lines > 0 && n_ok == n_lines, "greedy lines with prefix rows %d/%d", n_ok, n_lines);
}

/* The public API: ac_prefix_cache attached to a cuda context (bf16), one batch storing two sequences,
 * then a mixed batch: a shared head (P = Lh), a miss, half the head (P = Lh/2), an exact repeat
 * (P = L-1), a stored sequence continued (P = its length), one token (no lookup hit). The same
 * batches on a CPU context with its own prefix cache: same P per sequence and hits; outputs vs the
 * GPU without the cache and vs the CPU within bf16 tolerance. */
static void check_prefix_api(const char *name, ac_model *m, ac_ctx *cpu) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab;
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256, Lh = maxL / 2;
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    gp.gain_guard = -1; /* every call uses the cache: the checks count what it served */
    ac_ctx *gpu;
    OK(ac_ctx_new(m, &gp, &gpu));
    int32_t a0[256], a1[40], b[PF_NSEQ][256];
    const int la0 = Lh + maxL / 4, la1 = 20;
    for (int i = 0; i < la0; i++) a0[i] = 3 + rnd_int(V - 3);
    for (int i = 0; i < la1; i++) a1[i] = 3 + rnd_int(V - 3);
    const int lb[PF_NSEQ] = {Lh + 9, 30, Lh / 2 + 12, la0, la1 + 11, 1};
    const int wantP[PF_NSEQ] = {Lh, 0, Lh / 2, la0 - 1, la1, 0};
    for (int s = 0; s < PF_NSEQ; s++)
        for (int i = 0; i < lb[s]; i++) {
            const int32_t *src = s == 4 ? a1 : a0;
            const int keep = s == 4 ? la1 : s == 3 ? la0 : wantP[s];
            b[s][i] = i < keep ? src[i] : 3 + rnd_int(V - 3);
            if (i == keep && s != 1 && s != 5 && i < (s == 4 ? la1 : la0) && b[s][i] == src[i]) /* must leave the stored run here */
                b[s][i] = 3 + (b[s][i] - 3 + 1) % (V - 3);
        }
    b[1][0] = 3 + (a0[0] - 3 + 1) % (V - 3); /* the miss starts apart from both stored sequences */
    if (b[1][0] == a1[0]) b[1][0] = 3 + (b[1][0] - 3 + 1) % (V - 3);
    ac_seq sa[2] = {{a0, la0}, {a1, la1}}, sb[PF_NSEQ];
    int T = 0;
    for (int s = 0; s < PF_NSEQ; s++) sb[s] = (ac_seq){b[s], lb[s]}, T += lb[s];
    ac_prefix_params pp = ac_prefix_default_params();
    pp.min_match = 4;
    ac_prefix_cache *pg, *pc;
    OK(ac_prefix_cache_new(m, &pp, &pg));
    OK(ac_prefix_cache_new(m, &pp, &pc));
    float *h[3], *pl[3], *lg[3];
    for (int k = 0; k < 3; k++)
        h[k] = malloc((size_t)T * D * 4), pl[k] = malloc((size_t)PF_NSEQ * D * 4), lg[k] = malloc((size_t)PF_NSEQ * V * 4);
    ac_outputs o = {0};
    o.pooling = AC_POOL_LAST;
    /* [0]: GPU without the cache, [1]: GPU with it, [2]: CPU with its own */
    o.hidden = h[0], o.pooled = pl[0], o.logits = lg[0];
    OK(ac_forward(gpu, sb, PF_NSEQ, &o));
    OK(ac_ctx_attach_prefix(gpu, pg));
    OK(ac_ctx_attach_prefix(cpu, pc));
    ac_outputs oa = {0};
    oa.pooled = pl[1], oa.pooling = AC_POOL_LAST;
    OK(ac_forward(gpu, sa, 2, &oa)); /* stores a0 and a1 */
    OK(ac_forward(cpu, sa, 2, &oa));
    ac_prefix_stats s0;
    ac_prefix_get_stats(pg, &s0);
    for (size_t i = 0; i < (size_t)T * D; i++) h[1][i] = NAN;
    o.hidden = h[1], o.pooled = pl[1], o.logits = lg[1];
    OK(ac_forward(gpu, sb, PF_NSEQ, &o));
    ac_seq_plan plan[PF_NSEQ], cplan[PF_NSEQ];
    OK(ac_ctx_last_plan(gpu, PF_NSEQ, plan));
    o.hidden = h[2], o.pooled = pl[2], o.logits = lg[2];
    OK(ac_forward(cpu, sb, PF_NSEQ, &o));
    OK(ac_ctx_last_plan(cpu, PF_NSEQ, cplan));
    ac_prefix_stats s1, c1;
    ac_prefix_get_stats(pg, &s1);
    ac_prefix_get_stats(pc, &c1);
    int plan_ok = 1, want_hits = 0, reused = 0;
    for (int s = 0; s < PF_NSEQ; s++) {
        plan_ok &= plan[s].prefix_rows == wantP[s] && cplan[s].prefix_rows == wantP[s];
        want_hits += wantP[s] > 0, reused += wantP[s];
        if (plan[s].prefix_rows != wantP[s])
            printf("  sequence %d: %d prefix rows on the GPU, %d on the CPU, want %d\n", s, plan[s].prefix_rows,
                   cplan[s].prefix_rows, wantP[s]);
    }
    const long long hits = (long long)(s1.hits - s0.hits), used = (long long)(s1.tokens_reused - s0.tokens_reused);
    const double eh = rel_err(h[1], h[0], (size_t)T * D), el = rel_err(lg[1], lg[0], (size_t)PF_NSEQ * V);
    const double ep = rel_err(pl[1], pl[0], (size_t)PF_NSEQ * D), ehc = rel_err(h[1], h[2], (size_t)T * D);
    const double elc = rel_err(lg[1], lg[2], (size_t)PF_NSEQ * V);
    printf("  %s prefix cache API on cuda: %lld of %d sequences hit (%lld rows reused; CPU %lld hits), GPU cached vs "
           "GPU exact hidden %.2e pooled %.2e logits %.2e; vs the CPU's cached forward hidden %.2e logits %.2e\n",
           name, hits, PF_NSEQ, used, (long long)(c1.hits - 0), eh, ep, el, ehc, elc);
    CHECK(plan_ok && hits == want_hits && used == reused, "%s prefix cache API on cuda: P per sequence and hits counted",
          name);
    CHECK(all_finite(h[1], (size_t)T * D) && eh < 2e-2 && ep < 2e-2 && el < 2e-2,
          "%s prefix cache API on cuda vs the GPU without it", name);
    CHECK(ehc < 3e-2 && elc < 3e-2, "%s prefix cache API on cuda vs the CPU's", name);
    /* again, mean-pooled (the given rows' hidden states from the tree): everything stored now */
    o.hidden = NULL, o.logits = NULL, o.pooling = AC_POOL_MEAN, o.normalize = 1;
    o.pooled = pl[1];
    OK(ac_forward(gpu, sb, PF_NSEQ, &o));
    OK(ac_ctx_last_plan(gpu, PF_NSEQ, plan));
    ac_ctx_attach_prefix(gpu, NULL);
    o.pooled = pl[0];
    OK(ac_forward(gpu, sb, PF_NSEQ, &o));
    int all_rep = 1;
    for (int s = 0; s < PF_NSEQ; s++) all_rep &= plan[s].prefix_rows == (lb[s] > 1 ? lb[s] - 1 : 0);
    const double em = rel_err(pl[1], pl[0], (size_t)PF_NSEQ * D), cm = cosine_min(pl[1], pl[0], PF_NSEQ, D);
    printf("  %s prefix cache API on cuda, repeats mean-pooled: %.2e (cos %.6f)\n", name, em, cm);
    CHECK(all_rep && em < 2e-2 && cm > 0.999, "%s repeats mean-pooled through the prefix cache on cuda", name);
    ac_ctx_attach_prefix(cpu, NULL);
    ac_ctx_free(gpu);
    ac_prefix_cache_free(pg), ac_prefix_cache_free(pc);
    for (int k = 0; k < 3; k++) free(h[k]), free(pl[k]), free(lg[k]);
}

/* Both caches on one cuda context (session 14; issue 13 item 2): the prefix K/V cache gives a sequence's
 * first P rows, the attention cache (rows 'prefix', top-8 causal rows) serves rows [P, R) where its entry
 * shares R > P tokens with the query, the rest is exact; the planner's choice per sequence is in
 * ac_ctx_last_plan. Entries A and B (80 tokens) in the attention cache, a sequence sharing B's first 24
 * tokens in each context's prefix tree; then one batch: B's first 56 tokens + new ones (P 24, map rows
 * 32), A's first 40 + new (P 0, map rows 40: partial rows alone), new tokens (neither), B's first 20 +
 * new (P 20 and no map row past it), B repeated (P 24, map rows 55: capped at L - 1). The GPU's plan must
 * be that and the CPU's; outputs within bf16 tolerance of the CPU's with the same caches, which differ
 * from the exact forward by more than that (the top-8 rows were used). */
enum { BC_NSEQ = 5, BC_LEN = 80, BC_P0 = 24 };
/* a token id in [3, V) other than x and y */
static int32_t other_tok(int32_t x, int32_t y, int V) {
    int32_t t = 3 + (x - 3 + 1) % (V - 3);
    if (t == y) t = 3 + (t - 3 + 1) % (V - 3);
    return t == x ? 3 + (t - 3 + 1) % (V - 3) : t;
}
static void check_both_caches_api(const char *name, ac_model *m, ac_ctx *cpu) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab, NL = m->hp.n_layer;
    if (m->hp.n_ctx_train < BC_LEN) return;
    int32_t A[BC_LEN], B[BC_LEN], S[BC_P0 + 10], q[BC_NSEQ][BC_LEN];
    for (int i = 0; i < BC_LEN; i++) A[i] = 3 + rnd_int(V - 3), B[i] = 3 + rnd_int(V - 3);
    if (A[0] == B[0]) A[0] = 3 + (B[0] - 3 + 1) % (V - 3);
    for (int i = 0; i < BC_P0 + 10; i++) S[i] = i < BC_P0 ? B[i] : 3 + rnd_int(V - 3);
    S[BC_P0] = other_tok(B[BC_P0], B[BC_P0], V);
    const int shared[BC_NSEQ] = {56, 40, 0, 20, BC_LEN}, lq[BC_NSEQ] = {70, 60, 50, 45, BC_LEN};
    const int32_t *src[BC_NSEQ] = {B, A, NULL, B, B};
    const int wantP[BC_NSEQ] = {BC_P0, 0, 0, 20, BC_P0}, wantM[BC_NSEQ] = {56 - BC_P0, 40, 0, 0, BC_LEN - 1 - BC_P0};
    ac_seq qs[BC_NSEQ];
    int T = 0;
    for (int s = 0; s < BC_NSEQ; s++) {
        for (int i = 0; i < lq[s]; i++) q[s][i] = i < shared[s] ? src[s][i] : 3 + rnd_int(V - 3);
        if (src[s] && shared[s] < lq[s]) /* leave the entry (and S) at `shared` */
            q[s][shared[s]] = other_tok(src[s][shared[s]], S[shared[s] < BC_P0 + 10 ? shared[s] : 0], V);
        if (!src[s]) q[s][0] = other_tok(A[0], B[0], V);
        qs[s] = (ac_seq){q[s], lq[s]};
        T += lq[s];
    }
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    gp.gain_guard = -1;
    ac_ctx *gpu;
    OK(ac_ctx_new(m, &gp, &gpu));
    char dir[] = "/tmp/ac_gpu_both_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    ac_cache_params cp = ac_cache_default_params();
    cp.writable = 1, cp.create = 1, cp.codec = "topk8-causal", cp.rows = AC_ROWS_PREFIX, cp.adapt_floor = 0;
    ac_cache *cache;
    OK(ac_cache_open(m, dir, &cp, &cache));
    OK(ac_cache_add(cache, gpu, A, BC_LEN, NULL)); /* A's maps recorded on the GPU, B's on the CPU */
    OK(ac_cache_add(cache, cpu, B, BC_LEN, NULL));
    OK(ac_cache_commit(cache));
    ac_prefix_params pp = ac_prefix_default_params();
    pp.min_match = 4;
    ac_prefix_cache *pg, *pc;
    OK(ac_prefix_cache_new(m, &pp, &pg));
    OK(ac_prefix_cache_new(m, &pp, &pc));
    float *h[4], *lg[4];
    for (int k = 0; k < 4; k++) h[k] = malloc((size_t)T * D * 4), lg[k] = malloc((size_t)BC_NSEQ * V * 4);
    ac_outputs o = {0};
    o.pooling = AC_POOL_LAST;
    o.hidden = h[0], o.logits = lg[0];
    OK(ac_forward(cpu, qs, BC_NSEQ, &o)); /* [0]: exact, CPU */
    ac_seq sseq = {S, BC_P0 + 10};
    ac_outputs os = {0};
    os.logits = lg[3];
    ac_seq_plan plan[2][BC_NSEQ];
    for (int k = 1; k < 3; k++) { /* [1]: CPU, [2]: GPU, each with its prefix tree holding S and the cache */
        ac_ctx *c = k == 1 ? cpu : gpu;
        OK(ac_ctx_attach_prefix(c, k == 1 ? pc : pg));
        OK(ac_forward(c, &sseq, 1, &os)); /* stores S */
        OK(ac_ctx_attach_cache(c, cache));
        for (size_t i = 0; i < (size_t)T * D; i++) h[k][i] = NAN;
        o.hidden = h[k], o.logits = lg[k];
        OK(ac_forward(c, qs, BC_NSEQ, &o));
        OK(ac_ctx_last_plan(c, BC_NSEQ, plan[k - 1]));
        ac_ctx_attach_cache(c, NULL);
        ac_ctx_attach_prefix(c, NULL);
    }
    int plan_ok = 1, want_sites = 0, sites = -1;
    ac_cuda_last_served(gpu->be, &sites, NULL);
    for (int s = 0; s < BC_NSEQ; s++) {
        want_sites += wantM[s] > 0 ? NL : 0;
        for (int k = 0; k < 2; k++)
            plan_ok &= plan[k][s].prefix_rows == wantP[s] && plan[k][s].map_rows == wantM[s] &&
                       plan[k][s].map_layers == (wantM[s] > 0 ? NL : 0);
        printf("    sequence %d: prefix rows %d / %d, map rows %d / %d (GPU / CPU; want %d, %d)\n", s,
               plan[1][s].prefix_rows, plan[0][s].prefix_rows, plan[1][s].map_rows, plan[0][s].map_rows, wantP[s],
               wantM[s]);
    }
    const double eh = rel_err(h[2], h[1], (size_t)T * D), el = rel_err(lg[2], lg[1], (size_t)BC_NSEQ * V);
    const double ex = rel_err(h[1], h[0], (size_t)T * D);
    printf("  %s both caches on cuda (prefix rows + top-8 map rows + exact rows, %d sites served): GPU vs CPU hidden "
           "%.2e logits %.2e; CPU vs exact %.2e\n",
           name, sites, eh, el, ex);
    CHECK(plan_ok && sites == want_sites, "%s both caches on cuda: the plan per sequence (%d sites, want %d)", name, sites,
          want_sites);
    CHECK(all_finite(h[2], (size_t)T * D) && eh < 3e-2 && el < 3e-2 && ex > eh,
          "%s both caches on cuda vs the CPU: hidden %.2e logits %.2e (exact apart by %.2e)", name, eh, el, ex);
    OK(ac_cache_close(cache));
    ac_prefix_cache_free(pg), ac_prefix_cache_free(pc);
    ac_ctx_free(gpu);
    for (int k = 0; k < 4; k++) free(h[k]), free(lg[k]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* ac_lm_head on a cuda context == the forward's logits; label scoring with labels of several tokens
 * (the prompt+label rows' hidden states, then the LM head) on the GPU with and without the prefix
 * cache (the prompt runs once, every label continues it: P = the prompt's length) and on the CPU. */
static void check_label_scoring(const char *name, ac_model *m, ac_ctx *cpu) {
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    gp.gain_guard = -1; /* every call uses the cache: the checks count what it served */
    ac_ctx *gpu;
    OK(ac_ctx_new(m, &gp, &gpu));
    const int D = m->hp.n_embd, V = m->hp.n_vocab;
    int32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = 3 + rnd_int(V - 3);
    ac_seq seqs[2] = {{tok, 23}, {tok + 23, 17}};
    float *hid = malloc(40 * (size_t)D * 4), *lg = malloc(2 * (size_t)V * 4), *lh = malloc(2 * (size_t)V * 4);
    float *rows = malloc(2 * (size_t)D * 4);
    ac_outputs o = {0};
    o.hidden = hid, o.logits = lg;
    OK(ac_forward(gpu, seqs, 2, &o));
    memcpy(rows, hid + (size_t)22 * D, (size_t)D * 4), memcpy(rows + D, hid + (size_t)39 * D, (size_t)D * 4);
    OK(ac_lm_head(gpu, rows, 2, lh));
    const double el = rel_err(lh, lg, 2 * (size_t)V);
    printf("  %s ac_lm_head on cuda vs the forward's logits: %.2e\n", name, el);
    CHECK(el < 1e-3, "%s ac_lm_head on cuda", name);
    const char *prompt = "Once upon a time, there was a little girl named Lily. She";
    const char *labels[3] = {" was very happy", " liked to play outside", " saw a big dog"};
    double lp[3][3];
    ac_prefix_params pp = ac_prefix_default_params();
    pp.min_match = 4;
    ac_prefix_cache *pc;
    OK(ac_prefix_cache_new(m, &pp, &pc));
    OK(ac_score_labels(cpu, prompt, labels, 3, lp[0]));
    OK(ac_score_labels(gpu, prompt, labels, 3, lp[1]));
    OK(ac_ctx_attach_prefix(gpu, pc));
    OK(ac_score_labels(gpu, prompt, labels, 3, lp[2]));
    ac_prefix_stats st;
    ac_prefix_get_stats(pc, &st);
    ac_ctx_attach_prefix(gpu, NULL);
    ac_prefix_cache_free(pc);
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        printf("  %s label '%s': log P CPU %.4f, GPU %.4f, GPU with the prefix cache %.4f\n", name, labels[i], lp[0][i],
               lp[1][i], lp[2][i]);
        ok &= fabs(lp[2][i] - lp[1][i]) <= 0.02 * fabs(lp[1][i]) + 0.02 && fabs(lp[1][i] - lp[0][i]) <= 0.05 * fabs(lp[0][i]) + 0.05;
    }
    CHECK(ok && st.hits == 3, "%s label scoring on cuda with the prefix cache (%lld hits, want 3)", name,
          (long long)st.hits);
    ac_ctx_free(gpu);
    free(hid), free(lg), free(lh), free(rows);
}

/* ---- the device prefix cache (cuda_prefix_cache.cu) ----------------------------------------------
 * One call as the context makes it: every sequence whose P rows are resident (find) flagged pfx_res,
 * its host rows left NaN (read, they would show); the others given from the donor's sequence 0. */
static int pres_call(ac_cuda_model *g, const ac_model *m, const ac_seq *seqs, int n, const int *give,
                     const pfx_bufs *donor, ac_outputs *o, pfx_bufs *pb, unsigned char *res, int keep) {
    pfx_alloc(pb, m, seqs, n);
    for (int s = 0; s < n; s++) {
        res[s] = give[s] > 0 && ac_cuda_prefix_cache_find(g, seqs[s].tokens, give[s]);
        if (res[s]) pb->P[s] = give[s];
        else pfx_give(pb, s, give[s], donor, 0);
    }
    ac_cuda_opts opts;
    pfx_opts(pb, &opts);
    opts.pfx_res = res, opts.pfx_keep = keep;
    return ac_cuda_forward(g, seqs, n, o, &opts);
}

static int same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

/* rows [P, L) of every sequence, bitwise */
static int same_rows(const pfx_bufs *a, const pfx_bufs *b) {
    int ok = 1;
    for (int s = 0; s < a->n; s++) {
        const int P = a->P[s], L = a->ld[s];
        for (int l = 0; l < 2 * a->NL; l++)
            ok &= same_bits(a->kv[s] + ((size_t)l * L + P) * a->KVD, b->kv[s] + ((size_t)l * L + P) * a->KVD,
                            (size_t)(L - P) * a->KVD);
        ok &= same_bits(a->hid[s] + (size_t)P * a->D, b->hid[s] + (size_t)P * a->D, (size_t)(L - P) * a->D);
    }
    return ok;
}

/* At the backend's level, in one precision: given prefixes made resident (pfx_keep), then the same batch
 * again with every prefix resident: nothing uploaded, outputs and rows written back bitwise the same,
 * the host rows never read; a sequence flagged resident that is not refused; a budget of about one
 * block, two batches in turn: blocks evicted, every call bitwise as its first. */
static void check_prefix_resident(const char *name, ac_model *m, ac_cuda_model *g, int f32) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab, NL = m->hp.n_layer, KVD = m->hp.n_head_kv * m->hp.head_dim;
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256, Lh = maxL / 2;
    const char *pr = f32 ? "f32" : "bf16";
    /* P: Lh (sequence 0's own head), 0, Lh/2 of it, Lh again (the same block in one call), 0, 37 */
    const int lens[PF_NSEQ] = {Lh + maxL / 4, 33, Lh / 2 + 15, Lh + 1, 1, maxL};
    const int give[PF_NSEQ] = {Lh, 0, Lh / 2, Lh, 0, 37 < Lh ? 37 : Lh / 3};
    int T;
    ac_seq seqs[PF_NSEQ];
    int32_t *tok = rand_batch(V, lens, PF_NSEQ, give, seqs, &T);
    float *h[3], *pm[3], *lg[3];
    for (int k = 0; k < 3; k++)
        h[k] = malloc((size_t)T * D * 4), pm[k] = malloc((size_t)PF_NSEQ * D * 4), lg[k] = malloc((size_t)PF_NSEQ * V * 4);
    ac_outputs o = {0};
    o.pooling = AC_POOL_MEAN, o.normalize = 1; /* the mean reads the given rows' hidden states */
    pfx_bufs donor, pa, pb;
    pfx_alloc(&donor, m, seqs, PF_NSEQ);
    ac_cuda_opts opts;
    pfx_opts(&donor, &opts);
    o.hidden = h[0], o.pooled = pm[0], o.logits = lg[0];
    OK(ac_cuda_forward(g, seqs, PF_NSEQ, &o, &opts)); /* the donor: every row written back */
    OK(ac_cuda_set_prefix_cache(g, (size_t)256 << 20));
    ac_cuda_prefix_stats s0, s1, s2;
    ac_cuda_prefix_cache_stats(g, &s0);
    unsigned char res[PF_NSEQ];
    o.hidden = h[1], o.pooled = pm[1], o.logits = lg[1];
    OK(pres_call(g, m, seqs, PF_NSEQ, give, &donor, &o, &pa, res, 1)); /* cold: uploaded, made resident */
    ac_cuda_prefix_cache_stats(g, &s1);
    int nres = 0;
    for (int s = 0; s < PF_NSEQ; s++) nres += res[s];
    o.hidden = h[2], o.pooled = pm[2], o.logits = lg[2];
    OK(pres_call(g, m, seqs, PF_NSEQ, give, &donor, &o, &pb, res, 1)); /* warm: every prefix resident */
    ac_cuda_prefix_cache_stats(g, &s2);
    int all_res = 1;
    for (int s = 0; s < PF_NSEQ; s++) all_res &= res[s] == (give[s] > 0);
    const int bits = same_bits(h[2], h[1], (size_t)T * D) && same_bits(pm[2], pm[1], (size_t)PF_NSEQ * D) &&
                     same_bits(lg[2], lg[1], (size_t)PF_NSEQ * V) && same_rows(&pa, &pb);
    const double eh = rel_err(h[1], h[0], (size_t)T * D), el = rel_err(lg[1], lg[0], (size_t)PF_NSEQ * V);
    printf("  %s %s device prefix cache: cold %zu bytes up, %d from blocks, %llu blocks made (%llu B); warm %zu bytes "
           "up, %d from blocks, %llu hits; warm == cold bitwise: %s; cold vs the donor hidden %.2e logits %.2e\n",
           name, pr, s1.last_bytes_uploaded, s1.last_resident_hits, (unsigned long long)(s1.lru.inserts - s0.lru.inserts),
           (unsigned long long)(s1.lru.bytes_inserted - s0.lru.bytes_inserted), s2.last_bytes_uploaded,
           s2.last_resident_hits, (unsigned long long)(s2.lru.hits - s1.lru.hits), bits ? "yes" : "NO", eh, el);
    const double tol = f32 ? 1e-5 : 2e-2;
    CHECK(nres == 0 && s1.last_bytes_uploaded > 0 && s1.lru.inserts - s0.lru.inserts == 3 && s1.last_resident_hits == 1,
          "%s %s device prefix cache, cold: 3 blocks made (P = Lh, Lh/2, 37), the repeated one served from its block",
          name, pr);
    CHECK(all_finite(h[1], (size_t)T * D) && eh < tol && el < tol, "%s %s device prefix cache, cold: outputs", name, pr);
    CHECK(all_res && s2.last_bytes_uploaded == 0 && s2.last_resident_hits == 4 && s2.lru.hits - s1.lru.hits == 4,
          "%s %s device prefix cache, warm: every prefix resident, 0 bytes uploaded", name, pr);
    CHECK(bits, "%s %s device prefix cache, warm: outputs and rows written back bitwise as cold", name, pr);
    pfx_free(&pa), pfx_free(&pb);
    /* flagged resident without being so: refused, nothing else touched */
    {
        pfx_alloc(&pb, m, seqs, PF_NSEQ);
        pfx_opts(&pb, &opts);
        unsigned char r2[PF_NSEQ] = {0};
        pb.P[2] = give[2] + 1, r2[2] = 1; /* (P = Lh/2 + 1: never made) */
        opts.pfx_res = r2;
        CHECK(ac_cuda_forward(g, seqs, PF_NSEQ, &o, &opts) == AC_ERR_ARG && strstr(ac_last_error(), "not resident"),
              "%s %s device prefix cache: a prefix flagged resident that is not refused: %s", name, pr, ac_last_error());
        pfx_free(&pb);
    }
    /* about one block of P = Lh: batches X (P = Lh) and Y (P = Lh/2) in turn evict each other */
    const size_t es = f32 ? 4 : 2, blk = (((size_t)NL * 2 * Lh * KVD * es + 255) & ~(size_t)255) + (size_t)Lh * D * 4;
    OK(ac_cuda_set_prefix_cache(g, blk + blk / 5));
    ac_cuda_prefix_cache_stats(g, &s1);
    float *hx[2], *hy[2];
    int ev_ok = 1, within = 1;
    for (int it = 0; it < 3; it++) {
        for (int b = 0; b < 2; b++) {
            const int s = b ? 2 : 0;
            float *hh = malloc((size_t)lens[s] * D * 4);
            ac_outputs ox = {0};
            ox.hidden = hh;
            unsigned char r1;
            OK(pres_call(g, m, &seqs[s], 1, &give[s], &donor, &ox, &pb, &r1, 1));
            pfx_free(&pb);
            ac_cuda_prefix_cache_stats(g, &s2);
            within &= s2.lru.resident <= blk + blk / 5;
            float **keep = b ? hy : hx;
            if (!it) keep[0] = hh;
            else {
                ev_ok &= same_bits(hh, keep[0], (size_t)lens[s] * D);
                free(hh);
            }
        }
    }
    ac_cuda_prefix_cache_stats(g, &s2);
    printf("  %s %s device prefix cache, budget of ~1 block: %llu evictions, %llu refused, resident %zu of %zu\n", name,
           pr, (unsigned long long)(s2.lru.evictions - s1.lru.evictions),
           (unsigned long long)(s2.lru.refused - s1.lru.refused), s2.lru.resident, s2.lru.budget);
    CHECK(s2.lru.evictions - s1.lru.evictions >= 4 && within && ev_ok,
          "%s %s device prefix cache under a budget of one block: evicts, stays within it, outputs bitwise unchanged",
          name, pr);
    free(hx[0]), free(hy[0]);
    OK(ac_cuda_set_prefix_cache(g, 0)); /* off: nothing resident, the backend as before */
    ac_cuda_prefix_cache_stats(g, &s2);
    CHECK(s2.lru.resident == 0 && s2.lru.entries == 0 && !ac_cuda_prefix_cache_find(g, seqs[0].tokens, give[0]),
          "%s %s device prefix cache off: nothing resident", name, pr);
    pfx_free(&donor);
    for (int k = 0; k < 3; k++) free(h[k]), free(pm[k]), free(lg[k]);
    free(tok);
}

/* Through the public API (ac_prefix_cache on a cuda context, bf16): a batch stored, repeated twice (the
 * first repeat's prefixes come from the tree and are made resident, the second's from the device: 0
 * bytes uploaded, outputs bitwise as the first repeat; two sequences of the same length, different
 * tokens, each its own block); a mixed batch (a device hit, a host hit, a miss, one token); a device hit
 * whose new rows go into the tree (rows below the hit never copied) and a later host hit over them. */
static void check_prefix_device_api(const char *name, ac_model *m) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab;
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256, Lh = maxL / 2;
    ac_ctx_params gp = ac_ctx_default_params();
    gp.backend = "cuda";
    ac_ctx *gpu, *ref;
    OK(ac_ctx_new(m, &gp, &gpu));
    OK(ac_ctx_new(m, &gp, &ref)); /* no prefix cache */
    OK(ac_cuda_set_prefix_cache(gpu->be, (size_t)256 << 20));
    enum { NB = 5, NM = 4 };
    int32_t a[NB][256], mx[NM][256];
    const int la[NB] = {Lh + 20, Lh + 20, 30, Lh / 2 + 5, 1};
    for (int s = 0; s < NB; s++)
        for (int i = 0; i < la[s]; i++) a[s][i] = 3 + rnd_int(V - 3);
    a[1][0] = 3 + (a[0][0] - 3 + 1) % (V - 3); /* same length as 0, apart from its first token */
    ac_seq sa[NB];
    int T = 0;
    for (int s = 0; s < NB; s++) sa[s] = (ac_seq){a[s], la[s]}, T += la[s];
    float *h[3], *lg[3];
    for (int k = 0; k < 3; k++) h[k] = malloc((size_t)(T + 4 * maxL) * D * 4), lg[k] = malloc((size_t)NB * V * 4);
    ac_outputs o = {0};
    ac_prefix_params pp = ac_prefix_default_params();
    pp.min_match = 4;
    ac_prefix_cache *pc;
    OK(ac_prefix_cache_new(m, &pp, &pc));
    OK(ac_ctx_attach_prefix(gpu, pc));
    o.hidden = h[0], o.logits = lg[0];
    OK(ac_forward(ref, sa, NB, &o));
    OK(ac_forward(gpu, sa, NB, &o)); /* stores them */
    ac_cuda_prefix_stats d1, d2;
    ac_prefix_stats t1, t2;
    o.hidden = h[1], o.logits = lg[1];
    OK(ac_forward(gpu, sa, NB, &o)); /* P = L - 1 from the tree; made resident */
    ac_cuda_prefix_cache_stats(gpu->be, &d1);
    ac_prefix_get_stats(pc, &t1);
    o.hidden = h[2], o.logits = lg[2];
    OK(ac_forward(gpu, sa, NB, &o)); /* from the device */
    ac_cuda_prefix_cache_stats(gpu->be, &d2);
    ac_prefix_get_stats(pc, &t2);
    ac_seq_plan plan[NB];
    OK(ac_ctx_last_plan(gpu, NB, plan));
    int plan_ok = 1;
    for (int s = 0; s < NB; s++) plan_ok &= plan[s].prefix_rows == (la[s] > 1 ? la[s] - 1 : 0);
    const int bits = same_bits(h[2], h[1], (size_t)T * D) && same_bits(lg[2], lg[1], (size_t)NB * V);
    const double eh = rel_err(h[2], h[0], (size_t)T * D), el = rel_err(lg[2], lg[0], (size_t)NB * V);
    printf("  %s device prefix cache via the API: repeat 1 %zu bytes up, %d from blocks; repeat 2 %zu bytes up, %d "
           "from blocks (tree hits +%lld); bitwise equal: %s; vs no cache hidden %.2e logits %.2e\n",
           name, d1.last_bytes_uploaded, d1.last_resident_hits, d2.last_bytes_uploaded, d2.last_resident_hits,
           (long long)(t2.hits - t1.hits), bits ? "yes" : "NO", eh, el);
    CHECK(d1.last_bytes_uploaded > 0 && d1.last_resident_hits == 0 && d2.last_bytes_uploaded == 0 &&
              d2.last_resident_hits == NB - 1 && t2.hits - t1.hits == NB - 1 && plan_ok,
          "%s device prefix cache via the API: the second repeat uploads nothing, hits counted by the tree", name);
    CHECK(bits && eh < 2e-2 && el < 2e-2, "%s device prefix cache via the API: outputs bitwise as the first repeat, "
                                          "near the GPU without the cache (same-length prefixes kept apart)", name);
    /* mixed: a device hit (a[0] again), a host hit (a[0]'s first Lh tokens, a new tail), a miss, one token */
    const int lm[NM] = {la[0], Lh + 15, 25, 1};
    memcpy(mx[0], a[0], (size_t)la[0] * 4);
    for (int i = 0; i < lm[1]; i++) mx[1][i] = i < Lh ? a[0][i] : 3 + rnd_int(V - 3);
    if (mx[1][Lh] == a[0][Lh]) mx[1][Lh] = 3 + (mx[1][Lh] - 3 + 1) % (V - 3);
    for (int i = 0; i < lm[2]; i++) mx[2][i] = 3 + rnd_int(V - 3);
    mx[2][0] = 3 + (a[0][0] - 3 + 2) % (V - 3);
    if (mx[2][0] == a[1][0] || mx[2][0] == a[2][0] || mx[2][0] == a[3][0]) mx[2][0] = 3 + (mx[2][0] - 3 + 5) % (V - 3);
    mx[3][0] = 7;
    ac_seq sm[NM];
    int Tm = 0;
    for (int s = 0; s < NM; s++) sm[s] = (ac_seq){mx[s], lm[s]}, Tm += lm[s];
    o.hidden = h[0], o.logits = lg[0];
    OK(ac_forward(ref, sm, NM, &o));
    o.hidden = h[1], o.logits = lg[1];
    ac_cuda_prefix_cache_stats(gpu->be, &d1);
    OK(ac_forward(gpu, sm, NM, &o));
    ac_cuda_prefix_cache_stats(gpu->be, &d2);
    OK(ac_ctx_last_plan(gpu, NM, plan));
    const int wantm[NM] = {la[0] - 1, Lh, 0, 0};
    plan_ok = 1;
    for (int s = 0; s < NM; s++) plan_ok &= plan[s].prefix_rows == wantm[s];
    double ehm = rel_err(h[1], h[0], (size_t)Tm * D), elm = rel_err(lg[1], lg[0], (size_t)NM * V);
    printf("  %s device prefix cache, mixed batch (P %d %d %d %d): %d from blocks, %llu made; vs no cache hidden %.2e "
           "logits %.2e\n", name, plan[0].prefix_rows, plan[1].prefix_rows, plan[2].prefix_rows, plan[3].prefix_rows,
           d2.last_resident_hits, (unsigned long long)(d2.lru.inserts - d1.lru.inserts), ehm, elm);
    CHECK(plan_ok && d2.last_resident_hits == 1 && d2.lru.inserts - d1.lru.inserts == 1 && ehm < 2e-2 && elm < 2e-2,
          "%s device prefix cache, mixed batch: device hit, host hit, miss, one token", name);
    /* a device hit (a[0]'s first Lh tokens are resident now) with a new tail: the tail goes into the tree;
       then that sequence continued: a host hit over the tail's rows */
    int32_t c[256];
    const int lc = Lh + 30 < maxL ? Lh + 30 : maxL - 10, lc2 = lc + 8;
    for (int i = 0; i < lc2; i++) c[i] = i < Lh ? a[0][i] : 3 + rnd_int(V - 3);
    if (c[Lh] == a[0][Lh] || c[Lh] == mx[1][Lh]) c[Lh] = 3 + (c[Lh] - 3 + 7) % (V - 3);
    ac_seq sc = {c, lc}, sc2 = {c, lc2};
    OK(ac_forward(gpu, &sc, 1, &o));
    ac_cuda_prefix_cache_stats(gpu->be, &d1);
    OK(ac_ctx_last_plan(gpu, 1, plan));
    const int p1 = plan[0].prefix_rows;
    o.hidden = h[0], o.logits = lg[0];
    OK(ac_forward(ref, &sc2, 1, &o));
    o.hidden = h[1], o.logits = lg[1];
    OK(ac_forward(gpu, &sc2, 1, &o));
    ac_cuda_prefix_cache_stats(gpu->be, &d2);
    OK(ac_ctx_last_plan(gpu, 1, plan));
    ehm = rel_err(h[1], h[0], (size_t)lc2 * D), elm = rel_err(lg[1], lg[0], (size_t)V);
    printf("  %s device prefix cache, a device hit's tail stored: P %d (from a block: %d), then P %d from the tree: vs no "
           "cache hidden %.2e logits %.2e\n", name, p1, d1.last_resident_hits, plan[0].prefix_rows, ehm, elm);
    CHECK(p1 == Lh && d1.last_resident_hits == 1 && plan[0].prefix_rows == lc && d2.last_resident_hits == 0 &&
              ehm < 2e-2 && elm < 2e-2,
          "%s device prefix cache: a device hit's new rows stored in the tree, reused right", name);
    ac_ctx_attach_prefix(gpu, NULL);
    ac_prefix_cache_free(pc);
    ac_ctx_free(gpu), ac_ctx_free(ref);
    for (int k = 0; k < 3; k++) free(h[k]), free(lg[k]);
}

/* ---- partly served sites (session 14): ac_cuda_site_maps.rows ----------------------------------
 * A served site may take rows [0, R) from its maps only (the CPU's rows 'prefix', exact tails,
 * exact_from): rows [R, L) then run the exact attention over every key. One batch mixes whole sites
 * (R = L), partial ones (R = L/2, L - 1, 1, L/3 + 1) and computed ones; the CPU engine's cached
 * forward with a hook whose reuse returns the same R is the reference (bf16 3e-2, f32 1e-4). With
 * top-8 rows the served rows differ from exact ones, so a GPU that served the partial sites whole
 * (ignoring R) or computed them (ignoring the maps) fails: the CPU's forward with the partial rows
 * is checked to differ from both by more than twice the GPU's error. Exact f32 maps with every site
 * partial == the exact GPU forward. Then given prefix rows (the prefix K/V cache) with sites served
 * past them (rows [P, R) from the maps, the rest exact): vs the CPU with both hooks. Refusals: partial
 * rows on a bidirectional model, and under given rows a whole site, R <= P, the layer-0 summary. */
enum { PT_NSEQ = 5 };
typedef struct pt_state {
    ac_map_codec c;
    int H, mode; /* 0: the mix; 1: the mix's served sites whole; 2: every site R = (L+1)/2;
                    3: past given rows P (pt_rows); 4: 3 with sequence 0 whole; 5: 3 with sequence 0 at R = P */
    int lens[PT_NSEQ], P[PT_NSEQ];
    float *Pm[64][PT_NSEQ];          /* exact maps [H][L][L] recorded by the CPU */
    unsigned char *enc[64][PT_NSEQ]; /* H encoded maps, host (pageable) */
    void *dev[64][PT_NSEQ];          /* the same in device or pinned memory (where != NULL) */
    int pinned;                      /* dev[] is pinned host memory */
    int run;                         /* ac_cuda_opts.partial_run (-1: one sequence at a time; 1: runs) */
    int heads;                       /* per-head serving: a served site serves heads h with h + layer + seq even */
    uint8_t hm[64];                  /* the mask lent to the backend (pt_serve_site) */
    int bad_ask;                     /* serve_site asked with a length that is not the sequence's */
} pt_state;

/* rows served of (layer, seq): 0 computed, L whole, else partial */
static int pt_rows(const pt_state *st, int layer, int seq) {
    const int L = st->lens[seq], P = st->P[seq];
    int r = 0;
    switch (st->mode) {
    case 2: r = (L + 1) / 2; break;
    case 3:
    case 4:
    case 5:
        if (seq == 0) r = st->mode == 4 ? L : st->mode == 5 ? P : P + (L - P) / 2;
        else if (seq == 1) r = layer % 2 ? L / 2 : L - 1;
        else if (seq == 2) r = L - 1 > P ? L - 1 : 0;
        else if (seq == 4) r = layer == 0 ? 0 : P + 1 < L ? P + 1 : 0;
        break;
    case 7: /* bidirectional: whole sites or none */
        r = seq == 3 || (seq == 1 && layer % 2 == 0) ? 0 : L;
        break;
    default:
        if (seq == 0) r = L / 2;
        else if (seq == 1) r = layer % 2 ? L : 0;
        else if (seq == 2) r = layer ? L - 1 : 0;
        else if (seq == 4) r = layer % 2 ? L / 3 + 1 : 1;
        if (st->mode == 1 && r > 0) r = L;
    }
    return r < 0 ? 0 : r > L ? L : r;
}

static int pt_record(void *user, const ac_attn_site *site, const float *P) {
    pt_state *st = user;
    return (st->Pm[site->layer][site->seq] = copy_site_maps(site, P)) ? AC_OK : AC_ERR_NOMEM;
}
static int pt_reuse(void *user, const ac_attn_site *site) { return pt_rows(user, site->layer, site->seq); }
static int pt_mask(const pt_state *st, int layer, int seq, uint8_t *mask) {
    int n = 0;
    for (int h = 0; h < st->H; h++) n += mask[h] = (uint8_t)((h + layer + seq) % 2 == 0);
    return n;
}
static int pt_serve_heads(void *user, const ac_attn_site *site, uint8_t *mask) {
    return pt_mask(user, site->layer, site->seq, mask);
}
/* rows [0, n_rows) of every head = the stored maps' rows times V (V of every row given) */
static int pt_apply(void *user, const ac_attn_site *site, int n_rows, const float *v, int ldv, int n_head_kv,
                    int head_dim, float *out, int ldo) {
    pt_state *st = user;
    const int L = site->n_tokens, grp = site->n_head / n_head_kv;
    const size_t mb = ac_codec_map_bytes(&st->c, L);
    float *tmp = malloc((size_t)L * head_dim * 4);
    if (!tmp) return AC_ERR_NOMEM;
    for (int h = 0; h < site->n_head; h++) {
        if (site->heads && !site->heads[h]) continue; /* a head the forward computes */
        ac_codec_av(&st->c, st->enc[site->layer][site->seq] + h * mb, L, v + (h / grp) * head_dim, ldv, head_dim, tmp,
                    head_dim);
        for (int t = 0; t < n_rows; t++)
            memcpy(out + (size_t)t * ldo + (size_t)h * head_dim, tmp + (size_t)t * head_dim, (size_t)head_dim * 4);
    }
    free(tmp);
    return AC_OK;
}
static int pt_serve_site(void *user, int layer, int seq, int L, ac_cuda_site_maps *out) {
    pt_state *st = user;
    if (L != st->lens[seq]) {
        st->bad_ask = 1;
        return 0;
    }
    const int r = pt_rows(st, layer, seq);
    if (!r) return 0;
    void *d = st->dev[layer][seq];
    out->maps = d ? d : st->enc[layer][seq];
    out->head_bytes = ac_codec_map_bytes(&st->c, L);
    out->kind = st->c.kind, out->causal = st->c.causal, out->topk = st->c.topk;
    out->pageable = !d;
    out->rows = r;
    if (st->heads) pt_mask(st, layer, seq, st->hm), out->heads = st->hm;
    return 1;
}
static int pt_sites(const pt_state *st, int NL) {
    int n = 0;
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) n += pt_rows(st, l, s) > 0;
    return n;
}
/* GPU forward with st's sites served; pfx: given prefix rows (NULL: none). Returns the status. */
static int pt_forward(ac_cuda_model *g, pt_state *st, const ac_seq *seqs, float *hidden, float *pooled, pfx_bufs *pfx,
                      int summary) {
    ac_outputs o = {0};
    o.hidden = hidden, o.pooled = pooled, o.pooling = AC_POOL_LAST;
    ac_cuda_opts opts = {0};
    if (pfx) pfx_opts(pfx, &opts);
    opts.serve_site = pt_serve_site, opts.user = st, opts.summary = summary, opts.partial_run = st->run;
    return ac_cuda_forward(g, seqs, PT_NSEQ, &o, &opts);
}
/* CPU forward with st's sites served (its reuse/apply hook); kv: a prefix hook (NULL: none) */
static void pt_cpu(ac_ctx *cpu, pt_state *st, const ac_seq *seqs, float *hidden, float *pooled, const ac_kv_hook *kv) {
    ac_attn_hook hook = {0};
    hook.user = st, hook.reuse = pt_reuse, hook.apply = pt_apply;
    if (st->heads) hook.serve_heads = pt_serve_heads;
    ac_ctx_set_attn_hook(cpu, &hook);
    if (kv) ac_ctx_set_kv_hook(cpu, kv);
    ac_outputs o = {0};
    o.hidden = hidden, o.pooled = pooled, o.pooling = AC_POOL_LAST;
    OK(ac_forward(cpu, seqs, PT_NSEQ, &o));
    ac_ctx_set_attn_hook(cpu, NULL);
    if (kv) ac_ctx_set_kv_hook(cpu, NULL);
}
/* the CPU's prefix hook giving rows [0, P[s]) of sequence s from src (sequences in call order) */
typedef struct pt_kv {
    const pfx_bufs *src;
    const int *P;
    int calls;
} pt_kv;
static int pt_kv_lookup(void *user, const int32_t *tokens, const ac_kv_rows *rows) {
    pt_kv *k = user;
    const pfx_bufs *b = k->src;
    const int s = k->calls++;
    (void)tokens;
    if (s >= b->n || rows->L != b->ld[s]) return 0;
    const int P = k->P[s];
    for (int l = 0; l < 2 * b->NL; l++)
        memcpy(rows->kv + (size_t)l * rows->ld * rows->kvd, b->kv[s] + (size_t)l * b->ld[s] * b->KVD,
               (size_t)P * b->KVD * 4);
    memcpy(rows->hid, b->hid[s], (size_t)P * b->D * 4);
    return P;
}
static void pt_kv_insert(void *user, const int32_t *tokens, const ac_kv_rows *rows, int P) {
    (void)user, (void)tokens, (void)rows, (void)P;
}
static void pt_free_dev(pt_state *st, int NL) {
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) {
            if (st->dev[l][s]) st->pinned ? cudaFreeHost(st->dev[l][s]) : cudaFree(st->dev[l][s]);
            st->dev[l][s] = NULL;
        }
    st->pinned = 0;
}
static void pt_free_enc(pt_state *st, int NL) {
    pt_free_dev(st, NL);
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) free(st->enc[l][s]), st->enc[l][s] = NULL;
}
/* copies of the encoded maps in device (pinned = 0) or pinned host memory */
static void pt_copy_maps(pt_state *st, int NL, int pinned) {
    st->pinned = pinned;
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) {
            const size_t b = ac_codec_map_bytes(&st->c, st->lens[s]) * st->H;
            if (pinned) {
                CHECK(cudaMallocHost(&st->dev[l][s], b) == cudaSuccess, "cudaMallocHost");
                memcpy(st->dev[l][s], st->enc[l][s], b);
            } else {
                CHECK(cudaMalloc(&st->dev[l][s], b) == cudaSuccess, "cudaMalloc");
                cudaMemcpy(st->dev[l][s], st->enc[l][s], b, cudaMemcpyHostToDevice);
            }
        }
}

/* Per-head serving on a bidirectional model: whole sites (mode 7) serving half their heads from top-8 maps,
 * the others computed: the CPU's per-head forward vs the GPU (bf16 3e-2, f32 1e-4), and the CPU's per-head
 * result apart from the one serving every head by more than the GPU's error. h, p: 7 buffers each. */
static void pt_bidir_heads(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf,
                           pt_state *st, const ac_seq *seqs, int T, float **h, float **p) {
    const int D = m->hp.n_embd, H = m->hp.n_head, NL = m->hp.n_layer;
    const size_t TD = (size_t)T * D, SD = (size_t)PT_NSEQ * D;
    cpu_record(cpu, seqs, PT_NSEQ, st, pt_record, h[0], p[0], AC_POOL_LAST);
    int have = 1;
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) have &= st->Pm[l][s] != NULL;
    CHECK(have, "%s per-head: CPU recorded every site", name);
    if (!have) return;
    OK(ac_codec_parse("topk8", &st->c));
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) st->enc[l][s] = encode_site(&st->c, st->Pm[l][s], st->lens[s], H);
    st->mode = 7;
    pt_cpu(cpu, st, seqs, h[1], p[1], NULL); /* every head of the served sites */
    st->heads = 1;
    pt_cpu(cpu, st, seqs, h[2], p[2], NULL);
    for (size_t i = 0; i < TD; i++) h[3][i] = h[4][i] = NAN;
    OK(pt_forward(gbf, st, seqs, h[3], p[3], NULL, 0));
    pt_copy_maps(st, NL, 0);
    OK(pt_forward(g32, st, seqs, h[4], p[4], NULL, 0));
    int sites = -1;
    ac_cuda_last_served(g32, &sites, NULL);
    st->heads = 0;
    const double ebf = rel_err(h[3], h[2], TD), e32 = rel_err(h[4], h[2], TD), eph = rel_err(p[3], p[2], SD);
    const double dall = rel_err(h[2], h[1], TD), dx = rel_err(h[2], h[0], TD);
    printf("  %s per-head serving, top-8, whole sites (%d served): GPU bf16 vs CPU hidden %.2e pooled %.2e | GPU f32 "
           "%.2e | CPU vs every head served %.2e, vs exact %.2e\n",
           name, sites, ebf, eph, e32, dall, dx);
    CHECK(sites == pt_sites(st, NL) && all_finite(h[3], TD) && ebf < 3e-2 && eph < 2e-2 && e32 < 1e-4,
          "%s per-head serving (bidirectional) vs the CPU", name);
    CHECK(dall > 2 * ebf && dx > 2 * ebf, "%s per-head serving (bidirectional): served and computed heads both matter",
          name);
    pt_free_enc(st, NL);
}

static void check_partial(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf) {
    const int D = m->hp.n_embd, H = m->hp.n_head, NL = m->hp.n_layer;
    if (NL > 64) return;
    pt_state st;
    memset(&st, 0, sizeof st);
    st.H = H;
    st.run = -1; /* one sequence at a time, unless a check says otherwise (the default, 0, picks runs here) */
    const int maxL = m->hp.n_ctx_train < 96 ? m->hp.n_ctx_train : 96;
    st.lens[0] = maxL, st.lens[1] = 5, st.lens[2] = 2 + rnd_int(maxL - 1), st.lens[3] = 1 + rnd_int(maxL);
    st.lens[4] = maxL / 2 + 3 < maxL ? maxL / 2 + 3 : maxL;
    int T;
    ac_seq seqs[PT_NSEQ];
    int32_t *tok = rand_batch(m->hp.n_vocab, st.lens, PT_NSEQ, NULL, seqs, &T);
    float *h[7], *p[7];
    for (int k = 0; k < 7; k++) h[k] = malloc((size_t)T * D * 4), p[k] = malloc((size_t)PT_NSEQ * D * 4);
    if (!m->hp.causal) { /* bidirectional: rows depend on every token, a site is served whole or not at all */
        OK(ac_codec_parse("f32", &st.c));
        st.mode = 2;
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < PT_NSEQ; s++) st.enc[l][s] = calloc(ac_codec_map_bytes(&st.c, st.lens[s]), H);
        const int rc = pt_forward(gbf, &st, seqs, h[0], p[0], NULL, 0);
        CHECK(rc == AC_ERR_ARG && strstr(ac_last_error(), "bidirectional"),
              "%s partial rows refused on a bidirectional model: %d %s", name, rc, ac_last_error());
        pt_free_enc(&st, NL);
        pt_bidir_heads(name, m, cpu, g32, gbf, &st, seqs, T, h, p);
        goto done;
    }
    cpu_record(cpu, seqs, PT_NSEQ, &st, pt_record, h[0], p[0], AC_POOL_LAST); /* the exact maps; h[0]: exact */
    int have = 1;
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) have &= st.Pm[l][s] != NULL;
    CHECK(have, "%s partial: CPU recorded every site", name);
    if (!have) goto done;
    /* the CPU's own K/V and hidden rows of the batch (prefix rows given to both engines below) */
    pfx_bufs cb;
    pfx_alloc(&cb, m, seqs, PT_NSEQ);
    {
        cpu_rows cr = {&cb, 0};
        ac_kv_hook kh = {&cr, cpu_rows_lookup, cpu_rows_insert, NULL, NULL};
        ac_ctx_set_kv_hook(cpu, &kh);
        ac_outputs o = {0};
        o.pooled = p[6], o.pooling = AC_POOL_LAST;
        OK(ac_forward(cpu, seqs, PT_NSEQ, &o));
        ac_ctx_set_kv_hook(cpu, NULL);
    }
    const char *specs[3] = {"topk8-causal", "q8-causal", "f32"};
    for (int ci = 0; ci < 3; ci++) {
        OK(ac_codec_parse(specs[ci], &st.c));
        for (int l = 0; l < NL; l++)
            for (int s = 0; s < PT_NSEQ; s++) st.enc[l][s] = encode_site(&st.c, st.Pm[l][s], st.lens[s], H);
        const size_t TD = (size_t)T * D, SD = (size_t)PT_NSEQ * D;
        if (ci < 2) {
            /* 1. the mix: CPU cached (h[1]), the same sites served whole on the CPU (h[4]); GPU bf16 with
               pageable maps (h[2]), GPU f32 with device maps (h[3]) */
            st.mode = 1;
            pt_cpu(cpu, &st, seqs, h[4], p[4], NULL);
            st.mode = 0;
            pt_cpu(cpu, &st, seqs, h[1], p[1], NULL);
            for (size_t i = 0; i < TD; i++) h[2][i] = h[3][i] = NAN;
            OK(pt_forward(gbf, &st, seqs, h[2], p[2], NULL, 0));
            int sites = -1;
            ac_cuda_last_served(gbf, &sites, NULL);
            pt_copy_maps(&st, NL, 0);
            OK(pt_forward(g32, &st, seqs, h[3], p[3], NULL, 0));
            const int want = pt_sites(&st, NL);
            const double ebf = rel_err(h[2], h[1], TD), pbf = rel_err(p[2], p[1], SD), e32 = rel_err(h[3], h[1], TD);
            const double dw = rel_err(h[1], h[4], TD), dx = rel_err(h[1], h[0], TD);
            printf("  %s partly served %s (%d of %d sites served, partial/whole/computed mixed): GPU bf16 vs CPU cached "
                   "hidden %.2e pooled %.2e | GPU f32 %.2e | CPU: partial vs whole %.2e, vs exact %.2e\n",
                   name, specs[ci], sites, NL * PT_NSEQ, ebf, pbf, e32, dw, dx);
            CHECK(sites == want && !st.bad_ask, "%s partly served %s: %d sites served, want %d", name, specs[ci], sites,
                  want);
            CHECK(all_finite(h[2], TD) && ebf < 3e-2 && pbf < 2e-2 && e32 < 1e-4, "%s partly served %s vs CPU cached",
                  name, specs[ci]);
            if (ci == 0) /* top-8 rows: the check above tells partial rows from whole sites and from exact ones */
                CHECK(dw > 1e-3 && dx > 1e-3 && dw > 2 * ebf && dx > 2 * ebf && dw > 100 * e32 && dx > 100 * e32,
                      "%s partly served top-8: partial differs from whole (%.2e) and exact (%.2e) beyond the GPU's error",
                      name, dw, dx);
            /* the same with partial_run (partly served sequences as runs: the attention of every row, then A.V
               over the served rows): bf16 h[5], f32 h[6] */
            st.run = 1;
            for (size_t i = 0; i < TD; i++) h[5][i] = h[6][i] = NAN;
            OK(pt_forward(g32, &st, seqs, h[6], p[6], NULL, 0)); /* (device maps) */
            pt_free_dev(&st, NL);
            OK(pt_forward(gbf, &st, seqs, h[5], p[5], NULL, 0)); /* (pageable maps) */
            pt_copy_maps(&st, NL, 0);
            st.run = -1;
            const double rbf = rel_err(h[5], h[1], TD), r32 = rel_err(h[6], h[1], TD), rp = rel_err(p[5], p[1], SD);
            printf("  %s partly served %s as runs (partial_run): GPU bf16 vs CPU cached hidden %.2e pooled %.2e | GPU "
                   "f32 %.2e\n",
                   name, specs[ci], rbf, rp, r32);
            CHECK(all_finite(h[5], TD) && rbf < 3e-2 && rp < 2e-2 && r32 < 1e-4, "%s partly served %s as runs vs CPU",
                  name, specs[ci]);
            /* per-head serving: the mix's served sites (whole and partial) serve heads h with h + layer + seq even,
               the others computed: CPU (h[4]) vs GPU f32 (device maps, h[6]) and bf16 (pageable maps, h[5]) */
            st.heads = 1;
            pt_cpu(cpu, &st, seqs, h[4], p[4], NULL);
            for (size_t i = 0; i < TD; i++) h[5][i] = h[6][i] = NAN;
            OK(pt_forward(g32, &st, seqs, h[6], p[6], NULL, 0));
            int hsites = -1;
            ac_cuda_last_served(g32, &hsites, NULL);
            pt_free_dev(&st, NL);
            OK(pt_forward(gbf, &st, seqs, h[5], p[5], NULL, 0));
            pt_copy_maps(&st, NL, 0);
            st.heads = 0;
            const double hbf = rel_err(h[5], h[4], TD), h32 = rel_err(h[6], h[4], TD), hph = rel_err(p[5], p[4], SD);
            const double hdiff = rel_err(h[4], h[1], TD);
            printf("  %s per-head serving %s (half the heads of each served site): GPU bf16 vs CPU hidden %.2e pooled "
                   "%.2e | GPU f32 %.2e | CPU vs every head served %.2e\n",
                   name, specs[ci], hbf, hph, h32, hdiff);
            CHECK(hsites == want && all_finite(h[5], TD) && hbf < 3e-2 && hph < 2e-2 && h32 < 1e-4,
                  "%s per-head serving %s vs the CPU (%d sites)", name, specs[ci], hsites);
            if (ci == 0)
                CHECK(hdiff > 1.5 * hbf && hdiff > 100 * h32, "%s per-head top-8: the computed heads matter (%.2e)", name,
                      hdiff);
            /* 2. given prefix rows (the CPU's own rows [0, P)) and sites served past them: CPU with both hooks (h[1])
               vs GPU f32 (device maps, h[3]) and bf16 (pageable maps, h[2]) */
            st.P[0] = st.lens[0] / 3, st.P[1] = 0, st.P[2] = st.lens[2] / 2;
            st.P[3] = st.lens[3] > 4 ? 4 : st.lens[3] - 1, st.P[4] = st.lens[4] / 4;
            st.mode = 3;
            pt_kv kv = {&cb, st.P, 0};
            ac_kv_hook kh = {&kv, pt_kv_lookup, pt_kv_insert, NULL, NULL};
            pt_cpu(cpu, &st, seqs, h[1], p[1], &kh);
            ac_seq_plan cplan[PT_NSEQ];
            OK(ac_ctx_last_plan(cpu, PT_NSEQ, cplan));
            pfx_bufs pb;
            pfx_alloc(&pb, m, seqs, PT_NSEQ);
            for (int s = 0; s < PT_NSEQ; s++) pfx_give(&pb, s, st.P[s], &cb, s);
            for (size_t i = 0; i < TD; i++) h[2][i] = h[3][i] = NAN;
            OK(pt_forward(g32, &st, seqs, h[3], p[3], &pb, 0));
            int sites32 = -1;
            ac_cuda_last_served(g32, &sites32, NULL);
            st.run = 1; /* sequence 1 (no given rows) as a run of its own; the others one at a time as before */
            for (int s = 0; s < PT_NSEQ; s++) pfx_give(&pb, s, st.P[s], &cb, s);
            OK(pt_forward(g32, &st, seqs, h[6], p[6], &pb, 0));
            st.run = -1;
            pt_free_dev(&st, NL); /* bf16: the pageable host maps */
            for (int s = 0; s < PT_NSEQ; s++) pfx_give(&pb, s, st.P[s], &cb, s);
            OK(pt_forward(gbf, &st, seqs, h[2], p[2], &pb, 0));
            int plan_ok = 1;
            for (int s = 0; s < PT_NSEQ; s++) {
                int mr = 0;
                for (int l = 0; l < NL; l++) {
                    const int r = pt_rows(&st, l, s) - st.P[s];
                    mr = r > mr ? r : mr;
                }
                plan_ok &= cplan[s].prefix_rows == st.P[s] && cplan[s].map_rows == mr;
            }
            const double qbf = rel_err(h[2], h[1], TD), q32 = rel_err(h[3], h[1], TD), qx = rel_err(h[1], h[0], TD);
            const double qp = rel_err(p[2], p[1], SD), qr32 = rel_err(h[6], h[1], TD);
            printf("  %s given prefix rows + partly served %s (P = %d %d %d %d %d; %d sites): GPU bf16 vs CPU hidden %.2e "
                   "pooled %.2e | GPU f32 %.2e (as runs %.2e) | CPU vs exact %.2e\n",
                   name, specs[ci], st.P[0], st.P[1], st.P[2], st.P[3], st.P[4], sites32, qbf, qp, q32, qr32, qx);
            CHECK(qr32 < 1e-4 && all_finite(h[6], TD), "%s prefix + partial %s, partial_run, vs the CPU", name,
                  specs[ci]);
            CHECK(plan_ok && sites32 == pt_sites(&st, NL), "%s prefix + partial %s: the CPU's plan and the GPU's sites",
                  name, specs[ci]);
            CHECK(all_finite(h[2], TD) && qbf < 3e-2 && qp < 2e-2 && q32 < 1e-4, "%s prefix + partial %s vs the CPU",
                  name, specs[ci]);
            if (ci == 0)
                CHECK(qx > 2 * qbf && qx > 100 * q32, "%s prefix + partial top-8: served rows used (%.2e from exact)",
                      name, qx);
            /* refusals under given rows: the layer-0 summary, a whole site, a site serving no row past P */
            for (int s = 0; s < PT_NSEQ; s++) pfx_give(&pb, s, st.P[s], &cb, s);
            int rc = pt_forward(gbf, &st, seqs, h[2], p[2], &pb, AC_ATTN_SUMMARY_SEGMENTS);
            CHECK(rc == AC_ERR_ARG && strstr(ac_last_error(), "summary"), "%s given rows + summary refused: %s", name,
                  ac_last_error());
            st.mode = 4;
            rc = pt_forward(gbf, &st, seqs, h[2], p[2], &pb, 0);
            CHECK(rc == AC_ERR_ARG && strstr(ac_last_error(), "whole site"), "%s given rows + a whole site refused: %s",
                  name, ac_last_error());
            st.mode = 5;
            rc = pt_forward(gbf, &st, seqs, h[2], p[2], &pb, 0);
            CHECK(rc == AC_ERR_ARG && strstr(ac_last_error(), "not past"), "%s given rows + R = P refused: %s", name,
                  ac_last_error());
            st.mode = 3; /* the model still runs after the refusals, as before them */
            for (int s = 0; s < PT_NSEQ; s++) pfx_give(&pb, s, st.P[s], &cb, s);
            OK(pt_forward(gbf, &st, seqs, h[5], p[5], &pb, 0));
            CHECK(!memcmp(h[5], h[2], TD * 4) || rel_err(h[5], h[1], TD) < 3e-2, "%s after the refusals", name);
            pfx_free(&pb);
            memset(st.P, 0, sizeof st.P);
        } else {
            /* 3. exact f32 maps (pinned), every site partial: the exact GPU forward, both precisions */
            st.mode = 2;
            pt_copy_maps(&st, NL, 1);
            ac_outputs o = {0};
            o.hidden = h[4], o.pooled = p[4], o.pooling = AC_POOL_LAST;
            OK(ac_cuda_forward(g32, seqs, PT_NSEQ, &o, NULL));
            o.hidden = h[5], o.pooled = p[5];
            OK(ac_cuda_forward(gbf, seqs, PT_NSEQ, &o, NULL));
            OK(pt_forward(g32, &st, seqs, h[3], p[3], NULL, 0));
            OK(pt_forward(gbf, &st, seqs, h[2], p[2], NULL, 0));
            st.run = 1;
            OK(pt_forward(g32, &st, seqs, h[6], p[6], NULL, 0));
            OK(pt_forward(gbf, &st, seqs, h[1], p[1], NULL, 0));
            st.run = -1;
            const double e32 = rel_err(h[3], h[4], TD), ebf = rel_err(h[2], h[5], TD), ec = rel_err(h[3], h[0], TD);
            const double r32 = rel_err(h[6], h[4], TD), rbf = rel_err(h[1], h[5], TD);
            printf("  %s every site partly served its exact f32 map: GPU f32 vs GPU exact %.2e (vs CPU exact %.2e), bf16 "
                   "vs GPU exact bf16 %.2e; as runs %.2e / %.2e\n",
                   name, e32, ec, ebf, r32, rbf);
            CHECK(e32 < 1e-4 && ec < 1e-4 && ebf < 2e-2 && all_finite(h[2], TD),
                  "%s partly served exact maps == the exact forward", name);
            CHECK(r32 < 1e-4 && rbf < 2e-2 && all_finite(h[1], TD), "%s partly served exact maps as runs == exact", name);
            /* the default (partial_run 0): five partly served sequences of <= 96 tokens in one stretch run as a run,
               bitwise what partial_run 1 gave */
            st.run = 0;
            OK(pt_forward(g32, &st, seqs, h[3], p[3], NULL, 0));
            st.run = -1;
            CHECK(!memcmp(h[3], h[6], TD * sizeof(float)), "%s partial_run 0 (default) picks runs for short sequences",
                  name);
        }
        pt_free_enc(&st, NL);
    }
    pfx_free(&cb);
done:
    for (int l = 0; l < NL; l++)
        for (int s = 0; s < PT_NSEQ; s++) free(st.Pm[l][s]);
    for (int k = 0; k < 7; k++) free(h[k]), free(p[k]);
    free(tok);
}

static void check_prefix(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf,
                         const char *tsv) {
    if (!m->hp.causal) { /* bidirectional: no prefix rows */
        int32_t ids[4] = {3, 4, 5, 6};
        ac_seq s = {ids, 4};
        float *kv = malloc((size_t)m->hp.n_layer * 2 * 4 * m->hp.n_head_kv * m->hp.head_dim * 4);
        float *hid = malloc((size_t)4 * m->hp.n_embd * 4), *pooled = malloc((size_t)m->hp.n_embd * 4);
        int P = 2, ld = 4;
        ac_cuda_opts opts = {0};
        opts.pfx_P = &P, opts.pfx_ld = &ld, opts.pfx_kv = &kv, opts.pfx_hid = &hid;
        ac_outputs o = {0};
        o.pooled = pooled, o.pooling = AC_POOL_MEAN;
        CHECK(ac_cuda_forward(gbf, &s, 1, &o, &opts) == AC_ERR_UNSUPPORTED && strstr(ac_last_error(), "causal"),
              "%s: prefix rows refused on a bidirectional model: %s", name, ac_last_error());
        free(kv), free(hid), free(pooled);
        return;
    }
    check_prefix_backend(name, m, cpu, g32, 1);
    check_prefix_backend(name, m, cpu, gbf, 0);
    check_prefix_api(name, m, cpu);
    check_both_caches_api(name, m, cpu);
    check_prefix_resident(name, m, g32, 1);
    check_prefix_resident(name, m, gbf, 0);
    check_prefix_device_api(name, m);
    if (tsv) check_greedy_prefix(m, g32, tsv);
    if (tsv) check_label_scoring(name, m, cpu); /* (stories260K: the one decoder here with a tokenizer) */
}

static void run_loaded(const char *name, ac_model *m, const char *tsv) {
    ac_ctx_params cp = ac_ctx_default_params();
    ac_ctx *cpu;
    OK(ac_ctx_new(m, &cp, &cpu));
    ac_cuda_model *g32, *gbf;
    double t0 = ac_now();
    OK(ac_cuda_model_upload(m, AC_CUDA_F32, &g32));
    OK(ac_cuda_model_upload(m, AC_CUDA_BF16, &gbf));
    printf("%s: %d layers, D %d, heads %d/%d x %d; uploaded twice in %.2f s\n", name, m->hp.n_layer, m->hp.n_embd,
           m->hp.n_head, m->hp.n_head_kv, m->hp.head_dim, ac_now() - t0);
    const int maxL = m->hp.n_ctx_train < 256 ? m->hp.n_ctx_train : 256;
    const int b1[] = {1, 7, 33, maxL / 2, maxL}, b2[] = {maxL, 1}, b3[] = {17};
    compare_batch(name, m, cpu, g32, gbf, b1, 5);
    compare_batch(name, m, cpu, g32, gbf, b2, 2);
    compare_batch(name, m, cpu, g32, gbf, b3, 1);
    int b4[16];
    for (int i = 0; i < 16; i++) b4[i] = 1 + rnd_int(maxL);
    compare_batch(name, m, cpu, g32, gbf, b4, 16);
    check_record(name, m, gbf);
    check_served(name, m, cpu, g32, gbf);
    check_summary(name, m, g32, gbf);
    check_cache_api(name, m, cpu);
    check_map_cache(name, m); /* blocks from the stream-ordered pool (where the device has pools) */
    setenv("AC_CUDA_MAP_CACHE_POOL", "0", 1); /* ... and from cudaMalloc */
    printf("  (the same with AC_CUDA_MAP_CACHE_POOL=0)\n");
    check_map_cache(name, m);
    unsetenv("AC_CUDA_MAP_CACHE_POOL");
    check_map_cache_abort(name, m, gbf);
    check_prefix(name, m, cpu, g32, gbf, tsv);
    check_partial(name, m, cpu, g32, gbf);
    check_graphs(name, m, gbf);
    check_bad_input(gbf, m->hp.n_vocab);
    if (tsv) check_greedy(m, g32, tsv);
    ac_cuda_model_free(g32), ac_cuda_model_free(gbf);
    ac_ctx_free(cpu);
}

static void run_model(const char *name, const char *path, const char *tsv) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("SKIP %s: %s absent\n", name, path);
        return;
    }
    fclose(f);
    ac_model_params mp = ac_model_default_params();
    ac_model *m;
    OK(ac_model_load_ex(path, &mp, AC_LOAD_NO_PACK, &m)); /* CPU side: exact f32 products */
    run_loaded(name, m, tsv);
    ac_model_free(m);
}

/* a synthetic model of tests/ref_forward.c's builder */
static void run_synthetic(const char *name, ref_spec s) {
    uint8_t *buf;
    size_t size;
    OK(ref_build(&s, &buf, &size));
    ac_model_params mp = ac_model_default_params();
    mp.use_mmap = 0;
    ac_model *m;
    OK(ac_model_load_memory(buf, size, &mp, AC_LOAD_NO_PACK | AC_LOAD_NO_VOCAB, &m));
    run_loaded(name, m, NULL);
    ac_model_free(m);
    free(buf);
}

int main(int argc, char **argv) {
    if (!ac_cuda_available()) {
        printf("SKIP test_cuda_forward: no CUDA device\n");
        return 0;
    }
    char dev[256];
    OK(ac_cuda_device_name(dev, sizeof dev));
    printf("device: %s\n", dev);
    rng_seed(99);
    run_model("all-MiniLM-L6-v2", argc > 1 ? argv[1] : AC_SOURCE_DIR "/models-cache/all-MiniLM-L6-v2-f32.gguf", NULL);
    run_model("stories260K", argc > 2 ? argv[2] : AC_SHARED_DIR "/models/stories260K.gguf",
              argc > 3 ? argv[3] : AC_SHARED_DIR "/models/stories260K.greedy.tsv");
    ref_spec q = ref_spec_default(AC_ARCH_QWEN2);
    q.n_embd = 256, q.n_head = 4, q.n_head_kv = 2, q.n_ff = 512, q.n_rot = 0, q.qkv_bias = 1, q.wtype = GGML_F16;
    run_synthetic("synthetic qwen2 (hd 64, NEOX, q/k/v bias, GQA 2:1)", q);
    ref_spec l = ref_spec_default(AC_ARCH_LLAMA);
    l.n_embd = 128, l.n_head = 4, l.n_head_kv = 1, l.n_ff = 320, l.n_rot = 0, l.rope_freqs = 1, l.o_bias = 1;
    run_synthetic("synthetic llama (hd 32, rope_freqs, o bias, GQA 4:1)", l);
    ref_spec b = ref_spec_default(AC_ARCH_BERT);
    b.n_embd = 256, b.n_head = 2, b.n_head_kv = 2, b.n_ff = 384, b.n_cls = 3, b.wtype = GGML_BF16;
    run_synthetic("synthetic bert (hd 128, classifier head)", b);
    printf("test_cuda_forward: %d checks passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
