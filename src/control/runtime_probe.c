/* runtime_probe.c — httpGet probes, as Kubernetes runs them.
 *
 * A probe is one timer and at most one request in flight. The first probe
 * runs initialDelaySeconds after the app started (or at once if that time
 * has passed, e.g. readiness after a slow startup probe), then every
 * periodSeconds after the previous answer. An answer with a status in
 * 200..399 is a success; any other status, a refused connection or no
 * answer within timeoutSeconds is a failure. successThreshold consecutive
 * successes or failureThreshold consecutive failures change the verdict:
 *   startup:   success → the app counts as started, readiness and liveness
 *              begin; failure → the app is killed and restarted;
 *   readiness: the replica's ready state;
 *   liveness:  failure → the app is killed and restarted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/runtime_internal.h"
#include "core/log.h"

static const char *const kind_names[] = { "startup", "readiness", "liveness" };

const char *rt_probe_kind_name(enum rt_probe_kind kind)
{
    return kind_names[kind];
}

static void probe_send(struct loop_timer *t);

void rt_probe_init(struct rt_replica *r, enum rt_probe_kind kind, const struct model_probe *p)
{
    struct rt_probe *pr = &r->probes[kind];
    memset(pr, 0, sizeof *pr);
    pr->r = r;
    pr->kind = kind;
    loop_timer_init(r->rt->loop, &pr->timer, probe_send, pr);
    if (!p || !p->set)
        return;
    pr->p = *p;
    pr->p.path = NULL;
    /* Kubernetes' defaults for anything left at 0 (a hand-built spec). */
    if (pr->p.period_s <= 0)
        pr->p.period_s = 10;
    if (pr->p.timeout_s <= 0)
        pr->p.timeout_s = 1;
    if (pr->p.success_threshold <= 0 || kind != RT_PROBE_READINESS)
        pr->p.success_threshold = 1; /* liveness and startup: must be 1 */
    if (pr->p.failure_threshold <= 0)
        pr->p.failure_threshold = 3;
    if (pr->p.initial_delay_s < 0)
        pr->p.initial_delay_s = 0;
    const char *path = p->path && p->path[0] == '/' ? p->path : "/";
    pr->p.path = strdup(path);
    if (!pr->p.path) {
        log_error("runtime: out of memory for a probe; probe disabled", LOG_STR("replica", r->id),
                  LOG_STR("probe", kind_names[kind]));
        pr->p.set = false;
    }
}

void rt_probe_stop(struct rt_probe *p)
{
    loop_timer_stop(&p->timer);
    if (p->call)
        http1_client_cancel(p->call);
    p->call = NULL;
    p->is_active = false;
    p->successes = p->failures = 0;
}

void rt_probe_free(struct rt_probe *p)
{
    rt_probe_stop(p);
    free((char *)p->p.path);
    p->p.path = NULL;
}

void rt_probe_start(struct rt_probe *p, uint64_t started_ms)
{
    if (!p->p.set)
        return;
    rt_probe_stop(p);
    p->is_active = true;
    uint64_t now = loop_now_ms(p->r->rt->loop);
    uint64_t at = started_ms + (uint64_t)p->p.initial_delay_s * 1000;
    if (loop_timer_start(&p->timer, at > now ? at - now : 0) < 0)
        log_error("runtime: cannot arm a probe timer", LOG_STR("replica", p->r->id),
                  LOG_STR("probe", kind_names[p->kind]));
}

static void next_round(struct rt_probe *p)
{
    if (p->is_active && loop_timer_start(&p->timer, (uint64_t)p->p.period_s * 1000) < 0)
        log_error("runtime: cannot arm a probe timer", LOG_STR("replica", p->r->id),
                  LOG_STR("probe", kind_names[p->kind]));
}

static void verdict(struct rt_probe *p, bool ok, int err, int status)
{
    struct rt_replica *r = p->r;
    if (ok) {
        p->failures = 0;
        p->successes++;
    } else {
        p->successes = 0;
        p->failures++;
        log_info("runtime: probe failed", LOG_STR("replica", r->id), LOG_STR("probe", kind_names[p->kind]),
                 LOG_STR("path", p->p.path), LOG_INT("status", status), LOG_ERRNO("error", err),
                 LOG_INT("consecutive_failures", p->failures));
    }
    switch (p->kind) {
    case RT_PROBE_STARTUP:
        if (ok) {
            rt_probe_stop(p);
            rt_replica_startup_passed(r);
            return;
        }
        if (p->failures >= p->p.failure_threshold) {
            rt_replica_kill_app(r, "startup probe failed");
            return;
        }
        break;
    case RT_PROBE_LIVENESS:
        if (!ok && p->failures >= p->p.failure_threshold) {
            rt_replica_kill_app(r, "liveness probe failed");
            return;
        }
        break;
    case RT_PROBE_READINESS:
        if (ok && p->successes >= p->p.success_threshold)
            r->is_probe_ready = true;
        else if (!ok && p->failures >= p->p.failure_threshold)
            r->is_probe_ready = false;
        rt_replica_update_ready(r);
        break;
    }
    next_round(p);
}

static void probe_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct rt_probe *p = arg;
    p->call = NULL;
    int status = err == 0 && resp ? resp->status : 0;
    verdict(p, err == 0 && status >= 200 && status < 400, err, status);
}

static void probe_send(struct loop_timer *t)
{
    struct rt_probe *p = t->data;
    struct rt_replica *r = p->r;
    if (!p->is_active || p->call)
        return;
    char host[300];
    snprintf(host, sizeof host, "%s:%d", r->probe_host, r->probe_port);
    struct http1_client_request req = {
        .method = str_from_cstr("GET"),
        .target = str_from_cstr(p->p.path),
        .host = str_from_cstr(host),
        .timeout_ms = (uint32_t)p->p.timeout_s * 1000,
    };
    int rc = r->probe_port > 0 && r->probe_port < 65536
                 ? net_addr_from_host(str_from_cstr(r->probe_host), (uint16_t)r->probe_port, &req.addr)
                 : -EINVAL;
    if (rc == 0)
        rc = http1_client_send(r->rt->client, &req, probe_done, p, &p->call);
    if (rc < 0) {
        p->call = NULL;
        verdict(p, false, rc, 0);
    }
}
