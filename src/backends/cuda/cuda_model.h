/* cuda_model.h — the CUDA backend's model and workspace (internal to
 * src/backends/cuda): cuda_upload.cu fills it from a loaded ac_model,
 * cuda_backend.cu makes random ones and runs the forward pass on it. */
#ifndef AC_CUDA_MODEL_H
#define AC_CUDA_MODEL_H

#include "cuda_backend.h"
#include "cuda_codec_av.h"
#include "cuda_common.h"
#include "cuda_gemm.h"

typedef struct cu_layer {
    void *wqkv, *wo, *wgu, *wdown; /* T: [QKV][D], [D][QD], [2F or F][D], [D][F] */
    float *bqkv, *bo, *bup, *bdown; /* [QKV], [D], [F], [D] or NULL */
    float *n1w, *n1b, *n2w, *n2b;   /* [D] */
    float *bv;                      /* [KVD] copy of bqkv's V part (served sites' V-only GEMM), lazily */
} cu_layer;

enum { EV_CAP = 1024 };

/* A captured forward (CUDA graph) of one shape: see "CUDA graphs" in cuda_backend.cu */
enum { AC_CU_NGRAPH = 32 };
typedef struct cu_graph {
    int Tn, n_seq, Lq, outk; /* the key: rows, sequences, longest query run, outputs asked (bits) */
    int state;               /* 0 free, 1 seen once (run plainly), 2 captured, -1 not capturable */
    unsigned gen;            /* ws_gen when captured (buffers reallocated since: stale) */
    unsigned long long used; /* g->graph_clock at the last use (the least recent is replaced) */
    cudaGraphExec_t exec;
    const float *out_h, *out_cls; /* what outputs() left at the capture (outputs_copy reads them) */
    int out_T;
} cu_graph;

struct ac_cuda_model {
    const ac_model *m; /* NULL for random models */
    int arch, prec, bert;
    int resid_t; /* bert, bf16 mode: residual stream kept in T (xb), not f32 (AC_CUDA_RESID=f32: off) */
    ac_hparams hp;
    int D, H, Hkv, hd, QD, KVD, QKV, F, V;
    int has_output, has_cls, has_cls_out, n_cls, cls_mean_l2;

    float *tok;                        /* [V][D] f32 */
    float *pos, *type0, *en_w, *en_b;  /* bert: [n_ctx][D], [D], [D], [D] */
    float *out_norm;                   /* [D] decoders */
    void *output;                      /* T [V][D] LM head or NULL */
    void *cls, *cls_out;               /* T [D][D], [n_cls][D] */
    float *cls_b, *cls_out_b;
    cu_layer *L;

    float *rope_cs; /* [rope_L][n_rot/2][2] */
    int rope_L;

    cudaStream_t st;
    ac_cu_gemm *gemm;

    /* workspace (capacity cap_T rows, cap_S sequences) */
    int cap_T, cap_S;
    float *x, *h;
    void *xb, *qkv, *att, *gu, *hh, *rows;
    float *pooled, *logits, *clsbuf, *clsout;
    int *d_tok, *d_pos, *d_cu;
    long long *d_poff;
    float *P;
    size_t cap_P;
    int *h_tok, *h_pos, *h_cu;
    long long *h_poff;
    float *h_P;
    size_t cap_hP;

    int profile;
    cudaEvent_t ev[EV_CAP];
    int ev_stage[EV_CAP], n_ev, ev_made;
    float prof[AC_CUDA_PROF_N];
    cudaEvent_t t0, t1; /* first and last operation of a forward call */
    /* CUDA graphs of the exact path (AC_CUDA_GRAPHS=0 or ac_cuda_set_graphs(g, 0): off) */
    int graphs_off;
    unsigned ws_gen;                /* bumped when a workspace buffer is reallocated */
    unsigned long long graph_clock;
    cu_graph graphs[AC_CU_NGRAPH];
    int graph_last;                 /* the last call: 0 plain, 1 captured then launched, 2 replayed */
    long long graph_replays, graph_captures;
    /* what outputs() leaves for the copies to the caller's buffers (after the graph or the plain run) */
    const float *out_h;             /* [out_T][D] device f32 final hidden rows */
    int out_T;
    const float *out_cls;           /* device f32 [n_seq][n_cls or D] */
    float last_ms;

    /* served maps (opts.serve): per (layer, sequence) of the current call */
    int srv_on, srv_nseq;
    const void **srv_dev;      /* [n_layer][n_seq] device pointer of the site's maps, NULL: computed */
    const void **srv_src;      /* [n_layer][n_seq] the pointer serve returned */
    unsigned char *srv_how;    /* [n_layer][n_seq] 0 computed, 1 device, 2 pinned host, 3 pageable host */
    size_t *srv_off;           /* [n_layer][n_seq] offset in d_maps (host-served sites) */
    size_t *srv_mb;            /* [n_layer][n_seq] bytes between the site's head maps */
    int *srv_cc;               /* [n_layer][n_seq][3] the site's codec: kind, causal, top-k */
    int *srv_rows;             /* [n_layer][n_seq] served sites: rows [0, srv_rows) from the maps (L: every row;
                                  fewer: partly served, rows [srv_rows, L) computed exactly over every key) */
    unsigned char *srv_hp;     /* [n_layer][n_seq] 1: the site is served per head (srv_hm says which) */
    unsigned char *srv_hm;     /* [n_layer][n_seq][H] per-head sites: 1 = head h's rows [0, srv_rows) served */
    size_t srv_cap;            /* entries of the arrays above (sites) */
    int srv_part;              /* some site of the call is partly served */
    int *h_ptab, *d_ptab;      /* [n_layer][n_seq][4] a partly served site's exact rows as one prefix-rows
                                  attention launch: cp {c0, c0 + R} (its keys [0, R): rows of qkv from c0, or
                                  of d_pscr from 0 with given prefix rows), cu {its first and end exact rows} */
    size_t cap_ptab;           /* sites of h_ptab, d_ptab and d_srows */
    int *d_srows;              /* device copy of srv_rows (the batched A.V of partly served runs reads it) */
    int part_run;              /* this call's opts.partial_run: 0 auto, 1 runs, -1 one sequence at a time */
    void *d_pscr;              /* partly served sites with given prefix rows: T [2][Lmax][KVD] the site's K, V
                                  rows of every position gathered, then T [Lmax][QD] A.V's rows [0, R) */
    size_t cap_pscr;           /* bytes */
    const void **d_srvtab;     /* device copy of srv_dev (the batched A.V reads it) */
    size_t cap_srvtab;         /* its entries */
    unsigned char *d_maps, *h_stage; /* device copies of host-served maps; pinned staging (pageable ones) */
    size_t cap_dmaps, cap_stage;
    cudaStream_t st_up;        /* map uploads */
    cudaEvent_t *ev_up;        /* [n_layer] layer's maps on the device */
    int srv_sites;
    size_t srv_bytes;

    /* the layer-0 summaries of the current call (opts.summary; cuda_summary.cu) */
    float *d_sum, *h_sum;      /* [sum_n][sum_S][D] device, pinned host */
    size_t cap_sum;            /* floats of each */
    int sum_n, sum_S;          /* sequences and segments held (0: none this call) */

    /* the device map cache of served maps (cuda_map_cache.cu; map_lru.h) */
    ac_map_lru lru;
    int lru_on;                /* lru initialised (budget chosen) */
    cudaMemPool_t lru_pool;    /* its blocks' stream-ordered pool (allocated and freed on st), or NULL:
                                  cudaMalloc / cudaFree */
    cudaEvent_t lru_ev;        /* recorded on st after a call's allocations; the upload stream waits on it */

    /* given prefix rows (opts.pfx_P) of the current call: pfx_on = rows are given or written back */
    int pfx_on, pfx_any, pfx_full; /* any: some P > 0; full: the outputs read the whole sequences */
    int pfx_tot, pfx_Tfull;        /* sum of P; sum of L */
    const ac_cuda_opts *pfx_o;     /* the call's options (host buffers) */
    int *h_pcu, *d_pcu;            /* [n_seq+1] offsets of the given rows (P per sequence) */
    int *h_fcu, *d_fcu;            /* [n_seq+1] offsets of whole sequences (L) */
    int *h_src, *d_src;            /* [T_full] each whole row's source: >= 0 computed row, < 0 -1 - given row */
    int cap_pS, cap_pF;            /* capacities: sequences (+1), whole rows */
    float *d_pup;                  /* f32 [slabs][2][pfx_tot][KVD] given K, V rows as uploaded: f32 mode one slab
                                      per layer (the attention reads it), bf16 a ring of 2 (converted) */
    size_t cap_pup;                /* bytes */
    void *d_pkv;                   /* bf16 mode: bf16 [n_layer][2][pfx_tot][KVD] the converted rows */
    size_t cap_pkv;
    float *d_back;                 /* f32 [n_layer][2][Tn][KVD] computed K, V rows (after RoPE) */
    size_t cap_back;
    float *d_ph;                   /* [pfx_tot][D] given final hidden rows */
    size_t cap_ph;
    float *d_hfull;                /* [T_full][D] whole sequences' final hidden rows */
    size_t cap_hfull;
    cudaStream_t st_pu, st_dn;     /* given rows up, computed rows back */
    cudaEvent_t *ev_pf, *ev_bk;    /* [n_layer] given rows on the device; computed rows copied (main stream) */
    cudaEvent_t ev_ph;             /* given hidden rows on the device */

    /* the device prefix cache (cuda_prefix_cache.cu): hot prefixes' given rows kept in device memory,
       one block per (ac_prefix_key(tokens, P), P) in map_lru.h's bookkeeping (layer = P) */
    ac_map_lru pc;
    int pc_on;                     /* pc initialised (budget chosen) */
    int pc_act;                    /* pc_how, pc_blk hold the current call's (else stale) */
    int pc_begun;                  /* a call was begun by ac_cuda_prefix_cache_find before this forward */
    unsigned char *pc_how;         /* [n_seq] of the current call: 0 host rows, 1 rows from the block (nothing
                                      uploaded), 2 host rows uploaded and copied into a new block */
    void **pc_blk;                 /* [n_seq] the block (how 1, 2) */
    int pc_cap;                    /* entries of pc_how, pc_blk */
    size_t pc_up_last;             /* bytes of given rows copied host -> device by the last call */
    uint64_t pc_up_total;          /* the same, summed over calls */
    int pc_hits_last;              /* sequences of the last call whose rows came from blocks */
};

int ac_cu_dmalloc(void **p, size_t bytes);          /* AC_ERR_NOMEM with a message on failure */
#define DMALLOC(ptr, bytes) ac_cu_dmalloc((void **)&(ptr), (bytes))
size_t ac_cu_tsize(int prec);                         /* bytes of one element of the precision's type */
int ac_cu_upload_f32(float **dst, const float *src, size_t n); /* NULL src: *dst = NULL */
int ac_cu_shapes(ac_cuda_model *g);                   /* derived sizes from g->hp and g->arch; checks them */
int ac_cu_common_init(ac_cuda_model *g);              /* stream, events, cuBLASLt, layer table */
/* After the embeddings (x, bert: normed) of a call: the layer-0 states' S segment means of
 * every sequence into g->h_sum (synchronises the stream). cuda_summary.cu. */
int ac_cu_layer0_summary(ac_cuda_model *g, int Tn, int n_seq, int S);
void ac_cu_summary_free(ac_cuda_model *g);
/* A device cache's byte budget: $env_mb MiB when set (a whole number), else min(1 GiB, free device
 * memory / free_div); 0 when the device cannot say (cuda_map_cache.cu; the map and prefix caches). */
size_t ac_cu_cache_budget(const char *env_mb, size_t free_div);
/* The device map cache (cuda_map_cache.cu): start a call (budget chosen at the first); free every block. */
void ac_cu_map_cache_begin(ac_cuda_model *g);
/* After serve_plan's allocations: the event the upload stream must wait on before writing this call's
 * blocks (recorded on st now; t0 when the blocks come from cudaMalloc, which is not stream-ordered). */
cudaEvent_t ac_cu_map_cache_ready(ac_cuda_model *g);
void ac_cu_map_cache_free(ac_cuda_model *g);
/* The device prefix cache (cuda_prefix_cache.cu). A block of P given rows (bytes from the start):
 *   [0, kv)          T [n_layer][2][P][KVD]: layer l's K rows at (2l) P KVD, V rows at (2l+1) P KVD
 *                    (T = the precision's element: as the attention reads the given rows)
 *   [hid_off, end)   f32 [P][D] the final hidden rows (hid_off = kv rounded up to 256) */
size_t ac_cu_pcache_hid_off(const ac_cuda_model *g, int P);
size_t ac_cu_pcache_bytes(const ac_cuda_model *g, int P);
/* Start a call unless ac_cuda_prefix_cache_find began one (budget chosen at the first). */
void ac_cu_pcache_begin(ac_cuda_model *g);
/* The resident block of tokens[0, P), pinned for the call, or NULL (not counted: the context's find was) */
void *ac_cu_pcache_peek(ac_cuda_model *g, const int32_t *tokens, int P);
/* A new block for tokens[0, P) (the caller fills it in this call), or NULL (over the budget, no memory) */
void *ac_cu_pcache_insert(ac_cuda_model *g, const int32_t *tokens, int P);
/* The call failed: the blocks it made resident may be unfilled: dropped. */
void ac_cu_pcache_abort(ac_cuda_model *g);
void ac_cu_pcache_free(ac_cuda_model *g);

#endif
