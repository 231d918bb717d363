/* store.c — order-svc's schema and every statement it runs. All statements
 * are parameterised; each write that must be atomic with its event is ONE
 * statement (data-modifying CTEs), so the order and its outbox row commit
 * together without a round trip per step. */
#include "order.h"

static const char schema_v1[] =
    "CREATE TABLE orders ("
    "  id uuid PRIMARY KEY,"
    "  owner_id uuid NOT NULL,"
    "  status text NOT NULL CHECK (status IN ('pending', 'confirmed', 'shipped', 'cancelled')),"
    "  doc jsonb NOT NULL,"
    "  total_cents bigint NOT NULL CHECK (total_cents >= 0),"
    "  currency text NOT NULL,"
    "  idempotency_key text NOT NULL,"
    "  request_hash text NOT NULL,"
    /* The exact bytes of the first 201, replayed for a retried key. */
    "  response_body text NOT NULL,"
    "  created_at timestamptz NOT NULL,"
    "  updated_at timestamptz NOT NULL,"
    "  UNIQUE (owner_id, idempotency_key)"
    ");"
    "CREATE INDEX orders_owner_created ON orders (owner_id, created_at DESC, id DESC);"
    "CREATE INDEX orders_status ON orders (status);"
    "CREATE TABLE outbox ("
    "  id bigserial PRIMARY KEY,"
    "  event_id uuid NOT NULL UNIQUE,"
    "  subject text NOT NULL,"
    "  payload jsonb NOT NULL,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  sent_at timestamptz"
    ");"
    "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;";

const struct pg_migration order_migrations[] = {
    { 1, "orders_and_outbox", schema_v1 },
};
const size_t order_migrations_count = sizeof order_migrations / sizeof order_migrations[0];

/* $1 id, $2 owner_id, $3 document text, $4 total_cents, $5 currency,
 * $6 idempotency key, $7 request hash, $8 created_at, $9 event id,
 * $10 event payload. One row back when created; none when the key exists
 * (ON CONFLICT waits for a concurrent insert of the same key to commit, so
 * exactly one of N concurrent requests inserts). */
const char *const store_sql_create =
    "WITH o AS ("
    "  INSERT INTO orders (id, owner_id, status, doc, total_cents, currency, idempotency_key, request_hash,"
    "                      response_body, created_at, updated_at)"
    "  VALUES ($1::uuid, $2::uuid, 'pending', $3::text::jsonb, $4::bigint, $5::text, $6::text, $7::text,"
    "          $3::text, $8::text::timestamptz, $8::text::timestamptz)"
    "  ON CONFLICT (owner_id, idempotency_key) DO NOTHING"
    "  RETURNING id)"
    " INSERT INTO outbox (event_id, subject, payload)"
    " SELECT $9::uuid, 'orders.created', $10::text::jsonb FROM o"
    " RETURNING id";

/* $1 owner_id, $2 idempotency key → request_hash, response_body */
const char *const store_sql_find_by_key =
    "SELECT request_hash, response_body FROM orders WHERE owner_id = $1::uuid AND idempotency_key = $2::text";

/* $1 id, $2 caller, $3 caller is admin → doc */
const char *const store_sql_get =
    "SELECT doc::text FROM orders WHERE id = $1::uuid AND (owner_id = $2::uuid OR $3::boolean)";

/* $1 owner_id, $2 status or NULL, $3 cursor created_at or NULL, $4 cursor id,
 * $5 limit → doc, created_at (µs, UTC), id. Newest first; the index on
 * (owner_id, created_at DESC, id DESC) serves it. */
const char *const store_sql_list =
    "SELECT doc::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), id::text"
    " FROM orders"
    " WHERE owner_id = $1::uuid AND ($2::text IS NULL OR status = $2::text)"
    "   AND ($3::text IS NULL OR (created_at, id) < ($3::text::timestamptz, $4::text::uuid))"
    " ORDER BY created_at DESC, id DESC LIMIT $5::int";

/* $1 id, $2 caller, $3 caller is admin, $4 event id, $5 now → doc when
 * cancelled; no row when absent, not the caller's, or not cancellable. */
const char *const store_sql_cancel =
    "WITH c AS ("
    "  UPDATE orders SET status = 'cancelled', updated_at = $5::text::timestamptz,"
    "         doc = doc || jsonb_build_object('status', 'cancelled', 'updated_at', $5::text)"
    "  WHERE id = $1::uuid AND (owner_id = $2::uuid OR $3::boolean) AND status IN ('pending', 'confirmed')"
    "  RETURNING id, owner_id, total_cents, currency, doc),"
    " e AS ("
    "  INSERT INTO outbox (event_id, subject, payload)"
    "  SELECT $4::text::uuid, 'orders.cancelled',"
    "         jsonb_build_object('event_id', $4::text, 'type', 'order.cancelled', 'order_id', c.id,"
    "                            'user_id', c.owner_id, 'total_cents', c.total_cents, 'currency', c.currency,"
    "                            'occurred_at', $5::text)"
    "  FROM c)"
    " SELECT doc::text FROM c";

/* $1 id, $2 caller, $3 caller is admin → status */
const char *const store_sql_status =
    "SELECT status FROM orders WHERE id = $1::uuid AND (owner_id = $2::uuid OR $3::boolean)";

/* $1 batch size → id, subject, event id, payload; oldest first. */
const char *const store_sql_outbox_unsent =
    "SELECT id, subject, event_id::text, payload::text FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1::int";

/* $1 ids as an array literal "{1,2}" */
const char *const store_sql_outbox_mark_sent =
    "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[]) AND sent_at IS NULL";
