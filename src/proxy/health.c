#include "proxy/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_client.h"
#include "core/log.h"
#include "core/metrics.h"
#include "proxy/upstream_tls.h"

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
    struct upstream_tls *tls; /* per cluster: mesh clusters are checked over mTLS, as traffic goes */
};

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
    size_t ci = (size_t)(p->cluster - p->h->cfg->clusters);
    if (upstream_tls_apply(p->h->tls, p->h->cfg, ci, &req) < 0 ||
        http1_client_send(p->h->client, &req, probe_done, p, &p->call) < 0) {
        probe_verdict(p, false, "could not send (or upstream TLS unavailable)");
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
    h->tls = upstream_tls_new(c, "health checks");
    h->client = http1_client_new(l, &(struct http1_client_config){ .max_idle_per_upstream = 1 });
    if (!h->probes || !h->client || !h->tls) {
        health_stop(h);
        return NULL;
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
    upstream_tls_free(h->tls, h->cfg->nclusters);
    free(h->probes);
    proxy_config_unref(h->cfg);
    free(h);
}
