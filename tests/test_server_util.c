/* test_server_util.c — the server's small helpers: strict UTF-8 validation
 * (tools/server/srvutil.c), constant-time key comparison, base64 and JSON
 * string output (tools/server/sbuf.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sbuf.h"
#include "srvutil.h"

#include <stdlib.h>
#include <string.h>

static int valid(const char *s, size_t *bad) { return srv_utf8_valid(s, strlen(s), bad); }

static void test_utf8(void **state) {
    (void)state;
    size_t bad = 99;
    assert_true(valid("", &bad));
    assert_true(valid("plain ascii", &bad));
    assert_true(valid("caf\xc3\xa9 \xe6\x9d\xb1 \xf0\x9f\x98\x80", &bad)); /* 2, 3, 4-byte forms */
    assert_true(valid("\xf4\x8f\xbf\xbf", &bad));                          /* U+10FFFF */
    assert_true(valid("\xed\x9f\xbf", &bad));                              /* U+D7FF */
    assert_false(valid("ab\xff", &bad));
    assert_int_equal(bad, 2);
    assert_false(valid("\xc0\xaf", &bad));         /* overlong '/' */
    assert_false(valid("\xe0\x80\xaf", &bad));     /* overlong, 3 bytes */
    assert_false(valid("\xf0\x80\x80\xaf", &bad)); /* overlong, 4 bytes */
    assert_false(valid("\xed\xa0\x80", &bad));     /* surrogate U+D800 */
    assert_false(valid("\xf4\x90\x80\x80", &bad)); /* U+110000 */
    assert_false(valid("x\xe2\x82", &bad));        /* cut */
    assert_int_equal(bad, 1);
    assert_false(valid("\xe2\x28\xa1", &bad));     /* bad continuation */
    assert_false(valid("\x80", &bad));             /* lone continuation */
    assert_false(srv_utf8_valid("a\0b", 3, &bad)); /* NUL */
    assert_int_equal(bad, 1);
}

static void test_ct_equal(void **state) {
    (void)state;
    const char *key = "sekret-key-123";
    assert_true(srv_ct_equal("sekret-key-123", 14, key, strlen(key)));
    assert_false(srv_ct_equal("sekret-key-124", 14, key, strlen(key)));
    assert_false(srv_ct_equal("sekret-key-12", 13, key, strlen(key)));           /* prefix */
    assert_false(srv_ct_equal("sekret-key-1234", 15, key, strlen(key)));         /* longer */
    assert_false(srv_ct_equal("sekret-key-123sekret-key-123", 28, key, strlen(key))); /* the key twice */
    assert_false(srv_ct_equal("", 0, key, strlen(key)));
    assert_false(srv_ct_equal("", 0, "", 0)); /* no key never matches */
}

static void test_base64(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}}; /* RFC 4648 test vectors */
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        sbuf b = {0};
        sbuf_base64(&b, v[i].in, strlen(v[i].in));
        sbuf_put(&b, "", 0);
        assert_true(sbuf_ok(&b));
        assert_string_equal(b.p, v[i].out);
        sbuf_free(&b);
    }
    const float f[2] = {1.0f, -2.5f}; /* little-endian float32 bytes 00 00 80 3f 00 00 20 c0 */
    sbuf b = {0};
    sbuf_base64(&b, f, sizeof f);
    assert_string_equal(b.p, "AACAPwAAIMA=");
    sbuf_free(&b);
}

static void test_json_str(void **state) {
    (void)state;
    sbuf b = {0};
    const char s[] = "a\"b\\c\nd\x01\xc3\xa9";
    sbuf_json_str(&b, s, sizeof s - 1);
    sbuf_json_float(&b, 0.1f);
    sbuf_json_float(&b, 1.0 / 0.0);
    assert_true(sbuf_ok(&b));
    assert_string_equal(b.p, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\"0.100000001null");
    size_t n;
    char *p = sbuf_take(&b, &n);
    assert_int_equal(n, strlen(p));
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_json_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
