/* service_auth.h — bearer JWT authentication for services (zero trust: every
 * service verifies tokens itself, the gateway's check is not trusted).
 *
 * Configuration from the environment:
 *   JWKS_URL       auth-svc's keys: http://127.0.0.1:PORT/.well-known/jwks.json, or
 *                  by name (http://auth-svc/.well-known/jwks.json) when HTTP_PROXY
 *                  is set: then the fetch goes through the proxy in absolute
 *                  form, as service_call does (service_http_proxy)
 *   HTTP_PROXY     the sidecar's outbound listener, http://HOST:PORT (numeric)
 *   JWT_ISSUER     expected "iss" (default https://auth.strata.local)
 *   JWT_AUDIENCE   expected "aud" (default strata)
 *   JWT_LEEWAY_S   clock skew allowed on exp/nbf/iat (default 30)
 * Only ES256 is accepted (auth-svc signs ES256); keys are fetched, cached,
 * refreshed, and refetched (rate-limited) on an unknown kid.
 *
 * One struct service_auth per worker loop, made in service_on_worker's
 * start callback. */
#ifndef STRATA_SERVICE_AUTH_H
#define STRATA_SERVICE_AUTH_H

#include "core/jwt.h"
#include "core/service.h"

struct service_auth;

/* NULL with a message on stderr naming the variable when the environment is
 * invalid (JWKS_URL missing, not an http:// URL, or a name without
 * HTTP_PROXY; HTTP_PROXY not http://HOST:PORT with a numeric host). */
struct service_auth *service_auth_new(struct loop *l, struct http1_client *client);
void service_auth_free(struct service_auth *a);
/* For /readyz: keys have been fetched at least once. */
bool service_auth_is_ready(const struct service_auth *a, char *reason, size_t n);

/* claims are valid during the callback only (copy what you keep into the
 * request's arena). */
typedef void (*service_auth_cb)(struct service_req *r, const struct jwt_claims *claims, void *arg);

/* Verifies "Authorization: Bearer <token>". On success calls cb; on failure
 * answers 401 itself (JSON error "unauthorized" or "invalid_token", with
 * WWW-Authenticate: Bearer error="invalid_token") and cb is not called. */
void service_require_jwt(struct service_auth *a, struct service_req *r, service_auth_cb cb, void *arg);

#endif
