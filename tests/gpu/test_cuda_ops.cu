/* test_cuda_ops.cu — every CUDA kernel of src/backends/cuda against a plain
 * CPU reference written beside it (the llm.c dev/cuda habit), on fresh random
 * inputs, with outputs poisoned (NaN) before each run so unwritten elements
 * fail. Exits 0 with "SKIP" when no CUDA device is present.
 * usage: test_cuda_ops [seed] */
#include "gpu_check.h"

#include "backends/cuda/cuda_attn.h"
#include "backends/cuda/cuda_attn_wg.h"
#include "backends/cuda/cuda_gemm.h"
#include "backends/cuda/cuda_ops.h"

#include <string.h>
#include <vector>

using std::vector;

#define OK(x)                                                                                                  \
    do {                                                                                                       \
        int rc_ = (x);                                                                                         \
        if (rc_ != AC_OK) {                                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #x, rc_, ac_last_error());       \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)
#define CU(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));            \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static vector<float> randv(size_t n, float amp = 1.0f, float base = 0.0f) {
    vector<float> v(n);
    for (auto &x : v) x = base + amp * rnd();
    return v;
}
static float bfr(float f) { return ac_host_bf16_to_f32(ac_host_f32_to_bf16(f)); } /* round to bf16 */

/* device copies: f32 or bf16 */
template <typename T> static T *dev(const vector<float> &h) {
    T *d;
    CU(cudaMalloc(&d, h.size() * sizeof(T) + 16));
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    } else {
        vector<uint16_t> b(h.size());
        for (size_t i = 0; i < h.size(); i++) b[i] = ac_host_f32_to_bf16(h[i]);
        CU(cudaMemcpy(d, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
    }
    return d;
}
template <typename T> static T *dev_nan(size_t n) { /* poisoned output */
    vector<float> h(n, NAN);
    return dev<T>(h);
}
static int *dev_i(const vector<int> &h) {
    int *d;
    CU(cudaMalloc(&d, h.size() * 4));
    CU(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static vector<float> host(const T *d, size_t n) {
    CU(cudaDeviceSynchronize());
    vector<float> h(n);
    if (sizeof(T) == 4) {
        CU(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost));
    } else {
        vector<uint16_t> b(n);
        CU(cudaMemcpy(b.data(), d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) h[i] = ac_host_bf16_to_f32(b[i]);
    }
    return h;
}

/* ---- references -------------------------------------------------------------------------------- */
static void ref_rmsnorm(float *o, const float *x, const float *w, int D, float eps) {
    double ss = 0;
    for (int i = 0; i < D; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / D + eps));
    for (int i = 0; i < D; i++) o[i] = x[i] * s * w[i];
}
static void ref_layernorm(float *o, const float *x, const float *w, const float *b, int D, float eps) {
    double mu = 0, var = 0;
    for (int i = 0; i < D; i++) mu += x[i];
    mu /= D;
    for (int i = 0; i < D; i++) var += (x[i] - mu) * (x[i] - mu);
    var /= D;
    float s = (float)(1.0 / sqrt(var + eps));
    for (int i = 0; i < D; i++) o[i] = (float)(x[i] - mu) * s * w[i] + b[i];
}

/* cu offsets of random lengths (1 included) */
static vector<int> rand_cu(int n_seq, int Lmax, int *T, int *lmax) {
    vector<int> cu(n_seq + 1, 0);
    *lmax = 0;
    for (int s = 0; s < n_seq; s++) {
        int L = s == 0 ? 1 : s == 1 ? Lmax : 1 + rnd_int(Lmax);
        cu[s + 1] = cu[s] + L;
        if (L > *lmax) *lmax = L;
    }
    *T = cu[n_seq];
    return cu;
}

static void test_embed(void) {
    const int V = 50, D = 96, n = 37, P = 64;
    auto tok = randv((size_t)V * D), pos = randv((size_t)P * D, 0.1f), type0 = randv(D, 0.1f);
    vector<int> ids(n), ps(n);
    for (int i = 0; i < n; i++) ids[i] = rnd_int(V), ps[i] = rnd_int(P);
    float *dt = dev<float>(tok), *dp = dev<float>(pos), *d0 = dev<float>(type0), *x = dev_nan<float>((size_t)n * D);
    int *di = dev_i(ids), *dps = dev_i(ps);
    for (int bert = 0; bert < 2; bert++) {
        OK(ac_cu_embed(x, dt, di, bert ? dp : NULL, dps, bert ? d0 : NULL, n, D, 0));
        auto got = host(x, (size_t)n * D);
        vector<float> ref((size_t)n * D);
        for (int r = 0; r < n; r++)
            for (int d = 0; d < D; d++)
                ref[(size_t)r * D + d] =
                    tok[(size_t)ids[r] * D + d] + (bert ? type0[d] + pos[(size_t)ps[r] * D + d] : 0.0f);
        double e = rel_err(got.data(), ref.data(), ref.size());
        CHECK(e < 1e-6, "embed bert=%d rel err %.3g", bert, e);
    }
    cudaFree(dt), cudaFree(dp), cudaFree(d0), cudaFree(x), cudaFree(di), cudaFree(dps);
}

template <typename T> static void test_norms(double tol, int D) { /* D <= 2048: registers; larger: the loop kernel */
    const int n = 19;
    auto x = randv((size_t)n * D, 3.0f, 0.5f), w = randv(D, 0.2f, 1.0f), b = randv(D, 0.2f);
    float *dx = dev<float>(x), *dw = dev<float>(w), *db = dev<float>(b);
    T *o = dev_nan<T>((size_t)n * D);
    vector<float> ref((size_t)n * D);
    OK(ac_cu_rmsnorm<T>(o, dx, dw, n, D, 1e-6f, 0));
    for (int r = 0; r < n; r++) ref_rmsnorm(&ref[(size_t)r * D], &x[(size_t)r * D], w.data(), D, 1e-6f);
    auto got = host(o, ref.size());
    double e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(e < tol, "rmsnorm (%zu-byte out, D %d) rel err %.3g", sizeof(T), D, e);
    /* layernorm in place on x, with a typed copy */
    for (int r = 0; r < n; r++) ref_layernorm(&ref[(size_t)r * D], &x[(size_t)r * D], w.data(), b.data(), D, 1e-12f);
    CU(cudaMemset(o, 0xff, (size_t)n * D * sizeof(T)));
    OK(ac_cu_layernorm<T>(dx, o, dx, dw, db, n, D, 1e-12f, 0));
    auto gx = host(dx, ref.size()), go = host(o, ref.size());
    double e1 = rel_err(gx.data(), ref.data(), ref.size()), e2 = rel_err(go.data(), ref.data(), ref.size());
    CHECK(e1 < 1e-5 && e2 < tol, "layernorm (%zu-byte out) rel err %.3g / %.3g", sizeof(T), e1, e2);
    /* add + layernorm with the residual in T, in place: r = LN(r + y); y32 gets the f32 values (or is
       not written: NULL) */
    {
        auto r = randv((size_t)n * D, 2.0f, 0.3f), y = randv((size_t)n * D, 1.0f);
        T *dr = dev<T>(r), *dy = dev<T>(y);
        float *d32 = dev_nan<float>((size_t)n * D);
        vector<float> sum((size_t)n * D);
        for (size_t i = 0; i < sum.size(); i++) /* the kernel adds the T values it reads */
            sum[i] = sizeof(T) == 4 ? r[i] + y[i] : bfr(r[i]) + bfr(y[i]);
        for (int rr = 0; rr < n; rr++)
            ref_layernorm(&ref[(size_t)rr * D], &sum[(size_t)rr * D], w.data(), b.data(), D, 1e-12f);
        OK(ac_cu_add_layernorm<T>(dr, dy, d32, dw, db, n, D, 1e-12f, 0));
        auto gr = host(dr, ref.size()), g32 = host(d32, ref.size());
        double e3 = rel_err(gr.data(), ref.data(), ref.size()), e4 = rel_err(g32.data(), ref.data(), ref.size());
        CHECK(e3 < tol && e4 < 1e-5, "add_layernorm (%zu-byte residual, D %d) rel err %.3g / f32 out %.3g", sizeof(T), D,
              e3, e4);
        /* again on its own output, without the f32 copy (out2 NULL): r = LN(r + y) from the T values of r */
        for (size_t i = 0; i < sum.size(); i++) sum[i] = sizeof(T) == 4 ? gr[i] + y[i] : gr[i] + bfr(y[i]);
        for (int rr = 0; rr < n; rr++)
            ref_layernorm(&ref[(size_t)rr * D], &sum[(size_t)rr * D], w.data(), b.data(), D, 1e-12f);
        OK(ac_cu_add_layernorm<T>(dr, dy, NULL, dw, db, n, D, 1e-12f, 0));
        auto g2 = host(dr, ref.size());
        int finite = 1;
        for (float v : g2) finite &= isfinite(v) != 0;
        const double e5 = rel_err(g2.data(), ref.data(), ref.size());
        CHECK(finite && e5 < tol, "add_layernorm without f32 out (D %d): rel err %.3g%s", D, e5,
              finite ? "" : ", non-finite values");
        cudaFree(dr), cudaFree(dy), cudaFree(d32);
    }
    cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(o);
}

static void test_rope(void) {
    const int n = 23, nh = 4, nkv = 2, hd = 64, ldq = nh * hd + 2 * nkv * hd, n_rot = 48, L = 40;
    vector<float> cs((size_t)L * n_rot);
    for (int p = 0; p < L; p++)
        for (int i = 0; i < n_rot / 2; i++) {
            double th = p * pow(10000.0, -2.0 * i / n_rot);
            cs[((size_t)p * n_rot / 2 + i) * 2] = (float)cos(th), cs[((size_t)p * n_rot / 2 + i) * 2 + 1] = (float)sin(th);
        }
    vector<int> pos(n);
    for (int i = 0; i < n; i++) pos[i] = rnd_int(L);
    for (int neox = 0; neox < 2; neox++) {
        auto x = randv((size_t)n * ldq);
        float *dx = dev<float>(x), *dcs = dev<float>(cs);
        int *dp = dev_i(pos);
        OK(ac_cu_rope<float>(dx, ldq, nh, dx + nh * hd, ldq, nkv, hd, n_rot, neox, dcs, dp, n, 0));
        auto got = host(dx, x.size());
        vector<float> ref = x;
        for (int r = 0; r < n; r++)
            for (int h = 0; h < nh + nkv; h++) { /* q heads then k heads: both rotate the same way (v untouched) */
                float *v = &ref[(size_t)r * ldq + (size_t)h * hd];
                const float *c = &cs[(size_t)pos[r] * n_rot];
                for (int i = 0; i < n_rot / 2; i++) {
                    int i0 = neox ? i : 2 * i, i1 = neox ? i + n_rot / 2 : 2 * i + 1;
                    float a = v[i0], b = v[i1];
                    v[i0] = a * c[2 * i] - b * c[2 * i + 1];
                    v[i1] = a * c[2 * i + 1] + b * c[2 * i];
                }
            }
        double e = rel_err(got.data(), ref.data(), ref.size());
        CHECK(e < 1e-6, "rope neox=%d rel err %.3g", neox, e);
        cudaFree(dx), cudaFree(dcs), cudaFree(dp);
    }
}

/* F % 8 == 0: the 16-byte bf16 kernels; odd F: the scalar ones */
template <typename T> static void test_act(double tol, int F) {
    const int n = 13;
    auto gu = randv((size_t)n * 2 * F, 4.0f);
    for (auto &v : gu) v = sizeof(T) == 2 ? bfr(v) : v;
    T *dgu = dev<T>(gu), *dh = dev_nan<T>((size_t)n * F);
    OK(ac_cu_swiglu<T>(dh, dgu, n, F, 0));
    vector<float> ref((size_t)n * F);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < F; c++) {
            float g = gu[(size_t)r * 2 * F + c], u = gu[(size_t)r * 2 * F + F + c];
            ref[(size_t)r * F + c] = (float)(g / (1.0 + exp(-(double)g)) * u);
        }
    auto got = host(dh, ref.size());
    double e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(e < tol, "swiglu (%zu-byte, F %d) rel err %.3g", sizeof(T), F, e);
    OK(ac_cu_gelu<T>(dgu, gu.size(), 0));
    got = host(dgu, gu.size());
    ref.resize(gu.size());
    for (size_t i = 0; i < gu.size(); i++) ref[i] = (float)(0.5 * gu[i] * (1.0 + erf(gu[i] / sqrt(2.0))));
    e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(e < tol, "gelu (%zu-byte, %zu) rel err %.3g", sizeof(T), gu.size(), e);
    cudaFree(dgu), cudaFree(dh);
}

static void test_pool(void) {
    const int n_seq = 6, D = 200;
    int T, lmax;
    auto cu = rand_cu(n_seq, 50, &T, &lmax);
    auto h = randv((size_t)T * D);
    float *dh = dev<float>(h), *o = dev_nan<float>((size_t)n_seq * D);
    int *dcu = dev_i(cu);
    for (int mode = AC_POOL_MEAN; mode <= AC_POOL_LAST; mode++)
        for (int norm = 0; norm < 2; norm++) {
            OK(ac_cu_pool(o, dh, dcu, n_seq, D, mode, norm, 0));
            auto got = host(o, (size_t)n_seq * D);
            vector<float> ref((size_t)n_seq * D);
            for (int s = 0; s < n_seq; s++) {
                double ss = 0;
                for (int d = 0; d < D; d++) {
                    double v = 0;
                    if (mode == AC_POOL_MEAN) {
                        for (int t = cu[s]; t < cu[s + 1]; t++) v += h[(size_t)t * D + d];
                        v /= cu[s + 1] - cu[s];
                    } else {
                        v = h[(size_t)(mode == AC_POOL_CLS ? cu[s] : cu[s + 1] - 1) * D + d];
                    }
                    ref[(size_t)s * D + d] = (float)v;
                    ss += v * v;
                }
                if (norm)
                    for (int d = 0; d < D; d++) ref[(size_t)s * D + d] /= (float)sqrt(ss);
            }
            double e = rel_err(got.data(), ref.data(), ref.size());
            CHECK(e < 1e-5, "pool mode %d norm %d rel err %.3g", mode, norm, e);
        }
    cudaFree(dh), cudaFree(o), cudaFree(dcu);
}

/* Y = X W^T + b (+ Y) */
static void test_gemm(void) {
    const int shapes[][3] = {{1, 64, 32}, {37, 384, 384}, {130, 1536, 384}, {256, 96, 1000}};
    for (auto &sh : shapes)
        for (int f32 = 0; f32 < 2; f32++)
            for (int acc = 0; acc < 2; acc++) {
                const int M = sh[0], N = sh[1], K = sh[2];
                ac_cu_gemm *g; /* fresh: bf16 bias copies are keyed by the (reused) f32 pointer */
                OK(ac_cu_gemm_new(0, &g));
                auto X = randv((size_t)M * K), W = randv((size_t)N * K, 1.0f / sqrtf((float)K)), b = randv(N),
                     Y0 = randv((size_t)M * N);
                if (!f32)
                    for (auto *v : {&X, &W})
                        for (auto &e : *v) e = bfr(e);
                void *dX = f32 ? (void *)dev<float>(X) : (void *)dev<bf16>(X);
                void *dW = f32 ? (void *)dev<float>(W) : (void *)dev<bf16>(W);
                float *db = dev<float>(b), *dY = dev<float>(Y0);
                OK(ac_cu_gemm_run(g, f32, 1, dW, dX, dY, N, M, N, K, acc ? db : NULL, acc));
                auto got = host(dY, (size_t)M * N);
                vector<float> ref((size_t)M * N);
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        double s = 0;
                        for (int k = 0; k < K; k++) s += (double)X[(size_t)m * K + k] * W[(size_t)n * K + k];
                        ref[(size_t)m * N + n] = (float)(s + (acc ? b[n] + Y0[(size_t)m * N + n] : 0.0));
                    }
                double e = rel_err(got.data(), ref.data(), ref.size());
                CHECK(e < (f32 ? 1e-5 : 1e-3), "gemm %dx%dx%d f32=%d acc=%d rel err %.3g", M, N, K, f32, acc, e);
                /* bf16 output with bias (the QKV projection's case) */
                if (!f32 && !acc) {
                    bf16 *dYb = dev_nan<bf16>((size_t)M * N);
                    OK(ac_cu_gemm_run(g, 0, 0, dW, dX, dYb, N, M, N, K, db, 0));
                    auto gb = host(dYb, (size_t)M * N);
                    for (int m = 0; m < M; m++)
                        for (int n = 0; n < N; n++) ref[(size_t)m * N + n] += b[n];
                    e = rel_err(gb.data(), ref.data(), ref.size());
                    CHECK(e < 8e-3, "gemm bf16 out %dx%dx%d + bias rel err %.3g", M, N, K, e);
                    /* the GELU epilogue (BERT's up projection), against the erf form, with and without bias */
                    for (int wb = 0; wb < 2; wb++) {
                        const int rc = ac_cu_gemm_run_act(g, 0, 0, dW, dX, dYb, N, M, N, K, wb ? db : NULL, 0, 1);
                        CHECK(rc == AC_OK || rc == AC_ERR_UNSUPPORTED, "gemm gelu epilogue: %d", rc);
                        if (rc) continue;
                        gb = host(dYb, (size_t)M * N);
                        vector<float> rg(ref.size());
                        for (int m = 0; m < M; m++)
                            for (int n = 0; n < N; n++) {
                                const double v = ref[(size_t)m * N + n] - (wb ? 0.0 : b[n]);
                                rg[(size_t)m * N + n] = (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
                            }
                        e = rel_err(gb.data(), rg.data(), rg.size());
                        CHECK(e < 8e-3, "gemm bf16 out %dx%dx%d gelu epilogue (bias %d) rel err %.3g", M, N, K, wb, e);
                    }
                    CHECK(ac_cu_gemm_run_act(g, 0, 1, dW, dX, dY, N, M, N, K, NULL, 1, 1) == AC_ERR_ARG,
                          "gelu epilogue with accumulate refused");
                    cudaFree(dYb);
                }
                cudaFree(dX), cudaFree(dW), cudaFree(db), cudaFree(dY);
                ac_cu_gemm_free(g);
            }
}

/* reference attention (double) over packed sequences; P_out [H][L][L] per sequence when non-NULL */
static void ref_attn(const vector<float> &q, const vector<float> &k, const vector<float> &v, vector<float> &o,
                     const vector<int> &cu, int H, int Hkv, int hd, int ldq, int ldk, int causal, vector<float> *P) {
    const float scale = 1.0f / sqrtf((float)hd);
    size_t poff = 0;
    for (size_t s = 0; s + 1 < cu.size(); s++) {
        const int st = cu[s], L = cu[s + 1] - cu[s];
        vector<double> p(L);
        for (int h = 0; h < H; h++) {
            const int g = h / (H / Hkv);
            for (int i = 0; i < L; i++) {
                double mx = -1e300;
                const int n = causal ? i + 1 : L;
                for (int j = 0; j < n; j++) {
                    double a = 0;
                    for (int d = 0; d < hd; d++)
                        a += (double)q[(size_t)(st + i) * ldq + h * hd + d] * k[(size_t)(st + j) * ldk + g * hd + d];
                    p[j] = a * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                double sum = 0;
                for (int j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double a = 0;
                    for (int j = 0; j < n; j++) a += p[j] * v[(size_t)(st + j) * ldk + g * hd + d];
                    o[(size_t)(st + i) * ldq + h * hd + d] = (float)(a / sum);
                }
                if (P)
                    for (int j = 0; j < L; j++) (*P)[poff + ((size_t)h * L + i) * L + j] = j < n ? (float)(p[j] / sum) : 0.f;
            }
        }
        poff += (size_t)H * L * L;
    }
}

static void test_flash(int hd, int causal, int H, int Hkv, int variant, int n_seq, int Lmax) {
    int T, lmax;
    auto cu = rand_cu(n_seq, Lmax, &T, &lmax);
    const int ldq = H * hd, ldk = Hkv * hd;
    auto q = randv((size_t)T * ldq, 2.0f), k = randv((size_t)T * ldk, 2.0f), v = randv((size_t)T * ldk);
    for (auto *x : {&q, &k, &v})
        for (auto &e : *x) e = bfr(e);
    bf16 *dq = dev<bf16>(q), *dk = dev<bf16>(k), *dv = dev<bf16>(v), *dout = dev_nan<bf16>((size_t)T * ldq);
    int *dcu = dev_i(cu);
    ac_cu_attn a = {n_seq, lmax, dcu, H, Hkv, hd, ldq, ldk, ldq, causal, 1.0f / sqrtf((float)hd)};
    OK(ac_cu_flash_attn(&a, dq, dk, dv, dout, variant, 0));
    auto got = host(dout, (size_t)T * ldq);
    vector<float> ref((size_t)T * ldq);
    ref_attn(q, k, v, ref, cu, H, Hkv, hd, ldq, ldk, causal, NULL);
    double e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(all_finite(got.data(), got.size()) && e < 1e-2,
          "flash hd %d causal %d H %d/%d variant %d, %d seqs up to %d: rel err %.3g", hd, causal, H, Hkv, variant, n_seq,
          lmax, e);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dcu);
}

template <typename T> static void test_materialised(int hd, int causal, double tol) {
    const int H = 4, Hkv = 2, n_seq = 4;
    int Tn, lmax;
    auto cu = rand_cu(n_seq, 70, &Tn, &lmax);
    const int ldq = H * hd, ldk = Hkv * hd;
    auto q = randv((size_t)Tn * ldq, 2.0f), k = randv((size_t)Tn * ldk, 2.0f), v = randv((size_t)Tn * ldk);
    if (sizeof(T) == 2)
        for (auto *x : {&q, &k, &v})
            for (auto &e : *x) e = bfr(e);
    vector<long long> poff(n_seq);
    long long tot = 0;
    for (int s = 0; s < n_seq; s++) poff[s] = tot, tot += (long long)H * (cu[s + 1] - cu[s]) * (cu[s + 1] - cu[s]);
    T *dq = dev<T>(q), *dk = dev<T>(k), *dv = dev<T>(v), *dout = dev_nan<T>((size_t)Tn * ldq);
    float *dP = dev_nan<float>((size_t)tot);
    long long *dpo;
    CU(cudaMalloc(&dpo, n_seq * 8));
    CU(cudaMemcpy(dpo, poff.data(), n_seq * 8, cudaMemcpyHostToDevice));
    int *dcu = dev_i(cu);
    ac_cu_attn a = {n_seq, lmax, dcu, H, Hkv, hd, ldq, ldk, ldq, causal, 1.0f / sqrtf((float)hd)};
    OK(ac_cu_attn_materialised<T>(&a, dq, dk, dv, dout, dP, dpo, 0));
    auto got = host(dout, (size_t)Tn * ldq);
    auto gP = host(dP, (size_t)tot);
    vector<float> ref((size_t)Tn * ldq), rP((size_t)tot);
    ref_attn(q, k, v, ref, cu, H, Hkv, hd, ldq, ldk, causal, &rP);
    double e = rel_err(got.data(), ref.data(), ref.size()), eP = rel_err(gP.data(), rP.data(), rP.size());
    CHECK(e < tol && eP < tol, "materialised (%zu-byte) hd %d causal %d: out rel err %.3g, P rel err %.3g", sizeof(T),
          hd, causal, e, eP);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dP), cudaFree(dpo), cudaFree(dcu);
}

/* ---- attention after given prefix rows (the prefix K/V cache) ------------------------------------
 * Sequence s: P = cp[s+1] - cp[s] given keys (rows of kp / vp, stride ldp), then its n = cu[s+1] - cu[s]
 * own rows (q, k, v, out); query i sits at position P + i and attends (causal) to keys 0 .. P + i of
 * the L = P + n keys. Reference: the sequence's keys laid out whole, double accumulation. Pmap
 * (optional): [H][n][L] per sequence. */
static void ref_attn_pfx(const vector<float> &q, const vector<float> &k, const vector<float> &v,
                         const vector<float> &kv_p, int ldp, const vector<int> &cu, const vector<int> &cp, int H,
                         int Hkv, int hd, int ldq, int ldk, int causal, vector<float> &o, vector<float> *Pmap) {
    const float scale = 1.0f / sqrtf((float)hd);
    const int KVD = Hkv * hd;
    size_t poff = 0;
    for (size_t s = 0; s + 1 < cu.size(); s++) {
        const int st = cu[s], n = cu[s + 1] - cu[s], P = cp[s + 1] - cp[s], L = P + n;
        auto krow = [&](int j, int g) { /* key j of kv head g */
            return j < P ? &kv_p[(size_t)(cp[s] + j) * ldp + g * hd] : &k[(size_t)(st + j - P) * ldk + g * hd];
        };
        auto vrow = [&](int j, int g) {
            return j < P ? &kv_p[(size_t)(cp[s] + j) * ldp + KVD + g * hd] : &v[(size_t)(st + j - P) * ldk + g * hd];
        };
        vector<double> p(L);
        for (int h = 0; h < H; h++) {
            const int g = h / (H / Hkv);
            for (int i = 0; i < n; i++) {
                const int nk = causal ? P + i + 1 : L;
                double mx = -1e300;
                for (int j = 0; j < nk; j++) {
                    const float *kr = krow(j, g);
                    double a = 0;
                    for (int d = 0; d < hd; d++) a += (double)q[(size_t)(st + i) * ldq + h * hd + d] * kr[d];
                    p[j] = a * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                double sum = 0;
                for (int j = 0; j < nk; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double a = 0;
                    for (int j = 0; j < nk; j++) a += p[j] * vrow(j, g)[d];
                    o[(size_t)(st + i) * ldq + h * hd + d] = (float)(a / sum);
                }
                if (Pmap)
                    for (int j = 0; j < L; j++)
                        (*Pmap)[poff + ((size_t)h * n + i) * L + j] = j < nk ? (float)(p[j] / sum) : 0.f;
            }
        }
        poff += (size_t)H * n * L;
    }
}

/* Prefix lengths: 0, a long one (many key tiles before the first query), P ending inside a 64-key tile,
 * one new row after a long prefix, the rest random; own rows 1 .. Nmax. */
static void rand_pfx(int n_seq, int Pmax, int Nmax, vector<int> &cu, vector<int> &cp, int *T, int *nmax, int *ptot) {
    cu.assign(n_seq + 1, 0), cp.assign(n_seq + 1, 0);
    *nmax = 0;
    for (int s = 0; s < n_seq; s++) {
        const int P = s == 0 ? 0 : s == 1 ? Pmax : s == 2 ? 37 : s == 3 ? Pmax - 1 : rnd_int(Pmax + 1);
        const int n = s == 3 ? 1 : s == 1 ? Nmax : 1 + rnd_int(Nmax);
        cu[s + 1] = cu[s] + n, cp[s + 1] = cp[s] + P;
        if (n > *nmax) *nmax = n;
    }
    *T = cu[n_seq], *ptot = cp[n_seq];
}

/* Which variants this device runs: the mma.sync ones everywhere (4 x 2 and 128-key tiles at hd <= 64); the
 * wgmma ones (hd 64, and hd 128 but the pipelined two) only where the device executes the sm_90a code, and
 * elsewhere refused with AC_ERR_UNSUPPORTED (never a wrong result). */
static void test_flash_variants_offered(void) {
    const int wg = ac_cu_wgmma_available();
    printf("  wgmma attention variants: %s\n", wg ? "available (sm_90a code on this device)" : "not available");
    for (int v = AC_FLASH_W4; v < AC_FLASH_WG1K128; v++)
        CHECK(ac_cu_flash_variant_ok(64, v), "flash variant %d offered at hd 64", v);
    CHECK(ac_cu_flash_variant_ok(128, AC_FLASH_W4) && ac_cu_flash_variant_ok(128, AC_FLASH_W8) &&
              !ac_cu_flash_variant_ok(128, AC_FLASH_W4X2) && !ac_cu_flash_variant_ok(128, AC_FLASH_W4K128),
          "mma.sync variants at hd 128: 4 x 1 and 8 x 1 only");
    CHECK(!ac_cu_flash_variant_ok(32, AC_FLASH_WG2), "no wgmma variant at hd 32");
    for (int v = AC_FLASH_WG1K128; v <= AC_FLASH_WG2K128; v++)
        CHECK(ac_cu_flash_variant_ok(128, v) == wg, "wgmma variant %d offered at hd 128 iff available", v);
    CHECK(!ac_cu_flash_variant_ok(128, AC_FLASH_WGP2) && !ac_cu_flash_variant_ok(128, AC_FLASH_WGP2K128),
          "pipelined wgmma variants at hd 64 only");
    for (int v = AC_FLASH_WG1K128; v <= AC_FLASH_WGP2K128; v++) {
        CHECK(ac_cu_flash_variant_ok(64, v) == wg, "wgmma variant %d offered iff available", v);
        if (!wg) { /* refused before any launch (nothing is read) */
            ac_cu_attn a = {1, 16, NULL, 4, 4, 64, 256, 256, 256, 0, 0.125f};
            CHECK(ac_cu_flash_attn(&a, (const bf16 *)NULL, NULL, NULL, NULL, v, 0) == AC_ERR_UNSUPPORTED,
                  "wgmma variant %d refused without wgmma", v);
        }
    }
}

static void test_flash_prefix(int hd, int H, int Hkv, int variant, int n_seq, int Pmax, int Nmax) {
    vector<int> cu, cp;
    int T, nmax, ptot;
    rand_pfx(n_seq, Pmax, Nmax, cu, cp, &T, &nmax, &ptot);
    const int ldq = H * hd, ldk = Hkv * hd, ldp = 2 * Hkv * hd + 8; /* (a padded stride) */
    auto q = randv((size_t)T * ldq, 2.0f), k = randv((size_t)T * ldk, 2.0f), v = randv((size_t)T * ldk);
    auto kvp = randv((size_t)(ptot > 0 ? ptot : 1) * ldp, 2.0f);
    for (auto *x : {&q, &k, &v, &kvp})
        for (auto &e : *x) e = bfr(e);
    bf16 *dq = dev<bf16>(q), *dk = dev<bf16>(k), *dv = dev<bf16>(v), *dp = dev<bf16>(kvp);
    bf16 *dout = dev_nan<bf16>((size_t)T * ldq);
    int *dcu = dev_i(cu), *dcp = dev_i(cp);
    ac_cu_attn a = {n_seq, nmax, dcu, H, Hkv, hd, ldq, ldk, ldq, 1, 1.0f / sqrtf((float)hd)};
    a.cp = dcp, a.kp = dp, a.vp = dp + Hkv * hd, a.ldp = ldp;
    OK(ac_cu_flash_attn(&a, dq, dk, dv, dout, variant, 0));
    auto got = host(dout, (size_t)T * ldq);
    vector<float> ref((size_t)T * ldq);
    ref_attn_pfx(q, k, v, kvp, ldp, cu, cp, H, Hkv, hd, ldq, ldk, 1, ref, NULL);
    const double e = rel_err(got.data(), ref.data(), ref.size());
    CHECK(all_finite(got.data(), got.size()) && e < 1e-2,
          "flash after prefix rows hd %d H %d/%d variant %d, %d seqs (prefix up to %d, own rows up to %d): rel err %.3g",
          hd, H, Hkv, variant, n_seq, Pmax, nmax, e);
    /* no prefix rows anywhere (cp all zero) == the plain kernel */
    vector<int> cp0(n_seq + 1, 0);
    int *dcp0 = dev_i(cp0);
    bf16 *dout2 = dev_nan<bf16>((size_t)T * ldq), *dout3 = dev_nan<bf16>((size_t)T * ldq);
    a.cp = dcp0;
    OK(ac_cu_flash_attn(&a, dq, dk, dv, dout2, variant, 0));
    a.cp = NULL;
    OK(ac_cu_flash_attn(&a, dq, dk, dv, dout3, variant, 0));
    auto g2 = host(dout2, (size_t)T * ldq), g3 = host(dout3, (size_t)T * ldq);
    const double e0 = rel_err(g2.data(), g3.data(), g3.size());
    if (hd == 64 && H == 8) printf("  flash hd 64 variant %d, empty prefixes vs the plain kernel: %s (rel err %.3g)\n",
                                   variant, memcmp(g2.data(), g3.data(), g2.size() * 4) ? "not bitwise" : "bitwise", e0);
    CHECK(e0 < 1e-3 && all_finite(g3.data(), g3.size()),
          "flash hd %d variant %d: empty prefixes give the plain kernel's output (rel err %.3g)", hd, variant, e0);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dp), cudaFree(dout), cudaFree(dout2), cudaFree(dout3);
    cudaFree(dcu), cudaFree(dcp), cudaFree(dcp0);
}

template <typename T> static void test_materialised_prefix(int hd, double tol) {
    const int H = 4, Hkv = 2, n_seq = 6;
    vector<int> cu, cp;
    int Tn, nmax, ptot;
    rand_pfx(n_seq, 90, 40, cu, cp, &Tn, &nmax, &ptot);
    const int ldq = H * hd, ldk = Hkv * hd, ldp = 2 * Hkv * hd;
    auto q = randv((size_t)Tn * ldq, 2.0f), k = randv((size_t)Tn * ldk, 2.0f), v = randv((size_t)Tn * ldk);
    auto kvp = randv((size_t)ptot * ldp, 2.0f);
    if (sizeof(T) == 2)
        for (auto *x : {&q, &k, &v, &kvp})
            for (auto &e : *x) e = bfr(e);
    vector<long long> poff(n_seq);
    long long tot = 0;
    for (int s = 0; s < n_seq; s++) {
        const long long n = cu[s + 1] - cu[s], L = n + cp[s + 1] - cp[s];
        poff[s] = tot, tot += (long long)H * n * L;
    }
    T *dq = dev<T>(q), *dk = dev<T>(k), *dv = dev<T>(v), *dp = dev<T>(kvp), *dout = dev_nan<T>((size_t)Tn * ldq);
    float *dP = dev_nan<float>((size_t)tot);
    long long *dpo;
    CU(cudaMalloc(&dpo, n_seq * 8));
    CU(cudaMemcpy(dpo, poff.data(), n_seq * 8, cudaMemcpyHostToDevice));
    int *dcu = dev_i(cu), *dcp = dev_i(cp);
    ac_cu_attn a = {n_seq, nmax, dcu, H, Hkv, hd, ldq, ldk, ldq, 1, 1.0f / sqrtf((float)hd)};
    a.cp = dcp, a.kp = dp, a.vp = dp + Hkv * hd, a.ldp = ldp;
    OK(ac_cu_attn_materialised<T>(&a, dq, dk, dv, dout, dP, dpo, 0));
    auto got = host(dout, (size_t)Tn * ldq);
    auto gP = host(dP, (size_t)tot);
    vector<float> ref((size_t)Tn * ldq), rP((size_t)tot);
    ref_attn_pfx(q, k, v, kvp, ldp, cu, cp, H, Hkv, hd, ldq, ldk, 1, ref, &rP);
    const double e = rel_err(got.data(), ref.data(), ref.size()), eP = rel_err(gP.data(), rP.data(), rP.size());
    CHECK(e < tol && eP < tol, "materialised (%zu-byte) after prefix rows hd %d: out rel err %.3g, P rel err %.3g",
          sizeof(T), hd, e, eP);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dp), cudaFree(dout), cudaFree(dP), cudaFree(dpo);
    cudaFree(dcu), cudaFree(dcp);
}

static void test_rows_select(void) {
    const int D = 77, na = 9, nb = 5, n = 14;
    auto a = randv((size_t)na * D), b = randv((size_t)nb * D);
    vector<int> src(n);
    for (int r = 0; r < n; r++) src[r] = r % 3 == 0 ? -1 - (r / 3) % nb : (r * 7) % na;
    float *da = dev<float>(a), *db = dev<float>(b), *dd = dev_nan<float>((size_t)n * D);
    int *ds = dev_i(src);
    OK(ac_cu_rows_select(dd, da, db, ds, n, D, 0));
    auto got = host(dd, (size_t)n * D);
    int bad = 0;
    for (int r = 0; r < n; r++)
        for (int d = 0; d < D; d++)
            bad += got[(size_t)r * D + d] != (src[r] >= 0 ? a[(size_t)src[r] * D + d] : b[(size_t)(-1 - src[r]) * D + d]);
    CHECK(!bad, "rows_select: %d elements wrong", bad);
    cudaFree(da), cudaFree(db), cudaFree(dd), cudaFree(ds);
}

/* the K, V columns of qkv rows copied out as f32 [2][n][w] (the prefix cache's computed rows) */
template <typename T> static void test_kv_out(void) {
    const int n = 37, w = 96, col = 128, ld = col + 2 * w + 40;
    auto src = randv((size_t)n * ld);
    if (sizeof(T) == 2)
        for (auto &e : src) e = bfr(e);
    T *ds = dev<T>(src);
    float *dd = dev_nan<float>((size_t)2 * n * w);
    OK(ac_cu_kv_out<T>(dd, ds, ld, col, n, w, 0));
    auto got = host(dd, (size_t)2 * n * w);
    int bad = 0;
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < n; r++)
            for (int c = 0; c < w; c++)
                bad += got[((size_t)k * n + r) * w + c] != src[(size_t)r * ld + col + k * w + c];
    CHECK(!bad, "kv_out (%zu-byte): %d elements wrong", sizeof(T), bad);
    cudaFree(ds), cudaFree(dd);
}

int main(int argc, char **argv) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("SKIP test_cuda_ops: no CUDA device\n");
        return 0;
    }
    rng_seed(argc > 1 ? strtoull(argv[1], NULL, 10) : 1234);
    test_embed();
    /* 384/768/1024: add_layernorm's warp kernel; 391 (D % 4 != 0), 2048 (> 1024): the block-per-row
     * k_layernorm_reg with and without the residual; 3001: k_layernorm (the loop kernel), both */
    for (int D : {384, 391, 768, 1024, 2048, 3001}) {
        test_norms<float>(1e-5, D);
        test_norms<bf16>(8e-3, D);
    }
    test_rope();
    test_act<float>(1e-5, 1000);
    test_act<bf16>(8e-3, 1000);
    test_act<bf16>(8e-3, 999);
    test_pool();
    test_gemm();
    const int hds[] = {32, 64, 128};
    test_flash_variants_offered();
    for (int hd : hds)
        for (int causal = 0; causal < 2; causal++)
            for (int variant = AC_FLASH_W4; variant <= ac_flash_last_variant(hd); variant++) {
                if (!ac_cu_flash_variant_ok(hd, variant)) continue; /* refused: test_flash_variants_offered */
                test_flash(hd, causal, 8, 2, variant, 5, 300); /* GQA 4:1, lengths 1 .. 300 */
                test_flash(hd, causal, 4, 4, variant, 3, 64);  /* MHA, one exact tile */
                if (variant >= AC_FLASH_WG1K128) {             /* the wgmma kernels: 2-warpgroup blocks half */
                    test_flash(hd, causal, 8, 2, variant, 4, 1030); /* filled at the end, many key tiles */
                    test_flash(hd, causal, 2, 1, variant, 9, 129);
                }
            }
    test_flash(64, 1, 12, 12, 0, 2, 1030);                   /* long rows: many KV tiles */
    test_flash(128, 0, 4, 2, 0, 3, 700);
    for (int hd : hds) /* after given prefix rows (the prefix K/V cache), GQA 4:1 and MHA */
        for (int variant = AC_FLASH_W4; variant <= ac_flash_last_variant(hd); variant++) {
            if (!ac_cu_flash_variant_ok(hd, variant)) continue;
            test_flash_prefix(hd, 8, 2, variant, 7, 300, 150);
            test_flash_prefix(hd, 4, 4, variant, 5, 64, 64);
        }
    test_flash_prefix(64, 12, 12, 0, 4, 1030, 200); /* long prefixes: many key tiles before the first query */
    test_materialised_prefix<float>(64, 1e-5);
    test_materialised_prefix<float>(8, 1e-5);
    test_materialised_prefix<bf16>(64, 1e-2);
    test_rows_select();
    test_kv_out<float>();
    test_kv_out<bf16>();
    for (int causal = 0; causal < 2; causal++) {
        test_materialised<float>(64, causal, 1e-5);
        test_materialised<float>(40, causal, 1e-5);
        test_materialised<bf16>(64, causal, 1e-2);
    }
    printf("test_cuda_ops: %d checks passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
