/* pg.h through a PostgreSQL outage: the harness' server is stopped while a
 * query and a transaction are in flight (they must fail with a connection
 * error, not hang), the pool reports not ready and fails new queries fast,
 * then the server is started again on the same port and the pool must
 * reconnect on its own. Stops a shared server, so it must not run in
 * parallel with other tests using PostgreSQL (RUN_SERIAL). */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/pg.h"

static struct loop *L;
static char db_name[64];
static char db_url[512];

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
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static bool run_until(const int *count, int want, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (*count < want && now_ms() < end)
        loop_run_once(L, 10);
    return *count >= want;
}

static bool wait_ready(struct pg_pool *p, bool ready, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (pg_pool_is_ready(p, NULL, 0) != ready && now_ms() < end)
        loop_run_once(L, 10);
    return pg_pool_is_ready(p, NULL, 0) == ready;
}

static bool admin(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "admin '%s': %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "admin connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return ok;
}

struct outcome {
    int done;
    int err;
    char value[64];
};

static void outcome_cb(int err, PGresult *res, void *arg)
{
    struct outcome *o = arg;
    o->done++;
    o->err = err;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
        snprintf(o->value, sizeof o->value, "%s", PQgetvalue(res, 0, 0));
}

struct txs {
    int done;
    int err;
    struct pg_tx *tx;
};

static void begun(int err, struct pg_tx *tx, void *arg)
{
    struct txs *t = arg;
    t->done++;
    t->err = err;
    t->tx = tx;
}

static void test_outage(void)
{
    struct pg_pool *p = pg_pool_new(L, &(struct pg_pool_config){
        .conninfo = db_url, .size = 3, .query_timeout_ms = 20000 });
    CHECK(p != NULL);
    CHECK(wait_ready(p, true, 5000));
    /* All three up, so that the outage hits an idle, a busy and a
     * transaction-holding connection. */
    struct pg_pool_stats st;
    uint64_t end = now_ms() + 5000;
    do {
        loop_run_once(L, 10);
        pg_pool_stats(p, &st);
    } while (st.idle < 3 && now_ms() < end);
    CHECK_INT(st.idle, 3);

    struct txs t = { 0 };
    CHECK_INT(pg_tx_begin(p, begun, &t), 0);
    CHECK(run_until(&t.done, 1, 5000));
    CHECK_INT(t.err, 0);
    struct outcome slow = { 0 };
    CHECK_INT(pg_query(p, "SELECT pg_sleep(30)", 0, NULL, outcome_cb, &slow), 0);
    for (int i = 0; i < 10; i++)
        loop_run_once(L, 10);

    uint64_t t0 = now_ms();
    CHECK_INT(harness("harness_stop_postgres"), 0);
    CHECK(run_until(&slow.done, 1, 5000));
    CHECK(slow.err == -ECONNRESET);
    if (slow.err != -ECONNRESET)
        fprintf(stderr, "in-flight query got %d\n", slow.err);
    CHECK(now_ms() - t0 < 15000); /* not the 30 s sleep */
    CHECK(wait_ready(p, false, 5000));
    char why[256] = "";
    CHECK(!pg_pool_is_ready(p, why, sizeof why));
    CHECK(strstr(why, "postgres") != NULL);
    fprintf(stderr, "  (not ready: %s)\n", why);

    /* The transaction's connection is gone. */
    if (t.tx) {
        struct outcome q = { 0 };
        CHECK_INT(pg_tx_query(t.tx, "SELECT 1", 0, NULL, outcome_cb, &q), -ECONNRESET);
        pg_tx_rollback(t.tx);
    }

    /* Let every connection try and fail once: then the pool is down and
     * queries fail at once (from the loop), not after their timeout. */
    loop_update_time(L);
    end = now_ms() + 3000;
    while (now_ms() < end)
        loop_run_once(L, 10);
    for (int i = 0; i < 10; i++) {
        struct outcome o = { 0 };
        uint64_t q0 = now_ms();
        CHECK_INT(pg_query(p, "SELECT 1", 0, NULL, outcome_cb, &o), 0);
        CHECK_INT(o.done, 0);
        CHECK(run_until(&o.done, 1, 1000));
        CHECK_INT(o.err, -ECONNREFUSED);
        CHECK(now_ms() - q0 < 200);
    }

    CHECK_INT(harness("harness_start_postgres_again"), 0);
    /* Backoff is at most 5 s; give it that plus the connect. */
    CHECK(wait_ready(p, true, 8000));
    struct outcome after = { 0 };
    CHECK_INT(pg_query(p, "SELECT $1::int + 1", 1, (const char *const[]){ "41" }, outcome_cb,
                       &after), 0);
    CHECK(run_until(&after.done, 1, 5000));
    CHECK_INT(after.err, 0);
    CHECK_STR(after.value, "42");

    /* Every connection comes back, not just the first. */
    end = now_ms() + 8000;
    do {
        loop_run_once(L, 10);
        pg_pool_stats(p, &st);
    } while (st.idle < 3 && now_ms() < end);
    CHECK_INT(st.idle, 3);

    /* The metrics saw it: connection errors counted, gauges back to idle. */
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_INT(metrics_render(metrics_default(), &b), 0);
    buf_append(&b, "", 1);
    const char *text = buf_rptr(&b);
    CHECK(strstr(text, "strata_pg_pool_connections{state=\"idle\"} 3") != NULL);
    CHECK(strstr(text, "strata_pg_pool_connections{state=\"busy\"} 0") != NULL);
    CHECK(strstr(text, "strata_pg_queries_total{result=\"connection_error\"} ") != NULL);
    CHECK(strstr(text, "strata_pg_queries_total{result=\"connection_error\"} 0") == NULL);
    CHECK(strstr(text, "strata_pg_query_duration_seconds_count ") != NULL);
    buf_free(&b);
    pg_pool_free(p);
}

int main(void)
{
    const char *base = getenv("STRATA_TEST_DATABASE_URL");
    if (!base || !*base || !getenv("STRATA_TEST_PG_DIR")) {
        fprintf(stderr, "test_pg_outage: STRATA_TEST_DATABASE_URL is not set; run it under "
                        "scripts/with-servers\n");
        return 1;
    }
    snprintf(db_name, sizeof db_name, "strata_pg_outage_%d", (int)getpid());
    const char *path = strstr(base, "://");
    path = path ? strchr(path + 3, '/') : NULL;
    if (!path) {
        fprintf(stderr, "test_pg_outage: cannot parse %s\n", base);
        return 1;
    }
    const char *q = strchr(path, '?');
    snprintf(db_url, sizeof db_url, "%.*s/%s%s", (int)(path - base), base, db_name, q ? q : "");
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    if (!admin(base, sql))
        return 1;
    L = loop_new();
    RUN(test_outage);
    loop_free(L);
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db_name);
    CHECK(admin(base, sql));
    return check_done();
}
