/* strata-proxy — the proxy engine in the gateway role (issue 5).
 *
 *   strata-proxy --config FILE [--workers N]
 *   strata-proxy --from 127.0.0.1:PORT --to http://HOST:PORT [--cert FILE --key FILE] [--workers N]
 *   strata-proxy --control http://HOST:PORT --node ID --token-file FILE --cert-dir DIR [--workers N]
 *
 * Main thread: signals, the admin listener, health checks, reloads. One
 * worker thread per --workers (default: one per core) with its own loop,
 * SO_REUSEPORT listeners and upstream pools; the request path is engine.c.
 *
 * SIGTERM/SIGINT or POST /drain: readiness fails, accepting stops, requests
 * in flight finish, idle keep-alives close, exit 0. SIGHUP or POST /reload:
 * the config file is read again and swapped in atomically (listener
 * changes need a restart), and TLS certificate files are reloaded. A bad
 * file changes nothing and says why. With --control the certificate and
 * the config come from strata-control (control_client.c) and every new
 * config is swapped in as a reload would. Usage: docs/gateway.md. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "proxy/control_client.h"
#include "proxy/engine.h"
#include "proxy/health.h"
#include "proxy/ratelimit.h"
#include "proxy/resilience.h"
#include "proxy/waf.h"

static struct engine engine;
static struct proxy_config *boot;    /* the first config: listeners come from it */
static struct proxy_config *current; /* the config in force (main thread's reference) */
static const char *config_path;      /* NULL in quick mode */
static struct listener_rt *listeners;
static size_t nlisteners;
static struct worker *workers;
static struct loop_thread *threads;
static int nworkers;
static struct loop *main_loop;
static struct http1_server *admin;
static struct health *health;
static uint64_t config_loaded_at;
static uint64_t reloads_ok, reloads_failed;
static struct control_client *control; /* --control: config and certificate from strata-control */

/* ---- drain ------------------------------------------------------------------ */

/* Drain in two phases. Phase 1: every listener but the outbound ones
 * (inbound traffic stops first). Phase 2: the outbound listeners — at once
 * without an app, else once the app has exited (its ready_url refuses
 * connections) or app.exit_wait_ms passed: the app keeps reaching its
 * dependencies through the sidecar while it shuts down, which is the
 * shutdown-ordering race Istio users hit. */
static void on_drained(void *arg)
{
    struct worker *w = arg;
    if (--w->draining == 0 && w->drain_phase == 2)
        loop_stop(w->loop);
}
static void drain_servers(struct worker *w, bool outbound)
{
    for (size_t i = 0; i < w->nserved; i++)
        if ((w->served[i].l->cfg->role == PROXY_ROLE_OUTBOUND) == outbound) {
            w->draining++;
            http1_server_drain(w->served[i].server, on_drained, w);
        }
}
static void drain_phase1_cb(void *arg)
{
    struct worker *w = arg;
    w->drain_phase = 1;
    w->draining++; /* held until phase 2 starts */
    drain_servers(w, false);
}
static void drain_phase2_cb(void *arg)
{
    struct worker *w = arg;
    drain_servers(w, true);
    w->drain_phase = 2;
    on_drained(w); /* the hold of phase 1 */
}
static void drain_outbound(void)
{
    for (int i = 0; i < nworkers; i++)
        loop_post(workers[i].loop, drain_phase2_cb, &workers[i]);
}

/* GET app.ready_url, as a request for http1_client. False: unusable URL. */
static bool app_ready_request(struct http1_client_request *req, uint32_t timeout_ms)
{
    struct http1_url u;
    char hp[300];
    if (http1_url_parse(str_from_cstr(current->app_ready_url), &u) < 0 ||
        snprintf(hp, sizeof hp, "%.*s:%u", STR_FMT(u.host), u.port) >= (int)sizeof hp)
        return false;
    *req = (struct http1_client_request){ .method = STR_LIT("GET"), .target = u.path, .host = u.host,
                                          .timeout_ms = timeout_ms };
    return net_addr_parse(str_from_cstr(hp), false, &req->addr) == 0;
}

/* Phase 2 waits for the app: probe its ready_url until it refuses. */
static struct http1_client *app_client;
static struct loop_timer app_exit_timer;
static uint64_t app_exit_deadline;
static void app_exit_probe(struct loop_timer *t);
static void app_exit_done(int err, const struct http1_client_response *resp, void *arg)
{
    (void)resp;
    (void)arg;
    if (err == -ECONNREFUSED || loop_now_ms(main_loop) >= app_exit_deadline) {
        log_info(err == -ECONNREFUSED ? "the app has exited: draining outbound" : "the app is still up: draining outbound anyway");
        drain_outbound();
        return;
    }
    loop_timer_start(&app_exit_timer, 100);
}
static void app_exit_probe(struct loop_timer *t)
{
    (void)t;
    struct http1_client_request req;
    if (app_ready_request(&req, 500) && http1_client_send(app_client, &req, app_exit_done, NULL, NULL) == 0)
        return;
    drain_outbound();
}

static void begin_drain(const char *why)
{
    if (atomic_exchange(&engine.draining, 1))
        return;
    log_info("draining", LOG_STR("cause", why));
    control_client_free(control); /* no config swaps while the workers wind down */
    control = NULL;
    health_stop(health);
    health = NULL;
    for (int i = 0; i < nworkers; i++)
        loop_post(workers[i].loop, drain_phase1_cb, &workers[i]);
    bool has_outbound = false;
    for (size_t i = 0; i < nlisteners; i++)
        has_outbound |= listeners[i].cfg->role == PROXY_ROLE_OUTBOUND;
    if (has_outbound && current->app_ready_url && (app_client = http1_client_new(main_loop, NULL))) {
        app_exit_deadline = loop_now_ms(main_loop) + current->app_exit_wait_ms;
        loop_timer_init(main_loop, &app_exit_timer, app_exit_probe, NULL);
        loop_timer_start(&app_exit_timer, 0);
    } else {
        drain_outbound();
    }
}
static void on_signal(struct loop_signal *s, int signo)
{
    (void)s;
    begin_drain(signo == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- reload ------------------------------------------------------------------ */

struct adopt {
    struct worker *w;
    struct proxy_config *c;
};
static void adopt_cb(void *arg)
{
    struct adopt *a = arg;
    engine_worker_adopt(a->w, a->c);
    free(a);
}

static bool same_listeners(const struct proxy_config *a, const struct proxy_config *b)
{
    if (a->nlisteners != b->nlisteners)
        return false;
    for (size_t i = 0; i < a->nlisteners; i++) {
        const struct proxy_listener *x = &a->listeners[i], *y = &b->listeners[i];
        char ax[80], ay[80];
        if (strcmp(x->name, y->name) || x->ncerts != y->ncerts || x->role != y->role ||
            x->mtls_mode != y->mtls_mode || !!x->client_ca_file != !!y->client_ca_file ||
            (x->client_ca_file && strcmp(x->client_ca_file, y->client_ca_file)) ||
            x->redirect_https_port != y->redirect_https_port || x->hsts_max_age_s != y->hsts_max_age_s ||
            x->hsts_subdomains != y->hsts_subdomains || x->max_connections != y->max_connections ||
            x->max_connections_per_ip != y->max_connections_per_ip || x->header_timeout_ms != y->header_timeout_ms ||
            x->idle_timeout_ms != y->idle_timeout_ms || x->body_timeout_ms != y->body_timeout_ms ||
            x->max_header_bytes != y->max_header_bytes || x->max_body_bytes != y->max_body_bytes ||
            strcmp(net_addr_format(&x->addr, ax, sizeof ax), net_addr_format(&y->addr, ay, sizeof ay)))
            return false;
        for (size_t k = 0; k < x->ncerts; k++)
            if (strcmp(x->cert_files[k], y->cert_files[k]) || strcmp(x->key_files[k], y->key_files[k]))
                return false;
    }
    return true;
}

/* Run-time resilience state for every cluster of c, carrying outlier
 * verdicts over from prev's cluster of the same name. */
static int prepare_resilience(struct proxy_config *c, const struct proxy_config *prev, char *err, size_t errsz)
{
    for (size_t i = 0; i < c->nclusters; i++) {
        struct proxy_cluster *k = &c->clusters[i];
        if (!(k->resil = resil_cluster_new(k))) {
            snprintf(err, errsz, "out of memory");
            return -ENOMEM;
        }
        for (size_t j = 0; prev && j < prev->nclusters; j++)
            if (!strcmp(prev->clusters[j].name, k->name) && prev->clusters[j].resil) {
                resil_cluster_inherit(k->resil, prev->clusters[j].resil);
                k->ejections_exported = prev->clusters[j].ejections_exported;
            }
    }
    return 0;
}

/* Outlier detection's clock: re-admissions and multiplier decay. */
static struct loop_timer resil_timer;
static struct metrics_family *m_ejected, *m_ejections;
static void resil_tick_cb(struct loop_timer *t)
{
    uint64_t now = loop_now_ms(main_loop);
    for (size_t i = 0; current && i < current->nclusters; i++) {
        struct proxy_cluster *k = &current->clusters[i];
        if (!k->resil)
            continue;
        resil_tick(k->resil, now);
        if (!k->outlier.enabled)
            continue;
        struct resil_stats st;
        resil_stats(k->resil, &st);
        metrics_gauge_set(metrics_gauge_with(m_ejected, k->name), (double)st.ejected);
        /* The cumulative count survives reloads (inherited): export the growth. */
        if (st.ejections > k->ejections_exported) {
            metrics_counter_add(metrics_counter_with(m_ejections, k->name), st.ejections - k->ejections_exported);
            k->ejections_exported = st.ejections;
        }
    }
    loop_timer_start(t, 100);
}

/* Loads WAF rule sets for every (paranoia, threshold) the config uses. */
static int prepare_waf(const struct proxy_config *c, char *err, size_t errsz)
{
    if (!c->uses_waf)
        return 0;
    if (!engine.waf && !(engine.waf = waf_new(&c->waf, err, errsz)))
        return -EINVAL;
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct proxy_waf *w = &c->routes[i].waf;
        if (w->mode != PROXY_WAF_OFF && waf_prepare(engine.waf, w->paranoia, w->anomaly_threshold, err, errsz) < 0)
            return -EINVAL;
    }
    return 0;
}

static void reload_certs(void)
{
    for (size_t i = 0; i < nlisteners; i++) {
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

/* Swaps in c (loaded from source; the reference is taken over). 0, or
 * <0 with err set and nothing changed. */
static int swap_config(struct proxy_config *c, const char *source, char *err, size_t errsz)
{
    if (!same_listeners(boot, c)) {
        snprintf(err, errsz, "%s: $.listeners: listeners changed (address, role, TLS, mTLS mode, limits); a restart "
                            "is needed to apply that, nothing was changed", source);
        proxy_config_unref(c);
        goto fail;
    }
    if (prepare_waf(c, err, errsz) < 0 || prepare_resilience(c, current, err, errsz) < 0) {
        proxy_config_unref(c);
        goto fail;
    }
    reload_certs(); /* the listeners' certificate files (same paths: a rotation) */
    struct health *h = atomic_load(&engine.draining) ? NULL : health_start(main_loop, c, current);
    health_stop(health);
    health = h;
    for (int i = 0; i < nworkers; i++) {
        struct adopt *a = malloc(sizeof *a);
        if (!a)
            continue; /* that worker keeps the old config until the next reload */
        *a = (struct adopt){ &workers[i], proxy_config_ref(c) };
        if (loop_post(workers[i].loop, adopt_cb, a) < 0) {
            proxy_config_unref(c);
            free(a);
        }
    }
    proxy_config_unref(current);
    current = c;
    config_loaded_at = (uint64_t)time(NULL);
    reloads_ok++;
    log_info("config reloaded", LOG_STR("version", c->version), LOG_UINT("routes", c->nroutes),
             LOG_UINT("clusters", c->nclusters));
    return 0;
fail:
    reloads_failed++;
    log_error("config reload failed; the config in force stays", LOG_STR("error", err));
    return -EINVAL;
}

/* Reads the config file again and swaps it in. 0, or <0 with err set and
 * nothing changed. */
static int reload(char *err, size_t errsz)
{
    if (!config_path) {
        reload_certs();
        snprintf(err, errsz, "%s has no config file to reload (certificates were reloaded)",
                 control ? "--control" : "quick mode");
        return -EINVAL;
    }
    struct proxy_config *c;
    if (proxy_config_load(config_path, &c, err, errsz) < 0) {
        reloads_failed++;
        log_error("config reload failed; the config in force stays", LOG_STR("error", err));
        return -EINVAL;
    }
    return swap_config(c, config_path, err, errsz);
}

/* --control: a config from the control plane, applied as a reload. */
static int control_apply(const char *version, struct str json, void *arg)
{
    (void)arg;
    char name[300], err[512];
    snprintf(name, sizeof name, "control plane config %s", version);
    struct proxy_config *c;
    if (proxy_config_parse(name, json, &c, err, sizeof err) < 0) {
        reloads_failed++;
        log_error("config reload failed; the config in force stays", LOG_STR("error", err));
        return -EINVAL;
    }
    return swap_config(c, name, err, sizeof err);
}
static void control_certs(void *arg)
{
    (void)arg;
    reload_certs();
}

/* --control: certificate, then the first config, from the control plane. */
static int control_boot(const struct control_client_config *cc)
{
    char err[512];
    char *json = NULL;
    size_t len = 0;
    main_loop = loop_new();
    if (!main_loop || control_client_new(main_loop, cc, &control, err, sizeof err) < 0) {
        fprintf(stderr, "strata-proxy: %s\n", main_loop ? err : "out of memory");
        return 2;
    }
    int rc = control_client_bootstrap(control, &json, &len, err, sizeof err);
    if (rc == 0)
        rc = proxy_config_parse("control plane config", str_make(json, len), &boot, err, sizeof err);
    free(json);
    if (rc < 0) {
        fprintf(stderr, "strata-proxy: %s\n", err);
        return 1;
    }
    return 0;
}

static void on_hup(struct loop_signal *s, int signo)
{
    (void)s;
    (void)signo;
    char err[512];
    reload(err, sizeof err);
}

/* ---- admin listener ------------------------------------------------------------ */

static void admin_json(struct http1_exchange *x, int status, json_t *o)
{
    struct buf b;
    buf_init(&b, 16u << 20);
    if (!o || json_dump_to_buf(o, &b) < 0) {
        json_decref(o);
        buf_free(&b);
        http1_respond_error(x, 503, "out_of_memory", "out of memory", NULL);
        return;
    }
    json_decref(o);
    const struct http1_header h[] = { { STR_LIT("Content-Type"), STR_LIT("application/json") } };
    http1_respond_buf(x, status, h, 1, &b);
}

static json_t *config_summary(void)
{
    json_t *eps = json_array();
    for (size_t i = 0; i < current->nclusters; i++)
        for (size_t j = 0; j < current->clusters[i].nendpoints; j++) {
            struct proxy_endpoint *e = &current->clusters[i].endpoints[j];
            json_array_append_new(eps, json_pack("{s:s, s:s, s:b, s:i}", "cluster", current->clusters[i].name,
                                                 "endpoint", e->name, "healthy", atomic_load(&e->healthy),
                                                 "active", (json_int_t)atomic_load(&e->active)));
        }
    return json_pack("{s:s, s:I, s:i, s:i, s:o, s:I, s:I}", "version", current->version, "loaded_at",
                     (json_int_t)config_loaded_at, "routes", (int)current->nroutes, "clusters",
                     (int)current->nclusters, "endpoints", eps, "reloads", (json_int_t)reloads_ok,
                     "reloads_failed", (json_int_t)reloads_failed);
}

/* Sidecar readiness follows the app's: GET app.ready_url, 2xx → ready. */
static struct http1_client *ready_client;
static void app_ready_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct http1_exchange *x = arg;
    x->on_abort = NULL;
    bool ok = !err && resp->status >= 200 && resp->status < 300;
    admin_json(x, ok ? 200 : 503, json_pack("{s:s}", "status", ok ? "ready" : "app_not_ready"));
}
static void app_ready_abort(struct http1_exchange *x)
{
    if (x->user)
        http1_client_cancel(x->user);
}
static void app_readiness(struct http1_exchange *x)
{
    struct http1_client_call *call = NULL;
    struct http1_client_request req;
    if (!ready_client)
        ready_client = http1_client_new(main_loop, NULL);
    if (ready_client && app_ready_request(&req, 1000) &&
        http1_client_send(ready_client, &req, app_ready_done, x, &call) == 0) {
        x->user = call;
        x->on_abort = app_ready_abort;
        return;
    }
    admin_json(x, 503, json_pack("{s:s}", "status", "app_not_ready"));
}

static void admin_handle(struct http1_exchange *x, void *arg)
{
    (void)arg;
    struct str p = x->req.path, m = x->req.method;
    bool get = str_eq(m, STR_LIT("GET")), post = str_eq(m, STR_LIT("POST"));
    if (get && str_eq(p, STR_LIT("/metrics"))) {
        struct buf b;
        buf_init(&b, 64u << 20);
        metrics_render(metrics_default(), &b);
        const struct http1_header h[] = { { STR_LIT("Content-Type"), STR_LIT("text/plain; version=0.0.4") } };
        http1_respond_buf(x, 200, h, 1, &b);
    } else if (get && str_eq(p, STR_LIT("/healthz"))) {
        admin_json(x, 200, json_pack("{s:s}", "status", "ok"));
    } else if (get && str_eq(p, STR_LIT("/readyz"))) {
        bool draining = atomic_load(&engine.draining);
        if (draining || !current->app_ready_url)
            admin_json(x, draining ? 503 : 200, json_pack("{s:s}", "status", draining ? "draining" : "ready"));
        else
            app_readiness(x);
    } else if (get && str_eq(p, STR_LIT("/config"))) {
        admin_json(x, 200, config_summary());
    } else if (post && str_eq(p, STR_LIT("/reload"))) {
        char err[512];
        if (reload(err, sizeof err) < 0)
            http1_respond_error(x, 400, "config_invalid", err, NULL);
        else
            admin_json(x, 200, config_summary());
    } else if (post && str_eq(p, STR_LIT("/drain"))) {
        admin_json(x, 202, json_pack("{s:s}", "status", "draining"));
        begin_drain("admin");
    } else {
        http1_respond_error(x, 404, "not_found", "admin endpoints: GET /metrics /healthz /readyz /config, "
                                                 "POST /reload /drain", NULL);
    }
}

/* ---- workers ------------------------------------------------------------------- */

/* TLS on accept; a PERMISSIVE inbound listener sniffs the first byte
 * (TLS or plaintext on one port). */
static int wrap_tls(struct sock *sk, void *arg)
{
    struct listener_rt *l = arg;
    struct tls_server_ctx *ctx = tls_server_holder_get(l->tls);
    if (!ctx)
        return -ENOMEM;
    bool permissive = l->cfg->role == PROXY_ROLE_INBOUND && l->cfg->mtls_mode == PROXY_MTLS_PERMISSIVE;
    int rc = permissive ? tls_sock_server_sniff(ctx, sk) : tls_sock_server(ctx, sk);
    tls_server_ctx_unref(ctx);
    return rc;
}

static bool conn_open(const struct net_addr *peer, void *arg)
{
    struct listener_rt *l = arg;
    return conn_limits_acquire(engine.conn_limits, peer, l->cfg->max_connections_per_ip);
}
static void conn_closed(const struct net_addr *peer, void *arg)
{
    (void)arg;
    conn_limits_release(engine.conn_limits, peer);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct trace_config tc;
    trace_config_init(&tc);
    trace_config_from_env(&tc, NULL);
    const char *name = getenv("OTEL_SERVICE_NAME");
    if (!name || !*name) /* the control plane names its proxies (gateway, sidecar) */
        tc.service_name = "strata-proxy";
    w->tracer = trace_tracer_new(w->loop, &tc);
    loop_run(w->loop);
    if (w->tracer) {
        trace_tracer_flush(w->tracer, 1000, NULL, NULL);
        trace_tracer_free(w->tracer);
        w->tracer = NULL;
    }
    return NULL;
}

static double active_connections(void *arg)
{
    (void)arg;
    double n = 0;
    for (int i = 0; i < nworkers; i++)
        for (size_t j = 0; j < workers[i].nserved; j++)
            n += (double)__atomic_load_n(&http1_server_stats(workers[i].served[j].server)->active, __ATOMIC_RELAXED);
    return n;
}

/* TLS handshake counters; arg is the offset of the field in the stats. */
static double tls_stat(void *arg)
{
    struct tls_handshake_stats st;
    tls_server_handshake_stats(&st);
    return (double)*(const uint64_t *)((const char *)&st + (size_t)arg);
}

static int usage(FILE *f)
{
    fprintf(f, "usage: strata-proxy --config FILE [--workers N]\n"
               "       strata-proxy [--from HOST:PORT] --to http://HOST:PORT [--cert FILE --key FILE] [--workers N]\n"
               "       strata-proxy --control URL --node ID --token-file FILE --cert-dir DIR [--workers N]\n"
               "\n"
               "  --config FILE   the proxy config (JSON; docs/gateway.md); SIGHUP reloads it\n"
               "  --control URL   take the config and the certificate from strata-control at http://HOST:PORT\n"
               "                  (numeric host): new configs by long-poll, the certificate renewed at half\n"
               "                  its lifetime (docs/mesh.md)\n"
               "  --node ID       with --control: this proxy's id\n"
               "  --token-file F  with --control: the file holding this proxy's bearer token\n"
               "  --cert-dir DIR  with --control: where key.pem, cert.pem and ca.pem are written\n"
               "  --from ADDR     quick mode: listen on ADDR (default 127.0.0.1:8080, :8443 with --cert)\n"
               "  --to URL        quick mode: the upstream, http://HOST:PORT (numeric host)\n"
               "  --cert, --key   quick mode: serve TLS with this PEM certificate and key\n"
               "  --workers N     worker threads, 1..64 (default: one per core)\n");
    return f == stdout ? 0 : 2;
}

static int start_listeners(void)
{
    nlisteners = boot->nlisteners;
    listeners = calloc(nlisteners, sizeof *listeners);
    if (!listeners)
        return -ENOMEM;
    for (size_t j = 0; j < nlisteners; j++) {
        struct listener_rt *l = &listeners[j];
        const struct proxy_listener *lc = &boot->listeners[j];
        l->cfg = lc;
        if (!lc->ncerts)
            continue;
        l->pairs = calloc(lc->ncerts, sizeof *l->pairs);
        if (!l->pairs)
            return -ENOMEM;
        for (size_t k = 0; k < lc->ncerts; k++)
            l->pairs[k] = (struct tls_cert_pair){ .cert_file = lc->cert_files[k], .key_file = lc->key_files[k] };
        l->tls_cfg = (struct tls_server_config){ .certs = l->pairs, .ncerts = lc->ncerts };
        if (lc->role == PROXY_ROLE_INBOUND) {
            /* mTLS: STRICT refuses a peer without a certificate chained to
             * the bundle; PERMISSIVE also takes plaintext (sniffed). */
            l->tls_cfg.client_auth = lc->mtls_mode == PROXY_MTLS_STRICT ? TLS_CLIENT_AUTH_REQUIRED
                                                                        : TLS_CLIENT_AUTH_OPTIONAL;
            l->tls_cfg.client_ca_file = lc->client_ca_file;
        }
        struct tls_error terr;
        l->tls = tls_server_holder_new(&l->tls_cfg, &terr);
        if (!l->tls) {
            fprintf(stderr, "strata-proxy: %s: $.listeners[%zu].tls: %s\n",
                    config_path ? config_path : control ? "control plane config" : "--cert", j,
                    terr.msg);
            return -EINVAL;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *from = NULL, *to = NULL, *cert = NULL, *key = NULL;
    struct control_client_config cc = { 0 };
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    nworkers = n > 0 && n <= 64 ? (int)n : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout);
        if (i + 1 >= argc)
            return usage(stderr);
        if (!strcmp(a, "--config")) {
            config_path = argv[++i];
        } else if (!strcmp(a, "--from")) {
            from = argv[++i];
        } else if (!strcmp(a, "--to")) {
            to = argv[++i];
        } else if (!strcmp(a, "--cert")) {
            cert = argv[++i];
        } else if (!strcmp(a, "--key")) {
            key = argv[++i];
        } else if (!strcmp(a, "--control")) {
            cc.url = argv[++i];
        } else if (!strcmp(a, "--node")) {
            cc.node = argv[++i];
        } else if (!strcmp(a, "--token-file")) {
            cc.token_file = argv[++i];
        } else if (!strcmp(a, "--cert-dir")) {
            cc.cert_dir = argv[++i];
        } else if (!strcmp(a, "--workers")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "strata-proxy: --workers: expected 1..64, got \"%s\"\n", argv[i]);
                return 2;
            }
            nworkers = (int)v;
        } else {
            return usage(stderr);
        }
    }
    char err[512];
    if (config_path && (from || to || cert || key)) {
        fprintf(stderr, "strata-proxy: --config: not with --from/--to/--cert/--key\n");
        return 2;
    }
    if (cc.url && (config_path || from || to || cert || key)) {
        fprintf(stderr, "strata-proxy: --control: not with --config/--from/--to/--cert/--key\n");
        return 2;
    }
    if (!cc.url && (cc.node || cc.token_file || cc.cert_dir)) {
        fprintf(stderr, "strata-proxy: --node, --token-file and --cert-dir go with --control\n");
        return 2;
    }
    log_init("strata-proxy");
    if (cc.url) {
        int rc = control_boot(&cc);
        if (rc)
            return rc;
    } else if (config_path) {
        if (proxy_config_load(config_path, &boot, err, sizeof err) < 0) {
            fprintf(stderr, "strata-proxy: %s\n", err);
            return 2;
        }
    } else if (to) {
        if (!from) /* the gateway's default ports */
            from = cert ? "127.0.0.1:8443" : "127.0.0.1:8080";
        if (proxy_config_quick(from, to, cert, key, &boot, err, sizeof err) < 0) {
            fprintf(stderr, "strata-proxy: %s\n", err);
            return 2;
        }
    } else {
        fprintf(stderr, "strata-proxy: %s is required\n", from ? "--to" : "--config FILE (or --to, or --control)");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    engine_metrics_init();
    rl_metrics_init();
    engine.rl_local = rl_local_new(100000);
    engine.conn_limits = conn_limits_new();
    if (!engine.rl_local || !engine.conn_limits) {
        fprintf(stderr, "strata-proxy: out of memory\n");
        return 1;
    }
    if (prepare_waf(boot, err, sizeof err) < 0) {
        fprintf(stderr, "strata-proxy: waf: %s\n", err);
        return 2;
    }
    if (prepare_resilience(boot, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "strata-proxy: %s\n", err);
        return 1;
    }
    if (start_listeners() < 0)
        return 2;
    current = proxy_config_ref(boot);
    config_loaded_at = (uint64_t)time(NULL);
    if (!main_loop)
        main_loop = loop_new();
    struct loop_signal sigint, sigterm, sighup;
    loop_signal_start(main_loop, &sigint, SIGINT, on_signal, NULL);
    loop_signal_start(main_loop, &sigterm, SIGTERM, on_signal, NULL);
    loop_signal_start(main_loop, &sighup, SIGHUP, on_hup, NULL);
    workers = calloc((size_t)nworkers, sizeof *workers);
    threads = calloc((size_t)nworkers, sizeof *threads);
    if (!main_loop || !workers || !threads) {
        fprintf(stderr, "strata-proxy: out of memory\n");
        return 1;
    }
    struct net_listen_opts lo = { .reuseport = true };
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        if (engine_worker_init(w, &engine, loop_new(), proxy_config_ref(current), i) < 0) {
            fprintf(stderr, "strata-proxy: out of memory\n");
            return 1;
        }
        w->nserved = nlisteners;
        w->served = calloc(nlisteners, sizeof *w->served);
        for (size_t j = 0; j < nlisteners; j++) {
            struct proxy_listener *l = &boot->listeners[j];
            struct served *sv = &w->served[j];
            sv->w = w;
            sv->l = &listeners[j];
            struct http1_server_config sc = {
                .handler = engine_handle,
                .handler_arg = sv,
                .on_complete = engine_complete,
                .max_connections = l->max_connections,
                .header_timeout_ms = l->header_timeout_ms,
                .idle_timeout_ms = l->idle_timeout_ms,
                .body_timeout_ms = l->body_timeout_ms,
                .max_body = l->max_body_bytes,
                .limits.max_header_bytes = l->max_header_bytes,
            };
            if (sv->l->tls) {
                sc.wrap = wrap_tls;
                sc.wrap_arg = sv->l;
            }
            if (l->max_connections_per_ip) {
                sc.conn_open = conn_open;
                sc.conn_closed = conn_closed;
                sc.conn_arg = sv->l;
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
    if (boot->admin_enabled) {
        admin = http1_server_new(main_loop, &(struct http1_server_config){ .handler = admin_handle });
        int fd, rc = admin ? net_listen(&boot->admin_addr, &(struct net_listen_opts){ 0 }, &fd) : -ENOMEM;
        if (rc < 0) {
            char a[80];
            fprintf(stderr, "strata-proxy: $.admin.address: cannot listen on %s: %s\n",
                    net_addr_format(&boot->admin_addr, a, sizeof a), strerror(-rc));
            return 1;
        }
        if (net_addr_port(&boot->admin_addr) == 0)
            net_local_addr(fd, &boot->admin_addr);
        http1_server_listen_fd(admin, fd);
        char a[80];
        log_info("admin listening", LOG_STR("address", net_addr_format(&boot->admin_addr, a, sizeof a)));
    }
    metrics_gauge_func(metrics_default(), "strata_proxy_active_connections", "Client connections open, all listeners.",
                       active_connections, NULL);
    metrics_counter_func(metrics_default(), "strata_proxy_tls_handshakes_total",
                         "TLS handshakes completed on the listeners.", tls_stat,
                         (void *)offsetof(struct tls_handshake_stats, completed));
    metrics_counter_func(metrics_default(), "strata_proxy_tls_resumptions_total",
                         "TLS handshakes that resumed a session (ticket).", tls_stat,
                         (void *)offsetof(struct tls_handshake_stats, resumed));
    metrics_counter_func(metrics_default(), "strata_proxy_tls_handshake_failures_total",
                         "TLS handshakes that failed (protocol, version, certificate or cipher mismatch).", tls_stat,
                         (void *)offsetof(struct tls_handshake_stats, failed));
    health = health_start(main_loop, current, NULL);
    metrics_register_gauge(metrics_default(), "strata_proxy_outlier_ejected",
                           "Endpoints ejected by outlier detection now, by cluster.", METRICS_LABELS("cluster"),
                           &m_ejected);
    metrics_register_counter(metrics_default(), "strata_proxy_outlier_ejections_total",
                             "Endpoint ejections by outlier detection, by cluster.", METRICS_LABELS("cluster"),
                             &m_ejections);
    loop_timer_init(main_loop, &resil_timer, resil_tick_cb, NULL);
    loop_timer_start(&resil_timer, 100);
    for (size_t j = 0; j < nlisteners; j++) {
        char a[80];
        log_info("listening", LOG_STR("listener", boot->listeners[j].name), LOG_BOOL("tls", listeners[j].tls != NULL),
                 LOG_STR("address", net_addr_format(&boot->listeners[j].addr, a, sizeof a)),
                 LOG_INT("workers", nworkers), LOG_UINT("routes", boot->nroutes), LOG_STR("version", boot->version));
    }
    if (control)
        control_client_start(control, control_apply, control_certs, NULL);
    for (int i = 0; i < nworkers; i++)
        pthread_create(&threads[i].id, NULL, worker_main, &workers[i]);
    /* The main thread serves signals, admin and health checks until the workers end. */
    loop_run_until_joined(main_loop, threads, (size_t)nworkers);
    loop_timer_stop(&resil_timer);
    health_stop(health);
    for (int i = 0; i < nworkers; i++) {
        for (size_t j = 0; j < workers[i].nserved; j++)
            http1_server_free(workers[i].served[j].server);
        engine_worker_fini(&workers[i]);
        loop_run_once(workers[i].loop, 0);
        loop_free(workers[i].loop);
        free(workers[i].served);
    }
    if (admin) {
        http1_server_close_all(admin);
        http1_server_free(admin);
    }
    http1_client_free(app_client);
    http1_client_free(ready_client);
    control_client_free(control);
    loop_run_once(main_loop, 0); /* closed connections are freed by deferred callbacks */
    waf_free(engine.waf);
    rl_local_free(engine.rl_local);
    conn_limits_free(engine.conn_limits);
    free(workers);
    free(threads);
    for (size_t j = 0; j < nlisteners; j++) {
        tls_server_holder_free(listeners[j].tls);
        free(listeners[j].pairs);
    }
    free(listeners);
    proxy_config_unref(current);
    proxy_config_unref(boot);
    loop_free(main_loop);
    log_info("stopped");
    return 0;
}
