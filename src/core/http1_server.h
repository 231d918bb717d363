/* http1_server.h — an HTTP/1.1 server on one event loop.
 *
 * One http1_server per loop (per worker thread); several servers listen on
 * the same port with SO_REUSEPORT and the kernel spreads connections.
 *
 * Per connection: read the head into a bounded buffer and parse it in place;
 * read the body (Content-Length or chunked, decoded in place) up to max_body;
 * answer `Expect: 100-continue`; call the handler with the whole request;
 * write the response with one writev; then the next pipelined request.
 * Requests on one connection are handled one at a time, so pipelined
 * responses leave in order.
 *
 * A client that closes its connection while its request is being handled
 * (plain TCP) aborts the exchange. If the handler set x->on_abort, it runs
 * and the exchange is freed right after (the handler must drop every
 * reference). If not, the exchange stays alive until the handler answers;
 * the answer is then discarded (http1_respond returns -ECONNRESET). Either
 * way a late callback never touches freed memory.
 *
 * Protection: header timeout for the whole head (slowloris), body timeout
 * between reads, idle timeout on keep-alive, write timeout; limits → 413,
 * 414, 431; protocol errors → 400 with the connection closed (lingering
 * close, so the client reads the error before the close). max_connections
 * stops accepting (connections wait in the backlog) instead of dropping.
 *
 * Every function must be called on the server's loop thread. */
#ifndef STRATA_HTTP1_SERVER_H
#define STRATA_HTTP1_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/http1_parse.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/sock.h"

struct http1_server;
struct http1_exchange;

typedef void (*http1_handler_fn)(struct http1_exchange *x, void *arg);
/* Called once per finished exchange (response written or connection lost),
 * for access logs and metrics. status 0: no response was sent. */
typedef void (*http1_complete_fn)(struct http1_exchange *x, int status, void *arg);
/* Turns a freshly accepted plain sock into another transport (TLS). 0 or <0
 * to refuse the connection. */
typedef int (*http1_wrap_fn)(struct sock *s, void *arg);

struct http1_server_config {
    struct http1_limits limits; /* each zero field → http1_default_limits' */
    uint64_t max_body;          /* bytes; 0 → 1 MiB; larger → 413 */
    uint32_t header_timeout_ms; /* whole head; 0 → 10 s (HAProxy's timeout http-request) */
    uint32_t body_timeout_ms;   /* between body reads; 0 → 30 s */
    uint32_t idle_timeout_ms;   /* keep-alive between requests; 0 → 60 s */
    uint32_t write_timeout_ms;  /* response stalled; 0 → 30 s */
    uint32_t drain_idle_ms;     /* on drain, idle keep-alives get this long for a last request; 0 → 1 s */
    uint32_t max_connections;   /* 0 → 10,000 */
    uint32_t max_requests_per_connection; /* 0 → unlimited; then Connection: close */
    http1_handler_fn handler;
    void *handler_arg;
    http1_complete_fn on_complete; /* optional */
    http1_wrap_fn wrap;            /* optional */
    void *wrap_arg;
    /* Optional admission per connection (e.g. a per-client-IP limit): asked
     * first for every accepted connection, false closes it at once.
     * conn_closed runs once for every connection conn_open admitted. */
    bool (*conn_open)(const struct net_addr *peer, void *arg);
    void (*conn_closed)(const struct net_addr *peer, void *arg);
    void *conn_arg;
};

/* The request being served. Fields are read-only for handlers; everything
 * (views, body, arena) stays valid until the response is written, or until
 * on_abort has run (when the handler set it). */
struct http1_exchange {
    struct http1_request req;
    struct str body;       /* the whole decoded body */
    struct arena arena;    /* per-request memory, freed after the response */
    struct net_addr peer;
    const struct sock *sock; /* transport (TLS info, peer identity) */
    uint64_t start_ms;     /* loop time when the head was complete */
    uint64_t bytes_in, bytes_out;
    void *user;            /* the handler's own per-request pointer */
    /* set by the handler for an async answer: called if the connection dies
     * before the response; the exchange is freed right after. */
    void (*on_abort)(struct http1_exchange *x);
    struct http1_conn *conn;
};

struct http1_server_stats {
    uint64_t accepted, active, requests, responses;
    uint64_t parse_errors, timeouts, refused_transport, refused_admission;
    uint64_t client_aborts; /* clients gone while their request was handled */
};

/* A server on loop l with cfg (copied). Returns NULL on allocation failure. */
struct http1_server *http1_server_new(struct loop *l, const struct http1_server_config *cfg);
/* Starts accepting on listening fd lfd (non-blocking; the server owns it
 * from now on and closes it). May be called for several fds. */
int http1_server_listen_fd(struct http1_server *s, int lfd);
/* Graceful drain: stop accepting (the listening sockets close at once, so
 * a successor on the same port gets the new connections), let in-flight
 * requests finish (answered with Connection: close). Idle keep-alive
 * connections are closed after drain_idle_ms unless a request arrives
 * first (it is answered with Connection: close): a request already on its
 * way is answered, not reset. on_drained(arg) runs once no connection is
 * left. */
void http1_server_drain(struct http1_server *s, void (*on_drained)(void *arg), void *arg);
/* Closes every connection now (in-flight exchanges are aborted). */
void http1_server_close_all(struct http1_server *s);
/* Frees a server with no connections left (after drain or close_all). */
void http1_server_free(struct http1_server *s);
const struct http1_server_stats *http1_server_stats(const struct http1_server *s);

/* Sends the response. headers: extra fields (Content-Length, Date and
 * Connection are the server's). The body is copied. 0, or -EALREADY if this
 * exchange already responded, -ECONNRESET if the client had gone (nothing
 * sent), -ENOMEM (the connection is closed). After this call the exchange
 * may be freed at any time: do not touch it again. */
int http1_respond(struct http1_exchange *x, int status, const struct http1_header *headers, size_t nheaders,
                  struct str body);
/* As http1_respond, but takes the body buffer's memory instead of copying
 * (body is left empty). */
int http1_respond_buf(struct http1_exchange *x, int status, const struct http1_header *headers,
                      size_t nheaders, struct buf *body);
/* The standard JSON error response: {"error":{"code","message","request_id"}}. */
int http1_respond_error(struct http1_exchange *x, int status, const char *code, const char *message,
                        const char *request_id);

/* Writes the current time as "Wed, 25 Nov 2026 14:00:00 GMT" (cached per second, per thread). */
void http1_format_date(char out[30]);

#endif
