/* compile_cluster.c — one proxy cluster per Service: its ready endpoints,
 * the DestinationRule's subsets, balancing, breaker and outlier detection,
 * and mTLS to the destination's sidecars. */
#include <stdio.h>
#include <string.h>

#include "control/compile_internal.h"

static long long clamp(long long v, long long lo, long long hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void put_endpoints(struct cc *c, json_t *cl, const struct model_service *s,
                          const struct compile_endpoint **first)
{
    json_t *arr = json_array();
    size_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < c->neps; i++) {
        const struct compile_endpoint *e = c->eps[i];
        if (!cc_labels_match(&s->selector, e->labels))
            continue;
        /* 1024: the proxy's bound on a cluster's endpoints. */
        if (++n > 1024) {
            cc_fail(c, "Service %s: more than 1024 ready endpoints", s->name);
            break;
        }
        if (!*first)
            *first = e;
        json_t *o = json_object();
        cc_put_str(c, o, "address", e->address);
        cc_put(c, o, "labels", cc_labels(c, e->labels));
        cc_push(c, arr, o);
    }
    cc_put(c, cl, "endpoints", arr);
}

/* The identity the Service's replicas present, when none is ready yet (so a
 * cluster's tls does not come and go with its endpoints): the first
 * Deployment it selects that runs a sidecar. */
static bool model_identity(struct cc *c, const struct model_service *s, char *buf, size_t n)
{
    for (size_t i = 0; i < c->m->ndeployments; i++) {
        const struct model_deployment *d = &c->m->deployments[i];
        if (!cc_ns_eq(d->namespace, s->namespace) || !cc_labels_match(&s->selector, &d->pod_labels))
            continue;
        if (d->is_gateway || !d->inject_sidecar)
            return false;
        cc_spiffe_id(c, d->namespace, d->service_account, buf, n);
        return true;
    }
    return false;
}

static void put_tls(struct cc *c, json_t *cl, const struct model_service *s, const struct compile_endpoint *first)
{
    char id[512];
    const char *spiffe = NULL;
    if (first) {
        /* Endpoints of one Service share an identity in the reference system:
         * the first one's stands for all. */
        if (!first->mtls)
            return;
        spiffe = first->spiffe_id;
    } else if (model_identity(c, s, id, sizeof id)) {
        spiffe = id;
    }
    if (!spiffe)
        return;
    const struct compile_proxy *p = c->p;
    if (!p->cert_file || !p->key_file || !p->ca_file) {
        cc_fail(c, "Service %s: its endpoints speak mTLS but the proxy has no cert_file, key_file and ca_file",
                s->name);
        return;
    }
    json_t *t = json_object();
    cc_put_str(c, t, "cert_file", p->cert_file);
    cc_put_str(c, t, "key_file", p->key_file);
    cc_put_str(c, t, "ca_file", p->ca_file);
    cc_put_str(c, t, "spiffe_id", spiffe);
    cc_put(c, cl, "tls", t);
}

static void put_subsets(struct cc *c, json_t *cl, const struct model_destinationrule *dr)
{
    if (dr->nsubsets == 0)
        return;
    if (dr->nsubsets > 64) {
        cc_fail(c, "DestinationRule %s: more than the proxy's 64 subsets", dr->name);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < dr->nsubsets; i++) {
        json_t *o = json_object();
        cc_put_str(c, o, "name", dr->subsets[i].name);
        cc_put(c, o, "labels", cc_labels(c, &dr->subsets[i].labels));
        cc_push(c, arr, o);
    }
    cc_put(c, cl, "subsets", arr);
}

static void put_breaker(struct cc *c, json_t *cl, const struct model_destinationrule *dr)
{
    static const long long max = 10000000; /* the proxy's bound */
    const struct {
        const char *key;
        int v;
    } f[] = { { "max_connections", dr->max_connections },
              { "max_pending_requests", dr->max_pending_requests },
              { "max_requests", dr->max_requests },
              { "max_retries", dr->max_retries } };
    json_t *o = NULL;
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        if (f[i].v <= 0)
            continue;
        if (!o && !(o = json_object())) {
            cc_fail(c, NULL);
            return;
        }
        cc_put_int(c, o, f[i].key, clamp(f[i].v, 0, max));
    }
    if (o)
        cc_put(c, cl, "circuit_breaker", o);
}

static void put_outlier(struct cc *c, json_t *cl, const struct model_destinationrule *dr)
{
    if (!dr->outlier)
        return;
    json_t *o = json_object();
    if (dr->consecutive_5xx >= 0)
        cc_put_int(c, o, "consecutive_5xx", clamp(dr->consecutive_5xx, 0, 100000));
    if (dr->consecutive_gateway_errors >= 0)
        cc_put_int(c, o, "consecutive_gateway_errors", clamp(dr->consecutive_gateway_errors, 0, 100000));
    if (dr->interval_ms > 0)
        cc_put_int(c, o, "interval_ms", clamp(dr->interval_ms, 10, 3600000));
    if (dr->base_ejection_ms > 0)
        cc_put_int(c, o, "base_ejection_ms", clamp(dr->base_ejection_ms, 1, 86400000));
    if (dr->max_ejection_percent >= 0)
        cc_put_int(c, o, "max_ejection_percent", clamp(dr->max_ejection_percent, 0, 100));
    cc_put(c, cl, "outlier_detection", o);
}

static void service_cluster(struct cc *c, json_t *clusters, const struct model_service *s)
{
    json_t *cl = json_object();
    const struct compile_endpoint *first;
    cc_put_str(c, cl, "name", s->name);
    put_endpoints(c, cl, s, &first);
    const struct model_destinationrule *dr = cc_destinationrule(c, s->name);
    if (dr) {
        if (dr->lb == MODEL_LB_ROUND_ROBIN)
            cc_put_str(c, cl, "lb", "round_robin");
        else if (dr->lb == MODEL_LB_LEAST_REQUEST)
            cc_put_str(c, cl, "lb", "least_request");
        put_subsets(c, cl, dr);
        put_breaker(c, cl, dr);
        put_outlier(c, cl, dr);
    }
    put_tls(c, cl, s, first);
    cc_push(c, clusters, cl);
}

void cc_service_clusters(struct cc *c, json_t *clusters)
{
    for (size_t i = 0; i < c->m->nservices && !c->failed; i++)
        service_cluster(c, clusters, &c->m->services[i]);
}
