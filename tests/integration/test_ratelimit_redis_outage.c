/* ratelimit.h's global limiter when Redis is slow, stopped, and started
 * again: checks fail open (allowed, failed_open, counted in
 * rl_global_failures and strata_proxy_ratelimit_redis_failures_total)
 * within the command timeout, and limiting resumes on its own once Redis
 * is back — through EVAL, since a restarted Redis has lost its script
 * cache. Pauses and stops the shared Redis, so it runs alone (RUN_SERIAL,
 * by its name). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/redis.h"
/* Integration tests link strata_core only (CMakeLists.txt), not
 * strata_proxy: the module is compiled in. */
#include "proxy/ratelimit.c"

static struct loop *L;
static bool in_call;

static int harness(const char *fn)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash -c '. \"%s/tests/harness/servers.sh\" && %s'",
             src ? src : ".", fn);
    return system(cmd);
}

static uint64_t now_ms(void)
{
    loop_update_time(L);
    return loop_now_ms(L);
}

static bool run_until(const int *count, int want, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (*count < want && now_ms() < end)
        loop_run_once(L, 5);
    return *count >= want;
}

static void run_for(uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        loop_run_once(L, 5);
}

static bool wait_state(struct rl_global *g, bool up, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (rl_global_is_connected(g) != up && now_ms() < end)
        loop_run_once(L, 5);
    return rl_global_is_connected(g) == up;
}

struct answers {
    int n;
    int allowed, denied, failed_open, in_call;
    struct rl_decision last;
};

static void on_decision(const struct rl_decision *d, void *arg)
{
    struct answers *a = arg;
    a->last = *d;
    a->n++;
    a->allowed += d->allowed && !d->failed_open;
    a->denied += !d->allowed;
    a->failed_open += d->failed_open;
    a->in_call += in_call;
}

static int ask(struct rl_global *g, const struct proxy_rate_limit *cfg, const char *key,
               struct answers *a)
{
    in_call = true;
    int rc = rl_global_check(g, cfg, str_from_cstr(key), on_decision, a, NULL);
    in_call = false;
    return rc;
}

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

static void raw_cb(int err, redisReply *r, void *arg)
{
    *(int *)arg = err ? err : 1;
}

static char name[96];

/* Exactly burst 3 pass on a key no earlier run used. */
static void check_limiting(struct rl_global *g, const char *key)
{
    struct proxy_rate_limit cfg = { .name = name, .requests = 3, .period_ms = 60000,
                                    .global = true };
    struct answers a = { 0 };
    for (int i = 0; i < 5; i++)
        CHECK_INT(ask(g, &cfg, key, &a), 0);
    CHECK(run_until(&a.n, 5, 2000));
    CHECK_INT(a.failed_open, 0);
    CHECK_INT(a.allowed, 3);
    CHECK_INT(a.denied, 2);
    CHECK_INT(a.in_call, 0);
}

/* Redis answers later than RL_GLOBAL_TIMEOUT_MS: fail open at the timeout. */
static void test_slow(void)
{
    const char *url = getenv("STRATA_TEST_REDIS_URL");
    struct rl_global *g = rl_global_new(L, url);
    struct redis_client *pauser = redis_client_new(L, &(struct redis_config){ .url = url });
    CHECK(g && pauser);
    if (!g || !pauser)
        goto out;
    CHECK(wait_state(g, true, 3000));
    uint64_t end = now_ms() + 3000;
    while (!redis_is_connected(pauser) && now_ms() < end)
        loop_run_once(L, 5);
    check_limiting(g, "slow-before");

    int paused = 0;
    redis_command(pauser, raw_cb, &paused, "CLIENT PAUSE 800 ALL");
    run_until(&paused, 1, 2000);
    CHECK_INT(paused, 1);
    uint64_t failures = rl_global_failures();
    double m = metric("strata_proxy_ratelimit_redis_failures_total");
    struct proxy_rate_limit cfg = { .name = name, .requests = 1, .period_ms = 60000,
                                    .global = true };
    struct answers a = { 0 };
    uint64_t t0 = now_ms();
    CHECK_INT(ask(g, &cfg, "slow-during", &a), 0);
    CHECK_INT(ask(g, &cfg, "slow-during", &a), 0);
    CHECK(run_until(&a.n, 2, 2000));
    uint64_t waited = now_ms() - t0;
    CHECK_INT(a.failed_open, 2);
    CHECK(a.last.allowed);
    CHECK(waited >= RL_GLOBAL_TIMEOUT_MS - 10 && waited < 500);
    CHECK(rl_global_failures() == failures + 2);
    CHECK(metric("strata_proxy_ratelimit_redis_failures_total") == m + 2);

    /* The pause ends, the connection is re-made, limiting is back. */
    run_for(900);
    CHECK(wait_state(g, true, 6000));
    check_limiting(g, "slow-after");
out:
    rl_global_free(g);
    redis_client_free(pauser);
}

static void test_outage(void)
{
    struct rl_global *g = rl_global_new(L, getenv("STRATA_TEST_REDIS_URL"));
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK(wait_state(g, true, 3000));
    check_limiting(g, "before");

    CHECK_INT(harness("harness_stop_redis"), 0);
    CHECK(wait_state(g, false, 3000));

    /* Down: every check is allowed, failed open, counted, answered fast —
     * and on a later iteration, never inside the call. */
    struct proxy_rate_limit cfg = { .name = name, .requests = 1, .period_ms = 60000,
                                    .burst = 1, .global = true };
    uint64_t failures = rl_global_failures();
    double m = metric("strata_proxy_ratelimit_redis_failures_total");
    for (int i = 0; i < 20; i++) {
        struct answers a = { 0 };
        uint64_t t0 = now_ms();
        CHECK_INT(ask(g, &cfg, "during", &a), 0);
        CHECK_INT(a.n, 0);
        CHECK(run_until(&a.n, 1, 1000));
        CHECK(now_ms() - t0 < 100);
        CHECK_INT(a.failed_open, 1);
        CHECK(a.last.allowed);
        CHECK_INT(a.last.limit, 1);
        CHECK_INT(a.in_call, 0);
    }
    CHECK(rl_global_failures() == failures + 20);
    CHECK(metric("strata_proxy_ratelimit_redis_failures_total") == m + 20);
    run_for(1500); /* let the reconnect backoff grow */

    CHECK_INT(harness("harness_start_redis_again"), 0);
    CHECK(wait_state(g, true, 7000));
    /* The restarted Redis has no script cached: NOSCRIPT → EVAL, decided. */
    failures = rl_global_failures();
    check_limiting(g, "after");
    CHECK(rl_global_failures() == failures);
    rl_global_free(g);
}

int main(void)
{
    if (!getenv("STRATA_TEST_REDIS_URL") || !getenv("STRATA_TEST_REDIS_DIR")) {
        fprintf(stderr, "STRATA_TEST_REDIS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    snprintf(name, sizeof name, "outage-%d-%ld", (int)getpid(), (long)time(NULL));
    L = loop_new();
    if (!L)
        return 1;
    RUN(test_slow);
    RUN(test_outage);
    for (int i = 0; i < 5; i++)
        loop_run_once(L, 1);
    loop_free(L);
    return check_done();
}
