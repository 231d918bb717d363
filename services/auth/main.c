/* strata-auth-svc: logins, ES256 access tokens, refresh-token sessions in
 * Redis, JWKS. Configuration from the environment (docs/api/auth.yaml and
 * the table below); an invalid value stops the start naming the variable.
 *
 *   REDIS_URL                required  redis://host:port[/db]
 *   USER_SERVICE_URL         required  http://user-service (through HTTP_PROXY) or http://127.0.0.1:PORT
 *   JWT_KEYS_DIR             required  directory of ES256 PEM private keys; the newest signs
 *   JWT_ISSUER               https://auth.strata.local
 *   JWT_AUDIENCE             strata
 *   ACCESS_TTL_S             900
 *   REFRESH_TTL_S            1209600
 *   LOGIN_MAX_FAILURES       5     per account per window
 *   LOGIN_MAX_FAILURES_IP    20    per client address per window
 *   LOGIN_FAILURE_WINDOW_S   900
 *   TRUSTED_PROXY_HOPS       0     proxies in front that append to X-Forwarded-For
 *   USER_SERVICE_TIMEOUT_MS  3000
 * plus the framework's (LISTEN_ADDR, PORT, WORKERS, LOG_LEVEL, OTEL_*, ...). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "core/http1_client.h"
#include "core/log.h"
#include "core/net.h"

static __thread int tls_worker = -1;

static const char *env_str(const char *var, const char *def)
{
    const char *v = getenv(var);
    return v && *v ? v : def;
}

static int env_i64(const char *var, int64_t def, int64_t min, int64_t max, int64_t *out)
{
    const char *v = getenv(var);
    uint64_t x;
    *out = def;
    if (!v || !*v)
        return 0;
    if (str_to_u64(str_from_cstr(v), &x) < 0 || x < (uint64_t)min || x > (uint64_t)max) {
        fprintf(stderr, "%s: expected an integer in %" PRId64 "..%" PRId64 ", got \"%s\"\n", var, min, max, v);
        return -EINVAL;
    }
    *out = (int64_t)x;
    return 0;
}

static int read_config(struct auth_config *c)
{
    int64_t t;
    c->redis_url = env_str("REDIS_URL", NULL);
    c->user_service_url = env_str("USER_SERVICE_URL", NULL);
    c->keys_dir = env_str("JWT_KEYS_DIR", NULL);
    c->issuer = env_str("JWT_ISSUER", "https://auth.strata.local");
    c->audience = env_str("JWT_AUDIENCE", "strata");
    if (!c->redis_url) {
        fprintf(stderr, "REDIS_URL is required (redis://host:port)\n");
        return -EINVAL;
    }
    if (!c->keys_dir) {
        fprintf(stderr, "JWT_KEYS_DIR is required (a directory of ES256 PEM private keys)\n");
        return -EINVAL;
    }
    struct http1_url u;
    if (!c->user_service_url || http1_url_parse(str_from_cstr(c->user_service_url), &u) < 0 || u.is_tls) {
        fprintf(stderr, "USER_SERVICE_URL: expected http://host[:port], got \"%s\"\n",
                c->user_service_url ? c->user_service_url : "");
        return -EINVAL;
    }
    struct net_addr na;
    if (!env_str("HTTP_PROXY", env_str("http_proxy", NULL)) && net_addr_from_host(u.host, u.port, &na) < 0) {
        fprintf(stderr, "USER_SERVICE_URL: host \"%.*s\" is a name; without HTTP_PROXY it must be numeric\n",
                STR_FMT(u.host));
        return -EINVAL;
    }
    size_t il = strlen(c->issuer);
    if (il == 0 || il > 400) {
        fprintf(stderr, "JWT_ISSUER: expected 1..400 characters\n");
        return -EINVAL;
    }
    snprintf(c->jwks_uri, sizeof c->jwks_uri, "%.*s/.well-known/jwks.json",
             (int)(c->issuer[il - 1] == '/' ? il - 1 : il), c->issuer);
    /* ACCESS_TTL_S ≤ 1 day: a bearer token cannot be revoked before it
     * expires, so a long one would defeat logout. */
    if (env_i64("ACCESS_TTL_S", 900, 30, 86400, &c->access_ttl_s) < 0 ||
        env_i64("REFRESH_TTL_S", 1209600, 60, 31536000, &c->refresh_ttl_s) < 0 ||
        env_i64("LOGIN_MAX_FAILURES", 5, 1, 1000000, &c->max_failures_acct) < 0 ||
        env_i64("LOGIN_MAX_FAILURES_IP", 20, 1, 1000000, &c->max_failures_ip) < 0 ||
        env_i64("LOGIN_FAILURE_WINDOW_S", 900, 1, 86400, &c->failure_window_s) < 0 ||
        env_i64("TRUSTED_PROXY_HOPS", 0, 0, 10, &c->forwarded_hops) < 0 ||
        env_i64("USER_SERVICE_TIMEOUT_MS", 3000, 100, 60000, &t) < 0)
        return -EINVAL;
    c->user_timeout_ms = (uint32_t)t;
    return 0;
}

static void worker_start(struct loop *l, int worker, void *arg)
{
    struct auth *a = arg;
    tls_worker = worker;
    /* 500 ms per command: the scripts are O(1); a Redis slower than that is
     * down for practical purposes, and the login still answers within the
     * caller's patience (3 s user-svc deadline + two commands). */
    struct redis_config rc = { .url = a->cfg.redis_url, .command_timeout_ms = 500, .connect_timeout_ms = 1000 };
    a->redis[worker] = redis_client_new(l, &rc);
    if (!a->redis[worker])
        log_error("could not create the Redis client", LOG_INT("worker", worker));
}

static void worker_stop(struct loop *l, int worker, void *arg)
{
    struct auth *a = arg;
    (void)l;
    redis_client_free(a->redis[worker]);
    a->redis[worker] = NULL;
}

/* Runs on the worker serving /readyz: its own Redis connection. */
static int redis_check(void *arg, char *reason, size_t n)
{
    struct auth *a = arg;
    int w = tls_worker;
    if (w < 0 || w >= a->nworkers || !a->redis[w] || !redis_is_connected(a->redis[w])) {
        snprintf(reason, n, "not connected to Redis");
        return -1;
    }
    return 0;
}

static int keys_check(void *arg, char *reason, size_t n)
{
    struct auth *a = arg;
    if (auth_keys_count(a->keys) == 0) {
        snprintf(reason, n, "no signing key loaded");
        return -1;
    }
    return 0;
}

static int register_metrics(struct auth_metrics *m)
{
    struct metrics_registry *reg = metrics_default();
    struct metrics_family *login, *refresh, *logout, *store;
    if (!reg ||
        metrics_register_counter(reg, "strata_auth_logins_total", "Login attempts by outcome.",
                                 METRICS_LABELS("result"), &login) < 0 ||
        metrics_register_counter(reg, "strata_auth_refreshes_total", "Refresh-token rotations by outcome.",
                                 METRICS_LABELS("result"), &refresh) < 0 ||
        metrics_register_counter(reg, "strata_auth_logouts_total", "Sessions revoked by logout.", NULL, &logout) < 0 ||
        metrics_register_counter(reg, "strata_auth_store_errors_total",
                                 "Requests failed because Redis did not answer.", NULL, &store) < 0)
        return -1;
    m->login_ok = metrics_counter_with(login, "success");
    m->login_invalid = metrics_counter_with(login, "invalid_credentials");
    m->login_throttled = metrics_counter_with(login, "throttled");
    m->login_upstream = metrics_counter_with(login, "upstream_error");
    m->refresh_ok = metrics_counter_with(refresh, "rotated");
    m->refresh_invalid = metrics_counter_with(refresh, "invalid");
    m->refresh_reuse = metrics_counter_with(refresh, "reuse_detected");
    m->logout = metrics_counter_with(logout);
    m->store_errors = metrics_counter_with(store);
    return 0;
}

int main(void)
{
    static struct auth a;
    int rc = 1;
    struct service_config scfg = { .name = "auth", .listen = "127.0.0.1:8082" };
    struct service *s = service_new(&scfg);
    if (!s)
        return 2;
    if (read_config(&a.cfg) < 0) {
        service_free(s);
        return 2;
    }
    char err[512];
    if (auth_keys_load(a.cfg.keys_dir, &a.keys, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        service_free(s);
        return 2;
    }
    log_info("signing keys loaded", LOG_UINT("keys", auth_keys_count(a.keys)),
             LOG_STR("signing_kid", auth_keys_signing_kid(a.keys)));
    a.nworkers = service_workers(s);
    a.redis = calloc((size_t)a.nworkers, sizeof *a.redis);
    if (!a.redis || register_metrics(&a.m) < 0) {
        fprintf(stderr, "out of memory\n");
        goto out;
    }
    service_route(s, "POST", "/v1/auth/login", auth_login, &a);
    service_route(s, "POST", "/v1/auth/refresh", auth_refresh, &a);
    service_route(s, "POST", "/v1/auth/logout", auth_logout, &a);
    service_route(s, "GET", "/.well-known/jwks.json", auth_jwks, &a);
    service_route(s, "GET", "/.well-known/openid-configuration", auth_openid_configuration, &a);
    service_add_check(s, "redis", redis_check, &a);
    service_add_check(s, "signing_key", keys_check, &a);
    service_on_worker(s, worker_start, worker_stop, &a);
    rc = service_run(s) < 0 ? 1 : 0;
out:
    service_free(s);
    auth_keys_free(a.keys);
    free(a.redis);
    return rc;
}
