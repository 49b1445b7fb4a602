/* layer0_rows.c — exact rows of a sequence's layer-0 attention maps from its
 * layer-0 states, without a context: what the attention cache's verification
 * (ac_cache_params.verify) compares a retrieved map with before trusting it.
 * Plain loops over f32 weight copies (ac_layer0_qk); the work is one K
 * projection of L rows and a few query rows. */
#include "forward/forward.h"
#include "load/model.h"
#include "util/common.h"

#include <math.h>
#include <string.h>

int ac_layer0_qk_init(const ac_model *m, ac_layer0_qk *w) {
    memset(w, 0, sizeof *w);
    const ac_hparams *hp = &m->hp;
    const ac_layer *l0 = &m->layers[0];
    const int D = hp->n_embd, QD = hp->n_head * hp->head_dim, KVD = hp->n_head_kv * hp->head_dim;
    w->wq = AC_MALLOC((size_t)QD * D * sizeof(float));
    w->wk = AC_MALLOC((size_t)KVD * D * sizeof(float));
    if (!w->wq || !w->wk) {
        ac_layer0_qk_free(w);
        return ac_err(AC_ERR_NOMEM, "layer-0 rows: out of memory for the Q/K weights");
    }
    ac_mat_rows_f32(&l0->wq, 0, QD, w->wq);
    ac_mat_rows_f32(&l0->wk, 0, KVD, w->wk);
    w->m = m;
    return AC_OK;
}

void ac_layer0_qk_free(ac_layer0_qk *w) {
    free(w->wq);
    free(w->wk);
    memset(w, 0, sizeof *w);
}

/* y [n] = W [n][D] x [D] + b */
static void gemv(const float *W, const float *b, const float *x, int n, int D, float *y) {
    for (int o = 0; o < n; o++) {
        const float *wr = W + (size_t)o * D;
        float s = 0;
        for (int d = 0; d < D; d++) s += wr[d] * x[d];
        y[o] = s + (b ? b[o] : 0.0f);
    }
}

int ac_layer0_rows(const ac_layer0_qk *w, const float *x0, int L, const int *rows, int nr, float *P) {
    const ac_model *m = w->m;
    const ac_hparams *hp = &m->hp;
    const ac_layer *l0 = &m->layers[0];
    const int D = hp->n_embd, H = hp->n_head, Hkv = hp->n_head_kv, hd = hp->head_dim;
    const int QD = H * hd, KVD = Hkv * hd, rope = m->info.arch != AC_ARCH_BERT, half = hp->n_rot / 2;
    float *K = AC_MALLOC((size_t)L * KVD * sizeof(float)), *q = AC_MALLOC((size_t)QD * sizeof(float));
    float *cs = AC_MALLOC(((size_t)half + 1) * 2 * sizeof(float)), *s = AC_MALLOC((size_t)L * sizeof(float));
    if (!K || !q || !cs || !s) {
        free(K), free(q), free(cs), free(s);
        return ac_err(AC_ERR_NOMEM, "layer-0 rows: out of memory");
    }
    for (int j = 0; j < L; j++) {
        gemv(w->wk, l0->bk, x0 + (size_t)j * D, KVD, D, K + (size_t)j * KVD);
        if (rope) {
            ac_model_rope_cs(m, j, cs);
            ac_rope_row(K + (size_t)j * KVD, Hkv, hd, hp->n_rot, hp->rope_neox, cs);
        }
    }
    const float scale = 1.0f / sqrtf((float)hd);
    for (int r = 0; r < nr; r++) {
        const int t = rows[r], nv = hp->causal ? t + 1 : L;
        gemv(w->wq, l0->bq, x0 + (size_t)t * D, QD, D, q);
        if (rope) {
            ac_model_rope_cs(m, t, cs);
            ac_rope_row(q, H, hd, hp->n_rot, hp->rope_neox, cs);
        }
        for (int h = 0; h < H; h++) {
            const int g = h / (H / Hkv);
            const float *qh = q + (size_t)h * hd;
            float mx = -INFINITY;
            for (int j = 0; j < nv; j++) {
                const float *kj = K + (size_t)j * KVD + (size_t)g * hd;
                float d = 0;
                for (int i = 0; i < hd; i++) d += qh[i] * kj[i];
                s[j] = d * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            double sum = 0;
            for (int j = 0; j < nv; j++) sum += s[j] = expf(s[j] - mx);
            float *p = P + ((size_t)h * nr + r) * L;
            for (int j = 0; j < nv; j++) p[j] = (float)(s[j] / sum);
            for (int j = nv; j < L; j++) p[j] = 0.0f;
        }
    }
    free(K), free(q), free(cs), free(s);
    return AC_OK;
}
