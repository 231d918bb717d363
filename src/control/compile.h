/* compile.h — desired state (the model) + live endpoints → the compiled
 * proxy config (docs/gateway.md, docs/mesh.md) of one proxy.
 *
 * Pure: no I/O, no clock. The same inputs give byte-identical JSON, so the
 * control plane can compare outputs to decide whether a proxy needs a push.
 * Thread: any (no shared state). */
#ifndef STRATA_CONTROL_COMPILE_H
#define STRATA_CONTROL_COMPILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "control/model.h"

/* One replica as the mesh sees it. */
struct compile_endpoint {
    const char *replica;                  /* "order-3f2a9c-1" */
    const char *deployment;               /* "order" */
    const struct model_labels *labels;    /* the pod's labels (version, region, zone, ...) */
    const char *address;                  /* where callers connect: the sidecar's inbound "127.0.0.1:PORT" (mTLS),
                                             or the app itself for a pod without a sidecar (plaintext) */
    bool mtls;                            /* address is a sidecar speaking mTLS */
    const char *spiffe_id;                /* the replica's identity (its service account's) */
    bool ready;                           /* only ready endpoints are compiled in */
};

/* The proxy being compiled for: a sidecar (deployment->is_gateway false) or
 * a gateway replica. Addresses are "127.0.0.1:PORT"; files are absolute. */
struct compile_proxy {
    const char *id;                       /* the proxy's node id (its replica name) */
    const struct model_deployment *deployment;
    const char *trust_domain;             /* "strata.local" */
    const char *spiffe_id;                /* ours */
    const char *admin_addr;
    const char *cert_file, *key_file, *ca_file; /* our workload certificate (from the CA) and the trust bundle */
    /* sidecar */
    const char *app_addr;                 /* the app's loopback address */
    const char *inbound_addr;             /* mTLS listener in front of the app */
    const char *outbound_addr;            /* the app's HTTP_PROXY */
    /* gateway */
    const char *http_addr, *https_addr;   /* public listeners */
    const char *redis_addr;               /* "127.0.0.1:PORT" for global rate limits, NULL: global limits fail open */
    const char *otlp_endpoint;            /* "http://127.0.0.1:PORT/v1/traces", NULL: no spans */
    int workers;                          /* 0: the proxy's default */
};

/* Returns a new JSON object (the whole config document, with "version"
 * set to version), or NULL with a message in err (a model the compiler
 * cannot express: never happens for a model that passed validation). */
json_t *compile_proxy_config(const struct model *m, const struct compile_endpoint *eps, size_t neps,
                             const struct compile_proxy *p, const char *version, char *err, size_t errsz);

#endif
