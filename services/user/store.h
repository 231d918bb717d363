/* store.h — user-svc's schema and its SQL. Every statement is parameterised
 * ($1..$n); the public user representation is built by PostgreSQL itself
 * (USER_JSON) so that the service, the cache and the docs agree on one form. */
#ifndef USER_STORE_H
#define USER_STORE_H

#include <stddef.h>

#include "core/pg.h"

/* Versioned migrations for pg_migrate (lock "user-svc"). */
extern const struct pg_migration store_migrations[];
extern const size_t store_nmigrations;

/* The public form of a user row (alias u) as JSON text: id, email, name,
 * roles, status, order_count, last_order_at, created_at, updated_at;
 * times in RFC 3339 UTC with microseconds. */
#define USER_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define USER_JSON                                                                                      \
    "json_build_object('id', u.id, 'email', u.email, 'name', u.name, 'roles', u.roles, "              \
    "'status', u.status, 'order_count', u.order_count, 'last_order_at', " USER_TS("u.last_order_at") \
    ", 'created_at', " USER_TS("u.created_at") ", 'updated_at', " USER_TS("u.updated_at") ")::text"

/* $1 email, $2 name, $3 password hash → one row: {id,email,name,roles,created_at}. */
#define SQL_INSERT_USER                                                                            \
    "INSERT INTO users AS u (email, name, password_hash) VALUES ($1, $2, $3) RETURNING "           \
    "json_build_object('id', u.id, 'email', u.email, 'name', u.name, 'roles', u.roles, "          \
    "'created_at', " USER_TS("u.created_at") ")::text"
/* $1 id → 0 or 1 row: USER_JSON. */
#define SQL_GET_USER "SELECT " USER_JSON " FROM users u WHERE u.id = $1"
/* $1 id, $2 name → 0 or 1 row: USER_JSON. */
#define SQL_UPDATE_NAME \
    "UPDATE users u SET name = $2, updated_at = now() WHERE u.id = $1 RETURNING " USER_JSON
/* $1 limit+1, $2 cursor micros (NULL: from the start), $3 cursor id →
 * rows: USER_JSON, created_at in epoch microseconds, id. Keyset order
 * (created_at, id) ascending: the index users_created_id serves it. */
#define SQL_LIST_USERS                                                                              \
    "SELECT " USER_JSON ", (extract(epoch FROM u.created_at) * 1000000)::bigint, u.id "               \
    "FROM users u WHERE $2::bigint IS NULL OR (u.created_at, u.id) > "                               \
    "(timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3::uuid) "                       \
    "ORDER BY u.created_at, u.id LIMIT $1"
/* $1 email → 0 or 1 row: id, password_hash, roles (JSON), status. */
#define SQL_CREDENTIALS "SELECT u.id, u.password_hash, to_json(u.roles)::text, u.status FROM users u WHERE u.email = $1"
/* $1 id → 0 or 1 row: {id,status,roles}. */
#define SQL_INTERNAL_USER \
    "SELECT json_build_object('id', u.id, 'status', u.status, 'roles', u.roles)::text FROM users u WHERE u.id = $1"

/* Order events, in one transaction: */
/* $1 event id → 1 row when new, 0 when already processed. */
#define SQL_EVENT_MARK "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1"
/* $1 user id, $2 delta (1 created, 0 cancelled), $3 occurred_at → rows updated.
 * last_order_at only moves forward: events may arrive out of order. */
#define SQL_EVENT_APPLY                                                                         \
    "UPDATE users SET order_count = order_count + $2::int, "                                    \
    "last_order_at = CASE WHEN $2::int > 0 THEN GREATEST(last_order_at, $3::timestamptz) "      \
    "ELSE last_order_at END, updated_at = now() WHERE id = $1::uuid"

#endif
