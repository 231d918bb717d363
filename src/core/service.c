#include "core/service.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/rand.h"

/* Statuses 100..599 index a per-route array of counters: the hot path does
 * one atomic load instead of a label lookup by string. */
#define STATUS_SLOTS 500
#define MAX_SEGMENTS 16

struct segment {
    char *literal; /* NULL for a {param} */
    char *param;
};

struct route {
    struct route *next;
    char method[16];
    char *pattern;
    struct segment segs[MAX_SEGMENTS];
    int nsegs;
    service_handler_fn fn;
    void *arg;
    struct metrics_histogram *duration;
    struct metrics_counter *by_status[STATUS_SLOTS]; /* filled on first use, atomically */
};

struct check {
    struct check *next;
    char *name;
    service_check_fn fn;
    void *arg;
};

struct worker {
    struct service *svc;
    int index;
    struct loop *loop;
    struct http1_server *server;
    struct http1_client *client;
    struct trace_tracer *tracer;
    int lfd;
};

struct service_req {
    struct http1_exchange *x;
    struct worker *w;
    const struct route *route;
    struct str param_names[SERVICE_MAX_PARAMS];
    struct str param_values[SERVICE_MAX_PARAMS];
    int nparams;
    char request_id[129];
    struct trace_span *span;
    struct http1_header *headers; /* response headers, in the arena */
    size_t nheaders, cap_headers;
    bool has_replied;
    /* an outbound call in flight (service_call) */
    struct http1_client_call *call;
    struct trace_span *call_span;
    service_call_cb call_cb;
    void *call_arg;
    void (*abort_fn)(struct service_req *r, void *arg);
    void *abort_arg;
};

struct service {
    struct service_config cfg;
    char name[128];
    char listen[128];
    struct net_addr addr;
    struct route *routes, *routes_tail;
    struct check *checks;
    struct worker *workers;
    struct loop_thread *threads; /* one per worker */
    int nworkers;
    struct loop *main_loop;
    struct loop_signal sigterm, sigint;
    struct loop_timer shutdown_timer;
    int shutdown_phase; /* 0 running, 1 draining readiness, 2 draining connections, 3 forced */
    int is_shutting_down; /* atomic: /readyz reads it from workers */
    bool is_bound;
    void (*worker_start)(struct loop *, int, void *);
    void (*worker_stop)(struct loop *, int, void *);
    void *worker_arg;
    void (*prestop)(struct service *, void *); /* runs on worker 0 before the shutdown proper */
    void *prestop_arg;
    bool prestop_started, prestop_done;
    struct trace_config trace_cfg;
    bool has_proxy;
    struct net_addr proxy; /* HTTP_PROXY */
    /* metrics */
    struct metrics_family *m_requests, *m_duration, *m_inflight_fam;
    struct metrics_gauge *m_inflight;
};

static const struct http1_header json_ct = { STR_LIT("Content-Type"), STR_LIT("application/json") };

/* ---- configuration ------------------------------------------------------ */

static int env_u64(const char *var, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *v = getenv(var);
    uint64_t x;
    if (!v || !*v)
        return 0;
    if (str_to_u64(str_from_cstr(v), &x) < 0 || x < min || x > max) {
        fprintf(stderr, "%s: expected an integer in %llu..%llu, got \"%s\"\n", var, (unsigned long long)min,
                (unsigned long long)max, v);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int service_http_proxy(struct net_addr *out)
{
    const char *proxy = getenv("HTTP_PROXY");
    if (!proxy || !*proxy)
        proxy = getenv("http_proxy");
    if (!proxy || !*proxy)
        return 0;
    struct http1_url pu;
    if (http1_url_parse(str_from_cstr(proxy), &pu) < 0 || pu.is_tls || net_addr_from_host(pu.host, pu.port, out) < 0) {
        fprintf(stderr, "HTTP_PROXY: expected http://HOST:PORT with a numeric host, got \"%s\"\n", proxy);
        return -EINVAL;
    }
    return 1;
}

struct service *service_new(const struct service_config *cfg)
{
    struct service *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    const char *name = getenv("OTEL_SERVICE_NAME");
    snprintf(s->name, sizeof s->name, "%s", name && *name ? name : cfg->name ? cfg->name : "strata-service");
    snprintf(s->listen, sizeof s->listen, "%s", cfg->listen ? cfg->listen : "127.0.0.1:8080");
    uint64_t port = 0, workers = cfg->workers > 0 ? (uint64_t)cfg->workers : 1;
    uint64_t max_body = cfg->max_body ? cfg->max_body : 1024 * 1024;
    uint64_t delay = cfg->shutdown_delay_ms, timeout = cfg->shutdown_timeout_ms ? cfg->shutdown_timeout_ms : 10000;
    if (env_u64("PORT", 0, 65535, &port) < 0 || env_u64("WORKERS", 1, 256, &workers) < 0 ||
        env_u64("MAX_BODY_BYTES", 1, 1ull << 30, &max_body) < 0 ||
        env_u64("SHUTDOWN_DELAY_MS", 0, 600000, &delay) < 0 ||
        env_u64("SHUTDOWN_TIMEOUT_MS", 0, 3600000, &timeout) < 0)
        goto fail;
    if (getenv("PORT") && *getenv("PORT"))
        snprintf(s->listen, sizeof s->listen, "0.0.0.0:%llu", (unsigned long long)port);
    const char *la = getenv("LISTEN_ADDR");
    if (la && *la)
        snprintf(s->listen, sizeof s->listen, "%s", la);
    if (net_addr_parse(str_from_cstr(s->listen), true, &s->addr) < 0) {
        fprintf(stderr, "%s: invalid listen address \"%s\" (expected HOST:PORT with a numeric host)\n",
                la && *la ? "LISTEN_ADDR" : "listen", s->listen);
        goto fail;
    }
    s->nworkers = (int)workers;
    s->cfg.max_body = max_body;
    s->cfg.shutdown_delay_ms = (uint32_t)delay;
    s->cfg.shutdown_timeout_ms = (uint32_t)timeout;
    log_init(s->name);
    trace_config_init(&s->trace_cfg);
    const char *bad = NULL;
    if (trace_config_from_env(&s->trace_cfg, &bad) < 0) {
        fprintf(stderr, "%s: invalid value\n", bad ? bad : "OTEL_*");
        goto fail;
    }
    s->trace_cfg.service_name = s->name;
    int has_proxy = service_http_proxy(&s->proxy);
    if (has_proxy < 0)
        goto fail;
    s->has_proxy = has_proxy > 0;

    struct metrics_registry *reg = metrics_default();
    if (metrics_register_counter(reg, "strata_http_requests_total", "HTTP requests served, by route, method and status.",
                                 METRICS_LABELS("service", "route", "method", "code"), &s->m_requests) < 0 ||
        metrics_register_histogram(reg, "strata_http_request_duration_seconds",
                                   "Time from a complete request head to the last response byte.",
                                   METRICS_LABELS("service", "route", "method"), NULL, 0, &s->m_duration) < 0 ||
        metrics_register_gauge(reg, "strata_http_requests_in_flight", "Requests being handled now.",
                               METRICS_LABELS("service"), &s->m_inflight_fam) < 0) {
        fprintf(stderr, "%s: cannot register metrics (already registered in this process?)\n", s->name);
        goto fail;
    }
    s->m_inflight = metrics_gauge_with(s->m_inflight_fam, s->name);
    return s;
fail:
    free(s);
    return NULL;
}

static void free_route(struct route *r)
{
    for (int i = 0; i < r->nsegs; i++) {
        free(r->segs[i].literal);
        free(r->segs[i].param);
    }
    free(r->pattern);
    free(r);
}

void service_free(struct service *s)
{
    if (!s)
        return;
    while (s->routes) {
        struct route *next = s->routes->next;
        free_route(s->routes);
        s->routes = next;
    }
    while (s->checks) {
        struct check *next = s->checks->next;
        free(s->checks->name);
        free(s->checks);
        s->checks = next;
    }
    free(s->workers);
    free(s->threads);
    free(s);
}

/* ---- routing ------------------------------------------------------------------ */

int service_route(struct service *s, const char *method, const char *pattern, service_handler_fn fn, void *arg)
{
    if (!method || !*method || strlen(method) >= 16 || !pattern || pattern[0] != '/')
        return -EINVAL;
    struct route *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    snprintf(r->method, sizeof r->method, "%s", method);
    r->pattern = strdup(pattern);
    r->fn = fn;
    r->arg = arg;
    const char *p = pattern + 1;
    while (*p || r->nsegs == 0) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (r->nsegs == MAX_SEGMENTS)
            goto bad;
        struct segment *seg = &r->segs[r->nsegs++];
        if (n >= 2 && p[0] == '{' && p[n - 1] == '}') {
            seg->param = strndup(p + 1, n - 2);
        } else {
            if (memchr(p, '{', n) || memchr(p, '}', n))
                goto bad;
            seg->literal = strndup(p, n);
        }
        if (!end)
            break;
        p = end + 1;
    }
    r->duration = metrics_histogram_with(s->m_duration, s->name, r->pattern, r->method);
    if (s->routes_tail)
        s->routes_tail->next = r;
    else
        s->routes = r;
    s->routes_tail = r;
    return 0;
bad:
    free_route(r);
    return -EINVAL;
}

/* Matches path against r, filling params. */
static bool route_match(const struct route *r, struct str path, struct service_req *req)
{
    const char *p = path.p, *end = path.p + path.n;
    if (!path.n || *p != '/')
        return false;
    p++;
    int np = 0;
    for (int i = 0; i < r->nsegs; i++) {
        if (p > end)
            return false;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        struct str seg = str_make(p, (size_t)(seg_end - p));
        if (r->segs[i].literal) {
            if (!str_eq(seg, str_from_cstr(r->segs[i].literal)))
                return false;
        } else {
            if (seg.n == 0 || np == SERVICE_MAX_PARAMS)
                return false;
            req->param_names[np] = str_from_cstr(r->segs[i].param);
            req->param_values[np] = seg;
            np++;
        }
        if (i == r->nsegs - 1) {
            if (slash)
                return false;
        } else if (!slash) {
            return false;
        }
        p = seg_end + 1;
    }
    req->nparams = np;
    return true;
}

int service_add_check(struct service *s, const char *name, service_check_fn fn, void *arg)
{
    struct check *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->name = strdup(name);
    c->fn = fn;
    c->arg = arg;
    struct check **pp = &s->checks;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    return 0;
}

void service_on_worker(struct service *s, void (*start)(struct loop *l, int worker, void *arg),
                       void (*stop)(struct loop *l, int worker, void *arg), void *arg)
{
    s->worker_start = start;
    s->worker_stop = stop;
    s->worker_arg = arg;
}

/* ---- requests ------------------------------------------------------------------ */

const struct http1_request *service_req_request(const struct service_req *r) { return &r->x->req; }
struct str service_req_body(const struct service_req *r) { return r->x->body; }
const char *service_req_id(const struct service_req *r) { return r->request_id; }
struct loop *service_req_loop(const struct service_req *r) { return r->w->loop; }
int service_req_worker(const struct service_req *r) { return r->w->index; }
int service_workers(const struct service *s) { return s->nworkers; }
const char *service_name(const struct service *s) { return s->name; }

const char *service_req_peer_ip(struct service_req *r)
{
    char *ip = arena_alloc(&r->x->arena, 64);
    if (!ip)
        return "unknown";
    return net_addr_ip(&r->x->peer, ip, 64);
}
struct arena *service_req_arena(struct service_req *r) { return &r->x->arena; }
struct trace_span *service_req_span(struct service_req *r) { return r->span; }
struct http1_client *service_req_client(struct service_req *r) { return r->w->client; }

struct str service_req_param(const struct service_req *r, const char *name)
{
    for (int i = 0; i < r->nparams; i++)
        if (str_eq(r->param_names[i], str_from_cstr(name)))
            return r->param_values[i];
    return STR_NULL;
}

struct str service_req_header(const struct service_req *r, const char *name)
{
    const struct http1_header *h = http1_find_header(r->x->req.headers, r->x->req.nheaders, str_from_cstr(name));
    return h ? h->value : STR_NULL;
}

int service_req_add_header(struct service_req *r, const char *name, const char *value)
{
    if (r->nheaders == r->cap_headers) {
        size_t cap = r->cap_headers ? r->cap_headers * 2 : 8;
        struct http1_header *h = arena_alloc(&r->x->arena, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        if (r->nheaders)
            memcpy(h, r->headers, r->nheaders * sizeof *h);
        r->headers = h;
        r->cap_headers = cap;
    }
    char *n = arena_strdup(&r->x->arena, str_from_cstr(name));
    char *v = arena_strdup(&r->x->arena, str_from_cstr(value));
    if (!n || !v)
        return -ENOMEM;
    r->headers[r->nheaders++] = (struct http1_header){ str_from_cstr(n), str_from_cstr(v) };
    return 0;
}

static int reply_common(struct service_req *r, int status, struct str ctype, struct str body, struct buf *steal)
{
    if (r->has_replied)
        return -EALREADY;
    r->has_replied = true;
    struct http1_header extra[3];
    size_t n = 0;
    extra[n++] = (struct http1_header){ STR_LIT("X-Request-Id"), str_from_cstr(r->request_id) };
    if (ctype.n)
        extra[n++] = (struct http1_header){ STR_LIT("Content-Type"), ctype };
    struct http1_header *all = extra;
    size_t total = n + r->nheaders;
    if (r->nheaders) {
        all = arena_alloc(&r->x->arena, total * sizeof *all);
        if (!all)
            return http1_respond_error(r->x, 503, "out_of_memory", "out of memory", r->request_id);
        memcpy(all, extra, n * sizeof *all);
        memcpy(all + n, r->headers, r->nheaders * sizeof *all);
    }
    if (r->span && status >= 500)
        trace_span_set_status(r->span, TRACE_STATUS_ERROR, STR_NULL);
    if (steal)
        return http1_respond_buf(r->x, status, all, total, steal);
    return http1_respond(r->x, status, all, total, body);
}

int service_reply(struct service_req *r, int status, const char *content_type, struct str body)
{
    return reply_common(r, status, str_from_cstr(content_type), body, NULL);
}

int service_reply_json(struct service_req *r, int status, json_t *body)
{
    struct buf b;
    buf_init(&b, 64u << 20);
    int rc = json_dump_to_buf(body, &b);
    json_decref(body);
    if (rc < 0) {
        buf_free(&b);
        return service_reply_error(r, 503, "out_of_memory", "the response could not be encoded");
    }
    rc = reply_common(r, status, json_ct.value, STR_NULL, &b);
    buf_free(&b);
    return rc;
}

int service_reply_error(struct service_req *r, int status, const char *code, const char *message)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    if (json_error_body(&b, code, message, r->request_id) < 0) {
        buf_free(&b);
        r->has_replied = true;
        return http1_respond_error(r->x, 503, "out_of_memory", "out of memory", r->request_id);
    }
    int rc = reply_common(r, status, json_ct.value, STR_NULL, &b);
    buf_free(&b);
    return rc;
}

int service_reply_json_error(struct service_req *r, const struct json_error *err)
{
    return service_reply_error(r, json_reason_status(err->reason), json_reason_code(err->reason), err->message);
}

int service_req_json(struct service_req *r, size_t max_depth, json_t **out)
{
    struct str ct = service_req_header(r, "Content-Type");
    struct str media = ct;
    const char *semi = ct.n ? memchr(ct.p, ';', ct.n) : NULL;
    if (semi)
        media = str_trim_ows(str_make(ct.p, (size_t)(semi - ct.p)));
    if (!str_eq_nocase(media, STR_LIT("application/json"))) {
        service_reply_error(r, 415, "unsupported_media_type", "Content-Type must be application/json");
        return -EINVAL;
    }
    struct json_error err;
    if (json_parse_body(r->x->body, max_depth, out, &err) < 0) {
        service_reply_json_error(r, &err);
        return -EINVAL;
    }
    return 0;
}

/* ---- outbound calls ------------------------------------------------------------------ */

int service_reply_upstream_error(struct service_req *r, int err, const char *what)
{
    char msg[200];
    if (err == -ETIMEDOUT) {
        snprintf(msg, sizeof msg, "%s did not answer in time", what);
        return service_reply_error(r, 504, "upstream_timeout", msg);
    }
    snprintf(msg, sizeof msg, "%s is unavailable", what);
    return service_reply_error(r, 503, "upstream_unavailable", msg);
}

static void req_abort(struct http1_exchange *x);

void service_req_on_abort(struct service_req *r, void (*fn)(struct service_req *r, void *arg), void *arg)
{
    r->abort_fn = fn;
    r->abort_arg = arg;
    r->x->on_abort = fn || r->call ? req_abort : NULL;
}

static void call_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct service_req *r = arg;
    r->call = NULL;
    if (r->call_span) {
        if (err)
            trace_span_set_status(r->call_span, TRACE_STATUS_ERROR, STR_LIT("call failed"));
        else
            trace_span_set_attr_int(r->call_span, "http.response.status_code", resp->status);
        trace_span_end(r->call_span);
        r->call_span = NULL;
    }
    r->x->on_abort = r->abort_fn ? req_abort : NULL;
    if (r->span)
        trace_span_make_current(r->span);
    r->call_cb(r, err, resp, r->call_arg);
}

static void req_abort(struct http1_exchange *x)
{
    struct service_req *r = x->user;
    if (r && r->abort_fn) {
        void (*fn)(struct service_req *, void *) = r->abort_fn;
        r->abort_fn = NULL;
        fn(r, r->abort_arg);
    }
    if (r && r->call) {
        http1_client_cancel(r->call);
        r->call = NULL;
    }
    if (r && r->call_span) {
        trace_span_set_status(r->call_span, TRACE_STATUS_ERROR, STR_LIT("caller went away"));
        trace_span_end(r->call_span);
        r->call_span = NULL;
    }
}

int service_call(struct service_req *r, const char *base_url, const struct service_call_opts *o, service_call_cb cb,
                 void *arg)
{
    struct service *s = r->w->svc;
    struct http1_url u;
    if (r->call)
        return -EBUSY; /* one call at a time per request */
    if (!base_url || http1_url_parse(str_from_cstr(base_url), &u) < 0 || u.is_tls)
        return -EINVAL;
    struct arena *a = &r->x->arena;
    struct http1_client_request req = { .method = str_from_cstr(o->method ? o->method : "GET"),
                                        .body = o->body,
                                        .timeout_ms = o->timeout_ms ? o->timeout_ms : 5000 };
    /* Host header: the authority as written. */
    char *host = arena_alloc(a, u.host.n + 8);
    if (!host)
        return -ENOMEM;
    bool default_port = u.port == 80;
    snprintf(host, u.host.n + 8, "%.*s%s%u", STR_FMT(u.host), default_port ? "" : ":", default_port ? 0u : u.port);
    if (default_port)
        host[u.host.n] = '\0';
    req.host = str_from_cstr(host);
    /* Base path (without a trailing slash) + the call's path. */
    struct str base_path = u.path;
    if (base_path.n && base_path.p[base_path.n - 1] == '/')
        base_path.n--;
    const char *path = o->path ? o->path : "/";
    size_t tlen = base_path.n + strlen(path) + strlen(host) + 16;
    char *target = arena_alloc(a, tlen);
    if (!target)
        return -ENOMEM;
    if (s->has_proxy) {
        snprintf(target, tlen, "http://%s%.*s%s", host, STR_FMT(base_path), path);
        req.addr = s->proxy;
    } else {
        snprintf(target, tlen, "%.*s%s", STR_FMT(base_path), path);
        if (net_addr_from_host(u.host, u.port, &req.addr) < 0)
            return -EHOSTUNREACH; /* a name: only a proxy (the sidecar) can resolve it */
    }
    req.target = str_from_cstr(target);

    size_t n = 0, cap = o->nheaders + 4;
    struct http1_header *h = arena_alloc(a, cap * sizeof *h);
    if (!h)
        return -ENOMEM;
    h[n++] = (struct http1_header){ STR_LIT("X-Request-Id"), str_from_cstr(r->request_id) };
    r->call_span = trace_span_start(r->w->tracer, o->method ? o->method : "GET", TRACE_SPAN_CLIENT,
                                    r->span ? trace_span_ctx(r->span) : NULL);
    if (r->call_span) {
        char *tp = arena_alloc(a, TRACE_TRACEPARENT_LEN + 1);
        if (tp && trace_format_traceparent(trace_span_ctx(r->call_span), tp) == 0)
            h[n++] = (struct http1_header){ STR_LIT("traceparent"), str_from_cstr(tp) };
        trace_span_set_attr_str(r->call_span, "server.address", u.host);
        trace_span_set_attr_str(r->call_span, "url.path", str_from_cstr(path));
    }
    if (o->body.n)
        h[n++] = (struct http1_header){ STR_LIT("Content-Type"),
                                        str_from_cstr(o->content_type ? o->content_type : "application/json") };
    for (size_t i = 0; i < o->nheaders; i++)
        h[n++] = o->headers[i];
    req.headers = h;
    req.nheaders = n;
    r->call_cb = cb;
    r->call_arg = arg;
    int rc = http1_client_send(r->w->client, &req, call_done, r, &r->call);
    if (rc < 0) {
        if (r->call_span) {
            trace_span_end(r->call_span);
            r->call_span = NULL;
        }
        r->call = NULL;
        return rc;
    }
    r->x->on_abort = req_abort;
    return 0;
}

/* ---- built-in endpoints ------------------------------------------------------------ */

static void healthz(struct service_req *r, void *arg)
{
    (void)arg;
    service_reply(r, 200, "application/json", STR_LIT("{\"status\":\"ok\"}"));
}

static void readyz(struct service_req *r, void *arg)
{
    struct service *s = arg;
    if (__atomic_load_n(&s->is_shutting_down, __ATOMIC_ACQUIRE)) {
        service_reply_error(r, 503, "shutting_down", "the service is shutting down");
        return;
    }
    json_t *checks = json_object();
    bool ok = true;
    char first[300] = "";
    for (struct check *c = s->checks; c; c = c->next) {
        char reason[256] = "";
        int rc = c->fn(c->arg, reason, sizeof reason);
        json_object_set_new(checks, c->name, json_string(rc == 0 ? "ok" : reason[0] ? reason : "failing"));
        if (rc != 0 && ok) {
            ok = false;
            snprintf(first, sizeof first, "%s: %s", c->name, reason[0] ? reason : "failing");
        }
    }
    if (!ok) {
        json_decref(checks);
        service_reply_error(r, 503, "not_ready", first);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, "status", json_string("ready"));
    json_object_set_new(body, "checks", checks);
    service_reply_json(r, 200, body);
}

static void metrics_endpoint(struct service_req *r, void *arg)
{
    (void)arg;
    struct buf b;
    buf_init(&b, 64u << 20);
    if (metrics_render(metrics_default(), &b) < 0) {
        buf_free(&b);
        service_reply_error(r, 503, "metrics_unavailable", "metrics could not be rendered");
        return;
    }
    reply_common(r, 200, STR_LIT(METRICS_CONTENT_TYPE), STR_NULL, &b);
    buf_free(&b);
}

/* ---- the request path --------------------------------------------------------------- */

static void on_request(struct http1_exchange *x, void *arg)
{
    struct worker *w = arg;
    struct service *s = w->svc;
    struct service_req *r = arena_alloc(&x->arena, sizeof *r);
    if (!r) {
        http1_respond_error(x, 503, "out_of_memory", "out of memory", NULL);
        return;
    }
    memset(r, 0, sizeof *r);
    r->x = x;
    r->w = w;
    x->user = r;
    const struct http1_header *rid = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("X-Request-Id"));
    if (rid && http1_request_id_is_valid(rid->value))
        str_copy_cstr(rid->value, r->request_id, sizeof r->request_id);
    else
        rand_hex(r->request_id, 16);

    /* Route first, so that the span and the metrics are named by the route. */
    const struct route *found = NULL;
    bool path_known = false;
    for (const struct route *rt = s->routes; rt; rt = rt->next) {
        if (!route_match(rt, x->req.path, r))
            continue;
        path_known = true;
        if (str_eq(x->req.method, str_from_cstr(rt->method)) ||
            (str_eq(x->req.method, STR_LIT("HEAD")) && !strcmp(rt->method, "GET"))) {
            found = rt;
            break;
        }
    }
    r->route = found;
    struct trace_ctx parent;
    const struct http1_header *tp = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("traceparent"));
    bool has_parent = tp && trace_parse_traceparent(tp->value, &parent) == 0;
    char span_name[160];
    snprintf(span_name, sizeof span_name, "%.*s %s", STR_FMT(x->req.method), found ? found->pattern : "unmatched");
    r->span = trace_span_start(w->tracer, span_name, TRACE_SPAN_SERVER, has_parent ? &parent : NULL);
    if (r->span) {
        trace_span_set_attr_str(r->span, "http.request.method", x->req.method);
        trace_span_set_attr_str(r->span, "url.path", x->req.path);
        if (found)
            trace_span_set_attr_str(r->span, "http.route", str_from_cstr(found->pattern));
        trace_span_make_current(r->span);
    }
    metrics_gauge_add(s->m_inflight, 1);
    if (!found) {
        if (path_known)
            service_reply_error(r, 405, "method_not_allowed", "the method is not allowed on this path");
        else
            service_reply_error(r, 404, "not_found", "no route matches this path");
    } else {
        found->fn(r, found->arg);
    }
    trace_clear_current();
}

static struct metrics_counter *status_counter(struct service *s, struct route *rt, const char *method, int status)
{
    if (status < 100 || status > 599)
        status = 599;
    struct metrics_counter **slot = rt ? &rt->by_status[status - 100] : NULL;
    struct metrics_counter *c = slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE) : NULL;
    if (c)
        return c;
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    c = metrics_counter_with(s->m_requests, s->name, rt ? rt->pattern : "unmatched", method, code);
    if (slot && c)
        __atomic_store_n(slot, c, __ATOMIC_RELEASE);
    return c;
}

static void on_complete(struct http1_exchange *x, int status, void *arg)
{
    struct worker *w = arg;
    struct service *s = w->svc;
    struct service_req *r = x->user;
    if (!r)
        return;
    loop_update_time(w->loop);
    double secs = (double)(loop_now_ms(w->loop) - x->start_ms) / 1000.0;
    metrics_gauge_add(s->m_inflight, -1);
    struct route *rt = (struct route *)r->route;
    char method[16];
    str_copy_cstr(str_make(x->req.method.p, x->req.method.n < 15 ? x->req.method.n : 15), method, sizeof method);
    metrics_counter_add(status_counter(s, rt, method, status), 1);
    if (rt)
        metrics_histogram_observe(rt->duration, secs);
    if (r->span) {
        trace_span_set_attr_int(r->span, "http.response.status_code", status);
        if (status == 0)
            trace_span_set_status(r->span, TRACE_STATUS_ERROR, STR_LIT("connection closed before the response"));
        trace_span_make_current(r->span);
    }
    char peer[64];
    net_addr_ip(&x->peer, peer, sizeof peer);
    enum log_level lvl = status >= 500 || status == 0 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO;
    log_at(lvl, "request", LOG_STRV("method", x->req.method), LOG_STRV("path", x->req.path),
           LOG_STR("route", rt ? rt->pattern : "unmatched"), LOG_INT("status", status),
           LOG_DOUBLE("duration_ms", secs * 1000.0), LOG_UINT("bytes_in", x->bytes_in),
           LOG_UINT("bytes_out", x->bytes_out), LOG_STR("request_id", r->request_id), LOG_STR("peer", peer));
    if (r->span) {
        trace_span_end(r->span);
        r->span = NULL;
    }
    trace_clear_current();
    x->user = NULL;
}

/* ---- workers and shutdown -------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->svc->worker_start)
        w->svc->worker_start(w->loop, w->index, w->svc->worker_arg);
    loop_run(w->loop);
    return NULL;
}

static void flushed_cb(int err, void *arg)
{
    struct worker *w = arg;
    (void)err;
    loop_stop(w->loop);
}

static void worker_drained(void *arg)
{
    struct worker *w = arg;
    if (w->svc->worker_stop)
        w->svc->worker_stop(w->loop, w->index, w->svc->worker_arg);
    /* Spans of the last requests go out before we exit (bounded wait). */
    if (trace_tracer_flush(w->tracer, 2000, flushed_cb, w) < 0)
        loop_stop(w->loop);
}

static void worker_drain(void *arg)
{
    struct worker *w = arg;
    http1_server_drain(w->server, worker_drained, w);
}

static void worker_force(void *arg)
{
    struct worker *w = arg;
    http1_server_close_all(w->server);
    worker_drained(w);
}

static void shutdown_step(struct loop_timer *t)
{
    struct service *s = t->data;
    if (s->shutdown_phase == 1) {
        s->shutdown_phase = 2;
        log_info("draining connections", LOG_UINT("timeout_ms", s->cfg.shutdown_timeout_ms));
        for (int i = 0; i < s->nworkers; i++)
            loop_post(s->workers[i].loop, worker_drain, &s->workers[i]);
        loop_timer_start(&s->shutdown_timer, s->cfg.shutdown_timeout_ms);
    } else if (s->shutdown_phase == 2) {
        s->shutdown_phase = 3;
        log_warn("shutdown timeout: closing the connections left");
        for (int i = 0; i < s->nworkers; i++)
            if (!s->threads[i].is_joined)
                loop_post(s->workers[i].loop, worker_force, &s->workers[i]);
    }
}

static void run_prestop(void *arg)
{
    struct service *s = arg;
    s->prestop(s, s->prestop_arg);
}

static void begin_shutdown(void *arg)
{
    struct service *s = arg;
    if (s->shutdown_phase)
        return;
    if (s->prestop && !s->prestop_done) {
        if (!s->prestop_started) {
            s->prestop_started = true;
            log_info("shutting down: pre-stop");
            loop_post(s->workers[0].loop, run_prestop, s);
        }
        return;
    }
    s->shutdown_phase = 1;
    __atomic_store_n(&s->is_shutting_down, 1, __ATOMIC_RELEASE);
    log_info("shutting down", LOG_UINT("delay_ms", s->cfg.shutdown_delay_ms));
    loop_timer_start(&s->shutdown_timer, s->cfg.shutdown_delay_ms);
}

static void on_signal(struct loop_signal *sig, int signo)
{
    (void)signo;
    begin_shutdown(sig->data);
}

static void prestop_finished(void *arg)
{
    struct service *s = arg;
    s->prestop_done = true;
    begin_shutdown(s);
}

void service_on_prestop(struct service *s, void (*fn)(struct service *s, void *arg), void *arg)
{
    s->prestop = fn;
    s->prestop_arg = arg;
}

void service_prestop_done(struct service *s)
{
    if (s->main_loop)
        loop_post(s->main_loop, prestop_finished, s);
}

void service_shutdown(struct service *s)
{
    if (s->main_loop)
        loop_post(s->main_loop, begin_shutdown, s);
}

uint16_t service_port(const struct service *s) { return net_addr_port(&s->addr); }

int service_bind(struct service *s)
{
    if (s->is_bound)
        return 0;
    if (service_route(s, "GET", "/healthz", healthz, s) < 0 || service_route(s, "GET", "/readyz", readyz, s) < 0 ||
        service_route(s, "GET", "/metrics", metrics_endpoint, s) < 0)
        return -ENOMEM;
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    s->threads = calloc((size_t)s->nworkers, sizeof *s->threads);
    if (!s->workers || !s->threads)
        return -ENOMEM;
    struct net_listen_opts lo = { .reuseport = true };
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->svc = s;
        w->index = i;
        int rc = net_listen(&s->addr, &lo, &w->lfd);
        if (rc < 0) {
            char a[80];
            log_error("cannot listen", LOG_STR("address", net_addr_format(&s->addr, a, sizeof a)), LOG_ERRNO("error", -rc));
            return rc;
        }
        if (i == 0 && net_addr_port(&s->addr) == 0)
            net_local_addr(w->lfd, &s->addr);
    }
    s->is_bound = true;
    return 0;
}

int service_run(struct service *s)
{
    int rc = service_bind(s);
    if (rc < 0)
        return rc;
    s->main_loop = loop_new();
    if (!s->main_loop)
        return -ENOMEM;
    /* Block the signals before the workers exist: only signalfd sees them. */
    loop_signal_start(s->main_loop, &s->sigterm, SIGTERM, on_signal, s);
    loop_signal_start(s->main_loop, &s->sigint, SIGINT, on_signal, s);
    signal(SIGPIPE, SIG_IGN);
    loop_timer_init(s->main_loop, &s->shutdown_timer, shutdown_step, s);

    struct http1_server_config hc = { .max_body = s->cfg.max_body, .on_complete = on_complete };
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->loop = loop_new();
        hc.handler = on_request;
        hc.handler_arg = w;
        w->server = w->loop ? http1_server_new(w->loop, &hc) : NULL;
        w->client = w->loop ? http1_client_new(w->loop, NULL) : NULL;
        w->tracer = w->loop ? trace_tracer_new(w->loop, &s->trace_cfg) : NULL;
        if (!w->server || !w->client || !w->tracer)
            return -ENOMEM;
        http1_server_listen_fd(w->server, w->lfd);
    }
    char a[80];
    log_info("listening", LOG_STR("address", net_addr_format(&s->addr, a, sizeof a)), LOG_INT("workers", s->nworkers));
    for (int i = 0; i < s->nworkers; i++)
        pthread_create(&s->threads[i].id, NULL, worker_main, &s->workers[i]);
    loop_run_until_joined(s->main_loop, s->threads, (size_t)s->nworkers);
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        http1_server_free(w->server);
        http1_client_free(w->client);
        trace_tracer_free(w->tracer);
        loop_run_once(w->loop, 0);
        loop_free(w->loop);
    }
    loop_timer_stop(&s->shutdown_timer);
    loop_signal_stop(&s->sigterm);
    loop_signal_stop(&s->sigint);
    loop_free(s->main_loop);
    s->main_loop = NULL;
    log_info("stopped");
    return 0;
}
