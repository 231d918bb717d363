/* handlers.c — the HTTP API: login, refresh, logout, JWKS, OpenID
 * configuration (docs/api/auth.yaml).
 *
 * Every asynchronous step keeps its state in the request's arena: the
 * request lives until it is answered (the framework only aborts a request
 * on a forced shutdown, after SHUTDOWN_TIMEOUT_MS, and every Redis command
 * and user-svc call has a deadline well below that). */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "core/arena.h"
#include "core/log.h"

/* 254: RFC 5321's path limit, as user-svc enforces; 1024 bytes of password
 * is past any passphrase and keeps argon2's input bounded. */
#define EMAIL_MAX 254
#define PASSWORD_MAX 1024
/* Our refresh tokens are 43 characters; 512 leaves room for a format change
 * while bounding what a client makes us hash. */
#define REFRESH_TOKEN_MAX 512

static const char INVALID_CREDENTIALS[] = "email or password is incorrect";
static const char INVALID_REFRESH[] = "the refresh token is invalid, expired or revoked";

static void reply_store_error(struct service_req *r, struct auth *a, int err)
{
    metrics_counter_add(a->m.store_errors, 1);
    log_warn("session store failed", LOG_ERRNO("error", err), LOG_STR("request_id", service_req_id(r)));
    service_reply_error(r, 503, "unavailable", "the session store is unavailable; retry later");
}

static void add_no_store(struct service_req *r)
{
    /* RFC 6749 §5.1: token responses must not be cached. */
    service_req_add_header(r, "Cache-Control", "no-store");
    service_req_add_header(r, "Pragma", "no-cache");
}

/* The token response shared by login and refresh. */
static void reply_tokens(struct service_req *r, struct auth *a, const struct auth_identity *id, const char *sid,
                         const char *refresh)
{
    struct buf tok;
    buf_init(&tok, 16 * 1024);
    int rc = auth_mint_access(a, id, sid, (int64_t)time(NULL), &tok);
    if (rc < 0) {
        buf_free(&tok);
        log_error("signing the access token failed", LOG_ERRNO("error", rc),
                  LOG_STR("request_id", service_req_id(r)));
        service_reply_error(r, 503, "unavailable", "could not issue a token; retry later");
        return;
    }
    json_t *body = json_pack("{s:s%, s:s, s:s, s:I}", "access_token", buf_rptr(&tok), buf_len(&tok),
                             "refresh_token", refresh, "token_type", "Bearer", "expires_in",
                             (json_int_t)a->cfg.access_ttl_s);
    buf_free(&tok);
    if (!body) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    add_no_store(r);
    service_reply_json(r, 200, body);
}

/* A fresh refresh token and its hash (what Redis stores). */
static int new_refresh(char token[64], char hash[65])
{
    int rc = auth_random_b64url(32, token, 64);
    if (rc == 0)
        auth_sha256_hex(str_from_cstr(token), hash);
    return rc;
}

/* {refresh_token} bodies (refresh, logout). Answers on error and returns <0. */
static int read_refresh_token(struct service_req *r, char hash[65])
{
    json_t *in;
    if (service_req_json(r, 4, &in) < 0)
        return -1;
    struct json_error err;
    const char *tok;
    static const char *const allowed[] = { "refresh_token", NULL };
    if (json_check_only_keys(in, allowed, &err) < 0 ||
        json_get_string(in, "refresh_token", true, 1, REFRESH_TOKEN_MAX, &tok, &err) < 0) {
        json_decref(in);
        service_reply_json_error(r, &err);
        return -1;
    }
    auth_sha256_hex(str_from_cstr(tok), hash);
    json_decref(in);
    return 0;
}

/* ---- client address ------------------------------------------------------ */

static bool is_ip(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* The client's address for the per-IP limit. Behind TRUSTED_PROXY_HOPS
 * proxies that each append to X-Forwarded-For, the client is that many
 * entries from the right; anything further left was written by the client
 * and is not trusted. Without hops (or a usable header), the peer. */
static const char *client_ip(struct service_req *r, const struct auth *a)
{
    const char *peer = service_req_peer_ip(r);
    if (a->cfg.forwarded_hops <= 0)
        return peer;
    struct str xff = service_req_header(r, "X-Forwarded-For");
    if (!xff.p || xff.n == 0 || xff.n > 2048)
        return peer;
    int64_t skip = a->cfg.forwarded_hops - 1;
    size_t end = xff.n;
    for (;;) {
        size_t start = end;
        while (start > 0 && xff.p[start - 1] != ',')
            start--;
        if (skip == 0 || start == 0) {
            struct str e = str_trim_ows(str_make(xff.p + start, end - start));
            char *ip = arena_strdup(service_req_arena(r), e);
            return ip && is_ip(ip) ? ip : peer;
        }
        skip--;
        end = start - 1;
    }
}

/* ---- POST /v1/auth/login ------------------------------------------------- */

struct login {
    struct service_req *r;
    struct auth *a;
    int worker;
    char *email;    /* normalised: trimmed, ASCII lower case (as user-svc stores it) */
    char *password; /* wiped once sent */
    size_t password_len;
    const char *ip;
    char acct[65];
    struct auth_identity id;
    char sid[32];
    char refresh[64];
    char refresh_hash[65];
};

static void login_session_created(int err, redisReply *reply, void *arg)
{
    struct login *l = arg;
    if (!err && reply->type == REDIS_REPLY_ERROR)
        err = -EPROTO;
    if (err) {
        reply_store_error(l->r, l->a, err);
        return;
    }
    metrics_counter_add(l->a->m.login_ok, 1);
    log_info("login", LOG_STR("user_id", l->id.user_id), LOG_STR("sid", l->sid),
             LOG_STR("request_id", service_req_id(l->r)));
    reply_tokens(l->r, l->a, &l->id, l->sid, l->refresh);
}

/* user-svc's {user_id, roles} into l->id (arena copies). */
static int read_verified(struct login *l, struct str body)
{
    json_t *v = json_loadb(body.p, body.n, JSON_REJECT_DUPLICATES, NULL);
    json_t *uid = json_object_get(v, "user_id");
    json_t *roles = json_object_get(v, "roles");
    struct arena *ar = service_req_arena(l->r);
    int rc = -EPROTO;
    char num[32];
    if (json_is_string(uid) && json_string_length(uid) > 0 && json_string_length(uid) <= 128)
        l->id.user_id = arena_strdup(ar, str_make(json_string_value(uid), json_string_length(uid)));
    else if (json_is_integer(uid)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(uid));
        l->id.user_id = arena_strdup(ar, str_from_cstr(num));
    } else
        goto out;
    if (!roles)
        roles = json_array();
    else
        json_incref(roles);
    size_t i;
    json_t *e;
    bool ok = json_is_array(roles) && json_array_size(roles) <= 64;
    json_array_foreach(roles, i, e) ok = ok && json_is_string(e);
    char *rj = ok ? json_dumps(roles, JSON_COMPACT) : NULL;
    json_decref(roles);
    if (!rj)
        goto out;
    l->id.roles_json = arena_strdup(ar, str_from_cstr(rj));
    free(rj);
    l->id.email = l->email;
    rc = l->id.user_id && l->id.roles_json ? 0 : -ENOMEM;
out:
    json_decref(v);
    return rc;
}

static void login_verified(struct service_req *r, int err, const struct http1_client_response *resp, void *arg)
{
    struct login *l = arg;
    struct auth *a = l->a;
    if (err) {
        throttle_release(a, l->worker, l->acct, l->ip, false);
        metrics_counter_add(a->m.login_upstream, 1);
        service_reply_upstream_error(r, err, "user-service");
        return;
    }
    if (resp->status == 200) {
        if (read_verified(l, resp->body) < 0) {
            throttle_release(a, l->worker, l->acct, l->ip, false);
            metrics_counter_add(a->m.login_upstream, 1);
            log_error("user-service answered the credential check with an unexpected body",
                      LOG_STR("request_id", service_req_id(r)));
            service_reply_error(r, 502, "bad_gateway", "user-service answered unexpectedly");
            return;
        }
        throttle_release(a, l->worker, l->acct, l->ip, true);
        int rc = auth_random_b64url(16, l->sid, sizeof l->sid);
        if (rc == 0)
            rc = new_refresh(l->refresh, l->refresh_hash);
        if (rc == 0)
            rc = session_create(a, l->worker, l->sid, &l->id, l->refresh_hash, login_session_created, l);
        if (rc < 0)
            reply_store_error(r, a, rc);
        return;
    }
    /* 401: unknown email or wrong password (user-svc does not say which).
     * 400/422: an email user-svc cannot even parse: no such account, and
     * answered the same way so that the two cannot be told apart. The
     * failure was counted when the attempt was let through. */
    if (resp->status == 401 || resp->status == 400 || resp->status == 422) {
        metrics_counter_add(a->m.login_invalid, 1);
        service_reply_error(r, 401, "invalid_credentials", INVALID_CREDENTIALS);
        return;
    }
    throttle_release(a, l->worker, l->acct, l->ip, false);
    metrics_counter_add(a->m.login_upstream, 1);
    log_warn("user-service refused the credential check", LOG_INT("status", resp->status),
             LOG_STR("request_id", service_req_id(r)));
    if (resp->status >= 500 || resp->status == 429)
        service_reply_error(r, 503, "upstream_unavailable", "user-service is unavailable");
    else
        service_reply_error(r, 502, "bad_gateway", "user-service answered unexpectedly");
}

static void login_checked(int err, redisReply *reply, void *arg)
{
    struct login *l = arg;
    struct service_req *r = l->r;
    int64_t wait = 0;
    if (!err)
        err = throttle_parse(reply, &wait);
    if (err) {
        OPENSSL_cleanse(l->password, l->password_len);
        reply_store_error(r, l->a, err);
        return;
    }
    if (wait > 0) {
        OPENSSL_cleanse(l->password, l->password_len);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)wait);
        metrics_counter_add(l->a->m.login_throttled, 1);
        log_info("login throttled", LOG_STR("ip", l->ip), LOG_INT("retry_after_s", wait),
                 LOG_STR("request_id", service_req_id(r)));
        service_req_add_header(r, "Retry-After", ra);
        service_reply_error(r, 429, "rate_limited", "too many failed logins; retry later");
        return;
    }
    json_t *b = json_pack("{s:s, s:s%}", "email", l->email, "password", l->password, l->password_len);
    OPENSSL_cleanse(l->password, l->password_len);
    char *body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!body) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    struct service_call_opts o = { .method = "POST",
                                   .path = "/internal/v1/credentials/verify",
                                   .body = str_from_cstr(body),
                                   .timeout_ms = l->a->cfg.user_timeout_ms };
    int rc = service_call(r, l->a->cfg.user_service_url, &o, login_verified, l);
    /* The client copied the body at send time. */
    OPENSSL_cleanse(body, strlen(body));
    free(body);
    if (rc < 0) {
        throttle_release(l->a, l->worker, l->acct, l->ip, false);
        metrics_counter_add(l->a->m.login_upstream, 1);
        service_reply_upstream_error(r, rc, "user-service");
    }
}

void auth_login(struct service_req *r, void *arg)
{
    struct auth *a = arg;
    json_t *in;
    if (service_req_json(r, 4, &in) < 0)
        return;
    struct json_error err;
    const char *email, *password;
    static const char *const allowed[] = { "email", "password", NULL };
    if (json_check_only_keys(in, allowed, &err) < 0 ||
        json_get_string(in, "email", true, 1, EMAIL_MAX, &email, &err) < 0 ||
        json_get_string(in, "password", true, 1, PASSWORD_MAX, &password, &err) < 0) {
        json_decref(in);
        service_reply_json_error(r, &err);
        return;
    }
    struct arena *ar = service_req_arena(r);
    struct login *l = arena_alloc(ar, sizeof *l);
    if (l) {
        memset(l, 0, sizeof *l);
        l->email = arena_strdup(ar, str_trim_ows(str_from_cstr(email)));
        l->password_len = strlen(password);
        l->password = arena_strdup(ar, str_make(password, l->password_len));
    }
    json_decref(in);
    if (!l || !l->email || !l->password) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    for (char *p = l->email; *p; p++)
        *p = str_lower_ascii(*p);
    l->r = r;
    l->a = a;
    l->worker = service_req_worker(r);
    l->ip = client_ip(r, a);
    auth_sha256_hex(str_from_cstr(l->email), l->acct);
    int rc = throttle_check(a, l->worker, l->acct, l->ip, login_checked, l);
    if (rc < 0) {
        OPENSSL_cleanse(l->password, l->password_len);
        reply_store_error(r, a, rc);
    }
}

/* ---- POST /v1/auth/refresh ----------------------------------------------- */

struct refresh {
    struct service_req *r;
    struct auth *a;
    char refresh[64];
    char hash[65];
};

static void refresh_rotated(int err, redisReply *reply, void *arg)
{
    struct refresh *f = arg;
    struct service_req *r = f->r;
    struct session_info si;
    if (!err)
        err = session_parse(reply, &si);
    if (err) {
        reply_store_error(r, f->a, err);
        return;
    }
    switch (si.result) {
    case SESSION_OK:
        metrics_counter_add(f->a->m.refresh_ok, 1);
        reply_tokens(r, f->a, &si.id, si.sid, f->refresh);
        return;
    case SESSION_REUSE:
        /* A rotated token came back: it was stolen, or the legitimate client
         * replayed it. Either way one of the two copies is not the user's, so
         * the whole session goes (OAuth 2.0 Security BCP §4.14.2). */
        metrics_counter_add(f->a->m.refresh_reuse, 1);
        log_warn("refresh token reuse: session revoked", LOG_STR("sid", si.sid), LOG_STR("user_id", si.id.user_id),
                 LOG_STR("request_id", service_req_id(r)));
        break;
    case SESSION_INVALID:
        metrics_counter_add(f->a->m.refresh_invalid, 1);
        break;
    }
    service_req_add_header(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    service_reply_error(r, 401, "invalid_refresh_token", INVALID_REFRESH);
}

void auth_refresh(struct service_req *r, void *arg)
{
    struct auth *a = arg;
    char old_hash[65];
    if (read_refresh_token(r, old_hash) < 0)
        return;
    struct refresh *f = arena_alloc(service_req_arena(r), sizeof *f);
    if (!f) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    f->r = r;
    f->a = a;
    int rc = new_refresh(f->refresh, f->hash);
    if (rc == 0)
        rc = session_rotate(a, service_req_worker(r), old_hash, f->hash, refresh_rotated, f);
    if (rc < 0)
        reply_store_error(r, a, rc);
}

/* ---- POST /v1/auth/logout ------------------------------------------------ */

struct logout {
    struct service_req *r;
    struct auth *a;
};

static void logout_done(int err, redisReply *reply, void *arg)
{
    struct logout *o = arg;
    struct session_info si;
    if (!err)
        err = session_parse(reply, &si);
    if (err) {
        reply_store_error(o->r, o->a, err);
        return;
    }
    if (si.result != SESSION_INVALID) {
        metrics_counter_add(o->a->m.logout, 1);
        log_info("logout", LOG_STR("sid", si.sid), LOG_STR("user_id", si.id.user_id),
                 LOG_STR("request_id", service_req_id(o->r)));
    }
    /* 204 even when nothing was found (RFC 7009 §2.2): logout is
     * idempotent, and the answer must not tell whether a token exists. */
    service_reply(o->r, 204, NULL, STR_NULL);
}

void auth_logout(struct service_req *r, void *arg)
{
    struct auth *a = arg;
    char hash[65];
    if (read_refresh_token(r, hash) < 0)
        return;
    struct logout *o = arena_alloc(service_req_arena(r), sizeof *o);
    if (!o) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    o->r = r;
    o->a = a;
    int rc = session_revoke(a, service_req_worker(r), hash, logout_done, o);
    if (rc < 0)
        reply_store_error(r, a, rc);
}

/* ---- discovery ------------------------------------------------------------- */

void auth_jwks(struct service_req *r, void *arg)
{
    struct auth *a = arg;
    /* 5 min: verifiers refetch (rate-limited) on an unknown kid, so a key
     * that starts signing after a restart is picked up at once anyway. */
    service_req_add_header(r, "Cache-Control", "public, max-age=300");
    service_reply(r, 200, "application/json", auth_keys_jwks(a->keys));
}

void auth_openid_configuration(struct service_req *r, void *arg)
{
    struct auth *a = arg;
    json_t *body = json_pack("{s:s, s:s, s:[s]}", "issuer", a->cfg.issuer, "jwks_uri", a->cfg.jwks_uri,
                             "id_token_signing_alg_values_supported", "ES256");
    if (!body) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    service_req_add_header(r, "Cache-Control", "public, max-age=300");
    service_reply_json(r, 200, body);
}
