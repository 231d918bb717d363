/* strata-order-svc — orders as JSON documents in PostgreSQL, idempotent
 * creation, events through a transactional outbox to NATS JetStream.
 *
 * Environment (besides the framework's: LISTEN_ADDR/PORT, WORKERS,
 * LOG_LEVEL, OTEL_*, MAX_BODY_BYTES, SHUTDOWN_*):
 *   DATABASE_URL      PostgreSQL (required)
 *   NATS_URL          NATS with JetStream, for the outbox relay (required)
 *   USER_SERVICE_URL  user-svc's base URL (required)
 *   JWKS_URL, JWT_ISSUER, JWT_AUDIENCE, JWT_LEEWAY_S   (service_auth.h)
 *   DB_POOL_SIZE      connections per worker (default 4)
 *
 * Readiness: the database pool of the worker that answers has a connection
 * and the JWKS has been fetched. NATS is deliberately not a readiness
 * condition: while it is down orders are still accepted and their events
 * wait in the outbox; taking the API out of rotation would turn a degraded
 * event path into an outage. (strata_outbox_publish_failures_total says it.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_client.h"
#include "core/log.h"
#include "order.h"

static __thread struct order_worker *current_worker;

struct order_worker *order_worker_current(void) { return current_worker; }

static const char *require_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "order-svc: %s is required\n", name);
        return NULL;
    }
    return v;
}

static void worker_start(struct loop *l, int index, void *arg)
{
    struct order_app *app = arg;
    struct order_worker *w = &app->workers[index];
    w->app = app;
    w->index = index;
    w->loop = l;
    current_worker = w;
    unsigned pool_size = 4;
    const char *ps = getenv("DB_POOL_SIZE");
    if (ps && *ps)
        pool_size = (unsigned)strtoul(ps, NULL, 10);
    w->db = pg_pool_new(l, &(struct pg_pool_config){ .conninfo = app->database_url, .size = pool_size });
    w->client = http1_client_new(l, &(struct http1_client_config){ 0 });
    if (w->client)
        w->auth = service_auth_new(l, w->client);
    if (!w->db || !w->client || !w->auth) {
        log_error("worker start failed (database pool, HTTP client or JWKS configuration)", LOG_INT("worker", index));
        service_shutdown(app->svc);
        return;
    }
    if (index == 0) {
        struct outbox_relay *r = outbox_relay_new(l, w->db, app->nats_url);
        if (!r) {
            service_shutdown(app->svc);
            return;
        }
        __atomic_store_n(&app->relay, r, __ATOMIC_RELEASE);
    }
}

static void worker_stop(struct loop *l, int index, void *arg)
{
    struct order_app *app = arg;
    struct order_worker *w = &app->workers[index];
    (void)l;
    if (index == 0)
        outbox_relay_stop(__atomic_load_n(&app->relay, __ATOMIC_ACQUIRE));
    service_auth_free(w->auth);
    w->auth = NULL;
    pg_pool_free(w->db);
    w->db = NULL;
    http1_client_free(w->client);
    w->client = NULL;
}

static int check_database(void *arg, char *reason, size_t n)
{
    (void)arg;
    struct order_worker *w = order_worker_current();
    if (!w || !w->db) {
        snprintf(reason, n, "no database pool on this worker");
        return -1;
    }
    return pg_pool_is_ready(w->db, reason, n) ? 0 : -1;
}

static int check_jwks(void *arg, char *reason, size_t n)
{
    (void)arg;
    struct order_worker *w = order_worker_current();
    if (!w || !w->auth) {
        snprintf(reason, n, "no token verifier on this worker");
        return -1;
    }
    return service_auth_is_ready(w->auth, reason, n) ? 0 : -1;
}

static void register_metrics(struct order_app *app)
{
    struct metrics_registry *reg = metrics_default();
    struct metrics_family *f;
    if (metrics_register_counter(reg, "strata_orders_created_total", "Orders created.", NULL, &f) == 0)
        app->m_created = metrics_counter_with(f);
    if (metrics_register_counter(reg, "strata_orders_idempotent_replays_total",
                                 "POST /v1/orders answered from an earlier request with the same key.", NULL,
                                 &f) == 0)
        app->m_replayed = metrics_counter_with(f);
    if (metrics_register_counter(reg, "strata_orders_cancelled_total", "Orders cancelled.", NULL, &f) == 0)
        app->m_cancelled = metrics_counter_with(f);
    if (metrics_register_counter(reg, "strata_orders_user_rejected_total",
                                 "Orders refused because the user is unknown or not active.", NULL, &f) == 0)
        app->m_rejected_user = metrics_counter_with(f);
}

int main(void)
{
    static struct order_app app;
    struct service_config cfg = { .name = "order", .listen = "127.0.0.1:8083" };
    app.svc = service_new(&cfg);
    if (!app.svc)
        return 2;
    log_init(service_name(app.svc));
    app.database_url = require_env("DATABASE_URL");
    app.nats_url = require_env("NATS_URL");
    app.user_url = require_env("USER_SERVICE_URL");
    if (!app.database_url || !app.nats_url || !app.user_url)
        return 2;
    struct http1_url u;
    if (http1_url_parse(str_from_cstr(app.user_url), &u) < 0 || u.is_tls) {
        fprintf(stderr, "order-svc: USER_SERVICE_URL must be an http:// URL\n");
        return 2;
    }
    const char *ps = getenv("DB_POOL_SIZE");
    if (ps && *ps) {
        char *end;
        unsigned long v = strtoul(ps, &end, 10);
        if (*end || v < 1 || v > 64) {
            fprintf(stderr, "order-svc: DB_POOL_SIZE must be 1..64\n");
            return 2;
        }
    }
    char err[512];
    if (pg_migrate(app.database_url, "order-svc", order_migrations, order_migrations_count, err, sizeof err) < 0) {
        log_error("migrations failed", LOG_STR("error", err));
        return 1;
    }
    app.nworkers = service_workers(app.svc);
    app.workers = calloc((size_t)app.nworkers, sizeof *app.workers);
    if (!app.workers)
        return 1;
    register_metrics(&app);
    orders_register_routes(&app);
    service_add_check(app.svc, "database", check_database, &app);
    service_add_check(app.svc, "jwks", check_jwks, &app);
    service_on_worker(app.svc, worker_start, worker_stop, &app);
    int rc = service_run(app.svc);
    outbox_relay_free(app.relay);
    service_free(app.svc);
    free(app.workers);
    return rc < 0 ? 1 : 0;
}
