/* authn.h — JWT authentication at the gateway, with Istio
 * RequestAuthentication semantics.
 *
 * The token comes from "Authorization: Bearer <token>" (scheme
 * case-insensitive, exactly one Authorization field). A route in mode
 * OPTIONAL lets a request without a token through; a token that is present
 * but invalid is refused on every route (401), as Istio does. A valid
 * token's sub and the claims named in the provider's claims_to_headers come
 * back for the engine to forward.
 *
 * Verification is core/jwt.h's: jwt_verify against the provider's
 * jwks_cache (fetch, refresh, rate-limited refetch on an unknown kid). What
 * is refused before any signature check: tokens over max_token_bytes, not
 * three base64url segments, "alg" none, HS* or outside the provider's
 * algorithms. Then the signature, exp/nbf/iat with the provider's leeway,
 * iss == issuer, and aud containing one of audiences (when configured).
 *
 * Verified tokens are remembered per worker (an ES256 verification costs
 * ~90 µs; a hit, a keyed BLAKE2b hash of the token and a hash-table
 * lookup, under a microsecond): 4096 entries, least recently used out,
 * keyed by provider and a 256-bit keyed hash of the whole token string,
 * each valid until the token's exp + leeway and only while the provider's
 * key set is the one it was verified with (any fetch that replaces the
 * set, rotation or periodic refresh, invalidates it).
 *
 * Threads: one struct authn per worker loop, used on that loop's thread
 * only. The providers (and the config they belong to) must outlive it.
 * Errors are negative errno values. */
#ifndef STRATA_PROXY_AUTHN_H
#define STRATA_PROXY_AUTHN_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/http1_client.h"
#include "core/http1_parse.h"
#include "core/loop.h"
#include "core/str.h"
#include "proxy/proxy_config.h"

struct authn;
struct authn_pending;

/* Why a request was refused; AUTHN_OK when it passes. The names (for
 * x-strata-reason and metric labels) are authn_reason_name's. */
enum authn_reason {
    AUTHN_OK,
    AUTHN_MISSING,          /* "jwt_missing": no token on a required route (401) */
    AUTHN_MALFORMED,        /* "jwt_malformed": not "Bearer <JWS>", bad segments or JSON (401) */
    AUTHN_EXPIRED,          /* "jwt_expired" (401) */
    AUTHN_NOT_YET_VALID,    /* "jwt_not_yet_valid": nbf or iat in the future (401) */
    AUTHN_BAD_SIGNATURE,    /* "jwt_bad_signature" (401) */
    AUTHN_BAD_ISSUER,       /* "jwt_bad_issuer" (401) */
    AUTHN_BAD_AUDIENCE,     /* "jwt_bad_audience" (401) */
    AUTHN_ALG_NOT_ALLOWED,  /* "jwt_alg_not_allowed": none, HS*, or not in the allowlist (401) */
    AUTHN_TOO_LARGE,        /* "jwt_too_large": longer than max_token_bytes (401) */
    AUTHN_UNKNOWN_KID,      /* "jwt_unknown_kid": no such key even after a refetch (401) */
    AUTHN_JWKS_UNAVAILABLE, /* "jwks_unavailable": no key set could be fetched (503) */
    AUTHN_UNAVAILABLE,      /* "jwt_unavailable": out of memory (503) */
    AUTHN_REASON_COUNT
};

/* The stable snake_case code of a reason ("jwt_expired"); "" for AUTHN_OK.
 * Static string. */
const char *authn_reason_name(enum authn_reason r);

struct authn_result {
    int status;               /* 0: pass (verified, or no token on an optional route); 401; 503 */
    enum authn_reason code;   /* AUTHN_OK when status is 0 */
    const char *reason;       /* authn_reason_name(code); NULL when status is 0 */
    const char *message;      /* a sentence safe to show a client (no token bytes); NULL when status is 0 */
    /* Claims to forward, in claims_to_headers order: names are the
     * provider's header strings, values are in the arena: strings as they
     * are, numbers and booleans as their JSON text, arrays of those joined
     * with ",". Claims that are
     * absent, objects, arrays holding anything but strings, numbers and
     * booleans, longer than AUTHN_MAX_CLAIM_VALUE or holding control
     * characters are not forwarded. */
    struct http1_header *headers;
    size_t nheaders;
    struct str sub;           /* the verified token's sub (in the arena); empty when absent or
                               * unsafe as above */
};

/* 1 KiB: a claim value longer than this is not forwarded, nor is such a
 * sub reported. Header values of that size are already unusual, and
 * rate-limit keys and logs need far less. */
#define AUTHN_MAX_CLAIM_VALUE 1024

/* Runs on the loop, later than authn_check, exactly once (unless cancelled).
 * r and what it points to in the arena are valid during the call; the
 * arena's memory stays the caller's. */
typedef void (*authn_cb)(const struct authn_result *r, void *arg);

/* One jwks_cache per provider (fetching starts now, with client, which
 * must outlive a), and an empty token cache. providers[0..n) are borrowed.
 * NULL on allocation failure or a jwks_uri jwks_cache_new refuses. */
struct authn *authn_new(struct loop *l, struct http1_client *client, const struct proxy_jwt_provider *providers,
                        size_t n);
/* Frees a and its caches; checks still pending are dropped and their
 * callbacks never run. NULL-tolerant. Allowed inside an authn_cb (when a
 * request's completion drops the last reference to a config): the memory
 * then goes once the delivery has unwound. */
void authn_free(struct authn *a);

/* Authenticates a request on a route using provider p (one of the
 * providers given to authn_new) in mode. headers are the request's fields.
 * Returns
 *   1 when answered at once in *res (no token, malformed, too large, a
 *     cache hit, any verdict reached with the current key set, or 503
 *     when 1024 checks already wait for keys);
 *   0 when pending: the token's kid is not in the current key set (or no
 *     set has been fetched yet), so the answer waits for a fetch. cb(r, arg)
 *     runs later on the loop, never inside this call; *pending is set for
 *     authn_cancel. ar must stay valid until cb runs or the check is
 *     cancelled;
 *   -EINVAL (p is not one of a's providers), -ENOMEM: nothing pending, no
 *     callback; answer 503.
 * res's memory (headers, sub, message) is allocated in ar. mode
 * PROXY_JWT_OFF passes at once. */
int authn_check(struct authn *a, const struct proxy_jwt_provider *p, enum proxy_jwt_mode mode,
                const struct http1_header *headers, size_t nheaders, struct arena *ar, struct authn_result *res,
                authn_cb cb, void *arg, struct authn_pending **pending);
/* Cancels a pending check: its callback never runs. NULL-tolerant; a no-op
 * once the callback has run. Safe from inside any callback. */
void authn_cancel(struct authn_pending *p);

/* Verified-token cache counters, for tests and metrics. */
struct authn_stats {
    uint64_t hits;      /* checks answered from the cache */
    uint64_t misses;    /* checks with a token of acceptable size that the cache did not answer */
    uint64_t inserts;
    uint64_t evictions; /* live entries pushed out to make room (least recently used) */
    uint64_t dropped;   /* entries found expired, or verified with a key set since replaced */
    size_t entries;     /* held now */
};
const struct authn_stats *authn_stats(const struct authn *a);

/* For tests: the wall clock (seconds since the epoch) used for exp, nbf,
 * iat and cache validity; 0 → time(NULL) (the default). */
void authn_set_now(struct authn *a, int64_t now);

#endif
