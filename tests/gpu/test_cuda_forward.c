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
 *   rope_freqs and head dim 32, and bert with a classifier head (tests/ref_forward.c's builder).
 * Exits 0 with "SKIP" without a CUDA device; a model file that is absent is
 * skipped with a message. usage: test_cuda_forward [minilm.gguf] [stories260K.gguf] [greedy.tsv] */
#include "gpu_check.h"

#include "backends/cuda/cuda_backend.h"
#include "forward/forward.h"
#include "util/common.h"
#include "ref_forward.h"

#include <string.h>

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

/* one batch: CPU (exact f32) vs GPU in both precisions */
static void compare_batch(const char *name, ac_model *m, ac_ctx *cpu, ac_cuda_model *g32, ac_cuda_model *gbf,
                          const int *lens, int n_seq) {
    const int D = m->hp.n_embd, V = m->hp.n_vocab, dec = m->info.arch != AC_ARCH_BERT;
    int T = 0;
    for (int s = 0; s < n_seq; s++) T += lens[s];
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    ac_seq *seqs = malloc((size_t)n_seq * sizeof *seqs);
    for (int s = 0, o = 0; s < n_seq; o += lens[s], s++) {
        seqs[s].tokens = tok + o, seqs[s].n_tokens = lens[s];
        for (int i = 0; i < lens[s]; i++) tok[o + i] = 3 + rnd_int(V - 3);
    }
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
