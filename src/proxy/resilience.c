/* resilience.c — circuit breaking, retry budget and decisions, outlier
 * detection (see resilience.h).
 *
 * Counters are _Atomic and relaxed: they publish no other data. The limits
 * are checked in compare-and-swap loops, so a counter never passes its
 * limit, not even for the moment that a fetch_add-then-undo scheme would
 * take (which also refuses requests spuriously under contention).
 *
 * An endpoint's ejection is one atomic word, the time it ends (0: admitted),
 * so resil_is_ejected is one load. Ejecting and re-admitting change the
 * cluster's ejected count and an endpoint's multiplier together, under the
 * cluster's mutex: they are rare (at most one per endpoint per run of
 * errors) and take O(endpoints). */
#include "proxy/resilience.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct resil_endpoint {
    _Atomic uint32_t consecutive_5xx;
    _Atomic uint32_t consecutive_gateway;
    _Atomic uint64_t ejected_until; /* now_ms when the ejection ends; 0: admitted */
    /* under the cluster's lock; atomic for inherit and readers */
    _Atomic uint32_t multiplier;    /* ejections in a row, less one per admitted interval */
    _Atomic uint64_t admitted_ms;   /* last re-admission or multiplier decrement */
    char name[sizeof ((struct proxy_endpoint *)0)->name];
};

struct resil_cluster {
    char *name;
    struct proxy_circuit_breaker breaker;
    struct proxy_outlier_detection outlier;

    _Atomic uint32_t requests, retries, pending, connections;
    _Atomic uint64_t overflow_requests, overflow_pending, overflow_connections, overflow_retries,
        retries_over_budget, ejections, ejections_refused;

    pthread_mutex_t lock;        /* ejection bookkeeping */
    _Atomic size_t nejected;     /* endpoints with ejected_until != 0 */
    size_t nendpoints;
    struct resil_endpoint endpoints[];
};

#define RELAXED memory_order_relaxed

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, RELAXED);
}

/* ---- life cycle ------------------------------------------------------- */

struct resil_cluster *resil_cluster_new(const struct proxy_cluster *c)
{
    if (!c) {
        errno = EINVAL;
        return NULL;
    }
    struct resil_cluster *r = calloc(1, sizeof *r + c->nendpoints * sizeof r->endpoints[0]);
    if (!r)
        goto fail;
    r->name = strdup(c->name ? c->name : "");
    if (!r->name)
        goto fail;
    if (pthread_mutex_init(&r->lock, NULL) != 0)
        goto fail;
    r->breaker = c->breaker;
    r->outlier = c->outlier;
    r->nendpoints = c->nendpoints;
    for (size_t i = 0; i < c->nendpoints; i++) {
        memcpy(r->endpoints[i].name, c->endpoints[i].name, sizeof r->endpoints[i].name);
        r->endpoints[i].name[sizeof r->endpoints[i].name - 1] = '\0';
    }
    return r;
fail:
    if (r)
        free(r->name);
    free(r);
    errno = ENOMEM;
    return NULL;
}

void resil_cluster_free(struct resil_cluster *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->name);
    free(r);
}

static void add_stat(_Atomic uint64_t *to, const _Atomic uint64_t *from)
{
    atomic_fetch_add_explicit(to, atomic_load_explicit(from, RELAXED), RELAXED);
}

static const struct resil_endpoint *find_endpoint(const struct resil_cluster *old, const char *name,
                                                  size_t hint)
{
    /* Reloads mostly keep the endpoints in place: try the same index first,
     * so the common case is O(n), not O(n × m). */
    if (hint < old->nendpoints && strcmp(old->endpoints[hint].name, name) == 0)
        return &old->endpoints[hint];
    for (size_t j = 0; j < old->nendpoints; j++)
        if (strcmp(old->endpoints[j].name, name) == 0)
            return &old->endpoints[j];
    return NULL;
}

void resil_cluster_inherit(struct resil_cluster *r, const struct resil_cluster *old)
{
    if (!r || !old || strcmp(r->name, old->name) != 0)
        return;
    add_stat(&r->overflow_requests, &old->overflow_requests);
    add_stat(&r->overflow_pending, &old->overflow_pending);
    add_stat(&r->overflow_connections, &old->overflow_connections);
    add_stat(&r->overflow_retries, &old->overflow_retries);
    add_stat(&r->retries_over_budget, &old->retries_over_budget);
    add_stat(&r->ejections, &old->ejections);
    add_stat(&r->ejections_refused, &old->ejections_refused);
    if (!r->outlier.enabled)
        return;
    size_t nejected = 0;
    for (size_t i = 0; i < r->nendpoints; i++) {
        struct resil_endpoint *e = &r->endpoints[i];
        const struct resil_endpoint *o = find_endpoint(old, e->name, i);
        if (!o)
            continue;
#define COPY(field) \
    atomic_store_explicit(&e->field, atomic_load_explicit(&o->field, RELAXED), RELAXED)
        COPY(consecutive_5xx);
        COPY(consecutive_gateway);
        COPY(ejected_until);
        COPY(multiplier);
        COPY(admitted_ms);
#undef COPY
        if (atomic_load_explicit(&e->ejected_until, RELAXED))
            nejected++;
    }
    atomic_store_explicit(&r->nejected, nejected, RELAXED);
}

/* ---- circuit breaking ------------------------------------------------- */

/* One more on c unless max (0: unlimited) are already counted. */
static bool counter_acquire(_Atomic uint32_t *c, uint32_t max)
{
    if (!max) {
        atomic_fetch_add_explicit(c, 1, RELAXED);
        return true;
    }
    uint32_t cur = atomic_load_explicit(c, RELAXED);
    do {
        if (cur >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(c, &cur, cur + 1, RELAXED, RELAXED));
    return true;
}

/* One less, never below 0: an unbalanced release (a bug in the caller)
 * must not wrap the counter to 2^32 and refuse everything from then on. */
static void counter_release(_Atomic uint32_t *c)
{
    uint32_t cur = atomic_load_explicit(c, RELAXED);
    do {
        if (cur == 0)
            return;
    } while (!atomic_compare_exchange_weak_explicit(c, &cur, cur - 1, RELAXED, RELAXED));
}

bool resil_request_acquire(struct resil_cluster *r)
{
    if (!r)
        return true;
    if (counter_acquire(&r->requests, r->breaker.max_requests))
        return true;
    count(&r->overflow_requests);
    return false;
}

void resil_request_release(struct resil_cluster *r)
{
    if (!r)
        return;
    counter_release(&r->requests);
}

bool resil_pending_acquire(struct resil_cluster *r)
{
    if (!r)
        return true;
    if (counter_acquire(&r->pending, r->breaker.max_pending_requests))
        return true;
    count(&r->overflow_pending);
    return false;
}

void resil_pending_release(struct resil_cluster *r)
{
    if (!r)
        return;
    counter_release(&r->pending);
}

bool resil_conn_allowed(struct resil_cluster *r)
{
    if (!r)
        return true;
    uint32_t max = r->breaker.max_connections;
    if (!max || atomic_load_explicit(&r->connections, RELAXED) < max)
        return true;
    count(&r->overflow_connections);
    return false;
}

bool resil_conn_acquire(struct resil_cluster *r)
{
    return !r || counter_acquire(&r->connections, r->breaker.max_connections);
}

void resil_conn_refused(struct resil_cluster *r)
{
    if (r)
        count(&r->overflow_connections);
}

void resil_conn_opened(struct resil_cluster *r)
{
    if (!r)
        return;
    atomic_fetch_add_explicit(&r->connections, 1, RELAXED);
}

void resil_conn_closed(struct resil_cluster *r)
{
    if (!r)
        return;
    counter_release(&r->connections);
}

bool resil_retry_acquire(struct resil_cluster *r, const struct proxy_retry *rt,
                         enum resil_retry_refusal *why)
{
    if (!r) {
        if (why)
            *why = RESIL_OK;
        return true;
    }
    enum resil_retry_refusal res = RESIL_OK;
    uint32_t max = r->breaker.max_retries;
    uint32_t cur = atomic_load_explicit(&r->retries, RELAXED);
    for (;;) {
        if (max && cur >= max) {
            res = RESIL_OVER_MAX_RETRIES;
            break;
        }
        if (rt) {
            /* 64 bits: 2^32 requests × 100 % does not fit in 32. */
            uint64_t requests = atomic_load_explicit(&r->requests, RELAXED);
            uint64_t limit = requests * rt->budget_percent / 100;
            if (limit < rt->budget_min_concurrency)
                limit = rt->budget_min_concurrency;
            if (cur >= limit) {
                res = RESIL_OVER_BUDGET;
                break;
            }
        }
        if (atomic_compare_exchange_weak_explicit(&r->retries, &cur, cur + 1, RELAXED, RELAXED))
            break;
    }
    if (res == RESIL_OVER_MAX_RETRIES)
        count(&r->overflow_retries);
    else if (res == RESIL_OVER_BUDGET)
        count(&r->retries_over_budget);
    if (why)
        *why = res;
    return res == RESIL_OK;
}

void resil_retry_release(struct resil_cluster *r)
{
    if (!r)
        return;
    counter_release(&r->retries);
}

/* ---- what a result means ---------------------------------------------- */

enum failure { FAIL_NONE, FAIL_CONNECT, FAIL_RESET, FAIL_OTHER };

/* The errors the engine and http1_client report (engine.c's upstream_done
 * answers 503/504 to the connect kind, 502 to the reset kind). */
static enum failure failure_of(int err)
{
    switch (err) {
    case 0:
        return FAIL_NONE;
    case -ECONNREFUSED:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -EADDRNOTAVAIL:
    case -ETIMEDOUT:
        return FAIL_CONNECT;
    case -ECONNRESET:
    case -EPIPE:
    case -EPROTO: /* a malformed response: the endpoint's fault, answered as a reset */
        return FAIL_RESET;
    default:
        return FAIL_OTHER;
    }
}

static bool is_gateway_status(int status)
{
    return status == 502 || status == 503 || status == 504;
}

static bool is_idempotent(struct str m)
{
    /* RFC 9110 §9.2.2; methods are case-sensitive (§9.1). */
    static const struct str idempotent[] = { STR_LIT("GET"), STR_LIT("HEAD"), STR_LIT("OPTIONS"),
                                             STR_LIT("PUT"), STR_LIT("DELETE"), STR_LIT("TRACE") };
    for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (str_eq(m, idempotent[i]))
            return true;
    return false;
}

bool resil_should_retry(const struct proxy_retry *rt, int err, int status, struct str method)
{
    if (!rt || !rt->retry_on)
        return false;
    if (!rt->non_idempotent && !is_idempotent(method))
        return false;
    unsigned on = rt->retry_on;
    switch (failure_of(err)) {
    case FAIL_CONNECT:
        return on & (PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY_ERROR | PROXY_RETRY_CONNECT_FAILURE |
                     PROXY_RETRY_RESET);
    case FAIL_RESET:
        return on & (PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY_ERROR | PROXY_RETRY_RESET);
    case FAIL_OTHER:
        return false;
    case FAIL_NONE:
        break;
    }
    if ((on & PROXY_RETRY_5XX) && status >= 500 && status <= 599)
        return true;
    if ((on & PROXY_RETRY_GATEWAY_ERROR) && is_gateway_status(status))
        return true;
    if (on & PROXY_RETRY_STATUS_CODES) {
        size_t n = rt->nstatus_codes < 8 ? rt->nstatus_codes : 8;
        for (size_t i = 0; i < n; i++)
            if (rt->status_codes[i] == status)
                return true;
    }
    return false;
}

uint32_t resil_backoff_ms(const struct proxy_retry *rt, unsigned attempt, uint64_t random)
{
    if (!rt)
        return 0;
    unsigned shift = attempt ? attempt - 1 : 0;
    uint64_t cap = rt->backoff_max_ms;
    /* base < 2^32, so base << 31 < 2^63: no overflow below 32 doublings,
     * and past them any base ≥ 1 is over every uint32_t max. */
    if (shift < 32 && ((uint64_t)rt->backoff_base_ms << shift) < cap)
        cap = (uint64_t)rt->backoff_base_ms << shift;
    else if (shift >= 32 && rt->backoff_base_ms == 0)
        cap = 0;
    return (uint32_t)(random % (cap + 1));
}

/* ---- outlier detection ------------------------------------------------ */

static size_t max_ejected(const struct resil_cluster *r)
{
    size_t n = r->nendpoints;
    size_t allowed = (size_t)((uint64_t)n * r->outlier.max_ejection_percent / 100);
    if (allowed < 1 && n >= 2)
        allowed = 1;
    return allowed;
}

static uint64_t ejection_cap_ms(const struct resil_cluster *r)
{
    uint64_t base = r->outlier.base_ejection_ms;
    return base > RESIL_MAX_EJECTION_MS ? base : RESIL_MAX_EJECTION_MS;
}

/* Under r->lock: re-admits e if its ejection is over at now_ms. */
static void readmit_if_over(struct resil_cluster *r, struct resil_endpoint *e, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&e->ejected_until, RELAXED);
    if (!until || now_ms < until)
        return;
    atomic_store_explicit(&e->ejected_until, 0, RELAXED);
    atomic_store_explicit(&e->admitted_ms, until, RELAXED);
    atomic_fetch_sub_explicit(&r->nejected, 1, RELAXED);
}

static void eject(struct resil_cluster *r, struct resil_endpoint *e, uint64_t now_ms)
{
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nendpoints; i++)
        readmit_if_over(r, &r->endpoints[i], now_ms);
    if (atomic_load_explicit(&e->ejected_until, RELAXED)) {
        /* the other trigger, on another thread, was first */
    } else if (atomic_load_explicit(&r->nejected, RELAXED) + 1 > max_ejected(r)) {
        count(&r->ejections_refused);
    } else {
        uint64_t base = r->outlier.base_ejection_ms ? r->outlier.base_ejection_ms : 1;
        uint64_t cap = ejection_cap_ms(r);
        uint32_t k = atomic_load_explicit(&e->multiplier, RELAXED);
        /* No higher than the multiplier that reaches the cap, so that
         * admitted intervals bring it down again in bounded time. */
        uint64_t kmax = (cap + base - 1) / base;
        if (k < kmax)
            k++;
        atomic_store_explicit(&e->multiplier, k, RELAXED);
        uint64_t ms = base * k < cap ? base * k : cap;
        uint64_t until = now_ms + ms;
        atomic_store_explicit(&e->ejected_until, until, RELAXED); /* ≥ 1: ms ≥ base ≥ 1 */
        atomic_fetch_add_explicit(&r->nejected, 1, RELAXED);
        count(&r->ejections);
    }
    atomic_store_explicit(&e->consecutive_5xx, 0, RELAXED);
    atomic_store_explicit(&e->consecutive_gateway, 0, RELAXED);
    pthread_mutex_unlock(&r->lock);
}

/* Restarts a count; skips the store (a cache-line write shared by every
 * worker) when it is 0 already, which is the case for nearly every success. */
static void restart(_Atomic uint32_t *c)
{
    if (atomic_load_explicit(c, RELAXED))
        atomic_store_explicit(c, 0, RELAXED);
}

/* Counts one more error; true when the count reaches threshold (0: off). */
static bool bump(_Atomic uint32_t *c, uint32_t threshold)
{
    uint32_t n = atomic_fetch_add_explicit(c, 1, RELAXED) + 1;
    /* ≥, not ==: a count inherited from a config with a higher threshold
     * may start above this one. */
    return threshold && n >= threshold;
}

void resil_report(struct resil_cluster *r, size_t endpoint, int err, int status, uint64_t now_ms)
{
    if (!r || !r->outlier.enabled || endpoint >= r->nendpoints)
        return;
    struct resil_endpoint *e = &r->endpoints[endpoint];
    uint64_t until = atomic_load_explicit(&e->ejected_until, RELAXED);
    if (until && now_ms < until)
        return;
    bool is_5xx, is_gateway;
    switch (failure_of(err)) {
    case FAIL_CONNECT:
        is_5xx = is_gateway = true;
        break;
    case FAIL_RESET:
        is_5xx = true, is_gateway = false;
        break;
    case FAIL_OTHER:
        return;
    default:
        is_5xx = status >= 500 && status <= 599;
        is_gateway = is_gateway_status(status);
        break;
    }
    if (!is_5xx) {
        restart(&e->consecutive_5xx);
        restart(&e->consecutive_gateway);
        return;
    }
    bool trigger = false;
    if (is_gateway)
        trigger = bump(&e->consecutive_gateway, r->outlier.consecutive_gateway_errors);
    else
        restart(&e->consecutive_gateway);
    if (bump(&e->consecutive_5xx, r->outlier.consecutive_5xx))
        trigger = true;
    if (trigger)
        eject(r, e, now_ms);
}

bool resil_is_ejected(const struct resil_cluster *r, size_t endpoint, uint64_t now_ms)
{
    if (!r || !r->outlier.enabled || endpoint >= r->nendpoints)
        return false;
    uint64_t until = atomic_load_explicit(&r->endpoints[endpoint].ejected_until, RELAXED);
    return until && now_ms < until;
}

void resil_tick(struct resil_cluster *r, uint64_t now_ms)
{
    if (!r || !r->outlier.enabled)
        return;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nendpoints; i++) {
        struct resil_endpoint *e = &r->endpoints[i];
        readmit_if_over(r, e, now_ms);
        if (atomic_load_explicit(&e->ejected_until, RELAXED))
            continue;
        uint32_t k = atomic_load_explicit(&e->multiplier, RELAXED);
        uint64_t since = atomic_load_explicit(&e->admitted_ms, RELAXED);
        if (k && now_ms >= since && now_ms - since >= r->outlier.interval_ms) {
            atomic_store_explicit(&e->multiplier, k - 1, RELAXED);
            atomic_store_explicit(&e->admitted_ms, now_ms, RELAXED);
        }
    }
    pthread_mutex_unlock(&r->lock);
}

size_t resil_ejected_count(const struct resil_cluster *r)
{
    return r ? atomic_load_explicit(&r->nejected, RELAXED) : 0;
}

void resil_stats(const struct resil_cluster *r, struct resil_stats *out)
{
    if (!r) {
        *out = (struct resil_stats){ 0 };
        return;
    }
#define LOAD(x) atomic_load_explicit(&r->x, RELAXED)
    *out = (struct resil_stats){
        .ejections = LOAD(ejections),
        .ejections_refused = LOAD(ejections_refused),
        .overflow_requests = LOAD(overflow_requests),
        .overflow_pending = LOAD(overflow_pending),
        .overflow_connections = LOAD(overflow_connections),
        .overflow_retries = LOAD(overflow_retries),
        .retries_over_budget = LOAD(retries_over_budget),
        .requests = LOAD(requests),
        .pending = LOAD(pending),
        .retries = LOAD(retries),
        .connections = LOAD(connections),
        .ejected = LOAD(nejected),
    };
#undef LOAD
}
