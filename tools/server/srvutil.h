/* srvutil.h — small checks the server's request handling needs. */
#ifndef SRV_UTIL_H
#define SRV_UTIL_H

#include <stddef.h>

/* 1 if s[0..n) is well-formed UTF-8 (no overlong forms, surrogates, or code
 * points above U+10FFFF) with no NUL byte; else 0 and *bad_at = first bad offset. */
int srv_utf8_valid(const char *s, size_t n, size_t *bad_at);
/* Constant-time equality of two byte strings: the time depends only on the
 * length of `given`, never on where the first difference is. 1 if equal. */
int srv_ct_equal(const char *given, size_t ng, const char *secret, size_t ns);
/* Monotonic seconds. */
double srv_now(void);

#endif
