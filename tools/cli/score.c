/* score.c — `attncache score`: prompt-based classification. Each input line goes
 * into the template; every label is scored by the log-probability of its tokens
 * as the prompt's continuation; one JSON line per input line. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Split "a,b,c" into a malloc'd array of strdup'd labels. */
static int split_labels(const char *s, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    char **v = calloc((size_t)cap, sizeof *v);
    if (!v) return 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        v[*n] = strndup(p, len);
        if (!v[*n]) return 0;
        if (len == 0 || cli_is_blank(v[*n])) {
            for (int i = 0; i <= *n; i++) free(v[i]);
            free(v);
            return 0;
        }
        (*n)++;
        if (!e) break;
        p = e + 1;
    }
    *out = v;
    return 1;
}

/* template with {text} replaced (first occurrence); malloc'd */
static char *apply_template(const char *tpl, const char *text) {
    const char *at = strstr(tpl, "{text}");
    if (!at) return strdup(text);
    size_t a = (size_t)(at - tpl), lt = strlen(text), rest = strlen(at + 6);
    char *s = malloc(a + lt + rest + 1);
    if (!s) return NULL;
    memcpy(s, tpl, a);
    memcpy(s + a, text, lt);
    memcpy(s + a + lt, at + 6, rest + 1);
    return s;
}

int cmd_score(int argc, char **argv) {
    cli_common c = {0};
    const char *labels_arg = NULL, *tpl = "{text}";
    int skip = 0;
    for (int i = 0; i < argc; i++) {
        int r = cli_common_opt(&c, argc, argv, &i);
        if (!r) r = cli_on_error_opt(argc, argv, &i, &skip);
        if (r < 0) return 1;
        if (r) continue;
        if (!strcmp(argv[i], "--labels") && i + 1 < argc) labels_arg = argv[++i];
        else if (!strcmp(argv[i], "--template") && i + 1 < argc) tpl = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attncache score -m MODEL --labels \"a,b,...\" [--template \"...{text}...\"] [-f FILE]\n"
                   "Prompt-based classification: for each input line, the prompt is the template with\n"
                   "{text} replaced by the line; each label is scored by the log-probability of its tokens\n"
                   "as a continuation of the prompt (a space is put between prompt and label unless the\n"
                   "prompt ends in whitespace). Prints JSON lines:\n"
                   "  {\"logprobs\":{\"a\":-1.2,...},\"label\":\"a\",\"tokens\":N}\n"
                   "  --template T         the prompt, with {text} where each line goes (default \"{text}\")\n%s%s",
                   cli_on_error_help, cli_common_help);
            return 0;
        } else return cli_fail("score: unknown option '%s' (see --help)", argv[i]);
    }
    if (!labels_arg) return cli_fail("score: --labels \"a,b,...\" is required");
    if (!strstr(tpl, "{text}"))
        return cli_fail("score: bad --template '%s': it has no {text} (the place each input line goes)", tpl);
    char **labels;
    int nl;
    if (!split_labels(labels_arg, &labels, &nl) || nl < 1)
        return cli_fail("score: bad --labels '%s' (comma-separated, none empty)", labels_arg);
    ac_model *m;
    ac_ctx *ctx;
    int rc = 1;
    cli_lines in = {0};
    double *lp = calloc((size_t)nl, sizeof *lp);
    char **cont = calloc((size_t)nl, sizeof *cont);
    if (!lp || !cont) goto out_labels;
    ac_cache *cache = NULL;
    if (cli_load(&c, &m, &ctx)) goto out_labels;
    if (cli_attach_cache(&c, m, ctx, &cache)) goto out;
    if (cli_read_lines(c.input, &in)) goto out;
    rc = 0;
    size_t n_failed = 0;
    for (size_t l = 0; l < in.n && !rc && !cli_stdout_failed(); l++) {
        if (cli_is_blank(in.lines[l])) {
            rc = cli_line_error(skip, l + 1, "empty input text", &n_failed);
            continue;
        }
        char *prompt = apply_template(tpl, in.lines[l]);
        if (!prompt) {
            rc = cli_fail("out of memory");
            break;
        }
        size_t plen = strlen(prompt);
        int need_space = plen > 0 && !isspace((unsigned char)prompt[plen - 1]);
        for (int k = 0; k < nl; k++) {
            free(cont[k]);
            if (asprintf(&cont[k], "%s%s", need_space ? " " : "", labels[k]) < 0) cont[k] = NULL;
        }
        int r = ac_score_labels(ctx, prompt, (const char *const *)cont, nl, lp);
        if (r != AC_OK) {
            free(prompt);
            if (r == AC_ERR_INPUT) rc = cli_line_error(skip, l + 1, ac_last_error(), &n_failed); /* this line's problem */
            else rc = cli_fail("line %zu: %s", l + 1, ac_last_error());
            continue;
        }
        int ntok = 0;
        ac_tokenize(m, prompt, plen, 1, NULL, 0, &ntok); /* the count only (AC_ERR_RANGE expected) */
        free(prompt);
        int best = 0;
        cJSON *o = cJSON_CreateObject(), *lo = o ? cJSON_AddObjectToObject(o, "logprobs") : NULL;
        for (int k = 0; k < nl; k++) {
            if (lo) cJSON_AddNumberToObject(lo, labels[k], lp[k]);
            if (lp[k] > lp[best]) best = k;
        }
        if (o) {
            cJSON_AddStringToObject(o, "label", labels[best]);
            cJSON_AddNumberToObject(o, "tokens", ntok);
        }
        rc = cli_json_write(stdout, lo ? o : (cJSON_Delete(o), NULL));
    }
    cli_failed_summary("score", n_failed, in.n);
out:
    cli_lines_free(&in);
    cli_detach_cache(ctx, cache);
    ac_ctx_free(ctx);
    ac_model_free(m);
out_labels:
    for (int k = 0; k < nl; k++) {
        free(labels[k]);
        if (cont) free(cont[k]);
    }
    free(labels);
    free(cont);
    free(lp);
    return rc;
}
