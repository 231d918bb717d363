/* Arbitrary bytes through the JWT module, three ways:
 *   - as a compact token through jwt_verify against a fixed key set (ES256,
 *     RS256, EdDSA), with every algorithm allowed and no exp required, so
 *     the header checks, the base64url decoder and the signature paths all
 *     see it;
 *   - as a JWKS document through jwks_parse (keys found must be usable);
 *   - as a payload, signed with the fixed Ed25519 key and verified, so the
 *     claim checks (numeric dates, iss/aud/roles types) see arbitrary JSON
 *     that carries a valid signature.
 * Invariants: a refusal always has a reason and a message; an accepted
 * token always has a payload object, its kid and its alg. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/jwt.h"

#define MUST(cond)                                                           \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* RFC 8037 A.1's Ed25519 key, kid "ed": deterministic signatures, so the
 * seed corpus can hold tokens that verify. */
static const unsigned char ed_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
                                        0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
                                        0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };

static struct jwks *keys;
static struct jwt_signer *ed;

static void init(void)
{
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, ed_d, sizeof ed_d);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    struct jwt_signer *s_ec = NULL, *s_rsa = NULL;
    MUST(pk && ec && rsa);
    MUST(jwt_signer_from_pkey(pk, "ed", &ed, NULL, 0) == 0);
    MUST(jwt_signer_from_pkey(ec, "ec", &s_ec, NULL, 0) == 0);
    MUST(jwt_signer_from_pkey(rsa, "rsa", &s_rsa, NULL, 0) == 0);
    const struct jwt_signer *ss[] = { ed, s_ec, s_rsa };
    struct buf b;
    buf_init(&b, 1 << 16);
    MUST(jwks_public_json(ss, 3, &b) == 0);
    char err[160];
    MUST(jwks_parse(buf_str(&b), &keys, err, sizeof err) == 0);
    MUST(jwks_count(keys) == 3);
    buf_free(&b);
    jwt_signer_free(s_ec);
    jwt_signer_free(s_rsa);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
}

static const char *const auds[] = { "strata-api", NULL };

static void verify_one(struct str token, const struct jwt_verify_opts *o)
{
    struct jwt_claims c;
    struct jwt_error err;
    int rc = jwt_verify(token, keys, o, &c, &err);
    if (rc == 0) {
        MUST(json_is_object(c.payload));
        MUST(c.kid[0] != '\0');
        MUST(c.alg == JWT_ALG_ES256 || c.alg == JWT_ALG_RS256 || c.alg == JWT_ALG_EDDSA);
        MUST(!c.roles || json_is_array(c.roles));
        (void)jwt_claims_has_role(&c, "admin");
    } else {
        MUST(rc == -EINVAL || rc == -ENOMEM);
        MUST(c.payload == NULL);
        MUST(err.reason >= JWT_E_MALFORMED && err.reason <= JWT_E_NOMEM);
        MUST(err.message[0] != '\0');
        MUST(jwt_error_code(err.reason)[0] != '\0');
    }
    jwt_claims_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys)
        init();
    struct str in = str_make((const char *)data, size);
    struct jwt_verify_opts o = {
        .algs = JWT_ALG_ES256 | JWT_ALG_RS256 | JWT_ALG_EDDSA,
        .now = 1700000000,
        .allow_missing_exp = true,
    };

    /* 1. the bytes as a token */
    verify_one(in, &o);
    char kid[JWT_MAX_KID_BYTES + 1];
    if (jwt_peek_kid(in, kid, sizeof kid) == 0)
        MUST(kid[0] != '\0');

    /* 2. the bytes as a JWKS document */
    struct jwks *k = NULL;
    char err[160] = "";
    if (jwks_parse(in, &k, err, sizeof err) == 0) {
        MUST(jwks_count(k) >= 1 && jwks_count(k) <= JWKS_MAX_KEYS);
        jwks_unref(k);
    } else {
        MUST(k == NULL && err[0] != '\0');
    }

    /* 3. the bytes as a signed payload (when they are a JSON object) */
    json_t *claims = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(claims)) {
        struct buf t;
        buf_init(&t, 1 << 20);
        if (jwt_sign(ed, claims, &t) == 0) {
            verify_one(buf_str(&t), &o);
            o.issuer = "https://auth.strata.local";
            o.audiences = auds;
            o.allow_missing_exp = false;
            o.leeway_s = JWT_LEEWAY_NONE;
            verify_one(buf_str(&t), &o);
        }
        buf_free(&t);
    }
    json_decref(claims);
    return 0;
}
