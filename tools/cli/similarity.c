/* similarity.c — `attncache similarity`: the cosine-similarity matrix of the
 * input lines' L2-normalised embeddings, as a table. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Embeds every input line (normalised) and prints the cosine-similarity matrix. */
int cmd_similarity(int argc, char **argv) {
    cli_common c = {0};
    int pooling = AC_POOL_DEFAULT;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--pooling") && i + 1 < argc) {
            if (!cli_parse_pooling(argv[++i], &pooling)) return cli_fail("bad --pooling '%s' (mean|cls|last)", argv[i]);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache similarity -m MODEL [--pooling mean|cls|last] [-f FILE]\n"
                   "Embeds each input line (L2-normalised) and prints the cosine similarity of every pair.\n%s",
                   cli_common_help);
            return 0;
        } else return cli_fail("similarity: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    if (cli_load(&c, &m, &ctx)) return 1;
    cli_lines in = {0};
    float *emb = NULL;
    int rc = cli_attach_cache(&c, m, ctx, &cache);
    if (!rc) rc = cli_read_lines(c.input, &in);
    if (rc) goto out;
    if (in.n == 0) {
        rc = cli_fail("similarity: no input lines");
        goto out;
    }
    for (size_t l = 0; l < in.n; l++)
        if (cli_is_blank(in.lines[l])) {
            rc = cli_fail("line %zu: empty input text", l + 1);
            goto out;
        }
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int d = info.n_embd;
    emb = malloc(in.n * (size_t)d * sizeof *emb);
    if (!emb) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (size_t l = 0; l < in.n; l++) {
        int r = ac_embed_texts(ctx, (const char *const *)in.lines + l, 1, pooling, 1, emb + l * d, NULL);
        if (r != AC_OK) {
            rc = cli_fail("line %zu: %s", l + 1, ac_last_error());
            goto out;
        }
    }
    printf("model: %s (%s, dim %d)\n", c.model, info.arch_name, d);
    for (size_t i = 0; i < in.n; i++) printf("[%zu] %s\n", i + 1, in.lines[i]);
    printf("cosine similarity:\n     ");
    for (size_t j = 0; j < in.n; j++) printf("  [%zu] ", j + 1);
    putchar('\n');
    for (size_t i = 0; i < in.n; i++) {
        printf("[%zu] ", i + 1);
        for (size_t j = 0; j < in.n; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += (double)emb[i * d + k] * emb[j * d + k];
            printf(" %6.3f", s);
        }
        putchar('\n');
    }
out:
    free(emb);
    cli_lines_free(&in);
    cli_detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
}
