/* upstream_tls.h — a cluster's upstream TLS at run time: the client context
 * (our workload certificate and the trust bundle) and the identity to
 * verify, with the http1_client wrap that turns a connection into it.
 * Shared by the request path (engine.c) and the health checks (health.c),
 * so probes reach a mesh endpoint exactly as traffic does. */
#ifndef STRATA_PROXY_UPSTREAM_TLS_H
#define STRATA_PROXY_UPSTREAM_TLS_H

#include "core/http1_client.h"
#include "core/tls.h"
#include "proxy/proxy_config.h"

struct upstream_tls {
    struct tls_client_ctx *ctx; /* NULL: the files did not load (logged) */
    const struct proxy_upstream_tls *cfg;
};

/* Builds one per cluster of c (plain clusters get ctx NULL, cfg NULL);
 * who names the caller in the log line of a context that fails to load.
 * NULL on allocation failure. */
struct upstream_tls *upstream_tls_new(const struct proxy_config *c, const char *who);
void upstream_tls_free(struct upstream_tls *t, size_t nclusters);
/* Sets req's wrap, wrap_arg and pool_key for cluster index i; 0, or
 * -ENOKEY when the cluster is TLS and its context did not load. Plain
 * clusters leave req untouched. */
int upstream_tls_apply(struct upstream_tls *t, const struct proxy_config *c, size_t i,
                       struct http1_client_request *req);

#endif
