/* model.c — load a GGUF model (llama, qwen2, bert) as llama.cpp writes it:
 * hyper-parameters from {arch}.* keys; every tensor checked for presence,
 * exact shape and a supported type (F32, F16, BF16, Q8_0; errors name the
 * tensor); the tokenizer (a vocab-only load stops there); with check_tensors,
 * every weight checked finite. Matrices are described as the file holds them
 * (F32 used in place from the mapping; small vectors widened to f32 copies).
 * Nothing here depends on a backend or the CPU level: the CPU backend widens
 * or packs F16/BF16/Q8_0 matrices when its first context needs them
 * (src/forward/cpu/weights.c), a GPU backend uploads them, each keeping the
 * result on the model through ac_model_prepared (below), which frees it with
 * the model. */
#define _POSIX_C_SOURCE 200809L
#include "load/model.h"
#include "util/common.h"
#include "util/cpu.h"
#include "util/fp16.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- row conversion ------------------------------------------------------------------------ */

void ac_row_to_f32(uint32_t type, const void *data, size_t row_bytes, int64_t row, int64_t n, float *dst) {
    const uint8_t *p = (const uint8_t *)data + (size_t)row * row_bytes;
    switch (type) {
    case GGML_F32: memcpy(dst, p, (size_t)n * sizeof(float)); break;
    case GGML_F16: ac_fp16_row_to_fp32(p, dst, n); break;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = ac_bf16_to_fp32(h);
        }
        break;
    case GGML_Q8_0:
        for (int64_t b = 0; b < n / GGML_QK8_0; b++) {
            const uint8_t *blk = p + (size_t)b * (2 + GGML_QK8_0);
            uint16_t dh;
            memcpy(&dh, blk, 2);
            const float d = ac_fp16_to_fp32(dh);
            const int8_t *qs = (const int8_t *)(blk + 2);
            for (int i = 0; i < GGML_QK8_0; i++) dst[b * GGML_QK8_0 + i] = d * (float)qs[i];
        }
        break;
    default: memset(dst, 0, (size_t)n * sizeof(float)); break; /* unreachable: types are checked at load */
    }
}

/* ---- loader helpers ------------------------------------------------------------------------------ */

typedef struct loader {
    ac_model *m;
    const ac_gguf_file *g;
    const char *arch;
} loader;

static int own_f32(ac_model *m, size_t n, float **out) {
    if (m->n_owned == m->cap_owned) {
        int nc = m->cap_owned ? 2 * m->cap_owned : 64;
        float **p = realloc(m->owned_f32, (size_t)nc * sizeof *p);
        if (!p) return ac_err(AC_ERR_NOMEM, "out of memory (model tensors)");
        m->owned_f32 = p;
        m->cap_owned = nc;
    }
    float *b = AC_ALIGNED_ALLOC(n * sizeof(float));
    if (!b) return AC_ERR_NOMEM;
    m->owned_f32[m->n_owned++] = b;
    *out = b;
    return AC_OK;
}

static int aligned4(const void *p) { return ((uintptr_t)p & 3u) == 0; }

/* A vector [n]: F32 in place when aligned, else converted to an owned f32 copy. */
static int get_vec(loader *ld, const char *name, int64_t n, int required, const float **out) {
    const ac_gguf_tensor *t;
    int64_t ne[1] = {n};
    *out = NULL;
    int rc = ac_gguf_expect_tensor(ld->g, name, 1, ne, &t, required);
    if (rc || !t) return rc;
    if (t->type == GGML_F32 && aligned4(t->data)) {
        *out = t->data;
        return AC_OK;
    }
    float *b = NULL;
    if ((rc = own_f32(ld->m, (size_t)n, &b))) return rc;
    ac_row_to_f32(t->type, t->data, ggml_row_bytes(t->type, n), 0, n, b);
    *out = b;
    return AC_OK;
}

static void mat_from_tensor(ac_mat *w, const ac_gguf_tensor *t, const char *name, int64_t row0, int64_t n_out) {
    snprintf(w->name, sizeof w->name, "%s", name);
    w->n_in = (int)t->ne[0];
    w->n_out = (int)n_out;
    w->type = t->type;
    w->row_bytes = ggml_row_bytes(t->type, t->ne[0]);
    w->data = (const uint8_t *)t->data + (size_t)row0 * w->row_bytes;
    w->f32 = NULL;
}

/* A matrix W [n_out][n_in] (ggml ne = {n_in, n_out}). */
static int finish_mat(loader *ld, ac_mat *w) {
    if (w->type != GGML_F32) return AC_OK;
    if (aligned4(w->data)) {
        w->f32 = w->data;
        return AC_OK;
    }
    float *b = NULL;
    int rc = own_f32(ld->m, (size_t)w->n_out * w->n_in, &b);
    if (rc) return rc;
    memcpy(b, w->data, (size_t)w->n_out * w->n_in * sizeof(float));
    w->f32 = b;
    w->data = b;
    return AC_OK;
}

static int get_mat(loader *ld, const char *name, int64_t n_in, int64_t n_out, int required, ac_mat *w) {
    const ac_gguf_tensor *t;
    int64_t ne[2] = {n_in, n_out};
    memset(w, 0, sizeof *w);
    int rc = ac_gguf_expect_tensor(ld->g, name, 2, ne, &t, required);
    if (rc || !t) return rc;
    if (ggml_row_bytes(t->type, n_in) == 0)
        return ac_err(AC_ERR_FORMAT, "tensor %s: row of %lld not a whole number of %s blocks", name,
                      (long long)n_in, ggml_dtype_name(t->type));
    mat_from_tensor(w, t, name, 0, n_out);
    return finish_mat(ld, w);
}

static int key_int(loader *ld, const char *suffix, int64_t lo, int64_t hi, int required, int *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", ld->arch, suffix);
    int64_t v = *out;
    int rc = ac_gguf_get_int(ld->g, key, &v, required);
    if (rc) return rc;
    if (!ac_gguf_find(ld->g, key)) return AC_OK; /* optional and absent: default kept */
    if (v < lo || v > hi)
        return ac_err(AC_ERR_FORMAT, "key %s = %lld out of range [%lld, %lld]", key, (long long)v, (long long)lo,
                      (long long)hi);
    *out = (int)v;
    return AC_OK;
}

static int key_float(loader *ld, const char *suffix, int required, float *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", ld->arch, suffix);
    double v = *out;
    int rc = ac_gguf_get_float(ld->g, key, &v, required);
    if (rc) return rc;
    if (!isfinite(v)) return ac_err(AC_ERR_FORMAT, "key %s is not finite", key);
    *out = (float)v;
    return AC_OK;
}

/* q/k/v of one layer: separate attn_q/k/v (+ optional biases) or a fused attn_qkv. */
static int load_qkv(loader *ld, int il, ac_layer *L, int bias_required) {
    const ac_hparams *hp = &ld->m->hp;
    const int64_t D = hp->n_embd, nq = (int64_t)hp->n_head * hp->head_dim, nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    char name[96];
    int rc;
    snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", il);
    const ac_gguf_tensor *t = ac_gguf_find_tensor(ld->g, name);
    if (t) {
        int64_t ne[2] = {D, nq + 2 * nkv};
        if ((rc = ac_gguf_expect_tensor(ld->g, name, 2, ne, &t, 1))) return rc;
        mat_from_tensor(&L->wq, t, name, 0, nq);
        mat_from_tensor(&L->wk, t, name, nq, nkv);
        mat_from_tensor(&L->wv, t, name, nq + nkv, nkv);
        if ((rc = finish_mat(ld, &L->wq)) || (rc = finish_mat(ld, &L->wk)) || (rc = finish_mat(ld, &L->wv))) return rc;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", il);
        const float *b;
        if ((rc = get_vec(ld, name, nq + 2 * nkv, bias_required, &b))) return rc;
        if (b) {
            L->bq = b;
            L->bk = b + nq;
            L->bv = b + nq + nkv;
        }
        return AC_OK;
    }
    static const char *const nm[3] = {"attn_q", "attn_k", "attn_v"};
    ac_mat *w[3] = {&L->wq, &L->wk, &L->wv};
    const float **b[3] = {&L->bq, &L->bk, &L->bv};
    const int64_t rows[3] = {nq, nkv, nkv};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", il, nm[i]);
        if ((rc = get_mat(ld, name, D, rows[i], 1, w[i]))) return rc;
        snprintf(name, sizeof name, "blk.%d.%s.bias", il, nm[i]);
        if ((rc = get_vec(ld, name, rows[i], bias_required, b[i]))) return rc;
    }
    return AC_OK;
}

static int load_layer(loader *ld, int il) {
    ac_model *m = ld->m;
    const ac_hparams *hp = &m->hp;
    ac_layer *L = &m->layers[il];
    const int64_t D = hp->n_embd, F = hp->n_ff, nq = (int64_t)hp->n_head * hp->head_dim;
    const int bert = m->info.arch == AC_ARCH_BERT;
    char name[96];
    int rc;
#define NM(fmt) (snprintf(name, sizeof name, "blk.%d." fmt, il), name)
    if ((rc = load_qkv(ld, il, L, m->info.arch == AC_ARCH_QWEN2))) return rc;
    if ((rc = get_mat(ld, NM("attn_output.weight"), nq, D, 1, &L->wo))) return rc;
    if ((rc = get_vec(ld, NM("attn_output.bias"), D, 0, &L->bo))) return rc;
    if (bert) {
        if ((rc = get_vec(ld, NM("attn_output_norm.weight"), D, 1, &L->norm1_w))) return rc;
        if ((rc = get_vec(ld, NM("attn_output_norm.bias"), D, 1, &L->norm1_b))) return rc;
        if ((rc = get_mat(ld, NM("ffn_up.weight"), D, F, 1, &L->w_up))) return rc;
        if ((rc = get_vec(ld, NM("ffn_up.bias"), F, 0, &L->b_up))) return rc;
        if ((rc = get_mat(ld, NM("ffn_down.weight"), F, D, 1, &L->w_down))) return rc;
        if ((rc = get_vec(ld, NM("ffn_down.bias"), D, 0, &L->b_down))) return rc;
        if ((rc = get_vec(ld, NM("layer_output_norm.weight"), D, 1, &L->norm2_w))) return rc;
        if ((rc = get_vec(ld, NM("layer_output_norm.bias"), D, 1, &L->norm2_b))) return rc;
    } else {
        if ((rc = get_vec(ld, NM("attn_norm.weight"), D, 1, &L->norm1_w))) return rc;
        if ((rc = get_vec(ld, NM("ffn_norm.weight"), D, 1, &L->norm2_w))) return rc;
        if ((rc = get_mat(ld, NM("ffn_gate.weight"), D, F, 1, &L->w_gate))) return rc;
        if ((rc = get_mat(ld, NM("ffn_up.weight"), D, F, 1, &L->w_up))) return rc;
        if ((rc = get_mat(ld, NM("ffn_down.weight"), F, D, 1, &L->w_down))) return rc;
    }
#undef NM
    return AC_OK;
}

static int load_hparams(loader *ld) {
    ac_model *m = ld->m;
    ac_hparams *hp = &m->hp;
    const int bert = m->info.arch == AC_ARCH_BERT;
    int rc;
    memset(hp, 0, sizeof *hp);
    if ((rc = key_int(ld, "embedding_length", 1, 1 << 16, 1, &hp->n_embd)) ||
        (rc = key_int(ld, "block_count", 1, 4096, 1, &hp->n_layer)) ||
        (rc = key_int(ld, "attention.head_count", 1, 4096, 1, &hp->n_head)) ||
        (rc = key_int(ld, "feed_forward_length", 1, 1 << 20, 1, &hp->n_ff)) ||
        (rc = key_int(ld, "context_length", 1, 1 << 24, 1, &hp->n_ctx_train)))
        return rc;
    hp->n_head_kv = hp->n_head;
    if ((rc = key_int(ld, "attention.head_count_kv", 1, 4096, 0, &hp->n_head_kv))) return rc;
    if (hp->n_head % hp->n_head_kv)
        return ac_err(AC_ERR_FORMAT, "%s.attention.head_count %d is not a multiple of head_count_kv %d", ld->arch,
                      hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    if ((rc = key_int(ld, "attention.key_length", 1, 1 << 16, 0, &hp->head_dim))) return rc;
    int vlen = hp->head_dim;
    if ((rc = key_int(ld, "attention.value_length", 1, 1 << 16, 0, &vlen))) return rc;
    if (hp->head_dim <= 0)
        return ac_err(AC_ERR_FORMAT, "%s.embedding_length %d is not a multiple of head_count %d", ld->arch,
                      hp->n_embd, hp->n_head);
    if (vlen != hp->head_dim)
        return ac_err(AC_ERR_UNSUPPORTED, "key length %d != value length %d", hp->head_dim, vlen);
    if (hp->head_dim > 256)
        return ac_err(AC_ERR_UNSUPPORTED, "head dimension %d (at most 256 supported)", hp->head_dim);
    if ((int64_t)hp->n_head * hp->head_dim > (1 << 20))
        return ac_err(AC_ERR_FORMAT, "%s: %d heads x %d dims is too large", ld->arch, hp->n_head, hp->head_dim);
    hp->rope_base = 10000.0f;
    hp->rope_scale = 1.0f;
    hp->n_rot = hp->head_dim;
    if (bert) {
        if ((rc = key_float(ld, "attention.layer_norm_epsilon", 1, &hp->norm_eps))) return rc;
        hp->causal = 0;
    } else {
        if ((rc = key_float(ld, "attention.layer_norm_rms_epsilon", 1, &hp->norm_eps))) return rc;
        if ((rc = key_float(ld, "rope.freq_base", 0, &hp->rope_base))) return rc;
        if ((rc = key_int(ld, "rope.dimension_count", 2, hp->head_dim, 0, &hp->n_rot))) return rc;
        if (hp->n_rot % 2) return ac_err(AC_ERR_FORMAT, "%s.rope.dimension_count %d is odd", ld->arch, hp->n_rot);
        if (!(hp->rope_base > 0)) return ac_err(AC_ERR_FORMAT, "%s.rope.freq_base must be > 0", ld->arch);
        /* position scaling: linear only (positions x 1/factor), as llama.cpp's freq_scale */
        hp->rope_scale = 1.0f;
        float lin = 0;
        if ((rc = key_float(ld, "rope.scale_linear", 0, &lin))) return rc;
        if (lin > 0) hp->rope_scale = 1.0f / lin;
        char key[160];
        snprintf(key, sizeof key, "%s.rope.scaling.type", ld->arch);
        ac_gguf_str st = {0, ""};
        if ((rc = ac_gguf_get_str(ld->g, key, &st, 0))) return rc;
        if (st.len && !ac_gguf_str_eq(st, "none")) {
            if (!ac_gguf_str_eq(st, "linear"))
                return ac_err(AC_ERR_UNSUPPORTED, "%s = '%.*s' (only none and linear RoPE scaling are supported)", key,
                              (int)AC_MIN(st.len, 32), st.ptr);
            float f = 0;
            if ((rc = key_float(ld, "rope.scaling.factor", 0, &f))) return rc;
            if (f > 0) hp->rope_scale = 1.0f / f;
        }
        hp->rope_neox = m->info.arch == AC_ARCH_QWEN2;
        hp->causal = 1;
    }
    if (!(hp->norm_eps >= 0)) return ac_err(AC_ERR_FORMAT, "%s: negative norm epsilon", ld->arch);
    {
        char key[160];
        snprintf(key, sizeof key, "%s.attention.causal", ld->arch);
        if ((rc = ac_gguf_get_bool(ld->g, key, &hp->causal, 0))) return rc;
    }
    int pt = -1;
    if ((rc = key_int(ld, "pooling_type", 0, 4, 0, &pt))) return rc;
    hp->has_rank_head = pt == 4;
    if (pt == 1) hp->pooling = AC_POOL_MEAN;
    else if (pt == 2 || (pt == 4 && bert)) hp->pooling = AC_POOL_CLS;
    else if (pt == 3 || pt == 4) hp->pooling = AC_POOL_LAST;
    else hp->pooling = bert ? AC_POOL_MEAN : AC_POOL_LAST; /* absent or NONE */
    return AC_OK;
}

static int load_tensors(loader *ld) {
    ac_model *m = ld->m;
    ac_hparams *hp = &m->hp;
    const int bert = m->info.arch == AC_ARCH_BERT;
    const int64_t D = hp->n_embd;
    int rc;
    const ac_gguf_tensor *te = ac_gguf_find_tensor(ld->g, "token_embd.weight");
    if (!te) return ac_err(AC_ERR_FORMAT, "missing required tensor token_embd.weight");
    if (te->n_dims != 2 || te->ne[0] != D || te->ne[1] < 1 || te->ne[1] > (1 << 24))
        return ac_err(AC_ERR_FORMAT, "tensor token_embd.weight: shape must be [%lld x n_vocab]", (long long)D);
    hp->n_vocab = (int)te->ne[1];
    {
        int64_t ne[2] = {D, hp->n_vocab};
        if ((rc = ac_gguf_expect_tensor(ld->g, "token_embd.weight", 2, ne, &m->tok_embd, 1))) return rc;
    }
    if (bert) {
        const ac_gguf_tensor *tt = ac_gguf_find_tensor(ld->g, "token_types.weight");
        if (tt) {
            if (tt->n_dims != 2 || tt->ne[0] != D || tt->ne[1] < 1 || tt->ne[1] > 1024)
                return ac_err(AC_ERR_FORMAT, "tensor token_types.weight: shape must be [%lld x n_types]", (long long)D);
            int64_t ne[2] = {D, tt->ne[1]};
            if ((rc = ac_gguf_expect_tensor(ld->g, "token_types.weight", 2, ne, &tt, 1))) return rc;
            hp->n_types = (int)tt->ne[1];
            float *row = NULL;
            if ((rc = own_f32(m, (size_t)D, &row))) return rc;
            ac_row_to_f32(tt->type, tt->data, ggml_row_bytes(tt->type, D), 0, D, row);
            m->type_embd0 = row;
        }
        int64_t ne[2] = {D, hp->n_ctx_train};
        if ((rc = ac_gguf_expect_tensor(ld->g, "position_embd.weight", 2, ne, &m->pos_embd, 1))) return rc;
        if ((rc = get_vec(ld, "token_embd_norm.weight", D, 1, &m->embd_norm_w)) ||
            (rc = get_vec(ld, "token_embd_norm.bias", D, 1, &m->embd_norm_b)))
            return rc;
    } else {
        if ((rc = get_vec(ld, "output_norm.weight", D, 1, &m->out_norm_w))) return rc;
        if ((rc = get_mat(ld, "output.weight", D, hp->n_vocab, 0, &m->output))) return rc;
        if (!m->output.data) { /* tied: the LM head is the token embedding */
            mat_from_tensor(&m->output, m->tok_embd, "token_embd.weight", 0, hp->n_vocab);
            if ((rc = finish_mat(ld, &m->output))) return rc;
        }
        m->has_output = 1;
        if ((rc = get_vec(ld, "rope_freqs.weight", hp->n_rot / 2, 0, &m->rope_freqs))) return rc;
    }
    /* classifier head (optional) */
    if ((rc = get_mat(ld, "cls.weight", D, D, 0, &m->cls))) return rc;
    m->has_cls = m->cls.data != NULL;
    if (m->has_cls && (rc = get_vec(ld, "cls.bias", D, 1, &m->cls_b))) return rc;
    const ac_gguf_tensor *co = ac_gguf_find_tensor(ld->g, "cls.output.weight");
    if (co) {
        if (co->n_dims != 2 || co->ne[0] != D || co->ne[1] < 1 || co->ne[1] > (1 << 20))
            return ac_err(AC_ERR_FORMAT, "tensor cls.output.weight: shape must be [%lld x n_cls]", (long long)D);
        if ((rc = get_mat(ld, "cls.output.weight", D, co->ne[1], 1, &m->cls_out))) return rc;
        if ((rc = get_vec(ld, "cls.output.bias", co->ne[1], 0, &m->cls_out_b))) return rc;
        m->has_cls_out = 1;
        ac_gguf_str hin = {0, NULL};
        if ((rc = ac_gguf_get_str(ld->g, "attncache.head.input", &hin, 0))) return rc;
        if (hin.ptr && ac_gguf_str_eq(hin, "mean_l2")) m->cls_mean_l2 = 1;
        else if (hin.ptr && !ac_gguf_str_eq(hin, "token"))
            return ac_err(AC_ERR_UNSUPPORTED, "attncache.head.input '%.*s' (want mean_l2 or token)", (int)AC_MIN(hin.len, 32), hin.ptr);
    }
    m->layers = AC_CALLOC((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return AC_ERR_NOMEM;
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = load_layer(ld, il))) return rc;
    return AC_OK;
}

int ac_model_mats(ac_model *m, ac_mat **out, int cap) {
    int n = 0;
#define ADD(w)                                              \
    do {                                                    \
        if ((w)->data && (w)->n_out > 0 && n < cap) out[n++] = (w); \
    } while (0)
    for (int il = 0; il < m->hp.n_layer; il++) {
        ac_layer *L = &m->layers[il];
        ADD(&L->wq);
        ADD(&L->wk);
        ADD(&L->wv);
        ADD(&L->wo);
        ADD(&L->w_gate);
        ADD(&L->w_up);
        ADD(&L->w_down);
    }
    if (m->has_output) ADD(&m->output);
    if (m->has_cls) ADD(&m->cls);
    if (m->has_cls_out) ADD(&m->cls_out);
#undef ADD
    return n;
}

static int check_finite(ac_model *m) {
    const int cap = AC_MODEL_MAX_MATS(m);
    ac_mat **mats = AC_MALLOC((size_t)cap * sizeof *mats);
    if (!mats) return AC_ERR_NOMEM;
    int n = ac_model_mats(m, mats, cap), rc = AC_OK;
    float *row = NULL;
    size_t cap_row = 0;
    for (int i = 0; i < n && !rc; i++) {
        ac_mat *w = mats[i];
        if ((size_t)w->n_in > cap_row) {
            free(row);
            cap_row = (size_t)w->n_in;
            if (!(row = AC_MALLOC(cap_row * sizeof *row))) {
                rc = AC_ERR_NOMEM;
                break;
            }
        }
        for (int r = 0; r < w->n_out && !rc; r++) {
            ac_row_to_f32(w->type, w->data, w->row_bytes, r, w->n_in, row);
            for (int c = 0; c < w->n_in; c++)
                if (!isfinite(row[c])) {
                    rc = ac_err(AC_ERR_FORMAT, "tensor %s: non-finite value at row %d, column %d", w->name, r, c);
                    break;
                }
        }
    }
    free(row);
    free(mats);
    return rc;
}

/* Dominant weight type: most elements among 2-D tensors. */
static int dominant_type(const ac_gguf_file *g) {
    uint64_t cnt[64] = {0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ac_gguf_tensor *t = &g->tensors[i];
        if (t->n_dims == 2 && t->type < 64) cnt[t->type] += (uint64_t)t->ne[0] * (uint64_t)t->ne[1];
    }
    int best = 0;
    for (int k = 1; k < 64; k++)
        if (cnt[k] > cnt[best]) best = k;
    return best;
}

static int load_common(ac_model *m, const ac_model_params *params, int flags) {
    const ac_gguf_file *g = m->gguf;
    loader ld = {m, g, NULL};
    int rc;
    ac_gguf_str arch;
    if ((rc = ac_gguf_get_str(g, "general.architecture", &arch, 1))) return rc;
    snprintf(m->arch_name, sizeof m->arch_name, "%.*s", (int)AC_MIN(arch.len, 31), arch.ptr);
    if (params->vocab_only) { /* the tokenizer alone */
        if (!ac_gguf_find(g, "tokenizer.ggml.model"))
            return ac_err(AC_ERR_FORMAT, "no tokenizer metadata (tokenizer.ggml.model) to load");
        if ((rc = ac_vocab_load(g, &m->vocab))) return ac_err_prefix(rc, "tokenizer");
        m->vocab_only = 1;
        m->info.arch = -1;
        m->info.arch_name = m->arch_name;
        m->info.name = m->name;
        m->info.n_vocab = ac_vocab_n_tokens(m->vocab);
        return AC_OK;
    }
    if (ac_gguf_str_eq(arch, "llama")) m->info.arch = AC_ARCH_LLAMA;
    else if (ac_gguf_str_eq(arch, "qwen2")) m->info.arch = AC_ARCH_QWEN2;
    else if (ac_gguf_str_eq(arch, "bert")) m->info.arch = AC_ARCH_BERT;
    else return ac_err(AC_ERR_UNSUPPORTED, "unsupported architecture '%.*s'", (int)AC_MIN(arch.len, 64), arch.ptr);
    ld.arch = m->arch_name;
    ac_gguf_str name = {0, ""};
    if ((rc = ac_gguf_get_str(g, "general.name", &name, 0))) return rc;
    snprintf(m->name, sizeof m->name, "%.*s", (int)AC_MIN(name.len, sizeof m->name - 1), name.ptr);

    if ((rc = load_hparams(&ld))) return rc;
    if ((rc = load_tensors(&ld))) return rc;

    if (!(flags & AC_LOAD_NO_VOCAB) && ac_gguf_find(g, "tokenizer.ggml.model")) {
        if ((rc = ac_vocab_load(g, &m->vocab))) return ac_err_prefix(rc, "tokenizer");
    }
    if (params->check_tensors && (rc = check_finite(m))) return rc;

    const ac_hparams *hp = &m->hp;
    ac_model_info *in = &m->info;
    in->arch_name = m->arch_name;
    in->name = m->name;
    in->n_vocab = hp->n_vocab;
    in->n_ctx_train = hp->n_ctx_train;
    in->n_embd = hp->n_embd;
    in->n_layer = hp->n_layer;
    in->n_head = hp->n_head;
    in->n_head_kv = hp->n_head_kv;
    in->n_ff = hp->n_ff;
    in->head_dim = hp->head_dim;
    in->causal = hp->causal;
    in->pooling = hp->pooling;
    in->has_lm_head = m->has_output;
    in->n_cls_out = m->has_cls_out ? m->cls_out.n_out : m->has_cls ? hp->n_embd : 0;
    in->weight_type = dominant_type(g);
    size_t np = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        size_t e = 1;
        for (uint32_t d = 0; d < g->tensors[i].n_dims; d++) e *= (size_t)g->tensors[i].ne[d];
        np += e;
    }
    in->n_params = np;
    in->file_bytes = g->size;
    return AC_OK;
}

/* ---- public ---------------------------------------------------------------------------------- */

ac_model_params ac_model_default_params(void) {
    ac_model_params p = {1, 0, 1, 0}; /* exact (f32) arithmetic unless asked for the fast bf16 mode */
    return p;
}

/* ---- what backends prepared from the model ------------------------------------------------- */

typedef struct ac_model_prep {
    const void *owner;
    int kind;
    void *data;
    void (*release)(void *data);
    struct ac_model_prep *next;
} ac_model_prep;

struct ac_model_preps {
    pthread_mutex_t lock; /* guards `head` and every make() */
    ac_model_prep *head;
};

static int preps_new(ac_model *m) {
    struct ac_model_preps *p = AC_CALLOC(1, sizeof *p);
    if (!p) return AC_ERR_NOMEM;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return ac_err(AC_ERR_INTERNAL, "cannot create the model's lock");
    }
    m->preps = p;
    return AC_OK;
}

static void preps_free(struct ac_model_preps *p) {
    if (!p) return;
    for (ac_model_prep *e = p->head, *next; e; e = next) {
        next = e->next;
        if (e->release) e->release(e->data);
        free(e);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int ac_model_prepared(const ac_model *m, const void *owner, int kind, ac_prep_make_fn make, void *arg,
                      void (*release)(void *data), void **out) {
    if (!m || !m->preps || !make || !out) return ac_err(AC_ERR_ARG, "ac_model_prepared: invalid argument");
    *out = NULL;
    struct ac_model_preps *p = m->preps;
    int rc = AC_OK;
    pthread_mutex_lock(&p->lock);
    ac_model_prep *e = p->head;
    while (e && !(e->owner == owner && e->kind == kind)) e = e->next;
    if (e) {
        *out = e->data;
        goto done;
    }
    if (!(e = AC_CALLOC(1, sizeof *e))) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    void *data = NULL;
    if ((rc = make(m, kind, arg, &data)) != AC_OK) {
        free(e);
        goto done;
    }
    *e = (ac_model_prep){owner, kind, data, release, p->head};
    p->head = e;
    *out = data;
done:
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void ac_model_free(ac_model *m) {
    if (!m) return;
    preps_free(m->preps); /* before the mapping: prepared copies may point into it */
    free(m->layers);
    for (int i = 0; i < m->n_owned; i++) free(m->owned_f32[i]);
    free(m->owned_f32);
    if (m->vocab) ac_vocab_free(m->vocab);
    ac_gguf_close(m->gguf);
    free(m->file_buf);
    free(m);
}

static int finish_load(ac_model *m, const ac_model_params *p, int flags, ac_model **out, const char *what) {
    m->params = *p;
    m->load_flags = flags;
    int rc = preps_new(m);
    if (rc == AC_OK) rc = load_common(m, p, flags);
    if (rc) {
        ac_err_prefix(rc, "%s", what);
        ac_model_free(m);
        return rc;
    }
    *out = m;
    return AC_OK;
}

int ac_model_load_ex(const char *path, const ac_model_params *params, int flags, ac_model **out) {
    if (!path || !out) return ac_err(AC_ERR_ARG, "ac_model_load: NULL argument");
    *out = NULL;
    int rc;
    if ((rc = ac_cpu_check_env())) return rc; /* a bad AC_CPU is refused before any work */
    ac_model_params p = params ? *params : ac_model_default_params();
    ac_model *m = AC_CALLOC(1, sizeof *m);
    if (!m) return AC_ERR_NOMEM;
    if (p.use_mmap) {
        rc = ac_gguf_open(path, &m->gguf);
    } else {
        /* read the whole file into memory */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            rc = ac_err(AC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
            if (fd >= 0) close(fd);
            free(m);
            return rc;
        }
        size_t size = (size_t)st.st_size, got = 0;
        m->file_buf = AC_ALIGNED_ALLOC(size ? size : 1);
        if (!m->file_buf) {
            close(fd);
            free(m);
            return AC_ERR_NOMEM;
        }
        while (got < size) {
            ssize_t r = read(fd, (char *)m->file_buf + got, size - got);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                rc = ac_err(AC_ERR_IO, "%s: read failed at byte %zu", path, got);
                close(fd);
                free(m->file_buf);
                free(m);
                return rc;
            }
            got += (size_t)r;
        }
        close(fd);
        rc = ac_gguf_open_memory(m->file_buf, size, &m->gguf);
        if (rc) ac_err_prefix(rc, "%s", path);
    }
    if (rc) {
        free(m->file_buf);
        free(m);
        return rc;
    }
    return finish_load(m, &p, flags, out, path);
}

int ac_model_load(const char *path, const ac_model_params *params, ac_model **out) {
    return ac_model_load_ex(path, params, 0, out);
}

int ac_model_load_memory(const void *buf, size_t size, const ac_model_params *params, int flags, ac_model **out) {
    if (!buf || !out) return ac_err(AC_ERR_ARG, "ac_model_load_memory: NULL argument");
    *out = NULL;
    int crc = ac_cpu_check_env();
    if (crc) return crc;
    ac_model_params p = params ? *params : ac_model_default_params();
    ac_model *m = AC_CALLOC(1, sizeof *m);
    if (!m) return AC_ERR_NOMEM;
    const void *img = buf;
    if (!p.use_mmap) {
        m->file_buf = AC_ALIGNED_ALLOC(size ? size : 1);
        if (!m->file_buf) {
            free(m);
            return AC_ERR_NOMEM;
        }
        memcpy(m->file_buf, buf, size);
        img = m->file_buf;
    }
    int rc = ac_gguf_open_memory(img, size, &m->gguf);
    if (rc) {
        free(m->file_buf);
        free(m);
        return rc;
    }
    return finish_load(m, &p, flags, out, "model in memory");
}

int ac_model_get_info(const ac_model *m, ac_model_info *info) {
    if (!m || !info) return ac_err(AC_ERR_ARG, "ac_model_get_info: NULL argument");
    *info = m->info;
    return AC_OK;
}
