/* ref_forward.c — synthetic GGUF models and the plain reference forward pass
 * (see ref_forward.h). Everything here is deliberately simple: one sequence,
 * double accumulators, libm's exp/erf/tanh, the textbook formulas. */
#include "ref_forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random -------------------------------------------------------------------------- */
static uint64_t rnd_next(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}
static float rnd_unit(uint64_t *s) { /* U(-1, 1) */
    return (float)((double)(rnd_next(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

void ref_random_tokens(uint64_t *state, int32_t *ids, int n, int V) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(rnd_next(state) % (uint64_t)V);
}

/* ---- builder ---------------------------------------------------------------------------- */
ref_spec ref_spec_default(int arch) {
    ref_spec s;
    memset(&s, 0, sizeof s);
    s.arch = arch;
    s.n_vocab = 101;
    s.n_ctx = 96;
    s.n_embd = 64;
    s.n_layer = 2;
    s.n_head = 4;
    s.n_head_kv = arch == AC_ARCH_BERT ? 4 : 2;
    s.n_ff = 160;
    s.wtype = GGML_F32;
    s.qkv_bias = arch != AC_ARCH_LLAMA;
    s.o_bias = arch == AC_ARCH_BERT;
    s.causal = -1;
    s.pooling_type = -1;
    s.rope_base = arch == AC_ARCH_QWEN2 ? 1000000.0f : 10000.0f;
    s.eps = arch == AC_ARCH_BERT ? 1e-12f : 1e-5f;
    s.wscale = 1.0f;
    s.seed = 1234;
    return s;
}

static const char *arch_str(int arch) {
    return arch == AC_ARCH_LLAMA ? "llama" : arch == AC_ARCH_QWEN2 ? "qwen2" : "bert";
}

/* Encode n_out rows of n_in floats as `type`. Caller frees. */
static void *encode(const float *x, int64_t n_in, int64_t n_out, uint32_t type) {
    const size_t n = (size_t)(n_in * n_out);
    if (type == GGML_F32) {
        void *b = malloc(n * 4);
        memcpy(b, x, n * 4);
        return b;
    }
    if (type == GGML_F16 || type == GGML_BF16) {
        uint16_t *b = malloc(n * 2);
        for (size_t i = 0; i < n; i++) b[i] = type == GGML_F16 ? ac_fp32_to_fp16(x[i]) : ac_fp32_to_bf16(x[i]);
        return b;
    }
    /* Q8_0: per block of 32, d = amax / 127, q = round(x / d) */
    const size_t nb = n / 32;
    uint8_t *b = malloc(nb * 34);
    for (size_t k = 0; k < nb; k++) {
        const float *v = x + k * 32;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        uint16_t dh = ac_fp32_to_fp16(d);
        memcpy(b + k * 34, &dh, 2);
        for (int i = 0; i < 32; i++) b[k * 34 + 2 + i] = (uint8_t)(int8_t)lrintf(v[i] * id);
    }
    return b;
}

static const ref_spec *g_spec; /* the spec being built (for the fault-injection names) */

static int put(ac_gguf_writer *w, const char *name, uint32_t type, int64_t n_in, int64_t n_out, const float *x) {
    if (g_spec->omit && !strcmp(name, g_spec->omit)) return 0;
    if (g_spec->q4 && !strcmp(name, g_spec->q4)) { /* an unsupported type: Q4_0 blocks of zeros */
        size_t nb = (size_t)(n_in / 32) * (size_t)n_out * 18;
        void *z = calloc(nb, 1);
        int64_t ne[2] = {n_in, n_out};
        int rc = ac_gguf_w_tensor(w, name, GGML_Q4_0, 2, ne, z);
        free(z);
        return rc;
    }
    if (g_spec->reshape && !strcmp(name, g_spec->reshape)) n_out -= 1; /* one row short */
    void *data = encode(x, n_in, n_out, type);
    int64_t ne[2] = {n_in, n_out};
    int rc = ac_gguf_w_tensor(w, name, type, 2, ne, data);
    free(data);
    return rc;
}

static int put_vec(ac_gguf_writer *w, const char *name, int64_t n, const float *x) {
    if (g_spec->omit && !strcmp(name, g_spec->omit)) return 0;
    if (g_spec->reshape && !strcmp(name, g_spec->reshape)) n -= 1;
    int64_t ne[1] = {n};
    return ac_gguf_w_tensor(w, name, GGML_F32, 1, ne, x);
}

static float *rand_mat(uint64_t *st, int64_t n_in, int64_t n_out, float scale) {
    float *m = malloc((size_t)(n_in * n_out) * sizeof *m);
    const float s = scale / sqrtf((float)n_in);
    for (int64_t i = 0; i < n_in * n_out; i++) m[i] = rnd_unit(st) * s;
    return m;
}
static float *rand_vec(uint64_t *st, int64_t n, float center, float spread) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = center + spread * rnd_unit(st);
    return v;
}

#define CHECK(x)                 \
    do {                         \
        if ((rc = (x)) != 0) goto fail; \
    } while (0)

int ref_build_writer(const ref_spec *s, ac_gguf_writer **out) {
    ac_gguf_writer *w = ac_gguf_writer_new();
    if (!w) return AC_ERR_NOMEM;
    g_spec = s;
    uint64_t st = s->seed ? s->seed : 1;
    const char *a = arch_str(s->arch);
    const int bert = s->arch == AC_ARCH_BERT;
    const int D = s->n_embd, H = s->n_head, HKV = s->n_head_kv, HD = D / H, F = s->n_ff;
    const int QD = H * HD, KVD = HKV * HD;
    const float ws = s->wscale > 0 ? s->wscale : 1.0f;
    char key[128], name[128];
    int rc = 0;
    float *m = NULL;
#define KEY(sfx) (snprintf(key, sizeof key, "%s." sfx, a), key)
#define MAT(nm, nin, nout, type) do { m = rand_mat(&st, nin, nout, ws); CHECK(put(w, nm, type, nin, nout, m)); free(m); m = NULL; } while (0)
#define VEC(nm, n, c, sp) do { m = rand_vec(&st, n, c, sp); CHECK(put_vec(w, nm, n, m)); free(m); m = NULL; } while (0)
    CHECK(ac_gguf_w_str(w, "general.architecture", s->arch_override ? s->arch_override : a));
    CHECK(ac_gguf_w_str(w, "general.name", "synthetic"));
    CHECK(ac_gguf_w_u32(w, KEY("context_length"), (uint32_t)s->n_ctx));
    CHECK(ac_gguf_w_u32(w, KEY("embedding_length"), (uint32_t)D));
    CHECK(ac_gguf_w_u32(w, KEY("block_count"), (uint32_t)s->n_layer));
    CHECK(ac_gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)F));
    CHECK(ac_gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)H));
    CHECK(ac_gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)HKV));
    if (bert) {
        CHECK(ac_gguf_w_f32(w, KEY("attention.layer_norm_epsilon"), s->eps));
    } else {
        CHECK(ac_gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->eps));
        CHECK(ac_gguf_w_f32(w, KEY("rope.freq_base"), s->rope_base));
        CHECK(ac_gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)(s->n_rot ? s->n_rot : HD)));
        if (s->rope_linear > 0) {
            CHECK(ac_gguf_w_str(w, KEY("rope.scaling.type"), "linear"));
            CHECK(ac_gguf_w_f32(w, KEY("rope.scaling.factor"), s->rope_linear));
        }
    }
    if (s->causal >= 0) CHECK(ac_gguf_w_bool(w, KEY("attention.causal"), s->causal));
    if (s->pooling_type >= 0) CHECK(ac_gguf_w_u32(w, KEY("pooling_type"), (uint32_t)s->pooling_type));

    /* embeddings: token_embd rows ~ U(-1,1) (unit scale, like real embeddings after norms) */
    m = rand_vec(&st, (int64_t)D * s->n_vocab, 0.0f, 1.0f);
    CHECK(put(w, "token_embd.weight", s->wtype, D, s->n_vocab, m));
    free(m);
    m = NULL;
    if (bert) {
        m = rand_vec(&st, (int64_t)D * 2, 0.0f, 0.5f);
        CHECK(put(w, "token_types.weight", GGML_F32, D, 2, m));
        free(m);
        m = rand_vec(&st, (int64_t)D * s->n_ctx, 0.0f, 0.5f);
        CHECK(put(w, "position_embd.weight", GGML_F32, D, s->n_ctx, m));
        free(m);
        m = NULL;
        VEC("token_embd_norm.weight", D, 1.0f, 0.2f);
        VEC("token_embd_norm.bias", D, 0.0f, 0.2f);
    } else {
        VEC("output_norm.weight", D, 1.0f, 0.2f);
        if (!s->tied) MAT("output.weight", D, s->n_vocab, s->wtype);
        if (s->rope_freqs) VEC("rope_freqs.weight", (s->n_rot ? s->n_rot : HD) / 2, 2.0f, 1.0f);
    }
    for (int il = 0; il < s->n_layer; il++) {
#define NM(sfx) (snprintf(name, sizeof name, "blk.%d." sfx, il), name)
        if (s->fused_qkv) {
            MAT(NM("attn_qkv.weight"), D, QD + 2 * KVD, s->wtype);
            if (s->qkv_bias) VEC(NM("attn_qkv.bias"), QD + 2 * KVD, 0.0f, 0.2f);
        } else {
            MAT(NM("attn_q.weight"), D, QD, s->wtype);
            MAT(NM("attn_k.weight"), D, KVD, s->wtype);
            MAT(NM("attn_v.weight"), D, KVD, s->wtype);
            if (s->qkv_bias) {
                VEC(NM("attn_q.bias"), QD, 0.0f, 0.2f);
                VEC(NM("attn_k.bias"), KVD, 0.0f, 0.2f);
                VEC(NM("attn_v.bias"), KVD, 0.0f, 0.2f);
            }
        }
        MAT(NM("attn_output.weight"), QD, D, s->wtype);
        if (s->o_bias) VEC(NM("attn_output.bias"), D, 0.0f, 0.2f);
        if (bert) {
            VEC(NM("attn_output_norm.weight"), D, 1.0f, 0.2f);
            VEC(NM("attn_output_norm.bias"), D, 0.0f, 0.2f);
            MAT(NM("ffn_up.weight"), D, F, s->wtype);
            VEC(NM("ffn_up.bias"), F, 0.0f, 0.2f);
            MAT(NM("ffn_down.weight"), F, D, s->wtype);
            VEC(NM("ffn_down.bias"), D, 0.0f, 0.2f);
            VEC(NM("layer_output_norm.weight"), D, 1.0f, 0.2f);
            VEC(NM("layer_output_norm.bias"), D, 0.0f, 0.2f);
        } else {
            VEC(NM("attn_norm.weight"), D, 1.0f, 0.2f);
            VEC(NM("ffn_norm.weight"), D, 1.0f, 0.2f);
            MAT(NM("ffn_gate.weight"), D, F, s->wtype);
            MAT(NM("ffn_up.weight"), D, F, s->wtype);
            MAT(NM("ffn_down.weight"), F, D, s->wtype);
        }
#undef NM
    }
    if (s->n_cls > 0) {
        MAT("cls.weight", D, D, s->wtype);
        VEC("cls.bias", D, 0.0f, 0.2f);
        MAT("cls.output.weight", D, s->n_cls, GGML_F32);
        VEC("cls.output.bias", s->n_cls, 0.0f, 0.2f);
    }
#undef KEY
#undef MAT
#undef VEC
    *out = w;
    return 0;
fail:
    free(m);
    ac_gguf_writer_free(w);
    return rc;
}

int ref_build(const ref_spec *s, uint8_t **buf, size_t *size) {
    ac_gguf_writer *w;
    int rc = ref_build_writer(s, &w);
    if (rc) return rc;
    rc = ac_gguf_w_to_memory(w, 3, buf, size);
    ac_gguf_writer_free(w);
    return rc;
}

/* ---- reference model ----------------------------------------------------------------- */

/* Dequantise a whole tensor (F32, F16, BF16, Q8_0), written out longhand. */
static float *deq(const ac_gguf_tensor *t) {
    size_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) n *= (size_t)t->ne[d];
    float *o = malloc(n * sizeof *o);
    const uint8_t *p = t->data;
    for (size_t i = 0; i < n; i++) {
        switch (t->type) {
        case GGML_F32: memcpy(&o[i], p + 4 * i, 4); break;
        case GGML_F16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            o[i] = ac_fp16_to_fp32(h);
            break;
        }
        case GGML_BF16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            o[i] = ac_bf16_to_fp32(h);
            break;
        }
        case GGML_Q8_0: {
            const uint8_t *blk = p + (i / 32) * 34;
            uint16_t dh;
            memcpy(&dh, blk, 2);
            o[i] = ac_fp16_to_fp32(dh) * (float)(int8_t)blk[2 + i % 32];
            break;
        }
        default: o[i] = NAN;
        }
    }
    return o;
}

static float *get(const ac_gguf_file *g, const char *name) {
    const ac_gguf_tensor *t = ac_gguf_find_tensor(g, name);
    return t ? deq(t) : NULL;
}

static int geti(const ac_gguf_file *g, const char *arch, const char *sfx, int64_t def) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, sfx);
    int64_t v = def;
    ac_gguf_get_int(g, key, &v, 0);
    return (int)v;
}
static double getf(const ac_gguf_file *g, const char *arch, const char *sfx, double def) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, sfx);
    double v = def;
    ac_gguf_get_float(g, key, &v, 0);
    return v;
}

int ref_model_init(ref_model *r, const ac_gguf_file *g) {
    memset(r, 0, sizeof *r);
    ac_gguf_str as;
    if (ac_gguf_get_str(g, "general.architecture", &as, 1)) return -1;
    char a[32];
    snprintf(a, sizeof a, "%.*s", (int)as.len, as.ptr);
    r->arch = !strcmp(a, "llama") ? AC_ARCH_LLAMA : !strcmp(a, "qwen2") ? AC_ARCH_QWEN2 : AC_ARCH_BERT;
    const int bert = r->arch == AC_ARCH_BERT;
    r->D = geti(g, a, "embedding_length", 0);
    r->NL = geti(g, a, "block_count", 0);
    r->H = geti(g, a, "attention.head_count", 0);
    r->HKV = geti(g, a, "attention.head_count_kv", r->H);
    r->F = geti(g, a, "feed_forward_length", 0);
    r->n_ctx = geti(g, a, "context_length", 0);
    r->HD = r->D / r->H;
    r->n_rot = geti(g, a, "rope.dimension_count", r->HD);
    r->neox = r->arch == AC_ARCH_QWEN2;
    r->base = getf(g, a, "rope.freq_base", 10000.0);
    r->rope_scale = 1.0 / getf(g, a, "rope.scaling.factor", 1.0);
    r->eps = bert ? getf(g, a, "attention.layer_norm_epsilon", 1e-12) : getf(g, a, "attention.layer_norm_rms_epsilon", 1e-5);
    {
        char key[128];
        snprintf(key, sizeof key, "%s.attention.causal", a);
        int c = !bert;
        ac_gguf_get_bool(g, key, &c, 0);
        r->causal = c;
    }
    const ac_gguf_tensor *te = ac_gguf_find_tensor(g, "token_embd.weight");
    r->V = (int)te->ne[1];
    r->tok = deq(te);
    if (bert) {
        float *tt = get(g, "token_types.weight");
        r->type0 = tt; /* row 0 is the first D values */
        r->pos = get(g, "position_embd.weight");
        r->en_w = get(g, "token_embd_norm.weight");
        r->en_b = get(g, "token_embd_norm.bias");
    } else {
        r->out_norm = get(g, "output_norm.weight");
        r->out = get(g, "output.weight");
        if (!r->out) r->out = deq(te);
        r->rope_ff = get(g, "rope_freqs.weight");
    }
    r->cls_w = get(g, "cls.weight");
    r->cls_b = get(g, "cls.bias");
    r->clso_w = get(g, "cls.output.weight");
    r->clso_b = get(g, "cls.output.bias");
    r->has_cls = r->cls_w != NULL;
    r->n_cls = r->clso_w ? (int)ac_gguf_find_tensor(g, "cls.output.weight")->ne[1] : r->has_cls ? r->D : 0;
    r->L = calloc((size_t)r->NL, sizeof *r->L);
    const int QD = r->H * r->HD, KVD = r->HKV * r->HD;
    char n[128];
    for (int il = 0; il < r->NL; il++) {
        ref_layer *L = &r->L[il];
#define T(sfx) (snprintf(n, sizeof n, "blk.%d." sfx, il), get(g, n))
        float *qkv = T("attn_qkv.weight");
        if (qkv) { /* split the fused rows */
            L->wq = malloc((size_t)QD * r->D * 4);
            L->wk = malloc((size_t)KVD * r->D * 4);
            L->wv = malloc((size_t)KVD * r->D * 4);
            memcpy(L->wq, qkv, (size_t)QD * r->D * 4);
            memcpy(L->wk, qkv + (size_t)QD * r->D, (size_t)KVD * r->D * 4);
            memcpy(L->wv, qkv + (size_t)(QD + KVD) * r->D, (size_t)KVD * r->D * 4);
            free(qkv);
            float *b = T("attn_qkv.bias");
            if (b) {
                L->bq = malloc((size_t)QD * 4);
                L->bk = malloc((size_t)KVD * 4);
                L->bv = malloc((size_t)KVD * 4);
                memcpy(L->bq, b, (size_t)QD * 4);
                memcpy(L->bk, b + QD, (size_t)KVD * 4);
                memcpy(L->bv, b + QD + KVD, (size_t)KVD * 4);
                free(b);
            }
        } else {
            L->wq = T("attn_q.weight");
            L->wk = T("attn_k.weight");
            L->wv = T("attn_v.weight");
            L->bq = T("attn_q.bias");
            L->bk = T("attn_k.bias");
            L->bv = T("attn_v.bias");
        }
        L->wo = T("attn_output.weight");
        L->bo = T("attn_output.bias");
        if (bert) {
            L->n1w = T("attn_output_norm.weight");
            L->n1b = T("attn_output_norm.bias");
            L->n2w = T("layer_output_norm.weight");
            L->n2b = T("layer_output_norm.bias");
            L->bu = T("ffn_up.bias");
            L->bd = T("ffn_down.bias");
        } else {
            L->n1w = T("attn_norm.weight");
            L->n2w = T("ffn_norm.weight");
            L->wg = T("ffn_gate.weight");
        }
        L->wu = T("ffn_up.weight");
        L->wd = T("ffn_down.weight");
#undef T
    }
    return 0;
}

void ref_model_free(ref_model *r) {
    free(r->tok), free(r->type0), free(r->pos), free(r->en_w), free(r->en_b), free(r->out_norm), free(r->out);
    free(r->rope_ff), free(r->cls_w), free(r->cls_b), free(r->clso_w), free(r->clso_b);
    for (int il = 0; il < r->NL && r->L; il++) {
        ref_layer *L = &r->L[il];
        float *p[] = {L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->bo, L->n1w, L->n1b,
                      L->n2w, L->n2b, L->wg, L->wu, L->wd, L->bu, L->bd};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    }
    free(r->L);
    memset(r, 0, sizeof *r);
}

/* y[o] = sum_i W[o][i] x[i] + b[o] over n rows: y [n][nout], x [n][nin], W [nout][nin] */
static void linear(double *y, const double *x, const float *W, const float *b, int n, int nin, int nout) {
    for (int t = 0; t < n; t++)
        for (int o = 0; o < nout; o++) {
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < nin; i++) acc += (double)W[(size_t)o * nin + i] * x[(size_t)t * nin + i];
            y[(size_t)t * nout + o] = acc;
        }
}

static void rmsnorm(double *o, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) o[i] = x[i] * s * w[i];
}

static void layernorm(double *o, const double *x, const float *w, const float *b, int n, double eps) {
    double mu = 0, var = 0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
    var /= n;
    double s = 1.0 / sqrt(var + eps);
    for (int i = 0; i < n; i++) o[i] = (x[i] - mu) * s * w[i] + b[i];
}

static void rope(const ref_model *r, double *v, int pos) { /* one head of HD */
    const int half = r->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double th = pos * r->rope_scale * pow(r->base, -2.0 * i / r->n_rot);
        if (r->rope_ff) th /= r->rope_ff[i];
        double c = cos(th), s = sin(th);
        int a = r->neox ? i : 2 * i, b = r->neox ? i + half : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

void ref_forward(const ref_model *r, const int32_t *tok, int n, double *hidden, double *logits, double *cls) {
    const int D = r->D, HD = r->HD, QD = r->H * HD, KVD = r->HKV * HD, F = r->F;
    const int bert = r->arch == AC_ARCH_BERT;
    double *x = calloc((size_t)n * D, 8), *xn = calloc((size_t)n * D, 8), *q = calloc((size_t)n * QD, 8),
           *k = calloc((size_t)n * KVD, 8), *v = calloc((size_t)n * KVD, 8), *att = calloc((size_t)n * QD, 8),
           *tmp = calloc((size_t)n * D, 8), *h1 = calloc((size_t)n * F, 8), *h2 = calloc((size_t)n * F, 8),
           *p = calloc((size_t)n, 8);
    for (int t = 0; t < n; t++)
        for (int d = 0; d < D; d++) {
            double e = r->tok[(size_t)tok[t] * D + d];
            if (bert) e = (e + (r->type0 ? r->type0[d] : 0.0)) + r->pos[(size_t)t * D + d];
            x[(size_t)t * D + d] = e;
        }
    if (bert)
        for (int t = 0; t < n; t++) layernorm(x + (size_t)t * D, x + (size_t)t * D, r->en_w, r->en_b, D, r->eps);
    for (int il = 0; il < r->NL; il++) {
        const ref_layer *L = &r->L[il];
        const double *in = x;
        if (!bert) {
            for (int t = 0; t < n; t++) rmsnorm(xn + (size_t)t * D, x + (size_t)t * D, L->n1w, D, r->eps);
            in = xn;
        }
        linear(q, in, L->wq, L->bq, n, D, QD);
        linear(k, in, L->wk, L->bk, n, D, KVD);
        linear(v, in, L->wv, L->bv, n, D, KVD);
        if (!bert)
            for (int t = 0; t < n; t++) {
                for (int h = 0; h < r->H; h++) rope(r, q + (size_t)t * QD + h * HD, t);
                for (int h = 0; h < r->HKV; h++) rope(r, k + (size_t)t * KVD + h * HD, t);
            }
        for (int h = 0; h < r->H; h++) {
            const int g = h / (r->H / r->HKV);
            for (int t = 0; t < n; t++) {
                const int ns = r->causal ? t + 1 : n;
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s < ns; s++) {
                    double dot = 0;
                    for (int d = 0; d < HD; d++) dot += q[(size_t)t * QD + h * HD + d] * k[(size_t)s * KVD + g * HD + d];
                    p[s] = dot / sqrt((double)HD);
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = 0; s < ns; s++) sum += (p[s] = exp(p[s] - mx));
                for (int d = 0; d < HD; d++) {
                    double acc = 0;
                    for (int s = 0; s < ns; s++) acc += p[s] / sum * v[(size_t)s * KVD + g * HD + d];
                    att[(size_t)t * QD + h * HD + d] = acc;
                }
            }
        }
        linear(tmp, att, L->wo, L->bo, n, QD, D);
        for (size_t i = 0; i < (size_t)n * D; i++) x[i] += tmp[i];
        if (bert) {
            for (int t = 0; t < n; t++) layernorm(x + (size_t)t * D, x + (size_t)t * D, L->n1w, L->n1b, D, r->eps);
            linear(h1, x, L->wu, L->bu, n, D, F);
            for (size_t i = 0; i < (size_t)n * F; i++) h1[i] = 0.5 * h1[i] * (1.0 + erf(h1[i] / sqrt(2.0)));
            linear(tmp, h1, L->wd, L->bd, n, F, D);
            for (size_t i = 0; i < (size_t)n * D; i++) x[i] += tmp[i];
            for (int t = 0; t < n; t++) layernorm(x + (size_t)t * D, x + (size_t)t * D, L->n2w, L->n2b, D, r->eps);
        } else {
            for (int t = 0; t < n; t++) rmsnorm(xn + (size_t)t * D, x + (size_t)t * D, L->n2w, D, r->eps);
            linear(h1, xn, L->wg, NULL, n, D, F);
            linear(h2, xn, L->wu, NULL, n, D, F);
            for (size_t i = 0; i < (size_t)n * F; i++) h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h2[i];
            linear(tmp, h1, L->wd, NULL, n, F, D);
            for (size_t i = 0; i < (size_t)n * D; i++) x[i] += tmp[i];
        }
    }
    if (!bert)
        for (int t = 0; t < n; t++) rmsnorm(x + (size_t)t * D, x + (size_t)t * D, r->out_norm, D, r->eps);
    if (hidden) memcpy(hidden, x, (size_t)n * D * 8);
    if (logits && r->out) linear(logits, x + (size_t)(n - 1) * D, r->out, NULL, 1, D, r->V);
    if (cls && r->n_cls) {
        const double *row = x + (size_t)(bert ? 0 : n - 1) * D;
        double *c1 = calloc((size_t)D, 8);
        const double *in = row;
        if (r->has_cls) {
            linear(c1, row, r->cls_w, r->cls_b, 1, D, D);
            for (int d = 0; d < D; d++) c1[d] = tanh(c1[d]);
            in = c1;
        }
        if (r->clso_w) linear(cls, in, r->clso_w, r->clso_b, 1, D, r->n_cls);
        else memcpy(cls, in, (size_t)D * 8);
        free(c1);
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(tmp), free(h1), free(h2), free(p);
}

double ref_rel_err_f(const float *a, const double *r, size_t n) {
    double mx = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(r[i]));
        double e = fabs((double)a[i] - r[i]);
        if (isnan(e)) return NAN; /* NaN anywhere fails every bound */
        if (e > err) err = e;
    }
    return mx > 0 ? err / mx : err;
}
