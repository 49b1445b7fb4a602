/* projector.c — feature projector: 2-layer MLP, Siamese training with a
 * SmoothL1 loss on pair distances, Adam; persistence as GGUF. */
#include "projector.h"
#include "q8mat.h"

#include "cache/kernels.h"
#include "load/gguf.h"
#include "util/common.h"
#include "util/cpu.h"

#include <math.h>
#include <string.h>

ac_proj_train_params ac_proj_default_train_params(void) {
    ac_proj_train_params p = {.epochs = 30, .batch = 64, .lr = 1e-3f, .beta = 0, .seed = 1, .verbose = 0};
    return p;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static float gauss(uint64_t *s) { /* Box-Muller */
    double u1 = ((splitmix(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int proj_alloc(int in, int hid, int out, ac_projector **res) {
    *res = NULL;
    if (in <= 0 || hid <= 0 || out <= 0 || in > (1 << 24) || hid > (1 << 16) || out > (1 << 16))
        return ac_err(AC_ERR_ARG, "projector: bad dimensions %d -> %d -> %d", in, hid, out);
    ac_projector *p = AC_CALLOC(1, sizeof *p);
    if (!p) return AC_ERR_NOMEM;
    p->in_dim = in;
    p->hidden = hid;
    p->out_dim = out;
    p->mu = AC_CALLOC((size_t)in, sizeof(float));
    p->isig = AC_CALLOC((size_t)in, sizeof(float));
    p->w1 = AC_CALLOC((size_t)hid * in, sizeof(float));
    p->b1 = AC_CALLOC((size_t)hid, sizeof(float));
    p->w2 = AC_CALLOC((size_t)out * hid, sizeof(float));
    p->b2 = AC_CALLOC((size_t)out, sizeof(float));
    if (!p->mu || !p->isig || !p->w1 || !p->b1 || !p->w2 || !p->b2) {
        ac_proj_free(p);
        return AC_ERR_NOMEM;
    }
    *res = p;
    return AC_OK;
}

int ac_proj_new(int in_dim, int hidden, int out_dim, uint64_t seed, ac_projector **out) {
    int rc = proj_alloc(in_dim, hidden, out_dim, out);
    if (rc != AC_OK) return rc;
    ac_projector *p = *out;
    uint64_t s = seed ? seed : 1;
    float s1 = sqrtf(2.0f / (float)in_dim), s2 = sqrtf(1.0f / (float)hidden);
    for (size_t i = 0; i < (size_t)hidden * in_dim; i++) p->w1[i] = s1 * gauss(&s);
    for (size_t i = 0; i < (size_t)out_dim * hidden; i++) p->w2[i] = s2 * gauss(&s);
    for (int i = 0; i < in_dim; i++) p->isig[i] = 1.0f;
    if ((rc = ac_proj_pack(p)) != AC_OK) {
        ac_proj_free(p);
        *out = NULL;
    }
    return rc;
}

int ac_proj_pack(ac_projector *p) {
    if (!p) return ac_err(AC_ERR_ARG, "ac_proj_pack: NULL projector");
    ac_q8mat_free(&p->k1);
    ac_q8mat_free(&p->k2);
    if (p->in_dim > AC_Q8MAT_MAX_COLS || p->hidden > AC_Q8MAT_MAX_COLS) return AC_OK; /* too wide: f32 keys */
    int rc = ac_q8mat_pack(p->w1, p->hidden, p->in_dim, &p->k1);
    if (!rc) rc = ac_q8mat_pack(p->w2, p->out_dim, p->hidden, &p->k2);
    if (rc) ac_q8mat_free(&p->k1);
    return rc;
}

void ac_proj_free(ac_projector *p) {
    if (!p) return;
    free(p->mu);
    free(p->isig);
    free(p->w1);
    free(p->b1);
    free(p->w2);
    free(p->b2);
    ac_q8mat_free(&p->k1);
    ac_q8mat_free(&p->k2);
    free(p);
}

/* y[r] = b[r] + W[r] . x for r < rows (W [rows][n] row-major): four rows at a
 * time with independent accumulators in the SIMD kernels (projector_avx2.c,
 * projector_avx512.c; the plain loop is bound by the latency of one
 * reduction chain: 130 us for a 1537 -> 256 -> 128 lookup key, ~10% of a
 * short MiniLM query; four rows are ~8x faster). Sums run in a different
 * order per level: results differ in the last bits between levels. */
static void gemv(const float *W, const float *b, const float *x, int rows, int n, float *y, int relu) {
    int r = 0;
    ac_proj_gemv4_fn gemv4 = NULL;
#if AC_CACHE_X86
    const int lv = ac_cpu_level();
    gemv4 = lv >= AC_CPU_AVX512 ? ac_proj_gemv4_avx512 : lv >= AC_CPU_AVX2 ? ac_proj_gemv4_avx2 : NULL;
#endif
    if (gemv4)
        for (; r + 4 <= rows; r += 4) gemv4(W, b, x, r, n, y, relu);
    for (; r < rows; r++) {
        const float *w = W + (size_t)r * n;
        float acc = b[r];
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < n; i++) acc += w[i] * x[i];
        y[r] = relu && acc < 0 ? 0 : acc;
    }
}

/* One vector through the network, keeping the intermediates for backprop.
 * u [in] standardised input, hpre [hidden], h [hidden], z [out]. */
static void fwd_one(const ac_projector *p, const float *x, float *u, float *hpre, float *h, float *z) {
    for (int i = 0; i < p->in_dim; i++) u[i] = (x[i] - p->mu[i]) * p->isig[i];
    gemv(p->w1, p->b1, u, p->hidden, p->in_dim, hpre, 0);
    for (int r = 0; r < p->hidden; r++) h[r] = hpre[r] > 0 ? hpre[r] : 0;
    gemv(p->w2, p->b2, h, p->out_dim, p->hidden, z, 0);
}

/* The lookup path: int8 weights times uint8 activations. u [in] f32 scratch,
 * h [hidden], x8 [max(ld1, ld2)]. */
static void apply_one(const ac_projector *p, const float *x, float *u, float *h, uint8_t *x8, float *z) {
    for (int i = 0; i < p->in_dim; i++) u[i] = (x[i] - p->mu[i]) * p->isig[i];
    float sx = ac_q8_quant_u8(u, p->in_dim, p->k1.ld, 0, x8);
    ac_q8mat_gemv(&p->k1, p->b1, x8, sx, 128, h, 1);
    sx = ac_q8_quant_u8(h, p->hidden, p->k2.ld, 1, x8);
    ac_q8mat_gemv(&p->k2, p->b2, x8, sx, 0, z, 0);
}

/* scratch floats for apply_one */
static size_t key_scratch(const ac_projector *p) {
    return (size_t)p->in_dim + (size_t)p->hidden + (size_t)AC_MAX(p->in_dim, p->hidden) / 4 + 32;
}

int ac_proj_key(const ac_projector *p, const float *x, float *z) {
    if (!p || !x || !z) return ac_err(AC_ERR_ARG, "ac_proj_key: invalid argument");
    if (!p->k1.w) return ac_proj_apply(p, x, 1, z);
    float *u = malloc(key_scratch(p) * sizeof *u);
    if (!u) return ac_err(AC_ERR_NOMEM, "ac_proj_key: out of memory");
    apply_one(p, x, u, u + p->in_dim, (uint8_t *)(u + p->in_dim + p->hidden), z);
    free(u);
    return AC_OK;
}

int ac_proj_keys(const ac_projector *p, const float *x, int n, float *z) {
    if (!p || (!x && n) || (!z && n) || n < 0) return ac_err(AC_ERR_ARG, "ac_proj_keys: invalid argument");
    if (!p->k1.w || n <= 1) return n == 1 ? ac_proj_key(p, x, z) : ac_proj_apply(p, x, n, z);
    const int in = p->in_dim, hid = p->hidden, ld1 = p->k1.ld, ld2 = p->k2.ld;
    /* u [in] one standardised row; x1 [n][ld1], x2 [n][ld2] codes; s1, s2 [n] their scales; h [n][hid] */
    float *u = malloc(((size_t)in + 2 * (size_t)n + (size_t)n * hid) * sizeof *u);
    uint8_t *x1 = malloc((size_t)n * ((size_t)ld1 + ld2));
    if (!u || !x1) {
        free(u), free(x1);
        return ac_err(AC_ERR_NOMEM, "ac_proj_keys: out of memory for %d keys", n);
    }
    float *s1 = u + in, *s2 = s1 + n, *h = s2 + n;
    uint8_t *x2 = x1 + (size_t)n * ld1;
    for (int i = 0; i < n; i++) { /* apply_one's steps, row by row */
        const float *xi = x + (size_t)i * in;
        for (int j = 0; j < in; j++) u[j] = (xi[j] - p->mu[j]) * p->isig[j];
        s1[i] = ac_q8_quant_u8(u, in, ld1, 0, x1 + (size_t)i * ld1);
    }
    ac_q8mat_gemm(&p->k1, p->b1, x1, ld1, s1, n, 128, h, hid, 1);
    for (int i = 0; i < n; i++) s2[i] = ac_q8_quant_u8(h + (size_t)i * hid, hid, ld2, 1, x2 + (size_t)i * ld2);
    ac_q8mat_gemm(&p->k2, p->b2, x2, ld2, s2, n, 0, z, p->out_dim, 0);
    free(u), free(x1);
    return AC_OK;
}

int ac_proj_apply(const ac_projector *p, const float *x, int n, float *z) {
    if (!p || (!x && n) || (!z && n) || n < 0) return ac_err(AC_ERR_ARG, "ac_proj_apply: invalid argument");
    const int in = p->in_dim, hid = p->hidden;
    const size_t scratch = AC_MAX(key_scratch(p), (size_t)in + 2 * (size_t)hid);
    int rc = AC_OK;
#pragma omp parallel if (n > 4) /* one lookup vector: no thread start-up */
    {
        float *u = malloc(scratch * sizeof *u);
        if (!u) {
#pragma omp atomic write
            rc = AC_ERR_NOMEM;
        } else {
#pragma omp for schedule(static)
            for (int i = 0; i < n; i++) {
                if (p->k1.w)
                    apply_one(p, x + (size_t)i * in, u, u + in, (uint8_t *)(u + in + hid), z + (size_t)i * p->out_dim);
                else
                    fwd_one(p, x + (size_t)i * in, u, u + in, u + in + hid, z + (size_t)i * p->out_dim);
            }
        }
        free(u);
    }
    if (rc != AC_OK) return ac_err(rc, "ac_proj_apply: out of memory");
    return AC_OK;
}

static double pair_dist(const float *za, const float *zb, int d) {
    double s = 0;
    for (int k = 0; k < d; k++) {
        double t = (double)za[k] - zb[k];
        s += t * t;
    }
    return sqrt(s);
}

double ac_proj_eval_mae(const ac_projector *p, const float *X, const ac_proj_pair *pairs, int n_pairs) {
    if (!p || !X || !pairs || n_pairs <= 0) return NAN;
    float *za = malloc((size_t)2 * p->out_dim * sizeof *za);
    if (!za) return NAN;
    double mae = 0;
    for (int i = 0; i < n_pairs; i++) {
        ac_proj_apply(p, X + (size_t)pairs[i].a * p->in_dim, 1, za);
        ac_proj_apply(p, X + (size_t)pairs[i].b * p->in_dim, 1, za + p->out_dim);
        mae += fabs(pair_dist(za, za + p->out_dim, p->out_dim) - pairs[i].target);
    }
    free(za);
    return mae / n_pairs;
}

/* Adam update of n parameters. */
static void adam(float *w, const float *g, float *m, float *v, size_t n, float lr, int t) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)t)), c2 = 1.0f / (1.0f - powf(b2, (float)t));
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        w[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
    }
}

int ac_proj_train(ac_projector *p, const float *X, int n, const ac_proj_pair *pairs, int n_pairs,
                  const ac_proj_train_params *tpp, double *final_loss) {
    if (!p || !X || n <= 1 || !pairs || n_pairs <= 0) return ac_err(AC_ERR_ARG, "ac_proj_train: invalid argument");
    ac_proj_train_params tp = tpp ? *tpp : ac_proj_default_train_params();
    if (tp.epochs <= 0 || tp.batch <= 0 || !(tp.lr > 0)) return ac_err(AC_ERR_ARG, "ac_proj_train: bad parameters");
    for (int i = 0; i < n_pairs; i++)
        if (pairs[i].a < 0 || pairs[i].a >= n || pairs[i].b < 0 || pairs[i].b >= n || !isfinite(pairs[i].target))
            return ac_err(AC_ERR_ARG, "ac_proj_train: pair %d out of range or non-finite", i);
    const int in = p->in_dim, hid = p->hidden, out = p->out_dim;
    const int B = AC_MIN(tp.batch, n_pairs), NV = 2 * B;
    const size_t n1 = (size_t)hid * in, n2 = (size_t)out * hid;
    int rc = AC_OK;

    /* standardisation from the training rows */
    for (int i = 0; i < in; i++) {
        double s = 0, ss = 0;
        for (int r = 0; r < n; r++) {
            double v = X[(size_t)r * in + i];
            s += v;
            ss += v * v;
        }
        double mean = s / n, var = ss / n - mean * mean;
        p->mu[i] = (float)mean;
        p->isig[i] = (float)(1.0 / sqrt(var > 1e-12 ? var : 1e-12));
    }
    double tmean = 0;
    for (int i = 0; i < n_pairs; i++) tmean += pairs[i].target;
    tmean /= n_pairs;
    const float beta = tp.beta > 0 ? tp.beta : (float)(0.1 * (tmean > 0 ? tmean : 1));

    /* buffers: per vector u[in], hpre[hid], h[hid], z[out], gz[out], gh[hid] */
    float *U = AC_MALLOC((size_t)NV * in * sizeof(float));
    float *HP = AC_MALLOC((size_t)NV * hid * sizeof(float)), *H = AC_MALLOC((size_t)NV * hid * sizeof(float));
    float *Z = AC_MALLOC((size_t)NV * out * sizeof(float)), *GZ = AC_MALLOC((size_t)NV * out * sizeof(float));
    float *GH = AC_MALLOC((size_t)NV * hid * sizeof(float));
    float *g1 = AC_MALLOC(n1 * sizeof(float)), *gb1 = AC_MALLOC((size_t)hid * sizeof(float));
    float *g2 = AC_MALLOC(n2 * sizeof(float)), *gb2 = AC_MALLOC((size_t)out * sizeof(float));
    float *m1 = AC_CALLOC(n1, sizeof(float)), *v1 = AC_CALLOC(n1, sizeof(float));
    float *m2 = AC_CALLOC(n2, sizeof(float)), *v2 = AC_CALLOC(n2, sizeof(float));
    float *mb1 = AC_CALLOC((size_t)hid, sizeof(float)), *vb1 = AC_CALLOC((size_t)hid, sizeof(float));
    float *mb2 = AC_CALLOC((size_t)out, sizeof(float)), *vb2 = AC_CALLOC((size_t)out, sizeof(float));
    int *order = AC_MALLOC((size_t)n_pairs * sizeof(int));
    if (!U || !HP || !H || !Z || !GZ || !GH || !g1 || !gb1 || !g2 || !gb2 || !m1 || !v1 || !m2 || !v2 || !mb1 ||
        !vb1 || !mb2 || !vb2 || !order) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < n_pairs; i++) order[i] = i;
    uint64_t s = tp.seed ? tp.seed : 1;
    int step = 0;
    double epoch_loss = 0;
    for (int ep = 0; ep < tp.epochs; ep++) {
        for (int i = n_pairs - 1; i > 0; i--) { /* shuffle */
            int j = (int)(splitmix(&s) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        epoch_loss = 0;
        for (int b0 = 0; b0 < n_pairs; b0 += B) {
            const int nb = AC_MIN(B, n_pairs - b0), nv = 2 * nb;
            /* forward both sides of every pair */
#pragma omp parallel for schedule(static)
            for (int v = 0; v < nv; v++) {
                const ac_proj_pair *pr = &pairs[order[b0 + v / 2]];
                int row = (v & 1) ? pr->b : pr->a;
                fwd_one(p, X + (size_t)row * in, U + (size_t)v * in, HP + (size_t)v * hid, H + (size_t)v * hid,
                        Z + (size_t)v * out);
            }
            /* loss and dL/dz */
            for (int k = 0; k < nb; k++) {
                const float *za = Z + (size_t)(2 * k) * out, *zb = Z + (size_t)(2 * k + 1) * out;
                double d = pair_dist(za, zb, out), e = d - pairs[order[b0 + k]].target;
                double ae = fabs(e), l = ae < beta ? 0.5 * e * e / beta : ae - 0.5 * beta;
                double dl = ae < beta ? e / beta : (e > 0 ? 1 : -1);
                epoch_loss += l;
                double sc = dl / (d > 1e-12 ? d : 1e-12) / nb;
                for (int o = 0; o < out; o++) {
                    float g = (float)(sc * ((double)za[o] - zb[o]));
                    GZ[(size_t)(2 * k) * out + o] = g;
                    GZ[(size_t)(2 * k + 1) * out + o] = -g;
                }
            }
            /* layer 2 grads; gh = W2^T gz masked by relu */
#pragma omp parallel for schedule(static)
            for (int o = 0; o < out; o++) {
                float *gw = g2 + (size_t)o * hid;
                memset(gw, 0, (size_t)hid * sizeof *gw);
                float gb = 0;
                for (int v = 0; v < nv; v++) {
                    float g = GZ[(size_t)v * out + o];
                    const float *h = H + (size_t)v * hid;
                    gb += g;
#pragma omp simd
                    for (int r = 0; r < hid; r++) gw[r] += g * h[r];
                }
                gb2[o] = gb;
            }
#pragma omp parallel for schedule(static)
            for (int v = 0; v < nv; v++) {
                float *gh = GH + (size_t)v * hid;
                const float *gz = GZ + (size_t)v * out, *hp = HP + (size_t)v * hid;
                for (int r = 0; r < hid; r++) gh[r] = 0;
                for (int o = 0; o < out; o++) {
                    const float *w = p->w2 + (size_t)o * hid;
                    float g = gz[o];
#pragma omp simd
                    for (int r = 0; r < hid; r++) gh[r] += g * w[r];
                }
                for (int r = 0; r < hid; r++)
                    if (hp[r] <= 0) gh[r] = 0;
            }
            /* layer 1 grads: each thread owns rows of g1 */
#pragma omp parallel for schedule(static)
            for (int r = 0; r < hid; r++) {
                float *gw = g1 + (size_t)r * in;
                memset(gw, 0, (size_t)in * sizeof *gw);
                float gb = 0;
                for (int v = 0; v < nv; v++) {
                    float g = GH[(size_t)v * hid + r];
                    if (g == 0) continue;
                    gb += g;
                    const float *u = U + (size_t)v * in;
#pragma omp simd
                    for (int i = 0; i < in; i++) gw[i] += g * u[i];
                }
                gb1[r] = gb;
            }
            step++;
            adam(p->w1, g1, m1, v1, n1, tp.lr, step);
            adam(p->b1, gb1, mb1, vb1, (size_t)hid, tp.lr, step);
            adam(p->w2, g2, m2, v2, n2, tp.lr, step);
            adam(p->b2, gb2, mb2, vb2, (size_t)out, tp.lr, step);
        }
        epoch_loss /= n_pairs;
        if (tp.verbose) fprintf(stderr, "projector: epoch %d/%d loss %.6f\n", ep + 1, tp.epochs, epoch_loss);
        if (!isfinite(epoch_loss)) {
            rc = ac_err(AC_ERR_INTERNAL, "projector training diverged (loss %g at epoch %d); lower the learning rate",
                        epoch_loss, ep + 1);
            goto done;
        }
    }
    if (final_loss) *final_loss = epoch_loss;
    rc = ac_proj_pack(p);
done:
    free(U), free(HP), free(H), free(Z), free(GZ), free(GH);
    free(g1), free(gb1), free(g2), free(gb2), free(m1), free(v1), free(m2), free(v2);
    free(mb1), free(vb1), free(mb2), free(vb2), free(order);
    if (rc == AC_ERR_NOMEM) ac_err(rc, "projector training: out of memory");
    return rc;
}

/* ---- persistence ------------------------------------------------------------------------ */

uint64_t ac_proj_fingerprint(const ac_projector *p) {
    uint64_t h = 1469598103934665603ULL;
#define FNV(ptr, n)                                                                                                    \
    do {                                                                                                               \
        const unsigned char *b_ = (const unsigned char *)(ptr);                                                        \
        for (size_t i_ = 0; i_ < (n); i_++) h = (h ^ b_[i_]) * 1099511628211ULL;                                       \
    } while (0)
    int dims[3] = {p->in_dim, p->hidden, p->out_dim};
    FNV(dims, sizeof dims);
    FNV(p->mu, (size_t)p->in_dim * 4);
    FNV(p->isig, (size_t)p->in_dim * 4);
    FNV(p->w1, (size_t)p->hidden * p->in_dim * 4);
    FNV(p->b1, (size_t)p->hidden * 4);
    FNV(p->w2, (size_t)p->out_dim * p->hidden * 4);
    FNV(p->b2, (size_t)p->out_dim * 4);
#undef FNV
    return h;
}

int ac_proj_save(const ac_projector *p, const char *path) {
    if (!p || !path) return ac_err(AC_ERR_ARG, "ac_proj_save: invalid argument");
    ac_gguf_writer *w = ac_gguf_writer_new();
    if (!w) return ac_err(AC_ERR_NOMEM, "ac_proj_save: out of memory");
    int64_t in = p->in_dim, hid = p->hidden, out = p->out_dim;
    int64_t ne_in[1] = {in}, ne_h[1] = {hid}, ne_o[1] = {out}, ne_w1[2] = {in, hid}, ne_w2[2] = {hid, out};
    int rc = ac_gguf_w_str(w, "general.architecture", "attncache-projector");
    if (!rc) rc = ac_gguf_w_u32(w, "projector.in_dim", (uint32_t)in);
    if (!rc) rc = ac_gguf_w_u32(w, "projector.hidden", (uint32_t)hid);
    if (!rc) rc = ac_gguf_w_u32(w, "projector.out_dim", (uint32_t)out);
    if (!rc) rc = ac_gguf_w_u64(w, "projector.trained_on", p->trained_on);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.mu", GGML_F32, 1, ne_in, p->mu);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.isig", GGML_F32, 1, ne_in, p->isig);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.w1", GGML_F32, 2, ne_w1, p->w1);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.b1", GGML_F32, 1, ne_h, p->b1);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.w2", GGML_F32, 2, ne_w2, p->w2);
    if (!rc) rc = ac_gguf_w_tensor(w, "proj.b2", GGML_F32, 1, ne_o, p->b2);
    if (!rc) rc = ac_gguf_w_write(w, path, 3);
    ac_gguf_writer_free(w);
    if (rc) ac_err_prefix(rc, "saving projector '%s'", path);
    return rc;
}

static int load_f32(const ac_gguf_file *g, const char *name, uint32_t nd, const int64_t *ne, float *dst, size_t n) {
    const ac_gguf_tensor *t;
    int rc = ac_gguf_expect_tensor(g, name, nd, ne, &t, 1);
    if (rc) return rc;
    if (t->type != GGML_F32) return ac_err(AC_ERR_FORMAT, "projector tensor %s: type %s, want F32", name,
                                           ggml_dtype_name(t->type));
    memcpy(dst, t->data, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return ac_err(AC_ERR_FORMAT, "projector tensor %s: non-finite value at %zu", name, i);
    return AC_OK;
}

int ac_proj_load(const char *path, ac_projector **out) {
    if (!path || !out) return ac_err(AC_ERR_ARG, "ac_proj_load: invalid argument");
    *out = NULL;
    ac_gguf_file *g = NULL;
    ac_projector *p = NULL;
    int rc = ac_gguf_open(path, &g);
    if (rc) goto fail;
    ac_gguf_str arch;
    if ((rc = ac_gguf_get_str(g, "general.architecture", &arch, 1))) goto fail;
    if (!ac_gguf_str_eq(arch, "attncache-projector")) {
        rc = ac_err(AC_ERR_FORMAT, "not a projector file (architecture '%.*s')", (int)AC_MIN(arch.len, 64),
                    arch.ptr);
        goto fail;
    }
    int64_t in = 0, hid = 0, od = 0, tr = 0;
    if ((rc = ac_gguf_get_int(g, "projector.in_dim", &in, 1)) || (rc = ac_gguf_get_int(g, "projector.hidden", &hid, 1)) ||
        (rc = ac_gguf_get_int(g, "projector.out_dim", &od, 1)))
        goto fail;
    const ac_gguf_kv *trk = ac_gguf_find(g, "projector.trained_on"); /* u64: beyond ac_gguf_get_int's int64 */
    if (trk && trk->type != AC_GGUF_T_UINT64) {
        rc = ac_err(AC_ERR_FORMAT, "key projector.trained_on: expected uint64");
        goto fail;
    }
    if (trk) tr = (int64_t)trk->v.u64;
    if (in <= 0 || hid <= 0 || od <= 0 || in > (1 << 24) || hid > (1 << 16) || od > (1 << 16)) {
        rc = ac_err(AC_ERR_FORMAT, "projector dims out of range");
        goto fail;
    }
    if ((rc = proj_alloc((int)in, (int)hid, (int)od, &p))) goto fail;
    p->trained_on = (uint64_t)tr;
    int64_t ne_in[1] = {in}, ne_h[1] = {hid}, ne_o[1] = {od}, ne_w1[2] = {in, hid}, ne_w2[2] = {hid, od};
    if ((rc = load_f32(g, "proj.mu", 1, ne_in, p->mu, (size_t)in)) ||
        (rc = load_f32(g, "proj.isig", 1, ne_in, p->isig, (size_t)in)) ||
        (rc = load_f32(g, "proj.w1", 2, ne_w1, p->w1, (size_t)(in * hid))) ||
        (rc = load_f32(g, "proj.b1", 1, ne_h, p->b1, (size_t)hid)) ||
        (rc = load_f32(g, "proj.w2", 2, ne_w2, p->w2, (size_t)(hid * od))) ||
        (rc = load_f32(g, "proj.b2", 1, ne_o, p->b2, (size_t)od)))
        goto fail;
    if ((rc = ac_proj_pack(p))) goto fail;
    ac_gguf_close(g);
    *out = p;
    return AC_OK;
fail:
    ac_err_prefix(rc, "loading projector '%s'", path);
    ac_proj_free(p);
    ac_gguf_close(g);
    return rc;
}
