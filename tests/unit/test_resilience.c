/* resilience.h: retryOn decisions with idempotency, backoff bounds and
 * growth, the retry budget and its minimum, circuit-breaker limits (exact
 * under 4 threads, balanced at the end), and outlier detection — both
 * triggers, what restarts a run, ejection times growing and shrinking,
 * re-admission by resil_tick, max_ejection_percent, carrying state over a
 * reload, and a NULL cluster. Every time and random value is passed
 * explicitly. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "proxy/resilience.h"

/* ---- fixtures --------------------------------------------------------- */

struct fixture {
    struct proxy_cluster c;
    struct proxy_endpoint eps[16];
};

/* A cluster "name" with n endpoints named by names (or "ep0", "ep1" ...). */
static void fixture_init(struct fixture *f, const char *name, size_t n, const char *const *names)
{
    memset(f, 0, sizeof *f);
    f->c.name = (char *)name;
    f->c.endpoints = f->eps;
    f->c.nendpoints = n;
    for (size_t i = 0; i < n; i++) {
        if (names)
            snprintf(f->eps[i].name, sizeof f->eps[i].name, "%s", names[i]);
        else
            snprintf(f->eps[i].name, sizeof f->eps[i].name, "ep%zu", i);
        f->eps[i].healthy = 1;
    }
    f->c.outlier = (struct proxy_outlier_detection){
        .enabled = true, .consecutive_5xx = 5, .consecutive_gateway_errors = 0,
        .interval_ms = 10000, .base_ejection_ms = 30000, .max_ejection_percent = 100 };
}

static struct proxy_retry retry_policy(unsigned retry_on)
{
    return (struct proxy_retry){ .attempts = 2, .retry_on = retry_on, .backoff_base_ms = 25,
                                 .backoff_max_ms = 250, .budget_percent = 20,
                                 .budget_min_concurrency = 3 };
}

static void report_n(struct resil_cluster *r, size_t ep, int n, int err, int status, uint64_t now)
{
    for (int i = 0; i < n; i++)
        resil_report(r, ep, err, status, now);
}

/* ---- retryOn ---------------------------------------------------------- */

static void test_should_retry_matrix(void)
{
    enum { R5 = PROXY_RETRY_5XX, GW = PROXY_RETRY_GATEWAY_ERROR, CF = PROXY_RETRY_CONNECT_FAILURE,
           RS = PROXY_RETRY_RESET, SC = PROXY_RETRY_STATUS_CODES };
    static const struct {
        unsigned on;
        int err, status;
        bool want;
    } cases[] = {
        /* 5xx */
        { R5, 0, 500, true }, { R5, 0, 503, true }, { R5, 0, 599, true }, { R5, 0, 499, false },
        { R5, 0, 600, false }, { R5, 0, 200, false }, { R5, 0, 429, false },
        { R5, -ECONNREFUSED, 0, true }, { R5, -ETIMEDOUT, 0, true }, { R5, -ECONNRESET, 0, true },
        { R5, -EPIPE, 0, true }, { R5, -ENOMEM, 0, false }, { R5, -EMSGSIZE, 0, false },
        /* gateway-error */
        { GW, 0, 502, true }, { GW, 0, 503, true }, { GW, 0, 504, true }, { GW, 0, 500, false },
        { GW, 0, 501, false }, { GW, 0, 505, false }, { GW, -EHOSTUNREACH, 0, true },
        { GW, -ECONNRESET, 0, true },
        /* connect-failure */
        { CF, -ECONNREFUSED, 0, true }, { CF, -EHOSTUNREACH, 0, true }, { CF, -ETIMEDOUT, 0, true },
        { CF, -ENETUNREACH, 0, true }, { CF, -ECONNRESET, 0, false }, { CF, -EPIPE, 0, false },
        { CF, 0, 503, false },
        /* reset */
        { RS, -ECONNRESET, 0, true }, { RS, -EPIPE, 0, true }, { RS, -EPROTO, 0, true },
        { RS, -ECONNREFUSED, 0, true }, { RS, 0, 503, false }, { RS, -ENOMEM, 0, false },
        /* retriable-status-codes: 409 and 429 listed */
        { SC, 0, 409, true }, { SC, 0, 429, true }, { SC, 0, 503, false },
        { SC, -ECONNRESET, 0, false },
        /* none */
        { 0, 0, 503, false }, { 0, -ECONNREFUSED, 0, false },
        /* combined */
        { CF | SC, 0, 429, true }, { CF | SC, -ECONNREFUSED, 0, true }, { CF | SC, 0, 500, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proxy_retry rt = retry_policy(cases[i].on);
        rt.status_codes[0] = 409, rt.status_codes[1] = 429, rt.nstatus_codes = 2;
        bool got = resil_should_retry(&rt, cases[i].err, cases[i].status, STR_LIT("GET"));
        if (got != cases[i].want)
            fprintf(stderr, "case %zu: retry_on %#x err %d status %d: want %d\n", i, cases[i].on,
                    cases[i].err, cases[i].status, cases[i].want);
        CHECK(got == cases[i].want);
    }
    CHECK(!resil_should_retry(NULL, 0, 503, STR_LIT("GET")));
}

static void test_should_retry_idempotency(void)
{
    struct proxy_retry rt = retry_policy(PROXY_RETRY_5XX | PROXY_RETRY_CONNECT_FAILURE);
    static const char *const yes[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" };
    static const char *const no[] = { "POST", "PATCH", "CONNECT", "get", "Put", "", "GETX" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        CHECK(resil_should_retry(&rt, 0, 503, str_from_cstr(yes[i])));
        CHECK(resil_should_retry(&rt, -ECONNREFUSED, 0, str_from_cstr(yes[i])));
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        CHECK(!resil_should_retry(&rt, 0, 503, str_from_cstr(no[i])));
        CHECK(!resil_should_retry(&rt, -ECONNREFUSED, 0, str_from_cstr(no[i])));
    }
    rt.non_idempotent = true;
    CHECK(resil_should_retry(&rt, 0, 503, STR_LIT("POST")));
    CHECK(resil_should_retry(&rt, 0, 500, STR_LIT("PATCH")));
    CHECK(!resil_should_retry(&rt, 0, 404, STR_LIT("POST"))); /* the condition still applies */
}

/* ---- backoff ---------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_backoff(void)
{
    struct proxy_retry rt = retry_policy(PROXY_RETRY_5XX); /* base 25, max 250 */
    /* the cap of each attempt: 25, 50, 100, 200, then 250 (not 400) */
    static const uint32_t caps[] = { 25, 25, 50, 100, 200, 250, 250, 250 }; /* attempt 0 is 1 */
    for (unsigned a = 0; a < sizeof caps / sizeof caps[0]; a++) {
        uint32_t cap = caps[a];
        /* the bounds are reachable: random % (cap + 1) */
        CHECK_INT(resil_backoff_ms(&rt, a, 0), 0);
        CHECK_INT(resil_backoff_ms(&rt, a, cap), cap);
        CHECK_INT(resil_backoff_ms(&rt, a, cap + 1), 0);
        CHECK_INT(resil_backoff_ms(&rt, a, UINT64_MAX), UINT64_MAX % (cap + 1));
    }
    /* huge attempt numbers: no overflow, stays at the max */
    CHECK_INT(resil_backoff_ms(&rt, 33, 250), 250);
    CHECK_INT(resil_backoff_ms(&rt, 64, 250), 250);
    CHECK_INT(resil_backoff_ms(&rt, UINT32_MAX, 250), 250);
    CHECK_INT(resil_backoff_ms(&rt, 1000, UINT64_MAX), UINT64_MAX % 251);
    rt.backoff_base_ms = 60000, rt.backoff_max_ms = 600000;
    CHECK_INT(resil_backoff_ms(&rt, 31, 600000), 600000);
    CHECK_INT(resil_backoff_ms(&rt, 40, 600000), 600000);
    CHECK_INT(resil_backoff_ms(NULL, 1, 12345), 0);

    /* full jitter: over 20,000 draws each attempt covers [0, cap], and its
     * mean (cap / 2) grows with the attempt until the max */
    rt = retry_policy(PROXY_RETRY_5XX);
    uint64_t seed = 42;
    double prev_mean = 0;
    for (unsigned a = 1; a <= 6; a++) {
        uint32_t cap = caps[a], lo = UINT32_MAX, hi = 0;
        double sum = 0;
        enum { N = 20000 };
        for (int i = 0; i < N; i++) {
            uint32_t w = resil_backoff_ms(&rt, a, splitmix(&seed));
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
            sum += w;
        }
        double mean = sum / N;
        CHECK_INT(lo, 0);
        CHECK_INT(hi, cap);
        CHECK(mean > cap * 0.45 && mean < cap * 0.55);
        /* ×2 up to 200, then ×1.25 (250), then ×1 */
        double ratio = (double)caps[a] / caps[a - 1];
        if (a > 1)
            CHECK(mean > prev_mean * ratio * 0.9 && mean < prev_mean * ratio * 1.1);
        prev_mean = mean;
    }
}

/* ---- retry budget ----------------------------------------------------- */

static void test_retry_budget(void)
{
    struct fixture f;
    fixture_init(&f, "budget", 2, NULL);
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    struct proxy_retry rt = retry_policy(PROXY_RETRY_5XX); /* 20 %, min 3 */
    enum resil_retry_refusal why = RESIL_OVER_MAX_RETRIES;

    /* no request in flight: the minimum, 3 */
    for (int i = 0; i < 3; i++) {
        CHECK(resil_retry_acquire(r, &rt, &why));
        CHECK_INT(why, RESIL_OK);
    }
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_BUDGET);
    for (int i = 0; i < 3; i++)
        resil_retry_release(r);

    /* 100 requests in flight, 20 % → 20 retries, the 21st refused */
    for (int i = 0; i < 100; i++)
        CHECK(resil_request_acquire(r));
    int ok = 0;
    while (ok < 1000 && resil_retry_acquire(r, &rt, &why))
        ok++;
    CHECK_INT(ok, 20);
    CHECK_INT(why, RESIL_OVER_BUDGET);
    /* one retry ends: one more may start */
    resil_retry_release(r);
    CHECK(resil_retry_acquire(r, &rt, NULL));
    CHECK(!resil_retry_acquire(r, &rt, NULL));
    /* fewer requests, smaller budget: 20 retries running but 50 requests
     * allow 10, so nothing new until retries end */
    for (int i = 0; i < 50; i++)
        resil_request_release(r);
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_BUDGET);
    for (int i = 0; i < 11; i++)
        resil_retry_release(r);
    CHECK(resil_retry_acquire(r, &rt, NULL)); /* 9 → 10 */
    CHECK(!resil_retry_acquire(r, &rt, NULL));
    for (int i = 0; i < 10; i++)
        resil_retry_release(r);

    /* 5 requests × 20 % = 1, below the minimum: 3 */
    for (int i = 0; i < 45; i++)
        resil_request_release(r);
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.requests, 5);
    CHECK_INT(st.retries, 0);
    ok = 0;
    while (ok < 1000 && resil_retry_acquire(r, &rt, NULL))
        ok++;
    CHECK_INT(ok, 3);
    for (int i = 0; i < 3; i++)
        resil_retry_release(r);

    /* 30 requests, 100 %, min 0: 30; budget 0 %, min 0: none */
    for (int i = 0; i < 25; i++)
        CHECK(resil_request_acquire(r));
    rt.budget_percent = 100, rt.budget_min_concurrency = 0;
    ok = 0;
    while (ok < 1000 && resil_retry_acquire(r, &rt, NULL))
        ok++;
    CHECK_INT(ok, 30);
    for (int i = 0; i < 30; i++)
        resil_retry_release(r);
    rt.budget_percent = 0;
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_BUDGET);
    /* no policy: no budget */
    CHECK(resil_retry_acquire(r, NULL, &why));
    CHECK_INT(why, RESIL_OK);
    resil_retry_release(r);
    for (int i = 0; i < 30; i++)
        resil_request_release(r);

    resil_stats(r, &st);
    CHECK_INT(st.requests, 0);
    CHECK_INT(st.retries, 0);
    CHECK_INT(st.retries_over_budget, 8);
    CHECK_INT(st.overflow_retries, 0);
    resil_cluster_free(r);
}

static void test_max_retries_before_budget(void)
{
    struct fixture f;
    fixture_init(&f, "maxretries", 1, NULL);
    f.c.breaker.max_retries = 2;
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    struct proxy_retry rt = retry_policy(PROXY_RETRY_5XX);
    enum resil_retry_refusal why;
    for (int i = 0; i < 100; i++)
        resil_request_acquire(r);
    CHECK(resil_retry_acquire(r, &rt, &why));
    CHECK(resil_retry_acquire(r, &rt, &why));
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_MAX_RETRIES);
    CHECK(!resil_retry_acquire(r, NULL, &why)); /* the max holds without a policy */
    CHECK_INT(why, RESIL_OVER_MAX_RETRIES);
    /* both exceeded: the max is reported */
    rt.budget_percent = 0, rt.budget_min_concurrency = 0;
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_MAX_RETRIES);
    resil_retry_release(r);
    CHECK(!resil_retry_acquire(r, &rt, &why));
    CHECK_INT(why, RESIL_OVER_BUDGET);
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.overflow_retries, 3);
    CHECK_INT(st.retries_over_budget, 1);
    resil_cluster_free(r);
}

/* ---- circuit breaking ------------------------------------------------- */

static void test_breaker_limits(void)
{
    struct fixture f;
    fixture_init(&f, "breaker", 1, NULL);
    f.c.breaker = (struct proxy_circuit_breaker){ .max_connections = 2, .max_pending_requests = 1,
                                                  .max_requests = 3, .max_retries = 0 };
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    for (int i = 0; i < 3; i++)
        CHECK(resil_request_acquire(r));
    CHECK(!resil_request_acquire(r));
    CHECK(!resil_request_acquire(r));
    resil_request_release(r);
    CHECK(resil_request_acquire(r));
    CHECK(!resil_request_acquire(r));

    CHECK(resil_pending_acquire(r));
    CHECK(!resil_pending_acquire(r));
    resil_pending_release(r);
    CHECK(resil_pending_acquire(r));
    resil_pending_release(r);

    CHECK(resil_conn_allowed(r));
    resil_conn_opened(r);
    CHECK(resil_conn_allowed(r));
    resil_conn_opened(r);
    CHECK(!resil_conn_allowed(r));
    resil_conn_closed(r);
    CHECK(resil_conn_allowed(r));
    resil_conn_closed(r);

    /* max_retries 0 and no policy: unlimited */
    for (int i = 0; i < 1000; i++)
        CHECK(resil_retry_acquire(r, NULL, NULL));
    for (int i = 0; i < 1000; i++)
        resil_retry_release(r);

    for (int i = 0; i < 3; i++)
        resil_request_release(r);
    /* an unbalanced release does not wrap around */
    resil_request_release(r);
    resil_conn_closed(r);
    CHECK(resil_request_acquire(r));
    resil_request_release(r);

    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.overflow_requests, 3);
    CHECK_INT(st.overflow_pending, 1);
    CHECK_INT(st.overflow_connections, 1);
    CHECK_INT(st.overflow_retries, 0);
    CHECK_INT(st.requests, 0);
    CHECK_INT(st.pending, 0);
    CHECK_INT(st.retries, 0);
    CHECK_INT(st.connections, 0);
    resil_cluster_free(r);

    /* all limits 0: unlimited */
    fixture_init(&f, "unlimited", 1, NULL);
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    for (int i = 0; i < 100000; i++) {
        CHECK(resil_request_acquire(r));
        CHECK(resil_pending_acquire(r));
        resil_conn_opened(r);
    }
    CHECK(resil_conn_allowed(r));
    resil_stats(r, &st);
    CHECK_INT(st.requests, 100000);
    CHECK_INT(st.pending, 100000);
    CHECK_INT(st.connections, 100000);
    CHECK_INT(st.overflow_requests + st.overflow_pending + st.overflow_connections, 0);
    resil_cluster_free(r);
}

enum { HAMMER_THREADS = 4, HAMMER_ROUNDS = 200000, HAMMER_MAX_REQ = 8, HAMMER_MAX_RETRIES = 3,
       HAMMER_MAX_PENDING = 2 };

struct hammer {
    struct resil_cluster *r;
    struct proxy_retry rt;
    _Atomic int in_req, in_retry, in_pending; /* held, as the test sees it */
    _Atomic int over;                         /* a limit seen exceeded */
    _Atomic long granted, refused;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < HAMMER_ROUNDS; i++) {
        if (!resil_request_acquire(h->r)) {
            atomic_fetch_add(&h->refused, 1);
            continue;
        }
        atomic_fetch_add(&h->granted, 1);
        if (atomic_fetch_add(&h->in_req, 1) + 1 > HAMMER_MAX_REQ)
            atomic_store(&h->over, 1);
        bool pend = resil_pending_acquire(h->r);
        if (pend && atomic_fetch_add(&h->in_pending, 1) + 1 > HAMMER_MAX_PENDING)
            atomic_store(&h->over, 1);
        resil_conn_opened(h->r);
        bool retry = (i & 1) && resil_retry_acquire(h->r, &h->rt, NULL);
        if (retry && atomic_fetch_add(&h->in_retry, 1) + 1 > HAMMER_MAX_RETRIES)
            atomic_store(&h->over, 1);
        /* outlier state under the same load: one endpoint errors, one not */
        resil_report(h->r, (size_t)(i & 1), 0, (i & 1) ? 503 : 200, (uint64_t)i);
        if (retry) {
            atomic_fetch_sub(&h->in_retry, 1);
            resil_retry_release(h->r);
        }
        resil_conn_closed(h->r);
        if (pend) {
            atomic_fetch_sub(&h->in_pending, 1);
            resil_pending_release(h->r);
        }
        atomic_fetch_sub(&h->in_req, 1);
        resil_request_release(h->r);
    }
    return NULL;
}

static void test_breaker_threads(void)
{
    struct fixture f;
    fixture_init(&f, "hammer", 2, NULL);
    f.c.breaker = (struct proxy_circuit_breaker){ .max_pending_requests = HAMMER_MAX_PENDING,
                                                  .max_requests = HAMMER_MAX_REQ,
                                                  .max_retries = HAMMER_MAX_RETRIES };
    struct hammer h = { .r = resil_cluster_new(&f.c), .rt = retry_policy(PROXY_RETRY_5XX) };
    CHECK(h.r != NULL);
    if (!h.r)
        return;
    h.rt.budget_percent = 100;
    pthread_t t[HAMMER_THREADS];
    for (int i = 0; i < HAMMER_THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, hammer_thread, &h), 0);
    for (int i = 0; i < HAMMER_THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(atomic_load(&h.over), 0);
    CHECK_INT(atomic_load(&h.granted) + atomic_load(&h.refused),
              (long)HAMMER_THREADS * HAMMER_ROUNDS);
    struct resil_stats st;
    resil_stats(h.r, &st);
    CHECK_INT(st.requests, 0);
    CHECK_INT(st.pending, 0);
    CHECK_INT(st.retries, 0);
    CHECK_INT(st.connections, 0);
    CHECK_INT(st.overflow_requests, atomic_load(&h.refused));
    /* endpoint 1 failed all along; with 2 endpoints and 100 % both may go,
     * but endpoint 0 never failed */
    CHECK(st.ejections >= 1);
    CHECK(!resil_is_ejected(h.r, 0, 0));
    CHECK_INT(resil_ejected_count(h.r), 1);
    resil_cluster_free(h.r);
}

/* ---- outlier detection ------------------------------------------------ */

static void test_outlier_consecutive_5xx(void)
{
    struct fixture f;
    fixture_init(&f, "o5xx", 4, NULL);
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    uint64_t t = 1000;
    /* 4 errors, a success, 4 errors: no ejection */
    report_n(r, 0, 4, 0, 500, t);
    resil_report(r, 0, 0, 200, t);
    report_n(r, 0, 4, 0, 503, t);
    CHECK(!resil_is_ejected(r, 0, t));
    /* a 4xx is a success for outlier detection too */
    resil_report(r, 0, 0, 404, t);
    report_n(r, 0, 4, 0, 500, t);
    CHECK(!resil_is_ejected(r, 0, t));
    /* unrelated local errors neither count nor restart the run */
    resil_report(r, 0, -ENOMEM, 0, t);
    CHECK(!resil_is_ejected(r, 0, t));
    /* the 5th in a row: a reset counts as a 5xx */
    resil_report(r, 0, -ECONNRESET, 0, t);
    CHECK(resil_is_ejected(r, 0, t));
    CHECK_INT(resil_ejected_count(r), 1);
    /* other endpoints untouched */
    CHECK(!resil_is_ejected(r, 1, t));
    /* mixed local failures and statuses make a run */
    resil_report(r, 1, -ECONNREFUSED, 0, t);
    resil_report(r, 1, -ETIMEDOUT, 0, t);
    resil_report(r, 1, 0, 502, t);
    resil_report(r, 1, -EPIPE, 0, t);
    CHECK(!resil_is_ejected(r, 1, t));
    resil_report(r, 1, 0, 599, t);
    CHECK(resil_is_ejected(r, 1, t));
    CHECK_INT(resil_ejected_count(r), 2);
    /* out of range: ignored */
    resil_report(r, 99, 0, 500, t);
    CHECK(!resil_is_ejected(r, 99, t));
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.ejections, 2);
    CHECK_INT(st.ejected, 2);
    resil_cluster_free(r);
}

static void test_outlier_gateway_errors(void)
{
    struct fixture f;
    fixture_init(&f, "ogw", 4, NULL);
    f.c.outlier.consecutive_5xx = 0; /* off */
    f.c.outlier.consecutive_gateway_errors = 3;
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    uint64_t t = 5;
    /* 500 and resets are not gateway errors and break a run */
    report_n(r, 0, 2, 0, 502, t);
    resil_report(r, 0, 0, 500, t);
    report_n(r, 0, 2, 0, 504, t);
    resil_report(r, 0, -ECONNRESET, 0, t);
    report_n(r, 0, 2, 0, 503, t);
    resil_report(r, 0, 0, 200, t);
    report_n(r, 0, 10, 0, 500, t); /* the 5xx trigger is off */
    CHECK(!resil_is_ejected(r, 0, t));
    /* 502, 503, connect failure */
    resil_report(r, 0, 0, 502, t);
    resil_report(r, 0, 0, 503, t);
    CHECK(!resil_is_ejected(r, 0, t));
    resil_report(r, 0, -ECONNREFUSED, 0, t);
    CHECK(resil_is_ejected(r, 0, t));
    /* 504, timeout, unreachable */
    resil_report(r, 1, 0, 504, t);
    resil_report(r, 1, -ETIMEDOUT, 0, t);
    resil_report(r, 1, -EHOSTUNREACH, 0, t);
    CHECK(resil_is_ejected(r, 1, t));
    CHECK_INT(resil_ejected_count(r), 2);
    resil_cluster_free(r);

    /* both triggers on: whichever comes first ejects, once */
    fixture_init(&f, "oboth", 4, NULL);
    f.c.outlier.consecutive_gateway_errors = 2;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 2, 0, 503, t);
    CHECK(resil_is_ejected(r, 0, t));
    report_n(r, 1, 4, 0, 500, t);
    resil_report(r, 1, 0, 502, t); /* 5th 5xx, 1st gateway error */
    CHECK(resil_is_ejected(r, 1, t));
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.ejections, 2);
    resil_cluster_free(r);

    /* disabled: nothing is ever ejected */
    fixture_init(&f, "off", 4, NULL);
    f.c.outlier.enabled = false;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 100, 0, 503, t);
    CHECK(!resil_is_ejected(r, 0, t));
    CHECK_INT(resil_ejected_count(r), 0);
    resil_cluster_free(r);
}

static void test_outlier_ejection_time(void)
{
    struct fixture f;
    fixture_init(&f, "otime", 4, NULL); /* base 30 s, interval 10 s */
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    uint64_t t = 1000;
    report_n(r, 0, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t));
    CHECK(resil_is_ejected(r, 0, t + 29999));
    CHECK(!resil_is_ejected(r, 0, t + 30000)); /* 30 s: base × 1 */
    /* reports while ejected (late answers) are ignored */
    report_n(r, 0, 20, 0, 500, t + 100);
    /* the books keep it until a tick */
    CHECK_INT(resil_ejected_count(r), 1);
    resil_tick(r, t + 20000);
    CHECK_INT(resil_ejected_count(r), 1);
    resil_tick(r, t + 30000);
    CHECK_INT(resil_ejected_count(r), 0);
    CHECK(!resil_is_ejected(r, 0, t + 30000));
    /* ejected again at once: 60 s, twice the base */
    t += 30000;
    report_n(r, 0, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t + 59999));
    CHECK(!resil_is_ejected(r, 0, t + 60000));
    resil_tick(r, t + 60000);
    CHECK_INT(resil_ejected_count(r), 0);
    /* a third time, 5 s after re-admission: 90 s */
    t += 65000;
    report_n(r, 0, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t + 89999));
    CHECK(!resil_is_ejected(r, 0, t + 90000));
    resil_tick(r, t + 90000); /* re-admitted at t + 90000 */
    t += 90000;
    /* admitted for whole intervals: the multiplier drops 3 → 2 → 1; ticks
     * more often than the interval do not drop it faster */
    resil_tick(r, t + 5000);  /* half an interval */
    resil_tick(r, t + 10000); /* 3 → 2 */
    resil_tick(r, t + 10001);
    resil_tick(r, t + 15000);
    resil_tick(r, t + 20000); /* 2 → 1 */
    t += 20000;
    report_n(r, 0, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t + 59999)); /* (1 + 1) × 30 s */
    CHECK(!resil_is_ejected(r, 0, t + 60000));
    resil_tick(r, t + 60000);
    t += 60000;
    /* long healthy: back to 0, the next ejection is 30 s again */
    for (int i = 1; i <= 5; i++)
        resil_tick(r, t + (uint64_t)i * 10000);
    t += 50000;
    report_n(r, 0, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t + 29999));
    CHECK(!resil_is_ejected(r, 0, t + 30000));
    /* a tick late by more than the remaining time re-admits */
    resil_tick(r, t + 45000);
    CHECK_INT(resil_ejected_count(r), 0);
    resil_cluster_free(r);

    /* the cap: 300 s, however often it happens */
    fixture_init(&f, "ocap", 4, NULL);
    f.c.outlier.base_ejection_ms = 100000;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    t = 0;
    static const uint64_t want[] = { 100000, 200000, 300000, 300000, 300000 };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        report_n(r, 2, 5, 0, 503, t);
        CHECK(resil_is_ejected(r, 2, t + want[i] - 1));
        CHECK(!resil_is_ejected(r, 2, t + want[i]));
        t += want[i];
        resil_tick(r, t);
    }
    /* the multiplier stopped at 3 (not 5), so two intervals bring it to 1
     * and the next ejection, the second "in a row", lasts 200 s */
    resil_tick(r, t + 10000);
    resil_tick(r, t + 20000);
    t += 20000;
    report_n(r, 2, 5, 0, 503, t);
    CHECK(resil_is_ejected(r, 2, t + 199999));
    CHECK(!resil_is_ejected(r, 2, t + 200000));
    resil_cluster_free(r);
}

static void test_outlier_max_percent(void)
{
    struct fixture f;
    uint64_t t = 100;
    struct resil_stats st;

    /* 3 endpoints, 10 %: 0.3 rounds to 0, but one may always go */
    fixture_init(&f, "p3", 3, NULL);
    f.c.outlier.max_ejection_percent = 10;
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 5, 0, 500, t);
    report_n(r, 1, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t));
    CHECK(!resil_is_ejected(r, 1, t));
    CHECK_INT(resil_ejected_count(r), 1);
    resil_stats(r, &st);
    CHECK_INT(st.ejections, 1);
    CHECK_INT(st.ejections_refused, 1);
    /* the refused run restarted: 4 more errors are not enough ... */
    report_n(r, 1, 4, 0, 500, t);
    resil_stats(r, &st);
    CHECK_INT(st.ejections_refused, 1);
    /* ... and once endpoint 0 is back, endpoint 1's next run ejects it,
     * without waiting for a tick */
    resil_report(r, 1, 0, 500, t + 30000);
    CHECK(resil_is_ejected(r, 1, t + 30000));
    CHECK(!resil_is_ejected(r, 0, t + 30000));
    CHECK_INT(resil_ejected_count(r), 1);
    resil_cluster_free(r);

    /* 10 endpoints, 30 %: 3 */
    fixture_init(&f, "p10", 10, NULL);
    f.c.outlier.max_ejection_percent = 30;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    for (size_t i = 0; i < 10; i++)
        report_n(r, i, 5, 0, 503, t);
    CHECK_INT(resil_ejected_count(r), 3);
    int ejected = 0;
    for (size_t i = 0; i < 10; i++)
        ejected += resil_is_ejected(r, i, t);
    CHECK_INT(ejected, 3);
    CHECK(resil_is_ejected(r, 0, t) && resil_is_ejected(r, 2, t) && !resil_is_ejected(r, 3, t));
    resil_stats(r, &st);
    CHECK_INT(st.ejections_refused, 7);
    resil_cluster_free(r);

    /* a single endpoint is never ejected below 100 % */
    fixture_init(&f, "p1", 1, NULL);
    f.c.outlier.max_ejection_percent = 99;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 50, 0, 503, t);
    CHECK(!resil_is_ejected(r, 0, t));
    resil_cluster_free(r);
    f.c.outlier.max_ejection_percent = 100;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 5, 0, 503, t);
    CHECK(resil_is_ejected(r, 0, t));
    resil_cluster_free(r);

    /* 0 %: still one of two */
    fixture_init(&f, "p0", 2, NULL);
    f.c.outlier.max_ejection_percent = 0;
    r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    report_n(r, 0, 5, 0, 503, t);
    report_n(r, 1, 5, 0, 503, t);
    CHECK_INT(resil_ejected_count(r), 1);
    resil_cluster_free(r);
}

static void test_outlier_inherit(void)
{
    static const char *const old_names[] = { "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80" };
    static const char *const new_names[] = { "10.0.0.3:80", "10.0.0.2:80", "10.0.0.4:80",
                                              "10.0.0.1:80" };
    struct fixture fo, fn;
    fixture_init(&fo, "svc", 3, old_names);
    fixture_init(&fn, "svc", 4, new_names);
    struct resil_cluster *old = resil_cluster_new(&fo.c);
    struct resil_cluster *r = resil_cluster_new(&fn.c);
    CHECK(old && r);
    if (!old || !r)
        goto out;
    uint64_t t = 100000;
    report_n(old, 1, 5, 0, 500, t);          /* .2 ejected until t + 30 s */
    report_n(old, 2, 4, 0, 500, t);          /* .3 one error from ejection */
    report_n(old, 0, 5, 0, 500, t - 35000);  /* .1 ejected before, over 5 s ago */
    resil_tick(old, t);
    CHECK_INT(resil_ejected_count(old), 1);
    CHECK(resil_request_acquire(old));

    resil_cluster_inherit(r, old);
    CHECK_INT(resil_ejected_count(r), 1);
    CHECK(resil_is_ejected(r, 1, t + 29999)); /* .2 at its new index */
    CHECK(!resil_is_ejected(r, 1, t + 30000));
    CHECK(!resil_is_ejected(r, 0, t));
    CHECK(!resil_is_ejected(r, 2, t));
    CHECK(!resil_is_ejected(r, 3, t));
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK_INT(st.ejections, 2);
    CHECK_INT(st.requests, 0); /* in-flight counts stay with old */
    /* .3's run goes on */
    resil_report(r, 0, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t));
    /* .1 keeps its multiplier: its second ejection is 60 s */
    report_n(r, 3, 5, 0, 500, t);
    CHECK(resil_is_ejected(r, 3, t + 59999));
    CHECK(!resil_is_ejected(r, 3, t + 60000));
    resil_request_release(old);
    resil_cluster_free(r);
    r = NULL;

    /* another cluster's state, or outlier detection off: nothing carried */
    fixture_init(&fn, "other", 4, new_names);
    r = resil_cluster_new(&fn.c);
    CHECK(r != NULL);
    if (!r)
        goto out;
    resil_cluster_inherit(r, old);
    CHECK_INT(resil_ejected_count(r), 0);
    CHECK(!resil_is_ejected(r, 1, t));
    resil_cluster_free(r);
    fixture_init(&fn, "svc", 4, new_names);
    fn.c.outlier.enabled = false;
    r = resil_cluster_new(&fn.c);
    CHECK(r != NULL);
    if (!r)
        goto out;
    resil_cluster_inherit(r, old);
    CHECK_INT(resil_ejected_count(r), 0);
    CHECK(!resil_is_ejected(r, 1, t));
    resil_cluster_free(r);
    r = NULL;

    /* a lower threshold in the new config: an inherited run already past it
     * ejects on the next error */
    fixture_init(&fn, "svc", 4, new_names);
    fn.c.outlier.consecutive_5xx = 2;
    r = resil_cluster_new(&fn.c);
    CHECK(r != NULL);
    if (!r)
        goto out;
    resil_cluster_inherit(r, old); /* .3 still has 4 */
    resil_report(r, 0, 0, 500, t);
    CHECK(resil_is_ejected(r, 0, t));
out:
    resil_cluster_free(r);
    resil_cluster_free(old);
}

struct outlier_args {
    struct resil_cluster *r;
    unsigned seed;
};

static void *outlier_thread(void *arg)
{
    struct outlier_args *a = arg;
    uint64_t s = a->seed;
    for (int i = 0; i < 100000; i++) {
        uint64_t x = splitmix(&s);
        uint64_t now = (uint64_t)i; /* each thread's own clock: ejections last 1 ms..(cap) */
        /* mostly errors, on every endpoint, with ticks from everyone */
        resil_report(a->r, (size_t)(x % 10), 0, (x >> 8) % 8 ? 503 : 200, now);
        if (i % 1000 == 0)
            resil_tick(a->r, now);
        if (resil_ejected_count(a->r) > 3)
            return (void *)1;
    }
    return NULL;
}

static void test_outlier_threads(void)
{
    /* 4 threads ejecting from 10 endpoints at 30 % and re-admitting them:
     * never more than 3 in the books, which agree with resil_is_ejected */
    struct fixture f;
    fixture_init(&f, "othreads", 10, NULL);
    f.c.outlier.max_ejection_percent = 30;
    f.c.outlier.consecutive_5xx = 3;
    f.c.outlier.base_ejection_ms = 50;
    f.c.outlier.interval_ms = 100;
    struct resil_cluster *r = resil_cluster_new(&f.c);
    CHECK(r != NULL);
    if (!r)
        return;
    pthread_t t[4];
    struct outlier_args a[4];
    for (unsigned i = 0; i < 4; i++) {
        a[i] = (struct outlier_args){ r, i + 1 };
        CHECK_INT(pthread_create(&t[i], NULL, outlier_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *res = NULL;
        pthread_join(t[i], &res);
        CHECK(res == NULL);
    }
    struct resil_stats st;
    resil_stats(r, &st);
    CHECK(st.ejections > 10);
    CHECK(st.ejected <= 3);
    /* after the last ejection is over, one tick empties the books */
    resil_tick(r, 1000000000);
    CHECK_INT(resil_ejected_count(r), 0);
    for (size_t i = 0; i < 10; i++)
        CHECK(!resil_is_ejected(r, i, 1000000000));
    resil_cluster_free(r);
}

static void test_null_cluster(void)
{
    /* no state (a config built without it): everything allowed, nothing ejected */
    struct proxy_retry rt = retry_policy(PROXY_RETRY_5XX);
    enum resil_retry_refusal why = RESIL_OVER_BUDGET;
    CHECK(resil_request_acquire(NULL));
    CHECK(resil_pending_acquire(NULL));
    CHECK(resil_conn_allowed(NULL));
    CHECK(resil_retry_acquire(NULL, &rt, &why));
    CHECK_INT(why, RESIL_OK);
    resil_request_release(NULL);
    resil_pending_release(NULL);
    resil_retry_release(NULL);
    resil_conn_opened(NULL);
    resil_conn_closed(NULL);
    report_n(NULL, 0, 10, 0, 503, 1);
    resil_tick(NULL, 1);
    CHECK(!resil_is_ejected(NULL, 0, 1));
    CHECK_INT(resil_ejected_count(NULL), 0);
    struct resil_stats st;
    memset(&st, 0xa5, sizeof st);
    resil_stats(NULL, &st);
    CHECK_INT(st.ejections + st.requests + st.ejected, 0);
    resil_cluster_inherit(NULL, NULL);
    resil_cluster_free(NULL);
    CHECK(resil_cluster_new(NULL) == NULL);
}

int main(void)
{
    RUN(test_should_retry_matrix);
    RUN(test_should_retry_idempotency);
    RUN(test_backoff);
    RUN(test_retry_budget);
    RUN(test_max_retries_before_budget);
    RUN(test_breaker_limits);
    RUN(test_breaker_threads);
    RUN(test_outlier_consecutive_5xx);
    RUN(test_outlier_gateway_errors);
    RUN(test_outlier_ejection_time);
    RUN(test_outlier_max_percent);
    RUN(test_outlier_inherit);
    RUN(test_outlier_threads);
    RUN(test_null_cluster);
    return check_done();
}
