/* engine.h — the proxy engine's request path, shared by the gateway role
 * (issue 5) and, later, the sidecar role: route, authenticate, rate-limit,
 * inspect, balance, forward, answer.
 *
 * Threads: one worker per loop; a worker holds its own reference to the
 * config in force and per-config state of its own (a "generation": round
 * robin positions, JWKS caches, Redis connection, metric handles). A
 * reload posts the new config to every worker; each adopts it between
 * events, and the old generation goes once its last request completes.
 * Requests and connections in flight are never dropped by a reload.
 *
 * Process-wide and thread-safe: the local rate limiter, the WAF pool, the
 * per-client-IP connection counts, endpoint health and load (atomics in
 * the config's endpoints, carried over across reloads). */
#ifndef STRATA_PROXY_ENGINE_H
#define STRATA_PROXY_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/loop.h"
#include "core/tls.h"
#include "proxy/proxy_config.h"

struct rl_local;
struct waf;
struct shadow;

/* Process-wide state, made once by main. */
struct engine {
    struct rl_local *rl_local;
    struct waf *waf;                 /* NULL until a config enables the WAF */
    struct conn_limits *conn_limits; /* per-client-IP connection counts */
    _Atomic int draining;            /* /readyz fails once set */
};

/* A configured listener at run time: shared by the workers. */
struct listener_rt {
    const struct proxy_listener *cfg; /* from the first config: listeners do not change on reload */
    struct tls_server_holder *tls;    /* NULL: plain HTTP */
    struct tls_cert_pair *pairs;
    struct tls_server_config tls_cfg;
};

struct worker;
struct served {
    struct worker *w;
    struct listener_rt *l;
    struct http1_server *server;
};

struct gen; /* per worker, per config */

struct worker {
    struct engine *engine;
    struct loop *loop;
    struct served *served; /* one per listener */
    size_t nserved;
    int draining;          /* servers not drained yet (+1 while phase 2 has not started) */
    int drain_phase;       /* 0 serving, 1 all but outbound draining, 2 everything draining */
    struct http1_client *client;
    struct gen *gen;       /* the generation new requests use */
    struct trace_tracer *tracer; /* OTLP export from the environment; NULL: ids only */
    struct shadow *shadows;      /* mirrored copies in flight */
    int index;
};

/* Worker setup and teardown, on the worker's thread (or before it starts). */
int engine_worker_init(struct worker *w, struct engine *e, struct loop *l, struct proxy_config *c, int index);
void engine_worker_fini(struct worker *w);
/* Cancels mirrored copies still in flight (before the worker's client goes). */
void engine_cancel_shadows(struct worker *w);
struct shadow;
/* Adopts config c (the caller's reference moves to the worker). On w's thread. */
void engine_worker_adopt(struct worker *w, struct proxy_config *c);
/* The HTTP server callbacks; handler_arg is a struct served. */
void engine_handle(struct http1_exchange *x, void *arg);
void engine_complete(struct http1_exchange *x, int status, void *arg);

/* Per-client-IP connection limits (process-wide). */
struct conn_limits *conn_limits_new(void);
void conn_limits_free(struct conn_limits *cl);
bool conn_limits_acquire(struct conn_limits *cl, const struct net_addr *peer, uint32_t max);
void conn_limits_release(struct conn_limits *cl, const struct net_addr *peer);

/* Registers the engine's metric families on metrics_default(). Once. */
void engine_metrics_init(void);

#endif
