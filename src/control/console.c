/* console.c — the console's static files and its Prometheus query proxy
 * (console.h). */
#include "control/console.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "control/console_assets.h"
#include "core/arena.h"
#include "core/net.h"

/* 15 s: the page refreshes every 5 s; a query slower than three refreshes
 * is answered 504 rather than piling up behind the next ones. */
#define PROM_TIMEOUT_MS 15000

/* The query string is forwarded as is; 8 KiB covers the page's longest
 * range query several times over. Longer → 414. */
#define MAX_QUERY 8192

/* One per process (the control plane has one admin API): static so that
 * nothing is left to free at exit. */
static struct console {
    struct admin_auth auth;
    bool has_prometheus;
    struct net_addr prom_addr;
    char prom_host[280];      /* Host header: the authority as written */
    char prom_base[256];      /* path prefix without a trailing slash ("" usually) */
} console;

/* 'self' only: no inline script or style, nothing from another origin;
 * charts are SVG drawn by app.js (attributes, not style text). */
static const char CSP[] = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                          "frame-ancestors 'none'";

static const struct console_asset *asset_find(struct str path)
{
    for (const struct console_asset *a = console_assets; a->path; a++)
        if (strlen(a->path) == path.n && !memcmp(a->path, path.p, path.n))
            return a;
    return NULL;
}

static void serve_asset(struct service_req *r, const struct console_asset *a)
{
    service_req_add_header(r, "Content-Security-Policy", CSP);
    service_req_add_header(r, "X-Content-Type-Options", "nosniff");
    service_req_add_header(r, "X-Frame-Options", "DENY");
    service_req_add_header(r, "Referrer-Policy", "no-referrer");
    /* The files change with the binary: revalidate rather than keep a
     * stale script after an upgrade. */
    service_req_add_header(r, "Cache-Control", "no-cache");
    service_reply(r, 200, a->content_type, str_make((const char *)a->data, a->len));
}

static void h_index(struct service_req *r, void *arg)
{
    (void)arg;
    const struct console_asset *a = asset_find(STR_LIT("/index.html"));
    if (!a) {
        service_reply_error(r, 404, "not_found", "this build has no console");
        return;
    }
    serve_asset(r, a);
}

static void h_file(struct service_req *r, void *arg)
{
    (void)arg;
    struct str f = service_req_param(r, "file");
    char path[128];
    /* Names are plain: no percent-encoding, no dot files, no traversal
     * (the route's single segment already excludes '/'). */
    bool plain = f.n > 0 && f.n < sizeof path - 1 && f.p[0] != '.';
    for (size_t i = 0; plain && i < f.n; i++)
        plain = (f.p[i] >= 'a' && f.p[i] <= 'z') || (f.p[i] >= 'A' && f.p[i] <= 'Z') ||
                (f.p[i] >= '0' && f.p[i] <= '9') || f.p[i] == '.' || f.p[i] == '-' || f.p[i] == '_';
    const struct console_asset *a = NULL;
    if (plain) {
        snprintf(path, sizeof path, "/%.*s", STR_FMT(f));
        a = asset_find(str_from_cstr(path));
    }
    if (!a) {
        service_reply_error(r, 404, "not_found", "no such console file");
        return;
    }
    serve_asset(r, a);
}

/* ---- the Prometheus proxy ------------------------------------------------ */

struct prom_call {
    struct service_req *r;
    struct http1_client_call *call;
};

static void prom_abort(struct service_req *r, void *arg)
{
    (void)r;
    struct prom_call *pc = arg;
    if (pc->call)
        http1_client_cancel(pc->call);
    pc->call = NULL;
}

static void prom_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct prom_call *pc = arg;
    struct service_req *r = pc->r;
    pc->call = NULL;
    service_req_on_abort(r, NULL, NULL);
    if (err) {
        service_reply_upstream_error(r, err, "Prometheus");
        return;
    }
    if (resp->status >= 200 && resp->status < 300) {
        service_req_add_header(r, "Cache-Control", "no-store");
        service_reply(r, resp->status, "application/json", resp->body);
        return;
    }
    /* Prometheus' own error JSON: {"status":"error","errorType":"bad_data","error":"..."} */
    char msg[512];
    json_t *j = json_loadb(resp->body.p, resp->body.n, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    snprintf(msg, sizeof msg, "Prometheus answered %d: %s", resp->status, e ? e : "(no error message)");
    json_decref(j);
    if (resp->status >= 400 && resp->status < 500)
        service_reply_error(r, resp->status, "bad_query", msg);
    else
        service_reply_error(r, 502, "prometheus_error", msg);
}

static void prom_forward(struct service_req *r, const char *api)
{
    if (!admin_authorized(&console.auth, r))
        return;
    if (!console.has_prometheus) {
        service_reply_error(r, 503, "prometheus_unavailable",
                            "Prometheus is not running (the control plane was started with --prometheus-port 0)");
        return;
    }
    struct str q = service_req_request(r)->query;
    if (q.n > MAX_QUERY) {
        service_reply_error(r, 414, "query_too_long", "the query string is longer than 8192 bytes");
        return;
    }
    struct arena *a = service_req_arena(r);
    size_t tlen = strlen(console.prom_base) + strlen(api) + q.n + 16;
    char *target = arena_alloc(a, tlen);
    struct prom_call *pc = arena_alloc(a, sizeof *pc);
    if (!target || !pc) {
        service_reply_error(r, 503, "out_of_memory", "no memory for this request");
        return;
    }
    snprintf(target, tlen, "%s/api/v1/%s%s%.*s", console.prom_base, api, q.n ? "?" : "", STR_FMT(q));
    static const struct http1_header accept = { STR_LIT("Accept"), STR_LIT("application/json") };
    struct http1_client_request req = { .addr = console.prom_addr,
                                        .method = STR_LIT("GET"),
                                        .target = str_from_cstr(target),
                                        .host = str_from_cstr(console.prom_host),
                                        .headers = &accept,
                                        .nheaders = 1,
                                        .timeout_ms = PROM_TIMEOUT_MS };
    *pc = (struct prom_call){ .r = r };
    int rc = http1_client_send(service_req_client(r), &req, prom_done, pc, &pc->call);
    if (rc < 0) {
        service_reply_upstream_error(r, rc, "Prometheus");
        return;
    }
    service_req_on_abort(r, prom_abort, pc);
}

static void h_query(struct service_req *r, void *arg)
{
    (void)arg;
    prom_forward(r, "query");
}

static void h_query_range(struct service_req *r, void *arg)
{
    (void)arg;
    prom_forward(r, "query_range");
}

int console_register(struct service *s, const struct admin_auth *auth, const char *prometheus_url)
{
    if (!s || !auth || !auth->check)
        return -EINVAL;
    struct console c = { .auth = *auth };
    if (prometheus_url) {
        struct http1_url u;
        if (http1_url_parse(str_from_cstr(prometheus_url), &u) < 0 || u.is_tls ||
            net_addr_from_host(u.host, u.port, &c.prom_addr) < 0 || u.host.n + 10 > sizeof c.prom_host)
            return -EINVAL;
        /* The path without its query or trailing slash: "/prom" or "". */
        struct str p = u.path;
        const char *qm = memchr(p.p, '?', p.n);
        if (qm)
            p.n = (size_t)(qm - p.p);
        while (p.n && p.p[p.n - 1] == '/')
            p.n--;
        if (p.n >= sizeof c.prom_base)
            return -EINVAL;
        snprintf(c.prom_base, sizeof c.prom_base, "%.*s", STR_FMT(p));
        bool is_ipv6 = memchr(u.host.p, ':', u.host.n) != NULL;
        snprintf(c.prom_host, sizeof c.prom_host, "%s%.*s%s:%u", is_ipv6 ? "[" : "", STR_FMT(u.host),
                 is_ipv6 ? "]" : "", u.port);
        c.has_prometheus = true;
    }
    int rc;
    if ((rc = service_route(s, "GET", "/", h_index, NULL)) < 0 ||
        (rc = service_route(s, "GET", "/console/{file}", h_file, NULL)) < 0 ||
        (rc = service_route(s, "GET", "/v1/prom/query", h_query, NULL)) < 0 ||
        (rc = service_route(s, "GET", "/v1/prom/query_range", h_query_range, NULL)) < 0)
        return rc;
    console = c;
    return 0;
}
