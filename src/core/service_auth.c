#include "core/service_auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/http1_client.h"
#include "core/log.h"
#include "core/net.h"

struct service_auth {
    struct jwks_cache *cache;
    char issuer[256];
    char audience[256];
    const char *audiences[2];
    int64_t leeway_s;
};

struct pending {
    struct service_auth *auth;
    struct service_req *r;
    service_auth_cb cb;
    void *arg;
};

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* JWKS_URL names auth-svc by Service name under the mesh
 * ("http://auth-svc/.well-known/jwks.json"): with HTTP_PROXY set (the
 * sidecar) the fetch goes there in absolute form, as service_call's calls
 * do; without it the host must be numeric or localhost (no blocking DNS on
 * a loop thread). */
static int jwks_target(const char *url, struct net_addr *proxy, bool *via_proxy)
{
    struct http1_url u;
    struct net_addr direct;
    if (!url || !*url) {
        fprintf(stderr, "JWKS_URL: required (auth-svc's http://HOST:PORT/.well-known/jwks.json)\n");
        return -EINVAL;
    }
    if (http1_url_parse(str_from_cstr(url), &u) < 0 || u.is_tls) {
        fprintf(stderr, "JWKS_URL: expected an http:// URL, got \"%s\"\n", url);
        return -EINVAL;
    }
    int rc = service_http_proxy(proxy);
    if (rc < 0)
        return rc;
    *via_proxy = rc > 0;
    if (!*via_proxy && net_addr_from_host(u.host, u.port, &direct) < 0) {
        fprintf(stderr, "JWKS_URL: host \"%.*s\" is a name; without HTTP_PROXY it must be numeric or localhost\n",
                STR_FMT(u.host));
        return -EINVAL;
    }
    return 0;
}

struct service_auth *service_auth_new(struct loop *l, struct http1_client *client)
{
    const char *url = getenv("JWKS_URL");
    struct net_addr proxy;
    bool via_proxy = false;
    if (jwks_target(url, &proxy, &via_proxy) < 0)
        return NULL;
    uint64_t leeway = 30;
    const char *lv = getenv("JWT_LEEWAY_S");
    if (lv && *lv && (str_to_u64(str_from_cstr(lv), &leeway) < 0 || leeway > 3600)) {
        fprintf(stderr, "JWT_LEEWAY_S: expected 0..3600, got \"%s\"\n", lv);
        return NULL;
    }
    struct service_auth *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    snprintf(a->issuer, sizeof a->issuer, "%s", env_or("JWT_ISSUER", "https://auth.strata.local"));
    snprintf(a->audience, sizeof a->audience, "%s", env_or("JWT_AUDIENCE", "strata"));
    a->audiences[0] = a->audience;
    a->leeway_s = leeway ? (int64_t)leeway : JWT_LEEWAY_NONE;
    a->cache = jwks_cache_new_via(l, client, url, via_proxy ? &proxy : NULL, 300, 30);
    if (!a->cache) {
        fprintf(stderr, "JWKS_URL: cannot use \"%s\" (out of memory, or its host is too long)\n", url);
        free(a);
        return NULL;
    }
    return a;
}

void service_auth_free(struct service_auth *a)
{
    if (!a)
        return;
    jwks_cache_free(a->cache);
    free(a);
}

bool service_auth_is_ready(const struct service_auth *a, char *reason, size_t n)
{
    if (jwks_cache_is_ready(a->cache))
        return true;
    snprintf(reason, n, "signing keys not fetched yet from JWKS_URL");
    return false;
}

static void deny(struct service_req *r, int status, const char *code, const char *message, bool invalid_token)
{
    service_req_add_header(r, "WWW-Authenticate",
                           invalid_token ? "Bearer realm=\"strata\", error=\"invalid_token\"" : "Bearer realm=\"strata\"");
    service_reply_error(r, status, code, message);
}

static void verified(int rc, const struct jwt_claims *claims, const struct jwt_error *err, void *arg)
{
    struct pending *p = arg;
    service_req_on_abort(p->r, NULL, NULL);
    if (rc == 0) {
        p->cb(p->r, claims, p->arg);
        return;
    }
    int status = jwt_error_status(err->reason);
    if (status == 401)
        deny(p->r, 401, "invalid_token", err->message, true);
    else
        service_reply_error(p->r, 503, "auth_unavailable", err->message);
}

static void aborted(struct service_req *r, void *arg)
{
    struct pending *p = arg;
    (void)r;
    jwks_cache_cancel(p->auth->cache, verified, p);
}

void service_require_jwt(struct service_auth *a, struct service_req *r, service_auth_cb cb, void *arg)
{
    struct str h = service_req_header(r, "Authorization");
    if (!h.n) {
        deny(r, 401, "unauthorized", "a bearer token is required", false);
        return;
    }
    if (h.n < 7 || !str_eq_nocase(str_make(h.p, 7), STR_LIT("Bearer "))) {
        deny(r, 401, "invalid_token", "the Authorization header must be \"Bearer <token>\"", true);
        return;
    }
    struct str token = str_trim_ows(str_make(h.p + 7, h.n - 7));
    struct pending *p = arena_alloc(service_req_arena(r), sizeof *p);
    if (!p) {
        service_reply_error(r, 503, "out_of_memory", "out of memory");
        return;
    }
    *p = (struct pending){ a, r, cb, arg };
    struct jwt_verify_opts o = { .algs = JWT_ALG_ES256, .issuer = a->issuer, .audiences = a->audiences,
                                 .leeway_s = a->leeway_s };
    int rc = jwks_cache_verify(a->cache, token, &o, verified, p);
    if (rc < 0) {
        service_reply_error(r, 503, "auth_unavailable", "too many requests waiting for signing keys");
        return;
    }
    service_req_on_abort(r, aborted, p);
}
