/* tok_memo.h — a memo of byte-level BPE words (tok_memo.c): word bytes -> the
 * ids bpe_word gives them. BPE merges act within one pre-tokenizer word, so a
 * word's ids are a function of the word (and the vocab) alone; texts that share
 * most of their words (a prompt and the prompt + each label of ac_score_labels)
 * then run the merges once per distinct word. Bounded (AC_TOK_MEMO_MAX_BYTES):
 * past it, words are computed and no longer stored. One thread at a time. */
#ifndef AC_TOK_MEMO_H
#define AC_TOK_MEMO_H

#include <stddef.h>
#include <stdint.h>

#define AC_TOK_MEMO_MAX_BYTES ((size_t)8 << 20)

typedef struct ac_tok_memo ac_tok_memo;

/* 1 if m may serve vocab's words (it is bound to the first vocab it serves), else 0. */
int tok_memo_bind(ac_tok_memo *m, const void *vocab);
/* ids [*n] of word w [len] if stored (borrowed, valid until the next put), else NULL. */
const int32_t *tok_memo_get(const ac_tok_memo *m, const char *w, size_t len, int *n);
/* Store ids [n] for w [len]; quietly nothing when full or out of memory (the memo is an
 * optimisation: the caller's result is unaffected). */
void tok_memo_put(ac_tok_memo *m, const char *w, size_t len, const int32_t *ids, int n);

#endif
