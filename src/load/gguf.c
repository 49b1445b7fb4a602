/* gguf.c — GGUF reader (v2, v3, little-endian), typed getters, tensor type
 * table, fp16/bf16 conversion. The writer is in gguf_write.c.
 *
 * The file is hostile. Parsing walks a bounds-checked cursor over the whole
 * file; every count is bounded by the bytes left BEFORE anything is
 * allocated (each kv needs >= 13 bytes, each tensor info >= 32, each array
 * element >= its size), every size and offset uses overflow-checked
 * arithmetic, and every failure returns AC_ERR_FORMAT with a message naming
 * the key, tensor, value or file offset. Memory use is bounded by a small
 * multiple of the file size.
 */
#define _POSIX_C_SOURCE 200809L
#include "gguf.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- ggml tensor types ----------------------------------------------------- */

typedef struct {
    const char *name;
    uint32_t blck;   /* elements per block (0: unknown / removed id) */
    uint32_t bytes;  /* bytes per block */
} dtype_info;

/* ggml.h numbering (incl. K-quants, IQ, TQ, MXFP4); ids 4, 5, 31-33, 36-38 were removed. */
static const dtype_info g_dtypes[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},
};
#define N_DTYPES (sizeof g_dtypes / sizeof g_dtypes[0])

static const dtype_info *dtype_get(uint32_t type) {
    if (type >= N_DTYPES || g_dtypes[type].blck == 0) return NULL;
    return &g_dtypes[type];
}

const char *ggml_dtype_name(uint32_t type) {
    static _Thread_local char buf[32];
    const dtype_info *d = dtype_get(type);
    if (d) return d->name;
    snprintf(buf, sizeof buf, "type#%" PRIu32, type);
    return buf;
}

int ggml_dtype_known(uint32_t type) { return dtype_get(type) != NULL; }

int ggml_dtype_supported(uint32_t type) {
    return type == GGML_F32 || type == GGML_F16 || type == GGML_Q8_0 || type == GGML_BF16;
}

int ggml_dtype_block(uint32_t type, size_t *blck, size_t *bytes) {
    const dtype_info *d = dtype_get(type);
    if (!d) return 0;
    if (blck) *blck = d->blck;
    if (bytes) *bytes = d->bytes;
    return 1;
}

/* Row bytes for any known type; 0 if unknown, n <= 0, n % block != 0 or overflow. */
size_t ggml_row_bytes_any(uint32_t type, int64_t n) {
    const dtype_info *d = dtype_get(type);
    size_t r;
    if (!d || n <= 0 || (uint64_t)n % d->blck != 0) return 0;
    if (!ac_mul_ok((size_t)((uint64_t)n / d->blck), d->bytes, &r)) return 0;
    return r;
}

size_t ggml_row_bytes(uint32_t type, int64_t n) {
    if (!ggml_dtype_supported(type)) return 0;
    return ggml_row_bytes_any(type, n);
}

int ac_gguf_check_supported(const ac_gguf_tensor *t) {
    if (ggml_dtype_supported(t->type)) return AC_OK;
    return ac_err(AC_ERR_UNSUPPORTED, "unsupported type %s in tensor %.*s", ggml_dtype_name(t->type),
                  (int)AC_MIN(t->name.len, 256), t->name.ptr);
}

/* ---- bit casts (fp16/bf16 conversions: util/fp16.c) ------------------------------------ */

static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- little-endian loads --------------------------------------------------------- */

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32); }

/* ---- private file state ------------------------------------------------------------ */

typedef struct {
    ac_gguf_file pub;       /* first member: ac_gguf_file* <-> ac_gguf_priv* */
    uint32_t *kv_hash;   /* open addressing, [kv_cap], index+1 (0 = empty) */
    uint32_t *t_hash;    /* [t_cap] */
    size_t kv_cap, t_cap;
} ac_gguf_priv;

static uint64_t hash_bytes(const char *p, size_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static int str_eq_n(ac_gguf_str s, const char *c, size_t n) { return s.len == n && memcmp(s.ptr, c, n) == 0; }

int ac_gguf_str_eq(ac_gguf_str s, const char *c) { return c && str_eq_n(s, c, strlen(c)); }

static size_t hash_cap(uint64_t n) { /* power of two >= 2n, >= 8 */
    size_t c = 8;
    while (c < 2 * n) c <<= 1;
    return c;
}

/* ---- cursor --------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *b;
    size_t size, pos;
} cursor;

static size_t cur_left(const cursor *c) { return c->size - c->pos; }

/* Read n bytes: on success *p points at them. */
static int cur_take(cursor *c, size_t n, const uint8_t **p, const char *what) {
    if (n > cur_left(c))
        return ac_err(AC_ERR_FORMAT, "truncated file: %s needs %zu bytes at offset %zu, file size %zu", what, n,
                      c->pos, c->size);
    *p = c->b + c->pos;
    c->pos += n;
    return AC_OK;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what) {
    const uint8_t *p = NULL;
    int rc = cur_take(c, 4, &p, what);
    if (rc == AC_OK) *v = ld32(p);
    return rc;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what) {
    const uint8_t *p = NULL;
    int rc = cur_take(c, 8, &p, what);
    if (rc == AC_OK) *v = ld64(p);
    return rc;
}

static int cur_str(cursor *c, ac_gguf_str *s, const char *what) {
    uint64_t len;
    const uint8_t *p = NULL;
    size_t at = c->pos;
    int rc = cur_u64(c, &len, what);
    if (rc) return rc;
    if (len > cur_left(c))
        return ac_err(AC_ERR_FORMAT, "%s: string length %" PRIu64 " at offset %zu exceeds the %zu bytes left in the file",
                      what, len, at, cur_left(c));
    rc = cur_take(c, (size_t)len, &p, what);
    if (rc) return rc;
    s->len = len;
    s->ptr = (const char *)p;
    return AC_OK;
}

size_t ac_gguf_vtype_size(uint32_t t) {
    switch (t) {
    case AC_GGUF_T_UINT8: case AC_GGUF_T_INT8: case AC_GGUF_T_BOOL: return 1;
    case AC_GGUF_T_UINT16: case AC_GGUF_T_INT16: return 2;
    case AC_GGUF_T_UINT32: case AC_GGUF_T_INT32: case AC_GGUF_T_FLOAT32: return 4;
    case AC_GGUF_T_UINT64: case AC_GGUF_T_INT64: case AC_GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

const char *ac_gguf_vtype_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < AC_GGUF_T_COUNT ? names[t] : "invalid";
}

#define KEYFMT "%.*s"
#define KEYARG(s) (int)AC_MIN((s).len, 200), (s).ptr

/* Decode a fixed-size scalar at p into kv->v. */
static int decode_scalar(ac_gguf_kv *kv, const uint8_t *p) {
    switch (kv->type) {
    case AC_GGUF_T_UINT8: kv->v.u64 = p[0]; break;
    case AC_GGUF_T_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case AC_GGUF_T_UINT16: kv->v.u64 = ld16(p); break;
    case AC_GGUF_T_INT16: kv->v.i64 = (int16_t)ld16(p); break;
    case AC_GGUF_T_UINT32: kv->v.u64 = ld32(p); break;
    case AC_GGUF_T_INT32: kv->v.i64 = (int32_t)ld32(p); break;
    case AC_GGUF_T_UINT64: kv->v.u64 = ld64(p); break;
    case AC_GGUF_T_INT64: kv->v.i64 = (int64_t)ld64(p); break;
    case AC_GGUF_T_FLOAT32: kv->v.f64 = u2f(ld32(p)); break;
    case AC_GGUF_T_FLOAT64: {
        uint64_t u = ld64(p);
        memcpy(&kv->v.f64, &u, 8);
        break;
    }
    case AC_GGUF_T_BOOL:
        if (p[0] > 1) return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': bool value %u is not 0 or 1", KEYARG(kv->key), p[0]);
        kv->v.u64 = p[0];
        break;
    default: return ac_err(AC_ERR_INTERNAL, "decode_scalar: type %" PRIu32, kv->type);
    }
    return AC_OK;
}

static int read_kv(cursor *c, ac_gguf_kv *kv, uint64_t idx) {
    int rc;
    size_t at = c->pos;
    if ((rc = cur_str(c, &kv->key, "kv key")))
        return ac_err_prefix(rc, "kv %" PRIu64 " (offset %zu)", idx, at);
    if ((rc = cur_u32(c, &kv->type, "kv type")))
        return ac_err_prefix(rc, "key '" KEYFMT "'", KEYARG(kv->key));
    if (kv->type >= AC_GGUF_T_COUNT)
        return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': invalid value type %" PRIu32, KEYARG(kv->key), kv->type);
    if (kv->type == AC_GGUF_T_STRING) {
        if ((rc = cur_str(c, &kv->v.str, "string value"))) return ac_err_prefix(rc, "key '" KEYFMT "'", KEYARG(kv->key));
        return AC_OK;
    }
    if (kv->type != AC_GGUF_T_ARRAY) {
        const uint8_t *p = NULL;
        if ((rc = cur_take(c, ac_gguf_vtype_size(kv->type), &p, "scalar value")))
            return ac_err_prefix(rc, "key '" KEYFMT "'", KEYARG(kv->key));
        return decode_scalar(kv, p);
    }
    /* array */
    if ((rc = cur_u32(c, &kv->arr_type, "array type")) || (rc = cur_u64(c, &kv->arr_n, "array length")))
        return ac_err_prefix(rc, "key '" KEYFMT "'", KEYARG(kv->key));
    if (kv->arr_type == AC_GGUF_T_ARRAY)
        return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': nested arrays are not supported", KEYARG(kv->key));
    if (kv->arr_type >= AC_GGUF_T_COUNT)
        return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': invalid array element type %" PRIu32, KEYARG(kv->key),
                      kv->arr_type);
    size_t esz = kv->arr_type == AC_GGUF_T_STRING ? 8 : ac_gguf_vtype_size(kv->arr_type); /* min bytes per element */
    if (kv->arr_n > cur_left(c) / esz)
        return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': array length %" PRIu64 " of %s exceeds the %zu bytes left in the file",
                      KEYARG(kv->key), kv->arr_n, ac_gguf_vtype_name(kv->arr_type), cur_left(c));
    if (kv->arr_type != AC_GGUF_T_STRING) {
        const uint8_t *p = NULL;
        if ((rc = cur_take(c, (size_t)kv->arr_n * esz, &p, "array data"))) return rc; /* bounded above */
        kv->arr_data = p;
        if (kv->arr_type == AC_GGUF_T_BOOL)
            for (uint64_t i = 0; i < kv->arr_n; i++)
                if (p[i] > 1)
                    return ac_err(AC_ERR_FORMAT, "key '" KEYFMT "': bool array element %" PRIu64 " is %u, not 0 or 1",
                                  KEYARG(kv->key), i, p[i]);
        return AC_OK;
    }
    kv->arr_data = NULL;
    kv->arr_str = AC_CALLOC((size_t)kv->arr_n, sizeof(ac_gguf_str));
    if (!kv->arr_str) return AC_ERR_NOMEM;
    for (uint64_t i = 0; i < kv->arr_n; i++)
        if ((rc = cur_str(c, &kv->arr_str[i], "array string")))
            return ac_err_prefix(rc, "key '" KEYFMT "' element %" PRIu64, KEYARG(kv->key), i);
    return AC_OK;
}

#define TNAME(t) KEYARG((t)->name)

static int read_tensor_info(cursor *c, ac_gguf_tensor *t, uint64_t idx) {
    int rc;
    size_t at = c->pos;
    if ((rc = cur_str(c, &t->name, "tensor name")))
        return ac_err_prefix(rc, "tensor info %" PRIu64 " (offset %zu)", idx, at);
    if ((rc = cur_u32(c, &t->n_dims, "tensor n_dims"))) return ac_err_prefix(rc, "tensor '" KEYFMT "'", TNAME(t));
    if (t->n_dims == 0 || t->n_dims > AC_GGUF_MAX_DIMS)
        return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': n_dims %" PRIu32 " not in [1, %d]", TNAME(t), t->n_dims,
                      AC_GGUF_MAX_DIMS);
    for (int d = 0; d < AC_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if ((rc = cur_u64(c, &v, "tensor dims"))) return ac_err_prefix(rc, "tensor '" KEYFMT "'", TNAME(t));
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': ne[%" PRIu32 "] = %" PRId64 " is not positive", TNAME(t),
                          d, (int64_t)v);
        t->ne[d] = (int64_t)v;
        if (__builtin_mul_overflow(nel, v, &nel) || nel > (uint64_t)INT64_MAX)
            return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': element count overflows (ne[%" PRIu32 "] = %" PRIu64 ")",
                          TNAME(t), d, v);
    }
    if ((rc = cur_u32(c, &t->type, "tensor type")) || (rc = cur_u64(c, &t->offset, "tensor offset")))
        return ac_err_prefix(rc, "tensor '" KEYFMT "'", TNAME(t));
    size_t blck, bsz;
    if (!ggml_dtype_block(t->type, &blck, &bsz))
        return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': unknown tensor type id %" PRIu32, TNAME(t), t->type);
    if ((uint64_t)t->ne[0] % blck != 0)
        return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': ne[0] = %" PRId64 " is not a multiple of the %s block size %zu",
                      TNAME(t), t->ne[0], ggml_dtype_name(t->type), blck);
    uint64_t nb;
    if (__builtin_mul_overflow(nel / blck, (uint64_t)bsz, &nb) || nb > SIZE_MAX)
        return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': byte size overflows (%" PRIu64 " elements of %s)", TNAME(t), nel,
                      ggml_dtype_name(t->type));
    t->nbytes = (size_t)nb;
    return AC_OK;
}

/* Insert into an open-addressing table; returns the existing index+1 on a duplicate, else 0. */
static uint32_t hash_insert(uint32_t *tab, size_t cap, const ac_gguf_str *names, size_t stride, uint32_t idx) {
    const ac_gguf_str *s = (const ac_gguf_str *)((const char *)names + stride * idx);
    size_t mask = cap - 1, h = (size_t)hash_bytes(s->ptr, (size_t)s->len) & mask;
    while (tab[h]) {
        const ac_gguf_str *o = (const ac_gguf_str *)((const char *)names + stride * (tab[h] - 1));
        if (o->len == s->len && memcmp(o->ptr, s->ptr, (size_t)s->len) == 0) return tab[h];
        h = (h + 1) & mask;
    }
    tab[h] = idx + 1;
    return 0;
}

static uint32_t hash_lookup(const uint32_t *tab, size_t cap, const ac_gguf_str *names, size_t stride, const char *key) {
    if (!tab || !key) return 0;
    size_t n = strlen(key), mask = cap - 1, h = (size_t)hash_bytes(key, n) & mask;
    while (tab[h]) {
        const ac_gguf_str *o = (const ac_gguf_str *)((const char *)names + stride * (tab[h] - 1));
        if (str_eq_n(*o, key, n)) return tab[h];
        h = (h + 1) & mask;
    }
    return 0;
}

static int cmp_off(const void *a, const void *b) {
    const ac_gguf_tensor *x = *(const ac_gguf_tensor *const *)a, *y = *(const ac_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse(ac_gguf_priv *P) {
    ac_gguf_file *g = &P->pub;
    cursor c = {g->base, g->size, 0};
    int rc;
    uint32_t magic;

    if (g->size < 4 || (magic = ld32(g->base)) != 0x46554747u) /* "GGUF" */
        return ac_err(AC_ERR_FORMAT, "bad magic: not a GGUF file (first bytes %02x %02x %02x %02x)",
                      g->size > 0 ? g->base[0] : 0, g->size > 1 ? g->base[1] : 0, g->size > 2 ? g->base[2] : 0,
                      g->size > 3 ? g->base[3] : 0);
    c.pos = 4;
    if ((rc = cur_u32(&c, &g->version, "header version"))) return rc;
    if (g->version == 1)
        return ac_err(AC_ERR_FORMAT, "GGUF version 1 is not supported (only 2 and 3); re-convert the model");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && (g->version >> 16) != 0)
            return ac_err(AC_ERR_FORMAT, "GGUF version %" PRIu32 " looks big-endian; only little-endian files are supported",
                          g->version);
        return ac_err(AC_ERR_FORMAT, "unsupported GGUF version %" PRIu32 " (only 2 and 3)", g->version);
    }
    if ((rc = cur_u64(&c, &g->n_tensors, "header n_tensors")) || (rc = cur_u64(&c, &g->n_kv, "header n_kv")))
        return rc;
    /* bound counts by the bytes left: a kv is >= 13 bytes, a tensor info >= 32 */
    if (g->n_kv > cur_left(&c) / 13 || g->n_kv >= UINT32_MAX / 2)
        return ac_err(AC_ERR_FORMAT, "n_kv = %" PRIu64 " is impossible for the %zu bytes left in the file", g->n_kv,
                      cur_left(&c));
    if (g->n_tensors > cur_left(&c) / 32 || g->n_tensors >= UINT32_MAX / 2)
        return ac_err(AC_ERR_FORMAT, "n_tensors = %" PRIu64 " is impossible for the %zu bytes left in the file",
                      g->n_tensors, cur_left(&c));

    g->kv = AC_CALLOC((size_t)g->n_kv, sizeof(ac_gguf_kv));
    g->tensors = AC_CALLOC((size_t)g->n_tensors, sizeof(ac_gguf_tensor));
    P->kv_cap = hash_cap(g->n_kv);
    P->t_cap = hash_cap(g->n_tensors);
    P->kv_hash = AC_CALLOC(P->kv_cap, sizeof(uint32_t));
    P->t_hash = AC_CALLOC(P->t_cap, sizeof(uint32_t));
    if (!g->kv || !g->tensors || !P->kv_hash || !P->t_hash) return AC_ERR_NOMEM;

    g->alignment = AC_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        ac_gguf_kv *kv = &g->kv[i];
        if ((rc = read_kv(&c, kv, i))) return rc;
        uint32_t dup = hash_insert(P->kv_hash, P->kv_cap, &g->kv[0].key, sizeof(ac_gguf_kv), (uint32_t)i);
        if (dup)
            return ac_err(AC_ERR_FORMAT, "duplicate key '" KEYFMT "' (kv %" PRIu32 " and %" PRIu64 ")", KEYARG(kv->key),
                          dup - 1, i);
        if (ac_gguf_str_eq(kv->key, "general.alignment")) {
            uint64_t a;
            if (kv->type == AC_GGUF_T_UINT32 || kv->type == AC_GGUF_T_UINT64 || kv->type == AC_GGUF_T_UINT16 ||
                kv->type == AC_GGUF_T_UINT8)
                a = kv->v.u64;
            else if (kv->type == AC_GGUF_T_INT32 || kv->type == AC_GGUF_T_INT64 || kv->type == AC_GGUF_T_INT16 ||
                     kv->type == AC_GGUF_T_INT8)
                a = kv->v.i64 < 0 ? 0 : (uint64_t)kv->v.i64;
            else
                return ac_err(AC_ERR_FORMAT, "general.alignment has type %s, expected an integer",
                              ac_gguf_vtype_name(kv->type));
            if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
                return ac_err(AC_ERR_FORMAT, "general.alignment = %" PRIu64 " is not a power of two in [1, 2^30]", a);
            g->alignment = (size_t)a;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ac_gguf_tensor *t = &g->tensors[i];
        if ((rc = read_tensor_info(&c, t, i))) return rc;
        uint32_t dup = hash_insert(P->t_hash, P->t_cap, &g->tensors[0].name, sizeof(ac_gguf_tensor), (uint32_t)i);
        if (dup)
            return ac_err(AC_ERR_FORMAT, "duplicate tensor name '" KEYFMT "' (tensors %" PRIu32 " and %" PRIu64 ")",
                          TNAME(t), dup - 1, i);
    }
    /* data section: aligned start (may lie past the end when there are no tensors) */
    size_t data = c.pos, a = g->alignment;
    if (data % a) data += a - data % a; /* c.pos <= size, a <= 2^30: no overflow on 64-bit size_t */
    g->data_offset = AC_MIN(data, g->size); /* == size when a tensor-less file omits the final padding */
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ac_gguf_tensor *t = &g->tensors[i];
        uint64_t start, end;
        if (t->offset % a)
            return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': offset %" PRIu64 " is not a multiple of the alignment %zu",
                          TNAME(t), t->offset, a);
        if (__builtin_add_overflow((uint64_t)data, t->offset, &start) ||
            __builtin_add_overflow(start, (uint64_t)t->nbytes, &end) || end > g->size)
            return ac_err(AC_ERR_FORMAT,
                          "tensor '" KEYFMT "': data [%" PRIu64 ", %" PRIu64 " + %zu) past end of file (size %zu, data section at %zu)",
                          TNAME(t), t->offset, t->offset, t->nbytes, g->size, data);
        /* element alignment of the data in the file, so a (>= 8-byte aligned) mapping can be used in place */
        size_t ea = t->type == GGML_F32 || t->type == GGML_I32 ? 4
                  : t->type == GGML_I64 || t->type == GGML_F64 ? 8
                  : t->type == GGML_F16 || t->type == GGML_BF16 || t->type == GGML_Q8_0 || t->type == GGML_I16 ? 2
                  : 1;
        if (start % ea)
            return ac_err(AC_ERR_FORMAT, "tensor '" KEYFMT "': data at file offset %" PRIu64 " is not %zu-byte aligned for %s",
                          TNAME(t), start, ea, ggml_dtype_name(t->type));
        t->data = g->base + start;
    }
    /* overlapping tensor data is a corrupt file */
    if (g->n_tensors > 1) {
        ac_gguf_tensor **ord = AC_MALLOC((size_t)g->n_tensors * sizeof *ord);
        if (!ord) return AC_ERR_NOMEM;
        for (uint64_t i = 0; i < g->n_tensors; i++) ord[i] = &g->tensors[i];
        qsort(ord, (size_t)g->n_tensors, sizeof *ord, cmp_off);
        rc = AC_OK;
        for (uint64_t i = 0; i + 1 < g->n_tensors; i++)
            if (ord[i]->offset + ord[i]->nbytes > ord[i + 1]->offset) {
                rc = ac_err(AC_ERR_FORMAT, "tensors '" KEYFMT "' [%" PRIu64 ", +%zu) and '" KEYFMT "' [%" PRIu64 ", +%zu) overlap",
                            TNAME(ord[i]), ord[i]->offset, ord[i]->nbytes, TNAME(ord[i + 1]), ord[i + 1]->offset,
                            ord[i + 1]->nbytes);
                break;
            }
        free(ord);
        if (rc) return rc;
    }
    return AC_OK;
}

static void free_priv(ac_gguf_priv *P) {
    if (!P) return;
    ac_gguf_file *g = &P->pub;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_str);
    free(g->kv);
    free(g->tensors);
    free(P->kv_hash);
    free(P->t_hash);
    if (g->mapped && g->base) munmap((void *)g->base, g->size);
    free(P);
}

void ac_gguf_close(ac_gguf_file *g) { free_priv((ac_gguf_priv *)g); }

static int open_common(const uint8_t *base, size_t size, int mapped, ac_gguf_file **out) {
    ac_gguf_priv *P = AC_CALLOC(1, sizeof *P);
    if (!P) {
        if (mapped) munmap((void *)base, size);
        return AC_ERR_NOMEM;
    }
    P->pub.base = base;
    P->pub.size = size;
    P->pub.mapped = mapped;
    int rc = parse(P);
    if (rc) {
        /* n_kv / n_tensors may exceed what was allocated (calloc failure path): keep free safe */
        if (!P->pub.kv) P->pub.n_kv = 0;
        free_priv(P);
        return rc;
    }
    *out = &P->pub;
    return AC_OK;
}

int ac_gguf_open_memory(const void *buf, size_t size, ac_gguf_file **out) {
    if (!out || (!buf && size)) return ac_err(AC_ERR_ARG, "ac_gguf_open_memory: NULL argument");
    *out = NULL;
    return open_common(buf, size, 0, out);
}

int ac_gguf_open(const char *path, ac_gguf_file **out) {
    if (!path || !out) return ac_err(AC_ERR_ARG, "ac_gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ac_err(AC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ac_err(AC_ERR_IO, "%s: fstat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ac_err(AC_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return ac_err(AC_ERR_FORMAT, "%s: file too small for a GGUF header (%lld bytes)", path, (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return ac_err(AC_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return ac_err(AC_ERR_IO, "%s: mmap of %zu bytes: %s", path, size, strerror(e));
    int rc = open_common(m, size, 1, out);
    if (rc) return ac_err_prefix(rc, "%s", path);
    return AC_OK;
}

/* ---- lookup and getters ------------------------------------------------------------ */

const ac_gguf_kv *ac_gguf_find(const ac_gguf_file *g, const char *key) {
    if (!g || !key) return NULL;
    const ac_gguf_priv *P = (const ac_gguf_priv *)g;
    uint32_t i = hash_lookup(P->kv_hash, P->kv_cap, g->n_kv ? &g->kv[0].key : NULL, sizeof(ac_gguf_kv), key);
    return i ? &g->kv[i - 1] : NULL;
}

const ac_gguf_tensor *ac_gguf_find_tensor(const ac_gguf_file *g, const char *name) {
    if (!g || !name) return NULL;
    const ac_gguf_priv *P = (const ac_gguf_priv *)g;
    uint32_t i = hash_lookup(P->t_hash, P->t_cap, g->n_tensors ? &g->tensors[0].name : NULL, sizeof(ac_gguf_tensor), name);
    return i ? &g->tensors[i - 1] : NULL;
}

static int missing(const char *key, int required) {
    return required ? ac_err(AC_ERR_FORMAT, "missing required key %s", key) : AC_OK;
}

static int is_uint(uint32_t t) {
    return t == AC_GGUF_T_UINT8 || t == AC_GGUF_T_UINT16 || t == AC_GGUF_T_UINT32 || t == AC_GGUF_T_UINT64 || t == AC_GGUF_T_BOOL;
}
static int is_sint(uint32_t t) {
    return t == AC_GGUF_T_INT8 || t == AC_GGUF_T_INT16 || t == AC_GGUF_T_INT32 || t == AC_GGUF_T_INT64;
}

int ac_gguf_get_int(const ac_gguf_file *g, const char *key, int64_t *out, int required) {
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return missing(key, required);
    if (is_sint(kv->type)) {
        *out = kv->v.i64;
        return AC_OK;
    }
    if (is_uint(kv->type)) {
        if (kv->v.u64 > (uint64_t)INT64_MAX)
            return ac_err(AC_ERR_FORMAT, "key %s: value %" PRIu64 " out of range", key, kv->v.u64);
        *out = (int64_t)kv->v.u64;
        return AC_OK;
    }
    return ac_err(AC_ERR_FORMAT, "key %s: expected an integer, found %s", key, ac_gguf_vtype_name(kv->type));
}

int ac_gguf_get_float(const ac_gguf_file *g, const char *key, double *out, int required) {
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return missing(key, required);
    if (kv->type == AC_GGUF_T_FLOAT32 || kv->type == AC_GGUF_T_FLOAT64) *out = kv->v.f64;
    else if (is_sint(kv->type)) *out = (double)kv->v.i64;
    else if (is_uint(kv->type) && kv->type != AC_GGUF_T_BOOL) *out = (double)kv->v.u64;
    else return ac_err(AC_ERR_FORMAT, "key %s: expected a number, found %s", key, ac_gguf_vtype_name(kv->type));
    return AC_OK;
}

int ac_gguf_get_bool(const ac_gguf_file *g, const char *key, int *out, int required) {
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return missing(key, required);
    if (kv->type != AC_GGUF_T_BOOL)
        return ac_err(AC_ERR_FORMAT, "key %s: expected bool, found %s", key, ac_gguf_vtype_name(kv->type));
    *out = kv->v.u64 != 0;
    return AC_OK;
}

int ac_gguf_get_str(const ac_gguf_file *g, const char *key, ac_gguf_str *out, int required) {
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return missing(key, required);
    if (kv->type != AC_GGUF_T_STRING)
        return ac_err(AC_ERR_FORMAT, "key %s: expected string, found %s", key, ac_gguf_vtype_name(kv->type));
    *out = kv->v.str;
    return AC_OK;
}

int ac_gguf_get_arr(const ac_gguf_file *g, const char *key, uint32_t elem_type, const ac_gguf_kv **kv_out, int required) {
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return missing(key, required);
    if (kv->type != AC_GGUF_T_ARRAY)
        return ac_err(AC_ERR_FORMAT, "key %s: expected array of %s, found %s", key, ac_gguf_vtype_name(elem_type),
                      ac_gguf_vtype_name(kv->type));
    if (elem_type != AC_GGUF_T_COUNT && kv->arr_type != elem_type)
        return ac_err(AC_ERR_FORMAT, "key %s: expected array of %s, found array of %s", key,
                      ac_gguf_vtype_name(elem_type), ac_gguf_vtype_name(kv->arr_type));
    *kv_out = kv;
    return AC_OK;
}

/* Numeric element i of an array as double / int64 (0 for out of range or non-numeric). */
static int arr_elem(const ac_gguf_kv *kv, uint64_t i, double *d, int64_t *s) {
    if (!kv || kv->type != AC_GGUF_T_ARRAY || !kv->arr_data || i >= kv->arr_n) return 0;
    ac_gguf_kv tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.type = kv->arr_type;
    size_t esz = ac_gguf_vtype_size(kv->arr_type);
    if (!esz) return 0;
    if (decode_scalar(&tmp, (const uint8_t *)kv->arr_data + i * esz) != AC_OK) return 0;
    if (tmp.type == AC_GGUF_T_FLOAT32 || tmp.type == AC_GGUF_T_FLOAT64) {
        *d = tmp.v.f64;
        *s = (int64_t)(tmp.v.f64 == tmp.v.f64 && tmp.v.f64 > -9.2e18 && tmp.v.f64 < 9.2e18 ? tmp.v.f64 : 0);
    } else if (is_sint(tmp.type)) {
        *s = tmp.v.i64;
        *d = (double)tmp.v.i64;
    } else {
        *s = (int64_t)tmp.v.u64;
        *d = (double)tmp.v.u64;
    }
    return 1;
}

float ac_gguf_arr_f32(const ac_gguf_kv *kv, uint64_t i) {
    double d = 0;
    int64_t s = 0;
    if (kv && kv->arr_type == AC_GGUF_T_FLOAT32 && kv->arr_data && i < kv->arr_n)
        return u2f(ld32((const uint8_t *)kv->arr_data + 4 * i)); /* fast path */
    if (!arr_elem(kv, i, &d, &s)) return 0.0f;
    if (d > 3.4028234663852886e38) return u2f(0x7f800000u); /* out of float range: inf, no UB */
    if (d < -3.4028234663852886e38) return u2f(0xff800000u);
    return (float)d;
}

int32_t ac_gguf_arr_i32(const ac_gguf_kv *kv, uint64_t i) {
    double d = 0;
    int64_t s = 0;
    if (kv && kv->arr_type == AC_GGUF_T_INT32 && kv->arr_data && i < kv->arr_n)
        return (int32_t)ld32((const uint8_t *)kv->arr_data + 4 * i);
    return arr_elem(kv, i, &d, &s) ? (int32_t)s : 0;
}

uint32_t ac_gguf_arr_u32(const ac_gguf_kv *kv, uint64_t i) {
    double d = 0;
    int64_t s = 0;
    if (kv && kv->arr_type == AC_GGUF_T_UINT32 && kv->arr_data && i < kv->arr_n)
        return ld32((const uint8_t *)kv->arr_data + 4 * i);
    return arr_elem(kv, i, &d, &s) ? (uint32_t)s : 0;
}

/* ---- tensor helpers ---------------------------------------------------------------- */

int ac_gguf_expect_tensor(const ac_gguf_file *g, const char *name, uint32_t n_dims, const int64_t *ne,
                       const ac_gguf_tensor **out, int required) {
    const ac_gguf_tensor *t = ac_gguf_find_tensor(g, name);
    if (out) *out = NULL;
    if (!t) return required ? ac_err(AC_ERR_FORMAT, "missing required tensor %s", name) : AC_OK;
    int same = t->n_dims == n_dims && n_dims >= 1 && n_dims <= AC_GGUF_MAX_DIMS;
    for (uint32_t d = 0; same && d < n_dims; d++) same = t->ne[d] == ne[d];
    if (!same) {
        char want[128] = "", got[128] = "";
        size_t o = 0;
        for (uint32_t d = 0; d < n_dims && d < AC_GGUF_MAX_DIMS && o < sizeof want; d++)
            o += (size_t)snprintf(want + o, sizeof want - o, "%s%" PRId64, d ? " x " : "", ne[d]);
        o = 0;
        for (uint32_t d = 0; d < t->n_dims && o < sizeof got; d++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%" PRId64, d ? " x " : "", t->ne[d]);
        return ac_err(AC_ERR_FORMAT, "tensor %s: shape [%s], expected [%s]", name, got, want);
    }
    int rc = ac_gguf_check_supported(t);
    if (rc) return rc;
    if (out) *out = t;
    return AC_OK;
}
