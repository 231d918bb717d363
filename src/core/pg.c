/* pg.c — the PostgreSQL pool: libpq's non-blocking API on the event loop.
 *
 * A pool owns `size` connections. A request (a query, a BEGIN, a query or
 * COMMIT/ROLLBACK inside a transaction) lives in exactly one place:
 *   - the pool's queue, waiting for an idle connection;
 *   - a transaction's queue, waiting for its connection to finish the
 *     previous statement;
 *   - running on a connection (conn->req);
 *   - the pool's failing list, its error to be delivered from a 0 ms timer
 *     (so that no callback ever runs inside the call that queued it, and a
 *     connection failing in the middle of our own bookkeeping hands errors
 *     out only once that bookkeeping is done).
 * Every request carries a timer: its timeout while queued or running, then
 * the 0 ms delivery timer when it fails.
 *
 * Callbacks are made last in each path, and after a callback only the
 * connection (an array slot that lives as long as the pool) is looked at
 * again, never the request or transaction, which the callback may have
 * ended. */
#include "core/pg.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/trace.h"

enum {
    PG_DEFAULT_SIZE = 4,
    PG_DEFAULT_CONNECT_TIMEOUT_MS = 5000,
    PG_DEFAULT_QUERY_TIMEOUT_MS = 5000,
    PG_DEFAULT_MAX_PENDING = 1024,
    /* Reconnect backoff: 100 ms doubling to 5 s. The first retry comes soon
     * enough to ride out a server restart (0.3 s here), the cap keeps a
     * replica from hammering a database that is down for longer. */
    PG_BACKOFF_MIN_MS = 100,
    PG_BACKOFF_MAX_MS = 5000,
    PG_MAX_PARAMS = 65535, /* the protocol's Int16 parameter count */
};

/* ---- metrics: one set per process ---------------------------------------- */

static struct {
    struct metrics_gauge *idle, *busy, *connecting;
    struct metrics_counter *ok, *sql_error, *timeout, *conn_error, *rejected;
    struct metrics_histogram *duration;
} pgm;
static pthread_once_t pgm_once = PTHREAD_ONCE_INIT;

static void pgm_register(void)
{
    struct metrics_registry *r = metrics_default();
    struct metrics_family *f;
    if (!r)
        return;
    if (metrics_register_gauge(r, "strata_pg_pool_connections",
                               "PostgreSQL pool connections by state.", METRICS_LABELS("state"),
                               &f) == 0) {
        pgm.idle = metrics_gauge_with(f, "idle");
        pgm.busy = metrics_gauge_with(f, "busy");
        pgm.connecting = metrics_gauge_with(f, "connecting");
    }
    if (metrics_register_counter(r, "strata_pg_queries_total",
                                 "PostgreSQL queries by outcome.", METRICS_LABELS("result"),
                                 &f) == 0) {
        pgm.ok = metrics_counter_with(f, "ok");
        pgm.sql_error = metrics_counter_with(f, "sql_error");
        pgm.timeout = metrics_counter_with(f, "timeout");
        pgm.conn_error = metrics_counter_with(f, "connection_error");
        pgm.rejected = metrics_counter_with(f, "rejected");
    }
    if (metrics_register_histogram(r, "strata_pg_query_duration_seconds",
                                   "PostgreSQL query time, from send to result.", NULL, NULL, 0,
                                   &f) == 0)
        pgm.duration = metrics_histogram_with(f);
}

/* ---- types ------------------------------------------------------------------ */

enum req_kind { REQ_QUERY, REQ_BEGIN, REQ_TX_QUERY, REQ_COMMIT, REQ_ROLLBACK };

struct pg_req {
    struct pg_req *next, *prev;
    struct pg_pool *pool;
    struct pg_tx *tx;    /* BEGIN: the tx to hand out; in-tx kinds: their tx, NULL once it broke */
    struct pg_conn *conn; /* while running */
    enum req_kind kind;
    bool is_failing;
    bool is_suppressed;  /* rolled back while running: no callback */
    int err;
    struct loop_timer timer;
    struct timespec sent;
    union {
        pg_result_cb result;
        pg_tx_cb tx;
        pg_commit_cb commit;
    } cb;
    void *arg;
    const char *sql;
    int nparams;
    const char **params; /* points into the same allocation */
    struct trace_ctx parent; /* the caller's span, when it had one */
    bool has_parent;
    struct trace_span *span; /* the client span, from the call to the result */
};

struct req_list {
    struct pg_req *head, *tail;
};

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

struct pg_conn {
    struct pg_pool *pool;
    PGconn *pg;
    struct loop_io io;
    bool is_watched;
    enum conn_state state;
    struct loop_timer timer;   /* connect timeout, or reconnect backoff */
    uint32_t backoff_ms;
    bool has_failed;           /* the last attempt failed (pool down detection) */
    unsigned fail_streak;      /* failures since last up: log the first only */
    struct pg_req *req;        /* running */
    struct pg_tx *tx;          /* holding this connection */
    PGresult *result;          /* req's result, until libpq says it is done */
    unsigned idx;
};

struct pg_tx {
    struct pg_tx *next, *prev; /* the pool's open transactions */
    struct pg_pool *pool;
    struct pg_conn *conn;      /* NULL once the connection broke */
    struct req_list queue;
    bool is_ended;             /* commit or rollback called */
    bool is_listed;
    struct trace_ctx parent;   /* BEGIN's parent: every statement's */
    bool has_parent;
};

struct pg_pool {
    struct loop *loop;
    char *conninfo;
    unsigned size;
    unsigned max_pending;
    uint32_t connect_timeout_ms;
    uint32_t query_timeout_ms;
    struct pg_conn *conns;
    struct req_list queue;
    unsigned npending;
    struct req_list failing;
    struct pg_tx *txs;
    unsigned nup;
    bool is_down;
    char last_error[256];
    struct trace_tracer *tracer; /* NULL: no spans (no OTLP endpoint) */
};

static void conn_io_cb(struct loop_io *io, unsigned events);
static void conn_timer_cb(struct loop_timer *t);
static void req_timer_cb(struct loop_timer *t);
static void conn_send(struct pg_conn *c, struct pg_req *r);
static void conn_break(struct pg_conn *c, int err, const char *why, bool is_server_failure);
static void dispatch(struct pg_pool *p);

/* ---- small helpers ------------------------------------------------------ */

static void list_push(struct req_list *l, struct pg_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void list_remove(struct req_list *l, struct pg_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
}

static struct pg_req *list_pop(struct req_list *l)
{
    struct pg_req *r = l->head;
    if (r)
        list_remove(l, r);
    return r;
}

/* ---- spans ------------------------------------------------------------------
 *
 * One client span per statement (BEGIN and COMMIT included), child of the
 * span of the code that queued it: the thread's current span (a service's
 * request span while its handler runs), or, inside a pool callback, the
 * parent of the statement whose result is being delivered (the current
 * span there may belong to another request). Statements of a transaction
 * share BEGIN's parent. Without a parent no span is made: background work
 * (an outbox poller) starts no traces of its own. */

static _Thread_local struct trace_ctx t_cb_parent;
static _Thread_local bool t_has_cb_parent;

static void req_set_parent(struct pg_req *r, const struct pg_tx *tx)
{
    if (tx) {
        r->parent = tx->parent;
        r->has_parent = tx->has_parent;
    } else if (t_has_cb_parent) {
        r->parent = t_cb_parent;
        r->has_parent = true;
    } else if (trace_current_span()) {
        r->parent = *trace_span_ctx(trace_current_span());
        r->has_parent = true;
    }
}

/* The statement's first keyword, upper-cased ("SELECT", "WITH", "BEGIN"). */
static void sql_operation(const char *sql, char *out, size_t n)
{
    size_t i = 0;
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '(')
        sql++;
    while (i + 1 < n && ((*sql >= 'a' && *sql <= 'z') || (*sql >= 'A' && *sql <= 'Z'))) {
        out[i++] = (char)(*sql >= 'a' ? *sql - 32 : *sql);
        sql++;
    }
    out[i] = '\0';
}

/* sql with every literal value replaced by '?': quoted strings and numbers
 * (not $n placeholders, not digits inside names). Values travel as
 * parameters anyway; this keeps a constant in the text out of traces too.
 * At most n-1 bytes (the span cuts at TRACE_MAX_VALUE). */
static size_t sql_sanitize(const char *sql, char *out, size_t n)
{
    size_t o = 0;
    char prev = ' ';
    for (const char *p = sql; *p && o + 1 < n;) {
        bool is_word = (prev >= 'a' && prev <= 'z') || (prev >= 'A' && prev <= 'Z') ||
                       (prev >= '0' && prev <= '9') || prev == '_' || prev == '$';
        if (*p == '\'') {
            p++;
            while (*p && !(*p == '\'' && p[1] != '\'')) /* '' is a quote inside */
                p += *p == '\'' ? 2 : 1;
            if (*p)
                p++;
            out[o++] = '?';
            prev = '?';
        } else if (*p >= '0' && *p <= '9' && !is_word) {
            while ((*p >= '0' && *p <= '9') || *p == '.')
                p++;
            out[o++] = '?';
            prev = '?';
        } else {
            prev = *p;
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return o;
}

static void req_span_start(struct pg_req *r)
{
    struct pg_pool *p = r->pool;
    if (!p->tracer || !r->has_parent)
        return;
    char op[24], stmt[TRACE_MAX_VALUE + 1];
    sql_operation(r->sql, op, sizeof op);
    r->span = trace_span_start(p->tracer, op[0] ? op : "postgresql", TRACE_SPAN_CLIENT, &r->parent);
    if (!trace_span_is_recording(r->span))
        return;
    size_t n = sql_sanitize(r->sql, stmt, sizeof stmt);
    trace_span_set_attr_str(r->span, "db.system", STR_LIT("postgresql"));
    trace_span_set_attr_str(r->span, "db.operation.name", str_from_cstr(op));
    trace_span_set_attr_str(r->span, "db.statement", str_make(stmt, n));
}

/* Ends r's span with the outcome: err < 0, or res (an SQL error is an
 * error status with its SQLSTATE). Before the callback, so that the span
 * ends inside its parent. */
static void req_span_end(struct pg_req *r, int err, const PGresult *res)
{
    if (!r->span)
        return;
    if (err < 0) {
        trace_span_set_status(r->span, TRACE_STATUS_ERROR, str_from_cstr(strerror(-err)));
    } else if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
        trace_span_set_attr_str(r->span, "db.response.status_code", str_from_cstr(pg_sqlstate(res)));
        trace_span_set_status(r->span, TRACE_STATUS_ERROR, str_from_cstr(pg_sqlstate(res)));
    } else if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        trace_span_set_attr_int(r->span, "db.response.returned_rows", PQntuples(res));
    }
    trace_span_end(r->span);
    r->span = NULL;
}

/* Callbacks run with the statement's parent as the one for what they queue. */
static void cb_parent_enter(const struct pg_req *r)
{
    t_has_cb_parent = r->has_parent;
    if (r->has_parent)
        t_cb_parent = r->parent;
}

static void cb_parent_leave(void) { t_has_cb_parent = false; }

/* libpq messages span lines ("...\n\tThis probably means..."); a log field
 * or a /readyz reason reads better on one: whitespace runs become one space. */
static void copy_message(char *dst, size_t n, const char *msg)
{
    if (!msg || !*msg)
        msg = "unknown libpq error";
    size_t len = 0;
    bool is_space = true; /* drops leading whitespace */
    for (; *msg && len + 1 < n; msg++) {
        bool sp = *msg == ' ' || *msg == '\n' || *msg == '\t' || *msg == '\r';
        if (!sp)
            dst[len++] = *msg;
        else if (!is_space)
            dst[len++] = ' ';
        is_space = sp;
    }
    while (len && dst[len - 1] == ' ')
        len--;
    if (n)
        dst[len] = '\0';
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

const char *pg_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* ---- connection state and the gauges ----------------------------------- */

static struct metrics_gauge *conn_gauge(const struct pg_conn *c)
{
    switch (c->state) {
    case CONN_CONNECTING: return pgm.connecting;
    case CONN_BUSY: return pgm.busy;
    case CONN_IDLE: return c->tx ? pgm.busy : pgm.idle;
    default: return NULL;
    }
}

/* Every change of state or of the holding transaction goes through here, so
 * the gauges (summed over all pools of the process) stay exact. */
static void conn_set(struct pg_conn *c, enum conn_state state, struct pg_tx *tx)
{
    metrics_gauge_add(conn_gauge(c), -1);
    c->state = state;
    c->tx = tx;
    metrics_gauge_add(conn_gauge(c), 1);
}

static void conn_unwatch(struct pg_conn *c)
{
    if (c->is_watched) {
        loop_io_close(&c->io);
        c->is_watched = false;
    }
}

static void conn_watch(struct pg_conn *c, unsigned events)
{
    if (!c->is_watched) {
        loop_io_init(c->pool->loop, &c->io, PQsocket(c->pg), conn_io_cb, c);
        c->is_watched = true;
    }
    loop_io_set(&c->io, events);
}

/* ---- requests ----------------------------------------------------------- */

static struct pg_req *req_new(struct pg_pool *p, enum req_kind kind, const char *sql, int nparams,
                              const char *const *params)
{
    if (nparams < 0 || nparams > PG_MAX_PARAMS || (nparams > 0 && !params))
        return NULL;
    size_t sqllen = strlen(sql) + 1;
    size_t size = sizeof(struct pg_req) + (size_t)nparams * sizeof(char *) + sqllen;
    for (int i = 0; i < nparams; i++)
        if (params[i])
            size += strlen(params[i]) + 1;
    struct pg_req *r = calloc(1, size);
    if (!r)
        return NULL;
    r->pool = p;
    r->kind = kind;
    r->nparams = nparams;
    r->params = (const char **)(r + 1);
    char *s = (char *)(r->params + nparams);
    memcpy(s, sql, sqllen);
    r->sql = s;
    s += sqllen;
    for (int i = 0; i < nparams; i++) {
        if (!params[i]) {
            r->params[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        memcpy(s, params[i], n);
        r->params[i] = s;
        s += n;
    }
    loop_timer_init(p->loop, &r->timer, req_timer_cb, r);
    return r;
}

static void req_free(struct pg_req *r)
{
    loop_timer_stop(&r->timer);
    if (r->span) { /* never answered: the pool closed, or a rollback dropped it */
        trace_span_set_status(r->span, TRACE_STATUS_ERROR, STR_LIT("cancelled"));
        trace_span_end(r->span);
        r->span = NULL;
    }
    if (r->kind == REQ_BEGIN)
        free(r->tx); /* not handed out */
    free(r);
}

static void count_error(int err)
{
    if (err == -ETIMEDOUT)
        metrics_counter_add(pgm.timeout, 1);
    else if (err == -EBUSY)
        metrics_counter_add(pgm.rejected, 1);
    else
        metrics_counter_add(pgm.conn_error, 1);
}

/* Delivers err to r's callback and frees r. Only from loop callbacks. */
static void req_finish_error(struct pg_req *r, int err)
{
    count_error(err);
    req_span_end(r, err, NULL);
    cb_parent_enter(r);
    switch (r->kind) {
    case REQ_QUERY:
    case REQ_TX_QUERY:
        if (!r->is_suppressed)
            r->cb.result(err, NULL, r->arg);
        break;
    case REQ_BEGIN:
        r->cb.tx(err, NULL, r->arg);
        break;
    case REQ_COMMIT:
        r->cb.commit(err, r->arg);
        break;
    case REQ_ROLLBACK:
        break;
    }
    cb_parent_leave();
    req_free(r);
}

/* Queues err for r's callback on a 0 ms timer: safe from anywhere. */
static void req_fail_later(struct pg_req *r, int err)
{
    struct pg_pool *p = r->pool;
    r->is_failing = true;
    r->err = err;
    r->conn = NULL;
    list_push(&p->failing, r);
    /* Cannot fail: every request's timer is armed from the moment it is
     * queued (a re-arm needs no room in the heap), and pool_submit arms it
     * before calling here. */
    loop_timer_start(&r->timer, 0);
}

static void tx_free(struct pg_tx *tx)
{
    struct pg_pool *p = tx->pool;
    if (tx->is_listed) {
        if (tx->prev)
            tx->prev->next = tx->next;
        else
            p->txs = tx->next;
        if (tx->next)
            tx->next->prev = tx->prev;
    }
    free(tx);
}

/* ---- pool down / up ----------------------------------------------------- */

static void pool_check_down(struct pg_pool *p)
{
    if (p->nup > 0 || p->is_down)
        return;
    for (unsigned i = 0; i < p->size; i++)
        if (!p->conns[i].has_failed)
            return;
    p->is_down = true;
    log_error("postgres pool down", LOG_STR("error", p->last_error),
              LOG_UINT("queued_failed", p->npending));
    struct pg_req *r;
    while ((r = list_pop(&p->queue))) {
        p->npending--;
        req_fail_later(r, -ECONNREFUSED);
    }
}

/* ---- connecting ----------------------------------------------------------- */

static void conn_connected(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_break(c, -ECONNREFUSED, PQerrorMessage(c->pg), true);
        return;
    }
    loop_timer_stop(&c->timer);
    conn_set(c, CONN_IDLE, NULL);
    p->nup++;
    c->has_failed = false;
    c->backoff_ms = PG_BACKOFF_MIN_MS;
    if (c->fail_streak > 0)
        log_info("postgres connection restored", LOG_UINT("conn", c->idx),
                 LOG_UINT("failures", c->fail_streak));
    c->fail_streak = 0;
    if (p->is_down) {
        p->is_down = false;
        log_info("postgres pool up");
    }
    conn_watch(c, LOOP_READ); /* notices the server closing an idle connection */
    dispatch(p);
}

static void conn_connect_step(struct pg_conn *c)
{
    /* libpq may swap its socket while connecting (next address, SSL or GSS
     * fallback), possibly under the same fd number: re-register around every
     * step (a handful per connection, none per query). */
    conn_unwatch(c);
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_watch(c, LOOP_READ);
        break;
    case PGRES_POLLING_WRITING:
        conn_watch(c, LOOP_WRITE);
        break;
    case PGRES_POLLING_OK:
        conn_connected(c);
        break;
    default:
        conn_break(c, -ECONNREFUSED, PQerrorMessage(c->pg), true);
        break;
    }
}

/* Server notices and errors that arrive outside a query (the FATAL a
 * shutting-down server sends to idle connections) go to our log, not to
 * libpq's default of stderr. */
static void conn_notice_cb(void *arg, const PGresult *res)
{
    struct pg_conn *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    bool is_serious = sev && (!strcmp(sev, "WARNING") || !strcmp(sev, "FATAL") ||
                              !strcmp(sev, "PANIC"));
    enum log_level level = is_serious ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG;
    if (!log_enabled(level))
        return;
    char msg[256];
    copy_message(msg, sizeof msg, PQresultErrorMessage(res));
    log_at(level, "postgres notice", LOG_UINT("conn", c->idx), LOG_STR("message", msg));
}

static void conn_start(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    conn_set(c, CONN_CONNECTING, NULL);
    c->pg = PQconnectStart(p->conninfo);
    if (!c->pg) {
        conn_break(c, -ENOMEM, "PQconnectStart: out of memory", true);
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_break(c, -ECONNREFUSED, PQerrorMessage(c->pg), true);
        return;
    }
    PQsetNoticeReceiver(c->pg, conn_notice_cb, c);
    loop_timer_start(&c->timer, p->connect_timeout_ms);
    /* libpq's rule: behave as if PQconnectPoll had answered WRITING. */
    conn_watch(c, LOOP_WRITE);
}

static void conn_timer_cb(struct loop_timer *t)
{
    struct pg_conn *c = t->data;
    if (c->state == CONN_CONNECTING)
        conn_break(c, -ETIMEDOUT, "connection attempt timed out", true);
    else if (c->state == CONN_DOWN)
        conn_start(c);
}

/* Closes c, fails what ran or waited on it, and schedules a reconnect: with
 * backoff after a server-side failure, at once after a deliberate close (a
 * query timeout), when the server is presumably fine. */
static void conn_break(struct pg_conn *c, int err, const char *why, bool is_server_failure)
{
    struct pg_pool *p = c->pool;
    bool was_up = c->state == CONN_IDLE || c->state == CONN_BUSY;
    char msg[256];
    copy_message(msg, sizeof msg, why);

    conn_unwatch(c);
    PQfinish(c->pg);
    c->pg = NULL;
    PQclear(c->result);
    c->result = NULL;
    if (was_up)
        p->nup--;

    struct pg_req *r = c->req;
    c->req = NULL;
    if (r) {
        if (r->kind != REQ_BEGIN)
            r->tx = NULL;
        req_fail_later(r, err);
    }
    struct pg_tx *tx = c->tx;
    conn_set(c, CONN_DOWN, NULL);
    if (tx) {
        tx->conn = NULL;
        while ((r = list_pop(&tx->queue))) {
            r->tx = NULL;
            req_fail_later(r, -ECONNRESET);
        }
        if (tx->is_ended)
            tx_free(tx);
    }

    uint32_t delay = 0;
    if (is_server_failure) {
        snprintf(p->last_error, sizeof p->last_error, "%s", msg);
        /* Only a failed attempt counts towards "pool down": after losing a
         * connection the pool first tries again (100 ms), so that a server
         * restart does not fail the requests queued meanwhile. */
        if (!was_up)
            c->has_failed = true;
        if (c->fail_streak++ == 0)
            log_warn(was_up ? "postgres connection lost" : "postgres connection failed",
                     LOG_UINT("conn", c->idx), LOG_STR("error", msg),
                     LOG_UINT("retry_ms", c->backoff_ms));
        else
            log_debug("postgres connection failed", LOG_UINT("conn", c->idx),
                      LOG_STR("error", msg), LOG_UINT("retry_ms", c->backoff_ms));
        delay = c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : c->backoff_ms * 2;
    } else {
        log_warn("postgres connection closed", LOG_UINT("conn", c->idx), LOG_STR("reason", msg));
    }
    if (loop_timer_start(&c->timer, delay) != 0)
        log_error("postgres: cannot arm the reconnect timer; connection stays down",
                  LOG_UINT("conn", c->idx));
    pool_check_down(p);
}

/* ---- running requests ------------------------------------------------------- */

static void conn_send(struct pg_conn *c, struct pg_req *r)
{
    c->req = r;
    r->conn = c;
    conn_set(c, CONN_BUSY, c->tx);
    clock_gettime(CLOCK_MONOTONIC, &r->sent);
    if (trace_span_is_recording(r->span)) {
        trace_span_set_attr_str(r->span, "db.namespace", str_from_cstr(PQdb(c->pg)));
        trace_span_set_attr_str(r->span, "server.address", str_from_cstr(PQhost(c->pg)));
    }
    if (!PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, r->params, NULL, NULL, 0)) {
        conn_break(c, -ECONNRESET, PQerrorMessage(c->pg), true);
        return;
    }
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_break(c, -ECONNRESET, PQerrorMessage(c->pg), true);
        return;
    }
    conn_watch(c, rc == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
}

/* Hands idle connections (not held by a transaction) the queued requests. */
static void dispatch(struct pg_pool *p)
{
    for (unsigned i = 0; i < p->size && p->queue.head; i++) {
        struct pg_conn *c = &p->conns[i];
        if (c->state != CONN_IDLE || c->tx || c->req)
            continue;
        struct pg_req *r = list_pop(&p->queue);
        p->npending--;
        conn_send(c, r);
    }
}

/* The transaction holding c sends its next queued statement, if any. */
static void tx_continue(struct pg_conn *c)
{
    if (c->state != CONN_IDLE || !c->tx || c->req)
        return;
    struct pg_req *r = list_pop(&c->tx->queue);
    if (r)
        conn_send(c, r);
}

static int commit_error(const PGresult *res)
{
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
        return strcmp(PQcmdStatus((PGresult *)res), "COMMIT") == 0 ? 0 : -ECANCELED;
    const char *state = pg_sqlstate(res);
    if (!strcmp(state, "40001") || !strcmp(state, "40P01"))
        return -EAGAIN;
    return -EIO;
}

/* r on c has its result: account, update state, then call back (last). */
static void conn_complete(struct pg_conn *c, PGresult *res)
{
    struct pg_pool *p = c->pool;
    struct pg_req *r = c->req;
    ExecStatusType st = PQresultStatus(res);
    bool is_error = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK;
    c->req = NULL;
    loop_timer_stop(&r->timer);
    metrics_histogram_observe(pgm.duration, seconds_since(&r->sent));
    metrics_counter_add(is_error ? pgm.sql_error : pgm.ok, 1);
    req_span_end(r, 0, res);
    cb_parent_enter(r);

    switch (r->kind) {
    case REQ_QUERY:
        conn_set(c, CONN_IDLE, NULL);
        /* A query that leaves a transaction open (a bare BEGIN through
         * pg_query) would leak it into the next caller's queries: close
         * (before the callback, which may queue work on this connection). */
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            conn_break(c, -ECONNRESET, "pg_query left a transaction open", false);
        r->cb.result(0, res, r->arg);
        dispatch(p);
        break;
    case REQ_BEGIN: {
        struct pg_tx *tx = r->tx;
        r->tx = NULL;
        if (is_error) {
            free(tx);
            conn_set(c, CONN_IDLE, NULL);
            log_warn("postgres BEGIN failed", LOG_STR("error", PQresultErrorMessage(res)));
            r->cb.tx(-EIO, NULL, r->arg);
            dispatch(p);
            break;
        }
        tx->conn = c;
        tx->is_listed = true;
        tx->parent = r->parent;
        tx->has_parent = r->has_parent;
        tx->next = p->txs;
        if (p->txs)
            p->txs->prev = tx;
        p->txs = tx;
        conn_set(c, CONN_IDLE, tx);
        r->cb.tx(0, tx, r->arg);
        tx_continue(c);
        break;
    }
    case REQ_TX_QUERY:
        conn_set(c, CONN_IDLE, c->tx);
        if (!r->is_suppressed)
            r->cb.result(0, res, r->arg);
        tx_continue(c);
        break;
    case REQ_COMMIT: {
        int err = commit_error(res);
        struct pg_tx *tx = c->tx;
        conn_set(c, CONN_IDLE, NULL);
        if (tx)
            tx_free(tx);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            conn_break(c, -ECONNRESET, "COMMIT left a transaction open", false);
        r->cb.commit(err, r->arg);
        dispatch(p);
        break;
    }
    case REQ_ROLLBACK: {
        struct pg_tx *tx = c->tx;
        conn_set(c, CONN_IDLE, NULL);
        if (tx)
            tx_free(tx);
        if (is_error || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            conn_break(c, -ECONNRESET, "ROLLBACK failed", false);
        else
            dispatch(p);
        break;
    }
    }
    cb_parent_leave();
    free(r);
}

/* Reads the results libpq has complete. A query gives one result, then NULL
 * once ReadyForQuery is in (the connection is free again); only then is the
 * request completed. The result may arrive an event before that NULL, so it
 * is kept on the connection in between. */
static void conn_collect(struct pg_conn *c)
{
    while (c->req && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            PGresult *last = c->result;
            c->result = NULL;
            if (!last) {
                conn_break(c, -ECONNRESET, "no result from server", true);
                return;
            }
            conn_complete(c, last);
            PQclear(last);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_break(c, -EPROTO, "COPY is not supported through pg_query", false);
            return;
        }
        PQclear(c->result);
        c->result = res;
    }
}

static void conn_io_cb(struct loop_io *io, unsigned events)
{
    struct pg_conn *c = io->data;
    if (c->state == CONN_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (c->state != CONN_IDLE && c->state != CONN_BUSY)
        return;
    if ((events & (LOOP_READ | LOOP_ERROR)) && !PQconsumeInput(c->pg)) {
        conn_break(c, -ECONNRESET, PQerrorMessage(c->pg), true);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)))
        PQfreemem(n);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_break(c, -ECONNRESET, PQerrorMessage(c->pg), true);
        return;
    }
    if (c->state != CONN_BUSY)
        return;
    /* libpq's rule for non-blocking sends: flush again on either readiness. */
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_break(c, -ECONNRESET, PQerrorMessage(c->pg), true);
        return;
    }
    conn_watch(c, rc == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
    conn_collect(c);
}

static void req_timer_cb(struct loop_timer *t)
{
    struct pg_req *r = t->data;
    struct pg_pool *p = r->pool;
    if (r->is_failing) {
        list_remove(&p->failing, r);
        req_finish_error(r, r->err);
        return;
    }
    if (r->conn) { /* running: the connection is in an unknown state */
        conn_break(r->conn, -ETIMEDOUT, "query timeout", false);
        return;
    }
    if (r->kind != REQ_QUERY && r->kind != REQ_BEGIN) {
        /* queued behind a statement in a transaction */
        if (r->tx && r->tx->conn)
            conn_break(r->tx->conn, -ETIMEDOUT, "query timeout", false);
        return;
    }
    list_remove(&p->queue, r);
    p->npending--;
    req_finish_error(r, -ETIMEDOUT);
}

/* ---- public API ---------------------------------------------------------------- */

struct pg_pool *pg_pool_new(struct loop *l, const struct pg_pool_config *cfg)
{
    if (!l || !cfg || !cfg->conninfo) {
        errno = EINVAL;
        return NULL;
    }
    pthread_once(&pgm_once, pgm_register);
    struct pg_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = l;
    p->size = cfg->size ? cfg->size : PG_DEFAULT_SIZE;
    p->max_pending = cfg->max_pending ? cfg->max_pending : PG_DEFAULT_MAX_PENDING;
    p->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
                                                    : PG_DEFAULT_CONNECT_TIMEOUT_MS;
    p->query_timeout_ms = cfg->query_timeout_ms ? cfg->query_timeout_ms
                                                : PG_DEFAULT_QUERY_TIMEOUT_MS;
    snprintf(p->last_error, sizeof p->last_error, "connecting");
    p->conninfo = strdup(cfg->conninfo);
    p->conns = calloc(p->size, sizeof *p->conns);
    if (!p->conninfo || !p->conns) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    /* Spans go to the same OTLP endpoint as the service's own, from the
     * same environment, through a tracer of the pool's own (one per loop,
     * as the pool). No endpoint: no tracer, no cost. */
    struct trace_config tc;
    trace_config_init(&tc);
    trace_config_from_env(&tc, NULL);
    tc.scope_name = "strata.pg";
    if ((tc.endpoint && *tc.endpoint) || (tc.traces_endpoint && *tc.traces_endpoint)) {
        p->tracer = trace_tracer_new(l, &tc);
        if (p->tracer && !trace_tracer_is_enabled(p->tracer)) {
            trace_tracer_free(p->tracer);
            p->tracer = NULL;
        }
    }
    for (unsigned i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        c->pool = p;
        c->idx = i;
        c->state = CONN_DOWN;
        c->backoff_ms = PG_BACKOFF_MIN_MS;
        loop_timer_init(l, &c->timer, conn_timer_cb, c);
        conn_start(c);
    }
    return p;
}

void pg_pool_free(struct pg_pool *p)
{
    if (!p)
        return;
    struct pg_req *r;
    for (unsigned i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        loop_timer_stop(&c->timer);
        conn_unwatch(c);
        if (c->pg)
            PQfinish(c->pg);
        c->pg = NULL;
        PQclear(c->result);
        c->result = NULL;
        if (c->req)
            req_free(c->req);
        c->req = NULL;
        struct pg_tx *tx = c->tx;
        conn_set(c, CONN_DOWN, NULL);
        if (tx) /* every handed-out tx is listed: freed below */
            while ((r = list_pop(&tx->queue)))
                req_free(r);
    }
    while (p->txs) {
        struct pg_tx *tx = p->txs;
        while ((r = list_pop(&tx->queue)))
            req_free(r);
        tx_free(tx);
    }
    while ((r = list_pop(&p->queue)))
        req_free(r);
    while ((r = list_pop(&p->failing)))
        req_free(r);
    /* Spans not yet exported are lost (at most OTEL_BSP_SCHEDULE_DELAY's
     * worth): the pool cannot wait for a flush here. */
    trace_tracer_free(p->tracer);
    free(p->conns);
    free(p->conninfo);
    free(p);
}

bool pg_pool_is_ready(const struct pg_pool *p, char *reason, size_t n)
{
    if (p->nup > 0)
        return true;
    if (reason && n)
        snprintf(reason, n, "postgres: no connection up: %s", p->last_error);
    return false;
}

void pg_pool_stats(const struct pg_pool *p, struct pg_pool_stats *out)
{
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < p->size; i++) {
        const struct pg_conn *c = &p->conns[i];
        switch (c->state) {
        case CONN_DOWN: out->down++; break;
        case CONN_CONNECTING: out->connecting++; break;
        case CONN_IDLE:
            if (c->tx)
                out->busy++;
            else
                out->idle++;
            break;
        case CONN_BUSY: out->busy++; break;
        }
    }
    out->pending = p->npending;
}

/* Queues r on the pool (query or BEGIN). */
static int pool_submit(struct pg_pool *p, struct pg_req *r)
{
    if (p->npending >= p->max_pending) {
        req_free(r);
        metrics_counter_add(pgm.rejected, 1);
        return -EBUSY;
    }
    if (loop_timer_start(&r->timer, p->query_timeout_ms) != 0) {
        req_free(r);
        return -ENOMEM;
    }
    if (p->is_down) {
        req_fail_later(r, -ECONNREFUSED);
        return 0;
    }
    list_push(&p->queue, r);
    p->npending++;
    dispatch(p);
    return 0;
}

int pg_query(struct pg_pool *p, const char *sql, int nparams, const char *const *params,
             pg_result_cb cb, void *arg)
{
    if (!p || !sql || !cb || nparams < 0 || nparams > PG_MAX_PARAMS)
        return -EINVAL;
    struct pg_req *r = req_new(p, REQ_QUERY, sql, nparams, params);
    if (!r)
        return nparams > 0 && !params ? -EINVAL : -ENOMEM;
    r->cb.result = cb;
    r->arg = arg;
    req_set_parent(r, NULL);
    req_span_start(r);
    return pool_submit(p, r);
}

int pg_tx_begin(struct pg_pool *p, pg_tx_cb cb, void *arg)
{
    if (!p || !cb)
        return -EINVAL;
    struct pg_req *r = req_new(p, REQ_BEGIN, "BEGIN", 0, NULL);
    if (!r)
        return -ENOMEM;
    r->tx = calloc(1, sizeof *r->tx);
    if (!r->tx) {
        req_free(r);
        return -ENOMEM;
    }
    r->tx->pool = p;
    r->cb.tx = cb;
    r->arg = arg;
    req_set_parent(r, NULL);
    req_span_start(r);
    return pool_submit(p, r);
}

/* Queues r on the transaction; sends it now if the connection is free. */
static int tx_submit(struct pg_tx *tx, struct pg_req *r)
{
    if (loop_timer_start(&r->timer, tx->pool->query_timeout_ms) != 0)
        return -ENOMEM;
    r->tx = tx;
    if (!r->span) {
        req_set_parent(r, tx);
        req_span_start(r);
    }
    list_push(&tx->queue, r);
    tx_continue(tx->conn);
    return 0;
}

int pg_tx_query(struct pg_tx *tx, const char *sql, int nparams, const char *const *params,
                pg_result_cb cb, void *arg)
{
    if (!tx || tx->is_ended || !sql || !cb || nparams < 0 || nparams > PG_MAX_PARAMS)
        return -EINVAL;
    if (!tx->conn)
        return -ECONNRESET;
    struct pg_req *r = req_new(tx->pool, REQ_TX_QUERY, sql, nparams, params);
    if (!r)
        return nparams > 0 && !params ? -EINVAL : -ENOMEM;
    r->cb.result = cb;
    r->arg = arg;
    if (tx_submit(tx, r) != 0) {
        req_free(r);
        return -ENOMEM;
    }
    return 0;
}

int pg_tx_commit(struct pg_tx *tx, pg_commit_cb cb, void *arg)
{
    if (!tx || tx->is_ended || !cb)
        return -EINVAL;
    tx->is_ended = true;
    if (!tx->conn) {
        tx_free(tx);
        return -ECONNRESET;
    }
    struct pg_req *r = req_new(tx->pool, REQ_COMMIT, "COMMIT", 0, NULL);
    if (r) {
        r->cb.commit = cb;
        r->arg = arg;
        if (tx_submit(tx, r) == 0)
            return 0;
        req_free(r);
    }
    /* Without memory for COMMIT, close the connection: the server rolls the
     * transaction back, and conn_break frees the ended tx. */
    conn_break(tx->conn, -ENOMEM, "out of memory ending a transaction", false);
    return -ENOMEM;
}

void pg_tx_rollback(struct pg_tx *tx)
{
    if (!tx || tx->is_ended)
        return;
    tx->is_ended = true;
    if (!tx->conn) {
        tx_free(tx);
        return;
    }
    struct pg_req *r;
    while ((r = list_pop(&tx->queue)))
        req_free(r);
    if (tx->conn->req)
        tx->conn->req->is_suppressed = true;
    r = req_new(tx->pool, REQ_ROLLBACK, "ROLLBACK", 0, NULL);
    if (r && tx_submit(tx, r) == 0)
        return;
    if (r)
        req_free(r);
    /* Closing the connection rolls back too; conn_break frees the ended tx. */
    conn_break(tx->conn, -ENOMEM, "out of memory ending a transaction", false);
}
