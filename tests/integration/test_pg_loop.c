/* libpq's non-blocking API driven by strata's event loop, the way services
 * will talk to PostgreSQL: PQconnectStart/PQconnectPoll on loop_io
 * readiness, PQsendQueryParams + PQflush, then PQconsumeInput/PQisBusy/
 * PQgetResult on readiness. Nothing here blocks the loop thread.
 * Needs a live server: STRATA_TEST_DATABASE_URL from scripts/with-servers. */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/loop.h"

static const char *db_url;

/* ---- a minimal loop-driven libpq connection --------------------------- */

enum pgc_state { PGC_CONNECTING, PGC_IDLE, PGC_BUSY, PGC_FAILED };

struct pgc {
    struct loop_io io;
    struct loop *loop;
    PGconn *pg;
    enum pgc_state state;
    bool is_watched;
    int steps;              /* PQconnectPoll calls */
    /* the query in flight */
    int arg;
    long result;
    int nresults;
    bool has_query_error;
    bool is_query_done;     /* set when done() reports a finished query */
    char error[512];
    void (*done)(struct pgc *c); /* connected, query finished, or failed */
    void *data;
};

static void pgc_io_cb(struct loop_io *io, unsigned events);

static void pgc_set_error(struct pgc *c, const char *msg)
{
    snprintf(c->error, sizeof c->error, "%s", msg && *msg ? msg : "unknown libpq error");
    size_t n = strlen(c->error);
    while (n && (c->error[n - 1] == '\n' || c->error[n - 1] == ' '))
        c->error[--n] = '\0';
}

static void pgc_unwatch(struct pgc *c)
{
    if (c->is_watched) {
        loop_io_close(&c->io);
        c->is_watched = false;
    }
}

static void pgc_watch(struct pgc *c, unsigned events)
{
    if (!c->is_watched) {
        loop_io_init(c->loop, &c->io, PQsocket(c->pg), pgc_io_cb, c);
        c->is_watched = true;
    }
    loop_io_set(&c->io, events);
}

static void pgc_fail(struct pgc *c, const char *msg)
{
    pgc_set_error(c, msg);
    c->state = PGC_FAILED;
    pgc_unwatch(c);
    c->done(c);
}

static void pgc_connect_step(struct pgc *c)
{
    /* libpq may close its socket and open another while connecting (next
     * address, SSL or GSS fallback), quite possibly under the same fd
     * number, which epoll would then no longer watch: re-register around
     * every step. A connect takes a handful of steps, so this costs a few
     * epoll_ctl calls per connection, none per query. */
    pgc_unwatch(c);
    c->steps++;
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        pgc_watch(c, LOOP_READ);
        break;
    case PGRES_POLLING_WRITING:
        pgc_watch(c, LOOP_WRITE);
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0) {
            pgc_fail(c, PQerrorMessage(c->pg));
            return;
        }
        c->state = PGC_IDLE;
        c->done(c);
        break;
    default:
        pgc_fail(c, PQerrorMessage(c->pg));
        break;
    }
}

/* Starts connecting; c->done runs once connected or failed. */
static void pgc_connect(struct loop *l, struct pgc *c, const char *conninfo,
                        void (*done)(struct pgc *), void *data)
{
    memset(c, 0, sizeof *c);
    c->loop = l;
    c->done = done;
    c->data = data;
    c->state = PGC_CONNECTING;
    c->pg = PQconnectStart(conninfo);
    if (!c->pg) {
        pgc_fail(c, "PQconnectStart: out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        pgc_fail(c, PQerrorMessage(c->pg));
        return;
    }
    /* libpq's rule: act as if PQconnectPoll had said WRITING. */
    pgc_watch(c, LOOP_WRITE);
}

static void pgc_close(struct pgc *c)
{
    pgc_unwatch(c);
    PQfinish(c->pg);
    c->pg = NULL;
}

/* Reads whatever arrived; finishes the query once libpq has it all. */
static void pgc_collect(struct pgc *c)
{
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            c->state = PGC_IDLE;
            c->is_query_done = true;
            pgc_watch(c, 0);
            c->done(c);
            return;
        }
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1) {
            c->result = strtol(PQgetvalue(res, 0, 0), NULL, 10);
            c->nresults++;
        } else {
            c->has_query_error = true;
            pgc_set_error(c, PQresultErrorMessage(res));
        }
        PQclear(res);
    }
}

static void pgc_io_cb(struct loop_io *io, unsigned events)
{
    struct pgc *c = io->data;
    if (c->state == PGC_CONNECTING) {
        pgc_connect_step(c);
        return;
    }
    if (c->state != PGC_BUSY)
        return;
    if ((events & LOOP_READ) && !PQconsumeInput(c->pg)) {
        pgc_fail(c, PQerrorMessage(c->pg));
        return;
    }
    /* libpq's rule for non-blocking sends: flush again on either readiness. */
    int rc = PQflush(c->pg);
    if (rc < 0) {
        pgc_fail(c, PQerrorMessage(c->pg));
        return;
    }
    pgc_watch(c, rc == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
    pgc_collect(c);
}

/* Sends sql with one int parameter; c->done runs when its result is in. */
static void pgc_query(struct pgc *c, const char *sql, int arg)
{
    char val[16];
    const char *values[1] = { val };
    snprintf(val, sizeof val, "%d", arg);
    c->arg = arg;
    c->nresults = 0;
    c->has_query_error = false;
    c->is_query_done = false;
    c->error[0] = '\0';
    if (!PQsendQueryParams(c->pg, sql, 1, NULL, values, NULL, NULL, 0)) {
        pgc_fail(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = PGC_BUSY;
    int rc = PQflush(c->pg);
    if (rc < 0) {
        pgc_fail(c, PQerrorMessage(c->pg));
        return;
    }
    pgc_watch(c, rc == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
}

/* ---- running the loop with a deadline ----------------------------------- */

static bool timed_out;

static void deadline_cb(struct loop_timer *t)
{
    timed_out = true;
    loop_stop(t->loop);
}

/* Runs l until something calls loop_stop, or ms pass (then timed_out). */
static void run_with_deadline(struct loop *l, uint64_t ms)
{
    struct loop_timer guard;
    timed_out = false;
    loop_timer_init(l, &guard, deadline_cb, NULL);
    loop_timer_start(&guard, ms);
    loop_run(l);
    loop_timer_stop(&guard);
}

/* ---- one connection, one query, one error ---------------------------------- */

static int single_phase;

static void single_done(struct pgc *c)
{
    if (c->state == PGC_FAILED) {
        loop_stop(c->loop);
        return;
    }
    switch (single_phase++) {
    case 0: /* connected */
        pgc_query(c, "SELECT $1::int + 1", 41);
        break;
    case 1:
        CHECK_INT(c->nresults, 1);
        CHECK_INT(c->result, 42);
        CHECK(!c->has_query_error);
        /* A server error comes back as a query error; the connection lives on. */
        pgc_query(c, "SELECT $1::int / 0", 1);
        break;
    case 2:
        CHECK(c->has_query_error);
        CHECK(strstr(c->error, "division by zero") != NULL);
        pgc_query(c, "SELECT $1::int + 1", -8);
        break;
    default:
        CHECK_INT(c->result, -7);
        loop_stop(c->loop);
        break;
    }
}

static void test_connect_and_query(void)
{
    struct loop *l = loop_new();
    struct pgc c;
    single_phase = 0;
    pgc_connect(l, &c, db_url, single_done, NULL);
    run_with_deadline(l, 10000);
    CHECK(!timed_out);
    if (c.state == PGC_FAILED)
        fprintf(stderr, "connect/query failed: %s\n", c.error);
    CHECK_INT(c.state, PGC_IDLE);
    CHECK_INT(single_phase, 4);
    CHECK(c.steps >= 2); /* really driven step by step through the loop */
    CHECK_INT(PQisnonblocking(c.pg), 1);
    CHECK_INT(PQstatus(c.pg), CONNECTION_OK);
    pgc_close(&c);
    loop_free(l);
}

/* ---- 50 queries over 4 connections ----------------------------------------- */

enum { NCONN = 4, NQUERY = 50 };

struct batch {
    struct pgc conns[NCONN];
    const char *sql;
    int nqueries;
    int next;
    int connected;
    int finished;
    int failed;
    int inflight;
    int max_inflight;
    int per_conn[NCONN];
    int current[NCONN];     /* the query each connection runs */
    struct timespec t_start, t_end; /* first query sent, last result in */
    long results[NQUERY];
    int seen[NQUERY];
};

static int query_arg(int i) { return i * 7 - 100; } /* negative and positive */

static void batch_next(struct batch *b, struct pgc *c)
{
    if (b->next >= b->nqueries)
        return;
    int i = b->next++;
    b->inflight++;
    if (b->inflight > b->max_inflight)
        b->max_inflight = b->inflight;
    b->per_conn[c - b->conns]++;
    b->current[c - b->conns] = i;
    pgc_query(c, b->sql, query_arg(i));
}

static void batch_done(struct pgc *c)
{
    struct batch *b = c->data;
    if (c->state == PGC_FAILED) {
        fprintf(stderr, "connection %d failed: %s\n", (int)(c - b->conns), c->error);
        b->failed++;
        loop_stop(c->loop);
        return;
    }
    if (!c->is_query_done) {
        /* Connected. Queries start once all are, so that all four run at
         * once rather than the first connection draining the queue while
         * the others still authenticate. */
        if (++b->connected == NCONN) {
            clock_gettime(CLOCK_MONOTONIC, &b->t_start);
            for (int k = 0; k < NCONN; k++)
                batch_next(b, &b->conns[k]);
        }
        return;
    }
    int i = b->current[c - b->conns];
    b->inflight--;
    b->finished++;
    if (c->has_query_error) {
        fprintf(stderr, "query %d failed: %s\n", i, c->error);
    } else if (c->nresults == 1) {
        b->seen[i]++;
        b->results[i] = c->result;
    }
    if (b->finished == b->nqueries) {
        clock_gettime(CLOCK_MONOTONIC, &b->t_end);
        loop_stop(c->loop);
        return;
    }
    batch_next(b, c);
}

static void run_batch(struct batch *b, const char *sql, int nqueries)
{
    struct loop *l = loop_new();
    memset(b, 0, sizeof *b);
    b->sql = sql;
    b->nqueries = nqueries;
    for (int i = 0; i < NCONN; i++)
        pgc_connect(l, &b->conns[i], db_url, batch_done, b);
    run_with_deadline(l, 20000);
    CHECK(!timed_out);
    CHECK_INT(b->failed, 0);
    for (int i = 0; i < NCONN; i++)
        pgc_close(&b->conns[i]);
    loop_free(l);
}

static void test_concurrent_queries(void)
{
    struct batch b;
    run_batch(&b, "SELECT $1::int + 1", NQUERY);
    CHECK_INT(b.finished, NQUERY);
    int wrong = 0;
    for (int i = 0; i < NQUERY; i++) {
        if (b.seen[i] != 1 || b.results[i] != query_arg(i) + 1) {
            wrong++;
            fprintf(stderr, "query %d: seen %d times, result %ld, want %d\n", i, b.seen[i],
                    b.results[i], query_arg(i) + 1);
        }
    }
    CHECK_INT(wrong, 0);
    CHECK_INT(b.max_inflight, NCONN); /* all four busy at once */
    for (int i = 0; i < NCONN; i++)
        CHECK(b.per_conn[i] > 0);
}

static void test_queries_overlap_in_time(void)
{
    /* Four 300 ms queries on four connections finish in about 300 ms when
     * the loop really overlaps them; one after another would take 1200. */
    struct batch b;
    run_batch(&b, "SELECT $1::int + 1 FROM pg_sleep(0.3)", NCONN);
    long ms = (b.t_end.tv_sec - b.t_start.tv_sec) * 1000 +
              (b.t_end.tv_nsec - b.t_start.tv_nsec) / 1000000;
    CHECK_INT(b.finished, NCONN);
    for (int i = 0; i < NCONN; i++)
        CHECK_INT(b.results[i], query_arg(i) + 1);
    CHECK(ms >= 300);
    CHECK(ms < 1000);
    if (ms >= 1000)
        fprintf(stderr, "4 x 300 ms queries took %ld ms: not concurrent\n", ms);
}

/* ---- a closed port fails cleanly ------------------------------------------------ */

static void stop_on_done(struct pgc *c) { loop_stop(c->loop); }

static void test_closed_port_fails(void)
{
    /* A port bound but not listening refuses connections, and nobody else
     * can take it while we hold it: a closed port that stays closed. */
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "postgresql://postgres@127.0.0.1:%u/strata_test?sslmode=disable&connect_timeout=5",
             ntohs(a.sin_port));

    struct loop *l = loop_new();
    struct pgc c;
    pgc_connect(l, &c, conninfo, stop_on_done, NULL);
    uint64_t start = loop_now_ms(l);
    run_with_deadline(l, 5000);
    loop_update_time(l);
    CHECK(!timed_out);
    CHECK_INT(c.state, PGC_FAILED);
    CHECK(strstr(c.error, "refused") != NULL);
    if (!strstr(c.error, "refused"))
        fprintf(stderr, "error was: %s\n", c.error);
    CHECK(loop_now_ms(l) - start < 2000);
    pgc_close(&c);
    loop_free(l);
    close(fd);
}

int main(void)
{
    db_url = getenv("STRATA_TEST_DATABASE_URL");
    if (!db_url || !*db_url) {
        fprintf(stderr, "test_pg_loop: STRATA_TEST_DATABASE_URL is not set; run it under "
                        "scripts/with-servers (as `make test` does), e.g.\n"
                        "  scripts/with-servers ctest --test-dir build -L integration\n");
        return 1;
    }
    RUN(test_connect_and_query);
    RUN(test_concurrent_queries);
    RUN(test_queries_overlap_in_time);
    RUN(test_closed_port_fails);
    return check_done();
}
