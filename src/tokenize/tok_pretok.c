/* tok_pretok.c — regex pre-tokenizer for byte-level BPE (see tok_pretok.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tok_pretok.h"
#include "tok_unicode.h"
#include "util/common.h"

#include <pcre2.h>
#include <string.h>

/* The two regexes llama.cpp runs through hand-written matchers. */
static const char *RE_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
static const char *RE_LLAMA3_A =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *RE_LLAMA3_B =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---- categories in collapsed text ------------------------------------------ */

struct ucat {
    const char *name; /* as written in the regex */
    unsigned char byte;   /* collapsed code of non-ASCII members */
    const char *ascii;    /* class text of the ASCII members */
};

/* \p{Lu} etc. all mean "letter" here, as in llama.cpp */
static const struct ucat UCATS[] = {
    {"\\p{N}", 0xD1, "0-9"},
    {"\\p{L}", 0xD2, "A-Za-z"},
    {"\\p{P}", 0xD3, "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
    {"\\p{M}", 0xD4, ""},
    {"\\p{S}", 0xD5, "\\$\\+<->^`\\|"},
    {"\\p{Lu}", 0xD2, "A-Za-z"},
    {"\\p{Ll}", 0xD2, "A-Za-z"},
    {"\\p{Lt}", 0xD2, "A-Za-z"},
    {"\\p{Lm}", 0xD2, "A-Za-z"},
    {"\\p{Lo}", 0xD2, "A-Za-z"},
};
#define N_UCATS (sizeof UCATS / sizeof UCATS[0])

static unsigned char collapse_cpt(uint32_t c) {
    if (c < 128) return (unsigned char)c;
    uint16_t f = tu_flags(c);
    if (f & TU_WHITESPACE) return 0x0B; /* \s of the byte regex matches VT */
    switch (f & TU_MASK_CATEGORIES) {
    case TU_NUMBER: return 0xD1;
    case TU_LETTER: return 0xD2;
    case TU_PUNCTUATION: return 0xD3;
    case TU_ACCENT_MARK: return 0xD4;
    case TU_SYMBOL: return 0xD5;
    default: return 0xD0;
    }
}

static int uses_category(const char *e) {
    for (size_t k = 0; k < N_UCATS; k++)
        if (strstr(e, UCATS[k].name)) return 1;
    return 0;
}

char *tok_regex_collapse(const char *e) {
    if (!uses_category(e)) return NULL;
    size_t n = strlen(e);
    char *out = malloc(n * 16 + 1);
    if (!out) return NULL;
    size_t o = 0;
    int inside = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i] == '[' && (i == 0 || e[i - 1] != '\\')) {
            out[o++] = '[';
            inside = 1;
            continue;
        }
        if (inside && e[i] == ']' && e[i - 1] != '\\') {
            out[o++] = ']';
            inside = 0;
            continue;
        }
        if (e[i] == '\\' && i + 3 < n && e[i + 1] == 'p' && e[i + 2] == '{') {
            const char *close = strchr(e + i + 3, '}');
            if (close && (size_t)(close - e) <= i + 10) {
                size_t plen = (size_t)(close - e) - i + 1;
                const struct ucat *u = NULL;
                for (size_t k = 0; k < N_UCATS; k++)
                    if (strlen(UCATS[k].name) == plen && !memcmp(UCATS[k].name, e + i, plen)) u = &UCATS[k];
                if (u) {
                    if (!inside) out[o++] = '[';
                    out[o++] = (char)u->byte;
                    size_t al = strlen(u->ascii);
                    memcpy(out + o, u->ascii, al);
                    o += al;
                    if (!inside) out[o++] = ']';
                    i += plen - 1;
                    continue;
                }
            }
        }
        out[o++] = e[i];
    }
    out[o] = 0;
    return out;
}

/* ---- compile ---------------------------------------------------------------- */

int tok_pretok_compile(tok_pretok *p, const char *const *exprs, int n) {
    memset(p, 0, sizeof *p);
    if (n < 1 || n > TOK_MAX_REGEX) return ac_err(AC_ERR_INTERNAL, "pre-tokenizer: %d regexes", n);
    for (int i = 0; i < n; i++) {
        const char *e = exprs[i];
        tok_regex *r = &p->re[i];
        p->n = i + 1;
        if (!strcmp(e, RE_GPT2)) {
            r->kind = TOK_RE_GPT2;
            continue;
        }
        if (!strcmp(e, RE_LLAMA3_A) || !strcmp(e, RE_LLAMA3_B)) {
            r->kind = TOK_RE_LLAMA3;
            continue;
        }
        char *col = tok_regex_collapse(e);
        uint32_t opts = PCRE2_DOLLAR_ENDONLY;
        const char *pat = e;
        if (col) {
            r->kind = TOK_RE_COLLAPSED;
            pat = col;
        } else {
            r->kind = TOK_RE_UTF;
            opts |= PCRE2_UTF;
        }
        int errcode = 0;
        PCRE2_SIZE erroff = 0;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, strlen(pat), opts, &errcode, &erroff, NULL);
        free(col);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(errcode, msg, sizeof msg);
            tok_pretok_free(p);
            return ac_err(AC_ERR_INTERNAL, "pre-tokenizer regex %d '%s': %s at offset %zu", i, e, (char *)msg,
                          (size_t)erroff);
        }
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
        r->code = code;
    }
    return AC_OK;
}

int tok_pretok_compile_reference(tok_pretok *p, const char *const *exprs, int n) {
    memset(p, 0, sizeof *p);
    if (n < 1 || n > TOK_MAX_REGEX) return ac_err(AC_ERR_INTERNAL, "pre-tokenizer: %d regexes", n);
    for (int i = 0; i < n; i++) {
        int errcode = 0;
        PCRE2_SIZE erroff = 0;
        p->n = i + 1;
        p->re[i].kind = TOK_RE_UCP;
        p->re[i].code = pcre2_compile((PCRE2_SPTR)exprs[i], strlen(exprs[i]),
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &errcode, &erroff, NULL);
        if (!p->re[i].code) {
            tok_pretok_free(p);
            return ac_err(AC_ERR_INTERNAL, "reference regex %d: error %d at %zu", i, errcode, (size_t)erroff);
        }
    }
    return AC_OK;
}

void tok_pretok_free(tok_pretok *p) {
    for (int i = 0; i < p->n; i++)
        if (p->re[i].code) pcre2_code_free((pcre2_code *)p->re[i].code);
    memset(p, 0, sizeof *p);
}

/* ---- splitting ---------------------------------------------------------------- */

/* output list of piece lengths (code points) */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} lens_t;

static int lens_push(lens_t *l, size_t x) {
    if (x == 0) return 1;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        uint32_t *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return 0;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = (uint32_t)x;
    return 1;
}

#define OOR 0xFFFFFFFFu /* out of range */

/* one chunk [a, b) of cpts, through the GPT-2 matcher (llama.cpp's
 * unicode_regex_split_custom_gpt2 behaviour) */
static int split_gpt2(const uint32_t *cp, const uint16_t *fl, size_t a, size_t b, lens_t *out) {
#define C(i) ((i) >= a && (i) < b ? cp[i] : OOR)
#define F(i) ((i) >= a && (i) < b ? fl[i] : (uint16_t)0)
    size_t prev = a;
#define EMIT(e) do { if (!lens_push(out, (e) - prev)) return 0; prev = (e); pos = (e); } while (0)
    for (size_t pos = a; pos < b;) {
        uint32_t c = C(pos);
        uint16_t f = F(pos);
        if (c == '\'' && pos + 1 < b) { /* 's|'t|'re|'ve|'m|'ll|'d */
            uint32_t n1 = C(pos + 1);
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                EMIT(pos + 2);
                continue;
            }
            if (pos + 2 < b) {
                uint32_t n2 = C(pos + 2);
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    EMIT(pos + 3);
                    continue;
                }
            }
        }
        uint16_t f2 = (c == ' ') ? F(pos + 1) : f;
        size_t q = pos + (c == ' ');
        if (f2 & TU_LETTER) { /* ' ?\p{L}+' */
            while (F(q) & TU_LETTER) q++;
            EMIT(q);
            continue;
        }
        if (f2 & TU_NUMBER) { /* ' ?\p{N}+' */
            while (F(q) & TU_NUMBER) q++;
            EMIT(q);
            continue;
        }
        if (!(f2 & (TU_WHITESPACE | TU_LETTER | TU_NUMBER)) && f2) { /* ' ?[^\s\p{L}\p{N}]+' */
            for (;;) {
                uint16_t g = F(q);
                if ((g & (TU_WHITESPACE | TU_LETTER | TU_NUMBER)) || !g) break;
                q++;
            }
            EMIT(q);
            continue;
        }
        size_t nws = 0;
        while (F(pos + nws) & TU_WHITESPACE) nws++;
        if (nws > 1 && C(pos + nws) != OOR) { /* \s+(?!\S) */
            EMIT(pos + nws - 1);
            continue;
        }
        if (nws > 0) {
            EMIT(pos + nws);
            continue;
        }
        EMIT(pos + 1);
    }
    return 1;
}

static uint32_t ascii_lower(uint32_t c) { return tu_tolower(c == OOR ? 0 : c); }

/* the Llama-3 matcher (llama.cpp's unicode_regex_split_custom_llama3) */
static int split_llama3(const uint32_t *cp, const uint16_t *fl, size_t a, size_t b, lens_t *out) {
    size_t prev = a;
    for (size_t pos = a; pos < b;) {
        uint32_t c = C(pos);
        uint16_t f = F(pos);
        if (c == '\'' && pos + 1 < b) { /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
            uint32_t n1 = ascii_lower(C(pos + 1));
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                EMIT(pos + 2);
                continue;
            }
            if (pos + 2 < b) {
                uint32_t n2 = ascii_lower(C(pos + 2));
                if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                    EMIT(pos + 3);
                    continue;
                }
            }
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || (f & TU_NUMBER))) {
            if ((f & TU_LETTER) || (F(pos + 1) & TU_LETTER)) {
                size_t q = pos + 1;
                while (F(q) & TU_LETTER) q++;
                EMIT(q);
                continue;
            }
        }
        /* \p{N}{1,3} */
        if (f & TU_NUMBER) {
            size_t q = pos, ini = pos;
            while (F(q) & TU_NUMBER) {
                q++;
                if (q - ini >= 3) {
                    EMIT(q);
                    ini = q;
                }
            }
            EMIT(q);
            continue;
        }
        /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
        uint16_t f2 = (c == ' ') ? F(pos + 1) : f;
        if (!(f2 & (TU_WHITESPACE | TU_LETTER | TU_NUMBER)) && f) {
            size_t q = pos + (c == ' ');
            for (;;) {
                uint16_t g = F(q);
                if ((g & (TU_WHITESPACE | TU_LETTER | TU_NUMBER)) || !g) break;
                q++;
            }
            while (C(q) == '\r' || C(q) == '\n') q++;
            EMIT(q);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (F(pos + nws) & TU_WHITESPACE) {
            uint32_t c2 = C(pos + nws);
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            EMIT(last_rn);
            continue;
        }
        if (nws > 1 && C(pos + nws) != OOR) { /* \s+(?!\S) */
            EMIT(pos + nws - 1);
            continue;
        }
        if (nws > 0) { /* \s+ */
            EMIT(pos + nws);
            continue;
        }
        EMIT(pos + 1);
    }
    return 1;
#undef EMIT
#undef C
#undef F
}

/* One chunk through a PCRE2 regex (returns 1, 0 on OOM, -1 on a match error). subj/len is the chunk in the regex's
 * text (bytes); b2c maps a byte offset within the whole text to a code
 * point index (NULL: identity, one byte per code point); base is the
 * chunk's byte offset in the whole text. Text between matches becomes a
 * piece too (std::regex_iterator semantics, as llama.cpp uses). */
static int split_pcre(const pcre2_code *code, int utf, const unsigned char *text, size_t base, size_t blen,
                      const uint32_t *b2c, pcre2_match_data *md, lens_t *out) {
    const unsigned char *subj = text + base;
#define CPT(boff) (b2c ? (size_t)b2c[base + (boff)] : (size_t)(base + (boff)))
    size_t last = 0, pos = 0;
    uint32_t extra = 0;
    for (;;) {
        if (pos > blen) break;
        uint32_t o = extra | (utf ? PCRE2_NO_UTF_CHECK : 0);
        int rc = pcre2_match(code, subj, blen, pos, o, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter keeps its stack on the heap */
            rc = pcre2_match(code, subj, blen, pos, o | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (extra) { /* no non-empty match at an empty match's position: step one character */
                extra = 0;
                if (pos >= blen) break;
                pos++;
                if (utf)
                    while (pos < blen && (subj[pos] & 0xC0) == 0x80) pos++;
                continue;
            }
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            ac_err(AC_ERR_INTERNAL, "pre-tokenizer: pcre2_match: %s", (char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: retry here for a non-empty one (regex_iterator rule) */
            if (ms > last && !lens_push(out, CPT(ms) - CPT(last))) return 0;
            if (ms > last) last = ms;
            pos = ms;
            extra = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
            continue;
        }
        extra = 0;
        if (ms > last && !lens_push(out, CPT(ms) - CPT(last))) return 0;
        if (!lens_push(out, CPT(me) - CPT(ms))) return 0;
        last = pos = me;
    }
    if (last < blen && !lens_push(out, CPT(blen) - CPT(last))) return 0;
    return 1;
#undef CPT
}

int tok_pretok_split(const tok_pretok *p, const uint32_t *cp, size_t n, uint32_t **lens_out, size_t *n_out) {
    int rc = AC_ERR_NOMEM;
    lens_t cur = {0}, nxt = {0};
    uint16_t *fl = NULL;
    unsigned char *col = NULL, *wt = NULL;
    uint32_t *w2c = NULL, *woff = NULL;
    pcre2_match_data *md = NULL;
    *lens_out = NULL;
    *n_out = 0;
    if (n == 0) return AC_OK;
    if (!lens_push(&cur, n)) goto fail;

    int need_fl = 0, need_col = 0, need_wt = 0, vt_ws = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->re[i].kind == TOK_RE_GPT2 || p->re[i].kind == TOK_RE_LLAMA3) need_fl = 1;
        if (p->re[i].kind == TOK_RE_COLLAPSED) need_col = 1;
        if (p->re[i].kind == TOK_RE_UTF) need_wt = vt_ws = 1;
        if (p->re[i].kind == TOK_RE_UCP) need_wt = 1;
    }
    if (need_fl) {
        fl = malloc(n * sizeof *fl);
        if (!fl) goto fail;
        for (size_t i = 0; i < n; i++) fl[i] = tu_flags(cp[i]);
    }
    if (need_col) {
        col = malloc(n + 1);
        if (!col) goto fail;
        for (size_t i = 0; i < n; i++) col[i] = collapse_cpt(cp[i]);
        col[n] = 0;
    }
    if (need_wt) { /* UTF-8 with non-ASCII whitespace -> U+000B; maps both ways */
        wt = malloc(n * 4 + 1);
        woff = malloc((n + 1) * sizeof *woff);
        w2c = malloc((n * 4 + 1) * sizeof *w2c);
        if (!wt || !woff || !w2c) goto fail;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t c = cp[i];
            if (vt_ws && c > 0x7F && (tu_flags(c) & TU_WHITESPACE)) c = 0x0B;
            woff[i] = (uint32_t)o;
            int k = tu_encode(c, (char *)wt + o);
            for (int j = 0; j < k; j++) w2c[o + j] = (uint32_t)i;
            o += (size_t)k;
        }
        woff[n] = (uint32_t)o;
        w2c[o] = (uint32_t)n;
        wt[o] = 0;
    }
    md = pcre2_match_data_create(2, NULL);
    if (!md) goto fail;

    for (int r = 0; r < p->n; r++) {
        const tok_regex *re = &p->re[r];
        nxt.n = 0;
        size_t start = 0;
        for (size_t k = 0; k < cur.n; k++) {
            size_t a = start, b = start + cur.v[k];
            start = b;
            int ok;
            switch (re->kind) {
            case TOK_RE_GPT2: ok = split_gpt2(cp, fl, a, b, &nxt); break;
            case TOK_RE_LLAMA3: ok = split_llama3(cp, fl, a, b, &nxt); break;
            case TOK_RE_COLLAPSED: ok = split_pcre(re->code, 0, col, a, b - a, NULL, md, &nxt); break;
            default: ok = split_pcre(re->code, 1, wt, woff[a], woff[b] - woff[a], w2c, md, &nxt); break;
            }
            if (ok <= 0) {
                rc = ok == 0 ? AC_ERR_NOMEM : AC_ERR_INTERNAL;
                goto fail;
            }
        }
        lens_t t = cur;
        cur = nxt;
        nxt = t;
    }
    *lens_out = cur.v;
    *n_out = cur.n;
    cur.v = NULL;
    rc = AC_OK;
fail:
    if (rc == AC_ERR_NOMEM) ac_err(rc, "pre-tokenizer: out of memory (%zu code points)", n);
    free(cur.v);
    free(nxt.v);
    free(fl);
    free(col);
    free(wt);
    free(woff);
    free(w2c);
    if (md) pcre2_match_data_free(md);
    return rc;
}
