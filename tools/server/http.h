/* http.h — the HTTP layer of `attncache serve` on libmicrohttpd: listening
 * socket, one thread per connection (handlers block while the batcher runs
 * their sequences), connection limit and idle timeout, request body limit,
 * Bearer authentication, the --max-concurrent-requests admission (429), and
 * the drain on shutdown. Routes are in routes.c. */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include "server.h"

typedef struct srv_http srv_http;

/* Starts listening on cfg.host:cfg.port and serving s (borrowed; must outlive
 * the srv_http). *port_out: the bound port (cfg.port 0 picks a free one).
 * Caller owns *out (srv_http_stop). AC status; message on stderr. */
int srv_http_start(srv_server *s, srv_http **out, int *port_out);
/* Stops accepting connections (the listening socket is closed); connections
 * already open are still served. */
void srv_http_quiesce(srv_http *h);
/* Closes every connection and frees. NULL is fine. */
void srv_http_stop(srv_http *h);

#endif
