/* codec.h — compressed storage of attention maps and the fused A.V kernels
 * that read them.
 *
 * An attention map of one head is L x L: row t is the softmax distribution of
 * query t over the keys (sum 1, values in [0,1]). A codec stores it row by
 * row; every row is self-contained (its own scale), so a row pointer alone is
 * enough to decode it. n_t = number of stored columns of row t:
 *   dense  : n_t = L
 *   causal : n_t = t + 1  (lower triangle incl. diagonal; columns > t are 0)
 *
 * Row layouts (bytes), for n = n_t:
 *   F32  : float p[n]                                     4n
 *   F16  : u16 (IEEE half) p[n]                           2n
 *   Q8   : float scale; u8 q[n];   p = q*scale, scale = max/255, q = round(p/max*255)
 *                                                         4 + n
 *   Q4   : float scale; u8 nib[(n+1)/2] (element 2i in the LOW nibble of byte i,
 *          2i+1 in the high one; a padding nibble is 0); p = q*scale, scale = max/15
 *                                                         4 + ceil(n/2)
 *   TOPK : k' = min(k, n); u16 idx[k'] (ascending); u16 (half) val[k']
 *          values renormalised so the kept mass sums to 1   4k'
 * A head map = its L rows back to back, zero-padded to a multiple of 64 bytes
 * (ac_codec_map_bytes). Rows are not aligned; kernels use unaligned loads.
 */
#ifndef AC_CACHE_CODEC_H
#define AC_CACHE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum ac_codec_kind {
    AC_CODEC_F32 = 0,
    AC_CODEC_F16 = 1,
    AC_CODEC_Q8 = 2,
    AC_CODEC_Q4 = 3,
    AC_CODEC_TOPK = 4,
    AC_CODEC_COUNT
};

#define AC_CODEC_MAX_L 65536 /* longest map (TOPK indices are u16) */

typedef struct ac_map_codec {
    int kind;   /* enum ac_codec_kind                                          */
    int causal; /* 1: lower triangle only (row t holds columns 0..t)           */
    int topk;   /* TOPK: entries kept per row, 1..AC_CODEC_MAX_L; else ignored */
} ac_map_codec;

const char *ac_codec_kind_name(int kind); /* "f32", "f16", "q8", "q4", "topk" or "?" */
/* Parse "f32", "q8", "q4-causal", "topk32", "topk16-causal", ... Returns AC_OK or AC_ERR_ARG. */
int ac_codec_parse(const char *s, ac_map_codec *c);
/* Writes e.g. "topk32-causal" into buf (cap bytes incl. NUL). */
void ac_codec_format(const ac_map_codec *c, char *buf, size_t cap);

/* AC_OK if the codec is valid for maps of L tokens, else AC_ERR_ARG (+message). */
int ac_codec_check(const ac_map_codec *c, int L);

/* Stored columns of row t. */
static inline int ac_codec_row_n(const ac_map_codec *c, int L, int t) { return c->causal ? t + 1 : L; }
/* Bytes of one row holding n columns. */
size_t ac_codec_row_bytes(const ac_map_codec *c, int n);
/* Byte offset of row t inside a head map (closed form, O(1)). */
size_t ac_codec_row_offset(const ac_map_codec *c, int L, int t);
/* Bytes of one head's map incl. padding to 64 (0 if the codec is invalid for L). */
size_t ac_codec_map_bytes(const ac_map_codec *c, int L);

/* Encode one head's map. P: [L][L] row-major, finite, >= 0 (entries above the
 * diagonal are ignored for causal codecs). dst: ac_codec_map_bytes() bytes,
 * fully written (padding zeroed, so the output is deterministic).
 * Returns AC_OK, or AC_ERR_ARG (bad codec, non-finite/negative value: the
 * message names row and column) or AC_ERR_NOMEM (TOPK scratch). */
int ac_codec_encode(const ac_map_codec *c, const float *P, int L, void *dst);

/* ---- plain references ------------------------------------------------------------ */
/* Decode row t to row[L] (zeros beyond the stored columns / for dropped top-k). */
void ac_codec_decode_row(const ac_map_codec *c, const void *map, int L, int t, float *row);
/* Sum of a stored row's weights in its columns [0, n) (n <= n_stored, its stored columns),
 * without decoding the row: TOPK reads its k entries, Q8/Q4 sum the codes before the scale.
 * What serving a longer entry's row over the first n columns renormalises by. */
double ac_codec_row_mass(const ac_map_codec *c, const void *row, int n_stored, int n);
/* The weight of column j of a stored row of n_stored columns (0 outside them, or dropped by top-k). */
float ac_codec_row_value(const ac_map_codec *c, const void *row, int n_stored, int j);
/* Decode the whole map to P[L][L]. */
void ac_codec_decode(const ac_map_codec *c, const void *map, int L, float *P);
/* Reference A.V: out[t][d] = sum_j p_tj V[j][d] via decode_row (double accumulation).
 * V: [L][ld_v], out: [L][ld_o], d < head_dim. */
int ac_codec_av_ref(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v,
                    int head_dim, float *out, int ld_o);

/* ---- fused kernels ---------------------------------------------------------------- */
/* One row: out[d] = sum_{j<n} p_j V[j][d], decoding the compressed row inside
 * the loop (16 values at a time, zero probabilities skipped). row: the row's
 * bytes (ac_codec_row_offset), n: its stored columns. V: [n..][ld_v]. out: [head_dim].
 * TOPK indices >= n are ignored (hostile data never reads outside V). */
void ac_codec_av_row(const ac_map_codec *c, const void *row, int n, const float *V, int ld_v,
                     int head_dim, float *out);
/* Whole head: out[t][:] = A[t][:] . V for t < L. Rows are walked in order;
 * nothing larger than 16 decoded values is materialised. Both fused kernels
 * run at ac_cpu_level() (AVX-512, AVX2 or portable C / NEON; kernels.h says
 * how their results compare). */
void ac_codec_av(const ac_map_codec *c, const void *map, int L, const float *V, int ld_v,
                 int head_dim, float *out, int ld_o);

/* IEEE half <-> float, round-to-nearest-even (portable; used by the references). */
uint16_t ac_f32_to_f16(float f);
float ac_f16_to_f32(uint16_t h);

/* The level (util/cpu.h AC_CPU_*) whose fused kernels run now. */
int ac_codec_simd(void);

#ifdef __cplusplus
}
#endif
#endif
