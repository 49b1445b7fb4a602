/* embed.c — `attncache embed`: one JSON line {"embedding":[...],"tokens":N} per
 * input line (pooled, optionally L2-normalised), batched through
 * ac_embed_texts_status so a bad line gets its own error (--on-error). */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {"embedding":[...],"tokens":N}: each value with the fewest digits (<= 9)
 * that read back as the same float: the bytes cJSON prints for cli_json_float's
 * nodes (cli_float_text), written straight to one line (building and printing
 * the cJSON tree cost 1/10 of a short text's embedding time). line: [d * 32 + 64]
 * bytes. 0, or 1 out of memory. */
static int print_embedding(const float *e, int d, int ntok, char *line) {
    size_t n = 0;
    memcpy(line, "{\"embedding\":[", 14);
    n = 14;
    for (int k = 0; k < d; k++) {
        if (k) line[n++] = ',';
        const int w = cli_float_text(e[k], line + n);
        if (w < 0) return cli_fail("out of memory writing JSON");
        n += (size_t)w;
    }
    n += (size_t)snprintf(line + n, 48, "],\"tokens\":%d}\n", ntok);
    fwrite(line, 1, n, stdout);
    return 0;
}

int cmd_embed(int argc, char **argv) {
    cli_common c = {0};
    int pooling = AC_POOL_DEFAULT, normalize = 0, batch = 16, skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = cli_on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--normalize")) normalize = 1;
        else if (!strcmp(argv[i], "--pooling") && i + 1 < argc) {
            if (!cli_parse_pooling(argv[++i], &pooling)) return cli_fail("bad --pooling '%s' (mean|cls|last)", argv[i]);
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            if (cli_opt_int("--batch", argv[++i], 1, 4096, &batch)) return 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache embed -m MODEL [--pooling mean|cls|last] [--normalize] [-f FILE]\n"
                   "Prints one JSON line per input line: {\"embedding\":[...],\"tokens\":N}.\n"
                   "  --pooling P          mean|cls|last (default: the model's pooling type)\n"
                   "  --normalize          L2-normalise the embedding\n"
                   "  --batch N            inputs per forward call (default 16)\n%s%s%s",
                   cli_on_error_help, cli_common_help, cli_cache_help);
            return 0;
        } else return cli_fail("embed: unknown option '%s' (see --help)", argv[i]);
    }
    ac_model *m;
    ac_ctx *ctx;
    ac_cache *cache = NULL;
    cli_lines in;
    if (cli_load(&c, &m, &ctx)) return 1;
    if (cli_attach_cache(&c, m, ctx, &cache)) goto fail_model;
    if (cli_read_lines(c.input, &in)) goto fail_model;
    ac_model_info info;
    ac_model_get_info(m, &info);
    const int d = info.n_embd;
    float *emb = malloc((size_t)batch * d * sizeof *emb); /* [batch][d] */
    int *ntok = malloc((size_t)batch * sizeof *ntok);
    ac_status *st = malloc((size_t)batch * sizeof *st);
    const char **texts = malloc((size_t)batch * sizeof *texts); /* the batch's non-blank lines */
    char *line = malloc((size_t)d * 32 + 64);                     /* one output line */
    int rc = (!emb || !ntok || !st || !texts || !line) ? cli_fail("out of memory") : 0;
    size_t n_failed = 0;
    for (size_t l0 = 0; l0 < in.n && !rc && !cli_stdout_failed(); l0 += (size_t)batch) {
        int nb = (int)AC_CLI_MIN((size_t)batch, in.n - l0), nt = 0;
        for (int k = 0; k < nb; k++)
            if (!cli_is_blank(in.lines[l0 + k])) texts[nt++] = in.lines[l0 + k];
        /* one call per batch; a bad line gets its own status (no retry line by line) */
        int r = ac_embed_texts_status(ctx, texts, nt, pooling, normalize, emb, ntok, st);
        if (r != AC_OK) {
            rc = cli_fail("embedding failed: %s", ac_last_error());
            break;
        }
        for (int k = 0, j = 0; k < nb && !rc; k++) {
            if (cli_is_blank(in.lines[l0 + k])) {
                rc = cli_line_error(skip, l0 + k + 1, "empty input text", &n_failed);
                continue;
            }
            if (st[j].code == AC_OK) rc = print_embedding(emb + (size_t)j * d, d, ntok[j], line);
            else rc = cli_line_error(skip, l0 + k + 1, st[j].message, &n_failed);
            j++;
        }
    }
    cli_failed_summary("embed", n_failed, in.n);
    free(st);
    free(line);
    free(texts);
    free(emb);
    free(ntok);
    cli_lines_free(&in);
    cli_detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return rc;
fail_model:
    cli_detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
    return 1;
}
