/* tokenize.c — `attncache tokenize`: the token ids of each input line, one line of
 * space-separated ids per input line (--special: with BOS/EOS/CLS/SEP). Needs only
 * the tokenizer: vocab-only GGUFs work too. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_tokenize(int argc, char **argv) {
    cli_common c = {0};
    int special = 0, skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = cli_on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--special")) special = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache tokenize -m MODEL [--special] [-f FILE]\n"
                   "Prints one line per input line: the token ids separated by single spaces.\n"
                   "  --special            add BOS/EOS/CLS/SEP as the model's metadata says\n%s%s",
                   cli_on_error_help, cli_common_help);
            return 0;
        } else return cli_fail("tokenize: unknown option '%s' (see --help)", argv[i]);
    }
    c.vocab_only = 1; /* the tokenizer is all this needs: vocab-only GGUFs work too */
    ac_model *m;
    if (cli_load(&c, &m, NULL)) return 1;
    cli_lines in;
    if (cli_read_lines(c.input, &in)) {
        ac_model_free(m);
        return 1;
    }
    int rc = 0, cap = 1024;
    size_t n_failed = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    for (size_t l = 0; l < in.n && !rc && !cli_stdout_failed(); l++) {
        int n = 0, r = ids ? ac_tokenize(m, in.lines[l], strlen(in.lines[l]), special, ids, cap, &n) : AC_ERR_NOMEM;
        if (r == AC_ERR_RANGE) {
            cap = n;
            free(ids);
            ids = malloc((size_t)cap * sizeof *ids);
            r = ids ? ac_tokenize(m, in.lines[l], strlen(in.lines[l]), special, ids, cap, &n) : AC_ERR_NOMEM;
        }
        if (r == AC_ERR_INPUT) { /* this line's problem */
            rc = cli_line_error(skip, l + 1, ac_last_error(), &n_failed);
            continue;
        }
        if (r != AC_OK) {
            rc = cli_fail("line %zu: %s", l + 1, r == AC_ERR_NOMEM ? "out of memory" : ac_last_error());
            break;
        }
        for (int k = 0; k < n; k++) printf(k ? " %d" : "%d", ids[k]);
        putchar('\n');
    }
    cli_failed_summary("tokenize", n_failed, in.n);
    free(ids);
    cli_lines_free(&in);
    ac_model_free(m);
    return rc;
}
