/* cuda_backend.cu — the exact prefill forward pass on the GPU (see
 * cuda_backend.h): weights uploaded once, one pass per call over all T rows of
 * the packed sequences (projections are GEMMs over T rows; RoPE positions,
 * masks and attention are per sequence through cu_seqlens offsets).
 *
 * Per layer, llama/qwen2 (pre-RMSNorm):          bert (post-LayerNorm):
 *   xb  = rmsnorm(x) * n1              (T)        qkv = xb Wqkv^T + b
 *   qkv = xb Wqkv^T (+ b)  RoPE on q, k            att = attention(qkv)
 *   att = attention(qkv)                           x  += att Wo^T + bo; x, xb = LN(x)
 *   x  += att Wo^T (+ bo)              (f32)       hh  = gelu(xb Wup^T + bu)
 *   xb  = rmsnorm(x) * n2                          x  += hh Wdown^T + bd; x, xb = LN(x)
 *   gu  = xb [Wgate; Wup]^T; hh = silu(g) * u
 *   x  += hh Wdown^T
 * x is the f32 residual stream; xb, qkv, att, gu, hh are in the precision's
 * type T (bf16 or f32). Bert in bf16 keeps its residual in xb instead (as
 * PyTorch's bf16 forward does): y = att Wo^T + bo into qkv's space, then
 * xb = LN(xb + y) in one kernel; x (f32) is written by the last LayerNorm only. Wq, Wk, Wv are concatenated into one matrix (one GEMM),
 * as are Wgate and Wup. */
#include "cuda_backend.h"
#include "cuda_attn.h"
#include "cuda_attn_wg.h"
#include "cuda_codec_av.h"
#include "cuda_gemm.h"
#include "cuda_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

/* ---- small helpers ------------------------------------------------------------------------- */

int ac_cu_dmalloc(void **p, size_t bytes) {
    *p = NULL;
    if (!bytes) return AC_OK;
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return ac_err(AC_ERR_NOMEM, "CUDA: cannot allocate %zu MiB of device memory", bytes >> 20);
    }
    return AC_OK;
}

int ac_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0;
}

int ac_cuda_device_name(char *buf, size_t n) {
    cudaDeviceProp p;
    if (!buf || !n) return ac_err(AC_ERR_ARG, "ac_cuda_device_name: no buffer");
    if (!ac_cuda_available()) return ac_err(AC_ERR_UNSUPPORTED, "no CUDA device");
    AC_CU(cudaGetDeviceProperties(&p, 0));
    snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.0f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
             p.totalGlobalMem / 1073741824.0);
    return AC_OK;
}

size_t ac_cu_tsize(int prec) { return prec == AC_CUDA_F32 ? 4 : 2; }

int ac_cu_upload_f32(float **dst, const float *src, size_t n) {
    *dst = NULL;
    if (!src) return AC_OK;
    int rc = DMALLOC(*dst, n * 4);
    if (rc) return rc;
    AC_CU(cudaMemcpy(*dst, src, n * 4, cudaMemcpyHostToDevice));
    return AC_OK;
}

int ac_cu_shapes(ac_cuda_model *g) {
    const ac_hparams *hp = &g->hp;
    g->D = hp->n_embd, g->H = hp->n_head, g->Hkv = hp->n_head_kv, g->hd = hp->head_dim, g->F = hp->n_ff;
    g->V = hp->n_vocab;
    g->QD = g->H * g->hd, g->KVD = g->Hkv * g->hd, g->QKV = g->QD + 2 * g->KVD;
    g->bert = g->arch == AC_ARCH_BERT;
    /* bert in bf16: the residual stream in bf16 (see layer()); AC_CUDA_RESID=f32 keeps it in f32 */
    const char *rs = getenv("AC_CUDA_RESID");
    g->resid_t = !(rs && !strcmp(rs, "f32"));
    const char *gr = getenv("AC_CUDA_GRAPHS"); /* 0: no CUDA graphs */
    g->graphs_off = gr && !strcmp(gr, "0");
    if (g->D <= 0 || g->H <= 0 || g->Hkv <= 0 || g->H % g->Hkv || g->hd <= 0 || g->F <= 0 || hp->n_layer <= 0)
        return ac_err(AC_ERR_UNSUPPORTED, "CUDA backend: unsupported shape (D %d, heads %d/%d, head dim %d)", g->D,
                      g->H, g->Hkv, g->hd);
    return AC_OK;
}

int ac_cu_common_init(ac_cuda_model *g) {
    if (!ac_cuda_available()) return ac_err(AC_ERR_UNSUPPORTED, "no CUDA device");
    AC_CU(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    AC_CU(cudaEventCreate(&g->t0));
    AC_CU(cudaEventCreate(&g->t1));
    int rc = ac_cu_gemm_new(g->st, &g->gemm);
    if (rc) return rc;
    (void)ac_cu_wgmma_available(); /* probe once here, never first inside a captured forward (cuda_attn_wg.h) */
    g->L = (cu_layer *)calloc((size_t)g->hp.n_layer, sizeof *g->L);
    return g->L ? AC_OK : AC_ERR_NOMEM;
}

/* ---- random models (benchmarks) ------------------------------------------------------------- */
__device__ __forceinline__ float hash_unit(uint64_t seed, uint64_t i) { /* splitmix64 -> [-1, 1) */
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T> __global__ void k_rand(T *w, size_t n, uint64_t seed, float base, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        ac_st(w + i, base + amp * hash_unit(seed, i));
}

static int rand_buf(void **p, size_t n, int f32, uint64_t seed, float base, float amp) {
    int rc = ac_cu_dmalloc(p, n * (f32 ? 4 : 2));
    if (rc) return rc;
    if (f32) k_rand<float><<<1024, 256>>>((float *)*p, n, seed, base, amp);
    else k_rand<bf16><<<1024, 256>>>((bf16 *)*p, n, seed, base, amp);
    AC_CU_LAUNCH();
    return AC_OK;
}
#define RAND_F32(ptr, n, seed, base, amp) rand_buf((void **)&(ptr), (n), 1, (seed), (base), (amp))

int ac_cuda_model_random(int arch, const ac_hparams *hp, int prec, uint64_t seed, ac_cuda_model **out) {
    if (!hp || !out || (prec != AC_CUDA_BF16 && prec != AC_CUDA_F32) || arch < AC_ARCH_LLAMA || arch > AC_ARCH_BERT)
        return ac_err(AC_ERR_ARG, "ac_cuda_model_random: invalid argument");
    *out = NULL;
    ac_cuda_model *g = (ac_cuda_model *)calloc(1, sizeof *g);
    if (!g) return AC_ERR_NOMEM;
    g->arch = arch, g->prec = prec, g->hp = *hp;
    int rc = ac_cu_shapes(g);
    if (!rc) rc = ac_cu_common_init(g);
    const int D = g->D, F = g->F, f32 = prec == AC_CUDA_F32;
    const float aD = 1.0f / sqrtf((float)D), aF = 1.0f / sqrtf((float)F), aQ = 1.0f / sqrtf((float)g->QD);
    uint64_t s = seed * 1000003ull;
    if (!rc) rc = RAND_F32(g->tok, (size_t)g->V * D, ++s, 0.f, 1.f);
    if (!rc && g->bert) {
        if (!rc) rc = RAND_F32(g->pos, (size_t)g->hp.n_ctx_train * D, ++s, 0.f, 0.1f);
        if (!rc) rc = RAND_F32(g->type0, D, ++s, 0.f, 0.1f);
        if (!rc) rc = RAND_F32(g->en_w, D, ++s, 1.f, 0.1f);
        if (!rc) rc = RAND_F32(g->en_b, D, ++s, 0.f, 0.1f);
    }
    if (!rc && !g->bert) rc = RAND_F32(g->out_norm, D, ++s, 1.f, 0.1f);
    for (int il = 0; il < g->hp.n_layer && !rc; il++) {
        cu_layer *c = &g->L[il];
        rc = rand_buf(&c->wqkv, (size_t)g->QKV * D, f32, ++s, 0.f, aD);
        if (!rc) rc = rand_buf(&c->wo, (size_t)D * g->QD, f32, ++s, 0.f, aQ);
        if (!rc) rc = rand_buf(&c->wgu, (size_t)(g->bert ? F : 2 * F) * D, f32, ++s, 0.f, aD);
        if (!rc) rc = rand_buf(&c->wdown, (size_t)D * F, f32, ++s, 0.f, aF);
        if (!rc) rc = RAND_F32(c->n1w, D, ++s, 1.f, 0.1f);
        if (!rc) rc = RAND_F32(c->n2w, D, ++s, 1.f, 0.1f);
        if (!rc && g->bert) {
            if (!rc) rc = RAND_F32(c->bqkv, g->QKV, ++s, 0.f, 0.05f);
            if (!rc) rc = RAND_F32(c->bo, D, ++s, 0.f, 0.05f);
            if (!rc) rc = RAND_F32(c->bup, F, ++s, 0.f, 0.05f);
            if (!rc) rc = RAND_F32(c->bdown, D, ++s, 0.f, 0.05f);
            if (!rc) rc = RAND_F32(c->n1b, D, ++s, 0.f, 0.05f);
            if (!rc) rc = RAND_F32(c->n2b, D, ++s, 0.f, 0.05f);
        }
    }
    if (!rc) AC_CU(cudaDeviceSynchronize());
    if (rc) {
        ac_cuda_model_free(g);
        return rc;
    }
    *out = g;
    return AC_OK;
}

static void ws_free(ac_cuda_model *g) {
    g->ws_gen++; /* every captured graph names the old buffers */
    cudaFree(g->x), cudaFree(g->h), cudaFree(g->xb), cudaFree(g->qkv), cudaFree(g->att), cudaFree(g->gu);
    cudaFree(g->hh), cudaFree(g->rows), cudaFree(g->pooled), cudaFree(g->logits), cudaFree(g->clsbuf);
    cudaFree(g->clsout), cudaFree(g->d_tok), cudaFree(g->d_pos), cudaFree(g->d_cu), cudaFree(g->d_poff);
    free(g->h_tok), free(g->h_pos), free(g->h_cu), free(g->h_poff);
    g->x = g->h = g->pooled = g->logits = g->clsbuf = g->clsout = NULL;
    g->xb = g->qkv = g->att = g->gu = g->hh = g->rows = NULL;
    g->d_tok = g->d_pos = g->d_cu = g->h_tok = g->h_pos = g->h_cu = NULL;
    g->d_poff = g->h_poff = NULL;
    g->cap_T = g->cap_S = 0;
}

static void pfx_free(ac_cuda_model *g) {
    if (g->st_pu) cudaStreamSynchronize(g->st_pu);
    if (g->st_dn) cudaStreamSynchronize(g->st_dn);
    free(g->h_pcu), free(g->h_fcu), free(g->h_src);
    cudaFree(g->d_pcu), cudaFree(g->d_fcu), cudaFree(g->d_src);
    cudaFree(g->d_pup), cudaFree(g->d_pkv), cudaFree(g->d_back), cudaFree(g->d_ph), cudaFree(g->d_hfull);
    for (int i = 0; i < g->hp.n_layer; i++) {
        if (g->ev_pf && g->ev_pf[i]) cudaEventDestroy(g->ev_pf[i]);
        if (g->ev_bk && g->ev_bk[i]) cudaEventDestroy(g->ev_bk[i]);
    }
    free(g->ev_pf), free(g->ev_bk);
    if (g->ev_ph) cudaEventDestroy(g->ev_ph);
    if (g->st_pu) cudaStreamDestroy(g->st_pu);
    if (g->st_dn) cudaStreamDestroy(g->st_dn);
}

void *ac_cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    if (!bytes) return NULL;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        ac_err(AC_ERR_NOMEM, "CUDA: cannot pin %zu MiB of host memory", bytes >> 20);
        return NULL;
    }
    return p;
}

void ac_cuda_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

void ac_cuda_model_free(ac_cuda_model *g) {
    if (!g) return;
    if (g->st) cudaStreamSynchronize(g->st);
    if (g->st_up) cudaStreamSynchronize(g->st_up);
    for (int i = 0; i < AC_CU_NGRAPH; i++)
        if (g->graphs[i].state == 2) cudaGraphExecDestroy(g->graphs[i].exec);
    ws_free(g);
    cudaFree(g->P);
    free(g->srv_dev), free(g->srv_src), free(g->srv_how), free(g->srv_off), free(g->srv_mb), free(g->srv_cc);
    free(g->srv_rows), free(g->h_ptab), free(g->srv_hp), free(g->srv_hm);
    cudaFree(g->d_maps);
    cudaFree(g->d_srvtab);
    cudaFree(g->d_ptab), cudaFree(g->d_srows), cudaFree(g->d_pscr);
    ac_cu_summary_free(g);
    ac_cu_map_cache_free(g);
    cudaFreeHost(g->h_stage);
    if (g->ev_up)
        for (int i = 0; i < g->hp.n_layer; i++)
            if (g->ev_up[i]) cudaEventDestroy(g->ev_up[i]);
    free(g->ev_up);
    if (g->st_up) cudaStreamDestroy(g->st_up);
    free(g->h_P);
    ac_cu_pcache_free(g); /* (before pfx_free: synchronises st_pu) */
    pfx_free(g);
    cudaFree(g->tok), cudaFree(g->pos), cudaFree(g->type0), cudaFree(g->en_w), cudaFree(g->en_b);
    cudaFree(g->out_norm), cudaFree(g->output), cudaFree(g->cls), cudaFree(g->cls_out), cudaFree(g->cls_b);
    cudaFree(g->cls_out_b), cudaFree(g->rope_cs);
    if (g->L)
        for (int i = 0; i < g->hp.n_layer; i++) {
            cu_layer *c = &g->L[i];
            cudaFree(c->wqkv), cudaFree(c->wo), cudaFree(c->wgu), cudaFree(c->wdown);
            cudaFree(c->bqkv), cudaFree(c->bo), cudaFree(c->bup), cudaFree(c->bdown);
            cudaFree(c->n1w), cudaFree(c->n1b), cudaFree(c->n2w), cudaFree(c->n2b), cudaFree(c->bv);
        }
    free(g->L);
    for (int i = 0; i < g->ev_made; i++) cudaEventDestroy(g->ev[i]);
    if (g->t0) cudaEventDestroy(g->t0);
    if (g->t1) cudaEventDestroy(g->t1);
    ac_cu_gemm_free(g->gemm);
    if (g->st) cudaStreamDestroy(g->st);
    free(g);
}

/* ---- workspace ------------------------------------------------------------------------------- */
static int ws_reserve(ac_cuda_model *g, int T, int S) {
    if (T <= g->cap_T && S <= g->cap_S) return AC_OK;
    T = T > g->cap_T ? T : g->cap_T;
    S = S > g->cap_S ? S : g->cap_S;
    ws_free(g);
    const size_t ts = ac_cu_tsize(g->prec), D = g->D, F = g->F, t = (size_t)T, s = (size_t)S;
    const size_t ncls = g->n_cls > 0 ? g->n_cls : 1, V = g->has_output ? g->V : 1;
    int rc = DMALLOC(g->x, t * D * 4);
    if (!rc) rc = DMALLOC(g->h, t * D * 4);
    if (!rc) rc = DMALLOC(g->xb, t * D * ts);
    if (!rc) rc = DMALLOC(g->qkv, t * g->QKV * ts);
    if (!rc) rc = DMALLOC(g->att, t * g->QD * ts);
    if (!rc) rc = DMALLOC(g->gu, t * (g->bert ? F : 2 * F) * ts);
    if (!rc) rc = DMALLOC(g->hh, t * F * ts);
    if (!rc) rc = DMALLOC(g->rows, s * D * ts);
    if (!rc) rc = DMALLOC(g->pooled, s * D * 4);
    if (!rc) rc = DMALLOC(g->logits, s * V * 4);
    if (!rc) rc = DMALLOC(g->clsbuf, s * D * 4);
    if (!rc) rc = DMALLOC(g->clsout, s * ncls * 4);
    if (!rc) rc = DMALLOC(g->d_tok, t * 4);
    if (!rc) rc = DMALLOC(g->d_pos, t * 4);
    if (!rc) rc = DMALLOC(g->d_cu, (s + 1) * 4);
    if (!rc) rc = DMALLOC(g->d_poff, s * 8);
    if (!rc) {
        g->h_tok = (int *)malloc(t * 4), g->h_pos = (int *)malloc(t * 4), g->h_cu = (int *)malloc((s + 1) * 4);
        g->h_poff = (long long *)malloc(s * 8);
        if (!g->h_tok || !g->h_pos || !g->h_cu || !g->h_poff) rc = AC_ERR_NOMEM;
    }
    if (rc) {
        ws_free(g);
        return rc;
    }
    g->cap_T = T, g->cap_S = S;
    return AC_OK;
}

/* cos/sin table for positions [0, L), exactly as the CPU path computes it (double, then f32). */
static int rope_reserve(ac_cuda_model *g, int L) {
    if (L <= g->rope_L) return AC_OK;
    if (L < 512) L = 512;
    const int half = g->hp.n_rot / 2;
    float *cs = (float *)malloc((size_t)L * half * 2 * 4);
    if (!cs) return AC_ERR_NOMEM;
    const float *freqs = g->m ? g->m->rope_freqs : NULL;
    for (int pos = 0; pos < L; pos++)
        for (int i = 0; i < half; i++) {
            double inv = pow((double)g->hp.rope_base, -2.0 * i / g->hp.n_rot);
            if (freqs) inv /= (double)freqs[i];
            double th = pos * (double)g->hp.rope_scale * inv;
            cs[((size_t)pos * half + i) * 2] = (float)cos(th);
            cs[((size_t)pos * half + i) * 2 + 1] = (float)sin(th);
        }
    cudaFree(g->rope_cs);
    g->rope_cs = NULL;
    g->ws_gen++; /* graphs name the old table */
    int rc = ac_cu_upload_f32(&g->rope_cs, cs, (size_t)L * half * 2);
    free(cs);
    if (rc) return rc;
    g->rope_L = L;
    return AC_OK;
}

/* ---- profiling --------------------------------------------------------------------------------- */
void ac_cuda_set_profile(ac_cuda_model *g, int on) {
    if (g) g->profile = on;
}
float ac_cuda_last_ms(const ac_cuda_model *g) { return g ? g->last_ms : 0.f; }
void ac_cuda_get_profile(const ac_cuda_model *g, float *ms) {
    if (g && ms) memcpy(ms, g->prof, sizeof g->prof);
}
/* mark the end of a stage (profiling only) */
static int mark(ac_cuda_model *g, int stage) {
    if (!g->profile || g->n_ev >= EV_CAP) return AC_OK;
    if (g->n_ev == g->ev_made) {
        AC_CU(cudaEventCreate(&g->ev[g->n_ev]));
        g->ev_made++;
    }
    g->ev_stage[g->n_ev] = stage;
    AC_CU(cudaEventRecord(g->ev[g->n_ev++], g->st));
    return AC_OK;
}

/* ---- the forward pass ------------------------------------------------------------------------------ */
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        if ((rc = (x)) != AC_OK) return rc;                                                                    \
    } while (0)

template <typename T> static int gemm(ac_cuda_model *g, const void *W, const void *X, void *Y, int y_f32, int ldy,
                                      int M, int N, int K, const float *b, int acc) {
    return ac_cu_gemm_run(g->gemm, sizeof(T) == 4, y_f32, W, X, Y, ldy, M, N, K, b, acc);
}

/* 1: the materialised attention (f32 mode, recording, or a head dim the fused kernel lacks) */
static int use_materialised(const ac_cuda_model *g, const ac_cuda_opts *o) {
    return g->prec == AC_CUDA_F32 || (o && (o->materialised || o->record)) || (g->hd != 32 && g->hd != 64 && g->hd != 128);
}

/* attention of one layer: qkv -> att */
/* attention of sequences [s0, s0 + n_seq) of one layer: qkv -> att (cu_seqlens and P offsets are absolute) */
template <typename T>
static int attention(ac_cuda_model *g, int il, int s0, int n_seq, int Lmax, const ac_cuda_opts *o) {
    int rc;
    T *qkv = (T *)g->qkv;
    ac_cu_attn a = {n_seq, Lmax, g->d_cu + s0, g->H, g->Hkv, g->hd, g->QKV, g->QKV, g->QD, g->hp.causal,
                    1.0f / sqrtf((float)g->hd)};
    if (g->pfx_any) { /* keys before each sequence's rows: layer il's given K, V rows [2][pfx_tot][KVD] */
        const size_t slab = (size_t)2 * g->pfx_tot * g->KVD;
        const T *kp = sizeof(T) == 4 ? (const T *)g->d_pup + il * slab : (const T *)g->d_pkv + il * slab;
        a.cp = g->d_pcu + s0, a.kp = kp, a.vp = kp + (size_t)g->pfx_tot * g->KVD, a.ldp = g->KVD;
    }
    const int mat = use_materialised(g, o);
    if (!mat) return ac_cu_flash_attn(&a, (const bf16 *)qkv, (const bf16 *)qkv + g->QD, (const bf16 *)qkv + g->QD + g->KVD,
                                      (bf16 *)g->att, o ? o->attn_variant : 0, g->st);
    TRY(ac_cu_attn_materialised<T>(&a, qkv, qkv + g->QD, qkv + g->QD + g->KVD, (T *)g->att, g->P, g->d_poff + s0,
                                   g->st));
    if (o && o->record) {
        size_t total = (size_t)g->h_poff[n_seq - 1] + (size_t)g->H * (g->h_cu[n_seq] - g->h_cu[n_seq - 1]) *
                                                          (g->h_cu[n_seq] - g->h_cu[n_seq - 1]);
        if (total > g->cap_hP) {
            free(g->h_P);
            if (!(g->h_P = (float *)malloc(total * 4))) {
                g->cap_hP = 0;
                return AC_ERR_NOMEM;
            }
            g->cap_hP = total;
        }
        AC_CU(cudaMemcpyAsync(g->h_P, g->P, total * 4, cudaMemcpyDeviceToHost, g->st));
        AC_CU(cudaStreamSynchronize(g->st));
        for (int s = 0; s < n_seq; s++)
            if ((rc = o->record(o->user, il, s, g->h_P + g->h_poff[s], g->H, g->h_cu[s + 1] - g->h_cu[s])))
                return ac_err_prefix(rc, "attention record (layer %d, sequence %d)", il, s);
    }
    return AC_OK;
}

/* ---- served maps (opts.serve) ------------------------------------------------------------------ */
/* A site's kind in served_layer: 0 computed, 1 served whole (V and A.V only), 2 partly served (every
 * projection; A.V for rows [0, R), the exact attention for the rest), 3 served per head (every
 * projection; the exact attention of every row and head, then A.V over rows [0, R) of the served heads) */
static int site_kind(const ac_cuda_model *g, int il, int n_seq, int s) {
    const size_t k = (size_t)il * n_seq + s;
    if (!g->srv_dev[k]) return 0;
    if (g->srv_hp[k]) return 3; /* served per head */
    return g->srv_rows[k] < g->h_cu[s + 1] - g->h_cu[s] + (g->pfx_on ? g->pfx_o->pfx_P[s] : 0) ? 2 : 1;
}

/* Sequence s, partly served at layer il: rows [0, R) = its stored maps' rows times V, rows [R, L) the
 * exact attention over keys [0, L) (causal), as one launch of the prefix-rows attention whose "given"
 * keys are the sequence's own rows [0, R) (ac_cu_attn.cp: the site's d_ptab entry). Without given
 * prefix rows (P = 0) every key is a row of qkv: A.V reads V there and writes att's rows [0, R) in place,
 * the attention's given keys are qkv's rows [r0, r0 + R). With P > 0 given rows (the prefix K/V cache;
 * rows [P, L) computed, at qkv's rows r0..): the K rows of positions [0, R) and the V rows of [0, L) are
 * gathered into d_pscr from the layer's given slab and qkv; A.V runs over all R rows into the scratch
 * (rows [0, P) are not needed: what the CPU's apply does) and rows [P, R) are copied into att; the
 * attention's given keys are the gathered rows. */
template <typename T> static int partial_site(ac_cuda_model *g, int il, int n_seq, int s, const ac_cuda_opts *o) {
    const size_t k = (size_t)il * n_seq + s;
    const int QKV = g->QKV, QD = g->QD, KVD = g->KVD, VO = QD + KVD;
    const int P = g->pfx_on ? g->pfx_o->pfx_P[s] : 0, r0 = g->h_cu[s], n = g->h_cu[s + 1] - r0, L = P + n;
    const int R = g->srv_rows[k];
    const ac_cu_codec cc = {g->srv_cc[3 * k], g->srv_cc[3 * k + 1], g->srv_cc[3 * k + 2]};
    T *qkv = (T *)g->qkv, *att = (T *)g->att;
    const size_t es = sizeof(T);
    int rc;
    ac_cu_attn a = {1, L - R, g->d_ptab + 4 * k + 2, g->H, g->Hkv, g->hd, QKV, QKV, QD, g->hp.causal,
                    1.0f / sqrtf((float)g->hd)};
    a.cp = g->d_ptab + 4 * k;
    if (!P) {
        TRY(ac_cu_codec_av<T>(&cc, g->srv_dev[k], g->srv_mb[k], L, R, g->H, g->Hkv, g->hd, qkv + (size_t)r0 * QKV + VO,
                              QKV, att + (size_t)r0 * QD, QD, g->st));
        a.kp = qkv + QD, a.vp = qkv + VO, a.ldp = QKV;
    } else {
        T *sk = (T *)g->d_pscr, *sv = sk + (size_t)L * KVD, *so = sk + (size_t)2 * L * KVD; /* [L][KVD] x 2, [L][QD] */
        const size_t slab = (size_t)2 * g->pfx_tot * KVD;
        const T *gk = (sizeof(T) == 4 ? (const T *)g->d_pup : (const T *)g->d_pkv) + il * slab +
                      (size_t)g->h_pcu[s] * KVD, /* rows [0, P) of the layer's given K; V at + pfx_tot KVD */
            *gv = gk + (size_t)g->pfx_tot * KVD;
        AC_CU(cudaMemcpyAsync(sk, gk, (size_t)P * KVD * es, cudaMemcpyDeviceToDevice, g->st));
        AC_CU(cudaMemcpyAsync(sv, gv, (size_t)P * KVD * es, cudaMemcpyDeviceToDevice, g->st));
        AC_CU(cudaMemcpy2DAsync(sk + (size_t)P * KVD, KVD * es, qkv + (size_t)r0 * QKV + QD, QKV * es, KVD * es,
                                (size_t)(R - P), cudaMemcpyDeviceToDevice, g->st));
        AC_CU(cudaMemcpy2DAsync(sv + (size_t)P * KVD, KVD * es, qkv + (size_t)r0 * QKV + VO, QKV * es, KVD * es,
                                (size_t)n, cudaMemcpyDeviceToDevice, g->st));
        TRY(ac_cu_codec_av<T>(&cc, g->srv_dev[k], g->srv_mb[k], L, R, g->H, g->Hkv, g->hd, sv, KVD, so, QD, g->st));
        AC_CU(cudaMemcpyAsync(att + (size_t)r0 * QD, so + (size_t)P * QD, (size_t)(R - P) * QD * es,
                              cudaMemcpyDeviceToDevice, g->st));
        a.kp = sk, a.vp = sv, a.ldp = KVD;
    }
    if (!use_materialised(g, o))
        return ac_cu_flash_attn(&a, (const bf16 *)qkv, (const bf16 *)qkv + QD, (const bf16 *)qkv + VO, (bf16 *)att,
                                o ? o->attn_variant : 0, g->st);
    /* P [H][L - R][L] at sequence s's offset (sized for [H][L - P][L]) */
    return ac_cu_attn_materialised<T>(&a, qkv, qkv + QD, qkv + VO, att, g->P, g->d_poff + s, g->st);
}

/* 1 when sites [s0, s1) of layer il share one codec and their maps' natural head stride (one A.V launch) */
static int same_codec(const ac_cuda_model *g, int il, int n_seq, int s0, int s1) {
    if (g->hd != 32 && g->hd != 64 && g->hd != 128) return 0;
    const size_t k0 = (size_t)il * n_seq + s0;
    for (int s = s0; s < s1; s++) {
        const size_t k = (size_t)il * n_seq + s;
        const int L = g->h_cu[s + 1] - g->h_cu[s];
        if (g->srv_cc[3 * k] != g->srv_cc[3 * k0] || g->srv_cc[3 * k + 1] != g->srv_cc[3 * k0 + 1] ||
            g->srv_cc[3 * k + 2] != g->srv_cc[3 * k0 + 2] ||
            g->srv_mb[k] != ac_cuda_map_bytes(g->srv_cc[3 * k], g->srv_cc[3 * k + 1], g->srv_cc[3 * k + 2], L))
            return 0;
    }
    return 1;
}

/* opts.partial_run: partly served sequences [s0, s1) of layer il, none with given rows, as one run: the
 * fused (or materialised) attention over all their rows, exact, then A.V from the maps over rows [0, R)
 * of each (overwriting those rows' exact attention) */
template <typename T> static int partial_run(ac_cuda_model *g, int il, int n_seq, int s0, int s1, const ac_cuda_opts *o) {
    const int QKV = g->QKV, VO = g->QD + g->KVD;
    T *qkv = (T *)g->qkv, *att = (T *)g->att;
    int rc, Lmax = 0;
    for (int s = s0; s < s1; s++) Lmax = g->h_cu[s + 1] - g->h_cu[s] > Lmax ? g->h_cu[s + 1] - g->h_cu[s] : Lmax;
    TRY(attention<T>(g, il, s0, s1 - s0, Lmax, o));
    if (same_codec(g, il, n_seq, s0, s1)) {
        const size_t k0 = (size_t)il * n_seq + s0;
        const ac_cu_codec cc = {g->srv_cc[3 * k0], g->srv_cc[3 * k0 + 1], g->srv_cc[3 * k0 + 2]};
        return ac_cu_codec_av_seqs_rows<T>(&cc, g->d_srvtab + (size_t)il * n_seq, g->d_cu, g->d_srows + (size_t)il * n_seq,
                                           s0, s1 - s0, Lmax, g->H, g->Hkv, g->hd, qkv + VO, QKV, att, g->QD, g->st);
    }
    for (int s = s0; s < s1; s++) {
        const int r0 = g->h_cu[s], L = g->h_cu[s + 1] - r0;
        const size_t k = (size_t)il * n_seq + s;
        const ac_cu_codec cc = {g->srv_cc[3 * k], g->srv_cc[3 * k + 1], g->srv_cc[3 * k + 2]};
        TRY(ac_cu_codec_av<T>(&cc, g->srv_dev[k], g->srv_mb[k], L, g->srv_rows[k], g->H, g->Hkv, g->hd,
                              qkv + (size_t)r0 * QKV + VO, QKV, att + (size_t)r0 * g->QD, g->QD, g->st));
    }
    return AC_OK;
}

/* Sequences [s0, s1) of layer il served per head (kind 3, no given rows): the exact attention of every
 * row and head as for computed sequences, then each served head's rows [0, R) overwritten by its maps'
 * A.V (one launch per served head: the kernels take all heads of a launch; a head alone is one head
 * over its kv head's V columns) */
template <typename T> static int per_head_sites(ac_cuda_model *g, int il, int n_seq, int s0, int s1,
                                                const ac_cuda_opts *o) {
    const int QKV = g->QKV, VO = g->QD + g->KVD, G = g->H / g->Hkv;
    T *qkv = (T *)g->qkv, *att = (T *)g->att;
    int rc, Lmax = 0;
    for (int s = s0; s < s1; s++) Lmax = g->h_cu[s + 1] - g->h_cu[s] > Lmax ? g->h_cu[s + 1] - g->h_cu[s] : Lmax;
    TRY(attention<T>(g, il, s0, s1 - s0, Lmax, o));
    for (int s = s0; s < s1; s++) {
        const int r0 = g->h_cu[s], L = g->h_cu[s + 1] - r0;
        const size_t k = (size_t)il * n_seq + s, mb = g->srv_mb[k];
        const ac_cu_codec cc = {g->srv_cc[3 * k], g->srv_cc[3 * k + 1], g->srv_cc[3 * k + 2]};
        for (int h = 0; h < g->H; h++) {
            if (!g->srv_hm[k * g->H + h]) continue;
            TRY(ac_cu_codec_av<T>(&cc, (const unsigned char *)g->srv_dev[k] + (size_t)h * mb, mb, L, g->srv_rows[k], 1, 1,
                                  g->hd, qkv + (size_t)r0 * QKV + VO + (size_t)(h / G) * g->hd, QKV,
                                  att + (size_t)r0 * g->QD + (size_t)h * g->hd, g->QD, g->st));
        }
    }
    return AC_OK;
}

/* The projections and attention of one layer when some sequences are served: runs of consecutive
 * sequences alike in kind share one GEMM; computed and partly served runs get Q, K, V and RoPE, whole
 * served runs only V. Then computed runs get the fused (or materialised) attention over their rows,
 * whole served runs A.V from their compressed maps, partly served sequences both (partial_site). With
 * given prefix rows (pfx_on) no site is served whole (serve_plan), so every K row is computed. */
template <typename T> static int pfx_copy_back(ac_cuda_model *g, int il, int Tn, int n_seq);
template <typename T> static int served_layer(ac_cuda_model *g, int il, int n_seq, const ac_cuda_opts *o) {
    cu_layer *c = &g->L[il];
    const int D = g->D, QKV = g->QKV, VO = g->QD + g->KVD; /* V's first column in qkv */
    T *xb = (T *)g->xb, *qkv = (T *)g->qkv;
    const int yt = sizeof(T) == 4;
    const void **dev = g->srv_dev + (size_t)il * n_seq;
    int rc;
    if (c->bqkv && !c->bv) { /* the V part of the bias, in its own allocation (aligned for cuBLASLt) */
        TRY(DMALLOC(c->bv, (size_t)g->KVD * 4));
        AC_CU(cudaMemcpyAsync(c->bv, c->bqkv + VO, (size_t)g->KVD * 4, cudaMemcpyDeviceToDevice, g->st));
    }
    for (int s0 = 0, s1; s0 < n_seq; s0 = s1) {
        const int hit = site_kind(g, il, n_seq, s0) == 1;
        for (s1 = s0 + 1; s1 < n_seq && (site_kind(g, il, n_seq, s1) == 1) == hit; s1++) {}
        const int r0 = g->h_cu[s0], rows = g->h_cu[s1] - r0;
        if (!rows) continue;
        if (hit) {
            TRY(gemm<T>(g, (const T *)c->wqkv + (size_t)VO * D, xb + (size_t)r0 * D, qkv + (size_t)r0 * QKV + VO, yt, QKV,
                        rows, g->KVD, D, c->bv, 0));
        } else {
            TRY(gemm<T>(g, c->wqkv, xb + (size_t)r0 * D, qkv + (size_t)r0 * QKV, yt, QKV, rows, QKV, D, c->bqkv, 0));
            if (!g->bert)
                TRY(ac_cu_rope<T>(qkv + (size_t)r0 * QKV, QKV, g->H, qkv + (size_t)r0 * QKV + g->QD, QKV, g->Hkv, g->hd,
                                  g->hp.n_rot, g->hp.rope_neox, g->rope_cs, g->d_pos + r0, rows, g->st));
        }
    }
    if (g->pfx_on) TRY(pfx_copy_back<T>(g, il, g->h_cu[n_seq], n_seq)); /* K, V rows for the prefix cache's insert */
    TRY(mark(g, 1));
    if (g->pfx_any) AC_CU(cudaStreamWaitEvent(g->st, g->ev_pf[il], 0)); /* this layer's given rows */
    int waited = 0;
    for (int s0 = 0, s1; s0 < n_seq; s0 = s1) {
        const int kind = site_kind(g, il, n_seq, s0);
        int Lmax = 0;
        for (s1 = s0; s1 < n_seq && site_kind(g, il, n_seq, s1) == kind; s1++) {
            const int L = g->h_cu[s1 + 1] - g->h_cu[s1];
            Lmax = L > Lmax ? L : Lmax;
        }
        if (!kind) {
            TRY(attention<T>(g, il, s0, s1 - s0, Lmax, o));
            continue;
        }
        if (!waited && g->ev_up) { /* this layer's uploaded maps */
            AC_CU(cudaStreamWaitEvent(g->st, g->ev_up[il], 0));
            waited = 1;
        }
        if (kind == 3) {
            TRY(per_head_sites<T>(g, il, n_seq, s0, s1, o));
            continue;
        }
        if (kind == 2) { /* one sequence at a time, or stretches without given rows as runs (opts.partial_run) */
            for (int s = s0, e; s < s1; s = e) {
                const int given = g->pfx_on && g->pfx_o->pfx_P[s] > 0;
                int Lr = 0; /* the stretch's longest sequence */
                for (e = s; !given && e < s1 && !(g->pfx_on && g->pfx_o->pfx_P[e] > 0); e++)
                    Lr = g->h_cu[e + 1] - g->h_cu[e] > Lr ? g->h_cu[e + 1] - g->h_cu[e] : Lr;
                const int as_run = !given && (g->part_run > 0 || (g->part_run == 0 && e - s >= 2 &&
                                                                   Lr <= AC_CUDA_PARTIAL_RUN_MAX_L));
                if (!as_run) {
                    TRY(partial_site<T>(g, il, n_seq, s, o));
                    e = s + 1;
                    continue;
                }
                TRY(partial_run<T>(g, il, n_seq, s, e, o));
            }
            continue;
        }
        { /* the run's sequences in one launch, where its sites share one codec and natural head stride */
            const size_t k0 = (size_t)il * n_seq + s0;
            if (same_codec(g, il, n_seq, s0, s1)) {
                const ac_cu_codec cc = {g->srv_cc[3 * k0], g->srv_cc[3 * k0 + 1], g->srv_cc[3 * k0 + 2]};
                TRY(ac_cu_codec_av_seqs<T>(&cc, g->d_srvtab + (size_t)il * n_seq, g->d_cu, s0, s1 - s0, Lmax, g->H,
                                           g->Hkv, g->hd, qkv + VO, QKV, (T *)g->att, g->QD, g->st));
                continue;
            }
        }
        for (int s = s0; s < s1; s++) {
            const int r0 = g->h_cu[s], L = g->h_cu[s + 1] - r0;
            const size_t k = (size_t)il * n_seq + s;
            const ac_cu_codec cc = {g->srv_cc[3 * k], g->srv_cc[3 * k + 1], g->srv_cc[3 * k + 2]};
            TRY(ac_cu_codec_av<T>(&cc, dev[s], g->srv_mb[k], L, L, g->H, g->Hkv, g->hd, qkv + (size_t)r0 * QKV + VO, QKV,
                                  (T *)g->att + (size_t)r0 * g->QD, g->QD, g->st));
        }
    }
    return mark(g, 2);
}

/* Copy layer il's host-served maps to the device on the upload stream (pageable ones through the
 * pinned staging buffer first) and record the layer's event. */
static int stage_layer(ac_cuda_model *g, int il) {
    if (!g->srv_on || il >= g->hp.n_layer || !g->ev_up) return AC_OK;
    const int n = g->srv_nseq;
    for (int s = 0; s < n; s++) {
        const size_t k = (size_t)il * n + s, bytes = g->srv_mb[k] * g->H;
        const int how = g->srv_how[k];
        if (how < 2) continue;
        const void *src = g->srv_src[k];
        if (how == 3) {
            memcpy(g->h_stage + g->srv_off[k], src, bytes);
            src = g->h_stage + g->srv_off[k];
        }
        /* srv_dev: d_maps + srv_off, or the device map cache's block of the site */
        AC_CU(cudaMemcpyAsync((void *)g->srv_dev[k], src, bytes, cudaMemcpyHostToDevice, g->st_up));
    }
    AC_CU(cudaEventRecord(g->ev_up[il], g->st_up));
    return AC_OK;
}

static int dev_grow(void **p, size_t *cap, size_t bytes);

/* Ask serve for every site of the call; sizes, offsets and buffers for the host-served maps; the
 * partly served sites' launch offsets. */
static int serve_plan(ac_cuda_model *g, const ac_seq *seqs, int n_seq, const ac_cuda_opts *o) {
    g->srv_on = 0, g->srv_sites = 0, g->srv_bytes = 0;
    if (!o || (!o->serve && !o->serve_site)) return AC_OK;
    if (o->record) return ac_err(AC_ERR_ARG, "ac_cuda_forward: serve and record cannot be combined");
    const int NL = g->hp.n_layer;
    const size_t n = (size_t)NL * n_seq;
    if (n > g->srv_cap) {
        free(g->srv_dev), free(g->srv_src), free(g->srv_how), free(g->srv_off), free(g->srv_mb), free(g->srv_cc);
        free(g->srv_rows), free(g->h_ptab), free(g->srv_hp), free(g->srv_hm);
        g->srv_rows = (int *)calloc(n, sizeof *g->srv_rows);
        g->srv_hp = (unsigned char *)calloc(n, 1);
        g->srv_hm = (unsigned char *)calloc(n * (size_t)g->H, 1);
        g->h_ptab = (int *)calloc(4 * n, sizeof *g->h_ptab);
        g->srv_dev = (const void **)calloc(n, sizeof *g->srv_dev);
        g->srv_src = (const void **)calloc(n, sizeof *g->srv_src);
        g->srv_how = (unsigned char *)calloc(n, 1);
        g->srv_off = (size_t *)calloc(n, sizeof *g->srv_off);
        g->srv_mb = (size_t *)calloc(n, sizeof *g->srv_mb);
        g->srv_cc = (int *)calloc(3 * n, sizeof *g->srv_cc);
        g->srv_cap = 0;
        if (!g->srv_dev || !g->srv_src || !g->srv_how || !g->srv_off || !g->srv_mb || !g->srv_cc || !g->srv_rows ||
            !g->h_ptab || !g->srv_hp || !g->srv_hm)
            return AC_ERR_NOMEM;
        g->srv_cap = n;
    }
    size_t dev_total = 0, stage_total = 0, scr = 0; /* scr: d_pscr's bytes (partly served sites after given rows) */
    const int causal = !g->bert && g->hp.causal;
    g->srv_part = 0, g->part_run = o->partial_run < 0 ? -1 : o->partial_run > 0;
    ac_cu_map_cache_begin(g); /* the device map cache: blocks of this call stay until the next */
    const int use_lru = g->lru.budget > 0;
    for (int il = 0; il < NL; il++)
        for (int s = 0; s < n_seq; s++) {
            const size_t k = (size_t)il * n_seq + s;
            const int L = seqs[s].n_tokens;
            const void *p = NULL;
            size_t mb = 0;
            int *cc = g->srv_cc + 3 * k, pageable = 0, R = L, hp = 0;
            const int P = g->pfx_on ? o->pfx_P[s] : 0; /* given prefix rows (computed rows: [P, L)) */
            uint64_t id0 = 0, id1 = 0; /* identity of the site's bytes (the device map cache's key) */
            if (o->serve_site) { /* per site: its own codec and head stride */
                ac_cuda_site_maps sm;
                memset(&sm, 0, sizeof sm);
                const int r = o->serve_site(o->user, il, s, L, &sm);
                if (r < 0) return ac_err_prefix(r, "served maps (layer %d, sequence %d)", il, s);
                if (r > 0) {
                    const size_t need = ac_cuda_map_bytes(sm.kind, sm.causal, sm.topk, L);
                    if (!sm.maps || !need || sm.head_bytes < need)
                        return ac_err(AC_ERR_ARG,
                                      "served maps (layer %d, sequence %d): codec (kind %d, top-k %d) or head stride %zu "
                                      "invalid for %d tokens",
                                      il, s, sm.kind, sm.topk, sm.head_bytes, L);
                    if (sm.rows > 0 && sm.rows < L && !causal)
                        return ac_err(AC_ERR_ARG,
                                      "served maps (layer %d, sequence %d): %d of %d rows served on a bidirectional "
                                      "model (every row or none)",
                                      il, s, sm.rows, L);
                    if (sm.rows > 0 && sm.rows < L) R = sm.rows;
                    if (P > 0 && R <= P)
                        return ac_err(AC_ERR_ARG,
                                      "served maps (layer %d, sequence %d): %d rows served, not past its %d given rows", il,
                                      s, R, P);
                    int nh = g->H; /* heads served */
                    if (sm.heads) { /* per-head serving: the mask copied (sm.heads is only lent for the call) */
                        nh = 0;
                        for (int h = 0; h < g->H; h++) nh += g->srv_hm[k * g->H + h] = sm.heads[h] != 0;
                        if (nh && P > 0)
                            return ac_err(AC_ERR_ARG,
                                          "served maps (layer %d, sequence %d): per-head serving with %d given prefix "
                                          "rows",
                                          il, s, P);
                        hp = nh > 0 && nh < g->H;
                    }
                    /* with given rows every K row is computed (copied back for the insert): no whole site */
                    if (g->pfx_on && R == L && !hp && nh)
                        return ac_err(AC_ERR_ARG,
                                      "served maps (layer %d, sequence %d): a whole site with given prefix rows (serve at "
                                      "most L - 1 = %d rows)",
                                      il, s, L - 1);
                    if (nh) { /* (no head served: the site is computed) */
                        p = sm.maps, mb = sm.head_bytes, pageable = sm.pageable;
                        id0 = sm.ident[0], id1 = sm.ident[1];
                        cc[0] = sm.kind, cc[1] = sm.causal ? 1 : 0, cc[2] = sm.topk;
                    }
                }
            } else {
                mb = ac_cuda_map_bytes(o->codec_kind, o->codec_causal, o->codec_topk, L);
                if (!mb)
                    return ac_err(AC_ERR_ARG, "served maps: invalid codec (kind %d, top-k %d) for %d tokens",
                                  o->codec_kind, o->codec_topk, L);
                p = o->serve(o->user, il, s, L);
                cc[0] = o->codec_kind, cc[1] = o->codec_causal ? 1 : 0, cc[2] = o->codec_topk;
            }
            const size_t bytes = mb * g->H;
            g->srv_mb[k] = mb;
            g->srv_src[k] = p, g->srv_dev[k] = NULL, g->srv_how[k] = 0, g->srv_rows[k] = p ? R : 0;
            g->srv_hp[k] = (unsigned char)(p && hp);
            if (!p) continue;
            g->srv_sites++;
            if (R < L && !hp) { /* partly served: the exact rows' launch offsets (see partial_site) */
                int *pt = g->h_ptab + 4 * k;
                const int r0 = g->h_cu[s], c0 = P ? 0 : r0;
                pt[0] = c0, pt[1] = c0 + R, pt[2] = r0 + R - P, pt[3] = g->h_cu[s + 1];
                g->srv_part = 1;
                if (P) {
                    const size_t need = (size_t)L * (2 * g->KVD + g->QD) * ac_cu_tsize(g->prec);
                    scr = need > scr ? need : scr;
                }
            }
            cudaPointerAttributes at;
            cudaMemoryType type = cudaMemoryTypeUnregistered;
            if (pageable) {
            } else if (cudaPointerGetAttributes(&at, p) == cudaSuccess) type = at.type;
            else cudaGetLastError();
            if (type == cudaMemoryTypeDevice || type == cudaMemoryTypeManaged) {
                g->srv_how[k] = 1, g->srv_dev[k] = p;
                continue;
            }
            const int ident = use_lru && (id0 || id1);
            if (ident) { /* resident on the device from an earlier call (or site) of the same bytes: no upload */
                void *dp = ac_map_lru_find(&g->lru, id0, id1, il, bytes);
                if (dp) {
                    g->srv_how[k] = 1, g->srv_dev[k] = dp;
                    continue;
                }
            }
            g->srv_how[k] = type == cudaMemoryTypeHost ? 2 : 3;
            /* made resident: the upload below writes into the cache's block instead of d_maps */
            if (ident) g->srv_dev[k] = ac_map_lru_insert(&g->lru, id0, id1, il, bytes);
            g->srv_off[k] = dev_total;
            dev_total += (bytes + 255) / 256 * 256;
            if (g->srv_how[k] == 3) stage_total = dev_total;
            g->srv_bytes += bytes;
        }
    if (dev_total > g->cap_dmaps) {
        cudaFree(g->d_maps);
        g->d_maps = NULL, g->cap_dmaps = 0;
        int rc = DMALLOC(g->d_maps, dev_total);
        if (rc) return rc;
        g->cap_dmaps = dev_total;
    }
    if (stage_total > g->cap_stage) {
        cudaFreeHost(g->h_stage);
        g->h_stage = NULL, g->cap_stage = 0;
        if (cudaMallocHost((void **)&g->h_stage, stage_total) != cudaSuccess) {
            cudaGetLastError();
            g->h_stage = NULL;
            return ac_err(AC_ERR_NOMEM, "CUDA: cannot pin %zu MiB of host memory for map staging", stage_total >> 20);
        }
        g->cap_stage = stage_total;
    }
    for (size_t k = 0; k < n; k++)
        if (g->srv_how[k] >= 2 && !g->srv_dev[k]) g->srv_dev[k] = g->d_maps + g->srv_off[k];
    if (n > g->cap_srvtab) {
        cudaFree(g->d_srvtab);
        g->d_srvtab = NULL, g->cap_srvtab = 0;
        int rc = DMALLOC(g->d_srvtab, n * sizeof *g->d_srvtab);
        if (rc) return rc;
        g->cap_srvtab = n;
    }
    /* pageable source: copied out before the call returns; ordered before this call's kernels */
    AC_CU(cudaMemcpyAsync(g->d_srvtab, g->srv_dev, n * sizeof *g->d_srvtab, cudaMemcpyHostToDevice, g->st));
    if (g->srv_part) {
        if (n > g->cap_ptab) {
            cudaFree(g->d_ptab), cudaFree(g->d_srows);
            g->d_ptab = g->d_srows = NULL, g->cap_ptab = 0;
            int rc = DMALLOC(g->d_ptab, 4 * n * sizeof *g->d_ptab);
            if (!rc) rc = DMALLOC(g->d_srows, n * sizeof *g->d_srows);
            if (rc) return rc;
            g->cap_ptab = n;
        }
        AC_CU(cudaMemcpyAsync(g->d_srows, g->srv_rows, n * sizeof *g->d_srows, cudaMemcpyHostToDevice, g->st));
        if (scr) {
            int rc = dev_grow(&g->d_pscr, &g->cap_pscr, scr);
            if (rc) return rc;
        }
        AC_CU(cudaMemcpyAsync(g->d_ptab, g->h_ptab, 4 * n * sizeof *g->d_ptab, cudaMemcpyHostToDevice, g->st));
    }
    if (dev_total && !g->st_up) {
        AC_CU(cudaStreamCreateWithFlags(&g->st_up, cudaStreamNonBlocking));
        g->ev_up = (cudaEvent_t *)calloc((size_t)NL, sizeof *g->ev_up);
        if (!g->ev_up) return AC_ERR_NOMEM;
        for (int il = 0; il < NL; il++) AC_CU(cudaEventCreateWithFlags(&g->ev_up[il], cudaEventDisableTiming));
    }
    g->srv_on = 1, g->srv_nseq = n_seq;
    if (!dev_total) return AC_OK;
    /* the previous call's kernels have finished (its stream was synchronised): the buffers are free; the
       device map cache's blocks of this call are allocated in stream order on st: uploads wait for them */
    AC_CU(cudaStreamWaitEvent(g->st_up, ac_cu_map_cache_ready(g), 0));
    return AC_OK;
}

void ac_cuda_last_served(const ac_cuda_model *g, int *sites, size_t *bytes) {
    if (sites) *sites = g ? g->srv_sites : 0;
    if (bytes) *bytes = g ? g->srv_bytes : 0;
}

/* ---- given prefix rows (opts.pfx_P: the prefix K/V cache) ---------------------------------------------
 * The given rows stay in the caller's f32 buffers (ac_kv_rows layout; cuda_ctx.c allocates them
 * pinned, so every copy below is a DMA overlapped with the layers; pageable buffers work too, with
 * copies the driver stages synchronously). Layer l's given K and V rows are copied as they are (f32:
 * converting 2 bytes of PCIe away would cost the host a pass over every element) one layer ahead, on
 * st_pu, into [2][pfx_tot][KVD]; in the bf16 mode a kernel on st_pu converts them into the layer's
 * bf16 slab (the f32 slabs are then a ring of two); event ev_pf[l], waited on just before the layer's
 * attention, which reads the slab in place. Each layer's computed K, V columns are copied out of the
 * qkv buffer (a kernel on the main stream: the next layer overwrites qkv) as f32 [2][Tn][KVD], and
 * from there, on st_dn while later layers run, straight into the caller's rows [P, L); the final
 * hidden rows [P, L) at the end. No host pass over the rows anywhere. */
static int dev_grow(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return AC_OK;
    cudaFree(*p);
    *p = NULL, *cap = 0;
    int rc = ac_cu_dmalloc(p, bytes);
    if (!rc) *cap = bytes;
    return rc;
}

/* Buffers, streams and events of a call with given rows (offsets h_cu, h_pcu, h_fcu, h_src already
 * filled; Tn computed rows). */
static int pfx_reserve(ac_cuda_model *g, int Tn) {
    const int NL = g->hp.n_layer, f32 = g->prec == AC_CUDA_F32;
    const size_t D = g->D, slab = (size_t)2 * g->pfx_tot * g->KVD; /* elements per layer */
    int rc;
    if (!g->ev_bk) { /* streams and events, made once (each only if missing: a failure part way is retried) */
        if (!g->st_pu) AC_CU(cudaStreamCreateWithFlags(&g->st_pu, cudaStreamNonBlocking));
        if (!g->st_dn) AC_CU(cudaStreamCreateWithFlags(&g->st_dn, cudaStreamNonBlocking));
        if (!g->ev_ph) AC_CU(cudaEventCreateWithFlags(&g->ev_ph, cudaEventDisableTiming));
        if (!g->ev_pf && !(g->ev_pf = (cudaEvent_t *)calloc((size_t)NL, sizeof *g->ev_pf))) return AC_ERR_NOMEM;
        cudaEvent_t *bk = (cudaEvent_t *)calloc((size_t)NL, sizeof *bk);
        if (!bk) return AC_ERR_NOMEM;
        for (int il = 0; il < NL; il++) {
            if (!g->ev_pf[il]) AC_CU(cudaEventCreateWithFlags(&g->ev_pf[il], cudaEventDisableTiming));
            if (cudaEventCreateWithFlags(&bk[il], cudaEventDisableTiming) != cudaSuccess) {
                cudaGetLastError();
                for (int i = 0; i < il; i++) cudaEventDestroy(bk[i]);
                free(bk);
                return ac_err(AC_ERR_INTERNAL, "CUDA: cannot create the prefix rows' events");
            }
        }
        g->ev_bk = bk; /* (last: everything above exists) */
    }
    if ((rc = dev_grow((void **)&g->d_back, &g->cap_back, (size_t)NL * 2 * Tn * g->KVD * 4))) return rc;
    if (g->pfx_any) {
        if ((rc = dev_grow((void **)&g->d_pup, &g->cap_pup, (f32 ? (size_t)NL : 2) * slab * 4))) return rc;
        if (!f32 && (rc = dev_grow(&g->d_pkv, &g->cap_pkv, (size_t)NL * slab * 2))) return rc;
    }
    if (g->pfx_any && g->pfx_full) {
        if ((rc = dev_grow((void **)&g->d_ph, &g->cap_ph, (size_t)g->pfx_tot * D * 4))) return rc;
        if ((rc = dev_grow((void **)&g->d_hfull, &g->cap_hfull, (size_t)g->pfx_Tfull * D * 4))) return rc;
    }
    return AC_OK;
}

/* Layer il's given K, V rows: copied (f32) to the device on st_pu, converted there in the bf16 mode.
 * With the device prefix cache (pc_how): rows of resident prefixes are copied from their blocks (device
 * to device, in the slab's type) instead; rows uploaded for a new block are copied into it once
 * converted. All on st_pu, in this order: host rows up, conversion (which also writes garbage over the
 * resident sequences' rows of the bf16 slab: the ring slot holds nothing for them), new blocks filled
 * from the slab, resident rows into the slab. */
static int pfx_stage(ac_cuda_model *g, int il, int n_seq) {
    if (!g->pfx_any || il >= g->hp.n_layer) return AC_OK;
    const ac_cuda_opts *o = g->pfx_o;
    const int KVD = g->KVD, f32 = g->prec == AC_CUDA_F32;
    const size_t half = (size_t)g->pfx_tot * KVD, slab = 2 * half, es = ac_cu_tsize(g->prec);
    float *up = g->d_pup + (f32 ? (size_t)il : (size_t)(il & 1)) * slab; /* [2][pfx_tot][KVD] */
    /* the slab the attention reads: T [2][pfx_tot][KVD] */
    unsigned char *dst = f32 ? (unsigned char *)up : (unsigned char *)g->d_pkv + (size_t)il * slab * 2;
    int host = 0;
    for (int s = 0; s < n_seq; s++) {
        const int P = o->pfx_P[s];
        if (!P || (g->pc_act && g->pc_how[s] == 1)) continue;
        const size_t ld = (size_t)o->pfx_ld[s], bytes = (size_t)P * KVD * 4;
        const float *K = o->pfx_kv[s] + (size_t)2 * il * ld * KVD, *V = K + ld * KVD; /* rows [0, P) of each */
        float *dk = up + (size_t)g->h_pcu[s] * KVD;
        AC_CU(cudaMemcpyAsync(dk, K, bytes, cudaMemcpyHostToDevice, g->st_pu));
        AC_CU(cudaMemcpyAsync(dk + half, V, bytes, cudaMemcpyHostToDevice, g->st_pu));
        g->pc_up_last += 2 * bytes;
        host = 1;
    }
    int rc;
    if (!f32 && host) TRY(ac_cu_convert<bf16>((bf16 *)g->d_pkv + (size_t)il * slab, up, slab, g->st_pu));
    for (int pass = 2; g->pc_act && pass >= 1; pass--) /* new blocks filled first, then resident rows read */
        for (int s = 0; s < n_seq; s++) {
            if (g->pc_how[s] != pass) continue;
            const int P = o->pfx_P[s];
            const size_t n = (size_t)P * KVD * es;                            /* bytes of P rows of K (or V) */
            unsigned char *bk = (unsigned char *)g->pc_blk[s] + (size_t)2 * il * n; /* layer il's K; V at + n */
            unsigned char *sk = dst + (size_t)g->h_pcu[s] * KVD * es, *sv = sk + half * es;
            if (pass == 2) {
                AC_CU(cudaMemcpyAsync(bk, sk, n, cudaMemcpyDeviceToDevice, g->st_pu));
                AC_CU(cudaMemcpyAsync(bk + n, sv, n, cudaMemcpyDeviceToDevice, g->st_pu));
                if (il == 0) { /* and the final hidden rows, once */
                    const size_t hb = (size_t)P * g->D * 4;
                    AC_CU(cudaMemcpyAsync((unsigned char *)g->pc_blk[s] + ac_cu_pcache_hid_off(g, P), o->pfx_hid[s], hb,
                                          cudaMemcpyHostToDevice, g->st_pu));
                    g->pc_up_last += hb;
                }
            } else {
                AC_CU(cudaMemcpyAsync(sk, bk, n, cudaMemcpyDeviceToDevice, g->st_pu));
                AC_CU(cudaMemcpyAsync(sv, bk + n, n, cudaMemcpyDeviceToDevice, g->st_pu));
            }
        }
    AC_CU(cudaEventRecord(g->ev_pf[il], g->st_pu));
    return AC_OK;
}

/* Layer il's computed K, V rows (after RoPE; qkv columns QD .. QD + 2 KVD): f32 copy now (main stream),
 * then into every sequence's rows [P, L) of the caller's buffers on st_dn. */
template <typename T> static int pfx_copy_back(ac_cuda_model *g, int il, int Tn, int n_seq) {
    const ac_cuda_opts *o = g->pfx_o;
    const int KVD = g->KVD;
    float *d = g->d_back + (size_t)il * 2 * Tn * KVD; /* [2][Tn][KVD] */
    int rc;
    TRY(ac_cu_kv_out<T>(d, (const T *)g->qkv, g->QKV, g->QD, Tn, KVD, g->st));
    AC_CU(cudaEventRecord(g->ev_bk[il], g->st));
    AC_CU(cudaStreamWaitEvent(g->st_dn, g->ev_bk[il], 0));
    for (int s = 0; s < n_seq; s++) {
        const int P = o->pfx_P[s], r0 = g->h_cu[s], n = g->h_cu[s + 1] - r0;
        const size_t ld = (size_t)o->pfx_ld[s], bytes = (size_t)n * KVD * 4;
        float *K = o->pfx_kv[s] + (size_t)2 * il * ld * KVD, *V = K + ld * KVD;
        AC_CU(cudaMemcpyAsync(K + (size_t)P * KVD, d + (size_t)r0 * KVD, bytes, cudaMemcpyDeviceToHost, g->st_dn));
        AC_CU(cudaMemcpyAsync(V + (size_t)P * KVD, d + ((size_t)Tn + r0) * KVD, bytes, cudaMemcpyDeviceToHost,
                              g->st_dn));
    }
    return AC_OK;
}

/* The computed final hidden rows h [Tn][D] into every sequence's rows [P, L) (main stream). */
static int pfx_hidden_back(ac_cuda_model *g, int n_seq, const float *h) {
    const ac_cuda_opts *o = g->pfx_o;
    const int D = g->D;
    for (int s = 0; s < n_seq; s++) {
        const int r0 = g->h_cu[s], n = g->h_cu[s + 1] - r0;
        AC_CU(cudaMemcpyAsync(o->pfx_hid[s] + (size_t)o->pfx_P[s] * D, h + (size_t)r0 * D, (size_t)n * D * 4,
                              cudaMemcpyDeviceToHost, g->st));
    }
    return AC_OK;
}

/* The whole sequences' final hidden rows [T_full][D] (the outputs that read given rows): the given
 * rows uploaded from the caller's buffers, interleaved with the computed ones by h_src. */
static int pfx_hidden_full(ac_cuda_model *g, int n_seq, const float *h) {
    const ac_cuda_opts *o = g->pfx_o;
    const int D = g->D;
    for (int s = 0; s < n_seq; s++) {
        const int P = o->pfx_P[s];
        if (!P) continue;
        float *d = g->d_ph + (size_t)g->h_pcu[s] * D;
        if (g->pc_act && g->pc_how[s]) /* a block's hidden rows (filled at layer 0's stage, same stream) */
            AC_CU(cudaMemcpyAsync(d, (const unsigned char *)g->pc_blk[s] + ac_cu_pcache_hid_off(g, P), (size_t)P * D * 4,
                                  cudaMemcpyDeviceToDevice, g->st_pu));
        else {
            AC_CU(cudaMemcpyAsync(d, o->pfx_hid[s], (size_t)P * D * 4, cudaMemcpyHostToDevice, g->st_pu));
            g->pc_up_last += (size_t)P * D * 4;
        }
    }
    AC_CU(cudaEventRecord(g->ev_ph, g->st_pu));
    AC_CU(cudaStreamWaitEvent(g->st, g->ev_ph, 0));
    return ac_cu_rows_select(g->d_hfull, h, g->d_ph, g->d_src, g->pfx_Tfull, D, g->st);
}

template <typename T> static int layer(ac_cuda_model *g, int il, int Tn, int n_seq, int Lmax, const ac_cuda_opts *o) {
    const cu_layer *c = &g->L[il];
    const int D = g->D, F = g->F;
    const float eps = g->hp.norm_eps;
    T *xb = (T *)g->xb, *qkv = (T *)g->qkv, *hh = (T *)g->hh, *gu = (T *)g->gu;
    const int yt = sizeof(T) == 4; /* outputs of type T: f32 in the f32 mode */
    int rc;
    if (!g->bert) {
        TRY(ac_cu_rmsnorm<T>(xb, g->x, c->n1w, Tn, D, eps, g->st));
        TRY(mark(g, 5));
    }
    if (!g->srv_on) {
        TRY(gemm<T>(g, c->wqkv, xb, qkv, yt, g->QKV, Tn, g->QKV, D, c->bqkv, 0));
        if (!g->bert)
            TRY(ac_cu_rope<T>(qkv, g->QKV, g->H, qkv + g->QD, g->QKV, g->Hkv, g->hd, g->hp.n_rot, g->hp.rope_neox,
                              g->rope_cs, g->d_pos, Tn, g->st));
        if (g->pfx_on) TRY(pfx_copy_back<T>(g, il, Tn, n_seq)); /* K, V rows for the prefix cache's insert */
        TRY(mark(g, 1));
        if (g->pfx_any) AC_CU(cudaStreamWaitEvent(g->st, g->ev_pf[il], 0)); /* this layer's given rows */
        TRY(attention<T>(g, il, 0, n_seq, Lmax, o));
        TRY(mark(g, 2));
    } else {
        TRY(served_layer<T>(g, il, n_seq, o));
    }
    /* bert in bf16 (resid_t): the residual is xb itself (the previous LayerNorm's output); the
       projection writes y = att Wo^T + bo in T to qkv's space (free after attention) and the norm
       adds it: xb = LN(xb + y). Else x (f32) += att Wo^T + bo, then x, xb = LN(x). */
    const int rt = g->bert && g->resid_t && sizeof(T) == 2, last = il == g->hp.n_layer - 1;
    if (rt) TRY(gemm<T>(g, c->wo, g->att, qkv, 0, D, Tn, D, g->QD, c->bo, 0));
    else TRY(gemm<T>(g, c->wo, g->att, g->x, 1, D, Tn, D, g->QD, c->bo, 1));
    TRY(mark(g, 3));
    if (g->bert) {
        if (rt) TRY(ac_cu_add_layernorm<T>(xb, qkv, NULL, c->n1w, c->n1b, Tn, D, eps, g->st));
        else TRY(ac_cu_layernorm<T>(g->x, xb, g->x, c->n1w, c->n1b, Tn, D, eps, g->st));
        TRY(mark(g, 5));
        /* bf16: GELU in the up projection's epilogue (tanh form, see cuda_gemm.h): saves a read and a
           write of [T][F]; f32 (exactness checks): the erf form in its own pass */
        rc = sizeof(T) == 2 ? ac_cu_gemm_run_act(g->gemm, 0, 0, c->wgu, xb, hh, F, Tn, F, D, c->bup, 0, 1)
                            : AC_ERR_UNSUPPORTED;
        if (rc == AC_ERR_UNSUPPORTED) {
            TRY(gemm<T>(g, c->wgu, xb, hh, yt, F, Tn, F, D, c->bup, 0));
            TRY(ac_cu_gelu<T>(hh, (size_t)Tn * F, g->st));
        } else if (rc) {
            return rc;
        }
        if (rt) TRY(gemm<T>(g, c->wdown, hh, qkv, 0, D, Tn, D, F, c->bdown, 0));
        else TRY(gemm<T>(g, c->wdown, hh, g->x, 1, D, Tn, D, F, c->bdown, 1));
        TRY(mark(g, 4));
        /* (resid_t: the last layer also writes x in f32, the hidden rows the outputs read) */
        if (rt) TRY(ac_cu_add_layernorm<T>(xb, qkv, last ? g->x : NULL, c->n2w, c->n2b, Tn, D, eps, g->st));
        else TRY(ac_cu_layernorm<T>(g->x, xb, g->x, c->n2w, c->n2b, Tn, D, eps, g->st));
        TRY(mark(g, 5));
    } else {
        TRY(ac_cu_rmsnorm<T>(xb, g->x, c->n2w, Tn, D, eps, g->st));
        TRY(mark(g, 5));
        TRY(gemm<T>(g, c->wgu, xb, gu, yt, 2 * F, Tn, 2 * F, D, NULL, 0));
        TRY(ac_cu_swiglu<T>(hh, gu, Tn, F, g->st));
        TRY(gemm<T>(g, c->wdown, hh, g->x, 1, D, Tn, D, F, c->bdown, 1));
        TRY(mark(g, 4));
    }
    return AC_OK;
}

/* h [Tn][D]: final hidden rows of the n_seq sequences at offsets cu (device) */
template <typename T>
static int outputs(ac_cuda_model *g, const float *h, const int *cu, int Tn, int n_seq, ac_outputs *out, int pooling) {
    const int D = g->D;
    T *rows = (T *)g->rows;
    int rc;
    g->out_h = h, g->out_T = Tn, g->out_cls = NULL; /* copied to the caller by outputs_copy */
    if (out->pooled) TRY(ac_cu_pool(g->pooled, h, cu, n_seq, D, pooling, out->normalize, g->st));
    if (out->logits) {
        TRY(ac_cu_gather<T>(rows, h, cu, n_seq, D, 1, g->st));
        TRY(gemm<T>(g, g->output, rows, g->logits, 1, g->V, n_seq, g->V, D, NULL, 0));
    }
    if (out->cls) {
        if (g->cls_mean_l2) {
            TRY(ac_cu_pool(g->clsbuf, h, cu, n_seq, D, AC_POOL_MEAN, 1, g->st));
            TRY(ac_cu_convert<T>(rows, g->clsbuf, (size_t)n_seq * D, g->st));
        } else {
            TRY(ac_cu_gather<T>(rows, h, cu, n_seq, D, !g->bert, g->st));
        }
        if (g->has_cls) {
            TRY(gemm<T>(g, g->cls, rows, g->clsbuf, 1, D, n_seq, D, D, NULL, 0));
            TRY(ac_cu_bias_tanh(g->clsbuf, g->cls_b, (size_t)n_seq * D, D, g->st));
            TRY(ac_cu_convert<T>(rows, g->clsbuf, (size_t)n_seq * D, g->st));
        }
        float *res = g->has_cls_out ? g->clsout : g->clsbuf;
        if (g->has_cls_out) TRY(gemm<T>(g, g->cls_out, rows, g->clsout, 1, g->n_cls, n_seq, g->n_cls, D, g->cls_out_b, 0));
        g->out_cls = res;
    }
    return mark(g, 6);
}

/* the outputs' copies to the caller's host buffers (after outputs<T> ran, plainly or in a graph:
   its device buffers outlive the graph, the caller's pointers change from call to call) */
static int outputs_copy(ac_cuda_model *g, ac_outputs *out, int n_seq) {
    const size_t D = g->D;
    if (out->hidden) AC_CU(cudaMemcpyAsync(out->hidden, g->out_h, (size_t)g->out_T * D * 4, cudaMemcpyDeviceToHost, g->st));
    if (out->pooled) AC_CU(cudaMemcpyAsync(out->pooled, g->pooled, (size_t)n_seq * D * 4, cudaMemcpyDeviceToHost, g->st));
    if (out->logits)
        AC_CU(cudaMemcpyAsync(out->logits, g->logits, (size_t)n_seq * g->V * 4, cudaMemcpyDeviceToHost, g->st));
    if (out->cls)
        AC_CU(cudaMemcpyAsync(out->cls, g->out_cls, (size_t)n_seq * g->n_cls * 4, cudaMemcpyDeviceToHost, g->st));
    return AC_OK;
}

/* x (f32; bert: normed, with xb its copy in T) of every row */
template <typename T> static int embed(ac_cuda_model *g, int Tn) {
    int rc;
    const int D = g->D;
    TRY(ac_cu_embed(g->x, g->tok, g->d_tok, g->bert ? g->pos : NULL, g->d_pos, g->bert ? g->type0 : NULL, Tn, D, g->st));
    if (g->bert) TRY(ac_cu_layernorm<T>(g->x, (T *)g->xb, g->x, g->en_w, g->en_b, Tn, D, g->hp.norm_eps, g->st));
    return mark(g, 0);
}

/* embedded: embed<T> already ran (the layer-0 summary before the lookups) */
template <typename T> static int forward(ac_cuda_model *g, int Tn, int n_seq, int Lmax, ac_outputs *out, int pooling,
                                         const ac_cuda_opts *o, int embedded) {
    int rc;
    const int D = g->D;
    if (!embedded) TRY(embed<T>(g, Tn));
    TRY(stage_layer(g, 0)); /* each layer's maps are staged while the layer before it runs */
    TRY(pfx_stage(g, 0, n_seq)); /* the same for given prefix rows */
    for (int il = 0; il < g->hp.n_layer; il++) {
        TRY(stage_layer(g, il + 1));
        TRY(pfx_stage(g, il + 1, n_seq));
        TRY(layer<T>(g, il, Tn, n_seq, Lmax, o));
    }
    if (!g->bert) {
        TRY(ac_cu_rmsnorm<float>(g->h, g->x, g->out_norm, Tn, D, g->hp.norm_eps, g->st));
        TRY(mark(g, 5));
    }
    const float *h = g->bert ? g->x : g->h;
    if (g->pfx_on) TRY(pfx_hidden_back(g, n_seq, h)); /* the computed rows' final hidden states, for insert */
    if (g->pfx_any && g->pfx_full) { /* outputs over the whole sequences, given rows included */
        TRY(pfx_hidden_full(g, n_seq, h));
        return outputs<T>(g, g->d_hfull, g->d_fcu, g->pfx_Tfull, n_seq, out, pooling);
    }
    /* (given rows not needed: the last row of each sequence is the last computed one) */
    return outputs<T>(g, h, g->d_cu, Tn, n_seq, out, pooling);
}

template <typename T> static int lm_head(ac_cuda_model *g, const float *h, int n, float *logits) {
    int rc;
    AC_CU(cudaMemcpyAsync(g->clsbuf, h, (size_t)n * g->D * 4, cudaMemcpyHostToDevice, g->st));
    TRY(ac_cu_convert<T>((T *)g->rows, g->clsbuf, (size_t)n * g->D, g->st));
    TRY(gemm<T>(g, g->output, g->rows, g->logits, 1, g->V, n, g->V, g->D, NULL, 0));
    AC_CU(cudaMemcpyAsync(logits, g->logits, (size_t)n * g->V * 4, cudaMemcpyDeviceToHost, g->st));
    return AC_OK;
}

int ac_cuda_lm_head(ac_cuda_model *g, const float *h, int n, float *logits) {
    if (!g || !h || n <= 0 || !logits) return ac_err(AC_ERR_ARG, "ac_cuda_lm_head: invalid argument");
    if (!g->has_output) return ac_err(AC_ERR_UNSUPPORTED, "model has no LM head (no logits)");
    int rc = AC_OK;
    for (int i = 0; i < n && rc == AC_OK; i += 256) { /* chunks of rows: the workspace's sequence slots */
        const int k = n - i < 256 ? n - i : 256;
        if ((rc = ws_reserve(g, g->cap_T > 0 ? g->cap_T : 1, k))) return rc;
        rc = g->prec == AC_CUDA_F32 ? lm_head<float>(g, h + (size_t)i * g->D, k, logits + (size_t)i * g->V)
                                    : lm_head<bf16>(g, h + (size_t)i * g->D, k, logits + (size_t)i * g->V);
        cudaError_t e = cudaStreamSynchronize(g->st);
        if (rc == AC_OK && e != cudaSuccess) rc = ac_err(AC_ERR_INTERNAL, "CUDA LM head: %s", cudaGetErrorString(e));
    }
    return rc;
}

/* The device prefix cache's part of a call with given rows (pfx_res or pfx_keep): each sequence's
 * block — a resident one serves its rows (how 1), a new one is filled from its host rows (how 2) —
 * or none (how 0: host rows, not kept). Before any of the call's work is enqueued (inserts may evict:
 * cudaFree). */
static int pcache_plan(ac_cuda_model *g, const ac_seq *seqs, int n_seq, const ac_cuda_opts *o, int begun) {
    if (n_seq > g->pc_cap) {
        unsigned char *how = (unsigned char *)realloc(g->pc_how, (size_t)n_seq);
        if (how) g->pc_how = how;
        void **blk = how ? (void **)realloc(g->pc_blk, (size_t)n_seq * sizeof *blk) : NULL;
        if (blk) g->pc_blk = blk;
        if (!how || !blk) return ac_err(AC_ERR_NOMEM, "ac_cuda_forward: out of memory");
        g->pc_cap = n_seq;
    }
    g->pc_begun = begun; /* the context's finds began this call (their blocks pinned): not a new one */
    ac_cu_pcache_begin(g);
    g->pc_begun = 0;
    g->pc_act = 1;
    for (int s = 0; s < n_seq; s++) {
        const int P = o->pfx_P[s];
        g->pc_how[s] = 0, g->pc_blk[s] = NULL;
        if (!P) continue;
        /* resident: found by the context this call, or made by an earlier sequence of it (filled before
           it is read: pfx_stage), or kept from an earlier call (its bytes: these tokens' rows) */
        void *b = ac_cu_pcache_peek(g, seqs[s].tokens, P);
        if (b) {
            g->pc_how[s] = 1, g->pc_blk[s] = b, g->pc_hits_last++;
            continue;
        }
        if (o->pfx_res && o->pfx_res[s])
            return ac_err(AC_ERR_ARG, "ac_cuda_forward: sequence %d: its %d given rows are not resident in the device "
                                      "prefix cache", s, P);
        if (o->pfx_keep && (b = ac_cu_pcache_insert(g, seqs[s].tokens, P))) g->pc_how[s] = 2, g->pc_blk[s] = b;
    }
    return AC_OK;
}

/* ---- CUDA graphs ---------------------------------------------------------------------------------
 * Once its inputs are in the device buffers (tokens, positions, offsets: copied before), the exact
 * path's work from the embeddings to the outputs depends only on (rows, sequences, longest sequence,
 * outputs asked): the same launches with the same arguments. Short inputs spend more time launching
 * ~8 kernels a layer than running them, so the second call of a shape is captured into a graph and
 * later calls of that shape launch the graph (one launch). The first call of a shape runs plainly
 * (it also makes every lazily created resource: cuBLASLt plans, kernel attributes), so the capture
 * only records. Not with profiling (events per stage), served or recorded maps, given prefix rows,
 * the materialised kernel or the f32 mode: those run plainly. A reallocated buffer (a larger call)
 * makes the graphs stale (ws_gen); they are captured again. 32 shapes, least recently used replaced. */
static int graph_key_outk(const ac_outputs *out, int pooling, const ac_cuda_opts *o) {
    return (out->hidden ? 1 : 0) | (out->pooled ? 2 : 0) | (out->logits ? 4 : 0) | (out->cls ? 8 : 0) |
           (out->normalize ? 16 : 0) | (pooling & 7) << 5 | ((o ? o->attn_variant : 0) & 15) << 8;
}

static int graphable(const ac_cuda_model *g, const ac_cuda_opts *o) {
    return !g->graphs_off && !g->profile && g->prec != AC_CUDA_F32 && !use_materialised(g, o) &&
           !(o && (o->record || o->serve || o->serve_site || o->summary > 0 || o->pfx_P));
}

/* the entry of this shape (made in state 0 when new, replacing the least recently used) */
static cu_graph *graph_entry(ac_cuda_model *g, int Tn, int n_seq, int Lq, int outk) {
    cu_graph *lru = NULL; /* a free entry, else the least recently used */
    g->graph_clock++;
    for (int i = 0; i < AC_CU_NGRAPH; i++) {
        cu_graph *e = &g->graphs[i];
        if (e->state != 0 && e->Tn == Tn && e->n_seq == n_seq && e->Lq == Lq && e->outk == outk) {
            e->used = g->graph_clock;
            return e;
        }
        if (!lru || (lru->state != 0 && (e->state == 0 || e->used < lru->used))) lru = e;
    }
    if (lru->state == 2) cudaGraphExecDestroy(lru->exec);
    memset(lru, 0, sizeof *lru);
    lru->Tn = Tn, lru->n_seq = n_seq, lru->Lq = Lq, lru->outk = outk, lru->used = g->graph_clock;
    return lru;
}

/* run the forward of entry e: launch its graph, or capture it (second sight) and launch, or run plainly */
template <typename T>
static int graph_forward(ac_cuda_model *g, cu_graph *e, int Tn, int n_seq, int Lq, ac_outputs *out, int pooling,
                         const ac_cuda_opts *o) {
    if (e->state == 2 && e->gen != g->ws_gen) { /* buffers moved: capture again */
        cudaGraphExecDestroy(e->exec);
        e->state = 1;
    }
    if (e->state == 2) {
        g->graph_last = 2, g->graph_replays++;
        g->out_h = e->out_h, g->out_T = e->out_T, g->out_cls = e->out_cls; /* outputs() does not run on the host */
        AC_CU(cudaGraphLaunch(e->exec, g->st));
        return AC_OK;
    }
    if (e->state == 1) {
        cudaGraph_t gr = NULL;
        if (cudaStreamBeginCapture(g->st, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
            const int rc = forward<T>(g, Tn, n_seq, Lq, out, pooling, o, 0);
            const cudaError_t ec = cudaStreamEndCapture(g->st, &gr);
            cudaGraphExec_t ex = NULL;
            if (!rc && ec == cudaSuccess && gr && cudaGraphInstantiate(&ex, gr, 0) == cudaSuccess) {
                cudaGraphDestroy(gr);
                e->exec = ex, e->state = 2, e->gen = g->ws_gen;
                e->out_h = g->out_h, e->out_T = g->out_T, e->out_cls = g->out_cls;
                g->graph_last = 1, g->graph_captures++;
                AC_CU(cudaGraphLaunch(e->exec, g->st));
                return AC_OK;
            }
            if (gr) cudaGraphDestroy(gr);
        }
        cudaGetLastError(); /* the capture's failure is not the call's: run it plainly, never capture again */
        e->state = -1;
    } else if (e->state == 0) {
        e->state = 1;
    }
    g->graph_last = 0;
    return forward<T>(g, Tn, n_seq, Lq, out, pooling, o, 0);
}

void ac_cuda_set_graphs(ac_cuda_model *g, int on) {
    if (!g) return;
    g->graphs_off = !on;
}

void ac_cuda_graph_stats(const ac_cuda_model *g, int *last, long long *captures, long long *replays) {
    if (last) *last = g ? g->graph_last : 0;
    if (captures) *captures = g ? g->graph_captures : 0;
    if (replays) *replays = g ? g->graph_replays : 0;
}

int ac_cuda_forward(ac_cuda_model *g, const ac_seq *seqs, int n_seq, ac_outputs *out, const ac_cuda_opts *o) {
    if (!g || !seqs || !out || n_seq <= 0) return ac_err(AC_ERR_ARG, "ac_cuda_forward: invalid argument");
    const int pc_begun = g->pc_begun;
    g->pc_begun = 0; /* a call begun by ac_cuda_prefix_cache_find ends with this one (any return) */
    g->pc_up_last = 0, g->pc_hits_last = 0, g->pc_act = 0;
    const int limit = g->hp.n_ctx_train > 0 ? g->hp.n_ctx_train : (1 << 20);
    int64_t T = 0;
    int Lmax = 0, rc;
    for (int s = 0; s < n_seq; s++) {
        const ac_seq *q = &seqs[s];
        if (q->n_tokens <= 0) return ac_err(AC_ERR_INPUT, "sequence %d is empty", s);
        if (!q->tokens) return ac_err(AC_ERR_ARG, "sequence %d: NULL tokens", s);
        if (q->n_tokens > limit)
            return ac_err(AC_ERR_INPUT, "input of %d tokens exceeds the limit of %d tokens (sequence %d)", q->n_tokens,
                          limit, s);
        for (int i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= g->V)
                return ac_err(AC_ERR_INPUT, "token id %d at position %d of sequence %d is out of range [0, %d)",
                              (int)q->tokens[i], i, s, g->V);
        T += q->n_tokens;
        if (q->n_tokens > Lmax) Lmax = q->n_tokens;
        if (T > (1 << 28)) return ac_err(AC_ERR_INPUT, "batch of more than 2^28 tokens");
    }
    if (out->logits && !g->has_output) return ac_err(AC_ERR_UNSUPPORTED, "model has no LM head (no logits)");
    if (out->cls && !g->n_cls) return ac_err(AC_ERR_UNSUPPORTED, "model has no classifier head");
    const int pooling = out->pooling == AC_POOL_DEFAULT ? g->hp.pooling : out->pooling;
    if (out->pooled && (pooling < AC_POOL_MEAN || pooling > AC_POOL_LAST))
        return ac_err(AC_ERR_ARG, "pooled output requested with pooling %d", out->pooling);
    /* given prefix rows: sequence s computes its rows [P, L) only */
    g->pfx_on = g->pfx_any = g->pfx_full = 0, g->pfx_o = NULL;
    const int pfx = o && o->pfx_P;
    int64_t Tc = T, ptot = 0; /* computed rows, given rows */
    int Lq = Lmax;            /* most query rows of a sequence */
    if (pfx) {
        if (g->bert || !g->hp.causal)
            return ac_err(AC_ERR_UNSUPPORTED, "ac_cuda_forward: prefix rows need a causal model (decoder)");
        if (o->serve || o->record)
            return ac_err(AC_ERR_ARG, "ac_cuda_forward: prefix rows cannot be combined with serve (use serve_site) or "
                                      "recorded maps");
        if (o->serve_site && o->summary > 0)
            return ac_err(AC_ERR_ARG, "ac_cuda_forward: the layer-0 summary needs every row's states: not with given "
                                      "prefix rows (pass summary 0)");
        if (!o->pfx_kv || !o->pfx_hid || !o->pfx_ld) return ac_err(AC_ERR_ARG, "ac_cuda_forward: prefix rows without buffers");
        Lq = 0;
        for (int s = 0; s < n_seq; s++) {
            const int P = o->pfx_P[s], L = seqs[s].n_tokens;
            if (P < 0 || P >= L || !o->pfx_kv[s] || !o->pfx_hid[s] || o->pfx_ld[s] < L)
                return ac_err(AC_ERR_ARG, "ac_cuda_forward: sequence %d: %d given rows of %d (buffers %p/%p, %d rows)", s,
                              P, L, (void *)o->pfx_kv[s], (void *)o->pfx_hid[s], o->pfx_ld[s]);
            ptot += P;
            Lq = L - P > Lq ? L - P : Lq;
        }
        Tc = T - ptot;
        g->pfx_on = 1, g->pfx_any = ptot > 0, g->pfx_o = o;
        g->pfx_full = out->hidden || (out->pooled && pooling != AC_POOL_LAST) || (out->cls && g->cls_mean_l2);
        g->pfx_tot = (int)ptot, g->pfx_Tfull = (int)T;
    }
    const int Tn = (int)Tc;
    if ((rc = ws_reserve(g, Tn, n_seq))) return rc;
    if (!g->bert && (rc = rope_reserve(g, Lmax))) return rc;
    if (pfx && (n_seq + 1 > g->cap_pS || (int)T > g->cap_pF)) { /* offsets and row sources (host, device) */
        const int S1 = n_seq + 1 > g->cap_pS ? n_seq + 1 : g->cap_pS, F = (int)T > g->cap_pF ? (int)T : g->cap_pF;
        free(g->h_pcu), free(g->h_fcu), free(g->h_src);
        cudaFree(g->d_pcu), cudaFree(g->d_fcu), cudaFree(g->d_src);
        g->d_pcu = g->d_fcu = g->d_src = NULL, g->cap_pS = g->cap_pF = 0;
        g->h_pcu = (int *)malloc((size_t)S1 * 4), g->h_fcu = (int *)malloc((size_t)S1 * 4);
        g->h_src = (int *)malloc((size_t)F * 4);
        if (!g->h_pcu || !g->h_fcu || !g->h_src) return ac_err(AC_ERR_NOMEM, "ac_cuda_forward: out of memory");
        if ((rc = DMALLOC(g->d_pcu, (size_t)S1 * 4)) || (rc = DMALLOC(g->d_fcu, (size_t)S1 * 4)) ||
            (rc = DMALLOC(g->d_src, (size_t)F * 4)))
            return rc;
        g->cap_pS = S1, g->cap_pF = F;
    }
    long long poff = 0;
    for (int s = 0, r = 0, rp = 0, rf = 0; s < n_seq; s++) {
        const int L = seqs[s].n_tokens, P = pfx ? o->pfx_P[s] : 0;
        g->h_cu[s] = r;
        g->h_poff[s] = poff;
        poff += (long long)g->H * (L - P) * L; /* materialised maps [H][L-P][L] */
        if (pfx) {
            g->h_pcu[s] = rp, g->h_fcu[s] = rf;
            for (int t = 0; t < L; t++, rf++) g->h_src[rf] = t < P ? -1 - (rp + t) : r + t - P;
            rp += P;
        }
        for (int t = P; t < L; t++, r++) g->h_tok[r] = seqs[s].tokens[t], g->h_pos[r] = t;
    }
    g->h_cu[n_seq] = Tn;
    if (pfx) {
        g->h_pcu[n_seq] = (int)ptot, g->h_fcu[n_seq] = (int)T;
        if ((rc = pfx_reserve(g, Tn))) return rc;
    }
    if (use_materialised(g, o) && (size_t)poff > g->cap_P) {
        cudaFree(g->P);
        g->P = NULL;
        g->cap_P = 0;
        if ((rc = DMALLOC(g->P, (size_t)poff * 4))) return rc;
        g->cap_P = (size_t)poff;
    }
    AC_CU(cudaEventRecord(g->t0, g->st)); /* the token upload counts */
    AC_CU(cudaMemcpyAsync(g->d_tok, g->h_tok, (size_t)Tn * 4, cudaMemcpyHostToDevice, g->st));
    AC_CU(cudaMemcpyAsync(g->d_pos, g->h_pos, (size_t)Tn * 4, cudaMemcpyHostToDevice, g->st));
    AC_CU(cudaMemcpyAsync(g->d_cu, g->h_cu, (size_t)(n_seq + 1) * 4, cudaMemcpyHostToDevice, g->st));
    AC_CU(cudaMemcpyAsync(g->d_poff, g->h_poff, (size_t)n_seq * 8, cudaMemcpyHostToDevice, g->st));
    if (pfx) {
        AC_CU(cudaMemcpyAsync(g->d_pcu, g->h_pcu, (size_t)(n_seq + 1) * 4, cudaMemcpyHostToDevice, g->st));
        AC_CU(cudaMemcpyAsync(g->d_fcu, g->h_fcu, (size_t)(n_seq + 1) * 4, cudaMemcpyHostToDevice, g->st));
        AC_CU(cudaMemcpyAsync(g->d_src, g->h_src, (size_t)T * 4, cudaMemcpyHostToDevice, g->st));
    }
    g->n_ev = 0;
    if ((rc = mark(g, -1))) return rc;
    /* the device prefix cache: blocks looked up and made (from here on every failure drops the made ones) */
    const int pc_this = pfx && (o->pfx_res || o->pfx_keep);
    rc = pc_this ? pcache_plan(g, seqs, n_seq, o, pc_begun) : AC_OK;
    /* the summaries the lookups key on (asked by serve_plan's first sites): embeddings first */
    g->sum_n = 0;
    const int summ = o && o->summary > 0 && (o->serve || o->serve_site);
    if (!rc && summ) rc = g->prec == AC_CUDA_F32 ? embed<float>(g, Tn) : embed<bf16>(g, Tn);
    if (!rc && summ) rc = ac_cu_layer0_summary(g, Tn, n_seq, o->summary);
    if (!rc) rc = serve_plan(g, seqs, n_seq, o);
    g->graph_last = 0;
    cu_graph *ge = !rc && !pc_this && !summ && graphable(g, o)
                       ? graph_entry(g, Tn, n_seq, Lq, graph_key_outk(out, pooling, o)) : NULL;
    if (!rc && ge) rc = graph_forward<bf16>(g, ge, Tn, n_seq, Lq, out, pooling, o);
    else if (!rc)
        rc = g->prec == AC_CUDA_F32 ? forward<float>(g, Tn, n_seq, Lq, out, pooling, o, summ)
                                    : forward<bf16>(g, Tn, n_seq, Lq, out, pooling, o, summ);
    if (!rc) rc = outputs_copy(g, out, n_seq);
    if (rc == AC_OK) AC_CU(cudaEventRecord(g->t1, g->st));
    cudaError_t e = cudaStreamSynchronize(g->st);
    if (g->st_up) { /* no upload outlives the call (its staging buffer is reused by the next) */
        cudaError_t e2 = cudaStreamSynchronize(g->st_up);
        if (e == cudaSuccess) e = e2;
    }
    for (int i = 0; i < 2; i++) { /* the same for given rows and copies back */
        cudaStream_t x = i ? g->st_dn : g->st_pu;
        cudaError_t e2 = x ? cudaStreamSynchronize(x) : cudaSuccess;
        if (e == cudaSuccess) e = e2;
    }
    /* a failed call may not have uploaded the blocks it made resident in the device map cache */
    if ((rc || e != cudaSuccess) && g->lru_on) ac_map_lru_abort_call(&g->lru);
    if ((rc || e != cudaSuccess) && pc_this) ac_cu_pcache_abort(g); /* the same for the device prefix cache */
    if (pc_this) g->pc_up_total += g->pc_up_last;
    if (rc) return rc;
    if (e != cudaSuccess) return ac_err(AC_ERR_INTERNAL, "CUDA forward: %s", cudaGetErrorString(e));
    if (cudaEventElapsedTime(&g->last_ms, g->t0, g->t1) != cudaSuccess) g->last_ms = 0;
    memset(g->prof, 0, sizeof g->prof);
    for (int i = 1; i < g->n_ev; i++) {
        float ms = 0;
        if (g->ev_stage[i] >= 0 && cudaEventElapsedTime(&ms, g->ev[i - 1], g->ev[i]) == cudaSuccess)
            g->prof[g->ev_stage[i]] += ms;
    }
    return AC_OK;
}
