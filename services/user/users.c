/* users.c — user-svc's HTTP handlers: registration, profile reads and
 * updates (cache-aside in Redis), the admin listing, and the internal
 * endpoints that auth-svc and order-svc call through the mesh.
 *
 * Every handler is asynchronous: JWT check (service_require_jwt), then
 * PostgreSQL/Redis/argon2 callbacks, then exactly one reply. The state of a
 * request lives in a struct op in the request's arena. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "core/arena.h"
#include "core/jwt.h"
#include "core/log.h"
#include "core/pg.h"
#include "core/redis.h"
#include "core/service_auth.h"
#include "hasher.h"
#include "store.h"
#include "validate.h"

/* 300 s: long enough that a profile read by every request of a session
 * mostly hits, short enough that a missed invalidation heals quickly. */
#define CACHE_TTL_S 300
#define LIST_DEFAULT_LIMIT 20
#define LIST_MAX_LIMIT 100
/* "<micros>:<uuid>": 20 digits + ':' + 36. */
#define CURSOR_MAX 64

struct op {
    struct user_app *app;
    struct user_worker *w;
    struct service_req *r;
    char id[UUID_LEN + 1];   /* the user the request is about */
    char sub[UUID_LEN + 1];  /* the caller (JWT sub), "" when not a uuid */
    bool is_admin;
    const char *name;        /* registration, PATCH: the name (arena) */
    char *password;          /* credentials check: until argon2 has its copy (arena, wiped) */
    char *reply;             /* PATCH: the updated user, sent once the cache is cleared (arena) */
    char email[EMAIL_MAX + 1];
    int limit;
    bool has_cursor;
    char cursor_micros[24];
    char cursor_id[UUID_LEN + 1];
    /* credentials check */
    bool is_known;          /* a usable row was found (active, with a hash) */
    char user_id[UUID_LEN + 1];
    char *roles_json;       /* arena */
    struct wait *wait;      /* the async step in flight, if any */
};

/* The request may go away (client disconnect) while PostgreSQL, Redis or
 * argon2 work for it; none of them can be cancelled. So each async step
 * gets a small heap token instead of the op: on abort the token is cut
 * loose (op NULL) and its callback just frees it. */
struct wait {
    struct op *op;
};

static void op_aborted(struct service_req *r, void *arg)
{
    struct op *op = arg;
    (void)r;
    if (op->wait) {
        op->wait->op = NULL;
        op->wait = NULL;
    }
}

/* A token for the next async step; NULL (after answering 503) when out of memory. */
static struct wait *op_wait(struct op *op)
{
    struct wait *wt = malloc(sizeof *wt);
    if (!wt) {
        service_reply_error(op->r, 503, "unavailable", "out of memory");
        return NULL;
    }
    wt->op = op;
    op->wait = wt;
    service_req_on_abort(op->r, op_aborted, op);
    return wt;
}

/* The step could not start (its callback will not run). */
static void op_unwait(struct op *op)
{
    free(op->wait);
    op->wait = NULL;
    service_req_on_abort(op->r, NULL, NULL);
}

/* In a step's callback: the op, or NULL when the request is gone. */
static struct op *op_resume(void *arg)
{
    struct wait *wt = arg;
    struct op *op = wt->op;
    free(wt);
    if (op) {
        op->wait = NULL;
        service_req_on_abort(op->r, NULL, NULL);
    }
    return op;
}

static struct op *op_new(struct service_req *r, struct user_app *app)
{
    struct op *op = arena_alloc(service_req_arena(r), sizeof *op);
    if (!op) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return NULL;
    }
    memset(op, 0, sizeof *op);
    op->app = app;
    op->w = &app->workers[service_req_worker(r)];
    op->r = r;
    return op;
}

static void reply_db_error(struct op *op, int err, PGresult *res)
{
    if (err) {
        log_warn("database unavailable", LOG_ERRNO("error", err));
        service_reply_error(op->r, err == -ETIMEDOUT ? 504 : 503, err == -ETIMEDOUT ? "timeout" : "unavailable",
                            "the user database is unavailable");
        return;
    }
    log_error("query failed", LOG_STR("sqlstate", pg_sqlstate(res)), LOG_STR("error", PQresultErrorMessage(res)));
    service_reply_error(op->r, 500, "internal", "the request could not be completed");
}

/* pg_query for the op: the callback gets a wait token (op_resume it). */
static void op_query(struct op *op, const char *sql, int n, const char *const *params, pg_result_cb cb)
{
    struct wait *wt = op_wait(op);
    if (!wt)
        return;
    int rc = pg_query(op->w->db, sql, n, params, cb, wt);
    if (rc < 0) {
        op_unwait(op);
        reply_db_error(op, rc == -EBUSY ? -ECONNREFUSED : rc, NULL);
    }
}

static bool res_ok(int err, PGresult *res)
{
    if (err)
        return false;
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

static void reply_json_text(struct op *op, int status, const char *text, size_t n)
{
    service_reply(op->r, status, "application/json", str_make(text, n));
}

static void reply_not_found(struct op *op)
{
    service_reply_error(op->r, 404, "not_found", "no such user");
}

/* Copies what the handlers need from the verified token. */
static void take_claims(struct op *op, const struct jwt_claims *c)
{
    op->sub[0] = '\0';
    if (c->sub)
        uuid_parse(str_from_cstr(c->sub), op->sub);
    op->is_admin = jwt_claims_has_role(c, "admin");
}

static void require_jwt(struct op *op, service_auth_cb cb)
{
    service_require_jwt(op->w->auth, op->r, cb, op);
}

/* ---- POST /v1/users ------------------------------------------------------- */

static void register_inserted(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!err && PQresultStatus(res) == PGRES_FATAL_ERROR && strcmp(pg_sqlstate(res), "23505") == 0) {
        service_reply_error(op->r, 409, "email_taken", "a user with this email already exists");
        return;
    }
    if (!res_ok(err, res) || PQntuples(res) != 1) {
        reply_db_error(op, err, res);
        return;
    }
    const char *id = PQgetvalue(res, 0, 0);
    char loc[64];
    const char *p = strstr(id, "\"id\" : \"");
    if (p && strlen(p) >= 8 + UUID_LEN) {
        snprintf(loc, sizeof loc, "/v1/users/%.*s", UUID_LEN, p + 8);
        service_req_add_header(op->r, "Location", loc);
    }
    log_info("user registered", LOG_STR("email_domain", strchr(op->email, '@')));
    reply_json_text(op, 201, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
}

static void register_hashed(struct hasher_job *j)
{
    struct op *op = op_resume(j->arg);
    if (!op) {
        hasher_job_free(j);
        return;
    }
    if (j->rc < 0) {
        hasher_job_free(j);
        log_error("argon2id hashing failed (out of memory?)");
        service_reply_error(op->r, 503, "unavailable", "the password could not be hashed");
        return;
    }
    const char *params[] = { op->email, op->name, j->hash };
    op_query(op, SQL_INSERT_USER, 3, params, register_inserted);
    hasher_job_free(j);
}

static void reply_validation(struct op *op, const char *field, const char *why)
{
    struct json_error e = { .reason = JSON_REASON_RANGE };
    snprintf(e.field, sizeof e.field, "%s", field);
    snprintf(e.message, sizeof e.message, "%s", why);
    service_reply_json_error(op->r, &e);
}

/* Submits an argon2 job; answers 503 itself when the pool is saturated. */
static int submit_hash(struct op *op, enum hasher_kind kind, const char *password, const char *hash,
                       void (*done)(struct hasher_job *))
{
    struct hasher_job *j = calloc(1, sizeof *j);
    if (!j) {
        service_reply_error(op->r, 503, "unavailable", "out of memory");
        return -ENOMEM;
    }
    j->kind = kind;
    j->loop = op->w->loop;
    j->done = done;
    j->arg = op_wait(op);
    if (!j->arg) {
        hasher_job_free(j);
        return -ENOMEM;
    }
    if (hash)
        snprintf(j->hash, sizeof j->hash, "%s", hash);
    if (hasher_job_set_password(j, password) < 0) {
        op_unwait(op);
        hasher_job_free(j);
        service_reply_error(op->r, 422, "validation_failed", "\"password\" is too long");
        return -EINVAL;
    }
    int rc = hasher_submit(op->app->hasher, j);
    if (rc < 0) {
        op_unwait(op);
        hasher_job_free(j);
        metrics_counter_add(op->app->hasher_rejected, 1);
        service_req_add_header(op->r, "Retry-After", "1");
        service_reply_error(op->r, 503, "overloaded", "too many password operations in progress; retry shortly");
        return rc;
    }
    return 0;
}

static void register_user(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    json_t *in;
    if (service_req_json(r, 4, &in) < 0)
        return;
    static const char *const allowed[] = { "email", "password", "name", NULL };
    struct json_error e;
    const char *email, *password, *name, *why;
    /* 320: room for surrounding whitespace that normalisation trims. */
    if (json_check_only_keys(in, allowed, &e) < 0 || json_get_string(in, "email", true, 1, 320, &email, &e) < 0 ||
        json_get_string(in, "password", true, PASSWORD_MIN, PASSWORD_MAX, &password, &e) < 0 ||
        json_get_string(in, "name", true, USER_NAME_MIN, USER_NAME_MAX, &name, &e) < 0) {
        json_decref(in);
        service_reply_json_error(r, &e);
        return;
    }
    if (email_normalize(email, op->email, sizeof op->email, &why) < 0) {
        json_decref(in);
        reply_validation(op, "email", why);
        return;
    }
    if (password_check(password, op->email, &why) < 0) {
        json_decref(in);
        reply_validation(op, "password", why);
        return;
    }
    op->name = arena_strdup(service_req_arena(r), str_from_cstr(name));
    if (!op->name) {
        json_decref(in);
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    submit_hash(op, HASHER_HASH, password, NULL, register_hashed);
    json_decref(in);
}

/* ---- reads through the cache ------------------------------------------------ */

static void cache_set_done(int err, redisReply *reply, void *arg)
{
    (void)arg;
    (void)reply;
    (void)err; /* best effort: a failed fill is just a future miss */
}

static void read_loaded(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!res_ok(err, res)) {
        reply_db_error(op, err, res);
        return;
    }
    if (PQntuples(res) == 0) {
        reply_not_found(op);
        return;
    }
    const char *json = PQgetvalue(res, 0, 0);
    size_t n = (size_t)PQgetlength(res, 0, 0);
    if (op->w->redis && redis_is_connected(op->w->redis)) {
        char key[8 + UUID_LEN];
        snprintf(key, sizeof key, "user:%s", op->id);
        redis_command(op->w->redis, cache_set_done, NULL, "SET %s %b EX %d", key, json, n, CACHE_TTL_S);
    }
    reply_json_text(op, 200, json, n);
}

static void read_from_db(struct op *op)
{
    const char *params[] = { op->id };
    op_query(op, SQL_GET_USER, 1, params, read_loaded);
}

static void cache_got(int err, redisReply *reply, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        metrics_counter_add(op->app->cache_error, 1);
        read_from_db(op);
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        metrics_counter_add(op->app->cache_hit, 1);
        reply_json_text(op, 200, reply->str, reply->len);
        return;
    }
    metrics_counter_add(op->app->cache_miss, 1);
    read_from_db(op);
}

/* op->id set: answers 200 with the user, 404, or 503. */
static void read_user(struct op *op)
{
    if (!op->w->redis) {
        read_from_db(op);
        return;
    }
    char key[8 + UUID_LEN];
    snprintf(key, sizeof key, "user:%s", op->id);
    struct wait *wt = op_wait(op);
    if (!wt)
        return;
    if (redis_command(op->w->redis, cache_got, wt, "GET %s", key) < 0) {
        op_unwait(op);
        metrics_counter_add(op->app->cache_error, 1);
        read_from_db(op);
    }
}

/* ---- GET /v1/users/me, GET /v1/users/{id} --------------------------------------- */

static void me_authed(struct service_req *r, const struct jwt_claims *c, void *arg)
{
    struct op *op = arg;
    (void)r;
    take_claims(op, c);
    if (!op->sub[0]) {
        reply_not_found(op);
        return;
    }
    memcpy(op->id, op->sub, sizeof op->id);
    read_user(op);
}

static void get_me(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (op)
        require_jwt(op, me_authed);
}

static void by_id_authed(struct service_req *r, const struct jwt_claims *c, void *arg)
{
    struct op *op = arg;
    (void)r;
    take_claims(op, c);
    if (!op->is_admin && strcmp(op->id, op->sub) != 0) {
        service_reply_error(op->r, 403, "forbidden", "only the user themself or an admin may read this user");
        return;
    }
    read_user(op);
}

static void get_by_id(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    if (!uuid_parse(service_req_param(r, "id"), op->id)) {
        reply_not_found(op);
        return;
    }
    require_jwt(op, by_id_authed);
}

/* ---- PATCH /v1/users/me ------------------------------------------------------- */

static void patch_invalidated(int err, redisReply *reply, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    (void)reply;
    if (err)
        metrics_counter_add(op->app->cache_error, 1);
    reply_json_text(op, 200, op->reply, strlen(op->reply));
}

static void patch_updated(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!res_ok(err, res)) {
        reply_db_error(op, err, res);
        return;
    }
    if (PQntuples(res) == 0) {
        reply_not_found(op);
        return;
    }
    /* Keep the new representation to answer after the cache is cleared. */
    op->reply = arena_strdup(service_req_arena(op->r), str_make(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0)));
    if (!op->reply) {
        service_reply_error(op->r, 503, "unavailable", "out of memory");
        return;
    }
    if (op->w->redis) {
        char key[8 + UUID_LEN];
        snprintf(key, sizeof key, "user:%s", op->id);
        struct wait *wt = op_wait(op);
        if (!wt)
            return;
        if (redis_command(op->w->redis, patch_invalidated, wt, "DEL %s", key) == 0)
            return;
        op_unwait(op);
        metrics_counter_add(op->app->cache_error, 1);
    }
    reply_json_text(op, 200, op->reply, strlen(op->reply));
}

static void patch_authed(struct service_req *r, const struct jwt_claims *c, void *arg)
{
    struct op *op = arg;
    (void)r;
    take_claims(op, c);
    if (!op->sub[0]) {
        reply_not_found(op);
        return;
    }
    memcpy(op->id, op->sub, sizeof op->id);
    const char *params[] = { op->id, op->name };
    op_query(op, SQL_UPDATE_NAME, 2, params, patch_updated);
}

static void patch_me(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    json_t *in;
    if (service_req_json(r, 4, &in) < 0)
        return;
    static const char *const allowed[] = { "name", NULL };
    struct json_error e;
    const char *name;
    if (json_check_only_keys(in, allowed, &e) < 0 || json_get_string(in, "name", true, USER_NAME_MIN, USER_NAME_MAX, &name, &e) < 0) {
        json_decref(in);
        service_reply_json_error(r, &e);
        return;
    }
    op->name = arena_strdup(service_req_arena(r), str_from_cstr(name));
    json_decref(in);
    if (!op->name) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    require_jwt(op, patch_authed);
}

/* ---- GET /v1/users?limit=&cursor= (admin) ------------------------------------------ */

/* The cursor is base64url("<created_at epoch micros>:<id>"): opaque to
 * clients, exact (no float rounding of timestamps), and checked strictly. */
static int parse_cursor(struct str c, struct op *op)
{
    struct buf b;
    buf_init(&b, CURSOR_MAX);
    int rc = -EINVAL;
    if (c.n == 0 || c.n > CURSOR_MAX * 2 || base64url_decode(c, &b) < 0)
        goto out;
    struct str d = buf_str(&b);
    const char *colon = memchr(d.p, ':', d.n);
    if (!colon)
        goto out;
    struct str micros = str_make(d.p, (size_t)(colon - d.p));
    struct str id = str_make(colon + 1, d.n - micros.n - 1);
    uint64_t v;
    if (micros.n == 0 || micros.n >= sizeof op->cursor_micros || str_to_u64(micros, &v) < 0 ||
        v > (uint64_t)INT64_MAX || !uuid_parse(id, op->cursor_id))
        goto out;
    snprintf(op->cursor_micros, sizeof op->cursor_micros, "%llu", (unsigned long long)v);
    op->has_cursor = true;
    rc = 0;
out:
    buf_free(&b);
    return rc;
}

/* limit and cursor from the query string; anything else is refused. */
static int parse_list_query(struct op *op, const char **why)
{
    struct str q = service_req_request(op->r)->query;
    op->limit = LIST_DEFAULT_LIMIT;
    bool seen_limit = false, seen_cursor = false;
    while (q.n) {
        const char *amp = memchr(q.p, '&', q.n);
        struct str kv = str_make(q.p, amp ? (size_t)(amp - q.p) : q.n);
        q = amp ? str_make(amp + 1, q.n - kv.n - 1) : STR_NULL;
        if (kv.n == 0)
            continue;
        const char *eq = memchr(kv.p, '=', kv.n);
        struct str k = str_make(kv.p, eq ? (size_t)(eq - kv.p) : kv.n);
        struct str v = eq ? str_make(eq + 1, kv.n - k.n - 1) : STR_NULL;
        if (str_eq(k, STR_LIT("limit")) && !seen_limit) {
            uint64_t n;
            seen_limit = true;
            if (str_to_u64(v, &n) < 0 || n < 1 || n > LIST_MAX_LIMIT) {
                *why = "limit: expected an integer from 1 to 100";
                return -EINVAL;
            }
            op->limit = (int)n;
        } else if (str_eq(k, STR_LIT("cursor")) && !seen_cursor) {
            seen_cursor = true;
            if (parse_cursor(v, op) < 0) {
                *why = "cursor: not a cursor this service issued";
                return -EINVAL;
            }
        } else {
            *why = "unknown or repeated query parameter (expected limit and cursor)";
            return -EINVAL;
        }
    }
    return 0;
}

static void list_loaded(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!res_ok(err, res)) {
        reply_db_error(op, err, res);
        return;
    }
    int rows = PQntuples(res);
    bool has_more = rows > op->limit;
    if (has_more)
        rows = op->limit;
    struct buf b;
    buf_init(&b, 4 * 1024 * 1024);
    int rc = buf_append_cstr(&b, "{\"items\":[");
    for (int i = 0; rc == 0 && i < rows; i++) {
        if (i)
            rc = buf_append_cstr(&b, ",");
        if (rc == 0)
            rc = buf_append(&b, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    if (rc == 0)
        rc = buf_append_cstr(&b, "],\"next_cursor\":");
    if (rc == 0 && has_more) {
        char raw[CURSOR_MAX];
        int n = snprintf(raw, sizeof raw, "%s:%s", PQgetvalue(res, rows - 1, 1), PQgetvalue(res, rows - 1, 2));
        rc = buf_append_cstr(&b, "\"");
        if (rc == 0 && n > 0 && (size_t)n < sizeof raw)
            rc = base64url_encode(raw, (size_t)n, &b);
        if (rc == 0)
            rc = buf_append_cstr(&b, "\"}");
    } else if (rc == 0) {
        rc = buf_append_cstr(&b, "null}");
    }
    if (rc < 0) {
        buf_free(&b);
        service_reply_error(op->r, 503, "unavailable", "out of memory");
        return;
    }
    service_reply(op->r, 200, "application/json", buf_str(&b));
    buf_free(&b);
}

static void list_authed(struct service_req *r, const struct jwt_claims *c, void *arg)
{
    struct op *op = arg;
    (void)r;
    take_claims(op, c);
    if (!op->is_admin) {
        service_reply_error(op->r, 403, "forbidden", "listing users requires the admin role");
        return;
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", op->limit + 1);
    const char *params[] = { limit, op->has_cursor ? op->cursor_micros : NULL, op->has_cursor ? op->cursor_id : NULL };
    op_query(op, SQL_LIST_USERS, 3, params, list_loaded);
}

static void list_users(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    const char *why;
    if (parse_list_query(op, &why) < 0) {
        service_reply_error(r, 400, "invalid_parameter", why);
        return;
    }
    require_jwt(op, list_authed);
}

/* ---- POST /internal/v1/credentials/verify -------------------------------------------- */

static void reply_bad_credentials(struct op *op)
{
    service_reply_error(op->r, 401, "invalid_credentials", "email or password is incorrect");
}

static void verify_checked(struct hasher_job *j)
{
    struct op *op = op_resume(j->arg);
    bool ok = op && j->rc == 0 && op->is_known;
    hasher_job_free(j);
    if (!op)
        return;
    if (!ok) {
        reply_bad_credentials(op);
        return;
    }
    struct buf b;
    buf_init(&b, 64 * 1024);
    if (buf_appendf(&b, "{\"user_id\":\"%s\",\"roles\":%s}", op->user_id, op->roles_json) < 0) {
        buf_free(&b);
        service_reply_error(op->r, 503, "unavailable", "out of memory");
        return;
    }
    service_reply(op->r, 200, "application/json", buf_str(&b));
    buf_free(&b);
}

/* Runs argon2 against the user's hash, or the dummy one for an unknown
 * email, so that both cost the same. */
static void verify_against(struct op *op, const char *hash)
{
    submit_hash(op, HASHER_VERIFY, op->password, hash, verify_checked);
    sodium_memzero(op->password, strlen(op->password));
}

static void verify_loaded(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!res_ok(err, res)) {
        reply_db_error(op, err, res);
        return;
    }
    const char *hash = op->app->dummy_hash;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 3), "active") == 0) {
        hash = PQgetvalue(res, 0, 1);
        snprintf(op->user_id, sizeof op->user_id, "%s", PQgetvalue(res, 0, 0));
        op->roles_json = arena_strdup(service_req_arena(op->r), str_from_cstr(PQgetvalue(res, 0, 2)));
        op->is_known = op->roles_json != NULL;
    }
    verify_against(op, hash);
}

static void verify_credentials(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    json_t *in;
    if (service_req_json(r, 4, &in) < 0)
        return;
    static const char *const allowed[] = { "email", "password", NULL };
    struct json_error e;
    const char *email, *password, *why;
    if (json_check_only_keys(in, allowed, &e) < 0 || json_get_string(in, "email", true, 1, 320, &email, &e) < 0 ||
        json_get_string(in, "password", true, 1, PASSWORD_MAX, &password, &e) < 0) {
        json_decref(in);
        service_reply_json_error(r, &e);
        return;
    }
    op->password = arena_strdup(service_req_arena(r), str_from_cstr(password));
    bool valid_email = email_normalize(email, op->email, sizeof op->email, &why) == 0;
    json_decref(in);
    if (!op->password) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    if (!valid_email) {
        /* No such user can exist; spend the same time as a wrong password. */
        verify_against(op, op->app->dummy_hash);
        return;
    }
    const char *params[] = { op->email };
    op_query(op, SQL_CREDENTIALS, 1, params, verify_loaded);
}

/* ---- GET /internal/v1/users/{id} ------------------------------------------------------- */

static void internal_loaded(int err, PGresult *res, void *arg)
{
    struct op *op = op_resume(arg);
    if (!op)
        return;
    if (!res_ok(err, res)) {
        reply_db_error(op, err, res);
        return;
    }
    if (PQntuples(res) == 0) {
        reply_not_found(op);
        return;
    }
    reply_json_text(op, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
}

static void internal_user(struct service_req *r, void *arg)
{
    struct op *op = op_new(r, arg);
    if (!op)
        return;
    if (!uuid_parse(service_req_param(r, "id"), op->id)) {
        reply_not_found(op);
        return;
    }
    const char *params[] = { op->id };
    op_query(op, SQL_INTERNAL_USER, 1, params, internal_loaded);
}

int users_routes(struct user_app *app)
{
    struct service *s = app->svc;
    int rc = 0;
    rc |= service_route(s, "POST", "/v1/users", register_user, app);
    rc |= service_route(s, "GET", "/v1/users", list_users, app);
    rc |= service_route(s, "GET", "/v1/users/me", get_me, app);
    rc |= service_route(s, "PATCH", "/v1/users/me", patch_me, app);
    rc |= service_route(s, "GET", "/v1/users/{id}", get_by_id, app);
    rc |= service_route(s, "POST", "/internal/v1/credentials/verify", verify_credentials, app);
    rc |= service_route(s, "GET", "/internal/v1/users/{id}", internal_user, app);
    return rc ? -EINVAL : 0;
}
