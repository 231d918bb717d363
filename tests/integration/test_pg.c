/* The PostgreSQL pool (core/pg.h) against a real server: parameters as data,
 * 200 queries over 4 connections, transactions, SQLSTATEs, timeouts, the
 * pending bound, readiness, and migrations (including two processes at once).
 * Each run works in a database of its own, created here and dropped at the
 * end, so it can run beside other tests on the same server.
 * Needs STRATA_TEST_DATABASE_URL from scripts/with-servers. */
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/loop.h"
#include "core/pg.h"

static const char *base_url;
static char db_name[64];
static char db_url[512];

/* ---- helpers ------------------------------------------------------------- */

/* base_url with its database replaced by db ("postgresql://u@h:p/db?x"). */
static void url_with_db(char *out, size_t n, const char *url, const char *db)
{
    const char *scheme = strstr(url, "://");
    const char *path = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *query = path ? strchr(path, '?') : NULL;
    if (!path) {
        snprintf(out, n, "%s dbname=%s", url, db);
        return;
    }
    snprintf(out, n, "%.*s/%s%s", (int)(path - url), url, db, query ? query : "");
}

/* Blocking admin query on a connection of its own; returns the first value
 * (a static copy) or NULL on error, which is printed. */
static const char *admin(const char *url, const char *sql)
{
    static char value[256];
    PGconn *c = PQconnectdb(url);
    const char *out = NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "admin connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
        snprintf(value, sizeof value, "%s", PQgetvalue(r, 0, 0));
        out = value;
    } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        value[0] = '\0';
        out = value;
    } else {
        fprintf(stderr, "admin '%s': %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    return out;
}

static long admin_long(const char *sql)
{
    const char *v = admin(db_url, sql);
    return v ? strtol(v, NULL, 10) : -1;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Runs l until *count reaches want or ms pass; true when it got there. */
static bool run_until(struct loop *l, const int *count, int want, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (*count < want && now_ms() < end)
        loop_run_once(l, 20);
    return *count >= want;
}

static bool wait_ready(struct loop *l, struct pg_pool *p, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (!pg_pool_is_ready(p, NULL, 0) && now_ms() < end)
        loop_run_once(l, 20);
    return pg_pool_is_ready(p, NULL, 0);
}

/* One query's outcome, copied out of the callback. */
struct outcome {
    int done;
    int err;
    ExecStatusType status;
    char sqlstate[6];
    char value[256];
    int ntuples;
    bool is_null;
};

static void outcome_cb(int err, PGresult *res, void *arg)
{
    struct outcome *o = arg;
    o->done++;
    o->err = err;
    if (!res)
        return;
    o->status = PQresultStatus(res);
    snprintf(o->sqlstate, sizeof o->sqlstate, "%s", pg_sqlstate(res));
    o->ntuples = PQntuples(res);
    if (o->ntuples > 0 && PQnfields(res) > 0) {
        o->is_null = PQgetisnull(res, 0, 0);
        snprintf(o->value, sizeof o->value, "%s", PQgetvalue(res, 0, 0));
    }
}

/* Runs one query on p and waits for it. */
static struct outcome query(struct loop *l, struct pg_pool *p, const char *sql, int n,
                            const char *const *params)
{
    struct outcome o = { 0 };
    int rc = pg_query(p, sql, n, params, outcome_cb, &o);
    CHECK_INT(rc, 0);
    CHECK_INT(o.done, 0); /* never inside the call */
    if (rc == 0)
        CHECK(run_until(l, &o.done, 1, 10000));
    return o;
}

static struct pg_pool *pool_up_as(struct loop *l, const char *url, unsigned size,
                                  uint32_t query_timeout_ms)
{
    struct pg_pool *p = pg_pool_new(l, &(struct pg_pool_config){
        .conninfo = url, .size = size, .query_timeout_ms = query_timeout_ms });
    CHECK(p != NULL);
    CHECK(wait_ready(l, p, 10000));
    return p;
}

static struct pg_pool *pool_up(struct loop *l, unsigned size, uint32_t query_timeout_ms)
{
    return pool_up_as(l, db_url, size, query_timeout_ms);
}

/* ---- parameters are data ------------------------------------------------- */

static void test_params_are_data(void)
{
    struct loop *l = loop_new();
    struct pg_pool *p = pool_up(l, 2, 0);
    struct outcome o = query(l, p, "CREATE TABLE notes (id serial PRIMARY KEY, body text)", 0, NULL);
    CHECK_INT(o.err, 0);
    CHECK_INT(o.status, PGRES_COMMAND_OK);

    const char *evil = "'; DROP TABLE notes; --";
    const char *params[] = { evil };
    o = query(l, p, "INSERT INTO notes (body) VALUES ($1) RETURNING id", 1, params);
    CHECK_INT(o.err, 0);
    CHECK_INT(o.status, PGRES_TUPLES_OK);
    CHECK_STR(o.value, "1");

    const char *id[] = { "1" };
    o = query(l, p, "SELECT body FROM notes WHERE id = $1", 1, id);
    CHECK_INT(o.status, PGRES_TUPLES_OK);
    CHECK_STR(o.value, evil);
    CHECK_INT(admin_long("SELECT count(*) FROM notes"), 1); /* the table is still there */

    /* NULL parameters are SQL NULL; quotes and backslashes pass untouched. */
    const char *nul[] = { NULL };
    o = query(l, p, "SELECT $1::text IS NULL", 1, nul);
    CHECK_STR(o.value, "t");
    const char *odd[] = { "a'b\\c\"d$1" };
    o = query(l, p, "SELECT $1::text", 1, odd);
    CHECK_STR(o.value, "a'b\\c\"d$1");

    /* An SQL error leaves the connection usable. */
    o = query(l, p, "SELECT 1 / $1::int", 1, (const char *const[]){ "0" });
    CHECK_INT(o.err, 0);
    CHECK_INT(o.status, PGRES_FATAL_ERROR);
    CHECK_STR(o.sqlstate, "22012");
    o = query(l, p, "SELECT 40 + $1::int", 1, (const char *const[]){ "2" });
    CHECK_STR(o.value, "42");
    CHECK_STR(pg_sqlstate(NULL), "");

    CHECK_INT(pg_query(p, NULL, 0, NULL, outcome_cb, &o), -EINVAL);
    CHECK_INT(pg_query(p, "SELECT 1", 0, NULL, NULL, NULL), -EINVAL);
    CHECK_INT(pg_query(p, "SELECT $1", 1, NULL, outcome_cb, &o), -EINVAL);
    pg_pool_free(p);
    loop_free(l);
}

/* ---- 200 concurrent queries over 4 connections ---------------------------- */

enum { NQ = 200, POOL = 4 };

struct many {
    int done;
    int wrong;
    int errors;
    long max_backends;
    int pids[NQ];
    struct { struct many *m; int i; } slot[NQ];
};

static void many_cb(int err, PGresult *res, void *arg)
{
    struct { struct many *m; int i; } *s = arg;
    struct many *m = s->m;
    m->done++;
    if (err || PQresultStatus(res) != PGRES_TUPLES_OK) {
        m->errors++;
        if (res)
            fprintf(stderr, "query %d: %s", s->i, PQresultErrorMessage(res));
        return;
    }
    if (strtol(PQgetvalue(res, 0, 0), NULL, 10) != (long)s->i * 3 - 7)
        m->wrong++;
    long n = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    if (n > m->max_backends)
        m->max_backends = n;
    m->pids[s->i] = (int)strtol(PQgetvalue(res, 0, 2), NULL, 10);
}

static void test_200_queries_over_4(void)
{
    struct loop *l = loop_new();
    /* Its own application_name, so that backends of earlier tests still
     * exiting are not counted. */
    char url[600];
    snprintf(url, sizeof url, "%s%sapplication_name=strata_pg_200", db_url,
             strchr(db_url, '?') ? "&" : "?");
    struct pg_pool *p = pool_up_as(l, url, POOL, 0);
    struct pg_pool_stats st;
    uint64_t end = now_ms() + 10000;
    do {
        loop_run_once(l, 20);
        pg_pool_stats(p, &st);
    } while (st.idle < POOL && now_ms() < end);
    CHECK_INT(st.idle, POOL);
    static struct many m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < NQ; i++) {
        char a[16];
        snprintf(a, sizeof a, "%d", i);
        const char *params[] = { a };
        m.slot[i].m = &m;
        m.slot[i].i = i;
        int rc = pg_query(p,
                          "SELECT $1::int * 3 - 7,"
                          " (SELECT count(*) FROM pg_stat_activity"
                          "  WHERE application_name = 'strata_pg_200'),"
                          " pg_backend_pid() FROM pg_sleep(0.002)",
                          1, params, many_cb, &m.slot[i]);
        CHECK_INT(rc, 0);
    }
    pg_pool_stats(p, &st);
    CHECK_INT(st.busy, POOL);
    CHECK_INT(st.pending, NQ - POOL);
    CHECK(run_until(l, &m.done, NQ, 20000));
    CHECK_INT(m.errors, 0);
    CHECK_INT(m.wrong, 0);
    CHECK(m.max_backends >= 1 && m.max_backends <= POOL);
    int distinct = 0;
    for (int i = 0; i < NQ; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = m.pids[j] == m.pids[i];
        distinct += !seen;
    }
    CHECK_INT(distinct, POOL); /* all four used, no fifth */
    pg_pool_stats(p, &st);
    CHECK_INT(st.idle, POOL);
    CHECK_INT(st.pending, 0);
    pg_pool_free(p);
    loop_free(l);
}

/* ---- the pending bound ---------------------------------------------------- */

static void test_pending_bound(void)
{
    struct loop *l = loop_new();
    struct pg_pool *p = pg_pool_new(l, &(struct pg_pool_config){
        .conninfo = db_url, .size = 1, .max_pending = 2 });
    struct outcome o[3] = { { 0 } };
    /* Still connecting: everything queues. */
    CHECK_INT(pg_query(p, "SELECT 1", 0, NULL, outcome_cb, &o[0]), 0);
    CHECK_INT(pg_query(p, "SELECT 2", 0, NULL, outcome_cb, &o[1]), 0);
    CHECK_INT(pg_query(p, "SELECT 3", 0, NULL, outcome_cb, &o[2]), -EBUSY);
    int done = 0;
    uint64_t end = now_ms() + 10000;
    while ((o[0].done + o[1].done) < 2 && now_ms() < end)
        loop_run_once(l, 20);
    done = o[0].done + o[1].done;
    CHECK_INT(done, 2);
    CHECK_STR(o[0].value, "1");
    CHECK_STR(o[1].value, "2");
    CHECK_INT(o[2].done, 0);
    pg_pool_free(p);
    loop_free(l);
}

/* ---- transactions ----------------------------------------------------------- */

struct txrun {
    int step;
    int done;
    int err;
    struct pg_tx *tx;
    struct outcome q[4];
    bool do_commit;
};

static void tx_commit_cb(int err, void *arg)
{
    struct txrun *t = arg;
    t->err = err;
    t->done++;
}

static void tx_begun(int err, struct pg_tx *tx, void *arg)
{
    struct txrun *t = arg;
    t->tx = tx;
    if (err) {
        t->err = err;
        t->done++;
        return;
    }
    const char *a[] = { t->do_commit ? "kept" : "dropped" };
    CHECK_INT(pg_tx_query(tx, "INSERT INTO ledger (note) VALUES ($1)", 1, a, outcome_cb, &t->q[0]), 0);
    /* Queued behind the first: runs in order on the same connection. */
    CHECK_INT(pg_tx_query(tx, "SELECT count(*) FROM ledger WHERE note = $1", 1, a, outcome_cb,
                          &t->q[1]), 0);
    if (t->do_commit) {
        CHECK_INT(pg_tx_commit(tx, tx_commit_cb, t), 0);
    }
}

static void test_transactions(void)
{
    struct loop *l = loop_new();
    struct pg_pool *p = pool_up(l, 2, 0);
    struct outcome o = query(l, p, "CREATE TABLE ledger (id serial, note text UNIQUE)", 0, NULL);
    CHECK_INT(o.status, PGRES_COMMAND_OK);

    struct txrun a = { .do_commit = true };
    CHECK_INT(pg_tx_begin(p, tx_begun, &a), 0);
    CHECK(run_until(l, &a.done, 1, 10000));
    CHECK_INT(a.err, 0);
    CHECK_INT(a.q[0].done, 1);
    CHECK_INT(a.q[0].status, PGRES_COMMAND_OK);
    CHECK_STR(a.q[1].value, "1");

    struct txrun b = { .do_commit = false };
    CHECK_INT(pg_tx_begin(p, tx_begun, &b), 0);
    CHECK(run_until(l, &b.q[1].done, 1, 10000));
    CHECK_STR(b.q[1].value, "1"); /* visible inside the transaction */
    CHECK_STR(admin(db_url, "SELECT count(*) FROM ledger WHERE note = 'dropped'"), "0");
    pg_tx_rollback(b.tx);

    /* After the rollback the connection serves ordinary queries again. */
    o = query(l, p, "SELECT string_agg(note, ',') FROM ledger", 0, NULL);
    CHECK_STR(o.value, "kept");
    struct pg_pool_stats st;
    for (int i = 0; i < 50; i++)
        loop_run_once(l, 10);
    pg_pool_stats(p, &st);
    CHECK_INT(st.idle, 2);
    CHECK_INT(admin_long("SELECT count(*) FROM ledger"), 1);

    /* A unique violation: SQLSTATE 23505 as a result, not a connection error. */
    const char *dup[] = { "kept" };
    o = query(l, p, "INSERT INTO ledger (note) VALUES ($1)", 1, dup);
    CHECK_INT(o.err, 0);
    CHECK_INT(o.status, PGRES_FATAL_ERROR);
    CHECK_STR(o.sqlstate, "23505");

    /* Inside a transaction the violation aborts it: COMMIT says so. */
    struct txrun c = { .do_commit = false };
    CHECK_INT(pg_tx_begin(p, tx_begun, &c), 0);
    CHECK(run_until(l, &c.q[1].done, 1, 10000));
    CHECK(c.tx != NULL);
    if (c.tx) {
        CHECK_INT(pg_tx_query(c.tx, "INSERT INTO ledger (note) VALUES ($1)", 1, dup, outcome_cb,
                              &c.q[2]), 0);
        CHECK_INT(pg_tx_commit(c.tx, tx_commit_cb, &c), 0);
        CHECK(run_until(l, &c.done, 1, 10000));
        CHECK_STR(c.q[2].sqlstate, "23505");
        CHECK_INT(c.err, -ECANCELED);
    }
    CHECK_INT(admin_long("SELECT count(*) FROM ledger"), 1);
    o = query(l, p, "SELECT 1", 0, NULL);
    CHECK_STR(o.value, "1");
    pg_pool_free(p);
    loop_free(l);
}

/* ---- rollback while running; serialization failure at COMMIT ---------------- */

static void tx_only_begun(int err, struct pg_tx *tx, void *arg)
{
    struct txrun *t = arg;
    t->tx = tx;
    t->err = err;
    t->step++;
}

static struct pg_tx *begin(struct loop *l, struct pg_pool *p, struct txrun *t)
{
    memset(t, 0, sizeof *t);
    CHECK_INT(pg_tx_begin(p, tx_only_begun, t), 0);
    CHECK(run_until(l, &t->step, 1, 10000));
    CHECK_INT(t->err, 0);
    return t->tx;
}

static void tx_step(struct loop *l, struct pg_tx *tx, const char *sql, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    CHECK_INT(pg_tx_query(tx, sql, 0, NULL, outcome_cb, o), 0);
    CHECK(run_until(l, &o->done, 1, 10000));
}

static void test_rollback_and_serialization(void)
{
    struct loop *l = loop_new();
    struct pg_pool *p = pool_up(l, 2, 0);
    struct outcome o = query(l, p, "CREATE TABLE doctors (name text, on_call bool)", 0, NULL);
    CHECK_INT(o.status, PGRES_COMMAND_OK);

    /* Rolled back while a statement runs: its callback is not called, and
     * the connection comes back to the pool once ROLLBACK is through. */
    struct txrun a;
    struct pg_tx *tx = begin(l, p, &a);
    if (tx) {
        struct outcome running = { 0 };
        CHECK_INT(pg_tx_query(tx, "INSERT INTO doctors SELECT 'x', true FROM pg_sleep(0.2)", 0,
                              NULL, outcome_cb, &running), 0);
        for (int i = 0; i < 3; i++)
            loop_run_once(l, 5);
        pg_tx_rollback(tx);
        struct pg_pool_stats st;
        uint64_t end = now_ms() + 5000;
        do {
            loop_run_once(l, 10);
            pg_pool_stats(p, &st);
        } while (st.idle < 2 && now_ms() < end);
        CHECK_INT(st.idle, 2);
        CHECK_INT(running.done, 0);
        CHECK_INT(admin_long("SELECT count(*) FROM doctors"), 0);
    }

    /* Write skew under SERIALIZABLE: both read, both write, the second
     * COMMIT fails with 40001 → -EAGAIN (retry the transaction). */
    o = query(l, p, "INSERT INTO doctors VALUES ('alice', true), ('bob', true)", 0, NULL);
    CHECK_INT(o.status, PGRES_COMMAND_OK);
    struct txrun t1, t2;
    struct pg_tx *x1 = begin(l, p, &t1);
    struct pg_tx *x2 = begin(l, p, &t2);
    if (x1 && x2) {
        struct outcome q;
        tx_step(l, x1, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &q);
        tx_step(l, x2, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &q);
        tx_step(l, x1, "SELECT count(*) FROM doctors WHERE on_call", &q);
        CHECK_STR(q.value, "2");
        tx_step(l, x2, "SELECT count(*) FROM doctors WHERE on_call", &q);
        tx_step(l, x1, "UPDATE doctors SET on_call = false WHERE name = 'alice'", &q);
        CHECK_INT(q.status, PGRES_COMMAND_OK);
        tx_step(l, x2, "UPDATE doctors SET on_call = false WHERE name = 'bob'", &q);
        CHECK_INT(q.status, PGRES_COMMAND_OK);
        CHECK_INT(pg_tx_commit(x1, tx_commit_cb, &t1), 0);
        CHECK(run_until(l, &t1.done, 1, 10000));
        CHECK_INT(t1.err, 0);
        CHECK_INT(pg_tx_commit(x2, tx_commit_cb, &t2), 0);
        CHECK(run_until(l, &t2.done, 1, 10000));
        CHECK_INT(t2.err, -EAGAIN);
    }
    CHECK_INT(admin_long("SELECT count(*) FROM doctors WHERE on_call"), 1);
    pg_pool_free(p);
    loop_free(l);
}

/* ---- query timeout ----------------------------------------------------------- */

static void test_query_timeout(void)
{
    struct loop *l = loop_new();
    struct pg_pool *p = pool_up(l, 1, 300);
    uint64_t t0 = now_ms();
    struct outcome o = query(l, p, "SELECT pg_sleep(3)", 0, NULL);
    uint64_t took = now_ms() - t0;
    CHECK_INT(o.err, -ETIMEDOUT);
    CHECK(took >= 280 && took < 1500);
    if (took >= 1500)
        fprintf(stderr, "timeout took %llu ms\n", (unsigned long long)took);
    /* The connection was replaced: the next query works. */
    o = query(l, p, "SELECT 7", 0, NULL);
    CHECK_INT(o.err, 0);
    CHECK_STR(o.value, "7");

    /* A timed-out transaction query loses the transaction. */
    struct txrun t = { .do_commit = false };
    CHECK_INT(pg_tx_begin(p, tx_begun, &t), 0);
    CHECK(run_until(l, &t.q[1].done, 1, 10000));
    if (t.tx) {
        CHECK_INT(pg_tx_query(t.tx, "SELECT pg_sleep(3)", 0, NULL, outcome_cb, &t.q[2]), 0);
        CHECK(run_until(l, &t.q[2].done, 1, 5000));
        CHECK_INT(t.q[2].err, -ETIMEDOUT);
        CHECK_INT(pg_tx_commit(t.tx, tx_commit_cb, &t), -ECONNRESET);
    }
    o = query(l, p, "SELECT 8", 0, NULL);
    CHECK_STR(o.value, "8");
    pg_pool_free(p);
    loop_free(l);
}

/* ---- readiness against a port nobody serves ------------------------------------ */

static void test_not_ready_when_unreachable(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char url[256];
    snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:%u/x?sslmode=disable",
             ntohs(a.sin_port));
    struct loop *l = loop_new();
    struct pg_pool *p = pg_pool_new(l, &(struct pg_pool_config){ .conninfo = url, .size = 2 });
    char why[256];
    CHECK(!pg_pool_is_ready(p, why, sizeof why));
    struct outcome o = { 0 };
    CHECK_INT(pg_query(p, "SELECT 1", 0, NULL, outcome_cb, &o), 0);
    CHECK(run_until(l, &o.done, 1, 3000));
    CHECK_INT(o.err, -ECONNREFUSED); /* failed fast, not after the timeout */
    CHECK(!pg_pool_is_ready(p, why, sizeof why));
    CHECK(strstr(why, "refused") != NULL);
    /* Pool down: new queries fail at once (from the loop, not in the call). */
    struct outcome o2 = { 0 };
    uint64_t t0 = now_ms();
    CHECK_INT(pg_query(p, "SELECT 1", 0, NULL, outcome_cb, &o2), 0);
    CHECK_INT(o2.done, 0);
    CHECK(run_until(l, &o2.done, 1, 3000));
    CHECK_INT(o2.err, -ECONNREFUSED);
    CHECK(now_ms() - t0 < 500);
    pg_pool_free(p);
    loop_free(l);
    close(fd);
}

/* ---- migrations ----------------------------------------------------------------- */

static const struct pg_migration migs[] = {
    { 1, "create_items", "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
                         "CREATE TABLE applies (version int)" },
    { 2, "seed_items", "INSERT INTO items VALUES (1, 'one'), (2, 'two');"
                       "INSERT INTO applies VALUES (2)" },
    { 3, "add_price", "ALTER TABLE items ADD COLUMN price int NOT NULL DEFAULT 0;"
                      "INSERT INTO applies VALUES (3)" },
};

static void test_migrations(void)
{
    char err[512];
    CHECK_INT(pg_migrate(db_url, "strata-test", migs, 3, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_STR(admin(db_url, "SELECT string_agg(version::text || name, ',' ORDER BY version) "
                            "FROM schema_migrations"), "1create_items,2seed_items,3add_price");
    CHECK_INT(admin_long("SELECT count(*) FROM items"), 2);
    const char *before = admin(db_url, "SELECT max(applied_at)::text FROM schema_migrations");
    char stamp[64];
    snprintf(stamp, sizeof stamp, "%s", before ? before : "");

    /* Re-applying is a no-op. */
    CHECK_INT(pg_migrate(db_url, "strata-test", migs, 3, err, sizeof err), 0);
    CHECK_INT(admin_long("SELECT count(*) FROM applies"), 2);
    CHECK_STR(admin(db_url, "SELECT max(applied_at)::text FROM schema_migrations"), stamp);

    /* A failing migration names its version and PostgreSQL's message; the
     * ones before it stay, it leaves nothing. */
    const struct pg_migration more[] = {
        migs[0], migs[1], migs[2],
        { 4, "add_stock", "ALTER TABLE items ADD COLUMN stock int; INSERT INTO applies VALUES (4)" },
        { 5, "broken", "INSERT INTO applies VALUES (5); ALTER TABLE nope ADD COLUMN x int" },
        { 6, "after", "INSERT INTO applies VALUES (6)" },
    };
    CHECK_INT(pg_migrate(db_url, "strata-test", more, 6, err, sizeof err), -EIO);
    CHECK(strstr(err, "migration 5 (broken)") != NULL);
    CHECK(strstr(err, "relation \"nope\" does not exist") != NULL);
    fprintf(stderr, "  (failure reads: %s)\n", err);
    CHECK_STR(admin(db_url, "SELECT string_agg(version::text, ',' ORDER BY version) "
                            "FROM schema_migrations"), "1,2,3,4");
    CHECK_STR(admin(db_url, "SELECT string_agg(version::text, ',' ORDER BY version) FROM applies"),
              "2,3,4");

    /* Bad arguments. */
    const struct pg_migration unordered[] = { { 2, "b", "SELECT 1" }, { 1, "a", "SELECT 1" } };
    CHECK_INT(pg_migrate(db_url, "strata-test", unordered, 2, err, sizeof err), -EINVAL);
    CHECK_INT(pg_migrate("postgresql://postgres@127.0.0.1:1/x?connect_timeout=2", "k", migs, 1,
                         err, sizeof err), -ECONNREFUSED);
}

static void test_migrations_race(void)
{
    /* Four processes, each with its own connection, migrate a fresh schema
     * at once: the advisory lock lets one apply each version; the rest skip.
     * CREATE TABLE without IF NOT EXISTS would fail a second application. */
    static const struct pg_migration race[] = {
        { 1, "t1", "CREATE TABLE race1 (v int); INSERT INTO race_log VALUES (1)" },
        { 2, "t2", "CREATE TABLE race2 (v int); INSERT INTO race_log VALUES (2)" },
        { 3, "t3", "SELECT pg_sleep(0.1); INSERT INTO race_log VALUES (3)" },
    };
    CHECK_STR(admin(db_url, "CREATE SCHEMA race; CREATE TABLE race.race_log (version int)"), "");
    char url[600];
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3Drace", db_url,
             strchr(db_url, '?') ? "&" : "?");
    enum { NPROC = 4 };
    pid_t pids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char err[512];
            int rc = pg_migrate(url, "strata-race", race, 3, err, sizeof err);
            if (rc)
                fprintf(stderr, "child %d: %s\n", i, err);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    int failed = 0;
    for (int i = 0; i < NPROC; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_INT(failed, 0);
    CHECK_STR(admin(db_url, "SELECT string_agg(version::text, ',' ORDER BY version) "
                            "FROM race.race_log"), "1,2,3");
    CHECK_STR(admin(db_url, "SELECT string_agg(version::text, ',' ORDER BY version) "
                            "FROM race.schema_migrations"), "1,2,3");
}

int main(void)
{
    base_url = getenv("STRATA_TEST_DATABASE_URL");
    if (!base_url || !*base_url) {
        fprintf(stderr, "test_pg: STRATA_TEST_DATABASE_URL is not set; run it under "
                        "scripts/with-servers, e.g.\n"
                        "  scripts/with-servers ctest --test-dir build -R pg\n");
        return 1;
    }
    snprintf(db_name, sizeof db_name, "strata_pg_test_%d", (int)getpid());
    url_with_db(db_url, sizeof db_url, base_url, db_name);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    if (!admin(base_url, sql))
        return 1;

    RUN(test_params_are_data);
    RUN(test_200_queries_over_4);
    RUN(test_pending_bound);
    RUN(test_transactions);
    RUN(test_rollback_and_serialization);
    RUN(test_query_timeout);
    RUN(test_not_ready_when_unreachable);
    RUN(test_migrations);
    RUN(test_migrations_race);

    /* WITH (FORCE): a timed-out query's backend may still be sleeping. */
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db_name);
    CHECK(admin(base_url, sql) != NULL);
    return check_done();
}
