/* redis.h through a Redis outage: the harness' Redis is stopped (commands
 * must fail fast with -ENOTCONN, no hang) and started again on the same port
 * (the client must reconnect on its own and work). Stops a shared server, so
 * it must not run in parallel with other tests using Redis (RUN_SERIAL). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/loop.h"
#include "core/redis.h"

static struct loop *L;

static int harness(const char *fn)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash -c '. \"%s/tests/harness/servers.sh\" && %s'",
             src ? src : ".", fn);
    return system(cmd);
}

static void run_for(uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (loop_now_ms(L) < end)
        loop_run_once(L, 10);
}

static bool wait_state(struct redis_client *c, bool up, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (redis_is_connected(c) != up && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return redis_is_connected(c) == up;
}

struct result {
    bool done;
    int calls;
    int err;
    char str[64];
};

static void capture(int err, redisReply *r, void *arg)
{
    struct result *res = arg;
    res->calls++;
    res->done = true;
    res->err = err;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        snprintf(res->str, sizeof res->str, "%.*s", (int)r->len, r->str);
}

static bool run_until(const bool *flag, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (!*flag && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return *flag;
}

static void test_outage(void)
{
    struct redis_config cfg = { .url = getenv("STRATA_TEST_REDIS_URL") };
    struct redis_client *c = redis_client_new(L, &cfg);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK(wait_state(c, true, 3000));
    struct result set = { 0 };
    redis_command(c, capture, &set, "SET outage before");
    CHECK(run_until(&set.done, 2000));
    CHECK_INT(set.err, 0);

    CHECK_INT(harness("harness_stop_redis"), 0);
    CHECK(wait_state(c, false, 3000));

    /* Down: every command answers -ENOTCONN on the next iteration. */
    for (int i = 0; i < 20; i++) {
        struct result r = { 0 };
        loop_update_time(L);
        uint64_t t0 = loop_now_ms(L);
        CHECK_INT(redis_command(c, capture, &r, "GET outage"), 0);
        CHECK(run_until(&r.done, 1000));
        CHECK_INT(r.err, -ENOTCONN);
        CHECK(loop_now_ms(L) - t0 < 100);
        CHECK_INT(r.calls, 1);
    }
    run_for(1500); /* let the backoff grow past its first steps */

    CHECK_INT(harness("harness_start_redis_again"), 0);
    /* Backoff is at most 5 s; give it that plus the connect. */
    CHECK(wait_state(c, true, 7000));
    struct result s2 = { 0 }, g2 = { 0 };
    redis_command(c, capture, &s2, "SET outage after");
    redis_command(c, capture, &g2, "GET outage");
    CHECK(run_until(&g2.done, 2000));
    CHECK_INT(s2.err, 0);
    CHECK_INT(g2.err, 0);
    CHECK_STR(g2.str, "after");
    redis_client_free(c);
}

int main(void)
{
    if (!getenv("STRATA_TEST_REDIS_URL") || !getenv("STRATA_TEST_REDIS_DIR")) {
        fprintf(stderr, "STRATA_TEST_REDIS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    L = loop_new();
    if (!L)
        return 1;
    RUN(test_outage);
    for (int i = 0; i < 5; i++)
        loop_run_once(L, 1);
    loop_free(L);
    return check_done();
}
