/* gguf.h — GGUF reader (v2, v3) and writer, as llama.cpp writes the format.
 *
 * The reader treats the file as hostile: every count, length, offset and size
 * is checked against the file size with overflow-checked arithmetic; any
 * problem returns AC_ERR_FORMAT (or AC_ERR_UNSUPPORTED for a valid but
 * unsupported tensor type) with a message naming it, never aborts, never
 * reads out of bounds. Tensor data stays in the mapping and is used in place.
 */
#ifndef AC_GGUF_H
#define AC_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "util/fp16.h"

/* metadata value types (GGUF spec numbering) */
enum ac_gguf_vtype {
    AC_GGUF_T_UINT8 = 0, AC_GGUF_T_INT8 = 1, AC_GGUF_T_UINT16 = 2, AC_GGUF_T_INT16 = 3,
    AC_GGUF_T_UINT32 = 4, AC_GGUF_T_INT32 = 5, AC_GGUF_T_FLOAT32 = 6, AC_GGUF_T_BOOL = 7,
    AC_GGUF_T_STRING = 8, AC_GGUF_T_ARRAY = 9, AC_GGUF_T_UINT64 = 10, AC_GGUF_T_INT64 = 11,
    AC_GGUF_T_FLOAT64 = 12, AC_GGUF_T_COUNT
};

/* tensor types (ggml numbering). Supported for compute: F32, F16, Q8_0, BF16.
 * The others are known (parsed, sizes checked) but ggml_dtype_supported() == 0.
 * Ids 4, 5, 31-33, 36-38 were removed from ggml; they and ids >= 40 are a format error. */
enum ggml_dtype {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
    GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13,
    GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_IQ2_XXS = 16, GGML_IQ2_XS = 17, GGML_IQ3_XXS = 18,
    GGML_IQ1_S = 19, GGML_IQ4_NL = 20, GGML_IQ3_S = 21, GGML_IQ2_S = 22, GGML_IQ4_XS = 23,
    GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27, GGML_F64 = 28, GGML_IQ1_M = 29,
    GGML_BF16 = 30, GGML_TQ1_0 = 34, GGML_TQ2_0 = 35, GGML_MXFP4 = 39, GGML_DTYPE_COUNT = 40,
};
#define GGML_QK8_0 32 /* Q8_0 block: fp16 scale + 32 int8 = 34 bytes */

#define AC_GGUF_DEFAULT_ALIGNMENT 32
#define AC_GGUF_MAX_DIMS 4

/* A string inside the file: NOT NUL-terminated, points into the mapping. */
typedef struct ac_gguf_str {
    uint64_t len;
    const char *ptr;
} ac_gguf_str;

typedef struct ac_gguf_kv {
    ac_gguf_str key;
    uint32_t type;           /* enum ac_gguf_vtype */
    union {                  /* scalar value (type != ARRAY) */
        uint64_t u64;        /* all unsigned ints and bool, widened */
        int64_t i64;         /* all signed ints, widened */
        double f64;          /* FLOAT32 / FLOAT64, widened */
        ac_gguf_str str;
    } v;
    /* arrays (type == ARRAY) */
    uint32_t arr_type;       /* element type; nested arrays are rejected */
    uint64_t arr_n;
    const void *arr_data;    /* raw little-endian elements in the file (maybe unaligned); NULL for strings */
    ac_gguf_str *arr_str;       /* owned: arr_n strings, for arr_type == STRING */
} ac_gguf_kv;

typedef struct ac_gguf_tensor {
    ac_gguf_str name;
    uint32_t n_dims;
    int64_t ne[AC_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims = 1 */
    uint32_t type;             /* enum ggml_dtype */
    uint64_t offset;           /* relative to data section start */
    size_t nbytes;
    const void *data;          /* into the mapping */
} ac_gguf_tensor;

typedef struct ac_gguf_file {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    ac_gguf_kv *kv;               /* owned [n_kv] */
    ac_gguf_tensor *tensors;      /* owned [n_tensors] */
    size_t alignment;
    size_t data_offset;        /* file offset of the data section */
    const uint8_t *base;       /* whole file (mapped or borrowed) */
    size_t size;
    int mapped;                /* 1 if base is our mmap (unmapped on close) */
} ac_gguf_file;

/* Open and validate a file; tensor data is mmap'd. Caller owns *out (ac_gguf_close). */
int ac_gguf_open(const char *path, ac_gguf_file **out);
/* Same on a caller's buffer, which must outlive the result (tests, fuzzing). Tensor
 * data is checked to be naturally aligned within the file (F32 at 4 bytes...); it is
 * aligned in memory when buf is (malloc'd buffers are). */
int ac_gguf_open_memory(const void *buf, size_t size, ac_gguf_file **out);
void ac_gguf_close(ac_gguf_file *g);

/* Lookup; NULL if absent. */
const ac_gguf_kv *ac_gguf_find(const ac_gguf_file *g, const char *key);
const ac_gguf_tensor *ac_gguf_find_tensor(const ac_gguf_file *g, const char *name);
int ac_gguf_str_eq(ac_gguf_str s, const char *c);

/* Typed getters. Missing key: if required, AC_ERR_FORMAT ("missing required key K"),
 * else AC_OK with *out untouched. Wrong type or out of range: AC_ERR_FORMAT naming key. */
int ac_gguf_get_int(const ac_gguf_file *g, const char *key, int64_t *out, int required);  /* any integer type or bool */
int ac_gguf_get_float(const ac_gguf_file *g, const char *key, double *out, int required); /* float or integer */
int ac_gguf_get_bool(const ac_gguf_file *g, const char *key, int *out, int required);
/* *out borrowed from the file (not NUL-terminated). */
int ac_gguf_get_str(const ac_gguf_file *g, const char *key, ac_gguf_str *out, int required);
/* Array of given element type; *kv_out for element access. elem_type == AC_GGUF_T_COUNT
 * accepts an array of any element type (check (*kv_out)->arr_type yourself). */
int ac_gguf_get_arr(const ac_gguf_file *g, const char *key, uint32_t elem_type, const ac_gguf_kv **kv_out, int required);
/* Element access for numeric arrays (unaligned-safe); index must be < arr_n.
 * Any numeric element type is converted (C casts; floats truncate toward zero);
 * out-of-range index, string or non-array kv: 0. */
float ac_gguf_arr_f32(const ac_gguf_kv *kv, uint64_t i);
int32_t ac_gguf_arr_i32(const ac_gguf_kv *kv, uint64_t i);
uint32_t ac_gguf_arr_u32(const ac_gguf_kv *kv, uint64_t i);
const char *ac_gguf_vtype_name(uint32_t t);          /* "u32", "string", ... or "invalid" */
size_t ac_gguf_vtype_size(uint32_t t);                /* fixed size of a scalar value type; 0 for string, array or unknown (one table for reader and writer) */

/* Tensor helpers */
const char *ggml_dtype_name(uint32_t type);       /* "F32", "Q8_0", "Q4_K"... or "type#N" */
int ggml_dtype_supported(uint32_t type);          /* 1 for F32, F16, Q8_0, BF16 */
int ggml_dtype_known(uint32_t type);              /* 1 for any ggml type this reader can size */
/* Block geometry of a known type (elements per block, bytes per block); 0 if unknown. */
int ggml_dtype_block(uint32_t type, size_t *blck, size_t *bytes);
/* Bytes of a row of n elements; 0 if unsupported or n not a multiple of the block size. */
size_t ggml_row_bytes(uint32_t type, int64_t n);
/* Same for any known type (Q4_K...), supported or not. */
size_t ggml_row_bytes_any(uint32_t type, int64_t n);
/* AC_OK if the tensor's type is supported for compute, else AC_ERR_UNSUPPORTED
 * with "unsupported type Q4_K in tensor blk.0.attn_q.weight". */
int ac_gguf_check_supported(const ac_gguf_tensor *t);
/* Check a tensor exists with exactly these dims (ne[0] first, n_dims given) and a
 * supported type. Missing: AC_ERR_FORMAT if required (else AC_OK, *out = NULL);
 * wrong shape: AC_ERR_FORMAT naming both shapes; unsupported type: AC_ERR_UNSUPPORTED
 * (as ac_gguf_check_supported). */
int ac_gguf_expect_tensor(const ac_gguf_file *g, const char *name, uint32_t n_dims, const int64_t *ne,
                       const ac_gguf_tensor **out, int required);

/* fp16/bf16 scalar conversion: util/fp16.h (included here for the loader's users) */

/* ---- writer (tests, tools: synthetic models) ---------------------------- */
typedef struct ac_gguf_writer ac_gguf_writer;

ac_gguf_writer *ac_gguf_writer_new(void); /* NULL on OOM; caller owns, ac_gguf_writer_free */
void ac_gguf_writer_free(ac_gguf_writer *w);
/* Each setter copies key and value. Setting a key twice replaces it. */
int ac_gguf_w_u32(ac_gguf_writer *w, const char *key, uint32_t v);
int ac_gguf_w_i32(ac_gguf_writer *w, const char *key, int32_t v);
int ac_gguf_w_u64(ac_gguf_writer *w, const char *key, uint64_t v);
int ac_gguf_w_f32(ac_gguf_writer *w, const char *key, float v);
int ac_gguf_w_bool(ac_gguf_writer *w, const char *key, int v);
int ac_gguf_w_str(ac_gguf_writer *w, const char *key, const char *v);
int ac_gguf_w_arr_str(ac_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
int ac_gguf_w_arr_f32(ac_gguf_writer *w, const char *key, const float *v, uint64_t n);
int ac_gguf_w_arr_i32(ac_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* Generic: any scalar/array of any type from raw little-endian bytes (tests of every value type). */
int ac_gguf_w_raw(ac_gguf_writer *w, const char *key, uint32_t type, uint32_t arr_type, uint64_t arr_n,
               const void *data, size_t nbytes);
/* Tensor data is copied. ne[0] is contiguous. */
int ac_gguf_w_tensor(ac_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                  const int64_t *ne, const void *data);
/* Write atomically: temp file in the same dir, fsync, rename. version 2 or 3. */
int ac_gguf_w_write(ac_gguf_writer *w, const char *path, uint32_t version);
/* Serialize into a malloc'd buffer (tests). Caller frees *buf. */
int ac_gguf_w_to_memory(ac_gguf_writer *w, uint32_t version, uint8_t **buf, size_t *size);

#endif
