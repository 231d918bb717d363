/* engine.c — one request through the proxy:
 *
 *   listener redirect → route → limits → redirect | direct response
 *   → JWT (authn.c) → rate limit (ratelimit.c) → WAF (waf.c)
 *   → destination by weight → endpoint (round robin | least request, healthy only)
 *   → forward (hop-by-hop out, X-Forwarded-*, request id, traceparent, header rules)
 *   → answer (header rules, HSTS, RateLimit-*) → metrics, access log, spans.
 *
 * Every error the proxy itself produces is JSON with a stable reason code,
 * also in x-strata-reason, plus the route and the request id; the access
 * log line carries the same fields. */
#include "proxy/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/rand.h"
#include "core/trace.h"
#include "proxy/authn.h"
#include "proxy/authz.h"
#include "proxy/ratelimit.h"
#include "proxy/resilience.h"
#include "proxy/upstream_tls.h"
#include "proxy/waf.h"

/* ---- metrics --------------------------------------------------------------- */

static struct metrics_family *m_requests, *m_duration, *m_upstream_rq, *m_connect_fail, *m_timeouts, *m_limited,
    *m_waf, *m_jwt, *m_rbac, *m_retries, *m_retry_refused, *m_overflow, *m_mirrored, *m_faults, *m_mesh_rq,
    *m_mesh_dur, *m_mesh_in, *m_mesh_out;

void engine_metrics_init(void)
{
    struct metrics_registry *r = metrics_default();
    metrics_register_counter(r, "strata_proxy_requests_total", "Requests answered, by route and status class.",
                             METRICS_LABELS("route", "code_class"), &m_requests);
    metrics_register_histogram(r, "strata_proxy_request_duration_seconds",
                               "Time from the request head to the response, by route.", METRICS_LABELS("route"),
                               NULL, 0, &m_duration);
    metrics_register_counter(r, "strata_proxy_upstream_requests_total",
                             "Responses from upstreams, by cluster and status class.",
                             METRICS_LABELS("cluster", "code_class"), &m_upstream_rq);
    metrics_register_counter(r, "strata_proxy_upstream_connect_failures_total",
                             "Upstream connections refused or unreachable, by cluster.", METRICS_LABELS("cluster"),
                             &m_connect_fail);
    metrics_register_counter(r, "strata_proxy_upstream_timeouts_total",
                             "Upstream exchanges past the route's timeout, by cluster.", METRICS_LABELS("cluster"),
                             &m_timeouts);
    metrics_register_counter(r, "strata_proxy_rate_limited_total", "Requests refused by a rate limit, by route.",
                             METRICS_LABELS("route"), &m_limited);
    metrics_register_counter(r, "strata_proxy_waf_blocked_total",
                             "Requests the WAF matched, by route and action (blocked or detected).",
                             METRICS_LABELS("route", "action"), &m_waf);
    metrics_register_counter(r, "strata_proxy_jwt_rejected_total", "Requests refused by JWT authentication.",
                             METRICS_LABELS("route", "reason"), &m_jwt);
    metrics_register_counter(r, "strata_proxy_retries_total", "Retries sent, by cluster.", METRICS_LABELS("cluster"),
                             &m_retries);
    metrics_register_counter(r, "strata_proxy_retries_refused_total",
                             "Retries not sent: over the retry budget or max_retries.",
                             METRICS_LABELS("cluster", "why"), &m_retry_refused);
    metrics_register_counter(r, "strata_proxy_overflow_total",
                             "Requests refused by a cluster's circuit breaker (503 overflow).",
                             METRICS_LABELS("cluster"), &m_overflow);
    metrics_register_counter(r, "strata_proxy_mirrored_total", "Mirrored request copies, by outcome.",
                             METRICS_LABELS("outcome"), &m_mirrored);
    metrics_register_counter(r, "strata_proxy_faults_injected_total", "Faults injected, by route and kind.",
                             METRICS_LABELS("route", "kind"), &m_faults);
    metrics_register_counter(r, "strata_mesh_requests_total",
                             "Sidecar requests by source and destination workload, direction and status class.",
                             METRICS_LABELS("source_workload", "destination_workload", "direction", "code_class"),
                             &m_mesh_rq);
    metrics_register_histogram(r, "strata_mesh_request_duration_seconds",
                               "Sidecar request durations by source and destination workload and direction.",
                               METRICS_LABELS("source_workload", "destination_workload", "direction"), NULL, 0,
                               &m_mesh_dur);
    metrics_register_counter(r, "strata_mesh_request_bytes_total", "Request bytes received by the sidecar.",
                             METRICS_LABELS("source_workload", "destination_workload", "direction"), &m_mesh_in);
    metrics_register_counter(r, "strata_mesh_response_bytes_total", "Response bytes sent by the sidecar.",
                             METRICS_LABELS("source_workload", "destination_workload", "direction"), &m_mesh_out);
    metrics_register_counter(r, "strata_proxy_rbac_denied_total",
                             "Inbound requests denied by authorization, by deciding policy.", METRICS_LABELS("policy"),
                             &m_rbac);
}

/* ---- generations --------------------------------------------------------------- */

struct route_metrics {
    struct metrics_counter *by_class[6]; /* 0: no response, 1xx..5xx */
    struct metrics_histogram *duration;
};

struct mesh_series {
    bool ready;
    char src[64];
    struct metrics_counter *by_class[6], *bytes_in, *bytes_out;
    struct metrics_histogram *duration;
};

struct gen {
    int refs; /* the worker's, and one per request in flight; worker thread only */
    struct proxy_config *cfg;
    size_t *rr;                     /* next endpoint per cluster */
    struct authn *authn;
    struct rl_global *rl_global;    /* NULL without redis */
    struct route_metrics *rm;       /* per route */
    struct route_metrics none;      /* requests that matched no route */
    struct metrics_counter **upstream_by_class; /* per cluster × 6 */
    struct upstream_tls *up_tls;    /* per cluster */
    /* Sidecar metric handles by (source, destination), looked up once:
     * outbound by cluster index, inbound by the caller's workload. */
    struct mesh_series *mesh_out;   /* per cluster */
    struct mesh_series mesh_in[16];
    size_t nmesh_in;
};

static const char *const class_names[6] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };

static void route_metrics_init(struct route_metrics *m, const char *route)
{
    for (int k = 0; k < 6; k++)
        m->by_class[k] = metrics_counter_with(m_requests, route, class_names[k]);
    m->duration = metrics_histogram_with(m_duration, route);
}

static struct gen *gen_new(struct worker *w, struct proxy_config *c)
{
    struct gen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->refs = 1;
    g->cfg = c;
    g->rr = calloc(c->nclusters + 1, sizeof *g->rr);
    g->rm = calloc(c->nroutes + 1, sizeof *g->rm);
    g->upstream_by_class = calloc(c->nclusters * 6 + 1, sizeof *g->upstream_by_class);
    if (!g->rr || !g->rm || !g->upstream_by_class)
        goto fail;
    for (size_t i = 0; i < c->nclusters; i++)
        g->rr[i] = (size_t)w->index; /* workers start apart */
    for (size_t i = 0; i < c->nroutes; i++)
        route_metrics_init(&g->rm[i], c->routes[i].name);
    route_metrics_init(&g->none, "");
    for (size_t i = 0; i < c->nclusters; i++)
        for (int k = 0; k < 6; k++)
            g->upstream_by_class[i * 6 + k] = metrics_counter_with(m_upstream_rq, c->clusters[i].name, class_names[k]);
    if (!(g->up_tls = upstream_tls_new(c, "requests")) || !(g->mesh_out = calloc(c->nclusters + 1, sizeof *g->mesh_out)))
        goto fail;
    if (c->njwt_providers && !(g->authn = authn_new(w->loop, w->client, c->jwt_providers, c->njwt_providers)))
        goto fail;
    if (c->redis_url && !(g->rl_global = rl_global_new(w->loop, c->redis_url)))
        goto fail;
    return g;
fail:
    authn_free(g->authn);
    upstream_tls_free(g->up_tls, c->nclusters);
    free(g->mesh_out);
    free(g->rr);
    free(g->rm);
    free(g->upstream_by_class);
    free(g);
    return NULL;
}

static void gen_unref(struct gen *g)
{
    if (!g || --g->refs > 0)
        return;
    authn_free(g->authn);
    rl_global_free(g->rl_global);
    upstream_tls_free(g->up_tls, g->cfg->nclusters);
    free(g->mesh_out);
    proxy_config_unref(g->cfg);
    free(g->rr);
    free(g->rm);
    free(g->upstream_by_class);
    free(g);
}

int engine_worker_init(struct worker *w, struct engine *e, struct loop *l, struct proxy_config *c, int index)
{
    w->engine = e;
    w->loop = l;
    w->index = index;
    /* Idle upstream connections kept per endpoint: at least as many as the
     * requests a worker has in flight to it, or every burst above the bound
     * costs a new connection (and the backend an accept). */
    w->client = http1_client_new(l, &(struct http1_client_config){ .max_idle_per_upstream = 1024 });
    if (!w->client)
        return -ENOMEM;
    w->gen = gen_new(w, c);
    return w->gen ? 0 : -ENOMEM;
}

void engine_worker_fini(struct worker *w)
{
    engine_cancel_shadows(w);
    gen_unref(w->gen);
    w->gen = NULL;
    http1_client_free(w->client);
    w->client = NULL;
}

void engine_worker_adopt(struct worker *w, struct proxy_config *c)
{
    struct gen *g = gen_new(w, c);
    if (!g) {
        log_error("config not adopted: out of memory; the previous one stays", LOG_INT("worker", w->index));
        proxy_config_unref(c);
        return;
    }
    gen_unref(w->gen);
    w->gen = g;
}

/* ---- one request -------------------------------------------------------------- */

enum stage { ST_AUTHN, ST_RATELIMIT, ST_WAF, ST_FAULT, ST_ABORT, ST_FORWARD };

struct fwd {
    struct http1_exchange *x;
    struct served *sv;
    struct worker *w;
    struct gen *g;
    const struct proxy_route *route;
    const struct proxy_destination *dest;
    const struct proxy_cluster *cluster;
    struct proxy_endpoint *ep;
    enum stage stage;
    struct str host;
    struct str path;            /* normalized (RFC 3986): what routing, authorization and the upstream see */
    /* pending asynchronous work; at most one at a time */
    struct authn_pending *authn;
    struct rl_pending *rl;
    struct waf_job *waf;
    struct http1_client_call *call;
    /* results carried forward */
    struct http1_header *claims;
    size_t nclaims;
    struct str sub;
    struct rl_decision rl_decision;
    bool has_rl_decision;
    struct trace_span *span, *up_span; /* only while the tracer exports */
    struct trace_ctx trace;             /* the server span's context, always */
    const char *reason;         /* of the proxy's own error, or "" */
    const char *peer_id;        /* inbound: the verified peer's SPIFFE ID, or NULL */
    struct http1_client_request req; /* built once, sent per attempt */
    uint64_t deadline_ms;       /* the route's timeout, over every attempt */
    unsigned attempt;           /* 0: the first try */
    bool holds_request, holds_retry; /* circuit-breaker counts taken */
    bool holds_conn, holds_pending;  /* a connection slot; waiting for one */
    bool timer_armed;
    struct loop_timer timer;    /* fault delay, retry backoff */
    void (*on_timer)(struct fwd *f);
    char *xfcc;                 /* inbound: x-forwarded-client-cert to send, or NULL */
    char request_id[129];
};

static void fwd_run(struct fwd *f);

static const char *route_name(const struct fwd *f)
{
    return f->route ? f->route->name : "";
}

/* The proxy's own error: JSON body and x-strata-reason with the same code,
 * the route and the request id; extra headers (Retry-After, WWW-Authenticate)
 * as given. */
static void reply_error_h(struct fwd *f, int status, const char *code, const char *message,
                          const struct http1_header *extra, size_t nextra)
{
    struct http1_exchange *x = f->x;
    f->reason = code;
    struct buf b;
    buf_init(&b, 64 * 1024);
    json_t *o = json_pack("{s:{s:s, s:s, s:s, s:s}}", "error", "code", code, "message", message, "request_id",
                          f->request_id, "route", route_name(f));
    if (!o || json_dump_to_buf(o, &b) < 0) {
        json_decref(o);
        buf_free(&b);
        http1_respond_error(x, 503, "out_of_memory", "out of memory", f->request_id);
        return;
    }
    json_decref(o);
    struct http1_header h[12] = {
        { STR_LIT("Content-Type"), STR_LIT("application/json") },
        { STR_LIT("X-Request-Id"), str_from_cstr(f->request_id) },
        { STR_LIT("x-strata-reason"), str_from_cstr(code) },
    };
    size_t n = 3;
    for (size_t i = 0; i < nextra && n < 12; i++)
        h[n++] = extra[i];
    http1_respond_buf(x, status, h, n, &b);
    buf_free(&b);
}

static void reply_error(struct fwd *f, int status, const char *code, const char *message)
{
    reply_error_h(f, status, code, message, NULL, 0);
}

/* The "host" of a Host value: without the port. */
static struct str host_only(struct str host)
{
    const char *colon = host.n && host.p[0] != '[' ? memchr(host.p, ':', host.n) : NULL;
    if (colon)
        host.n = (size_t)(colon - host.p);
    return host;
}

static bool is_sane_host(struct str h)
{
    if (h.n == 0 || h.n > 255)
        return false;
    for (size_t i = 0; i < h.n; i++) {
        char c = h.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == ':' || c == '[' || c == ']' || c == '_'))
            return false;
    }
    return true;
}

static void reply_redirect(struct fwd *f, int code, const char *location)
{
    const struct http1_header h[] = {
        { STR_LIT("Location"), str_from_cstr(location) },
        { STR_LIT("X-Request-Id"), str_from_cstr(f->request_id) },
    };
    http1_respond(f->x, code, h, 2, STR_NULL);
}

/* Listener-level HTTP → HTTPS: 308 keeps the method and the body. */
static void redirect_https(struct fwd *f, uint16_t port)
{
    struct http1_exchange *x = f->x;
    struct str h = host_only(f->host);
    if (!is_sane_host(h)) {
        reply_error(f, 400, "bad_host", "the request's Host cannot be redirected");
        return;
    }
    char *loc = arena_alloc(&x->arena, h.n + f->path.n + x->req.query.n + 32);
    if (!loc) {
        reply_error(f, 503, "out_of_memory", "out of memory");
        return;
    }
    char portbuf[8] = "";
    if (port != 443)
        snprintf(portbuf, sizeof portbuf, ":%u", port);
    sprintf(loc, "https://%.*s%s%.*s%s%.*s", STR_FMT(h), portbuf, STR_FMT(f->path), x->req.query.n ? "?" : "",
            STR_FMT(x->req.query));
    f->reason = "https_redirect";
    reply_redirect(f, 308, loc);
}

static void route_redirect(struct fwd *f)
{
    struct http1_exchange *x = f->x;
    const struct proxy_redirect *r = f->route->redirect;
    const char *scheme = r->scheme ? r->scheme : x->sock && tls_sock_is_tls(x->sock) ? "https" : "http";
    /* Only the path changes: the authority stays as the client sent it. */
    bool keep_authority = !r->scheme && !r->host && !r->port;
    struct str host = r->host ? str_from_cstr(r->host) : keep_authority ? f->host : host_only(f->host);
    if (!is_sane_host(host)) {
        reply_error(f, 400, "bad_host", "the request's Host cannot be redirected");
        return;
    }
    struct str path = f->path, rest = STR_NULL;
    if (r->path) {
        path = str_from_cstr(r->path);
    } else if (r->prefix) {
        rest = str_make(f->path.p + strlen(f->route->prefix), f->path.n - strlen(f->route->prefix));
        path = str_from_cstr(r->prefix);
    }
    char portbuf[8] = "";
    if (r->port)
        snprintf(portbuf, sizeof portbuf, ":%u", r->port);
    size_t n = strlen(scheme) + host.n + path.n + rest.n + x->req.query.n + 32;
    char *loc = arena_alloc(&x->arena, n);
    if (!loc) {
        reply_error(f, 503, "out_of_memory", "out of memory");
        return;
    }
    snprintf(loc, n, "%s://%.*s%s%.*s%.*s%s%.*s", scheme, STR_FMT(host), portbuf, STR_FMT(path), STR_FMT(rest),
             x->req.query.n ? "?" : "", STR_FMT(x->req.query));
    reply_redirect(f, r->code, loc);
}

static void direct_response(struct fwd *f)
{
    const struct proxy_direct_response *d = f->route->direct;
    const struct http1_header h[] = {
        { STR_LIT("Content-Type"),
          str_from_cstr(d->content_type ? d->content_type : "text/plain; charset=utf-8") },
        { STR_LIT("X-Request-Id"), str_from_cstr(f->request_id) },
    };
    http1_respond(f->x, d->status, h, 2, d->body ? str_from_cstr(d->body) : STR_NULL);
}

/* ---- JWT ------------------------------------------------------------------------ */

static bool authn_apply(struct fwd *f, const struct authn_result *r)
{
    if (r->status == 0) {
        f->claims = r->headers;
        f->nclaims = r->nheaders;
        f->sub = r->sub;
        return true;
    }
    metrics_counter_add(metrics_counter_with(m_jwt, route_name(f), r->reason), 1);
    if (r->status == 401) {
        const struct http1_header h[] = { { STR_LIT("WWW-Authenticate"), STR_LIT("Bearer error=\"invalid_token\"") } };
        reply_error_h(f, 401, r->reason, r->message, h, 1);
    } else {
        reply_error(f, r->status, r->reason, r->message);
    }
    return false;
}

static void authn_done(const struct authn_result *r, void *arg)
{
    struct fwd *f = arg;
    f->authn = NULL;
    if (authn_apply(f, r))
        fwd_run(f);
}

/* ---- rate limits ------------------------------------------------------------------- */

static struct str rl_key(struct fwd *f, char *ipbuf, size_t ipsz)
{
    const struct proxy_rate_limit *rl = f->route->rate_limit;
    if (rl->key == PROXY_RL_HEADER) {
        const struct http1_header *h = http1_find_header(f->x->req.headers, f->x->req.nheaders,
                                                         str_from_cstr(rl->header));
        return h ? h->value : STR_LIT("-");
    }
    if (rl->key == PROXY_RL_JWT_SUB && f->sub.n)
        return f->sub;
    /* client_ip, and jwt_sub on an optional route without a token */
    return str_from_cstr(net_addr_ip(&f->x->peer, ipbuf, ipsz));
}

static void fmt_u32(struct arena *a, struct http1_header *h, const char *name, uint32_t v)
{
    char *s = arena_alloc(a, 12);
    if (s)
        snprintf(s, 12, "%u", v);
    *h = (struct http1_header){ str_from_cstr(name), s ? str_from_cstr(s) : STR_LIT("0") };
}

/* RateLimit-* (draft-ietf-httpapi-ratelimit-headers) on every answer of a limited route. */
static size_t rl_headers(struct fwd *f, struct http1_header *h)
{
    if (!f->has_rl_decision || f->rl_decision.failed_open)
        return 0;
    struct arena *a = &f->x->arena;
    fmt_u32(a, &h[0], "RateLimit-Limit", f->rl_decision.limit);
    fmt_u32(a, &h[1], "RateLimit-Remaining", f->rl_decision.remaining);
    fmt_u32(a, &h[2], "RateLimit-Reset", f->rl_decision.reset_s);
    return 3;
}

static bool rl_apply(struct fwd *f, const struct rl_decision *d)
{
    f->rl_decision = *d;
    f->has_rl_decision = true;
    if (d->allowed)
        return true;
    metrics_counter_add(metrics_counter_with(m_limited, route_name(f)), 1);
    struct http1_header h[4];
    size_t n = rl_headers(f, h);
    fmt_u32(&f->x->arena, &h[n++], "Retry-After", d->retry_after_s ? d->retry_after_s : 1);
    reply_error_h(f, 429, "rate_limited", "too many requests: retry after the time in Retry-After", h, n);
    return false;
}

static void rl_done(const struct rl_decision *d, void *arg)
{
    struct fwd *f = arg;
    f->rl = NULL;
    if (rl_apply(f, d))
        fwd_run(f);
}

/* ---- WAF ---------------------------------------------------------------------------- */

static bool waf_apply(struct fwd *f, const struct waf_result *r)
{
    bool block = f->route->waf.mode == PROXY_WAF_BLOCK;
    if (r->error) {
        /* Not inspected: blocking mode does not let it through unseen. */
        log_error("waf could not inspect a request", LOG_STR("request_id", f->request_id),
                  LOG_STR("error", strerror(-r->error)));
        if (!block)
            return true;
        reply_error(f, 503, "waf_unavailable", "the request could not be inspected; retry later");
        return false;
    }
    if (!r->matched)
        return true;
    metrics_counter_add(metrics_counter_with(m_waf, route_name(f), block ? "blocked" : "detected"), 1);
    char ip[64];
    log_warn("waf", LOG_STR("action", block ? "blocked" : "detected"), LOG_STR("route", route_name(f)),
             LOG_STR("request_id", f->request_id), LOG_STR("client", net_addr_ip(&f->x->peer, ip, sizeof ip)),
             LOG_STRV("method", f->x->req.method), LOG_STRV("path", f->x->req.path),
             LOG_STR("rule_ids", r->rule_ids), LOG_INT("anomaly_score", r->anomaly_score),
             LOG_STR("message", r->message));
    if (!block)
        return true;
    reply_error(f, 403, "waf_blocked", "the request was blocked by the web application firewall");
    return false;
}

static void waf_done(const struct waf_result *r, void *arg)
{
    struct fwd *f = arg;
    f->waf = NULL;
    if (waf_apply(f, r))
        fwd_run(f);
}

/* ---- balancing ------------------------------------------------------------------- */

static bool is_ejected(const struct proxy_cluster *cl, size_t i, uint64_t now)
{
    return cl->resil && resil_is_ejected(cl->resil, i, now);
}

/* Locality tier of an endpoint for this proxy: 0 same zone, 1 same region, 2 elsewhere. */
static int tier_of(const struct proxy_config *c, const struct proxy_endpoint *e)
{
    if (c->zone && e->zone && !strcmp(c->zone, e->zone))
        return 0;
    if (c->region && e->region && !strcmp(c->region, e->region))
        return 1;
    return 2;
}

/* An endpoint of d (its subset, if any) that is healthy and not ejected,
 * in the nearest locality that has one; avoid (a retry's previous
 * endpoint) only when there is another. Round robin or power of two
 * choices among those. NULL: none eligible (*why says which). */
static struct proxy_endpoint *pick_endpoint(struct fwd *f, const struct proxy_destination *d,
                                            const struct proxy_endpoint *avoid, const char **why)
{
    const struct proxy_cluster *cl = d->cluster;
    const struct proxy_config *c = f->g->cfg;
    size_t total = d->subset ? d->subset->nmembers : cl->nendpoints, ci = (size_t)(cl - c->clusters);
    uint16_t cand[1024];
    size_t nc = 0, nhealthy = 0;
    int best = 3;
    bool local = cl->locality_aware && (c->zone || c->region);
    uint64_t now = loop_now_ms(f->w->loop);
    for (size_t k = 0; k < total; k++) {
        size_t i = d->subset ? d->subset->members[k] : k;
        const struct proxy_endpoint *e = &cl->endpoints[i];
        if (!atomic_load_explicit(&e->healthy, memory_order_relaxed))
            continue;
        nhealthy++;
        if (is_ejected(cl, i, now))
            continue;
        int t = local ? tier_of(c, e) : 0;
        if (t < best) {
            best = t;
            nc = 0;
        }
        if (t == best)
            cand[nc++] = (uint16_t)i;
    }
    if (avoid && nc > 1)
        for (size_t k = 0; k < nc; k++)
            if (&cl->endpoints[cand[k]] == avoid) {
                cand[k] = cand[--nc];
                break;
            }
    if (nc == 0) {
        *why = total == 0 ? "no_healthy_endpoint" : nhealthy ? "upstream_ejected" : "no_healthy_upstream";
        return NULL;
    }
    if (cl->lb == PROXY_LB_LEAST_REQUEST && nc > 1) {
        /* Power of two choices: two distinct random candidates, the one with
         * fewer requests in flight (all workers) wins. */
        size_t i = rand_below(nc), j = rand_below(nc - 1);
        j += j >= i;
        struct proxy_endpoint *a = &cl->endpoints[cand[i]], *b = &cl->endpoints[cand[j]];
        return atomic_load_explicit(&b->active, memory_order_relaxed) <
                       atomic_load_explicit(&a->active, memory_order_relaxed)
                   ? b
                   : a;
    }
    return &cl->endpoints[cand[f->g->rr[ci]++ % nc]];
}

/* ---- forwarding ---------------------------------------------------------------------- */

/* RFC 9110 §7.6.1: fields that describe one connection, never forwarded. */
static bool is_hop_by_hop(struct str name)
{
    static const char *const hop[] = { "connection", "keep-alive", "proxy-connection", "te", "trailer",
                                       "transfer-encoding", "upgrade", "proxy-authenticate",
                                       "proxy-authorization", NULL };
    for (const char *const *h = hop; *h; h++)
        if (str_eq_nocase(name, str_from_cstr(*h)))
            return true;
    return false;
}

/* A field named in the message's own Connection header is hop-by-hop too. */
static bool named_by_connection(const struct http1_header *hs, size_t n, struct str name)
{
    const struct http1_header *c = http1_find_header(hs, n, STR_LIT("Connection"));
    if (!c)
        return false;
    const char *p = c->value.p, *end = p + c->value.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        struct str tok = str_trim_ows(str_make(p, (size_t)((comma ? comma : end) - p)));
        if (str_eq_nocase(tok, name))
            return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

static bool in_list(char *const *names, size_t n, struct str name)
{
    for (size_t i = 0; i < n; i++)
        if (str_eq_nocase(name, str_from_cstr(names[i])))
            return true;
    return false;
}

static bool in_ops(const struct proxy_header_op *ops, size_t n, struct str name)
{
    for (size_t i = 0; i < n; i++)
        if (str_eq_nocase(name, str_from_cstr(ops[i].name)))
            return true;
    return false;
}

/* A header some JWT provider forwards claims in: never taken from the client. */
static bool is_claim_header(const struct proxy_config *c, struct str name)
{
    for (size_t i = 0; i < c->njwt_providers; i++)
        for (size_t j = 0; j < c->jwt_providers[i].nclaims; j++)
            if (str_eq_nocase(name, str_from_cstr(c->jwt_providers[i].claims_to_headers[j].header)))
                return true;
    return false;
}

static int class_of(int status)
{
    return status >= 100 && status < 600 ? status / 100 : 0;
}

static void send_attempt(struct fwd *f);
static void retry_now(struct fwd *f);
static void on_abort(struct http1_exchange *x);
#define on_abort_cb on_abort

static void fwd_timer_cb(struct loop_timer *t)
{
    struct fwd *f = t->data;
    f->timer_armed = false;
    f->on_timer(f);
}

static void fwd_after(struct fwd *f, uint64_t ms, void (*fn)(struct fwd *f))
{
    if (!f->timer.loop)
        loop_timer_init(f->w->loop, &f->timer, fwd_timer_cb, f);
    f->on_timer = fn;
    f->timer_armed = true;
    loop_timer_start(&f->timer, ms);
}

/* The connection slot of an attempt that ended (or never left), and the
 * pending place of a request that stopped waiting. */
static void release_conn(struct fwd *f)
{
    if (f->holds_conn)
        resil_conn_closed(f->cluster->resil);
    if (f->holds_pending)
        resil_pending_release(f->cluster->resil);
    f->holds_conn = f->holds_pending = false;
}

static void reply_overflow(struct fwd *f, const char *message)
{
    metrics_counter_add(metrics_counter_with(m_overflow, f->cluster->name), 1);
    const struct http1_header oh[] = { { STR_LIT("x-strata-overflow"), STR_LIT("1") } };
    reply_error_h(f, 503, "overflow", message, oh, 1);
}

/* Retries (VirtualService retries): after a failed attempt that the route's
 * retryOn covers, with attempts left, time left, and room in the retry
 * budget and max_retries. True when a retry was scheduled. */
static bool maybe_retry(struct fwd *f, int err, int status)
{
    const struct proxy_retry *rt = &f->route->retry;
    struct resil_cluster *rc = f->cluster->resil;
    if (f->attempt >= rt->attempts || !resil_should_retry(rt, err, status, f->x->req.method))
        return false;
    uint32_t backoff = resil_backoff_ms(rt, f->attempt + 1, rand_u64());
    if (loop_now_ms(f->w->loop) + backoff >= f->deadline_ms)
        return false;
    if (f->holds_retry) {
        resil_retry_release(rc);
        f->holds_retry = false;
    }
    enum resil_retry_refusal why;
    if (!resil_retry_acquire(rc, rt, &why)) {
        f->reason = why == RESIL_OVER_BUDGET ? "retry_budget_exhausted" : "overflow";
        metrics_counter_add(metrics_counter_with(m_retry_refused, f->cluster->name,
                                                 why == RESIL_OVER_BUDGET ? "budget" : "max_retries"), 1);
        return false;
    }
    f->holds_retry = true;
    f->attempt++;
    metrics_counter_add(metrics_counter_with(m_retries, f->cluster->name), 1);
    f->x->on_abort = on_abort_cb;
    fwd_after(f, backoff, retry_now);
    return true;
}

static void upstream_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct fwd *f = arg;
    struct http1_exchange *x = f->x;
    f->call = NULL;
    release_conn(f);
    x->on_abort = NULL;
    atomic_fetch_sub_explicit(&f->ep->active, 1, memory_order_relaxed);
    const char *cname = f->cluster->name;
    size_t epi = (size_t)(f->ep - f->cluster->endpoints);
    resil_report(f->cluster->resil, epi, err, err ? 0 : resp->status, loop_now_ms(f->w->loop));
    if (f->up_span && (err || resp->status >= 500)) {
        trace_span_set_status(f->up_span, TRACE_STATUS_ERROR, STR_NULL);
        trace_span_end(f->up_span);
        f->up_span = NULL;
    }
    if (maybe_retry(f, err, err ? 0 : resp->status))
        return;
    bool budget = !strcmp(f->reason, "retry_budget_exhausted");
    if (err) {
        int status = 503;
        const char *code = "upstream_unavailable", *msg = "the upstream could not be reached";
        if (err == -ETIMEDOUT) {
            status = 504, code = "upstream_timeout", msg = "the upstream did not answer within the route's timeout";
            metrics_counter_add(metrics_counter_with(m_timeouts, cname), 1);
        } else if (err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ENETUNREACH || err == -EADDRNOTAVAIL) {
            code = "upstream_connect_failed", msg = "the upstream refused or could not take the connection";
            metrics_counter_add(metrics_counter_with(m_connect_fail, cname), 1);
        } else if (err == -EKEYREJECTED) {
            code = "mtls_peer_untrusted";
            msg = "the upstream's TLS handshake failed: its certificate is not trusted or not the expected identity";
            metrics_counter_add(metrics_counter_with(m_connect_fail, cname), 1);
        } else if (err == -ECONNRESET || err == -EPIPE) {
            status = 502, code = "upstream_reset", msg = "the upstream closed the connection before answering";
        } else if (err == -EMSGSIZE || err == -EPROTO) {
            status = 502, code = "bad_upstream_response", msg = "the upstream's response was invalid or too large";
        }
        trace_span_set_status(f->up_span, TRACE_STATUS_ERROR, str_from_cstr(code));
        trace_span_end(f->up_span);
        f->up_span = NULL;
        if (budget)
            reply_error(f, 503, "retry_budget_exhausted",
                        "the upstream failed and the retry budget allows no more retries now");
        else
            reply_error(f, status, code, msg);
        return;
    }
    size_t ci = (size_t)(f->cluster - f->g->cfg->clusters);
    metrics_counter_add(f->g->upstream_by_class[ci * 6 + class_of(resp->status)], 1);
    trace_span_set_attr_int(f->up_span, "http.response.status_code", resp->status);
    if (resp->status >= 500)
        trace_span_set_status(f->up_span, TRACE_STATUS_ERROR, STR_NULL);
    trace_span_end(f->up_span);
    f->up_span = NULL;

    const struct proxy_header_rules *hr = &f->route->response_headers;
    struct http1_header *h = arena_alloc(&x->arena, (resp->nheaders + hr->nset + hr->nadd + 8) * sizeof *h);
    if (!h) {
        reply_error(f, 503, "out_of_memory", "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < resp->nheaders; i++) {
        struct str name = resp->headers[i].name;
        if (is_hop_by_hop(name) || named_by_connection(resp->headers, resp->nheaders, name) ||
            str_eq_nocase(name, STR_LIT("Content-Length")) || str_eq_nocase(name, STR_LIT("Date")) ||
            in_list(hr->remove, hr->nremove, name) || in_ops(hr->set, hr->nset, name))
            continue;
        /* The response's views die with the callback: copy into the request's arena. */
        char *nm = arena_strdup(&x->arena, name), *val = arena_strdup(&x->arena, resp->headers[i].value);
        if (!nm || !val) {
            reply_error(f, 503, "out_of_memory", "out of memory");
            return;
        }
        h[n++] = (struct http1_header){ str_from_cstr(nm), str_from_cstr(val) };
    }
    for (size_t i = 0; i < hr->nset; i++)
        h[n++] = (struct http1_header){ str_from_cstr(hr->set[i].name), str_from_cstr(hr->set[i].value) };
    for (size_t i = 0; i < hr->nadd; i++)
        h[n++] = (struct http1_header){ str_from_cstr(hr->add[i].name), str_from_cstr(hr->add[i].value) };
    n += rl_headers(f, h + n);
    const struct proxy_listener *lc = f->sv->l->cfg;
    if (x->sock && tls_sock_is_tls(x->sock) && lc->hsts_max_age_s) {
        char *v = arena_alloc(&x->arena, 64);
        if (v) {
            snprintf(v, 64, "max-age=%u%s", lc->hsts_max_age_s, lc->hsts_subdomains ? "; includeSubDomains" : "");
            h[n++] = (struct http1_header){ STR_LIT("Strict-Transport-Security"), str_from_cstr(v) };
        }
    }
    http1_respond(x, resp->status, h, n, resp->body);
}

static void on_abort(struct http1_exchange *x)
{
    struct fwd *f = x->user;
    if (!f)
        return;
    if (f->timer_armed) {
        loop_timer_stop(&f->timer);
        f->timer_armed = false;
    }
    if (f->authn)
        authn_cancel(f->authn);
    if (f->rl)
        rl_global_cancel(f->rl);
    if (f->waf)
        waf_cancel(f->waf);
    if (f->call) {
        http1_client_cancel(f->call);
        atomic_fetch_sub_explicit(&f->ep->active, 1, memory_order_relaxed);
    }
    release_conn(f);
    f->authn = NULL, f->rl = NULL, f->waf = NULL, f->call = NULL;
    f->reason = "client_closed";
    if (f->up_span) {
        trace_span_set_status(f->up_span, TRACE_STATUS_ERROR, STR_LIT("client closed"));
        trace_span_end(f->up_span);
        f->up_span = NULL;
    }
}

/* Mirroring: a copy of the request to the mirror destination, Host
 * suffixed "-shadow", fire-and-forget: the answer is discarded and the
 * client never waits for it. The worker cancels copies still running when
 * it stops. */
struct shadow {
    struct shadow *next, *prev;
    struct worker *w;
    struct http1_client_call *call;
};

static void shadow_unlink(struct shadow *sh)
{
    if (sh->prev)
        sh->prev->next = sh->next;
    else
        sh->w->shadows = sh->next;
    if (sh->next)
        sh->next->prev = sh->prev;
}

static void shadow_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct shadow *sh = arg;
    (void)resp;
    metrics_counter_add(metrics_counter_with(m_mirrored, err ? "error" : "answered"), 1);
    shadow_unlink(sh);
    free(sh);
}

void engine_cancel_shadows(struct worker *w)
{
    while (w->shadows) {
        struct shadow *sh = w->shadows;
        shadow_unlink(sh);
        http1_client_cancel(sh->call);
        free(sh);
    }
}

static void mirror(struct fwd *f)
{
    const struct proxy_mirror *m = f->route->mirror;
    const char *why;
    struct proxy_endpoint *ep = pick_endpoint(f, &m->dest, NULL, &why);
    struct shadow *sh = ep ? calloc(1, sizeof *sh) : NULL;
    char *host = arena_alloc(&f->x->arena, f->req.host.n + 8);
    if (!sh || !host) {
        free(sh);
        metrics_counter_add(metrics_counter_with(m_mirrored, "skipped"), 1);
        return;
    }
    struct str h = host_only(f->req.host);
    memcpy(host, h.p, h.n);
    memcpy(host + h.n, "-shadow", 8);
    struct http1_client_request req = f->req;
    req.addr = ep->addr;
    req.host = str_from_cstr(host);
    req.timeout_ms = f->route->timeout_ms ? f->route->timeout_ms : 15000;
    size_t cidx = (size_t)(m->dest.cluster - f->g->cfg->clusters);
    sh->w = f->w;
    if (upstream_tls_apply(f->g->up_tls, f->g->cfg, cidx, &req) < 0 ||
        http1_client_send(f->w->client, &req, shadow_done, sh, &sh->call) < 0) {
        free(sh);
        metrics_counter_add(metrics_counter_with(m_mirrored, "skipped"), 1);
        return;
    }
    sh->next = f->w->shadows;
    if (sh->next)
        sh->next->prev = sh;
    f->w->shadows = sh;
}

static void forward(struct fwd *f)
{
    struct http1_exchange *x = f->x;
    struct arena *a = &x->arena;
    const struct proxy_route *rt = f->route;
    const struct proxy_destination *d = proxy_route_pick(rt, (uint32_t)rand_u64());
    f->dest = d;
    f->cluster = d->cluster;
    const char *why = "";
    f->ep = pick_endpoint(f, d, NULL, &why);
    if (!f->ep) {
        reply_error(f, 503, why,
                    !strcmp(why, "upstream_ejected") ? "every eligible endpoint is ejected by outlier detection"
                    : !strcmp(why, "no_healthy_endpoint") ? "the destination has no ready endpoint"
                                                          : "no endpoint of the destination passes its health checks");
        return;
    }
    /* Circuit breaking (DestinationRule connectionPool.http.http2MaxRequests). */
    if (!resil_request_acquire(f->cluster->resil)) {
        reply_overflow(f, "the destination's circuit breaker is open: too many requests in flight");
        return;
    }
    f->holds_request = true;

    /* Target: as received (origin form), or the path with the route's
     * prefix rewritten (or taken out of absolute form), then the query. */
    struct str target = x->req.target;
    if (rt->rewrite_prefix || x->req.is_absolute_form || f->path.p != x->req.path.p) {
        struct str path = f->path, pre = rt->rewrite_prefix ? str_from_cstr(rt->rewrite_prefix) : STR_NULL;
        if (rt->rewrite_prefix) {
            size_t cut = strlen(rt->prefix);
            path = str_make(path.p + cut, path.n - cut);
        }
        size_t tlen = pre.n + path.n + (x->req.query.n ? x->req.query.n + 1 : 0);
        char *t = arena_alloc(a, tlen + 1);
        if (!t) {
            reply_error(f, 503, "out_of_memory", "out of memory");
            return;
        }
        char *p = t;
        if (pre.n)
            memcpy(p, pre.p, pre.n), p += pre.n;
        memcpy(p, path.p, path.n), p += path.n;
        if (x->req.query.n) {
            *p++ = '?';
            memcpy(p, x->req.query.p, x->req.query.n), p += x->req.query.n;
        }
        *p = '\0';
        target = str_make(t, tlen);
    }

    /* Headers: end-to-end fields pass; ours are set fresh. */
    const struct proxy_header_rules *hr = &rt->request_headers;
    size_t cap = x->req.nheaders + f->nclaims + hr->nset + hr->nadd + 8;
    struct http1_header *h = arena_alloc(a, cap * sizeof *h);
    char peer[64];
    if (!h) {
        reply_error(f, 503, "out_of_memory", "out of memory");
        return;
    }
    net_addr_ip(&x->peer, peer, sizeof peer);
    size_t n = 0;
    struct str prior_xff = STR_NULL;
    const struct proxy_config *c = f->g->cfg;
    for (size_t i = 0; i < x->req.nheaders; i++) {
        struct str name = x->req.headers[i].name;
        if (str_eq_nocase(name, STR_LIT("X-Forwarded-For"))) {
            prior_xff = x->req.headers[i].value;
            continue;
        }
        if (is_hop_by_hop(name) || named_by_connection(x->req.headers, x->req.nheaders, name) ||
            str_eq_nocase(name, STR_LIT("Host")) || str_eq_nocase(name, STR_LIT("Content-Length")) ||
            str_eq_nocase(name, STR_LIT("X-Request-Id")) || str_eq_nocase(name, STR_LIT("traceparent")) ||
            str_eq_nocase(name, STR_LIT("X-Forwarded-Proto")) || str_eq_nocase(name, STR_LIT("X-Forwarded-Host")) ||
            str_eq_nocase(name, STR_LIT("Expect")) || is_claim_header(c, name) ||
            str_eq_nocase(name, STR_LIT("x-forwarded-client-cert")) ||
            (rt->jwt_mode != PROXY_JWT_OFF && !rt->jwt->forward_token &&
             str_eq_nocase(name, STR_LIT("Authorization"))) ||
            in_list(hr->remove, hr->nremove, name) || in_ops(hr->set, hr->nset, name))
            continue;
        h[n++] = x->req.headers[i];
    }
    for (size_t i = 0; i < f->nclaims; i++)
        h[n++] = f->claims[i];
    size_t pl = strlen(peer), xl = prior_xff.n ? prior_xff.n + 2 + pl : pl;
    char *xff = arena_alloc(a, xl + 1);
    if (!xff) {
        reply_error(f, 503, "out_of_memory", "out of memory");
        return;
    }
    char *xp = xff;
    if (prior_xff.n) {
        memcpy(xp, prior_xff.p, prior_xff.n), xp += prior_xff.n;
        memcpy(xp, ", ", 2), xp += 2;
    }
    memcpy(xp, peer, pl + 1);
    h[n++] = (struct http1_header){ STR_LIT("X-Forwarded-For"), str_make(xff, xl) };
    /* By connection: a PERMISSIVE listener carries both. */
    bool tls_conn = x->sock && tls_sock_is_tls(x->sock);
    h[n++] = (struct http1_header){ STR_LIT("X-Forwarded-Proto"), tls_conn ? STR_LIT("https") : STR_LIT("http") };
    h[n++] = (struct http1_header){ STR_LIT("X-Forwarded-Host"), f->host };
    h[n++] = (struct http1_header){ STR_LIT("X-Request-Id"), str_from_cstr(f->request_id) };
    if (f->xfcc)
        h[n++] = (struct http1_header){ STR_LIT("x-forwarded-client-cert"), str_from_cstr(f->xfcc) };
    for (size_t i = 0; i < hr->nset; i++)
        h[n++] = (struct http1_header){ str_from_cstr(hr->set[i].name), str_from_cstr(hr->set[i].value) };
    for (size_t i = 0; i < hr->nadd; i++)
        h[n++] = (struct http1_header){ str_from_cstr(hr->add[i].name), str_from_cstr(hr->add[i].value) };
    /* traceparent: the upstream span's context, child of the server span
     * (without an exporter, the ids alone: no span is recorded). */
    struct trace_ctx up = f->trace;
    if (f->span) {
        /* One upstream span per request: retries are attributes of it. */
        f->up_span = trace_span_start(f->w->tracer, "upstream", TRACE_SPAN_CLIENT, &f->trace);
        if (f->up_span)
            up = *trace_span_ctx(f->up_span);
    } else {
        rand_hex(up.span_id, 8);
    }
    char *tp = arena_alloc(a, TRACE_TRACEPARENT_LEN + 1);
    if (tp && trace_format_traceparent(&up, tp) == 0)
        h[n++] = (struct http1_header){ STR_LIT("traceparent"), str_from_cstr(tp) };

    f->req = (struct http1_client_request){
        .method = x->req.method,
        .target = target,
        .host = rt->rewrite_host ? str_from_cstr(rt->rewrite_host) : f->host,
        .headers = h,
        .nheaders = n,
        .body = x->body,
    };
    uint64_t now = loop_now_ms(f->w->loop);
    f->deadline_ms = now + (rt->timeout_ms ? rt->timeout_ms : 15000);
    if (rt->mirror && rand_below(10000) < rt->mirror->percent_x100)
        mirror(f);
    send_attempt(f);
}

/* One attempt to f->ep, within the route's deadline and the per-try timeout. */
static void send_attempt(struct fwd *f)
{
    struct http1_exchange *x = f->x;
    const struct proxy_route *rt = f->route;
    uint64_t now = loop_now_ms(f->w->loop);
    struct resil_cluster *rc = f->cluster->resil;
    if (now >= f->deadline_ms && f->holds_pending) {
        resil_conn_refused(rc);
        reply_overflow(f, "no upstream connection became free within the route's timeout (max_connections)");
        return;
    }
    if (now >= f->deadline_ms) {
        reply_error(f, 504, "upstream_timeout", "the upstream did not answer within the route's timeout");
        return;
    }
    /* Circuit breaking: max_connections in use (HTTP/1.1: one per attempt
     * in flight); past it the request waits as pending, up to
     * max_pending_requests, for one to free up (polled on this worker). */
    if (!f->holds_conn) {
        if (!resil_conn_acquire(rc)) {
            if (!f->holds_pending) {
                if (!resil_pending_acquire(rc)) {
                    resil_conn_refused(rc);
                    reply_overflow(f, "the destination's circuit breaker is open: max_connections in use and "
                                      "max_pending_requests waiting");
                    return;
                }
                f->holds_pending = true;
            }
            x->on_abort = on_abort;
            fwd_after(f, 1, send_attempt);
            return;
        }
        f->holds_conn = true;
        if (f->holds_pending) {
            resil_pending_release(rc);
            f->holds_pending = false;
        }
    }
    uint64_t left = f->deadline_ms - now;
    if (rt->retry.per_try_timeout_ms && rt->retry.per_try_timeout_ms < left)
        left = rt->retry.per_try_timeout_ms;
    struct http1_client_request req = f->req;
    req.addr = f->ep->addr;
    req.timeout_ms = (uint32_t)left;
    size_t cidx = (size_t)(f->cluster - f->g->cfg->clusters);
    if (upstream_tls_apply(f->g->up_tls, f->g->cfg, cidx, &req) < 0) {
        reply_error(f, 503, "upstream_tls_unavailable", "the workload certificate for this upstream could not be loaded");
        return;
    }
    if (f->span) {
        /* The first attempt's span was made with the headers (its id is in
         * traceparent); a retry gets a span of its own. */
        if (!f->up_span)
            f->up_span = trace_span_start(f->w->tracer, "upstream", TRACE_SPAN_CLIENT, &f->trace);
        trace_span_set_attr_str(f->up_span, "server.address", str_from_cstr(f->ep->name));
        trace_span_set_attr_str(f->up_span, "strata.cluster", str_from_cstr(f->cluster->name));
        if (f->attempt)
            trace_span_set_attr_int(f->up_span, "strata.retry", f->attempt);
    }
    atomic_fetch_add_explicit(&f->ep->active, 1, memory_order_relaxed);
    x->on_abort = on_abort;
    if (http1_client_send(f->w->client, &req, upstream_done, f, &f->call) < 0) {
        x->on_abort = NULL;
        atomic_fetch_sub_explicit(&f->ep->active, 1, memory_order_relaxed);
        release_conn(f);
        reply_error(f, 503, "upstream_unavailable", "the request could not be sent upstream");
    }
}

static void retry_now(struct fwd *f)
{
    const char *why = "";
    struct proxy_endpoint *prev = f->ep;
    f->ep = pick_endpoint(f, f->dest, prev, &why);
    if (!f->ep) {
        f->ep = prev;
        reply_error(f, 503, why, "no endpoint is left to retry on");
        return;
    }
    send_attempt(f);
}

/* Runs the remaining stages; returns when one is pending or answered. */
static void fwd_run(struct fwd *f)
{
    struct http1_exchange *x = f->x;
    const struct proxy_route *rt = f->route;
    int rc;
    for (;;) {
        switch (f->stage) {
        case ST_AUTHN: {
            f->stage = ST_RATELIMIT;
            if (rt->jwt_mode == PROXY_JWT_OFF)
                break;
            struct authn_result res;
            rc = authn_check(f->g->authn, rt->jwt, rt->jwt_mode, x->req.headers, x->req.nheaders, &x->arena, &res,
                             authn_done, f, &f->authn);
            if (rc == 0)
                return;
            if (rc < 0) {
                reply_error(f, 503, "jwt_unavailable", "the token could not be checked");
                return;
            }
            if (!authn_apply(f, &res))
                return;
            break;
        }
        case ST_RATELIMIT: {
            f->stage = ST_WAF;
            const struct proxy_rate_limit *rl = rt->rate_limit;
            if (!rl)
                break;
            char ip[64];
            struct str key = rl_key(f, ip, sizeof ip);
            if (rl->global) {
                rc = rl_global_check(f->g->rl_global, rl, key, rl_done, f, &f->rl);
                if (rc == 0)
                    return;
                break; /* could not even ask: fail open (counted by the limiter) */
            }
            struct rl_decision d;
            rl_local_check(f->w->engine->rl_local, rl, key, loop_now_ms(f->w->loop), &d);
            if (!rl_apply(f, &d))
                return;
            break;
        }
        case ST_WAF: {
            f->stage = ST_FAULT;
            if (rt->waf.mode == PROXY_WAF_OFF || !f->w->engine->waf)
                break;
            char cip[64];
            struct waf_request wr = {
                .method = x->req.method,
                .target = x->req.target,
                .version = x->req.minor_version ? STR_LIT("1.1") : STR_LIT("1.0"),
                .headers = x->req.headers,
                .nheaders = x->req.nheaders,
                .body = x->body,
                .client_ip = net_addr_ip(&x->peer, cip, sizeof cip),
                .client_port = net_addr_port(&x->peer),
                .server_ip = "127.0.0.1",
                .server_port = net_addr_port(&f->sv->l->cfg->addr),
                .request_id = f->request_id,
                .paranoia = rt->waf.paranoia,
                .anomaly_threshold = rt->waf.anomaly_threshold,
            };
            rc = waf_check(f->w->engine->waf, f->w->loop, &wr, waf_done, f, &f->waf);
            if (rc == 0)
                return;
            if (rc == -EMSGSIZE)
                reply_error(f, 413, "body_too_large", "the request is too large to be inspected");
            else if (rc == -EBUSY)
                reply_error(f, 503, "waf_overloaded", "the web application firewall is saturated; retry later");
            else
                reply_error(f, 503, "waf_unavailable", "the request could not be inspected; retry later");
            return;
        }
        case ST_FAULT: {
            f->stage = ST_FORWARD;
            const struct proxy_fault *fl = rt->fault;
            if (!fl)
                break;
            if (fl->delay_ms && rand_below(10000) < fl->delay_percent_x100) {
                /* The delay first, then (maybe) the abort, as Envoy does. */
                metrics_counter_add(metrics_counter_with(m_faults, route_name(f), "delay"), 1);
                f->stage = ST_ABORT;
                x->on_abort = on_abort;
                fwd_after(f, fl->delay_ms, fwd_run);
                return;
            }
            f->stage = ST_ABORT;
            break;
        }
        case ST_ABORT: {
            f->stage = ST_FORWARD;
            const struct proxy_fault *fl = rt->fault;
            if (fl && fl->abort_status && rand_below(10000) < fl->abort_percent_x100) {
                metrics_counter_add(metrics_counter_with(m_faults, route_name(f), "abort"), 1);
                reply_error(f, fl->abort_status, "fault_injected", "this answer was injected by the route's fault policy");
                return;
            }
            break;
        }
        case ST_FORWARD:
            forward(f);
            return;
        }
    }
}

/* Inbound (sidecar): the peer's identity from its verified certificate,
 * AuthorizationPolicy, and x-forwarded-client-cert for the app (Envoy's
 * format: By=<us>;URI=<peer>). False when the request was answered. */
static bool inbound_admit(struct fwd *f)
{
    struct http1_exchange *x = f->x;
    const struct proxy_config *c = f->g->cfg;
    char id[512];
    if (x->sock && tls_sock_is_tls(x->sock) && tls_peer_verified(x->sock) &&
        tls_peer_uri_san(x->sock, id, sizeof id) == 0)
        f->peer_id = arena_strdup(&x->arena, str_from_cstr(id));
    if (c->nauthz) {
        struct authz_input in = { f->peer_id, x->req.method, f->path };
        struct authz_decision d;
        authz_evaluate(c->authz, c->nauthz, &in, &d);
        if (!d.allowed) {
            char msg[384];
            if (d.rule >= 0)
                snprintf(msg, sizeof msg, "denied by AuthorizationPolicy \"%s\" rule %d (DENY)", d.policy, d.rule);
            else
                snprintf(msg, sizeof msg, "no ALLOW policy matches %s (caller %s)", "this request",
                         f->peer_id ? f->peer_id : "without an identity");
            metrics_counter_add(metrics_counter_with(m_rbac, d.rule >= 0 ? d.policy : "(no allow match)"), 1);
            reply_error(f, 403, "rbac_denied", msg);
            return false;
        }
    }
    if (f->peer_id) {
        size_t n = strlen(f->peer_id) + (c->spiffe_id ? strlen(c->spiffe_id) : 0) + 16;
        f->xfcc = arena_alloc(&x->arena, n);
        if (f->xfcc) {
            if (c->spiffe_id)
                snprintf(f->xfcc, n, "By=%s;URI=%s", c->spiffe_id, f->peer_id);
            else
                snprintf(f->xfcc, n, "URI=%s", f->peer_id);
        }
    }
    return true;
}

void engine_handle(struct http1_exchange *x, void *arg)
{
    struct served *sv = arg;
    struct worker *w = sv->w;
    struct fwd *f = arena_alloc(&x->arena, sizeof *f);
    if (!f) {
        http1_respond_error(x, 503, "out_of_memory", "out of memory", NULL);
        return;
    }
    memset(f, 0, sizeof *f);
    f->x = x;
    f->sv = sv;
    f->w = w;
    f->g = w->gen;
    f->g->refs++;
    f->reason = "";
    x->user = f;
    /* on_abort is set for the whole pipeline: any pending stage is cancelled. */
    x->on_abort = on_abort;
    const struct http1_header *rid = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("X-Request-Id"));
    if (rid && http1_request_id_is_valid(rid->value))
        str_copy_cstr(rid->value, f->request_id, sizeof f->request_id);
    else
        rand_hex(f->request_id, 16);
    /* The server span continues the caller's trace, or starts one. */
    struct trace_ctx parent;
    const struct http1_header *tph = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("traceparent"));
    bool has_parent = tph && trace_parse_traceparent(tph->value, &parent) == 0;
    if (trace_tracer_is_enabled(w->tracer))
        f->span = trace_span_start(w->tracer,
                                   sv->l->cfg->role == PROXY_ROLE_INBOUND    ? "inbound"
                                   : sv->l->cfg->role == PROXY_ROLE_OUTBOUND ? "outbound"
                                                                             : "gateway",
                                   sv->l->cfg->role == PROXY_ROLE_OUTBOUND ? TRACE_SPAN_CLIENT : TRACE_SPAN_SERVER,
                                   has_parent ? &parent : NULL);
    if (f->span) {
        f->trace = *trace_span_ctx(f->span);
    } else {
        if (has_parent) {
            f->trace = parent;
        } else {
            rand_hex(f->trace.trace_id, 16);
            f->trace.flags = 1;
        }
        rand_hex(f->trace.span_id, 8);
    }
    /* RFC 9112 §3.2.2: in absolute form the authority is the target host. */
    f->host = x->req.authority.n ? x->req.authority : x->req.host;
    /* One path for routing, authorization and the upstream: "//admin",
     * "/x/../admin" and "/%61dmin" are all "/admin" (Istio normalize_path). */
    f->path = x->req.path;
    char *np = arena_alloc(&x->arena, x->req.path.n + 2);
    if (np) {
        size_t nn = authz_normalize_path(x->req.path, np);
        if (!str_eq(str_make(np, nn), x->req.path))
            f->path = str_make(np, nn);
    }

    const struct proxy_listener *lc = sv->l->cfg;
    if (str_eq(x->req.method, STR_LIT("CONNECT"))) {
        /* Tunnels (an https:// URL through HTTP_PROXY) are not proxied yet:
         * say so instead of a puzzling 404. */
        reply_error(f, 405, "connect_not_supported",
                    "CONNECT tunnels are not supported: call http://SERVICE and let the sidecar add mTLS");
        return;
    }
    if (lc->redirect_https_port) {
        redirect_https(f, lc->redirect_https_port);
        return;
    }
    if (lc->role == PROXY_ROLE_INBOUND && !inbound_admit(f))
        return;
    struct proxy_match_input in = { f->host, f->path, x->req.method, x->req.headers, x->req.nheaders,
                                    lc->name };
    f->route = proxy_route_match(f->g->cfg, &in);
    if (!f->route) {
        reply_error(f, 404, "route_not_found", "no route matches this host, path, method and headers");
        return;
    }
    const struct proxy_route *rt = f->route;
    if (rt->max_body_bytes && x->body.n > rt->max_body_bytes) {
        reply_error(f, 413, "body_too_large", "the request body is larger than the route allows");
        return;
    }
    if (rt->max_header_bytes) {
        size_t hb = 0;
        for (size_t i = 0; i < x->req.nheaders; i++)
            hb += x->req.headers[i].name.n + x->req.headers[i].value.n + 4;
        if (hb > rt->max_header_bytes) {
            reply_error(f, 431, "headers_too_large", "the request headers are larger than the route allows");
            return;
        }
    }
    if (rt->redirect) {
        route_redirect(f);
        return;
    }
    if (rt->direct) {
        direct_response(f);
        return;
    }
    f->stage = ST_AUTHN;
    fwd_run(f);
}

/* The workload of a SPIFFE ID: its service account ("…/sa/order" → "order"). */
static void workload_of(const char *id, char *out, size_t outsz)
{
    const char *sa = id ? strstr(id, "/sa/") : NULL;
    snprintf(out, outsz, "%s", sa && sa[4] ? sa + 4 : "unknown");
}

static void mesh_series_init(struct mesh_series *m, const char *src, const char *dst, const char *dir)
{
    for (int k = 0; k < 6; k++)
        m->by_class[k] = metrics_counter_with(m_mesh_rq, src, dst, dir, class_names[k]);
    m->duration = metrics_histogram_with(m_mesh_dur, src, dst, dir);
    m->bytes_in = metrics_counter_with(m_mesh_in, src, dst, dir);
    m->bytes_out = metrics_counter_with(m_mesh_out, src, dst, dir);
    snprintf(m->src, sizeof m->src, "%s", src);
    m->ready = true;
}

/* The series of this request, from the generation's cache (the registry
 * lookups take a lock: once per series, not per request). */
static struct mesh_series *mesh_series_of(struct fwd *f, struct mesh_series *scratch)
{
    struct gen *g = f->g;
    const struct proxy_config *c = g->cfg;
    const char *self = *c->workload ? c->workload : "unknown";
    if (f->sv->l->cfg->role == PROXY_ROLE_OUTBOUND) {
        if (!f->cluster) { /* answered before a destination was chosen */
            mesh_series_init(scratch, self, "unknown", "outbound");
            return scratch;
        }
        struct mesh_series *m = &g->mesh_out[f->cluster - c->clusters];
        if (!m->ready)
            mesh_series_init(m, self, f->cluster->name, "outbound");
        return m;
    }
    char peer[64];
    workload_of(f->peer_id, peer, sizeof peer);
    for (size_t i = 0; i < g->nmesh_in; i++)
        if (!strcmp(g->mesh_in[i].src, peer))
            return &g->mesh_in[i];
    /* Past 16 callers: look up every time rather than grow. */
    struct mesh_series *m = g->nmesh_in < 16 ? &g->mesh_in[g->nmesh_in++] : scratch;
    mesh_series_init(m, peer, self, "inbound");
    return m;
}

static void mesh_metrics(struct fwd *f, int status, double secs)
{
    if (f->sv->l->cfg->role == PROXY_ROLE_GATEWAY)
        return;
    struct mesh_series scratch, *m = mesh_series_of(f, &scratch);
    if (!m)
        return;
    metrics_counter_add(m->by_class[class_of(status)], 1);
    metrics_histogram_observe(m->duration, secs);
    metrics_counter_add(m->bytes_in, f->x->bytes_in);
    metrics_counter_add(m->bytes_out, f->x->bytes_out);
}

void engine_complete(struct http1_exchange *x, int status, void *arg)
{
    (void)arg;
    struct fwd *f = x->user;
    if (!f)
        return;
    x->user = NULL;
    if (f->timer_armed)
        loop_timer_stop(&f->timer);
    if (f->holds_retry)
        resil_retry_release(f->cluster->resil);
    if (f->holds_request)
        resil_request_release(f->cluster->resil);
    release_conn(f);
    struct gen *g = f->g;
    struct route_metrics *rm = f->route ? &g->rm[f->route - g->cfg->routes] : &g->none;
    int k = class_of(status);
    metrics_counter_add(rm->by_class[k], 1);
    double secs = (double)(loop_now_ms(f->w->loop) - x->start_ms) / 1000.0;
    metrics_histogram_observe(rm->duration, secs);
    mesh_metrics(f, status, secs);
    char ip[64];
    /* trace_id and span_id come from the thread's trace context (log.h). */
    log_set_trace(f->trace.trace_id, f->trace.span_id);
    log_info("request", LOG_STRV("method", x->req.method), LOG_STRV("path", x->req.path),
             LOG_STRV("host", f->host), LOG_STR("route", route_name(f)),
             LOG_STR("cluster", f->cluster ? f->cluster->name : ""), LOG_STR("upstream", f->ep ? f->ep->name : ""),
             LOG_INT("status", status), LOG_STR("reason", f->reason), LOG_INT("duration_ms", (int64_t)(secs * 1000)),
             LOG_STR("client", net_addr_ip(&x->peer, ip, sizeof ip)), LOG_STR("peer_id", f->peer_id ? f->peer_id : ""),
             LOG_INT("attempts", f->attempt + (f->ep ? 1 : 0)), LOG_STR("request_id", f->request_id));
    log_clear_trace();
    if (f->up_span)
        trace_span_end(f->up_span);
    if (f->span) {
        trace_span_set_attr_int(f->span, "http.response.status_code", status);
        trace_span_set_attr_str(f->span, "http.route", str_from_cstr(route_name(f)));
        if (status >= 500 || status == 0)
            trace_span_set_status(f->span, TRACE_STATUS_ERROR, str_from_cstr(f->reason));
        trace_span_end(f->span);
    }
    gen_unref(g);
}
