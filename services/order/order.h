/* order.h — order-svc's internal contract between its files (not a core
 * module: nothing outside services/order/ includes it).
 *
 *   main.c      environment, migrations, workers, readiness
 *   orders.c    the HTTP handlers and the request lifecycle
 *   validate.c  request validation, canonical hashing, ids and times
 *   store.c     every SQL statement
 *   outbox.c    the relay that publishes outbox rows to JetStream */
#ifndef STRATA_ORDER_H
#define STRATA_ORDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/json.h"
#include "core/metrics.h"
#include "core/pg.h"
#include "core/service.h"
#include "core/service_auth.h"

/* 100 items: a bound on the document and on the work per request; larger
 * baskets are split by the client. */
#define ORDER_MAX_ITEMS 100
#define ORDER_SKU_MAX 64
#define ORDER_QTY_MAX 1000
/* 200: the longest Idempotency-Key we store (Stripe allows 255; a UUID is 36). */
#define ORDER_IDEMPOTENCY_KEY_MAX 200
#define ORDER_LIST_DEFAULT_LIMIT 20
#define ORDER_LIST_MAX_LIMIT 100
#define ORDER_UUID_LEN 36
/* "2026-01-02T03:04:05.678Z" */
#define ORDER_TIME_LEN 24

/* ---- validate.c ----------------------------------------------------------- */

struct order_item {
    char sku[ORDER_SKU_MAX + 1];
    int64_t quantity;
    int64_t unit_price_cents;
    int64_t line_total_cents;
};

struct order_input {
    struct order_item items[ORDER_MAX_ITEMS];
    size_t nitems;
    int64_t total_cents;
    char currency[4];
    json_t *shipping_address; /* a new object with the accepted fields only (owned) */
};

/* Validates a POST /v1/orders body (strict: unknown fields anywhere are
 * refused) and computes the totals with overflow checks. 0, or -EINVAL with
 * err filled (422, the field named; "items[2].quantity: ..."). On success
 * in->shipping_address is owned by in: order_input_clear it. */
int order_validate(const json_t *body, struct order_input *in, struct json_error *err);
void order_input_clear(struct order_input *in);
/* 1..200 printable ASCII characters (0x21..0x7e and space inside). */
bool order_idempotency_key_is_valid(struct str key);
/* SHA-256 (hex) of the body's canonical form: compact, keys sorted. The
 * same JSON value always hashes the same, whatever its spacing or key
 * order. 0 or -ENOMEM. */
int order_request_hash(const json_t *body, char out[65]);
/* A random (v4) UUID from OpenSSL's CSPRNG, lower-case. */
int order_uuid_new(char out[ORDER_UUID_LEN + 1]);
/* 8-4-4-4-12 hex digits. */
bool order_uuid_is_valid(struct str s);
/* wall_ns as RFC 3339 UTC with milliseconds. */
void order_time_format(uint64_t wall_ns, char out[ORDER_TIME_LEN + 1]);
/* The order document (a new reference) as stored and returned. */
json_t *order_doc_new(const char *id, const char *user_id, const struct order_input *in, const char *created_at);
/* One of pending, confirmed, shipped, cancelled. */
bool order_status_is_valid(struct str s);

/* ---- the application (main.c) --------------------------------------------- */

struct outbox_relay;

struct order_worker {
    struct order_app *app;
    int index;
    struct loop *loop;
    struct http1_client *client; /* JWKS fetches */
    struct pg_pool *db;
    struct service_auth *auth;
};

struct order_app {
    struct service *svc;
    const char *database_url;
    const char *nats_url;
    const char *user_url;
    int nworkers;
    struct order_worker *workers;
    struct outbox_relay *relay; /* runs on worker 0's loop */
    struct metrics_counter *m_created, *m_replayed, *m_cancelled, *m_rejected_user;
};

/* The worker the calling thread runs (NULL off the worker threads). */
struct order_worker *order_worker_current(void);

/* ---- orders.c --------------------------------------------------------------- */

void orders_register_routes(struct order_app *app);

/* ---- store.c ---------------------------------------------------------------- */

/* Migrations for pg_migrate (lock "order-svc"). */
extern const struct pg_migration order_migrations[];
extern const size_t order_migrations_count;

/* The SQL of each statement; parameters as documented beside each. */
extern const char *const store_sql_create;
extern const char *const store_sql_find_by_key;
extern const char *const store_sql_get;
extern const char *const store_sql_list;
extern const char *const store_sql_cancel;
extern const char *const store_sql_status;
extern const char *const store_sql_outbox_unsent;
extern const char *const store_sql_outbox_mark_sent;

/* ---- outbox.c --------------------------------------------------------------- */

/* Made on worker 0's loop (before serving); NULL on allocation failure. */
struct outbox_relay *outbox_relay_new(struct loop *l, struct pg_pool *db, const char *nats_url);
/* Stops timers and closes the bus connection; on the relay's loop. The
 * struct stays allocated (other workers may still kick it): free it with
 * outbox_relay_free after every worker has stopped. */
void outbox_relay_stop(struct outbox_relay *r);
void outbox_relay_free(struct outbox_relay *r);
/* Asks the relay to poll now (after a commit). Any thread. */
void outbox_relay_kick(struct outbox_relay *r);

#endif
