/* tok_internal.h — test hooks of the tokenizer (not part of the interface).
 * Each switch replaces a fast path by the plain reference it must equal. */
#ifndef AC_TOK_INTERNAL_H
#define AC_TOK_INTERNAL_H

#include "tokenizer.h"

enum {
    TOK_DBG_SPM_NO_SEGMENT = 1, /* SPM: merge the whole text in one queue (no pair-set cuts) */
    TOK_DBG_REF_PARTITION = 2,  /* user-defined tokens: one memmem pass per token (llama.cpp's loop) */
};

void tok_debug_set(ac_vocab *v, int flags);

/* The BPE pre-tokenizer table: number of entries, the '|'-separated
 * tokenizer.ggml.pre names of entry k, and its regexes (returns count). */
int tok_pre_count(void);
const char *tok_pre_names(int k);
int tok_pre_regexes(int k, const char *const **rx);

#endif
