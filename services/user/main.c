/* strata-user-svc: the identity store of the reference system.
 *
 * Environment (beyond the framework's PORT, LISTEN_ADDR, WORKERS, LOG_LEVEL,
 * OTEL_*):
 *   DATABASE_URL   required; migrations run at start under an advisory lock
 *   REDIS_URL      optional: cache-aside for user reads
 *   NATS_URL       optional: consume order events (stream ORDERS)
 *   JWKS_URL, JWT_ISSUER, JWT_AUDIENCE, JWT_LEEWAY_S: bearer JWTs (service_auth.h)
 *   HASH_THREADS   argon2id threads (default 2, 1..16)
 *   HASH_QUEUE     argon2id jobs waiting at most (default 64); past it → 503 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "core/http1_client.h"
#include "core/log.h"
#include "core/pg.h"
#include "core/redis.h"
#include "core/service_auth.h"
#include "core/str.h"
#include "events.h"
#include "hasher.h"
#include "store.h"

static __thread struct user_worker *tl_worker;
static __thread struct http1_client *tl_client;

struct user_worker *user_worker_current(void) { return tl_worker; }

static struct user_app app;

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int env_uint(const char *name, unsigned def, unsigned min, unsigned max, unsigned *out)
{
    const char *v = env_or_null(name);
    uint64_t n = def;
    if (v && (str_to_u64(str_from_cstr(v), &n) < 0 || n < min || n > max)) {
        fprintf(stderr, "user-svc: %s must be an integer from %u to %u (got \"%s\")\n", name, min, max, v);
        return -EINVAL;
    }
    *out = (unsigned)n;
    return 0;
}

static void worker_start(struct loop *l, int index, void *arg)
{
    struct user_app *a = arg;
    struct user_worker *w = &a->workers[index];
    w->loop = l;
    tl_worker = w;
    w->db = pg_pool_new(l, &(struct pg_pool_config){ .conninfo = a->database_url });
    if (!w->db)
        log_error("cannot create the database pool", LOG_ERRNO("error", errno));
    if (a->redis_url) {
        w->redis = redis_client_new(l, &(struct redis_config){ .url = a->redis_url });
        if (!w->redis)
            log_error("cannot create the Redis client; reads go to PostgreSQL");
    }
    tl_client = http1_client_new(l, &(struct http1_client_config){ 0 });
    w->auth = tl_client ? service_auth_new(l, tl_client) : NULL;
    if (!w->auth)
        log_error("cannot set up JWT verification (JWKS_URL?)");
    if (index == 0 && a->nats_url && w->db) {
        struct events *ev = events_new(l, w->db, a->nats_url);
        __atomic_store_n(&a->events, ev, __ATOMIC_RELEASE);
    }
}

static void worker_stop(struct loop *l, int index, void *arg)
{
    struct user_app *a = arg;
    struct user_worker *w = &a->workers[index];
    (void)l;
    if (index == 0) {
        events_free(__atomic_exchange_n(&a->events, NULL, __ATOMIC_ACQ_REL));
    }
    service_auth_free(w->auth);
    w->auth = NULL;
    http1_client_free(tl_client);
    tl_client = NULL;
    redis_client_free(w->redis);
    w->redis = NULL;
    pg_pool_free(w->db);
    w->db = NULL;
}

/* Readiness is judged by the worker serving /readyz, on its own resources
 * (they are per-thread); every worker is alike, so one speaks for all. */
static int check_database(void *arg, char *reason, size_t n)
{
    (void)arg;
    struct user_worker *w = user_worker_current();
    if (!w || !w->db) {
        snprintf(reason, n, "no database pool");
        return -1;
    }
    return pg_pool_is_ready(w->db, reason, n) ? 0 : -1;
}

static int check_jwks(void *arg, char *reason, size_t n)
{
    (void)arg;
    struct user_worker *w = user_worker_current();
    if (!w || !w->auth) {
        snprintf(reason, n, "JWT verification not configured");
        return -1;
    }
    return service_auth_is_ready(w->auth, reason, n) ? 0 : -1;
}

static int check_bus(void *arg, char *reason, size_t n)
{
    struct user_app *a = arg;
    return events_is_ready(__atomic_load_n(&a->events, __ATOMIC_ACQUIRE), reason, n) ? 0 : -1;
}

static int register_metrics(struct user_app *a)
{
    struct metrics_registry *reg = metrics_default();
    struct metrics_family *cache, *rej;
    if (!reg ||
        metrics_register_counter(reg, "strata_user_cache_total", "User reads through the Redis cache, by outcome.",
                                 METRICS_LABELS("result"), &cache) < 0 ||
        metrics_register_counter(reg, "strata_user_hasher_rejected_total",
                                 "Password operations refused because the argon2 queue was full (503).", NULL,
                                 &rej) < 0 ||
        events_init_metrics() < 0)
        return -1;
    a->cache_hit = metrics_counter_with(cache, "hit");
    a->cache_miss = metrics_counter_with(cache, "miss");
    a->cache_error = metrics_counter_with(cache, "error");
    a->hasher_rejected = metrics_counter_with(rej);
    return 0;
}

int main(void)
{
    log_init("user-svc");
    if (sodium_init() < 0) {
        fprintf(stderr, "user-svc: libsodium failed to initialise\n");
        return 2;
    }
    app.database_url = env_or_null("DATABASE_URL");
    if (!app.database_url) {
        fprintf(stderr, "user-svc: DATABASE_URL is required\n");
        return 2;
    }
    app.redis_url = env_or_null("REDIS_URL");
    app.nats_url = env_or_null("NATS_URL");
    unsigned threads, queue;
    if (env_uint("HASH_THREADS", 2, 1, 16, &threads) < 0 || env_uint("HASH_QUEUE", 64, 1, 100000, &queue) < 0)
        return 2;

    char err[512];
    if (pg_migrate(app.database_url, "user-svc", store_migrations, store_nmigrations, err, sizeof err) < 0) {
        log_error("migrations failed", LOG_STR("error", err));
        return 1;
    }

    /* The dummy hash: same parameters as real ones, of a random password
     * nobody knows. */
    unsigned char rnd[32];
    char pw[sizeof rnd * 2 + 1];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
    if (crypto_pwhash_str(app.dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        log_error("argon2id failed at start (out of memory?)");
        return 1;
    }

    struct service_config cfg = { .name = "user-svc", .listen = "127.0.0.1:8081" };
    app.svc = service_new(&cfg);
    if (!app.svc)
        return 2;
    app.nworkers = service_workers(app.svc);
    app.workers = calloc((size_t)app.nworkers, sizeof *app.workers);
    app.hasher = hasher_new(threads, queue);
    if (!app.workers || !app.hasher || register_metrics(&app) < 0 || users_routes(&app) < 0) {
        log_error("user-svc: start-up failed (out of memory?)");
        return 1;
    }
    service_add_check(app.svc, "database", check_database, &app);
    service_add_check(app.svc, "jwks", check_jwks, &app);
    if (app.nats_url)
        service_add_check(app.svc, "bus", check_bus, &app);
    service_on_worker(app.svc, worker_start, worker_stop, &app);

    log_info("user-svc starting", LOG_INT("workers", app.nworkers), LOG_BOOL("cache", app.redis_url != NULL),
             LOG_BOOL("order_events", app.nats_url != NULL));
    int rc = service_run(app.svc);
    hasher_free(app.hasher);
    service_free(app.svc);
    free(app.workers);
    return rc < 0 ? 1 : 0;
}
