/* compile_route.c — VirtualService http routes → proxy routes (matches,
 * weighted destinations, mirror, fault, retries, timeout), and a sidecar's
 * outbound routes: one per Service host name it can be called by. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/compile_internal.h"

static long long clamp(long long v, long long lo, long long hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static const char *kind_name(int kind)
{
    return kind == MODEL_MATCH_EXACT ? "exact" : kind == MODEL_MATCH_PREFIX ? "prefix" : "regex";
}

void cc_route_match(struct cc *c, json_t *route, const struct model_http_match *mt, bool with_uri)
{
    if (with_uri) {
        if (!mt || mt->uri.kind == MODEL_MATCH_NONE) {
            cc_put_str(c, route, "prefix", "/");
        } else {
            const char *v = mt->uri.value ? mt->uri.value : "";
            if (mt->uri.kind != MODEL_MATCH_REGEX && v[0] != '/')
                cc_fail(c, "uri %s \"%s\": must start with '/'", kind_name(mt->uri.kind), v);
            cc_put_str(c, route, kind_name(mt->uri.kind), v);
        }
    }
    if (!mt)
        return;
    if (mt->method.kind == MODEL_MATCH_EXACT)
        cc_put(c, route, "methods", json_pack("[s]", mt->method.value ? mt->method.value : ""));
    else if (mt->method.kind != MODEL_MATCH_NONE)
        cc_fail(c, "match.method.%s: the proxy matches methods exactly only", kind_name(mt->method.kind));
    if (mt->nheaders == 0)
        return;
    if (mt->nheaders > 16) {
        cc_fail(c, "match.headers: more than the proxy's 16");
        return;
    }
    json_t *hs = json_array();
    for (size_t i = 0; i < mt->nheaders; i++) {
        const struct model_header_match *h = &mt->headers[i];
        json_t *o = json_object();
        cc_put_str(c, o, "name", h->name);
        if (h->match.kind != MODEL_MATCH_NONE) /* none: the header must be present */
            cc_put_str(c, o, kind_name(h->match.kind), h->match.value);
        cc_push(c, hs, o);
    }
    cc_put(c, route, "headers", hs);
}

static bool has_subset(const struct cc *c, const char *host, const char *subset)
{
    const struct model_destinationrule *dr = cc_destinationrule(c, host);
    for (size_t i = 0; dr && i < dr->nsubsets; i++)
        if (dr->subsets[i].name && !strcmp(dr->subsets[i].name, subset))
            return true;
    return false;
}

/* {cluster, subset?}: the Service must exist (it is a cluster) and the subset
 * be defined by its DestinationRule, or the proxy would refuse the config. */
static json_t *destination(struct cc *c, const struct model_route_dest *d, const char *what)
{
    if (!cc_service(c, d->host)) {
        cc_fail(c, "%s:%d: %s: host \"%s\" is not a Service", d->loc.file ? d->loc.file : "?", d->loc.line, what,
                d->host ? d->host : "");
        return NULL;
    }
    if (d->subset && !has_subset(c, d->host, d->subset)) {
        cc_fail(c, "%s:%d: %s: no DestinationRule for host \"%s\" defines subset \"%s\"",
                d->loc.file ? d->loc.file : "?", d->loc.line, what, d->host, d->subset);
        return NULL;
    }
    json_t *o = json_object();
    cc_put_str(c, o, "cluster", d->host);
    if (d->subset)
        cc_put_str(c, o, "subset", d->subset);
    return o;
}

/* Istio's retryOn → the proxy's five kinds; status codes go to
 * retriable_status_codes. refused-stream is a reset before the request was
 * processed (reset); retriable-4xx is Envoy's 409. gRPC-only kinds
 * (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)
 * and envoy-ratelimited, retriable-headers have no HTTP/1 meaning here. */
static void put_retry_on(struct cc *c, json_t *r, const char *spec)
{
    static const char *const same[] = { "5xx", "gateway-error", "connect-failure", "reset",
                                        "retriable-status-codes", NULL };
    json_t *on = json_array(), *codes = json_array();
    const char *s = spec;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        char tok[48];
        snprintf(tok, sizeof tok, "%.*s", (int)(n < sizeof tok ? n : sizeof tok - 1), s);
        s += n + (s[n] == ',');
        char *t = tok;
        while (*t == ' ')
            t++;
        for (char *e = t + strlen(t); e > t && e[-1] == ' '; e--)
            e[-1] = '\0';
        const char *kind = NULL;
        long code = 0;
        for (size_t i = 0; same[i]; i++)
            if (!strcmp(t, same[i]))
                kind = same[i];
        if (!strcmp(t, "refused-stream"))
            kind = "reset";
        if (!strcmp(t, "retriable-4xx"))
            code = 409;
        char *end;
        if (!kind && !code && t[0] >= '1' && t[0] <= '5') {
            code = strtol(t, &end, 10);
            if (*end || code < 100 || code > 599)
                code = 0;
        }
        if (kind) {
            bool dup = false;
            for (size_t i = 0; i < json_array_size(on); i++)
                dup |= !strcmp(json_string_value(json_array_get(on, i)), kind);
            if (!dup)
                cc_push(c, on, json_string(kind));
        } else if (code && json_array_size(codes) < 8) {
            cc_push(c, codes, json_integer(code));
        }
    }
    if (json_array_size(on))
        cc_put(c, r, "retry_on", on);
    else
        json_decref(on);
    if (json_array_size(codes))
        cc_put(c, r, "retriable_status_codes", codes);
    else
        json_decref(codes);
    if (!on || !codes)
        cc_fail(c, NULL);
}

/* Istio retries when a route sets none: 2 attempts on connect failures
 * (its default retryOn, minus the HTTP/2 and gRPC kinds). A replica that
 * just went away is then retried on another instead of answering 503. */
static void put_default_retries(struct cc *c, json_t *route)
{
    cc_put(c, route, "retries", json_pack("{s:i, s:[s]}", "attempts", 2, "retry_on", "connect-failure"));
}

static void put_retries(struct cc *c, json_t *route, const struct model_http_route *h)
{
    if (h->retry_attempts < 0) {
        put_default_retries(c, route);
        return;
    }
    if (h->retry_attempts == 0)
        return;
    json_t *r = json_object();
    cc_put_int(c, r, "attempts", clamp(h->retry_attempts, 0, 10));
    if (h->per_try_timeout_ms > 0)
        cc_put_int(c, r, "per_try_timeout_ms", clamp(h->per_try_timeout_ms, 0, 3600000));
    if (h->retry_on)
        put_retry_on(c, r, h->retry_on);
    if (h->retry_on && !json_object_get(r, "retry_on") && !json_object_get(r, "retriable_status_codes")) {
        json_decref(r); /* only kinds with no HTTP/1 meaning: nothing is retried */
        return;
    }
    cc_put(c, route, "retries", r);
}

static void put_fault(struct cc *c, json_t *route, const struct model_http_route *h)
{
    if (h->fault_delay_ms <= 0 && h->fault_abort_status <= 0)
        return;
    json_t *f = json_object();
    if (h->fault_delay_ms > 0) {
        cc_put_int(c, f, "delay_ms", clamp(h->fault_delay_ms, 0, 3600000));
        if (h->fault_delay_percent > 0) /* absent: every request (Istio's default) */
            cc_put_int(c, f, "delay_percent", clamp(h->fault_delay_percent, 0, 100));
    }
    if (h->fault_abort_status > 0) {
        cc_put_int(c, f, "abort_status", clamp(h->fault_abort_status, 200, 599));
        if (h->fault_abort_percent > 0)
            cc_put_int(c, f, "abort_percent", clamp(h->fault_abort_percent, 0, 100));
    }
    cc_put(c, route, "fault", f);
}

void cc_route_action(struct cc *c, json_t *route, const struct model_http_route *h)
{
    if (h->nroute == 0 || h->nroute > 64) {
        cc_fail(c, "http route %s: expected 1..64 destinations", h->name ? h->name : "");
        return;
    }
    json_t *ds = json_array();
    long long total = 0;
    for (size_t i = 0; i < h->nroute; i++) {
        json_t *d = destination(c, &h->route[i], "route.destination");
        int w = h->nroute == 1 && h->route[i].weight <= 0 ? 100 : h->route[i].weight;
        cc_put_int(c, d, "weight", clamp(w, 0, 1000000));
        total += w > 0 ? w : 0;
        cc_push(c, ds, d);
    }
    if (total == 0)
        cc_fail(c, "http route %s: the destination weights add up to 0", h->name ? h->name : "");
    cc_put(c, route, "destinations", ds);
    if (h->has_mirror) {
        json_t *m = destination(c, &h->mirror, "mirror");
        cc_put_int(c, m, "percent", h->mirror_percent < 0 ? 100 : clamp(h->mirror_percent, 0, 100));
        cc_put(c, route, "mirror", m);
    }
    put_fault(c, route, h);
    put_retries(c, route, h);
    if (h->timeout_ms > 0)
        cc_put_int(c, route, "timeout_ms", clamp(h->timeout_ms, 1, 3600000));
    if (h->rewrite_uri) {
        if (!json_object_get(route, "prefix") || h->rewrite_uri[0] != '/')
            cc_fail(c, "http route %s: rewrite.uri needs a uri prefix match and must start with '/'",
                    h->name ? h->name : "");
        cc_put_str(c, route, "rewrite_prefix", h->rewrite_uri);
    }
}

void cc_route_default(struct cc *c, json_t *route, const char *service)
{
    cc_put_str(c, route, "cluster", service);
    put_default_retries(c, route);
}

/* Route templates (no host yet) of one Service, in the VirtualService's
 * order: one per http entry and match. */
static void service_templates(struct cc *c, json_t *out, const struct model_service *s)
{
    const struct model_virtualservice *vs = cc_virtualservice(c, s->name, true);
    if (!vs) {
        json_t *r = json_object();
        cc_put_str(c, r, "name", s->name);
        cc_put_str(c, r, "prefix", "/");
        cc_route_default(c, r, s->name);
        cc_push(c, out, r);
        return;
    }
    bool one = vs->nhttp == 1 && vs->http[0].nmatches <= 1;
    for (size_t i = 0; i < vs->nhttp && !c->failed; i++) {
        const struct model_http_route *h = &vs->http[i];
        size_t n = h->nmatches ? h->nmatches : 1;
        for (size_t j = 0; j < n; j++) {
            json_t *r = json_object();
            char name[256], idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            const char *label = h->name ? h->name : idx; /* unnamed entries: their index */
            if (one)
                snprintf(name, sizeof name, "%s", s->name);
            else if (h->nmatches > 1)
                snprintf(name, sizeof name, "%s/%s/%zu", s->name, label, j);
            else
                snprintf(name, sizeof name, "%s/%s", s->name, label);
            cc_put_str(c, r, "name", name);
            cc_route_match(c, r, h->nmatches ? &h->matches[j] : NULL, true);
            cc_route_action(c, r, h);
            cc_push(c, out, r);
        }
    }
}

void cc_outbound_routes(struct cc *c, json_t *routes, const char *listener)
{
    for (size_t i = 0; i < c->m->nservices && !c->failed; i++) {
        const struct model_service *s = &c->m->services[i];
        const char *ns = s->namespace ? s->namespace : "default";
        char hosts[4][300];
        /* The names an app may call a Service by (the port is ignored by the
         * proxy's host match). The proxy's host is one name: one route each. */
        snprintf(hosts[0], sizeof hosts[0], "%s", s->name);
        snprintf(hosts[1], sizeof hosts[1], "%s.%s", s->name, ns);
        snprintf(hosts[2], sizeof hosts[2], "%s.%s.svc", s->name, ns);
        snprintf(hosts[3], sizeof hosts[3], "%s.%s.svc.cluster.local", s->name, ns);
        json_t *tmpl = json_array();
        service_templates(c, tmpl, s);
        for (size_t h = 0; h < 4; h++) {
            for (size_t k = 0; k < json_array_size(tmpl); k++) {
                json_t *r = json_deep_copy(json_array_get(tmpl, k));
                cc_put_str(c, r, "host", hosts[h]);
                cc_put(c, r, "listeners", json_pack("[s]", listener));
                cc_push(c, routes, r);
            }
        }
        if (!tmpl)
            cc_fail(c, NULL);
        json_decref(tmpl);
    }
}
