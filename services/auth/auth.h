/* auth.h — auth-svc's internal contracts: configuration, signing keys and
 * access tokens (tokens.c), sessions and refresh tokens in Redis
 * (sessions.c), login throttling (throttle.c), HTTP handlers (handlers.c).
 *
 * Data in Redis (every key has a TTL; nothing secret is stored in clear):
 *   refresh:<sha256 hex of the token>  hash {sid, user_id, used 0|1}
 *   session:<sid>                      hash {user_id, email, roles (JSON),
 *                                            current (hash of the newest refresh
 *                                            token), revoked 0|1, created_at}
 *   login:fail:acct:<sha256 hex of the normalised email>   failure counter
 *   login:fail:ip:<client ip>                              failure counter
 *
 * Threads: one Redis client per worker loop; everything here runs on the
 * worker thread of the request it serves. */
#ifndef STRATA_AUTH_H
#define STRATA_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "core/redis.h"
#include "core/service.h"
#include "core/str.h"

struct auth_config {
    const char *redis_url;
    const char *user_service_url;
    const char *keys_dir;
    const char *issuer;
    const char *audience;
    char jwks_uri[512];
    int64_t access_ttl_s;      /* ACCESS_TTL_S, 900 */
    int64_t refresh_ttl_s;     /* REFRESH_TTL_S, 1209600 (14 days) */
    int64_t max_failures_acct; /* LOGIN_MAX_FAILURES, 5 */
    int64_t max_failures_ip;   /* LOGIN_MAX_FAILURES_IP, 20 */
    int64_t failure_window_s;  /* LOGIN_FAILURE_WINDOW_S, 900 */
    int64_t forwarded_hops;    /* TRUSTED_PROXY_HOPS, 0: the peer address is the client */
    uint32_t user_timeout_ms;  /* USER_SERVICE_TIMEOUT_MS, 3000 */
};

struct auth_metrics {
    struct metrics_counter *login_ok, *login_invalid, *login_throttled, *login_upstream;
    struct metrics_counter *refresh_ok, *refresh_invalid, *refresh_reuse;
    struct metrics_counter *logout;
    struct metrics_counter *store_errors;
};

struct auth_keys;

struct auth {
    struct auth_config cfg;
    struct auth_keys *keys;
    struct redis_client **redis; /* one per worker, made in the worker's start */
    int nworkers;
    struct auth_metrics m;
};

/* Who a token is about: borrowed strings (request arena or a Redis reply). */
struct auth_identity {
    const char *user_id;
    const char *email;
    const char *roles_json; /* a JSON array of strings */
};

/* ---- tokens.c ------------------------------------------------------------ */

/* Loads every ES256 private key (PEM) in dir: regular files, dotfiles
 * skipped (Kubernetes' ..data links), at most AUTH_MAX_KEYS. The newest by
 * mtime (ties: the greatest name) signs; all are published. A file that is
 * not an EC P-256 private key is an error naming it, so a bad secret mount
 * stops the start instead of silently signing with an older key.
 * 0, or <0 with a message in err. */
#define AUTH_MAX_KEYS 16
int auth_keys_load(const char *dir, struct auth_keys **out, char *err, size_t errsz);
void auth_keys_free(struct auth_keys *k);
size_t auth_keys_count(const struct auth_keys *k);
const char *auth_keys_signing_kid(const struct auth_keys *k);
/* The JWK Set of every loaded key, built once at load. */
struct str auth_keys_jwks(const struct auth_keys *k);

/* Appends a signed access token for id (claims iss sub aud exp iat nbf jti
 * sid roles email) to out. 0, -EINVAL (roles_json not an array of strings),
 * -ENOMEM, -EIO. */
int auth_mint_access(const struct auth *a, const struct auth_identity *id, const char *sid, int64_t now,
                     struct buf *out);

/* nbytes from RAND_bytes, base64url without padding, into out (NUL-ended).
 * 0, or -EIO when the CSPRNG fails, -ENOSPC when out is too small. */
int auth_random_b64url(size_t nbytes, char *out, size_t outsz);
/* Lowercase hex SHA-256 of s into out[65]. */
void auth_sha256_hex(struct str s, char out[65]);

/* ---- sessions.c ---------------------------------------------------------- */

/* EVAL script with nkeys keys then the other arguments, on the worker's
 * Redis client; cb as redis_command (called unless this returns <0). */
int auth_eval(struct auth *a, int worker, const char *script, int nkeys, int argc, const char **argv, redis_cb cb,
              void *arg);

enum session_result {
    SESSION_OK = 0,
    SESSION_INVALID, /* unknown, expired or revoked */
    SESSION_REUSE,   /* an already-rotated token: the session is now revoked */
};

/* What a script found; strings borrowed from the reply (valid during the
 * Redis callback only). */
struct session_info {
    enum session_result result;
    const char *sid;
    struct auth_identity id;
};

/* Stores a new session sid for id with its first refresh token hash. */
int session_create(struct auth *a, int worker, const char *sid, const struct auth_identity *id,
                   const char *refresh_hash, redis_cb cb, void *arg);
/* Atomically (one Lua script): checks old_hash, marks it used, binds
 * new_hash as the session's current token. Reuse of a used token revokes
 * the session and deletes its current token. Reply: session_parse. */
int session_rotate(struct auth *a, int worker, const char *old_hash, const char *new_hash, redis_cb cb, void *arg);
/* Revokes the session the token belongs to, whether the token is current or
 * already rotated. Reply: session_parse (INVALID when no session was found). */
int session_revoke(struct auth *a, int worker, const char *hash, redis_cb cb, void *arg);
/* Reads a rotate/revoke script's reply. 0, or -EPROTO (an error reply or an
 * unexpected shape). */
int session_parse(const redisReply *rep, struct session_info *out);

/* ---- throttle.c ---------------------------------------------------------- */

/* Checks the limits and, when under them, counts this attempt as a failure
 * right away (atomically), so that parallel attempts cannot overshoot.
 * acct: hex hash of the normalised email; ip: the client address.
 * Reply: throttle_parse → seconds until the next attempt is allowed (0: go). */
int throttle_check(struct auth *a, int worker, const char *acct, const char *ip, redis_cb cb, void *arg);
/* Gives a counted attempt back: after a success (the account's counter is
 * cleared, the address's decremented) or when user-svc could not answer
 * (both decremented). Fire and forget. */
void throttle_release(struct auth *a, int worker, const char *acct, const char *ip, bool succeeded);
/* An integer reply into *out; -EPROTO otherwise. */
int throttle_parse(const redisReply *rep, int64_t *out);

/* ---- handlers.c ---------------------------------------------------------- */

void auth_login(struct service_req *r, void *arg);
void auth_refresh(struct service_req *r, void *arg);
void auth_logout(struct service_req *r, void *arg);
void auth_jwks(struct service_req *r, void *arg);
void auth_openid_configuration(struct service_req *r, void *arg);

#endif
