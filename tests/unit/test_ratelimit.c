/* ratelimit.h's local limiter: GCRA to the microsecond (bursts, one request
 * per emission interval, refill), the decision's header fields, keys and
 * limit names kept apart (and shared across a reload that keeps the name),
 * the memory bound with eviction, threads racing on one key, and the
 * module's metrics through promtool. The global limiter is in
 * tests/integration/test_ratelimit_redis*.c. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/metrics.h"
#include "proxy/ratelimit.h"

static struct proxy_rate_limit limit(const char *name, uint32_t requests, uint32_t period_ms,
                                     uint32_t burst)
{
    return (struct proxy_rate_limit){ .name = (char *)name, .requests = requests,
                                      .period_ms = period_ms, .burst = burst };
}

static struct rl_decision check(struct rl_local *rl, const struct proxy_rate_limit *cfg,
                                const char *key, uint64_t now_ms)
{
    struct rl_decision d;
    memset(&d, 0xa5, sizeof d); /* every field must be written */
    rl_local_check(rl, cfg, str_from_cstr(key), now_ms, &d);
    return d;
}

/* How many of n checks at now_ms are allowed. */
static int allowed_of(struct rl_local *rl, const struct proxy_rate_limit *cfg, const char *key,
                      uint64_t now_ms, int n)
{
    int a = 0;
    for (int i = 0; i < n; i++)
        a += check(rl, cfg, key, now_ms).allowed;
    return a;
}

/* The value of the series line "series VALUE" in the default registry. */
static double metric(const char *series)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    double v = -1;
    if (metrics_render(metrics_default(), &b) == 0) {
        buf_append(&b, "", 1);
        char pat[256];
        snprintf(pat, sizeof pat, "\n%s ", series);
        const char *p = strstr(b.data + b.rpos, pat);
        if (p)
            v = strtod(p + strlen(pat), NULL);
    }
    buf_free(&b);
    return v;
}

/* 10 per second, burst 10: T = 100 ms. Ten at once, then exactly one per
 * 100 ms, never a request early. */
static void test_gcra_exact(void)
{
    struct rl_local *rl = rl_local_new(1000);
    CHECK(rl != NULL);
    if (!rl)
        return;
    struct proxy_rate_limit cfg = limit("api", 10, 1000, 0);
    uint64_t t0 = 50000;
    for (int i = 0; i < 10; i++) {
        struct rl_decision d = check(rl, &cfg, "k", t0);
        CHECK(d.allowed);
        CHECK(!d.failed_open);
        CHECK_INT(d.remaining, 9 - i);
    }
    struct rl_decision d = check(rl, &cfg, "k", t0);
    CHECK(!d.allowed);
    CHECK(!d.failed_open);
    /* Denials do not consume: the state after 10 more is the same. */
    CHECK_INT(allowed_of(rl, &cfg, "k", t0, 10), 0);
    for (int k = 1; k <= 20; k++) {
        uint64_t t = t0 + 100 * (uint64_t)k;
        CHECK_INT(allowed_of(rl, &cfg, "k", t - 1, 3), 0); /* 1 ms early: no */
        d = check(rl, &cfg, "k", t);
        CHECK(d.allowed);
        CHECK_INT(d.remaining, 0);
        CHECK(!check(rl, &cfg, "k", t).allowed);
    }
    /* Idle for a full period: the whole burst is back, and no more. */
    uint64_t t1 = t0 + 2000 + 1000;
    CHECK_INT(allowed_of(rl, &cfg, "k", t1, 15), 10);
    /* Idle for half of it: half the burst. */
    CHECK_INT(allowed_of(rl, &cfg, "k", t1 + 500, 15), 5);

    /* burst ≠ requests: 2 per second (T = 500 ms), bursts of 5. */
    struct proxy_rate_limit b5 = limit("b5", 2, 1000, 5);
    CHECK_INT(allowed_of(rl, &b5, "k", 1000, 8), 5);
    CHECK_INT(allowed_of(rl, &b5, "k", 1499, 3), 0);
    CHECK_INT(allowed_of(rl, &b5, "k", 1500, 3), 1);
    CHECK_INT(allowed_of(rl, &b5, "k", 2000, 3), 1);
    CHECK_INT(allowed_of(rl, &b5, "k", 2000 + 2500, 9), 5);

    /* burst 1: strictly one per T. */
    struct proxy_rate_limit one = limit("one", 1, 250, 1);
    for (uint64_t t = 0; t < 2000; t += 50)
        CHECK_INT(check(rl, &one, "k", 10000 + t).allowed, t % 250 == 0);

    /* T not a whole number of ms: 3 per second → T = 333333 µs. Over a
     * minute exactly 3 * 60 pass (plus the initial burst of 3). */
    struct proxy_rate_limit three = limit("three", 3, 1000, 0);
    int a = 0;
    for (uint64_t t = 0; t < 60000; t += 10)
        a += check(rl, &three, "k", 100000 + t).allowed;
    CHECK_INT(a, 3 + 180 - 1); /* the 180th refill lands at exactly 60 s, past the loop */
    rl_local_free(rl);
}

/* The fields behind RateLimit-Limit, -Remaining, -Reset and Retry-After. */
static void test_decision_fields(void)
{
    struct rl_local *rl = rl_local_new(100);
    if (!rl) {
        CHECK(rl != NULL);
        return;
    }
    /* 10 per minute: T = 6 s. */
    struct proxy_rate_limit cfg = limit("min", 10, 60000, 0);
    uint64_t t0 = 1000000;
    struct rl_decision d = check(rl, &cfg, "c", t0);
    CHECK(d.allowed);
    CHECK_INT(d.limit, 10);
    CHECK_INT(d.remaining, 9);
    CHECK_INT(d.reset_s, 6); /* one request's worth to refill */
    CHECK_INT(d.retry_after_s, 0);
    for (int i = 0; i < 9; i++)
        d = check(rl, &cfg, "c", t0);
    CHECK(d.allowed);
    CHECK_INT(d.remaining, 0);
    CHECK_INT(d.reset_s, 60);
    CHECK_INT(d.retry_after_s, 0);
    d = check(rl, &cfg, "c", t0);
    CHECK(!d.allowed);
    CHECK_INT(d.limit, 10);
    CHECK_INT(d.remaining, 0);
    CHECK_INT(d.reset_s, 60);
    CHECK_INT(d.retry_after_s, 6);
    /* 1.5 s later: 4.5 s to wait, rounded up; 58.5 s to full, rounded up. */
    d = check(rl, &cfg, "c", t0 + 1500);
    CHECK(!d.allowed);
    CHECK_INT(d.retry_after_s, 5);
    CHECK_INT(d.reset_s, 59);
    /* 1 ms before the slot: still at least 1 s (Retry-After: 0 would invite a retry storm). */
    d = check(rl, &cfg, "c", t0 + 5999);
    CHECK(!d.allowed);
    CHECK_INT(d.retry_after_s, 1);
    d = check(rl, &cfg, "c", t0 + 6000);
    CHECK(d.allowed);
    CHECK_INT(d.remaining, 0);
    CHECK_INT(d.reset_s, 60);
    /* Long idle: a fresh bucket. */
    d = check(rl, &cfg, "c", t0 + 600000);
    CHECK(d.allowed);
    CHECK_INT(d.remaining, 9);
    CHECK_INT(d.reset_s, 6);

    /* Sub-second T: reset rounds up to 1 s. */
    struct proxy_rate_limit fast = limit("fast", 100, 1000, 20);
    d = check(rl, &fast, "c", t0);
    CHECK_INT(d.limit, 20);
    CHECK_INT(d.remaining, 19);
    CHECK_INT(d.reset_s, 1);

    /* Bad config (the loader refuses it): allowed, flagged. */
    struct proxy_rate_limit bad = limit("bad", 0, 1000, 0);
    d = check(rl, &bad, "c", t0);
    CHECK(d.allowed && d.failed_open);
    bad = limit("bad", 5, 0, 0);
    d = check(rl, &bad, "c", t0);
    CHECK(d.allowed && d.failed_open);
    CHECK_INT(d.limit, 5);
    rl_local_check(rl, NULL, STR_LIT("c"), t0, &d);
    CHECK(d.allowed && d.failed_open);

    /* Extreme but valid configs: 1e8 per ms (T clamps to 1 µs) and one
     * per day with a burst of 1e8 (tau clamps); nothing overflows. */
    struct proxy_rate_limit huge = limit("huge", 100000000, 1, 100000000);
    d = check(rl, &huge, "c", t0);
    CHECK(d.allowed);
    CHECK_INT(d.remaining, 100000000 - 1);
    struct proxy_rate_limit slow = limit("slow", 1, 86400000, 100000000);
    d = check(rl, &slow, "c", UINT64_MAX);
    CHECK(d.allowed);
    CHECK_INT(d.limit, 100000000);
    CHECK(d.remaining > 0);
    rl_local_free(rl);
}

/* Keys and names are separate buckets; a reload that keeps the name keeps
 * the state. */
static void test_keys_and_names(void)
{
    struct rl_local *rl = rl_local_new(1000);
    if (!rl) {
        CHECK(rl != NULL);
        return;
    }
    struct proxy_rate_limit a = limit("a", 3, 1000, 0), b = limit("b", 3, 1000, 0);
    uint64_t t = 7000;
    CHECK_INT(allowed_of(rl, &a, "10.0.0.1", t, 5), 3);
    CHECK_INT(allowed_of(rl, &a, "10.0.0.2", t, 5), 3);
    CHECK_INT(allowed_of(rl, &b, "10.0.0.1", t, 5), 3);
    CHECK_INT(allowed_of(rl, &a, "", t, 5), 3); /* the empty key is a key too */
    /* (name, key) pairs that concatenate alike stay apart. */
    struct proxy_rate_limit ab = limit("ab", 1, 1000, 0), a1 = limit("a", 1, 1000, 0);
    CHECK_INT(allowed_of(rl, &ab, "c", t, 2), 1);
    CHECK_INT(allowed_of(rl, &a1, "bc", t, 2), 1);
    /* Binary keys: an embedded NUL is part of the key. */
    struct rl_decision d;
    rl_local_check(rl, &b, str_make("x\0y", 3), t, &d);
    CHECK(d.allowed);
    rl_local_check(rl, &b, str_make("x\0z", 3), t, &d);
    CHECK_INT(d.remaining, 2);

    /* A reloaded config: a new object with the same name, another rate. */
    char *name = strdup("a");
    struct proxy_rate_limit reloaded = limit(name, 30, 10000, 3);
    CHECK_INT(allowed_of(rl, &reloaded, "10.0.0.1", t, 5), 0);
    free(name);

    /* Long names and keys (past the on-stack hashing buffer) work alike. */
    char longname[1100], longkey[2000], longkey2[2000];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    memcpy(longkey2, longkey, sizeof longkey);
    longkey2[1500] = 'K';
    struct proxy_rate_limit ln = limit(longname, 2, 1000, 0);
    CHECK_INT(allowed_of(rl, &ln, longkey, t, 4), 2);
    CHECK_INT(allowed_of(rl, &ln, longkey2, t, 4), 2);
    CHECK_INT(allowed_of(rl, &ln, longkey, t, 4), 0);
    rl_local_free(rl);
}

/* At most max_keys entries, whatever comes; an expired entry goes first and
 * costs nothing, live state evicted is counted. */
static void test_eviction_bound(void)
{
    CHECK(rl_local_new(0) == NULL);
    struct rl_local *rl = rl_local_new(1000);
    if (!rl) {
        CHECK(rl != NULL);
        return;
    }
    struct proxy_rate_limit cfg = limit("ip", 5, 1000, 0);
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK_INT(allowed_of(rl, &cfg, key, 1000 + (uint64_t)i / 100, 1), 1);
        if (i % 10000 == 0)
            CHECK(rl_local_count(rl) <= 1000);
    }
    CHECK_INT(rl_local_count(rl), 1000);
    /* A key used a moment ago is still limited (it is among the newest). */
    CHECK_INT(allowed_of(rl, &cfg, "hot", 3000, 10), 5);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "x%d", i);
        allowed_of(rl, &cfg, key, 3000, 1);
    }
    CHECK_INT(allowed_of(rl, &cfg, "hot", 3000, 1), 0);
    rl_local_free(rl);

    /* One entry: a second key replaces the first. */
    rl = rl_local_new(1);
    if (!rl) {
        CHECK(rl != NULL);
        return;
    }
    struct proxy_rate_limit one = limit("one", 1, 1000, 1);
    double ev0 = metric("strata_proxy_ratelimit_local_evictions_total");
    CHECK(ev0 >= 0);
    CHECK_INT(allowed_of(rl, &one, "a", 10000, 2), 1);
    CHECK_INT(allowed_of(rl, &one, "b", 10000, 2), 1); /* a's live state evicted */
    CHECK(metric("strata_proxy_ratelimit_local_evictions_total") == ev0 + 1);
    CHECK_INT(allowed_of(rl, &one, "a", 10000, 2), 1); /* forgotten: a fresh bucket */
    CHECK(metric("strata_proxy_ratelimit_local_evictions_total") == ev0 + 2);
    /* a's TAT (11000) has passed: replacing it loses nothing, counts nothing. */
    CHECK_INT(allowed_of(rl, &one, "c", 11000, 1), 1);
    CHECK(metric("strata_proxy_ratelimit_local_evictions_total") == ev0 + 2);
    CHECK_INT(rl_local_count(rl), 1);
    rl_local_free(rl);
}

/* Threads racing on one key at one instant: exactly the burst passes. */
struct racer {
    struct rl_local *rl;
    const struct proxy_rate_limit *cfg;
    uint64_t now;
    int allowed, own_allowed;
    int id;
    pthread_barrier_t *go;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char own[16];
    snprintf(own, sizeof own, "own%d", r->id);
    pthread_barrier_wait(r->go);
    for (int i = 0; i < 20000; i++) {
        struct rl_decision d;
        rl_local_check(r->rl, r->cfg, STR_LIT("shared"), r->now, &d);
        r->allowed += d.allowed;
        /* Other shards at the same time, and keys of its own. */
        rl_local_check(r->rl, r->cfg, str_from_cstr(own), r->now, &d);
        r->own_allowed += d.allowed;
    }
    return NULL;
}

static void test_threads(void)
{
    struct rl_local *rl = rl_local_new(10000);
    if (!rl) {
        CHECK(rl != NULL);
        return;
    }
    struct proxy_rate_limit cfg = limit("race", 1000, 1000, 777);
    for (int nthreads = 2; nthreads <= 4; nthreads++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, (unsigned)nthreads);
        struct racer r[4];
        pthread_t th[4];
        uint64_t now = 100000 * (uint64_t)nthreads; /* a fresh bucket each round */
        for (int i = 0; i < nthreads; i++) {
            r[i] = (struct racer){ .rl = rl, .cfg = &cfg, .now = now, .id = i, .go = &go };
            pthread_create(&th[i], NULL, race, &r[i]);
        }
        int total = 0;
        for (int i = 0; i < nthreads; i++) {
            pthread_join(th[i], NULL);
            total += r[i].allowed;
            CHECK_INT(r[i].own_allowed, 777);
        }
        CHECK_INT(total, 777);
        pthread_barrier_destroy(&go);
    }
    rl_local_free(rl);
}

/* The module's families render and pass promtool's linter. */
static void test_metrics_promtool(void)
{
    rl_metrics_init();
    rl_metrics_init(); /* idempotent */
    CHECK(metric("strata_proxy_ratelimit_redis_failures_total") >= 0);
    CHECK(metric("strata_proxy_ratelimit_redis_failures_total") == (double)rl_global_failures());
    CHECK(metric("strata_proxy_ratelimit_local_evictions_total") >= 0);
    if (system("promtool --version >/dev/null 2>&1") != 0) {
        CHECK(!"promtool not found (Debian's 'prometheus' package)");
        return;
    }
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_INT(metrics_render(metrics_default(), &b), 0);
    char path[] = "/tmp/strata-rl-metrics-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_INT(write(fd, b.data + b.rpos, buf_len(&b)), (long long)buf_len(&b));
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
        FILE *p = popen(cmd, "r");
        char said[4096] = "";
        size_t n = p ? fread(said, 1, sizeof said - 1, p) : 0;
        said[n] = '\0';
        int st = p ? pclose(p) : -1;
        CHECK(st == 0);
        CHECK_STR(said, "");
        unlink(path);
    }
    buf_free(&b);
}

int main(void)
{
    RUN(test_gcra_exact);
    RUN(test_decision_fields);
    RUN(test_keys_and_names);
    RUN(test_eviction_bound);
    RUN(test_threads);
    RUN(test_metrics_promtool);
    return check_done();
}
