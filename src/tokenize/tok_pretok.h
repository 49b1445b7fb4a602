/* tok_pretok.h — BPE pre-tokenizer: split text into words with a sequence of
 * regexes, reproducing llama.cpp's unicode_regex_split() output:
 *
 *  - the GPT-2 and Llama-3 regexes run as hand-written matchers (llama.cpp
 *    does the same, and its versions differ from a true regex engine in
 *    corner cases, so we follow them);
 *  - a regex that uses \p{..} categories runs on a "collapsed" text where
 *    every non-ASCII code point is one byte naming its category (and \p{X}
 *    becomes a class of that byte plus the ASCII members), matched by PCRE2
 *    in byte mode (JIT) — this is how llama.cpp defines what \s, \p{L}, ...
 *    match, including for non-ASCII whitespace and unassigned code points;
 *  - any other regex runs on the code points by PCRE2 in UTF mode (JIT),
 *    with non-ASCII whitespace turned into U+000B (as llama.cpp's wregex
 *    path does).
 * Each regex re-splits every piece left by the previous one; text between
 * matches becomes a piece of its own.
 */
#ifndef AC_TOK_PRETOK_H
#define AC_TOK_PRETOK_H

#include <stddef.h>
#include <stdint.h>

#define TOK_MAX_REGEX 8

enum { TOK_RE_GPT2 = 1, TOK_RE_LLAMA3 = 2, TOK_RE_COLLAPSED = 3, TOK_RE_UTF = 4, TOK_RE_UCP = 5 };

typedef struct tok_regex {
    int kind;   /* TOK_RE_* */
    void *code; /* pcre2_code_8 * for COLLAPSED / UTF */
} tok_regex;

typedef struct tok_pretok {
    int n;
    tok_regex re[TOK_MAX_REGEX];
} tok_pretok;

/* Compile the regexes (llama.cpp's strings). Returns AC_OK or AC_ERR_*. */
int tok_pretok_compile(tok_pretok *p, const char *const *exprs, int n);
void tok_pretok_free(tok_pretok *p);

/* Split cpts[0..n) into pieces; *lens (malloc'd, caller frees) gets the
 * length of each piece in code points, *n_pieces their count. Thread-safe
 * on a shared p. Returns AC_OK or AC_ERR_NOMEM / AC_ERR_INTERNAL. */
int tok_pretok_split(const tok_pretok *p, const uint32_t *cpts, size_t n, uint32_t **lens,
                     size_t *n_pieces);

/* Tests: compile the regexes as plain PCRE2 UTF + UCP patterns on the real
 * text (a true regex engine), the reference the matchers above must equal
 * on text where llama.cpp's engine and real regex semantics agree. */
int tok_pretok_compile_reference(tok_pretok *p, const char *const *exprs, int n);

/* Exposed for tests: the collapsed form of a regex (caller frees), NULL if
 * the regex uses no category. */
char *tok_regex_collapse(const char *expr);

#endif
