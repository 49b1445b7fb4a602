/* test_cli_json.c — the CLI's float text (tools/cli/common.c): cli_float_text writes
 * exactly the bytes cJSON prints for cli_json_float's node (what `attncache embed`
 * printed through cJSON before it wrote its lines directly) — between 1e-10 and 1e5 from
 * digits made by integer arithmetic, which this checks against snprintf/strtod's —, and
 * the shortest digits are those of counting p up from 6 (the search tries 8 first: it
 * relies on round trips being monotone in p). Floats: ±0, whole numbers, the bounds of
 * the paths (1e-10, 1e5, 1e6), 2,000 floats either side of every power of ten from 1e-10
 * to 1e5 (carries into the next decade, %g's switch to an exponent at 1e-4), tiny and
 * subnormal values, inf, nan and 300,000 random bit patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the former search: %.9g, or the first p of 6..8 whose digits read back as v */
static void linear_shortest(float v, char buf[32]) {
    snprintf(buf, 32, "%.9g", (double)v);
    for (int p = 6; p < 9; p++) {
        char b[32];
        snprintf(b, sizeof b, "%.*g", p, (double)v);
        if ((float)strtod(b, NULL) == v) {
            memcpy(buf, b, sizeof b);
            return;
        }
    }
}

static void check_one(float v, long *n_direct) {
    char got[32], want_digits[32];
    const int n = cli_float_text(v, got);
    assert_true(n > 0 && (size_t)n == strlen(got));
    cJSON *j = cli_json_float(v);
    assert_non_null(j);
    char *want = cJSON_PrintUnformatted(j);
    assert_non_null(want);
    if (strcmp(got, want)) fprintf(stderr, "%a: '%s' vs cJSON '%s'\n", (double)v, got, want);
    assert_string_equal(got, want);
    cJSON_free(want);
    /* the node holds the value of the linear search's digits */
    linear_shortest(v, want_digits);
    if (isfinite(v)) {
        assert_true(j->valuedouble == strtod(want_digits, NULL));
        if (fabsf(v) < 1e6f) {
            assert_string_equal(got, want_digits);
            (*n_direct)++;
        }
    }
    cJSON_Delete(j);
}

static void test_float_text(void **st) {
    (void)st;
    long n_direct = 0;
    const float fixed[] = {0.0f,       -0.0f,     1.0f,        -1.0f,      3.0f,        0.5f,      0.1f,
                           -0.1f,      1e-4f,     9.99e-5f,    1.2345e-5f, 123456.5f,   999999.9f, 1e6f,
                           -1e6f,      1234567.f, 3.4028235e38f, 1.1754944e-38f, 1e-45f, -2.5e-42f, 16777216.f, 1e-10f, 9.9999e-11f, 1e5f, 99999.99f, 99999.996f,
                           0.33333334f, INFINITY, -INFINITY,   NAN};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) check_one(fixed[i], &n_direct);
    for (int e = -10; e <= 5; e++) { /* around each power of ten, both signs */
        const float c = (float)pow(10.0, e);
        uint32_t u;
        memcpy(&u, &c, sizeof u);
        for (int d = -2000; d <= 2000; d++) {
            const uint32_t w = u + (uint32_t)d;
            float v;
            memcpy(&v, &w, sizeof v);
            check_one(v, &n_direct);
            check_one(-v, &n_direct);
        }
    }
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < 300000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t bits = (uint32_t)s;
        if (i % 2) bits = (bits & 0x807fffffu) | ((uint32_t)(110 + (s >> 40) % 20) << 23); /* |v| in 2^-17..2^2 */
        float v;
        memcpy(&v, &bits, sizeof v);
        check_one(v, &n_direct);
    }
    fprintf(stderr, "cli_float_text: cJSON's bytes for every value; %ld on the direct path\n", n_direct);
    assert_true(n_direct > 150000);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_float_text)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
