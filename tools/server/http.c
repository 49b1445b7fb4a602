/* http.c — libmicrohttpd glue for `attncache serve` (http.h). */
#define _GNU_SOURCE
#include "http.h"
#include "metrics.h"
#include "routes.h"
#include "srvutil.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct srv_http {
    struct MHD_Daemon *d;
    srv_server *s;
};

/* Per-request state (MHD's con_cls): lives from the first callback to the
 * completion notice. */
typedef struct req_state {
    double t0;
    int route, openai;
    int admitted;        /* counted in s->in_flight */
    int answered;        /* a response is queued: the rest of the body is discarded */
    srv_response early;  /* an error decided before or while the body was read (body discarded) */
    char *body;
    size_t len, cap;
    size_t discarded;    /* body bytes read past the limit (chunked uploads without a length) */
} req_state;

static int bearer_ok(srv_server *s, struct MHD_Connection *c) {
    const char *key = s->cfg.api_key;
    if (!key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    return srv_ct_equal(h, n, key, strlen(key));
}

static enum MHD_Result send_response(srv_server *s, struct MHD_Connection *c, req_state *st, const char *method,
                                     const char *url, srv_response *rs) {
    struct MHD_Response *r = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(rs->body);
        rs->body = NULL;
        return MHD_NO;
    }
    rs->body = NULL; /* owned by the response now */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type ? rs->content_type : "application/json");
    if (rs->status == 405 && rs->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
    if (rs->status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (rs->status == 429 || rs->status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (atomic_load(&s->draining)) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    st->answered = 1;
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    double dt = srv_now() - st->t0;
    srv_metrics_request(st->route, rs->status, dt);
    if (rs->status == 429) srv_metrics_rejected(st->route);
    if (!s->cfg.quiet) {
        /* the path is the client's (percent-decoded): no control bytes into the log */
        char path[128];
        size_t k = 0;
        for (const char *p = url; *p && k + 1 < sizeof path; p++) path[k++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
        path[k] = 0;
        fprintf(stderr, "attncache serve: %s %s %d %.1f ms\n", method, path, rs->status, dt * 1e3);
    }
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    req_state *st = *con_cls;
    if (!st) { /* headers received: decide what can be decided before the body */
        st = calloc(1, sizeof *st);
        if (!st) return MHD_NO;
        *con_cls = st;
        st->t0 = srv_now();
        atomic_fetch_add(&s->open, 1);
        int method_ok = 1;
        st->route = srv_route_find(method, url, &method_ok);
        st->openai = srv_route_openai_style(url);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long clen = cl ? strtoull(cl, NULL, 10) : 0;
        if (atomic_load(&s->draining) && st->route != SRV_R_HEALTH) {
            srv_route_error(&st->early, st->openai, 503, "the server is shutting down");
        } else if (st->route == SRV_R_OTHER) {
            srv_route_error(&st->early, st->openai, 404, "no route %s %s", method, url);
        } else if (!method_ok) {
            int post = srv_route_is_inference(st->route);
            srv_route_error(&st->early, st->openai, 405, "%s %s: method not allowed (use %s)", method, url,
                            post ? "POST" : "GET");
            st->early.allow = post ? "POST" : "GET, HEAD";
        } else if (st->route != SRV_R_HEALTH && !bearer_ok(s, c)) {
            srv_route_error(&st->early, st->openai, 401, "missing or wrong API key (Authorization: Bearer KEY)");
        } else if (clen > s->cfg.max_body) {
            srv_route_error(&st->early, st->openai, 413, "request body of %llu bytes exceeds the limit of %zu bytes",
                            clen, s->cfg.max_body);
        } else if (srv_route_is_inference(st->route)) {
            long now = atomic_fetch_add(&s->in_flight, 1) + 1;
            st->admitted = 1;
            if (now > s->cfg.max_concurrent)
                srv_route_error(&st->early, st->openai, 429,
                                "too many concurrent requests (limit %d): retry later", s->cfg.max_concurrent);
        }
        if (st->early.body) /* answer now; MHD closes the connection if a body is left unread */
            return send_response(s, c, st, method, url, &st->early);
        return MHD_YES;
    }
    if (*upload_size) { /* a chunk of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (st->answered) return MHD_YES; /* discarded */
        if (st->early.body) {
            /* over the limit without a Content-Length: read and drop the rest so the client
             * gets its 413 (MHD answers only once the upload is complete), up to 4x the
             * limit; a client still sending after that is disconnected */
            st->discarded += n;
            return st->discarded > 4 * s->cfg.max_body ? MHD_NO : MHD_YES;
        }
        if (n > s->cfg.max_body - st->len) {
            free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
            st->discarded = n;
            srv_route_error(&st->early, st->openai, 413, "request body exceeds the limit of %zu bytes", s->cfg.max_body);
            return MHD_YES;
        }
        if (st->len + n > st->cap) {
            size_t nc = st->cap ? st->cap : 4096;
            while (nc < st->len + n) nc *= 2;
            char *nb = realloc(st->body, nc);
            if (!nb) return MHD_NO;
            st->body = nb;
            st->cap = nc;
        }
        memcpy(st->body + st->len, upload, n);
        st->len += n;
        return MHD_YES;
    }
    /* the whole request is in */
    if (st->answered) return MHD_YES;
    if (st->early.body) return send_response(s, c, st, method, url, &st->early);
    srv_response rs;
    srv_route_handle(s, st->route, st->body ? st->body : "", st->len, &rs);
    free(st->body);
    st->body = NULL;
    return send_response(s, c, st, method, url, &rs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c;
    (void)toe;
    srv_server *s = cls;
    req_state *st = *con_cls;
    if (!st) return;
    if (st->admitted) atomic_fetch_sub(&s->in_flight, 1);
    atomic_fetch_sub(&s->open, 1);
    free(st->early.body);
    free(st->body);
    free(st);
    *con_cls = NULL;
}

int srv_http_start(srv_server *s, srv_http **out, int *port_out) {
    *out = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg.port);
    int gr = getaddrinfo(s->cfg.host, port, &hints, &ai);
    if (gr != 0 || !ai) {
        fprintf(stderr, "attncache: error: cannot resolve --host '%s': %s\n", s->cfg.host, gai_strerror(gr));
        return AC_ERR_ARG;
    }
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return AC_ERR_NOMEM;
    }
    h->s = s;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,                               /**/
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,                                 /**/
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.timeout_s,         /**/
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,     /**/
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,             /**/
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)1 << 20,                     /**/
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,                   /**/
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,                      /**/
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        fprintf(stderr, "attncache: error: cannot listen on %s:%d (address in use or not allowed?)\n", s->cfg.host,
                s->cfg.port);
        free(h);
        return AC_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = di ? (int)di->port : s->cfg.port;
    *out = h;
    return AC_OK;
}

void srv_http_quiesce(srv_http *h) {
    if (!h || !h->d) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void srv_http_stop(srv_http *h) {
    if (!h) return;
    if (h->d) MHD_stop_daemon(h->d);
    free(h);
}
