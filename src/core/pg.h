/* pg.h — PostgreSQL for services: a connection pool on libpq's non-blocking
 * API inside the event loop, transactions, and start-up migrations.
 *
 *   struct pg_pool *db = pg_pool_new(loop, &(struct pg_pool_config){
 *       .conninfo = getenv("DATABASE_URL") });
 *   const char *params[] = { email };
 *   pg_query(db, "SELECT id FROM users WHERE email = $1", 1, params, on_user, req);
 *
 * One pool per loop (per worker thread); a pool and everything it hands out
 * is used from its loop's thread only. Nothing here blocks that thread
 * (PQconnectStart/PQconnectPoll, PQsendQueryParams, PQflush on write
 * readiness, PQconsumeInput/PQisBusy/PQgetResult on read readiness), except
 * pg_migrate(), which is for start-up, before serving.
 *
 * Every query is parameterised (PQsendQueryParams, text parameters, text
 * results): parameters are data, never SQL. sql and params are copied, so
 * the caller's strings need only live until the call returns.
 *
 * One caveat libpq imposes: it resolves host names with a blocking
 * getaddrinfo() inside PQconnectPoll. Give DATABASE_URL an IP address (or
 * hostaddr=) to keep connects fully non-blocking; "localhost" and names in
 * /etc/hosts resolve without a network round trip.
 *
 * Callbacks are never called from inside the call that queued them; they run
 * later from the loop. A callback may queue more work on the pool or the
 * transaction, but must not call pg_pool_free() (stop the loop, free after).
 *
 * Errors given to callbacks (err < 0, res NULL) are connection-level:
 *   -ETIMEDOUT      the query (including its time queued) took longer than
 *                   its timeout; the connection running it is closed and a
 *                   new one opened (see query_timeout_ms);
 *   -ECONNRESET     the connection broke while the query ran (or a
 *                   transaction's connection broke earlier);
 *   -ECONNREFUSED   the pool is down: no connection is up and the last
 *                   attempt of every connection failed; queries fail fast
 *                   rather than queue until the server returns;
 *   -EPROTO         the statement started COPY, which the pool does not
 *                   support (the connection is closed);
 *   -ENOMEM.
 * SQL errors are not connection errors: they arrive as err 0 with
 * PQresultStatus(res) == PGRES_FATAL_ERROR; pg_sqlstate(res) gives the code
 * ("23505" unique_violation, "40001" serialization_failure, ...).
 * Functions that return int return 0 or a negative errno; when they return
 * an error the callback is not called. */
#ifndef STRATA_PG_H
#define STRATA_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct pg_pool;
struct pg_tx;

struct pg_pool_config {
    const char *conninfo;        /* DATABASE_URL: URI or key=value; copied */
    unsigned size;               /* connections; 0 → 4 */
    uint32_t connect_timeout_ms; /* per connection attempt; 0 → 5000 */
    /* Per query, counted from the pg_query call (time queued included); 0 →
     * 5000. On expiry the query's connection is closed and a new one is
     * opened at once; the callback gets -ETIMEDOUT. Why not cancel: libpq 15's
     * PQcancel() blocks (it connects to the server), and the secret key a
     * non-blocking cancel request needs is not exposed before libpq 17. The
     * server notices the closed socket at its next read or write; a
     * statement that neither reads nor writes (pg_sleep, a long sort) runs on
     * until it ends unless statement_timeout is set server-side, which a
     * deployment should do (ALTER ROLE ... SET statement_timeout). */
    uint32_t query_timeout_ms;
    /* Requests (queries and transaction begins) queued while every
     * connection is busy; 0 → 1024. Past it pg_query/pg_tx_begin return
     * -EBUSY (and strata_pg_queries_total{result="rejected"} counts it). */
    unsigned max_pending;
};

/* Creates a pool on loop l and starts connecting in the background: the
 * call returns at once. Broken connections are reopened with backoff
 * (100 ms doubling to 5 s, reset on success); loss and restoration are
 * logged. NULL with errno set on bad config (EINVAL: no conninfo) or
 * allocation failure. Registers the strata_pg_* metrics in
 * metrics_default() on first use in the process (once, whatever the number
 * of pools):
 *   strata_pg_pool_connections{state="idle|busy|connecting"}  gauge, all pools
 *   strata_pg_queries_total{result="ok|sql_error|timeout|connection_error|rejected"}
 *   strata_pg_query_duration_seconds                          histogram
 * (a transaction's BEGIN, queries and COMMIT each count as one query).
 * Traces: when the OpenTelemetry environment names an OTLP endpoint
 * (OTEL_EXPORTER_OTLP_ENDPOINT..., read here with trace_config_from_env),
 * the pool exports one client span per statement through a tracer of its
 * own on l: named by the SQL operation ("SELECT", "BEGIN"), with
 * db.system=postgresql, db.operation.name, db.statement (literals replaced
 * by '?'), db.namespace, server.address, and an error status on failure.
 * Its parent is the thread's current span when pg_query/pg_tx_begin is
 * called (inside a pool callback: the parent of the statement whose result
 * is delivered); a transaction's statements share BEGIN's. No parent, no
 * span. */
struct pg_pool *pg_pool_new(struct loop *l, const struct pg_pool_config *cfg);

/* Closes every connection and frees the pool, queued requests and open
 * transactions; callbacks still pending are not called, and pg_tx handles
 * become invalid. Not from inside a pool callback. NULL is a no-op. */
void pg_pool_free(struct pg_pool *p);

/* True when at least one connection is up (for /readyz). When false and
 * reason is not NULL, writes why (the last connection error) into reason
 * (n bytes, NUL-terminated). */
bool pg_pool_is_ready(const struct pg_pool *p, char *reason, size_t n);

/* Connection counts of this pool, for tests and status pages. A connection
 * held by a transaction counts as busy; one waiting to reconnect as down. */
struct pg_pool_stats {
    unsigned idle, busy, connecting, down;
    unsigned pending; /* requests queued for a connection */
};
void pg_pool_stats(const struct pg_pool *p, struct pg_pool_stats *out);

/* res is owned by the pool and valid only during the callback (copy what you
 * keep). err < 0: connection-level failure, res NULL (see top). err 0: res
 * is the query's result: PGRES_TUPLES_OK, PGRES_COMMAND_OK or
 * PGRES_FATAL_ERROR. */
typedef void (*pg_result_cb)(int err, PGresult *res, void *arg);

/* Runs sql with nparams text parameters ($1..$n; params[i] NULL is SQL
 * NULL) on the next free connection. One statement per call (the extended
 * protocol refuses several). Returns 0 (cb will be called exactly once),
 * -EINVAL (NULL sql or cb, nparams < 0 or > 65535), -EBUSY (max_pending
 * reached), -ENOMEM. */
int pg_query(struct pg_pool *p, const char *sql, int nparams, const char *const *params,
             pg_result_cb cb, void *arg);

/* ---- transactions ---------------------------------------------------------
 *
 * A transaction holds one connection from BEGIN until COMMIT or ROLLBACK.
 * Queries on it run in the order queued, one at a time (several may be
 * queued). Every transaction must end with exactly one pg_tx_commit() or
 * pg_tx_rollback(); the handle is invalid after either call returns.
 * For another isolation level, make the first query
 * "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE". Each statement has the
 * pool's query timeout, counted from when it was queued; time spent between
 * statements (the caller doing other work) is not bounded here. */

typedef void (*pg_tx_cb)(int err, struct pg_tx *tx, void *arg);
typedef void (*pg_commit_cb)(int err, void *arg);

/* Takes a connection (queued like a query, same timeout and bound) and
 * sends BEGIN. cb(0, tx) once it is open; cb(err < 0, NULL) when it could
 * not be (-ETIMEDOUT, -ECONNRESET, -ECONNREFUSED, -EIO if BEGIN failed).
 * Returns 0, -EINVAL, -EBUSY or -ENOMEM. */
int pg_tx_begin(struct pg_pool *p, pg_tx_cb cb, void *arg);

/* As pg_query, inside the transaction. After an SQL error the transaction
 * is aborted (PostgreSQL refuses everything but ROLLBACK, "25P02"): roll it
 * back. Returns 0, -EINVAL, -ENOMEM, or -ECONNRESET when the transaction's
 * connection has already broken (nothing was queued; roll back). A query
 * timeout closes the connection: the transaction is lost (-ETIMEDOUT for
 * that query, -ECONNRESET for the ones queued after it). */
int pg_tx_query(struct pg_tx *tx, const char *sql, int nparams, const char *const *params,
                pg_result_cb cb, void *arg);

/* Sends COMMIT after the queries queued; ends the transaction. cb(err):
 *   0            committed;
 *   -EAGAIN      serialization failure or deadlock (40001, 40P01): retry
 *                the whole transaction;
 *   -ECANCELED   the transaction had failed earlier (an SQL error), so
 *                PostgreSQL rolled it back instead;
 *   -EIO         another SQL error at commit (a deferred constraint...);
 *   -ETIMEDOUT, -ECONNRESET: outcome unknown (the server may have
 *                committed before the connection went).
 * Returns 0 (cb will be called), or < 0 (-ECONNRESET: the connection had
 * broken, -ENOMEM): the transaction is over (rolled back) and cb is not
 * called. Either way tx is invalid afterwards, also inside the callbacks of
 * queries queued before the commit (they must not roll it back). */
int pg_tx_commit(struct pg_tx *tx, pg_commit_cb cb, void *arg);

/* Ends the transaction with ROLLBACK, fire and forget: queries queued on it
 * that have not started are dropped and one already running has its
 * callback suppressed; the connection returns to the pool once ROLLBACK
 * completes (or is closed and reopened if that fails). tx is invalid
 * afterwards. */
void pg_tx_rollback(struct pg_tx *tx);

/* The SQLSTATE of an error result ("23505"), "" when none (success, NULL). */
const char *pg_sqlstate(const PGresult *res);

/* ---- migrations (blocking: start-up only, never on a loop thread) --------- */

struct pg_migration {
    int version;     /* > 0, strictly increasing through the array */
    const char *name;
    const char *sql; /* may hold several statements; runs in one transaction,
                        so nothing that refuses one (CREATE INDEX CONCURRENTLY) */
};

/* Connects (blocking) to conninfo, takes pg_advisory_lock(hashtext(lock_name))
 * so replicas starting together apply migrations one at a time, creates
 * schema_migrations(version int primary key, name text not null,
 * applied_at timestamptz not null default now()) if missing, and applies
 * each migration of m[0..n) whose version is not recorded there, each in its
 * own transaction together with its schema_migrations row. Already applied
 * versions are skipped (re-running is a no-op). Stops at the first failure:
 * earlier migrations stay applied, the failed one leaves nothing behind.
 * Returns 0, or < 0 with a message in err (errsz bytes; may be NULL):
 *   -EINVAL   bad arguments (versions not increasing, NULL sql...);
 *   -ECONNREFUSED  could not connect (libpq's message);
 *   -EIO      a statement failed: "migration 3 (add_orders_index): ERROR: ..."
 *             with PostgreSQL's message, or the lock/bookkeeping failed. */
int pg_migrate(const char *conninfo, const char *lock_name, const struct pg_migration *m,
               size_t n, char *err, size_t errsz);

#endif
