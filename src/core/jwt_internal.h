/* jwt_internal.h — what jwt.c (tokens) and jwks.c (keys) share; not for
 * other modules. */
#ifndef STRATA_JWT_INTERNAL_H
#define STRATA_JWT_INTERNAL_H

#include <stdatomic.h>

#include <openssl/evp.h>

#include "core/jwt.h"

/* RSA moduli from 2048 bits (NIST's floor since 2013) to 8192: the cost of a
 * verification grows with the modulus, and a 16384-bit key in a JWKS would
 * make every token check several times dearer for no security gain. */
#define JWT_RSA_MIN_BITS 2048
#define JWT_RSA_MAX_BITS 8192

struct jwk_key {
    char kid[JWT_MAX_KID_BYTES + 1];
    enum jwt_alg alg;
    EVP_PKEY *pkey;
};

struct jwks {
    atomic_int refs;
    size_t n;
    struct jwk_key keys[];
};

struct jwt_signer {
    EVP_PKEY *pkey;
    enum jwt_alg alg;
    char kid[JWT_MAX_KID_BYTES + 1];
};

/* The usable key with this kid, or NULL (k may be NULL). */
const struct jwk_key *jwks_find(const struct jwks *k, const char *kid);
/* "ES256" → JWT_ALG_ES256 ...; 0 for anything else (NULL, "none", "HS256"). */
enum jwt_alg jwt_alg_from_name(const char *s);

#endif
