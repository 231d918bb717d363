/* jwt.h — JSON Web Tokens (RFC 7519) as compact JWS (RFC 7515), JSON Web
 * Key Sets (RFC 7517), and an asynchronous JWKS cache for services.
 *
 * Built on OpenSSL 3 EVP (signatures, constant-time where it matters) and
 * jansson. What it accepts, on purpose:
 *   - algorithms ES256, RS256 and EdDSA (Ed25519) only, each in the caller's
 *     allowlist AND matching the type of the key the kid names: never
 *     "none", never HS* (no HMAC with a public key used as a secret);
 *   - header and payload must be JSON objects (strict parse: no duplicate
 *     keys, valid UTF-8); a "crit" header is refused (we implement no
 *     extension); base64url strictly without padding or foreign bytes;
 *   - signatures of exact length (ES256: 64 bytes raw r||s, Ed25519: 64,
 *     RS256: the modulus size); RSA keys of at least 2048 bits;
 *   - exp/nbf/iat must be JSON numbers when present; a leeway absorbs clock
 *     skew; sizes are bounded (token, kid, JWKS document, number of keys).
 *
 * Ownership: a struct jwks is immutable and reference counted, so a new set
 * can replace the old one while verifications still hold the old. Signers
 * are owned by their creator. jwt_claims owns the decoded payload.
 * Thread-safety: jwks_parse, jwt_verify, jwt_sign, base64url_* keep no
 * global state; a jwks may be shared across threads (its refcount is
 * atomic). A jwks_cache belongs to one loop and is used on its thread only.
 * Errors: 0 on success, negative errno-style values on failure. */
#ifndef STRATA_JWT_H
#define STRATA_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/str.h"

struct loop;
struct http1_client;
struct net_addr;
struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

/* Bitmask, so that allowlists are a plain OR. */
enum jwt_alg {
    JWT_ALG_ES256 = 1, /* ECDSA P-256 + SHA-256, signature raw r||s (64 bytes) */
    JWT_ALG_RS256 = 2, /* RSASSA-PKCS1-v1_5 + SHA-256, modulus ≥ 2048 bits */
    JWT_ALG_EDDSA = 4, /* Ed25519 (RFC 8037), signature 64 bytes */
};

/* The JOSE name of one algorithm ("ES256", "RS256", "EdDSA"), or "" when alg
 * is not exactly one known bit. Static string. */
const char *jwt_alg_name(enum jwt_alg alg);

/* 8 KiB: default bound on a compact token (jwt_verify_opts.max_token_bytes
 * 0). Our ES256 access tokens are ~600 bytes; 8 KiB is also the common
 * header-line limit, so anything larger could not have arrived in one. */
#define JWT_DEFAULT_MAX_TOKEN_BYTES 8192
/* 30 s: default clock-skew leeway for exp/nbf/iat (leeway_s 0). */
#define JWT_DEFAULT_LEEWAY_S 30
/* Pass as leeway_s for no leeway at all. */
#define JWT_LEEWAY_NONE (-1)
/* 256 KiB: the largest JWKS document jwks_parse accepts, and 64 keys in it
 * (a rotation keeps 2-3 keys; 64 leaves room for several issuers). */
#define JWKS_MAX_DOCUMENT_BYTES (256 * 1024)
#define JWKS_MAX_KEYS 64
/* kids longer than this (bytes) are refused: in tokens (malformed) and in
 * JWKS entries (skipped). A thumbprint kid is 43 bytes. */
#define JWT_MAX_KID_BYTES 127

/* ---- base64url (RFC 4648 §5) without padding --------------------------- */

/* Appends the unpadded base64url form of p[0..n) to out. 0, -ENOBUFS or
 * -ENOMEM (all or nothing). */
int base64url_encode(const void *p, size_t n, struct buf *out);
/* Appends the decoded bytes of in to out. Strict: only [A-Za-z0-9_-], no
 * '=', no whitespace, length mod 4 ≠ 1, and the unused low bits of the last
 * character must be zero (one encoding per byte string). -EINVAL on any
 * violation (out unchanged), -ENOBUFS / -ENOMEM from the buffer. */
int base64url_decode(struct str in, struct buf *out);

/* ---- key sets ----------------------------------------------------------- */

struct jwks; /* refcounted, immutable set of public keys by kid */

/* Parses a JWK Set {"keys":[...]} (RFC 7517). Usable keys: EC P-256 (x, y),
 * RSA (n, e; modulus ≥ 2048 bits), OKP Ed25519 (x). "use" other than "sig"
 * and an "alg" that does not fit the key type (or that we do not support)
 * make a key unusable; unusable keys and keys without a kid, with an
 * over-long kid, or with a kid already seen are skipped, not fatal.
 * A document larger than JWKS_MAX_DOCUMENT_BYTES, that is not a JSON object
 * with a "keys" array, or that has no usable key is an error: -EINVAL (or
 * -ENOMEM) with a message in err (if errsz > 0). On success *out is a new
 * reference (jwks_unref it). Thread-safe. */
int jwks_parse(struct str json, struct jwks **out, char *err, size_t errsz);
/* Takes a reference; returns k. Thread-safe. NULL-tolerant. */
struct jwks *jwks_ref(struct jwks *k);
/* Drops a reference; the last one frees the set. Thread-safe. NULL-tolerant. */
void jwks_unref(struct jwks *k);
/* Whether the set has a usable key with this kid. */
bool jwks_has_kid(const struct jwks *k, const char *kid);
/* Number of usable keys in the set. */
size_t jwks_count(const struct jwks *k);

/* ---- signing ------------------------------------------------------------ */

struct jwt_signer; /* a private key (ES256, or for tests RS256 / EdDSA) + kid */

/* Loads a PEM private key (PKCS#8 or traditional, unencrypted) from path.
 * EC P-256 signs ES256; RSA ≥ 2048 bits signs RS256 and Ed25519 signs EdDSA
 * (auth-svc uses ES256 only). kid = RFC 7638 JWK thumbprint of the public
 * key (SHA-256, base64url), so it is stable across restarts and replicas.
 * 0, or -errno / -EINVAL with a message in err. Caller frees *out. */
int jwt_signer_load_pem(const char *path, struct jwt_signer **out, char *err, size_t errsz);
/* The same from a key already in memory (tests, key generated at run time).
 * Takes its own reference on pkey (the caller keeps its own). kid NULL →
 * the thumbprint. 0, -EINVAL (unsupported key) or -ENOMEM. */
int jwt_signer_from_pkey(struct evp_pkey_st *pkey, const char *kid, struct jwt_signer **out, char *err,
                         size_t errsz);
/* The key id (NUL-terminated, owned by s). */
const char *jwt_signer_kid(const struct jwt_signer *s);
/* The algorithm this signer produces. */
enum jwt_alg jwt_signer_alg(const struct jwt_signer *s);
/* NULL-tolerant. */
void jwt_signer_free(struct jwt_signer *s);

/* Appends a compact JWS of claims (a JSON object; not modified) to out:
 * header {"alg":"ES256","typ":"JWT","kid":"..."}. ECDSA signatures are
 * converted from DER to raw r||s (64 bytes). The caller sets the claims
 * (iss, sub, aud, exp, iat, nbf, jti, ...): nothing is added here.
 * 0; -EINVAL (claims not an object), -ENOMEM, -ENOBUFS, -EIO (OpenSSL).
 * Thread-safe for distinct out buffers. */
int jwt_sign(const struct jwt_signer *s, const json_t *claims, struct buf *out);

/* Appends {"keys":[...]} with the public JWK of each signer (kty, crv/n/e,
 * x/y, kid, use "sig", alg), for /.well-known/jwks.json. 0, -ENOMEM,
 * -ENOBUFS, -EIO. */
int jwks_public_json(const struct jwt_signer *const *signers, size_t n, struct buf *out);

/* ---- verification ------------------------------------------------------- */

/* Zero-initialise, then set what you need: every zero field means its
 * default, so `(struct jwt_verify_opts){ .issuer = ..., .audiences = ... }`
 * is a sound configuration. */
struct jwt_verify_opts {
    unsigned algs;                 /* enum jwt_alg bits accepted; 0 → JWT_ALG_ES256 */
    const char *issuer;            /* "iss" must equal this; NULL → not checked */
    const char *const *audiences;  /* NULL-terminated; the token's "aud" (a string or an array
                                    * of strings) must contain one of them; NULL → not checked */
    int64_t leeway_s;              /* 0 → JWT_DEFAULT_LEEWAY_S; < 0 (JWT_LEEWAY_NONE) → none */
    int64_t now;                   /* seconds since the epoch; 0 → time(NULL) */
    size_t max_token_bytes;        /* 0 → JWT_DEFAULT_MAX_TOKEN_BYTES */
    bool allow_missing_exp;        /* false (default): a token without "exp" is refused */
};

struct jwt_claims {
    json_t *payload;               /* owned; freed by jwt_claims_free */
    /* Borrowed from payload (NULL when absent or not a string): */
    const char *sub, *iss, *jti, *sid, *email;
    int64_t exp, iat, nbf;         /* 0 when absent (fractions truncated) */
    const json_t *roles;           /* the "roles" array, or NULL */
    char kid[JWT_MAX_KID_BYTES + 1];
    enum jwt_alg alg;
};

enum jwt_error_reason {
    JWT_E_MALFORMED = 1,   /* not three base64url segments of JSON objects, bad claim types, crit */
    JWT_E_TOO_LARGE,       /* longer than max_token_bytes */
    JWT_E_ALG_NOT_ALLOWED, /* alg not in the allowlist, unknown, or not matching the key type */
    JWT_E_UNKNOWN_KID,     /* no kid, or no key with it */
    JWT_E_BAD_SIGNATURE,
    JWT_E_EXPIRED,         /* exp + leeway <= now, or exp missing when required */
    JWT_E_NOT_YET_VALID,   /* nbf - leeway > now, or iat - leeway > now */
    JWT_E_BAD_ISSUER,
    JWT_E_BAD_AUDIENCE,
    JWT_E_NOMEM,
    JWT_E_KEYS_UNAVAILABLE, /* jwks_cache: no key set could be fetched (→ 503, not 401) */
    JWT_E_BUSY,             /* never set here: for callers to report jwks_cache_verify's -EBUSY (→ 503) */
};

struct jwt_error {
    enum jwt_error_reason reason;
    char message[160];     /* safe to return to a client; no token bytes in it */
};

/* A stable snake_case code for a reason ("token_expired", "invalid_token",
 * ...), for logs and metrics labels. Static string. */
const char *jwt_error_code(enum jwt_error_reason reason);
/* 401 for token problems, 503 for NOMEM / KEYS_UNAVAILABLE / BUSY. */
int jwt_error_status(enum jwt_error_reason reason);

/* Verifies a compact JWS token against keys with opts (NULL → all
 * defaults). Checks, in order: size, shape, header (alg allowlisted, no
 * crit, kid known, alg matches the key), signature, then claims (exp, nbf,
 * iat, iss, aud). On success returns 0 and fills *out (jwt_claims_free it).
 * On failure returns -EINVAL (-ENOMEM for JWT_E_NOMEM), *out is zeroed and
 * err (if not NULL) says why. Thread-safe. */
int jwt_verify(struct str token, const struct jwks *keys, const struct jwt_verify_opts *o, struct jwt_claims *out,
               struct jwt_error *err);
/* Frees the payload and zeroes c. NULL-tolerant, idempotent. */
void jwt_claims_free(struct jwt_claims *c);
/* Whether the "roles" array contains role (exact string match). */
bool jwt_claims_has_role(const struct jwt_claims *c, const char *role);

/* The kid of a token's header without verifying anything, for routing a
 * token to a key set. 0 and kid copied (NUL-terminated), or -EINVAL. */
int jwt_peek_kid(struct str token, char *kid, size_t kidsz);

/* ---- JWKS cache (one per loop) ----------------------------------------- */

struct jwks_cache;

/* Creates a cache that fetches url (http://host:port/path: plain HTTP, as
 * the sidecar carries mTLS; numeric host or localhost) with client, at once and then every refresh_s seconds
 * (0 → 300). A token whose kid is unknown triggers a refetch, at most once
 * per min_refetch_s seconds (0 → 30), so that a flood of bogus kids cannot
 * hammer the issuer; a failed fetch is retried with backoff (1 s doubling
 * to refresh_s). The client must outlive the cache. NULL on bad url or
 * allocation failure. Loop thread only. */
struct jwks_cache *jwks_cache_new(struct loop *l, struct http1_client *client, const char *url, unsigned refresh_s,
                                  unsigned min_refetch_s);
/* The same through an HTTP proxy (the sidecar's outbound listener, from
 * HTTP_PROXY): every fetch connects to proxy (numeric) and sends url as an
 * absolute-form target with Host = the url's authority, so url's host may
 * be a name that only the proxy resolves ("http://auth-svc/.well-known/jwks.json").
 * proxy NULL: jwks_cache_new. */
struct jwks_cache *jwks_cache_new_via(struct loop *l, struct http1_client *client, const char *url,
                                      const struct net_addr *proxy, unsigned refresh_s, unsigned min_refetch_s);
/* Cancels the fetch in flight and pending verifications (their callbacks do
 * not run). NULL-tolerant. Not from inside a jwks_verify_cb of this cache. */
void jwks_cache_free(struct jwks_cache *c);

/* rc 0: claims valid (only during the callback; copy what you keep).
 * rc < 0: err says why (claims NULL). */
typedef void (*jwks_verify_cb)(int rc, const struct jwt_claims *claims, const struct jwt_error *err, void *arg);

/* Verifies token: at once when the kid is in the current set, else after a
 * (rate-limited) refetch; a kid still unknown then → JWT_E_UNKNOWN_KID, no
 * key set at all → JWT_E_KEYS_UNAVAILABLE. The token is copied; opts are
 * copied but the strings they point to (issuer, audiences) must stay valid
 * until the callback. cb runs later on the loop, never inside this call.
 * 0, or -ENOMEM / -EBUSY (1024 verifications already pending: refuse with
 * 503) with no callback. Cancel with jwks_cache_cancel when the request
 * goes away. */
int jwks_cache_verify(struct jwks_cache *c, struct str token, const struct jwt_verify_opts *o, jwks_verify_cb cb,
                      void *arg);
/* Cancels every pending verification with this cb and arg: their callbacks
 * will not run. Safe from inside any callback. */
void jwks_cache_cancel(struct jwks_cache *c, jwks_verify_cb cb, void *arg);
/* Whether a key set has been fetched (for /readyz). */
bool jwks_cache_is_ready(const struct jwks_cache *c);
/* The current set (a new reference; jwks_unref it) or NULL, for callers
 * that verify synchronously with jwt_verify. */
struct jwks *jwks_cache_keys(const struct jwks_cache *c);

struct jwks_cache_stats {
    uint64_t fetches;        /* requests sent */
    uint64_t fetch_errors;   /* transport errors, non-200, unparsable documents */
    uint64_t refetch_limited; /* unknown kids answered without a fetch (rate limit) */
    uint64_t verified, rejected;
};
const struct jwks_cache_stats *jwks_cache_stats(const struct jwks_cache *c);

#endif
