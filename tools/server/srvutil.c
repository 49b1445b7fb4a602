/* srvutil.c — UTF-8 validation, constant-time comparison, clock. */
#define _POSIX_C_SOURCE 200809L
#include "srvutil.h"

#include <stdint.h>
#include <time.h>

int srv_utf8_valid(const char *str, size_t n, size_t *bad_at) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c == 0) goto bad;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else goto bad;
        if (n - i < len) goto bad;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) goto bad;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
        i += len;
    }
    return 1;
bad:
    if (bad_at) *bad_at = i;
    return 0;
}

int srv_ct_equal(const char *given, size_t ng, const char *secret, size_t ns) {
    /* compare every byte of `given` against the secret (cycled), then fold in the
     * length difference: no early exit, no branch on secret bytes */
    volatile unsigned char acc = (unsigned char)(ng != ns);
    if (ns == 0) return 0;
    for (size_t i = 0; i < ng; i++) acc |= (unsigned char)(given[i] ^ secret[i % ns]);
    return acc == 0;
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
