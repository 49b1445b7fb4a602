/* weights.c — the CPU backend's weights: what its kernels read of a loaded
 * model, made when the first context that needs them is created and kept on
 * the model (ac_model_prepared: once per layout, under the model's lock, freed
 * with the model), so that every later context, in any thread, shares them.
 *
 * A layout ("kind", AC_PACK_*) for the F16/BF16/Q8_0 matrices:
 *   F32P  widened to owned f32 copies laid out in the own F32 GEMM's panels
 *         (gemm_own.c: [ceil(N/64)][K][64], what each of its tasks otherwise
 *         transposes out of a row-major copy on every call — a fixed cost per
 *         panel that a call of few rows, a prefix-cached suffix or the LM head's
 *         one row, spreads over few rows): the exact mode (ac_model_params.f32_math,
 *         the default), and the fast mode where the CPU level has no BF16 kernel,
 *         when the own GEMM runs them (the default). The same bytes as F32 (plus
 *         the last panel's padding to 64 rows) and bitwise the same results;
 *   F32   widened to owned row-major f32 copies: the same, for the other GEMMs
 *         (OpenBLAS, oneDNN, naive: AC_GEMM=..., ac_ctx_params.gemm), and AC_PACK=f32
 *         (the own GEMM on row-major copies, for comparisons);
 *   BF16  packed into BF16 panels for the own AVX512-BF16 kernel (gemm_own.c):
 *         the fast mode;
 *   DNNL  packed into oneDNN's blocked BF16 layout (gemm_dnnl.c): the fast mode
 *         with AC_PACK=onednn, AC_GEMM=onednn, ac_ctx_params.gemm = DNNL or the
 *         AC_LOAD_PACK_DNNL hint;
 *   NONE  as mapped, converted row by row by the kernels (ac_row_to_f32): the
 *         fast mode with AC_PACK=none, AC_GEMM=openblas|naive, ac_ctx_params.gemm
 *         = OPENBLAS|NAIVE or the AC_LOAD_NO_PACK hint.
 * The kernels read a "view" of the model: a copy of its description (struct
 * ac_model) whose matrices carry the layout's copies; everything else (the
 * mapping, vectors, tokenizer, hyper-parameters) is the model's, borrowed. A
 * NONE layout needs no view: the context reads the model itself.
 *
 * F32 matrices are used in place from the mapping, except where the own GEMM
 * runs them (layouts F32P and BF16, GEMM choice AUTO or OWN): there they are
 * copied once into the same F32 panels (view->f32_panels = 1), since a task
 * otherwise transposes its 64 rows of W on every call — at the few rows of a
 * short text (all-MiniLM-L6-v2 on a 13-token sentence) that transposition was
 * 2/3 of the forward's time. The copy adds the F32 matrices' size to the
 * resident memory (the mapping's pages stay, for other layouts), so it is
 * made only while they total at most F32_PANELS_AUTO_MAX bytes, or as the
 * environment says: AC_F32_PANELS=on (always) | off (never: per-call
 * transposes, as before) | auto (the default). Same values in the same
 * order: results bitwise those of the in-place matrices. A model of F32
 * matrices only, left in place, needs no view either. */
#include "forward/forward.h"
#include "util/common.h"
#include "util/cpu.h"

#include <string.h>
#include <strings.h>

/* The view of one layout. `view` first: a cpu_weights is also the ac_model its kernels read. */
typedef struct cpu_weights {
    ac_model view;
} cpu_weights;

static const char cpu_weights_owner = 0; /* names the CPU backend's entries among a model's preparations */

/* An owned f32 copy of a matrix (AC_PACK_F32). */
static int widen_f32(ac_mat *w) {
    float *b = AC_ALIGNED_ALLOC((size_t)w->n_out * w->n_in * sizeof(float)); /* [n_out][n_in] */
    if (!b) return ac_err(AC_ERR_NOMEM, "out of memory widening %s to f32", w->name);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < w->n_out; r++) ac_row_to_f32(w->type, w->data, w->row_bytes, r, w->n_in, b + (size_t)r * w->n_in);
    w->packed = b;
    w->f32 = b;
    w->pack = AC_PACK_F32;
    return AC_OK;
}

static void weights_release(void *data) {
    cpu_weights *w = data;
    if (!w) return;
    ac_model *v = &w->view;
    if (v->layers) {
        const int cap = AC_MODEL_MAX_MATS(v);
        ac_mat **mats = AC_MALLOC((size_t)cap * sizeof *mats);
        /* without the list (out of memory while freeing) the copies leak rather than crash */
        const int n = mats ? ac_model_mats(v, mats, cap) : 0;
        for (int i = 0; i < n; i++) {
            if (mats[i]->pack == AC_PACK_NONE) continue;
            free(mats[i]->packed);
            free(mats[i]->packed_md);
        }
        free(mats);
        free(v->layers);
    }
    free(w);
}

#define F32_PANELS_AUTO_MAX ((size_t)1 << 30) /* AC_F32_PANELS=auto: F32 matrices of at most 1 GiB in all */
#define PREP_F32_PANELS 0x100                   /* in the preparation's key: F32 matrices in panels too */
#define PREP_F16_PANELS 0x200                   /* in the key: F16 matrices of the F32P layout in f16 panels */

/* make() of ac_model_prepared: the view of layout kind & 0xff (PREP_F32_PANELS: its F32
 * matrices in the own GEMM's F32 panels too). */
static int weights_make(const ac_model *m, int key, void *arg, void **out) {
    (void)arg;
    const int kind = key & 0xff, f32_panels = !!(key & PREP_F32_PANELS), f16_panels = !!(key & PREP_F16_PANELS);
    cpu_weights *w = AC_CALLOC(1, sizeof *w);
    if (!w) return AC_ERR_NOMEM;
    ac_model *v = &w->view;
    *v = *m; /* the description; nothing of it is owned by the view but its layer table and copies */
    v->owned_f32 = NULL;
    v->n_owned = v->cap_owned = 0;
    v->file_buf = NULL;
    v->preps = NULL;
    v->layers = AC_MALLOC((size_t)m->hp.n_layer * sizeof *v->layers);
    const int cap = AC_MODEL_MAX_MATS(m);
    ac_mat **mats = AC_MALLOC((size_t)cap * sizeof *mats);
    uint16_t *tmp = NULL; /* [n_out][n_in] bf16 staging (oneDNN's reorder source) */
    int rc = AC_OK;
    if (!v->layers || !mats) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    memcpy(v->layers, m->layers, (size_t)m->hp.n_layer * sizeof *v->layers);
    const int n = ac_model_mats(v, mats, cap);
    size_t maxe = 0;
    for (int i = 0; i < n; i++)
        if (mats[i]->type != GGML_F32) maxe = AC_MAX(maxe, (size_t)mats[i]->n_out * mats[i]->n_in);
    if (kind == AC_PACK_DNNL && !(tmp = AC_ALIGNED_ALLOC(maxe * sizeof *tmp))) rc = AC_ERR_NOMEM;
    for (int i = 0; i < n && !rc; i++) {
        ac_mat *W = mats[i];
        if (W->pack != AC_PACK_NONE) continue; /* (listed twice: prepared once) */
        if (W->type == GGML_F32) {
            /* in place from the mapping, or once into the F32 task's panels */
            if (f32_panels && (rc = ac_f32_panel_pack(W))) ac_err_prefix(rc, "preparing %s for the CPU", W->name);
            continue;
        }
        if (kind == AC_PACK_BF16 && W->n_in % 2) continue; /* stays on the f32 path */
        rc = kind == AC_PACK_BF16  ? ac_bf16_pack(W)
             : kind == AC_PACK_F32P ? (f16_panels && W->type == GGML_F16 ? ac_f16_panel_pack(W) : ac_f32_panel_pack(W))
             : kind == AC_PACK_F32  ? widen_f32(W)
                                    : ac_dnnl_pack_bf16(W, tmp);
        if (rc) ac_err_prefix(rc, "preparing %s for the CPU", W->name);
    }
    v->pack = kind;
    v->f32_panels = f32_panels;
    v->fast_fallback = !m->params.f32_math && (kind == AC_PACK_F32 || kind == AC_PACK_F32P); /* fast asked, exact runs */
done:
    free(tmp);
    free(mats);
    if (rc) {
        weights_release(w);
        return rc;
    }
    *out = w;
    return AC_OK;
}

/* The f32 layout for contexts with GEMM choice `gemm`: the own GEMM's panels where the own GEMM
 * runs the widened matrices (forward.c: AUTO — AC_GEMM already read by the caller — or OWN),
 * else row-major (the libraries read W->f32). */
static int f32_kind(int gemm) { return gemm == AC_GEMM_AUTO || gemm == AC_GEMM_OWN ? AC_PACK_F32P : AC_PACK_F32; }

/* The layout contexts at `level` with GEMM choice `gemm` (enum ac_gemm_backend, AUTO:
 * AC_GEMM's) want for model m's non-F32 matrices. */
static int kind_wanted(const ac_model *m, int level, int gemm) {
    const char *e = getenv("AC_GEMM"), *p = getenv("AC_PACK");
    const int own_bf16 = ac_bf16_gemm_at(level), dnnl = ac_dnnl_bf16_at(level); /* `level`, not the global one:
                                                   another thread may change that meanwhile */
    if (m->load_flags & AC_LOAD_NO_PACK) return AC_PACK_NONE;
    if (p && !strcasecmp(p, "f32")) return AC_PACK_F32; /* row-major, whatever the GEMM */
    if (m->params.f32_math && !(p && (!strcasecmp(p, "bf16") || !strcasecmp(p, "onednn")))) return f32_kind(gemm);
    if (m->load_flags & AC_LOAD_PACK_DNNL) return dnnl ? AC_PACK_DNNL : AC_PACK_NONE;
    if (gemm == AC_GEMM_OPENBLAS || gemm == AC_GEMM_NAIVE) return AC_PACK_NONE;
    if (gemm == AC_GEMM_AUTO && e && (!strcasecmp(e, "openblas") || !strcasecmp(e, "naive") || !strcasecmp(e, "blas")))
        return AC_PACK_NONE;
    if (p && !strcasecmp(p, "none")) return AC_PACK_NONE;
    if (p && !strcasecmp(p, "onednn")) return dnnl ? AC_PACK_DNNL : AC_PACK_NONE;
    const int want_dnnl = gemm == AC_GEMM_DNNL ||
                          (gemm == AC_GEMM_AUTO && e && (!strcasecmp(e, "onednn") || !strcasecmp(e, "dnnl")));
    if (want_dnnl && dnnl) return AC_PACK_DNNL;
    if (own_bf16) return AC_PACK_BF16;
    if (dnnl) return AC_PACK_DNNL;
    /* no BF16 kernel at this CPU level: the fast mode runs the exact f32 path (widened once),
     * never slower than exact (unpacked weights would be converted on every forward) */
    return f32_kind(gemm);
}

/* Whether contexts with layout `kind` and GEMM choice `gemm` copy m's F32 matrices (f32_bytes
 * in all) into the own GEMM's panels (see the top of the file): 0 or 1 in *yes. */
static int f32_panels_env(const char **e) {
    *e = getenv("AC_F32_PANELS");
    if (*e && **e && strcasecmp(*e, "auto") && strcasecmp(*e, "on") && strcasecmp(*e, "off") && strcmp(*e, "1") &&
        strcmp(*e, "0"))
        return ac_err(AC_ERR_ARG, "AC_F32_PANELS='%s': expected auto, on or off", *e);
    return AC_OK;
}

static int f32_panels_wanted(int kind, int gemm, size_t f32_bytes, int *yes) {
    const char *e;
    *yes = 0;
    if (f32_panels_env(&e)) return AC_ERR_ARG;
    if (!f32_bytes || (kind != AC_PACK_F32P && kind != AC_PACK_BF16) || (gemm != AC_GEMM_AUTO && gemm != AC_GEMM_OWN))
        return AC_OK; /* the own GEMM does not run them, or nothing to copy */
    if (e && (!strcasecmp(e, "off") || !strcmp(e, "0"))) return AC_OK;
    *yes = (e && (!strcasecmp(e, "on") || !strcmp(e, "1"))) || f32_bytes <= F32_PANELS_AUTO_MAX;
    return AC_OK;
}

/* Whether the F32P layout at `level` keeps F16 matrices in f16 panels (AC_PACK_F16P): where the
 * level's F32 task widens them (AVX-512: each task's first row tile, as it reads them), unless
 * AC_F16_PANELS=off (f32 panels, for comparisons). The preparation's key tells the two apart:
 * contexts at the other levels share the model with them. 0 or 1 in *yes. */
static int f16_panels_wanted(int kind, int level, int *yes) {
    const char *e = getenv("AC_F16_PANELS");
    *yes = 0;
    if (e && *e && strcasecmp(e, "auto") && strcasecmp(e, "on") && strcasecmp(e, "off") && strcmp(e, "1") && strcmp(e, "0"))
        return ac_err(AC_ERR_ARG, "AC_F16_PANELS='%s': expected auto, on or off", e);
#if defined(__x86_64__) || defined(__i386__)
    *yes = kind == AC_PACK_F32P && level >= AC_CPU_AVX512 && !(e && (!strcasecmp(e, "off") || !strcmp(e, "0")));
#else
    (void)kind, (void)level;
#endif
    return AC_OK;
}

int ac_cpu_weights(const ac_model *m, int level, int gemm, const ac_model **out) {
    *out = m;
    const char *e;
    if (f32_panels_env(&e)) return AC_ERR_ARG; /* (checked whatever the layout) */
    const int kind = kind_wanted(m, level, gemm);
    if (kind == AC_PACK_NONE) return AC_OK; /* the model as loaded */
    const int cap = AC_MODEL_MAX_MATS(m);
    ac_mat **mats = AC_MALLOC((size_t)cap * sizeof *mats);
    if (!mats) return AC_ERR_NOMEM;
    /* (a cast for the listing only: nothing of m is changed) */
    const int n = ac_model_mats((ac_model *)m, mats, cap);
    int other = 0; /* a matrix that is not F32 (the layout changes it) */
    size_t f32_bytes = 0;
    for (int i = 0; i < n; i++) {
        if (mats[i]->type != GGML_F32) other = 1;
        else f32_bytes += (size_t)mats[i]->n_out * mats[i]->n_in * sizeof(float);
    }
    free(mats);
    int f32p, rc = f32_panels_wanted(kind, gemm, f32_bytes, &f32p);
    if (rc) return rc;
    if (!other && !f32p) return AC_OK; /* the model as loaded */
    /* F32 matrices only, all copied to panels: the view is the F32P layout whatever was asked
     * (the fast mode changes nothing for F32 weights: no bf16 inputs to make) */
    const int vkind = other ? kind : AC_PACK_F32P;
    int f16p = 0;
    if ((rc = f16_panels_wanted(vkind, level, &f16p))) return rc;
    void *w = NULL;
    rc = ac_model_prepared(m, &cpu_weights_owner, vkind | (f32p ? PREP_F32_PANELS : 0) | (f16p ? PREP_F16_PANELS : 0),
                           weights_make, NULL, weights_release, &w);
    if (rc) return rc;
    *out = &((cpu_weights *)w)->view;
    return AC_OK;
}
