/* attn_local.c — attention restricted to per-head key spans (the attention
 * cache's head policy, forward.h `head_span`): row t of a restricted head
 * attends only to the first n_sink keys, a window around the diagonal
 * (causal: t-w < s <= t; bidirectional: |s-t| < w) and, bidirectional, the
 * last n_end keys. A head whose recorded maps put nearly all their mass there
 * (previous token, diagonal, [CLS] / BOS, [SEP]) loses only that outside mass:
 * the result is the exact attention renormalised over the span.
 *   ac_attn_heads        a site's heads under their spans: the fused kernel
 *                        one head at a time (ac_attn_args.win for the
 *                        restricted ones: key blocks outside the span skipped)
 *   ac_attn_local_rows   a plain reference of one restricted head (tests)
 *   ac_attn_span_ranges  the keys of one row (shared with the cache's profile) */
#include "forward/forward.h"
#include "util/common.h"

#include <math.h>

int ac_attn_span_ranges(int t, int L, int causal, int w, int n_sink, int n_end, int r[6]) {
    const int last = causal ? t : L - 1; /* last visible key */
    const int a1 = AC_MIN(n_sink, last + 1);
    const int b0 = AC_MAX(AC_MAX(t - w + 1, 0), a1);
    const int b1 = AC_MAX(causal ? t + 1 : AC_MIN(L, t + w), b0);
    const int c0 = causal ? L : AC_MAX(L - n_end, b1);
    r[0] = 0, r[1] = a1, r[2] = b0, r[3] = b1, r[4] = c0, r[5] = L;
    return a1 + (b1 - b0) + (L - c0);
}

void ac_attn_local_rows(const ac_attn_args *a, int h, int w, int n_sink, int n_end, int t0, int t1) {
    const int L = a->L, hd = a->hd, g = h / (a->H / a->Hkv);
    float s[AC_ATTN_LOCAL_MAX];
    for (int t = t0; t < t1; t++) {
        int r[6];
        const int n = ac_attn_span_ranges(t, L, a->causal, w, n_sink, n_end, r);
        const float *q = a->q + (size_t)t * a->ldq + (size_t)h * hd;
        float mx = -INFINITY;
        int k = 0;
        for (int p = 0; p < 6; p += 2)
            for (int j = r[p]; j < r[p + 1]; j++, k++) {
                const float *kr = a->k + (size_t)j * a->ldk + (size_t)g * hd;
                float d = 0;
                for (int i = 0; i < hd; i++) d += q[i] * kr[i];
                s[k] = d * a->scale;
                if (s[k] > mx) mx = s[k];
            }
        float sum = 0;
        for (k = 0; k < n; k++) sum += (s[k] = expf(s[k] - mx));
        const float inv = 1.0f / sum;
        float *o = a->out + (size_t)t * a->ldq + (size_t)h * hd;
        for (int i = 0; i < hd; i++) o[i] = 0;
        k = 0;
        for (int p = 0; p < 6; p += 2)
            for (int j = r[p]; j < r[p + 1]; j++, k++) {
                const float *vr = a->v + (size_t)j * a->ldk + (size_t)g * hd;
                const float pj = s[k] * inv;
                for (int i = 0; i < hd; i++) o[i] += pj * vr[i];
            }
        if (a->out_bf) ac_f32_to_bf16(a->out_bf + (size_t)t * a->ldq + (size_t)h * hd, o, (size_t)hd);
    }
}

int ac_attn_heads(const ac_attn_args *a, const int *span, int n_sink, int n_end, float *kt, ac_pool *pool) {
    n_sink = AC_MAX(n_sink, 0), n_end = a->causal ? 0 : AC_MAX(n_end, 0);
    int any = 0;
    for (int h = 0; h < a->H; h++) any |= span[h] > 0 && span[h] < a->L;
    if (!any) return -1;
    const int grp = a->H / a->Hkv;
    for (int h = 0; h < a->H; h++) {
        const int g = h / grp;
        ac_attn_args one = *a; /* head h alone: the same kernel, the same per-row arithmetic */
        one.q = a->q + (size_t)h * a->hd;
        one.k = a->k + (size_t)g * a->hd;
        one.v = a->v + (size_t)g * a->hd;
        one.out = a->out + (size_t)h * a->hd;
        one.out_bf = a->out_bf ? a->out_bf + (size_t)h * a->hd : NULL;
        one.H = one.Hkv = 1;
        one.win = span[h] > 0 && span[h] < a->L ? span[h] : 0;
        one.n_sink = one.win ? n_sink : 0;
        one.n_end = one.win ? n_end : 0;
        const int rc = ac_attn_fused(&one, kt, pool); /* key blocks outside the span skipped */
        if (rc) return rc;
    }
    return AC_OK;
}
