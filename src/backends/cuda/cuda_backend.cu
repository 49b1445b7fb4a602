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
 * type T (bf16 or f32). Wq, Wk, Wv are concatenated into one matrix (one GEMM),
 * as are Wgate and Wup. */
#include "cuda_backend.h"
#include "cuda_attn.h"
#include "cuda_gemm.h"
#include "cuda_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cu_layer {
    void *wqkv, *wo, *wgu, *wdown; /* T: [QKV][D], [D][QD], [2F or F][D], [D][F] */
    float *bqkv, *bo, *bup, *bdown; /* [QKV], [D], [F], [D] or NULL */
    float *n1w, *n1b, *n2w, *n2b;   /* [D] */
} cu_layer;

enum { EV_CAP = 1024 };

struct ac_cuda_model {
    const ac_model *m; /* NULL for random models */
    int arch, prec, bert;
    ac_hparams hp;
    int D, H, Hkv, hd, QD, KVD, QKV, F, V;
    int has_output, has_cls, has_cls_out, n_cls, cls_mean_l2;

    float *tok;                        /* [V][D] f32 */
    float *pos, *type0, *en_w, *en_b;  /* bert: [n_ctx][D], [D], [D], [D] */
    float *out_norm;                   /* [D] decoders */
    void *output;                      /* T [V][D] LM head or NULL */
    void *cls, *cls_out;               /* T [D][D], [n_cls][D] */
    float *cls_b, *cls_out_b;
    cu_layer *L;

    float *rope_cs; /* [rope_L][n_rot/2][2] */
    int rope_L;

    cudaStream_t st;
    ac_cu_gemm *gemm;

    /* workspace (capacity cap_T rows, cap_S sequences) */
    int cap_T, cap_S;
    float *x, *h;
    void *xb, *qkv, *att, *gu, *hh, *rows;
    float *pooled, *logits, *clsbuf, *clsout;
    int *d_tok, *d_pos, *d_cu;
    long long *d_poff;
    float *P;
    size_t cap_P;
    int *h_tok, *h_pos, *h_cu;
    long long *h_poff;
    float *h_P;
    size_t cap_hP;

    int profile;
    cudaEvent_t ev[EV_CAP];
    int ev_stage[EV_CAP], n_ev, ev_made;
    float prof[AC_CUDA_PROF_N];
    cudaEvent_t t0, t1; /* first and last operation of a forward call */
    float last_ms;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static int dmalloc(void **p, size_t bytes) {
    *p = NULL;
    if (!bytes) return AC_OK;
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return ac_err(AC_ERR_NOMEM, "CUDA: cannot allocate %zu MiB of device memory", bytes >> 20);
    }
    return AC_OK;
}
#define DMALLOC(ptr, bytes) dmalloc((void **)&(ptr), (bytes))

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

static size_t tsize(int prec) { return prec == AC_CUDA_F32 ? 4 : 2; }

/* Host f32 [n] -> device buffer of the precision's type. */
static int upload_t(void *dst, const float *src, size_t n, int prec) {
    if (prec == AC_CUDA_F32) {
        AC_CU(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
        return AC_OK;
    }
    uint16_t *tmp = (uint16_t *)malloc(n * 2);
    if (!tmp) return AC_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) tmp[i] = ac_host_f32_to_bf16(src[i]);
    cudaError_t e = cudaMemcpy(dst, tmp, n * 2, cudaMemcpyHostToDevice);
    free(tmp);
    if (e != cudaSuccess) return ac_err(AC_ERR_INTERNAL, "CUDA: weight upload: %s", cudaGetErrorString(e));
    return AC_OK;
}

static int upload_f32(float **dst, const float *src, size_t n) {
    *dst = NULL;
    if (!src) return AC_OK;
    int rc = DMALLOC(*dst, n * 4);
    if (rc) return rc;
    AC_CU(cudaMemcpy(*dst, src, n * 4, cudaMemcpyHostToDevice));
    return AC_OK;
}

/* rows of W as f32 into dst [n_out][n_in] */
static void mat_f32(const ac_mat *W, float *dst) {
    if (W->f32) {
        memcpy(dst, W->f32, (size_t)W->n_out * W->n_in * 4);
        return;
    }
    for (int r = 0; r < W->n_out; r++) ac_row_to_f32(W->type, W->data, W->row_bytes, r, W->n_in, dst + (size_t)r * W->n_in);
}

/* Device matrix [sum n_out][n_in] of the precision's type from 1..3 matrices stacked by rows. */
static int upload_mats(void **dst, const ac_mat *const *W, int n, int prec) {
    size_t rows = 0;
    const int K = W[0]->n_in;
    for (int i = 0; i < n; i++) {
        if (W[i]->n_in != K) return ac_err(AC_ERR_FORMAT, "%s: %d columns, expected %d", W[i]->name, W[i]->n_in, K);
        rows += (size_t)W[i]->n_out;
    }
    float *tmp = (float *)malloc(rows * K * 4);
    if (!tmp) return AC_ERR_NOMEM;
    size_t r = 0;
    for (int i = 0; i < n; i++) {
        mat_f32(W[i], tmp + r * K);
        r += (size_t)W[i]->n_out;
    }
    int rc = dmalloc(dst, rows * K * tsize(prec));
    if (!rc) rc = upload_t(*dst, tmp, rows * K, prec);
    free(tmp);
    return rc;
}

/* Concatenated biases (absent parts as zeros); NULL when all are absent. */
static int upload_bias3(float **dst, const float *b0, int n0, const float *b1, int n1, const float *b2, int n2) {
    *dst = NULL;
    if (!b0 && !b1 && !b2) return AC_OK;
    float *tmp = (float *)calloc((size_t)n0 + n1 + n2, 4);
    if (!tmp) return AC_ERR_NOMEM;
    if (b0) memcpy(tmp, b0, (size_t)n0 * 4);
    if (b1) memcpy(tmp + n0, b1, (size_t)n1 * 4);
    if (b2) memcpy(tmp + n0 + n1, b2, (size_t)n2 * 4);
    int rc = upload_f32(dst, tmp, (size_t)n0 + n1 + n2);
    free(tmp);
    return rc;
}

/* A gguf tensor [rows][n] of any readable type as device f32. */
static int upload_tensor_f32(float **dst, const gguf_tensor *t) {
    *dst = NULL;
    if (!t) return AC_OK;
    const int64_t n = t->ne[0], rows = t->ne[1];
    float *tmp = (float *)malloc((size_t)(n * rows) * 4);
    if (!tmp) return AC_ERR_NOMEM;
    const size_t rb = ggml_row_bytes(t->type, n);
    for (int64_t r = 0; r < rows; r++) ac_row_to_f32(t->type, t->data, rb, r, n, tmp + r * n);
    int rc = upload_f32(dst, tmp, (size_t)(n * rows));
    free(tmp);
    return rc;
}

static int shapes(ac_cuda_model *g) {
    const ac_hparams *hp = &g->hp;
    g->D = hp->n_embd, g->H = hp->n_head, g->Hkv = hp->n_head_kv, g->hd = hp->head_dim, g->F = hp->n_ff;
    g->V = hp->n_vocab;
    g->QD = g->H * g->hd, g->KVD = g->Hkv * g->hd, g->QKV = g->QD + 2 * g->KVD;
    g->bert = g->arch == AC_ARCH_BERT;
    if (g->D <= 0 || g->H <= 0 || g->Hkv <= 0 || g->H % g->Hkv || g->hd <= 0 || g->F <= 0 || hp->n_layer <= 0)
        return ac_err(AC_ERR_UNSUPPORTED, "CUDA backend: unsupported shape (D %d, heads %d/%d, head dim %d)", g->D,
                      g->H, g->Hkv, g->hd);
    return AC_OK;
}

static int common_init(ac_cuda_model *g) {
    if (!ac_cuda_available()) return ac_err(AC_ERR_UNSUPPORTED, "no CUDA device");
    AC_CU(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    AC_CU(cudaEventCreate(&g->t0));
    AC_CU(cudaEventCreate(&g->t1));
    int rc = ac_cu_gemm_new(g->st, &g->gemm);
    if (rc) return rc;
    g->L = (cu_layer *)calloc((size_t)g->hp.n_layer, sizeof *g->L);
    return g->L ? AC_OK : AC_ERR_NOMEM;
}

int ac_cuda_model_upload(const ac_model *m, int prec, ac_cuda_model **out) {
    if (!m || !out || (prec != AC_CUDA_BF16 && prec != AC_CUDA_F32))
        return ac_err(AC_ERR_ARG, "ac_cuda_model_upload: invalid argument");
    *out = NULL;
    if (m->vocab_only) return ac_err(AC_ERR_ARG, "model was loaded vocab-only (no weights)");
    ac_cuda_model *g = (ac_cuda_model *)calloc(1, sizeof *g);
    if (!g) return AC_ERR_NOMEM;
    g->m = m, g->arch = m->info.arch, g->prec = prec, g->hp = m->hp;
    int rc = shapes(g);
    if (!rc) rc = common_init(g);
    const int D = g->D;
    if (!rc) rc = upload_tensor_f32(&g->tok, m->tok_embd);
    if (!rc && g->bert) {
        if (!m->pos_embd || !m->embd_norm_w) rc = ac_err(AC_ERR_FORMAT, "bert model without position embeddings");
        if (!rc) rc = upload_tensor_f32(&g->pos, m->pos_embd);
        if (!rc) rc = upload_f32(&g->type0, m->type_embd0, D);
        if (!rc) rc = upload_f32(&g->en_w, m->embd_norm_w, D);
        if (!rc) rc = upload_f32(&g->en_b, m->embd_norm_b, D);
    }
    if (!rc && !g->bert) rc = upload_f32(&g->out_norm, m->out_norm_w, D);
    for (int il = 0; il < g->hp.n_layer && !rc; il++) {
        const ac_layer *l = &m->layers[il];
        cu_layer *c = &g->L[il];
        const ac_mat *qkv[3] = {&l->wq, &l->wk, &l->wv};
        if ((rc = upload_mats(&c->wqkv, qkv, 3, prec))) break;
        if ((rc = upload_bias3(&c->bqkv, l->bq, g->QD, l->bk, g->KVD, l->bv, g->KVD))) break;
        const ac_mat *wo[1] = {&l->wo};
        if ((rc = upload_mats(&c->wo, wo, 1, prec)) || (rc = upload_f32(&c->bo, l->bo, D))) break;
        if (g->bert) {
            const ac_mat *up[1] = {&l->w_up};
            if ((rc = upload_mats(&c->wgu, up, 1, prec)) || (rc = upload_f32(&c->bup, l->b_up, g->F))) break;
        } else {
            const ac_mat *gu[2] = {&l->w_gate, &l->w_up};
            if ((rc = upload_mats(&c->wgu, gu, 2, prec))) break;
        }
        const ac_mat *dn[1] = {&l->w_down};
        if ((rc = upload_mats(&c->wdown, dn, 1, prec)) || (rc = upload_f32(&c->bdown, l->b_down, D))) break;
        if ((rc = upload_f32(&c->n1w, l->norm1_w, D)) || (rc = upload_f32(&c->n1b, l->norm1_b, D)) ||
            (rc = upload_f32(&c->n2w, l->norm2_w, D)) || (rc = upload_f32(&c->n2b, l->norm2_b, D)))
            break;
    }
    if (!rc && m->has_output) {
        const ac_mat *o[1] = {&m->output};
        g->has_output = 1;
        rc = upload_mats(&g->output, o, 1, prec);
    }
    if (!rc && m->info.n_cls_out) {
        g->has_cls = m->has_cls, g->has_cls_out = m->has_cls_out, g->n_cls = m->info.n_cls_out;
        g->cls_mean_l2 = m->cls_mean_l2;
        const ac_mat *c1[1] = {&m->cls}, *c2[1] = {&m->cls_out};
        if (g->has_cls && !(rc = upload_mats(&g->cls, c1, 1, prec))) rc = upload_f32(&g->cls_b, m->cls_b, D);
        if (!rc && g->has_cls_out && !(rc = upload_mats(&g->cls_out, c2, 1, prec)))
            rc = upload_f32(&g->cls_out_b, m->cls_out_b, g->n_cls);
    }
    if (rc) {
        ac_cuda_model_free(g);
        return rc;
    }
    *out = g;
    return AC_OK;
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
    int rc = dmalloc(p, n * (f32 ? 4 : 2));
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
    int rc = shapes(g);
    if (!rc) rc = common_init(g);
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

void ac_cuda_model_free(ac_cuda_model *g) {
    if (!g) return;
    if (g->st) cudaStreamSynchronize(g->st);
    ws_free(g);
    cudaFree(g->P);
    free(g->h_P);
    cudaFree(g->tok), cudaFree(g->pos), cudaFree(g->type0), cudaFree(g->en_w), cudaFree(g->en_b);
    cudaFree(g->out_norm), cudaFree(g->output), cudaFree(g->cls), cudaFree(g->cls_out), cudaFree(g->cls_b);
    cudaFree(g->cls_out_b), cudaFree(g->rope_cs);
    if (g->L)
        for (int i = 0; i < g->hp.n_layer; i++) {
            cu_layer *c = &g->L[i];
            cudaFree(c->wqkv), cudaFree(c->wo), cudaFree(c->wgu), cudaFree(c->wdown);
            cudaFree(c->bqkv), cudaFree(c->bo), cudaFree(c->bup), cudaFree(c->bdown);
            cudaFree(c->n1w), cudaFree(c->n1b), cudaFree(c->n2w), cudaFree(c->n2b);
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
    const size_t ts = tsize(g->prec), D = g->D, F = g->F, t = (size_t)T, s = (size_t)S;
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
    int rc = upload_f32(&g->rope_cs, cs, (size_t)L * half * 2);
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

/* attention of one layer: qkv -> att */
template <typename T>
static int attention(ac_cuda_model *g, int il, int T_rows, int n_seq, int Lmax, const ac_cuda_opts *o) {
    int rc;
    T *qkv = (T *)g->qkv;
    ac_cu_attn a = {n_seq, Lmax, g->d_cu, g->H, g->Hkv, g->hd, g->QKV, g->QKV, g->QD, g->hp.causal,
                    1.0f / sqrtf((float)g->hd)};
    (void)T_rows;
    const int mat = sizeof(T) == 4 || (o && (o->materialised || o->record));
    if (!mat) return ac_cu_flash_attn(&a, (const bf16 *)qkv, (const bf16 *)qkv + g->QD, (const bf16 *)qkv + g->QD + g->KVD,
                                      (bf16 *)g->att, o ? o->attn_warps : 0, g->st);
    TRY(ac_cu_attn_materialised<T>(&a, qkv, qkv + g->QD, qkv + g->QD + g->KVD, (T *)g->att, g->P, g->d_poff, g->st));
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

template <typename T> static int layer(ac_cuda_model *g, int il, int Tn, int n_seq, int Lmax, const ac_cuda_opts *o) {
    const cu_layer *c = &g->L[il];
    const int D = g->D, F = g->F;
    const float eps = g->hp.norm_eps;
    T *xb = (T *)g->xb, *qkv = (T *)g->qkv, *hh = (T *)g->hh, *gu = (T *)g->gu;
    int rc;
    if (!g->bert) {
        TRY(ac_cu_rmsnorm<T>(xb, g->x, c->n1w, Tn, D, eps, g->st));
        TRY(mark(g, 5));
    }
    TRY(gemm<T>(g, c->wqkv, xb, qkv, 0, g->QKV, Tn, g->QKV, D, c->bqkv, 0));
    if (!g->bert)
        TRY(ac_cu_rope<T>(qkv, g->QKV, g->H, qkv + g->QD, g->QKV, g->Hkv, g->hd, g->hp.n_rot, g->hp.rope_neox,
                          g->rope_cs, g->d_pos, Tn, g->st));
    TRY(mark(g, 1));
    TRY(attention<T>(g, il, Tn, n_seq, Lmax, o));
    TRY(mark(g, 2));
    TRY(gemm<T>(g, c->wo, g->att, g->x, 1, D, Tn, D, g->QD, c->bo, 1));
    TRY(mark(g, 3));
    if (g->bert) {
        TRY(ac_cu_layernorm<T>(g->x, xb, g->x, c->n1w, c->n1b, Tn, D, eps, g->st));
        TRY(mark(g, 5));
        TRY(gemm<T>(g, c->wgu, xb, hh, 0, F, Tn, F, D, c->bup, 0));
        TRY(ac_cu_gelu<T>(hh, (size_t)Tn * F, g->st));
        TRY(gemm<T>(g, c->wdown, hh, g->x, 1, D, Tn, D, F, c->bdown, 1));
        TRY(mark(g, 4));
        TRY(ac_cu_layernorm<T>(g->x, xb, g->x, c->n2w, c->n2b, Tn, D, eps, g->st));
        TRY(mark(g, 5));
    } else {
        TRY(ac_cu_rmsnorm<T>(xb, g->x, c->n2w, Tn, D, eps, g->st));
        TRY(mark(g, 5));
        TRY(gemm<T>(g, c->wgu, xb, gu, 0, 2 * F, Tn, 2 * F, D, NULL, 0));
        TRY(ac_cu_swiglu<T>(hh, gu, Tn, F, g->st));
        TRY(gemm<T>(g, c->wdown, hh, g->x, 1, D, Tn, D, F, c->bdown, 1));
        TRY(mark(g, 4));
    }
    return AC_OK;
}

template <typename T> static int outputs(ac_cuda_model *g, int Tn, int n_seq, ac_outputs *out, int pooling) {
    const int D = g->D;
    const float *h = g->bert ? g->x : g->h;
    T *rows = (T *)g->rows;
    int rc;
    if (out->hidden) AC_CU(cudaMemcpyAsync(out->hidden, h, (size_t)Tn * D * 4, cudaMemcpyDeviceToHost, g->st));
    if (out->pooled) {
        TRY(ac_cu_pool(g->pooled, h, g->d_cu, n_seq, D, pooling, out->normalize, g->st));
        AC_CU(cudaMemcpyAsync(out->pooled, g->pooled, (size_t)n_seq * D * 4, cudaMemcpyDeviceToHost, g->st));
    }
    if (out->logits) {
        TRY(ac_cu_gather<T>(rows, h, g->d_cu, n_seq, D, 1, g->st));
        TRY(gemm<T>(g, g->output, rows, g->logits, 1, g->V, n_seq, g->V, D, NULL, 0));
        AC_CU(cudaMemcpyAsync(out->logits, g->logits, (size_t)n_seq * g->V * 4, cudaMemcpyDeviceToHost, g->st));
    }
    if (out->cls) {
        if (g->cls_mean_l2) {
            TRY(ac_cu_pool(g->clsbuf, h, g->d_cu, n_seq, D, AC_POOL_MEAN, 1, g->st));
            TRY(ac_cu_convert<T>(rows, g->clsbuf, (size_t)n_seq * D, g->st));
        } else {
            TRY(ac_cu_gather<T>(rows, h, g->d_cu, n_seq, D, !g->bert, g->st));
        }
        if (g->has_cls) {
            TRY(gemm<T>(g, g->cls, rows, g->clsbuf, 1, D, n_seq, D, D, NULL, 0));
            TRY(ac_cu_bias_tanh(g->clsbuf, g->cls_b, (size_t)n_seq * D, D, g->st));
            TRY(ac_cu_convert<T>(rows, g->clsbuf, (size_t)n_seq * D, g->st));
        }
        float *res = g->has_cls_out ? g->clsout : g->clsbuf;
        if (g->has_cls_out) TRY(gemm<T>(g, g->cls_out, rows, g->clsout, 1, g->n_cls, n_seq, g->n_cls, D, g->cls_out_b, 0));
        AC_CU(cudaMemcpyAsync(out->cls, res, (size_t)n_seq * g->n_cls * 4, cudaMemcpyDeviceToHost, g->st));
    }
    return mark(g, 6);
}

template <typename T> static int forward(ac_cuda_model *g, int Tn, int n_seq, int Lmax, ac_outputs *out, int pooling,
                                         const ac_cuda_opts *o) {
    int rc;
    const int D = g->D;
    TRY(ac_cu_embed(g->x, g->tok, g->d_tok, g->bert ? g->pos : NULL, g->d_pos, g->bert ? g->type0 : NULL, Tn, D, g->st));
    if (g->bert) TRY(ac_cu_layernorm<T>(g->x, (T *)g->xb, g->x, g->en_w, g->en_b, Tn, D, g->hp.norm_eps, g->st));
    TRY(mark(g, 0));
    for (int il = 0; il < g->hp.n_layer; il++) TRY(layer<T>(g, il, Tn, n_seq, Lmax, o));
    if (!g->bert) {
        TRY(ac_cu_rmsnorm<float>(g->h, g->x, g->out_norm, Tn, D, g->hp.norm_eps, g->st));
        TRY(mark(g, 5));
    }
    return outputs<T>(g, Tn, n_seq, out, pooling);
}

int ac_cuda_forward(ac_cuda_model *g, const ac_seq *seqs, int n_seq, ac_outputs *out, const ac_cuda_opts *o) {
    if (!g || !seqs || !out || n_seq <= 0) return ac_err(AC_ERR_ARG, "ac_cuda_forward: invalid argument");
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
    const int Tn = (int)T;
    if ((rc = ws_reserve(g, Tn, n_seq))) return rc;
    if (!g->bert && (rc = rope_reserve(g, Lmax))) return rc;
    long long poff = 0;
    for (int s = 0, r = 0; s < n_seq; s++) {
        g->h_cu[s] = r;
        g->h_poff[s] = poff;
        const int L = seqs[s].n_tokens;
        poff += (long long)g->H * L * L;
        for (int t = 0; t < L; t++, r++) g->h_tok[r] = seqs[s].tokens[t], g->h_pos[r] = t;
    }
    g->h_cu[n_seq] = Tn;
    const int mat = g->prec == AC_CUDA_F32 || (o && (o->materialised || o->record));
    if (mat && (size_t)poff > g->cap_P) {
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
    g->n_ev = 0;
    if ((rc = mark(g, -1))) return rc;
    rc = g->prec == AC_CUDA_F32 ? forward<float>(g, Tn, n_seq, Lmax, out, pooling, o)
                                : forward<bf16>(g, Tn, n_seq, Lmax, out, pooling, o);
    if (rc == AC_OK) AC_CU(cudaEventRecord(g->t1, g->st));
    cudaError_t e = cudaStreamSynchronize(g->st);
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
