/* routes.c — request and response shapes of the server's routes (routes.h).
 *
 *   POST /v1/embeddings  OpenAI: input (string | [string] | [int] | [[int]]), model,
 *                        encoding_format (float|base64), dimensions, user
 *   GET  /v1/models      OpenAI model list
 *   POST /embed          TEI: inputs (string | [string]), normalize, truncate,
 *                        truncation_direction (Left|Right)
 *   POST /tokenize       TEI: inputs, add_special_tokens
 *   POST /predict        TEI: inputs, raw_scores, truncate, truncation_direction
 *                        (models with a classifier head)
 *   POST /score          label scoring with a decoder: inputs, labels, template
 *                        (the CLI's `score`)
 *   GET  /health, /info, /metrics
 *
 * Every input is checked (type, UTF-8, empty, token ids in range, length) and
 * tokenized here, before it reaches the batcher, so a bad input fails only
 * its own request with a 4xx naming the problem. */
#define _GNU_SOURCE
#include "routes.h"
#include "metrics.h"
#include "sbuf.h"
#include "srvutil.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- routing ------------------------------------------------------------------------ */

static const struct {
    const char *path, *method;
    int route;
} routes[] = {
    {"/v1/embeddings", "POST", SRV_R_EMBEDDINGS},
    {"/v1/models", "GET", SRV_R_MODELS},
    {"/embed", "POST", SRV_R_EMBED},
    {"/tokenize", "POST", SRV_R_TOKENIZE},
    {"/predict", "POST", SRV_R_PREDICT},
    {"/score", "POST", SRV_R_SCORE},
    {"/health", "GET", SRV_R_HEALTH},
    {"/info", "GET", SRV_R_INFO},
    {"/metrics", "GET", SRV_R_METRICS},
};

int srv_route_find(const char *method, const char *path, int *method_ok) {
    *method_ok = 1;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) != 0) continue;
        *method_ok = !strcmp(method, routes[i].method) || (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"));
        return routes[i].route;
    }
    return SRV_R_OTHER;
}

int srv_route_is_inference(int r) {
    return r == SRV_R_EMBEDDINGS || r == SRV_R_EMBED || r == SRV_R_TOKENIZE || r == SRV_R_PREDICT ||
           r == SRV_R_SCORE;
}

int srv_route_openai_style(const char *path) { return path && !strncmp(path, "/v1/", 4); }

/* ---- responses ----------------------------------------------------------------------- */

static void respond(srv_response *rs, int status, sbuf *b, const char *type) {
    free(rs->body);
    memset(rs, 0, sizeof *rs);
    rs->body = sbuf_take(b, &rs->len);
    if (!rs->body) { /* out of memory building the body */
        static const char oom[] = "{\"error\":\"out of memory\",\"error_type\":\"Backend\"}";
        rs->body = strdup(oom);
        rs->len = rs->body ? sizeof oom - 1 : 0;
        status = 500;
        type = "application/json";
    }
    rs->status = status;
    rs->content_type = type;
}

static const char *tei_error_type(int status) {
    switch (status) {
    case 413:
    case 422:
    case 400: return "Validation";
    case 401: return "Unauthorized";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 429: return "Overloaded";
    case 503: return "Unhealthy";
    default: return "Backend";
    }
}

static const char *openai_error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 500:
    case 503: return "server_error";
    default: return "invalid_request_error";
    }
}

static void error_v(srv_response *rs, int openai, int status, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* messages may quote client bytes: keep them valid UTF-8 for the JSON text */
    size_t bad;
    size_t ml = strlen(msg);
    while (!srv_utf8_valid(msg, ml, &bad)) msg[bad] = '?';
    sbuf b = {0};
    if (openai) {
        sbuf_puts(&b, "{\"error\":{\"message\":");
        sbuf_json_str(&b, msg, ml);
        sbuf_printf(&b, ",\"type\":\"%s\",\"param\":null,\"code\":%d}}", openai_error_type(status), status);
    } else {
        sbuf_puts(&b, "{\"error\":");
        sbuf_json_str(&b, msg, ml);
        sbuf_printf(&b, ",\"error_type\":\"%s\"}", tei_error_type(status));
    }
    respond(rs, status, &b, "application/json");
}

void srv_route_error(srv_response *rs, int openai, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_v(rs, openai, status, fmt, ap);
    va_end(ap);
}

/* One request being handled. */
typedef struct rq {
    srv_server *s;
    srv_response *rs;
    int openai;  /* error style */
    int route;
} rq;

/* Sets an error response; returns 1 so that callers can `return fail(...)`. */
static int fail(rq *q, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(rq *q, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_v(q->rs, q->openai, status, fmt, ap);
    va_end(ap);
    return 1;
}

/* status of an invalid value: OpenAI answers 400, TEI 422 */
#define BAD(q) ((q)->openai ? 400 : 422)
/* status of an input over the token limit without truncation */
#define TOO_LONG(q) ((q)->openai ? 400 : 413)

/* ---- inputs -------------------------------------------------------------------------- */

typedef struct inputs {
    int n;
    int32_t **tok; /* [n] owned */
    int *ntok;     /* [n] */
    long total;    /* tokens over all inputs */
} inputs;

static void inputs_free(inputs *in) {
    if (in->tok)
        for (int i = 0; i < in->n; i++) free(in->tok[i]);
    free(in->tok);
    free(in->ntok);
    memset(in, 0, sizeof *in);
}

typedef struct tok_opts {
    int add_special;
    int truncate;
    int left;     /* truncation_direction Left: keep the last tokens */
    int no_limit; /* 1: no token limit (tokenization only) */
} tok_opts;

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

/* Tokenize into a malloc'd array; AC status. */
static int tokenize_alloc(const ac_model *m, const char *s, size_t len, int special, int32_t **out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = (int)(len < (1u << 26) ? len + 16 : (1u << 26)), need = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return AC_ERR_NOMEM;
    int rc = ac_tokenize(m, s, len, special, ids, cap, &need);
    if (rc == AC_ERR_RANGE) {
        free(ids);
        cap = need;
        ids = malloc((size_t)(cap ? cap : 1) * sizeof *ids);
        if (!ids) return AC_ERR_NOMEM;
        rc = ac_tokenize(m, s, len, special, ids, cap, &need);
    }
    if (rc != AC_OK) {
        free(ids);
        return rc;
    }
    *out = ids;
    *n = need;
    return AC_OK;
}

/* Cut an over-long token sequence to `max` tokens keeping the special tokens
 * the tokenizer put around the text (BERT's [CLS] ... [SEP], a decoder's BOS):
 * the text's own tokens (tokenized without specials) are cut on the right or
 * the left. *ids is replaced. AC status. */
static int truncate_ids(const ac_model *m, const char *s, size_t len, int left, int max, int32_t **ids, int *n) {
    int32_t *plain = NULL;
    int np = 0;
    int rc = tokenize_alloc(m, s, len, 0, &plain, &np);
    if (rc != AC_OK) return rc;
    int nspec = *n - np, pre = 0;
    if (nspec < 0 || nspec >= max) {
        free(plain);
        return AC_ERR_INPUT;
    }
    /* where the text's tokens start inside the full sequence */
    for (pre = 0; pre <= nspec; pre++)
        if (np == 0 || !memcmp(*ids + pre, plain, (size_t)np * sizeof *plain)) break;
    if (pre > nspec) pre = 0; /* not a plain framing: cut the full sequence itself */
    const int post = nspec - pre, keep = max - nspec;
    int32_t *o = malloc((size_t)max * sizeof *o);
    if (!o) {
        free(plain);
        return AC_ERR_NOMEM;
    }
    memcpy(o, *ids, (size_t)pre * sizeof *o);
    memcpy(o + pre, plain + (left ? np - keep : 0), (size_t)keep * sizeof *o);
    memcpy(o + pre + keep, *ids + *n - post, (size_t)post * sizeof *o);
    free(plain);
    free(*ids);
    *ids = o;
    *n = max;
    return AC_OK;
}

/* Text input i -> tokens (validated, truncated per the options). 0 or 1 (response set). */
static int text_input(rq *q, int i, const char *s, const tok_opts *o, int32_t **out, int *n) {
    size_t len = strlen(s), bad = 0;
    if (!srv_utf8_valid(s, len, &bad)) return fail(q, BAD(q), "input %d is not valid UTF-8 (byte %zu)", i, bad);
    if (len == 0 || is_blank(s, len)) return fail(q, BAD(q), "input %d is empty", i);
    int rc = tokenize_alloc(q->s->model, s, len, o->add_special, out, n);
    if (rc != AC_OK) return fail(q, rc == AC_ERR_NOMEM ? 500 : BAD(q), "input %d: %s", i, ac_last_error());
    const int max = q->s->max_input;
    if (*n > max && !o->no_limit) {
        if (!o->truncate) {
            free(*out);
            *out = NULL;
            return fail(q, TOO_LONG(q), "input %d has %d tokens, more than the maximum of %d (set \"truncate\": true%s)",
                        i, *n, max, q->openai ? " or start the server with --auto-truncate" : "");
        }
        rc = truncate_ids(q->s->model, s, len, o->left, max, out, n);
        if (rc != AC_OK) {
            free(*out);
            *out = NULL;
            return fail(q, rc == AC_ERR_NOMEM ? 500 : BAD(q), "input %d cannot be truncated to %d tokens", i, max);
        }
    }
    return 0;
}

/* An array of token ids as input i. 0 or 1. */
static int ids_input(rq *q, int i, const cJSON *arr, const tok_opts *o, int32_t **out, int *n) {
    int cnt = cJSON_GetArraySize(arr);
    if (cnt == 0) return fail(q, BAD(q), "input %d is an empty array of token ids", i);
    const int max = q->s->max_input;
    if (cnt > max && !o->truncate)
        return fail(q, TOO_LONG(q), "input %d has %d tokens, more than the maximum of %d", i, cnt, max);
    int keep = cnt > max ? max : cnt, skip = cnt > max && o->left ? cnt - max : 0, k = 0, j = 0;
    int32_t *ids = malloc((size_t)keep * sizeof *ids);
    if (!ids) return fail(q, 500, "out of memory");
    const int V = q->s->info.n_vocab;
    for (const cJSON *e = arr->child; e; e = e->next, j++) {
        double v = e->valuedouble;
        if (!cJSON_IsNumber(e) || v != floor(v) || v < 0 || v >= V) {
            free(ids);
            if (!cJSON_IsNumber(e)) return fail(q, BAD(q), "input %d: element %d is not a token id", i, j);
            return fail(q, BAD(q), "input %d: token id %.17g at position %d is not an integer in [0, %d)", i, v, j, V);
        }
        if (j >= skip && k < keep) ids[k++] = (int32_t)v;
    }
    *out = ids;
    *n = keep;
    return 0;
}

/* Parse `v` (string | [string] | [int] | [[int]]) into tokenized inputs.
 * allow_ids: token-id forms accepted. 0 or 1 (response set). */
static int parse_inputs(rq *q, const cJSON *v, const char *field, int allow_ids, const tok_opts *o, inputs *in) {
    memset(in, 0, sizeof *in);
    if (!v) return fail(q, BAD(q), "missing field \"%s\"", field);
    double t0 = srv_now();
    int n, kind; /* 0 strings, 1 one id array, 2 arrays of ids */
    if (cJSON_IsString(v)) {
        n = 1, kind = 0;
    } else if (cJSON_IsArray(v)) {
        n = cJSON_GetArraySize(v);
        if (n == 0) return fail(q, BAD(q), "\"%s\" is an empty array", field);
        const cJSON *f = v->child;
        kind = cJSON_IsString(f) ? 0 : cJSON_IsNumber(f) ? 1 : cJSON_IsArray(f) ? 2 : -1;
        if (kind < 0 || (kind > 0 && !allow_ids))
            return fail(q, BAD(q), "\"%s\" must be a string or an array of strings%s", field,
                        allow_ids ? ", of token ids, or of arrays of token ids" : "");
        int j = 0;
        for (const cJSON *e = f; e; e = e->next, j++) {
            int k = cJSON_IsString(e) ? 0 : cJSON_IsNumber(e) ? 1 : cJSON_IsArray(e) ? 2 : -1;
            if (k != kind)
                return fail(q, BAD(q), "\"%s\"[%d]: mixed types (every element must be a %s)", field, j,
                            kind == 0 ? "string" : kind == 1 ? "token id" : "array of token ids");
        }
        if (kind == 1) n = 1;
    } else {
        return fail(q, BAD(q), "\"%s\" must be a string or an array", field);
    }
    if (n > q->s->cfg.max_client_batch)
        return fail(q, 413, "\"%s\" has %d inputs, more than the maximum of %d per request", field, n,
                    q->s->cfg.max_client_batch);
    in->tok = calloc((size_t)n, sizeof *in->tok);
    in->ntok = calloc((size_t)n, sizeof *in->ntok);
    if (!in->tok || !in->ntok) {
        inputs_free(in);
        return fail(q, 500, "out of memory");
    }
    in->n = n;
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (int i = 0; i < n; i++, e = e ? e->next : NULL) {
        int r = kind == 0   ? text_input(q, i, e->valuestring, o, &in->tok[i], &in->ntok[i])
                : kind == 1 ? ids_input(q, i, v, o, &in->tok[i], &in->ntok[i])
                            : ids_input(q, i, e, o, &in->tok[i], &in->ntok[i]);
        if (r) {
            inputs_free(in);
            return 1;
        }
        in->total += in->ntok[i];
    }
    srv_metrics_stage(SRV_ST_TOKENIZE, srv_now() - t0);
    return 0;
}

/* Optional boolean field; 0 or 1 (response set). */
static int get_bool(rq *q, const cJSON *obj, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return fail(q, BAD(q), "\"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* truncate + truncation_direction (TEI) */
static int get_trunc(rq *q, const cJSON *obj, tok_opts *o) {
    o->truncate = q->s->cfg.auto_truncate;
    if (get_bool(q, obj, "truncate", &o->truncate)) return 1;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(obj, "truncation_direction");
    if (d && !cJSON_IsNull(d)) {
        if (!cJSON_IsString(d)) return fail(q, BAD(q), "\"truncation_direction\" must be \"Left\" or \"Right\"");
        if (!strcasecmp(d->valuestring, "left")) o->left = 1;
        else if (!strcasecmp(d->valuestring, "right")) o->left = 0;
        else return fail(q, BAD(q), "\"truncation_direction\" must be \"Left\" or \"Right\"");
    }
    return 0;
}

/* 1 if a JSON string in the text holds the escape \u0000 (the parser would end
 * the C string there and silently drop the rest of the input). */
static int has_nul_escape(const char *p, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            in_str = p[i] == '"';
        } else if (p[i] == '"') {
            in_str = 0;
        } else if (p[i] == '\\' && i + 1 < n) {
            if (p[i + 1] == 'u' && i + 5 < n && !memcmp(p + i + 2, "0000", 4)) return 1;
            i++; /* the escaped character */
        }
    }
    return 0;
}

/* Parse the body as a JSON object. NULL (response set) on error. */
static cJSON *parse_body(rq *q, const char *body, size_t len) {
    if (len == 0) return fail(q, 400, "empty request body (a JSON object is expected)"), NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return fail(q, 400, "malformed JSON near byte %zu", at), NULL;
    }
    /* nothing but whitespace after the value */
    for (const char *p = end; p && p < body + len; p++)
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(root);
            return fail(q, 400, "malformed JSON: trailing data at byte %zu", (size_t)(p - body)), NULL;
        }
    if (has_nul_escape(body, len)) {
        cJSON_Delete(root);
        return fail(q, BAD(q), "a string holds the NUL character (\\u0000), which inputs cannot contain"), NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(q, BAD(q), "the request body must be a JSON object"), NULL;
    }
    return root;
}

/* ---- running jobs ---------------------------------------------------------------------- */

/* Run a job; on a failed sequence set the error response. 0 or 1. */
static int run_job(rq *q, srv_job *j) {
    int *st = calloc((size_t)j->n, sizeof *st);
    char(*err)[SRV_ERR_LEN] = calloc((size_t)j->n, sizeof *err);
    if (!st || !err) {
        free(st);
        free(err);
        return fail(q, 500, "out of memory");
    }
    j->status = st;
    j->err = err;
    int rc = srv_batcher_run(q->s->batcher, j), r = 0;
    if (rc != AC_OK) {
        r = fail(q, 503, "the server is shutting down");
    } else {
        for (int i = 0; i < j->n; i++) {
            if (st[i] == AC_OK) continue;
            if (st[i] == SRV_CANCELLED) {
                r = fail(q, 503, "the server is shutting down");
                break;
            }
            int status = st[i] == AC_ERR_INPUT || st[i] == AC_ERR_ARG || st[i] == AC_ERR_UNSUPPORTED ? BAD(q) : 500;
            r = fail(q, status, "input %d: %s", i, err[i]);
            break;
        }
    }
    free(st);
    free(err);
    j->status = NULL;
    j->err = NULL;
    return r;
}

static int embed_inputs(rq *q, const inputs *in, int normalize, float **out) {
    const int D = q->s->info.n_embd;
    *out = malloc((size_t)in->n * D * sizeof **out);
    if (!*out) return fail(q, 500, "out of memory");
    srv_job j = {0};
    j.kind = SRV_JOB_EMBED;
    j.n = in->n;
    j.tokens = in->tok;
    j.n_tokens = in->ntok;
    j.out = *out;
    if (run_job(q, &j)) {
        free(*out);
        *out = NULL;
        return 1;
    }
    if (normalize)
        for (int i = 0; i < in->n; i++) {
            float *e = *out + (size_t)i * D;
            double s = 0;
            for (int k = 0; k < D; k++) s += (double)e[k] * e[k];
            float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.f;
            for (int k = 0; k < D; k++) e[k] *= inv;
        }
    return 0;
}

static int require_model(rq *q) {
    if (!atomic_load(&q->s->ready)) return fail(q, 503, "the model is loading");
    return 0;
}

/* ---- POST /v1/embeddings -------------------------------------------------------------------- */

static void route_embeddings(rq *q, const char *body, size_t len) {
    cJSON *root = parse_body(q, body, len);
    if (!root) return;
    inputs in = {0};
    float *emb = NULL;
    const int D = q->s->info.n_embd;
    int b64 = 0;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) {
        fail(q, 400, "\"model\" must be a string");
        goto out;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) || (strcmp(fmt->valuestring, "float") && strcmp(fmt->valuestring, "base64"))) {
            fail(q, 400, "\"encoding_format\" must be \"float\" or \"base64\"");
            goto out;
        }
        b64 = !strcmp(fmt->valuestring, "base64");
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(root, "dimensions");
    if (dims && !cJSON_IsNull(dims)) {
        if (!cJSON_IsNumber(dims) || dims->valuedouble != floor(dims->valuedouble) || dims->valuedouble < 1) {
            fail(q, 400, "\"dimensions\" must be a positive integer");
            goto out;
        }
        if (dims->valuedouble != D) {
            fail(q, 400, "model '%s' does not support \"dimensions\" %.17g: its embeddings have %d dimensions "
                         "(it was not trained for shortened embeddings)", q->s->cfg.model_id, dims->valuedouble, D);
            goto out;
        }
    }
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
    if (user && !cJSON_IsNull(user) && !cJSON_IsString(user)) {
        fail(q, 400, "\"user\" must be a string");
        goto out;
    }
    tok_opts o = {1, q->s->cfg.auto_truncate, 0, 0};
    if (parse_inputs(q, cJSON_GetObjectItemCaseSensitive(root, "input"), "input", 1, &o, &in)) goto out;
    if (embed_inputs(q, &in, 1, &emb)) goto out;

    sbuf b = {0};
    sbuf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < in.n; i++) {
        const float *e = emb + (size_t)i * D;
        sbuf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        if (b64) {
            sbuf_put(&b, "\"", 1);
            sbuf_base64(&b, e, (size_t)D * sizeof *e); /* little-endian float32, as OpenAI's */
            sbuf_put(&b, "\"", 1);
        } else {
            sbuf_put(&b, "[", 1);
            for (int k = 0; k < D; k++) {
                if (k) sbuf_put(&b, ",", 1);
                sbuf_json_float(&b, e[k]);
            }
            sbuf_put(&b, "]", 1);
        }
        sbuf_put(&b, "}", 1);
    }
    sbuf_puts(&b, "],\"model\":");
    const char *mid = model && cJSON_IsString(model) ? model->valuestring : q->s->cfg.model_id;
    size_t bad;
    if (!srv_utf8_valid(mid, strlen(mid), &bad)) mid = q->s->cfg.model_id;
    sbuf_json_str(&b, mid, strlen(mid));
    sbuf_printf(&b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}", in.total, in.total);
    respond(q->rs, 200, &b, "application/json");
out:
    free(emb);
    inputs_free(&in);
    cJSON_Delete(root);
}

/* ---- POST /embed (TEI) ------------------------------------------------------------------- */

static void route_embed(rq *q, const char *body, size_t len) {
    cJSON *root = parse_body(q, body, len);
    if (!root) return;
    inputs in = {0};
    float *emb = NULL;
    const int D = q->s->info.n_embd;
    int normalize = 1;
    tok_opts o = {1, 0, 0, 0};
    if (get_bool(q, root, "normalize", &normalize) || get_trunc(q, root, &o)) goto out;
    const cJSON *pn = cJSON_GetObjectItemCaseSensitive(root, "prompt_name");
    if (pn && !cJSON_IsNull(pn)) {
        fail(q, 422, "\"prompt_name\" is not supported: the model has no prompts");
        goto out;
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(root, "dimensions");
    if (dims && !cJSON_IsNull(dims) && (!cJSON_IsNumber(dims) || dims->valuedouble != D)) {
        fail(q, 422, "\"dimensions\": the model's embeddings have %d dimensions and cannot be shortened", D);
        goto out;
    }
    if (parse_inputs(q, cJSON_GetObjectItemCaseSensitive(root, "inputs"), "inputs", 1, &o, &in)) goto out;
    if (embed_inputs(q, &in, normalize, &emb)) goto out;
    sbuf b = {0};
    sbuf_put(&b, "[", 1);
    for (int i = 0; i < in.n; i++) {
        sbuf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < D; k++) {
            if (k) sbuf_put(&b, ",", 1);
            sbuf_json_float(&b, emb[(size_t)i * D + k]);
        }
        sbuf_put(&b, "]", 1);
    }
    sbuf_put(&b, "]", 1);
    respond(q->rs, 200, &b, "application/json");
out:
    free(emb);
    inputs_free(&in);
    cJSON_Delete(root);
}

/* ---- POST /tokenize (TEI) ------------------------------------------------------------------- */

/* A JSON string of bytes that may not be valid UTF-8 (a byte-level token's
 * piece can be part of a character): invalid bytes become U+FFFD. */
static void json_str_lossy(sbuf *b, const char *s, size_t n) {
    size_t bad;
    if (srv_utf8_valid(s, n, &bad)) {
        sbuf_json_str(b, s, n);
        return;
    }
    sbuf t = {0};
    size_t i = 0;
    while (i < n) {
        if (srv_utf8_valid(s + i, n - i, &bad)) {
            sbuf_put(&t, s + i, n - i);
            break;
        }
        sbuf_put(&t, s + i, bad);
        sbuf_puts(&t, "\xEF\xBF\xBD");
        i += bad + 1;
    }
    if (sbuf_ok(&t)) sbuf_json_str(b, t.p ? t.p : "", t.n);
    else b->failed = 1;
    sbuf_free(&t);
}

static void route_tokenize(rq *q, const char *body, size_t len) {
    cJSON *root = parse_body(q, body, len);
    if (!root) return;
    inputs in = {0};
    tok_opts o = {1, 0, 0, 1}; /* tokenization only: any length (bounded by the body limit) */
    if (get_bool(q, root, "add_special_tokens", &o.add_special)) goto out;
    if (parse_inputs(q, cJSON_GetObjectItemCaseSensitive(root, "inputs"), "inputs", 0, &o, &in)) goto out;
    const int32_t bos = ac_token_bos(q->s->model), eos = ac_token_eos(q->s->model);
    sbuf b = {0};
    sbuf_put(&b, "[", 1);
    char piece[256];
    for (int i = 0; i < in.n; i++) {
        sbuf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < in.ntok[i]; k++) {
            int32_t id = in.tok[i][k];
            int np = 0;
            if (ac_token_to_piece(q->s->model, id, piece, sizeof piece, &np) != AC_OK) np = 0;
            if (np > (int)sizeof piece) np = (int)sizeof piece;
            sbuf_printf(&b, "%s{\"id\":%d,\"text\":", k ? "," : "", id);
            json_str_lossy(&b, piece, (size_t)np);
            sbuf_printf(&b, ",\"special\":%s,\"start\":null,\"stop\":null}",
                        (id == bos && bos >= 0) || (id == eos && eos >= 0) ? "true" : "false");
        }
        sbuf_put(&b, "]", 1);
    }
    sbuf_put(&b, "]", 1);
    respond(q->rs, 200, &b, "application/json");
out:
    inputs_free(&in);
    cJSON_Delete(root);
}

/* ---- POST /predict (TEI) -------------------------------------------------------------------- */

typedef struct scored {
    double score;
    int label;
} scored;

static int by_score_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    return x->score < y->score ? 1 : x->score > y->score ? -1 : x->label - y->label;
}

static void route_predict(rq *q, const char *body, size_t len) {
    const int C = q->s->info.n_cls_out;
    if (C <= 0) {
        fail(q, 400, "model '%s' has no classification head: /predict is not available", q->s->cfg.model_id);
        return;
    }
    cJSON *root = parse_body(q, body, len);
    if (!root) return;
    inputs in = {0};
    float *out = NULL;
    scored *sc = NULL;
    int raw = 0;
    tok_opts o = {1, 0, 0, 0};
    if (get_bool(q, root, "raw_scores", &raw) || get_trunc(q, root, &o)) goto out;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (v && cJSON_IsArray(v) && v->child && cJSON_IsArray(v->child)) {
        fail(q, 422, "sentence pairs are not supported: \"inputs\" must be a string or an array of strings");
        goto out;
    }
    if (parse_inputs(q, v, "inputs", 0, &o, &in)) goto out;
    out = malloc((size_t)in.n * C * sizeof *out);
    sc = malloc((size_t)C * sizeof *sc);
    if (!out || !sc) {
        fail(q, 500, "out of memory");
        goto out;
    }
    srv_job j = {0};
    j.kind = SRV_JOB_PREDICT;
    j.n = in.n;
    j.tokens = in.tok;
    j.n_tokens = in.ntok;
    j.out = out;
    if (run_job(q, &j)) goto out;
    sbuf b = {0};
    const int batch = cJSON_IsArray(v);
    if (batch) sbuf_put(&b, "[", 1);
    for (int i = 0; i < in.n; i++) {
        const float *y = out + (size_t)i * C;
        double mx = y[0], sum = 0;
        for (int c = 1; c < C; c++) mx = y[c] > mx ? y[c] : mx;
        for (int c = 0; c < C; c++) sum += exp((double)y[c] - mx);
        for (int c = 0; c < C; c++) {
            sc[c].label = c;
            sc[c].score = raw ? y[c] : C == 1 ? 1.0 / (1.0 + exp(-(double)y[c])) : exp((double)y[c] - mx) / sum;
        }
        qsort(sc, (size_t)C, sizeof *sc, by_score_desc);
        sbuf_puts(&b, i ? ",[" : "[");
        for (int c = 0; c < C; c++) {
            sbuf_puts(&b, c ? ",{\"score\":" : "{\"score\":");
            sbuf_json_float(&b, sc[c].score);
            sbuf_puts(&b, ",\"label\":");
            const char *lab = q->s->cls_labels[sc[c].label];
            sbuf_json_str(&b, lab, strlen(lab));
            sbuf_put(&b, "}", 1);
        }
        sbuf_put(&b, "]", 1);
    }
    if (batch) sbuf_put(&b, "]", 1);
    respond(q->rs, 200, &b, "application/json");
out:
    free(out);
    free(sc);
    inputs_free(&in);
    cJSON_Delete(root);
}

/* ---- POST /score (label scoring with a decoder) ------------------------------------------------ */

#define MAX_LABELS 64

/* template with the first {text} replaced; malloc'd */
static char *apply_template(const char *tpl, const char *text) {
    const char *at = strstr(tpl, "{text}");
    char *s = NULL;
    if (!at) return NULL;
    return asprintf(&s, "%.*s%s%s", (int)(at - tpl), tpl, text, at + 6) < 0 ? NULL : s;
}

static void route_score(rq *q, const char *body, size_t len) {
    if (!q->s->info.causal || !q->s->info.has_lm_head) {
        fail(q, 400, "model '%s' (%s) cannot score labels: /score needs a decoder with an LM head",
             q->s->cfg.model_id, q->s->info.arch_name);
        return;
    }
    cJSON *root = parse_body(q, body, len);
    if (!root) return;
    inputs in = {0};
    int n = 0, nl = 0;
    char **prompts = NULL, **cont = NULL;
    const char *labels[MAX_LABELS];
    double *lp = NULL;
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(root, "template");
    const char *tpl = "{text}";
    if (tv && !cJSON_IsNull(tv)) {
        size_t bad;
        if (!cJSON_IsString(tv)) {
            fail(q, 422, "\"template\" must be a string");
            goto out;
        }
        if (!srv_utf8_valid(tv->valuestring, strlen(tv->valuestring), &bad)) {
            fail(q, 422, "\"template\" is not valid UTF-8 (byte %zu)", bad);
            goto out;
        }
        if (!strstr(tv->valuestring, "{text}")) {
            fail(q, 422, "\"template\" must contain {text}");
            goto out;
        }
        tpl = tv->valuestring;
    }
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(root, "labels");
    if (!lv || !cJSON_IsArray(lv) || cJSON_GetArraySize(lv) < 1) {
        fail(q, 422, "\"labels\" must be a non-empty array of strings");
        goto out;
    }
    for (const cJSON *e = lv->child; e; e = e->next) {
        size_t bad;
        if (nl == MAX_LABELS) {
            fail(q, 422, "\"labels\": more than %d labels", MAX_LABELS);
            goto out;
        }
        if (!cJSON_IsString(e) || is_blank(e->valuestring, strlen(e->valuestring))) {
            fail(q, 422, "\"labels\"[%d] must be a non-empty string", nl);
            goto out;
        }
        if (!srv_utf8_valid(e->valuestring, strlen(e->valuestring), &bad)) {
            fail(q, 422, "\"labels\"[%d] is not valid UTF-8 (byte %zu)", nl, bad);
            goto out;
        }
        labels[nl++] = e->valuestring;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (!v || !(cJSON_IsString(v) || cJSON_IsArray(v))) {
        fail(q, 422, "\"inputs\" must be a string or an array of strings");
        goto out;
    }
    n = cJSON_IsString(v) ? 1 : cJSON_GetArraySize(v);
    if (n == 0) {
        fail(q, 422, "\"inputs\" is an empty array");
        goto out;
    }
    if (n > q->s->cfg.max_client_batch) {
        fail(q, 413, "\"inputs\" has %d inputs, more than the maximum of %d per request", n, q->s->cfg.max_client_batch);
        goto out;
    }
    prompts = calloc((size_t)n, sizeof *prompts);
    cont = calloc((size_t)n * nl, sizeof *cont);
    lp = calloc((size_t)n * nl, sizeof *lp);
    in.tok = calloc((size_t)n, sizeof *in.tok);
    in.ntok = calloc((size_t)n, sizeof *in.ntok);
    if (!prompts || !cont || !lp || !in.tok || !in.ntok) {
        fail(q, 500, "out of memory");
        goto out;
    }
    in.n = n;
    double t0 = srv_now();
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (int i = 0; i < n; i++, e = e->next) {
        if (!cJSON_IsString(e)) {
            fail(q, 422, "\"inputs\"[%d] must be a string", i);
            goto out;
        }
        size_t bad, tl = strlen(e->valuestring);
        if (!srv_utf8_valid(e->valuestring, tl, &bad)) {
            fail(q, 422, "input %d is not valid UTF-8 (byte %zu)", i, bad);
            goto out;
        }
        if (tl == 0 || is_blank(e->valuestring, tl)) {
            fail(q, 422, "input %d is empty", i);
            goto out;
        }
        if (!(prompts[i] = apply_template(tpl, e->valuestring))) {
            fail(q, 500, "out of memory");
            goto out;
        }
        int rc = tokenize_alloc(q->s->model, prompts[i], strlen(prompts[i]), 1, &in.tok[i], &in.ntok[i]);
        if (rc != AC_OK) {
            fail(q, rc == AC_ERR_NOMEM ? 500 : 422, "input %d: %s", i, ac_last_error());
            goto out;
        }
        if (in.ntok[i] + 8 > q->s->max_input) { /* room for the labels' tokens */
            fail(q, 413, "input %d: the prompt has %d tokens, more than the maximum of %d", i, in.ntok[i],
                 q->s->max_input - 8);
            goto out;
        }
        size_t pl = strlen(prompts[i]);
        int need_space = pl > 0 && !isspace((unsigned char)prompts[i][pl - 1]);
        for (int k = 0; k < nl; k++)
            if (asprintf(&cont[(size_t)i * nl + k], "%s%s", need_space ? " " : "", labels[k]) < 0) {
                cont[(size_t)i * nl + k] = NULL;
                fail(q, 500, "out of memory");
                goto out;
            }
    }
    srv_metrics_stage(SRV_ST_TOKENIZE, srv_now() - t0);
    /* one job per prompt: ac_score_labels runs its own forward (all labels at once) */
    for (int i = 0; i < n; i++) {
        srv_job j = {0};
        j.kind = SRV_JOB_SCORE;
        j.n = 1;
        j.n_tokens = &in.ntok[i];
        j.prompts = (const char *const *)&prompts[i];
        j.labels = (const char *const *)&cont[(size_t)i * nl];
        j.n_labels = nl;
        j.logprobs = lp + (size_t)i * nl;
        if (run_job(q, &j)) goto out;
    }
    sbuf b = {0};
    sbuf_put(&b, "[", 1);
    for (int i = 0; i < n; i++) {
        int best = 0;
        sbuf_puts(&b, i ? ",{\"logprobs\":{" : "{\"logprobs\":{");
        for (int k = 0; k < nl; k++) {
            if (k) sbuf_put(&b, ",", 1);
            sbuf_json_str(&b, labels[k], strlen(labels[k]));
            sbuf_put(&b, ":", 1);
            sbuf_json_float(&b, lp[(size_t)i * nl + k]);
            if (lp[(size_t)i * nl + k] > lp[(size_t)i * nl + best]) best = k;
        }
        sbuf_puts(&b, "},\"label\":");
        sbuf_json_str(&b, labels[best], strlen(labels[best]));
        sbuf_printf(&b, ",\"tokens\":%d}", in.ntok[i]);
    }
    sbuf_put(&b, "]", 1);
    respond(q->rs, 200, &b, "application/json");
out:
    if (prompts)
        for (int i = 0; i < n; i++) free(prompts[i]);
    if (cont)
        for (int i = 0; i < n * nl; i++) free(cont[i]);
    free(prompts);
    free(cont);
    free(lp);
    inputs_free(&in);
    cJSON_Delete(root);
}

/* ---- GET routes ----------------------------------------------------------------------------- */

static const char *pool_name(int p) {
    switch (p) {
    case AC_POOL_MEAN: return "mean";
    case AC_POOL_CLS: return "cls";
    case AC_POOL_LAST: return "last";
    default: return "none";
    }
}

static void route_models(rq *q) {
    sbuf b = {0};
    sbuf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    sbuf_json_str(&b, q->s->cfg.model_id, strlen(q->s->cfg.model_id));
    sbuf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"attncache\"}]}", (long long)time(NULL));
    respond(q->rs, 200, &b, "application/json");
}

static void route_info(rq *q) {
    srv_server *s = q->s;
    const ac_model_info *f = &s->info;
    sbuf b = {0};
    sbuf_puts(&b, "{\"model_id\":");
    sbuf_json_str(&b, s->cfg.model_id, strlen(s->cfg.model_id));
    sbuf_printf(&b, ",\"model_sha\":null,\"model_dtype\":\"%s\",\"model_type\":",
                f->weight_type == 0 ? "float32" : f->weight_type == 1 ? "float16" : f->weight_type == 30 ? "bfloat16" : "q8_0");
    if (f->n_cls_out > 0) {
        sbuf_puts(&b, "{\"classifier\":{\"id2label\":{");
        for (int c = 0; c < f->n_cls_out; c++) {
            sbuf_printf(&b, "%s\"%d\":", c ? "," : "", c);
            sbuf_json_str(&b, s->cls_labels[c], strlen(s->cls_labels[c]));
        }
        sbuf_puts(&b, "},\"label2id\":{");
        for (int c = 0; c < f->n_cls_out; c++) {
            if (c) sbuf_put(&b, ",", 1);
            sbuf_json_str(&b, s->cls_labels[c], strlen(s->cls_labels[c]));
            sbuf_printf(&b, ":%d", c);
        }
        sbuf_puts(&b, "}}}");
    } else {
        int p = s->cfg.pooling == AC_POOL_DEFAULT ? f->pooling : s->cfg.pooling;
        sbuf_printf(&b, "{\"embedding\":{\"pooling\":\"%s\"}}", pool_name(p));
    }
    sbuf_printf(&b,
                ",\"architecture\":\"%s\",\"causal\":%s,\"hidden_size\":%d,\"num_layers\":%d,"
                "\"max_concurrent_requests\":%d,\"max_input_length\":%d,\"max_batch_tokens\":%d,"
                "\"max_batch_requests\":%d,\"max_client_batch_size\":%d,\"auto_truncate\":%s,"
                "\"workers\":%d,\"attention_cache\":%s,\"prefix_cache\":",
                f->arch_name, f->causal ? "true" : "false", f->n_embd, f->n_layer, s->cfg.max_concurrent,
                s->max_input, s->cfg.max_batch_tokens, s->cfg.max_batch_requests, s->cfg.max_client_batch,
                s->cfg.auto_truncate ? "true" : "false", s->cfg.workers, s->cfg.cache_dir ? "true" : "false");
    ac_prefix_stats ps;
    if (s->prefix && ac_prefix_get_stats(s->prefix, &ps) == AC_OK)
        sbuf_printf(&b, "{\"max_bytes\":%lld,\"min_match\":%d}", (long long)ps.max_bytes,
                    s->cfg.prefix_min ? s->cfg.prefix_min : ac_prefix_default_params().min_match);
    else
        sbuf_puts(&b, "null");
    sbuf_printf(&b, ",\"version\":\"%d.%d\"}", AC_VERSION_MAJOR, AC_VERSION_MINOR);
    respond(q->rs, 200, &b, "application/json");
}

static void route_health(rq *q) {
    sbuf b = {0};
    int st = 200;
    if (atomic_load(&q->s->draining)) sbuf_puts(&b, "{\"status\":\"draining\"}"), st = 503;
    else if (!atomic_load(&q->s->ready)) sbuf_puts(&b, "{\"status\":\"loading\"}"), st = 503;
    else sbuf_puts(&b, "{\"status\":\"ok\"}");
    respond(q->rs, st, &b, "application/json");
}

static void route_metrics(rq *q) {
    srv_server *s = q->s;
    srv_gauges g = {0};
    g.ready = atomic_load(&s->ready); /* the batcher is set before ready (seq_cst): read it only after */
    srv_batcher *bt = g.ready ? s->batcher : NULL;
    if (bt) srv_batcher_depth(bt, &g.queue_sequences, &g.queue_tokens);
    g.in_flight = atomic_load(&s->in_flight);
    sbuf b = {0};
    srv_metrics_render(&b, &g);
    ac_cache_stats cs;
    if (bt && srv_batcher_cache_stats(bt, &cs)) {
        sbuf_printf(&b,
                    "# HELP attncache_cache_lookups_total Sequences looked up in the attention cache.\n"
                    "# TYPE attncache_cache_lookups_total counter\nattncache_cache_lookups_total %lld\n"
                    "# HELP attncache_cache_hits_total Sequences served from the attention cache.\n"
                    "# TYPE attncache_cache_hits_total counter\nattncache_cache_hits_total %lld\n"
                    "# HELP attncache_cache_misses_total Sequences computed exactly.\n"
                    "# TYPE attncache_cache_misses_total counter\nattncache_cache_misses_total %lld\n"
                    "# HELP attncache_cache_hit_rate Hits over lookups since start.\n"
                    "# TYPE attncache_cache_hit_rate gauge\nattncache_cache_hit_rate %.6g\n"
                    "# HELP attncache_cache_bytes_read_total Compressed map bytes used.\n"
                    "# TYPE attncache_cache_bytes_read_total counter\nattncache_cache_bytes_read_total %llu\n"
                    "# HELP attncache_cache_entries Entries in the attention cache.\n"
                    "# TYPE attncache_cache_entries gauge\nattncache_cache_entries %lld\n"
                    "# HELP attncache_cache_lookup_seconds_total Lookup time (features, key, search, fetch).\n"
                    "# TYPE attncache_cache_lookup_seconds_total counter\nattncache_cache_lookup_seconds_total %.6f\n"
                    "# HELP attncache_cache_lookups_skipped_total Sequences computed exactly without a lookup: the "
                    "cache's recent hit rate was under --adapt-floor.\n"
                    "# TYPE attncache_cache_lookups_skipped_total counter\nattncache_cache_lookups_skipped_total %lld\n"
                    "# HELP attncache_cache_probes_total Lookups made while skipping, to see whether hits came back.\n"
                    "# TYPE attncache_cache_probes_total counter\nattncache_cache_probes_total %lld\n"
                    "# HELP attncache_cache_skipping 1 while lookups are being skipped (adaptive lookups).\n"
                    "# TYPE attncache_cache_skipping gauge\nattncache_cache_skipping %d\n",
                    (long long)cs.queries, (long long)cs.hits, (long long)(cs.queries - cs.hits),
                    cs.queries ? (double)cs.hits / (double)cs.queries : 0.0, (unsigned long long)cs.bytes_read,
                    (long long)cs.entries, cs.t_features + cs.t_key + cs.t_search + cs.t_fetch,
                    (long long)cs.lookups_skipped, (long long)cs.probes, cs.skipping);
    }
    ac_prefix_cache *pc = g.ready ? s->prefix : NULL;
    ac_prefix_stats ps;
    if (pc && ac_prefix_get_stats(pc, &ps) == AC_OK)
        sbuf_printf(&b,
                    "# HELP attncache_prefix_lookups_total Sequences looked up in the prefix K/V cache.\n"
                    "# TYPE attncache_prefix_lookups_total counter\nattncache_prefix_lookups_total %lld\n"
                    "# HELP attncache_prefix_hits_total Sequences that reused a stored prefix (--prefix-min tokens or more).\n"
                    "# TYPE attncache_prefix_hits_total counter\nattncache_prefix_hits_total %lld\n"
                    "# HELP attncache_prefix_tokens_reused_total Token rows taken from the prefix cache (not computed).\n"
                    "# TYPE attncache_prefix_tokens_reused_total counter\nattncache_prefix_tokens_reused_total %lld\n"
                    "# HELP attncache_prefix_tokens_computed_total Token rows computed by the sequences looked up.\n"
                    "# TYPE attncache_prefix_tokens_computed_total counter\nattncache_prefix_tokens_computed_total %lld\n"
                    "# HELP attncache_prefix_inserts_total Sequences stored (new rows added).\n"
                    "# TYPE attncache_prefix_inserts_total counter\nattncache_prefix_inserts_total %lld\n"
                    "# HELP attncache_prefix_tokens_stored_total Token rows added by the inserts.\n"
                    "# TYPE attncache_prefix_tokens_stored_total counter\nattncache_prefix_tokens_stored_total %lld\n"
                    "# HELP attncache_prefix_evictions_total Nodes evicted for the --prefix-cache budget (least recently used first).\n"
                    "# TYPE attncache_prefix_evictions_total counter\nattncache_prefix_evictions_total %lld\n"
                    "# HELP attncache_prefix_insert_failed_total Inserts skipped (out of memory, larger than the budget).\n"
                    "# TYPE attncache_prefix_insert_failed_total counter\nattncache_prefix_insert_failed_total %lld\n"
                    "# HELP attncache_prefix_bytes Bytes the prefix cache holds (rows, tokens, nodes).\n"
                    "# TYPE attncache_prefix_bytes gauge\nattncache_prefix_bytes %lld\n"
                    "# HELP attncache_prefix_max_bytes The prefix cache's budget (--prefix-cache).\n"
                    "# TYPE attncache_prefix_max_bytes gauge\nattncache_prefix_max_bytes %lld\n"
                    "# HELP attncache_prefix_nodes Nodes of the prefix cache's radix tree.\n"
                    "# TYPE attncache_prefix_nodes gauge\nattncache_prefix_nodes %lld\n"
                    "# HELP attncache_prefix_lookup_seconds_total Time in prefix lookups (rows copied into the contexts).\n"
                    "# TYPE attncache_prefix_lookup_seconds_total counter\nattncache_prefix_lookup_seconds_total %.6f\n"
                    "# HELP attncache_prefix_insert_seconds_total Time in prefix inserts and evictions.\n"
                    "# TYPE attncache_prefix_insert_seconds_total counter\nattncache_prefix_insert_seconds_total %.6f\n",
                    (long long)ps.lookups, (long long)ps.hits, (long long)ps.tokens_reused, (long long)ps.tokens_computed,
                    (long long)ps.inserts, (long long)ps.tokens_stored, (long long)ps.evictions,
                    (long long)ps.insert_failed, (long long)ps.bytes, (long long)ps.max_bytes, (long long)ps.nodes,
                    ps.t_lookup, ps.t_insert);
    srv_recorder *rec = g.ready ? s->recorder : NULL;
    if (rec) {
        srv_recorder_stats r;
        srv_recorder_get_stats(rec, &r);
        sbuf_printf(&b,
                    "# HELP attncache_cache_insert_offered_total Inputs offered for recording (the misses served).\n"
                    "# TYPE attncache_cache_insert_offered_total counter\nattncache_cache_insert_offered_total %lld\n"
                    "# HELP attncache_cache_inserts_total Inputs recorded into the attention cache.\n"
                    "# TYPE attncache_cache_inserts_total counter\nattncache_cache_inserts_total %lld\n"
                    "# HELP attncache_cache_insert_duplicates_total Inputs offered that were stored already.\n"
                    "# TYPE attncache_cache_insert_duplicates_total counter\n"
                    "attncache_cache_insert_duplicates_total %lld\n"
                    "# HELP attncache_cache_insert_dropped_total Inputs not recorded (queue full, store at its byte cap, shutdown).\n"
                    "# TYPE attncache_cache_insert_dropped_total counter\nattncache_cache_insert_dropped_total %lld\n"
                    "# HELP attncache_cache_insert_errors_total Failed inserts and commits.\n"
                    "# TYPE attncache_cache_insert_errors_total counter\nattncache_cache_insert_errors_total %lld\n"
                    "# HELP attncache_cache_commits_total Commits of recorded entries.\n"
                    "# TYPE attncache_cache_commits_total counter\nattncache_cache_commits_total %lld\n"
                    "# HELP attncache_cache_committed_entries Entries committed in the store.\n"
                    "# TYPE attncache_cache_committed_entries gauge\nattncache_cache_committed_entries %lld\n"
                    "# HELP attncache_cache_store_bytes Size of the map store file.\n"
                    "# TYPE attncache_cache_store_bytes gauge\nattncache_cache_store_bytes %lld\n"
                    "# HELP attncache_cache_store_full 1 once the store reached --cache-max-bytes with no way under it.\n"
                    "# TYPE attncache_cache_store_full gauge\nattncache_cache_store_full %d\n"
                    "# HELP attncache_cache_evictions_total Entries evicted by compactions (at start and online).\n"
                    "# TYPE attncache_cache_evictions_total counter\nattncache_cache_evictions_total %lld\n"
                    "# HELP attncache_cache_compactions_total Online compactions of the store under --cache-max-bytes.\n"
                    "# TYPE attncache_cache_compactions_total counter\nattncache_cache_compactions_total %lld\n"
                    "# HELP attncache_cache_compaction_seconds_total Time spent compacting (the workers wait).\n"
                    "# TYPE attncache_cache_compaction_seconds_total counter\nattncache_cache_compaction_seconds_total %.6f\n",
                    (long long)r.offered, (long long)r.inserted, (long long)r.duplicates, (long long)r.dropped, (long long)r.errors,
                    (long long)r.commits, (long long)r.entries, (long long)r.store_bytes, r.full,
                    (long long)(r.evictions + s->evicted_at_start), (long long)r.compactions, r.compact_seconds);
    }
    respond(q->rs, 200, &b, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- dispatch ------------------------------------------------------------------------------- */

void srv_route_handle(srv_server *s, int route, const char *body, size_t len, srv_response *rs) {
    memset(rs, 0, sizeof *rs);
    rq q = {s, rs, route == SRV_R_EMBEDDINGS || route == SRV_R_MODELS, route};
    if (route != SRV_R_HEALTH && route != SRV_R_METRICS && require_model(&q)) return;
    switch (route) {
    case SRV_R_EMBEDDINGS: route_embeddings(&q, body, len); break;
    case SRV_R_MODELS: route_models(&q); break;
    case SRV_R_EMBED: route_embed(&q, body, len); break;
    case SRV_R_TOKENIZE: route_tokenize(&q, body, len); break;
    case SRV_R_PREDICT: route_predict(&q, body, len); break;
    case SRV_R_SCORE: route_score(&q, body, len); break;
    case SRV_R_HEALTH: route_health(&q); break;
    case SRV_R_INFO: route_info(&q); break;
    case SRV_R_METRICS: route_metrics(&q); break;
    default: fail(&q, 404, "no such route"); break;
    }
    if (!rs->body) fail(&q, 500, "internal error: no response");
}
