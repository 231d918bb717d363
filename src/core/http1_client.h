/* http1_client.h — an asynchronous HTTP/1.1 client with keep-alive pools.
 *
 * One http1_client per loop. Connections are pooled per upstream (address +
 * transport): a finished exchange returns its connection to the pool when
 * the response allowed keep-alive, and the next request to that upstream
 * reuses it. Deadlines: connect_timeout for the TCP (and TLS) handshake,
 * and a whole-request timeout from send to the last body byte.
 *
 * A request that fails on a reused connection before any response byte
 * arrives (the server closed it while idle) is retried once on a fresh
 * connection if its method is idempotent: that is a race, not an error.
 *
 * Every function must be called on the client's loop thread. */
#ifndef STRATA_HTTP1_CLIENT_H
#define STRATA_HTTP1_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/http1_parse.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/sock.h"

struct http1_client;
struct http1_client_call;

struct http1_client_config {
    uint32_t connect_timeout_ms;   /* 0 → 2 s */
    uint32_t request_timeout_ms;   /* default per request; 0 → 30 s */
    uint32_t idle_timeout_ms;      /* pooled connection lifetime when idle; 0 → 50 s */
    uint32_t max_idle_per_upstream; /* 0 → 32 */
    uint64_t max_response_body;    /* 0 → 16 MiB; larger → -EMSGSIZE */
};

/* Parsed http:// or https:// URL. Views point into the input. */
struct http1_url {
    struct str scheme;   /* "http" or "https" */
    struct str host;     /* without brackets for IPv6 */
    uint16_t port;       /* explicit or the scheme's default */
    struct str path;     /* "/" when empty; includes the query */
    bool is_tls;
};

/* Parses an absolute http(s) URL. -EINVAL on anything else. */
int http1_url_parse(struct str url, struct http1_url *out);

struct http1_client_request {
    struct net_addr addr;      /* where to connect (numeric; see net.h) */
    struct str method;         /* "GET" */
    struct str target;         /* "/v1/x?y" or, through a proxy, "http://host/v1/x" */
    struct str host;           /* Host header value */
    const struct http1_header *headers; /* extra fields; Host, Content-Length and Connection are ours */
    size_t nheaders;
    struct str body;           /* copied at send time */
    uint32_t timeout_ms;       /* 0 → config default */
    /* Optional transport wrapper for new connections (TLS), and the pool key
     * that keeps its connections apart from others to the same address
     * (e.g. the SNI/identity expected). wrap == NULL: plain TCP. */
    int (*wrap)(struct sock *s, void *arg);
    void *wrap_arg;
    const char *pool_key;
};

struct http1_client_response {
    int status;
    const struct http1_header *headers;
    size_t nheaders;
    struct str body;           /* whole, decoded */
};

/* err 0 and resp set on a response (any status); otherwise a negative errno:
 * -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EKEYREJECTED (the TLS handshake
 * failed: untrusted or unexpected peer certificate), -EPROTO (malformed response),
 * -EMSGSIZE (response over max_response_body), -ENOMEM. resp and its views
 * are valid only during the callback. */
typedef void (*http1_client_cb)(int err, const struct http1_client_response *resp, void *arg);

/* NULL on allocation failure. */
struct http1_client *http1_client_new(struct loop *l, const struct http1_client_config *cfg);
/* Closes pooled connections; calls in flight are cancelled without callback.
 * May be called from inside a callback (the memory goes after it returns). */
void http1_client_free(struct http1_client *c);

/* Starts a request. The callback runs later, never inside this call. out
 * (optional) receives a handle for http1_client_cancel, valid until the
 * callback runs. 0 or -ENOMEM / -EINVAL. */
int http1_client_send(struct http1_client *c, const struct http1_client_request *req, http1_client_cb cb,
                      void *arg, struct http1_client_call **out);
/* Cancels a call in flight; its callback will not run. */
void http1_client_cancel(struct http1_client_call *call);

/* Pool statistics, for tests and metrics. */
struct http1_client_stats {
    uint64_t connects, reuses, retries, timeouts, errors;
    uint64_t idle; /* connections in the pools now */
};
const struct http1_client_stats *http1_client_stats(const struct http1_client *c);

#endif
