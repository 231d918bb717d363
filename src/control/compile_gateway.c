/* compile_gateway.c — a gateway replica's config: the public listeners,
 * one route per Ingress path (Kubernetes order: exact first, then the
 * longest prefix), the Services' clusters, JWT providers from
 * RequestAuthentication, per-route JWT modes from the Istio "DENY
 * notRequestPrincipals *" pattern, RateLimitPolicy and WafPolicy.
 *
 * Policies name paths that need not coincide with Ingress paths (a DENY on
 * /v1/users/... under an Ingress prefix /v1/users, a limit on
 * /v1/auth/login under /v1/auth). The proxy takes the first matching route,
 * so a route is split: narrower copies of it (the intersection of its match
 * with a policy's) come first, each with the JWT mode, limit and WAF that
 * cover it entirely, then the route itself with what covers all of it.
 * Matches are sets of paths × methods, intersected exactly (struct pm). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/compile_internal.h"

/* Path sets: every path; one path; a proxy prefix (segment boundary:
 * /a matches /a and /a/..., not /ab); a string prefix (Istio's "X*": /ab
 * too); a suffix (Istio's "*X"). */
enum pm_kind { PM_NONE, PM_ALL, PM_EXACT, PM_SEG, PM_STR, PM_SUFFIX };

#define PM_PATH 512
#define PM_METHODS 8 /* the proxy's bound on a route's methods */

struct pm {
    enum pm_kind kind;
    char path[PM_PATH];
    const char *methods[PM_METHODS];
    size_t nmethods; /* 0: any */
};

enum spec_what { SPEC_JWT, SPEC_RL, SPEC_WAF };

struct spec {
    struct pm m;
    enum spec_what what;
    size_t index; /* SPEC_RL: into c->rl; SPEC_WAF: into the model's wafs */
};

/* A compiled rate limit (one per RateLimitPolicy rule). */
struct rl {
    char name[160];
    bool jwt_sub;
};

struct gw {
    struct cc *c;
    struct spec *specs;
    size_t nspecs, capspecs;
    struct rl *rl;
    size_t nrl;
    const char *provider; /* the routes' JWT provider, NULL: none */
    char provider_buf[200];
};

/* ---- path sets ---------------------------------------------------------- */

static bool starts(const char *s, const char *pre)
{
    return !strncmp(s, pre, strlen(pre));
}

static bool ends(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* path in the proxy prefix p. */
static bool in_seg(const char *path, const char *p)
{
    size_t n = strlen(p);
    return starts(path, p) && (path[n] == '\0' || (n && p[n - 1] == '/') || path[n] == '/');
}

static bool path_in(const char *path, const struct pm *x)
{
    switch (x->kind) {
    case PM_ALL: return true;
    case PM_EXACT: return !strcmp(path, x->path);
    case PM_SEG: return in_seg(path, x->path);
    case PM_STR: return starts(path, x->path);
    case PM_SUFFIX: return ends(path, x->path);
    default: return false;
    }
}

static void pm_set(struct pm *r, enum pm_kind k, const char *path)
{
    r->kind = k;
    snprintf(r->path, sizeof r->path, "%s", path);
}

/* a ∩ b, paths only. A suffix set intersects only single paths (other
 * cases are not expressible as one proxy match: the result is empty, so a
 * suffix policy applies to exact routes only). */
static void path_meet(const struct pm *a, const struct pm *b, struct pm *r)
{
    if (a->kind == PM_ALL || b->kind == PM_ALL) {
        const struct pm *o = a->kind == PM_ALL ? b : a;
        pm_set(r, o->kind, o->path);
    } else if (a->kind == PM_EXACT || b->kind == PM_EXACT) {
        const struct pm *e = a->kind == PM_EXACT ? a : b, *o = e == a ? b : a;
        if (path_in(e->path, o))
            pm_set(r, PM_EXACT, e->path);
    } else if (a->kind == PM_SUFFIX || b->kind == PM_SUFFIX) {
        r->kind = PM_NONE;
    } else if (a->kind == PM_SEG && b->kind == PM_SEG) {
        if (in_seg(b->path, a->path))
            pm_set(r, PM_SEG, b->path);
        else if (in_seg(a->path, b->path))
            pm_set(r, PM_SEG, a->path);
    } else if (a->kind == PM_STR && b->kind == PM_STR) {
        if (starts(a->path, b->path))
            pm_set(r, PM_STR, a->path);
        else if (starts(b->path, a->path))
            pm_set(r, PM_STR, b->path);
    } else {
        const struct pm *s = a->kind == PM_SEG ? a : b, *t = s == a ? b : a; /* SEG(p) ∩ STR(q) */
        size_t n = strlen(s->path);
        if (starts(s->path, t->path))
            pm_set(r, PM_SEG, s->path);
        else if (starts(t->path, s->path) && ((n && s->path[n - 1] == '/') || t->path[n] == '/'))
            pm_set(r, PM_STR, t->path);
    }
}

static bool has_method(const struct pm *x, const char *m)
{
    for (size_t i = 0; i < x->nmethods; i++)
        if (!strcmp(x->methods[i], m))
            return true;
    return false;
}

/* a ∩ b; r->kind is PM_NONE when empty. Methods keep a's order. */
static void pm_meet(const struct pm *a, const struct pm *b, struct pm *r)
{
    memset(r, 0, sizeof *r);
    path_meet(a, b, r);
    if (r->kind == PM_NONE)
        return;
    if (!a->nmethods || !b->nmethods) {
        const struct pm *o = a->nmethods ? a : b;
        memcpy(r->methods, o->methods, sizeof r->methods);
        r->nmethods = o->nmethods;
        return;
    }
    for (size_t i = 0; i < a->nmethods; i++)
        if (has_method(b, a->methods[i]))
            r->methods[r->nmethods++] = a->methods[i];
    if (!r->nmethods)
        r->kind = PM_NONE;
}

static bool pm_eq(const struct pm *a, const struct pm *b)
{
    if (a->kind != b->kind || strcmp(a->path, b->path) || a->nmethods != b->nmethods)
        return false;
    for (size_t i = 0; i < a->nmethods; i++)
        if (!has_method(b, a->methods[i]))
            return false;
    return true;
}

/* Every request route matches is in spec. */
static bool pm_covers(const struct pm *spec, const struct pm *route)
{
    struct pm r;
    pm_meet(route, spec, &r);
    return pm_eq(&r, route);
}

/* Istio path pattern ("*", "/x*", "*x", "/x") → set. */
static void pm_from_pattern(const char *pat, struct pm *r)
{
    size_t n = strlen(pat);
    memset(r, 0, sizeof *r);
    if (!strcmp(pat, "*"))
        r->kind = PM_ALL;
    else if (n && pat[n - 1] == '*')
        snprintf(r->path, sizeof r->path, "%.*s", (int)(n - 1), pat), r->kind = PM_STR;
    else if (pat[0] == '*')
        pm_set(r, PM_SUFFIX, pat + 1);
    else
        pm_set(r, PM_EXACT, pat);
}

static void pm_methods(struct pm *r, const char *const *m, size_t n)
{
    /* More methods than a route can list: the set is widened to every
     * method (a wider JWT requirement, never a narrower one). */
    r->nmethods = n <= PM_METHODS ? n : 0;
    for (size_t i = 0; i < r->nmethods; i++)
        r->methods[i] = m[i];
}

/* POSIX ERE with every special character escaped. */
static void regex_escape(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (strchr(".[]{}()\\*+?^$|", *s))
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k] = '\0';
}

static void put_match(struct cc *c, json_t *route, const struct pm *m)
{
    char re[PM_PATH * 2 + 8];
    size_t n = strlen(m->path);
    switch (m->kind) {
    case PM_EXACT: cc_put_str(c, route, "exact", m->path); break;
    case PM_SEG: cc_put_str(c, route, "prefix", m->path); break;
    case PM_STR:
        if (n && m->path[n - 1] == '/') { /* the proxy's prefix ending in '/' is a string prefix */
            cc_put_str(c, route, "prefix", m->path);
        } else {
            regex_escape(m->path, re, sizeof re - 3);
            strcat(re, ".*");
            cc_put_str(c, route, "regex", re);
        }
        break;
    default: cc_put_str(c, route, "prefix", "/"); break;
    }
    if (m->nmethods)
        cc_put(c, route, "methods", cc_strings(c, m->methods, m->nmethods));
}

/* ---- policies ----------------------------------------------------------- */

static int add_spec(struct gw *g, const struct pm *m, enum spec_what what, size_t index)
{
    if (g->nspecs == g->capspecs) {
        size_t cap = g->capspecs ? g->capspecs * 2 : 16;
        struct spec *s = realloc(g->specs, cap * sizeof *s);
        if (!s)
            return cc_fail(g->c, NULL);
        g->specs = s;
        g->capspecs = cap;
    }
    g->specs[g->nspecs++] = (struct spec){ *m, what, index };
    return 0;
}

static bool lists_star(const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && !strcmp(v[i], "*"))
            return true;
    return false;
}

/* Istio's "token required" pattern: DENY from {notRequestPrincipals: ["*"]}.
 * A gateway caller has no mTLS identity, so not_principals/not_namespaces
 * always hold and positive principals/namespaces never do: only sources
 * with no positive list count. Operations' notPaths/notMethods are ignored:
 * the requirement then covers more, never less. */
static bool requires_token(const struct model_authz_rule *r)
{
    for (size_t i = 0; i < r->nfrom; i++) {
        const struct model_authz_source *s = &r->from[i];
        if (lists_star(s->not_request_principals, s->nnot_request_principals) && !s->nprincipals &&
            !s->nnamespaces && !s->nrequest_principals)
            return true;
    }
    return false;
}

static void jwt_specs(struct gw *g)
{
    struct cc *c = g->c;
    for (size_t i = 0; i < c->m->nauthzpolicies; i++) {
        const struct model_authzpolicy *ap = &c->m->authzpolicies[i];
        if (!ap->deny || !cc_selects(c, ap->namespace, &ap->selector))
            continue;
        for (size_t j = 0; j < ap->nrules; j++) {
            const struct model_authz_rule *r = &ap->rules[j];
            if (!requires_token(r))
                continue;
            struct pm m = { .kind = PM_ALL };
            if (r->nto == 0)
                add_spec(g, &m, SPEC_JWT, 0);
            for (size_t k = 0; k < r->nto; k++) {
                const struct model_authz_op *op = &r->to[k];
                for (size_t p = 0; p < (op->npaths ? op->npaths : 1); p++) {
                    if (op->npaths)
                        pm_from_pattern(op->paths[p] ? op->paths[p] : "", &m);
                    else
                        m = (struct pm){ .kind = PM_ALL };
                    pm_methods(&m, op->methods, op->nmethods);
                    add_spec(g, &m, SPEC_JWT, 0);
                }
            }
        }
    }
}

static const char *rl_key(const struct model_ratelimit_rule *r, char *buf, size_t n)
{
    if (r->key == MODEL_RL_JWT_SUB)
        return "jwt_sub";
    if (r->key == MODEL_RL_HEADER) {
        snprintf(buf, n, "header:%s", r->header ? r->header : "");
        return buf;
    }
    return "client_ip";
}

/* rate_limits[]: one per RateLimitPolicy rule. A global limit without Redis
 * is left out: global limits fail open when Redis is unreachable, and
 * without it every request would be let through anyway. */
static void rate_limits(struct gw *g, json_t *doc)
{
    struct cc *c = g->c;
    size_t total = 0;
    for (size_t i = 0; i < c->m->nratelimits; i++)
        total += c->m->ratelimits[i].nrules;
    if (!(g->rl = calloc(total + 1, sizeof *g->rl))) {
        cc_fail(c, NULL);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < c->m->nratelimits && !c->failed; i++) {
        const struct model_ratelimit *pol = &c->m->ratelimits[i];
        for (size_t j = 0; j < pol->nrules; j++) {
            const struct model_ratelimit_rule *r = &pol->rules[j];
            if (r->global && !c->p->redis_addr)
                continue;
            if (r->key == MODEL_RL_JWT_SUB && !g->provider)
                continue; /* the proxy refuses jwt_sub keys on routes without JWT */
            struct rl *x = &g->rl[g->nrl];
            if (pol->nrules > 1)
                snprintf(x->name, sizeof x->name, "%s-%zu", pol->name, j);
            else
                snprintf(x->name, sizeof x->name, "%s", pol->name);
            if (strchr(x->name, ':')) {
                cc_fail(c, "RateLimitPolicy %s: the name must not contain ':'", pol->name);
                return;
            }
            x->jwt_sub = r->key == MODEL_RL_JWT_SUB;
            char key[300];
            json_t *o = json_object();
            cc_put_str(c, o, "name", x->name);
            cc_put_str(c, o, "key", rl_key(r, key, sizeof key));
            cc_put_int(c, o, "requests", r->requests > 0 ? r->requests : 1);
            long long period = r->period_s > 0 ? (long long)r->period_s * 1000 : 1000;
            cc_put_int(c, o, "period_ms", period > 86400000 ? 86400000 : period);
            if (r->burst > 0)
                cc_put_int(c, o, "burst", r->burst);
            cc_put_str(c, o, "scope", r->global ? "global" : "local");
            cc_push(c, arr, o);
            struct pm m;
            memset(&m, 0, sizeof m);
            pm_set(&m, PM_SEG, r->path_prefix && r->path_prefix[0] == '/' ? r->path_prefix : "/");
            pm_methods(&m, r->methods, r->nmethods);
            add_spec(g, &m, SPEC_RL, g->nrl++);
        }
    }
    if (json_array_size(arr))
        cc_put(c, doc, "rate_limits", arr);
    else
        json_decref(arr);
    if (!arr)
        cc_fail(c, NULL);
}

static void waf_specs(struct gw *g)
{
    for (size_t i = 0; i < g->c->m->nwafs; i++) {
        const struct model_waf *w = &g->c->m->wafs[i];
        for (size_t j = 0; j < w->npath_prefixes; j++) {
            struct pm m;
            memset(&m, 0, sizeof m);
            pm_set(&m, PM_STR, w->path_prefixes[j] ? w->path_prefixes[j] : "/");
            add_spec(g, &m, SPEC_WAF, i);
        }
    }
}

/* ---- JWT providers ------------------------------------------------------ */

/* A jwks_uri naming a Service ("http://auth-svc/.well-known/jwks.json")
 * must become something the proxy can fetch: its JWKS client speaks plain
 * HTTP to a numeric address, with no cluster reference and no TLS. So the
 * gateway fetches through itself: a route on its own plain listener, for its
 * loopback host and that exact path, forwards to the Service's cluster
 * (over the cluster's mTLS when its replicas have sidecars). The URL then
 * never changes with the endpoints. Without a plain listener, the first
 * ready endpoint is fetched directly (works only for plaintext endpoints). */
static void jwks_uri(struct gw *g, const char *provider, const char *uri, json_t *jp, json_t *self_routes)
{
    struct cc *c = g->c;
    if (strncmp(uri, "http://", 7)) {
        cc_fail(c, "RequestAuthentication: jwksUri \"%s\": the proxy fetches http:// only", uri);
        return;
    }
    const char *hp = uri + 7;
    size_t hl = strcspn(hp, "/"), nl = strcspn(hp, ":/");
    const char *path = hp[hl] ? hp + hl : "/";
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(nl < sizeof host ? nl : sizeof host - 1), hp);
    char *dot = strchr(host, '.'); /* "auth-svc.default.svc.cluster.local" → "auth-svc" */
    const struct model_service *s = cc_service(c, host);
    if (!s && dot) {
        *dot = '\0';
        s = cc_service(c, host);
    }
    if (!s) {
        cc_put_str(c, jp, "jwks_uri", uri);
        return;
    }
    char url[1400];
    const char *la = c->p->http_addr;
    if (!la) {
        const struct compile_endpoint *first = NULL;
        for (size_t i = 0; i < c->neps && !first; i++)
            if (cc_labels_match(&s->selector, c->eps[i]->labels))
                first = c->eps[i];
        /* None ready: a refused fetch (port 9, discard) until a later push. */
        snprintf(url, sizeof url, "http://%s%s", first ? first->address : "127.0.0.1:9", path);
        cc_put_str(c, jp, "jwks_uri", url);
        return;
    }
    const char *port = strrchr(la, ':');
    char lhost[128];
    snprintf(lhost, sizeof lhost, "%.*s", (int)(port ? port - la : (ptrdiff_t)strlen(la)), la);
    if (!strcmp(lhost, "0.0.0.0"))
        snprintf(lhost, sizeof lhost, "127.0.0.1");
    else if (!strcmp(lhost, "[::]"))
        snprintf(lhost, sizeof lhost, "[::1]");
    snprintf(url, sizeof url, "http://%s%s%s", lhost, port ? port : "", path);
    cc_put_str(c, jp, "jwks_uri", url);
    json_t *r = json_object();
    char name[300];
    snprintf(name, sizeof name, "jwks:%s", provider);
    cc_put_str(c, r, "name", name);
    cc_put(c, r, "listeners", json_pack("[s]", "http"));
    cc_put_str(c, r, "host", lhost);
    cc_put_str(c, r, "exact", path);
    cc_put_str(c, r, "cluster", s->name);
    cc_push(c, self_routes, r);
}

static void jwt_providers(struct gw *g, json_t *doc, json_t *self_routes)
{
    struct cc *c = g->c;
    json_t *arr = json_array();
    for (size_t i = 0; i < c->m->nrequestauths && !c->failed; i++) {
        const struct model_requestauth *ra = &c->m->requestauths[i];
        if (!cc_selects(c, ra->namespace, &ra->selector))
            continue;
        for (size_t j = 0; j < ra->nrules; j++) {
            const struct model_jwt_rule *r = &ra->rules[j];
            char name[200];
            if (ra->nrules > 1)
                snprintf(name, sizeof name, "%s-%zu", ra->name, j);
            else
                snprintf(name, sizeof name, "%s", ra->name);
            json_t *o = json_object();
            cc_put_str(c, o, "name", name);
            cc_put_str(c, o, "issuer", r->issuer);
            if (r->naudiences)
                cc_put(c, o, "audiences", cc_strings(c, r->audiences, r->naudiences > 32 ? 32 : r->naudiences));
            jwks_uri(g, name, r->jwks_uri ? r->jwks_uri : "", o, self_routes);
            /* Istio's forwardOriginalToken (default false: removed). */
            cc_put(c, o, "forward_token", json_boolean(r->forward_original_token));
            if (r->noutput) {
                json_t *ch = json_array();
                for (size_t k = 0; k < r->noutput && k < 32; k++)
                    cc_push(c, ch, json_pack("{s:s, s:s}", "claim", r->output_claim_to_headers[k].key,
                                             "header", r->output_claim_to_headers[k].value));
                cc_put(c, o, "claims_to_headers", ch);
            }
            cc_push(c, arr, o);
            /* A route names one provider: the first. Tokens of the others
             * are not accepted (the proxy has no "any of" per route). */
            if (!g->provider) {
                snprintf(g->provider_buf, sizeof g->provider_buf, "%s", name);
                g->provider = g->provider_buf;
            }
        }
    }
    if (json_array_size(arr))
        cc_put(c, doc, "jwt_providers", arr);
    else
        json_decref(arr);
    if (!arr)
        cc_fail(c, NULL);
}

/* ---- routes ------------------------------------------------------------- */

struct ipath {
    const struct model_ingress *ing;
    const struct model_ingress_rule *rule;
    const struct model_ingress_path *path;
    size_t order;
};

static int host_rank(const char *h)
{
    return !h || !*h || !strcmp(h, "*") ? 2 : h[0] == '*' ? 1 : 0;
}

/* Kubernetes Ingress precedence as first-match order: exact hosts, then
 * wildcard hosts, then any host; within a host, Exact paths before Prefix
 * ones, and longer prefixes first (the longest matching path wins). */
static int cmp_ipath(const void *a, const void *b)
{
    const struct ipath *x = a, *y = b;
    int d = host_rank(x->rule->host) - host_rank(y->rule->host);
    if (d)
        return d;
    if (x->path->exact != y->path->exact)
        return x->path->exact ? -1 : 1;
    size_t lx = strlen(x->path->path ? x->path->path : ""), ly = strlen(y->path->path ? y->path->path : "");
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void put_attributes(struct gw *g, json_t *r, const struct pm *m)
{
    struct cc *c = g->c;
    bool required = false;
    const struct spec *rl = NULL, *waf = NULL;
    for (size_t i = 0; i < g->nspecs; i++) {
        const struct spec *s = &g->specs[i];
        if (!pm_covers(&s->m, m))
            continue;
        if (s->what == SPEC_JWT)
            required = true;
        else if (s->what == SPEC_RL && !rl)
            rl = s;
        else if (s->what == SPEC_WAF && !waf)
            waf = s;
    }
    if (g->provider) {
        json_t *j = json_object();
        cc_put_str(c, j, "provider", g->provider);
        cc_put_str(c, j, "mode", required ? "required" : "optional");
        cc_put(c, r, "jwt", j);
    }
    if (rl)
        cc_put_str(c, r, "rate_limit", g->rl[rl->index].name);
    if (waf) {
        const struct model_waf *w = &c->m->wafs[waf->index];
        json_t *o = json_object();
        cc_put_str(c, o, "mode", w->detect_only ? "detect" : "block");
        cc_put_int(c, o, "paranoia", w->paranoia >= 1 && w->paranoia <= 4 ? w->paranoia : 1);
        cc_put_int(c, o, "anomaly_threshold",
                   w->anomaly_threshold >= 1 && w->anomaly_threshold <= 1000 ? w->anomaly_threshold : 5);
        cc_put(c, r, "waf", o);
    }
}

/* Specific first: single paths, then longer literal paths, then those
 * limited to some methods. */
static int cmp_pm(const void *a, const void *b)
{
    const struct pm *x = a, *y = b;
    if ((x->kind == PM_EXACT) != (y->kind == PM_EXACT))
        return x->kind == PM_EXACT ? -1 : 1;
    size_t lx = strlen(x->path), ly = strlen(y->path);
    if (lx != ly)
        return lx > ly ? -1 : 1;
    if (!x->nmethods != !y->nmethods)
        return x->nmethods ? -1 : 1;
    int d = strcmp(x->path, y->path);
    return d ? d : (int)x->kind - (int)y->kind;
}

/* 32: narrower copies of one route; policies that cut a route into more
 * pieces than that are refused rather than half applied. */
#define MAX_PIECES 32

static void emit(struct gw *g, json_t *routes, json_t *tmpl, const char *name, const char *host,
                 const struct pm *m)
{
    struct cc *c = g->c;
    json_t *r = json_object();
    cc_put_str(c, r, "name", name);
    if (host && *host && strcmp(host, "*"))
        cc_put_str(c, r, "host", host);
    put_match(c, r, m);
    const char *key;
    json_t *v;
    json_object_foreach(tmpl, key, v)
        cc_put(c, r, key, json_deep_copy(v));
    put_attributes(g, r, m);
    cc_push(c, routes, r);
}

/* The route (m, tmpl) with its narrower pieces before it. */
static void emit_split(struct gw *g, json_t *routes, json_t *tmpl, const char *name, const char *host,
                       const struct pm *m)
{
    struct pm *pieces = calloc(MAX_PIECES, sizeof *pieces);
    size_t n = 0;
    if (!pieces) {
        cc_fail(g->c, NULL);
        return;
    }
    /* Closure under intersection with every policy's set: a piece of the
     * route that two policies cut gets both. */
    for (size_t from = 0; from <= n && !g->c->failed; from++) {
        const struct pm *base = from == 0 ? m : &pieces[from - 1];
        for (size_t i = 0; i < g->nspecs; i++) {
            struct pm x;
            pm_meet(base, &g->specs[i].m, &x);
            if (x.kind == PM_NONE || pm_eq(&x, m))
                continue;
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = pm_eq(&pieces[k], &x);
            if (seen)
                continue;
            if (n == MAX_PIECES) {
                cc_fail(g->c, "route %s: policies cut it into more than %d pieces", name, MAX_PIECES);
                break;
            }
            pieces[n++] = x;
        }
    }
    qsort(pieces, n, sizeof *pieces, cmp_pm);
    for (size_t k = 0; k < n; k++) {
        char pname[400];
        snprintf(pname, sizeof pname, "%s~%zu", name, k + 1);
        emit(g, routes, tmpl, pname, host, &pieces[k]);
    }
    emit(g, routes, tmpl, name, host, m);
    free(pieces);
}

static bool uri_constrained(const struct model_http_route *h)
{
    for (size_t i = 0; i < h->nmatches; i++)
        if (h->matches[i].uri.kind != MODEL_MATCH_NONE)
            return true;
    return false;
}

/* One Ingress path. With a VirtualService for its Service (bound to the
 * mesh or not: the edge honours the same canary, retries and timeouts as
 * the mesh), its http entries in order become routes for the Ingress path:
 * method and header matches kept, entries matching on the URI or rewriting
 * it skipped (the Ingress path decides paths at the edge), up to the first
 * entry matching everything; without one, the Service's cluster last. */
static void ingress_path(struct gw *g, json_t *routes, const struct ipath *ip)
{
    struct cc *c = g->c;
    const struct model_ingress_path *ph = ip->path;
    if (!cc_service(c, ph->service)) {
        cc_fail(c, "%s:%d: Ingress %s: path %s: no Service named \"%s\"", ip->ing->loc.file ? ip->ing->loc.file : "?",
                ip->ing->loc.line, ip->ing->name, ph->path, ph->service ? ph->service : "");
        return;
    }
    struct pm m;
    memset(&m, 0, sizeof m);
    char path[PM_PATH];
    snprintf(path, sizeof path, "%s", ph->path);
    size_t pl = strlen(path);
    if (!ph->exact && pl > 1 && path[pl - 1] == '/') /* Kubernetes: a trailing '/' in a Prefix is ignored */
        path[pl - 1] = '\0';
    pm_set(&m, ph->exact ? PM_EXACT : PM_SEG, path);
    char name[400]; /* the path as written: an Exact and a Prefix path may differ only by a trailing '/' */
    snprintf(name, sizeof name, "%s:%s", ip->ing->name, ph->path);
    const struct model_virtualservice *vs = cc_virtualservice(c, ph->service, false);
    bool done = false;
    size_t used = 0;
    for (size_t i = 0; vs && i < vs->nhttp && !done && !c->failed; i++) {
        const struct model_http_route *h = &vs->http[i];
        if (uri_constrained(h) || h->rewrite_uri)
            continue;
        done = h->nmatches == 0;
        bool only = done && used++ == 0; /* the one entry for the edge: named after the path */
        for (size_t j = 0; j < (h->nmatches ? h->nmatches : 1); j++) {
            json_t *tmpl = json_object();
            const struct model_http_match *mt = h->nmatches ? &h->matches[j] : NULL;
            cc_route_match(c, tmpl, mt, false);
            struct pm rm = m;
            json_t *meth = json_object_get(tmpl, "methods");
            if (meth) {
                const char *mv = json_string_value(json_array_get(meth, 0));
                struct pm one = { .kind = PM_ALL, .methods = { mv }, .nmethods = 1 };
                pm_meet(&m, &one, &rm);
                json_object_del(tmpl, "methods");
            }
            cc_route_action(c, tmpl, h);
            char rname[500], idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            if (only)
                snprintf(rname, sizeof rname, "%s", name);
            else if (h->nmatches > 1)
                snprintf(rname, sizeof rname, "%s/%s/%zu", name, h->name ? h->name : idx, j);
            else
                snprintf(rname, sizeof rname, "%s/%s", name, h->name ? h->name : idx);
            if (rm.kind != PM_NONE)
                emit_split(g, routes, tmpl, rname, ip->rule->host, &rm);
            json_decref(tmpl);
        }
    }
    if (!done) {
        json_t *tmpl = json_object();
        cc_route_default(c, tmpl, ph->service);
        emit_split(g, routes, tmpl, name, ip->rule->host, &m);
        json_decref(tmpl);
    }
}

static void ingress_routes(struct gw *g, json_t *routes)
{
    struct cc *c = g->c;
    size_t n = 0;
    for (size_t i = 0; i < c->m->ningresses; i++)
        for (size_t j = 0; j < c->m->ingresses[i].nrules; j++)
            n += c->m->ingresses[i].rules[j].npaths;
    struct ipath *v = calloc(n + 1, sizeof *v);
    if (!v) {
        cc_fail(c, NULL);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->m->ningresses; i++) {
        const struct model_ingress *ing = &c->m->ingresses[i];
        for (size_t j = 0; j < ing->nrules; j++)
            for (size_t p = 0; p < ing->rules[j].npaths; p++) {
                const struct model_ingress_path *ph = &ing->rules[j].paths[p];
                /* /internal/... is never reachable through the gateway
                 * (DESIGN.md): such Ingress paths are not routed, and the
                 * guard route below answers 404 for any other route's
                 * prefix that would cover them. */
                if (!ph->path || ph->path[0] != '/' || in_seg(ph->path, "/internal"))
                    continue;
                v[k] = (struct ipath){ ing, &ing->rules[j], ph, k };
                k++;
            }
    }
    qsort(v, k, sizeof *v, cmp_ipath);
    for (size_t i = 0; i < k && !c->failed; i++)
        ingress_path(g, routes, &v[i]);
    free(v);
}

static void put_listeners(struct cc *c, json_t *doc)
{
    const struct compile_proxy *p = c->p;
    json_t *ls = json_array();
    if (p->http_addr)
        cc_push(c, ls, json_pack("{s:s, s:s}", "name", "http", "address", p->http_addr));
    if (p->https_addr) {
        if (!p->cert_file || !p->key_file) {
            cc_fail(c, "%s: the https listener needs cert_file and key_file", p->id ? p->id : "gateway");
            json_decref(ls);
            return;
        }
        cc_push(c, ls, json_pack("{s:s, s:s, s:{s:[{s:s, s:s}]}}", "name", "https", "address", p->https_addr,
                                 "tls", "certificates", "cert_file", p->cert_file, "key_file", p->key_file));
    }
    if (json_array_size(ls) == 0)
        cc_fail(c, "%s: a gateway needs http_addr or https_addr", p->id ? p->id : "gateway");
    cc_put(c, doc, "listeners", ls);
}

void cc_gateway(struct cc *c, json_t *doc)
{
    struct gw g = { .c = c };
    put_listeners(c, doc);
    if (c->p->redis_addr) {
        char url[300];
        snprintf(url, sizeof url, "redis://%s", c->p->redis_addr);
        cc_put(c, doc, "redis", json_pack("{s:s}", "url", url));
    }
    json_t *clusters = json_array();
    cc_service_clusters(c, clusters);
    cc_put(c, doc, "clusters", clusters);

    json_t *routes = json_array();
    jwt_providers(&g, doc, routes);
    cc_push(c, routes, json_pack("{s:s, s:s, s:{s:i, s:s, s:s}}", "name", "internal-not-routed", "prefix",
                                 "/internal", "direct_response", "status", 404, "body",
                                 "{\"error\":{\"code\":\"route_not_found\",\"message\":\"no route matches\"}}\n",
                                 "content_type", "application/json"));
    if (g.provider)
        jwt_specs(&g);
    rate_limits(&g, doc);
    waf_specs(&g);
    if (!c->failed)
        ingress_routes(&g, routes);
    cc_put(c, doc, "routes", routes);
    free(g.specs);
    free(g.rl);
}
