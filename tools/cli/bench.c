/* bench.c — `attncache bench`: prefill throughput and where the time goes.
 * Random token ids (fixed seed) of each length L; warm-up run, then REPS runs;
 * prints tokens/s (best and median) and the per-stage split. With --cache DIR:
 * records entries of each length, then times exact and cached runs side by
 * side (speedups, Amdahl bound). --json FILE: the same figures (cJSON). */
#define _GNU_SOURCE
#include "attncache.h"
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill_random(int32_t *ids, int n, int n_vocab, uint64_t *rng) {
    for (int k = 0; k < n; k++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[k] = (int32_t)((*rng >> 33) % (uint64_t)n_vocab);
    }
}

/* Exact vs cached, side by side, REPS times each, alternating. */
/* Exact and cached runs alternate on one context (the cache attached for the
 * cached run only): one thread pool, whose idle workers cannot poll the cores
 * while the other run works, as a second context's would. */
static int bench_cached(ac_ctx *ctx, ac_cache *cache, const ac_model_info *info, ac_seq *seqs,
                        int batch, int L, int reps, int n_build, double shared, double t_exact_best, cJSON *results) {
    (void)t_exact_best; /* the exact figure is re-measured here, alternating with the cached one */
    uint64_t rng = 0xB111D + (uint64_t)L;
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) return cli_fail("out of memory");
    double tb = cli_now();
    for (int b = 0; b < n_build; b++) { /* entries of this length (other random ids than the queries) */
        fill_random(ids, L, info->n_vocab, &rng);
        /* --shared-prefix F: the entry starts with the first F*L tokens of the first query */
        const int P = (int)(shared * L);
        memcpy(ids, seqs[0].tokens, (size_t)P * sizeof *ids);
        if (P < L && ids[P] == seqs[0].tokens[P]) ids[P] = (ids[P] + 1) % info->n_vocab;
        int added = 0;
        if (ac_cache_add(cache, ctx, ids, L, &added) != AC_OK) {
            free(ids);
            return cli_fail("L=%d: recording the cache: %s", L, ac_last_error());
        }
    }
    free(ids);
    if (ac_cache_commit(cache) != AC_OK || ac_cache_reindex(cache) != AC_OK)
        return cli_fail("L=%d: %s", L, ac_last_error());
    tb = cli_now() - tb;
    ac_outputs o = {0};
    float *pooled = malloc((size_t)batch * info->n_embd * sizeof *pooled);
    o.pooled = pooled;
    o.pooling = AC_POOL_DEFAULT;
    ac_ctx_attach_cache(ctx, cache);
    const int wrc = pooled ? ac_forward(ctx, seqs, batch, &o) : AC_ERR_NOMEM; /* warm-up */
    ac_ctx_attach_cache(ctx, NULL);
    if (wrc != AC_OK) {
        free(pooled);
        return cli_fail("L=%d: %s", L, ac_last_error());
    }
    ac_cache_reset_stats(cache);
    double te = 1e30, tc = 1e30, pe[AC_STAGE_COUNT] = {0}, pc[AC_STAGE_COUNT] = {0}, p0[AC_STAGE_COUNT],
           p1[AC_STAGE_COUNT];
    for (int k = 0; k < reps; k++) {
        ac_ctx_get_profile(ctx, p0);
        double t0 = cli_now();
        if (ac_forward(ctx, seqs, batch, &o) != AC_OK) break;
        double t1 = cli_now();
        ac_ctx_get_profile(ctx, p1);
        for (int s = 0; s < AC_STAGE_COUNT; s++) pe[s] += p1[s] - p0[s];
        ac_ctx_attach_cache(ctx, cache);
        double t2 = cli_now();
        const int crc = ac_forward(ctx, seqs, batch, &o);
        double t3 = cli_now();
        ac_ctx_attach_cache(ctx, NULL);
        if (crc != AC_OK) break;
        ac_ctx_get_profile(ctx, p0);
        for (int s = 0; s < AC_STAGE_COUNT; s++) pc[s] += p0[s] - p1[s];
        te = t1 - t0 < te ? t1 - t0 : te;
        tc = t3 - t2 < tc ? t3 - t2 : tc;
    }
    free(pooled);
    ac_cache_stats st;
    ac_cache_get_stats(cache, &st);
    const double QD = (double)info->n_head * info->head_dim, KVD = (double)info->n_head_kv * info->head_dim;
    /* per run: exact attention op (fused kernel), cached attention op (map A.V + fused for unserved layers) */
    const double ea = (pe[AC_STAGE_ATTN] + pe[AC_STAGE_QK] + pe[AC_STAGE_SOFTMAX] + pe[AC_STAGE_AV]) / reps;
    const double ca = (pc[AC_STAGE_ATTN] + pc[AC_STAGE_QK] + pc[AC_STAGE_SOFTMAX] + pc[AC_STAGE_AV]) / reps;
    const double lookup = (st.t_features + st.t_key + st.t_search + st.t_fetch) / reps;
    double sum_e = 0;
    for (int s = 0; s < AC_STAGE_COUNT; s++) sum_e += pe[s] / reps;
    /* Amdahl: reuse skips the Q/K share of the QKV stage (by FLOPs; rows=prefix
     * with a share r < 1 of the rows served: Q of those rows only) and the exact
     * attention, and adds what the cached run spends in attention (stored-map
     * A.V, plus the exact rows past a served prefix) */
    const double r = st.rows_total ? (double)st.rows_served / (double)st.rows_total : 1.0;
    const double qk_share = r >= 1.0 ? (QD + KVD) / (QD + 2 * KVD) : QD * r / (QD + 2 * KVD);
    const double skipped = pe[AC_STAGE_QKV] / reps * qk_share + ea;
    const double bound = sum_e / (sum_e - skipped + ca);
    const double hit_rate = st.queries ? (double)st.hits / st.queries : 0;
    /* adaptive lookups: sequences that skipped the lookup (the cache's recent hit rate under the floor) */
    const int64_t seen = st.queries + st.lookups_skipped;
    const double skip_share = seen ? (double)st.lookups_skipped / (double)seen : 0;
    printf("%6d  exact %8.1f tok/s  cache %8.1f tok/s  e2e %.3fx (Amdahl bound %.3fx, %.0f%% of it)  attn-op %.2fx  "
           "lookup %.2f%%  hits %.0f%%  skipped %.0f%%  rows %.0f%%  %.1f MiB maps/query  (built %d entries in %.1f s)\n",
           L, (double)L * batch / te, (double)L * batch / tc, te / tc, bound, 100.0 * (te / tc) / bound,
           ca > 0 ? ea / ca : 0, 100.0 * lookup / tc, 100.0 * hit_rate, 100.0 * skip_share, 100.0 * r,
           st.queries ? st.bytes_read / 1048576.0 / st.queries : 0, n_build, tb);
    if (st.rechecked) /* the confidence gate (--recheck-margin): served sequences computed again exactly */
        printf("        recheck (--recheck-margin): %lld of %lld served sequences computed again exactly\n",
               (long long)st.rechecked, (long long)st.hits);
    cJSON *row = results ? cJSON_CreateObject() : NULL;
    if (row) {
        cJSON_AddNumberToObject(row, "L", L);
        cJSON_AddNumberToObject(row, "tok_s_exact", (double)L * batch / te);
        cJSON_AddNumberToObject(row, "tok_s_cache", (double)L * batch / tc);
        cJSON_AddNumberToObject(row, "speedup_e2e", te / tc);
        cJSON_AddNumberToObject(row, "amdahl_bound", bound);
        cJSON_AddNumberToObject(row, "speedup_attn_op", ca > 0 ? ea / ca : 0);
        cJSON_AddNumberToObject(row, "lookup_s", lookup);
        cJSON_AddNumberToObject(row, "hit_rate", hit_rate);
        cJSON_AddNumberToObject(row, "lookups_skipped", (double)st.lookups_skipped);
        cJSON_AddNumberToObject(row, "probes", (double)st.probes);
        cJSON_AddNumberToObject(row, "rechecked", (double)st.rechecked);
        cJSON_AddNumberToObject(row, "rows_served_share", r);
        cJSON_AddNumberToObject(row, "bytes_per_query", st.queries ? (double)st.bytes_read / st.queries : 0);
        cJSON_AddItemToArray(results, row);
    }
    return 0;
}

/* Exact vs prefix K/V reuse, side by side, REPS times each, alternating on
 * one context (the prefix cache attached for the second run only). Every
 * repetition draws new queries whose first P = shared*L tokens are one fixed
 * head (stored by a warm-up run) and whose rest is new, so each prefix run
 * reuses exactly P rows and computes L-P; lookup and insert are inside its
 * time. */
static int bench_prefix(ac_ctx *ctx, ac_prefix_cache *pc, const ac_model_info *info, int batch, int L, int reps,
                        double shared, cJSON *results) {
    const int P = AC_CLI_MIN((int)(shared * L), L - 1);
    uint64_t rng = 0x9FE1 + (uint64_t)L;
    int32_t *ids = malloc((size_t)L * batch * sizeof *ids);
    ac_seq *seqs = malloc((size_t)batch * sizeof *seqs);
    float *pooled = malloc((size_t)batch * info->n_embd * sizeof *pooled);
    int rc = 0;
    if (!ids || !seqs || !pooled) {
        rc = cli_fail("out of memory");
        goto out;
    }
    fill_random(ids, P, info->n_vocab, &rng); /* the shared head */
    for (int b = 0; b < batch; b++) {
        if (b) memcpy(ids + (size_t)b * L, ids, (size_t)P * sizeof *ids);
        seqs[b] = (ac_seq){ids + (size_t)b * L, L};
    }
    ac_outputs o = {0};
    o.pooled = pooled;
    o.pooling = AC_POOL_DEFAULT;
    ac_prefix_reset_stats(pc);
    double te = 1e30, tp = 1e30, se = 0, sp = 0, pe[AC_STAGE_COUNT] = {0}, pp[AC_STAGE_COUNT] = {0}, p0[AC_STAGE_COUNT],
           p1[AC_STAGE_COUNT], q0[AC_STAGE_COUNT];
    for (int k = -1; k < reps && !rc; k++) { /* k = -1: warm-up (stores the head) */
        for (int b = 0; b < batch; b++) fill_random(ids + (size_t)b * L + P, L - P, info->n_vocab, &rng);
        ac_ctx_get_profile(ctx, q0);
        double t0 = cli_now();
        if (ac_forward(ctx, seqs, batch, &o) != AC_OK) rc = cli_fail("L=%d: %s", L, ac_last_error());
        double t1 = cli_now();
        ac_ctx_get_profile(ctx, p1);
        if ((rc = rc ? rc : ac_ctx_attach_prefix(ctx, pc) ? cli_api_fail("prefix cache", -1) : 0)) break;
        double t2 = cli_now();
        if (ac_forward(ctx, seqs, batch, &o) != AC_OK) rc = cli_fail("L=%d (prefix cache): %s", L, ac_last_error());
        double t3 = cli_now();
        ac_ctx_attach_prefix(ctx, NULL);
        ac_ctx_get_profile(ctx, p0);
        if (k < 0) {
            ac_prefix_reset_stats(pc);
            continue;
        }
        for (int s = 0; s < AC_STAGE_COUNT; s++) pe[s] += p1[s] - q0[s], pp[s] += p0[s] - p1[s];
        te = AC_CLI_MIN(te, t1 - t0), tp = AC_CLI_MIN(tp, t3 - t2), se += t1 - t0, sp += t3 - t2;
    }
    if (rc) goto out;
    ac_prefix_stats st;
    ac_prefix_get_stats(pc, &st);
    const double all = (double)(st.tokens_reused + st.tokens_computed);
    const double bound = st.tokens_computed ? all / (double)st.tokens_computed : 0;
    printf("%6d  exact %8.1f tok/s  prefix %8.1f tok/s  e2e %.3fx best, %.3fx summed (Amdahl bound %.3fx = tokens / "
           "computed, %.0f%% of it)  reused %lld computed %lld  lookup+insert %.2f%%\n",
           L, (double)L * batch / te, (double)L * batch / tp, te / tp, se / sp, bound, 100.0 * (se / sp) / bound,
           (long long)st.tokens_reused, (long long)st.tokens_computed, 100.0 * (st.t_lookup + st.t_insert) / sp);
    printf("        per-stage s/run exact | prefix:");
    for (int s = 0; s < AC_STAGE_COUNT; s++)
        if (pe[s] > 0 || pp[s] > 0) printf("  %s %.4f|%.4f", ac_stage_name(s), pe[s] / reps, pp[s] / reps);
    putchar('\n');
    cJSON *row = results ? cJSON_CreateObject() : NULL;
    if (row) {
        cJSON_AddNumberToObject(row, "L", L);
        cJSON_AddNumberToObject(row, "prefix_tokens", P);
        cJSON_AddNumberToObject(row, "tok_s_exact", (double)L * batch / te);
        cJSON_AddNumberToObject(row, "tok_s_prefix", (double)L * batch / tp);
        cJSON_AddNumberToObject(row, "speedup_e2e", te / tp);
        cJSON_AddNumberToObject(row, "amdahl_bound", bound);
        cJSON_AddNumberToObject(row, "tokens_reused", (double)st.tokens_reused);
        cJSON_AddNumberToObject(row, "tokens_computed", (double)st.tokens_computed);
        cJSON_AddItemToArray(results, row);
    }
out:
    free(ids);
    free(seqs);
    free(pooled);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    cli_common c = {0};
    const char *lens = "128,512", *json = NULL;
    int reps = 3, batch = 1, cache_build = 2;
    double shared = -1;
    int64_t prefix_bytes = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-L") && i + 1 < argc) lens = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            if (cli_opt_int("-r", argv[++i], 1, 1000, &reps)) return 1;
        } else if (!strcmp(argv[i], "-b") && i + 1 < argc) {
            if (cli_opt_int("-b", argv[++i], 1, 256, &batch)) return 1;
        } else if (!strcmp(argv[i], "--cache-build") && i + 1 < argc) {
            if (cli_opt_int("--cache-build", argv[++i], 0, 1000, &cache_build)) return 1;
        } else if (!strcmp(argv[i], "--shared-prefix") && i + 1 < argc) {
            if (cli_opt_double("--shared-prefix", argv[++i], 0, 1, &shared)) return 1;
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--gpu")) c.backend = "cuda"; /* the same as --backend cuda */
        else if ((r = cli_prefix_opt(argc, argv, &i, &prefix_bytes))) {
            if (r < 0) return 1;
        }
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache bench -m MODEL [-L 128,512,1024] [-r REPS] [-b BATCH] [--json FILE] [--gpu]\n"
                   "Prefill throughput on random token ids (seed 42): one warm-up run, then REPS timed runs\n"
                   "(default 3); prints tokens/s (best, median) and the per-stage time split.\n"
                   "With --cache DIR: first records --cache-build N (default 2) random inputs of each length\n"
                   "into DIR (created if missing), then times every run exact (fused attention) and with the\n"
                   "cache side by side on other random inputs of the same length, lookup included, and\n"
                   "prints the speedups and the Amdahl bound (speed only: use --threshold 1e9 to force the\n"
                   "nearest entry to serve; accuracy is measured by `attncache eval`).\n"
                   "  --shared-prefix F    the recorded entries start with the first F*L tokens of the\n"
                   "                       first query (for --rows prefix; default 0)\n"
                   "  --prefix-cache MB    causal models: exact vs prefix K/V reuse (a prefix cache of MB MiB)\n"
                   "                       side by side; each query starts with a stored head of F*L tokens\n"
                   "                       (--shared-prefix F, default 0.875) and computes the rest; prints\n"
                   "                       both speeds, the tokens reused/computed and the Amdahl bound\n"
                   "  --gpu                the same as --backend cuda (with --cache: lookups on the CPU, stored\n"
                   "                       rows A.V on the GPU; with --prefix-cache: the prefix tree on the\n"
                   "                       CPU, the cached K/V rows uploaded, only the new rows computed)\n%s%s",
                   cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("bench: unknown option '%s' (see --help)", argv[i]);
    }
    if (prefix_bytes && c.cache) return cli_fail("bench: --prefix-cache runs alone (not with --cache)");
    if (shared < 0) shared = prefix_bytes ? 0.875 : 0;
    c.profile = 1;
    ac_model *m;
    ac_ctx *ctx;
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info info;
    ac_model_get_info(m, &info);
    ac_cache *cache = NULL;
    ac_prefix_cache *pc = NULL;
    if (prefix_bytes) {
        ac_prefix_params pp = ac_prefix_default_params();
        pp.max_bytes = prefix_bytes;
        int prc = !info.causal ? 1 : ac_prefix_cache_new(m, &pp, &pc);
        if (prc) {
            if (!info.causal) cli_fail("bench: --prefix-cache needs a causal model (decoder); %s is bidirectional", info.arch_name);
            else cli_api_fail("prefix cache", prc);
            ac_ctx_free(ctx);
            ac_model_free(m);
            return 1;
        }
    }
    if (c.cache) {
        if (cli_open_cache(&c, m, 1, 1, &cache)) {
            ac_ctx_free(ctx);
            ac_model_free(m);
            return 1;
        }
    }
    FILE *jf = NULL;
    if (json && !(jf = fopen(json, "w"))) { /* opened first: a bad path fails before the runs */
        if (cache) ac_cache_close(cache);
        ac_ctx_free(ctx);
        ac_model_free(m);
        return cli_fail("cannot write '%s': %s", json, strerror(errno));
    }
    printf("model: %s (%s), %d layers, dim %d, %d heads, %d kv heads, ffn %d; batch %d, reps %d\n",
           c.model, info.arch_name, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.n_ff, batch, reps);
    char cpu[128], kern[256];
    ac_cpu_info(cpu, sizeof cpu);
    ac_ctx_describe(ctx, kern, sizeof kern);
    printf("cpu: %s; kernels: %s\n", cpu, kern);
    printf("%6s %10s %10s  %s\n", "L", "tok/s", "tok/s.med", "split (% of time)");
    cJSON *root = jf ? cJSON_CreateObject() : NULL, *results = NULL;
    if (root) {
        cJSON_AddStringToObject(root, "model", c.model);
        cJSON_AddStringToObject(root, "arch", info.arch_name);
        cJSON_AddNumberToObject(root, "batch", batch);
        cJSON_AddStringToObject(root, "cpu", cpu);
        cJSON_AddStringToObject(root, "kernels", kern);
        results = cJSON_AddArrayToObject(root, "results");
    }
    int rc = 0;
    char *lens_dup = strdup(lens);
    uint64_t rng = 42;
    for (char *tok = strtok(lens_dup, ","); tok && !rc; tok = strtok(NULL, ",")) {
        int L;
        if (cli_opt_int("length in -L", tok, 1, 1 << 20, &L)) {
            rc = 1;
            break;
        }
        int32_t *ids = malloc((size_t)L * batch * sizeof *ids);
        ac_seq *seqs = malloc((size_t)batch * sizeof *seqs);
        double *t = malloc((size_t)reps * sizeof *t);
        float *pooled = malloc((size_t)batch * info.n_embd * sizeof *pooled);
        if (!ids || !seqs || !t || !pooled) {
            rc = cli_fail("out of memory");
            goto next;
        }
        for (int k = 0; k < L * batch; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            ids[k] = (int32_t)((rng >> 33) % (uint64_t)info.n_vocab);
        }
        for (int b = 0; b < batch; b++) seqs[b] = (ac_seq){ids + (size_t)b * L, L};
        ac_outputs o = {0};
        o.pooled = pooled;
        o.pooling = AC_POOL_DEFAULT;
        int r = ac_forward(ctx, seqs, batch, &o); /* warm-up */
        if (r != AC_OK) {
            rc = cli_fail("L=%d: %s", L, ac_last_error());
            goto next;
        }
        ac_ctx_reset_profile(ctx);
        for (int k = 0; k < reps && !rc; k++) {
            double t0 = cli_now();
            if (ac_forward(ctx, seqs, batch, &o) != AC_OK) rc = cli_fail("L=%d: %s", L, ac_last_error());
            t[k] = cli_now() - t0;
        }
        if (rc) goto next;
        if (pc) {
            rc = bench_prefix(ctx, pc, &info, batch, L, reps, shared, results);
            goto next;
        }
        if (cache) {
            rc = bench_cached(ctx, cache, &info, seqs, batch, L, reps, cache_build, shared, t[0], results);
            goto next;
        }
        double prof[AC_STAGE_COUNT], tot = 0;
        ac_ctx_get_profile(ctx, prof);
        for (int s = 0; s < AC_STAGE_COUNT; s++) tot += prof[s];
        qsort(t, (size_t)reps, sizeof *t, cmp_d);
        double best = (double)L * batch / t[0], med = (double)L * batch / t[reps / 2];
        printf("%6d %10.1f %10.1f  ", L, best, med);
        for (int s = 0; s < AC_STAGE_COUNT; s++)
            if (prof[s] > 0) printf("%s %.1f  ", ac_stage_name(s), 100.0 * prof[s] / (tot > 0 ? tot : 1));
        putchar('\n');
        cJSON *row = results ? cJSON_CreateObject() : NULL, *stages;
        if (row) {
            cJSON_AddNumberToObject(row, "L", L);
            cJSON_AddNumberToObject(row, "tok_s_best", best);
            cJSON_AddNumberToObject(row, "tok_s_median", med);
            if ((stages = cJSON_AddObjectToObject(row, "stages_s")))
                for (int s = 0; s < AC_STAGE_COUNT; s++) cJSON_AddNumberToObject(stages, ac_stage_name(s), prof[s] / reps);
            cJSON_AddItemToArray(results, row);
        }
    next:
        free(ids);
        free(seqs);
        free(t);
        free(pooled);
    }
    free(lens_dup);
    if (jf) {
        if (cli_json_write(jf, root) && !rc) rc = 1;
        if (cli_close_file(jf, json) && !rc) rc = 1;
    }
    if (cache) {
        cli_cache_warn(cache);
        ac_cache_close(cache);
    }
    ac_prefix_cache_free(pc);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}
