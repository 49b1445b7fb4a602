/* routes.h — the server's routes: JSON request parsing and validation,
 * tokenization (with truncation), jobs for the batcher, JSON responses.
 * Independent of the HTTP library: http.c passes a method, a path and a
 * complete body; tests call srv_route_handle directly (fuzzing). */
#ifndef SRV_ROUTES_H
#define SRV_ROUTES_H

#include "server.h"
#include <stddef.h>

typedef struct srv_response {
    int status;
    char *body;               /* owned (malloc'd); free() after sending */
    size_t len;
    const char *content_type; /* static string */
    const char *allow;        /* static; for 405: the Allow header */
} srv_response;

/* The route (enum srv_route) of a path; *method_ok = 0 when the path is known
 * but not with this method (405), SRV_R_OTHER for unknown paths (404). */
int srv_route_find(const char *method, const char *path, int *method_ok);
/* 1 for the routes that run the model or the tokenizer (count against
 * --max-concurrent-requests and need the model). */
int srv_route_is_inference(int route);
/* 1 if the route answers errors in OpenAI's shape ({"error":{"message",..}}),
 * 0 for TEI's ({"error","error_type"}). */
int srv_route_openai_style(const char *path);

/* Handles one request with its complete body (not necessarily NUL-terminated).
 * Always fills *rs: errors become JSON error responses with a 4xx/5xx status.
 * Thread-safe; blocks while the batcher runs the request's sequences. */
void srv_route_handle(srv_server *s, int route, const char *body, size_t len, srv_response *rs);
/* An error response in the given style. */
void srv_route_error(srv_response *rs, int openai_style, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
