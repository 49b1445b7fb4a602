/* tokenizer.c — SPM / byte-level BPE / WordPiece tokenizers built from GGUF
 * metadata, reproducing llama.cpp's llama_tokenize() (parse_special = false)
 * and token_to_piece() id for id. See tokenizer.h.
 *
 * Reference behaviour (llama.cpp src/llama-vocab.cpp):
 *  - text is first split around USER_DEFINED tokens (CONTROL and UNKNOWN
 *    tokens are not looked for because parse_special is off), longest first;
 *  - SPM: ' ' -> U+2581 with a leading space on the first text fragment,
 *    symbols = UTF-8 characters, repeatedly merge the adjacent pair whose
 *    concatenation is the highest-scoring token (ties: leftmost), then
 *    characters that are no token become <0xNN> byte tokens;
 *  - BPE: pre-tokenizer regexes (tok_pretok.c), GPT-2 byte->unicode mapping,
 *    repeatedly merge the adjacent pair of lowest merge rank (ties: leftmost);
 *  - WPM: BERT-style normalisation, then greedy longest match of
 *    "\u2581word" over the vocab, [UNK] for a word that does not fully match.
 * Invalid UTF-8 is replaced by U+FFFD first (tu_sanitize_utf8).
 */
#define _GNU_SOURCE /* memmem */
#include "tokenizer.h"
#include "tok_internal.h"
#include "tok_memo.h"
#include "tok_pretok.h"
#include "tok_unicode.h"
#include "util/common.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* token attributes (llama_token_attr) */
enum {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
};

/* merge "left right" of rank = index in tokenizer.ggml.merges */
typedef struct merge {
    const char *l, *r;
    uint32_t ll, rl;
} merge;

struct ac_vocab {
    int type; /* enum ac_vocab_type */
    int n_tokens;
    const ac_gguf_str *text; /* [n_tokens] borrowed from the gguf file */
    float *score;         /* [n_tokens] */
    uint16_t *attr;       /* [n_tokens] ATTR_* */
    int32_t *ht;          /* token text -> id, open addressing, -1 empty */
    uint64_t ht_mask;
    int max_token_len;

    int32_t bos, eos, unk, sep, pad, mask;
    int add_bos, add_eos, add_sep, add_space_prefix, clean_spaces, ignore_merges;
    int lowercase, strip_accents;

    /* BPE */
    merge *merges;  /* [n_merges] */
    int32_t *mh;    /* (left, right) -> rank, -1 empty */
    uint64_t mh_mask;
    int n_merges;
    tok_pretok pre;
    char pre_name[48];

    /* SPM: set of adjacent character pairs occurring inside some token. A
     * text position between two characters whose pair is not in the set can
     * never be inside a merged symbol, so the text is merged in independent
     * segments there (same result as one pass, much smaller queues). */
    uint64_t *pairs; /* keys (c1 << 21 | c2) + 1, 0 empty */
    uint64_t pairs_mask;

    int32_t *udt; /* USER_DEFINED tokens, longest first (partition targets) */
    int n_udt;
    /* byte trie of the udt texts: node 0 is the root; edge (node, byte) ->
     * child in an open-addressing table; term[node] = udt rank + 1 or 0 */
    uint64_t *tr_keys; /* (node << 8 | byte) + 1, 0 empty */
    int32_t *tr_child;
    uint64_t tr_mask;
    int32_t *tr_term;
    int tr_nodes;
    uint8_t tr_first[256]; /* bytes that start some udt */

    int dbg; /* TOK_DBG_* */

    char byte_enc[256][3]; /* GPT-2 byte -> UTF-8 of its code point, NUL-terminated */
};

/* ---- hashing ---------------------------------------------------------------- */

#define FNV_OFF 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv_add(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * FNV_PRIME;
    return h;
}

static inline uint64_t hmix(uint64_t h) { /* spread FNV's low bits */
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

/* id of the token whose text is s[0..n) given its FNV hash, or -1 */
static inline int32_t lookup_h(const ac_vocab *v, const char *s, size_t n, uint64_t h) {
    for (uint64_t i = hmix(h) & v->ht_mask;; i = (i + 1) & v->ht_mask) {
        int32_t id = v->ht[i];
        if (id < 0) return -1;
        const ac_gguf_str *t = &v->text[id];
        if (t->len == n && !memcmp(t->ptr, s, n)) return id;
    }
}

static inline int32_t lookup(const ac_vocab *v, const char *s, size_t n) {
    return lookup_h(v, s, n, fnv_add(FNV_OFF, s, n));
}

static inline uint64_t merge_hash(const char *l, size_t ll, const char *r, size_t rl) {
    uint64_t h = fnv_add(FNV_OFF, l, ll);
    h = (h ^ 0xFFu) * FNV_PRIME; /* 0xFF never occurs in UTF-8 */
    return fnv_add(h, r, rl);
}

static int32_t merge_rank(const ac_vocab *v, const char *l, size_t ll, const char *r, size_t rl) {
    if (!v->mh) return -1;
    for (uint64_t i = hmix(merge_hash(l, ll, r, rl)) & v->mh_mask;; i = (i + 1) & v->mh_mask) {
        int32_t k = v->mh[i];
        if (k < 0) return -1;
        const merge *m = &v->merges[k];
        if (m->ll == ll && m->rl == rl && !memcmp(m->l, l, ll) && !memcmp(m->r, r, rl)) return k;
    }
}

static uint64_t table_size(uint64_t n) {
    uint64_t s = 16;
    while (s < 2 * n) s <<= 1;
    return s;
}

/* one character at s[0..len): code point as tu_decode reads it, byte length in *l */
static inline uint32_t char_at(const char *s, size_t len, size_t *l) {
    uint32_t c;
    size_t k = tu_len_utf8((unsigned char)s[0]);
    if (k > len) k = len;
    tu_decode(s, k, &c, NULL);
    *l = k;
    return c;
}

static inline uint64_t pair_key(uint32_t a, uint32_t b) { return (((uint64_t)a << 21) | b) + 1; }

static int pair_known(const ac_vocab *v, uint64_t k) {
    for (uint64_t i = hmix(k) & v->pairs_mask;; i = (i + 1) & v->pairs_mask) {
        if (v->pairs[i] == k) return 1;
        if (v->pairs[i] == 0) return 0;
    }
}

static int build_pairs(ac_vocab *v) {
    uint64_t count = 0;
    for (int i = 0; i < v->n_tokens; i++) count += v->text[i].len; /* >= number of pairs */
    uint64_t sz = table_size(count);
    v->pairs = AC_CALLOC(sz, sizeof *v->pairs);
    if (!v->pairs) return AC_ERR_NOMEM;
    v->pairs_mask = sz - 1;
    for (int i = 0; i < v->n_tokens; i++) {
        const char *t = v->text[i].ptr;
        size_t len = v->text[i].len, o = 0, l;
        if (len == 0) continue;
        uint32_t prev = char_at(t, len, &l);
        for (o = l; o < len; o += l) {
            uint32_t c = char_at(t + o, len - o, &l);
            uint64_t k = pair_key(prev, c);
            for (uint64_t j = hmix(k) & v->pairs_mask;; j = (j + 1) & v->pairs_mask) {
                if (v->pairs[j] == k) break;
                if (v->pairs[j] == 0) {
                    v->pairs[j] = k;
                    break;
                }
            }
            prev = c;
        }
    }
    return AC_OK;
}

/* ---- output vector ---------------------------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} ivec;

static int ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) return 0;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return 1;
}

/* growable scratch array */
static int grow(void **p, size_t *cap, size_t need, size_t esz) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * esz);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

/* ---- pre-tokenizer table (BPE) ---------------------------------------------- */

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RX_LLAMA3                                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                               \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_CJK_HAN_HANGUL "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"

typedef struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *rx[TOK_MAX_REGEX];
    int clean_spaces, ignore_merges, add_bos, no_bos;
} pre_def;

/* regex strings as in llama.cpp's llm_tokenizer_bpe (which takes most of them
 * from the models' tokenizer.json) */
static const pre_def PRE_DEFS[] = {
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, 1, 0, 0, 0},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2|jina-v5-nano", {RX_LLAMA3}, 1, 1, 1, 0},
    {"dbrx|smaug-bpe", {RX_LLAMA3}, 1, 0, 0, 0},
    {"deepseek-llm",
     {"[\r\n]",
      "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-"
      "\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481"
      "\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B"
      "\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B"
      "\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB"
      "\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128"
      "\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4"
      "\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF"
      "\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3"
      "\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF"
      "\U0001E900-\U0001E943]+",
      "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", "\\s+$", RX_CJK_HAN_HANGUL,
      "\\p{N}+"},
     0, 0, 0, 0},
    {"deepseek-coder", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RX_CJK_HAN_HANGUL, "\\p{N}"}, 0, 0, 0, 0},
    {"deepseek-v3|hunyuan-dense|joyai-llm|hy_v4",
     {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0, 0},
    {"falcon",
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2 "", "[0-9][0-9][0-9]"}, 1, 0, 0, 0},
    {"starcoder|refact|codeshell|exaone|minerva-7b|mellum2", {"\\p{N}", RX_GPT2}, 1, 0, 0, 0},
    {"command-r|smollm", {"\\p{N}", RX_GPT2}, 0, 0, 0, 0},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|modern-bert|mpt|olmo|jais|"
     "exaone4|jina-v1-en|jina-v2-code|roberta-bpe",
     {RX_GPT2}, 1, 0, 0, 0},
    {"trillion|granite-docling", {RX_GPT2}, 0, 0, 0, 0},
    {"qwen2|deepseek-r1-qwen|kormo|f2llmv2|hunyuan|solar-open", {RX_QWEN2}, 0, 0, 0, 0},
    {"stablelm2|megrez", {RX_QWEN2}, 1, 0, 0, 0},
    {"qwen35",
     {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
      "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0, 0},
    {"poro-chat", {" ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"}, 0, 0, 0, 0},
    {"bloom|gpt3-finnish", {" ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"}, 1, 0, 0, 0},
    {"glm4|chatglm-bpe", {RX_LLAMA3}, 1, 0, 0, 1},
    {"seed-coder",
     {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| "
      "?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0, 0},
    {"grok-2", {RX_QWEN2}, 0, 0, 0, 0},
};
#define N_PRE_DEFS (sizeof PRE_DEFS / sizeof PRE_DEFS[0])

int tok_pre_count(void) { return (int)N_PRE_DEFS; }
const char *tok_pre_names(int k) { return k >= 0 && k < (int)N_PRE_DEFS ? PRE_DEFS[k].names : ""; }
int tok_pre_regexes(int k, const char *const **rx) {
    if (k < 0 || k >= (int)N_PRE_DEFS) return 0;
    int n = 0;
    while (n < TOK_MAX_REGEX && PRE_DEFS[k].rx[n]) n++;
    *rx = PRE_DEFS[k].rx;
    return n;
}

static const pre_def *find_pre(ac_gguf_str name) {
    if (!name.ptr || name.len == 0) return &PRE_DEFS[0];
    for (size_t k = 0; k < N_PRE_DEFS; k++) {
        const char *p = PRE_DEFS[k].names;
        while (*p) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == name.len && !memcmp(p, name.ptr, l)) return &PRE_DEFS[k];
            p += l + (e ? 1 : 0);
        }
    }
    return &PRE_DEFS[0]; /* unknown pre-tokenizer: llama.cpp's default regexes */
}

/* ---- load ------------------------------------------------------------------- */

static int gstr_eq(ac_gguf_str s, const char *c) { return s.ptr && s.len == strlen(c) && !memcmp(s.ptr, c, s.len); }

/* Token texts llama.cpp marks CONTROL whatever the file says (EOT/EOM/EOG and
 * FIM detection by text in llama_vocab::impl::load). */
static const char *const CONTROL_NAMES[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "[EOT]", "[EOS]", "<\uFF5Cend\u2581of\u2581sentence\uFF5C>", "<end_of_utterance>", "<|eom_id|>", "<|return|>",
    "<|call|>", "<|flush|>", "<|calls|>", "</s>", "<eos>", "<turn|>", "<|tool_response>", "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uFF5Cfim\u2581begin\uFF5C>", "<PRE>", "\u2581<PRE>",
    "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\uFF5Cfim\u2581hole\uFF5C>", "<SUF>", "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>",
    "<fim-middle>", "<fim_middle>", "<\uFF5Cfim\u2581end\uFF5C>", "<MID>", "\u2581<MID>", "<|code_middle|>",
    "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
};
/* ... and these always USER_DEFINED (gpt-oss) */
static const char *const USER_NAMES[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};

static int read_special(const ac_gguf_file *g, const char *key, int32_t *id, int n_tokens) {
    if (*id >= n_tokens) *id = -1; /* default out of vocab range: disabled */
    int64_t x;
    const ac_gguf_kv *kv = ac_gguf_find(g, key);
    if (!kv) return AC_OK;
    int rc = ac_gguf_get_int(g, key, &x, 1);
    if (rc) return rc;
    if (x >= 0 && x < n_tokens) *id = (int32_t)x; /* else: keep the default, as llama.cpp */
    return AC_OK;
}

static int read_flag(const ac_gguf_file *g, const char *key, int *flag) {
    if (!ac_gguf_find(g, key)) return AC_OK;
    int b = 0;
    int rc = ac_gguf_get_bool(g, key, &b, 1);
    if (rc) return rc;
    *flag = b ? 1 : 0;
    return AC_OK;
}

typedef struct {
    uint64_t len;
    int32_t id;
} len_id;

static int cmp_len_id(const void *a, const void *b) { /* length desc, then id asc */
    const len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* udt ids longest first (llama.cpp sorts by length; ties by id here, which
 * only matters for two equal-length tokens overlapping in the text) */
static int sort_udt(ac_vocab *v) {
    len_id *t = AC_MALLOC((size_t)v->n_udt * sizeof *t);
    if (!t) return AC_ERR_NOMEM;
    for (int i = 0; i < v->n_udt; i++) t[i] = (len_id){v->text[v->udt[i]].len, v->udt[i]};
    qsort(t, (size_t)v->n_udt, sizeof *t, cmp_len_id);
    for (int i = 0; i < v->n_udt; i++) v->udt[i] = t[i].id;
    free(t);
    return AC_OK;
}

static int32_t trie_child(const ac_vocab *v, int32_t node, unsigned char b) {
    uint64_t k = (((uint64_t)node << 8) | b) + 1;
    for (uint64_t i = hmix(k) & v->tr_mask;; i = (i + 1) & v->tr_mask) {
        if (v->tr_keys[i] == k) return v->tr_child[i];
        if (v->tr_keys[i] == 0) return -1;
    }
}

static int build_trie(ac_vocab *v) {
    uint64_t total = 1;
    for (int k = 0; k < v->n_udt; k++) total += v->text[v->udt[k]].len;
    uint64_t sz = table_size(total);
    v->tr_keys = AC_CALLOC(sz, sizeof *v->tr_keys);
    v->tr_child = AC_MALLOC(sz * sizeof *v->tr_child);
    v->tr_term = AC_CALLOC(total, sizeof *v->tr_term);
    if (!v->tr_keys || !v->tr_child || !v->tr_term) return AC_ERR_NOMEM;
    v->tr_mask = sz - 1;
    v->tr_nodes = 1;
    for (int k = 0; k < v->n_udt; k++) {
        const ac_gguf_str *t = &v->text[v->udt[k]];
        int32_t node = 0;
        v->tr_first[(unsigned char)t->ptr[0]] = 1;
        for (uint64_t j = 0; j < t->len; j++) {
            unsigned char b = (unsigned char)t->ptr[j];
            int32_t c = trie_child(v, node, b);
            if (c < 0) {
                uint64_t key = (((uint64_t)node << 8) | b) + 1;
                uint64_t i = hmix(key) & v->tr_mask;
                while (v->tr_keys[i]) i = (i + 1) & v->tr_mask;
                v->tr_keys[i] = key;
                v->tr_child[i] = c = v->tr_nodes++;
            }
            node = c;
        }
        v->tr_term[node] = k + 1; /* texts are distinct: one udt per node */
    }
    return AC_OK;
}

void tok_debug_set(ac_vocab *v, int flags) {
    if (v) v->dbg = flags;
}

int ac_vocab_load(const ac_gguf_file *g, ac_vocab **out) {
    int rc;
    ac_vocab *v = NULL;
    ac_gguf_str model = {0}, pre = {0};
    if (!g || !out) return ac_err(AC_ERR_ARG, "ac_vocab_load: NULL argument");
    *out = NULL;

    if ((rc = ac_gguf_get_str(g, "tokenizer.ggml.model", &model, 1))) return rc;
    if ((rc = ac_gguf_get_str(g, "tokenizer.ggml.pre", &pre, 0))) return rc;

    v = AC_CALLOC(1, sizeof *v);
    if (!v) return AC_ERR_NOMEM;
    if (gstr_eq(model, "llama")) {
        v->type = AC_VOCAB_SPM;
        v->bos = 1, v->eos = 2, v->unk = 0, v->sep = -1, v->pad = -1, v->mask = -1;
        v->add_space_prefix = 1, v->clean_spaces = 0, v->add_bos = 1, v->add_eos = 0;
    } else if (gstr_eq(model, "bert")) {
        v->type = AC_VOCAB_WPM;
        v->bos = 101, v->eos = -1, v->unk = 100, v->sep = 102, v->pad = 0, v->mask = 103;
        v->add_space_prefix = 0, v->clean_spaces = 1, v->add_bos = 1, v->add_eos = 0, v->add_sep = 1;
    } else if (gstr_eq(model, "gpt2")) {
        v->type = AC_VOCAB_BPE;
        v->bos = 11, v->eos = 11, v->unk = -1, v->sep = -1, v->pad = -1, v->mask = -1;
    } else {
        rc = ac_err(AC_ERR_UNSUPPORTED, "tokenizer.ggml.model '%.*s' is not supported (llama, gpt2, bert)",
                    (int)AC_MIN(model.len, 64), model.ptr ? model.ptr : "");
        goto fail;
    }
    v->lowercase = 1, v->strip_accents = 1;

    if ((rc = read_flag(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix))) goto fail;

    /* tokens, scores, types */
    const ac_gguf_kv *ktok = NULL, *ksc = NULL, *ktt = NULL;
    if ((rc = ac_gguf_get_arr(g, "tokenizer.ggml.tokens", AC_GGUF_T_STRING, &ktok, 1))) goto fail;
    if (ktok->arr_n == 0 || ktok->arr_n >= (uint64_t)INT32_MAX / 4 || !ktok->arr_str) {
        rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.tokens: %llu tokens", (unsigned long long)ktok->arr_n);
        goto fail;
    }
    int n = (int)ktok->arr_n;
    v->n_tokens = n;
    v->text = ktok->arr_str;
    if ((rc = ac_gguf_get_arr(g, "tokenizer.ggml.scores", AC_GGUF_T_COUNT, &ksc, 0))) goto fail;
    if (ksc) {
        if (ksc->arr_type != AC_GGUF_T_FLOAT32 && ksc->arr_type != AC_GGUF_T_INT32) {
            rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.scores: expected float32 or int32 elements");
            goto fail;
        }
        if (ksc->arr_n < (uint64_t)n) {
            rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.scores: %llu scores for %d tokens",
                        (unsigned long long)ksc->arr_n, n);
            goto fail;
        }
    }
    if ((rc = ac_gguf_get_arr(g, "tokenizer.ggml.token_type", AC_GGUF_T_INT32, &ktt, 0))) goto fail;
    if (ktt && ktt->arr_n < (uint64_t)n) {
        rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.token_type: %llu types for %d tokens",
                    (unsigned long long)ktt->arr_n, n);
        goto fail;
    }
    v->score = AC_MALLOC((size_t)n * sizeof *v->score);
    v->attr = AC_MALLOC((size_t)n * sizeof *v->attr);
    uint64_t hs = table_size((uint64_t)n);
    v->ht = AC_MALLOC(hs * sizeof *v->ht);
    if (!v->score || !v->attr || !v->ht) {
        rc = AC_ERR_NOMEM;
        goto fail;
    }
    v->ht_mask = hs - 1;
    memset(v->ht, 0xFF, hs * sizeof *v->ht);
    for (int i = 0; i < n; i++) {
        const ac_gguf_str *t = &v->text[i];
        if (ksc) v->score[i] = ksc->arr_type == AC_GGUF_T_FLOAT32 ? ac_gguf_arr_f32(ksc, (uint64_t)i)
                                                               : (float)ac_gguf_arr_i32(ksc, (uint64_t)i);
        else v->score[i] = 0.0f;
        uint16_t a = ATTR_NORMAL;
        if (ktt) {
            switch (ac_gguf_arr_i32(ktt, (uint64_t)i)) {
            case 1: a = ATTR_NORMAL; break;
            case 2: a = ATTR_UNKNOWN; break;
            case 3: a = ATTR_CONTROL; break;
            case 4: a = ATTR_USER_DEFINED; break;
            case 5: a = ATTR_UNUSED; break;
            case 6: a = ATTR_BYTE; break;
            default: a = ATTR_UNDEFINED; break;
            }
        }
        v->attr[i] = a;
        if (t->len > (uint64_t)INT_MAX / 2) {
            rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.tokens[%d]: %llu bytes", i, (unsigned long long)t->len);
            goto fail;
        }
        if ((int)t->len > v->max_token_len) v->max_token_len = (int)t->len;
        if (t->len == 0) continue; /* never matches text (llama.cpp renames it "[EMPTY_i]") */
        uint64_t h = hmix(fnv_add(FNV_OFF, t->ptr, t->len));
        for (uint64_t s = h & v->ht_mask;; s = (s + 1) & v->ht_mask) {
            int32_t o = v->ht[s];
            if (o < 0) {
                v->ht[s] = i;
                break;
            }
            if (v->text[o].len == t->len && !memcmp(v->text[o].ptr, t->ptr, t->len)) {
                rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.tokens: duplicate token '%.*s' at ids %d and %d",
                            (int)AC_MIN(t->len, 64), t->ptr, o, i);
                goto fail;
            }
        }
    }

    /* BPE: merges and pre-tokenizer */
    if (v->type == AC_VOCAB_BPE) {
        const ac_gguf_kv *km = NULL;
        if ((rc = ac_gguf_get_arr(g, "tokenizer.ggml.merges", AC_GGUF_T_STRING, &km, 1))) goto fail;
        if (km->arr_n >= (uint64_t)INT32_MAX / 4 || (km->arr_n && !km->arr_str)) {
            rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.merges: %llu merges", (unsigned long long)km->arr_n);
            goto fail;
        }
        v->n_merges = (int)km->arr_n;
        uint64_t ms = table_size(km->arr_n);
        v->merges = AC_MALLOC((km->arr_n ? km->arr_n : 1) * sizeof *v->merges);
        v->mh = AC_MALLOC(ms * sizeof *v->mh);
        if (!v->merges || !v->mh) {
            rc = AC_ERR_NOMEM;
            goto fail;
        }
        v->mh_mask = ms - 1;
        memset(v->mh, 0xFF, ms * sizeof *v->mh);
        for (int i = 0; i < v->n_merges; i++) {
            ac_gguf_str w = km->arr_str[i];
            merge *m = &v->merges[i];
            /* split at the first ' ' from index 1; none: ("", "") as llama.cpp */
            const char *sp = w.len > 1 ? memchr(w.ptr + 1, ' ', w.len - 1) : NULL;
            if (sp) {
                m->l = w.ptr, m->ll = (uint32_t)(sp - w.ptr);
                m->r = sp + 1, m->rl = (uint32_t)(w.len - m->ll - 1);
            } else {
                m->l = m->r = "", m->ll = m->rl = 0;
            }
            uint64_t h = hmix(merge_hash(m->l, m->ll, m->r, m->rl));
            for (uint64_t s = h & v->mh_mask;; s = (s + 1) & v->mh_mask) {
                int32_t o = v->mh[s];
                if (o < 0) {
                    v->mh[s] = i;
                    break;
                }
                const merge *q = &v->merges[o];
                if (q->ll == m->ll && q->rl == m->rl && !memcmp(q->l, m->l, m->ll) && !memcmp(q->r, m->r, m->rl))
                    break; /* duplicate: the first (lowest) rank stays */
            }
        }
        const pre_def *pd = find_pre(pre);
        snprintf(v->pre_name, sizeof v->pre_name, "%.*s", (int)AC_MIN(pre.len, 47), pre.ptr ? pre.ptr : "");
        v->clean_spaces = pd->clean_spaces;
        v->ignore_merges = pd->ignore_merges;
        v->add_bos = pd->add_bos;
        if (pd->no_bos) v->bos = -1;
        int nrx = 0;
        while (nrx < TOK_MAX_REGEX && pd->rx[nrx]) nrx++;
        if ((rc = tok_pretok_compile(&v->pre, pd->rx, nrx))) goto fail;
        for (int b = 0; b < 256; b++) {
            int k = tu_encode(tu_byte_to_cpt((uint8_t)b), v->byte_enc[b]);
            v->byte_enc[b][k] = 0;
        }
    }

    /* special token ids and flags */
    if ((rc = read_special(g, "tokenizer.ggml.bos_token_id", &v->bos, n)) ||
        (rc = read_special(g, "tokenizer.ggml.eos_token_id", &v->eos, n)) ||
        (rc = read_special(g, "tokenizer.ggml.unknown_token_id", &v->unk, n)) ||
        (rc = read_special(g, "tokenizer.ggml.seperator_token_id", &v->sep, n)) ||
        (rc = read_special(g, "tokenizer.ggml.padding_token_id", &v->pad, n)) ||
        (rc = read_special(g, "tokenizer.ggml.mask_token_id", &v->mask, n)))
        goto fail;
    if (v->type == AC_VOCAB_WPM && !ac_gguf_find(g, "tokenizer.ggml.bos_token_id") &&
        (rc = read_special(g, "tokenizer.ggml.cls_token_id", &v->bos, n))) /* CLS is BOS for BERT */
        goto fail;
    if ((rc = read_flag(g, "tokenizer.ggml.add_bos_token", &v->add_bos)) ||
        (rc = read_flag(g, "tokenizer.ggml.add_eos_token", &v->add_eos)) ||
        (rc = read_flag(g, "tokenizer.ggml.add_sep_token", &v->add_sep)) ||
        (rc = read_flag(g, "tokenizer.ggml.normalizer.lowercase", &v->lowercase)))
        goto fail;
    v->strip_accents = v->lowercase;
    if ((rc = read_flag(g, "tokenizer.ggml.normalizer.strip_accents", &v->strip_accents))) goto fail;
    if ((v->add_bos || v->type == AC_VOCAB_WPM) && v->bos < 0) {
        rc = ac_err(AC_ERR_FORMAT, "tokenizer: BOS/CLS is to be added but tokenizer.ggml.bos_token_id is not set");
        goto fail;
    }
    if (v->add_eos && v->eos < 0) {
        rc = ac_err(AC_ERR_FORMAT, "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set");
        goto fail;
    }
    if ((v->add_sep || v->type == AC_VOCAB_WPM) && v->sep < 0) {
        rc = ac_err(AC_ERR_FORMAT, "tokenizer: SEP is to be added but tokenizer.ggml.seperator_token_id is not set");
        goto fail;
    }

    /* attributes llama.cpp adjusts by token text */
    for (size_t k = 0; k < sizeof CONTROL_NAMES / sizeof CONTROL_NAMES[0]; k++) {
        int32_t id = lookup(v, CONTROL_NAMES[k], strlen(CONTROL_NAMES[k]));
        if (id >= 0) v->attr[id] |= ATTR_CONTROL;
    }
    for (size_t k = 0; k < sizeof USER_NAMES / sizeof USER_NAMES[0]; k++) {
        int32_t id = lookup(v, USER_NAMES[k], strlen(USER_NAMES[k]));
        if (id >= 0) v->attr[id] = ATTR_USER_DEFINED;
    }

    if (v->type == AC_VOCAB_SPM && (rc = build_pairs(v))) goto fail;

    /* tokens matched in raw text before tokenizing (parse_special off) */
    for (int i = 0; i < n; i++)
        if ((v->attr[i] & ATTR_USER_DEFINED) && !(v->attr[i] & (ATTR_CONTROL | ATTR_UNKNOWN)) && v->text[i].len)
            v->n_udt++;
    if (v->n_udt) {
        v->udt = AC_MALLOC((size_t)v->n_udt * sizeof *v->udt);
        if (!v->udt) {
            rc = AC_ERR_NOMEM;
            goto fail;
        }
        int k = 0;
        for (int i = 0; i < n; i++)
            if ((v->attr[i] & ATTR_USER_DEFINED) && !(v->attr[i] & (ATTR_CONTROL | ATTR_UNKNOWN)) && v->text[i].len)
                v->udt[k++] = i;
        if ((rc = sort_udt(v)) || (rc = build_trie(v))) goto fail;
    }
    *out = v;
    return AC_OK;
fail:
    ac_vocab_free(v);
    return rc;
}

void ac_vocab_free(ac_vocab *v) {
    if (!v) return;
    free(v->score);
    free(v->attr);
    free(v->ht);
    free(v->merges);
    free(v->mh);
    free(v->udt);
    free(v->pairs);
    free(v->tr_keys);
    free(v->tr_child);
    free(v->tr_term);
    tok_pretok_free(&v->pre);
    free(v);
}

int ac_vocab_type(const ac_vocab *v) { return v ? v->type : 0; }
int ac_vocab_n_tokens(const ac_vocab *v) { return v ? v->n_tokens : 0; }
int32_t ac_vocab_bos(const ac_vocab *v) { return v ? v->bos : -1; }
int32_t ac_vocab_eos(const ac_vocab *v) { return v ? v->eos : -1; }
int32_t ac_vocab_cls(const ac_vocab *v) { return v ? v->bos : -1; }
int32_t ac_vocab_sep(const ac_vocab *v) { return v ? v->sep : -1; }
int32_t ac_vocab_pad(const ac_vocab *v) { return v ? v->pad : -1; }
int32_t ac_vocab_unk(const ac_vocab *v) { return v ? v->unk : -1; }
int ac_vocab_add_bos(const ac_vocab *v) { return v ? (v->type == AC_VOCAB_WPM ? 1 : v->add_bos) : 0; }
int ac_vocab_add_eos(const ac_vocab *v) { return v ? v->add_eos : 0; }
const char *ac_vocab_pre(const ac_vocab *v) { return v ? v->pre_name : ""; }

ac_gguf_str ac_vocab_token_text(const ac_vocab *v, int32_t id) {
    ac_gguf_str s = {0, ""};
    if (v && id >= 0 && id < v->n_tokens) s = v->text[id];
    return s;
}

/* ---- scratch shared by one tokenize call -------------------------------------- */

typedef struct sym {
    int32_t prev, next;
    uint32_t start, n; /* bytes in the session text */
} sym;

/* A queued pair. prio packs the order of llama.cpp's comparators into one
 * integer, highest first: high 32 bits = order-preserving key of the SPM
 * score (higher first) or ~rank for BPE (lower rank first), low 32 bits =
 * ~left (leftmost first on ties). 16 bytes: the queue of a long text stays
 * cache-friendlier. */
typedef struct bigram {
    uint64_t prio;
    int32_t right;
    uint32_t size;
} bigram;

static inline int32_t bg_left(const bigram *b) { return (int32_t)~(uint32_t)b->prio; }

static inline uint32_t score_key(float f) { /* monotonic float -> uint32 (-0 == +0) */
    uint32_t u;
    if (f == 0.0f) f = 0.0f;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline uint64_t bg_prio(uint32_t key, int32_t left) { return ((uint64_t)key << 32) | (uint32_t)~(uint32_t)left; }

typedef struct scratch {
    char *buf;
    size_t buf_cap;
    sym *sy;
    size_t sy_cap;
    bigram *hp;
    size_t hp_cap, hp_n;
    uint32_t *cp, *off;
    size_t cp_cap, off_cap;
    ac_tok_memo *memo; /* BPE words already seen (ac_vocab_tokenize_memo), or NULL */
} scratch;

static void scratch_free(scratch *s) {
    free(s->buf);
    free(s->sy);
    free(s->hp);
    free(s->cp);
    free(s->off);
}

/* max-heap on prio */
static inline int hp_before(const bigram *a, const bigram *b) { return a->prio > b->prio; }

static int hp_push(scratch *s, bigram b) {
    if (!grow((void **)&s->hp, &s->hp_cap, s->hp_n + 1, sizeof *s->hp)) return 0;
    size_t i = s->hp_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hp_before(&b, &s->hp[p])) break;
        s->hp[i] = s->hp[p];
        i = p;
    }
    s->hp[i] = b;
    return 1;
}

static bigram hp_pop(scratch *s) {
    bigram top = s->hp[0];
    bigram last = s->hp[--s->hp_n];
    size_t i = 0, n = s->hp_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const bigram *best = &last;
        if (l < n && hp_before(&s->hp[l], best)) m = l, best = &s->hp[l];
        if (r < n && hp_before(&s->hp[r], best)) m = r;
        if (m == i) break;
        s->hp[i] = s->hp[m];
        i = m;
    }
    if (n) s->hp[i] = last;
    return top;
}

/* split text t[0..len) into UTF-8 character symbols (lead-byte length) */
static int make_symbols(scratch *s, size_t len, const char *t, size_t *nsym) {
    if (!grow((void **)&s->sy, &s->sy_cap, len + 1, sizeof *s->sy)) return 0;
    size_t k = 0;
    for (size_t o = 0; o < len;) {
        size_t l = tu_len_utf8((unsigned char)t[o]);
        if (l > len - o) l = len - o;
        s->sy[k].start = (uint32_t)o;
        s->sy[k].n = (uint32_t)l;
        s->sy[k].prev = (int32_t)k - 1;
        o += l;
        s->sy[k].next = o == len ? -1 : (int32_t)k + 1;
        k++;
    }
    *nsym = k;
    return 1;
}

/* byte fallback for SPM: <0xNN>, else the single byte as a token, else UNK */
static int32_t spm_byte_token(const ac_vocab *v, unsigned char b) {
    static const char hex[] = "0123456789ABCDEF";
    char t[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
    int32_t id = lookup(v, t, 6);
    if (id < 0) id = lookup(v, (const char *)&b, 1);
    return id >= 0 ? id : v->unk;
}

/* ---- SPM ------------------------------------------------------------------------ */

static int spm_try_add(const ac_vocab *v, scratch *s, const char *t, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 1;
    const sym *a = &s->sy[l], *b = &s->sy[r];
    uint32_t size = a->n + b->n;
    int32_t id = lookup(v, t + a->start, size);
    if (id < 0) return 1;
    bigram g = {bg_prio(score_key(v->score[id]), l), r, size};
    return hp_push(s, g);
}

/* one independent segment t[0..len) */
static int spm_segment(const ac_vocab *v, scratch *s, const char *t, size_t len, ivec *out) {
    size_t ns;
    if (len == 0) return 1;
    if (!make_symbols(s, len, t, &ns)) return 0;
    s->hp_n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!spm_try_add(v, s, t, (int32_t)i - 1, (int32_t)i)) return 0;
    while (s->hp_n) {
        bigram g = hp_pop(s);
        int32_t gl = bg_left(&g);
        sym *a = &s->sy[gl], *b = &s->sy[g.right];
        if (a->n == 0 || b->n == 0 || a->n + b->n != g.size) continue; /* stale */
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) s->sy[b->next].prev = gl;
        if (!spm_try_add(v, s, t, a->prev, gl) || !spm_try_add(v, s, t, gl, a->next)) return 0;
    }
    /* Every merged symbol is a token (a pair is only queued if it is one), so
     * a symbol that is no token is a single character: emit its bytes. */
    for (int32_t i = 0; i != -1; i = s->sy[i].next) {
        const sym *y = &s->sy[i];
        int32_t id = lookup(v, t + y->start, y->n);
        if (id >= 0) {
            if (!ivec_push(out, id)) return 0;
            continue;
        }
        for (uint32_t j = 0; j < y->n; j++) {
            int32_t b = spm_byte_token(v, (unsigned char)t[y->start + j]);
            if (b >= 0 && !ivec_push(out, b)) return 0;
        }
    }
    return 1;
}

/* t: escaped text (U+2581 for spaces); cut where no token can span */
static int spm_tokenize(const ac_vocab *v, scratch *s, const char *t, size_t len, ivec *out) {
    size_t seg = 0, l;
    if (len == 0) return 1;
    if (v->dbg & TOK_DBG_SPM_NO_SEGMENT) return spm_segment(v, s, t, len, out);
    uint32_t prev = char_at(t, len, &l);
    for (size_t o = l; o < len; o += l) {
        uint32_t c = char_at(t + o, len - o, &l);
        if (!pair_known(v, pair_key(prev, c))) {
            if (!spm_segment(v, s, t + seg, o - seg, out)) return 0;
            seg = o;
        }
        prev = c;
    }
    return spm_segment(v, s, t + seg, len - seg, out);
}

/* ---- BPE ---------------------------------------------------------------------- */

static int bpe_try_add(const ac_vocab *v, scratch *s, const char *t, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 1;
    const sym *a = &s->sy[l], *b = &s->sy[r];
    int32_t rank = merge_rank(v, t + a->start, a->n, t + b->start, b->n);
    if (rank < 0) return 1;
    bigram g = {bg_prio(~(uint32_t)rank, l), r, a->n + b->n};
    return hp_push(s, g);
}

static int bpe_word_merge(const ac_vocab *v, scratch *s, const char *w, size_t len, ivec *out);

/* one byte-encoded word w[0..len), through the memo when there is one */
static int bpe_word(const ac_vocab *v, scratch *s, const char *w, size_t len, ivec *out) {
    if (len == 0 || !s->memo) return bpe_word_merge(v, s, w, len, out);
    int n = 0;
    const int32_t *ids = tok_memo_get(s->memo, w, len, &n);
    if (ids) {
        for (int i = 0; i < n; i++)
            if (!ivec_push(out, ids[i])) return 0;
        return 1;
    }
    const size_t n0 = out->n;
    if (!bpe_word_merge(v, s, w, len, out)) return 0;
    const int n_new = (int)(out->n - n0);
    tok_memo_put(s->memo, w, len, n_new ? out->v + n0 : NULL, n_new);
    return 1;
}

/* one byte-encoded word w[0..len): the merges */
static int bpe_word_merge(const ac_vocab *v, scratch *s, const char *w, size_t len, ivec *out) {
    size_t ns;
    if (len == 0) return 1;
    if (v->ignore_merges) {
        int32_t id = lookup(v, w, len);
        if (id >= 0) return ivec_push(out, id);
    }
    if (!make_symbols(s, len, w, &ns)) return 0;
    s->hp_n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!bpe_try_add(v, s, w, (int32_t)i - 1, (int32_t)i)) return 0;
    while (s->hp_n) {
        bigram g = hp_pop(s);
        int32_t gl = bg_left(&g);
        sym *a = &s->sy[gl], *b = &s->sy[g.right];
        if (a->n == 0 || b->n == 0 || a->n + b->n != g.size) continue; /* outdated */
        a->n += b->n;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) s->sy[b->next].prev = gl;
        if (!bpe_try_add(v, s, w, a->prev, gl) || !bpe_try_add(v, s, w, gl, a->next)) return 0;
    }
    for (int32_t i = 0; i != -1; i = s->sy[i].next) {
        const sym *y = &s->sy[i];
        if (y->n == 0) continue;
        int32_t id = lookup(v, w + y->start, y->n);
        if (id >= 0) {
            if (!ivec_push(out, id)) return 0;
            continue;
        }
        for (uint32_t j = 0; j < y->n; j++) { /* llama.cpp: each byte as a 1-byte token, if any */
            int32_t b = lookup(v, w + y->start + j, 1);
            if (b >= 0 && !ivec_push(out, b)) return 0;
        }
    }
    return 1;
}

static int bpe_tokenize(const ac_vocab *v, scratch *s, const char *t, size_t len, ivec *out) {
    int rc = AC_OK;
    uint32_t *lens = NULL;
    size_t np = 0;
    if (len == 0) return AC_OK;
    if (!grow((void **)&s->cp, &s->cp_cap, len + 1, sizeof *s->cp) ||
        !grow((void **)&s->off, &s->off_cap, len + 1, sizeof *s->off))
        return ac_err(AC_ERR_NOMEM, "tokenize: out of memory");
    size_t n = tu_decode(t, len, s->cp, s->off);
    if ((rc = tok_pretok_split(&v->pre, s->cp, n, &lens, &np))) return rc;
    size_t c0 = 0;
    for (size_t k = 0; k < np; k++) {
        size_t c1 = c0 + lens[k];
        size_t b0 = s->off[c0], b1 = s->off[c1];
        c0 = c1;
        /* GPT-2 byte encoding of the word: each byte -> one code point */
        if (!grow((void **)&s->buf, &s->buf_cap, 2 * (b1 - b0) + 1, 1)) goto oom;
        size_t o = 0;
        for (size_t i = b0; i < b1; i++) {
            const char *e = v->byte_enc[(unsigned char)t[i]];
            s->buf[o++] = e[0];
            if (e[1]) s->buf[o++] = e[1];
        }
        if (!bpe_word(v, s, s->buf, o, out)) goto oom;
    }
    free(lens);
    return AC_OK;
oom:
    free(lens);
    return ac_err(AC_ERR_NOMEM, "tokenize: out of memory");
}

/* ---- WPM ------------------------------------------------------------------------ */

static int is_chinese_char(uint32_t c) {
    return (c >= 0x04E00 && c <= 0x09FFF) || (c >= 0x03400 && c <= 0x04DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0x0F900 && c <= 0x0FAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* greedy longest match of one word w[0..n) (starts with U+2581) */
static int wpm_word(const ac_vocab *v, const char *w, size_t n, ivec *out) {
    size_t mark = out->n;
    size_t maxl = (size_t)v->max_token_len;
    for (size_t i = 0; i < n;) {
        size_t best = 0;
        int32_t best_id = -1;
        uint64_t h = FNV_OFF;
        size_t lim = AC_MIN(n - i, maxl);
        for (size_t l = 1; l <= lim; l++) { /* all prefixes, keep the longest that is a token */
            h = (h ^ (unsigned char)w[i + l - 1]) * FNV_PRIME;
            int32_t id = lookup_h(v, w + i, l, h);
            if (id >= 0) best = l, best_id = id;
        }
        if (best_id < 0) { /* discard the word's tokens: it becomes [UNK] */
            out->n = mark;
            break;
        }
        if (!ivec_push(out, best_id)) return 0;
        i += best;
    }
    if (out->n == mark && v->unk >= 0 && !ivec_push(out, v->unk)) return 0;
    return 1;
}

static int wpm_tokenize(const ac_vocab *v, scratch *s, const char *t, size_t len, ivec *out) {
    if (len == 0) return AC_OK;
    if (!grow((void **)&s->cp, &s->cp_cap, len + 1, sizeof *s->cp)) goto oom;
    size_t n = tu_decode(t, len, s->cp, NULL);
    /* words as "\u2581word", written one after the other into buf */
    if (!grow((void **)&s->buf, &s->buf_cap, 8 * n + 8, 1)) goto oom;
    char *b = s->buf;
    size_t o = 0, ws = 0; /* current word start (at its U+2581) */
    int in_word = 0;
#define END_WORD()                                                                                             \
    do {                                                                                                       \
        if (in_word && !wpm_word(v, b + ws, o - ws, out)) goto oom;                                            \
        in_word = 0;                                                                                           \
        o = 0;                                                                                                 \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s->cp[i];
        if (v->strip_accents) c = tu_nfd_first(c);
        uint16_t f = tu_flags(c);
        if (f & TU_WHITESPACE) {
            END_WORD();
            continue;
        }
        if (c == 0 || c == TU_REPLACEMENT || (f & TU_CONTROL)) continue;
        if (v->strip_accents && (f & TU_ACCENT_MARK)) continue;
        int single = (f & TU_PUNCTUATION) || (c < 0x7F && (f & TU_SYMBOL)) || is_chinese_char(c);
        if (v->lowercase) c = tu_tolower(c);
        if (single) END_WORD();
        if (!in_word) {
            ws = o;
            memcpy(b + o, "\xE2\x96\x81", 3);
            o += 3;
            in_word = 1;
        }
        o += (size_t)tu_encode(c, b + o);
        if (single) END_WORD();
    }
    END_WORD();
#undef END_WORD
    return AC_OK;
oom:
    return ac_err(AC_ERR_NOMEM, "tokenize: out of memory");
}

/* ---- tokenize --------------------------------------------------------------------- */

typedef struct frag {
    int32_t tok; /* -1: text */
    size_t off, len;
} frag;

/* Split text around USER_DEFINED tokens (llama.cpp's tokenizer_st_partition
 * with parse_special = false), the plain way: for each token, longest
 * first, cut every text fragment at its leftmost non-overlapping
 * occurrences. *fr gets malloc'd fragments. */
static int partition_ref(const ac_vocab *v, const char *t, size_t len, frag **fr, size_t *nfr) {
    size_t n = 0, cap = 16;
    frag *a = malloc(cap * sizeof *a);
    if (!a) return 0;
    if (len) a[n++] = (frag){-1, 0, len};
    for (int k = 0; k < v->n_udt && n; k++) {
        int32_t id = v->udt[k];
        const char *tt = v->text[id].ptr;
        size_t tl = v->text[id].len;
        frag *b = malloc(cap * sizeof *b);
        size_t m = 0, bcap = cap;
        if (!b) goto oom;
#define PUSHB(F)                                                                                               \
    do {                                                                                                       \
        if (m == bcap) {                                                                                       \
            frag *nb = realloc(b, 2 * bcap * sizeof *nb);                                                      \
            if (!nb) {                                                                                         \
                free(b);                                                                                       \
                goto oom;                                                                                      \
            }                                                                                                  \
            b = nb;                                                                                            \
            bcap *= 2;                                                                                         \
        }                                                                                                      \
        b[m++] = (F);                                                                                          \
    } while (0)
        for (size_t i = 0; i < n; i++) {
            if (a[i].tok >= 0) {
                PUSHB(a[i]);
                continue;
            }
            size_t off = a[i].off, end = a[i].off + a[i].len;
            for (;;) {
                const char *hit = end - off >= tl ? memmem(t + off, end - off, tt, tl) : NULL;
                if (!hit) {
                    if (end > off) PUSHB(((frag){-1, off, end - off}));
                    break;
                }
                size_t p = (size_t)(hit - t);
                if (p > off) PUSHB(((frag){-1, off, p - off}));
                PUSHB(((frag){id, 0, 0}));
                off = p + tl;
            }
        }
#undef PUSHB
        free(a);
        a = b;
        n = m;
        cap = bcap;
    }
    *fr = a;
    *nfr = n;
    return 1;
oom:
    free(a);
    return 0;
}

typedef struct occ {
    uint32_t rank, start; /* udt rank (longest first), byte offset */
} occ;

static int occ_cmp(const void *a, const void *b) {
    const occ *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* Same result as partition_ref with one scan: find every occurrence of every
 * udt with the trie, then replay llama.cpp's order — tokens longest first,
 * each taking its leftmost occurrences that overlap nothing taken before
 * (an occurrence is inside a text fragment iff it overlaps no taken token). */
static int partition(const ac_vocab *v, const char *t, size_t len, frag **fr, size_t *nfr) {
    if (v->n_udt == 0 || len == 0 || (v->dbg & TOK_DBG_REF_PARTITION)) return partition_ref(v, t, len, fr, nfr);
    occ *oc = NULL;
    size_t no = 0, ocap = 0;
    uint8_t *taken = NULL;
    int32_t *at = NULL; /* at[start] = udt rank taken there, -1 */
    frag *a = NULL;
    for (size_t i = 0; i < len; i++) {
        if (!v->tr_first[(unsigned char)t[i]]) continue;
        int32_t node = 0;
        for (size_t j = i; j < len; j++) {
            node = trie_child(v, node, (unsigned char)t[j]);
            if (node < 0) break;
            if (v->tr_term[node]) {
                if (!grow((void **)&oc, &ocap, no + 1, sizeof *oc)) goto oom;
                oc[no++] = (occ){(uint32_t)v->tr_term[node] - 1, (uint32_t)i};
            }
        }
    }
    size_t n = 0, cap = 2 * no + 2;
    a = malloc(cap * sizeof *a);
    if (!a) goto oom;
    if (no == 0) {
        a[n++] = (frag){-1, 0, len};
        *fr = a, *nfr = n;
        return 1;
    }
    qsort(oc, no, sizeof *oc, occ_cmp);
    taken = calloc(len, 1);
    at = malloc(len * sizeof *at);
    if (!taken || !at) goto oom;
    memset(at, 0xFF, len * sizeof *at);
    for (size_t k = 0; k < no; k++) {
        size_t s0 = oc[k].start, l = v->text[v->udt[oc[k].rank]].len, j;
        for (j = 0; j < l && !taken[s0 + j]; j++) {}
        if (j < l) continue; /* overlaps a longer token or this token's previous match */
        memset(taken + s0, 1, l);
        at[s0] = (int32_t)oc[k].rank;
    }
    size_t txt = 0; /* start of the pending text run */
    for (size_t i = 0; i < len;) {
        if (at[i] < 0) {
            i++;
            continue;
        }
        if (i > txt) a[n++] = (frag){-1, txt, i - txt};
        int32_t id = v->udt[at[i]];
        a[n++] = (frag){id, 0, 0};
        i += v->text[id].len;
        txt = i;
    }
    if (len > txt) a[n++] = (frag){-1, txt, len - txt};
    free(oc);
    free(taken);
    free(at);
    *fr = a, *nfr = n;
    return 1;
oom:
    free(oc);
    free(taken);
    free(at);
    free(a);
    return 0;
}

int ac_vocab_tokenize(const ac_vocab *v, const char *text, size_t len, int add_special, int32_t *ids, int cap,
                      int *n_out) {
    return ac_vocab_tokenize_memo(v, NULL, text, len, add_special, ids, cap, n_out);
}

int ac_vocab_tokenize_memo(const ac_vocab *v, ac_tok_memo *memo, const char *text, size_t len, int add_special,
                           int32_t *ids, int cap, int *n_out) {
    int rc = AC_OK;
    ivec out = {0};
    scratch s = {0};
    if (memo && v && tok_memo_bind(memo, v)) s.memo = memo;
    frag *fr = NULL;
    size_t nfr = 0, clen = 0;
    char *clean = NULL;
    if (n_out) *n_out = 0;
    if (!v || !n_out || (!text && len) || cap < 0 || (cap > 0 && !ids))
        return ac_err(AC_ERR_ARG, "ac_vocab_tokenize: invalid argument");
    if (len > (size_t)INT32_MAX) return ac_err(AC_ERR_INPUT, "ac_vocab_tokenize: text of %zu bytes is too long", len);

    clean = tu_sanitize_utf8(text ? text : "", len, &clen);
    if (!clean || !partition(v, clean, clen, &fr, &nfr)) {
        rc = ac_err(AC_ERR_NOMEM, "ac_vocab_tokenize: out of memory (%zu bytes of text)", len);
        goto done;
    }
#define PUSH(x)                                                                                                \
    do {                                                                                                       \
        if (!ivec_push(&out, (x))) goto oom;                                                                   \
    } while (0)

    switch (v->type) {
    case AC_VOCAB_SPM: {
        int prev_special = 1; /* a space prefix goes before the first text */
        if (add_special && v->add_bos) PUSH(v->bos);
        for (size_t k = 0; k < nfr; k++) {
            if (fr[k].tok >= 0) {
                PUSH(fr[k].tok);
                prev_special = 1;
                continue;
            }
            /* ' ' -> U+2581 (3 bytes) */
            const char *src = clean + fr[k].off;
            size_t sl = fr[k].len, nsp = 0, pre = (v->add_space_prefix && prev_special) ? 1 : 0;
            for (size_t i = 0; i < sl; i++) nsp += src[i] == ' ';
            size_t el = sl + 2 * (nsp + pre);
            if (!grow((void **)&s.buf, &s.buf_cap, el + 1, 1)) goto oom;
            size_t o = 0;
            if (pre) memcpy(s.buf, "\xE2\x96\x81", 3), o = 3;
            for (size_t i = 0; i < sl; i++) {
                if (src[i] == ' ') memcpy(s.buf + o, "\xE2\x96\x81", 3), o += 3;
                else s.buf[o++] = src[i];
            }
            if (!spm_tokenize(v, &s, s.buf, o, &out)) goto oom;
            prev_special = 0;
        }
        if (add_special && v->add_eos) PUSH(v->eos);
        break;
    }
    case AC_VOCAB_BPE:
        if (add_special && v->add_bos) PUSH(v->bos);
        for (size_t k = 0; k < nfr; k++) {
            if (fr[k].tok >= 0) PUSH(fr[k].tok);
            else if ((rc = bpe_tokenize(v, &s, clean + fr[k].off, fr[k].len, &out))) goto done;
        }
        if (add_special && v->add_eos) PUSH(v->eos);
        break;
    case AC_VOCAB_WPM:
        if (add_special) PUSH(v->bos);
        for (size_t k = 0; k < nfr; k++) {
            if (fr[k].tok >= 0) PUSH(fr[k].tok);
            else if ((rc = wpm_tokenize(v, &s, clean + fr[k].off, fr[k].len, &out))) goto done;
        }
        if (add_special) PUSH(v->sep);
        break;
    default:
        rc = ac_err(AC_ERR_INTERNAL, "ac_vocab_tokenize: vocab type %d", v->type);
        goto done;
    }
#undef PUSH
    if (out.n > (size_t)INT_MAX) {
        rc = ac_err(AC_ERR_INPUT, "ac_vocab_tokenize: %zu tokens", out.n);
        goto done;
    }
    *n_out = (int)out.n;
    if (out.n && cap > 0) memcpy(ids, out.v, (size_t)AC_MIN((size_t)cap, out.n) * sizeof *ids);
    if ((size_t)cap < out.n) rc = ac_err(AC_ERR_RANGE, "ac_vocab_tokenize: %zu tokens, room for %d", out.n, cap);
    goto done;
oom:
    rc = ac_err(AC_ERR_NOMEM, "ac_vocab_tokenize: out of memory");
done:
    free(out.v);
    free(fr);
    free(clean);
    scratch_free(&s);
    return rc;
}

/* ---- pieces ------------------------------------------------------------------------ */

/* append to a (buf, cap) with total count */
typedef struct {
    char *buf;
    size_t cap, n;
} sink;

static void sink_put(sink *k, const char *p, size_t l) {
    if (k->n < k->cap) memcpy(k->buf + k->n, p, AC_MIN(l, k->cap - k->n));
    k->n += l;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* token_to_piece(special = true): writes into k */
static void piece(const ac_vocab *v, int32_t id, sink *k) {
    const ac_gguf_str *t = &v->text[id];
    uint16_t a = v->attr[id];
    if (a & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        sink_put(k, t->ptr, t->len);
        return;
    }
    if (a & ATTR_NORMAL) {
        if (v->type == AC_VOCAB_BPE) { /* GPT-2 unicode -> bytes */
            uint32_t cps[64];
            for (size_t o = 0; o < t->len;) {
                /* decode one code point at a time (token texts may be any bytes) */
                size_t l = tu_len_utf8((unsigned char)t->ptr[o]);
                if (l > t->len - o) l = t->len - o;
                tu_decode(t->ptr + o, l, cps, NULL);
                int b = tu_cpt_to_byte(cps[0]);
                if (b >= 0) {
                    char c = (char)b;
                    sink_put(k, &c, 1);
                } else { /* as llama.cpp's llama_decode_text */
                    char tmp[16];
                    sink_put(k, "[UNK_BYTE_0x", 12);
                    for (size_t j = 0; j < l; j++) {
                        snprintf(tmp, sizeof tmp, "%02x", (unsigned char)t->ptr[o + j]);
                        sink_put(k, tmp, 2);
                    }
                    sink_put(k, t->ptr, t->len);
                    sink_put(k, "]", 1);
                }
                o += l;
            }
            return;
        }
        /* SPM, WPM: U+2581 -> ' ' */
        size_t o = 0;
        while (o < t->len) {
            const char *p = t->len - o >= 3 ? memmem(t->ptr + o, t->len - o, "\xE2\x96\x81", 3) : NULL;
            if (!p) {
                sink_put(k, t->ptr + o, t->len - o);
                break;
            }
            sink_put(k, t->ptr + o, (size_t)(p - t->ptr) - o);
            sink_put(k, " ", 1);
            o = (size_t)(p - t->ptr) + 3;
        }
        return;
    }
    if ((a & ATTR_BYTE) && v->type != AC_VOCAB_WPM && t->len >= 5) { /* "<0xNN>" */
        int h = hexval(t->ptr[3]), l = hexval(t->ptr[4]);
        if (h >= 0) {
            char c = (char)(l >= 0 ? h * 16 + l : h);
            sink_put(k, &c, 1);
        }
    }
    /* UNUSED / UNDEFINED: nothing */
}

int ac_vocab_piece(const ac_vocab *v, int32_t id, char *buf, int cap, int *n_out) {
    if (n_out) *n_out = 0;
    if (!v || !n_out || cap < 0 || (cap > 0 && !buf)) return ac_err(AC_ERR_ARG, "ac_vocab_piece: invalid argument");
    if (id < 0 || id >= v->n_tokens)
        return ac_err(AC_ERR_ARG, "ac_vocab_piece: token id %d out of range [0, %d)", id, v->n_tokens);
    sink k = {buf, (size_t)cap, 0};
    piece(v, id, &k);
    if (k.n > (size_t)INT_MAX) return ac_err(AC_ERR_INTERNAL, "ac_vocab_piece: piece too long");
    *n_out = (int)k.n;
    if (k.n > (size_t)cap) return ac_err(AC_ERR_RANGE, "ac_vocab_piece: %zu bytes, room for %d", k.n, cap);
    return AC_OK;
}

/* append the piece of id to a growable buffer, dropping one leading space if lstrip */
static int put_piece(const ac_vocab *v, int32_t id, int lstrip, char **buf, size_t *cap, size_t *n) {
    sink m = {NULL, 0, 0};
    piece(v, id, &m); /* measure */
    if (!grow((void **)buf, cap, *n + m.n + 1, 1)) return 0;
    sink k = {*buf + *n, m.n, 0};
    piece(v, id, &k);
    if (lstrip && k.n > 0 && (*buf)[*n] == ' ') memmove(*buf + *n, *buf + *n + 1, --k.n);
    *n += k.n;
    return 1;
}

int ac_vocab_detokenize(const ac_vocab *v, const int32_t *ids, int n, int remove_special, int unparse_special,
                        char *buf, int cap, int *n_out) {
    if (n_out) *n_out = 0;
    if (!v || !n_out || n < 0 || (n > 0 && !ids) || cap < 0 || (cap > 0 && !buf))
        return ac_err(AC_ERR_ARG, "ac_vocab_detokenize: invalid argument");
    int rc = AC_OK;
    char *x = NULL;
    size_t xcap = 0, total = 0;
    int remove_space = v->add_space_prefix; /* the space the tokenizer prefixed */
    int add_bos = v->type == AC_VOCAB_WPM ? 1 : v->add_bos;
    if (remove_special && add_bos && n > 0 && ids[0] == v->bos) remove_space = 0, ids++, n--;
    if (remove_special && v->add_eos && n > 0 && ids[n - 1] == v->eos) n--;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n_tokens) {
            free(x);
            return ac_err(AC_ERR_ARG, "ac_vocab_detokenize: token id %d out of range [0, %d)", ids[i], v->n_tokens);
        }
        int skip = !unparse_special && (v->attr[ids[i]] & (ATTR_UNKNOWN | ATTR_CONTROL));
        if (!skip && !put_piece(v, ids[i], remove_space, &x, &xcap, &total)) {
            free(x);
            return ac_err(AC_ERR_NOMEM, "ac_vocab_detokenize: out of memory");
        }
        remove_space = 0;
    }
    if (v->clean_spaces && total > 0) { /* llama.cpp's clean-up passes */
        size_t t1 = total, o = 1;
        for (size_t i = 1; i < t1; i++) { /* " ?", " !", " .", " ," */
            char c = x[i];
            if (x[i - 1] == ' ' && (c == '?' || c == '!' || c == '.' || c == ',')) o--;
            x[o++] = c;
        }
        size_t t2 = o;
        o = 1;
        for (size_t i = 1; i < t2; i++) { /* " ' " */
            char c = x[i];
            if (c == '\'' && i + 1 < t2 && x[i - 1] == ' ' && x[i + 1] == ' ') {
                o--;
                x[++i] = 0;
            }
            x[o++] = c;
        }
        size_t t3 = o;
        o = 1;
        for (size_t i = 1; i < t3; i++) { /* " 's", " 'm", " 're", " 've" */
            char c = x[i];
            if (x[i - 1] == ' ' && c == '\'' && i + 1 < t3) {
                char c1 = x[i + 1];
                if (c1 == 's' || c1 == 'm') o--;
                else if (i + 2 < t3) {
                    char c2 = x[i + 2];
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e')) o--;
                }
            }
            x[o++] = c;
        }
        total = o;
    }
    if (total > (size_t)INT_MAX) {
        free(x);
        return ac_err(AC_ERR_INPUT, "ac_vocab_detokenize: text too long");
    }
    *n_out = (int)total;
    if (total && cap > 0) memcpy(buf, x, AC_MIN(total, (size_t)cap));
    if (total > (size_t)cap) rc = ac_err(AC_ERR_RANGE, "ac_vocab_detokenize: %zu bytes, room for %d", total, cap);
    free(x);
    return rc;
}
