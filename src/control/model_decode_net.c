/* model_decode_net.c — the traffic kinds: Ingress, VirtualService,
 * DestinationRule. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "control/model_internal.h"

static bool expect_map(struct mctx *c, const struct cfg_node *n)
{
    if (cfg_kind(n) == CFG_MAP)
        return true;
    model_err(c, n, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(n)));
    return false;
}

/* ---- Ingress -------------------------------------------------------------- */

static void decode_ingress_path(struct mctx *c, const struct cfg_node *it, struct model_ingress_path *p)
{
    const char *type = NULL;
    if (dstr_need(c, it, "path", &p->path) == 1 && p->path[0] != '/')
        model_err(c, cfg_map_get(it, "path"), "must start with '/'");
    if (dstr_need(c, it, "pathType", &type) == 1) {
        if (strcmp(type, "Exact") == 0)
            p->exact = true;
        else if (strcmp(type, "Prefix") != 0 && strcmp(type, "ImplementationSpecific") != 0)
            model_err(c, cfg_map_get(it, "pathType"), "expected Exact, Prefix or ImplementationSpecific, got \"%.40s\"",
                      type);
    }
    const struct cfg_node *be = dneed(c, it, "backend");
    if (!be || !expect_map(c, be))
        return;
    const struct cfg_node *svc = dneed(c, be, "service");
    if (!svc || !expect_map(c, svc))
        return;
    dstr_need(c, svc, "name", &p->service);
    const struct cfg_node *port = dneed(c, svc, "port");
    if (!port || !expect_map(c, port))
        return;
    int hn = dint(c, port, "number", 1, 65535, &p->service_port);
    int hs = dstr(c, port, "name", &p->service_port_name);
    if (hn == 1 && hs == 1)
        model_err(c, port, "number and name are exclusive");
    else if (hn == 0 && hs == 0)
        model_err_sub(c, port, "number", "required field is missing (or name)");
}

int decode_ingress(struct mctx *c, const struct cfg_node *spec, struct model_ingress *in)
{
    const char *cls = NULL;
    if (dstr(c, spec, "ingressClassName", &cls) == 1 && strcmp(cls, "strata") != 0)
        model_warn(c, cfg_map_get(spec, "ingressClassName"),
                   "ingressClassName \"%.40s\": strata's gateway serves every Ingress whatever its class", cls);
    const struct cfg_node *tls = dseq(c, spec, "tls");
    size_t nhosts = 0;
    for (size_t i = 0; i < cfg_count(tls); i++)
        nhosts += cfg_count(cfg_map_get(cfg_seq_item(tls, i), "hosts"));
    in->tls_hosts = model_alloc(c, nhosts * sizeof *in->tls_hosts);
    for (size_t i = 0; in->tls_hosts && i < cfg_count(tls); i++) {
        const struct cfg_node *it = cfg_seq_item(tls, i);
        const char **hosts, *secret;
        size_t n;
        if (!expect_map(c, it))
            continue;
        dstr(c, it, "secretName", &secret); /* certificates come from the CA */
        if (dstrs(c, it, "hosts", &hosts, &n) == 1)
            for (size_t k = 0; k < n; k++)
                in->tls_hosts[in->ntls_hosts++] = hosts[k];
    }
    const struct cfg_node *rules = dneed(c, spec, "rules");
    if (!rules)
        return -1;
    if (cfg_kind(rules) != CFG_SEQ) {
        model_err(c, rules, "expected a sequence, got a %s", cfg_kind_name(cfg_kind(rules)));
        return -1;
    }
    in->rules = model_alloc(c, cfg_count(rules) * sizeof *in->rules);
    for (size_t i = 0; in->rules && i < cfg_count(rules); i++) {
        const struct cfg_node *it = cfg_seq_item(rules, i);
        struct model_ingress_rule *r = &in->rules[in->nrules];
        if (!expect_map(c, it))
            continue;
        dstr(c, it, "host", &r->host);
        const struct cfg_node *http = dneed(c, it, "http");
        const struct cfg_node *paths = http && expect_map(c, http) ? dneed(c, http, "paths") : NULL;
        if (!paths)
            continue;
        if (cfg_kind(paths) != CFG_SEQ || cfg_count(paths) == 0) {
            model_err(c, paths, "expected a non-empty sequence of paths");
            continue;
        }
        r->paths = model_alloc(c, cfg_count(paths) * sizeof *r->paths);
        for (size_t k = 0; r->paths && k < cfg_count(paths); k++) {
            const struct cfg_node *p = cfg_seq_item(paths, k);
            if (expect_map(c, p))
                decode_ingress_path(c, p, &r->paths[r->npaths++]);
        }
        in->nrules++;
    }
    return 0;
}

/* ---- VirtualService ------------------------------------------------------- */

static int decode_string_match(struct mctx *c, const struct cfg_node *n, struct model_string_match *m)
{
    static const char *const names[] = { "exact", "prefix", "regex" };
    static const int kinds[] = { MODEL_MATCH_EXACT, MODEL_MATCH_PREFIX, MODEL_MATCH_REGEX };
    if (!expect_map(c, n))
        return -1;
    int found = 0;
    for (int i = 0; i < 3; i++) {
        const char *v;
        if (dstr(c, n, names[i], &v) == 1) {
            m->kind = kinds[i];
            m->value = v;
            found++;
        }
    }
    if (found != 1) {
        model_err(c, n, found ? "exact, prefix and regex are exclusive" : "needs exact, prefix or regex");
        return -1;
    }
    return 0;
}

static void decode_match(struct mctx *c, const struct cfg_node *n, struct model_http_match *m)
{
    const struct cfg_node *v;
    if ((v = dmap(c, n, "uri")))
        decode_string_match(c, v, &m->uri);
    if ((v = dmap(c, n, "method")))
        decode_string_match(c, v, &m->method);
    const struct cfg_node *h = dmap(c, n, "headers");
    if (!h)
        return;
    m->headers = model_alloc(c, cfg_count(h) * sizeof *m->headers);
    for (size_t i = 0; m->headers && i < cfg_count(h); i++) {
        struct model_header_match *hm = &m->headers[m->nheaders];
        hm->name = scalar_or_null(cfg_map_key(h, i));
        model_mark_used(c, cfg_map_value(h, i));
        if (hm->name && decode_string_match(c, cfg_map_value(h, i), &hm->match) == 0)
            m->nheaders++;
    }
}

static void decode_dest(struct mctx *c, const struct cfg_node *owner, const char *key, const char *ns,
                        struct model_route_dest *d)
{
    const struct cfg_node *dn = dneed(c, owner, key);
    const char *host = NULL;
    if (!dn || !expect_map(c, dn))
        return;
    model_set_loc(&d->loc, dn);
    if (dstr_need(c, dn, "host", &host) == 1)
        d->host = model_short_host(c, host);
    dstr(c, dn, "subset", &d->subset);
    const struct cfg_node *port = dmap(c, dn, "port");
    if (port)
        dint(c, port, "number", 1, 65535, &d->port);
    (void)ns;
}

static void decode_routes(struct mctx *c, const struct cfg_node *hr, struct model_http_route *r, const char *ns)
{
    const struct cfg_node *seq = dneed(c, hr, "route");
    if (!seq)
        return;
    if (cfg_kind(seq) != CFG_SEQ || cfg_count(seq) == 0) {
        model_err(c, seq, "expected a non-empty sequence of destinations");
        return;
    }
    r->route = model_alloc(c, cfg_count(seq) * sizeof *r->route);
    int sum = 0;
    bool any_weight = false;
    for (size_t i = 0; r->route && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        struct model_route_dest *d = &r->route[r->nroute++];
        if (!expect_map(c, it))
            continue;
        decode_dest(c, it, "destination", ns, d);
        if (dint(c, it, "weight", 0, 100, &d->weight) == 1)
            any_weight = true;
        sum += d->weight;
        const struct cfg_node *hdr = dget(c, it, "headers");
        if (hdr)
            model_warn(c, hdr, "not implemented by strata (ignored)");
    }
    if (r->nroute == 1 && !any_weight)
        r->route[0].weight = 100;
    else if (r->nroute > 1 && sum != 100)
        model_err(c, seq, "weights must add up to 100, got %d", sum);
    else if (r->nroute == 1 && sum != 100)
        model_err(c, seq, "a single destination's weight must be 100 (or left out), got %d", sum);
}

static void decode_retries(struct mctx *c, const struct cfg_node *hr, struct model_http_route *r)
{
    const struct cfg_node *rt = dmap(c, hr, "retries");
    r->retry_attempts = -1;
    if (!rt)
        return;
    dint(c, rt, "attempts", 0, 100, &r->retry_attempts);
    ddur_ms(c, rt, "perTryTimeout", 1, 3600000, &r->per_try_timeout_ms);
    dstr(c, rt, "retryOn", &r->retry_on);
}

static void decode_fault(struct mctx *c, const struct cfg_node *hr, struct model_http_route *r)
{
    const struct cfg_node *f = dmap(c, hr, "fault");
    if (!f)
        return;
    const struct cfg_node *d = dmap(c, f, "delay"), *a = dmap(c, f, "abort");
    if (d) {
        if (dneed(c, d, "fixedDelay"))
            ddur_ms(c, d, "fixedDelay", 1, 3600000, &r->fault_delay_ms);
        r->fault_delay_percent = 100;
        dpercent(c, dmap(c, d, "percentage"), "value", &r->fault_delay_percent);
    }
    if (a) {
        if (dneed(c, a, "httpStatus"))
            dint(c, a, "httpStatus", 200, 599, &r->fault_abort_status);
        r->fault_abort_percent = 100;
        dpercent(c, dmap(c, a, "percentage"), "value", &r->fault_abort_percent);
    }
}

static void decode_http_route(struct mctx *c, const struct cfg_node *hr, struct model_http_route *r, const char *ns)
{
    dstr(c, hr, "name", &r->name);
    const struct cfg_node *ms = dseq(c, hr, "match");
    r->matches = model_alloc(c, cfg_count(ms) * sizeof *r->matches);
    for (size_t i = 0; r->matches && i < cfg_count(ms); i++) {
        const struct cfg_node *it = cfg_seq_item(ms, i);
        if (expect_map(c, it))
            decode_match(c, it, &r->matches[r->nmatches++]);
    }
    decode_routes(c, hr, r, ns);
    if (cfg_map_get(hr, "mirror")) {
        r->has_mirror = true;
        decode_dest(c, hr, "mirror", ns, &r->mirror);
        r->mirror_percent = 100;
        dpercent(c, dmap(c, hr, "mirrorPercentage"), "value", &r->mirror_percent);
    }
    ddur_ms(c, hr, "timeout", 1, 3600000, &r->timeout_ms);
    decode_retries(c, hr, r);
    decode_fault(c, hr, r);
    const struct cfg_node *rw = dmap(c, hr, "rewrite");
    if (rw && dstr(c, rw, "uri", &r->rewrite_uri) == 1 && r->rewrite_uri[0] != '/')
        model_err(c, cfg_map_get(rw, "uri"), "must start with '/'");
}

int decode_virtualservice(struct mctx *c, const struct cfg_node *spec, struct model_virtualservice *vs)
{
    const char **hosts;
    size_t n;
    if (!dneed(c, spec, "hosts"))
        return -1;
    if (dstrs(c, spec, "hosts", &hosts, &n) == 1) {
        if (n == 0)
            model_err(c, cfg_map_get(spec, "hosts"), "needs at least one host");
        vs->hosts = hosts;
        for (size_t i = 0; i < n; i++)
            vs->hosts[vs->nhosts++] = model_short_host(c, hosts[i]);
    }
    dstrs(c, spec, "gateways", &vs->gateways, &vs->ngateways);
    const struct cfg_node *http = dseq(c, spec, "http");
    vs->http = model_alloc(c, cfg_count(http) * sizeof *vs->http);
    for (size_t i = 0; vs->http && i < cfg_count(http); i++) {
        const struct cfg_node *it = cfg_seq_item(http, i);
        if (expect_map(c, it))
            decode_http_route(c, it, &vs->http[vs->nhttp++], vs->namespace);
    }
    return 0;
}

/* ---- DestinationRule ------------------------------------------------------ */

static void decode_traffic_policy(struct mctx *c, const struct cfg_node *tp, struct model_destinationrule *dr)
{
    const struct cfg_node *lb = dmap(c, tp, "loadBalancer");
    const char *simple = NULL;
    if (dstr(c, lb, "simple", &simple) == 1) {
        const struct cfg_node *n = cfg_map_get(lb, "simple");
        if (strcmp(simple, "ROUND_ROBIN") == 0)
            dr->lb = MODEL_LB_ROUND_ROBIN;
        else if (strcmp(simple, "LEAST_REQUEST") == 0 || strcmp(simple, "LEAST_CONN") == 0)
            dr->lb = MODEL_LB_LEAST_REQUEST;
        else if (strcmp(simple, "RANDOM") == 0 || strcmp(simple, "PASSTHROUGH") == 0 ||
                 strcmp(simple, "UNSPECIFIED") == 0)
            model_warn(c, n, "%s is not implemented by strata (the default balancer is used)", simple);
        else
            model_err(c, n, "expected ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH, got \"%.40s\"",
                      simple);
    }
    const struct cfg_node *cp = dmap(c, tp, "connectionPool");
    dint(c, dmap(c, cp, "tcp"), "maxConnections", 1, 1000000, &dr->max_connections);
    const struct cfg_node *http = dmap(c, cp, "http");
    dint(c, http, "http1MaxPendingRequests", 1, 1000000, &dr->max_pending_requests);
    dint(c, http, "http2MaxRequests", 1, 1000000, &dr->max_requests);
    dint(c, http, "maxRetries", 0, 1000000, &dr->max_retries);
    const struct cfg_node *od = dmap(c, tp, "outlierDetection");
    if (!od)
        return;
    dr->outlier = true;
    dint(c, od, "consecutive5xxErrors", 0, 1000000, &dr->consecutive_5xx);
    dint(c, od, "consecutiveGatewayErrors", 0, 1000000, &dr->consecutive_gateway_errors);
    ddur_ms(c, od, "interval", 1, 86400000, &dr->interval_ms);
    ddur_ms(c, od, "baseEjectionTime", 1, 86400000, &dr->base_ejection_ms);
    dint(c, od, "maxEjectionPercent", 0, 100, &dr->max_ejection_percent);
}

int decode_destinationrule(struct mctx *c, const struct cfg_node *spec, struct model_destinationrule *dr)
{
    const char *host = NULL;
    dr->consecutive_5xx = dr->consecutive_gateway_errors = -1;
    dr->max_ejection_percent = -1;
    if (dstr_need(c, spec, "host", &host) == 1)
        dr->host = model_short_host(c, host);
    decode_traffic_policy(c, dmap(c, spec, "trafficPolicy"), dr);
    const struct cfg_node *ss = dseq(c, spec, "subsets");
    dr->subsets = model_alloc(c, cfg_count(ss) * sizeof *dr->subsets);
    for (size_t i = 0; dr->subsets && i < cfg_count(ss); i++) {
        const struct cfg_node *it = cfg_seq_item(ss, i);
        struct model_subset *s = &dr->subsets[dr->nsubsets];
        if (!expect_map(c, it))
            continue;
        if (dstr_need(c, it, "name", &s->name) != 1)
            continue;
        if (dlabels(c, it, "labels", &s->labels) != 1 || s->labels.n == 0)
            model_err_sub(c, it, "labels", "a subset needs labels");
        for (size_t k = 0; k < dr->nsubsets; k++)
            if (strcmp(dr->subsets[k].name, s->name) == 0)
                model_err(c, cfg_map_get(it, "name"), "duplicate subset \"%.60s\"", s->name);
        dr->nsubsets++;
    }
    return 0;
}
