/* service.h — the framework every strata service is built on.
 *
 * A service declares routes and readiness checks, then service_run():
 *   - reads its configuration from the environment (12-factor): PORT,
 *     LISTEN_ADDR, WORKERS, LOG_LEVEL, OTEL_SERVICE_NAME,
 *     OTEL_EXPORTER_OTLP_ENDPOINT, MAX_BODY_BYTES, SHUTDOWN_DELAY_MS,
 *     SHUTDOWN_TIMEOUT_MS (docs/architecture.md lists them all);
 *   - serves the routes on WORKERS loops (one thread each, SO_REUSEPORT);
 *   - adds GET /healthz (liveness), GET /readyz (readiness: every check must
 *     pass, and never while shutting down) and GET /metrics (Prometheus);
 *   - gives every request an id (X-Request-Id kept when sane, else made),
 *     a server span continuing the caller's W3C traceparent, a JSON access
 *     log line, and RED metrics per route;
 *   - on SIGTERM or SIGINT shuts down gracefully: /readyz fails at once,
 *     after SHUTDOWN_DELAY_MS the listeners close, in-flight requests finish
 *     (up to SHUTDOWN_TIMEOUT_MS, then connections are cut), spans are
 *     flushed, service_run returns 0.
 * Errors always leave as JSON: {"error":{"code","message","request_id"}}.
 *
 * Threads: routes run on worker threads; a handler must answer on the
 * thread it was called on (service_req_loop gives its loop). */
#ifndef STRATA_SERVICE_H
#define STRATA_SERVICE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/json.h"
#include "core/loop.h"
#include "core/trace.h"

struct service;
struct service_req;

#define SERVICE_MAX_PARAMS 8

typedef void (*service_handler_fn)(struct service_req *r, void *arg);
/* A readiness check: 0 when ready; otherwise fills reason (≤ 200 bytes).
 * Runs on the worker thread that serves /readyz. */
typedef int (*service_check_fn)(void *arg, char *reason, size_t reasonsz);

struct service_config {
    const char *name;          /* service.name, log "service" key; OTEL_SERVICE_NAME wins */
    const char *listen;        /* "127.0.0.1:8080"; LISTEN_ADDR or PORT (on 0.0.0.0) win */
    int workers;               /* WORKERS wins; default 1 */
    uint64_t max_body;         /* MAX_BODY_BYTES wins; default 1 MiB */
    uint32_t shutdown_delay_ms;   /* SHUTDOWN_DELAY_MS; default 0 */
    uint32_t shutdown_timeout_ms; /* SHUTDOWN_TIMEOUT_MS; default 10000 */
};

/* Reads the environment over cfg (env wins). NULL with a message on stderr
 * naming the variable when a value is invalid. */
struct service *service_new(const struct service_config *cfg);
void service_free(struct service *s);

/* Adds a route: method ("GET"), pattern of literal segments and {name}
 * parameters ("/v1/users/{id}"). Routes match in the order added. 0, or
 * -EINVAL for a malformed pattern, -ENOMEM. Before service_run only. */
int service_route(struct service *s, const char *method, const char *pattern, service_handler_fn fn, void *arg);
/* Adds a readiness check named name, reported by /readyz. */
int service_add_check(struct service *s, const char *name, service_check_fn fn, void *arg);
/* Called on each worker thread after its loop exists and before serving
 * (per-worker pools), and at the end (cleanup). Optional. */
void service_on_worker(struct service *s, void (*start)(struct loop *l, int worker, void *arg),
                       void (*stop)(struct loop *l, int worker, void *arg), void *arg);

/* Binds the listeners (the port is known once this returns: see
 * service_port), starts the workers and blocks until shutdown completes.
 * 0 after a graceful shutdown; <0 if it could not start. */
int service_run(struct service *s);
/* Binds without running (tests that need the port first). */
int service_bind(struct service *s);
uint16_t service_port(const struct service *s);
int service_workers(const struct service *s);
/* The service's name (OTEL_SERVICE_NAME or the configured one). */
const char *service_name(const struct service *s);
/* Starts the graceful shutdown as SIGTERM would; safe from any thread. */
void service_shutdown(struct service *s);
/* Optional: on SIGTERM/SIGINT/service_shutdown, fn runs first on worker 0's
 * loop (the service keeps serving meanwhile) and must call
 * service_prestop_done (from any thread) when its work is finished; only
 * then does the shutdown proper begin. Set before service_run. */
void service_on_prestop(struct service *s, void (*fn)(struct service *s, void *arg), void *arg);
void service_prestop_done(struct service *s);

/* ---- in a handler ------------------------------------------------------- */

const struct http1_request *service_req_request(const struct service_req *r);
struct str service_req_body(const struct service_req *r);
/* The {name} parameter's value (percent-decoding is the handler's job), or STR_NULL. */
struct str service_req_param(const struct service_req *r, const char *name);
/* The request's header value, or STR_NULL. */
struct str service_req_header(const struct service_req *r, const char *name);
const char *service_req_id(const struct service_req *r);
struct loop *service_req_loop(const struct service_req *r);
/* Index (0..workers-1) of the worker serving r: per-worker resources
 * (database pools, Redis clients) made in service_on_worker's start. */
int service_req_worker(const struct service_req *r);
/* The remote peer's IP as text (for per-client-IP limits). */
const char *service_req_peer_ip(struct service_req *r);
struct arena *service_req_arena(struct service_req *r);
/* The request's server span (child spans, attributes), or NULL. */
struct trace_span *service_req_span(struct service_req *r);
/* This worker's HTTP client (keep-alive pools to other services). */
struct http1_client *service_req_client(struct service_req *r);
/* fn(r, arg) runs if the client goes away before the reply (the request is
 * then gone: cancel whatever would answer it later). One per request; NULL
 * clears it. */
void service_req_on_abort(struct service_req *r, void (*fn)(struct service_req *r, void *arg), void *arg);
/* Extra response header (copied into the request's arena). */
int service_req_add_header(struct service_req *r, const char *name, const char *value);

/* Parses the body as JSON (Content-Type must be application/json): on
 * success *out is a new reference. On failure it has already answered
 * (415, 400 invalid_json, 413, 422) and returns <0: just return. */
int service_req_json(struct service_req *r, size_t max_depth, json_t **out);

/* Answers; each takes ownership of nothing but the JSON value it is given
 * (service_reply_json steals the reference). Exactly one reply per request;
 * after it the request is gone. */
int service_reply_json(struct service_req *r, int status, json_t *body);
int service_reply(struct service_req *r, int status, const char *content_type, struct str body);
int service_reply_error(struct service_req *r, int status, const char *code, const char *message);
/* Answers from a json_error (400/422 with its code and message). */
int service_reply_json_error(struct service_req *r, const struct json_error *err);

/* ---- calling other services ------------------------------------------------
 * base_url comes from the environment (USER_SERVICE_URL=http://user-service,
 * or http://127.0.0.1:8081 without a mesh). When HTTP_PROXY is set (the
 * sidecar's outbound listener), the request goes there in absolute form and
 * the proxy resolves the name; without it the host must be numeric or
 * "localhost". The call carries a child span's traceparent and the
 * request's X-Request-Id, and has a deadline (timeout_ms, default 5 s). If
 * the client goes away first, the call is cancelled and cb never runs. */
struct service_call_opts {
    const char *method;        /* "GET" */
    const char *path;          /* "/internal/v1/users/42" (appended to the base URL's path) */
    struct str body;
    const char *content_type;  /* for a body; default application/json */
    uint32_t timeout_ms;
    const struct http1_header *headers; /* extra */
    size_t nheaders;
};
/* err 0 with resp (any status), or a negative errno (-ETIMEDOUT, -ECONNREFUSED,
 * -EHOSTUNREACH for a name that needs a proxy, ...). resp is valid during cb. */
typedef void (*service_call_cb)(struct service_req *r, int err, const struct http1_client_response *resp, void *arg);
int service_call(struct service_req *r, const char *base_url, const struct service_call_opts *o, service_call_cb cb,
                 void *arg);
/* The outbound proxy that service_call uses, from HTTP_PROXY (or
 * http_proxy): 1 with *out set, 0 when unset, -EINVAL (message on stderr
 * naming the variable) unless it is http://HOST:PORT with a numeric host.
 * For modules that send their own requests the same way (service_auth's
 * JWKS fetch). Reads the environment: call at start, not per request. */
int service_http_proxy(struct net_addr *out);
/* Answers a failed call: 504 upstream_timeout, or 503 upstream_unavailable. */
int service_reply_upstream_error(struct service_req *r, int err, const char *what);

#endif
