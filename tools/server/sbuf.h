/* sbuf.h — a growable byte buffer for building HTTP response bodies (JSON text,
 * Prometheus text). Errors are sticky: after a failed allocation every append is
 * a no-op and sbuf_ok() is 0, so callers check once at the end. */
#ifndef SRV_SBUF_H
#define SRV_SBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sbuf {
    char *p;      /* owned; NUL-terminated while ok */
    size_t n, cap;
    int failed;   /* 1 after an allocation failure */
} sbuf;

void sbuf_free(sbuf *b);
int sbuf_ok(const sbuf *b);
/* Takes the contents (caller owns, free()); the buffer is left empty. NULL if failed. */
char *sbuf_take(sbuf *b, size_t *len);
void sbuf_put(sbuf *b, const char *s, size_t n);
void sbuf_puts(sbuf *b, const char *s);
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included) of n bytes of valid UTF-8. */
void sbuf_json_str(sbuf *b, const char *s, size_t n);
/* A float as JSON: shortest round-trip-safe form for float32 (%.9g); NaN/Inf as null. */
void sbuf_json_float(sbuf *b, double v);
/* Standard base64 (RFC 4648, with padding) of n bytes. */
void sbuf_base64(sbuf *b, const void *data, size_t n);

#endif
