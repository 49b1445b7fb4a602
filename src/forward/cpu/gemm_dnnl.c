/* gemm_dnnl.c — the oneDNN GEMM backend (matmul primitive, brgemm kernels).
 *  - F32 weights: used in place (plain layout, W [N][K] = B [K][N] "ba"), f32 math.
 *  - F16/BF16/Q8_0 weights: converted to BF16 (the CPU backend's weights, weights.c) and reordered into the
 *    blocked layout oneDNN's AVX512-BF16 kernel prefers (ac_dnnl_pack_bf16; the
 *    layout depends on N and K only, not on M, checked at pack time); the
 *    activations are rounded to BF16 once per GEMM input; accumulation is f32.
 *  - anything else (packing disabled): handed to the OpenBLAS backend.
 * Primitives are cached per context by (M, N, K, type, bias, accumulate). */
#include "forward/forward.h"
#include "util/common.h"
#include "util/cpu.h"

#include <string.h>

#ifdef AC_HAVE_DNNL
#include <dnnl.h>
#include <pthread.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t g_engine;
static int g_engine_ok, g_bf16_ok;

static void engine_init(void) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) return;
    g_engine_ok = 1;
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    g_bf16_ok = ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16 &&
                __builtin_cpu_supports("avx512bf16");
}

int ac_dnnl_bf16_available(void) { return ac_dnnl_bf16_at(ac_cpu_level()); }

int ac_dnnl_bf16_at(int level) {
    pthread_once(&g_once, engine_init);
    return g_engine_ok && g_bf16_ok && level >= AC_CPU_AVX512 && ac_cpu_hw()->avx512bf16;
}

#define PACK_REF_M 128 /* the M used to ask oneDNN for its preferred weight layout */

static int matmul_pd(int M, int N, int K, dnnl_data_type_t wt, const dnnl_memory_desc_t *wmd, int has_bias,
                     int accumulate, dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N}, biasd = {1, N};
    if (dnnl_memory_desc_init_by_tag(&a_md, 2, ad, wt, dnnl_ab) != dnnl_success) return -1;
    if (wmd) b_md = *wmd;
    else if (dnnl_memory_desc_init_by_tag(&b_md, 2, bd, wt, wt == dnnl_f32 ? dnnl_ba : dnnl_format_tag_any) !=
             dnnl_success)
        return -1;
    if (dnnl_memory_desc_init_by_tag(&c_md, 2, cd, dnnl_f32, dnnl_ab) != dnnl_success) return -1;
    if (dnnl_memory_desc_init_by_tag(&bias_md, 2, biasd, dnnl_f32, dnnl_ab) != dnnl_success) return -1;
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &a_md, &b_md, has_bias ? &bias_md : NULL, &c_md) != dnnl_success) return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (accumulate) {
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
        if (dnnl_post_ops_create(&po) != dnnl_success || dnnl_post_ops_append_sum(po, 1.0f) != dnnl_success ||
            dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) {
            if (po) dnnl_post_ops_destroy(po);
            dnnl_primitive_attr_destroy(attr);
            return -1;
        }
    }
    dnnl_status_t st = dnnl_primitive_desc_create(pd, &md, attr, g_engine, NULL);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st == dnnl_success ? 0 : -1;
}

int ac_dnnl_pack_bf16(ac_mat *W, uint16_t *tmp) {
    if (!ac_dnnl_bf16_at(AC_CPU_AVX512)) /* the hardware's: packing may run at any level */
        return ac_err(AC_ERR_UNSUPPORTED, "oneDNN BF16 matmul not available on this CPU");
    const int N = W->n_out, K = W->n_in;
    int nomem = 0;
#pragma omp parallel
    {
        float *row = malloc((size_t)K * sizeof *row); /* [K] */
        if (!row) {
#pragma omp atomic write
            nomem = 1;
        }
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            if (!row) continue;
            ac_row_to_f32(W->type, W->data, W->row_bytes, n, K, row);
            ac_f32_to_bf16(tmp + (size_t)n * K, row, (size_t)K);
        }
        free(row);
    }
    if (nomem) return ac_err(AC_ERR_NOMEM, "out of memory converting %s", W->name);

    int rc = AC_OK;
    dnnl_primitive_desc_t pd = NULL, pd2 = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_memory_desc_t *wmd = AC_MALLOC(sizeof *wmd);
    if (!wmd) return AC_ERR_NOMEM;
    if (matmul_pd(PACK_REF_M, N, K, dnnl_bf16, NULL, 0, 0, &pd)) {
        rc = ac_err(AC_ERR_INTERNAL, "oneDNN: no bf16 matmul for %s [%d x %d]", W->name, N, K);
        goto done;
    }
    *wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    /* the layout must not depend on M: a pd for another M must accept it as is */
    if (matmul_pd(1, N, K, dnnl_bf16, wmd, 0, 0, &pd2)) {
        rc = ac_err(AC_ERR_INTERNAL, "oneDNN: packed layout of %s depends on M", W->name);
        goto done;
    }
    size_t sz = dnnl_memory_desc_get_size(wmd);
    W->packed = AC_ALIGNED_ALLOC(sz);
    if (!W->packed) {
        rc = AC_ERR_NOMEM;
        goto done;
    }
    dnnl_memory_desc_t plain;
    dnnl_dims_t bd = {K, N};
    if (dnnl_memory_desc_init_by_tag(&plain, 2, bd, dnnl_bf16, dnnl_ba) != dnnl_success ||
        dnnl_memory_create(&src, &plain, g_engine, tmp) != dnnl_success ||
        dnnl_memory_create(&dst, wmd, g_engine, W->packed) != dnnl_success ||
        dnnl_reorder_primitive_desc_create(&rpd, &plain, g_engine, wmd, g_engine, NULL) != dnnl_success ||
        dnnl_primitive_create(&reorder, rpd) != dnnl_success ||
        dnnl_stream_create(&stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        rc = ac_err(AC_ERR_INTERNAL, "oneDNN: cannot reorder %s into its packed layout", W->name);
        goto done;
    }
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    if (dnnl_primitive_execute(reorder, stream, 2, args) != dnnl_success || dnnl_stream_wait(stream) != dnnl_success) {
        rc = ac_err(AC_ERR_INTERNAL, "oneDNN: reorder of %s failed", W->name);
        goto done;
    }
    W->packed_md = wmd;
    W->pack = AC_PACK_DNNL;
    wmd = NULL;
done:
    if (rc != AC_OK) {
        free(W->packed);
        W->packed = NULL;
    }
    free(wmd);
    if (stream) dnnl_stream_destroy(stream);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (src) dnnl_memory_destroy(src);
    if (dst) dnnl_memory_destroy(dst);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (pd2) dnnl_primitive_desc_destroy(pd2);
    return rc;
}


/* ---- per-context primitive cache ------------------------------------------------------------ */
#define CACHE_N 96

typedef struct entry {
    int M, N, K, bf16, bias, accum;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, b, dst;
    uint64_t used;
} entry;

struct ac_dnnl_state {
    dnnl_stream_t stream;
    entry e[CACHE_N];
    int n;
    uint64_t tick;
};

static void entry_free(entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->src) dnnl_memory_destroy(e->src);
    if (e->wei) dnnl_memory_destroy(e->wei);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->dst) dnnl_memory_destroy(e->dst);
    memset(e, 0, sizeof *e);
}

void ac_dnnl_state_free(ac_dnnl_state *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) entry_free(&s->e[i]);
    if (s->stream) dnnl_stream_destroy(s->stream);
    free(s);
}

static entry *get_entry(ac_ctx *ctx, const ac_mat *W, int M, int bf16, int bias, int accum) {
    ac_dnnl_state *s = ctx->dnnl;
    const int N = W->n_out, K = W->n_in;
    if (!s) {
        pthread_once(&g_once, engine_init);
        if (!g_engine_ok) return NULL;
        s = ctx->dnnl = AC_CALLOC(1, sizeof *s);
        if (!s) return NULL;
        if (dnnl_stream_create(&s->stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
            free(s);
            ctx->dnnl = NULL;
            return NULL;
        }
    }
    s->tick++;
    for (int i = 0; i < s->n; i++) {
        entry *e = &s->e[i];
        if (e->M == M && e->N == N && e->K == K && e->bf16 == bf16 && e->bias == bias && e->accum == accum) {
            e->used = s->tick;
            return e;
        }
    }
    entry *e;
    if (s->n < CACHE_N) e = &s->e[s->n++];
    else { /* evict the least recently used */
        e = &s->e[0];
        for (int i = 1; i < s->n; i++)
            if (s->e[i].used < e->used) e = &s->e[i];
        entry_free(e);
    }
    dnnl_primitive_desc_t pd = NULL;
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    if (matmul_pd(M, N, K, dt, bf16 ? (const dnnl_memory_desc_t *)W->packed_md : NULL, bias, accum, &pd)) goto fail;
    if (dnnl_primitive_create(&e->prim, pd) != dnnl_success) goto fail;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if (dnnl_memory_create(&e->src, smd, g_engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&e->wei, wmd, g_engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&e->dst, dmd, g_engine, DNNL_MEMORY_NONE) != dnnl_success)
        goto fail;
    if (bias) {
        const dnnl_memory_desc_t *bmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
        if (dnnl_memory_create(&e->b, bmd, g_engine, DNNL_MEMORY_NONE) != dnnl_success) goto fail;
    }
    dnnl_primitive_desc_destroy(pd);
    e->M = M, e->N = N, e->K = K, e->bf16 = bf16, e->bias = bias, e->accum = accum, e->used = s->tick;
    return e;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    entry_free(e);
    if (e == &s->e[s->n - 1]) s->n--;
    else { /* keep the table dense: move the last entry here */
        *e = s->e[s->n - 1];
        memset(&s->e[s->n - 1], 0, sizeof *e);
        s->n--;
    }
    return NULL;
}

static int onednn_matmul(ac_ctx *ctx, const ac_mat *W, ac_act *X, float *Y, const float *bias, int accumulate) {
    const int M = X->M;
    int bf16;
    const void *src;
    if (W->pack == AC_PACK_DNNL) {
        bf16 = 1;
        if (!X->bf16_ok) {
            ac_f32_to_bf16(X->bf16, X->x, (size_t)X->M * X->K);
            X->bf16_ok = 1;
        }
        src = X->bf16;
    } else if (W->f32) {
        bf16 = 0;
        src = X->x;
    } else {
        return ac_gemm_blas_ops.matmul(ctx, W, X, Y, bias, accumulate);
    }
    entry *e = get_entry(ctx, W, M, bf16, bias != NULL, accumulate);
    if (!e) return ac_err(AC_ERR_INTERNAL, "oneDNN: cannot create a matmul for %s (M=%d)", W->name, M);
    dnnl_memory_set_data_handle(e->src, (void *)src);
    dnnl_memory_set_data_handle(e->wei, bf16 ? W->packed : (void *)W->f32);
    dnnl_memory_set_data_handle(e->dst, Y);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei}, {DNNL_ARG_DST, e->dst}, {0, NULL}};
    int nargs = 3;
    if (bias) {
        dnnl_memory_set_data_handle(e->b, (void *)bias);
        args[3].arg = DNNL_ARG_BIAS;
        args[3].memory = e->b;
        nargs = 4;
    }
    if (dnnl_primitive_execute(e->prim, ctx->dnnl->stream, nargs, args) != dnnl_success ||
        dnnl_stream_wait(ctx->dnnl->stream) != dnnl_success)
        return ac_err(AC_ERR_INTERNAL, "oneDNN: matmul %s failed (M=%d)", W->name, M);
    return AC_OK;
}

const ac_gemm_ops ac_gemm_dnnl_ops = {"onednn", AC_GEMM_DNNL, onednn_matmul};

#else /* !AC_HAVE_DNNL */

int ac_dnnl_bf16_available(void) { return 0; }
int ac_dnnl_bf16_at(int level) {
    (void)level;
    return 0;
}
int ac_dnnl_pack_bf16(ac_mat *W, uint16_t *tmp) {
    (void)W;
    (void)tmp;
    return ac_err(AC_ERR_UNSUPPORTED, "built without oneDNN");
}
void ac_dnnl_state_free(ac_dnnl_state *s) { (void)s; }

#endif
