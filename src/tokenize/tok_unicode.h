/* tok_unicode.h — Unicode helpers for the tokenizers (internal to src/tokenize).
 *
 * Everything here is derived from utf8proc (categories, decomposition, case);
 * no hand-written Unicode tables. Flags follow llama.cpp's unicode_cpt_flags:
 * one category bit per code point (N, L, Z, M, P, S, C or undefined) plus
 * WHITESPACE (Unicode White_Space = Zs/Zl/Zp + U+0009..U+000D + U+0085).
 */
#ifndef AC_TOK_UNICODE_H
#define AC_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    TU_UNDEFINED = 0x0001,
    TU_NUMBER = 0x0002,      /* \p{N} */
    TU_LETTER = 0x0004,      /* \p{L} */
    TU_SEPARATOR = 0x0008,   /* \p{Z} */
    TU_ACCENT_MARK = 0x0010, /* \p{M} */
    TU_PUNCTUATION = 0x0020, /* \p{P} */
    TU_SYMBOL = 0x0040,      /* \p{S} */
    TU_CONTROL = 0x0080,     /* \p{C} (Cc, Cf, Co, Cs) */
    TU_MASK_CATEGORIES = 0x00FF,
    TU_WHITESPACE = 0x0100,
};

#define TU_REPLACEMENT 0xFFFDu

/* Flags of a code point; 0 for "out of range" is never returned (>= 0x110000
 * gives TU_UNDEFINED). */
uint16_t tu_flags(uint32_t cpt);

/* Bytes of the UTF-8 sequence starting with lead byte c, as llama.cpp's
 * unicode_len_utf8 (no validation: 1 for continuation bytes). */
static inline size_t tu_len_utf8(unsigned char c) {
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* Encode cpt (<= 0x10FFFF) as UTF-8 into out[4]; returns the byte count. */
int tu_encode(uint32_t cpt, char *out);

/* Strict UTF-8 validation with replacement: every maximal ill-formed subpart
 * (truncated sequence, overlong, surrogate, > U+10FFFF, stray continuation
 * byte, 0xC0/0xC1/0xF5..0xFF) becomes one U+FFFD (the Unicode "best practice"
 * that Python and browsers use). Returns a malloc'd buffer (NUL-terminated)
 * with its length in *out_len, or NULL on OOM. If the input is valid the
 * result is a copy. */
char *tu_sanitize_utf8(const char *s, size_t len, size_t *out_len);

/* Decode valid UTF-8 (as produced by tu_sanitize_utf8) into code points.
 * cpts gets n entries, offs (optional) the byte offset of each (offs[n] =
 * len). Returns n. Arrays must hold len (+1 for offs) entries. */
size_t tu_decode(const char *s, size_t len, uint32_t *cpts, uint32_t *offs);

/* Simple lowercase mapping (single code point results only, as llama.cpp's
 * table built from Python's str.lower()). */
uint32_t tu_tolower(uint32_t cpt);

/* First code point of the canonical decomposition (llama.cpp's per-codepoint
 * "NFD" table keeps only that one); cpt itself if it has none. */
uint32_t tu_nfd_first(uint32_t cpt);

/* GPT-2 byte-level mapping: byte -> code point, and the reverse (-1 if the
 * code point is not one of the 256). */
uint32_t tu_byte_to_cpt(uint8_t b);
int tu_cpt_to_byte(uint32_t cpt);

#endif
