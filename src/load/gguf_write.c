/* gguf_write.c — GGUF writer (v2/v3, little-endian) to a file (atomic: temp
 * file in the same directory, fsync, rename, fsync of the directory) or to
 * memory. Layout as llama.cpp / gguf-py write it: header, kvs in insertion
 * order, tensor infos, zero padding to the alignment, tensor data each padded
 * to the alignment (offsets relative to the data section). */
#define _POSIX_C_SOURCE 200809L
#include "gguf.h"
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *key;
    size_t klen;
    uint32_t type;
    uint8_t *payload; /* serialized value bytes after the type field */
    size_t plen;
} wkv;

typedef struct {
    char *name;
    size_t nlen;
    uint32_t type, n_dims;
    int64_t ne[AC_GGUF_MAX_DIMS];
    uint8_t *data; /* owned copy [nbytes] */
    size_t nbytes;
} wtensor;

struct ac_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

ac_gguf_writer *ac_gguf_writer_new(void) { return AC_CALLOC(1, sizeof(ac_gguf_writer)); }

void ac_gguf_writer_free(ac_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].payload);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

static void st64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void st32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Take ownership of payload (freed on failure). */
static int set_kv(ac_gguf_writer *w, const char *key, uint32_t type, uint8_t *payload, size_t plen) {
    if (!w || !key) {
        free(payload);
        return ac_err(AC_ERR_ARG, "gguf writer: NULL argument");
    }
    size_t klen = strlen(key);
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].klen == klen && memcmp(w->kv[i].key, key, klen) == 0) {
            free(w->kv[i].payload);
            w->kv[i].type = type;
            w->kv[i].payload = payload;
            w->kv[i].plen = plen;
            return AC_OK;
        }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *nk = realloc(w->kv, nc * sizeof *nk);
        if (!nk) {
            free(payload);
            return ac_err(AC_ERR_NOMEM, "gguf writer: out of memory (kv %s)", key);
        }
        w->kv = nk;
        w->cap_kv = nc;
    }
    char *k = AC_MALLOC(klen + 1);
    if (!k) {
        free(payload);
        return AC_ERR_NOMEM;
    }
    memcpy(k, key, klen + 1);
    w->kv[w->n_kv++] = (wkv){k, klen, type, payload, plen};
    return AC_OK;
}

static int set_scalar(ac_gguf_writer *w, const char *key, uint32_t type, uint64_t bits) {
    size_t n = ac_gguf_vtype_size(type);
    uint8_t *p = AC_MALLOC(8);
    if (!p) return AC_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(bits >> (8 * i));
    return set_kv(w, key, type, p, n);
}

int ac_gguf_w_u32(ac_gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, AC_GGUF_T_UINT32, v); }
int ac_gguf_w_i32(ac_gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, AC_GGUF_T_INT32, (uint32_t)v); }
int ac_gguf_w_u64(ac_gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, AC_GGUF_T_UINT64, v); }
int ac_gguf_w_bool(ac_gguf_writer *w, const char *key, int v) { return set_scalar(w, key, AC_GGUF_T_BOOL, v ? 1 : 0); }
int ac_gguf_w_f32(ac_gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, AC_GGUF_T_FLOAT32, u);
}

int ac_gguf_w_str(ac_gguf_writer *w, const char *key, const char *v) {
    if (!v) return ac_err(AC_ERR_ARG, "ac_gguf_w_str %s: NULL value", key ? key : "(null)");
    return ac_gguf_w_raw(w, key, AC_GGUF_T_STRING, 0, 0, v, strlen(v));
}

/* array header + n elements of esz bytes */
static int set_arr(ac_gguf_writer *w, const char *key, uint32_t at, const void *v, uint64_t n, size_t esz) {
    size_t nb, plen;
    if (n && !v) return ac_err(AC_ERR_ARG, "gguf writer %s: NULL array", key ? key : "(null)");
    if (n > SIZE_MAX || !ac_mul_ok((size_t)n, esz, &nb) || !ac_add_ok(nb, 12, &plen))
        return ac_err(AC_ERR_ARG, "gguf writer %s: array too large", key ? key : "(null)");
    uint8_t *p = AC_MALLOC(plen);
    if (!p) return AC_ERR_NOMEM;
    st32(p, at);
    st64(p + 4, n);
    if (nb) memcpy(p + 12, v, nb); /* host is little-endian (x86-64, aarch64) */
    return set_kv(w, key, AC_GGUF_T_ARRAY, p, plen);
}

int ac_gguf_w_arr_f32(ac_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return set_arr(w, key, AC_GGUF_T_FLOAT32, v, n, 4);
}
int ac_gguf_w_arr_i32(ac_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return set_arr(w, key, AC_GGUF_T_INT32, v, n, 4);
}

int ac_gguf_w_arr_str(ac_gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    size_t plen = 12;
    if (n && !v) return ac_err(AC_ERR_ARG, "gguf writer %s: NULL array", key ? key : "(null)");
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) return ac_err(AC_ERR_ARG, "gguf writer %s: NULL string %" PRIu64, key ? key : "(null)", i);
        if (!ac_add_ok(plen, 8 + strlen(v[i]), &plen)) return ac_err(AC_ERR_ARG, "gguf writer: array too large");
    }
    uint8_t *p = AC_MALLOC(plen), *q;
    if (!p) return AC_ERR_NOMEM;
    st32(p, AC_GGUF_T_STRING);
    st64(p + 4, n);
    q = p + 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        st64(q, l);
        memcpy(q + 8, v[i], l);
        q += 8 + l;
    }
    return set_kv(w, key, AC_GGUF_T_ARRAY, p, plen);
}

int ac_gguf_w_raw(ac_gguf_writer *w, const char *key, uint32_t type, uint32_t arr_type, uint64_t arr_n,
               const void *data, size_t nbytes) {
    const char *k = key ? key : "(null)";
    if (nbytes && !data) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: NULL data", k);
    if (type >= AC_GGUF_T_COUNT) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: invalid type %" PRIu32, k, type);
    if (type == AC_GGUF_T_STRING) {
        size_t plen;
        if (!ac_add_ok(nbytes, 8, &plen)) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: too large", k);
        uint8_t *p = AC_MALLOC(plen);
        if (!p) return AC_ERR_NOMEM;
        st64(p, nbytes);
        if (nbytes) memcpy(p + 8, data, nbytes);
        return set_kv(w, key, type, p, plen);
    }
    if (type != AC_GGUF_T_ARRAY) {
        if (nbytes != ac_gguf_vtype_size(type))
            return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: %zu bytes for a %s", k, nbytes, ac_gguf_vtype_name(type));
        if (type == AC_GGUF_T_BOOL && *(const uint8_t *)data > 1)
            return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: bool must be 0 or 1", k);
        uint64_t bits = 0;
        for (size_t i = 0; i < nbytes; i++) bits |= (uint64_t)((const uint8_t *)data)[i] << (8 * i);
        return set_scalar(w, key, type, bits);
    }
    if (arr_type == AC_GGUF_T_ARRAY || arr_type >= AC_GGUF_T_COUNT)
        return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: invalid array element type %" PRIu32, k, arr_type);
    if (arr_type != AC_GGUF_T_STRING) {
        size_t esz = ac_gguf_vtype_size(arr_type), want;
        if (arr_n > SIZE_MAX || !ac_mul_ok((size_t)arr_n, esz, &want) || want != nbytes)
            return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: %zu bytes for %" PRIu64 " x %s", k, nbytes, arr_n,
                          ac_gguf_vtype_name(arr_type));
        if (arr_type == AC_GGUF_T_BOOL)
            for (size_t i = 0; i < nbytes; i++)
                if (((const uint8_t *)data)[i] > 1) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: bool must be 0 or 1", k);
        return set_arr(w, key, arr_type, data, arr_n, esz);
    }
    /* strings: data is arr_n serialized strings (u64 length + bytes), exactly nbytes */
    const uint8_t *d = data;
    size_t pos = 0;
    for (uint64_t i = 0; i < arr_n; i++) {
        uint64_t l = 0;
        if (nbytes - pos < 8) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: string %" PRIu64 " truncated", k, i);
        for (int b = 0; b < 8; b++) l |= (uint64_t)d[pos + b] << (8 * b);
        pos += 8;
        if (l > nbytes - pos) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: string %" PRIu64 " truncated", k, i);
        pos += (size_t)l;
    }
    if (pos != nbytes) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: %zu trailing bytes", k, nbytes - pos);
    size_t plen;
    if (!ac_add_ok(nbytes, 12, &plen)) return ac_err(AC_ERR_ARG, "ac_gguf_w_raw %s: too large", k);
    uint8_t *p = AC_MALLOC(plen);
    if (!p) return AC_ERR_NOMEM;
    st32(p, AC_GGUF_T_STRING);
    st64(p + 4, arr_n);
    if (nbytes) memcpy(p + 12, data, nbytes);
    return set_kv(w, key, AC_GGUF_T_ARRAY, p, plen);
}

int ac_gguf_w_tensor(ac_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne,
                  const void *data) {
    if (!w || !name || !ne || !data) return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor: NULL argument");
    size_t blck, bsz, nlen = strlen(name);
    if (!ggml_dtype_block(type, &blck, &bsz))
        return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor %s: unknown type %" PRIu32, name, type);
    if (n_dims == 0 || n_dims > AC_GGUF_MAX_DIMS)
        return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor %s: n_dims %" PRIu32, name, n_dims);
    for (size_t i = 0; i < w->n_t; i++)
        if (w->t[i].nlen == nlen && memcmp(w->t[i].name, name, nlen) == 0)
            return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor: duplicate tensor %s", name);
    size_t nb = ggml_row_bytes_any(type, ne[0]);
    if (!nb) return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor %s: bad ne[0] = %" PRId64 " for %s", name, ne[0], ggml_dtype_name(type));
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    for (int d = 0; d < AC_GGUF_MAX_DIMS; d++) t.ne[d] = 1;
    t.ne[0] = ne[0];
    for (uint32_t d = 1; d < n_dims; d++) {
        if (ne[d] <= 0 || !ac_mul_ok(nb, (size_t)ne[d], &nb))
            return ac_err(AC_ERR_ARG, "ac_gguf_w_tensor %s: bad ne[%" PRIu32 "] = %" PRId64, name, d, ne[d]);
        t.ne[d] = ne[d];
    }
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return ac_err(AC_ERR_NOMEM, "gguf writer: out of memory (tensor %s)", name);
        w->t = nt;
        w->cap_t = nc;
    }
    t.name = AC_MALLOC(nlen + 1);
    t.data = AC_MALLOC(nb);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return AC_ERR_NOMEM;
    }
    memcpy(t.name, name, nlen + 1);
    t.nlen = nlen;
    memcpy(t.data, data, nb);
    t.nbytes = nb;
    w->t[w->n_t++] = t;
    return AC_OK;
}

/* ---- serialization ---------------------------------------------------------------- */

typedef struct {
    FILE *f;          /* file sink, or */
    uint8_t *buf;     /* memory sink */
    size_t len, cap;
    int err;          /* AC_OK or the first error */
    const char *path; /* for messages */
} sink;

static void put(sink *s, const void *p, size_t n) {
    if (s->err || n == 0) return;
    if (s->f) {
        if (fwrite(p, 1, n, s->f) != n) s->err = ac_err(AC_ERR_IO, "%s: write: %s", s->path, strerror(errno));
        s->len += n;
        return;
    }
    if (s->cap - s->len < n) {
        size_t nc = s->cap ? s->cap : 4096;
        while (nc - s->len < n) {
            if (nc > SIZE_MAX / 2) {
                s->err = ac_err(AC_ERR_NOMEM, "gguf writer: output too large");
                return;
            }
            nc *= 2;
        }
        uint8_t *nb = realloc(s->buf, nc);
        if (!nb) {
            s->err = ac_err(AC_ERR_NOMEM, "gguf writer: out of memory (%zu bytes)", nc);
            return;
        }
        s->buf = nb;
        s->cap = nc;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void put32(sink *s, uint32_t v) {
    uint8_t b[4];
    st32(b, v);
    put(s, b, 4);
}
static void put64(sink *s, uint64_t v) {
    uint8_t b[8];
    st64(b, v);
    put(s, b, 8);
}
static void pad(sink *s, size_t align) {
    static const uint8_t zeros[256];
    size_t r = s->len % align ? align - s->len % align : 0;
    while (r) {
        size_t n = AC_MIN(r, sizeof zeros);
        put(s, zeros, n);
        r -= n;
    }
}

static int writer_alignment(const ac_gguf_writer *w, size_t *align) {
    *align = AC_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        if (kv->klen != 17 || memcmp(kv->key, "general.alignment", 17) != 0) continue;
        size_t n = ac_gguf_vtype_size(kv->type);
        uint64_t a = 0;
        if (kv->type == AC_GGUF_T_FLOAT32 || kv->type == AC_GGUF_T_FLOAT64 || kv->type == AC_GGUF_T_BOOL || n == 0)
            return ac_err(AC_ERR_ARG, "gguf writer: general.alignment must be an integer");
        for (size_t b = 0; b < n; b++) a |= (uint64_t)kv->payload[b] << (8 * b);
        if ((kv->type == AC_GGUF_T_INT8 || kv->type == AC_GGUF_T_INT16 || kv->type == AC_GGUF_T_INT32 ||
             kv->type == AC_GGUF_T_INT64) && (a >> (8 * n - 1)) & 1)
            a = 0;
        if (a == 0 || (a & (a - 1)) || a > (1u << 30))
            return ac_err(AC_ERR_ARG, "gguf writer: general.alignment = %" PRIu64 " is not a power of two", a);
        *align = (size_t)a;
    }
    return AC_OK;
}

static int serialize(const ac_gguf_writer *w, uint32_t version, sink *s) {
    size_t align;
    int rc;
    if (version != 2 && version != 3) return ac_err(AC_ERR_ARG, "gguf writer: version %" PRIu32 " (2 or 3)", version);
    if ((rc = writer_alignment(w, &align))) return rc;
    put(s, "GGUF", 4);
    put32(s, version);
    put64(s, w->n_t);
    put64(s, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put64(s, w->kv[i].klen);
        put(s, w->kv[i].key, w->kv[i].klen);
        put32(s, w->kv[i].type);
        put(s, w->kv[i].payload, w->kv[i].plen);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put64(s, t->nlen);
        put(s, t->name, t->nlen);
        put32(s, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put64(s, (uint64_t)t->ne[d]);
        put32(s, t->type);
        put64(s, off);
        off += t->nbytes;
        if (off % align) off += align - off % align;
    }
    pad(s, align);
    for (size_t i = 0; i < w->n_t; i++) {
        put(s, w->t[i].data, w->t[i].nbytes);
        pad(s, align);
    }
    return s->err;
}

int ac_gguf_w_to_memory(ac_gguf_writer *w, uint32_t version, uint8_t **buf, size_t *size) {
    if (!w || !buf || !size) return ac_err(AC_ERR_ARG, "ac_gguf_w_to_memory: NULL argument");
    sink s = {0};
    int rc = serialize(w, version, &s);
    if (rc) {
        free(s.buf);
        return rc;
    }
    *buf = s.buf ? s.buf : AC_MALLOC(1);
    if (!*buf) return AC_ERR_NOMEM;
    *size = s.len;
    return AC_OK;
}

int ac_gguf_w_write(ac_gguf_writer *w, const char *path, uint32_t version) {
    if (!w || !path) return ac_err(AC_ERR_ARG, "ac_gguf_w_write: NULL argument");
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) return rc;
    sink s = {.f = af.f, .path = af.tmp};
    if ((rc = serialize(w, version, &s))) {
        ac_atomic_abort(&af);
        return rc;
    }
    return ac_atomic_commit(&af); /* fsync, rename over path, fsync of the directory */
}
