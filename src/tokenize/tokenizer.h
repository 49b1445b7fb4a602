/* tokenizer.h — tokenizers from GGUF metadata (tokenizer.ggml.*), matching
 * llama.cpp id for id: `llama` (SentencePiece: merges by score, byte fallback),
 * `gpt2` (byte-level BPE by merge rank; pre-tokenizer from tokenizer.ggml.pre),
 * `bert` (WordPiece; word starts stored with a U+2581 prefix by llama.cpp's
 * converter). */
#ifndef AC_TOKENIZER_H
#define AC_TOKENIZER_H

#include "../load/gguf.h"
#include <stddef.h>
#include <stdint.h>

typedef struct ac_vocab ac_vocab;

enum ac_vocab_type { AC_VOCAB_SPM = 1, AC_VOCAB_BPE = 2, AC_VOCAB_WPM = 3 };

/* Build from metadata. Token strings may point into g's mapping, so g must
 * outlive the vocab. Caller owns *out (ac_vocab_free). */
int ac_vocab_load(const ac_gguf_file *g, ac_vocab **out);
void ac_vocab_free(ac_vocab *v);

int ac_vocab_type(const ac_vocab *v);
int ac_vocab_n_tokens(const ac_vocab *v);
int32_t ac_vocab_bos(const ac_vocab *v); /* -1 if none */
int32_t ac_vocab_eos(const ac_vocab *v);
int32_t ac_vocab_cls(const ac_vocab *v); /* BERT: CLS (== bos in llama.cpp's bert vocab) */
int32_t ac_vocab_sep(const ac_vocab *v);
int32_t ac_vocab_pad(const ac_vocab *v);
int32_t ac_vocab_unk(const ac_vocab *v);
/* Whether add_special adds BOS (CLS for BERT) / EOS, as the metadata says. */
int ac_vocab_add_bos(const ac_vocab *v);
int ac_vocab_add_eos(const ac_vocab *v);
/* tokenizer.ggml.pre as read ("" if absent or not BPE). Unknown values use
 * llama.cpp's default BPE pre-tokenizer. Borrowed. */
const char *ac_vocab_pre(const ac_vocab *v);

/* Tokenize len bytes of UTF-8. add_special: BOS/EOS (or CLS/SEP) as the
 * metadata says (tokenizer.ggml.add_bos_token / add_eos_token, defaults per
 * type as llama.cpp). Invalid UTF-8 bytes are replaced by U+FFFD before
 * tokenizing. Writes min(cap, n) ids; *n_out = n. Returns AC_ERR_RANGE if
 * cap < n. parse_special is off: special-token text in the input is plain text. */
int ac_vocab_tokenize(const ac_vocab *v, const char *text, size_t len, int add_special,
                      int32_t *ids, int cap, int *n_out);

/* A memo of BPE words for a group of related texts (tok_memo.c): ac_vocab_tokenize_memo with
 * the same memo runs the merges of a word once, so tokenizing texts that share most of their
 * words (a prompt, then the prompt + each label) costs about one tokenization. The ids are
 * those of ac_vocab_tokenize (a word's merges depend on the word alone). Bound to the first
 * vocab it serves (another vocab's calls run without it); one thread at a time. Owned by the
 * caller: ac_tok_memo_free. */
typedef struct ac_tok_memo ac_tok_memo;
int ac_tok_memo_new(ac_tok_memo **out);
void ac_tok_memo_free(ac_tok_memo *m);
/* ac_vocab_tokenize with a memo (NULL: none); other vocab types than BPE ignore it. */
int ac_vocab_tokenize_memo(const ac_vocab *v, ac_tok_memo *memo, const char *text, size_t len, int add_special,
                           int32_t *ids, int cap, int *n_out);

/* The text of a token as it would appear in output (SPM '▁' -> ' ', byte
 * tokens <0xNN> -> the byte, byte-level BPE unicode -> bytes; WPM '▁' -> ' ',
 * continuation pieces as stored, i.e. without "##"), as llama.cpp's
 * llama_token_to_piece(special = true): control/unknown/user-defined tokens
 * give their raw text, unused/undefined ones nothing. *n_out = bytes. Writes
 * min(cap, n) bytes (no NUL); AC_ERR_RANGE if cap < n. */
int ac_vocab_piece(const ac_vocab *v, int32_t id, char *buf, int cap, int *n_out);

/* Text of a token sequence as llama.cpp's llama_detokenize(): pieces joined,
 * the space the SPM tokenizer prefixed removed from the first piece,
 * remove_special drops a leading BOS / trailing EOS that add_special would
 * add, unparse_special renders control/unknown tokens (else they vanish),
 * and vocabs with clean_spaces (gpt-2 style BPE, BERT) get llama.cpp's
 * " ," / " 's" clean-up. Writes min(cap, n) bytes (no NUL); *n_out = n;
 * AC_ERR_RANGE if cap < n. */
int ac_vocab_detokenize(const ac_vocab *v, const int32_t *ids, int n, int remove_special, int unparse_special,
                        char *buf, int cap, int *n_out);

/* Raw token string as stored in the vocab (borrowed). */
ac_gguf_str ac_vocab_token_text(const ac_vocab *v, int32_t id);

#endif
