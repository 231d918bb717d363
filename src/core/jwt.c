/* jwt.c — compact JWS tokens (RFC 7515/7519): base64url, signing and
 * verification on OpenSSL 3 EVP. Keys and key sets live in jwks.c.
 *
 * Verification order matters: everything before the signature check looks
 * only at the header (alg, crit, kid), and the payload is parsed only once
 * the signature holds, so unauthenticated bytes reach the JSON parser only
 * through a small, bounded header. */
#include "core/jwt.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "core/json.h"
#include "core/jwt_internal.h"

/* Nesting in a JOSE header: the deepest legitimate one ("jwk" inside) is 2. */
#define HEADER_MAX_DEPTH 4
/* Payload nesting: claims are flat plus small arrays/objects. */
#define PAYLOAD_MAX_DEPTH 16

/* ---- names and codes ---------------------------------------------------- */

const char *jwt_alg_name(enum jwt_alg alg)
{
    switch (alg) {
    case JWT_ALG_ES256: return "ES256";
    case JWT_ALG_RS256: return "RS256";
    case JWT_ALG_EDDSA: return "EdDSA";
    }
    return "";
}

enum jwt_alg jwt_alg_from_name(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "ES256") == 0)
        return JWT_ALG_ES256;
    if (strcmp(s, "RS256") == 0)
        return JWT_ALG_RS256;
    if (strcmp(s, "EdDSA") == 0)
        return JWT_ALG_EDDSA;
    return 0;
}

const char *jwt_error_code(enum jwt_error_reason reason)
{
    switch (reason) {
    case JWT_E_MALFORMED: return "invalid_token";
    case JWT_E_TOO_LARGE: return "token_too_large";
    case JWT_E_ALG_NOT_ALLOWED: return "alg_not_allowed";
    case JWT_E_UNKNOWN_KID: return "unknown_kid";
    case JWT_E_BAD_SIGNATURE: return "bad_signature";
    case JWT_E_EXPIRED: return "token_expired";
    case JWT_E_NOT_YET_VALID: return "token_not_yet_valid";
    case JWT_E_BAD_ISSUER: return "bad_issuer";
    case JWT_E_BAD_AUDIENCE: return "bad_audience";
    case JWT_E_NOMEM: return "unavailable";
    case JWT_E_KEYS_UNAVAILABLE: return "keys_unavailable";
    case JWT_E_BUSY: return "unavailable";
    }
    return "invalid_token";
}

int jwt_error_status(enum jwt_error_reason reason)
{
    switch (reason) {
    case JWT_E_NOMEM:
    case JWT_E_KEYS_UNAVAILABLE:
    case JWT_E_BUSY:
        return 503;
    default:
        return 401;
    }
}

/* ---- base64url ---------------------------------------------------------- */

static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64url_encode(const void *p, size_t n, struct buf *out)
{
    const unsigned char *s = p;
    size_t len = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
    int rc = buf_reserve(out, len + 1);
    if (rc < 0)
        return rc;
    char *d = buf_wptr(out);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = b64url_alphabet[v >> 18];
        *d++ = b64url_alphabet[(v >> 12) & 63];
        *d++ = b64url_alphabet[(v >> 6) & 63];
        *d++ = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = b64url_alphabet[v >> 18];
        *d++ = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = b64url_alphabet[v >> 18];
        *d++ = b64url_alphabet[(v >> 12) & 63];
        *d++ = b64url_alphabet[(v >> 6) & 63];
    }
    buf_commit(out, len);
    return 0;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int base64url_decode(struct str in, struct buf *out)
{
    if (in.n % 4 == 1)
        return -EINVAL;
    size_t len = in.n / 4 * 3 + (in.n % 4 ? in.n % 4 - 1 : 0);
    int rc = buf_reserve(out, len + 1);
    if (rc < 0)
        return rc;
    unsigned char *d = (unsigned char *)buf_wptr(out);
    const unsigned char *s = (const unsigned char *)in.p;
    uint32_t acc = 0;
    int bits = 0;
    size_t w = 0;
    for (size_t i = 0; i < in.n; i++) {
        int v = b64url_value(s[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[w++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero: "QQ" and "QR" would both decode to "A". */
    if (acc != 0)
        return -EINVAL;
    buf_commit(out, w);
    return 0;
}

/* DER ECDSA-Sig-Value → raw r||s, each left-padded to 32 bytes (RFC 7518 §3.4). */
static int ecdsa_der_to_raw(const unsigned char *der, size_t n, unsigned char raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)n);
    if (!sig)
        return -EIO;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    int ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok ? 0 : -EIO;
}

/* raw r||s → DER, for EVP verification. Returns the DER length or <0. */
static int ecdsa_raw_to_der(const unsigned char raw[64], unsigned char **der)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
        ECDSA_SIG_free(sig);
        BN_free(r);
        BN_free(s);
        return -ENOMEM;
    }
    *der = NULL;
    int n = i2d_ECDSA_SIG(sig, der);
    ECDSA_SIG_free(sig);
    return n > 0 ? n : -ENOMEM;
}

static const EVP_MD *alg_md(enum jwt_alg alg) { return alg == JWT_ALG_EDDSA ? NULL : EVP_sha256(); }

int jwt_sign(const struct jwt_signer *s, const json_t *claims, struct buf *out)
{
    if (!json_is_object(claims))
        return -EINVAL;
    size_t start = out->wpos;
    struct buf hdr;
    unsigned char *sig = NULL;
    char *payload = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc;

    buf_init(&hdr, 512);
    rc = buf_appendf(&hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":", jwt_alg_name(s->alg));
    rc = rc ?: json_append_string(&hdr, str_from_cstr(s->kid));
    rc = rc ?: buf_append_cstr(&hdr, "}");
    rc = rc ?: base64url_encode(buf_rptr(&hdr), buf_len(&hdr), out);
    rc = rc ?: buf_append_cstr(out, ".");
    if (rc < 0)
        goto out;
    size_t plen = json_dumpb(claims, NULL, 0, JSON_COMPACT);
    if (plen == 0 || !(payload = malloc(plen))) {
        rc = plen ? -ENOMEM : -EINVAL;
        goto out;
    }
    json_dumpb(claims, payload, plen, JSON_COMPACT);
    rc = base64url_encode(payload, plen, out);
    if (rc < 0)
        goto out;

    /* out's memory may move while appending: take the signing input after. */
    size_t siglen = 0;
    rc = -EIO;
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestSignInit(ctx, NULL, alg_md(s->alg), NULL, s->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)out->data + start, out->wpos - start) != 1)
        goto out;
    if (!(sig = malloc(siglen))) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)out->data + start, out->wpos - start) != 1)
        goto out;
    unsigned char raw[64];
    const unsigned char *final = sig;
    if (s->alg == JWT_ALG_ES256) {
        if (ecdsa_der_to_raw(sig, siglen, raw) < 0)
            goto out;
        final = raw;
        siglen = sizeof raw;
    }
    rc = buf_append_cstr(out, ".");
    rc = rc ?: base64url_encode(final, siglen, out);
out:
    if (rc < 0) {
        out->wpos = start;
        ERR_clear_error();
    }
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(payload);
    buf_free(&hdr);
    return rc;
}

/* ---- verification ------------------------------------------------------- */

static int fail(struct jwt_error *err, enum jwt_error_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct jwt_error *err, enum jwt_error_reason reason, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->reason = reason;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return reason == JWT_E_NOMEM ? -ENOMEM : -EINVAL;
}

/* Splits a compact JWS into its three segments: exactly two dots. */
static bool split_token(struct str t, struct str seg[3])
{
    const char *d1 = memchr(t.p, '.', t.n);
    if (!d1)
        return false;
    const char *rest = d1 + 1, *end = t.p + t.n;
    const char *d2 = memchr(rest, '.', (size_t)(end - rest));
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return false;
    seg[0] = str_make(t.p, (size_t)(d1 - t.p));
    seg[1] = str_make(rest, (size_t)(d2 - rest));
    seg[2] = str_make(d2 + 1, (size_t)(end - d2 - 1));
    return seg[0].n && seg[1].n && seg[2].n;
}

/* Decodes a base64url segment holding a JSON object. -EINVAL / -ENOMEM. */
static int decode_json_object(struct str seg, size_t depth, json_t **out)
{
    struct buf b;
    json_t *v = NULL;
    *out = NULL;
    buf_init(&b, seg.n + 4);
    int rc = base64url_decode(seg, &b);
    if (rc == 0)
        rc = json_parse_body(buf_str(&b), depth, &v, NULL);
    buf_free(&b);
    if (rc == 0 && !json_is_object(v)) {
        json_decref(v);
        return -EINVAL;
    }
    if (rc == -ENOBUFS)
        rc = -EINVAL;
    *out = v;
    return rc;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* A NumericDate claim: absent (0, *present false), a number (truncated), or
 * anything else (-EINVAL). */
static int numeric_date(const json_t *payload, const char *name, int64_t *out, bool *present)
{
    const json_t *v = json_object_get(payload, name);
    *out = 0;
    *present = v != NULL;
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* ±2^62: far past any date, and exactly convertible. */
        if (!isfinite(d) || d > 4.6e18 || d < -4.6e18)
            return -EINVAL;
        *out = (int64_t)d;
        return 0;
    }
    return -EINVAL;
}

/* A string claim: absent (NULL), a string, or anything else (-EINVAL). */
static int string_claim(const json_t *payload, const char *name, bool strict, const char **out)
{
    const json_t *v = json_object_get(payload, name);
    *out = json_string_value(v);
    return v && !*out && strict ? -EINVAL : 0;
}

static bool audience_matches(const json_t *aud, const char *const *want)
{
    if (json_is_string(aud)) {
        for (const char *const *w = want; *w; w++)
            if (strcmp(json_string_value(aud), *w) == 0)
                return true;
        return false;
    }
    size_t i;
    const json_t *a;
    json_array_foreach(aud, i, a) {
        for (const char *const *w = want; *w; w++)
            if (strcmp(json_string_value(a), *w) == 0)
                return true;
    }
    return false;
}

static int check_signature(const struct jwk_key *key, struct str signing_input, struct str sig_seg,
                           struct jwt_error *err)
{
    struct buf sig;
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx = NULL;
    size_t want = key->alg == JWT_ALG_RS256 ? (size_t)EVP_PKEY_get_size(key->pkey) : 64;
    int rc;

    /* Bound before decoding: a signature segment longer than the key's
     * signature can be cannot be valid. */
    if (sig_seg.n != (want * 4 + 2) / 3)
        return fail(err, JWT_E_BAD_SIGNATURE, "signature has the wrong length for %s", jwt_alg_name(key->alg));
    buf_init(&sig, want + 4);
    rc = base64url_decode(sig_seg, &sig);
    if (rc < 0 || buf_len(&sig) != want) {
        rc = rc == -ENOMEM ? fail(err, JWT_E_NOMEM, "out of memory")
                           : fail(err, JWT_E_MALFORMED, "signature is not base64url");
        goto out;
    }
    const unsigned char *s = (const unsigned char *)buf_rptr(&sig);
    size_t slen = want;
    if (key->alg == JWT_ALG_ES256) {
        int n = ecdsa_raw_to_der(s, &der);
        if (n < 0) {
            rc = fail(err, JWT_E_NOMEM, "out of memory");
            goto out;
        }
        s = der;
        slen = (size_t)n;
    }
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(ctx, NULL, alg_md(key->alg), NULL, key->pkey) != 1) {
        rc = fail(err, JWT_E_NOMEM, "cannot set up verification");
        goto out;
    }
    if (EVP_DigestVerify(ctx, s, slen, (const unsigned char *)signing_input.p, signing_input.n) != 1) {
        rc = fail(err, JWT_E_BAD_SIGNATURE, "signature does not verify");
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    buf_free(&sig);
    return rc;
}

static int check_header(struct str seg, unsigned algs, const struct jwks *keys, char *kid, size_t kidsz,
                        const struct jwk_key **key_out, enum jwt_alg *alg_out, struct jwt_error *err)
{
    json_t *h = NULL;
    int rc = decode_json_object(seg, HEADER_MAX_DEPTH, &h);
    if (rc == -ENOMEM)
        return fail(err, JWT_E_NOMEM, "out of memory");
    if (rc < 0)
        return fail(err, JWT_E_MALFORMED, "header is not a base64url JSON object");
    const char *alg_s = json_string_value(json_object_get(h, "alg"));
    const char *kid_s = json_string_value(json_object_get(h, "kid"));
    const json_t *kid_v = json_object_get(h, "kid");
    enum jwt_alg alg = jwt_alg_from_name(alg_s);
    const struct jwk_key *key;
    if (!alg_s) {
        rc = fail(err, JWT_E_MALFORMED, "header has no alg");
    } else if (json_object_get(h, "crit")) {
        /* RFC 7515 §4.1.11: we understand no extension, so none may be critical. */
        rc = fail(err, JWT_E_MALFORMED, "header has crit extensions we do not implement");
    } else if (!alg || !(alg & algs)) {
        rc = fail(err, JWT_E_ALG_NOT_ALLOWED, "alg is not allowed");
    } else if (kid_v && !kid_s) {
        rc = fail(err, JWT_E_MALFORMED, "kid is not a string");
    } else if (!kid_s || !kid_s[0]) {
        rc = fail(err, JWT_E_UNKNOWN_KID, "header has no kid");
    } else if (strlen(kid_s) > JWT_MAX_KID_BYTES) {
        rc = fail(err, JWT_E_MALFORMED, "kid is longer than %d bytes", JWT_MAX_KID_BYTES);
    } else if (!(key = jwks_find(keys, kid_s))) {
        rc = fail(err, JWT_E_UNKNOWN_KID, "no key with this kid");
    } else if (key->alg != alg) {
        rc = fail(err, JWT_E_ALG_NOT_ALLOWED, "alg %s does not match the key type (%s)", jwt_alg_name(alg),
                  jwt_alg_name(key->alg));
    } else {
        snprintf(kid, kidsz, "%s", kid_s);
        *key_out = key;
        *alg_out = alg;
        rc = 0;
    }
    json_decref(h);
    return rc;
}

static int check_claims(struct jwt_claims *c, const struct jwt_verify_opts *o, struct jwt_error *err)
{
    const json_t *p = c->payload;
    bool has_exp, has_nbf, has_iat;
    int64_t now = o->now ? o->now : (int64_t)time(NULL);
    int64_t leeway = o->leeway_s == 0 ? JWT_DEFAULT_LEEWAY_S : o->leeway_s < 0 ? 0 : o->leeway_s;

    if (numeric_date(p, "exp", &c->exp, &has_exp) < 0 || numeric_date(p, "nbf", &c->nbf, &has_nbf) < 0 ||
        numeric_date(p, "iat", &c->iat, &has_iat) < 0)
        return fail(err, JWT_E_MALFORMED, "exp, nbf and iat must be numbers");
    if (string_claim(p, "iss", true, &c->iss) < 0 || string_claim(p, "sub", true, &c->sub) < 0 ||
        string_claim(p, "jti", true, &c->jti) < 0)
        return fail(err, JWT_E_MALFORMED, "iss, sub and jti must be strings");
    string_claim(p, "sid", false, &c->sid);
    string_claim(p, "email", false, &c->email);
    const json_t *aud = json_object_get(p, "aud");
    if (aud && !json_is_string(aud)) {
        size_t i;
        const json_t *a;
        if (!json_is_array(aud))
            return fail(err, JWT_E_MALFORMED, "aud must be a string or an array of strings");
        json_array_foreach(aud, i, a) {
            if (!json_is_string(a))
                return fail(err, JWT_E_MALFORMED, "aud must be a string or an array of strings");
        }
    }
    const json_t *roles = json_object_get(p, "roles");
    if (roles) {
        size_t i;
        const json_t *r;
        if (!json_is_array(roles))
            return fail(err, JWT_E_MALFORMED, "roles must be an array of strings");
        json_array_foreach(roles, i, r) {
            if (!json_is_string(r))
                return fail(err, JWT_E_MALFORMED, "roles must be an array of strings");
        }
        c->roles = roles;
    }

    if (!has_exp && !o->allow_missing_exp)
        return fail(err, JWT_E_EXPIRED, "token has no exp");
    /* RFC 7519 §4.1.4: valid strictly before exp. */
    if (has_exp && sat_add(c->exp, leeway) <= now)
        return fail(err, JWT_E_EXPIRED, "token expired");
    if (has_nbf && c->nbf > sat_add(now, leeway))
        return fail(err, JWT_E_NOT_YET_VALID, "token is not valid yet (nbf)");
    if (has_iat && c->iat > sat_add(now, leeway))
        return fail(err, JWT_E_NOT_YET_VALID, "token was issued in the future (iat)");
    if (o->issuer && (!c->iss || strcmp(c->iss, o->issuer) != 0))
        return fail(err, JWT_E_BAD_ISSUER, "issuer is not accepted");
    if (o->audiences && (!aud || !audience_matches(aud, o->audiences)))
        return fail(err, JWT_E_BAD_AUDIENCE, "audience is not accepted");
    return 0;
}

int jwt_verify(struct str token, const struct jwks *keys, const struct jwt_verify_opts *o, struct jwt_claims *out,
               struct jwt_error *err)
{
    static const struct jwt_verify_opts defaults;
    struct str seg[3];
    const struct jwk_key *key = NULL;
    enum jwt_alg alg = 0;
    int rc;

    if (!o)
        o = &defaults;
    memset(out, 0, sizeof *out);
    if (err)
        memset(err, 0, sizeof *err);
    size_t max = o->max_token_bytes ? o->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
    if (token.n > max)
        return fail(err, JWT_E_TOO_LARGE, "token is longer than %zu bytes", max);
    if (!token.p || !split_token(token, seg))
        return fail(err, JWT_E_MALFORMED, "token is not three non-empty dot-separated segments");

    rc = check_header(seg[0], o->algs ? o->algs : JWT_ALG_ES256, keys, out->kid, sizeof out->kid, &key, &alg, err);
    if (rc < 0)
        goto fail_out;
    rc = check_signature(key, str_make(token.p, seg[0].n + 1 + seg[1].n), seg[2], err);
    if (rc < 0)
        goto fail_out;
    out->alg = alg;

    rc = decode_json_object(seg[1], PAYLOAD_MAX_DEPTH, &out->payload);
    if (rc < 0) {
        rc = rc == -ENOMEM ? fail(err, JWT_E_NOMEM, "out of memory")
                           : fail(err, JWT_E_MALFORMED, "payload is not a base64url JSON object");
        goto fail_out;
    }
    rc = check_claims(out, o, err);
    if (rc < 0)
        goto fail_out;
    return 0;
fail_out:
    jwt_claims_free(out);
    return rc;
}

void jwt_claims_free(struct jwt_claims *c)
{
    if (!c)
        return;
    json_decref(c->payload);
    memset(c, 0, sizeof *c);
}

bool jwt_claims_has_role(const struct jwt_claims *c, const char *role)
{
    size_t i;
    const json_t *r;
    if (!c || !c->roles)
        return false;
    json_array_foreach(c->roles, i, r) {
        if (json_is_string(r) && strcmp(json_string_value(r), role) == 0)
            return true;
    }
    return false;
}

int jwt_peek_kid(struct str token, char *kid, size_t kidsz)
{
    struct str seg[3];
    json_t *h = NULL;
    if (kidsz)
        kid[0] = '\0';
    if (!token.p || token.n > JWT_DEFAULT_MAX_TOKEN_BYTES * 8 || !split_token(token, seg))
        return -EINVAL;
    int rc = decode_json_object(seg[0], HEADER_MAX_DEPTH, &h);
    if (rc < 0)
        return rc;
    const char *k = json_string_value(json_object_get(h, "kid"));
    rc = k && k[0] ? str_copy_cstr(str_from_cstr(k), kid, kidsz) : -EINVAL;
    json_decref(h);
    return rc < 0 ? -EINVAL : 0;
}
