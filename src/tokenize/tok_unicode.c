/* tok_unicode.c — Unicode helpers on top of utf8proc (see tok_unicode.h). */
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

uint16_t tu_flags(uint32_t cpt) {
    if (cpt > 0x10FFFF) return TU_UNDEFINED;
    /* White_Space: U+0009..U+000D, U+0085 and the Z categories */
    uint16_t ws = ((cpt >= 0x09 && cpt <= 0x0D) || cpt == 0x85) ? TU_WHITESPACE : 0;
    switch (utf8proc_category((utf8proc_int32_t)cpt)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return TU_LETTER | ws;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
        return TU_ACCENT_MARK | ws;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return TU_NUMBER | ws;
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return TU_PUNCTUATION | ws;
    case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC: case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
        return TU_SYMBOL | ws;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return TU_SEPARATOR | TU_WHITESPACE;
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
        return TU_CONTROL | ws;
    default: /* Cn */
        return TU_UNDEFINED | ws;
    }
}

int tu_encode(uint32_t c, char *o) {
    if (c <= 0x7F) {
        o[0] = (char)c;
        return 1;
    }
    if (c <= 0x7FF) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c <= 0xFFFF) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    if (c > 0x10FFFF) c = TU_REPLACEMENT;
    if (c <= 0xFFFF) return tu_encode(c, o);
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of the well-formed sequence at s[0..n) (1..4), or -(k) where k >= 1
 * is the length of the maximal ill-formed subpart to replace by one U+FFFD. */
static int utf8_check(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the 2nd byte */
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else return -1; /* 0x80..0xC1, 0xF5..0xFF */
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k; /* truncated */
        unsigned char b = s[k];
        unsigned char l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
        if (b < l || b > h) return -k;
    }
    return need + 1;
}

char *tu_sanitize_utf8(const char *s, size_t len, size_t *out_len) {
    const unsigned char *u = (const unsigned char *)s;
    /* worst case: each byte -> 3 bytes (U+FFFD) */
    size_t cap = len * 3 + 1;
    if (len > (SIZE_MAX - 1) / 3) return NULL;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) { /* fast path for ASCII runs */
            out[o++] = (char)u[i++];
            continue;
        }
        int r = utf8_check(u + i, len - i);
        if (r > 0) {
            memcpy(out + o, u + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
        } else {
            out[o++] = (char)0xEF;
            out[o++] = (char)0xBF;
            out[o++] = (char)0xBD;
            i += (size_t)(-r);
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

size_t tu_decode(const char *s, size_t len, uint32_t *cpts, uint32_t *offs) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        size_t l = tu_len_utf8(c);
        if (l > len - i) l = len - i;
        uint32_t cp;
        switch (l) {
        case 1: cp = c; break;
        case 2: cp = ((uint32_t)(c & 0x1F) << 6) | (u[i + 1] & 0x3F); break;
        case 3: cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(u[i + 1] & 0x3F) << 6) | (u[i + 2] & 0x3F); break;
        default:
            cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(u[i + 1] & 0x3F) << 12) |
                 ((uint32_t)(u[i + 2] & 0x3F) << 6) | (u[i + 3] & 0x3F);
            break;
        }
        if (offs) offs[n] = (uint32_t)i;
        cpts[n++] = cp;
        i += l;
    }
    if (offs) offs[n] = (uint32_t)len;
    return n;
}

uint32_t tu_tolower(uint32_t cpt) {
    if (cpt < 0x80) return (cpt >= 'A' && cpt <= 'Z') ? cpt + 32 : cpt;
    /* U+0130's full lowercase is two code points; llama.cpp's table (built
     * from str.lower()) keeps only single code point results */
    if (cpt == 0x130 || cpt > 0x10FFFF) return cpt;
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cpt);
}

uint32_t tu_nfd_first(uint32_t cpt) {
    if (cpt < 0xC0 || cpt > 0x10FFFF) return cpt;
    utf8proc_int32_t buf[8];
    int last = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cpt, buf, 8, UTF8PROC_DECOMPOSE, &last);
    if (n < 1 || n > 8) return cpt;
    return (uint32_t)buf[0];
}

/* GPT-2 bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in increasing byte order. */
static int byte_printable(int b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tu_byte_to_cpt(uint8_t b) {
    if (byte_printable(b)) return b;
    uint32_t n = 0;
    for (int c = 0; c < b; c++)
        if (!byte_printable(c)) n++;
    return 256 + n;
}

int tu_cpt_to_byte(uint32_t cpt) {
    if (cpt < 256) return byte_printable((int)cpt) ? (int)cpt : -1;
    if (cpt >= 256 + 68) return -1;
    uint32_t n = cpt - 256, k = 0;
    for (int c = 0; c < 256; c++) {
        if (!byte_printable(c)) {
            if (k == n) return c;
            k++;
        }
    }
    return -1;
}
