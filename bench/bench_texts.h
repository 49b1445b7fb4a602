/* bench_texts.h — the benches' text loader: one text per line of a file, tokenized with the
 * model's tokenizer (BOS/CLS added), lines that are empty or do not fit max_t tokens skipped,
 * each kept sequence cut at `limit` tokens (0: no cut). Header-only (static): shared by
 * bench_lookup_all.c and gpu_stream.c. */
#ifndef AC_BENCH_TEXTS_H
#define AC_BENCH_TEXTS_H

#include "attncache.h"
#include "util/common.h" /* ac_err_clear */

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

/* *out [return value] (malloc'ed, each tokens array malloc'ed; the caller frees them) and the
 * token total in *tokens; at most max_n texts. Returns the count, or -1 when the file cannot be
 * read (message on stderr, prefixed by `who`). */
static int bench_load_texts(const ac_model *m, const char *who, const char *path, int max_n, int max_t, int limit,
                            ac_seq **out, long long *tokens) {
    FILE *f = fopen(path, "r");
    *out = NULL, *tokens = 0;
    if (!f) {
        fprintf(stderr, "%s: cannot read %s\n", who, path);
        return -1;
    }
    ac_seq *seqs = calloc((size_t)max_n, sizeof *seqs);
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (seqs && n < max_n && (len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        int32_t *ids = malloc((size_t)max_t * sizeof *ids);
        int nt = 0;
        if (!ids || ac_tokenize(m, line, (size_t)len, 1, ids, max_t, &nt) != AC_OK || nt < 1) {
            free(ids); /* a line that does not fit: skipped */
            ac_err_clear();
            continue;
        }
        if (limit > 0 && nt > limit) nt = limit;
        int32_t *fit = realloc(ids, (size_t)nt * sizeof *ids); /* a long max_t must not cost max_t a text */
        if (fit) ids = fit;
        seqs[n].tokens = ids, seqs[n].n_tokens = nt;
        *tokens += nt;
        n++;
    }
    free(line);
    fclose(f);
    *out = seqs;
    return seqs ? n : -1;
}

#endif
