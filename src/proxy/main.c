/* strata-proxy — the proxy engine, first slice of the gateway role
 * (issue 5): HTTP listeners, routing by host/path/method in order,
 * clusters of endpoints with round robin, keep-alive upstream pools,
 * per-route timeouts, prefix rewrite, X-Forwarded-*, X-Request-Id and W3C
 * traceparent continued or started, JSON errors with a reason code.
 *
 *   strata-proxy --config FILE [--workers N]
 *
 * TLS listeners (certificates by SNI, TLS 1.2/1.3, ALPN http/1.1) reload
 * their certificate files on SIGHUP without dropping a connection.
 *
 * Not yet (issue 5): JWT, rate limits, WAF, health checks,
 * least-request, weighted destinations, redirects, header rules, streaming
 * bodies (requests and responses are buffered, bounded by 1 MiB / 16 MiB). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/json.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/tls.h"
#include "core/trace.h"
#include "proxy/proxy_config.h"

/* A configured listener at run time: shared by the workers. */
struct listener_rt {
    const struct proxy_listener *cfg;
    struct tls_server_holder *tls; /* NULL: plain HTTP */
    struct tls_cert_pair *pairs;
    struct tls_server_config tls_cfg;
};

struct worker;
/* One server per listener per worker: a handler knows which it serves. */
struct served {
    struct worker *w;
    struct listener_rt *l;
    struct http1_server *server;
};

struct worker {
    struct loop *loop;
    struct served *served; /* one per listener */
    int draining;          /* servers not drained yet */
    struct http1_client *client;
    size_t *rr; /* next endpoint per cluster */
};

struct fwd {
    struct http1_exchange *x;
    struct worker *w;
    struct http1_client_call *call;
    const struct proxy_route *route;
    char upstream[64];
    char request_id[129];
};

static struct proxy_config *config;
static struct listener_rt *listeners;
static struct worker *workers;
static struct loop_thread *threads;
static int nworkers = 1;

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

static void reply_error(struct http1_exchange *x, const char *request_id, int status, const char *code,
                        const char *message)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    if (json_error_body(&b, code, message, request_id) < 0) {
        buf_free(&b);
        http1_respond_error(x, 503, "out_of_memory", "out of memory", request_id);
        return;
    }
    const struct http1_header h[] = {
        { STR_LIT("Content-Type"), STR_LIT("application/json") },
        { STR_LIT("X-Request-Id"), str_from_cstr(request_id) },
        { STR_LIT("x-strata-reason"), str_from_cstr(code) },
    };
    http1_respond_buf(x, status, h, 3, &b);
    buf_free(&b);
}

static void access_log(const struct fwd *f, int status)
{
    const struct http1_exchange *x = f->x;
    log_info("request", LOG_STRV("method", x->req.method), LOG_STRV("path", x->req.path),
             LOG_STR("route", f->route ? f->route->name : ""), LOG_STR("upstream", f->upstream),
             LOG_INT("status", status), LOG_STR("request_id", f->request_id));
}

static void upstream_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct fwd *f = arg;
    struct http1_exchange *x = f->x;
    f->call = NULL;
    x->on_abort = NULL;
    if (err) {
        int status = err == -ETIMEDOUT ? 504 : err == -EMSGSIZE || err == -EPROTO ? 502 : 503;
        const char *code = status == 504 ? "upstream_timeout" : status == 502 ? "bad_upstream_response"
                                                                              : "upstream_unavailable";
        const char *msg = status == 504 ? "the upstream did not answer within the route's timeout"
                          : status == 502 ? "the upstream's response was invalid or too large"
                                          : "the upstream could not be reached";
        access_log(f, status);
        reply_error(x, f->request_id, status, code, msg);
        return;
    }
    struct http1_header *h = arena_alloc(&x->arena, (resp->nheaders + 1) * sizeof *h);
    if (!h) {
        reply_error(x, f->request_id, 503, "out_of_memory", "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < resp->nheaders; i++) {
        struct str name = resp->headers[i].name;
        if (is_hop_by_hop(name) || named_by_connection(resp->headers, resp->nheaders, name) ||
            str_eq_nocase(name, STR_LIT("Content-Length")) || str_eq_nocase(name, STR_LIT("Date")))
            continue;
        /* The response's views die with the callback: copy into the request's arena. */
        char *nm = arena_strdup(&x->arena, name), *val = arena_strdup(&x->arena, resp->headers[i].value);
        if (!nm || !val) {
            reply_error(x, f->request_id, 503, "out_of_memory", "out of memory");
            return;
        }
        h[n++] = (struct http1_header){ str_from_cstr(nm), str_from_cstr(val) };
    }
    access_log(f, resp->status);
    http1_respond(x, resp->status, h, n, resp->body);
}

static void on_abort(struct http1_exchange *x)
{
    struct fwd *f = x->user;
    if (f && f->call) {
        http1_client_cancel(f->call);
        f->call = NULL;
    }
}

static int add(struct http1_header *h, size_t *n, struct str name, struct str value)
{
    h[(*n)++] = (struct http1_header){ name, value };
    return 0;
}

static void handle(struct http1_exchange *x, void *arg)
{
    struct served *sv = arg;
    struct worker *w = sv->w;
    struct arena *a = &x->arena;
    struct fwd *f = arena_alloc(a, sizeof *f);
    if (!f) {
        http1_respond_error(x, 503, "out_of_memory", "out of memory", NULL);
        return;
    }
    memset(f, 0, sizeof *f);
    f->x = x;
    f->w = w;
    x->user = f;
    const struct http1_header *rid = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("X-Request-Id"));
    if (rid && http1_request_id_is_valid(rid->value))
        str_copy_cstr(rid->value, f->request_id, sizeof f->request_id);
    else
        rand_hex(f->request_id, 16);
    /* RFC 9112 §3.2.2: in absolute form the authority is the target host. */
    struct str host = x->req.authority.n ? x->req.authority : x->req.host;
    f->route = proxy_route_match(config, host, x->req.path, x->req.method);
    if (!f->route) {
        access_log(f, 404);
        reply_error(x, f->request_id, 404, "route_not_found", "no route matches this host, path and method");
        return;
    }
    const struct proxy_cluster *cl = f->route->cluster;
    size_t ci = (size_t)(cl - config->clusters);
    const struct net_addr *ep = &cl->endpoints[w->rr[ci]++ % cl->nendpoints];
    net_addr_format(ep, f->upstream, sizeof f->upstream);

    /* Target: the path with the route's prefix rewritten, then the query. */
    struct str path = x->req.path;
    size_t tlen = path.n + x->req.query.n + (f->route->rewrite_prefix ? strlen(f->route->rewrite_prefix) : 0) + 2;
    char *target = arena_alloc(a, tlen + 1);
    if (!target) {
        reply_error(x, f->request_id, 503, "out_of_memory", "out of memory");
        return;
    }
    if (f->route->rewrite_prefix) {
        size_t pre = strlen(f->route->prefix);
        snprintf(target, tlen + 1, "%s%.*s", f->route->rewrite_prefix, (int)(path.n - pre), path.p + pre);
    } else {
        snprintf(target, tlen + 1, "%.*s", STR_FMT(path));
    }
    if (x->req.query.n) {
        size_t l = strlen(target);
        snprintf(target + l, tlen + 1 - l, "?%.*s", STR_FMT(x->req.query));
    }

    /* Headers: end-to-end fields pass; ours are set fresh. */
    struct http1_header *h = arena_alloc(a, (x->req.nheaders + 6) * sizeof *h);
    char peer[64], *xff, tp[TRACE_TRACEPARENT_LEN + 1];
    if (!h) {
        reply_error(x, f->request_id, 503, "out_of_memory", "out of memory");
        return;
    }
    net_addr_ip(&x->peer, peer, sizeof peer);
    size_t n = 0;
    struct str prior_xff = STR_NULL;
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
            str_eq_nocase(name, STR_LIT("Expect")))
            continue;
        add(h, &n, name, x->req.headers[i].value);
    }
    size_t xl = prior_xff.n + strlen(peer) + 3;
    xff = arena_alloc(a, xl);
    if (!xff) {
        reply_error(x, f->request_id, 503, "out_of_memory", "out of memory");
        return;
    }
    if (prior_xff.n)
        snprintf(xff, xl, "%.*s, %s", STR_FMT(prior_xff), peer);
    else
        snprintf(xff, xl, "%s", peer);
    add(h, &n, STR_LIT("X-Forwarded-For"), str_from_cstr(xff));
    add(h, &n, STR_LIT("X-Forwarded-Proto"), sv->l->tls ? STR_LIT("https") : STR_LIT("http"));
    add(h, &n, STR_LIT("X-Forwarded-Host"), host);
    add(h, &n, STR_LIT("X-Request-Id"), str_from_cstr(f->request_id));
    /* traceparent: the caller's trace continues with a new parent id; else one starts. */
    struct trace_ctx ctx;
    const struct http1_header *tph = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("traceparent"));
    if (!tph || trace_parse_traceparent(tph->value, &ctx) < 0) {
        rand_hex(ctx.trace_id, 16);
        ctx.flags = 1;
    }
    rand_hex(ctx.span_id, 8);
    char *tpa = arena_alloc(a, sizeof tp);
    if (tpa && trace_format_traceparent(&ctx, tpa) == 0)
        add(h, &n, STR_LIT("traceparent"), str_from_cstr(tpa));

    struct http1_client_request req = {
        .addr = *ep,
        .method = x->req.method,
        .target = str_from_cstr(target),
        .host = host,
        .headers = h,
        .nheaders = n,
        .body = x->body,
        .timeout_ms = f->route->timeout_ms ? f->route->timeout_ms : 15000,
    };
    int rc = http1_client_send(w->client, &req, upstream_done, f, &f->call);
    if (rc < 0) {
        access_log(f, 503);
        reply_error(x, f->request_id, 503, "upstream_unavailable", "the request could not be sent upstream");
        return;
    }
    x->on_abort = on_abort;
}

static void on_drained(void *arg)
{
    struct worker *w = arg;
    if (--w->draining == 0)
        loop_stop(w->loop);
}
static void drain_cb(void *arg)
{
    struct worker *w = arg;
    w->draining = (int)config->nlisteners;
    for (size_t i = 0; i < config->nlisteners; i++)
        http1_server_drain(w->served[i].server, on_drained, w);
}
static void on_signal(struct loop_signal *s, int signo)
{
    (void)s;
    log_info("draining", LOG_INT("signal", signo));
    for (int i = 0; i < nworkers; i++)
        loop_post(workers[i].loop, drain_cb, &workers[i]);
}

/* SIGHUP: read every TLS listener's certificate files again; new
 * connections get the new certificates, open ones keep theirs. A bad file
 * keeps the old ones and says why. */
static void on_reload(struct loop_signal *s, int signo)
{
    (void)s;
    (void)signo;
    for (size_t i = 0; i < config->nlisteners; i++) {
        struct listener_rt *l = &listeners[i];
        if (!l->tls)
            continue;
        struct tls_error err;
        if (tls_server_reload(l->tls, &l->tls_cfg, &err) < 0)
            log_error("certificate reload failed; the old certificates stay", LOG_STR("listener", l->cfg->name),
                      LOG_STR("error", err.msg));
        else
            log_info("certificates reloaded", LOG_STR("listener", l->cfg->name));
    }
}

static int wrap_tls(struct sock *sk, void *arg)
{
    struct listener_rt *l = arg;
    struct tls_server_ctx *ctx = tls_server_holder_get(l->tls);
    if (!ctx)
        return -ENOMEM;
    int rc = tls_sock_server(ctx, sk);
    tls_server_ctx_unref(ctx);
    return rc;
}
static void *worker_main(void *arg)
{
    loop_run(((struct worker *)arg)->loop);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            nworkers = atoi(argv[++i]);
            if (nworkers < 1 || nworkers > 64) {
                fprintf(stderr, "strata-proxy: --workers: expected 1..64, got %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: strata-proxy --config FILE [--workers N]\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "strata-proxy: --config FILE is required\n");
        return 2;
    }
    char err[512];
    if (proxy_config_load(path, &config, err, sizeof err) < 0) {
        fprintf(stderr, "strata-proxy: %s\n", err);
        return 2;
    }
    log_init("strata-proxy");
    listeners = calloc(config->nlisteners, sizeof *listeners);
    for (size_t j = 0; j < config->nlisteners; j++) {
        struct listener_rt *l = &listeners[j];
        const struct proxy_listener *lc = &config->listeners[j];
        l->cfg = lc;
        if (!lc->ncerts)
            continue;
        l->pairs = calloc(lc->ncerts, sizeof *l->pairs);
        for (size_t k = 0; k < lc->ncerts; k++)
            l->pairs[k] = (struct tls_cert_pair){ .cert_file = lc->cert_files[k], .key_file = lc->key_files[k] };
        l->tls_cfg = (struct tls_server_config){ .certs = l->pairs, .ncerts = lc->ncerts };
        struct tls_error terr;
        l->tls = tls_server_holder_new(&l->tls_cfg, &terr);
        if (!l->tls) {
            fprintf(stderr, "strata-proxy: %s: listener %s: %s\n", path, lc->name, terr.msg);
            return 2;
        }
    }
    struct loop *main_loop = loop_new();
    struct loop_signal sigint, sigterm, sighup;
    loop_signal_start(main_loop, &sigint, SIGINT, on_signal, NULL);
    loop_signal_start(main_loop, &sigterm, SIGTERM, on_signal, NULL);
    loop_signal_start(main_loop, &sighup, SIGHUP, on_reload, NULL);
    signal(SIGPIPE, SIG_IGN);
    workers = calloc((size_t)nworkers, sizeof *workers);
    threads = calloc((size_t)nworkers, sizeof *threads);
    struct net_listen_opts lo = { .reuseport = true };
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        w->loop = loop_new();
        w->client = http1_client_new(w->loop, NULL);
        w->rr = calloc(config->nclusters, sizeof *w->rr);
        w->served = calloc(config->nlisteners, sizeof *w->served);
        for (size_t j = 0; j < config->nlisteners; j++) {
            struct proxy_listener *l = &config->listeners[j];
            struct served *sv = &w->served[j];
            sv->w = w;
            sv->l = &listeners[j];
            struct http1_server_config sc = { .handler = handle, .handler_arg = sv };
            if (sv->l->tls) {
                sc.wrap = wrap_tls;
                sc.wrap_arg = sv->l;
            }
            sv->server = http1_server_new(w->loop, &sc);
            int fd, rc = net_listen(&l->addr, &lo, &fd);
            if (rc < 0) {
                char a[80];
                fprintf(stderr, "strata-proxy: listener %s: cannot listen on %s: %s\n", l->name,
                        net_addr_format(&l->addr, a, sizeof a), strerror(-rc));
                return 1;
            }
            if (net_addr_port(&l->addr) == 0)
                net_local_addr(fd, &l->addr); /* the other workers join the port the first got */
            http1_server_listen_fd(sv->server, fd);
        }
    }
    for (size_t j = 0; j < config->nlisteners; j++) {
        char a[80];
        log_info("listening", LOG_STR("listener", config->listeners[j].name),
                 LOG_BOOL("tls", listeners[j].tls != NULL),
                 LOG_STR("address", net_addr_format(&config->listeners[j].addr, a, sizeof a)),
                 LOG_INT("workers", nworkers), LOG_UINT("routes", config->nroutes));
    }
    for (int i = 0; i < nworkers; i++)
        pthread_create(&threads[i].id, NULL, worker_main, &workers[i]);
    /* The main thread only waits for signals, and for the workers to end. */
    loop_run_until_joined(main_loop, threads, (size_t)nworkers);
    for (int i = 0; i < nworkers; i++) {
        for (size_t j = 0; j < config->nlisteners; j++)
            http1_server_free(workers[i].served[j].server);
        http1_client_free(workers[i].client);
        loop_run_once(workers[i].loop, 0);
        loop_free(workers[i].loop);
        free(workers[i].rr);
        free(workers[i].served);
    }
    free(workers);
    free(threads);
    for (size_t j = 0; j < config->nlisteners; j++) {
        tls_server_holder_free(listeners[j].tls);
        free(listeners[j].pairs);
    }
    free(listeners);
    proxy_config_free(config);
    loop_free(main_loop);
    log_info("stopped");
    return 0;
}
