/* orders.c — the HTTP API of order-svc:
 *   POST /v1/orders               create (Idempotency-Key required)
 *   GET  /v1/orders               the caller's orders, newest first, keyset pages
 *   GET  /v1/orders/{id}          owner or admin; anybody else gets 404
 *   POST /v1/orders/{id}/cancel   pending|confirmed → cancelled; otherwise 409
 * Every route needs a bearer JWT (verified here: zero trust).
 *
 * Request lifecycle: a handler's work outlives the handler (user-svc call,
 * queries), so it lives in a struct order_op (malloc'd, never in the
 * request's arena). If the client goes away, service_req_on_abort's hook
 * detaches the op (op->r = NULL) and the pending callback frees it without
 * answering; a user-svc call in flight is cancelled by the framework, so
 * the op is freed at once. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/http1_server.h"
#include "core/jwt.h"
#include "core/log.h"
#include "order.h"

/* 2 s: user-svc answers from its cache or one indexed read; past 2 s a
 * client retry (same Idempotency-Key) is the better bet. */
#define USER_CALL_TIMEOUT_MS 2000

struct order_op {
    struct service_req *r; /* NULL once the client has gone away */
    struct order_app *app;
    struct order_worker *w;
    bool is_calling; /* a user-svc call in flight (the framework cancels it on abort) */
    char user_id[ORDER_UUID_LEN + 1];
    char order_id[ORDER_UUID_LEN + 1];
    bool is_admin;
    /* create */
    char key[ORDER_IDEMPOTENCY_KEY_MAX + 1];
    char hash[65];
    char *doc;
    struct order_input *in;
    /* list */
    char status[16];
    bool has_status;
    int limit;
    char cursor_time[40], cursor_id[ORDER_UUID_LEN + 1];
    bool has_cursor;
};

static void op_free(struct order_op *op);

static void op_abort(struct service_req *r, void *arg)
{
    struct order_op *op = arg;
    (void)r;
    op->r = NULL;
    if (op->is_calling)
        op_free(op); /* the call's callback will not run */
    /* else a query is in flight: its callback sees op->r == NULL and frees op */
}

static struct order_op *op_new(struct service_req *r, struct order_app *app)
{
    struct order_op *op = calloc(1, sizeof *op);
    if (!op) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return NULL;
    }
    op->r = r;
    op->app = app;
    op->w = order_worker_current();
    service_req_on_abort(r, op_abort, op);
    return op;
}

static void op_free(struct order_op *op)
{
    if (op->in) {
        order_input_clear(op->in);
        free(op->in);
    }
    free(op->doc);
    free(op);
}

/* A callback's first step: false (and the op freed) when the client is gone. */
static bool op_alive(struct order_op *op)
{
    if (op->r)
        return true;
    op_free(op);
    return false;
}

/* Detaches op from its request before the reply: once a reply is sent the
 * exchange may be freed or reused, so nothing may touch it afterwards. */
static struct service_req *op_detach(struct order_op *op)
{
    struct service_req *r = op->r;
    service_req_on_abort(r, NULL, NULL);
    op->r = NULL;
    return r;
}

static void reply_error(struct order_op *op, int status, const char *code, const char *msg)
{
    struct service_req *r = op_detach(op);
    op_free(op);
    service_reply_error(r, status, code, msg);
}

static void reply_text(struct order_op *op, int status, const char *json, size_t n)
{
    struct service_req *r = op_detach(op);
    service_reply(r, status, "application/json", str_make(json, n));
    op_free(op); /* after: json may point into op (the created document) */
}

/* A connection-level or SQL failure. */
static void reply_db_error(struct order_op *op, int err, const PGresult *res, const char *what)
{
    if (err < 0) {
        log_warn("database unavailable", LOG_STR("during", what), LOG_ERRNO("error", err));
        if (err == -ETIMEDOUT)
            reply_error(op, 504, "database_timeout", "the database did not answer in time");
        else
            reply_error(op, 503, "database_unavailable", "the database is unavailable");
        return;
    }
    log_error("query failed", LOG_STR("during", what), LOG_STR("sqlstate", pg_sqlstate(res)),
              LOG_STR("error", PQresultErrorMessage(res)));
    reply_error(op, 500, "internal_error", "the order could not be processed");
}

static bool res_ok(int err, const PGresult *res, ExecStatusType want)
{
    return err == 0 && res && PQresultStatus(res) == want;
}

/* Query failed to queue: pool bound reached or connection gone. */
static void reply_queue_error(struct order_op *op, int rc)
{
    reply_db_error(op, rc == -ETIMEDOUT ? rc : -ECONNREFUSED, NULL, "queue");
}

/* The caller's identity from verified claims: sub must be a user id. */
static bool op_set_caller(struct order_op *op, const struct jwt_claims *claims)
{
    if (!claims->sub || !order_uuid_is_valid(str_from_cstr(claims->sub)))
        return false;
    memcpy(op->user_id, claims->sub, ORDER_UUID_LEN + 1);
    op->is_admin = jwt_claims_has_role(claims, "admin");
    return true;
}

/* ---- POST /v1/orders ------------------------------------------------------------------ */

static void created(int err, PGresult *res, void *arg);

static void create_insert(struct order_op *op)
{
    char created_at[ORDER_TIME_LEN + 1], event_id[ORDER_UUID_LEN + 1];
    order_time_format(loop_wall_ns(), created_at);
    if (order_uuid_new(op->order_id) < 0 || order_uuid_new(event_id) < 0) {
        reply_error(op, 503, "unavailable", "no randomness available");
        return;
    }
    json_t *doc = order_doc_new(op->order_id, op->user_id, op->in, created_at);
    json_t *event = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "event_id", event_id, "type", "order.created",
                              "order_id", op->order_id, "user_id", op->user_id, "total_cents",
                              (json_int_t)op->in->total_cents, "currency", op->in->currency, "occurred_at",
                              created_at);
    op->doc = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    char *event_text = event ? json_dumps(event, JSON_COMPACT) : NULL;
    json_decref(doc);
    json_decref(event);
    if (!op->doc || !event_text) {
        free(event_text);
        reply_error(op, 503, "unavailable", "out of memory");
        return;
    }
    char total[24];
    snprintf(total, sizeof total, "%lld", (long long)op->in->total_cents);
    const char *params[] = { op->order_id, op->user_id,  op->doc,    total,    op->in->currency,
                             op->key,      op->hash,     created_at, event_id, event_text };
    int rc = pg_query(op->w->db, store_sql_create, 10, params, created, op);
    free(event_text);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void replay_loaded(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (!op_alive(op))
        return;
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "idempotency lookup");
        return;
    }
    if (PQntuples(res) == 0) { /* the conflicting row is gone (cannot happen: orders are never deleted) */
        reply_error(op, 409, "conflict", "a concurrent request with this Idempotency-Key failed; retry");
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), op->hash) != 0) {
        reply_error(op, 422, "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request body");
        return;
    }
    metrics_counter_add(op->app->m_replayed, 1);
    service_req_add_header(op->r, "Idempotent-Replayed", "true");
    reply_text(op, 201, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
}

static void created(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (err == 0 && res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        /* Committed, whether or not the client is still there. */
        metrics_counter_add(op->app->m_created, 1);
        outbox_relay_kick(__atomic_load_n(&op->app->relay, __ATOMIC_ACQUIRE));
        if (!op_alive(op))
            return;
        log_info("order created", LOG_STR("order_id", op->order_id), LOG_STR("user_id", op->user_id),
                 LOG_STR("request_id", service_req_id(op->r)));
        service_req_add_header(op->r, "Idempotent-Replayed", "false");
        reply_text(op, 201, op->doc, strlen(op->doc));
        return;
    }
    if (!op_alive(op))
        return;
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "create order");
        return;
    }
    /* No row: the key exists (possibly inserted by a concurrent request
     * that ON CONFLICT waited for). Replay it or refuse the mismatch. */
    const char *params[] = { op->user_id, op->key };
    int rc = pg_query(op->w->db, store_sql_find_by_key, 2, params, replay_loaded, op);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void user_checked(struct service_req *r, int err, const struct http1_client_response *resp, void *arg)
{
    struct order_op *op = arg;
    op->is_calling = false;
    if (err) {
        op_detach(op);
        op_free(op);
        service_reply_upstream_error(r, err, "user-svc");
        return;
    }
    if (resp->status == 404) {
        metrics_counter_add(op->app->m_rejected_user, 1);
        reply_error(op, 403, "user_not_active", "the user of this token does not exist");
        return;
    }
    if (resp->status != 200) {
        log_warn("user-svc answered unexpectedly", LOG_INT("status", resp->status));
        reply_error(op, 502, "bad_gateway", "user-svc answered with an error");
        return;
    }
    json_t *u = json_loadb(resp->body.p, resp->body.n, 0, NULL);
    const char *status = u ? json_string_value(json_object_get(u, "status")) : NULL;
    if (!status) {
        json_decref(u);
        reply_error(op, 502, "bad_gateway", "user-svc answered without a status");
        return;
    }
    bool is_active = strcmp(status, "active") == 0;
    json_decref(u);
    if (!is_active) {
        metrics_counter_add(op->app->m_rejected_user, 1);
        reply_error(op, 403, "user_not_active", "the user of this token is not active");
        return;
    }
    create_insert(op);
}

static void create_authed(struct service_req *r, const struct jwt_claims *claims, void *arg)
{
    struct order_app *app = arg;
    struct str key = service_req_header(r, "Idempotency-Key");
    if (!key.p) {
        service_reply_error(r, 400, "idempotency_key_required", "the Idempotency-Key header is required");
        return;
    }
    if (!order_idempotency_key_is_valid(key)) {
        service_reply_error(r, 400, "invalid_idempotency_key",
                            "Idempotency-Key must be 1 to 200 printable ASCII characters");
        return;
    }
    json_t *body;
    if (service_req_json(r, 8, &body) < 0)
        return;
    struct order_input *in = calloc(1, sizeof *in);
    struct json_error jerr;
    char hash[65];
    if (!in || order_request_hash(body, hash) < 0) {
        free(in);
        json_decref(body);
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    if (order_validate(body, in, &jerr) < 0) {
        order_input_clear(in);
        free(in);
        json_decref(body);
        service_reply_json_error(r, &jerr);
        return;
    }
    json_decref(body);
    struct order_op *op = op_new(r, app);
    if (!op) {
        order_input_clear(in);
        free(in);
        return;
    }
    op->in = in;
    memcpy(op->hash, hash, sizeof hash);
    str_copy_cstr(key, op->key, sizeof op->key);
    if (!op_set_caller(op, claims)) {
        reply_error(op, 403, "forbidden", "the token's subject is not a user");
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/internal/v1/users/%s", op->user_id);
    struct service_call_opts o = { .method = "GET", .path = path, .timeout_ms = USER_CALL_TIMEOUT_MS };
    int rc = service_call(r, app->user_url, &o, user_checked, op);
    if (rc < 0) {
        op_detach(op);
        op_free(op);
        service_reply_upstream_error(r, rc, "user-svc");
        return;
    }
    op->is_calling = true;
}

static void create_order(struct service_req *r, void *arg)
{
    struct order_worker *w = order_worker_current();
    service_require_jwt(w->auth, r, create_authed, arg);
}

/* ---- GET /v1/orders/{id} --------------------------------------------------------------- */

static void got(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (!op_alive(op))
        return;
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "get order");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_error(op, 404, "not_found", "no such order");
        return;
    }
    reply_text(op, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
}

/* Common start of the routes on one order: caller, id (not a UUID → 404). */
static struct order_op *order_route_op(struct service_req *r, const struct jwt_claims *claims, void *arg)
{
    struct order_op *op = op_new(r, arg);
    if (!op)
        return NULL;
    if (!op_set_caller(op, claims)) {
        reply_error(op, 403, "forbidden", "the token's subject is not a user");
        return NULL;
    }
    struct str id = service_req_param(r, "id");
    if (!order_uuid_is_valid(id)) {
        reply_error(op, 404, "not_found", "no such order");
        return NULL;
    }
    str_copy_cstr(id, op->order_id, sizeof op->order_id);
    return op;
}

static void get_authed(struct service_req *r, const struct jwt_claims *claims, void *arg)
{
    struct order_op *op = order_route_op(r, claims, arg);
    if (!op)
        return;
    const char *params[] = { op->order_id, op->user_id, op->is_admin ? "true" : "false" };
    int rc = pg_query(op->w->db, store_sql_get, 3, params, got, op);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void get_order(struct service_req *r, void *arg)
{
    service_require_jwt(order_worker_current()->auth, r, get_authed, arg);
}

/* ---- POST /v1/orders/{id}/cancel ------------------------------------------------------- */

static void cancel_status(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (!op_alive(op))
        return;
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "order status");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_error(op, 404, "not_found", "no such order");
        return;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "the order is %s; only pending or confirmed orders can be cancelled",
             PQgetvalue(res, 0, 0));
    reply_error(op, 409, "invalid_state", msg);
}

static void cancelled(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (err == 0 && res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        metrics_counter_add(op->app->m_cancelled, 1);
        outbox_relay_kick(__atomic_load_n(&op->app->relay, __ATOMIC_ACQUIRE));
        if (!op_alive(op))
            return;
        log_info("order cancelled", LOG_STR("order_id", op->order_id), LOG_STR("by", op->user_id));
        reply_text(op, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
        return;
    }
    if (!op_alive(op))
        return;
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "cancel order");
        return;
    }
    /* Absent, someone else's, or not cancellable: find out which. */
    const char *params[] = { op->order_id, op->user_id, op->is_admin ? "true" : "false" };
    int rc = pg_query(op->w->db, store_sql_status, 3, params, cancel_status, op);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void cancel_authed(struct service_req *r, const struct jwt_claims *claims, void *arg)
{
    struct order_op *op = order_route_op(r, claims, arg);
    if (!op)
        return;
    char event_id[ORDER_UUID_LEN + 1], now[ORDER_TIME_LEN + 1];
    if (order_uuid_new(event_id) < 0) {
        reply_error(op, 503, "unavailable", "no randomness available");
        return;
    }
    order_time_format(loop_wall_ns(), now);
    const char *params[] = { op->order_id, op->user_id, op->is_admin ? "true" : "false", event_id, now };
    int rc = pg_query(op->w->db, store_sql_cancel, 5, params, cancelled, op);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void cancel_order(struct service_req *r, void *arg)
{
    service_require_jwt(order_worker_current()->auth, r, cancel_authed, arg);
}

/* ---- GET /v1/orders?status=&limit=&cursor= ---------------------------------------------- */

/* Percent-decodes v into out (size cap). -EINVAL on a bad escape or overflow. */
static int query_decode(struct str v, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (c == '%') {
            if (i + 2 >= v.n)
                return -EINVAL;
            int h = str_hex_digit(v.p[i + 1]), l = str_hex_digit(v.p[i + 2]);
            if (h < 0 || l < 0)
                return -EINVAL;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (n + 1 >= cap || c == '\0')
            return -EINVAL;
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

/* Cursor: base64url("<created_at µs UTC>|<id>") of the last order on the page. */
static int cursor_decode(const char *text, struct order_op *op)
{
    struct buf b;
    buf_init(&b, 256);
    int rc = base64url_decode(str_from_cstr(text), &b);
    if (rc == 0)
        rc = buf_append(&b, "", 1);
    if (rc < 0) {
        buf_free(&b);
        return -EINVAL;
    }
    const char *s = buf_rptr(&b);
    const char *bar = strchr(s, '|');
    rc = -EINVAL;
    if (bar && (size_t)(bar - s) < sizeof op->cursor_time && order_uuid_is_valid(str_from_cstr(bar + 1))) {
        bool ok = bar > s;
        for (const char *p = s; p < bar; p++)
            ok &= (*p >= '0' && *p <= '9') || *p == '-' || *p == ':' || *p == '.' || *p == 'T' || *p == 'Z';
        if (ok) {
            memcpy(op->cursor_time, s, (size_t)(bar - s));
            op->cursor_time[bar - s] = '\0';
            memcpy(op->cursor_id, bar + 1, ORDER_UUID_LEN + 1);
            op->has_cursor = true;
            rc = 0;
        }
    }
    buf_free(&b);
    return rc;
}

static int parse_list_query(struct str q, struct order_op *op, const char **bad)
{
    bool seen_status = false, seen_limit = false, seen_cursor = false;
    op->limit = ORDER_LIST_DEFAULT_LIMIT;
    while (q.n) {
        const char *amp = memchr(q.p, '&', q.n);
        struct str pair = str_make(q.p, amp ? (size_t)(amp - q.p) : q.n);
        q = amp ? str_make(amp + 1, q.n - pair.n - 1) : STR_NULL;
        if (!pair.n)
            continue;
        const char *eq = memchr(pair.p, '=', pair.n);
        struct str name = str_make(pair.p, eq ? (size_t)(eq - pair.p) : pair.n);
        struct str val = eq ? str_make(eq + 1, pair.n - name.n - 1) : STR_NULL;
        char v[512];
        if (str_eq(name, STR_LIT("status"))) {
            *bad = "status: expected one of pending, confirmed, shipped, cancelled";
            if (seen_status || query_decode(val, v, sizeof v) < 0 || !order_status_is_valid(str_from_cstr(v)))
                return -EINVAL;
            seen_status = true;
            str_copy_cstr(str_from_cstr(v), op->status, sizeof op->status); /* a valid status fits */
            op->has_status = true;
        } else if (str_eq(name, STR_LIT("limit"))) {
            uint64_t n;
            *bad = "limit: expected an integer from 1 to 100";
            if (seen_limit || query_decode(val, v, sizeof v) < 0 || str_to_u64(str_from_cstr(v), &n) < 0 || n < 1 ||
                n > ORDER_LIST_MAX_LIMIT)
                return -EINVAL;
            seen_limit = true;
            op->limit = (int)n;
        } else if (str_eq(name, STR_LIT("cursor"))) {
            *bad = "cursor: not a cursor this API returned";
            if (seen_cursor || query_decode(val, v, sizeof v) < 0 || cursor_decode(v, op) < 0)
                return -EINVAL;
            seen_cursor = true;
        } else {
            *bad = "unknown query parameter (allowed: status, limit, cursor)";
            return -EINVAL;
        }
    }
    return 0;
}

static void listed(int err, PGresult *res, void *arg)
{
    struct order_op *op = arg;
    if (!op_alive(op))
        return;
    if (err == 0 && res && PQresultStatus(res) == PGRES_FATAL_ERROR && !strncmp(pg_sqlstate(res), "22", 2)) {
        reply_error(op, 400, "invalid_parameter", "cursor: not a cursor this API returned");
        return;
    }
    if (!res_ok(err, res, PGRES_TUPLES_OK)) {
        reply_db_error(op, err, res, "list orders");
        return;
    }
    int rows = PQntuples(res);
    bool has_more = rows > op->limit;
    if (has_more)
        rows = op->limit;
    struct buf b;
    buf_init(&b, 64u * 1024 * 1024);
    int rc = buf_append_cstr(&b, "{\"items\":[");
    for (int i = 0; rc == 0 && i < rows; i++) {
        if (i)
            rc = buf_append(&b, ",", 1);
        if (rc == 0)
            rc = buf_append(&b, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    if (rc == 0)
        rc = buf_append_cstr(&b, "],\"next_cursor\":");
    if (rc == 0 && has_more) {
        char raw[128];
        snprintf(raw, sizeof raw, "%s|%s", PQgetvalue(res, rows - 1, 1), PQgetvalue(res, rows - 1, 2));
        rc = buf_append(&b, "\"", 1);
        if (rc == 0)
            rc = base64url_encode(raw, strlen(raw), &b);
        if (rc == 0)
            rc = buf_append(&b, "\"", 1);
    } else if (rc == 0) {
        rc = buf_append_cstr(&b, "null");
    }
    if (rc == 0)
        rc = buf_append(&b, "}", 1);
    if (rc < 0) {
        buf_free(&b);
        reply_error(op, 503, "unavailable", "out of memory");
        return;
    }
    reply_text(op, 200, buf_rptr(&b), buf_len(&b));
    buf_free(&b);
}

static void list_authed(struct service_req *r, const struct jwt_claims *claims, void *arg)
{
    struct order_op *op = op_new(r, arg);
    if (!op)
        return;
    if (!op_set_caller(op, claims)) {
        reply_error(op, 403, "forbidden", "the token's subject is not a user");
        return;
    }
    const char *bad = "";
    if (parse_list_query(service_req_request(r)->query, op, &bad) < 0) {
        reply_error(op, 400, "invalid_parameter", bad);
        return;
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", op->limit + 1); /* one more: is there a next page? */
    const char *params[] = { op->user_id, op->has_status ? op->status : NULL,
                             op->has_cursor ? op->cursor_time : NULL, op->has_cursor ? op->cursor_id : NULL, limit };
    int rc = pg_query(op->w->db, store_sql_list, 5, params, listed, op);
    if (rc < 0)
        reply_queue_error(op, rc);
}

static void list_orders(struct service_req *r, void *arg)
{
    service_require_jwt(order_worker_current()->auth, r, list_authed, arg);
}

void orders_register_routes(struct order_app *app)
{
    service_route(app->svc, "POST", "/v1/orders", create_order, app);
    service_route(app->svc, "GET", "/v1/orders", list_orders, app);
    service_route(app->svc, "GET", "/v1/orders/{id}", get_order, app);
    service_route(app->svc, "POST", "/v1/orders/{id}/cancel", cancel_order, app);
}
