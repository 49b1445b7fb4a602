/* cuda_upload.cu — ac_cuda_model_upload: a loaded model's weights to the GPU
 * (the only part of the CUDA backend that reads ac_model weights). Matrices of
 * any type the loader reads are widened to f32 on the host, then stored in
 * the precision's type; Wq/Wk/Wv and Wgate/Wup are stacked into one matrix each. */
#include "cuda_model.h"

#include <stdlib.h>
#include <string.h>

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
    int rc = ac_cu_dmalloc(dst, rows * K * ac_cu_tsize(prec));
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
    int rc = ac_cu_upload_f32(dst, tmp, (size_t)n0 + n1 + n2);
    free(tmp);
    return rc;
}

/* A gguf tensor [rows][n] of any readable type as device f32. */
static int upload_tensor_f32(float **dst, const ac_gguf_tensor *t) {
    *dst = NULL;
    if (!t) return AC_OK;
    const int64_t n = t->ne[0], rows = t->ne[1];
    float *tmp = (float *)malloc((size_t)(n * rows) * 4);
    if (!tmp) return AC_ERR_NOMEM;
    const size_t rb = ggml_row_bytes(t->type, n);
    for (int64_t r = 0; r < rows; r++) ac_row_to_f32(t->type, t->data, rb, r, n, tmp + r * n);
    int rc = ac_cu_upload_f32(dst, tmp, (size_t)(n * rows));
    free(tmp);
    return rc;
}

int ac_cuda_model_upload(const ac_model *m, int prec, ac_cuda_model **out) {
    if (!m || !out || (prec != AC_CUDA_BF16 && prec != AC_CUDA_F32))
        return ac_err(AC_ERR_ARG, "ac_cuda_model_upload: invalid argument");
    *out = NULL;
    if (m->vocab_only) return ac_err(AC_ERR_ARG, "model was loaded vocab-only (no weights)");
    ac_cuda_model *g = (ac_cuda_model *)calloc(1, sizeof *g);
    if (!g) return AC_ERR_NOMEM;
    g->m = m, g->arch = m->info.arch, g->prec = prec, g->hp = m->hp;
    int rc = ac_cu_shapes(g);
    if (!rc) rc = ac_cu_common_init(g);
    const int D = g->D;
    if (!rc) rc = upload_tensor_f32(&g->tok, m->tok_embd);
    if (!rc && g->bert) {
        if (!m->pos_embd || !m->embd_norm_w) rc = ac_err(AC_ERR_FORMAT, "bert model without position embeddings");
        if (!rc) rc = upload_tensor_f32(&g->pos, m->pos_embd);
        if (!rc) rc = ac_cu_upload_f32(&g->type0, m->type_embd0, D);
        if (!rc) rc = ac_cu_upload_f32(&g->en_w, m->embd_norm_w, D);
        if (!rc) rc = ac_cu_upload_f32(&g->en_b, m->embd_norm_b, D);
    }
    if (!rc && !g->bert) rc = ac_cu_upload_f32(&g->out_norm, m->out_norm_w, D);
    for (int il = 0; il < g->hp.n_layer && !rc; il++) {
        const ac_layer *l = &m->layers[il];
        cu_layer *c = &g->L[il];
        const ac_mat *qkv[3] = {&l->wq, &l->wk, &l->wv};
        if ((rc = upload_mats(&c->wqkv, qkv, 3, prec))) break;
        if ((rc = upload_bias3(&c->bqkv, l->bq, g->QD, l->bk, g->KVD, l->bv, g->KVD))) break;
        const ac_mat *wo[1] = {&l->wo};
        if ((rc = upload_mats(&c->wo, wo, 1, prec)) || (rc = ac_cu_upload_f32(&c->bo, l->bo, D))) break;
        if (g->bert) {
            const ac_mat *up[1] = {&l->w_up};
            if ((rc = upload_mats(&c->wgu, up, 1, prec)) || (rc = ac_cu_upload_f32(&c->bup, l->b_up, g->F))) break;
        } else {
            const ac_mat *gu[2] = {&l->w_gate, &l->w_up};
            if ((rc = upload_mats(&c->wgu, gu, 2, prec))) break;
        }
        const ac_mat *dn[1] = {&l->w_down};
        if ((rc = upload_mats(&c->wdown, dn, 1, prec)) || (rc = ac_cu_upload_f32(&c->bdown, l->b_down, D))) break;
        if ((rc = ac_cu_upload_f32(&c->n1w, l->norm1_w, D)) || (rc = ac_cu_upload_f32(&c->n1b, l->norm1_b, D)) ||
            (rc = ac_cu_upload_f32(&c->n2w, l->norm2_w, D)) || (rc = ac_cu_upload_f32(&c->n2b, l->norm2_b, D)))
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
        if (g->has_cls && !(rc = upload_mats(&g->cls, c1, 1, prec))) rc = ac_cu_upload_f32(&g->cls_b, m->cls_b, D);
        if (!rc && g->has_cls_out && !(rc = upload_mats(&g->cls_out, c2, 1, prec)))
            rc = ac_cu_upload_f32(&g->cls_out_b, m->cls_out_b, g->n_cls);
    }
    if (rc) {
        ac_cuda_model_free(g);
        return rc;
    }
    *out = g;
    return AC_OK;
}

