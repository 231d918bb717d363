/* redis.h against a real Redis (STRATA_TEST_REDIS_URL from scripts/with-servers):
 * round trips with binary-safe arguments, pipelining, command timeouts,
 * fail-fast while down, the delivery contract and freeing. The outage
 * (Redis stopped and restarted) is in test_redis_outage.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/redis.h"

static const char *redis_url;
static struct loop *L;

/* Runs the loop until *flag or ms elapse; returns *flag. */
static bool run_until(const bool *flag, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (!*flag && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return *flag;
}

static bool wait_connected(struct redis_client *c, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (!redis_is_connected(c) && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return redis_is_connected(c);
}

/* One captured reply. */
struct result {
    bool done;
    int calls;
    int err;
    int type;
    long long integer;
    char str[256];
    size_t len;
    size_t elements;
    char el[2][64];
    bool *in_call; /* set while the issuing call runs: must stay false in cb */
    bool was_in_call;
};

static void capture(int err, redisReply *r, void *arg)
{
    struct result *res = arg;
    res->calls++;
    res->done = true;
    res->err = err;
    res->was_in_call = res->in_call && *res->in_call;
    if (!r) {
        res->type = -1;
        return;
    }
    res->type = r->type;
    res->integer = r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
        r->type == REDIS_REPLY_ERROR) {
        res->len = r->len < sizeof res->str ? r->len : sizeof res->str;
        memcpy(res->str, r->str, res->len);
    }
    if (r->type == REDIS_REPLY_ARRAY) {
        res->elements = r->elements;
        for (size_t i = 0; i < r->elements && i < 2; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                r->element[i]->len < sizeof res->el[i])
                memcpy(res->el[i], r->element[i]->str, r->element[i]->len);
    }
}

static struct redis_client *new_client(uint32_t cmd_timeout)
{
    struct redis_config cfg = { .url = redis_url, .command_timeout_ms = cmd_timeout };
    struct redis_client *c = redis_client_new(L, &cfg);
    CHECK(c != NULL);
    if (c)
        CHECK(wait_connected(c, 3000));
    return c;
}

static void test_bad_urls(void)
{
    const char *bad[] = { "http://127.0.0.1:6379", "redis://", "redis://example.com:6379",
                          "redis://127.0.0.1:0", "redis://127.0.0.1:99999",
                          "redis://127.0.0.1:6379/x", "redis://[::1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct redis_config cfg = { .url = bad[i] };
        struct redis_client *c = redis_client_new(L, &cfg);
        CHECK(c == NULL);
        redis_client_free(c);
    }
}

static void test_round_trip(void)
{
    struct redis_client *c = new_client(0);
    if (!c)
        return;
    char key[64];
    snprintf(key, sizeof key, "strata:test:%d:bin", (int)getpid());
    /* Binary-safe: NUL, CR LF and a RESP-looking prefix inside the value. */
    static const char val[] = "a\0b\r\n$3\r\nxyz\xff";
    size_t vlen = sizeof val - 1;
    bool in_call = true;
    struct result set = { .in_call = &in_call };
    const char *argv[] = { "SET", key, val };
    size_t argvlen[] = { 3, strlen(key), vlen };
    CHECK_INT(redis_command_argv(c, capture, &set, 3, argv, argvlen), 0);
    in_call = false;
    CHECK(run_until(&set.done, 2000));
    CHECK(!set.was_in_call);
    CHECK_INT(set.err, 0);
    CHECK_INT(set.type, REDIS_REPLY_STATUS);
    CHECK(set.len == 2 && memcmp(set.str, "OK", 2) == 0);

    struct result get = { 0 };
    CHECK_INT(redis_command(c, capture, &get, "GET %b", key, strlen(key)), 0);
    CHECK(run_until(&get.done, 2000));
    CHECK_INT(get.err, 0);
    CHECK_INT(get.type, REDIS_REPLY_STRING);
    CHECK_INT(get.len, vlen);
    CHECK(memcmp(get.str, val, vlen) == 0);

    /* INCR, and the server's error answer for a non-integer (err 0). */
    char ckey[64];
    snprintf(ckey, sizeof ckey, "strata:test:%d:n", (int)getpid());
    struct result del = { 0 }, i1 = { 0 }, i2 = { 0 }, bad = { 0 };
    redis_command(c, capture, &del, "DEL %s", ckey);
    redis_command(c, capture, &i1, "INCR %s", ckey);
    redis_command(c, capture, &i2, "INCRBY %s %d", ckey, 41);
    redis_command(c, capture, &bad, "INCR %b", key, strlen(key));
    CHECK(run_until(&bad.done, 2000));
    CHECK_INT(i1.integer, 1);
    CHECK_INT(i2.integer, 42);
    CHECK_INT(bad.err, 0);
    CHECK_INT(bad.type, REDIS_REPLY_ERROR);

    /* EXPIRE, then TTL. */
    struct result ex = { 0 }, ttl = { 0 };
    redis_command(c, capture, &ex, "EXPIRE %s 100", ckey);
    redis_command(c, capture, &ttl, "TTL %s", ckey);
    CHECK(run_until(&ttl.done, 2000));
    CHECK_INT(ex.integer, 1);
    CHECK(ttl.integer > 90 && ttl.integer <= 100);

    /* EVAL with binary-safe KEYS/ARGV: the script echoes them back. */
    struct result ev = { 0 };
    const char *eargv[] = { "EVAL", "return {KEYS[1], ARGV[1]}", "1", "k\0ey", "v\r\nal" };
    size_t eargvlen[] = { 4, strlen(eargv[1]), 1, 4, 5 };
    CHECK_INT(redis_command_argv(c, capture, &ev, 5, eargv, eargvlen), 0);
    CHECK(run_until(&ev.done, 2000));
    CHECK_INT(ev.err, 0);
    CHECK_INT(ev.type, REDIS_REPLY_ARRAY);
    CHECK_INT(ev.elements, 2);
    CHECK(memcmp(ev.el[0], "k\0ey", 4) == 0);
    CHECK_STR(ev.el[1], "v\r\nal");

    /* argvlen NULL: strlen. */
    struct result ping = { 0 };
    const char *pargv[] = { "ECHO", "hello" };
    CHECK_INT(redis_command_argv(c, capture, &ping, 2, pargv, NULL), 0);
    CHECK(run_until(&ping.done, 2000));
    CHECK(ping.len == 5 && memcmp(ping.str, "hello", 5) == 0);

    CHECK_INT(set.calls + get.calls + i1.calls + i2.calls + bad.calls + ex.calls + ttl.calls +
                  ev.calls + ping.calls + del.calls,
              10);
    CHECK_INT(redis_command(NULL, capture, NULL, "PING"), -EINVAL);
    CHECK_INT(redis_command(c, NULL, NULL, "PING"), -EINVAL);
    redis_client_free(c);
}

/* The db number in the URL is selected before any command runs. */
static void test_select_db(void)
{
    char url[256];
    snprintf(url, sizeof url, "%s", redis_url);
    char *slash = strrchr(url, '/');
    if (!slash || slash < url + 8) {
        CHECK(!"STRATA_TEST_REDIS_URL has no /db");
        return;
    }
    strcpy(slash, "/3");
    struct redis_config cfg = { .url = url };
    struct redis_client *c = redis_client_new(L, &cfg);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK(wait_connected(c, 3000));
    struct result r = { 0 };
    /* CLIENT INFO reports the connection's db=N. */
    redis_command(c, capture, &r, "CLIENT INFO");
    CHECK(run_until(&r.done, 2000));
    CHECK_INT(r.err, 0);
    r.str[r.len < sizeof r.str ? r.len : sizeof r.str - 1] = '\0';
    CHECK(strstr(r.str, " db=3 ") != NULL);
    redis_client_free(c);
}

struct seq {
    int next;     /* replies seen */
    int in_order; /* replies whose value matched their position */
    int errors;
    bool done;
};

static void seq_cb(int err, redisReply *r, void *arg)
{
    struct seq *s = arg;
    s->next++;
    if (err || !r || r->type != REDIS_REPLY_INTEGER)
        s->errors++;
    else if (r->integer == s->next)
        s->in_order++;
    if (s->next == 1000)
        s->done = true;
}

static void test_pipeline_1000(void)
{
    struct redis_client *c = new_client(0);
    if (!c)
        return;
    char key[64];
    snprintf(key, sizeof key, "strata:test:%d:pipe", (int)getpid());
    struct result del = { 0 };
    redis_command(c, capture, &del, "DEL %s", key);
    CHECK(run_until(&del.done, 2000));
    struct seq s = { 0 };
    for (int i = 0; i < 1000; i++)
        CHECK_INT(redis_command(c, seq_cb, &s, "INCR %s", key), 0);
    CHECK(run_until(&s.done, 5000));
    CHECK_INT(s.next, 1000);
    CHECK_INT(s.in_order, 1000);
    CHECK_INT(s.errors, 0);
    redis_client_free(c);
}

static double metric(const char *series)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    double v = -1;
    if (metrics_render(metrics_default(), &b) == 0) {
        buf_append(&b, "", 1);
        const char *p = strstr(b.data + b.rpos, series);
        if (p)
            v = strtod(p + strlen(series), NULL);
    }
    buf_free(&b);
    return v;
}

static void test_timeout(void)
{
    struct redis_client *pauser = new_client(0);
    struct redis_client *c = new_client(300);
    if (!pauser || !c)
        goto out;
    double timeouts_before = metric("strata_redis_commands_total{result=\"timeout\"}");
    /* CLIENT PAUSE holds every client's commands for 1 s (DEBUG SLEEP is
     * disabled by default since Redis 7). */
    struct result p = { 0 };
    redis_command(pauser, capture, &p, "CLIENT PAUSE 1000 ALL");
    CHECK(run_until(&p.done, 2000));
    CHECK_INT(p.err, 0);
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    struct result a = { 0 }, b = { 0 };
    CHECK_INT(redis_command(c, capture, &a, "PING"), 0);
    CHECK_INT(redis_command(c, capture, &b, "PING"), 0);
    CHECK(run_until(&b.done, 2000));
    uint64_t waited = loop_now_ms(L) - t0;
    CHECK_INT(a.err, -ETIMEDOUT);
    CHECK(b.err == -ETIMEDOUT || b.err == -ENOTCONN);
    CHECK_INT(a.calls, 1);
    CHECK_INT(b.calls, 1);
    CHECK(waited >= 290 && waited < 900);
    CHECK(metric("strata_redis_commands_total{result=\"timeout\"}") >= timeouts_before + 1);
    /* The connection is re-made and works once the pause is over. */
    struct result after = { 0 };
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + 4000;
    while (loop_now_ms(L) < end) {
        memset(&after, 0, sizeof after);
        if (redis_is_connected(c) && redis_command(c, capture, &after, "PING") == 0 &&
            run_until(&after.done, 1000) && after.err == 0)
            break;
        loop_run_once(L, 50);
    }
    CHECK_INT(after.err, 0);
    CHECK(after.len == 4 && memcmp(after.str, "PONG", 4) == 0);
out:
    redis_client_free(pauser);
    redis_client_free(c);
}

/* Nobody listens: commands fail fast with -ENOTCONN, on a later iteration. */
static void test_down_fails_fast(void)
{
    struct redis_config cfg = { .url = "redis://127.0.0.1:1/0", .connect_timeout_ms = 200 };
    struct redis_client *c = redis_client_new(L, &cfg);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK(!redis_is_connected(c));
    bool in_call = true;
    struct result r = { .in_call = &in_call };
    CHECK_INT(redis_command(c, capture, &r, "GET x"), 0);
    in_call = false;
    CHECK(!r.done);
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    CHECK(run_until(&r.done, 1000));
    CHECK(loop_now_ms(L) - t0 < 100);
    CHECK_INT(r.err, -ENOTCONN);
    CHECK(!r.was_in_call);
    /* Let a few reconnect attempts happen, then free with one pending. */
    for (int i = 0; i < 30; i++)
        loop_run_once(L, 10);
    struct result dropped = { 0 };
    redis_command(c, capture, &dropped, "GET x");
    redis_client_free(c);
    for (int i = 0; i < 5; i++)
        loop_run_once(L, 1);
    CHECK_INT(dropped.calls, 0);
}

/* Freeing drops pending callbacks; freeing from inside a callback is safe. */
static int free_calls;
static void free_in_cb(int err, redisReply *r, void *arg)
{
    free_calls++;
    redis_client_free(arg);
}

static void test_free(void)
{
    struct redis_client *c = new_client(0);
    if (!c)
        return;
    struct result r[10] = { { 0 } };
    for (int i = 0; i < 10; i++)
        redis_command(c, capture, &r[i], "PING");
    redis_client_free(c);
    for (int i = 0; i < 20; i++)
        loop_run_once(L, 5);
    int calls = 0;
    for (int i = 0; i < 10; i++)
        calls += r[i].calls;
    CHECK_INT(calls, 0);

    c = new_client(0);
    if (!c)
        return;
    struct result after[5] = { { 0 } };
    redis_command(c, free_in_cb, c, "PING");
    for (int i = 0; i < 5; i++)
        redis_command(c, capture, &after[i], "PING");
    for (int i = 0; i < 50; i++)
        loop_run_once(L, 5);
    CHECK_INT(free_calls, 1);
    calls = 0;
    for (int i = 0; i < 5; i++)
        calls += after[i].calls;
    CHECK_INT(calls, 0);
}

/* A bounded number of commands in flight: past it, -ENOBUFS. */
static void test_max_pending(void)
{
    struct redis_config cfg = { .url = redis_url, .max_pending = 5 };
    struct redis_client *c = redis_client_new(L, &cfg);
    CHECK(c && wait_connected(c, 3000));
    if (!c)
        return;
    struct result r[7] = { { 0 } };
    for (int i = 0; i < 7; i++)
        CHECK_INT(redis_command(c, capture, &r[i], "PING"), 0);
    CHECK(run_until(&r[4].done, 2000));
    CHECK(run_until(&r[6].done, 2000));
    for (int i = 0; i < 5; i++)
        CHECK_INT(r[i].err, 0);
    CHECK_INT(r[5].err, -ENOBUFS);
    CHECK_INT(r[6].err, -ENOBUFS);
    redis_client_free(c);
}

int main(void)
{
    redis_url = getenv("STRATA_TEST_REDIS_URL");
    if (!redis_url) {
        fprintf(stderr, "STRATA_TEST_REDIS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    L = loop_new();
    if (!L)
        return 1;
    RUN(test_bad_urls);
    RUN(test_round_trip);
    RUN(test_select_db);
    RUN(test_pipeline_1000);
    RUN(test_timeout);
    RUN(test_down_fails_fast);
    RUN(test_free);
    RUN(test_max_pending);
    for (int i = 0; i < 5; i++)
        loop_run_once(L, 1);
    loop_free(L);
    return check_done();
}
