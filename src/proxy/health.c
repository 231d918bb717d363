#include "proxy/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_client.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/tls.h"

struct probe {
    struct health *h;
    const struct proxy_cluster *cluster;
    struct proxy_endpoint *ep;
    struct loop_timer timer;
    struct http1_client_call *call;
    uint32_t successes, failures; /* in a row */
    struct metrics_gauge *gauge;
};

struct health {
    struct loop *loop;
    struct proxy_config *cfg;
    struct http1_client *client;
    struct probe *probes;
    size_t nprobes;
    struct probe_tls *tls; /* per cluster: mesh clusters are checked over mTLS, as traffic goes */
};

struct probe_tls {
    struct tls_client_ctx *ctx;
    const struct proxy_upstream_tls *cfg;
};

static int probe_wrap(struct sock *s, void *arg)
{
    struct probe_tls *t = arg;
    struct tls_client_conn_opts o = { .expected_spiffe_id = t->cfg->spiffe_id };
    return tls_sock_client(t->ctx, s, t->cfg->sni, &o);
}

static struct metrics_family *healthy_family(void)
{
    static struct metrics_family *f;
    if (!f && metrics_register_gauge(metrics_default(), "strata_proxy_endpoint_healthy",
                                     "1 when the endpoint passes its active health checks.",
                                     METRICS_LABELS("cluster", "endpoint"), &f) < 0)
        f = NULL;
    return f;
}

static void probe_verdict(struct probe *p, bool ok, const char *why)
{
    const struct proxy_health_check *hc = &p->cluster->health;
    int was = atomic_load(&p->ep->healthy);
    if (ok) {
        p->failures = 0;
        if (++p->successes >= hc->healthy_threshold && !was) {
            atomic_store(&p->ep->healthy, 1);
            log_info("endpoint healthy", LOG_STR("cluster", p->cluster->name), LOG_STR("endpoint", p->ep->name));
        }
    } else {
        p->successes = 0;
        if (++p->failures >= hc->unhealthy_threshold && was) {
            atomic_store(&p->ep->healthy, 0);
            log_warn("endpoint unhealthy", LOG_STR("cluster", p->cluster->name), LOG_STR("endpoint", p->ep->name),
                     LOG_STR("reason", why));
        }
    }
    metrics_gauge_set(p->gauge, atomic_load(&p->ep->healthy));
}

static void probe_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct probe *p = arg;
    p->call = NULL;
    char why[64];
    bool ok = !err && resp->status >= 200 && resp->status < 300;
    if (err)
        snprintf(why, sizeof why, "%s", strerror(-err));
    else
        snprintf(why, sizeof why, "status %d", resp->status);
    probe_verdict(p, ok, why);
    loop_timer_start(&p->timer, p->cluster->health.interval_ms);
}

static void probe_tick(struct loop_timer *t)
{
    struct probe *p = t->data;
    const struct proxy_health_check *hc = &p->cluster->health;
    struct http1_client_request req = {
        .addr = p->ep->addr,
        .method = STR_LIT("GET"),
        .target = str_from_cstr(hc->path),
        .host = str_from_cstr(p->ep->name),
        .timeout_ms = hc->timeout_ms,
    };
    struct probe_tls *pt = &p->h->tls[p->cluster - p->h->cfg->clusters];
    if (p->cluster->tls) {
        if (!pt->ctx) {
            probe_verdict(p, false, "upstream TLS unavailable");
            loop_timer_start(&p->timer, hc->interval_ms);
            return;
        }
        req.wrap = probe_wrap;
        req.wrap_arg = pt;
        req.pool_key = p->cluster->name;
    }
    if (http1_client_send(p->h->client, &req, probe_done, p, &p->call) < 0) {
        probe_verdict(p, false, "could not send");
        loop_timer_start(&p->timer, hc->interval_ms);
    }
}

static const struct proxy_endpoint *find_prev(const struct proxy_config *prev, const char *cluster, const char *ep)
{
    for (size_t i = 0; prev && i < prev->nclusters; i++) {
        if (strcmp(prev->clusters[i].name, cluster))
            continue;
        for (size_t j = 0; j < prev->clusters[i].nendpoints; j++)
            if (!strcmp(prev->clusters[i].endpoints[j].name, ep))
                return &prev->clusters[i].endpoints[j];
    }
    return NULL;
}

struct health *health_start(struct loop *l, struct proxy_config *c, const struct proxy_config *prev)
{
    struct health *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = l;
    h->cfg = proxy_config_ref(c);
    size_t n = 0;
    for (size_t i = 0; i < c->nclusters; i++)
        n += c->clusters[i].health.path ? c->clusters[i].nendpoints : 0;
    h->probes = calloc(n + 1, sizeof *h->probes);
    h->tls = calloc(c->nclusters + 1, sizeof *h->tls);
    h->client = http1_client_new(l, &(struct http1_client_config){ .max_idle_per_upstream = 1 });
    if (!h->probes || !h->client || !h->tls) {
        health_stop(h);
        return NULL;
    }
    for (size_t i = 0; i < c->nclusters; i++) {
        const struct proxy_upstream_tls *t = c->clusters[i].tls;
        if (!t || !c->clusters[i].health.path)
            continue;
        struct tls_client_config tc = { .ca_file = t->ca_file, .cert_file = t->cert_file, .key_file = t->key_file };
        struct tls_error terr;
        h->tls[i].cfg = t;
        if (!(h->tls[i].ctx = tls_client_ctx_new(&tc, &terr)))
            log_error("health checks: upstream TLS unavailable", LOG_STR("cluster", c->clusters[i].name),
                      LOG_STR("error", terr.msg));
    }
    struct metrics_family *fam = healthy_family();
    for (size_t i = 0; i < c->nclusters; i++) {
        struct proxy_cluster *cl = &c->clusters[i];
        for (size_t j = 0; j < cl->nendpoints; j++) {
            struct proxy_endpoint *ep = &cl->endpoints[j];
            const struct proxy_endpoint *old = find_prev(prev, cl->name, ep->name);
            if (old)
                atomic_store(&ep->healthy, atomic_load(&old->healthy));
            if (!cl->health.path)
                continue;
            struct probe *p = &h->probes[h->nprobes++];
            p->h = h;
            p->cluster = cl;
            p->ep = ep;
            p->gauge = metrics_gauge_with(fam, cl->name, ep->name);
            metrics_gauge_set(p->gauge, atomic_load(&ep->healthy));
            loop_timer_init(l, &p->timer, probe_tick, p);
            /* The first check at once, then every interval. */
            loop_timer_start(&p->timer, 0);
        }
    }
    return h;
}

void health_stop(struct health *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->nprobes; i++) {
        struct probe *p = &h->probes[i];
        loop_timer_stop(&p->timer);
        if (p->call)
            http1_client_cancel(p->call);
    }
    http1_client_free(h->client);
    for (size_t i = 0; h->tls && i < h->cfg->nclusters; i++)
        if (h->tls[i].ctx)
            tls_client_ctx_unref(h->tls[i].ctx);
    free(h->tls);
    free(h->probes);
    proxy_config_unref(h->cfg);
    free(h);
}
