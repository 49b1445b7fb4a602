/* attncache bench — prefill throughput and where the time goes.
 * Random token ids (fixed seed) of each length L; warm-up run, then REPS runs;
 * prints tokens/s (best and median) and the per-stage split. */
#define _GNU_SOURCE
#include "attncache.h"
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv) {
    cli_common c = {0};
    const char *lens = "128,512", *json = NULL;
    int reps = 3, batch = 1;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "-L") && i + 1 < argc) lens = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 1, 1000, &reps)) return cli_fail("bad -r '%s'", argv[i]);
        } else if (!strcmp(argv[i], "-b") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 1, 256, &batch)) return cli_fail("bad -b '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache bench -m MODEL [-L 128,512,1024] [-r REPS] [-b BATCH] [--json FILE]\n"
                   "Prefill throughput on random token ids (seed 42): one warm-up run, then REPS timed runs\n"
                   "(default 3); prints tokens/s (best, median) and the per-stage time split.\n%s",
                   cli_common_help);
            return 0;
        } else return cli_fail("bench: unknown option '%s' (see --help)", argv[i]);
    }
    c.profile = 1;
    ac_model *m;
    ac_ctx *ctx;
    if (cli_load(&c, &m, &ctx)) return 1;
    ac_model_info info;
    ac_model_get_info(m, &info);
    FILE *jf = NULL;
    if (json && !(jf = fopen(json, "w"))) {
        ac_ctx_free(ctx);
        ac_model_free(m);
        return cli_fail("cannot write '%s'", json);
    }
    printf("model: %s (%s), %d layers, dim %d, %d heads, %d kv heads, ffn %d; batch %d, reps %d\n",
           c.model, info.arch_name, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.n_ff, batch, reps);
    printf("%6s %10s %10s  %s\n", "L", "tok/s", "tok/s.med", "split (% of time)");
    if (jf) fprintf(jf, "{\"model\":\"%s\",\"arch\":\"%s\",\"batch\":%d,\"results\":[", c.model, info.arch_name, batch);
    int rc = 0, first = 1;
    char *lens_dup = strdup(lens);
    uint64_t rng = 42;
    for (char *tok = strtok(lens_dup, ","); tok && !rc; tok = strtok(NULL, ",")) {
        int L;
        if (!cli_parse_int(tok, 1, 1 << 20, &L)) {
            rc = cli_fail("bad length '%s' in -L", tok);
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
            double t0 = now_s();
            if (ac_forward(ctx, seqs, batch, &o) != AC_OK) rc = cli_fail("L=%d: %s", L, ac_last_error());
            t[k] = now_s() - t0;
        }
        if (rc) goto next;
        double prof[AC_STAGE_COUNT], tot = 0;
        ac_ctx_get_profile(ctx, prof);
        for (int s = 0; s < AC_STAGE_COUNT; s++) tot += prof[s];
        qsort(t, (size_t)reps, sizeof *t, cmp_d);
        double best = (double)L * batch / t[0], med = (double)L * batch / t[reps / 2];
        printf("%6d %10.1f %10.1f  ", L, best, med);
        for (int s = 0; s < AC_STAGE_COUNT; s++)
            if (prof[s] > 0) printf("%s %.1f  ", ac_stage_name(s), 100.0 * prof[s] / (tot > 0 ? tot : 1));
        putchar('\n');
        if (jf) {
            fprintf(jf, "%s{\"L\":%d,\"tok_s_best\":%.3f,\"tok_s_median\":%.3f,\"stages_s\":{", first ? "" : ",", L,
                    best, med);
            for (int s = 0; s < AC_STAGE_COUNT; s++)
                fprintf(jf, "%s\"%s\":%.6f", s ? "," : "", ac_stage_name(s), prof[s] / reps);
            fputs("}}", jf);
            first = 0;
        }
    next:
        free(ids);
        free(seqs);
        free(t);
        free(pooled);
    }
    free(lens_dup);
    if (jf) {
        fputs("]}\n", jf);
        fclose(jf);
    }
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}
