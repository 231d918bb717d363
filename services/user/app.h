/* app.h — user-svc's process and per-worker state, shared by its files. */
#ifndef USER_APP_H
#define USER_APP_H

#include <sodium.h>
#include <stdbool.h>

#include "core/metrics.h"
#include "core/service.h"

struct pg_pool;
struct redis_client;
struct service_auth;
struct hasher;
struct events;

/* What one worker loop owns (made in service_on_worker's start). */
struct user_worker {
    struct loop *loop;
    struct pg_pool *db;
    struct redis_client *redis; /* NULL without REDIS_URL */
    struct service_auth *auth;
};

struct user_app {
    struct service *svc;
    const char *database_url;
    const char *redis_url; /* NULL: no cache */
    const char *nats_url;  /* NULL: no order-event consumer */
    int nworkers;
    struct user_worker *workers; /* [nworkers] */
    struct hasher *hasher;
    /* Unknown emails are verified against this hash so that they cost what
     * a wrong password costs (no user enumeration by timing). */
    char dummy_hash[crypto_pwhash_STRBYTES];
    struct events *events; /* on worker 0's loop */
    struct metrics_counter *cache_hit, *cache_miss, *cache_error;
    struct metrics_counter *hasher_rejected;
};

/* The worker state of the calling loop thread (set in the worker start). */
struct user_worker *user_worker_current(void);

/* users.c: registers every /v1 and /internal route. */
int users_routes(struct user_app *app);

#endif
