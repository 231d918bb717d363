/* ratelimit.h's global limiter against a real Redis (STRATA_TEST_REDIS_URL
 * from scripts/with-servers): two limiters on two loops with two
 * connections, as two gateways, share one limit exactly; keys and names are
 * independent; the decision's fields; the state's Redis key and its expiry;
 * EVALSHA falling back to EVAL after SCRIPT FLUSH; refill on Redis' clock;
 * the callback contract (later, once, never after cancel or free), also
 * when a check cannot be sent at all. Redis
 * slow, stopped and restarted: test_ratelimit_redis_outage.c (serial).
 *
 * Another test may pause the shared Redis meanwhile (test_redis.c's CLIENT
 * PAUSE): a phase that sees a failed-open decision is run again with a
 * fresh name, since a timed-out check may or may not have been counted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "check.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/redis.h"
/* Integration tests link strata_core only (CMakeLists.txt), not
 * strata_proxy: the module is compiled in — with a seam that makes the
 * next fail_sends commands fail to send, as when out of memory. */
static int fail_sends;
int shim_redis_command_argv(struct redis_client *c, redis_cb cb, void *arg, int argc,
                            const char **argv, const size_t *argvlen);
#define redis_command_argv shim_redis_command_argv
#include "proxy/ratelimit.c"
#undef redis_command_argv

int shim_redis_command_argv(struct redis_client *c, redis_cb cb, void *arg, int argc,
                            const char **argv, const size_t *argvlen)
{
    if (fail_sends > 0) {
        fail_sends--;
        return -ENOMEM;
    }
    return redis_command_argv(c, cb, arg, argc, argv, argvlen);
}

static const char *redis_url;
static struct loop *L1, *L2;
static bool in_call; /* set while rl_global_check runs */

static void pump(int ms)
{
    loop_run_once(L1, 0);
    loop_run_once(L2, ms);
}

static uint64_t now_ms(void)
{
    loop_update_time(L1);
    return loop_now_ms(L1);
}

/* Runs both loops until *count >= want or ms elapse. */
static bool run_until(const int *count, int want, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (*count < want && now_ms() < end)
        pump(5);
    return *count >= want;
}

static void run_for(uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        pump(5);
}

static bool wait_connected(struct rl_global *g, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (!rl_global_is_connected(g) && now_ms() < end)
        pump(5);
    return rl_global_is_connected(g);
}

/* Decisions as they come back. */
struct answers {
    int n;
    int allowed, denied, failed_open, in_call;
    struct rl_decision d[64];
};

static void on_decision(const struct rl_decision *d, void *arg)
{
    struct answers *a = arg;
    if (a->n < 64)
        a->d[a->n] = *d;
    a->n++;
    a->allowed += d->allowed && !d->failed_open;
    a->denied += !d->allowed;
    a->failed_open += d->failed_open;
    a->in_call += in_call;
}

static int ask(struct rl_global *g, const struct proxy_rate_limit *cfg, const char *key,
               struct answers *a, struct rl_pending **p)
{
    in_call = true;
    int rc = rl_global_check(g, cfg, str_from_cstr(key), on_decision, a, p);
    in_call = false;
    return rc;
}

/* A limit name no earlier run used. */
static char *fresh_name(const char *what)
{
    static int seq;
    char *s = malloc(96);
    snprintf(s, 96, "t%d-%ld-%d-%s", (int)getpid(), (long)time(NULL), ++seq, what);
    return s;
}

static struct proxy_rate_limit limit(char *name, uint32_t requests, uint32_t period_ms,
                                     uint32_t burst)
{
    return (struct proxy_rate_limit){ .name = name, .requests = requests,
                                      .period_ms = period_ms, .burst = burst, .global = true };
}

/* A command on the raw client: CMD [ARG], waited for. */
struct raw {
    int done, err, type;
    long long integer;
    char str[128];
};

static void raw_cb(int err, redisReply *r, void *arg)
{
    struct raw *x = arg;
    x->done++;
    x->err = err;
    x->type = r ? r->type : -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        x->integer = r->integer;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
              r->type == REDIS_REPLY_ERROR))
        snprintf(x->str, sizeof x->str, "%.*s", (int)r->len, r->str);
}

static struct raw raw_cmd(struct redis_client *c, const char *cmd, const char *arg)
{
    struct raw x = { 0 };
    const char *argv[2] = { cmd, arg };
    if (redis_command_argv(c, raw_cb, &x, arg ? 2 : 1, argv, NULL) == 0)
        run_until(&x.done, 1, 4000);
    return x;
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

static struct rl_global *G1, *G2;
static struct redis_client *RAW;

/* Burst 10 shared by two gateways asking at once: exactly 10 pass in all.
 * Returns false when a failed-open answer spoiled the count (retry). */
static bool share_once(void)
{
    char *name = fresh_name("share");
    /* 10 per minute: no refill during the test. */
    struct proxy_rate_limit cfg = limit(name, 10, 60000, 0);
    struct answers a = { 0 };
    for (int i = 0; i < 16; i++)
        CHECK_INT(ask(i % 2 ? G2 : G1, &cfg, "10.1.2.3", &a, NULL), 0);
    CHECK_INT(a.n, 0); /* none inside the call */
    CHECK(run_until(&a.n, 16, 3000));
    bool spoiled = a.failed_open > 0;
    if (!spoiled) {
        CHECK_INT(a.n, 16);
        CHECK_INT(a.allowed, 10);
        CHECK_INT(a.denied, 6);
        CHECK_INT(a.in_call, 0);
        /* The allowed ones saw remaining 9..0, each once. */
        unsigned seen = 0;
        for (int i = 0; i < 16; i++) {
            CHECK_INT(a.d[i].limit, 10);
            if (a.d[i].allowed) {
                CHECK(a.d[i].remaining < 10);
                seen |= 1u << a.d[i].remaining;
                CHECK_INT(a.d[i].retry_after_s, 0);
                CHECK(a.d[i].reset_s >= 6 && a.d[i].reset_s <= 60);
            } else {
                CHECK_INT(a.d[i].remaining, 0);
                /* 6 s to the next slot, less the few ms since the burst. */
                CHECK(a.d[i].retry_after_s >= 5 && a.d[i].retry_after_s <= 6);
                CHECK(a.d[i].reset_s >= 59 && a.d[i].reset_s <= 60);
            }
        }
        CHECK_INT(seen, 0x3ff);

        /* Both gateways now refuse the key; another key and another name
         * with the same key are untouched. */
        struct answers b = { 0 }, other = { 0 }, name2 = { 0 };
        char *n2 = fresh_name("share2");
        struct proxy_rate_limit cfg2 = limit(n2, 10, 60000, 0);
        ask(G1, &cfg, "10.1.2.3", &b, NULL);
        ask(G2, &cfg, "10.1.2.3", &b, NULL);
        ask(G1, &cfg, "10.1.2.4", &other, NULL);
        ask(G2, &cfg2, "10.1.2.3", &name2, NULL);
        CHECK(run_until(&b.n, 2, 2000));
        CHECK(run_until(&other.n, 1, 2000));
        CHECK(run_until(&name2.n, 1, 2000));
        spoiled = b.failed_open || other.failed_open || name2.failed_open;
        if (!spoiled) {
            CHECK_INT(b.denied, 2);
            CHECK(other.d[0].allowed && other.d[0].remaining == 9);
            CHECK(name2.d[0].allowed && name2.d[0].remaining == 9);
        }

        /* The state is a plain Redis key that expires when its TAT passes
         * (60 s after the burst, minus the time since). */
        char key[256];
        snprintf(key, sizeof key, "strata:rl:%s:10.1.2.3", name);
        struct raw ttl = raw_cmd(RAW, "PTTL", key);
        CHECK_INT(ttl.err, 0);
        CHECK(ttl.integer > 55000 && ttl.integer <= 60000);
        struct raw val = raw_cmd(RAW, "GET", key);
        CHECK_INT(val.type, REDIS_REPLY_STRING);
        CHECK(strspn(val.str, "0123456789") == strlen(val.str) && strlen(val.str) >= 16);
        free(n2);
    }
    free(name);
    return !spoiled;
}

/* Runs a phase until it saw no failed-open answer, three times at most. */
static void retry_phase(bool (*phase)(void), const char *what)
{
    for (int tries = 0;; tries++) {
        /* A timeout drops the connection: both must be back first. */
        wait_connected(G1, 6000);
        wait_connected(G2, 6000);
        if (phase())
            return;
        if (tries == 2) {
            CHECK(!"failed open three times");
            return;
        }
        fprintf(stderr, "%s: a failed-open answer (Redis paused by another test?); again\n", what);
        run_for(1500); /* test_redis.c pauses Redis for 1 s */
    }
}

static void test_two_gateways_share(void) { retry_phase(share_once, "share"); }

/* Keys past 128 bytes (or starting with '#') are named by their BLAKE2b. */
static bool long_key_once(void)
{
    char *name = fresh_name("long");
    struct proxy_rate_limit cfg = limit(name, 2, 60000, 0);
    char longkey[300];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    struct answers a = { 0 };
    for (int i = 0; i < 3; i++)
        ask(G1, &cfg, longkey, &a, NULL);
    CHECK(run_until(&a.n, 3, 2000));
    if (a.failed_open) {
        free(name);
        return false;
    }
    CHECK_INT(a.allowed, 2);
    CHECK_INT(a.denied, 1);
    unsigned char md[16];
    crypto_generichash(md, sizeof md, (const unsigned char *)longkey, strlen(longkey), NULL, 0);
    char key[256];
    int n = snprintf(key, sizeof key, "strata:rl:%s:#", name);
    for (int i = 0; i < 16; i++)
        n += snprintf(key + n, sizeof key - (size_t)n, "%02x", md[i]);
    CHECK_INT(raw_cmd(RAW, "EXISTS", key).integer, 1);
    free(name);
    return true;
}

static void test_long_key(void) { retry_phase(long_key_once, "long key"); }

/* After SCRIPT FLUSH, EVALSHA answers NOSCRIPT: the check is re-sent as
 * EVAL and decided, not failed open. */
static bool noscript_once(void)
{
    char *name = fresh_name("noscript");
    struct proxy_rate_limit cfg = limit(name, 5, 60000, 0);
    struct answers warm = { 0 };
    ask(G1, &cfg, "k", &warm, NULL);
    CHECK(run_until(&warm.n, 1, 2000));
    uint64_t failures = rl_global_failures();
    struct raw fl = raw_cmd(RAW, "SCRIPT", "FLUSH");
    CHECK_INT(fl.err, 0);
    CHECK_STR(fl.str, "OK");
    struct answers a = { 0 };
    for (int i = 0; i < 6; i++)
        ask(i % 2 ? G2 : G1, &cfg, "k", &a, NULL);
    CHECK(run_until(&a.n, 6, 2000));
    free(name);
    if (a.failed_open || warm.failed_open)
        return false;
    CHECK_INT(a.allowed, 4);
    CHECK_INT(a.denied, 2);
    CHECK(rl_global_failures() == failures);
    return true;
}

static void test_noscript_fallback(void) { retry_phase(noscript_once, "noscript"); }

/* Refill on Redis' clock: burst 1, one per 200 ms. Two connections race,
 * so which of two simultaneous checks wins is Redis' choice. */
static bool refill_once(void)
{
    char *name = fresh_name("refill");
    struct proxy_rate_limit cfg = limit(name, 1, 200, 1);
    struct answers a = { 0 }, b = { 0 };
    ask(G1, &cfg, "k", &a, NULL);
    ask(G2, &cfg, "k", &a, NULL);
    CHECK(run_until(&a.n, 2, 2000));
    if (a.failed_open) {
        free(name);
        return false;
    }
    CHECK_INT(a.allowed, 1);
    CHECK_INT(a.denied, 1);
    int denied = a.d[0].allowed ? 1 : 0;
    CHECK_INT(a.d[denied].retry_after_s, 1);
    CHECK_INT(a.d[denied].reset_s, 1);
    run_for(300);
    ask(G2, &cfg, "k", &b, NULL);
    ask(G1, &cfg, "k", &b, NULL);
    CHECK(run_until(&b.n, 2, 2000));
    free(name);
    if (b.failed_open)
        return false;
    CHECK_INT(b.allowed, 1);
    CHECK_INT(b.denied, 1);
    return true;
}

static void test_refill(void) { retry_phase(refill_once, "refill"); }

/* Cancelled: never called, even when Redis answers; free drops the rest. */
static int free_in_cb_calls;
static void free_in_cb(const struct rl_decision *d, void *arg)
{
    free_in_cb_calls++;
    rl_global_free(*(struct rl_global **)arg);
    *(struct rl_global **)arg = NULL;
}

static void test_cancel_and_free(void)
{
    char *name = fresh_name("cancel");
    struct proxy_rate_limit cfg = limit(name, 100, 60000, 0);
    struct answers a = { 0 }, kept = { 0 };
    struct rl_pending *p[5];
    for (int i = 0; i < 5; i++)
        CHECK_INT(ask(G1, &cfg, "k", &a, &p[i]), 0);
    ask(G1, &cfg, "k", &kept, NULL);
    for (int i = 0; i < 5; i++)
        rl_global_cancel(p[i]);
    CHECK(run_until(&kept.n, 1, 2000));
    run_for(50);
    CHECK_INT(a.n, 0);
    CHECK_INT(kept.n, 1);

    /* Bad arguments: refused at once, no callback. */
    struct proxy_rate_limit bad = limit(name, 0, 1000, 0);
    CHECK_INT(ask(G1, &bad, "k", &a, NULL), -EINVAL);
    CHECK_INT(rl_global_check(G1, &cfg, STR_LIT("k"), NULL, NULL, NULL), -EINVAL);
    CHECK_INT(rl_global_check(NULL, &cfg, STR_LIT("k"), on_decision, &a, NULL), -EINVAL);
    CHECK(rl_global_new(L1, "http://127.0.0.1:1") == NULL);
    run_for(20);
    CHECK_INT(a.n, 0);

    /* Freed with checks in flight: their callbacks never run. */
    struct rl_global *g = rl_global_new(L1, redis_url);
    CHECK(g && wait_connected(g, 3000));
    if (g) {
        struct answers dropped = { 0 };
        for (int i = 0; i < 5; i++)
            ask(g, &cfg, "k", &dropped, NULL);
        rl_global_free(g);
        run_for(100);
        CHECK_INT(dropped.n, 0);
    }

    /* Freed from inside its own callback, with more in flight. */
    g = rl_global_new(L1, redis_url);
    CHECK(g && wait_connected(g, 3000));
    if (g) {
        struct answers after = { 0 };
        struct rl_global *self = g;
        rl_global_check(g, &cfg, STR_LIT("k"), free_in_cb, &self, NULL);
        for (int i = 0; i < 5; i++)
            ask(g, &cfg, "k", &after, NULL);
        run_for(200);
        CHECK_INT(free_in_cb_calls, 1);
        CHECK(self == NULL);
        CHECK_INT(after.n, 0);
    }
    free(name);
}

/* A check that cannot even be sent fails open too, later, counted; it can
 * be cancelled meanwhile, and its limiter freed from a callback. */
static void test_send_failure(void)
{
    char *name = fresh_name("nosend");
    struct proxy_rate_limit cfg = limit(name, 1, 60000, 0);
    uint64_t before = rl_global_failures();
    struct answers a = { 0 };
    struct rl_pending *p[3];
    fail_sends = 3;
    for (int i = 0; i < 3; i++)
        CHECK_INT(ask(G1, &cfg, "k", &a, &p[i]), 0);
    CHECK_INT(fail_sends, 0);
    CHECK_INT(a.n, 0);
    rl_global_cancel(p[1]);
    CHECK(run_until(&a.n, 2, 1000));
    run_for(20);
    CHECK_INT(a.n, 2);
    CHECK_INT(a.failed_open, 2);
    CHECK_INT(a.in_call, 0);
    CHECK(rl_global_failures() == before + 2);
    /* The next one is sent and decided. */
    struct answers ok = { 0 };
    ask(G1, &cfg, "k", &ok, NULL);
    CHECK(run_until(&ok.n, 1, 2000));

    struct rl_global *g = rl_global_new(L1, redis_url);
    CHECK(g && wait_connected(g, 3000));
    if (g) {
        struct answers after = { 0 };
        struct rl_global *self = g;
        int calls = free_in_cb_calls;
        fail_sends = 4;
        rl_global_check(g, &cfg, STR_LIT("k"), free_in_cb, &self, NULL);
        for (int i = 0; i < 3; i++)
            ask(g, &cfg, "k", &after, NULL);
        run_for(50);
        CHECK_INT(free_in_cb_calls, calls + 1);
        CHECK(self == NULL);
        CHECK_INT(after.n, 0);
    }
    fail_sends = 0;
    free(name);
}

/* Not connected yet (nobody listens there): fail open, later, counted. */
static void test_unreachable(void)
{
    struct rl_global *g = rl_global_new(L1, "redis://127.0.0.1:1/0");
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK(!rl_global_is_connected(g));
    char *name = fresh_name("down");
    struct proxy_rate_limit cfg = limit(name, 1, 60000, 0);
    uint64_t before = rl_global_failures();
    double m_before = metric("strata_proxy_ratelimit_redis_failures_total");
    struct answers a = { 0 };
    for (int i = 0; i < 3; i++)
        CHECK_INT(ask(g, &cfg, "k", &a, NULL), 0);
    CHECK_INT(a.n, 0);
    CHECK(run_until(&a.n, 3, 1000));
    CHECK_INT(a.failed_open, 3);
    CHECK_INT(a.d[0].allowed, 1);
    CHECK_INT(a.d[0].limit, 1);
    CHECK_INT(a.in_call, 0);
    CHECK(rl_global_failures() == before + 3);
    CHECK(metric("strata_proxy_ratelimit_redis_failures_total") == m_before + 3);
    rl_global_free(g);
    free(name);
}

int main(void)
{
    redis_url = getenv("STRATA_TEST_REDIS_URL");
    if (!redis_url) {
        fprintf(stderr, "STRATA_TEST_REDIS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    L1 = loop_new();
    L2 = loop_new();
    if (!L1 || !L2 || sodium_init() < 0)
        return 1;
    G1 = rl_global_new(L1, redis_url);
    G2 = rl_global_new(L2, redis_url);
    /* 3 s: its commands outlast another test's 1 s CLIENT PAUSE. */
    RAW = redis_client_new(L1, &(struct redis_config){ .url = redis_url,
                                                       .command_timeout_ms = 3000 });
    CHECK(G1 && G2 && RAW);
    if (!G1 || !G2 || !RAW)
        return check_done();
    CHECK(wait_connected(G1, 3000));
    CHECK(wait_connected(G2, 3000));
    uint64_t end = now_ms() + 3000;
    while (!redis_is_connected(RAW) && now_ms() < end)
        pump(5);
    RUN(test_two_gateways_share);
    RUN(test_long_key);
    RUN(test_noscript_fallback);
    RUN(test_refill);
    RUN(test_cancel_and_free);
    RUN(test_send_failure);
    RUN(test_unreachable);
    rl_global_free(G1);
    rl_global_free(G2);
    redis_client_free(RAW);
    for (int i = 0; i < 5; i++)
        pump(1);
    loop_free(L1);
    loop_free(L2);
    return check_done();
}
