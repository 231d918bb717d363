/* compile_internal.h — what the compile_*.c files share (not a public
 * contract: compile.h is). The compiler builds one jansson document; every
 * helper here is "sticky": after the first failure (out of memory, or a
 * model the proxy cannot express) they do nothing more, and
 * compile_proxy_config returns NULL with the first message. */
#ifndef STRATA_CONTROL_COMPILE_INTERNAL_H
#define STRATA_CONTROL_COMPILE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "control/compile.h"

/* Name of the sidecar's cluster in front of its own app. */
#define CC_APP_CLUSTER "app"

struct cc {
    const struct model *m;
    const struct compile_proxy *p;
    const char *ns;                        /* the proxy's namespace */
    const struct compile_endpoint **eps;   /* ready endpoints, sorted by replica then address */
    size_t neps;
    const char *app_cluster;               /* CC_APP_CLUSTER, or another name when a Service is called that */
    char *err;
    size_t errsz;
    bool failed;
};

/* Records the first error ("out of memory" when fmt is NULL); returns -1. */
int cc_fail(struct cc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* obj[key] = v (stolen); a NULL v or obj records out of memory. */
void cc_put(struct cc *c, json_t *obj, const char *key, json_t *v);
/* arr += v (stolen). */
void cc_push(struct cc *c, json_t *arr, json_t *v);
void cc_put_str(struct cc *c, json_t *obj, const char *key, const char *s);
void cc_put_int(struct cc *c, json_t *obj, const char *key, long long v);
/* ["a", "b"] from a model string list (NULL when n is 0: the caller omits it). */
json_t *cc_strings(struct cc *c, const char *const *v, size_t n);
/* {"k": "v", ...} from labels, at most 32 (the proxy's bound). */
json_t *cc_labels(struct cc *c, const struct model_labels *l);

/* Every label of sel in labels; an empty selector matches nothing. */
bool cc_labels_match(const struct model_labels *sel, const struct model_labels *labels);
const char *cc_label(const struct model_labels *l, const char *key);
/* A namespaced policy's selector applies to the proxy's pod: same namespace,
 * and an empty selector (the whole namespace) or one its labels match. */
bool cc_selects(const struct cc *c, const char *ns, const struct model_labels *sel);
bool cc_ns_eq(const char *a, const char *b);
const struct model_service *cc_service(const struct cc *c, const char *name);
const struct model_destinationrule *cc_destinationrule(const struct cc *c, const char *host);
/* The VirtualService for host: mesh_only selects those bound to the mesh
 * (no gateways, or "mesh" among them); else any. NULL when none. */
const struct model_virtualservice *cc_virtualservice(const struct cc *c, const char *host, bool mesh_only);
/* "spiffe://TD/ns/NS/sa/SA" into buf. */
void cc_spiffe_id(const struct cc *c, const char *ns, const char *sa, char *buf, size_t n);

/* compile_cluster.c: one cluster per Service (plus nothing else). */
void cc_service_clusters(struct cc *c, json_t *clusters);

/* compile_route.c: a VirtualService http entry's action and options onto
 * route (destinations, mirror, fault, retries, timeout, rewrite). */
void cc_route_action(struct cc *c, json_t *route, const struct model_http_route *h);
/* route["destinations"] = the Service's cluster, weight 100. */
void cc_route_default(struct cc *c, json_t *route, const char *service);
/* Path, method and header matches of one Istio match onto route (uri: none → prefix "/"). */
void cc_route_match(struct cc *c, json_t *route, const struct model_http_match *mt, bool with_uri);
/* Outbound routes of a sidecar, scoped to listener. */
void cc_outbound_routes(struct cc *c, json_t *routes, const char *listener);

/* compile_policy.c */
bool cc_mtls_permissive(const struct cc *c);
void cc_authorization(struct cc *c, json_t *doc);

/* compile_gateway.c: listeners, routes, providers, limits of a gateway. */
void cc_gateway(struct cc *c, json_t *doc);

#endif
