/* test_forward.c — the fast forward pass against the plain reference
 * (tests/ref_forward.c) on random synthetic models of every architecture and
 * weight type, every GEMM backend and both attention kinds; batches against
 * one-at-a-time runs; the attention hook (record, supply = skip path); input
 * limits; loader errors; profiling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "forward/forward.h"
#include "load/model.h"
#include "ref_forward.h"
#include "util/common.h"
#include "util/cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture ------------------------------------------------------------------------------ */
typedef struct fx {
    uint8_t *buf;
    size_t size;
    ac_gguf_file *g;
    ref_model ref;
    ac_model *m;
} fx;

/* the model of spec s in memory, loaded with f32_math (0: the fast bf16 mode) */
static void fx_open_math(fx *f, const ref_spec *s, int flags, int f32_math) {
    memset(f, 0, sizeof *f);
    assert_int_equal(ref_build(s, &f->buf, &f->size), AC_OK);
    assert_int_equal(ac_gguf_open_memory(f->buf, f->size, &f->g), AC_OK);
    assert_int_equal(ref_model_init(&f->ref, f->g), 0);
    ac_model_params mp = ac_model_default_params();
    mp.f32_math = f32_math;
    int rc = ac_model_load_memory(f->buf, f->size, &mp, AC_LOAD_NO_VOCAB | flags, &f->m);
    if (rc) fprintf(stderr, "load: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
}

/* the fast (bf16) mode, so that these fixtures cover the packed kernels;
 * test_f32_math covers the exact default */
static void fx_open_flags(fx *f, const ref_spec *s, int flags) { fx_open_math(f, s, flags, 0); }

static void fx_open(fx *f, const ref_spec *s) { fx_open_flags(f, s, 0); }

static void fx_close(fx *f) {
    ac_model_free(f->m);
    ref_model_free(&f->ref);
    ac_gguf_close(f->g);
    free(f->buf);
}

static int have_dnnl(void) {
#ifdef AC_HAVE_DNNL
    return 1;
#else
    return 0;
#endif
}

static ac_ctx *mkctx(const ac_model *m, int gemm, int attn) {
    ac_ctx_params p = ac_ctx_default_params();
    p.gemm = gemm;
    p.attn = attn;
    p.n_threads = 2;
    ac_ctx *c = NULL;
    int rc = ac_ctx_new(m, &p, &c);
    if (rc) fprintf(stderr, "ctx: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    return c;
}

/* A batch of sequences of the given lengths with random ids. */
typedef struct batch {
    int n;
    ac_seq seqs[8];
    int32_t *ids;
    int T;
} batch;

static void batch_make(batch *b, const int *lens, int n, int V, uint64_t seed) {
    b->n = n;
    b->T = 0;
    for (int i = 0; i < n; i++) b->T += lens[i];
    b->ids = malloc((size_t)b->T * sizeof *b->ids);
    ref_random_tokens(&seed, b->ids, b->T, V);
    for (int i = 0, o = 0; i < n; o += lens[i], i++) {
        b->seqs[i].tokens = b->ids + o;
        b->seqs[i].n_tokens = lens[i];
    }
}

/* Run the engine on batch b and compare hidden states (+ logits, pooled, cls where
 * the model has them) with the reference, per sequence. Returns the worst error. */
static double check_vs_ref(fx *f, ac_ctx *c, const batch *b, double tol, const char *what) {
    const ac_model_info *in = &f->m->info;
    const int D = in->n_embd, V = in->n_vocab, NC = in->n_cls_out;
    float *hidden = malloc((size_t)b->T * D * sizeof *hidden);
    float *logits = in->has_lm_head ? malloc((size_t)b->n * V * sizeof *logits) : NULL;
    float *pooled = malloc((size_t)b->n * D * sizeof *pooled);
    float *cls = NC ? malloc((size_t)b->n * NC * sizeof *cls) : NULL;
    ac_outputs o = {hidden, pooled, logits, cls, AC_POOL_MEAN, 0};
    int rc = ac_forward(c, b->seqs, b->n, &o);
    if (rc) fprintf(stderr, "forward: %s\n", ac_last_error());
    assert_int_equal(rc, AC_OK);
    double worst = 0;
    for (int s = 0, off = 0; s < b->n; off += b->seqs[s].n_tokens, s++) {
        const int n = b->seqs[s].n_tokens;
        double *rh = malloc((size_t)n * D * sizeof *rh), *rl = malloc((size_t)V * sizeof *rl),
               *rc_ = malloc((size_t)(NC ? NC : 1) * sizeof *rc_), *rp = calloc((size_t)D, sizeof *rp);
        ref_forward(&f->ref, b->seqs[s].tokens, n, rh, logits ? rl : NULL, NC ? rc_ : NULL);
        double e = ref_rel_err_f(hidden + (size_t)off * D, rh, (size_t)n * D);
        double el = logits ? ref_rel_err_f(logits + (size_t)s * V, rl, (size_t)V) : 0;
        double ec = NC ? ref_rel_err_f(cls + (size_t)s * NC, rc_, (size_t)NC) : 0;
        for (int t = 0; t < n; t++)
            for (int d = 0; d < D; d++) rp[d] += rh[(size_t)t * D + d] / n;
        double ep = ref_rel_err_f(pooled + (size_t)s * D, rp, (size_t)D);
        double w = fmax(fmax(e, el), fmax(ec, ep));
        if (!(w <= tol))
            fprintf(stderr, "%s: seq %d (L=%d): hidden %.3g logits %.3g cls %.3g pooled %.3g > %.1g\n", what, s, n, e, el,
                    ec, ep, tol);
        assert_true(w <= tol);
        worst = fmax(worst, w);
        free(rh), free(rl), free(rc_), free(rp);
    }
    free(hidden), free(logits), free(pooled), free(cls);
    return worst;
}

static const int g_lens[3] = {70, 1, 37}; /* crosses the 64-key and 32-query blocks; a 1-token sequence */

/* 1 if ctx computes products with non-F32 weights in BF16 (the looser bound applies); the
 * layout is the context's (the CPU backend prepares the model's weights per context kind) */
static int bf16_math(const ac_ctx *c) {
    const int pack = c->model->pack;
    return (pack == AC_PACK_BF16 && c->gemm_q == &ac_gemm_own_ops) || (pack == AC_PACK_DNNL && c->gemm_q->id == AC_GEMM_DNNL);
}

static void run_backends_on(fx *f, const ref_spec *s, const int *gemms, int ng, double tol_f32_math, const char *label) {
    batch b;
    batch_make(&b, g_lens, 3, s->n_vocab, 99);
    for (int gi = 0; gi < ng; gi++) {
        if (gemms[gi] == AC_GEMM_DNNL && !have_dnnl()) continue;
        if (gemms[gi] == AC_GEMM_AVX512 && !ac_f32_gemm_available()) continue;
        for (int attn = 0; attn < 2; attn++) {
            ac_ctx *c = mkctx(f->m, gemms[gi], attn);
            /* BF16 products (non-F32 weights on the BF16 kernels): the looser bound */
            double tol = s->wtype != GGML_F32 && bf16_math(c) ? 1e-2 : tol_f32_math;
            char what[128];
            snprintf(what, sizeof what, "%s gemm=%d attn=%d", label, gemms[gi], attn);
            double w = check_vs_ref(f, c, &b, tol, what);
            printf("  %-28s pack %d gemm %-8s attn %-12s max rel err %.2e\n", label, c->model->pack, c->gemm_q->name,
                   attn ? "materialised" : "fused", w);
            ac_ctx_free(c);
        }
    }
    free(b.ids);
}

static void run_backends(const ref_spec *s, double tol_f32_math, const char *label, int with_naive) {
    fx f;
    fx_open(&f, s);
    const int all[4] = {AC_GEMM_NAIVE, AC_GEMM_OPENBLAS, AC_GEMM_DNNL, AC_GEMM_AVX512};
    run_backends_on(&f, s, with_naive ? all : all + 1, with_naive ? 4 : 3, tol_f32_math, label);
    fx_close(&f);
    if (s->wtype != GGML_F32 && have_dnnl() && ac_dnnl_bf16_available()) {
        /* the same model packed for oneDNN's BF16 matmul */
        fx_open_flags(&f, s, AC_LOAD_PACK_DNNL);
        ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
        assert_int_equal(f.m->pack, AC_PACK_NONE); /* the loader packs nothing: the context's weights do */
        assert_int_equal(c->model->pack, AC_PACK_DNNL);
        ac_ctx_free(c);
        const int dn[2] = {AC_GEMM_DNNL, AC_GEMM_AUTO};
        run_backends_on(&f, s, dn, 2, tol_f32_math, label);
        fx_close(&f);
    }
}

static void run_all_backends(const ref_spec *s, double tol_f32_math, const char *label) {
    run_backends(s, tol_f32_math, label, 1);
}

/* ---- accuracy against the reference ----------------------------------------------------------- */

static void test_llama_f32(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    run_all_backends(&s, 1e-4, "llama f32");
}

static void test_llama_variants(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    s.tied = 1;
    s.fused_qkv = 1;
    s.rope_freqs = 1;
    s.n_rot = 8; /* partial rotary: 8 of 16 dims */
    s.o_bias = 1;
    s.qkv_bias = 1;
    s.n_head_kv = 1;
    s.n_cls = 3;
    s.seed = 77;
    s.rope_linear = 4.0f;
    run_all_backends(&s, 1e-4, "llama tied/fused/partial");
}

static void test_qwen2_f32(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_QWEN2);
    s.seed = 5;
    run_all_backends(&s, 1e-4, "qwen2 f32");
}

static void test_bert_f32(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    s.n_cls = 2;
    s.pooling_type = 2;
    run_all_backends(&s, 1e-4, "bert f32");
}

static void test_bert_causal_flag(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    s.causal = 1; /* {arch}.attention.causal honoured */
    s.seed = 9;
    fx f;
    fx_open(&f, &s);
    assert_int_equal(f.m->info.causal, 1);
    batch b;
    batch_make(&b, g_lens, 3, s.n_vocab, 3);
    ac_ctx *c = mkctx(f.m, AC_GEMM_OPENBLAS, AC_ATTN_FUSED);
    check_vs_ref(&f, c, &b, 1e-4, "bert causal");
    ac_ctx_free(c);
    free(b.ids);
    fx_close(&f);
}

static void test_weight_types(void **st) {
    (void)st;
    const uint32_t types[3] = {GGML_F16, GGML_BF16, GGML_Q8_0};
    const int archs[3] = {AC_ARCH_LLAMA, AC_ARCH_QWEN2, AC_ARCH_BERT};
    for (int a = 0; a < 3; a++)
        for (int t = 0; t < 3; t++) {
            ref_spec s = ref_spec_default(archs[a]);
            s.wtype = types[t];
            s.seed = 100 + 10 * a + t;
            if (archs[a] == AC_ARCH_BERT) s.n_cls = 2;
            char label[64];
            snprintf(label, sizeof label, "%s %s", archs[a] == AC_ARCH_BERT ? "bert" : archs[a] ? "qwen2" : "llama",
                     ggml_dtype_name(types[t]));
            /* the f32-math backends see exactly the file's values: tight bound (naive once per type) */
            run_backends(&s, 1e-4, label, a == 0);
        }
}

/* AUTO picks oneDNN BF16 for packed weights and the 1e-2 bound holds on a larger model */
static void test_auto_bf16_larger(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    s.n_embd = 256;
    s.n_head = 8;
    s.n_head_kv = 4;
    s.n_ff = 512;
    s.n_layer = 3;
    s.n_vocab = 300;
    s.n_ctx = 160;
    s.wtype = GGML_F16;
    fx f;
    fx_open(&f, &s);
    batch b;
    const int lens[2] = {130, 17};
    batch_make(&b, lens, 2, s.n_vocab, 4);
    ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    if (ac_bf16_gemm_available()) { /* AUTO: F16 packed for the own BF16 kernel */
        assert_int_equal(c->model->pack, AC_PACK_BF16);
        assert_ptr_equal(c->gemm_q, &ac_gemm_own_ops);
    }
    double w = check_vs_ref(&f, c, &b, 1e-2, "auto f16 larger");
    printf("  llama f16 dim 256, AUTO (%s): max rel err %.2e\n", c->gemm_q->name, w);
    ac_ctx_free(c);
    free(b.ids);
    fx_close(&f);
}

/* ---- the own GEMM's panels: f32, f16 and row-major agree bitwise -------------------------------- */
/* Hidden states, logits, classifier outputs and the LM head on one row of ctx c into o_*. */
typedef struct f32p_outs {
    float *h, *lg, *cls, *l1;
} f32p_outs;

static void f32p_run(ac_ctx *c, const ac_model *m, const batch *b, f32p_outs *o) {
    const int D = m->info.n_embd, V = m->info.n_vocab, NC = m->info.n_cls_out, lm = m->info.has_lm_head;
    o->h = malloc((size_t)b->T * D * sizeof *o->h);
    o->lg = malloc((size_t)b->n * V * sizeof *o->lg);
    o->cls = malloc((size_t)b->n * (NC ? NC : 1) * sizeof *o->cls);
    o->l1 = malloc((size_t)V * sizeof *o->l1);
    ac_outputs out = {0};
    out.hidden = o->h;
    out.logits = lm ? o->lg : NULL;
    out.cls = NC ? o->cls : NULL;
    assert_int_equal(ac_forward(c, b->seqs, b->n, &out), AC_OK);
    if (lm) assert_int_equal(ac_lm_head(c, o->h + (size_t)5 * D, 1, o->l1), AC_OK);
}

/* a and b (from the same model and batch) bitwise equal: hidden states, and logits, the LM head
 * on one row and the classifier outputs where the model has them */
static void f32p_assert_equal(const f32p_outs *a, const f32p_outs *o, const ac_model *m, const batch *b) {
    const int D = m->info.n_embd, V = m->info.n_vocab, NC = m->info.n_cls_out;
    assert_memory_equal(a->h, o->h, (size_t)b->T * D * sizeof(float));
    if (m->info.has_lm_head) {
        assert_memory_equal(a->lg, o->lg, (size_t)b->n * V * sizeof(float));
        assert_memory_equal(a->l1, o->l1, (size_t)V * sizeof(float));
    }
    if (NC) assert_memory_equal(a->cls, o->cls, (size_t)b->n * NC * sizeof(float));
}

static void f32p_free(f32p_outs *o) { free(o->h), free(o->lg), free(o->cls), free(o->l1); }

/* f32_math: F16/Q8_0 weights widened to f32 (by the CPU backend), products in f32: the tight bound */
/* The own GEMM on weights widened into its panels (c: AC_PACK_F32P) against the same GEMM on
 * row-major copies (AC_PACK=f32), which it transposes per task: the same products summed in the
 * same order, so hidden states (GEMMs of ~108 rows), logits (3 rows) and the LM head on one row
 * are bitwise equal, at the CPU level in use (ctest runs this program at every level). */
static void check_panels_vs_rowmajor(const ac_model *m, ac_ctx *c, const batch *b) {
    setenv("AC_PACK", "f32", 1);
    ac_ctx *r = mkctx(m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    unsetenv("AC_PACK");
    assert_int_equal(r->model->pack, AC_PACK_F32);
    assert_ptr_equal(r->gemm_q, c->gemm_q); /* both the own GEMM */
    f32p_outs op, orow;
    f32p_run(c, m, b, &op);
    f32p_run(r, m, b, &orow);
    f32p_assert_equal(&op, &orow, m, b);
    printf("  f32 panels vs row-major (own GEMM, level %s): hidden%s bitwise equal\n", ac_cpu_level_name(c->level),
           m->info.has_lm_head ? ", logits, LM head (1 row)" : "");
    f32p_free(&op), f32p_free(&orow);
    ac_ctx_free(r);
}

static void test_f32_math(void **st) {
    (void)st;
    const uint32_t types[2] = {GGML_F16, GGML_Q8_0};
    for (int a = 0; a < 2; a++)
        for (int t = 0; t < 2; t++) {
            ref_spec s = ref_spec_default(a ? AC_ARCH_BERT : AC_ARCH_QWEN2);
            s.wtype = types[t];
            s.seed = 300 + 2 * a + t;
            fx f;
            fx_open_math(&f, &s, 0, 1);
            batch b;
            batch_make(&b, g_lens, 3, s.n_vocab, 17);
            ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
            assert_int_equal(c->model->pack, AC_PACK_F32P); /* the own GEMM's panels, widened once */
            double w = check_vs_ref(&f, c, &b, 1e-4, "f32_math");
            printf("  f32_math %s %s: max rel err %.2e (gemm %s)\n", a ? "bert" : "qwen2", ggml_dtype_name(types[t]), w,
                   c->gemm_q->name);
            check_panels_vs_rowmajor(f.m, c, &b);
            ac_ctx_free(c);
            free(b.ids);
            fx_close(&f);
        }
}

/* F16 weights in the exact mode kept in f16 in the own GEMM's panels (AC_PACK_F16P) at the
 * AVX-512 level, whose F32 task widens each panel in its first row tile: every output bitwise
 * equal to the f32 panels (AC_F16_PANELS=off) — hidden states of ~108 rows (many row tiles),
 * logits of 3 rows and the LM head on one row (the first tile alone), SWIGLU's two panels
 * included — on two threads and on one (whose tasks also prefetch the next task's panels), and
 * at the other levels the f32 panels. A malformed AC_F16_PANELS is refused. */
static void test_f16_panels(void **st) {
    (void)st;
    for (int a = 0; a < 2; a++) {
        ref_spec s = ref_spec_default(a ? AC_ARCH_BERT : AC_ARCH_LLAMA);
        s.wtype = GGML_F16;
        s.seed = 900 + a;
        fx f;
        fx_open_math(&f, &s, 0, 1);
        batch b;
        batch_make(&b, g_lens, 3, s.n_vocab, 23);
        unsetenv("AC_F16_PANELS");
        ac_ctx *ch = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
        setenv("AC_F16_PANELS", "off", 1);
        ac_ctx *cf = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
        setenv("AC_F16_PANELS", "maybe", 1);
        ac_ctx *bad = NULL;
        ac_ctx_params bp = ac_ctx_default_params();
        assert_int_equal(ac_ctx_new(f.m, &bp, &bad), AC_ERR_ARG);
        assert_null(bad);
        assert_non_null(strstr(ac_last_error(), "AC_F16_PANELS"));
        unsetenv("AC_F16_PANELS");
#if defined(__x86_64__) || defined(__i386__)
        const int want_here = ch->level >= AC_CPU_AVX512 ? AC_PACK_F16P : AC_PACK_F32P;
#else
        const int want_here = AC_PACK_F32P;
#endif
        assert_int_equal(ch->model->pack, AC_PACK_F32P);
        assert_int_equal(ch->model->layers[0].wq.pack, want_here);
        assert_int_equal(ch->model->layers[0].w_down.pack, want_here);
        assert_int_equal(cf->model->layers[0].wq.pack, AC_PACK_F32P);
        if (want_here == AC_PACK_F16P) assert_ptr_not_equal(ch->model, cf->model); /* two preparations */
        else assert_ptr_equal(ch->model, cf->model); /* one: the switch changes nothing at this level */
        /* one thread: each task also prefetches the next one's panels (ac_gemm_next) */
        ac_ctx_params p1 = ac_ctx_default_params();
        p1.n_threads = 1;
        ac_ctx *c1 = NULL;
        assert_int_equal(ac_ctx_new(f.m, &p1, &c1), AC_OK);
        f32p_outs oh, of, o1;
        f32p_run(ch, f.m, &b, &oh);
        f32p_run(cf, f.m, &b, &of);
        f32p_run(c1, f.m, &b, &o1);
        f32p_assert_equal(&oh, &of, f.m, &b);
        f32p_assert_equal(&o1, &of, f.m, &b);
        f32p_free(&o1);
        ac_ctx_free(c1);
        printf("  f16 panels %s (level %s, %s): bitwise equal to f32 panels\n", f.m->arch_name,
               ac_cpu_level_name(ch->level), want_here == AC_PACK_F16P ? "f16 panels" : "f32 panels at this level");
        f32p_free(&oh), f32p_free(&of);
        ac_ctx_free(ch), ac_ctx_free(cf);
        free(b.ids);
        fx_close(&f);
    }
}

/* F32 models: the CPU backend copies the matrices once into the own F32 GEMM's panels (a view
 * of the model, shared by its contexts; the mapping untouched) instead of each task transposing
 * 64 rows of W on every call; AC_F32_PANELS=off keeps them in place (the model itself, zero
 * copy). Both ways, exact and fast mode (F32 weights run f32 in both): the same products in the
 * same order, so every output is bitwise equal, and both match the reference. A malformed
 * AC_F32_PANELS is refused, naming it. */
static void test_f32_panels(void **st) {
    (void)st;
    const int archs[3] = {AC_ARCH_LLAMA, AC_ARCH_BERT, AC_ARCH_QWEN2};
    for (int a = 0; a < 3; a++)
        for (int f32_math = 0; f32_math < 2; f32_math++) {
            ref_spec s = ref_spec_default(archs[a]);
            s.wtype = GGML_F32;
            s.seed = 700 + 2 * a + f32_math;
            if (archs[a] == AC_ARCH_BERT) s.n_cls = 3;
            fx f;
            fx_open_math(&f, &s, 0, f32_math);
            batch b;
            batch_make(&b, g_lens, 3, s.n_vocab, 19);

            unsetenv("AC_F32_PANELS");
            ac_ctx *cp = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED), *cp2 = mkctx(f.m, AC_GEMM_OWN, AC_ATTN_FUSED);
            assert_ptr_not_equal(cp->model, f.m);
            assert_ptr_equal(cp2->model, cp->model); /* one copy per model */
            assert_int_equal(cp->model->f32_panels, 1);
            assert_int_equal(cp->model->pack, AC_PACK_F32P); /* also in the fast mode: no bf16 inputs made */
            assert_int_equal(cp->model->layers[0].wq.pack, AC_PACK_F32P);
            assert_null(cp->model->layers[0].wq.f32);
            assert_int_equal(f.m->layers[0].wq.pack, AC_PACK_NONE); /* the loaded model untouched */
            assert_ptr_equal(f.m->layers[0].wq.f32, f.m->layers[0].wq.data);
            setenv("AC_F32_PANELS", "off", 1);
            ac_ctx *ci = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
            assert_ptr_equal(ci->model, f.m); /* in place: per-call transposes */
            setenv("AC_F32_PANELS", "sometimes", 1);
            for (int g = 0; g < 2; g++) { /* refused whatever the GEMM (OpenBLAS: no panels at all) */
                ac_ctx_params bp = ac_ctx_default_params();
                bp.gemm = g ? AC_GEMM_OPENBLAS : AC_GEMM_AUTO;
                ac_ctx *bad = NULL;
                assert_int_equal(ac_ctx_new(f.m, &bp, &bad), AC_ERR_ARG);
                assert_null(bad);
                assert_non_null(strstr(ac_last_error(), "AC_F32_PANELS"));
            }
            unsetenv("AC_F32_PANELS");
            ac_ctx *cb = mkctx(f.m, AC_GEMM_OPENBLAS, AC_ATTN_FUSED); /* other GEMMs read the mapping */
            assert_int_equal(cb->model->f32_panels, 0);

            f32p_outs op, oi;
            f32p_run(cp, f.m, &b, &op);
            f32p_run(ci, f.m, &b, &oi);
            f32p_assert_equal(&op, &oi, f.m, &b);
            const double w = check_vs_ref(&f, cp, &b, 1e-4, "f32 panels");
            printf("  f32 panels %s (%s mode, level %s): bitwise equal to in place; max rel err vs ref %.2e\n",
                   f.m->arch_name, f32_math ? "exact" : "fast", ac_cpu_level_name(cp->level), w);
            f32p_free(&op), f32p_free(&oi);
            ac_ctx_free(cp), ac_ctx_free(cp2), ac_ctx_free(ci), ac_ctx_free(cb);
            free(b.ids);
            fx_close(&f);
        }
}

/* ---- batch == one at a time ------------------------------------------------------------------ */

static void run_batch_vs_single(const ref_spec *s) {
    fx f;
    fx_open(&f, s);
    const int lens[4] = {33, 70, 5, 64};
    batch b;
    batch_make(&b, lens, 4, s->n_vocab, 11);
    const int D = f.m->info.n_embd;
    const int gemms[4] = {AC_GEMM_NAIVE, AC_GEMM_OPENBLAS, AC_GEMM_DNNL, AC_GEMM_AVX512};
    for (int gi = 0; gi < 4; gi++) {
        if (gemms[gi] == AC_GEMM_DNNL && !have_dnnl()) continue;
        if (gemms[gi] == AC_GEMM_AVX512 && !ac_f32_gemm_available()) continue;
        for (int attn = 0; attn < 2; attn++) {
            ac_ctx *c = mkctx(f.m, gemms[gi], attn);
            float *hb = malloc((size_t)b.T * D * sizeof *hb), *h1 = malloc((size_t)b.T * D * sizeof *h1);
            ac_outputs o = {0};
            o.hidden = hb;
            assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
            for (int i = 0, off = 0; i < b.n; off += b.seqs[i].n_tokens, i++) {
                o.hidden = h1 + (size_t)off * D;
                assert_int_equal(ac_forward(c, &b.seqs[i], 1, &o), AC_OK);
            }
            size_t n = (size_t)b.T * D, ndiff = 0;
            double mx = 0, err = 0;
            for (size_t i = 0; i < n; i++) {
                ndiff += hb[i] != h1[i];
                err = fmax(err, fabs((double)hb[i] - h1[i]));
                mx = fmax(mx, fabs((double)h1[i]));
            }
            printf("  batch vs single %-6s gemm %-8s attn %d: %s (max rel diff %.2e)\n", ref_spec_default(0).arch == s->arch ? "llama" : "bert",
                   c->gemm_q->name, attn, ndiff ? "within tolerance" : "bitwise identical", err / mx);
            assert_true(err / mx <= 1e-6);
            free(hb), free(h1);
            ac_ctx_free(c);
        }
    }
    free(b.ids);
    fx_close(&f);
}

static void test_batch_vs_single(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    run_batch_vs_single(&s);
    s = ref_spec_default(AC_ARCH_BERT);
    run_batch_vs_single(&s);
    s = ref_spec_default(AC_ARCH_LLAMA);
    s.wtype = GGML_F16;
    run_batch_vs_single(&s);
}

/* ---- attention hook: record, then supply (skip path) ----------------------------------------------- */
typedef struct map_store {
    int n_layer, n_seq;
    float **P;        /* [n_layer * n_seq] recorded maps */
    size_t *n;        /* their sizes */
    int supply_mask;  /* bit s: supply maps for sequence s */
    int n_supplied, n_recorded;
    float perturb;    /* added to the supplied maps (0: exact) */
    float *tmp[8];    /* perturbed maps of the current layer, one per sequence */
} map_store;

static int rec_cb(void *u, const ac_attn_site *s, const float *P) {
    map_store *ms = u;
    size_t n = (size_t)s->n_head * s->n_tokens * s->n_tokens;
    float **slot = &ms->P[s->layer * ms->n_seq + s->seq];
    free(*slot);
    *slot = malloc(n * sizeof **slot);
    memcpy(*slot, P, n * sizeof **slot);
    ms->n[s->layer * ms->n_seq + s->seq] = n;
    ms->n_recorded++;
    return AC_OK;
}

static const float *sup_cb(void *u, const ac_attn_site *s) {
    map_store *ms = u;
    if (!(ms->supply_mask >> s->seq & 1)) return NULL;
    ms->n_supplied++;
    const float *P = ms->P[s->layer * ms->n_seq + s->seq];
    if (ms->perturb == 0) return P;
    /* a different valid map: mix with uniform attention over the visible keys */
    size_t n = ms->n[s->layer * ms->n_seq + s->seq];
    float **tmp = &ms->tmp[s->seq]; /* valid until the next layer asks for this sequence */
    free(*tmp);
    *tmp = malloc(n * sizeof **tmp);
    const int L = s->n_tokens;
    for (size_t i = 0; i < n; i++) {
        int t = (int)(i / L % L), j = (int)(i % L);
        float u_ = (!s->causal || j <= t) ? 1.0f / (float)(s->causal ? t + 1 : L) : 0.0f;
        (*tmp)[i] = (1 - ms->perturb) * P[i] + ms->perturb * u_;
    }
    return *tmp;
}

/* gemm: the backend of the materialised context (steps 1-3); AUTO also runs step 4. */
static void run_skip_path(const ref_spec *spec, int gemm) {
    fx f;
    fx_open(&f, spec);
    const int lens[3] = {40, 70, 9};
    batch b;
    batch_make(&b, lens, 3, spec->n_vocab, 21);
    const ac_model_info *in = &f.m->info;
    const int D = in->n_embd, T = b.T;
    map_store ms = {in->n_layer, 3, calloc((size_t)in->n_layer * 3, sizeof(float *)),
                    calloc((size_t)in->n_layer * 3, sizeof(size_t)), 0, 0, 0, 0, {NULL}};
    float *h_rec = malloc((size_t)T * D * 4), *h_sup = malloc((size_t)T * D * 4), *h_ref = malloc((size_t)T * D * 4);
    ac_outputs o = {0};

    /* 1. materialised run recording every map */
    ac_ctx *c = mkctx(f.m, gemm, AC_ATTN_MATERIALIZED);
    ac_attn_hook hk = {.user = &ms, .record = rec_cb};
    ac_ctx_set_attn_hook(c, &hk);
    o.hidden = h_rec;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    assert_int_equal(ms.n_recorded, in->n_layer * 3);
    /* rows of each map sum to 1, zero above the diagonal for causal models */
    for (int i = 0; i < in->n_layer * 3; i++) {
        const int L = lens[i % 3];
        for (int r = 0; r < in->n_head * L; r++) {
            double sum = 0;
            for (int j = 0; j < L; j++) {
                float p = ms.P[i][(size_t)r * L + j];
                if (in->causal && j > r % L) assert_true(p == 0.0f);
                sum += p;
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
    }

    /* 2. supply every map: Q/K/RoPE/QK^T/softmax skipped; poison Q and K to prove it */
    hk.record = NULL;
    hk.supply = sup_cb;
    ms.supply_mask = 7;
    ac_ctx_set_attn_hook(c, &hk);
    const size_t qn = (size_t)T * in->n_head * in->head_dim, kn = (size_t)T * in->n_head_kv * in->head_dim;
    for (size_t i = 0; i < qn; i++) c->q[i] = NAN;
    for (size_t i = 0; i < kn; i++) c->k[i] = NAN;
    ac_ctx_reset_profile(c);
    o.hidden = h_sup;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    assert_int_equal(ms.n_supplied, in->n_layer * 3);
    assert_true(isnan(c->q[0]) && isnan(c->q[qn - 1]) && isnan(c->k[0]) && isnan(c->k[kn - 1]));
    assert_memory_equal(h_sup, h_rec, (size_t)T * D * 4); /* exact maps -> exact output */

    /* 3. supply only sequence 1 in the batch; the others compute theirs. Their Q and K are then
     * projected over sub-batches (the 40 rows of sequence 0, the 9 of sequence 2) instead of all
     * 119 rows. The own GEMM sums every output over k in order whatever M is (gemm_own.c), so
     * the result is bitwise the same. OpenBLAS and oneDNN choose their blocking and edge
     * kernels by M: their products, and so the output, may differ in the last bits (this is
     * what failed on AVX2-only CPUs, where AUTO used to pick oneDNN): f32 rounding, < 1e-5. */
    ms.supply_mask = 2;
    o.hidden = h_sup;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    if (ac_ctx_gemm_fast(c, &f.m->layers[0].wq) && ac_ctx_gemm_fast(c, &f.m->layers[0].wk)) { /* own kernels */
        assert_memory_equal(h_sup, h_rec, (size_t)T * D * 4);
    } else {
        double e3 = 0, m3 = 0;
        for (size_t i = 0; i < (size_t)T * D; i++) {
            e3 = fmax(e3, fabs((double)h_sup[i] - h_rec[i]));
            m3 = fmax(m3, fabs((double)h_rec[i]));
        }
        printf("  skip path, %s: sub-batch Q/K projections vs whole batch: rel diff %.2e\n", c->gemm_q->name, e3 / m3);
        assert_true(e3 / m3 < 1e-5);
    }
    ac_ctx_free(c);
    if (gemm != AC_GEMM_AUTO) goto done;

    /* 4. fused default context + supplied maps for sequence 0 and 2: close to the reference */
    c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    ms.supply_mask = 5;
    ac_ctx_set_attn_hook(c, &hk);
    o.hidden = h_sup;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    ac_ctx_set_attn_hook(c, NULL);
    o.hidden = h_ref;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    double err = 0, mx = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) {
        err = fmax(err, fabs((double)h_sup[i] - h_ref[i]));
        mx = fmax(mx, fabs((double)h_ref[i]));
    }
    printf("  skip path, fused ctx, maps from the materialised run: rel diff %.2e\n", err / mx);
    assert_true(err / mx < (spec->wtype == GGML_F32 ? 1e-5 : 1e-2));

    /* 5. a different map changes the output: the supplied map is really what is used */
    ms.perturb = 0.5f;
    ms.supply_mask = 7;
    ac_ctx_set_attn_hook(c, &hk);
    o.hidden = h_sup;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    err = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) err = fmax(err, fabs((double)h_sup[i] - h_ref[i]));
    assert_true(err / mx > 1e-3);
    ac_ctx_free(c);

done:
    for (int i = 0; i < in->n_layer * 3; i++) free(ms.P[i]);
    for (int i = 0; i < 8; i++) free(ms.tmp[i]);
    free(ms.P), free(ms.n);
    free(h_rec), free(h_sup), free(h_ref), free(b.ids);
    fx_close(&f);
}

static void test_skip_path(void **st) {
    (void)st;
    /* AUTO (the own kernels at the CPU level in use) and a library backend (OpenBLAS) */
    const int gemms[2] = {AC_GEMM_AUTO, AC_GEMM_OPENBLAS};
    for (int g = 0; g < 2; g++) {
        ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
        run_skip_path(&s, gemms[g]);
        s = ref_spec_default(AC_ARCH_BERT);
        run_skip_path(&s, gemms[g]);
        s = ref_spec_default(AC_ARCH_QWEN2);
        s.wtype = GGML_BF16;
        run_skip_path(&s, gemms[g]);
    }
}

/* ---- the hook sees each layer's attention input; at layer 0 it is what
 * ac_model_layer0_states computes (the cache summarises it instead of
 * recomputing the embeddings) ----------------------------------------------------------------------- */
typedef struct x_check {
    const ac_model *m;
    int n_checked, n_layers_seen;
} x_check;

static int x_reuse(void *u, const ac_attn_site *s) {
    x_check *xc = u;
    assert_non_null(s->x);
    xc->n_layers_seen++;
    if (s->layer == 0) {
        const int D = xc->m->info.n_embd;
        float *want = malloc((size_t)s->n_tokens * D * sizeof *want);
        assert_int_equal(ac_model_layer0_states(xc->m, s->tokens, s->n_tokens, want), AC_OK);
        assert_memory_equal(s->x, want, (size_t)s->n_tokens * D * sizeof *want); /* bitwise */
        free(want);
        xc->n_checked++;
    }
    return 0; /* compute every map */
}

static int x_apply(void *u, const ac_attn_site *s, int n, const float *v, int ldv, int nkv, int hd, float *o, int ldo) {
    (void)u, (void)s, (void)n, (void)v, (void)ldv, (void)nkv, (void)hd, (void)o, (void)ldo;
    return ac_err(AC_ERR_INTERNAL, "never called: reuse returned 0");
}

static void test_site_input(void **st) {
    (void)st;
    const int archs[3] = {AC_ARCH_LLAMA, AC_ARCH_BERT, AC_ARCH_QWEN2};
    for (int a = 0; a < 3; a++) {
        ref_spec spec = ref_spec_default(archs[a]);
        fx f;
        fx_open(&f, &spec);
        const int lens[3] = {17, 5, 30};
        batch b;
        batch_make(&b, lens, 3, spec.n_vocab, 5);
        ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
        x_check xc = {f.m, 0, 0};
        ac_attn_hook hk = {.user = &xc, .reuse = x_reuse, .apply = x_apply};
        ac_ctx_set_attn_hook(c, &hk);
        float *h = malloc((size_t)b.T * f.m->info.n_embd * sizeof *h);
        ac_outputs o = {0};
        o.hidden = h;
        assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
        assert_int_equal(xc.n_checked, 3);
        assert_int_equal(xc.n_layers_seen, 3 * f.m->info.n_layer);
        free(h), free(b.ids);
        ac_ctx_free(c);
        fx_close(&f);
    }
}

static int fail_rec(void *u, const ac_attn_site *s, const float *P) {
    (void)u, (void)P;
    return s->layer == 1 ? ac_err(AC_ERR_CACHE, "disk full") : AC_OK;
}

static void test_hook_error(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    fx f;
    fx_open(&f, &s);
    ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    ac_attn_hook hk = {.record = fail_rec};
    ac_ctx_set_attn_hook(c, &hk);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    ac_seq q = {ids, 5};
    float h[5 * 64];
    ac_outputs o = {0};
    o.hidden = h;
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_CACHE);
    assert_non_null(strstr(ac_last_error(), "disk full"));
    assert_non_null(strstr(ac_last_error(), "layer 1"));
    ac_ctx_free(c);
    fx_close(&f);
}

/* ---- limits and arguments ----------------------------------------------------------------------- */
static void test_limits(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    fx f;
    fx_open(&f, &s);
    ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    int32_t ids[200];
    for (int i = 0; i < 200; i++) ids[i] = i % s.n_vocab;
    float *pooled = malloc(4 * 64 * sizeof *pooled);
    ac_outputs o = {0};
    o.pooled = pooled;
    o.pooling = AC_POOL_DEFAULT;
    ac_seq q = {ids, s.n_ctx + 1};
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "input of 97 tokens exceeds"));
    q.n_tokens = s.n_ctx; /* exactly at the limit: fine */
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_OK);
    ac_seq two[2] = {{ids, 3}, {ids, 0}};
    assert_int_equal(ac_forward(c, two, 2, &o), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "empty input (no tokens) (sequence 1)"));
    ids[2] = s.n_vocab;
    q.n_tokens = 4;
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "out of range"));
    ids[2] = -1;
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_INPUT);
    ids[2] = 2;
    assert_int_equal(ac_forward(c, &q, 0, &o), AC_ERR_ARG);
    assert_int_equal(ac_forward(c, NULL, 1, &o), AC_ERR_ARG);
    o.pooling = AC_POOL_NONE;
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_ARG);
    o.pooling = AC_POOL_DEFAULT;
    float logits[200];
    o.logits = logits; /* bert has no LM head */
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_UNSUPPORTED);
    ac_ctx_free(c);

    /* max_tokens below n_ctx_train */
    ac_ctx_params p = ac_ctx_default_params();
    p.max_tokens = 8;
    assert_int_equal(ac_ctx_new(f.m, &p, &c), AC_OK);
    o.logits = NULL;
    q.n_tokens = 9;
    assert_int_equal(ac_forward(c, &q, 1, &o), AC_ERR_INPUT);
    assert_non_null(strstr(ac_last_error(), "input of 9 tokens exceeds the limit of 8"));
    ac_ctx_free(c);
    p = ac_ctx_default_params();
    p.gemm = 42;
    assert_int_equal(ac_ctx_new(f.m, &p, &c), AC_ERR_ARG);
    p = ac_ctx_default_params();
    p.attn = 7;
    assert_int_equal(ac_ctx_new(f.m, &p, &c), AC_ERR_ARG);
    free(pooled);
    fx_close(&f);
}

/* ---- loader errors ------------------------------------------------------------------------------------ */
static int load_spec_rc(const ref_spec *s) {
    uint8_t *buf;
    size_t size;
    assert_int_equal(ref_build(s, &buf, &size), AC_OK);
    ac_model *m = NULL;
    int rc = ac_model_load_memory(buf, size, NULL, AC_LOAD_NO_VOCAB, &m);
    if (rc == AC_OK) ac_model_free(m);
    else assert_null(m);
    free(buf);
    return rc;
}

static void test_loader_errors(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_LLAMA);
    s.arch_override = "gpt2";
    assert_int_equal(load_spec_rc(&s), AC_ERR_UNSUPPORTED);
    assert_non_null(strstr(ac_last_error(), "unsupported architecture 'gpt2'"));

    s = ref_spec_default(AC_ARCH_LLAMA);
    s.omit = "blk.1.ffn_up.weight";
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "blk.1.ffn_up.weight"));

    s = ref_spec_default(AC_ARCH_BERT);
    s.omit = "blk.0.layer_output_norm.bias";
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "blk.0.layer_output_norm.bias"));

    s = ref_spec_default(AC_ARCH_QWEN2);
    s.omit = "blk.0.attn_k.bias"; /* required for qwen2 */
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "blk.0.attn_k.bias"));

    s = ref_spec_default(AC_ARCH_LLAMA);
    s.reshape = "blk.0.attn_k.weight";
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "blk.0.attn_k.weight"));
    assert_non_null(strstr(ac_last_error(), "shape"));

    s = ref_spec_default(AC_ARCH_LLAMA);
    s.reshape = "output_norm.weight";
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "output_norm.weight"));

    s = ref_spec_default(AC_ARCH_LLAMA);
    s.q4 = "blk.1.ffn_down.weight";
    assert_int_equal(load_spec_rc(&s), AC_ERR_UNSUPPORTED);
    assert_non_null(strstr(ac_last_error(), "blk.1.ffn_down.weight"));

    s = ref_spec_default(AC_ARCH_LLAMA);
    s.n_head_kv = 3; /* 4 heads not a multiple of 3 */
    s.n_head = 4;
    s.omit = NULL;
    /* shapes follow n_head_kv = 3 consistently; the loader must reject the hparams */
    assert_int_equal(load_spec_rc(&s), AC_ERR_FORMAT);
    assert_non_null(strstr(ac_last_error(), "head_count"));

    /* RoPE scaling other than linear */
    {
        ac_gguf_writer *w;
        s = ref_spec_default(AC_ARCH_LLAMA);
        assert_int_equal(ref_build_writer(&s, &w), AC_OK);
        assert_int_equal(ac_gguf_w_str(w, "llama.rope.scaling.type", "yarn"), AC_OK);
        uint8_t *buf;
        size_t size;
        assert_int_equal(ac_gguf_w_to_memory(w, 3, &buf, &size), AC_OK);
        ac_gguf_writer_free(w);
        ac_model *mm = NULL;
        assert_int_equal(ac_model_load_memory(buf, size, NULL, AC_LOAD_NO_VOCAB, &mm), AC_ERR_UNSUPPORTED);
        assert_non_null(strstr(ac_last_error(), "rope.scaling.type"));
        free(buf);
    }

    ac_model *m = (ac_model *)1;
    assert_int_equal(ac_model_load("/nonexistent/model.gguf", NULL, &m), AC_ERR_IO);
    assert_null(m);
    assert_int_equal(ac_model_load(NULL, NULL, &m), AC_ERR_ARG);
}

/* ---- info, profile, lm head, load paths -------------------------------------------------------------- */
static void test_info_profile_head(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_QWEN2);
    s.wtype = GGML_Q8_0;
    fx f;
    fx_open(&f, &s);
    ac_model_info in;
    assert_int_equal(ac_model_get_info(f.m, &in), AC_OK);
    assert_string_equal(in.arch_name, "qwen2");
    assert_int_equal(in.arch, AC_ARCH_QWEN2);
    assert_string_equal(in.name, "synthetic");
    assert_int_equal(in.n_embd, 64);
    assert_int_equal(in.n_layer, 2);
    assert_int_equal(in.n_head, 4);
    assert_int_equal(in.n_head_kv, 2);
    assert_int_equal(in.head_dim, 16);
    assert_int_equal(in.n_ff, 160);
    assert_int_equal(in.n_vocab, 101);
    assert_int_equal(in.n_ctx_train, 96);
    assert_int_equal(in.causal, 1);
    assert_int_equal(in.pooling, AC_POOL_LAST);
    assert_int_equal(in.has_lm_head, 1);
    assert_int_equal(in.weight_type, GGML_Q8_0);
    assert_int_equal(in.file_bytes, f.size);
    assert_true(in.n_params > 2 * 64 * 101);

    ac_ctx_params p = ac_ctx_default_params();
    p.profile = 1;
    p.n_threads = 2;
    ac_ctx *c;
    assert_int_equal(ac_ctx_new(f.m, &p, &c), AC_OK);
    assert_ptr_equal(ac_ctx_model(c), f.m);
    batch b;
    batch_make(&b, g_lens, 3, s.n_vocab, 5);
    float *hidden = malloc((size_t)b.T * 64 * 4), *logits = malloc(3 * 101 * 4), *l2 = malloc(3 * 101 * 4);
    ac_outputs o = {0};
    o.hidden = hidden;
    o.logits = logits;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    double sec[AC_STAGE_COUNT];
    assert_int_equal(ac_ctx_get_profile(c, sec), AC_OK);
    assert_true(sec[AC_STAGE_QKV] > 0 && sec[AC_STAGE_ATTN] > 0 && sec[AC_STAGE_MLP] > 0 && sec[AC_STAGE_O] > 0 &&
                sec[AC_STAGE_HEAD] > 0 && sec[AC_STAGE_NORM] > 0);
    assert_true(sec[AC_STAGE_QK] == 0 && sec[AC_STAGE_SOFTMAX] == 0); /* fused path only */
    ac_ctx_reset_profile(c);
    assert_int_equal(ac_ctx_get_profile(c, sec), AC_OK);
    for (int i = 0; i < AC_STAGE_COUNT; i++) assert_true(sec[i] == 0);
    assert_string_equal(ac_stage_name(AC_STAGE_QKV), "qkv");
    assert_string_equal(ac_stage_name(AC_STAGE_HEAD), "head");
    assert_string_equal(ac_stage_name(99), "?");
    /* ac_lm_head on the last hidden rows reproduces the forward's logits */
    for (int i = 0, off = 0; i < 3; off += b.seqs[i].n_tokens, i++)
        assert_int_equal(ac_lm_head(c, hidden + (size_t)(off + b.seqs[i].n_tokens - 1) * 64, 1, l2 + i * 101), AC_OK);
    assert_memory_equal(l2, logits, 3 * 101 * 4);
    ac_ctx_free(c);

    /* use_mmap = 0 (private copy) gives the same model */
    ac_model_params mp = ac_model_default_params();
    mp.use_mmap = 0;
    mp.check_tensors = 1;
    mp.f32_math = 0; /* the same (fast) arithmetic as the fixture */
    ac_model *m2;
    assert_int_equal(ac_model_load_memory(f.buf, f.size, &mp, AC_LOAD_NO_VOCAB, &m2), AC_OK);
    assert_int_equal(ac_ctx_new(m2, &p, &c), AC_OK);
    o.hidden = NULL;
    o.logits = l2;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    assert_memory_equal(l2, logits, 3 * 101 * 4);
    ac_ctx_free(c);
    ac_model_free(m2);
    free(hidden), free(logits), free(l2), free(b.ids);
    fx_close(&f);
}

static void test_pooling_modes(void **st) {
    (void)st;
    ref_spec s = ref_spec_default(AC_ARCH_BERT);
    fx f;
    fx_open(&f, &s);
    ac_ctx *c = mkctx(f.m, AC_GEMM_AUTO, AC_ATTN_FUSED);
    batch b;
    batch_make(&b, g_lens, 3, s.n_vocab, 8);
    const int D = 64;
    float *h = malloc((size_t)b.T * D * 4), *pl = malloc(3 * D * 4);
    ac_outputs o = {0};
    o.hidden = h;
    assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
    o.hidden = NULL;
    o.pooled = pl;
    const int modes[3] = {AC_POOL_CLS, AC_POOL_LAST, AC_POOL_MEAN};
    for (int mi = 0; mi < 3; mi++)
        for (int norm = 0; norm < 2; norm++) {
            o.pooling = modes[mi];
            o.normalize = norm;
            assert_int_equal(ac_forward(c, b.seqs, b.n, &o), AC_OK);
            for (int i = 0, off = 0; i < 3; off += b.seqs[i].n_tokens, i++) {
                const int n = b.seqs[i].n_tokens;
                double want[64], ss = 0;
                for (int d = 0; d < D; d++) {
                    if (modes[mi] == AC_POOL_CLS) want[d] = h[(size_t)off * D + d];
                    else if (modes[mi] == AC_POOL_LAST) want[d] = h[(size_t)(off + n - 1) * D + d];
                    else {
                        want[d] = 0;
                        for (int t = 0; t < n; t++) want[d] += h[(size_t)(off + t) * D + d];
                        want[d] /= n;
                    }
                    ss += want[d] * want[d];
                }
                for (int d = 0; d < D; d++) {
                    double w = norm ? want[d] / sqrt(ss) : want[d];
                    assert_true(fabs(pl[i * D + d] - w) <= 1e-6 * (1 + fabs(w)));
                }
            }
        }
    /* the model default for bert without pooling_type is MEAN */
    assert_int_equal(f.m->info.pooling, AC_POOL_MEAN);
    free(h), free(pl), free(b.ids);
    ac_ctx_free(c);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_f32),        cmocka_unit_test(test_llama_variants),
        cmocka_unit_test(test_qwen2_f32),        cmocka_unit_test(test_bert_f32),
        cmocka_unit_test(test_bert_causal_flag), cmocka_unit_test(test_weight_types),
        cmocka_unit_test(test_auto_bf16_larger), cmocka_unit_test(test_f32_math),
        cmocka_unit_test(test_f32_panels),
        cmocka_unit_test(test_f16_panels),
        cmocka_unit_test(test_batch_vs_single),
        cmocka_unit_test(test_skip_path),        cmocka_unit_test(test_hook_error),
        cmocka_unit_test(test_site_input),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_info_profile_head), cmocka_unit_test(test_pooling_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
