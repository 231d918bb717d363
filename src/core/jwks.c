/* jwks.c — keys: JWK Sets (RFC 7517) into EVP_PKEYs, signers from PEM
 * files, public JWKs out, and RFC 7638 thumbprints as kids. */
#include "core/jwt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "core/json.h"
#include "core/jwt_internal.h"

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (!err || !errsz)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* Decodes a base64url JSON member of exactly want bytes (want 0: any length
 * up to max) into dst. Returns the length or -EINVAL. */
static long b64_member(const json_t *obj, const char *key, unsigned char *dst, size_t want, size_t max)
{
    const char *s = json_string_value(json_object_get(obj, key));
    if (!s)
        return -EINVAL;
    struct str in = str_from_cstr(s);
    if (in.n > (max + 2) / 3 * 4)
        return -EINVAL;
    struct buf b;
    buf_init(&b, max + 4);
    long rc = base64url_decode(in, &b);
    if (rc == 0) {
        size_t n = buf_len(&b);
        if ((want && n != want) || n > max || n == 0)
            rc = -EINVAL;
        else {
            memcpy(dst, buf_rptr(&b), n);
            rc = (long)n;
        }
    }
    buf_free(&b);
    return rc;
}

/* ---- JWK → EVP_PKEY ----------------------------------------------------- */

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    if (pkey) {
        /* fromdata decodes the point; the check refuses points off the curve
         * and RSA moduli that make no sense. */
        EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        int ok = chk && EVP_PKEY_public_check(chk) == 1;
        EVP_PKEY_CTX_free(chk);
        if (!ok) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    return pkey;
}

static EVP_PKEY *jwk_ec_key(const json_t *k, const char **why)
{
    unsigned char pub[65];
    const char *crv = json_string_value(json_object_get(k, "crv"));
    if (!crv || strcmp(crv, "P-256") != 0) {
        *why = "EC curve is not P-256";
        return NULL;
    }
    if (b64_member(k, "x", pub + 1, 32, 32) < 0 || b64_member(k, "y", pub + 33, 32, 32) < 0) {
        *why = "EC x/y must be 32-byte base64url";
        return NULL;
    }
    pub[0] = 0x04; /* uncompressed point */
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *pkey = pkey_from_params("EC", params);
    if (!pkey)
        *why = "EC point is not on P-256";
    return pkey;
}

static EVP_PKEY *jwk_rsa_key(const json_t *k, const char **why)
{
    unsigned char n[JWT_RSA_MAX_BITS / 8], e[8];
    long nn = b64_member(k, "n", n, 0, sizeof n);
    long ne = b64_member(k, "e", e, 0, sizeof e);
    if (nn < 0 || ne < 0) {
        *why = "RSA n/e missing, not base64url or too long";
        return NULL;
    }
    BIGNUM *bn_n = BN_bin2bn(n, (int)nn, NULL), *bn_e = BN_bin2bn(e, (int)ne, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    *why = "out of memory";
    if (!bn_n || !bn_e || !bld)
        goto out;
    if (BN_num_bits(bn_n) < JWT_RSA_MIN_BITS || BN_num_bits(bn_n) > JWT_RSA_MAX_BITS) {
        *why = "RSA modulus must have 2048 to 8192 bits";
        goto out;
    }
    if (!BN_is_odd(bn_e) || BN_is_one(bn_e)) {
        *why = "RSA exponent is not an odd number > 1";
        goto out;
    }
    if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 || !(params = OSSL_PARAM_BLD_to_param(bld)))
        goto out;
    pkey = pkey_from_params("RSA", params);
    if (!pkey)
        *why = "RSA key refused by OpenSSL";
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

static EVP_PKEY *jwk_okp_key(const json_t *k, const char **why)
{
    unsigned char x[32];
    const char *crv = json_string_value(json_object_get(k, "crv"));
    if (!crv || strcmp(crv, "Ed25519") != 0) {
        *why = "OKP curve is not Ed25519";
        return NULL;
    }
    if (b64_member(k, "x", x, 32, 32) < 0) {
        *why = "OKP x must be 32-byte base64url";
        return NULL;
    }
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof x);
    if (!pkey)
        *why = "Ed25519 key refused by OpenSSL";
    return pkey;
}

/* One JWK: a key and its alg, or NULL with *why when we cannot use it. */
static EVP_PKEY *jwk_key(const json_t *k, enum jwt_alg *alg, const char **why)
{
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const json_t *use = json_object_get(k, "use");
    const json_t *jalg = json_object_get(k, "alg");
    const json_t *ops = json_object_get(k, "key_ops");
    if (!kty) {
        *why = "no kty";
        return NULL;
    }
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) {
        *why = "use is not \"sig\"";
        return NULL;
    }
    if (ops) {
        bool can_verify = false;
        size_t i;
        const json_t *op;
        if (json_is_array(ops)) {
            json_array_foreach(ops, i, op) {
                if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0)
                    can_verify = true;
            }
        }
        if (!can_verify) {
            *why = "key_ops does not include \"verify\"";
            return NULL;
        }
    }
    if (strcmp(kty, "EC") == 0)
        *alg = JWT_ALG_ES256;
    else if (strcmp(kty, "RSA") == 0)
        *alg = JWT_ALG_RS256;
    else if (strcmp(kty, "OKP") == 0)
        *alg = JWT_ALG_EDDSA;
    else {
        *why = "unsupported kty";
        return NULL;
    }
    if (jalg) {
        const char *a = json_string_value(jalg);
        /* "Ed25519" is RFC 9864's fully specified name for the same thing. */
        enum jwt_alg named = a && strcmp(a, "Ed25519") == 0 ? JWT_ALG_EDDSA : jwt_alg_from_name(a);
        if (named != *alg) {
            *why = "alg does not fit the key type or is not supported";
            return NULL;
        }
    }
    switch (*alg) {
    case JWT_ALG_ES256: return jwk_ec_key(k, why);
    case JWT_ALG_RS256: return jwk_rsa_key(k, why);
    case JWT_ALG_EDDSA: return jwk_okp_key(k, why);
    }
    return NULL;
}

/* ---- key sets ----------------------------------------------------------- */

static struct jwks *jwks_alloc(size_t n)
{
    struct jwks *k = calloc(1, sizeof *k + n * sizeof k->keys[0]);
    if (k)
        atomic_init(&k->refs, 1);
    return k;
}

const struct jwk_key *jwks_find(const struct jwks *k, const char *kid)
{
    if (!k || !kid)
        return NULL;
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->keys[i].kid, kid) == 0)
            return &k->keys[i];
    return NULL;
}

int jwks_parse(struct str json, struct jwks **out, char *err, size_t errsz)
{
    struct json_error je;
    json_t *doc = NULL;
    struct jwks *set = NULL;
    int rc = -EINVAL;
    *out = NULL;
    if (json.n > JWKS_MAX_DOCUMENT_BYTES) {
        set_err(err, errsz, "JWKS document larger than %d bytes", JWKS_MAX_DOCUMENT_BYTES);
        return -EINVAL;
    }
    rc = json_parse_body(json, 8, &doc, &je);
    if (rc < 0) {
        set_err(err, errsz, "JWKS is not JSON: %s", je.message);
        return rc;
    }
    rc = -EINVAL;
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_object(doc) || !json_is_array(keys)) {
        set_err(err, errsz, "JWKS must be an object with a \"keys\" array");
        goto out;
    }
    size_t total = json_array_size(keys);
    set = jwks_alloc(total < JWKS_MAX_KEYS ? total : JWKS_MAX_KEYS);
    if (!set) {
        rc = -ENOMEM;
        set_err(err, errsz, "out of memory");
        goto out;
    }
    const char *last_why = "no keys";
    for (size_t i = 0; i < total && set->n < JWKS_MAX_KEYS; i++) {
        const json_t *k = json_array_get(keys, i);
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *why = NULL;
        enum jwt_alg alg = 0;
        if (!json_is_object(k)) {
            last_why = "a key is not an object";
            continue;
        }
        if (!kid || !kid[0] || strlen(kid) > JWT_MAX_KID_BYTES) {
            last_why = "a key has no kid or one longer than 127 bytes";
            continue;
        }
        if (jwks_find(set, kid)) {
            last_why = "a kid appears twice";
            continue;
        }
        EVP_PKEY *pkey = jwk_key(k, &alg, &why);
        ERR_clear_error();
        if (!pkey) {
            last_why = why ? why : "unusable key";
            continue;
        }
        struct jwk_key *dst = &set->keys[set->n++];
        snprintf(dst->kid, sizeof dst->kid, "%s", kid);
        dst->alg = alg;
        dst->pkey = pkey;
    }
    if (set->n == 0) {
        set_err(err, errsz, "JWKS has no usable key (last reason: %s)", last_why);
        goto out;
    }
    *out = set;
    set = NULL;
    rc = 0;
out:
    jwks_unref(set);
    json_decref(doc);
    return rc;
}

struct jwks *jwks_ref(struct jwks *k)
{
    if (k)
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
}

void jwks_unref(struct jwks *k)
{
    if (!k || atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < k->n; i++)
        EVP_PKEY_free(k->keys[i].pkey);
    free(k);
}

bool jwks_has_kid(const struct jwks *k, const char *kid) { return jwks_find(k, kid) != NULL; }

size_t jwks_count(const struct jwks *k) { return k ? k->n : 0; }

/* ---- public JWK of a key ------------------------------------------------ */

static int bn_param_b64(const EVP_PKEY *pkey, const char *name, size_t pad, struct buf *out)
{
    BIGNUM *bn = NULL;
    unsigned char tmp[JWT_RSA_MAX_BITS / 8];
    int rc = -EIO;
    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1)
        return -EIO;
    int n = pad ? (int)pad : BN_num_bytes(bn);
    if (n > 0 && (size_t)n <= sizeof tmp && BN_bn2binpad(bn, tmp, n) == n)
        rc = base64url_encode(tmp, (size_t)n, out);
    BN_free(bn);
    return rc;
}

/* Appends the public members in RFC 7638's lexicographic order, so that the
 * same text serves as the thumbprint input. */
static int public_members(const EVP_PKEY *pkey, enum jwt_alg alg, struct buf *out)
{
    int rc = 0;
    switch (alg) {
    case JWT_ALG_ES256:
        rc = buf_append_cstr(out, "\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"");
        rc = rc ?: bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, out);
        rc = rc ?: buf_append_cstr(out, "\",\"y\":\"");
        rc = rc ?: bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, out);
        return rc ?: buf_append_cstr(out, "\"");
    case JWT_ALG_RS256:
        rc = buf_append_cstr(out, "\"e\":\"");
        rc = rc ?: bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0, out);
        rc = rc ?: buf_append_cstr(out, "\",\"kty\":\"RSA\",\"n\":\"");
        rc = rc ?: bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0, out);
        return rc ?: buf_append_cstr(out, "\"");
    case JWT_ALG_EDDSA: {
        unsigned char x[32];
        size_t xn = sizeof x;
        if (EVP_PKEY_get_raw_public_key(pkey, x, &xn) != 1 || xn != 32)
            return -EIO;
        rc = buf_append_cstr(out, "\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"");
        rc = rc ?: base64url_encode(x, xn, out);
        return rc ?: buf_append_cstr(out, "\"");
    }
    }
    return -EINVAL;
}

static int thumbprint(const EVP_PKEY *pkey, enum jwt_alg alg, char *kid, size_t kidsz)
{
    struct buf b, t;
    unsigned char md[32];
    unsigned mdlen = 0;
    buf_init(&b, 4096);
    buf_init(&t, 64);
    int rc = buf_append_cstr(&b, "{");
    rc = rc ?: public_members(pkey, alg, &b);
    rc = rc ?: buf_append_cstr(&b, "}");
    if (rc == 0 && EVP_Digest(buf_rptr(&b), buf_len(&b), md, &mdlen, EVP_sha256(), NULL) != 1)
        rc = -EIO;
    rc = rc ?: base64url_encode(md, mdlen, &t);
    if (rc == 0)
        rc = str_copy_cstr(buf_str(&t), kid, kidsz);
    buf_free(&b);
    buf_free(&t);
    return rc;
}

/* ---- signers ------------------------------------------------------------ */

static enum jwt_alg pkey_alg(const EVP_PKEY *pkey, const char **why)
{
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            *why = "EC key is not on P-256";
            return 0;
        }
        return JWT_ALG_ES256;
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS) {
            *why = "RSA key must have 2048 to 8192 bits";
            return 0;
        }
        return JWT_ALG_RS256;
    }
    if (EVP_PKEY_is_a(pkey, "ED25519"))
        return JWT_ALG_EDDSA;
    *why = "key type is not EC P-256, RSA or Ed25519";
    return 0;
}

int jwt_signer_from_pkey(struct evp_pkey_st *pkey, const char *kid, struct jwt_signer **out, char *err,
                         size_t errsz)
{
    const char *why = "";
    *out = NULL;
    enum jwt_alg alg = pkey_alg(pkey, &why);
    if (!alg) {
        set_err(err, errsz, "%s", why);
        return -EINVAL;
    }
    struct jwt_signer *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(err, errsz, "out of memory");
        return -ENOMEM;
    }
    s->alg = alg;
    int rc = 0;
    if (kid) {
        if (!kid[0] || strlen(kid) > JWT_MAX_KID_BYTES) {
            set_err(err, errsz, "kid must have 1 to %d bytes", JWT_MAX_KID_BYTES);
            rc = -EINVAL;
        } else {
            snprintf(s->kid, sizeof s->kid, "%s", kid);
        }
    } else if ((rc = thumbprint(pkey, alg, s->kid, sizeof s->kid)) < 0) {
        set_err(err, errsz, "cannot compute the key's thumbprint");
    }
    if (rc < 0 || EVP_PKEY_up_ref(pkey) != 1) {
        free(s);
        ERR_clear_error();
        return rc < 0 ? rc : -ENOMEM;
    }
    s->pkey = pkey;
    *out = s;
    return 0;
}

int jwt_signer_load_pem(const char *path, struct jwt_signer **out, char *err, size_t errsz)
{
    *out = NULL;
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        set_err(err, errsz, "%s: %s", path, strerror(e));
        return -e;
    }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) {
        ERR_clear_error();
        set_err(err, errsz, "%s: not an unencrypted PEM private key", path);
        return -EINVAL;
    }
    char why[128] = "";
    int rc = jwt_signer_from_pkey(pkey, NULL, out, why, sizeof why);
    if (rc < 0)
        set_err(err, errsz, "%s: %s", path, why);
    EVP_PKEY_free(pkey);
    return rc;
}

const char *jwt_signer_kid(const struct jwt_signer *s) { return s->kid; }

enum jwt_alg jwt_signer_alg(const struct jwt_signer *s) { return s->alg; }

void jwt_signer_free(struct jwt_signer *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->pkey);
    free(s);
}

int jwks_public_json(const struct jwt_signer *const *signers, size_t n, struct buf *out)
{
    size_t start = out->wpos;
    int rc = buf_append_cstr(out, "{\"keys\":[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct jwt_signer *s = signers[i];
        rc = buf_append_cstr(out, i ? ",{" : "{");
        rc = rc ?: public_members(s->pkey, s->alg, out);
        rc = rc ?: buf_append_cstr(out, ",\"kid\":");
        rc = rc ?: json_append_string(out, str_from_cstr(s->kid));
        rc = rc ?: buf_appendf(out, ",\"use\":\"sig\",\"alg\":\"%s\"}", jwt_alg_name(s->alg));
    }
    rc = rc ?: buf_append_cstr(out, "]}");
    if (rc < 0) {
        out->wpos = start;
        ERR_clear_error();
    }
    return rc;
}
