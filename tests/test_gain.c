/* test_gain.c — the measured-gain guard (src/forward/gain.c), with made-up call times:
 * a cache that makes calls slower is bypassed after its warm-up and one exact probe, and
 * then costs one call in K (K doubling to AC_GAIN_PROBE_MAX); a cache that makes calls
 * faster is kept, with one exact call in AC_GAIN_RECHECK; a stream that turns faster
 * while bypassed is taken back at the next probe; cold calls are not averaged; bad
 * reports (no tokens, negative or NaN seconds) change nothing. Also the public view
 * (ac_ctx_gain_stats) on a CPU context: present, not enabled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "attncache.h"
#include "forward/gain.h"

#include <math.h>
#include <string.h>

/* n calls of a stream whose cached calls take tc and exact ones te seconds per token (100
 * tokens each); counts how many ran with the cache */
static int run(ac_gain *g, int n, double tc, double te) {
    int used = 0;
    for (int i = 0; i < n; i++) {
        const int use = ac_gain_next(g) == AC_GAIN_USE;
        used += use;
        ac_gain_note(g, (use ? tc : te) * 100, 100);
    }
    return used;
}

static void test_slower_cache_bypassed(void **st) {
    (void)st;
    ac_gain g;
    ac_gain_reset(&g);
    /* warm-up: AC_GAIN_WARM cached calls, then one exact probe, then the first averaged cached call */
    int used = run(&g, AC_GAIN_WARM, 2e-6, 1e-6);
    assert_int_equal(used, AC_GAIN_WARM);
    assert_int_equal(g.n_cached, 0); /* cold: not averaged */
    assert_int_equal(ac_gain_next(&g), AC_GAIN_EXACT);
    ac_gain_note(&g, 1e-4, 100);
    assert_int_equal(g.bypassing, 0); /* no cached mean yet */
    assert_int_equal(ac_gain_next(&g), AC_GAIN_USE);
    ac_gain_note(&g, 2e-4, 100);
    assert_int_equal(g.bypassing, 1);
    assert_int_equal(g.interval, AC_GAIN_PROBE_MIN);
    /* then: one call in K with the cache, K doubling up to the maximum */
    used = run(&g, 4000, 2e-6, 1e-6);
    const int k_sum = 4 + 8 + 16 + 32 + 64 + 128; /* calls until K reaches 256 */
    assert_int_equal(g.interval, AC_GAIN_PROBE_MAX);
    assert_true(used >= 6 && used <= 6 + (4000 - k_sum) / AC_GAIN_PROBE_MAX + 1);
    assert_int_equal(g.probes_cached, used);
    assert_int_equal(g.bypassed + g.probes_cached, 4000);
}

static void test_faster_cache_kept(void **st) {
    (void)st;
    ac_gain g;
    ac_gain_reset(&g);
    const int n = 1000, used = run(&g, n, 0.5e-6, 1e-6);
    assert_int_equal(g.bypassing, 0);
    assert_int_equal(g.bypassed, 0);
    /* exact calls: the first probe after the warm-up, then one in AC_GAIN_RECHECK */
    const int exact = n - used;
    assert_int_equal(exact, g.probes_exact);
    assert_true(exact >= (n - AC_GAIN_WARM) / AC_GAIN_RECHECK && exact <= (n - AC_GAIN_WARM) / AC_GAIN_RECHECK + 2);
    assert_true(fabs(g.t_exact - 1e-6) < 1e-12 && fabs(g.t_cached - 0.5e-6) < 1e-12);
}

static void test_taken_back_when_faster(void **st) {
    (void)st;
    ac_gain g;
    ac_gain_reset(&g);
    run(&g, 50, 2e-6, 1e-6);
    assert_int_equal(g.bypassing, 1);
    /* the cache turns fast (its entries warm up): the decayed mean crosses after a few probes */
    int i = 0;
    while (g.bypassing && i < 5000) i += 1, run(&g, 1, 0.2e-6, 1e-6);
    assert_int_equal(g.bypassing, 0);
    assert_true(i < 4 * AC_GAIN_PROBE_MAX * 8);
    const int64_t before = g.bypassed;
    run(&g, 100, 0.2e-6, 1e-6);
    assert_int_equal(g.bypassed, before); /* using again: nothing bypassed */
    assert_int_equal(g.bypassing, 0);
}

static void test_margin_and_bad_reports(void **st) {
    (void)st;
    ac_gain g;
    ac_gain_reset(&g);
    run(&g, 200, 1.01e-6, 1e-6); /* 1% slower: within the margin, kept */
    assert_int_equal(g.bypassing, 0);
    const ac_gain before = g;
    (void)ac_gain_next(&g);
    ac_gain_note(&g, 1.0, 0);
    ac_gain_note(&g, -1.0, 10);
    ac_gain_note(&g, NAN, 10);
    assert_true(g.t_cached == before.t_cached && g.t_exact == before.t_exact);
    assert_int_equal(g.n_cached + g.n_exact, before.n_cached + before.n_exact);
}

static void test_public_stats_cpu(void **st) {
    (void)st;
    ac_gain_stats s;
    assert_int_equal(ac_ctx_gain_stats(NULL, &s), AC_ERR_ARG);
    ac_ctx_params p = ac_ctx_default_params();
    assert_int_equal(p.gain_guard, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slower_cache_bypassed),
        cmocka_unit_test(test_faster_cache_kept),
        cmocka_unit_test(test_taken_back_when_faster),
        cmocka_unit_test(test_margin_and_bad_reports),
        cmocka_unit_test(test_public_stats_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
